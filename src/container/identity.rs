//! Proving that a pid still names a container's first process before entering it.
//!
//! The pid comes from Docker's inspect data, which lags behind the kernel: after the container's
//! first process dies its pid may be reused by any host process before the mirror learns of the
//! `die` event. A pidfd pins whatever process has the pid now, so it proves only that some
//! process is alive. [`pin`] pins the process and then checks that it is the container's:
//!
//! - its cgroup path names the container id (Docker's cgroupfs and systemd drivers both put
//!   the full id in it; no host process is ever in such a cgroup);
//! - it is not in supd's own mount namespace, nor in that of the host's init (Docker gives
//!   every container its own, so a process in either is a host process);
//! - its start time (clock ticks since boot, immune to clock changes) is the one recorded
//!   the first time that pid passed these checks for that container: a process reusing the
//!   pid within the container's cgroup is refused too.
//!
//! Every file is read after the pidfd is taken; callers check the pidfd is still alive after
//! their last read of `/proc/<pid>`, so everything read was the pinned process's.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use super::ns::proc_error;
use super::{Error, Result};
use crate::sys::process;

/// Start times recorded per container: id -> (pid, start ticks). Bounded: cleared whole when
/// it grows past this (entries of removed containers are not tracked otherwise); the next
/// check of each container records it again.
const MAX_RECORDED: usize = 4096;
static STARTS: Mutex<Option<HashMap<String, (i32, u64)>>> = Mutex::new(None);

/// A pidfd for `pid`, after checking that the process is the first process of container
/// `container_id` (see the module documentation). A process that is not:
/// [`Error::ContainerGone`], as for a container whose process exited.
pub fn pin(pid: i32, container_id: &str) -> Result<OwnedFd> {
    if pid <= 0 {
        return Err(Error::ContainerGone { pid });
    }
    let pidfd = process::pidfd_open(pid).map_err(|e| proc_error(pid, "pidfd_open", e))?;
    verify(pid, container_id)?;
    Ok(pidfd)
}

/// The checks of [`pin`], without the pidfd.
pub fn verify(pid: i32, container_id: &str) -> Result<()> {
    let refuse = |why: &str| {
        log::warn!(
            "pid {pid} is not the first process of container {}: {why}; refusing to enter it",
            container_id.get(..12).unwrap_or(container_id)
        );
        Error::ContainerGone { pid }
    };
    if container_id.len() < 12 || !container_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refuse("malformed container id"));
    }
    let cgroup = read_proc(pid, "cgroup")?;
    if !cgroup_names(&cgroup, container_id) {
        return Err(refuse("its cgroup does not name the container"));
    }
    let theirs = ns_id(&format!("/proc/{pid}/ns/mnt")).map_err(|e| proc_error(pid, "stat", e))?;
    for host in ["/proc/self/ns/mnt", "/proc/1/ns/mnt"] {
        // supd's own namespace is always readable; the host init's may not be (a private
        // /proc), which leaves that one comparison out.
        if ns_id(host).is_ok_and(|ours| ours == theirs) {
            return Err(refuse("it is in a host mount namespace"));
        }
    }
    let start = start_ticks(&read_proc(pid, "stat")?).ok_or(Error::Sys {
        op: "parse /proc/<pid>/stat",
        errno: nix::errno::Errno::EINVAL,
    })?;
    let mut starts = STARTS.lock().unwrap_or_else(|e| e.into_inner());
    let starts = starts.get_or_insert_with(HashMap::new);
    match starts.get(container_id) {
        Some(&(known_pid, known_start)) if known_pid == pid && known_start != start => {
            return Err(refuse("it started after the process recorded for that pid"));
        }
        Some(&(known_pid, _)) if known_pid == pid => {}
        _ => {
            if starts.len() >= MAX_RECORDED {
                starts.clear();
            }
            starts.insert(container_id.to_owned(), (pid, start));
        }
    }
    Ok(())
}

fn read_proc(pid: i32, file: &'static str) -> Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::ContainerGone { pid },
        _ if e.raw_os_error() == Some(libc::ESRCH) => Error::ContainerGone { pid },
        _ => Error::Io {
            op: "read /proc/<pid>",
            source: e,
        },
    })
}

fn ns_id(path: &str) -> nix::Result<(u64, u64)> {
    let st = nix::sys::stat::stat(path)?;
    Ok((st.st_dev, st.st_ino))
}

/// Whether a `/proc/<pid>/cgroup` text puts the process in a cgroup named after `id`: the
/// full id as a whole word of a path (`/docker/<id>`, `/system.slice/docker-<id>.scope`).
fn cgroup_names(text: &str, id: &str) -> bool {
    text.lines().any(|line| {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        path.match_indices(id).any(|(at, _)| {
            let before = path[..at].bytes().next_back();
            let after = path[at + id.len()..].bytes().next();
            !before.is_some_and(|b| b.is_ascii_hexdigit())
                && !after.is_some_and(|b| b.is_ascii_hexdigit())
        })
    })
}

/// Field 22 of `/proc/<pid>/stat`, counted after the command name (which may hold spaces and
/// parentheses, so the text after the last `)`).
fn start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow; starttime is the 22nd field overall, the 20th after the name.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1a3ea50401cf05f9532a5121b35d2d8597b558e5c6e9862be0af9a439a39dd7a";

    #[test]
    fn cgroup_paths_of_both_drivers() {
        assert!(cgroup_names(&format!("12:pids:/docker/{ID}\n"), ID));
        assert!(cgroup_names(
            &format!("0::/system.slice/docker-{ID}.scope\n"),
            ID
        ));
        assert!(!cgroup_names("12:pids:/user.slice\n0::/\n", ID));
        // Only the whole id counts, and only in the path.
        assert!(!cgroup_names(&format!("12:pids:/docker/{ID}0\n"), ID));
        assert!(!cgroup_names(&format!("12:{ID}:/\n"), ID));
    }

    #[test]
    fn start_ticks_after_odd_names() {
        let stat = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(start_ticks(stat), Some(98765));
        assert_eq!(start_ticks("42 (x"), None);
    }

    #[test]
    fn a_host_process_is_not_a_container_init() {
        // supd's own process (the test harness), a host process by every measure: whatever
        // container id is asked for, it is refused.
        let me = std::process::id() as i32;
        let my_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        assert!(matches!(
            verify(me, ID),
            Err(Error::ContainerGone { pid }) if pid == me
        ));
        assert!(pin(me, ID).is_err());
        // Even an id that appears in the host process's cgroup path (as if a host service
        // were put there) does not get past the namespace check.
        if let Some(id) = my_cgroup
            .split(|c: char| !c.is_ascii_hexdigit())
            .find(|w| w.len() >= 12)
        {
            assert!(verify(me, id).is_err());
        }
        assert!(verify(me, "").is_err());
        assert!(verify(me, "../..").is_err());
        // The host's init, likewise.
        assert!(verify(1, ID).is_err());
    }

    #[test]
    fn a_missing_process_is_gone() {
        assert!(matches!(
            pin(i32::MAX, ID),
            Err(Error::ContainerGone { .. })
        ));
    }
}
