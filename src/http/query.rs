//! Query strings (`application/x-www-form-urlencoded` style) and percent-decoding of path
//! segments.

use std::fmt;

/// Longest accepted query string, in bytes, before decoding.
pub const MAX_LEN: usize = 8 * 1024;

/// Most parameters accepted in one query string.
pub const MAX_PARAMS: usize = 64;

/// Longest parameter name quoted in an error message, so that an error stays readable.
const MAX_QUOTED: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    TooLong {
        len: usize,
    },
    TooManyParams,
    EmptyName {
        offset: usize,
    },
    /// `%` not followed by two hexadecimal digits in the parameter `param`: its decoded name,
    /// or its name as written when the name itself is at fault.
    BadEscape {
        param: String,
    },
    /// The parameter `param` (named as in `BadEscape`) decodes to bytes that are not UTF-8.
    NotUtf8 {
        param: String,
    },
    /// A parameter that may be given once was given several times.
    Repeated {
        param: String,
    },
    BadPathEscape,
    PathNotUtf8,
}

pub type Result<T> = std::result::Result<T, Error>;

/// A name quoted for an error message: escaped, and cut if long.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(MAX_QUOTED) {
            Some((cut, _)) => write!(f, "{:?}...", &self.0[..cut]),
            None => write!(f, "{:?}", self.0),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooLong { len } => write!(
                f,
                "query string is {len} bytes long, at most {MAX_LEN} are allowed"
            ),
            Error::TooManyParams => write!(f, "query string has more than {MAX_PARAMS} parameters"),
            Error::EmptyName { offset } => {
                write!(f, "query parameter with an empty name at offset {offset}")
            }
            Error::BadEscape { param } => write!(
                f,
                "query parameter {}: '%' must be followed by two hexadecimal digits",
                Quoted(param)
            ),
            Error::NotUtf8 { param } => write!(
                f,
                "query parameter {}: percent-escapes do not decode to UTF-8",
                Quoted(param)
            ),
            Error::Repeated { param } => write!(
                f,
                "query parameter {} may be given only once",
                Quoted(param)
            ),
            Error::BadPathEscape => {
                f.write_str("path: '%' must be followed by two hexadecimal digits")
            }
            Error::PathNotUtf8 => f.write_str("path: percent-escapes do not decode to UTF-8"),
        }
    }
}

impl std::error::Error for Error {}

/// The parameters of a query string, decoded, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    params: Vec<(String, String)>,
}

impl Query {
    /// Parse the part after '?' (may be empty). `+` means space, `%XX` decodes; a bad escape
    /// or decoded bytes that are not UTF-8 is an error naming the parameter. `a` (no '=')
    /// gives value "". At most 64 parameters and 8 KiB total, else an error.
    ///
    /// Empty pieces (`a=1&&b=2`, a trailing `&`) are skipped; a piece with an empty name
    /// (`=1`) is an error.
    pub fn parse(raw: &str) -> Result<Query> {
        if raw.len() > MAX_LEN {
            return Err(Error::TooLong { len: raw.len() });
        }
        let mut params = Vec::new();
        let mut offset = 0;
        for piece in raw.split('&') {
            let start = offset;
            offset += piece.len() + 1;
            if piece.is_empty() {
                continue;
            }
            if params.len() == MAX_PARAMS {
                return Err(Error::TooManyParams);
            }
            let (raw_name, raw_value) = piece.split_once('=').unwrap_or((piece, ""));
            if raw_name.is_empty() {
                return Err(Error::EmptyName { offset: start });
            }
            let name = decode_form(raw_name, raw_name)?;
            let value = decode_form(raw_value, &name)?;
            params.push((name, value));
        }
        Ok(Query { params })
    }

