//! Incremental HTTP/1.1 request parsing.
//!
//! The connection feeds whatever bytes it has; the parser consumes what it can and says how much.
//! A partial head or body means "keep reading", up to the limits. The head is parsed by
//! `httparse` once it is complete; bodies are framed by `Content-Length` or decoded from
//! `Transfer-Encoding: chunked` as they arrive, so a slow sender costs no re-scanning.

use std::fmt;

use super::chunked;

/// At most this many headers in one request; more is a 431, like an oversized head.
pub const MAX_HEADERS: usize = 64;
/// Trailer section of a chunked body, all lines together.
const MAX_TRAILERS: usize = 8 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// The head did not fit in the head limit (431).
    HeadTooLarge,
    /// Too many header fields (431).
    TooManyHeaders,
    /// The body is larger than the body limit (413).
    BodyTooLarge,
    /// Malformed request (400), with what was wrong.
    Malformed(String),
    /// A transfer coding other than chunked (501).
    UnsupportedTransferEncoding,
    /// Not HTTP/1.x (505).
    UnsupportedVersion,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::HeadTooLarge => f.write_str("request head too large"),
            Error::TooManyHeaders => f.write_str("too many request header fields"),
            Error::BodyTooLarge => f.write_str("request body too large"),
            Error::Malformed(why) => write!(f, "malformed request: {why}"),
            Error::UnsupportedTransferEncoding => f.write_str("unsupported transfer encoding"),
            Error::UnsupportedVersion => f.write_str("unsupported HTTP version"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Other,
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }
}

/// One request, complete with its body.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// The path part of the request target, still percent-encoded.
    pub path: String,
    /// The query part after `?`, still encoded ("" when absent).
    pub query: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Header names lower-cased, values without surrounding SP/HTAB (lossy UTF-8 for
    /// obs-text).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the connection may carry another request after this one: never after one
    /// that asked for a protocol upgrade (`Upgrade`, or `Connection: upgrade`) unless the
    /// upgrade happens.
    pub keep_alive: bool,
    /// The client sent `Expect: 100-continue`.
    pub expect_continue: bool,
}

impl Request {
    /// The first value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header joined with ", ", as RFC 9110 allows for list-valued fields.
    pub fn header_joined(&self, name: &str) -> Option<String> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name);
        let first = values.next()?.1.clone();
        Some(values.fold(first, |mut acc, (_, v)| {
            acc.push_str(", ");
            acc.push_str(v);
            acc
        }))
    }

    /// Whether a comma-separated header contains `token` (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case(token))
    }
}

/// Where the parser is within the current request.
#[derive(Debug)]
enum State {
    Head,
    /// The head of a request with a body was handed out; nothing more is read until
    /// `continue_body` gives it back.
    AwaitingBody(Framing),
    Body {
        request: Request,
        remaining: usize,
    },
    Chunked {
        request: Request,
        chunks: chunked::Decoder,
    },
}

/// What one call to [`Parser::parse`] did.
#[derive(Debug)]
pub struct Parsed {
    /// Bytes of the input consumed; the caller drops them from its buffer.
    pub consumed: usize,
    /// A complete request, if these bytes finished one.
    pub request: Option<Request>,
    /// The head of a request that has a body (its `body` still empty). The parser reads no
    /// further until [`Parser::continue_body`] hands it back: the caller decides first
    /// whether the body is wanted at all (route, method, credentials, the endpoint's limit),
    /// so that a request that will be refused costs no memory for its body.
    pub head: Option<Request>,
}

#[derive(Debug)]
pub struct Parser {
    state: State,
    head_limit: usize,
    body_limit: usize,
}

impl Parser {
    pub fn new(head_limit: usize, body_limit: usize) -> Parser {
        Parser {
            state: State::Head,
            head_limit,
            body_limit,
        }
    }

