//! The state endpoints against a real Docker engine, through a real `supd` process.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn list_path(app: &str) -> String {
    format!("/v1/state/applications/{app}/service-instances")
}

/// An application with one instance of two containers plus a completed init container, via
/// supd's own labels; and a Compose-labelled application with two instances.
#[test]
fn instances_from_supd_and_compose_labels() {
    let cs = Containers::new("state-labels");
    let app = unique("lbl");
    let net = format!("{app}-net");
    docker(&[
        "network",
        "create",
        "--label",
        &format!("supd.test={}", cs.label),
        &net,
    ]);
    let _net_guard = NetworkGuard(net.clone());
    let l = |k: &str, v: &str| format!("{k}={v}");
    let init = managed(
        &cs,
        &app,
        "web",
        &[
            "--label",
            "io.supd.container=setup",
            "--label",
            "io.supd.init-container=true",
            "--label",
            "io.supd.application-version=2.4.2",
        ],
        &[IMAGE, "true"],
    );
    let main = managed(
        &cs,
        &app,
        "web",
        &[
            "--label",
            "io.supd.container=main",
            "--label",
            "io.supd.application-version=2.4.2",
            "--network",
            &net,
            "--network-alias",
            "web-1",
            "--tmpfs",
            "/scratch:size=64m",
            "--device",
            "/dev/null:/dev/xnull",
        ],
        &[IMAGE, "sleep", "1000"],
    );
    let side = managed(
        &cs,
        &app,
        "web",
        &[
            "--label",
            "io.supd.container=side",
            "--network",
            &format!("container:{main}"),
        ],
        &[IMAGE, "sleep", "1000"],
    );
    let compose_app = unique("cmp");
    for n in ["1", "2"] {
        cs.run(&[
            "--label",
            &l("com.docker.compose.project", &compose_app),
            "--label",
            "com.docker.compose.service=db",
            "--label",
            &l("com.docker.compose.container-number", n),
            IMAGE,
            "sleep",
            "1000",
        ]);
    }
    let supd = Supd::start();
    // The init container may still be running when supd syncs; wait for it to complete.
    supd.wait_until(Duration::from_secs(10), || {
        let (_, v) = supd.get_json(&list_path(&app));
        v[0]["init-containers"][0]["oper-status"] == "completed"
    });
    let (status, v) = supd.get_json(&list_path(&app));
    assert_eq!(status, 200);
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 1, "{v:#}");
    let si = &list[0];
    assert_eq!(si["name"], format!("acme.{app}.web-1"));
    assert_eq!(si["application-version"], "2.4.2");
    assert_eq!(si["oper-status"], "running");
    assert_eq!(si["ready"], true);
    assert_eq!(si["host"], "test-host");
    let ip = inspect(
        &main,
        &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
    );
    let prefix = inspect(
        &main,
        &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPPrefixLen}}}}"),
    );
    assert_eq!(
        si["application-network"]["shared-application-network"],
        net.as_str()
    );
    assert_eq!(
        si["application-network"]["ips"],
        serde_json::json!([format!("{ip}/{prefix}")])
    );
    let records = si["application-network"]["dns-records"].as_array().unwrap();
    assert!(
        records
            .iter()
            .any(|r| r == &Value::from(format!("web-1. 600 IN A {ip}"))),
        "{records:?}"
    );
    assert_eq!(si["ephemeral-volumes"][0]["name"], "/scratch");
    assert_eq!(si["ephemeral-volumes"][0]["size"], "64m");
    let containers = si["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&format!("acme.{app}.web-1.main").as_str()),
        "{names:?}"
    );
    assert!(
        names.contains(&format!("acme.{app}.web-1.side").as_str()),
        "{names:?}"
    );
    let m = containers
        .iter()
        .find(|c| c["name"] == format!("acme.{app}.web-1.main"))
        .unwrap();
    assert_eq!(m["id"], &main[..12]);
    assert_eq!(m["oper-status"], "running");
    assert_eq!(m["ready"], true);
    assert_eq!(m["current-restarts"], 0);
    assert_eq!(m["total-restarts"], 0);
    assert_eq!(m["devices"], serde_json::json!(["/dev/xnull"]));
    let started = inspect(&main, "{{.State.StartedAt}}");
    assert_eq!(
        m["start-time"].as_str().unwrap(),
        &format!("{}Z", &started[..23])
    );
    let s = containers
        .iter()
        .find(|c| c["name"] == format!("acme.{app}.web-1.side"))
        .unwrap();
    assert_eq!(s["id"], &side[..12]);
    let inits = si["init-containers"].as_array().unwrap();
    assert_eq!(inits.len(), 1);
    assert_eq!(inits[0]["name"], "setup");
    assert_eq!(inits[0]["id"], &init[..12]);
    assert_eq!(inits[0]["oper-status"], "completed");

    // The single instance, by its short name, is the same object.
    let (status, one) = supd.get_json(&format!("{}/web-1", list_path(&app)));
    assert_eq!(status, 200);
    assert_eq!(&one, si);

    // Compose labels.
    let (status, v) = supd.get_json(&list_path(&compose_app));
    assert_eq!(status, 200);
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            format!("acme.{compose_app}.db-1"),
            format!("acme.{compose_app}.db-2")
        ]
    );
    assert_eq!(
        v[0]["containers"][0]["name"],
        format!("acme.{compose_app}.db-1.db")
    );
}

