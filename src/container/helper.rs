//! Looking into a container's file system without supd's loop ever doing it.
//!
//! A container (or a VM launcher) chooses what its file system is: a FUSE file system mounted
//! where supd looks can leave any lookup waiting forever in the kernel (uninterruptibly once
//! its daemon has read the request). So the lookup runs in a forked helper, which opens
//! `/proc/<pid>/root`, does its [`Job`] there and passes the descriptors it got back over a
//! socket (`SCM_RIGHTS`). The loop waits on that socket and a deadline, after which the helper
//! is killed. A helper the kill cannot stop yet is reaped later by [`reap_stragglers`], never
//! waited for.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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

/// What a helper does in the container's root.
pub enum Job {
    /// Open the devpts `ptmx` (checked: [`open_container_ptmx`]) and its first peer: master
    /// and slave.
    Ptmx,
    /// Connect a stream socket to the unix socket at this path (relative to the root, looked
    /// up with no link followed, checked to be a socket): the connected socket.
    ConnectUnix(CString),
}

/// Helpers alive at once (working, or killed and not reaped yet) for one container, and in
/// all: a container whose file system never answers keeps its helpers asleep in the kernel
/// for as long as it lives, and each holds one of supd's tasks (`TasksMax`). Past these, a
/// lookup is refused (503) until some are reaped.
pub const MAX_PER_CONTAINER: usize = 4;
pub const MAX_HELPERS: usize = 64;

/// What the helper sends: 0 with the descriptors attached, else the errno of the step that
/// failed.
const MESSAGE: usize = std::mem::size_of::<i32>();

/// A helper at work in the root of a container's first process.
pub struct InRoot {
    pid: i32,
    /// The pidfd of the container's first process ([`identity::pin`]).
    container: OwnedFd,
    /// Until reaped (or handed to the stragglers).
    helper: Option<Pid>,
    /// supd's end: non-blocking, close-on-exec.
    socket: OwnedFd,
    deadline: Instant,
}

/// How a helper's work ended, when it did not give the descriptors.
#[derive(Debug)]
pub enum Failed {
    /// The job failed with this errno (the container's process still lives).
    Job(Errno),
    /// Not done by the deadline: the helper was killed.
    Timeout(Duration),
    /// Anything else: the container went, the helper died, the socket failed.
    Other(Error),
}

