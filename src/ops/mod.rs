//! One module per operation. A request is first decoded ([`decode`], pure: no I/O) into a
//! [`Call`] holding its endpoint's typed parameters; each module has its endpoint's decoder
//! next to its operation. `state` answers at once from the mirror; the others are
//! long-lived operations (`Op`) that own descriptors registered with the loop and make
//! progress when they become ready, when a timer fires, or when Docker answers. They start
//! from their parameters ([`start`]), never from the raw request, and fail with their
//! module's typed error, turned into a status in `http/error.rs`.

pub mod decode;
pub mod exec;
pub mod interactive;
pub mod prepare;
pub mod proc;
pub mod restart;
pub mod state;
pub mod target;
pub mod tunnel;
pub mod wsclient;

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::event::Source;
use mio::{Interest, Token};

use crate::config::Config;
use crate::container;
use crate::docker::client::{Client as DockerClient, Purpose};
use crate::docker::mirror::{Mirror, Want};
use crate::http::{ApiError, Format, Response};
use crate::server::net::Stream;
use crate::server::{Reactor, RequestLog, Target, timers::Timer};
use crate::ws::handshake;

pub use decode::{Call, DecodeCtx, DecodeError, decode};

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
    /// The pipe of the helper reading the container init's seccomp filters (`prepare`).
    Filters,
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
    reactor: &'a mut Reactor,
    pub cfg: &'a Config,
}

impl<'a> Io<'a> {
    pub(crate) fn new(reactor: &'a mut Reactor, cfg: &'a Config) -> Io<'a> {
        Io { reactor, cfg }
    }

    /// Borrow the loop's read buffer (64 KiB, contents meaningless); give it back with
    /// `put_scratch`. Moving output through it spares every session a buffer of its own.
    pub fn take_scratch(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.reactor.scratch);
        // Only if a caller did not give it back: a fresh one, so nothing breaks.
        buf.resize(crate::server::SCRATCH, 0);
        buf
    }

    pub fn put_scratch(&mut self, buf: Vec<u8>) {
        self.reactor.scratch = buf;
    }

    /// Register a descriptor of operation `op`; returns its new token.
    pub fn register(
        &mut self,
        op: Token,
        role: Role,
        source: &mut impl Source,
        interest: Interest,
    ) -> io::Result<Token> {
        let r = &mut *self.reactor;
        let t = Token(r.next_token);
        r.next_token += 1;
        r.poll.registry().register(source, t, interest)?;
        r.routes.insert(t, Target::Op(op, role));
        Ok(t)
    }

    pub fn reregister(
        &mut self,
        token: Token,
        source: &mut impl Source,
        interest: Interest,
    ) -> io::Result<()> {
        self.reactor
            .poll
            .registry()
            .reregister(source, token, interest)
    }

    pub fn deregister(&mut self, token: Token, source: &mut impl Source) {
        let _ = self.reactor.poll.registry().deregister(source);
        self.reactor.routes.remove(&token);
    }

    /// Wake operation `op` at `when` (it checks its own deadlines then).
    pub fn wake_at(&mut self, op: Token, when: Instant) {
        self.reactor.timers.at(when, Timer::Op(op));
    }
}

