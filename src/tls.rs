//! TLS with rustls, driven by the loop: loading certificates and keys (PEM), the server side of
//! TLS listeners (reloadable on SIGHUP), the client side for connections to peers, and
//! [`TlsStream`], a non-blocking stream that the HTTP connection, websocket sessions and peer
//! clients use exactly like a plain socket.
//!
//! The stream follows rustls' `tlsserver-mio` example: `read_tls` + `process_new_packets`
//! when the socket has data, `write_tls` whenever rustls holds records. What differs from a
//! plain socket, for whoever drives one (mio is edge-triggered):
//! - `read` returns `WouldBlock` only after the socket itself did, so a reader that reads
//!   until `WouldBlock` also drains the plaintext rustls already decrypted. A reader that
//!   stops early must come back without waiting for an event, as it must for a plain socket
//!   whose kernel buffer still holds data.
//! - `write` takes plaintext into rustls' bounded buffer and writes what the socket takes;
//!   records the socket did not take stay in rustls. `flush` returns `WouldBlock` while any
//!   are left, and `holds_output` says so, so that a connection is not closed with its last
//!   answer still inside rustls.
//! - The handshake needs both directions whatever the application wants, so the socket is
//!   always registered for both readable and writable (see the `Source` impl).

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::event::Source;
use mio::{Interest, Registry, Token};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};

use crate::config::ListenerTls;

/// The trust roots used when no CA file is given: Debian's bundle (package ca-certificates).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Certificate, key and CA files are small; anything larger is a mistake (the system bundle
/// is about 200 KiB).
const MAX_PEM_BYTES: u64 = 4 << 20;
/// The most TLS records (and, during the handshake, plaintext) rustls holds for a connection
/// beyond what the application holds itself: two full records. What the peer sends is
/// bounded by rustls itself (one record being read, 16 KiB of decrypted plaintext).
const BUFFER_LIMIT: usize = 32 * 1024;
/// ALPN: supd speaks HTTP/1.1 (websockets upgrade from it); a client that offers only h2 is
/// refused in the handshake instead of being misunderstood after it.
const ALPN_HTTP11: &[u8] = b"http/1.1";
/// Bytes kept from the start of a server connection to recognise plain HTTP sent to a TLS
/// port (`OPTIONS ` is the longest method start that matters).
const SNIFF: usize = 8;
/// The answer to plain HTTP on a TLS port, sent in clear (as Go's net/http does) instead of
/// a TLS alert that a plain client shows as garbage.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 51\r\nConnection: close\r\n\r\nthis port speaks TLS: use https:// to talk to it.\r\n";

