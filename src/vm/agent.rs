//! One VM's guest-agent connection, on the loop.
//!
//! The agent serves one client and answers one command at a time, so each VM has one
//! connection, opened when first needed (through the launcher's root, by a helper: see
//! [`crate::container::helper`]) and kept, and one queue of commands (bounded), sent one
//! after the other. Every (re)connect and every timeout is followed by a sync ([`qga`]) before
//! anything else is sent, so a late answer is never taken for the next command's. A silent or
//! dead agent costs its own requests a timeout and nothing else: nothing here blocks.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::{Interest, Token};
use serde_json::Value;

pub use super::qga::Command;
use super::qga::{self, Answer, Decoder, Line};
use crate::container::helper::{self, Failed, InRoot, Job};
use crate::model::{GuestInfo, GuestOs};
use crate::reactor::Io;

/// Commands waiting for one VM's agent, beyond which a new one is refused (503).
pub const MAX_QUEUE: usize = 64;
/// How long a sync may take before the agent counts as not connected (and is asked again).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the helper may take to connect to the agent's socket in the launcher.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before connecting again after a connection failed or closed, doubled after each
/// failure up to `RETRY_MAX` (a launcher without the socket is not asked twice a second).
const RETRY: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Bytes an agent may send while nothing is asked of it before its connection is dropped.
const MAX_UNSOLICITED: usize = 64 * 1024;
/// The line bound while no `guest-exec-status` (whose output makes answers long) is asked.
const SHORT_LINE: usize = 64 * 1024;
/// A connection that lasted this long resets the reconnect backoff when it ends.
const STABLE: Duration = Duration::from_secs(30);
/// Why a connection that was never tried is down.
const NEVER_TRIED: &str = "not connected yet";
/// How often what the guest reports (OS, addresses) is asked again while connected.
const REFRESH: Duration = Duration::from_secs(30);
/// Largest answer line kept: room for an exec's output cap in base64, and then some.
pub fn max_line(output_cap: usize) -> usize {
    output_cap.div_ceil(3) * 4 * 2 + 64 * 1024
}

/// A command from an operation (`owner`), told apart by `tag` when it answers.
#[derive(Debug)]
pub struct Request {
    pub owner: Token,
    pub tag: u64,
    pub cmd: Command,
    /// How long the agent has to answer once the command is sent, and the command to be sent.
    pub timeout: Duration,
}

/// An answer for an operation.
#[derive(Debug)]
pub struct Reply {
    pub owner: Token,
    pub tag: u64,
    pub result: Result<Got, Error>,
}

/// What came back.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    Value(Value),
    /// The first bytes of an answer longer than the line bound (only `guest-exec-status`
    /// answers are long: the caller reads its status with [`qga::exec_status_from_prefix`]).
    Cut(Vec<u8>),
}

/// Why a command got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The agent could not be reached or did not sync before the command's time was up (409).
    NotConnected(String),
    /// The command was sent and no answer came in time, or the connection closed under it
    /// (504).
    Timeout {
        command: &'static str,
        after: Duration,
    },
    /// The agent answered with an error (its class and description).
    Guest { class: String, desc: String },
    /// Too many commands wait for this agent (503).
    Busy,
    /// The launcher stopped or changed (409).
    Gone,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotConnected(why) => write!(f, "the VM's guest agent is not connected: {why}"),
            Error::Timeout { command, after } => write!(
                f,
                "the VM's guest agent did not answer {command} within {} ms",
                after.as_millis()
            ),
            Error::Guest { class, desc } => write!(f, "the guest agent refused: {desc} ({class})"),
            Error::Busy => write!(
                f,
                "too many commands wait for the VM's guest agent (at most {MAX_QUEUE})"
            ),
            Error::Gone => f.write_str("the VM's launcher stopped"),
        }
    }
}

impl std::error::Error for Error {}

enum Link {
    /// Not connected: why, and when to try again.
    Down {
        why: String,
        retry_at: Instant,
    },
    /// A helper connects to the socket in the launcher.
    Opening {
        helper: InRoot,
        token: Token,
    },
    /// Connected; the sync `id` is outstanding.
    Syncing {
        stream: UnixStream,
        token: Token,
        id: u32,
        deadline: Instant,
    },
    Ready {
        stream: UnixStream,
        token: Token,
    },
}

