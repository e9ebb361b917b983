//! `supd-bench --vm`: the VM rows. A launcher of the test VM image (`supd-test-vm:local`,
//! TCG) boots once; then
//!
//! - the guest agent is driven directly on its socket in the launcher
//!   (`/proc/<pid>/root/run/supd-vm/qga.sock`, synced with `guest-sync-delimited` first):
//!   the same `guest-exec` supd sends for `true` and `guest-exec-status` on supd's poll
//!   schedule, N times;
//! - then supd starts (the agent serves one client, so never both at once) and
//!   `POST .../vm-container/exec` of `true` is timed the same N times, and the first output of
//!   `echo hi` through `vm-container/exec-interactive`.
//!
//! The rows go into their own section of bench/RESULTS.md, which the full run keeps.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::net::{self, Http, Result, Ws};
use crate::{
    INTERACTIVE_PROTO, Opts, Row, Setup, Table, docker, dur, encode, lat, pct, sorted, tcp,
};

const VM_IMAGE: &str = "supd-test-vm:local";
const VM_APP: &str = "bench-vm";
const VM_SVC: &str = "vm";
/// Where the VM rows begin and end in bench/RESULTS.md.
pub const BEGIN: &str = "<!-- supd-bench --vm: begin -->";
pub const END: &str = "<!-- supd-bench --vm: end -->";
const BOOT: Duration = Duration::from_secs(120);

/// supd's `guest-exec` for `true` with a qemu-ga older than 8.1 (the test VM's 7.2): through
/// the guest's shell (`qga::RUN`: stderr merged, a process group of its own), output captured.
const EXEC_TRUE: &str = r#"{"execute":"guest-exec","arguments":{"path":"/bin/sh","arg":["-c","command -v \"$0\" >/dev/null 2>&1 || { echo \"$0: not found\"; exit 127; }; command -v setsid >/dev/null 2>&1 && exec setsid \"$0\" \"$@\" 2>&1; exec \"$0\" \"$@\" 2>&1","true"],"capture-output":true}}"#;

/// supd's status poll schedule (`ops::vm_exec`): at once, then 2, 4, 8... ms, at most 50 ms.
fn poll_delay(polls: u32) -> Duration {
    if polls == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(1u64 << polls.min(6)).min(Duration::from_millis(50))
    }
}

struct Sizes {
    exec: usize,
    interactive: usize,
}

/// One agent connection, as supd keeps it.
struct Agent {
    s: UnixStream,
    buf: Vec<u8>,
}

