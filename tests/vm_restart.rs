//! Restart of an instance with a VM, tcp-connect into the guest, and a stopped launcher,
//! against a real virtual machine (the test VM image, TCG) through a real `supd`.
//!
//! One `#[test]` runs the cases in order on one VM: each case changes the VM's life (a reboot,
//! a stop), booting is what costs (5-20 s under TCG), and the order matters (the stopped
//! launcher comes last). A fixture shared by several tests would need a lock and a boot after
//! the stop anyway; one test also cleans up by its own drops, with no `atexit`. Each case is
//! its own function, named for what it shows, and prints its time.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use tungstenite::Message;

const SVC: &str = "guest";
const SI: &str = "guest-1";
/// The launcher's stop timeout: room for a power-off under load (2-3 s when quiet), short
/// enough for the case that waits it out.
const STOP_TIMEOUT: u64 = 12;

struct Vm<'a> {
    supd: &'a Supd,
    app: String,
    id: String,
}

impl Vm<'_> {
    fn base(&self) -> String {
        format!("/v1/state/applications/{}/service-instances/{SI}", self.app)
    }

    fn exec(&self, cmd: &str) -> HttpResponse {
        vm_exec(self.supd, &self.app, SI, cmd)
    }

    /// The output of `cmd` in the guest, which must exit 0.
    fn run(&self, cmd: &str) -> String {
        let r = self.exec(cmd);
        assert_eq!(r.status, 200, "{cmd}: {}", r.text());
        let v = r.json();
        assert_eq!(v["exit-code"], 0, "{cmd}: {v}");
        v["output"].as_str().unwrap().to_string()
    }

    fn boot_id(&self) -> String {
        let id = self.run("cat /proc/sys/kernel/random/boot_id");
        assert_eq!(id.trim().len(), 36, "{id:?}");
        id.trim().to_string()
    }

    fn wait_agent(&self) -> Duration {
        wait_agent(self.supd, &self.app, SI)
    }

    fn total_restarts(&self) -> u64 {
        vm_state(self.supd, &self.app, SI)["total-restarts"]
            .as_u64()
            .unwrap()
    }

    /// `POST .../restart` with `body`: the status and how long the answer took. The launcher
    /// runs when it comes.
    fn restart(&self, body: &str) -> (u16, Duration) {
        let started = Instant::now();
        let r = self
            .supd
            .post_json(&format!("{}/restart", self.base()), ADMIN_TOKEN, body);
        let took = started.elapsed();
        if r.status == 204 {
            assert_eq!(inspect(&self.id, "{{.State.Running}}"), "true");
        }
        (r.status, took)
    }
}

/// Now, as `docker events --since/--until` take it.
fn now_stamp() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

/// The launcher's Docker events between two stamps: `action` or `action signal`.
fn events(id: &str, since: &str, until: &str) -> Vec<String> {
    docker(&[
        "events",
        "--since",
        since,
        "--until",
        until,
        "--filter",
        &format!("container={id}"),
        "--format",
        "{{.Action}} {{index .Actor.Attributes \"signal\"}}",
    ])
    .lines()
    .map(|l| l.trim().to_string())
    .collect()
}

fn case(name: &str, f: impl FnOnce()) {
    let started = Instant::now();
    f();
    eprintln!("{name}: ok in {:.1?}", started.elapsed());
}

#[test]
fn vm_restart_tcp_connect_and_stopped_launcher() {
    let cs = Containers::new("vm-restart");
    let app = unique("vmrst");
    let stop = STOP_TIMEOUT.to_string();
    let id = start_vm_with(&cs, &app, SVC, &["--stop-timeout", &stop]);
    let supd = Supd::start();
    let vm = Vm {
        supd: &supd,
        app,
        id,
    };
    eprintln!("boot: agent connected after {:.1?}", vm.wait_agent());

    case("tcp_connect_reaches_a_server_in_the_guest", || {
        tcp_connect_reaches_a_server_in_the_guest(&vm)
    });
    let graceful = {
        let started = Instant::now();
        let took = graceful_restart_powers_the_guest_off(&vm);
        eprintln!(
            "graceful_restart_powers_the_guest_off: ok in {:.1?} (restart {took:.1?})",
            started.elapsed()
        );
        took
    };
    case("immediate_restart_kills_the_launcher_at_once", || {
        immediate_restart_kills_the_launcher_at_once(&vm, graceful)
    });
    case(
        "a_guest_that_does_not_power_off_is_killed_after_the_stop_timeout",
        || a_guest_that_does_not_power_off_is_killed_after_the_stop_timeout(&vm),
    );
    case(
        "an_agent_that_cannot_power_off_leaves_it_to_dockers_stop",
        || an_agent_that_cannot_power_off_leaves_it_to_dockers_stop(&vm),
    );
    case("a_stopped_launcher_is_409", || {
        a_stopped_launcher_is_409(&vm)
    });
}

/// busybox httpd in the guest, reached through `vm-container/tcp-connect` (the launcher
/// forwards 127.0.0.1:8080 to the guest; `io.supd.vm.address=127.0.0.1` comes from the image).
fn tcp_connect_reaches_a_server_in_the_guest(vm: &Vm<'_>) {
    let page = vm.run("cat /srv/index.html");
    assert!(!page.trim().is_empty());
    vm.run("sh -c 'httpd -p 8080 -h /srv </dev/null >/dev/null 2>&1'");
    let path = format!("{}/vm-container/tcp-connect?port=8080", vm.base());
    // slirp accepts on the forward even before httpd listens (then resets): try again.
    let mut answer = Vec::new();
    for _ in 0..20 {
        let (mut ws, resp) = try_ws(vm.supd.addr, &path, ADMIN_TOKEN, TCP_CONNECT)
            .unwrap_or_else(|(s, body)| panic!("tcp-connect: {s}: {body}"));
        assert_eq!(resp.status(), 101);
        assert_eq!(resp.headers()["Deprecation"], "true");
        ws.send(Message::binary(
            b"GET /index.html HTTP/1.0\r\nHost: guest\r\n\r\n".to_vec(),
        ))
        .unwrap();
        answer = read_to_close(&mut ws, |_| {}).0;
        if !answer.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.") && text.contains(" 200 "),
        "{text}"
    );
    assert!(text.contains(page.trim()), "{text}");
}

