//! One-shot exec (`POST .../exec`) through a real `supd` into real busybox containers.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn exec_path(app: &str, svc: &str) -> String {
    format!("/v1/state/applications/{app}/service-instances/{svc}-1/containers/{svc}/exec")
}

fn run(supd: &Supd, path: &str, cmd: &str) -> Value {
    let body = serde_json::json!({ "cmd": cmd }).to_string();
    let r = supd.post_json(path, ADMIN_TOKEN, &body);
    assert_eq!(r.status, 200, "{cmd}: {}", r.text());
    r.json()
}

#[test]
fn exit_codes_signal_quoting_and_formats() {
    let cs = Containers::new("exec-codes");
    let app = unique("ex");
    managed(&cs, &app, "web", &[], SLEEPER);
    let supd = Supd::start();
    let p = exec_path(&app, "web");

    let v = run(&supd, &p, "true");
    assert_eq!(v["exit-code"], 0, "{v}");
    assert_eq!(v["output"], "");
    assert!(
        v.get("signal").is_none() && v.get("truncated").is_none(),
        "{v}"
    );
    assert_eq!(run(&supd, &p, "false")["exit-code"], 1);
    assert_eq!(run(&supd, &p, "sh -c 'exit 42'")["exit-code"], 42);
    let v = run(&supd, &p, "sh -c 'kill -9 $$'");
    assert_eq!(v["signal"], 9, "{v}");
    assert!(v.get("exit-code").is_none(), "{v}");

    // Quotes and spaces, split by POSIX rules without a shell.
    let v = run(&supd, &p, r#"echo "a  b" 'c  "d"' e\ f"#);
    assert_eq!(v["output"], "a  b c  \"d\" e f\n", "{v}");
    // No shell: no expansion, globbing or operators.
    let v = run(&supd, &p, "echo $HOME /etc/pass* a;b");
    assert_eq!(v["output"], "$HOME /etc/pass* a;b\n", "{v}");
    // stdout and stderr merged, stdin is /dev/null.
    let v = run(&supd, &p, "sh -c 'echo out; echo err >&2; cat; echo end'");
    assert_eq!(v["output"], "out\nerr\nend\n", "{v}");

    // A YAML body.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = supd.request(
        "POST",
        &p,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/yaml"),
        ],
        b"cmd: echo from yaml\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["output"], "from yaml\n");

    // Raw bytes with the status in a header.
    let r = supd.request(
        "POST",
        &p,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("Accept", "application/octet-stream"),
        ],
        br#"{"cmd": "sh -c 'printf \"\\377\\000x\"; exit 3'"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, b"\xff\x00x");
    assert_eq!(r.header("Supd-Exit-Code"), Some("3"));
    assert_eq!(r.header("Supd-Exit-Signal"), None);
    let r = supd.request(
        "POST",
        &p,
        &[
            ("Authorization", &auth),
            ("Accept", "application/octet-stream"),
        ],
        b"cmd: sh -c 'kill -TERM $$'",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Supd-Exit-Signal"), Some("15"));
    assert_eq!(r.header("Supd-Exit-Code"), None);

    // Invalid UTF-8 is replaced in JSON.
    let v = run(&supd, &p, r"printf 'a\377b'");
    assert_eq!(v["output"], "a\u{fffd}b");
}

#[test]
fn bad_requests_not_found_and_permissions() {
    let cs = Containers::new("exec-bad");
    let app = unique("ex");
    managed(&cs, &app, "web", &[], SLEEPER);
    let supd = Supd::start();
    let p = exec_path(&app, "web");
    for body in [
        "",
        "{}",
        r#"{"cmd": ""}"#,
        r#"{"cmd": "   "}"#,
        r#"{"cmd": null}"#,
    ] {
        let r = supd.post_json(&p, ADMIN_TOKEN, body);
        assert_eq!(r.status, 400, "{body:?}: {}", r.text());
    }
    let r = supd.post_json(&p, ADMIN_TOKEN, r#"{"cmd": "echo 'unterminated"}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    // Blank is what the word splitter skips; anything else makes a word, run as a shell
    // would: an empty program name or a no-break space is a program that is not found.
    for body in [r#"{"cmd": " \t\n"}"#, r#"{"cmd": "\\\n"}"#] {
        let r = supd.post_json(&p, ADMIN_TOKEN, body);
        assert_eq!(r.status, 400, "{body:?}: {}", r.text());
    }
    for cmd in ["''", "\"\" x", "\u{a0}", "\r"] {
        let v = run(&supd, &p, cmd);
        assert_eq!(v["exit-code"], 127, "{cmd:?}: {v}");
        assert!(v["output"].as_str().unwrap().contains("not found"), "{v}");
    }

    let v = run(&supd, &p, "no-such-program --flag");
    assert_eq!(v["exit-code"], 127, "{v}");
    let out = v["output"].as_str().unwrap();
    assert!(out.contains("no-such-program"), "{v}");
    let v = run(&supd, &p, "/etc/passwd");
    assert_eq!(v["exit-code"], 126, "{v}");

    assert_eq!(
        supd.post_json(&p, READER_TOKEN, r#"{"cmd": "true"}"#)
            .status,
        403
    );
    assert_eq!(
        supd.post_json(&p, OTHER_TOKEN, r#"{"cmd": "true"}"#).status,
        403
    );
    assert_eq!(supd.post_json(&p, "nope", r#"{"cmd": "true"}"#).status, 401);
    let missing = exec_path(&app, "nothere");
    assert_eq!(
        supd.post_json(&missing, ADMIN_TOKEN, r#"{"cmd": "true"}"#)
            .status,
        404
    );
}

#[test]
fn user_env_and_working_directory_from_the_container() {
    let cs = Containers::new("exec-user");
    let app = unique("ex");
    managed(
        &cs,
        &app,
        "web",
        &["--user", "1000:1000", "-e", "FOO=bar baz", "-w", "/tmp"],
        SLEEPER,
    );
    managed(&cs, &app, "named", &["--user", "app"], SLEEPER);
    managed(&cs, &app, "plain", &[], SLEEPER);
    managed(
        &cs,
        &app,
        "path",
        &["-e", "PATH=/nowhere"],
        &[IMAGE, "/bin/sleep", "3600"],
    );
    let supd = Supd::start();
    // The program is looked up on the container's PATH, not supd's.
    let p = exec_path(&app, "path");
    assert_eq!(run(&supd, &p, "ls /")["exit-code"], 127);
    assert_eq!(run(&supd, &p, "/bin/echo ok")["output"], "ok\n");
    let p = exec_path(&app, "web");
    assert_eq!(run(&supd, &p, "id -u")["output"], "1000\n");
    assert_eq!(run(&supd, &p, "id -g")["output"], "1000\n");
    assert_eq!(run(&supd, &p, "pwd")["output"], "/tmp\n");
    let env = run(&supd, &p, "env")["output"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(env.lines().any(|l| l == "FOO=bar baz"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    // Groups as the container's first process has them, none of supd's.
    let groups = |svc: &str| {
        let v = run(
            &supd,
            &exec_path(&app, svc),
            "sh -c 'grep Groups /proc/1/status; grep Groups /proc/self/status'",
        );
        let out = v["output"].as_str().unwrap().to_string();
        let (first, me) = out.split_once('\n').unwrap();
        assert_eq!(first.trim(), me.trim(), "{svc}");
        first.trim().to_string()
    };
    assert_eq!(groups("web"), "Groups:\t1000");
    groups("named");
    groups("plain");
    // Supplementary groups of a named user come from the container's /etc/group.
    let v = run(&supd, &exec_path(&app, "named"), "id -G");
    assert_eq!(v["output"], "1000 10\n", "{v}");
    let v = run(&supd, &exec_path(&app, "named"), "id");
    assert!(
        v["output"]
            .as_str()
            .unwrap()
            .starts_with("uid=1000(app) gid=1000"),
        "{v}"
    );
    let p = exec_path(&app, "plain");
    assert_eq!(run(&supd, &p, "id -u")["output"], "0\n");
    assert_eq!(run(&supd, &p, "pwd")["output"], "/\n");
}

#[test]
fn descriptors_cgroup_and_namespaces_are_the_containers() {
    let cs = Containers::new("exec-ns");
    let app = unique("ex");
    let id = managed(&cs, &app, "web", &[], SLEEPER);
    let pid = inspect(&id, "{{.State.Pid}}");
    let supd = Supd::start();
    let p = exec_path(&app, "web");

    let v = run(&supd, &p, "ls /proc/self/fd");
    let mut fds: Vec<u32> = v["output"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    fds.sort();
    // 0, 1, 2 and the directory ls is reading.
    assert_eq!(fds.len(), 4, "{v}");
    assert_eq!(&fds[..3], &[0, 1, 2], "{v}");
    let long = run(&supd, &p, "ls -l /proc/self/fd");
    let long = long["output"].as_str().unwrap();
    assert!(long.contains("0 -> /dev/null"), "{long}");

    // Signals as a new program expects them: none blocked, none ignored (supd blocks what it
    // reads from its signalfd, and Rust ignores SIGPIPE).
    let v = run(&supd, &p, "grep -E '^Sig(Blk|Ign)' /proc/self/status");
    assert_eq!(
        v["output"], "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
        "{v}"
    );

    let v = run(
        &supd,
        &p,
        "sh -c 'cat /proc/1/cgroup; echo ---; cat /proc/self/cgroup'",
    );
    let out = v["output"].as_str().unwrap();
    let (first, me) = out.split_once("---\n").unwrap();
    assert!(!first.is_empty());
    assert_eq!(first, me, "exec'd process is not in the container's cgroup");
    // /proc/1 inside is the container's first process: the PID namespace is the container's.
    let v = run(&supd, &p, "cat /proc/1/cmdline");
    assert_eq!(v["output"], "sleep\u{0}3600\u{0}");

    let v = run(
        &supd,
        &p,
        "sh -c 'for f in /proc/self/ns/*; do echo $f $(readlink $f); done'",
    );
    let inside: BTreeMap<String, String> = v["output"]
        .as_str()
        .unwrap()
        .lines()
        .map(|l| {
            let (f, link) = l.split_once(' ').unwrap();
            (f.rsplit('/').next().unwrap().to_string(), link.to_string())
        })
        .collect();
    for ns in ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"] {
        let host = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_eq!(
            inside.get(ns).map(String::as_str),
            Some(host.to_str().unwrap()),
            "{ns}: {inside:?}"
        );
    }
    // And supd itself did not move.
    let me = std::fs::read_link(format!("/proc/{}/ns/mnt", supd.pid())).unwrap();
    assert_ne!(me.to_str().unwrap(), inside["mnt"]);
}

#[test]
fn stopped_and_completed_init_containers_give_409() {
    let cs = Containers::new("exec-409");
    let app = unique("ex");
    let stopped = managed(&cs, &app, "web", &[], SLEEPER);
    docker(&["stop", "-t", "0", &stopped]);
    managed(
        &cs,
        &app,
        "job",
        &[
            "--label",
            "io.supd.init-container=true",
            "--label",
            "io.supd.container=setup",
        ],
        &[IMAGE, "true"],
    );
    managed(
        &cs,
        &app,
        "job",
        &["--label", "io.supd.container=main"],
        SLEEPER,
    );
    let supd = Supd::start();
    let init =
        format!("/v1/state/applications/{app}/service-instances/job-1/init-containers/setup/exec");
    supd.wait_until(Duration::from_secs(10), || {
        let (_, v) = supd.get_json(&format!("/v1/state/applications/{app}/service-instances"));
        v.as_array()
            .unwrap()
            .iter()
            .any(|si| si["init-containers"][0]["oper-status"] == "completed")
    });
    let r = supd.post_json(&exec_path(&app, "web"), ADMIN_TOKEN, r#"{"cmd": "true"}"#);
    assert_eq!(r.status, 409, "{}", r.text());
    let r = supd.post_json(&init, ADMIN_TOKEN, r#"{"cmd": "true"}"#);
    assert_eq!(r.status, 409, "{}", r.text());
    let main = format!("/v1/state/applications/{app}/service-instances/job-1/containers/main/exec");
    assert_eq!(run(&supd, &main, "echo ok")["output"], "ok\n");
}

#[test]
fn client_disconnect_kills_the_command() {
    let cs = Containers::new("exec-gone");
    let app = unique("ex");
    let id = managed(&cs, &app, "web", &[], SLEEPER);
    let supd = Supd::start();
    let p = exec_path(&app, "web");
    let mut c = supd.connect();
    let body = br#"{"cmd": "sh -c 'sleep 1000 & sleep 1001'"}"#;
    c.send_json(&p, ADMIN_TOKEN, body);
    supd.wait_until(Duration::from_secs(10), || {
        top_has(&id, "sleep 1000") && top_has(&id, "sleep 1001")
    });
    assert!(!supd.children().is_empty());
    drop(c);
    // TERM reaches the whole group at once (the default grace is 2 s; sleep dies on TERM).
    let t = Instant::now();
    supd.wait_until(Duration::from_secs(10), || {
        !top_has(&id, "sleep 1000") && !top_has(&id, "sleep 1001")
    });
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    supd.wait_until(Duration::from_secs(10), || supd.children().is_empty());
    // A command that ignores TERM is killed after the grace period.
    let mut c = supd.connect();
    let body = br#"{"cmd": "sh -c 'trap \"\" TERM; sleep 1002'"}"#;
    c.send_json(&p, ADMIN_TOKEN, body);
    supd.wait_until(Duration::from_secs(10), || top_has(&id, "sleep 1002"));
    drop(c);
    supd.wait_until(Duration::from_secs(10), || !top_has(&id, "sleep 1002"));
    supd.wait_until(Duration::from_secs(10), || supd.children().is_empty());
    // The daemon still serves, and a background child holding the output open does not
    // hold the answer.
    assert_eq!(run(&supd, &p, "echo alive")["output"], "alive\n");
    let t = Instant::now();
    let v = run(&supd, &p, "sh -c 'sleep 1003 & echo bg'");
    assert_eq!(v["output"], "bg\n", "{v}");
    assert_eq!(v["exit-code"], 0, "{v}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    supd.wait_until(Duration::from_secs(10), || supd.children().is_empty());
}

#[test]
fn output_cap_truncates() {
    let cs = Containers::new("exec-cap");
    let app = unique("ex");
    managed(&cs, &app, "web", &[], SLEEPER);
    let cfg = write_config("exec: {output-cap: 1000}\n");
    let supd = Supd::start_with(SupdOptions {
        extra_args: vec!["--config".into(), cfg.to_string_lossy().into_owned()],
        ..Default::default()
    });
    let p = exec_path(&app, "web");
    let v = run(&supd, &p, "sh -c 'yes abcdefghi | head -c 500000; exit 7'");
    assert_eq!(v["truncated"], true, "{v}");
    assert_eq!(v["exit-code"], 7, "{v}");
    let out = v["output"].as_str().unwrap();
    // The cap bounds the output as encoded: each newline is two bytes of JSON (`\n`), so
    // 909 characters (999 bytes) fit and the next newline would not.
    assert_eq!(out.len(), 909);
    assert!(out.starts_with("abcdefghi\nabcdefghi\n"));
    // Exactly the cap of bytes that JSON writes as they are: whole, not truncated.
    let v = run(
        &supd,
        &p,
        "sh -c 'yes abcdefghi | tr -cd a-z | head -c 1000'",
    );
    assert!(v.get("truncated").is_none(), "{v}");
    assert_eq!(v["output"].as_str().unwrap().len(), 1000);
    // 1000 NULs are 6000 bytes of JSON (`\u0000`): 166 of them fit.
    let v = run(&supd, &p, "head -c 1000 /dev/zero");
    assert_eq!(v["truncated"], true, "{v}");
    assert_eq!(v["output"].as_str().unwrap().len(), 166);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = supd.request(
        "POST",
        &p,
        &[
            ("Authorization", &auth),
            ("Accept", "application/octet-stream"),
        ],
        b"cmd: head -c 5000 /dev/zero",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1000);
    assert_eq!(r.header("Supd-Output-Truncated"), Some("true"));
    assert_eq!(r.header("Supd-Exit-Code"), Some("0"));
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn a_thousand_execs_leak_nothing() {
    let cs = Containers::new("exec-leak");
    let app = unique("ex");
    managed(&cs, &app, "web", &[], SLEEPER);
    let supd = Supd::start();
    let p = exec_path(&app, "web");
    // Warm up anything allocated lazily.
    for _ in 0..5 {
        run(&supd, &p, "true");
    }
    let fds = supd.fd_count();
    let t = Instant::now();
    std::thread::scope(|s| {
        for w in 0..4 {
            let (supd, p) = (&supd, &p);
            s.spawn(move || {
                let mut c = supd.connect();
                for i in 0..250 {
                    let cmd = format!(r#"{{"cmd": "echo {w}-{i}"}}"#);
                    c.send_json(p, ADMIN_TOKEN, cmd.as_bytes());
                    let r = c.read_response(false);
                    assert_eq!(r.status, 200, "{}", r.text());
                    assert_eq!(r.json()["output"], format!("{w}-{i}\n"));
                }
            });
        }
    });
    eprintln!("1000 execs in {:?}", t.elapsed());
    supd.wait_until(Duration::from_secs(10), || {
        supd.children().is_empty() && supd.fd_count() <= fds
    });
}

#[test]
fn many_execs_run_at_once() {
    let cs = Containers::new("exec-many");
    let app = unique("ex");
    managed(&cs, &app, "web", &[], SLEEPER);
    let supd = Supd::start();
    let p = exec_path(&app, "web");
    let t = Instant::now();
    std::thread::scope(|s| {
        for n in 0..100 {
            let (supd, p) = (&supd, &p);
            s.spawn(move || {
                let v = run(supd, p, &format!("sh -c 'sleep 1; echo {n}'"));
                assert_eq!(v["output"], format!("{n}\n"));
            });
        }
    });
    // One after another they would take 100 s.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    supd.wait_until(Duration::from_secs(10), || supd.children().is_empty());
}
