//! A private Docker engine for tests that must not touch the shared one (restart it, run a
//! second site on it): its own socket, data and exec roots, containerd namespaces and bridge.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;

/// A private Docker engine, stopped and wiped on drop, with whatever it runs.
pub struct PrivateDocker {
    dir: TempDir,
    ns: String,
    bridge: String,
    child: Option<Child>,
    /// `--live-restore` (containers outlive the engine); Swarm mode refuses it.
    live_restore: bool,
}

impl PrivateDocker {
    /// `tag` (three letters) names its directory and bridge; `subnet` is the third octet of
    /// its bridge's 10.231.x.0/24, unique per test binary (two engines may run at once).
    pub fn new(tag: &str, subnet: u8) -> PrivateDocker {
        PrivateDocker::with_live_restore(tag, subnet, true)
    }

    /// The same, with or without `--live-restore` (a swarm needs it off).
    pub fn with_live_restore(tag: &str, subnet: u8, live_restore: bool) -> PrivateDocker {
        // Short paths: the engine puts unix sockets under its exec root (108-byte limit).
        let dir = TempDir(PathBuf::from(format!("/tmp/{tag}-{}", std::process::id())));
        std::fs::create_dir_all(dir.path()).unwrap();
        std::fs::write(dir.path().join("daemon.json"), "{}").unwrap();
        // A bridge of its own: with `--bridge=none` a 20.10 engine deletes `docker0` at start
        // (`removeDefaultBridgeInterface`), which cuts every other test's containers off.
        let pid = std::process::id();
        let bridge = format!("{tag}br{}", pid % 100_000);
        let address = format!("10.231.{subnet}.1/24");
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        for args in [
            vec!["link", "add", &bridge, "type", "bridge"],
            vec!["addr", "add", &address, "dev", &bridge],
            vec!["link", "set", &bridge, "up"],
        ] {
            let st = Command::new("ip").args(&args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        }
        let mut d = PrivateDocker {
            ns: format!("supd-test-{tag}-{pid}"),
            dir,
            bridge,
            child: None,
            live_restore,
        };
        d.start();
        d
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn start(&mut self) {
        assert!(
            self.spawn(),
            "private dockerd did not come up:\n{}",
            self.log()
        );
    }

    /// Start the engine and wait for it to answer; false if it does not.
    pub fn spawn(&mut self) -> bool {
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
            .args(self.live_restore.then_some("--live-restore"))
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
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    pub fn docker(&self, args: &[&str]) -> String {
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

    pub fn run_echo(&self, app: &str, svc: &str) -> String {
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

impl PrivateDocker {
    /// Load the shared engine's test image into this one (no registry).
    pub fn load_test_image(&self) {
        ensure_image();
        let mut save = Command::new("docker")
            .args(["save", IMAGE])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let st = Command::new("docker")
            .args(["-H", &self.host(), "load", "-q"])
            .stdin(save.stdout.take().unwrap())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(save.wait().unwrap().success(), "docker save");
        assert!(st.success(), "docker load into the private engine");
    }
}
