//! A command started in a container, followed through the loop until it is reaped.
//!
//! The spawn returns at once with the intermediate child's pidfd. When the intermediate exits
//! (it only joins the container and clones the command), it is reaped and the handoff pipe
//! tells the command's pid; a pidfd for the command then says when it ends. Either child's
//! exit is reaped here, so no zombie survives an operation.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use nix::sys::signal::Signal;

use super::{Io, Role};
use crate::container::{self, ExitStatus, Spawned};

struct Child {
    pid: i32,
    pidfd: OwnedFd,
    token: Token,
}

pub struct Proc {
    intermediate: Option<Child>,
    handoff: Option<OwnedFd>,
    command: Option<Child>,
    /// The command's pid once known (kept after reaping only for logging).
    pub pid: Option<i32>,
    pub status: Option<ExitStatus>,
    /// A signal to deliver as soon as the command's pid is known.
    pending_signal: Option<Signal>,
    /// When SIGKILL follows an earlier SIGTERM/SIGHUP.
    kill_at: Option<Instant>,
}

impl Proc {
    /// Take the child-tracking parts of a spawn and register the intermediate's pidfd.
    pub fn start(
        me: Token,
        intermediate_pid: i32,
        intermediate_pidfd: OwnedFd,
        handoff: OwnedFd,
        io: &mut Io<'_>,
    ) -> std::io::Result<Proc> {
        let token = io.register_fd(
            me,
            Role::Intermediate,
            intermediate_pidfd.as_fd(),
            Interest::READABLE,
        )?;
        Ok(Proc {
            intermediate: Some(Child {
                pid: intermediate_pid,
                pidfd: intermediate_pidfd,
                token,
            }),
            handoff: Some(handoff),
            command: None,
            pid: None,
            status: None,
            pending_signal: None,
            kill_at: None,
        })
    }

    /// Split a spawn into the process part (registered now) and its stdio.
    pub fn from_spawned(
        me: Token,
        spawned: Spawned,
        io: &mut Io<'_>,
    ) -> std::io::Result<(Proc, container::Io)> {
        let Spawned {
            intermediate_pid,
            intermediate_pidfd,
            handoff,
            io: stdio,
        } = spawned;
        let proc = match Proc::start(me, intermediate_pid, intermediate_pidfd, handoff, io) {
            Ok(p) => p,
            Err(e) => {
                // Never leave the intermediate unreaped: it exits on its own within
                // microseconds, so a kill and a blocking wait here are bounded.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(intermediate_pid),
                    Signal::SIGKILL,
                );
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(intermediate_pid), None);
                return Err(e);
            }
        };
        Ok((proc, stdio))
    }

    pub fn exited(&self) -> bool {
        self.status.is_some()
    }

    /// Handle readiness of one of our pidfds. Returns true when the status just became known.
    pub fn on_ready(&mut self, me: Token, role: Role, io: &mut Io<'_>) -> bool {
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
        let handoff = self.handoff.take();
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
            let _ = container::kill_group(pid, sig);
        }
        // It may have exited already.
        self.on_command(io)
    }

    /// Without a pidfd we cannot wait in the loop; end the command and reap it here (SIGKILL
    /// makes the wait short).
    fn kill_and_reap_now(&mut self, pid: i32) {
        let _ = container::kill_group(pid, Signal::SIGKILL);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
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
    pub fn signal(&mut self, sig: Signal) {
        if self.exited() {
            return;
        }
        match self.command.as_ref() {
            Some(c) => {
                let _ = container::kill_group(c.pid, sig);
            }
            None => self.pending_signal = Some(sig),
        }
    }

    /// Ask the command to stop (`first`, e.g. SIGTERM or SIGHUP) and schedule SIGKILL after
    /// `grace`.
    pub fn terminate(&mut self, me: Token, first: Signal, grace: Duration, io: &mut Io<'_>) {
        if self.exited() || self.kill_at.is_some() {
            return;
        }
        self.signal(first);
        let when = Instant::now() + grace;
        self.kill_at = Some(when);
        io.wake_at(me, when);
    }

    /// Called on timer wake-ups: deliver the SIGKILL that follows a grace period.
    pub fn on_timer(&mut self) {
        if let Some(when) = self.kill_at
            && Instant::now() >= when
        {
            self.kill_at = None;
            self.signal(Signal::SIGKILL);
        }
    }

    pub fn release(&mut self, io: &mut Io<'_>) {
        if let Some(c) = self.intermediate.take() {
            io.deregister_fd(c.token, c.pidfd.as_fd());
        }
        if let Some(c) = self.command.take() {
            io.deregister_fd(c.token, c.pidfd.as_fd());
        }
    }

    /// supd is exiting: kill what is still running; whoever inherits the children reaps them.
    pub fn abandon(&mut self) {
        if let Some(c) = self.command.as_ref() {
            let _ = container::kill_group(c.pid, Signal::SIGKILL);
        }
        if let Some(c) = self.intermediate.as_ref() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.pid), Signal::SIGKILL);
        }
    }
}
