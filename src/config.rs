//! Configuration: defaults, the YAML file and the command line, in that order of precedence.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::Operation;
use crate::sites::url::{self as peer_url, PeerUrl};

pub const DEFAULT_CONFIG: &str = "/etc/supd/supd.yaml";
pub const DEFAULT_TOKENS: &str = "/etc/supd/tokens.yaml";
/// The first-start admin token is written beside the tokens file under this name.
pub const BOOTSTRAP_TOKEN_FILE_NAME: &str = "admin.token";
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Configuration files are small; a larger one is a mistake, not something to read.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Tenant names are DNS labels: they end up inside instance names and host-like identifiers.
const MAX_TENANT_LEN: usize = 63;
const MAX_NAME_LEN: usize = 253;

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;

    /// `127.0.0.1:4646`, `[::1]:4646` or `unix:/absolute/path`. Host names are not resolved:
    /// a daemon that binds where DNS says at start-up binds somewhere surprising.
    fn from_str(s: &str) -> std::result::Result<ListenAddr, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!("{s:?}: a unix socket path must be absolute"));
            }
            if path.contains('\0') {
                return Err(format!("{s:?}: NUL in path"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(ListenAddr::Tcp)
            .map_err(|_| format!("{s:?} is not IP:PORT, [IPv6]:PORT or unix:/PATH"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// TLS on a TCP listener: `listen: [{address: ..., tls: {cert-file, key-file,
/// client-ca-file}}]`. Paths are as given (relative ones resolved against the file's
/// directory); the files are read when the listener starts and on SIGHUP (`crate::tls`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerTls {
    /// The certificate chain, PEM, the server's own certificate first.
    pub cert_file: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// When set, clients must present a certificate issued by a CA in this PEM file.
    pub client_ca_file: Option<PathBuf>,
}

/// Limits on each HTTP connection and on how many there are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub head_bytes: usize,
    pub body_bytes: usize,
    pub head_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// A connection none of whose requests has passed auth yet is closed this long after
    /// it was accepted (an OPTIONS or a refused request does not extend it).
    pub preauth_timeout: Duration,
    /// Unauthenticated connections one peer address may hold at once (unix-socket peers
    /// are exempt).
    pub preauth_per_peer: usize,
    /// Connection slots unauthenticated connections may not take (at most half of
    /// `max_connections`): when the rest is full, the oldest unauthenticated one is closed.
    pub reserved_connections: usize,
    /// Connections (plus websocket sessions and operations) one token may hold at once,
    /// counted when a request passes auth: one token cannot take every slot.
    pub connections_per_token: usize,
    /// A connection whose queued answer makes no write progress this long is closed (its
    /// answer would otherwise pin memory until the idle timeout).
    pub write_timeout: Duration,
    /// Forwarded requests and sessions one client token may hold at once towards one site
    /// that has a `token-file` (all clients share that token at the peer, whose
    /// `connections-per-token` caps them together). None: a quarter of
    /// `connections_per_token` (see [`Limits::forwards_per_token_site`]).
    pub forwards_per_token_site: Option<usize>,
}

impl Limits {
    /// `limits.forwards-per-token-site`, or its default: a quarter of
    /// `connections-per-token` (at least 1), so that one client cannot take all of a shared
    /// site token's connections at the peer.
    pub fn forwards_per_token_site(&self) -> usize {
        self.forwards_per_token_site
            .unwrap_or((self.connections_per_token / 4).max(1))
    }
}

/// Default of `limits.connections-per-token`: a quarter of the default `max-connections`.
pub const DEFAULT_CONNECTIONS_PER_TOKEN: usize = 256;
/// Default of `limits.write-timeout-ms`.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            head_bytes: 16 << 10,
            body_bytes: 1 << 20,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            preauth_timeout: Duration::from_secs(5),
            preauth_per_peer: 128,
            reserved_connections: 128,
            connections_per_token: DEFAULT_CONNECTIONS_PER_TOKEN,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            forwards_per_token_site: None,
        }
    }
}

/// Non-interactive exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSettings {
    /// Bytes of stdout (and of stderr) kept per command.
    pub output_cap: usize,
    /// Time between SIGTERM and SIGKILL when a command is stopped.
    pub kill_grace: Duration,
}

