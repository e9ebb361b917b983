//! Spawning a command inside a running container.
//!
//! ```text
//! supd ──fork──> intermediate (host PID namespace, invisible to the container), in order:
//!   │              not dumpable, join cgroups, setns user..mnt, LSM exec label, stdio on 0-2,
//!   │              close every other descriptor, signals, user lookup, chown tty, rlimits,
//!   │              no_new_privs, [seccomp], capabilities, groups/gid/uid, check them in its
//!   │              /proc/self/status (opened before the filters), HOME, [seccomp]
//!   │            └──clone(CLONE_PARENT)──> command (supd's child, in the container's PID
//!   │               exits at once              namespace, already confined): setsid, tty,
//!   │                                          chdir, check cwd, execve
//!   └─ returns at once; reaps the intermediate, reads the pid, waits on a pidfd; gives up
//!      and kills both if the command has not reached execve in time (see `ops::proc`)
//! ```
//!
//! The command is *confined from birth*: everything privileged happens in the intermediate,
//! which no process of the container can see, so from the first moment anything of the
//! container can observe (or, with CAP_SYS_PTRACE, attach to) the command, it already has the
//! container's user, capabilities, limits and seccomp filters, and holds no descriptor of
//! supd's: only its stdio (0-2) and the close-on-exec start pipe (3), whose EOF tells supd
//! that execve happened. A process of the container can still stop or kill it; supd learns
//! its pid from the kernel before it runs (a shared page, see [`process::PidSlot`]), never
//! from anything the command could forge or withhold.
//!
//! Everything the children use is prepared in [`Plan`] before the first fork, so they never
//! allocate. Each child's work is an ordered list of named steps; a failed step writes
//! `supd: <step>: <reason>` to the command's output and the child exits with 126; a program
//! that is not found exits with 127, like a shell.
//!
//! The command is confined like the container's first process (see [`super::confine`]). Its
//! seccomp filters go in before the capabilities drop when the container lacks
//! no_new_privs (installing them then needs CAP_SYS_ADMIN), else last, as runc does; in the
//! first case a filter may fake the drop, so its effect is read back from the kernel (see
//! [`verify_confinement`]). Both
//! children are non-dumpable (CVE-2016-9962, CVE-2019-5736) until the command's execve; the
//! command checks that its working directory lies inside the container's root
//! (CVE-2024-21626). A command that is a `#!/proc/self/exe` script execs supd's image again,
//! inside the container: that image is a sealed memfd, not the host's file (see
//! `crate::sys::exe`). The pid is trusted only once [`identity::pin`] proved it is still the
//! container's first process.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};

use super::confine::{self, Confinement};
use super::ns::{self, NamespaceFd};
use super::user::{self, FileLines, Identity};
use super::{Error, ExitStatus, Io, Result, Spawned, Stdio, Target, cgroup, identity, pty};
use crate::sys::process::{self, CStrArray, EXIT_SETUP_FAILED, PidSlot};

/// The search path when the container's environment has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const EXIT_NOT_FOUND: i32 = 127;
/// The command's start pipe: the one descriptor besides stdio it is born with.
const START_PIPE_FD: i32 = 3;
/// The intermediate's own `/proc/self/status` (host /proc), kept until the checks after the
/// privileged steps; close-on-exec.
const OWN_STATUS_FD: i32 = 4;
/// Room for `/proc/self/status` with [`user::MAX_GROUPS`] groups.
const STATUS_BUFFER: usize = 16 * 1024;
const MAX_ARGS: usize = 4096;
const MAX_ENV: usize = 4096;
const MAX_PATH_DIRS: usize = 128;
/// Room for `HOME=<home>\0`.
const HOME_ENTRY: usize = 5 + 4096 + 1;

/// The command's ends of its stdio, as the children see them.
enum ChildStdio {
    Terminal(OwnedFd),
    Pipes { stdin: OwnedFd, output: OwnedFd },
}

impl ChildStdio {
    /// Where a child reports a failed step before its stdio is in place.
    fn output(&self) -> BorrowedFd<'_> {
        match self {
            ChildStdio::Terminal(fd) => fd.as_fd(),
            ChildStdio::Pipes { output, .. } => output.as_fd(),
        }
    }
}

