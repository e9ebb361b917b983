//! One HTTP/1.1 client connection as an explicit state machine.
//!
//! Bytes come in until a request is complete; the request is handed to the server, which
//! answers at once or later (an exec, a restart). A request with a body is handed over twice:
//! its head first, so that the server can refuse it before a byte of the body is read, then
//! whole. Pipelined requests wait in the input buffer
//! and are answered strictly in order. After a websocket upgrade the stream leaves this type.

use std::io;
use std::net::IpAddr;
use std::time::Instant;

use mio::{Interest, Token};

use crate::config::Limits;
use crate::http::request::{self, Parser, Request};
use crate::http::response::Response;
use crate::reactor::log::RequestLog;
use crate::reactor::net::{ByteStream, Stream};

/// Stop reading and handling while this much output is queued: a client that pipelines
/// without reading its answers is paused instead of growing our buffer (or taking the loop's
/// time for answers nobody reads). One answer larger than this still goes out whole.
const MAX_PENDING_OUTPUT: usize = 64 * 1024;
/// Input may exceed the head limit by this much (the start of a body or of a pipelined
/// request).
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading (or between) requests.
    Open,
    /// A request is being handled by an operation that will answer later.
    Waiting(Token),
    /// The last response is queued; close once it is written.
    Closing,
}

/// What a connection keeps of the request an operation will answer: its log line, written
/// with the answer's status (or 101), and whether the connection stays open after it.
pub(crate) struct Awaiting {
    pub(crate) log: RequestLog,
    pub(crate) keep_alive: bool,
}

pub(crate) struct HttpConn<S: ByteStream = Stream> {
    pub(crate) stream: S,
    pub(crate) peer: String,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    written: usize,
    parser: Parser,
    pub(crate) phase: Phase,
    /// In `Phase::Waiting`: the request being answered by the operation.
    pub(crate) awaiting: Option<Awaiting>,
    /// When the current request's first byte arrived (head timeout), if one is in progress.
    pub(crate) request_started: Option<Instant>,
    /// Last time a request completed or the connection opened (idle timeout).
    pub(crate) idle_since: Instant,
    /// The peer shut down its sending side.
    pub(crate) read_eof: bool,
    /// The socket may hold more input than we took (we stopped early for backpressure).
    maybe_more_input: bool,
    pub(crate) interest: Option<Interest>,
    limits_head: usize,
    /// The peer's address, for the per-peer cap on unauthenticated connections (None for a
    /// unix-socket peer).
    pub(crate) peer_ip: Option<IpAddr>,
    /// When the connection was accepted: the pre-auth limit counts from here, and nothing an
    /// unauthenticated client does (an OPTIONS, a 404) moves it.
    pub(crate) opened: Instant,
    /// A request on this connection has passed auth.
    pub(crate) authenticated: bool,
    /// A request was refused because its token holds its cap: answer it and close.
    pub(crate) refused: bool,
    /// Last time queued output was written (or first queued): the write-stall limit.
    pub(crate) write_progress: Instant,
    /// Waiting in the server's ready queue (its per-wake budget ran out with requests left).
    pub(crate) queued: bool,
}

pub(crate) enum Next {
    /// Nothing complete yet.
    Nothing,
    Request(Request),
    /// The head of a request with a body: the server decides whether the body is read
    /// (`continue_body`) or the request refused before it is.
    Head(Request),
    /// The input is not a valid request: answer with this error and close.
    Invalid(request::Error),
}

impl<S: ByteStream> HttpConn<S> {
    pub(crate) fn new(
        stream: S,
        peer: String,
        peer_ip: Option<IpAddr>,
        limits: &Limits,
    ) -> HttpConn<S> {
        let now = Instant::now();
        HttpConn {
            stream,
            peer,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            written: 0,
            parser: Parser::new(limits.head_bytes, limits.body_bytes),
            phase: Phase::Open,
            awaiting: None,
            request_started: None,
            idle_since: now,
            read_eof: false,
            maybe_more_input: true,
            interest: None,
            limits_head: limits.head_bytes,
            peer_ip,
            opened: now,
            authenticated: false,
            refused: false,
            write_progress: now,
            queued: false,
        }
    }

