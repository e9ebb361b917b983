//! The command-word splitter (src/container/words.rs): POSIX quoting without expansion.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supd::testing::container::split_words;

/// Quotes `word` so that a POSIX shell reads it back as exactly that word.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r#"'\''"#))
}

fuzz_target!(|data: &[u8]| {
    let Ok(cmd) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(words) = split_words(cmd) {
        assert!(!words.is_empty(), "a command with no word was accepted");
        // The words are never longer in total than the command they came from.
        assert!(words.iter().map(String::len).sum::<usize>() <= cmd.len());
        // Quoting the words and splitting again gives them back (round trip).
        let requoted: Vec<String> = words.iter().map(|w| quote(w)).collect();
        let again = split_words(&requoted.join(" ")).expect("re-quoted words must split");
        assert_eq!(again, words, "round trip through quoting changed the words");
    }
});
