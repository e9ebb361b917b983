//! Strict HTTP/1.1 against the real `supd`, with raw bytes in the style of the request
//! smuggling literature ("funky chunks", websocket smuggling): every framing another parser
//! could read differently is refused with a 400 (or 501), nothing pipelined behind it is
//! answered, and the connection is closed. And request bodies built to make the YAML parser
//! work for minutes are refused at once, while other clients keep their quick answers.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const LIST: &str = "/v1/state/applications/none/service-instances";

/// A well-formed GET to pipeline behind a bad request: it must never be answered.
fn follow_up() -> String {
    format!("GET {LIST} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n")
}

/// Sends `bytes` on a fresh connection, reads until supd closes it (or 5 s pass), and returns
/// the responses read (status and headers) and whether the connection was closed.
/// A response's status and headers.
type Answer = (u16, Vec<(String, String)>);

fn exchange(supd: &Supd, bytes: &[u8]) -> (Vec<Answer>, bool) {
    let mut s = TcpStream::connect(supd.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    let closed = loop {
        match s.read(&mut tmp) {
            Ok(0) => break true,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            // A reset after the answer is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    let mut responses = Vec::new();
    let mut rest = &buf[..];
    while !rest.is_empty() {
        let head = match parse_head(rest) {
            Ok(Some(head)) => head,
            other => panic!(
                "bad response bytes {:?}: {:?}",
                other.map(|h| h.map(|h| h.len)),
                String::from_utf8_lossy(rest)
            ),
        };
        let len = head.content_length().unwrap_or(0);
        rest = &rest[(head.len + len).min(rest.len())..];
        responses.push((head.status, head.headers));
    }
    (responses, closed)
}

/// `bad` (with a well-formed GET pipelined behind it) gets exactly one answer, `status`, with
/// `Connection: close`, and the connection is closed.
fn assert_refused(supd: &Supd, what: &str, bad: &[u8], status: u16) {
    let bytes = [bad, follow_up().as_bytes()].concat();
    let (responses, closed) = exchange(supd, &bytes);
    let statuses: Vec<u16> = responses.iter().map(|r| r.0).collect();
    assert_eq!(statuses, [status], "{what}: answers {statuses:?}");
    let connection = responses[0]
        .1
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .map(|(_, v)| v.as_str());
    assert_eq!(connection, Some("close"), "{what}");
    assert!(closed, "{what}: connection left open");
}

/// An exec on an instance that does not exist (404 if the request gets that far), with the
/// given framing lines, then `body`. The exec endpoint admits a body, so supd reads and
/// decodes it (a state path would be answered 405 on its head, body unread).
fn post(framing: &[u8], body: &[u8]) -> Vec<u8> {
    [
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n",
            exec_path("none")
        )
        .as_bytes(),
        framing,
        b"\r\n",
        body,
    ]
    .concat()
}

/// Finding 9: framing fields trimmed of Unicode whitespace, repeated, or both framings.
#[test]
fn framing_fields_with_unicode_spaces_or_repeats_are_refused() {
    let supd = Supd::start();
    // A control: the same request well-formed is answered (404) and the connection stays.
    let (responses, closed) = exchange(
        &supd,
        &[
            post(
                b"Transfer-Encoding: chunked\r\n",
                b"f\r\n{\"cmd\": \"true\"}\r\n0\r\n\r\n",
            ),
            follow_up().into_bytes(),
            format!("GET {LIST} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes(),
        ]
        .concat(),
    );
    assert_eq!(
        responses.iter().map(|r| r.0).collect::<Vec<_>>(),
        [404, 200, 401]
    );
    assert!(closed);

    for (what, framing, body) in [
        (
            "TE chunked+NBSP",
            &b"Transfer-Encoding: chunked\xc2\xa0\r\n"[..],
            &b"0\r\n\r\n"[..],
        ),
        ("CL 3+NBSP", b"Content-Length: 3\xc2\xa0\r\n", b"abc"),
        ("CL 3+NEL", b"Content-Length: 3\xc2\x85\r\n", b"abc"),
        (
            "CL twice, same value",
            b"Content-Length: 3\r\nContent-Length: 3\r\n",
            b"abc",
        ),
        ("CL 3, 3", b"Content-Length: 3, 3\r\n", b"abc"),
        ("CL +3", b"Content-Length: +3\r\n", b"abc"),
        ("CL 0x3", b"Content-Length: 0x3\r\n", b"abc"),
        (
            "CL and TE",
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            b"0\r\n\r\n",
        ),
        (
            "obs-fold",
            b"Transfer-Encoding:\r\n chunked\r\n",
            b"0\r\n\r\n",
        ),
    ] {
        assert_refused(&supd, what, &post(framing, body), 400);
    }
    for (what, te) in [
        ("TE chunked, chunked", &b"chunked, chunked"[..]),
        ("TE identity", b"identity"),
    ] {
        let framing = [&b"Transfer-Encoding: "[..], te, b"\r\n"].concat();
        assert_refused(&supd, what, &post(&framing, b"0\r\n\r\n"), 501);
    }
}

/// Two credentials (which one counts would depend on the reader) and bare LF line ends (a
/// proxy in front may see one line where supd's parser sees two) are refused: 400, closed.
#[test]
fn several_authorizations_and_bare_lf_heads_are_refused() {
    let supd = Supd::start();
    let two = format!(
        "GET {LIST} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nAuthorization: Bearer {READER_TOKEN}\r\n\r\n"
    );
    assert_refused(&supd, "two Authorization fields", two.as_bytes(), 400);
    let lf = format!("GET {LIST} HTTP/1.1\nHost: x\nAuthorization: Bearer {ADMIN_TOKEN}\n\n");
    assert_refused(&supd, "bare LF everywhere", lf.as_bytes(), 400);
    let one_lf = format!(
        "GET {LIST} HTTP/1.1\r\nHost: x\nX-Hidden: 1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
    );
    assert_refused(&supd, "one bare LF", one_lf.as_bytes(), 400);
    // The control: one credential, CRLF throughout.
    let (responses, _) = exchange(
        &supd,
        follow_up()
            .replace("HTTP/1.1\r\n", "HTTP/1.1\r\nConnection: close\r\n")
            .as_bytes(),
    );
    assert_eq!(responses.iter().map(|r| r.0).collect::<Vec<_>>(), [200]);
}

/// Finding 10: "funky chunks".
#[test]
fn funky_chunks_are_refused() {
    let supd = Supd::start();
    for (what, body) in [
        ("bare CR in the size line", &b"1\r1\r\nx\r\n0\r\n\r\n"[..]),
        ("bare LF line ends", b"1\nx\n0\n\n"),
        ("bare LF after the data", b"1\r\nx\n0\r\n\r\n"),
        ("space inside the size", b"1 1\r\nx\r\n0\r\n\r\n"),
        (
            "whitespace before an extension",
            b"1 ;a=b\r\nx\r\n0\r\n\r\n",
        ),
        ("bare CR in an extension", b"1;a\rb\r\nx\r\n0\r\n\r\n"),
        ("0x prefix", b"0x1\r\nx\r\n0\r\n\r\n"),
        ("17 size digits", b"00000000000000001\r\nx\r\n0\r\n\r\n"),
        ("trailer without a colon", b"0\r\nX\r\n\r\n"),
        ("bare CR in a trailer", b"0\r\nX: a\rb\r\n\r\n"),
        ("bare LF ending the trailers", b"0\r\n\n"),
    ] {
        assert_refused(
            &supd,
            what,
            &post(b"Transfer-Encoding: chunked\r\n", body),
            400,
        );
    }
}

/// Finding 12: Host rules, upgrades over HTTP/1.0, and a refused upgrade ends the connection.
#[test]
fn refused_upgrades_and_host_faults_close_the_connection() {
    let supd = Supd::start();
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}\r\n");
    assert_refused(
        &supd,
        "no Host",
        format!("GET {LIST} HTTP/1.1\r\n{auth}\r\n").as_bytes(),
        400,
    );
    assert_refused(
        &supd,
        "two Hosts",
        format!("GET {LIST} HTTP/1.1\r\nHost: a\r\nHost: b\r\n{auth}\r\n").as_bytes(),
        400,
    );
    let ws =
        "/v1/state/applications/x/service-instances/web-1/containers/web/exec-interactive?cmd=sh";
    let handshake = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    assert_refused(
        &supd,
        "upgrade over HTTP/1.0",
        format!("GET {ws} HTTP/1.0\r\nHost: x\r\n{auth}{handshake}Sec-WebSocket-Protocol: {INTERACTIVE}\r\n\r\n")
            .as_bytes(),
        400,
    );
    // The websocket smuggling set-up: a proxy that starts tunnelling on seeing the upgrade
    // request must not find supd still reading requests after refusing it.
    assert_refused(
        &supd,
        "unknown subprotocol",
        format!(
            "GET {ws} HTTP/1.1\r\nHost: x\r\n{auth}{handshake}Sec-WebSocket-Protocol: nope\r\n\r\n"
        )
        .as_bytes(),
        400,
    );
    assert_refused(
        &supd,
        "bad websocket version",
        format!("GET {ws} HTTP/1.1\r\nHost: x\r\n{auth}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 12\r\n\r\n")
            .as_bytes(),
        426,
    );
    assert_refused(
        &supd,
        "upgrade to a plain endpoint",
        format!(
            "GET {LIST} HTTP/1.1\r\nHost: x\r\n{auth}Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        )
        .as_bytes(),
        200,
    );
}

/// Finding 3: YAML (and JSON) bodies nested to make the parser's time grow with the square of
/// the input are refused before parsing, in milliseconds, while another client's state GETs
/// keep their quick answers. (Before the fix, 64 K `[` froze the loop for 5 s, 1 MiB for
/// minutes.)
#[test]
fn deeply_nested_bodies_are_refused_at_once() {
    let supd = Supd::start();
    let addr = supd.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut c = Client::connect(addr);
            c.stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let auth = format!("Bearer {ADMIN_TOKEN}");
            let mut worst = Duration::ZERO;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                c.send("GET", LIST, &[("Authorization", &auth)], b"");
                let r = c.read_response(false);
                assert_eq!(r.status, 200);
                worst = worst.max(t.elapsed());
                n += 1;
                thread::sleep(Duration::from_millis(2));
            }
            (worst, n)
        })
    };
    let exec = exec_path("nest");
    let restart = "/v1/state/applications/nest/service-instances/web-1/restart";
    let mib = 1 << 20;
    let block: String = (0..200)
        .map(|d| format!("{}k{d}:\n", " ".repeat(d)))
        .collect();
    // What, where, Content-Type, body, expected status.
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        (
            "1 MiB of [",
            exec.as_str(),
            None,
            [b"cmd: ".to_vec(), b"[".repeat(mib - 5)].concat(),
            413,
        ),
        (
            "60 K of [",
            exec.as_str(),
            None,
            [b"cmd: ".to_vec(), b"[".repeat(60_000)].concat(),
            400,
        ),
        (
            "15 K of {a: ",
            exec.as_str(),
            None,
            [b"cmd: ".to_vec(), b"{a: ".repeat(15_000)].concat(),
            400,
        ),
        (
            "1 MiB of {",
            exec.as_str(),
            None,
            [b"cmd: ".to_vec(), b"{".repeat(mib - 5)].concat(),
            413,
        ),
        (
            "block nesting",
            exec.as_str(),
            Some("application/yaml"),
            block.into_bytes(),
            400,
        ),
        (
            "- - - -",
            exec.as_str(),
            None,
            [b"cmd: ".to_vec(), b"- ".repeat(20_000)].concat(),
            400,
        ),
        (
            "JSON",
            exec.as_str(),
            Some("application/json"),
            [b"{\"cmd\":".to_vec(), b"[".repeat(60_000)].concat(),
            400,
        ),
        (
            "restart, 4 K of [",
            restart,
            None,
            [b"no-delayed-shutdown: ".to_vec(), b"[".repeat(4000)].concat(),
            400,
        ),
        (
            "restart, 60 K of [",
            restart,
            None,
            [b"no-delayed-shutdown: ".to_vec(), b"[".repeat(60_000)].concat(),
            413,
        ),
    ];
    // A state GET sent right behind each bad body, on another connection: it waits for
    // whatever supd does with the body first.
    let mut probe = Client::connect(addr);
    probe
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let probe_auth = format!("Bearer {ADMIN_TOKEN}");
    for (what, path, content_type, body, status) in cases {
        let mut c = Client::connect(addr);
        c.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct));
        }
        let t = Instant::now();
        c.send("POST", path, &headers, &body);
        let p = Instant::now();
        probe.send("GET", LIST, &[("Authorization", &probe_auth)], b"");
        assert_eq!(probe.read_response(false).status, 200);
        let probed = p.elapsed();
        let r = c.read_response(false);
        let took = t.elapsed();
        eprintln!("{what}: state GET behind it in {probed:?}");
        assert!(
            probed < Duration::from_millis(250),
            "{what}: state GET took {probed:?}"
        );
        eprintln!("{what}: {} in {took:?}", r.status);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let msg = r.error_message();
        // A declared length over the endpoint's limit is refused on the head ("request body
        // too large"); a chunked one by the decoder ("larger than").
        let ok = if status == 413 {
            msg.contains("larger than") || msg.contains("too large")
        } else {
            msg.contains("nested")
        };
        assert!(ok, "{what}: {msg}");
        assert!(took < Duration::from_secs(1), "{what} took {took:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let (worst, n) = prober
        .join()
        .expect("the other client's GETs were answered");
    eprintln!("{n} state GETs meanwhile, slowest {worst:?}");
    assert!(n > 0);
    assert!(
        worst < Duration::from_millis(250),
        "slowest state GET {worst:?}"
    );
}

