//! Finding the container an operation is aimed at, and checking that it can be entered.

use crate::container;
use crate::docker::inspect::ContainerRecord;
use crate::docker::mirror::Mirror;
use crate::http::router::{ContainerRef, Instance};

/// Why an operation's target cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Error {
    /// The mirror is not current (503).
    Unavailable(String),
    /// No container of that instance on this host (404).
    UnknownInstance {
        application: String,
        instance: String,
    },
    /// No such (init) container in the instance (404).
    UnknownContainer {
        name: String,
        init: bool,
        instance: String,
    },
    /// `vm-container` of an instance without a VM launcher (404).
    NoVm { instance: String },
    /// Not running, paused, restarting or a completed init container (409).
    NotRunning { why: String, id: String },
    /// No sealed copy of supd's binary: nothing is started in containers (503).
    NotSealed,
    /// `tcp-connect` to a container without an address on a Docker network (409).
    NoAddress,
    /// `tcp-connect` to a VM without a known address (409).
    NoVmAddress,
    /// `connect` to an instance none of whose containers runs (409).
    NoneRunning,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Unavailable(why) => f.write_str(&runtime_unavailable(why)),
            Error::UnknownInstance {
                application,
                instance,
            } => write!(
                f,
                "no service instance {instance:?} of application {application:?} on this host"
            ),
            Error::UnknownContainer {
                name,
                init,
                instance,
            } => {
                let what = if *init { "init-container" } else { "container" };
                write!(f, "no {what} {name:?} in service instance {instance}")
            }
            Error::NoVm { instance } => {
                write!(f, "service instance {instance} has no vm-container")
            }
            Error::NotRunning { why, .. } => f.write_str(why),
            Error::NotSealed => f.write_str(
                "exec is disabled: supd could not re-execute itself from a sealed copy of its binary (see its log)",
            ),
            Error::NoAddress => f.write_str("the container has no IP address on a Docker network"),
            Error::NoVmAddress => f.write_str(
                "the VM has no io.supd.vm.address label and its guest agent reported no address",
            ),
            Error::NoneRunning => f.write_str("no container of the instance is running"),
        }
    }
}

impl std::error::Error for Error {}

/// The 503 message: the mirror's reason, said once to be about the runtime.
fn runtime_unavailable(why: &str) -> String {
    if why.starts_with("runtime unavailable") {
        why.to_string()
    } else {
        format!("runtime unavailable: {why}")
    }
}

/// The mirror must be current before an operation trusts it.
pub(crate) fn available(mirror: &Mirror) -> Result<(), Error> {
    mirror
        .available()
        .map_err(|why| Error::Unavailable(why.to_string()))
}

/// All containers of one instance, at least one: 503 without a current mirror, 404 without
/// any container.
pub(crate) fn instance<'m>(
    mirror: &'m Mirror,
    application: &str,
    instance: &Instance,
) -> Result<Vec<&'m ContainerRecord>, Error> {
    available(mirror)?;
    let all = instance_containers(mirror, application, instance);
    if all.is_empty() {
        return Err(Error::UnknownInstance {
            application: application.to_string(),
            instance: instance.to_string(),
        });
    }
    Ok(all)
}

/// All containers of one instance.
pub(crate) fn instance_containers<'m>(
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
pub(crate) fn find<'m>(
    mirror: &'m Mirror,
    application: &str,
    instance: &Instance,
    target: &ContainerRef,
) -> Result<&'m ContainerRecord, Error> {
    let all = self::instance(mirror, application, instance)?;
    let (name, init) = match target {
        ContainerRef::Container(n) => (n, false),
        ContainerRef::Init(n) => (n, true),
        ContainerRef::Vm => return find_vm(mirror, application, instance),
    };
    // A VM launcher is not one of the instance's containers (the API lists it as its
    // vm-container only), so it cannot be entered as one.
    all.into_iter()
        .find(|r| r.identity.container == *name && r.identity.init == init && !r.is_vm())
        .ok_or_else(|| Error::UnknownContainer {
            name: name.clone(),
            init,
            instance: instance.to_string(),
        })
}

/// The instance's VM launcher (the one the state shows: `model::vm_launcher`): 404 without
/// one.
pub(crate) fn find_vm<'m>(
    mirror: &'m Mirror,
    application: &str,
    instance: &Instance,
) -> Result<&'m ContainerRecord, Error> {
    let all = self::instance(mirror, application, instance)?;
    crate::model::vm_launcher(all).ok_or_else(|| Error::NoVm {
        instance: instance.to_string(),
    })
}

