//! Websocket sessions with a VM's serial ports: `vm-container/exec-interactive` (a command on
//! a spare serial port, started through the guest agent) and `vm-container/console` (raw bytes
//! with the guest's serial console).
//!
//! The port's socket is connected first (by a helper, in the launcher's root: output the guest
//! writes while nobody is connected is lost), and for a command the agent starts it with that
//! port as its controlling terminal:
//!
//! ```text
//! /bin/sh -c 'stty -F "$0" sane rows "$1" cols "$2"; shift 2; exec setsid -c "$@" <>"$0" >&0 2>&0' /dev/ttyS1 24 80 CMD ARGS...
//! ```
//!
//! (`raw -echo` instead of `sane` without `tty=true`). Only then does the client get its 101,
//! so every failure before is an HTTP error. Resize frames run `stty -F /dev/ttyS1 rows H cols
//! W` through the agent (the guest kernel sends SIGWINCH); close-stdin writes the terminal's
//! EOF character (Ctrl-D). The command's end is seen by polling `guest-exec-status`; then the
//! rest of the output goes out and the session closes with 1000 and `{"exit-code":N}` or
//! `{"signal":N}`. A client that goes away gets the command's process group sent SIGHUP, then
//! SIGKILL after the grace period, through the agent; the port is free again when the session
//! ends.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::{Interest, Token};
use tungstenite::Bytes;

use super::vm_exec::COMMAND_TIMEOUT;
use super::wsclient::{Forwarded, FrameSink, WsClient};
use super::{EnvMut, Io, Progress, Reply, Role};
use crate::container::ExitStatus;
use crate::container::helper::{Failed, InRoot, Job};
use crate::http::{ApiError, Format};
use crate::vm::qga::{self, Command};
use crate::vm::{AgentError, Got};
use crate::ws::protocol::{self, ClientFrame};

/// Largest output frame.
const OUT_CHUNK: usize = 16 * 1024;
const _: () = assert!(OUT_CHUNK <= crate::reactor::SCRATCH);
/// Input held for the port at most; the client is not read beyond it.
const INPUT_LIMIT: usize = 64 * 1024;
/// How long the helper may take to connect to the port's socket in the launcher.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After the command exits, output is still forwarded until it has been quiet this long...
const QUIET: Duration = Duration::from_millis(100);
/// ... or this long has passed.
const LINGER: Duration = Duration::from_millis(500);
/// The longest pause between two status polls of a running command.
const POLL_MAX: Duration = Duration::from_millis(200);
/// The terminal size a command starts with (the client resizes it).
const START_SIZE: (u16, u16) = (24, 80);

const TAG_START: u64 = 1;
const TAG_STATUS: u64 = 2;
const TAG_RESIZE: u64 = 3;
const TAG_KILL: u64 = 4;

/// What the session is with.
pub(crate) enum Kind {
    /// A command on the spare serial port `tty` (its index among the launcher's terminals).
    Terminal {
        tty: String,
        argv: Vec<String>,
        tty_mode: bool,
    },
    Console,
}

/// Why a session could not start (before its 101).
#[derive(Debug)]
pub(crate) enum Error {
    /// Every terminal port is held by another session (409).
    TerminalsBusy { ports: usize },
    /// The launcher has no terminal port at all (409).
    NoTerminals,
    /// Another session has the console (409).
    ConsoleBusy,
    /// The port's socket could not be connected (409).
    Port { which: String, why: String },
    /// The helper connecting to the port's socket did not answer in time (504).
    PortTimeout { which: String, after: Duration },
    /// The loop would not take a descriptor (500).
    Follow(std::io::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::TerminalsBusy { ports } => write!(
                f,
                "all {ports} terminal ports of the VM are in use by other sessions"
            ),
            Error::NoTerminals => f.write_str("the VM's launcher declares no terminal ports"),
            Error::ConsoleBusy => f.write_str(
                "another session has the VM's console (ask with takeover=true to take it over)",
            ),
            Error::Port { which, why } => write!(f, "cannot connect to the VM's {which}: {why}"),
            Error::PortTimeout { which, after } => write!(
                f,
                "the VM's {which} could not be reached within {} ms",
                after.as_millis()
            ),
            Error::Follow(e) => write!(f, "cannot follow the session: {e}"),
        }
    }
}

