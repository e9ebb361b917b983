//! `connect` (`v1.connect.supd`) and the deprecated `tcp-connect` (`v1.tcp-connect.supd`):
//! a TCP or UDP socket wired to a websocket.
//!
//! For `connect` the socket is created inside the instance's network namespace, so
//! `127.0.0.1` is the instance's own loopback. A TCP connect completes before the 101 is
//! sent, so a refused or unreachable target gets an HTTP error instead of an upgrade that
//! closes at once. Both directions have bounded buffers; a slow side pauses the other.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::Instant;

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Token};
use nix::sys::socket::{AddressFamily, SockType};

use tungstenite::Bytes;

use super::decode::{DecodeCtx, DecodeError, check_query, upgrade};
use super::wsclient::{Forwarded, FrameSink, WsClient};
use super::{Io, Progress, Reply, Role};
use crate::container;
use crate::http::query::Query;
use crate::http::request::Request;
use crate::http::router::{ContainerRef, Instance};
use crate::http::{ApiError, Format};
use crate::ws::handshake::Accepted;
use crate::ws::protocol;

/// Largest read from the socket per frame (and the UDP datagram limit, 65,507, fits).
const CHUNK: usize = 64 * 1024;
const _: () = assert!(CHUNK <= crate::reactor::SCRATCH);
/// Bytes from the client waiting for the socket beyond which the client is not read (and
/// the most its queued UDP datagrams may hold). Past it one more message may be added: a
/// session holds at most this plus `websocket: max-message` for its target.
const TO_SOCKET_LIMIT: usize = 64 * 1024;

enum Sock {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

pub(crate) struct Tunnel {
    client: Option<WsClient>,
    sock: Sock,
    sock_token: Token,
    /// TCP: the connect is in progress until this deadline.
    connecting: Option<Instant>,
    head: Vec<u8>,
    to_sock: Vec<u8>,
    /// UDP datagrams from the client not yet sent.
    datagrams: std::collections::VecDeque<Bytes>,
    held: Option<Vec<u8>>,
    /// Half-close requested by the client (empty frame).
    shut_write: bool,
    sock_eof: bool,
    /// Why the socket failed (reset, error): ends the session with 1011.
    sock_error: Option<String>,
    target: SocketAddr,
    format: Format,
    replied: bool,
    /// The HTTP client left before the upgrade: nobody will ever attach.
    gone: bool,
}

/// The client's messages are the stream's bytes (an empty one half-closes TCP) or the
/// datagrams.
impl FrameSink for Tunnel {
    fn ready(&mut self) -> bool {
        self.write_socket();
        self.to_sock.len() < TO_SOCKET_LIMIT
            && self.datagrams.len() < 64
            && self.datagrams.iter().map(Bytes::len).sum::<usize>() < TO_SOCKET_LIMIT
    }

    fn message(&mut self, _client: &mut WsClient, _me: Token, _io: &mut Io<'_>, data: Bytes) {
        match &mut self.sock {
            Sock::Tcp(_) if data.is_empty() => self.shut_write = true,
            // Nothing queued: straight from tungstenite's buffer to the socket, and only what
            // the socket did not take is copied.
            Sock::Tcp(s) if self.to_sock.is_empty() => match write_some(s, &data) {
                Ok(n) => self.to_sock.extend_from_slice(&data[n..]),
                Err(e) => {
                    self.sock_error.get_or_insert_with(|| e.to_string());
                }
            },
            Sock::Tcp(_) => self.to_sock.extend_from_slice(&data),
            Sock::Udp(_) => self.datagrams.push_back(data),
        }
    }

