//! A small HTTP/1.1 and websocket client over raw sockets, the same for supd and its peers, so
//! the client's own cost is small and equal on both sides of a comparison.

use std::io::{self, Read, Write};

pub type Result<T> = std::result::Result<T, String>;

fn io_err(what: &str, e: io::Error) -> String {
    format!("{what}: {e}")
}

/// One HTTP/1.1 connection (TCP or unix), kept alive across requests.
pub struct Http<S> {
    pub stream: S,
    buf: Vec<u8>,
    start: usize,
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl<S: Read + Write> Http<S> {
    pub fn new(stream: S) -> Http<S> {
        Http {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    /// Send one request; `head` is the request line and headers without the final blank line.
    pub fn send(&mut self, head: &str, body: &[u8]) -> Result<()> {
        let mut req = Vec::with_capacity(head.len() + body.len() + 64);
        req.extend_from_slice(head.as_bytes());
        if !body.is_empty() {
            req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        self.stream
            .write_all(&req)
            .map_err(|e| io_err("write request", e))
    }

    pub fn request(&mut self, head: &str, body: &[u8]) -> Result<Response> {
        self.send(head, body)?;
        self.read_response()
    }

    fn fill(&mut self) -> Result<bool> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + 64 * 1024, 0);
        match self.stream.read(&mut self.buf[len..]) {
            Ok(n) => {
                self.buf.truncate(len + n);
                Ok(n > 0)
            }
            Err(e) => {
                self.buf.truncate(len);
                Err(io_err("read response", e))
            }
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The head of a response: status and the raw header block (consumed from the buffer).
    pub fn read_head(&mut self) -> Result<(u16, String)> {
        loop {
            if let Some(end) = find(self.pending(), b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.pending()[..end]).into_owned();
                self.start += end + 4;
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad status line in {head:?}"))?;
                return Ok((status, head));
            }
            if !self.fill()? {
                return Err("connection closed before a response head".into());
            }
        }
    }

    /// Bytes read past the head (the start of a websocket stream after a 101).
    pub fn take_rest(&mut self) -> Vec<u8> {
        let rest = self.pending().to_vec();
        self.buf.clear();
        self.start = 0;
        rest
    }

    pub fn read_response(&mut self) -> Result<Response> {
        let (status, head) = self.read_head()?;
        let lower = head.to_ascii_lowercase();
        let header = |name: &str| {
            lower
                .split("\r\n")
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let mut body = Vec::new();
        if let Some(len) = header("content-length:") {
            let len: usize = len.parse().map_err(|_| "bad content-length")?;
            while self.pending().len() < len {
                if !self.fill()? {
                    return Err("connection closed inside a body".into());
                }
            }
            body.extend_from_slice(&self.pending()[..len]);
            self.start += len;
        } else if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
            loop {
                let line_end = loop {
                    if let Some(i) = find(self.pending(), b"\r\n") {
                        break i;
                    }
                    if !self.fill()? {
                        return Err("connection closed inside a chunk".into());
                    }
                };
                let size_text = String::from_utf8_lossy(&self.pending()[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| format!("bad chunk size {size_text:?}"))?;
                while self.pending().len() < line_end + 2 + size + 2 {
                    if !self.fill()? {
                        return Err("connection closed inside a chunk".into());
                    }
                }
                let from = line_end + 2;
                body.extend_from_slice(&self.pending()[from..from + size]);
                self.start += from + size + 2;
                if size == 0 {
                    break;
                }
            }
        } else if status != 204 && status != 304 {
            body.extend_from_slice(self.pending());
            self.start = self.buf.len();
            while self.fill()? {
                body.extend_from_slice(self.pending());
                self.start = self.buf.len();
            }
        }
        Ok(Response { status, body })
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A client websocket over any stream: masked frames out, unmasked frames in.
pub struct Ws<S> {
    pub stream: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    mask: u32,
}

/// The upgrade request for `path` with subprotocol `proto` (empty: none).
pub fn upgrade_head(path: &str, token: &str, proto: &str) -> String {
    let mut h = format!(
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    if !token.is_empty() {
        h.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if !proto.is_empty() {
        h.push_str(&format!("Sec-WebSocket-Protocol: {proto}\r\n"));
    }
    h
}

impl<S: Read + Write> Ws<S> {
    /// Send the upgrade and wait for 101.
    pub fn open(stream: S, path: &str, token: &str, proto: &str) -> Result<Ws<S>> {
        let mut http = Http::new(stream);
        http.send(&upgrade_head(path, token, proto), b"")?;
        Ws::finish_upgrade(http)
    }

    /// Read the answer to an upgrade already sent on `http`.
    pub fn finish_upgrade(mut http: Http<S>) -> Result<Ws<S>> {
        let (status, head) = http.read_head()?;
        if status != 101 {
            let body = http.read_response().map(|r| r.body).unwrap_or_default();
            return Err(format!(
                "upgrade answered {status}: {head} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let rest = http.take_rest();
        let mut buf = vec![0u8; 512 * 1024];
        buf[..rest.len()].copy_from_slice(&rest);
        Ok(Ws {
            stream: http.stream,
            buf,
            start: 0,
            end: rest.len(),
            out: Vec::with_capacity(128 * 1024),
            mask: 0x9e37_79b9,
        })
    }

    pub fn send(&mut self, opcode: u8, data: &[u8]) -> Result<()> {
        self.out.clear();
        self.out.push(0x80 | opcode);
        let len = data.len();
        if len < 126 {
            self.out.push(0x80 | len as u8);
        } else if len <= 0xffff {
            self.out.push(0x80 | 126);
            self.out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            self.out.push(0x80 | 127);
            self.out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.mask = self
            .mask
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let key = self.mask.to_be_bytes();
        self.out.extend_from_slice(&key);
        let at = self.out.len();
        self.out.extend_from_slice(data);
        mask(&mut self.out[at..], key);
        self.stream
            .write_all(&self.out)
            .map_err(|e| io_err("write frame", e))
    }

    fn fill(&mut self) -> Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        match self.stream.read(&mut self.buf[self.end..]) {
            Ok(n) => {
                self.end += n;
                Ok(n > 0)
            }
            Err(e) => Err(io_err("read frame", e)),
        }
    }

    /// Answer the server's close and read until it ends the connection.
    /// (A server that has closed already, or resets, has ended it too.)
    pub fn close_and_drain(&mut self) {
        let _ = self.send(OP_CLOSE, &[]);
        while let Ok(true) = self.fill() {
            self.start = self.end;
        }
    }

    /// The next data frame's payload, given to `f`; pings are answered. Ok(false) on close.
    pub fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> Result<bool> {
        loop {
            let avail = &self.buf[self.start..self.end];
            if avail.len() >= 2 {
                let opcode = avail[0] & 0x0f;
                let (len, hdr) = match avail[1] & 0x7f {
                    126 if avail.len() >= 4 => {
                        (u16::from_be_bytes([avail[2], avail[3]]) as usize, 4)
                    }
                    127 if avail.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&avail[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX {
                    if hdr + len > self.buf.len() {
                        return Err(format!("frame of {len} bytes is larger than the buffer"));
                    }
                    if avail.len() >= hdr + len {
                        let from = self.start + hdr;
                        self.start = from + len;
                        match opcode {
                            OP_CLOSE => return Ok(false),
                            OP_PING => {
                                let p = self.buf[from..from + len].to_vec();
                                self.send(OP_PONG, &p)?;
                            }
                            OP_PONG => {}
                            _ => f(&self.buf[from..from + len]),
                        }
                        return Ok(true);
                    }
                }
            }
            if !self.fill()? {
                return Ok(false);
            }
        }
    }
}

/// XOR `data` with the repeated 4-byte `key`, eight bytes at a time: a byte-wise loop made
/// the bench's own client the bottleneck of websocket uploads (it is not what is measured).
fn mask(data: &mut [u8], key: [u8; 4]) {
    let mut k8 = [0u8; 8];
    k8[..4].copy_from_slice(&key);
    k8[4..].copy_from_slice(&key);
    let k = u64::from_ne_bytes(k8);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let w = u64::from_ne_bytes((&*c).try_into().unwrap_or([0; 8])) ^ k;
        c.copy_from_slice(&w.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// A byte stream the tunnel measures run over: raw TCP, or a websocket tunnel to the same place.
pub trait Pipe {
    fn put(&mut self, data: &[u8]) -> Result<()>;
    /// Read what is available (at least one byte) and return how many bytes; 0 at the end.
    fn get(&mut self, f: &mut dyn FnMut(&[u8])) -> Result<usize>;
}

impl Pipe for std::net::TcpStream {
    fn put(&mut self, data: &[u8]) -> Result<()> {
        self.write_all(data).map_err(|e| io_err("write", e))
    }
    fn get(&mut self, f: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let mut buf = [0u8; 256 * 1024];
        let n = self.read(&mut buf).map_err(|e| io_err("read", e))?;
        f(&buf[..n]);
        Ok(n)
    }
}

impl<S: Read + Write> Pipe for Ws<S> {
    fn put(&mut self, data: &[u8]) -> Result<()> {
        self.send(OP_BINARY, data)
    }
    fn get(&mut self, f: &mut dyn FnMut(&[u8])) -> Result<usize> {
        loop {
            let mut n = 0;
            if !self.recv(&mut |b| {
                n = b.len();
                f(b)
            })? {
                return Ok(0);
            }
            if n > 0 {
                return Ok(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mask_matches_the_bytewise_xor() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 1000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut fast = data.clone();
            super::mask(&mut fast, key);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i & 3])
                .collect();
            assert_eq!(fast, slow, "length {len}");
        }
    }
}