/// Removes the test's network. It drops before the test's `Containers` (declared after it),
/// while they are still attached, so it removes them first: otherwise the network leaks and,
/// run after run, the engine's address pools run out.
struct NetworkGuard(String);
impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let ids = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("network={}", self.0)])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", "-v", id])
                .output();
        }
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

#[test]
fn fields_keys_count_and_formats() {
    let cs = Containers::new("state-fields");
    let app = unique("fld");
    for n in ["1", "2", "3"] {
        cs.run(&[
            "--label",
            &format!("io.supd.application={app}"),
            "--label",
            "io.supd.service=api",
            "--label",
            &format!("io.supd.instance={n}"),
            IMAGE,
            "sleep",
            "1000",
        ]);
    }
    let supd = Supd::start();
    let base = list_path(&app);
    let (_, v) = supd.get_json(&format!("{base}?count=true"));
    assert_eq!(v, serde_json::json!({"count": 3}));
    let (_, v) = supd.get_json(&format!("{base}?keys=true"));
    assert_eq!(
        v,
        serde_json::json!([
            {"name": format!("acme.{app}.api-1")},
            {"name": format!("acme.{app}.api-2")},
            {"name": format!("acme.{app}.api-3")}
        ])
    );
    let (_, v) = supd.get_json(&format!("{base}?fields=name;containers(name;oper-status)"));
    assert_eq!(
        v[0],
        serde_json::json!({
            "name": format!("acme.{app}.api-1"),
            "containers": [{"name": format!("acme.{app}.api-1.api"), "oper-status": "running"}]
        })
    );
    let (_, v) = supd.get_json(&format!("{base}/api-2?fields=containers/id,ready"));
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 2, "{v}");
    assert_eq!(v["ready"], true);
    assert_eq!(v["containers"][0].as_object().unwrap().len(), 1);

    // YAML on request, with each of the accepted media types.
    for accept in ["application/yaml", "application/x-yaml", "text/yaml"] {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let r = supd.request(
            "GET",
            &format!("{base}?count=true"),
            &[("Authorization", &auth), ("Accept", accept)],
            b"",
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/yaml"));
        let y: serde_yaml::Value = serde_yaml::from_slice(&r.body).unwrap();
        assert_eq!(y["count"], serde_yaml::Value::from(3));
    }
    // An error in YAML too.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = supd.request(
        "GET",
        &format!("{base}/api-9"),
        &[("Authorization", &auth), ("Accept", "application/yaml")],
        b"",
    );
    assert_eq!(r.status, 404);
    let y: serde_yaml::Value = serde_yaml::from_slice(&r.body).unwrap();
    assert!(
        y["errors"][0]["error-message"]
            .as_str()
            .unwrap()
            .contains("api-9")
    );

    // Bad parameters.
    for q in [
        "fields=a((b",
        "fields=",
        "keys=yes",
        "keys=true&count=true",
        "bogus=1",
        "fields=a&fields=b",
    ] {
        let r = supd.get(&format!("{base}?{q}"), ADMIN_TOKEN);
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(!r.error_message().is_empty());
    }
    // An application with nothing here is an empty list; site handling.
    let (s, v) = supd.get_json(&list_path("nothing-here"));
    assert_eq!((s, v), (200, serde_json::json!([])));
    let (s, _) = supd.get_json(&format!("{base}?site=test-site&count=true"));
    assert_eq!(s, 200);
    let r = supd.get(&format!("{base}?site=elsewhere"), ADMIN_TOKEN);
    assert_eq!(r.status, 404);
    assert!(r.error_message().contains("unknown site"));
    // HEAD has the headers of GET and no body.
    let r = supd.request("HEAD", &base, &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert!(
        r.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 0
    );
}

