//! Raw process syscalls for entering containers: fork and clone, pidfds, terminals, openat2,
//! capabilities, execve.
//!
//! The functions meant for forked children (everything after `fork_child` returns in the
//! child) never allocate: the parent may have been multi-threaded (tests are), and a lock held
//! by a thread that did not survive the fork would deadlock the child.

use std::ffi::{CStr, CString, c_char, c_int};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::ForkResult;

/// `TIOCGPTPEER` (Linux 4.13): opens the slave of a PTY master without a path lookup, so the
/// slave is the one of the master's own devpts instance. `_IO('T', 0x41)`.
const TIOCGPTPEER: libc::c_ulong = 0x5441;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Exit status of a child whose setup failed, like a shell's "found but cannot run".
pub const EXIT_SETUP_FAILED: i32 = 126;

/// Forks. The child runs `child` and exits with its return value through `_exit`, so it
/// never returns into the caller's stack frames, never runs destructors or atexit handlers
/// of the parent's state, and never flushes buffers the parent owns.
///
/// `child` must not allocate or take locks when the calling process has other threads.
pub fn fork_child<F: FnOnce() -> i32>(child: F) -> nix::Result<i32> {
    // SAFETY: the child runs only `child` and then `_exit`s (`run_child` never returns, even
    // on panic). In a multi-threaded caller a lock held by another thread stays held in the
    // child; `child` is required not to take any, and a violation deadlocks the child rather
    // than corrupting memory. The parent side is ordinary.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(child.as_raw()),
        ForkResult::Child => run_child(child),
    }
}

/// `clone(CLONE_PARENT | CLONE_PARENT_SETTID | CLONE_CHILD_SETTID | SIGCHLD)` with no new
/// stack: like fork, but the new process is a child of the caller's parent, so the caller may
/// exit without orphaning it, and the kernel stores the new pid (as the caller's PID namespace
/// sees it) in `slot` before the new process runs. The new process runs `child` and `_exit`s
/// with its return value. Returns the new pid.
///
/// The caller may already run under a container's seccomp filters, and a filter can answer
/// any syscall with `SECCOMP_RET_ERRNO | 0`: "success", nothing done. A faked clone returns 0,
/// and the caller would take itself for the new process and run the command where it stands
/// (in the host's PID namespace). So the child side is trusted only when the kernel really
/// made a process: with `CLONE_CHILD_SETTID` it writes the new process's pid (at least 1)
/// into the new process's copy of `child_tid` before it runs; a faked clone leaves it 0.
/// That is an `EPERM` here, for the caller to report.
///
/// Only for a single-threaded caller (a forked child), which has nothing to lock.
pub fn clone_sibling<F: FnOnce() -> i32>(slot: &PidSlot, child: F) -> nix::Result<i32> {
    let flags =
        (libc::CLONE_PARENT | libc::CLONE_PARENT_SETTID | libc::CLONE_CHILD_SETTID | libc::SIGCHLD)
            as libc::c_ulong;
    let mut child_tid: c_int = 0;
    // SAFETY: a null stack makes clone behave like fork: the new process continues on a
    // copy-on-write copy of this stack. `slot.ptr` is a valid, writable, aligned int for the
    // kernel's CLONE_PARENT_SETTID store (in the caller's memory); `child_tid` is a valid,
    // aligned int on this stack for the CLONE_CHILD_SETTID store (in the new process's copy of
    // it); tls is unused without its flag. The caller is single-threaded, so no lock can be
    // held by a thread missing from the copy. The new process only runs `child` and `_exit`s.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            ptr::null_mut::<libc::c_void>(),
            slot.ptr.as_ptr(),
            &mut child_tid as *mut c_int,
            0 as libc::c_ulong,
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        // SAFETY: `child_tid` is a live local; the volatile read sees the kernel's store, which
        // the compiler cannot know about.
        0 if unsafe { ptr::read_volatile(&child_tid) } > 0 => run_child(child),
        0 => Err(Errno::EPERM),
        pid => Ok(pid as i32),
    }
}

