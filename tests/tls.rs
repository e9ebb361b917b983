//! TLS listeners (`listen: [{address, tls: {...}}]`) of a real `supd`, with a test PKI made
//! by `scripts/make-test-ca.sh`, against outside clients (curl, `openssl s_client`) and
//! rustls + tungstenite for websockets.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::ServerName;
use tungstenite::Message;

type TlsTcp = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// The test PKI (see the script for what each file is).
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

/// A supd with a plain listener at `supd.addr` (for readiness) and a TLS one at the returned
/// address; `tls` is the YAML map of the TLS settings.
fn start_tls(tmp: TempDir, tls: &str) -> (Supd, SocketAddr, TempDir) {
    start_tls_with(tmp, tls, "")
}

/// The same, with more configuration (`extra`, YAML).
fn start_tls_with(tmp: TempDir, tls: &str, extra: &str) -> (Supd, SocketAddr, TempDir) {
    let plain = free_port();
    let port = free_port();
    let yaml = format!(
        "listen:\n  - 127.0.0.1:{plain}\n  - address: '127.0.0.1:{port}'\n    tls: {tls}\n{extra}"
    );
    let cfg = config_file(&tmp, &yaml);
    let supd = Supd::start_with(SupdOptions {
        extra_args: vec!["--config".into(), cfg],
        port: Some(plain),
        listen_flag: false,
        ..Default::default()
    });
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(supd.log_text().contains("(TLS)"), "{}", supd.log_text());
    (supd, addr, tmp)
}

fn server_tls(pki: &Pki, client_ca: Option<&str>) -> String {
    let ca = client_ca
        .map(|c| format!(", client-ca-file: {}", pki.path(c)))
        .unwrap_or_default();
    format!(
        "{{cert-file: {}, key-file: {}{ca}}}",
        pki.path("server.pem"),
        pki.path("server.key")
    )
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl (scripts/ensure-docker.sh installs it)")
}

