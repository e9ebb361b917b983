//! VM containers against a real virtual machine: the test VM image (`supd-test-vm:local`,
//! QEMU with a busybox + qemu-ga guest, TCG) booted ONCE for this test binary, with one supd
//! in front of it (the guest agent serves one client). Tests that use the VM's single
//! terminal port, its console or restart its agent take the VM alone (`alone()`); the others
//! share it (`shared()`).
//!
//! Run it with `cargo test --test vm` (one process: nextest would boot a VM per test).

mod common;

use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tungstenite::Message;

const VM_IMAGE: &str = "supd-test-vm:local";
/// The exec output cap of the fixture's supd (small, so truncation is quick to reach).
const CAP: usize = 64 * 1024;

struct Fixture {
    supd: Supd,
    app: String,
    _cs: Containers,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();
static VM: RwLock<()> = RwLock::new(());
static CLEANUP_LABEL: OnceLock<String> = OnceLock::new();
static SUPD_PID: OnceLock<u32> = OnceLock::new();

/// At the test process's exit (statics are never dropped): the VM and supd go.
extern "C" fn cleanup() {
    if let Some(pid) = SUPD_PID.get() {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .output();
    }
    if let Some(label) = CLEANUP_LABEL.get() {
        let ids = docker(&["ps", "-aq", "--filter", &format!("label=supd.test={label}")]);
        for id in ids.split_whitespace() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", id])
                .output();
        }
    }
}

fn ensure_vm_image() {
    let ok = std::process::Command::new("docker")
        .args(["image", "inspect", VM_IMAGE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        let st = std::process::Command::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-test-vm.sh"),
        )
        .status()
        .expect("run build-test-vm.sh");
        assert!(st.success(), "building the test VM image failed");
    }
}

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        ensure_vm_image();
        let cs = Containers::new("vm");
        let _ = CLEANUP_LABEL.set(cs.label.clone());
        // SAFETY: `cleanup` is an `extern "C" fn()` that only runs commands; registering it
        // has no other effect.
        unsafe { libc::atexit(cleanup) };
        let app = unique("vm");
        let mut args: Vec<String> = vec!["-e".into(), "SUPD_VM_ACCEL=tcg".into()];
        args.extend(instance_labels(&app, "guest"));
        args.push(VM_IMAGE.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cs.run(&args);
        let dir = TempDir::new();
        let supd = start_with_config(&dir, &format!("exec:\n  output-cap: {CAP}\n"));
        std::mem::forget(dir);
        let _ = SUPD_PID.set(supd.pid());
        let fx = Fixture { supd, app, _cs: cs };
        // Boot under TCG on a loaded machine: up to a minute and a half.
        let started = Instant::now();
        fx.supd.wait_until(Duration::from_secs(120), || {
            fx.state()["vm-container"]["agent"] == "connected"
        });
        eprintln!("test VM: agent connected after {:?}", started.elapsed());
        fx
    })
}

fn shared() -> (&'static Fixture, RwLockReadGuard<'static, ()>) {
    let fx = fixture();
    (fx, VM.read().unwrap_or_else(|e| e.into_inner()))
}

fn alone() -> (&'static Fixture, RwLockWriteGuard<'static, ()>) {
    let fx = fixture();
    (fx, VM.write().unwrap_or_else(|e| e.into_inner()))
}

impl Fixture {
    fn base(&self) -> String {
        format!(
            "/v1/state/applications/{}/service-instances/guest-1",
            self.app
        )
    }

    fn state(&self) -> Value {
        self.supd.get_json(&self.base()).1
    }

