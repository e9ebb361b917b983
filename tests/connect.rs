//! `connect` and the deprecated `tcp-connect` through the real `supd` binary, against
//! real containers, with an independent websocket client (tungstenite's own handshake).
//!
//! Targets that busybox cannot be (a server bound to the container's loopback only, a UDP echo
//! of 65,507-byte datagrams, `::1`, a flood) are served by threads of this test process that
//! entered the container's network namespace: their sockets live there exactly as a process of
//! the container would have them.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use nix::sched::{CloneFlags, setns};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Run `f` on a thread that has entered the network namespace of process `pid`; sockets it
/// creates belong to that namespace for good.
fn in_netns<R: Send + 'static>(pid: u32, f: impl FnOnce() -> R + Send + 'static) -> R {
    let ns = File::open(format!("/proc/{pid}/ns/net")).unwrap();
    thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn tcp_listener_in(pid: u32, addr: &str) -> TcpListener {
    let addr: SocketAddr = addr.parse().unwrap();
    in_netns(pid, move || TcpListener::bind(addr).unwrap())
}

/// Serve every connection of `l` on its own thread with `f`.
fn serve(l: TcpListener, f: impl Fn(TcpStream) + Send + Sync + 'static) {
    let f = Arc::new(f);
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let f = f.clone();
            thread::spawn(move || f(s));
        }
    });
}

fn echo(mut s: TcpStream) {
    let mut r = s.try_clone().unwrap();
    let _ = std::io::copy(&mut r, &mut s);
    let _ = s.shutdown(std::net::Shutdown::Write);
}

/// An order-sensitive checksum, eight bytes at a time (debug builds hash 100 MB quickly).
#[derive(Default)]
struct Sum {
    h: u64,
    len: u64,
    carry: Vec<u8>,
}

impl Sum {
    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.carry.is_empty() {
            let take = (8 - self.carry.len()).min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.carry.len() < 8 {
                return;
            }
            let w = u64::from_le_bytes(self.carry[..].try_into().unwrap());
            self.word(w);
            self.carry.clear();
        }
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().unwrap()));
        }
        self.carry.extend_from_slice(chunks.remainder());
    }
    fn word(&mut self, w: u64) {
        self.h = (self.h.rotate_left(23) ^ w).wrapping_mul(0x100_0000_01b3);
    }
    fn finish(mut self) -> (u64, u64) {
        let mut last = [0u8; 8];
        last[..self.carry.len()].copy_from_slice(&self.carry);
        let w = u64::from_le_bytes(last) ^ (self.carry.len() as u64) << 56;
        self.word(w);
        (self.len, self.h)
    }
}

/// `total` bytes of a position-dependent pattern (a 65,521-byte pseudo-random block, prime
/// so its phase shifts from chunk to chunk, each chunk stamped with its number).
fn pattern(total: usize, mut out: impl FnMut(&[u8]) -> bool) {
    let mut block = vec![0u8; 65521];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut sent = 0;
    let mut n: u64 = 0;
    let mut chunk = block.clone();
    while sent < total {
        let len = chunk.len().min(total - sent);
        chunk[..8].copy_from_slice(&n.to_le_bytes());
        if !out(&chunk[..len]) {
            return;
        }
        sent += len;
        n += 1;
    }
}

fn pattern_sum(total: usize) -> (u64, u64) {
    let mut s = Sum::default();
    pattern(total, |c| {
        s.update(c);
        true
    });
    s.finish()
}

/// Read until the server's close; its code and everything binary that came before it.
fn until_close(ws: &mut Ws) -> (Option<CloseCode>, Vec<u8>) {
    let (data, close) = read_to_close(ws, |_| {});
    (close.map(|(code, _)| code), data)
}

fn connect_path(app: &str, svc: &str, query: &str) -> String {
    format!("/v1/state/applications/{app}/service-instances/{svc}-1/connect?{query}")
}

fn sleeper(cs: &Containers, app: &str, svc: &str) -> String {
    managed(
        cs,
        app,
        svc,
        &[
            "--stop-timeout",
            "1",
            "--sysctl",
            "net.ipv6.conf.all.disable_ipv6=0",
        ],
        &[IMAGE, "sleep", "100000"],
    )
}

