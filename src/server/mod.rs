//! The event loop: one thread, one `mio::Poll`, everything that waits registered with it.
//!
//! Tokens come from a counter and are never reused; `routes` says what each one is for.
//! Client connections speak HTTP until they are answered or upgraded; operations that outlive
//! one event (an exec, a websocket session, a restart) are kept in `ops` and own their
//! descriptors. Docker traffic goes through the same loop.

mod admission;
mod conn;
pub mod net;
pub(crate) mod timers;

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::auth::{self, Decision, Tokens};
use crate::config::Config;
use crate::docker::client::{Client as DockerClient, Purpose, Reply};
use crate::docker::mirror::{Mirror, Want};
use crate::http::request::Request;
use crate::http::response::negotiate;
use crate::http::router::{self, Route};
use crate::http::{ApiError, Format, Method, Response};
use crate::ops;
use crate::systemd;

use admission::{Admission, Verdict};
use conn::{HttpConn, Next, Phase};
use net::{Listener, Stream};
use timers::{Timer, Timers};

const SIGNAL: Token = Token(0);
const FIRST_DYNAMIC: usize = 1;
/// Graceful shutdown gives in-flight work this long, then exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);
const DOCKER_BACKOFF_MIN: Duration = Duration::from_millis(100);
const DOCKER_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Size of the loop's shared read buffer: a 1 MiB body arrives in a few reads, and the
/// largest UDP datagram fits.
pub(crate) const SCRATCH: usize = 64 * 1024;

