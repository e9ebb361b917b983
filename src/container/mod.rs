//! Entering containers: namespaces, process spawning, PTYs, cgroups, users.
//!
//! A command runs in a container the way `runc exec` and `nsenter` do it, with no Docker
//! call: supd opens the namespaces of the container's first process, forks an intermediate
//! child that joins the container's cgroups and namespaces, confines itself, and only then
//! clones the command as supd's own child inside the container's PID namespace; it returns
//! at once. Nothing here blocks
//! or changes supd's own namespaces. See [`spawn`] for the life cycle.

pub mod cgroup;
pub mod confine;
pub mod helper;
pub mod identity;
pub mod netns;
pub mod ns;
pub mod pty;
pub mod spawn;
pub mod user;
pub mod words;

use std::fmt;
use std::os::fd::OwnedFd;

use nix::errno::Errno;

pub use pty::set_winsize;
pub use spawn::{
    kill_group, kill_process, pidfd_open, reached_exec, read_handoff, spawn, spawn_on_terminal,
    try_wait,
};
pub use words::{is_blank, split_words};

#[derive(Debug)]
pub enum Error {
    /// The container's first process no longer exists (the container stopped).
    ContainerGone { pid: i32 },
    /// A system call failed.
    Sys { op: &'static str, errno: Errno },
    /// Reading a file failed.
    Io {
        op: &'static str,
        source: std::io::Error,
    },
    /// The command string or argument vector cannot be run.
    BadCommand(&'static str),
    /// A field of the target (user, environment, working dir) cannot be used.
    BadTarget(&'static str),
    /// The intermediate child wrote something other than a pid.
    BadHandoff,
    /// The command did not reach execve in time (something in the container stopped it, or
    /// its filter blocks a step); it and the intermediate were killed.
    StartTimeout { after: std::time::Duration },
    /// The container's `/dev/pts/ptmx` could not be looked up in time (a file system the
    /// container mounted there does not answer); the helper looking was killed.
    TerminalTimeout { after: std::time::Duration },
    /// Too many earlier lookups into this container's file system (or into all containers')
    /// have not returned: no new helper is forked until they are reaped (503).
    LookupsStuck { this_container: bool },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ContainerGone { pid } => write!(f, "container process {pid} is gone"),
            Error::Sys { op, errno } => write!(f, "{op}: {}", errno.desc()),
            Error::Io { op, source } => write!(f, "{op}: {source}"),
            Error::BadCommand(why) => write!(f, "bad command: {why}"),
            Error::BadTarget(why) => write!(f, "bad container settings: {why}"),
            Error::BadHandoff => write!(f, "malformed pid from the exec child"),
            Error::StartTimeout { after } => write!(
                f,
                "the command did not start within {} ms (stopped or blocked in the container)",
                after.as_millis()
            ),
            Error::LookupsStuck {
                this_container: true,
            } => write!(
                f,
                "{} earlier lookups in this container's file system have not returned (a file system there does not answer); try again later",
                helper::MAX_PER_CONTAINER
            ),
            Error::LookupsStuck {
                this_container: false,
            } => write!(
                f,
                "{} lookups in containers' file systems have not returned; try again later",
                helper::MAX_HELPERS
            ),
            Error::TerminalTimeout { after } => write!(
                f,
                "the container's /dev/pts/ptmx could not be opened within {} ms",
                after.as_millis()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Sys { errno, .. } => Some(errno),
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The container to run in, from Docker's inspect data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `State.Pid`: the container's first process, as supd's PID namespace sees it.
    pub pid: i32,
    /// Docker's full container id: the process at `pid` must be that container's (see
    /// [`identity`]), else nothing is entered.
    pub container_id: String,
    /// `Config.User`: empty (root), `name`, `uid`, `name:group`, `uid:gid`.
    pub user: String,
    /// `Config.Env`: `KEY=value` entries.
    pub env: Vec<String>,
    /// `Config.WorkingDir`: empty means `/`.
    pub working_dir: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    /// A terminal of the given size; output and input go through its master.
    Pty { rows: u16, cols: u16 },
    /// Pipes: stdin from a pipe (or /dev/null), stdout and stderr merged into one pipe.
    Pipes { stdin: bool },
}

/// supd's ends of the command's stdio: non-blocking and close-on-exec.
#[derive(Debug)]
pub enum Io {
    Pty {
        master: OwnedFd,
    },
    Pipes {
        stdin: Option<OwnedFd>,
        output: OwnedFd,
    },
}

/// A spawn in progress. Wait for `intermediate_pidfd` to be readable, reap
/// `intermediate_pid` with [`try_wait`], then [`read_handoff`] for the command's pid.
/// [`reached_exec`] on `started` says when the command got as far as execve.
#[derive(Debug)]
pub struct Spawned {
    pub intermediate_pid: i32,
    pub intermediate_pidfd: OwnedFd,
    pub handoff: crate::sys::process::PidSlot,
    /// Non-blocking read end of the start pipe.
    pub started: OwnedFd,
    pub io: Io,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}