    fn closed(&mut self, _me: Token, _io: &mut Io<'_>) {
        if let Sock::Tcp(s) = &self.sock {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// What a `connect` request asks for: a socket in the instance's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectParams {
    pub application: String,
    pub instance: Instance,
    pub proto: Proto,
    pub port: u16,
    /// `ip-address`, 127.0.0.1 when absent.
    pub ip: IpAddr,
    pub accepted: Accepted,
}

impl ConnectParams {
    /// The `connect` decoder: the handshake first, then the query.
    pub fn decode(
        application: String,
        instance: Instance,
        query: &Query,
        req: &Request,
        ctx: &DecodeCtx<'_>,
    ) -> Result<ConnectParams, DecodeError> {
        let accepted = upgrade(req, &[protocol::CONNECT], ctx)?;
        check_query(
            query,
            &["site", "fields", "protocol", "port", "ip-address"],
            ctx,
        )?;
        let proto = match query.single("protocol")? {
            Some("tcp") => Proto::Tcp,
            Some("udp") => Proto::Udp,
            Some(p) => return Err(DecodeError::BadProtocol(p.to_string())),
            None => return Err(DecodeError::ProtocolRequired),
        };
        let port = port_param(query)?;
        let ip = match query.single("ip-address")? {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(s) => s
                .parse()
                .map_err(|_| DecodeError::BadIpAddress(s.to_string()))?,
        };
        Ok(ConnectParams {
            application,
            instance,
            proto,
            port,
            ip,
            accepted,
        })
    }
}

/// What a `tcp-connect` request asks for: a TCP connection to a container's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConnectParams {
    pub application: String,
    pub instance: Instance,
    pub target: ContainerRef,
    pub port: u16,
    pub accepted: Accepted,
}

impl TcpConnectParams {
    /// The `tcp-connect` decoder. As every websocket endpoint: the handshake and the query
    /// first, so a malformed request is 4xx even where the operation is not available
    /// (vm-container: 501 from `target::find`).
    pub fn decode(
        application: String,
        instance: Instance,
        target: ContainerRef,
        query: &Query,
        req: &Request,
        ctx: &DecodeCtx<'_>,
    ) -> Result<TcpConnectParams, DecodeError> {
        let accepted = upgrade(req, &[protocol::TCP_CONNECT], ctx)?;
        check_query(query, &["site", "fields", "port"], ctx)?;
        let port = port_param(query)?;
        Ok(TcpConnectParams {
            application,
            instance,
            target,
            port,
            accepted,
        })
    }
}

fn port_param(query: &Query) -> Result<u16, DecodeError> {
    let raw = query.single("port")?.ok_or(DecodeError::PortRequired)?;
    match raw.parse::<u16>() {
        Ok(p) if p > 0 && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(DecodeError::BadPort(raw.to_string())),
    }
}

/// Why a tunnel could not be set up.
#[derive(Debug)]
pub enum Error {
    /// Entering the instance's network namespace failed.
    Container(container::Error),
    /// `socket(2)` failed (500).
    Socket(nix::errno::Errno),
    /// The loop would not take the socket (500).
    Register(std::io::Error),
    /// The target refused or is unreachable (502).
    Connect { target: SocketAddr, errno: i32 },
    /// The TCP connect did not complete in time (504).
    Timeout(SocketAddr),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Container(e) => write!(f, "{e}"),
            Error::Socket(e) => write!(f, "socket: {e}"),
            Error::Register(e) => write!(f, "register socket: {e}"),
            Error::Connect { target, errno } => {
                let e = std::io::Error::from_raw_os_error(*errno);
                write!(f, "cannot connect to {target}: {e}")
            }
            Error::Timeout(target) => write!(f, "connecting to {target} timed out"),
        }
    }
}

impl std::error::Error for Error {}

impl From<container::Error> for Error {
    fn from(e: container::Error) -> Error {
        Error::Container(e)
    }
}

