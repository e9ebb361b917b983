//! `GET .../exec-interactive` (`v1.exec-interactive.supd`): a command in the container wired to
//! a websocket, through a PTY (tty=true) or pipes.
//!
//! Bytes flow both ways with bounded buffers: when the client reads slowly the PTY is not read
//! (the command blocks on its own output), and when the command does not read its input the
//! client's frames are not read. Keystrokes such as Ctrl-C still reach a PTY promptly while
//! output is paused, because pausing output never pauses input.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use nix::sys::signal::Signal;

use super::decode::{DecodeCtx, DecodeError, check_query, upgrade, words};
use super::proc::Proc;
use tungstenite::Bytes;

use super::wsclient::{Forwarded, FrameSink, WsClient};
use super::{Io, Progress, Role};
use crate::container::{self, ExitStatus};
use crate::http::query::Query;
use crate::http::request::Request;
use crate::http::router::{ContainerRef, Instance};
use crate::ws::handshake::Accepted;
use crate::ws::protocol::{self, ClientFrame};

/// What an `exec-interactive` request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InteractiveParams {
    pub application: String,
    pub instance: Instance,
    pub target: ContainerRef,
    /// The command line's words (`container::split_words`).
    pub argv: Vec<String>,
    /// `tty=true` (the default): a PTY; `tty=false`: pipes.
    pub tty: bool,
    /// The websocket handshake's result, for the 101 head.
    pub accepted: Accepted,
}

impl InteractiveParams {
    /// The `exec-interactive` decoder: the handshake first, then the query.
    pub fn decode(
        application: String,
        instance: Instance,
        target: ContainerRef,
        query: &Query,
        req: &Request,
        ctx: &DecodeCtx<'_>,
    ) -> Result<InteractiveParams, DecodeError> {
        let accepted = upgrade(req, &[protocol::EXEC_INTERACTIVE], ctx)?;
        check_query(query, &["site", "fields", "cmd", "tty"], ctx)?;
        let cmd = query
            .single("cmd")?
            .filter(|c| !container::is_blank(c))
            .ok_or(DecodeError::BlankCmd)?;
        let tty = match query.single("tty")? {
            None | Some("true") => true,
            Some("false") => false,
            Some(v) => return Err(DecodeError::BadTty(v.to_string())),
        };
        Ok(InteractiveParams {
            application,
            instance,
            target,
            argv: words(cmd)?,
            tty,
            accepted,
        })
    }
}

/// Largest output frame (the limit, and a good PTY read size).
const OUT_CHUNK: usize = 64 * 1024;
const _: () = assert!(OUT_CHUNK <= crate::reactor::SCRATCH);
/// Input waiting for the command beyond this stops reading the client.
const STDIN_LIMIT: usize = 256 * 1024;
/// After the command exits, how long to wait for the rest of its output.
const OUTPUT_LINGER: Duration = Duration::from_millis(500);

pub(crate) struct Interactive {
    client: Option<WsClient>,
    proc: Proc,
    /// The PTY master, or the output pipe.
    out: Option<(File, Token)>,
    /// The stdin pipe (pipes only; a PTY takes input on its master).
    stdin: Option<(File, Token)>,
    pty: bool,
    /// Output read but not yet accepted by the websocket.
    held: Option<Vec<u8>>,
    to_child: Vec<u8>,
    close_stdin_after: bool,
    exited_at: Option<Instant>,
    grace: Duration,
    closing: bool,
    /// The 101 answer, written first when the client is attached.
    head: Vec<u8>,
}

/// The client's frames (`ws::protocol`): input, resize, end of input.
impl FrameSink for Interactive {
    fn ready(&mut self) -> bool {
        self.to_child.len() < STDIN_LIMIT && !self.closing
    }

    fn message(&mut self, client: &mut WsClient, me: Token, io: &mut Io<'_>, data: Bytes) {
        match protocol::parse_client_frame(&data) {
            Ok(ClientFrame::Stdin(bytes)) => {
                if !self.close_stdin_after {
                    self.to_child.extend_from_slice(bytes);
                }
            }
            Ok(ClientFrame::Resize { rows, cols }) => {
                if self.pty
                    && let Some((f, _)) = self.out.as_ref()
                    && let Err(e) = container::set_winsize(f.as_fd(), rows, cols)
                {
                    log::debug!("resize: {e}");
                }
            }
            Ok(ClientFrame::CloseStdin) => self.close_stdin_after = true,
            Err(e) => {
                self.closing = true;
                client.close(me, protocol::CLOSE_UNSUPPORTED, &e.to_string(), io);
                self.hang_up(me, io);
            }
        }
    }

