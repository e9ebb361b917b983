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

/// What a request's `Accept` header allows, parsed once per request (by the server) into the
/// weight it gives each of supd's formats; every answer to the request picks its format from
/// this value: errors and state among JSON and YAML, exec's output among those and raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accept {
    /// Per `Format` (its discriminant), the highest q (in thousandths) of a range that names
    /// it; 0 when none does (a range with q=0 is ignored, it names nothing).
    q: [u16; 3],
}

/// What errors and state answers are offered in.
pub const DOCUMENT: &[Format] = &[Format::Json, Format::Yaml];
/// What exec's answer is offered in: a document, or the raw output.
pub const EXEC_OUTPUT: &[Format] = &[Format::Json, Format::Yaml, Format::OctetStream];

impl Accept {
    /// Parse an `Accept` header (`None`: no header, which accepts anything).
    pub fn parse(accept: Option<&str>) -> Accept {
        let mut weights = Accept::default();
        let Some(accept) = accept else {
            return weights;
        };
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
            for f in [Format::Json, Format::Yaml, Format::OctetStream] {
                if media_matches(&media, f) {
                    let w = &mut weights.q[f as usize];
                    // q is at most 1000 (parse_q), so it fits.
                    *w = (*w).max(q as u16);
                }
            }
        }
        weights
    }

    /// The body format among `offered` (in server preference order): the one with the highest
    /// q, the earlier offered on a tie. No header, `*/*`, or nothing acceptable: the first
    /// offered (JSON), since a client that cannot read JSON gains nothing from a 406 and every
    /// client of this API reads JSON.
    pub fn pick(self, offered: &[Format]) -> Format {
        let default = offered.first().copied().unwrap_or(Format::Json);
        let mut best: Option<(u16, Format)> = None;
        for &f in offered {
            let q = self.q[f as usize];
            if q > 0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, f));
            }
        }
        best.map(|(_, f)| f).unwrap_or(default)
    }
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

    const ALL: &[Format] = DOCUMENT;

    fn negotiate(accept: Option<&str>, offered: &[Format]) -> Format {
        Accept::parse(accept).pick(offered)
    }

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
        let exec = EXEC_OUTPUT;
        assert_eq!(
            negotiate(Some("application/octet-stream"), exec),
            Format::OctetStream
        );
        assert_eq!(
            negotiate(Some("application/octet-stream"), ALL),
            Format::Json
        );
    }

    /// One parsed header answers both questions a request asks of it: the error or state
    /// format, and exec's output format (the answers two negotiations of the header gave).
    #[test]
    fn one_parse_answers_every_offer() {
        use Format::{Json, OctetStream, Yaml};
        let cases = [
            (None, Json, Json),
            (Some(""), Json, Json),
            (Some("application/*"), Json, Json),
            (Some("application/octet-stream"), Json, OctetStream),
            // An error for a raw-bytes client is a document: the best other it accepts.
            (
                Some("application/octet-stream, text/yaml;q=0.5"),
                Yaml,
                OctetStream,
            ),
            (
                Some("application/yaml;q=0.5, application/octet-stream;q=0.4"),
                Yaml,
                Yaml,
            ),
            (Some("application/octet-stream;q=0.9, */*"), Json, Json),
            // A format's weight is the highest of the ranges naming it; ties go to JSON.
            (
                Some("application/*;q=0.2, application/json;q=0.1"),
                Json,
                Json,
            ),
            (
                Some("application/yaml;q=0.3, application/*;q=0.3"),
                Json,
                Json,
            ),
            (Some("application/yaml, application/*;q=0.3"), Yaml, Yaml),
            // Media types are case-insensitive; the parameter name is not read so.
            (Some("APPLICATION/OCTET-STREAM;Q=1"), Json, OctetStream),
            (
                Some("application/octet-stream;q=0.002, application/yaml;q=0.001"),
                Yaml,
                OctetStream,
            ),
            (Some("text/plain, application/json;q=0"), Json, Json),
        ];
        for (header, document, exec) in cases {
            let a = Accept::parse(header);
            assert_eq!(
                (a.pick(DOCUMENT), a.pick(EXEC_OUTPUT)),
                (document, exec),
                "{header:?}"
            );
        }
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
