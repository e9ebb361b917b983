//! Websocket upgrade header validation (src/ws/handshake.rs) and the 101 head built from it.
//!
//! Input: a presence mask byte, then up to eight '\n'-separated values: Connection, Upgrade,
//! Sec-WebSocket-Version, Sec-WebSocket-Key, Sec-WebSocket-Protocol, Origin, Host, and one
//! extra response header as `name:value`. The same headers in a request go through the
//! websocket endpoints' decoder check (`ops::decode::upgrade`), which must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supd::testing::config::Config;
use supd::testing::http::request::{Method, Request};
use supd::testing::http::response::Accept;
use supd::testing::ops::{DecodeCtx, DecodeError, decode};
use supd::testing::ws::handshake::{self, UpgradeHeaders};
use supd::testing::ws::protocol;

fuzz_target!(|data: &[u8]| {
    let Some((&mask, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut values = text.split('\n');
    let mut slot = |bit: u8| {
        let v = values.next();
        if mask & (1 << bit) != 0 { v } else { None }
    };
    let h = UpgradeHeaders {
        connection: slot(0),
        upgrade: slot(1),
        version: slot(2),
        key: slot(3),
        protocol: slot(4),
        origin: slot(5),
        host: slot(6),
    };
    let extra = slot(7).map(|e| e.split_once(':').unwrap_or((e, "")));
    let allowed = vec!["https://console.example".to_owned(), String::new()];
    let lists: [&[&'static str]; 3] = [
        &[protocol::EXEC_INTERACTIVE],
        &[protocol::CONNECT, protocol::TCP_CONNECT],
        &[],
    ];
    let names = [
        "connection",
        "upgrade",
        "sec-websocket-version",
        "sec-websocket-key",
        "sec-websocket-protocol",
        "origin",
        "host",
    ];
    let values = [
        h.connection,
        h.upgrade,
        h.version,
        h.key,
        h.protocol,
        h.origin,
        h.host,
    ];
    let req = Request {
        method: Method::Get,
        path: "/".to_owned(),
        query: String::new(),
        minor: 1,
        headers: names
            .iter()
            .zip(values)
            .filter_map(|(n, v)| Some((n.to_string(), v?.to_string())))
            .collect(),
        body: Vec::new(),
        keep_alive: true,
        expect_continue: false,
    };
    let mut cfg = Config::default();
    cfg.ws.allowed_origins = allowed.clone();
    let ctx = DecodeCtx::new(&cfg, Accept::default());
    for supported in lists {
        let checked = handshake::check(&h, supported, &allowed);
        let decoded = decode::upgrade(&req, supported, &ctx);
        match (&checked, decoded) {
            (Ok(a), Ok(b)) => assert_eq!(*a, b),
            (Err(a), Err(DecodeError::Handshake(b))) => assert_eq!(*a, b),
            (c, d) => panic!("handshake {c:?} but decoder {d:?}"),
        }
        let Ok(accepted) = checked else {
            continue;
        };
        let key = h.key.expect("accepted without a key").trim();
        assert_eq!(accepted.accept, handshake::accept_key(key));
        assert!(supported.contains(&accepted.protocol));
        let offered = h
            .protocol
            .is_some_and(|p| p.split(',').any(|t| !t.trim().is_empty()));
        assert_eq!(accepted.echo_protocol, offered);
        // The head is whole lines: no value may split it or end it early.
        let head = handshake::response_head(&accepted, extra.as_slice());
        let head = String::from_utf8(head).expect("head is UTF-8");
        let body = head
            .strip_suffix("\r\n\r\n")
            .expect("head ends with an empty line");
        for line in body.split("\r\n") {
            assert!(!line.is_empty(), "empty line inside the head");
            assert!(!line.contains(['\r', '\n']), "bare CR or LF in {line:?}");
        }
    }
});
