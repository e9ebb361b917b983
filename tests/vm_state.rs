//! VM launchers in the state answers, against a real Docker engine through a real `supd`: a
//! container labelled `io.supd.vm-container=true` is its instance's `vm-container`, not one
//! of its containers; invalid VM labels leave it unmanaged. The launcher here is the busybox
//! test image (no QEMU): its state is what the API shows, and no guest agent ever answers.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn list_path(app: &str) -> String {
    format!("/v1/state/applications/{app}/service-instances")
}

fn launcher_opts<'a>(container: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--label", "io.supd.vm-container=true", "--label", container];
    v.extend_from_slice(extra);
    v
}

#[test]
fn a_launcher_is_the_instances_vm_container() {
    let cs = Containers::new("vm-state");
    let app = unique("vmst");
    // legacy-1: a VM beside an ordinary container; solo-1: only a VM.
    let launcher = managed(
        &cs,
        &app,
        "legacy",
        &launcher_opts("io.supd.container=qemu", &[]),
        SLEEPER,
    );
    let regular = managed(
        &cs,
        &app,
        "legacy",
        &["--label", "io.supd.container=app"],
        SLEEPER,
    );
    let solo = managed(
        &cs,
        &app,
        "solo",
        &launcher_opts(
            "io.supd.container=vm",
            &[
                "--label",
                "io.supd.vm.terminals=/run/supd-vm/ttyS1.sock=ttyS1,/run/supd-vm/ttyS2.sock=ttyS2",
                "--label",
                "io.supd.vm.address=10.0.2.15",
            ],
        ),
        SLEEPER,
    );
    let supd = Supd::start();
    let path = instance_path(&app, "legacy");
    supd.wait_until(Duration::from_secs(20), || {
        let (status, v) = supd.get_json(&path);
        status == 200 && v["vm-container"]["oper-status"] == "running"
    });

    let (status, si) = supd.get_json(&path);
    assert_eq!(status, 200);
    assert_eq!(si["oper-status"], "running", "{si:#}");
    assert_eq!(si["ready"], true);
    let vm = &si["vm-container"];
    assert_eq!(vm["name"], format!("acme.{app}.legacy-1.qemu"));
    assert_eq!(vm["id"], &launcher[..12]);
    assert_eq!(vm["oper-status"], "running");
    assert_eq!(vm["ready"], true);
    assert_eq!(vm["agent"], "unavailable", "no agent answers in busybox");
    assert_eq!(
        (vm["current-restarts"].clone(), vm["total-restarts"].clone()),
        (json!(0), json!(0))
    );
    let started = inspect(&launcher, "{{.State.StartedAt}}");
    assert_eq!(
        vm["start-time"].as_str().unwrap(),
        format!("{}Z", &started[..23])
    );
    assert!(
        vm.get("guest-os").is_none() && vm.get("ips").is_none(),
        "{vm:#}"
    );
    // The launcher is not one of the instance's containers.
    let containers = si["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{si:#}");
    assert_eq!(containers[0]["name"], format!("acme.{app}.legacy-1.app"));
    assert_eq!(containers[0]["id"], &regular[..12]);
    assert!(si.get("init-containers").is_none());

    // The same in the list, with the instance of only a VM.
    let (status, list) = supd.get_json(&list_path(&app));
    assert_eq!(status, 200);
    assert_eq!(list[0], si);
    let solo_si = &list[1];
    assert_eq!(solo_si["name"], format!("acme.{app}.solo-1"));
    assert_eq!(solo_si["containers"], json!([]));
    assert_eq!(solo_si["vm-container"]["id"], &solo[..12]);
    assert_eq!(
        (solo_si["oper-status"].clone(), solo_si["ready"].clone()),
        (json!("running"), json!(true)),
        "a VM counts as a container: {solo_si:#}"
    );

    // fields selects inside it like anywhere else.
    let (status, v) = supd.get_json(&format!("{path}?fields=vm-container(name;agent)"));
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"vm-container": {"name": format!("acme.{app}.legacy-1.qemu"), "agent": "unavailable"}})
    );

    // Not a container: it cannot be entered as one.
    let r = supd.post_json(
        &format!("{path}/containers/qemu/exec"),
        ADMIN_TOKEN,
        r#"{"cmd": "true"}"#,
    );
    assert_eq!(r.status, 404, "{}", r.text());

    // The console route exists and checks its request like any websocket endpoint.
    let console = |si: &str, q: &str| {
        format!("/v1/state/applications/{app}/service-instances/{si}/vm-container/console{q}")
    };
    let r = supd.get(&console("legacy-1", ""), ADMIN_TOKEN);
    assert_eq!(r.status, 426, "{}", r.text());
    let r = raw_upgrade(
        &supd,
        &console("legacy-1", "?takeover=1"),
        ADMIN_TOKEN,
        "v1.console.supd",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = raw_upgrade(
        &supd,
        &console("legacy-1", ""),
        ADMIN_TOKEN,
        "v1.exec-interactive.supd",
    );
    assert_eq!(r.status, 400, "another subprotocol: {}", r.text());
    let r = raw_upgrade(
        &supd,
        &console("nosuch-1", ""),
        ADMIN_TOKEN,
        "v1.console.supd",
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = raw_upgrade(
        &supd,
        &console("legacy-1", ""),
        READER_TOKEN,
        "v1.console.supd",
    );
    assert_eq!(r.status, 403, "the console needs exec: {}", r.text());
    let r = raw_upgrade(
        &supd,
        &console("legacy-1", "?takeover=true"),
        ADMIN_TOKEN,
        "v1.console.supd",
    );
    // This launcher runs no QEMU: its console socket is not there.
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.text().contains("cannot connect to the VM's console"),
        "{}",
        r.text()
    );

    // The launcher stops: the VM, and so the instance, has failed; no agent.
    docker(&["kill", &launcher]);
    supd.wait_until(Duration::from_secs(20), || {
        supd.get_json(&path).1["vm-container"]["oper-status"] == "failed"
    });
    let (_, si) = supd.get_json(&path);
    assert_eq!(si["oper-status"], "failed");
    assert_eq!(si["ready"], false);
    assert_eq!(si["vm-container"]["ready"], false);
    assert_eq!(si["vm-container"]["agent"], "unavailable");
    assert_eq!(si["containers"].as_array().unwrap().len(), 1);
}

