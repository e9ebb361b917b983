//! What an unauthenticated client can make supd hold, and the order of what goes out on one
//! connection: a refused request's body is never read, connections that never show a token
//! are few, short-lived and cannot crowd out authenticated ones, and a websocket's frames
//! follow its 101 and every earlier answer.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// The floods take one at a time: each measures supd's memory or counts its descriptors.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Responses and bytes read off one raw stream, in order.
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    fn new(stream: TcpStream) -> Reader {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Reader {
            stream,
            buf: Vec::new(),
        }
    }

    /// More bytes, or false at EOF (a reset counts as EOF).
    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 16384];
        match self.stream.read(&mut tmp) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read: {e}"),
        }
    }

    /// The next response, interim ones (100) included: status, headers, body (by
    /// Content-Length; none for 1xx). None when the stream ends first.
    fn response(&mut self) -> Option<HttpResponse> {
        loop {
            if let Some(head) = parse_head(&self.buf).expect("valid response") {
                let n = head.len;
                let len = if head.status < 200 {
                    0
                } else {
                    head.content_length().unwrap_or(0)
                };
                while self.buf.len() < n + len {
                    if !self.fill() {
                        return None;
                    }
                }
                let body = self.buf[n..n + len].to_vec();
                self.buf.drain(..n + len);
                return Some(HttpResponse {
                    status: head.status,
                    headers: head.headers,
                    body,
                });
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Exactly `n` more bytes.
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill(), "EOF after {:?}", self.buf);
        }
        self.buf.drain(..n).collect()
    }

    /// The server closed the connection, with nothing more sent.
    fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill()
    }
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A TCP connection to `to` from the loopback address `from` (any 127.0.0.0/8 address is
/// local on Linux), so that one test can be several peers.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    connect_from_with(from, to, false)
}

/// The same; with `no_wait` the connect is started, not waited for, so that a connect whose
/// SYN is dropped (supd's listen queue full for a moment on a loaded machine) does not hold
/// up the next: its retransmission completes it in the background.
fn connect_from_with(from: Ipv4Addr, to: SocketAddr, no_wait: bool) -> TcpStream {
    use nix::errno::Errno;
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
    };
    let SocketAddr::V4(to) = to else {
        panic!("supd listens on IPv4 in the tests");
    };
    let flags = if no_wait {
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK
    } else {
        SockFlag::SOCK_CLOEXEC
    };
    let fd = socket(AddressFamily::Inet, SockType::Stream, flags, None).unwrap();
    // The port is chosen at connect (as for any outgoing connection), not by bind's slower
    // search for a port free for every address.
    setsockopt(&fd, sockopt::IpBindAddressNoPort, &true).unwrap();
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(from, 0)),
    )
    .unwrap();
    match connect(fd.as_raw_fd(), &SockaddrIn::from(to)) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) if no_wait => {}
        Err(e) => panic!("connect from {from}: {e}"),
    }
    TcpStream::from(fd)
}

/// Connections to the loopback listener on `port` that supd has not accepted yet: in its
/// accept queue, or half-open (a client's final ACK is dropped while the queue is full, so
/// the client may think it is connected before the server does).
fn not_accepted(port: u16) -> usize {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{port:04X}");
    tcp.lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f[1] == local)
        .map(|f| match f[3] {
            // LISTEN: rx_queue is the accept queue.
            "0A" => usize::from_str_radix(f[4].split(':').nth(1).unwrap(), 16).unwrap(),
            // SYN_RECV.
            "03" => 1,
            _ => 0,
        })
        .sum()
}

// ---- a refused request's body is not read ----------------------------------------------------

