//! `POST .../containers/{c}/exec` (and init-containers): run a command in the container with
//! stdin from /dev/null, collect its merged output up to a cap, answer with output and status.
//!
//! If the client goes away first, the command's process group gets SIGTERM and, after a grace
//! period, SIGKILL — the reference's system cannot interrupt a command; supd can.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::decode::{DecodeCtx, DecodeError, check_query, words};
use super::proc::Proc;
use super::{Io, Progress, Reply, Role};
use crate::container::{self, ExitStatus};
use crate::http::query::Query;
use crate::http::request::Request;
use crate::http::response::EXEC_OUTPUT;
use crate::http::router::{ContainerRef, Instance};
use crate::http::{ApiError, Format, Response};

/// Most output read per wake-up, so one chatty command cannot hold the loop.
const READ_BUDGET: usize = 256 * 1024;
/// After the command exits, how long to wait for the output pipe to close (a background
/// child may keep it open; the answer must not hang on it).
const OUTPUT_LINGER: Duration = Duration::from_millis(500);
/// Largest exec body: a command line with room to spare. Bigger is a 413 before any parsing
/// (the connection may refuse a larger declared Content-Length earlier; this holds anyway).
pub const MAX_BODY: usize = crate::http::router::EXEC_BODY_LIMIT;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    cmd: Option<String>,
}

/// What an exec request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecParams {
    pub application: String,
    pub instance: Instance,
    pub target: ContainerRef,
    /// The command line's words (`container::split_words`).
    pub argv: Vec<String>,
    /// The answer's format from `Accept`: JSON, YAML or the raw output bytes.
    pub output: Format,
}

impl ExecParams {
    /// The exec decoder: `site` only in the query, a body with a command that splits.
    pub fn decode(
        application: String,
        instance: Instance,
        target: ContainerRef,
        query: &Query,
        req: &Request,
        ctx: &DecodeCtx<'_>,
    ) -> Result<ExecParams, DecodeError> {
        check_query(query, &["site"], ctx)?;
        let cmd = decode_cmd(req.header("content-type"), &req.body)?;
        let argv = words(&cmd)?;
        let output = ctx.accept.pick(EXEC_OUTPUT);
        Ok(ExecParams {
            application,
            instance,
            target,
            argv,
            output,
        })
    }
}

/// The command of a request body, JSON or YAML as `content_type` says (either without one).
pub fn decode_cmd(content_type: Option<&str>, body: &[u8]) -> Result<String, DecodeError> {
    let ct = content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::NoBody);
    }
    // Size and nesting first: the YAML parser's time grows with the depth on every token.
    crate::http::body::check(body, MAX_BODY)?;
    let body: Body = match ct.as_deref() {
        Some("application/json") => {
            serde_json::from_slice(body).map_err(|e| DecodeError::InvalidJson(e.to_string()))?
        }
        Some("application/yaml" | "application/x-yaml" | "text/yaml") => {
            serde_yaml::from_slice(body).map_err(|e| DecodeError::InvalidYaml(e.to_string()))?
        }
        // No (or another) content type: YAML is a superset of JSON, so it reads both.
        _ => serde_yaml::from_slice(body).map_err(|e| DecodeError::InvalidBody(e.to_string()))?,
    };
    match body.cmd {
        Some(c) if !container::is_blank(&c) => Ok(c),
        _ => Err(DecodeError::BlankCmd),
    }
}

/// Room in an answer for what surrounds the output (exit code, signal, `truncated`).
const ANSWER_SLACK: usize = 512;

/// Makes room in `buf` for `more` bytes, doubling while small but never reserving past
/// `cap`: the output buffer's size follows what arrived, not the next power of two.
fn grow_within(buf: &mut Vec<u8>, more: usize, cap: usize) {
    let need = buf.len() + more;
    if need <= buf.capacity() {
        return;
    }
    let want = (buf.capacity() * 2).max(need).min(cap.max(need));
    buf.reserve_exact(want - buf.len());
}

/// Bytes that `c` takes inside a quoted string of `format` (JSON: exact, as serde_json
/// writes it; YAML: libyaml's double-quoted escapes, the longest style it picks).
fn encoded_len(c: char, format: Format) -> usize {
    match (format, c) {
        (Format::Json, '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t') => 2,
        (Format::Json, '\0'..='\u{1f}') => 6,
        (Format::Json, _) => c.len_utf8(),
        (_, '"' | '\\' | '\0' | '\n' | '\t' | '\r') => 2,
        (_, '\0'..='\u{1f}' | '\u{7f}'..='\u{9f}') => 4,
        (_, '\u{feff}' | '\u{fffe}' | '\u{ffff}') => 6,
        (_, _) => c.len_utf8(),
    }
}

/// The longest prefix of `text` whose encoded form fits in `budget` bytes.
fn fit_encoded(text: &str, format: Format, budget: usize) -> &str {
    let mut used = 0;
    for (i, c) in text.char_indices() {
        used += encoded_len(c, format);
        if used > budget {
            return &text[..i];
        }
    }
    text
}

