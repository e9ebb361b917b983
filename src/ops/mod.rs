//! One module per operation. A request is first decoded ([`decode`], pure: no I/O) into a
//! [`Call`] holding its endpoint's typed parameters; each module has its endpoint's decoder
//! next to its operation. `state` answers at once from the mirror; the others are
//! long-lived operations (`Op`) that own descriptors registered with the loop and make
//! progress when they become ready, when a timer fires, or when Docker answers. They start
//! from their parameters ([`start`]), never from the raw request, and fail with their
//! module's typed error, turned into a status in `http/error.rs`.

pub mod call;
pub mod console;
pub mod decode;
pub mod exec;
pub mod interactive;
pub(crate) mod prepare;
pub mod proc;
pub mod restart;
pub mod state;
pub(crate) mod target;
pub mod tunnel;
pub(crate) mod vm_exec;
pub(crate) mod vm_session;
pub(crate) mod wsclient;

use std::io;
use std::net::SocketAddr;

use mio::Token;

use crate::container;
use crate::docker::client::Purpose;
use crate::docker::mirror::{Mirror, Want};
use crate::http::router::ContainerRef;
use crate::http::{ApiError, Format, Response};
use crate::reactor::net::Stream;
use crate::vm::Vms;
use crate::ws::handshake;

pub use call::{Call, decode};
pub use decode::{DecodeCtx, DecodeError};

pub(crate) use crate::reactor::{Io, Role};

/// What operations read when they start.
pub(crate) struct Env<'a> {
    pub mirror: &'a Mirror,
    /// Instances (`<application>/<instance>`) with a restart in progress.
    pub restarting: &'a std::collections::HashSet<String>,
    /// VM launchers: a session claims a terminal port or the console as it starts.
    pub vms: &'a mut Vms,
}

/// What operations may change while they run.
pub(crate) struct EnvMut<'a> {
    pub mirror: &'a mut Mirror,
    /// VM launchers: operations send commands to guest agents.
    pub vms: &'a mut Vms,
}

/// An HTTP answer an operation produced later. The waiting connection keeps the request's
/// log line and keep-alive decision.
pub(crate) struct Reply {
    pub response: Response,
}

#[derive(Default)]
pub(crate) struct Progress {
    pub reply: Option<Reply>,
    pub wants: Vec<Want>,
    /// The operation has finished and released nothing it still needs.
    pub done: bool,
    /// The HTTP connection waiting for this operation is to be upgraded now (a tunnel whose
    /// connect completed); the op's 101 head goes out first.
    pub upgrade: bool,
    /// The connection the op took over has finished its answer and may carry more requests:
    /// the server takes it back (`Op::take_client`).
    pub handback: bool,
}

pub(crate) enum Started {
    /// Will answer later on the same connection.
    Pending(Op),
    /// A websocket session: the connection's stream moves into it, after the 101 head (bytes).
    Upgrade(Op, Vec<u8>),
}

/// The long-lived operations.
pub(crate) enum Op {
    /// An exec or session waiting for the init's seccomp filters; becomes one of them.
    Preparing(Box<prepare::Preparing>),
    Exec(exec::Exec),
    Interactive(Box<interactive::Interactive>),
    Tunnel(Box<tunnel::Tunnel>),
    Restart(restart::Restart),
    VmExec(vm_exec::VmExec),
    /// A websocket session with a VM's serial port (terminal or console).
    VmSession(Box<vm_session::VmSession>),
    /// A request forwarded to a peer site, and its relayed answer.
    Forward(Box<crate::sites::Forward>),
}

