//! HTTP/1.1 server side: request parsing, query strings, responses, routing, negotiation.

pub mod query;
