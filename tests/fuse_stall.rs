//! A container that mounts a FUSE file system over its own `/dev/pts` whose daemon never
//! answers a LOOKUP (attacks2/fuse-ptmx-stall): an exec-interactive with a terminal makes supd
//! look up `dev/pts/ptmx` there. The lookup must not happen on supd's one loop thread: other
//! clients keep their answers while the session waits, the session fails within its bound,
//! and the helper that was stuck in the kernel is reaped once the container goes.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Built from tests/fixtures/fuse/fusehang.c (the red team's daemon, raw FUSE protocol).
/// Its tag changes with the fixture (v2: the mount point as an argument).
const FUSE_IMAGE: &str = "supd-test-fusehang:v2";

/// `cc -static` the daemon and put it on the busybox image as the entrypoint.
fn ensure_fuse_image() {
    let ok = Command::new("docker")
        .args(["image", "inspect", FUSE_IMAGE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return;
    }
    ensure_image();
    let ctx = TempDir::new();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuse/fusehang.c");
    let st = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(ctx.path().join("fusehang"))
        .arg(&source)
        .status()
        .unwrap();
    assert!(st.success(), "cc -static fusehang.c");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {IMAGE}\nCOPY fusehang /fusehang\nENTRYPOINT [\"/fusehang\"]\n"),
    )
    .unwrap();
    let out = Command::new("docker")
        .args(["build", "-q", "-t", FUSE_IMAGE])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One state GET on its own connection; how long the answer took (`None`: no answer within
/// `limit`).
fn timed_get(addr: SocketAddr, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(limit)).unwrap();
    let req = format!(
        "GET /v1/state/applications/{}/service-instances HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {READER_TOKEN}\r\nConnection: close\r\n\r\n",
        unique("other")
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if started.elapsed() > limit {
            return None;
        }
    }
    Some(started.elapsed())
}

/// Removes the container when dropped. Declared after the [`Supd`], so it goes first even when
/// the test fails: a supd asleep in the FUSE request (the bug) dies only once the container's
/// FUSE connection is gone, and dropping it first would wait forever.
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn a_fuse_mount_over_dev_pts_does_not_stall_the_loop() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "this test needs /dev/fuse on the host"
    );
    ensure_fuse_image();
    let cs = Containers::new("fuse-stall");
    let supd = Supd::start();
    let app = unique("fusey");
    let id = managed(
        &cs,
        &app,
        "web",
        &["--cap-add", "SYS_ADMIN", "--device", "/dev/fuse"],
        &[FUSE_IMAGE],
    );
    let _remove = RemoveOnDrop(id.clone());
    // The daemon has mounted over /dev/pts.
    supd.wait_until(Duration::from_secs(20), || {
        let out = Command::new("docker").args(["logs", &id]).output().unwrap();
        String::from_utf8_lossy(&out.stderr).contains("mounted over /dev/pts")
    });
    // Execs without a terminal work (the mirror has the container running).
    supd.wait_until(Duration::from_secs(20), || {
        let body = serde_json::json!({ "cmd": "true" }).to_string();
        let path = format!("{}/containers/web/exec", instance_path(&app, "web"));
        supd.post_json(&path, ADMIN_TOKEN, &body).status == 200
    });
    assert!(timed_get(supd.addr, Duration::from_secs(2)).is_some());

    // Another client polls the state the whole time the session is pending.
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(Mutex::new(Duration::ZERO));
    let poller = {
        let (stop, worst, addr) = (Arc::clone(&stop), Arc::clone(&worst), supd.addr);
        std::thread::spawn(move || {
            let mut answered = 0;
            while !stop.load(Ordering::Relaxed) {
                let took = timed_get(addr, Duration::from_secs(3)).unwrap_or(Duration::MAX);
                let mut w = worst.lock().unwrap();
                *w = (*w).max(took);
                drop(w);
                answered += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            answered
        })
    };
    let started = Instant::now();
    // In a thread of its own: without an answer (the loop asleep) the handshake panics after
    // its 30 s read timeout, and the GETs' latency is the failure to report.
    let path = interactive_path(&app, "sh", true);
    let addr = supd.addr;
    let session = std::thread::spawn(move || handshake_status(addr, &path, INTERACTIVE)).join();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let polls = poller.join().unwrap();
    let worst = *worst.lock().unwrap();
    assert!(
        worst < Duration::from_millis(200),
        "a state GET took {worst:?} while the session was pending (Duration::MAX: no answer)"
    );
    assert!(polls >= 10, "only {polls} state GETs during {took:?}");
    let (status, body) = session.expect("the session got an answer");
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("ptmx"), "{body}");
    assert!(
        took < Duration::from_secs(8),
        "the session failed after {took:?}"
    );
    let daemon = Command::new("docker").args(["logs", &id]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&daemon.stderr).contains("LOOKUP ptmx"),
        "the FUSE daemon never saw the lookup: the attack did not happen"
    );

    // The helper still asleep in the FUSE request holds none of supd's descriptors (its
    // listening socket would keep a restarted supd from binding): only its stdio, the answer
    // socket (3) and the container's root it is looking in (4).
    let helpers = supd.children();
    assert!(
        !helpers.is_empty(),
        "no helper left asleep in the FUSE lookup"
    );
    for pid in helpers {
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            fds.iter().all(|fd| fd.parse::<u32>().is_ok_and(|n| n <= 4)),
            "helper {pid} holds descriptors {fds:?}"
        );
    }

    // The helper asleep in the FUSE request dies with the container's FUSE connection and
    // is reaped: nothing is left behind.
    docker(&["rm", "-f", &id]);
    supd.wait_until(Duration::from_secs(10), || {
        let _ = timed_get(supd.addr, Duration::from_secs(1));
        supd.children().is_empty()
    });
    assert!(timed_get(supd.addr, Duration::from_secs(1)).is_some());
}