/// Invalid VM labels leave the container unmanaged, whether supd finds it in its first
/// listing or learns of it from an event.
#[test]
fn invalid_vm_labels_leave_the_container_unmanaged() {
    let cs = Containers::new("vm-bad");
    let app = unique("vmbad");
    let bad = |svc: &str, label: &str| {
        managed(
            &cs,
            &app,
            svc,
            &launcher_opts("io.supd.container=qemu", &["--label", label]),
            SLEEPER,
        )
    };
    bad("listed", "io.supd.vm.terminals=/run/t.sock=tty S1");
    bad("listed2", "io.supd.vm.agent=/run/../qga.sock");
    // Valid ones in the same application, so the answer is not empty for another reason.
    managed(
        &cs,
        &app,
        "good",
        &launcher_opts("io.supd.container=qemu", &[]),
        SLEEPER,
    );
    let supd = Supd::start();
    supd.wait_until(Duration::from_secs(20), || {
        supd.get_json(&instance_path(&app, "good")).0 == 200
    });
    bad("evented", "io.supd.vm.terminals=/run/t.sock=ttyS1;reboot");
    managed(
        &cs,
        &app,
        "evented2",
        &["--label", "io.supd.vm-container=yes"],
        SLEEPER,
    );
    // Docker reports events in order: once a later container shows, the earlier ones were seen.
    managed(
        &cs,
        &app,
        "later",
        &launcher_opts("io.supd.container=qemu", &[]),
        SLEEPER,
    );
    supd.wait_until(Duration::from_secs(20), || {
        supd.get_json(&instance_path(&app, "later")).0 == 200
    });
    let (status, list) = supd.get_json(&format!("{}?keys=true", list_path(&app)));
    assert_eq!(status, 200);
    assert_eq!(
        list,
        json!([{"name": format!("acme.{app}.good-1")}, {"name": format!("acme.{app}.later-1")}]),
    );
    for svc in ["listed", "listed2", "evented", "evented2"] {
        let (status, v) = supd.get_json(&instance_path(&app, svc));
        assert_eq!(status, 404, "{svc}: {v}");
    }
    let (_, good) = supd.get_json(&instance_path(&app, "good"));
    assert_eq!(
        good["vm-container"]["name"],
        Value::from(format!("acme.{app}.good-1.qemu"))
    );
}
