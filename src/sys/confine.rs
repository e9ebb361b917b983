//! Raw calls that confine a process started in a container like the container's first
//! process: ptrace to read that process's seccomp filters, seccomp to install them, resource
//! limits, the ambient capability set, LSM attribute writes.
//!
//! Everything a forked child calls here is one system call on memory the caller prepared;
//! nothing allocates.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// `PTRACE_SECCOMP_GET_FILTER` (Linux 4.4, `linux/ptrace.h`); not in the libc crate.
const PTRACE_SECCOMP_GET_FILTER: libc::c_long = 0x420c;

/// One classic BPF instruction (`struct sock_filter`).
pub type BpfInstruction = libc::sock_filter;

/// The kernel's limit on the length of one classic BPF program (`BPF_MAXINSNS`).
pub const BPF_MAX_INSTRUCTIONS: usize = 4096;

fn ptrace(request: libc::c_long, pid: i32, addr: libc::c_long, data: usize) -> nix::Result<i64> {
    // SAFETY: every request made through this helper (SEIZE, INTERRUPT, DETACH,
    // SECCOMP_GET_FILTER) takes integers in `addr` and `data`, except SECCOMP_GET_FILTER with
    // a non-zero `data`, which `read_seccomp_filter` passes as a pointer to a buffer it has
    // checked is large enough for the program the kernel copies.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_ptrace,
            request,
            pid as libc::pid_t,
            addr,
            data as libc::c_ulong,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(ret)
}

/// `PTRACE_SEIZE`: traces `pid` without stopping it or sending it a signal.
pub fn ptrace_seize(pid: i32) -> nix::Result<()> {
    ptrace(libc::PTRACE_SEIZE as libc::c_long, pid, 0, 0).map(drop)
}

/// `PTRACE_INTERRUPT`: asks a seized tracee to stop; the stop is reported to `waitpid`.
pub fn ptrace_interrupt(pid: i32) -> nix::Result<()> {
    ptrace(libc::PTRACE_INTERRUPT as libc::c_long, pid, 0, 0).map(drop)
}

/// `PTRACE_DETACH`, resuming the tracee with `signal` (0 for none).
pub fn ptrace_detach(pid: i32, signal: i32) -> nix::Result<()> {
    ptrace(libc::PTRACE_DETACH as libc::c_long, pid, 0, signal as usize).map(drop)
}

/// How a tracee stopped.
pub enum Stop {
    /// A ptrace stop; `signal` must be passed on at detach (a signal-delivery stop), or 0.
    Stopped { signal: i32 },
    /// The tracee is gone.
    Exited,
}

/// Waits for tracee `pid` to stop (`waitpid(pid, __WALL)`): the tracer may wait for a
/// process that is not its child.
pub fn wait_for_stop(pid: i32) -> nix::Result<Stop> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid int for the kernel to write; no other pointer is passed.
        let ret = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if ret < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                errno => return Err(errno),
            }
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return Ok(Stop::Exited);
        }
        if libc::WIFSTOPPED(status) {
            // `status >> 16` names a ptrace event (PTRACE_EVENT_STOP for the interrupt or a
            // group stop); without one this is a signal-delivery stop, whose signal would be
            // lost unless re-injected.
            let event = status >> 16;
            let signal = if event == 0 {
                libc::WSTOPSIG(status)
            } else {
                0
            };
            return Ok(Stop::Stopped { signal });
        }
    }
}

/// Length, in instructions, of seccomp filter `index` of stopped tracee `pid` (0 is the first
/// installed, the kernel's `get_nth_filter`); `ENOENT` past the last one.
pub fn seccomp_filter_len(pid: i32, index: usize) -> nix::Result<usize> {
    ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index as libc::c_long, 0).map(|n| n as usize)
}

