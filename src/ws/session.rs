//! A websocket session over a non-blocking stream, driven by readiness events.
//!
//! tungstenite's `write` reports `Io(WouldBlock)` *after* it has queued the frame, and it
//! does not say how many bytes it holds. Both make it unfit to decide backpressure on. So
//! tungstenite writes into an `Outbox` that never blocks: what the socket does not take at
//! once is queued there, in order, and written out by [`Session::flush`]. tungstenite's own
//! buffer is therefore always empty between calls, every queued byte is counted in one
//! place, and a message is either queued whole (`Ok(true)`) or not at all (`Ok(false)`).
//!
//! Rules for the event loop (edge-triggered readiness):
//! - After `new`, call `read` at once: the leftover bytes of the HTTP head raise no event.
//! - On readable, call `read` until `Ok(None)` or an error.
//! - After any call, if `wants_write()`, call `flush`; wait for writable only after it
//!   returned `Ok(false)` (it says so only after the socket itself returned `WouldBlock`).
//! - When `send_binary` returns `Ok(false)`, stop reading the source (PTY, socket); when a
//!   later `flush` makes `can_send()` true again, read the source again without waiting for
//!   an event, as its edge may already have been consumed.
//! - After `close`, keep a timer: a peer that never answers the close is dropped by the loop.
//! - Drop the session once `is_closed()`, or after any `Err` other than `TooLarge`/`Closed`
//!   and after flushing whatever a `Protocol` error queued.

use std::fmt;
use std::io::{self, Read, Write};
use std::time::Instant;

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocket, WebSocketConfig};
use tungstenite::{Bytes, Message, Utf8Bytes};

/// Largest header of a frame the server sends (unmasked, 64-bit length).
const MAX_FRAME_HEADER: usize = 10;
/// Room above the soft limit for control frames that the peer causes (a pong, the close
/// reply) while it does not read; pongs beyond the soft limit are coalesced into one.
const CONTROL_SLACK: usize = 8 * 1024;
/// tungstenite reads whole frames into its buffer; below this it would read byte by byte.
const MIN_READ_BUFFER: usize = 1024;
/// The outbox keeps at most this much capacity once drained, so an idle session is small.
const OUTBOX_KEEP: usize = 16 * 1024;
/// RFC 6455 section 5.5: a control frame payload is at most 125 bytes, 2 are the code.
pub const MAX_CLOSE_REASON: usize = 123;

/// "No status received": reported when the peer's close frame carries no code.
const NO_STATUS: u16 = 1005;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted from the peer, and largest one `send_binary` takes.
    pub max_message: usize,
    /// Largest frame payload accepted from the peer; tungstenite allocates this much for it.
    pub max_frame: usize,
    /// Soft limit: bytes queued for the peer beyond which `send_binary` refuses new data.
    pub write_buffer: usize,
    /// Bytes read from the socket at a time.
    pub read_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 68 << 10,
            max_frame: 68 << 10,
            write_buffer: 64 * 1024,
            read_buffer: 4 * 1024,
        }
    }
}

impl Limits {
    /// The most the outbox may hold: the soft limit plus one message plus control frames.
    fn hard_write_limit(&self) -> usize {
        self.write_buffer
            .saturating_add(self.max_message)
            .saturating_add(MAX_FRAME_HEADER)
            .saturating_add(CONTROL_SLACK)
    }
}

/// tungstenite's configuration with every limit set; its defaults allocate 128 KiB per
/// socket and let the write buffer grow without bound.
pub fn config(l: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(l.read_buffer.max(MIN_READ_BUFFER))
        // Write each frame through to the outbox at once, so tungstenite holds nothing.
        .write_buffer_size(0)
        .max_write_buffer_size(l.hard_write_limit())
        .max_message_size(Some(l.max_message))
        .max_frame_size(Some(l.max_frame))
        .accept_unmasked_frames(false)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Binary(Bytes),
    Text(Utf8Bytes),
    /// The peer's close frame (1005 when it had no code). If the peer started the close,
    /// our reply is queued; either way the handshake is over once the outbox is flushed.
    Closed {
        code: u16,
        reason: String,
    },
}