/// `curl` an API path on the TLS port: (exit code, HTTP status or 0, stderr).
fn curl_api(addr: SocketAddr, path: &str, extra: &[&str]) -> (i32, u16, String) {
    let url = format!("https://localhost:{}{path}", addr.port());
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}", "-H", &auth];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = curl(&args);
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (
        out.status.code().unwrap_or(-1),
        status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `openssl s_client` to the TLS port with `input` on its stdin: (success, stdout + stderr).
fn s_client(addr: SocketAddr, args: &[&str], input: &[u8]) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl (scripts/ensure-docker.sh installs it)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A rustls client connection to the TLS port, trusting `ca`, with an optional client
/// certificate (`name` for name.pem and name.key).
fn tls_connect(pki: &Pki, addr: SocketAddr, ca: &str, cert: Option<&str>) -> TlsTcp {
    let (c, k) = cert
        .map(|n| (pki.path(&format!("{n}.pem")), pki.path(&format!("{n}.key"))))
        .unzip();
    let cfg = supd::testing::tls::client_config(
        Some(Path::new(&pki.path(ca))),
        c.as_deref()
            .zip(k.as_deref())
            .map(|(c, k)| (Path::new(c), Path::new(k))),
    )
    .unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// A GET on an open TLS connection (kept alive): status and body.
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

/// The subject and serial of the certificate a new handshake gets, as openssl prints them.
fn served_certificate(addr: SocketAddr) -> String {
    let (_, text) = s_client(addr, &["-showcerts"], b"");
    let pem_start = text.find("-----BEGIN CERTIFICATE-----").expect(&text);
    let pem_end = text.find("-----END CERTIFICATE-----").expect(&text) + 25;
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    x509.stdin
        .take()
        .unwrap()
        .write_all(&text.as_bytes()[pem_start..pem_end])
        .unwrap();
    String::from_utf8(x509.wait_with_output().unwrap().stdout).unwrap()
}

const STATE: &str = "/v1/state/applications/none/service-instances";

#[test]
fn curl_and_openssl_are_served_and_wrong_trust_or_old_versions_refused() {
    let cs = Containers::new("tls-curl");
    let app = unique("tls");
    managed(&cs, &app, "web", &[], SLEEPER);
    let tmp = TempDir::new();
    let pki = Pki::new(&tmp);
    let (supd, addr, _tmp) = start_tls(tmp, &server_tls(&pki, None));
    wait_instance(&supd, &app, "web");

    // State GET and exec POST with curl, trusting the test CA.
    let ca = pki.path("ca.pem");
    let (code, status, err) = curl_api(addr, &instance_path(&app, "web"), &["--cacert", &ca]);
    assert_eq!((code, status), (0, 200), "{err}");
    let url = format!("https://localhost:{}{}", addr.port(), exec_path(&app));
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let out = curl(&[
        "--cacert",
        &ca,
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"cmd": "echo over-tls"}"#,
        &url,
    ]);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(body.contains("over-tls"), "{body}");
    // HTTP/1.1 is what ALPN agrees on (curl offers h2 first).
    let out = curl(&[
        "-v",
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-H",
        &auth,
        &url.replace("/exec", ""),
    ]);
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(
        verbose.contains("ALPN: server accepted http/1.1"),
        "{verbose}"
    );

    // Another CA does not vouch for this server: curl refuses (60: peer certificate).
    let (code, _, err) = curl_api(addr, STATE, &["--cacert", &pki.path("other-ca.pem")]);
    assert_eq!(code, 60, "{err}");
    // Nor does the system's bundle.
    let (code, _, err) = curl_api(addr, STATE, &[]);
    assert_eq!(code, 60, "{err}");

    // openssl s_client: verified chain, TLS 1.3 and 1.2 both served.
    let req = format!(
        "GET {STATE} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    for version in ["-tls1_3", "-tls1_2"] {
        let (_, text) = s_client(addr, &[version, "-CAfile", &ca, "-ign_eof"], req.as_bytes());
        assert!(
            text.contains("Verify return code: 0 (ok)"),
            "{version}: {text}"
        );
        assert!(text.contains("HTTP/1.1 200 OK"), "{version}: {text}");
    }
    // TLS 1.1 (and older) is refused by the server, even with a client willing to use it.
    let (ok, text) = s_client(
        addr,
        &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0", "-CAfile", &ca],
        req.as_bytes(),
    );
    assert!(!ok, "{text}");
    // rustls answers a ClientHello without 1.2 or 1.3 with a handshake_failure alert.
    assert!(text.contains("Protocol  : TLSv1.1"), "{text}");
    assert!(text.contains("alert handshake failure"), "{text}");
    assert!(!text.contains("HTTP/1.1"), "{text}");
    assert_healthy(supd.addr);
    let (code, status, err) = curl_api(addr, STATE, &["--cacert", &ca]);
    assert_eq!((code, status), (0, 200), "{err}");
    assert!(
        supd.log_text().contains("TLS: "),
        "handshake failures are logged: {}",
        supd.log_text()
    );
}

#[test]
fn websockets_work_over_tls() {
    let cs = Containers::new("tls-ws");
    let app = unique("tlsws");
    echo_instance(&cs, &app);
    let tmp = TempDir::new();
    let pki = Pki::new(&tmp);
    let (supd, addr, _tmp) = start_tls(tmp, &server_tls(&pki, None));
    wait_instance(&supd, &app, "web");

    // An interactive exec: stdin in, output and the exit status out.
    let cmd = "sh -c 'read x; echo got-$x; exit 7'";
    let path = interactive_path(&app, cmd, false);
    let stream = tls_connect(&pki, addr, "ca.pem", None);
    let (mut ws, resp) =
        tungstenite::client(ws_request(addr, &path, ADMIN_TOKEN, INTERACTIVE), stream)
            .unwrap_or_else(|e| panic!("upgrade over TLS: {e}; log:\n{}", supd.log_text()));
    assert_eq!(resp.status(), 101);
    ws.send(Message::binary([&[0x10][..], b"tls\n"].concat()))
        .unwrap();
    let mut out = Vec::new();
    let close = loop {
        match ws.read().unwrap() {
            Message::Binary(b) => out.extend_from_slice(&b),
            Message::Close(c) => break c.expect("a close frame with a code"),
            _ => {}
        }
    };
    assert!(String::from_utf8_lossy(&out).contains("got-tls"), "{out:?}");
    assert_eq!(u16::from(close.code), 1000);
    assert_eq!(close.reason.as_str(), r#"{"exit-code":7}"#);
    // After the close handshake the TLS stream ends with close_notify, not a cut.
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("after the close: {e:?}"),
        }
    }

    // A tunnel to the instance's echo server: 2 MiB through TLS both ways, byte-exact, in
    // 64 KiB messages (many records each; the socket buffers fill).
    let stream = tls_connect(&pki, addr, "ca.pem", None);
    let (mut ws, _) = tungstenite::client(
        ws_request(addr, &connect_path(&app, 7), ADMIN_TOKEN, CONNECT),
        stream,
    )
    .unwrap();
    let mut sent = Vec::new();
    let mut got = Vec::new();
    for i in 0..32u32 {
        let chunk: Vec<u8> = (0..64 * 1024u32)
            .map(|j| (j.wrapping_mul(31) ^ i) as u8)
            .collect();
        sent.extend_from_slice(&chunk);
        ws.send(Message::binary(chunk)).unwrap();
        while got.len() < sent.len() {
            match ws.read().unwrap() {
                Message::Binary(b) => got.extend_from_slice(&b),
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(got == sent, "the echo differs");
    ws.close(None).unwrap();
    let _ = ws.flush();
}

#[test]
fn client_certificates_required_from_the_configured_ca() {
    let tmp = TempDir::new();
    let pki = Pki::new(&tmp);
    let (supd, addr, _tmp) = start_tls(tmp, &server_tls(&pki, Some("ca.pem")));
    let ca = pki.path("ca.pem");

    // No certificate: the handshake fails (curl 56 or 35, depending on when it notices).
    let (code, status, err) = curl_api(addr, STATE, &["--cacert", &ca]);
    assert!(code != 0 && status == 0, "{code} {status} {err}");
    // One from the configured CA: served.
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let (code, status, err) = curl_api(
        addr,
        STATE,
        &["--cacert", &ca, "--cert", &cert, "--key", &key],
    );
    assert_eq!((code, status), (0, 200), "{err}");
    // One from another CA: refused.
    let (cert, key) = (pki.path("other-client.pem"), pki.path("other-client.key"));
    let (code, status, err) = curl_api(
        addr,
        STATE,
        &["--cacert", &ca, "--cert", &cert, "--key", &key],
    );
    assert!(code != 0 && status == 0, "{code} {status} {err}");
    // The same with openssl s_client and rustls.
    let (_, text) = s_client(addr, &["-CAfile", &ca], b"");
    assert!(!text.contains("HTTP/1.1"), "{text}");
    let mut s = tls_connect(&pki, addr, "ca.pem", Some("client"));
    assert_eq!(get_on(&mut s, STATE).0, 200);
    let mut s = tls_connect(&pki, addr, "ca.pem", Some("other-client"));
    let req = format!("GET {STATE} HTTP/1.1\r\nHost: x\r\n\r\n");
    let failed = s.write_all(req.as_bytes()).is_err() || s.read(&mut [0u8; 64]).is_err();
    assert!(failed, "a client certificate from another CA was accepted");
    assert!(supd.log_text().contains("TLS: "), "{}", supd.log_text());
    assert_healthy(supd.addr);
}

#[test]
fn sighup_reloads_the_certificate_and_open_connections_keep_working() {
    let tmp = TempDir::new();
    let pki = Pki::new(&tmp);
    let live = tmp.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    std::fs::copy(pki.path("server.pem"), &cert).unwrap();
    std::fs::copy(pki.path("server.key"), &key).unwrap();
    let tls = format!(
        "{{cert-file: {}, key-file: {}}}",
        cert.display(),
        key.display()
    );
    let (supd, addr, _tmp) = start_tls(tmp, &tls);

    let before = served_certificate(addr);
    assert!(before.contains("supd-test-server-1"), "{before}");
    assert!(before.contains("serial=1001"), "{before}");
    let mut open = tls_connect(&pki, addr, "ca.pem", None);
    assert_eq!(get_on(&mut open, STATE).0, 200);

    std::fs::copy(pki.path("server2.pem"), &cert).unwrap();
    std::fs::copy(pki.path("server2.key"), &key).unwrap();
    // A key others may read is loaded, with a warning.
    assert!(!supd.log_text().contains("readable by others"));
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    supd.signal("HUP");
    supd.wait_until(Duration::from_secs(10), || {
        supd.log_text().contains("certificate reloaded")
    });
    assert!(
        supd.log_text()
            .contains("the private key is readable by others (mode 644)"),
        "{}",
        supd.log_text()
    );
    let after = served_certificate(addr);
    assert!(after.contains("supd-test-server-2"), "{after}");
    assert!(after.contains("serial=1002"), "{after}");
    // The connection opened before keeps its session.
    assert_eq!(get_on(&mut open, STATE).0, 200);
    let mut new = tls_connect(&pki, addr, "ca.pem", None);
    assert_eq!(get_on(&mut new, STATE).0, 200);

    // A bad new pair (this key is not the certificate's) keeps the one in use.
    std::fs::copy(pki.path("server.pem"), &cert).unwrap();
    supd.signal("HUP");
    supd.wait_until(Duration::from_secs(10), || {
        supd.log_text().contains("keeping the previous certificate")
    });
    assert!(
        supd.log_text().contains("does not fit the certificate"),
        "{}",
        supd.log_text()
    );
    let still = served_certificate(addr);
    assert!(still.contains("supd-test-server-2"), "{still}");
    assert_eq!(get_on(&mut open, STATE).0, 200);
    assert_eq!(get_on(&mut new, STATE).0, 200);
}

#[test]
fn plain_http_and_half_open_handshakes_do_no_harm() {
    let tmp = TempDir::new();
    let pki = Pki::new(&tmp);
    let (supd, addr, _tmp) = start_tls(tmp, &server_tls(&pki, None));

    // Plain HTTP to the TLS port: a plain 400 saying so, then the connection is closed.
    let mut c = Client::connect(addr);
    c.send(
        "GET",
        STATE,
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        b"",
    );
    let r = c.read_response(false);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("TLS"), "{}", r.text());
    assert!(c.is_closed_by_peer(Duration::from_secs(5)));
    // Garbage: closed, no answer in clear.
    let mut g = TcpStream::connect(addr).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    g.write_all(&[0x01; 100]).unwrap();
    let mut buf = Vec::new();
    let _ = g.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP"), "{buf:?}");

    // 200 handshakes left half-open (silent, or a ClientHello cut short): a real client
    // still gets in at once, as the unauthenticated connections of one address are capped
    // and the oldest make room.
    let mut held = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(addr).unwrap();
        if i % 2 == 1 {
            // A TLS record header announcing 512 bytes, and only 5 of them.
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])
                .unwrap();
        }
        held.push(s);
    }
    let started = Instant::now();
    let ca = pki.path("ca.pem");
    let (code, status, err) = curl_api(addr, STATE, &["--cacert", &ca]);
    assert_eq!((code, status), (0, 200), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The plain listener and the daemon are fine too.
    assert_healthy(supd.addr);
    assert!(supd.child_alive());
    // The rest are closed by the pre-auth timeout (5 s): none is kept.
    let fds_with_held = supd.fd_count();
    supd.wait_until(Duration::from_secs(15), || {
        supd.fd_count() + 100 < fds_with_held
    });
    drop(held);
    let mut s = tls_connect(&pki, addr, "ca.pem", None);
    assert_eq!(get_on(&mut s, STATE).0, 200);
}