impl Default for ExecSettings {
    fn default() -> ExecSettings {
        ExecSettings {
            output_cap: 1 << 20,
            kill_grace: Duration::from_secs(2),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsSettings {
    pub ping_interval: Duration,
    /// A peer silent this long (no pong, no frame) is gone; None: two and a half intervals.
    pub ping_timeout: Option<Duration>,
    /// None: a websocket session may stay silent for ever (pings still detect dead peers).
    pub idle_timeout: Option<Duration>,
    pub max_message: usize,
    pub max_frame: usize,
    pub write_buffer: usize,
    /// Origins allowed to open websockets; empty: only requests without `Origin` or whose
    /// `Origin` names the `Host` they were sent to.
    pub allowed_origins: Vec<String>,
}

impl Default for WsSettings {
    fn default() -> WsSettings {
        WsSettings {
            ping_interval: Duration::from_secs(30),
            ping_timeout: None,
            idle_timeout: None,
            // supd's protocols are streams of small messages, and what a session may hold
            // (a frame being read, an unfinished message) follows these. 68 KiB: a UDP
            // datagram (65,507 bytes) or a 64 KiB chunk, with a type byte, is one frame.
            max_message: 68 << 10,
            max_frame: 68 << 10,
            write_buffer: 256 << 10,
            allowed_origins: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectSettings {
    pub connect_timeout: Duration,
}

impl Default for ConnectSettings {
    fn default() -> ConnectSettings {
        ConnectSettings {
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Default of `sites.<name>.connect-timeout-ms`.
pub const DEFAULT_SITE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of `sites.<name>.response-timeout-ms`: how long a peer may take to start its
/// answer (an exec's answer comes when the command ends).
pub const DEFAULT_SITE_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A peer supd that `site=<name>` requests are forwarded to. The files are read when the
/// server loads the sites (`crate::sites::Peers::load`), at start and on SIGHUP (host names:
/// at start, and off the loop after a SIGHUP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteConfig {
    pub url: PeerUrl,
    /// The token supd presents to the peer instead of the client's own.
    pub token_file: Option<PathBuf>,
    /// Trust for an https peer (otherwise the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for mutual TLS with an https peer.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub listen: Vec<ListenAddr>,
    /// The TCP listeners that serve TLS, by address (socket-activated ones too); the others
    /// are plain.
    pub listen_tls: Vec<(SocketAddr, ListenerTls)>,
    pub tokens: PathBuf,
    /// The tokens path was not chosen by the operator (neither flag nor file).
    pub tokens_is_default: bool,
    /// Where the first-start admin token goes: `admin.token` beside the tokens file.
    pub bootstrap_token_file: PathBuf,
    pub docker_socket: PathBuf,
    pub tenant: String,
    pub site: String,
    pub host: String,
    pub limits: Limits,
    pub exec: ExecSettings,
    pub ws: WsSettings,
    pub connect: ConnectSettings,
    /// Peer sites by name.
    pub sites: BTreeMap<String, SiteConfig>,
    /// The configuration file that was read, if any (to read it again on SIGHUP).
    pub config_file: Option<PathBuf>,
}

impl Config {
    fn with_host(host: String) -> Config {
        let tokens = PathBuf::from(DEFAULT_TOKENS);
        Config {
            listen: vec![ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 4646)))],
            listen_tls: Vec::new(),
            bootstrap_token_file: bootstrap_file_beside(&tokens),
            tokens,
            tokens_is_default: true,
            docker_socket: PathBuf::from(DEFAULT_DOCKER_SOCKET),
            tenant: "default".to_owned(),
            site: "local".to_owned(),
            host,
            limits: Limits::default(),
            exec: ExecSettings::default(),
            ws: WsSettings::default(),
            connect: ConnectSettings::default(),
            sites: BTreeMap::new(),
            config_file: None,
        }
    }
}

impl Default for Config {
    /// The built-in defaults; `host` is the system's hostname, or `localhost` if it cannot be
    /// read (`parse_args` reports that failure instead).
    fn default() -> Config {
        Config::with_host(system_hostname().unwrap_or_else(|_| "localhost".to_owned()))
    }
}

fn bootstrap_file_beside(tokens: &Path) -> PathBuf {
    match tokens.parent() {
        Some(dir) => dir.join(BOOTSTRAP_TOKEN_FILE_NAME),
        None => PathBuf::from(BOOTSTRAP_TOKEN_FILE_NAME),
    }
}

fn system_hostname() -> Result<String> {
    let name = nix::unistd::gethostname().map_err(Error::Hostname)?;
    name.into_string()
        .map_err(|_| invalid("hostname", "the system's hostname is not UTF-8".to_owned()))
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Run(Config),
    CheckConfig(Config),
    TokenCreate {
        tokens: PathBuf,
        name: String,
        operations: Vec<Operation>,
        applications: Vec<String>,
    },
    Version,
    /// The text to print.
    Help(String),
}

#[derive(Debug)]
pub enum Error {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    /// The file is not YAML of the expected shape (unknown key, wrong type); the source says
    /// where.
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    /// The command line is malformed.
    Usage(String),
    /// A value is not acceptable; `what` names the flag or the file and key.
    Invalid {
        what: String,
        message: String,
    },
    Hostname(nix::errno::Errno),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Parse { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Usage(message) => write!(f, "{message} (see supd --help)"),
            Error::Invalid { what, message } => write!(f, "{what}: {message}"),
            Error::Hostname(errno) => write!(f, "gethostname: {errno}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Parse { source, .. } => Some(source),
            Error::Hostname(errno) => Some(errno),
            _ => None,
        }
    }
}

fn invalid(what: impl Into<String>, message: String) -> Error {
    Error::Invalid {
        what: what.into(),
        message,
    }
}

/// The configuration file as written: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub listen: Option<Vec<FileListen>>,
    pub tokens: Option<PathBuf>,
    pub docker_socket: Option<PathBuf>,
    pub tenant: Option<String>,
    pub site: Option<String>,
    pub host: Option<String>,
    pub limits: Option<FileLimits>,
    pub exec: Option<FileExec>,
    pub websocket: Option<FileWs>,
    pub connect: Option<FileConnect>,
    pub sites: Option<BTreeMap<String, FileSite>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSite {
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub connect_timeout_ms: Option<u64>,
    pub response_timeout_ms: Option<u64>,
}

/// One `listen:` entry: an address, or an address with TLS settings.
#[derive(Debug)]
pub enum FileListen {
    Addr(String),
    Entry(FileListenEntry),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileListenEntry {
    pub address: String,
    pub tls: Option<FileTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
}

/// A string or a map, each with its own error messages (serde's untagged enums would say
/// only that nothing matched).
impl<'de> Deserialize<'de> for FileListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FileListen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address or {address, tls}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<FileListen, E> {
                Ok(FileListen::Addr(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<FileListen, A::Error> {
                FileListenEntry::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(FileListen::Entry)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileLimits {
    pub head_bytes: Option<usize>,
    pub body_bytes: Option<usize>,
    pub head_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub max_connections: Option<usize>,
    pub preauth_timeout_ms: Option<u64>,
    pub preauth_connections_per_peer: Option<usize>,
    pub reserved_connections: Option<usize>,
    pub connections_per_token: Option<usize>,
    pub write_timeout_ms: Option<u64>,
    pub forwards_per_token_site: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileExec {
    pub output_cap: Option<usize>,
    pub kill_grace_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileWs {
    pub ping_interval_ms: Option<u64>,
    pub ping_timeout_ms: Option<u64>,
    /// 0 switches the idle timeout off.
    pub idle_timeout_ms: Option<u64>,
    pub max_message: Option<usize>,
    pub max_frame: Option<usize>,
    pub write_buffer: Option<usize>,
    pub allowed_origins: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConnect {
    pub connect_timeout_ms: Option<u64>,
}

pub fn load_file(path: &Path) -> Result<FileConfig> {
    let io_err = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io_err)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(invalid(
            path.display().to_string(),
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    parse_file(&text, path)
}

/// `path` only names the file in errors.
pub fn parse_file(yaml: &str, path: &Path) -> Result<FileConfig> {
    // An empty file (or one of comments only) is an empty configuration, not an error.
    if yaml
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(FileConfig::default());
    }
    serde_yaml::from_str(yaml).map_err(|source| Error::Parse {
        path: path.to_owned(),
        source,
    })
}

/// The configuration a file's text gives over the defaults, without reading anything (for
/// the fuzzer); `path` names the file in errors and anchors its relative paths.
pub fn from_file_text(yaml: &str, path: &Path) -> Result<Config> {
    let mut c = Config::with_host("localhost".to_owned());
    apply_file(&mut c, parse_file(yaml, path)?, path)?;
    Ok(c)
}

fn positive_usize(v: usize) -> std::result::Result<usize, String> {
    if v == 0 {
        Err("must be greater than 0".to_owned())
    } else {
        Ok(v)
    }
}

fn positive_ms(v: u64) -> std::result::Result<Duration, String> {
    if v == 0 {
        Err("must be greater than 0".to_owned())
    } else {
        Ok(Duration::from_millis(v))
    }
}

fn check_tenant(v: &str) -> std::result::Result<(), String> {
    let inner_ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-';
    let end_ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = v.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_TENANT_LEN
        && b.first().is_some_and(end_ok)
        && b.last().is_some_and(end_ok)
        && b.iter().copied().all(inner_ok);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} must match ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ and be at most {MAX_TENANT_LEN} characters"
        ))
    }
}

/// Site and host names are reported as they are; they only need to be printable and bounded.
fn check_name(v: &str) -> std::result::Result<(), String> {
    if v.is_empty()
        || v.len() > MAX_NAME_LEN
        || v.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        Err(format!(
            "{v:?} must be 1 to {MAX_NAME_LEN} bytes without spaces or control characters"
        ))
    } else {
        Ok(())
    }
}

fn check_path(v: &Path) -> std::result::Result<(), String> {
    if v.as_os_str().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(())
    }
}

/// Apply the file's settings over `c`. Relative paths in the file are relative to the file's
/// directory, so a configuration means the same whatever the working directory.
fn apply_file(c: &mut Config, file: FileConfig, path: &Path) -> Result<()> {
    let at = |key: &str| format!("{}: {key}", path.display());
    let dir = path.parent().unwrap_or(Path::new("/"));
    let resolve = |p: PathBuf| if p.is_relative() { dir.join(p) } else { p };
    if let Some(listen) = file.listen {
        (c.listen, c.listen_tls) = parse_file_listen(listen, &at, &resolve)?;
        if c.listen.is_empty() {
            return Err(invalid(at("listen"), "must not be empty".to_owned()));
        }
    }
    if let Some(tokens) = file.tokens {
        check_path(&tokens).map_err(|m| invalid(at("tokens"), m))?;
        c.tokens = resolve(tokens);
        c.tokens_is_default = false;
    }
    if let Some(socket) = file.docker_socket {
        check_path(&socket).map_err(|m| invalid(at("docker-socket"), m))?;
        c.docker_socket = resolve(socket);
    }
    if let Some(tenant) = file.tenant {
        check_tenant(&tenant).map_err(|m| invalid(at("tenant"), m))?;
        c.tenant = tenant;
    }
    if let Some(site) = file.site {
        check_name(&site).map_err(|m| invalid(at("site"), m))?;
        c.site = site;
    }
    if let Some(host) = file.host {
        check_name(&host).map_err(|m| invalid(at("host"), m))?;
        c.host = host;
    }
    let size = |v: Option<usize>, key: &str, out: &mut usize| -> Result<()> {
        if let Some(v) = v {
            *out = positive_usize(v).map_err(|m| invalid(at(key), m))?;
        }
        Ok(())
    };
    let ms = |v: Option<u64>, key: &str, out: &mut Duration| -> Result<()> {
        if let Some(v) = v {
            *out = positive_ms(v).map_err(|m| invalid(at(key), m))?;
        }
        Ok(())
    };
    let l = file.limits.unwrap_or_default();
    size(l.head_bytes, "limits.head-bytes", &mut c.limits.head_bytes)?;
    size(l.body_bytes, "limits.body-bytes", &mut c.limits.body_bytes)?;
    ms(
        l.head_timeout_ms,
        "limits.head-timeout-ms",
        &mut c.limits.head_timeout,
    )?;
    ms(
        l.idle_timeout_ms,
        "limits.idle-timeout-ms",
        &mut c.limits.idle_timeout,
    )?;
    size(
        l.max_connections,
        "limits.max-connections",
        &mut c.limits.max_connections,
    )?;
    ms(
        l.preauth_timeout_ms,
        "limits.preauth-timeout-ms",
        &mut c.limits.preauth_timeout,
    )?;
    size(
        l.preauth_connections_per_peer,
        "limits.preauth-connections-per-peer",
        &mut c.limits.preauth_per_peer,
    )?;
    // No reserve at all is a valid choice.
    if let Some(v) = l.reserved_connections {
        c.limits.reserved_connections = v;
    }
    size(
        l.connections_per_token,
        "limits.connections-per-token",
        &mut c.limits.connections_per_token,
    )?;
    ms(
        l.write_timeout_ms,
        "limits.write-timeout-ms",
        &mut c.limits.write_timeout,
    )?;
    if let Some(v) = l.forwards_per_token_site {
        let mut n = 0;
        size(Some(v), "limits.forwards-per-token-site", &mut n)?;
        c.limits.forwards_per_token_site = Some(n);
    }
    let e = file.exec.unwrap_or_default();
    size(e.output_cap, "exec.output-cap", &mut c.exec.output_cap)?;
    ms(
        e.kill_grace_ms,
        "exec.kill-grace-ms",
        &mut c.exec.kill_grace,
    )?;
    let w = file.websocket.unwrap_or_default();
    ms(
        w.ping_interval_ms,
        "websocket.ping-interval-ms",
        &mut c.ws.ping_interval,
    )?;
    if let Some(v) = w.ping_timeout_ms {
        let t = positive_ms(v).map_err(|m| invalid(at("websocket.ping-timeout-ms"), m))?;
        c.ws.ping_timeout = Some(t);
    }
    if let Some(v) = w.idle_timeout_ms {
        c.ws.idle_timeout = (v > 0).then(|| Duration::from_millis(v));
    }
    size(
        w.max_message,
        "websocket.max-message",
        &mut c.ws.max_message,
    )?;
    size(w.max_frame, "websocket.max-frame", &mut c.ws.max_frame)?;
    size(
        w.write_buffer,
        "websocket.write-buffer",
        &mut c.ws.write_buffer,
    )?;
    if c.ws.max_frame > c.ws.max_message {
        return Err(invalid(
            at("websocket.max-frame"),
            format!(
                "{} is larger than websocket.max-message ({})",
                c.ws.max_frame, c.ws.max_message
            ),
        ));
    }
    if let Some(origins) = w.allowed_origins {
        if let Some(i) = origins.iter().position(|o| check_name(o).is_err()) {
            return Err(invalid(
                at(&format!("websocket.allowed-origins[{i}]")),
                format!("{:?} is not an origin", origins[i]),
            ));
        }
        c.ws.allowed_origins = origins;
    }
    let k = file.connect.unwrap_or_default();
    ms(
        k.connect_timeout_ms,
        "connect.connect-timeout-ms",
        &mut c.connect.connect_timeout,
    )?;
    if let Some(sites) = file.sites {
        c.sites = BTreeMap::new();
        for (name, f) in sites {
            let key = |k: &str| at(&format!("sites.{name}.{k}"));
            check_name(&name).map_err(|m| invalid(at("sites"), m))?;
            let url = peer_url::parse(&f.url).map_err(|m| invalid(key("url"), m))?;
            let file_path = |p: Option<PathBuf>, k: &str| -> Result<Option<PathBuf>> {
                match p {
                    Some(p) => {
                        check_path(&p).map_err(|m| invalid(key(k), m))?;
                        Ok(Some(resolve(p)))
                    }
                    None => Ok(None),
                }
            };
            let token_file = file_path(f.token_file, "token-file")?;
            let ca_file = file_path(f.ca_file, "ca-file")?;
            let cert_file = file_path(f.cert_file, "cert-file")?;
            let key_file = file_path(f.key_file, "key-file")?;
            if !url.is_tls() {
                for (set, k) in [
                    (ca_file.is_some(), "ca-file"),
                    (cert_file.is_some(), "cert-file"),
                    (key_file.is_some(), "key-file"),
                ] {
                    if set {
                        return Err(invalid(key(k), "applies to https:// peers only".to_owned()));
                    }
                }
            }
            if cert_file.is_some() != key_file.is_some() {
                return Err(invalid(
                    key("cert-file"),
                    "cert-file and key-file go together".to_owned(),
                ));
            }
            let mut site = SiteConfig {
                url,
                token_file,
                ca_file,
                cert_file,
                key_file,
                connect_timeout: DEFAULT_SITE_CONNECT_TIMEOUT,
                response_timeout: DEFAULT_SITE_RESPONSE_TIMEOUT,
            };
            ms(
                f.connect_timeout_ms,
                &format!("sites.{name}.connect-timeout-ms"),
                &mut site.connect_timeout,
            )?;
            ms(
                f.response_timeout_ms,
                &format!("sites.{name}.response-timeout-ms"),
                &mut site.response_timeout,
            )?;
            c.sites.insert(name, site);
        }
    }
    Ok(())
}

/// The `sites:` of the configuration file read again (SIGHUP), checked as at start-up; the
/// rest of the running configuration stays as it is.
pub fn reload_sites(c: &Config) -> Result<BTreeMap<String, SiteConfig>> {
    let Some(path) = &c.config_file else {
        return Ok(c.sites.clone());
    };
    let mut fresh = c.clone();
    fresh.sites = BTreeMap::new();
    apply_file(&mut fresh, load_file(path)?, path)?;
    fresh.site = c.site.clone();
    check_sites(&fresh)?;
    Ok(fresh.sites)
}

/// No peer may carry this site's own name: `site=<own name>` is always served here.
fn check_sites(c: &Config) -> Result<()> {
    if c.sites.contains_key(&c.site) {
        return Err(invalid(
            format!("sites.{}", c.site),
            "a peer cannot have this site's own name".to_owned(),
        ));
    }
    Ok(())
}

type Listen = (Vec<ListenAddr>, Vec<(SocketAddr, ListenerTls)>);

/// The file's `listen:` entries: the addresses, and TLS settings for those that have them
/// (TCP only: a unix socket is local, plain as its peers' credentials are the kernel's).
fn parse_file_listen(
    list: Vec<FileListen>,
    at: &impl Fn(&str) -> String,
    resolve: &impl Fn(PathBuf) -> PathBuf,
) -> Result<Listen> {
    let mut addrs = Vec::new();
    let mut tls = Vec::new();
    for (i, entry) in list.into_iter().enumerate() {
        let key = |k: &str| at(&format!("listen[{i}]{k}"));
        let (text, files) = match entry {
            FileListen::Addr(a) => (a, None),
            FileListen::Entry(e) => (e.address, e.tls),
        };
        let addr: ListenAddr = text.parse().map_err(|m| invalid(key(""), m))?;
        if addrs.contains(&addr) {
            return Err(invalid(key(""), format!("{addr} is listed twice")));
        }
        if let Some(f) = files {
            let ListenAddr::Tcp(sa) = addr else {
                return Err(invalid(
                    key(".tls"),
                    "TLS is for TCP listeners, not unix sockets".to_owned(),
                ));
            };
            let path = |p: PathBuf, k: &str| -> Result<PathBuf> {
                check_path(&p).map_err(|m| invalid(key(&format!(".tls.{k}")), m))?;
                Ok(resolve(p))
            };
            let files = ListenerTls {
                cert_file: path(f.cert_file, "cert-file")?,
                key_file: path(f.key_file, "key-file")?,
                client_ca_file: match f.client_ca_file {
                    Some(p) => Some(path(p, "client-ca-file")?),
                    None => None,
                },
            };
            tls.push((sa, files));
        }
        addrs.push(addr);
    }
    Ok((addrs, tls))
}

fn parse_listen(list: &[String], what: impl Fn(usize) -> String) -> Result<Vec<ListenAddr>> {
    list.iter()
        .enumerate()
        .map(|(i, s)| s.parse().map_err(|m| invalid(what(i), m)))
        .collect()
}

/// Flags shared by `supd` and `supd check-config`.
#[derive(Debug, Default)]
struct RunFlags {
    config: Option<PathBuf>,
    listen: Vec<String>,
    tokens: Option<PathBuf>,
    docker_socket: Option<PathBuf>,
    tenant: Option<String>,
    site: Option<String>,
    host: Option<String>,
}

/// One parsed command-line item.
enum Arg {
    /// `--name value` or `--name=value`.
    Flag(String, String),
    Help,
    Version,
}

/// Splits the command line into flags. Flags that take no value are recognised by name, so a
/// value is never mistaken for one of them.
struct Args<I: Iterator<Item = String>> {
    inner: I,
}

impl<I: Iterator<Item = String>> Iterator for Args<I> {
    type Item = Result<Arg>;

    fn next(&mut self) -> Option<Result<Arg>> {
        let arg = self.inner.next()?;
        Some(self.parse(arg))
    }
}

impl<I: Iterator<Item = String>> Args<I> {
    fn parse(&mut self, arg: String) -> Result<Arg> {
        match arg.as_str() {
            "--help" | "-h" => return Ok(Arg::Help),
            "--version" | "-V" => return Ok(Arg::Version),
            _ => {}
        }
        let Some(body) = arg.strip_prefix("--").filter(|b| !b.is_empty()) else {
            return Err(Error::Usage(format!("unexpected argument {arg:?}")));
        };
        if let Some((name, value)) = body.split_once('=') {
            return Ok(Arg::Flag(name.to_owned(), value.to_owned()));
        }
        match self.inner.next() {
            // A value that looks like a flag is far more likely a forgotten value.
            Some(value) if !value.starts_with("--") => Ok(Arg::Flag(body.to_owned(), value)),
            _ => Err(Error::Usage(format!("--{body} needs a value"))),
        }
    }
}

fn non_empty(flag: &str, value: String) -> Result<String> {
    if value.is_empty() {
        Err(Error::Usage(format!("--{flag} needs a value")))
    } else {
        Ok(value)
    }
}

/// Parse the command line, without argv[0], reading `/etc/supd/supd.yaml` when no `--config`
/// is given and that file exists.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command> {
    parse_args_with(args, Path::new(DEFAULT_CONFIG))
}

/// `parse_args` with another implicit configuration file (for tests).
pub fn parse_args_with(
    args: impl IntoIterator<Item = String>,
    default_config: &Path,
) -> Result<Command> {
    let mut args = args.into_iter().peekable();
    match args.peek().map(String::as_str) {
        Some("check-config") => {
            args.next();
            match parse_run_flags(args)? {
                Ok(flags) => Ok(Command::CheckConfig(build_config(flags, default_config)?)),
                Err(other) => Ok(other),
            }
        }
        Some("token") => {
            args.next();
            match args.next().as_deref() {
                Some("create") => parse_token_create(args, default_config),
                None | Some("--help" | "-h" | "help") => Ok(Command::Help(usage().to_owned())),
                Some(other) => Err(Error::Usage(format!("unknown token command {other:?}"))),
            }
        }
        Some("help") => Ok(Command::Help(usage().to_owned())),
        _ => match parse_run_flags(args)? {
            Ok(flags) => Ok(Command::Run(build_config(flags, default_config)?)),
            Err(other) => Ok(other),
        },
    }
}

/// The flags, or the command that `--help` / `--version` turns the line into.
fn parse_run_flags(
    args: impl Iterator<Item = String>,
) -> Result<std::result::Result<RunFlags, Command>> {
    let mut flags = RunFlags::default();
    for arg in (Args { inner: args }) {
        let (name, value) = match arg? {
            Arg::Help => return Ok(Err(Command::Help(usage().to_owned()))),
            Arg::Version => return Ok(Err(Command::Version)),
            Arg::Flag(name, value) => (name, value),
        };
        let value = non_empty(&name, value)?;
        match name.as_str() {
            "config" => flags.config = Some(PathBuf::from(value)),
            "listen" => flags.listen.push(value),
            "tokens" => flags.tokens = Some(PathBuf::from(value)),
            "docker-socket" => flags.docker_socket = Some(PathBuf::from(value)),
            "tenant" => flags.tenant = Some(value),
            "site" => flags.site = Some(value),
            "host" => flags.host = Some(value),
            _ => return Err(Error::Usage(format!("unknown flag --{name}"))),
        }
    }
    Ok(Ok(flags))
}

/// The explicitly named file, or the default one if it exists.
fn read_config_file(
    explicit: Option<PathBuf>,
    default_config: &Path,
) -> Result<Option<(FileConfig, PathBuf)>> {
    let path = match explicit {
        Some(path) => path,
        None => {
            let exists = default_config.try_exists().map_err(|source| Error::Io {
                path: default_config.to_owned(),
                source,
            })?;
            if !exists {
                return Ok(None);
            }
            default_config.to_owned()
        }
    };
    Ok(Some((load_file(&path)?, path)))
}

fn build_config(flags: RunFlags, default_config: &Path) -> Result<Config> {
    let file = read_config_file(flags.config, default_config)?;
    let host_given = flags.host.is_some() || file.as_ref().is_some_and(|(f, _)| f.host.is_some());
    // The system's hostname is only needed (and its failure only matters) when nobody named
    // the host.
    let mut c = Config::with_host(if host_given {
        String::new()
    } else {
        system_hostname()?
    });
    if let Some((file, path)) = file {
        apply_file(&mut c, file, &path)?;
        c.config_file = Some(path);
    }
    if !flags.listen.is_empty() {
        c.listen = parse_listen(&flags.listen, |_| "--listen".to_owned())?;
        // The flags replace the file's whole list, its TLS settings with it.
        c.listen_tls.clear();
    }
    if let Some(tokens) = flags.tokens {
        c.tokens = tokens;
        c.tokens_is_default = false;
    }
    if let Some(socket) = flags.docker_socket {
        c.docker_socket = socket;
    }
    if let Some(tenant) = flags.tenant {
        check_tenant(&tenant).map_err(|m| invalid("--tenant", m))?;
        c.tenant = tenant;
    }
    if let Some(site) = flags.site {
        check_name(&site).map_err(|m| invalid("--site", m))?;
        c.site = site;
    }
    if let Some(host) = flags.host {
        check_name(&host).map_err(|m| invalid("--host", m))?;
        c.host = host;
    }
    check_name(&c.host).map_err(|m| invalid("host", m))?;
    check_sites(&c)?;
    c.bootstrap_token_file = bootstrap_file_beside(&c.tokens);
    Ok(c)
}

fn parse_token_create(
    args: impl Iterator<Item = String>,
    default_config: &Path,
) -> Result<Command> {
    let mut name = None;
    let mut operations = vec![Operation::Read];
    let mut applications = vec!["*".to_owned()];
    let mut tokens = None;
    let mut config = None;
    for arg in (Args { inner: args }) {
        let (flag, value) = match arg? {
            Arg::Help => return Ok(Command::Help(usage().to_owned())),
            Arg::Version => return Ok(Command::Version),
            Arg::Flag(flag, value) => (flag, value),
        };
        let value = non_empty(&flag, value)?;
        match flag.as_str() {
            "name" => name = Some(value),
            "operations" => {
                operations = split_list(&flag, &value)?
                    .into_iter()
                    .map(|op| {
                        op.parse()
                            .map_err(|e| invalid("--operations", format!("{e}")))
                    })
                    .collect::<Result<_>>()?;
            }
            "applications" => {
                applications = split_list(&flag, &value)?
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
            }
            "tokens" => tokens = Some(PathBuf::from(value)),
            "config" => config = Some(PathBuf::from(value)),
            _ => {
                return Err(Error::Usage(format!(
                    "unknown flag --{flag} for token create"
                )));
            }
        }
    }
    let name = name.ok_or_else(|| Error::Usage("token create needs --name".to_owned()))?;
    let tokens = match tokens {
        Some(path) => path,
        None => match read_config_file(config, default_config)? {
            Some((
                FileConfig {
                    tokens: Some(t), ..
                },
                path,
            )) if t.is_relative() => path.parent().unwrap_or(Path::new("/")).join(t),
            Some((
                FileConfig {
                    tokens: Some(t), ..
                },
                _,
            )) => t,
            _ => PathBuf::from(DEFAULT_TOKENS),
        },
    };
    Ok(Command::TokenCreate {
        tokens,
        name,
        operations,
        applications,
    })
}

fn split_list<'a>(flag: &str, value: &'a str) -> Result<Vec<&'a str>> {
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err(invalid(
            format!("--{flag}"),
            format!("empty item in {value:?}"),
        ));
    }
    Ok(items)
}

pub fn usage() -> &'static str {
    "\
supd: the service-instance API of an edge host, on top of the Docker engine

Usage:
  supd [OPTIONS]                 run the daemon
  supd check-config [OPTIONS]    check the configuration and exit
  supd token create --name NAME [--operations OPS] [--applications GLOBS]
                    [--tokens FILE] [--config FILE]
                                 add a token to the tokens file and print it once
  supd --version | --help

Options:
  --config FILE          configuration file (default /etc/supd/supd.yaml, read if it exists)
  --listen ADDR          where to listen, repeatable; replaces the file's list:
                         127.0.0.1:4646, [::1]:4646 or unix:/run/supd/supd.sock
                         (default 127.0.0.1:4646; ignored under socket activation)
  --tokens FILE          tokens file (default /etc/supd/tokens.yaml)
  --docker-socket PATH   Docker engine socket (default /var/run/docker.sock)
  --tenant NAME          tenant in instance names (default \"default\")
  --site NAME            site name (default \"local\")
  --host NAME            host name (default: the system's hostname)

token create:
  --name NAME            the entry's name: letters, digits, '-', '_', '.'
  --operations OPS       comma-separated from read, exec, connect, restart (default read)
  --applications GLOBS   comma-separated shell globs on application names (default *)

Flags take \"--flag value\" or \"--flag=value\". Flags override the configuration file.
"
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn temp_dir(tag: &str) -> PathBuf {
        let mut r = [0u8; 8];
        crate::sys::fd::getrandom(&mut r).unwrap();
        let suffix: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("supd-config-{tag}-{suffix}"));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn no_default() -> PathBuf {
        PathBuf::from("/nonexistent/supd-test/supd.yaml")
    }

    fn parse(args: &[&str]) -> Result<Command> {
        parse_args_with(args.iter().map(|s| s.to_string()), &no_default())
    }

    fn run(args: &[&str]) -> Config {
        match parse(args).unwrap() {
            Command::Run(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn err(args: &[&str]) -> String {
        parse(args).unwrap_err().to_string()
    }

    #[test]
    fn defaults_without_file() {
        let c = run(&[]);
        assert_eq!(
            c.listen,
            vec![ListenAddr::Tcp("127.0.0.1:4646".parse().unwrap())]
        );
        assert_eq!(c.tokens, Path::new(DEFAULT_TOKENS));
        assert!(c.tokens_is_default);
        assert_eq!(c.bootstrap_token_file, Path::new("/etc/supd/admin.token"));
        assert_eq!(c.docker_socket, Path::new("/var/run/docker.sock"));
        assert_eq!(c.tenant, "default");
        assert_eq!(c.site, "local");
        assert!(!c.host.is_empty());
        assert_eq!(c.limits.head_bytes, 16384);
        assert_eq!(c.limits.body_bytes, 1 << 20);
        assert_eq!(c.limits.head_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.limits.max_connections, 1024);
        assert_eq!(c.exec, ExecSettings::default());
        assert_eq!(c.ws.ping_interval, Duration::from_secs(30));
        assert_eq!(c.ws.idle_timeout, None);
        assert_eq!(c.ws.max_frame, 68 << 10);
        assert_eq!(c.ws.max_message, 68 << 10);
        assert_eq!(c.connect.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.config_file, None);
        let d = Config::default();
        assert_eq!(d.listen, c.listen);
        assert_eq!(d.limits, c.limits);
    }

    #[test]
    fn flags_both_forms() {
        let c = run(&[
            "--listen",
            "[::1]:9000",
            "--listen=unix:/run/supd/supd.sock",
            "--tokens=/tmp/t.yaml",
            "--docker-socket",
            "/d.sock",
            "--tenant",
            "acme-1",
            "--site=berlin",
            "--host",
            "edge7",
        ]);
        assert_eq!(
            c.listen,
            vec![
                ListenAddr::Tcp("[::1]:9000".parse().unwrap()),
                ListenAddr::Unix("/run/supd/supd.sock".into())
            ]
        );
        assert_eq!(c.tokens, Path::new("/tmp/t.yaml"));
        assert!(!c.tokens_is_default);
        assert_eq!(c.bootstrap_token_file, Path::new("/tmp/admin.token"));
        assert_eq!(c.docker_socket, Path::new("/d.sock"));
        assert_eq!(
            (c.tenant.as_str(), c.site.as_str(), c.host.as_str()),
            ("acme-1", "berlin", "edge7")
        );
        match parse(&["check-config", "--tenant", "x"]).unwrap() {
            Command::CheckConfig(c) => assert_eq!(c.tenant, "x"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flag_errors() {
        assert!(err(&["--bogus", "1"]).contains("unknown flag --bogus"));
        assert!(err(&["--tenant"]).contains("--tenant needs a value"));
        assert!(err(&["--tenant", "--site", "x"]).contains("--tenant needs a value"));
        assert!(err(&["--tenant="]).contains("needs a value"));
        assert!(err(&["stray"]).contains("unexpected argument"));
        assert!(err(&["--"]).contains("unexpected argument"));
        assert!(err(&["-x"]).contains("unexpected argument"));
        assert!(err(&["--tenant", "Acme"]).contains("--tenant"));
        assert!(err(&["--tenant", "a-"]).contains("[a-z0-9]"));
        assert!(err(&["--tenant", &"a".repeat(64)]).contains("--tenant"));
        assert!(err(&["--site", "a b"]).contains("--site"));
        assert!(err(&["--listen", "localhost:80"]).contains("--listen"));
        assert!(err(&["--listen", "unix:relative.sock"]).contains("absolute"));
        assert!(err(&["--listen", "1.2.3.4"]).contains("--listen"));
        assert!(err(&["--config", "/nonexistent/x.yaml"]).contains("/nonexistent/x.yaml"));
        assert!(err(&["--version=1"]).contains("unknown flag --version"));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&["--version"]).unwrap(), Command::Version);
        assert_eq!(parse(&["-V"]).unwrap(), Command::Version);
        assert_eq!(
            parse(&["--tenant", "x", "--version"]).unwrap(),
            Command::Version
        );
        for args in [
            &["--help"][..],
            &["-h"],
            &["help"],
            &["check-config", "--help"],
            &["token"],
            &["token", "create", "--help"],
        ] {
            match parse(args).unwrap() {
                Command::Help(text) => assert!(text.contains("token create")),
                other => panic!("{args:?}: {other:?}"),
            }
        }
        assert!(usage().contains("--docker-socket"));
    }

    #[test]
    fn listen_addr_round_trip() {
        for s in [
            "127.0.0.1:4646",
            "[::1]:4646",
            "0.0.0.0:0",
            "unix:/run/supd/supd.sock",
        ] {
            assert_eq!(s.parse::<ListenAddr>().unwrap().to_string(), s);
        }
        for s in [
            "",
            "unix:",
            "unix:x",
            ":80",
            "[::1]",
            "::1:80",
            "a:b",
            "unix:/a\0b",
        ] {
            assert!(s.parse::<ListenAddr>().is_err(), "{s:?}");
        }
    }

    const FULL: &str = "\
# comment
listen: ['127.0.0.1:1', 'unix:/run/x.sock']
tokens: tokens.yaml
docker-socket: /run/docker.sock
tenant: t1
site: s1
host: h1
limits: {head-bytes: 100, body-bytes: 200, head-timeout-ms: 300, idle-timeout-ms: 400, max-connections: 5,
  preauth-timeout-ms: 250, preauth-connections-per-peer: 3, reserved-connections: 2,
  connections-per-token: 4, write-timeout-ms: 350}
exec: {output-cap: 6, kill-grace-ms: 700}
websocket:
  ping-interval-ms: 800
  ping-timeout-ms: 2500
  idle-timeout-ms: 900
  max-message: 1000
  max-frame: 1000
  write-buffer: 1100
  allowed-origins: ['https://ui.example']
connect: {connect-timeout-ms: 1200}
";

    #[test]
    fn file_settings() {
        let dir = temp_dir("file");
        let path = dir.join("supd.yaml");
        fs::write(&path, FULL).unwrap();
        let c = run(&["--config", path.to_str().unwrap()]);
        assert_eq!(c.config_file.as_deref(), Some(path.as_path()));
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.tokens, dir.join("tokens.yaml"));
        assert!(!c.tokens_is_default);
        assert_eq!(c.bootstrap_token_file, dir.join("admin.token"));
        assert_eq!(c.docker_socket, Path::new("/run/docker.sock"));
        assert_eq!(
            (c.tenant.as_str(), c.site.as_str(), c.host.as_str()),
            ("t1", "s1", "h1")
        );
        assert_eq!(
            c.limits,
            Limits {
                head_bytes: 100,
                body_bytes: 200,
                head_timeout: Duration::from_millis(300),
                idle_timeout: Duration::from_millis(400),
                max_connections: 5,
                preauth_timeout: Duration::from_millis(250),
                preauth_per_peer: 3,
                reserved_connections: 2,
                connections_per_token: 4,
                write_timeout: Duration::from_millis(350),
                forwards_per_token_site: None,
            }
        );
        assert_eq!(
            c.exec,
            ExecSettings {
                output_cap: 6,
                kill_grace: Duration::from_millis(700)
            }
        );
        assert_eq!(
            c.ws,
            WsSettings {
                ping_interval: Duration::from_millis(800),
                ping_timeout: Some(Duration::from_millis(2500)),
                idle_timeout: Some(Duration::from_millis(900)),
                max_message: 1000,
                max_frame: 1000,
                write_buffer: 1100,
                allowed_origins: vec!["https://ui.example".to_owned()],
            }
        );
        assert_eq!(c.connect.connect_timeout, Duration::from_millis(1200));

        // Flags override the file; --listen replaces its whole list.
        let c = run(&[
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:2",
            "--tenant",
            "t2",
            "--tokens",
            "/x/t.yaml",
        ]);
        assert_eq!(
            c.listen,
            vec![ListenAddr::Tcp("127.0.0.1:2".parse().unwrap())]
        );
        assert_eq!(c.tenant, "t2");
        assert_eq!(c.site, "s1");
        assert_eq!(c.tokens, Path::new("/x/t.yaml"));
        assert_eq!(c.limits.max_connections, 5);

        // The implicit default file is read when it exists.
        match parse_args_with(Vec::<String>::new(), &path).unwrap() {
            Command::Run(c) => assert_eq!(c.tenant, "t1"),
            other => panic!("{other:?}"),
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    fn file_err(yaml: &str) -> String {
        let dir = temp_dir("err");
        let path = dir.join("bad.yaml");
        fs::write(&path, yaml).unwrap();
        let e = parse(&["--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("bad.yaml"), "{e}");
        e
    }

    #[test]
    fn listeners_with_tls() {
        let path = Path::new("/etc/supd/supd.yaml");
        let c = from_file_text(
            "listen:\n  - 127.0.0.1:1\n  - address: '0.0.0.0:4646'\n    tls: {cert-file: tls/cert.pem, key-file: /k.pem, client-ca-file: ca.pem}\n  - address: '[::1]:2'\n  - address: '[::]:3'\n    tls: {cert-file: /c, key-file: /k}\n  - unix:/run/x.sock\n",
            path,
        )
        .unwrap();
        assert_eq!(c.listen.len(), 5);
        assert_eq!(c.listen[2], ListenAddr::Tcp("[::1]:2".parse().unwrap()));
        assert_eq!(
            c.listen_tls,
            vec![
                (
                    "0.0.0.0:4646".parse().unwrap(),
                    ListenerTls {
                        cert_file: "/etc/supd/tls/cert.pem".into(),
                        key_file: "/k.pem".into(),
                        client_ca_file: Some("/etc/supd/ca.pem".into()),
                    }
                ),
                (
                    "[::]:3".parse().unwrap(),
                    ListenerTls {
                        cert_file: "/c".into(),
                        key_file: "/k".into(),
                        client_ca_file: None,
                    }
                ),
            ]
        );
        let e = |yaml: &str| from_file_text(yaml, path).unwrap_err().to_string();
        assert!(
            e("listen: [{address: 'unix:/x', tls: {cert-file: /c, key-file: /k}}]\n")
                .contains("listen[0].tls: TLS is for TCP")
        );
        assert!(
            e("listen: [{address: '127.0.0.1:1', tls: {cert-file: /c}}]\n")
                .contains("missing field `key-file`")
        );
        assert!(
            e("listen: [{address: '127.0.0.1:1', tls: {cert-file: /c, key-file: /k, ca: /x}}]\n")
                .contains("unknown field `ca`")
        );
        assert!(e("listen: [{addr: '127.0.0.1:1'}]\n").contains("unknown field `addr`"));
        assert!(
            e("listen: [{address: '127.0.0.1:1', tls: {cert-file: '', key-file: /k}}]\n")
                .contains("listen[0].tls.cert-file")
        );
        assert!(e("listen: ['127.0.0.1:1', {address: '127.0.0.1:1'}]\n").contains("listed twice"));
        assert!(e("listen: [{address: nope}]\n").contains("listen[0]"));
        assert!(e("listen: [7]\n").contains("an address or {address, tls}"));
        // --listen replaces the file's list, TLS settings included.
        let dir = temp_dir("tls");
        let file = dir.join("supd.yaml");
        fs::write(
            &file,
            "listen: [{address: '127.0.0.1:9', tls: {cert-file: /c, key-file: /k}}]\n",
        )
        .unwrap();
        let c = run(&["--config", file.to_str().unwrap()]);
        assert_eq!(c.listen_tls.len(), 1);
        let c = run(&[
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:9",
        ]);
        assert!(c.listen_tls.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_errors() {
        assert!(file_err("colour: red\n").contains("unknown field `colour`"));
        assert!(file_err("limits: {head-byte: 1}\n").contains("unknown field `head-byte`"));
        assert!(file_err("websocket: {origins: []}\n").contains("unknown field `origins`"));
        assert!(file_err("limits: {head-bytes: 0}\n").contains("limits.head-bytes"));
        assert!(file_err("limits: {head-bytes: -1}\n").contains("head-bytes"));
        assert!(file_err("limits: {idle-timeout-ms: 0}\n").contains("limits.idle-timeout-ms"));
        assert!(file_err("exec: {kill-grace-ms: 0}\n").contains("exec.kill-grace-ms"));
        assert!(file_err("tenant: ''\n").contains("tenant"));
        assert!(file_err("tenant: -a\n").contains("tenant"));
        assert!(file_err("site: ''\n").contains("site"));
        assert!(file_err("host: ''\n").contains("host"));
        assert!(file_err("listen: []\n").contains("listen"));
        assert!(file_err("listen: ['x']\n").contains("listen[0]"));
        assert!(file_err("listen: '127.0.0.1:1'\n").contains("listen"));
        assert!(file_err("websocket: {max-frame: 10, max-message: 5}\n").contains("max-frame"));
        assert!(file_err("tokens: ''\n").contains("tokens"));
        assert!(file_err("[1, 2]\n").contains("bad.yaml"));
        assert!(file_err("{{{{").contains("bad.yaml"));
        assert!(file_err("\0\u{7f}").contains("bad.yaml"));
    }

    #[test]
    fn from_file_text_applies_and_checks() {
        let path = Path::new("/etc/supd/supd.yaml");
        let c = from_file_text("tenant: t1\ntokens: t.yaml\n", path).unwrap();
        assert_eq!(c.tenant, "t1");
        assert_eq!(c.tokens, PathBuf::from("/etc/supd/t.yaml"));
        let e = from_file_text("limits: {head-bytes: 0}\n", path).unwrap_err();
        assert!(e.to_string().contains("limits.head-bytes"), "{e}");
    }

    #[test]
    fn empty_file_and_ws_idle_off() {
        assert!(parse_file("", Path::new("x")).unwrap().listen.is_none());
        assert!(
            parse_file("# only\n\n", Path::new("x"))
                .unwrap()
                .tenant
                .is_none()
        );
        let dir = temp_dir("ws");
        let path = dir.join("supd.yaml");
        fs::write(&path, "websocket: {idle-timeout-ms: 0}\n").unwrap();
        let c = run(&["--config", path.to_str().unwrap()]);
        assert_eq!(c.ws.idle_timeout, None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn token_create() {
        let cmd = parse(&[
            "token",
            "create",
            "--name",
            "ci",
            "--operations=read,exec",
            "--applications",
            "web-*, db",
            "--tokens",
            "/t.yaml",
        ])
        .unwrap();
        assert_eq!(
            cmd,
            Command::TokenCreate {
                tokens: "/t.yaml".into(),
                name: "ci".into(),
                operations: vec![Operation::Read, Operation::Exec],
                applications: vec!["web-*".into(), "db".into()],
            }
        );
        match parse(&["token", "create", "--name=x"]).unwrap() {
            Command::TokenCreate {
                tokens,
                operations,
                applications,
                ..
            } => {
                assert_eq!(tokens, Path::new(DEFAULT_TOKENS));
                assert_eq!(operations, vec![Operation::Read]);
                assert_eq!(applications, vec!["*".to_owned()]);
            }
            other => panic!("{other:?}"),
        }
        let dir = temp_dir("tok");
        let path = dir.join("supd.yaml");
        fs::write(&path, "tokens: sub/tokens.yaml\n").unwrap();
        match parse(&[
            "token",
            "create",
            "--name=x",
            "--config",
            path.to_str().unwrap(),
        ])
        .unwrap()
        {
            Command::TokenCreate { tokens, .. } => assert_eq!(tokens, dir.join("sub/tokens.yaml")),
            other => panic!("{other:?}"),
        }
        fs::remove_dir_all(&dir).unwrap();
        assert!(err(&["token", "create"]).contains("--name"));
        assert!(
            err(&["token", "create", "--name", "x", "--operations", "read,fly"]).contains("fly")
        );
        assert!(
            err(&["token", "create", "--name", "x", "--operations", "read,"])
                .contains("empty item")
        );
        assert!(err(&["token", "create", "--name", "x", "--tenant", "y"]).contains("unknown flag"));
        assert!(err(&["token", "delete"]).contains("unknown token command"));
    }

    #[test]
    fn sites() {
        let path = Path::new("/etc/supd/supd.yaml");
        let c = from_file_text(
            "sites:\n  b:\n    url: http://127.0.0.1:4647\n    token-file: b.token\n    \
             connect-timeout-ms: 100\n  c:\n    url: https://c.example\n    ca-file: /ca.pem\n    \
             cert-file: c.pem\n    key-file: c.key\n  d:\n    url: unix:/run/d.sock\n",
            path,
        )
        .unwrap();
        let b = &c.sites["b"];
        assert_eq!(b.url.to_string(), "http://127.0.0.1:4647");
        assert_eq!(
            b.token_file.as_deref(),
            Some(Path::new("/etc/supd/b.token"))
        );
        assert_eq!(b.connect_timeout, Duration::from_millis(100));
        assert_eq!(b.response_timeout, DEFAULT_SITE_RESPONSE_TIMEOUT);
        let site = &c.sites["c"];
        assert!(site.url.is_tls());
        assert_eq!(site.key_file.as_deref(), Some(Path::new("/etc/supd/c.key")));
        assert_eq!(c.sites["d"].url, PeerUrl::Unix("/run/d.sock".into()));
        for (bad, want) in [
            ("sites:\n  b: {url: 'ftp://x'}\n", "sites.b.url"),
            (
                "sites:\n  b: {url: 'http://x', ca-file: /ca}\n",
                "https:// peers only",
            ),
            (
                "sites:\n  b: {url: 'https://x', cert-file: /c}\n",
                "go together",
            ),
            (
                "sites:\n  b: {url: 'http://x', response-timeout-ms: 0}\n",
                "greater than 0",
            ),
            ("sites:\n  'b c': {url: 'http://x'}\n", "without spaces"),
            (
                "sites:\n  b: {url: 'http://x', token: t}\n",
                "unknown field",
            ),
            ("sites:\n  b: {}\n", "missing field"),
        ] {
            let e = from_file_text(bad, path).unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        // A peer named like this site would never be forwarded to.
        let dir = std::env::temp_dir().join(format!("supd-sites-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("supd.yaml");
        std::fs::write(&file, "site: a\nsites:\n  a: {url: 'http://x'}\n").unwrap();
        let args = ["--config".to_owned(), file.display().to_string()];
        let e = parse_args_with(args, Path::new("/nonexistent")).unwrap_err();
        assert!(e.to_string().contains("own name"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
