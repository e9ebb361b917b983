//! `POST .../service-instances/{si}/restart`: restart every container of the instance through
//! the Docker API, without blocking the loop, and answer 204 when Docker has finished.
//!
//! Graceful (default): `POST /containers/{id}/restart` with no `t`, so Docker uses each
//! container's own stop timeout. `no-delayed-shutdown: true`: kill, then start.
//!
//! The instance's VM launcher ([`crate::model::vm_launcher`]), graceful: the guest is asked to
//! power off through its agent (`guest-shutdown`), then the launcher must stop (the mirror
//! sees its die event) within its stop timeout (Docker's 10 s when it has none), and Docker
//! starts it again. A launcher that has not stopped by then is killed and started, as Docker's
//! own stop kills after the timeout: the guest has had that time already, and a second stop
//! timeout through `restart` would double what graceful promises. With no agent connected (or
//! one that refuses), Docker's graceful restart does it (the launcher powers the guest down on
//! its stop signal). Immediate: kill, then start, as for containers. The answer comes when
//! the launcher runs again, as for containers.
//!
//! A Docker Swarm task's container is not started again: Swarm would not know of it. It is
//! stopped (`POST /containers/{id}/stop`, or killed with `no-delayed-shutdown`), Swarm starts
//! a new task in its slot, and the restart is done when the new task's container runs here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mio::Token;
use serde::Deserialize;

use super::decode::{DecodeCtx, DecodeError, check_query};
use super::{EnvMut, Io, Progress, Reply};
use crate::docker::client::Purpose;
use crate::docker::inspect::{ContainerRecord, SwarmSlot};
use crate::docker::mirror::{Mirror, Want};
use crate::http::query::Query;
use crate::http::request::Request;
use crate::http::router::Instance;
use crate::http::{ApiError, Format, Response};
use crate::vm::AgentError;
use crate::vm::qga::Command;

/// Largest restart body: it holds one boolean. Bigger is a 413 before any parsing (the
/// connection refuses a larger declared length on the head; a chunked body is checked here).
pub const MAX_BODY: usize = crate::http::router::RESTART_BODY_LIMIT;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    // Present means a boolean: `null` is not taken for "absent".
    #[serde(
        rename = "no-delayed-shutdown",
        default,
        deserialize_with = "present_bool"
    )]
    no_delayed_shutdown: Option<bool>,
}

fn present_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    bool::deserialize(d).map(Some)
}

/// What a restart request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartParams {
    pub application: String,
    pub instance: Instance,
    /// `no-delayed-shutdown: true`: kill, then start (no graceful stop).
    pub immediate: bool,
}

impl RestartParams {
    /// The restart decoder: `site` only in the query, an optional body.
    pub fn decode(
        application: String,
        instance: Instance,
        query: &Query,
        req: &Request,
        ctx: &DecodeCtx<'_>,
    ) -> Result<RestartParams, DecodeError> {
        check_query(query, &["site"], ctx)?;
        Ok(RestartParams {
            application,
            instance,
            immediate: decode_immediate(&req.body)?,
        })
    }

    /// `<application>/<instance>`: at most one restart per instance at a time.
    pub(crate) fn key(&self) -> String {
        format!("{}/{}", self.application, self.instance)
    }
}

/// `no-delayed-shutdown` from an optional JSON/YAML body: absent or true; anything else 400.
pub fn decode_immediate(body: &[u8]) -> Result<bool, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    // Size and nesting first: the YAML parser's time grows with the depth on every token.
    crate::http::body::check(body, MAX_BODY)?;
    let body: Body =
        serde_yaml::from_slice(body).map_err(|e| DecodeError::InvalidBody(e.to_string()))?;
    match body.no_delayed_shutdown {
        None => Ok(false),
        Some(true) => Ok(true),
        Some(false) => Err(DecodeError::DelayedShutdownFalse),
    }
}

/// Why a restart is refused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Another restart of the instance runs (409).
    InProgress(String),
    /// Docker refused some containers: `<id>: <why>` each (502).
    Failed(Vec<String>),
    /// Swarm tasks stopped, but no replacement ran here in time: their container ids (504).
    NotReplaced(Vec<String>),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::InProgress(instance) => {
                write!(f, "a restart of {instance} is already in progress")
            }
            Error::Failed(failures) => write!(f, "restart failed: {}", failures.join("; ")),
            Error::NotReplaced(ids) => write!(
                f,
                "Swarm started no replacement of the stopped task {} on this node within {} s \
                 (its restart policy decides whether and when it does, and may place it on \
                 another node)",
                ids.join(", "),
                REPLACE_TIMEOUT.as_secs()
            ),
        }
    }
}

