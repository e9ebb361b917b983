//! A bug that panics while handling one request costs that request's connection only: the
//! daemon, its other clients and their keep-alive connections carry on, and nothing leaks.
//! The panic is injected with `SUPD_DEBUG_PANIC_PATH`, which only debug builds honour.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_panicking_request_drops_only_its_connection() {
    let supd = Supd::start_with(SupdOptions {
        env: vec![("SUPD_DEBUG_PANIC_PATH".into(), "/v1/boom".into())],
        ..SupdOptions::default()
    });
    let state = "/v1/state/applications/none/service-instances";
    let auth = format!("Bearer {ADMIN_TOKEN}");

    // A well-behaved keep-alive client, connected before the fault.
    let mut calm = supd.connect();
    calm.send("GET", state, &[("Authorization", &auth)], b"");
    assert_eq!(calm.read_response(false).status, 200);
    let fds_before = supd.fd_count();

    for _ in 0..20 {
        let mut bad = supd.connect();
        bad.send("GET", "/v1/boom", &[("Authorization", &auth)], b"");
        assert!(
            bad.is_closed_by_peer(Duration::from_secs(5)),
            "the connection of the panicking request is closed"
        );
    }

    // Same connection as before: still served.
    calm.send("GET", state, &[("Authorization", &auth)], b"");
    assert_eq!(calm.read_response(false).status, 200);
    assert!(supd.child_alive(), "supd survived");
    supd.wait_until(Duration::from_secs(5), || supd.fd_count() <= fds_before);
    assert!(
        supd.log_text().contains("bug: a handler panicked"),
        "the panic is logged as a bug"
    );
}
