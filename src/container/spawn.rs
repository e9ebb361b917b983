//! Spawning a command inside a running container.
//!
//! ```text
//! supd ──fork──> intermediate: not dumpable, join cgroups, setns user..mnt
//!   │                 └──clone(CLONE_PARENT)──> command (supd's child, in the container's
//!   │                 waits for the command's setsid  PID namespace): setsid, stdio, user,
//!   │                 writes the command's pid to     LSM label, rlimits, [seccomp], caps,
//!   │                 the handoff pipe, _exit(0)      uid, env, cwd, no_new_privs, close
//!   │                                                 fds, [seccomp], execve
//!   └─ returns at once; later reaps the intermediate, reads the pid, waits on a pidfd
//! ```
//!
//! Everything the children use is prepared in [`Plan`] before the first fork, so they never
//! allocate. A child that fails writes `supd: <step>: <reason>` to the command's output and
//! exits with 126; a program that is not found exits with 127, like a shell.
//!
//! The command is confined like the container's first process (see [`super::confine`]). Its
//! seccomp filters go in before the capabilities drop when the container lacks
//! no_new_privs (installing them then needs CAP_SYS_ADMIN), else last before execve, as
//! runc does. Both children are non-dumpable until execve (CVE-2016-9962, CVE-2019-5736): no
//! process of the container may ptrace them or open their `/proc/<pid>/exe` or `fd/`; and the
//! command closes every descriptor but its stdio and checks that its working directory lies
//! inside the container's root (CVE-2024-21626). Non-dumpability ends at execve, and a command
//! that is a `#!/proc/self/exe` script execs supd's image again, inside the container: that
//! image is a sealed memfd, not the host's file (see `crate::sys::exe`). The pid is trusted
//! only once [`identity::pin`] proved it is still the container's first process.

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
use crate::sys::process::{self, CStrArray, EXIT_SETUP_FAILED};

/// The search path when the container's environment has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const EXIT_NOT_FOUND: i32 = 127;
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
struct Plan {
    namespaces: Vec<NamespaceFd>,
    cgroup_procs: Vec<OwnedFd>,
    handoff: OwnedFd,
    /// The command writes a byte here once it leads its own session, and the intermediate
    /// waits for it, so that supd never learns a pid whose process group does not exist yet.
    sessions: (OwnedFd, Option<OwnedFd>),
    stdio: ChildStdio,
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
}