impl std::error::Error for Error {}

const STEP_RESTART: u8 = 0;
const STEP_KILL: u8 = 1;
const STEP_START: u8 = 2;
/// A Swarm task's graceful stop.
const STEP_STOP: u8 = 3;

/// How long a stopped Swarm task's replacement may take to run on this node. Swarm waits its
/// restart policy's delay (5 s by default) before it creates the new task.
pub const REPLACE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the mirror is looked at for a Swarm task's replacement.
const REPLACE_POLL: Duration = Duration::from_millis(100);

/// Docker's stop timeout for a container that sets none.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the guest agent has to refuse `guest-shutdown` (it never answers when it works).
pub const SHUTDOWN_ANSWER: Duration = Duration::from_secs(5);

const TAG_SHUTDOWN: u64 = 1;

/// The instance's VM launcher, restarted its own way when graceful.
pub(crate) struct Launcher {
    id: String,
    /// Its first process when the restart began: none running, or another one, means it
    /// stopped.
    pid: i32,
    stop_timeout: Duration,
    phase: VmPhase,
}

impl Launcher {
    pub(crate) fn new(rec: &ContainerRecord) -> Launcher {
        Launcher {
            id: rec.id.clone(),
            pid: rec.pid,
            stop_timeout: rec
                .stop_timeout
                .map_or(DEFAULT_STOP_TIMEOUT, |s| Duration::from_secs(s.into())),
            phase: VmPhase::Waiting,
        }
    }

    /// The launcher stopped since the restart began (or is gone: `None`).
    fn stopped(&self, mirror: &Mirror) -> Option<bool> {
        let rec = mirror.records().find(|r| r.id == self.id)?;
        Some(!rec.running || rec.pid != self.pid)
    }
}

#[derive(Debug, PartialEq)]
enum VmPhase {
    /// Its wave has not come.
    Waiting,
    /// The guest was asked to power off: the launcher has until `deadline` to stop.
    PoweringOff { deadline: Instant },
    /// The agent could not ask the guest: Docker's graceful restart instead.
    Refused(String),
    /// Docker does the rest; its replies settle the launcher's state.
    Docker,
}

#[derive(Debug, PartialEq)]
enum State {
    Waiting,
    /// A Swarm task's container stopped; waiting until then for a new one in its slot to run.
    Replacing(Instant),
    Done,
    Failed(String),
    /// No replacement ran in time.
    NotReplaced,
}

impl State {
    /// Whether the container's part of the restart is over, well or not.
    fn settled(&self) -> bool {
        !matches!(self, State::Waiting | State::Replacing(_))
    }
}

/// What a container's restart does after Docker's answer.
enum Next {
    Step(u8),
    /// Wait for Swarm's replacement task.
    Replacement,
}

/// The slot of a Swarm task whose container is restarted: its service's id and slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskSlot {
    pub id: String,
    pub service_id: String,
    pub slot: SwarmSlot,
}

pub(crate) struct Restart {
    /// `<application>/<instance>`: at most one restart per instance at a time.
    pub key: String,
    containers: Vec<(String, State)>,
    /// The containers that are Swarm tasks, stopped and replaced by Swarm, not restarted.
    tasks: Vec<TaskSlot>,
    /// When the loop wakes this op next to look for replacements (one timer at a time).
    poll_at: Option<Instant>,
    /// The first `inits` containers are init containers: they are restarted first, the
    /// others once Docker has restarted them all.
    inits: usize,
    second_wave_sent: bool,
    immediate: bool,
    /// The VM launcher (also among `containers`), when the restart is graceful.
    vm: Option<Launcher>,
    started: bool,
    replies: VecDeque<(Purpose, crate::docker::client::Outcome)>,
    format: Format,
    replied: bool,
}

