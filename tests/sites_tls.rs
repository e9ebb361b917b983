//! `site=` forwarding to an `https://` peer: two real supd daemons, B serving TLS with a test
//! PKI made by `scripts/make-test-ca.sh`, A forwarding to it. State, exec, an interactive
//! shell and a byte-exact tunnel answer through A as B itself; an untrusted certificate, a
//! certificate for another name, plain HTTP behind an https URL and a client certificate B
//! requires and does not get are 502s naming the site and the TLS reason; a CA file replaced
//! and SIGHUP on A makes the site work without restarting A.
//!
//! B runs on the shared engine with a host name of its own (`host-b`), so its state is not
//! A's: tests/sites.rs shows two engines over plain HTTP; what is new here is the transport.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(tmp: &TempDir) -> Pki {
        let dir = tmp.path().join("pki");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-test-ca.sh");
        let out = Command::new("sh").arg(script).arg(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "make-test-ca.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// Bytes each way through the forwarded tunnel (100 MB is shown over plain HTTP in
/// tests/sites.rs; this is about the TLS stream under it).
const BULK: usize = 8 << 20;
/// Bytes a source offers a client that does not read: more than every buffer on the way.
const STALLED: usize = 48 << 20;

/// Site B: a plain listener (readiness, and plain HTTP behind an https URL), TLS on
/// 127.0.0.1, TLS requiring client certificates from the test CA, and TLS on 127.0.0.2 (its
/// certificate does not name that address).
struct SiteB {
    supd: Supd,
    plain: SocketAddr,
    tls: SocketAddr,
    mtls: SocketAddr,
    other_ip: SocketAddr,
}

fn site_b(tmp: &TempDir, pki: &Pki) -> SiteB {
    let plain = free_port();
    let (tls, mtls, other_ip) = (free_port(), free_port(), free_port());
    let files = format!(
        "cert-file: {}, key-file: {}",
        pki.path("server.pem"),
        pki.path("server.key")
    );
    let yaml = format!(
        "listen:\n  - 127.0.0.1:{plain}\n  - address: '127.0.0.1:{tls}'\n    tls: {{{files}}}\n  \
         - address: '127.0.0.1:{mtls}'\n    tls: {{{files}, client-ca-file: {}}}\n  \
         - address: '127.0.0.2:{other_ip}'\n    tls: {{{files}}}\n",
        pki.path("ca.pem")
    );
    let cfg = config_file(tmp, &yaml);
    let supd = Supd::start_with(SupdOptions {
        extra_args: vec![
            "--config".into(),
            cfg,
            "--site".into(),
            "b".into(),
            "--host".into(),
            "host-b".into(),
        ],
        port: Some(plain),
        listen_flag: false,
        ..Default::default()
    });
    let at = |p: u16| format!("127.0.0.1:{p}").parse().unwrap();
    SiteB {
        supd,
        plain: at(plain),
        tls: at(tls),
        mtls: at(mtls),
        other_ip: format!("127.0.0.2:{other_ip}").parse().unwrap(),
    }
}

type TlsTcp = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

/// A TLS client connection trusting the test CA.
fn tls_to(pki: &Pki, addr: SocketAddr) -> TlsTcp {
    let cfg =
        supd::testing::tls::client_config(Some(Path::new(&pki.path("ca.pem"))), None).unwrap();
    let sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    rustls::StreamOwned::new(rustls::ClientConnection::new(cfg, name).unwrap(), sock)
}

/// A GET on an open connection (kept alive): status and body.
fn get_on(s: &mut TlsTcp, path: &str) -> (u16, Vec<u8>) {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(head) = parse_head(&buf).unwrap() {
            let len = head.content_length().unwrap_or(0);
            if buf.len() >= head.len + len {
                return (head.status, buf[head.len..head.len + len].to_vec());
            }
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "closed mid-answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A site entry of A's configuration.
fn site(name: &str, url: &str, ca: Option<&str>, cert: Option<(&str, &str)>) -> String {
    let mut s = format!("  {name}:\n    url: {url}\n    connect-timeout-ms: 3000\n");
    if let Some(ca) = ca {
        s.push_str(&format!("    ca-file: {ca}\n"));
    }
    if let Some((c, k)) = cert {
        s.push_str(&format!("    cert-file: {c}\n    key-file: {k}\n"));
    }
    s
}

/// The error message of a 502 for `site`, checked to name it.
fn bad_gateway(a: &Supd, path: &str, site: &str) -> String {
    let r = a.get(&with_site(path, site), ADMIN_TOKEN);
    assert_eq!(r.status, 502, "{site}: {}", r.text());
    assert_eq!(
        r.json()["errors"][0]["error-info"]["site"],
        site,
        "{}",
        r.text()
    );
    let msg = r.error_message();
    eprintln!("{site}: 502 {msg}");
    assert!(msg.contains(&format!("\"{site}\"")), "{msg}");
    msg
}

#[test]
fn https_peers_answer_as_the_peer_itself_and_refuse_what_tls_refuses() {
    let started = Instant::now();
    let tmp = TempDir::new();
    let pki = Pki::new(&tmp);
    let cs = Containers::new("sites-tls");
    let app = unique("stls");
    let id = managed(&cs, &app, "web", &["--stop-timeout", "1"], SLEEPER);
    let pid = pid_of(&id);

    let b = site_b(&tmp, &pki);
    wait_running(&b.supd, &app);
    // A CA file the test replaces (wrong first), for the SIGHUP case.
    let swap_ca = tmp.path().join("swap-ca.pem");
    std::fs::copy(pki.path("other-ca.pem"), &swap_ca).unwrap();
    let ca = pki.path("ca.pem");
    let client = (pki.path("client.pem"), pki.path("client.key"));
    let other_client = (pki.path("other-client.pem"), pki.path("other-client.key"));
    let https = |a: SocketAddr| format!("https://{a}");
    let sites = [
        site("b", &https(b.tls), Some(&ca), None),
        // By name: the SNI and the certificate's DNS name.
        site(
            "b-by-name",
            &format!("https://localhost:{}", b.tls.port()),
            Some(&ca),
            None,
        ),
        site(
            "wrong-ca",
            &https(b.tls),
            Some(&pki.path("other-ca.pem")),
            None,
        ),
        site("wrong-name", &https(b.other_ip), Some(&ca), None),
        site("not-tls", &https(b.plain), Some(&ca), None),
        site("mtls-none", &https(b.mtls), Some(&ca), None),
        site(
            "mtls",
            &https(b.mtls),
            Some(&ca),
            Some((&client.0, &client.1)),
        ),
        site(
            "mtls-other",
            &https(b.mtls),
            Some(&ca),
            Some((&other_client.0, &other_client.1)),
        ),
        site(
            "swap",
            &https(b.tls),
            Some(&swap_ca.display().to_string()),
            None,
        ),
    ]
    .concat();
    // A serves TLS too (besides its plain port): TLS on both legs.
    let a_dir = TempDir::new();
    let (a_plain, a_tls_port) = (free_port(), free_port());
    let cfg = config_file(
        &a_dir,
        &format!(
            "listen:\n  - 127.0.0.1:{a_plain}\n  - address: '127.0.0.1:{a_tls_port}'\n    \
             tls: {{cert-file: {}, key-file: {}}}\nsites:\n{sites}",
            pki.path("server2.pem"),
            pki.path("server2.key")
        ),
    );
    let a = Supd::start_with(SupdOptions {
        extra_args: vec!["--config".into(), cfg, "--site".into(), "a".into()],
        port: Some(a_plain),
        listen_flag: false,
        ..Default::default()
    });
    let a_tls: SocketAddr = format!("127.0.0.1:{a_tls_port}").parse().unwrap();

    // State: through A as from B (B's host name), not as A itself.
    let list = format!("/v1/state/applications/{app}/service-instances");
    let one = instance_path(&app, "web");
    for p in [
        list.clone(),
        one.clone(),
        format!("{list}?fields=name,host,containers(name,oper-status)"),
        format!("{list}?count=true"),
    ] {
        let direct = b.supd.get(&p, ADMIN_TOKEN);
        assert_eq!(direct.status, 200, "{p}: {}", direct.text());
        for s in ["b", "b-by-name", "mtls"] {
            let via = a.get(&with_site(&p, s), ADMIN_TOKEN);
            assert_eq!((via.status, via.text()), (200, direct.text()), "{s}: {p}");
        }
    }
    assert!(b.supd.get(&one, ADMIN_TOKEN).text().contains("host-b"));
    assert_ne!(
        a.get(&one, ADMIN_TOKEN).text(),
        b.supd.get(&one, ADMIN_TOKEN).text()
    );
    // Over TLS to A as well, twice on one connection (it is handed back after the answer).
    let mut s = tls_to(&pki, a_tls);
    for p in [&list, &one] {
        let (status, body) = get_on(&mut s, &with_site(p, "b"));
        assert_eq!(
            (status, String::from_utf8(body).unwrap()),
            (200, b.supd.get(p, ADMIN_TOKEN).text())
        );
    }
    // B's errors relayed as they are.
    let missing = instance_path(&app, "nosuch");
    let direct = b.supd.get(&missing, ADMIN_TOKEN);
    let via = a.get(&with_site(&missing, "b"), ADMIN_TOKEN);
    assert_eq!(direct.status, 404);
    assert_eq!((via.status, via.text()), (direct.status, direct.text()));

    // Exec: output and exit codes.
    let exec = format!("{one}/containers/web/exec");
    for cmd in ["sh -c 'echo out; echo err >&2; exit 3'", "hostname"] {
        let body = serde_json::json!({ "cmd": cmd }).to_string();
        let direct = b.supd.post_json(&exec, ADMIN_TOKEN, &body);
        assert_eq!(direct.status, 200, "{cmd}: {}", direct.text());
        for s in ["b", "mtls"] {
            let via = a.post_json(&with_site(&exec, s), ADMIN_TOKEN, &body);
            assert_eq!((via.status, via.json()), (200, direct.json()), "{s}: {cmd}");
        }
    }

    // A request larger than what rustls holds during the handshake (32 KiB; the exec body
    // limit is 64 KiB): the rest goes
    // once the handshake is over.
    let long = "x".repeat(60_000);
    let body = serde_json::json!({ "cmd": format!("sh -c 'echo ${{#0}}' {long}") }).to_string();
    let direct = b.supd.post_json(&exec, ADMIN_TOKEN, &body);
    assert_eq!(direct.status, 200, "{}", direct.text());
    assert!(direct.text().contains("60000"), "{}", direct.text());
    let via = a.post_json(&with_site(&exec, "b"), ADMIN_TOKEN, &body);
    assert_eq!((via.status, via.json()), (200, direct.json()));

    // An interactive shell with resize and exit code.
    let path = format!(
        "{one}/containers/web/exec-interactive?cmd={}&tty=true",
        encode("sh -c 'stty size; read x; stty size; exit 42'")
    );
    let mut ws = ws_client(a.addr, &with_site(&path, "b"), INTERACTIVE);
    let mut out = Vec::new();
    ws_read_until(&mut ws, &mut out, "24 80");
    ws.send(Message::binary(
        [&[0x11][..], br#"{"h":40,"w":100}"#].concat(),
    ))
    .unwrap();
    stdin(&mut ws, b"\n");
    let (rest, code, reason) = ws_until_close(&mut ws);
    out.extend(rest);
    assert!(String::from_utf8_lossy(&out).contains("40 100"), "{out:?}");
    assert_eq!((code, reason.as_str()), (1000, r#"{"exit-code":42}"#));

    // A TCP tunnel, byte-exact both ways; the half-close (an empty frame) passes through.
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
        let mut sizes = [BULK, BULK, STALLED].into_iter().cycle();
        for s in source.incoming() {
            let Ok(mut s) = s else { return };
            let size = sizes.next().unwrap();
            thread::spawn(move || pattern(size, |c| s.write_all(c).unwrap_or(())));
        }
    });
    let connect =
        |port: u16, s: &str| with_site(&format!("{one}/connect?protocol=tcp&port={port}"), s);
    let t0 = Instant::now();
    let mut w = ws_client(a.addr, &connect(9, "b"), CONNECT);
    pattern(BULK, |c| w.send(Message::binary(c.to_vec())).unwrap());
    w.send(Message::binary(Vec::new())).unwrap();
    let (answer, close) = read_to_close(&mut w, |_| {});
    let (len, h) = pattern_sum(BULK);
    assert_eq!(String::from_utf8(answer).unwrap(), format!("{len} {h}"));
    assert_eq!(close.map(|c| c.0), Some(CloseCode::Normal));
    let up = t0.elapsed();
    let t0 = Instant::now();
    let mut w = ws_client(a.addr, &connect(19, "b"), CONNECT);
    let mut sum = Sum::default();
    let (_, close) = read_to_close(&mut w, |b| sum.update(b));
    assert_eq!((sum.len, sum.h), pattern_sum(BULK));
    assert_eq!(close.map(|c| c.0), Some(CloseCode::Normal));
    eprintln!(
        "tunnel over TLS to B: {} MiB up in {up:?}, down in {:?}",
        BULK >> 20,
        t0.elapsed()
    );
    // The same over TLS to A: both legs TLS, the end a close_notify.
    let (mut w, _) = tungstenite::client(
        ws_request(a_tls, &connect(19, "b"), ADMIN_TOKEN, CONNECT),
        tls_to(&pki, a_tls),
    )
    .unwrap();
    let mut sum = Sum::default();
    loop {
        match w.read() {
            Ok(Message::Binary(b)) => sum.update(&b),
            Ok(Message::Close(c)) => {
                assert_eq!(c.map(|c| c.code), Some(CloseCode::Normal));
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("TLS tunnel through A: {e}"),
        }
    }
    assert_eq!((sum.len, sum.h), pattern_sum(BULK));
    loop {
        match w.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("after the close: {e:?}"),
        }
    }
    // A client that does not read: A's buffers (its own and rustls') stay bounded while B
    // and the source wait; reading later gets every byte.
    let mut w = ws_client(a.addr, &connect(19, "b"), CONNECT);
    thread::sleep(Duration::from_secs(2));
    let peak = peak_rss_kib(a.pid());
    eprintln!("A's peak RSS: {peak} KiB");
    assert!(peak < 24 * 1024, "A peaked at {peak} KiB");
    let mut sum = Sum::default();
    read_to_close(&mut w, |b| sum.update(b));
    assert_eq!((sum.len, sum.h), pattern_sum(STALLED));

    // What TLS refuses: 502 naming the site and why.
    let msg = bad_gateway(&a, &list, "wrong-ca");
    assert!(
        msg.contains("TLS handshake failed") && msg.contains("UnknownIssuer"),
        "{msg}"
    );
    let msg = bad_gateway(&a, &list, "wrong-name");
    assert!(
        msg.contains("TLS handshake failed") && msg.contains("not valid for name"),
        "{msg}"
    );
    let msg = bad_gateway(&a, &list, "not-tls");
    assert!(msg.contains("TLS handshake failed"), "{msg}");
    // B requires a client certificate: without one, or with one from another CA, refused;
    // the websocket upgrade too.
    let msg = bad_gateway(&a, &list, "mtls-none");
    assert!(
        msg.contains("TLS") && msg.contains("CertificateRequired"),
        "{msg}"
    );
    let msg = bad_gateway(&a, &list, "mtls-other");
    assert!(msg.contains("TLS") && msg.contains("alert"), "{msg}");
    let (status, body) = try_ws(a.addr, &connect(9, "mtls-none"), ADMIN_TOKEN, CONNECT)
        .map(|_| ())
        .expect_err("refused");
    assert_eq!(status, 502, "{body}");
    // None of them reached B's HTTP layer: its log has no request from A beyond the ones
    // above (each names its path; the refused ones would carry the marker).
    let marker = unique("never-at-b");
    let never = format!("/v1/state/applications/{marker}/service-instances");
    for s in ["wrong-ca", "wrong-name", "mtls-none", "mtls-other"] {
        bad_gateway(&a, &never, s);
    }
    assert!(!b.supd.log_text().contains(&marker));

    // The CA file replaced, then SIGHUP: the same site works, A never restarted.
    let msg = bad_gateway(&a, &list, "swap");
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    std::fs::copy(&ca, &swap_ca).unwrap();
    a.signal("HUP");
    a.wait_until(Duration::from_secs(10), || {
        a.get(&with_site(&list, "swap"), ADMIN_TOKEN).status == 200
    });
    assert_eq!(
        a.get(&with_site(&one, "swap"), ADMIN_TOKEN).text(),
        b.supd.get(&one, ADMIN_TOKEN).text()
    );
    assert!(a.child_alive());
    eprintln!("test body: {:?}", started.elapsed());
}

#[test]
fn check_config_refuses_unusable_tls_files_of_a_site() {
    let tmp = TempDir::new();
    let pki = Pki::new(&tmp);
    let tokens = tmp.path().join("tokens.yaml");
    write_tokens(&tokens);
    let check = |yaml: &str| {
        let cfg = config_file(&tmp, yaml);
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
        "sites:\n  b:\n    url: https://127.0.0.1:1\n    ca-file: {}\n    cert-file: {}\n    key-file: {}\n",
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key")
    );
    assert_eq!(check(&good), (true, String::new()));
    // A key that is not the certificate's; a CA file that is a key.
    let (ok, err) = check(&good.replace("client.key", "other-client.key"));
    assert!(
        !ok && err.contains("sites.b: TLS") && err.contains("does not fit"),
        "{err}"
    );
    let (ok, err) = check(&good.replace("ca.pem", "ca.key"));
    assert!(!ok && err.contains("no usable certificate"), "{err}");
}