#[derive(Debug)]
pub enum Error {
    /// A certificate, key or CA file could not be read.
    Read { path: PathBuf, source: io::Error },
    /// A file is not PEM, or holds none of what it should (`what`).
    Pem {
        path: PathBuf,
        what: &'static str,
        source: pem::Error,
    },
    /// The key cannot be used, or is not the certificate's.
    Key {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    /// A certificate of a CA file cannot be a trust anchor.
    Ca {
        path: PathBuf,
        source: rustls::Error,
    },
    /// No certificate of a CA file could be used as a trust anchor.
    NoTrustAnchor { path: PathBuf },
    /// rustls refused the configuration (protocol versions, verifier).
    Config(String),
    /// A peer's host is not a DNS name or IP address.
    ServerName(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Read { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Pem { path, what, source } => {
                write!(f, "{}: no usable {what} in PEM: {source}", path.display())
            }
            Error::Key { cert, key, source } => write!(
                f,
                "{}: key does not fit the certificate {}: {source}",
                key.display(),
                cert.display()
            ),
            Error::Ca { path, source } => {
                write!(
                    f,
                    "{}: not a usable CA certificate: {source}",
                    path.display()
                )
            }
            Error::NoTrustAnchor { path } => {
                write!(f, "{}: no usable CA certificate", path.display())
            }
            Error::Config(why) => write!(f, "TLS configuration: {why}"),
            Error::ServerName(host) => write!(f, "{host:?} is not a valid TLS server name"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Read { source, .. } => Some(source),
            Error::Pem { source, .. } => Some(source),
            Error::Key { source, .. } | Error::Ca { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A failed TLS connection (handshake or record layer), carried inside the `io::Error` the
/// stream returns (kind `InvalidData`), so callers can tell it from a socket error.
#[derive(Debug)]
pub struct ProtocolError(pub rustls::Error);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// The TLS failure inside a stream error, if it is one.
pub fn protocol_error(e: &io::Error) -> Option<&ProtocolError> {
    e.get_ref().and_then(|inner| inner.downcast_ref())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 and 1.2; nothing older.
const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn read_file(path: &Path) -> Result<Vec<u8>> {
    let err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let (file, _) = crate::sys::fd::open_regular(path).map_err(err)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(err(io::Error::other(format!(
            "larger than {MAX_PEM_BYTES} bytes"
        ))));
    }
    Ok(bytes)
}

/// Every certificate in a PEM file, in order (a chain: the end entity first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read_file(path)?;
    let pem_err = |source| Error::Pem {
        path: path.to_owned(),
        what: "certificate",
        source,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(pem_err(pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| Error::Pem {
        path: path.to_owned(),
        what: "private key",
        source,
    })
}

/// Trust anchors from a PEM file. A CA file the operator names must be usable whole; the
/// system bundle may hold certificates webpki cannot parse, which are skipped.
fn load_roots(path: &Path, strict: bool) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs = load_certs(path)?;
    if strict {
        for cert in certs {
            roots.add(cert).map_err(|source| Error::Ca {
                path: path.to_owned(),
                source,
            })?;
        }
    } else {
        roots.add_parsable_certificates(certs);
    }
    if roots.is_empty() {
        return Err(Error::NoTrustAnchor {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = load_certs(cert)?;
    let der = load_key(key)?;
    let key_err = |source| Error::Key {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let signing = provider
        .key_provider
        .load_private_key(der.clone_key())
        .map_err(key_err)?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(key_err)?;
    Ok((chain, der))
}

/// The server configuration of a TLS listener: its certificate chain and key, TLS 1.2 and
/// 1.3, HTTP/1.1 by ALPN, and client certificates from `client_ca_file` required when set.
pub fn server_config(files: &ListenerTls) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let (chain, key) = certified_key(&files.cert_file, &files.key_file, &provider)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| Error::Config(e.to_string()))?;
    let builder = match &files.client_ca_file {
        Some(ca) => {
            let roots = load_roots(ca, true)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::Config(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| Error::Key {
            cert: files.cert_file.clone(),
            key: files.key_file.clone(),
            source: e,
        })?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// The client configuration for connections to peers: trust in `ca_file`, or the system's
/// roots without one; a client certificate and key (mutual TLS) when given.
pub fn client_config(
    ca_file: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let roots = match ca_file {
        Some(ca) => load_roots(ca, true)?,
        None => load_roots(Path::new(SYSTEM_ROOTS), false)?,
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| Error::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match client_cert {
        Some((cert, key)) => {
            let (chain, der) = certified_key(cert, key, &provider)?;
            builder
                .with_client_auth_cert(chain, der)
                .map_err(|e| Error::Key {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                    source: e,
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// The TLS server name for a URL's host: a DNS name, or an IP address (brackets of an IPv6
/// literal removed).
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned()).map_err(|_| Error::ServerName(host.to_owned()))
}

/// A private key other users may read is a warning, not an error: the operator may have
/// reasons (a group for a key-management daemon), but should know.
fn warn_if_exposed(key: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(key)
        && meta.permissions().mode() & 0o077 != 0
    {
        log::warn!(
            "{}: the private key is readable by others (mode {:o})",
            key.display(),
            meta.permissions().mode() & 0o777
        );
    }
}

/// The TLS side of a listener: its files and the configuration new handshakes use. A reload
/// replaces the configuration; connections keep the one they started with.
pub struct Acceptor {
    files: ListenerTls,
    config: Arc<ServerConfig>,
}

impl Acceptor {
    pub fn load(files: &ListenerTls) -> Result<Acceptor> {
        warn_if_exposed(&files.key_file);
        Ok(Acceptor {
            config: server_config(files)?,
            files: files.clone(),
        })
    }

    /// Read the files again. On error the configuration in use stays.
    pub fn reload(&mut self) -> Result<()> {
        warn_if_exposed(&self.files.key_file);
        self.config = server_config(&self.files)?;
        Ok(())
    }

    pub fn files(&self) -> &ListenerTls {
        &self.files
    }

    /// The server side of a new connection; its handshake runs as the loop drives it.
    pub fn accept<S>(&self, sock: S) -> io::Result<TlsStream<S>> {
        let conn = rustls::ServerConnection::new(self.config.clone()).map_err(io::Error::other)?;
        Ok(TlsStream::new(Connection::Server(conn), sock, true))
    }
}

/// A non-blocking TLS stream over `sock` (a mio TCP stream in the daemon; a socket pair in
/// tests), server or client side. See the module documentation for the rules.
pub struct TlsStream<S = mio::net::TcpStream> {
    conn: Connection,
    sock: S,
    /// The first bytes a server connection received, until the handshake is over: to answer
    /// plain HTTP in clear. None on a client or once enough is known.
    sniff: Option<Vec<u8>>,
    /// The connection failed; every later call fails too.
    failed: bool,
}

impl<S> fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("handshaking", &self.conn.is_handshaking())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<S> TlsStream<S> {
    fn new(mut conn: Connection, sock: S, server: bool) -> TlsStream<S> {
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        TlsStream {
            conn,
            sock,
            sniff: server.then(Vec::new),
            failed: false,
        }
    }

    /// The client side over a connected socket, for the peer whose URL host is `host` (its
    /// certificate must name it).
    pub fn client(sock: S, config: Arc<ClientConfig>, host: &str) -> Result<TlsStream<S>> {
        let conn = ClientConnection::new(config, server_name(host)?)
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(TlsStream::new(Connection::Client(conn), sock, false))
    }

    /// rustls holds records the socket has not taken yet.
    pub fn holds_output(&self) -> bool {
        self.conn.wants_write()
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The peer's certificate chain, once the handshake has it (mutual TLS on a server).
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    pub fn get_ref(&self) -> &S {
        &self.sock
    }
}

/// Reads the socket for rustls, keeping a copy of the first bytes of a server connection.
struct Sniffing<'a, S> {
    sock: &'a mut S,
    sniff: &'a mut Option<Vec<u8>>,
}

impl<S: Read> Read for Sniffing<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        if let Some(seen) = self.sniff.as_mut()
            && seen.len() < SNIFF
        {
            let take = n.min(SNIFF - seen.len());
            seen.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
}

/// Whether a connection's first bytes are the start of an HTTP request (`GET `, `POST `...):
/// a TLS client starts with a handshake record (0x16), never with a letter.
fn looks_like_http(first: &[u8]) -> bool {
    let Some(space) = first.iter().position(|&b| b == b' ') else {
        return false;
    };
    (3..SNIFF).contains(&space) && first[..space].iter().all(u8::is_ascii_uppercase)
}

impl<S: Read + Write> TlsStream<S> {
    /// Write the records rustls holds: Ok(true) when none are left.
    fn push(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn fail(&mut self, e: rustls::Error) -> io::Error {
        self.failed = true;
        let plain = self.sniff.as_deref().is_some_and(looks_like_http);
        if plain {
            // A plain HTTP client: tell it in its own language, not with an alert.
            let _ = self.sock.write(PLAIN_HTTP_ANSWER);
        } else {
            // The alert rustls queued tells the peer why (best effort).
            let _ = self.push();
        }
        io::Error::new(io::ErrorKind::InvalidData, ProtocolError(e))
    }

    /// Queue close_notify and write it if the socket takes it (the caller then shuts the
    /// socket down).
    pub fn close_notify(&mut self) {
        if !self.failed {
            self.conn.send_close_notify();
            let _ = self.push();
        }
    }
}

impl<S: Read + Write> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.failed {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS connection failed",
                ));
            }
            match self.conn.reader().read(buf) {
                // 0: the peer's close_notify.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket ended without close_notify. Everything supd reads is framed
                // (HTTP heads and bodies, websocket frames), so a cut is seen as one anyway:
                // an end of stream, as on a plain socket.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            // Records to send first (a handshake flight) go out before reading more.
            self.push()?;
            let mut tap = Sniffing {
                sock: &mut self.sock,
                sniff: &mut self.sniff,
            };
            match self.conn.read_tls(&mut tap) {
                // End of the socket, after all the plaintext (close_notify or not).
                Ok(0) => return Ok(0),
                Ok(_) => {
                    if let Err(e) = self.conn.process_new_packets() {
                        return Err(self.fail(e));
                    }
                    if !self.conn.is_handshaking() {
                        self.sniff = None;
                    }
                    // Handshake replies, key updates: out now, or on the writable edge.
                    self.push()?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl<S: Read + Write> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        if self.failed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        // Twice at most: once more after the socket took what rustls held.
        for _ in 0..2 {
            let n = self.conn.writer().write_vectored(bufs)?;
            let drained = self.push()?;
            if n > 0 {
                return Ok(n);
            }
            if !drained || self.conn.is_handshaking() {
                // rustls is full: the socket is (writable edge to come) or the handshake
                // waits for the peer (readable edge to come).
                break;
            }
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// Push the records rustls holds; `WouldBlock` while the socket does not take them all.
    fn flush(&mut self) -> io::Result<()> {
        if self.failed {
            return Ok(());
        }
        if self.push()? {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
}

/// Always readable and writable, whatever the caller asks: a handshake (or a key update, or
/// records rustls still holds) needs a direction the application may not want at that
/// moment. Readiness is edge-triggered, so a writable edge comes only after a write met a
/// full socket buffer: it costs no wake-ups while there is nothing to write.
impl<S: Source> Source for TlsStream<S> {
    fn register(&mut self, r: &Registry, t: Token, _: Interest) -> io::Result<()> {
        self.sock
            .register(r, t, Interest::READABLE | Interest::WRITABLE)
    }
    fn reregister(&mut self, r: &Registry, t: Token, _: Interest) -> io::Result<()> {
        self.sock
            .reregister(r, t, Interest::READABLE | Interest::WRITABLE)
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.sock.deregister(r)
    }
}

/// A throwaway PKI for unit tests here and in `server::conn`.
#[cfg(test)]
pub(crate) mod test_pki {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::Arc;

    use mio::net::UnixStream;

    use super::{Acceptor, ListenerTls, TlsStream};

    /// Made by `scripts/make-test-ca.sh` (the integration tests use it too).
    pub(crate) struct Pki(PathBuf);

    impl Pki {
        pub(crate) fn new() -> Pki {
            let mut r = [0u8; 8];
            crate::sys::fd::getrandom(&mut r).unwrap();
            let suffix: String = r.iter().map(|b| format!("{b:02x}")).collect();
            let dir = std::env::temp_dir().join(format!("supd-tls-unit-{suffix}"));
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-test-ca.sh");
            let out = Command::new("sh").arg(&script).arg(&dir).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Pki(dir)
        }
        pub(crate) fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
        pub(crate) fn listener(&self, server: &str, client_ca: Option<&str>) -> ListenerTls {
            ListenerTls {
                cert_file: self.path(&format!("{server}.pem")),
                key_file: self.path(&format!("{server}.key")),
                client_ca_file: client_ca.map(|c| self.path(&format!("{c}.pem"))),
            }
        }
        /// A server and a client TLS stream over a socket pair (handshake not yet done).
        pub(crate) fn streams(&self) -> (TlsStream<UnixStream>, TlsStream<UnixStream>) {
            let (a, b) = UnixStream::pair().unwrap();
            let acceptor = Acceptor::load(&self.listener("server", None)).unwrap();
            let client = super::client_config(Some(&self.path("ca.pem")), None).unwrap();
            let s = acceptor.accept(a).unwrap();
            let c = TlsStream::client(b, Arc::clone(&client), "localhost").unwrap();
            (s, c)
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use mio::net::UnixStream;

    use super::test_pki::Pki;
    use super::*;

    fn pair(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        host: &str,
    ) -> (TlsStream<UnixStream>, TlsStream<UnixStream>) {
        let (a, b) = UnixStream::pair().unwrap();
        let acceptor = Acceptor {
            files: ListenerTls {
                cert_file: PathBuf::new(),
                key_file: PathBuf::new(),
                client_ca_file: None,
            },
            config: server,
        };
        let s = acceptor.accept(a).unwrap();
        let c = TlsStream::client(b, client, host).unwrap();
        (s, c)
    }

    /// Drive both sides as the loop would (read until WouldBlock, flush) until `done`, or
    /// an error on either side.
    fn pump(
        s: &mut TlsStream<UnixStream>,
        c: &mut TlsStream<UnixStream>,
        got_s: &mut Vec<u8>,
        got_c: &mut Vec<u8>,
        mut done: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        for _ in 0..10_000 {
            if done(got_s, got_c) {
                return Ok(());
            }
            for (side, got) in [(&mut *s, &mut *got_s), (&mut *c, &mut *got_c)] {
                loop {
                    match side.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                match side.flush() {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Err(io::Error::other("no progress"))
    }

    fn write_all(side: &mut TlsStream<UnixStream>, mut data: &[u8]) -> usize {
        let mut rounds = 0;
        while !data.is_empty() {
            match side.write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return data.len(),
                Err(e) => panic!("{e}"),
            }
            rounds += 1;
            assert!(rounds < 100_000);
        }
        0
    }

    #[test]
    fn client_and_server_talk_both_ways_through_a_full_socket() {
        let pki = Pki::new();
        let server = server_config(&pki.listener("server", None)).unwrap();
        let client = client_config(Some(&pki.path("ca.pem")), None).unwrap();
        let (mut s, mut c) = pair(server, client, "localhost");
        // Written before the handshake: held (bounded) by rustls until it is done.
        assert_eq!(write_all(&mut c, b"GET / HTTP/1.1\r\n\r\n"), 0);
        let (mut got_s, mut got_c) = (Vec::new(), Vec::new());
        pump(&mut s, &mut c, &mut got_s, &mut got_c, |s, _| s.len() == 18).unwrap();
        assert_eq!(got_s, b"GET / HTTP/1.1\r\n\r\n");
        assert!(!s.is_handshaking() && !c.is_handshaking());
        // Far more than the socket and rustls take at once: the writer meets WouldBlock,
        // rustls holds at most its limit, and everything arrives in order as the reader reads.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut sent = 0;
        let mut blocked = false;
        let mut buf = vec![0u8; 16 * 1024];
        let mut rounds = 0;
        while got_c.len() < big.len() {
            if sent < big.len() {
                let left = write_all(&mut s, &big[sent..]);
                blocked |= left > 0;
                sent = big.len() - left;
            }
            let _ = s.flush();
            loop {
                match c.read(&mut buf) {
                    Ok(0) => panic!("eof"),
                    Ok(n) => got_c.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            rounds += 1;
            assert!(rounds < 100_000);
        }
        assert!(blocked, "the socket never filled");
        assert!(got_c == big, "bytes differ");
        // A close_notify is an end of stream for the reader.
        s.close_notify();
        assert_eq!(c.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn the_wrong_name_or_ca_fails_the_handshake_on_both_sides() {
        let pki = Pki::new();
        let server = server_config(&pki.listener("server", None)).unwrap();
        let good = client_config(Some(&pki.path("ca.pem")), None).unwrap();
        let other = client_config(Some(&pki.path("other-ca.pem")), None).unwrap();
        for (client, host) in [(good.clone(), "supd.invalid"), (other, "localhost")] {
            let (mut s, mut c) = pair(server.clone(), client, host);
            write_all(&mut c, b"hi");
            let e = pump(&mut s, &mut c, &mut Vec::new(), &mut Vec::new(), |_, _| {
                false
            })
            .unwrap_err();
            let tls = protocol_error(&e).expect("a TLS error");
            assert!(tls.to_string().contains("certificate"), "{host}: {tls}");
        }
        // IP addresses are names too (the certificate has 127.0.0.1).
        let (mut s, mut c) = pair(server, good, "127.0.0.1");
        write_all(&mut c, b"hi");
        let mut got = Vec::new();
        pump(&mut s, &mut c, &mut got, &mut Vec::new(), |s, _| s == b"hi").unwrap();
    }

    #[test]
    fn client_certificates_are_required_and_checked() {
        let pki = Pki::new();
        let server = server_config(&pki.listener("server", Some("ca"))).unwrap();
        let ca = pki.path("ca.pem");
        let cases = [
            (None, false),
            (Some(("client.pem", "client.key")), true),
            (Some(("other-client.pem", "other-client.key")), false),
        ];
        for (cert, ok) in cases {
            let cert = cert.map(|(c, k)| (pki.path(c), pki.path(k)));
            let client = client_config(
                Some(&ca),
                cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            )
            .unwrap();
            let (mut s, mut c) = pair(server.clone(), client, "localhost");
            write_all(&mut c, b"hello");
            let mut got = Vec::new();
            let r = pump(&mut s, &mut c, &mut got, &mut Vec::new(), |s, _| {
                s == b"hello"
            });
            assert_eq!(r.is_ok(), ok, "{cert:?}: {r:?}");
            if ok {
                assert!(s.peer_certificates().is_some_and(|c| !c.is_empty()));
            }
        }
    }

    #[test]
    fn plain_http_gets_a_plain_answer() {
        let pki = Pki::new();
        let server = server_config(&pki.listener("server", None)).unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let acceptor = Acceptor {
            files: pki.listener("server", None),
            config: server,
        };
        let mut s = acceptor.accept(a).unwrap();
        b.write_all(b"GET /v1/state HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let e = s.read(&mut [0u8; 100]).unwrap_err();
        assert!(protocol_error(&e).is_some(), "{e}");
        let mut answer = vec![0u8; 1024];
        let n = b.read(&mut answer).unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 400 "), "{answer:?}");
        assert!(s.read(&mut [0u8; 10]).is_err());
        // Garbage that is not HTTP gets the TLS alert instead.
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut s = acceptor.accept(a).unwrap();
        b.write_all(&[0x01; 64]).unwrap();
        assert!(s.read(&mut [0u8; 100]).is_err());
        let n = b.read(&mut answer).unwrap();
        assert_eq!(answer[0], 0x15, "an alert record");
        assert!(n < 64);
        assert!(looks_like_http(b"OPTIONS "));
        assert!(!looks_like_http(b"GE"));
        assert!(!looks_like_http(b"\x16\x03\x01 "));
    }

    #[test]
    fn files_are_checked() {
        let pki = Pki::new();
        let l = pki.listener("server", Some("ca"));
        assert!(server_config(&l).is_ok());
        // The SEC1 ("EC PRIVATE KEY") form works as well as PKCS#8.
        assert!(server_config(&pki.listener("server2", None)).is_ok());
        let mismatch = ListenerTls {
            key_file: pki.path("server2.key"),
            ..l.clone()
        };
        let e = server_config(&mismatch).unwrap_err().to_string();
        assert!(e.contains("does not fit"), "{e}");
        let missing = ListenerTls {
            cert_file: pki.path("nope.pem"),
            ..l.clone()
        };
        let e = server_config(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.pem"), "{e}");
        let not_pem = ListenerTls {
            cert_file: pki.path("server.key"),
            ..l.clone()
        };
        let e = server_config(&not_pem).unwrap_err().to_string();
        assert!(e.contains("no usable certificate"), "{e}");
        let no_key = ListenerTls {
            key_file: pki.path("server.pem"),
            ..l.clone()
        };
        let e = server_config(&no_key).unwrap_err().to_string();
        assert!(e.contains("no usable private key"), "{e}");
        let bad_ca = ListenerTls {
            client_ca_file: Some(pki.path("server.key")),
            ..l
        };
        let e = server_config(&bad_ca).unwrap_err().to_string();
        assert!(e.contains("no usable certificate"), "{e}");
        let junk = pki.path("junk-ca.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = client_config(Some(&junk), None).unwrap_err().to_string();
        assert!(
            e.contains("junk-ca.pem: not a usable CA certificate"),
            "{e}"
        );
        // The system roots are Debian's bundle.
        if Path::new(SYSTEM_ROOTS).exists() {
            client_config(None, None).unwrap();
        }
        assert!(server_name("[::1]").is_ok());
        assert!(server_name("peer.example").is_ok());
        assert!(server_name("not a name").is_err());
    }

    #[test]
    fn a_reload_keeps_the_old_configuration_when_the_new_files_are_bad() {
        let pki = Pki::new();
        let dir = pki.path("live");
        std::fs::create_dir_all(&dir).unwrap();
        let files = ListenerTls {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            client_ca_file: None,
        };
        std::fs::copy(pki.path("server.pem"), &files.cert_file).unwrap();
        std::fs::copy(pki.path("server.key"), &files.key_file).unwrap();
        let mut acceptor = Acceptor::load(&files).unwrap();
        let first = acceptor.config.clone();
        std::fs::copy(pki.path("server2.pem"), &files.cert_file).unwrap();
        // Cert replaced, key not yet: refused, the old configuration stays.
        assert!(acceptor.reload().is_err());
        assert!(Arc::ptr_eq(&first, &acceptor.config));
        std::fs::copy(pki.path("server2.key"), &files.key_file).unwrap();
        acceptor.reload().unwrap();
        assert!(!Arc::ptr_eq(&first, &acceptor.config));
    }
}
