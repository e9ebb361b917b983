//! The namespaces of a container's first process, opened by the parent before forking.

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use super::{Error, Result};

pub struct Namespace {
    /// The name under `/proc/<pid>/ns/`.
    pub name: &'static str,
    pub flag: CloneFlags,
}

/// The order in which a child joins: the user namespace first, so that the container's
/// root gains the capabilities the other joins need in it; the PID namespace before the
/// mount namespace, while `/proc` still names the host's processes; the mount namespace last,
/// because after it nothing of the host's filesystem is reachable by path.
pub const ORDERED_NAMESPACES: [Namespace; 7] = [
    Namespace {
        name: "user",
        flag: CloneFlags::CLONE_NEWUSER,
    },
    Namespace {
        name: "ipc",
        flag: CloneFlags::CLONE_NEWIPC,
    },
    Namespace {
        name: "uts",
        flag: CloneFlags::CLONE_NEWUTS,
    },
    Namespace {
        name: "net",
        flag: CloneFlags::CLONE_NEWNET,
    },
    Namespace {
        name: "cgroup",
        flag: CloneFlags::CLONE_NEWCGROUP,
    },
    Namespace {
        name: "pid",
        flag: CloneFlags::CLONE_NEWPID,
    },
    Namespace {
        name: "mnt",
        flag: CloneFlags::CLONE_NEWNS,
    },
];

/// A namespace to join, in join order.
pub struct NamespaceFd {
    pub namespace: &'static Namespace,
    pub fd: OwnedFd,
}

/// Maps "no such process" to [`Error::ContainerGone`].
pub(crate) fn proc_error(pid: i32, op: &'static str, errno: Errno) -> Error {
    match errno {
        Errno::ENOENT | Errno::ESRCH => Error::ContainerGone { pid },
        errno => Error::Sys { op, errno },
    }
}

/// Opens the namespaces of process `pid` in join order, leaving out those that supd already
/// is in (setns into one's own user namespace fails; the others would be no-ops, e.g. the PID
/// namespace of a `--pid=host` container).
pub fn open_namespaces(pid: i32) -> Result<Vec<NamespaceFd>> {
    let mut opened = Vec::with_capacity(ORDERED_NAMESPACES.len());
    for namespace in &ORDERED_NAMESPACES {
        let path = format!("/proc/{pid}/ns/{}", namespace.name);
        let fd = nix::fcntl::open(
            path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| proc_error(pid, "open namespace", e))?;
        let theirs = nix::sys::stat::fstat(fd.as_fd()).map_err(|errno| Error::Sys {
            op: "stat namespace",
            errno,
        })?;
        let ours = nix::sys::stat::stat(format!("/proc/self/ns/{}", namespace.name).as_str())
            .map_err(|errno| Error::Sys {
                op: "stat own namespace",
                errno,
            })?;
        if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino) {
            opened.push(NamespaceFd { namespace, fd });
        }
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespaces_are_all_skipped() {
        let pid = std::process::id() as i32;
        assert!(open_namespaces(pid).unwrap().is_empty());
    }

    #[test]
    fn missing_process_is_container_gone() {
        // Above the kernel's pid_max limit (4194304), so never a live pid.
        let err = open_namespaces(i32::MAX).err().unwrap();
        assert!(matches!(err, Error::ContainerGone { pid } if pid == i32::MAX));
    }

    #[test]
    fn order_ends_with_pid_then_mnt() {
        let names: Vec<_> = ORDERED_NAMESPACES.iter().map(|n| n.name).collect();
        assert_eq!(names, ["user", "ipc", "uts", "net", "cgroup", "pid", "mnt"]);
    }
}