/// One page shared between supd and the intermediate child of a spawn, in which the kernel
/// stores the command's pid as it clones it ([`clone_sibling`]). Unlike a pipe it is never a
/// descriptor, and the intermediate marks it `MADV_DONTFORK` ([`PidSlot::keep_from_children`])
/// so the command is born without it: nothing in the container can forge the pid supd will
/// signal.
pub struct PidSlot {
    ptr: std::ptr::NonNull<c_int>,
}

const PAGE: usize = 4096;

impl PidSlot {
    pub fn new() -> nix::Result<PidSlot> {
        // SAFETY: a fresh anonymous shared mapping; no existing memory is touched. The kernel
        // zero-fills it, so the slot reads 0 (no pid) until the clone stores one.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast::<c_int>()).ok_or(Errno::ENOMEM)?;
        Ok(PidSlot { ptr })
    }

    /// The stored pid, 0 while none. Read it after the intermediate exited (or was killed):
    /// the kernel's store happened before the clone returned.
    pub fn get(&self) -> i32 {
        // SAFETY: the page is mapped, aligned and initialised for as long as `self` lives;
        // the other writer (the kernel, for the intermediate) is done or stores a whole int,
        // and an atomic load never tears.
        unsafe {
            (*self.ptr.as_ptr().cast::<std::sync::atomic::AtomicI32>())
                .load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// `madvise(MADV_DONTFORK)`: processes forked from the caller from now on do not get
    /// the page. Called by the intermediate before it clones the command.
    pub fn keep_from_children(&self) -> nix::Result<()> {
        // SAFETY: the range is exactly the page this slot mapped.
        let ret = unsafe { libc::madvise(self.ptr.as_ptr().cast(), PAGE, libc::MADV_DONTFORK) };
        Errno::result(ret).map(drop)
    }
}

impl Drop for PidSlot {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the page `new` mapped, which nothing references any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), PAGE) };
    }
}

impl std::fmt::Debug for PidSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PidSlot({})", self.get())
    }
}

/// Descriptor 0, 1 or 2 of a forked child that put its stdio in place with dup2, without
/// `std::io::stdin()`, whose first use allocates a buffer.
pub fn standard_fd(fd: c_int) -> BorrowedFd<'static> {
    assert!((0..=2).contains(&fd), "not a standard descriptor");
    // SAFETY: only used in a forked child after its stdio was dup2'd onto 0-2; nothing closes
    // those descriptors before the child execs or exits, which ends every borrow.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Descriptor `fd` of a forked child that moved it there itself (see [`move_fd_cloexec`])
/// and keeps it open until it closes it last.
pub fn kept_fd(fd: c_int) -> BorrowedFd<'static> {
    // SAFETY: only used in a forked child that dup'd one of its descriptors onto `fd` and
    // closes it only after its last borrow (or leaves it to execve and exit).
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// `dup3(fd, target, O_CLOEXEC)`, or only sets close-on-exec when `fd` already is `target`.
/// Leaves `fd` open: for a forked child that closes everything above `target` next.
pub fn move_fd_cloexec(fd: BorrowedFd<'_>, target: c_int) -> nix::Result<()> {
    if fd.as_raw_fd() == target {
        return nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map(drop);
    }
    // SAFETY: plain integer arguments; `target` is replaced by design (the caller owns it or
    // it is free) and `fd` stays valid.
    let ret = unsafe { libc::dup3(fd.as_raw_fd(), target, libc::O_CLOEXEC) };
    Errno::result(ret).map(drop)
}

fn run_child<F: FnOnce() -> i32>(child: F) -> ! {
    /// Ends the process if `child` unwinds, so a panic can never return into the parent's
    /// code running in this copy of the process.
    struct ExitOnUnwind;
    impl Drop for ExitOnUnwind {
        fn drop(&mut self) {
            exit_now(EXIT_SETUP_FAILED);
        }
    }
    let guard = ExitOnUnwind;
    let code = child();
    std::mem::forget(guard);
    exit_now(code)
}

