//! Splitting a command string into words the way a POSIX shell quotes, without expansion.

use super::{Error, Result};

/// Whether `cmd` is only word separators, the blanks `split_words` splits on. Any other
/// character (a no-break space, a carriage return) is part of a word, as in a shell.
pub fn is_blank(cmd: &str) -> bool {
    cmd.chars().all(|c| matches!(c, ' ' | '\t' | '\n'))
}

/// Splits `cmd` into words with POSIX shell quoting: blanks (space, tab, newline) separate
/// words; a backslash outside quotes takes the next character literally (and drops a
/// newline); single quotes keep everything literally; inside double quotes a backslash only
/// escapes `$`, `` ` ``, `"`, `\` and newline. Nothing is expanded: `$`, `` ` ``, `*`, `~` stay
/// as they are. An empty or blank command, an unterminated quote or a trailing backslash is
/// an error.
pub fn split_words(cmd: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word exists once any character or quote of it was seen: `''` is an empty word.
    let mut in_word = false;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(next) => {
                    word.push(next);
                    in_word = true;
                }
                None => return Err(Error::BadCommand("trailing backslash")),
            },
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(inner) => word.push(inner),
                        None => return Err(Error::BadCommand("unterminated single quote")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\n') => {}
                            Some(escaped @ ('$' | '`' | '"' | '\\')) => word.push(escaped),
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                            None => return Err(Error::BadCommand("unterminated double quote")),
                        },
                        Some(inner) => word.push(inner),
                        None => return Err(Error::BadCommand("unterminated double quote")),
                    }
                }
            }
            other => {
                word.push(other);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err(Error::BadCommand("empty command"));
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(cmd: &str) -> Vec<String> {
        split_words(cmd).unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
    }

    #[test]
    fn blanks_separate_words() {
        assert_eq!(split("echo hello"), ["echo", "hello"]);
        assert_eq!(split("  ls \t -l\n/tmp  "), ["ls", "-l", "/tmp"]);
    }

    #[test]
    fn blank_is_what_separates_words() {
        for cmd in ["", " ", " \t\n "] {
            assert!(is_blank(cmd), "{cmd:?}");
            assert!(split_words(cmd).is_err(), "{cmd:?}");
        }
        for cmd in ["\u{a0}", "\r", "''", "x"] {
            assert!(!is_blank(cmd), "{cmd:?}");
            assert_eq!(split_words(cmd).unwrap().len(), 1, "{cmd:?}");
        }
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(split("echo 'a  b' c"), ["echo", "a  b", "c"]);
        assert_eq!(split(r"echo 'a\b $x'"), ["echo", r"a\b $x"]);
        assert_eq!(split("echo '\"'"), ["echo", "\""]);
    }

    #[test]
    fn double_quotes_escape_only_special_characters() {
        assert_eq!(
            split(r#"echo "a \"b\" \\ \$ \` \n""#),
            ["echo", r#"a "b" \ $ ` \n"#]
        );
        assert_eq!(split("echo \"a\\\nb\""), ["echo", "ab"]);
        assert_eq!(split(r#"echo "it's""#), ["echo", "it's"]);
    }

    #[test]
    fn backslash_outside_quotes_escapes_next_character() {
        assert_eq!(split(r"echo a\ b \'c\' \\"), ["echo", "a b", "'c'", "\\"]);
        assert_eq!(split("echo a\\\nb"), ["echo", "ab"]);
    }

    #[test]
    fn adjacent_pieces_form_one_word() {
        assert_eq!(split(r#"a'b'"c"d"#), ["abcd"]);
        assert_eq!(split("x '' \"\" y"), ["x", "", "", "y"]);
    }

    #[test]
    fn nothing_is_expanded() {
        assert_eq!(
            split("echo $HOME `id` * ~ ; |"),
            ["echo", "$HOME", "`id`", "*", "~", ";", "|"]
        );
    }

    #[test]
    fn non_ascii_is_kept() {
        assert_eq!(split("echo 'héllo wörld' ✓"), ["echo", "héllo wörld", "✓"]);
    }

    #[test]
    fn errors() {
        for cmd in [
            "",
            "   ",
            "\t\n",
            "echo 'abc",
            "echo \"abc",
            "echo \"a\\",
            "echo a\\",
            "'",
        ] {
            assert!(split_words(cmd).is_err(), "{cmd:?} must be refused");
        }
    }
}