    /// The value of the first occurrence of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Error if the parameter appears more than once (for parameters that must be single).
    pub fn single(&self, name: &str) -> Result<Option<&str>> {
        let mut values = self.iter().filter(|(n, _)| *n == name).map(|(_, v)| v);
        let first = values.next();
        if values.next().is_some() {
            return Err(Error::Repeated {
                param: name.to_string(),
            });
        }
        Ok(first)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Parameter names in order, repeated names as often as they occur.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(n, _)| n.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `s`, turning `+` into a space when `plus_is_space`. `None` for a bad escape.
fn percent_decode(s: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Decodes a name or value of the parameter `param`.
fn decode_form(s: &str, param: &str) -> Result<String> {
    let bytes = percent_decode(s, true).ok_or_else(|| Error::BadEscape {
        param: param.to_string(),
    })?;
    String::from_utf8(bytes).map_err(|_| Error::NotUtf8 {
        param: param.to_string(),
    })
}

/// Percent-decode one path segment (no '+' rule), must decode to UTF-8.
///
/// The result may contain any character, `/` and `..` included: a caller that puts it into
/// another path must check or re-encode it.
pub fn decode_path_segment(seg: &str) -> Result<String> {
    let bytes = percent_decode(seg, false).ok_or(Error::BadPathEscape)?;
    String::from_utf8(bytes).map_err(|_| Error::PathNotUtf8)
}

/// Redact for logging: values of parameters whose names are in `secret` are replaced by `***`.
///
/// Names are compared after decoding, so an encoded name (`acc%65ss_token`) is caught too.
/// Everything else is kept as written, malformed pieces included.
pub fn redacted(raw: &str, secret: &[&str]) -> String {
    let mut out = String::with_capacity(raw.len());
    for (i, piece) in raw.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match piece.split_once('=') {
            Some((name, _)) if is_secret(name, secret) => {
                out.push_str(name);
                out.push_str("=***");
            }
            _ => out.push_str(piece),
        }
    }
    out
}

fn is_secret(raw_name: &str, secret: &[&str]) -> bool {
    let decoded = percent_decode(raw_name, true);
    let name = decoded
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or(std::borrow::Cow::Borrowed(raw_name));
    secret.iter().any(|s| *s == name || *s == raw_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &Query) -> Vec<(&str, &str)> {
        q.iter().collect()
    }

    #[test]
    fn empty_query() {
        let q = Query::parse("").unwrap();
        assert!(q.is_empty());
        assert_eq!(q.get("a"), None);
        assert_eq!(q.single("a"), Ok(None));
        assert_eq!(q.names().count(), 0);
    }

    #[test]
    fn parameters_in_order() {
        let q = Query::parse("b=2&a=1&c=&d").unwrap();
        assert_eq!(pairs(&q), [("b", "2"), ("a", "1"), ("c", ""), ("d", "")]);
        assert_eq!(q.names().collect::<Vec<_>>(), ["b", "a", "c", "d"]);
        assert_eq!(q.get("a"), Some("1"));
        assert_eq!(q.get("d"), Some(""));
        assert_eq!(q.get("e"), None);
    }

    #[test]
    fn value_may_contain_equals() {
        let q = Query::parse("fields=a=b&x==").unwrap();
        assert_eq!(pairs(&q), [("fields", "a=b"), ("x", "=")]);
    }

    #[test]
    fn decoding() {
        let q = Query::parse("q=a+b%20c%2B%26%3D&n%61me=%C3%A9t%c3%a9&%2B=%25").unwrap();
        assert_eq!(pairs(&q), [("q", "a b c+&="), ("name", "été"), ("+", "%")]);
    }

    #[test]
    fn raw_utf8_passes_through() {
        let q = Query::parse("name=日本").unwrap();
        assert_eq!(q.get("name"), Some("日本"));
    }

    #[test]
    fn empty_pieces_are_skipped() {
        let q = Query::parse("&a=1&&b=2&").unwrap();
        assert_eq!(pairs(&q), [("a", "1"), ("b", "2")]);
        assert!(Query::parse("&&&").unwrap().is_empty());
    }

    #[test]
    fn empty_name_is_an_error() {
        assert_eq!(Query::parse("=1"), Err(Error::EmptyName { offset: 0 }));
        assert_eq!(Query::parse("a=1&=2"), Err(Error::EmptyName { offset: 4 }));
        assert_eq!(Query::parse("a&&="), Err(Error::EmptyName { offset: 3 }));
    }

    #[test]
    fn first_occurrence_and_single() {
        let q = Query::parse("a=1&b=2&a=3").unwrap();
        assert_eq!(q.get("a"), Some("1"));
        assert_eq!(q.single("b"), Ok(Some("2")));
        assert_eq!(q.single("c"), Ok(None));
        let e = q.single("a").unwrap_err();
        assert_eq!(
            e,
            Error::Repeated {
                param: "a".to_string()
            }
        );
        assert_eq!(
            e.to_string(),
            "query parameter \"a\" may be given only once"
        );
        assert_eq!(q.names().collect::<Vec<_>>(), ["a", "b", "a"]);
    }

    #[test]
    fn names_compare_after_decoding() {
        let q = Query::parse("a=1&%61=2").unwrap();
        assert!(q.single("a").is_err());
    }

    #[test]
    fn bad_escapes_name_the_parameter() {
        for raw in [
            "token=%",
            "token=%4",
            "token=%zz",
            "token=%4g",
            "token=ab%",
            "token=%%41",
        ] {
            assert_eq!(
                Query::parse(raw),
                Err(Error::BadEscape {
                    param: "token".to_string()
                }),
                "{raw}"
            );
        }
        assert_eq!(
            Query::parse("a=1&bad%2=x").unwrap_err(),
            Error::BadEscape {
                param: "bad%2".to_string()
            }
        );
        assert_eq!(
            Query::parse("fie%6Cds=%x").unwrap_err().to_string(),
            "query parameter \"fields\": '%' must be followed by two hexadecimal digits"
        );
    }

    #[test]
    fn non_utf8_names_the_parameter() {
        assert_eq!(
            Query::parse("x=1&name=%C3").unwrap_err(),
            Error::NotUtf8 {
                param: "name".to_string()
            }
        );
        assert_eq!(
            Query::parse("%FF=1").unwrap_err(),
            Error::NotUtf8 {
                param: "%FF".to_string()
            }
        );
        assert_eq!(
            Query::parse("name=%C3%28").unwrap_err().to_string(),
            "query parameter \"name\": percent-escapes do not decode to UTF-8"
        );
    }

    #[test]
    fn error_quotes_are_escaped_and_short() {
        let long = "n".repeat(200);
        let msg = Query::parse(&format!("{long}=%")).unwrap_err().to_string();
        assert!(msg.contains(&format!("\"{}\"...", "n".repeat(64))), "{msg}");
        assert!(msg.len() < 160);
        let msg = Query::parse("a%0Ab%=1").unwrap_err().to_string();
        assert!(msg.contains("\"a%0Ab%\""), "{msg}");
        let msg = Query::parse("a%0Ab=%").unwrap_err().to_string();
        assert!(msg.contains("\"a\\nb\""), "{msg}");
        let msg = Query::parse("a%0Ab=1&a%0Ab=2")
            .unwrap()
            .single("a\nb")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("\"a\\nb\""), "{msg}");
    }

    #[test]
    fn parameter_count_is_bounded() {
        let ok: Vec<String> = (0..MAX_PARAMS).map(|i| format!("p{i}=v")).collect();
        let q = Query::parse(&ok.join("&")).unwrap();
        assert_eq!(q.iter().count(), MAX_PARAMS);
        let too_many = ok.join("&") + "&x";
        assert_eq!(Query::parse(&too_many), Err(Error::TooManyParams));
        // Empty pieces do not count.
        assert!(Query::parse(&(ok.join("&") + "&&&")).is_ok());
    }

    #[test]
    fn length_is_bounded() {
        let ok = format!("a={}", "x".repeat(MAX_LEN - 2));
        assert_eq!(
            Query::parse(&ok).unwrap().get("a").unwrap().len(),
            MAX_LEN - 2
        );
        let long = ok + "x";
        assert_eq!(
            Query::parse(&long),
            Err(Error::TooLong { len: MAX_LEN + 1 })
        );
    }

    #[test]
    fn path_segments() {
        assert_eq!(decode_path_segment("web-1").unwrap(), "web-1");
        assert_eq!(decode_path_segment("").unwrap(), "");
        assert_eq!(decode_path_segment("a+b").unwrap(), "a+b");
        assert_eq!(decode_path_segment("a%20b%2Fc").unwrap(), "a b/c");
        assert_eq!(decode_path_segment("%C3%A9").unwrap(), "é");
        assert_eq!(decode_path_segment("%2e%2E").unwrap(), "..");
        for bad in ["%", "%2", "a%g0", "%%"] {
            assert_eq!(decode_path_segment(bad), Err(Error::BadPathEscape), "{bad}");
        }
        assert_eq!(decode_path_segment("%C3"), Err(Error::PathNotUtf8));
        assert_eq!(decode_path_segment("%80x"), Err(Error::PathNotUtf8));
    }

    #[test]
    fn redaction() {
        let secret = ["token", "access_token"];
        assert_eq!(
            redacted("token=abc&fields=name", &secret),
            "token=***&fields=name"
        );
        assert_eq!(
            redacted("a=1&access_token=s3cr%65t&token=&b", &secret),
            "a=1&access_token=***&token=***&b"
        );
        assert_eq!(redacted("acc%65ss_token=x", &secret), "acc%65ss_token=***");
        assert_eq!(
            redacted("access+token=x", &["access token"]),
            "access+token=***"
        );
        assert_eq!(
            redacted("token=a=b&token=c", &secret),
            "token=***&token=***"
        );
        assert_eq!(redacted("", &secret), "");
        assert_eq!(redacted("&&token", &secret), "&&token");
        assert_eq!(redacted("tok%=x&token=y", &secret), "tok%=x&token=***");
        assert_eq!(redacted("tokens=x", &secret), "tokens=x");
        assert_eq!(redacted("token=x", &[]), "token=x");
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let alphabet = ["a", "=", "&", "%", "+", "F", "0", "é", "%C3", "%A9", "%zz"];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 10) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let _ = Query::parse(&s).map(|q| q.single("a").map(|_| ()));
            let _ = decode_path_segment(&s);
            let _ = redacted(&s, &["a"]);
        }
    }
}
