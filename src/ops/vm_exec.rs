//! `POST .../vm-container/exec`: run a command in the VM through its guest agent
//! (`guest-exec`, then `guest-exec-status` until it exits) and answer as a container exec
//! does: merged output up to the cap, exit code or signal.
//!
//! The status is polled adaptively: at once, then after 1, 2, 4... ms up to every
//! [`POLL_MAX`], so a short command answers close to the agent's own round trip and a long
//! one costs a poll every few tens of milliseconds. A client that goes away gets its guest
//! process killed (TERM, then KILL after the grace period, each through `guest-exec` of the
//! guest shell's `kill`).

use std::time::{Duration, Instant};

use mio::Token;

use super::exec::answer;
use super::{EnvMut, Io, Progress, Reply};
use crate::container::ExitStatus;
use crate::http::{ApiError, Format};
use crate::vm::qga::{self, Command};
use crate::vm::{AgentError, Got};

/// How long the agent has to answer one command once it is sent.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between two status polls.
pub const POLL_MAX: Duration = Duration::from_millis(50);

const TAG_EXEC: u64 = 1;
const TAG_STATUS: u64 = 2;
const TAG_KILL: u64 = 3;

pub(crate) struct VmExec {
    /// The launcher's full container id (the key of its agent in `Vms`).
    vm: String,
    argv: Vec<String>,
    /// The answer's format (JSON, YAML, raw bytes).
    output: Format,
    /// The format of an error answer.
    format: Format,
    cap: usize,
    grace: Duration,
    /// The guest pid `guest-exec` returned.
    pid: Option<i64>,
    polls: u32,
    /// A status poll is due at this time (none while one is in flight).
    poll_at: Option<Instant>,
    started: bool,
    client_gone: bool,
    /// Killing: when the KILL follows the TERM (none once sent).
    kill_at: Option<Instant>,
    killed: bool,
    done: bool,
}

impl VmExec {
    pub(crate) fn new(
        vm: String,
        argv: Vec<String>,
        output: Format,
        format: Format,
        io: &Io<'_>,
    ) -> VmExec {
        VmExec {
            vm,
            argv,
            output,
            format,
            cap: io.cfg.exec.output_cap,
            grace: io.cfg.exec.kill_grace,
            pid: None,
            polls: 0,
            poll_at: None,
            started: false,
            client_gone: false,
            kill_at: None,
            killed: false,
            done: false,
        }
    }

    fn send(
        &self,
        me: Token,
        tag: u64,
        cmd: Command,
        io: &mut Io<'_>,
        env: &mut EnvMut<'_>,
    ) -> Result<(), AgentError> {
        env.vms.submit(&self.vm, me, tag, cmd, COMMAND_TIMEOUT, io)
    }

    /// Timers (and the first turn): start, poll, escalate a kill.
    pub(crate) fn drive(&mut self, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) -> Progress {
        if !self.started {
            self.started = true;
            let cmd = Command::Run(std::mem::take(&mut self.argv));
            if let Err(e) = self.send(me, TAG_EXEC, cmd, io, env) {
                return self.fail(e);
            }
        }
        let now = Instant::now();
        if let Some(at) = self.poll_at
            && now >= at
        {
            self.poll_at = None;
            if let Some(pid) = self.pid
                && let Err(e) = self.send(me, TAG_STATUS, Command::ExecStatus(pid), io, env)
            {
                return self.fail(e);
            }
        }
        if let Some(at) = self.kill_at
            && now >= at
        {
            self.kill_at = None;
            self.kill("KILL", me, io, env);
        }
        self.progress()
    }

