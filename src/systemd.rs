//! The parts of systemd's protocols supd speaks, without libsystemd: readiness and watchdog
//! notifications (sd_notify) and socket activation (sd_listen_fds).

use std::ffi::OsStr;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, SockType, SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt,
};

use crate::sys::fd::{remove_env_single_threaded, take_listen_fds};

/// The first descriptor systemd passes (SD_LISTEN_FDS_START).
pub const LISTEN_FDS_START: RawFd = 3;

/// Send `state` ("READY=1", "STOPPING=1", "WATCHDOG=1", "STATUS=...", several separated by
/// newlines) to `$NOTIFY_SOCKET`. Ok(false) when the variable is unset (not run by systemd).
/// The socket is non-blocking: the event loop must not stall on a busy systemd, so a full
/// queue is an error (WouldBlock) for the caller to log, not a wait.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        None => Ok(false),
        Some(socket) => notify_to(&socket, state).map(|()| true),
    }
}

/// `notify` to an explicit socket: a path, or `@name` for an abstract socket.
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let bytes = socket.as_bytes();
    let addr = match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
        Some(b'/') => SocketAddr::from_pathname(socket)?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("NOTIFY_SOCKET={socket:?}: not a path or an abstract name"),
            ));
        }
    };
    if state.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty state"));
    }
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification truncated",
        ));
    }
    Ok(())
}

/// The watchdog interval systemd expects `WATCHDOG=1` within (`WatchdogSec=`), from
/// WATCHDOG_USEC, when WATCHDOG_PID is unset or names this process. Send at half of it.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn watchdog_from(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.parse::<u32>().ok()? != our_pid
    {
        return None;
    }
    match usec?.parse::<u64>().ok()? {
        0 => None,
        usec => Some(Duration::from_micros(usec)),
    }
}

/// A listening socket received from systemd.
#[derive(Debug)]
pub enum ListenFd {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Socket activation: when LISTEN_PID is this process, take descriptors 3..3+LISTEN_FDS,
/// mark them close-on-exec, classify each by its address family, and remove LISTEN_PID,
/// LISTEN_FDS and LISTEN_FDNAMES from the environment so no child believes they are its own.
/// Empty when not activated. Call once, at start-up, before any thread exists. The sockets
/// are left as systemd made them (blocking); set them non-blocking before handing them to
/// mio.
pub fn listen_fds() -> io::Result<Vec<ListenFd>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let count = listen_count(pid.as_deref(), fds.as_deref(), std::process::id())?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let owned = take_listen_fds(LISTEN_FDS_START, count)?;
    remove_env_single_threaded(&["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"])?;
    owned.into_iter().map(classify).collect()
}

/// How many descriptors are ours to take. A LISTEN_PID for another process (we were forked
/// from the activated one, or inherited its environment) means none; malformed values are
/// errors rather than guesses.
fn listen_count(pid: Option<&str>, fds: Option<&str>, our_pid: u32) -> io::Result<usize> {
    let bad = |what: &str, v: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{what}={:?} is not a number",
                v.chars().take(32).collect::<String>()
            ),
        )
    };
    let Some(pid) = pid else {
        return Ok(0);
    };
    let pid: u32 = pid.parse().map_err(|_| bad("LISTEN_PID", pid))?;
    if pid != our_pid {
        return Ok(0);
    }
    match fds {
        None => Ok(0),
        Some(fds) => fds.parse().map_err(|_| bad("LISTEN_FDS", fds)),
    }
}