#[derive(Serialize)]
struct Outcome<'a> {
    output: &'a str,
    #[serde(rename = "exit-code", skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<i32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

/// The answer to an exec (in a container or a VM): the output (at most `cap` bytes as
/// sent) and how the command ended, in `format`.
pub(crate) fn answer(
    output: Vec<u8>,
    truncated: bool,
    status: ExitStatus,
    format: Format,
    cap: usize,
) -> Response {
    let (code, signal) = match status {
        ExitStatus::Code(c) => (Some(c), None),
        ExitStatus::Signal(s) => (None, Some(s)),
    };
    if format == Format::OctetStream {
        let mut r = Response::bytes(200, "application/octet-stream", output);
        r = match status {
            ExitStatus::Code(c) => r.header("Supd-Exit-Code", c.to_string()),
            ExitStatus::Signal(s) => r.header("Supd-Exit-Signal", s.to_string()),
        };
        if truncated {
            r = r.header("Supd-Output-Truncated", "true");
        }
        return r;
    }
    let text = String::from_utf8_lossy(&output);
    // The cap bounds the output as it is sent: escaping (a NUL is six bytes in JSON) must not
    // make an unread answer several times the cap.
    let mut budget = cap;
    loop {
        let kept = fit_encoded(&text, format, budget);
        let response = Response::serialized(
            200,
            &Outcome {
                output: kept,
                exit_code: code,
                signal,
                truncated: truncated || kept.len() < text.len(),
            },
            format,
        );
        // The estimate is exact for JSON; YAML may fold long lines: cut further if so.
        let over = response.body.len().saturating_sub(cap + ANSWER_SLACK);
        if over == 0 || kept.is_empty() {
            return response;
        }
        budget = budget.saturating_sub(over.max(budget / 16));
    }
}

pub(crate) struct Exec {
    proc: Proc,
    output: Option<(File, Token)>,
    buf: Vec<u8>,
    cap: usize,
    truncated: bool,
    exited_at: Option<Instant>,
    format: Format,
    replied: bool,
    client_gone: bool,
    grace: Duration,
}

impl Exec {
    pub(crate) fn start(
        me: Token,
        spawned: container::Spawned,
        format: Format,
        io: &mut Io<'_>,
    ) -> std::io::Result<Exec> {
        let (proc, stdio) = Proc::from_spawned(me, spawned, io)?;
        let output = match stdio {
            container::Io::Pipes { output, .. } => output,
            container::Io::Pty { master } => master,
        };
        let token = io.register_fd(me, Role::Output, output.as_fd(), Interest::READABLE)?;
        Ok(Exec {
            proc,
            output: Some((File::from(output), token)),
            buf: Vec::new(),
            cap: io.cfg.exec.output_cap,
            truncated: false,
            exited_at: None,
            format,
            replied: false,
            client_gone: false,
            grace: io.cfg.exec.kill_grace,
        })
    }

    pub(crate) fn drive(&mut self, me: Token, role: Option<Role>, io: &mut Io<'_>) -> Progress {
        match role {
            Some(Role::Output) => self.read_output(me, io),
            Some(r @ (Role::Intermediate | Role::Process)) => {
                if self.proc.on_ready(me, r, io) {
                    self.exited_at = Some(Instant::now());
                    // Drain what is already there, then give the pipe a moment to close.
                    self.read_output(me, io);
                    io.wake_at(me, Instant::now() + OUTPUT_LINGER);
                }
            }
            _ => {
                self.proc.on_timer();
                if self.output.is_some() {
                    self.read_output(me, io);
                }
            }
        }
        let mut progress = Progress::default();
        let output_done =
            self.output.is_none() || self.exited_at.is_some_and(|t| t.elapsed() >= OUTPUT_LINGER);
        if let Some(status) = self.proc.status
            && output_done
        {
            if let Some((fd, token)) = self.output.take() {
                io.deregister_fd(token, fd.as_fd());
            }
            if !self.replied && !self.client_gone {
                self.replied = true;
                progress.reply = Some(self.reply(status));
            }
            progress.done = true;
        }
        progress
    }

