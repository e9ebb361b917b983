//! A non-blocking Docker Engine API client that lives in the event loop.
//!
//! Each request gets its own connection to the unix socket (`Connection: close`): connecting
//! to a local socket costs microseconds, and it keeps every request independent — a slow
//! restart never queues a state refresh behind it. The event stream is one such request that
//! simply never ends.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use mio::net::UnixStream;
use mio::{Interest, Registry, Token};

use super::wire::{self, Event, LineSplitter, ResponseParser};

/// Longest line of the event stream we accept (an event is a few KiB at most).
const MAX_EVENT_LINE: usize = 1024 * 1024;
/// Largest response body we keep (a list of many containers, an inspect).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// Why a request was made; handed back with its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    Version,
    Events,
    List,
    Inspect(String),
    /// A step of a restart operation (the op's token and the container id).
    Restart {
        op: Token,
        id: String,
        step: u8,
    },
}

/// A finished request as an operation sees it: (status, body), or why it failed.
pub type Outcome = Result<(u16, Vec<u8>), String>;

#[derive(Debug)]
pub enum Reply {
    /// A complete response.
    Done {
        purpose: Purpose,
        status: u16,
        body: Vec<u8>,
    },
    /// One line of the event stream (a line over the limit comes cut).
    Event(wire::Line),
    /// The request failed (connection refused, reset, malformed response, event stream ended).
    Failed { purpose: Purpose, error: String },
}

struct Conn {
    stream: UnixStream,
    out: Vec<u8>,
    written: usize,
    parser: ResponseParser,
    purpose: Purpose,
    status: u16,
    body: Vec<u8>,
    lines: Option<LineSplitter>,
}

pub struct Client {
    socket: PathBuf,
    /// `/v1.41` once the version is negotiated; empty before.
    prefix: String,
    conns: HashMap<Token, Conn>,
}

impl Client {
    pub fn new(socket: PathBuf) -> Client {
        Client {
            socket,
            prefix: String::new(),
            conns: HashMap::new(),
        }
    }

    pub fn set_api_version(&mut self, version: &str) {
        self.prefix = format!("/v{version}");
    }

    pub fn owns(&self, token: Token) -> bool {
        self.conns.contains_key(&token)
    }

    /// Start a request on a new connection registered under `token`.
    pub fn start(
        &mut self,
        registry: &Registry,
        token: Token,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        purpose: Purpose,
    ) -> io::Result<()> {
        let mut stream = UnixStream::connect(&self.socket)?;
        let full = format!("{}{}", self.prefix, path);
        let out = wire::request(method, &full, body, true);
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        let lines = (purpose == Purpose::Events).then(|| LineSplitter::new(MAX_EVENT_LINE));
        self.conns.insert(
            token,
            Conn {
                stream,
                out,
                written: 0,
                parser: ResponseParser::new(),
                purpose,
                status: 0,
                body: Vec::new(),
                lines,
            },
        );
        Ok(())
    }

    /// Drop every connection (Docker went away, or shutdown).
    pub fn close_all(&mut self, registry: &Registry) -> Vec<Purpose> {
        let mut purposes = Vec::new();
        for (_, mut c) in self.conns.drain() {
            let _ = registry.deregister(&mut c.stream);
            purposes.push(c.purpose);
        }
        purposes
    }

    /// Drive the connection behind `token` after a readiness event.
    pub fn on_ready(&mut self, registry: &Registry, token: Token) -> Vec<Reply> {
        let mut replies = Vec::new();
        let Some(conn) = self.conns.get_mut(&token) else {
            return replies;
        };
        let finished = match drive(conn, &mut replies) {
            Ok(done) => done,
            Err(e) => {
                replies.push(Reply::Failed {
                    purpose: conn.purpose.clone(),
                    error: e,
                });
                true
            }
        };
        if finished && let Some(mut c) = self.conns.remove(&token) {
            let _ = registry.deregister(&mut c.stream);
        }
        replies
    }
}

/// Write what is pending, read what is there. Ok(true) when the connection is finished.
fn drive(conn: &mut Conn, replies: &mut Vec<Reply>) -> Result<bool, String> {
    while conn.written < conn.out.len() {
        match conn.stream.write(&conn.out[conn.written..]) {
            Ok(0) => return Err("docker closed the connection".into()),
            Ok(n) => conn.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write to docker: {e}")),
        }
    }
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.stream.read(&mut buf) {
            Ok(0) => {
                let events = conn.parser.eof().map_err(|e| e.to_string())?;
                if absorb(conn, events, replies)? {
                    return Ok(true);
                }
                return Err("docker closed the connection".into());
            }
            Ok(n) => {
                let events = conn.parser.feed(&buf[..n]).map_err(|e| e.to_string())?;
                if absorb(conn, events, replies)? {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read from docker: {e}")),
        }
    }
}

/// Ok(true) when the response is complete.
fn absorb(conn: &mut Conn, events: Vec<Event>, replies: &mut Vec<Reply>) -> Result<bool, String> {
    for ev in events {
        match ev {
            Event::Head { status, .. } => conn.status = status,
            Event::Body(data) => match conn.lines.as_mut() {
                Some(lines) if conn.status == 200 => {
                    replies.extend(lines.push(&data).into_iter().map(Reply::Event));
                }
                _ => {
                    if conn.body.len() + data.len() > MAX_BODY {
                        return Err("docker response too large".into());
                    }
                    conn.body.extend_from_slice(&data);
                }
            },
            Event::End => {
                if conn.lines.is_some() && conn.status == 200 {
                    return Err("docker event stream ended".into());
                }
                replies.push(Reply::Done {
                    purpose: conn.purpose.clone(),
                    status: conn.status,
                    body: std::mem::take(&mut conn.body),
                });
                return Ok(true);
            }
        }
    }
    Ok(false)
}