#[test]
fn connect_tcp_loopback_only_bulk_ipv6_and_errors() {
    let cs = Containers::new("tuntest");
    let app = unique("tun");
    let id = sleeper(&cs, &app, "box");
    let pid = pid_of(&id);
    let ip = inspect(&id, "{{.NetworkSettings.IPAddress}}");

    serve(tcp_listener_in(pid, "127.0.0.1:7"), echo);
    serve(tcp_listener_in(pid, "[::1]:7"), echo);
    // Sink: reads to EOF, answers "<length> <checksum>".
    serve(tcp_listener_in(pid, "127.0.0.1:9"), |mut s| {
        let mut sum = Sum::default();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sum.update(&buf[..n]),
            }
        }
        let (len, h) = sum.finish();
        let _ = s.write_all(format!("{len} {h}").as_bytes());
    });
    // Source: the pattern, then EOF.
    const BULK: usize = 100 << 20;
    serve(tcp_listener_in(pid, "127.0.0.1:19"), |mut s| {
        pattern(BULK, |c| s.write_all(c).is_ok());
    });

    let supd = Supd::start();
    wait_instance(&supd, &app, "box");

    // Only the instance's loopback has the echo server: not the host, not the container's IP.
    assert!(TcpStream::connect_timeout(&format!("{ip}:7").parse().unwrap(), TIMEOUT).is_err());
    let mut w = ws_open(
        &supd,
        &connect_path(&app, "box", "protocol=tcp&port=7"),
        CONNECT,
    );
    w.send(Message::binary(b"hello".to_vec())).unwrap();
    assert_eq!(next_binary(&mut w), b"hello");
    // 200,000 bytes in messages of the default max-message (68 KiB), echoed whole.
    for part in vec![7u8; 200_000].chunks(68 << 10) {
        w.send(Message::binary(part.to_vec())).unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 200_000 {
        got.extend(next_binary(&mut w));
    }
    assert_eq!(got, vec![7u8; 200_000]);
    close_ws(w);

    // IPv6 loopback of the instance, ip-address given explicitly.
    let mut w = ws_open(
        &supd,
        &connect_path(&app, "box", "protocol=tcp&port=7&ip-address=::1"),
        CONNECT,
    );
    w.send(Message::binary(b"over v6".to_vec())).unwrap();
    assert_eq!(next_binary(&mut w), b"over v6");
    close_ws(w);
    let mut w = ws_open(
        &supd,
        &connect_path(&app, "box", "protocol=tcp&port=7&ip-address=127.0.0.1"),
        CONNECT,
    );
    w.send(Message::binary(b"v4".to_vec())).unwrap();
    assert_eq!(next_binary(&mut w), b"v4");
    close_ws(w);

    // 100 MB up: the sink's checksum (after our half-close) matches ours, then close 1000.
    let t0 = Instant::now();
    let mut w = ws_open(
        &supd,
        &connect_path(&app, "box", "protocol=tcp&port=9"),
        CONNECT,
    );
    pattern(BULK, |c| {
        w.send(Message::binary(c.to_vec())).unwrap();
        true
    });
    w.send(Message::binary(Vec::new())).unwrap();
    let (code, answer) = until_close(&mut w);
    let (len, h) = pattern_sum(BULK);
    assert_eq!(String::from_utf8(answer).unwrap(), format!("{len} {h}"));
    assert_eq!(code, Some(CloseCode::Normal));
    let up = t0.elapsed();

    // 100 MB down: every byte the source sent arrives before the close 1000.
    let t0 = Instant::now();
    let mut w = ws_open(
        &supd,
        &connect_path(&app, "box", "protocol=tcp&port=19"),
        CONNECT,
    );
    let mut sum = Sum::default();
    let code = loop {
        match w.read().expect("read") {
            Message::Binary(b) => sum.update(&b),
            Message::Close(f) => break f.map(|f| f.code),
            _ => {}
        }
    };
    assert_eq!(code, Some(CloseCode::Normal));
    assert_eq!(sum.finish(), (len, h));
    eprintln!("100 MB up {up:?}, down {:?}", t0.elapsed());

    // Both directions at once through an echo: the client writes without waiting and reads
    // whatever is there; backpressure on either side must not deadlock or lose a byte.
    const ECHOED: usize = 20 << 20;
    let t0 = Instant::now();
    let mut w = ws_open(
        &supd,
        &connect_path(&app, "box", "protocol=tcp&port=7"),
        CONNECT,
    );
    w.get_mut().set_nonblocking(true).unwrap();
    let mut chunks = Vec::new();
    pattern(ECHOED, |c| {
        chunks.push(c.to_vec());
        true
    });
    let mut next = 0;
    let mut sum = Sum::default();
    let mut received = 0;
    while received < ECHOED {
        assert!(t0.elapsed() < TIMEOUT, "echo stalled at {received} bytes");
        let mut idle = true;
        if next < chunks.len() {
            match w.write(Message::binary(std::mem::take(&mut chunks[next]))) {
                Ok(()) => next += 1,
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    next += 1
                }
                Err(tungstenite::Error::WriteBufferFull(m)) => {
                    chunks[next] = m.into_data().to_vec();
                }
                Err(e) => panic!("write: {e}"),
            }
        }
        match w.flush() {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("flush: {e}"),
        }
        match w.read() {
            Ok(Message::Binary(b)) => {
                received += b.len();
                sum.update(&b);
                idle = false;
            }
            Ok(_) => idle = false,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
        if idle && next >= chunks.len() {
            thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(sum.finish(), pattern_sum(ECHOED));
    w.get_mut().set_nonblocking(false).unwrap();
    close_ws(w);
    eprintln!("20 MB echoed both ways at once in {:?}", t0.elapsed());

    // A text frame is not part of the protocol: 1003.
    let mut w = ws_open(
        &supd,
        &connect_path(&app, "box", "protocol=tcp&port=7"),
        CONNECT,
    );
    w.send(Message::text("hi")).unwrap();
    let (code, _) = until_close(&mut w);
    assert_eq!(code, Some(CloseCode::Unsupported));

    // A refused port: an HTTP error with an errors body, never a 101.
    let r = raw_upgrade(
        &supd,
        &connect_path(&app, "box", "protocol=tcp&port=1"),
        ADMIN_TOKEN,
        CONNECT,
    );
    assert!(r.status >= 400, "{r:?}");
    assert!(r.error_message().contains("refused"), "{}", r.text());
    assert!(matches!(
        try_ws(supd.addr, &connect_path(&app, "box", "protocol=tcp&port=1"), ADMIN_TOKEN, CONNECT),
        Err((s, _)) if s >= 400
    ));

    // Permissions before the 101; bad parameters are 400.
    let ok = connect_path(&app, "box", "protocol=tcp&port=7");
    let r = raw_upgrade(&supd, &ok, READER_TOKEN, CONNECT);
    assert_eq!(r.status, 403, "{}", r.text());
    r.error_message();
    let r = raw_upgrade(&supd, &ok, OTHER_TOKEN, CONNECT);
    assert_eq!(r.status, 403, "{}", r.text());
    for q in [
        "port=7",
        "protocol=sctp&port=7",
        "protocol=&port=7",
        "protocol=tcp",
        "protocol=tcp&port=0",
        "protocol=tcp&port=70000",
        "protocol=tcp&port=abc",
        "protocol=tcp&port=-7",
        "protocol=tcp&port=7&ip-address=1.2.3",
        "protocol=tcp&port=7&ip-address=localhost",
        "protocol=tcp&port=7&ip-address=",
        "protocol=udp&port=7&bogus=1",
    ] {
        let r = raw_upgrade(&supd, &connect_path(&app, "box", q), ADMIN_TOKEN, CONNECT);
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        r.error_message();
    }
    let r = raw_upgrade(
        &supd,
        &connect_path(&app, "nosuch", "protocol=tcp&port=7"),
        ADMIN_TOKEN,
        CONNECT,
    );
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn connect_udp_datagrams_and_half_close() {
    let cs = Containers::new("tuntest");
    let app = unique("tun");
    let id = sleeper(&cs, &app, "box");
    let pid = pid_of(&id);
    // A server that answers only at EOF: half-close is the only way to get its answer.
    let app2 = unique("tun");
    managed(
        &cs,
        &app2,
        "wc",
        &["--stop-timeout", "1"],
        &[IMAGE, "nc", "-ll", "-p", "8", "-e", "wc", "-c"],
    );
    let udp = in_netns(pid, || UdpSocket::bind("127.0.0.1:53").unwrap());
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });

    let supd = Supd::start();
    wait_instance(&supd, &app, "box");
    wait_instance(&supd, &app2, "wc");

    let mut w = ws_open(
        &supd,
        &connect_path(&app, "box", "protocol=udp&port=53"),
        CONNECT,
    );
    for size in [1usize, 1400, 65507] {
        let d: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
        w.send(Message::binary(d.clone())).unwrap();
        let got = next_binary(&mut w);
        assert_eq!(got.len(), size);
        assert_eq!(got, d, "datagram of {size} bytes");
    }
    // Datagram boundaries hold: three sends, three frames of the same sizes.
    for size in [3usize, 5, 7] {
        w.send(Message::binary(vec![size as u8; size])).unwrap();
    }
    for size in [3usize, 5, 7] {
        assert_eq!(next_binary(&mut w), vec![size as u8; size]);
    }
    close_ws(w);

    let mut w = ws_open(
        &supd,
        &connect_path(&app2, "wc", "protocol=tcp&port=8"),
        CONNECT,
    );
    w.send(Message::binary(vec![b'x'; 12345])).unwrap();
    w.send(Message::binary(Vec::new())).unwrap();
    let (code, answer) = until_close(&mut w);
    assert_eq!(String::from_utf8_lossy(&answer).trim(), "12345");
    assert_eq!(code, Some(CloseCode::Normal));
}

#[test]
fn slow_reader_keeps_memory_bounded() {
    let cs = Containers::new("tuntest");
    let app = unique("tun");
    let id = sleeper(&cs, &app, "box");
    let pid = pid_of(&id);
    let written = Arc::new(AtomicU64::new(0));
    let w2 = written.clone();
    serve(tcp_listener_in(pid, "127.0.0.1:7"), move |mut s| {
        let block = vec![0x5au8; 64 * 1024];
        while s.write_all(&block).is_ok() {
            w2.fetch_add(block.len() as u64, Ordering::Relaxed);
        }
    });
    // A target that accepts and never reads.
    serve(tcp_listener_in(pid, "127.0.0.1:8"), |s| {
        thread::sleep(Duration::from_secs(10));
        drop(s);
    });
    let supd = Supd::start();
    wait_instance(&supd, &app, "box");

    let mut w = ws_open(
        &supd,
        &connect_path(&app, "box", "protocol=tcp&port=7"),
        CONNECT,
    );
    let first = next_binary(&mut w);
    assert!(!first.is_empty());
    let before = supd.rss_kib();
    let end = Instant::now() + Duration::from_secs(3);
    let mut got = first.len() as u64;
    while Instant::now() < end {
        got += next_binary(&mut w).len() as u64;
        thread::sleep(Duration::from_millis(20));
    }
    let after = supd.rss_kib();
    let flooded = written.load(Ordering::Relaxed);
    eprintln!("rss {before} -> {after} KiB; target wrote {flooded} bytes, client read {got}");
    assert!(
        after < before + 8 * 1024,
        "rss grew from {before} to {after} KiB"
    );
    // Without backpressure a loopback flood writes gigabytes in 3 s; with it, only what the
    // socket buffers and supd's bounded buffers hold beyond what the client read.
    assert!(
        flooded < got + 48 * 1024 * 1024,
        "target wrote {flooded}, client read {got}"
    );
    close_ws(w);

    // The other way: a target that never reads pauses reading from the client.
    let mut w = ws_open(
        &supd,
        &connect_path(&app, "box", "protocol=tcp&port=8"),
        CONNECT,
    );
    w.get_mut().set_nonblocking(true).unwrap();
    // Our own buffer bounded, so what is accepted has left this process.
    w.set_config(|c| {
        c.write_buffer_size = 0;
        c.max_write_buffer_size = 256 * 1024;
    });
    let before = supd.rss_kib();
    let end = Instant::now() + Duration::from_secs(3);
    let mut accepted = 0u64;
    let mut msg = Some(Message::binary(vec![0xa5u8; 64 * 1024]));
    while Instant::now() < end {
        let m = msg
            .take()
            .unwrap_or_else(|| Message::binary(vec![0xa5u8; 64 * 1024]));
        match w.write(m) {
            Ok(()) => accepted += 64 * 1024,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                accepted += 64 * 1024;
                thread::sleep(Duration::from_millis(5));
            }
            Err(tungstenite::Error::WriteBufferFull(m)) => {
                msg = Some(*m);
                let _ = w.flush();
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    let after = supd.rss_kib();
    eprintln!(
        "rss {before} -> {after} KiB; client queued {accepted} bytes to a target that never reads"
    );
    assert!(
        after < before + 8 * 1024,
        "rss grew from {before} to {after} KiB"
    );
    assert!(
        accepted < 64 * 1024 * 1024,
        "client queued {accepted} bytes"
    );
    drop(w);
}

#[test]
fn connect_cycles_leak_no_descriptor() {
    let cs = Containers::new("tuntest");
    let app = unique("tun");
    let id = sleeper(&cs, &app, "box");
    let pid = pid_of(&id);
    serve(tcp_listener_in(pid, "127.0.0.1:7"), echo);
    let udp = in_netns(pid, || UdpSocket::bind("127.0.0.1:53").unwrap());
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });
    let supd = Supd::start();
    wait_instance(&supd, &app, "box");

    let cycle = |i: usize| {
        let q = if i % 4 == 3 {
            "protocol=udp&port=53"
        } else {
            "protocol=tcp&port=7"
        };
        let mut w = ws_open(&supd, &connect_path(&app, "box", q), CONNECT);
        w.send(Message::binary(vec![i as u8; 3])).unwrap();
        assert_eq!(next_binary(&mut w), vec![i as u8; 3]);
        match i % 3 {
            // A clean close, the client vanishing, a refused connect.
            0 => close_ws(w),
            1 => drop(w),
            _ => {
                close_ws(w);
                let r = raw_upgrade(
                    &supd,
                    &connect_path(&app, "box", "protocol=tcp&port=1"),
                    ADMIN_TOKEN,
                    CONNECT,
                );
                assert!(r.status >= 400);
            }
        }
    };
    cycle(0);
    thread::sleep(Duration::from_millis(200));
    let base = supd.fd_count();
    let t0 = Instant::now();
    for i in 0..1000 {
        cycle(i);
    }
    eprintln!("1000 cycles in {:?}", t0.elapsed());
    supd.wait_until(Duration::from_secs(10), || supd.fd_count() <= base);
}

#[test]
fn tcp_connect_reaches_the_container_ip() {
    let cs = Containers::new("tuntest");
    let app = unique("tun");
    managed(
        &cs,
        &app,
        "web",
        &["--stop-timeout", "1"],
        &[IMAGE, "nc", "-ll", "-p", "7", "-e", "cat"],
    );
    let stopped = managed(&cs, &app, "gone", &[], &[IMAGE, "true"]);
    let setup = managed(
        &cs,
        &app,
        "web",
        &[
            "--label",
            "io.supd.container=setup",
            "--label",
            "io.supd.init-container=true",
        ],
        &[IMAGE, "true"],
    );
    docker(&["wait", &stopped]);
    docker(&["wait", &setup]);
    let supd = Supd::start();
    wait_instance(&supd, &app, "web");

    let path = format!(
        "/v1/state/applications/{app}/service-instances/web-1/containers/web/tcp-connect?port=7"
    );
    let (mut w, resp) = try_ws(supd.addr, &path, ADMIN_TOKEN, TCP_CONNECT).unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["Deprecation"], "true");
    assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], TCP_CONNECT);
    w.send(Message::binary(b"through the bridge".to_vec()))
        .unwrap();
    assert_eq!(next_binary(&mut w), b"through the bridge");
    close_ws(w);

    let r = raw_upgrade(&supd, &path, READER_TOKEN, TCP_CONNECT);
    assert_eq!(r.status, 403, "{}", r.text());
    for q in ["", "port=0", "port=70000", "port=x"] {
        let p = format!(
            "/v1/state/applications/{app}/service-instances/web-1/containers/web/tcp-connect?{q}"
        );
        let r = raw_upgrade(&supd, &p, ADMIN_TOKEN, TCP_CONNECT);
        assert_eq!(r.status, 400, "{q}: {}", r.text());
    }
    let p = format!(
        "/v1/state/applications/{app}/service-instances/gone-1/containers/gone/tcp-connect?port=7"
    );
    let r = raw_upgrade(&supd, &p, ADMIN_TOKEN, TCP_CONNECT);
    assert_eq!(r.status, 409, "{}", r.text());
    r.error_message();
    let p = format!(
        "/v1/state/applications/{app}/service-instances/web-1/init-containers/setup/tcp-connect?port=7"
    );
    let r = raw_upgrade(&supd, &p, ADMIN_TOKEN, TCP_CONNECT);
    assert_eq!(r.status, 409, "{}", r.text());
    let r = raw_upgrade(
        &supd,
        &connect_path(&app, "gone", "protocol=tcp&port=7"),
        ADMIN_TOKEN,
        CONNECT,
    );
    assert_eq!(r.status, 409, "{}", r.text());
    r.error_message();

    // vm-container: the handshake, the query and the instance are checked as everywhere
    // else; an instance without a VM launcher has no vm-container (404).
    let vm = |si: &str, q: &str| {
        format!("/v1/state/applications/{app}/service-instances/{si}/vm-container/tcp-connect?{q}")
    };
    let r = supd.get(&vm("web-1", "port=7"), ADMIN_TOKEN);
    assert_eq!(r.status, 426, "{}", r.text());
    let r = raw_upgrade(&supd, &vm("web-1", "port=0"), ADMIN_TOKEN, TCP_CONNECT);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = raw_upgrade(&supd, &vm("nosuch-1", "port=7"), ADMIN_TOKEN, TCP_CONNECT);
    assert_eq!(r.status, 404, "{}", r.text());
    let r = raw_upgrade(&supd, &vm("web-1", "port=7"), ADMIN_TOKEN, TCP_CONNECT);
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.error_message().contains("has no vm-container"),
        "{}",
        r.text()
    );
}

