//! The one log line of a request, written when its answer is known.

use std::time::Instant;

use crate::http::request::Request;

/// The one log line of a request: who, what (path without the query's values), status, time.
pub(crate) struct RequestLog {
    line: String,
    started: Instant,
}

impl RequestLog {
    pub(crate) fn new(peer: &str, req: &Request, started: Instant) -> RequestLog {
        let query = if req.query.is_empty() {
            String::new()
        } else {
            format!("?{}", crate::http::query::redacted(&req.query, &["cmd"]))
        };
        RequestLog {
            line: format!("{peer} {} {}{}", req.method.as_str(), req.path, query),
            started,
        }
    }

    pub(crate) fn done(self, status: u16) {
        log::info!(
            "{} {} {:.1}ms",
            self.line,
            status,
            self.started.elapsed().as_secs_f64() * 1000.0
        );
    }
}
