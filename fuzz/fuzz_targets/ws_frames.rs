//! Websocket sessions on arbitrary client bytes: the frame reading path of src/ws/session.rs
//! over an in-memory stream that delivers the bytes in pieces (and takes writes in pieces),
//! and the interactive client frames of src/ws/protocol.rs carried in its binary messages.
//! The session must never panic and must always make progress.
//!
//! Input: byte 0 = how many of the next bytes are read-piece lengths (0-8), byte 1 = how many
//! bytes the socket takes per write (0: unlimited), byte 2 = how many input bytes arrive with
//! the upgrade request (the session's `leftover`); the rest is what the client sends.
#![no_main]

use std::io::{self, Read, Write};

use libfuzzer_sys::fuzz_target;
use supd::testing::ws::protocol::{self, ClientFrame, MAX_TERMINAL_SIDE};
use supd::testing::ws::session::{Error, Incoming, Limits, Session};

struct Stream<'a> {
    data: &'a [u8],
    pos: usize,
    lens: Vec<usize>,
    piece: usize,
    /// Bytes of the current piece still to be read; a piece ends with one `WouldBlock`.
    left: usize,
    write_chunk: usize,
    written: usize,
}

impl Stream<'_> {
    fn exhausted(&self) -> bool {
        self.pos == self.data.len()
    }
}

impl Read for Stream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.exhausted() {
            return Ok(0);
        }
        if self.left == 0 {
            self.left = if self.lens.is_empty() {
                self.data.len()
            } else {
                self.lens[self.piece % self.lens.len()]
            };
            self.piece += 1;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.left).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        self.left -= n;
        Ok(n)
    }
}

impl Write for Stream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.write_chunk);
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the interactive operation does with one binary message.
fn handle(session: &mut Session<Stream<'_>>, data: &[u8]) {
    match protocol::parse_client_frame(data) {
        Ok(ClientFrame::Stdin(bytes)) => {
            assert_eq!(bytes.len() + 1, data.len());
            // Echo it, as the PTY would.
            let _ = session.send_binary(bytes);
        }
        Ok(ClientFrame::Resize { rows, cols }) => {
            assert!((1..=MAX_TERMINAL_SIDE).contains(&rows));
            assert!((1..=MAX_TERMINAL_SIDE).contains(&cols));
        }
        Ok(ClientFrame::CloseStdin) => assert_eq!(data.len(), 1),
        Err(e) => {
            let _ = session.close(protocol::CLOSE_UNSUPPORTED, &e.to_string());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [n, write_chunk, leftover, rest @ ..] = data else {
        return;
    };
    let n = (*n as usize % 9).min(rest.len());
    let lens = rest[..n].iter().map(|&b| b as usize % 64 + 1).collect();
    let rest = &rest[n..];
    let (leftover, input) = rest.split_at((*leftover as usize).min(rest.len()));
    let stream = Stream {
        data: input,
        pos: 0,
        lens,
        piece: 0,
        left: 0,
        write_chunk: if *write_chunk == 0 {
            usize::MAX
        } else {
            *write_chunk as usize
        },
        written: 0,
    };
    // Small limits, so that the fuzzer reaches them.
    let limits = Limits {
        max_message: 512,
        max_frame: 256,
        write_buffer: 1024,
        read_buffer: 1024,
    };
    let mut session = Session::new(stream, leftover.to_vec(), &limits);
    // Each round reads a message (at least two bytes) or ends a piece: more rounds than that
    // means the session spins.
    let bound = 4 * data.len() + 64;
    for round in 0.. {
        assert!(round < bound, "the session makes no progress");
        let done_reading = match session.read() {
            Ok(Some(Incoming::Binary(b))) => {
                assert!(b.len() <= limits.max_message);
                handle(&mut session, &b);
                false
            }
            Ok(Some(Incoming::Text(t))) => {
                assert!(t.len() <= limits.max_message);
                let _ = session.close(protocol::CLOSE_UNSUPPORTED, "text frames are not used");
                false
            }
            Ok(Some(Incoming::Closed { reason, .. })) => {
                assert!(reason.len() <= 123);
                false
            }
            Ok(None) => session.get_ref().exhausted(),
            Err(Error::Protocol { .. }) => {
                let _ = session.flush();
                break;
            }
            Err(_) => break,
        };
        if round % 7 == 3 {
            let _ = session.ping();
        }
        if session.wants_write() && session.flush().is_err() {
            break;
        }
        if session.is_closed() || done_reading {
            break;
        }
    }
    assert!(
        session.pending() <= 1024 + 512 + 10 + 8 * 1024,
        "outbox over its hard limit"
    );
});
