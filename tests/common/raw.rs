//! Raw HTTP over real sockets: a blocking HTTP/1.1 client on one connection (for keep-alive,
//! pipelining and malformed requests), websocket upgrades written by hand, and the check that a
//! well-behaved client is still served.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::*;

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The first error message of an errors body.
    pub fn error_message(&self) -> String {
        self.json()["errors"][0]["error-message"]
            .as_str()
            .unwrap_or_else(|| panic!("no error-message in {}", self.text()))
            .to_string()
    }
}

/// A response head read off the start of a buffer.
pub struct Head {
    /// Its length in bytes (where the body starts).
    pub len: usize,
    pub status: u16,
    /// Names as sent.
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn content_length(&self) -> Option<usize> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
    }
}

/// The response head at the start of `buf`; None while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = resp.parse(buf)? else {
        return Ok(None);
    };
    let headers = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Ok(Some(Head {
        len,
        status: resp.code.unwrap(),
        headers,
    }))
}

/// A blocking HTTP/1.1 client on one connection, for keep-alive and pipelining tests.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// A client on a stream opened elsewhere (its timeouts left as they are).
    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: supd\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).unwrap();
    }

    /// A POST of a JSON body with `token`.
    pub fn send_json(&mut self, path: &str, token: &str, body: &[u8]) {
        let auth = format!("Bearer {token}");
        self.send(
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        );
    }

    /// A websocket upgrade request with `token` for subprotocol `proto`.
    pub fn send_upgrade(&mut self, path: &str, token: &str, proto: &str) {
        let auth = format!("Bearer {token}");
        self.send(
            "GET",
            path,
            &[
                ("Authorization", &auth),
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Protocol", proto),
            ],
            b"",
        );
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Read one response (Content-Length framed, or until close).
    pub fn read_response(&mut self, head_only: bool) -> HttpResponse {
        loop {
            if let Some(head) = parse_head(&self.buf).expect("valid response") {
                let status = head.status;
                let len = head.content_length();
                self.buf.drain(..head.len);
                if status == 100 {
                    continue;
                }
                let body = match len {
                    _ if head_only || status == 204 || status == 101 => Vec::new(),
                    Some(len) => {
                        while self.buf.len() < len {
                            self.fill();
                        }
                        self.buf.drain(..len).collect()
                    }
                    None => {
                        while self.try_fill() {}
                        std::mem::take(&mut self.buf)
                    }
                };
                return HttpResponse {
                    status,
                    headers: head.headers,
                    body,
                };
            }
            self.fill();
        }
    }

    fn fill(&mut self) {
        assert!(self.try_fill(), "connection closed before a full response");
    }

    fn try_fill(&mut self) -> bool {
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Whether the server closed the connection (reads EOF within the timeout).
    pub fn is_closed_by_peer(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut tmp = [0u8; 1024];
        let r = matches!(self.stream.read(&mut tmp), Ok(0) | Err(_));
        self.stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        r
    }
}

/// A state GET on a fresh connection, answered within a generous deadline: the proof that a
/// well-behaved client is not disturbed by whatever else is going on.
pub fn assert_healthy(addr: SocketAddr) {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect("a fresh connection to supd");
    assert_healthy_on(stream);
}

/// The same on a connection opened earlier (when no new one can be accepted).
pub fn assert_healthy_on(stream: TcpStream) -> TcpStream {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut c = Client::from_stream(stream);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    c.send(
        "GET",
        "/v1/state/applications/none/service-instances",
        &[("Authorization", &auth)],
        b"",
    );
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "state GET: {}", r.text());
    c.stream
}

/// The websocket upgrade as a plain request, to see error answers with their bodies.
pub fn raw_upgrade(supd: &Supd, path: &str, token: &str, proto: &str) -> HttpResponse {
    let mut c = supd.connect();
    c.send_upgrade(path, token, proto);
    c.read_response(false)
}

/// Upgrade `path` by hand; the stream after the 101 and any bytes read past its head.
pub fn upgrade(
    addr: SocketAddr,
    path: &str,
    proto: &str,
    extra: &[(&str, &str)],
) -> (TcpStream, Vec<u8>) {
    match try_upgrade(addr, path, proto, extra) {
        Ok(ok) => ok,
        Err((status, body)) => panic!("{path}: {status} instead of 101: {body}"),
    }
}

/// Upgrade by hand: Ok(stream, leftover) on 101, Err(status, body) otherwise.
pub fn try_upgrade(
    addr: SocketAddr,
    path: &str,
    proto: &str,
    extra: &[(&str, &str)],
) -> Result<(TcpStream, Vec<u8>), (u16, String)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {proto}\r\n"
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(head) = parse_head(&buf).expect("valid response") {
            let n = head.len;
            if head.status == 101 {
                return Ok((s, buf[n..].to_vec()));
            }
            let len = head.content_length().unwrap_or(0);
            while buf.len() < n + len {
                let k = s.read(&mut tmp).unwrap();
                assert!(k > 0, "EOF inside the body");
                buf.extend_from_slice(&tmp[..k]);
            }
            return Err((
                head.status,
                String::from_utf8_lossy(&buf[n..n + len]).into_owned(),
            ));
        }
        let k = s.read(&mut tmp).unwrap();
        assert!(k > 0, "EOF before the response head");
        buf.extend_from_slice(&tmp[..k]);
    }
}