#[test]
fn tcp_session_endings_and_pending_connects() {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, setsockopt, socket,
        sockopt,
    };
    let cs = Containers::new("tuntest");
    let app = unique("tun");
    let id = sleeper(&cs, &app, "box");
    let pid = pid_of(&id);
    // Reset: after the first bytes from the client, close with SO_LINGER 0 (an RST).
    serve(tcp_listener_in(pid, "127.0.0.1:7"), |mut s| {
        let mut b = [0u8; 1];
        let _ = s.read(&mut b);
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        setsockopt(&s, sockopt::Linger, &linger).unwrap();
    });
    // Reports the bytes it got once it sees EOF.
    let (eof_tx, eof_rx) = std::sync::mpsc::channel::<usize>();
    let eof_tx = std::sync::Mutex::new(eof_tx);
    serve(tcp_listener_in(pid, "127.0.0.1:8"), move |mut s| {
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        let _ = eof_tx.lock().unwrap().send(all.len());
    });
    // A listener whose queue is full and never accepted: SYNs to it go unanswered, so a
    // connect to it stays in progress.
    let (_full, _queued) = in_netns(pid, || {
        let l = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&l),
            &SockaddrIn::new(127, 0, 0, 1, 11),
        )
        .unwrap();
        listen(&l, Backlog::new(0).unwrap()).unwrap();
        let addr: SocketAddr = "127.0.0.1:11".parse().unwrap();
        let queued: Vec<TcpStream> = (0..4)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok())
            .collect();
        (l, queued)
    });

    let supd = Supd::start();
    wait_instance(&supd, &app, "box");

    let mut w = ws_open(
        &supd,
        &connect_path(&app, "box", "protocol=tcp&port=7"),
        CONNECT,
    );
    w.send(Message::binary(b"x".to_vec())).unwrap();
    let frame = loop {
        if let Message::Close(f) = w.read().expect("read") {
            break f.expect("a close frame with a code");
        }
    };
    assert_eq!(frame.code, CloseCode::Error);
    assert!(!frame.reason.is_empty());
    close_ws(w);

    let mut w = ws_open(
        &supd,
        &connect_path(&app, "box", "protocol=tcp&port=8"),
        CONNECT,
    );
    w.send(Message::binary(b"abc".to_vec())).unwrap();
    thread::sleep(Duration::from_millis(100));
    close_ws(w);
    assert_eq!(eof_rx.recv_timeout(Duration::from_secs(5)), Ok(3));
    // After a first connect (supd keeps its own network namespace open from then on).
    thread::sleep(Duration::from_millis(200));
    let base = supd.fd_count();

    // A client that resets its connection while the connect is in progress frees it at once;
    // one that only closes (a FIN, which HTTP allows while waiting for an answer) frees it by
    // the connect timeout at the latest.
    let pending = |reset: bool| {
        let mut c = supd.connect();
        c.send_upgrade(
            &connect_path(&app, "box", "protocol=tcp&port=11"),
            ADMIN_TOKEN,
            CONNECT,
        );
        thread::sleep(Duration::from_millis(300));
        assert!(supd.fd_count() > base);
        if reset {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            setsockopt(&c.stream, sockopt::Linger, &linger).unwrap();
        }
    };
    pending(true);
    supd.wait_until(Duration::from_secs(2), || supd.fd_count() <= base);
    pending(false);
    supd.wait_until(Duration::from_secs(8), || supd.fd_count() <= base);

    // One that waits gets 504 after the connect timeout (5 s by default), never a 101.
    let t = Instant::now();
    let r = raw_upgrade(
        &supd,
        &connect_path(&app, "box", "protocol=tcp&port=11"),
        ADMIN_TOKEN,
        CONNECT,
    );
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.error_message().contains("timed out"), "{}", r.text());
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    supd.wait_until(Duration::from_secs(2), || supd.fd_count() <= base);
}
