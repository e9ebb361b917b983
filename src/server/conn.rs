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

/// Stop reading while this much output is queued: a client that pipelines without reading
/// its answers is paused instead of growing our buffer.
const MAX_PENDING_OUTPUT: usize = 1024 * 1024;
/// Input may exceed the head limit by this much (the start of a body or of a pipelined
/// request).
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading (or between) requests.
    Open,
    /// A request is being handled by an operation that will answer later.
    Waiting(Token),
    /// The last response is queued; close once it is written.
    Closing,
}

/// What a connection keeps of the request an operation will answer: its log line, written
/// with the answer's status (or 101), and whether the connection stays open after it.
pub struct Awaiting {
    pub log: RequestLog,
    pub keep_alive: bool,
}

pub struct HttpConn<S: ByteStream = Stream> {
    pub stream: S,
    pub peer: String,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    written: usize,
    parser: Parser,
    pub phase: Phase,
    /// In `Phase::Waiting`: the request being answered by the operation.
    pub awaiting: Option<Awaiting>,
    /// When the current request's first byte arrived (head timeout), if one is in progress.
    pub request_started: Option<Instant>,
    /// Last time a request completed or the connection opened (idle timeout).
    pub idle_since: Instant,
    /// The peer shut down its sending side.
    pub read_eof: bool,
    /// The socket may hold more input than we took (we stopped early for backpressure).
    maybe_more_input: bool,
    pub interest: Option<Interest>,
    limits_head: usize,
    /// The peer's address, for the per-peer cap on unauthenticated connections (None for a
    /// unix-socket peer).
    pub peer_ip: Option<IpAddr>,
    /// When the connection was accepted: the pre-auth limit counts from here, and nothing an
    /// unauthenticated client does (an OPTIONS, a 404) moves it.
    pub opened: Instant,
    /// A request on this connection has passed auth.
    pub authenticated: bool,
}

pub enum Next {
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
    pub fn new(stream: S, peer: String, peer_ip: Option<IpAddr>, limits: &Limits) -> HttpConn<S> {
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
    pub fn fill(&mut self, scratch: &mut [u8]) -> io::Result<()> {
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
    pub fn should_refill(&self) -> bool {
        self.maybe_more_input && self.wants_input()
    }

    /// The next complete request from the buffer, if we are ready for one.
    pub fn next_request(&mut self) -> Next {
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
    pub fn continue_body(&mut self, head: Request, limit: usize) -> Result<(), request::Error> {
        let wants_continue = head.expect_continue;
        self.parser.continue_body(head, limit)?;
        if wants_continue {
            self.outbuf
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        Ok(())
    }

    /// The current request is refused before its body: drop what was read of it and read no
    /// more (the caller answers with `close`, as the body's framing is lost).
    pub fn discard_input(&mut self) {
        self.inbuf = Vec::new();
    }

    /// Bytes of a request (or a partial one) are buffered.
    pub fn has_partial_request(&self) -> bool {
        !self.inbuf.is_empty() || self.parser.in_body()
    }

    /// Queue a response; `close` ends the connection after it.
    pub fn respond(&mut self, resp: &Response, head_only: bool, close: bool) {
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
    pub fn output_blocked(&self) -> bool {
        self.pending_output() >= MAX_PENDING_OUTPUT
    }

    pub fn pending_output(&self) -> usize {
        self.outbuf.len() - self.written
    }

    /// Write queued output. Ok(true) when all of it is written.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.written < self.outbuf.len() {
            match self.stream.write(&self.outbuf[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
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
        Ok(true)
    }

    /// Whether the connection has nothing more to do and should be closed.
    pub fn finished(&self) -> bool {
        self.pending_output() == 0
            && (self.phase == Phase::Closing
                || (self.read_eof && self.phase == Phase::Open && self.inbuf.is_empty()))
    }

    /// Readiness we need now.
    pub fn wanted_interest(&self) -> Interest {
        let read = self.wants_input();
        let write = self.pending_output() > 0;
        match (read, write) {
            (_, true) if !read => Interest::WRITABLE,
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            // Even a paused connection keeps READABLE so that a hang-up is noticed.
            _ => Interest::READABLE,
        }
    }

    /// Take the stream and any bytes that followed the upgrade request (websocket frames the
    /// client sent without waiting for the 101).
    pub fn into_upgraded(self) -> (S, Vec<u8>, Vec<u8>) {
        let pending = self.outbuf[self.written..].to_vec();
        (self.stream, self.inbuf, pending)
    }

    /// Release buffer memory of an idle connection.
    pub fn shrink(&mut self) {
        if self.inbuf.is_empty() {
            self.inbuf = Vec::new();
        }
    }
}
