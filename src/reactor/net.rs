//! Listeners and client streams over TCP or unix sockets, as one type each, and the
//! `ByteStream` trait the connection types are generic over (so that they can be unit-tested
//! over a socket pair).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::config::ListenAddr;

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, Option<std::path::PathBuf>),
}

impl Listener {
    /// Bind a configured address. A unix socket path left over from an earlier run is removed
    /// first; its parent directory is created.
    pub(crate) fn bind(addr: &ListenAddr) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(sa) => Ok(Listener::Tcp(TcpListener::bind(*sa)?)),
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
            Listener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                // Small interactive writes (keystrokes, 1-byte tunnels) must not wait for
                // Nagle's timer.
                s.set_nodelay(true)?;
                // A v4 client of a dual-stack socket is the same peer as over v4.
                let ip = peer.ip().to_canonical();
                Ok((Stream::Tcp(s), peer.to_string(), Some(ip)))
            }
            Listener::Unix(l, _) => {
                let (s, _) = l.accept()?;
                Ok((Stream::Unix(s), "unix".to_string(), None))
            }
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp".into()),
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
            Listener::Tcp(l) => l.register(r, t, i),
            Listener::Unix(l, _) => l.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.reregister(r, t, i),
            Listener::Unix(l, _) => l.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.deregister(r),
            Listener::Unix(l, _) => l.deregister(r),
        }
    }
}

/// What a connection needs of its byte stream: non-blocking reads and writes, registration
/// with the poller, and closing its sending side. `Stream` in the daemon; a socket pair
/// (mio's `UnixStream::pair`) in unit tests.
pub(crate) trait ByteStream: Read + Write + Source {}

impl ByteStream for Stream {}

impl ByteStream for UnixStream {}

/// A client connection's byte stream.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
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
                Listener::Tcp(TcpListener::from_std(l))
            }
            crate::systemd::ListenFd::Unix(l) => {
                let _ = l.set_nonblocking(true);
                // Not ours to remove on exit: systemd owns the path.
                Listener::Unix(UnixListener::from_std(l), None)
            }
        }
    }
}