struct Queued {
    request: Request,
    /// Unsent at this time: the request fails.
    wait_until: Instant,
}

/// The agent of one VM.
pub struct Agent {
    /// Routes the connection's events and timers here (`Target::Agent`, `Timer::Agent`).
    key: Token,
    pid: i32,
    container_id: String,
    path: CString,
    link: Link,
    queue: VecDeque<Queued>,
    inflight: Option<(Request, Instant)>,
    decoder: Decoder,
    out: Vec<u8>,
    /// Answers not handed out yet.
    done: Vec<Reply>,
    next_sync: u32,
    /// What the guest reported, and when to ask again.
    pub info: GuestInfo,
    /// The agent's version, from `guest-info` after each sync.
    pub version: Option<(u32, u32)>,
    refresh_at: Option<Instant>,
    /// The pause before the next connection attempt.
    backoff: Duration,
    /// The helper of the last connection attempt.
    last_helper: Option<nix::unistd::Pid>,
    /// Bytes received while nothing was asked (reset when a command is sent).
    unsolicited: usize,
    /// When the current connection synced.
    synced_at: Option<Instant>,
    /// The line bound while a `guest-exec-status` is asked.
    long_line: usize,
    /// Counts changes to `info` (state answers are cached by it).
    pub changes: u64,
}

impl Agent {
    /// The agent at `path` in the root of launcher process `pid` (container `container_id`).
    /// Nothing is opened until a command needs it, or [`Agent::watch`] asks.
    pub fn new(key: Token, pid: i32, container_id: &str, path: &str, output_cap: usize) -> Agent {
        // The label contract keeps NUL out of paths; a relative form for openat2 in the root.
        let path = CString::new(path.trim_start_matches('/')).unwrap_or_default();
        Agent {
            key,
            pid,
            container_id: container_id.to_string(),
            path,
            link: Link::Down {
                why: NEVER_TRIED.into(),
                retry_at: Instant::now(),
            },
            queue: VecDeque::new(),
            inflight: None,
            decoder: Decoder::new(SHORT_LINE),
            out: Vec::new(),
            done: Vec::new(),
            next_sync: seed(),
            info: GuestInfo::default(),
            version: None,
            refresh_at: None,
            backoff: RETRY,
            last_helper: None,
            unsolicited: 0,
            synced_at: None,
            long_line: max_line(output_cap),
            changes: 0,
        }
    }

    pub fn connected(&self) -> bool {
        matches!(self.link, Link::Ready { .. })
    }

    /// Queue a command; it is sent when the agent is connected and free.
    pub fn submit(&mut self, request: Request, io: &mut Io<'_>) -> Result<(), Error> {
        // The agent's own questions (at most three) do not take operations' places.
        let waiting = self.queue.iter().filter(|q| q.request.owner != self.key);
        if waiting.count() >= MAX_QUEUE {
            return Err(Error::Busy);
        }
        let wait_until = Instant::now() + request.timeout.max(SYNC_TIMEOUT);
        // A request tries to connect at once, whatever the watch's backoff says.
        if let Link::Down { retry_at, .. } = &mut self.link {
            *retry_at = Instant::now();
        }
        self.queue.push_back(Queued {
            request,
            wait_until,
        });
        self.step(io);
        Ok(())
    }

    /// Forget the commands of `owner` (it went away): queued ones are dropped; one in flight
    /// still runs to its answer, which then goes nowhere.
    pub fn forget(&mut self, owner: Token) {
        self.queue.retain(|q| q.request.owner != owner);
    }

    /// Keep the connection up even with nothing to send (for what the state shows).
    pub fn watch(&mut self, io: &mut Io<'_>) {
        if self.refresh_at.is_none() {
            self.refresh_at = Some(Instant::now());
        }
        self.step(io);
    }

    /// The launcher stopped or the agent is dropped: every request fails.
    pub fn close(&mut self, io: &mut Io<'_>) -> Vec<Reply> {
        let mut replies = std::mem::take(&mut self.done);
        self.drop_link(io, "the launcher stopped");
        let inflight = self.inflight.take().map(|(r, _)| r);
        let queued = self.queue.drain(..).map(|q| q.request);
        // The agent's own questions answer nobody.
        for r in inflight.into_iter().chain(queued) {
            if r.owner != self.key {
                replies.push(fail(r, Error::Gone));
            }
        }
        replies
    }

