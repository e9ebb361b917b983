//! Docker Swarm tasks as service instances, against a real single-node swarm.
//!
//! `docker swarm init` changes an engine for good (a manager's state, overlay networks, a
//! `docker_gwbridge`), and the machine's shared engine serves every other test, so this test
//! runs a private `dockerd` (see `common::private_docker`), makes it a swarm of one node,
//! deploys a stack of two services with `docker stack deploy` (one replicated three times,
//! one global) and points a `supd` at it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tungstenite::Message;

/// A private engine that is a single-node swarm; it leaves the swarm before the engine goes
/// (Swarm would otherwise start again the tasks the engine's cleanup removes).
struct SwarmEngine {
    engine: PrivateDocker,
    gateway: String,
}

impl SwarmEngine {
    fn new() -> SwarmEngine {
        // Swarm mode refuses `--live-restore`.
        let engine = PrivateDocker::with_live_restore("swm", 83, false);
        engine.load_test_image();
        // The bridge that gives overlay-attached containers a way out: made by hand so it
        // has a name and addresses of its own, not the host-wide `docker_gwbridge` name.
        // Made once `swarm` exists, so that its drop removes it even if what follows fails.
        let swarm = SwarmEngine {
            engine,
            gateway: format!("swmgw{}", std::process::id() % 100_000),
        };
        swarm.docker(&[
            "network",
            "create",
            "--driver=bridge",
            "--subnet=10.232.83.0/24",
            "--opt",
            &format!("com.docker.network.bridge.name={}", swarm.gateway),
            "--opt",
            "com.docker.network.bridge.enable_icc=false",
            "--opt",
            "com.docker.network.bridge.enable_ip_masquerade=false",
            "docker_gwbridge",
        ]);
        let port = free_port();
        swarm.docker(&[
            "swarm",
            "init",
            "--advertise-addr=127.0.0.1",
            &format!("--listen-addr=127.0.0.1:{port}"),
        ]);
        swarm
    }

    fn docker(&self, args: &[&str]) -> String {
        self.engine.docker(args)
    }

    /// The ids of this engine's containers whose names start with `prefix`, with their state.
    fn containers(&self, prefix: &str) -> Vec<(String, String)> {
        self.docker(&[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("name={prefix}"),
            "--format",
            "{{.ID}} {{.State}}",
        ])
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, state)| (id.to_string(), state.to_string()))
        .collect()
    }
}

impl Drop for SwarmEngine {
    fn drop(&mut self) {
        let host = self.engine.host();
        let docker = |args: &[&str]| {
            let _ = Command::new("docker")
                .args(["-H", &host])
                .args(args)
                .output();
        };
        docker(&["swarm", "leave", "--force"]);
        docker(&["network", "rm", "docker_gwbridge"]);
        let _ = Command::new("ip")
            .args(["link", "del", &self.gateway])
            .output();
    }
}

const STACK: &str = r#"version: "3.8"
services:
  web:
    image: supd-test-busybox:latest
    # A TCP echo on port 7; the shell leaves at once on SIGTERM (a graceful stop).
    command: ["sh", "-c", "trap 'exit 0' TERM; nc -ll -p 7 -e cat & wait"]
    deploy:
      replicas: 3
      restart_policy: {condition: any, delay: 0s}
  agent:
    image: supd-test-busybox:latest
    command: ["sleep", "3600"]
    deploy:
      mode: global
      restart_policy: {condition: any, delay: 0s}
"#;

fn list_path(app: &str) -> String {
    format!("/v1/state/applications/{app}/service-instances")
}

fn si_path(app: &str, si: &str) -> String {
    format!("/v1/state/applications/{app}/service-instances/{si}")
}

