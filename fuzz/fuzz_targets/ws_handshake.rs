//! Websocket upgrade header validation (src/ws/handshake.rs) and the 101 head built from it.
//!
//! Input: a presence mask byte, then up to eight '\n'-separated values: Connection, Upgrade,
//! Sec-WebSocket-Version, Sec-WebSocket-Key, Sec-WebSocket-Protocol, Origin, Host, and one
//! extra response header as `name:value`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supd::ws::handshake::{self, UpgradeHeaders};
use supd::ws::protocol;

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
    for supported in lists {
        let Ok(accepted) = handshake::check(&h, supported, &allowed) else {
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