/// 1,000 unauthenticated exec requests each declaring a body one byte under the 1 MiB body
/// limit and sending it: each is answered 401 at once, without its body being read, so supd's
/// memory does not grow with what the clients send (before, each connection buffered its body
/// up to the declared length: 300 of them took RSS to 605 MiB).
#[test]
fn unauthenticated_bodies_are_not_read() {
    let _heavy = heavy();
    raise_nofile(8192);
    let dir = TempDir::new();
    let supd = start_with_config(
        &dir,
        "limits:\n  max-connections: 5000\n  preauth-connections-per-peer: 5000\n",
    );
    let limit = 1usize << 20;
    let path = exec_path("x");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        limit - 1
    );
    // One byte short of the declared length: a server that reads bodies holds all of it.
    let body = vec![b'a'; limit - 2];
    let mut conns = Vec::with_capacity(1000);
    let mut peak = 0;
    for i in 0..1000 {
        let mut s = TcpStream::connect(supd.addr).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        // As much of the body as supd takes: all of it if it reads, until the reset if not.
        s.set_nonblocking(true).unwrap();
        let mut sent = 0;
        let mut last_progress = Instant::now();
        while sent < body.len() && last_progress.elapsed() < Duration::from_secs(2) {
            match s.write(&body[sent..]) {
                Ok(n) => {
                    sent += n;
                    last_progress = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_micros(200))
                }
                Err(_) => break,
            }
        }
        s.set_nonblocking(false).unwrap();
        conns.push(s);
        if i % 50 == 49 {
            peak = peak.max(supd.rss_kib());
            assert!(
                peak < 64 * 1024,
                "RSS {peak} KiB after {} unauthenticated bodies",
                i + 1
            );
        }
    }
    peak = peak.max(supd.rss_kib());
    assert!(peak < 64 * 1024, "RSS {peak} KiB");
    for s in conns {
        let mut r = Reader::new(s);
        let HttpResponse {
            status,
            headers: hs,
            ..
        } = r.response().expect("an answer before the close");
        assert_eq!(status, 401);
        assert_eq!(header(&hs, "connection"), Some("close"));
        assert!(r.closed(), "the connection stays open after the 401");
    }
    assert_healthy(supd.addr);
}

