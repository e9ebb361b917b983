//! Attacks on the boundary between a container and the host, through the real `supd` binary
//! and real containers: a container that tries to overwrite supd's binary through
//! `/proc/<pid>/exe` (CVE-2019-5736), a container init whose pid a host process takes over
//! before Docker's events catch up, and a container that puts a host device where supd
//! looks for its terminal multiplexer.

mod common;

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The busybox image plus the shared libraries supd's binary needs, so that supd's own binary
/// can run inside the container, as it must for the attack on it.
const GLIBC_IMAGE: &str = "supd-test-glibc:latest";

fn exec(supd: &Supd, app: &str, svc: &str, cmd: &str) -> HttpResponse {
    let body = serde_json::json!({ "cmd": cmd }).to_string();
    let path = format!("{}/containers/{svc}/exec", instance_path(app, svc));
    supd.post_json(&path, ADMIN_TOKEN, &body)
}

/// Waits until an exec into the container works (the mirror has it running).
fn wait_exec_ready(supd: &Supd, app: &str, svc: &str) {
    supd.wait_until(Duration::from_secs(20), || {
        exec(supd, app, svc, "true").status == 200
    });
}

fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

fn docker_exec(id: &str, cmd: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", id, "sh", "-c", cmd])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Builds [`GLIBC_IMAGE`]: FROM scratch, static busybox and its applets, and the libraries
/// `ldd` lists for supd's binary, each at its path.
fn ensure_glibc_image() {
    let ok = Command::new("docker")
        .args(["image", "inspect", GLIBC_IMAGE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return;
    }
    let ctx = TempDir::new();
    let root = ctx.path().join("rootfs");
    for dir in ["bin", "etc", "tmp", "root"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy("/usr/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = Command::new("/usr/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().split_whitespace() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    let ldd = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_supd"))
        .output()
        .unwrap();
    assert!(ldd.status.success(), "ldd of supd");
    for line in String::from_utf8(ldd.stdout).unwrap().lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
        let lib = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(lib) = lib {
            let dst = root.join(lib.strip_prefix("/").unwrap());
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(&lib, &dst).unwrap();
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    Command::new("chmod")
        .args(["1777"])
        .arg(root.join("tmp"))
        .status()
        .unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD [\"sh\"]\n",
    )
    .unwrap();
    let st = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", GLIBC_IMAGE])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "docker build {GLIBC_IMAGE}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// The container's first process, as in CVE-2019-5736: it turns `/bin/ps` into a script run
/// by `/proc/self/exe`, waits for a process whose binary is supd's (the operator's exec of
/// `ps`), keeps a descriptor of that binary, kills the process (so the exec ends), and once
/// told that supd has stopped writes through the descriptor. What it saw and whether the
/// write went through land in /tmp.
const ATTACKER: &str = r#"
rm -f /bin/ps
printf '#!/proc/self/exe --config\n' > /bin/ps
chmod 755 /bin/ps
touch /tmp/ready
while :; do
  for d in /proc/[0-9]*; do
    l=$(readlink $d/exe 2>/dev/null) || continue
    case "$l" in *supd*) ;; *) continue ;; esac
    exec 3< $d/exe || continue
    readlink /proc/self/fd/3 > /tmp/link
    stat -L -c '%d %i' /proc/self/fd/3 > /tmp/ino
    kill -9 ${d#/proc/}
    touch /tmp/opened
    while [ ! -e /tmp/go ]; do sleep 0.1; done
    if { printf 'echo pwned\n' > /proc/self/fd/3; } 2> /tmp/err; then
      echo written > /tmp/result
    else
      echo refused > /tmp/result
    fi
    exec sleep 3600
  done
done
"#;

#[test]
fn a_container_cannot_overwrite_the_supd_binary() {
    ensure_glibc_image();
    // A copy of the binary, as the installed one: what the attack must not change.
    let dir = TempDir::new();
    let binary = dir.path().join("supd");
    std::fs::copy(env!("CARGO_BIN_EXE_supd"), &binary).unwrap();
    let before = sha256_file(&binary);
    let host_meta = std::fs::metadata(&binary).unwrap();
    let opts = || SupdOptions {
        binary: Some(binary.clone()),
        ..Default::default()
    };

    let cs = Containers::new("boundary-exe");
    let app = unique("bexe");
    let id = managed(&cs, &app, "web", &[], &[GLIBC_IMAGE, "sh", "-c", ATTACKER]);
    wait_for("the attacker to be ready", Duration::from_secs(20), || {
        docker_exec(&id, "ls /tmp/ready 2>/dev/null") == "/tmp/ready"
    });
    let supd = Supd::start_with(opts());
    wait_exec_ready(&supd, &app, "web");
    // The operator runs `ps`: supd's binary runs it (as the script's interpreter), inside the
    // container, until the attacker, holding its descriptor, kills it. A daemon that listens
    // inside the container and never reaches Docker, so it stays until then.
    let r = exec(
        &supd,
        &app,
        "web",
        "ps --listen 127.0.0.1:4799 --tokens /tmp/t.yaml --docker-socket /none.sock",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        docker_exec(&id, "ls /tmp/opened 2>/dev/null"),
        "/tmp/opened",
        "the attacker never found supd's process: {}",
        r.text()
    );
    let link = docker_exec(&id, "cat /tmp/link");
    let ino = docker_exec(&id, "cat /tmp/ino");
    let host = format!("{} {}", host_meta.dev(), host_meta.ino());
    assert_ne!(
        ino, host,
        "the container holds the host's binary (through {link})"
    );

    // supd stops, as for an upgrade or a reboot; then the attacker writes.
    drop(supd);
    docker_exec(&id, "touch /tmp/go");
    wait_for("the attacker's write", Duration::from_secs(20), || {
        !docker_exec(&id, "cat /tmp/result 2>/dev/null").is_empty()
    });
    let result = docker_exec(&id, "cat /tmp/result");
    let err = docker_exec(&id, "cat /tmp/err");
    assert_eq!(
        result, "refused",
        "a write through {link} went through: {err}"
    );
    eprintln!("the container held {link} ({ino}); its write failed: {err}");
    assert_eq!(sha256_file(&binary), before, "the binary changed");

    // And the next start is supd, working as before.
    let supd = Supd::start_with(opts());
    wait_exec_ready(&supd, &app, "web");
    let r = exec(&supd, &app, "web", "echo ok");
    assert_eq!(r.json()["output"], "ok\n");
}

fn read_host(path: &str) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

/// Kills the container's first process from the host and starts a host process on the same
/// pid (steered with ns_last_pid). `None` when another process took the pid first.
fn take_over_pid(pid: u32) -> Option<std::process::Child> {
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    // Reaped by the container's shim, then free.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "pid {pid} never went away");
        std::thread::yield_now();
    }
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
    let child = Command::new("sleep").arg("30").spawn().unwrap();
    if child.id() == pid {
        Some(child)
    } else {
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

#[test]
fn a_reused_init_pid_never_leads_into_the_host() {
    let cs = Containers::new("boundary-pid");
    let supd = Supd::start();
    let host_name = read_host("/proc/sys/kernel/hostname");
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host_net = host_net.to_string_lossy().into_owned();
    // A host listener the tunnel must never reach.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();

    let (mut execs, mut connects, mut attempts) = (0, 0, 0);
    while (execs < 2 || connects < 2) && attempts < 12 {
        attempts += 1;
        let app = unique("bpid");
        let id = managed(&cs, &app, "web", &[], &[IMAGE, "sleep", "3600"]);
        wait_exec_ready(&supd, &app, "web");
        let pid: u32 = inspect(&id, "{{.State.Pid}}").parse().unwrap();
        let Some(mut host) = take_over_pid(pid) else {
            continue;
        };
        if execs <= connects {
            let r = exec(
                &supd,
                &app,
                "web",
                "sh -c 'cat /proc/sys/kernel/hostname; readlink /proc/self/ns/net'",
            );
            execs += 1;
            let text = r.text();
            assert!(
                !text.contains(&host_name) && !text.contains(&host_net),
                "an exec ran in the host's namespaces ({}): {text}",
                r.status
            );
            assert!(r.status == 409 || r.status == 200, "{}: {text}", r.status);
        } else {
            let status = handshake_status(supd.addr, &connect_path(&app, port), CONNECT).0;
            connects += 1;
            assert_ne!(status, 101, "connect reached the host's loopback");
            assert!(
                listener.accept().is_err(),
                "the host listener got a connection"
            );
        }
        // The process on that pid is a host process: the check itself refuses it.
        assert!(supd::testing::container::identity::verify(pid as i32, &id).is_err());
        let _ = host.kill();
        let _ = host.wait();
    }
    assert!(
        execs >= 2 && connects >= 2,
        "could not steer a pid in {attempts} attempts ({execs} execs, {connects} connects)"
    );
}

/// The first process chroots into a directory of its own whose dev/pts/ptmx is a node it made:
/// supd finds that at /proc/<pid>/root/dev/pts/ptmx.
fn fake_ptmx_init(node: &str) -> String {
    format!(
        "mkdir -p /tmp/r/dev/pts /tmp/r/bin && cp /bin/busybox /tmp/r/bin/ && {node} && \
         exec chroot /tmp/r /bin/busybox sleep 3600"
    )
}

#[test]
fn a_ptmx_the_container_made_is_never_opened() {
    let cs = Containers::new("boundary-pty");
    let supd = Supd::start();
    let variants = [
        // /dev/kmsg: a host device the devices cgroup keeps from the container.
        ("kmsg", "mknod /tmp/r/dev/pts/ptmx c 1 11"),
        // The right device number off a devpts: the host's own /dev/ptmx instance.
        ("hostptmx", "mknod /tmp/r/dev/pts/ptmx c 5 2"),
        // A symlink out to the container's (or anyone's) ptmx.
        (
            "symlink",
            "ln -s /proc/1/root/dev/pts/ptmx /tmp/r/dev/pts/ptmx",
        ),
    ];
    for (name, node) in variants {
        let app = unique(&format!("bpty{name}"));
        let init = fake_ptmx_init(node);
        managed(&cs, &app, "web", &[], &[IMAGE, "sh", "-c", &init]);
        wait_exec_ready(&supd, &app, "web");
        let (status, body) =
            handshake_status(supd.addr, &interactive_path(&app, "sh", true), INTERACTIVE);
        assert_ne!(status, 101, "{name}: a terminal was opened");
        assert_eq!(status, 500, "{name}: {body}");
        assert!(body.contains("ptmx"), "{name}: {body}");
    }
    // A container with its own devpts still gets its terminal.
    let app = unique("bptyok");
    managed(&cs, &app, "web", &[], &[IMAGE, "sleep", "3600"]);
    wait_exec_ready(&supd, &app, "web");
    assert_eq!(
        handshake_status(supd.addr, &interactive_path(&app, "sh", true), INTERACTIVE).0,
        101
    );
}

/// The re-execution from a sealed copy keeps what systemd hands over: fexecve keeps the pid,
/// so LISTEN_PID still names the process, the inherited listener (fd 3) is served, and
/// READY=1 reaches NOTIFY_SOCKET.
#[test]
fn socket_activation_and_notify_survive_the_reexec() {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    let dir = TempDir::new();
    let tokens = dir.path().join("tokens.yaml");
    write_tokens(&tokens);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Inheritable, for the shell to put on fd 3.
    nix::fcntl::fcntl(
        &listener,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let script = format!(
        "exec 3<&{fd}; LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"",
        fd = listener.as_raw_fd()
    );
    let log = dir.path().join("supd.log");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_supd"))
        .args(["--config", "/dev/null", "--tokens"])
        .arg(&tokens)
        .args(["--docker-socket", "/nonexistent/docker.sock"])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("err.log")).unwrap())
        .spawn()
        .unwrap();
    drop(listener);
    let mut buf = [0u8; 256];
    let got = notify.recv(&mut buf);
    let exe = std::fs::read_link(format!("/proc/{}/exe", child.id()));
    let mut client = Client::from_stream(TcpStream::connect(addr).unwrap());
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    client.send(
        "GET",
        "/v1/state/applications/none/service-instances",
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        b"",
    );
    let status = client.read_response(false).status;
    let _ = child.kill();
    let _ = child.wait();
    let n = got.expect("READY=1 on NOTIFY_SOCKET");
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("READY=1"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let exe = exe.unwrap().to_string_lossy().into_owned();
    assert!(exe.starts_with("/memfd:supd"), "{exe}");
    // Served on the inherited listener (503 while Docker is unreachable).
    assert!(status == 200 || status == 503, "{status}");
}

/// When the sealed re-execution did not happen (here: the marker says it was tried), supd
/// serves on but refuses to start anything in a container rather than run unprotected.
#[test]
fn without_a_sealed_copy_exec_is_refused() {
    let cs = Containers::new("boundary-unsealed");
    let app = unique("bunsealed");
    managed(&cs, &app, "web", &[], &[IMAGE, "sleep", "3600"]);
    let supd = Supd::start_with(SupdOptions {
        env: vec![("_SUPD_SEALED_REEXEC".into(), "1".into())],
        ..Default::default()
    });
    let mut r = exec(&supd, &app, "web", "true");
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.status == 404 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        r = exec(&supd, &app, "web", "true");
    }
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.error_message().contains("sealed"), "{}", r.text());
    assert_eq!(
        handshake_status(supd.addr, &interactive_path(&app, "sh", true), INTERACTIVE).0,
        503
    );
}
