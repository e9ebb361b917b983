//! The QEMU guest agent's wire protocol, pure (no I/O): commands as JSON lines, answers read
//! back line by line.
//!
//! The agent answers one command at a time, in order, one JSON object per line. It keeps no
//! notion of a session: after a timeout, a reconnect or an agent restart in the guest, a late
//! answer to an older command may still arrive. So every (re)connect and every timeout is
//! followed by `guest-sync-delimited` with a fresh id: the agent answers it with a `0xFF` byte
//! before the JSON, and everything before that byte, and any sync answer with another id, is
//! stale. A `0xFF` sent before the sync also resets the agent's own JSON parser, whatever
//! half-command it was holding.
//!
//! The guest is not trusted: lines are bounded ([`Decoder`]); an over-long one is kept up to
//! the bound and marked, and only `guest-exec-status` answers (whose output is what makes them
//! long) are read from such a prefix ([`exec_status`]).

use base64::Engine;
use serde_json::{Value, json};

/// A command for the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `guest-sync-delimited`: its answer starts with 0xFF.
    Sync(u32),
    /// `guest-exec` of `path` with `args`, output captured.
    Exec {
        path: String,
        args: Vec<String>,
        capture: Capture,
    },
    /// Run `argv` (looked up in the guest's `PATH`) through the guest's `/bin/sh` ([`RUN`]:
    /// the words go in as positional parameters, never parsed), stdout and stderr merged in
    /// the order written, as the leader of a process group of its own.
    Run(Vec<String>),
    /// `/bin/sh -c script` with `args` as `$0`, `$1`...: no output captured.
    Shell { script: String, args: Vec<String> },
    /// `guest-exec-status` of a pid `guest-exec` returned.
    ExecStatus(i64),
    /// `guest-info`: the agent's version and commands.
    Info,
    /// `guest-get-osinfo`.
    OsInfo,
    /// `guest-network-get-interfaces`.
    Interfaces,
    /// `guest-shutdown` (power down). The agent never answers it when it works.
    Shutdown,
}

/// How `guest-exec` captures output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// No capture (the command's output goes where the agent's does: nowhere).
    None,
    /// stdout and stderr apart (`true`): merge them in the guest (`2>&1`) when the order matters.
    Separate,
    /// One stream in the order written (`"merged"`, QEMU 8.1 and later).
    Merged,
}

impl Command {
    /// The bytes to send to an agent of `version`: one JSON object and a newline; a sync is
    /// preceded by 0xFF.
    pub fn encode(&self, version: Option<(u32, u32)>) -> Vec<u8> {
        let value = match self {
            Command::Run(argv) => {
                let mut args = vec!["-c".to_string(), RUN.to_string()];
                args.extend(argv.iter().cloned());
                // The shell's `2>&1` merges either way; the agent's own merge (8.1) keeps
                // the order of what the command's children write past it too.
                let capture = if version.is_some_and(merges_output) {
                    Capture::Merged
                } else {
                    Capture::Separate
                };
                return Command::Exec {
                    path: "/bin/sh".into(),
                    args,
                    capture,
                }
                .encode(version);
            }
            Command::Shell { script, args } => {
                let mut all = vec!["-c".to_string(), script.clone()];
                all.extend(args.iter().cloned());
                return Command::Exec {
                    path: "/bin/sh".into(),
                    args: all,
                    capture: Capture::None,
                }
                .encode(version);
            }
            Command::Sync(id) => {
                json!({"execute": "guest-sync-delimited", "arguments": {"id": id}})
            }
            Command::Exec {
                path,
                args,
                capture,
            } => {
                let mut arguments = json!({"path": path, "arg": args});
                match capture {
                    Capture::None => {}
                    Capture::Separate => arguments["capture-output"] = json!(true),
                    Capture::Merged => arguments["capture-output"] = json!("merged"),
                }
                json!({"execute": "guest-exec", "arguments": arguments})
            }
            Command::ExecStatus(pid) => {
                json!({"execute": "guest-exec-status", "arguments": {"pid": pid}})
            }
            Command::Info => json!({"execute": "guest-info"}),
            Command::OsInfo => json!({"execute": "guest-get-osinfo"}),
            Command::Interfaces => json!({"execute": "guest-network-get-interfaces"}),
            Command::Shutdown => {
                json!({"execute": "guest-shutdown", "arguments": {"mode": "powerdown"}})
            }
        };
        let mut out = Vec::with_capacity(96);
        if matches!(self, Command::Sync(_)) {
            out.push(0xFF);
        }
        // Serializing a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &value);
        out.push(b'\n');
        out
    }

