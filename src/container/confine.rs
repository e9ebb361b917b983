//! What confines the container's first process (its init, Docker's `State.Pid`), read before
//! a spawn so that the command is confined at least as tightly.
//!
//! - Capabilities. The command gets the init's bounding and inheritable sets and an empty
//!   ambient set; its permitted and effective sets are limited to the bounding set before
//!   execve, and execve then computes them for the command's user as it did for the init's:
//!   uid 0 gets bounding | inheritable, any other uid gets nothing (ambient is empty), both
//!   widened only by file capabilities or set-user-ID bits of the program, as for any process
//!   of the container. So a command run as the init's user has the init's four sets, and a
//!   command run as another user has what `docker exec --user` gives it (runc's exec applies
//!   the container's sets and lets execve do the same computation).
//! - `no_new_privs` when the init has it.
//! - The init's seccomp filters, all of them, installed in the order the init got them.
//!   They are read with `PTRACE_SECCOMP_GET_FILTER` by a short-lived helper process forked
//!   from supd (see [`Reading::start`] for why there), which the loop waits for like any other
//!   descriptor ([`lookup`]); they are cached per init, and so is a failure, for a while.
//! - The init's LSM label, when the kernel has AppArmor or SELinux.
//! - The init's resource limits, not supd's own (supd raises its descriptor limit).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::{Rc, Weak};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use super::{Error, Result};
use crate::sys::confine::{self as sys, BPF_MAX_INSTRUCTIONS, BpfInstruction, Limit, Stop};
use crate::sys::process;

/// `RLIMIT_NLIMITS`: resources 0 to 15.
pub const RESOURCES: usize = 16;
/// Bound on what is read of `/proc/<pid>/status`, `stat` and `attr/current`.
const MAX_PROC_FILE: u64 = 64 << 10;
/// How long supd waits for the init to stop and hand over its filters. The init stops at
/// once unless it is frozen or in an uninterruptible sleep (a process parked in vfork never
/// stops for PTRACE_INTERRUPT); the requests waiting for it fail then, the loop goes on.
pub const FILTER_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a failed read of an init's filters is remembered, answering every exec into that
/// init with the same error at once. An init that did not stop within the timeout is parked
/// where a ptrace stop cannot reach it (an uninterruptible sleep, a frozen cgroup) and is most
/// likely still there a moment later: without this memory each exec would fork another
/// helper and hold its client for the full timeout, which a container can provoke at will.
/// Half a minute keeps that to one helper per init per 30 s, yet an init that was only
/// briefly stuck is usable again soon; a new init (a restart: new pid or start time) starts
/// clean.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(30);
/// The kernel caps all filters of a process at 32,768 instructions plus 4 per filter.
const MAX_FILTERS: usize = 1024;
const MAX_FILTER_BYTES: usize = 512 << 10;
/// Inits whose filters are kept; beyond this, entries of processes gone are dropped.
const MAX_CACHED: usize = 64;

/// Records the tracer helper writes: a filter is its length then its instructions.
const RECORD_END: u32 = u32::MAX;
const RECORD_ERROR: u32 = u32::MAX - 1;
/// Steps of the tracer helper, as its error record names them.
const TRACER_STEPS: [&str; 6] = [
    "prctl(PR_SET_DUMPABLE)",
    "ptrace(PTRACE_SEIZE) the container's first process",
    "ptrace(PTRACE_INTERRUPT)",
    "wait for the container's first process to stop",
    "ptrace(PTRACE_SECCOMP_GET_FILTER)",
    "write seccomp filter",
];

/// The init's seccomp filters, in the order they were installed (oldest first).
pub type Filters = Vec<Vec<BpfInstruction>>;

/// An LSM label to change onto at execve: `value` written to `attr` under the host's /proc.
pub struct Label {
    /// The host's /proc, so that a container cannot stand in its own /proc for the write.
    pub proc: OwnedFd,
    pub attr: &'static CStr,
    pub value: Vec<u8>,
}

/// Everything the command takes over from the init.
pub struct Confinement {
    pub bounding: u64,
    pub inheritable: u64,
    pub last_cap: u32,
    pub no_new_privs: bool,
    /// Shared with the cache; empty when the init has no filter.
    pub filters: Rc<Filters>,
    /// By resource number; `None` where the kernel does not know the resource.
    pub limits: [Option<Limit>; RESOURCES],
    pub label: Option<Label>,
}

/// The fields of `/proc/<pid>/status` that confinement uses.
#[derive(Debug, PartialEq, Eq)]
struct Status {
    bounding: u64,
    inheritable: u64,
    no_new_privs: bool,
    /// 0 none, 1 strict, 2 filter.
    seccomp: u32,
    filters: u32,
}

fn parse_status(text: &str) -> Result<Status> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let caps = |name: &str, missing: &'static str| {
        field(name)
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .ok_or(Error::BadTarget(missing))
    };
    let number = |name: &str| {
        field(name).map_or(Ok(0), |n| {
            n.parse::<u32>()
                .map_err(|_| Error::BadTarget("unreadable seccomp fields in /proc/<pid>/status"))
        })
    };
    Ok(Status {
        bounding: caps("CapBnd", "no capability bounding set in /proc/<pid>/status")?,
        inheritable: caps(
            "CapInh",
            "no inheritable capabilities in /proc/<pid>/status",
        )?,
        no_new_privs: field("NoNewPrivs") == Some("1"),
        seccomp: number("Seccomp")?,
        filters: number("Seccomp_filters")?,
    })
}