    /// An event on the agent's descriptors, or its timer: make progress, return the answers.
    pub fn on_event(&mut self, io: &mut Io<'_>) -> Vec<Reply> {
        self.step(io);
        std::mem::take(&mut self.done)
    }

    /// Everything the agent does, until nothing more can be done now. Answers collect in
    /// `done`, handed out by the next `on_event` (a timer is set for them at once).
    fn step(&mut self, io: &mut Io<'_>) {
        let mut replies = std::mem::take(&mut self.done);
        let now = Instant::now();
        for _ in 0..8 {
            let before = self.phase();
            let wanted = self.wanted();
            match &mut self.link {
                Link::Down { retry_at, .. } => {
                    if wanted && now >= *retry_at {
                        self.open(io);
                    }
                }
                Link::Opening { helper, token } => {
                    if let Some(result) = helper.progress(CONNECT_TIMEOUT) {
                        let token = *token;
                        io.deregister_fd(token, helper.socket());
                        match result {
                            Ok(fds) => self.connected_socket(fds, io),
                            Err(e) => self.down(io, &describe(&e)),
                        }
                    }
                }
                Link::Syncing { .. } | Link::Ready { .. } => self.exchange(io, &mut replies),
            }
            self.expire(now, &mut replies);
            self.pump();
            if let Err(why) = self.write_out() {
                self.lost(io, &why, &mut replies);
            }
            if self.phase() == before {
                break;
            }
        }
        self.done = replies;
        self.schedule(io);
    }

    fn phase(&self) -> (u8, bool, usize, usize) {
        let p = match self.link {
            Link::Down { .. } => 0,
            Link::Opening { .. } => 1,
            Link::Syncing { .. } => 2,
            Link::Ready { .. } => 3,
        };
        (p, self.inflight.is_some(), self.queue.len(), self.out.len())
    }

    /// Someone waits for the agent, or the state wants to know about it.
    fn wanted(&self) -> bool {
        !self.queue.is_empty() || self.refresh_at.is_some()
    }

    fn open(&mut self, io: &mut Io<'_>) {
        // A helper killed while asleep in the launcher's file system (a FUSE mount that does
        // not answer) is still there: another would only join it.
        if self.last_helper.is_some_and(helper::straggling) {
            self.down(
                io,
                "the last attempt is still stuck in the launcher's file system",
            );
            return;
        }
        let job = Job::ConnectUnix(self.path.clone());
        match InRoot::start(self.pid, &self.container_id, job, CONNECT_TIMEOUT) {
            Ok(helper) => match io.register_agent(self.key, helper.socket()) {
                Ok(token) => {
                    self.last_helper = helper.pid();
                    self.link = Link::Opening { helper, token };
                }
                Err(e) => self.down(io, &format!("cannot follow the connection: {e}")),
            },
            Err(e) => self.down(io, &e.to_string()),
        }
    }

    fn connected_socket(&mut self, fds: Vec<OwnedFd>, io: &mut Io<'_>) {
        let Some(fd) = fds.into_iter().next() else {
            self.down(io, "the helper sent no socket");
            return;
        };
        let std = std::os::unix::net::UnixStream::from(fd);
        if let Err(e) = std.set_nonblocking(true) {
            self.down(io, &format!("cannot use the socket: {e}"));
            return;
        }
        let mut stream = UnixStream::from_std(std);
        match io.register_agent_source(
            self.key,
            &mut stream,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            Ok(token) => {
                self.link = Link::Ready { stream, token };
                self.resync();
            }
            Err(e) => self.down(io, &format!("cannot follow the connection: {e}")),
        }
    }

    /// Sends a fresh sync; until it is answered nothing else is sent.
    fn resync(&mut self) {
        let link = std::mem::replace(
            &mut self.link,
            Link::Down {
                why: String::new(),
                retry_at: Instant::now(),
            },
        );
        let (stream, token) = match link {
            Link::Syncing { stream, token, .. } | Link::Ready { stream, token } => (stream, token),
            other => {
                self.link = other;
                return;
            }
        };
        self.next_sync = self.next_sync.wrapping_add(1);
        let id = self.next_sync;
        // Whatever half-written command is still queued would only confuse the agent.
        self.out.clear();
        self.out.extend_from_slice(&Command::Sync(id).encode(None));
        self.decoder.expect_delimiter();
        self.link = Link::Syncing {
            stream,
            token,
            id,
            deadline: Instant::now() + SYNC_TIMEOUT,
        };
        self.set_connected(false);
    }

