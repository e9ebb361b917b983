//! `site=` forwarding between two real supd daemons, each on a real Docker engine of its own
//! (site B on a private dockerd), and the failures a peer can cause: stopped, silent,
//! killed mid-stream, a loop. Fake peers (plain sockets in the test) show what exactly is
//! sent to a peer and what a cut answer does to the client.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// A token site A knows and site B does not.
const A_ONLY_TOKEN: &str = "supd_test_a_only_token_0123456789abcdef";

/// Site A: a supd on the shared engine whose configuration is `yaml` (rewritten by tests
/// for SIGHUP), its site named `a`.
fn site_a(dir: &TempDir, yaml: &str) -> Supd {
    let cfg = config_file(dir, yaml);
    let a = Supd::start_with(SupdOptions {
        extra_args: vec!["--config".into(), cfg, "--site".into(), "a".into()],
        ..Default::default()
    });
    // One more token, known here only.
    let tokens = a.dir.path().join("tokens.yaml");
    let mut text = std::fs::read_to_string(&tokens).unwrap();
    text.push_str(&format!(
        "  - name: a-only\n    sha256: \"{}\"\n    operations: [read, exec, connect, restart]\n    applications: [\"*\"]\n",
        sha256_hex(A_ONLY_TOKEN)
    ));
    std::fs::write(&tokens, text).unwrap();
    a.signal("HUP");
    a.wait_until(Duration::from_secs(10), || {
        a.get("/v1/state/applications/x/service-instances", A_ONLY_TOKEN)
            .status
            == 200
    });
    a
}

fn site_b(docker: Option<&Path>) -> Supd {
    Supd::start_with(SupdOptions {
        extra_args: vec!["--site".into(), "b".into()],
        docker_socket: docker.map(Path::to_path_buf),
        ..Default::default()
    })
}

fn peer(name: &str, url: &str) -> String {
    format!("  {name}:\n    url: {url}\n")
}

