//! The forwarded request and the relayed answer, as bytes: pure functions over heads, unit
//! tested here (no sockets).
//!
//! Going out: the client's method, path and query without `site` (every other byte as the
//! client wrote it), its end-to-end headers, the credential, `Supd-Forwarded-For`, the hop
//! count, and the body that the connection already read (bounded by the endpoint's limit).
//! Coming back: the peer's status and end-to-end headers, framed for the client.

use crate::http::request::{Method, Request};
use crate::ws::handshake;

/// Relays a request has passed; one more than this many is a loop (508).
pub const MAX_HOPS: u32 = 4;
pub const HOPS: &str = "supd-hops";
pub const FORWARDED_FOR: &str = "supd-forwarded-for";
/// Longest response head accepted from a peer.
pub const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// Interim (1xx) answers skipped before the final one; one more is a bad answer.
pub const MAX_INTERIM: u32 = 4;

/// What is wrong with a request's or a peer's framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// `Supd-Hops` is not a small decimal number.
    BadHops(String),
    /// The request has passed `MAX_HOPS` relays already.
    Loop(u32),
    /// The peer's answer is not an HTTP/1.1 response head we can relay.
    BadResponse(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::BadHops(v) => write!(f, "Supd-Hops must be a number (got {v:?})"),
            WireError::Loop(n) => write!(
                f,
                "the request has been forwarded {n} times (limit {MAX_HOPS}): a forwarding loop"
            ),
            WireError::BadResponse(why) => write!(f, "invalid response from the peer: {why}"),
        }
    }
}

/// Headers that describe one connection, not the message: never passed on (RFC 9110 7.6.1).
/// `Upgrade` is set again for a websocket; `Transfer-Encoding` and `Content-Length` are set
/// from the framing actually sent; `Expect` was handled here (the body is read).
pub fn is_hop_by_hop(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "expect"
    ) || n.starts_with("proxy-")
}

/// The field names a `Connection` header lists: hop-by-hop for this message too (RFC 9110
/// 7.6.1), lower-cased.
fn connection_options<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .flat_map(|v| v.split(|&b| b == b','))
        .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok())
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The relays a request has passed (`Supd-Hops`, absent: 0); refused past the limit.
pub fn incoming_hops(req: &Request) -> Result<u32, WireError> {
    let Some(v) = req.header(HOPS) else {
        return Ok(0);
    };
    let n: u32 = v
        .parse()
        .ok()
        .filter(|_| v.len() <= 3 && v.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| WireError::BadHops(v.chars().take(32).collect()))?;
    if n >= MAX_HOPS {
        return Err(WireError::Loop(n));
    }
    Ok(n)
}

