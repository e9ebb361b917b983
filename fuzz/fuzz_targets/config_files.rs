//! The tokens file (src/auth.rs) and the configuration file (src/config.rs), parsed from their
//! text and checked; bearer tokens and application patterns used against the parsed tokens;
//! `glob_match` compared with a plain memoised reference matcher.
//!
//! Input: the file text. When it holds a NUL, what follows it is `pattern\nname` for the
//! glob differential.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use supd::testing::auth::{self, Operation, Tokens};
use supd::testing::config;

/// Like `glob_match`, written the obvious way: `*`, `?`, `[...]` with `!`/`^`, ranges, a
/// leading `]` literal, and a `[` without its `]` taken literally.
fn reference(p: &[char], n: &[char]) -> bool {
    let mut memo = vec![None; (p.len() + 1) * (n.len() + 1)];
    go(p, n, 0, 0, &mut memo)
}

fn go(p: &[char], n: &[char], pi: usize, ni: usize, memo: &mut Vec<Option<bool>>) -> bool {
    let key = pi * (n.len() + 1) + ni;
    if let Some(r) = memo[key] {
        return r;
    }
    let r = match p.get(pi) {
        None => ni == n.len(),
        Some('*') => go(p, n, pi + 1, ni, memo) || (ni < n.len() && go(p, n, pi, ni + 1, memo)),
        Some(_) if ni == n.len() => false,
        Some('?') => go(p, n, pi + 1, ni + 1, memo),
        Some('[') => match class(p, pi, n[ni]) {
            Some((true, next)) => go(p, n, next, ni + 1, memo),
            Some((false, _)) => false,
            None => n[ni] == '[' && go(p, n, pi + 1, ni + 1, memo),
        },
        Some(&c) => c == n[ni] && go(p, n, pi + 1, ni + 1, memo),
    };
    memo[key] = Some(r);
    r
}

fn class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let body_start = i;
    // The class ends at the first `]` that is not its first member (a range never ends in `]`).
    let end = (body_start + 1..p.len()).find(|&j| p[j] == ']')?;
    let mut matched = false;
    let mut j = body_start;
    while j < end {
        if j + 2 < end && p[j + 1] == '-' {
            matched |= p[j] <= c && c <= p[j + 2];
            j += 3;
        } else {
            matched |= p[j] == c;
            j += 1;
        }
    }
    Some((matched != negate, end + 1))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, glob) = match text.split_once('\0') {
        Some((file, glob)) => (file, Some(glob)),
        None => (text, None),
    };
    if let Ok(tokens) = Tokens::parse(file) {
        for bearer in [None, Some("supd_x"), Some(file)] {
            for op in Operation::ALL {
                let _ = tokens.check(bearer, op, "app");
            }
        }
        let _ = tokens.contains_name("admin");
    }
    let _ = auth::bearer_token(file);
    let _ = config::from_file_text(file, Path::new("/etc/supd/supd.yaml"));
    if let Some(glob) = glob {
        let (pattern, name) = glob.split_once('\n').unwrap_or((glob, ""));
        let got = auth::glob_match(pattern, name);
        let p: Vec<char> = pattern.chars().collect();
        let n: Vec<char> = name.chars().collect();
        if p.len() <= 64 && n.len() <= 64 {
            assert_eq!(got, reference(&p, &n), "glob_match({pattern:?}, {name:?})");
        }
    }
});