    /// Read the body of the request whose head `parse` handed out, at most `limit` bytes of
    /// it (never more than the parser's own body limit). A declared length over the limit is
    /// refused here, before any of it is read.
    pub fn continue_body(&mut self, request: Request, limit: usize) -> Result<()> {
        let State::AwaitingBody(framing) = std::mem::replace(&mut self.state, State::Head) else {
            return Err(Error::Malformed("no request head awaits its body".into()));
        };
        let limit = limit.min(self.body_limit);
        self.state = match framing {
            Framing::Length(len) if len > limit => return Err(Error::BodyTooLarge),
            // The body grows as its bytes arrive: a declared length reserves nothing.
            Framing::Length(len) => State::Body {
                request,
                remaining: len,
            },
            Framing::Chunked => State::Chunked {
                request,
                chunks: chunked::Decoder::new(
                    u64::try_from(limit).unwrap_or(u64::MAX),
                    MAX_TRAILERS,
                ),
            },
            Framing::None => return Err(Error::Malformed("no body to read".into())),
        };
        Ok(())
    }

    /// Whether part of a request has been seen (used for the head timeout and for deciding
    /// whether an idle connection can be closed quietly).
    pub fn in_body(&self) -> bool {
        !matches!(self.state, State::Head)
    }

    /// Consume as much of `input` as belongs to the current request.
    pub fn parse(&mut self, input: &[u8]) -> Result<Parsed> {
        let nothing = Parsed {
            consumed: 0,
            request: None,
            head: None,
        };
        match self.state {
            State::AwaitingBody(_) => return Ok(nothing),
            State::Head => {
                return match self.parse_head(input)? {
                    None => Ok(nothing),
                    Some((consumed, request, Framing::None)) => Ok(Parsed {
                        consumed,
                        request: Some(request),
                        head: None,
                    }),
                    Some((consumed, request, framing)) => {
                        self.state = State::AwaitingBody(framing);
                        Ok(Parsed {
                            consumed,
                            request: None,
                            head: Some(request),
                        })
                    }
                };
            }
            State::Body { .. } | State::Chunked { .. } => {}
        }
        let (consumed, done) = match &mut self.state {
            State::Head | State::AwaitingBody(_) => unreachable_state(),
            State::Body { request, remaining } => {
                let take = input.len().min(*remaining);
                request.body.extend_from_slice(&input[..take]);
                *remaining -= take;
                (take, *remaining == 0)
            }
            State::Chunked { request, chunks } => chunks
                .decode(input, |data| request.body.extend_from_slice(data))
                .map_err(chunk_error)?,
        };
        let request = if done {
            match std::mem::replace(&mut self.state, State::Head) {
                State::Body { request, .. } | State::Chunked { request, .. } => Some(request),
                State::Head | State::AwaitingBody(_) => None,
            }
        } else {
            None
        };
        Ok(Parsed {
            consumed,
            request,
            head: None,
        })
    }

