//! Server side of the websocket opening handshake (RFC 6455 section 4.2), independent of the
//! HTTP parser: the lead hands over the header values, we decide and build the 101 head.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

/// RFC 6455 section 1.3.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only version RFC 6455 defines; also what a 426 advertises.
pub const VERSION: &str = "13";

/// Header values echoed into errors (and so into responses and logs) are cut to this.
const MAX_ECHOED: usize = 256;

/// The request headers the handshake looks at; `None` when absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpgradeHeaders<'a> {
    pub connection: Option<&'a str>,
    pub upgrade: Option<&'a str>,
    pub version: Option<&'a str>,
    pub key: Option<&'a str>,
    /// All `Sec-WebSocket-Protocol` values joined with ", ".
    pub protocol: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub host: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Not an upgrade request at all: 426 with `Upgrade: websocket`.
    NotUpgrade,
    /// Missing or unsupported `Sec-WebSocket-Version`: 426 with `Sec-WebSocket-Version: 13`.
    BadVersion,
    /// `Sec-WebSocket-Key` missing, or not the base64 of exactly 16 bytes: 400.
    BadKey,
    /// None of the offered subprotocols is supported here: 400.
    NoProtocol { offered: String },
    /// A browser page from another origin: 403.
    ForbiddenOrigin { origin: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotUpgrade => f.write_str("websocket upgrade required"),
            Error::BadVersion => write!(f, "unsupported websocket version (supported: {VERSION})"),
            Error::BadKey => f.write_str("missing or invalid Sec-WebSocket-Key"),
            Error::NoProtocol { offered } => {
                write!(f, "no supported websocket protocol among {offered:?}")
            }
            Error::ForbiddenOrigin { origin } => write!(f, "origin {origin:?} is not allowed"),
        }
    }
}

impl std::error::Error for Error {}

/// The outcome of a successful check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The `Sec-WebSocket-Accept` value.
    pub accept: String,
    /// The protocol the session speaks.
    pub protocol: &'static str,
    /// Whether to send `Sec-WebSocket-Protocol` back: only when the client offered protocols,
    /// because a server must not answer with a protocol the client did not ask for.
    pub echo_protocol: bool,
}