impl std::error::Error for Error {}

pub(crate) struct VmSession {
    /// The launcher's full container id.
    vm: String,
    kind: Kind,
    format: Format,
    grace: Duration,
    helper: Option<(InRoot, Token)>,
    port: Option<(UnixStream, Token)>,
    client: Option<WsClient>,
    /// The 101 answer, written first when the client is attached.
    head: Vec<u8>,
    /// The guest pid of the command.
    pid: Option<i64>,
    /// Output read but not yet accepted by the websocket.
    held: Option<Vec<u8>>,
    to_port: Vec<u8>,
    /// A close-stdin arrived: EOF goes after the input before it.
    eof_after: bool,
    /// Until the command's start prints it on the port, output is dropped and input held.
    marker: Option<Vec<u8>>,
    /// The port's output while the marker is awaited (its last bytes).
    before_marker: Vec<u8>,
    resize: Option<(u16, u16)>,
    resize_inflight: bool,
    polls: u32,
    poll_at: Option<Instant>,
    status_inflight: bool,
    exit: Option<ExitStatus>,
    exited_at: Option<Instant>,
    last_output: Option<Instant>,
    /// The 101 went out (the session is a websocket now).
    upgraded: bool,
    /// The HTTP client left before the 101: nothing more is started; a command already
    /// started is hung up.
    abandoned: bool,
    /// The command's `guest-exec` is sent and not answered yet.
    start_inflight: bool,
    /// Hanging up: when SIGKILL follows.
    kill_at: Option<Instant>,
    hung_up: bool,
    closing: bool,
    done: bool,
}