/// The instance's VM launcher, running, with its VM contract: 404 without one, 409 when it
/// does not run.
pub(crate) fn running_vm<'m>(
    mirror: &'m Mirror,
    application: &str,
    instance: &Instance,
) -> Result<(&'m ContainerRecord, &'m crate::docker::inspect::VmSpec), Error> {
    let launcher = find_vm(mirror, application, instance)?;
    require_running(launcher)?;
    let spec = launcher.vm.as_ref().ok_or_else(|| Error::NoVm {
        instance: instance.to_string(),
    })?;
    Ok((launcher, spec))
}

/// Running (not paused, not restarting) with a known first process, or 409.
pub(crate) fn require_running(rec: &ContainerRecord) -> Result<(), Error> {
    if rec.running && !rec.paused && !rec.restarting && rec.pid > 0 {
        return Ok(());
    }
    // A VM's operations say it is the launcher that does not run (not the guest agent).
    let what = if rec.is_vm() {
        "the VM's launcher"
    } else {
        "the container"
    };
    let why = if rec.identity.init && !rec.running && rec.exit_code == 0 && rec.started_at.is_some()
    {
        "the init container has completed".to_string()
    } else if rec.paused {
        format!("{what} is paused")
    } else if rec.restarting {
        format!("{what} is restarting")
    } else {
        format!("{what} is not running (it is {})", rec.status)
    };
    Err(Error::NotRunning {
        why,
        id: rec.id.get(..12).unwrap_or(&rec.id).to_string(),
    })
}

/// A process that supd starts in a container runs supd's own image until it execs, and a
/// container can reach that image through `/proc/<pid>/exe` (CVE-2019-5736). The daemon runs
/// from a sealed in-memory copy for that reason (see `main`); without one, nothing is started
/// in containers: 503.
pub(crate) fn require_sealed_binary() -> Result<(), Error> {
    if crate::sys::exe::running_sealed() {
        return Ok(());
    }
    Err(Error::NotSealed)
}

/// What entering the container needs.
pub(crate) fn exec_target(rec: &ContainerRecord) -> container::Target {
    container::Target {
        pid: rec.pid,
        container_id: rec.id.clone(),
        user: rec.user.clone(),
        env: rec.env.clone(),
        working_dir: rec.working_dir.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ApiError;

    fn seen(e: Error) -> ApiError {
        ApiError::from(e)
    }

    #[test]
    fn target_errors_keep_their_status_message_and_info() {
        let e = seen(Error::Unavailable("runtime unavailable: no docker".into()));
        assert_eq!(
            (e.status, e.message.as_str()),
            (503, "runtime unavailable: no docker")
        );
        let e = seen(Error::UnknownInstance {
            application: "shop".into(),
            instance: "web-3".into(),
        });
        assert_eq!(e.status, 404);
        assert_eq!(
            e.message,
            "no service instance \"web-3\" of application \"shop\" on this host"
        );
        assert_eq!(e.info["service-instance-name"], "web-3");
        let e = seen(Error::UnknownContainer {
            name: "db".into(),
            init: true,
            instance: "web-3".into(),
        });
        assert_eq!(
            (e.status, e.message.as_str()),
            (404, "no init-container \"db\" in service instance web-3")
        );
        assert_eq!(e.info["init-container-name"], "db");
        let e = seen(Error::UnknownContainer {
            name: "db".into(),
            init: false,
            instance: "web-3".into(),
        });
        assert_eq!(e.info["container-name"], "db");
        assert_eq!(
            seen(Error::NoVm {
                instance: "web-1".into()
            })
            .status,
            404
        );
        let e = seen(Error::NotRunning {
            why: "the container is paused".into(),
            id: "0123456789ab".into(),
        });
        assert_eq!(
            (e.status, e.message.as_str()),
            (409, "the container is paused")
        );
        assert_eq!(e.info["container-id"], "0123456789ab");
        assert_eq!(seen(Error::NotSealed).status, 503);
        assert_eq!(
            seen(Error::NoAddress).message,
            "the container has no IP address on a Docker network"
        );
        assert_eq!(seen(Error::NoneRunning).status, 409);
    }
}