    fn parse_head(&self, input: &[u8]) -> Result<Option<(usize, Request, Framing)>> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let n = match req.parse(input) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if input.len() > self.head_limit {
                    return Err(Error::HeadTooLarge);
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => return Err(Error::TooManyHeaders),
            // httparse calls any third word of the request line a version; only a real
            // `HTTP/x.y` that is not 1.x is a 505, the rest is garbage.
            Err(httparse::Error::Version) if looks_like_http(input) => {
                return Err(Error::UnsupportedVersion);
            }
            Err(e) => return Err(Error::Malformed(e.to_string())),
        };
        if n > self.head_limit {
            return Err(Error::HeadTooLarge);
        }
        // httparse takes a bare LF as a line end; a proxy in front may not (it may see one
        // header line where we see two), so a head whose lines do not all end in CRLF is
        // refused rather than read one way here and another way there.
        let head = &input[..n];
        if head.first() == Some(&b'\n') || head.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r') {
            return Err(Error::Malformed("bare LF in the request head".into()));
        }
        let method = Method::from_token(req.method.unwrap_or(""));
        let target = req.path.unwrap_or("");
        if !target.starts_with('/') {
            return Err(Error::Malformed(
                "request target must be an absolute path".into(),
            ));
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, q),
            None => (target, ""),
        };
        let minor = req.version.unwrap_or(1);
        let mut request = Request {
            method,
            path: path.to_string(),
            query: query.to_string(),
            minor,
            headers: Vec::with_capacity(req.headers.len()),
            body: Vec::new(),
            keep_alive: minor == 1,
            expect_continue: false,
        };
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut hosts = 0;
        let mut authorizations = 0;
        let mut upgrade = false;
        for h in req.headers.iter() {
            let name = h.name.to_ascii_lowercase();
            let raw = trim_ows(h.value);
            // The framing fields decide where this request ends: a byte another parser could
            // read differently (a Unicode space it trims, say) must not get this far.
            if matches!(name.as_str(), "content-length" | "transfer-encoding")
                && !raw.iter().all(|&b| b.is_ascii_graphic() || b == b' ')
            {
                return Err(Error::Malformed(format!("invalid byte in {name}")));
            }
            let value = String::from_utf8_lossy(raw).into_owned();
            match name.as_str() {
                "content-length" => {
                    // One field with one value: even identical repeats ("3, 3", or the field
                    // twice) are refused, as RFC 9110 section 8.6 allows, since an
                    // intermediary may have combined them differently.
                    if content_length.is_some() {
                        return Err(Error::Malformed("several Content-Length fields".into()));
                    }
                    content_length = Some(parse_content_length(&value)?);
                }
                "transfer-encoding" => {
                    // Only `chunked` alone is supported; anything layered under it could not
                    // be decoded, and guessing would open the door to request smuggling.
                    if !value.eq_ignore_ascii_case("chunked") || chunked {
                        return Err(Error::UnsupportedTransferEncoding);
                    }
                    chunked = true;
                }
                "connection" => {
                    for token in value.split(',').map(|t| t.trim_matches([' ', '\t'])) {
                        if token.eq_ignore_ascii_case("close") {
                            request.keep_alive = false;
                        } else if token.eq_ignore_ascii_case("keep-alive") && minor == 0 {
                            request.keep_alive = true;
                        } else if token.eq_ignore_ascii_case("upgrade") {
                            upgrade = true;
                        }
                    }
                }
                "upgrade" => upgrade = true,
                "host" => hosts += 1,
                // Which of two credentials counts would depend on the reader (first wins here,
                // the last elsewhere): refused, as for Host.
                "authorization" => {
                    authorizations += 1;
                    if authorizations > 1 {
                        return Err(Error::Malformed("several Authorization fields".into()));
                    }
                }
                "expect" => {
                    if value.eq_ignore_ascii_case("100-continue") {
                        request.expect_continue = minor == 1;
                    } else {
                        return Err(Error::Malformed(format!(
                            "unsupported expectation {value:?}"
                        )));
                    }
                }
                _ => {}
            }
            request.headers.push((name, value));
        }
        // RFC 9112 section 3.2: exactly one Host in HTTP/1.1, never more than one.
        if hosts > 1 || (hosts == 0 && minor == 1) {
            return Err(Error::Malformed(
                "an HTTP/1.1 request needs exactly one Host field".into(),
            ));
        }
        if upgrade {
            // HTTP/1.0 has no Upgrade (RFC 9110 section 7.8).
            if minor == 0 {
                return Err(Error::Malformed("no protocol upgrade over HTTP/1.0".into()));
            }
            // A proxy may switch to tunnelling on the request alone; if supd then refuses the
            // upgrade and reads on, the "tunnel" carries requests the proxy never checked.
            // So whatever answers a request that asked to switch protocols, other than the
            // switch, ends the connection.
            request.keep_alive = false;
        }
        let framing = match (chunked, content_length) {
            (true, Some(_)) => {
                return Err(Error::Malformed(
                    "both Content-Length and Transfer-Encoding".into(),
                ));
            }
            (true, None) => Framing::Chunked,
            (false, Some(0)) | (false, None) => Framing::None,
            (false, Some(len)) if len > self.body_limit => return Err(Error::BodyTooLarge),
            (false, Some(len)) => Framing::Length(len),
        };
        Ok(Some((n, request, framing)))
    }
}

#[derive(Debug)]
enum Framing {
    None,
    Length(usize),
    Chunked,
}

