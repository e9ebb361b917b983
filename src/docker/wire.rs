//! The client side of HTTP/1.1 for the Docker Engine API over its unix socket: requests out,
//! responses in as a stream of events, fed with bytes in whatever pieces the socket gives.
//! Sans-IO: nothing here reads or writes a socket.

use std::fmt;

use crate::http::chunked;

/// Longest accepted response head (status line and headers), and trailer section.
pub const MAX_HEAD: usize = 64 * 1024;

/// Most header fields accepted in one response head.
pub const MAX_HEADERS: usize = 64;

/// Longest accepted chunk-size line, extensions and CRLF included.
pub const MAX_CHUNK_LINE: usize = chunked::MAX_SIZE_LINE;

#[derive(Debug)]
pub enum Error {
    HeadTooLarge,
    /// The head is not valid HTTP/1.x.
    Head(httparse::Error),
    /// The head ended where `httparse` did not find its end.
    MalformedHead,
    /// 101 Switching Protocols, which supd never asks for.
    UnexpectedUpgrade,
    BadContentLength,
    /// A transfer coding other than a final `chunked`, which supd never asks for.
    UnsupportedTransferEncoding(String),
    ChunkLineTooLong,
    BadChunkSize,
    /// A chunk's data was not followed by CRLF.
    BadChunkEnd,
    TrailersTooLarge,
    /// A trailer line that is not a header field ended by CRLF.
    BadTrailer,
    /// Bytes after the end of the response (supd never pipelines requests).
    TrailingData,
    /// The peer closed the connection before the response was complete.
    Incomplete,
    /// A previous call failed; the connection is no longer usable.
    Failed,
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::HeadTooLarge => write!(f, "response head longer than {MAX_HEAD} bytes"),
            Error::Head(e) => write!(f, "invalid response head: {e}"),
            Error::MalformedHead => f.write_str("invalid response head"),
            Error::UnexpectedUpgrade => f.write_str("unexpected 101 Switching Protocols"),
            Error::BadContentLength => f.write_str("invalid Content-Length"),
            Error::UnsupportedTransferEncoding(te) => {
                write!(f, "unsupported Transfer-Encoding {te:?}")
            }
            Error::ChunkLineTooLong => {
                write!(f, "chunk-size line longer than {MAX_CHUNK_LINE} bytes")
            }
            Error::BadChunkSize => f.write_str("invalid chunk-size line"),
            Error::BadChunkEnd => f.write_str("chunk data not followed by CRLF"),
            Error::TrailersTooLarge => write!(f, "trailer section longer than {MAX_HEAD} bytes"),
            Error::BadTrailer => f.write_str("invalid trailer line"),
            Error::TrailingData => f.write_str("data after the end of the response"),
            Error::Incomplete => f.write_str("connection closed before the response was complete"),
            Error::Failed => f.write_str("response parser used after an error"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Head(e) => Some(e),
            _ => None,
        }
    }
}

