//! Faults around a real `supd`: the container killed under an exec, an interactive session
//! and a tunnel; a client that vanishes without closing; supd stopped with sessions open. The
//! client is told each time, and supd frees everything it held.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;

#[test]
fn container_killed_mid_exec_interactive_and_connect() {
    let cs = Containers::new("fault-kill");
    let app = unique("faultkill");
    let id = echo_instance(&cs, &app);
    let supd = Supd::start();
    wait_running(&supd, &app);
    let fds = supd.fd_count();

    let addr = supd.addr;
    let path = exec_path(&app);
    let exec = thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send_json(&path, ADMIN_TOKEN, br#"{"cmd": "sleep 6101"}"#);
        c.read_response(false)
    });
    let mut ix = ws_client(
        supd.addr,
        &interactive_path(&app, "sleep 6102", true),
        INTERACTIVE,
    );
    let mut tun = ws_client(supd.addr, &connect_path(&app, 7), CONNECT);
    tun.send(Message::binary(b"echo me\n".to_vec())).unwrap();
    let mut echoed = Vec::new();
    while echoed != b"echo me\n" {
        match tun.read().unwrap() {
            Message::Binary(b) => echoed.extend_from_slice(&b),
            Message::Ping(_) | Message::Pong(_) => {}
            m => panic!("{m:?}"),
        }
    }
    supd.wait_until(Duration::from_secs(10), || {
        top_has(&id, "sleep 6101") && top_has(&id, "sleep 6102")
    });
    assert!(supd.children().len() >= 2);

    docker(&["kill", &id]);

    let r = exec.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["signal"], 9, "{}", r.text());
    let (_, code, reason) = ws_until_close(&mut ix);
    assert_eq!((code, reason.as_str()), (1000, r#"{"signal":9}"#));
    let (_, code, reason) = ws_until_close(&mut tun);
    assert!(
        code == 1000 || code == 1011,
        "tunnel closed with {code} {reason:?}"
    );
    assert!(
        !reason.is_empty(),
        "tunnel closed with {code} and no reason"
    );

    supd.wait_until(Duration::from_secs(10), || {
        supd.fd_count() <= fds && supd.children().is_empty()
    });
    assert_healthy(supd.addr);
}

/// A TCP proxy that can be frozen: it then neither reads nor writes, and keeps both sockets
/// open, like a peer whose machine vanished from the network.
struct Proxy {
    addr: std::net::SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl Proxy {
    fn new(target: std::net::SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { return };
                let s = TcpStream::connect(target).unwrap();
                for (mut from, mut to) in [(c.try_clone().unwrap(), s.try_clone().unwrap()), (s, c)]
                {
                    let f = f.clone();
                    thread::spawn(move || {
                        from.set_read_timeout(Some(Duration::from_millis(50)))
                            .unwrap();
                        let mut buf = [0u8; 16384];
                        loop {
                            if f.load(Ordering::SeqCst) {
                                // Hold both sockets open for good, moving nothing.
                                thread::sleep(Duration::from_secs(3600));
                            }
                            match from.read(&mut buf) {
                                Ok(0) => return,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if e.kind() == std::io::ErrorKind::WouldBlock
                                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
            }
        });
        Proxy { addr, frozen }
    }
}

#[test]
fn vanished_client_is_dropped_on_ping_timeout() {
    let cs = Containers::new("fault-vanish");
    let app = unique("faultvanish");
    let id = echo_instance(&cs, &app);
    let dir = TempDir::new();
    let supd = start_with_config(
        &dir,
        "websocket:\n  ping-interval-ms: 200\n  ping-timeout-ms: 1000\n",
    );
    wait_running(&supd, &app);
    let fds = supd.fd_count();
    let proxy = Proxy::new(supd.addr);

    let mut ws = ws_client(
        proxy.addr,
        &interactive_path(&app, "sleep 6201", true),
        INTERACTIVE,
    );
    // While the client answers pings (tungstenite does, as it reads), the session lives on,
    // well past the ping timeout.
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    let mut pings = 0;
    while Instant::now() < until {
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(Message::Close(c)) => panic!("closed while answering pings: {c:?}"),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(pings >= 5, "{pings} pings in 3 s");
    assert!(top_has(&id, "sleep 6201"));

    proxy.frozen.store(true, Ordering::SeqCst);
    supd.wait_until(Duration::from_secs(15), || {
        supd.log_text().contains("no answer to pings") && !top_has(&id, "sleep 6201")
    });
    supd.wait_until(Duration::from_secs(10), || {
        supd.fd_count() <= fds && supd.children().is_empty()
    });
    assert_healthy(supd.addr);
}

#[test]
fn sigterm_with_sessions_open_leaves_no_process_running() {
    let cs = Containers::new("fault-term");
    let app = unique("faultterm");
    let id = echo_instance(&cs, &app);
    let mut supd = Supd::start();
    wait_running(&supd, &app);

    let addr = supd.addr;
    let path = exec_path(&app);
    let exec = thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send_json(&path, ADMIN_TOKEN, br#"{"cmd": "sleep 6301"}"#);
        let mut buf = Vec::new();
        let _ = c.stream.read_to_end(&mut buf);
        buf
    });
    let mut ix = ws_client(
        supd.addr,
        &interactive_path(&app, "sh -c 'trap \"\" HUP TERM; sleep 6302'", true),
        INTERACTIVE,
    );
    let mut tun = ws_client(supd.addr, &connect_path(&app, 7), CONNECT);
    supd.wait_until(Duration::from_secs(10), || {
        top_has(&id, "sleep 6301") && top_has(&id, "sleep 6302")
    });

    supd.signal("TERM");
    let (_, code, reason) = ws_until_close(&mut ix);
    assert_eq!((code, reason.as_str()), (1001, "supd is shutting down"));
    let (_, code, reason) = ws_until_close(&mut tun);
    assert_eq!((code, reason.as_str()), (1001, "supd is shutting down"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = supd.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "supd did not stop");
        thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "supd exited with {status}");
    let answer = exec.join().unwrap();
    // The exec is told how its command ended (stopped by supd's SIGTERM).
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 "), "exec got {answer:?}");
    assert!(answer.contains(r#""signal":15"#), "exec got {answer:?}");

    // Nothing supd started is left, in the container or anywhere on the host.
    assert!(
        eventually(Duration::from_secs(10), || {
            !top_has(&id, "sleep 6301")
                && !top_has(&id, "sleep 6302")
                && !host_has_process("sleep 6301")
                && !host_has_process("sleep 6302")
        }),
        "processes left running: {}",
        docker(&["top", &id, "-o", "pid,args"])
    );
}