    /// The command's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Sync(_) => "guest-sync-delimited",
            Command::Exec { .. } | Command::Run(_) | Command::Shell { .. } => "guest-exec",
            Command::ExecStatus(_) => "guest-exec-status",
            Command::Info => "guest-info",
            Command::OsInfo => "guest-get-osinfo",
            Command::Interfaces => "guest-network-get-interfaces",
            Command::Shutdown => "guest-shutdown",
        }
    }
}

/// `kill -SIGNAL` of a guest pid through the guest's shell; of its process group when
/// `group` (a session leader's group id is its pid), falling back to the process alone.
pub fn kill(pid: i64, signal: &str, group: bool) -> Command {
    let script = if group {
        format!("kill -{signal} -\"$0\" 2>/dev/null || kill -{signal} \"$0\"")
    } else {
        format!("kill -{signal} \"$0\"")
    };
    Command::Shell {
        script,
        args: vec![pid.to_string()],
    }
}

/// The guest shell's part of [`Command::Run`]. The command is `$0 $@`, so nothing in it is
/// parsed by the shell; a program that is not there is exit code 127 with a message, as a
/// shell says; `exec` keeps the pid `guest-exec` returned, and `setsid` (where the guest has
/// one) makes it its own process group's leader, so that a kill reaches what it started too.
pub const RUN: &str = "command -v \"$0\" >/dev/null 2>&1 || { echo \"$0: not found\"; exit 127; }; \
command -v setsid >/dev/null 2>&1 && exec setsid \"$0\" \"$@\" 2>&1; exec \"$0\" \"$@\" 2>&1";

/// One line the agent sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A whole line (without its newline).
    Whole(Vec<u8>),
    /// A line longer than the bound: its first bytes only; the rest was dropped.
    Cut(Vec<u8>),
}

/// Splits the agent's byte stream into lines, each at most `max` bytes kept.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max: usize,
    /// Until a 0xFF arrives everything is stale (a sync is outstanding).
    await_delimiter: bool,
    /// Dropping the rest of an over-long line.
    skipping: bool,
}

impl Decoder {
    pub fn new(max: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            max,
            await_delimiter: false,
            skipping: false,
        }
    }

    /// The bound for the next lines (a line already longer is cut at once).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
        if self.buf.len() > max {
            self.buf.truncate(max);
            self.skipping = true;
        }
        if self.buf.capacity() > max.max(4096) {
            self.buf.shrink_to(max);
        }
    }

    /// A sync was sent: drop what is buffered and everything up to the next 0xFF.
    pub fn expect_delimiter(&mut self) {
        // A fresh buffer: the one a long line grew is given back.
        self.buf = Vec::new();
        self.skipping = false;
        self.await_delimiter = true;
    }

    /// Feeds bytes; returns the lines completed by them.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        while !data.is_empty() {
            if self.await_delimiter {
                match data.iter().position(|&b| b == 0xFF) {
                    Some(i) => {
                        self.await_delimiter = false;
                        data = &data[i + 1..];
                    }
                    None => return lines,
                }
                continue;
            }
            let end = data.iter().position(|&b| b == b'\n');
            let (part, rest, complete) = match end {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            if !self.skipping {
                let room = self.max.saturating_sub(self.buf.len());
                self.buf.extend_from_slice(&part[..part.len().min(room)]);
                if part.len() > room {
                    self.skipping = true;
                }
            }
            if complete {
                let line = std::mem::take(&mut self.buf);
                let cut = std::mem::replace(&mut self.skipping, false);
                // A stray 0xFF (the agent's own delimiter when a sync arrived meanwhile) or
                // blank line is not an answer.
                let trimmed = line.iter().any(|b| !b.is_ascii_whitespace() && *b != 0xFF);
                if trimmed {
                    lines.push(if cut {
                        Line::Cut(line)
                    } else {
                        Line::Whole(line)
                    });
                }
            }
            data = rest;
        }
        lines
    }

    /// Bytes held for an incomplete line.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// What one answer said.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `{"return": ...}`.
    Return(Value),
    /// `{"error": {"class", "desc"}}`.
    Error { class: String, desc: String },
}

/// Reads a whole answer line. `None` when it is not an answer (an event, garbage).
pub fn parse_answer(line: &[u8]) -> Option<Answer> {
    // The agent writes a stray 0xFF before the JSON of a delimited answer.
    let start = line.iter().position(|&b| b != 0xFF)?;
    let v: Value = serde_json::from_slice(&line[start..]).ok()?;
    let obj = v.as_object()?;
    if let Some(r) = obj.get("return") {
        return Some(Answer::Return(r.clone()));
    }
    let e = obj.get("error")?;
    let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Some(Answer::Error {
        class: text("class"),
        desc: text("desc"),
    })
}

