//! One forwarded request: connect to the peer, send the request, wait for the answer's head,
//! then relay. Before the head, failures are ordinary answers (502, 504) on the client's
//! connection; once the head is here, the client's connection is taken over (as for a
//! websocket upgrade) and the answer streamed: an HTTP body with its framing, after which the
//! connection is handed back to the server for the client's next request (or closed, when
//! the client asked to close or the body ends only with the peer's connection); or a
//! websocket's bytes both ways, verbatim.
//!
//! Every buffer is bounded: a side is not read while the other side's buffer is full, so a
//! slow reader slows the writer down instead of growing memory.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Token};

use super::frames::{FrameTracker, close_frame};
use super::url::PeerUrl;
use super::wire::{self, Framing, Outgoing, PeerHead};
use super::{Error, Peer};
use crate::http::chunked;
use crate::http::request::Method;
use crate::http::{ApiError, Format, Response};
use crate::reactor::net::{ByteStream, Stream};
use crate::reactor::{Io, Role};

/// Bytes buffered per direction.
const BUFFER: usize = 256 * 1024;
/// What a client whose connection carries on may send while an answer is relayed (its
/// next requests): no more is read until the connection is handed back.
const CLIENT_INPUT: usize = 64 * 1024;
/// One read's worth.
const CHUNK: usize = 64 * 1024;
/// After the answer went out (or the peer vanished), how long the client may take to close
/// its side before its connection is dropped.
const LINGER: Duration = Duration::from_secs(2);
/// When supd stops, how long a forward still waiting for its peer's answer may wait: within
/// the server's shutdown grace (4 s), so that the client gets an answer (the peer's, else a
/// 503), never a silent close.
const STOP_WAIT: Duration = Duration::from_secs(3);

/// What a drive did, for the operation that wraps this relay (`ops::Op::Forward`).
#[derive(Default)]
pub(crate) struct Step {
    /// An error answer, before the client's connection was taken over.
    pub reply: Option<Response>,
    /// The answer's head is here: the client's stream is to be handed over (`attach`).
    pub upgrade: bool,
    /// The answer went out whole and the client's connection carries on: give it back
    /// (`take_client`).
    pub handback: bool,
    pub done: bool,
}

/// The connection to a peer: a client stream like any other (TCP, TLS over TCP for an
/// `https://` peer, or a unix socket).
type PeerStream = Stream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connecting,
    /// Request (being) sent, reading the answer's head.
    AwaitingHead,
    /// The head is here; waiting for the server to hand over the client's stream.
    Attaching,
    Http,
    Websocket,
    /// Our side of the client's connection is shut: waiting for the client to close.
    Lingering(Instant),
}

/// Where an HTTP body from the peer ends.
enum BodyEnd {
    Remaining(u64),
    Chunked(Box<chunked::Decoder>),
    /// Chunked from the peer, relayed decoded (an HTTP/1.0 client).
    Dechunk(Box<chunked::Decoder>),
    UntilClose,
    Done,
}

impl BodyEnd {
    /// How much of `data` belongs to the body, and whether the body is over; what goes to
    /// the client is given to `out` (the bytes themselves, or a decoded chunked body's data).
    /// Err: the peer's chunked framing is broken.
    fn take(&mut self, data: &[u8], mut out: impl FnMut(&[u8])) -> Result<(usize, bool), ()> {
        let (used, done) = match self {
            BodyEnd::Remaining(n) => {
                let used = (*n).min(data.len() as u64);
                *n -= used;
                (used as usize, *n == 0)
            }
            BodyEnd::Chunked(d) => d.decode(data, |_| {}).map_err(|_| ())?,
            BodyEnd::Dechunk(d) => return d.decode(data, out).map_err(|_| ()),
            BodyEnd::UntilClose => (data.len(), false),
            BodyEnd::Done => (0, true),
        };
        out(&data[..used]);
        Ok((used, done))
    }
}

/// A bounded byte queue.
#[derive(Default)]
struct Buf {
    data: Vec<u8>,
    off: usize,
    /// Bytes written out so far.
    written: u64,
}