fn resize(ws: &mut Ws, rows: u16, cols: u16) {
    let json = format!(r#"{{"h":{rows},"w":{cols}}}"#);
    ws.send(Message::binary([&[0x11][..], json.as_bytes()].concat()))
        .unwrap();
}

fn interactive(app: &str, cmd: &str) -> String {
    format!(
        "/v1/state/applications/{app}/service-instances/web-1/containers/web/exec-interactive?cmd={}&tty=true",
        encode(cmd)
    )
}

fn exec_path_web(app: &str) -> String {
    format!("/v1/state/applications/{app}/service-instances/web-1/containers/web/exec")
}

/// Bytes through a forwarded connect tunnel: this many each way.
const BULK: usize = 100 << 20;

#[test]
fn every_endpoint_through_a_site_answers_as_the_site_itself() {
    let engine = PrivateDocker::new("sds", 78);
    engine.load_test_image();
    let app = unique("sites");
    let mut args = vec!["run".to_string(), "-d".into()];
    args.extend(managed_args(
        &app,
        "web",
        // On the private engine's own bridge: tcp-connect goes to the container's address.
        &["--stop-timeout", "1"],
        SLEEPER,
    ));
    let id = engine.docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let pid: u32 = engine
        .docker(&["inspect", "-f", "{{.State.Pid}}", &id])
        .parse()
        .unwrap();

    let b = site_b(Some(&engine.socket()));
    wait_running(&b, &app);
    let dir = TempDir::new();
    let token_file = dir.path().join("b.token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let b_url = format!("http://{}", b.addr);
    let yaml = format!(
        "sites:\n{}  b-as-admin:\n    url: {b_url}\n    token-file: {}\n",
        peer("b", &b_url),
        token_file.display()
    );
    let a = site_a(&dir, &yaml);

    // State: every form the same through A as from B itself, and not what A has.
    let list = format!("/v1/state/applications/{app}/service-instances");
    let one = instance_path(&app, "web");
    assert_eq!(a.get(&list, ADMIN_TOKEN).json(), serde_json::json!([]));
    let fields = "fields=name,containers(name,oper-status)";
    for (path, queries) in [
        (&list, &["", fields, "keys=true", "count=true"][..]),
        (&one, &["", fields][..]),
    ] {
        for &query in queries {
            let p = if query.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{query}")
            };
            for accept in ["application/json", "application/yaml"] {
                let auth = format!("Bearer {ADMIN_TOKEN}");
                let h = [("Authorization", auth.as_str()), ("Accept", accept)];
                let direct = b.request("GET", &p, &h, b"");
                let via = a.request("GET", &with_site(&p, "b"), &h, b"");
                assert_eq!(direct.status, 200, "{p}: {}", direct.text());
                assert_eq!(via.status, direct.status, "{p}");
                assert_eq!(via.header("content-type"), direct.header("content-type"));
                assert_eq!(via.text(), direct.text(), "{p} {accept}");
            }
        }
    }
    // Errors are B's, relayed as they are.
    for p in [
        instance_path(&app, "nosuch"),
        format!("{list}?fields=(("),
        format!("{list}?bogus=1"),
        format!("{one}?keys=true"),
    ] {
        let direct = b.get(&p, ADMIN_TOKEN);
        let via = a.get(&with_site(&p, "b"), ADMIN_TOKEN);
        assert!(direct.status >= 400, "{p}");
        assert_eq!(
            (via.status, via.text()),
            (direct.status, direct.text()),
            "{p}"
        );
    }

    // Exec: exit codes and output.
    let exec = exec_path_web(&app);
    for cmd in ["true", "sh -c 'echo out; echo err >&2; exit 3'", "hostname"] {
        let body = serde_json::json!({ "cmd": cmd }).to_string();
        let direct = b.post_json(&exec, ADMIN_TOKEN, &body);
        let via = a.post_json(&with_site(&exec, "b"), ADMIN_TOKEN, &body);
        assert_eq!(direct.status, 200, "{cmd}: {}", direct.text());
        assert_eq!((via.status, via.json()), (200, direct.json()), "{cmd}");
    }
    let v = a
        .post_json(
            &with_site(&exec, "b"),
            ADMIN_TOKEN,
            r#"{"cmd":"sh -c 'exit 42'"}"#,
        )
        .json();
    assert_eq!(v["exit-code"], 42, "{v}");

    // Credentials: a token B does not know gets B's 401; with the site's token-file, B sees
    // its token instead.
    let direct = b.get(&list, A_ONLY_TOKEN);
    let via = a.get(&with_site(&list, "b"), A_ONLY_TOKEN);
    assert_eq!(direct.status, 401);
    assert_eq!((via.status, via.text()), (401, direct.text()));
    let via = a.get(&with_site(&list, "b-as-admin"), A_ONLY_TOKEN);
    assert_eq!(via.status, 200, "{}", via.text());
    // A token A refuses never reaches B: 401 and 403 from A, nothing in B's log.
    let marker = unique("never-at-b");
    let never = format!("/v1/state/applications/{marker}/service-instances");
    let r = a.get(&with_site(&never, "b"), "not-a-token");
    assert_eq!(r.status, 401);
    let r = a.post_json(
        &with_site(&exec_path_web(&marker), "b"),
        READER_TOKEN,
        r#"{"cmd":"true"}"#,
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = a.post_json(
        &with_site(&exec_path_web(&marker), "b"),
        OTHER_TOKEN,
        r#"{"cmd":"true"}"#,
    );
    assert_eq!(r.status, 403, "{}", r.text());
    // The same request with a good token does reach B (so the log would show it).
    let r = a.get(&with_site(&never, "b"), ADMIN_TOKEN);
    assert_eq!(r.status, 200);
    b.wait_until(Duration::from_secs(5), || b.log_text().contains(&marker));
    assert_eq!(
        b.log_text().matches(&marker).count(),
        1,
        "B's log:\n{}",
        b.log_text()
    );

    // An interactive shell with resize and exit code.
    let mut ws = ws_client(
        a.addr,
        &with_site(
            &interactive(&app, "sh -c 'stty size; read x; stty size; exit 42'"),
            "b",
        ),
        INTERACTIVE,
    );
    let mut out = Vec::new();
    ws_read_until(&mut ws, &mut out, "24 80");
    resize(&mut ws, 40, 100);
    stdin(&mut ws, b"\n");
    let (rest, code, reason) = ws_until_close(&mut ws);
    out.extend(rest);
    assert!(String::from_utf8_lossy(&out).contains("40 100"), "{out:?}");
    assert_eq!((code, reason.as_str()), (1000, r#"{"exit-code":42}"#));

    // Connect, TCP: 100 MB each way, byte-exact; UDP datagrams whole.
    let sink = in_netns(pid, || TcpListener::bind("127.0.0.1:9").unwrap());
    thread::spawn(move || {
        for s in sink.incoming() {
            let Ok(mut s) = s else { return };
            thread::spawn(move || {
                let mut sum = Sum::default();
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sum.update(&buf[..n]);
                }
                let _ = s.write_all(format!("{} {}", sum.len, sum.h).as_bytes());
            });
        }
    });
    let source = in_netns(pid, || TcpListener::bind("127.0.0.1:19").unwrap());
    thread::spawn(move || {
        for s in source.incoming() {
            let Ok(mut s) = s else { return };
            thread::spawn(move || pattern(BULK, |c| s.write_all(c).unwrap_or(())));
        }
    });
    let udp = in_netns(pid, || UdpSocket::bind("127.0.0.1:53").unwrap());
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });
    let connect = |q: &str| {
        with_site(
            &format!("/v1/state/applications/{app}/service-instances/web-1/connect?{q}"),
            "b",
        )
    };
    let t0 = Instant::now();
    let mut w = ws_client(a.addr, &connect("protocol=tcp&port=9"), CONNECT);
    pattern(BULK, |c| w.send(Message::binary(c.to_vec())).unwrap());
    w.send(Message::binary(Vec::new())).unwrap();
    let (answer, close) = read_to_close(&mut w, |_| {});
    let (len, h) = pattern_sum(BULK);
    assert_eq!(String::from_utf8(answer).unwrap(), format!("{len} {h}"));
    assert_eq!(close.map(|c| c.0), Some(CloseCode::Normal));
    let up = t0.elapsed();
    let t0 = Instant::now();
    let mut w = ws_client(a.addr, &connect("protocol=tcp&port=19"), CONNECT);
    let mut sum = Sum::default();
    let (_, close) = read_to_close(&mut w, |b| sum.update(b));
    assert_eq!((sum.len, sum.h), pattern_sum(BULK));
    assert_eq!(close.map(|c| c.0), Some(CloseCode::Normal));
    eprintln!(
        "forwarded tunnel: {} MB up in {up:?}, down in {:?}",
        BULK >> 20,
        t0.elapsed()
    );
    // A client that does not read: the relay's buffers stay bounded (backpressure reaches the
    // source through B), and reading later gets every byte.
    let (mut w, resp) = try_ws(
        a.addr,
        &connect("protocol=tcp&port=19"),
        ADMIN_TOKEN,
        CONNECT,
    )
    .unwrap_or_else(|(s, b)| panic!("{s}: {b}"));
    assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], CONNECT);
    thread::sleep(Duration::from_secs(2));
    // Peak memory of A through 200 MB of tunnels and this stalled reader.
    let peak = peak_rss_kib(a.pid());
    eprintln!("site A's peak RSS: {peak} KiB");
    assert!(peak < 32 * 1024, "A peaked at {peak} KiB");
    let mut sum = Sum::default();
    read_to_close(&mut w, |b| sum.update(b));
    assert_eq!((sum.len, sum.h), pattern_sum(BULK));
    // A refused upgrade is B's HTTP answer (nothing listens on port 1).
    let p =
        format!("/v1/state/applications/{app}/service-instances/web-1/connect?protocol=tcp&port=1");
    let direct = try_ws(b.addr, &p, ADMIN_TOKEN, CONNECT)
        .map(|_| ())
        .expect_err("refused");
    let via = try_ws(a.addr, &with_site(&p, "b"), ADMIN_TOKEN, CONNECT)
        .map(|_| ())
        .expect_err("refused");
    assert_eq!(direct.0, 502, "{}", direct.1);
    assert_eq!(via, direct);
    // tcp-connect (deprecated): to the container's address on its network; the 101's
    // Deprecation header is B's, relayed.
    let echo = in_netns(pid, || TcpListener::bind("0.0.0.0:7").unwrap());
    thread::spawn(move || {
        for s in echo.incoming() {
            let Ok(mut s) = s else { return };
            let mut r = s.try_clone().unwrap();
            thread::spawn(move || {
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    let p = with_site(
        &format!(
            "/v1/state/applications/{app}/service-instances/web-1/containers/web/tcp-connect?port=7"
        ),
        "b",
    );
    let (mut w, resp) =
        try_ws(a.addr, &p, ADMIN_TOKEN, TCP_CONNECT).unwrap_or_else(|(s, b)| panic!("{s}: {b}"));
    assert_eq!(resp.headers()["Deprecation"], "true");
    assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], TCP_CONNECT);
    w.send(Message::binary(b"through two sites".to_vec()))
        .unwrap();
    assert_eq!(next_binary(&mut w), b"through two sites");
    close_ws(w);

    let mut w = ws_client(a.addr, &connect("protocol=udp&port=53"), CONNECT);
    for size in [1usize, 1400, 65507] {
        let d: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
        w.send(Message::binary(d.clone())).unwrap();
        assert_eq!(next_binary(&mut w), d, "datagram of {size} bytes");
    }
    close_ws(w);

    // SIGHUP on A adds a site; a forwarded session open meanwhile carries on.
    let mut ws = ws_client(
        a.addr,
        &with_site(&interactive(&app, "sh"), "b"),
        INTERACTIVE,
    );
    stdin(&mut ws, b"echo before-$((6*7))\n");
    let mut out = Vec::new();
    ws_read_until(&mut ws, &mut out, "before-42");
    assert_eq!(a.get(&with_site(&list, "b2"), ADMIN_TOKEN).status, 404);
    config_file(&dir, &format!("{yaml}{}", peer("b2", &b_url)));
    a.signal("HUP");
    a.wait_until(Duration::from_secs(10), || {
        a.get(&with_site(&list, "b2"), ADMIN_TOKEN).status == 200
    });
    stdin(&mut ws, b"echo after-$((6*7))\n");
    ws_read_until(&mut ws, &mut out, "after-42");
    stdin(&mut ws, b"exit 7\n");
    let (_, code, reason) = ws_until_close(&mut ws);
    assert_eq!((code, reason.as_str()), (1000, r#"{"exit-code":7}"#));

    // A stopping (SIGTERM) closes a forwarded session with 1001, as it does its own.
    let dir2 = TempDir::new();
    let a2 = site_a(&dir2, &yaml);
    let mut ws = ws_client(
        a2.addr,
        &with_site(&interactive(&app, "cat"), "b"),
        INTERACTIVE,
    );
    stdin(&mut ws, b"one\n");
    let mut out = Vec::new();
    ws_read_until(&mut ws, &mut out, "one");
    a2.signal("TERM");
    let (_, code, reason) = ws_until_close(&mut ws);
    assert_eq!((code, reason.as_str()), (1001, "supd is shutting down"));

    // Restart through A: B's answer, and the container really started again.
    let started = engine.docker(&["inspect", "-f", "{{.State.StartedAt}}", &id]);
    let r = a.post_json(&with_site(&format!("{one}/restart"), "b"), ADMIN_TOKEN, "");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_ne!(
        engine.docker(&["inspect", "-f", "{{.State.StartedAt}}", &id]),
        started
    );
    let r = b.post_json(&format!("{one}/restart"), ADMIN_TOKEN, "");
    assert_eq!(r.status, 204, "{}", r.text());
    wait_running(&b, &app);

    // B killed mid-session: the client gets a 1011 close naming the site; then B is gone: 502.
    let mut ws = ws_client(
        a.addr,
        &with_site(&interactive(&app, "cat"), "b"),
        INTERACTIVE,
    );
    stdin(&mut ws, b"ping\n");
    let mut out = Vec::new();
    ws_read_until(&mut ws, &mut out, "ping");
    let mut b = b;
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let (_, code, reason) = ws_until_close(&mut ws);
    assert_eq!(code, 1011, "{reason}");
    assert!(reason.contains("site b"), "{reason}");
    let r = a.get(&with_site(&list, "b"), ADMIN_TOKEN);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.error_message().contains("\"b\""), "{}", r.text());
    assert_eq!(r.json()["errors"][0]["error-info"]["site"], "b");
}

/// A fake peer: accepts one connection, hands the request head it read to the test, then
/// does what `answer` says with the stream.
fn fake_peer(
    answer: impl FnOnce(TcpStream) + Send + 'static,
) -> (SocketAddr, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut tmp).unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        answer(s);
    });
    (addr, rx)
}