/// Bytes that may not appear as they are in a request target: controls, space, non-ASCII (which
/// would let a caller's string split the request line or inject headers) and the delimiters
/// that RFC 3986 excludes (so that a JSON `filters` value can be passed as it is).
fn must_escape(b: u8) -> bool {
    b <= b' '
        || b >= 0x7f
        || matches!(
            b,
            b'"' | b'#' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
}

/// Build a request. Always HTTP/1.1 with `Host: docker`, `Content-Length` when a body is given
/// (`Content-Type: application/json` then). `connection_close` adds `Connection: close`.
///
/// `method` is one of supd's own constants. Bytes of `path_and_query` that may not appear in a
/// request target are percent-encoded, so no caller's string can break the request's framing.
pub fn request(
    method: &str,
    path_and_query: &str,
    body: Option<&[u8]>,
    connection_close: bool,
) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let body_len = body.map_or(0, <[u8]>::len);
    let mut out = Vec::with_capacity(128 + path_and_query.len() + body_len);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    for &b in path_and_query.as_bytes() {
        if must_escape(b) {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: docker\r\n");
    if let Some(body) = body {
        out.extend_from_slice(b"Content-Type: application/json\r\n");
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    if connection_close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
    out
}

#[derive(Debug, PartialEq)]
pub enum Event {
    Head {
        status: u16,
        content_type: Option<String>,
    },
    Body(Vec<u8>),
    End,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Collecting the head in `buf`.
    Head,
    /// `remaining` body bytes to go.
    Length {
        remaining: u64,
    },
    /// In a chunked body, which `chunks` decodes.
    Chunked,
    /// The body ends when the connection does.
    UntilClose,
    Done,
    Failed,
}

/// How a response's body is delimited.
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A parser for one response, as a state machine that keeps at most one head or one line
/// (a chunk-size or trailer line, in its chunked decoder).
#[derive(Debug)]
pub struct ResponseParser {
    state: State,
    /// The head so far.
    buf: Vec<u8>,
    /// The chunked body's decoder, shared with the server side: the same strict line rules.
    chunks: chunked::Decoder,
    /// Whether the connection may carry another request once this response is done.
    reusable: bool,
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseParser {
    /// For a response to a non-HEAD request.
    pub fn new() -> Self {
        ResponseParser {
            state: State::Head,
            buf: Vec::new(),
            chunks: new_chunks(),
            reusable: false,
        }
    }

    /// Feed bytes as they arrive, in any split. Returns the events completed by these bytes.
    /// Handles Content-Length, `Transfer-Encoding: chunked` (with chunk extensions and
    /// trailers), and bodies delimited by connection close; 1xx heads are skipped; 204/304
    /// have no body. Limits: head 64 KiB (leading empty lines included), 64 header fields;
    /// chunk-size line 1 KiB; trailers 64 KiB; overflow-safe sizes. The head is parsed by
    /// `httparse`, the chunked body by `http::chunked::Decoder`, as on the server side.
    ///
    /// Body bytes that arrive together come as one `Body` event. After an error, every call
    /// fails.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        while !data.is_empty() {
            match self.step(data, &mut events) {
                Ok(used) => data = &data[used..],
                Err(e) => {
                    self.fail();
                    return Err(e);
                }
            }
        }
        Ok(events)
    }

    /// The peer closed the connection: returns `End` for a close-delimited body, or an error
    /// if the response was incomplete.
    pub fn eof(&mut self) -> Result<Vec<Event>> {
        match self.state {
            State::UntilClose => {
                self.state = State::Done;
                Ok(vec![Event::End])
            }
            State::Done => Ok(Vec::new()),
            State::Failed => Err(Error::Failed),
            _ => {
                self.fail();
                Err(Error::Incomplete)
            }
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the connection can carry the next request: the response is done, was not
    /// delimited by the connection's close, and neither side asked to close.
    pub fn reusable(&self) -> bool {
        self.is_done() && self.reusable
    }

    fn fail(&mut self) {
        self.state = State::Failed;
        self.buf = Vec::new();
        self.chunks = new_chunks();
    }

    /// Consumes a prefix of `data` (at least one byte) and advances the state.
    fn step(&mut self, data: &[u8], events: &mut Vec<Event>) -> Result<usize> {
        match self.state {
            State::Head => self.head(data, events),
            State::Length { remaining } => {
                let used = usize::try_from(remaining).map_or(data.len(), |r| r.min(data.len()));
                push_body(events, &data[..used]);
                let remaining = remaining - used as u64;
                if remaining == 0 {
                    self.end(events);
                } else {
                    self.state = State::Length { remaining };
                }
                Ok(used)
            }
            State::Chunked => {
                let (used, done) = self
                    .chunks
                    .decode(data, |bytes| push_body(events, bytes))
                    .map_err(chunk_error)?;
                if done {
                    self.end(events);
                }
                Ok(used)
            }
            State::UntilClose => {
                push_body(events, data);
                Ok(data.len())
            }
            State::Done => Err(Error::TrailingData),
            State::Failed => Err(Error::Failed),
        }
    }

    /// Adds `data` to the head in `buf`, up to one byte over the limit, and parses it with
    /// `httparse` whenever the new bytes may have ended it (an empty line). Returns the bytes
    /// of `data` that belong to the head: those after the final head are the body's.
    fn head(&mut self, data: &[u8], events: &mut Vec<Event>) -> Result<usize> {
        let old = self.buf.len();
        let piece = &data[..data.len().min((MAX_HEAD + 1).saturating_sub(old))];
        self.buf.extend_from_slice(piece);
        // Only where the new bytes are (and the two before them) can an empty line have
        // appeared: a head fed in small pieces is not parsed over and over.
        let mut from = old.saturating_sub(2);
        while has_empty_line(&self.buf[from..]) {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            let n = match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => n,
                // Empty lines before the status line, which httparse skips.
                Ok(httparse::Status::Partial) => break,
                Err(e) => return Err(Error::Head(e)),
            };
            if n > MAX_HEAD {
                return Err(Error::HeadTooLarge);
            }
            let Some(head) = Head::of(&response)? else {
                // A 1xx head: the next head follows.
                self.buf.drain(..n);
                from = 0;
                continue;
            };
            // The invariant: `buf` never holds a complete head at the end of a step, so the
            // bytes after this one all came in `piece`.
            let after = self.buf.len() - n;
            self.buf = Vec::new();
            self.start_body(head, events);
            return Ok(piece.len() - after);
        }
        if self.buf.len() > MAX_HEAD {
            return Err(Error::HeadTooLarge);
        }
        Ok(piece.len())
    }

    fn start_body(&mut self, head: Head, events: &mut Vec<Event>) {
        self.reusable = !head.close;
        events.push(Event::Head {
            status: head.status,
            content_type: head.content_type,
        });
        match head.framing {
            Framing::None => self.end(events),
            Framing::Length(remaining) => self.state = State::Length { remaining },
            Framing::Chunked => {
                self.chunks = new_chunks();
                self.state = State::Chunked;
            }
            Framing::UntilClose => {
                self.reusable = false;
                self.state = State::UntilClose;
            }
        }
    }

    fn end(&mut self, events: &mut Vec<Event>) {
        self.state = State::Done;
        self.buf = Vec::new();
        events.push(Event::End);
    }
}

/// What a final (non-1xx) response head says.
struct Head {
    status: u16,
    content_type: Option<String>,
    framing: Framing,
    /// The server will close the connection after this response.
    close: bool,
}

impl Head {
    /// The head `httparse` parsed, or `None` for an informational (1xx) one, which is skipped.
    /// Content-Length values may repeat if they agree; Transfer-Encoding must be `chunked`
    /// alone; list elements are trimmed of SP and HTAB only.
    fn of(response: &httparse::Response<'_, '_>) -> Result<Option<Head>> {
        let status = response.code.ok_or(Error::MalformedHead)?;
        match status {
            101 => return Err(Error::UnexpectedUpgrade),
            100..=199 => return Ok(None),
            _ => {}
        }
        let mut content_type = None;
        let mut content_length: Option<u64> = None;
        let mut transfer_codings: Vec<String> = Vec::new();
        let mut has_transfer_encoding = false;
        let mut close = response.version != Some(1);
        for header in response.headers.iter() {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-type") {
                if content_type.is_none() {
                    content_type = std::str::from_utf8(header.value)
                        .ok()
                        .map(|v| v.trim().to_string());
                }
            } else if name.eq_ignore_ascii_case("content-length") {
                let mut values = list(header.value)?.peekable();
                if values.peek().is_none() {
                    return Err(Error::BadContentLength);
                }
                for value in values {
                    let value = parse_decimal(value)?;
                    if content_length.is_some_and(|seen| seen != value) {
                        return Err(Error::BadContentLength);
                    }
                    content_length = Some(value);
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                has_transfer_encoding = true;
                for coding in list(header.value)? {
                    transfer_codings.push(coding.to_ascii_lowercase());
                }
            } else if name.eq_ignore_ascii_case("connection") {
                for option in list(header.value)? {
                    if option.eq_ignore_ascii_case("close") {
                        close = true;
                    }
                }
            }
        }

        let framing = if status == 204 || status == 304 {
            Framing::None
        } else if has_transfer_encoding {
            // Transfer-Encoding overrides Content-Length (RFC 9112, section 6.3).
            if transfer_codings != ["chunked"] {
                return Err(Error::UnsupportedTransferEncoding(
                    transfer_codings.join(", "),
                ));
            }
            Framing::Chunked
        } else {
            match content_length {
                Some(0) => Framing::None,
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        };
        Ok(Some(Head {
            status,
            content_type,
            framing,
            close,
        }))
    }
}

/// Whether `bytes` hold an empty line: a LF followed by LF or CRLF.
fn has_empty_line(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n')))
}

/// A chunked body of any size; its trailers (unused) bounded like a head.
fn new_chunks() -> chunked::Decoder {
    chunked::Decoder::new(u64::MAX, MAX_HEAD)
}

/// The client's errors for a chunked body.
fn chunk_error(e: chunked::DecodeError) -> Error {
    use chunked::DecodeError as E;
    match e {
        // A body past u64::MAX bytes: its last size could not be right.
        E::SizeLine(_) | E::BodyTooLarge => Error::BadChunkSize,
        E::SizeLineTooLong => Error::ChunkLineTooLong,
        E::DataEnd => Error::BadChunkEnd,
        E::TrailerLine(_) => Error::BadTrailer,
        E::TrailersTooLarge => Error::TrailersTooLarge,
    }
}

fn push_body(events: &mut Vec<Event>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    match events.last_mut() {
        Some(Event::Body(body)) => body.extend_from_slice(bytes),
        _ => events.push(Event::Body(bytes.to_vec())),
    }
}

/// The non-empty elements of a comma-separated header value, trimmed of SP and HTAB only:
/// a Unicode space (`str::trim` would drop NBSP) stays, and makes the element invalid.
fn list(value: &[u8]) -> Result<impl Iterator<Item = &str>> {
    let value = std::str::from_utf8(value).map_err(|_| Error::MalformedHead)?;
    Ok(value
        .split(',')
        .map(|s| s.trim_matches([' ', '\t']))
        .filter(|s| !s.is_empty()))
}

fn parse_decimal(s: &str) -> Result<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::BadContentLength);
    }
    s.parse().map_err(|_| Error::BadContentLength)
}

/// Splits Docker's `/events` body (a stream of JSON objects, one per line, '\n'-separated,
/// arbitrary chunk boundaries) into complete lines; a line longer than `max_line` is an error.
///
/// Lines come without their `\n`; empty lines are skipped. After an error, every call fails.
#[derive(Debug)]
pub struct LineSplitter {
    max_line: usize,
    buf: Vec<u8>,
    /// The current line passed `max_line`: its first `max_line` bytes are in `buf`, the rest
    /// is dropped until its newline.
    cutting: bool,
}

/// One line of a newline-delimited stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Whole(Vec<u8>),
    /// A line longer than the limit: its first `max_line` bytes. A container decides how
    /// long its labels are, and so how long its events are: one such line must cost its
    /// event, not the whole stream (and with it every application's state).
    Cut(Vec<u8>),
}

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        LineSplitter {
            max_line,
            buf: Vec::new(),
            cutting: false,
        }
    }

    pub fn push(&mut self, mut data: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        while !data.is_empty() {
            let (part, complete) = chunked::take_line(data);
            data = &data[part.len()..];
            let part = if complete {
                &part[..part.len() - 1]
            } else {
                part
            };
            let room = self.max_line - self.buf.len();
            if part.len() > room {
                self.cutting = true;
            }
            self.buf.extend_from_slice(&part[..part.len().min(room)]);
            if complete {
                let line = std::mem::take(&mut self.buf);
                if std::mem::take(&mut self.cutting) {
                    lines.push(Line::Cut(line));
                } else if !line.is_empty() {
                    lines.push(Line::Whole(line));
                }
            }
        }
        lines
    }

    /// Bytes of an unfinished line: at the end of the stream, a line that was cut off.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /version` captured from Docker 20.10.
    const VERSION: &[u8] = b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\nDocker-Experimental: false\r\nOstype: linux\r\nServer: Docker/20.10.24+dfsg1 (linux)\r\nDate: Fri, 27 Nov 2026 13:57:15 GMT\r\nContent-Length: 792\r\n\r\n{\"Platform\":{\"Name\":\"\"},\"Components\":[{\"Name\":\"Engine\",\"Version\":\"20.10.24+dfsg1\",\"Details\":{\"ApiVersion\":\"1.41\",\"Arch\":\"amd64\",\"BuildTime\":\"2026-05-07T21:09:36.000000000+00:00\",\"Experimental\":\"false\",\"GitCommit\":\"5d6db84\",\"GoVersion\":\"go1.19.8\",\"KernelVersion\":\"6.18.44-fc-v857\",\"MinAPIVersion\":\"1.12\",\"Os\":\"linux\"}},{\"Name\":\"containerd\",\"Version\":\"1.6.20~ds1\",\"Details\":{\"GitCommit\":\"1.6.20~ds1-1+deb12u3\"}},{\"Name\":\"runc\",\"Version\":\"1.1.5+ds1\",\"Details\":{\"GitCommit\":\"1.1.5+ds1-1+deb12u1\"}},{\"Name\":\"docker-init\",\"Version\":\"0.19.0\",\"Details\":{\"GitCommit\":\"\"}}],\"Version\":\"20.10.24+dfsg1\",\"ApiVersion\":\"1.41\",\"MinAPIVersion\":\"1.12\",\"GitCommit\":\"5d6db84\",\"GoVersion\":\"go1.19.8\",\"Os\":\"linux\",\"Arch\":\"amd64\",\"KernelVersion\":\"6.18.44-fc-v857\",\"BuildTime\":\"2026-05-07T21:09:36.000000000+00:00\"}\n";

    /// `GET /events?since=..&until=..` captured from Docker 20.10: chunked, one event a chunk.
    const EVENTS: &[u8] = b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\nDocker-Experimental: false\r\nOstype: linux\r\nServer: Docker/20.10.24+dfsg1 (linux)\r\nDate: Fri, 27 Nov 2026 13:57:23 GMT\r\nTransfer-Encoding: chunked\r\n\r\n192\r\n{\"status\":\"create\",\"id\":\"1f151d169cdba587ae6fb21aae6ab97551458fd0b40bd797ddb8685acabf2bdf\",\"from\":\"supd-test-busybox:latest\",\"Type\":\"container\",\"Action\":\"create\",\"Actor\":{\"ID\":\"1f151d169cdba587ae6fb21aae6ab97551458fd0b40bd797ddb8685acabf2bdf\",\"Attributes\":{\"image\":\"supd-test-busybox:latest\",\"name\":\"parsers-fx\",\"supd.test\":\"parsers\"}},\"scope\":\"local\",\"time\":1795787843,\"timeNano\":1795787843271867600}\n\r\n194\r\n{\"status\":\"destroy\",\"id\":\"1f151d169cdba587ae6fb21aae6ab97551458fd0b40bd797ddb8685acabf2bdf\",\"from\":\"supd-test-busybox:latest\",\"Type\":\"container\",\"Action\":\"destroy\",\"Actor\":{\"ID\":\"1f151d169cdba587ae6fb21aae6ab97551458fd0b40bd797ddb8685acabf2bdf\",\"Attributes\":{\"image\":\"supd-test-busybox:latest\",\"name\":\"parsers-fx\",\"supd.test\":\"parsers\"}},\"scope\":\"local\",\"time\":1795787843,\"timeNano\":1795787843313230369}\n\r\n0\r\n\r\n";

    /// `GET /containers/nonexist/json` captured from Docker 20.10, with `Connection: close`.
    const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\nDocker-Experimental: false\r\nOstype: linux\r\nServer: Docker/20.10.24+dfsg1 (linux)\r\nDate: Fri, 27 Nov 2026 13:57:20 GMT\r\nContent-Length: 42\r\nConnection: close\r\n\r\n{\"message\":\"No such container: nonexist\"}\n";

    /// What a whole response parses to, with the body joined.
    #[derive(Debug, PartialEq)]
    struct Parsed {
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
        ended: bool,
    }

    fn collect(events: Vec<Event>) -> Parsed {
        let mut parsed = Parsed {
            status: 0,
            content_type: None,
            body: Vec::new(),
            ended: false,
        };
        let mut heads = 0;
        for event in events {
            assert!(!parsed.ended, "event after End");
            match event {
                Event::Head {
                    status,
                    content_type,
                } => {
                    heads += 1;
                    parsed.status = status;
                    parsed.content_type = content_type;
                }
                Event::Body(b) => {
                    assert_eq!(heads, 1, "body before head");
                    assert!(!b.is_empty(), "empty Body event");
                    parsed.body.extend_from_slice(&b);
                }
                Event::End => {
                    assert_eq!(heads, 1);
                    parsed.ended = true;
                }
            }
        }
        assert!(heads <= 1);
        parsed
    }

    /// Feeds `pieces` in order, then signals EOF if `eof`.
    fn run(pieces: &[&[u8]], eof: bool) -> Result<Parsed> {
        let mut p = ResponseParser::new();
        let mut events = Vec::new();
        for piece in pieces {
            events.extend(p.feed(piece)?);
        }
        if eof {
            events.extend(p.eof()?);
        }
        let parsed = collect(events);
        assert_eq!(p.is_done(), parsed.ended);
        Ok(parsed)
    }

    fn whole(response: &[u8]) -> Parsed {
        run(&[response], false).unwrap()
    }

    /// Every way of cutting `response` in two and in three, byte by byte, and in random
    /// pieces, must give what feeding it whole gives.
    fn check_splits(response: &[u8], eof: bool) -> Parsed {
        let want = run(&[response], eof).unwrap();
        let bytes: Vec<&[u8]> = response.chunks(1).collect();
        assert_eq!(run(&bytes, eof).unwrap(), want, "byte by byte");
        for i in 0..=response.len() {
            let (a, b) = response.split_at(i);
            assert_eq!(run(&[a, b], eof).unwrap(), want, "split at {i}");
        }
        let step = (response.len() / 40).max(1);
        for i in (0..response.len()).step_by(step) {
            for j in (i..response.len()).step_by(step) {
                let pieces = [&response[..i], &response[i..j], &response[j..]];
                assert_eq!(run(&pieces, eof).unwrap(), want, "split at {i} and {j}");
            }
        }
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for _ in 0..200 {
            let mut pieces = Vec::new();
            let mut rest = response;
            while !rest.is_empty() {
                let n = (rng.next() % 64) as usize + 1;
                let n = n.min(rest.len());
                pieces.push(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(run(&pieces, eof).unwrap(), want, "random pieces");
        }
        want
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn body_of(response: &[u8]) -> &[u8] {
        let at = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        &response[at + 4..]
    }

    fn err(pieces: &[&[u8]], eof: bool) -> Error {
        match run(pieces, eof) {
            Ok(p) => panic!("parsed: {p:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn request_without_body() {
        assert_eq!(
            request("GET", "/v1.41/containers/json?all=1", None, false),
            b"GET /v1.41/containers/json?all=1 HTTP/1.1\r\nHost: docker\r\n\r\n"
        );
        assert_eq!(
            request("POST", "/containers/abc/restart?t=10", None, true),
            b"POST /containers/abc/restart?t=10 HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn request_with_body() {
        assert_eq!(
            request("POST", "/exec", Some(b"{\"a\":1}"), false),
            b"POST /exec HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        );
        assert_eq!(
            request("POST", "/x", Some(b""), true),
            b"POST /x HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn request_target_cannot_break_framing() {
        assert_eq!(
            request("GET", "/a b\r\nX-Evil: 1\r\n\r\né", None, false),
            b"GET /a%20b%0D%0AX-Evil:%201%0D%0A%0D%0A%C3%A9 HTTP/1.1\r\nHost: docker\r\n\r\n"
        );
        assert_eq!(
            request("GET", r#"/events?filters={"label":["a=b"]}#x"#, None, false),
            b"GET /events?filters=%7B%22label%22:[%22a=b%22]%7D%23x HTTP/1.1\r\nHost: docker\r\n\r\n"
        );
        // Escapes already present are left alone.
        assert_eq!(
            request("GET", "/a%2Fb?x=%7B", None, false),
            b"GET /a%2Fb?x=%7B HTTP/1.1\r\nHost: docker\r\n\r\n"
        );
    }

    #[test]
    fn request_parses_as_http() {
        let raw = request("POST", "/c/x/start", Some(b"{}"), true);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut req = httparse::Request::new(&mut headers);
        let n = match req.parse(&raw).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial"),
        };
        assert_eq!(req.method, Some("POST"));
        assert_eq!(req.path, Some("/c/x/start"));
        assert_eq!(&raw[n..], b"{}");
    }

    #[test]
    fn content_length_response() {
        let want = check_splits(VERSION, false);
        assert_eq!(want.status, 200);
        assert_eq!(want.content_type.as_deref(), Some("application/json"));
        assert_eq!(want.body, body_of(VERSION));
        assert_eq!(want.body.len(), 792);
        assert!(want.ended);
        let v: serde_json::Value = serde_json::from_slice(&want.body).unwrap();
        assert_eq!(v["ApiVersion"], "1.41");
    }

    #[test]
    fn chunked_response() {
        let want = check_splits(EVENTS, false);
        assert_eq!(want.status, 200);
        let mut lines = LineSplitter::new(4096);
        let lines = lines.push(&want.body);
        assert_eq!(lines.len(), 2);
        for (line, action) in lines.iter().zip(["create", "destroy"]) {
            let Line::Whole(line) = line else {
                panic!("cut: {line:?}")
            };
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            assert_eq!(v["Action"], action);
        }
    }

    #[test]
    fn error_response() {
        let want = check_splits(NOT_FOUND, false);
        assert_eq!(want.status, 404);
        assert_eq!(
            want.body,
            b"{\"message\":\"No such container: nonexist\"}\n"
        );
    }

    #[test]
    fn events_per_feed() {
        let mut p = ResponseParser::new();
        let at = VERSION.len() - 792;
        let events = p.feed(&VERSION[..at + 10]).unwrap();
        assert_eq!(
            events,
            [
                Event::Head {
                    status: 200,
                    content_type: Some("application/json".into())
                },
                Event::Body(VERSION[at..at + 10].to_vec()),
            ]
        );
        assert!(!p.is_done());
        assert_eq!(
            p.feed(&VERSION[at + 10..at + 20]).unwrap(),
            [Event::Body(VERSION[at + 10..at + 20].to_vec())]
        );
        assert_eq!(
            p.feed(&VERSION[at + 20..]).unwrap(),
            [Event::Body(VERSION[at + 20..].to_vec()), Event::End]
        );
        assert!(p.is_done());
        assert!(p.reusable());
        assert_eq!(p.eof().unwrap(), []);
    }

    #[test]
    fn head_alone_gives_no_event() {
        let mut p = ResponseParser::new();
        let at = VERSION.len() - 792;
        assert_eq!(p.feed(&VERSION[..at - 1]).unwrap(), []);
        assert_eq!(p.feed(&VERSION[at - 1..at]).unwrap().len(), 1);
    }

    #[test]
    fn chunk_extensions_and_trailers() {
        let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;name=value\r\nhello\r\n\
            6;a;b=\"q;x\"\r\n world\r\n\
            000A\r\n0123456789\r\n\
            0;last\r\nX-Trailer: 1\r\nOther: two\r\n\r\n";
        let want = check_splits(response, false);
        assert_eq!(want.body, b"hello world0123456789");
        assert!(want.ended);
        assert_eq!(want.content_type, None);
    }

    #[test]
    fn zero_chunk_only() {
        let want = check_splits(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            false,
        );
        assert_eq!(want.body, b"");
        assert!(want.ended);
    }

    #[test]
    fn transfer_encoding_overrides_content_length() {
        let want = whole(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
        assert_eq!(want.body, b"ok");
        assert!(want.ended);
    }

    #[test]
    fn invalid_chunk_sizes() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice();
        for bad in [
            b"\r\n".as_slice(),
            b"x\r\n",
            b"-1\r\n",
            b"+1\r\n",
            b"0x10\r\n",
            b"1 2\r\n",
            b"1=2\r\n",
            b"5\n",
            b"5\r\r\n",
            b"5;a\x00b\r\n",
            b"10000000000000000\r\n",
            b"ffffffffffffffff0\r\n",
            // "Funky chunks": whatever a lenient parser reads one way and another the other.
            b"1\r1\r\n",
            b"1 ;a\r\n",
            b"1; a\r\n",
            b"1;a =b\r\n",
            b"1;a\rb\r\n",
            b" 1\r\n",
            b"1\t\r\n",
        ] {
            let e = err(&[head, bad], false);
            assert!(matches!(e, Error::BadChunkSize), "{bad:?}: {e}");
        }
        // The largest size is accepted; its data just never comes.
        let mut p = ResponseParser::new();
        p.feed(head).unwrap();
        assert_eq!(
            p.feed(b"ffffffffffffffff\r\nabc").unwrap(),
            [Event::Body(b"abc".to_vec())]
        );
        assert!(matches!(p.eof(), Err(Error::Incomplete)));
    }

    #[test]
    fn chunk_line_length_is_bounded() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice();
        let ok = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE - 4));
        assert_eq!(whole(&[head, ok.as_bytes()].concat()).body, b"x");
        let long = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE - 3));
        assert!(matches!(
            err(&[head, long.as_bytes()], false),
            Error::ChunkLineTooLong
        ));
        // Without a line end, the limit is hit all the same, in any number of pieces.
        let endless = vec![b'0'; MAX_CHUNK_LINE + 1];
        let pieces: Vec<&[u8]> = endless.chunks(7).collect();
        let mut all = vec![head];
        all.extend(pieces);
        assert!(matches!(err(&all, false), Error::ChunkLineTooLong));
    }

    #[test]
    fn chunk_data_must_end_with_crlf() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice();
        for bad in [b"2\r\nabc\r\n".as_slice(), b"2\r\nab\n", b"2\r\nab\rx"] {
            assert!(
                matches!(err(&[head, bad], false), Error::BadChunkEnd),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn trailers_are_bounded_and_need_crlf() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".as_slice();
        let trailer = format!("X: {}\r\n", "t".repeat(100));
        let many = trailer.repeat(MAX_HEAD / trailer.len() + 1);
        assert!(matches!(
            err(&[head, many.as_bytes()], false),
            Error::TrailersTooLarge
        ));
        assert!(matches!(
            err(&[head, b"X: 1\n\r\n"], false),
            Error::BadTrailer
        ));
        assert!(matches!(err(&[head, b"\n"], false), Error::BadTrailer));
        assert!(matches!(err(&[head, b"X: 1\r\n"], true), Error::Incomplete));
        // Trailers are header fields: a name, a colon, a value without CR, LF or NUL.
        for bad in [
            &b"X 1\r\n\r\n"[..],
            b": 1\r\n\r\n",
            b"X : 1\r\n\r\n",
            b"X: a\rb\r\n\r\n",
            b"X: a\x00b\r\n\r\n",
            b"\r\r\n",
        ] {
            assert!(
                matches!(err(&[head, bad], false), Error::BadTrailer),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn close_delimited_body() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome\r\nbytes";
        let want = check_splits(response, true);
        assert_eq!(want.body, b"some\r\nbytes");
        assert!(want.ended);
        assert_eq!(want.content_type.as_deref(), Some("text/plain"));

        let mut p = ResponseParser::new();
        p.feed(response).unwrap();
        assert!(!p.is_done());
        assert_eq!(p.eof().unwrap(), [Event::End]);
        assert!(p.is_done());
        assert!(!p.reusable());

        // An empty close-delimited body.
        let want = whole(b"HTTP/1.0 200 OK\r\n\r\n");
        assert!(!want.ended);
        assert_eq!(run(&[b"HTTP/1.0 200 OK\r\n\r\n"], true).unwrap().body, b"");
    }

    #[test]
    fn statuses_without_body() {
        for status in ["204 No Content", "304 Not Modified"] {
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            let want = check_splits(response.as_bytes(), false);
            assert!(want.ended);
            assert!(want.body.is_empty());
        }
        let want = whole(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(want.ended);
    }

    #[test]
    fn informational_heads_are_skipped() {
        let response = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX: y\r\n\r\nHTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        let want = check_splits(response, false);
        assert_eq!(want.status, 201);
        assert_eq!(want.body, b"{}");
        assert!(matches!(
            err(
                &[b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tcp\r\n\r\n"],
                false
            ),
            Error::UnexpectedUpgrade
        ));
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let want = whole(b"\r\n\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
        assert_eq!(want.body, b"x");
    }

    #[test]
    fn content_length_variants() {
        let ok = |head: &str| whole(format!("HTTP/1.1 200 OK\r\n{head}\r\n\r\nabc").as_bytes());
        assert_eq!(ok("Content-Length: 3").body, b"abc");
        assert_eq!(ok("content-length:3 ").body, b"abc");
        assert_eq!(ok("Content-Length: 3, 3").body, b"abc");
        assert_eq!(ok("Content-Length: 3\r\nContent-Length: 3").body, b"abc");
        assert!(matches!(
            err(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabc"], false),
            Error::TrailingData
        ));
        for bad in [
            "Content-Length: -3",
            "Content-Length: +3",
            "Content-Length: 3a",
            "Content-Length: 0x3",
            "Content-Length: 3, 4",
            "Content-Length: 3\r\nContent-Length: 4",
            "Content-Length: 18446744073709551616",
            "Content-Length: 99999999999999999999999",
            "Content-Length: ",
            "Content-Length: ,",
            "Content-Length: 3\u{a0}",
            "Content-Length: \u{85}3",
        ] {
            let raw = format!("HTTP/1.1 200 OK\r\n{bad}\r\n\r\n");
            assert!(
                matches!(err(&[raw.as_bytes()], false), Error::BadContentLength),
                "{bad}"
            );
        }
        // The largest value is fine: the body just keeps coming.
        let mut p = ResponseParser::new();
        let events = p
            .feed(b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nab")
            .unwrap();
        assert_eq!(events.last(), Some(&Event::Body(b"ab".to_vec())));
    }

    #[test]
    fn unsupported_transfer_codings() {
        for te in [
            "gzip",
            "chunked, gzip",
            "gzip, chunked",
            "chunked, chunked",
            "",
            " , ",
            "chunked\u{a0}",
        ] {
            let raw = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert!(
                matches!(
                    err(&[raw.as_bytes()], false),
                    Error::UnsupportedTransferEncoding(_)
                ),
                "{te}"
            );
        }
    }

    #[test]
    fn invalid_heads() {
        for bad in [
            b"HTTP/2 200 OK\r\n\r\n".as_slice(),
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n: x\r\n\r\n",
            b"\x00\x01garbage\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(err(&[bad], false), Error::Head(_) | Error::MalformedHead),
                "{bad:?}"
            );
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(matches!(err(&[raw.as_bytes()], false), Error::Head(_)));
    }

    #[test]
    fn oversized_head() {
        let filler = format!("X-Filler: {}\r\n", "f".repeat(1000));
        let raw = format!(
            "HTTP/1.1 200 OK\r\n{}",
            filler.repeat(MAX_HEAD / filler.len() + 1)
        );
        assert!(matches!(err(&[raw.as_bytes()], false), Error::HeadTooLarge));
        // A single line without end hits the limit too, fed in any pieces.
        let endless = vec![b'a'; MAX_HEAD + 1];
        let pieces: Vec<&[u8]> = endless.chunks(1000).collect();
        assert!(matches!(err(&pieces, false), Error::HeadTooLarge));
        // Exactly at the limit is fine.
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: ";
        let pad = MAX_HEAD - head.len() - 4;
        let raw = format!("{head}{}\r\n\r\n", "p".repeat(pad));
        assert_eq!(raw.len(), MAX_HEAD);
        assert!(whole(raw.as_bytes()).ended);
    }

    #[test]
    fn eof_mid_response() {
        for cut in [0, 1, 20, VERSION.len() - 792, VERSION.len() - 1] {
            assert!(
                matches!(err(&[&VERSION[..cut]], true), Error::Incomplete),
                "cut {cut}"
            );
        }
        for cut in [EVENTS.len() - 3, EVENTS.len() - 5, EVENTS.len() - 200] {
            assert!(
                matches!(err(&[&EVENTS[..cut]], true), Error::Incomplete),
                "cut {cut}"
            );
        }
        assert!(run(&[NOT_FOUND], true).unwrap().ended);
    }

    #[test]
    fn after_an_error_every_call_fails() {
        let mut p = ResponseParser::new();
        assert!(matches!(
            p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(Error::BadContentLength)
        ));
        assert!(matches!(p.feed(VERSION), Err(Error::Failed)));
        assert!(matches!(p.eof(), Err(Error::Failed)));
        assert!(!p.is_done());

        let mut p = ResponseParser::new();
        assert!(p.feed(b"HTTP/1.1 200").is_ok());
        assert!(matches!(p.eof(), Err(Error::Incomplete)));
        assert!(matches!(p.eof(), Err(Error::Failed)));
    }

    #[test]
    fn data_after_the_end_is_an_error() {
        assert!(matches!(err(&[VERSION, b"x"], false), Error::TrailingData));
        assert!(matches!(
            err(&[&[VERSION, b"HTTP/1.1"].concat()], false),
            Error::TrailingData
        ));
        assert!(matches!(
            err(&[EVENTS, b"\r\n"], false),
            Error::TrailingData
        ));
    }

    #[test]
    fn reusable_connections() {
        let mut p = ResponseParser::new();
        p.feed(VERSION).unwrap();
        assert!(p.reusable());
        let mut p = ResponseParser::new();
        p.feed(NOT_FOUND).unwrap();
        assert!(p.is_done());
        assert!(!p.reusable());
        let mut p = ResponseParser::new();
        p.feed(b"HTTP/1.0 204 No Content\r\n\r\n").unwrap();
        assert!(!p.reusable());
        let mut p = ResponseParser::new();
        p.feed(b"HTTP/1.1 204 No Content\r\nConnection: keep-alive, Close\r\n\r\n")
            .unwrap();
        assert!(!p.reusable());
        let mut p = ResponseParser::new();
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\na")
            .unwrap();
        assert!(!p.reusable());
    }

    #[test]
    fn content_type_first_and_trimmed() {
        let want = whole(b"HTTP/1.1 200 OK\r\nContent-Type:  text/plain; charset=utf-8 \r\nContent-Type: x/y\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            want.content_type.as_deref(),
            Some("text/plain; charset=utf-8")
        );
        let want = whole(b"HTTP/1.1 200 OK\r\nContent-Type: \xff\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(want.content_type, None);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        let tokens: [&[u8]; 14] = [
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 100 Continue\r\n",
            b"Content-Length: 3\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"\r\n",
            b"\n",
            b"3\r\n",
            b"abc",
            b"0\r\n",
            b";x=y",
            b"ffffffffffffffffff",
            b"\r",
            b"\x00",
            b"HTTP/1.1 204 No Content\r\n",
        ];
        for _ in 0..20_000 {
            let len = (rng.next() % 12) as usize;
            let mut input = Vec::new();
            for _ in 0..len {
                input.extend_from_slice(tokens[(rng.next() % tokens.len() as u64) as usize]);
            }
            let mut p = ResponseParser::new();
            for piece in input.chunks((rng.next() % 8) as usize + 1) {
                if p.feed(piece).is_err() {
                    break;
                }
            }
            let _ = p.eof();
            let _ = LineSplitter::new(8).push(&input);
        }
    }

    fn whole_lines(lines: &[&[u8]]) -> Vec<Line> {
        lines.iter().map(|l| Line::Whole(l.to_vec())).collect()
    }

    #[test]
    fn lines_across_pushes() {
        let mut s = LineSplitter::new(100);
        assert_eq!(s.push(b""), []);
        assert_eq!(s.push(b"{\"a\""), []);
        assert_eq!(s.pending(), 4);
        assert_eq!(
            s.push(b":1}\n{\"b\":2}\n{"),
            whole_lines(&[b"{\"a\":1}", b"{\"b\":2}"])
        );
        assert_eq!(s.pending(), 1);
        assert_eq!(s.push(b"}"), []);
        assert_eq!(s.push(b"\n"), whole_lines(&[b"{}"]));
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn empty_lines_are_skipped() {
        let mut s = LineSplitter::new(10);
        assert_eq!(s.push(b"\n\na\n\n\nb\n"), whole_lines(&[b"a", b"b"]));
    }

    #[test]
    fn lines_in_every_split() {
        let stream = b"{\"x\":1}\n{\"yy\":22}\n\n{\"zzz\":333}\n";
        let want = whole_lines(&[b"{\"x\":1}", b"{\"yy\":22}", b"{\"zzz\":333}"]);
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let mut s = LineSplitter::new(11);
                let mut got = s.push(&stream[..i]);
                got.extend(s.push(&stream[i..j]));
                got.extend(s.push(&stream[j..]));
                assert_eq!(got, want, "split at {i}, {j}");
                assert_eq!(s.pending(), 0);
            }
        }
    }

    #[test]
    fn long_lines_are_cut_and_the_stream_goes_on() {
        let mut s = LineSplitter::new(4);
        assert_eq!(s.push(b"abcd\n"), whole_lines(&[b"abcd"]));
        assert_eq!(s.push(b"ab"), []);
        assert_eq!(s.push(b"cde"), []);
        // Memory stays bounded however long the line goes on without a newline.
        assert_eq!(s.push(&[b'x'; 10_000]), []);
        assert_eq!(s.pending(), 4);
        assert_eq!(
            s.push(b"fg\nok\n"),
            vec![Line::Cut(b"abcd".to_vec()), Line::Whole(b"ok".to_vec())]
        );
        let mut s = LineSplitter::new(4);
        assert_eq!(
            s.push(b"ok\nabcde\nzz\n"),
            vec![
                Line::Whole(b"ok".to_vec()),
                Line::Cut(b"abcd".to_vec()),
                Line::Whole(b"zz".to_vec())
            ]
        );
    }
}
