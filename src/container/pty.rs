//! Pseudo-terminals for interactive commands.
//!
//! The pair comes from the container's own devpts instance (its `/dev/pts/ptmx`), like
//! `docker exec -t`: a slave of the host's devpts has no name inside the container, so
//! `tty` would say "not a tty" and programs that look up their terminal would fail. There is no
//! fallback to the host's devpts.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};

use super::helper::{Failed, InRoot, Job};
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

/// How long the helper may take to find and open the container's ptmx before it is killed
/// and the session fails ([`Error::TerminalTimeout`]). A devpts answers at once; only a file
/// system the container mounted there (FUSE) can take longer.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a PTY in the devpts of process `pid`'s root, blocking up to [`OPEN_TIMEOUT`]: for
/// tests and tools, never on supd's loop (which uses [`Opening`]).
pub fn open(pid: i32, container_id: &str, rows: u16, cols: u16) -> Result<Pty> {
    let mut opening = Opening::start(pid, container_id)?;
    let answer = opening.helper.wait(OPEN_TIMEOUT);
    let pty = opening.answer(answer)?;
    set_winsize(pty.master.as_fd(), rows, cols)?;
    Ok(pty)
}

/// A PTY being opened by a helper process ([`helper::InRoot`]): the lookup of `dev/pts/ptmx`
/// runs in the container's file system, which the container controls.
pub struct Opening {
    pid: i32,
    helper: InRoot,
}

impl Opening {
    /// Forks the helper that opens the PTY of process `pid`'s container.
    pub fn start(pid: i32, container_id: &str) -> Result<Opening> {
        let helper = InRoot::start(pid, container_id, Job::Ptmx, OPEN_TIMEOUT)?;
        log::debug!("opening the ptmx of the container of pid {pid}");
        Ok(Opening { pid, helper })
    }

    /// The descriptor to wait on: readable when the helper answered or exited.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.helper.socket()
    }

    /// When the open fails if the helper has not answered.
    pub fn deadline(&self) -> Instant {
        self.helper.deadline()
    }

    /// The helper's answer, without blocking: `None` while it works and the deadline is not
    /// past.
    pub fn progress(&mut self) -> Option<Result<Pty>> {
        let answer = self.helper.progress(OPEN_TIMEOUT)?;
        Some(self.answer(answer))
    }

    fn answer(&self, answer: std::result::Result<Vec<OwnedFd>, Failed>) -> Result<Pty> {
        match answer {
            Ok(fds) => {
                let mut fds = fds.into_iter();
                match (fds.next(), fds.next()) {
                    // Non-blocking already: the helper opened the master so (the flag is on
                    // the open file, which the descriptor passed shares).
                    (Some(master), Some(slave)) => Ok(Pty { master, slave }),
                    _ => Err(Error::Sys {
                        op: "receive the terminal",
                        errno: Errno::EBADMSG,
                    }),
                }
            }
            Err(Failed::Job(errno)) => {
                log::warn!(
                    "container of pid {} has no usable /dev/pts/ptmx: {errno}",
                    self.pid
                );
                Err(Error::BadTarget(
                    "the container has no usable /dev/pts/ptmx for a terminal",
                ))
            }
            Err(Failed::Timeout(after)) => {
                log::warn!(
                    "the container of pid {} did not open its /dev/pts/ptmx within {} ms",
                    self.pid,
                    after.as_millis()
                );
                Err(Error::TerminalTimeout { after })
            }
            Err(Failed::Other(e)) => Err(e),
        }
    }
}

/// The container chooses what is at its `/dev/pts/ptmx`, and supd is the host's root: whatever
/// is there is only looked at (an `O_PATH` handle, no link followed) until it is proved to be
/// a devpts `ptmx`, and only then opened. Opening first would run the open of any device the
/// container mknod'ed there (a host device, past the devices cgroup that binds the container).
pub(super) fn open_container_ptmx(root: BorrowedFd<'_>) -> nix::Result<Pty> {
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
    let master = reopen(
        handle.as_fd(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
    )?;
    process::unlock_pty(master.as_fd())?;
    let slave = process::open_pty_peer(master.as_fd())?;
    Ok(Pty { master, slave })
}

/// Opens the very file an `O_PATH` handle refers to, with `flags` (close-on-exec added),
/// through `/proc/self/fd`: no path of anyone else's is resolved again. Without allocating
/// (the helper is a forked child): the path is written into a stack buffer.
fn reopen(handle: BorrowedFd<'_>, flags: OFlag) -> nix::Result<OwnedFd> {
    let mut buf = [0u8; process::FD_PATH_LEN];
    let path = process::self_fd_path(handle, &mut buf);
    nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, Mode::empty())
}

/// Sets the terminal size seen by the command (which gets SIGWINCH).
pub fn set_winsize(master: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<()> {
    process::set_winsize(master, rows, cols).map_err(|errno| Error::Sys {
        op: "set window size",
        errno,
    })
}
