//! A container's `/proc/<pid>/cgroup` (its cgroup names are the container's to choose when it
//! may create sub-cgroups) and the host's mountinfo (src/container/cgroup.rs): every
//! directory supd would open a `cgroup.procs` in stays under a cgroup mount.
//!
//! Input: `cgroup-file NUL mountinfo`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supd::testing::container::cgroup::{cgroup_dirs, parse_cgroup_mounts, parse_memberships};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (cgroup, mountinfo) = text.split_once('\0').unwrap_or((text, ""));
    let memberships = parse_memberships(cgroup);
    let mounts = parse_cgroup_mounts(mountinfo);
    for dir in cgroup_dirs(&memberships, &mounts) {
        let under = mounts.iter().any(|m| {
            let base = m.mount_point.trim_end_matches('/');
            dir == m.mount_point
                || dir
                    .strip_prefix(base)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|rest| !rest.split('/').any(|part| part == ".."))
        });
        assert!(under, "{dir:?} is not under a cgroup mount");
    }
});