/// Checks an upgrade request. The order of the checks decides which error a request with
/// several faults gets: upgrade, version, key, origin, protocol.
///
/// The protocol chosen is the first of the client's list (its priority order) that is in
/// `supported`; a client that offers none gets `supported[0]`, not echoed. An `Origin` is
/// allowed when it equals one of `allowed_origins` (case-insensitive) or names the same
/// `host[:port]` as `Host`; requests without `Origin` (non-browser clients) are allowed.
pub fn check(
    h: &UpgradeHeaders<'_>,
    supported: &[&'static str],
    allowed_origins: &[String],
) -> Result<Accepted> {
    let is_upgrade = h.connection.is_some_and(|v| has_token(v, "upgrade"))
        && h.upgrade.is_some_and(|v| has_token(v, "websocket"));
    if !is_upgrade {
        return Err(Error::NotUpgrade);
    }
    if h.version.map(str::trim) != Some(VERSION) {
        return Err(Error::BadVersion);
    }
    let key = h.key.map(str::trim).ok_or(Error::BadKey)?;
    if !valid_key(key) {
        return Err(Error::BadKey);
    }
    if let Some(origin) = h.origin
        && !origin_allowed(origin.trim(), h.host, allowed_origins)
    {
        return Err(Error::ForbiddenOrigin {
            origin: echoed(origin),
        });
    }
    let (protocol, echo_protocol) = choose_protocol(h.protocol, supported)?;
    Ok(Accepted {
        accept: accept_key(key),
        protocol,
        echo_protocol,
    })
}

/// Only the origin rule of [`check`]: for an upgrade relayed to a peer site, whose own
/// handshake the peer checks, this site's policy on browser origins still applies.
pub fn check_origin(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> Result<()> {
    match origin {
        Some(o) if !origin_allowed(o.trim(), host, allowed) => {
            Err(Error::ForbiddenOrigin { origin: echoed(o) })
        }
        _ => Ok(()),
    }
}

/// `Sec-WebSocket-Accept` for a key: base64(sha1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// The whole 101 response head, ending with the empty line. `extra` headers whose name is
/// not a token or whose value holds a control character are left out rather than let them
/// split the head.
pub fn response_head(a: &Accepted, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut head = String::with_capacity(160);
    head.push_str("HTTP/1.1 101 Switching Protocols\r\n");
    head.push_str("Upgrade: websocket\r\nConnection: Upgrade\r\n");
    head.push_str("Sec-WebSocket-Accept: ");
    head.push_str(&a.accept);
    head.push_str("\r\n");
    if a.echo_protocol {
        head.push_str("Sec-WebSocket-Protocol: ");
        head.push_str(a.protocol);
        head.push_str("\r\n");
    }
    for (name, value) in extra {
        if !is_token(name) || value.chars().any(|c| c.is_control() && c != '\t') {
            log::warn!("websocket: dropping malformed response header {name:?}");
            continue;
        }
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Whether a comma-separated list holds `token`, around which only SP and HTAB are optional
/// whitespace (as the request parser reads `Connection`): a Unicode space makes another token.
fn has_token(list: &str, token: &str) -> bool {
    list.split(',')
        .any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case(token))
}

fn valid_key(key: &str) -> bool {
    // 16 bytes encode to exactly 24 characters; checking first bounds the decode.
    key.len() == 24 && BASE64.decode(key).is_ok_and(|k| k.len() == 16)
}

fn choose_protocol(
    offered: Option<&str>,
    supported: &[&'static str],
) -> Result<(&'static str, bool)> {
    let mut offered_any = false;
    if let Some(list) = offered {
        for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            offered_any = true;
            // Subprotocol names are compared exactly (RFC 6455 section 11.3.4 registers them
            // as case-sensitive tokens).
            if let Some(s) = supported.iter().find(|s| **s == p) {
                return Ok((s, true));
            }
        }
    }
    match supported.first() {
        Some(first) if !offered_any => Ok((first, false)),
        _ => Err(Error::NoProtocol {
            offered: echoed(offered.unwrap_or("")),
        }),
    }
}

fn origin_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let (Some(host), Some((scheme, authority))) = (host, origin.split_once("://")) else {
        return false;
    };
    // A serialized origin is scheme://host[:port] and nothing more.
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return false;
    }
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some(":80"),
        "https" | "wss" => Some(":443"),
        _ => None,
    };
    let strip = |s: &'_ str| -> String {
        let s = s.trim().to_ascii_lowercase();
        match default_port {
            Some(p) if s.ends_with(p) => s[..s.len() - p.len()].to_owned(),
            _ => s,
        }
    };
    strip(authority) == strip(host)
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Cuts `s` to `MAX_ECHOED` bytes on a char boundary.
fn echoed(s: &str) -> String {
    let mut end = s.len().min(MAX_ECHOED);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const SUPPORTED: &[&str] = &["v1.exec-interactive.supd", "v1.other.supd"];

    fn good() -> UpgradeHeaders<'static> {
        UpgradeHeaders {
            connection: Some("Upgrade"),
            upgrade: Some("websocket"),
            version: Some("13"),
            key: Some(KEY),
            protocol: Some("v1.exec-interactive.supd"),
            origin: None,
            host: Some("127.0.0.1:4646"),
        }
    }

    fn check_origin(origin: &str, host: &str, allowed: &[String]) -> Result<Accepted> {
        let h = UpgradeHeaders {
            origin: Some(origin),
            host: Some(host),
            ..good()
        };
        check(&h, SUPPORTED, allowed)
    }

    #[test]
    fn rfc_sample_accept_key() {
        // RFC 6455 section 1.3.
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn accepts_a_good_request() {
        let a = check(&good(), SUPPORTED, &[]).unwrap();
        assert_eq!(a.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(a.protocol, "v1.exec-interactive.supd");
        assert!(a.echo_protocol);
    }

    #[test]
    fn connection_and_upgrade_are_token_lists() {
        let h = UpgradeHeaders {
            connection: Some("keep-alive, UPGRADE"),
            upgrade: Some("h2c, WebSocket"),
            ..good()
        };
        assert!(check(&h, SUPPORTED, &[]).is_ok());
        for (c, u) in [
            (None, Some("websocket")),
            (Some("upgrade"), None),
            (Some("keep-alive"), Some("websocket")),
            (Some("upgraded"), Some("websocket")),
            (Some("upgrade"), Some("websockets")),
            (Some("upgrade"), Some("h2c")),
        ] {
            let h = UpgradeHeaders {
                connection: c,
                upgrade: u,
                ..good()
            };
            assert_eq!(
                check(&h, SUPPORTED, &[]),
                Err(Error::NotUpgrade),
                "{c:?} {u:?}"
            );
        }
    }

    #[test]
    fn version_must_be_13() {
        for v in [None, Some("8"), Some("13, 8"), Some(""), Some("130")] {
            let h = UpgradeHeaders {
                version: v,
                ..good()
            };
            assert_eq!(check(&h, SUPPORTED, &[]), Err(Error::BadVersion), "{v:?}");
        }
        let h = UpgradeHeaders {
            version: Some(" 13 "),
            ..good()
        };
        assert!(check(&h, SUPPORTED, &[]).is_ok());
    }

    #[test]
    fn key_must_be_16_bytes_of_base64() {
        for k in [
            None,
            Some(""),
            Some("dGhlIHNhbXBsZSBub25jZQ"), // no padding
            Some("dGhlIHNhbXBsZSBub25jZQ=="[..20].as_ref()),
            Some("dGhlIHNhbXBsZSBub25jZUE="), // 17 bytes
            Some("dGhlIHNhbXBsZSBub25j"),     // 15 bytes
            Some("dGhlIHNhbXBsZSBub25jZ!=="),
            Some("ü"),
        ] {
            let h = UpgradeHeaders { key: k, ..good() };
            assert_eq!(check(&h, SUPPORTED, &[]), Err(Error::BadKey), "{k:?}");
        }
    }

    #[test]
    fn protocol_follows_client_priority() {
        let h = UpgradeHeaders {
            protocol: Some("x, v1.other.supd, v1.exec-interactive.supd"),
            ..good()
        };
        let a = check(&h, SUPPORTED, &[]).unwrap();
        assert_eq!((a.protocol, a.echo_protocol), ("v1.other.supd", true));
    }

    #[test]
    fn protocol_absent_uses_the_default_without_echo() {
        for p in [None, Some(""), Some(" , ")] {
            let h = UpgradeHeaders {
                protocol: p,
                ..good()
            };
            let a = check(&h, SUPPORTED, &[]).unwrap();
            assert_eq!(
                (a.protocol, a.echo_protocol),
                ("v1.exec-interactive.supd", false)
            );
            let head = String::from_utf8(response_head(&a, &[])).unwrap();
            assert!(!head.contains("Sec-WebSocket-Protocol"), "{head}");
        }
    }

    #[test]
    fn protocol_unsupported_is_refused() {
        let h = UpgradeHeaders {
            protocol: Some("chat, V1.EXEC-INTERACTIVE.SUPD"),
            ..good()
        };
        assert_eq!(
            check(&h, SUPPORTED, &[]),
            Err(Error::NoProtocol {
                offered: "chat, V1.EXEC-INTERACTIVE.SUPD".into()
            })
        );
        let h = UpgradeHeaders {
            protocol: None,
            ..good()
        };
        assert!(matches!(check(&h, &[], &[]), Err(Error::NoProtocol { .. })));
        let long = "p,".repeat(1000);
        let h = UpgradeHeaders {
            protocol: Some(&long),
            ..good()
        };
        match check(&h, SUPPORTED, &[]) {
            Err(Error::NoProtocol { offered }) => assert_eq!(offered.len(), MAX_ECHOED),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn origin_same_host_or_listed() {
        assert!(check_origin("http://127.0.0.1:4646", "127.0.0.1:4646", &[]).is_ok());
        assert!(check_origin("HTTP://Example.COM", "example.com", &[]).is_ok());
        assert!(check_origin("http://example.com", "example.com:80", &[]).is_ok());
        assert!(check_origin("https://example.com:443", "example.com", &[]).is_ok());
        let allowed = vec!["https://console.example.org".to_owned()];
        assert!(check_origin("https://Console.example.org", "127.0.0.1:4646", &allowed).is_ok());
        assert!(
            check(
                &UpgradeHeaders {
                    origin: None,
                    ..good()
                },
                SUPPORTED,
                &[]
            )
            .is_ok()
        );
    }

    #[test]
    fn origin_other_host_is_forbidden() {
        for (origin, host) in [
            ("http://evil.example", "127.0.0.1:4646"),
            ("http://127.0.0.1:4647", "127.0.0.1:4646"),
            ("http://127.0.0.1", "127.0.0.1:4646"),
            ("https://example.com", "example.com:80"),
            ("null", "127.0.0.1:4646"),
            ("127.0.0.1:4646", "127.0.0.1:4646"),
            ("http://127.0.0.1:4646/path", "127.0.0.1:4646"),
            ("http://user@127.0.0.1:4646", "127.0.0.1:4646"),
            ("http://", ""),
        ] {
            assert_eq!(
                check_origin(origin, host, &[]),
                Err(Error::ForbiddenOrigin {
                    origin: origin.into()
                }),
                "{origin} {host}"
            );
        }
        let h = UpgradeHeaders {
            origin: Some("http://a"),
            host: None,
            ..good()
        };
        assert!(matches!(
            check(&h, SUPPORTED, &[]),
            Err(Error::ForbiddenOrigin { .. })
        ));
    }

    #[test]
    fn response_head_is_complete() {
        let a = check(&good(), SUPPORTED, &[]).unwrap();
        let head = response_head(
            &a,
            &[
                ("Deprecation", "true"),
                ("Bad\r\nName", "x"),
                ("X", "a\r\nb"),
            ],
        );
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: v1.exec-interactive.supd\r\n\
             Deprecation: true\r\n\
             \r\n"
        );
    }

    #[test]
    fn arbitrary_input_does_not_panic() {
        let samples = [
            "",
            ",",
            "\u{0}",
            "ü://ü:ü",
            "://",
            "a://b:80:80",
            "💥💥💥💥💥💥",
        ];
        for a in samples {
            for b in samples {
                let h = UpgradeHeaders {
                    connection: Some("upgrade"),
                    upgrade: Some("websocket"),
                    version: Some("13"),
                    key: Some(KEY),
                    protocol: Some(a),
                    origin: Some(b),
                    host: Some(a),
                };
                let _ = check(&h, SUPPORTED, &[b.to_owned()]);
                let h = UpgradeHeaders {
                    key: Some(a),
                    version: Some(b),
                    ..h
                };
                let _ = check(&h, SUPPORTED, &[]);
            }
        }
    }
}