    fn text(&mut self, _client: &mut WsClient, me: Token, io: &mut Io<'_>) {
        self.closing = true;
        self.hang_up(me, io);
    }

    fn closed(&mut self, me: Token, io: &mut Io<'_>) {
        self.closing = true;
        self.hang_up(me, io);
    }
}

impl Interactive {
    pub(crate) fn start(
        me: Token,
        spawned: container::Spawned,
        head: Vec<u8>,
        io: &mut Io<'_>,
    ) -> std::io::Result<Interactive> {
        let (proc, stdio) = Proc::from_spawned(me, spawned, io)?;
        let (out, stdin, pty) = match stdio {
            container::Io::Pty { master } => (File::from(master), None, true),
            container::Io::Pipes { stdin, output } => {
                (File::from(output), stdin.map(File::from), false)
            }
        };
        let mut op = Interactive {
            client: None,
            proc,
            out: None,
            stdin: None,
            pty,
            held: None,
            to_child: Vec::new(),
            close_stdin_after: false,
            exited_at: None,
            grace: io.cfg.exec.kill_grace,
            closing: false,
            head,
        };
        // Output is not read until the client is attached (nothing to send it to yet).
        let interest = if pty {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let t = io.register_fd(me, Role::Output, out.as_fd(), interest)?;
        op.out = Some((out, t));
        if let Some(s) = stdin {
            let t = io.register_fd(me, Role::Stdin, s.as_fd(), Interest::WRITABLE)?;
            op.stdin = Some((s, t));
        }
        Ok(op)
    }

    pub(crate) fn take_head(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.head)
    }

    /// The upgraded client connection, from now on the other end of the session.
    pub(crate) fn attach(&mut self, client: WsClient) {
        self.client = Some(client);
    }

    pub(crate) fn drive(&mut self, me: Token, role: Option<Role>, io: &mut Io<'_>) -> Progress {
        match role {
            Some(r @ (Role::Intermediate | Role::Process)) if self.proc.on_ready(me, r, io) => {
                self.exited_at = Some(Instant::now());
                io.wake_at(me, Instant::now() + OUTPUT_LINGER);
            }
            None => {
                self.proc.on_timer();
                if let Some(c) = self.client.as_mut() {
                    c.on_timer(me, io);
                }
            }
            _ => {}
        }
        // Whatever woke us, move every byte that can move now: the order below makes input
        // (Ctrl-C) go before output.
        self.pump_input(me, io);
        self.write_child(io);
        self.pump_output(me, io);
        self.finish_if_done(me, io)
    }

    /// Read client frames while the command can take their input.
    fn pump_input(&mut self, me: Token, io: &mut Io<'_>) {
        // Out of `self` while it reads, so that `self` is the sink its frames go to.
        let Some(mut client) = self.client.take() else {
            return;
        };
        client.read_frames(
            me,
            io,
            "text frames are not part of v1.exec-interactive.supd",
            self,
        );
        self.client = Some(client);
    }

    /// The client is gone or closing: SIGHUP to the session, SIGKILL after a grace period.
    fn hang_up(&mut self, me: Token, io: &mut Io<'_>) {
        self.proc.terminate(me, Signal::SIGHUP, self.grace, io);
    }

    /// Write pending input to the command; close its stdin when asked and drained.
    fn write_child(&mut self, io: &mut Io<'_>) {
        let target = if self.pty {
            self.out.as_mut().map(|(f, _)| f)
        } else {
            self.stdin.as_mut().map(|(f, _)| f)
        };
        let Some(f) = target else {
            self.to_child.clear();
            return;
        };
        while !self.to_child.is_empty() {
            match f.write(&self.to_child) {
                Ok(0) => break,
                Ok(n) => {
                    self.to_child.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The command closed its input (or exited): drop what it will never read.
                    self.to_child.clear();
                    break;
                }
            }
        }
        if self.to_child.capacity() > STDIN_LIMIT {
            self.to_child.shrink_to(16 * 1024);
        }
        if self.close_stdin_after && self.to_child.is_empty() {
            if self.pty {
                // A terminal has no separate input to close: send the EOF character (VEOF,
                // Ctrl-D), which is what a user at the terminal would type.
                if let Some((f, _)) = self.out.as_mut() {
                    let _ = f.write(&[0x04]);
                }
            } else {
                // Closing our end gives the command EOF on stdin; its route goes with it.
                if let Some((f, t)) = self.stdin.take() {
                    io.deregister_fd(t, f.as_fd());
                }
            }
            self.close_stdin_after = false;
        }
    }

