//! Finding a process's cgroups on this host (v1, hybrid or v2), so that an exec'd command is
//! accounted and limited with its container.
//!
//! The parent resolves and opens each `cgroup.procs` before forking; the child only writes
//! its pid into them. Paths come from supd's own view (its cgroup namespace and mounts),
//! which is the view the child has until it joins the container's namespaces.

use std::io::Read;
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::ns::proc_error;
use super::{Error, Result};

/// Bound on what is read of `/proc/<pid>/cgroup` and `/proc/self/mountinfo`.
const MAX_PROC_FILE: u64 = 4 << 20;

/// One line of `/proc/<pid>/cgroup`: `id:controllers:path`.
#[derive(Debug, PartialEq, Eq)]
pub struct Membership<'a> {
    /// Empty for the v2 hierarchy; `name=systemd` for a named v1 hierarchy.
    pub controllers: Vec<&'a str>,
    pub path: &'a str,
}

pub fn parse_memberships(text: &str) -> Vec<Membership<'_>> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let _id = fields.next()?;
            let controllers = fields.next()?;
            let path = fields.next()?;
            path.starts_with('/').then(|| Membership {
                controllers: controllers.split(',').filter(|c| !c.is_empty()).collect(),
                path,
            })
        })
        .collect()
}

/// A cgroup filesystem mount from `/proc/self/mountinfo`.
#[derive(Debug, PartialEq, Eq)]
pub struct CgroupMount<'a> {
    /// The path inside the hierarchy that is mounted (usually `/`).
    pub root: String,
    pub mount_point: String,
    pub v2: bool,
    /// The super options: for v1, the controllers (and `name=...`).
    pub options: Vec<&'a str>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                let value = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(value as u8);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount<'_>> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let options = right.next()?;
            let (root, mount_point) = (left.get(3)?, left.get(4)?);
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(CgroupMount {
                root: unescape(root),
                mount_point: unescape(mount_point),
                v2,
                options: options.split(',').collect(),
            })
        })
        .collect()
}

/// The directory of each of the process's cgroups on this host, skipping hierarchies that are
/// not mounted here.
pub fn cgroup_dirs(memberships: &[Membership<'_>], mounts: &[CgroupMount<'_>]) -> Vec<String> {
    let mut dirs = Vec::new();
    for membership in memberships {
        let hierarchy_matches = |mount: &&CgroupMount<'_>| {
            if membership.controllers.is_empty() {
                mount.v2
            } else {
                !mount.v2
                    && membership
                        .controllers
                        .iter()
                        .all(|c| mount.options.contains(c))
            }
        };
        let dir = mounts.iter().filter(hierarchy_matches).find_map(|mount| {
            let relative = if mount.root == "/" {
                membership.path.strip_prefix('/')
            } else {
                membership
                    .path
                    .strip_prefix(mount.root.as_str())
                    .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                    .map(|rest| rest.trim_start_matches('/'))
            }?;
            // The kernel never writes these, but the path ends up in a file name.
            if relative.split('/').any(|part| part == "..") {
                return None;
            }
            Some(if relative.is_empty() {
                mount.mount_point.clone()
            } else {
                format!("{}/{relative}", mount.mount_point.trim_end_matches('/'))
            })
        });
        if let Some(dir) = dir
            && !dirs.contains(&dir)
        {
            dirs.push(dir);
        }
    }
    dirs
}

fn read_bounded(path: &str, pid: i32) -> Result<String> {
    let file = std::fs::File::open(path).map_err(|source| match source.raw_os_error() {
        Some(libc::ENOENT | libc::ESRCH) => Error::ContainerGone { pid },
        _ => Error::Io {
            op: "read cgroups",
            source,
        },
    })?;
    let mut text = String::new();
    file.take(MAX_PROC_FILE)
        .read_to_string(&mut text)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ESRCH) => Error::ContainerGone { pid },
            _ => Error::Io {
                op: "read cgroups",
                source,
            },
        })?;
    Ok(text)
}

