//! Finding the container an operation is aimed at, and checking that it can be entered.

use crate::container;
use crate::docker::inspect::ContainerRecord;
use crate::docker::mirror::Mirror;
use crate::http::ApiError;
use crate::http::router::{ContainerRef, Instance};

use super::state::{runtime_unavailable, unknown_instance};

/// The mirror must be current before an operation trusts it.
pub fn available(mirror: &Mirror) -> Result<(), ApiError> {
    mirror
        .available()
        .map_err(|why| ApiError::new(503, runtime_unavailable(why)))
}

/// All containers of one instance.
pub fn instance_containers<'m>(
    mirror: &'m Mirror,
    application: &str,
    instance: &Instance,
) -> Vec<&'m ContainerRecord> {
    let mut v: Vec<&ContainerRecord> = mirror
        .records()
        .filter(|r| {
            r.identity.application == application
                && r.identity.service == instance.service
                && r.identity.instance == instance.number
        })
        .collect();
    v.sort_by(|a, b| a.identity.container.cmp(&b.identity.container));
    v
}

/// The container `target` names in an instance: 404 for an unknown instance or container.
pub fn find<'m>(
    mirror: &'m Mirror,
    application: &str,
    instance: &Instance,
    target: &ContainerRef,
) -> Result<&'m ContainerRecord, ApiError> {
    available(mirror)?;
    let all = instance_containers(mirror, application, instance);
    if all.is_empty() {
        return Err(unknown_instance(application, &instance.to_string()));
    }
    let (name, init) = match target {
        ContainerRef::Container(n) => (n, false),
        ContainerRef::Init(n) => (n, true),
        ContainerRef::Vm => {
            return Err(ApiError::new(
                501,
                "vm-container operations are not available on this host",
            ));
        }
    };
    all.into_iter()
        .find(|r| r.identity.container == *name && r.identity.init == init)
        .ok_or_else(|| {
            let what = if init { "init-container" } else { "container" };
            ApiError::not_found(format!("no {what} {name:?} in service instance {instance}")).info(
                if init {
                    "init-container-name"
                } else {
                    "container-name"
                },
                name.as_str(),
            )
        })
}

/// Running (not paused, not restarting) with a known first process, or 409.
pub fn require_running(rec: &ContainerRecord) -> Result<(), ApiError> {
    if rec.running && !rec.paused && !rec.restarting && rec.pid > 0 {
        return Ok(());
    }
    let why = if rec.identity.init && !rec.running && rec.exit_code == 0 && rec.started_at.is_some()
    {
        "the init container has completed".to_string()
    } else if rec.paused {
        "the container is paused".to_string()
    } else if rec.restarting {
        "the container is restarting".to_string()
    } else {
        format!("the container is not running (it is {})", rec.status)
    };
    Err(ApiError::conflict(why).info("container-id", rec.id.get(..12).unwrap_or(&rec.id)))
}

/// A process that supd starts in a container runs supd's own image until it execs, and a
/// container can reach that image through `/proc/<pid>/exe` (CVE-2019-5736). The daemon runs
/// from a sealed in-memory copy for that reason (see `main`); without one, nothing is started
/// in containers: 503.
pub fn require_sealed_binary() -> Result<(), ApiError> {
    if crate::sys::exe::running_sealed() {
        return Ok(());
    }
    Err(ApiError::new(
        503,
        "exec is disabled: supd could not re-execute itself from a sealed copy of its binary (see its log)",
    ))
}

/// What entering the container needs.
pub fn exec_target(rec: &ContainerRecord) -> container::Target {
    container::Target {
        pid: rec.pid,
        container_id: rec.id.clone(),
        user: rec.user.clone(),
        env: rec.env.clone(),
        working_dir: rec.working_dir.clone(),
    }
}