/// The raw query without its `site` parameters; every other piece byte for byte, in order.
pub fn strip_site(raw: &str) -> String {
    raw.split('&')
        .filter(|piece| {
            let name = piece.split_once('=').map_or(*piece, |(n, _)| n);
            // The name as `Query::parse` reads it (`%73ite` is `site` too).
            crate::http::query::decode_path_segment(&name.replace('+', " "))
                .ok()
                .as_deref()
                != Some("site")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// What the peer is asked.
pub struct Outgoing<'a> {
    pub req: &'a Request,
    /// Replaces the client's `Authorization` (the site's token-file).
    pub token: Option<&'a str>,
    /// `<token name>@<this site>`.
    pub forwarded_for: String,
    /// The hops the request had passed when it arrived here.
    pub hops: u32,
}

impl Outgoing<'_> {
    /// Whether the client asked for a websocket (the upgrade is passed on).
    pub fn websocket(&self) -> bool {
        self.req.header_has_token("upgrade", "websocket")
    }

    /// The request head and body as sent to the peer.
    pub fn bytes(&self) -> Vec<u8> {
        let req = self.req;
        let query = strip_site(&req.query);
        let mut out = Vec::with_capacity(512 + req.body.len());
        out.extend_from_slice(req.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(req.path.as_bytes());
        if !query.is_empty() {
            out.push(b'?');
            out.extend_from_slice(query.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let mut has_host = false;
        let named = connection_options(
            req.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
                .map(|(_, v)| v.as_bytes()),
        );
        for (name, value) in &req.headers {
            if is_hop_by_hop(name)
                || named.iter().any(|n| name.eq_ignore_ascii_case(n))
                || name == HOPS
                || name == FORWARDED_FOR
                || (self.token.is_some() && name == "authorization")
            {
                continue;
            }
            has_host |= name == "host";
            header(&mut out, name, value);
        }
        if !has_host {
            header(&mut out, "host", "supd");
        }
        if let Some(t) = self.token {
            header(&mut out, "authorization", &format!("Bearer {t}"));
        }
        header(&mut out, FORWARDED_FOR, &self.forwarded_for);
        header(&mut out, HOPS, &(self.hops + 1).to_string());
        if self.websocket() {
            header(&mut out, "connection", "Upgrade");
            header(&mut out, "upgrade", "websocket");
        } else {
            // One request per peer connection: the end of the answer is where the peer
            // closes, or its framing says.
            header(&mut out, "connection", "close");
        }
        if !req.body.is_empty() || matches!(req.method, Method::Post | Method::Put) {
            header(&mut out, "content-length", &req.body.len().to_string());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&req.body);
        out
    }
}

fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A peer's response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHead {
    pub status: u16,
    pub reason: String,
    /// Names lower-cased, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes of the head, its blank line included.
    pub len: usize,
}

impl PeerHead {
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }
}

/// The peer's response head, once it is complete in `buf`.
pub fn parse_head(buf: &[u8]) -> Result<Option<PeerHead>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(WireError::BadResponse("head too large".into()));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(WireError::BadResponse(e.to_string())),
    };
    if len > MAX_HEAD {
        return Err(WireError::BadResponse("head too large".into()));
    }
    if resp.version != Some(1) {
        return Err(WireError::BadResponse("not HTTP/1.1".into()));
    }
    // httparse takes any three digits ("050" is 50): a status the client's own parser
    // refuses is not relayed.
    let status = resp.code.unwrap_or(0);
    if !(100..=599).contains(&status) {
        return Err(WireError::BadResponse(format!(
            "status {status} out of range"
        )));
    }
    Ok(Some(PeerHead {
        status,
        reason: resp.reason.unwrap_or("").to_string(),
        headers: resp
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect(),
        len,
    }))
}

/// The interim (1xx) answers skipped so far: how many, and their bytes (they count against
/// `MAX_HEAD` with the final head).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Interim {
    pub count: u32,
    pub bytes: usize,
}

/// The peer's final response head, once it is complete at the start of `buf`: interim 1xx
/// answers (100, 102, 103, ...) before it are removed from `buf` and skipped (they promise
/// the final answer; relaying one as the answer would leave the final one to be read as the
/// client's next answer). A 101 is final only for a request that asked to `upgrade`;
/// otherwise it is a bad answer. At most `MAX_INTERIM` interim heads, and all heads together
/// within `MAX_HEAD`.
pub fn final_head(
    buf: &mut Vec<u8>,
    seen: &mut Interim,
    upgrade: bool,
) -> Result<Option<PeerHead>, WireError> {
    loop {
        let too_large = || WireError::BadResponse("head too large".into());
        let head = match parse_head(buf) {
            Ok(Some(h)) => h,
            Ok(None) if seen.bytes + buf.len() >= MAX_HEAD => return Err(too_large()),
            other => return other,
        };
        if seen.bytes + head.len > MAX_HEAD {
            return Err(too_large());
        }
        match head.status {
            101 if upgrade => return Ok(Some(head)),
            101 => {
                return Err(WireError::BadResponse(
                    "101 Switching Protocols to a request that asked for no upgrade".into(),
                ));
            }
            100..=199 => {
                seen.count += 1;
                seen.bytes += head.len;
                if seen.count > MAX_INTERIM {
                    return Err(WireError::BadResponse(format!(
                        "more than {MAX_INTERIM} interim (1xx) answers"
                    )));
                }
                buf.drain(..head.len);
            }
            _ => return Ok(Some(head)),
        }
    }
}

