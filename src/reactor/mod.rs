//! The loop's parts, below everything that uses them: the poller and its token table, the
//! timers, the shared read buffer, and `Io`, the narrow view of them that operations get.
//!
//! Tokens come from a counter and are never reused; `routes` says what each one is for. This
//! module knows nothing of the server or of operations (it imports neither): the server
//! dispatches on `Target`, operations register their descriptors through `Io`.

pub(crate) mod log;
pub mod net;
pub(crate) mod timers;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Instant;

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};

use crate::config::Config;
use timers::{Timer, Timers};

/// Size of the loop's shared read buffer: a 1 MiB body arrives in a few reads, and the
/// largest UDP datagram fits.
pub(crate) const SCRATCH: usize = 64 * 1024;

/// What a token is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    Listener(usize),
    Conn,
    Docker,
    /// A descriptor of an operation: the op's token and which of its descriptors.
    Op(Token, Role),
    /// A descriptor of a VM's guest-agent connection, shared by that VM's operations: the
    /// agent's key.
    Agent(Token),
}

/// Which of an operation's descriptors an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The client's socket (websocket sessions).
    Client,
    /// The intermediate child of a spawn (its pidfd).
    Intermediate,
    /// The command's pidfd.
    Process,
    /// The command's output (pipe or PTY master).
    Output,
    /// The command's stdin pipe.
    Stdin,
    /// The tunnel's socket inside the instance's namespace.
    Socket,
    /// The pipe of the helper reading the container init's seccomp filters (`prepare`).
    Filters,
    /// The socket of the helper opening the container's ptmx (`prepare`).
    Terminal,
    /// The connection to a peer site (`sites::Forward`).
    Peer,
}

/// The poller, the token table, the timers and the shared read buffer.
pub(crate) struct Reactor {
    pub(crate) poll: Poll,
    pub(crate) routes: HashMap<Token, Target>,
    next_token: usize,
    pub(crate) timers: Timers,
    /// The one read buffer of the loop: client connections read into it (see
    /// `HttpConn::fill`), operations borrow it to move output (`Io::take_scratch`).
    /// Nothing keeps a large buffer of its own between wake-ups.
    scratch: Vec<u8>,
}

impl Reactor {
    /// A poller whose dynamic tokens start at `first_token` (those below are the caller's).
    pub(crate) fn new(first_token: usize) -> io::Result<Reactor> {
        Ok(Reactor {
            poll: Poll::new()?,
            routes: HashMap::new(),
            next_token: first_token,
            timers: Timers::default(),
            scratch: vec![0; SCRATCH],
        })
    }

    /// A token never handed out before.
    pub(crate) fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    /// The loop's read buffer, whole again if an operation that borrowed it
    /// (`Io::take_scratch`) never gave it back (a panic in between).
    pub(crate) fn scratch(&mut self) -> &mut [u8] {
        if self.scratch.len() < SCRATCH {
            self.scratch.resize(SCRATCH, 0);
        }
        &mut self.scratch
    }
}

/// What operations may do with the loop: register descriptors, set timers, borrow the read
/// buffer.
pub(crate) struct Io<'a> {
    reactor: &'a mut Reactor,
    pub(crate) cfg: &'a Config,
}

