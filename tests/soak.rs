//! Soak: many cycles of exec, interactive exec and connect, interleaved, through one `supd`.
//! At the end its descriptors and children are back where they started and its memory has
//! not grown beyond a small bound. `SUPD_SOAK_CYCLES` sets the cycles of each kind (a few
//! hundred by default, to fit CI); `scripts/soak.sh` runs 10,000 of each in release mode.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;

const DEFAULT_CYCLES: usize = 300;
/// RSS may move a little (allocator arenas, the mirror); a leak per cycle would not stay under.
const RSS_BOUND_KIB: u64 = 4 * 1024;

fn cycle(supd: &Supd, app: &str, n: usize) {
    let r = supd.post_json(
        &exec_path(app),
        ADMIN_TOKEN,
        &format!(r#"{{"cmd": "echo exec-{n}"}}"#),
    );
    assert_eq!(r.status, 200, "exec {n}: {}", r.text());
    assert_eq!(r.json()["output"], format!("exec-{n}\n"));

    let mut ix = ws_client(
        supd.addr,
        &interactive_path(app, &format!("echo ix-{n}"), false),
        INTERACTIVE,
    );
    let (out, code, reason) = ws_until_close(&mut ix);
    assert_eq!(String::from_utf8_lossy(&out), format!("ix-{n}\n"));
    assert_eq!((code, reason.as_str()), (1000, r#"{"exit-code":0}"#));

    let mut tun = ws_client(supd.addr, &connect_path(app, 7), CONNECT);
    let msg = format!("tun-{n}\n");
    tun.send(Message::binary(msg.clone().into_bytes())).unwrap();
    let mut echoed = Vec::new();
    while echoed != msg.as_bytes() {
        match tun.read().unwrap() {
            Message::Binary(b) => echoed.extend_from_slice(&b),
            Message::Ping(_) | Message::Pong(_) => {}
            m => panic!("tunnel {n}: {m:?}"),
        }
    }
    tun.close(None).unwrap();
    while tun.read().is_ok() {}
}

#[test]
fn exec_interactive_and_connect_cycles_leave_nothing_behind() {
    let cycles: usize = std::env::var("SUPD_SOAK_CYCLES")
        .ok()
        .map(|v| v.parse().expect("SUPD_SOAK_CYCLES is a number"))
        .unwrap_or(DEFAULT_CYCLES);
    let cs = Containers::new("soak");
    let app = unique("soak");
    echo_instance(&cs, &app);
    // Info, not debug: a log line per frame would be the biggest thing the soak measures.
    let supd = Supd::start_with(SupdOptions {
        env: vec![("RUST_LOG".into(), "info".into())],
        ..Default::default()
    });
    wait_running(&supd, &app);

    // Warm up (first allocations, buffers reaching their working size), then measure.
    for n in 0..10 {
        cycle(&supd, &app, n);
    }
    supd.wait_until(Duration::from_secs(10), || supd.children().is_empty());
    let fds = supd.fd_count();
    let rss = supd.rss_kib();
    let started = Instant::now();
    for n in 0..cycles {
        cycle(&supd, &app, n);
        if n % 1000 == 999 {
            eprintln!(
                "soak: {} cycles, {:?}, fds {}, children {}, RSS {} KiB",
                n + 1,
                started.elapsed(),
                supd.fd_count(),
                supd.children().len(),
                supd.rss_kib()
            );
        }
    }
    let elapsed = started.elapsed();
    supd.wait_until(Duration::from_secs(10), || {
        supd.fd_count() <= fds && supd.children().is_empty()
    });
    let end_rss = supd.rss_kib();
    eprintln!(
        "soak: {cycles} cycles each of exec, interactive and connect in {elapsed:?}; \
         fds {fds} -> {}, children 0 -> {}, RSS {rss} KiB -> {end_rss} KiB",
        supd.fd_count(),
        supd.children().len()
    );
    let grown = end_rss.saturating_sub(rss);
    assert!(grown < RSS_BOUND_KIB, "RSS grew by {grown} KiB");
    assert_healthy(supd.addr);
}
