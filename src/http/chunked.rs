//! The line-level rules of the chunked transfer coding (RFC 9112 section 7.1), shared by the
//! server's request parser and the Docker client's response parser, so both sides refuse the
//! same leniencies ("funky chunks": bare CR or LF, `1 1`, `0x`, whitespace, bad trailers).
//!
//! Both sides use the one incremental [`Decoder`] below, fed bytes in whatever pieces the
//! socket gives; each maps its [`DecodeError`]s to its own errors. Only the limits differ
//! (the server bounds the body and keeps trailers small, the Docker client takes any body).

use std::fmt;

/// Most hex digits in a chunk size: 16 fill a u64; leading zeros beyond that are refused too.
pub const MAX_SIZE_DIGITS: usize = 16;

/// Longest accepted chunk-size line, extensions and CRLF included.
pub const MAX_SIZE_LINE: usize = 1024;

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

/// What a [`Decoder`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A chunk-size line broke the line rules.
    SizeLine(Error),
    /// A chunk-size line longer than [`MAX_SIZE_LINE`].
    SizeLineTooLong,
    /// A chunk's data was not followed by CRLF.
    DataEnd,
    /// A trailer line broke the line rules.
    TrailerLine(Error),
    /// The trailer section grew past the decoder's trailer limit.
    TrailersTooLarge,
    /// A chunk would take the body past the decoder's body limit.
    BodyTooLarge,
}

/// Where a [`Decoder`] is within the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a chunk-size line in `line`, up to its LF.
    Size,
    Data {
        remaining: u64,
    },
    /// The CRLF after a chunk's data; `seen_cr` once its CR came.
    DataEnd {
        seen_cr: bool,
    },
    /// Collecting a trailer line in `line`; `total` bytes of trailers so far.
    Trailers {
        total: usize,
    },
    Done,
}

/// An incremental decoder of one chunked body: fed bytes in any split, it hands out the data
/// as it comes and says when the body (trailers included) is over. It keeps at most one line
/// (a size line or a trailer line), never the data.
///
/// Strict, as this module says: every line ends with CRLF, sizes are bare hex, extensions
/// well-formed, trailers real header fields. Any leniency is a way to read a body other than
/// the one another parser on the path read. Extensions and trailers are checked, then dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoder {
    state: State,
    line: Vec<u8>,
    /// Data bytes so far, and the most allowed.
    decoded: u64,
    body_limit: u64,
    trailer_limit: usize,
}

impl Decoder {
    /// A decoder refusing a body of more than `body_limit` data bytes (checked on each chunk's
    /// size, before its data is read) or a trailer section of more than `trailer_limit` bytes.
    pub fn new(body_limit: u64, trailer_limit: usize) -> Decoder {
        Decoder {
            state: State::Size,
            line: Vec::new(),
            decoded: 0,
            body_limit,
            trailer_limit,
        }
    }