/// A listener whose queue (backlog 0) one connection fills: further connects get no answer
/// to their SYN, as with a firewall that drops them.
fn full_listener() -> (std::os::fd::OwnedFd, TcpStream, SocketAddr) {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, getsockname, listen, socket,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
    listen(&fd, Backlog::new(0).unwrap()).unwrap();
    let port = getsockname::<SockaddrIn>(fd.as_raw_fd()).unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let first = TcpStream::connect(addr).unwrap();
    (fd, first, addr)
}

/// Everything the server sends until it closes (or the timeout).
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn raw_get(addr: SocketAddr, target: &str, extra: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         TE: trailers\r\n{extra}\r\n"
    )
    .unwrap();
    s
}

#[test]
fn what_a_peer_is_sent_and_how_its_answer_is_relayed() {
    let list = "/v1/state/applications/shop/service-instances";
    // A chunked answer, in pieces, with headers that matter and some that must not pass.
    let (peer1, head1) = fake_peer(|mut s| {
        s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDeprecation: true\r\n\
              Keep-Alive: timeout=99\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[1,2,\r\n",
        )
        .unwrap();
        thread::sleep(Duration::from_millis(100));
        s.write_all(b"2\r\n3]\r\n0\r\n\r\n").unwrap();
        thread::sleep(Duration::from_secs(1));
    });
    // An answer cut short: its Content-Length is never reached.
    let (peer2, _) = fake_peer(|mut s| {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            .unwrap();
        s.write_all(&[b'x'; 5000]).unwrap();
    });
    // Starts its answer, then stops sending (and stays connected).
    let (peer3, _) = fake_peer(|mut s| {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        thread::sleep(Duration::from_secs(10));
    });
    // A large answer for a client that never reads it: the peer learns that the relay gave
    // up (its writes fail) once A's write timeout has passed.
    let (gave_up_tx, gave_up) = mpsc::channel();
    let (peer4, _) = fake_peer(move |mut s| {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
            .unwrap();
        let chunk = vec![b'z'; 1 << 16];
        let t0 = Instant::now();
        while s.write_all(&chunk).is_ok() && t0.elapsed() < Duration::from_secs(60) {}
        let _ = gave_up_tx.send(t0.elapsed());
    });
    // Accepts, reads, never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming() {
            held.push(s);
        }
    });
    let stopped = free_port();
    let (_full, _first, full_addr) = full_listener();
    let dir = TempDir::new();
    let timeout = |name: &str, addr: SocketAddr, key: &str, ms: u32| {
        format!("{}    {key}: {ms}\n", peer(name, &format!("http://{addr}")))
    };
    let yaml = [
        "limits:\n  write-timeout-ms: 1000\nsites:\n".to_string(),
        peer("chunky", &format!("http://{peer1}")),
        peer("cut", &format!("http://{peer2}")),
        peer("big", &format!("http://{peer4}")),
        timeout("full", full_addr, "connect-timeout-ms", 300),
        timeout("stall", peer3, "response-timeout-ms", 500),
        timeout("silent", silent_addr, "response-timeout-ms", 1500),
        peer("stopped", &format!("http://127.0.0.1:{stopped}")),
        peer("nosocket", "unix:/nonexistent/supd.sock"),
        peer("nodns", "http://no-such-host.invalid:4646"),
        peer("tls", "https://127.0.0.1:1"),
    ]
    .concat();
    let a = site_a(&dir, &yaml);

    let mut s = raw_get(
        a.addr,
        &format!("{list}?fields=name&site=chunky&keys=true&x=%2F+y"),
        "Connection: close\r\nKeep-Alive: timeout=5\r\nSupd-Hops: 1\r\n\
         Supd-Forwarded-For: forged@x\r\nProxy-Authorization: Basic x\r\n",
    );
    let sent = head1.recv_timeout(Duration::from_secs(10)).unwrap();
    let first = sent.lines().next().unwrap();
    assert_eq!(
        first,
        format!("GET {list}?fields=name&keys=true&x=%2F+y HTTP/1.1")
    );
    let lower = sent.to_ascii_lowercase();
    for want in [
        format!("authorization: bearer {}", ADMIN_TOKEN.to_ascii_lowercase()),
        "supd-forwarded-for: admin@a".into(),
        "supd-hops: 2".into(),
        "connection: close".into(),
    ] {
        assert!(lower.contains(&want), "{want:?} not in {sent}");
    }
    for gone in [
        "forged",
        "proxy-authorization",
        "te: trailers",
        "keep-alive",
    ] {
        assert!(!lower.contains(gone), "{gone:?} in {sent}");
    }
    let got = String::from_utf8(read_all(&mut s)).unwrap();
    let (head, body) = got.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok"), "{got}");
    for want in [
        "content-type: application/json",
        "deprecation: true",
        "transfer-encoding: chunked",
        "connection: close",
    ] {
        assert!(head.contains(want), "{want:?} not in {got}");
    }
    assert!(!head.contains("keep-alive"), "{got}");
    assert_eq!(body, "5\r\n[1,2,\r\n2\r\n3]\r\n0\r\n\r\n");

    // Cut mid-answer: the client's connection is closed before the announced length.
    let mut s = raw_get(a.addr, &format!("{list}?site=cut"), "");
    let got = read_all(&mut s);
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.1 200 OK"));
    assert!(got.len() - head_end < 1_000_000, "{}", got.len() - head_end);

    // A client that does not read: dropped after the write timeout, the peer with it.
    let _s = raw_get(a.addr, &format!("{list}?site=big"), "");
    let waited = gave_up
        .recv_timeout(Duration::from_secs(30))
        .expect("relay gave up");
    assert!(waited < Duration::from_secs(10), "{waited:?}");

    // Stalled mid-answer for its response timeout: closed, the answer short.
    let t0 = Instant::now();
    let mut s = raw_get(a.addr, &format!("{list}?site=stall"), "");
    let got = String::from_utf8(read_all(&mut s)).unwrap();
    assert!(got.ends_with("\r\n\r\nabc"), "{got}");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // Stopped (over TCP and TLS), no socket: 502 naming the site. Silent: 504 after its timeout,
    // and other clients are served meanwhile.
    for (site, want) in [
        ("stopped", "refused"),
        ("nosocket", "No such file"),
        ("nodns", "cannot resolve no-such-host.invalid"),
        ("tls", "refused"),
    ] {
        let r = a.get(&format!("{list}?site={site}"), ADMIN_TOKEN);
        assert_eq!(r.status, 502, "{site}: {}", r.text());
        assert!(r.error_message().contains(want), "{site}: {}", r.text());
        assert_eq!(r.json()["errors"][0]["error-info"]["site"], site);
    }
    // A connect that nobody answers: 504 after the connect timeout.
    let t0 = Instant::now();
    let r = a.get(&format!("{list}?site=full"), ADMIN_TOKEN);
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        r.error_message().contains("did not accept the connection"),
        "{}",
        r.text()
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );

    let addr = a.addr;
    let t0 = Instant::now();
    let waiting = thread::spawn(move || {
        let mut c = Client::connect(addr);
        let auth = format!("Bearer {ADMIN_TOKEN}");
        c.send(
            "GET",
            "/v1/state/applications/shop/service-instances?site=silent",
            &[("Authorization", &auth)],
            b"",
        );
        c.read_response(false)
    });
    thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        let r = a.get(list, ADMIN_TOKEN);
        assert_eq!(r.status, 200);
    }
    assert!(
        t0.elapsed() < Duration::from_millis(1400),
        "{:?}",
        t0.elapsed()
    );
    let r = waiting.join().unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(t0.elapsed() >= Duration::from_millis(1400));
    assert_eq!(r.json()["errors"][0]["error-info"]["site"], "silent");
}

