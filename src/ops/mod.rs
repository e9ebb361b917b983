//! One module per operation. `state` answers at once from the mirror; the others are
//! long-lived operations (`Op`) that own descriptors registered with the loop and make
//! progress when they become ready, when a timer fires, or when Docker answers.

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
use std::net::{IpAddr, SocketAddr};

use mio::Token;

use crate::config::Config;
use crate::container;
use crate::docker::client::{Client as DockerClient, Purpose};
use crate::docker::mirror::{Mirror, Want};
use crate::http::query::Query;
use crate::http::request::Request;
use crate::http::response::negotiate;
use crate::http::router::{Endpoint, Route};
use crate::http::{ApiError, Format, Response};
use crate::reactor::net::Stream;
use crate::ws::{handshake, protocol};

pub use crate::reactor::{Io, Ready, Role};

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

/// An HTTP answer an operation produced later. The waiting connection keeps the request's
/// log line and keep-alive decision.
pub struct Reply {
    pub response: Response,
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

/// Start the operation a route names.
pub fn start(
    me: Token,
    req: &Request,
    route: &Route,
    query: &Query,
    format: Format,
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
            target::require_sealed_binary()?;
            let argv = container::split_words(&cmd)?;
            let output = negotiate(
                req.header("accept"),
                &[Format::Json, Format::Yaml, Format::OctetStream],
            );
            let start = prepare::Start {
                target: target::exec_target(rec),
                argv,
                stdio: container::Stdio::Pipes { stdin: false },
                then: prepare::Then::Exec { output },
            };
            Ok(Started::Pending(
                match prepare::begin(me, start, format, io)? {
                    prepare::Begun::Now(op) => op,
                    prepare::Begun::Later(p) => Op::Preparing(p),
                },
            ))
        }
        Endpoint::ExecInteractive { instance, target } => {
            let accepted = upgrade(req, &[protocol::EXEC_INTERACTIVE], env.cfg)?;
            state::check_params(query, &["site", "fields", "cmd", "tty"])?;
            state::check_site(query, &env.cfg.site)?;
            let cmd = query
                .single("cmd")?
                .filter(|c| !container::is_blank(c))
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
            target::require_sealed_binary()?;
            let argv = container::split_words(cmd)?;
            let stdio = if tty {
                container::Stdio::Pty { rows: 24, cols: 80 }
            } else {
                container::Stdio::Pipes { stdin: true }
            };
            let start = prepare::Start {
                target: target::exec_target(rec),
                argv,
                stdio,
                then: prepare::Then::Interactive {
                    head: handshake::response_head(&accepted, &[]),
                },
            };
            Ok(match prepare::begin(me, start, format, io)? {
                // The op holds its 101 head and writes it when attached.
                prepare::Begun::Now(op) => Started::Upgrade(op, Vec::new()),
                prepare::Begun::Later(p) => Started::Pending(Op::Preparing(p)),
            })
        }
        Endpoint::TcpConnect { instance, target } => {
            // As every websocket endpoint: the handshake and the query first, so a malformed
            // request is 4xx even where the operation is not available (vm-container: 501
            // from `find`).
            let accepted = upgrade(req, &[protocol::TCP_CONNECT], env.cfg)?;
            state::check_params(query, &["site", "fields", "port"])?;
            state::check_site(query, &env.cfg.site)?;
            let port = port_param(query)?;
            let rec = target::find(env.mirror, &route.application, instance, target)?;
            target::require_running(rec)?;
            let ip = rec
                .networks
                .iter()
                .find_map(|n| n.ip.or(n.ipv6))
                .ok_or_else(|| {
                    ApiError::conflict("the container has no IP address on a Docker network")
                })?;
            let head = handshake::response_head(&accepted, &[("Deprecation", "true")]);
            let begun = tunnel::start(
                me,
                None,
                tunnel::Proto::Tcp,
                SocketAddr::new(ip, port),
                head,
                format,
                io,
            )?;
            Ok(tunnel_started(begun))
        }
        Endpoint::Connect { instance } => {
            let accepted = upgrade(req, &[protocol::CONNECT], env.cfg)?;
            state::check_params(query, &["site", "fields", "protocol", "port", "ip-address"])?;
            state::check_site(query, &env.cfg.site)?;
            let proto = match query.single("protocol")? {
                Some("tcp") => tunnel::Proto::Tcp,
                Some("udp") => tunnel::Proto::Udp,
                Some(p) => {
                    return Err(ApiError::bad_request(format!(
                        "protocol must be tcp or udp (got {p:?})"
                    )));
                }
                None => return Err(ApiError::bad_request("protocol is required (tcp or udp)")),
            };
            let port = port_param(query)?;
            let ip: IpAddr = match query.single("ip-address")? {
                None => IpAddr::from([127, 0, 0, 1]),
                Some(s) => s.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "ip-address must be an IPv4 or IPv6 address (got {s:?})"
                    ))
                })?,
            };
            target::available(env.mirror)?;
            let all = target::instance_containers(env.mirror, &route.application, instance);
            if all.is_empty() {
                return Err(state::unknown_instance(
                    &route.application,
                    &instance.to_string(),
                ));
            }
            let owner = all
                .iter()
                .find(|r| !r.identity.init && r.running && !r.paused && r.pid > 0)
                .ok_or_else(|| ApiError::conflict("no container of the instance is running"))?;
            let head = handshake::response_head(&accepted, &[]);
            let begun = tunnel::start(
                me,
                Some((owner.pid, owner.id.as_str())),
                proto,
                SocketAddr::new(ip, port),
                head,
                format,
                io,
            )?;
            Ok(tunnel_started(begun))
        }
        Endpoint::Restart { instance } => {
            state::check_params(query, &["site"])?;
            state::check_site(query, &env.cfg.site)?;
            let immediate = restart::parse_immediate(req)?;
            target::available(env.mirror)?;
            let all = target::instance_containers(env.mirror, &route.application, instance);
            if all.is_empty() {
                return Err(state::unknown_instance(
                    &route.application,
                    &instance.to_string(),
                ));
            }
            let key = format!("{}/{}", route.application, instance);
            if env.restarting.contains(&key) {
                return Err(ApiError::conflict(format!(
                    "a restart of {instance} is already in progress"
                )));
            }
            // Init containers first, so they run again before the main containers start.
            let ids = |init: bool| -> Vec<String> {
                all.iter()
                    .filter(|r| r.identity.init == init)
                    .map(|r| r.id.clone())
                    .collect()
            };
            let op = restart::Restart::new(key, ids(true), ids(false), immediate, format);
            Ok(Started::Pending(Op::Restart(op)))
        }
        Endpoint::List | Endpoint::Get { .. } => Err(ApiError::new(500, "not an operation")),
    }
}

fn tunnel_started(begun: tunnel::Begun) -> Started {
    match begun {
        tunnel::Begun::Connecting(t) => Started::Pending(Op::Tunnel(t)),
        tunnel::Begun::Ready(mut t) => {
            let head = t.take_head();
            Started::Upgrade(Op::Tunnel(t), head)
        }
    }
}

fn port_param(query: &Query) -> Result<u16, ApiError> {
    let raw = query
        .single("port")?
        .ok_or_else(|| ApiError::bad_request("port is required"))?;
    match raw.parse::<u16>() {
        Ok(p) if p > 0 && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(ApiError::bad_request(format!(
            "port must be an integer 1-65535 (got {raw:?})"
        ))),
    }
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
    Ok(handshake::check(
        &headers,
        supported,
        &cfg.ws.allowed_origins,
    )?)
}
