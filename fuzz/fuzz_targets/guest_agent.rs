//! What supd reads from a VM's guest agent, which the guest controls (src/vm/qga.rs): the
//! line splitter fed in arbitrary pieces (with syncs in between) and compared with the same
//! bytes fed at once, every line through the answer parser, every answer through the
//! exec-status, pid, version and address readers, and every cut line through the reader of an
//! over-long exec status. Nothing panics; outputs stay within their caps.
//!
//! Input: byte 0 = how many of the next bytes are piece lengths (0-8); byte 1 = the output
//! cap; the rest is what the agent sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supd::testing::vm::qga::{self, Answer, Decoder, Line};

/// Small enough that the fuzzer reaches it.
const MAX_LINE: usize = 256;

fn feed<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> Vec<Line> {
    let mut d = Decoder::new(MAX_LINE);
    let mut lines = Vec::new();
    for p in pieces {
        lines.extend(d.push(p));
    }
    lines
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = (data[0] as usize % 9).min(data.len() - 2);
    let cap = data[1] as usize;
    let lens = &data[2..2 + n];
    let body = &data[2 + n..];
    let whole = feed(std::iter::once(body));
    let mut pieces = Vec::new();
    let mut rest = body;
    for &l in lens {
        let l = (l as usize).min(rest.len());
        pieces.push(&rest[..l]);
        rest = &rest[l..];
    }
    pieces.push(rest);
    assert_eq!(feed(pieces.into_iter()), whole, "pieces change the lines");
    // After a sync, nothing before a 0xFF is a line.
    let mut d = Decoder::new(MAX_LINE);
    d.expect_delimiter();
    let synced = d.push(body);
    if !body.contains(&0xFF) {
        assert!(synced.is_empty());
    }
    for line in whole.iter().chain(synced.iter()) {
        match line {
            Line::Whole(l) => {
                assert!(l.len() <= MAX_LINE);
                if let Some(Answer::Return(v)) = qga::parse_answer(l) {
                    if let Some(s) = qga::exec_status(&v, cap) {
                        assert!(s.output.len() <= cap);
                    }
                    let _ = qga::exec_pid(&v);
                    let _ = qga::sync_id(&v);
                    let _ = qga::version(&v);
                    assert!(qga::guest_ips(&v).len() <= qga::MAX_IPS);
                }
            }
            Line::Cut(l) => {
                assert!(l.len() <= MAX_LINE);
                if let Some(s) = qga::exec_status_from_prefix(l, cap) {
                    assert!(s.output.len() <= cap);
                    assert!(s.truncated);
                }
            }
        }
    }
});
