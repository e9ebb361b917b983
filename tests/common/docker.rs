//! Containers made with the real Docker CLI: the test image, containers labelled per test and
//! removed on drop, managed instances (the `io.supd.*` labels supd reads), and what the tests
//! ask Docker about them.

use std::process::{Command, Stdio};
use std::sync::Once;

use super::{repo, unique};

pub const IMAGE: &str = "supd-test-busybox:latest";
/// A container that just stays up: the image and its command.
pub const SLEEPER: &[&str] = &[IMAGE, "sleep", "3600"];

static IMAGE_ONCE: Once = Once::new();

/// Build the busybox test image unless it is there.
pub fn ensure_image() {
    IMAGE_ONCE.call_once(|| {
        let ok = Command::new("docker")
            .args(["image", "inspect", IMAGE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let st = Command::new(repo().join("scripts/build-test-image.sh"))
                .status()
                .expect("run build-test-image.sh");
            assert!(st.success(), "building the test image failed");
        }
    });
}

/// Containers created by one test, all carrying its own label, removed on drop.
pub struct Containers {
    pub label: String,
}

impl Containers {
    pub fn new(test: &str) -> Containers {
        ensure_image();
        let label = unique(test);
        Containers { label }
    }

    /// `docker run -d` with the test label plus `args` (options, then image and command).
    pub fn run(&self, args: &[&str]) -> String {
        self.try_run(args)
            .unwrap_or_else(|e| panic!("docker run {args:?}: {e}"))
    }

    /// The same; Docker's complaint when it refuses.
    pub fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("docker")
            .args(["run", "-d", "--label"])
            .arg(format!("supd.test={}", self.label))
            .args(args)
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8(out.stdout).unwrap().trim().to_string())
    }

    pub fn docker(&self, args: &[&str]) -> String {
        docker(args)
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=supd.test={}", self.label),
        ]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            let _ = Command::new("docker").args(&args).output();
        }
    }
}

/// The labels that make a container `svc` of instance `<svc>-1` of application `app`.
pub fn instance_labels(app: &str, svc: &str) -> Vec<String> {
    vec![
        "--label".into(),
        format!("io.supd.application={app}"),
        "--label".into(),
        format!("io.supd.service={svc}"),
        "--label".into(),
        "io.supd.instance=1".into(),
    ]
}

/// A managed container: instance `<svc>-1` of `app`, container named `svc`, started with the
/// docker options `opts`, then `image_cmd` (the image and its command).
pub fn managed(cs: &Containers, app: &str, svc: &str, opts: &[&str], image_cmd: &[&str]) -> String {
    let args = managed_args(app, svc, opts, image_cmd);
    cs.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The same; Docker's complaint when it refuses (some options need what a machine may lack).
pub fn try_managed(
    cs: &Containers,
    app: &str,
    svc: &str,
    opts: &[&str],
    image_cmd: &[&str],
) -> Result<String, String> {
    let args = managed_args(app, svc, opts, image_cmd);
    cs.try_run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `docker run` arguments for [`managed`].
pub fn managed_args(app: &str, svc: &str, opts: &[&str], image_cmd: &[&str]) -> Vec<String> {
    let mut args = instance_labels(app, svc);
    args.extend(opts.iter().chain(image_cmd).map(|s| s.to_string()));
    args
}

/// A running instance `web-1` of `app` whose container `web` serves an echo on TCP port 7
/// (busybox `nc -ll -e cat`) and can run commands.
pub fn echo_instance(cs: &Containers, app: &str) -> String {
    managed(cs, app, "web", &[], ECHO)
}

/// The image and command of an echo server on TCP port 7.
pub const ECHO: &[&str] = &[IMAGE, "nc", "-ll", "-p", "7", "-e", "cat"];

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn inspect(id: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, id])
}

/// The host pid of a container's first process.
pub fn pid_of(id: &str) -> u32 {
    inspect(id, "{{.State.Pid}}").parse().unwrap()
}

/// Whether a process running in container `id` has `needle` in its command line; fails the
/// test when Docker cannot list them.
pub fn top_has(id: &str, needle: &str) -> bool {
    docker(&["top", id, "-o", "pid,args"])
        .lines()
        .skip(1)
        .any(|l| l.contains(needle))
}

/// The same, but false when Docker cannot list them (the container may be gone by then).
pub fn top_has_if_listed(id: &str, needle: &str) -> bool {
    Command::new("docker")
        .args(["top", id, "-o", "pid,args"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .skip(1)
                .any(|l| l.contains(needle))
        })
        .unwrap_or(false)
}
