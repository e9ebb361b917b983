//! A command started in a container, followed through the loop until it is reaped.
//!
//! The spawn returns at once with the intermediate child's pidfd. When the intermediate exits
//! (it only joins the container and clones the command), it is reaped and the handoff page
//! tells the command's pid; a pidfd for the command then says when it ends. Either child's
//! exit is reaped here, so no zombie survives an operation.
//!
//! The start is bounded: a command that has not reached execve within [`START_TIMEOUT`]
//! (a process of the container stopped it, or the container's filter blocks a step) is
//! killed with the intermediate, and the operation fails with
//! [`container::Error::StartTimeout`]. Nothing the container does can keep an exec waiting.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use nix::sys::signal::Signal;

use super::{Io, Role};
use crate::container::{self, ExitStatus, Spawned};
use crate::sys::process::PidSlot;

/// How long a command may take from the spawn to its execve. The intermediate's work is a
/// few milliseconds of system calls and two bounded file reads; seconds mean something in
/// the container is holding the command.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);

struct Child {
    pid: i32,
    pidfd: OwnedFd,
    token: Token,
}

/// The spawn's hand-off: where the command's pid appears, and the bound on its start.
struct Start {
    handoff: Option<PidSlot>,
    /// The start pipe until its EOF (the command reached execve, or every child exited).
    pipe: Option<OwnedFd>,
    deadline: Instant,
    /// The start timed out: the operation fails with [`Proc::start_error`] once the children
    /// are reaped.
    timed_out: bool,
}

pub(crate) struct Proc {
    intermediate: Option<Child>,
    /// Boxed: every op lives in one map, and this is needed only for a moment.
    start: Box<Start>,
    command: Option<Child>,
    /// The command's pid once known (kept after reaping only for logging).
    pub(crate) pid: Option<i32>,
    pub(crate) status: Option<ExitStatus>,
    /// A signal to deliver as soon as the command's pid is known.
    pending_signal: Option<Signal>,
    /// When SIGKILL follows an earlier SIGTERM/SIGHUP.
    kill_at: Option<Instant>,
}