/// `guest-exec-status`, read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecStatus {
    pub exited: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// stdout (or the merged output), then stderr, decoded; at most the caller's cap.
    pub output: Vec<u8>,
    /// More output existed than was kept (here, or the agent's own capture limit).
    pub truncated: bool,
}

/// The status in a `guest-exec-status` answer, its output cut to `cap` bytes.
pub fn exec_status(answer: &Value, cap: usize) -> Option<ExecStatus> {
    let exited = answer.get("exited")?.as_bool()?;
    let int = |k: &str| {
        answer
            .get(k)
            .and_then(Value::as_i64)
            .and_then(|v| i32::try_from(v).ok())
    };
    let mut status = ExecStatus {
        exited,
        exit_code: int("exitcode"),
        signal: int("signal"),
        ..ExecStatus::default()
    };
    for (data, truncated) in [("out-data", "out-truncated"), ("err-data", "err-truncated")] {
        if let Some(text) = answer.get(data).and_then(Value::as_str) {
            append_base64(&mut status, text.as_bytes(), cap);
        }
        if answer.get(truncated).and_then(Value::as_bool) == Some(true) {
            status.truncated = true;
        }
    }
    Some(status)
}

/// The status in the kept start of an over-long `guest-exec-status` answer. Only an exited
/// command's status has output (so only it can be long), and it carries `exitcode` or
/// `signal`; QEMU 7.2 writes them first (`{"exitcode": 0, "out-data": "...", ...,
/// "exited": true}`), so the start has them. Without either, this is `None`.
pub fn exec_status_from_prefix(line: &[u8], cap: usize) -> Option<ExecStatus> {
    let text = std::str::from_utf8(line).ok().or_else(|| {
        // Cut inside a character: only ASCII is expected anyway.
        std::str::from_utf8(&line[..line.iter().rposition(u8::is_ascii)?]).ok()
    })?;
    let field = |name: &str| -> Option<&str> {
        let key = format!("\"{name}\"");
        let at = text.find(&key)? + key.len();
        let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let number = |name: &str| -> Option<i32> {
        let rest = field(name)?;
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    // `exited` comes last, if it made it into the start at all.
    let exited = field("exited").is_none_or(|r| r.starts_with("true"));
    let mut status = ExecStatus {
        exited,
        exit_code: number("exitcode"),
        signal: number("signal"),
        output: Vec::new(),
        truncated: true,
    };
    if status.exit_code.is_none() && status.signal.is_none() {
        return None;
    }
    if let Some(rest) = field("out-data").and_then(|r| r.strip_prefix('"')) {
        let end = rest.find('"').unwrap_or(rest.len());
        // Whole groups of four only: the cut may fall inside one.
        let data = &rest.as_bytes()[..end - end % 4];
        append_base64(&mut status, data, cap);
        status.truncated = true;
    }
    Some(status)
}

fn append_base64(status: &mut ExecStatus, text: &[u8], cap: usize) {
    let room = cap.saturating_sub(status.output.len());
    // Decode no more than needed: 4 characters per 3 bytes, one group of slack.
    let wanted = (room.div_ceil(3) + 1) * 4;
    let take = text.len().min(wanted) & !3;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&text[..take])
        .unwrap_or_default();
    if decoded.len() > room || take < text.len() {
        status.truncated = true;
    }
    status
        .output
        .extend_from_slice(&decoded[..decoded.len().min(room)]);
}

/// The pid in a `guest-exec` answer.
pub fn exec_pid(answer: &Value) -> Option<i64> {
    answer.get("pid")?.as_i64()
}

/// The sync id in a `guest-sync-delimited` answer.
pub fn sync_id(answer: &Value) -> Option<u32> {
    answer.as_u64().and_then(|v| u32::try_from(v).ok())
}

/// The agent's version from `guest-info` (`"7.2.0"` → `(7, 2)`).
pub fn version(answer: &Value) -> Option<(u32, u32)> {
    let v = answer.get("version")?.as_str()?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
}

/// Whether this agent version takes `capture-output: "merged"` (QEMU 8.1).
pub fn merges_output(version: (u32, u32)) -> bool {
    version >= (8, 1)
}

/// The guest's addresses from `guest-network-get-interfaces`, as `address/prefix`, loopback
/// left out, IPv4 first.
pub fn guest_ips(answer: &Value) -> Vec<String> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for iface in answer.as_array().into_iter().flatten() {
        if iface.get("name").and_then(Value::as_str) == Some("lo") {
            continue;
        }
        let addrs = iface.get("ip-addresses").and_then(Value::as_array);
        for a in addrs.into_iter().flatten() {
            let (Some(ip), Some(prefix)) = (
                a.get("ip-address").and_then(Value::as_str),
                a.get("prefix").and_then(Value::as_u64),
            ) else {
                continue;
            };
            let Ok(addr) = ip.parse::<std::net::IpAddr>() else {
                continue;
            };
            if addr.is_loopback() || prefix > 128 {
                continue;
            }
            if let std::net::IpAddr::V6(v6addr) = addr
                && v6addr.segments()[0] & 0xffc0 == 0xfe80
            {
                // Link-local addresses need a scope to be of use; the API shows none.
                continue;
            }
            let text = format!("{addr}/{prefix}");
            match addr {
                std::net::IpAddr::V4(_) => v4.push(text),
                std::net::IpAddr::V6(_) => v6.push(text),
            }
        }
    }
    v4.dedup();
    v6.dedup();
    v4.extend(v6);
    v4.truncate(MAX_IPS);
    v4
}

