//! Websockets: frames written and read by hand (to send what no well-behaved client library
//! would), and tungstenite as a client that is well-behaved.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tungstenite::Message;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;

use super::*;

pub const INTERACTIVE: &str = "v1.exec-interactive.supd";
pub const CONNECT: &str = "v1.connect.supd";
pub const TCP_CONNECT: &str = "v1.tcp-connect.supd";

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xa;

pub type Ws = tungstenite::WebSocket<TcpStream>;

/// One frame; client frames are masked unless `masked` is false (which servers must refuse).
pub fn frame(opcode: u8, fin: bool, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![opcode | if fin { 0x80 } else { 0 }];
    let m = if masked { 0x80 } else { 0 };
    frame_header_len(&mut f, m, payload.len());
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// Only the head of a masked frame that announces `len` payload bytes.
pub fn frame_head(opcode: u8, fin: bool, len: usize) -> Vec<u8> {
    let mut f = vec![opcode | if fin { 0x80 } else { 0 }];
    frame_header_len(&mut f, 0x80, len);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f
}

fn frame_header_len(f: &mut Vec<u8>, m: u8, len: usize) {
    match len {
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
}

/// Reads the server's frames off a raw stream.
pub struct Frames {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Frames {
    pub fn new(stream: TcpStream, leftover: Vec<u8>) -> Frames {
        Frames {
            stream,
            buf: leftover,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next frame (opcode, payload); None at EOF or on a reset.
    pub fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are unmasked");
                let (len, head) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= head + len {
                    let op = self.buf[0] & 0x0f;
                    let payload = self.buf[head..head + len].to_vec();
                    self.buf.drain(..head + len);
                    return Some((op, payload));
                }
            }
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading frames: {e}"),
            }
        }
    }

    /// Skip data, pings and pongs up to the server's close frame: (code, reason).
    pub fn close_frame(&mut self) -> (u16, String) {
        loop {
            match self.next() {
                Some((OP_CLOSE, p)) => {
                    assert!(p.len() >= 2, "close frame without a code");
                    let code = u16::from_be_bytes([p[0], p[1]]);
                    let reason = String::from_utf8(p[2..].to_vec()).expect("UTF-8 reason");
                    return (code, reason);
                }
                Some(_) => {}
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Output of an interactive session (binary frames) until `want` appears.
    pub fn read_until(&mut self, want: &str) -> Vec<u8> {
        let mut out = Vec::new();
        while !String::from_utf8_lossy(&out).contains(want) {
            match self.next() {
                Some((OP_BINARY, p)) => out.extend_from_slice(&p),
                Some((OP_CLOSE, p)) => panic!("closed ({p:?}) before {want:?}"),
                Some(_) => {}
                None => panic!("EOF before {want:?}"),
            }
        }
        out
    }

    /// The server ends the connection after the close (EOF or reset within the timeout).
    pub fn ends(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut tmp = [0u8; 4096];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

pub type WsResponse = tungstenite::handshake::client::Response;

/// The handshake request for `path` on `addr` with `token` and subprotocol `proto`.
pub fn ws_request(
    addr: SocketAddr,
    path: &str,
    token: &str,
    proto: &str,
) -> tungstenite::handshake::client::Request {
    let url = format!("ws://{addr}{path}");
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("Authorization", format!("Bearer {token}").parse().unwrap());
    h.insert("Sec-WebSocket-Protocol", proto.parse().unwrap());
    req
}

/// tungstenite's own client handshake: the websocket and the 101, or the status and body of
/// the answer that refused it.
pub fn try_ws(
    addr: SocketAddr,
    path: &str,
    token: &str,
    proto: &str,
) -> Result<(Ws, WsResponse), (u16, String)> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    match tungstenite::client(ws_request(addr, path, token, proto), stream) {
        Ok(ok) => Ok(ok),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            let body = r
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((r.status().as_u16(), body))
        }
        Err(e) => panic!("{path}: handshake: {e}"),
    }
}

/// The status the handshake gets (101 or the refusal) and the refusal's body.
pub fn handshake_status(addr: SocketAddr, path: &str, proto: &str) -> (u16, String) {
    match try_ws(addr, path, ADMIN_TOKEN, proto) {
        Ok((_, response)) => (response.status().as_u16(), String::new()),
        Err(refused) => refused,
    }
}

/// A websocket with tungstenite's own client handshake.
pub fn ws_client(addr: SocketAddr, path: &str, proto: &str) -> Ws {
    let (ws, response) = try_ws(addr, path, ADMIN_TOKEN, proto)
        .unwrap_or_else(|(s, body)| panic!("{path}: {s} instead of 101: {body}"));
    assert_eq!(response.status(), 101);
    ws
}

/// The same, also checking that supd chose `proto`; a refusal fails with supd's log.
pub fn ws_open(supd: &Supd, path: &str, proto: &str) -> Ws {
    let (ws, resp) = try_ws(supd.addr, path, ADMIN_TOKEN, proto)
        .unwrap_or_else(|(s, _)| panic!("{path}: {s} instead of 101; log:\n{}", supd.log_text()));
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], proto);
    ws
}

/// Read up to the server's close frame, handing each binary message to `each` first:
/// (binary output, the close frame's code and reason when it has them). Completes the closing
/// handshake (tungstenite answers the close; the server then ends the connection).
pub fn read_to_close(
    ws: &mut Ws,
    mut each: impl FnMut(&[u8]),
) -> (Vec<u8>, Option<(CloseCode, String)>) {
    let mut out = Vec::new();
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => {
                each(&b);
                out.extend_from_slice(&b);
            }
            Ok(Message::Close(c)) => {
                let c = c.map(|c| (c.code, c.reason.to_string()));
                let _ = ws.flush();
                while ws.read().is_ok() {}
                return (out, c);
            }
            Ok(_) => {}
            Err(e) => panic!(
                "no close frame ({e}); output {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

/// Read up to the server's close frame: (binary output, code, reason).
pub fn ws_until_close(ws: &mut Ws) -> (Vec<u8>, u16, String) {
    let (out, close) = read_to_close(ws, |_| {});
    let (code, reason) = close.expect("close without a code");
    (out, u16::from(code), reason)
}

/// Read binary output until `want` appears in it (or fail on close).
pub fn ws_read_until(ws: &mut Ws, out: &mut Vec<u8>, want: &str) {
    while !String::from_utf8_lossy(out).contains(want) {
        match ws.read().unwrap() {
            Message::Binary(b) => out.extend_from_slice(&b),
            Message::Close(c) => panic!(
                "closed ({c:?}) before {want:?}; got {:?}",
                String::from_utf8_lossy(out)
            ),
            _ => {}
        }
    }
}

/// The next binary message (pings are answered by tungstenite); panics on anything else.
pub fn next_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        match ws.read().expect("read") {
            Message::Binary(b) => return b.to_vec(),
            Message::Ping(_) | Message::Pong(_) => {}
            m => panic!("expected a binary message, got {m:?}"),
        }
    }
}

/// Close from the client side and read until the connection ends.
pub fn close_ws(mut ws: Ws) {
    let _ = ws.close(None);
    while ws.read().is_ok() {}
}