/// `Accept` is read once per request, and an error is a document whatever the request is
/// answered at: refused on its head (401, or 413 over the endpoint's body limit, the body
/// unread) or after its body (404). A raw-bytes client gets its errors in JSON, or in the
/// next format it accepts.
#[test]
fn errors_before_and_after_the_body_follow_accept() {
    let supd = Supd::start();
    let exec = exec_path("none");
    let admin = format!("Authorization: Bearer {ADMIN_TOKEN}\r\n");
    for (auth, length, status) in [
        ("", 7, 401),
        (admin.as_str(), 100_000, 413),
        (admin.as_str(), 7, 404),
    ] {
        for (accept, format) in [
            ("application/yaml", "application/yaml"),
            ("application/octet-stream", "application/json"),
            (
                "application/octet-stream, text/yaml;q=0.5",
                "application/yaml",
            ),
        ] {
            let req = format!(
                "POST {exec} HTTP/1.1\r\nHost: x\r\n{auth}Accept: {accept}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\ncmd: ls"
            );
            let (responses, _) = exchange(&supd, req.as_bytes());
            let what = format!("{status} for {accept:?}");
            assert_eq!(responses.len(), 1, "{what}");
            assert_eq!(responses[0].0, status, "{what}");
            let content_type = responses[0]
                .1
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.as_str());
            assert_eq!(content_type, Some(format), "{what}");
        }
    }
}