/// What operations read when they start.
pub struct Env<'a> {
    pub mirror: &'a Mirror,
    pub cfg: &'a Config,
    /// Instances (`<application>/<instance>`) with a restart in progress.
    pub restarting: &'a std::collections::HashSet<String>,
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
    /// The HTTP connection waiting for this operation is to be upgraded now (a tunnel whose
    /// connect completed); the op's 101 head goes out first.
    pub upgrade: bool,
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
    /// An exec or session waiting for the init's seccomp filters; becomes one of them.
    Preparing(Box<prepare::Preparing>),
    Exec(exec::Exec),
    Interactive(Box<interactive::Interactive>),
    Tunnel(Box<tunnel::Tunnel>),
    Restart(restart::Restart),
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
            Op::Preparing(p) => {
                let (next, progress) = p.drive(me, io);
                if let Some(next) = next {
                    *self = next;
                }
                progress
            }
            Op::Exec(e) => e.drive(me, ev.map(|e| e.role), io),
            Op::Interactive(s) => s.drive(me, ev.map(|e| e.role), io),
            Op::Tunnel(t) => t.drive(me, ev.map(|e| e.role), io),
            Op::Restart(r) => r.drive(me, _env),
        }
    }

    pub fn set_request_log(&mut self, log: RequestLog) {
        match self {
            Op::Preparing(p) => p.set_log(log),
            Op::Exec(e) => e.set_log(log),
            // Only an upgrade that waited for a spawn has it (`prepare`); it logs the 101.
            Op::Interactive(s) => s.set_log(log),
            Op::Tunnel(t) => t.set_log(log),
            Op::Restart(r) => r.set_log(log),
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
            Op::Preparing(_) | Op::Exec(_) | Op::Restart(_) => {
                Err(io::Error::other("not a websocket operation"))
            }
            Op::Interactive(s) => {
                out.extend_from_slice(&s.take_head());
                s.attach(wsclient::WsClient::attach(
                    me, stream, peer, out, leftover, io,
                )?);
                Ok(())
            }
            Op::Tunnel(t) => {
                out.extend_from_slice(&t.take_head());
                t.attach(wsclient::WsClient::attach(
                    me, stream, peer, out, leftover, io,
                )?);
                Ok(())
            }
        }
    }

    pub fn docker_reply(&mut self, purpose: &Purpose, reply: crate::docker::client::Outcome) {
        if let Op::Restart(r) = self {
            r.docker_reply(purpose, reply);
        }
    }

    /// The request log line of an operation that upgrades late (a tunnel after its connect).
    pub fn take_log(&mut self) -> Option<RequestLog> {
        match self {
            Op::Tunnel(t) => t.take_log(),
            Op::Interactive(s) => s.take_log(),
            _ => None,
        }
    }

    /// The instance key of a restart in progress.
    pub fn restart_key(&self) -> Option<&str> {
        match self {
            Op::Restart(r) => Some(&r.key),
            _ => None,
        }
    }

    /// The HTTP client that waits for this operation went away.
    pub fn client_gone(&mut self, me: Token, io: &mut Io<'_>) {
        match self {
            Op::Preparing(p) => p.client_gone(io),
            Op::Exec(e) => e.client_gone(me, io),
            Op::Tunnel(t) => t.client_gone(),
            // A restart runs to its end even if nobody waits for the answer.
            Op::Interactive(_) | Op::Restart(_) => {}
        }
    }

    /// The daemon is stopping: wind down (close sessions, kill processes).
    pub fn shutdown(&mut self, me: Token, io: &mut Io<'_>) {
        match self {
            Op::Preparing(p) => p.shutdown(),
            Op::Exec(e) => e.shutdown(me, io),
            Op::Interactive(s) => s.shutdown(me, io),
            Op::Tunnel(t) => t.shutdown(me, io),
            Op::Restart(_) => {}
        }
    }

    /// Deregister everything (the op is done).
    pub fn release(&mut self, io: &mut Io<'_>) {
        match self {
            Op::Preparing(p) => p.release(io),
            Op::Exec(e) => e.release(io),
            Op::Interactive(s) => s.release(io),
            Op::Tunnel(t) => t.release(io),
            Op::Restart(_) => {}
        }
    }

    /// The process is exiting: kill what we started, without waiting.
    pub fn abandon(&mut self) {
        match self {
            Op::Exec(e) => e.abandon(),
            Op::Interactive(s) => s.abandon(),
            // A helper reading filters is killed when the operation is dropped.
            Op::Preparing(_) | Op::Tunnel(_) | Op::Restart(_) => {}
        }
    }
}

