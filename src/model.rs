//! Service instances and their containers as the API shows them, built from the mirror's
//! container records. Pure functions: no I/O, no clock.
//!
//! How Docker state maps to the API (the README repeats this):
//!
//! - **Identity.** Containers belong to an instance by their labels (see
//!   [`crate::docker::inspect::identity`]). An instance is named `<tenant>.<application>.<service>-<N>`;
//!   its containers `<tenant>.<application>.<service>-<N>.<container>`; its init containers by their
//!   short name only, as in the reference sample. `id` is the first 12 characters of Docker's id.
//!   Instances are listed by service, then N; containers and init containers by name, then id
//!   (Docker does not record an order among init containers).
//! - **Container `oper-status`** from `State.Status`: running, restarting, paused and created as
//!   they are; `exited` with code 0 is `completed`, with any other code `failed`; `dead` is
//!   `failed`; `removing` is `removing`; anything else `unknown`. A container stopped with
//!   `docker stop` exits with whatever its process returned on SIGTERM (often 143) or 137 after
//!   SIGKILL, which Docker does not tell apart from a crash, so it shows as `failed`.
//! - **Container `ready`** (not shown for init containers): running, and either no health check
//!   or Docker's health is `healthy`.
//! - **`start-time`**: `State.StartedAt` in RFC 3339 UTC with exactly three fractional digits
//!   (truncated, not rounded, so it never moves into the next second) and `Z`. Omitted when the
//!   container never started (Go's zero time) or the text is not a valid UTC timestamp.
//! - **`probes`** come from the Docker health check, shown only while the container runs (a
//!   stopped container's health is stale). `healthy`: readiness, liveness and startup `success`.
//!   `unhealthy`: readiness and liveness `failure`; startup `success` if Docker's health log (its
//!   last five probes) shows a passing probe, since Docker turns a container healthy on its first
//!   pass, otherwise omitted because older probes may have passed. `starting`: all three
//!   `pending`. No health check: no probes.
//! - **`current-restarts` / `total-restarts`** are supd's own counters (Docker's `RestartCount`
//!   resets on a manual start).
//! - **`devices`**: `HostConfig.Devices` paths inside the container. **`gpus`**: the device ids
//!   of device requests with the `gpu` capability; **`nvidia-driver-capabilities`**: those
//!   requests' other capabilities joined with ", ".
//! - **`vm-container`** (supd's addition): the instance's virtual machine, when one of its
//!   containers is a VM launcher (`io.supd.vm-container=true`, see
//!   [`crate::docker::inspect::vm_spec`]). The launcher is not listed among `containers` or
//!   `init-containers`. `name`, `id`, `oper-status`, `start-time`, `current-restarts` and
//!   `total-restarts` are the launcher's, with the same meaning as for a container; `ready` as
//!   for a container (the launcher runs, and is healthy if it has a health check; the guest
//!   agent plays no part, a VM need not run one). `agent`: `connected` while supd's guest-agent
//!   client is connected to the agent of a running launcher, else `unavailable`. `guest-os`
//!   (`guest-get-osinfo`, members the agent did not give left out) and `ips` (the guest's
//!   addresses with prefix length, `guest-network-get-interfaces`) are shown only while the
//!   agent is connected: after that, the guest may have rebooted into another system or other
//!   addresses. The guest information comes from the caller ([`Guests`], by the launcher's
//!   full id); this module does no I/O. An instance with several launchers has one VM, the first
//!   launcher by container name, then id ([`vm_launcher`]); the others are shown nowhere, count
//!   for nothing and no operation reaches them. The launcher's networks, ports and volumes are
//!   the instance's like any container's.
//! - **Instance `oper-status`**, first rule that matches: any container (init included)
//!   restarting: `restarting`; any failed: `failed`; any being removed: `removing`; any non-init
//!   container paused: `paused`; every non-init container running or completed and at least one
//!   running: `running`; every non-init container completed: `completed`; otherwise (containers
//!   only created, init containers still running, no non-init container yet): `starting`. The
//!   VM counts as one more non-init container, so an instance of only a VM is `running` while
//!   its launcher runs.
//! - **Instance `ready`**: it has non-init containers (the VM included) and every one is ready.
//!   **`application-version`**: `io.supd.application-version` of its first container that has
//!   one. **`host`**: from the configuration.
//! - **`application-network`**: the first user-defined network (not `bridge`, `host`, `none`)
//!   by name among the instance's containers. `ips`: each container's IPv4 and IPv6 address on
//!   it with prefix length, deduplicated (containers sharing a network namespace show once).
//!   `dns-records`: what Docker's embedded DNS answers on that network, with its fixed TTL of
//!   600: the container name and each of its aliases there (Docker adds the short id as an
//!   alias), `"<name>. 600 IN A <ip>"` and `AAAA` for IPv6.
//! - **`gateway-network`**: the default `bridge` network's addresses, when attached with one.
//! - **`ingress`**: present when ports are published. `ips`: the specific host addresses ports
//!   are published on (the wildcard addresses are skipped). `ports` is an addition to the
//!   reference: `[{port, protocol, host-ip, host-port}]`, one per binding. No `interface` and no
//!   `dns-records`: Docker knows neither.
//! - **`ephemeral-volumes`**: tmpfs mounts, `name` = the mount point, `size` = Docker's text
//!   (`size=` of `--tmpfs`, e.g. "64m", or the byte count of `--mount type=tmpfs,tmpfs-size=`).
//!   **`persistent-volumes`**: named volumes, `name` = the volume name without the Compose
//!   `<project>_` prefix, `host-volume` = Docker's full volume name. Bind mounts are not volumes.
//!   Both are listed once per instance even when several containers mount them.
//! - Absent or empty values are omitted, except `containers`, which is always present.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::docker::inspect::{self, ContainerRecord, MountKind};
use crate::docker::mirror::Counters;

/// TTL of every answer from Docker's embedded DNS server.
pub const DOCKER_DNS_TTL: u32 = 600;

pub struct Context<'a> {
    pub tenant: &'a str,
    pub host: &'a str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServiceInstance {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_version: Option<String>,
    pub oper_status: InstanceStatus,
    pub ready: bool,
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_network: Option<ApplicationNetwork>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_network: Option<GatewayNetwork>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Ingress>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ephemeral_volumes: Vec<EphemeralVolume>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub persistent_volumes: Vec<PersistentVolume>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    pub containers: Vec<Container>,
    /// supd's addition: the instance's virtual machine, from its launcher container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_container: Option<VmContainer>,
}

/// What supd's guest-agent client last learnt of a VM (keyed by the launcher's full container id).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuestInfo {
    /// The agent answers (its connection is open and in sync).
    pub connected: bool,
    pub os: Option<GuestOs>,
    /// The guest's addresses with their prefix length ("10.0.2.15/24"), as the agent reports them.
    pub ips: Vec<String>,
}

/// The guest's operating system, from `guest-get-osinfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct GuestOs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretty_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
}