/// At most this many guest addresses are kept (the guest chooses how many it reports).
pub const MAX_IPS: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_json_lines_and_a_sync_starts_with_the_delimiter() {
        let sync = Command::Sync(7).encode(None);
        assert_eq!(sync[0], 0xFF);
        assert_eq!(
            &sync[1..],
            b"{\"arguments\":{\"id\":7},\"execute\":\"guest-sync-delimited\"}\n"
        );
        let exec = Command::Exec {
            path: "/bin/sh".into(),
            args: vec!["-c".into(), "echo \"hi\"".into()],
            capture: Capture::Merged,
        }
        .encode(None);
        let v: Value = serde_json::from_slice(&exec).unwrap();
        assert_eq!(v["execute"], "guest-exec");
        assert_eq!(v["arguments"]["arg"][1], "echo \"hi\"");
        assert_eq!(v["arguments"]["capture-output"], "merged");
        assert_eq!(exec.last(), Some(&b'\n'));
        let sep = Command::Exec {
            path: "x".into(),
            args: vec![],
            capture: Capture::Separate,
        };
        let v: Value = serde_json::from_slice(&sep.encode(None)).unwrap();
        assert_eq!(v["arguments"]["capture-output"], true);
        let run = Command::Run(vec!["ls".into(), "a b".into()]);
        let old: Value = serde_json::from_slice(&run.encode(Some((7, 2)))).unwrap();
        assert_eq!(old["arguments"]["path"], "/bin/sh");
        assert_eq!(old["arguments"]["arg"], json!(["-c", RUN, "ls", "a b"]));
        assert_eq!(old["arguments"]["capture-output"], true);
        let new: Value = serde_json::from_slice(&run.encode(Some((8, 1)))).unwrap();
        assert_eq!(new["arguments"]["arg"], json!(["-c", RUN, "ls", "a b"]));
        assert_eq!(new["arguments"]["capture-output"], "merged");
        let sh = Command::Shell {
            script: "kill -TERM \"$0\"".into(),
            args: vec!["12".into()],
        };
        let v: Value = serde_json::from_slice(&sh.encode(None)).unwrap();
        assert_eq!(
            v["arguments"]["arg"],
            json!(["-c", "kill -TERM \"$0\"", "12"])
        );
        assert!(v["arguments"].get("capture-output").is_none());
    }

    #[test]
    fn lines_split_across_reads_and_stale_bytes_before_the_delimiter_are_dropped() {
        let mut d = Decoder::new(100);
        assert!(d.push(b"{\"return\":").is_empty());
        assert_eq!(
            d.push(b" 1}\n{\"ret"),
            vec![Line::Whole(b"{\"return\": 1}".to_vec())]
        );
        d.expect_delimiter();
        // A stale answer, then the delimited one.
        let lines = d.push(b"urn\": {}}\n{\"return\": {\"pid\": 3}}\n\xFF{\"return\": 42}\n");
        assert_eq!(lines, vec![Line::Whole(b"{\"return\": 42}".to_vec())]);
        assert!(d.push(b"\n  \n").is_empty());
    }

    #[test]
    fn an_overlong_line_is_cut_and_the_next_one_is_whole() {
        let mut d = Decoder::new(8);
        let mut lines = d.push(b"0123456789abcdef");
        lines.extend(d.push(b"ghij\n{\"a\":1}\n"));
        assert_eq!(
            lines,
            vec![
                Line::Cut(b"01234567".to_vec()),
                Line::Whole(b"{\"a\":1}".to_vec())
            ]
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn answers_and_errors() {
        assert_eq!(
            parse_answer(b"\xFF{\"return\": 5}"),
            Some(Answer::Return(json!(5)))
        );
        assert_eq!(
            parse_answer(br#"{"error": {"class": "GenericError", "desc": "no"}}"#),
            Some(Answer::Error {
                class: "GenericError".into(),
                desc: "no".into()
            })
        );
        assert_eq!(parse_answer(b"{\"event\": \"X\"}"), None);
        assert_eq!(parse_answer(b"garbage"), None);
        assert_eq!(parse_answer(b"[1]"), None);
    }

    #[test]
    fn exec_status_decodes_and_caps_the_output() {
        let v = json!({"exited": true, "exitcode": 3, "out-data": "aGVsbG8gd29ybGQ=", "err-data": "IQ=="});
        let s = exec_status(&v, 100).unwrap();
        assert_eq!((s.exited, s.exit_code, s.signal), (true, Some(3), None));
        assert_eq!(s.output, b"hello world!");
        assert!(!s.truncated);
        let s = exec_status(&v, 5).unwrap();
        assert_eq!(s.output, b"hello");
        assert!(s.truncated);
        let s = exec_status(&json!({"exited": false}), 5).unwrap();
        assert!(!s.exited);
        let s = exec_status(
            &json!({"exited": true, "signal": 9, "out-truncated": true}),
            5,
        )
        .unwrap();
        assert_eq!(s.signal, Some(9));
        assert!(s.truncated);
        assert_eq!(exec_status(&json!({"nope": 1}), 5), None);
    }

    #[test]
    fn a_cut_exec_status_still_gives_the_exit_code_and_the_output_start() {
        // The order QEMU 7.2's agent writes.
        let line = br#"{"return": {"exitcode": 0, "out-data": "aGVsbG8gd29ybGQ"#;
        let s = exec_status_from_prefix(line, 100).unwrap();
        assert_eq!(s.exit_code, Some(0));
        assert_eq!(s.output, b"hello wor");
        assert!(s.truncated);
        let line = br#"{"return": {"exited": true, "signal": 15, "ou"#;
        assert_eq!(exec_status_from_prefix(line, 100).unwrap().signal, Some(15));
        assert_eq!(
            exec_status_from_prefix(br#"{"return": {"exited": tr"#, 9),
            None
        );
        assert_eq!(
            exec_status_from_prefix(br#"{"return": {"exitcode": 1"#, 9)
                .unwrap()
                .exit_code,
            Some(1)
        );
        assert!(
            !exec_status_from_prefix(br#"{"exited": false, "exitcode": 1"#, 9)
                .unwrap()
                .exited
        );
        assert_eq!(exec_status_from_prefix(b"\xff\xfe", 9), None);
    }

    #[test]
    fn info_fields() {
        assert_eq!(version(&json!({"version": "7.2.0"})), Some((7, 2)));
        assert_eq!(version(&json!({"version": "10"})), Some((10, 0)));
        assert_eq!(version(&json!({"version": "x"})), None);
        assert!(merges_output((8, 1)) && !merges_output((7, 2)));
        assert_eq!(exec_pid(&json!({"pid": 123})), Some(123));
        assert_eq!(sync_id(&json!(77)), Some(77));
        let ifaces = json!([
            {"name": "lo", "ip-addresses": [{"ip-address": "127.0.0.1", "prefix": 8}]},
            {"name": "eth0", "ip-addresses": [
                {"ip-address": "fe80::1", "prefix": 64},
                {"ip-address": "fd00::5", "prefix": 64},
                {"ip-address": "10.0.2.15", "prefix": 24},
                {"ip-address": "bogus", "prefix": 24}
            ]}
        ]);
        assert_eq!(guest_ips(&ifaces), ["10.0.2.15/24", "fd00::5/64"]);
        assert!(guest_ips(&json!({"a": 1})).is_empty());
    }

    #[test]
    fn a_smaller_bound_cuts_and_gives_the_memory_back() {
        let mut d = Decoder::new(1 << 20);
        assert!(d.push(&[b'x'; 300 * 1024]).is_empty());
        d.set_max(1024);
        assert_eq!(d.buffered(), 1024);
        assert!(d.buf.capacity() < 8 * 1024);
        assert_eq!(d.push(b"yz\n"), vec![Line::Cut(vec![b'x'; 1024])]);
        d.expect_delimiter();
        assert_eq!(d.buf.capacity(), 0);
    }
}