impl Buf {
    fn len(&self) -> usize {
        self.data.len() - self.off
    }
    fn room(&self) -> usize {
        BUFFER.saturating_sub(self.len())
    }
    fn push(&mut self, b: &[u8]) {
        if self.off > 0 && self.off == self.data.len() {
            self.data.clear();
            self.off = 0;
        }
        self.data.extend_from_slice(b);
    }
    /// Write up to `limit` queued bytes, until the stream would block; then push out what a
    /// TLS stream holds of them (records rustls made but the socket did not take: nothing
    /// else would send them once this queue is empty).
    fn write_to(&mut self, s: &mut impl Write, limit: usize) -> io::Result<()> {
        let mut left = limit.min(self.len());
        while left > 0 {
            match s.write(&self.data[self.off..self.off + left]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.off += n;
                    self.written += n as u64;
                    left -= n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        match s.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if self.off == self.data.len() {
            self.data.clear();
            self.off = 0;
            if self.data.capacity() > 2 * BUFFER {
                self.data = Vec::new();
            }
        } else if self.off >= BUFFER {
            self.data.drain(..self.off);
            self.off = 0;
        }
        Ok(())
    }
    /// Drop the last `n` queued bytes.
    fn truncate_last(&mut self, n: usize) {
        let keep = self.data.len() - n.min(self.len());
        self.data.truncate(keep);
    }
}

/// Read what `s` has, up to `room` bytes, into `scratch`. Ok(None): end of stream.
fn read_some(s: &mut impl Read, scratch: &mut [u8], room: usize) -> io::Result<Option<usize>> {
    let want = room.min(scratch.len());
    loop {
        match s.read(&mut scratch[..want]) {
            Ok(0) => return Ok(None),
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

pub(crate) struct Forward {
    site: Rc<Peer>,
    format: Format,
    method: Method,
    /// The client's `Sec-WebSocket-Key`, for a websocket request.
    ws_key: Option<String>,
    websocket: bool,
    /// The client's connection may carry another request after this one.
    keep_alive: bool,
    /// The client takes a chunked body (not HTTP/1.0).
    client_chunked: bool,
    /// Interim (1xx) answers skipped before the final head.
    interim: wire::Interim,
    stage: Stage,
    /// The TLS handshake with an `https://` peer is not over: it counts against the connect
    /// timeout, the answer's wait starts after it.
    handshaking: bool,
    peer: Option<(PeerStream, Token)>,
    client: Option<(Stream, Token)>,
    /// The client's address as logged.
    client_peer: String,
    /// What the client sent after its request, kept for the connection handed back.
    client_in: Vec<u8>,
    /// Until when the connection, then the head, may take.
    deadline: Instant,
    to_peer: Buf,
    to_client: Buf,
    head: Vec<u8>,
    /// The head and first body bytes for the client, waiting for the attach.
    ready: Vec<u8>,
    status: u16,
    body: BodyEnd,
    /// Last time an HTTP answer's body made progress: a peer that stops mid-body for its
    /// response timeout is lost.
    last_peer: Instant,
    frames: FrameTracker,
    peer_eof: bool,
    /// The peer's connection failed (not a clean end).
    peer_lost: Option<String>,
    client_eof: bool,
    peer_shut: bool,
    client_shut: bool,
    /// The answer is complete and the client's connection is to be handed back.
    handback: bool,
    /// supd is stopping: end a websocket with 1001.
    stopping: bool,
    /// supd is stopping: the latest an answer still awaited from the peer may start.
    stop_by: Option<Instant>,
    /// Last time the client took some of its answer (`to_client.written` then).
    client_progress: (Instant, u64),
    gone: bool,
}

impl Forward {
    /// Connect to the peer and queue the request. A connection refused at once (a unix
    /// socket that is not there) is an error now; a TCP connect completes on the loop.
    pub(crate) fn start(
        me: Token,
        site: Rc<Peer>,
        out: &Outgoing<'_>,
        format: Format,
        io: &mut Io<'_>,
    ) -> Result<Forward, Error> {
        let unreachable = |reason: String| Error::Unreachable {
            site: site.name.clone(),
            reason,
        };
        let tcp = |site: &Peer| -> Result<TcpStream, Error> {
            let addrs = site
                .addrs
                .as_ref()
                .map_err(|why| unreachable(why.clone()))?;
            let addr = *addrs
                .first()
                .ok_or_else(|| unreachable("no address".into()))?;
            let s = TcpStream::connect(addr).map_err(|e| unreachable(format!("{addr}: {e}")))?;
            let _ = s.set_nodelay(true);
            Ok(s)
        };
        let mut stream = match &site.url {
            PeerUrl::Unix(path) => UnixStream::connect(path)
                .map(Stream::Unix)
                .map_err(|e| unreachable(format!("{}: {e}", path.display())))?,
            PeerUrl::Http { .. } => Stream::Tcp(tcp(&site)?),
            // The handshake runs on the loop as the stream is written and read, the request
            // held by rustls (bounded) until it is done; the certificate must name the URL's
            // host (the SNI, or the IP address).
            PeerUrl::Https { host, .. } => {
                let config = site.tls.clone().ok_or_else(|| Error::Unusable {
                    site: site.name.clone(),
                    reason: "no TLS configuration".into(),
                })?;
                Stream::tls_client(tcp(&site)?, config, host).map_err(|e| Error::Tls {
                    site: site.name.clone(),
                    reason: e.to_string(),
                })?
            }
        };
        let token = io
            .register(
                me,
                Role::Peer,
                &mut stream,
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| unreachable(format!("register: {e}")))?;
        let deadline = Instant::now() + site.connect_timeout;
        io.wake_at(me, deadline);
        let mut to_peer = Buf::default();
        to_peer.push(&out.bytes());
        Ok(Forward {
            format,
            method: out.req.method,
            ws_key: out.req.header("sec-websocket-key").map(str::to_owned),
            websocket: out.websocket(),
            keep_alive: out.req.keep_alive,
            client_chunked: wire::client_takes_chunked(out.req.minor),
            interim: wire::Interim::default(),
            stage: Stage::Connecting,
            handshaking: site.url.is_tls(),
            peer: Some((stream, token)),
            client: None,
            client_peer: String::new(),
            client_in: Vec::new(),
            deadline,
            to_peer,
            to_client: Buf::default(),
            head: Vec::new(),
            ready: Vec::new(),
            status: 0,
            body: BodyEnd::Done,
            last_peer: Instant::now(),
            frames: FrameTracker::default(),
            peer_eof: false,
            peer_lost: None,
            client_eof: false,
            peer_shut: false,
            client_shut: false,
            handback: false,
            stopping: false,
            stop_by: None,
            client_progress: (Instant::now(), 0),
            gone: false,
            site,
        })
    }

    /// The status the access log shows for the taken-over connection.
    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    fn fail(&mut self, e: Error) -> Step {
        log::info!("forward: {e}");
        // A peer's bad answer names no site by itself.
        let err = ApiError::from(e).info("site", self.site.name.clone());
        Step {
            reply: Some(err.into_response(self.format)),
            done: true,
            ..Step::default()
        }
    }

    pub(crate) fn drive(&mut self, me: Token, _ev: Option<Role>, io: &mut Io<'_>) -> Step {
        if self.gone {
            return Step {
                done: true,
                ..Step::default()
            };
        }
        let now = Instant::now();
        if self.stage == Stage::Connecting {
            match self.connect_state() {
                Ok(true) => {
                    self.stage = Stage::AwaitingHead;
                    if !self.handshaking {
                        self.deadline = self.wait_until(now + self.site.response_timeout);
                        io.wake_at(me, self.deadline);
                    }
                }
                Ok(false) if now >= self.deadline && self.stopping => {
                    return self.fail(Error::Stopping {
                        site: self.site.name.clone(),
                    });
                }
                Ok(false) if now >= self.deadline => {
                    return self.fail(Error::Timeout {
                        site: self.site.name.clone(),
                        what: "did not accept the connection",
                    });
                }
                Ok(false) => return Step::default(),
                Err(e) => {
                    return self.fail(Error::Unreachable {
                        site: self.site.name.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        if self.stage == Stage::AwaitingHead {
            return self.await_head(me, now, io);
        }
        match self.stage {
            Stage::Http => self.relay_http(me, now, io),
            Stage::Websocket => self.relay_websocket(io),
            _ => {}
        }
        if self.handback {
            return Step {
                handback: true,
                done: true,
                ..Step::default()
            };
        }
        self.check_client_stall(me, now, io);
        self.linger(me, now, io)
    }

    /// Whether the TCP connect finished (a unix connect is done at once). For TLS, the
    /// socket under it: the handshake is driven by the reads and writes that follow.
    fn connect_state(&mut self) -> io::Result<bool> {
        let s = match &self.peer {
            Some((Stream::Tcp(s), _)) => s,
            Some((Stream::Tls(t), _)) => t.get_ref(),
            Some((Stream::Unix(_), _)) | None => return Ok(true),
        };
        if let Some(e) = s.take_error()? {
            return Err(e);
        }
        match s.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The error for a connection that failed before the answer: TLS failures (during the
    /// handshake: an untrusted certificate, one for another name, a client certificate the
    /// peer wants and we lack) say so.
    fn lost_error(&self, e: &io::Error) -> Error {
        let site = self.site.name.clone();
        match crate::tls::protocol_error(e) {
            // In TLS 1.3 the peer's verdict on our certificate comes after our side of the
            // handshake is over, before any answer: a handshake failure all the same.
            Some(tls) if self.handshaking || self.head.is_empty() => Error::Tls {
                site,
                reason: format!("TLS handshake failed: {}", tls.0),
            },
            Some(tls) => Error::Tls {
                site,
                reason: format!("TLS failed: {}", tls.0),
            },
            None => Error::Peer {
                site,
                reason: format!("connection lost before the answer: {e}"),
            },
        }
    }

    fn peer_handshaking(&self) -> bool {
        matches!(&self.peer, Some((Stream::Tls(t), _)) if t.is_handshaking())
    }

    fn await_head(&mut self, me: Token, now: Instant, io: &mut Io<'_>) -> Step {
        let peer_err = |s: &Self, reason: String| Error::Peer {
            site: s.site.name.clone(),
            reason,
        };
        let Some((peer, _)) = self.peer.as_mut() else {
            return Step::default();
        };
        let mut eof = false;
        let mut failed = None;
        if let Err(e) = self.to_peer.write_to(peer, usize::MAX) {
            // A peer may answer (and close) before it has read the whole request: its
            // answer, if any, is still read below.
            self.to_peer = Buf::default();
            failed = Some(e);
        }
        let mut scratch = io.take_scratch();
        let mut parsed = Ok(None);
        while self.head.len() < wire::MAX_HEAD + CHUNK {
            match read_some(peer, &mut scratch, CHUNK) {
                Ok(Some(n)) => {
                    self.head.extend_from_slice(&scratch[..n]);
                    // Interim 1xx heads are dropped from `head` here; read on to the final.
                    parsed = wire::final_head(&mut self.head, &mut self.interim, self.websocket);
                    if parsed.as_ref().map_or(true, Option::is_some) {
                        break;
                    }
                }
                Ok(None) => {
                    eof = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // Why TLS failed says more than the broken pipe a write met after it.
                    if failed.is_none() || crate::tls::protocol_error(&e).is_some() {
                        failed = Some(e);
                    }
                    break;
                }
            }
        }
        io.put_scratch(scratch);
        // A TLS handshake that ended in the reads above lets the rest of the request (held
        // here, beyond what rustls buffers meanwhile) go now: no event would say so.
        if failed.is_none()
            && !eof
            && let Err(e) = self.to_peer.write_to(peer, usize::MAX)
        {
            self.to_peer = Buf::default();
            failed = Some(e);
        }
        if self.handshaking && failed.is_none() && !self.peer_handshaking() {
            self.handshaking = false;
            self.deadline = self.wait_until(now + self.site.response_timeout);
            io.wake_at(me, self.deadline);
        }
        let head = match parsed {
            Ok(Some(h)) => h,
            Ok(None) => {
                if let Some(e) = failed
                    .as_ref()
                    .filter(|e| crate::tls::protocol_error(e).is_some())
                {
                    let e = self.lost_error(e);
                    return self.fail(e);
                }
                if eof && self.handshaking {
                    let e = Error::Tls {
                        site: self.site.name.clone(),
                        reason: "the peer closed the connection during the TLS handshake".into(),
                    };
                    return self.fail(e);
                }
                if eof {
                    let e = peer_err(self, "closed the connection without an answer".into());
                    return self.fail(e);
                }
                if let Some(e) = failed {
                    let e = self.lost_error(&e);
                    return self.fail(e);
                }
                if now >= self.deadline && self.stopping {
                    return self.fail(Error::Stopping {
                        site: self.site.name.clone(),
                    });
                }
                if now >= self.deadline {
                    return self.fail(Error::Timeout {
                        site: self.site.name.clone(),
                        what: if self.handshaking {
                            "did not complete the TLS handshake"
                        } else {
                            "did not answer"
                        },
                    });
                }
                return Step::default();
            }
            Err(e) => {
                let site = self.site.name.clone();
                log::info!("forward to {site}: {e}");
                return self.fail(Error::Wire(e));
            }
        };
        self.peer_eof = eof;
        self.on_head(head)
    }

    fn on_head(&mut self, head: PeerHead) -> Step {
        let rest = self.head.split_off(head.len);
        self.head = Vec::new();
        self.status = head.status;
        let site = self.site.name.clone();
        if self.websocket && head.status == 101 {
            let key = self.ws_key.clone().unwrap_or_default();
            match wire::upgrade_head(&head, &key) {
                Ok(h) => self.ready = h,
                Err(e) => return self.fail(Error::Wire(e)),
            }
            self.frames.feed(&rest);
            self.ready.extend_from_slice(&rest);
            self.stage = Stage::Attaching;
            log::debug!("forward to {site}: websocket accepted");
        } else {
            let framing = match wire::framing(&head, self.method) {
                Ok(f) => f,
                Err(e) => return self.fail(Error::Wire(e)),
            };
            let dechunk = framing == Framing::Chunked && !self.client_chunked;
            // A body that ends only where the connection does ends that connection.
            self.keep_alive &= framing != Framing::UntilClose && !dechunk;
            self.ready = wire::client_head(&head, framing, self.keep_alive, self.client_chunked);
            self.body = match framing {
                Framing::Empty | Framing::Length(0) => BodyEnd::Done,
                Framing::Length(n) => BodyEnd::Remaining(n),
                Framing::Chunked if dechunk => {
                    BodyEnd::Dechunk(Box::new(chunked::Decoder::new(u64::MAX, 64 * 1024)))
                }
                Framing::Chunked => {
                    BodyEnd::Chunked(Box::new(chunked::Decoder::new(u64::MAX, 64 * 1024)))
                }
                Framing::UntilClose => BodyEnd::UntilClose,
            };
            let ready = &mut self.ready;
            match self.body.take(&rest, |b| ready.extend_from_slice(b)) {
                Ok((_, done)) => {
                    if done {
                        self.body = BodyEnd::Done;
                    }
                }
                Err(()) => self.peer_lost = Some("invalid chunked body".into()),
            }
            self.stage = Stage::Attaching;
        }
        Step {
            upgrade: true,
            ..Step::default()
        }
    }

    /// The client's stream, after the 101 or the answer's head is decided. `out` holds what
    /// the connection had not written yet (earlier pipelined answers); `leftover` what the
    /// client sent after its request (websocket frames; for HTTP, requests that this closing
    /// connection will not answer).
    pub(crate) fn attach(
        &mut self,
        me: Token,
        mut stream: Stream,
        peer: String,
        out: Vec<u8>,
        leftover: Vec<u8>,
        io: &mut Io<'_>,
    ) -> io::Result<()> {
        self.client_peer = peer;
        self.client_progress = (Instant::now(), self.to_client.written);
        self.last_peer = Instant::now();
        let token = io.register(
            me,
            Role::Client,
            &mut stream,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.client = Some((stream, token));
        self.to_client.push(&out);
        self.to_client.push(&std::mem::take(&mut self.ready));
        if self.websocket && self.status == 101 {
            self.to_peer.push(&leftover);
            self.stage = Stage::Websocket;
        } else {
            self.client_in = leftover;
            self.stage = Stage::Http;
        }
        Ok(())
    }

    fn relay_http(&mut self, me: Token, now: Instant, io: &mut Io<'_>) {
        let mut scratch = io.take_scratch();
        while let Some((client, _)) = self.client.as_mut() {
            if let Err(e) = self.to_client.write_to(client, usize::MAX) {
                log::debug!("forward: client write: {e}");
                self.gone = true;
                break;
            }
            // What the client sends now is its next request (kept for the connection handed
            // back, up to a limit) or, when its connection closes after this answer, dropped;
            // read so that a close is seen.
            let room = if self.keep_alive {
                CLIENT_INPUT.saturating_sub(self.client_in.len())
            } else {
                CHUNK
            };
            if !self.client_eof && room > 0 {
                match read_some(client, &mut scratch, room) {
                    Ok(Some(n)) => {
                        if self.keep_alive {
                            self.client_in.extend_from_slice(&scratch[..n]);
                        }
                        continue;
                    }
                    Ok(None) => self.client_eof = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        self.gone = true;
                        break;
                    }
                }
            }
            let body_open = !matches!(self.body, BodyEnd::Done);
            if !body_open || self.peer_lost.is_some() || self.to_client.room() == 0 {
                break;
            }
            let Some((peer, _)) = self.peer.as_mut() else {
                break;
            };
            match read_some(peer, &mut scratch, self.to_client.room()) {
                Ok(Some(n)) => match self.body.take(&scratch[..n], |b| self.to_client.push(b)) {
                    Ok((_, done)) => {
                        self.last_peer = now;
                        if done {
                            self.body = BodyEnd::Done;
                        }
                    }
                    Err(()) => self.peer_lost = Some("invalid chunked body".into()),
                },
                Ok(None) => {
                    if matches!(self.body, BodyEnd::UntilClose) {
                        self.body = BodyEnd::Done;
                    } else {
                        self.peer_lost = Some("the peer closed the connection mid-answer".into());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => self.peer_lost = Some(format!("the peer connection failed: {e}")),
            }
        }
        io.put_scratch(scratch);
        let body_open = !matches!(self.body, BodyEnd::Done);
        if self.to_client.room() == 0 {
            // Waiting for the client, not for the peer.
            self.last_peer = now;
        }
        if body_open && self.peer_lost.is_none() && !self.gone {
            let stalled_until = self.last_peer + self.site.response_timeout;
            if now >= stalled_until {
                self.peer_lost = Some(format!(
                    "no data from the peer for {:?} mid-answer",
                    self.site.response_timeout
                ));
            } else {
                io.wake_at(me, stalled_until);
            }
        }
        if let Some(why) = &self.peer_lost {
            // The client cannot tell a cut answer from a whole one otherwise.
            log::info!(
                "forward to {}: {why}; closing the client's connection",
                self.site.name
            );
            self.gone = true;
            return;
        }
        if matches!(self.body, BodyEnd::Done) && self.client_drained() && !self.client_shut {
            self.release_peer(io);
            if self.keep_alive {
                self.handback = true;
            } else {
                self.shut_client();
            }
        }
    }

    /// A client that takes none of what it is owed for the write timeout is dropped, as a
    /// local connection is: an HTTP answer; a websocket whose peer has gone, or whose buffer
    /// towards the client is full. (While the buffer has room, the peer's pings judge the
    /// client; once it is full the peer is no longer read, so neither its close nor its end
    /// would be seen: the session would be held forever by a client that reads nothing.)
    fn check_client_stall(&mut self, me: Token, now: Instant, io: &mut Io<'_>) {
        let owed = self.to_client.len() > 0 || self.client_holds_output();
        if self.to_client.written != self.client_progress.1 || !owed {
            // Nothing owed: the client is not behind; the clock starts with what comes next.
            self.client_progress = (now, self.to_client.written);
        }
        let judged = match self.stage {
            Stage::Http | Stage::Lingering(_) => true,
            Stage::Websocket => {
                self.peer_eof
                    || self.peer_lost.is_some()
                    || self.stopping
                    || self.to_client.room() == 0
            }
            _ => false,
        };
        if !owed || !judged || self.gone {
            return;
        }
        let limit = self.client_progress.0 + io.cfg.limits.write_timeout;
        if now >= limit {
            log::info!(
                "forward to {}: the client took nothing for {:?}; dropped",
                self.site.name,
                io.cfg.limits.write_timeout
            );
            self.gone = true;
        } else {
            io.wake_at(me, limit);
        }
    }

    /// The client's connection, its answer complete, with what it sent meanwhile.
    pub(crate) fn take_client(&mut self, io: &mut Io<'_>) -> Option<(Stream, String, Vec<u8>)> {
        if !self.handback {
            return None;
        }
        let (mut c, t) = self.client.take()?;
        io.deregister(t, &mut c);
        self.gone = true;
        Some((
            c,
            std::mem::take(&mut self.client_peer),
            std::mem::take(&mut self.client_in),
        ))
    }

    fn relay_websocket(&mut self, io: &mut Io<'_>) {
        let mut scratch = io.take_scratch();
        let mut moved = true;
        while moved && !self.gone {
            moved = false;
            let (Some((client, _)), Some((peer, _))) = (self.client.as_mut(), self.peer.as_mut())
            else {
                break;
            };
            // Client to peer: verbatim.
            if self.peer_lost.is_none() {
                let before = self.to_peer.len();
                if let Err(e) = self.to_peer.write_to(peer, usize::MAX) {
                    self.peer_lost = Some(format!("writing to the peer: {e}"));
                }
                moved |= self.to_peer.len() < before;
            }
            if !self.client_eof && self.to_peer.room() > 0 {
                match read_some(client, &mut scratch, self.to_peer.room()) {
                    Ok(Some(n)) => {
                        self.to_peer.push(&scratch[..n]);
                        moved = true;
                    }
                    Ok(None) => {
                        self.client_eof = true;
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        self.gone = true;
                        break;
                    }
                }
            }
            // A TLS peer's last records out first: the shutdown would cut them off.
            if self.client_eof && self.to_peer.len() == 0 && !peer.holds_output() && !self.peer_shut
            {
                self.peer_shut = true;
                let _ = peer.shutdown(Shutdown::Write);
            }
            // Peer to client: whole frames, so that a close can follow them if the peer dies.
            let held = (self.frames.partial() as usize).min(self.to_client.len());
            let held = if held == self.to_client.len() && self.to_client.room() == 0 {
                // One frame larger than the buffer: pass it on as it comes.
                0
            } else {
                held
            };
            let before = self.to_client.len();
            if let Err(e) = self.to_client.write_to(client, self.to_client.len() - held) {
                log::debug!("forward: client write: {e}");
                self.gone = true;
                break;
            }
            moved |= self.to_client.len() < before;
            if !self.peer_eof && self.peer_lost.is_none() && self.to_client.room() > 0 {
                match read_some(peer, &mut scratch, self.to_client.room()) {
                    Ok(Some(n)) => {
                        self.frames.feed(&scratch[..n]);
                        self.to_client.push(&scratch[..n]);
                        moved = true;
                    }
                    Ok(None) => {
                        self.peer_eof = true;
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => self.peer_lost = Some(format!("the peer connection failed: {e}")),
                }
            }
            if (self.peer_eof || self.peer_lost.is_some() || self.stopping) && !self.client_shut {
                // The peer's own close, if it sent one, is the end; otherwise ours.
                if !self.frames.close_seen {
                    self.inject_close();
                    moved = true;
                    if self.gone {
                        break;
                    }
                }
                if self.client_drained() {
                    self.shut_client();
                }
            }
        }
        io.put_scratch(scratch);
        if self.client_shut && (self.peer_eof || self.peer_lost.is_some()) {
            self.release_peer(io);
        }
    }

    /// The peer vanished without closing the websocket (or supd is stopping): end the
    /// client's stream with a 1011 (1001) close after the last whole frame, and drop the
    /// peer. If part of a frame already went out, the frame cannot be finished: the
    /// connection is dropped.
    fn inject_close(&mut self) {
        let partial = self.frames.partial() as usize;
        if partial > self.to_client.len() {
            log::info!(
                "forward to {}: peer lost mid-frame; dropping the client's connection",
                self.site.name
            );
            self.gone = true;
            return;
        }
        self.to_client.truncate_last(partial);
        self.frames = FrameTracker::default();
        self.frames.close_seen = true;
        let (code, reason) = if self.stopping && self.peer_lost.is_none() && !self.peer_eof {
            (1001, "supd is shutting down".to_string())
        } else {
            (
                1011,
                format!(
                    "site {}: the connection to the peer was lost",
                    self.site.name
                ),
            )
        };
        log::info!("forward: {reason}");
        self.to_client.push(&close_frame(code, &reason));
        self.peer_lost = None;
        self.peer_eof = true;
    }

    /// Everything owed to the client went out, including what a TLS client stream held.
    fn client_drained(&self) -> bool {
        self.to_client.len() == 0 && !self.client_holds_output()
    }

    fn client_holds_output(&self) -> bool {
        self.client.as_ref().is_some_and(|(c, _)| c.holds_output())
    }

    fn shut_client(&mut self) {
        if let Some((c, _)) = self.client.as_mut() {
            let _ = c.shutdown(Shutdown::Write);
        }
        self.client_shut = true;
        self.stage = Stage::Lingering(Instant::now() + LINGER);
    }

    fn release_peer(&mut self, io: &mut Io<'_>) {
        if let Some((mut p, t)) = self.peer.take() {
            io.deregister(t, &mut p);
        }
    }

    /// After our side is shut: the rest of the client's input is read and dropped until it
    /// closes (closing with unread input would reset the connection and could destroy the
    /// answer in flight), or until the linger time is over.
    fn linger(&mut self, me: Token, now: Instant, io: &mut Io<'_>) -> Step {
        let mut p = Step::default();
        if self.gone {
            p.done = true;
            return p;
        }
        let Stage::Lingering(until) = self.stage else {
            return p;
        };
        let mut scratch = io.take_scratch();
        if let Some((c, _)) = self.client.as_mut() {
            loop {
                match read_some(c, &mut scratch, CHUNK) {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        self.client_eof = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.client_eof = true;
                        break;
                    }
                }
            }
        }
        io.put_scratch(scratch);
        if self.client_eof || now >= until {
            p.done = true;
        } else {
            io.wake_at(me, until);
        }
        p
    }

    pub(crate) fn client_gone(&mut self) {
        self.gone = true;
    }

    /// supd is stopping: a websocket is closed with 1001 after its last whole frame. An HTTP
    /// answer goes on, as a local operation in flight does: one still awaited from the peer
    /// gets at most `STOP_WAIT` more (then a 503), one being relayed runs to its end (within
    /// the server's grace).
    pub(crate) fn shutdown(&mut self, me: Token, io: &mut Io<'_>) {
        self.stopping = true;
        self.stop_by.get_or_insert(Instant::now() + STOP_WAIT);
        if matches!(self.stage, Stage::Connecting | Stage::AwaitingHead) {
            self.deadline = self.wait_until(self.deadline);
            io.wake_at(me, self.deadline);
        }
    }

    /// `until`, or sooner when supd is stopping.
    fn wait_until(&self, until: Instant) -> Instant {
        self.stop_by.map_or(until, |by| until.min(by))
    }

    pub(crate) fn release(&mut self, io: &mut Io<'_>) {
        self.release_peer(io);
        if let Some((mut c, t)) = self.client.take() {
            io.deregister(t, &mut c);
        }
    }
}

/// The relay over real sockets, no daemon: a unix-socket peer played by the test, a socket
/// pair for the client.
#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;

    use super::*;
    use crate::config::Config;
    use crate::http::request::Request;
    use crate::reactor::Reactor;
    use crate::ws::handshake::accept_key;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    struct Rig {
        reactor: Reactor,
        cfg: Config,
        listener: UnixListener,
        path: PathBuf,
    }

    impl Rig {
        fn new(tag: &str) -> Rig {
            let path =
                std::env::temp_dir().join(format!("supd-fwd-{tag}-{}.sock", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path).unwrap();
            Rig {
                reactor: Reactor::new(1).unwrap(),
                cfg: Config::default(),
                listener,
                path,
            }
        }

        fn peer(&self) -> Rc<Peer> {
            Rc::new(Peer {
                name: "b".into(),
                url: PeerUrl::Unix(self.path.clone()),
                addrs: Ok(Vec::new()),
                token: None,
                tls: None,
                connect_timeout: Duration::from_secs(5),
                response_timeout: Duration::from_secs(5),
            })
        }

        fn io(&mut self) -> Io<'_> {
            Io::new(&mut self.reactor, &self.cfg)
        }
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn ws_request() -> Request {
        let mut r = crate::ops::decode::testing::request(
            Method::Get,
            "protocol=tcp&port=7&site=b",
            &crate::ops::decode::testing::ws_headers("v1.connect.supd"),
            b"",
        );
        r.path = "/v1/state/applications/a/service-instances/s-1/connect".into();
        r
    }

    /// Drive until `f` holds (the sockets are real: give them a moment).
    fn drive_until(
        f: &mut Forward,
        rig: &mut Rig,
        mut done: impl FnMut(&Step, &Forward) -> bool,
    ) -> Step {
        for _ in 0..500 {
            let step = f.drive(Token(1), None, &mut rig.io());
            if done(&step, f) {
                return step;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("no progress");
    }

    /// Everything a non-blocking stream gives until its end (or two seconds).
    fn read_to_eof(s: &mut mio::net::UnixStream) -> Vec<u8> {
        let until = Instant::now() + Duration::from_secs(2);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => panic!("client read: {e}"),
            }
        }
        out
    }

    #[test]
    fn a_peer_lost_mid_frame_ends_the_clients_stream_with_1011_after_the_last_whole_frame() {
        let mut rig = Rig::new("ws");
        let req = ws_request();
        let out = Outgoing {
            req: &req,
            token: None,
            forwarded_for: "admin@a".into(),
            hops: 0,
        };
        let peer = rig.peer();
        let mut f = Forward::start(Token(1), peer, &out, Format::Json, &mut rig.io()).unwrap();
        let (mut b, _) = rig.listener.accept().unwrap();
        drive_until(&mut f, &mut rig, |_, f| f.to_peer.len() == 0);
        let mut head = vec![0u8; 4096];
        let n = b.read(&mut head).unwrap();
        let sent = String::from_utf8_lossy(&head[..n]).into_owned();
        assert!(sent.starts_with(
            "GET /v1/state/applications/a/service-instances/s-1/connect?protocol=tcp&port=7 HTTP/1.1\r\n"
        ));
        // The 101, one whole frame, and the first bytes of another; then the peer is gone.
        let whole = [0x82, 3, b'a', b'b', b'c'];
        let partial = [0x82, 10, b'x'];
        b.write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: v1.connect.supd\r\n\r\n",
                accept_key(KEY)
            )
            .as_bytes(),
        )
        .unwrap();
        b.write_all(&whole).unwrap();
        let step = drive_until(&mut f, &mut rig, |s, _| s.upgrade);
        assert!(step.reply.is_none());
        let (ours, mut client) = mio::net::UnixStream::pair().unwrap();
        f.attach(
            Token(1),
            Stream::Unix(ours),
            "test".into(),
            b"earlier".to_vec(),
            Vec::new(),
            &mut rig.io(),
        )
        .unwrap();
        b.write_all(&partial).unwrap();
        drop(b);
        drive_until(&mut f, &mut rig, |_, f| f.client_shut);
        let got = read_to_eof(&mut client);
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("earlierHTTP/1.1 101 Switching Protocols\r\n"),
            "{text}"
        );
        assert!(text.contains(&format!("Sec-WebSocket-Accept: {}\r\n", accept_key(KEY))));
        let body = &got[got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
        let close = close_frame(1011, "site b: the connection to the peer was lost");
        assert_eq!(body, [&whole[..], &close].concat());
        drop(client);
        drive_until(&mut f, &mut rig, |s, _| s.done);
    }

    #[test]
    fn a_peer_that_closes_before_answering_is_502_and_a_silent_one_504() {
        let mut rig = Rig::new("http");
        let mut req = crate::ops::decode::testing::request(Method::Get, "site=b", &[], b"");
        req.path = "/v1/state/applications/a/service-instances".into();
        let out = Outgoing {
            req: &req,
            token: Some("site-token"),
            forwarded_for: "admin@a".into(),
            hops: 0,
        };
        let mut f =
            Forward::start(Token(1), rig.peer(), &out, Format::Json, &mut rig.io()).unwrap();
        let (b, _) = rig.listener.accept().unwrap();
        drop(b);
        let step = drive_until(&mut f, &mut rig, |s, _| s.done);
        let r = step.reply.expect("an error answer");
        assert_eq!(r.status, 502);
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.contains("without an answer"), "{body}");

        let mut peer = rig.peer();
        Rc::get_mut(&mut peer).unwrap().response_timeout = Duration::from_millis(50);
        let mut f = Forward::start(Token(1), peer, &out, Format::Json, &mut rig.io()).unwrap();
        let (_held, _) = rig.listener.accept().unwrap();
        let step = drive_until(&mut f, &mut rig, |s, _| s.done);
        assert_eq!(step.reply.unwrap().status, 504);
    }

    /// An https peer that accepts the connection and never answers the handshake: 504 after
    /// the connect timeout (the handshake counts against it), not the response timeout; one
    /// that answers the handshake with plain HTTP: 502 naming TLS.
    #[test]
    fn a_silent_tls_peer_times_out_as_a_connect_and_a_plain_one_is_a_tls_failure() {
        let pki = crate::tls::test_pki::Pki::new();
        let mut rig = Rig::new("tls");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = |connect_ms: u64| {
            Rc::new(Peer {
                name: "b".into(),
                url: PeerUrl::Https {
                    host: "127.0.0.1".into(),
                    port,
                },
                addrs: Ok(vec![listener.local_addr().unwrap()]),
                token: None,
                tls: Some(crate::tls::client_config(Some(&pki.path("ca.pem")), None).unwrap()),
                connect_timeout: Duration::from_millis(connect_ms),
                response_timeout: Duration::from_secs(60),
            })
        };
        let mut req = crate::ops::decode::testing::request(Method::Get, "site=b", &[], b"");
        req.path = "/v1/state/applications/a/service-instances".into();
        let out = Outgoing {
            req: &req,
            token: None,
            forwarded_for: "admin@a".into(),
            hops: 0,
        };
        let t0 = Instant::now();
        let mut f = Forward::start(Token(1), peer(200), &out, Format::Json, &mut rig.io()).unwrap();
        let (_held, _) = listener.accept().unwrap();
        let step = drive_until(&mut f, &mut rig, |s, _| s.done);
        let r = step.reply.expect("an error answer");
        let body = String::from_utf8(r.body).unwrap();
        assert_eq!(r.status, 504, "{body}");
        assert!(
            body.contains("did not complete the TLS handshake"),
            "{body}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));

        let mut f =
            Forward::start(Token(1), peer(5000), &out, Format::Json, &mut rig.io()).unwrap();
        let (mut plain, _) = listener.accept().unwrap();
        plain
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        let step = drive_until(&mut f, &mut rig, |s, _| s.done);
        let r = step.reply.expect("an error answer");
        let body = String::from_utf8(r.body).unwrap();
        assert_eq!(r.status, 502, "{body}");
        assert!(body.contains("TLS handshake failed"), "{body}");
    }

    /// A client over TLS that reads slower than the peer sends: when the last of the answer
    /// has gone into rustls, records it holds (the socket full) must still reach the client
    /// before its connection is shut, and the end is a close_notify, not a cut.
    #[test]
    fn a_slow_tls_client_gets_the_whole_answer_before_its_connection_is_shut() {
        const BODY: usize = 1 << 20;
        let pki = crate::tls::test_pki::Pki::new();
        let mut rig = Rig::new("tlsclient");
        let mut req = crate::ops::decode::testing::request(Method::Get, "site=b", &[], b"");
        req.path = "/v1/state/applications/a/service-instances".into();
        req.keep_alive = false;
        let out = Outgoing {
            req: &req,
            token: None,
            forwarded_for: "admin@a".into(),
            hops: 0,
        };
        let mut f =
            Forward::start(Token(1), rig.peer(), &out, Format::Json, &mut rig.io()).unwrap();
        let (mut b, _) = rig.listener.accept().unwrap();
        let peer = std::thread::spawn(move || {
            let mut head = vec![0u8; 4096];
            let _ = b.read(&mut head).unwrap();
            b.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n").as_bytes())
                .unwrap();
            let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
            for _ in 0..BODY / chunk.len() {
                b.write_all(&chunk).unwrap();
            }
            b
        });
        drive_until(&mut f, &mut rig, |s, _| s.upgrade);

        // The client: handshake at once, then small, slow reads from a small socket, so that
        // the relay's writes meet a full socket all along, to the last one.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let config = crate::tls::client_config(Some(&pki.path("ca.pem")), None).unwrap();
        let client = std::thread::spawn(move || {
            let sock = std::net::TcpStream::connect(addr).unwrap();
            nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBuf, &16384).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let conn = rustls::ClientConnection::new(config, name).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock).unwrap();
            }
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let end = loop {
                match tls.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => break Err(e),
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            (got, end)
        });
        let (sock, _) = listener.accept().unwrap();
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::SndBuf, &16384).unwrap();
        sock.set_nonblocking(true).unwrap();
        let acceptor = crate::tls::Acceptor::load(&pki.listener("server", None)).unwrap();
        let stream = Stream::Tls(Box::new(
            acceptor
                .accept(mio::net::TcpStream::from_std(sock))
                .unwrap(),
        ));
        f.attach(
            Token(1),
            stream,
            "test".into(),
            Vec::new(),
            Vec::new(),
            &mut rig.io(),
        )
        .unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        while !f.drive(Token(1), None, &mut rig.io()).done {
            assert!(Instant::now() < until, "no end");
            std::thread::sleep(Duration::from_millis(1));
        }
        let (got, end) = client.join().unwrap();
        end.expect("a clean end (close_notify)");
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert_eq!(got.len() - head_end, BODY);
        drop(peer.join().unwrap());
    }

    /// One plain HTTP exchange through the relay: the peer answers `answer` (then closes);
    /// the error answer, if any, or everything the client got (to its end, or to the
    /// handback).
    fn exchange(req: &Request, answer: &[u8]) -> (Option<Response>, Vec<u8>, bool) {
        let mut rig = Rig::new("exchange");
        let out = Outgoing {
            req,
            token: None,
            forwarded_for: "admin@a".into(),
            hops: 0,
        };
        let mut f =
            Forward::start(Token(1), rig.peer(), &out, Format::Json, &mut rig.io()).unwrap();
        let (mut b, _) = rig.listener.accept().unwrap();
        drive_until(&mut f, &mut rig, |_, f| f.to_peer.len() == 0);
        let mut head = vec![0u8; 4096];
        let _ = b.read(&mut head).unwrap();
        b.write_all(answer).unwrap();
        drop(b);
        let step = drive_until(&mut f, &mut rig, |s, _| s.upgrade || s.done);
        if !step.upgrade {
            return (step.reply, Vec::new(), false);
        }
        let (ours, mut client) = mio::net::UnixStream::pair().unwrap();
        f.attach(
            Token(1),
            Stream::Unix(ours),
            "test".into(),
            Vec::new(),
            Vec::new(),
            &mut rig.io(),
        )
        .unwrap();
        let step = drive_until(&mut f, &mut rig, |s, f| s.done || f.client_shut);
        let handback = step.handback;
        if handback {
            // Keep the client's connection open while reading what it got.
            let (c, _, _) = f.take_client(&mut rig.io()).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = client.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            drop(c);
            return (None, got, true);
        }
        let got = read_to_eof(&mut client);
        drop(client);
        drive_until(&mut f, &mut rig, |s, _| s.done);
        (None, got, false)
    }

    fn get() -> Request {
        let mut req = crate::ops::decode::testing::request(Method::Get, "site=b", &[], b"");
        req.path = "/v1/state/applications/a/service-instances".into();
        req
    }

    /// Interim answers are skipped: the client gets the final one, and its connection
    /// carries on after it; a 101 to a request that asked for no upgrade is a bad answer.
    #[test]
    fn interim_answers_are_skipped_and_an_unasked_101_is_a_502() {
        let (reply, got, handback) = exchange(
            &get(),
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nfinal answer",
        );
        assert!(reply.is_none());
        let text = String::from_utf8_lossy(&got);
        assert!(handback, "{text}");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nfinal answer"), "{text}");
        assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");

        let (reply, _, _) = exchange(
            &get(),
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nfinal answer",
        );
        assert_eq!(reply.expect("an error answer").status, 502);

        let many = "HTTP/1.1 100 Continue\r\n\r\n".repeat(wire::MAX_INTERIM as usize + 1);
        let (reply, _, _) = exchange(
            &get(),
            format!("{many}HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        );
        assert_eq!(reply.expect("an error answer").status, 502);
    }

    /// An HTTP/1.0 client gets a chunked answer decoded, ended by the close.
    #[test]
    fn an_http10_client_gets_a_chunked_body_decoded_and_closed() {
        let mut req = get();
        req.minor = 0;
        req.keep_alive = true;
        let (reply, got, handback) = exchange(
            &req,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\n[\"hi\"\r\n1\r\n]\r\n0\r\n\r\n",
        );
        assert!(reply.is_none());
        assert!(!handback);
        let text = String::from_utf8_lossy(&got);
        assert!(text.ends_with("\r\n\r\n[\"hi\"]"), "{text}");
        assert!(!text.contains("transfer-encoding"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        // A 1.1 client still gets it chunked.
        let (_, got, _) = exchange(
            &get(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        );
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.ends_with("transfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"),
            "{text}"
        );
    }

    /// A forwarded websocket whose client reads nothing while the peer sends, then goes: the
    /// buffer towards the client fills (the peer is no longer read, so its end is not seen),
    /// and the client is dropped after the write timeout, as a local session's would be.
    #[test]
    fn a_websocket_client_that_reads_nothing_is_dropped_after_the_write_timeout() {
        let mut rig = Rig::new("wsstall");
        rig.cfg.limits.write_timeout = Duration::from_millis(200);
        let req = ws_request();
        let out = Outgoing {
            req: &req,
            token: None,
            forwarded_for: "admin@a".into(),
            hops: 0,
        };
        let mut f =
            Forward::start(Token(1), rig.peer(), &out, Format::Json, &mut rig.io()).unwrap();
        let (mut b, _) = rig.listener.accept().unwrap();
        drive_until(&mut f, &mut rig, |_, f| f.to_peer.len() == 0);
        let mut head = vec![0u8; 4096];
        let _ = b.read(&mut head).unwrap();
        b.write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(KEY)
            )
            .as_bytes(),
        )
        .unwrap();
        drive_until(&mut f, &mut rig, |s, _| s.upgrade);
        let (ours, _client) = mio::net::UnixStream::pair().unwrap();
        f.attach(
            Token(1),
            Stream::Unix(ours),
            "test".into(),
            Vec::new(),
            Vec::new(),
            &mut rig.io(),
        )
        .unwrap();
        // The peer sends frames until nothing more is taken, then is gone.
        b.set_nonblocking(true).unwrap();
        let mut frame = vec![0x82, 126, 0xff, 0xff];
        frame.extend(std::iter::repeat_n(b'x', 0xffff));
        let mut stuck = 0;
        while stuck < 50 {
            match b.write(&frame) {
                Ok(n) if n == frame.len() => stuck = 0,
                Ok(n) => {
                    frame.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => stuck += 1,
                Err(e) => panic!("peer write: {e}"),
            }
            let _ = f.drive(Token(1), None, &mut rig.io());
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(f.to_client.room(), 0);
        drop(b);
        let t0 = Instant::now();
        drive_until(&mut f, &mut rig, |s, _| s.done);
        assert!(t0.elapsed() < Duration::from_millis(900));
    }

    /// supd stopping while a forward waits for its peer: the peer's answer, when it comes
    /// within the grace, still reaches the client; a peer that stays silent gets the client
    /// a 503 within the grace (not the response timeout, not silence).
    #[test]
    fn a_forward_in_flight_when_supd_stops_is_answered() {
        let mut rig = Rig::new("stop");
        let req = get();
        let out = Outgoing {
            req: &req,
            token: None,
            forwarded_for: "admin@a".into(),
            hops: 0,
        };
        let mut f =
            Forward::start(Token(1), rig.peer(), &out, Format::Json, &mut rig.io()).unwrap();
        let (mut b, _) = rig.listener.accept().unwrap();
        drive_until(&mut f, &mut rig, |_, f| f.to_peer.len() == 0);
        f.shutdown(Token(1), &mut rig.io());
        let step = f.drive(Token(1), None, &mut rig.io());
        assert!(!step.done && step.reply.is_none());
        b.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        let step = drive_until(&mut f, &mut rig, |s, _| s.upgrade || s.done);
        assert!(step.upgrade, "the peer's answer is relayed");
        let (ours, mut client) = mio::net::UnixStream::pair().unwrap();
        f.attach(
            Token(1),
            Stream::Unix(ours),
            "test".into(),
            Vec::new(),
            Vec::new(),
            &mut rig.io(),
        )
        .unwrap();
        drive_until(&mut f, &mut rig, |s, _| s.done);
        std::thread::sleep(Duration::from_millis(20));
        let mut got = vec![0u8; 4096];
        let n = client.read(&mut got).unwrap();
        assert!(got[..n].ends_with(b"\r\n\r\nok"));

        let mut peer = rig.peer();
        Rc::get_mut(&mut peer).unwrap().response_timeout = Duration::from_secs(600);
        let mut f = Forward::start(Token(1), peer, &out, Format::Json, &mut rig.io()).unwrap();
        let (_silent, _) = rig.listener.accept().unwrap();
        drive_until(&mut f, &mut rig, |_, f| f.to_peer.len() == 0);
        let t0 = Instant::now();
        f.shutdown(Token(1), &mut rig.io());
        let step = loop {
            let step = f.drive(Token(1), None, &mut rig.io());
            if step.done {
                break step;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(4),
                "no answer within the grace"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let r = step.reply.expect("an answer");
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    }
}