impl GuestOs {
    /// Nothing known: the object is not shown.
    pub fn is_empty(&self) -> bool {
        *self == GuestOs::default()
    }
}

/// Guest information by the launcher's full container id.
pub type Guests = std::collections::HashMap<String, GuestInfo>;

/// An instance's VM as the API shows it: its launcher's state, and what its guest agent says.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VmContainer {
    pub name: String,
    pub id: String,
    pub oper_status: ContainerStatus,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    pub current_restarts: u32,
    pub total_restarts: u32,
    pub agent: AgentStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_os: Option<GuestOs>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentStatus {
    Connected,
    Unavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceStatus {
    Running,
    Restarting,
    Failed,
    Completed,
    Paused,
    Removing,
    Starting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerStatus {
    Running,
    Restarting,
    Paused,
    Created,
    Completed,
    Failed,
    Removing,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ApplicationNetwork {
    pub shared_application_network: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_records: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct GatewayNetwork {
    pub ips: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Ingress {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    pub ports: Vec<IngressPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct IngressPort {
    pub port: u16,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    pub host_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct EphemeralVolume {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PersistentVolume {
    pub name: String,
    pub host_volume: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Container {
    pub name: String,
    pub id: String,
    pub oper_status: ContainerStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    pub current_restarts: u32,
    pub total_restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<Probes>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<Gpu>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvidia_driver_capabilities: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    pub uuid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup: Option<Probe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Probe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Probe>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub status: ProbeStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeStatus {
    Success,
    Failure,
    Pending,
}

/// All instances of `application` among `records`, sorted by service then N. `counters(id)`
/// gives the counters of a container (by full id); `guests` what is known of each VM.
pub fn service_instances<'r>(
    application: &str,
    records: impl IntoIterator<Item = &'r ContainerRecord>,
    counters: &dyn Fn(&str) -> Counters,
    guests: &Guests,
    ctx: &Context,
) -> Vec<ServiceInstance> {
    let mut groups: BTreeMap<(&str, u32), Vec<&ContainerRecord>> = BTreeMap::new();
    for r in records {
        if r.identity.application == application {
            groups
                .entry((&r.identity.service, r.identity.instance))
                .or_default()
                .push(r);
        }
    }
    groups
        .into_iter()
        .map(|((service, n), members)| {
            build(application, service, n, members, counters, guests, ctx)
        })
        .collect()
}

/// One instance by its short name `<service>-<N>` (None if unknown or malformed).
pub fn service_instance<'r>(
    application: &str,
    instance: &str,
    records: impl IntoIterator<Item = &'r ContainerRecord>,
    counters: &dyn Fn(&str) -> Counters,
    guests: &Guests,
    ctx: &Context,
) -> Option<ServiceInstance> {
    let (service, n) = parse_instance_name(instance)?;
    let members: Vec<&ContainerRecord> = records
        .into_iter()
        .filter(|r| {
            let id = &r.identity;
            id.application == application && id.service == service && id.instance == n
        })
        .collect();
    (!members.is_empty()).then(|| build(application, service, n, members, counters, guests, ctx))
}

/// Parse `<service>-<N>` (service may contain '-'; N is after the last '-', a positive integer
/// without leading zeros). None if malformed.
pub fn parse_instance_name(s: &str) -> Option<(&str, u32)> {
    let (service, n) = s.rsplit_once('-')?;
    if !inspect::is_name(service) {
        return None;
    }
    Some((service, inspect::parse_instance_number(n)?))
}

/// The container of an instance that is its VM, among all of the instance's containers: the
/// first launcher by container name, then id. Any other launcher of the instance is ignored
/// (shown nowhere, reached by no operation), so an instance has at most one VM.
pub fn vm_launcher<'r>(
    members: impl IntoIterator<Item = &'r ContainerRecord>,
) -> Option<&'r ContainerRecord> {
    members
        .into_iter()
        .filter(|r| r.is_vm())
        .min_by(|a, b| (&a.identity.container, &a.id).cmp(&(&b.identity.container, &b.id)))
}

fn build(
    application: &str,
    service: &str,
    n: u32,
    mut members: Vec<&ContainerRecord>,
    counters: &dyn Fn(&str) -> Counters,
    guests: &Guests,
    ctx: &Context,
) -> ServiceInstance {
    let launcher = vm_launcher(members.iter().copied());
    members.retain(|r| !r.is_vm());
    members.sort_by(|a, b| (&a.identity.container, &a.id).cmp(&(&b.identity.container, &b.id)));
    let (inits, mains): (Vec<&ContainerRecord>, Vec<&ContainerRecord>) =
        members.iter().partition(|r| r.identity.init);
    let name = format!("{}.{application}.{service}-{n}", ctx.tenant);

    let containers: Vec<Container> = mains
        .iter()
        .map(|r| {
            container(
                r,
                format!("{name}.{}", r.identity.container),
                true,
                counters,
            )
        })
        .collect();
    let init_containers: Vec<Container> = inits
        .iter()
        .map(|r| container(r, r.identity.container.clone(), false, counters))
        .collect();
    let vm_container = launcher.map(|r| {
        vm_container(
            r,
            format!("{name}.{}", r.identity.container),
            counters,
            guests.get(&r.id),
        )
    });

    // The VM counts as one more non-init container for the instance's status and readiness.
    let regular: Vec<(ContainerStatus, bool)> = containers
        .iter()
        .map(|c| (c.oper_status, c.ready == Some(true)))
        .chain(vm_container.iter().map(|v| (v.oper_status, v.ready)))
        .collect();
    let statuses: Vec<ContainerStatus> = regular.iter().map(|(s, _)| *s).collect();
    let init_statuses: Vec<ContainerStatus> =
        init_containers.iter().map(|c| c.oper_status).collect();
    let all = || mains.iter().chain(&inits).copied().chain(launcher);
    ServiceInstance {
        application_version: all().find_map(|r| r.identity.application_version.clone()),
        oper_status: instance_status(&statuses, &init_statuses),
        ready: !regular.is_empty() && regular.iter().all(|(_, ready)| *ready),
        host: ctx.host.to_string(),
        application_network: application_network(all),
        gateway_network: gateway_network(all),
        ingress: ingress(all),
        ephemeral_volumes: ephemeral_volumes(all),
        persistent_volumes: persistent_volumes(all),
        name,
        init_containers,
        containers,
        vm_container,
    }
}

fn container(
    r: &ContainerRecord,
    name: String,
    regular: bool,
    counters: &dyn Fn(&str) -> Counters,
) -> Container {
    let status = container_status(r);
    let running = status == ContainerStatus::Running;
    let Counters {
        current_restarts,
        total_restarts,
    } = counters(&r.id);
    Container {
        name,
        id: r.id.chars().take(12).collect(),
        oper_status: status,
        ready: regular.then(|| is_ready(r, status)),
        start_time: r.started_at.as_deref().and_then(rfc3339_millis),
        current_restarts,
        total_restarts,
        probes: if running { probes(r) } else { None },
        devices: r.devices.clone(),
        gpus: r.gpus.iter().map(|g| Gpu { uuid: g.clone() }).collect(),
        nvidia_driver_capabilities: r.nvidia_capabilities.clone(),
    }
}

/// Running, and healthy if it has a health check.
fn is_ready(r: &ContainerRecord, status: ContainerStatus) -> bool {
    status == ContainerStatus::Running && r.health.as_deref().is_none_or(|h| h == "healthy")
}

fn vm_container(
    r: &ContainerRecord,
    name: String,
    counters: &dyn Fn(&str) -> Counters,
    guest: Option<&GuestInfo>,
) -> VmContainer {
    let status = container_status(r);
    let Counters {
        current_restarts,
        total_restarts,
    } = counters(&r.id);
    // What the agent said is shown only while it is connected to a running launcher: after
    // that the guest may have rebooted into another system or other addresses.
    let guest = guest.filter(|g| g.connected && status == ContainerStatus::Running);
    VmContainer {
        name,
        id: r.id.chars().take(12).collect(),
        oper_status: status,
        ready: is_ready(r, status),
        start_time: r.started_at.as_deref().and_then(rfc3339_millis),
        current_restarts,
        total_restarts,
        agent: if guest.is_some() {
            AgentStatus::Connected
        } else {
            AgentStatus::Unavailable
        },
        guest_os: guest.and_then(|g| g.os.clone()).filter(|os| !os.is_empty()),
        ips: guest.map(|g| g.ips.clone()).unwrap_or_default(),
    }
}

fn container_status(r: &ContainerRecord) -> ContainerStatus {
    match r.status.as_str() {
        "running" => ContainerStatus::Running,
        "restarting" => ContainerStatus::Restarting,
        "paused" => ContainerStatus::Paused,
        "created" => ContainerStatus::Created,
        "exited" if r.exit_code == 0 => ContainerStatus::Completed,
        "exited" | "dead" => ContainerStatus::Failed,
        "removing" => ContainerStatus::Removing,
        _ => ContainerStatus::Unknown,
    }
}

/// `mains`: the status of each non-init container, the VM included.
fn instance_status(mains: &[ContainerStatus], inits: &[ContainerStatus]) -> InstanceStatus {
    use ContainerStatus as C;
    let any = |s: C| mains.iter().chain(inits).any(|c| *c == s);
    let main_is = |f: &dyn Fn(C) -> bool| mains.iter().all(|s| f(*s));
    if any(C::Restarting) {
        InstanceStatus::Restarting
    } else if any(C::Failed) {
        InstanceStatus::Failed
    } else if any(C::Removing) {
        InstanceStatus::Removing
    } else if mains.contains(&C::Paused) {
        InstanceStatus::Paused
    } else if mains.is_empty() {
        InstanceStatus::Starting
    } else if main_is(&|s| s == C::Completed) {
        InstanceStatus::Completed
    } else if main_is(&|s| matches!(s, C::Running | C::Completed)) {
        InstanceStatus::Running
    } else {
        InstanceStatus::Starting
    }
}

fn probes(r: &ContainerRecord) -> Option<Probes> {
    let p = |status| Some(Probe { status });
    let (startup, current) = match r.health.as_deref()? {
        "healthy" => (p(ProbeStatus::Success), ProbeStatus::Success),
        "unhealthy" => (
            if r.health_passed {
                p(ProbeStatus::Success)
            } else {
                None
            },
            ProbeStatus::Failure,
        ),
        "starting" => (p(ProbeStatus::Pending), ProbeStatus::Pending),
        _ => return None,
    };
    Some(Probes {
        startup,
        readiness: p(current),
        liveness: p(current),
    })
}

/// Networks Docker provides on every host; the rest are created for applications.
fn is_user_defined(network: &str) -> bool {
    !matches!(network, "bridge" | "host" | "none")
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, item: T) {
    if !v.contains(&item) {
        v.push(item);
    }
}

fn cidr(ip: IpAddr, prefix: u8) -> String {
    format!("{ip}/{prefix}")
}

fn application_network<'r, I>(all: impl Fn() -> I) -> Option<ApplicationNetwork>
where
    I: Iterator<Item = &'r ContainerRecord>,
{
    let network = all()
        .flat_map(|r| r.networks.iter().map(|n| n.name.as_str()))
        .filter(|n| is_user_defined(n))
        .min()?
        .to_string();
    let mut ips = Vec::new();
    let mut dns_records = Vec::new();
    for r in all() {
        let Some(n) = r.networks.iter().find(|n| n.name == network) else {
            continue;
        };
        let addresses = [
            (n.ip, n.prefix_len, "A"),
            (n.ipv6, n.ipv6_prefix_len, "AAAA"),
        ];
        for (ip, prefix, kind) in addresses {
            let Some(ip) = ip else { continue };
            push_unique(&mut ips, cidr(ip, prefix));
            let mut names: Vec<&str> = Vec::new();
            for name in std::iter::once(&r.name).chain(&n.aliases) {
                if !name.is_empty() {
                    push_unique(&mut names, name);
                }
            }
            for name in names {
                let record = format!("{name}. {DOCKER_DNS_TTL} IN {kind} {ip}");
                push_unique(&mut dns_records, record);
            }
        }
    }
    Some(ApplicationNetwork {
        shared_application_network: network,
        ips,
        dns_records,
    })
}

fn gateway_network<'r, I>(all: impl Fn() -> I) -> Option<GatewayNetwork>
where
    I: Iterator<Item = &'r ContainerRecord>,
{
    let mut ips = Vec::new();
    for n in all()
        .flat_map(|r| &r.networks)
        .filter(|n| n.name == "bridge")
    {
        for (ip, prefix) in [(n.ip, n.prefix_len), (n.ipv6, n.ipv6_prefix_len)] {
            if let Some(ip) = ip {
                push_unique(&mut ips, cidr(ip, prefix));
            }
        }
    }
    (!ips.is_empty()).then_some(GatewayNetwork { ips })
}

fn ingress<'r, I>(all: impl Fn() -> I) -> Option<Ingress>
where
    I: Iterator<Item = &'r ContainerRecord>,
{
    let mut bindings: Vec<&inspect::Port> = all().flat_map(|r| &r.ports).collect();
    if bindings.is_empty() {
        return None;
    }
    bindings.sort();
    bindings.dedup();
    let mut ips = Vec::new();
    for ip in bindings.iter().filter_map(|p| p.host_ip) {
        if !ip.is_unspecified() {
            push_unique(&mut ips, ip.to_string());
        }
    }
    let ports = bindings
        .into_iter()
        .map(|p| IngressPort {
            port: p.port,
            protocol: p.protocol.clone(),
            host_ip: p.host_ip.map(|ip| ip.to_string()),
            host_port: p.host_port,
        })
        .collect();
    Some(Ingress { ips, ports })
}

fn ephemeral_volumes<'r, I>(all: impl Fn() -> I) -> Vec<EphemeralVolume>
where
    I: Iterator<Item = &'r ContainerRecord>,
{
    let mut volumes = Vec::new();
    for m in all()
        .flat_map(|r| &r.mounts)
        .filter(|m| m.kind == MountKind::Tmpfs)
    {
        let v = EphemeralVolume {
            name: m.destination.clone(),
            size: m.size.clone(),
        };
        push_unique(&mut volumes, v);
    }
    volumes
}

fn persistent_volumes<'r, I>(all: impl Fn() -> I) -> Vec<PersistentVolume>
where
    I: Iterator<Item = &'r ContainerRecord>,
{
    let mut volumes: Vec<PersistentVolume> = Vec::new();
    for r in all() {
        for m in r.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
            let Some(full) = m.name.as_deref() else {
                continue;
            };
            if volumes.iter().any(|v| v.host_volume == full) {
                continue;
            }
            let short = r
                .compose_project
                .as_deref()
                .and_then(|p| full.strip_prefix(p)?.strip_prefix('_'))
                .filter(|s| !s.is_empty())
                .unwrap_or(full);
            volumes.push(PersistentVolume {
                name: short.to_string(),
                host_volume: full.to_string(),
            });
        }
    }
    volumes
}

/// Docker's `2021-02-17T12:08:39.100123456Z` as `2021-02-17T12:08:39.100Z`. None unless the text
/// is a valid RFC 3339 UTC timestamp after Go's zero time.
pub fn rfc3339_millis(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 40 || !s.is_ascii() {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = &s[range];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let year = num(0..4)?;
    let month = num(5..7)?;
    let day = num(8..10)?;
    let hour = num(11..13)?;
    let minute = num(14..16)?;
    let second = num(17..19)?;
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| b[i] != c)
        || year <= 1
        || !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let rest = &s[19..];
    let fraction = match rest.strip_prefix('.') {
        Some(f) => f.strip_suffix('Z')?,
        None if rest == "Z" => "",
        None => return None,
    };
    if (rest.starts_with('.') && fraction.is_empty())
        || !fraction.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let millis: String = fraction
        .chars()
        .chain(std::iter::repeat('0'))
        .take(3)
        .collect();
    Some(format!("{}.{millis}Z", &s[..19]))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::inspect::parse;
    use serde_json::{Value, json};

    const CTX: Context = Context {
        tenant: "acme",
        host: "edge-1",
    };

    fn fixture(name: &str) -> ContainerRecord {
        let json: &[u8] = match name {
            "main" => include_bytes!("../tests/fixtures/docker/main.json"),
            "sidecar" => include_bytes!("../tests/fixtures/docker/sidecar.json"),
            "setup" => include_bytes!("../tests/fixtures/docker/setup.json"),
            "plain" => include_bytes!("../tests/fixtures/docker/plain.json"),
            "failed" => include_bytes!("../tests/fixtures/docker/failed.json"),
            "paused" => include_bytes!("../tests/fixtures/docker/paused.json"),
            "restarting" => include_bytes!("../tests/fixtures/docker/restarting.json"),
            "unhealthy" => include_bytes!("../tests/fixtures/docker/unhealthy.json"),
            "starting" => include_bytes!("../tests/fixtures/docker/starting.json"),
            "gpu" => include_bytes!("../tests/fixtures/docker/gpu.json"),
            "v6" => include_bytes!("../tests/fixtures/docker/v6.json"),
            "compose" => include_bytes!("../tests/fixtures/docker/compose.json"),
            _ => panic!("no fixture {name}"),
        };
        parse(json).unwrap().unwrap()
    }

    fn all_fixtures() -> Vec<ContainerRecord> {
        [
            "main",
            "sidecar",
            "setup",
            "plain",
            "failed",
            "paused",
            "restarting",
            "unhealthy",
            "starting",
            "gpu",
            "v6",
            "compose",
        ]
        .iter()
        .map(|n| fixture(n))
        .collect()
    }

    fn zero(_: &str) -> Counters {
        Counters::default()
    }

    fn one(application: &str, instance: &str, records: &[ContainerRecord]) -> Value {
        let si =
            service_instance(application, instance, records, &zero, &Guests::new(), &CTX).unwrap();
        serde_json::to_value(si).unwrap()
    }

    #[test]
    fn multi_container_instance_with_init_network_ports_volumes() {
        let records = all_fixtures();
        let counters = |id: &str| match &id[..12] {
            "1a3ea50401cf" => Counters {
                current_restarts: 2,
                total_restarts: 7,
            },
            _ => Counters::default(),
        };
        let si =
            service_instance("shop", "web-1", &records, &counters, &Guests::new(), &CTX).unwrap();
        assert_eq!(
            serde_json::to_value(si).unwrap(),
            json!({
                "name": "acme.shop.web-1",
                "application-version": "1.2.3",
                "oper-status": "running",
                "ready": true,
                "host": "edge-1",
                "application-network": {
                    "shared-application-network": "supd-model-net",
                    "ips": ["172.18.0.2/16"],
                    "dns-records": [
                        "model-main. 600 IN A 172.18.0.2",
                        "web. 600 IN A 172.18.0.2",
                        "web-1. 600 IN A 172.18.0.2",
                        "1a3ea50401cf. 600 IN A 172.18.0.2"
                    ]
                },
                "ingress": {
                    "ips": ["127.0.0.1"],
                    "ports": [
                        {"port": 80, "protocol": "tcp", "host-ip": "127.0.0.1", "host-port": 18080},
                        {"port": 81, "protocol": "udp", "host-ip": "0.0.0.0", "host-port": 18081},
                        {"port": 81, "protocol": "udp", "host-ip": "::", "host-port": 18081}
                    ]
                },
                "ephemeral-volumes": [
                    {"name": "/cache", "size": "1048576"},
                    {"name": "/scratch", "size": "64m"}
                ],
                "persistent-volumes": [{"name": "shop_data", "host-volume": "shop_data"}],
                "init-containers": [{
                    "name": "setup",
                    "id": "b21fbc7eeae2",
                    "oper-status": "completed",
                    "start-time": "2026-11-27T13:56:48.087Z",
                    "current-restarts": 0,
                    "total-restarts": 0
                }],
                "containers": [
                    {
                        "name": "acme.shop.web-1.main",
                        "id": "1a3ea50401cf",
                        "oper-status": "running",
                        "ready": true,
                        "start-time": "2026-11-27T13:56:48.612Z",
                        "current-restarts": 2,
                        "total-restarts": 7,
                        "devices": ["/dev/xnull"]
                    },
                    {
                        "name": "acme.shop.web-1.sidecar",
                        "id": "d35fe734b158",
                        "oper-status": "running",
                        "ready": true,
                        "start-time": "2026-11-27T13:56:48.787Z",
                        "current-restarts": 0,
                        "total-restarts": 0,
                        "probes": {
                            "startup": {"status": "success"},
                            "readiness": {"status": "success"},
                            "liveness": {"status": "success"}
                        }
                    }
                ]
            })
        );
    }

    #[test]
    fn compose_instance_strips_project_from_volume() {
        assert_eq!(
            one("blog", "db-1", &all_fixtures()),
            json!({
                "name": "acme.blog.db-1",
                "oper-status": "running",
                "ready": true,
                "host": "edge-1",
                "application-network": {
                    "shared-application-network": "supd-model-net",
                    "ips": ["172.18.0.4/16"],
                    "dns-records": [
                        "blog_db_1. 600 IN A 172.18.0.4",
                        "db. 600 IN A 172.18.0.4",
                        "8da2413250cf. 600 IN A 172.18.0.4"
                    ]
                },
                "ephemeral-volumes": [{"name": "/run"}],
                "persistent-volumes": [{"name": "dbdata", "host-volume": "blog_dbdata"}],
                "containers": [{
                    "name": "acme.blog.db-1.db",
                    "id": "8da2413250cf",
                    "oper-status": "running",
                    "ready": true,
                    "start-time": "2026-11-27T13:58:05.255Z",
                    "current-restarts": 0,
                    "total-restarts": 0
                }]
            })
        );
    }

    #[test]
    fn plain_container_on_the_default_bridge() {
        assert_eq!(
            one("shop", "api-1", &all_fixtures()),
            json!({
                "name": "acme.shop.api-1",
                "oper-status": "running",
                "ready": true,
                "host": "edge-1",
                "gateway-network": {"ips": ["172.17.0.2/16"]},
                "containers": [{
                    "name": "acme.shop.api-1.api",
                    "id": "15ecc88b4676",
                    "oper-status": "running",
                    "ready": true,
                    "start-time": "2026-11-27T13:56:49.165Z",
                    "current-restarts": 0,
                    "total-restarts": 0
                }]
            })
        );
    }

    #[test]
    fn created_container_with_gpu_request() {
        assert_eq!(
            one("shop", "gpu-1", &all_fixtures()),
            json!({
                "name": "acme.shop.gpu-1",
                "oper-status": "starting",
                "ready": false,
                "host": "edge-1",
                "containers": [{
                    "name": "acme.shop.gpu-1.gpu",
                    "id": "40f93af708a8",
                    "oper-status": "created",
                    "ready": false,
                    "current-restarts": 0,
                    "total-restarts": 0,
                    "gpus": [{"uuid": "GPU-de663f3f-856c-4e48-9269-c2269169bfda"}],
                    "nvidia-driver-capabilities": "utility, compute"
                }]
            })
        );
    }

    #[test]
    fn failed_paused_restarting() {
        let records = all_fixtures();
        let failed = one("shop", "api-2", &records);
        assert_eq!(
            failed,
            json!({
                "name": "acme.shop.api-2",
                "oper-status": "failed",
                "ready": false,
                "host": "edge-1",
                "containers": [{
                    "name": "acme.shop.api-2.api",
                    "id": "68ed13e1e292",
                    "oper-status": "failed",
                    "ready": false,
                    "start-time": "2026-11-27T13:56:49.497Z",
                    "current-restarts": 0,
                    "total-restarts": 0
                }]
            })
        );
        let paused = one("shop", "api-3", &records);
        assert_eq!(paused["oper-status"], "paused");
        assert_eq!(paused["ready"], false);
        assert_eq!(paused["containers"][0]["oper-status"], "paused");
        assert_eq!(paused["gateway-network"], json!({"ips": ["172.17.0.7/16"]}));
        let restarting = one("shop", "api-4", &records);
        assert_eq!(restarting["oper-status"], "restarting");
        assert_eq!(restarting["containers"][0]["oper-status"], "restarting");
        assert_eq!(
            restarting["containers"][0]["start-time"],
            "2026-11-27T13:57:09.029Z"
        );
        assert!(
            restarting.get("gateway-network").is_none(),
            "no address while restarting"
        );
    }

    #[test]
    fn health_check_probes() {
        let records = all_fixtures();
        let unhealthy = one("shop", "worker-1", &records);
        assert_eq!(
            unhealthy["containers"][0],
            json!({
                "name": "acme.shop.worker-1.worker",
                "id": "9885268368bb",
                "oper-status": "running",
                "ready": false,
                "start-time": "2026-11-27T13:56:49.946Z",
                "current-restarts": 0,
                "total-restarts": 0,
                "probes": {
                    "readiness": {"status": "failure"},
                    "liveness": {"status": "failure"}
                }
            })
        );
        assert_eq!(unhealthy["ready"], false);
        assert_eq!(unhealthy["oper-status"], "running");
        let starting = one("shop", "worker-2", &records);
        assert_eq!(
            starting["containers"][0]["probes"],
            json!({
                "startup": {"status": "pending"},
                "readiness": {"status": "pending"},
                "liveness": {"status": "pending"}
            })
        );
        assert_eq!(starting["containers"][0]["ready"], false);

        // Unhealthy after having passed once: the startup probe did succeed.
        let mut r = fixture("unhealthy");
        r.health_passed = true;
        let v = one("shop", "worker-1", std::slice::from_ref(&r));
        assert_eq!(
            v["containers"][0]["probes"]["startup"],
            json!({"status": "success"})
        );
        // A stopped container's health is stale: no probes.
        r.status = "exited".into();
        r.exit_code = 137;
        let v = one("shop", "worker-1", std::slice::from_ref(&r));
        assert!(v["containers"][0].get("probes").is_none());
        assert_eq!(v["containers"][0]["oper-status"], "failed");
    }

    #[test]
    fn ipv6_application_network_and_gateway() {
        let mut r = fixture("v6");
        // With both networks present the alphabetically first one is the application network.
        assert_eq!(
            one("shop", "web-3", std::slice::from_ref(&r))["application-network"]["shared-application-network"],
            "supd-model-net"
        );
        r.networks.retain(|n| n.name != "supd-model-net");
        assert_eq!(
            one("shop", "web-3", std::slice::from_ref(&r)),
            json!({
                "name": "acme.shop.web-3",
                "oper-status": "running",
                "ready": true,
                "host": "edge-1",
                "application-network": {
                    "shared-application-network": "supd-model-net6",
                    "ips": ["172.30.5.2/24", "fd00:5d::2/64"],
                    "dns-records": [
                        "model-v6. 600 IN A 172.30.5.2",
                        "web. 600 IN A 172.30.5.2",
                        "4d6efb867567. 600 IN A 172.30.5.2",
                        "model-v6. 600 IN AAAA fd00:5d::2",
                        "web. 600 IN AAAA fd00:5d::2",
                        "4d6efb867567. 600 IN AAAA fd00:5d::2"
                    ]
                },
                "gateway-network": {"ips": ["172.17.0.6/16"]},
                "containers": [{
                    "name": "acme.shop.web-3.web",
                    "id": "4d6efb867567",
                    "oper-status": "running",
                    "ready": true,
                    "start-time": "2026-11-27T13:56:59.890Z",
                    "current-restarts": 0,
                    "total-restarts": 0
                }]
            })
        );
    }

    #[test]
    fn shared_namespaces_and_volumes_show_once() {
        let main = fixture("main");
        let mut twin = main.clone();
        twin.id = "f".repeat(64);
        twin.identity.container = "twin".into();
        let v = one("shop", "web-1", &[main, twin]);
        assert_eq!(v["application-network"]["ips"], json!(["172.18.0.2/16"]));
        assert_eq!(
            v["application-network"]["dns-records"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
        assert_eq!(v["persistent-volumes"].as_array().unwrap().len(), 1);
        assert_eq!(v["ephemeral-volumes"].as_array().unwrap().len(), 2);
        assert_eq!(v["ingress"]["ports"].as_array().unwrap().len(), 3);
        assert_eq!(v["containers"][1]["name"], "acme.shop.web-1.twin");
        assert_eq!(v["containers"][1]["id"], "ffffffffffff");
    }

    #[test]
    fn listing_is_sorted_and_per_application() {
        let records = all_fixtures();
        let names: Vec<String> =
            service_instances("shop", records.iter().rev(), &zero, &Guests::new(), &CTX)
                .into_iter()
                .map(|s| s.name)
                .collect();
        assert_eq!(
            names,
            [
                "acme.shop.api-1",
                "acme.shop.api-2",
                "acme.shop.api-3",
                "acme.shop.api-4",
                "acme.shop.gpu-1",
                "acme.shop.web-1",
                "acme.shop.web-3",
                "acme.shop.worker-1",
                "acme.shop.worker-2"
            ]
        );
        assert_eq!(
            service_instances("blog", &records, &zero, &Guests::new(), &CTX).len(),
            1
        );
        assert!(service_instances("nope", &records, &zero, &Guests::new(), &CTX).is_empty());
        let mut ten = fixture("plain");
        ten.identity.instance = 10;
        let two = fixture("failed");
        let order: Vec<String> =
            service_instances("shop", [&ten, &two], &zero, &Guests::new(), &CTX)
                .into_iter()
                .map(|s| s.name)
                .collect();
        assert_eq!(
            order,
            ["acme.shop.api-2", "acme.shop.api-10"],
            "N sorts numerically"
        );
    }

    #[test]
    fn lookup_by_short_name() {
        let records = all_fixtures();
        assert!(service_instance("shop", "web-1", &records, &zero, &Guests::new(), &CTX).is_some());
        for miss in [
            "web-2", "web", "web-01", "web-0", "1", "-1", "api-1x", "", "Web-1",
        ] {
            assert!(
                service_instance("shop", miss, &records, &zero, &Guests::new(), &CTX).is_none(),
                "{miss}"
            );
        }
        assert!(service_instance("blog", "web-1", &records, &zero, &Guests::new(), &CTX).is_none());
    }

    #[test]
    fn instance_names() {
        assert_eq!(parse_instance_name("web-1"), Some(("web", 1)));
        assert_eq!(
            parse_instance_name("my-web-app-42"),
            Some(("my-web-app", 42))
        );
        assert_eq!(parse_instance_name("a-4294967295"), Some(("a", u32::MAX)));
        for bad in [
            "web",
            "web-",
            "-1",
            "web-0",
            "web-01",
            "web--1",
            "web-+1",
            "Web-1",
            "web-4294967296",
            "web-1 ",
            "",
        ] {
            assert_eq!(parse_instance_name(bad), None, "{bad}");
        }
    }

    /// (State.Status, exit code, init container)
    type Spec<'a> = (&'a str, i64, bool);

    fn status_of(statuses: &[Spec]) -> InstanceStatus {
        let base = fixture("plain");
        let records: Vec<ContainerRecord> = statuses
            .iter()
            .enumerate()
            .map(|(i, &(status, exit_code, init))| {
                let mut r = base.clone();
                r.id = format!("{i:064}");
                r.identity.container = format!("c{i}");
                r.identity.init = init;
                r.status = status.into();
                r.exit_code = exit_code;
                r
            })
            .collect();
        service_instance("shop", "api-1", &records, &zero, &Guests::new(), &CTX)
            .unwrap()
            .oper_status
    }

    #[test]
    fn instance_status_rules() {
        use InstanceStatus::*;
        let cases: &[(&[Spec], InstanceStatus)] = &[
            (&[("running", 0, false), ("running", 0, false)], Running),
            (&[("running", 0, false), ("exited", 0, false)], Running),
            (&[("running", 0, false), ("exited", 0, true)], Running),
            (&[("exited", 0, false), ("exited", 0, false)], Completed),
            (&[("running", 0, false), ("exited", 2, false)], Failed),
            (&[("running", 0, false), ("dead", 0, false)], Failed),
            (&[("created", 0, false), ("exited", 1, true)], Failed),
            (
                &[
                    ("running", 0, false),
                    ("restarting", 1, false),
                    ("exited", 1, false),
                ],
                Restarting,
            ),
            (
                &[("created", 0, false), ("restarting", 1, true)],
                Restarting,
            ),
            (&[("running", 0, false), ("paused", 0, false)], Paused),
            (&[("running", 0, false), ("removing", 0, false)], Removing),
            (&[("running", 0, false), ("created", 0, false)], Starting),
            (&[("created", 0, false), ("running", 0, true)], Starting),
            (&[("running", 0, true)], Starting),
            (&[("exited", 0, true)], Starting),
            (&[("running", 0, false), ("weird", 0, false)], Starting),
        ];
        for (statuses, expected) in cases {
            assert_eq!(status_of(statuses), *expected, "{statuses:?}");
        }
    }

    #[test]
    fn readiness_needs_every_regular_container() {
        let mut sick = fixture("unhealthy");
        sick.identity.service = "api".into();
        sick.identity.container = "sick".into();
        let plain = fixture("plain");
        let v = one("shop", "api-1", &[plain.clone(), sick]);
        assert_eq!(
            (v["ready"].clone(), v["oper-status"].clone()),
            (json!(false), json!("running"))
        );
        let mut init = plain.clone();
        init.identity.init = true;
        init.identity.container = "init".into();
        init.id = "0".repeat(64);
        let v = one("shop", "api-1", &[plain, init.clone()]);
        assert_eq!(v["ready"], true);
        assert!(v["init-containers"][0].get("ready").is_none());
        let v = one("shop", "api-1", &[init]);
        assert_eq!(v["ready"], false, "only init containers: not ready");
        assert_eq!(v["containers"], json!([]), "containers is always present");
    }

    /// Instance api-1 of "shop" with its VM launcher `container`, running, id of `c`s.
    fn launcher(container: &str, c: char) -> ContainerRecord {
        let mut r = fixture("plain");
        r.identity.container = container.into();
        r.id = c.to_string().repeat(64);
        r.vm = Some(inspect::VmSpec {
            agent: inspect::DEFAULT_VM_AGENT.into(),
            console: inspect::DEFAULT_VM_CONSOLE.into(),
            terminals: Vec::new(),
            address: None,
        });
        r
    }

    fn with_guests(records: &[ContainerRecord], guests: &Guests) -> Value {
        let si = service_instance("shop", "api-1", records, &zero, guests, &CTX).unwrap();
        serde_json::to_value(si).unwrap()
    }

    fn connected() -> GuestInfo {
        GuestInfo {
            connected: true,
            os: Some(GuestOs {
                id: Some("debian".into()),
                pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
                kernel_release: Some("6.1.0-28-cloud-amd64".into()),
                machine: Some("x86_64".into()),
                ..GuestOs::default()
            }),
            ips: vec!["10.0.2.15/24".into(), "fec0::5054:ff:fe12:3456/64".into()],
        }
    }

    #[test]
    fn an_instance_of_only_a_vm() {
        let vm = launcher("qemu", 'a');
        let counters = |id: &str| match &id[..12] {
            "aaaaaaaaaaaa" => Counters {
                current_restarts: 1,
                total_restarts: 3,
            },
            _ => Counters::default(),
        };
        let si = service_instance(
            "shop",
            "api-1",
            std::slice::from_ref(&vm),
            &counters,
            &Guests::new(),
            &CTX,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(si).unwrap(),
            json!({
                "name": "acme.shop.api-1",
                "oper-status": "running",
                "ready": true,
                "host": "edge-1",
                "gateway-network": {"ips": ["172.17.0.2/16"]},
                "containers": [],
                "vm-container": {
                    "name": "acme.shop.api-1.qemu",
                    "id": "aaaaaaaaaaaa",
                    "oper-status": "running",
                    "ready": true,
                    "start-time": "2026-11-27T13:56:49.165Z",
                    "current-restarts": 1,
                    "total-restarts": 3,
                    "agent": "unavailable"
                }
            })
        );
    }

    #[test]
    fn guest_information_while_the_agent_is_connected() {
        let vm = launcher("qemu", 'a');
        let mut guests = Guests::new();
        guests.insert(vm.id.clone(), connected());
        let v = with_guests(std::slice::from_ref(&vm), &guests);
        assert_eq!(
            v["vm-container"],
            json!({
                "name": "acme.shop.api-1.qemu",
                "id": "aaaaaaaaaaaa",
                "oper-status": "running",
                "ready": true,
                "start-time": "2026-11-27T13:56:49.165Z",
                "current-restarts": 0,
                "total-restarts": 0,
                "agent": "connected",
                "guest-os": {
                    "id": "debian",
                    "pretty-name": "Debian GNU/Linux 12 (bookworm)",
                    "kernel-release": "6.1.0-28-cloud-amd64",
                    "machine": "x86_64"
                },
                "ips": ["10.0.2.15/24", "fec0::5054:ff:fe12:3456/64"]
            })
        );
        // Every member of guest-os, kebab-case.
        let mut full = connected();
        full.os = Some(GuestOs {
            id: Some("a".into()),
            name: Some("b".into()),
            pretty_name: Some("c".into()),
            version: Some("d".into()),
            version_id: Some("e".into()),
            kernel_release: Some("f".into()),
            machine: Some("g".into()),
        });
        guests.insert(vm.id.clone(), full);
        let v = with_guests(std::slice::from_ref(&vm), &guests);
        assert_eq!(
            v["vm-container"]["guest-os"],
            json!({"id": "a", "name": "b", "pretty-name": "c", "version": "d",
                   "version-id": "e", "kernel-release": "f", "machine": "g"})
        );
        // Known but empty: not shown.
        guests.insert(
            vm.id.clone(),
            GuestInfo {
                connected: true,
                os: Some(GuestOs::default()),
                ips: Vec::new(),
            },
        );
        let v = with_guests(std::slice::from_ref(&vm), &guests);
        assert_eq!(v["vm-container"]["agent"], "connected");
        assert!(v["vm-container"].get("guest-os").is_none());
        assert!(v["vm-container"].get("ips").is_none());
    }

    #[test]
    fn agent_unavailable_hides_what_it_said() {
        let vm = launcher("qemu", 'a');
        let hidden = |records: &[ContainerRecord], info: GuestInfo| {
            let mut guests = Guests::new();
            guests.insert("a".repeat(64), info);
            let v = with_guests(records, &guests)["vm-container"].clone();
            assert_eq!(v["agent"], "unavailable", "{v}");
            assert!(v.get("guest-os").is_none() && v.get("ips").is_none(), "{v}");
            v
        };
        // Not connected (the last answer is stale).
        let mut info = connected();
        info.connected = false;
        hidden(std::slice::from_ref(&vm), info);
        // Connected, as far as the client knows, to a launcher that no longer runs.
        for (status, exit_code, shown) in [
            ("exited", 137, "failed"),
            ("exited", 0, "completed"),
            ("paused", 0, "paused"),
            ("restarting", 1, "restarting"),
            ("created", 0, "created"),
        ] {
            let mut stopped = vm.clone();
            stopped.status = status.into();
            stopped.exit_code = exit_code;
            let v = hidden(std::slice::from_ref(&stopped), connected());
            assert_eq!(v["oper-status"], shown);
            assert_eq!(v["ready"], false);
        }
        // Guest information of another VM is not this one's.
        let mut guests = Guests::new();
        guests.insert("b".repeat(64), connected());
        assert_eq!(
            with_guests(std::slice::from_ref(&vm), &guests)["vm-container"]["agent"],
            "unavailable"
        );
    }

    #[test]
    fn the_vm_counts_as_a_regular_container() {
        let app = fixture("plain");
        let vm = launcher("qemu", 'a');
        let v = with_guests(&[app.clone(), vm.clone()], &Guests::new());
        assert_eq!(
            (v["oper-status"].clone(), v["ready"].clone()),
            (json!("running"), json!(true))
        );
        let names: Vec<&Value> = v["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["name"])
            .collect();
        assert_eq!(
            names,
            [&json!("acme.shop.api-1.api")],
            "the launcher is no container"
        );
        let set = |status: &str, exit_code: i64| {
            let mut r = vm.clone();
            r.status = status.into();
            r.exit_code = exit_code;
            let v = with_guests(&[app.clone(), r], &Guests::new());
            (
                v["oper-status"].as_str().unwrap().to_string(),
                v["ready"].as_bool().unwrap(),
            )
        };
        assert_eq!(set("exited", 137), ("failed".into(), false));
        assert_eq!(set("paused", 0), ("paused".into(), false));
        assert_eq!(set("restarting", 1), ("restarting".into(), false));
        assert_eq!(set("created", 0), ("starting".into(), false));
        assert_eq!(set("removing", 0), ("removing".into(), false));
        assert_eq!(set("exited", 0), ("running".into(), false));
        // A launcher's health check decides its readiness as for any container.
        let mut sick = vm.clone();
        sick.health = Some("unhealthy".into());
        let v = with_guests(&[app.clone(), sick], &Guests::new());
        assert_eq!(
            (v["ready"].clone(), v["vm-container"]["ready"].clone()),
            (json!(false), json!(false))
        );
        // A VM beside init containers only: the VM decides.
        let mut init = app.clone();
        init.identity.init = true;
        init.identity.container = "setup".into();
        init.status = "exited".into();
        let v = with_guests(&[init, vm], &Guests::new());
        assert_eq!(
            (v["oper-status"].clone(), v["ready"].clone()),
            (json!("running"), json!(true))
        );
        assert_eq!(v["containers"], json!([]));
        assert_eq!(v["init-containers"][0]["name"], "setup");
    }

    #[test]
    fn one_vm_per_instance_the_first_by_name_then_id() {
        let b2 = launcher("b", '2');
        let a9 = launcher("a", '9');
        let a1 = launcher("a", '1');
        let all = [b2.clone(), a9.clone(), a1.clone()];
        assert_eq!(vm_launcher(&all).map(|r| &r.id), Some(&a1.id));
        assert_eq!(vm_launcher([&b2, &a9]).map(|r| &r.id), Some(&a9.id));
        assert_eq!(vm_launcher([&fixture("plain")]), None);
        // The others are shown nowhere, and do not count for the instance.
        let mut stopped = b2.clone();
        stopped.status = "exited".into();
        stopped.exit_code = 1;
        let v = with_guests(&[stopped, a9, a1], &Guests::new());
        assert_eq!(v["vm-container"]["name"], "acme.shop.api-1.a");
        assert_eq!(v["vm-container"]["id"], "111111111111");
        assert_eq!(v["containers"], json!([]));
        assert!(v.get("init-containers").is_none());
        assert_eq!(v["oper-status"], "running");
        // Listing: the same answer per instance.
        let list = service_instances("shop", &all, &zero, &Guests::new(), &CTX);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].vm_container.as_ref().unwrap().id, "111111111111");
    }

    #[test]
    fn fields_select_in_the_vm_container() {
        let mut guests = Guests::new();
        guests.insert("a".repeat(64), connected());
        let v = with_guests(&[fixture("plain"), launcher("qemu", 'a')], &guests);
        let select = |expr: &str| crate::fields::Fields::parse(expr).unwrap().apply(&v);
        assert_eq!(
            select("name;vm-container(name;agent;guest-os/pretty-name)"),
            json!({
                "name": "acme.shop.api-1",
                "vm-container": {
                    "name": "acme.shop.api-1.qemu",
                    "agent": "connected",
                    "guest-os": {"pretty-name": "Debian GNU/Linux 12 (bookworm)"}
                }
            })
        );
        assert_eq!(
            select("supd:vm-container/ips"),
            json!({"vm-container": {"ips": ["10.0.2.15/24", "fec0::5054:ff:fe12:3456/64"]}})
        );
        assert_eq!(
            select("vm-container"),
            json!({"vm-container": v["vm-container"]})
        );
        assert_eq!(
            select("containers/name;vm-container/id"),
            json!({"containers": [{"name": "acme.shop.api-1.api"}], "vm-container": {"id": "aaaaaaaaaaaa"}})
        );
    }

    #[test]
    fn no_vm_no_member() {
        let v = one("shop", "api-1", &[fixture("plain")]);
        assert!(v.get("vm-container").is_none());
    }

    #[test]
    fn start_time_format() {
        let ok = [
            ("2021-02-17T12:08:39.100123456Z", "2021-02-17T12:08:39.100Z"),
            ("2026-11-27T13:56:48.78704988Z", "2026-11-27T13:56:48.787Z"),
            (
                "2021-02-17T12:08:39.9999999999Z",
                "2021-02-17T12:08:39.999Z",
            ),
            ("2021-02-17T12:08:39.5Z", "2021-02-17T12:08:39.500Z"),
            ("2021-02-17T12:08:39Z", "2021-02-17T12:08:39.000Z"),
            ("2024-02-29T23:59:60Z", "2024-02-29T23:59:60.000Z"),
            ("2000-02-29T00:00:00Z", "2000-02-29T00:00:00.000Z"),
        ];
        for (input, want) in ok {
            assert_eq!(rfc3339_millis(input).as_deref(), Some(want), "{input}");
        }
        let bad = [
            "0001-01-01T00:00:00Z",
            "",
            "2021-02-17T12:08:39",
            "2021-02-17T12:08:39.Z",
            "2021-02-17T12:08:39.1+01:00",
            "2021-02-17T12:08:39+00:00",
            "2021-02-17 12:08:39Z",
            "2021-13-17T12:08:39Z",
            "2021-00-17T12:08:39Z",
            "2023-02-29T12:08:39Z",
            "1900-02-29T12:08:39Z",
            "2021-04-31T12:08:39Z",
            "2021-02-17T24:08:39Z",
            "2021-02-17T12:60:39Z",
            "2021-02-17T12:08:61Z",
            "2021-02-17T12:08:39.1a2Z",
            "+021-02-17T12:08:39Z",
            "2021-02-17T12:08:39.1ZZ",
            "2021-02-17T12:08:3é.1Z",
            "2021-02-17T12:08:39.123456789012345678901Z",
        ];
        for input in bad {
            assert_eq!(rfc3339_millis(input), None, "{input}");
        }
    }

    /// A cheap stand-in for the fuzzer: truncated and corrupted documents never panic, and
    /// whatever still parses still maps.
    #[test]
    fn corrupted_fixtures_never_panic() {
        let docs: [&[u8]; 3] = [
            include_bytes!("../tests/fixtures/docker/main.json"),
            include_bytes!("../tests/fixtures/docker/v6.json"),
            include_bytes!("../tests/fixtures/docker/gpu.json"),
        ];
        let replacements = [b'"', b'0', b'{', b'n', b'-', b'/', b'Z', 0xff];
        for doc in docs {
            for cut in (0..doc.len()).step_by(97) {
                assert!(parse(&doc[..cut]).is_err());
            }
            for (i, pos) in (0..doc.len()).step_by(13).enumerate() {
                let mut bad = doc.to_vec();
                bad[pos] = replacements[i % replacements.len()];
                if let Ok(Some(r)) = parse(&bad) {
                    let application = r.identity.application.clone();
                    let si = service_instances(&application, [&r], &zero, &Guests::new(), &CTX);
                    serde_json::to_vec(&si).unwrap();
                }
            }
        }
    }

    #[test]
    fn serializes_to_yaml_too() {
        let si = service_instance(
            "shop",
            "web-1",
            &all_fixtures(),
            &zero,
            &Guests::new(),
            &CTX,
        )
        .unwrap();
        let yaml = serde_yaml::to_string(&si).unwrap();
        assert!(yaml.starts_with(
            "name: acme.shop.web-1\napplication-version: 1.2.3\noper-status: running\n"
        ));
        assert!(yaml.contains("init-containers:\n- name: setup\n"));
        let mut guests = Guests::new();
        guests.insert("a".repeat(64), connected());
        let si = service_instance(
            "shop",
            "api-1",
            &[launcher("qemu", 'a')],
            &zero,
            &guests,
            &CTX,
        )
        .unwrap();
        let yaml = serde_yaml::to_string(&si).unwrap();
        assert!(
            yaml.contains("vm-container:\n  name: acme.shop.api-1.qemu\n"),
            "{yaml}"
        );
        assert!(yaml.contains("  guest-os:\n    id: debian\n"), "{yaml}");
    }
}
