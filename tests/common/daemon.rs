//! A real `supd` process on a free port, with the test tokens, its log in a temporary
//! directory, and the figures of a process read from /proc.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

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
    /// Listen on this port (default: a free one).
    pub port: Option<u16>,
    /// Pass `--listen` (which replaces the configuration's list); without it the
    /// configuration must list a plain `127.0.0.1:<port>` (TLS tests list more).
    pub listen_flag: bool,
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
            port: None,
            listen_flag: true,
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
        let port = opts.port.unwrap_or_else(free_port);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = dir.path().join("supd.log");
        let binary = opts
            .binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_supd")));
        let mut cmd = Command::new(binary);
        if opts.listen_flag {
            cmd.arg("--listen").arg(addr.to_string());
        }
        cmd.arg("--tokens")
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
        // Only this test process's VMs (their applications carry `-<pid>-`, see `unique`):
        // a guest agent serves one client, and test binaries share the Docker engine.
        cmd.env("SUPD_DEBUG_VM_APPS", format!("-{}-", std::process::id()));
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
        let mut c = self.connect();
        c.send_json(path, token, body.as_bytes());
        c.read_response(false)
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

/// Wait until supd reports the first container of instance `<svc>-1` of `app` running.
pub fn wait_instance(supd: &Supd, app: &str, svc: &str) {
    let path = instance_path(app, svc);
    supd.wait_until(Duration::from_secs(20), || {
        let r = supd.get(&path, ADMIN_TOKEN);
        r.status == 200 && r.json()["containers"][0]["oper-status"] == "running"
    });
}

/// The same for instance `web-1`.
pub fn wait_running(supd: &Supd, app: &str) {
    wait_instance(supd, app, "web");
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

pub fn start_with_config(dir: &TempDir, yaml: &str) -> Supd {
    let cfg = config_file(dir, yaml);
    Supd::start_with(SupdOptions {
        extra_args: vec!["--config".into(), cfg],
        ..Default::default()
    })
}
