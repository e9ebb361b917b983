//! Raw calls for configuration, tokens and systemd plumbing: kernel randomness, the
//! descriptors systemd hands over on socket activation, environment edits, and descriptors
//! passed between processes (`SCM_RIGHTS`, for helpers that open something for the loop).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
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

/// The most descriptors [`send_fds`] passes in one message.
pub const MAX_PASSED_FDS: usize = 2;
/// Room for a control message of [`MAX_PASSED_FDS`] descriptors (`CMSG_SPACE`, 8-aligned).
const CMSG_ROOM: usize = 64;

/// Aligned storage for a control message.
#[repr(C, align(8))]
struct CmsgBuffer([u8; CMSG_ROOM]);

/// Sends `data` with `fds` attached (`SCM_RIGHTS`) on the connected socket `sock`. Does not
/// allocate: forked children call it.
pub fn send_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> nix::Result<()> {
    if fds.len() > MAX_PASSED_FDS {
        return Err(Errno::EINVAL);
    }
    let mut control = CmsgBuffer([0; CMSG_ROOM]);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = fds.len() * std::mem::size_of::<RawFd>();
        // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
        let (space, len) = unsafe {
            (
                libc::CMSG_SPACE(payload as u32) as usize,
                libc::CMSG_LEN(payload as u32) as usize,
            )
        };
        debug_assert!(space <= CMSG_ROOM);
        msg.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: `msg` points at `control`, which has room for one header and `payload`
        // bytes (`space` <= CMSG_ROOM, checked by the bound on `fds.len()`); CMSG_FIRSTHDR
        // and CMSG_DATA stay inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = len as _;
            let data = libc::CMSG_DATA(cmsg) as *mut RawFd;
            for (i, fd) in fds.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), fd.as_raw_fd());
            }
        }
    }
    loop {
        // SAFETY: `msg` and everything it points to (iov, data, control) live across the call.
        let ret = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if ret >= 0 {
            return Ok(());
        }
        match Errno::last() {
            Errno::EINTR => continue,
            errno => return Err(errno),
        }
    }
}

/// Receives one message into `data` and the descriptors attached to it (close-on-exec, at
/// most [`MAX_PASSED_FDS`]). Returns the number of bytes (0 at EOF).
pub fn recv_fds(sock: BorrowedFd<'_>, data: &mut [u8]) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut control = CmsgBuffer([0; CMSG_ROOM]);
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = CMSG_ROOM as _;
    let n = loop {
        // SAFETY: `msg` points at `iov` (into `data`) and `control`, both live and writable.
        let ret = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if ret >= 0 {
            break ret as usize;
        }
        match Errno::last() {
            Errno::EINTR => continue,
            errno => return Err(errno),
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` up to `msg_controllen`; the CMSG_* macros walk it
    // within those bounds. Every SCM_RIGHTS descriptor is new in this process and owned here
    // at once, so none leaks (even those beyond the expected count, closed on drop).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let header = libc::CMSG_LEN(0) as usize;
                let count = ((*cmsg).cmsg_len as usize).saturating_sub(header)
                    / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(Errno::EMSGSIZE);
    }
    Ok((n, fds))
}

/// Open a configuration file (tokens, a site's token file, a PEM file) for reading without
/// ever blocking in open(2): `O_NONBLOCK`, so a FIFO put in its place returns at once instead
/// of waiting for a writer on the loop; then the opened descriptor itself is checked (fstat),
/// and anything but a regular file is refused before a byte is read.
pub fn open_regular(path: &std::path::Path) -> io::Result<(std::fs::File, std::fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((file, meta))
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
    fn descriptors_pass_over_a_socket() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        use std::os::fd::AsFd;
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        send_fds(a.as_fd(), b"ok", &[r.as_fd(), w.as_fd()]).unwrap();
        send_fds(a.as_fd(), b"no", &[]).unwrap();
        drop(a);
        let mut buf = [0u8; 4];
        let (n, fds) = recv_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"ok"[..], 2));
        // The passed pipe works: written through the second, read through the first.
        nix::unistd::write(&fds[1], b"x").unwrap();
        let mut one = [0u8; 1];
        assert_eq!(nix::unistd::read(&fds[0], &mut one).unwrap(), 1);
        let flags = fcntl(&fds[0], FcntlArg::F_GETFD).unwrap();
        assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
        let (n, fds) = recv_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"no"[..], 0));
        assert_eq!(recv_fds(b.as_fd(), &mut buf).unwrap().0, 0);
        let too_many = [r.as_fd(), r.as_fd(), r.as_fd()];
        assert_eq!(send_fds(b.as_fd(), b"x", &too_many), Err(Errno::EINVAL));
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