/// Everything both children need, built before forking.
struct Plan<'s> {
    namespaces: Vec<NamespaceFd>,
    cgroup_procs: Vec<OwnedFd>,
    /// Where the kernel stores the command's pid for supd.
    pid_slot: &'s PidSlot,
    /// The write end of the start pipe (close-on-exec): EOF on supd's end means every child
    /// exited or reached execve.
    started: OwnedFd,
    stdio: ChildStdio,
    /// Once stdio is on 0-2 (and everything else about to close), failures go to stderr.
    stdio_in_place: bool,
    user_spec: Vec<u8>,
    identity: Identity,
    /// Split in two: one line buffer for passwd, one for group.
    line_buffers: Vec<u8>,
    argv: CStrArray,
    env: CStrArray,
    needs_home: bool,
    /// The paths to try in order, from PATH (or argv[0] itself when it holds a slash).
    candidates: Vec<CString>,
    working_dir: CString,
    cwd_buffer: Vec<u8>,
    /// What confines the container's first process, taken over by the command.
    confinement: Confinement,
    /// The host's /proc, where the intermediate is visible (it is not in the container's).
    host_proc: OwnedFd,
    /// The intermediate's `/proc/self/status`, opened before anything of the container's
    /// filters applies to it (see [`verify_confinement`]); moved to [`OWN_STATUS_FD`].
    own_status: Option<OwnedFd>,
    status_buffer: Vec<u8>,
}

/// Starts `argv` in the container of `target`, whose first process's seccomp filters
/// `seccomp` holds ([`confine::lookup`]); see the module documentation.
pub fn spawn(
    target: &Target,
    seccomp: &confine::InitFilters,
    argv: &[String],
    stdio: Stdio,
) -> Result<Spawned> {
    spawn_with(target, seccomp, argv, stdio, None)
}

/// [`spawn`] on a terminal already opened in the container ([`pty::Opening`]): supd's loop
/// never looks up the container's ptmx itself.
pub fn spawn_on_terminal(
    target: &Target,
    seccomp: &confine::InitFilters,
    argv: &[String],
    terminal: pty::Pty,
) -> Result<Spawned> {
    spawn_with(
        target,
        seccomp,
        argv,
        Stdio::Pty { rows: 0, cols: 0 },
        Some(terminal),
    )
}

