//! The client side of a websocket operation: the upgraded connection, its 101 head, pings,
//! and the close handshake, driven by the loop's readiness events.

use std::time::{Duration, Instant};

use mio::{Interest, Token};
use tungstenite::Bytes;

use super::{Io, Role};
use crate::reactor::net::{ByteStream, Stream};
use crate::ws::session::{self, Incoming, Session};

/// A peer that does not answer our close within this long is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A fragmented message must be finished within this long of its first fragment: until
/// then tungstenite holds it, and pongs between fragments would keep it for ever.
pub(crate) const FRAGMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How `WsClient::forward` stopped.
#[derive(Debug)]
pub(crate) enum Forwarded {
    /// Nothing more to read now, the client is full, or the turn is over: wait for events.
    Paused,
    /// The source ended.
    Ended,
    /// The source failed.
    Failed(std::io::Error),
}

pub(crate) struct WsClient<S: ByteStream = Stream> {
    pub(crate) session: Session<S>,
    token: Token,
    pub(crate) peer: String,
    ping_interval: Duration,
    ping_timeout: Duration,
    idle_timeout: Option<Duration>,
    next_ping: Instant,
    last_activity: Instant,
    close_sent: Option<Instant>,
    /// The unfinished message a fragment timer is set for (`Session::partial_since`).
    partial_armed: Option<Instant>,
    /// The operation stopped reading (its sink was full): no fragment timeout meanwhile.
    paused: bool,
    /// Set when the session can no longer be used (error, close complete, timeout).
    pub(crate) dead: bool,
}

pub(crate) enum Event {
    /// A binary message, as tungstenite unmasked it in its own buffer (not copied again).
    Message(Bytes),
    /// A text frame: not part of any supd protocol.
    Text,
    /// The peer closed (its close is answered).
    Closed,
}

/// What an operation does with the frames its client sends: see [`WsClient::read_frames`].
pub(crate) trait FrameSink {
    /// Asked before each read: whether the operation takes another message now (its buffers
    /// are below their limits, it is not closing). It may first move what it holds onward.
    fn ready(&mut self) -> bool;

