//! VM launchers: the test VM image (`supd-test-vm:local`, docs/test-vm.md) started as an
//! instance's VM, and waiting for supd's guest-agent client to connect to it.

use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

pub const VM_IMAGE: &str = "supd-test-vm:local";
/// How long a TCG boot to a connected agent may take on a loaded machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Build the test VM image unless it is there (the script is a no-op when it is current).
pub fn ensure_vm_image() {
    let ok = Command::new("docker")
        .args(["image", "inspect", VM_IMAGE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        let st = Command::new(repo().join("scripts/build-test-vm.sh"))
            .status()
            .expect("run build-test-vm.sh");
        assert!(st.success(), "building the test VM image failed");
    }
}

/// A VM launcher (TCG) as instance `<svc>-1` of `app`, with the docker options `opts`: its id.
pub fn start_vm_with(cs: &Containers, app: &str, svc: &str, opts: &[&str]) -> String {
    ensure_vm_image();
    let mut o = vec!["-e", "SUPD_VM_ACCEL=tcg"];
    o.extend_from_slice(opts);
    managed(cs, app, svc, &o, &[VM_IMAGE])
}

/// A VM launcher (TCG) as instance `<svc>-1` of `app`: its id.
pub fn start_vm(cs: &Containers, app: &str, svc: &str) -> String {
    start_vm_with(cs, app, svc, &[])
}

/// The `vm-container` object of instance `instance` (`<svc>-<n>`) of `app`.
pub fn vm_state(supd: &Supd, app: &str, instance: &str) -> serde_json::Value {
    let (_, v) = supd.get_json(&format!(
        "/v1/state/applications/{app}/service-instances/{instance}"
    ));
    v["vm-container"].clone()
}

/// Wait until supd's client of the VM's guest agent is connected (the guest has booted); the
/// time it took.
pub fn wait_agent(supd: &Supd, app: &str, instance: &str) -> Duration {
    let started = Instant::now();
    supd.wait_until(BOOT_TIMEOUT, || {
        vm_state(supd, app, instance)["agent"] == "connected"
    });
    started.elapsed()
}

/// `POST .../vm-container/exec` of `cmd` (JSON answer).
pub fn vm_exec(supd: &Supd, app: &str, instance: &str, cmd: &str) -> HttpResponse {
    let body = serde_json::json!({ "cmd": cmd }).to_string();
    supd.post_json(
        &format!("/v1/state/applications/{app}/service-instances/{instance}/vm-container/exec"),
        ADMIN_TOKEN,
        &body,
    )
}
