//! Raw calls for configuration, tokens and systemd plumbing: kernel randomness, the
//! descriptors systemd hands over on socket activation, and environment edits.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

/// Fill `buf` from the kernel's CSPRNG (getrandom(2), flags 0). Blocks only before the kernel's
/// pool is first initialised, which is the behaviour wanted for key material.
pub fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, a live, exclusively borrowed byte
        // slice; the kernel writes at most `rest.len()` bytes into it and nothing retains it.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // getrandom never returns more than asked; a short read (a signal during a large
        // request) just continues.
        filled += usize::try_from(n).map_err(|_| io::Error::other("getrandom: bad count"))?;
    }
    Ok(())
}

/// Whether `take_listen_fds` already handed out the inherited descriptors.
static LISTEN_FDS_TAKEN: AtomicBool = AtomicBool::new(false);

/// Take ownership of `count` descriptors from `start` on, as systemd passes them on socket
/// activation, marking each close-on-exec so no child (exec into a container) inherits a
/// listener. Succeeds once per process; later calls fail, because the descriptors then
/// already have an owner.
pub fn take_listen_fds(start: RawFd, count: usize) -> io::Result<Vec<OwnedFd>> {
    // More than this is not a plausible activation and would only exhaust the fd table.
    const MAX_LISTEN_FDS: usize = 1024;
    if count > MAX_LISTEN_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("LISTEN_FDS={count} is more than {MAX_LISTEN_FDS}"),
        ));
    }
    if start < 0 || RawFd::try_from(count).map_or(true, |c| start.checked_add(c).is_none()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptor range out of bounds",
        ));
    }
    if LISTEN_FDS_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "socket-activation descriptors were already taken",
        ));
    }
    let mut fds = Vec::with_capacity(count);
    for fd in (start..).take(count) {
        // Refuse to adopt a number that is not open: wrapping it would make a later close hit
        // whatever descriptor gets that number next.
        // SAFETY: F_GETFD only reads the descriptor flags; on a closed number it fails with
        // EBADF and touches nothing.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "socket-activation descriptor {fd} is not open: {}",
                    io::Error::last_os_error()
                ),
            ));
        }
        // SAFETY: systemd's protocol gives this process the descriptors start..start+count
        // (the caller checked LISTEN_PID); the number is open (checked above), nothing else in
        // supd claims these numbers, and LISTEN_FDS_TAKEN makes sure they are adopted once.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
        fds.push(owned);
    }
    Ok(fds)
}

/// Remove variables from the environment. Changing the environment is only sound while no
/// other thread can read it, so this checks that the process has exactly one thread and fails
/// otherwise: a single thread cannot race with itself, and no new thread appears meanwhile
/// because this thread is the one that would have to create it.
pub fn remove_env_single_threaded(names: &[&str]) -> io::Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "cannot change the environment with {threads} threads running"
        )));
    }
    for name in names {
        // SAFETY: the process is single-threaded (checked above), so no other thread can be
        // reading or writing the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrandom_fills_and_differs() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        getrandom(&mut a).unwrap();
        getrandom(&mut b).unwrap();
        assert_ne!(a, [0u8; 64]);
        assert_ne!(a, b);
        getrandom(&mut []).unwrap();
    }

    #[test]
    fn take_listen_fds_rejects_bad_ranges() {
        assert!(take_listen_fds(-1, 1).is_err());
        assert!(take_listen_fds(RawFd::MAX, 2).is_err());
        assert!(take_listen_fds(3, 100_000).is_err());
    }

    #[test]
    fn remove_env_refuses_with_threads() {
        // Keep a second thread alive for the duration of the call, whatever the harness does.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let err = remove_env_single_threaded(&["SUPD_TEST_NOT_SET"]).unwrap_err();
        drop(tx);
        other.join().unwrap().unwrap_err();
        assert!(err.to_string().contains("threads"), "{err}");
    }
}
