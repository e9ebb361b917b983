//! HTTP/1.1 server side: request parsing, query strings, responses, routing, negotiation.

pub mod body;
pub mod chunked;
pub mod error;
pub mod query;
pub mod request;
pub mod response;
pub mod router;

pub use error::ApiError;
pub use request::Method;
pub use response::{Format, Response};