    fn read_output(&mut self, me: Token, io: &mut Io<'_>) {
        let Some((file, token)) = self.output.as_mut() else {
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        let mut budget = READ_BUDGET;
        let mut eof = false;
        loop {
            if budget == 0 {
                // More may be waiting; come back on the next turn of the loop.
                io.wake_at(me, Instant::now());
                break;
            }
            match file.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    let room = self.cap.saturating_sub(self.buf.len());
                    if n > room {
                        self.truncated = true;
                    }
                    let take = n.min(room);
                    grow_within(&mut self.buf, take, self.cap);
                    self.buf.extend_from_slice(&chunk[..take]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // EIO from a PTY master whose slave side is all closed: the same as EOF.
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        if eof {
            let token = *token;
            if let Some((fd, _)) = self.output.take() {
                io.deregister_fd(token, fd.as_fd());
            }
        }
    }

    fn reply(&mut self, status: ExitStatus) -> Reply {
        if let Some(e) = self.proc.start_error() {
            return Reply {
                response: ApiError::from(e).into_response(self.format),
            };
        }
        let output = std::mem::take(&mut self.buf);
        Reply {
            response: answer(output, self.truncated, status, self.format, self.cap),
        }
    }

    /// The daemon is stopping: stop the command, and still answer with how it ended.
    pub(crate) fn shutdown(&mut self, me: Token, io: &mut Io<'_>) {
        self.proc.terminate(me, Signal::SIGTERM, self.grace, io);
    }

    pub(crate) fn client_gone(&mut self, me: Token, io: &mut Io<'_>) {
        self.client_gone = true;
        self.proc.terminate(me, Signal::SIGTERM, self.grace, io);
    }

    pub(crate) fn release(&mut self, io: &mut Io<'_>) {
        if let Some((fd, token)) = self.output.take() {
            io.deregister_fd(token, fd.as_fd());
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
    use crate::http::response::Accept;
    use crate::ops::decode::testing::{ctx, q, request, seen};

    fn decode(
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<ExecParams, DecodeError> {
        let req = request(Method::Post, query, headers, body);
        // The server parses `Accept` once per request and hands it over in the context.
        let ctx = DecodeCtx {
            accept: Accept::parse(req.header("accept")),
            ..ctx()
        };
        ExecParams::decode(
            "shop".into(),
            Instance::parse("web-1").unwrap(),
            ContainerRef::Container("main".into()),
            &q(query),
            &req,
            &ctx,
        )
    }

    #[test]
    fn exec_decodes_words_and_output_format() {
        let p = decode("", &[], b"cmd: ls -l 'a b'").unwrap();
        assert_eq!(p.argv, ["ls", "-l", "a b"]);
        assert_eq!(p.output, Format::Json);
        assert_eq!(p.target, ContainerRef::Container("main".into()));
        let json = [("content-type", "application/json; charset=utf-8")];
        assert_eq!(
            decode("site=here", &json, br#"{"cmd":"id"}"#).unwrap().argv,
            ["id"]
        );
        let raw = [("accept", "application/octet-stream")];
        assert_eq!(
            decode("", &raw, b"cmd: id").unwrap().output,
            Format::OctetStream
        );
        let yaml = [("accept", "application/yaml")];
        assert_eq!(decode("", &yaml, b"cmd: id").unwrap().output, Format::Yaml);
    }

    #[test]
    fn exec_decode_errors() {
        let e = |query: &str, headers: &[(&str, &str)], body: &[u8]| {
            seen(decode(query, headers, body).unwrap_err())
        };
        assert_eq!(
            e("", &[], b"  \n"),
            (400, "a body with cmd is required".into())
        );
        assert_eq!(
            e("", &[], b"cmd: '  '"),
            (400, "cmd must be a non-blank string".into())
        );
        assert_eq!(
            e("", &[], b"other: 1"),
            (
                400,
                "invalid body (JSON or YAML): unknown field `other`, expected `cmd`".into()
            )
        );
        let json = [("content-type", "application/json")];
        assert!(e("", &json, b"cmd: x").1.starts_with("invalid JSON body: "));
        let yaml = [("content-type", "application/yaml")];
        assert!(e("", &yaml, b"[").1.starts_with("invalid YAML body: "));
        assert_eq!(
            e("", &[], b"cmd: \"a 'b\""),
            (400, "cmd: unterminated single quote".into())
        );
        assert_eq!(
            e("fields=a", &[], b"cmd: id"),
            (400, "unknown query parameter \"fields\"".into())
        );
        assert_eq!(
            e("site=x", &[], b"cmd: id"),
            (404, "unknown site \"x\"".into())
        );
        let big = vec![b' '; MAX_BODY];
        let mut body = b"cmd: id".to_vec();
        body.extend_from_slice(&big);
        assert_eq!(
            e("", &[], &body),
            (413, format!("request body larger than {MAX_BODY} bytes"))
        );
        assert_eq!(e("", &[], &[b'['; 100]).0, 400);
    }
}

#[cfg(test)]
mod cap_tests {
    use super::*;

    #[test]
    fn encoded_output_fits_the_cap() {
        let nuls = "\0".repeat(1000);
        assert_eq!(fit_encoded(&nuls, Format::Json, 600).len(), 100);
        assert_eq!(fit_encoded(&nuls, Format::Yaml, 600).len(), 300);
        assert_eq!(fit_encoded("ab\"c", Format::Json, 3).len(), 2);
        assert_eq!(fit_encoded("héllo", Format::Json, 100), "héllo");
        let json = serde_json::to_string(fit_encoded(&nuls, Format::Json, 600)).unwrap();
        assert!(json.len() <= 602);
    }

    #[test]
    fn output_buffer_grows_no_further_than_the_cap() {
        let mut buf = Vec::new();
        let cap = 100_000;
        while buf.len() < cap {
            let take = (cap - buf.len()).min(16 * 1024);
            grow_within(&mut buf, take, cap);
            buf.extend_from_slice(&vec![0; take]);
        }
        assert_eq!(buf.capacity(), cap);
    }
}
