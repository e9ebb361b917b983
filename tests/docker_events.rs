//! What a container can do to supd through Docker's event stream. Docker writes a container's
//! labels into every event about it, so a container decides how long its event lines are.
//! One with megabytes of labels and a health check every second (each probe is a few events)
//! once made supd drop the stream, resync, and answer 503 to every application meanwhile.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Create and start a container through the Engine API (the CLI's label files cannot hold a
/// 2 MiB line), labelled for cleanup by `cs`.
fn create_with_labels(cs: &Containers, name: &str, labels: serde_json::Value) -> String {
    let mut labels = labels;
    labels["supd.test"] = serde_json::Value::String(cs.label.clone());
    let spec = serde_json::json!({
        "Image": IMAGE,
        "Cmd": ["sleep", "100000"],
        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1_000_000_000u64,
                        "Timeout": 1_000_000_000u64, "Retries": 1},
        "Labels": labels,
    });
    let file = std::env::temp_dir().join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec(&spec).unwrap()).unwrap();
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sf", "--unix-socket", "/var/run/docker.sock"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "curl {args:?}: {out:?}");
        out.stdout
    };
    let created = curl(&[
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://docker/containers/create?name={name}"),
    ]);
    let _ = std::fs::remove_file(&file);
    let id = serde_json::from_slice::<serde_json::Value>(&created).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    curl(&[
        "-X",
        "POST",
        &format!("http://docker/containers/{id}/start"),
    ]);
    id
}

#[test]
fn a_container_with_huge_labels_costs_only_its_own_events() {
    let cs = Containers::new("events");
    let supd = Supd::start();
    let app = unique("calm");
    cs.run(&[
        "--label",
        &format!("io.supd.application={app}"),
        "--label",
        "io.supd.service=web",
        "--label",
        "io.supd.instance=1",
        IMAGE,
        "sleep",
        "100000",
    ]);
    let list = format!("/v1/state/applications/{app}/service-instances?count=true");
    supd.wait_until(Duration::from_secs(10), || {
        let (status, v) = supd.get_json(&list);
        status == 200 && v["count"] == 1
    });

    let big = unique("big");
    let id = create_with_labels(
        &cs,
        &big,
        serde_json::json!({
            "io.supd.application": big, "io.supd.service": "big", "io.supd.instance": "1",
            "x-pad": "v".repeat(2 << 20),
        }),
    );

    // Every health probe of the big container (one a second) is events over the 1 MiB line
    // limit. Another application's state stays served all along.
    let until = Instant::now() + Duration::from_secs(6);
    let mut probes = 0;
    while Instant::now() < until {
        let (status, v) = supd.get_json(&list);
        assert_eq!(
            status,
            200,
            "probe {probes}: {v}\nsupd log:\n{}",
            supd.log_text()
        );
        assert_eq!(v["count"], 1);
        probes += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = supd.log_text();
    assert!(
        !log.contains("reconnecting"),
        "the event stream was dropped:\n{log}"
    );

    // The big container itself is still known (from its cut start event or the list), and
    // its removal (a cut destroy event) is seen.
    let big_list = format!("/v1/state/applications/{big}/service-instances?count=true");
    supd.wait_until(Duration::from_secs(10), || {
        supd.get_json(&big_list).1["count"] == 1
    });
    docker(&["rm", "-f", &id]);
    supd.wait_until(Duration::from_secs(10), || {
        supd.get_json(&big_list).1["count"] == 0
    });
}
