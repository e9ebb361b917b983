//! Responses: status, headers, body, and their serialization in the negotiated format.

use serde::Serialize;

/// The body formats supd speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
    /// Raw bytes, only where an operation offers it (exec output).
    OctetStream,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Yaml => "application/yaml",
            Format::OctetStream => "application/octet-stream",
        }
    }
}

/// Pick the body format from an `Accept` header among `offered` (in server preference order).
/// No header, `*/*`, or nothing acceptable: the first offered (JSON), since a client that cannot
/// read JSON gains nothing from a 406 and every client of this API reads JSON.
pub fn negotiate(accept: Option<&str>, offered: &[Format]) -> Format {
    let default = offered.first().copied().unwrap_or(Format::Json);
    let Some(accept) = accept else {
        return default;
    };
    let mut best: Option<(u32, usize, Format)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = 1000u32;
        for p in parts {
            if let Some(v) = p.trim().strip_prefix("q=") {
                q = parse_q(v);
            }
        }
        if q == 0 {
            continue;
        }
        for (rank, &f) in offered.iter().enumerate() {
            if media_matches(&media, f) {
                let better = match best {
                    None => true,
                    Some((bq, brank, _)) => q > bq || (q == bq && rank < brank),
                };
                if better {
                    best = Some((q, rank, f));
                }
            }
        }
    }
    best.map(|(_, _, f)| f).unwrap_or(default)
}

fn parse_q(v: &str) -> u32 {
    // q is at most three decimals (RFC 9110); parse it as thousandths without floats.
    let v = v.trim();
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    let int: u32 = match int {
        "0" => 0,
        "1" => 1000,
        _ => return 0,
    };
    let mut thousandths = 0;
    for (i, c) in frac.chars().take(3).enumerate() {
        let Some(d) = c.to_digit(10) else { return 0 };
        thousandths += d * [100, 10, 1][i];
    }
    (int + thousandths).min(1000)
}

fn media_matches(media: &str, f: Format) -> bool {
    match media {
        "*/*" => f == Format::Json,
        "application/*" => true,
        "application/json" => f == Format::Json,
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            f == Format::Yaml
        }
        "application/octet-stream" => f == Format::OctetStream,
        _ => false,
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            content_type: None,
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// A serialized value in `format` (JSON when the format is raw bytes).
    pub fn serialized<T: Serialize + ?Sized>(status: u16, value: &T, format: Format) -> Response {
        let (body, content_type) = match format {
            Format::Yaml => match serde_yaml::to_string(value) {
                Ok(s) => (s.into_bytes(), Format::Yaml.content_type()),
                Err(e) => return internal(&e.to_string()),
            },
            Format::Json | Format::OctetStream => match serde_json::to_vec(value) {
                Ok(mut v) => {
                    v.push(b'\n');
                    (v, Format::Json.content_type())
                }
                Err(e) => return internal(&e.to_string()),
            },
        };
        Response {
            status,
            headers: Vec::new(),
            content_type: Some(content_type),
            body,
        }
    }

    pub fn bytes(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            content_type: Some(content_type),
            body,
        }
    }

    /// Append the wire form to `out`. `head_only` for HEAD requests; `close` adds
    /// `Connection: close`.
    pub fn write_to(&self, out: &mut Vec<u8>, head_only: bool, close: bool) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if let Some(ct) = self.content_type {
            let _ = write!(out, "Content-Type: {ct}\r\n");
        }
        if self.status != 204 && self.status != 304 && !(100..200).contains(&self.status) {
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

fn internal(why: &str) -> Response {
    let body = format!(
        "{{\"errors\":[{{\"error-message\":\"cannot serialize response\",\"error-info\":{{\"reason\":{}}}}}]}}\n",
        serde_json::Value::String(why.to_string())
    );
    Response::bytes(500, "application/json", body.into_bytes())
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        508 => "Loop Detected",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Format] = &[Format::Json, Format::Yaml];

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(None, ALL), Format::Json);
        assert_eq!(negotiate(Some("*/*"), ALL), Format::Json);
        assert_eq!(negotiate(Some("application/yaml"), ALL), Format::Yaml);
        assert_eq!(negotiate(Some("application/x-yaml"), ALL), Format::Yaml);
        assert_eq!(
            negotiate(Some("text/yaml; charset=utf-8"), ALL),
            Format::Yaml
        );
        assert_eq!(
            negotiate(Some("application/json;q=0.5, application/yaml"), ALL),
            Format::Yaml
        );
        assert_eq!(
            negotiate(Some("application/yaml;q=0, */*"), ALL),
            Format::Json
        );
        assert_eq!(negotiate(Some("text/html"), ALL), Format::Json);
        let exec = &[Format::Json, Format::Yaml, Format::OctetStream];
        assert_eq!(
            negotiate(Some("application/octet-stream"), exec),
            Format::OctetStream
        );
        assert_eq!(
            negotiate(Some("application/octet-stream"), ALL),
            Format::Json
        );
    }

    #[test]
    fn q_values() {
        assert_eq!(parse_q("1"), 1000);
        assert_eq!(parse_q("0.5"), 500);
        assert_eq!(parse_q("0.125"), 125);
        assert_eq!(parse_q("1.000"), 1000);
        assert_eq!(parse_q("2"), 0);
        assert_eq!(parse_q("0.x"), 0);
    }

    #[test]
    fn wire_form() {
        let mut out = Vec::new();
        Response::bytes(200, "text/plain", b"hi".to_vec())
            .header("X-A", "1")
            .write_to(&mut out, false, true);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nX-A: 1\r\nConnection: close\r\n\r\nhi"
        );
        let mut out = Vec::new();
        Response::new(204).write_to(&mut out, false, false);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n");
    }
}