    /// Whether the body is over: its last chunk, trailers and final CRLF have been read.
    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as belongs to the body, giving each run of data to `data`.
    /// Returns the bytes consumed (all of `input` unless the body ended within it) and whether
    /// the body is over. After an error the decoder is not to be used again.
    pub fn decode(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<(usize, bool), DecodeError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Size => {
                    let (part, complete) = take_line(&input[i..]);
                    if self.line.len() + part.len() > MAX_SIZE_LINE {
                        return Err(DecodeError::SizeLineTooLong);
                    }
                    self.line.extend_from_slice(part);
                    i += part.len();
                    if complete {
                        let size = line_content(&self.line)
                            .and_then(parse_size_line)
                            .map_err(DecodeError::SizeLine)?;
                        self.line.clear();
                        if size > self.body_limit.saturating_sub(self.decoded) {
                            return Err(DecodeError::BodyTooLarge);
                        }
                        self.decoded += size;
                        self.state = match size {
                            0 => State::Trailers { total: 0 },
                            remaining => State::Data { remaining },
                        };
                    }
                }
                State::Data { remaining } => {
                    let rest = &input[i..];
                    let take = usize::try_from(remaining).map_or(rest.len(), |r| r.min(rest.len()));
                    data(&rest[..take]);
                    i += take;
                    self.state = match remaining - take as u64 {
                        0 => State::DataEnd { seen_cr: false },
                        remaining => State::Data { remaining },
                    };
                }
                State::DataEnd { seen_cr } => {
                    let b = input[i];
                    i += 1;
                    self.state = match (b, seen_cr) {
                        (b'\r', false) => State::DataEnd { seen_cr: true },
                        (b'\n', true) => State::Size,
                        _ => return Err(DecodeError::DataEnd),
                    };
                }
                State::Trailers { total } => {
                    let (part, complete) = take_line(&input[i..]);
                    let total = total + part.len();
                    if total > self.trailer_limit {
                        return Err(DecodeError::TrailersTooLarge);
                    }
                    self.state = State::Trailers { total };
                    self.line.extend_from_slice(part);
                    i += part.len();
                    if complete {
                        let content = line_content(&self.line).map_err(DecodeError::TrailerLine)?;
                        if content.is_empty() {
                            self.line = Vec::new();
                            self.state = State::Done;
                            return Ok((i, true));
                        }
                        check_trailer_line(content).map_err(DecodeError::TrailerLine)?;
                        self.line.clear();
                    }
                }
                State::Done => return Ok((i, true)),
            }
        }
        Ok((i, self.state == State::Done))
    }
}

/// The first line of `data` with its LF, or all of `data` if it holds no LF; and whether the
/// line is complete.
pub(crate) fn take_line(data: &[u8]) -> (&[u8], bool) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..=i], true),
        None => (data, false),
    }
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

    /// Decodes `input` fed in pieces of `step` bytes: (data, bytes consumed, done).
    fn decode_in(
        d: &mut Decoder,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, usize, bool), DecodeError> {
        let mut data = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step) {
            let (n, done) = d.decode(piece, |b| data.extend_from_slice(b))?;
            used += n;
            if done {
                return Ok((data, used, true));
            }
        }
        Ok((data, used, false))
    }

    #[test]
    fn decoder_in_any_split() {
        let body = b"3;a=b\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..body.len() {
            let mut d = Decoder::new(u64::MAX, 1024);
            let (data, used, done) = decode_in(&mut d, body, step).unwrap();
            assert_eq!(
                (data.as_slice(), used, done),
                (&b"abcde"[..], body.len() - 4, true)
            );
            assert!(d.is_done());
        }
        let mut d = Decoder::new(u64::MAX, 1024);
        assert_eq!(
            decode_in(&mut d, b"3\r\nab", 2).unwrap(),
            (b"ab".to_vec(), 5, false)
        );
    }

    #[test]
    fn decoder_limits_and_errors() {
        let run =
            |body: &[u8], limit, trailers| decode_in(&mut Decoder::new(limit, trailers), body, 1);
        assert!(run(b"5\r\nabcde\r\n0\r\n\r\n", 5, 16).is_ok());
        assert_eq!(
            run(b"3\r\nabc\r\n3\r\n", 5, 16),
            Err(DecodeError::BodyTooLarge)
        );
        assert_eq!(
            run(b"0\r\nX: 123456789\r\n\r\n", 5, 8),
            Err(DecodeError::TrailersTooLarge)
        );
        assert_eq!(run(b"1\r\nab", 5, 16), Err(DecodeError::DataEnd));
        assert_eq!(
            run(b"1 1\r\n", 5, 16),
            Err(DecodeError::SizeLine(Error::Extension))
        );
        assert_eq!(
            run(b"0\r\n\n", 5, 16),
            Err(DecodeError::TrailerLine(Error::LineEnd))
        );
        let long = [&b"1;a="[..], &[b'b'; MAX_SIZE_LINE]].concat();
        assert_eq!(run(&long, 5, 16), Err(DecodeError::SizeLineTooLong));
    }
}