    /// Read no further ahead than one head: a body is consumed by the parser as it arrives
    /// (once the request is admitted), so buffering more of it would only hold memory for
    /// bytes a refused request never needed.
    fn input_cap(&self) -> usize {
        self.limits_head + READ_CHUNK
    }

    fn wants_input(&self) -> bool {
        self.phase != Phase::Closing
            && !self.read_eof
            && self.pending_output() < MAX_PENDING_OUTPUT
            && self.inbuf.len() < self.input_cap()
    }

    /// Read until the socket is drained or our buffer is full. Err means the connection broke.
    ///
    /// Reads go through the loop's one `scratch` buffer and only the bytes that arrived are
    /// kept: a connection holds memory for what it was sent, not for what it might be (with
    /// 10,000 idle connections, a 16 KiB buffer each would be 160 MiB).
    pub(crate) fn fill(&mut self, scratch: &mut [u8]) -> io::Result<()> {
        if !self.wants_input() {
            return Ok(());
        }
        loop {
            let room = self.input_cap() - self.inbuf.len();
            if room == 0 {
                self.maybe_more_input = true;
                return Ok(());
            }
            let take = room.min(scratch.len());
            match self.stream.read(&mut scratch[..take]) {
                Ok(0) => {
                    self.read_eof = true;
                    self.maybe_more_input = false;
                    return Ok(());
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(&scratch[..n]);
                    if self.request_started.is_none() {
                        self.request_started = Some(Instant::now());
                    }
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        self.maybe_more_input = false;
                        return Ok(());
                    }
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(e),
                },
            }
        }
    }

    /// Whether `fill` should be called again without waiting for an event (edge-triggered
    /// readiness: we stopped before the socket said WouldBlock).
    pub(crate) fn should_refill(&self) -> bool {
        self.maybe_more_input && self.wants_input()
    }

    /// The next complete request from the buffer, if we are ready for one.
    pub(crate) fn next_request(&mut self) -> Next {
        if self.phase != Phase::Open || self.pending_output() >= MAX_PENDING_OUTPUT {
            return Next::Nothing;
        }
        loop {
            match self.parser.parse(&self.inbuf) {
                Err(e) => {
                    self.inbuf.clear();
                    return Next::Invalid(e);
                }
                Ok(p) => {
                    self.inbuf.drain(..p.consumed);
                    if self.inbuf.is_empty() && self.inbuf.capacity() > READ_CHUNK {
                        // A large read is consumed: don't keep its buffer.
                        self.inbuf = Vec::new();
                    }
                    if let Some(head) = p.head {
                        return Next::Head(head);
                    }
                    if let Some(req) = p.request {
                        return Next::Request(req);
                    }
                    if p.consumed == 0 || self.inbuf.is_empty() {
                        if self.inbuf.is_empty() && !self.parser.in_body() {
                            self.request_started = None;
                        }
                        return Next::Nothing;
                    }
                }
            }
        }
    }

    /// Read the body of the request `head` (from `Next::Head`), at most `limit` bytes; a
    /// client that waits for `100 Continue` gets it now, not before the request was admitted.
    pub(crate) fn continue_body(
        &mut self,
        head: Request,
        limit: usize,
    ) -> Result<(), request::Error> {
        let wants_continue = head.expect_continue;
        self.parser.continue_body(head, limit)?;
        if wants_continue {
            if self.pending_output() == 0 {
                self.write_progress = Instant::now();
            }
            self.outbuf
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        Ok(())
    }

    /// The current request is refused before its body: drop what was read of it and read no
    /// more (the caller answers with `close`, as the body's framing is lost).
    pub(crate) fn discard_input(&mut self) {
        self.inbuf = Vec::new();
    }

    /// Bytes of a request (or a partial one) are buffered.
    pub(crate) fn has_partial_request(&self) -> bool {
        !self.inbuf.is_empty() || self.parser.in_body()
    }

    /// Queue a response; `close` ends the connection after it.
    pub(crate) fn respond(&mut self, resp: &Response, head_only: bool, close: bool) {
        if self.pending_output() == 0 {
            // The write-stall clock starts when there is something to write.
            self.write_progress = Instant::now();
        }
        resp.write_to(&mut self.outbuf, head_only, close);
        self.idle_since = Instant::now();
        self.request_started = if self.inbuf.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        self.phase = if close { Phase::Closing } else { Phase::Open };
    }

    /// So much output is queued that no further request is read or handled.
    pub(crate) fn output_blocked(&self) -> bool {
        self.pending_output() >= MAX_PENDING_OUTPUT
    }

    pub(crate) fn pending_output(&self) -> usize {
        self.outbuf.len() - self.written
    }

    /// Output is queued here or held by the stream (TLS records rustls has not written).
    pub(crate) fn unsent(&self) -> bool {
        self.pending_output() > 0 || self.stream.holds_output()
    }

    /// Write queued output, then what the stream holds. Ok(true) when all of it is written.
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        while self.written < self.outbuf.len() {
            match self.stream.write(&self.outbuf[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.write_progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.outbuf.clear();
        self.written = 0;
        if self.outbuf.capacity() > 64 * 1024 {
            // A large answer went out; don't keep its buffer for an idle keep-alive socket.
            self.outbuf = Vec::new();
        }
        match self.stream.flush() {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the connection has nothing more to do and should be closed.
    pub(crate) fn finished(&self) -> bool {
        !self.unsent()
            && (self.phase == Phase::Closing
                || (self.read_eof && self.phase == Phase::Open && self.inbuf.is_empty()))
    }

    /// Readiness we need now.
    pub(crate) fn wanted_interest(&self) -> Interest {
        let read = self.wants_input();
        let write = self.unsent();
        match (read, write) {
            (_, true) if !read => Interest::WRITABLE,
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            // Even a paused connection keeps READABLE so that a hang-up is noticed.
            _ => Interest::READABLE,
        }
    }

    /// Take the stream and any bytes that followed the upgrade request (websocket frames the
    /// client sent without waiting for the 101).
    pub(crate) fn into_upgraded(self) -> (S, Vec<u8>, Vec<u8>) {
        let pending = self.outbuf[self.written..].to_vec();
        (self.stream, self.inbuf, pending)
    }

    /// A connection handed back after an operation relayed its answer (a forwarded request):
    /// what the client sent meanwhile is its next input; its token already passed auth.
    pub(crate) fn resume(&mut self, input: Vec<u8>) {
        self.inbuf = input;
        self.maybe_more_input = true;
        self.authenticated = true;
    }

    /// Release buffer memory of an idle connection.
    pub(crate) fn shrink(&mut self) {
        if self.inbuf.is_empty() {
            self.inbuf = Vec::new();
        }
    }
}

/// The connection state machine over a socket pair: no daemon, no Docker, no root.
#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use mio::net::UnixStream;

    use super::*;
    use crate::reactor::SCRATCH;

    const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";

    fn pair() -> (HttpConn<UnixStream>, UnixStream) {
        let (ours, peer) = UnixStream::pair().unwrap();
        let conn = HttpConn::new(ours, "test".into(), None, &Limits::default());
        (conn, peer)
    }

    fn get(path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
    }

    fn request<S: ByteStream>(conn: &mut HttpConn<S>, scratch: &mut [u8]) -> Option<Request> {
        conn.fill(scratch).unwrap();
        match conn.next_request() {
            Next::Request(r) => Some(r),
            Next::Nothing => None,
            Next::Head(_) => panic!("unexpected head"),
            Next::Invalid(e) => panic!("invalid: {e:?}"),
        }
    }

    /// Everything the peer can read now (non-blocking).
    fn drain(peer: &mut UnixStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return out,
                Err(e) => panic!("peer read: {e}"),
            }
        }
    }

    /// The statuses and bodies of the complete responses in `bytes`.
    fn responses(mut bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            let n = match resp.parse(bytes).unwrap() {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => panic!("partial response"),
            };
            let len: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map_or(0, |h| {
                    std::str::from_utf8(h.value).unwrap().parse().unwrap()
                });
            out.push((resp.code.unwrap(), bytes[n..n + len].to_vec()));
            bytes = &bytes[n + len..];
        }
        out
    }

    fn answer(status: u16, body: &str) -> Response {
        Response::bytes(status, "text/plain", body.as_bytes().to_vec())
    }

    #[test]
    fn a_request_split_at_every_byte_boundary() {
        let mut scratch = vec![0; SCRATCH];
        let req = b"POST /x?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 1..req.len() {
            let (mut conn, mut peer) = pair();
            peer.write_all(&req[..cut]).unwrap();
            conn.fill(&mut scratch).unwrap();
            let head = match conn.next_request() {
                Next::Nothing => {
                    peer.write_all(&req[cut..]).unwrap();
                    conn.fill(&mut scratch).unwrap();
                    match conn.next_request() {
                        Next::Head(h) => h,
                        _ => panic!("cut {cut}: no head after the rest"),
                    }
                }
                Next::Head(h) => {
                    // The head was whole: the body's first bytes (if any) wait for admission.
                    peer.write_all(&req[cut..]).unwrap();
                    conn.fill(&mut scratch).unwrap();
                    h
                }
                _ => panic!("cut {cut}: unexpected"),
            };
            assert_eq!(head.path, "/x", "cut {cut}");
            conn.continue_body(head, 1024).unwrap();
            match conn.next_request() {
                Next::Request(r) => assert_eq!(r.body, b"hello", "cut {cut}"),
                _ => panic!("cut {cut}: no request"),
            }
            assert!(!conn.has_partial_request(), "cut {cut}");
        }
    }

    #[test]
    fn bytes_trickling_in_one_at_a_time() {
        let mut scratch = vec![0; SCRATCH];
        let (mut conn, mut peer) = pair();
        for (i, b) in GET.iter().enumerate() {
            peer.write_all(&[*b]).unwrap();
            let got = request(&mut conn, &mut scratch);
            assert_eq!(got.is_some(), i == GET.len() - 1, "after byte {i}");
            if i < GET.len() - 1 {
                assert!(conn.has_partial_request());
                assert!(conn.request_started.is_some());
            }
        }
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let mut scratch = vec![0; SCRATCH];
        let (mut conn, mut peer) = pair();
        let all = [get("/1"), get("/2"), get("/3")].concat();
        peer.write_all(&all).unwrap();
        let first = request(&mut conn, &mut scratch).unwrap();
        assert_eq!(first.path, "/1");
        // An operation answers the first later: the others wait, unread, in order.
        conn.phase = Phase::Waiting(Token(9));
        assert!(matches!(conn.next_request(), Next::Nothing));
        conn.respond(&answer(200, "one"), false, false);
        for (path, body) in [("/2", "two"), ("/3", "three")] {
            let r = request(&mut conn, &mut scratch).unwrap();
            assert_eq!(r.path, path);
            conn.respond(&answer(200, body), false, false);
        }
        assert!(conn.flush().unwrap());
        let got = responses(&drain(&mut peer));
        let bodies: Vec<&[u8]> = got.iter().map(|(_, b)| b.as_slice()).collect();
        assert_eq!(bodies, [&b"one"[..], b"two", b"three"]);
        assert!(!conn.finished());
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut scratch = vec![0; SCRATCH];
        let (mut conn, mut peer) = pair();
        peer.write_all(GET).unwrap();
        request(&mut conn, &mut scratch).unwrap();
        // Far more than a unix socket buffers: the first flush stops at WouldBlock.
        let body: String = (0..600_000)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        conn.respond(&answer(200, &body), false, false);
        assert!(!conn.flush().unwrap());
        // Reading resumes only once the unread output is under the cap.
        let want = if conn.output_blocked() {
            Interest::WRITABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        assert_eq!(conn.wanted_interest(), want);
        let mut got = Vec::new();
        let mut rounds = 0;
        loop {
            got.extend(drain(&mut peer));
            if conn.flush().unwrap() {
                got.extend(drain(&mut peer));
                break;
            }
            rounds += 1;
            assert!(rounds < 10_000);
        }
        assert!(rounds > 0, "one write took it all");
        assert_eq!(conn.pending_output(), 0);
        let r = responses(&got);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].1, body.as_bytes());
    }

    #[test]
    fn half_close_still_gets_the_queued_answer() {
        let mut scratch = vec![0; SCRATCH];
        let (mut conn, mut peer) = pair();
        peer.write_all(GET).unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        let req = request(&mut conn, &mut scratch).unwrap();
        assert!(conn.read_eof);
        assert!(req.keep_alive);
        // The answer is queued but not written: not finished yet.
        conn.respond(&answer(200, "late"), false, false);
        assert!(!conn.finished());
        assert!(conn.flush().unwrap());
        // Written, input at its end: nothing more to do.
        assert!(conn.finished());
        let r = responses(&drain(&mut peer));
        assert_eq!(r, [(200, b"late".to_vec())]);
    }

    #[test]
    fn eof_while_an_operation_works_is_seen() {
        let mut scratch = vec![0; SCRATCH];
        let (mut conn, mut peer) = pair();
        peer.write_all(GET).unwrap();
        request(&mut conn, &mut scratch).unwrap();
        conn.phase = Phase::Waiting(Token(3));
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        conn.fill(&mut scratch).unwrap();
        // The server cancels the operation on this (`drive_conn`).
        assert!(conn.read_eof);
        assert!(!conn.finished());
    }

    #[test]
    fn a_peer_that_does_not_read_stops_our_reading() {
        let mut scratch = vec![0; SCRATCH];
        let (mut conn, mut peer) = pair();
        peer.write_all(&[get("/1"), get("/2")].concat()).unwrap();
        request(&mut conn, &mut scratch).unwrap();
        let big = "x".repeat(MAX_PENDING_OUTPUT + 300_000);
        conn.respond(&answer(200, &big), false, false);
        assert!(!conn.flush().unwrap());
        assert!(conn.output_blocked());
        // The second request is buffered but not handed out, and no more input is read.
        assert!(matches!(conn.next_request(), Next::Nothing));
        assert_eq!(conn.wanted_interest(), Interest::WRITABLE);
        peer.write_all(&get("/3")).unwrap();
        let before = conn.inbuf.len();
        conn.fill(&mut scratch).unwrap();
        assert_eq!(conn.inbuf.len(), before, "read while blocked");
        assert!(!conn.should_refill());
        // The peer reads: output drains below the mark, the pipelined requests come in order.
        let mut got = Vec::new();
        while !conn.flush().unwrap() {
            got.extend(drain(&mut peer));
        }
        got.extend(drain(&mut peer));
        assert!(!conn.output_blocked());
        assert_eq!(request(&mut conn, &mut scratch).unwrap().path, "/2");
        conn.respond(&answer(200, "2"), false, false);
        assert_eq!(request(&mut conn, &mut scratch).unwrap().path, "/3");
        conn.respond(&answer(200, "3"), false, true);
        assert!(conn.flush().unwrap());
        got.extend(drain(&mut peer));
        let r = responses(&got);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].1.len(), big.len());
        assert_eq!(
            (r[1].1.as_slice(), r[2].1.as_slice()),
            (&b"2"[..], &b"3"[..])
        );
        assert!(conn.finished());
    }

    #[test]
    fn the_head_is_handed_over_before_the_body_is_read() {
        let mut scratch = vec![0; SCRATCH];
        let (mut conn, mut peer) = pair();
        peer.write_all(
            b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        )
        .unwrap();
        conn.fill(&mut scratch).unwrap();
        let head = match conn.next_request() {
            Next::Head(h) => h,
            _ => panic!("no head"),
        };
        assert!(head.body.is_empty());
        // Nothing (not even the 100) goes out before the server admits the body.
        assert_eq!(conn.pending_output(), 0);
        conn.continue_body(head, 16).unwrap();
        assert!(conn.flush().unwrap());
        assert_eq!(drain(&mut peer), b"HTTP/1.1 100 Continue\r\n\r\n");
        assert!(matches!(conn.next_request(), Next::Nothing));
        peer.write_all(b"body").unwrap();
        let req = request(&mut conn, &mut scratch).unwrap();
        assert_eq!(req.body, b"body");
    }

    #[test]
    fn a_refused_head_reads_no_body() {
        let mut scratch = vec![0; SCRATCH];
        let (mut conn, mut peer) = pair();
        peer.write_all(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            .unwrap();
        conn.fill(&mut scratch).unwrap();
        let head = match conn.next_request() {
            Next::Head(h) => h,
            _ => panic!("no head"),
        };
        // Too long for the endpoint: refused before a byte of the body is taken.
        assert!(conn.continue_body(head, 10).is_err());
        conn.discard_input();
        conn.respond(&answer(413, ""), false, true);
        assert!(!conn.has_partial_request());
        assert!(conn.flush().unwrap());
        assert!(conn.finished());
        assert_eq!(responses(&drain(&mut peer))[0].0, 413);
    }

    /// Over TLS, the last records of an answer may still be inside rustls when the
    /// connection has written all its plaintext: it is neither finished nor idle until the
    /// socket has taken them, and `flush` pushes them out.
    #[test]
    fn a_tls_answer_is_finished_only_once_rustls_has_written_it() {
        use crate::tls::TlsStream;
        let pki = crate::tls::test_pki::Pki::new();
        let (server, mut client) = pki.streams();
        let mut scratch = vec![0; SCRATCH];
        let mut conn = HttpConn::new(server, "test".into(), None, &Limits::default());
        let read_all = |client: &mut TlsStream<UnixStream>, got: &mut Vec<u8>| loop {
            let mut buf = [0u8; 16 * 1024];
            match client.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("{e}"),
            }
        };
        // The request goes in before the handshake; both sides are driven until it arrives.
        client.write_all(GET).unwrap();
        let mut got = Vec::new();
        let mut rounds = 0;
        let req = loop {
            let _ = client.flush();
            if let Some(r) = request(&mut conn, &mut scratch) {
                break r;
            }
            let _ = conn.flush().unwrap();
            read_all(&mut client, &mut got);
            rounds += 1;
            assert!(rounds < 100, "no request");
        };
        assert_eq!(req.path, "/a");
        let body = "t".repeat(700_000);
        conn.respond(&answer(200, &body), false, true);
        // The client does not read: the socket fills, and rustls keeps records.
        assert!(!conn.flush().unwrap());
        // It reads a little at a time: the socket stays full.
        while conn.pending_output() > 0 {
            let mut buf = [0u8; 8 * 1024];
            match client.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            let _ = conn.flush().unwrap();
            rounds += 1;
            assert!(rounds < 100_000);
        }
        // All plaintext is in rustls or out, and the last records wait in rustls.
        assert!(conn.stream.holds_output());
        assert!(!conn.finished(), "finished with records inside rustls");
        assert!(conn.unsent());
        assert!(conn.wanted_interest().is_writable());
        while !conn.flush().unwrap() {
            read_all(&mut client, &mut got);
        }
        assert!(conn.finished());
        read_all(&mut client, &mut got);
        let r = responses(&got);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].1.len(), body.len());
    }

    #[test]
    fn upgrade_hands_over_the_stream_leftover_and_queued_output() {
        let mut scratch = vec![0; SCRATCH];
        let (mut conn, mut peer) = pair();
        peer.write_all(&[GET, b"\x82\x80"].concat()).unwrap();
        request(&mut conn, &mut scratch).unwrap();
        conn.outbuf.extend_from_slice(b"earlier");
        let (_stream, leftover, pending) = conn.into_upgraded();
        assert_eq!(leftover, b"\x82\x80");
        assert_eq!(pending, b"earlier");
    }
}
