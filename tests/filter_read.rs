//! Reading the seccomp filters of a container's first process before an exec must not stall
//! supd. A container whose init is parked in vfork() sleeps uninterruptibly and never stops
//! for the helper that reads its filters: execs into it fail after the read's timeout, but
//! only those; state requests of everyone else keep being answered meanwhile. A failed read
//! is remembered for a while (the next exec fails at once), several execs waiting for one
//! init share one helper, and a client that leaves while its exec waits takes the helper
//! with it.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// The init: vfork(), and the child never execs nor exits, so the parent (the container's
/// first process) sleeps in the kernel until the container is removed.
const PARKER: &str = r#"
#include <unistd.h>
int main(void) {
    if (vfork() == 0) {
        for (;;) pause();
    }
    return 0;
}
"#;

const FILTER_ERROR: &str = "read the seccomp filters of the container's first process";

/// Compiles the parker with the host's C compiler, statically (the image has no libc).
fn build_parker(dir: &TempDir) -> String {
    let src = dir.path().join("vfork-parker.c");
    let bin = dir.path().join("vfork-parker");
    std::fs::write(&src, PARKER).unwrap();
    let out = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc -static: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin.to_string_lossy().into_owned()
}

/// A managed container `web-1`/`web` of a new application running the parker; its init pid
/// once it sleeps in vfork.
fn park(cs: &Containers, parker: &str) -> (String, u32) {
    let app = unique("parked");
    let id = managed(
        cs,
        &app,
        "web",
        &["-v", &format!("{parker}:/vfork-parker:ro")],
        &[IMAGE, "/vfork-parker"],
    );
    let pid = pid_of(&id);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        if status.contains("State:\tD") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the init is not parked: {status}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    (app, pid)
}

fn wait_known(supd: &Supd, app: &str) {
    let path = format!("/v1/state/applications/{app}/service-instances/web-1");
    supd.wait_until(Duration::from_secs(20), || {
        supd.get(&path, ADMIN_TOKEN).status == 200
    });
}

/// Runs `true` through the exec endpoint: the answer and how long it took.
fn exec(supd: &Supd, app: &str) -> (HttpResponse, Duration) {
    let started = Instant::now();
    let r = supd.post_json(&exec_path(app), ADMIN_TOKEN, r#"{"cmd":"true"}"#);
    (r, started.elapsed())
}

fn assert_filter_error(r: &HttpResponse) {
    assert_eq!(r.status, 500, "{}", r.text());
    let message = r.error_message();
    assert!(message.contains(FILTER_ERROR), "{message}");
}

/// How many helpers supd has started for `pid`, from its debug log.
fn helpers_for(supd: &Supd, pid: u32) -> usize {
    let line = format!("reading the seccomp filters of process {pid} ");
    supd.log_text().matches(&line).count()
}

#[test]
fn a_parked_init_delays_only_its_own_execs() {
    let dir = TempDir::new();
    let parker = build_parker(&dir);
    let cs = Containers::new("filter-read");
    let supd = Supd::start();
    let (app, pid) = park(&cs, &parker);
    let (other, _) = park(&cs, &parker);
    wait_known(&supd, &app);
    wait_known(&supd, &other);

    // Another client reads state all along.
    let stop = Arc::new(AtomicBool::new(false));
    let addr = supd.addr;
    let reader = {
        let stop = Arc::clone(&stop);
        let path = format!("/v1/state/applications/{other}/service-instances");
        thread::spawn(move || {
            let mut answered = Vec::new();
            let mut client = Client::connect(addr);
            let auth = format!("Bearer {ADMIN_TOKEN}");
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                client.send("GET", &path, &[("Authorization", &auth)], b"");
                let r = client.read_response(false);
                assert_eq!(r.status, 200, "{}", r.text());
                answered.push((started, started.elapsed()));
                thread::sleep(Duration::from_millis(20));
            }
            answered
        })
    };
    thread::sleep(Duration::from_millis(100));
    let exec_started = Instant::now();
    let (r, took) = exec(&supd, &app);
    let exec_done = exec_started + took;
    thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    let answered = reader.join().unwrap();
    assert_filter_error(&r);
    assert!(
        took >= Duration::from_millis(900),
        "the read should have waited for its timeout: {took:?}"
    );
    let during: Vec<Duration> = answered
        .iter()
        .filter(|(at, _)| *at >= exec_started && *at < exec_done)
        .map(|(_, latency)| *latency)
        .collect();
    assert!(
        during.len() >= 5,
        "state requests while the exec waited: {during:?}"
    );
    let slowest = answered.iter().map(|(_, l)| *l).max().unwrap();
    assert!(
        slowest < Duration::from_millis(200),
        "a state request waited {slowest:?} (exec took {took:?})"
    );
    assert_eq!(helpers_for(&supd, pid), 1);

    // Remembered: the next exec (and a session) into the same init fail at once, without
    // another helper.
    let (r, took) = exec(&supd, &app);
    assert_filter_error(&r);
    assert!(took < Duration::from_millis(200), "{took:?}");
    let mut c = supd.connect();
    let ws_path = exec_path(&app).replace("/exec", "/exec-interactive?cmd=true&tty=false");
    c.send_upgrade(&ws_path, ADMIN_TOKEN, "v1.exec-interactive.supd");
    assert_filter_error(&c.read_response(false));
    assert_eq!(helpers_for(&supd, pid), 1);
    assert!(supd.children().is_empty(), "{:?}", supd.children());
}

