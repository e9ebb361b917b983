//! The line-level rules of the chunked transfer coding (RFC 9112 section 7.1), shared by the
//! server's request parser and the Docker client's response parser, so both sides refuse the
//! same leniencies ("funky chunks": bare CR or LF, `1 1`, `0x`, whitespace, bad trailers).
//!
//! Each side keeps its own state machine (one decodes byte by byte, the other by line); what a
//! size line or a trailer line may hold is decided here. A single decoder for both is left to
//! a later refactoring.

use std::fmt;

/// Most hex digits in a chunk size: 16 fill a u64; leading zeros beyond that are refused too.
pub const MAX_SIZE_DIGITS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The line did not end with CRLF, or held a CR or LF elsewhere.
    LineEnd,
    /// No hex digits, more than [`MAX_SIZE_DIGITS`], or a size that overflows.
    Size,
    /// Something other than `;name[=value]` extensions after the size.
    Extension,
    /// A trailer line that is not `name: value`.
    Trailer,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::LineEnd => "chunked line not ended by CRLF alone",
            Error::Size => "invalid chunk size",
            Error::Extension => "invalid chunk extension",
            Error::Trailer => "invalid trailer field",
        })
    }
}

impl std::error::Error for Error {}

/// The content of a complete line (up to and including its LF): CRLF must end it, and no
/// other CR or LF may be in it.
pub fn line_content(line: &[u8]) -> Result<&[u8], Error> {
    let content = line.strip_suffix(b"\r\n").ok_or(Error::LineEnd)?;
    if content.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(Error::LineEnd);
    }
    Ok(content)
}

/// A chunk-size line's content (without CRLF): `1*16HEXDIG *( ";" token [ "=" ( token /
/// quoted-string ) ] )`. No whitespace anywhere: RFC 9112 allows "bad" whitespace around
/// the `;` and `=`, which a recipient may refuse, and refusing is what keeps two parsers from
/// reading the line two ways.
pub fn parse_size_line(content: &[u8]) -> Result<u64, Error> {
    let digits = content.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > MAX_SIZE_DIGITS {
        return Err(Error::Size);
    }
    let mut size: u64 = 0;
    for &b in &content[..digits] {
        let digit = (b as char).to_digit(16).ok_or(Error::Size)?;
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(digit)))
            .ok_or(Error::Size)?;
    }
    let mut rest = &content[digits..];
    while let Some(after) = rest.strip_prefix(b";") {
        let name = token_len(after);
        if name == 0 {
            return Err(Error::Extension);
        }
        rest = &after[name..];
        if let Some(value) = rest.strip_prefix(b"=") {
            let n = if value.first() == Some(&b'"') {
                quoted_len(value).ok_or(Error::Extension)?
            } else {
                token_len(value)
            };
            if n == 0 {
                return Err(Error::Extension);
            }
            rest = &value[n..];
        }
    }
    if !rest.is_empty() {
        return Err(Error::Extension);
    }
    Ok(size)
}

/// A trailer line's content (without CRLF): `token ":" OWS value OWS`, the value free of
/// control characters other than HTAB (so of CR, LF and NUL).
pub fn check_trailer_line(content: &[u8]) -> Result<(), Error> {
    let name = token_len(content);
    if name == 0 || content.get(name) != Some(&b':') {
        return Err(Error::Trailer);
    }
    if content[name + 1..]
        .iter()
        .any(|&b| (b < b' ' && b != b'\t') || b == 0x7f)
    {
        return Err(Error::Trailer);
    }
    Ok(())
}

/// RFC 9110 tchar.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn token_len(s: &[u8]) -> usize {
    s.iter().take_while(|&&b| is_tchar(b)).count()
}

/// Length of the quoted-string at the start of `s` (quotes included), if it is one.
fn quoted_len(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                let next = *s.get(i + 1)?;
                if next != b'\t' && (next < b' ' || next == 0x7f) {
                    return None;
                }
                i += 2;
            }
            b if b != b'\t' && (b < b' ' || b == 0x7f) => return None,
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_lines() {
        for (line, size) in [
            (&b"0"[..], 0),
            (b"1a", 0x1a),
            (b"A;ext", 10),
            (b"3;a=b;c=\"d;\\\" e\";f", 3),
            (b"ffffffffffffffff", u64::MAX),
            (b"0000000000000001", 1),
        ] {
            assert_eq!(parse_size_line(line), Ok(size), "{line:?}");
        }
        for line in [
            &b""[..],
            b" 1",
            b"1 ",
            b"1 1",
            b"0x1",
            b"+1",
            b"-1",
            b"1 ;a",
            b"1; a",
            b"1;a =b",
            b"1;a= b",
            b"1;",
            b"1;=b",
            b"1;a=",
            b"1;a=\"b",
            b"1;a=\"b\rc\"",
            b"1\t",
            b"00000000000000001",
            b"1\x00",
        ] {
            assert!(parse_size_line(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn line_ends() {
        assert_eq!(line_content(b"1\r\n"), Ok(&b"1"[..]));
        assert_eq!(line_content(b"1\n"), Err(Error::LineEnd));
        assert_eq!(line_content(b"1\r1\r\n"), Err(Error::LineEnd));
        assert_eq!(line_content(b"1\r\r\n"), Err(Error::LineEnd));
    }

    #[test]
    fn trailer_lines() {
        assert!(check_trailer_line(b"X-T: 1").is_ok());
        assert!(check_trailer_line(b"X-T:").is_ok());
        for bad in [
            &b"X-T"[..],
            b": 1",
            b"X T: 1",
            b"X-T : 1",
            b" X-T: 1",
            b"X-T: a\x00b",
            b"X-T: a\x0bb",
        ] {
            assert!(check_trailer_line(bad).is_err(), "{bad:?}");
        }
    }
}
