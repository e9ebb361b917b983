//! Before an exec or exec-interactive spawns: waiting for the seccomp filters of the
//! container's first process, which a helper process reads
//! ([`container::confine::lookup`]). The request waits here like any other operation, on the
//! helper's pipe and a timer, so a container whose init never stops for the helper delays
//! only its own requests; several requests for one init share one helper. A session with a
//! terminal also waits here for its PTY, which another helper opens in the container's
//! devpts ([`container::pty::Opening`]): the container's file system is never looked into
//! on the loop. Once both are there the operation becomes the exec or session it was asked
//! for.

use std::os::fd::{AsFd, OwnedFd};

use mio::{Interest, Token};

use super::{Io, Op, Progress, Reply, Role, exec, interactive};
use crate::container::{self, confine, pty};
use crate::http::{ApiError, Format};

/// Why an exec or session could not be started.
#[derive(Debug)]
pub(crate) enum Error {
    /// Reading the filters or spawning failed (`container::Error` has the statuses).
    Container(container::Error),
    /// The loop would not take the filter read's pipe (500).
    FollowFilters(std::io::Error),
    /// The loop would not take the command's descriptors (500).
    FollowCommand(std::io::Error),
    /// The daemon stops before the filters were read (503).
    ShuttingDown,
    /// The filter read disappeared (a bug: 500).
    FilterReadLost,
    /// The loop would not take the PTY helper's socket (500).
    FollowTerminal(std::io::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Container(e) => write!(f, "{e}"),
            Error::FollowFilters(e) => write!(f, "cannot follow the filter read: {e}"),
            Error::FollowCommand(e) => write!(f, "cannot follow the command: {e}"),
            Error::ShuttingDown => f.write_str("supd is shutting down"),
            Error::FilterReadLost => f.write_str("the filter read was lost"),
            Error::FollowTerminal(e) => write!(f, "cannot follow the terminal's opening: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<container::Error> for Error {
    fn from(e: container::Error) -> Error {
        Error::Container(e)
    }
}

/// What to run, and which operation follows it.
pub(crate) struct Start {
    pub(crate) target: container::Target,
    pub(crate) argv: Vec<String>,
    pub(crate) stdio: container::Stdio,
    pub(crate) then: Then,
}

pub(crate) enum Then {
    /// A one-shot exec answering in `output` (JSON, YAML or raw bytes).
    Exec { output: Format },
    /// An interactive session; `head` is its 101 answer.
    Interactive { head: Vec<u8> },
}

/// What [`begin`] produced: the operation itself, or a wait for the filters first.
pub(crate) enum Begun {
    Now(Op),
    Later(Box<Preparing>),
}

/// Starts `start` at once when the init's filters are known (no filter, or cached), else
/// waits for them. `format` is for an error answered later.
pub(crate) fn begin(
    me: Token,
    start: Start,
    format: Format,
    io: &mut Io<'_>,
) -> Result<Begun, Error> {
    let lookup = confine::lookup(start.target.pid)?;
    let terminal = match start.stdio {
        container::Stdio::Pty { .. } => Some(pty::Opening::start(
            start.target.pid,
            &start.target.container_id,
        )?),
        container::Stdio::Pipes { .. } => None,
    };
    let (filters, read) = match lookup {
        confine::Lookup::Ready(filters) if terminal.is_none() => {
            return Ok(Begun::Now(launch(me, start, &filters, None, io)?));
        }
        confine::Lookup::Ready(filters) => (Some(filters), None),
        confine::Lookup::Reading(read) => (None, Some(read)),
    };
    let mut preparing = Box::new(Preparing {
        start: Some(start),
        read: None,
        filters,
        terminal: None,
        pty: None,
        format,
        gone: false,
        stopping: false,
    });
    if let Some(read) = read {
        let watch = read.watch()?;
        let token = io
            .register_fd(me, Role::Filters, watch.as_fd(), Interest::READABLE)
            .map_err(Error::FollowFilters)?;
        io.wake_at(me, read.deadline());
        preparing.read = Some((read, watch, token));
    }
    if let Some(opening) = terminal {
        let token = match io.register_fd(me, Role::Terminal, opening.socket(), Interest::READABLE) {
            Ok(token) => token,
            Err(e) => {
                preparing.release(io);
                return Err(Error::FollowTerminal(e));
            }
        };
        io.wake_at(me, opening.deadline());
        preparing.terminal = Some((opening, token));
    }
    Ok(Begun::Later(preparing))
}

fn launch(
    me: Token,
    start: Start,
    filters: &confine::InitFilters,
    terminal: Option<pty::Pty>,
    io: &mut Io<'_>,
) -> Result<Op, Error> {
    let spawned = match (terminal, start.stdio) {
        (Some(pty), container::Stdio::Pty { rows, cols }) => {
            container::set_winsize(pty.master.as_fd(), rows, cols)?;
            container::spawn_on_terminal(&start.target, filters, &start.argv, pty)?
        }
        _ => container::spawn(&start.target, filters, &start.argv, start.stdio)?,
    };
    let follow = Error::FollowCommand;
    Ok(match start.then {
        Then::Exec { output } => {
            Op::Exec(exec::Exec::start(me, spawned, output, io).map_err(follow)?)
        }
        Then::Interactive { head } => Op::Interactive(Box::new(
            interactive::Interactive::start(me, spawned, head, io).map_err(follow)?,
        )),
    })
}

/// An exec or session waiting for the init's filters.
pub(crate) struct Preparing {
    /// Until launched.
    start: Option<Start>,
    /// The shared read, this operation's own descriptor of its pipe, and its token.
    read: Option<(confine::FilterRead, OwnedFd, Token)>,
    /// The filters, once read.
    filters: Option<confine::InitFilters>,
    /// A terminal's opening in the container (its helper and socket's token) until done.
    terminal: Option<(pty::Opening, Token)>,
    /// The terminal, once opened.
    pty: Option<pty::Pty>,
    format: Format,
    /// The HTTP client left: nothing to start.
    gone: bool,
    stopping: bool,
}

impl Preparing {
    /// Looks at the read (pipe readable, deadline, or any wake-up). Returns the operation
    /// that replaces this one once the command is spawned.
    pub(crate) fn drive(&mut self, me: Token, io: &mut Io<'_>) -> (Option<Op>, Progress) {
        let mut progress = Progress::default();
        if self.gone {
            progress.done = true;
            return (None, progress);
        }
        let outcome = if self.stopping {
            Err(Error::ShuttingDown)
        } else {
            match (self.poll_terminal(io), self.poll_filters(io)) {
                (Some(Err(e)), _) | (_, Some(Err(e))) => Err(e),
                (Some(Ok(())), Some(Ok(()))) => {
                    let start = self.start.take().expect("launched once");
                    let filters = self.filters.take().expect("filters read");
                    launch(me, start, &filters, self.pty.take(), io)
                }
                _ => return (None, progress),
            }
        };
        match outcome {
            Ok(op) => {
                // A session answers 101 now; the connection is handed over.
                progress.upgrade = matches!(op, Op::Interactive(_));
                (Some(op), progress)
            }
            Err(e) => {
                progress.reply = Some(Reply {
                    response: ApiError::from(e).into_response(self.format),
                });
                progress.done = true;
                (None, progress)
            }
        }
    }

    /// The client left: this operation stops waiting (the helper is killed with the last
    /// waiter gone).
    pub(crate) fn client_gone(&mut self, io: &mut Io<'_>) {
        self.gone = true;
        self.stop_reading(io);
        self.stop_terminal(io);
    }

    pub(crate) fn shutdown(&mut self) {
        self.stopping = true;
    }

    pub(crate) fn release(&mut self, io: &mut Io<'_>) {
        self.stop_reading(io);
        self.stop_terminal(io);
    }

    /// `Some(Ok)` once the filters are there, `None` while they are read.
    fn poll_filters(&mut self, io: &mut Io<'_>) -> Option<Result<(), Error>> {
        if self.filters.is_some() {
            return Some(Ok(()));
        }
        let result = match &self.read {
            Some((read, _, _)) => read.progress()?,
            None => return Some(Err(Error::FilterReadLost)),
        };
        self.stop_reading(io);
        Some(
            result
                .map(|filters| self.filters = Some(filters))
                .map_err(Error::from),
        )
    }

    /// `Some(Ok)` once the terminal is open (or none is needed), `None` while its helper works.
    fn poll_terminal(&mut self, io: &mut Io<'_>) -> Option<Result<(), Error>> {
        let Some((opening, _)) = &mut self.terminal else {
            return Some(Ok(()));
        };
        let result = opening.progress()?;
        self.stop_terminal(io);
        Some(result.map(|pty| self.pty = Some(pty)).map_err(Error::from))
    }

    fn stop_reading(&mut self, io: &mut Io<'_>) {
        if let Some((read, watch, token)) = self.read.take() {
            io.deregister_fd(token, watch.as_fd());
            drop(read);
        }
    }

    /// Stops waiting for the terminal; a helper still at work is killed (see
    /// [`pty::Opening`]).
    fn stop_terminal(&mut self, io: &mut Io<'_>) {
        if let Some((opening, token)) = self.terminal.take() {
            io.deregister_fd(token, opening.socket());
            drop(opening);
        }
    }
}
