//! Runs commands inside real Docker containers through `supd::container`, as root, against the
//! local engine and the `supd-test-busybox:latest` image.
//!
//! One test drives every scenario in sequence: the last check (no zombie children left)
//! needs to know that nothing else of this process is spawning at the same time.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use supd::testing::container::{self, ExitStatus, Io, Stdio, Target};

const IMAGE: &str = "supd-test-busybox:latest";
const LABEL: &str = "supd.test=container";
const DEADLINE: Duration = Duration::from_secs(30);

/// Removes the containers it started, even when an assertion failed.
struct Containers(Vec<String>);

impl Containers {
    fn run(&mut self, args: &[&str]) -> Target {
        let out = Command::new("docker")
            .args(["run", "-d", "--label", LABEL])
            .args(args)
            .args([IMAGE, "sleep", "3600"])
            .output()
            .expect("docker run");
        assert!(
            out.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        self.0.push(id.clone());
        let out = Command::new("docker")
            .args(["inspect", &id])
            .output()
            .expect("docker inspect");
        assert!(out.status.success());
        let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let c = &inspect[0];
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        Target {
            pid: c["State"]["Pid"].as_i64().unwrap() as i32,
            container_id: c["Id"].as_str().unwrap().to_owned(),
            user: c["Config"]["User"].as_str().unwrap_or("").to_owned(),
            env: strings(&c["Config"]["Env"]),
            working_dir: c["Config"]["WorkingDir"].as_str().unwrap_or("").to_owned(),
        }
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            for id in &self.0 {
                match Command::new("docker").args(["rm", "-f", id]).output() {
                    Ok(out) if out.status.success() => {}
                    Ok(out) => {
                        eprintln!("docker rm {id}: {}", String::from_utf8_lossy(&out.stderr))
                    }
                    Err(e) => eprintln!("docker rm {id}: {e}"),
                }
            }
        }
    }
}

