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
#[derive(Debug)]
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

impl Peers {
    /// Read what the sites need: token files (trusted as the tokens file is), the TLS files
    /// (readable), host names (resolved now, at start and on SIGHUP: the loop never waits for
    /// DNS). Every site is kept; the errors say which are unusable.
    pub fn load(sites: &BTreeMap<String, SiteConfig>) -> (Peers, Vec<LoadError>) {
        let mut map = HashMap::new();
        let mut errors = Vec::new();
        for (name, s) in sites {
            match load_one(name, s) {
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
}

fn load_one(name: &str, s: &SiteConfig) -> Result<Peer, LoadError> {
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
    let addrs = match &s.url {
        PeerUrl::Unix(_) => Ok(Vec::new()),
        PeerUrl::Http { host, port } | PeerUrl::Https { host, port } => match s.url.ip() {
            Some(ip) => Ok(vec![SocketAddr::new(ip, *port)]),
            None => match (host.as_str(), *port).to_socket_addrs() {
                Ok(a) => {
                    let a: Vec<SocketAddr> = a.collect();
                    if a.is_empty() {
                        Err(format!("{host} has no address"))
                    } else {
                        Ok(a)
                    }
                }
                Err(e) => Err(format!("cannot resolve {host}: {e}")),
            },
        },
    };
    if let Err(why) = &addrs {
        log::warn!("site {name}: {why}; resolved again on SIGHUP");
    }
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
            | Error::Stopping { site } => Some(site),
        }
    }
}
