//! `site=` forwarding: the peer supd daemons of the configuration's `sites:` and the relay of
//! a request to one of them.
//!
//! The server decides (`server/request.rs`): a request whose `site` names a configured peer
//! is authorized here first, then becomes a [`Forward`] operation that connects to the peer,
//! sends the request on ([`wire::Outgoing`]), and relays the answer: an HTTP answer streamed
//! to the client, or a websocket's bytes both ways ([`frames`] knows the peer's frame
//! boundaries, to end the client's stream with a 1011 close if the peer vanishes).
//!
//! An `https://` peer is reached over TLS (`Stream::tls_client`), with a client
//! configuration built from the site's `ca-file` (else the system's roots) and its client
//! certificate when the sites are loaded, so that a SIGHUP picks up replaced files.

pub(crate) mod forward;
pub mod frames;
pub mod url;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::config::SiteConfig;
pub(crate) use forward::Forward;
use url::PeerUrl;

/// A peer as the loop uses it: its address resolved, its token read.
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub url: PeerUrl,
    /// TCP addresses (resolved when the sites were loaded), or why there are none.
    pub addrs: Result<Vec<SocketAddr>, String>,
    pub token: Option<String>,
    /// The TLS client configuration of an `https://` peer (None for the others).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

/// The configured peers. A peer whose token file cannot be read stays known (so that
/// `site=<it>` is not a 404) but is answered 502 with the reason.
#[derive(Debug, Default)]
pub struct Peers {
    map: HashMap<String, Result<Rc<Peer>, String>>,
}

