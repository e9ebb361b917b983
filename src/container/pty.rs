//! Pseudo-terminals for interactive commands.
//!
//! The pair comes from the container's own devpts instance (its `/dev/pts/ptmx`), like
//! `docker exec -t`: a slave of the host's devpts has no name inside the container, so
//! `tty` would say "not a tty" and programs that look up their terminal would fail. There is no
//! fallback to the host's devpts.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::helper::{Failed, InRoot, Job};
use super::{Error, Result};
use crate::sys::process;

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

/// Sets the terminal size seen by the command (which gets SIGWINCH).
pub fn set_winsize(master: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<()> {
    process::set_winsize(master, rows, cols).map_err(|errno| Error::Sys {
        op: "set window size",
        errno,
    })
}
