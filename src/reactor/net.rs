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
}

impl ByteStream for Stream {
    fn holds_output(&self) -> bool {
        match self {
            Stream::Tls(s) => s.holds_output(),
            Stream::Tcp(_) | Stream::Unix(_) => false,
        }
    }
}

impl ByteStream for UnixStream {}

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
