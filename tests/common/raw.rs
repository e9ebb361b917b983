//! Helpers for the abuse, fault and soak tests: a managed instance, websocket frames written
//! and read by hand (to send what no well-behaved client library would), a websocket client
//! that is one, and the figures of a process read from /proc.
//!
//! Included with `#[path = "common/raw.rs"] mod raw;` next to `mod common;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::common::*;
use tungstenite::client::IntoClientRequest;

pub const INTERACTIVE: &str = "v1.exec-interactive.supd";
pub const CONNECT: &str = "v1.connect.supd";

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xa;

pub type Ws = tungstenite::WebSocket<TcpStream>;

/// A running instance `web-1` of `app` whose container `web` serves an echo on TCP port 7
/// (busybox `nc -ll -e cat`) and can run commands.
pub fn echo_instance(cs: &Containers, app: &str) -> String {
    let a = format!("io.supd.application={app}");
    cs.run(&[
        "--label",
        &a,
        "--label",
        "io.supd.service=web",
        "--label",
        "io.supd.instance=1",
        IMAGE,
        "nc",
        "-ll",
        "-p",
        "7",
        "-e",
        "cat",
    ])
}

pub fn wait_running(supd: &Supd, app: &str) {
    let path = format!("/v1/state/applications/{app}/service-instances/web-1");
    supd.wait_until(Duration::from_secs(20), || {
        let r = supd.get(&path, ADMIN_TOKEN);
        r.status == 200 && r.json()["containers"][0]["oper-status"] == "running"
    });
}

pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn interactive_path(app: &str, cmd: &str, tty: bool) -> String {
    format!(
        "/v1/state/applications/{app}/service-instances/web-1/containers/web/exec-interactive?cmd={}&tty={tty}",
        encode(cmd)
    )
}

pub fn exec_path(app: &str) -> String {
    format!("/v1/state/applications/{app}/service-instances/web-1/containers/web/exec")
}

pub fn connect_path(app: &str, port: u16) -> String {
    format!("/v1/state/applications/{app}/service-instances/web-1/connect?protocol=tcp&port={port}")
}

/// A state GET on a fresh connection, answered within a generous deadline: the proof that a
/// well-behaved client is not disturbed by whatever else is going on.
pub fn assert_healthy(addr: SocketAddr) {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect("a fresh connection to supd");
    assert_healthy_on(stream);
}

/// The same on a connection opened earlier (when no new one can be accepted).
pub fn assert_healthy_on(stream: TcpStream) -> TcpStream {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut c = Client::from_stream(stream);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    c.send(
        "GET",
        "/v1/state/applications/none/service-instances",
        &[("Authorization", &auth)],
        b"",
    );
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "state GET: {}", r.text());
    c.stream
}

/// Upgrade `path` by hand; the stream after the 101 and any bytes read past its head.
pub fn upgrade(
    addr: SocketAddr,
    path: &str,
    proto: &str,
    extra: &[(&str, &str)],
) -> (TcpStream, Vec<u8>) {
    match try_upgrade(addr, path, proto, extra) {
        Ok(ok) => ok,
        Err((status, body)) => panic!("{path}: {status} instead of 101: {body}"),
    }
}

/// Upgrade by hand: Ok(stream, leftover) on 101, Err(status, body) otherwise.
pub fn try_upgrade(
    addr: SocketAddr,
    path: &str,
    proto: &str,
    extra: &[(&str, &str)],
) -> Result<(TcpStream, Vec<u8>), (u16, String)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {proto}\r\n"
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = resp.parse(&buf).expect("valid response") {
            let status = resp.code.unwrap();
            if status == 101 {
                return Ok((s, buf[n..].to_vec()));
            }
            let len: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap_or(0);
            while buf.len() < n + len {
                let k = s.read(&mut tmp).unwrap();
                assert!(k > 0, "EOF inside the body");
                buf.extend_from_slice(&tmp[..k]);
            }
            return Err((
                status,
                String::from_utf8_lossy(&buf[n..n + len]).into_owned(),
            ));
        }
        let k = s.read(&mut tmp).unwrap();
        assert!(k > 0, "EOF before the response head");
        buf.extend_from_slice(&tmp[..k]);
    }
}

