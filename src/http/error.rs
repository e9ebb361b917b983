//! The API's error answer: a status, a message, details, headers, and its body.
//!
//! Which status each module's typed error gets is decided in one place, `src/status.rs`,
//! above every module whose errors it maps (so that no module below imports it back).

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