impl Proc {
    /// Take the child-tracking parts of a spawn and register the intermediate's pidfd.
    pub(crate) fn start(
        me: Token,
        intermediate_pid: i32,
        intermediate_pidfd: OwnedFd,
        handoff: PidSlot,
        started: OwnedFd,
        io: &mut Io<'_>,
    ) -> std::io::Result<Proc> {
        let start = Box::new(Start {
            handoff: Some(handoff),
            pipe: Some(started),
            deadline: Instant::now() + START_TIMEOUT,
            timed_out: false,
        });
        let token = match io.register_fd(
            me,
            Role::Intermediate,
            intermediate_pidfd.as_fd(),
            Interest::READABLE,
        ) {
            Ok(token) => token,
            Err(e) => {
                // Never leave a child unreaped: the intermediate dies at once of SIGKILL, and
                // so does a command it cloned already (the kernel stored its pid first).
                let intermediate = nix::unistd::Pid::from_raw(intermediate_pid);
                let _ = nix::sys::signal::kill(intermediate, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(intermediate, None);
                if let Some(Ok(Some(pid))) = start.handoff.as_ref().map(container::read_handoff) {
                    signal_command(pid, Signal::SIGKILL);
                    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                }
                return Err(e);
            }
        };
        Ok(Proc {
            intermediate: Some(Child {
                pid: intermediate_pid,
                pidfd: intermediate_pidfd,
                token,
            }),
            start,
            command: None,
            pid: None,
            status: None,
            pending_signal: None,
            kill_at: None,
        })
    }

    /// Split a spawn into the process part (registered now) and its stdio.
    pub(crate) fn from_spawned(
        me: Token,
        spawned: Spawned,
        io: &mut Io<'_>,
    ) -> std::io::Result<(Proc, container::Io)> {
        let Spawned {
            intermediate_pid,
            intermediate_pidfd,
            handoff,
            started,
            io: stdio,
        } = spawned;
        let proc = Proc::start(
            me,
            intermediate_pid,
            intermediate_pidfd,
            handoff,
            started,
            io,
        )?;
        io.wake_at(me, proc.start.deadline);
        Ok((proc, stdio))
    }

    pub(crate) fn exited(&self) -> bool {
        self.status.is_some()
    }

    /// Handle readiness of one of our pidfds. Returns true when the status just became known.
    pub(crate) fn on_ready(&mut self, me: Token, role: Role, io: &mut Io<'_>) -> bool {
        self.check_start();
        match role {
            Role::Intermediate => self.on_intermediate(me, io),
            Role::Process => self.on_command(io),
            _ => false,
        }
    }

    fn on_intermediate(&mut self, me: Token, io: &mut Io<'_>) -> bool {
        let Some(child) = self.intermediate.as_ref() else {
            return false;
        };
        let status = match container::try_wait(child.pid) {
            Ok(Some(s)) => s,
            Ok(None) => return false,
            Err(e) => {
                log::warn!("reaping exec helper {}: {e}", child.pid);
                ExitStatus::Code(126)
            }
        };
        let child = self.intermediate.take().expect("checked above");
        io.deregister_fd(child.token, child.pidfd.as_fd());
        let handoff = self.start.handoff.take();
        let pid = match handoff.as_ref().map(container::read_handoff) {
            Some(Ok(Some(pid))) => pid,
            Some(Ok(None)) | None => {
                // Setup failed in the container; the helper wrote why to the output.
                self.status = Some(status);
                return true;
            }
            Some(Err(e)) => {
                log::warn!("exec handoff: {e}");
                self.status = Some(ExitStatus::Code(126));
                return true;
            }
        };
        self.pid = Some(pid);
        match container::pidfd_open(pid) {
            Ok(fd) => match io.register_fd(me, Role::Process, fd.as_fd(), Interest::READABLE) {
                Ok(token) => {
                    self.command = Some(Child {
                        pid,
                        pidfd: fd,
                        token,
                    });
                }
                Err(e) => {
                    log::warn!("register pidfd of {pid}: {e}");
                    self.kill_and_reap_now(pid);
                    return true;
                }
            },
            Err(e) => {
                log::warn!("pidfd_open({pid}): {e}");
                self.kill_and_reap_now(pid);
                return true;
            }
        }
        if let Some(sig) = self.pending_signal.take() {
            signal_command(pid, sig);
        }
        // It may have exited already.
        self.on_command(io)
    }

    /// Without a pidfd we cannot wait in the loop; end the command and reap it here (SIGKILL
    /// makes the wait short).
    fn kill_and_reap_now(&mut self, pid: i32) {
        signal_command(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        self.status = Some(ExitStatus::Signal(libc::SIGKILL));
    }

    fn on_command(&mut self, io: &mut Io<'_>) -> bool {
        let Some(child) = self.command.as_ref() else {
            return false;
        };
        match container::try_wait(child.pid) {
            Ok(Some(s)) => {
                let child = self.command.take().expect("checked above");
                io.deregister_fd(child.token, child.pidfd.as_fd());
                self.status = Some(s);
                self.kill_at = None;
                true
            }
            Ok(None) => false,
            Err(e) => {
                log::warn!("reaping {}: {e}", child.pid);
                false
            }
        }
    }

    /// Signal the command's process group (now, or as soon as its pid is known).
    pub(crate) fn signal(&mut self, sig: Signal) {
        if self.exited() {
            return;
        }
        match self.command.as_ref() {
            Some(c) => signal_command(c.pid, sig),
            // The intermediate exits within milliseconds (or the start timer kills it).
            None => self.pending_signal = Some(sig),
        }
    }

    /// Ask the command to stop (`first`, e.g. SIGTERM or SIGHUP) and schedule SIGKILL after
    /// `grace`.
    pub(crate) fn terminate(&mut self, me: Token, first: Signal, grace: Duration, io: &mut Io<'_>) {
        if self.exited() || self.kill_at.is_some() {
            return;
        }
        self.signal(first);
        let when = Instant::now() + grace;
        self.kill_at = Some(when);
        io.wake_at(me, when);
    }

    /// Ends the start once the start pipe reports EOF; past the deadline, kills the
    /// intermediate and the command (whose pid, if cloned, comes from the kernel when the
    /// intermediate is reaped: the SIGKILL waits as a pending signal for it).
    fn check_start(&mut self) {
        let Some(pipe) = self.start.pipe.as_ref() else {
            return;
        };
        match container::reached_exec(pipe) {
            Ok(false) => {}
            Ok(true) => {
                self.start.pipe = None;
                return;
            }
            Err(e) => log::warn!("exec start pipe: {e}"),
        }
        if Instant::now() < self.start.deadline {
            return;
        }
        self.start.pipe = None;
        if self.exited() {
            return;
        }
        log::warn!("exec: the command did not reach execve within {START_TIMEOUT:?}; killing it");
        self.start.timed_out = true;
        if let Some(c) = self.intermediate.as_ref() {
            let _ = container::kill_process(c.pid, Signal::SIGKILL);
        }
        self.kill_at = None;
        self.signal(Signal::SIGKILL);
    }

    /// Why the operation failed though the command ran (or was killed): its start timed out.
    pub(crate) fn start_error(&self) -> Option<container::Error> {
        self.start
            .timed_out
            .then_some(container::Error::StartTimeout {
                after: START_TIMEOUT,
            })
    }

    /// Called on timer wake-ups: deliver the SIGKILL that follows a grace period, and end a
    /// start that took too long.
    pub(crate) fn on_timer(&mut self) {
        self.check_start();
        if let Some(when) = self.kill_at
            && Instant::now() >= when
        {
            self.kill_at = None;
            self.signal(Signal::SIGKILL);
        }
    }

    pub(crate) fn release(&mut self, io: &mut Io<'_>) {
        if let Some(c) = self.intermediate.take() {
            io.deregister_fd(c.token, c.pidfd.as_fd());
        }
        if let Some(c) = self.command.take() {
            io.deregister_fd(c.token, c.pidfd.as_fd());
        }
    }

    /// supd is exiting: kill what is still running; whoever inherits the children reaps them.
    pub(crate) fn abandon(&mut self) {
        if let Some(c) = self.command.as_ref() {
            signal_command(c.pid, Signal::SIGKILL);
        }
        if let Some(c) = self.intermediate.as_ref() {
            let _ = container::kill_process(c.pid, Signal::SIGKILL);
            // A command it already cloned is known to the kernel's store even though the
            // intermediate was not reaped yet; it is our unreaped child, so the pid is its.
            if let Some(Ok(Some(pid))) = self.start.handoff.as_ref().map(container::read_handoff) {
                signal_command(pid, Signal::SIGKILL);
            }
        }
    }
}

/// Signals the command itself and its process group: a command stopped before its setsid
/// has no group of its own yet, and one that ran may have children in its group.
fn signal_command(pid: i32, sig: Signal) {
    let _ = container::kill_group(pid, sig);
}
