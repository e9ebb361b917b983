//! Listeners and client streams over TCP (plain or TLS) or unix sockets, as one type each,
//! and the `ByteStream` trait the connection types are generic over (so that they can be
//! unit-tested over a socket pair).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::config::{ListenAddr, ListenerTls};
use crate::tls::{self, Acceptor, TlsStream};

pub enum Listener {
    /// With an acceptor, TLS: connections are `Stream::Tls`, their handshakes driven by the
    /// loop.
    Tcp(TcpListener, Option<Box<Acceptor>>),
    Unix(UnixListener, Option<std::path::PathBuf>),
}

impl Listener {
    /// Bind a configured address. A unix socket path left over from an earlier run is removed
    /// first; its parent directory is created.
    pub(crate) fn bind(addr: &ListenAddr) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(sa) => Ok(Listener::Tcp(TcpListener::bind(*sa)?, None)),
            ListenAddr::Unix(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                Ok(Listener::Unix(
                    UnixListener::bind(path)?,
                    Some(path.clone()),
                ))
            }
        }
    }

    /// A new connection, its peer as logged, and the peer's IP address (None for a unix
    /// socket, whose peers are local processes).
    pub(crate) fn accept(&self) -> io::Result<(Stream, String, Option<IpAddr>)> {
        match self {
            Listener::Tcp(l, tls) => {
                let (s, peer) = l.accept()?;
                // Small interactive writes (keystrokes, 1-byte tunnels) must not wait for
                // Nagle's timer.
                s.set_nodelay(true)?;
                // A v4 client of a dual-stack socket is the same peer as over v4.
                let ip = peer.ip().to_canonical();
                let stream = match tls {
                    Some(acceptor) => Stream::Tls(Box::new(acceptor.accept(s)?)),
                    None => Stream::Tcp(s),
                };
                Ok((stream, peer.to_string(), Some(ip)))
            }
            Listener::Unix(l, _) => {
                let (s, _) = l.accept()?;
                Ok((Stream::Unix(s), "unix".to_string(), None))
            }
        }
    }

    /// Serve TLS on a TCP listener with the certificates in `files`.
    pub(crate) fn with_tls(mut self, files: &ListenerTls) -> Result<Listener, tls::Error> {
        if let Listener::Tcp(_, tls) = &mut self {
            *tls = Some(Box::new(Acceptor::load(files)?));
        }
        Ok(self)
    }

    /// The local address of a TCP listener.
    pub(crate) fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Listener::Tcp(l, _) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    /// The TLS side, for a reload.
    pub(crate) fn acceptor_mut(&mut self) -> Option<&mut Acceptor> {
        match self {
            Listener::Tcp(_, Some(a)) => Some(a),
            _ => None,
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Listener::Tcp(l, tls) => {
                let tls = if tls.is_some() { " (TLS)" } else { "" };
                l.local_addr()
                    .map(|a| format!("{a}{tls}"))
                    .unwrap_or_else(|_| format!("tcp{tls}"))
            }
            Listener::Unix(_, p) => format!(
                "unix:{}",
                p.as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, Some(path)) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Source for Listener {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l, _) => l.register(r, t, i),
            Listener::Unix(l, _) => l.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l, _) => l.reregister(r, t, i),
            Listener::Unix(l, _) => l.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l, _) => l.deregister(r),
            Listener::Unix(l, _) => l.deregister(r),
        }
    }
}

/// What a connection needs of its byte stream: non-blocking reads and writes, registration
/// with the poller, and closing its sending side. `Stream` in the daemon; a socket pair
/// (mio's `UnixStream::pair`) in unit tests.
pub(crate) trait ByteStream: Read + Write + Source {
    /// The stream holds written bytes the socket has not taken (TLS records inside rustls):
    /// `flush` until it does not, before closing. A plain socket never does.
    fn holds_output(&self) -> bool {
        false
    }

    /// Tell a TLS peer the stream ends on purpose (best effort, before closing it), so that a
    /// client reading until the end can tell it from a cut; nothing for a plain stream.
    fn close_notify(&mut self) {}
}

impl ByteStream for Stream {
    fn holds_output(&self) -> bool {
        match self {
            Stream::Tls(s) => s.holds_output(),
            Stream::Tcp(_) | Stream::Unix(_) => false,
        }
    }

    fn close_notify(&mut self) {
        if let Stream::Tls(s) = self {
            s.close_notify();
        }
    }
}

impl ByteStream for UnixStream {}

/// TLS over a socket pair, for the connection's unit tests.
#[cfg(test)]
impl ByteStream for TlsStream<UnixStream> {
    fn holds_output(&self) -> bool {
        TlsStream::holds_output(self)
    }
}

