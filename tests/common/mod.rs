//! Shared helpers for the integration tests, all reachable through `use common::*;`:
//!
//! - [`daemon`]: a real `supd` process on a free port, and the figures of a process from /proc;
//! - [`raw`]: a plain HTTP/1.1 client over real sockets and websocket upgrades by hand;
//! - [`ws`]: websocket frames by hand, and tungstenite as a well-behaved client;
//! - [`docker`]: containers made with the real Docker CLI, managed instances;
//! - [`vm`]: VM launchers of the test VM image, waiting for their guest agent;
//! - here: tokens, unique names, temporary directories, config files, API paths, waiting.
#![allow(dead_code)]

pub mod daemon;
pub mod docker;
pub mod private_docker;
pub mod raw;
pub mod sites;
pub mod vm;
pub mod ws;

// Each test binary uses a part of these.
#[allow(unused_imports)]
pub use daemon::*;
#[allow(unused_imports)]
pub use docker::*;
#[allow(unused_imports)]
pub use private_docker::PrivateDocker;
#[allow(unused_imports)]
pub use raw::*;
#[allow(unused_imports)]
pub use sites::*;
#[allow(unused_imports)]
pub use vm::*;
#[allow(unused_imports)]
pub use ws::*;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "supd_test_admin_token_0123456789abcdef";
pub const READER_TOKEN: &str = "supd_test_reader_token_0123456789abcdef";
/// May do everything, but only on applications matching `other-*`.
pub const OTHER_TOKEN: &str = "supd_test_other_token_0123456789abcdef";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A name unique to this test run, usable as an application name.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}", std::process::id())
}

pub fn sha256_hex(s: &str) -> String {
    supd::testing::auth::hash_hex(s)
}

pub fn write_tokens(path: &Path) {
    let yaml = format!(
        "tokens:\n  - name: admin\n    sha256: \"{}\"\n    operations: [read, exec, connect, restart]\n    applications: [\"*\"]\n  - name: reader\n    sha256: \"{}\"\n    operations: [read]\n    applications: [\"*\"]\n  - name: other\n    sha256: \"{}\"\n    operations: [read, exec, connect, restart]\n    applications: [\"other-*\"]\n",
        sha256_hex(ADMIN_TOKEN),
        sha256_hex(READER_TOKEN),
        sha256_hex(OTHER_TOKEN)
    );
    std::fs::write(path, yaml).unwrap();
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(unique("supd-test"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Poll `cond` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Poll `cond` every 50 ms until it holds, or fail naming `what`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A config file written into `dir`, for `--config`.
pub fn config_file(dir: &TempDir, yaml: &str) -> String {
    let p = dir.path().join("supd.yaml");
    std::fs::write(&p, yaml).unwrap();
    p.display().to_string()
}

/// A config file with `text` in the temporary directory (left there), for `--config`.
pub fn write_config(text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("{}.yaml", unique("supd-cfg")));
    std::fs::write(&p, text).unwrap();
    p
}

/// Percent-encoding of a query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn interactive_path(app: &str, cmd: &str, tty: bool) -> String {
    format!(
        "/v1/state/applications/{app}/service-instances/web-1/containers/web/exec-interactive?cmd={}&tty={tty}",
        encode(cmd)
    )
}

pub fn exec_path(app: &str) -> String {
    format!("/v1/state/applications/{app}/service-instances/web-1/containers/web/exec")
}

pub fn connect_path(app: &str, port: u16) -> String {
    format!("/v1/state/applications/{app}/service-instances/web-1/connect?protocol=tcp&port={port}")
}

/// The state path of instance `<svc>-1` of `app`.
pub fn instance_path(app: &str, svc: &str) -> String {
    format!("/v1/state/applications/{app}/service-instances/{svc}-1")
}
