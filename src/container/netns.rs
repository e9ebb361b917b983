//! Sockets born inside a container's network namespace.
//!
//! The loop thread switches its own network namespace only around `socket(2)` and switches
//! back before doing anything else: a socket keeps the namespace it was created in, so it is
//! then an ordinary descriptor for the loop. If switching back ever failed, every later socket
//! would be made in the wrong place, so the process aborts instead (systemd restarts it).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

use super::{Error, Result, identity};

/// supd's own network namespace, opened once.
fn home() -> Result<&'static File> {
    static HOME: OnceLock<std::io::Result<File>> = OnceLock::new();
    match HOME.get_or_init(|| File::open("/proc/thread-self/ns/net")) {
        Ok(f) => Ok(f),
        Err(e) => Err(Error::Io {
            op: "open /proc/thread-self/ns/net",
            source: std::io::Error::new(e.kind(), e.to_string()),
        }),
    }
}

/// Open supd's own namespace handle now, at start-up, while the loop is certainly at home
/// (and so that its descriptor is there from the start, not from the first tunnel on).
pub fn open_home() -> Result<()> {
    home().map(|_| ())
}

/// Open the network namespace of process `pid`, the first process of container
/// `container_id`. The process is pinned and proved to be the container's before the open
/// (see [`identity`]), and still alive after it, so the namespace is the container's and not
/// that of a host process that reused the pid.
pub fn open(pid: i32, container_id: &str) -> Result<File> {
    let pinned = identity::pin(pid, container_id)?;
    let ns = File::open(format!("/proc/{pid}/ns/net")).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::ContainerGone { pid }
        } else {
            Error::Io {
                op: "open the container's network namespace",
                source: e,
            }
        }
    })?;
    let mut fds = [PollFd::new(pinned.as_fd(), PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => Ok(ns),
        Ok(_) => Err(Error::ContainerGone { pid }),
        Err(errno) => Err(Error::Sys { op: "poll", errno }),
    }
}

/// A non-blocking, close-on-exec socket created inside `ns`.
pub fn socket_in(ns: &File, family: AddressFamily, ty: SockType) -> Result<OwnedFd> {
    let home = home()?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| Error::Sys {
        op: "setns(net)",
        errno,
    })?;
    let sock = socket(
        family,
        ty,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    );
    if let Err(errno) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
        log::error!("cannot switch back to supd's own network namespace: {errno}; aborting");
        std::process::abort();
    }
    sock.map_err(|errno| Error::Sys {
        op: "socket",
        errno,
    })
}