impl Restart {
    /// `inits` then `others`: the instance's init containers and its other containers; `vm`
    /// its VM launcher, restarted with the others.
    pub(crate) fn new(
        key: String,
        inits: Vec<String>,
        others: Vec<String>,
        vm: Option<Launcher>,
        immediate: bool,
        format: Format,
    ) -> Restart {
        let n = inits.len();
        let vm_id = vm.as_ref().map(|l| l.id.clone());
        Restart {
            key,
            containers: inits
                .into_iter()
                .chain(others)
                .chain(vm_id)
                .map(|id| (id, State::Waiting))
                .collect(),
            inits: n,
            tasks: Vec::new(),
            poll_at: None,
            second_wave_sent: n == 0,
            // Immediate: the launcher is killed and started like any container.
            vm: vm.filter(|_| !immediate),
            immediate,
            started: false,
            replies: VecDeque::new(),
            format,
            replied: false,
        }
    }

    /// These of the containers are Swarm tasks.
    pub(crate) fn with_tasks(mut self, tasks: Vec<TaskSlot>) -> Restart {
        self.tasks = tasks;
        self
    }

    fn task(&self, id: &str) -> Option<&TaskSlot> {
        self.tasks.iter().find(|t| t.id == id)
    }

    /// The first step for container `id`.
    fn first_step(&self, id: &str) -> u8 {
        match (self.immediate, self.task(id).is_some()) {
            (true, _) => STEP_KILL,
            (false, true) => STEP_STOP,
            (false, false) => STEP_RESTART,
        }
    }

    pub(crate) fn docker_reply(
        &mut self,
        purpose: &Purpose,
        reply: crate::docker::client::Outcome,
    ) {
        self.replies.push_back((purpose.clone(), reply));
    }

    /// Waits for the VM launcher to stop: the server drives it again when the mirror changes.
    pub(crate) fn awaits_launcher(&self) -> bool {
        self.vm
            .as_ref()
            .is_some_and(|l| matches!(l.phase, VmPhase::PoweringOff { .. }))
    }

    /// The guest agent answered `guest-shutdown`. Silence is success (the agent treats it so);
    /// a timeout or the launcher going away also leaves it to the launcher to stop. Only an
    /// agent that cannot ask the guest sends the launcher to Docker's graceful restart.
    pub(crate) fn agent_reply(
        &mut self,
        me: Token,
        reply: crate::vm::Reply,
        io: &mut Io<'_>,
        env: &mut EnvMut<'_>,
    ) -> Progress {
        if let Some(l) = &mut self.vm
            && reply.tag == TAG_SHUTDOWN
            && matches!(l.phase, VmPhase::PoweringOff { .. })
        {
            match reply.result {
                Ok(_) | Err(AgentError::Timeout { .. } | AgentError::Gone) => {}
                Err(e) => l.phase = VmPhase::Refused(e.to_string()),
            }
        }
        self.drive(me, io, env)
    }

    pub(crate) fn drive(&mut self, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) -> Progress {
        let mut p = Progress::default();
        if !self.started {
            self.started = true;
            let first = if self.inits > 0 {
                self.inits
            } else {
                self.containers.len()
            };
            for i in 0..first {
                self.begin(i, me, io, env, &mut p);
            }
        }
        while let Some((purpose, reply)) = self.replies.pop_front() {
            let Purpose::Restart { id, step, .. } = purpose else {
                continue;
            };
            let task = self.task(&id).is_some();
            let outcome = match (step, reply) {
                (_, Err(e)) => Err(format!("docker: {e}")),
                // 304: already started or stopped; 409 on kill: it was not running — all
                // fine here.
                (STEP_RESTART, Ok((204, _))) | (STEP_START, Ok((204 | 304, _))) => Ok(None),
                // A Swarm task's container is down: Swarm replaces the task.
                (STEP_KILL, Ok((204 | 409, _))) if task => Ok(Some(Next::Replacement)),
                (STEP_STOP, Ok((204 | 304, _))) => Ok(Some(Next::Replacement)),
                (STEP_KILL, Ok((204 | 409, _))) => Ok(Some(Next::Step(STEP_START))),
                (_, Ok((status, body))) => Err(docker_message(status, &body)),
            };
            let Some(slot) = self.containers.iter_mut().find(|(i, _)| *i == id) else {
                continue;
            };
            match outcome {
                Ok(Some(Next::Replacement)) => {
                    slot.1 = State::Replacing(Instant::now() + REPLACE_TIMEOUT);
                }
                Ok(Some(Next::Step(next))) => p.wants.push(request(me, &id, next)),
                Ok(None) => {
                    env.mirror.note_api_restart(&id);
                    slot.1 = State::Done;
                }
                Err(why) => {
                    log::warn!("restart of {}: {why}", id.get(..12).unwrap_or(&id));
                    slot.1 = State::Failed(why);
                }
            }
        }
        self.check_replacements(me, io, env);
        if !self.second_wave_sent
            && self.containers[..self.inits]
                .iter()
                .all(|(_, s)| s.settled())
        {
            self.second_wave_sent = true;
            for i in self.inits..self.containers.len() {
                self.begin(i, me, io, env, &mut p);
            }
        }
        self.step_vm(me, env.mirror, &mut p);
        if self.second_wave_sent && self.containers.iter().all(|(_, s)| s.settled()) {
            if !self.replied {
                self.replied = true;
                p.reply = Some(self.reply());
            }
            p.done = true;
        }
        p
    }

