//! Interactive exec (`GET .../exec-interactive`, `v1.exec-interactive.supd`) through a real
//! `supd` into real busybox containers, with tungstenite as an independent client.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;
use tungstenite::protocol::WebSocket;

/// An interactive session in container `web` of instance `web-1` of `app`.
fn open(supd: &Supd, app: &str, cmd: &str, tty: bool) -> Ws {
    ws_open(supd, &interactive_path(app, cmd, tty), INTERACTIVE)
}

fn stdin(ws: &mut Ws, bytes: &[u8]) {
    ws.send(Message::binary([&[0x10][..], bytes].concat()))
        .unwrap();
}

fn close_stdin(ws: &mut Ws) {
    ws.send(Message::binary(vec![0x12])).unwrap();
}

fn resize(ws: &mut Ws, rows: u16, cols: u16) {
    let json = format!(r#"{{"h":{rows},"w":{cols}}}"#);
    ws.send(Message::binary([&[0x11][..], json.as_bytes()].concat()))
        .unwrap();
}

/// Read everything up to the close frame: (output, close code, close reason); no output frame
/// is larger than 64 KiB.
fn finish(ws: &mut Ws) -> (Vec<u8>, u16, String) {
    let (out, close) = read_to_close(ws, |b| {
        assert!(b.len() <= 64 * 1024, "frame of {} bytes", b.len())
    });
    let (code, reason) = close.expect("close without a code");
    (out, u16::from(code), reason)
}

#[test]
fn terminal_size_tty_and_exit_status() {
    let cs = Containers::new("ix-tty");
    let app = unique("ix");
    managed(&cs, &app, "web", &["-e", "FOO=bar"], SLEEPER);
    let supd = Supd::start();

    let mut ws = open(
        &supd,
        &app,
        "sh -c 'stty size; read x; stty size; exit 42'",
        true,
    );
    let mut out = Vec::new();
    ws_read_until(&mut ws, &mut out, "24 80");
    resize(&mut ws, 40, 100);
    stdin(&mut ws, b"\n");
    let (rest, code, reason) = finish(&mut ws);
    out.extend(rest);
    assert!(String::from_utf8_lossy(&out).contains("40 100"), "{out:?}");
    assert_eq!((code, reason.as_str()), (1000, r#"{"exit-code":42}"#));

    let mut ws = open(&supd, &app, "tty", true);
    let (out, code, reason) = finish(&mut ws);
    assert!(
        out.starts_with(b"/dev/pts/"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!((code, reason.as_str()), (1000, r#"{"exit-code":0}"#));

    // tty defaults to true.
    let mut ws = open(&supd, &app, "tty", true);
    let path = format!(
        "/v1/state/applications/{app}/service-instances/web-1/containers/web/exec-interactive?cmd=tty"
    );
    let request = ws_request(supd.addr, &path, ADMIN_TOKEN, INTERACTIVE);
    let (mut default_ws, _) =
        tungstenite::client(request, TcpStream::connect(supd.addr).unwrap()).unwrap();
    let (out, _, _) = finish(&mut default_ws);
    assert!(
        out.starts_with(b"/dev/pts/"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    drop(finish(&mut ws));

    let mut ws = open(&supd, &app, "tty", false);
    let (out, code, reason) = finish(&mut ws);
    assert_eq!(String::from_utf8_lossy(&out), "not a tty\n");
    assert_eq!((code, reason.as_str()), (1000, r#"{"exit-code":1}"#));

    // TERM is set for a terminal; the container's own environment is kept.
    let mut ws = open(&supd, &app, "env", true);
    let (out, _, _) = finish(&mut ws);
    let env = String::from_utf8_lossy(&out);
    assert!(env.contains("TERM="), "{env}");
    assert!(env.contains("FOO=bar"), "{env}");

    let mut ws = open(&supd, &app, "sh -c 'kill -KILL $$'", false);
    let (_, code, reason) = finish(&mut ws);
    assert_eq!((code, reason.as_str()), (1000, r#"{"signal":9}"#));
}

#[test]
fn cat_echoes_and_ends_on_close_stdin() {
    let cs = Containers::new("ix-cat");
    let app = unique("ix");
    managed(&cs, &app, "web", &[], SLEEPER);
    let supd = Supd::start();

    let mut ws = open(&supd, &app, "cat", false);
    let mut out = Vec::new();
    stdin(&mut ws, b"hello\n");
    ws_read_until(&mut ws, &mut out, "hello\n");
    stdin(&mut ws, b"world");
    close_stdin(&mut ws);
    let (rest, code, reason) = finish(&mut ws);
    out.extend(rest);
    assert_eq!(out, b"hello\nworld");
    assert_eq!((code, reason.as_str()), (1000, r#"{"exit-code":0}"#));

    // With a terminal, close-stdin is end-of-file at the terminal.
    let mut ws = open(&supd, &app, "cat", true);
    stdin(&mut ws, b"hi\n");
    close_stdin(&mut ws);
    let (out, code, reason) = finish(&mut ws);
    assert!(String::from_utf8_lossy(&out).contains("hi"), "{out:?}");
    assert_eq!((code, reason.as_str()), (1000, r#"{"exit-code":0}"#));

    // A frame that is not part of the protocol closes with 1003.
    let mut ws = open(&supd, &app, "cat", false);
    ws.send(Message::binary(vec![0x42, 1, 2])).unwrap();
    let (_, code, _) = finish(&mut ws);
    assert_eq!(code, 1003);
    let mut ws = open(&supd, &app, "cat", false);
    ws.send(Message::text("hello")).unwrap();
    let (_, code, _) = finish(&mut ws);
    assert_eq!(code, 1003);
    supd.wait_until(Duration::from_secs(10), || supd.children().is_empty());
}

#[test]
fn large_output_through_a_slow_reader_with_bounded_memory() {
    let cs = Containers::new("ix-big");
    let app = unique("ix");
    managed(&cs, &app, "web", &[], SLEEPER);
    let supd = Supd::start();
    const TOTAL: usize = 50_000_000;
    let line = b"0123456789abcdefghi\n";
    let mut ws = open(
        &supd,
        &app,
        &format!("sh -c 'yes 0123456789abcdefghi | head -c {TOTAL}'"),
        false,
    );
    // Let every buffer between the command and us fill up.
    std::thread::sleep(Duration::from_millis(500));
    let mut got = 0usize;
    let mut max_rss = 0;
    let mut frames = 0u64;
    let (code, reason) = loop {
        match ws.read().unwrap() {
            Message::Binary(b) => {
                assert!(b.len() <= 64 * 1024);
                for (i, byte) in b.iter().enumerate() {
                    let want = line[(got + i) % line.len()];
                    assert_eq!(*byte, want, "byte {} differs", got + i);
                }
                got += b.len();
                frames += 1;
                if frames.is_multiple_of(16) {
                    max_rss = max_rss.max(supd.rss_kib());
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Message::Close(Some(c)) => break (u16::from(c.code), c.reason.to_string()),
            m => panic!("unexpected {m:?}"),
        }
    };
    assert_eq!(got, TOTAL);
    assert_eq!((code, reason.as_str()), (1000, r#"{"exit-code":0}"#));
    assert!(max_rss < 64 * 1024, "supd RSS reached {max_rss} KiB");
}

#[test]
fn ctrl_c_interrupts_yes_and_hang_up_kills() {
    let cs = Containers::new("ix-intr");
    let app = unique("ix");
    let id = managed(&cs, &app, "web", &[], SLEEPER);
    let supd = Supd::start();

    let mut ws = open(&supd, &app, "yes", true);
    let mut out = Vec::new();
    ws_read_until(&mut ws, &mut out, "y\r\ny\r\n");
    let t = Instant::now();
    stdin(&mut ws, &[0x03]);
    let (_, code, reason) = finish(&mut ws);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "Ctrl-C took {:?}",
        t.elapsed()
    );
    assert_eq!((code, reason.as_str()), (1000, r#"{"signal":2}"#));

    // The client vanishes: the session's processes go (SIGHUP, then SIGKILL).
    for tty in [true, false] {
        let ws = open(&supd, &app, "sh -c 'sleep 1000 & sleep 1001'", tty);
        supd.wait_until(Duration::from_secs(10), || top_has(&id, "sleep 1001"));
        drop(ws);
        supd.wait_until(Duration::from_secs(10), || {
            !top_has(&id, "sleep 1000") && !top_has(&id, "sleep 1001")
        });
    }
    supd.wait_until(Duration::from_secs(10), || supd.children().is_empty());
}

#[test]
fn two_hundred_concurrent_sessions() {
    let cs = Containers::new("ix-many");
    let app = unique("ix");
    managed(&cs, &app, "web", &[], SLEEPER);
    let supd = Supd::start();
    let fds = supd.fd_count();
    let mut sessions: Vec<(usize, Ws)> = (0..200)
        .map(|n| {
            (
                n,
                open(
                    &supd,
                    &app,
                    &format!("sh -c 'read x; echo {n} $x'"),
                    n % 2 == 0,
                ),
            )
        })
        .collect();
    eprintln!("supd descriptors with 200 sessions: {}", supd.fd_count());
    // All are alive at once; now each gets its own input and answers with its own output.
    for (n, ws) in sessions.iter_mut().rev() {
        stdin(ws, format!("in{n}\n").as_bytes());
    }
    for (n, ws) in sessions.iter_mut() {
        let (out, code, reason) = finish(ws);
        let text = String::from_utf8_lossy(&out).replace('\r', "");
        assert!(text.ends_with(&format!("{n} in{n}\n")), "{n}: {text:?}");
        assert_eq!((code, reason.as_str()), (1000, r#"{"exit-code":0}"#));
    }
    drop(sessions);
    supd.wait_until(Duration::from_secs(10), || {
        supd.children().is_empty() && supd.fd_count() <= fds
    });
}

#[test]
fn upgrade_refusals() {
    let cs = Containers::new("ix-auth");
    let app = unique("ix");
    managed(&cs, &app, "web", &[], SLEEPER);
    let stopped = managed(&cs, &app, "off", &[], SLEEPER);
    docker(&["stop", "-t", "0", &stopped]);
    let supd = Supd::start();
    let p = interactive_path(&app, "id", true);
    let r = raw_upgrade(&supd, &p, READER_TOKEN, INTERACTIVE);
    assert_eq!(r.status, 403, "{}", r.text());
    let r = raw_upgrade(&supd, &p, OTHER_TOKEN, INTERACTIVE);
    assert_eq!(r.status, 403, "{}", r.text());
    let r = raw_upgrade(&supd, &p, ADMIN_TOKEN, "v1.connect.supd");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = supd.get(&p, ADMIN_TOKEN);
    assert_eq!(r.status, 426, "{}", r.text());
    assert_eq!(r.header("Upgrade"), Some("websocket"));
    let off = p.replace("/web-1/containers/web/", "/off-1/containers/off/");
    let r = raw_upgrade(&supd, &off, ADMIN_TOKEN, INTERACTIVE);
    assert_eq!(r.status, 409, "{}", r.text());
    let blank = format!(
        "/v1/state/applications/{app}/service-instances/web-1/containers/web/exec-interactive?cmd=%20"
    );
    let r = raw_upgrade(&supd, &blank, ADMIN_TOKEN, INTERACTIVE);
    assert_eq!(r.status, 400, "{}", r.text());
    // The good request works on the same daemon.
    let mut ws = open(&supd, &app, "id -u", false);
    let (out, _, _) = finish(&mut ws);
    assert_eq!(out, b"0\n");
}

#[test]
fn pings_idle_timeout_and_background_holders() {
    let cs = Containers::new("ix-ping");
    let app = unique("ix");
    let id = managed(&cs, &app, "web", &[], SLEEPER);
    let cfg = std::env::temp_dir().join(format!("{}.yaml", unique("supd-cfg")));
    std::fs::write(
        &cfg,
        "websocket: {ping-interval-ms: 200, idle-timeout-ms: 1500}\nexec: {kill-grace-ms: 300}\n",
    )
    .unwrap();
    let supd = Supd::start_with(SupdOptions {
        extra_args: vec!["--config".into(), cfg.to_string_lossy().into_owned()],
        ..Default::default()
    });
    let _ = std::fs::remove_file(&cfg);

    // The server pings while the command is quiet; tungstenite answers.
    let mut ws = open(&supd, &app, "sleep 1", false);
    let mut pings = 0;
    let (code, reason) = loop {
        match ws.read().unwrap() {
            Message::Ping(_) => pings += 1,
            Message::Close(Some(c)) => break (u16::from(c.code), c.reason.to_string()),
            m => panic!("unexpected {m:?}"),
        }
    };
    assert!(pings >= 2, "{pings} pings");
    assert_eq!((code, reason.as_str()), (1000, r#"{"exit-code":0}"#));

    // A background process that keeps the output open does not hold the close.
    let t = Instant::now();
    let mut ws = open(&supd, &app, "sh -c 'sleep 1003 & echo started'", false);
    let (out, code, reason) = finish(&mut ws);
    assert_eq!(out, b"started\n");
    assert_eq!((code, reason.as_str()), (1000, r#"{"exit-code":0}"#));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // A silent session past the idle timeout is closed and its command ended.
    let t = Instant::now();
    let mut ws = open(&supd, &app, "sleep 1004", true);
    let mut closed = false;
    while let Ok(m) = ws.read() {
        if let Message::Close(_) = m {
            closed = true;
        }
    }
    assert!(closed, "no close frame for the idle session");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    supd.wait_until(Duration::from_secs(10), || !top_has(&id, "sleep 1004"));
    supd.wait_until(Duration::from_secs(10), || supd.children().is_empty());
}

#[test]
fn client_close_and_isolation_from_a_flood() {
    let cs = Containers::new("ix-iso");
    let app = unique("ix");
    let id = managed(&cs, &app, "web", &[], SLEEPER);
    let supd = Supd::start();

    // The client closes first: the command goes.
    let mut ws = open(&supd, &app, "sh -c 'sleep 1005 & cat'", false);
    supd.wait_until(Duration::from_secs(10), || top_has(&id, "sleep 1005"));
    ws.close(None).unwrap();
    let mut closed = false;
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => closed = true,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(closed, "supd did not answer the close");
    supd.wait_until(Duration::from_secs(10), || !top_has(&id, "sleep 1005"));

    // Floods that nobody reads (output, and input the command never reads) do not delay
    // anyone else.
    let _flood_out = open(&supd, &app, "yes", true);
    let mut flood_in = open(&supd, &app, "sleep 1006", false);
    let junk = vec![0x10; 64 * 1024];
    flood_in
        .get_mut()
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    for _ in 0..32 {
        if flood_in.send(Message::binary(junk.clone())).is_err() {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..10 {
        let t = Instant::now();
        let mut ws = open(&supd, &app, &format!("echo {i}"), i % 2 == 0);
        let (out, _, _) = finish(&mut ws);
        assert_eq!(
            String::from_utf8_lossy(&out).replace('\r', ""),
            format!("{i}\n")
        );
        let body = format!(r#"{{"cmd": "echo x{i}"}}"#);
        let r = supd.post_json(
            &format!("/v1/state/applications/{app}/service-instances/web-1/containers/web/exec"),
            ADMIN_TOKEN,
            &body,
        );
        assert_eq!(r.json()["output"], format!("x{i}\n"));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}

#[test]
fn bad_queries_init_containers_and_shutdown() {
    let cs = Containers::new("ix-misc");
    let app = unique("ix");
    let id = managed(&cs, &app, "web", &[], SLEEPER);
    managed(
        &cs,
        &app,
        "web",
        &[
            "--label",
            "io.supd.init-container=true",
            "--label",
            "io.supd.container=setup",
        ],
        SLEEPER,
    );
    docker(&[
        "stop",
        "-t",
        "0",
        &cs.docker(&[
            "ps",
            "-q",
            "--filter",
            "label=io.supd.container=setup",
            "--filter",
            &format!("label=io.supd.application={app}"),
        ]),
    ]);
    let mut supd = Supd::start();
    let base = format!("/v1/state/applications/{app}/service-instances/web-1");
    let upgrade = |p: &str| raw_upgrade(&supd, p, ADMIN_TOKEN, INTERACTIVE);
    let web = format!("{base}/containers/web/exec-interactive");
    assert_eq!(upgrade(&web).status, 400, "no cmd");
    assert_eq!(upgrade(&format!("{web}?cmd=id&tty=maybe")).status, 400);
    let r = upgrade(&format!(
        "{base}/init-containers/setup/exec-interactive?cmd=id"
    ));
    assert_eq!(r.status, 409, "{}", r.text());

    // supd stopping ends sessions with 1001 and their commands with them.
    let mut ws = open(&supd, &app, "sleep 1007", true);
    supd.wait_until(Duration::from_secs(10), || top_has(&id, "sleep 1007"));
    supd.signal("TERM");
    let (_, code, _) = finish(&mut ws);
    assert_eq!(code, 1001);
    let deadline = Instant::now() + Duration::from_secs(10);
    while supd.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "supd did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    supd.wait_until(Duration::from_secs(10), || !top_has(&id, "sleep 1007"));
}

#[test]
fn frames_sent_with_the_upgrade_and_large_stdin() {
    let cs = Containers::new("ix-stdin");
    let app = unique("ix");
    managed(&cs, &app, "web", &[], SLEEPER);
    let supd = Supd::start();

    // Frames right behind the upgrade request, before the 101, in one write.
    let mut raw = format!(
        "GET {} HTTP/1.1\r\nHost: supd\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {INTERACTIVE}\r\n\r\n",
        interactive_path(&app, "cat", false)
    )
    .into_bytes();
    raw.extend(frame(OP_BINARY, true, b"\x10early\n", true));
    raw.extend(frame(OP_BINARY, true, b"\x12", true));
    let mut stream = TcpStream::connect(supd.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    std::io::Write::write_all(&mut stream, &raw).unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut stream, &mut b).unwrap(), 1);
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut ws = WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Client, None);
    let (out, code, reason) = finish(&mut ws);
    assert_eq!(out, b"early\n");
    assert_eq!((code, reason.as_str()), (1000, r#"{"exit-code":0}"#));

    // 8 MB of input through a pipe to a command that checks it.
    let chunk: String = (0..1000).map(|i| format!("{i:07}\n")).collect();
    let total: String = chunk.repeat(1000);
    let mut ws = open(&supd, &app, "sha256sum", false);
    for piece in total.as_bytes().chunks(60_000) {
        stdin(&mut ws, piece);
    }
    close_stdin(&mut ws);
    let (out, code, _) = finish(&mut ws);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(
        out.split_whitespace().next(),
        Some(supd::testing::auth::hash_hex(&total).as_str())
    );
    assert_eq!(code, 1000);
}

#[test]
fn all_terminal_output_arrives_before_the_close() {
    let cs = Containers::new("ix-ttyout");
    let app = unique("ix");
    managed(&cs, &app, "web", &[], SLEEPER);
    let supd = Supd::start();
    for round in 0..5 {
        let mut ws = open(&supd, &app, "sh -c 'yes abc | head -c 2000000'", true);
        if round % 2 == 1 {
            std::thread::sleep(Duration::from_millis(300));
        }
        let (out, code, reason) = finish(&mut ws);
        // The terminal turns each "\n" into "\r\n".
        assert_eq!(out.len(), 2_000_000 + 500_000, "round {round}");
        assert!(out.starts_with(b"abc\r\nabc\r\n"));
        assert_eq!((code, reason.as_str()), (1000, r#"{"exit-code":0}"#));
    }
}

#[test]
fn ctrl_c_reaches_a_command_that_does_not_read_input() {
    let cs = Containers::new("ix-intr2");
    let app = unique("ix");
    managed(&cs, &app, "web", &[], SLEEPER);
    let supd = Supd::start();
    let mut ws = open(&supd, &app, "sleep 1008", true);
    ws.get_mut()
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Typed-ahead input the command never reads fills the terminal's buffers first.
    for _ in 0..8 {
        stdin(&mut ws, &[b'x'; 60_000]);
    }
    let t = Instant::now();
    stdin(&mut ws, &[0x03]);
    let (_, code, reason) = finish(&mut ws);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!((code, reason.as_str()), (1000, r#"{"signal":2}"#));
}