#[test]
fn hop_limit_and_a_configured_loop() {
    // A and B each name the other as a peer: A -> B -> A is as far as a request can go,
    // since the peer is asked without `site` and serves it itself.
    let b_dir = TempDir::new();
    let a_port = free_port();
    let b = {
        let cfg = config_file(
            &b_dir,
            &format!(
                "sites:\n{}",
                peer("a", &format!("http://127.0.0.1:{a_port}"))
            ),
        );
        Supd::start_with(SupdOptions {
            extra_args: vec![
                "--config".into(),
                cfg,
                "--site".into(),
                "b".into(),
                "--listen".into(),
                format!("unix:{}", b_dir.path().join("b.sock").display()),
            ],
            ..Default::default()
        })
    };
    let dir = TempDir::new();
    let a = {
        let cfg = config_file(
            &dir,
            &format!(
                "sites:\n{}{}",
                peer("b", &format!("http://{}", b.addr)),
                peer(
                    "b-unix",
                    &format!("unix:{}", b_dir.path().join("b.sock").display())
                )
            ),
        );
        Supd::start_with(SupdOptions {
            extra_args: vec![
                "--config".into(),
                cfg,
                "--site".into(),
                "a".into(),
                "--listen".into(),
                format!("127.0.0.1:{a_port}"),
            ],
            ..Default::default()
        })
    };
    let list = "/v1/state/applications/shop/service-instances";
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let get = |s: &Supd, path: &str, hops: Option<&str>| {
        let mut h = vec![("Authorization", auth.as_str())];
        if let Some(n) = hops {
            h.push(("Supd-Hops", n));
        }
        s.request("GET", path, &h, b"")
    };
    assert_eq!(get(&a, &format!("{list}?site=b"), None).status, 200);
    assert_eq!(get(&b, &format!("{list}?site=a"), None).status, 200);
    // Over B's unix socket too.
    let r = get(&a, &format!("{list}?site=b-unix&count=true"), None);
    assert_eq!((r.status, r.text().trim()), (200, r#"{"count":0}"#));
    // A forwarded answer leaves the client's connection open: pipelined requests, forwarded
    // and local, are answered in order on it.
    let mut c = Client::connect(a.addr);
    let h = [("Authorization", auth.as_str())];
    let targets = [
        format!("{list}?site=b&count=true"),
        format!("{list}?keys=true"),
        format!("{list}?count=true&site=b"),
        format!("{list}?site=a"),
    ];
    for t in &targets {
        c.send("GET", t, &h, b"");
    }
    for (t, want) in targets
        .iter()
        .zip([r#"{"count":0}"#, "[]", r#"{"count":0}"#, "[]"])
    {
        let r = c.read_response(false);
        assert_eq!((r.status, r.text().trim()), (200, want), "{t}");
    }
    // And after them, still open; a HEAD is forwarded as a HEAD (B's length, no body).
    c.send("HEAD", &targets[0], &h, b"");
    let r = c.read_response(true);
    assert_eq!((r.status, r.header("content-length")), (200, Some("12")));
    assert!(r.body.is_empty());
    c.send("GET", &targets[0], &h, b"");
    assert_eq!(c.read_response(false).status, 200);
    // The hop count travels: 3 relays before A, A's is the 4th, B refuses (relayed by A).
    let r = get(&a, &format!("{list}?site=b"), Some("3"));
    assert_eq!(r.status, 508, "{}", r.text());
    assert!(r.error_message().contains("loop"), "{}", r.text());
    assert!(b.log_text().contains(" 508 "), "B did not answer it");
    // Past the limit already: A refuses before forwarding.
    let r = get(&a, &format!("{list}?site=b"), Some("4"));
    assert_eq!(r.status, 508);
    assert_eq!(get(&a, &format!("{list}?site=b"), Some("x")).status, 400);

    // A websocket from a browser origin A does not allow is refused here, never relayed.
    let evil = unique("evil-origin");
    let p = format!(
        "/v1/state/applications/{evil}/service-instances/web-1/connect?protocol=tcp&port=7&site=b"
    );
    let refused = try_upgrade(a.addr, &p, CONNECT, &[("Origin", "https://evil.example")]);
    assert_eq!(refused.map(|_| ()).unwrap_err().0, 403);
    thread::sleep(Duration::from_millis(200));
    assert!(!b.log_text().contains(&evil), "reached B");

    // SIGHUP with a file that does not check keeps the sites; with one without b-unix, it is
    // gone (404, as any unknown site).
    let good = std::fs::read_to_string(dir.path().join("supd.yaml")).unwrap();
    config_file(&dir, "sites:\n  b-unix:\n    url: nowhere\n");
    a.signal("HUP");
    a.wait_until(Duration::from_secs(10), || {
        a.log_text().contains("sites not reloaded")
    });
    assert_eq!(get(&a, &format!("{list}?site=b-unix"), None).status, 200);
    config_file(&dir, &good.replace("b-unix", "b-gone"));
    a.signal("HUP");
    a.wait_until(Duration::from_secs(10), || {
        get(&a, &format!("{list}?site=b-unix"), None).status == 404
    });
    assert_eq!(get(&a, &format!("{list}?site=b-gone"), None).status, 200);
}

#[test]
fn check_config_checks_the_sites() {
    let dir = TempDir::new();
    let tokens = dir.path().join("tokens.yaml");
    write_tokens(&tokens);
    let token = dir.path().join("b.token");
    std::fs::write(&token, "secret\n").unwrap();
    let check = |yaml: &str| {
        let cfg = config_file(&dir, yaml);
        let out = Command::new(env!("CARGO_BIN_EXE_supd"))
            .args(["check-config", "--config", &cfg, "--tokens"])
            .arg(&tokens)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let good = format!(
        "sites:\n  b:\n    url: http://127.0.0.1:4647\n    token-file: {}\n",
        token.display()
    );
    assert_eq!(check(&good), (true, String::new()));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (ok, err) = check(&good);
    assert!(!ok && err.contains("sites.b.token-file"), "{err}");
    let (ok, err) = check("sites:\n  b:\n    url: https://h:1\n    ca-file: /nonexistent/ca.pem\n");
    assert!(!ok && err.contains("sites.b.ca-file"), "{err}");
    let (ok, err) = check("sites:\n  b:\n    url: gopher://h\n");
    assert!(!ok && err.contains("sites.b.url"), "{err}");
}

/// A site with a token-file is one token at the peer for all of A's clients: one client
/// token holds at most `limits.forwards-per-token-site` forwards to it at once (the next is
/// a 503 naming the site), so other clients still get through; its places free as its
/// forwards end.
#[test]
fn one_client_cannot_take_every_place_of_a_shared_site_token() {
    // A peer that accepts, reads and never answers: every forward to it stays open.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming() {
            held.push(s);
        }
    });
    let dir = TempDir::new();
    let token_file = dir.path().join("b.token");
    std::fs::write(&token_file, "supd_test_site_token_0123456789abcdef\n").unwrap();
    let yaml = format!(
        "limits:\n  forwards-per-token-site: 2\nsites:\n{}    token-file: {}\n",
        peer("b", &format!("http://{silent_addr}")),
        token_file.display()
    );
    let a = site_a(&dir, &yaml);
    let list = with_site("/v1/state/applications/shop/service-instances", "b");
    let send = |token: &str| {
        let mut s = TcpStream::connect(a.addr).unwrap();
        write!(
            s,
            "GET {list} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        s
    };
    // Waiting for the peer: no answer within a moment.
    let pending = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        let mut b = [0u8; 64];
        matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            || e.kind() == std::io::ErrorKind::TimedOut)
    };
    let mut first = send(ADMIN_TOKEN);
    let mut second = send(ADMIN_TOKEN);
    assert!(pending(&mut first) && pending(&mut second));
    let mut third = send(ADMIN_TOKEN);
    let got = String::from_utf8_lossy(&read_all(&mut third)).into_owned();
    assert!(got.starts_with("HTTP/1.1 503 "), "{got}");
    assert!(
        got.contains("site \\\"b\\\"") && got.contains("limit 2"),
        "{got}"
    );
    // Another client token is not held back by this one.
    let mut other = send(A_ONLY_TOKEN);
    assert!(pending(&mut other), "another token is forwarded");
    // A forward that ends (its client went) frees its place.
    drop(first);
    let mut again = None;
    assert!(eventually(Duration::from_secs(5), || {
        let mut s = send(ADMIN_TOKEN);
        let ok = pending(&mut s);
        again = Some(s);
        ok
    }));
    drop((second, other, again));
}
