//! Before an exec or exec-interactive spawns: waiting for the seccomp filters of the
//! container's first process, which a helper process reads
//! ([`container::confine::lookup`]). The request waits here like any other operation, on the
//! helper's pipe and a timer, so a container whose init never stops for the helper delays
//! only its own requests; several requests for one init share one helper. Once the filters
//! are there the operation becomes the exec or session it was asked for.

use std::os::fd::{AsFd, OwnedFd};

use mio::{Interest, Token};

use super::{Io, Op, Progress, Reply, Role, exec, interactive};
use crate::container::{self, confine};
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
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Container(e) => write!(f, "{e}"),
            Error::FollowFilters(e) => write!(f, "cannot follow the filter read: {e}"),
            Error::FollowCommand(e) => write!(f, "cannot follow the command: {e}"),
            Error::ShuttingDown => f.write_str("supd is shutting down"),
            Error::FilterReadLost => f.write_str("the filter read was lost"),
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
    match confine::lookup(start.target.pid)? {
        confine::Lookup::Ready(filters) => Ok(Begun::Now(launch(me, start, &filters, io)?)),
        confine::Lookup::Reading(read) => {
            let watch = read.watch()?;
            let token = io
                .register_fd(me, Role::Filters, watch.as_fd(), Interest::READABLE)
                .map_err(Error::FollowFilters)?;
            io.wake_at(me, read.deadline());
            Ok(Begun::Later(Box::new(Preparing {
                start: Some(start),
                read: Some((read, watch, token)),
                format,
                gone: false,
                stopping: false,
            })))
        }
    }
}

fn launch(
    me: Token,
    start: Start,
    filters: &confine::InitFilters,
    io: &mut Io<'_>,
) -> Result<Op, Error> {
    let spawned = container::spawn(&start.target, filters, &start.argv, start.stdio)?;
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
        let outcome = match (&self.read, self.stopping) {
            (_, true) => Err(Error::ShuttingDown),
            (Some((read, _, _)), false) => match read.progress() {
                None => return (None, progress),
                Some(result) => {
                    self.stop_reading(io);
                    result.map_err(Error::from).and_then(|filters| {
                        let start = self.start.take().expect("launched once");
                        launch(me, start, &filters, io)
                    })
                }
            },
            (None, false) => Err(Error::FilterReadLost),
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
    }

    pub(crate) fn shutdown(&mut self) {
        self.stopping = true;
    }

    pub(crate) fn release(&mut self, io: &mut Io<'_>) {
        self.stop_reading(io);
    }

    fn stop_reading(&mut self, io: &mut Io<'_>) {
        if let Some((read, watch, token)) = self.read.take() {
            io.deregister_fd(token, watch.as_fd());
            drop(read);
        }
    }
}
