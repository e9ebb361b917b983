//! What the endpoints' decoders share: the settings they read ([`DecodeCtx`]), the
//! [`DecodeError`] they fail with (mapped to statuses in `src/status.rs`), and the checks every
//! endpoint makes (unknown parameters, `site`, the websocket handshake, command words).
//!
//! Each endpoint's decoder sits next to its operation (`StateParams::decode` in `state.rs`,
//! `ExecParams::decode` in `exec.rs`...); `call.rs` picks the one a route names.

use std::fmt;

use crate::config::Config;
use crate::http::body;
use crate::http::query::{self, Query};
use crate::http::request::Request;
use crate::http::response::Accept;
use crate::ws::handshake;

/// What the decoders need besides the request: settings fixed for the process, and the
/// request's `Accept` as the server parsed it (once: its error and state answers pick their
/// format from the same value).
pub struct DecodeCtx<'a> {
    /// This host's site: `site=` naming another is a 404 (a configured peer's name never
    /// gets here: the server forwards it first).
    pub site: &'a str,
    /// Origins a websocket upgrade may come from.
    pub allowed_origins: &'a [String],
    /// The request's `Accept`, parsed once by the server.
    pub accept: Accept,
}

impl<'a> DecodeCtx<'a> {
    pub fn new(cfg: &'a Config, accept: Accept) -> DecodeCtx<'a> {
        DecodeCtx {
            site: &cfg.site,
            allowed_origins: &cfg.ws.allowed_origins,
            accept,
        }
    }
}

/// Why a request cannot be served as it was written: 4xx, before any lookup.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    Query(query::Error),
    Fields(crate::fields::Error),
    Handshake(handshake::Error),
    Body(body::Error),
    /// A query parameter the endpoint does not know (a typo must not return everything).
    UnknownParam {
        name: String,
        allowed: &'static [&'static str],
    },
    /// `site=` names another site.
    UnknownSite(String),
    /// `keys` or `count` with a value other than `true` or `false`.
    NotTrue {
        name: &'static str,
        value: String,
    },
    KeysAndCount,
    /// An exec without a body.
    NoBody,
    /// The body did not parse as the content type said (or as JSON/YAML without one).
    InvalidJson(String),
    InvalidYaml(String),
    InvalidBody(String),
    /// `cmd` absent, empty or only blanks.
    BlankCmd,
    /// `cmd` cannot be split into words (`container::split_words`).
    BadCommand(&'static str),
    BadTty(String),
    /// A boolean parameter (`takeover`) other than `true` or `false`.
    BadBool {
        name: &'static str,
        value: String,
    },
    /// `no-delayed-shutdown: false`.
    DelayedShutdownFalse,
    ProtocolRequired,
    BadProtocol(String),
    PortRequired,
    BadPort(String),
    BadIpAddress(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Query(e) => write!(f, "{e}"),
            DecodeError::Fields(e) => write!(f, "{e}"),
            DecodeError::Handshake(e) => write!(f, "{e}"),
            DecodeError::Body(e) => write!(f, "{e}"),
            DecodeError::UnknownParam { name, .. } => write!(f, "unknown query parameter {name:?}"),
            DecodeError::UnknownSite(s) => write!(f, "unknown site {s:?}"),
            DecodeError::NotTrue { name, value } => {
                write!(f, "{name} must be \"true\" (got {value:?})")
            }
            DecodeError::KeysAndCount => f.write_str("keys and count cannot be combined"),
            DecodeError::NoBody => f.write_str("a body with cmd is required"),
            DecodeError::InvalidJson(e) => write!(f, "invalid JSON body: {e}"),
            DecodeError::InvalidYaml(e) => write!(f, "invalid YAML body: {e}"),
            DecodeError::InvalidBody(e) => write!(f, "invalid body (JSON or YAML): {e}"),
            DecodeError::BlankCmd => f.write_str("cmd must be a non-blank string"),
            DecodeError::BadCommand(why) => write!(f, "cmd: {why}"),
            DecodeError::BadTty(v) => write!(f, "tty must be true or false (got {v:?})"),
            DecodeError::BadBool { name, value } => {
                write!(f, "{name} must be true or false (got {value:?})")
            }
            DecodeError::DelayedShutdownFalse => {
                f.write_str("no-delayed-shutdown must have the value true")
            }
            DecodeError::ProtocolRequired => f.write_str("protocol is required (tcp or udp)"),
            DecodeError::BadProtocol(p) => write!(f, "protocol must be tcp or udp (got {p:?})"),
            DecodeError::PortRequired => f.write_str("port is required"),
            DecodeError::BadPort(p) => write!(f, "port must be an integer 1-65535 (got {p:?})"),
            DecodeError::BadIpAddress(s) => {
                write!(f, "ip-address must be an IPv4 or IPv6 address (got {s:?})")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<query::Error> for DecodeError {
    fn from(e: query::Error) -> DecodeError {
        DecodeError::Query(e)
    }
}

impl From<crate::fields::Error> for DecodeError {
    fn from(e: crate::fields::Error) -> DecodeError {
        DecodeError::Fields(e)
    }
}

impl From<handshake::Error> for DecodeError {
    fn from(e: handshake::Error) -> DecodeError {
        DecodeError::Handshake(e)
    }
}

impl From<body::Error> for DecodeError {
    fn from(e: body::Error) -> DecodeError {
        DecodeError::Body(e)
    }
}

/// Reject parameters the endpoint does not know: a typo must not silently return everything.
pub fn check_params(query: &Query, allowed: &'static [&'static str]) -> Result<(), DecodeError> {
    for name in query.names() {
        if !allowed.contains(&name) {
            return Err(DecodeError::UnknownParam {
                name: name.to_string(),
                allowed,
            });
        }
    }
    Ok(())
}

/// `site` absent or naming this site is served here; a configured peer was forwarded to
/// before decoding (`server/request.rs`), so any other name is unknown.
pub fn check_site(query: &Query, site: &str) -> Result<(), DecodeError> {
    match query.single("site")? {
        None => Ok(()),
        Some(s) if s == site => Ok(()),
        Some(s) => Err(DecodeError::UnknownSite(s.to_string())),
    }
}

/// `check_params` then `check_site`, which every endpoint does in that order.
pub fn check_query(
    query: &Query,
    allowed: &'static [&'static str],
    ctx: &DecodeCtx<'_>,
) -> Result<(), DecodeError> {
    check_params(query, allowed)?;
    check_site(query, ctx.site)
}

/// Check a websocket upgrade request; the 101 head is built from the result.
pub fn upgrade(
    req: &Request,
    supported: &[&'static str],
    ctx: &DecodeCtx<'_>,
) -> Result<handshake::Accepted, DecodeError> {
    let connection = req.header_joined("connection");
    let upgrade = req.header_joined("upgrade");
    let protocols = req.header_joined("sec-websocket-protocol");
    let headers = handshake::UpgradeHeaders {
        connection: connection.as_deref(),
        upgrade: upgrade.as_deref(),
        version: req.header("sec-websocket-version"),
        key: req.header("sec-websocket-key"),
        protocol: protocols.as_deref(),
        origin: req.header("origin"),
        host: req.header("host"),
    };
    Ok(handshake::check(&headers, supported, ctx.allowed_origins)?)
}

/// The words of a command line, or why it cannot be split.
pub fn words(cmd: &str) -> Result<Vec<String>, DecodeError> {
    crate::container::split_words(cmd).map_err(|e| match e {
        crate::container::Error::BadCommand(why) => DecodeError::BadCommand(why),
        // split_words fails with BadCommand only; anything else is still the command's fault.
        _ => DecodeError::BadCommand("cannot be split into words"),
    })
}

/// Test helpers shared by the decoders' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::http::ApiError;
    use crate::http::request::Method;

    pub fn request(method: Method, query: &str, headers: &[(&str, &str)], body: &[u8]) -> Request {
        Request {
            method,
            path: "/".to_owned(),
            query: query.to_owned(),
            minor: 1,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
                .collect(),
            body: body.to_vec(),
            keep_alive: true,
            expect_continue: false,
        }
    }

    pub fn ws_headers(protocol: &'static str) -> Vec<(&'static str, &'static str)> {
        vec![
            ("host", "h"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", protocol),
        ]
    }

    pub fn ctx() -> DecodeCtx<'static> {
        static ORIGINS: Vec<String> = Vec::new();
        DecodeCtx {
            site: "here",
            allowed_origins: &ORIGINS,
            accept: Accept::default(),
        }
    }

    pub fn q(raw: &str) -> Query {
        Query::parse(raw).unwrap()
    }

    /// The status and message the client would see.
    pub fn seen(e: DecodeError) -> (u16, String) {
        let e = ApiError::from(e);
        (e.status, e.message)
    }
}