#[cold]
fn unreachable_state() -> (usize, bool) {
    // parse() returns in the Head and AwaitingBody states before the body step, so this
    // cannot be hit;
    // answering "nothing consumed, not done" keeps the parser total anyway.
    (0, false)
}

fn looks_like_http(input: &[u8]) -> bool {
    let line = input.split(|&b| b == b'\n').next().unwrap_or(input);
    line.split(|&b| b == b' ')
        .nth(2)
        .is_some_and(|v| v.starts_with(b"HTTP/"))
}

fn parse_content_length(value: &str) -> Result<usize> {
    if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Malformed(format!("bad Content-Length {value:?}")));
    }
    value
        .parse()
        .map_err(|_| Error::Malformed(format!("bad Content-Length {value:?}")))
}

/// The server's errors for a chunked body: a broken line is a 400, a body over the limit a
/// 413, trailers over their cap a 431 (like an oversized head).
fn chunk_error(e: chunked::DecodeError) -> Error {
    use chunked::DecodeError as E;
    match e {
        E::SizeLine(e) | E::TrailerLine(e) => Error::Malformed(e.to_string()),
        E::SizeLineTooLong => Error::Malformed("chunk size line too long".into()),
        E::DataEnd => Error::Malformed("chunk data not followed by CRLF".into()),
        E::TrailersTooLarge => Error::HeadTooLarge,
        E::BodyTooLarge => Error::BodyTooLarge,
    }
}