impl Agent {
    fn connect(path: &str) -> Result<Agent> {
        let s = UnixStream::connect(path).map_err(|e| format!("{path}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        Ok(Agent { s, buf: Vec::new() })
    }

    /// `guest-sync-delimited` with `id`: everything before its answer is dropped.
    fn sync(&mut self, id: u32) -> Result<()> {
        let mut req = vec![0xFF];
        req.extend_from_slice(
            format!("{{\"execute\":\"guest-sync-delimited\",\"arguments\":{{\"id\":{id}}}}}\n")
                .as_bytes(),
        );
        self.s.write_all(&req).map_err(|e| e.to_string())?;
        self.buf.clear();
        loop {
            let line = self.line()?;
            let text = String::from_utf8_lossy(&line);
            if text.contains("\"return\"") && number_after(&text, "\"return\"") == Some(id as i64) {
                return Ok(());
            }
        }
    }

    /// The next answer line (a 0xFF delimiter is dropped).
    fn line(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.retain(|&b| b != 0xFF);
                return Ok(line);
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).map_err(|e| format!("agent: {e}"))?;
            if n == 0 {
                return Err("agent: connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call(&mut self, req: &str) -> Result<String> {
        self.s
            .write_all(format!("{req}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let line = String::from_utf8_lossy(&self.line()?).into_owned();
        if line.contains("\"error\"") {
            return Err(format!("agent: {line}"));
        }
        Ok(line)
    }

    /// `true` in the guest, as supd runs it: guest-exec, then status polls until it exited.
    fn exec_true(&mut self) -> Result<()> {
        let answer = self.call(EXEC_TRUE)?;
        let pid = number_after(&answer, "\"pid\"").ok_or(format!("guest-exec: {answer}"))?;
        let status =
            format!("{{\"execute\":\"guest-exec-status\",\"arguments\":{{\"pid\":{pid}}}}}");
        for polls in 0.. {
            thread::sleep(poll_delay(polls));
            let answer = self.call(&status)?;
            if answer.contains("\"exited\": true") || answer.contains("\"exited\":true") {
                if number_after(&answer, "\"exitcode\"") != Some(0) {
                    return Err(format!("true failed: {answer}"));
                }
                return Ok(());
            }
        }
        unreachable!()
    }
}

/// The integer after `key` and a colon in `text`.
fn number_after(text: &str, key: &str) -> Option<i64> {
    let rest = &text[text.find(key)? + key.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn start_launcher() -> Result<(String, u32)> {
    let id = docker(&[
        "run",
        "-d",
        "-e",
        "SUPD_VM_ACCEL=tcg",
        "--label",
        "supd.test=bench",
        "--label",
        "supd.bench=1",
        "--label",
        &format!("io.supd.application={VM_APP}"),
        "--label",
        &format!("io.supd.service={VM_SVC}"),
        "--label",
        "io.supd.instance=1",
        VM_IMAGE,
    ])?;
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &id])?
        .parse()
        .map_err(|_| "launcher pid")?;
    Ok((id, pid))
}

/// Connect and sync until the guest's agent answers (it boots), then sync once more: an agent
/// that started late answers requests queued before it ran.
fn wait_agent(path: &str) -> Result<(Agent, Duration)> {
    let t0 = Instant::now();
    let mut id = 1000;
    loop {
        id += 1;
        if let Ok(mut a) = Agent::connect(path)
            && a.sync(id).is_ok()
            && a.sync(id + 1).is_ok()
        {
            return Ok((a, t0.elapsed()));
        }
        if t0.elapsed() > BOOT {
            return Err(format!("the guest agent did not answer within {BOOT:?}"));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

pub fn bench_vm(opts: &Opts, t: &mut Table) -> Result<()> {
    let sizes = if opts.quick {
        Sizes {
            exec: 20,
            interactive: 5,
        }
    } else {
        Sizes {
            exec: 300,
            interactive: 100,
        }
    };
    eprintln!("bench: booting the test VM (TCG)");
    let (_id, pid) = start_launcher()?;
    let sock = format!("/proc/{pid}/root/run/supd-vm/qga.sock");
    let (mut agent, boot) = wait_agent(&sock)?;
    t.notes.push(format!(
        "test VM: `docker run` to a synced guest agent in {} (TCG).",
        dur(boot)
    ));

    // The agent directly; then its connection is closed for supd's.
    let direct = crate::sample(sizes.exec, || agent.exec_true())?;
    drop(agent);

    let setup = Setup::new(&opts.supd)?;
    let (daemon, _) = setup.start_supd(&opts.supd, 2000)?;
    let base = format!("/v1/state/applications/{VM_APP}/service-instances/{VM_SVC}-1");
    let get = format!(
        "GET {base} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\n",
        setup.token
    );
    let t0 = Instant::now();
    loop {
        let r = Http::new(tcp(daemon.addr)?).request(&get, b"")?;
        if String::from_utf8_lossy(&r.body).contains("\"agent\":\"connected\"") {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err("supd did not connect to the guest agent".into());
        }
        thread::sleep(Duration::from_millis(50));
    }
    let head = format!(
        "POST {base}/vm-container/exec HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n",
        setup.token
    );
    let supd = crate::sample(sizes.exec, || {
        let r = Http::new(tcp(daemon.addr)?).request(&head, br#"{"cmd":"true"}"#)?;
        let body = String::from_utf8_lossy(&r.body);
        if r.status != 200 || !body.contains("\"exit-code\":0") {
            return Err(format!("supd vm exec answered {}: {body}", r.status));
        }
        Ok(())
    })?;
    let (s_med, d_med) = (pct(&supd, 0.5), pct(&direct, 0.5));
    let added = s_med.as_secs_f64() / d_med.as_secs_f64() - 1.0;
    t.add(Row {
        measure: "VM exec of `true` (guest agent), full HTTP round trip".into(),
        supd: format!("{} / p90 {}", lat(&supd), dur(pct(&supd, 0.9))),
        peer: "guest-exec + guest-exec-status on the agent socket".into(),
        peer_figure: format!("{} / p90 {}", lat(&direct), dur(pct(&direct, 0.9))),
        ratio: format!("{:+.0}%", added * 100.0),
        target: "supd adds ≤ 20%".into(),
        verdict: Some(added <= 0.20),
    });

    let path = format!(
        "{base}/vm-container/exec-interactive?cmd={}&tty=true",
        encode("echo hi")
    );
    let up = net::upgrade_head(&path, &setup.token, INTERACTIVE_PROTO);
    let mut first = Vec::new();
    for i in 0..sizes.interactive + 2 {
        let mut h = Http::new(tcp(daemon.addr)?);
        let t0 = Instant::now();
        h.send(&up, b"")?;
        let mut ws = Ws::finish_upgrade(h)?;
        let mut got = false;
        while !got {
            if !ws.recv(&mut |b| got = !b.is_empty())? {
                return Err("VM session closed before any output".into());
            }
        }
        if i >= 2 {
            first.push(t0.elapsed());
        }
        // To the end, the close answered, until supd closes: the terminal port is free again
        // once the session has ended (the next session claims it).
        while ws.recv(&mut |_| {})? {}
        ws.close_and_drain();
    }
    let first = sorted(first);
    t.add(Row {
        measure: "VM interactive exec, upgrade sent → first output byte of `echo hi`".into(),
        supd: format!("{} / p90 {}", lat(&first), dur(pct(&first, 0.9))),
        ..Row::default()
    });
    drop(daemon);
    let _ = std::fs::remove_dir_all(&setup.dir);
    Ok(())
}

/// The VM section of bench/RESULTS.md for this run.
pub fn section(desc: &str, t: &Table) -> String {
    let notes: String = t.notes.iter().map(|n| format!("- {n}\n")).collect();
    format!(
        "{BEGIN}\n## VM containers (`scripts/bench.sh --vm`)\n\nMeasured in a separate run (a VM boot takes 5-20 s under TCG, too long for `--quick`) on:\n\n{desc}\n{}\n{METHOD}{notes}{END}\n",
        t.markdown()
    )
}

/// `text` with its VM section replaced by `section` (or `section` added at the end).
pub fn splice(text: &str, section: &str) -> String {
    crate::splice_marked(text, BEGIN, END, section)
}

/// The VM section of `text`, if it has one.
pub fn existing(text: &str) -> Option<&str> {
    crate::existing_marked(text, BEGIN, END)
}

const METHOD: &str = "\
- The launcher is the test VM image (`scripts/build-test-vm.sh`: QEMU 7.2, TCG, one vCPU, a \
busybox + qemu-ga 7.2 guest) started with `SUPD_VM_ACCEL=tcg`. qemu-ga 7.2 has no merged \
capture; supd's `guest-exec` of `true` is `/bin/sh -c RUN true` (`qga::RUN`: a check that the \
program is there, then `exec setsid \"$0\" \"$@\" 2>&1`) with output captured; the direct loop \
sends exactly that.
- direct: one connection to `/proc/<launcher pid>/root/run/supd-vm/qga.sock`, synced with \
`guest-sync-delimited` first, then per sample `guest-exec` and `guest-exec-status` polls on \
supd's schedule (at once, then after 2, 4, 8... ms, at most 50 ms) until `exited`. It runs \
before supd starts: the agent serves one client.
- supd: a fresh TCP connection + `POST …/vm-container/exec {\"cmd\":\"true\"}` read to the end \
of its JSON, with supd's agent connection already up. \"supd advantage\" here is how much \
longer supd's median is than the direct loop's.
- interactive: the clock starts as the upgrade request is written and stops at the first \
non-empty output frame of `echo hi` (tty=true); supd answers 101 once the guest has started the \
command on the spare serial port.
- 300 samples each (after 5 warm-up runs), 100 interactive sessions (after 2); the guest's \
own work (a fork and exec of `sh` under TCG) dominates both exec figures, so their difference \
is within the run-to-run noise of a shared machine.
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vm_section_is_replaced_or_added_and_kept() {
        let a = format!("{BEGIN}\nold\n{END}\n");
        let b = format!("{BEGIN}\nnew\n{END}\n");
        assert_eq!(splice("# r\n", &a), format!("# r\n\n{a}"));
        assert_eq!(
            splice(&format!("# r\n\n{a}tail\n"), &b),
            format!("# r\n\n{b}tail\n")
        );
        assert_eq!(existing(&format!("x{a}")), Some(a.trim_end()));
        assert_eq!(existing("# r\n"), None);
    }

    #[test]
    fn polls_follow_supds_schedule() {
        let ms: Vec<u128> = (0..8).map(|p| poll_delay(p).as_millis()).collect();
        assert_eq!(ms, [0, 2, 4, 8, 16, 32, 50, 50]);
        assert_eq!(
            number_after(r#"{"return": {"pid": 812}}"#, "\"pid\""),
            Some(812)
        );
        assert_eq!(number_after(r#"{"return":7}"#, "\"return\""), Some(7));
    }
}