/// Opens `cgroup.procs` of each cgroup of process `pid`, for writing.
pub fn open_cgroup_procs(pid: i32) -> Result<Vec<OwnedFd>> {
    let memberships = read_bounded(&format!("/proc/{pid}/cgroup"), pid)?;
    let mountinfo = read_bounded("/proc/self/mountinfo", pid)?;
    let memberships = parse_memberships(&memberships);
    let mounts = parse_cgroup_mounts(&mountinfo);
    cgroup_dirs(&memberships, &mounts)
        .iter()
        .map(|dir| {
            nix::fcntl::open(
                format!("{dir}/cgroup.procs").as_str(),
                OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| proc_error(pid, "open cgroup.procs", e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CGROUP: &str = "9:name=systemd:/docker/abc\n\
        8:pids:/docker/abc\n\
        2:cpu,cpuacct:/docker/abc\n\
        4:memory:/docker/abc\n\
        5:rdma:/\n\
        0::/docker/abc\n";

    const HYBRID_MOUNTINFO: &str = "\
25 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host_maps_every_mounted_hierarchy() {
        let memberships = parse_memberships(HYBRID_CGROUP);
        let mounts = parse_cgroup_mounts(HYBRID_MOUNTINFO);
        assert_eq!(mounts.len(), 5);
        assert_eq!(
            cgroup_dirs(&memberships, &mounts),
            [
                "/sys/fs/cgroup/systemd/docker/abc",
                "/sys/fs/cgroup/pids/docker/abc",
                "/sys/fs/cgroup/cpu,cpuacct/docker/abc",
                "/sys/fs/cgroup/memory/docker/abc",
                // rdma is not mounted: skipped.
                "/sys/fs/cgroup/unified/docker/abc",
            ]
        );
    }

    #[test]
    fn pure_v2_host() {
        let memberships = parse_memberships("0::/system.slice/docker-abc.scope\n");
        let mounts = parse_cgroup_mounts(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(
            cgroup_dirs(&memberships, &mounts),
            ["/sys/fs/cgroup/system.slice/docker-abc.scope"]
        );
    }

    #[test]
    fn mount_of_a_subtree_and_escapes() {
        let mounts = parse_cgroup_mounts(
            "1 0 0:1 /outer /mnt/cg\\040x rw - cgroup cgroup rw,memory\n\
             2 0 0:1 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        );
        assert_eq!(mounts[0].mount_point, "/mnt/cg x");
        let inside = parse_memberships("4:memory:/outer/c\n");
        assert_eq!(cgroup_dirs(&inside, &mounts), ["/mnt/cg x/c"]);
        // "/outerly" is not under "/outer": the next mount serves it.
        let beside = parse_memberships("4:memory:/outerly\n");
        assert_eq!(
            cgroup_dirs(&beside, &mounts),
            ["/sys/fs/cgroup/memory/outerly"]
        );
        let root = parse_memberships("4:memory:/\n");
        assert_eq!(cgroup_dirs(&root, &mounts), ["/sys/fs/cgroup/memory"]);
    }

    #[test]
    fn v1_controller_does_not_match_v2_or_other_controllers() {
        let mounts = parse_cgroup_mounts(HYBRID_MOUNTINFO);
        let memberships = parse_memberships("3:cpuset:/x\n1:name=other:/y\n");
        assert!(cgroup_dirs(&memberships, &mounts).is_empty());
    }

    #[test]
    fn junk_never_panics() {
        let junk = "::\n:\n\\\n - \n1 2 3 - cgroup\n1 2 3 4 5 - cgroup x\n\\0\\777 - x y z\n";
        let memberships = parse_memberships(junk);
        let mounts = parse_cgroup_mounts(junk);
        let _ = cgroup_dirs(&memberships, &mounts);
        assert_eq!(unescape("a\\04"), "a\\04");
        assert!(parse_memberships("1:memory:/../x").len() == 1);
        let escape = parse_memberships("1:memory:/../x");
        assert!(cgroup_dirs(&escape, &parse_cgroup_mounts(HYBRID_MOUNTINFO)).is_empty());
    }

    #[test]
    fn own_cgroups_open() {
        let pid = std::process::id() as i32;
        assert!(!open_cgroup_procs(pid).unwrap().is_empty());
    }
}
