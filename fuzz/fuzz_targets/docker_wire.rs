//! What supd reads from the Docker engine: the HTTP response parser with chunked decoding
//! (src/docker/wire.rs) fed in arbitrary pieces and compared with the same bytes fed at once,
//! the events LineSplitter over its body, each line through the events parser
//! (src/docker/events.rs), and the whole body through the inspect and list parsers
//! (src/docker/inspect.rs). Also: every request supd builds for Docker is one well-framed
//! request, whatever the path holds.
//!
//! Input: byte 0 = how many of the next bytes are piece lengths (0-8); the rest is the reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supd::testing::docker::wire::{self, Event, Line, LineSplitter, ResponseParser};
use supd::testing::docker::{events, inspect};
use supd::testing::http::request::Parser;

/// Small enough that the fuzzer reaches it; supd's is 1 MiB.
const MAX_LINE: usize = 512;

#[derive(Debug, PartialEq, Default)]
struct Outcome {
    heads: Vec<(u16, Option<String>)>,
    body: Vec<u8>,
    ended: bool,
    failed: bool,
    lines: Vec<Line>,
}

fn feed<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut parser = ResponseParser::new();
    let mut splitter = LineSplitter::new(MAX_LINE);
    let mut out = Outcome::default();
    let mut take = |events: Vec<Event>, out: &mut Outcome| {
        for event in events {
            assert!(!out.ended, "an event after End");
            match event {
                Event::Head {
                    status,
                    content_type,
                } => {
                    assert!(out.body.is_empty(), "a head after body bytes");
                    out.heads.push((status, content_type));
                }
                Event::Body(bytes) => {
                    assert!(!out.heads.is_empty(), "body before the head");
                    assert!(!bytes.is_empty(), "an empty Body event");
                    out.body.extend_from_slice(&bytes);
                    out.lines.extend(splitter.push(&bytes));
                }
                Event::End => out.ended = true,
            }
        }
    };
    for piece in pieces {
        match parser.feed(piece) {
            Ok(events) => take(events, &mut out),
            Err(_) => {
                out.failed = true;
                assert!(
                    parser.feed(b"x").is_err(),
                    "parser works again after an error"
                );
                return out;
            }
        }
    }
    match parser.eof() {
        Ok(events) => take(events, &mut out),
        Err(_) => out.failed = true,
    }
    assert_eq!(parser.is_done(), out.ended && !out.failed);
    for line in &out.lines {
        let (Line::Whole(l) | Line::Cut(l)) = line;
        assert!(l.len() <= MAX_LINE && !l.contains(&b'\n'));
        if let Line::Whole(l) = line {
            assert!(!l.is_empty());
        }
    }
    out
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

/// A request supd builds for Docker, with a hostile path, is exactly one request to supd's
/// own (strict) parser, with the body given.
fn request_round_trip(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let path = format!("/v1.43/containers/{path}");
    let body = data.get(..data.len() / 2);
    let bytes = wire::request("POST", &path, body, true);
    let mut parser = Parser::new(usize::MAX, usize::MAX);
    let mut parsed = parser
        .parse(&bytes)
        .expect("supd's own request does not parse");
    let mut consumed = parsed.consumed;
    if let Some(head) = parsed.head.take() {
        parser
            .continue_body(head, usize::MAX)
            .expect("the body is refused");
        parsed = parser
            .parse(&bytes[consumed..])
            .expect("supd's own request body does not parse");
        consumed += parsed.consumed;
    }
    assert_eq!(
        consumed,
        bytes.len(),
        "the request is not exactly one request"
    );
    let req = parsed.request.expect("the request is incomplete");
    assert_eq!(req.body.as_slice(), body.unwrap_or_default());
    assert_eq!(req.header("host"), Some("docker"));
    assert!(!req.keep_alive);
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = (n as usize % 9).min(rest.len());
    let lens: Vec<usize> = rest[..n].iter().map(|&b| b as usize % 64 + 1).collect();
    let reply = &rest[n..];

    // The raw input too: the reply's body may be the whole input.
    let _ = inspect::parse(reply);
    let _ = events::parse(reply);
    request_round_trip(reply);

    let split = feed(pieces(&lens, reply));
    let whole = feed(pieces(&[], reply));
    // `feed` returns the error alone, not the events its bytes completed before it (the
    // connection is dropped then): after a failure only the failure and prefixes compare.
    if split.failed || whole.failed {
        assert_eq!(
            split.failed, whole.failed,
            "only one of split and whole failed"
        );
        let common = split.body.len().min(whole.body.len());
        assert_eq!(
            split.body[..common],
            whole.body[..common],
            "bodies disagree"
        );
        return;
    }
    // Lines, cut ones included, do not depend on how the bytes were split.
    assert_eq!(split, whole, "split and whole reply disagree");

    for line in &whole.lines {
        match line {
            Line::Whole(line) => {
                if let Ok(Some(event)) = events::parse(line) {
                    let _ = events::is_relevant(&event.action);
                }
            }
            Line::Cut(start) => {
                if let Some((id, action)) = events::parse_cut(start) {
                    assert_eq!(id.len(), 64);
                    let _ = events::is_relevant(&action);
                }
            }
        }
    }
    let _ = events::parse(&whole.body);
    if let Ok(Some(record)) = inspect::parse(&whole.body) {
        let _ = format!("{record:?}");
    }
    let _ = inspect::list_entry_ids(&whole.body);
});