impl Op {
    pub fn drive(
        &mut self,
        me: Token,
        ev: Option<Role>,
        io: &mut Io<'_>,
        env: &mut EnvMut<'_>,
    ) -> Progress {
        match self {
            Op::Preparing(p) => {
                let (next, progress) = p.drive(me, io);
                if let Some(next) = next {
                    *self = next;
                }
                progress
            }
            Op::Exec(e) => e.drive(me, ev, io),
            Op::Interactive(s) => s.drive(me, ev, io),
            Op::Tunnel(t) => t.drive(me, ev, io),
            Op::Restart(r) => r.drive(me, io, env),
            Op::VmExec(e) => e.drive(me, io, env),
            Op::VmSession(s) => s.drive(me, ev, io, env),
            Op::Forward(f) => {
                let step = f.drive(me, ev, io);
                Progress {
                    reply: step.reply.map(|response| Reply { response }),
                    upgrade: step.upgrade,
                    handback: step.handback,
                    done: step.done,
                    ..Progress::default()
                }
            }
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
        // The op's own 101 head (when it holds one) follows; then its client is attached.
        let (held_head, slot): (Vec<u8>, &mut dyn FnMut(wsclient::WsClient)) = match self {
            Op::Forward(f) => return f.attach(me, stream, peer, out, leftover, io),
            Op::Preparing(_) | Op::Exec(_) | Op::Restart(_) | Op::VmExec(_) => {
                return Err(io::Error::other("not a websocket operation"));
            }
            Op::Interactive(s) => (s.take_head(), &mut |c| s.attach(c)),
            Op::VmSession(s) => (s.take_head(), &mut |c| s.attach(c)),
            Op::Tunnel(t) => (t.take_head(), &mut |c| t.attach(c)),
        };
        out.extend_from_slice(&held_head);
        slot(wsclient::WsClient::attach(
            me, stream, peer, out, leftover, io,
        )?);
        Ok(())
    }

    /// A guest agent answered a command of this operation.
    pub fn agent_reply(
        &mut self,
        me: Token,
        reply: crate::vm::Reply,
        io: &mut Io<'_>,
        env: &mut EnvMut<'_>,
    ) -> Progress {
        match self {
            Op::VmExec(e) => e.agent_reply(me, reply, io, env),
            Op::VmSession(s) => s.agent_reply(me, reply, io, env),
            Op::Restart(r) => r.agent_reply(me, reply, io, env),
            _ => Progress::default(),
        }
    }

    pub fn docker_reply(&mut self, purpose: &Purpose, reply: crate::docker::client::Outcome) {
        if let Op::Restart(r) = self {
            r.docker_reply(purpose, reply);
        }
    }

    /// The client's connection back, with what it sent meanwhile (after `Progress::handback`).
    pub fn take_client(&mut self, io: &mut Io<'_>) -> Option<(Stream, String, Vec<u8>)> {
        match self {
            Op::Forward(f) => f.take_client(io),
            _ => None,
        }
    }

    /// The status logged for a connection this operation took over: 101 for a websocket
    /// session, a forwarded answer's own status.
    pub fn takeover_status(&self) -> u16 {
        match self {
            Op::Forward(f) => f.status(),
            _ => 101,
        }
    }

    /// A restart waiting for a VM launcher to stop: driven again when the mirror changes.
    pub fn awaits_launcher(&self) -> bool {
        matches!(self, Op::Restart(r) if r.awaits_launcher())
    }

    /// The instance key of a restart in progress.
    pub fn restart_key(&self) -> Option<&str> {
        match self {
            Op::Restart(r) => Some(&r.key),
            _ => None,
        }
    }

    /// The HTTP client that waits for this operation went away.
    pub fn client_gone(&mut self, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) {
        match self {
            Op::VmExec(e) => e.client_gone(me, io, env),
            Op::VmSession(s) => s.client_gone(me, io, env),
            Op::Preparing(p) => p.client_gone(io),
            Op::Exec(e) => e.client_gone(me, io),
            Op::Tunnel(t) => t.client_gone(),
            Op::Forward(f) => f.client_gone(),
            // A restart runs to its end even if nobody waits for the answer.
            Op::Interactive(_) | Op::Restart(_) => {}
        }
    }

    /// The daemon is stopping: wind down (close sessions, kill processes).
    pub fn shutdown(&mut self, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) {
        match self {
            // Killed as if its client went; it still answers with how the command ended.
            Op::VmExec(e) => e.shutdown(me, io, env),
            Op::VmSession(s) => s.shutdown(me, io, env),
            Op::Preparing(p) => p.shutdown(),
            Op::Exec(e) => e.shutdown(me, io),
            Op::Interactive(s) => s.shutdown(me, io),
            Op::Tunnel(t) => t.shutdown(me, io),
            Op::Forward(f) => f.shutdown(me, io),
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
            Op::Forward(f) => f.release(io),
            Op::VmSession(s) => s.release(io),
            Op::Restart(_) | Op::VmExec(_) => {}
        }
    }

    /// The process is exiting: kill what we started, without waiting.
    pub fn abandon(&mut self) {
        match self {
            Op::Exec(e) => e.abandon(),
            Op::Interactive(s) => s.abandon(),
            // A helper reading filters is killed when the operation is dropped.
            // A guest process is killed by the guest agent, which needs the loop: it runs on.
            Op::Preparing(_)
            | Op::Tunnel(_)
            | Op::Restart(_)
            | Op::VmExec(_)
            | Op::VmSession(_)
            | Op::Forward(_) => {}
        }
    }
}

/// Start the operation a decoded request names. State requests are answered by the server
/// from its cache or `state::answer`; here they are an error (a bug in the caller).
pub(crate) fn start(
    me: Token,
    call: Call,
    format: Format,
    env: &mut Env<'_>,
    io: &mut Io<'_>,
) -> Result<Started, ApiError> {
    match call {
        Call::Exec(p) if p.target == ContainerRef::Vm => {
            let (launcher, _) = target::running_vm(env.mirror, &p.application, &p.instance)?;
            let op = vm_exec::VmExec::new(launcher.id.clone(), p.argv, p.output, format, io);
            Ok(Started::Pending(Op::VmExec(op)))
        }
        Call::Exec(p) => {
            let rec = target::find(env.mirror, &p.application, &p.instance, &p.target)?;
            target::require_running(rec)?;
            target::require_sealed_binary()?;
            let start = prepare::Start {
                target: target::exec_target(rec),
                argv: p.argv,
                stdio: container::Stdio::Pipes { stdin: false },
                then: prepare::Then::Exec { output: p.output },
            };
            Ok(Started::Pending(
                match prepare::begin(me, start, format, io)? {
                    prepare::Begun::Now(op) => op,
                    prepare::Begun::Later(p) => Op::Preparing(p),
                },
            ))
        }
        Call::Interactive(p) if p.target == ContainerRef::Vm => {
            let (launcher, spec) = target::running_vm(env.mirror, &p.application, &p.instance)?;
            let vm = env
                .vms
                .get_mut(&launcher.id)
                .filter(|vm| vm.agent.connected())
                .ok_or_else(|| {
                    crate::vm::AgentError::NotConnected("it has not answered yet".into())
                })?;
            let index = match vm.terminals.iter().position(Option::is_none) {
                Some(i) => i,
                None if vm.terminals.is_empty() => {
                    return Err(vm_session::Error::NoTerminals.into());
                }
                None => {
                    return Err(vm_session::Error::TerminalsBusy {
                        ports: vm.terminals.len(),
                    }
                    .into());
                }
            };
            let port = &spec.terminals[index];
            let kind = vm_session::Kind::Terminal {
                tty: port.tty.clone(),
                argv: p.argv,
                tty_mode: p.tty,
            };
            let head = handshake::response_head(&p.accepted, &[]);
            let session = vm_session::VmSession::start(
                me,
                launcher.id.clone(),
                launcher.pid,
                &port.socket,
                kind,
                head,
                format,
                io,
            )?;
            vm.terminals[index] = Some(me);
            Ok(Started::Pending(Op::VmSession(Box::new(session))))
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
            Ok(match prepare::begin(me, start, format, io)? {
                // The op holds its 101 head and writes it when attached.
                prepare::Begun::Now(op) => Started::Upgrade(op, Vec::new()),
                prepare::Begun::Later(p) => Started::Pending(Op::Preparing(p)),
            })
        }
        Call::TcpConnect(p) if p.target == ContainerRef::Vm => {
            let (launcher, spec) = target::running_vm(env.mirror, &p.application, &p.instance)?;
            // The label's address (reached in the launcher's network namespace), else the
            // first address the guest reports.
            let ip = spec
                .address
                .or_else(|| {
                    let vm = env.vms.get_mut(&launcher.id)?;
                    vm.agent
                        .info
                        .ips
                        .iter()
                        .find_map(|a| a.split('/').next()?.parse().ok())
                })
                .ok_or(target::Error::NoVmAddress)?;
            let head = handshake::response_head(&p.accepted, &[("Deprecation", "true")]);
            let begun = tunnel::start(
                me,
                Some((launcher.pid, launcher.id.as_str())),
                tunnel::Proto::Tcp,
                SocketAddr::new(ip, p.port),
                head,
                format,
                io,
            )?;
            Ok(tunnel_started(begun))
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
            // Init containers first, so they run again before the main containers start; the
            // VM launcher with the main containers, its own way. Other launchers of the
            // instance are reached by no operation (README "Virtual machines").
            let launcher = crate::model::vm_launcher(all.iter().copied());
            let ids = |init: bool| -> Vec<String> {
                all.iter()
                    .filter(|r| r.identity.init == init && !r.is_vm())
                    .map(|r| r.id.clone())
                    .collect()
            };
            // Swarm tasks are stopped, and Swarm replaces them.
            let tasks = all
                .iter()
                .filter_map(|r| {
                    let t = r.swarm.as_ref()?;
                    Some(restart::TaskSlot {
                        id: r.id.clone(),
                        service_id: t.service_id.clone(),
                        slot: t.slot.clone(),
                    })
                })
                .collect();
            let op = restart::Restart::new(
                key,
                ids(true),
                ids(false),
                launcher.map(restart::Launcher::new),
                p.immediate,
                format,
            )
            .with_tasks(tasks);
            Ok(Started::Pending(Op::Restart(op)))
        }
        Call::Console(p) => {
            let (launcher, spec) = target::running_vm(env.mirror, &p.application, &p.instance)?;
            let vm = env
                .vms
                .get_mut(&launcher.id)
                .ok_or_else(|| vm_session::Error::Port {
                    which: "console".into(),
                    why: "its launcher has only just started".into(),
                })?;
            if let Some(old) = vm.console {
                if !p.takeover {
                    return Err(vm_session::Error::ConsoleBusy.into());
                }
                // The session that had it closes on its next turn (it sees it lost it).
                io.wake_at(old, std::time::Instant::now());
            }
            let head = handshake::response_head(&p.accepted, &[]);
            let session = vm_session::VmSession::start(
                me,
                launcher.id.clone(),
                launcher.pid,
                &spec.console,
                vm_session::Kind::Console,
                head,
                format,
                io,
            )?;
            vm.console = Some(me);
            Ok(Started::Pending(Op::VmSession(Box::new(session))))
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
