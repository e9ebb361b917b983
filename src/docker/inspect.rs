//! Docker's container inspection (`GET /containers/{id}/json`) and listing (`GET /containers/json`)
//! reduced to the compact record the mirror keeps for each container supd manages.
//!
//! Only the fields the API view and the operations need are deserialized; every field may be
//! missing or `null` (Docker versions differ and Go marshals empty slices and maps as `null`).
//! Which containers are managed, and as what, is decided by their labels alone: see [`identity`]
//! and, for VM launchers, [`vm_spec`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

use super::nullable;

/// Largest inspect document accepted. Real ones are a few KiB; huge environments or label sets
/// stay far below this, and the cap keeps a hostile or broken engine from exhausting memory.
pub const MAX_INSPECT_LEN: usize = 4 << 20;
/// Largest container list accepted (about 2 KiB per container, so tens of thousands of them).
pub const MAX_LIST_LEN: usize = 64 << 20;
/// Longest name segment the API allows (a DNS label).
pub const MAX_NAME_LEN: usize = 63;
/// Longest `io.supd.application-version` kept; longer values are not a version but a mistake.
pub const MAX_VERSION_LEN: usize = 256;

pub const LABEL_APPLICATION: &str = "io.supd.application";
pub const LABEL_SERVICE: &str = "io.supd.service";
pub const LABEL_INSTANCE: &str = "io.supd.instance";
pub const LABEL_CONTAINER: &str = "io.supd.container";
pub const LABEL_INIT: &str = "io.supd.init-container";
pub const LABEL_VERSION: &str = "io.supd.application-version";
/// `true`: the container is the instance's VM launcher (QEMU), not one of its containers.
pub const LABEL_VM: &str = "io.supd.vm-container";
pub const LABEL_VM_AGENT: &str = "io.supd.vm.agent";
pub const LABEL_VM_CONSOLE: &str = "io.supd.vm.console";
pub const LABEL_VM_TERMINALS: &str = "io.supd.vm.terminals";
pub const LABEL_VM_ADDRESS: &str = "io.supd.vm.address";
pub const DEFAULT_VM_AGENT: &str = "/run/supd-vm/qga.sock";
pub const DEFAULT_VM_CONSOLE: &str = "/run/supd-vm/console.sock";
pub const DEFAULT_VM_TERMINALS: &str = "/run/supd-vm/ttyS1.sock=ttyS1";
/// Longest socket path: `sun_path` holds 108 bytes with the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;
/// Most spare terminal ports a VM may declare.
pub const MAX_VM_TERMINALS: usize = 16;
/// Longest guest terminal name (`ttyS1`, `hvc1`, `ttyAMA1`...).
pub const MAX_TTY_NAME: usize = 32;
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
pub const COMPOSE_NUMBER: &str = "com.docker.compose.container-number";
pub const COMPOSE_ONEOFF: &str = "com.docker.compose.oneoff";
/// `docker stack deploy`'s stack name, on the services it creates and their containers.
pub const STACK_NAMESPACE: &str = "com.docker.stack.namespace";
/// Labels the Swarm agent writes on every task's container, over any label of the same name
/// the service asked for (so a service cannot forge them; a plain `docker run` can, and is
/// then read as the task it claims to be).
pub const SWARM_SERVICE_ID: &str = "com.docker.swarm.service.id";
pub const SWARM_SERVICE_NAME: &str = "com.docker.swarm.service.name";
pub const SWARM_TASK_ID: &str = "com.docker.swarm.task.id";
pub const SWARM_TASK_NAME: &str = "com.docker.swarm.task.name";
pub const SWARM_NODE_ID: &str = "com.docker.swarm.node.id";

#[derive(Debug)]
pub enum Error {
    /// The document is larger than the cap for its kind.
    TooLarge { len: usize, max: usize },
    /// Not JSON, or JSON of the wrong shape.
    Json(serde_json::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooLarge { len, max } => {
                write!(f, "container document of {len} bytes exceeds {max} bytes")
            }
            Error::Json(e) => write!(f, "malformed container document: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::TooLarge { .. } => None,
            Error::Json(e) => Some(e),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(e)
    }
}

/// Where a container belongs in the API: `<application>/<service>-<instance>`, container `<container>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub application: String,
    pub service: String,
    pub instance: u32,
    pub container: String,
    pub init: bool,
    pub application_version: Option<String>,
}

/// Label contract: Compose labels map: application = `com.docker.compose.project`, service =
/// `com.docker.compose.service`, N = `com.docker.compose.container-number`, container name = the
/// service name. Docker Swarm tasks map as [`swarm_task`] reads them: application =
/// `com.docker.stack.namespace`, service = the Swarm service's name without the `<stack>_`
/// prefix `docker stack deploy` gives it, N = the task's slot (1 for a global service's task:
/// one per node, and supd only sees its own node), container name = the service name. supd's
/// own labels take precedence where present, field by field: `io.supd.application`,
/// `io.supd.service`, `io.supd.instance` (N), `io.supd.container`,
/// `io.supd.init-container=true`, `io.supd.application-version`.
///
/// A container with both Swarm task labels and Compose labels is read as the Swarm task: the
/// Swarm agent wrote its labels (a service's own labels cannot override them), while Compose
/// labels on a task can only have come from the service's definition, copied alike onto every
/// replica, so they cannot tell the replicas apart. The Compose labels are then ignored, not
/// mixed in field by field.
///
/// Application, service and container names must match `^[a-z0-9]([a-z0-9-]*[a-z0-9])?$` (at most
/// 63 characters) and N must be a positive decimal integer without sign or leading zeros (so that
/// `web-1` names exactly one instance); otherwise the container is not managed (`None`). A label
/// that is present but invalid makes the container unmanaged rather than falling back to the
/// Compose label: a typo should be visible, not silently reinterpreted. So do Swarm task labels
/// that do not fit together ([`swarm_task`]).
///
/// Compose one-off containers (`docker compose run`, `com.docker.compose.oneoff=True`) reuse
/// container numbers of their service's real instances, so they are not managed unless
/// `io.supd.instance` says which instance they are.
pub fn identity(labels: &HashMap<String, String>) -> Option<Identity> {
    let (application, service, number) = match swarm_task(labels) {
        Some(Ok(task)) => (
            labels
                .get(LABEL_APPLICATION)
                .or_else(|| labels.get(STACK_NAMESPACE))?,
            labels.get(LABEL_SERVICE).cloned().unwrap_or(task.service),
            match labels.get(LABEL_INSTANCE) {
                Some(n) => parse_instance_number(n)?,
                None => task.slot.number(),
            },
        ),
        Some(Err(_)) => return None,
        None => {
            let pick = |own: &str, compose: &str| labels.get(own).or_else(|| labels.get(compose));
            let application = pick(LABEL_APPLICATION, COMPOSE_PROJECT)?;
            let service = pick(LABEL_SERVICE, COMPOSE_SERVICE)?;
            let number = pick(LABEL_INSTANCE, COMPOSE_NUMBER)?;
            if !labels.contains_key(LABEL_INSTANCE)
                && labels
                    .get(COMPOSE_ONEOFF)
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            {
                return None;
            }
            (application, service.clone(), parse_instance_number(number)?)
        }
    };
    let container = labels.get(LABEL_CONTAINER).unwrap_or(&service);
    if !is_name(application) || !is_name(&service) || !is_name(container) {
        return None;
    }
    let application_version = labels
        .get(LABEL_VERSION)
        .filter(|v| !v.is_empty() && v.len() <= MAX_VERSION_LEN)
        .cloned();
    Some(Identity {
        application: application.clone(),
        container: container.clone(),
        service,
        instance: number,
        init: labels.get(LABEL_INIT).is_some_and(|v| v == "true"),
        application_version,
    })
}

/// A Swarm task's container, as its labels describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmTask {
    /// The Swarm service's id: names, unlike ids, can be reused by a later service.
    pub service_id: String,
    /// The service name without the `<stack>_` prefix of `docker stack deploy`.
    pub service: String,
    pub slot: SwarmSlot,
    pub task_id: String,
    pub node_id: String,
}

/// Where in its service a task runs: the tasks of one slot replace one another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SwarmSlot {
    /// A replicated service's slot (1, 2, ...).
    Replica(u32),
    /// A global service's task on this node (its id): one per node.
    Node(String),
}

impl SwarmSlot {
    /// The instance number: the slot, or 1 for a global service (one task per node).
    pub fn number(&self) -> u32 {
        match self {
            SwarmSlot::Replica(n) => *n,
            SwarmSlot::Node(_) => 1,
        }
    }
}

/// Why a container's Swarm labels are refused; the container is then not managed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmLabelError(pub &'static str);

