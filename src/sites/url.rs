//! A peer's address as the configuration writes it: `http://host:port`, `https://host:port`
//! or `unix:/absolute/path`. Pure: no DNS, no file system.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

/// Where a peer supd listens, and how to speak to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerUrl {
    /// Plain HTTP over TCP (loopback or a trusted link).
    Http { host: String, port: u16 },
    /// HTTP over TLS; `host` is also the name the peer's certificate must carry.
    Https { host: String, port: u16 },
    /// Plain HTTP over a unix socket.
    Unix(PathBuf),
}

impl PeerUrl {
    pub fn is_tls(&self) -> bool {
        matches!(self, PeerUrl::Https { .. })
    }

    /// The host as an IP address, when it is one (no name to resolve).
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            PeerUrl::Http { host, .. } | PeerUrl::Https { host, .. } => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok(),
            PeerUrl::Unix(_) => None,
        }
    }
}

impl fmt::Display for PeerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerUrl::Http { host, port } => write!(f, "http://{host}:{port}"),
            PeerUrl::Https { host, port } => write!(f, "https://{host}:{port}"),
            PeerUrl::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Parse a peer URL. Anything an operator could mean two ways is refused: user info, a path
/// other than `/`, a query, a fragment, an empty host, a port of 0.
pub fn parse(s: &str) -> Result<PeerUrl, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!("{s:?}: a unix socket path must be absolute"));
        }
        if path.contains('\0') {
            return Err(format!("{s:?}: NUL in path"));
        }
        return Ok(PeerUrl::Unix(PathBuf::from(path)));
    }
    let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = s.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!(
            "{s:?} is not http://HOST[:PORT], https://HOST[:PORT] or unix:/PATH"
        ));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err(format!("{s:?}: a peer URL has no path, query or fragment"));
    }
    if authority.contains('@') {
        return Err(format!(
            "{s:?}: no user info in a peer URL (use token-file for credentials)"
        ));
    }
    let (host, port) =
        split_host_port(authority).ok_or_else(|| format!("{s:?}: bad host or port"))?;
    let port = match port {
        Some(p) => p,
        None if tls => 443,
        None => 80,
    };
    check_host(host).map_err(|m| format!("{s:?}: {m}"))?;
    let host = host.to_ascii_lowercase();
    Ok(if tls {
        PeerUrl::Https { host, port }
    } else {
        PeerUrl::Http { host, port }
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(a: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if a.starts_with('[') {
        let end = a.find(']')?;
        let host = &a[..=end];
        match &a[end + 1..] {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok().filter(|&p| p != 0)?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

fn check_host(host: &str) -> Result<(), String> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("unterminated [")?;
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("{inner:?} is not an IPv6 address"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        assert_eq!(
            parse("http://127.0.0.1:4646").unwrap(),
            PeerUrl::Http {
                host: "127.0.0.1".into(),
                port: 4646
            }
        );
        assert_eq!(
            parse("https://Edge-7.example.org/").unwrap(),
            PeerUrl::Https {
                host: "edge-7.example.org".into(),
                port: 443
            }
        );
        assert_eq!(
            parse("http://[::1]:80").unwrap(),
            PeerUrl::Http {
                host: "[::1]".into(),
                port: 80
            }
        );
        assert_eq!(
            parse("http://[::1]").unwrap().ip(),
            Some("::1".parse().unwrap())
        );
        assert_eq!(
            parse("unix:/run/supd/b.sock").unwrap(),
            PeerUrl::Unix("/run/supd/b.sock".into())
        );
        assert!(parse("https://a:1").unwrap().is_tls());
        assert_eq!(parse("http://h:9").unwrap().to_string(), "http://h:9");
    }

    #[test]
    fn refused_forms() {
        for bad in [
            "",
            "ftp://h",
            "h:80",
            "http://",
            "http://:80",
            "http://h:0",
            "http://h:65536",
            "http://h:x",
            "http://h:",
            "http://u:p@h:80",
            "http://h/path",
            "http://h?q",
            "http://h#f",
            "http://[::1",
            "http://[nothex]:80",
            "http://-h",
            "http://a..b",
            "http://h_h",
            "unix:relative",
            "unix:/a\0b",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