/// Start the operation a decoded request names. State requests are answered by the server
/// from its cache or `state::answer`; here they are an error (a bug in the caller).
pub fn start(
    me: Token,
    call: Call,
    format: Format,
    keep_alive: bool,
    env: &Env<'_>,
    io: &mut Io<'_>,
) -> Result<Started, ApiError> {
    match call {
        Call::Exec(p) => {
            let rec = target::find(env.mirror, &p.application, &p.instance, &p.target)?;
            target::require_running(rec)?;
            target::require_sealed_binary()?;
            let start = prepare::Start {
                target: target::exec_target(rec),
                argv: p.argv,
                stdio: container::Stdio::Pipes { stdin: false },
                then: prepare::Then::Exec {
                    output: p.output,
                    keep_alive,
                },
            };
            Ok(Started::Pending(
                match prepare::begin(me, start, format, keep_alive, io)? {
                    prepare::Begun::Now(op) => op,
                    prepare::Begun::Later(p) => Op::Preparing(p),
                },
            ))
        }
        Call::Interactive(p) => {
            let rec = target::find(env.mirror, &p.application, &p.instance, &p.target)?;
            target::require_running(rec)?;
            target::require_sealed_binary()?;
            let stdio = if p.tty {
                container::Stdio::Pty { rows: 24, cols: 80 }
            } else {
                container::Stdio::Pipes { stdin: true }
            };
            let start = prepare::Start {
                target: target::exec_target(rec),
                argv: p.argv,
                stdio,
                then: prepare::Then::Interactive {
                    head: handshake::response_head(&p.accepted, &[]),
                },
            };
            Ok(match prepare::begin(me, start, format, keep_alive, io)? {
                // The op holds its 101 head and writes it when attached.
                prepare::Begun::Now(op) => Started::Upgrade(op, Vec::new()),
                prepare::Begun::Later(p) => Started::Pending(Op::Preparing(p)),
            })
        }
        Call::TcpConnect(p) => {
            let rec = target::find(env.mirror, &p.application, &p.instance, &p.target)?;
            target::require_running(rec)?;
            let ip = rec
                .networks
                .iter()
                .find_map(|n| n.ip.or(n.ipv6))
                .ok_or(target::Error::NoAddress)?;
            let head = handshake::response_head(&p.accepted, &[("Deprecation", "true")]);
            let begun = tunnel::start(
                me,
                None,
                tunnel::Proto::Tcp,
                SocketAddr::new(ip, p.port),
                head,
                format,
                keep_alive,
                io,
            )?;
            Ok(tunnel_started(begun))
        }
        Call::Connect(p) => {
            let all = target::instance(env.mirror, &p.application, &p.instance)?;
            let owner = all
                .iter()
                .find(|r| !r.identity.init && r.running && !r.paused && r.pid > 0)
                .ok_or(target::Error::NoneRunning)?;
            let head = handshake::response_head(&p.accepted, &[]);
            let begun = tunnel::start(
                me,
                Some((owner.pid, owner.id.as_str())),
                p.proto,
                SocketAddr::new(p.ip, p.port),
                head,
                format,
                keep_alive,
                io,
            )?;
            Ok(tunnel_started(begun))
        }
        Call::Restart(p) => {
            let all = target::instance(env.mirror, &p.application, &p.instance)?;
            let key = p.key();
            if env.restarting.contains(&key) {
                return Err(restart::Error::InProgress(p.instance.to_string()).into());
            }
            // Init containers first, so they run again before the main containers start.
            let ids = |init: bool| -> Vec<String> {
                all.iter()
                    .filter(|r| r.identity.init == init)
                    .map(|r| r.id.clone())
                    .collect()
            };
            let op =
                restart::Restart::new(key, ids(true), ids(false), p.immediate, format, keep_alive);
            Ok(Started::Pending(Op::Restart(op)))
        }
        Call::State(_) => Err(NotAnOperation.into()),
    }
}

/// `start` was given a state request, which the server answers itself (a bug: 500).
#[derive(Debug)]
pub struct NotAnOperation;

fn tunnel_started(begun: tunnel::Begun) -> Started {
    match begun {
        tunnel::Begun::Connecting(t) => Started::Pending(Op::Tunnel(t)),
        tunnel::Begun::Ready(mut t) => {
            let head = t.take_head();
            Started::Upgrade(Op::Tunnel(t), head)
        }
    }
}
