//! Pseudo-terminals for interactive commands.
//!
//! The pair comes from the container's own devpts instance (its `/dev/pts/ptmx`), like
//! `docker exec -t`: a slave of the host's devpts has no name inside the container, so
//! `tty` would say "not a tty" and programs that look up their terminal would fail. There is no
//! fallback to the host's devpts.

use std::cell::RefCell;
use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, SockFlag, SockType};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{Error, Result, identity};
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
    let helper = opening.helper;
    loop {
        if let Some(result) = opening.progress() {
            // Off the loop, the caller may wait a little for the helper's exit (it has
            // answered, or been killed): no zombie is left for a caller without a loop.
            if let Some(helper) = helper {
                reap_soon(helper);
            }
            let pty = result?;
            set_winsize(pty.master.as_fd(), rows, cols)?;
            return Ok(pty);
        }
        let left = opening.deadline().saturating_duration_since(Instant::now());
        let millis = PollTimeout::try_from(left.as_millis().clamp(1, 60_000) as i32)
            .unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(opening.socket(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, millis) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => return Err(Error::Sys { op: "poll", errno }),
        }
    }
}

/// A PTY being opened by a helper process.
///
/// The lookup of `dev/pts/ptmx` runs in the container's file system, which the container
/// controls: a FUSE file system mounted over its `/dev/pts` can leave any lookup there
/// waiting forever in the kernel (uninterruptibly once its daemon has read the request).
/// So supd's loop never looks: a forked helper does the lookup, the checks and the open, and
/// passes the master and slave back over a socket (`SCM_RIGHTS`); the loop waits on that
/// socket and a deadline, after which the helper is killed. A helper the kill cannot stop
/// yet (asleep in the kernel until the FUSE daemon answers or the container goes) is reaped
/// later by [`reap_stragglers`], never waited for.
pub struct Opening {
    pid: i32,
    /// The pidfd of the container's first process ([`identity::pin`]).
    container: OwnedFd,
    /// Until reaped (or handed to the stragglers).
    helper: Option<Pid>,
    /// supd's end: non-blocking, close-on-exec.
    socket: OwnedFd,
    deadline: Instant,
}

/// What the helper sends: 0 with the master and slave attached, else the errno of the step
/// that failed.
const MESSAGE: usize = std::mem::size_of::<i32>();

impl Opening {
    /// Forks the helper that opens the PTY of process `pid`'s container.
    /// The pid is pinned first ([`identity::pin`]) and must still be alive when the answer
    /// comes: then the root the helper opened was the container's, not a successor's.
    pub fn start(pid: i32, container_id: &str) -> Result<Opening> {
        reap_stragglers();
        let container = identity::pin(pid, container_id)?;
        let (socket, child_end) = nix::sys::socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(sys("socketpair"))?;
        let root = std::ffi::CString::new(format!("/proc/{pid}/root"))
            .map_err(|_| Error::BadTarget("bad pid"))?;
        let helper =
            process::fork_child(|| open_helper(&root, child_end.as_fd())).map_err(sys("fork"))?;
        drop(child_end);
        let flags = nix::fcntl::fcntl(&socket, FcntlArg::F_GETFL).map_err(sys("fcntl"))?;
        nix::fcntl::fcntl(
            &socket,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(sys("fcntl"))?;
        log::debug!("opening the ptmx of the container of pid {pid} (helper {helper})");
        Ok(Opening {
            pid,
            container,
            helper: Some(Pid::from_raw(helper)),
            socket,
            deadline: Instant::now() + OPEN_TIMEOUT,
        })
    }

    /// The descriptor to wait on: readable when the helper answered or exited.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// When the open fails if the helper has not answered.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The helper's answer, without blocking: `None` while it works and the deadline is not
    /// past. Once it returns `Some`, the helper is gone (or left to [`reap_stragglers`]).
    pub fn progress(&mut self) -> Option<Result<Pty>> {
        self.helper?;
        let mut message = [0u8; MESSAGE];
        let result = match crate::sys::fd::recv_fds(self.socket.as_fd(), &mut message) {
            Err(Errno::EAGAIN) => {
                if Instant::now() < self.deadline {
                    return None;
                }
                log::warn!(
                    "the container of pid {} did not open its /dev/pts/ptmx within {} ms",
                    self.pid,
                    OPEN_TIMEOUT.as_millis()
                );
                Err(Error::TerminalTimeout {
                    after: OPEN_TIMEOUT,
                })
            }
            Err(errno) => Err(Error::Sys {
                op: "receive the terminal",
                errno,
            }),
            Ok((n, fds)) => self.answer(n, message, fds),
        };
        self.finish();
        Some(result)
    }

    fn answer(&self, n: usize, message: [u8; MESSAGE], fds: Vec<OwnedFd>) -> Result<Pty> {
        if n != MESSAGE {
            // The helper died before answering (killed, or out of memory).
            return Err(Error::Sys {
                op: "open the container's ptmx (the helper exited without an answer)",
                errno: Errno::EPIPE,
            });
        }
        let errno = i32::from_ne_bytes(message);
        if errno != 0 {
            let errno = Errno::from_raw(errno);
            log::warn!(
                "container of pid {} has no usable /dev/pts/ptmx: {errno}",
                self.pid
            );
            return Err(if !self.alive() {
                Error::ContainerGone { pid: self.pid }
            } else {
                Error::BadTarget("the container has no usable /dev/pts/ptmx for a terminal")
            });
        }
        if !self.alive() {
            return Err(Error::ContainerGone { pid: self.pid });
        }
        let mut fds = fds.into_iter();
        match (fds.next(), fds.next()) {
            (Some(master), Some(slave)) => {
                // Non-blocking already: the helper opened the master so (the flag is on
                // the open file, which the descriptor passed shares).
                Ok(Pty { master, slave })
            }
            _ => Err(Error::Sys {
                op: "receive the terminal",
                errno: Errno::EBADMSG,
            }),
        }
    }

    /// Whether the pinned process has not exited (its pidfd is not readable).
    fn alive(&self) -> bool {
        let mut fds = [PollFd::new(self.container.as_fd(), PollFlags::POLLIN)];
        matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(0))
    }

