//! Processes supd starts in a container (one-shot exec and exec-interactive) are confined like
//! the container's first process: capability sets, no_new_privs, seccomp filters, LSM label,
//! resource limits; and they reach no descriptor of supd's. Compared with the init's own
//! `/proc/<pid>/status` for a default container, a `--cap-drop ALL --security-opt
//! no-new-privileges` one, a privileged one and one whose user is not root.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::*;

const STATUS_FIELDS: &[&str] = &[
    "Uid",
    "Gid",
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
    "Seccomp",
    "Seccomp_filters",
];

#[derive(Clone, Copy, Debug)]
enum Via {
    Exec,
    Interactive,
}

struct Target<'a> {
    supd: &'a Supd,
    app: String,
    id: String,
}

impl Target<'_> {
    fn init_pid(&self) -> u32 {
        pid_of(&self.id)
    }

    fn base(&self) -> String {
        format!(
            "/v1/state/applications/{}/service-instances/web-1/containers/web",
            self.app
        )
    }

    /// Runs `cmd` in the container through supd: (exit code, merged output).
    fn run(&self, via: Via, cmd: &str) -> (i64, String) {
        match via {
            Via::Exec => {
                let body = serde_json::json!({ "cmd": cmd }).to_string();
                let path = format!("{}/exec", self.base());
                let r = self.supd.post_json(&path, ADMIN_TOKEN, &body);
                assert_eq!(r.status, 200, "{cmd}: {}", r.text());
                let v = r.json();
                let code = v["exit-code"].as_i64().unwrap_or(-1);
                (code, v["output"].as_str().unwrap_or_default().to_owned())
            }
            Via::Interactive => self.run_interactive(cmd),
        }
    }

    fn run_interactive(&self, cmd: &str) -> (i64, String) {
        let path = format!(
            "{}/exec-interactive?cmd={}&tty=false",
            self.base(),
            encode(cmd)
        );
        let mut ws = ws_client(self.supd.addr, &path, INTERACTIVE);
        let (out, close) = read_to_close(&mut ws, |_| {});
        let reason = close.map(|(_, reason)| reason).unwrap_or_default();
        // The reason carries the exit status: {"exit-code":N} or {"signal":N}.
        let code = serde_json::from_str::<serde_json::Value>(&reason)
            .ok()
            .and_then(|v| v["exit-code"].as_i64())
            .unwrap_or(-1);
        (code, String::from_utf8_lossy(&out).into_owned())
    }

    fn output(&self, via: Via, cmd: &str) -> String {
        let (code, out) = self.run(via, cmd);
        assert_eq!(code, 0, "{cmd} via {via:?}: {out}");
        out
    }
}

fn fields(status: &str) -> BTreeMap<String, String> {
    let map: BTreeMap<String, String> = status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| STATUS_FIELDS.contains(k))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect();
    assert_eq!(map.len(), STATUS_FIELDS.len(), "{status}");
    map
}

fn host_file(pid: u32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap()
}

/// An instance `web-1` of a new application, container `web`, with `extra` docker options.
fn start<'a>(cs: &Containers, supd: &'a Supd, extra: &[&str]) -> Option<Target<'a>> {
    let app = unique("confine");
    let id = match try_managed(cs, &app, "web", extra, SLEEPER) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("docker run {extra:?}: {e}");
            return None;
        }
    };
    let target = Target { supd, app, id };
    let path = format!("{}/exec", target.base());
    let body = r#"{"cmd":"true"}"#;
    supd.wait_until(Duration::from_secs(20), || {
        supd.post_json(&path, ADMIN_TOKEN, body).status == 200
    });
    Some(target)
}

/// Everything the exec'd process must share with the init, through both endpoints.
fn assert_confined_like_init(t: &Target<'_>, what: &str) {
    let pid = t.init_pid();
    let init = fields(&host_file(pid, "status"));
    let init_limits = host_file(pid, "limits");
    for via in [Via::Exec, Via::Interactive] {
        let context = format!("{what} via {via:?}");
        let got = fields(&t.output(via, "cat /proc/self/status"));
        assert_eq!(got, init, "{context}: status differs from the init's");
        // The init seen from inside is the same process.
        assert_eq!(
            fields(&t.output(via, "cat /proc/1/status")),
            init,
            "{context}"
        );
        assert_eq!(
            t.output(via, "cat /proc/self/limits"),
            init_limits,
            "{context}: limits differ from the init's"
        );
        // An LSM label where the kernel has one; without one both reads fail alike.
        let own = t.run(via, "cat /proc/self/attr/current");
        let theirs = t.run(via, "cat /proc/1/attr/current");
        assert_eq!(
            (own.0, own.1.replace("/proc/self/", "/proc/1/")),
            theirs,
            "{context}: LSM label"
        );
        if theirs.0 != 0 {
            eprintln!(
                "{context}: no LSM label on this kernel ({}), skipped",
                theirs.1.trim()
            );
        }
        // Only stdio, plus the directory ls itself opens.
        let fds: BTreeSet<String> = t
            .output(via, "ls /proc/self/fd")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let want: BTreeSet<String> = ["0", "1", "2", "3"].map(String::from).into();
        assert_eq!(fds, want, "{context}: descriptors");
        assert_eq!(
            t.output(via, "readlink /proc/self/cwd"),
            "/\n",
            "{context}: cwd"
        );
    }
    // The init was neither left stopped nor traced by the filter copy.
    let status = host_file(pid, "status");
    assert!(status.contains("TracerPid:\t0\n"), "{what}: {status}");
    let state = status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .unwrap();
    assert!(
        !matches!(state.split_whitespace().next(), Some("t" | "T")),
        "{what}: {state}"
    );
}