/// `None`: not a Swarm task (no `com.docker.swarm.task.name`). Otherwise the task its labels
/// describe: the Swarm agent names a task `<service>.<slot>.<task id>`, or
/// `<service>.<node id>.<task id>` for a global service, and writes that, the service's name
/// and id, the task's id and the node's id as labels. They must all be present, non-empty and
/// agree (the name made of the service name, a slot or this node's id, and the task id),
/// or the container is refused: the Swarm agent never writes anything else.
pub fn swarm_task(
    labels: &HashMap<String, String>,
) -> Option<std::result::Result<SwarmTask, SwarmLabelError>> {
    let name = labels.get(SWARM_TASK_NAME)?;
    Some(parse_swarm_task(name, labels))
}

fn parse_swarm_task(
    name: &str,
    labels: &HashMap<String, String>,
) -> std::result::Result<SwarmTask, SwarmLabelError> {
    let get = |key: &str, what: &'static str| {
        labels
            .get(key)
            .filter(|v| !v.is_empty())
            .ok_or(SwarmLabelError(what))
    };
    let service_name = get(SWARM_SERVICE_NAME, "no com.docker.swarm.service.name")?;
    let service_id = get(SWARM_SERVICE_ID, "no com.docker.swarm.service.id")?;
    let task_id = get(SWARM_TASK_ID, "no com.docker.swarm.task.id")?;
    let node_id = get(SWARM_NODE_ID, "no com.docker.swarm.node.id")?;
    let slot = name
        .strip_prefix(service_name.as_str())
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_suffix(task_id.as_str()))
        .and_then(|rest| rest.strip_suffix('.'))
        .ok_or(SwarmLabelError(
            "the task name is not <service>.<slot>.<task id>",
        ))?;
    let slot = if slot == node_id {
        SwarmSlot::Node(node_id.clone())
    } else {
        SwarmSlot::Replica(
            parse_instance_number(slot)
                .ok_or(SwarmLabelError("the task's slot is not a positive number"))?,
        )
    };
    // `docker stack deploy` names the services of stack `s` `s_<name>`.
    let service = labels
        .get(STACK_NAMESPACE)
        .and_then(|ns| service_name.strip_prefix(ns.as_str())?.strip_prefix('_'))
        .unwrap_or(service_name);
    Ok(SwarmTask {
        service_id: service_id.clone(),
        service: service.to_string(),
        slot,
        task_id: task_id.clone(),
        node_id: node_id.clone(),
    })
}

/// Whether `s` is a name the API accepts: `^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`, 1 to 63 characters.
pub fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b.iter().all(|c| ok(c) || *c == b'-')
        && b.first().is_some_and(ok)
        && b.last().is_some_and(ok)
}

/// A positive decimal integer in canonical form (no sign, no leading zero).
pub fn parse_instance_number(s: &str) -> Option<u32> {
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Whether a container with these labels is managed: it has an identity ([`identity`]) and, if
/// it is a VM launcher, valid VM labels ([`vm_spec`]).
pub fn is_managed(labels: &HashMap<String, String>) -> bool {
    identity(labels).is_some() && vm_spec(labels).is_ok()
}

/// How supd reaches a service instance's virtual machine: unix sockets that QEMU serves inside
/// its launcher container, reached through the launcher's root (`/proc/<pid>/root/...`),
/// never through a path on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Guest agent socket path inside the launcher (label io.supd.vm.agent, default /run/supd-vm/qga.sock)
    pub agent: String,
    /// Serial console socket (io.supd.vm.console, default /run/supd-vm/console.sock)
    pub console: String,
    /// Spare terminal ports (io.supd.vm.terminals, "SOCKET=GUEST_TTY,...", default "/run/supd-vm/ttyS1.sock=ttyS1")
    pub terminals: Vec<VmTerminal>,
    /// io.supd.vm.address, when set
    pub address: Option<IpAddr>,
}

/// A spare serial port of the VM: the socket QEMU serves for it in the launcher, and the name
/// of its device in the guest (`/dev/<tty>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmTerminal {
    pub socket: String,
    pub tty: String,
}

/// Why a container's VM labels are refused; the container is then not managed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmLabelError {
    /// `io.supd.vm-container` is neither `true` nor `false`.
    Flag(String),
    /// A launcher cannot also be an init container.
    Init,
    /// A socket path that is not a clean absolute path of at most 107 bytes.
    SocketPath {
        label: &'static str,
        path: String,
        why: &'static str,
    },
    /// An `io.supd.vm.terminals` entry that is not `SOCKET=GUEST_TTY` with a plain tty name.
    Terminal {
        entry: String,
        why: &'static str,
    },
    TooManyTerminals(usize),
    /// Two of the agent, console and terminal sockets are the same path.
    DuplicateSocket(String),
    DuplicateTty(String),
    /// `io.supd.vm.address` is not a literal IPv4 or IPv6 address.
    Address(String),
}

impl fmt::Display for VmLabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmLabelError::Flag(v) => write!(f, "{LABEL_VM} must be true or false (got {v:?})"),
            VmLabelError::Init => write!(f, "{LABEL_VM} and {LABEL_INIT} cannot both be true"),
            VmLabelError::SocketPath { label, path, why } => {
                write!(f, "{label}: socket path {path:?} {why}")
            }
            VmLabelError::Terminal { entry, why } => {
                write!(f, "{LABEL_VM_TERMINALS}: entry {entry:?} {why}")
            }
            VmLabelError::TooManyTerminals(n) => write!(
                f,
                "{LABEL_VM_TERMINALS}: {n} terminals, at most {MAX_VM_TERMINALS} are allowed"
            ),
            VmLabelError::DuplicateSocket(p) => write!(f, "socket path {p:?} is used twice"),
            VmLabelError::DuplicateTty(t) => {
                write!(
                    f,
                    "{LABEL_VM_TERMINALS}: guest terminal {t:?} is listed twice"
                )
            }
            VmLabelError::Address(a) => {
                write!(
                    f,
                    "{LABEL_VM_ADDRESS} must be an IPv4 or IPv6 address (got {a:?})"
                )
            }
        }
    }
}

impl std::error::Error for VmLabelError {}

/// The VM contract: `io.supd.vm-container=true` makes the container its instance's VM launcher,
/// with the sockets of `io.supd.vm.agent`, `io.supd.vm.console` and `io.supd.vm.terminals`
/// (`SOCKET=GUEST_TTY,...`, possibly empty: no spare port) and the address of
/// `io.supd.vm.address`, each defaulting as [`VmSpec`] says. `Ok(None)`: not a launcher
/// (the label absent or `false`; the `io.supd.vm.*` labels are then ignored).
///
/// The launcher is untrusted input: its socket paths are opened under its root and its tty
/// names go into a shell command line in the guest. So socket paths must be absolute, at most
/// 107 bytes, without NUL, `.`, `..` or empty components; tty names `^[A-Za-z0-9]{1,32}$`; at
/// most 16 terminals; no socket path used twice (agent, console and terminals included), no
/// tty listed twice; the address a literal IP address. As for [`identity`], a present but
/// invalid label makes the container unmanaged rather than being read as its default, and
/// so does a flag other than `true`/`false` or a launcher that also says it is an init
/// container.
pub fn vm_spec(
    labels: &HashMap<String, String>,
) -> std::result::Result<Option<VmSpec>, VmLabelError> {
    match labels.get(LABEL_VM).map(String::as_str) {
        None | Some("false") => return Ok(None),
        Some("true") => {}
        Some(other) => return Err(VmLabelError::Flag(other.to_string())),
    }
    if labels.get(LABEL_INIT).is_some_and(|v| v == "true") {
        return Err(VmLabelError::Init);
    }
    let socket = |label: &'static str, default: &str| {
        let path = labels.get(label).map_or(default, String::as_str);
        check_socket_path(path)
            .map(|()| path.to_string())
            .map_err(|why| VmLabelError::SocketPath {
                label,
                path: path.to_string(),
                why,
            })
    };
    let agent = socket(LABEL_VM_AGENT, DEFAULT_VM_AGENT)?;
    let console = socket(LABEL_VM_CONSOLE, DEFAULT_VM_CONSOLE)?;
    let terminals = parse_terminals(
        labels
            .get(LABEL_VM_TERMINALS)
            .map_or(DEFAULT_VM_TERMINALS, String::as_str),
    )?;
    if agent == console {
        return Err(VmLabelError::DuplicateSocket(agent));
    }
    let mut sockets: Vec<&str> = vec![&agent, &console];
    for t in &terminals {
        if sockets.contains(&t.socket.as_str()) {
            return Err(VmLabelError::DuplicateSocket(t.socket.clone()));
        }
        sockets.push(&t.socket);
    }
    let address = match labels.get(LABEL_VM_ADDRESS) {
        None => None,
        Some(a) => Some(
            a.parse::<IpAddr>()
                .map_err(|_| VmLabelError::Address(a.clone()))?,
        ),
    };
    Ok(Some(VmSpec {
        agent,
        console,
        terminals,
        address,
    }))
}