    /// Start restarting container `i`: its first Docker step, or the VM launcher's power-off.
    fn begin(
        &mut self,
        i: usize,
        me: Token,
        io: &mut Io<'_>,
        env: &mut EnvMut<'_>,
        p: &mut Progress,
    ) {
        let step = self.first_step(&self.containers[i].0);
        let id = &self.containers[i].0;
        match &mut self.vm {
            Some(l) if l.id == *id => power_off(l, me, io, env),
            _ => p.wants.push(request(me, id, step)),
        }
    }

    /// The launcher's next step once the guest was asked to power off: started again when it
    /// has stopped, killed and started when its stop timeout is up, restarted by Docker when
    /// the agent could not ask the guest.
    fn step_vm(&mut self, me: Token, mirror: &Mirror, p: &mut Progress) {
        let Some(l) = &mut self.vm else { return };
        let next = match &l.phase {
            VmPhase::PoweringOff { deadline } => match l.stopped(mirror) {
                None => {
                    let why = "the launcher was removed".to_string();
                    if let Some(slot) = self.containers.iter_mut().find(|(i, _)| *i == l.id) {
                        slot.1 = State::Failed(why);
                    }
                    l.phase = VmPhase::Docker;
                    return;
                }
                Some(true) => STEP_START,
                Some(false) if Instant::now() >= *deadline => {
                    log::info!(
                        "restart of VM {}: the guest did not power off within {} s; killing its launcher",
                        short(&l.id),
                        l.stop_timeout.as_secs()
                    );
                    STEP_KILL
                }
                Some(false) => return,
            },
            VmPhase::Refused(why) => {
                log::info!(
                    "restart of VM {}: {why}; restarting its launcher through Docker",
                    short(&l.id)
                );
                STEP_RESTART
            }
            VmPhase::Waiting | VmPhase::Docker => return,
        };
        l.phase = VmPhase::Docker;
        p.wants.push(request(me, &l.id, next));
    }

    /// Stopped Swarm tasks whose replacement (another container of the same slot) now runs
    /// are done; those past their deadline have failed. While any waits, look again soon.
    fn check_replacements(&mut self, me: Token, io: &mut Io<'_>, env: &EnvMut<'_>) {
        let now = Instant::now();
        let mut waiting = false;
        for (id, state) in &mut self.containers {
            let State::Replacing(deadline) = *state else {
                continue;
            };
            let Some(task) = self.tasks.iter().find(|t| t.id == *id) else {
                continue;
            };
            let replaced = env.mirror.records().any(|r| {
                r.id != *id
                    && r.running
                    && r.swarm
                        .as_ref()
                        .is_some_and(|s| s.service_id == task.service_id && s.slot == task.slot)
            });
            if replaced {
                *state = State::Done;
            } else if now >= deadline {
                log::warn!(
                    "restart of {}: no replacement task ran within {} s",
                    id.get(..12).unwrap_or(id),
                    REPLACE_TIMEOUT.as_secs()
                );
                *state = State::NotReplaced;
            } else {
                waiting = true;
            }
        }
        if waiting && self.poll_at.is_none_or(|at| at <= now) {
            self.poll_at = Some(now + REPLACE_POLL);
            io.wake_at(me, now + REPLACE_POLL);
        }
    }

