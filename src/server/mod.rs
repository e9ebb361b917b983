//! The server: one thread, one `mio::Poll` (`crate::reactor`), everything that waits
//! registered with it.
//!
//! Client connections speak HTTP until they are answered or upgraded; operations that outlive
//! one event (an exec, a websocket session, a restart) are kept in `ops` and own their
//! descriptors. Docker traffic goes through the same loop. The `impl Server` is split by
//! concern: `accept` (new connections), `drive` (a connection's reads, writes and deadlines),
//! `request` (a request's path to its answer or operation), `docker` (the Docker link),
//! `signals` (signals, token reload, readiness, shutdown); this file holds the state, the
//! loop and the dispatch of its events.

mod accept;
mod admission;
mod conn;
mod docker;
mod drive;
mod request;
mod signals;
mod vm;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::auth::Tokens;
use crate::config::Config;
use crate::docker::client::{Client as DockerClient, Purpose};
use crate::docker::mirror::Mirror;
use crate::ops;
use crate::reactor::net::Listener;
use crate::reactor::timers::Timer;
use crate::reactor::{Reactor, Target};
use crate::systemd;

use admission::Admission;
pub(crate) use admission::ConnError;
use conn::{HttpConn, Phase};
pub(crate) use signals::load_tokens;

const SIGNAL: Token = Token(0);
const FIRST_DYNAMIC: usize = 1;
/// Graceful shutdown gives in-flight work this long, then exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);
const DOCKER_BACKOFF_MIN: Duration = Duration::from_millis(100);
const DOCKER_BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub enum Error {
    Io(&'static str, io::Error),
    Listen(String, io::Error),
    /// A TLS listener's certificate, key or CA file is not usable.
    Tls(String, Box<crate::tls::Error>),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(what, e) => write!(f, "{what}: {e}"),
            Error::Listen(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            Error::Tls(addr, e) => write!(f, "TLS on {addr}: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(_, e) | Error::Listen(_, e) => Some(e),
            Error::Tls(_, e) => Some(e.as_ref()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The tokens file as loaded, or why it could not be.
pub(crate) enum TokenState {
    Ready(Tokens),
    Sealed(String),
}

/// The Docker connection: the client and how reconnecting after a loss goes.
struct DockerLink {
    client: DockerClient,
    backoff: Duration,
    /// The connection was lost and not yet resynchronised.
    down: bool,
    reconnect_scheduled: bool,
}

/// The listeners and whether accepting is paused for lack of descriptors.
struct Accepting {
    /// A slot per listener (its index is in its `Target::Listener`); emptied at shutdown.
    listeners: Vec<Option<Listener>>,
    /// Waiting for `Timer::ResumeAccept`.
    paused: bool,
    /// Accepting ran out of descriptors and has not succeeded since (to warn once, not every
    /// retry).
    exhausted: bool,
}

/// Readiness and shutdown, as systemd sees them.
struct Lifecycle {
    /// Since when a graceful shutdown is in progress.
    draining: Option<Instant>,
    notified_ready: bool,
    watchdog: Option<Duration>,
}

pub struct Server {
    reactor: Reactor,
    cfg: Config,
    tokens: TokenState,
    mirror: Mirror,
    state_cache: ops::state::Cache,
    docker: DockerLink,
    accepting: Accepting,
    conns: HashMap<Token, HttpConn>,
    /// Which of `conns` have not passed auth yet, and who may open another.
    admission: Admission,
    ops: HashMap<Token, ops::Op>,
    /// The running VM launchers: their guest agents, terminal ports and consoles.
    vms: crate::vm::Vms,
    /// Instances with a restart in progress (at most one each).
    restarting: HashSet<String>,
    signals: SignalFd,
    /// Connections whose per-wake request budget ran out: driven again after the events.
    ready: VecDeque<Token>,
    /// Connections and operations being driven right now, outermost first (see `contained`).
    driving: Vec<Token>,
    life: Lifecycle,
    /// The peer sites `site=` forwards to.
    peers: crate::sites::Peers,
    /// The answer of the thread resolving the sites' host names after a SIGHUP.
    resolver: Option<std::sync::mpsc::Receiver<crate::sites::Resolved>>,
    /// Another SIGHUP came while resolving: resolve again after.
    resolve_again: bool,
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
        let reactor = Reactor::new(FIRST_DYNAMIC).map_err(|e| Error::Io("epoll", e))?;
        reactor
            .poll
            .registry()
            .register(
                &mut SourceFd(&signals.as_raw_fd()),
                SIGNAL,
                Interest::READABLE,
            )
            .map_err(|e| Error::Io("register signalfd", e))?;

        let tokens = load_tokens(&cfg);
        let peers = signals::load_peers(&cfg);
        let mut listeners = inherited;
        if listeners.is_empty() {
            for addr in &cfg.listen {
                let l = Listener::bind(addr).map_err(|e| Error::Listen(addr.to_string(), e))?;
                listeners.push(l);
            }
        }
        // TLS where the configuration asks for it, by address: socket-activated listeners
        // are matched the same way. A listener whose files are unusable stops the start:
        // serving it plain instead would send tokens in clear.
        let mut listeners = listeners
            .into_iter()
            .map(|l| match l.tcp_addr().and_then(|a| tls_for(&cfg, a)) {
                Some(files) => l
                    .with_tls(files)
                    .map_err(|e| Error::Tls(files.cert_file.display().to_string(), Box::new(e))),
                None => Ok(l),
            })
            .collect::<Result<Vec<_>>>()?;
        for l in &mut listeners {
            if let Some(ip) = l.tcp_addr().map(|a| a.ip())
                && l.acceptor_mut().is_none()
                && !ip.is_loopback()
            {
                log::warn!(
                    "{} is plain HTTP on a non-loopback address: tokens cross the network in clear (configure tls: for it)",
                    l.describe()
                );
            }
        }
        let docker = DockerClient::new(cfg.docker_socket.clone());
        let watchdog = systemd::watchdog_interval();
        let mut server = Server {
            reactor,
            cfg,
            tokens,
            mirror: Mirror::new(),
            state_cache: ops::state::Cache::default(),
            docker: DockerLink {
                client: docker,
                backoff: DOCKER_BACKOFF_MIN,
                down: false,
                reconnect_scheduled: false,
            },
            accepting: Accepting {
                listeners: Vec::new(),
                paused: false,
                exhausted: false,
            },
            conns: HashMap::new(),
            admission: Admission::default(),
            ops: HashMap::new(),
            vms: Default::default(),
            restarting: Default::default(),
            signals,
            ready: VecDeque::new(),
            driving: Vec::new(),
            life: Lifecycle {
                draining: None,
                notified_ready: false,
                watchdog,
            },
            peers,
            resolver: None,
            resolve_again: false,
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
            server.accepting.listeners.push(Some(l));
        }
        if let Some(w) = server.life.watchdog {
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
        self.reactor.token()
    }

    /// SIGHUP: read every TLS listener's files again. New handshakes use the new
    /// certificate; open connections keep theirs; unusable files keep the old one.
    pub(super) fn reload_tls(&mut self) {
        for l in self.accepting.listeners.iter_mut().flatten() {
            let name = l.describe();
            if let Some(acceptor) = l.acceptor_mut() {
                match acceptor.reload() {
                    Ok(()) => log::info!("SIGHUP: {name}: certificate reloaded"),
                    Err(e) => log::warn!("SIGHUP: {name}: keeping the previous certificate: {e}"),
                }
            }
        }
    }

    /// Run until a shutdown completes.
    pub fn run(&mut self) -> Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            if let Some(since) = self.life.draining
                && ((self.conns.is_empty() && self.ops.is_empty()) || now >= since + SHUTDOWN_GRACE)
            {
                self.finish_shutdown();
                return Ok(());
            }
            let mut timeout = self.reactor.timers.timeout(now);
            if !self.ready.is_empty() {
                // Connections wait in the ready queue: look at new events without sleeping.
                timeout = Some(Duration::ZERO);
            }
            if self.life.draining.is_some() {
                let tick = Duration::from_millis(50);
                timeout = Some(timeout.map_or(tick, |t| t.min(tick)));
            }
            if let Err(e) = self.reactor.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Io("epoll_wait", e));
            }
            // Helpers killed while asleep in a container's file system die when it lets them.
            crate::container::helper::reap_stragglers();
            for ev in events.iter() {
                let token = ev.token();
                // Which event it was does not matter: every part reads and writes until it
                // would block, and notices a hang-up by reading.
                self.contained(Some(token), |s| s.dispatch(token));
            }
            let now = Instant::now();
            while let Some(t) = self.reactor.timers.pop_due(now) {
                let owner = match t {
                    Timer::Conn(token) | Timer::Op(token) => Some(token),
                    _ => None,
                };
                self.contained(owner, |s| s.on_timer(t, now));
            }
            // One more turn for each connection that yielded; those that yield again wait
            // for the next loop turn, after its events.
            for _ in 0..self.ready.len() {
                let Some(token) = self.ready.pop_front() else {
                    break;
                };
                let Some(c) = self.conns.get_mut(&token) else {
                    continue;
                };
                c.queued = false;
                self.contained(Some(token), |s| s.drive_conn(token));
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
                self.admission.release(token);
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
            // The agent keeps going: its queue and connection are its own.
            Some(Target::Agent(_)) => None,
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
            self.admission.release(t);
            self.reactor.routes.remove(&t);
        }
        self.admission.release(op);
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

    fn dispatch(&mut self, token: Token) {
        if token == SIGNAL {
            self.on_signal();
            return;
        }
        match self.reactor.routes.get(&token).copied() {
            Some(Target::Listener(i)) => self.accept(i),
            Some(Target::Conn) => self.drive_conn(token),
            Some(Target::Docker) => self.on_docker(token),
            Some(Target::Op(op, role)) => self.drive_op(op, Some(role)),
            Some(Target::Agent(key)) => self.on_agent(key),
            None => {}
        }
    }

    fn on_timer(&mut self, t: Timer, now: Instant) {
        match t {
            Timer::Conn(token) => self.check_conn_deadlines(token, now),
            Timer::Op(token) => self.drive_op(token, None),
            Timer::Agent(key) => self.on_agent(key),
            Timer::DockerReconnect => {
                self.docker.reconnect_scheduled = false;
                if self.docker.down && self.life.draining.is_none() {
                    let wants = self.mirror.connect();
                    self.apply_wants(wants);
                }
            }
            Timer::Watchdog => {
                let _ = systemd::notify("WATCHDOG=1");
                if let Some(w) = self.life.watchdog {
                    self.reactor.timers.after(w / 2, Timer::Watchdog);
                }
            }
            Timer::SitesResolved => self.on_resolved(),
            Timer::ResumeAccept => {
                self.accepting.paused = false;
                for i in 0..self.accepting.listeners.len() {
                    self.accept(i);
                }
            }
        }
    }
}

/// The TLS files configured for a TCP listener bound to `addr`: the same address, or a
/// wildcard one with the same port (a socket-activated `[::]:4646` for `0.0.0.0:4646`).
fn tls_for(cfg: &Config, addr: std::net::SocketAddr) -> Option<&crate::config::ListenerTls> {
    cfg.listen_tls
        .iter()
        .find(|(a, _)| *a == addr || (a.ip().is_unspecified() && a.port() == addr.port()))
        .map(|(_, f)| f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenerTls;

    #[test]
    fn tls_settings_are_found_by_listener_address() {
        let files = |n: &str| ListenerTls {
            cert_file: n.into(),
            key_file: n.into(),
            client_ca_file: None,
        };
        let cfg = Config {
            listen_tls: vec![
                ("127.0.0.1:4647".parse().unwrap(), files("a")),
                ("0.0.0.0:4648".parse().unwrap(), files("b")),
            ],
            ..Config::default()
        };
        let find = |a: &str| tls_for(&cfg, a.parse().unwrap()).map(|f| f.cert_file.clone());
        assert_eq!(find("127.0.0.1:4647"), Some("a".into()));
        assert_eq!(find("127.0.0.2:4647"), None);
        assert_eq!(find("127.0.0.1:4646"), None);
        // A socket-activated listener on any address of the wildcard entry's port.
        assert_eq!(find("[::]:4648"), Some("b".into()));
        assert_eq!(find("0.0.0.0:4648"), Some("b".into()));
    }
}