/// Field 22 of `/proc/<pid>/stat`, the start time: with the pid, it names one process.
fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses; it ends at the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn read_proc(pid: i32, file: &str, op: &'static str) -> Result<String> {
    let mut text = String::new();
    std::fs::File::open(format!("/proc/{pid}/{file}"))
        .and_then(|f| f.take(MAX_PROC_FILE).read_to_string(&mut text))
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ENOENT | libc::ESRCH) => Error::ContainerGone { pid },
            _ => Error::Io { op, source },
        })?;
    Ok(text)
}

fn start_time(pid: i32) -> Result<u64> {
    let stat = read_proc(pid, "stat", "read process stat")?;
    parse_start_time(&stat).ok_or(Error::BadTarget("unreadable /proc/<pid>/stat"))
}

/// The highest capability this kernel knows; it cannot change while the kernel runs, so it is
/// read once, not on every exec.
fn read_last_cap() -> Result<u32> {
    static LAST_CAP: OnceLock<u32> = OnceLock::new();
    if let Some(last) = LAST_CAP.get() {
        return Ok(*last);
    }
    let text =
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").map_err(|source| Error::Io {
            op: "read cap_last_cap",
            source,
        })?;
    let last = text
        .trim()
        .parse()
        .map_err(|_| Error::BadTarget("unreadable /proc/sys/kernel/cap_last_cap"))?;
    Ok(*LAST_CAP.get_or_init(|| last))
}

/// Reads the confinement of process `pid`, whose seccomp filters `seccomp` holds (from
/// [`lookup`]). The caller holds a pidfd of it and checks that it is still alive afterwards,
/// so that nothing read here belongs to a successor.
pub fn read(pid: i32, seccomp: &InitFilters) -> Result<Confinement> {
    let status = parse_status(&read_proc(pid, "status", "read process status")?)?;
    if status.seccomp == 1 {
        return Err(strict_mode());
    }
    // The filters were read a moment ago, maybe while the request waited: from this very
    // process, and it has not stacked another one since (kernels before 5.9 do not count).
    if seccomp.pid != pid || start_time(pid)? != seccomp.start_time {
        return Err(Error::ContainerGone { pid });
    }
    let have = seccomp.filters.len();
    let changed = match status.seccomp {
        0 => have != 0,
        _ => have == 0 || (status.filters != 0 && status.filters as usize != have),
    };
    if changed {
        return Err(Error::BadTarget(
            "the container's first process changed its seccomp filters meanwhile; try again",
        ));
    }
    let filters = Rc::clone(&seccomp.filters);
    Ok(Confinement {
        bounding: status.bounding,
        inheritable: status.inheritable,
        last_cap: read_last_cap()?,
        no_new_privs: status.no_new_privs,
        filters,
        limits: read_limits(pid)?,
        label: read_label(pid)?,
    })
}

/// The rows of `/proc/<pid>/limits`, by resource number (the kernel's `lnames`).
const LIMIT_NAMES: [&str; RESOURCES] = [
    "Max cpu time",
    "Max file size",
    "Max data size",
    "Max stack size",
    "Max core file size",
    "Max resident set",
    "Max processes",
    "Max open files",
    "Max locked memory",
    "Max address space",
    "Max file locks",
    "Max pending signals",
    "Max msgqueue size",
    "Max nice priority",
    "Max realtime priority",
    "Max realtime timeout",
];

/// From `/proc/<pid>/limits`, which root may read for any process; `prlimit` on another
/// process would need CAP_SYS_RESOURCE when its user differs, and supd may lack it.
fn read_limits(pid: i32) -> Result<[Option<Limit>; RESOURCES]> {
    parse_limits(&read_proc(pid, "limits", "read process limits")?)
}

fn parse_limits(text: &str) -> Result<[Option<Limit>; RESOURCES]> {
    let bad = || Error::BadTarget("unreadable /proc/<pid>/limits");
    let value = |v: Option<&str>| match v {
        Some("unlimited") => Ok(libc::RLIM_INFINITY),
        Some(n) => n.parse().map_err(|_| bad()),
        None => Err(bad()),
    };
    let mut limits = [None; RESOURCES];
    for line in text.lines() {
        let Some((resource, rest)) = LIMIT_NAMES
            .iter()
            .enumerate()
            .find_map(|(i, name)| Some((i, line.strip_prefix(name)?)))
        else {
            continue;
        };
        // A whole name is followed by the column's padding.
        if !rest.starts_with(' ') {
            continue;
        }
        let mut columns = rest.split_whitespace();
        limits[resource] = Some((value(columns.next())?, value(columns.next())?));
    }
    if limits.iter().all(Option::is_none) {
        return Err(bad());
    }
    Ok(limits)
}

// ---- seccomp filters ----------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct FilterKey {
    pid: i32,
    start_time: u64,
    /// A process may stack more filters on itself; a new count means a new read.
    count: u32,
}