/// A listening stream socket of family INET/INET6 or UNIX becomes a listener; anything else
/// (a datagram socket, a FIFO, a netlink socket) is a unit-file mistake worth failing on.
fn classify(fd: OwnedFd) -> io::Result<ListenFd> {
    let raw = fd.as_raw_fd();
    let not_listener = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("inherited descriptor {raw} is {what}, not a listening stream socket"),
        )
    };
    let addr: SockaddrStorage = getsockname(raw).map_err(|_| not_listener("not a socket"))?;
    if getsockopt(&fd, sockopt::SockType).map_err(io::Error::from)? != SockType::Stream {
        return Err(not_listener("not a stream socket"));
    }
    if !getsockopt(&fd, sockopt::AcceptConn).map_err(io::Error::from)? {
        return Err(not_listener("not listening"));
    }
    match addr.family() {
        Some(AddressFamily::Inet | AddressFamily::Inet6) => Ok(ListenFd::Tcp(fd.into())),
        Some(AddressFamily::Unix) => Ok(ListenFd::Unix(fd.into())),
        other => Err(not_listener(&format!("of family {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::path::PathBuf;

    fn temp_dir(tag: &str) -> PathBuf {
        let mut r = [0u8; 8];
        crate::sys::fd::getrandom(&mut r).unwrap();
        let suffix: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("supd-systemd-{tag}-{suffix}"));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn notify_path_socket() {
        let dir = temp_dir("notify");
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1\nSTATUS=serving").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
        drop(server);
        // Nobody listening any more.
        assert!(notify_to(path.as_os_str(), "WATCHDOG=1").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn notify_abstract_socket() {
        let name = format!("supd-test-notify-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let mut buf = [0u8; 16];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn notify_bad_targets() {
        assert!(notify_to(OsStr::new(""), "READY=1").is_err());
        assert!(notify_to(OsStr::new("relative"), "READY=1").is_err());
        assert!(notify_to(OsStr::new("vsock:2:1"), "READY=1").is_err());
        assert!(notify_to(OsStr::new("/nonexistent/supd/notify"), "READY=1").is_err());
        assert!(notify_to(OsStr::new("@x"), "").is_err());
    }

    #[test]
    fn notify_without_socket() {
        // The harness never runs under systemd's notify protocol; skip if somebody does.
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            assert!(!notify("READY=1").unwrap());
        }
    }

    #[test]
    fn watchdog_env() {
        let d = Some(Duration::from_secs(30));
        assert_eq!(watchdog_from(Some("30000000"), None, 7), d);
        assert_eq!(watchdog_from(Some("30000000"), Some("7"), 7), d);
        assert_eq!(watchdog_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("30000000"), Some("x"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("-5"), None, 7), None);
        assert_eq!(watchdog_from(None, Some("7"), 7), None);
    }

    #[test]
    fn listen_env() {
        assert_eq!(listen_count(None, None, 7).unwrap(), 0);
        assert_eq!(listen_count(None, Some("2"), 7).unwrap(), 0);
        assert_eq!(listen_count(Some("8"), Some("2"), 7).unwrap(), 0);
        assert_eq!(listen_count(Some("7"), Some("2"), 7).unwrap(), 2);
        assert_eq!(listen_count(Some("7"), None, 7).unwrap(), 0);
        assert!(listen_count(Some("7"), Some("-1"), 7).is_err());
        assert!(listen_count(Some("7"), Some("two"), 7).is_err());
        assert!(listen_count(Some("x"), Some("1"), 7).is_err());
        if std::env::var_os("LISTEN_PID").is_none() {
            assert!(listen_fds().unwrap().is_empty());
        }
    }

    #[test]
    fn classify_sockets() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        match classify(OwnedFd::from(tcp)).unwrap() {
            ListenFd::Tcp(l) => assert_eq!(l.local_addr().unwrap().port(), port),
            other => panic!("{other:?}"),
        }
        if let Ok(tcp6) = TcpListener::bind("[::1]:0") {
            assert!(matches!(classify(tcp6.into()).unwrap(), ListenFd::Tcp(_)));
        }
        let dir = temp_dir("classify");
        let path = dir.join("l.sock");
        let unix = UnixListener::bind(&path).unwrap();
        match classify(OwnedFd::from(unix)).unwrap() {
            ListenFd::Unix(l) => {
                assert_eq!(l.local_addr().unwrap().as_pathname(), Some(path.as_path()))
            }
            other => panic!("{other:?}"),
        }
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(classify(udp.into()).is_err());
        let dgram = UnixDatagram::unbound().unwrap();
        assert!(classify(dgram.into()).is_err());
        // A bound but not listening stream socket.
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(classify(a.into()).is_err());
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(classify(file.into()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn take_inherited_descriptor() {
        // Stand in for systemd: give up ownership of a listener's descriptor and take it back
        // by number, as listen_fds does with 3..3+n.
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        // systemd passes descriptors without CLOEXEC; std sets it, so clear it first.
        nix::fcntl::fcntl(
            &tcp,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .unwrap();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(tcp);
        let mut fds = take_listen_fds(raw, 1).unwrap();
        assert_eq!(fds.len(), 1);
        let flags = nix::fcntl::fcntl(&fds[0], nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        match classify(fds.remove(0)).unwrap() {
            ListenFd::Tcp(l) => assert_eq!(l.local_addr().unwrap().port(), port),
            other => panic!("{other:?}"),
        }
        // The descriptors have an owner now; a second take must refuse.
        assert!(take_listen_fds(raw, 1).is_err());
    }
}