/// A connection supd closes (here: idle) ends with close_notify, so a client reading to the
/// end can tell the end from a cut.
#[test]
fn supd_ends_tls_connections_with_close_notify() {
    let tmp = TempDir::new();
    let pki = Pki::new(&tmp);
    let (_supd, addr, _tmp) = start_tls_with(
        tmp,
        &server_tls(&pki, None),
        "limits: {idle-timeout-ms: 300}\n",
    );
    let mut s = tls_connect(&pki, addr, "ca.pem", None);
    assert_eq!(get_on(&mut s, STATE).0, 200);
    // rustls reports a cut as an error (UnexpectedEof) and a close_notify as the end.
    let r = s.read(&mut [0u8; 64]);
    assert!(matches!(r, Ok(0)), "{r:?}");
}

#[test]
fn check_config_validates_the_tls_files() {
    let tmp = TempDir::new();
    let pki = Pki::new(&tmp);
    let check = |tls: &str| {
        let yaml = format!("listen:\n  - address: '127.0.0.1:1'\n    tls: {tls}\n");
        let cfg = tmp.path().join("check.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let tokens = tmp.path().join("tokens.yaml");
        write_tokens(&tokens);
        let out = Command::new(env!("CARGO_BIN_EXE_supd"))
            .arg("check-config")
            .arg("--config")
            .arg(&cfg)
            .arg("--tokens")
            .arg(&tokens)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check(&server_tls(&pki, Some("ca.pem")));
    assert!(ok, "{err}");
    let mismatch = format!(
        "{{cert-file: {}, key-file: {}}}",
        pki.path("server.pem"),
        pki.path("server2.key")
    );
    let (ok, err) = check(&mismatch);
    assert!(!ok && err.contains("does not fit the certificate"), "{err}");
    let missing = format!(
        "{{cert-file: {}, key-file: {}}}",
        pki.path("missing.pem"),
        pki.path("server.key")
    );
    let (ok, err) = check(&missing);
    assert!(!ok && err.contains("missing.pem"), "{err}");
    let bad_ca = format!(
        "{{cert-file: {}, key-file: {}, client-ca-file: {}}}",
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("server.key")
    );
    let (ok, err) = check(&bad_ca);
    assert!(!ok, "{err}");
}
