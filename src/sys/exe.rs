//! Running supd from a sealed in-memory copy of its own binary (CVE-2019-5736).
//!
//! A process that supd forks to enter a container runs supd's image until it execs the
//! command. If the command is a script whose interpreter is `/proc/self/exe`, the kernel
//! execs supd's binary again, now inside the container and dumpable, so the container can open
//! `/proc/<pid>/exe`, keep that descriptor and, once supd stops, write through it: the host's
//! next start runs the container's code as root. runc's answer, taken here: the daemon
//! re-executes itself once at start-up from a sealed memfd, so whatever `/proc/<pid>/exe` of
//! any of its processes reaches is that memfd, which no one can write, truncate or grow.

use std::ffi::{CString, OsString, c_int};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::OnceLock;

use nix::errno::Errno;

/// Set in the environment of the re-executed process so that it does not re-execute again
/// when sealing did not hold (it then runs without container operations instead of looping).
/// Removed from the environment as soon as the new image sees it.
pub const REEXEC_MARKER: &str = "_SUPD_SEALED_REEXEC";

/// The seals that make the memfd immutable for good.
const SEALS: c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// What `ensure_sealed` found or did.
#[derive(Debug, PartialEq, Eq)]
pub enum Sealed {
    /// This image already runs from a sealed memfd.
    Already,
    /// The re-execution was tried before (the marker was set) and did not give a sealed image.
    Failed,
}

/// Whether this process's image is a sealed memfd (checked once).
pub fn running_sealed() -> bool {
    static SEALED: OnceLock<bool> = OnceLock::new();
    *SEALED.get_or_init(|| match File::open("/proc/self/exe") {
        Ok(exe) => get_seals(&exe).is_ok_and(|s| s & SEALS == SEALS),
        Err(_) => false,
    })
}

/// Re-executes the process from a sealed memfd copy of its binary, with the same argv and
/// environment (plus [`REEXEC_MARKER`]), unless it already runs from one. Returns only when
/// no re-execution happened: `Ok` says why, `Err` why it could not be done. fexecve keeps the
/// pid and every descriptor without close-on-exec, so systemd's `LISTEN_PID`/`LISTEN_FDS` and
/// `NOTIFY_SOCKET` stay valid. Call it first thing, while the process has one thread.
pub fn ensure_sealed() -> std::io::Result<Sealed> {
    let marker = std::env::var_os(REEXEC_MARKER).is_some();
    if marker {
        super::fd::remove_env_single_threaded(&[REEXEC_MARKER])?;
    }
    if running_sealed() {
        return Ok(Sealed::Already);
    }
    if marker {
        return Ok(Sealed::Failed);
    }
    let memfd = sealed_copy()?;
    let argv = std::env::args_os()
        .map(cstring)
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut envp = std::env::vars_os()
        .map(|(k, v)| {
            let mut entry = k;
            entry.push("=");
            entry.push(v);
            cstring(entry)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    envp.push(cstring(format!("{REEXEC_MARKER}=1").into())?);
    let errno = fexecve(&memfd, &argv, &envp);
    Err(std::io::Error::from(errno))
}

fn cstring(s: OsString) -> std::io::Result<CString> {
    CString::new(s.into_vec()).map_err(|_| std::io::Error::other("argument holds a NUL byte"))
}

/// A close-on-exec memfd holding a copy of `/proc/self/exe`, sealed against every change.
fn sealed_copy() -> std::io::Result<OwnedFd> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: the name is NUL-terminated and outlives the call; flags are plain integers.
    let ret = unsafe { libc::memfd_create(c"supd".as_ptr(), flags) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `ret` is a descriptor the kernel just created for us and nothing else owns.
    let memfd = unsafe { OwnedFd::from_raw_fd(ret) };
    let mut dst = File::from(memfd);
    let mut src = File::open("/proc/self/exe")?;
    std::io::copy(&mut src, &mut dst)?;
    let memfd = OwnedFd::from(dst);
    // SAFETY: F_ADD_SEALS takes an int of seal flags by value on a descriptor we own.
    let ret = unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(memfd)
}

fn get_seals(file: &File) -> nix::Result<c_int> {
    // SAFETY: F_GET_SEALS takes no argument and returns the seals or -1 (EINVAL for a file
    // that is not a memfd).
    let ret = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    Errno::result(ret)
}

/// `fexecve`: only returns on failure.
fn fexecve(fd: &OwnedFd, argv: &[CString], envp: &[CString]) -> Errno {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: both arrays are null-terminated arrays of pointers to NUL-terminated strings
    // owned by `argv` and `envp`, alive for the call; `fd` is an open descriptor.
    unsafe { libc::fexecve(fd.as_raw_fd(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    Errno::last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_sealed_and_immutable() {
        let memfd = sealed_copy().unwrap();
        let mut file = File::from(memfd);
        assert_eq!(get_seals(&file).unwrap() & SEALS, SEALS);
        let exe_len = std::fs::metadata("/proc/self/exe").unwrap().len();
        assert_eq!(file.metadata().unwrap().len(), exe_len);
        use std::io::Write;
        let err = file.write(b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        assert!(file.set_len(0).is_err());
        // Reopened through /proc, as a container would through /proc/<pid>/exe.
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let reopened = std::fs::OpenOptions::new().write(true).open(&path);
        if let Ok(mut w) = reopened {
            assert!(w.write(b"x").is_err());
        }
    }

    #[test]
    fn the_test_binary_is_not_sealed() {
        assert!(!running_sealed());
    }
}
