//! Checks that run on a JSON or YAML request body before any parser sees it.
//!
//! serde_yaml's parser (libyaml) spends time proportional to the nesting depth on every token,
//! so a body of a million `[` costs it minutes of CPU on the one loop thread. The bodies the
//! API reads are tiny, flat maps; a linear scan that bounds their size and nesting keeps every
//! parse linear. YAML is a superset of JSON, so one scan serves both.

/// Why a body was refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Longer than the endpoint takes (413).
    TooLarge { max: usize },
    /// Nested too deeply or holding too many openers (400); the text says which.
    Nesting(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::TooLarge { max } => write!(f, "request body larger than {max} bytes"),
            Error::Nesting(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Error {}

/// Deepest nesting a request body may have: flow collections (`[`, `{`) plus block levels
/// (indentation steps and `- `/`? ` entries). The API's bodies need 2.
pub const MAX_NESTING: usize = 16;

/// Most `[` and `{` a body may hold anywhere, quoted or not. The nesting scan follows YAML's
/// quoting and block scalars only as far as a short scan can; this count does not depend on
/// it, so it bounds the parser's depth (and so its time) even if the scan is ever fooled.
pub const MAX_OPENERS: usize = 256;

/// Refuse a body over `max_len` bytes (413) or nested too deeply (400), before parsing it.
pub fn check(body: &[u8], max_len: usize) -> Result<(), Error> {
    if body.len() > max_len {
        return Err(Error::TooLarge { max: max_len });
    }
    nesting(body).map_err(Error::Nesting)
}

/// Where the scan is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum In {
    Plain,
    Double {
        escaped: bool,
    },
    Single,
    Comment,
    /// A `|` or `>` block scalar whose parent line is indented `parent` columns: its content
    /// is every following line indented deeper (or blank).
    BlockScalar {
        parent: usize,
    },
}

/// The linear nesting scan. An error says what was too deep.
fn nesting(body: &[u8]) -> Result<(), String> {
    let too_deep = || format!("request body nested deeper than {MAX_NESTING} levels");
    let openers = body.iter().filter(|&&b| b == b'[' || b == b'{').count();
    if openers > MAX_OPENERS {
        return Err(format!(
            "request body nested too deeply: more than {MAX_OPENERS} '[' or '{{' characters"
        ));
    }
    let mut state = In::Plain;
    // Indentation columns of the enclosing block levels.
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // `- ` and `? ` entries that open a level on the current line (`- - a`).
    let mut entries = 0usize;
    let mut col = 0usize;
    let mut line_start = true;
    // Whether a token may start here: after whitespace, a line start or a flow indicator.
    let mut token_start = true;
    // Inside a plain scalar begun on this line in block context (`cmd: echo [`): brackets and
    // quotes are its text until `: ` or the end of the line.
    let mut in_scalar = false;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        let next = body.get(i + 1).copied();
        i += 1;
        if b == b'\n' {
            col = 0;
            line_start = true;
            token_start = true;
            entries = 0;
            in_scalar = false;
            if state == In::Comment {
                state = In::Plain;
            }
            continue;
        }
        let this_col = col;
        col += 1;
        match state {
            In::Comment => continue,
            In::Double { escaped } => {
                state = match (escaped, b) {
                    (true, _) => In::Double { escaped: false },
                    (false, b'\\') => In::Double { escaped: true },
                    (false, b'"') => In::Plain,
                    _ => state,
                };
                token_start = false;
                continue;
            }
            In::Single => {
                if b == b'\'' {
                    if next == Some(b'\'') {
                        i += 1;
                        col += 1;
                    } else {
                        state = In::Plain;
                    }
                }
                token_start = false;
                continue;
            }
            In::BlockScalar { parent } => {
                if line_start && (b == b' ' || b == b'\t' || b == b'\r') {
                    continue;
                }
                if line_start && this_col <= parent {
                    state = In::Plain;
                } else {
                    line_start = false;
                    continue;
                }
            }
            In::Plain => {}
        }
        if b == b' ' || b == b'\t' || b == b'\r' {
            token_start = true;
            continue;
        }
        if line_start {
            line_start = false;
            if flow == 0 {
                while indents.last().is_some_and(|&c| c > this_col) {
                    indents.pop();
                }
                if indents.last() != Some(&this_col) {
                    indents.push(this_col);
                }
            }
        }
        let is_space = |n: Option<u8>| matches!(n, None | Some(b' ' | b'\t' | b'\r' | b'\n'));
        if in_scalar {
            match b {
                b'#' if token_start => state = In::Comment,
                b':' if is_space(next) => in_scalar = false,
                _ => {}
            }
            token_start = false;
            continue;
        }
        match b {
            b'#' if token_start => state = In::Comment,
            b'"' if token_start => state = In::Double { escaped: false },
            b'\'' if token_start => state = In::Single,
            b'[' | b'{' if token_start || flow > 0 => flow += 1,
            b']' | b'}' => flow = flow.saturating_sub(1),
            b'-' | b'?' if token_start && flow == 0 && is_space(next) => entries += 1,
            b'|' | b'>' if token_start && flow == 0 => {
                state = In::BlockScalar {
                    parent: indents.last().copied().unwrap_or(0),
                };
                // The rest of the indicator line (chomping, indentation, a comment) is not
                // content; skip it.
                while i < body.len() && body[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b',' | b':' => {}
            _ if token_start && flow == 0 => in_scalar = true,
            _ => {}
        }
        // In a flow collection a value may follow `:` at once, as in compact JSON.
        token_start = matches!(b, b'[' | b'{' | b',' | b':') && flow > 0;
        if indents.len() + entries + flow > MAX_NESTING {
            return Err(too_deep());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) {
        assert_eq!(nesting(body.as_bytes()), Ok(()), "{body:?}");
    }

    fn deep(body: &[u8]) {
        assert!(
            nesting(body).is_err(),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }

    #[test]
    fn ordinary_bodies_pass() {
        ok("cmd: ls -l");
        ok("{\"cmd\": \"echo [[[[[[[[[[[[[[[[[[[[\"}");
        ok("{\"cmd\":\"echo [[[[[[[[[[[[[[[[[[[[\",\"x\":[\"{{{{{{{{{{{{{{{{{{{{\"]}");
        ok("cmd: 'it''s [[[[[[[[[[[[[[[[[[[['");
        ok("cmd: echo [[[[[[[[[[[[[[[[[[[[ # [[[[[[[[[[[[[[[[[[[[");
        ok("# {{{{{{{{{{{{{{{{{{{{\ncmd: x\n");
        ok("no-delayed-shutdown: true\n");
        ok("{\"no-delayed-shutdown\": true}");
        ok("cmd: \"a \\\" [[[[[[[[[[[[[[[[[[[[\"");
        // A script as a block scalar: its own indentation and brackets are content.
        let mut script = String::from("cmd: |\n");
        for d in 0..40 {
            script.push_str(&format!(
                "{}if [ -f /x{d} ]; then {{ [\n",
                " ".repeat(2 + d)
            ));
        }
        ok(&script);
        ok("cmd: ls\nother: [a, [b, {c: d}]]\n");
    }

    #[test]
    fn deep_bodies_are_refused() {
        let n = MAX_NESTING + 1;
        deep(format!("cmd: {}", "[".repeat(n)).as_bytes());
        deep(format!("cmd: {}", "{a: ".repeat(n)).as_bytes());
        deep(format!("{}1", "[".repeat(n)).as_bytes());
        deep("{\"cmd\":".repeat(n).as_bytes());
        deep(format!("cmd: {}", "- ".repeat(n)).as_bytes());
        let mut block = String::new();
        for d in 0..n {
            block.push_str(&format!("{}k{d}:\n", " ".repeat(d)));
        }
        deep(block.as_bytes());
        let mut seq = String::new();
        for d in 0..n {
            seq.push_str(&format!("{}-\n", " ".repeat(d)));
        }
        deep(seq.as_bytes());
        // Quotes after a plain scalar's first character do not hide what follows.
        deep(format!("cmd: a'\nx: {}", "[".repeat(n)).as_bytes());
        deep(format!("cmd: a\"\nx: {}", "[".repeat(n)).as_bytes());
        // Closers in quotes do not make room for more openers.
        deep(format!("cmd: {}", "[ \"]\" ".repeat(n)).as_bytes());
    }

    #[test]
    fn many_openers_are_refused_wherever_they_are() {
        let body = format!("cmd: \"{}\"", "[]".repeat(MAX_OPENERS + 1));
        assert!(nesting(body.as_bytes()).unwrap_err().contains("more than"));
        let body = format!("cmd: \"{}\"", "[]".repeat(MAX_OPENERS));
        ok(&body);
    }

    #[test]
    fn size_is_checked_first() {
        let e = check(&[b'['; 100], 10).unwrap_err();
        assert_eq!(crate::http::ApiError::from(e).status, 413);
        let e = check(&[b'['; 100], 1000).unwrap_err();
        assert_eq!(crate::http::ApiError::from(e).status, 400);
        assert!(check(b"cmd: x", 10).is_ok());
    }

    /// The whole point: the worst bodies the checks let through parse quickly.
    #[test]
    fn worst_accepted_bodies_parse_fast() {
        use std::time::{Duration, Instant};
        let max = 64 * 1024;
        let flow = format!(
            "{}{}",
            "[".repeat(MAX_NESTING - 1),
            "a,".repeat((max - MAX_NESTING) / 2 - 1)
        );
        let openers = format!("cmd: \"{}\"", "[".repeat(MAX_OPENERS));
        // What a fooled nesting scan would let through: MAX_OPENERS levels of real nesting.
        let fooled = format!(
            "{}{}",
            "[".repeat(MAX_OPENERS),
            "a,".repeat((max - MAX_OPENERS) / 2 - 1)
        );
        for (body, checked) in [(flow, true), (openers, true), (fooled, false)] {
            let body = &body.as_bytes()[..body.len().min(max)];
            if checked {
                check(body, max).unwrap();
            }
            // Not a benchmark: the bound is loose for a loaded 2-core debug build, yet far
            // below what a quadratic case of this size costs (64 K `[` took 5 s in release).
            let t = Instant::now();
            let _ = serde_yaml::from_slice::<serde_yaml::Value>(body);
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        }
    }

    /// "Billion laughs": anchors and aliases pass the scan (they nest nothing), and serde_yaml
    /// bounds what they cost: alias expansion is capped in proportion to the document's
    /// events, and the API's bodies are flat structs that refuse a collection where they want
    /// a string or a boolean, or a key they do not know.
    #[test]
    fn aliases_cost_linear_time() {
        use std::time::{Duration, Instant};
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Body {
            cmd: Option<String>,
        }
        let mut laughs = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            laughs.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                vec![format!("*a{}", i - 1); 9].join(", ")
            ));
        }
        let inside = format!(
            "cmd: [{}]\n",
            laughs
                .lines()
                .map(|l| l.split_once(": ").unwrap().1)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let last = format!("{laughs}cmd: *a9\n");
        for body in [laughs.clone(), inside, last] {
            check(body.as_bytes(), 64 * 1024).unwrap();
            let t = Instant::now();
            let r = serde_yaml::from_slice::<Body>(body.as_bytes());
            assert!(r.is_err());
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        }
    }
}