impl<'a> Io<'a> {
    pub(crate) fn new(reactor: &'a mut Reactor, cfg: &'a Config) -> Io<'a> {
        Io { reactor, cfg }
    }

    /// Borrow the loop's read buffer (64 KiB, contents meaningless); give it back with
    /// `put_scratch`. Moving output through it spares every session a buffer of its own.
    pub(crate) fn take_scratch(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.reactor.scratch);
        // Only if a caller did not give it back: a fresh one, so nothing breaks.
        buf.resize(SCRATCH, 0);
        buf
    }

    pub(crate) fn put_scratch(&mut self, buf: Vec<u8>) {
        self.reactor.scratch = buf;
    }

    /// Register a descriptor of operation `op`; returns its new token.
    pub(crate) fn register(
        &mut self,
        op: Token,
        role: Role,
        source: &mut impl Source,
        interest: Interest,
    ) -> io::Result<Token> {
        let t = self.reactor.token();
        self.reactor.poll.registry().register(source, t, interest)?;
        self.reactor.routes.insert(t, Target::Op(op, role));
        Ok(t)
    }

    /// Register a plain descriptor (pidfd, pipe, PTY master) of operation `op`.
    pub(crate) fn register_fd(
        &mut self,
        op: Token,
        role: Role,
        fd: BorrowedFd<'_>,
        interest: Interest,
    ) -> io::Result<Token> {
        self.register(op, role, &mut SourceFd(&fd.as_raw_fd()), interest)
    }

    pub(crate) fn deregister(&mut self, token: Token, source: &mut impl Source) {
        let _ = self.reactor.poll.registry().deregister(source);
        self.reactor.routes.remove(&token);
    }

    /// Deregister a descriptor registered with `register_fd`.
    pub(crate) fn deregister_fd(&mut self, token: Token, fd: BorrowedFd<'_>) {
        self.deregister(token, &mut SourceFd(&fd.as_raw_fd()));
    }

    /// Wake operation `op` at `when` (it checks its own deadlines then).
    pub(crate) fn wake_at(&mut self, op: Token, when: Instant) {
        self.reactor.timers.at(when, Timer::Op(op));
    }

    /// A token never handed out before (a key for something shared, like a VM's agent).
    pub(crate) fn token(&mut self) -> Token {
        self.reactor.token()
    }

    /// Register a descriptor of the guest agent whose key is `agent`.
    pub(crate) fn register_agent_source(
        &mut self,
        agent: Token,
        source: &mut impl Source,
        interest: Interest,
    ) -> io::Result<Token> {
        let t = self.reactor.token();
        self.reactor.poll.registry().register(source, t, interest)?;
        self.reactor.routes.insert(t, Target::Agent(agent));
        Ok(t)
    }

    /// Register a plain descriptor of the guest agent whose key is `agent` (readable).
    pub(crate) fn register_agent(&mut self, agent: Token, fd: BorrowedFd<'_>) -> io::Result<Token> {
        let raw = fd.as_raw_fd();
        self.register_agent_source(agent, &mut SourceFd(&raw), Interest::READABLE)
    }

    /// Wake the guest agent whose key is `agent` at `when`.
    pub(crate) fn wake_agent_at(&mut self, agent: Token, when: Instant) {
        self.reactor.timers.at(when, Timer::Agent(agent));
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use mio::net::UnixStream;

    use super::*;

    #[test]
    fn a_descriptor_is_routed_to_its_operation_until_deregistered() {
        let mut reactor = Reactor::new(5).unwrap();
        let cfg = Config::default();
        let (a, _b) = UnixStream::pair().unwrap();
        let op = Token(1);
        let mut io = Io::new(&mut reactor, &cfg);
        let t = io
            .register_fd(op, Role::Output, a.as_fd(), Interest::READABLE)
            .unwrap();
        assert_eq!(t, Token(5));
        assert!(matches!(
            reactor.routes.get(&t),
            Some(Target::Op(o, Role::Output)) if *o == op
        ));
        let mut io = Io::new(&mut reactor, &cfg);
        io.deregister_fd(t, a.as_fd());
        assert!(reactor.routes.is_empty());
        // Tokens are never reused.
        assert_eq!(reactor.token(), Token(6));
    }

    #[test]
    fn the_scratch_buffer_survives_a_borrower_that_never_returns_it() {
        let mut reactor = Reactor::new(1).unwrap();
        let cfg = Config::default();
        let mut io = Io::new(&mut reactor, &cfg);
        let buf = io.take_scratch();
        assert_eq!(buf.len(), SCRATCH);
        drop(buf);
        assert_eq!(io.take_scratch().len(), SCRATCH);
        assert_eq!(reactor.scratch().len(), SCRATCH);
    }
}