/// Graceful: the guest powers itself off through its agent (no signal from Docker), the
/// answer comes once the launcher runs again, the guest has booted anew and the agent is
/// back; the launcher's restart counts.
fn graceful_restart_powers_the_guest_off(vm: &Vm<'_>) -> Duration {
    let before = vm.boot_id();
    let started_at = inspect(&vm.id, "{{.State.StartedAt}}");
    let restarts = vm.total_restarts();
    let since = now_stamp();
    let (status, took) = vm.restart("");
    let until = now_stamp();
    assert_eq!(status, 204);
    assert!(
        took < Duration::from_secs(STOP_TIMEOUT),
        "the guest powered off by itself, well within the stop timeout: {took:?}"
    );
    assert_ne!(inspect(&vm.id, "{{.State.StartedAt}}"), started_at);
    let ev = events(&vm.id, &since, &until);
    assert!(
        ev.iter().any(|e| e == "die") && ev.iter().any(|e| e == "start"),
        "{ev:?}"
    );
    assert!(
        !ev.iter().any(|e| e.starts_with("kill")),
        "Docker sent no signal: {ev:?}"
    );
    eprintln!("  agent back after {:.1?}", vm.wait_agent());
    assert_ne!(vm.boot_id(), before, "the guest booted again");
    assert_eq!(vm.total_restarts(), restarts + 1);
    took
}

/// `no-delayed-shutdown: true`: the launcher is killed (SIGKILL) and started at once.
fn immediate_restart_kills_the_launcher_at_once(vm: &Vm<'_>, graceful: Duration) {
    let before = vm.boot_id();
    let restarts = vm.total_restarts();
    let since = now_stamp();
    let (status, took) = vm.restart("no-delayed-shutdown: true");
    let until = now_stamp();
    assert_eq!(status, 204);
    assert!(took < graceful, "immediate {took:?}, graceful {graceful:?}");
    let ev = events(&vm.id, &since, &until);
    assert!(ev.iter().any(|e| e == "kill 9"), "{ev:?}");
    eprintln!(
        "  restart {took:.1?}; agent back after {:.1?}",
        vm.wait_agent()
    );
    assert_ne!(vm.boot_id(), before);
    assert_eq!(vm.total_restarts(), restarts + 1);
}

/// A guest whose shutdown does nothing (the agent reports success, silently): the launcher is
/// killed once its stop timeout has passed, and started.
fn a_guest_that_does_not_power_off_is_killed_after_the_stop_timeout(vm: &Vm<'_>) {
    vm.run("sh -c \"echo '#!/bin/sh' >/sbin/shutdown\"");
    let before = vm.boot_id();
    let since = now_stamp();
    let (status, took) = vm.restart("");
    let until = now_stamp();
    assert_eq!(status, 204);
    assert!(took >= Duration::from_secs(STOP_TIMEOUT), "{took:?}");
    let ev = events(&vm.id, &since, &until);
    assert!(ev.iter().any(|e| e == "kill 9"), "{ev:?}");
    assert!(!ev.iter().any(|e| e == "kill 15"), "{ev:?}");
    eprintln!(
        "  restart {took:.1?}; agent back after {:.1?}",
        vm.wait_agent()
    );
    assert_ne!(vm.boot_id(), before);
}

/// The agent cannot power the guest off (its shutdown program fails): Docker's graceful
/// restart does it (SIGTERM, on which the launcher powers the guest off through ACPI).
fn an_agent_that_cannot_power_off_leaves_it_to_dockers_stop(vm: &Vm<'_>) {
    vm.run("sh -c 'echo exit 1 >/sbin/shutdown'");
    let before = vm.boot_id();
    let since = now_stamp();
    let (status, took) = vm.restart("");
    let until = now_stamp();
    assert_eq!(status, 204);
    let ev = events(&vm.id, &since, &until);
    assert!(ev.iter().any(|e| e == "kill 15"), "{ev:?}");
    assert!(
        !ev.iter().any(|e| e == "kill 9"),
        "powered off in time: {ev:?}"
    );
    eprintln!(
        "  restart {took:.1?}; agent back after {:.1?}",
        vm.wait_agent()
    );
    assert_ne!(vm.boot_id(), before);
}

/// `docker stop`: exec, exec-interactive and console say the launcher is not running.
fn a_stopped_launcher_is_409(vm: &Vm<'_>) {
    docker(&["stop", &vm.id]);
    vm.supd.wait_until(Duration::from_secs(20), || {
        vm_state(vm.supd, &vm.app, SI)["oper-status"] != "running"
    });
    let r = vm.exec("true");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.error_message()
            .starts_with("the VM's launcher is not running"),
        "{}",
        r.text()
    );
    let interactive = format!(
        "{}/vm-container/exec-interactive?cmd=sh&tty=true",
        vm.base()
    );
    let (status, body) = handshake_status(vm.supd.addr, &interactive, INTERACTIVE);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("the VM's launcher is not running"), "{body}");
    let console = format!("{}/vm-container/console", vm.base());
    let (status, body) = handshake_status(vm.supd.addr, &console, "v1.console.supd");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("the VM's launcher is not running"), "{body}");
}