/// One frame; client frames are masked unless `masked` is false (which servers must refuse).
pub fn frame(opcode: u8, fin: bool, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![opcode | if fin { 0x80 } else { 0 }];
    let m = if masked { 0x80 } else { 0 };
    frame_header_len(&mut f, m, payload.len());
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// Only the head of a masked frame that announces `len` payload bytes.
pub fn frame_head(opcode: u8, fin: bool, len: usize) -> Vec<u8> {
    let mut f = vec![opcode | if fin { 0x80 } else { 0 }];
    frame_header_len(&mut f, 0x80, len);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f
}

fn frame_header_len(f: &mut Vec<u8>, m: u8, len: usize) {
    match len {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 0xffff => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
}

/// Reads the server's frames off a raw stream.
pub struct Frames {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Frames {
    pub fn new(stream: TcpStream, leftover: Vec<u8>) -> Frames {
        Frames {
            stream,
            buf: leftover,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next frame (opcode, payload); None at EOF or on a reset.
    pub fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are unmasked");
                let (len, head) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= head + len {
                    let op = self.buf[0] & 0x0f;
                    let payload = self.buf[head..head + len].to_vec();
                    self.buf.drain(..head + len);
                    return Some((op, payload));
                }
            }
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading frames: {e}"),
            }
        }
    }

    /// Skip data, pings and pongs up to the server's close frame: (code, reason).
    pub fn close_frame(&mut self) -> (u16, String) {
        loop {
            match self.next() {
                Some((OP_CLOSE, p)) => {
                    assert!(p.len() >= 2, "close frame without a code");
                    let code = u16::from_be_bytes([p[0], p[1]]);
                    let reason = String::from_utf8(p[2..].to_vec()).expect("UTF-8 reason");
                    return (code, reason);
                }
                Some(_) => {}
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Output of an interactive session (binary frames) until `want` appears.
    pub fn read_until(&mut self, want: &str) -> Vec<u8> {
        let mut out = Vec::new();
        while !String::from_utf8_lossy(&out).contains(want) {
            match self.next() {
                Some((OP_BINARY, p)) => out.extend_from_slice(&p),
                Some((OP_CLOSE, p)) => panic!("closed ({p:?}) before {want:?}"),
                Some(_) => {}
                None => panic!("EOF before {want:?}"),
            }
        }
        out
    }

    /// The server ends the connection after the close (EOF or reset within the timeout).
    pub fn ends(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut tmp = [0u8; 4096];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// A websocket with tungstenite's own client handshake.
pub fn ws_client(addr: SocketAddr, path: &str, proto: &str) -> Ws {
    let url = format!("ws://{addr}{path}");
    let mut request = url.into_client_request().unwrap();
    let h = request.headers_mut();
    h.insert(
        "Authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
    );
    h.insert("Sec-WebSocket-Protocol", proto.parse().unwrap());
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let (ws, response) = tungstenite::client(request, stream).unwrap();
    assert_eq!(response.status(), 101);
    ws
}

/// Read up to the server's close frame: (binary output, code, reason).
pub fn ws_until_close(ws: &mut Ws) -> (Vec<u8>, u16, String) {
    let mut out = Vec::new();
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Binary(b)) => out.extend_from_slice(&b),
            Ok(tungstenite::Message::Close(Some(c))) => {
                let r = (out, u16::from(c.code), c.reason.to_string());
                let _ = ws.flush();
                while ws.read().is_ok() {}
                return r;
            }
            Ok(tungstenite::Message::Close(None)) => panic!("close without a code"),
            Ok(_) => {}
            Err(e) => panic!(
                "no close frame ({e}); output {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

/// Raise this process's descriptor limit (the tests open thousands of sockets).
pub fn raise_nofile(n: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = n.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, want, hard).unwrap();
}

/// CPU time (user + system) of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

pub fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64
}

/// Poll `cond` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The processes running in a container whose command line contains `needle`.
pub fn top_has(id: &str, needle: &str) -> bool {
    std::process::Command::new("docker")
        .args(["top", id, "-o", "pid,args"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .skip(1)
                .any(|l| l.contains(needle))
        })
        .unwrap_or(false)
}

/// Whether any process on the host has `needle` in its command line.
pub fn host_has_process(needle: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| {
                let c: Vec<u8> = c
                    .into_iter()
                    .map(|b| if b == 0 { b' ' } else { b })
                    .collect();
                String::from_utf8_lossy(&c).contains(needle)
            })
            .unwrap_or(false)
    })
}

/// A config file written into `dir`, for `--config`.
pub fn config_file(dir: &TempDir, yaml: &str) -> String {
    let p = dir.path().join("supd.yaml");
    std::fs::write(&p, yaml).unwrap();
    p.display().to_string()
}

pub fn start_with_config(dir: &TempDir, yaml: &str) -> Supd {
    let cfg = config_file(dir, yaml);
    Supd::start_with(SupdOptions {
        extra_args: vec!["--config".into(), cfg],
        ..Default::default()
    })
}
