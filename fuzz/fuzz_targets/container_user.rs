//! The container's /etc/passwd and /etc/group (src/container/user.rs), which a hostile image
//! controls: user specs, passwd and group lines, `resolve` over in-memory lines and over the
//! same bytes read from a file through `FileLines`' small buffer.
//!
//! Input: byte 0 picks the buffer size; the rest is `spec NUL passwd NUL group`.
#![no_main]

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nix::sys::memfd::{MFdFlags, memfd_create};
use supd::testing::container::user::{self, FileLines, Identity, Lines, UserError};

/// Memory files for `FileLines`, opened by path through /proc/self/fd (so nothing is left on
/// disk), one pair per fuzzing process.
struct MemFile {
    file: File,
    path: &'static CStr,
}

fn mem_file(name: &str) -> MemFile {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC).expect("memfd_create");
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    MemFile {
        file: File::from(fd),
        path: Box::leak(CString::new(path).unwrap().into_boxed_c_str()),
    }
}

fn files() -> &'static (MemFile, MemFile) {
    static FILES: OnceLock<(MemFile, MemFile)> = OnceLock::new();
    FILES.get_or_init(|| (mem_file("passwd"), mem_file("group")))
}

fn fill(f: &MemFile, data: &[u8]) {
    f.file.set_len(0).unwrap();
    f.file.write_all_at(data, 0).unwrap();
}

/// The lines a `FileLines` with a buffer of `size` bytes can see: longer ones are dropped.
fn visible(data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for line in data.split(|&b| b == b'\n').filter(|l| l.len() < size) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

fn resolve(
    spec: &[u8],
    passwd: &mut dyn Lines,
    group: &mut dyn Lines,
) -> Result<String, UserError> {
    let mut id = Identity::with_capacity();
    user::resolve(spec, passwd, group, &mut id)?;
    assert!(id.name.len() <= id.name.capacity() && id.home.len() <= id.home.capacity());
    Ok(format!("{id:?}"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |&b| b == 0);
    let spec = parts.next().unwrap_or_default();
    let passwd = parts.next().unwrap_or_default();
    let group = parts.next().unwrap_or_default();

    for line in passwd.split(|&b| b == b'\n') {
        let _ = user::parse_passwd_line(line);
    }
    for line in group.split(|&b| b == b'\n') {
        if let Some(entry) = user::parse_group_line(line) {
            let _ = entry.has_member(b"app");
        }
    }
    let _ = user::parse_id(spec);

    let size = 8 + size as usize;
    let in_memory = resolve(
        spec,
        &mut &visible(passwd, size)[..],
        &mut &visible(group, size)[..],
    );

    let (passwd_file, group_file) = files();
    fill(passwd_file, passwd);
    fill(group_file, group);
    let mut buf_p = vec![0; size];
    let mut buf_g = vec![0; size];
    let from_files = resolve(
        spec,
        &mut FileLines {
            path: passwd_file.path,
            buf: &mut buf_p,
        },
        &mut FileLines {
            path: group_file.path,
            buf: &mut buf_g,
        },
    );
    assert_eq!(
        format!("{in_memory:?}"),
        format!("{from_files:?}"),
        "FileLines and in-memory lines disagree"
    );
});
