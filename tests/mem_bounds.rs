//! What one client can make supd hold, per request or session, stays small (edge hosts have
//! 512 MiB to 2 GiB): an exec answer whose output escapes badly, a tunnel whose target never
//! reads, a websocket message that is never finished. Each measures supd's resident memory.

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// One at a time: each measures supd's memory, and several floods at once would measure the
/// machine instead.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The default exec output cap.
const CAP: usize = 1 << 20;

fn exec_request(app: &str) -> Vec<u8> {
    let body = r#"{"cmd":"head -c 1048576 /dev/zero"}"#;
    format!(
        "POST {} HTTP/1.1\r\nHost: supd\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nAccept: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        exec_path(app),
        body.len()
    )
    .into_bytes()
}

/// 1 MiB of NULs is 6 MiB of JSON (`\u0000`): the cap bounds the answer as sent, and 40
/// answers nobody reads stay far from what 40 six-MiB answers would pin.
#[test]
fn exec_answers_are_capped_as_encoded() {
    let _g = heavy();
    let cs = Containers::new("memtest");
    let app = unique("mem");
    echo_instance(&cs, &app);
    let supd = Supd::start();
    wait_running(&supd, &app);

    let mut c = supd.connect();
    c.send_raw(&exec_request(&app));
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.body.len() <= CAP + 1024,
        "the answer is {} bytes for a cap of {CAP}",
        r.body.len()
    );
    let v = r.json();
    assert_eq!(v["truncated"], true);
    assert_eq!(v["exit-code"], 0);
    let output = v["output"].as_str().unwrap();
    assert!(output.len() > CAP / 7 && output.bytes().all(|b| b == 0));

    // YAML writes a NUL as `\0`: its answer is bounded the same way.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = supd.request(
        "POST",
        &exec_path(&app),
        &[("Authorization", &auth), ("Accept", "application/yaml")],
        b"cmd: head -c 1048576 /dev/zero",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.len() <= CAP + 1024, "YAML answer: {}", r.body.len());
    assert!(r.text().contains("truncated: true"), "{}", &r.text()[..200]);

    let before = supd.rss_kib();
    let mut unread = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(supd.addr).unwrap();
        s.write_all(&exec_request(&app)).unwrap();
        unread.push(s);
    }
    // Every command has run and every answer is built once supd has no child left.
    thread::sleep(Duration::from_secs(2));
    supd.wait_until(Duration::from_secs(30), || supd.children().is_empty());
    thread::sleep(Duration::from_secs(1));
    let after = supd.rss_kib();
    eprintln!(
        "40 unread exec answers: rss {before} -> {after} KiB ({} KiB each)",
        after.saturating_sub(before) / 40
    );
    assert!(after < 96 * 1024, "rss {after} KiB with 40 unread answers");
    assert_healthy(supd.addr);
    drop(unread);
}

/// A container of `app` (instance web-1) whose TCP port 9000 accepts and never reads.
fn deaf_instance(cs: &Containers, app: &str) {
    let a = format!("io.supd.application={app}");
    cs.run(&[
        "--label",
        &a,
        "--label",
        "io.supd.service=web",
        "--label",
        "io.supd.instance=1",
        IMAGE,
        "nc",
        "-ll",
        "-p",
        "9000",
        "-e",
        "sleep",
        "100000",
    ]);
}

/// A raw client writing 64 KiB messages as fast as supd takes them.
struct Pusher {
    stream: TcpStream,
    frame: Vec<u8>,
    off: usize,
    sent: u64,
}