    pub(crate) fn agent_reply(
        &mut self,
        me: Token,
        reply: crate::vm::Reply,
        io: &mut Io<'_>,
        env: &mut EnvMut<'_>,
    ) -> Progress {
        match (reply.tag, reply.result) {
            (TAG_EXEC, Ok(Got::Value(v))) => match qga::exec_pid(&v) {
                Some(pid) => {
                    self.pid = Some(pid);
                    if self.client_gone {
                        self.start_kill(me, io, env);
                    }
                    self.schedule_poll(me, io);
                }
                None => {
                    return self.fail(AgentError::Guest {
                        class: "BadAnswer".into(),
                        desc: "guest-exec answered without a pid".into(),
                    });
                }
            },
            // The agent could not start it: as a shell says of a command it cannot run.
            (TAG_EXEC, Err(AgentError::Guest { desc, .. })) => {
                let mut output = desc.into_bytes();
                output.push(b'\n');
                return self.answer(output, false, ExitStatus::Code(127));
            }
            (TAG_EXEC | TAG_STATUS, Err(e)) => return self.fail(e),
            (TAG_STATUS, Ok(got)) => {
                let status = match &got {
                    Got::Value(v) => qga::exec_status(v, self.cap),
                    Got::Cut(prefix) => qga::exec_status_from_prefix(prefix, self.cap),
                };
                let Some(status) = status else {
                    return self.fail(AgentError::Guest {
                        class: "BadAnswer".into(),
                        desc: "guest-exec-status answered without a status".into(),
                    });
                };
                if status.exited {
                    let how = match (status.exit_code, status.signal) {
                        (_, Some(s)) => ExitStatus::Signal(s),
                        (Some(c), None) => ExitStatus::Code(c),
                        (None, None) => ExitStatus::Code(0),
                    };
                    return self.answer(status.output, status.truncated, how);
                }
                self.schedule_poll(me, io);
            }
            // A kill that fails changes nothing: the next poll tells whether it still runs.
            (TAG_KILL, _) => {}
            _ => {}
        }
        self.progress()
    }

    fn schedule_poll(&mut self, me: Token, io: &mut Io<'_>) {
        let delay = Duration::from_millis(1u64 << self.polls.min(6)).min(POLL_MAX);
        let delay = if self.polls == 0 {
            Duration::ZERO
        } else {
            delay
        };
        self.polls += 1;
        let at = Instant::now() + delay;
        self.poll_at = Some(at);
        io.wake_at(me, at);
    }

    fn answer(&mut self, output: Vec<u8>, truncated: bool, how: ExitStatus) -> Progress {
        self.done = true;
        let mut p = Progress {
            done: true,
            ..Progress::default()
        };
        if !self.client_gone {
            p.reply = Some(Reply {
                response: answer(output, truncated, how, self.output, self.cap),
            });
        }
        p
    }

    fn fail(&mut self, e: AgentError) -> Progress {
        self.done = true;
        let mut p = Progress {
            done: true,
            ..Progress::default()
        };
        if !self.client_gone {
            p.reply = Some(Reply {
                response: ApiError::from(e).into_response(self.format),
            });
        }
        p
    }

    fn progress(&self) -> Progress {
        Progress {
            done: self.done,
            ..Progress::default()
        }
    }

    fn start_kill(&mut self, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) {
        if self.pid.is_none() || self.killed {
            return;
        }
        self.killed = true;
        self.kill("TERM", me, io, env);
        let at = Instant::now() + self.grace;
        self.kill_at = Some(at);
        io.wake_at(me, at);
    }

    fn kill(&mut self, signal: &str, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) {
        let Some(pid) = self.pid else { return };
        if let Err(e) = self.send(me, TAG_KILL, qga::kill(pid, signal, true), io, env) {
            log::warn!(
                "cannot kill guest process {pid} of VM {}: {e}",
                short(&self.vm)
            );
        }
    }

    /// The client went away: kill the guest process, and wait for it to end (the status
    /// polls go on) so the agent is not left with it.
    pub(crate) fn client_gone(&mut self, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) {
        self.client_gone = true;
        self.start_kill(me, io, env);
    }

    /// supd is stopping: kill the guest process; the answer still says how it ended.
    pub(crate) fn shutdown(&mut self, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) {
        self.start_kill(me, io, env);
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