#[derive(Debug)]
pub enum Error {
    /// The stream failed (never `WouldBlock`): the session is dead.
    Io(io::Error),
    /// The peer broke the protocol. A close frame with `close_code` and `reason` is queued:
    /// flush it, then drop the session.
    Protocol {
        close_code: u16,
        reason: String,
        source: tungstenite::Error,
    },
    /// The peer closed the connection without a close handshake: the session is dead.
    Reset,
    /// The peer kept causing control frames while not reading: the session is dead.
    WriteQueueFull,
    /// `send_binary` was given more than `Limits::max_message`; nothing was queued.
    TooLarge { len: usize, max: usize },
    /// Sending after the close handshake started, or any call on a dead session.
    Closed,
    /// Anything else tungstenite reports; the session is dead.
    WebSocket(tungstenite::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "websocket I/O: {e}"),
            Error::Protocol {
                close_code, reason, ..
            } => {
                write!(f, "websocket protocol violation ({close_code}): {reason}")
            }
            Error::Reset => f.write_str("websocket peer went away without closing"),
            Error::WriteQueueFull => f.write_str("websocket peer does not read"),
            Error::TooLarge { len, max } => {
                write!(f, "websocket message of {len} bytes exceeds {max}")
            }
            Error::Closed => f.write_str("websocket is closed"),
            Error::WebSocket(e) => write!(f, "websocket: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Protocol { source, .. } | Error::WebSocket(source) => Some(source),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Our close frame is queued; the peer's data is discarded until its close arrives.
    CloseSent,
    /// The websocket is done; what remains is to flush the outbox.
    Finished,
    /// The connection is unusable.
    Dead,
}

/// The stream as tungstenite sees it: a write never blocks. Bytes the socket does not take
/// at once are queued (`queue[sent..]`) and written by `drain`, in order, before anything
/// newer reaches the socket.
#[derive(Debug)]
struct Outbox<S> {
    stream: S,
    queue: Vec<u8>,
    sent: usize,
    limit: usize,
    /// Above this many queued bytes the peer is not reading: pongs are coalesced.
    soft: usize,
    /// The latest pong held back while the peer does not read (RFC 6455 section 5.5.3 lets
    /// a pong answer only the most recent ping), so a ping flood cannot fill the queue.
    owed_pong: Option<Vec<u8>>,
    overflowed: bool,
    /// The stream itself still held written bytes at the last `drain` (a TLS stream's
    /// records): the session is not done until it has written them.
    stream_holds: bool,
    /// Follows the frames the peer sends, to know since when a message is unfinished.
    scan: FrameScan,
}

/// Follows frame boundaries in the bytes read from the peer (headers only, payloads are
/// skipped) to tell when a fragmented message began: tungstenite holds an unfinished
/// message without saying so, and a peer that never finishes one (pongs keep the session
/// alive meanwhile) must not keep that memory for ever.
#[derive(Debug, Default)]
struct FrameScan {
    head: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: u64,
    /// When the first fragment of the unfinished message was read.
    partial_since: Option<Instant>,
}

impl FrameScan {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = bytes
                    .len()
                    .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            self.head[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have < 2 {
                continue;
            }
            let len7 = self.head[1] & 0x7f;
            let masked = self.head[1] & 0x80 != 0;
            let ext = match len7 {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let need = 2 + ext + if masked { 4 } else { 0 };
            if self.have < need {
                continue;
            }
            let len = match ext {
                0 => u64::from(len7),
                n => self.head[2..2 + n]
                    .iter()
                    .fold(0u64, |a, &b| (a << 8) | u64::from(b)),
            };
            let fin = self.head[0] & 0x80 != 0;
            match (self.head[0] & 0x0f, fin) {
                // A data frame starts a message; one without FIN leaves it unfinished.
                (1 | 2, false) => self.partial_since = Some(Instant::now()),
                (1 | 2, true) | (0, true) => self.partial_since = None,
                _ => {}
            }
            self.skip = len;
            self.have = 0;
        }
    }
}

/// Whether `buf` is exactly one pong frame as tungstenite writes it for a server: final,
/// unmasked, a payload of at most 125 bytes. tungstenite writes each reply frame alone.
fn is_pong(buf: &[u8]) -> bool {
    buf.len() >= 2 && buf[0] == 0x8a && buf[1] < 126 && buf.len() == 2 + usize::from(buf[1])
}

impl<S: Write> Outbox<S> {
    fn pending(&self) -> usize {
        self.queue.len() - self.sent
    }

    /// Queue the held-back pong, before anything newer.
    fn settle_pong(&mut self) {
        if let Some(pong) = self.owed_pong.take() {
            if self.sent > 0 {
                self.queue.drain(..self.sent);
                self.sent = 0;
            }
            self.queue.extend_from_slice(&pong);
        }
    }