/// Why a read of one init's filters failed, kept to answer later requests the same way.
#[derive(Clone, Copy, Debug)]
enum Failure {
    Sys { op: &'static str, errno: Errno },
    BadTarget(&'static str),
    Gone,
}

impl Failure {
    fn of(error: &Error) -> Failure {
        match error {
            Error::ContainerGone { .. } => Failure::Gone,
            Error::Sys { op, errno } => Failure::Sys { op, errno: *errno },
            Error::Io { op, source } => Failure::Sys {
                op,
                errno: Errno::from_raw(source.raw_os_error().unwrap_or(libc::EIO)),
            },
            Error::BadTarget(why) | Error::BadCommand(why) => Failure::BadTarget(why),
            Error::BadHandoff => Failure::BadTarget("malformed seccomp filters"),
            // Not an outcome of reading filters; kept distinct all the same.
            Error::StartTimeout { .. }
            | Error::TerminalTimeout { .. }
            | Error::LookupsStuck { .. } => Failure::Sys {
                op: "start",
                errno: Errno::ETIMEDOUT,
            },
        }
    }

    fn error(self, pid: i32) -> Error {
        match self {
            Failure::Sys { op, errno } => Error::Sys { op, errno },
            Failure::BadTarget(why) => Error::BadTarget(why),
            Failure::Gone => Error::ContainerGone { pid },
        }
    }
}

thread_local! {
    /// supd's loop is one thread; per-thread, tests that spawn from several threads stay
    /// independent.
    static FILTER_CACHE: RefCell<HashMap<FilterKey, Rc<Filters>>> = RefCell::new(HashMap::new());
    /// Failed reads by init (pid, start time), with when they failed; see [`FAILURE_MEMORY`].
    static FAILED: RefCell<HashMap<(i32, u64), (Failure, Instant)>> =
        RefCell::new(HashMap::new());
    /// Reads in progress, so that requests for one init share one helper.
    static IN_FLIGHT: RefCell<HashMap<FilterKey, Weak<RefCell<Reading>>>> =
        RefCell::new(HashMap::new());
}

/// The seccomp filters of one process (pid and start time), as read from it.
pub struct InitFilters {
    pid: i32,
    start_time: u64,
    filters: Rc<Filters>,
}

#[cfg(test)]
impl InitFilters {
    /// No filter, for tests that never get as far as reading them.
    pub(crate) fn none(pid: i32) -> InitFilters {
        InitFilters {
            pid,
            start_time: 0,
            filters: Rc::new(Vec::new()),
        }
    }
}

/// What [`lookup`] found.
pub enum Lookup {
    /// Known now: the init has no filter, or they were read before.
    Ready(InitFilters),
    /// A helper is reading them; wait for [`FilterRead::watch`] to be readable or for
    /// [`FilterRead::deadline`], then ask [`FilterRead::progress`].
    Reading(FilterRead),
}

/// Finds the seccomp filters of process `pid`, never blocking: from the cache, a failure of
/// the last [`FAILURE_MEMORY`], a read already in progress for the same process, or a new
/// read by a helper process.
pub fn lookup(pid: i32) -> Result<Lookup> {
    let status = parse_status(&read_proc(pid, "status", "read process status")?)?;
    let start_time = start_time(pid)?;
    match status.seccomp {
        0 => {
            return Ok(Lookup::Ready(InitFilters {
                pid,
                start_time,
                filters: Rc::new(Vec::new()),
            }));
        }
        2 => {}
        _ => return Err(strict_mode()),
    }
    let key = FilterKey {
        pid,
        start_time,
        count: status.filters,
    };
    if let Some(filters) = FILTER_CACHE.with_borrow(|cache| cache.get(&key).cloned()) {
        return Ok(Lookup::Ready(InitFilters {
            pid,
            start_time,
            filters,
        }));
    }
    let failed = FAILED.with_borrow(|failed| failed.get(&(pid, start_time)).copied());
    if let Some((failure, at)) = failed
        && at.elapsed() < FAILURE_MEMORY
    {
        return Err(failure.error(pid));
    }
    let joined = IN_FLIGHT.with_borrow(|reads| {
        reads
            .get(&key)
            .and_then(Weak::upgrade)
            .filter(|r| r.borrow().outcome.is_none())
    });
    if let Some(reading) = joined {
        return Ok(Lookup::Reading(FilterRead(reading)));
    }
    let reading = Rc::new(RefCell::new(Reading::start(key)?));
    IN_FLIGHT.with_borrow_mut(|reads| {
        reads.retain(|_, r| r.strong_count() > 0);
        reads.insert(key, Rc::downgrade(&reading));
    });
    Ok(Lookup::Reading(FilterRead(reading)))
}

/// [`lookup`], then waits for the read: blocks up to [`FILTER_READ_TIMEOUT`], so never on
/// supd's loop (for tests and tools).
pub fn lookup_blocking(pid: i32) -> Result<InitFilters> {
    match lookup(pid)? {
        Lookup::Ready(filters) => Ok(filters),
        Lookup::Reading(read) => read.wait(),
    }
}

fn strict_mode() -> Error {
    Error::BadTarget("the container's first process is in seccomp strict mode")
}

/// A shared handle on one read in progress; the helper is killed and reaped when the last
/// handle goes before the read has finished.
pub struct FilterRead(Rc<RefCell<Reading>>);

impl FilterRead {
    /// A descriptor of the helper's pipe for the caller's poller (one per caller: the same
    /// descriptor cannot be registered twice): readable when there is news.
    pub fn watch(&self) -> Result<OwnedFd> {
        self.0
            .borrow()
            .pipe
            .try_clone()
            .map_err(|source| Error::Io {
                op: "dup the seccomp helper's pipe",
                source,
            })
    }

    /// When the read fails if the helper has not finished.
    pub fn deadline(&self) -> Instant {
        self.0.borrow().deadline
    }

    /// Reads what the helper wrote, without blocking: `None` while it works.
    pub fn progress(&self) -> Option<Result<InitFilters>> {
        let mut reading = self.0.borrow_mut();
        if reading.outcome.is_none() {
            reading.pump();
        }
        let key = reading.key;
        reading.outcome.as_ref().map(|outcome| match outcome {
            Ok(filters) => Ok(InitFilters {
                pid: key.pid,
                start_time: key.start_time,
                filters: Rc::clone(filters),
            }),
            Err(failure) => Err(failure.error(key.pid)),
        })
    }

    /// Blocks until the read has finished (off the loop only).
    pub fn wait(self) -> Result<InitFilters> {
        loop {
            if let Some(outcome) = self.progress() {
                return outcome;
            }
            let left = self.deadline().saturating_duration_since(Instant::now());
            let millis = PollTimeout::try_from(left.as_millis().clamp(1, 60_000) as i32)
                .unwrap_or(PollTimeout::MAX);
            let reading = self.0.borrow();
            let mut fds = [PollFd::new(reading.pipe.as_fd(), PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, millis) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(errno) => return Err(Error::Sys { op: "poll", errno }),
            }
        }
    }
}

/// One helper at work on one init's filters.
struct Reading {
    key: FilterKey,
    /// Until reaped.
    helper: Option<Pid>,
    /// Non-blocking.
    pipe: OwnedFd,
    bytes: Vec<u8>,
    deadline: Instant,
    outcome: Option<std::result::Result<Rc<Filters>, Failure>>,
}

impl Reading {
    /// Forks the helper that reads the filters ([`tracer`]).
    ///
    /// The tracer is a helper process forked for the purpose, not the loop and not the exec
    /// children:
    /// - the filters must be known before the exec children fork, which never allocate;
    /// - a stop that never comes (an init frozen, or asleep uninterruptibly as in vfork) is
    ///   bounded by killing the helper, and the kernel detaches a tracer's tracees when it
    ///   exits, so no path leaves the init stopped or traced, whatever happens to supd;
    /// - the stop is reported to the helper's `waitpid(pid, __WALL)`, never to supd, whose own
    ///   waits name their pids, so nothing in the loop sees a ptrace stop or a traced non-child;
    /// - its pipe is all the loop waits on, so a helper that never finishes costs the loop
    ///   nothing but a timer;
    /// - the cost (a fork and a few ptrace calls) is paid once per init, then cached.
    fn start(key: FilterKey) -> Result<Reading> {
        let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_error("pipe2"))?;
        // The reader only: the helper's writes may block until the loop reads.
        let flags = nix::fcntl::fcntl(&reader, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(sys_error("fcntl"))?;
        nix::fcntl::fcntl(
            &reader,
            nix::fcntl::FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(sys_error("fcntl"))?;
        let mut buffer = vec![
            BpfInstruction {
                code: 0,
                jt: 0,
                jf: 0,
                k: 0,
            };
            BPF_MAX_INSTRUCTIONS
        ];
        let helper = process::fork_child(|| tracer(key.pid, writer.as_fd(), &mut buffer))
            .map_err(sys_error("fork"))?;
        log::debug!(
            "reading the seccomp filters of process {} (helper {helper})",
            key.pid
        );
        Ok(Reading {
            key,
            helper: Some(Pid::from_raw(helper)),
            pipe: reader,
            bytes: Vec::new(),
            deadline: Instant::now() + FILTER_READ_TIMEOUT,
            outcome: None,
        })
    }

    /// Takes what the pipe holds; finishes at EOF, on an error or past the deadline.
    fn pump(&mut self) {
        let mut chunk = [0u8; 16 << 10];
        loop {
            match nix::unistd::read(&self.pipe, &mut chunk) {
                Ok(0) => {
                    let result = self.reap(false).and_then(|()| self.parse());
                    return self.finish(result);
                }
                Ok(n) if self.bytes.len() + n <= MAX_FILTER_BYTES => {
                    self.bytes.extend_from_slice(&chunk[..n])
                }
                Ok(_) => return self.finish(Err(Error::BadTarget("too many seccomp filters"))),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(errno) => return self.finish(Err(Error::Sys { op: "read", errno })),
            }
        }
        if Instant::now() >= self.deadline {
            self.finish(Err(Error::Sys {
                op: "read the seccomp filters of the container's first process",
                errno: Errno::ETIMEDOUT,
            }));
        }
    }

    fn parse(&self) -> Result<Filters> {
        let filters = parse_records(&self.bytes, self.key.pid)?;
        // The same process, or the pid was reused meanwhile and the filters are someone else's.
        if start_time(self.key.pid)? != self.key.start_time {
            return Err(Error::ContainerGone { pid: self.key.pid });
        }
        Ok(filters)
    }

    /// Reaps the helper: short, as it has closed its pipe by exiting or is killed first.
    fn reap(&mut self, kill: bool) -> Result<()> {
        let Some(helper) = self.helper.take() else {
            return Ok(());
        };
        if kill {
            let _ = nix::sys::signal::kill(helper, Signal::SIGKILL);
        }
        loop {
            match nix::sys::wait::waitpid(helper, None) {
                Err(Errno::EINTR) => {}
                Ok(_) => return Ok(()),
                Err(errno) => {
                    return Err(Error::Sys {
                        op: "waitpid",
                        errno,
                    });
                }
            }
        }
    }

    /// Settles the read for every request waiting on it and for those within the next
    /// [`FAILURE_MEMORY`].
    fn finish(&mut self, result: Result<Filters>) {
        let key = self.key;
        let reaped = self.reap(true);
        let result = result.and_then(|filters| reaped.map(|()| filters));
        self.bytes = Vec::new();
        IN_FLIGHT.with_borrow_mut(|reads| reads.remove(&key));
        match result {
            Ok(filters) => {
                let filters = Rc::new(filters);
                let key = FilterKey {
                    count: filters.len() as u32,
                    ..key
                };
                FILTER_CACHE.with_borrow_mut(|cache| {
                    if cache.len() >= MAX_CACHED {
                        cache.retain(|k, _| start_time(k.pid).ok() == Some(k.start_time));
                        if cache.len() >= MAX_CACHED {
                            cache.clear();
                        }
                    }
                    cache.insert(key, Rc::clone(&filters));
                });
                self.outcome = Some(Ok(filters));
            }
            Err(error) => {
                log::warn!(
                    "seccomp filters of process {}: {error}; execs into it fail for {:?}",
                    key.pid,
                    FAILURE_MEMORY
                );
                let failure = Failure::of(&error);
                FAILED.with_borrow_mut(|failed| {
                    failed.retain(|_, (_, at)| at.elapsed() < FAILURE_MEMORY);
                    if failed.len() >= MAX_CACHED {
                        failed.clear();
                    }
                    failed.insert((key.pid, key.start_time), (failure, Instant::now()));
                });
                self.outcome = Some(Err(failure));
            }
        }
    }
}

impl Drop for Reading {
    /// Nobody waits any more (clients gone, supd stopping): the helper goes now.
    fn drop(&mut self) {
        if let Err(e) = self.reap(true) {
            log::warn!("seccomp helper of process {}: {e}", self.key.pid);
        }
    }
}

fn sys_error(op: &'static str) -> impl Fn(Errno) -> Error {
    move |errno| Error::Sys { op, errno }
}

fn parse_records(mut bytes: &[u8], pid: i32) -> Result<Filters> {
    let truncated = || Error::BadTarget("truncated seccomp filters from the tracer");
    let take_u32 = |bytes: &mut &[u8]| -> Option<u32> {
        let (head, rest) = bytes.split_first_chunk::<4>()?;
        *bytes = rest;
        Some(u32::from_ne_bytes(*head))
    };
    let mut filters = Vec::new();
    loop {
        match take_u32(&mut bytes) {
            None => return Err(truncated()),
            Some(RECORD_END) if bytes.is_empty() => return Ok(filters),
            Some(RECORD_END) => return Err(truncated()),
            Some(RECORD_ERROR) => {
                let errno = take_u32(&mut bytes).ok_or_else(truncated)?;
                let step = take_u32(&mut bytes).ok_or_else(truncated)?;
                let op = TRACER_STEPS.get(step as usize).copied().unwrap_or("ptrace");
                let errno = Errno::from_raw(errno as i32);
                return Err(match errno {
                    Errno::ESRCH => Error::ContainerGone { pid },
                    errno => Error::Sys { op, errno },
                });
            }
            Some(len) => {
                let len = len as usize;
                if len == 0 || len > BPF_MAX_INSTRUCTIONS || filters.len() == MAX_FILTERS {
                    return Err(Error::BadTarget("malformed seccomp filter"));
                }
                let (program, rest) = bytes.split_at_checked(len * 8).ok_or_else(truncated)?;
                bytes = rest;
                filters.push(
                    program
                        .chunks_exact(8)
                        .map(|i| BpfInstruction {
                            code: u16::from_ne_bytes([i[0], i[1]]),
                            jt: i[2],
                            jf: i[3],
                            k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
                        })
                        .collect(),
                );
            }
        }
    }
}

/// The tracer helper (a forked child: no allocation). Writes each filter, oldest first, then
/// an end record, or an error record. Every exit detaches: explicitly once stopped, else by
/// the kernel when the helper exits.
fn tracer(pid: i32, out: BorrowedFd<'_>, buffer: &mut [BpfInstruction]) -> i32 {
    let fail = |step: u32, errno: Errno| {
        let mut record = [0u8; 12];
        record[..4].copy_from_slice(&RECORD_ERROR.to_ne_bytes());
        record[4..8].copy_from_slice(&(errno as i32 as u32).to_ne_bytes());
        record[8..].copy_from_slice(&step.to_ne_bytes());
        let _ = write_all(out, &record);
        process::EXIT_SETUP_FAILED
    };
    // It holds all of supd's descriptors: nobody may ptrace it or open its /proc/<pid>/fd.
    if let Err(errno) = nix::sys::prctl::set_dumpable(false) {
        return fail(0, errno);
    }
    if let Err(errno) = sys::ptrace_seize(pid) {
        return fail(1, errno);
    }
    if let Err(errno) = sys::ptrace_interrupt(pid) {
        return fail(2, errno);
    }
    let signal = match sys::wait_for_stop(pid) {
        Ok(Stop::Stopped { signal }) => signal,
        Ok(Stop::Exited) => return fail(3, Errno::ESRCH),
        Err(errno) => return fail(3, errno),
    };
    let copied = copy_filters(pid, out, buffer);
    let detached = sys::ptrace_detach(pid, signal);
    if let Err((step, errno)) = copied {
        return fail(step, errno);
    }
    if let Err(errno) = detached {
        return fail(2, errno);
    }
    match write_all(out, &RECORD_END.to_ne_bytes()) {
        Ok(()) => 0,
        Err(errno) => fail(5, errno),
    }
}

fn copy_filters(
    pid: i32,
    out: BorrowedFd<'_>,
    buffer: &mut [BpfInstruction],
) -> std::result::Result<(), (u32, Errno)> {
    for index in 0..MAX_FILTERS {
        let len = match sys::read_seccomp_filter(pid, index, buffer) {
            Ok(len) => len,
            Err(Errno::ENOENT) => return Ok(()),
            Err(errno) => return Err((4, errno)),
        };
        write_all(out, &(len as u32).to_ne_bytes()).map_err(|e| (5, e))?;
        write_all(out, sys::instruction_bytes(&buffer[..len])).map_err(|e| (5, e))?;
    }
    Err((4, Errno::E2BIG))
}

fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> nix::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

// ---- LSM labels ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lsm {
    None,
    AppArmor,
    SeLinux,
}

/// The kernel's labelling LSM, which cannot change while it runs.
fn lsm() -> Lsm {
    static LSM: OnceLock<Lsm> = OnceLock::new();
    *LSM.get_or_init(|| {
        let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|v| v.starts_with('Y'));
        if apparmor {
            Lsm::AppArmor
        } else if std::path::Path::new("/sys/fs/selinux/enforce").exists() {
            Lsm::SeLinux
        } else {
            Lsm::None
        }
    })
}

/// What to write to `attr/exec` for the command to get the init's label, as runc does.
fn read_label(pid: i32) -> Result<Option<Label>> {
    let (attr, value) = match lsm() {
        Lsm::None => return Ok(None),
        Lsm::AppArmor => {
            // The per-LSM file (Linux 5.8) is right even when another LSM owns attr/current.
            let (current, attr) = match read_proc(pid, "attr/apparmor/current", "read label") {
                Ok(text) => (text, c"thread-self/attr/apparmor/exec"),
                Err(Error::ContainerGone { .. }) => (
                    read_proc(pid, "attr/current", "read label")?,
                    c"thread-self/attr/exec",
                ),
                Err(e) => return Err(e),
            };
            match apparmor_profile(&current) {
                None => return Ok(None),
                Some(profile) => (attr, format!("exec {profile}").into_bytes()),
            }
        }
        Lsm::SeLinux => {
            let current = read_proc(pid, "attr/current", "read label")?;
            let context = current.trim_end_matches(['\0', '\n']);
            if context.is_empty() {
                return Ok(None);
            }
            (c"thread-self/attr/exec", context.as_bytes().to_vec())
        }
    };
    let proc = nix::fcntl::open(
        c"/proc",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys_error("open /proc"))?;
    Ok(Some(Label { proc, attr, value }))
}

/// The profile of an AppArmor `attr/current` ("name (mode)"); `None` when unconfined.
fn apparmor_profile(current: &str) -> Option<&str> {
    let current = current.trim_end_matches(['\0', '\n']);
    let profile = match current.strip_suffix(')').and_then(|c| c.rsplit_once(" (")) {
        Some((profile, _mode)) => profile,
        None => current,
    };
    (!profile.is_empty() && profile != "unconfined").then_some(profile)
}

// ---- applied by the command, just before execve (no allocation) ---------------------------

/// Sets the init's resource limits. Raising a hard limit above supd's needs
/// CAP_SYS_RESOURCE; without it the command keeps the lower hard limit, which is tighter.
pub fn apply_limits(limits: &[Option<Limit>; RESOURCES]) -> std::result::Result<(), Errno> {
    for (resource, limit) in limits.iter().enumerate() {
        let Some((soft, hard)) = *limit else { continue };
        let resource = resource as u32;
        match sys::set_own_limit(resource, (soft, hard)) {
            Ok(()) => {}
            Err(Errno::EPERM) => {
                let (_, own_hard) = sys::process_limit(0, resource)?;
                let hard = hard.min(own_hard);
                sys::set_own_limit(resource, (soft.min(hard), hard))?;
            }
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

/// Asks for the init's LSM label at the next execve.
pub fn apply_label(label: &Label) -> std::result::Result<(), Errno> {
    let attr = sys::open_for_write(label.proc.as_fd(), label.attr)?;
    let written = nix::unistd::write(&attr, &label.value)?;
    if written != label.value.len() {
        return Err(Errno::EIO);
    }
    Ok(())
}

/// Installs the init's filters in the order it got them.
pub fn apply_filters(filters: &Filters) -> std::result::Result<(), Errno> {
    filters
        .iter()
        .try_for_each(|program| sys::install_seccomp_filter(program))
}

/// What the exec intermediate must hold once its privileged steps ran: no capability outside
/// the container's, the user's ids and groups only.
pub struct Expected<'a> {
    pub bounding: u64,
    pub inheritable: u64,
    pub no_new_privs: bool,
    pub uid: u32,
    pub gid: u32,
    pub groups: &'a [nix::unistd::Gid],
}

/// Checks the intermediate's own `/proc/self/status` (`text`, as the kernel wrote it) against
/// `expected`, without allocating (it runs in a forked child). Every field must be present:
/// a read the container's seccomp filter faked returns nothing (or leaves the zeroed buffer
/// untouched), which fails here instead of passing for "nothing held".
pub fn check_own_status(
    text: &[u8],
    expected: &Expected<'_>,
) -> std::result::Result<(), &'static str> {
    let text = std::str::from_utf8(text).map_err(|_| "unreadable /proc/self/status")?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let caps = |name: &str| {
        field(name)
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .ok_or("capabilities missing from /proc/self/status")
    };
    let allowed = expected.inheritable & expected.bounding;
    if caps("CapBnd")? & !expected.bounding != 0 {
        return Err("bounding set not dropped");
    }
    if (caps("CapPrm")? | caps("CapEff")?) & !expected.bounding != 0 {
        return Err("permitted or effective capabilities not dropped");
    }
    if caps("CapInh")? & !allowed != 0 {
        return Err("inheritable capabilities not dropped");
    }
    if caps("CapAmb")? != 0 {
        return Err("ambient capabilities not cleared");
    }
    let ids = |name: &str, want: u32| {
        let values = field(name).ok_or("ids missing from /proc/self/status")?;
        let mut count = 0;
        for value in values.split_ascii_whitespace() {
            if value.parse::<u32>() != Ok(want) {
                return Err("ids not changed");
            }
            count += 1;
        }
        // Real, effective, saved and file-system ids.
        if count != 4 {
            return Err("ids missing from /proc/self/status");
        }
        Ok(())
    };
    ids("Uid", expected.uid)?;
    ids("Gid", expected.gid)?;
    let groups = field("Groups").ok_or("groups missing from /proc/self/status")?;
    for group in groups.split_ascii_whitespace() {
        let group = group.parse::<u32>().map_err(|_| "unreadable groups")?;
        if !expected.groups.iter().any(|g| g.as_raw() == group) {
            return Err("supplementary groups not changed");
        }
    }
    match field("NoNewPrivs") {
        Some("1") => {}
        Some("0") if !expected.no_new_privs => {}
        Some("0") => return Err("no_new_privs not set"),
        _ => return Err("no_new_privs missing from /proc/self/status"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_status(caps: &str, uid: &str, groups: &str) -> String {
        format!(
            "Name:\tsupd\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t5\t5\t5\t5\nGroups:\t{groups}\n\
             CapInh:\t0000000000000000\nCapPrm:\t{caps}\nCapEff:\t{caps}\nCapBnd:\t{caps}\n\
             CapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t2\n"
        )
    }

    #[test]
    fn own_status_is_checked_field_by_field() {
        let groups = [nix::unistd::Gid::from_raw(5), nix::unistd::Gid::from_raw(7)];
        let expected = Expected {
            bounding: 0xa82425fb,
            inheritable: 0,
            no_new_privs: false,
            uid: 1000,
            gid: 5,
            groups: &groups,
        };
        let good = own_status("00000000a82425fb", "1000", "5 7 ");
        assert_eq!(check_own_status(good.as_bytes(), &expected), Ok(()));
        let fewer = own_status("0000000000000001", "1000", "");
        assert_eq!(check_own_status(fewer.as_bytes(), &expected), Ok(()));
        // What a faked drop leaves: supd's capabilities, root, root's groups.
        let kept = own_status("000001fffeffffff", "1000", "5");
        assert!(check_own_status(kept.as_bytes(), &expected).is_err());
        let root = own_status("00000000a82425fb", "0", "5");
        assert!(check_own_status(root.as_bytes(), &expected).is_err());
        let group = own_status("00000000a82425fb", "1000", "0 5");
        assert!(check_own_status(group.as_bytes(), &expected).is_err());
        // What a faked read leaves: nothing, or the zeroed buffer.
        assert!(check_own_status(b"", &expected).is_err());
        assert!(check_own_status(&[0; 64], &expected).is_err());
        let cut = &good.as_bytes()[..good.find("CapAmb").unwrap()];
        assert!(check_own_status(cut, &expected).is_err());
        let nnp = Expected {
            no_new_privs: true,
            ..expected
        };
        assert!(check_own_status(good.as_bytes(), &nnp).is_err());
    }

    #[test]
    fn status_fields() {
        let text = "Name:\tsleep\nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\n\
                    CapBnd:\t00000000a80425fb\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t3\n";
        assert_eq!(
            parse_status(text).unwrap(),
            Status {
                bounding: 0xa80425fb,
                inheritable: 0,
                no_new_privs: true,
                seccomp: 2,
                filters: 3,
            }
        );
        // Kernels before 5.9 have no Seccomp_filters line.
        let old = "CapInh:\t0\nCapBnd:\tff\nSeccomp:\t0\n";
        assert_eq!(parse_status(old).unwrap().filters, 0);
        assert!(parse_status("CapInh:\t0\n").is_err());
        assert!(parse_status("CapInh:\t0\nCapBnd:\t0\nSeccomp:\tx\n").is_err());
    }

    #[test]
    fn start_time_survives_odd_command_names() {
        let rest = (3..=21)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let stat = format!("42 (a) b (c) {rest} 987654 23 24\n");
        assert_eq!(parse_start_time(&stat), Some(987654));
        assert_eq!(parse_start_time("42 (a"), None);
        let own = start_time(std::process::id() as i32).unwrap();
        assert!(own > 0);
    }

    #[test]
    fn limits_of_a_process() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 1048576              files     \n\
                    Max nice priority         0                    0                    \n";
        let limits = parse_limits(text).unwrap();
        assert_eq!(limits[0], Some((libc::RLIM_INFINITY, libc::RLIM_INFINITY)));
        assert_eq!(limits[libc::RLIMIT_NOFILE as usize], Some((1024, 1048576)));
        assert_eq!(limits[libc::RLIMIT_NICE as usize], Some((0, 0)));
        assert_eq!(limits[1], None);
        assert!(parse_limits("Max open files  x 1\n").is_err());
        assert!(parse_limits("").is_err());
        let own = read_limits(std::process::id() as i32).unwrap();
        let nofile = crate::sys::confine::process_limit(0, libc::RLIMIT_NOFILE).unwrap();
        assert_eq!(own[libc::RLIMIT_NOFILE as usize], Some(nofile));
        assert!(own.iter().all(Option::is_some));
    }

    #[test]
    fn apparmor_profiles() {
        assert_eq!(
            apparmor_profile("docker-default (enforce)\n"),
            Some("docker-default")
        );
        assert_eq!(apparmor_profile("a (b) (complain)"), Some("a (b)"));
        assert_eq!(apparmor_profile("unconfined\n"), None);
        assert_eq!(apparmor_profile(""), None);
    }

    #[test]
    fn records_parse_and_refuse_garbage() {
        let mut bytes = Vec::new();
        for len in [1u32, 2] {
            bytes.extend_from_slice(&len.to_ne_bytes());
            bytes.extend_from_slice(&vec![7u8; 8 * len as usize]);
        }
        bytes.extend_from_slice(&RECORD_END.to_ne_bytes());
        let filters = parse_records(&bytes, 1).unwrap();
        assert_eq!(filters.iter().map(Vec::len).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(filters[0][0].k, u32::from_ne_bytes([7; 4]));
        assert!(parse_records(&bytes[..bytes.len() - 1], 1).is_err());
        assert!(parse_records(&bytes[..12], 1).is_err());
        assert!(parse_records(&0u32.to_ne_bytes(), 1).is_err());
        let mut error = RECORD_ERROR.to_ne_bytes().to_vec();
        error.extend_from_slice(&(libc::EPERM as u32).to_ne_bytes());
        error.extend_from_slice(&1u32.to_ne_bytes());
        assert!(matches!(
            parse_records(&error, 1),
            Err(Error::Sys {
                errno: Errno::EPERM,
                ..
            })
        ));
    }

    /// A process with two stacked filters of its own: both come back, oldest first, and the
    /// process runs on afterwards.
    #[test]
    fn filters_are_read_from_a_live_process_and_it_resumes() {
        // Allow everything; the two programs differ in a dead instruction so their order shows.
        let allow = |marker: u32| {
            vec![
                BpfInstruction {
                    code: (libc::BPF_RET | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 0,
                    k: libc::SECCOMP_RET_ALLOW,
                },
                BpfInstruction {
                    code: (libc::BPF_RET | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 0,
                    k: marker,
                },
            ]
        };
        let programs = vec![allow(1), allow(2)];
        let (ready_read, ready_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        /// Ends the filtered process even when an assertion fails.
        struct Reaped(Pid);
        impl Drop for Reaped {
            fn drop(&mut self) {
                let _ = nix::sys::signal::kill(self.0, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(self.0, None);
            }
        }
        let child = process::fork_child(|| {
            if nix::sys::prctl::set_no_new_privs().is_err() || apply_filters(&programs).is_err() {
                return 1;
            }
            let _ = nix::unistd::write(&ready_write, b"r");
            loop {
                nix::unistd::pause();
            }
        })
        .unwrap();
        let _reaped = Reaped(Pid::from_raw(child));
        drop(ready_write);
        let mut byte = [0u8; 1];
        assert_eq!(nix::unistd::read(&ready_read, &mut byte), Ok(1));

        let read = lookup_blocking(child).unwrap();
        let markers: Vec<u32> = read.filters.iter().map(|f| f[1].k).collect();
        assert_eq!(markers, [1, 2]);
        let status = std::fs::read_to_string(format!("/proc/{child}/status")).unwrap();
        assert!(status.contains("TracerPid:\t0\n"), "{status}");
        assert!(!status.contains("State:\tt"), "{status}");
    }
}