    fn down(&mut self, io: &mut Io<'_>, why: &str) {
        log::debug!("guest agent of {}: {why}", short(&self.container_id));
        self.drop_link(io, why);
    }

    fn drop_link(&mut self, io: &mut Io<'_>, why: &str) {
        // Only a connection that lasted resets the backoff: one that syncs and hangs up at
        // once is not asked again twice a second.
        if self.synced_at.take().is_some_and(|t| t.elapsed() >= STABLE) {
            self.backoff = RETRY;
        }
        let link = std::mem::replace(
            &mut self.link,
            Link::Down {
                why: why.to_string(),
                retry_at: Instant::now() + self.backoff,
            },
        );
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
        match link {
            Link::Opening { helper, token } => io.deregister_fd(token, helper.socket()),
            Link::Syncing {
                mut stream, token, ..
            }
            | Link::Ready { mut stream, token } => io.deregister(token, &mut stream),
            Link::Down { .. } => {}
        }
        self.out.clear();
        self.set_connected(false);
    }

    /// Reads and writes on the connection; hands answers out.
    fn exchange(&mut self, io: &mut Io<'_>, replies: &mut Vec<Reply>) {
        if let Err(why) = self.write_out() {
            self.lost(io, &why, replies);
            return;
        }
        let mut buf = [0u8; 16 * 1024];
        let mut lines = Vec::new();
        let mut closed = None;
        let stream = match &mut self.link {
            Link::Syncing { stream, .. } | Link::Ready { stream, .. } => stream,
            _ => return,
        };
        // Bounded per wake-up: a flooding guest cannot hold the loop (and what it left unread
        // is read on the next turn: the poller reports an edge only once).
        let mut budget = 16;
        loop {
            if budget == 0 {
                io.wake_agent_at(self.key, Instant::now());
                break;
            }
            budget -= 1;
            match stream.read(&mut buf) {
                Ok(0) => {
                    closed = Some("the agent's socket closed".to_string());
                    break;
                }
                Ok(n) => lines.extend(self.decoder.push(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    closed = Some(format!("reading from the agent: {e}"));
                    break;
                }
            }
        }
        for line in lines {
            self.on_line(line, replies);
        }
        if closed.is_none() && self.unsolicited > MAX_UNSOLICITED {
            // Talking without being asked: not an agent worth a connection; the backoff
            // grows with each such one.
            closed = Some(format!(
                "it sent more than {MAX_UNSOLICITED} bytes nobody asked for"
            ));
        }
        if let Some(why) = closed {
            self.lost(io, &why, replies);
        }
    }

    fn on_line(&mut self, line: Line, replies: &mut Vec<Reply>) {
        if let Link::Syncing { id, .. } = &self.link {
            let id = *id;
            if let Line::Whole(l) = &line
                && let Some(Answer::Return(v)) = qga::parse_answer(l)
                && qga::sync_id(&v) == Some(id)
            {
                if let Link::Syncing { stream, token, .. } = std::mem::replace(
                    &mut self.link,
                    Link::Down {
                        why: String::new(),
                        retry_at: Instant::now(),
                    },
                ) {
                    self.link = Link::Ready { stream, token };
                }
                self.set_connected(true);
                self.synced_at = Some(Instant::now());
                // What the guest is may have changed (a restart of the guest or its agent).
                self.refresh_at = Some(Instant::now());
                // First, before any command: how to encode them depends on the version.
                self.queue.retain(|q| q.request.owner != self.key);
                self.queue_own(Command::Info);
                if let Some(q) = self.queue.pop_back() {
                    self.queue.push_front(q);
                }
            }
            // Anything else while syncing is stale.
            return;
        }
        let Some((request, _)) = self.inflight.take() else {
            self.unsolicited += match &line {
                Line::Whole(l) | Line::Cut(l) => l.len() + 1,
            };
            return;
        };
        let result = match line {
            Line::Cut(prefix) => Ok(Got::Cut(prefix)),
            Line::Whole(l) => match qga::parse_answer(&l) {
                Some(Answer::Return(v)) => Ok(Got::Value(v)),
                Some(Answer::Error { class, desc }) => Err(Error::Guest { class, desc }),
                None => {
                    // Not an answer: the agent is not speaking its protocol; start over.
                    self.inflight = Some((request, Instant::now()));
                    return;
                }
            },
        };
        self.answered(request, result, replies);
    }

    /// An answer for `request`: operations get it; the agent's own are read here.
    fn answered(&mut self, request: Request, result: Result<Got, Error>, replies: &mut Vec<Reply>) {
        if request.owner != self.key {
            replies.push(Reply {
                owner: request.owner,
                tag: request.tag,
                result,
            });
            return;
        }
        let Ok(Got::Value(v)) = result else {
            return;
        };
        let before = self.info.clone();
        match request.cmd {
            Command::Info => {
                self.version = qga::version(&v);
                self.queue_own(Command::OsInfo);
            }
            Command::OsInfo => {
                self.info.os = Some(guest_os(&v));
                self.queue_own(Command::Interfaces);
            }
            Command::Interfaces => self.info.ips = qga::guest_ips(&v),
            _ => {}
        }
        if self.info != before {
            self.changes += 1;
        }
    }

    fn queue_own(&mut self, cmd: Command) {
        if self
            .queue
            .iter()
            .any(|q| q.request.owner == self.key && q.request.cmd == cmd)
        {
            return;
        }
        self.queue.push_back(Queued {
            request: Request {
                owner: self.key,
                tag: 0,
                cmd,
                timeout: SYNC_TIMEOUT,
            },
            wait_until: Instant::now() + SYNC_TIMEOUT * 2,
        });
    }

    /// The connection closed or failed: the command in flight gets no answer (504); the
    /// queued ones wait for the reconnect (up to their own time).
    fn lost(&mut self, io: &mut Io<'_>, why: &str, replies: &mut Vec<Reply>) {
        if let Some((r, _)) = self.inflight.take() {
            let command = r.cmd.name();
            let after = r.timeout;
            self.answered(r, Err(Error::Timeout { command, after }), replies);
        }
        self.down(io, why);
    }

    /// Deadlines: the command in flight, the sync, the queue.
    fn expire(&mut self, now: Instant, replies: &mut Vec<Reply>) {
        if let Some((r, deadline)) = &self.inflight
            && now >= *deadline
        {
            let command = r.cmd.name();
            let after = r.timeout;
            log::warn!(
                "guest agent of {}: no answer to {command} within {} ms; resyncing",
                short(&self.container_id),
                after.as_millis()
            );
            if let Some((r, _)) = self.inflight.take() {
                // `guest-shutdown` is answered only when it fails: silence is success.
                let result = if r.cmd == Command::Shutdown {
                    Ok(Got::Value(Value::Null))
                } else {
                    Err(Error::Timeout { command, after })
                };
                self.answered(r, result, replies);
            }
            self.resync();
        }
        if let Link::Syncing { deadline, .. } = &self.link
            && now >= *deadline
        {
            // Not answering (booting, or its agent is not running): ask again.
            self.resync();
        }
        if let Some(at) = self.refresh_at
            && now >= at
            && self.connected()
        {
            self.refresh_at = Some(now + REFRESH);
            self.queue_own(Command::Interfaces);
        }
        let why = match &self.link {
            Link::Down { why, .. } => why.clone(),
            Link::Opening { .. } => "connecting".into(),
            Link::Syncing { .. } => "it does not answer (not started in the guest?)".into(),
            Link::Ready { .. } => String::new(),
        };
        let ready = self.connected();
        // A connection attempt failed (no socket, refused): waiting longer helps nobody; the
        // next request tries again.
        let failed = matches!(&self.link, Link::Down { why, .. } if why != NEVER_TRIED);
        let mut i = 0;
        while i < self.queue.len() {
            if (failed || now >= self.queue[i].wait_until)
                && let Some(q) = self.queue.remove(i)
            {
                let err = if ready {
                    Error::Timeout {
                        command: q.request.cmd.name(),
                        after: q.request.timeout,
                    }
                } else {
                    Error::NotConnected(why.clone())
                };
                self.answered(q.request, Err(err), replies);
                continue;
            }
            i += 1;
        }
    }

    /// Sends the next command when the agent is free.
    fn pump(&mut self) {
        if !self.connected() || self.inflight.is_some() {
            return;
        }
        let Some(q) = self.queue.pop_front() else {
            return;
        };
        self.out
            .extend_from_slice(&q.request.cmd.encode(self.version));
        self.unsolicited = 0;
        // Only a status answer carries output: only it may be long.
        let bound = if matches!(q.request.cmd, Command::ExecStatus(_)) {
            self.long_line
        } else {
            SHORT_LINE
        };
        self.decoder.set_max(bound);
        let deadline = Instant::now() + q.request.timeout;
        self.inflight = Some((q.request, deadline));
    }

    fn write_out(&mut self) -> Result<(), String> {
        let stream = match &mut self.link {
            Link::Syncing { stream, .. } | Link::Ready { stream, .. } => stream,
            _ => return Ok(()),
        };
        while !self.out.is_empty() {
            match stream.write(&self.out) {
                Ok(0) => return Err("the agent's socket closed".into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("writing to the agent: {e}")),
            }
        }
        Ok(())
    }

    /// Wakes the agent at its next deadline.
    fn schedule(&mut self, io: &mut Io<'_>) {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        match &self.link {
            Link::Down { retry_at, .. } if self.wanted() => at(*retry_at),
            Link::Opening { helper, .. } => at(helper.deadline()),
            Link::Syncing { deadline, .. } => at(*deadline),
            _ => {}
        }
        if let Some((_, d)) = &self.inflight {
            at(*d);
        }
        if let Some(q) = self.queue.iter().map(|q| q.wait_until).min() {
            at(q);
        }
        if let Some(r) = self.refresh_at
            && self.connected()
        {
            at(r);
        }
        if !self.done.is_empty() {
            at(Instant::now());
        }
        if let Some(when) = next {
            io.wake_agent_at(self.key, when);
        }
    }