fn spawn_with(
    target: &Target,
    seccomp: &confine::InitFilters,
    argv: &[String],
    stdio: Stdio,
    terminal: Option<pty::Pty>,
) -> Result<Spawned> {
    if argv.is_empty() {
        return Err(Error::BadCommand("empty command"));
    }
    if argv.len() > MAX_ARGS {
        return Err(Error::BadCommand("too many arguments"));
    }
    let argv_c = to_cstrings(
        argv,
        MAX_ARGS,
        Error::BadCommand("argument holds a NUL byte"),
    )?;
    let tty = matches!(stdio, Stdio::Pty { .. });
    let env = build_env(&target.env, tty)?;
    let candidates = program_candidates(&argv[0], &env.path)?;
    let working_dir = match target.working_dir.as_str() {
        "" => c"/".to_owned(),
        dir => CString::new(dir).map_err(|_| Error::BadTarget("working dir holds a NUL byte"))?,
    };
    if target.user.contains('\0') {
        return Err(Error::BadTarget("user holds a NUL byte"));
    }

    let pid = target.pid;
    // Held across the reads below: if the process is still alive afterwards, every file of
    // /proc/<pid> read in between was its own and not a successor's with a reused pid. And the
    // process it pins is proved to be the container's, not a host process that took over the
    // pid of a first process that died.
    let container = identity::pin(pid, &target.container_id)?;
    let namespaces = ns::open_namespaces(pid)?;
    let cgroup_procs = cgroup::open_cgroup_procs(pid)?;
    let confinement = confine::read(pid, seccomp)?;
    let (io, child_stdio) = match terminal {
        Some(pty) => (
            Io::Pty { master: pty.master },
            ChildStdio::Terminal(pty.slave),
        ),
        None => open_stdio(target, stdio)?,
    };
    let host_proc = nix::fcntl::open(
        c"/proc",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("open /proc"))?;
    if exited(container.as_fd())? {
        return Err(Error::ContainerGone { pid });
    }

    // Found in the parent, so the child only reads them.
    process::ignored_signals();
    let handoff = PidSlot::new().map_err(sys("mmap"))?;
    let (started, started_child) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;
    set_nonblocking(started.as_fd())?;

    let mut plan = Plan {
        namespaces,
        cgroup_procs,
        pid_slot: &handoff,
        started: started_child,
        stdio: child_stdio,
        stdio_in_place: false,
        user_spec: target.user.as_bytes().to_vec(),
        identity: Identity::with_capacity(),
        line_buffers: vec![0; 2 * user::LINE_BUFFER],
        argv: CStrArray::new(argv_c, 0),
        env: CStrArray::new(env.entries, HOME_ENTRY),
        needs_home: env.needs_home,
        candidates,
        working_dir,
        cwd_buffer: vec![0; libc::PATH_MAX as usize + 1],
        confinement,
        host_proc,
        own_status: None,
        status_buffer: vec![0; STATUS_BUFFER],
    };
    let intermediate_pid = process::fork_child(|| intermediate(&mut plan)).map_err(sys("fork"))?;
    // Dropping the plan closes the children's ends here, so EOF on the output means the
    // command and everything it started are done with it.
    drop(plan);
    let intermediate_pidfd = match process::pidfd_open(intermediate_pid) {
        Ok(fd) => fd,
        Err(errno) => {
            // Without a pidfd the loop cannot learn of its exit: undo the spawn. The child
            // is killed first, so this wait is short; so is a command it cloned already.
            let child = Pid::from_raw(intermediate_pid);
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            if let Ok(Some(command)) = read_handoff(&handoff) {
                let command = Pid::from_raw(command);
                let _ = nix::sys::signal::kill(command, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(command, None);
            }
            return Err(Error::Sys {
                op: "pidfd_open",
                errno,
            });
        }
    };
    Ok(Spawned {
        intermediate_pid,
        intermediate_pidfd,
        handoff,
        started,
        io,
    })
}

fn sys(op: &'static str) -> impl Fn(Errno) -> Error {
    move |errno| Error::Sys { op, errno }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<()> {
    let flags = nix::fcntl::fcntl(fd, FcntlArg::F_GETFL).map_err(sys("fcntl"))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(sys("fcntl"))?;
    Ok(())
}

fn exited(pidfd: BorrowedFd<'_>) -> Result<bool> {
    let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
    let ready = nix::poll::poll(&mut fds, PollTimeout::ZERO).map_err(sys("poll"))?;
    Ok(ready > 0)
}

fn to_cstrings(strings: &[String], max: usize, nul: Error) -> Result<Vec<CString>> {
    if strings.len() > max {
        return Err(nul);
    }
    strings
        .iter()
        .map(|s| CString::new(s.as_str()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| nul)
}

struct Env {
    entries: Vec<CString>,
    needs_home: bool,
    path: String,
}

/// The container's environment plus the defaults `docker exec` adds when they are unset:
/// PATH, TERM for a terminal, and HOME (added by the child once it knows the user).
fn build_env(container_env: &[String], tty: bool) -> Result<Env> {
    if container_env.len() > MAX_ENV {
        return Err(Error::BadTarget("too many environment variables"));
    }
    let value = |key: &str| {
        container_env.iter().find_map(|entry| {
            entry
                .strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
        })
    };
    let mut entries: Vec<String> = container_env
        .iter()
        .filter(|entry| entry.contains('='))
        .cloned()
        .collect();
    let path = value("PATH").unwrap_or(DEFAULT_PATH).to_owned();
    if value("PATH").is_none() {
        entries.push(format!("PATH={DEFAULT_PATH}"));
    }
    if tty && value("TERM").is_none() {
        entries.push("TERM=xterm".to_owned());
    }
    Ok(Env {
        entries: to_cstrings(
            &entries,
            MAX_ENV + 2,
            Error::BadTarget("environment holds a NUL byte"),
        )?,
        needs_home: value("HOME").is_none(),
        path,
    })
}

/// Where execvp would look for `program`: itself when it holds a slash, else each PATH
/// directory in order (an empty one meaning the working directory).
fn program_candidates(program: &str, path: &str) -> Result<Vec<CString>> {
    let nul = || Error::BadCommand("argument holds a NUL byte");
    // `''` names no file: not found (127), as a shell answers, instead of trying each PATH
    // directory itself.
    if program.is_empty() {
        return Ok(Vec::new());
    }
    if program.contains('/') {
        return Ok(vec![CString::new(program).map_err(|_| nul())?]);
    }
    path.split(':')
        .take(MAX_PATH_DIRS)
        .map(|dir| {
            let dir = if dir.is_empty() {
                "."
            } else {
                dir.trim_end_matches('/')
            };
            CString::new(format!("{dir}/{program}")).map_err(|_| nul())
        })
        .collect()
}

fn open_stdio(target: &Target, stdio: Stdio) -> Result<(Io, ChildStdio)> {
    match stdio {
        Stdio::Pty { rows, cols } => {
            // Blocks up to pty::OPEN_TIMEOUT: supd's loop uses `spawn_on_terminal`.
            let pty = pty::open(target.pid, &target.container_id, rows, cols)?;
            Ok((
                Io::Pty { master: pty.master },
                ChildStdio::Terminal(pty.slave),
            ))
        }
        Stdio::Pipes { stdin } => {
            let (output, output_child) =
                nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;
            set_nonblocking(output.as_fd())?;
            let (stdin, stdin_child) = if stdin {
                let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;
                set_nonblocking(write.as_fd())?;
                (Some(write), read)
            } else {
                let null = nix::fcntl::open(
                    c"/dev/null",
                    OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(sys("open /dev/null"))?;
                (None, null)
            };
            Ok((
                Io::Pipes { stdin, output },
                ChildStdio::Pipes {
                    stdin: stdin_child,
                    output: output_child,
                },
            ))
        }
    }
}

/// Why a step failed, told without allocating.
enum Reason {
    Errno(Errno),
    Text(&'static str),
}

/// What a step acted on, named in its failure report (read from the plan, not copied).
#[derive(Clone, Copy)]
enum Subject {
    Nothing,
    Namespace(&'static str),
    User,
    WorkingDir,
    Program,
}

struct Failure {
    reason: Reason,
    /// Replaces the step's name in the report (the user lookup says "user" or "group").
    name: Option<&'static str>,
    subject: Subject,
    code: i32,
}

impl From<Errno> for Failure {
    fn from(errno: Errno) -> Failure {
        Failure {
            reason: Reason::Errno(errno),
            name: None,
            subject: Subject::Nothing,
            code: EXIT_SETUP_FAILED,
        }
    }
}

impl Failure {
    fn about(mut self, subject: Subject) -> Failure {
        self.subject = subject;
        self
    }
}

type StepResult = std::result::Result<(), Failure>;

/// A named step of a child's setup. The name is what a failure report starts with.
type Step = (&'static str, fn(&mut Plan<'_>) -> StepResult);

/// The intermediate's steps, in order: everything privileged, then everything confining, so
/// that the command it clones afterwards is never more than the container's process.
const INTERMEDIATE_STEPS: &[Step] = &[
    // Until it exits it holds host descriptors (namespaces, cgroups) and root: nothing that
    // is not root in supd's user namespace may ptrace it or open its /proc/<pid>/fd.
    ("prctl(PR_SET_DUMPABLE)", not_dumpable),
    ("madvise(MADV_DONTFORK)", keep_pid_slot_from_command),
    ("join cgroup", join_cgroups),
    ("setns", join_namespaces),
    // After setns: the file shows ids as seen from the opener's user namespace.
    ("open /proc/self/status", open_own_status),
    // Through the host's /proc, still open; the label is inherited by the command.
    ("set LSM exec label", set_exec_label),
    ("dup2", stdio_in_place),
    ("start pipe", start_pipe_in_place),
    // Before the filters: the container's filter may not allow close_range.
    ("close_range", close_other_descriptors),
    ("reset signals", reset_signals),
    // In the container's mount namespace: its /etc/passwd and /etc/group.
    ("user", resolve_user),
    ("chown terminal", chown_terminal),
    // While root: raising a hard limit back to the container's needs CAP_SYS_RESOURCE.
    ("set resource limits", set_limits),
    ("prctl(PR_SET_NO_NEW_PRIVS)", no_new_privs),
    // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN, which is about to go.
    ("seccomp", filters_before_capabilities),
    // Needs CAP_SETPCAP, which the uid change below takes away from a non-root user.
    ("drop capabilities", drop_bounding_capabilities),
    ("set inheritable capabilities", set_inheritable_capabilities),
    ("setgroups", set_groups),
    ("setgid", set_gid),
    ("setuid", set_uid),
    ("limit capabilities", limit_capabilities),
    ("clear ambient capabilities", clear_ambient_capabilities),
    // The filter above may have faked every one of them.
    ("verify capabilities and ids", verify_confinement),
    // A uid change makes the process dumpable again when fs.suid_dumpable is 1.
    ("prctl(PR_SET_DUMPABLE)", not_dumpable),
    ("HOME", set_home),
    // With no_new_privs the filters go last, as runc does.
    ("seccomp", filters_last),
];

/// The command's steps, in order: only what needs its own session and the container's view
/// of the file system. The container's seccomp filter applies already: Docker's default
/// allows setsid, ioctl, chdir, getcwd, execve, write and exit_group.
const COMMAND_STEPS: &[Step] = &[
    ("setsid", new_session),
    ("TIOCSCTTY", controlling_terminal),
    ("chdir", enter_working_dir),
    ("getcwd", check_working_dir),
];

/// Runs `steps` in order; on the first failure, reports it and returns the exit code.
fn run_steps(plan: &mut Plan<'_>, steps: &[Step]) -> std::result::Result<(), i32> {
    for &(name, step) in steps {
        if let Err(failure) = step(plan) {
            let code = failure.code;
            report_failure(plan, name, &failure);
            return Err(code);
        }
    }
    Ok(())
}

/// `supd: <step>[ <subject>]: <reason>` on the command's output, best effort: the exit
/// status tells the failure anyway.
fn report_failure(plan: &Plan<'_>, step: &'static str, failure: &Failure) {
    let fd = if plan.stdio_in_place {
        process::standard_fd(2)
    } else {
        plan.stdio.output()
    };
    let name = failure.name.unwrap_or(step).as_bytes();
    let subject: &[u8] = match failure.subject {
        Subject::Nothing => b"",
        Subject::Namespace(ns) => ns.as_bytes(),
        Subject::User => &plan.user_spec,
        Subject::WorkingDir => plan.working_dir.as_bytes(),
        Subject::Program => plan
            .argv
            .strings()
            .first()
            .map_or(&b""[..], |p| p.as_bytes()),
    };
    let space: &[u8] = if name.is_empty() || subject.is_empty() {
        b""
    } else {
        b" "
    };
    let reason = match failure.reason {
        Reason::Errno(errno) => errno.desc(),
        Reason::Text(text) => text,
    };
    report(
        fd,
        &[
            b"supd: ",
            name,
            space,
            subject,
            b": ",
            reason.as_bytes(),
            b"\n",
        ],
    );
}

/// Writes one line made of `parts`, best effort.
fn report(fd: BorrowedFd<'_>, parts: &[&[u8]]) {
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            match nix::unistd::write(fd, rest) {
                Ok(n) => rest = &rest[n..],
                Err(Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }
}

/// Decimal digits of `n` in `buf`, without allocating.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

/// The intermediate child: runs its steps, then clones the command into the container's
/// PID namespace, and exits at once without waiting for anything of the command's.
fn intermediate(plan: &mut Plan<'_>) -> i32 {
    if let Err(code) = run_steps(plan, INTERMEDIATE_STEPS) {
        return code;
    }
    let slot = plan.pid_slot;
    match process::clone_sibling(slot, || command(plan)) {
        Ok(_) => 0,
        Err(errno) => {
            report_failure(plan, "clone", &errno.into());
            EXIT_SETUP_FAILED
        }
    }
}

/// The command's process: born confined, it only does what needs its own session, then execs.
fn command(plan: &mut Plan<'_>) -> i32 {
    if let Err(code) = run_steps(plan, COMMAND_STEPS) {
        return code;
    }
    match exec(plan) {
        Ok(()) => EXIT_SETUP_FAILED,
        Err(failure) => {
            let code = failure.code;
            report_failure(plan, "", &failure);
            code
        }
    }
}

fn not_dumpable(_: &mut Plan<'_>) -> StepResult {
    Ok(nix::sys::prctl::set_dumpable(false)?)
}

fn keep_pid_slot_from_command(plan: &mut Plan<'_>) -> StepResult {
    Ok(plan.pid_slot.keep_from_children()?)
}

fn join_cgroups(plan: &mut Plan<'_>) -> StepResult {
    let mut digits = [0; 10];
    let own_pid = decimal(nix::unistd::getpid().as_raw() as u32, &mut digits);
    for procs in &plan.cgroup_procs {
        nix::unistd::write(procs, own_pid)?;
    }
    Ok(())
}

fn join_namespaces(plan: &mut Plan<'_>) -> StepResult {
    for ns in &plan.namespaces {
        nix::sched::setns(&ns.fd, ns.namespace.flag)
            .map_err(|e| Failure::from(e).about(Subject::Namespace(ns.namespace.name)))?;
    }
    Ok(())
}

fn set_exec_label(plan: &mut Plan<'_>) -> StepResult {
    match &plan.confinement.label {
        Some(label) => Ok(confine::apply_label(label)?),
        None => Ok(()),
    }
}

fn stdio_in_place(plan: &mut Plan<'_>) -> StepResult {
    let (stdin, output) = match &plan.stdio {
        ChildStdio::Terminal(tty) => (tty.as_fd(), tty.as_fd()),
        ChildStdio::Pipes { stdin, output } => (stdin.as_fd(), output.as_fd()),
    };
    nix::unistd::dup2_stdin(stdin)?;
    nix::unistd::dup2_stdout(output)?;
    nix::unistd::dup2_stderr(output)?;
    plan.stdio_in_place = true;
    Ok(())
}

/// The start pipe as descriptor 3, close-on-exec: the only one besides stdio that the
/// command is born with.
fn start_pipe_in_place(plan: &mut Plan<'_>) -> StepResult {
    Ok(process::move_fd_cloexec(
        plan.started.as_fd(),
        START_PIPE_FD,
    )?)
}

fn close_other_descriptors(plan: &mut Plan<'_>) -> StepResult {
    if let Some(status) = &plan.own_status {
        process::move_fd_cloexec(status.as_fd(), OWN_STATUS_FD)?;
    }
    // The plan's descriptors are closed under it; no step uses them after this one, and
    // the child never drops them (it leaves through `_exit`).
    Ok(process::close_from(OWN_STATUS_FD as u32 + 1)?)
}

fn open_own_status(plan: &mut Plan<'_>) -> StepResult {
    let status = process::open_in_root(plan.host_proc.as_fd(), c"self/status", OFlag::O_RDONLY)?;
    plan.own_status = Some(status);
    Ok(())
}

fn reset_signals(_: &mut Plan<'_>) -> StepResult {
    Ok(process::reset_signals()?)
}

fn resolve_user(plan: &mut Plan<'_>) -> StepResult {
    let (passwd_buffer, group_buffer) = plan.line_buffers.split_at_mut(user::LINE_BUFFER);
    let mut passwd = FileLines {
        path: c"/etc/passwd",
        buf: passwd_buffer,
    };
    let mut group = FileLines {
        path: c"/etc/group",
        buf: group_buffer,
    };
    user::resolve(&plan.user_spec, &mut passwd, &mut group, &mut plan.identity).map_err(|e| {
        let (what, why) = e.describe();
        Failure {
            reason: Reason::Text(why),
            name: Some(what),
            subject: Subject::User,
            code: EXIT_SETUP_FAILED,
        }
    })
}

fn chown_terminal(plan: &mut Plan<'_>) -> StepResult {
    if matches!(plan.stdio, ChildStdio::Terminal(_)) {
        let id = &plan.identity;
        let (uid, gid) = (Uid::from_raw(id.uid), Gid::from_raw(id.gid));
        nix::unistd::fchown(process::standard_fd(0), Some(uid), Some(gid))?;
    }
    Ok(())
}

fn set_limits(plan: &mut Plan<'_>) -> StepResult {
    Ok(confine::apply_limits(&plan.confinement.limits)?)
}

fn no_new_privs(plan: &mut Plan<'_>) -> StepResult {
    if plan.confinement.no_new_privs {
        nix::sys::prctl::set_no_new_privs()?;
    }
    Ok(())
}

fn filters_before_capabilities(plan: &mut Plan<'_>) -> StepResult {
    if !plan.confinement.no_new_privs {
        confine::apply_filters(&plan.confinement.filters)?;
    }
    Ok(())
}

fn drop_bounding_capabilities(plan: &mut Plan<'_>) -> StepResult {
    let c = &plan.confinement;
    Ok(process::drop_bounding_capabilities(c.bounding, c.last_cap)?)
}

/// The inheritable set survives the uid change but may only grow before it; the effective
/// set keeps CAP_SETUID and CAP_SETGID for the change.
fn set_inheritable_capabilities(plan: &mut Plan<'_>) -> StepResult {
    let c = &plan.confinement;
    Ok(process::limit_capabilities(
        u64::MAX,
        c.inheritable & c.bounding,
    )?)
}

fn set_groups(plan: &mut Plan<'_>) -> StepResult {
    Ok(nix::unistd::setgroups(&plan.identity.groups)?)
}

fn set_gid(plan: &mut Plan<'_>) -> StepResult {
    Ok(nix::unistd::setgid(Gid::from_raw(plan.identity.gid))?)
}

fn set_uid(plan: &mut Plan<'_>) -> StepResult {
    Ok(nix::unistd::setuid(Uid::from_raw(plan.identity.uid))?)
}

fn limit_capabilities(plan: &mut Plan<'_>) -> StepResult {
    let c = &plan.confinement;
    Ok(process::limit_capabilities(
        c.bounding,
        c.inheritable & c.bounding,
    )?)
}

fn clear_ambient_capabilities(_: &mut Plan<'_>) -> StepResult {
    Ok(crate::sys::confine::clear_ambient_capabilities()?)
}

/// Without no_new_privs the container's filters go in before the capability drop and the id
/// changes (installing them later would need CAP_SYS_ADMIN), so a container allowed to
/// install its own filter (CAP_SYS_ADMIN) can answer capset, prctl and set*id with
/// "success" and nothing done. Their results prove nothing, and neither would capget,
/// getresuid or prctl(PR_CAPBSET_READ) (a faked read reports "not held", just what such a
/// filter wants). The kernel's own account does: /proc/self/status, opened (through the
/// host's /proc) before the filters and read through that descriptor; a faked pread returns no bytes or leaves the
/// zeroed buffer, which the check refuses (a filter cannot write this process's memory, and
/// no process of the container can see it). A mismatch fails the exec (126) rather than run
/// the command with more than the container has.
///
/// Rejected: always setting no_new_privs so the filters could go last. Docker's containers
/// lack it by default, so every exec would lose setuid binaries and file capabilities
/// (sudo in an exec'd shell) where the container's own processes keep them.
fn verify_confinement(plan: &mut Plan<'_>) -> StepResult {
    let failed = |why: &'static str| Failure {
        reason: Reason::Text(why),
        name: None,
        subject: Subject::Nothing,
        code: EXIT_SETUP_FAILED,
    };
    if plan.own_status.is_none() {
        return Err(failed("/proc/self/status not open"));
    }
    let fd = process::kept_fd(OWN_STATUS_FD);
    plan.status_buffer.fill(0);
    let mut len = 0;
    loop {
        let rest = &mut plan.status_buffer[len..];
        if rest.is_empty() {
            return Err(failed("/proc/self/status too long"));
        }
        match nix::sys::uio::pread(fd, rest, len as libc::off_t) {
            Ok(0) => break,
            Ok(n) if n <= rest.len() => len += n,
            Ok(_) => return Err(failed("/proc/self/status read too long")),
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    let expected = confine::Expected {
        bounding: plan.confinement.bounding,
        inheritable: plan.confinement.inheritable,
        no_new_privs: plan.confinement.no_new_privs,
        uid: plan.identity.uid,
        gid: plan.identity.gid,
        groups: &plan.identity.groups,
    };
    confine::check_own_status(&plan.status_buffer[..len], &expected).map_err(failed)?;
    // Close-on-exec besides: a faked close only leaves it to the command's execve.
    let _ = nix::unistd::close(OWN_STATUS_FD);
    Ok(())
}

fn set_home(plan: &mut Plan<'_>) -> StepResult {
    if plan.needs_home
        && !plan
            .env
            .append_within_capacity(&[b"HOME=", &plan.identity.home])
    {
        return Err(Errno::ENAMETOOLONG.into());
    }
    Ok(())
}

fn filters_last(plan: &mut Plan<'_>) -> StepResult {
    if plan.confinement.no_new_privs {
        confine::apply_filters(&plan.confinement.filters)?;
    }
    Ok(())
}

fn new_session(_: &mut Plan<'_>) -> StepResult {
    nix::unistd::setsid()?;
    Ok(())
}

fn controlling_terminal(plan: &mut Plan<'_>) -> StepResult {
    if matches!(plan.stdio, ChildStdio::Terminal(_)) {
        process::set_controlling_terminal(process::standard_fd(0))?;
    }
    Ok(())
}

fn enter_working_dir(plan: &mut Plan<'_>) -> StepResult {
    nix::unistd::chdir(plan.working_dir.as_c_str())
        .map_err(|e| Failure::from(e).about(Subject::WorkingDir))
}

/// A working directory reached through a leaked host descriptor would show as
/// "(unreachable)/..." or fail (CVE-2024-21626): only a path inside the root is accepted.
fn check_working_dir(plan: &mut Plan<'_>) -> StepResult {
    match process::getcwd_into(&mut plan.cwd_buffer) {
        Ok(len) if plan.cwd_buffer.first() == Some(&b'/') && len > 0 => Ok(()),
        Ok(_) => Err(Errno::ENOENT.into()),
        Err(errno) => Err(errno.into()),
    }
}

/// Tries each candidate path like execvp; returns only on failure.
fn exec(plan: &mut Plan<'_>) -> StepResult {
    let mut denied = false;
    for candidate in &plan.candidates {
        match process::execve(candidate, &plan.argv, &plan.env) {
            Errno::ENOENT | Errno::ENOTDIR | Errno::ENAMETOOLONG | Errno::ELOOP => {}
            Errno::EACCES => denied = true,
            errno => return Err(Failure::from(errno).about(Subject::Program)),
        }
    }
    let (reason, code) = if denied {
        ("permission denied", EXIT_SETUP_FAILED)
    } else {
        ("not found", EXIT_NOT_FOUND)
    };
    Err(Failure {
        reason: Reason::Text(reason),
        name: None,
        subject: Subject::Program,
        code,
    })
}

/// Reaps child `pid` without blocking: `Ok(None)` while it runs.
pub fn try_wait(pid: i32) -> Result<Option<ExitStatus>> {
    loop {
        return match nix::sys::wait::waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Ok(Some(ExitStatus::Code(code))),
            Ok(WaitStatus::Signaled(_, signal, _)) => Ok(Some(ExitStatus::Signal(signal as i32))),
            Ok(_) => Ok(None),
            Err(Errno::EINTR) => continue,
            Err(errno) => Err(Error::Sys {
                op: "waitpid",
                errno,
            }),
        };
    }
}

/// The command's pid, or `None` when the intermediate did not get as far as cloning it.
/// Read it once the intermediate exited or was killed.
pub fn read_handoff(handoff: &PidSlot) -> Result<Option<i32>> {
    match handoff.get() {
        0 => Ok(None),
        pid if pid > 0 => Ok(Some(pid)),
        _ => Err(Error::BadHandoff),
    }
}

/// Whether every child reached execve or exited: EOF on the start pipe. Anything written to
/// it (only a hijacked command could) is drained and ignored.
pub fn reached_exec(started: &OwnedFd) -> Result<bool> {
    let mut buf = [0u8; 64];
    loop {
        match nix::unistd::read(started, &mut buf) {
            Ok(0) => return Ok(true),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Ok(false),
            Err(errno) => {
                return Err(Error::Sys {
                    op: "read start pipe",
                    errno,
                });
            }
        }
    }
}

/// Sends `signal` to process `pid` itself: its group may not exist (it had no chance to call
/// setsid). A process that is gone is not an error.
pub fn kill_process(pid: i32, signal: Signal) -> Result<()> {
    if pid <= 1 {
        return Err(Error::Sys {
            op: "kill",
            errno: Errno::EINVAL,
        });
    }
    match nix::sys::signal::kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(Error::Sys { op: "kill", errno }),
    }
}

/// A pidfd for `pid`: non-blocking, close-on-exec; readable once the process exits.
pub fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    process::pidfd_open(pid).map_err(sys("pidfd_open"))
}

/// Sends `signal` to the command `pid` and then to its process group. The group exists only
/// once the command called setsid, which a process of the container can keep it from doing
/// (by stopping it): the process itself is signalled first, so a SIGKILL leaves it no moment
/// to start anything, and whatever it started after its setsid is in the group. Neither being
/// gone is an error.
pub fn kill_group(pid: i32, signal: Signal) -> Result<()> {
    kill_process(pid, signal)?;
    match nix::sys::signal::killpg(Pid::from_raw(pid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(Error::Sys { op: "kill", errno }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_gets_defaults_only_when_unset() {
        let env = build_env(&["A=1".into(), "NOEQUALS".into()], true).unwrap();
        let entries: Vec<_> = env.entries.iter().map(|e| e.to_str().unwrap()).collect();
        assert_eq!(
            entries,
            ["A=1", &format!("PATH={DEFAULT_PATH}"), "TERM=xterm"]
        );
        assert!(env.needs_home);
        assert_eq!(env.path, DEFAULT_PATH);

        let given = ["PATH=/x:/y".into(), "TERM=vt100".into(), "HOME=/h".into()];
        let env = build_env(&given, true).unwrap();
        assert_eq!(env.entries.len(), 3);
        assert!(!env.needs_home);
        assert_eq!(env.path, "/x:/y");

        let env = build_env(&[], false).unwrap();
        assert!(
            env.entries
                .iter()
                .all(|e| !e.to_bytes().starts_with(b"TERM="))
        );
        // PATHOLOGICAL=... is not PATH.
        let env = build_env(&["PATHOLOGICAL=1".into()], false).unwrap();
        assert_eq!(env.path, DEFAULT_PATH);
        assert!(build_env(&["A=\0".into()], false).is_err());
    }

    #[test]
    fn candidates_follow_path_like_execvp() {
        let c = program_candidates("ls", "/bin/::/usr/bin").unwrap();
        let c: Vec<_> = c.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(c, ["/bin/ls", "./ls", "/usr/bin/ls"]);
        let c = program_candidates("./run", "/bin").unwrap();
        assert_eq!(c[0].to_str().unwrap(), "./run");
        assert_eq!(c.len(), 1);
        // `''` is no file at all, not each PATH directory.
        assert!(program_candidates("", "/bin:/usr/bin").unwrap().is_empty());
    }

    #[test]
    fn decimal_digits() {
        let mut buf = [0; 10];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(4194304, &mut buf), b"4194304");
        assert_eq!(decimal(u32::MAX, &mut buf), b"4294967295");
    }

    #[test]
    fn start_pipe_reports_eof_only() {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
        assert!(!reached_exec(&r).unwrap());
        nix::unistd::write(&w, b"junk").unwrap();
        assert!(!reached_exec(&r).unwrap());
        drop(w);
        assert!(reached_exec(&r).unwrap());
    }

    #[test]
    fn empty_pid_slot_is_no_pid() {
        let slot = PidSlot::new().unwrap();
        assert_eq!(read_handoff(&slot).unwrap(), None);
    }

    #[test]
    fn bad_commands_are_refused_before_forking() {
        let target = Target {
            pid: i32::MAX,
            container_id: "0123456789ab".into(),
            user: String::new(),
            env: Vec::new(),
            working_dir: String::new(),
        };
        let pipes = Stdio::Pipes { stdin: false };
        let none = confine::InitFilters::none(i32::MAX);
        assert!(matches!(
            spawn(&target, &none, &[], pipes),
            Err(Error::BadCommand(_))
        ));
        // An empty program name is a program that is not found (127 once started).
        assert!(matches!(
            spawn(&target, &none, &["".into()], pipes),
            Err(Error::ContainerGone { .. })
        ));
        assert!(matches!(
            spawn(&target, &none, &["a\0b".into()], pipes),
            Err(Error::BadCommand(_))
        ));
        assert!(matches!(
            spawn(&target, &none, &["true".into()], pipes),
            Err(Error::ContainerGone { .. })
        ));
    }

    #[test]
    fn kill_group_of_missing_group_is_ok() {
        assert!(kill_group(i32::MAX, Signal::SIGTERM).is_ok());
        assert!(kill_group(1, Signal::SIGTERM).is_err());
    }
}