    /// A binary message: the operation's protocol decides what it holds.
    fn message(&mut self, client: &mut WsClient, me: Token, io: &mut Io<'_>, data: Bytes);

    /// A text frame, which no supd protocol has: the client has been sent a close (1003).
    fn text(&mut self, _client: &mut WsClient, _me: Token, _io: &mut Io<'_>) {}

    /// The client closed (its close is answered); nothing more is read this turn.
    fn closed(&mut self, me: Token, io: &mut Io<'_>);
}

/// The frame loop is for the daemon's own stream type (the sinks are the operations).
impl WsClient {
    /// Reads the client's messages and hands each to `sink`, while the sink is ready for more
    /// and a complete message is there: the one read loop of every websocket operation.
    /// `text_reason` goes with the 1003 close that a text frame gets.
    pub(crate) fn read_frames(
        &mut self,
        me: Token,
        io: &mut Io<'_>,
        text_reason: &str,
        sink: &mut impl FrameSink,
    ) {
        loop {
            if !sink.ready() {
                // Not reading: a message left unfinished meanwhile is not the peer's fault.
                self.paused = true;
                return;
            }
            if self.paused {
                self.paused = false;
                // Reading again: the unfinished message (if any) gets its timer again.
                self.partial_armed = None;
            }
            let Some(event) = self.read() else {
                // One timer per unfinished message (not one per read), and none once closing.
                let since = self.session.partial_since();
                if since != self.partial_armed {
                    self.partial_armed = since;
                    if let Some(since) = since
                        && self.close_sent.is_none()
                    {
                        io.wake_at(me, since + FRAGMENT_TIMEOUT);
                    }
                }
                return;
            };
            match event {
                Event::Message(data) => sink.message(self, me, io, data),
                Event::Text => {
                    self.close(me, 1003, text_reason, io);
                    sink.text(self, me, io);
                }
                Event::Closed => {
                    sink.closed(me, io);
                    return;
                }
            }
        }
    }
}

impl<S: ByteStream> WsClient<S> {
    pub(crate) fn attach(
        me: Token,
        mut stream: S,
        peer: String,
        head: Vec<u8>,
        leftover: Vec<u8>,
        io: &mut Io<'_>,
    ) -> std::io::Result<WsClient<S>> {
        let ws = &io.cfg.ws;
        let limits = session::Limits {
            max_message: ws.max_message,
            max_frame: ws.max_frame,
            write_buffer: ws.write_buffer,
            // tungstenite keeps (and zero-fills) this much per socket for the session's life,
            // idle or not; 4 KiB keeps 10,000 idle websockets well under 100 MiB and still
            // reads a 64 KiB frame in 16 reads.
            read_buffer: 4 * 1024,
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        let token = io.register(me, Role::Client, &mut stream, interest)?;
        let now = Instant::now();
        let client = WsClient {
            // The head (and anything queued before it) leads the session's one output queue.
            session: Session::with_preface(stream, head, leftover, &limits),
            token,
            peer,
            ping_interval: ws.ping_interval,
            ping_timeout: ws
                .ping_timeout
                .unwrap_or(ws.ping_interval * 2 + ws.ping_interval / 2),
            idle_timeout: ws.idle_timeout,
            next_ping: now + ws.ping_interval,
            last_activity: now,
            close_sent: None,
            partial_armed: None,
            paused: false,
            dead: false,
        };
        io.wake_at(me, client.next_ping);
        Ok(client)
    }

    /// Read the next message, if one is complete. Errors kill the session (after queueing the
    /// close frame a protocol error calls for).
    pub(crate) fn read(&mut self) -> Option<Event> {
        if self.dead {
            return None;
        }
        match self.session.read() {
            Ok(None) => None,
            Ok(Some(Incoming::Binary(b))) => {
                self.last_activity = Instant::now();
                Some(Event::Message(b))
            }
            Ok(Some(Incoming::Text(_))) => {
                self.last_activity = Instant::now();
                Some(Event::Text)
            }
            Ok(Some(Incoming::Closed { .. })) => Some(Event::Closed),
            Err(session::Error::Protocol {
                close_code, reason, ..
            }) => {
                log::info!(
                    "{}: websocket protocol error {close_code}: {reason}",
                    self.peer
                );
                // The close frame is queued; flush it, then drop the connection.
                let _ = self.flush();
                self.dead = true;
                None
            }
            Err(e) => {
                log::debug!("{}: websocket: {e}", self.peer);
                self.dead = true;
                None
            }
        }
    }

    /// Queue a binary message. `false`: not queued, the caller must hold its data and stop
    /// reading its source until `can_send`. A dead or closing session takes (drops) it.
    pub(crate) fn send(&mut self, data: &[u8]) -> bool {
        if self.dead || self.close_sent.is_some() {
            return true;
        }
        match self.session.send_binary(data) {
            Ok(queued) => queued,
            Err(e) => {
                log::debug!("{}: websocket send: {e}", self.peer);
                self.dead = true;
                true
            }
        }
    }

    pub(crate) fn can_send(&self) -> bool {
        !self.dead && self.session.can_send()
    }

    /// Start the close handshake.
    pub(crate) fn close(&mut self, me: Token, code: u16, reason: &str, io: &mut Io<'_>) {
        if self.close_sent.is_some() || self.dead {
            return;
        }
        if self.session.close(code, reason).is_err() {
            self.dead = true;
            return;
        }
        let now = Instant::now();
        self.close_sent = Some(now);
        io.wake_at(me, now + CLOSE_TIMEOUT);
    }

    pub(crate) fn closing(&self) -> bool {
        self.close_sent.is_some()
    }

    /// Write the head, then queued frames. Ok(true) when everything is out.
    pub(crate) fn flush(&mut self) -> std::io::Result<bool> {
        match self.session.flush() {
            Ok(done) => Ok(done),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    /// Flush, and mark the session dead if the socket broke or the close handshake is over.
    pub(crate) fn pump(&mut self) {
        if self.dead {
            return;
        }
        if self.flush().is_err() {
            self.dead = true;
        }
        if self.session.is_closed() && !self.session.wants_write() {
            self.dead = true;
        }
    }

    /// Send the frame the client refused last time, if any: false while it still refuses.
    pub(crate) fn send_held(&mut self, held: &mut Option<Vec<u8>>) -> bool {
        self.pump();
        match held.take() {
            Some(data) if !self.send(&data) => {
                *held = Some(data);
                false
            }
            _ => true,
        }
    }

    /// Move what `read` yields to the client, a frame per read (at most `chunk` bytes), while
    /// the client accepts more. `read` answers `Ok(None)` at the end of its source. A frame the
    /// client refuses is kept in `held` and goes first next time. After 16 frames `me` is woken
    /// again at once instead, so that one busy source cannot starve the other sessions.
    pub(crate) fn forward(
        &mut self,
        me: Token,
        io: &mut Io<'_>,
        held: &mut Option<Vec<u8>>,
        chunk: usize,
        mut read: impl FnMut(&mut [u8]) -> std::io::Result<Option<usize>>,
    ) -> Forwarded {
        if !self.send_held(held) {
            return Forwarded::Paused;
        }
        let mut buf = io.take_scratch();
        let chunk = chunk.min(buf.len());
        let mut frames = 0;
        let end = loop {
            if !self.can_send() {
                break Forwarded::Paused;
            }
            if frames >= 16 {
                io.wake_at(me, Instant::now());
                break Forwarded::Paused;
            }
            match read(&mut buf[..chunk]) {
                Ok(None) => break Forwarded::Ended,
                Ok(Some(n)) => {
                    frames += 1;
                    if !self.send(&buf[..n]) {
                        *held = Some(buf[..n].to_vec());
                        break Forwarded::Paused;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Forwarded::Paused,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Forwarded::Failed(e),
            }
        };
        io.put_scratch(buf);
        self.pump();
        end
    }

    /// Timer work: pings, ping timeout, idle timeout, close timeout.
    pub(crate) fn on_timer(&mut self, me: Token, io: &mut Io<'_>) {
        if self.dead {
            return;
        }
        let now = Instant::now();
        if let Some(sent) = self.close_sent {
            if now >= sent + CLOSE_TIMEOUT {
                self.dead = true;
            }
            return;
        }
        let seen = self.session.last_seen().max(self.last_activity);
        // A peer that answered none of the recent pings is gone (vanished without a close).
        if now >= seen + self.ping_timeout {
            log::info!("{}: no answer to pings, dropping the session", self.peer);
            self.dead = true;
            return;
        }
        if let Some(idle) = self.idle_timeout
            && now >= self.last_activity + idle
        {
            self.close(me, 1000, "idle timeout", io);
            return;
        }
        let partial = self.session.partial_since().filter(|_| !self.paused);
        if partial.is_some_and(|since| now >= since + FRAGMENT_TIMEOUT) {
            log::info!("{}: fragmented message unfinished, closing", self.peer);
            self.close(me, 1008, "message unfinished after 10 s", io);
            return;
        }
        if now >= self.next_ping {
            if self.session.ping().is_err() {
                self.dead = true;
                return;
            }
            self.next_ping = now + self.ping_interval;
        }
        let mut next = self.next_ping.min(seen + self.ping_timeout);
        if let Some(idle) = self.idle_timeout {
            next = next.min(self.last_activity + idle);
        }
        if let Some(since) = partial {
            next = next.min(since + FRAGMENT_TIMEOUT);
        }
        io.wake_at(me, next);
    }

    pub(crate) fn release(&mut self, io: &mut Io<'_>) {
        self.session.get_mut().close_notify();
        io.deregister(self.token, self.session.get_mut());
    }
}

/// The websocket client side over a socket pair: no daemon, no Docker, no root.
#[cfg(test)]
mod tests {
    use std::io::{self, Read, Write};

    use mio::net::UnixStream;

    use super::*;
    use crate::config::Config;
    use crate::reactor::Reactor;

    const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";

    /// A masked binary frame, as a client sends it.
    fn client_frame(payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut f = vec![0x82];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// Unmasked server frames in `bytes`: (opcode, payload).
    fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while bytes.len() >= 2 {
            let op = bytes[0] & 0x0f;
            let (len, at) = match bytes[1] & 0x7f {
                126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            assert!(bytes.len() >= at + len, "truncated frame");
            out.push((op, bytes[at..at + len].to_vec()));
            bytes = &bytes[at + len..];
        }
        assert!(bytes.is_empty());
        out
    }

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

    fn attached(
        reactor: &mut Reactor,
        cfg: &Config,
        leftover: Vec<u8>,
    ) -> (WsClient<UnixStream>, UnixStream) {
        let (ours, peer) = UnixStream::pair().unwrap();
        let mut io = Io::new(reactor, cfg);
        let c = WsClient::attach(
            Token(1),
            ours,
            "test".into(),
            HEAD.to_vec(),
            leftover,
            &mut io,
        );
        (c.unwrap(), peer)
    }

    fn message(c: &mut WsClient<UnixStream>) -> Option<Vec<u8>> {
        match c.read() {
            Some(Event::Message(b)) => Some(b.to_vec()),
            None => None,
            Some(_) => panic!("not a binary message"),
        }
    }

    #[test]
    fn the_101_goes_out_before_any_frame() {
        let (mut reactor, cfg) = (Reactor::new(1).unwrap(), Config::default());
        let (mut c, mut peer) = attached(&mut reactor, &cfg, Vec::new());
        assert!(c.send(b"hi"));
        c.pump();
        assert!(!c.dead);
        let got = drain(&mut peer);
        assert!(got.starts_with(HEAD), "{got:?}");
        assert_eq!(server_frames(&got[HEAD.len()..]), [(2, b"hi".to_vec())]);
    }

    #[test]
    fn a_frame_split_across_reads() {
        let (mut reactor, cfg) = (Reactor::new(1).unwrap(), Config::default());
        let payload: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
        let frame = client_frame(&payload);
        // Its first bytes came with the HTTP request (the leftover of the upgrade).
        let (mut c, mut peer) = attached(&mut reactor, &cfg, frame[..3].to_vec());
        assert_eq!(message(&mut c), None);
        for (i, b) in frame[3..].iter().enumerate() {
            assert_eq!(message(&mut c), None, "complete after {} bytes", i + 3);
            peer.write_all(&[*b]).unwrap();
        }
        assert_eq!(message(&mut c).as_deref(), Some(payload.as_slice()));
        assert!(!c.dead);
        // Two frames in one read come out one by one.
        peer.write_all(&[client_frame(b"a"), client_frame(b"b")].concat())
            .unwrap();
        assert_eq!(message(&mut c).as_deref(), Some(&b"a"[..]));
        assert_eq!(message(&mut c).as_deref(), Some(&b"b"[..]));
        assert_eq!(message(&mut c), None);
    }

    #[test]
    fn a_full_socket_holds_frames_until_the_peer_reads() {
        let (mut reactor, cfg) = (Reactor::new(1).unwrap(), Config::default());
        let (mut c, mut peer) = attached(&mut reactor, &cfg, Vec::new());
        let chunk = vec![7u8; 60 * 1024];
        let mut sent = 0;
        // Until the socket buffer is full and the session's queue over its limit.
        while c.send(&chunk) {
            c.pump();
            sent += 1;
            assert!(sent < 1000, "never refused");
        }
        assert!(!c.can_send());
        assert!(!c.flush().unwrap(), "the socket took everything");
        assert!(!c.dead);
        // The peer reads; flushing resumes where the socket stopped, then sending again.
        let mut got = Vec::new();
        let mut rounds = 0;
        while !c.can_send() || c.session.wants_write() {
            got.extend(drain(&mut peer));
            c.pump();
            rounds += 1;
            assert!(rounds < 10_000);
        }
        assert!(c.send(b"end"));
        c.pump();
        got.extend(drain(&mut peer));
        assert!(got.starts_with(HEAD));
        let frames = server_frames(&got[HEAD.len()..]);
        assert_eq!(frames.len(), sent + 1);
        assert!(frames[..sent].iter().all(|(op, p)| *op == 2 && *p == chunk));
        assert_eq!(frames[sent], (2, b"end".to_vec()));
    }
}