    /// Writes the queue to the stream: `Ok(true)` when it is empty, `Ok(false)` when the
    /// stream returned `WouldBlock`.
    fn drain(&mut self) -> io::Result<bool> {
        loop {
            while self.sent < self.queue.len() {
                match self.stream.write(&self.queue[self.sent..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => self.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            if self.owed_pong.is_none() {
                break;
            }
            self.settle_pong();
        }
        self.queue.clear();
        self.sent = 0;
        self.queue.shrink_to(OUTBOX_KEEP);
        match self.stream.flush() {
            Ok(()) => {
                self.stream_holds = false;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.stream_holds = true;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

impl<S: Write> Outbox<S> {
    /// Send `head` then `payload`: written at once when nothing is queued (what the socket
    /// does not take is queued), queued behind older output otherwise.
    fn write_frame(&mut self, head: &[u8], payload: &[u8]) -> io::Result<()> {
        let total = head.len() + payload.len();
        let mut done = 0;
        if self.pending() == 0 {
            while done < total {
                let r = if done < head.len() {
                    let bufs = [io::IoSlice::new(&head[done..]), io::IoSlice::new(payload)];
                    self.stream.write_vectored(&bufs)
                } else {
                    self.stream.write(&payload[done - head.len()..])
                };
                match r {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if done == total {
                return Ok(());
            }
        }
        if self.pending() + (total - done) > self.limit {
            self.overflowed = true;
            return Err(io::Error::other("websocket outbox over its hard limit"));
        }
        if self.sent > 0 {
            self.queue.drain(..self.sent);
            self.sent = 0;
        }
        if done < head.len() {
            self.queue.extend_from_slice(&head[done..]);
            self.queue.extend_from_slice(payload);
        } else {
            self.queue.extend_from_slice(&payload[done - head.len()..]);
        }
        Ok(())
    }
}

/// The header of an unmasked, final binary frame of `len` bytes, in `out`: its length.
fn binary_frame_header(len: usize, out: &mut [u8; MAX_FRAME_HEADER]) -> usize {
    out[0] = 0x82;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

impl<S: Write> Write for Outbox<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pending() >= self.soft && is_pong(buf) {
            self.owed_pong = Some(buf.to_vec());
            return Ok(buf.len());
        }
        self.settle_pong();
        if self.pending() == 0 {
            loop {
                match self.stream.write(buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    done => return done,
                }
            }
        }
        if self.pending() + buf.len() > self.limit {
            self.overflowed = true;
            return Err(io::Error::other("websocket outbox over its hard limit"));
        }
        if self.sent > 0 {
            self.queue.drain(..self.sent);
            self.sent = 0;
        }
        self.queue.extend_from_slice(buf);
        Ok(buf.len())
    }

    /// The queue is written by `drain`, when the loop says the socket is writable.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: Read> Read for Outbox<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.scan.feed(&buf[..n]);
        Ok(n)
    }
}

/// What a tungstenite error means for the session.
enum Outcome {
    WouldBlock,
    Retry,
    /// The close handshake is complete.
    Done,
    Fail(Error),
}

pub struct Session<S: Read + Write> {
    ws: WebSocket<Outbox<S>>,
    state: State,
    max_message: usize,
    write_buffer: usize,
    pings_sent: u64,
    last_pong: Option<Instant>,
    last_seen: Instant,
}

impl<S: Read + Write> fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state)
            .field("pending", &self.ws.get_ref().pending())
            .finish_non_exhaustive()
    }
}

impl<S: Read + Write> Session<S> {
    /// Starts a server session on a stream whose 101 response has been sent; `leftover` is
    /// what was read past the request head (the first frames, possibly).
    pub fn new(stream: S, leftover: Vec<u8>, limits: &Limits) -> Self {
        Session::with_preface(stream, Vec::new(), leftover, limits)
    }

    /// Starts a server session whose first output is `preface`, raw: the 101 head and any
    /// earlier pipelined answers not yet written. It heads the outbox, so every frame (a pong
    /// to a ping that came with the upgrade request, say) goes out after it, never before.
    pub fn with_preface(stream: S, preface: Vec<u8>, leftover: Vec<u8>, limits: &Limits) -> Self {
        // The preface is bounded by the connection's own output cap; it must not count
        // against the frames' hard limit, or a large one would make the first close fail.
        let limit = limits.hard_write_limit() + preface.len();
        let mut outbox = Outbox {
            stream,
            queue: preface,
            sent: 0,
            limit,
            soft: limits.write_buffer,
            owed_pong: None,
            overflowed: false,
            stream_holds: false,
            scan: FrameScan::default(),
        };
        // The leftover reaches tungstenite without passing through the outbox's `read`.
        outbox.scan.feed(&leftover);
        Session {
            ws: WebSocket::from_partially_read(
                outbox,
                leftover,
                Role::Server,
                Some(config(limits)),
            ),
            state: State::Open,
            max_message: limits.max_message,
            write_buffer: limits.write_buffer,
            pings_sent: 0,
            last_pong: None,
            last_seen: Instant::now(),
        }
    }

    /// Reads one message if one is complete; `Ok(None)` when the stream would block or
    /// nothing more will be read. Pings are answered (the pong is queued), pongs recorded.
    pub fn read(&mut self) -> Result<Option<Incoming>> {
        loop {
            match self.state {
                State::Open | State::CloseSent => {}
                State::Finished => return Ok(None),
                State::Dead => return Err(Error::Closed),
            }
            let message = match self.ws.read() {
                Ok(m) => m,
                Err(e) => match self.outcome(e) {
                    Outcome::WouldBlock => return Ok(None),
                    Outcome::Retry => continue,
                    Outcome::Done => return Ok(None),
                    Outcome::Fail(e) => return Err(e),
                },
            };
            self.last_seen = Instant::now();
            match message {
                Message::Binary(b) if self.state == State::Open => {
                    return Ok(Some(Incoming::Binary(b)));
                }
                Message::Text(t) if self.state == State::Open => {
                    return Ok(Some(Incoming::Text(t)));
                }
                // The peer had not yet seen our close; nobody is listening any more.
                Message::Binary(_) | Message::Text(_) => {}
                Message::Ping(_) => self.push_replies()?,
                Message::Pong(_) => self.last_pong = Some(self.last_seen),
                Message::Close(frame) => {
                    let (code, reason) = match frame {
                        Some(f) => (u16::from(f.code), f.reason.as_str().to_owned()),
                        None => (NO_STATUS, String::new()),
                    };
                    // Queues our reply (or notes the peer's acknowledgement) and ends the
                    // websocket; only the outbox remains to be flushed.
                    self.push_replies()?;
                    return Ok(Some(Incoming::Closed { code, reason }));
                }
                Message::Frame(_) => {}
            }
        }
    }

    /// Queues a binary message: `Ok(true)` when queued, `Ok(false)` when the outbox is over
    /// the soft limit and nothing was queued (keep the data, stop reading its source).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<bool> {
        if self.state != State::Open {
            return Err(Error::Closed);
        }
        if data.len() > self.max_message {
            return Err(Error::TooLarge {
                len: data.len(),
                max: self.max_message,
            });
        }
        if !self.can_send() {
            return Ok(false);
        }
        // A server's data frame is a header and the payload as is (no mask, no fragments), so
        // it goes out in one vectored write from the caller's buffer instead of being copied
        // into a message and again into tungstenite's frame buffer. tungstenite holds no
        // output of its own (its write buffer size is 0), so nothing it wrote can be overtaken.
        let mut head = [0u8; MAX_FRAME_HEADER];
        let n = binary_frame_header(data.len(), &mut head);
        match self.ws.get_mut().write_frame(&head[..n], data) {
            Ok(()) => Ok(true),
            Err(e) => {
                self.state = State::Dead;
                Err(Error::Io(e))
            }
        }
    }

    pub fn can_send(&self) -> bool {
        self.state == State::Open && self.ws.get_ref().pending() < self.write_buffer
    }

    /// Writes what is queued: `Ok(true)` when all of it is written, `Ok(false)` when the
    /// stream would block (wait for writable).
    pub fn flush(&mut self) -> Result<bool> {
        match self.state {
            State::Open | State::CloseSent => self.push_replies()?,
            State::Finished => {}
            State::Dead => return Err(Error::Closed),
        }
        match self.ws.get_mut().drain() {
            Ok(done) => Ok(done),
            Err(e) => {
                self.state = State::Dead;
                Err(Error::Io(e))
            }
        }
    }

    /// Queues a ping whose payload is a counter, so the peer's pong can be told apart.
    pub fn ping(&mut self) -> Result<()> {
        if self.state != State::Open {
            return Ok(());
        }
        self.pings_sent += 1;
        let payload = Bytes::copy_from_slice(&self.pings_sent.to_be_bytes());
        self.write_control(Message::Ping(payload))
    }

    /// Starts the close handshake: queues a close frame. The reason is cut to 123 bytes on a
    /// char boundary; a code that may not be sent on the wire (1005, 1006, 1015, < 1000)
    /// becomes 1011. Does nothing when the handshake has already started.
    pub fn close(&mut self, code: u16, reason: &str) -> Result<()> {
        if self.state != State::Open {
            return Ok(());
        }
        let code = match CloseCode::from(code) {
            c if c.is_allowed() => c,
            _ => CloseCode::Error,
        };
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(truncate(reason, MAX_CLOSE_REASON)),
        };
        self.state = State::CloseSent;
        self.write_control(Message::Close(Some(frame)))
    }

    /// The session is over: the close handshake is complete and flushed, or the connection
    /// is dead. The loop drops it.
    pub fn is_closed(&self) -> bool {
        match self.state {
            State::Dead => true,
            State::Finished => !self.unsent(),
            State::Open | State::CloseSent => false,
        }
    }

    /// Bytes are queued for the peer.
    pub fn wants_write(&self) -> bool {
        self.state != State::Dead && self.unsent()
    }

    fn unsent(&self) -> bool {
        let outbox = self.ws.get_ref();
        outbox.pending() > 0 || outbox.stream_holds
    }

    /// Bytes queued for the peer.
    pub fn pending(&self) -> usize {
        self.ws.get_ref().pending()
    }

    /// When the last pong arrived.
    pub fn last_pong(&self) -> Option<Instant> {
        self.last_pong
    }

    /// When the last message of any kind (data, ping, pong, close) arrived, or the session
    /// started.
    /// Since when the peer's current message is unfinished (its first fragment was read and
    /// its last one was not), if it is.
    pub fn partial_since(&self) -> Option<Instant> {
        self.ws.get_ref().scan.partial_since
    }

    pub fn last_seen(&self) -> Instant {
        self.last_seen
    }

    pub fn get_ref(&self) -> &S {
        &self.ws.get_ref().stream
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.ws.get_mut().stream
    }

    fn write_control(&mut self, message: Message) -> Result<()> {
        match self.ws.write(message) {
            Ok(()) => Ok(()),
            Err(e) => match self.outcome(e) {
                // Queued already, as in `send_binary`.
                Outcome::WouldBlock | Outcome::Retry | Outcome::Done => Ok(()),
                Outcome::Fail(e) => Err(e),
            },
        }
    }

    /// Moves the frames tungstenite answers with (pong, close reply) into the outbox, and
    /// lets it notice that the close handshake is over.
    fn push_replies(&mut self) -> Result<()> {
        loop {
            match self.ws.flush() {
                Ok(()) => return Ok(()),
                Err(e) => match self.outcome(e) {
                    Outcome::WouldBlock | Outcome::Done => return Ok(()),
                    Outcome::Retry => {}
                    Outcome::Fail(e) => return Err(e),
                },
            }
        }
    }

    /// Classifies a tungstenite error and moves the state on. A peer's protocol violation
    /// queues the matching close frame (RFC 6455 section 7.4.1) and ends the websocket.
    fn outcome(&mut self, e: tungstenite::Error) -> Outcome {
        use tungstenite::Error as W;
        use tungstenite::error::ProtocolError;
        let (close_code, e) = match e {
            W::Io(io) => return self.io_outcome(io),
            W::ConnectionClosed => {
                self.state = State::Finished;
                return Outcome::Done;
            }
            W::WriteBufferFull(_) => return self.die(Error::WriteQueueFull),
            W::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                return self.die(Error::Reset);
            }
            e @ W::Capacity(_) => (CloseCode::Size, e),
            e @ W::Utf8(_) => (CloseCode::Invalid, e),
            e @ W::Protocol(_) => (CloseCode::Protocol, e),
            e @ W::AttackAttempt => (CloseCode::Policy, e),
            e => return self.die(Error::WebSocket(e)),
        };
        let reason = truncate(&e.to_string(), MAX_CLOSE_REASON).to_owned();
        let was_open = self.state == State::Open;
        // Failing the connection: the peer's answer is not awaited.
        self.state = State::Finished;
        if was_open {
            let frame = CloseFrame {
                code: close_code,
                reason: Utf8Bytes::from(reason.as_str()),
            };
            match self.ws.close(Some(frame)) {
                Ok(()) | Err(W::ConnectionClosed) => {}
                Err(other) => {
                    log::debug!("websocket: cannot queue close after protocol error: {other}");
                    self.state = State::Dead;
                }
            }
        }
        Outcome::Fail(Error::Protocol {
            close_code: close_code.into(),
            reason,
            source: e,
        })
    }

    fn io_outcome(&mut self, e: io::Error) -> Outcome {
        match e.kind() {
            io::ErrorKind::WouldBlock => Outcome::WouldBlock,
            io::ErrorKind::Interrupted => Outcome::Retry,
            _ if self.ws.get_ref().overflowed => self.die(Error::WriteQueueFull),
            _ => self.die(Error::Io(e)),
        }
    }

    fn die(&mut self, e: Error) -> Outcome {
        self.state = State::Dead;
        Outcome::Fail(e)
    }
}

/// `s` cut to at most `max` bytes on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream whose reads and writes block where the test says, like a socket.
    #[derive(Debug, Default)]
    struct Script {
        input: Vec<u8>,
        read_pos: usize,
        /// Reads return at most up to here, then `WouldBlock`.
        readable: usize,
        /// At most this many bytes per read call.
        read_chunk: usize,
        eof: bool,
        output: Vec<u8>,
        /// Bytes writes may still take before `WouldBlock`.
        write_budget: usize,
        /// At most this many bytes per write call.
        write_chunk: usize,
        write_error: Option<io::ErrorKind>,
        interrupt_next_read: bool,
        interrupt_next_write: bool,
    }

