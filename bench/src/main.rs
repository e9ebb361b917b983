//! supd-bench: measures supd side by side with its peers on this machine, in one run, and
//! prints the table of issue 6 (also written to bench/RESULTS.md).
//!
//! `supd-bench [--quick] [--supd PATH] [--websocat PATH] [--out FILE]`
//! `supd-bench --vm [--quick] [--supd PATH] [--out FILE]`: the VM rows only ([`vm`]).
//! `supd-bench --tls [--quick] [--supd PATH] [--out FILE]`: the TLS rows and socat ceilings
//! only ([`tls`]).
//!
//! It creates its own labelled containers (`supd.bench=1`), starts supd and the peers as its
//! children (killed with it), and removes everything at the end, also after a failed measure.

mod net;
mod sys;
mod tls;
mod vm;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use net::{Http, Pipe, Result, Ws};

const IMAGE: &str = "supd-test-busybox:latest";
const APP: &str = "bench";
const SVC: &str = "s";
const DOCKER_SOCK: &str = "/var/run/docker.sock";
/// The bench's own server inside the target container; the first byte of a connection picks
/// what it does (see `serve_target`).
const TARGET_PORT: u16 = 5001;
/// websocat's listener, also inside the target container.
const WEBSOCAT_PORT: u16 = 5002;
const CONNECT_PROTO: &str = "v1.connect.supd";
const INTERACTIVE_PROTO: &str = "v1.exec-interactive.supd";
const MIB: f64 = 1024.0 * 1024.0;

struct Opts {
    quick: bool,
    supd: PathBuf,
    websocat: Option<PathBuf>,
    out: Option<PathBuf>,
    /// Run only these measures (names as in `MEASURES`); for profiling one of them.
    only: Option<Vec<String>>,
    /// The VM rows only (a VM boots for them).
    vm: bool,
    /// The TLS rows and socat ceilings only (`SEPARATE`), into their own section.
    tls: bool,
}

/// How many of everything: the full run, or `--quick` (only checks that the bench works).
struct Sizes {
    instances: usize,
    ready_runs: usize,
    exec_supd: usize,
    exec_nsenter: usize,
    exec_api: usize,
    exec_cli: usize,
    interactive_supd: usize,
    interactive_cli: usize,
    load: Duration,
    bulk_bytes: usize,
    bulk_runs: usize,
    rtt: usize,
    sessions: usize,
    idle_ws: usize,
    /// Requests per forwarded measure (state get, exec), each way of reaching site B.
    forwarded: usize,
    /// Idle connections held open for the TLS RSS row (each kind).
    tls_conns: usize,
    /// New connections + state get, each kind (plain, TLS full, TLS resumed).
    handshakes: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                instances: 5,
                ready_runs: 2,
                exec_supd: 10,
                exec_nsenter: 5,
                exec_api: 3,
                exec_cli: 2,
                interactive_supd: 5,
                interactive_cli: 2,
                load: Duration::from_millis(200),
                bulk_bytes: 4 << 20,
                bulk_runs: 1,
                rtt: 50,
                sessions: 20,
                idle_ws: 100,
                forwarded: 20,
                tls_conns: 50,
                handshakes: 20,
            }
        } else {
            Sizes {
                instances: 100,
                ready_runs: 10,
                exec_supd: 500,
                exec_nsenter: 300,
                exec_api: 50,
                exec_cli: 30,
                interactive_supd: 200,
                interactive_cli: 20,
                load: Duration::from_secs(3),
                bulk_bytes: 256 << 20,
                bulk_runs: 3,
                rtt: 5000,
                sessions: 1000,
                idle_ws: 10_000,
                forwarded: 500,
                tls_conns: 1000,
                handshakes: 500,
            }
        }
    }
}

fn parse_args() -> std::result::Result<Opts, String> {
    let root = repo_root();
    let mut o = Opts {
        quick: false,
        supd: root.join("target/release/supd"),
        websocat: None,
        out: None,
        only: None,
        vm: false,
        tls: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--vm" => o.vm = true,
            "--tls" => o.tls = true,
            "--supd" => o.supd = args.next().ok_or("--supd needs a path")?.into(),
            "--websocat" => o.websocat = Some(args.next().ok_or("--websocat needs a path")?.into()),
            "--out" => o.out = Some(args.next().ok_or("--out needs a path")?.into()),
            "--only" => {
                let list = args.next().ok_or("--only needs a list")?;
                o.only = Some(list.split(',').map(str::to_string).collect());
            }
            _ => {
                return Err(format!(
                    "unknown argument {a:?}; usage: supd-bench [--quick] [--vm | --tls] [--supd PATH] [--websocat PATH] [--out FILE] [--only exec,interactive,state,tunnel,sessions,idle-ws,sites,tls,relay]"
                ));
            }
        }
    }
    if o.websocat.is_none() {
        o.websocat = [root.join("target/peers/bin/websocat")]
            .into_iter()
            .chain(which("websocat"))
            .find(|p| p.is_file());
    }
    if o.out.is_none() && !o.quick {
        o.out = Some(root.join("bench/RESULTS.md"));
    }
    Ok(o)
}

fn repo_root() -> PathBuf {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"));
    bench.parent().unwrap_or(bench).to_path_buf()
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------------
// Statistics and the table

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort();
    v
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn lat(v: &[Duration]) -> String {
    format!("{} / {}", dur(pct(v, 0.5)), dur(pct(v, 0.99)))
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / MIB)
}

fn times(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}×")
    } else {
        format!("{x:.2}×")
    }
}

#[derive(Default)]
struct Row {
    measure: String,
    supd: String,
    peer: String,
    peer_figure: String,
    /// How many times better supd is (latency: peer ÷ supd; rate: supd ÷ peer).
    ratio: String,
    target: String,
    verdict: Option<bool>,
}

struct Table {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Table {
    fn add(&mut self, r: Row) {
        let verdict = match r.verdict {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "",
        };
        println!(
            "{:<44} | {:<24} | {:<22} | {:<24} | {:>8} | {} {}",
            r.measure, r.supd, r.peer, r.peer_figure, r.ratio, r.target, verdict
        );
        self.rows.push(r);
    }

    fn add_if(&mut self, add: bool, r: Row) {
        if add {
            self.add(r);
        }
    }

    fn fail(&mut self, measure: &str, e: String) {
        eprintln!("bench: {measure}: {e}");
        self.notes.push(format!("{measure}: not measured: {e}"));
        self.add(Row {
            measure: measure.into(),
            supd: "error (see notes)".into(),
            ..Row::default()
        });
    }

    fn markdown(&self) -> String {
        let mut s = String::from(
            "| measure | supd (median / p99) | peer | peer (median / p99) | supd advantage | target | |\n|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let v = match r.verdict {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "",
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.measure, r.supd, r.peer, r.peer_figure, r.ratio, r.target, v
            ));
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Docker, containers, processes

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn docker(args: &[&str]) -> Result<String> {
    run(Command::new("docker").args(args))
}

fn remove_bench_containers() {
    let ids = docker(&["ps", "-aq", "--filter", "label=supd.bench=1"]).unwrap_or_default();
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids);
        if let Err(e) = docker(&args) {
            eprintln!("bench: removing containers: {e}");
        }
    }
}