    fn reply(&mut self) -> Reply {
        let short = |id: &str| id.get(..12).unwrap_or(id).to_string();
        let failures: Vec<String> = self
            .containers
            .iter()
            .filter_map(|(id, s)| match s {
                State::Failed(why) => Some(format!("{}: {why}", short(id))),
                _ => None,
            })
            .collect();
        let not_replaced: Vec<String> = self
            .containers
            .iter()
            .filter(|(_, s)| *s == State::NotReplaced)
            .map(|(id, _)| short(id))
            .collect();
        let response = if !failures.is_empty() {
            ApiError::from(Error::Failed(failures)).into_response(self.format)
        } else if !not_replaced.is_empty() {
            ApiError::from(Error::NotReplaced(not_replaced)).into_response(self.format)
        } else {
            Response::new(204)
        };
        Reply { response }
    }
}

/// Ask the guest to power off; an agent that is not connected leaves it to Docker.
fn power_off(l: &mut Launcher, me: Token, io: &mut Io<'_>, env: &mut EnvMut<'_>) {
    let asked = match env.vms.get_mut(&l.id).filter(|vm| vm.agent.connected()) {
        None => Err(AgentError::NotConnected("no connection to it".into())),
        Some(vm) => vm.agent.submit(
            crate::vm::Request {
                owner: me,
                tag: TAG_SHUTDOWN,
                cmd: Command::Shutdown,
                timeout: SHUTDOWN_ANSWER,
            },
            io,
        ),
    };
    l.phase = match asked {
        Ok(()) => {
            let deadline = Instant::now() + l.stop_timeout;
            io.wake_at(me, deadline);
            VmPhase::PoweringOff { deadline }
        }
        Err(e) => VmPhase::Refused(e.to_string()),
    };
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn request(me: Token, id: &str, step: u8) -> Want {
    let action = match step {
        STEP_RESTART => "restart",
        STEP_KILL => "kill",
        STEP_STOP => "stop",
        _ => "start",
    };
    Want::Post {
        path: format!("/containers/{id}/{action}"),
        purpose: Purpose::Restart {
            op: me,
            id: id.to_string(),
            step,
        },
    }
}

fn docker_message(status: u16, body: &[u8]) -> String {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    format!("docker answered {status}: {msg}")
}

#[cfg(test)]
mod decode_tests {
    use super::*;
    use crate::http::request::Method;
    use crate::ops::decode::testing::{ctx, q, request, seen};

    fn decode(query: &str, body: &[u8]) -> Result<RestartParams, DecodeError> {
        let req = request(Method::Post, query, &[], body);
        RestartParams::decode(
            "shop".into(),
            Instance::parse("web-1").unwrap(),
            &q(query),
            &req,
            &ctx(),
        )
    }

    #[test]
    fn restart_decodes() {
        let p = decode("", b"").unwrap();
        assert!(!p.immediate);
        assert_eq!(p.key(), "shop/web-1");
        assert!(
            decode("site=here", b"no-delayed-shutdown: true")
                .unwrap()
                .immediate
        );
        assert!(
            decode("", br#"{"no-delayed-shutdown": true}"#)
                .unwrap()
                .immediate
        );
        assert!(!decode("", b"{}").unwrap().immediate);
    }

    #[test]
    fn restart_decode_errors() {
        let e = |query: &str, body: &[u8]| seen(decode(query, body).unwrap_err());
        assert_eq!(
            e("", b"no-delayed-shutdown: false"),
            (400, "no-delayed-shutdown must have the value true".into())
        );
        assert!(
            e("", b"no-delayed-shutdown: null")
                .1
                .starts_with("invalid body (JSON or YAML): ")
        );
        assert!(
            e("", b"x: 1")
                .1
                .starts_with("invalid body (JSON or YAML): ")
        );
        assert_eq!(
            e("force=1", b""),
            (400, "unknown query parameter \"force\"".into())
        );
        assert_eq!(e("site=x", b""), (404, "unknown site \"x\"".into()));
        assert_eq!(e("", &vec![b'a'; MAX_BODY + 1]).0, 413);
    }

    #[test]
    fn restart_errors_keep_their_status_and_message() {
        let e = ApiError::from(Error::InProgress("web-1".into()));
        assert_eq!(
            (e.status, e.message.as_str()),
            (409, "a restart of web-1 is already in progress")
        );
        let e = ApiError::from(Error::Failed(vec!["abc: gone".into(), "def: x".into()]));
        assert_eq!(
            (e.status, e.message.as_str()),
            (502, "restart failed: abc: gone; def: x")
        );
        let e = ApiError::from(Error::NotReplaced(vec!["abc".into()]));
        assert_eq!(e.status, 504);
        assert!(
            e.message.starts_with(
                "Swarm started no replacement of the stopped task abc on this node within 120 s"
            ),
            "{}",
            e.message
        );
    }
}

#[cfg(test)]
mod vm_tests {
    use super::*;
    use crate::config::Config;
    use crate::reactor::Reactor;
    use crate::vm::Vms;

    const ME: Token = Token(7);

    fn launcher(phase: VmPhase) -> Launcher {
        Launcher {
            id: "vm".into(),
            pid: 42,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            phase,
        }
    }

    /// The Docker requests of one turn: `<action> <id>`.
    fn turn(r: &mut Restart, vms: &mut Vms) -> (Vec<String>, Option<u16>) {
        let (mut reactor, cfg) = (Reactor::new(1).unwrap(), Config::default());
        let mut io = Io::new(&mut reactor, &cfg);
        let mut mirror = Mirror::new();
        let mut env = EnvMut {
            mirror: &mut mirror,
            vms,
        };
        let p = r.drive(ME, &mut io, &mut env);
        let wants = p
            .wants
            .into_iter()
            .map(|w| match w {
                Want::Post { path, .. } => {
                    let mut parts = path.trim_start_matches("/containers/").split('/');
                    let id = parts.next().unwrap_or_default().to_string();
                    format!("{} {id}", parts.next().unwrap_or_default())
                }
                _ => String::new(),
            })
            .collect();
        (wants, p.reply.map(|r| r.response.status))
    }

    fn done(r: &mut Restart, id: &str, step: u8, status: u16) {
        let purpose = Purpose::Restart {
            op: ME,
            id: id.into(),
            step,
        };
        r.docker_reply(&purpose, Ok((status, Vec::new())));
    }

    #[test]
    fn a_vm_without_an_agent_is_restarted_by_docker_after_the_init_containers() {
        let mut vms = Vms::default();
        let mut r = Restart::new(
            "a/s-1".into(),
            vec!["init".into()],
            vec!["main".into()],
            Some(launcher(VmPhase::Waiting)),
            false,
            Format::Json,
        );
        assert_eq!(turn(&mut r, &mut vms), (vec!["restart init".into()], None));
        done(&mut r, "init", STEP_RESTART, 204);
        // No agent connected: Docker's graceful restart (its stop signal powers the guest off).
        assert_eq!(
            turn(&mut r, &mut vms),
            (vec!["restart main".into(), "restart vm".into()], None)
        );
        done(&mut r, "main", STEP_RESTART, 204);
        done(&mut r, "vm", STEP_RESTART, 204);
        assert_eq!(turn(&mut r, &mut vms), (vec![], Some(204)));
    }

    #[test]
    fn no_delayed_shutdown_kills_and_starts_the_launcher_like_a_container() {
        let mut vms = Vms::default();
        let mut r = Restart::new(
            "a/s-1".into(),
            vec![],
            vec![],
            Some(launcher(VmPhase::Waiting)),
            true,
            Format::Json,
        );
        assert!(r.vm.is_none());
        assert_eq!(turn(&mut r, &mut vms), (vec!["kill vm".into()], None));
        done(&mut r, "vm", STEP_KILL, 204);
        assert_eq!(turn(&mut r, &mut vms), (vec!["start vm".into()], None));
        done(&mut r, "vm", STEP_START, 204);
        assert_eq!(turn(&mut r, &mut vms), (vec![], Some(204)));
    }

    #[test]
    fn a_launcher_removed_while_powering_off_fails_the_restart() {
        let mut vms = Vms::default();
        let past = Instant::now() - Duration::from_millis(1);
        let mut r = Restart::new(
            "a/s-1".into(),
            vec![],
            vec![],
            Some(launcher(VmPhase::PoweringOff { deadline: past })),
            false,
            Format::Json,
        );
        r.started = true;
        r.second_wave_sent = true;
        assert!(r.awaits_launcher());
        // The mirror has no record of it: removed while powering off.
        let (wants, reply) = turn(&mut r, &mut vms);
        assert_eq!(wants, Vec::<String>::new());
        assert_eq!(reply, Some(502));
        assert!(!r.awaits_launcher());
    }
}