impl InRoot {
    /// Forks the helper that does `job` in the root of process `pid`, bounded by `timeout`.
    /// The pid is pinned first ([`identity::pin`]) and must still be alive when the answer
    /// comes: then the root the helper looked into was the container's, not a successor's.
    pub fn start(pid: i32, container_id: &str, job: Job, timeout: Duration) -> Result<InRoot> {
        reap_stragglers();
        let (mine, all) =
            HELPERS.with_borrow(|h| (h.iter().filter(|(_, c)| c == container_id).count(), h.len()));
        if mine >= MAX_PER_CONTAINER || all >= MAX_HELPERS {
            return Err(Error::LookupsStuck {
                this_container: mine >= MAX_PER_CONTAINER,
            });
        }
        let container = identity::pin(pid, container_id)?;
        let (socket, child_end) = nix::sys::socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(sys("socketpair"))?;
        let root =
            CString::new(format!("/proc/{pid}/root")).map_err(|_| Error::BadTarget("bad pid"))?;
        let helper = process::fork_child(|| helper_main(&root, &job, child_end.as_fd()))
            .map_err(sys("fork"))?;
        drop(child_end);
        HELPERS.with_borrow_mut(|h| h.push((Pid::from_raw(helper), container_id.to_string())));
        let flags = nix::fcntl::fcntl(&socket, FcntlArg::F_GETFL).map_err(sys("fcntl"))?;
        nix::fcntl::fcntl(
            &socket,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(sys("fcntl"))?;
        Ok(InRoot {
            pid,
            container,
            helper: Some(Pid::from_raw(helper)),
            socket,
            deadline: Instant::now() + timeout,
        })
    }

    /// The helper's pid, until it is reaped or left to the stragglers.
    pub fn pid(&self) -> Option<Pid> {
        self.helper
    }

    /// The descriptor to wait on: readable when the helper answered or exited.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// When the job fails if the helper has not answered.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The helper's answer, without blocking: `None` while it works and the deadline is not
    /// past. Once it returns `Some`, the helper is gone (or left to [`reap_stragglers`]).
    pub fn progress(
        &mut self,
        timeout: Duration,
    ) -> Option<std::result::Result<Vec<OwnedFd>, Failed>> {
        self.helper?;
        let mut message = [0u8; MESSAGE];
        let result = match crate::sys::fd::recv_fds(self.socket.as_fd(), &mut message) {
            Err(Errno::EAGAIN) => {
                if Instant::now() < self.deadline {
                    return None;
                }
                Err(Failed::Timeout(timeout))
            }
            Err(errno) => Err(Failed::Other(Error::Sys {
                op: "receive from the helper",
                errno,
            })),
            Ok((n, fds)) => self.answer(n, message, fds),
        };
        self.finish();
        Some(result)
    }

    fn answer(
        &self,
        n: usize,
        message: [u8; MESSAGE],
        fds: Vec<OwnedFd>,
    ) -> std::result::Result<Vec<OwnedFd>, Failed> {
        if n != MESSAGE {
            // The helper died before answering (killed, or out of memory).
            return Err(Failed::Other(Error::Sys {
                op: "look into the container (the helper exited without an answer)",
                errno: Errno::EPIPE,
            }));
        }
        if !self.alive() {
            return Err(Failed::Other(Error::ContainerGone { pid: self.pid }));
        }
        match i32::from_ne_bytes(message) {
            0 => Ok(fds),
            errno => Err(Failed::Job(Errno::from_raw(errno))),
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
            // Not reaped yet (it is in the list until then): the pid is still the helper's.
            if HELPERS.with_borrow(|h| h.iter().any(|(p, _)| *p == helper)) {
                let _ = nix::sys::signal::kill(helper, Signal::SIGKILL);
            }
            reap_stragglers();
        }
    }

    /// Blocks until the helper answers or its deadline passes: for tests and tools, never on
    /// supd's loop.
    pub fn wait(&mut self, timeout: Duration) -> std::result::Result<Vec<OwnedFd>, Failed> {
        let helper = self.helper;
        loop {
            if let Some(result) = self.progress(timeout) {
                // Off the loop, the caller may wait a little for the helper's exit (it has
                // answered, or been killed): no zombie is left for a caller without a loop.
                if let Some(helper) = helper {
                    reap_soon(helper);
                }
                return result;
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            let millis = PollTimeout::try_from(left.as_millis().clamp(1, 60_000) as i32)
                .unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.socket(), PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, millis) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(errno) => return Err(Failed::Other(Error::Sys { op: "poll", errno })),
            }
        }
    }
}

impl Drop for InRoot {
    fn drop(&mut self) {
        self.finish();
    }
}

thread_local! {
    /// Killed helpers not reaped yet: one asleep in a FUSE request the container's daemon
    /// never answers dies only when the answer comes or the container's FUSE connection goes.
    /// Every helper not reaped yet (working, or killed), with its container's id.
    static HELPERS: RefCell<Vec<(Pid, String)>> = const { RefCell::new(Vec::new()) };
}

/// Reaps the helpers that have died since they were killed, without waiting. The loop calls
/// it on every turn (cheap when there are none).
pub fn reap_stragglers() {
    HELPERS.with_borrow_mut(|helpers| {
        helpers.retain(|&(helper, _)| {
            matches!(
                nix::sys::wait::waitpid(helper, Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR)
            )
        })
    });
}