impl Pusher {
    /// Writes until the socket would block: whether anything was written.
    fn push(&mut self) -> bool {
        let mut progress = false;
        loop {
            match self.stream.write(&self.frame[self.off..]) {
                Ok(n) => {
                    progress = true;
                    self.sent += n as u64;
                    self.off += n;
                    if self.off == self.frame.len() {
                        self.off = 0;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return progress,
                Err(e) => panic!("session ended while pushing: {e}"),
            }
        }
    }
}

/// 200 tunnels to a target that never reads, each client writing until supd stops reading
/// it: what supd holds per session is the bounded queue toward the socket and one frame.
#[test]
fn tunnels_to_a_deaf_target_hold_little_each() {
    let _g = heavy();
    raise_nofile(8192);
    let cs = Containers::new("memtest");
    let app = unique("mem");
    deaf_instance(&cs, &app);
    let supd = Supd::start();
    wait_running(&supd, &app);

    let payload = vec![0xa5u8; 64 * 1024];
    let frame = frame(OP_BINARY, true, &payload, true);
    let open = |n: usize| -> Vec<Pusher> {
        (0..n)
            .map(|_| {
                let (stream, _) = upgrade(supd.addr, &connect_path(&app, 9000), CONNECT, &[]);
                stream.set_nonblocking(true).unwrap();
                Pusher {
                    stream,
                    frame: frame.clone(),
                    off: 0,
                    sent: 0,
                }
            })
            .collect()
    };
    let fill = |ps: &mut [Pusher]| {
        let t0 = Instant::now();
        let mut quiet = 0;
        while quiet < 5 {
            assert!(t0.elapsed() < Duration::from_secs(30), "still taking data");
            let progress = ps.iter_mut().fold(false, |p, s| s.push() | p);
            quiet = if progress { 0 } else { quiet + 1 };
            thread::sleep(Duration::from_millis(100));
        }
    };
    // A first few sessions, so that what the loop allocates once is not counted.
    let mut warm = open(5);
    fill(&mut warm);

    let before = supd.rss_kib();
    let mut ps = open(200);
    fill(&mut ps);
    let after = supd.rss_kib();
    let per = after.saturating_sub(before) / 200;
    let sent: u64 = ps.iter().map(|p| p.sent).sum();
    eprintln!(
        "200 tunnels to a deaf target: rss {before} -> {after} KiB ({per} KiB each); \
         clients wrote {} KiB each",
        sent / 200 / 1024
    );
    assert!(
        supd.fd_count() > 400,
        "the sessions are open ({} descriptors)",
        supd.fd_count()
    );
    assert!(per < 300, "{per} KiB per session");
    drop(ps);
    drop(warm);
    assert_healthy(supd.addr);
}

/// 100 interactive sessions each start a fragmented message and never finish it: what they
/// hold is bounded by max-message, and each is closed (1008) once its first fragment is
/// older than the fragment timeout (10 s).
#[test]
fn unfinished_fragmented_messages_are_closed() {
    let _g = heavy();
    raise_nofile(8192);
    let cs = Containers::new("memtest");
    let app = unique("mem");
    echo_instance(&cs, &app);
    let supd = Supd::start();
    wait_running(&supd, &app);

    let before = supd.rss_kib();
    let t0 = Instant::now();
    let chunk = vec![0x10u8; 16 * 1024];
    let mut sessions: Vec<Frames> = (0..100)
        .map(|_| {
            let (s, leftover) = upgrade(
                supd.addr,
                &interactive_path(&app, "sleep 1000", false),
                INTERACTIVE,
                &[],
            );
            let mut f = Frames::new(s, leftover);
            // Stdin (type 0x10), four fragments of 16 KiB, never the last one.
            f.send(&frame(OP_BINARY, false, &chunk, true));
            for _ in 0..3 {
                f.send(&frame(OP_CONT, false, &chunk, true));
            }
            f
        })
        .collect();
    thread::sleep(Duration::from_secs(1));
    let held = supd.rss_kib();
    eprintln!(
        "100 unfinished messages: rss {before} -> {held} KiB ({} KiB each)",
        held.saturating_sub(before) / 100
    );
    assert!(held < before + 100 * 512, "rss {before} -> {held} KiB");
    for f in &mut sessions {
        f.stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (code, reason) = f.close_frame();
        assert_eq!(code, 1008, "{reason}");
        assert!(reason.contains("unfinished"), "{reason}");
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(25),
        "closed after {took:?}"
    );
    drop(sessions);
    supd.wait_until(Duration::from_secs(15), || supd.children().is_empty());
    assert_healthy(supd.addr);
}