/// A VM launcher with a FUSE file system over /run/supd-vm whose daemon never answers a
/// lookup (attacks3/fuse-helper-leak): every helper that looks for a socket there sleeps in
/// the kernel, unkillable, for as long as the launcher lives. supd forks at most a few per
/// container (and a bounded number in all), refuses the rest at once (503), and keeps serving
/// everything else: before the bound, console requests with takeover=true piled up helpers
/// until supd could not fork.
#[test]
fn a_launcher_whose_file_system_hangs_gets_a_bounded_number_of_helpers() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "this test needs /dev/fuse on the host"
    );
    ensure_fuse_image();
    let cs = Containers::new("fuse-vm");
    let supd = Supd::start();
    let app = unique("fusevm");
    let id = managed(
        &cs,
        &app,
        "vm",
        &[
            "--cap-add",
            "SYS_ADMIN",
            "--device",
            "/dev/fuse",
            "--label",
            "io.supd.vm-container=true",
        ],
        &[FUSE_IMAGE, "/run/supd-vm"],
    );
    let _remove = RemoveOnDrop(id.clone());
    supd.wait_until(Duration::from_secs(20), || {
        let out = Command::new("docker").args(["logs", &id]).output().unwrap();
        String::from_utf8_lossy(&out.stderr).contains("mounted over /run/supd-vm")
    });
    let victim_app = unique("victim");
    managed(&cs, &victim_app, "web", &[], SLEEPER);
    let victim = || {
        let body = serde_json::json!({ "cmd": "echo hi" }).to_string();
        let path = format!("{}/containers/web/exec", instance_path(&victim_app, "web"));
        supd.post_json(&path, ADMIN_TOKEN, &body).status
    };
    supd.wait_until(Duration::from_secs(20), || victim() == 200);

    let path = format!(
        "/v1/state/applications/{app}/service-instances/vm-1/vm-container/console?takeover=true"
    );
    let addr = supd.addr;
    let sessions: Vec<_> = (0..30)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || handshake_status(addr, &path, "v1.console.supd"))
        })
        .collect();
    let statuses: Vec<u16> = sessions.into_iter().map(|t| t.join().unwrap().0).collect();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert!(
        statuses.iter().all(|s| [503, 504].contains(s)),
        "{statuses:?}"
    );
    assert!(
        refused >= 25,
        "only {refused} refused at once: {statuses:?}"
    );
    // Asleep in the FUSE lookup: at most the per-container bound (the agent's watch among them).
    let stuck = supd.children().len();
    assert!((1..=4).contains(&stuck), "{stuck} helpers");
    assert_eq!(victim(), 200, "supd still forks for everyone else");
    assert!(timed_get(supd.addr, Duration::from_secs(2)).is_some());
    // Once the launcher goes, its helpers die and are reaped.
    docker(&["rm", "-f", &id]);
    supd.wait_until(Duration::from_secs(15), || {
        let _ = timed_get(supd.addr, Duration::from_secs(1));
        supd.children().is_empty()
    });
}