#[test]
fn execs_waiting_for_one_init_share_one_helper() {
    let dir = TempDir::new();
    let parker = build_parker(&dir);
    let cs = Containers::new("filter-share");
    let supd = Supd::start();
    let (app, pid) = park(&cs, &parker);
    wait_known(&supd, &app);

    let started = Instant::now();
    let execs: Vec<_> = (0..3)
        .map(|_| {
            let path = exec_path(&app);
            let addr = supd.addr;
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.send_json(&path, ADMIN_TOKEN, br#"{"cmd":"true"}"#);
                c.read_response(false)
            })
        })
        .collect();
    let mut most = 0;
    while !execs.iter().all(|t| t.is_finished()) {
        most = most.max(supd.children().len());
        thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed();
    for t in execs {
        assert_filter_error(&t.join().unwrap());
    }
    // One after the other, three reads would take three timeouts.
    assert!(took < Duration::from_millis(1800), "{took:?}");
    assert_eq!(most, 1, "helpers at once");
    assert_eq!(helpers_for(&supd, pid), 1);
    assert!(supd.children().is_empty(), "{:?}", supd.children());
}

#[test]
fn a_client_leaving_while_its_exec_waits_takes_the_helper_along() {
    let dir = TempDir::new();
    let parker = build_parker(&dir);
    let cs = Containers::new("filter-leave");
    let supd = Supd::start();
    let (app, pid) = park(&cs, &parker);
    wait_known(&supd, &app);
    let fds = supd.fd_count();

    let mut c = supd.connect();
    c.send_json(&exec_path(&app), ADMIN_TOKEN, br#"{"cmd":"true"}"#);
    let started = Instant::now();
    supd.wait_until(Duration::from_secs(1), || supd.children().len() == 1);
    drop(c);
    // Killed and reaped at once, well before the read's own timeout.
    supd.wait_until(Duration::from_millis(500), || supd.children().is_empty());
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    supd.wait_until(Duration::from_secs(2), || supd.fd_count() <= fds);
    // An abandoned read is no failure of the init: the next exec reads again.
    let (r, _) = exec(&supd, &app);
    assert_filter_error(&r);
    assert_eq!(helpers_for(&supd, pid), 2);
}

/// The first request into a fresh container waits for the helper too, and then runs: an exec
/// answers, and a session is upgraded once its command is spawned.
#[test]
fn the_first_requests_into_a_fresh_init_run_once_the_filters_are_read() {
    let cs = Containers::new("filter-fresh");
    let supd = Supd::start();
    let app = unique("fresh");
    let id = managed(&cs, &app, "web", &[], &[IMAGE, "sleep", "3600"]);
    let pid = pid_of(&id);
    wait_known(&supd, &app);

    let mut ws = ws_client(
        supd.addr,
        &interactive_path(&app, "echo hi", false),
        INTERACTIVE,
    );
    let (out, close) = read_to_close(&mut ws, |_| {});
    let reason = close.map(|(_, reason)| reason).unwrap_or_default();
    assert!(reason.contains("\"exit-code\":0"), "{reason}");
    assert_eq!(String::from_utf8_lossy(&out), "hi\n");
    assert_eq!(helpers_for(&supd, pid), 1);

    let (r, _) = exec(&supd, &app);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["exit-code"], 0);
    // Read once, then cached.
    assert_eq!(helpers_for(&supd, pid), 1);
}
