//! Shared helpers for the integration tests: a real `supd` process on a free port, a plain
//! HTTP/1.1 client over real sockets, and containers made with the real Docker CLI.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const IMAGE: &str = "supd-test-busybox:latest";
pub const ADMIN_TOKEN: &str = "supd_test_admin_token_0123456789abcdef";
pub const READER_TOKEN: &str = "supd_test_reader_token_0123456789abcdef";
/// May do everything, but only on applications matching `other-*`.
pub const OTHER_TOKEN: &str = "supd_test_other_token_0123456789abcdef";

static IMAGE_ONCE: Once = Once::new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Build the busybox test image unless it is there.
pub fn ensure_image() {
    IMAGE_ONCE.call_once(|| {
        let ok = Command::new("docker")
            .args(["image", "inspect", IMAGE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let st = Command::new(repo().join("scripts/build-test-image.sh"))
                .status()
                .expect("run build-test-image.sh");
            assert!(st.success(), "building the test image failed");
        }
    });
}

/// A name unique to this test run, usable as an application name.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}", std::process::id())
}

pub fn sha256_hex(s: &str) -> String {
    supd::auth::hash_hex(s)
}

pub fn write_tokens(path: &Path) {
    let yaml = format!(
        "tokens:\n  - name: admin\n    sha256: \"{}\"\n    operations: [read, exec, connect, restart]\n    applications: [\"*\"]\n  - name: reader\n    sha256: \"{}\"\n    operations: [read]\n    applications: [\"*\"]\n  - name: other\n    sha256: \"{}\"\n    operations: [read, exec, connect, restart]\n    applications: [\"other-*\"]\n",
        sha256_hex(ADMIN_TOKEN),
        sha256_hex(READER_TOKEN),
        sha256_hex(OTHER_TOKEN)
    );
    std::fs::write(path, yaml).unwrap();
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(unique("supd-test"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Supd {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub tenant: String,
    pub log: PathBuf,
}

pub struct SupdOptions {
    pub extra_args: Vec<String>,
    pub tokens: bool,
    pub docker_socket: Option<PathBuf>,
    pub wait_ready: bool,
    pub env: Vec<(String, String)>,
    /// Run this copy of the binary instead of the one cargo built (a test that lets a
    /// container try to overwrite it must not damage the build).
    pub binary: Option<PathBuf>,
}

impl Default for SupdOptions {
    fn default() -> Self {
        SupdOptions {
            extra_args: Vec::new(),
            tokens: true,
            docker_socket: None,
            wait_ready: true,
            env: Vec::new(),
            binary: None,
        }
    }
}

impl Supd {
    pub fn start() -> Supd {
        Supd::start_with(SupdOptions::default())
    }

    pub fn start_with(opts: SupdOptions) -> Supd {
        ensure_image();
        let dir = TempDir::new();
        let tokens = dir.path().join("tokens.yaml");
        if opts.tokens {
            write_tokens(&tokens);
        }
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = dir.path().join("supd.log");
        let binary = opts
            .binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_supd")));
        let mut cmd = Command::new(binary);
        cmd.arg("--listen")
            .arg(addr.to_string())
            .arg("--tokens")
            .arg(&tokens)
            .arg("--tenant")
            .arg("acme")
            .arg("--site")
            .arg("test-site")
            .arg("--host")
            .arg("test-host")
            .arg("--config")
            .arg("/dev/null");
        if let Some(sock) = &opts.docker_socket {
            cmd.arg("--docker-socket").arg(sock);
        }
        cmd.args(&opts.extra_args);
        cmd.env("RUST_LOG", "debug");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap());
        let child = cmd.spawn().expect("start supd");
        let supd = Supd {
            child,
            addr,
            dir,
            tenant: "acme".into(),
            log,
        };
        supd.wait_listening();
        if opts.wait_ready {
            supd.wait_until(Duration::from_secs(20), || {
                supd.get("/v1/state/applications/none/service-instances", ADMIN_TOKEN)
                    .status
                    != 503
            });
        }
        supd
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon process still runs (not exited, not a zombie).
    pub fn child_alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "supd did not listen on {}; log:\n{}",
            self.addr,
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Poll `cond` every 50 ms until it holds, or fail with the daemon's log.
    pub fn wait_until(&self, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "condition not met within {timeout:?}; supd log:\n{}",
            self.log_text()
        );
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        let mut c = self.connect();
        c.send(method, path, headers, body);
        c.read_response(method == "HEAD")
    }

    pub fn get(&self, path: &str, token: &str) -> HttpResponse {
        let auth = format!("Bearer {token}");
        self.request("GET", path, &[("Authorization", &auth)], b"")
    }

    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.get(path, ADMIN_TOKEN);
        let v = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
            panic!(
                "{path}: body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&r.body)
            )
        });
        (r.status, v)
    }

    pub fn post_json(&self, path: &str, token: &str, body: &str) -> HttpResponse {
        let auth = format!("Bearer {token}");
        self.request(
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Number of open descriptors of the daemon.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Direct children of the daemon (processes it started and has not reaped).
    pub fn children(&self) -> Vec<u32> {
        let path = format!("/proc/{0}/task/{0}/children", self.child.id());
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect()
    }
}

impl Drop for Supd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- supd log ----\n{}", self.log_text());
        }
    }
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The first error message of an errors body.
    pub fn error_message(&self) -> String {
        self.json()["errors"][0]["error-message"]
            .as_str()
            .unwrap_or_else(|| panic!("no error-message in {}", self.text()))
            .to_string()
    }
}

/// A blocking HTTP/1.1 client on one connection, for keep-alive and pipelining tests.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// A client on a stream opened elsewhere (its timeouts left as they are).
    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: supd\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Read one response (Content-Length framed, or until close).
    pub fn read_response(&mut self, head_only: bool) -> HttpResponse {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = resp.parse(&self.buf).expect("valid response") {
                let status = resp.code.unwrap();
                let hs: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len = hs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse::<usize>().unwrap());
                self.buf.drain(..n);
                if status == 100 {
                    continue;
                }
                let body = match len {
                    _ if head_only || status == 204 || status == 101 => Vec::new(),
                    Some(len) => {
                        while self.buf.len() < len {
                            self.fill();
                        }
                        self.buf.drain(..len).collect()
                    }
                    None => {
                        while self.try_fill() {}
                        std::mem::take(&mut self.buf)
                    }
                };
                return HttpResponse {
                    status,
                    headers: hs,
                    body,
                };
            }
            self.fill();
        }
    }

    fn fill(&mut self) {
        assert!(self.try_fill(), "connection closed before a full response");
    }

    fn try_fill(&mut self) -> bool {
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Whether the server closed the connection (reads EOF within the timeout).
    pub fn is_closed_by_peer(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut tmp = [0u8; 1024];
        let r = matches!(self.stream.read(&mut tmp), Ok(0) | Err(_));
        self.stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        r
    }
}

/// Containers created by one test, all carrying its own label, removed on drop.
pub struct Containers {
    pub label: String,
}

impl Containers {
    pub fn new(test: &str) -> Containers {
        ensure_image();
        let label = unique(test);
        Containers { label }
    }

    /// `docker run -d` with the test label plus `args` (options, then image and command).
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .args(["run", "-d", "--label"])
            .arg(format!("supd.test={}", self.label))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker run {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn docker(&self, args: &[&str]) -> String {
        docker(args)
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=supd.test={}", self.label),
        ]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            let _ = Command::new("docker").args(&args).output();
        }
    }
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn inspect(id: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, id])
}
