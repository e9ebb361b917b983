//! Pseudo-terminals for interactive commands.
//!
//! The pair comes from the container's own devpts instance (its `/dev/pts/ptmx`), like
//! `docker exec -t`: a slave of the host's devpts has no name inside the container, so
//! `tty` would say "not a tty" and programs that look up their terminal would fail.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag};
use nix::sys::stat::{Mode, SFlag};

use super::ns::proc_error;
use super::{Error, Result};
use crate::sys::process;

/// The device number of every devpts `ptmx` (major 5, minor 2).
const PTMX_RDEV: (u64, u64) = (5, 2);

pub struct Pty {
    /// Non-blocking, close-on-exec: supd's end.
    pub master: OwnedFd,
    /// The command's terminal; close-on-exec until the child dups it onto 0, 1, 2.
    pub slave: OwnedFd,
}

/// Opens a PTY in the devpts of process `pid`'s root, falling back to the host's devpts when
/// the container has none (the terminal then works but has no name inside the container).
pub fn open(pid: i32, rows: u16, cols: u16) -> Result<Pty> {
    let root = nix::fcntl::open(
        format!("/proc/{pid}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| proc_error(pid, "open container root", e))?;
    let pty = match open_container_ptmx(root.as_fd()) {
        Ok(pty) => pty,
        Err(errno) => {
            log::warn!(
                "container of pid {pid} has no usable /dev/pts/ptmx ({errno}); using the host's"
            );
            open_host()?
        }
    };
    set_winsize(pty.master.as_fd(), rows, cols)?;
    Ok(pty)
}

fn open_container_ptmx(root: BorrowedFd<'_>) -> nix::Result<Pty> {
    let master = process::open_in_root(
        root,
        c"dev/pts/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
    )?;
    // Whatever the container put at that path, only the ptmx device is accepted.
    let stat = nix::sys::stat::fstat(master.as_fd())?;
    let is_char = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    let rdev = (
        libc::major(stat.st_rdev) as u64,
        libc::minor(stat.st_rdev) as u64,
    );
    if !is_char || rdev != PTMX_RDEV {
        return Err(Errno::ENODEV);
    }
    process::unlock_pty(master.as_fd())?;
    let slave = process::open_pty_peer(master.as_fd())?;
    Ok(Pty { master, slave })
}

fn open_host() -> Result<Pty> {
    let sys = |op| move |errno| Error::Sys { op, errno };
    let pair = nix::pty::openpty(None, None).map_err(sys("openpty"))?;
    for fd in [&pair.master, &pair.slave] {
        nix::fcntl::fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(sys("fcntl"))?;
    }
    nix::fcntl::fcntl(&pair.master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(sys("fcntl"))?;
    Ok(Pty {
        master: pair.master,
        slave: pair.slave,
    })
}

/// Sets the terminal size seen by the command (which gets SIGWINCH).
pub fn set_winsize(master: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<()> {
    process::set_winsize(master, rows, cols).map_err(|errno| Error::Sys {
        op: "set window size",
        errno,
    })
}