    fn exec_raw(&self, cmd: &str, accept: Option<&str>) -> HttpResponse {
        let body = serde_json::json!({ "cmd": cmd }).to_string();
        let mut c = self.supd.connect();
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let mut headers = vec![
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        if let Some(a) = accept {
            headers.push(("Accept", a));
        }
        c.send(
            "POST",
            &format!("{}/vm-container/exec", self.base()),
            &headers,
            body.as_bytes(),
        );
        c.read_response(false)
    }

    /// A command's answer (status 200 checked).
    fn exec(&self, cmd: &str) -> Value {
        let r = self.exec_raw(cmd, None);
        assert_eq!(r.status, 200, "{cmd}: {}", r.text());
        r.json()
    }

    /// Whether a process whose command line has `needle` runs in the guest.
    fn guest_has(&self, needle: &str) -> bool {
        // `ps` shows itself; the pattern is split so that its own line never matches.
        let (a, b) = needle.split_at(needle.len() / 2);
        let out = self.exec(&format!(
            "sh -c \"ps -o args | grep '{a}''{b}' | grep -v grep\""
        ));
        out["output"].as_str().unwrap_or("").contains(needle)
    }

    fn ws(&self, what: &str, query: &str, proto: &str) -> Result<Ws, (u16, String)> {
        let path = format!("{}/vm-container/{what}{query}", self.base());
        try_ws(self.supd.addr, &path, ADMIN_TOKEN, proto).map(|(ws, _)| ws)
    }
}

fn enc(s: &str) -> String {
    encode(s)
}

#[test]
fn exec_answers_output_exit_codes_signals_and_quoting() {
    let (fx, _g) = shared();
    let v = fx.exec("uname -n");
    assert_eq!(v["output"], "supd-test-vm\n");
    assert_eq!(v["exit-code"], 0);
    // stdout and stderr merged in the order written.
    let v = fx.exec("sh -c 'echo out; echo err >&2; echo out2; exit 7'");
    assert_eq!(v["output"], "out\nerr\nout2\n");
    assert_eq!(v["exit-code"], 7);
    let v = fx.exec("sh -c 'kill -TERM $$'");
    assert_eq!(v["signal"], 15, "{v}");
    assert!(v.get("exit-code").is_none());
    // Words as the container exec splits them, reaching the guest unchanged.
    let v = fx.exec(r#"printf '[%s]' 'a  b' "c'd" e\ f '$HOME' '*'"#);
    assert_eq!(v["output"], "[a  b][c'd][e f][$HOME][*]");
    let v = fx.exec("no-such-command here");
    assert_eq!(v["exit-code"], 127, "{v}");
    assert!(v["output"].as_str().unwrap().contains("not found"), "{v}");
    // The raw-bytes variant.
    let r = fx.exec_raw(
        "sh -c 'printf \"\\001\\002\\377\"; exit 3'",
        Some("application/octet-stream"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, [1u8, 2, 0xff]);
    assert_eq!(r.header("supd-exit-code"), Some("3"));
}

#[test]
fn exec_output_is_capped_and_marked_truncated() {
    let (fx, _g) = shared();
    let v = fx.exec(&format!(
        "sh -c 'head -c {} /dev/zero | tr \"\\0\" x'",
        CAP * 3
    ));
    assert_eq!(v["exit-code"], 0);
    assert_eq!(v["truncated"], true);
    let out = v["output"].as_str().unwrap();
    assert_eq!(out.len(), CAP);
    assert!(out.bytes().all(|b| b == b'x'));
    // Just under the cap: whole, not truncated.
    let v = fx.exec(&format!(
        "sh -c 'head -c {} /dev/zero | tr \"\\0\" y'",
        CAP - 10
    ));
    assert_eq!(v["output"].as_str().unwrap().len(), CAP - 10);
    assert!(v.get("truncated").is_none(), "{v}");
}

#[test]
fn a_client_that_leaves_gets_its_guest_process_killed() {
    let (fx, _g) = shared();
    let body = serde_json::json!({ "cmd": "sleep 4242" }).to_string();
    let mut c = fx.supd.connect();
    c.send_json(
        &format!("{}/vm-container/exec", fx.base()),
        ADMIN_TOKEN,
        body.as_bytes(),
    );
    fx.supd
        .wait_until(Duration::from_secs(30), || fx.guest_has("sleep 4242"));
    drop(c);
    // TERM at once, KILL after the grace period (2 s): gone well within 15 s.
    fx.supd
        .wait_until(Duration::from_secs(15), || !fx.guest_has("sleep 4242"));
}

#[test]
fn the_state_shows_the_vm_and_its_guest() {
    let (fx, _g) = shared();
    let si = fx.state();
    let vm = &si["vm-container"];
    assert_eq!(vm["agent"], "connected", "{si}");
    assert_eq!(vm["oper-status"], "running");
    assert_eq!(vm["guest-os"]["id"], "supd-test-vm", "{vm}");
    assert!(
        vm["guest-os"]["kernel-release"]
            .as_str()
            .unwrap_or("")
            .contains("cloud-amd64"),
        "{vm}"
    );
    let ips: Vec<&str> = vm["ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(ips.contains(&"10.0.2.15/24"), "{vm}");
    // The launcher is the VM, not one of the containers.
    assert!(si["containers"].as_array().unwrap().is_empty(), "{si}");
}

#[test]
fn an_interactive_shell_types_resizes_interrupts_and_exits() {
    let (fx, _g) = alone();
    let mut ws = fx
        .ws(
            "exec-interactive",
            &format!("?cmd={}&tty=true", enc("sh")),
            INTERACTIVE,
        )
        .unwrap_or_else(|(s, b)| panic!("{s}: {b}"));
    let send = |ws: &mut Ws, bytes: &[u8]| {
        let mut f = vec![0x10];
        f.extend_from_slice(bytes);
        ws.send(Message::binary(f)).unwrap();
    };
    let mut out = Vec::new();
    send(&mut ws, b"echo typed-$((6*7))\n");
    ws_read_until(&mut ws, &mut out, "typed-42");
    // A resize reaches the guest's terminal.
    ws.send(Message::binary(b"\x11{\"h\":50,\"w\":200}".to_vec()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    out.clear();
    send(&mut ws, b"stty size\n");
    ws_read_until(&mut ws, &mut out, "50 200");
    // Ctrl-C ends the foreground command, the shell goes on.
    send(&mut ws, b"sleep 600\n");
    std::thread::sleep(Duration::from_millis(800));
    send(&mut ws, b"\x03");
    out.clear();
    send(&mut ws, b"echo after-$((1+1))\n");
    ws_read_until(&mut ws, &mut out, "after-2");
    send(&mut ws, b"exit 3\n");
    let (_, code, reason) = ws_until_close(&mut ws);
    assert_eq!((code, reason.as_str()), (1000, "{\"exit-code\":3}"));
    // The port is free again for the next session.
    let mut ws = fx
        .ws(
            "exec-interactive",
            &format!("?cmd={}&tty=true", enc("cat")),
            INTERACTIVE,
        )
        .unwrap_or_else(|(s, b)| panic!("{s}: {b}"));
    send(&mut ws, b"line-one\n");
    let mut out = Vec::new();
    ws_read_until(&mut ws, &mut out, "line-one");
    // End of input: the terminal's EOF ends cat.
    ws.send(Message::binary(vec![0x12])).unwrap();
    let (_, code, reason) = ws_until_close(&mut ws);
    assert_eq!((code, reason.as_str()), (1000, "{\"exit-code\":0}"));
}

#[test]
fn all_terminal_ports_busy_is_409_and_a_leaving_client_frees_its_port() {
    let (fx, _g) = alone();
    let mut first = fx
        .ws(
            "exec-interactive",
            &format!("?cmd={}&tty=true", enc("sleep 4343")),
            INTERACTIVE,
        )
        .unwrap_or_else(|(s, b)| panic!("{s}: {b}"));
    let second = fx.ws(
        "exec-interactive",
        &format!("?cmd={}", enc("true")),
        INTERACTIVE,
    );
    let Err((status, body)) = second else {
        panic!("a second session while the port is taken");
    };
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("terminal ports"), "{body}");
    assert!(fx.guest_has("sleep 4343"));
    // The client goes: SIGHUP to the command's group; the port is free again.
    let _ = first.close(None);
    drop(first);
    fx.supd
        .wait_until(Duration::from_secs(15), || !fx.guest_has("sleep 4343"));
    let mut ws = Err((0, String::new()));
    fx.supd.wait_until(Duration::from_secs(10), || {
        ws = fx.ws(
            "exec-interactive",
            &format!("?cmd={}", enc("echo free")),
            INTERACTIVE,
        );
        ws.is_ok()
    });
    let mut ws = ws.unwrap();
    let (out, code, reason) = ws_until_close(&mut ws);
    assert!(String::from_utf8_lossy(&out).contains("free"));
    assert_eq!((code, reason.as_str()), (1000, "{\"exit-code\":0}"));
}

#[test]
fn the_console_round_trips_and_can_be_taken_over() {
    let (fx, _g) = alone();
    let console = "v1.console.supd";
    let mut first = fx
        .ws("console", "", console)
        .unwrap_or_else(|(s, b)| panic!("{s}: {b}"));
    first
        .send(Message::binary(b"echo console-$((20+3))\n".to_vec()))
        .unwrap();
    let mut out = Vec::new();
    ws_read_until(&mut first, &mut out, "console-23");
    let Err((status, body)) = fx.ws("console", "", console) else {
        panic!("a second console");
    };
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("takeover=true"), "{body}");
    let mut second = fx
        .ws("console", "?takeover=true", console)
        .unwrap_or_else(|(s, b)| panic!("{s}: {b}"));
    let (_, code, reason) = ws_until_close(&mut first);
    assert_eq!(code, 1000);
    assert!(reason.contains("took the console over"), "{reason}");
    second
        .send(Message::binary(b"echo second-$((1+2))\n".to_vec()))
        .unwrap();
    let mut out = Vec::new();
    ws_read_until(&mut second, &mut out, "second-3");
    close_ws(second);
}

#[test]
fn an_agent_restarted_in_the_guest_is_resynced_and_no_stale_answer_is_delivered() {
    let (fx, _g) = alone();
    // The agent dies in a second, while a command of ours is running; init respawns it.
    let v = fx.exec("sh -c '(sleep 1; kill $(pidof qemu-ga)) >/dev/null 2>&1 &'");
    assert_eq!(v["exit-code"], 0);
    let r = fx.exec_raw("sleep 3", None);
    assert!(
        [200, 409, 502, 504].contains(&r.status),
        "{}: {}",
        r.status,
        r.text()
    );
    // Every answer after is the answer to its own command.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut good = 0;
    let mut n = 0;
    while good < 20 {
        assert!(Instant::now() < deadline, "the agent did not come back");
        n += 1;
        let r = fx.exec_raw(&format!("echo answer-{n}"), None);
        match r.status {
            200 => {
                assert_eq!(r.json()["output"], format!("answer-{n}\n"), "stale answer");
                good += 1;
            }
            409 | 502 | 504 => std::thread::sleep(Duration::from_millis(200)),
            s => panic!("{s}: {}", r.text()),
        }
    }
}

#[test]
fn two_hundred_execs_leak_nothing() {
    // Alone: other tests' connections would come and go in the count.
    let (fx, _g) = alone();
    // Warm up (buffers, the state cache), then measure.
    for _ in 0..10 {
        fx.exec("true");
    }
    let fds = fx.supd.fd_count();
    let rss = fx.supd.rss_kib();
    let guest_procs = |fx: &Fixture| {
        fx.exec("sh -c 'ls -d /proc/[0-9]* | wc -l'")["output"]
            .as_str()
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    let procs = guest_procs(fx);
    for i in 0..200 {
        let v = fx.exec(&format!("echo {i}"));
        assert_eq!(v["output"], format!("{i}\n"));
    }
    // Closed connections may take a turn of the loop to be noticed.
    let settled = eventually(Duration::from_secs(5), || fx.supd.fd_count() <= fds);
    assert!(
        settled,
        "descriptors: {} after, {fds} before",
        fx.supd.fd_count()
    );
    let grown = fx.supd.rss_kib().saturating_sub(rss);
    assert!(grown < 2048, "RSS grew by {grown} KiB");
    // No zombie or leftover process in the guest (other tests' commands may come and go).
    assert!((guest_procs(fx) - procs).abs() <= 3);
}

#[test]
fn a_stuck_guest_command_does_not_block_other_clients() {
    let (fx, _g) = shared();
    // One exec runs for a while; state and container requests answer meanwhile.
    let body = serde_json::json!({ "cmd": "sleep 3" }).to_string();
    let mut c = fx.supd.connect();
    c.send_json(
        &format!("{}/vm-container/exec", fx.base()),
        ADMIN_TOKEN,
        body.as_bytes(),
    );
    let t = Instant::now();
    for _ in 0..20 {
        let (status, _) = fx.supd.get_json(&fx.base());
        assert_eq!(status, 200);
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_client_that_leaves_before_the_101_leaves_no_command_behind() {
    let (fx, _g) = alone();
    // Gone at different moments of the start: while the port is connected, while the
    // command's start is under way, just after.
    for (i, delay) in [0u64, 5, 15, 30, 60, 120].into_iter().enumerate() {
        let cmd = format!("sleep 46{i:02}");
        let mut c = fx.supd.connect();
        c.send_upgrade(
            &format!(
                "{}/vm-container/exec-interactive?cmd={}",
                fx.base(),
                enc(&cmd)
            ),
            ADMIN_TOKEN,
            INTERACTIVE,
        );
        std::thread::sleep(Duration::from_millis(delay));
        drop(c);
        // The port comes free, and nothing of the command stays in the guest.
        fx.supd.wait_until(Duration::from_secs(20), || {
            fx.ws(
                "exec-interactive",
                &format!("?cmd={}", enc("true")),
                INTERACTIVE,
            )
            .map(|mut ws| ws_until_close(&mut ws))
            .is_ok()
        });
        fx.supd
            .wait_until(Duration::from_secs(15), || !fx.guest_has(&cmd));
    }
}

#[test]
fn a_leaving_client_gets_everything_its_command_started_killed() {
    let (fx, _g) = shared();
    // A background child holds the output open: the command is not done while it lives
    // (the agent's rule), and it is part of the command's process group.
    let body = serde_json::json!({ "cmd": "sh -c 'sleep 5151 & sleep 5252'" }).to_string();
    let mut c = fx.supd.connect();
    c.send_json(
        &format!("{}/vm-container/exec", fx.base()),
        ADMIN_TOKEN,
        body.as_bytes(),
    );
    fx.supd.wait_until(Duration::from_secs(30), || {
        fx.guest_has("sleep 5151") && fx.guest_has("sleep 5252")
    });
    drop(c);
    fx.supd.wait_until(Duration::from_secs(15), || {
        !fx.guest_has("sleep 5151") && !fx.guest_has("sleep 5252")
    });
}