/// What `start` produced: a TCP tunnel still connecting (answer later) or a ready one.
pub(crate) enum Begun {
    Connecting(Box<Tunnel>),
    Ready(Box<Tunnel>),
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    me: Token,
    netns_of: Option<(i32, &str)>,
    proto: Proto,
    target: SocketAddr,
    head: Vec<u8>,
    format: Format,
    io: &mut Io<'_>,
) -> Result<Begun, Error> {
    let family = if target.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let ty = match proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let fd = match netns_of {
        Some((pid, container_id)) => {
            let ns = container::netns::open(pid, container_id)?;
            container::netns::socket_in(&ns, family, ty)?
        }
        None => nix::sys::socket::socket(
            family,
            ty,
            nix::sys::socket::SockFlag::SOCK_NONBLOCK | nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(Error::Socket)?,
    };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let res = match target {
        SocketAddr::V4(a) => nix::sys::socket::connect(raw, &nix::sys::socket::SockaddrIn::from(a)),
        SocketAddr::V6(a) => {
            nix::sys::socket::connect(raw, &nix::sys::socket::SockaddrIn6::from(a))
        }
    };
    let connecting = match res {
        Ok(()) => false,
        Err(nix::errno::Errno::EINPROGRESS) => true,
        Err(e) => {
            return Err(Error::Connect {
                target,
                errno: e as i32,
            });
        }
    };
    let mut sock = match proto {
        Proto::Tcp => {
            let s = TcpStream::from_std(std::net::TcpStream::from(fd));
            let _ = s.set_nodelay(true);
            Sock::Tcp(s)
        }
        Proto::Udp => Sock::Udp(UdpSocket::from_std(std::net::UdpSocket::from(fd))),
    };
    let interest = Interest::READABLE | Interest::WRITABLE;
    let sock_token = match &mut sock {
        Sock::Tcp(s) => io.register(me, Role::Socket, s, interest),
        Sock::Udp(s) => io.register(me, Role::Socket, s, interest),
    }
    .map_err(Error::Register)?;
    let deadline = Instant::now() + io.cfg.connect.connect_timeout;
    let t = Tunnel {
        client: None,
        sock,
        sock_token,
        connecting: connecting.then_some(deadline),
        head,
        to_sock: Vec::new(),
        datagrams: Default::default(),
        held: None,
        shut_write: false,
        sock_eof: false,
        sock_error: None,
        target,
        format,
        replied: false,
        gone: false,
    };
    if connecting {
        io.wake_at(me, deadline);
        Ok(Begun::Connecting(Box::new(t)))
    } else {
        Ok(Begun::Ready(Box::new(t)))
    }
}

fn connect_error(target: SocketAddr, errno: i32) -> ApiError {
    ApiError::from(Error::Connect { target, errno })
}

impl Tunnel {
    /// The 101 head, taken when the HTTP connection is upgraded.
    pub(crate) fn take_head(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.head)
    }

    /// The upgraded client connection, from now on the other end of the session.
    pub(crate) fn attach(&mut self, client: WsClient) {
        self.client = Some(client);
    }

    pub(crate) fn drive(&mut self, me: Token, role: Option<Role>, io: &mut Io<'_>) -> Progress {
        let mut p = Progress::default();
        if self.gone && self.client.is_none() {
            // Whether the connect finished or not, there is no client to upgrade.
            p.done = true;
            return p;
        }
        if let Some(deadline) = self.connecting {
            return self.drive_connect(deadline);
        }
        if role.is_none()
            && let Some(c) = self.client.as_mut()
        {
            c.on_timer(me, io);
        }
        self.pump_client_to_socket(me, io);
        self.pump_socket_to_client(me, io);
        let Some(c) = self.client.as_mut() else {
            return p;
        };
        if !c.closing() && !c.dead && self.held.is_none() {
            if let Some(why) = self.sock_error.take() {
                c.close(me, 1011, &why, io);
            } else if self.sock_eof {
                c.close(me, 1000, "the target closed the connection", io);
            }
            c.pump();
        }
        if c.dead {
            p.done = true;
        }
        p
    }

    fn drive_connect(&mut self, deadline: Instant) -> Progress {
        let mut p = Progress::default();
        let Sock::Tcp(s) = &self.sock else {
            return p;
        };
        let failed = match s.take_error() {
            Ok(Some(e)) => Some(connect_error(self.target, e.raw_os_error().unwrap_or(0))),
            Err(e) => Some(connect_error(self.target, e.raw_os_error().unwrap_or(0))),
            Ok(None) => match s.peer_addr() {
                Ok(_) => {
                    self.connecting = None;
                    p.upgrade = true;
                    return p;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => (Instant::now()
                    >= deadline)
                    .then(|| ApiError::from(Error::Timeout(self.target))),
                Err(e) => Some(connect_error(self.target, e.raw_os_error().unwrap_or(0))),
            },
        };
        if let Some(err) = failed
            && !self.replied
        {
            self.replied = true;
            p.reply = Some(Reply {
                response: err.into_response(self.format),
            });
            p.done = true;
        }
        p
    }

    fn pump_client_to_socket(&mut self, me: Token, io: &mut Io<'_>) {
        // Out of `self` while it reads, so that `self` is the sink its frames go to.
        let Some(mut client) = self.client.take() else {
            self.write_socket();
            return;
        };
        client.read_frames(me, io, "text frames are not part of this protocol", self);
        self.client = Some(client);
    }

    fn write_socket(&mut self) {
        match &mut self.sock {
            Sock::Tcp(s) => {
                match write_some(s, &self.to_sock) {
                    Ok(n) => {
                        // One move of the rest per wake-up, not one per write.
                        self.to_sock.drain(..n);
                    }
                    Err(e) => {
                        self.sock_error.get_or_insert_with(|| e.to_string());
                        self.to_sock.clear();
                        return;
                    }
                }
                if !self.to_sock.is_empty() {
                    return;
                }
                if self.to_sock.capacity() > TO_SOCKET_LIMIT {
                    self.to_sock.shrink_to(16 * 1024);
                }
                if self.shut_write {
                    let _ = s.shutdown(Shutdown::Write);
                }
            }
            Sock::Udp(s) => {
                while let Some(d) = self.datagrams.front() {
                    match s.send(d) {
                        Ok(_) => {
                            self.datagrams.pop_front();
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        // ICMP errors of earlier datagrams surface here; UDP carries on.
                        Err(e) => {
                            log::debug!("udp send to {}: {e}", self.target);
                            self.datagrams.pop_front();
                        }
                    }
                }
            }
        }
    }

    fn pump_socket_to_client(&mut self, me: Token, io: &mut Io<'_>) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        if self.sock_eof || self.sock_error.is_some() {
            client.send_held(&mut self.held);
            client.pump();
            return;
        }
        let target = self.target;
        let read = |buf: &mut [u8]| match &mut self.sock {
            Sock::Tcp(s) => match s.read(buf) {
                Ok(0) => Ok(None),
                r => r.map(Some),
            },
            // A datagram may be empty; the errors recv reports are ICMP news of earlier
            // datagrams, and UDP carries on.
            Sock::Udp(s) => loop {
                match s.recv(buf) {
                    Err(e)
                        if !matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        log::debug!("udp recv from {target}: {e}");
                    }
                    r => break r.map(Some),
                }
            },
        };
        match client.forward(me, io, &mut self.held, CHUNK, read) {
            Forwarded::Paused => {}
            Forwarded::Ended => self.sock_eof = true,
            Forwarded::Failed(e) => {
                self.sock_error = Some(match e.kind() {
                    std::io::ErrorKind::ConnectionReset => "connection reset by the target".into(),
                    _ => e.to_string(),
                })
            }
        }
    }

    pub(crate) fn client_gone(&mut self) {
        self.gone = true;
        if let Sock::Tcp(s) = &self.sock {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub(crate) fn shutdown(&mut self, me: Token, io: &mut Io<'_>) {
        match self.client.as_mut() {
            Some(c) => {
                c.close(me, 1001, "supd is shutting down", io);
                c.pump();
            }
            None => self.client_gone(),
        }
    }

    pub(crate) fn release(&mut self, io: &mut Io<'_>) {
        match &mut self.sock {
            Sock::Tcp(s) => io.deregister(self.sock_token, s),
            Sock::Udp(s) => io.deregister(self.sock_token, s),
        }
        if let Some(c) = self.client.as_mut() {
            c.release(io);
        }
    }
}

/// Write as much of `buf` as the non-blocking socket takes now: how much that was.
fn write_some(s: &mut impl Write, buf: &[u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match s.write(&buf[done..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod decode_tests {
    use super::*;
    use crate::http::request::Method;
    use crate::ops::decode::testing::{ctx, q, request, seen, ws_headers};

    fn connect(query: &str) -> Result<ConnectParams, DecodeError> {
        let req = request(Method::Get, query, &ws_headers(protocol::CONNECT), b"");
        ConnectParams::decode(
            "shop".into(),
            Instance::parse("web-1").unwrap(),
            &q(query),
            &req,
            &ctx(),
        )
    }

    fn tcp(query: &str, proto: &'static str) -> Result<TcpConnectParams, DecodeError> {
        let req = request(Method::Get, query, &ws_headers(proto), b"");
        TcpConnectParams::decode(
            "shop".into(),
            Instance::parse("web-1").unwrap(),
            ContainerRef::Vm,
            &q(query),
            &req,
            &ctx(),
        )
    }

    #[test]
    fn tunnels_decode() {
        let p = connect("protocol=tcp&port=80").unwrap();
        assert_eq!((p.proto, p.port), (Proto::Tcp, 80));
        assert_eq!(p.ip, IpAddr::from([127, 0, 0, 1]));
        let p = connect("protocol=udp&port=53&ip-address=::1&site=here&fields=a").unwrap();
        assert_eq!((p.proto, p.port), (Proto::Udp, 53));
        assert_eq!(p.ip, "::1".parse::<IpAddr>().unwrap());
        let p = tcp("port=65535", protocol::TCP_CONNECT).unwrap();
        assert_eq!(p.port, 65535);
        assert_eq!(
            p.target,
            ContainerRef::Vm,
            "vm-container is refused later (501)"
        );
    }

    #[test]
    fn tunnel_decode_errors() {
        let e = |query: &str| seen(connect(query).unwrap_err());
        assert_eq!(
            e("port=80"),
            (400, "protocol is required (tcp or udp)".into())
        );
        assert_eq!(
            e("protocol=sctp&port=80"),
            (400, "protocol must be tcp or udp (got \"sctp\")".into())
        );
        assert_eq!(e("protocol=tcp"), (400, "port is required".into()));
        for bad in ["0", "65536", "-1", "x", ""] {
            assert_eq!(
                e(&format!("protocol=tcp&port={bad}")),
                (
                    400,
                    format!("port must be an integer 1-65535 (got {bad:?})")
                )
            );
        }
        assert_eq!(
            e("protocol=tcp&port=1&ip-address=host"),
            (
                400,
                "ip-address must be an IPv4 or IPv6 address (got \"host\")".into()
            )
        );
        assert_eq!(
            e("protocol=tcp&port=1&x=1"),
            (400, "unknown query parameter \"x\"".into())
        );
        assert_eq!(
            e("protocol=tcp&port=1&site=x"),
            (404, "unknown site \"x\"".into())
        );
        let e = |query: &str, proto| seen(tcp(query, proto).unwrap_err());
        assert_eq!(
            e("", protocol::TCP_CONNECT),
            (400, "port is required".into())
        );
        assert_eq!(e("port=1&protocol=tcp", protocol::TCP_CONNECT).0, 400);
        // A subprotocol of another endpoint is refused before the query is looked at.
        assert!(
            e("nope=1", protocol::CONNECT)
                .1
                .starts_with("no acceptable websocket subprotocol")
        );
    }

    #[test]
    fn tunnel_errors_keep_their_status_and_message() {
        let target: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let e = ApiError::from(Error::Connect { target, errno: 111 });
        assert_eq!(e.status, 502);
        assert!(
            e.message
                .starts_with("cannot connect to 10.0.0.1:80: Connection refused")
        );
        assert_eq!(e.info["address"], "10.0.0.1:80");
        assert_eq!(e.info["errno"], 111);
        let e = ApiError::from(Error::Timeout(target));
        assert_eq!(
            (e.status, e.message.as_str()),
            (504, "connecting to 10.0.0.1:80 timed out")
        );
        assert_eq!(e.info["address"], "10.0.0.1:80");
        let e = ApiError::from(Error::Socket(nix::errno::Errno::EMFILE));
        assert_eq!(e.status, 500);
        assert!(e.message.starts_with("socket: "));
    }
}