/// `SOCKET=GUEST_TTY,...`; the empty string is no terminal at all.
fn parse_terminals(list: &str) -> std::result::Result<Vec<VmTerminal>, VmLabelError> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<&str> = list.split(',').collect();
    if entries.len() > MAX_VM_TERMINALS {
        return Err(VmLabelError::TooManyTerminals(entries.len()));
    }
    let mut terminals: Vec<VmTerminal> = Vec::with_capacity(entries.len());
    for entry in entries {
        let bad = |why| VmLabelError::Terminal {
            entry: entry.to_string(),
            why,
        };
        // The tty name has no '=', so the last one separates; a socket path may hold one.
        let (socket, tty) = entry
            .rsplit_once('=')
            .ok_or_else(|| bad("is not SOCKET=GUEST_TTY"))?;
        check_socket_path(socket).map_err(bad)?;
        if !is_tty_name(tty) {
            return Err(bad(
                "does not name a guest terminal matching ^[A-Za-z0-9]{1,32}$",
            ));
        }
        if terminals.iter().any(|t| t.tty == tty) {
            return Err(VmLabelError::DuplicateTty(tty.to_string()));
        }
        terminals.push(VmTerminal {
            socket: socket.to_string(),
            tty: tty.to_string(),
        });
    }
    Ok(terminals)
}