    impl Script {
        fn new() -> Self {
            Script {
                read_chunk: usize::MAX,
                write_budget: usize::MAX,
                write_chunk: usize::MAX,
                ..Default::default()
            }
        }
        /// Makes `bytes` arrive and be readable.
        fn feed(&mut self, bytes: &[u8]) {
            self.input.extend_from_slice(bytes);
            self.readable = self.input.len();
        }
        fn take_output(&mut self) -> Vec<u8> {
            std::mem::take(&mut self.output)
        }
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if std::mem::take(&mut self.interrupt_next_read) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = (self.readable - self.read_pos)
                .min(self.read_chunk)
                .min(buf.len());
            if n == 0 {
                return if self.eof && self.read_pos == self.input.len() {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            buf[..n].copy_from_slice(&self.input[self.read_pos..self.read_pos + n]);
            self.read_pos += n;
            Ok(n)
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some(kind) = self.write_error {
                return Err(kind.into());
            }
            if std::mem::take(&mut self.interrupt_next_write) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(self.write_budget).min(self.write_chunk);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.write_budget -= n;
            self.output.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const OP_CONT: u8 = 0x0;
    const OP_TEXT: u8 = 0x1;
    const OP_BINARY: u8 = 0x2;
    const OP_CLOSE: u8 = 0x8;
    const OP_PING: u8 = 0x9;
    const OP_PONG: u8 = 0xa;

    fn frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut f = vec![opcode | if fin { 0x80 } else { 0 }];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n <= 0xffff => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(key) => {
                f.extend_from_slice(&key);
                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => f.extend_from_slice(payload),
        }
        f
    }

    /// A frame as a client must send it: masked.
    fn client(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        frame(opcode, fin, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
    }

    fn close_payload(code: u16, reason: &str) -> Vec<u8> {
        [&code.to_be_bytes()[..], reason.as_bytes()].concat()
    }

    /// Parses the server's (unmasked) frames; panics on anything else, which is a failure.
    fn server_frames(mut out: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while !out.is_empty() {
            assert_eq!(out[0] & 0x70, 0, "reserved bits");
            assert_eq!(out[0] & 0x80, 0x80, "server frames are final");
            assert_eq!(out[1] & 0x80, 0, "server frames are unmasked");
            let (len, header) = match out[1] & 0x7f {
                126 => (u16::from_be_bytes([out[2], out[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(out[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            frames.push((out[0] & 0x0f, out[header..header + len].to_vec()));
            out = &out[header + len..];
        }
        frames
    }

    fn limits() -> Limits {
        Limits {
            max_message: 1000,
            max_frame: 600,
            write_buffer: 100,
            read_buffer: 16,
        }
    }

    fn session(script: Script) -> Session<Script> {
        Session::new(script, Vec::new(), &limits())
    }

    fn binary(s: &mut Session<Script>) -> Vec<u8> {
        match s.read() {
            Ok(Some(Incoming::Binary(b))) => b.to_vec(),
            other => panic!("expected a binary message, got {other:?}"),
        }
    }

    #[test]
    fn config_sets_every_limit() {
        let c = config(&limits());
        assert_eq!(c.read_buffer_size, MIN_READ_BUFFER);
        assert_eq!(c.write_buffer_size, 0);
        assert_eq!(
            c.max_write_buffer_size,
            100 + 1000 + MAX_FRAME_HEADER + CONTROL_SLACK
        );
        assert_eq!(c.max_message_size, Some(1000));
        assert_eq!(c.max_frame_size, Some(600));
        assert!(!c.accept_unmasked_frames);
        let d = config(&Limits::default());
        assert_eq!(d.read_buffer_size, 4 * 1024);
        // Would panic in `Session::new` otherwise.
        assert!(d.max_write_buffer_size > d.write_buffer_size);
    }

    #[test]
    fn reads_frames_that_arrive_byte_by_byte() {
        let wire = [
            client(OP_BINARY, true, b"hello"),
            client(OP_BINARY, true, &[7; 300]),
        ]
        .concat();
        let mut s = session(Script::new());
        s.get_mut().input = wire.clone();
        for i in 0..wire.len() {
            // Before each byte the stream blocks: mid-header, mid-mask, mid-payload.
            assert!(matches!(s.read(), Ok(None)), "byte {i}");
            s.get_mut().readable = i + 1;
            // 2 header bytes, 4 mask bytes, 5 payload bytes.
            if i + 1 == 2 + 4 + 5 {
                assert_eq!(binary(&mut s), b"hello");
            }
        }
        assert_eq!(binary(&mut s), vec![7; 300]);
        assert!(matches!(s.read(), Ok(None)));
        assert!(!s.wants_write());
    }

    #[test]
    fn leftover_bytes_are_read_first() {
        let wire = [
            client(OP_BINARY, true, b"one"),
            client(OP_BINARY, true, b"two"),
        ]
        .concat();
        let (head, tail) = wire.split_at(12);
        let mut script = Script::new();
        script.feed(tail);
        let mut s = Session::new(script, head.to_vec(), &limits());
        assert_eq!(binary(&mut s), b"one");
        assert_eq!(binary(&mut s), b"two");
        assert!(matches!(s.read(), Ok(None)));
    }

    #[test]
    fn fragmented_message_across_would_block() {
        let mut s = session(Script::new());
        s.get_mut().feed(&client(OP_BINARY, true, &[1; 200]));
        assert_eq!(binary(&mut s), [1; 200]);
        assert_eq!(s.partial_since(), None);
        s.get_mut().feed(&client(OP_BINARY, false, b"ab"));
        assert!(matches!(s.read(), Ok(None)));
        let since = s.partial_since().expect("a message is unfinished");
        // A ping may come between fragments; it is answered at once.
        s.get_mut().feed(&client(OP_PING, true, b"p"));
        assert!(matches!(s.read(), Ok(None)));
        s.get_mut().feed(&client(OP_CONT, false, b"cd"));
        assert!(matches!(s.read(), Ok(None)));
        assert_eq!(s.partial_since(), Some(since));
        s.get_mut().feed(&client(OP_CONT, true, b"ef"));
        assert_eq!(binary(&mut s), b"abcdef");
        assert_eq!(s.partial_since(), None);
        assert_eq!(
            server_frames(&s.get_mut().take_output()),
            vec![(OP_PONG, b"p".to_vec())]
        );
    }

    #[test]
    fn interrupted_reads_and_writes_are_retried() {
        let mut s = session(Script::new());
        s.get_mut().feed(&client(OP_BINARY, true, b"x"));
        s.get_mut().interrupt_next_read = true;
        assert_eq!(binary(&mut s), b"x");
        s.get_mut().interrupt_next_write = true;
        assert!(s.send_binary(b"y").unwrap());
        assert!(!s.wants_write());
        assert_eq!(
            server_frames(&s.get_mut().take_output()),
            vec![(OP_BINARY, b"y".to_vec())]
        );
    }

    #[test]
    fn partial_writes_are_completed_once() {
        let mut script = Script::new();
        script.write_chunk = 3;
        script.write_budget = 10;
        let mut s = session(script);
        assert!(s.send_binary(b"0123456789abcdef").unwrap());
        assert!(s.wants_write());
        assert_eq!(s.pending(), 18 - 10);
        assert!(!s.flush().unwrap());
        s.get_mut().write_budget = 5;
        assert!(!s.flush().unwrap());
        s.get_mut().write_budget = usize::MAX;
        assert!(s.flush().unwrap());
        assert!(!s.wants_write());
        assert_eq!(
            server_frames(&s.get_mut().take_output()),
            vec![(OP_BINARY, b"0123456789abcdef".to_vec())]
        );
    }

    #[test]
    fn refused_message_is_neither_lost_nor_duplicated() {
        let mut script = Script::new();
        script.write_budget = 0;
        let mut s = session(script);
        let mut sent = Vec::new();
        let mut next = 0u8;
        // Fill past the soft limit (100 bytes) with 40-byte messages.
        loop {
            let msg = vec![next; 40];
            if !s.send_binary(&msg).unwrap() {
                break;
            }
            sent.push(msg);
            next += 1;
        }
        assert_eq!(sent.len(), 3);
        assert!(!s.can_send());
        assert!(s.pending() >= 100);
        // Refused again while nothing drains; the queue does not grow.
        let pending = s.pending();
        assert!(!s.send_binary(&[next; 40]).unwrap());
        assert_eq!(s.pending(), pending);
        // The socket drains a little: still over the limit.
        s.get_mut().write_budget = 10;
        assert!(!s.flush().unwrap());
        assert!(!s.can_send());
        s.get_mut().write_budget = usize::MAX;
        assert!(s.flush().unwrap());
        assert!(s.can_send());
        // The caller kept the refused message and sends it now.
        assert!(s.send_binary(&[next; 40]).unwrap());
        sent.push(vec![next; 40]);
        let got: Vec<Vec<u8>> = server_frames(&s.get_mut().take_output())
            .into_iter()
            .map(|(op, p)| {
                assert_eq!(op, OP_BINARY);
                p
            })
            .collect();
        assert_eq!(got, sent);
    }

    #[test]
    fn new_data_waits_behind_queued_data() {
        let mut script = Script::new();
        script.write_budget = 3;
        let mut s = session(script);
        assert!(s.send_binary(b"first").unwrap());
        // The socket could take more now, but the queue must go first.
        s.get_mut().write_budget = usize::MAX;
        s.ping().unwrap();
        assert!(s.send_binary(b"second").unwrap());
        assert!(s.flush().unwrap());
        assert_eq!(
            server_frames(&s.get_mut().take_output()),
            vec![
                (OP_BINARY, b"first".to_vec()),
                (OP_PING, 1u64.to_be_bytes().to_vec()),
                (OP_BINARY, b"second".to_vec())
            ]
        );
    }

    #[test]
    fn ping_gets_pong_even_when_writes_block() {
        let mut script = Script::new();
        script.write_budget = 0;
        let mut s = session(script);
        s.get_mut().feed(&client(OP_PING, true, b"are you there"));
        assert!(matches!(s.read(), Ok(None)));
        assert!(s.wants_write());
        s.get_mut().write_budget = usize::MAX;
        assert!(s.flush().unwrap());
        assert_eq!(
            server_frames(&s.get_mut().take_output()),
            vec![(OP_PONG, b"are you there".to_vec())]
        );
    }

    #[test]
    fn pong_is_recorded_not_returned() {
        let mut s = session(Script::new());
        assert_eq!(s.last_pong(), None);
        s.ping().unwrap();
        assert_eq!(
            server_frames(&s.get_mut().take_output()),
            vec![(OP_PING, 1u64.to_be_bytes().to_vec())]
        );
        s.get_mut()
            .feed(&client(OP_PONG, true, &1u64.to_be_bytes()));
        assert!(matches!(s.read(), Ok(None)));
        assert!(s.last_pong().is_some());
        s.ping().unwrap();
        assert_eq!(
            server_frames(&s.get_mut().take_output()),
            vec![(OP_PING, 2u64.to_be_bytes().to_vec())]
        );
    }

    #[test]
    fn close_from_peer_is_answered() {
        let mut script = Script::new();
        script.write_budget = 0;
        let mut s = session(script);
        s.get_mut()
            .feed(&client(OP_CLOSE, true, &close_payload(1000, "bye")));
        match s.read() {
            Ok(Some(Incoming::Closed { code: 1000, reason })) => assert_eq!(reason, "bye"),
            other => panic!("{other:?}"),
        }
        // The reply is queued but not written yet: not closed.
        assert!(!s.is_closed());
        assert!(s.wants_write());
        assert!(matches!(s.send_binary(b"late"), Err(Error::Closed)));
        assert!(!s.can_send());
        assert!(matches!(s.read(), Ok(None)));
        s.get_mut().write_budget = usize::MAX;
        assert!(s.flush().unwrap());
        assert!(s.is_closed());
        assert_eq!(
            server_frames(&s.get_mut().take_output()),
            vec![(OP_CLOSE, close_payload(1000, "bye"))]
        );
    }

    #[test]
    fn close_without_code_reports_1005() {
        let mut s = session(Script::new());
        s.get_mut().feed(&client(OP_CLOSE, true, b""));
        assert!(matches!(
            s.read(),
            Ok(Some(Incoming::Closed { code: 1005, .. }))
        ));
        assert!(s.is_closed());
        assert_eq!(
            server_frames(&s.get_mut().take_output()),
            vec![(OP_CLOSE, vec![])]
        );
    }

    #[test]
    fn close_from_us_waits_for_the_answer() {
        let mut s = session(Script::new());
        s.close(1000, r#"{"exit-code":3}"#).unwrap();
        assert_eq!(
            server_frames(&s.get_mut().take_output()),
            vec![(OP_CLOSE, close_payload(1000, r#"{"exit-code":3}"#))]
        );
        assert!(!s.is_closed());
        assert!(!s.can_send());
        // Closing twice does nothing.
        s.close(1011, "again").unwrap();
        assert!(s.get_mut().take_output().is_empty());
        // Data the peer sent before it saw our close is dropped, pings are not answered.
        s.get_mut().feed(&client(OP_BINARY, true, b"stdin"));
        s.get_mut().feed(&client(OP_PING, true, b""));
        assert!(matches!(s.read(), Ok(None)));
        s.get_mut()
            .feed(&client(OP_CLOSE, true, &close_payload(1000, "")));
        assert!(matches!(
            s.read(),
            Ok(Some(Incoming::Closed { code: 1000, .. }))
        ));
        assert!(s.is_closed());
        assert!(s.get_mut().take_output().is_empty());
        assert!(matches!(s.read(), Ok(None)));
    }

    #[test]
    fn close_reason_and_code_are_sanitized() {
        let mut s = session(Script::new());
        let reason = format!("{}ü", "x".repeat(122));
        s.close(1005, &reason).unwrap();
        let frames = server_frames(&s.get_mut().take_output());
        assert_eq!(
            frames,
            vec![(OP_CLOSE, close_payload(1011, &"x".repeat(122)))]
        );
        assert_eq!(truncate("üü", 3), "ü");
        assert_eq!(truncate("abc", 123), "abc");
    }

    fn assert_fails_with(wire: &[u8], code: u16) {
        let mut s = session(Script::new());
        s.get_mut().feed(wire);
        let err = loop {
            match s.read() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("no error for close code {code}"),
                Err(e) => break e,
            }
        };
        match &err {
            Error::Protocol {
                close_code, reason, ..
            } => {
                assert_eq!(*close_code, code, "{err}");
                assert!(s.is_closed());
                let frames = server_frames(&s.get_mut().take_output());
                assert_eq!(frames, vec![(OP_CLOSE, close_payload(code, reason))]);
            }
            other => panic!("expected a protocol error {code}, got {other:?}"),
        }
        assert!(matches!(s.read(), Ok(None)));
        assert!(matches!(s.send_binary(b"x"), Err(Error::Closed)));
    }

    #[test]
    fn oversize_frame_closes_with_1009() {
        assert_fails_with(&client(OP_BINARY, true, &[0; 601]), 1009);
        // Refused from the header alone: the payload never has to arrive.
        assert_fails_with(&client(OP_BINARY, true, &[0; 70000])[..14], 1009);
    }

    #[test]
    fn oversize_message_closes_with_1009() {
        let wire = [
            client(OP_BINARY, false, &[1; 500]),
            client(OP_CONT, false, &[2; 500]),
            client(OP_CONT, true, &[3; 1]),
        ]
        .concat();
        assert_fails_with(&wire, 1009);
    }

    #[test]
    fn unmasked_frame_closes_with_1002() {
        assert_fails_with(&frame(OP_BINARY, true, b"x", None), 1002);
    }

    #[test]
    fn bad_frames_close_with_1002() {
        // Reserved bit, reserved opcode, lone continuation, fragmented ping, 1-byte close.
        assert_fails_with(&[&[0xc2u8, 0x80, 0, 0, 0, 0][..]].concat(), 1002);
        assert_fails_with(&client(0x3, true, b""), 1002);
        assert_fails_with(&client(OP_CONT, true, b"x"), 1002);
        assert_fails_with(&client(OP_PING, false, b""), 1002);
        assert_fails_with(&client(OP_CLOSE, true, b"x"), 1002);
        assert_fails_with(&client(OP_PING, true, &[0; 126]), 1002);
    }

    #[test]
    fn invalid_utf8_closes_with_1007() {
        assert_fails_with(&client(OP_TEXT, true, b"ok \xff"), 1007);
        let split = [client(OP_TEXT, false, b"\xc3"), client(OP_CONT, true, b"(")].concat();
        assert_fails_with(&split, 1007);
        assert_fails_with(&client(OP_CLOSE, true, &[0x03, 0xe8, 0xff]), 1007);
    }

    #[test]
    fn text_is_returned() {
        let mut s = session(Script::new());
        s.get_mut().feed(&client(OP_TEXT, true, "héllo".as_bytes()));
        assert!(matches!(s.read(), Ok(Some(Incoming::Text(t))) if t == "héllo"));
    }

    #[test]
    fn eof_without_close_is_a_reset() {
        let mut s = session(Script::new());
        s.get_mut().feed(&client(OP_BINARY, true, b"x")[..3]);
        s.get_mut().eof = true;
        assert!(matches!(s.read(), Err(Error::Reset)));
        assert!(s.is_closed());
        assert!(matches!(s.read(), Err(Error::Closed)));
        assert!(matches!(s.flush(), Err(Error::Closed)));
    }

    #[test]
    fn write_error_kills_the_session() {
        let mut script = Script::new();
        script.write_budget = 0;
        let mut s = session(script);
        assert!(s.send_binary(b"x").unwrap());
        s.get_mut().write_error = Some(io::ErrorKind::BrokenPipe);
        assert!(matches!(s.flush(), Err(Error::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe));
        assert!(s.is_closed());
        assert!(!s.wants_write());
        // A write straight through to a failing socket fails too.
        let mut s = session(Script::new());
        s.get_mut().write_error = Some(io::ErrorKind::ConnectionReset);
        assert!(matches!(s.send_binary(b"x"), Err(Error::Io(_))));
        assert!(s.is_closed());
    }

    #[test]
    fn ping_flood_while_not_reading_coalesces_pongs() {
        let mut script = Script::new();
        script.write_budget = 0;
        let mut s = session(script);
        let floods = 10 * (CONTROL_SLACK + limits().hard_write_limit()) / 127;
        for i in 0..floods {
            let mut payload = [0u8; 125];
            payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
            s.get_mut().feed(&client(OP_PING, true, &payload));
            assert!(matches!(s.read(), Ok(None)), "ping {i}");
            assert!(s.pending() <= limits().write_buffer + 127);
        }
        assert!(!s.is_closed());
        s.get_mut().write_budget = usize::MAX;
        assert!(s.flush().unwrap());
        let frames = server_frames(&s.get_mut().take_output());
        assert!(frames.iter().all(|(op, _)| *op == OP_PONG));
        let last = &frames.last().unwrap().1;
        assert_eq!(last[..8], ((floods - 1) as u64).to_be_bytes());
        // Data flows again after the flood.
        assert!(s.send_binary(b"after").unwrap());
        assert_eq!(
            server_frames(&s.get_mut().take_output()),
            vec![(OP_BINARY, b"after".to_vec())]
        );
    }

    #[test]
    fn too_large_to_send_is_refused_without_harm() {
        let mut s = session(Script::new());
        assert!(matches!(
            s.send_binary(&[0; 1001]),
            Err(Error::TooLarge {
                len: 1001,
                max: 1000
            })
        ));
        assert!(s.send_binary(&[0; 1000]).unwrap());
        assert_eq!(
            server_frames(&s.get_mut().take_output()),
            vec![(OP_BINARY, vec![0; 1000])]
        );
    }

    #[test]
    fn outbox_shrinks_after_a_burst() {
        let big = Limits {
            max_message: 200_000,
            max_frame: 1000,
            write_buffer: 64,
            read_buffer: 16,
        };
        let mut script = Script::new();
        script.write_budget = 0;
        let mut s = Session::new(script, Vec::new(), &big);
        assert!(s.send_binary(&[9; 200_000]).unwrap());
        s.get_mut().write_budget = usize::MAX;
        assert!(s.flush().unwrap());
        assert!(s.ws.get_ref().queue.capacity() <= OUTBOX_KEEP);
    }

    #[test]
    fn binary_frame_headers_use_the_shortest_length_form() {
        let mut h = [0u8; MAX_FRAME_HEADER];
        for (len, want) in [
            (0usize, vec![0x82, 0]),
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65535, vec![0x82, 126, 0xff, 0xff]),
            (65536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let n = binary_frame_header(len, &mut h);
            assert_eq!(&h[..n], &want[..], "length {len}");
        }
    }

    /// Over TLS the end of the output (the close reply) may still be inside rustls after the
    /// outbox has drained: the session is not closed until the socket has taken it.
    #[test]
    fn over_tls_the_session_closes_only_once_the_close_frame_is_out() {
        use crate::tls::TlsStream;
        use mio::net::UnixStream;
        let pki = crate::tls::test_pki::Pki::new();
        let (mut server, mut peer) = pki.streams();
        let read_some = |c: &mut TlsStream<UnixStream>, out: &mut Vec<u8>, max: usize| {
            let mut buf = vec![0u8; max];
            match c.read(&mut buf) {
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        };
        // The handshake, both sides driven.
        let mut got = Vec::new();
        for _ in 0..50 {
            let _ = peer.flush();
            let _ = server.read(&mut [0u8; 64]);
            let _ = server.flush();
            read_some(&mut peer, &mut got, 1024);
        }
        assert!(!server.is_handshaking());
        let mut s = Session::new(server, Vec::new(), &Limits::default());
        // Output the client does not read, until the session refuses more.
        let chunk = vec![0x5a; 32 * 1024];
        while s.send_binary(&chunk).unwrap() {}
        // The client closes; the reply queues behind the output.
        peer.write_all(&client(OP_CLOSE, true, &close_payload(1000, "bye")))
            .unwrap();
        let _ = peer.flush();
        let mut rounds = 0;
        loop {
            let _ = s.read();
            let _ = s.flush();
            if s.is_closed() {
                break;
            }
            read_some(&mut peer, &mut got, 4096);
            rounds += 1;
            assert!(rounds < 100_000, "never closed");
        }
        // Closed: nothing of it is left inside rustls.
        assert!(!s.get_mut().holds_output(), "closed with records in rustls");
        loop {
            let before = got.len();
            read_some(&mut peer, &mut got, 64 * 1024);
            if got.len() == before {
                break;
            }
        }
        let frames = server_frames(&got);
        assert_eq!(
            frames.last().unwrap(),
            &(OP_CLOSE, close_payload(1000, "bye"))
        );
    }
}