/// The instances supd lists: short name -> (container id, oper-status), and the whole answer.
fn listed(supd: &Supd, app: &str) -> (Vec<(String, String, String)>, Value) {
    let (status, v) = supd.get_json(&list_path(app));
    assert_eq!(status, 200, "{v}");
    let prefix = format!("acme.{app}.");
    let rows = v
        .as_array()
        .unwrap()
        .iter()
        .map(|si| {
            let name = si["name"].as_str().unwrap();
            (
                name.strip_prefix(&prefix).unwrap_or(name).to_string(),
                si["containers"][0]["id"].as_str().unwrap_or("").to_string(),
                si["oper-status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    (rows, v)
}

fn names(rows: &[(String, String, String)]) -> Vec<&str> {
    rows.iter().map(|r| r.0.as_str()).collect()
}

/// The container id (12 characters) supd shows for instance `si`, once it runs.
fn running_id(supd: &Supd, app: &str, si: &str) -> Option<String> {
    let (rows, _) = listed(supd, app);
    rows.into_iter()
        .find(|r| r.0 == si && r.2 == "running")
        .map(|r| r.1)
}

fn restart(supd: &Supd, app: &str, si: &str, body: &str) -> (HttpResponse, Duration) {
    let t = Instant::now();
    let r = supd.post_json(&format!("{}/restart", si_path(app, si)), ADMIN_TOKEN, body);
    (r, t.elapsed())
}

/// Restart answers 204 only once the replacement runs: at that moment the engine runs a new
/// container in the slot, supd shows it as the instance, and the old task's container,
/// which Swarm keeps stopped, is not shown anywhere.
fn check_replaced(swarm: &SwarmEngine, supd: &Supd, app: &str, si: &str, old: &str) {
    let slot = si.rsplit_once('-').unwrap().1;
    let service = si.rsplit_once('-').unwrap().0;
    let tasks = swarm.containers(&format!("{app}_{service}.{slot}."));
    let old_task = tasks.iter().find(|(id, _)| id.starts_with(old));
    assert!(
        old_task.is_some_and(|(_, state)| state == "exited"),
        "Swarm keeps the old task's container, stopped: {tasks:?}"
    );
    let new: Vec<&(String, String)> = tasks
        .iter()
        .filter(|(id, s)| !id.starts_with(old) && s == "running")
        .collect();
    assert_eq!(new.len(), 1, "one replacement runs: {tasks:?}");
    let (rows, v) = listed(supd, app);
    let row = rows.iter().find(|r| r.0 == si).unwrap();
    assert!(
        new[0].0.starts_with(&row.1),
        "the replacement is shown: {v}"
    );
    assert_eq!(row.2, "running", "{v}");
    assert_eq!(
        names(&rows),
        ["agent-1", "web-1", "web-2", "web-3"],
        "the old task is no instance of its own: {v}"
    );
    let (_, si_v) = supd.get_json(&si_path(app, si));
    assert_eq!(
        si_v["containers"].as_array().unwrap().len(),
        1,
        "the old task is no container of the instance: {si_v}"
    );
}

#[test]
fn swarm_tasks_are_service_instances() {
    let begin = Instant::now();
    ensure_image();
    let swarm = SwarmEngine::new();
    // A stack name is the application; it must be a name the API accepts.
    let app = format!("swarm{}", std::process::id());
    let dir = TempDir::new();
    let compose = dir.path().join("stack.yml");
    std::fs::write(&compose, STACK).unwrap();
    swarm.docker(&[
        "stack",
        "deploy",
        "--resolve-image=never",
        "-c",
        compose.to_str().unwrap(),
        &app,
    ]);
    let supd = Supd::start_with(SupdOptions {
        docker_socket: Some(swarm.engine.socket()),
        ..Default::default()
    });

    // Three replicas and one global task (one per node: N = 1), named after the stack.
    supd.wait_until(Duration::from_secs(60), || {
        let (rows, _) = listed(&supd, &app);
        names(&rows) == ["agent-1", "web-1", "web-2", "web-3"]
            && rows.iter().all(|r| r.2 == "running")
    });
    let deployed = begin.elapsed();
    let (_, v) = listed(&supd, &app);
    for si in v.as_array().unwrap() {
        let name = si["name"].as_str().unwrap();
        let service = if name.contains(".web-") {
            "web"
        } else {
            "agent"
        };
        assert_eq!(si["host"], "test-host", "{si}");
        assert_eq!(si["ready"], true, "{si}");
        assert_eq!(
            si["containers"][0]["name"],
            format!("{name}.{service}"),
            "{si}"
        );
        assert_eq!(
            si["application-network"]["shared-application-network"],
            format!("{app}_default"),
            "{si}"
        );
    }
    // supd's ids are Docker's: each instance is the task of its slot.
    let (rows, _) = listed(&supd, &app);
    for (si, id, _) in &rows {
        let (service, n) = si.rsplit_once('-').unwrap();
        let prefix = if service == "agent" {
            format!("{app}_agent.")
        } else {
            format!("{app}_web.{n}.")
        };
        let tasks = swarm.containers(&prefix);
        assert!(
            tasks.len() == 1 && tasks[0].0.starts_with(id.as_str()),
            "{si}: {tasks:?}"
        );
    }

    // Exec into a task: it runs in that task's container (its hostname is its short id).
    let web2 = running_id(&supd, &app, "web-2").unwrap();
    let r = supd.post_json(
        &format!("{}/containers/web/exec", si_path(&app, "web-2")),
        ADMIN_TOKEN,
        r#"{"cmd": "hostname"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["output"], format!("{web2}\n"));
    assert_eq!(r.json()["exit-code"], 0);
    let r = supd.post_json(
        &format!("{}/containers/agent/exec", si_path(&app, "agent-1")),
        ADMIN_TOKEN,
        r#"{"cmd": "sh -c 'exit 3'"}"#,
    );
    assert_eq!(r.json()["exit-code"], 3, "{}", r.text());

    // An interactive session in a task (`web-1`, container `web`).
    let mut ix = ws_client(
        supd.addr,
        &interactive_path(&app, "cat", false),
        INTERACTIVE,
    );
    ix.send(Message::binary(b"\x10typed into a task\n".to_vec()))
        .unwrap();
    ws_read_until(&mut ix, &mut Vec::new(), "typed into a task\n");
    drop(ix);

    // Connect into a task: its echo server on the task's own loopback.
    let mut ws = ws_client(
        supd.addr,
        &format!("{}/connect?protocol=tcp&port=7", si_path(&app, "web-1")),
        CONNECT,
    );
    ws.send(Message::binary(b"through the tunnel\n".to_vec()))
        .unwrap();
    ws_read_until(&mut ws, &mut Vec::new(), "through the tunnel\n");
    drop(ws);

    // Restart of a replica: its container is stopped, Swarm starts a new task in the slot,
    // and the answer comes once that one runs.
    let (r, graceful) = restart(&supd, &app, "web-2", "");
    assert_eq!(r.status, 204, "{}", r.text());
    check_replaced(&swarm, &supd, &app, "web-2", &web2);
    let web2_new = running_id(&supd, &app, "web-2").unwrap();
    assert_ne!(web2_new, web2);
    // The new task is the one entered now.
    let r = supd.post_json(
        &format!("{}/containers/web/exec", si_path(&app, "web-2")),
        ADMIN_TOKEN,
        r#"{"cmd": "hostname"}"#,
    );
    assert_eq!(r.json()["output"], format!("{web2_new}\n"), "{}", r.text());

    // At once (killed): the same. The global task too (its `sleep` ignores SIGTERM).
    let web3 = running_id(&supd, &app, "web-3").unwrap();
    let (r, immediate) = restart(&supd, &app, "web-3", r#"{"no-delayed-shutdown": true}"#);
    assert_eq!(r.status, 204, "{}", r.text());
    check_replaced(&swarm, &supd, &app, "web-3", &web3);
    let agent = running_id(&supd, &app, "agent-1").unwrap();
    let (r, _) = restart(&supd, &app, "agent-1", "no-delayed-shutdown: true");
    assert_eq!(r.status, 204, "{}", r.text());
    let tasks = swarm.containers(&format!("{app}_agent."));
    assert!(
        tasks
            .iter()
            .any(|(id, s)| !id.starts_with(&agent) && s == "running"),
        "{tasks:?}"
    );
    assert_ne!(running_id(&supd, &app, "agent-1").unwrap(), agent);

    // Scaling down removes the instance of the slot Swarm gives up (once Swarm removes its
    // task's container; it is stopped first).
    let scaled = Instant::now();
    swarm.docker(&["service", "scale", "--detach", &format!("{app}_web=2")]);
    supd.wait_until(Duration::from_secs(60), || {
        let (rows, _) = listed(&supd, &app);
        names(&rows) == ["agent-1", "web-1", "web-2"]
    });
    let r = supd.get(&si_path(&app, "web-3"), ADMIN_TOKEN);
    assert_eq!(r.status, 404, "{}", r.text());
    let scale_down = scaled.elapsed();

    eprintln!(
        "swarm test: deployed and listed in {deployed:?}, graceful restart {graceful:?}, \
         immediate restart {immediate:?}, scale-down seen in {scale_down:?}, \
         total {:?}",
        begin.elapsed()
    );
}
