//! The Docker engine restarted under a running `supd`: state answers 503 while the engine is
//! away and resyncs when it is back, and sessions already open carry on.
//!
//! The machine's shared engine is used by other tests at the same time, so this test starts a
//! private `dockerd` of its own (its own socket, data and exec roots, containerd namespaces,
//! a bridge of its own, `--live-restore` so its containers outlive it) and kills and restarts
//! that one.

mod common;

use std::time::Duration;

use common::*;
use tungstenite::Message;

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
    let mut engine = PrivateDocker::new("sdr", 77);
    engine.load_test_image();
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