/// A client that waits for `100 Continue` before sending its body gets the final answer
/// instead when the request is refused anyway (403, 404, 401, 405, a body where none is taken,
/// a body over the endpoint's own limit), and the connection is closed; an admitted request
/// gets its 100 Continue.
#[test]
fn refused_requests_are_answered_before_their_body() {
    let dir = TempDir::new();
    let supd = start_with_config(&dir, "limits:\n  head-timeout-ms: 3000\n");
    let exec = exec_path("x");
    let state = "/v1/state/applications/x/service-instances";
    let restart = "/v1/state/applications/x/service-instances/web-1/restart";
    let cases: [(&str, &str, Option<&str>, usize, u16); 8] = [
        // A token that may not exec.
        ("POST", &exec, Some(READER_TOKEN), 100, 403),
        // Unknown path, valid token.
        ("POST", "/v1/nowhere", Some(ADMIN_TOKEN), 100, 404),
        ("POST", &exec, None, 100, 401),
        ("PUT", &exec, Some(ADMIN_TOKEN), 100, 405),
        // State requests and upgrades take no body.
        ("GET", state, Some(ADMIN_TOKEN), 10, 413),
        // Over the endpoint's own limit, under the global one (1 MiB).
        ("POST", &exec, Some(ADMIN_TOKEN), 64 * 1024 + 1, 413),
        ("POST", restart, Some(ADMIN_TOKEN), 4 * 1024 + 1, 413),
        // Unauthenticated and over the limit: the credentials are checked first.
        ("POST", restart, None, 1 << 19, 401),
    ];
    for (method, path, token, len, want) in cases {
        let mut s = TcpStream::connect(supd.addr).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        s.write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
                 Expect: 100-continue\r\nContent-Length: {len}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let mut r = Reader::new(s);
        let HttpResponse {
            status,
            headers: hs,
            body,
        } = r
            .response()
            .unwrap_or_else(|| panic!("{method} {path}: no answer"));
        assert_eq!(
            status,
            want,
            "{method} {path} ({len} bytes): {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(header(&hs, "connection"), Some("close"), "{method} {path}");
        assert!(r.closed(), "{method} {path}: still open");
    }

    // Admitted: 100 Continue, then the body is read and the request handled (here a 400 for
    // the blank command, which needs no container).
    let mut s = TcpStream::connect(supd.addr).unwrap();
    s.write_all(
        format!(
            "POST {exec} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 12\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut r = Reader::new(s.try_clone().unwrap());
    let HttpResponse { status, .. } = r.response().unwrap();
    assert_eq!(status, 100);
    s.write_all(br#"{"cmd": " "}"#).unwrap();
    let HttpResponse { status, body, .. } = r.response().unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
}

// ---- unauthenticated connections cannot hold the slots ---------------------------------------

/// The pre-auth limit is long enough for 1,024 connects on a loaded machine (a listen queue
/// that overflows costs a connect a 1 s SYN retransmit).
const PREAUTH_LIMITS: &str = "limits:
  max-connections: 1024
  preauth-timeout-ms: 20000
  preauth-connections-per-peer: 128
  reserved-connections: 128
";

/// 1,024 silent connections (from 16 loopback addresses, 64 each) try to take every slot of
/// `max-connections`; an authenticated request on a new connection is still answered, the
/// oldest silent connection making room. A peer over its cap is refused. After the pre-auth
/// limit every silent connection is gone.
#[test]
fn silent_connections_do_not_lock_out_authenticated_clients() {
    let _heavy = heavy();
    raise_nofile(8192);
    let dir = TempDir::new();
    let supd = start_with_config(&dir, PREAUTH_LIMITS);
    let baseline = supd.fd_count();
    let mut silent = Vec::with_capacity(1024);
    for i in 0..1024u32 {
        let from = Ipv4Addr::new(127, 0, 0, 2 + (i / 64) as u8);
        silent.push(connect_from_with(from, supd.addr, true));
    }
    // Every one is established and accepted by supd (none left in its listen queue): 1,024
    // silent connections have been offered, all that unauthenticated connections may take
    // (1,024 minus the reserve) is taken.
    supd.wait_until(Duration::from_secs(10), || {
        silent.iter().all(|s| s.peer_addr().is_ok()) && not_accepted(supd.addr.port()) == 0
    });
    // (A few descriptors of supd's own, to Docker, come and go.)
    let held = supd.fd_count().saturating_sub(baseline);
    assert!(held >= 1024 - 128 - 4, "{held} connections held");

    let good = connect_from(Ipv4Addr::new(127, 0, 0, 100), supd.addr);
    assert_healthy_on(good);
    // The oldest silent connection made room (and was told so). Oldest in supd's accept
    // order: under load the listen queue overflows and retried SYNs change that order, so
    // the one told is looked for among them all.
    let told = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut peek = [0u8; 1];
            let found = silent
                .iter()
                .position(|s| matches!(s.peek(&mut peek), Ok(n) if n > 0));
            if let Some(i) = found {
                break silent.remove(i);
            }
            assert!(
                Instant::now() < deadline,
                "no silent connection was told to go"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    told.set_nonblocking(false).unwrap();
    let mut r = Reader::new(told);
    let HttpResponse { status, body, .. } = r.response().expect("a 503 before the close");
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(r.closed());

    // One address's cap: the 129th unauthenticated connection from it gets in, that
    // address's oldest one closed to make room (and told why).
    let from = Ipv4Addr::new(127, 0, 0, 101);
    let mut capped: Vec<TcpStream> = (0..128).map(|_| connect_from(from, supd.addr)).collect();
    let newest = connect_from(from, supd.addr);
    let mut r = Reader::new(capped.remove(0));
    let HttpResponse { status, body, .. } = r.response().expect("an answer");
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("from this address"));
    drop(capped);
    drop(newest);

    // After the pre-auth limit, the silent connections are closed.
    supd.wait_until(Duration::from_secs(25), || supd.fd_count() <= baseline + 1);
    assert_healthy(supd.addr);
}

/// A 401 ends the connection; OPTIONS (answered without credentials) does not keep an
/// unauthenticated connection alive past the pre-auth limit; an authenticated one is not
/// cut by it.
#[test]
fn unauthenticated_activity_does_not_keep_a_connection() {
    let dir = TempDir::new();
    let supd = start_with_config(
        &dir,
        "limits:\n  preauth-timeout-ms: 1500\n  idle-timeout-ms: 60000\n",
    );
    let path = "/v1/state/applications/x/service-instances";

    let mut c = supd.connect();
    c.send("GET", path, &[], b"");
    let r = c.read_response(false);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed_by_peer(Duration::from_secs(2)));

    // OPTIONS every 300 ms: closed at the pre-auth limit all the same.
    let started = Instant::now();
    let mut c = supd.connect();
    let closed_after = loop {
        c.send("OPTIONS", path, &[], b"");
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut buf = vec![0u8; 4096];
        c.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let n = c.stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break started.elapsed();
        }
        let mut resp = httparse::Response::new(&mut headers);
        let _ = resp.parse(&buf[..n]);
        assert_eq!(resp.code, Some(204));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "OPTIONS kept the connection open"
        );
        thread::sleep(Duration::from_millis(300));
    };
    assert!(
        closed_after >= Duration::from_millis(1400),
        "{closed_after:?}"
    );

    // Authenticated: still served after the pre-auth limit.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut c = supd.connect();
    c.send("GET", path, &[("Authorization", &auth)], b"");
    assert_eq!(c.read_response(false).status, 200);
    thread::sleep(Duration::from_millis(2000));
    c.send("GET", path, &[("Authorization", &auth)], b"");
    assert_eq!(c.read_response(false).status, 200);
}

// ---- a websocket's frames follow its 101 -----------------------------------------------------

fn upgrade_request(supd: &Supd, path: &str, proto: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {proto}\r\n\r\n",
        supd.addr
    )
}

