//! The Docker engine restarted under a running `supd`: state answers 503 while the engine is
//! away and resyncs when it is back, and sessions already open carry on.
//!
//! The machine's shared engine is used by other tests at the same time, so this test starts a
//! private `dockerd` of its own (its own socket, data and exec roots, containerd namespaces,
//! a bridge of its own, `--live-restore` so its containers outlive it) and kills and restarts
//! that one.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use tungstenite::Message;

/// A private Docker engine, stopped and wiped on drop, with whatever it runs.
struct PrivateDocker {
    dir: TempDir,
    ns: String,
    bridge: String,
    child: Option<Child>,
}

impl PrivateDocker {
    fn new() -> PrivateDocker {
        // Short paths: the engine puts unix sockets under its exec root (108-byte limit).
        let dir = TempDir(PathBuf::from(format!("/tmp/sdr-{}", std::process::id())));
        std::fs::create_dir_all(dir.path()).unwrap();
        std::fs::write(dir.path().join("daemon.json"), "{}").unwrap();
        // A bridge of its own: with `--bridge=none` a 20.10 engine deletes `docker0` at start
        // (`removeDefaultBridgeInterface`), which cuts every other test's containers off.
        let pid = std::process::id();
        let bridge = format!("sdrbr{}", pid % 100_000);
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        for args in [
            vec!["link", "add", &bridge, "type", "bridge"],
            vec!["addr", "add", "10.231.77.1/24", "dev", &bridge],
            vec!["link", "set", &bridge, "up"],
        ] {
            let st = Command::new("ip").args(&args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        }
        let mut d = PrivateDocker {
            ns: format!("supd-test-{pid}"),
            dir,
            bridge,
            child: None,
        };
        d.start();
        d
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn start(&mut self) {
        assert!(
            self.spawn(),
            "private dockerd did not come up:\n{}",
            self.log()
        );
    }

    /// Start the engine and wait for it to answer; false if it does not.
    fn spawn(&mut self) -> bool {
        let p = self.dir.path();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(p.join("dockerd.log"))
            .unwrap();
        let child = Command::new("dockerd")
            .arg(format!("--host={}", self.host()))
            .arg(format!("--config-file={}", p.join("daemon.json").display()))
            .arg(format!("--data-root={}", p.join("data").display()))
            .arg(format!("--exec-root={}", p.join("x").display()))
            .arg(format!("--pidfile={}", p.join("docker.pid").display()))
            .arg(format!("--bridge={}", self.bridge))
            .args(["--iptables=false", "--ip6tables=false", "--ip-masq=false"])
            .arg("--containerd=/run/containerd/containerd.sock")
            .arg(format!("--containerd-namespace={}", self.ns))
            .arg(format!(
                "--containerd-plugins-namespace={}-plugins",
                self.ns
            ))
            .arg("--live-restore")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start a private dockerd");
        self.child = Some(child);
        eventually(Duration::from_secs(60), || {
            Command::new("docker")
                .args(["-H", &self.host(), "info"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// Kill the engine the hard way (its containers live on: live restore).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .args(["-H", &self.host()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn run_echo(&self, app: &str, svc: &str) -> String {
        let mut args = vec!["run".to_string(), "-d".into()];
        args.extend(managed_args(app, svc, &["--network", "none"], ECHO));
        self.docker(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

impl Drop for PrivateDocker {
    fn drop(&mut self) {
        // Killed (the test failed while it was away): its containers still run under
        // containerd; bring it back to remove them.
        if self.child.is_none() {
            self.spawn();
        }
        if self.child.is_some() {
            let ids = Command::new("docker")
                .args(["-H", &self.host(), "ps", "-aq"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for id in ids.split_whitespace() {
                let _ = Command::new("docker")
                    .args(["-H", &self.host(), "rm", "-f", "-v", id])
                    .output();
            }
            if let Some(mut c) = self.child.take() {
                let _ = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .status();
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while std::time::Instant::now() < deadline {
                    if c.try_wait().ok().flatten().is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("---- private dockerd log ----\n{}", self.log());
        }
        // Anything the engine mounted under its roots must go before the files can.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let root = self.dir.path().display().to_string();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&root))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        for ns in [self.ns.clone(), format!("{}-plugins", self.ns)] {
            let _ = Command::new("ctr").args(["namespaces", "rm", &ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

fn echo_through(ws: &mut Ws, frame: Vec<u8>, want: &str) {
    ws.send(Message::binary(frame)).unwrap();
    ws_read_until(ws, &mut Vec::new(), want);
}

fn instance_state(supd: &Supd, app: &str, svc: &str) -> HttpResponse {
    supd.get(&instance_path(app, svc), ADMIN_TOKEN)
}

#[test]
fn docker_engine_restart_resyncs_state_and_keeps_sessions() {
    ensure_image();
    let mut engine = PrivateDocker::new();
    let save = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker save {IMAGE} | docker -H {} load",
            engine.host()
        ))
        .output()
        .unwrap();
    assert!(
        save.status.success(),
        "loading the image: {}",
        String::from_utf8_lossy(&save.stderr)
    );
    let app = unique("dockerrestart");
    engine.run_echo(&app, "web");

    let supd = Supd::start_with(SupdOptions {
        docker_socket: Some(engine.socket()),
        ..Default::default()
    });
    wait_instance(&supd, &app, "web");
    let mut ix = ws_client(
        supd.addr,
        &interactive_path(&app, "cat", false),
        INTERACTIVE,
    );
    let mut tun = ws_client(supd.addr, &connect_path(&app, 7), CONNECT);
    echo_through(&mut ix, b"\x10before\n".to_vec(), "before\n");
    echo_through(&mut tun, b"tunnel before\n".to_vec(), "tunnel before\n");

    engine.kill();
    supd.wait_until(Duration::from_secs(20), || {
        let r = instance_state(&supd, &app, "web");
        r.status == 503 && r.error_message().contains("runtime unavailable")
    });
    // The sessions do not need the engine.
    echo_through(&mut ix, b"\x10while away\n".to_vec(), "while away\n");
    echo_through(&mut tun, b"tunnel away\n".to_vec(), "tunnel away\n");
    assert_healthy_on_list(&supd);

    engine.start();
    engine.run_echo(&app, "late");
    supd.wait_until(Duration::from_secs(30), || {
        let a = instance_state(&supd, &app, "web");
        let b = instance_state(&supd, &app, "late");
        a.status == 200
            && a.json()["containers"][0]["oper-status"] == "running"
            && b.status == 200
            && b.json()["containers"][0]["oper-status"] == "running"
    });
    echo_through(&mut ix, b"\x10after\n".to_vec(), "after\n");
    echo_through(&mut tun, b"tunnel after\n".to_vec(), "tunnel after\n");

    // New sessions work against the restarted engine's mirror too.
    let mut again = ws_client(supd.addr, &connect_path(&app, 7), CONNECT);
    echo_through(&mut again, b"new\n".to_vec(), "new\n");
}

/// The list endpoint answers (503 or 200, with a body) while the engine is away: the loop is
/// not stuck on it.
fn assert_healthy_on_list(supd: &Supd) {
    let r = supd.get("/v1/state/applications/none/service-instances", ADMIN_TOKEN);
    assert!(r.status == 200 || r.status == 503, "{}", r.text());
    if r.status == 503 {
        assert!(r.error_message().contains("runtime unavailable"));
    }
}