/// `n` instances `s-1`..`s-n` of the application, each one container sleeping.
fn create_instances(n: usize) -> Result<Vec<String>> {
    let ids = Mutex::new(vec![String::new(); n]);
    let err = Mutex::new(None);
    thread::scope(|s| {
        for t in 0..4 {
            let (ids, err) = (&ids, &err);
            s.spawn(move || {
                for i in (t..n).step_by(4) {
                    // Only the first instance is a tunnel target. The others stay off the
                    // bridge: Docker 20.10 (Debian's) can deadlock in libnetwork when many
                    // bridge endpoints go away at once (moby/moby#46661), as at clean-up.
                    let network = if i == 0 { "bridge" } else { "none" };
                    let r = docker(&[
                        "run",
                        "-d",
                        "--network",
                        network,
                        "--label",
                        "supd.test=bench",
                        "--label",
                        "supd.bench=1",
                        "--label",
                        &format!("io.supd.application={APP}"),
                        "--label",
                        &format!("io.supd.service={SVC}"),
                        "--label",
                        &format!("io.supd.instance={}", i + 1),
                        "--stop-timeout",
                        "1",
                        IMAGE,
                        "sleep",
                        "3600",
                    ]);
                    match r {
                        Ok(id) => ids.lock().unwrap()[i] = id,
                        Err(e) => *err.lock().unwrap() = Some(e),
                    }
                }
            });
        }
    });
    if let Some(e) = err.into_inner().unwrap() {
        return Err(e);
    }
    Ok(ids.into_inner().unwrap())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Proc(Child);

/// Ended with SIGTERM (supd shuts down gracefully, and a profiler under it writes its
/// output), SIGKILL after 5 s.
impl Drop for Proc {
    fn drop(&mut self) {
        sys::terminate(self.0.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Daemon {
    proc: Proc,
    addr: SocketAddr,
}

struct Setup {
    dir: PathBuf,
    token: String,
    config: PathBuf,
    tokens: PathBuf,
}

impl Setup {
    fn new(supd: &Path) -> Result<Setup> {
        let dir = std::env::temp_dir().join(format!("supd-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
        let tokens = dir.join("tokens.yaml");
        let token = run(Command::new(supd)
            .args([
                "token",
                "create",
                "--name",
                "bench",
                "--operations",
                "read,exec,connect,restart",
                "--applications",
                "*",
                "--tokens",
            ])
            .arg(&tokens))?;
        let token = token.lines().last().unwrap_or("").trim().to_string();
        // Room for 10,000 websockets plus their upstream sockets; pings far apart so that a
        // client that only drains output is not dropped while a measure runs.
        let config = dir.join("supd.yaml");
        std::fs::write(
            &config,
            "limits: {max-connections: 30000, connections-per-token: 30000}\nwebsocket: {ping-interval-ms: 600000}\n",
        )
        .map_err(|e| format!("{config:?}: {e}"))?;
        Ok(Setup {
            dir,
            token,
            config,
            tokens,
        })
    }

    /// Start supd and wait for its READY=1 on a datagram socket the bench owns.
    fn start_supd(&self, supd: &Path, n: usize) -> Result<(Daemon, Duration)> {
        let addr = free_addr()?;
        let args = ["--listen".to_string(), addr.to_string()];
        let (proc, took) = self.spawn(supd, n, &self.config, "local", &args)?;
        Ok((Daemon { proc, addr }, took))
    }

    /// supd with the configuration `config` as site `site` (its log `supd-<site>.log`, the
    /// main one's `supd.log`), once it is READY.
    fn spawn(
        &self,
        supd: &Path,
        n: usize,
        config: &Path,
        site: &str,
        args: &[String],
    ) -> Result<(Proc, Duration)> {
        let notify = self.dir.join(format!("notify-{n}"));
        let _ = std::fs::remove_file(&notify);
        let sock = UnixDatagram::bind(&notify).map_err(|e| format!("notify socket: {e}"))?;
        sock.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let log_name = if site == "local" {
            "supd.log".to_string()
        } else {
            format!("supd-{site}.log")
        };
        let log = std::fs::File::create(self.dir.join(log_name)).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(supd);
        cmd.arg("--config")
            .arg(config)
            .arg("--tokens")
            .arg(&self.tokens)
            .args(args)
            .args(["--tenant", "bench", "--site", site, "--host", "bench"])
            .env("NOTIFY_SOCKET", &notify)
            .env_remove("WATCHDOG_USEC")
            .env_remove("LISTEN_FDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        sys::die_with_parent(&mut cmd);
        let t0 = Instant::now();
        let child = cmd.spawn().map_err(|e| format!("start supd: {e}"))?;
        let proc = Proc(child);
        let mut buf = [0u8; 4096];
        loop {
            let len = sock
                .recv(&mut buf)
                .map_err(|e| format!("no READY=1 from supd (site {site}): {e}"))?;
            if buf[..len].split(|&b| b == b'\n').any(|l| l == b"READY=1") {
                break;
            }
        }
        let took = t0.elapsed();
        let _ = std::fs::remove_file(&notify);
        Ok((proc, took))
    }
}

fn free_addr() -> Result<SocketAddr> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("free port: {e}"))?
        .port();
    Ok(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)))
}

// ---------------------------------------------------------------------------------------------
// The bench's server inside the target container

/// One connection to the in-container server: the first byte picks the mode. `u` + u64 length:
/// read that many bytes, answer one byte. `d` + u64 length: send that many bytes. `e`: echo.
/// `h`: hold the connection open, idle.
fn serve_target(listener: TcpListener, held: Arc<Mutex<Vec<TcpStream>>>) {
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_nodelay(true);
            let mut mode = [0u8; 1];
            if s.read_exact(&mut mode).is_err() {
                continue;
            }
            if mode[0] == b'h' {
                held.lock().unwrap().push(s);
                continue;
            }
            thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                match mode[0] {
                    b'u' | b'd' => {
                        let mut len = [0u8; 8];
                        if s.read_exact(&mut len).is_err() {
                            return;
                        }
                        let mut left = u64::from_le_bytes(len) as usize;
                        while left > 0 {
                            let chunk = left.min(buf.len());
                            let r = if mode[0] == b'u' {
                                s.read(&mut buf[..chunk])
                            } else {
                                s.write(&buf[..chunk])
                            };
                            match r {
                                Ok(0) | Err(_) => return,
                                Ok(n) => left -= n,
                            }
                        }
                        if mode[0] == b'u' {
                            let _ = s.write_all(b"k");
                        }
                        let _ = s.read(&mut buf[..1]);
                    }
                    b'e' => loop {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    },
                    _ => {}
                }
            });
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Clients

struct Ctx {
    opts: Opts,
    sizes: Sizes,
    setup: Setup,
    supd: SocketAddr,
    supd_pid: u32,
    target_id: String,
    target_pid: u32,
    websocat: Option<(Proc, SocketAddr)>,
    /// The in-container server's ends of idle connections.
    held: Arc<Mutex<Vec<TcpStream>>>,
}

fn tcp(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn docker_sock() -> Result<UnixStream> {
    let s = UnixStream::connect(DOCKER_SOCK).map_err(|e| format!("{DOCKER_SOCK}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Ctx {
    fn instance_path(&self, n: usize) -> String {
        format!("/v1/state/applications/{APP}/service-instances/{SVC}-{n}")
    }

    fn get_head(&self, path: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\n",
            self.setup.token
        )
    }

    fn interactive_path(&self, cmd: &str) -> String {
        format!(
            "{}/containers/{SVC}/exec-interactive?cmd={}&tty=true",
            self.instance_path(1),
            encode(cmd)
        )
    }

    fn supd_tunnel(&self) -> Result<Ws<TcpStream>> {
        self.tunnel_at(self.supd, "")
    }

    /// A connect tunnel to the target through the supd at `addr`; `query` adds to its query
    /// (`&site=b`).
    fn tunnel_at(&self, addr: SocketAddr, query: &str) -> Result<Ws<TcpStream>> {
        let path = format!(
            "{}/connect?protocol=tcp&port={TARGET_PORT}{query}",
            self.instance_path(1)
        );
        Ws::open(tcp(addr)?, &path, &self.setup.token, CONNECT_PROTO)
    }

    fn websocat_tunnel(&self) -> Option<Result<Ws<TcpStream>>> {
        let (_, addr) = self.websocat.as_ref()?;
        Some(
            self.in_container(*addr)
                .and_then(|s| Ws::open(s, "/", "", "")),
        )
    }

    fn raw_tcp(&self) -> Result<TcpStream> {
        self.in_container(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::LOCALHOST,
            TARGET_PORT,
        )))
    }

    /// A connection over the container's own loopback, as its processes would make.
    fn in_container(&self, addr: SocketAddr) -> Result<TcpStream> {
        let s = sys::connect_in_netns(self.target_pid, addr)?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        Ok(s)
    }
}

/// Run `op` `n` times after a short warm-up; the latencies, sorted.
fn sample(n: usize, mut op: impl FnMut() -> Result<()>) -> Result<Vec<Duration>> {
    for _ in 0..n.min(5) {
        op()?;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        op()?;
        v.push(t.elapsed());
    }
    Ok(sorted(v))
}

type Op = Box<dyn FnMut() -> Result<()> + Send>;

/// `conns` connections, each on its own thread, sending requests back to back for `d`:
/// (requests per second, sorted latencies).
fn load(
    conns: usize,
    d: Duration,
    make: &(dyn Fn() -> Result<Op> + Sync),
) -> Result<(f64, Vec<Duration>)> {
    let mut ops = Vec::new();
    for _ in 0..conns {
        let mut op = make()?;
        op()?;
        ops.push(op);
    }
    let start = Instant::now();
    let deadline = start + d;
    let results: Vec<Result<Vec<Duration>>> = thread::scope(|s| {
        let hs: Vec<_> = ops
            .into_iter()
            .map(|mut op| {
                s.spawn(move || {
                    let mut v = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        op()?;
                        v.push(t.elapsed());
                    }
                    Ok(v)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("load thread panicked".into()))
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok((all.len() as f64 / elapsed.as_secs_f64(), sorted(all)))
}

// ---------------------------------------------------------------------------------------------
// The measures

fn measure_exec(c: &Ctx, t: &mut Table) -> Result<()> {
    let path = format!("{}/containers/{SVC}/exec", c.instance_path(1));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n",
        c.setup.token
    );
    let supd = sample(c.sizes.exec_supd, || {
        let mut h = Http::new(tcp(c.supd)?);
        let r = h.request(&head, br#"{"cmd":"true"}"#)?;
        let body = String::from_utf8_lossy(&r.body);
        if r.status != 200 || !body.contains("\"exit-code\":0") {
            return Err(format!("supd exec answered {}: {body}", r.status));
        }
        Ok(())
    })?;
    let nsenter = sample(c.sizes.exec_nsenter, || {
        let pid = c.target_pid.to_string();
        run(Command::new("nsenter").args(["-t", &pid, "-a", "true"])).map(|_| ())
    })?;
    let create_head = format!(
        "POST /containers/{}/exec HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n",
        c.target_id
    );
    let api = sample(c.sizes.exec_api, || {
        let mut h = Http::new(docker_sock()?);
        let r = h.request(
            &create_head,
            br#"{"Cmd":["true"],"AttachStdout":true,"AttachStderr":true}"#,
        )?;
        let body = String::from_utf8_lossy(&r.body).into_owned();
        let id = body
            .split("\"Id\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .ok_or_else(|| format!("exec create answered {}: {body}", r.status))?;
        let mut h = Http::new(docker_sock()?);
        let r = h.request(
            &format!("POST /exec/{id}/start HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"),
            br#"{"Detach":false,"Tty":false}"#,
        )?;
        if r.status != 200 && r.status != 101 {
            return Err(format!("exec start answered {}", r.status));
        }
        Ok(())
    })?;
    let cli = sample(c.sizes.exec_cli, || {
        run(Command::new("docker").args(["exec", &c.target_id, "true"])).map(|_| ())
    })?;
    let s_med = pct(&supd, 0.5).as_secs_f64();
    let measure = "one-shot exec of `true`, full HTTP round trip";
    let row = |peer: &str, v: &[Duration], target: &str, verdict: Option<bool>| Row {
        measure: measure.into(),
        supd: lat(&supd),
        peer: peer.into(),
        peer_figure: lat(v),
        ratio: times(pct(v, 0.5).as_secs_f64() / s_med),
        target: target.into(),
        verdict,
    };
    let ns_med = pct(&nsenter, 0.5).as_secs_f64();
    t.add(row(
        "nsenter -t PID -a true",
        &nsenter,
        "≤ 2× nsenter",
        Some(s_med <= 2.0 * ns_med),
    ));
    let cli_med = pct(&cli, 0.5).as_secs_f64();
    t.add(row(
        "docker exec",
        &cli,
        "≥ 20× faster than docker exec",
        Some(cli_med / s_med >= 20.0),
    ));
    t.add(row("Docker API exec create+start", &api, "", None));

    // The same exec in a container without a seccomp filter: supd copies a container's filter
    // into every process it starts there (issue 5), and the kernel takes 1-2 ms to attach
    // Docker's default profile (974 instructions) each time; nsenter attaches none. This row
    // shows supd's own cost without that part.
    let app = "bench-unconfined";
    docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "--security-opt",
        "seccomp=unconfined",
        "--label",
        "supd.test=bench",
        "--label",
        "supd.bench=1",
        "--label",
        &format!("io.supd.application={app}"),
        "--label",
        &format!("io.supd.service={SVC}"),
        "--label",
        "io.supd.instance=1",
        IMAGE,
        "sleep",
        "3600",
    ])?;
    let path = format!("/v1/state/applications/{app}/service-instances/{SVC}-1");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Http::new(tcp(c.supd)?)
        .request(&c.get_head(&path), b"")?
        .status
        != 200
    {
        if Instant::now() > deadline {
            return Err(format!("supd never saw {app}"));
        }
        thread::sleep(Duration::from_millis(50));
    }
    let head = format!(
        "POST {path}/containers/{SVC}/exec HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n",
        c.setup.token
    );
    let unconfined = sample(c.sizes.exec_supd, || {
        let r = Http::new(tcp(c.supd)?).request(&head, br#"{"cmd":"true"}"#)?;
        if r.status != 200 {
            return Err(format!("supd exec answered {}", r.status));
        }
        Ok(())
    })?;
    let u_med = pct(&unconfined, 0.5).as_secs_f64();
    t.add(Row {
        measure: "one-shot exec of `true`, container without a seccomp filter".into(),
        supd: lat(&unconfined),
        peer: "nsenter -t PID -a true".into(),
        peer_figure: lat(&nsenter),
        ratio: times(ns_med / u_med),
        target: "≤ 2× nsenter".into(),
        verdict: Some(u_med <= 2.0 * ns_med),
    });
    Ok(())
}

fn measure_interactive(c: &Ctx, t: &mut Table) -> Result<()> {
    let head = net::upgrade_head(
        &c.interactive_path("echo hi"),
        &c.setup.token,
        INTERACTIVE_PROTO,
    );
    let mut supd = Vec::new();
    for i in 0..c.sizes.interactive_supd + 3 {
        let mut h = Http::new(tcp(c.supd)?);
        let t0 = Instant::now();
        h.send(&head, b"")?;
        let mut ws = Ws::finish_upgrade(h)?;
        let mut got = false;
        while !got {
            if !ws.recv(&mut |b| got = !b.is_empty())? {
                return Err("session closed before any output".into());
            }
        }
        if i >= 3 {
            supd.push(t0.elapsed());
        }
        while ws.recv(&mut |_| {})? {}
    }
    let supd = sorted(supd);
    let mut cli = Vec::new();
    for i in 0..c.sizes.interactive_cli + 1 {
        let t0 = Instant::now();
        let (mut child, mut master) = sys::spawn_on_pty(Command::new("docker").args([
            "exec",
            "-it",
            &c.target_id,
            "echo",
            "hi",
        ]))
        .map_err(|e| format!("docker exec -it: {e}"))?;
        let mut buf = [0u8; 4096];
        let first = master.read(&mut buf);
        let took = t0.elapsed();
        // The rest of the output, then EIO once the terminal's last user is gone.
        let mut all = match first {
            Ok(n) => buf[..n].to_vec(),
            Err(_) => Vec::new(),
        };
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        let st = child.wait().map_err(|e| e.to_string())?;
        if !st.success() || !String::from_utf8_lossy(&all).contains("hi") {
            return Err(format!(
                "docker exec -it: {st}: {:?}",
                String::from_utf8_lossy(&all)
            ));
        }
        if i >= 1 {
            cli.push(took);
        }
    }
    let cli = sorted(cli);
    let med = pct(&supd, 0.5);
    t.add(Row {
        measure: "interactive exec, upgrade sent → first output byte of `echo hi`".into(),
        supd: lat(&supd),
        peer: "docker exec -it (under a PTY)".into(),
        peer_figure: lat(&cli),
        ratio: times(pct(&cli, 0.5).as_secs_f64() / med.as_secs_f64()),
        target: "≤ 5 ms median".into(),
        verdict: Some(med <= Duration::from_millis(5)),
    });
    Ok(())
}

fn measure_state(c: &Ctx, t: &mut Table) -> Result<()> {
    let n = c.sizes.instances;
    let list = c.get_head(&format!("/v1/state/applications/{APP}/service-instances"));
    let get = c.get_head(&c.instance_path(1));
    // The same selection from Docker: every container of the application, or the one of s-1.
    let filter = |extra: &str| {
        let f = format!(r#"{{"label":["io.supd.application={APP}"{extra}]}}"#);
        format!(
            "GET /containers/json?filters={} HTTP/1.1\r\nHost: docker\r\n",
            encode(&f)
        )
    };
    let dlist = filter("");
    let dget = filter(r#","io.supd.instance=1""#);

    // Sanity: supd lists all instances.
    let r = Http::new(tcp(c.supd)?).request(&list, b"")?;
    let last = format!(".{SVC}-{n}\"");
    if r.status != 200 || !String::from_utf8_lossy(&r.body).contains(&last) {
        return Err(format!(
            "supd's list lacks {last}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
                .chars()
                .take(300)
                .collect::<String>()
        ));
    }
    for (what, supd_head, docker_head) in [("list", &list, &dlist), ("get", &get, &dget)] {
        for conns in [1usize, 32] {
            let supd_addr = c.supd;
            let sh = supd_head.clone();
            let (s_rps, s_lat) = load(conns, c.sizes.load, &|| {
                let mut h = Http::new(tcp(supd_addr)?);
                let head = sh.clone();
                Ok(Box::new(move || {
                    let r = h.request(&head, b"")?;
                    if r.status != 200 {
                        return Err(format!("supd answered {}", r.status));
                    }
                    Ok(())
                }) as Op)
            })?;
            let dh = docker_head.clone();
            let (d_rps, d_lat) = load(conns, c.sizes.load, &|| {
                let mut h = Http::new(docker_sock()?);
                let head = dh.clone();
                Ok(Box::new(move || {
                    let r = h.request(&head, b"")?;
                    if r.status != 200 {
                        return Err(format!("docker answered {}", r.status));
                    }
                    Ok(())
                }) as Op)
            })?;
            let ratio = s_rps / d_rps;
            t.add(Row {
                measure: format!("state {what}, {n} instances, keep-alive, {conns} conn"),
                supd: format!("{s_rps:.0} req/s; {}", lat(&s_lat)),
                peer: "Docker API /containers/json, same filter".into(),
                peer_figure: format!("{d_rps:.0} req/s; {}", lat(&d_lat)),
                ratio: times(ratio),
                target: "≥ 5× req/s, p99 < 1 ms".into(),
                verdict: Some(ratio >= 5.0 && pct(&s_lat, 0.99) < Duration::from_millis(1)),
            });
        }
    }
    Ok(())
}

/// Upload or download `bytes` through `p`: MiB/s.
fn bulk(p: &mut dyn Pipe, up: bool, bytes: usize) -> Result<f64> {
    let chunk = vec![0x5au8; 64 * 1024];
    let t0 = Instant::now();
    let mut hdr = vec![if up { b'u' } else { b'd' }];
    hdr.extend_from_slice(&(bytes as u64).to_le_bytes());
    p.put(&hdr)?;
    if up {
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            p.put(&chunk[..n])?;
            left -= n;
        }
        if p.get(&mut |_| {})? == 0 {
            return Err("no acknowledgement after the upload".into());
        }
    } else {
        let mut got = 0;
        while got < bytes {
            let n = p.get(&mut |_| {})?;
            if n == 0 {
                return Err(format!("download ended after {got} of {bytes} bytes"));
            }
            got += n;
        }
    }
    Ok(bytes as f64 / MIB / t0.elapsed().as_secs_f64())
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn measure_tunnel(c: &Ctx, t: &mut Table) -> Result<()> {
    type Open<'a> = Box<dyn Fn() -> Result<Box<dyn Pipe>> + 'a>;
    let mut kinds: Vec<(&str, Open)> = vec![
        (
            "supd",
            Box::new(|| Ok(Box::new(c.supd_tunnel()?) as Box<dyn Pipe>)),
        ),
        (
            "raw TCP",
            Box::new(|| Ok(Box::new(c.raw_tcp()?) as Box<dyn Pipe>)),
        ),
    ];
    if c.websocat.is_some() {
        kinds.push((
            "websocat ws→tcp",
            Box::new(|| Ok(Box::new(c.websocat_tunnel().ok_or("no websocat")??) as Box<dyn Pipe>)),
        ));
    }
    for up in [true, false] {
        let mut rates = Vec::new();
        for (name, open) in &kinds {
            let mut v = Vec::new();
            for _ in 0..c.sizes.bulk_runs {
                let mut p = open()?;
                v.push(bulk(&mut *p, up, c.sizes.bulk_bytes)?);
            }
            rates.push((*name, median_f(v)));
        }
        let s = rates[0].1;
        let dir = if up {
            "client → container"
        } else {
            "container → client"
        };
        for (name, r) in &rates[1..] {
            let raw = *name == "raw TCP";
            t.add(Row {
                measure: format!("TCP tunnel throughput, {dir}"),
                supd: format!("{s:.0} MiB/s"),
                peer: name.to_string(),
                peer_figure: format!("{r:.0} MiB/s"),
                ratio: times(s / r),
                target: if raw {
                    "≥ 80% of raw TCP"
                } else {
                    "≥ 1.5× websocat"
                }
                .into(),
                verdict: Some(if raw { s >= 0.8 * r } else { s >= 1.5 * r }),
            });
        }
    }
    // 1-byte round trips.
    let mut rtts = Vec::new();
    for (name, open) in &kinds {
        let mut p = open()?;
        p.put(b"e")?;
        let v = sample(c.sizes.rtt, || {
            p.put(b"x")?;
            if p.get(&mut |_| {})? == 0 {
                return Err("echo closed".into());
            }
            Ok(())
        })?;
        rtts.push((*name, v));
    }
    let s_med = pct(&rtts[0].1, 0.5);
    for (name, v) in &rtts[1..] {
        let raw = *name == "raw TCP";
        t.add(Row {
            measure: "TCP tunnel 1-byte round trip".into(),
            supd: lat(&rtts[0].1),
            peer: name.to_string(),
            peer_figure: lat(v),
            ratio: times(pct(v, 0.5).as_secs_f64() / s_med.as_secs_f64()),
            target: if raw { "≤ raw + 50 µs" } else { "" }.into(),
            verdict: raw.then(|| s_med <= pct(v, 0.5) + Duration::from_micros(50)),
        });
    }
    if c.websocat.is_none() {
        t.notes
            .push("websocat is not installed: its tunnel comparisons were skipped.".into());
    }
    Ok(())
}

/// `n` interactive sessions streaming output, drained by reader threads until the returned
/// flag is set.
fn open_streams(c: &Ctx, n: usize, stop: &Arc<AtomicBool>) -> Result<Vec<thread::JoinHandle<()>>> {
    let cmd = "while :; do echo 0123456789abcdef0123456789abcdef; read -t 0.1 x; done";
    let path = c.interactive_path(&format!("sh -c '{cmd}'"));
    let mut hs = Vec::new();
    for _ in 0..n {
        let mut ws = Ws::open(tcp(c.supd)?, &path, &c.setup.token, INTERACTIVE_PROTO)?;
        // Short reads from here on, so a reader notices the stop flag.
        ws.stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
        let stop = stop.clone();
        let h = thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match ws.recv(&mut |_| {}) {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) if e.contains("timed out") || e.contains("temporarily") => {}
                        Err(_) => return,
                    }
                }
            })
            .map_err(|e| format!("reader thread: {e}"))?;
        hs.push(h);
    }
    Ok(hs)
}

fn measure_sessions(c: &Ctx, t: &mut Table) -> Result<()> {
    let n = c.sizes.sessions;
    let stop = Arc::new(AtomicBool::new(false));
    let r = (|| {
        let hs = open_streams(c, n, &stop)?;
        thread::sleep(Duration::from_secs(1));
        let rss = rss_kib(c.supd_pid) * 1024;
        let get = c.get_head(&c.instance_path(1));
        let (_, v) = load(1, c.sizes.load, &|| {
            let mut h = Http::new(tcp(c.supd)?);
            let head = get.clone();
            Ok(Box::new(move || {
                let r = h.request(&head, b"")?;
                if r.status != 200 {
                    return Err(format!("supd answered {}", r.status));
                }
                Ok(())
            }) as Op)
        })?;
        Ok::<_, String>((hs, rss, v))
    })();
    stop.store(true, Ordering::Relaxed);
    let (hs, rss, v) = r?;
    for h in hs {
        let _ = h.join();
    }
    t.add(Row {
        measure: format!("RSS with {n} open interactive sessions (streaming)"),
        supd: mib(rss),
        target: "≤ 64 MiB".into(),
        verdict: Some(rss <= 64 << 20),
        ..Row::default()
    });
    t.add(Row {
        measure: format!("event loop: state get p99 while {n} sessions stream output"),
        supd: lat(&v),
        target: "p99 < 2 ms".into(),
        verdict: Some(pct(&v, 0.99) < Duration::from_millis(2)),
        ..Row::default()
    });
    Ok(())
}

fn measure_idle_ws(c: &Ctx, t: &mut Table) -> Result<()> {
    let n = c.sizes.idle_ws;
    let mut socks = Vec::with_capacity(n);
    let r = (|| {
        for _ in 0..n {
            let mut ws = c.supd_tunnel()?;
            ws.put(b"h")?;
            socks.push(ws);
        }
        thread::sleep(Duration::from_secs(1));
        Ok::<_, String>(rss_kib(c.supd_pid) * 1024)
    })();
    drop(socks);
    c.held.lock().unwrap().clear();
    let rss = r?;
    t.add(Row {
        measure: format!("RSS with {n} idle websockets (TCP connect tunnels)"),
        supd: mib(rss),
        target: "≤ 96 MiB".into(),
        verdict: Some(rss <= 96 << 20),
        ..Row::default()
    });
    Ok(())
}

/// The test PKI (`scripts/make-test-ca.sh`) in the bench's directory, made once.
fn pki(c: &Ctx) -> Result<PathBuf> {
    let pki = c.setup.dir.join("pki");
    if !pki.join("ca.pem").is_file() {
        run(Command::new("sh")
            .arg(repo_root().join("scripts/make-test-ca.sh"))
            .arg(&pki))?;
    }
    Ok(pki)
}

/// Sites A and B of the forwarded measures, running until dropped.
struct Sites {
    _a: Proc,
    _b: Proc,
    a_addr: SocketAddr,
    b_plain: SocketAddr,
}

/// B (a plain and a TLS listener) and A, whose `sites:` reach B as `b` (http) and `b-tls`
/// (https with the test CA).
fn start_sites(c: &Ctx) -> Result<Sites> {
    let pki = pki(c)?;
    let (b_plain, b_tls, a_addr) = (free_addr()?, free_addr()?, free_addr()?);
    let limits = "limits: {max-connections: 30000, connections-per-token: 30000}\n";
    let b_cfg = c.setup.dir.join("site-b.yaml");
    let b_yaml = format!(
        "{limits}listen:\n  - {b_plain}\n  - address: '{b_tls}'\n    tls: {{cert-file: {0}/server.pem, key-file: {0}/server.key}}\n",
        pki.display()
    );
    std::fs::write(&b_cfg, b_yaml).map_err(|e| e.to_string())?;
    let (_b, _) = c.setup.spawn(&c.opts.supd, 2000, &b_cfg, "b", &[])?;
    let a_cfg = c.setup.dir.join("site-a.yaml");
    let a_yaml = format!(
        "{limits}sites:\n  b:\n    url: http://{b_plain}\n  b-tls:\n    url: https://{b_tls}\n    ca-file: {}/ca.pem\n",
        pki.display()
    );
    std::fs::write(&a_cfg, a_yaml).map_err(|e| e.to_string())?;
    let args = ["--listen".to_string(), a_addr.to_string()];
    let (_a, _) = c.setup.spawn(&c.opts.supd, 2001, &a_cfg, "a", &args)?;
    Ok(Sites {
        _a,
        _b,
        a_addr,
        b_plain,
    })
}

/// `site=` forwarding (issue 12): two more supd daemons on the same engine, B (plain and TLS
/// listeners, certificates from `scripts/make-test-ca.sh`) and A, whose `sites:` reach B over
/// http and https. Every request through A is compared with the same request to B itself.
fn measure_sites(c: &Ctx, t: &mut Table) -> Result<()> {
    let sites = start_sites(c)?;
    let (a_addr, b_plain) = (sites.a_addr, sites.b_plain);
    // The ways to site B: directly, through A over http, through A over https.
    let ways = [
        ("B directly", b_plain, ""),
        ("through A, http to B", a_addr, "site=b"),
        ("through A, https to B", a_addr, "site=b-tls"),
    ];
    let with = |path: &str, q: &str| match (q, path.contains('?')) {
        ("", _) => path.to_string(),
        (q, true) => format!("{path}&{q}"),
        (q, false) => format!("{path}?{q}"),
    };
    let added =
        |via: &[Duration], direct: &[Duration]| pct(via, 0.5).saturating_sub(pct(direct, 0.5));

    // State get: keep-alive to the supd asked; A opens a connection to B per request (with
    // TLS: a handshake per request).
    let mut state = Vec::new();
    for (_, addr, q) in ways {
        let head = c.get_head(&with(&c.instance_path(1), q));
        let mut h = Http::new(tcp(addr)?);
        state.push(sample(c.sizes.forwarded, || {
            let r = h.request(&head, b"")?;
            if r.status != 200 {
                return Err(format!("state get ({q}) answered {}", r.status));
            }
            Ok(())
        })?);
    }
    // Exec of `true`: a fresh connection each, as in the exec row.
    let exec_path = format!("{}/containers/{SVC}/exec", c.instance_path(1));
    let mut exec = Vec::new();
    for (_, addr, q) in ways {
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n",
            with(&exec_path, q),
            c.setup.token
        );
        exec.push(sample(c.sizes.forwarded, || {
            let r = Http::new(tcp(addr)?).request(&head, br#"{"cmd":"true"}"#)?;
            if r.status != 200 || !String::from_utf8_lossy(&r.body).contains("\"exit-code\":0") {
                return Err(format!("exec ({q}) answered {}", r.status));
            }
            Ok(())
        })?);
    }
    for (what, v) in [
        ("state get, keep-alive", &state),
        ("one-shot exec of `true`", &exec),
    ] {
        for (i, (name, _, _)) in ways.iter().enumerate().skip(1) {
            let add = added(&v[i], &v[0]);
            t.add(Row {
                measure: format!("forwarded {what}, {name}"),
                supd: lat(&v[i]),
                peer: "B directly".into(),
                peer_figure: lat(&v[0]),
                ratio: times(pct(&v[0], 0.5).as_secs_f64() / pct(&v[i], 0.5).as_secs_f64()),
                target: "≤ 1 ms added (median)".into(),
                verdict: Some(add <= Duration::from_millis(1)),
            });
        }
    }

    // Tunnel throughput: through A (http, https to B), B directly, raw TCP.
    type Open<'a> = Box<dyn Fn() -> Result<Box<dyn Pipe>> + 'a>;
    let kinds: Vec<(&str, Open)> = vec![
        (
            "through A, http to B",
            Box::new(|| Ok(Box::new(c.tunnel_at(a_addr, "&site=b")?) as Box<dyn Pipe>)),
        ),
        (
            "through A, https to B",
            Box::new(|| Ok(Box::new(c.tunnel_at(a_addr, "&site=b-tls")?) as Box<dyn Pipe>)),
        ),
        (
            "B directly",
            Box::new(|| Ok(Box::new(c.tunnel_at(b_plain, "")?) as Box<dyn Pipe>)),
        ),
        (
            "raw TCP",
            Box::new(|| Ok(Box::new(c.raw_tcp()?) as Box<dyn Pipe>)),
        ),
    ];
    for up in [true, false] {
        let mut rates = Vec::new();
        for (name, open) in &kinds {
            let mut v = Vec::new();
            for _ in 0..c.sizes.bulk_runs {
                let mut p = open()?;
                v.push(bulk(&mut *p, up, c.sizes.bulk_bytes)?);
            }
            rates.push((*name, median_f(v)));
        }
        let dir = if up {
            "client → container"
        } else {
            "container → client"
        };
        let direct = rates[2].1;
        for (name, r) in &rates[..2] {
            for (peer, p) in &rates[2..] {
                let vs_direct = *peer == "B directly";
                t.add(Row {
                    measure: format!("forwarded TCP tunnel throughput, {dir}, {name}"),
                    supd: format!("{r:.0} MiB/s"),
                    peer: peer.to_string(),
                    peer_figure: format!("{p:.0} MiB/s"),
                    ratio: times(r / p),
                    target: if vs_direct { "≥ 80% of direct" } else { "" }.into(),
                    verdict: vs_direct.then_some(*r >= 0.8 * direct),
                });
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

type Measure = fn(&Ctx, &mut Table) -> Result<()>;

const MEASURES: [(&str, Measure); 9] = [
    ("exec", measure_exec),
    ("interactive", measure_interactive),
    ("state", measure_state),
    ("tunnel", measure_tunnel),
    ("sites", measure_sites),
    ("sessions", measure_sessions),
    ("idle-ws", measure_idle_ws),
    ("tls", tls::measure_tls),
    ("relay", tls::measure_relay),
];

/// Measures whose rows have their own section of the results file (`--tls`): a full run
/// skips them and keeps that section; `--quick` runs them too, to check they work.
const SEPARATE: [&str; 2] = ["tls", "relay"];

/// Whether this run measures `name`.
fn selected(opts: &Opts, name: &str) -> bool {
    if let Some(only) = &opts.only {
        return only.iter().any(|x| x == name);
    }
    let separate = SEPARATE.contains(&name);
    if opts.tls {
        separate
    } else {
        opts.quick || !separate
    }
}

/// `text` with the part from `begin` to `end` replaced by `section` (or `section` added at the
/// end).
fn splice_marked(text: &str, begin: &str, end: &str, section: &str) -> String {
    match (text.find(begin), text.find(end)) {
        (Some(b), Some(e)) if e > b => {
            format!(
                "{}{section}{}",
                &text[..b],
                &text[e + end.len()..].trim_start_matches('\n')
            )
        }
        _ => format!("{}\n\n{section}", text.trim_end()),
    }
}

/// The part of `text` from `begin` to `end`, if it has one.
fn existing_marked<'a>(text: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let b = text.find(begin)?;
    let e = text.find(end)?;
    (e > b).then(|| &text[b..e + end.len()])
}

fn machine(opts: &Opts) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or("unknown".into(), |k| format!("{:.1} GiB", k as f64 / MIB));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let dv = docker(&["version", "--format", "{{.Server.Version}}"]).unwrap_or_else(|e| e);
    let root = repo_root();
    let commit =
        run(Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|_| "unknown".into());
    let dirty = run(Command::new("git").arg("-C").arg(&root).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "src",
        "Cargo.toml",
        "Cargo.lock",
    ]))
    .map(|s| {
        if s.is_empty() {
            ""
        } else {
            " (with uncommitted changes)"
        }
    })
    .unwrap_or("");
    let ws = opts
        .websocat
        .as_ref()
        .and_then(|p| run(Command::new(p).arg("--version")).ok())
        .unwrap_or_else(|| "not installed".into());
    // Other work on a shared machine moves the figures; say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "- CPU: {model}, {cores} cores available\n- RAM: {mem}\n- kernel: {kernel}\n- Docker engine: {dv}\n- supd commit: {commit}{dirty}\n- websocat: {ws}\n- load average at the start (1, 5, 15 min): {load}\n"
    )
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("supd-bench: {e}");
            std::process::exit(2);
        }
    };
    remove_bench_containers();
    let r = if opts.vm { bench_vm(opts) } else { bench(opts) };
    remove_bench_containers();
    if let Err(e) = r {
        eprintln!("supd-bench: {e}");
        std::process::exit(1);
    }
}

/// `--vm`: the VM rows, into their own section of the results file.
fn bench_vm(opts: Opts) -> Result<()> {
    if !opts.supd.is_file() {
        return Err(format!("no supd binary at {:?}", opts.supd));
    }
    let desc = machine(&opts);
    println!(
        "supd-bench --vm{}\n{desc}",
        if opts.quick { " --quick" } else { "" }
    );
    let mut t = Table {
        rows: Vec::new(),
        notes: Vec::new(),
    };
    vm::bench_vm(&opts, &mut t)?;
    for n in &t.notes {
        println!("- {n}");
    }
    if let Some(out) = &opts.out {
        let old = std::fs::read_to_string(out).unwrap_or_default();
        let text = vm::splice(&old, &vm::section(&desc, &t));
        std::fs::write(out, text).map_err(|e| format!("{out:?}: {e}"))?;
        println!("\nwritten to {}", out.display());
    }
    Ok(())
}

fn bench(mut opts: Opts) -> Result<()> {
    let mut sizes = Sizes::new(opts.quick);
    let mut notes = Vec::new();
    let nofile = sys::raise_nofile(1 << 20);
    // Each idle tunnel is two descriptors in supd (websocket, upstream) and two here (client,
    // the in-container server's end); both processes share this limit.
    let fit = (nofile.saturating_sub(300) / 2) as usize;
    if fit < sizes.idle_ws && selected(&opts, "idle-ws") {
        notes.push(format!(
            "The descriptor limit here is {nofile} and cannot be raised (no CAP_SYS_RESOURCE), \
             so the idle-websocket measure holds {fit} tunnels, not {}.",
            sizes.idle_ws
        ));
        sizes.idle_ws = fit;
    }
    if !opts.supd.is_file() {
        return Err(format!("no supd binary at {:?}", opts.supd));
    }
    let mut t = Table {
        rows: Vec::new(),
        notes,
    };
    let desc = machine(&opts);
    println!(
        "supd-bench{}\n{desc}",
        if opts.quick { " --quick" } else { "" }
    );

    // `--tls` has only its own rows; the binary, start-up and idle rows are the full run's.
    let whole = !opts.tls;
    if opts.tls {
        opts.websocat = None;
        sizes.ready_runs = 0;
    }
    let size = std::fs::metadata(&opts.supd)
        .map_err(|e| e.to_string())?
        .len();
    if whole {
        t.add(Row {
            measure: "release binary (stripped)".into(),
            supd: mib(size),
            target: "≤ 3 MiB".into(),
            verdict: Some(size <= 3 << 20),
            ..Row::default()
        });
    }

    eprintln!("bench: creating {} instances", sizes.instances);
    let ids = create_instances(sizes.instances)?;
    let target_id = ids[0].clone();
    let target_pid: u32 = docker(&["inspect", "-f", "{{.State.Pid}}", &target_id])?
        .parse()
        .map_err(|_| "container pid")?;
    let held = Arc::new(Mutex::new(Vec::new()));
    let listener = sys::listen_in_netns(
        target_pid,
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, TARGET_PORT)),
    )?;
    serve_target(listener, held.clone());

    let setup = Setup::new(&opts.supd)?;
    let mut ready = Vec::new();
    for i in 0..sizes.ready_runs {
        let (d, took) = setup.start_supd(&opts.supd, i)?;
        ready.push(took);
        drop(d);
    }
    let ready = sorted(ready);
    t.add_if(
        whole,
        Row {
            measure: format!(
                "start to READY (sd_notify), {} managed containers",
                sizes.instances
            ),
            supd: lat(&ready),
            target: "≤ 100 ms".into(),
            verdict: Some(pct(&ready, 0.5) <= Duration::from_millis(100)),
            ..Row::default()
        },
    );

    let (daemon, _) = setup.start_supd(&opts.supd, 1000)?;
    thread::sleep(Duration::from_millis(500));
    let idle = rss_kib(daemon.proc.0.id()) * 1024;

    let websocat = match &opts.websocat {
        Some(path) => {
            // websocat runs in the container's network namespace: its client side and its
            // upstream both go over that namespace's loopback, like raw TCP's one hop.
            let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, WEBSOCAT_PORT));
            let mut cmd = Command::new("nsenter");
            cmd.args(["-t", &target_pid.to_string(), "-n", "--"])
                .arg(path)
                .args([
                    "--binary",
                    &format!("ws-l:{addr}"),
                    &format!("tcp:127.0.0.1:{TARGET_PORT}"),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            sys::die_with_parent(&mut cmd);
            let p = Proc(cmd.spawn().map_err(|e| format!("websocat: {e}"))?);
            let deadline = Instant::now() + Duration::from_secs(10);
            while sys::connect_in_netns(target_pid, addr).is_err() {
                if Instant::now() > deadline {
                    return Err("websocat did not listen".into());
                }
                thread::sleep(Duration::from_millis(20));
            }
            thread::sleep(Duration::from_millis(500));
            Some((p, addr))
        }
        None => None,
    };
    let ws_idle = websocat.as_ref().map(|(p, _)| rss_kib(p.0.id()) * 1024);
    t.add_if(
        whole,
        Row {
            measure: "idle RSS after start-up".into(),
            supd: mib(idle),
            peer: if ws_idle.is_some() {
                "websocat server"
            } else {
                "websocat (not installed)"
            }
            .into(),
            peer_figure: ws_idle.map(mib).unwrap_or_default(),
            ratio: ws_idle
                .map(|w| times(w as f64 / idle as f64))
                .unwrap_or_default(),
            target: "≤ 4 MiB".into(),
            verdict: Some(idle <= 4 << 20),
        },
    );

    let c = Ctx {
        sizes,
        setup,
        supd: daemon.addr,
        supd_pid: daemon.proc.0.id(),
        target_id,
        target_pid,
        websocat,
        held,
        opts,
    };
    for (name, m) in MEASURES {
        if !selected(&c.opts, name) {
            continue;
        }
        eprintln!("bench: {name}");
        if let Err(e) = m(&c, &mut t) {
            t.fail(name, e);
        }
    }
    let alive = c.setup.dir.join("supd.log");
    let log = std::fs::read_to_string(&alive).unwrap_or_default();
    let panicked = log.contains("panicked");

    let md = format!(
        "# supd benchmark results\n\nMeasured by `scripts/bench.sh` (`cargo run --release -p supd-bench`) in one run on:\n\n{desc}\n{}\n## How\n\n{}\n{}",
        t.markdown(),
        METHOD,
        if t.notes.is_empty() {
            String::new()
        } else {
            format!(
                "\n## Notes from this run\n\n{}\n",
                t.notes
                    .iter()
                    .map(|n| format!("- {n}\n"))
                    .collect::<String>()
            )
        }
    );
    if !t.notes.is_empty() {
        println!("\nnotes:");
        for n in &t.notes {
            println!("- {n}");
        }
    }
    if let Some(out) = &c.opts.out {
        let old = std::fs::read_to_string(out).unwrap_or_default();
        let md = if c.opts.tls {
            splice_marked(&old, tls::BEGIN, tls::END, &tls::section(&desc, &t))
        } else {
            // The VM and TLS rows come from their own runs (`--vm`, `--tls`): kept as they are.
            let mut md = md;
            if let Some(section) = vm::existing(&old) {
                md = vm::splice(&md, section);
            }
            if let Some(section) = existing_marked(&old, tls::BEGIN, tls::END) {
                md = splice_marked(&md, tls::BEGIN, tls::END, section);
            }
            md
        };
        std::fs::write(out, md).map_err(|e| format!("{out:?}: {e}"))?;
        println!("\nwritten to {}", out.display());
    }
    drop(c);
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("supd-bench-{}", std::process::id())),
    );
    if panicked {
        return Err("supd panicked during the run".into());
    }
    if t.rows.iter().any(|r| r.supd.starts_with("error")) {
        return Err("some measures failed (see notes)".into());
    }
    Ok(())
}