#[test]
fn auth_and_http_errors() {
    let supd = Supd::start();
    let p = list_path("app-a");
    let r = supd.request("GET", &p, &[], b"");
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    assert!(!r.error_message().is_empty());
    assert_eq!(supd.get(&p, "wrong-token").status, 401);
    assert_eq!(supd.get(&p, READER_TOKEN).status, 200);
    // The "other" token may only touch other-* applications.
    assert_eq!(supd.get(&p, OTHER_TOKEN).status, 403);
    assert_eq!(supd.get(&list_path("other-x"), OTHER_TOKEN).status, 200);
    // Reading is not executing.
    let exec = "/v1/state/applications/app-a/service-instances/x-1/containers/c/exec";
    let r = supd.post_json(exec, READER_TOKEN, r#"{"cmd":"true"}"#);
    assert_eq!(r.status, 403, "{}", r.text());
    // Unknown paths, bad names, wrong methods.
    assert_eq!(supd.get("/v1/nope", ADMIN_TOKEN).status, 404);
    assert_eq!(
        supd.get(
            "/v1/state/applications/Bad_Name/service-instances",
            ADMIN_TOKEN
        )
        .status,
        400
    );
    assert_eq!(
        supd.get(&format!("{p}/notaninstance"), ADMIN_TOKEN).status,
        400
    );
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = supd.request("DELETE", &p, &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    let r = supd.request("GET", exec, &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST, OPTIONS"));
    let r = supd.request("OPTIONS", exec, &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("allow"), Some("POST, OPTIONS"));

    // 413: a body over the limit is refused from its Content-Length, before it is sent.
    let mut c = supd.connect();
    c.send_raw(
        format!("POST {exec} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 2000000\r\n\r\n")
            .as_bytes(),
    );
    let r = c.read_response(false);
    assert_eq!(r.status, 413);
    assert!(!r.error_message().is_empty());
    // 431: a head over 16 KiB.
    let mut c = supd.connect();
    let big = "x".repeat(20 * 1024);
    c.send_raw(format!("GET {p} HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes());
    let r = c.read_response(false);
    assert_eq!(r.status, 431);
    // 400: garbage.
    let mut c = supd.connect();
    c.send_raw(b"NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(c.read_response(false).status, 400);
    // And the daemon still answers everyone else.
    assert_eq!(supd.get(&p, ADMIN_TOKEN).status, 200);
}

#[test]
fn keep_alive_and_pipelining_in_order() {
    let supd = Supd::start();
    let mut c = supd.connect();
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}\r\n");
    let mut batch = String::new();
    for app in ["pa", "pb", "pc"] {
        batch.push_str(&format!(
            "GET {}?count=true HTTP/1.1\r\nHost: x\r\n{auth}\r\n",
            list_path(app)
        ));
    }
    batch.push_str(&format!("GET /v1/nope HTTP/1.1\r\nHost: x\r\n{auth}\r\n"));
    batch.push_str(&format!(
        "GET {}?keys=true HTTP/1.1\r\nHost: x\r\n{auth}\r\n",
        list_path("pd")
    ));
    c.send_raw(batch.as_bytes());
    for _ in 0..3 {
        let r = c.read_response(false);
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), serde_json::json!({"count": 0}));
    }
    assert_eq!(c.read_response(false).status, 404);
    let r = c.read_response(false);
    assert_eq!(r.json(), serde_json::json!([]));
    // Connection: close is honoured.
    c.send_raw(
        format!(
            "GET {} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n",
            list_path("pe")
        )
        .as_bytes(),
    );
    let r = c.read_response(false);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed_by_peer(Duration::from_secs(2)));
    // Chunked request bodies are accepted (the exec endpoint parses the body before 501/404).
    let mut c = supd.connect();
    c.send_raw(
        format!(
            "GET {} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            list_path("pf")
        )
        .as_bytes(),
    );
    assert_eq!(c.read_response(false).status, 200);
}

#[test]
fn head_timeout_gives_408() {
    let supd = Supd::start_with(SupdOptions {
        extra_args: vec![
            "--config".into(),
            write_config("limits:\n  head-timeout-ms: 300\n")
                .to_string_lossy()
                .into_owned(),
        ],
        ..Default::default()
    });
    let mut c = supd.connect();
    c.send_raw(b"GET /v1/state/appl");
    let t = Instant::now();
    let r = c.read_response(false);
    assert_eq!(r.status, 408);
    assert!(t.elapsed() < Duration::from_secs(5));
    // A second, complete request on another connection is unaffected.
    assert_eq!(supd.get(&list_path("x"), ADMIN_TOKEN).status, 200);
}

#[test]
fn sealed_until_sighup_fixes_the_tokens_file() {
    let supd = Supd::start_with(SupdOptions {
        tokens: false,
        wait_ready: false,
        ..Default::default()
    });
    let p = list_path("app-s");
    let r = supd.get(&p, ADMIN_TOKEN);
    assert_eq!(r.status, 503);
    assert!(
        r.error_message().starts_with("strongbox sealed: "),
        "{}",
        r.text()
    );
    // A broken file keeps it sealed.
    let tokens = supd.dir.path().join("tokens.yaml");
    std::fs::write(&tokens, "tokens: [ {name: x").unwrap();
    supd.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(supd.get(&p, ADMIN_TOKEN).status, 503);
    write_tokens(&tokens);
    supd.signal("HUP");
    supd.wait_until(Duration::from_secs(10), || {
        supd.get(&p, ADMIN_TOKEN).status == 200
    });
}

#[test]
fn state_follows_stop_and_start() {
    let cs = Containers::new("state-follow");
    let app = unique("flw");
    let id = managed(&cs, &app, "svc", &[], &[IMAGE, "sleep", "1000"]);
    let supd = Supd::start();
    let path = format!("{}/svc-1", list_path(&app));
    let status_of = || supd.get_json(&path).1["containers"][0]["oper-status"].clone();
    assert_eq!(status_of(), "running");
    let before = supd.get_json(&path).1["containers"][0]["start-time"].clone();
    docker(&["stop", "-t", "0", &id]);
    supd.wait_until(Duration::from_secs(10), || status_of() == "failed");
    let (_, v) = supd.get_json(&path);
    assert_eq!(v["ready"], false);
    docker(&["start", &id]);
    supd.wait_until(Duration::from_secs(10), || status_of() == "running");
    let after = supd.get_json(&path).1["containers"][0]["start-time"].clone();
    assert_ne!(before, after);
    // A new container appears, a removed one disappears.
    cs.run(&[
        "--label",
        &format!("io.supd.application={app}"),
        "--label",
        "io.supd.service=svc",
        "--label",
        "io.supd.instance=2",
        IMAGE,
        "sleep",
        "1000",
    ]);
    supd.wait_until(Duration::from_secs(10), || {
        supd.get_json(&format!("{}?count=true", list_path(&app))).1["count"] == 2
    });
    docker(&["rm", "-f", &id]);
    supd.wait_until(Duration::from_secs(10), || {
        supd.get(&path, ADMIN_TOKEN).status == 404
    });
}

/// A unix-socket proxy in front of Docker's socket that the test can take away and bring back.
struct DockerProxy {
    path: std::path::PathBuf,
    up: Arc<AtomicBool>,
}

impl DockerProxy {
    fn start(path: std::path::PathBuf) -> DockerProxy {
        let up = Arc::new(AtomicBool::new(true));
        let proxy = DockerProxy { path, up };
        proxy.serve();
        proxy
    }

    fn serve(&self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let up = self.up.clone();
        up.store(true, Ordering::SeqCst);
        std::thread::spawn(move || {
            let mut conns: Vec<(UnixStream, UnixStream)> = Vec::new();
            while up.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let upstream = UnixStream::connect("/var/run/docker.sock").unwrap();
                        let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                        conns.push((client.try_clone().unwrap(), upstream.try_clone().unwrap()));
                        pipe(client, upstream);
                        pipe(u2, c2);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            // Docker "goes away": every connection is cut and the socket disappears.
            for (a, b) in conns {
                let _ = a.shutdown(std::net::Shutdown::Both);
                let _ = b.shutdown(std::net::Shutdown::Both);
            }
        });
    }

    fn stop(&self) {
        self.up.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        let _ = std::fs::remove_file(&self.path);
    }
}

fn pipe(mut from: UnixStream, mut to: UnixStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown(std::net::Shutdown::Write);
                    return;
                }
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

#[test]
fn docker_going_away_and_coming_back() {
    let cs = Containers::new("state-docker");
    let app = unique("dkr");
    managed(&cs, &app, "svc", &[], &[IMAGE, "sleep", "1000"]);
    let dir = TempDir::new();
    let sock = dir.path().join("docker.sock");
    let proxy = DockerProxy::start(sock.clone());
    let supd = Supd::start_with(SupdOptions {
        docker_socket: Some(sock.clone()),
        ..Default::default()
    });
    let count = || supd.get_json(&format!("{}?count=true", list_path(&app)));
    assert_eq!(count(), (200, serde_json::json!({"count": 1})));
    proxy.stop();
    supd.wait_until(Duration::from_secs(10), || {
        let r = supd.get(&list_path(&app), ADMIN_TOKEN);
        r.status == 503 && r.error_message().starts_with("runtime unavailable")
    });
    // While Docker is away the world changes; after it is back supd shows the new world.
    cs.run(&[
        "--label",
        &format!("io.supd.application={app}"),
        "--label",
        "io.supd.service=svc",
        "--label",
        "io.supd.instance=2",
        IMAGE,
        "sleep",
        "1000",
    ]);
    proxy.serve();
    supd.wait_until(Duration::from_secs(15), || {
        count() == (200, serde_json::json!({"count": 2}))
    });
}

#[test]
fn sigterm_stops_cleanly() {
    let mut supd = Supd::start();
    assert_eq!(supd.get(&list_path("x"), ADMIN_TOKEN).status, 200);
    // An idle keep-alive connection does not hold the shutdown back.
    let mut idle = supd.connect();
    idle.send(
        "GET",
        &list_path("x"),
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        b"",
    );
    assert_eq!(idle.read_response(false).status, 200);
    supd.signal("TERM");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = supd.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "did not exit within 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(idle.is_closed_by_peer(Duration::from_secs(1)));
}

#[test]
fn connection_limit_answers_503_and_recovers() {
    // The busy connections below (a partial request each) end at the head timeout.
    let cfg = write_config("limits:\n  max-connections: 2\n  head-timeout-ms: 3000\n");
    let supd = Supd::start_with(SupdOptions {
        extra_args: vec!["--config".into(), cfg.to_string_lossy().into_owned()],
        wait_ready: false,
        ..Default::default()
    });
    // Both slots held by authenticated connections, each busy with a request in progress (a
    // silent one, or an idle keep-alive one, would be closed to make room for a newcomer:
    // tests/conn_hardening.rs).
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let held: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = supd.connect();
            c.send("GET", &list_path("x"), &[("Authorization", &auth)], b"");
            c.read_response(false);
            c.send_raw(b"GET /v1/");
            c
        })
        .collect();
    // The partial requests have arrived.
    std::thread::sleep(Duration::from_millis(200));
    let mut c = supd.connect();
    let r = c.read_response(false);
    assert_eq!(r.status, 503);
    assert!(r.error_message().contains("too many connections"));
    drop(held);
    supd.wait_until(Duration::from_secs(8), || {
        supd.get(&list_path("x"), ADMIN_TOKEN).status != 503
    });
}

#[test]
fn unix_socket_listener() {
    let dir = TempDir::new();
    let sock = dir.path().join("supd.sock");
    let supd = Supd::start_with(SupdOptions {
        extra_args: vec!["--listen".into(), format!("unix:{}", sock.display())],
        ..Default::default()
    });
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {}?count=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n",
        list_path("ux")
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.ends_with("{\"count\":0}\n"), "{out}");
    drop(supd);
}

#[test]
fn check_config_and_version() {
    let bin = env!("CARGO_BIN_EXE_supd");
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("supd "));
    let good = write_config("tenant: acme\nlimits:\n  max-connections: 10\n");
    let dir = TempDir::new();
    let tokens = dir.path().join("tokens.yaml");
    write_tokens(&tokens);
    let out = std::process::Command::new(bin)
        .args(["check-config", "--config"])
        .arg(&good)
        .arg("--tokens")
        .arg(&tokens)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = write_config("tenant: acme\nbogus-key: 1\n");
    let out = std::process::Command::new(bin)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bogus-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