/// How the body of a peer's answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    /// Passed on verbatim, its end found by a chunked decoder.
    Chunked,
    /// Until the peer closes.
    UntilClose,
}

pub fn framing(head: &PeerHead, method: Method) -> Result<Framing, WireError> {
    if method == Method::Head || head.status < 200 || head.status == 204 || head.status == 304 {
        return Ok(Framing::Empty);
    }
    if let Some(te) = head.get("transfer-encoding") {
        return if te.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            Ok(Framing::Chunked)
        } else {
            Err(WireError::BadResponse(
                "a transfer coding other than chunked".into(),
            ))
        };
    }
    let mut lengths = head.headers.iter().filter(|(n, _)| n == "content-length");
    match (lengths.next(), lengths.next()) {
        (None, _) => Ok(Framing::UntilClose),
        (Some((_, v)), None) => std::str::from_utf8(v)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .map(Framing::Length)
            .ok_or_else(|| WireError::BadResponse("invalid Content-Length".into())),
        (Some(_), Some(_)) => Err(WireError::BadResponse(
            "more than one Content-Length".into(),
        )),
    }
}

/// Whether a chunked answer reaches this client as chunked: an HTTP/1.0 client gets no
/// transfer coding (RFC 9112 6.1); its body is decoded and ends where the connection does.
pub fn client_takes_chunked(minor: u8) -> bool {
    minor >= 1
}