/// Whether `helper`, killed, is still not reaped (asleep in a container's file system).
pub fn straggling(helper: Pid) -> bool {
    reap_stragglers();
    HELPERS.with_borrow(|h| h.iter().any(|(p, _)| *p == helper))
}

/// Waits up to a second for `helper` (killed) to be reaped, then leaves it to
/// [`reap_stragglers`]. Blocks: never on the loop.
fn reap_soon(helper: Pid) {
    for _ in 0..100 {
        reap_stragglers();
        if !HELPERS.with_borrow(|h| h.iter().any(|(p, _)| *p == helper)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The helper's work (after fork: no allocation). Returns its exit code.
fn helper_main(root_path: &CStr, job: &Job, out: BorrowedFd<'_>) -> i32 {
    // The lookup may hang in the container's file system for as long as the container lives,
    // past supd itself: hold nothing of supd's meanwhile (its listening sockets would keep a
    // restarted supd from binding), only the answer socket, moved to 3.
    if process::move_fd_cloexec(out, 3).is_err() || process::close_from(4).is_err() {
        return 1;
    }
    let out = process::kept_fd(3);
    let root = match nix::fcntl::open(
        root_path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(root) => root,
        Err(errno) => return send(out, errno as i32, &[]),
    };
    match job {
        Job::Ptmx => match open_container_ptmx(root.as_fd()) {
            Ok((master, slave)) => send(out, 0, &[master.as_fd(), slave.as_fd()]),
            Err(errno) => send(out, errno as i32, &[]),
        },
        Job::ConnectUnix(path) => match connect_in_root(root.as_fd(), path) {
            Ok(socket) => send(out, 0, &[socket.as_fd()]),
            Err(errno) => send(out, errno as i32, &[]),
        },
    }
}

fn send(out: BorrowedFd<'_>, code: i32, fds: &[BorrowedFd<'_>]) -> i32 {
    i32::from(crate::sys::fd::send_fds(out, &code.to_ne_bytes(), fds).is_err())
}

/// Connects to the unix socket at `path` in `root`: the path is resolved in the root with no
/// link followed, the inode must be a socket, and the connection goes through the handle
/// (`/proc/self/fd/N`), so nothing outside the container's tree can be reached.
fn connect_in_root(root: BorrowedFd<'_>, path: &CStr) -> nix::Result<OwnedFd> {
    let handle = process::open_path_in_root(root, path)?;
    let stat = nix::sys::stat::fstat(handle.as_fd())?;
    let kind = nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode);
    if kind & nix::sys::stat::SFlag::S_IFMT != nix::sys::stat::SFlag::S_IFSOCK {
        return Err(Errno::ENOTSOCK);
    }
    process::connect_unix_handle(handle.as_fd())
}

/// The device number of every devpts `ptmx` (major 5, minor 2).
const PTMX_RDEV: (u64, u64) = (5, 2);

/// The container chooses what is at its `/dev/pts/ptmx`, and supd is the host's root: whatever
/// is there is only looked at (an `O_PATH` handle, no link followed) until it is proved to be
/// a devpts `ptmx`, and only then opened. Opening first would run the open of any device the
/// container mknod'ed there (a host device, past the devices cgroup that binds the container).
fn open_container_ptmx(root: BorrowedFd<'_>) -> nix::Result<(OwnedFd, OwnedFd)> {
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
    Ok((master, slave))
}

/// Opens the very file an `O_PATH` handle refers to, with `flags` (close-on-exec added),
/// through `/proc/self/fd`: no path of anyone else's is resolved again. Without allocating
/// (the helper is a forked child): the path is written into a stack buffer.
fn reopen(handle: BorrowedFd<'_>, flags: OFlag) -> nix::Result<OwnedFd> {
    let mut buf = [0u8; process::FD_PATH_LEN];
    let path = process::self_fd_path(handle, &mut buf);
    nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, Mode::empty())
}

fn sys(op: &'static str) -> impl Fn(Errno) -> Error {
    move |errno| Error::Sys { op, errno }
}