/// A field value without the optional whitespace around it: SP and HTAB only (RFC 9110
/// section 5.5), never Unicode spaces, which another parser would keep as part of the value.
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |e| e + 1);
    &value[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `parse` over `input`, the body admitted (with no limit of its own) when the head
    /// is handed out.
    fn parse_whole(p: &mut Parser, input: &[u8]) -> Result<Parsed> {
        let r = p.parse(input)?;
        match r.head {
            Some(head) => {
                p.continue_body(head, usize::MAX)?;
                let mut rest = p.parse(&input[r.consumed..])?;
                rest.consumed += r.consumed;
                Ok(rest)
            }
            None => Ok(r),
        }
    }

    fn parse_all(input: &[u8]) -> Result<Vec<Request>> {
        let mut p = Parser::new(16 * 1024, 1024 * 1024);
        let mut buf = input.to_vec();
        let mut out = Vec::new();
        loop {
            let r = p.parse(&buf)?;
            buf.drain(..r.consumed);
            if let Some(head) = r.head {
                p.continue_body(head, usize::MAX)?;
                continue;
            }
            match r.request {
                Some(req) => out.push(req),
                None if r.consumed == 0 => break,
                None => {}
            }
        }
        Ok(out)
    }

    /// Feed in every possible two-piece split and byte by byte: the result must not depend on
    /// how the socket delivered the bytes.
    fn parse_split(input: &[u8]) -> Vec<Request> {
        let whole = parse_all(input).unwrap();
        for step in [1usize, 2, 3, 7, 64] {
            let mut p = Parser::new(16 * 1024, 1024 * 1024);
            let mut buf = Vec::new();
            let mut out = Vec::new();
            for piece in input.chunks(step) {
                buf.extend_from_slice(piece);
                loop {
                    let r = p.parse(&buf).unwrap();
                    buf.drain(..r.consumed);
                    if let Some(head) = r.head {
                        p.continue_body(head, usize::MAX).unwrap();
                        continue;
                    }
                    match r.request {
                        Some(req) => out.push(req),
                        None if r.consumed == 0 => break,
                        None => {}
                    }
                }
            }
            assert_eq!(out.len(), whole.len(), "step {step}");
            for (a, b) in out.iter().zip(&whole) {
                assert_eq!(a.path, b.path);
                assert_eq!(a.body, b.body, "step {step}");
            }
        }
        whole
    }

    #[test]
    fn simple_get() {
        let reqs = parse_split(
            b"GET /v1/state?a=b HTTP/1.1\r\nHost: x\r\nAccept: application/yaml\r\n\r\n",
        );
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].method, Method::Get);
        assert_eq!(reqs[0].path, "/v1/state");
        assert_eq!(reqs[0].query, "a=b");
        assert_eq!(reqs[0].header("accept"), Some("application/yaml"));
        assert!(reqs[0].keep_alive);
    }

    #[test]
    fn pipelined_with_bodies() {
        let input = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\nGET /c HTTP/1.0\r\n\r\n";
        let reqs = parse_split(input);
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0].body, b"hello");
        assert_eq!(reqs[1].body, b"abcde");
        assert_eq!(reqs[2].path, "/c");
        assert!(!reqs[2].keep_alive);
    }

    #[test]
    fn bare_lf_in_the_head_is_refused() {
        for input in [
            &b"GET / HTTP/1.1\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\n",
            b"GET / HTTP/1.1\nHost: x\n\n",
        ] {
            let e = Parser::new(1024, 10).parse(input).unwrap_err();
            assert_eq!(
                e,
                Error::Malformed("bare LF in the request head".into()),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        // A bare LF in a body is the body's business.
        let r = parse_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\na\n").unwrap();
        assert_eq!(r[0].body, b"a\n");
    }

    #[test]
    fn several_authorization_fields_are_refused() {
        let e = Parser::new(1024, 10)
            .parse(b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nauthorization: Bearer b\r\n\r\n")
            .unwrap_err();
        assert_eq!(e, Error::Malformed("several Authorization fields".into()));
        let r = parse_all(b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\n\r\n").unwrap();
        assert_eq!(r[0].header("authorization"), Some("Bearer a"));
    }

    #[test]
    fn http10_keep_alive_and_close() {
        let r = parse_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(r[0].keep_alive);
        let r = parse_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!r[0].keep_alive);
    }

    #[test]
    fn limits() {
        let mut p = Parser::new(64, 10);
        let big = vec![b'a'; 100];
        assert_eq!(p.parse(&big).unwrap_err(), Error::HeadTooLarge);
        let mut p = Parser::new(1024, 10);
        assert_eq!(
            p.parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
                .unwrap_err(),
            Error::BodyTooLarge
        );
        let mut p = Parser::new(1024, 10);
        assert_eq!(
            parse_whole(
                &mut p,
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n"
            )
            .unwrap_err(),
            Error::BodyTooLarge
        );
        let mut p = Parser::new(1024, 10);
        assert_eq!(
            parse_whole(
                &mut p,
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n"
            )
            .unwrap_err(),
            Error::BodyTooLarge
        );
    }

    #[test]
    fn too_many_headers() {
        let mut s = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..(MAX_HEADERS + 1) {
            s.push_str(&format!("X-{i}: v\r\n"));
        }
        s.push_str("\r\n");
        let mut p = Parser::new(64 * 1024, 10);
        assert_eq!(p.parse(s.as_bytes()).unwrap_err(), Error::TooManyHeaders);
    }

    #[test]
    fn smuggling_and_malformed() {
        for bad in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        ] {
            let mut p = Parser::new(1024, 1024);
            assert!(
                matches!(parse_whole(&mut p, bad), Err(Error::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut p = Parser::new(1024, 1024);
        assert_eq!(
            p.parse(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
                .unwrap_err(),
            Error::UnsupportedTransferEncoding
        );
        let mut p = Parser::new(1024, 1024);
        assert_eq!(
            p.parse(b"GET / HTTP/2.0\r\n\r\n").unwrap_err(),
            Error::UnsupportedVersion
        );
    }

    #[test]
    fn body_waits_for_continue_body() {
        let mut p = Parser::new(1024, 1024);
        let input =
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nok";
        let r = p.parse(input).unwrap();
        let head = r.head.expect("the head is handed out before the body");
        assert!(head.expect_continue);
        assert!(head.body.is_empty() && r.request.is_none());
        // Nothing of the body is read until the head comes back.
        let rest = &input[r.consumed..];
        assert_eq!(p.parse(rest).unwrap().consumed, 0);
        assert!(p.in_body());
        p.continue_body(head, 2).unwrap();
        let r = p.parse(rest).unwrap();
        assert!(r.head.is_none());
        assert_eq!(r.request.unwrap().body, b"ok");
    }

    #[test]
    fn endpoint_limit_refuses_a_declared_length_and_bounds_chunks() {
        let mut p = Parser::new(1024, 1 << 20);
        let r = p
            .parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
            .unwrap();
        let head = r.head.unwrap();
        assert_eq!(p.continue_body(head, 10).unwrap_err(), Error::BodyTooLarge);
        let mut p = Parser::new(1024, 1 << 20);
        let r = p
            .parse(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        p.continue_body(r.head.unwrap(), 10).unwrap();
        assert_eq!(p.parse(b"b\r\n").unwrap_err(), Error::BodyTooLarge);
        // A declared length reserves nothing: the body grows with what arrives.
        let mut p = Parser::new(1024, 1 << 20);
        let r = p
            .parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
            .unwrap();
        p.continue_body(r.head.unwrap(), 1 << 20).unwrap();
        p.parse(b"abc").unwrap();
        let State::Body { request, .. } = &p.state else {
            panic!("not reading the body");
        };
        assert!(request.body.capacity() < 4096);
    }

    #[test]
    fn joined_and_token_headers() {
        let r = parse_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b, c\r\nConnection: keep-alive, Upgrade\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            r[0].header_joined("sec-websocket-protocol").as_deref(),
            Some("a, b, c")
        );
        assert!(r[0].header_has_token("connection", "upgrade"));
        assert!(!r[0].header_has_token("connection", "close"));
    }

    /// What the server would answer to `input`: the status of the error ending the parse, or
    /// 200 with the requests parsed.
    fn answer(input: &[u8]) -> (u16, Vec<Request>) {
        match parse_all(input) {
            Ok(reqs) => (200, reqs),
            Err(e) => (crate::http::ApiError::from(e).status, Vec::new()),
        }
    }

    fn assert_status(input: &[u8], status: u16) {
        assert_eq!(
            answer(input).0,
            status,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }

    /// Finding 9: framing fields are trimmed of SP and HTAB only, on the raw bytes; a Unicode
    /// space (NBSP, NEL) is not whitespace to them but a reason to refuse the request.
    #[test]
    fn framing_fields_are_trimmed_of_sp_and_htab_only() {
        for bad in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\xc2\xa0\r\n\r\n0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \xc2\xa0chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\xc2\xa0\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\xc2\x85\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \xc2\xa03\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\xff\r\n\r\nabc",
        ] {
            assert_status(bad, 400);
        }
        let (status, reqs) = answer(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked \t\r\n\r\n1\r\na\r\n0\r\n\r\n",
        );
        assert_eq!((status, reqs[0].body.as_slice()), (200, &b"a"[..]));
        let (status, reqs) =
            answer(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \t 3 \t\r\n\r\nabc");
        assert_eq!((status, reqs[0].body.as_slice()), (200, &b"abc"[..]));
    }

    #[test]
    fn content_length_forms() {
        for bad in [
            &b"+3"[..],
            b"-3",
            b"0x3",
            b"3, 3",
            b"3,3",
            b"3 3",
            b"",
            b"3;",
            b"99999999999999999999",
        ] {
            let mut req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ".to_vec();
            req.extend_from_slice(bad);
            req.extend_from_slice(b"\r\n\r\nabc");
            assert_status(&req, 400);
        }
        // The same value twice is refused too: safer than trusting every hop to agree.
        assert_status(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            400,
        );
        for both in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        ] {
            assert_status(both, 400);
        }
        let (status, reqs) =
            answer(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 003\r\n\r\nabc");
        assert_eq!((status, reqs[0].body.as_slice()), (200, &b"abc"[..]));
    }

    #[test]
    fn transfer_encoding_forms() {
        for te in [
            &b"chunked, chunked"[..],
            b"identity",
            b"chunked, identity",
            b"gzip, chunked",
            b"chunked\r\nTransfer-Encoding: chunked",
            b"chunked;q=1",
            b"\"chunked\"",
        ] {
            let mut req = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ".to_vec();
            req.extend_from_slice(te);
            req.extend_from_slice(b"\r\n\r\n0\r\n\r\n");
            assert_status(&req, 501);
        }
        // obs-fold and whitespace before the colon: refused by the head parser.
        for bad in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n 0\r\n\r\nabcdefghij",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ] {
            assert_status(bad, 400);
        }
    }

    /// Finding 10: "funky chunks" — every line ends with CRLF, sizes are bare hex, extensions
    /// and trailers well-formed.
    #[test]
    fn funky_chunks_are_refused() {
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            &b"1\r1\r\nx\r\n0\r\n\r\n"[..],
            b"1\r1\n_________________\r\n0\r\n\r\n",
            b"1\nx\r\n0\r\n\r\n",
            b"1\r\nx\n0\r\n\r\n",
            b"1\r\nx\r0\r\n\r\n",
            b"1\r\nx\r\n0\n\r\n",
            b"1\r\nx\r\n0\r\n\n",
            b"1\r\nx\r\n0\r\n\r\r\n",
            b"1 1\r\nx\r\n0\r\n\r\n",
            b"1\t\r\nx\r\n0\r\n\r\n",
            b" 1\r\nx\r\n0\r\n\r\n",
            b"0x1\r\nx\r\n0\r\n\r\n",
            b"+1\r\nx\r\n0\r\n\r\n",
            b"1 ;a\r\nx\r\n0\r\n\r\n",
            b"1;a\rb\r\nx\r\n0\r\n\r\n",
            b"1;a b\r\nx\r\n0\r\n\r\n",
            b"1;a=\"b\r\nx\r\n0\r\n\r\n",
            b"1;\r\nx\r\n0\r\n\r\n",
            b"00000000000000001\r\nx\r\n0\r\n\r\n",
            b"\r\n1\r\nx\r\n0\r\n\r\n",
            b"1\r\nx\r\n0\r\nX\r\n\r\n",
            b"1\r\nx\r\n0\r\n: v\r\n\r\n",
            b"1\r\nx\r\n0\r\nX : v\r\n\r\n",
            b"1\r\nx\r\n0\r\nX: a\rb\r\n\r\n",
            b"1\r\nx\r\n0\r\nX: a\x00b\r\n\r\n",
            b"1\r\nx\r\n0\r\nX: 1\nY: 2\r\n\r\n",
        ] {
            let input = [&head[..], body].concat();
            assert_status(&input, 400);
        }
        let (status, reqs) = answer(
            &[
                &head[..],
                b"3;a=b;c=\"d; \\\" e\"\r\nabc\r\n0000000000000002\r\nde\r\n0;z\r\nX-T: 1\r\nY:\r\n\r\n",
            ]
            .concat(),
        );
        assert_eq!((status, reqs[0].body.as_slice()), (200, &b"abcde"[..]));
    }

    #[test]
    fn trailers_stay_capped() {
        let mut input =
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        for _ in 0..(MAX_TRAILERS / 10 + 1) {
            input.extend_from_slice(b"X: 45678\r\n");
        }
        assert_status(&input, 431);
    }

    /// Finding 12: one Host in HTTP/1.1; no upgrade over HTTP/1.0; a request asking for an
    /// upgrade ends its connection unless the upgrade happens.
    #[test]
    fn host_and_upgrade_rules() {
        assert_status(b"GET / HTTP/1.1\r\n\r\n", 400);
        assert_status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
        assert_status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
        assert_status(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400);
        assert_eq!(answer(b"GET / HTTP/1.0\r\n\r\n").0, 200);
        assert_status(
            b"GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            400,
        );
        assert_status(b"GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n", 400);
        assert_status(
            b"GET / HTTP/1.0\r\nConnection: keep-alive, upgrade\r\n\r\n",
            400,
        );
        for upgrading in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive,upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n",
        ] {
            let (status, reqs) = answer(upgrading);
            assert_eq!(status, 200);
            assert!(!reqs[0].keep_alive, "{:?}", String::from_utf8_lossy(upgrading));
        }
        let (_, reqs) = answer(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
        assert!(reqs[0].keep_alive);
    }
}