    fn set_connected(&mut self, connected: bool) {
        if self.info.connected != connected {
            self.info.connected = connected;
            self.changes += 1;
        }
    }
}

fn fail(request: Request, e: Error) -> Reply {
    Reply {
        owner: request.owner,
        tag: request.tag,
        result: Err(e),
    }
}

fn describe(e: &Failed) -> String {
    match e {
        Failed::Job(errno) => format!("cannot connect to its socket: {}", errno.desc()),
        Failed::Timeout(after) => format!(
            "its socket could not be reached within {} ms",
            after.as_millis()
        ),
        Failed::Other(e) => e.to_string(),
    }
}

fn guest_os(v: &Value) -> GuestOs {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| s.chars().take(256).collect::<String>())
    };
    GuestOs {
        id: s("id"),
        name: s("name"),
        pretty_name: s("pretty-name"),
        version: s("version"),
        version_id: s("version-id"),
        kernel_release: s("kernel-release"),
        machine: s("machine"),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// A starting point for sync ids that differs between supd runs, so an answer meant for a
/// previous supd is not taken for this one's.
fn seed() -> u32 {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.subsec_nanos() ^ std::process::id();
    }
    u32::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    //! The agent's state machine against a scripted agent on the other end of a socket pair:
    //! what a real agent does in the protocol's corners (stale answers, silence, a restart),
    //! which a healthy VM rarely shows. tests/vm.rs runs the real one.

    use std::io::{BufRead, BufReader};
    use std::sync::mpsc;

    use super::*;
    use crate::config::Config;
    use crate::reactor::Reactor;

    /// What the scripted agent does with one command line it read.
    type Script = Box<dyn FnMut(&Value, &mut dyn std::io::Write) + Send>;

    /// A scripted agent: reads command lines (a 0xFF before a sync is skipped, as the real
    /// agent resets its parser on it) and lets `script` answer; reports each command's name.
    fn fake_agent(
        stream: std::os::unix::net::UnixStream,
        mut script: Script,
    ) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = stream.try_clone().unwrap();
            let mut lines = BufReader::new(stream);
            let mut line = Vec::new();
            while lines.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                let start = line.iter().position(|&b| b != 0xFF).unwrap_or(line.len());
                if let Ok(v) = serde_json::from_slice::<Value>(&line[start..]) {
                    let _ = tx.send(v["execute"].as_str().unwrap_or("").to_string());
                    script(&v, &mut out);
                }
                line.clear();
            }
        });
        rx
    }

    /// Answers a sync with the delimiter and its id, the agent's own questions briefly.
    fn routine(v: &Value, out: &mut dyn std::io::Write) -> bool {
        match v["execute"].as_str() {
            Some("guest-sync-delimited") => {
                let id = &v["arguments"]["id"];
                let mut answer = vec![0xFF];
                answer.extend_from_slice(format!("{{\"return\": {id}}}\n").as_bytes());
                let _ = out.write_all(&answer);
            }
            Some("guest-info") => {
                let _ = out.write_all(b"{\"return\": {\"version\": \"7.2.0\"}}\n");
            }
            Some("guest-get-osinfo") => {
                let _ = out.write_all(b"{\"return\": {\"id\": \"fake\"}}\n");
            }
            Some("guest-network-get-interfaces") => {
                let _ = out.write_all(b"{\"return\": []}\n");
            }
            _ => return false,
        }
        true
    }

    struct Rig {
        reactor: Reactor,
        cfg: Config,
        agent: Agent,
    }

    impl Rig {
        fn new(script: Script) -> (Rig, mpsc::Receiver<String>) {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            let seen = fake_agent(theirs, script);
            let mut reactor = Reactor::new(10).unwrap();
            let cfg = Config::default();
            let key = reactor.token();
            let mut agent = Agent::new(key, 1, "fake", "/run/qga.sock", 1 << 16);
            let mut io = Io::new(&mut reactor, &cfg);
            agent.connected_socket(vec![OwnedFd::from(ours)], &mut io);
            (
                Rig {
                    reactor,
                    cfg,
                    agent,
                },
                seen,
            )
        }

        /// Turns the loop until a reply comes (or `limit` passes): the replies.
        fn run_for_reply(&mut self, limit: Duration) -> Vec<Reply> {
            let until = Instant::now() + limit;
            let mut events = mio::Events::with_capacity(8);
            loop {
                let _ = self
                    .reactor
                    .poll
                    .poll(&mut events, Some(Duration::from_millis(5)));
                while self.reactor.timers.pop_due(Instant::now()).is_some() {}
                let mut io = Io::new(&mut self.reactor, &self.cfg);
                let replies = self.agent.on_event(&mut io);
                if !replies.is_empty() || Instant::now() >= until {
                    return replies;
                }
            }
        }

        fn submit(&mut self, tag: u64, cmd: Command, timeout: Duration) -> Result<(), Error> {
            let mut io = Io::new(&mut self.reactor, &self.cfg);
            self.agent.submit(
                Request {
                    owner: Token(1),
                    tag,
                    cmd,
                    timeout,
                },
                &mut io,
            )
        }
    }

    #[test]
    fn answers_before_the_sync_are_stale_and_never_delivered() {
        let mut first = true;
        let (mut rig, _seen) = Rig::new(Box::new(move |v, out| {
            if v["execute"] == "guest-sync-delimited" && first {
                first = false;
                // A late answer to some earlier client's command, then the sync's.
                let _ = out.write_all(b"{\"return\": {\"pid\": 666}}\n");
            }
            if !routine(v, out) && v["execute"] == "guest-exec" {
                let _ = out.write_all(b"{\"return\": {\"pid\": 7}}\n");
            }
        }));
        rig.submit(1, Command::Run(vec!["true".into()]), Duration::from_secs(5))
            .unwrap();
        let replies = rig.run_for_reply(Duration::from_secs(5));
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].tag, 1);
        match &replies[0].result {
            Ok(Got::Value(v)) => assert_eq!(qga::exec_pid(v), Some(7)),
            other => panic!("{other:?}"),
        }
        assert!(rig.agent.connected());
        assert_eq!(rig.agent.version, Some((7, 2)));
    }

    #[test]
    fn a_silent_agent_times_out_then_a_resync_drops_its_late_answer() {
        let mut execs = 0;
        let (mut rig, seen) = Rig::new(Box::new(move |v, out| {
            if routine(v, out) {
                return;
            }
            execs += 1;
            if execs == 1 {
                // Silent now; the answer comes late, after supd's next sync was sent (the
                // agent answers in order: the late one first).
                std::thread::sleep(Duration::from_millis(400));
                let _ = out.write_all(b"{\"return\": {\"pid\": 1001}}\n");
            } else {
                let _ = out.write_all(b"{\"return\": {\"pid\": 2002}}\n");
            }
        }));
        rig.submit(
            1,
            Command::Run(vec!["a".into()]),
            Duration::from_millis(200),
        )
        .unwrap();
        let replies = rig.run_for_reply(Duration::from_secs(5));
        assert!(
            matches!(replies[0].result, Err(Error::Timeout { .. })),
            "{replies:?}"
        );
        rig.submit(2, Command::Run(vec!["b".into()]), Duration::from_secs(5))
            .unwrap();
        let replies = rig.run_for_reply(Duration::from_secs(5));
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].tag, 2);
        match &replies[0].result {
            Ok(Got::Value(v)) => assert_eq!(qga::exec_pid(v), Some(2002), "stale answer"),
            other => panic!("{other:?}"),
        }
        // A second sync went out after the timeout.
        let syncs = seen
            .try_iter()
            .filter(|c| c == "guest-sync-delimited")
            .count();
        assert!(syncs >= 2, "{syncs} syncs");
    }

    #[test]
    fn the_queue_is_bounded_and_a_closed_connection_fails_the_command_in_flight() {
        let (mut rig, _seen) = Rig::new(Box::new(|v, out| {
            routine(v, out);
        }));
        // At most MAX_QUEUE wait, besides the one in flight (if the agent took one already).
        let mut accepted = 0;
        while accepted <= MAX_QUEUE + 1 {
            let cmd = Command::Run(vec!["x".into()]);
            match rig.submit(accepted as u64, cmd, Duration::from_secs(5)) {
                Ok(()) => accepted += 1,
                Err(e) => {
                    assert_eq!(e, Error::Busy);
                    break;
                }
            }
        }
        assert!(
            accepted == MAX_QUEUE || accepted == MAX_QUEUE + 1,
            "{accepted} accepted"
        );
        let mut io = Io::new(&mut rig.reactor, &rig.cfg);
        let replies = rig.agent.close(&mut io);
        // Every operation's command fails (the agent's own questions answer nobody).
        assert_eq!(replies.len(), accepted);
        assert!(replies.iter().all(|r| r.result == Err(Error::Gone)));
    }

    #[test]
    fn an_agent_that_floods_unasked_loses_its_connection() {
        let (mut rig, _seen) = Rig::new(Box::new(|v, out| {
            routine(v, out);
            if v["execute"] == "guest-network-get-interfaces" {
                // Asked nothing more, it talks on: 256 KiB of lines.
                let junk = "{\"return\": {}}\n".repeat(256 * 1024 / 15);
                let _ = out.write_all(junk.as_bytes());
            }
        }));
        // Turn the loop until the connection drops (a reconnect, not possible here, would
        // replace the reason).
        let until = Instant::now() + Duration::from_secs(5);
        let mut events = mio::Events::with_capacity(8);
        let why = loop {
            assert!(
                Instant::now() < until,
                "still connected to a flooding agent"
            );
            let _ = rig
                .reactor
                .poll
                .poll(&mut events, Some(Duration::from_millis(5)));
            while rig.reactor.timers.pop_due(Instant::now()).is_some() {}
            let mut io = Io::new(&mut rig.reactor, &rig.cfg);
            let _ = rig.agent.on_event(&mut io);
            if let Link::Down { why, .. } = &rig.agent.link {
                break why.clone();
            }
        };
        assert!(why.contains("nobody asked for"), "{why}");
    }

    #[test]
    fn only_a_connection_that_lasted_resets_the_backoff() {
        let (mut rig, _seen) = Rig::new(Box::new(|v, out| {
            routine(v, out);
        }));
        let mut io = Io::new(&mut rig.reactor, &rig.cfg);
        // Synced and gone at once, over and over: the pause grows.
        for _ in 0..4 {
            rig.agent.synced_at = Some(Instant::now());
            rig.agent.drop_link(&mut io, "hung up");
        }
        assert_eq!(rig.agent.backoff, RETRY * 16);
        // One that lasted: back to the first pause (then doubled for the next).
        rig.agent.synced_at = Some(Instant::now() - STABLE);
        rig.agent.drop_link(&mut io, "hung up");
        assert_eq!(rig.agent.backoff, RETRY * 2);
        match &rig.agent.link {
            Link::Down { retry_at, .. } => {
                assert!(*retry_at <= Instant::now() + RETRY);
            }
            _ => panic!("not down"),
        }
    }
}
