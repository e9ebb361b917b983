//! `restart` (`POST .../restart`) through the real `supd` binary against real containers:
//! graceful (TERM, then the stop timeout) and immediate (KILL) restarts, concurrent requests,
//! and the restart counters in the state.

mod common;

use std::thread;
use std::time::Duration;

use common::*;

/// (name, start-time, current-restarts, total-restarts) of every container of the instance.
fn restarts(supd: &Supd, app: &str, svc: &str) -> Vec<(String, String, u64, u64)> {
    let (status, v) = supd.get_json(&instance_path(app, svc));
    assert_eq!(status, 200, "{v}");
    let mut out: Vec<_> = v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["start-time"].as_str().unwrap_or("").to_string(),
                c["current-restarts"].as_u64().unwrap(),
                c["total-restarts"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn restart_graceful_concurrent_and_immediate() {
    let cs = Containers::new("restart");
    let app = unique("rst");
    // `main` fails once so that Docker's policy restarts it (current-restarts 1); PID 1 sleep
    // ignores SIGTERM, so a graceful restart takes the 2 s stop timeout.
    let main = managed(
        &cs,
        &app,
        "svc",
        &[
            "--label",
            "io.supd.container=main",
            "--restart",
            "on-failure",
            "--stop-timeout",
            "2",
        ],
        &[
            IMAGE,
            "sh",
            "-c",
            "[ -e /once ] && exec sleep 100000; touch /once; exit 1",
        ],
    );
    let side = managed(
        &cs,
        &app,
        "svc",
        &["--label", "io.supd.container=side", "--stop-timeout", "2"],
        &[IMAGE, "sleep", "100000"],
    );
    let supd = Supd::start();
    let path = instance_path(&app, "svc");
    supd.wait_until(Duration::from_secs(20), || {
        let r = restarts(&supd, &app, "svc");
        r.len() == 2 && r[0].2 == 1 && inspect(&main, "{{.State.Running}}") == "true"
    });
    let before = restarts(&supd, &app, "svc");
    assert_eq!((before[0].2, before[0].3), (1, 1), "{before:?}");
    assert_eq!((before[1].2, before[1].3), (0, 0), "{before:?}");

    // Permissions and bodies first (nothing restarts).
    let r = supd.post_json(&format!("{path}/restart"), READER_TOKEN, "");
    assert_eq!(r.status, 403, "{}", r.text());
    for body in [
        r#"{"no-delayed-shutdown": false}"#,
        r#"{"no-delayed-shutdown": "yes"}"#,
        r#"{"no-delayed-shutdown": null}"#,
        "no-delayed-shutdown:\n",
        r#"{"other": true}"#,
        "not: [valid",
    ] {
        let r = supd.post_json(&format!("{path}/restart"), ADMIN_TOKEN, body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        r.error_message();
    }
    let r = supd.post_json(
        &format!("{}/restart", instance_path(&app, "nosuch")),
        ADMIN_TOKEN,
        "",
    );
    assert_eq!(r.status, 404, "{}", r.text());

    // Graceful: 204 once Docker is done; meanwhile state answers at once and a second restart
    // of the same instance is 409.
    let addr = supd.addr;
    let p = path.clone();
    let since = docker_now();
    let first = thread::spawn(move || {
        let mut c = Client::connect(addr);
        let auth = format!("Bearer {ADMIN_TOKEN}");
        c.send(
            "POST",
            &format!("{p}/restart"),
            &[("Authorization", &auth)],
            b"",
        );
        c.read_response(false)
    });
    // Docker has begun stopping `main` (its TERM is ignored for 2 s).
    supd.wait_until(Duration::from_secs(10), || {
        !kill_signals(&main, &since).is_empty()
    });
    let (status, _) = supd.get_json(&path);
    assert_eq!(status, 200);
    let second = supd.post_json(&format!("{path}/restart"), ADMIN_TOKEN, "");
    assert_eq!(second.status, 409, "{}", second.text());
    second.error_message();
    assert!(
        !first.is_finished(),
        "state and the 409 were answered while the restart was still running"
    );
    let r = first.join().unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    // Docker's own record of the stop: TERM, then KILL after the container's own stop timeout
    // (2 s), not Docker's default 10 s.
    let signals = kill_signals(&main, &since);
    assert_eq!(
        signals.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["15", "9"],
        "{signals:?}"
    );
    let gap = Duration::from_nanos((signals[1].0 - signals[0].0) as u64);
    assert!(
        gap >= Duration::from_millis(1500) && gap < Duration::from_secs(8),
        "TERM to KILL took {gap:?}"
    );
    for id in [&main, &side] {
        assert_eq!(inspect(id, "{{.State.Running}}"), "true");
    }
    supd.wait_until(Duration::from_secs(10), || {
        let now = restarts(&supd, &app, "svc");
        now.iter().zip(&before).all(|(n, b)| n.1 != b.1) && now[0].2 == 0
    });
    // The totals go on: Docker's restart before plus ours.
    supd.wait_until(Duration::from_secs(10), || {
        let now = restarts(&supd, &app, "svc");
        (now[0].2, now[0].3, now[1].2, now[1].3) == (0, 2, 0, 1)
    });
    let after = restarts(&supd, &app, "svc");

    // Immediate: kill then start, without a TERM and its stop timeout.
    let since = docker_now();
    let r = supd.request(
        "POST",
        &format!("{path}/restart"),
        &[
            ("Authorization", &format!("Bearer {ADMIN_TOKEN}")),
            ("Content-Type", "application/yaml"),
        ],
        b"no-delayed-shutdown: true\n",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    for id in [&main, &side] {
        let signals = kill_signals(id, &since);
        assert_eq!(
            signals.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
            ["9"],
            "{signals:?}"
        );
    }
    supd.wait_until(Duration::from_secs(10), || {
        let now = restarts(&supd, &app, "svc");
        now.iter().zip(&after).all(|(n, b)| n.1 != b.1)
    });
    supd.wait_until(Duration::from_secs(10), || {
        let now = restarts(&supd, &app, "svc");
        (now[0].2, now[0].3, now[1].2, now[1].3) == (0, 3, 0, 2)
    });
    let r = supd.post_json(
        &format!("{path}/restart"),
        ADMIN_TOKEN,
        r#"{"no-delayed-shutdown": true}"#,
    );
    assert_eq!(r.status, 204, "{}", r.text());
}

/// Now, as `docker events --since` takes it.
fn docker_now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

/// The signals Docker sent to container `id` since `since`: (time in ns, signal number).
fn kill_signals(id: &str, since: &str) -> Vec<(u128, String)> {
    let out = docker(&[
        "events",
        "--since",
        since,
        "--until",
        &docker_now(),
        "--filter",
        &format!("container={id}"),
        "--filter",
        "event=kill",
        "--format",
        "{{.TimeNano}} {{.Actor.Attributes.signal}}",
    ]);
    out.lines()
        .filter_map(|l| {
            let (t, s) = l.split_once(' ')?;
            Some((t.parse().ok()?, s.to_string()))
        })
        .collect()
}