/// Lowers supd's soft limits (as if it had raised them: any difference will do) so that a
/// process inheriting them would show it.
fn skew_supd_limits(supd: &Supd, init_pid: u32) {
    let st = Command::new("prlimit")
        .arg("--pid")
        .arg(supd.pid().to_string())
        .args(["--nofile=512:", "--core=4096:", "--stack=4194304:"])
        .status()
        .unwrap();
    assert!(st.success());
    assert_ne!(
        host_file(supd.pid(), "limits"),
        host_file(init_pid, "limits"),
        "supd's limits must differ from the container's for the test to mean anything"
    );
}

/// A syscall that Docker's default seccomp profile refuses but that needs no capability:
/// creating a user namespace.
const BLOCKED: &str = "unshare -U true";

#[test]
fn default_container() {
    let cs = Containers::new("confine-default");
    let supd = Supd::start();
    let t = start(&cs, &supd, &[]).expect("a default container starts");
    skew_supd_limits(&supd, t.init_pid());
    let init = fields(&host_file(t.init_pid(), "status"));
    assert_eq!(init["Seccomp"], "2", "Docker's default profile is on");
    assert_confined_like_init(&t, "default");
    for via in [Via::Exec, Via::Interactive] {
        let (code, out) = t.run(via, BLOCKED);
        assert_ne!(code, 0, "{BLOCKED} via {via:?} must be refused: {out}");
        assert!(out.contains("Operation not permitted"), "{via:?}: {out}");
    }

    // A new init (restart) has its filters read again and still matches.
    let old = t.init_pid();
    docker(&["restart", "-t", "0", &t.id]);
    supd.wait_until(Duration::from_secs(20), || {
        t.init_pid() != old && {
            let (code, out) = t.run(Via::Exec, "cat /proc/1/status");
            code == 0 && out.contains("PPid:\t0")
        }
    });
    assert_confined_like_init(&t, "default, restarted");
}

#[test]
fn no_capabilities_and_no_new_privs() {
    let cs = Containers::new("confine-nnp");
    let supd = Supd::start();
    let extra = ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"];
    let t = start(&cs, &supd, &extra).expect("the container starts");
    skew_supd_limits(&supd, t.init_pid());
    let init = fields(&host_file(t.init_pid(), "status"));
    assert_eq!(init["NoNewPrivs"], "1");
    assert_eq!(init["CapBnd"], "0000000000000000");
    assert_confined_like_init(&t, "cap-drop ALL, no-new-privileges");
    let (code, out) = t.run(Via::Exec, BLOCKED);
    assert_ne!(code, 0, "{out}");
}

#[test]
fn privileged_container() {
    let cs = Containers::new("confine-privileged");
    let supd = Supd::start();
    // Docker can only start a privileged container where it holds every capability itself;
    // where the host lacks one, the nearest: all capabilities Docker can give, no seccomp.
    let t = match start(&cs, &supd, &["--privileged"]) {
        Some(t) => t,
        None => {
            let own = fields(&host_file(std::process::id(), "status"));
            eprintln!(
                "--privileged cannot start here (host bounding set {}); using all \
                 capabilities but CAP_SYS_RESOURCE and no seccomp instead",
                own["CapBnd"]
            );
            let extra = [
                "--cap-add",
                "ALL",
                "--cap-drop",
                "SYS_RESOURCE",
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "apparmor=unconfined",
            ];
            start(&cs, &supd, &extra).expect("an unconfined container starts")
        }
    };
    skew_supd_limits(&supd, t.init_pid());
    let init = fields(&host_file(t.init_pid(), "status"));
    assert_eq!(init["Seccomp"], "0");
    assert_confined_like_init(&t, "privileged");
    // Without a filter the same call succeeds: the refusal elsewhere is seccomp's.
    for via in [Via::Exec, Via::Interactive] {
        let (code, out) = t.run(via, BLOCKED);
        assert_eq!(code, 0, "{BLOCKED} via {via:?}: {out}");
    }
}

#[test]
fn non_root_user() {
    let cs = Containers::new("confine-user");
    let supd = Supd::start();
    let t = start(&cs, &supd, &["--user", "app"]).expect("the container starts");
    skew_supd_limits(&supd, t.init_pid());
    let init = fields(&host_file(t.init_pid(), "status"));
    assert!(init["Uid"].starts_with("1000"), "{init:?}");
    assert_eq!(init["CapPrm"], "0000000000000000");
    assert_ne!(init["CapBnd"], "0000000000000000");
    assert_confined_like_init(&t, "--user app");
    let (code, out) = t.run(Via::Exec, BLOCKED);
    assert_ne!(code, 0, "{out}");
}
