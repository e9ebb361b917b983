//! Where the websocket frames from a peer begin and end, without decoding them: the relay
//! passes bytes on verbatim, and needs the boundaries only to end the client's stream with a
//! well-formed close frame when the peer vanishes.

/// An incremental reader of frame headers (RFC 6455 5.2) that skips payloads.
#[derive(Debug, Default, Clone)]
pub struct FrameTracker {
    /// Header bytes of the current frame so far (at most 14).
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come, once its header is whole.
    remaining: u64,
    in_payload: bool,
    /// Bytes since the last frame boundary.
    partial: u64,
    /// The peer sent a close frame.
    pub close_seen: bool,
}

impl FrameTracker {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.in_payload {
                let take = self.remaining.min(data.len() as u64);
                self.remaining -= take;
                self.partial += take;
                data = &data[take as usize..];
                if self.remaining == 0 {
                    self.end_frame();
                }
                continue;
            }
            self.header.push(data[0]);
            self.partial += 1;
            data = &data[1..];
            if let Some(len) = self.header_done() {
                if self.header[0] & 0x0f == 0x8 {
                    self.close_seen = true;
                }
                self.header.clear();
                self.remaining = len;
                if len == 0 {
                    self.end_frame();
                } else {
                    self.in_payload = true;
                }
            }
        }
    }

    /// The payload length, once the header is complete.
    fn header_done(&self) -> Option<u64> {
        let h = &self.header;
        if h.len() < 2 {
            return None;
        }
        let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
        let (ext, len) = match h[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        if h.len() < 2 + ext + mask {
            return None;
        }
        Some(len.unwrap_or_else(|| {
            h[2..2 + ext]
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        }))
    }

    fn end_frame(&mut self) {
        self.in_payload = false;
        self.partial = 0;
    }

    /// Bytes fed since the last complete frame (0: at a boundary).
    pub fn partial(&self) -> u64 {
        self.partial
    }
}

/// An unmasked (server to client) close frame.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    // A control frame's payload is at most 125 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut f = vec![0x88, (2 + reason.len()) as u8];
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(reason);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let m = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n <= 0xffff => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn boundaries_in_every_split() {
        let stream = [
            frame(2, b"hello", false),
            frame(2, &[7; 300], true),
            frame(9, b"", false),
            frame(2, &vec![1; 70_000], false),
            frame(1, b"x", true),
        ]
        .concat();
        for cut in [1, 2, 3, 5, 7, 13, 64, 1000, 65_536] {
            let mut t = FrameTracker::default();
            for piece in stream.chunks(cut) {
                t.feed(piece);
            }
            assert_eq!(t.partial(), 0, "cut {cut}");
            assert!(!t.close_seen);
        }
        // Stop inside a header, inside a payload: the partial frame's bytes are counted.
        let first = frame(2, b"hello", false);
        let mut t = FrameTracker::default();
        t.feed(&first);
        t.feed(&stream[first.len()..first.len() + 3]);
        assert_eq!(t.partial(), 3);
        let mut t = FrameTracker::default();
        t.feed(&stream[..first.len() + 20]);
        assert_eq!(t.partial(), 20);
    }

    #[test]
    fn a_close_frame_is_noticed() {
        let mut t = FrameTracker::default();
        t.feed(&close_frame(1000, "bye"));
        assert!(t.close_seen);
        assert_eq!(t.partial(), 0);
    }

    #[test]
    fn close_frames_stay_control_sized() {
        let f = close_frame(1011, &"é".repeat(200));
        assert!(f.len() <= 127);
        assert_eq!(usize::from(f[1]), f.len() - 2);
        assert_eq!(&f[2..4], &1011u16.to_be_bytes());
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
