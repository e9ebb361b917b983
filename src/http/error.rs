//! The API's error answer, and the one place where every module's error becomes an HTTP status.
//!
//! Each module has its own typed `Error`; the `From` impls at the bottom of this file decide
//! which status each case gets, so the mapping can be read (and reviewed) in one screen.

use serde::Serialize;
use serde_json::{Map, Value};

use super::response::{Format, Response};

/// An error as the API shows it: a status, a message, optional structured details and headers.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub info: Map<String, Value>,
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Serialize)]
struct Body<'a> {
    errors: [Item<'a>; 1],
}

#[derive(Serialize)]
struct Item<'a> {
    #[serde(rename = "error-message")]
    message: &'a str,
    #[serde(rename = "error-info")]
    info: &'a Map<String, Value>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            info: Map::new(),
            headers: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, message)
    }

    pub fn info(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.info.insert(key.to_string(), value.into());
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    /// The error body in the negotiated format (raw-bytes clients get JSON).
    pub fn into_response(self, format: Format) -> Response {
        let body = Body {
            errors: [Item {
                message: &self.message,
                info: &self.info,
            }],
        };
        let mut r = Response::serialized(self.status, &body, format);
        r.headers = self.headers;
        r
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl From<super::request::Error> for ApiError {
    fn from(e: super::request::Error) -> ApiError {
        use super::request::Error as E;
        let status = match e {
            E::HeadTooLarge | E::TooManyHeaders => 431,
            E::BodyTooLarge => 413,
            E::Malformed(_) => 400,
            E::UnsupportedTransferEncoding => 501,
            E::UnsupportedVersion => 505,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<super::query::Error> for ApiError {
    fn from(e: super::query::Error) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

impl From<crate::fields::Error> for ApiError {
    fn from(e: crate::fields::Error) -> ApiError {
        ApiError::bad_request(e.to_string()).info("parameter", "fields")
    }
}

impl From<crate::ws::handshake::Error> for ApiError {
    fn from(e: crate::ws::handshake::Error) -> ApiError {
        use crate::ws::handshake::Error as E;
        match e {
            E::NotUpgrade => ApiError::new(426, "this endpoint needs a websocket upgrade")
                .header("Upgrade", "websocket")
                .header("Connection", "Upgrade"),
            E::BadVersion => ApiError::new(426, "unsupported websocket version (13 is)")
                .header("Sec-WebSocket-Version", "13"),
            E::BadKey => ApiError::bad_request("missing or invalid Sec-WebSocket-Key"),
            E::NoProtocol { offered } => ApiError::bad_request(format!(
                "no acceptable websocket subprotocol in {offered:?}"
            ))
            .info("offered", offered),
            E::ForbiddenOrigin { origin } => ApiError::new(
                403,
                format!("websocket upgrade from origin {origin:?} is not allowed"),
            ),
        }
    }
}

impl From<crate::container::Error> for ApiError {
    fn from(e: crate::container::Error) -> ApiError {
        use crate::container::Error as E;
        match e {
            E::ContainerGone { .. } => {
                ApiError::conflict("the container is not running (its process is gone)")
            }
            E::BadCommand(why) => ApiError::bad_request(format!("cmd: {why}")),
            // Something in the container (its processes, its seccomp filter) kept the command
            // from starting: an upstream that did not answer in time.
            e @ E::StartTimeout { .. } => ApiError::new(504, e.to_string()),
            other => {
                log::error!("spawn: {other}");
                ApiError::new(500, format!("cannot start the command: {other}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_shape() {
        let r = ApiError::not_found("unknown service instance")
            .info("service-instance", "a-1")
            .into_response(Format::Json);
        assert_eq!(r.status, 404);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"errors":[{"error-message":"unknown service instance","error-info":{"service-instance":"a-1"}}]})
        );
        let r = ApiError::new(503, "runtime unavailable").into_response(Format::Yaml);
        let v: Value = serde_yaml::from_slice(&r.body).unwrap();
        assert_eq!(v["errors"][0]["error-message"], "runtime unavailable");
        assert_eq!(r.content_type, Some("application/yaml"));
    }
}