/// Why a site could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    Token {
        site: String,
        source: crate::auth::Error,
    },
    File {
        site: String,
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The trust or client certificate files of an `https://` peer.
    Tls {
        site: String,
        source: Box<crate::tls::Error>,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Token { site, source } => write!(f, "sites.{site}.token-file: {source}"),
            LoadError::File {
                site,
                key,
                path,
                source,
            } => write!(f, "sites.{site}.{key}: {}: {source}", path.display()),
            LoadError::Tls { site, source } => write!(f, "sites.{site}: TLS: {source}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// How host names are resolved when the sites load.
pub enum Resolve<'a> {
    /// Now, blocking: at start-up, before the loop runs.
    Now,
    /// Not now (on SIGHUP, on the loop, which never waits for DNS): a site keeps the addresses
    /// the previous peers had for the same host and port; a new host name has none until the
    /// answer of [`resolve_hosts`] (run off the loop) is given to [`Peers::apply`].
    Keep(&'a Peers),
}

/// A host name and port to resolve, and what came of it.
pub type Resolved = Vec<((String, u16), Result<Vec<SocketAddr>, String>)>;

/// Resolve every host name (blocking: for a helper thread, or before the loop runs).
pub fn resolve_hosts(hosts: Vec<(String, u16)>) -> Resolved {
    hosts
        .into_iter()
        .map(|(host, port)| {
            let r = resolve(&host, port);
            ((host, port), r)
        })
        .collect()
}

fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match (host, port).to_socket_addrs() {
        Ok(a) => {
            let a: Vec<SocketAddr> = a.collect();
            if a.is_empty() {
                Err(format!("{host} has no address"))
            } else {
                Ok(a)
            }
        }
        Err(e) => Err(format!("cannot resolve {host}: {e}")),
    }
}

/// The host name and port of a peer reached by name (None: an IP address or a unix socket).
fn host_name(url: &PeerUrl) -> Option<(String, u16)> {
    match url {
        PeerUrl::Http { host, port } | PeerUrl::Https { host, port } if url.ip().is_none() => {
            Some((host.clone(), *port))
        }
        _ => None,
    }
}

impl Peers {
    /// Read what the sites need: token files (trusted as the tokens file is), the TLS files
    /// (readable), host names (as `resolve` says: the loop never waits for DNS). Every site
    /// is kept; the errors say which are unusable.
    pub fn load(
        sites: &BTreeMap<String, SiteConfig>,
        resolve: Resolve<'_>,
    ) -> (Peers, Vec<LoadError>) {
        let mut map = HashMap::new();
        let mut errors = Vec::new();
        for (name, s) in sites {
            match load_one(name, s, &resolve) {
                Ok(p) => {
                    map.insert(name.clone(), Ok(Rc::new(p)));
                }
                Err(e) => {
                    map.insert(name.clone(), Err(e.to_string()));
                    errors.push(e);
                }
            }
        }
        (Peers { map }, errors)
    }

    /// The peer `site` names: None when it is not configured.
    pub fn get(&self, site: &str) -> Option<Result<Rc<Peer>, Error>> {
        self.map.get(site).map(|p| match p {
            Ok(p) => Ok(p.clone()),
            Err(why) => Err(Error::Unusable {
                site: site.to_string(),
                reason: why.clone(),
            }),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The host names (and ports) of the peers reached by name, each once.
    pub fn hosts(&self) -> Vec<(String, u16)> {
        let mut hosts: Vec<(String, u16)> = self
            .map
            .values()
            .filter_map(|p| p.as_ref().ok())
            .filter_map(|p| host_name(&p.url))
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// Take the addresses a resolution found. A name that did not resolve this time keeps
    /// the addresses it had (logged), so a resolver that is down for a moment does not
    /// make a working site unreachable.
    pub fn apply(&mut self, resolved: &Resolved) {
        for (name, entry) in self.map.iter_mut() {
            let Ok(peer) = entry else { continue };
            let Some(key) = host_name(&peer.url) else {
                continue;
            };
            let Some((_, r)) = resolved.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            match (r, &peer.addrs) {
                (Ok(a), _) => {
                    if peer.addrs.as_ref() != Ok(a) {
                        let mut p = Peer::clone(peer);
                        p.addrs = Ok(a.clone());
                        *peer = Rc::new(p);
                    }
                }
                (Err(why), Ok(_)) => {
                    log::warn!("site {name}: {why}; keeping its previous addresses");
                }
                (Err(why), Err(_)) => {
                    log::warn!("site {name}: {why}; resolved again on SIGHUP");
                    let mut p = Peer::clone(peer);
                    p.addrs = Err(why.clone());
                    *peer = Rc::new(p);
                }
            }
        }
    }

    /// The addresses this set has for a host name and port, if it resolved them.
    fn addrs_of(&self, key: &(String, u16)) -> Option<Vec<SocketAddr>> {
        self.map
            .values()
            .filter_map(|p| p.as_ref().ok())
            .filter(|p| host_name(&p.url).as_ref() == Some(key))
            .find_map(|p| p.addrs.as_ref().ok().cloned())
    }
}

fn load_one(name: &str, s: &SiteConfig, resolve: &Resolve<'_>) -> Result<Peer, LoadError> {
    let token = match &s.token_file {
        Some(path) => {
            Some(
                crate::auth::read_secret_file(path).map_err(|source| LoadError::Token {
                    site: name.to_string(),
                    source,
                })?,
            )
        }
        None => None,
    };
    for (key, path) in [
        ("ca-file", &s.ca_file),
        ("cert-file", &s.cert_file),
        ("key-file", &s.key_file),
    ] {
        if let Some(path) = path {
            crate::sys::fd::open_regular(path).map_err(|source| LoadError::File {
                site: name.to_string(),
                key,
                path: path.clone(),
                source,
            })?;
        }
    }
    // Read now, not per connection: the files are the operator's to replace, and a SIGHUP
    // makes a new configuration for the connections that start after it.
    let tls = match &s.url {
        PeerUrl::Https { .. } => {
            let cert = s.cert_file.as_deref().zip(s.key_file.as_deref());
            let config =
                crate::tls::client_config(s.ca_file.as_deref(), cert).map_err(|source| {
                    LoadError::Tls {
                        site: name.to_string(),
                        source: Box::new(source),
                    }
                })?;
            Some(config)
        }
        PeerUrl::Http { .. } | PeerUrl::Unix(_) => None,
    };
    let addrs = match (&s.url, host_name(&s.url)) {
        (PeerUrl::Unix(_), _) => Ok(Vec::new()),
        (PeerUrl::Http { port, .. } | PeerUrl::Https { port, .. }, None) => {
            // host_name is None for these only when the host is an IP address.
            Ok(s.url
                .ip()
                .map(|ip| SocketAddr::new(ip, *port))
                .into_iter()
                .collect())
        }
        (_, Some((host, port))) => match resolve {
            Resolve::Now => {
                let r = self::resolve(&host, port);
                if let Err(why) = &r {
                    log::warn!("site {name}: {why}; resolved again on SIGHUP");
                }
                r
            }
            Resolve::Keep(previous) => previous
                .addrs_of(&(host.clone(), port))
                .ok_or_else(|| format!("{host} is being resolved")),
        },
    };
    Ok(Peer {
        name: name.to_string(),
        url: s.url.clone(),
        addrs,
        token,
        tls,
        connect_timeout: s.connect_timeout,
        response_timeout: s.response_timeout,
    })
}

/// Why a forwarded request failed here rather than at the peer.
#[derive(Debug)]
pub enum Error {
    Wire(wire::WireError),
    /// The peer's configuration could not be loaded (its token file...).
    Unusable {
        site: String,
        reason: String,
    },
    /// No connection: refused, no such socket, no address.
    Unreachable {
        site: String,
        reason: String,
    },
    /// The peer did not accept the connection, or did not start its answer, in time.
    Timeout {
        site: String,
        what: &'static str,
    },
    /// The peer closed the connection or sent something that is not an answer.
    Peer {
        site: String,
        reason: String,
    },
    /// The client's token holds as many forwards to this site (whose token all clients
    /// share at the peer) as `limits.forwards-per-token-site` allows.
    Busy {
        site: String,
        limit: usize,
    },
    /// supd is stopping and the peer's answer did not start within the shutdown grace.
    Stopping {
        site: String,
    },
    /// TLS with an https peer failed: its certificate is not trusted or not for its name,
    /// it refused ours (or our lack of one), or the record layer broke.
    Tls {
        site: String,
        reason: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Wire(e) => write!(f, "{e}"),
            Error::Unusable { site, reason } => write!(f, "site {site:?} is not usable: {reason}"),
            Error::Unreachable { site, reason } => {
                write!(f, "site {site:?} is unreachable: {reason}")
            }
            Error::Timeout { site, what } => write!(f, "site {site:?} {what} in time"),
            Error::Peer { site, reason } => write!(f, "site {site:?}: {reason}"),
            Error::Tls { site, reason } => write!(f, "site {site:?}: {reason}"),
            Error::Busy { site, limit } => write!(
                f,
                "too many forwarded requests and sessions to site {site:?} for this token \
                 (limit {limit}: the site's token is shared by every client)"
            ),
            Error::Stopping { site } => write!(
                f,
                "supd is shutting down; site {site:?} did not answer in time"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<wire::WireError> for Error {
    fn from(e: wire::WireError) -> Error {
        Error::Wire(e)
    }
}

impl Error {
    /// The site the error names, for the error body.
    pub fn site(&self) -> Option<&str> {
        match self {
            Error::Wire(_) => None,
            Error::Unusable { site, .. }
            | Error::Unreachable { site, .. }
            | Error::Timeout { site, .. }
            | Error::Peer { site, .. }
            | Error::Tls { site, .. }
            | Error::Busy { site, .. }
            | Error::Stopping { site } => Some(site),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(host: &str, port: u16) -> SiteConfig {
        SiteConfig {
            url: PeerUrl::Http {
                host: host.into(),
                port,
            },
            token_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
        }
    }

    fn addrs(p: &Peers, name: &str) -> Result<Vec<SocketAddr>, String> {
        p.get(name).unwrap().unwrap().addrs.clone()
    }

    /// A reload on the loop (SIGHUP) resolves nothing: a site keeps the addresses it had, a
    /// new host name waits for the resolver's answer; a failed resolution later keeps what
    /// worked.
    #[test]
    fn a_reload_resolves_no_host_name_on_the_loop() {
        let mut sites = BTreeMap::new();
        sites.insert("b".to_string(), site("localhost", 4646));
        sites.insert("ip".to_string(), site("127.0.0.2", 1));
        let (before, errors) = Peers::load(&sites, Resolve::Now);
        assert!(errors.is_empty());
        let b_addrs = addrs(&before, "b").expect("localhost resolves");
        sites.insert("c".to_string(), site("peer-c.example.invalid", 4646));
        let t0 = std::time::Instant::now();
        let (mut after, _) = Peers::load(&sites, Resolve::Keep(&before));
        assert!(t0.elapsed() < Duration::from_millis(100));
        assert_eq!(addrs(&after, "b"), Ok(b_addrs.clone()));
        assert_eq!(
            addrs(&after, "ip"),
            Ok(vec!["127.0.0.2:1".parse().unwrap()])
        );
        let c = addrs(&after, "c").unwrap_err();
        assert!(c.contains("being resolved"), "{c}");
        assert_eq!(
            after.hosts(),
            vec![
                ("localhost".to_string(), 4646),
                ("peer-c.example.invalid".to_string(), 4646)
            ]
        );
        let c_addr: SocketAddr = "192.0.2.7:4646".parse().unwrap();
        after.apply(&vec![
            (("localhost".into(), 4646), Err("resolver down".into())),
            (("peer-c.example.invalid".into(), 4646), Ok(vec![c_addr])),
        ]);
        assert_eq!(addrs(&after, "b"), Ok(b_addrs));
        assert_eq!(addrs(&after, "c"), Ok(vec![c_addr]));
    }
}