impl VmSession {
    /// Connects to the port of `kind` in the launcher (process `pid`, container `vm`); the
    /// caller has claimed the port for this session.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        me: Token,
        vm: String,
        pid: i32,
        socket_path: &str,
        kind: Kind,
        head: Vec<u8>,
        format: Format,
        io: &mut Io<'_>,
    ) -> Result<VmSession, ApiError> {
        let which = match &kind {
            Kind::Terminal { tty, .. } => format!("terminal port {tty}"),
            Kind::Console => "console".to_string(),
        };
        let path = std::ffi::CString::new(socket_path.trim_start_matches('/')).map_err(|_| {
            Error::Port {
                which: which.clone(),
                why: "a NUL in its path".into(),
            }
        })?;
        let helper =
            InRoot::start(pid, &vm, Job::ConnectUnix(path), CONNECT_TIMEOUT).map_err(|e| {
                match e {
                    // Too many lookups in its file system are stuck: try again later (503).
                    e @ crate::container::Error::LookupsStuck { .. } => ApiError::from(e),
                    e => Error::Port {
                        which,
                        why: e.to_string(),
                    }
                    .into(),
                }
            })?;
        let token = io
            .register_fd(me, Role::Terminal, helper.socket(), Interest::READABLE)
            .map_err(Error::Follow)?;
        io.wake_at(me, helper.deadline());
        Ok(VmSession {
            vm,
            kind,
            format,
            grace: io.cfg.exec.kill_grace,
            helper: Some((helper, token)),
            port: None,
            client: None,
            head,
            pid: None,
            held: None,
            to_port: Vec::new(),
            eof_after: false,
            marker: None,
            before_marker: Vec::new(),
            resize: None,
            resize_inflight: false,
            polls: 0,
            poll_at: None,
            status_inflight: false,
            exit: None,
            exited_at: None,
            last_output: None,
            upgraded: false,
            abandoned: false,
            start_inflight: false,
            kill_at: None,
            hung_up: false,
            closing: false,
            done: false,
        })
    }

    pub(crate) fn take_head(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.head)
    }

    pub(crate) fn attach(&mut self, client: WsClient) {
        self.client = Some(client);
    }

    fn is_console(&self) -> bool {
        matches!(self.kind, Kind::Console)
    }

    fn which(&self) -> String {
        match &self.kind {
            Kind::Terminal { tty, .. } => format!("terminal port {tty}"),
            Kind::Console => "console".into(),
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

    fn device(&self) -> String {
        match &self.kind {
            Kind::Terminal { tty, .. } => format!("/dev/{tty}"),
            Kind::Console => String::new(),
        }
    }

    pub(crate) fn drive(
        &mut self,
        me: Token,
        role: Option<Role>,
        io: &mut Io<'_>,
        env: &mut EnvMut<'_>,
    ) -> Progress {
        if self.helper.is_some() {
            return self.connecting(me, io, env);
        }
        if self.abandoned {
            if role.is_none() {
                self.timers(me, io, env);
            }
            self.done = !self.start_inflight
                && (self.pid.is_none() || (self.hung_up && self.kill_at.is_none()));
            return self.progress();
        }
        if !self.upgraded {
            return self.progress();
        }
        if role.is_none() {
            if let Some(c) = self.client.as_mut() {
                c.on_timer(me, io);
            }
            self.timers(me, io, env);
        }
        if self.is_console()
            && !self.closing
            && env
                .vms
                .get_mut(&self.vm)
                .is_none_or(|vm| vm.console != Some(me))
        {
            self.close_client(me, 1000, "another session took the console over", io);
        }
        self.pump_input(me, io);
        self.request_resize(me, io, env);
        self.write_port(io);
        self.pump_output(me, io);
        self.finish_if_done(me, io, env)
    }

    /// Waiting for the helper's connection to the port.
    fn connecting(&mut self, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) -> Progress {
        let Some((helper, token)) = self.helper.as_mut() else {
            return self.progress();
        };
        let Some(result) = helper.progress(CONNECT_TIMEOUT) else {
            return self.progress();
        };
        let token = *token;
        if let Some((helper, _)) = self.helper.take() {
            io.deregister_fd(token, helper.socket());
        }
        let why = match result {
            Ok(fds) => Ok(fds),
            Err(Failed::Timeout(after)) => Err(Error::PortTimeout {
                which: self.which(),
                after,
            }),
            Err(Failed::Job(errno)) => Err(Error::Port {
                which: self.which(),
                why: errno.desc().to_string(),
            }),
            Err(Failed::Other(e)) => Err(Error::Port {
                which: self.which(),
                why: e.to_string(),
            }),
        };
        let fds = match why {
            Ok(fds) => fds,
            Err(e) => return self.fail(e),
        };
        if let Err(e) = self.adopt(me, fds, io) {
            return self.fail(e);
        }
        if self.abandoned {
            // Nobody to start anything for.
            self.done = true;
            return self.progress();
        }
        match &self.kind {
            Kind::Console => self.upgrade(),
            Kind::Terminal { argv, tty_mode, .. } => {
                let mode = if *tty_mode { "sane" } else { "raw -echo" };
                // The port is opened once (fd 3) and stays open into the command: input that
                // reaches a serial port nobody has open is dropped, so supd writes none until
                // the marker, printed once the port is open, comes back.
                let script = format!(
                    "stty -F \"$0\" {mode} rows \"$1\" cols \"$2\" 2>/dev/null; \
                     exec 3<>\"$0\"; printf '%s' \"$3\" >&3; shift 3; \
                     exec setsid -c \"$@\" <&3 >&3 2>&3 3>&-"
                );
                let marker = ready_marker(me);
                let mut args = vec![
                    self.device(),
                    START_SIZE.0.to_string(),
                    START_SIZE.1.to_string(),
                    String::from_utf8_lossy(&marker).into_owned(),
                ];
                self.marker = Some(marker);
                args.extend(argv.iter().cloned());
                match self.send(me, TAG_START, Command::Shell { script, args }, io, env) {
                    Ok(()) => {
                        self.start_inflight = true;
                        self.progress()
                    }
                    Err(e) => self.fail_agent(e),
                }
            }
        }
    }

    fn adopt(&mut self, me: Token, fds: Vec<OwnedFd>, io: &mut Io<'_>) -> Result<(), Error> {
        let fd = fds.into_iter().next().ok_or_else(|| Error::Port {
            which: self.which(),
            why: "the helper sent no socket".into(),
        })?;
        let std = std::os::unix::net::UnixStream::from(fd);
        std.set_nonblocking(true).map_err(Error::Follow)?;
        let mut stream = UnixStream::from_std(std);
        let token = io
            .register(
                me,
                Role::Socket,
                &mut stream,
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(Error::Follow)?;
        self.port = Some((stream, token));
        Ok(())
    }

    pub(crate) fn agent_reply(
        &mut self,
        me: Token,
        reply: crate::vm::Reply,
        io: &mut Io<'_>,
        env: &mut EnvMut<'_>,
    ) -> Progress {
        match (reply.tag, reply.result) {
            (TAG_START, result) => {
                self.start_inflight = false;
                let pid = match result {
                    Ok(Got::Value(v)) => qga::exec_pid(&v).ok_or(AgentError::Guest {
                        class: "BadAnswer".into(),
                        desc: "guest-exec answered without a pid".into(),
                    }),
                    Ok(Got::Cut(_)) => Err(AgentError::Guest {
                        class: "BadAnswer".into(),
                        desc: "guest-exec answered with an over-long line".into(),
                    }),
                    Err(e) => Err(e),
                };
                match pid {
                    Ok(pid) => {
                        self.pid = Some(pid);
                        self.schedule_poll(me, io);
                        if self.abandoned {
                            // Started after its client left: hang it up at once.
                            self.hang_up(me, io, env);
                        } else {
                            return self.upgrade();
                        }
                    }
                    Err(_) if self.abandoned => {}
                    Err(e) => return self.fail_agent(e),
                }
            }
            (TAG_STATUS, result) => {
                self.status_inflight = false;
                let status = match result {
                    Ok(Got::Value(v)) => qga::exec_status(&v, 0),
                    Ok(Got::Cut(prefix)) => qga::exec_status_from_prefix(&prefix, 0),
                    Err(e) => {
                        log::warn!("VM session: status of the command: {e}");
                        None
                    }
                };
                match status {
                    Some(s) if s.exited => {
                        self.exit = Some(match (s.exit_code, s.signal) {
                            (_, Some(n)) => ExitStatus::Signal(n),
                            (Some(c), None) => ExitStatus::Code(c),
                            (None, None) => ExitStatus::Code(0),
                        });
                        self.exited_at = Some(Instant::now());
                        io.wake_at(me, Instant::now() + QUIET);
                    }
                    _ => self.schedule_poll(me, io),
                }
            }
            (TAG_RESIZE, _) => {
                self.resize_inflight = false;
                self.request_resize(me, io, env);
            }
            _ => {}
        }
        self.drive(me, Some(Role::Socket), io, env)
    }

    fn upgrade(&mut self) -> Progress {
        self.upgraded = true;
        Progress {
            upgrade: true,
            ..Progress::default()
        }
    }

    fn schedule_poll(&mut self, me: Token, io: &mut Io<'_>) {
        let delay = Duration::from_millis(2u64 << self.polls.min(7)).min(POLL_MAX);
        self.polls += 1;
        let at = Instant::now() + delay;
        self.poll_at = Some(at);
        io.wake_at(me, at);
    }

    /// Polls, the kill after a hang-up.
    fn timers(&mut self, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) {
        let now = Instant::now();
        if let Some(at) = self.poll_at
            && now >= at
            && !self.status_inflight
            && self.exit.is_none()
            && let Some(pid) = self.pid
        {
            self.poll_at = None;
            match self.send(me, TAG_STATUS, Command::ExecStatus(pid), io, env) {
                Ok(()) => self.status_inflight = true,
                Err(e) => {
                    log::warn!("VM session: cannot poll the command: {e}");
                    self.schedule_poll(me, io);
                }
            }
        }
        if let Some(at) = self.kill_at
            && now >= at
        {
            self.kill_at = None;
            self.signal_group("KILL", me, io, env);
        }
    }

    /// The client's frames go to the port; resizes are sent to the agent, the latest only.
    fn pump_input(&mut self, me: Token, io: &mut Io<'_>) {
        let Some(mut client) = self.client.take() else {
            return;
        };
        let reason = if self.is_console() {
            "text frames are not part of v1.console.supd"
        } else {
            "text frames are not part of v1.exec-interactive.supd"
        };
        client.read_frames(me, io, reason, self);
        self.client = Some(client);
    }

    fn request_resize(&mut self, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) {
        if self.resize_inflight || self.exit.is_some() {
            return;
        }
        let Some((rows, cols)) = self.resize.take() else {
            return;
        };
        let cmd = Command::Shell {
            script: "stty -F \"$0\" rows \"$1\" cols \"$2\"".into(),
            args: vec![self.device(), rows.to_string(), cols.to_string()],
        };
        match self.send(me, TAG_RESIZE, cmd, io, env) {
            Ok(()) => self.resize_inflight = true,
            Err(e) => log::debug!("VM session: resize: {e}"),
        }
    }

    fn write_port(&mut self, io: &mut Io<'_>) {
        if self.marker.is_some() {
            return;
        }
        let Some((port, _)) = self.port.as_mut() else {
            self.to_port.clear();
            return;
        };
        while !self.to_port.is_empty() {
            match port.write(&self.to_port) {
                Ok(0) => break,
                Ok(n) => {
                    self.to_port.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.to_port.clear();
                    self.close_port(io);
                    return;
                }
            }
        }
        if self.to_port.capacity() > INPUT_LIMIT {
            self.to_port.shrink_to(4096);
        }
        if self.eof_after && self.to_port.is_empty() {
            self.eof_after = false;
            // The terminal's EOF character (VEOF, Ctrl-D): what a user at it would type.
            let _ = port.write(&[0x04]);
        }
    }

    fn pump_output(&mut self, me: Token, io: &mut Io<'_>) {
        if self.marker.is_some() {
            self.await_marker(io);
            if self.marker.is_some() {
                return;
            }
            // Input held meanwhile can go now.
            self.write_port(io);
        }
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let Some((port, _)) = self.port.as_mut() else {
            client.send_held(&mut self.held);
            client.pump();
            return;
        };
        let mut got = false;
        let read = |buf: &mut [u8]| match port.read(buf) {
            Ok(0) => Ok(None),
            Ok(n) => {
                got = true;
                Ok(Some(n))
            }
            Err(e) => Err(e),
        };
        let end = client.forward(me, io, &mut self.held, OUT_CHUNK, read);
        if got {
            self.last_output = Some(Instant::now());
            if self.exited_at.is_some() {
                io.wake_at(me, Instant::now() + QUIET);
            }
        }
        match end {
            Forwarded::Paused => {}
            Forwarded::Ended | Forwarded::Failed(_) => self.close_port(io),
        }
    }

    /// Reads the port until the marker: what comes before it is the start's own output.
    fn await_marker(&mut self, io: &mut Io<'_>) {
        let (Some(marker), Some((port, _))) = (self.marker.as_ref(), self.port.as_mut()) else {
            return;
        };
        let mut buf = [0u8; 4096];
        loop {
            match port.read(&mut buf) {
                Ok(0) => {
                    self.marker = None;
                    self.close_port(io);
                    return;
                }
                Ok(n) => {
                    self.before_marker.extend_from_slice(&buf[..n]);
                    if let Some(at) = find(&self.before_marker, marker) {
                        let rest = self.before_marker.split_off(at + marker.len());
                        self.before_marker = Vec::new();
                        self.marker = None;
                        if !rest.is_empty() {
                            self.held = Some(rest);
                        }
                        return;
                    }
                    // Only a marker's length may still be the start of one.
                    let keep = marker.len().saturating_sub(1);
                    if self.before_marker.len() > keep {
                        self.before_marker.drain(..self.before_marker.len() - keep);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.marker = None;
                    self.close_port(io);
                    return;
                }
            }
        }
    }

    fn close_port(&mut self, io: &mut Io<'_>) {
        if let Some((mut port, token)) = self.port.take() {
            io.deregister(token, &mut port);
        }
    }

    fn close_client(&mut self, me: Token, code: u16, reason: &str, io: &mut Io<'_>) {
        self.closing = true;
        if let Some(c) = self.client.as_mut()
            && !c.closing()
            && !c.dead
        {
            c.close(me, code, reason, io);
            c.pump();
        }
    }

    fn finish_if_done(&mut self, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) -> Progress {
        let client_dead = self.client.as_ref().is_none_or(|c| c.dead);
        if self.is_console() {
            if self.port.is_none() && !self.closing {
                self.close_client(me, 1000, "the VM's console closed", io);
            }
            self.done = client_dead;
            return self.progress();
        }
        if (client_dead || self.closing) && self.exit.is_none() {
            self.hang_up(me, io, env);
        }
        if let (Some(status), Some(at)) = (self.exit, self.exited_at) {
            let quiet = self.last_output.is_none_or(|t| t.elapsed() >= QUIET);
            let lingered = at.elapsed() >= LINGER || self.port.is_none();
            if (quiet || lingered) && self.held.is_none() && !self.closing {
                let reason = match status {
                    ExitStatus::Code(n) => protocol::exit_reason_code(n),
                    ExitStatus::Signal(n) => protocol::exit_reason_signal(n),
                };
                self.close_client(me, 1000, &reason, io);
            } else if !quiet && !lingered {
                io.wake_at(me, Instant::now() + QUIET);
            }
        } else if self.port.is_none() && !self.closing {
            // The launcher went away under the session.
            self.close_client(me, 1011, "the VM's terminal port closed", io);
        }
        let command_over = self.exit.is_some()
            || (self.pid.is_none() && !self.start_inflight)
            || (self.hung_up && self.kill_at.is_none());
        self.done = client_dead && command_over;
        self.progress()
    }

    /// SIGHUP to the command's process group, SIGKILL after the grace period.
    fn hang_up(&mut self, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) {
        if self.hung_up || self.pid.is_none() {
            return;
        }
        self.hung_up = true;
        self.signal_group("HUP", me, io, env);
        let at = Instant::now() + self.grace;
        self.kill_at = Some(at);
        io.wake_at(me, at);
    }

    fn signal_group(&mut self, signal: &str, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) {
        let Some(pid) = self.pid else { return };
        // setsid made the command its session's and group's leader: its group id is its pid.
        if let Err(e) = self.send(me, TAG_KILL, qga::kill(pid, signal, true), io, env) {
            log::warn!("VM session: cannot signal guest process group {pid}: {e}");
        }
    }

    fn progress(&self) -> Progress {
        Progress {
            done: self.done,
            ..Progress::default()
        }
    }

    fn fail(&mut self, e: Error) -> Progress {
        self.fail_with(ApiError::from(e))
    }

    fn fail_agent(&mut self, e: AgentError) -> Progress {
        self.fail_with(ApiError::from(e))
    }

    fn fail_with(&mut self, e: ApiError) -> Progress {
        self.done = true;
        Progress {
            reply: Some(Reply {
                response: e.into_response(self.format),
            }),
            done: true,
            ..Progress::default()
        }
    }

    /// The HTTP client left before the 101: whatever is under way stops (a command started
    /// meanwhile is hung up when its start is answered).
    pub(crate) fn client_gone(&mut self, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) {
        if self.upgraded {
            return;
        }
        self.abandoned = true;
        self.closing = true;
        self.hang_up(me, io, env);
    }

    pub(crate) fn shutdown(&mut self, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) {
        self.close_client(me, 1001, "supd is shutting down", io);
        self.hang_up(me, io, env);
    }

    pub(crate) fn release(&mut self, io: &mut Io<'_>) {
        if let Some((helper, token)) = self.helper.take() {
            io.deregister_fd(token, helper.socket());
        }
        self.close_port(io);
        if let Some(c) = self.client.as_mut() {
            c.release(io);
        }
    }
}

/// What the start of a terminal command prints once the port is open: an APC sequence
/// (terminals ignore it), different for every session so a stale one never counts.
fn ready_marker(me: Token) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("\x1b_supd-ready-{:x}-{:x}\x1b\\", me.0, nanos).into_bytes()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl FrameSink for VmSession {
    fn ready(&mut self) -> bool {
        self.to_port.len() < INPUT_LIMIT && !self.closing
    }

    fn message(&mut self, client: &mut WsClient, me: Token, io: &mut Io<'_>, data: Bytes) {
        if self.is_console() {
            self.to_port.extend_from_slice(&data);
            return;
        }
        match protocol::parse_client_frame(&data) {
            Ok(ClientFrame::Stdin(bytes)) => {
                if !self.eof_after {
                    self.to_port.extend_from_slice(bytes);
                }
            }
            Ok(ClientFrame::Resize { rows, cols }) => self.resize = Some((rows, cols)),
            Ok(ClientFrame::CloseStdin) => self.eof_after = true,
            Err(e) => {
                self.closing = true;
                client.close(me, protocol::CLOSE_UNSUPPORTED, &e.to_string(), io);
            }
        }
    }

    fn text(&mut self, _client: &mut WsClient, _me: Token, _io: &mut Io<'_>) {
        self.closing = true;
    }

    fn closed(&mut self, _me: Token, _io: &mut Io<'_>) {
        self.closing = true;
    }
}