/// Starts `argv` in the container of `target`, whose first process's seccomp filters
/// `seccomp` holds ([`confine::lookup`]); see the module documentation.
pub fn spawn(
    target: &Target,
    seccomp: &confine::InitFilters,
    argv: &[String],
    stdio: Stdio,
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
    let (io, child_stdio) = open_stdio(pid, stdio)?;
    if exited(container.as_fd())? {
        return Err(Error::ContainerGone { pid });
    }

    // Found in the parent, so the child only reads them.
    process::ignored_signals();
    let (handoff, handoff_child) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;
    set_nonblocking(handoff.as_fd())?;
    let (session_read, session_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;

    let mut plan = Plan {
        namespaces,
        cgroup_procs,
        handoff: handoff_child,
        sessions: (session_read, Some(session_write)),
        stdio: child_stdio,
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
    };
    let intermediate_pid = process::fork_child(|| intermediate(&mut plan)).map_err(sys("fork"))?;
    // Dropping the plan closes the children's ends here, so EOF on the output means the
    // command and everything it started are done with it.
    drop(plan);
    let intermediate_pidfd = match process::pidfd_open(intermediate_pid) {
        Ok(fd) => fd,
        Err(errno) => {
            // Without a pidfd the loop cannot learn of its exit: undo the spawn. The child
            // is killed first, so this wait is short.
            let child = Pid::from_raw(intermediate_pid);
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
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

fn open_stdio(pid: i32, stdio: Stdio) -> Result<(Io, ChildStdio)> {
    match stdio {
        Stdio::Pty { rows, cols } => {
            let pty = pty::open(pid, rows, cols)?;
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

/// Writes one line made of `parts`, best effort: the exit status tells the failure anyway.
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

fn fail(fd: BorrowedFd<'_>, step: &str, errno: Errno) -> i32 {
    report(
        fd,
        &[
            b"supd: ",
            step.as_bytes(),
            b": ",
            errno.desc().as_bytes(),
            b"\n",
        ],
    );
    EXIT_SETUP_FAILED
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

/// The intermediate child: joins the container and clones the command.
fn intermediate(plan: &mut Plan) -> i32 {
    let out = plan.stdio.output();
    // Until it exits it holds host descriptors (namespaces, cgroups); a process of the
    // container that could ptrace it or open its /proc/<pid>/fd would get them.
    if let Err(errno) = nix::sys::prctl::set_dumpable(false) {
        return fail(out, "prctl(PR_SET_DUMPABLE)", errno);
    }
    let mut digits = [0; 10];
    let own_pid = decimal(nix::unistd::getpid().as_raw() as u32, &mut digits);
    for procs in &plan.cgroup_procs {
        if let Err(errno) = nix::unistd::write(procs, own_pid) {
            return fail(out, "join cgroup", errno);
        }
    }
    for ns in &plan.namespaces {
        if let Err(errno) = nix::sched::setns(&ns.fd, ns.namespace.flag) {
            report(
                out,
                &[
                    b"supd: setns ",
                    ns.namespace.name.as_bytes(),
                    b": ",
                    errno.desc().as_bytes(),
                    b"\n",
                ],
            );
            return EXIT_SETUP_FAILED;
        }
    }
    let command = match process::clone_sibling(|| command(plan)) {
        Ok(pid) => pid,
        Err(errno) => return fail(plan.stdio.output(), "clone", errno),
    };
    // Our copy of the write end goes, so EOF tells if the command died before its setsid.
    drop(plan.sessions.1.take());
    let mut byte = [0u8; 1];
    while let Err(Errno::EINTR) = nix::unistd::read(&plan.sessions.0, &mut byte) {}
    let bytes = command.to_ne_bytes();
    // Four bytes into an empty pipe: written whole or not at all.
    if let Err(errno) = nix::unistd::write(&plan.handoff, &bytes) {
        let _ = nix::sys::signal::kill(Pid::from_raw(command), Signal::SIGKILL);
        return fail(plan.stdio.output(), "handoff", errno);
    }
    0
}

/// The command's process: sets itself up as the container's user and execs.
fn command(plan: &mut Plan) -> i32 {
    let out = plan.stdio.output();
    if let Err(errno) = process::reset_signals() {
        return fail(out, "reset signals", errno);
    }
    if let Err(errno) = nix::unistd::setsid() {
        return fail(out, "setsid", errno);
    }
    if let Some(session) = plan.sessions.1.take() {
        // Best effort: if this fails, EOF from the drop below releases the intermediate too.
        let _ = nix::unistd::write(&session, b"s");
    }
    let stdio = match &plan.stdio {
        ChildStdio::Terminal(tty) => process::set_controlling_terminal(tty.as_fd())
            .map_err(|e| ("TIOCSCTTY", e))
            .and_then(|()| dup_stdio(tty.as_fd(), tty.as_fd(), tty.as_fd())),
        ChildStdio::Pipes { stdin, output } => {
            dup_stdio(stdin.as_fd(), output.as_fd(), output.as_fd())
        }
    };
    if let Err((step, errno)) = stdio {
        return fail(out, step, errno);
    }
    let err = std::io::stderr();
    let err = err.as_fd();

    let (passwd_buffer, group_buffer) = plan.line_buffers.split_at_mut(user::LINE_BUFFER);
    let mut passwd = FileLines {
        path: c"/etc/passwd",
        buf: passwd_buffer,
    };
    let mut group = FileLines {
        path: c"/etc/group",
        buf: group_buffer,
    };
    if let Err(e) = user::resolve(&plan.user_spec, &mut passwd, &mut group, &mut plan.identity) {
        let (what, why) = e.describe();
        report(
            err,
            &[
                b"supd: ",
                what.as_bytes(),
                b" ",
                &plan.user_spec,
                b": ",
                why.as_bytes(),
                b"\n",
            ],
        );
        return EXIT_SETUP_FAILED;
    }
    let id = &plan.identity;
    let (uid, gid) = (Uid::from_raw(id.uid), Gid::from_raw(id.gid));
    if matches!(plan.stdio, ChildStdio::Terminal(_))
        && let Err(errno) = nix::unistd::fchown(std::io::stdin().as_fd(), Some(uid), Some(gid))
    {
        return fail(err, "chown terminal", errno);
    }
    let confinement = &plan.confinement;
    // Before the limits: a lower descriptor limit would refuse the open.
    if let Some(label) = &confinement.label
        && let Err(errno) = confine::apply_label(label)
    {
        return fail(err, "set LSM exec label", errno);
    }
    // While root: raising a hard limit back to the container's needs CAP_SYS_RESOURCE.
    if let Err(errno) = confine::apply_limits(&confinement.limits) {
        return fail(err, "set resource limits", errno);
    }
    // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN, which is about to go;
    // with it, the filters wait until just before execve, as runc does.
    if !confinement.no_new_privs
        && let Err(errno) = confine::apply_filters(&confinement.filters)
    {
        return fail(err, "seccomp", errno);
    }
    // Needs CAP_SETPCAP, which the uid change below takes away from a non-root user.
    if let Err(errno) =
        process::drop_bounding_capabilities(confinement.bounding, confinement.last_cap)
    {
        return fail(err, "drop capabilities", errno);
    }
    // The inheritable set survives the uid change but may only grow before it; the
    // effective set keeps CAP_SETUID and CAP_SETGID for the change.
    let inheritable = confinement.inheritable & confinement.bounding;
    if let Err(errno) = process::limit_capabilities(u64::MAX, inheritable) {
        return fail(err, "set inheritable capabilities", errno);
    }
    if let Err(errno) = nix::unistd::setgroups(&id.groups) {
        return fail(err, "setgroups", errno);
    }
    if let Err(errno) = nix::unistd::setgid(gid) {
        return fail(err, "setgid", errno);
    }
    if let Err(errno) = nix::unistd::setuid(uid) {
        return fail(err, "setuid", errno);
    }
    if let Err(errno) = process::limit_capabilities(confinement.bounding, inheritable) {
        return fail(err, "limit capabilities", errno);
    }
    if let Err(errno) = crate::sys::confine::clear_ambient_capabilities() {
        return fail(err, "clear ambient capabilities", errno);
    }
    if plan.needs_home && !plan.env.append_within_capacity(&[b"HOME=", &id.home]) {
        return fail(err, "HOME", Errno::ENAMETOOLONG);
    }
    if let Err(errno) = nix::unistd::chdir(plan.working_dir.as_c_str()) {
        report(
            err,
            &[
                b"supd: chdir ",
                plan.working_dir.as_bytes(),
                b": ",
                errno.desc().as_bytes(),
                b"\n",
            ],
        );
        return EXIT_SETUP_FAILED;
    }
    // A working directory reached through a leaked host descriptor would show as
    // "(unreachable)/..." or fail (CVE-2024-21626): only a path inside the root is accepted.
    match process::getcwd_into(&mut plan.cwd_buffer) {
        Ok(len) if plan.cwd_buffer.first() == Some(&b'/') && len > 0 => {}
        Ok(_) => return fail(err, "getcwd", Errno::ENOENT),
        Err(errno) => return fail(err, "getcwd", errno),
    }
    if confinement.no_new_privs
        && let Err(errno) = nix::sys::prctl::set_no_new_privs()
    {
        return fail(err, "prctl(PR_SET_NO_NEW_PRIVS)", errno);
    }
    if let Err(errno) = process::close_from(3) {
        return fail(err, "close_range", errno);
    }
    if confinement.no_new_privs
        && let Err(errno) = confine::apply_filters(&confinement.filters)
    {
        return fail(err, "seccomp", errno);
    }
    let program = plan
        .argv
        .strings()
        .first()
        .map_or(&b""[..], |p| p.as_bytes());
    let mut denied = false;
    for candidate in &plan.candidates {
        match process::execve(candidate, &plan.argv, &plan.env) {
            Errno::ENOENT | Errno::ENOTDIR | Errno::ENAMETOOLONG | Errno::ELOOP => {}
            Errno::EACCES => denied = true,
            errno => {
                report(
                    err,
                    &[b"supd: ", program, b": ", errno.desc().as_bytes(), b"\n"],
                );
                return EXIT_SETUP_FAILED;
            }
        }
    }
    if denied {
        report(err, &[b"supd: ", program, b": permission denied\n"]);
        EXIT_SETUP_FAILED
    } else {
        report(err, &[b"supd: ", program, b": not found\n"]);
        EXIT_NOT_FOUND
    }
}

fn dup_stdio(
    stdin: BorrowedFd<'_>,
    stdout: BorrowedFd<'_>,
    stderr: BorrowedFd<'_>,
) -> std::result::Result<(), (&'static str, Errno)> {
    nix::unistd::dup2_stdin(stdin).map_err(|e| ("dup2 stdin", e))?;
    nix::unistd::dup2_stdout(stdout).map_err(|e| ("dup2 stdout", e))?;
    nix::unistd::dup2_stderr(stderr).map_err(|e| ("dup2 stderr", e))?;
    Ok(())
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

/// After the intermediate child exited: the command's pid, or `None` when setup failed
/// before the command was cloned (the intermediate's exit code, 126, says so and the reason
/// is already in the command's output).
pub fn read_handoff(handoff: &OwnedFd) -> Result<Option<i32>> {
    let mut buf = [0u8; 8];
    let mut filled = 0;
    loop {
        match nix::unistd::read(handoff, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled == buf.len() {
                    break;
                }
            }
            Err(Errno::EINTR) => {}
            // The command may still hold the write end until it execs: no data means no pid.
            Err(Errno::EAGAIN) => break,
            Err(errno) => {
                return Err(Error::Sys {
                    op: "read handoff",
                    errno,
                });
            }
        }
    }
    match filled {
        0 => Ok(None),
        4 => {
            let pid = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if pid > 0 {
                Ok(Some(pid))
            } else {
                Err(Error::BadHandoff)
            }
        }
        _ => Err(Error::BadHandoff),
    }
}

/// A pidfd for `pid`: non-blocking, close-on-exec; readable once the process exits.
pub fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    process::pidfd_open(pid).map_err(sys("pidfd_open"))
}

/// Sends `signal` to process group `pgid` (a command leads its own); a group that is gone
/// is not an error.
pub fn kill_group(pgid: i32, signal: Signal) -> Result<()> {
    if pgid <= 1 {
        return Err(Error::Sys {
            op: "kill",
            errno: Errno::EINVAL,
        });
    }
    match nix::sys::signal::killpg(Pid::from_raw(pgid), signal) {
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
    fn handoff_reads_pid_or_nothing() {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
        assert_eq!(read_handoff(&r).unwrap(), None);
        nix::unistd::write(&w, &1234i32.to_ne_bytes()).unwrap();
        assert_eq!(read_handoff(&r).unwrap(), Some(1234));
        nix::unistd::write(&w, &[1, 2]).unwrap();
        assert!(matches!(read_handoff(&r), Err(Error::BadHandoff)));
        drop(w);
        assert_eq!(read_handoff(&r).unwrap(), None);
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