/// `_exit`: ends the process at once, without running anything of the parent's.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` takes a plain integer and never returns.
    unsafe { libc::_exit(code) }
}

/// `pidfd_open(pid, PIDFD_NONBLOCK)`. A pidfd is always close-on-exec.
pub fn pidfd_open(pid: i32) -> nix::Result<OwnedFd> {
    // SAFETY: plain integer arguments; the kernel returns a new descriptor or -1.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_open,
            pid as libc::pid_t,
            libc::PIDFD_NONBLOCK as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `ret` is a descriptor the kernel just created for us and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as c_int) })
}

/// `struct open_how` (libc's is non-exhaustive, so it cannot be built here).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dir, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: resolves `path`
/// as if `dir` were `/`, so absolute symlinks and `..` inside another root (a container's,
/// through `/proc/<pid>/root`) cannot escape it, and `/proc/*/fd` links are refused.
pub fn open_in_root(dir: BorrowedFd<'_>, path: &CStr, flags: OFlag) -> nix::Result<OwnedFd> {
    openat2(
        dir,
        path,
        flags,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// `openat2(dir, path, O_PATH | O_NOFOLLOW, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS)`: a handle on what is at `path` inside another root, following no
/// link of any kind, and opening nothing (no device's open runs). Reopen it with
/// [`reopen`] once it is known to be what was wanted.
pub fn open_path_in_root(dir: BorrowedFd<'_>, path: &CStr) -> nix::Result<OwnedFd> {
    openat2(
        dir,
        path,
        OFlag::O_PATH | OFlag::O_NOFOLLOW,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// Room for `/proc/self/fd/<fd>` and its NUL.
pub const FD_PATH_LEN: usize = 40;

/// `/proc/self/fd/<fd>` written into `buf`, without allocating (for forked children).
pub fn self_fd_path<'b>(fd: BorrowedFd<'_>, buf: &'b mut [u8; FD_PATH_LEN]) -> &'b CStr {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    *buf = [0; FD_PATH_LEN];
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 12];
    let mut n = fd.as_raw_fd() as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    // A u32 has at most 10 digits: the prefix, the digits and a NUL always fit.
    CStr::from_bytes_until_nul(&buf[..]).unwrap_or(c"/")
}

/// A stream socket connected to the unix socket an `O_PATH` handle refers to, through
/// `/proc/self/fd/<fd>`: the socket inode the handle holds, no path of anyone else's resolved
/// again. Blocking; without allocating (for forked children).
pub fn connect_unix_handle(handle: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    let mut buf = [0u8; FD_PATH_LEN];
    let path = self_fd_path(handle, &mut buf);
    let addr = UnixAddr::new(path.to_bytes())?;
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(sock.as_raw_fd(), &addr)?;
    Ok(sock)
}

fn openat2(dir: BorrowedFd<'_>, path: &CStr, flags: OFlag, resolve: u64) -> nix::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | OFlag::O_CLOEXEC).bits() as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: `path` is NUL-terminated and `how` is a valid `open_how` whose size we pass;
    // both outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `ret` is a descriptor the kernel just created for us and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as c_int) })
}

/// Unlocks a PTY slave (`unlockpt`), needed before the slave can be opened.
pub fn unlock_pty(master: BorrowedFd<'_>) -> nix::Result<()> {
    let unlock: c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the pointer, which is valid for the call.
    let ret = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) };
    Errno::result(ret).map(drop)
}

/// Opens the slave of `master` (`TIOCGPTPEER`), read-write, no controlling-tty side effect,
/// close-on-exec.
pub fn open_pty_peer(master: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes an int of open flags by value and returns a new descriptor.
    let ret = unsafe { libc::ioctl(master.as_raw_fd(), TIOCGPTPEER, flags) };
    let fd = Errno::result(ret)?;
    // SAFETY: `fd` is a descriptor the kernel just created for us and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes `tty` the controlling terminal of the calling session leader (`TIOCSCTTY`).
pub fn set_controlling_terminal(tty: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an int by value (0: do not steal from another session).
    let ret = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSCTTY, 0 as c_int) };
    Errno::result(ret).map(drop)
}