fn wait_readable(fd: BorrowedFd<'_>, started: Instant) {
    loop {
        assert!(started.elapsed() < DEADLINE, "timed out");
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return,
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// Reads what is available; `false` at end of output (EOF, or EIO from a PTY master whose
/// terminal is closed).
fn drain(fd: BorrowedFd<'_>, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) | Err(Errno::EIO) => return false,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(Errno::EAGAIN) => return true,
            Err(Errno::EINTR) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

struct Run {
    output: String,
    status: ExitStatus,
    /// 0 when the intermediate failed and no command ran.
    command_pid: i32,
}

/// Drives one spawn like the event loop would: waits for the intermediate, reaps it, takes
/// the command's pid, then reads the output to its end and reaps the command.
fn drive(mut spawned: container::Spawned, stdin: &[u8], mid: impl FnOnce(&OwnedFd, i32)) -> Run {
    let started = Instant::now();
    let stdin_fd = match &mut spawned.io {
        Io::Pipes { stdin, .. } => stdin.take(),
        Io::Pty { .. } => None,
    };
    let output_fd = match &spawned.io {
        Io::Pty { master } => master,
        Io::Pipes { output, .. } => output,
    };
    let mut output = Vec::new();
    let mut open = true;

    wait_readable(spawned.intermediate_pidfd.as_fd(), started);
    let intermediate = container::try_wait(spawned.intermediate_pid)
        .unwrap()
        .expect("intermediate exited");
    let Some(pid) = container::read_handoff(&spawned.handoff).unwrap() else {
        while open && drain(output_fd.as_fd(), &mut output) {
            wait_readable(output_fd.as_fd(), started);
        }
        return Run {
            output: String::from_utf8_lossy(&output).into_owned(),
            status: intermediate,
            command_pid: 0,
        };
    };
    assert_eq!(intermediate, ExitStatus::Code(0));
    let pidfd = container::pidfd_open(pid).unwrap();

    mid(output_fd, pid);
    let input = match &spawned.io {
        Io::Pty { master } => Some(master),
        Io::Pipes { .. } => stdin_fd.as_ref(),
    };
    if let Some(input) = input {
        let mut rest = stdin;
        while !rest.is_empty() {
            match nix::unistd::write(input, rest) {
                Ok(n) => rest = &rest[n..],
                Err(Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("write: {e}"),
            }
        }
    }
    drop(stdin_fd);

    let mut status = None;
    while open || status.is_none() {
        assert!(started.elapsed() < DEADLINE, "timed out");
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if open {
            fds.push(PollFd::new(output_fd.as_fd(), PollFlags::POLLIN));
        }
        match nix::poll::poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
        if open {
            open = drain(output_fd.as_fd(), &mut output);
        }
        if status.is_none() {
            status = container::try_wait(pid).unwrap();
        }
    }
    Run {
        output: String::from_utf8_lossy(&output).into_owned(),
        status: status.unwrap(),
        command_pid: pid,
    }
}

/// The init's seccomp filters, read as the loop would but waiting here.
fn filters(target: &Target) -> container::confine::InitFilters {
    container::confine::lookup_blocking(target.pid).expect("read the init's seccomp filters")
}

fn run_with(target: &Target, argv: &[&str], stdio: Stdio, stdin: &[u8]) -> Run {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let spawned = container::spawn(target, &filters(target), &argv, stdio).expect("spawn");
    drive(spawned, stdin, |_, _| {})
}

fn run(target: &Target, argv: &[&str]) -> Run {
    run_with(target, argv, Stdio::Pipes { stdin: false }, b"")
}

fn host_readlink(path: &str) -> String {
    std::fs::read_link(path)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Zombie children of this process, from /proc.
fn zombie_children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the last ')' of the command name: state, ppid, ...
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split(' ').collect();
        if fields.get(1) == Some(&me.as_str()) && fields.first() == Some(&"Z") {
            zombies.push(stat);
        }
    }
    zombies
}

#[test]
fn commands_run_inside_containers() {
    let mut containers = Containers(Vec::new());
    let plain = containers.run(&["-e", "FOO=bar", "-w", "/tmp"]);

    // Output and exit codes.
    let r = run(&plain, &["echo", "hello"]);
    assert_eq!(
        (r.output.as_str(), r.status),
        ("hello\n", ExitStatus::Code(0))
    );
    assert!(r.command_pid > 0);
    assert_eq!(run(&plain, &["false"]).status, ExitStatus::Code(1));
    assert_eq!(
        run(&plain, &["sh", "-c", "exit 42"]).status,
        ExitStatus::Code(42)
    );
    assert_eq!(
        run(&plain, &["sh", "-c", "kill -9 $$"]).status,
        ExitStatus::Signal(9)
    );

    // stderr is merged into the output.
    let r = run(&plain, &["sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(r.output, "out\nerr\n");

    // A command string with quotes and spaces.
    let words = container::split_words(r#"sh -c 'echo "a  b" c\ d'"#).unwrap();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    assert_eq!(run(&plain, &words).output, "a  b c d\n");

    // Environment and working directory of the container; HOME from passwd.
    assert_eq!(run(&plain, &["sh", "-c", "echo $FOO"]).output, "bar\n");
    assert_eq!(run(&plain, &["pwd"]).output, "/tmp\n");
    assert_eq!(
        run(&plain, &["sh", "-c", "echo $HOME:$PATH"]).output,
        "/root:/bin\n"
    );
    assert_eq!(run(&plain, &["id", "-u"]).output, "0\n");

    // Stdin through a pipe.
    let r = run_with(&plain, &["cat"], Stdio::Pipes { stdin: true }, b"piped\n");
    assert_eq!(
        (r.output.as_str(), r.status),
        ("piped\n", ExitStatus::Code(0))
    );

    // Only stdio is inherited (3 is the directory ls reads).
    assert_eq!(run(&plain, &["ls", "/proc/self/fd"]).output, "0\n1\n2\n3\n");

    // Same cgroups as the container's first process (pid 1 inside).
    let own = run(&plain, &["cat", "/proc/self/cgroup"]).output;
    let init = run(&plain, &["cat", "/proc/1/cgroup"]).output;
    assert!(own.contains("docker"), "{own}");
    assert_eq!(own, init);

    // Same namespaces as the container's first process.
    let script = "for n in net mnt pid uts ipc; do readlink /proc/self/ns/$n; done";
    let inside = run(&plain, &["sh", "-c", script]).output;
    let host: String = ["net", "mnt", "pid", "uts", "ipc"]
        .iter()
        .map(|n| host_readlink(&format!("/proc/{}/ns/{n}", plain.pid)) + "\n")
        .collect();
    assert_eq!(inside, host);
    assert_ne!(
        host_readlink("/proc/self/ns/net") + "\n",
        inside.lines().next().unwrap()
    );

    // Capabilities no wider than the container's.
    let caps = |status: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let status = run(&plain, &["cat", "/proc/self/status"]).output;
    let init_status = std::fs::read_to_string(format!("/proc/{}/status", plain.pid)).unwrap();
    assert_eq!(caps(&status), caps(&init_status));
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    assert_eq!(eff, caps(&init_status));

    // Not found, not executable.
    let r = run(&plain, &["nosuchprog", "x"]);
    assert_eq!(r.status, ExitStatus::Code(127));
    assert_eq!(r.output, "supd: nosuchprog: not found\n");
    let r = run(&plain, &["/etc/passwd"]);
    assert_eq!(r.status, ExitStatus::Code(126));
    assert!(r.output.contains("permission denied"), "{}", r.output);

    // Users.
    let numeric = containers.run(&["--user", "1000:1000"]);
    let r = run(&numeric, &["id"]);
    assert_eq!(r.output, "uid=1000(app) gid=1000(app) groups=1000(app)\n");
    assert_eq!(run(&numeric, &["id", "-u"]).output, "1000\n");
    let status = run(&numeric, &["cat", "/proc/self/status"]).output;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    assert_eq!(eff, "0000000000000000");
    let named = containers.run(&["--user", "app"]);
    let r = run(&named, &["sh", "-c", "id; echo $HOME"]);
    assert_eq!(
        r.output,
        "uid=1000(app) gid=1000(app) groups=10(wheel),1000(app)\n/home/app\n"
    );
    let unknown = Target {
        user: "ghost".into(),
        ..plain.clone()
    };
    let r = run(&unknown, &["id"]);
    assert_eq!(r.status, ExitStatus::Code(126));
    assert_eq!(
        r.output,
        "supd: user ghost: no matching entry in /etc/passwd\n"
    );

    // A failure in the intermediate: no command, 126, the reason in the output.
    let bad_dir = Target {
        working_dir: "/nonexistent".into(),
        ..plain.clone()
    };
    let r = run(&bad_dir, &["true"]);
    assert_eq!(r.status, ExitStatus::Code(126));
    assert!(
        r.output.starts_with("supd: chdir /nonexistent:"),
        "{}",
        r.output
    );

    // A terminal of the container's own devpts.
    let pty = Stdio::Pty { rows: 24, cols: 80 };
    let r = run_with(
        &plain,
        &["sh", "-c", "tty; stty size; echo $TERM"],
        pty,
        b"",
    );
    assert_eq!(r.status, ExitStatus::Code(0));
    let lines: Vec<&str> = r.output.split("\r\n").collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{}", r.output);
    assert_eq!(&lines[1..], ["24 80", "xterm", ""]);

    let argv: Vec<String> = ["sh", "-c", "read x; stty size"].map(String::from).to_vec();
    let spawned = container::spawn(&plain, &filters(&plain), &argv, pty).unwrap();
    let r = drive(spawned, b"go\n", |master, _| {
        container::set_winsize(master.as_fd(), 40, 100).unwrap();
    });
    assert_eq!(r.status, ExitStatus::Code(0));
    assert!(r.output.ends_with("40 100\r\n"), "{:?}", r.output);

    // The command leads its own process group: killing it ends its children too, which
    // hold the output open.
    let argv: Vec<String> = ["sh", "-c", "sleep 100 & sleep 100"]
        .map(String::from)
        .to_vec();
    let spawned = container::spawn(
        &plain,
        &filters(&plain),
        &argv,
        Stdio::Pipes { stdin: false },
    )
    .unwrap();
    let r = drive(spawned, b"", |_, pid| {
        container::kill_group(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    });
    assert_eq!(r.status, ExitStatus::Signal(9));

    // Gone container.
    let gone = containers.run(&[]);
    let id = containers.0.pop().unwrap();
    let out = Command::new("docker")
        .args(["rm", "-f", &id])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = container::confine::lookup_blocking(gone.pid)
        .and_then(|f| container::spawn(&gone, &f, &["true".into()], Stdio::Pipes { stdin: false }))
        .unwrap_err();
    assert!(
        matches!(err, container::Error::ContainerGone { .. }),
        "{err}"
    );

    assert_eq!(zombie_children(), Vec::<String>::new());
}