/// A client connection's byte stream.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    /// Boxed: rustls' connection state is a few KiB, the other variants a descriptor.
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl Stream {
    /// The client side of TLS over a connected (or connecting) non-blocking TCP stream to a
    /// peer whose URL host is `host` (its certificate must name it; the SNI). The handshake
    /// runs as the stream is read and written.
    pub(crate) fn tls_client(
        sock: TcpStream,
        config: std::sync::Arc<rustls::ClientConfig>,
        host: &str,
    ) -> Result<Stream, tls::Error> {
        Ok(Stream::Tls(Box::new(TlsStream::client(
            sock, config, host,
        )?)))
    }

    /// Close one direction; a TLS stream first sends close_notify (best effort) when its
    /// sending side closes.
    pub(crate) fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Tls(s) => {
                if how != Shutdown::Read {
                    s.close_notify();
                }
                s.get_ref().shutdown(how)
            }
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Tls(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }
    /// `WouldBlock` while a TLS stream holds records the socket has not taken.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            Stream::Tcp(_) | Stream::Unix(_) => Ok(()),
        }
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Tls(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Tls(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Tls(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

impl From<crate::systemd::ListenFd> for Listener {
    fn from(fd: crate::systemd::ListenFd) -> Listener {
        // Inherited sockets may be blocking; the loop needs them non-blocking.
        match fd {
            crate::systemd::ListenFd::Tcp(l) => {
                let _ = l.set_nonblocking(true);
                Listener::Tcp(TcpListener::from_std(l), None)
            }
            crate::systemd::ListenFd::Unix(l) => {
                let _ = l.set_nonblocking(true);
                // Not ours to remove on exit: systemd owns the path.
                Listener::Unix(UnixListener::from_std(l), None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use mio::{Events, Poll};

    use super::*;
    use crate::tls::test_pki::Pki;

    /// A TLS listener and a TLS client over loopback TCP, both driven only by the readiness
    /// events of one edge-triggered poller, as the daemon drives them: the handshake needs no
    /// interest the application asked for, and a 16 MiB answer (more than loopback buffers
    /// hold: the writer needs writable edges) arrives whole while both sides read until
    /// `WouldBlock` and write what the socket takes.
    #[test]
    fn tls_over_loopback_driven_by_readiness_events() {
        let pki = Pki::new();
        let listener = Listener::bind(&ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()))
            .unwrap()
            .with_tls(&pki.listener("server", None))
            .unwrap();
        assert!(listener.describe().ends_with("(TLS)"));
        let addr = listener.tcp_addr().unwrap();
        let mut listener = listener;
        let mut poll = Poll::new().unwrap();
        poll.registry()
            .register(&mut listener, Token(0), Interest::READABLE)
            .unwrap();
        let config = tls::client_config(Some(&pki.path("ca.pem")), None).unwrap();
        let mut client =
            Stream::tls_client(TcpStream::connect(addr).unwrap(), config, "localhost").unwrap();
        // The application only wants to read; the handshake must still get written.
        poll.registry()
            .register(&mut client, Token(1), Interest::READABLE)
            .unwrap();
        let request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let answer: Vec<u8> = (0..16 << 20).map(|i: u32| (i % 253) as u8).collect();
        let (mut server, mut to_write, mut got_req, mut got) = (None, 0, Vec::new(), Vec::new());
        let mut req_left: &[u8] = request;
        let mut events = Events::with_capacity(16);
        let mut buf = vec![0u8; 8192];
        let deadline = Instant::now() + Duration::from_secs(20);
        // Each side does its work only when an event names it, as in the daemon.
        let mut client_turn = |client: &mut Stream, req_left: &mut &[u8], got: &mut Vec<u8>| {
            while !req_left.is_empty() {
                match client.write(req_left) {
                    Ok(n) => *req_left = &req_left[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("client write: {e}"),
                }
            }
            let _ = client.flush();
            loop {
                match client.read(&mut buf) {
                    Ok(0) => panic!("client: end of stream"),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("client read: {e}"),
                }
            }
        };
        // The request is written before the connection is even established.
        client_turn(&mut client, &mut req_left, &mut got);
        let mut sbuf = vec![0u8; 8192];
        while got.len() < answer.len() {
            assert!(Instant::now() < deadline, "stalled: {} bytes", got.len());
            poll.poll(&mut events, Some(Duration::from_secs(5)))
                .unwrap();
            assert!(!events.is_empty(), "no event for 5 s: {} bytes", got.len());
            for ev in events.iter() {
                match ev.token() {
                    Token(0) => {
                        if let Ok((mut s, _, _)) = listener.accept() {
                            // The application wants the request first: readable only.
                            poll.registry()
                                .register(&mut s, Token(2), Interest::READABLE)
                                .unwrap();
                            server = Some(s);
                        }
                    }
                    Token(1) => client_turn(&mut client, &mut req_left, &mut got),
                    _ => {}
                }
                let Some(s) = server.as_mut() else { continue };
                if ev.token() != Token(2) && ev.token() != Token(0) {
                    continue;
                }
                loop {
                    match s.read(&mut sbuf) {
                        Ok(0) => break,
                        Ok(n) => got_req.extend_from_slice(&sbuf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("server read: {e}"),
                    }
                }
                if got_req.len() == request.len() {
                    while to_write < answer.len() {
                        match s.write(&answer[to_write..]) {
                            Ok(n) => to_write += n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => panic!("server write: {e}"),
                        }
                    }
                    let _ = s.flush();
                }
            }
        }
        assert_eq!(got_req, request);
        assert!(got == answer, "the answer differs");
        let server = server.unwrap();
        assert!(!server.holds_output());
        // The TLS stream keeps rustls' records bounded: its holds are flushed by now.
        assert!(!client.holds_output());
    }
}