#[derive(Debug)]
pub enum Error {
    Io(&'static str, io::Error),
    Listen(String, io::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(what, e) => write!(f, "{what}: {e}"),
            Error::Listen(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(_, e) | Error::Listen(_, e) => Some(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a token is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    Listener(usize),
    Conn,
    Docker,
    /// A descriptor of an operation: the op's token and which of its descriptors.
    Op(Token, ops::Role),
}

/// The tokens file as loaded, or why it could not be.
pub enum TokenState {
    Ready(Tokens),
    Sealed(String),
}

/// What operations may touch of the loop: the poller, the token table, the timers.
pub(crate) struct Reactor {
    pub(crate) poll: Poll,
    pub(crate) routes: HashMap<Token, Target>,
    pub(crate) next_token: usize,
    pub(crate) timers: Timers,
    /// The one read buffer of the loop: client connections read into it (see
    /// `HttpConn::fill`), operations borrow it to move output (`ops::Io::take_scratch`).
    /// Nothing keeps a large buffer of its own between wake-ups.
    pub(crate) scratch: Vec<u8>,
}

impl Reactor {
    /// The loop's read buffer, whole again if an operation that borrowed it
    /// (`ops::Io::take_scratch`) never gave it back (a panic in between).
    pub(crate) fn scratch(&mut self) -> &mut [u8] {
        if self.scratch.len() < SCRATCH {
            self.scratch.resize(SCRATCH, 0);
        }
        &mut self.scratch
    }
}

pub struct Server {
    reactor: Reactor,
    cfg: Config,
    tokens: TokenState,
    mirror: Mirror,
    state_cache: ops::state::Cache,
    docker: DockerClient,
    docker_backoff: Duration,
    docker_down: bool,
    reconnect_scheduled: bool,
    listeners: Vec<Option<Listener>>,
    conns: HashMap<Token, HttpConn>,
    /// Which of `conns` have not passed auth yet, and who may open another.
    admission: Admission,
    ops: HashMap<Token, ops::Op>,
    /// Instances with a restart in progress (at most one each).
    restarting: std::collections::HashSet<String>,
    signals: SignalFd,
    accept_paused: bool,
    /// Connections and operations being driven right now, outermost first (see `contained`).
    driving: Vec<Token>,
    /// Accepting ran out of descriptors and has not succeeded since (to warn once, not every
    /// retry).
    accept_exhausted: bool,
    draining: Option<Instant>,
    notified_ready: bool,
    watchdog: Option<Duration>,
}

impl Server {
    /// Set everything up: signals, tokens, listeners, the first Docker request.
    pub fn new(cfg: Config, inherited: Vec<Listener>) -> Result<Server> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.add(Signal::SIGHUP);
        mask.thread_block()
            .map_err(|e| Error::Io("block signals", e.into()))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| Error::Io("signalfd", e.into()))?;
        let poll = Poll::new().map_err(|e| Error::Io("epoll", e))?;
        poll.registry()
            .register(
                &mut SourceFd(&signals.as_raw_fd()),
                SIGNAL,
                Interest::READABLE,
            )
            .map_err(|e| Error::Io("register signalfd", e))?;

        let tokens = load_tokens(&cfg);
        let mut listeners = inherited;
        if listeners.is_empty() {
            for addr in &cfg.listen {
                let l = Listener::bind(addr).map_err(|e| Error::Listen(addr.to_string(), e))?;
                listeners.push(l);
            }
        }
        let docker = DockerClient::new(cfg.docker_socket.clone());
        let watchdog = systemd::watchdog_interval();
        let mut server = Server {
            reactor: Reactor {
                poll,
                routes: HashMap::new(),
                next_token: FIRST_DYNAMIC,
                timers: Timers::default(),
                scratch: vec![0; SCRATCH],
            },
            cfg,
            tokens,
            mirror: Mirror::new(),
            state_cache: ops::state::Cache::default(),
            docker,
            docker_backoff: DOCKER_BACKOFF_MIN,
            docker_down: false,
            reconnect_scheduled: false,
            listeners: Vec::new(),
            conns: HashMap::new(),
            admission: Admission::default(),
            ops: HashMap::new(),
            restarting: Default::default(),
            signals,
            accept_paused: false,
            driving: Vec::new(),
            accept_exhausted: false,
            draining: None,
            notified_ready: false,
            watchdog,
        };
        for (i, mut l) in listeners.into_iter().enumerate() {
            let t = server.token();
            server
                .reactor
                .poll
                .registry()
                .register(&mut l, t, Interest::READABLE)
                .map_err(|e| Error::Io("register listener", e))?;
            log::info!("listening on {}", l.describe());
            server.reactor.routes.insert(t, Target::Listener(i));
            server.listeners.push(Some(l));
        }
        if let Some(w) = server.watchdog {
            server.reactor.timers.after(w / 2, Timer::Watchdog);
        }
        if let Err(e) = crate::container::netns::open_home() {
            log::warn!("connect and tcp-connect will fail: {e}");
        }
        let wants = server.mirror.connect();
        server.apply_wants(wants);
        Ok(server)
    }

    fn token(&mut self) -> Token {
        let t = Token(self.reactor.next_token);
        self.reactor.next_token += 1;
        t
    }

    /// Run until a shutdown completes.
    pub fn run(&mut self) -> Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            if let Some(since) = self.draining
                && ((self.conns.is_empty() && self.ops.is_empty()) || now >= since + SHUTDOWN_GRACE)
            {
                self.finish_shutdown();
                return Ok(());
            }
            let mut timeout = self.reactor.timers.timeout(now);
            if self.draining.is_some() {
                let tick = Duration::from_millis(50);
                timeout = Some(timeout.map_or(tick, |t| t.min(tick)));
            }
            if let Err(e) = self.reactor.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Io("epoll_wait", e));
            }
            for ev in events.iter() {
                let token = ev.token();
                let (r, w, hup) = (
                    ev.is_readable(),
                    ev.is_writable(),
                    ev.is_read_closed() || ev.is_error(),
                );
                self.contained(Some(token), |s| s.dispatch(token, r, w, hup));
            }
            let now = Instant::now();
            while let Some(t) = self.reactor.timers.pop_due(now) {
                let owner = match t {
                    Timer::Conn(token) | Timer::Op(token) => Some(token),
                    _ => None,
                };
                self.contained(owner, |s| s.on_timer(t, now));
            }
        }
    }

    /// Run one handler so that a bug in it costs only what it was handling.
    ///
    /// A panic is a bug, but one client's request must not end every other client's session
    /// (and with them the processes supd started in containers). So a panic is caught here,
    /// the connection or operation that `owner` names is dropped (its descriptors closed, its
    /// processes killed by their `Drop`), a Docker connection is reset into a full resync, and
    /// the loop goes on. The forked child of a spawn never unwinds into here: it aborts
    /// (`sys::process`).
    fn contained(&mut self, owner: Option<Token>, f: impl FnOnce(&mut Server)) {
        let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| f(self))) else {
            return;
        };
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("?");
        log::error!("bug: a handler panicked ({what}); dropping what it was handling");
        // What was being driven when it panicked (the unwinding skipped the pops), innermost
        // last: a connection accepted and read at once, an op driven by a connection's request.
        let mut suspects = std::mem::take(&mut self.driving);
        suspects.extend(owner);
        suspects.dedup();
        for token in suspects {
            // Dropping may run code of the same broken thing; contain that too, no recursion.
            let cleanup = panic::catch_unwind(AssertUnwindSafe(|| self.quarantine(token)));
            if cleanup.is_err() {
                log::error!("bug: cleaning up after a panic panicked too");
            }
        }
    }

    /// Forget the connection, operation or Docker request behind `token` after a panic.
    fn quarantine(&mut self, token: Token) {
        let op = match self.reactor.routes.get(&token).copied() {
            Some(Target::Conn) => {
                let c = self.conns.remove(&token);
                self.admission.remove(token);
                self.reactor.routes.remove(&token);
                match c.map(|c| c.phase) {
                    Some(Phase::Waiting(op)) => Some(op),
                    _ => None,
                }
            }
            Some(Target::Op(op, _)) => Some(op),
            Some(Target::Docker) => {
                self.docker_failed(Purpose::Events, "internal error; resynchronising");
                None
            }
            Some(Target::Listener(_)) | None => self.ops.contains_key(&token).then_some(token),
        };
        let Some(op) = op else {
            return;
        };
        let waiting: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Waiting(op))
            .map(|(t, _)| *t)
            .collect();
        for t in waiting {
            self.conns.remove(&t);
            self.admission.remove(t);
            self.reactor.routes.remove(&t);
        }
        if let Some(mut o) = self.ops.remove(&op) {
            if let Some(key) = o.restart_key() {
                self.restarting.remove(key);
            }
            let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
            o.release(&mut io);
        }
        self.reactor
            .routes
            .retain(|_, t| !matches!(t, Target::Op(o, _) if *o == op));
    }

    fn dispatch(&mut self, token: Token, readable: bool, writable: bool, hup: bool) {
        if token == SIGNAL {
            self.on_signal();
            return;
        }
        match self.reactor.routes.get(&token).copied() {
            Some(Target::Listener(i)) => self.accept(i),
            Some(Target::Conn) => self.drive_conn(token),
            Some(Target::Docker) => self.on_docker(token),
            Some(Target::Op(op, role)) => {
                let ev = ops::Ready {
                    role,
                    readable,
                    writable,
                    hup,
                };
                self.drive_op(op, Some(ev));
            }
            None => {}
        }
    }

    // ---- signals and shutdown -------------------------------------------------------------

    fn on_signal(&mut self) {
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGHUP) => self.reload_tokens(),
                    Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => self.begin_shutdown(),
                    _ => {}
                },
                Ok(None) => return,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log::error!("reading signals: {e}");
                    return;
                }
            }
        }
    }

    fn reload_tokens(&mut self) {
        self.tokens = load_tokens(&self.cfg);
        match &self.tokens {
            TokenState::Ready(t) => log::info!("SIGHUP: tokens reloaded ({} entries)", t.len()),
            TokenState::Sealed(why) => log::warn!("SIGHUP: tokens not usable, sealed: {why}"),
        }
    }

    fn begin_shutdown(&mut self) {
        if self.draining.is_some() {
            return;
        }
        log::info!("shutting down: no new connections, finishing in-flight work");
        let _ = systemd::notify("STOPPING=1");
        self.draining = Some(Instant::now());
        for slot in self.listeners.iter_mut() {
            if let Some(mut l) = slot.take() {
                let _ = self.reactor.poll.registry().deregister(&mut l);
            }
        }
        // Idle keep-alive connections have nothing in flight: close them now.
        let idle: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.phase == Phase::Open && !c.has_partial_request() && c.pending_output() == 0
            })
            .map(|(t, _)| *t)
            .collect();
        for t in idle {
            self.close_conn(t);
        }
        let op_tokens: Vec<Token> = self.ops.keys().copied().collect();
        for t in op_tokens {
            if let Some(op) = self.ops.get_mut(&t) {
                let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
                op.shutdown(t, &mut io);
            }
            self.drive_op(t, None);
        }
    }

    fn finish_shutdown(&mut self) {
        for (_, mut op) in self.ops.drain() {
            op.abandon();
        }
        let _ = self.docker.close_all(self.reactor.poll.registry());
        log::info!("stopped");
    }

    // ---- timers ---------------------------------------------------------------------------

    fn on_timer(&mut self, t: Timer, now: Instant) {
        match t {
            Timer::Conn(token) => self.check_conn_deadlines(token, now),
            Timer::Op(token) => self.drive_op(token, None),
            Timer::DockerReconnect => {
                self.reconnect_scheduled = false;
                if self.docker_down && self.draining.is_none() {
                    let wants = self.mirror.connect();
                    self.apply_wants(wants);
                }
            }
            Timer::Watchdog => {
                let _ = systemd::notify("WATCHDOG=1");
                if let Some(w) = self.watchdog {
                    self.reactor.timers.after(w / 2, Timer::Watchdog);
                }
            }
            Timer::ResumeAccept => {
                self.accept_paused = false;
                for i in 0..self.listeners.len() {
                    self.accept(i);
                }
            }
        }
    }

    fn check_conn_deadlines(&mut self, token: Token, now: Instant) {
        let limits = &self.cfg.limits;
        let Some(c) = self.conns.get(&token) else {
            return;
        };
        // Until a request passes auth a connection lives only briefly, whatever it does.
        if !c.authenticated && !matches!(c.phase, Phase::Waiting(_)) {
            let until = c.opened + limits.preauth_timeout;
            if now >= until {
                log::debug!("{}: no authenticated request in time, closing", c.peer);
                if c.phase == Phase::Open && c.has_partial_request() {
                    let err = ApiError::new(408, "request not received in time");
                    self.fail_conn(token, err);
                    // A client that does not read its 408 is not waited for.
                    if self
                        .conns
                        .get(&token)
                        .is_some_and(|c| c.pending_output() > 0)
                    {
                        self.close_conn(token);
                    }
                } else {
                    self.close_conn(token);
                }
                return;
            }
            self.reactor.timers.at(until, Timer::Conn(token));
        }
        let deadline = match c.phase {
            // Complete pipelined requests wait for the client to read its answers: not a slow
            // head, but a client that stopped reading is dropped after the idle timeout.
            Phase::Open if c.output_blocked() => Some((c.idle_since + limits.idle_timeout, false)),
            Phase::Open if c.has_partial_request() => {
                c.request_started.map(|s| (s + limits.head_timeout, true))
            }
            Phase::Open if c.pending_output() == 0 => {
                Some((c.idle_since + limits.idle_timeout, false))
            }
            _ => None,
        };
        match deadline {
            Some((when, _)) if when > now => self.reactor.timers.at(when, Timer::Conn(token)),
            Some((_, true)) => {
                let err = ApiError::new(408, "request not received in time");
                self.fail_conn(token, err);
            }
            Some((_, false)) => self.close_conn(token),
            // Busy (waiting for an operation or writing): look again later.
            None => self
                .reactor
                .timers
                .after(limits.idle_timeout, Timer::Conn(token)),
        }
    }

    // ---- connections ----------------------------------------------------------------------

    fn accept(&mut self, i: usize) {
        if self.accept_paused {
            return;
        }
        loop {
            let Some(l) = self.listeners.get(i).and_then(|l| l.as_ref()) else {
                return;
            };
            match l.accept() {
                Ok((stream, peer, ip)) => {
                    if self.accept_exhausted {
                        self.accept_exhausted = false;
                        log::info!("accept: descriptors available again, accepting");
                    }
                    self.add_conn(stream, peer, ip)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE)
                            | Some(libc::ENFILE)
                            | Some(libc::ENOBUFS)
                            | Some(libc::ENOMEM)
                    ) =>
                {
                    // Out of descriptors: stop accepting for a moment instead of spinning on a
                    // listener that stays readable.
                    if self.accept_exhausted {
                        log::debug!("accept: {e}; still pausing new connections");
                    } else {
                        log::warn!("accept: {e}; pausing new connections, retrying every 100 ms");
                        self.accept_exhausted = true;
                    }
                    self.accept_paused = true;
                    self.reactor
                        .timers
                        .after(Duration::from_millis(100), Timer::ResumeAccept);
                    return;
                }
                Err(e) => {
                    log::warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, stream: Stream, peer: String, ip: Option<std::net::IpAddr>) {
        let open = self.conns.len() + self.ops.len();
        let mut conn = HttpConn::new(stream, peer, ip, &self.cfg.limits);
        match self.admission.admit(ip, open, &self.cfg.limits) {
            Verdict::Admit => {}
            Verdict::Evict(oldest) => {
                if let Some(c) = self.conns.get_mut(&oldest) {
                    log::debug!("{}: unauthenticated, closed to make room", c.peer);
                    let resp =
                        ApiError::new(503, "too many connections").into_response(Format::Json);
                    c.discard_input();
                    c.respond(&resp, false, true);
                    let _ = c.flush();
                }
                self.close_conn(oldest);
            }
            Verdict::Refuse(why) => {
                // A canned answer, best effort: the socket is new, so its buffer has room.
                log::debug!("{}: refused: {why}", conn.peer);
                let resp = ApiError::new(503, why).into_response(Format::Json);
                conn.respond(&resp, false, true);
                let _ = conn.flush();
                return;
            }
        }
        let token = self.token();
        if let Err(e) =
            self.reactor
                .poll
                .registry()
                .register(&mut conn.stream, token, Interest::READABLE)
        {
            log::warn!("register connection: {e}");
            return;
        }
        conn.interest = Some(Interest::READABLE);
        self.reactor.routes.insert(token, Target::Conn);
        let limits = &self.cfg.limits;
        self.reactor.timers.after(
            limits
                .head_timeout
                .min(limits.idle_timeout)
                .min(limits.preauth_timeout),
            Timer::Conn(token),
        );
        self.admission.add(token, conn.peer_ip);
        self.conns.insert(token, conn);
        // Data may already be there (edge-triggered registration sees only new readiness on
        // some kernels' paths); reading now costs one syscall.
        self.drive_conn(token);
    }

    fn close_conn(&mut self, token: Token) {
        self.admission.remove(token);
        if let Some(mut c) = self.conns.remove(&token) {
            let _ = self.reactor.poll.registry().deregister(&mut c.stream);
            self.reactor.routes.remove(&token);
            if let Phase::Waiting(op) = c.phase {
                self.client_gone(op);
            }
        }
    }

    /// Answer with an error and close (the input cannot be trusted to frame another request).
    fn fail_conn(&mut self, token: Token, err: ApiError) {
        if let Some(c) = self.conns.get_mut(&token) {
            log::info!("{} - {} {}", c.peer, err.status, err.message);
            c.respond(&err.into_response(Format::Json), false, true);
        }
        self.drive_conn(token);
    }

    /// Read, handle complete requests, write — until nothing more can happen now.
    fn drive_conn(&mut self, token: Token) {
        self.driving.push(token);
        self.drive_conn_now(token);
        self.driving.pop();
    }

    fn drive_conn_now(&mut self, token: Token) {
        loop {
            let Some(c) = self.conns.get_mut(&token) else {
                return;
            };
            if c.fill(self.reactor.scratch()).is_err() {
                self.close_conn(token);
                return;
            }
            // EOF while an operation works for this request: the client has gone (as Go's
            // net/http treats it). The operation is cancelled: an exec's process group is
            // killed, a pending connect is dropped.
            if c.read_eof && matches!(c.phase, Phase::Waiting(_)) {
                self.close_conn(token);
                return;
            }
            let mut progressed = false;
            loop {
                let Some(c) = self.conns.get_mut(&token) else {
                    return;
                };
                match c.next_request() {
                    Next::Nothing => break,
                    Next::Invalid(e) => {
                        let err = ApiError::from(e);
                        log::info!("{} - {} {}", c.peer, err.status, err.message);
                        c.respond(&err.into_response(Format::Json), false, true);
                        break;
                    }
                    Next::Head(head) => {
                        progressed = true;
                        self.admit_body(token, head);
                    }
                    Next::Request(req) => {
                        progressed = true;
                        if self.handle(token, req) {
                            // Upgraded: the connection is no longer ours.
                            return;
                        }
                    }
                }
            }
            let Some(c) = self.conns.get_mut(&token) else {
                return;
            };
            let blocked = c.output_blocked();
            match c.flush() {
                Ok(_) => {}
                Err(_) => {
                    self.close_conn(token);
                    return;
                }
            }
            // Pipelined requests already buffered wait for output room, not for new input:
            // once the client has read enough, handle them now (no readable edge will come
            // for bytes we already hold).
            let unblocked = blocked && !c.output_blocked();
            if c.finished() {
                if c.phase == Phase::Closing {
                    let _ = c.stream.shutdown(std::net::Shutdown::Write);
                }
                self.close_conn(token);
                return;
            }
            if self.draining.is_some()
                && c.phase == Phase::Open
                && !c.has_partial_request()
                && c.pending_output() == 0
            {
                self.close_conn(token);
                return;
            }
            if !(c.should_refill() || (progressed && c.phase == Phase::Open) || unblocked) {
                let want = c.wanted_interest();
                if c.interest != Some(want) {
                    if self
                        .reactor
                        .poll
                        .registry()
                        .reregister(&mut c.stream, token, want)
                        .is_err()
                    {
                        self.close_conn(token);
                        return;
                    }
                    c.interest = Some(want);
                }
                if c.phase == Phase::Open && !c.has_partial_request() {
                    c.shrink();
                }
                return;
            }
        }
    }

    /// Handle one request. Returns true when the connection was upgraded (taken away).
    fn handle(&mut self, token: Token, req: Request) -> bool {
        // Fault injection for the test of `contained`; compiled out of release builds.
        #[cfg(debug_assertions)]
        if std::env::var_os("SUPD_DEBUG_PANIC_PATH").is_some_and(|p| p == req.path.as_str()) {
            panic!("SUPD_DEBUG_PANIC_PATH was requested");
        }
        let started = Instant::now();
        let format = negotiate(req.header("accept"), &[Format::Json, Format::Yaml]);
        let head_only = req.method == Method::Head;
        let outcome = self.route_request(token, &req, format);
        let Some(c) = self.conns.get_mut(&token) else {
            return true;
        };
        let close = !req.keep_alive || self.draining.is_some();
        let status = match outcome {
            Outcome::Respond(resp) => {
                c.respond(&resp, head_only, close);
                resp.status
            }
            Outcome::Error(err) => {
                let status = err.status;
                // A client without a valid token gets one answer per connection: retrying on
                // it must not keep a slot.
                let close = close || status == 401;
                c.respond(&err.into_response(format), head_only, close);
                status
            }
            Outcome::Pending(op) => {
                c.phase = Phase::Waiting(op);
                if let Some(o) = self.ops.get_mut(&op) {
                    o.set_request_log(RequestLog::new(&c.peer, &req, started));
                }
                self.drive_op(op, None);
                // An upgrade in that drive took the connection away.
                return !self.conns.contains_key(&token);
            }
            Outcome::Upgraded => return true,
        };
        RequestLog::new(&c.peer, &req, started).done(status);
        false
    }

    /// A request with a body, its head complete: its body is read only if the request would
    /// be served (route, method, credentials) and its declared length fits the endpoint;
    /// otherwise it is answered now, the body unread, and the connection closed (the body's
    /// bytes would otherwise be taken for the next request).
    fn admit_body(&mut self, token: Token, head: Request) {
        let started = Instant::now();
        let format = negotiate(head.header("accept"), &[Format::Json, Format::Yaml]);
        let limit = match self.gate(token, &head) {
            Ok(Gate::Route(route)) => Ok(route.endpoint.body_limit()),
            // OPTIONS is answered without credentials; it has no use for a body.
            Ok(Gate::Options(_)) => Ok(0),
            Err(e) => Err(e),
        };
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let head_only = head.method == Method::Head;
        let log = RequestLog::new(&c.peer, &head, started);
        // A limit of 0 refuses any declared length at once; an empty chunked body passes.
        let refused = match limit {
            Ok(limit) => c
                .continue_body(head, limit.min(self.cfg.limits.body_bytes))
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        if let Err(err) = refused {
            let status = err.status;
            c.discard_input();
            c.respond(&err.into_response(format), head_only, true);
            log.done(status);
        }
    }

    /// What every request passes before anything is done for it: its route, its method and
    /// its credentials, in that order. OPTIONS needs no credentials (and does not count as
    /// authenticated activity).
    fn gate(&mut self, token: Token, req: &Request) -> std::result::Result<Gate, ApiError> {
        let route = router::route(&req.path)?;
        if req.method == Method::Options {
            return Ok(Gate::Options(
                Response::new(204).header("Allow", route.allow()),
            ));
        }
        if !route.allows(req.method) {
            return Err(router::MethodNotAllowed {
                method: req.method,
                allow: route.allow(),
            }
            .into());
        }
        self.authorize(req, &route)?;
        if let Some(c) = self.conns.get_mut(&token)
            && !c.authenticated
        {
            c.authenticated = true;
            self.admission.remove(token);
        }
        Ok(Gate::Route(route))
    }

    fn route_request(&mut self, token: Token, req: &Request, format: Format) -> Outcome {
        let route = match self.gate(token, req) {
            Ok(Gate::Route(route)) => route,
            Ok(Gate::Options(resp)) => return Outcome::Respond(resp),
            Err(e) => return Outcome::Error(e),
        };
        let call = match ops::decode(&route, req, &ops::DecodeCtx::new(&self.cfg)) {
            Ok(c) => c,
            Err(e) => return Outcome::Error(e.into()),
        };
        match call {
            ops::Call::State(params) => {
                let generation = self.mirror.generation();
                if let Some(r) = self
                    .state_cache
                    .get(generation, &req.path, &req.query, format)
                {
                    return Outcome::Respond(r);
                }
                let ctx = ops::state::StateCtx {
                    mirror: &self.mirror,
                    tenant: &self.cfg.tenant,
                    host: &self.cfg.host,
                };
                match ops::state::answer(&params, format, &ctx) {
                    Ok(r) => {
                        self.state_cache
                            .put(generation, &req.path, &req.query, format, &r);
                        Outcome::Respond(r)
                    }
                    Err(e) => Outcome::Error(e.into()),
                }
            }
            call => self.start_op(token, req, call, format),
        }
    }

    fn authorize(&self, req: &Request, route: &Route) -> std::result::Result<(), ApiError> {
        let tokens = match &self.tokens {
            TokenState::Ready(t) => t,
            TokenState::Sealed(why) => {
                return Err(auth::Denied::Sealed(why.to_string()).into());
            }
        };
        let bearer = req.header("authorization").and_then(auth::bearer_token);
        match tokens.check(bearer, route.operation(), &route.application) {
            Decision::Allow { .. } => Ok(()),
            Decision::Unauthorized => Err(auth::Denied::Unauthorized.into()),
            Decision::Forbidden { token } => Err(auth::Denied::Forbidden {
                token: token.to_string(),
                operation: route.operation(),
                application: route.application.clone(),
            }
            .into()),
        }
    }

    // ---- operations -----------------------------------------------------------------------

    fn start_op(
        &mut self,
        token: Token,
        req: &Request,
        call: ops::Call,
        format: Format,
    ) -> Outcome {
        let op_token = self.token();
        let start = {
            let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
            let env = ops::Env {
                mirror: &self.mirror,
                cfg: &self.cfg,
                restarting: &self.restarting,
            };
            ops::start(op_token, call, format, req.keep_alive, &env, &mut io)
        };
        match start {
            Err(e) => Outcome::Error(e),
            Ok(ops::Started::Respond(r)) => Outcome::Respond(r),
            Ok(ops::Started::Pending(op)) => {
                if let Some(key) = op.restart_key() {
                    self.restarting.insert(key.to_string());
                }
                // Driven first by `handle`, once the connection waits for it: a first drive
                // may already answer or upgrade (a loopback connect completes at once).
                self.ops.insert(op_token, op);
                Outcome::Pending(op_token)
            }
            Ok(ops::Started::Upgrade(op, head)) => {
                self.ops.insert(op_token, op);
                let log = self
                    .conns
                    .get(&token)
                    .map(|c| RequestLog::new(&c.peer, req, Instant::now()));
                self.upgrade_conn(token, op_token, head, log);
                Outcome::Upgraded
            }
        }
    }

    /// Move a connection's stream into the websocket operation `op_token`, which writes the
    /// 101 `head` (after any earlier pipelined answers still queued) before its frames.
    fn upgrade_conn(
        &mut self,
        token: Token,
        op_token: Token,
        head: Vec<u8>,
        log: Option<RequestLog>,
    ) {
        self.admission.remove(token);
        let Some(mut c) = self.conns.remove(&token) else {
            return;
        };
        let _ = self.reactor.poll.registry().deregister(&mut c.stream);
        self.reactor.routes.remove(&token);
        if let Some(log) = log {
            log.done(101);
        }
        let peer = c.peer.clone();
        let (stream, leftover, pending) = c.into_upgraded();
        let Some(op) = self.ops.get_mut(&op_token) else {
            return;
        };
        let attached = {
            let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
            op.attach_client(op_token, stream, peer, pending, head, leftover, &mut io)
        };
        if let Err(e) = attached {
            log::warn!("websocket attach: {e}");
            if let Some(mut op) = self.ops.remove(&op_token) {
                let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
                op.release(&mut io);
                op.abandon();
            }
            return;
        }
        self.drive_op(op_token, None);
    }

    /// Let an operation make progress; deliver its answer; drop it when it is done.
    fn drive_op(&mut self, op_token: Token, ev: Option<ops::Ready>) {
        self.driving.push(op_token);
        self.drive_op_now(op_token, ev);
        self.driving.pop();
    }

    fn drive_op_now(&mut self, op_token: Token, ev: Option<ops::Ready>) {
        let Some(op) = self.ops.get_mut(&op_token) else {
            return;
        };
        let progress = {
            let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
            let mut env = ops::EnvMut {
                mirror: &mut self.mirror,
                docker: &mut self.docker,
            };
            op.drive(op_token, ev, &mut io, &mut env)
        };
        if let Some(reply) = progress.reply {
            self.deliver(op_token, reply);
        }
        if progress.upgrade {
            let waiting = self.waiting_conn(op_token);
            let log = self.ops.get_mut(&op_token).and_then(|o| o.take_log());
            match waiting {
                Some(conn) => self.upgrade_conn(conn, op_token, Vec::new(), log),
                None => self.client_gone(op_token),
            }
        }
        if !progress.wants.is_empty() {
            self.apply_wants(progress.wants);
        }
        if progress.done
            && let Some(mut op) = self.ops.remove(&op_token)
        {
            if let Some(key) = op.restart_key() {
                self.restarting.remove(key);
            }
            let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
            op.release(&mut io);
        }
    }

    /// An operation's HTTP answer goes to the connection waiting for it, if it is still there.
    fn waiting_conn(&self, op_token: Token) -> Option<Token> {
        self.conns
            .iter()
            .find(|(_, c)| c.phase == Phase::Waiting(op_token))
            .map(|(t, _)| *t)
    }

    fn deliver(&mut self, op_token: Token, reply: ops::Reply) {
        let Some(token) = self.waiting_conn(op_token) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&token) {
            let close = !reply.keep_alive || self.draining.is_some();
            c.respond(&reply.response, reply.head_only, close);
            if let Some(log) = reply.log {
                log.done(reply.response.status);
            }
        }
        self.drive_conn(token);
    }

    fn client_gone(&mut self, op_token: Token) {
        if let Some(op) = self.ops.get_mut(&op_token) {
            let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
            op.client_gone(op_token, &mut io);
        }
        self.drive_op(op_token, None);
    }

    // ---- docker ---------------------------------------------------------------------------

    fn apply_wants(&mut self, wants: Vec<Want>) {
        for w in wants {
            match w {
                Want::ApiVersion(v) => self.docker.set_api_version(&v),
                Want::Get { path, purpose } => self.docker_request("GET", &path, None, purpose),
                Want::Post { path, purpose } => self.docker_request("POST", &path, None, purpose),
            }
        }
    }

    fn docker_request(&mut self, method: &str, path: &str, body: Option<&[u8]>, purpose: Purpose) {
        let t = self.token();
        match self.docker.start(
            self.reactor.poll.registry(),
            t,
            method,
            path,
            body,
            purpose.clone(),
        ) {
            Ok(()) => {
                self.reactor.routes.insert(t, Target::Docker);
            }
            Err(e) => self.docker_failed(
                purpose,
                &format!(
                    "cannot connect to {}: {e}",
                    self.cfg.docker_socket.display()
                ),
            ),
        }
    }

    fn on_docker(&mut self, token: Token) {
        let replies = self.docker.on_ready(self.reactor.poll.registry(), token);
        if !self.docker.owns(token) {
            self.reactor.routes.remove(&token);
        }
        for r in replies {
            match r {
                Reply::Done {
                    purpose,
                    status,
                    body,
                } => {
                    if let Purpose::Restart { op, .. } = purpose {
                        if let Some(o) = self.ops.get_mut(&op) {
                            o.docker_reply(&purpose, Ok((status, body)));
                        }
                        self.drive_op(op, None);
                        continue;
                    }
                    let wants = self.mirror.on_reply(purpose, status, &body);
                    self.apply_wants(wants);
                    self.after_mirror_change();
                }
                Reply::Event(line) => {
                    let wants = self.mirror.on_event(&line);
                    self.apply_wants(wants);
                }
                Reply::Failed { purpose, error } => self.docker_failed(purpose, &error),
            }
        }
    }

    fn docker_failed(&mut self, purpose: Purpose, error: &str) {
        if let Purpose::Restart { op, .. } = purpose {
            if let Some(o) = self.ops.get_mut(&op) {
                o.docker_reply(&purpose, Err(error.to_string()));
            }
            self.drive_op(op, None);
            return;
        }
        if !Mirror::is_fatal(&purpose) {
            log::warn!("docker: {error}");
            let wants = self.mirror.on_reply(purpose, 599, b"");
            self.apply_wants(wants);
            return;
        }
        self.docker_down = true;
        self.mirror.disconnected(error);
        // Every request of the lost connection is dropped; restarts learn of it here.
        let purposes = self.docker.close_all(self.reactor.poll.registry());
        self.reactor
            .routes
            .retain(|_, t| !matches!(t, Target::Docker));
        for p in purposes {
            if let Purpose::Restart { op, .. } = p {
                if let Some(o) = self.ops.get_mut(&op) {
                    o.docker_reply(&p, Err(error.to_string()));
                }
                self.drive_op(op, None);
            }
        }
        if !self.reconnect_scheduled {
            self.reconnect_scheduled = true;
            log::info!("docker: reconnecting in {:?}", self.docker_backoff);
            self.reactor
                .timers
                .after(self.docker_backoff, Timer::DockerReconnect);
            self.docker_backoff = (self.docker_backoff * 2).min(DOCKER_BACKOFF_MAX);
        }
        self.notify_ready_once();
    }

    fn after_mirror_change(&mut self) {
        if self.mirror.is_ready() {
            if self.docker_down {
                self.docker_down = false;
            }
            self.docker_backoff = DOCKER_BACKOFF_MIN;
            self.notify_ready_once();
        }
    }

    /// READY once the first sync settled (or failed): state requests then have an answer.
    fn notify_ready_once(&mut self) {
        if !self.notified_ready {
            self.notified_ready = true;
            let _ = systemd::notify("READY=1");
        }
    }
}

/// A request that passed `Server::gate`.
enum Gate {
    /// OPTIONS: the answer.
    Options(Response),
    Route(Route),
}

enum Outcome {
    Respond(Response),
    Error(ApiError),
    Pending(Token),
    Upgraded,
}

/// The one log line of a request: who, what (path without the query's values), status, time.
pub struct RequestLog {
    line: String,
    started: Instant,
}

impl RequestLog {
    pub fn new(peer: &str, req: &Request, started: Instant) -> RequestLog {
        let query = if req.query.is_empty() {
            String::new()
        } else {
            format!("?{}", crate::http::query::redacted(&req.query, &["cmd"]))
        };
        RequestLog {
            line: format!("{peer} {} {}{}", req.method.as_str(), req.path, query),
            started,
        }
    }

    pub fn done(self, status: u16) {
        log::info!(
            "{} {} {:.1}ms",
            self.line,
            status,
            self.started.elapsed().as_secs_f64() * 1000.0
        );
    }
}

/// Load the tokens file; first start with the default path creates it.
pub fn load_tokens(cfg: &Config) -> TokenState {
    if cfg.tokens_is_default && !cfg.tokens.exists() {
        match auth::bootstrap(&cfg.tokens, &cfg.bootstrap_token_file) {
            Ok(Some(path)) => log::warn!(
                "first start: created {} with an admin token; the token is in {}",
                cfg.tokens.display(),
                path.display()
            ),
            Ok(None) => {}
            Err(e) => return TokenState::Sealed(e.to_string()),
        }
    }
    match Tokens::load(&cfg.tokens) {
        Ok(t) => TokenState::Ready(t),
        Err(e) => {
            log::warn!("tokens: {e}; sealed until SIGHUP after it is fixed");
            TokenState::Sealed(e.to_string())
        }
    }
}