    /// Move output to the client while it accepts more.
    fn pump_output(&mut self, me: Token, io: &mut Io<'_>) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let Some((f, _)) = self.out.as_mut() else {
            client.send_held(&mut self.held);
            client.pump();
            return;
        };
        let read = |buf: &mut [u8]| match f.read(buf) {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(e) => Err(e),
        };
        match client.forward(me, io, &mut self.held, OUT_CHUNK, read) {
            Forwarded::Paused => {}
            // EIO: every holder of the PTY's slave side is gone; that is the end too.
            Forwarded::Ended | Forwarded::Failed(_) => self.close_output(io),
        }
    }

    fn close_output(&mut self, io: &mut Io<'_>) {
        if let Some((f, t)) = self.out.take() {
            io.deregister_fd(t, f.as_fd());
        }
    }

    fn finish_if_done(&mut self, me: Token, io: &mut Io<'_>) -> Progress {
        let mut p = Progress::default();
        let client_dead = self.client.as_ref().is_none_or(|c| c.dead);
        if client_dead && !self.proc.exited() {
            self.hang_up(me, io);
        }
        let output_done =
            self.out.is_none() || self.exited_at.is_some_and(|t| t.elapsed() >= OUTPUT_LINGER);
        if let Some(status) = self.proc.status
            && output_done
            && self.held.is_none()
            && let Some(c) = self.client.as_mut()
            && !c.closing()
            && !c.dead
        {
            let reason = match status {
                ExitStatus::Code(n) => protocol::exit_reason_code(n),
                ExitStatus::Signal(n) => protocol::exit_reason_signal(n),
            };
            c.close(me, 1000, &reason, io);
            c.pump();
        }
        if self.proc.exited() && (client_dead || self.client.as_ref().is_some_and(|c| c.dead)) {
            p.done = true;
        }
        p
    }

    /// The daemon is stopping.
    pub(crate) fn shutdown(&mut self, me: Token, io: &mut Io<'_>) {
        if let Some(c) = self.client.as_mut() {
            c.close(me, 1001, "supd is shutting down", io);
            c.pump();
        }
        self.closing = true;
        self.hang_up(me, io);
    }

    pub(crate) fn release(&mut self, io: &mut Io<'_>) {
        self.close_output(io);
        if let Some((f, t)) = self.stdin.take() {
            io.deregister_fd(t, f.as_fd());
        }
        if let Some(c) = self.client.as_mut() {
            c.release(io);
        }
        self.proc.release(io);
    }

    pub(crate) fn abandon(&mut self) {
        self.proc.abandon();
    }
}

#[cfg(test)]
mod decode_tests {
    use super::*;
    use crate::http::request::Method;
    use crate::ops::decode::testing::{ctx, q, request, seen, ws_headers};

    fn decode(query: &str, ws: bool) -> Result<InteractiveParams, DecodeError> {
        let headers = if ws {
            ws_headers(protocol::EXEC_INTERACTIVE)
        } else {
            vec![("host", "h")]
        };
        let req = request(Method::Get, query, &headers, b"");
        InteractiveParams::decode(
            "shop".into(),
            Instance::parse("web-1").unwrap(),
            ContainerRef::Init("setup".into()),
            &q(query),
            &req,
            &ctx(),
        )
    }

    #[test]
    fn interactive_decodes() {
        let p = decode("cmd=sh%20-i", true).unwrap();
        assert_eq!(p.argv, ["sh", "-i"]);
        assert!(p.tty);
        assert_eq!(p.accepted.protocol, protocol::EXEC_INTERACTIVE);
        assert_eq!(p.target, ContainerRef::Init("setup".into()));
        assert!(
            !decode("cmd=sh&tty=false&site=here&fields=a", true)
                .unwrap()
                .tty
        );
        assert!(decode("cmd=sh&tty=true", true).unwrap().tty);
    }

    #[test]
    fn interactive_decode_errors() {
        let e = |query: &str, ws: bool| seen(decode(query, ws).unwrap_err());
        // The handshake comes first, before the query.
        assert_eq!(
            e("nope=1", false),
            (426, "this endpoint needs a websocket upgrade".into())
        );
        assert_eq!(e("", true), (400, "cmd must be a non-blank string".into()));
        assert_eq!(
            e("cmd=%20", true),
            (400, "cmd must be a non-blank string".into())
        );
        assert_eq!(
            e("cmd=sh&tty=1", true),
            (400, "tty must be true or false (got \"1\")".into())
        );
        assert_eq!(
            e("cmd=a%20'b", true),
            (400, "cmd: unterminated single quote".into())
        );
        assert_eq!(
            e("cmd=sh&x=1", true),
            (400, "unknown query parameter \"x\"".into())
        );
        assert_eq!(e("cmd=sh&site=x", true), (404, "unknown site \"x\"".into()));
        assert_eq!(e("cmd=a&cmd=b", true).0, 400);
    }
}