/// Send `bytes` in one write; the answers must be: the pipelined GET's whole answer (when
/// `get` is set), then the 101, then the pong to the ping.
fn assert_ordered(supd: &Supd, app: &str, path: &str, proto: &str, get: bool) {
    let state = format!("/v1/state/applications/{app}/service-instances/web-1");
    let mut bytes = Vec::new();
    if get {
        bytes.extend_from_slice(
            format!(
                "GET {state} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
            )
            .as_bytes(),
        );
    }
    bytes.extend_from_slice(upgrade_request(supd, path, proto).as_bytes());
    bytes.extend_from_slice(&frame(OP_PING, true, b"PING1", true));
    let mut s = TcpStream::connect(supd.addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(&bytes).unwrap();
    let mut r = Reader::new(s);
    let what = format!("{proto} (pipelined GET: {get})");
    if get {
        let HttpResponse { status, body, .. } = r.response().expect("the GET's answer");
        assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{what}: the GET's body is not whole JSON ({e})"));
        assert_eq!(v["name"].as_str().map(|n| n.ends_with("web-1")), Some(true));
    }
    let HttpResponse { status, body, .. } = r.response().expect("the 101");
    assert_eq!(status, 101, "{what}: {}", String::from_utf8_lossy(&body));
    assert_eq!(r.bytes(7), b"\x8a\x05PING1", "{what}: the pong");
}

#[test]
fn websocket_frames_follow_the_101_and_earlier_answers() {
    let cs = Containers::new("conn-order");
    let app = unique("order");
    echo_instance(&cs, &app);
    let supd = Supd::start();
    wait_running(&supd, &app);
    let interactive = interactive_path(&app, "cat", false);
    let connect = connect_path(&app, 7);
    for get in [false, true] {
        assert_ordered(&supd, &app, &interactive, INTERACTIVE, get);
        assert_ordered(&supd, &app, &connect, CONNECT, get);
    }
}

// ---- authenticated connections cannot hold the slots -----------------------------------------

const LIST: &str = "/v1/state/applications/none/service-instances";

/// One authorised GET on a new connection from `from`, its answer read; the connection is
/// kept open (keep-alive) by the caller.
fn get_from(from: Ipv4Addr, to: SocketAddr, token: &str) -> (Client, HttpResponse) {
    let s = connect_from(from, to);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c = Client::from_stream(s);
    let auth = format!("Bearer {token}");
    c.send(
        "GET",
        &format!("{LIST}?count=true"),
        &[("Authorization", &auth)],
        b"",
    );
    let r = c.read_response(false);
    (c, r)
}

/// Finding reader-holds-all-slots: a read-only token opens 1,024 idle keep-alive connections
/// (one GET each, every slot); an admin's new connection is still served, the connection idle
/// the longest closed to make room.
#[test]
fn idle_authenticated_connections_make_room() {
    let _heavy = heavy();
    raise_nofile(8192);
    let dir = TempDir::new();
    let supd = start_with_config(
        &dir,
        "limits:\n  max-connections: 1024\n  connections-per-token: 5000\n",
    );
    let mut held = Vec::with_capacity(1024);
    for i in 0..1024u32 {
        let from = Ipv4Addr::new(127, 0, 1, 2 + (i / 128) as u8);
        let (c, r) = get_from(from, supd.addr, READER_TOKEN);
        assert_eq!(r.status, 200, "reader connection {i}: {}", r.text());
        held.push(c);
    }
    let (mut admin, r) = get_from(Ipv4Addr::new(127, 0, 1, 100), supd.addr, ADMIN_TOKEN);
    assert_eq!(r.status, 200, "admin: {}", r.text());
    // The oldest reader connection was the one closed; the newest is still served.
    assert!(held[0].is_closed_by_peer(Duration::from_secs(5)));
    let auth = format!("Bearer {READER_TOKEN}");
    let last = held.last_mut().unwrap();
    last.send("GET", LIST, &[("Authorization", &auth)], b"");
    assert_eq!(last.read_response(false).status, 200);
    admin.send(
        "GET",
        LIST,
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        b"",
    );
    assert_eq!(admin.read_response(false).status, 200);
}

/// A token holds at most `connections-per-token` connections: past it a request is refused
/// (503, closed) while another token is served; a freed place can be taken again.
#[test]
fn a_token_over_its_cap_is_refused() {
    let dir = TempDir::new();
    let supd = start_with_config(&dir, "limits:\n  connections-per-token: 4\n");
    let from = Ipv4Addr::new(127, 0, 2, 2);
    let mut held: Vec<Client> = (0..4)
        .map(|i| {
            let (c, r) = get_from(from, supd.addr, READER_TOKEN);
            assert_eq!(r.status, 200, "reader connection {i}: {}", r.text());
            c
        })
        .collect();
    let (mut over, r) = get_from(from, supd.addr, READER_TOKEN);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.error_message().contains("for this token"), "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    assert!(over.is_closed_by_peer(Duration::from_secs(5)));
    // Another token is served, from the same address.
    let (_admin, r) = get_from(from, supd.addr, ADMIN_TOKEN);
    assert_eq!(r.status, 200, "admin: {}", r.text());
    // The held ones go on working; closing one frees its place.
    let auth = format!("Bearer {READER_TOKEN}");
    held[3].send("GET", LIST, &[("Authorization", &auth)], b"");
    assert_eq!(held[3].read_response(false).status, 200);
    drop(held.remove(0));
    let mut ok = false;
    for _ in 0..50 {
        let (_c, r) = get_from(from, supd.addr, READER_TOKEN);
        if r.status == 200 {
            ok = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "the freed place was not given back");
}

/// Finding preauth-peer-cap-behind-proxy: silent connections from one address fill its
/// pre-auth cap; an admin request from the same address (a client behind the same proxy) is
/// still answered, that address's oldest silent connection making room (and told why).
#[test]
fn a_peer_at_its_cap_still_gets_a_new_connection_in() {
    let dir = TempDir::new();
    let supd = start_with_config(
        &dir,
        "limits:\n  preauth-connections-per-peer: 8\n  preauth-timeout-ms: 20000\n",
    );
    let from = Ipv4Addr::new(127, 0, 3, 2);
    let mut silent: Vec<TcpStream> = (0..8).map(|_| connect_from(from, supd.addr)).collect();
    // Let supd accept them all before the admin comes.
    thread::sleep(Duration::from_millis(300));
    let (_admin, r) = get_from(from, supd.addr, ADMIN_TOKEN);
    assert_eq!(r.status, 200, "admin: {}", r.text());
    let mut r = Reader::new(silent.remove(0));
    let HttpResponse { status, body, .. } = r.response().expect("a 503 before the close");
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("from this address"));
    assert!(r.closed());
}

// ---- pipelining clients that do not read -----------------------------------------------------

/// A loopback connection with a tiny receive buffer, so that answers pile up on supd's side.
fn small_window(to: SocketAddr) -> TcpStream {
    use nix::sys::socket::{setsockopt, sockopt};
    let s = TcpStream::connect(to).unwrap();
    setsockopt(&s, sockopt::RcvBuf, &4096).unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// Finding reader-pipelined-unread: 50 connections pipeline thousands of state GETs each and
/// never read; meanwhile a well-behaved client's GETs are answered within a generous bound
/// (before: seconds, the loop answering one connection's requests until its 1 MiB output cap),
/// and supd's memory does not grow with what the pipeliners are sent.
#[test]
fn pipelining_clients_that_do_not_read_do_not_stall_others() {
    let _heavy = heavy();
    let dir = TempDir::new();
    let supd = start_with_config(&dir, "limits:\n  idle-timeout-ms: 60000\n");
    let rss_before = supd.rss_kib();
    let one =
        format!("GET {LIST} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER_TOKEN}\r\n\r\n");
    let burst = one.repeat(8000).into_bytes();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pusher = {
        let stop = stop.clone();
        let addr = supd.addr;
        thread::spawn(move || {
            let mut conns: Vec<(TcpStream, usize)> =
                (0..50).map(|_| (small_window(addr), 0)).collect();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut progress = false;
                for (s, off) in conns.iter_mut() {
                    if *off == burst.len() {
                        continue;
                    }
                    match s.write(&burst[*off..]) {
                        Ok(n) => {
                            *off += n;
                            progress = true;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => panic!("pipelining write: {e}"),
                    }
                }
                if !progress {
                    thread::sleep(Duration::from_millis(5));
                }
            }
            conns
        })
    };
    thread::sleep(Duration::from_millis(300));
    let mut worst = Duration::ZERO;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let t = Instant::now();
        let mut c = Client::connect(supd.addr);
        c.send(
            "GET",
            &format!("{LIST}?count=true"),
            &[("Authorization", &auth)],
            b"",
        );
        assert_eq!(c.read_response(false).status, 200);
        worst = worst.max(t.elapsed());
        thread::sleep(Duration::from_millis(50));
    }
    let rss_grew = supd.rss_kib().saturating_sub(rss_before);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let conns = pusher.join().unwrap();
    assert!(
        worst < Duration::from_millis(300),
        "a well-behaved GET waited {worst:?}"
    );
    // 50 x (64 KiB of output + a head's worth of input), with room for the allocator.
    assert!(rss_grew < 16 * 1024, "supd grew by {rss_grew} KiB");
    drop(conns);
}

// ---- a stalled writer is not kept -------------------------------------------------------------

/// A client that pipelines requests and stops reading gets its connection closed once its
/// answers have made no write progress for `write-timeout-ms`, long before the idle timeout.
#[test]
fn a_connection_whose_answers_are_not_read_is_closed() {
    let dir = TempDir::new();
    let supd = start_with_config(
        &dir,
        "limits:\n  idle-timeout-ms: 60000\n  preauth-timeout-ms: 1000\n  write-timeout-ms: 2000\n",
    );
    let one =
        format!("GET {LIST} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER_TOKEN}\r\n\r\n");
    // More answers than the kernel's buffers take, so that they queue in supd: write until
    // supd stops reading (no progress for 300 ms).
    let burst = one.repeat(100_000).into_bytes();
    let mut s = small_window(supd.addr);
    let mut off = 0;
    let mut last = Instant::now();
    while off < burst.len() && last.elapsed() < Duration::from_millis(300) {
        match s.write(&burst[off..]) {
            Ok(n) => {
                off += n;
                last = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(off < burst.len(), "supd read every request");
    let t = Instant::now();
    supd.wait_until(Duration::from_secs(10), || {
        supd.log_text().contains("answers not read in time")
    });
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "closed before the write timeout"
    );
    // What was queued is read, then the end (before: answers for as long as it reads).
    s.set_nonblocking(false).unwrap();
    let mut r = Reader::new(s);
    while r.fill() {}
    assert_healthy(supd.addr);
}

/// Websocket sessions count for their token as the connections they were: with a cap of 2,
/// two tunnels leave the token no connection (503), another token is served, and closing a
/// tunnel gives its place back.
#[test]
fn websocket_sessions_count_for_their_token() {
    let cs = Containers::new("conn-token-cap");
    let app = unique("tokcap");
    echo_instance(&cs, &app);
    let dir = TempDir::new();
    let supd = start_with_config(&dir, "limits:\n  connections-per-token: 2\n");
    wait_running(&supd, &app);
    let path = connect_path(&app, 7);
    let first = ws_client(supd.addr, &path, CONNECT);
    let _second = ws_client(supd.addr, &path, CONNECT);
    let from = Ipv4Addr::new(127, 0, 4, 2);
    let (_c, r) = get_from(from, supd.addr, ADMIN_TOKEN);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.error_message().contains("for this token"), "{}", r.text());
    let (_c, r) = get_from(from, supd.addr, READER_TOKEN);
    assert_eq!(r.status, 200, "reader: {}", r.text());
    drop(first);
    supd.wait_until(Duration::from_secs(10), || {
        get_from(from, supd.addr, ADMIN_TOKEN).1.status == 200
    });
}
