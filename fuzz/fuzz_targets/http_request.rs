//! The incremental HTTP request parser, fed as a socket would deliver the bytes: in arbitrary
//! pieces, several requests pipelined, with the default limits. The same bytes fed at once
//! must give the same requests and the same error (a differential check for split bugs).
//! Each request then goes through what the server does with it before any Docker call:
//! routing, query string, content negotiation, bearer token, the endpoint's decoder
//! (`ops::decode`), and the body and upgrade decoders on their own.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use supd::testing::auth;
use supd::testing::config::{Config, Limits};
use supd::testing::fields::Fields;
use supd::testing::http::query::{self, Query};
use supd::testing::http::request::{Error, Parser, Request};
use supd::testing::http::response::{Accept, DOCUMENT, EXEC_OUTPUT};
use supd::testing::http::router::route;
use supd::testing::ops::{self, DecodeCtx};
use supd::testing::ws::protocol;

/// Everything one feeding produced: the requests (as Debug text, since Request has no Eq),
/// how many heads asked for 100-continue, and the error that ended it, if any.
#[derive(Debug, PartialEq)]
struct Outcome {
    requests: Vec<String>,
    continues: usize,
    error: Option<Error>,
}

/// Feeds `pieces` the way `server::conn` does: append to a buffer, parse until nothing more
/// is consumed, drop what was consumed.
fn feed<'a>(
    pieces: impl Iterator<Item = &'a [u8]>,
    total: usize,
    out: &mut Vec<Request>,
) -> Outcome {
    let limits = Limits::default();
    let mut parser = Parser::new(limits.head_bytes, limits.body_bytes);
    let mut buf = Vec::new();
    let mut outcome = Outcome {
        requests: Vec::new(),
        continues: 0,
        error: None,
    };
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match parser.parse(&buf) {
                Err(e) => {
                    outcome.error = Some(e);
                    return outcome;
                }
                Ok(p) => {
                    assert!(p.consumed <= buf.len(), "consumed more than given");
                    buf.drain(..p.consumed);
                    if let Some(head) = p.head {
                        if head.expect_continue {
                            outcome.continues += 1;
                        }
                        if let Err(e) = parser.continue_body(head, limits.body_bytes) {
                            outcome.error = Some(e);
                            return outcome;
                        }
                        continue;
                    }
                    if let Some(req) = p.request {
                        assert!(req.body.len() <= limits.body_bytes, "body over the limit");
                        // Every request takes at least one byte of input: more requests than
                        // bytes means the parser returns one without consuming anything.
                        assert!(outcome.requests.len() < total, "request out of nothing");
                        outcome.requests.push(format!("{req:?}"));
                        out.push(req);
                        continue;
                    }
                    if p.consumed == 0 || buf.is_empty() {
                        break;
                    }
                }
            }
        }
    }
    outcome
}

/// The first byte says how many of the next bytes are piece lengths (0-8); the pieces cycle
/// through those lengths (1-64 bytes each) over the rest of the input.
fn split(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let n = (n as usize % 9).min(rest.len());
    let lens = rest[..n].iter().map(|&b| b as usize % 64 + 1).collect();
    (lens, &rest[n..])
}

fn pieces<'a>(lens: &'a [usize], mut data: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut i = 0;
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let len = if lens.is_empty() {
            data.len()
        } else {
            lens[i % lens.len()].min(data.len())
        };
        i += 1;
        let (piece, rest) = data.split_at(len);
        data = rest;
        Some(piece)
    })
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let mut c = Config::default();
        c.ws.allowed_origins = vec!["https://console.example".to_owned()];
        c
    })
}

/// What the server does with a request before it reaches an operation.
fn dispatch(req: &Request) {
    let _ = route(&req.path);
    for seg in req.path.split('/') {
        let _ = query::decode_path_segment(seg);
    }
    let _ = query::redacted(&req.query, &["token"]);
    if let Ok(q) = Query::parse(&req.query) {
        if let Ok(Some(fields)) = q.single("fields") {
            let _ = Fields::parse(fields);
        }
        let _ = q.single("port");
    }
    // Parsed once, as the server does: every answer to the request picks from it.
    let accept = Accept::parse(req.header("accept"));
    let _ = (accept.pick(DOCUMENT), accept.pick(EXEC_OUTPUT));
    if let Some(value) = req.header("authorization") {
        let _ = auth::bearer_token(value);
    }
    let _ = req.header_has_token("connection", "upgrade");
    let ctx = DecodeCtx::new(config(), accept);
    if let Ok(r) = route(&req.path) {
        let _ = ops::decode(&r, req, &ctx);
    }
    // The body and upgrade decoders, whatever the path says.
    let _ = ops::exec::decode_cmd(req.header("content-type"), &req.body);
    let _ = ops::restart::decode_immediate(&req.body);
    let _ = ops::decode::upgrade(req, &[protocol::EXEC_INTERACTIVE], &ctx);
    let _ = ops::decode::upgrade(req, &[protocol::CONNECT, protocol::TCP_CONNECT], &ctx);
}

fuzz_target!(|data: &[u8]| {
    let (lens, input) = split(data);
    let mut requests = Vec::new();
    let split = feed(pieces(&lens, input), input.len(), &mut requests);
    let whole = feed(pieces(&[], input), input.len(), &mut Vec::new());
    assert_eq!(split, whole, "split and whole input disagree");
    for req in &requests {
        dispatch(req);
    }
});
