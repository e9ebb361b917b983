//! supd's websocket layer against an independent client (tungstenite with its own client
//! handshake) over real TCP, the server side driven by edge-triggered mio events as the
//! event loop drives it.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use supd::testing::ws::handshake::{self, UpgradeHeaders};
use supd::testing::ws::protocol::{self, ClientFrame};
use supd::testing::ws::session::{self, Incoming, Limits, Session};
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;

const SUPPORTED: &[&str] = &[protocol::EXEC_INTERACTIVE];
const DEADLINE: Duration = Duration::from_secs(20);
const WS: Token = Token(0);

fn limits() -> Limits {
    Limits {
        max_message: 256 * 1024,
        max_frame: 256 * 1024,
        write_buffer: 32 * 1024,
        read_buffer: 16 * 1024,
    }
}

/// The client: tungstenite's own handshake, offering two protocols in priority order.
fn connect(addr: SocketAddr) -> tungstenite::WebSocket<TcpStream> {
    let url = format!("ws://{addr}/v1/state/applications/a/service-instances/s-1/exec-interactive");
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v2.unknown.supd, v1.exec-interactive.supd".parse().unwrap(),
    );
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let (ws, response) = tungstenite::client(request, stream).unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(
        response.headers()["Sec-WebSocket-Protocol"],
        protocol::EXEC_INTERACTIVE
    );
    assert_eq!(response.headers()["Deprecation"], "true");
    ws
}

/// The server side of the upgrade, as the HTTP layer will do it: read the head, check it,
/// answer 101, and keep what came after the head.
fn accept(listener: &TcpListener) -> (mio::net::TcpStream, Vec<u8>) {
    let (mut stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = Vec::new();
    let head_len = loop {
        let mut chunk = [0; 1024];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "client went away during the handshake");
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(len) = request.parse(&buf).unwrap() {
            break len;
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(&buf).unwrap();
    assert_eq!(request.method, Some("GET"));
    let get = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).unwrap())
    };
    let upgrade = UpgradeHeaders {
        connection: get("Connection"),
        upgrade: get("Upgrade"),
        version: get("Sec-WebSocket-Version"),
        key: get("Sec-WebSocket-Key"),
        protocol: get("Sec-WebSocket-Protocol"),
        origin: get("Origin"),
        host: get("Host"),
    };
    let accepted = handshake::check(&upgrade, SUPPORTED, &[]).unwrap();
    assert_eq!(accepted.protocol, protocol::EXEC_INTERACTIVE);
    let head = handshake::response_head(&accepted, &[("Deprecation", "true")]);
    io::Write::write_all(&mut stream, &head).unwrap();
    stream.set_nonblocking(true).unwrap();
    let leftover = buf[head_len..].to_vec();
    (mio::net::TcpStream::from_std(stream), leftover)
}

/// A server session registered for edge-triggered readiness.
struct Server {
    poll: Poll,
    events: Events,
    session: Session<mio::net::TcpStream>,
    started: Instant,
}

