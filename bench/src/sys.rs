//! The few raw syscalls the bench needs, each wrapped so the rest stays safe.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Raise this process's descriptor limit as far as it goes (10,000 websockets need 20,000+
/// descriptors here and in supd, which inherits the limit).
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    for target in [want, lim.rlim_max] {
        let new = libc::rlimit {
            rlim_cur: target,
            rlim_max: target.max(lim.rlim_max),
        };
        // SAFETY: setrlimit reads a struct we own; failure is reported, not undefined.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            return target;
        }
    }
    lim.rlim_cur
}

/// Children die with the bench even if it aborts, so no supd or websocat outlives a run.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs between fork and exec and calls only prctl, which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// SIGTERM to a child of ours.
pub fn terminate(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory effects; `pid` is a child we have not reaped, so the id
    // cannot have been reused by another process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// A TCP listener bound inside the network namespace of process `pid` (a container's): it is
/// created on a thread that entered that namespace, and stays there for good.
pub fn listen_in_netns(pid: u32, addr: SocketAddr) -> Result<TcpListener, String> {
    let ns = File::open(format!("/proc/{pid}/ns/net")).map_err(|e| format!("netns: {e}"))?;
    std::thread::spawn(move || {
        // SAFETY: setns on a descriptor we own, affecting only this short-lived thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", io::Error::last_os_error()));
        }
        TcpListener::bind(addr).map_err(|e| format!("bind {addr} in the container: {e}"))
    })
    .join()
    .map_err(|_| "listener thread panicked".to_string())?
}

/// A TCP connection made from inside the network namespace of process `pid`: the same
/// loopback path a process of the container would use.
pub fn connect_in_netns(pid: u32, addr: SocketAddr) -> Result<TcpStream, String> {
    let ns = File::open(format!("/proc/{pid}/ns/net")).map_err(|e| format!("netns: {e}"))?;
    std::thread::spawn(move || {
        // SAFETY: setns on a descriptor we own, affecting only this short-lived thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", io::Error::last_os_error()));
        }
        TcpStream::connect(addr).map_err(|e| format!("connect {addr} in the container: {e}"))
    })
    .join()
    .map_err(|_| "connect thread panicked".to_string())?
}

/// Spawn `cmd` with a new PTY as its controlling terminal and stdio; returns the child and the
/// PTY's master side.
pub fn spawn_on_pty(cmd: &mut Command) -> io::Result<(std::process::Child, File)> {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    // SAFETY: openpty writes two descriptors into the ints we own; name/termios/winsize may be
    // null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded, so both are fresh descriptors nobody else owns.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: between fork and exec only async-signal-safe calls: setsid, ioctl, prctl.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The parent's copies of the slave were moved into `cmd` and are closed when it drops.
    Ok((child, File::from(master)))
}