/// Copies seccomp filter `index` of stopped tracee `pid` into `buf`; returns its length.
/// Fails with `E2BIG` (copying nothing) when it is longer than `buf`.
pub fn read_seccomp_filter(
    pid: i32,
    index: usize,
    buf: &mut [BpfInstruction],
) -> nix::Result<usize> {
    let len = seccomp_filter_len(pid, index)?;
    if len > buf.len() {
        return Err(Errno::E2BIG);
    }
    // The filter cannot change between the two calls: the tracee is stopped and filters are
    // never modified, only stacked by the tracee itself.
    let copied = ptrace(
        PTRACE_SECCOMP_GET_FILTER,
        pid,
        index as libc::c_long,
        buf.as_mut_ptr() as usize,
    )? as usize;
    if copied != len {
        return Err(Errno::EIO);
    }
    Ok(len)
}

/// The bytes of `program`, as the kernel lays it out (8 bytes an instruction, no padding).
pub fn instruction_bytes(program: &[BpfInstruction]) -> &[u8] {
    // SAFETY: `sock_filter` is `repr(C)` {u16, u8, u8, u32}: 8 bytes without padding, so every
    // byte of the slice is initialised; the returned slice borrows `program` and covers
    // exactly its memory.
    unsafe {
        std::slice::from_raw_parts(
            program.as_ptr().cast::<u8>(),
            std::mem::size_of_val(program),
        )
    }
}

/// Installs `program` as a seccomp filter of the calling thread
/// (`seccomp(SECCOMP_SET_MODE_FILTER, 0, ...)`). Needs no_new_privs or CAP_SYS_ADMIN.
pub fn install_seccomp_filter(program: &[BpfInstruction]) -> nix::Result<()> {
    let len = u16::try_from(program.len()).map_err(|_| Errno::EINVAL)?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points to `len` valid instructions that outlive the call; the kernel
    // copies the program and never writes through the pointer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &fprog as *const libc::sock_fprog,
        )
    };
    Errno::result(ret).map(drop)
}

/// A resource limit: (soft, hard).
pub type Limit = (u64, u64);

/// `prlimit(pid, resource)`: the limit of another process (needs CAP_SYS_RESOURCE or the
/// same user). `pid` 0 is the caller.
pub fn process_limit(pid: i32, resource: u32) -> nix::Result<Limit> {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a null new limit changes nothing; `old` is valid for the kernel to write.
    let ret = unsafe { libc::prlimit64(pid, resource, std::ptr::null(), &mut old) };
    Errno::result(ret)?;
    Ok((old.rlim_cur, old.rlim_max))
}

/// Sets a resource limit of the calling process.
pub fn set_own_limit(resource: u32, (soft, hard): Limit) -> nix::Result<()> {
    let new = libc::rlimit64 {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `new` is a valid limit read by the kernel; a null old limit is not written.
    let ret = unsafe { libc::prlimit64(0, resource, &new, std::ptr::null_mut()) };
    Errno::result(ret).map(drop)
}

/// Empties the ambient capability set.
pub fn clear_ambient_capabilities() -> nix::Result<()> {
    // SAFETY: PR_CAP_AMBIENT takes integer arguments only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    Errno::result(ret).map(drop)
}

/// Opens `path` under `dir` for writing, close-on-exec, following symlinks inside `dir`
/// (procfs's `thread-self` is one).
pub fn open_for_write(dir: BorrowedFd<'_>, path: &CStr) -> nix::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        )
    };
    let fd = Errno::result(fd)?;
    // SAFETY: `fd` is a descriptor the kernel just created for us and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_limits_read_back() {
        let own = process_limit(0, libc::RLIMIT_NOFILE).unwrap();
        assert_eq!(
            process_limit(std::process::id() as i32, libc::RLIMIT_NOFILE),
            Ok(own)
        );
        assert!(process_limit(0, 1000).is_err());
    }

    #[test]
    fn filters_of_a_process_not_traced_cannot_be_read() {
        assert_eq!(
            seccomp_filter_len(std::process::id() as i32, 0),
            Err(Errno::ESRCH)
        );
    }
}