/// Sets a terminal's window size (`TIOCSWINSZ`); the foreground group gets `SIGWINCH`.
pub fn set_winsize(tty: BorrowedFd<'_>, rows: u16, cols: u16) -> nix::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, valid for the call.
    let ret = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    Errno::result(ret).map(drop)
}

/// Closes every descriptor from `first` up (`close_range(first, ~0, 0)`).
pub fn close_from(first: u32) -> nix::Result<()> {
    // SAFETY: plain integer arguments. Callers own every descriptor being closed: a forked
    // child that never uses (nor drops) an `OwnedFd` above `first` again.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0 as c_int) };
    Errno::result(ret).map(drop)
}

/// The kernel's `struct sigaction` for `rt_sigaction(2)` (x86-64/aarch64 layout, without
/// glibc's translation): glibc refuses signals 32 and 33, which it keeps for itself, so a
/// disposition inherited for them (an ignoring parent) could not be read or reset through it.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

fn kernel_sigaction(signal: c_int, act: Option<&KernelSigaction>) -> nix::Result<usize> {
    let mut old = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let act = act.map_or(ptr::null(), |a| a as *const KernelSigaction);
    // SAFETY: `act` is null or points to a valid kernel sigaction that installs no handler
    // code (SIG_DFL); `old` is valid and writable; the size is that of the kernel's 64-bit
    // signal set. Async-signal-safe: one system call, no allocation.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            signal,
            act,
            &mut old as *mut KernelSigaction,
            std::mem::size_of::<u64>(),
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(old.handler)
}

/// The signals this process ignores, found once (before any fork: `spawn` asks for them in
/// the parent). supd installs no handlers; it ignores what Rust's runtime ignores (SIGPIPE)
/// and what its parent left ignored; dispositions never change after start-up.
pub fn ignored_signals() -> &'static [c_int] {
    static IGNORED: std::sync::OnceLock<([c_int; 64], usize)> = std::sync::OnceLock::new();
    let (list, n) = IGNORED.get_or_init(|| {
        let mut list = [0; 64];
        let mut n = 0;
        for signal in 1..=64 {
            if kernel_sigaction(signal, None) == Ok(libc::SIG_IGN) && n < list.len() {
                list[n] = signal;
                n += 1;
            }
        }
        (list, n)
    });
    &list[..*n]
}

/// Restores what a new program expects of signals: an empty mask (supd blocks the signals
/// it reads from a signalfd) and default dispositions. execve resets handlers by itself but
/// keeps ignored signals ignored, so only those are reset: a call or two instead of sixty-odd
/// on every spawn.
pub fn reset_signals() -> nix::Result<()> {
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for &signal in ignored_signals() {
        kernel_sigaction(signal, Some(&default))?;
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
}

/// Drops every capability from 0 to `last_cap` that `keep` lacks from the bounding set
/// (needs CAP_SETPCAP, so call it before changing uid).
pub fn drop_bounding_capabilities(keep: u64, last_cap: u32) -> nix::Result<()> {
    for cap in 0..=last_cap.min(63) {
        if keep & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes the capability number by value.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        Errno::result(ret)?;
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Limits the effective and permitted sets to `mask` and sets the inheritable set to
/// `inheritable` (the kernel drops ambient capabilities that leave it).
pub fn limit_capabilities(mask: u64, inheritable: u64) -> nix::Result<()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: version 3 reads the header and writes two `CapData`, both valid for the call.
    Errno::result(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })?;
    for (word, d) in data.iter_mut().enumerate() {
        let m = (mask >> (32 * word)) as u32;
        d.effective &= m;
        d.permitted &= m;
        d.inheritable = (inheritable >> (32 * word)) as u32;
    }
    // SAFETY: version 3 reads the header and two `CapData`, both valid for the call.
    Errno::result(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) }).map(drop)
}

