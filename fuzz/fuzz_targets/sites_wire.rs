//! What a peer site sends back and what the configuration names a peer with
//! (src/sites/): `wire::parse_head` + `wire::framing` + `wire::client_head` +
//! `wire::upgrade_head`, `frames::FrameTracker`, `url::parse`, `wire::strip_site`.
//!
//! Input: a selector byte, then the bytes for that parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supd::testing::http::query::Query;
use supd::testing::http::request::Method;
use supd::testing::sites::frames::FrameTracker;
use supd::testing::sites::{url, wire};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, data)) = data.split_first() else {
        return;
    };
    match sel % 4 {
        0 => {
            // A response head: the head relayed to the client is itself a head with the same
            // status, and never larger than the peer's plus what supd adds.
            let Ok(Some(head)) = wire::parse_head(data) else {
                return;
            };
            if let Ok(framing) = wire::framing(&head, Method::Get) {
                let out = wire::client_head(&head, framing, data.len() % 2 == 0, data.len() % 3 != 0);
                let again = wire::parse_head(&out)
                    .expect("relayed head parses")
                    .expect("relayed head complete");
                assert_eq!(again.status, head.status);
                assert_eq!(again.len, out.len());
            }
            let _ = wire::upgrade_head(&head, "dGhlIHNhbXBsZSBub25jZQ==");
        }
        1 => {
            // Frames fed in pieces (sizes from the data) find the same boundaries as at once.
            let mut whole = FrameTracker::default();
            whole.feed(data);
            let mut pieces = FrameTracker::default();
            let mut rest = data;
            let mut i = 0;
            while !rest.is_empty() {
                let n = (usize::from(data[i % data.len()]) % 17 + 1).min(rest.len());
                pieces.feed(&rest[..n]);
                rest = &rest[n..];
                i += 1;
            }
            assert_eq!(whole.partial(), pieces.partial());
            assert_eq!(whole.close_seen, pieces.close_seen);
            assert!(whole.partial() <= data.len() as u64);
        }
        2 => {
            let Ok(s) = std::str::from_utf8(data) else {
                return;
            };
            if let Ok(u) = url::parse(s) {
                assert_eq!(url::parse(&u.to_string()), Ok(u));
            }
        }
        _ => {
            // Without `site`, the query means what it meant, minus `site`.
            let Ok(raw) = std::str::from_utf8(data) else {
                return;
            };
            let Ok(before) = Query::parse(raw) else {
                return;
            };
            let stripped = wire::strip_site(raw);
            let after = Query::parse(&stripped).expect("still parses");
            let kept: Vec<_> = before.iter().filter(|(n, _)| *n != "site").collect();
            assert_eq!(after.iter().collect::<Vec<_>>(), kept);
        }
    }
});