impl Server {
    fn start(listener: &TcpListener, limits: &Limits) -> Server {
        let (stream, leftover) = accept(listener);
        let poll = Poll::new().unwrap();
        let mut session = Session::new(stream, leftover, limits);
        poll.registry()
            .register(
                session.get_mut(),
                WS,
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap();
        Server {
            poll,
            events: Events::with_capacity(8),
            session,
            started: Instant::now(),
        }
    }

    /// Waits for the next readiness event: (readable, writable). A session that waits for an
    /// edge that never comes fails the test instead of being rescued by a timeout.
    fn wait(&mut self) -> (bool, bool) {
        assert!(
            self.started.elapsed() < DEADLINE,
            "too slow: {:?}",
            self.session
        );
        self.poll
            .poll(&mut self.events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(
            !self.events.is_empty(),
            "stalled waiting for an event: {:?}",
            self.session
        );
        let mut ready = (false, false);
        for e in self.events.iter() {
            ready.0 |= e.is_readable() || e.is_read_closed();
            ready.1 |= e.is_writable();
        }
        ready
    }

    /// Flushes as the loop must: at once, and again only after a writable event.
    fn flush_if_needed(&mut self) -> session::Result<()> {
        if self.session.wants_write() {
            self.session.flush()?;
        }
        Ok(())
    }
}

#[test]
fn echo_ping_and_close_from_client() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let client_big = big.clone();
    let client = thread::spawn(move || {
        let mut ws = connect(addr);
        ws.send(Message::binary(b"\x10echo me".to_vec())).unwrap();
        ws.send(Message::binary(b"\x11{\"h\":24,\"w\":80}".to_vec()))
            .unwrap();
        ws.send(Message::binary([&[0x10][..], &client_big].concat()))
            .unwrap();
        ws.send(Message::Ping(b"hi".to_vec().into())).unwrap();
        let mut got = Vec::new();
        let mut pong = false;
        while got.len() < 3 || !pong {
            match ws.read().unwrap() {
                Message::Binary(b) => got.push(b.to_vec()),
                Message::Pong(p) => {
                    assert_eq!(&p[..], b"hi");
                    pong = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        ws.close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        }))
        .unwrap();
        // The server answers the close and then closes the connection.
        loop {
            match ws.read() {
                Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
                Ok(other) => panic!("unexpected {other:?}"),
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => panic!("{e}"),
            }
        }
        got
    });

    let mut server = Server::start(&listener, &limits());
    // The server echoes each client frame back, described.
    let mut outgoing: VecDeque<Vec<u8>> = VecDeque::new();
    let mut closed_by_peer = None;
    let mut readable = true; // the leftover bytes raise no event
    loop {
        if readable {
            while let Some(message) = server.session.read().unwrap() {
                match message {
                    Incoming::Binary(data) => {
                        outgoing.push_back(match protocol::parse_client_frame(&data) {
                            Ok(ClientFrame::Stdin(bytes)) => bytes.to_vec(),
                            Ok(ClientFrame::Resize { rows, cols }) => {
                                format!("{rows}x{cols}").into_bytes()
                            }
                            other => panic!("unexpected {other:?}"),
                        })
                    }
                    Incoming::Closed { code, reason } => closed_by_peer = Some((code, reason)),
                    Incoming::Text(t) => panic!("unexpected text {t}"),
                }
            }
        }
        while server.session.can_send() {
            let Some(data) = outgoing.pop_front() else {
                break;
            };
            assert!(server.session.send_binary(&data).unwrap());
        }
        server.flush_if_needed().unwrap();
        if server.session.is_closed() {
            break;
        }
        (readable, _) = server.wait();
    }
    assert_eq!(closed_by_peer, Some((1000, "done".to_owned())));
    assert!(outgoing.is_empty());
    // The loop drops a closed session; the client sees the connection end.
    drop(server);
    let got = client.join().unwrap();
    assert_eq!(got, vec![b"echo me".to_vec(), b"24x80".to_vec(), big]);
}

#[test]
fn backpressure_then_close_with_exit_status() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    const MESSAGES: u32 = 2000;
    const SIZE: usize = 16 * 1024;
    let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
    let client = thread::spawn(move || {
        let mut ws = connect(addr);
        // Do not read until the server has hit its limit.
        wait_for_go.recv().unwrap();
        let mut next = 0u32;
        loop {
            match ws.read() {
                Ok(Message::Binary(b)) => {
                    assert_eq!(b.len(), SIZE);
                    assert_eq!(
                        &b[..4],
                        &next.to_be_bytes(),
                        "lost, duplicated or reordered"
                    );
                    next += 1;
                }
                Ok(Message::Close(Some(frame))) => {
                    assert_eq!(frame.code, CloseCode::Normal);
                    assert_eq!(frame.reason.as_str(), protocol::exit_reason_code(7));
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => panic!("{e}"),
            }
        }
        next
    });

    let mut server = Server::start(&listener, &limits());
    let mut next = 0u32;
    let mut refused = 0;
    let mut go = Some(go);
    loop {
        // The "source": numbered messages, read only while the session takes them.
        while next < MESSAGES && server.session.can_send() {
            let mut data = vec![0xa5; SIZE];
            data[..4].copy_from_slice(&next.to_be_bytes());
            if server.session.send_binary(&data).unwrap() {
                next += 1;
            } else {
                refused += 1;
                break;
            }
        }
        if !server.session.can_send() && next < MESSAGES {
            // Over the soft limit: the loop would stop reading the PTY here.
            assert!(server.session.pending() >= limits().write_buffer);
            assert!(server.session.pending() <= limits().write_buffer + SIZE + 14);
            if let Some(go) = go.take() {
                go.send(()).unwrap();
            }
        }
        if next == MESSAGES {
            server
                .session
                .close(1000, &protocol::exit_reason_code(7))
                .unwrap();
        }
        server.flush_if_needed().unwrap();
        while let Some(message) = server.session.read().unwrap() {
            assert!(
                matches!(message, Incoming::Closed { code: 1000, .. }),
                "{message:?}"
            );
        }
        if server.session.is_closed() {
            break;
        }
        // The flush may have made room: the source is read again without waiting for an
        // event, since no new edge will come for data already there.
        if next < MESSAGES && server.session.can_send() {
            continue;
        }
        server.wait();
    }
    drop(server);
    assert_eq!(refused, 0, "can_send() said yes but send_binary refused");
    assert!(go.is_none(), "the client never fell behind: raise MESSAGES");
    assert_eq!(client.join().unwrap(), MESSAGES);
}

#[test]
fn oversize_message_from_client_is_closed_with_1009() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = thread::spawn(move || {
        let mut ws = connect(addr);
        // Small enough for the socket buffers: the send completes before the server, having
        // refused it, closes the connection.
        ws.send(Message::binary(vec![0x10; 4096])).unwrap();
        match ws.read() {
            Ok(Message::Close(Some(frame))) => frame.code,
            other => panic!("expected a close frame, got {other:?}"),
        }
    });
    let small = Limits {
        max_message: 1024,
        max_frame: 1024,
        ..limits()
    };
    let mut server = Server::start(&listener, &small);
    let err = loop {
        match server.session.read() {
            Ok(None) => {}
            Ok(Some(m)) => panic!("unexpected {m:?}"),
            Err(e) => break e,
        }
        server.wait();
    };
    assert!(
        matches!(
            err,
            session::Error::Protocol {
                close_code: 1009,
                ..
            }
        ),
        "{err}"
    );
    while !server.session.is_closed() {
        server.flush_if_needed().unwrap();
        if !server.session.is_closed() {
            server.wait();
        }
    }
    drop(server);
    assert_eq!(client.join().unwrap(), CloseCode::Size);
}