/// A socket path supd may open under a launcher's root: absolute, at most 107 bytes (a unix
/// socket address), no NUL, and only plain components (no `.`, `..` or empty one), so that
/// it names the place it appears to name. Why it is refused otherwise.
pub fn check_socket_path(path: &str) -> std::result::Result<(), &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("is not absolute");
    };
    if path.len() > MAX_SOCKET_PATH {
        return Err("is longer than 107 bytes");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    for component in rest.split('/') {
        match component {
            "" => return Err("has an empty component"),
            "." | ".." => return Err("has a '.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

/// A guest terminal name as the VM contract allows it: `^[A-Za-z0-9]{1,32}$`. It is put into a
/// shell command line in the guest (`/dev/<tty>`), so nothing else is accepted.
pub fn is_tty_name(s: &str) -> bool {
    (1..=MAX_TTY_NAME).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_alphanumeric())
}

/// What the mirror keeps of one managed container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRecord {
    /// Full 64-hex id.
    pub id: String,
    /// Docker's name without the leading '/'.
    pub name: String,
    pub identity: Identity,
    /// `State.Status`: created, running, paused, restarting, removing, exited or dead.
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    /// Host PID of the container's first process; 0 when it has none.
    pub pid: i32,
    pub exit_code: i64,
    /// `State.StartedAt` as Docker gives it; `None` when never started (Go's zero time).
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Docker's own count, which resets on a manual start; the mirror keeps its own counters.
    pub restart_count: u32,
    /// `State.Health.Status` (starting, healthy, unhealthy); `None` without a health check.
    pub health: Option<String>,
    /// Whether the health log Docker keeps (its last 5 probes) shows a passing probe. Docker
    /// turns a container healthy on its first passing probe, so this means "was healthy at
    /// least once"; its absence proves nothing once older probes have rolled out of the log.
    pub health_passed: bool,
    pub user: String,
    pub env: Vec<String>,
    pub working_dir: String,
    /// `HostConfig.NetworkMode`: default, bridge, host, none, `container:<id>` or a network name.
    pub network_mode: String,
    /// Attached networks, sorted by name.
    pub networks: Vec<Network>,
    /// Published ports (bindings that exist), sorted by port, protocol, host address, host port.
    pub ports: Vec<Port>,
    /// `Mounts` plus the tmpfs mounts of `HostConfig.Tmpfs`, which Docker does not list there.
    pub mounts: Vec<Mount>,
    /// `HostConfig.Devices[].PathInContainer`.
    pub devices: Vec<String>,
    /// Device ids of device requests with the `gpu` capability.
    pub gpus: Vec<String>,
    /// The other capabilities of those requests joined with ", " (e.g. "utility, compute").
    pub nvidia_capabilities: Option<String>,
    /// `Config.StopTimeout` in seconds, when set.
    pub stop_timeout: Option<u32>,
    /// `Config.Image`: the image as the container was created from it (name or id).
    pub image: String,
    /// `com.docker.compose.project`, whose `<project>_` prefix Compose puts on volume names;
    /// for a Swarm task `com.docker.stack.namespace`, which `docker stack deploy` puts there.
    pub compose_project: Option<String>,
    /// `Created`, as Docker gives it (RFC 3339 UTC, nanoseconds): see [`created_order`].
    pub created: String,
    /// Set when the container is a Swarm task's (see [`swarm_task`]).
    pub swarm: Option<SwarmTask>,
    /// Set when the container is a VM launcher (`io.supd.vm-container=true`): see [`vm_spec`].
    pub vm: Option<VmSpec>,
}

impl ContainerRecord {
    /// Whether the container is a VM launcher rather than one of its instance's containers.
    pub fn is_vm(&self) -> bool {
        self.vm.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub ip: Option<IpAddr>,
    pub prefix_len: u8,
    pub ipv6: Option<IpAddr>,
    pub ipv6_prefix_len: u8,
    pub gateway: Option<IpAddr>,
    /// Names Docker's embedded DNS resolves to this container on this network (besides its name).
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port {
    pub port: u16,
    /// tcp, udp or sctp.
    pub protocol: String,
    /// `None` when Docker left the host address empty.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Volume,
    Tmpfs,
    Bind,
    /// npipe, cluster or whatever later engines add.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountKind,
    /// Volume name, for volumes.
    pub name: Option<String>,
    /// Host path, for binds and local volumes.
    pub source: String,
    pub destination: String,
    /// tmpfs size as Docker has it: the `size=` option text ("64m") or `TmpfsOptions.SizeBytes`.
    pub size: Option<String>,
    pub read_only: bool,
}

/// `None` when the container is not managed (no identity).
pub fn parse(json: &[u8]) -> Result<Option<ContainerRecord>> {
    if json.len() > MAX_INSPECT_LEN {
        return Err(Error::TooLarge {
            len: json.len(),
            max: MAX_INSPECT_LEN,
        });
    }
    let raw: RawInspect = serde_json::from_slice(json)?;
    let Some(identity) = identity(&raw.config.labels) else {
        return Ok(None);
    };
    let Ok(vm) = vm_spec(&raw.config.labels) else {
        return Ok(None);
    };
    Ok(Some(record(raw, identity, vm)))
}

/// The ids of the entries of `GET /containers/json`, each with whether its labels make it
/// managed, so that only managed containers get inspected.
pub fn list_entry_ids(json: &[u8]) -> Result<Vec<(String, bool)>> {
    if json.len() > MAX_LIST_LEN {
        return Err(Error::TooLarge {
            len: json.len(),
            max: MAX_LIST_LEN,
        });
    }
    let list: Vec<RawListEntry> = serde_json::from_slice(json)?;
    Ok(list
        .into_iter()
        .filter(|e| !e.id.is_empty())
        .map(|e| {
            let managed = is_managed(&e.labels);
            (e.id, managed)
        })
        .collect())
}

/// Go's zero `time.Time`, which Docker reports for "never".
fn is_zero_time(s: &str) -> bool {
    s.is_empty() || s.starts_with("0001-01-01T00:00:00")
}

fn record(raw: RawInspect, identity: Identity, vm: Option<VmSpec>) -> ContainerRecord {
    let state = raw.state;
    let health = state
        .health
        .map(|h| (h.status, h.log.iter().any(|p| p.exit_code == 0)));
    let time = |s: String| (!is_zero_time(&s)).then_some(s);
    let swarm = swarm_task(&raw.config.labels).and_then(|t| t.ok());
    let compose_project = if swarm.is_some() {
        raw.config.labels.get(STACK_NAMESPACE).cloned()
    } else {
        raw.config.labels.get(COMPOSE_PROJECT).cloned()
    };

    let mut networks: Vec<Network> = raw
        .network_settings
        .networks
        .into_iter()
        .map(|(name, n)| Network {
            name,
            ip: parse_ip(&n.ip_address),
            prefix_len: n.ip_prefix_len,
            ipv6: parse_ip(&n.global_ipv6_address),
            ipv6_prefix_len: n.global_ipv6_prefix_len,
            gateway: parse_ip(&n.gateway),
            aliases: n.aliases,
        })
        .collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));

    let mut ports = Vec::new();
    for (spec, bindings) in raw.network_settings.ports {
        let Some((port, protocol)) = parse_port_spec(&spec) else {
            continue;
        };
        for b in bindings {
            let Ok(host_port) = b.host_port.parse::<u16>() else {
                continue;
            };
            ports.push(Port {
                port,
                protocol: protocol.to_string(),
                host_ip: parse_ip(&b.host_ip),
                host_port,
            });
        }
    }
    ports.sort();
    ports.dedup();

    let tmpfs_sizes: HashMap<&str, u64> = raw
        .host_config
        .mounts
        .iter()
        .filter_map(|m| Some((m.target.as_str(), m.tmpfs_options.as_ref()?.size_bytes?)))
        .collect();
    let mut mounts: Vec<Mount> = raw
        .mounts
        .iter()
        .map(|m| {
            let kind = match m.kind.as_str() {
                "volume" => MountKind::Volume,
                "tmpfs" => MountKind::Tmpfs,
                "bind" => MountKind::Bind,
                _ => MountKind::Other,
            };
            let size = match kind {
                MountKind::Tmpfs => tmpfs_sizes
                    .get(m.destination.as_str())
                    .filter(|s| **s > 0)
                    .map(u64::to_string),
                _ => None,
            };
            Mount {
                kind,
                name: Some(m.name.clone()).filter(|n| !n.is_empty()),
                source: m.source.clone(),
                destination: m.destination.clone(),
                size,
                read_only: m.rw == Some(false),
            }
        })
        .collect();
    for (destination, options) in &raw.host_config.tmpfs {
        if mounts.iter().any(|m| &m.destination == destination) {
            continue;
        }
        let opts = options.split(',');
        let size = opts
            .clone()
            .find_map(|o| o.strip_prefix("size="))
            .filter(|s| !s.is_empty());
        mounts.push(Mount {
            kind: MountKind::Tmpfs,
            name: None,
            source: String::new(),
            destination: destination.clone(),
            size: size.map(str::to_string),
            read_only: opts.into_iter().any(|o| o == "ro"),
        });
    }

    let mut gpus = Vec::new();
    let mut caps: Vec<String> = Vec::new();
    for req in &raw.host_config.device_requests {
        if !req
            .capabilities
            .iter()
            .any(|set| set.iter().any(|c| c == "gpu"))
        {
            continue;
        }
        gpus.extend(req.device_ids.iter().cloned());
        for c in req.capabilities.iter().flatten() {
            if c != "gpu" && !caps.contains(c) {
                caps.push(c.clone());
            }
        }
    }
    let gpu_requested = raw
        .host_config
        .device_requests
        .iter()
        .any(|r| r.capabilities.iter().flatten().any(|c| c == "gpu"));

    ContainerRecord {
        id: raw.id,
        name: raw.name.strip_prefix('/').unwrap_or(&raw.name).to_string(),
        identity,
        status: state.status,
        running: state.running,
        paused: state.paused,
        restarting: state.restarting,
        pid: state.pid,
        exit_code: state.exit_code,
        started_at: time(state.started_at),
        finished_at: time(state.finished_at),
        restart_count: raw.restart_count,
        health_passed: health.as_ref().is_some_and(|h| h.1),
        health: health.map(|h| h.0).filter(|s| !s.is_empty()),
        user: raw.config.user,
        env: raw.config.env,
        working_dir: raw.config.working_dir,
        network_mode: raw.host_config.network_mode,
        networks,
        ports,
        mounts,
        devices: raw
            .host_config
            .devices
            .into_iter()
            .map(|d| d.path_in_container)
            .filter(|p| !p.is_empty())
            .collect(),
        gpus,
        nvidia_capabilities: (gpu_requested && !caps.is_empty()).then(|| caps.join(", ")),
        stop_timeout: raw.config.stop_timeout,
        image: raw.config.image,
        compose_project,
        created: raw.created,
        swarm,
        vm,
    }
}

/// A key that orders Docker's `Created` times (`2024-05-01T10:00:00.123456789Z`): the seconds
/// as text (fixed width) and the fraction as nanoseconds, since Go drops trailing zeros from
/// the fraction and the texts alone would not compare. Unreadable times sort first.
pub fn created_order(created: &str) -> (&str, u32) {
    let Some(t) = created.strip_suffix('Z') else {
        return ("", 0);
    };
    let (secs, fraction) = t.split_once('.').unwrap_or((t, ""));
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return ("", 0);
    }
    let nanos = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    (secs, nanos)
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// "80/tcp" -> (80, "tcp"); Docker omits the protocol for tcp in some places.
fn parse_port_spec(s: &str) -> Option<(u16, &str)> {
    let (port, protocol) = s.split_once('/').unwrap_or((s, "tcp"));
    Some((port.parse().ok()?, protocol))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawInspect {
    #[serde(deserialize_with = "nullable")]
    id: String,
    #[serde(deserialize_with = "nullable")]
    name: String,
    #[serde(deserialize_with = "nullable")]
    created: String,
    #[serde(deserialize_with = "nullable")]
    restart_count: u32,
    #[serde(deserialize_with = "nullable")]
    state: RawState,
    #[serde(deserialize_with = "nullable")]
    config: RawConfig,
    #[serde(deserialize_with = "nullable")]
    host_config: RawHostConfig,
    #[serde(deserialize_with = "nullable")]
    network_settings: RawNetworkSettings,
    #[serde(deserialize_with = "nullable")]
    mounts: Vec<RawMount>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawState {
    #[serde(deserialize_with = "nullable")]
    status: String,
    #[serde(deserialize_with = "nullable")]
    running: bool,
    #[serde(deserialize_with = "nullable")]
    paused: bool,
    #[serde(deserialize_with = "nullable")]
    restarting: bool,
    #[serde(deserialize_with = "nullable")]
    pid: i32,
    #[serde(deserialize_with = "nullable")]
    exit_code: i64,
    #[serde(deserialize_with = "nullable")]
    started_at: String,
    #[serde(deserialize_with = "nullable")]
    finished_at: String,
    health: Option<RawHealth>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawHealth {
    #[serde(deserialize_with = "nullable")]
    status: String,
    #[serde(deserialize_with = "nullable")]
    log: Vec<RawProbe>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawProbe {
    /// Absent reads as a failure: only a reported 0 counts as a pass.
    #[serde(deserialize_with = "nullable_exit")]
    exit_code: i64,
}

fn nullable_exit<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    Ok(Option::<i64>::deserialize(d)?.unwrap_or(-1))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawConfig {
    #[serde(deserialize_with = "nullable")]
    user: String,
    #[serde(deserialize_with = "nullable")]
    env: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    working_dir: String,
    #[serde(deserialize_with = "nullable")]
    image: String,
    #[serde(deserialize_with = "nullable")]
    labels: HashMap<String, String>,
    stop_timeout: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawHostConfig {
    #[serde(deserialize_with = "nullable")]
    network_mode: String,
    #[serde(deserialize_with = "nullable")]
    tmpfs: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    mounts: Vec<RawHostMount>,
    #[serde(deserialize_with = "nullable")]
    devices: Vec<RawDevice>,
    #[serde(deserialize_with = "nullable")]
    device_requests: Vec<RawDeviceRequest>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawHostMount {
    #[serde(deserialize_with = "nullable")]
    target: String,
    tmpfs_options: Option<RawTmpfsOptions>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawTmpfsOptions {
    size_bytes: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawDevice {
    #[serde(deserialize_with = "nullable")]
    path_in_container: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawDeviceRequest {
    #[serde(rename = "DeviceIDs", deserialize_with = "nullable")]
    device_ids: Vec<String>,
    #[serde(deserialize_with = "nullable_caps")]
    capabilities: Vec<Vec<String>>,
}

fn nullable_caps<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<Vec<String>>, D::Error> {
    let sets: Option<Vec<Option<Vec<String>>>> = Option::deserialize(d)?;
    Ok(sets
        .unwrap_or_default()
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawNetworkSettings {
    #[serde(deserialize_with = "nullable")]
    networks: BTreeMap<String, RawEndpoint>,
    #[serde(deserialize_with = "nullable_ports")]
    ports: BTreeMap<String, Vec<RawBinding>>,
}

/// An exposed but unpublished port maps to `null`.
fn nullable_ports<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<BTreeMap<String, Vec<RawBinding>>, D::Error> {
    let ports: Option<BTreeMap<String, Option<Vec<RawBinding>>>> = Option::deserialize(d)?;
    Ok(ports
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawEndpoint {
    #[serde(deserialize_with = "nullable")]
    aliases: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    gateway: String,
    #[serde(rename = "IPAddress", deserialize_with = "nullable")]
    ip_address: String,
    #[serde(rename = "IPPrefixLen", deserialize_with = "nullable")]
    ip_prefix_len: u8,
    #[serde(rename = "GlobalIPv6Address", deserialize_with = "nullable")]
    global_ipv6_address: String,
    #[serde(rename = "GlobalIPv6PrefixLen", deserialize_with = "nullable")]
    global_ipv6_prefix_len: u8,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawBinding {
    #[serde(deserialize_with = "nullable")]
    host_ip: String,
    #[serde(deserialize_with = "nullable")]
    host_port: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawMount {
    #[serde(rename = "Type", deserialize_with = "nullable")]
    kind: String,
    #[serde(deserialize_with = "nullable")]
    name: String,
    #[serde(deserialize_with = "nullable")]
    source: String,
    #[serde(deserialize_with = "nullable")]
    destination: String,
    #[serde(rename = "RW")]
    rw: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawListEntry {
    #[serde(deserialize_with = "nullable")]
    id: String,
    #[serde(deserialize_with = "nullable")]
    labels: HashMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: &[u8] = include_bytes!("../../tests/fixtures/docker/main.json");
    const SETUP: &[u8] = include_bytes!("../../tests/fixtures/docker/setup.json");
    const SIDECAR: &[u8] = include_bytes!("../../tests/fixtures/docker/sidecar.json");
    const STARTING: &[u8] = include_bytes!("../../tests/fixtures/docker/starting.json");
    const UNHEALTHY: &[u8] = include_bytes!("../../tests/fixtures/docker/unhealthy.json");
    const GPU: &[u8] = include_bytes!("../../tests/fixtures/docker/gpu.json");
    const V6: &[u8] = include_bytes!("../../tests/fixtures/docker/v6.json");
    const COMPOSE: &[u8] = include_bytes!("../../tests/fixtures/docker/compose.json");
    const RESTARTING: &[u8] = include_bytes!("../../tests/fixtures/docker/restarting.json");
    const LIST: &[u8] = include_bytes!("../../tests/fixtures/docker/list.json");
    const SWARM_TASK: &[u8] = include_bytes!("../../tests/fixtures/docker/swarm-task.json");

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn rec(json: &[u8]) -> ContainerRecord {
        parse(json).unwrap().unwrap()
    }

    #[test]
    fn identity_from_compose_labels() {
        let l = labels(&[
            (COMPOSE_PROJECT, "blog"),
            (COMPOSE_SERVICE, "db"),
            (COMPOSE_NUMBER, "2"),
        ]);
        let id = identity(&l).unwrap();
        assert_eq!(
            id,
            Identity {
                application: "blog".into(),
                service: "db".into(),
                instance: 2,
                container: "db".into(),
                init: false,
                application_version: None,
            }
        );
    }

    #[test]
    fn supd_labels_take_precedence_field_by_field() {
        let l = labels(&[
            (COMPOSE_PROJECT, "blog"),
            (COMPOSE_SERVICE, "db"),
            (COMPOSE_NUMBER, "2"),
            (LABEL_SERVICE, "store"),
            (LABEL_CONTAINER, "pg"),
            (LABEL_INIT, "true"),
            (LABEL_VERSION, "3.1"),
        ]);
        let id = identity(&l).unwrap();
        assert_eq!(id.application, "blog");
        assert_eq!(id.service, "store");
        assert_eq!(id.instance, 2);
        assert_eq!(id.container, "pg");
        assert!(id.init);
        assert_eq!(id.application_version.as_deref(), Some("3.1"));
    }

    #[test]
    fn invalid_or_missing_labels_are_unmanaged() {
        let base = [
            (LABEL_APPLICATION, "shop"),
            (LABEL_SERVICE, "web"),
            (LABEL_INSTANCE, "1"),
        ];
        assert!(identity(&labels(&base)).is_some());
        assert!(identity(&labels(&base[..2])).is_none());
        assert!(identity(&labels(&[])).is_none());
        for n in ["0", "01", "+1", "-1", "", "1a", "4294967296", " 1"] {
            let mut l = labels(&base);
            l.insert(LABEL_INSTANCE.into(), n.into());
            assert!(identity(&l).is_none(), "instance {n:?}");
        }
        let long = "a".repeat(64);
        for name in [
            "Web",
            "web_1",
            "-web",
            "web-",
            "",
            "we.b",
            "wéb",
            long.as_str(),
        ] {
            let mut l = labels(&base);
            l.insert(LABEL_SERVICE.into(), name.into());
            assert!(identity(&l).is_none(), "service {name:?}");
            let mut l = labels(&base);
            l.insert(LABEL_CONTAINER.into(), name.into());
            assert!(identity(&l).is_none(), "container {name:?}");
        }
        // A present but invalid supd label does not fall back to Compose's.
        let mut l = labels(&base);
        l.insert(COMPOSE_NUMBER.into(), "1".into());
        l.insert(LABEL_INSTANCE.into(), "x".into());
        assert!(identity(&l).is_none());
        let mut l = labels(&base);
        l.insert(LABEL_SERVICE.into(), "a".repeat(63));
        assert!(identity(&l).is_some());
    }

    #[test]
    fn init_flag_and_version_are_strict() {
        let mut l = labels(&[
            (LABEL_APPLICATION, "a"),
            (LABEL_SERVICE, "b"),
            (LABEL_INSTANCE, "9"),
        ]);
        l.insert(LABEL_INIT.into(), "yes".into());
        l.insert(LABEL_VERSION.into(), String::new());
        let id = identity(&l).unwrap();
        assert!(!id.init);
        assert_eq!(id.application_version, None);
        l.insert(LABEL_VERSION.into(), "v".repeat(MAX_VERSION_LEN + 1));
        assert_eq!(identity(&l).unwrap().application_version, None);
    }

    #[test]
    fn compose_one_off_containers_are_unmanaged() {
        let mut l = labels(&[
            (COMPOSE_PROJECT, "blog"),
            (COMPOSE_SERVICE, "db"),
            (COMPOSE_NUMBER, "1"),
        ]);
        l.insert(COMPOSE_ONEOFF.into(), "False".into());
        assert!(identity(&l).is_some());
        l.insert(COMPOSE_ONEOFF.into(), "True".into());
        assert!(identity(&l).is_none());
        l.insert(LABEL_INSTANCE.into(), "7".into());
        assert_eq!(identity(&l).unwrap().instance, 7);
    }

    const NODE: &str = "v5h1we7mah4zkmnecqhxwduvm";

    /// The labels the Swarm agent writes on a task of `service` in `slot` (a number, or the
    /// node id for a global service), with the stack label of `docker stack deploy`.
    fn task(stack: Option<&str>, service: &str, slot: &str) -> HashMap<String, String> {
        let mut l = labels(&[
            (SWARM_SERVICE_ID, "a7bky3lwt1lfnk7teg8nh8rv9"),
            (SWARM_SERVICE_NAME, service),
            (SWARM_TASK_ID, "pb120socx7zwtjkjspiiks5fk"),
            (SWARM_NODE_ID, NODE),
            ("com.docker.swarm.task", ""),
        ]);
        l.insert(
            SWARM_TASK_NAME.into(),
            format!("{service}.{slot}.pb120socx7zwtjkjspiiks5fk"),
        );
        if let Some(stack) = stack {
            l.insert(STACK_NAMESPACE.into(), stack.into());
        }
        l
    }

    #[test]
    fn identity_of_a_stack_task_is_its_slot() {
        let l = task(Some("shop"), "shop_web", "2");
        assert_eq!(
            identity(&l).unwrap(),
            Identity {
                application: "shop".into(),
                service: "web".into(),
                instance: 2,
                container: "web".into(),
                init: false,
                application_version: None,
            }
        );
        let t = swarm_task(&l).unwrap().unwrap();
        assert_eq!(t.slot, SwarmSlot::Replica(2));
        assert_eq!(t.service, "web");
        assert_eq!(t.service_id, "a7bky3lwt1lfnk7teg8nh8rv9");
        assert_eq!(t.node_id, NODE);
        // Service names with dashes, and a stack name that is a prefix of another word.
        let l = task(Some("shop"), "shop_web-api", "12");
        let id = identity(&l).unwrap();
        assert_eq!((id.service.as_str(), id.instance), ("web-api", 12));
        let l = task(Some("shop"), "shopweb", "1");
        assert_eq!(
            identity(&l).unwrap().service,
            "shopweb",
            "no '_': not stripped"
        );
    }

    #[test]
    fn a_global_task_is_instance_one() {
        let l = task(Some("shop"), "shop_agent", NODE);
        let id = identity(&l).unwrap();
        assert_eq!(
            (id.application.as_str(), id.service.as_str(), id.instance),
            ("shop", "agent", 1)
        );
        assert_eq!(
            swarm_task(&l).unwrap().unwrap().slot,
            SwarmSlot::Node(NODE.into())
        );
        // Another node's id in the name is no slot of this task.
        let mut l = task(Some("shop"), "shop_agent", "x5h1we7mah4zkmnecqhxwduvm");
        assert!(identity(&l).is_none());
        l.insert(LABEL_INSTANCE.into(), "1".into());
        assert!(identity(&l).is_none(), "malformed task labels refuse it");
    }

    #[test]
    fn a_task_outside_a_stack_needs_io_supd_application() {
        let mut l = task(None, "web", "3");
        assert!(identity(&l).is_none());
        l.insert(LABEL_APPLICATION.into(), "shop".into());
        let id = identity(&l).unwrap();
        assert_eq!(
            (id.application.as_str(), id.service.as_str(), id.instance),
            ("shop", "web", 3)
        );
        // No stack label: nothing is stripped from the service name.
        let mut l = task(None, "shop_web", "3");
        l.insert(LABEL_APPLICATION.into(), "shop".into());
        assert!(identity(&l).is_none(), "shop_web is no name");
    }

    #[test]
    fn supd_labels_take_precedence_over_swarm_field_by_field() {
        let mut l = task(Some("shop"), "shop_web", "2");
        l.insert(LABEL_APPLICATION.into(), "store".into());
        let id = identity(&l).unwrap();
        assert_eq!(
            (id.application.as_str(), id.service.as_str()),
            ("store", "web")
        );
        l.insert(LABEL_SERVICE.into(), "front".into());
        l.insert(LABEL_INSTANCE.into(), "7".into());
        l.insert(LABEL_CONTAINER.into(), "nginx".into());
        l.insert(LABEL_VERSION.into(), "1.2".into());
        let id = identity(&l).unwrap();
        assert_eq!(
            id,
            Identity {
                application: "store".into(),
                service: "front".into(),
                instance: 7,
                container: "nginx".into(),
                init: false,
                application_version: Some("1.2".into()),
            }
        );
        // The stripped service name is the default container name, not the supd service.
        l.remove(LABEL_CONTAINER);
        assert_eq!(identity(&l).unwrap().container, "front");
        l.insert(LABEL_INSTANCE.into(), "07".into());
        assert!(identity(&l).is_none(), "an invalid io.supd.instance");
    }

    #[test]
    fn swarm_labels_win_over_compose_labels() {
        let mut l = task(Some("shop"), "shop_web", "3");
        for (k, v) in [
            (COMPOSE_PROJECT, "blog"),
            (COMPOSE_SERVICE, "db"),
            (COMPOSE_NUMBER, "1"),
            (COMPOSE_ONEOFF, "True"),
        ] {
            l.insert(k.into(), v.into());
        }
        let id = identity(&l).unwrap();
        assert_eq!(
            (id.application.as_str(), id.service.as_str(), id.instance),
            ("shop", "web", 3)
        );
        // Not mixed in: a task without a stack does not take the Compose project.
        let mut l = task(None, "web", "3");
        l.insert(COMPOSE_PROJECT.into(), "blog".into());
        assert!(identity(&l).is_none());
    }

    #[test]
    fn task_labels_must_agree() {
        assert!(identity(&task(Some("shop"), "shop_web", "1")).is_some());
        for missing in [
            SWARM_SERVICE_ID,
            SWARM_SERVICE_NAME,
            SWARM_TASK_ID,
            SWARM_NODE_ID,
        ] {
            let mut l = task(Some("shop"), "shop_web", "1");
            l.remove(missing);
            assert!(identity(&l).is_none(), "without {missing}");
            l.insert(missing.into(), String::new());
            assert!(identity(&l).is_none(), "empty {missing}");
        }
        for name in [
            "shop_web.1",
            "shop_web.pb120socx7zwtjkjspiiks5fk",
            "shop_web..pb120socx7zwtjkjspiiks5fk",
            "shop_web.0.pb120socx7zwtjkjspiiks5fk",
            "shop_web.01.pb120socx7zwtjkjspiiks5fk",
            "shop_web.-1.pb120socx7zwtjkjspiiks5fk",
            "shop_web.1.other7zwtjkjspiiks5fk",
            "shop_api.1.pb120socx7zwtjkjspiiks5fk",
            "shop_web_1.1.pb120socx7zwtjkjspiiks5fk",
            "shop_web.1.2.pb120socx7zwtjkjspiiks5fk",
            "",
        ] {
            let mut l = task(Some("shop"), "shop_web", "1");
            l.insert(SWARM_TASK_NAME.into(), name.into());
            assert!(
                matches!(swarm_task(&l), Some(Err(_))) && identity(&l).is_none(),
                "task name {name:?}"
            );
        }
        // Without a task name it is no task: the other Swarm labels alone mean nothing.
        let mut l = task(Some("shop"), "shop_web", "1");
        l.remove(SWARM_TASK_NAME);
        assert!(swarm_task(&l).is_none());
        assert!(identity(&l).is_none());
    }

    #[test]
    fn a_captured_task() {
        let r = rec(SWARM_TASK);
        assert_eq!(r.identity.application, "shopx");
        assert_eq!(r.identity.service, "web");
        assert_eq!(r.identity.instance, 2);
        assert_eq!(r.identity.container, "web");
        assert_eq!(r.compose_project.as_deref(), Some("shopx"));
        assert_eq!(r.created, "2026-12-02T07:32:22.464455401Z");
        let t = r.swarm.unwrap();
        assert_eq!(t.slot, SwarmSlot::Replica(2));
        assert_eq!(t.task_id, "mlg5be3pqdlv8f5fvqdj1fuzq");
        assert!(rec(MAIN).swarm.is_none());
    }

    #[test]
    fn created_times_order_by_value() {
        let k = created_order;
        assert!(k("2026-12-02T07:32:22.5Z") > k("2026-12-02T07:32:22.464455401Z"));
        assert!(k("2026-12-02T07:32:22.1Z") < k("2026-12-02T07:32:22.12Z"));
        assert!(k("2026-12-02T07:32:22Z") < k("2026-12-02T07:32:22.000000001Z"));
        assert!(k("2026-12-02T07:32:23Z") > k("2026-12-02T07:32:22.999999999Z"));
        assert_eq!(
            k("2026-12-02T07:32:22.5Z"),
            ("2026-12-02T07:32:22", 500_000_000)
        );
        for bad in [
            "",
            "2026-12-02T07:32:22",
            "x.1234567890Z",
            "x.1a Z",
            "x.-1Z",
        ] {
            assert_eq!(k(bad), ("", 0), "{bad:?}");
        }
    }

    fn launcher(extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut l = labels(&[
            (LABEL_APPLICATION, "shop"),
            (LABEL_SERVICE, "legacy"),
            (LABEL_INSTANCE, "1"),
            (LABEL_VM, "true"),
        ]);
        for (k, v) in extra {
            l.insert(k.to_string(), v.to_string());
        }
        l
    }

    fn vm_err(extra: &[(&str, &str)]) -> VmLabelError {
        let l = launcher(extra);
        assert!(
            !is_managed(&l),
            "{extra:?} must leave the container unmanaged"
        );
        vm_spec(&l).unwrap_err()
    }

    #[test]
    fn vm_defaults() {
        let l = launcher(&[]);
        assert!(is_managed(&l));
        assert_eq!(
            vm_spec(&l).unwrap(),
            Some(VmSpec {
                agent: "/run/supd-vm/qga.sock".into(),
                console: "/run/supd-vm/console.sock".into(),
                terminals: vec![VmTerminal {
                    socket: "/run/supd-vm/ttyS1.sock".into(),
                    tty: "ttyS1".into(),
                }],
                address: None,
            })
        );
    }

    #[test]
    fn vm_labels_override_the_defaults() {
        let l = launcher(&[
            (LABEL_VM_AGENT, "/vm/agent"),
            (LABEL_VM_CONSOLE, "/vm/con"),
            (LABEL_VM_TERMINALS, "/vm/a=ttyS1,/vm/b=b.sock=hvc2"),
            (LABEL_VM_ADDRESS, "fd00::5"),
        ]);
        let vm = vm_spec(&l).unwrap().unwrap();
        assert_eq!(
            (vm.agent.as_str(), vm.console.as_str()),
            ("/vm/agent", "/vm/con")
        );
        let t: Vec<(&str, &str)> = vm
            .terminals
            .iter()
            .map(|t| (t.socket.as_str(), t.tty.as_str()))
            .collect();
        // The last '=' separates: a socket path may hold one, a tty name never.
        assert_eq!(t, [("/vm/a", "ttyS1"), ("/vm/b=b.sock", "hvc2")]);
        assert_eq!(vm.address, Some("fd00::5".parse().unwrap()));
        let vm = vm_spec(&launcher(&[(LABEL_VM_ADDRESS, "10.0.2.15")]))
            .unwrap()
            .unwrap();
        assert_eq!(vm.address, Some("10.0.2.15".parse().unwrap()));
        // An empty list is a VM without spare terminal ports.
        let vm = vm_spec(&launcher(&[(LABEL_VM_TERMINALS, "")]))
            .unwrap()
            .unwrap();
        assert!(vm.terminals.is_empty());
        let sixteen: Vec<String> = (0..16).map(|i| format!("/t/{i}=ttyS{i}")).collect();
        let vm = vm_spec(&launcher(&[(LABEL_VM_TERMINALS, &sixteen.join(","))]))
            .unwrap()
            .unwrap();
        assert_eq!(vm.terminals.len(), 16);
    }

    #[test]
    fn not_a_launcher() {
        let mut l = launcher(&[(LABEL_VM_TERMINALS, "garbage"), (LABEL_VM_AGENT, "rel")]);
        l.remove(LABEL_VM);
        assert_eq!(
            vm_spec(&l),
            Ok(None),
            "vm labels without the flag are ignored"
        );
        assert!(is_managed(&l));
        l.insert(LABEL_VM.into(), "false".into());
        assert_eq!(vm_spec(&l), Ok(None));
        assert!(is_managed(&l));
    }

    #[test]
    fn vm_flag_must_be_true_or_false() {
        for v in ["True", "yes", "1", "", " true"] {
            assert_eq!(
                vm_err(&[(LABEL_VM, v)]),
                VmLabelError::Flag(v.into()),
                "{v:?}"
            );
        }
    }

    #[test]
    fn a_launcher_is_no_init_container() {
        assert_eq!(vm_err(&[(LABEL_INIT, "true")]), VmLabelError::Init);
        assert!(is_managed(&launcher(&[(LABEL_INIT, "false")])));
    }

    #[test]
    fn vm_socket_paths_must_be_absolute() {
        for label in [LABEL_VM_AGENT, LABEL_VM_CONSOLE] {
            for p in ["run/qga.sock", "", "./qga.sock"] {
                assert_eq!(
                    vm_err(&[(label, p)]),
                    VmLabelError::SocketPath {
                        label,
                        path: p.into(),
                        why: "is not absolute"
                    },
                    "{label} {p:?}"
                );
            }
        }
        let e = vm_err(&[(LABEL_VM_TERMINALS, "run/t=ttyS1")]);
        assert!(
            matches!(
                e,
                VmLabelError::Terminal {
                    why: "is not absolute",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn vm_socket_paths_fit_a_unix_address() {
        let longest = format!("/{}", "a".repeat(MAX_SOCKET_PATH - 1));
        assert!(check_socket_path(&longest).is_ok());
        let too_long = format!("{longest}b");
        assert!(is_managed(&launcher(&[(LABEL_VM_AGENT, &longest)])));
        assert_eq!(
            vm_err(&[(LABEL_VM_AGENT, &too_long)]),
            VmLabelError::SocketPath {
                label: LABEL_VM_AGENT,
                path: too_long.clone(),
                why: "is longer than 107 bytes"
            }
        );
        let e = vm_err(&[(LABEL_VM_TERMINALS, &format!("{too_long}=ttyS1"))]);
        assert!(matches!(
            e,
            VmLabelError::Terminal {
                why: "is longer than 107 bytes",
                ..
            }
        ));
    }

    #[test]
    fn vm_socket_paths_have_no_nul() {
        let e = vm_err(&[(LABEL_VM_CONSOLE, "/run/a\0b")]);
        assert!(
            matches!(
                e,
                VmLabelError::SocketPath {
                    why: "contains a NUL byte",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = vm_err(&[(LABEL_VM_TERMINALS, "/a\0=ttyS1")]);
        assert!(
            matches!(
                e,
                VmLabelError::Terminal {
                    why: "contains a NUL byte",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn vm_socket_paths_have_no_dot_components() {
        for p in [
            "/run/../etc/s",
            "/..",
            "/run/./s",
            "/.",
            "/run/s/..",
            "/a/.",
        ] {
            let e = vm_err(&[(LABEL_VM_AGENT, p)]);
            assert!(
                matches!(
                    e,
                    VmLabelError::SocketPath {
                        why: "has a '.' or '..' component",
                        ..
                    }
                ),
                "{p:?}: {e:?}"
            );
        }
        let e = vm_err(&[(LABEL_VM_TERMINALS, "/a/../b=ttyS1")]);
        assert!(matches!(
            e,
            VmLabelError::Terminal {
                why: "has a '.' or '..' component",
                ..
            }
        ));
        // Dots inside a name are fine.
        assert!(check_socket_path("/run/.s/..x/a.sock").is_ok());
    }

    #[test]
    fn vm_socket_paths_have_no_empty_components() {
        for p in ["/", "//run/s", "/run//s", "/run/s/"] {
            let e = vm_err(&[(LABEL_VM_CONSOLE, p)]);
            assert!(
                matches!(
                    e,
                    VmLabelError::SocketPath {
                        why: "has an empty component",
                        ..
                    }
                ),
                "{p:?}: {e:?}"
            );
        }
        let e = vm_err(&[(LABEL_VM_TERMINALS, "/a//b=ttyS1")]);
        assert!(matches!(
            e,
            VmLabelError::Terminal {
                why: "has an empty component",
                ..
            }
        ));
    }

    #[test]
    fn vm_terminal_entries_are_socket_equals_tty() {
        for entry in [
            "/a",
            "/a=ttyS1,",
            ",/a=ttyS1",
            "/a=ttyS1,,/b=ttyS2",
            "=ttyS1",
        ] {
            let e = vm_err(&[(LABEL_VM_TERMINALS, entry)]);
            assert!(
                matches!(e, VmLabelError::Terminal { .. }),
                "{entry:?}: {e:?}"
            );
        }
    }

    #[test]
    fn vm_tty_names_are_plain() {
        let long = "t".repeat(MAX_TTY_NAME + 1);
        for tty in [
            "",
            "ttyS1;reboot",
            "tty S1",
            "../ttyS1",
            "tty/S1",
            "ttyS1\n",
            "tty-S1",
            "tty_S1",
            "ttyé",
            "$(id)",
            long.as_str(),
        ] {
            let e = vm_err(&[(LABEL_VM_TERMINALS, &format!("/a={tty}"))]);
            assert!(
                matches!(&e, VmLabelError::Terminal { why, .. } if why.contains("guest terminal")),
                "{tty:?}: {e:?}"
            );
        }
        assert!(is_tty_name(&"t".repeat(MAX_TTY_NAME)));
        assert!(is_tty_name("ttyAMA1") && is_tty_name("hvc0") && is_tty_name("0"));
    }

    #[test]
    fn at_most_sixteen_vm_terminals() {
        let seventeen: Vec<String> = (0..17).map(|i| format!("/t/{i}=ttyS{i}")).collect();
        assert_eq!(
            vm_err(&[(LABEL_VM_TERMINALS, &seventeen.join(","))]),
            VmLabelError::TooManyTerminals(17)
        );
    }

    #[test]
    fn vm_sockets_and_ttys_are_not_shared() {
        assert_eq!(
            vm_err(&[(LABEL_VM_TERMINALS, "/a=ttyS1,/a=ttyS2")]),
            VmLabelError::DuplicateSocket("/a".into())
        );
        assert_eq!(
            vm_err(&[(LABEL_VM_TERMINALS, "/a=ttyS1,/b=ttyS1")]),
            VmLabelError::DuplicateTty("ttyS1".into())
        );
        assert_eq!(
            vm_err(&[(LABEL_VM_TERMINALS, "/run/supd-vm/qga.sock=ttyS1")]),
            VmLabelError::DuplicateSocket("/run/supd-vm/qga.sock".into()),
            "a terminal on the agent's socket"
        );
        assert_eq!(
            vm_err(&[(LABEL_VM_TERMINALS, "/run/supd-vm/console.sock=ttyS1")]),
            VmLabelError::DuplicateSocket("/run/supd-vm/console.sock".into())
        );
        assert_eq!(
            vm_err(&[(LABEL_VM_CONSOLE, "/run/supd-vm/qga.sock")]),
            VmLabelError::DuplicateSocket("/run/supd-vm/qga.sock".into())
        );
    }

    #[test]
    fn vm_address_is_a_literal_ip() {
        for a in [
            "",
            "vm.local",
            "10.0.2",
            "10.0.2.15/24",
            "fe80::1%eth0",
            " 10.0.2.15",
            "[::1]",
        ] {
            assert_eq!(
                vm_err(&[(LABEL_VM_ADDRESS, a)]),
                VmLabelError::Address(a.into()),
                "{a:?}"
            );
        }
    }

    #[test]
    fn vm_label_errors_say_what_is_wrong() {
        let e = vm_err(&[(LABEL_VM_TERMINALS, "/a=tty;x")]);
        assert_eq!(
            e.to_string(),
            "io.supd.vm.terminals: entry \"/a=tty;x\" does not name a guest terminal matching ^[A-Za-z0-9]{1,32}$"
        );
        assert_eq!(
            vm_err(&[(LABEL_VM_AGENT, "x")]).to_string(),
            "io.supd.vm.agent: socket path \"x\" is not absolute"
        );
    }

    #[test]
    fn launchers_in_documents_lists_and_events() {
        let vm_labels = r#""io.supd.application":"a","io.supd.service":"b","io.supd.instance":"1","io.supd.vm-container":"true""#;
        let doc = format!(r#"{{"Id":"abc","Config":{{"Labels":{{{vm_labels}}}}}}}"#);
        let r = rec(doc.as_bytes());
        assert!(r.is_vm());
        assert_eq!(r.vm.unwrap().agent, DEFAULT_VM_AGENT);
        assert!(!rec(MAIN).is_vm());
        let bad = format!(
            r#"{{"Id":"abc","Config":{{"Labels":{{{vm_labels},"io.supd.vm.terminals":"/x=a b"}}}}}}"#
        );
        assert_eq!(parse(bad.as_bytes()).unwrap(), None);
        let list = format!(
            r#"[{{"Id":"good","Labels":{{{vm_labels}}}}},{{"Id":"bad","Labels":{{{vm_labels},"io.supd.vm.address":"x"}}}}]"#
        );
        assert_eq!(
            list_entry_ids(list.as_bytes()).unwrap(),
            [("good".to_string(), true), ("bad".to_string(), false)]
        );
    }

    #[test]
    fn parses_a_full_container() {
        let r = rec(MAIN);
        assert_eq!(
            r.id,
            "1a3ea50401cf05f9532a5121b35d2d8597b558e5c6e9862be0af9a439a39dd7a"
        );
        assert_eq!(r.name, "model-main");
        assert_eq!(r.identity.application, "shop");
        assert_eq!(r.identity.service, "web");
        assert_eq!(r.identity.instance, 1);
        assert_eq!(r.identity.container, "main");
        assert_eq!(r.identity.application_version.as_deref(), Some("1.2.3"));
        assert_eq!(r.status, "running");
        assert!(r.running && !r.paused && !r.restarting);
        assert_eq!(r.pid, 7365);
        assert_eq!(
            r.started_at.as_deref(),
            Some("2026-11-27T13:56:48.612165962Z")
        );
        assert_eq!(r.finished_at, None);
        assert_eq!(r.health, None);
        assert_eq!(r.user, "1000:1000");
        assert_eq!(r.env, ["FOO=bar", "PATH=/bin"]);
        assert_eq!(r.working_dir, "/tmp");
        assert_eq!(r.network_mode, "supd-model-net");
        assert_eq!(r.stop_timeout, Some(7));
        assert_eq!(r.image, "supd-test-busybox");
        assert_eq!(r.devices, ["/dev/xnull"]);
        assert!(r.gpus.is_empty());
        assert_eq!(r.nvidia_capabilities, None);
        assert_eq!(
            r.networks,
            [Network {
                name: "supd-model-net".into(),
                ip: Some("172.18.0.2".parse().unwrap()),
                prefix_len: 16,
                ipv6: None,
                ipv6_prefix_len: 0,
                gateway: Some("172.18.0.1".parse().unwrap()),
                aliases: vec!["web".into(), "web-1".into(), "1a3ea50401cf".into()],
            }]
        );
        let port = |port, protocol: &str, ip: &str, host_port| Port {
            port,
            protocol: protocol.into(),
            host_ip: Some(ip.parse().unwrap()),
            host_port,
        };
        assert_eq!(
            r.ports,
            [
                port(80, "tcp", "127.0.0.1", 18080),
                port(81, "udp", "0.0.0.0", 18081),
                port(81, "udp", "::", 18081)
            ]
        );
        let m =
            |kind, name: Option<&str>, source: &str, dest: &str, size: Option<&str>, ro| Mount {
                kind,
                name: name.map(str::to_string),
                source: source.into(),
                destination: dest.into(),
                size: size.map(str::to_string),
                read_only: ro,
            };
        assert_eq!(
            r.mounts,
            [
                m(
                    MountKind::Volume,
                    Some("shop_data"),
                    "/var/lib/docker/volumes/shop_data/_data",
                    "/data",
                    None,
                    false
                ),
                m(MountKind::Tmpfs, None, "", "/cache", Some("1048576"), false),
                m(MountKind::Bind, None, "/tmp", "/host-tmp", None, true),
                m(MountKind::Tmpfs, None, "", "/scratch", Some("64m"), false),
            ]
        );
    }

    #[test]
    fn health_and_its_history() {
        let r = rec(SIDECAR);
        assert_eq!(r.health.as_deref(), Some("healthy"));
        assert!(r.health_passed);
        assert_eq!(r.network_mode, format!("container:{}", rec(MAIN).id));
        assert!(r.networks.is_empty());
        let r = rec(STARTING);
        assert_eq!(r.health.as_deref(), Some("starting"));
        assert!(!r.health_passed);
        let r = rec(UNHEALTHY);
        assert_eq!(r.health.as_deref(), Some("unhealthy"));
        assert!(!r.health_passed);
    }

    #[test]
    fn exited_created_restarting() {
        let r = rec(SETUP);
        assert!(r.identity.init);
        assert_eq!((r.status.as_str(), r.exit_code, r.pid), ("exited", 0, 0));
        assert!(r.finished_at.is_some());
        let r = rec(GPU);
        assert_eq!(r.status, "created");
        assert_eq!((r.started_at, r.finished_at), (None, None));
        assert_eq!(r.gpus, ["GPU-de663f3f-856c-4e48-9269-c2269169bfda"]);
        assert_eq!(r.nvidia_capabilities.as_deref(), Some("utility, compute"));
        let r = rec(RESTARTING);
        assert_eq!(r.status, "restarting");
        assert!(r.restarting && r.running);
        assert_eq!(r.exit_code, 3);
        assert!(r.restart_count > 0);
    }

    #[test]
    fn ipv6_and_several_networks() {
        let r = rec(V6);
        let names: Vec<_> = r.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["bridge", "supd-model-net", "supd-model-net6"]);
        let n6 = &r.networks[2];
        assert_eq!(n6.ip, Some("172.30.5.2".parse().unwrap()));
        assert_eq!(n6.prefix_len, 24);
        assert_eq!(n6.ipv6, Some("fd00:5d::2".parse().unwrap()));
        assert_eq!(n6.ipv6_prefix_len, 64);
        assert_eq!(r.networks[0].aliases, Vec::<String>::new());
    }

    #[test]
    fn compose_container() {
        let r = rec(COMPOSE);
        assert_eq!(r.identity.application, "blog");
        assert_eq!(r.identity.container, "db");
        assert_eq!(r.compose_project.as_deref(), Some("blog"));
        assert_eq!(r.mounts[0].name.as_deref(), Some("blog_dbdata"));
        assert_eq!(r.mounts[1].destination, "/run");
        assert_eq!(r.mounts[1].size, None);
    }

    #[test]
    fn list_marks_managed_entries() {
        let ids = list_entry_ids(LIST).unwrap();
        assert_eq!(ids.len(), 10);
        let foreign: Vec<_> = ids
            .iter()
            .filter(|(_, m)| !m)
            .map(|(id, _)| &id[..12])
            .collect();
        assert_eq!(foreign, ["aab0f4758faa"]);
        assert!(ids.iter().all(|(id, _)| id.len() == 64));
        assert_eq!(list_entry_ids(b"[]").unwrap(), []);
        assert_eq!(
            list_entry_ids(br#"[{"Id":"x","Labels":null},{}]"#).unwrap(),
            [("x".to_string(), false)]
        );
        assert!(list_entry_ids(b"{}").is_err());
    }

    #[test]
    fn unmanaged_container_is_none() {
        assert_eq!(
            parse(br#"{"Id":"abc","Config":{"Labels":{"a":"b"}}}"#).unwrap(),
            None
        );
        assert_eq!(parse(br#"{"Id":"abc"}"#).unwrap(), None);
        assert_eq!(parse(br#"{"Id":"abc","Config":null}"#).unwrap(), None);
    }

    #[test]
    fn nulls_and_missing_fields_are_tolerated() {
        let json = br#"{"Id":"abc","Name":null,"State":{"Health":{"Status":null,"Log":null}},
            "Config":{"Labels":{"io.supd.application":"a","io.supd.service":"b","io.supd.instance":"1"},
                      "Env":null,"StopTimeout":null},
            "HostConfig":{"Tmpfs":null,"Devices":null,"DeviceRequests":[{"Capabilities":[null,["gpu"]],"DeviceIDs":null}],"Mounts":null},
            "NetworkSettings":{"Networks":{"n":{"IPAddress":"","Aliases":null}},"Ports":{"80/tcp":null,"x/tcp":[{"HostPort":"1"}]}},
            "Mounts":[{"Type":"volume"}]}"#;
        let r = rec(json);
        assert_eq!(r.name, "");
        assert_eq!(r.health, None);
        assert_eq!(r.networks[0].ip, None);
        assert!(r.ports.is_empty());
        assert!(r.gpus.is_empty());
        assert_eq!(r.nvidia_capabilities, None);
        assert_eq!(r.mounts[0].kind, MountKind::Volume);
        assert!(!r.mounts[0].read_only);
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &b""[..],
            b"nul",
            b"{\"Id\":1}",
            b"\xff\xfe",
            b"{\"State\":{\"Pid\":1e99}}",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(10_000);
        assert!(parse(deep.as_bytes()).is_err());
        let big = vec![b' '; MAX_INSPECT_LEN + 1];
        assert!(matches!(parse(&big), Err(Error::TooLarge { .. })));
        let e = parse(b"{").unwrap_err();
        assert!(e.to_string().starts_with("malformed container document"));
        assert!(std::error::Error::source(&e).is_some());
    }
}