/// `getcwd` into `buf`; returns the path's length (without the NUL).
pub fn getcwd_into(buf: &mut [u8]) -> nix::Result<usize> {
    // SAFETY: `getcwd` writes at most `buf.len()` bytes, NUL included, into `buf`.
    let ret = unsafe { libc::getcwd(buf.as_mut_ptr().cast(), buf.len()) };
    if ret.is_null() {
        return Err(Errno::last());
    }
    Ok(buf.iter().position(|&b| b == 0).unwrap_or(buf.len()))
}

/// A NULL-terminated array of C strings for execve, built before forking, with room for one
/// more entry that a child can append without allocating.
pub struct CStrArray {
    strings: Vec<CString>,
    extra: Vec<u8>,
    /// Points into `strings` and `extra`, whose heap buffers never move; always ends in null.
    ptrs: Vec<*const c_char>,
}

impl CStrArray {
    /// `extra_bytes` reserves room for one appended entry (NUL included).
    pub fn new(strings: Vec<CString>, extra_bytes: usize) -> Self {
        let mut ptrs = Vec::with_capacity(strings.len() + 2);
        ptrs.extend(strings.iter().map(|s| s.as_ptr()));
        ptrs.push(ptr::null());
        CStrArray {
            strings,
            extra: Vec::with_capacity(extra_bytes),
            ptrs,
        }
    }

    pub fn strings(&self) -> &[CString] {
        &self.strings
    }

    /// Appends one entry made of `parts` concatenated, in the room reserved by `new`. Never
    /// allocates: returns false when it does not fit or a part holds a NUL.
    pub fn append_within_capacity(&mut self, parts: &[&[u8]]) -> bool {
        let len = parts.iter().map(|p| p.len()).sum::<usize>() + 1;
        if parts.iter().any(|p| p.contains(&0))
            || self.extra.capacity() - self.extra.len() < len
            || self.ptrs.len() == self.ptrs.capacity()
        {
            return false;
        }
        let start = self.extra.len();
        for part in parts {
            self.extra.extend_from_slice(part);
        }
        self.extra.push(0);
        let entry = self.extra[start..].as_ptr().cast::<c_char>();
        self.ptrs.pop();
        self.ptrs.push(entry);
        self.ptrs.push(ptr::null());
        true
    }
}

/// `execve`: only returns on failure, with the reason.
pub fn execve(path: &CStr, argv: &CStrArray, envp: &CStrArray) -> Errno {
    // SAFETY: `path` is NUL-terminated; both arrays are null-terminated arrays of pointers to
    // NUL-terminated strings they own (see `CStrArray`), alive for the call.
    unsafe { libc::execve(path.as_ptr(), argv.ptrs.as_ptr(), envp.ptrs.as_ptr()) };
    Errno::last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigpipe_is_among_the_ignored_signals() {
        // Rust's runtime ignores SIGPIPE in every binary, the test harness included.
        assert!(ignored_signals().contains(&libc::SIGPIPE));
        assert!(!ignored_signals().contains(&libc::SIGTERM));
    }

    #[test]
    fn cstr_array_appends_once_within_capacity() {
        let strings = vec![CString::new("A=1").unwrap()];
        let mut array = CStrArray::new(strings, 16);
        assert!(array.append_within_capacity(&[b"HOME=", b"/root"]));
        assert_eq!(array.ptrs.len(), 3);
        assert!(array.ptrs[2].is_null());
        // SAFETY: the pointer is to the NUL-terminated entry just appended, owned by `array`.
        let appended = unsafe { CStr::from_ptr(array.ptrs[1]) };
        assert_eq!(appended.to_bytes(), b"HOME=/root");
        // Only one entry fits in the pointer array.
        assert!(!array.append_within_capacity(&[b"X"]));
    }

    #[test]
    fn cstr_array_refuses_what_does_not_fit() {
        let mut array = CStrArray::new(Vec::new(), 4);
        assert!(!array.append_within_capacity(&[b"HOME=/"]));
        assert!(!array.append_within_capacity(&[b"a\0"]));
        assert!(array.append_within_capacity(&[b"abc"]));
    }
}
