//! One module per operation. `state` answers at once from the mirror; the others are
//! long-lived operations (`Op`) that own descriptors registered with the loop and make
//! progress when they become ready, when a timer fires, or when Docker answers.

pub mod exec;
pub mod interactive;
pub mod proc;
pub mod state;
pub mod target;
pub mod wsclient;

use std::collections::HashMap;
use std::io;
use std::time::Instant;

use mio::event::Source;
use mio::{Interest, Poll, Token};

use crate::config::Config;
use crate::ws::{handshake, protocol};
use crate::container;
use crate::http::response::negotiate;
use crate::docker::client::{Client as DockerClient, Purpose};
use crate::docker::mirror::{Mirror, Want};
use crate::http::query::Query;
use crate::http::request::Request;
use crate::http::router::{ContainerRef, Endpoint, Route};
use crate::http::{ApiError, Format, Response};
use crate::server::net::Stream;
use crate::server::{RequestLog, Target, timers::Timer, timers::Timers};

/// Which of an operation's descriptors an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The client's socket (websocket sessions).
    Client,
    /// The intermediate child of a spawn (its pidfd).
    Intermediate,
    /// The command's pidfd.
    Process,
    /// The command's output (pipe or PTY master).
    Output,
    /// The command's stdin pipe.
    Stdin,
    /// The tunnel's socket inside the instance's namespace.
    Socket,
}

/// A readiness event for one of an operation's descriptors.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub role: Role,
    pub readable: bool,
    pub writable: bool,
    pub hup: bool,
}

/// What operations may do with the loop: register descriptors and set timers.
pub struct Io<'a> {
    poll: &'a Poll,
    routes: &'a mut HashMap<Token, Target>,
    next_token: &'a mut usize,
    timers: &'a mut Timers,
    pub cfg: &'a Config,
}

impl<'a> Io<'a> {
    pub(crate) fn new(
        poll: &'a Poll,
        routes: &'a mut HashMap<Token, Target>,
        next_token: &'a mut usize,
        timers: &'a mut Timers,
        cfg: &'a Config,
    ) -> Io<'a> {
        Io {
            poll,
            routes,
            next_token,
            timers,
            cfg,
        }
    }

    /// Register a descriptor of operation `op`; returns its new token.
    pub fn register(
        &mut self,
        op: Token,
        role: Role,
        source: &mut impl Source,
        interest: Interest,
    ) -> io::Result<Token> {
        let t = Token(*self.next_token);
        *self.next_token += 1;
        self.poll.registry().register(source, t, interest)?;
        self.routes.insert(t, Target::Op(op, role));
        Ok(t)
    }

    pub fn reregister(
        &mut self,
        token: Token,
        source: &mut impl Source,
        interest: Interest,
    ) -> io::Result<()> {
        self.poll.registry().reregister(source, token, interest)
    }

    pub fn deregister(&mut self, token: Token, source: &mut impl Source) {
        let _ = self.poll.registry().deregister(source);
        self.routes.remove(&token);
    }

    /// Wake operation `op` at `when` (it checks its own deadlines then).
    pub fn wake_at(&mut self, op: Token, when: Instant) {
        self.timers.at(when, Timer::Op(op));
    }
}

/// What operations read when they start.
pub struct Env<'a> {
    pub mirror: &'a Mirror,
    pub cfg: &'a Config,
}

/// What operations may change while they run.
pub struct EnvMut<'a> {
    pub mirror: &'a mut Mirror,
    pub docker: &'a mut DockerClient,
}

/// An HTTP answer an operation produced later.
pub struct Reply {
    pub response: Response,
    pub head_only: bool,
    pub keep_alive: bool,
    pub log: Option<RequestLog>,
}

#[derive(Default)]
pub struct Progress {
    pub reply: Option<Reply>,
    pub wants: Vec<Want>,
    /// The operation has finished and released nothing it still needs.
    pub done: bool,
}

pub enum Started {
    /// Answered at once.
    Respond(Response),
    /// Will answer later on the same connection.
    Pending(Op),
    /// A websocket session: the connection's stream moves into it, after the 101 head (bytes).
    Upgrade(Op, Vec<u8>),
}

/// The long-lived operations.
pub enum Op {
    Exec(exec::Exec),
    Interactive(Box<interactive::Interactive>),
}

impl Op {
    pub fn drive(
        &mut self,
        me: Token,
        ev: Option<Ready>,
        io: &mut Io<'_>,
        _env: &mut EnvMut<'_>,
    ) -> Progress {
        match self {
            Op::Exec(e) => e.drive(me, ev.map(|e| e.role), io),
            Op::Interactive(s) => s.drive(me, ev.map(|e| e.role), io),
        }
    }

    pub fn set_request_log(&mut self, log: RequestLog) {
        match self {
            Op::Exec(e) => e.set_log(log),
            Op::Interactive(_) => drop(log),
        }
    }

    /// Hand the upgraded connection to a websocket operation. `pending` is HTTP output not
    /// yet written (earlier pipelined answers); it goes out before the 101 `head`.
    #[allow(clippy::too_many_arguments)]
    pub fn attach_client(
        &mut self,
        me: Token,
        stream: Stream,
        peer: String,
        pending: Vec<u8>,
        head: Vec<u8>,
        leftover: Vec<u8>,
        io: &mut Io<'_>,
    ) -> io::Result<()> {
        let mut out = pending;
        out.extend_from_slice(&head);
        match self {
            Op::Exec(_) => Err(io::Error::other("exec is not a websocket operation")),
            Op::Interactive(s) => s.attach(me, stream, peer, out, leftover, io),
        }
    }