/// The head the client gets for an HTTP answer: the peer's status and end-to-end headers,
/// the framing the body is relayed with, and `Connection: close` unless the client's
/// connection carries on after this answer (`keep_alive`, and a body whose end is known).
/// `chunked`: whether the client takes a chunked body (`client_takes_chunked`); if not, a
/// chunked body is relayed decoded, ending at the close.
pub fn client_head(head: &PeerHead, framing: Framing, keep_alive: bool, chunked: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", head.status, head.reason).into_bytes();
    let named = connection_options(
        head.headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .map(|(_, v)| v.as_slice()),
    );
    for (name, value) in &head.headers {
        if is_hop_by_hop(name) || named.contains(name) {
            continue;
        }
        raw_header(&mut out, name, value);
    }
    let mut close = !keep_alive;
    match framing {
        Framing::Length(n) => header(&mut out, "content-length", &n.to_string()),
        Framing::Chunked if chunked => header(&mut out, "transfer-encoding", "chunked"),
        Framing::Chunked => close = true,
        // A HEAD's or 304's Content-Length describes the representation: kept when it is one
        // valid number. A 1xx or 204 has none (RFC 9110 8.6); a lenient reader would take it
        // as a body and swallow the next answer.
        Framing::Empty => {
            let mut lengths = head.headers.iter().filter(|(n, _)| n == "content-length");
            if let (Some((_, v)), None) = (lengths.next(), lengths.next())
                && head.status >= 200
                && head.status != 204
                && !v.is_empty()
                && v.len() <= 19
                && v.iter().all(u8::is_ascii_digit)
            {
                raw_header(&mut out, "content-length", v);
            }
        }
        Framing::UntilClose => close = true,
    }
    if close {
        header(&mut out, "connection", "close");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The 101 the client gets when the peer accepted its upgrade: the accept key computed for
/// the client's own key, the subprotocol the peer chose, the peer's other end-to-end headers.
pub fn upgrade_head(head: &PeerHead, client_key: &str) -> Result<Vec<u8>, WireError> {
    let accept = handshake::accept_key(client_key);
    // The key was passed on unchanged: any other answer is not a handshake with us.
    if head.get("sec-websocket-accept").map(<[u8]>::trim_ascii) != Some(accept.as_bytes()) {
        return Err(WireError::BadResponse(
            "websocket accept key does not match".into(),
        ));
    }
    if !head.has_token("upgrade", "websocket") {
        return Err(WireError::BadResponse(
            "101 without Upgrade: websocket".into(),
        ));
    }
    let mut out = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
    header(&mut out, "Upgrade", "websocket");
    header(&mut out, "Connection", "Upgrade");
    header(&mut out, "Sec-WebSocket-Accept", &accept);
    for (name, value) in &head.headers {
        if is_hop_by_hop(name) || name == "sec-websocket-accept" {
            continue;
        }
        raw_header(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

fn raw_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::decode::testing::request;

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[test]
    fn site_is_removed_and_nothing_else_changes() {
        assert_eq!(strip_site("site=b"), "");
        assert_eq!(
            strip_site("fields=name,containers(*)&site=b&keys=true"),
            "fields=name,containers(*)&keys=true"
        );
        assert_eq!(strip_site("%73ite=b&count=true"), "count=true");
        assert_eq!(strip_site("a=%2F%20x&site=&b=+"), "a=%2F%20x&b=+");
        assert_eq!(strip_site("sites=1&websites=2"), "sites=1&websites=2");
        assert_eq!(strip_site(""), "");
    }

    #[test]
    fn hop_count() {
        let r = request(Method::Get, "", &[], b"");
        assert_eq!(incoming_hops(&r), Ok(0));
        let r = request(Method::Get, "", &[("supd-hops", "3")], b"");
        assert_eq!(incoming_hops(&r), Ok(3));
        let r = request(Method::Get, "", &[("supd-hops", "4")], b"");
        assert_eq!(incoming_hops(&r), Err(WireError::Loop(4)));
        for bad in ["", "-1", "x", "1e3", "99999999999", "+1"] {
            let r = request(Method::Get, "", &[("supd-hops", bad)], b"");
            assert!(
                matches!(incoming_hops(&r), Err(WireError::BadHops(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_forwarded_request() {
        let mut r = request(
            Method::Post,
            "fields=a&site=b&x=%41",
            &[
                ("host", "a.example"),
                ("authorization", "Bearer client"),
                ("connection", "keep-alive, x-secret"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("transfer-encoding", "chunked"),
                ("proxy-authorization", "Basic x"),
                ("expect", "100-continue"),
                ("supd-hops", "2"),
                ("supd-forwarded-for", "forged@x"),
                ("content-type", "application/json"),
                ("accept", "application/yaml"),
            ],
            b"{\"cmd\":\"ls\"}",
        );
        r.path = "/v1/state/applications/shop/service-instances/web-1/exec".into();
        let out = Outgoing {
            req: &r,
            token: None,
            forwarded_for: "admin@a".into(),
            hops: 2,
        };
        let t = text(&out.bytes());
        assert!(t.starts_with(
            "POST /v1/state/applications/shop/service-instances/web-1/exec?fields=a&x=%41 HTTP/1.1\r\n"
        ));
        for want in [
            "host: a.example\r\n",
            "authorization: Bearer client\r\n",
            "content-type: application/json\r\n",
            "accept: application/yaml\r\n",
            "supd-forwarded-for: admin@a\r\n",
            "supd-hops: 3\r\n",
            "connection: close\r\n",
            "content-length: 12\r\n\r\n{\"cmd\":\"ls\"}",
        ] {
            assert!(t.contains(want), "{want:?} missing from {t}");
        }
        for gone in [
            "keep-alive",
            "te:",
            "transfer-encoding",
            "proxy-",
            "expect",
            "forged",
            "supd-hops: 2",
        ] {
            assert!(!t.contains(gone), "{gone:?} in {t}");
        }
        let out = Outgoing {
            req: &r,
            token: Some("site-secret"),
            forwarded_for: "admin@a".into(),
            hops: 0,
        };
        let t = text(&out.bytes());
        assert!(t.contains("authorization: Bearer site-secret\r\n"));
        assert!(!t.contains("client"));
        assert!(t.contains("supd-hops: 1\r\n"));
    }

    #[test]
    fn a_websocket_upgrade_is_passed_on() {
        let h = crate::ops::decode::testing::ws_headers("v1.connect.supd");
        let r = request(Method::Get, "protocol=tcp&port=80&site=b", &h, b"");
        let out = Outgoing {
            req: &r,
            token: None,
            forwarded_for: "t@a".into(),
            hops: 0,
        };
        assert!(out.websocket());
        let t = text(&out.bytes());
        assert!(t.starts_with("GET /?protocol=tcp&port=80 HTTP/1.1\r\n"));
        assert!(t.contains("connection: Upgrade\r\nupgrade: websocket\r\n"));
        assert!(t.contains("sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(t.contains("sec-websocket-protocol: v1.connect.supd\r\n"));
        assert!(!t.contains("content-length"));
    }

    fn head(raw: &str) -> PeerHead {
        parse_head(raw.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn response_heads() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nA: b\r\n"), Ok(None));
        assert!(parse_head(b"HTTP/1.0 200 OK\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
        // Three digits, but no status (the fuzzer's find): relayed, no client would parse it.
        assert!(parse_head(b"HTTP/1.1 050 Switching Protocols\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 600 Nope\r\n\r\n").is_err());
        let big = format!("HTTP/1.1 200 OK\r\nA: {}", "x".repeat(MAX_HEAD));
        assert!(parse_head(big.as_bytes()).is_err());
        let h = head("HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!((h.status, h.len), (404, 45));
        assert_eq!(framing(&h, Method::Get), Ok(Framing::Length(5)));
        assert_eq!(framing(&h, Method::Head), Ok(Framing::Empty));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(framing(&h, Method::Get), Ok(Framing::Chunked));
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(framing(&h, Method::Get), Ok(Framing::UntilClose));
        let h = head("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(framing(&h, Method::Post), Ok(Framing::Empty));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        ] {
            assert!(framing(&head(bad), Method::Get).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_relayed_head_keeps_what_matters() {
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDeprecation: true\r\n\
             Allow: GET\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
             Content-Length: 2\r\n\r\n",
        );
        let t = text(&client_head(&h, Framing::Length(2), false, true));
        assert_eq!(
            t,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndeprecation: true\r\n\
             allow: GET\r\ncontent-length: 2\r\nconnection: close\r\n\r\n"
        );
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        let t = text(&client_head(&h, Framing::Chunked, true, true));
        assert!(t.contains("transfer-encoding: chunked"));
        assert!(!t.contains("connection"));
        let t = text(&client_head(&h, Framing::UntilClose, true, true));
        assert!(t.contains("connection: close"));
    }

    #[test]
    fn the_upgrade_head_is_computed_for_the_clients_key() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let accept = handshake::accept_key(key);
        let h = head(&format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: v1.connect.supd\r\n\r\n"
        ));
        let t = text(&upgrade_head(&h, key).unwrap());
        assert!(t.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(t.contains(&format!("Sec-WebSocket-Accept: {accept}\r\n")));
        assert!(t.contains("sec-websocket-protocol: v1.connect.supd\r\n"));
        assert_eq!(t.matches("ccept").count(), 1);
        assert!(upgrade_head(&h, "AAAAAAAAAAAAAAAAAAAAAA==").is_err());
    }

    #[test]
    fn interim_heads_are_skipped_within_the_head_limit() {
        let mut seen = Interim::default();
        let mut buf =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 2"
                .to_vec();
        assert_eq!(final_head(&mut buf, &mut seen, false), Ok(None));
        assert_eq!(seen.count, 2);
        assert_eq!(buf, b"HTTP/1.1 2");
        buf.extend_from_slice(b"00 OK\r\nContent-Length: 1\r\n\r\nx");
        let h = final_head(&mut buf, &mut seen, false).unwrap().unwrap();
        assert_eq!((h.status, &buf[h.len..]), (200, &b"x"[..]));
        // A 101: final for an upgrade, refused otherwise.
        let up = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        let h = final_head(&mut up.to_vec(), &mut Interim::default(), true);
        assert_eq!(h.unwrap().unwrap().status, 101);
        let h = final_head(&mut up.to_vec(), &mut Interim::default(), false);
        assert!(matches!(h, Err(WireError::BadResponse(_))));
        // Bounded: in number, and in bytes with the final head.
        let mut many = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM as usize + 1);
        assert!(final_head(&mut many, &mut Interim::default(), false).is_err());
        let mut seen = Interim::default();
        let big = format!(
            "HTTP/1.1 103 Early Hints\r\nLink: {}\r\n\r\n",
            "x".repeat(MAX_HEAD / 2)
        );
        let mut buf = format!("{big}{big}").into_bytes();
        assert!(final_head(&mut buf, &mut seen, false).is_err());
        let mut buf =
            format!("{big}HTTP/1.1 200 OK\r\nA: {}", "y".repeat(MAX_HEAD / 2)).into_bytes();
        assert!(final_head(&mut buf, &mut Interim::default(), false).is_err());
    }

    #[test]
    fn a_bodyless_answer_has_no_content_length_unless_it_may_and_it_is_valid() {
        let t = |raw: &str| {
            let h = head(raw);
            text(&client_head(
                &h,
                framing(&h, Method::Get).unwrap(),
                true,
                true,
            ))
        };
        let out = t(
            "HTTP/1.1 204 No Content\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(out, "HTTP/1.1 204 No Content\r\n\r\n");
        let out = t("HTTP/1.1 304 Not Modified\r\nContent-Length: 1, 70\r\n\r\n");
        assert!(!out.contains("content-length"), "{out}");
        let out = t("HTTP/1.1 304 Not Modified\r\nContent-Length: -5\r\n\r\n");
        assert!(!out.contains("content-length"), "{out}");
        let out = t("HTTP/1.1 304 Not Modified\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert!(!out.contains("content-length"), "{out}");
        let out = t("HTTP/1.1 304 Not Modified\r\nContent-Length: 70\r\n\r\n");
        assert!(out.contains("content-length: 70\r\n"), "{out}");
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n");
        let out = text(&client_head(
            &h,
            framing(&h, Method::Head).unwrap(),
            true,
            true,
        ));
        assert!(out.contains("content-length: 12\r\n"), "{out}");
    }

    #[test]
    fn headers_a_connection_header_names_are_not_passed_on() {
        let r = request(
            Method::Get,
            "",
            &[
                ("connection", "X-Secret, keep-alive"),
                ("Connection", "x-other"),
                ("x-secret", "s"),
                ("x-other", "o"),
                ("x-kept", "k"),
            ],
            b"",
        );
        let out = Outgoing {
            req: &r,
            token: None,
            forwarded_for: "t@a".into(),
            hops: 0,
        };
        let t = text(&out.bytes());
        assert!(!t.contains("x-secret") && !t.contains("x-other"), "{t}");
        assert!(t.contains("x-kept: k\r\n"), "{t}");
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-Hop: 1\r\nX-End: 2\r\nContent-Length: 0\r\n\r\n",
        );
        let out = text(&client_head(&h, Framing::Length(0), true, true));
        assert!(!out.contains("x-hop"), "{out}");
        assert!(out.contains("x-end: 2\r\n"), "{out}");
    }

    #[test]
    fn an_http10_client_is_not_sent_chunked() {
        assert!(!client_takes_chunked(0));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        let out = text(&client_head(&h, Framing::Chunked, true, false));
        assert_eq!(out, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
    }
}
