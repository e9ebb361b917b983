//! Pseudo-terminals for interactive commands.
//!
//! The pair comes from the container's own devpts instance (its `/dev/pts/ptmx`), like
//! `docker exec -t`: a slave of the host's devpts has no name inside the container, so
//! `tty` would say "not a tty" and programs that look up their terminal would fail. There is no
//! fallback to the host's devpts.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
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

/// Opens a PTY in the devpts of process `pid`'s root. A container without a usable one gets
/// no terminal ([`Error::BadTarget`]): the host's devpts is never used, since a container that
/// broke its own (or replaced it) is the one asking.
pub fn open(pid: i32, rows: u16, cols: u16) -> Result<Pty> {
    let root = nix::fcntl::open(
        format!("/proc/{pid}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| proc_error(pid, "open container root", e))?;
    let pty = open_container_ptmx(root.as_fd()).map_err(|errno| {
        log::warn!("container of pid {pid} has no usable /dev/pts/ptmx: {errno}");
        Error::BadTarget("the container has no usable /dev/pts/ptmx for a terminal")
    })?;
    set_winsize(pty.master.as_fd(), rows, cols)?;
    Ok(pty)
}

/// The container chooses what is at its `/dev/pts/ptmx`, and supd is the host's root: whatever
/// is there is only looked at (an `O_PATH` handle, no link followed) until it is proved to be
/// a devpts `ptmx`, and only then opened. Opening first would run the open of any device the
/// container mknod'ed there (a host device, past the devices cgroup that binds the container).
fn open_container_ptmx(root: BorrowedFd<'_>) -> nix::Result<Pty> {
    let handle = process::open_path_in_root(root, c"dev/pts/ptmx")?;
    let stat = nix::sys::stat::fstat(handle.as_fd())?;
    let is_char = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    let rdev = (
        libc::major(stat.st_rdev) as u64,
        libc::minor(stat.st_rdev) as u64,
    );
    if !is_char || rdev != PTMX_RDEV {
        return Err(Errno::ENODEV);
    }
    // A `c 5 2` node on another file system would open the host's /dev/ptmx instance.
    let fs = nix::sys::statfs::fstatfs(handle.as_fd())?;
    if fs.filesystem_type() != nix::sys::statfs::DEVPTS_SUPER_MAGIC {
        return Err(Errno::EXDEV);
    }
    let master = process::reopen(
        handle.as_fd(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
    )?;
    process::unlock_pty(master.as_fd())?;
    let slave = process::open_pty_peer(master.as_fd())?;
    Ok(Pty { master, slave })
}

/// Sets the terminal size seen by the command (which gets SIGWINCH).
pub fn set_winsize(master: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<()> {
    process::set_winsize(master, rows, cols).map_err(|errno| Error::Sys {
        op: "set window size",
        errno,
    })
}