    pub fn docker_reply(&mut self, _purpose: &Purpose, _reply: Result<(u16, Vec<u8>), String>) {
        match self {
            Op::Exec(_) | Op::Interactive(_) => {}
        }
    }

    /// The HTTP client that waits for this operation went away.
    pub fn client_gone(&mut self, me: Token, io: &mut Io<'_>) {
        match self {
            Op::Exec(e) => e.client_gone(me, io),
            Op::Interactive(_) => {}
        }
    }

    /// The daemon is stopping: wind down (close sessions, kill processes).
    pub fn shutdown(&mut self, me: Token, io: &mut Io<'_>) {
        match self {
            Op::Exec(e) => e.client_gone(me, io),
            Op::Interactive(s) => s.shutdown(me, io),
        }
    }

    /// Deregister everything (the op is done).
    pub fn release(&mut self, io: &mut Io<'_>) {
        match self {
            Op::Exec(e) => e.release(io),
            Op::Interactive(s) => s.release(io),
        }
    }

    /// The process is exiting: kill what we started, without waiting.
    pub fn abandon(&mut self) {
        match self {
            Op::Exec(e) => e.abandon(),
            Op::Interactive(s) => s.abandon(),
        }
    }
}

/// Start the operation a route names.
pub fn start(
    me: Token,
    req: &Request,
    route: &Route,
    query: &Query,
    _format: Format,
    env: &Env<'_>,
    io: &mut Io<'_>,
) -> Result<Started, ApiError> {
    match &route.endpoint {
        Endpoint::Exec { instance, target } => {
            state::check_params(query, &["site"])?;
            state::check_site(query, &env.cfg.site)?;
            let cmd = exec::parse_cmd(req)?;
            let rec = target::find(env.mirror, &route.application, instance, target)?;
            target::require_running(rec)?;
            let argv = container::split_words(&cmd)?;
            let spawned = container::spawn(
                &target::exec_target(rec),
                &argv,
                container::Stdio::Pipes { stdin: false },
            )?;
            let format = negotiate(
                req.header("accept"),
                &[Format::Json, Format::Yaml, Format::OctetStream],
            );
            let op = exec::Exec::start(me, spawned, format, req, io)
                .map_err(|e| ApiError::new(500, format!("cannot follow the command: {e}")))?;
            Ok(Started::Pending(Op::Exec(op)))
        }
        Endpoint::ExecInteractive { instance, target } => {
            let accepted = upgrade(req, &[protocol::EXEC_INTERACTIVE], env.cfg)?;
            state::check_params(query, &["site", "fields", "cmd", "tty"])?;
            state::check_site(query, &env.cfg.site)?;
            let cmd = query
                .single("cmd")?
                .filter(|c| !c.trim().is_empty())
                .ok_or_else(|| ApiError::bad_request("cmd must be a non-blank string"))?;
            let tty = match query.single("tty")? {
                None | Some("true") => true,
                Some("false") => false,
                Some(v) => {
                    return Err(ApiError::bad_request(format!(
                        "tty must be true or false (got {v:?})"
                    )));
                }
            };
            let rec = target::find(env.mirror, &route.application, instance, target)?;
            target::require_running(rec)?;
            let argv = container::split_words(cmd)?;
            let stdio = if tty {
                container::Stdio::Pty { rows: 24, cols: 80 }
            } else {
                container::Stdio::Pipes { stdin: true }
            };
            let spawned = container::spawn(&target::exec_target(rec), &argv, stdio)?;
            let op = interactive::Interactive::start(me, spawned, io)
                .map_err(|e| ApiError::new(500, format!("cannot follow the command: {e}")))?;
            Ok(Started::Upgrade(
                Op::Interactive(Box::new(op)),
                handshake::response_head(&accepted, &[]),
            ))
        }
        Endpoint::TcpConnect { target: ContainerRef::Vm, .. } => Err(ApiError::new(
            501,
            "vm-container operations are not available on this host",
        )),
        Endpoint::TcpConnect { .. } => Err(not_yet("tcp-connect")),
        Endpoint::Connect { .. } => Err(not_yet("connect")),
        Endpoint::Restart { .. } => Err(not_yet("restart")),
        Endpoint::List | Endpoint::Get { .. } => Err(ApiError::new(500, "not an operation")),
    }
}

fn not_yet(what: &str) -> ApiError {
    ApiError::new(501, format!("{what} is not implemented yet")).info("operation", what)
}

/// Check a websocket upgrade request; the 101 head is built from the result.
pub fn upgrade(
    req: &Request,
    supported: &[&'static str],
    cfg: &Config,
) -> Result<handshake::Accepted, ApiError> {
    let connection = req.header_joined("connection");
    let upgrade = req.header_joined("upgrade");
    let protocols = req.header_joined("sec-websocket-protocol");
    let headers = handshake::UpgradeHeaders {
        connection: connection.as_deref(),
        upgrade: upgrade.as_deref(),
        version: req.header("sec-websocket-version"),
        key: req.header("sec-websocket-key"),
        protocol: protocols.as_deref(),
        origin: req.header("origin"),
        host: req.header("host"),
    };
    Ok(handshake::check(&headers, supported, &cfg.ws.allowed_origins)?)
}