const METHOD: &str = "\
- Every figure is measured in this run; latencies are median / p99 over the samples. \
\"supd advantage\" is peer ÷ supd for latencies and supd ÷ peer for rates and sizes: above 1 \
supd is better.
- The client is the bench's own raw-socket HTTP/1.1 and websocket code (masked frames), the \
same for supd and every peer; supd is reached over loopback TCP, Docker over its unix socket.
- supd runs with its defaults except `limits.max-connections: 30000`, \
`limits.connections-per-token: 30000` (the bench holds all its sessions with one token) and \
`websocket.ping-interval-ms: 600000` (so 10,000 websockets fit and drained sessions are not \
pinged), logging at its default level to a file.
- The containers are `supd-test-busybox:latest` running `sleep 3600`, labelled as instances \
`s-1`..`s-N` of application `bench`; instance `s-1` is the target of exec and tunnels.
- one-shot exec: supd is a fresh TCP connection + `POST …/exec {\"cmd\":\"true\"}` read to the \
end of its JSON; the Docker API peer is `POST /containers/{id}/exec` then `POST /exec/{id}/start` \
read to EOF, each on a fresh unix connection; `docker exec` and `nsenter` are whole processes.
- interactive: a connected socket, the clock starts as the upgrade request is written and stops \
at the first non-empty output frame of `echo hi` (tty=true); `docker exec -it … echo hi` is run \
with a fresh PTY as its controlling terminal, clock from spawn to the first byte on the master.
- state: each connection sends requests back to back for a fixed time on its own thread; the \
Docker peer is `/containers/json` with the label filter of the application (list) or of the \
instance (get). With 32 connections client threads share the machine's cores with the server.
- tunnels: a server inside the target container's network namespace (threads of the bench \
that entered it) sinks, sources or echoes on 127.0.0.1:5001 there. Raw TCP is a socket the \
bench opened inside that namespace to it (one loopback hop); supd's tunnel is \
`connect?protocol=tcp&port=5001` (host loopback to supd, then the container's loopback); \
websocat is `nsenter -t PID -n websocat --binary ws-l:127.0.0.1:5002 tcp:127.0.0.1:5001`, \
reached by a socket opened inside the namespace (two loopback hops, like supd). Throughput: 64 KiB writes/frames, median of \
several runs; round trip: 1 byte out, 1 byte back.
- sessions: each runs `sh -c 'while :; do echo <32 bytes>; read -t 0.1 x; done'` on a PTY \
(about 10 lines a second each) and a bench thread drains it; RSS is read from /proc after 1 s, \
then one connection sends state gets back to back. Idle websockets are connect tunnels to a \
server that holds the connection.
- start to READY: from spawning supd to its `READY=1` datagram on a socket the bench owns \
(`NOTIFY_SOCKET`), with the instances already running.
- forwarded (`site=`, issue 12): two more supd daemons on the same engine and instances: B, with \
a plain and a TLS listener (certificates from `scripts/make-test-ca.sh`, EC P-256), and A, whose \
`sites:` reach B as `http://` and as `https://` with `ca-file`. Each request goes to B directly \
or to A with `site=…`; A connects to B afresh for every request it forwards (over https: a TLS \
handshake each time; rustls' default session cache allows resumption). State get: one \
keep-alive connection to the supd asked; exec: a fresh connection each. Tunnels: as above, \
through A with `site=…` (three loopback hops and two relays: client → A → B → container) \
against B's own tunnel and raw TCP.
";

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(quick: bool, tls: bool, only: Option<&str>) -> Opts {
        Opts {
            quick,
            supd: PathBuf::new(),
            websocat: None,
            out: None,
            only: only.map(|o| o.split(',').map(str::to_string).collect()),
            vm: false,
            tls,
        }
    }

    #[test]
    fn the_tls_rows_run_in_their_own_run_and_in_quick() {
        let full = opts(false, false, None);
        assert!(selected(&full, "exec") && !selected(&full, "tls") && !selected(&full, "relay"));
        let tls = opts(false, true, None);
        assert!(!selected(&tls, "exec") && selected(&tls, "tls") && selected(&tls, "relay"));
        let quick = opts(true, false, None);
        assert!(selected(&quick, "exec") && selected(&quick, "relay"));
        let only = opts(false, true, Some("relay"));
        assert!(!selected(&only, "tls") && selected(&only, "relay"));
    }

    #[test]
    fn a_full_run_keeps_the_tls_section() {
        let section = format!("{}\nold rows\n{}\n", tls::BEGIN, tls::END);
        let old = format!("# results\n\nold table\n\n{section}");
        let kept = existing_marked(&old, tls::BEGIN, tls::END).unwrap();
        let new = splice_marked("# results\n\nnew table\n", tls::BEGIN, tls::END, kept);
        assert!(new.contains("new table") && new.contains("old rows"));
        assert!(!new.contains("old table"));
        // A later --tls run replaces the section only.
        let again = splice_marked(&new, tls::BEGIN, tls::END, "NEW SECTION\n");
        assert!(again.contains("new table") && again.contains("NEW SECTION"));
        assert!(!again.contains("old rows"));
    }
}