    /// Kills the helper (a no-op once it exited) and reaps it if it is gone; one still asleep
    /// in the kernel joins the stragglers.
    fn finish(&mut self) {
        if let Some(helper) = self.helper.take() {
            let _ = nix::sys::signal::kill(helper, Signal::SIGKILL);
            STRAGGLERS.with_borrow_mut(|s| s.push(helper));
            reap_stragglers();
        }
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.finish();
    }
}

thread_local! {
    /// Killed helpers not reaped yet: one asleep in a FUSE request the container's daemon
    /// never answers dies only when the answer comes or the container's FUSE connection goes.
    static STRAGGLERS: RefCell<Vec<Pid>> = const { RefCell::new(Vec::new()) };
}

/// Reaps the helpers that have died since they were killed, without waiting. The loop calls
/// it on every turn (cheap when there are none).
pub fn reap_stragglers() {
    STRAGGLERS.with_borrow_mut(|stragglers| {
        stragglers.retain(|&helper| {
            matches!(
                nix::sys::wait::waitpid(helper, Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR)
            )
        })
    });
}

/// Waits up to a second for `helper` (killed) to be reaped, then leaves it to
/// [`reap_stragglers`]. Blocks: never on the loop.
fn reap_soon(helper: Pid) {
    for _ in 0..100 {
        reap_stragglers();
        if !STRAGGLERS.with_borrow(|s| s.contains(&helper)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The helper's work (after fork: no allocation). Returns its exit code.
fn open_helper(root_path: &CStr, out: BorrowedFd<'_>) -> i32 {
    // The lookup may hang in the container's file system for as long as the container lives,
    // past supd itself: hold nothing of supd's meanwhile (its listening sockets would keep a
    // restarted supd from binding), only the answer socket, moved to 3.
    if process::move_fd_cloexec(out, 3).is_err() || process::close_from(4).is_err() {
        return 1;
    }
    let out = process::kept_fd(3);
    let result = nix::fcntl::open(
        root_path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .and_then(|root| open_container_ptmx(root.as_fd()));
    let sent = match &result {
        Ok(pty) => crate::sys::fd::send_fds(
            out,
            &0i32.to_ne_bytes(),
            &[pty.master.as_fd(), pty.slave.as_fd()],
        ),
        Err(errno) => crate::sys::fd::send_fds(out, &(*errno as i32).to_ne_bytes(), &[]),
    };
    i32::from(sent.is_err())
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
    const PREFIX: &[u8] = b"/proc/self/fd/";
    let mut path = [0u8; 40];
    path[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 12];
    let mut n = handle.as_raw_fd() as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        path[PREFIX.len() + i] = digits[len - 1 - i];
    }
    let path = CStr::from_bytes_until_nul(&path).map_err(|_| Errno::EINVAL)?;
    nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, Mode::empty())
}

fn sys(op: &'static str) -> impl Fn(Errno) -> Error {
    move |errno| Error::Sys { op, errno }
}

/// Sets the terminal size seen by the command (which gets SIGWINCH).
pub fn set_winsize(master: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<()> {
    process::set_winsize(master, rows, cols).map_err(|errno| Error::Sys {
        op: "set window size",
        errno,
    })
}
