//! Bearer tokens and the policy attached to each: which operations on which applications.
//!
//! The tokens file keeps only SHA-256 hashes. A presented token is hashed and compared with
//! every entry in constant time, so neither the position of a match nor the bytes of a hash
//! show in the time a request takes.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sys::fd::getrandom;

/// A tokens file larger than this is refused; real ones are a few KiB.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Entry names show up in logs and audit lines, so they are short and plain.
const MAX_NAME_LEN: usize = 64;
const MAX_PATTERN_LEN: usize = 256;
/// Random bytes in a generated token: 256 bits.
const TOKEN_RANDOM_BYTES: usize = 32;
pub const TOKEN_PREFIX: &str = "supd_";
const FILE_HEADER: &str = "# supd tokens: only SHA-256 hashes of the tokens are stored here.\n";

/// What a request does, as far as policy is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Read,
    Exec,
    Connect,
    Restart,
}

impl Operation {
    pub const ALL: [Operation; 4] = [
        Operation::Read,
        Operation::Exec,
        Operation::Connect,
        Operation::Restart,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Exec => "exec",
            Operation::Connect => "connect",
            Operation::Restart => "restart",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Operation> {
        Operation::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| Error::UnknownOperation(shorten(s)))
    }
}

#[derive(Debug)]
pub enum Error {
    /// Reading or writing a file failed.
    Io {
        path: PathBuf,
        source: io::Error,
    },
    /// The YAML does not have the expected shape; the source says where (line, column) and what.
    Parse {
        path: Option<PathBuf>,
        source: serde_yaml::Error,
    },
    /// The YAML has the right shape but a value is not acceptable.
    Invalid {
        path: Option<PathBuf>,
        location: String,
        message: String,
    },
    UnknownOperation(String),
    NameExists {
        path: PathBuf,
        name: String,
    },
    TooLarge {
        path: PathBuf,
    },
    /// Anyone but the owner could change the file, and so grant themselves a token.
    Insecure {
        path: PathBuf,
        mode: u32,
    },
    /// The file belongs to a user other than root and supd's own, who could change it.
    Owner {
        path: PathBuf,
        uid: u32,
    },
    /// The directory holding the file lets a user other than root and supd's own replace it
    /// (owned by another user, or group- or other-writable).
    InsecureDir {
        path: PathBuf,
        dir: PathBuf,
        uid: u32,
        mode: u32,
    },
    Random(io::Error),
    Serialize(serde_yaml::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = |path: &Option<PathBuf>| match path {
            Some(p) => p.display().to_string(),
            None => "tokens".to_owned(),
        };
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Parse { path, source } => write!(f, "{}: {source}", file(path)),
            Error::Invalid {
                path,
                location,
                message,
            } => write!(f, "{}: {location}: {message}", file(path)),
            Error::UnknownOperation(op) => write!(
                f,
                "unknown operation {op:?} (expected read, exec, connect or restart)"
            ),
            Error::NameExists { path, name } => {
                write!(
                    f,
                    "{}: a token named {name:?} already exists",
                    path.display()
                )
            }
            Error::TooLarge { path } => {
                write!(f, "{}: larger than {MAX_FILE_BYTES} bytes", path.display())
            }
            Error::Insecure { path, mode } => write!(
                f,
                "{}: mode {mode:04o} lets others than the owner write it",
                path.display()
            ),
            Error::Owner { path, uid } => write!(
                f,
                "{}: owned by uid {uid}, neither root nor supd's own user (uid {}), who could \
                 grant themselves a token",
                path.display(),
                own_uid()
            ),
            Error::InsecureDir {
                path,
                dir,
                uid,
                mode,
            } => write!(
                f,
                "{}: its directory {} (owner uid {uid}, mode {mode:04o}) lets others than root \
                 and supd's own user (uid {}) replace it",
                path.display(),
                dir.display(),
                own_uid()
            ),
            Error::Random(e) => write!(f, "getrandom: {e}"),
            Error::Serialize(e) => write!(f, "serializing tokens: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Parse { source, .. } => Some(source),
            Error::Random(e) => Some(e),
            Error::Serialize(e) => Some(e),
            _ => None,
        }
    }
}

impl Error {
    fn at(self, file: &Path) -> Error {
        match self {
            Error::Parse { source, .. } => Error::Parse {
                path: Some(file.to_owned()),
                source,
            },
            Error::Invalid {
                location, message, ..
            } => Error::Invalid {
                path: Some(file.to_owned()),
                location,
                message,
            },
            other => other,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Untrusted text quoted in an error stays short.
fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tokens: Vec<RawEntry>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    sha256: String,
    operations: Vec<Operation>,
    applications: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    name: String,
    hash: [u8; 32],
    /// One bit per `Operation`.
    operations: u8,
    applications: Vec<String>,
}

impl Entry {
    fn to_raw(&self) -> RawEntry {
        RawEntry {
            name: self.name.clone(),
            sha256: hex(&self.hash),
            operations: Operation::ALL
                .into_iter()
                .filter(|op| self.operations & op.bit() != 0)
                .collect(),
            applications: self.applications.clone(),
        }
    }
}

/// The loaded tokens file: names, hashes and policies, never a token itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<Entry>,
}

/// The outcome of checking a request's token against the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// `token` is the matching entry's name, for logs.
    Allow { token: &'a str },
    /// No token, or one that matches no entry.
    Unauthorized,
    /// A known token whose policy does not cover this operation on this application.
    Forbidden { token: &'a str },
}

/// Why a request is refused before its route is served (statuses in `http/error.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The token file could not be loaded: nothing is served (503).
    Sealed(String),
    /// No token, or one that matches no entry (401).
    Unauthorized,
    /// A known token whose policy does not cover this operation on this application (403).
    Forbidden {
        token: String,
        operation: Operation,
        application: String,
    },
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::Sealed(why) => write!(f, "strongbox sealed: {why}"),
            Denied::Unauthorized => f.write_str("missing or unknown bearer token"),
            Denied::Forbidden {
                token,
                operation,
                application,
            } => write!(
                f,
                "token {token:?} may not {operation} application {application:?}"
            ),
        }
    }
}

impl std::error::Error for Denied {}

impl Tokens {
    pub fn load(path: &Path) -> Result<Tokens> {
        let text = read_bounded(path)?;
        Tokens::parse(&text).map_err(|e| e.at(path))
    }

    pub fn parse(yaml: &str) -> Result<Tokens> {
        let raw: RawFile =
            serde_yaml::from_str(yaml).map_err(|source| Error::Parse { path: None, source })?;
        let mut entries: Vec<Entry> = Vec::with_capacity(raw.tokens.len());
        for (i, raw_entry) in raw.tokens.into_iter().enumerate() {
            let entry = validate_entry(i, raw_entry)?;
            let invalid = |message: String| Error::Invalid {
                path: None,
                location: format!("tokens[{i}] ({:?})", entry.name),
                message,
            };
            if let Some(other) = entries.iter().find(|e| e.name == entry.name) {
                return Err(invalid(format!("name {:?} is used twice", other.name)));
            }
            // Two names for one token would make the name logged for a request ambiguous.
            if let Some(other) = entries.iter().find(|e| e.hash == entry.hash) {
                return Err(invalid(format!(
                    "same sha256 as the entry {:?}",
                    other.name
                )));
            }
            entries.push(entry);
        }
        Ok(Tokens { entries })
    }

    /// `bearer` is the raw token presented (None: no usable `Authorization` header). The
    /// token's hash is compared with every entry in constant time: no early exit, and no
    /// branch on the bytes; only whether some entry matched decides what follows.
    pub fn check(&self, bearer: Option<&str>, op: Operation, application: &str) -> Decision<'_> {
        let Some(bearer) = bearer else {
            return Decision::Unauthorized;
        };
        let presented = sha256(bearer.as_bytes());
        let mut found = 0u8;
        let mut index = 0usize;
        for (i, entry) in self.entries.iter().enumerate() {
            let eq = ct_eq(&presented, &entry.hash);
            // All ones when this entry matched, all zeros otherwise.
            let mask = usize::from(eq).wrapping_neg();
            index = (i & mask) | (index & !mask);
            found |= eq;
        }
        if std::hint::black_box(found) == 0 {
            return Decision::Unauthorized;
        }
        let entry = &self.entries[index];
        let allowed = entry.operations & op.bit() != 0
            && entry
                .applications
                .iter()
                .any(|pattern| glob_match(pattern, application));
        if allowed {
            Decision::Allow { token: &entry.name }
        } else {
            Decision::Forbidden { token: &entry.name }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains_name(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }

    fn to_yaml(&self) -> Result<String> {
        let raw = RawFile {
            tokens: self.entries.iter().map(Entry::to_raw).collect(),
        };
        let body = serde_yaml::to_string(&raw).map_err(Error::Serialize)?;
        Ok(format!("{FILE_HEADER}{body}"))
    }
}

fn validate_entry(i: usize, raw: RawEntry) -> Result<Entry> {
    let invalid = |message: String| Error::Invalid {
        path: None,
        location: format!("tokens[{i}]"),
        message,
    };
    validate_name(&raw.name).map_err(invalid)?;
    let hash = parse_hash(&raw.sha256).map_err(invalid)?;
    if raw.operations.is_empty() {
        return Err(invalid("operations is empty".to_owned()));
    }
    if raw.applications.is_empty() {
        return Err(invalid("applications is empty".to_owned()));
    }
    for pattern in &raw.applications {
        validate_pattern(pattern).map_err(invalid)?;
    }
    Ok(Entry {
        name: raw.name,
        hash,
        operations: raw.operations.iter().fold(0, |bits, op| bits | op.bit()),
        applications: raw.applications,
    })
}

fn validate_name(name: &str) -> std::result::Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(plain) {
        return Err(format!(
            "name {:?} must be 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 - _ .",
            shorten(name)
        ));
    }
    Ok(())
}

fn parse_hash(text: &str) -> std::result::Result<[u8; 32], String> {
    let bad = || format!("sha256 {:?} is not 64 hex digits", shorten(text));
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return Err(bad());
    }
    let mut hash = [0u8; 32];
    for (out, pair) in hash.iter_mut().zip(bytes.chunks_exact(2)) {
        let hi = hex_value(pair[0]).ok_or_else(bad)?;
        let lo = hex_value(pair[1]).ok_or_else(bad)?;
        *out = (hi << 4) | lo;
    }
    Ok(hash)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = Sha256::digest(bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    out
}

/// 1 when `a == b`, else 0, in time independent of the contents.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> u8 {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // black_box keeps the optimiser from turning the accumulation into an early exit.
    let diff = u16::from(std::hint::black_box(diff));
    // diff - 1 borrows into the high byte only when diff is 0.
    ((diff.wrapping_sub(1) >> 8) & 1) as u8
}

pub fn hash_hex(token: &str) -> String {
    hex(&sha256(token.as_bytes()))
}

/// Parse an `Authorization` header value: scheme `Bearer` (any case), one or more spaces, a
/// token68 (RFC 7235). None for any other scheme or a malformed token.
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let value = header_value.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ');
    let body = token.trim_end_matches('=');
    let token68 =
        |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
    if body.is_empty() || !body.bytes().all(token68) {
        return None;
    }
    Some(token)
}

/// Shell-style match of a whole `name`: `*` (any run), `?` (one character), `[abc]`, `[a-z]`,
/// `[!x]` (also `[^x]`). A `[` without its `]` is a literal. Iterative with one backtrack
/// point, so the cost is at most pattern length times name length.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // After a `*`: where the pattern resumes, and the name position the star extends to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ni));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => match match_class(&p, pi, n[ni]) {
                Some((true, next)) => Some(next),
                Some((false, _)) => None,
                None => (n[ni] == '[').then_some(pi + 1),
            },
            Some(&c) => (c == n[ni]).then_some(pi + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ni += 1;
            }
            (None, Some((resume, extent))) => {
                // Let the last star swallow one more character and retry from there; earlier
                // stars never need to change, which is what keeps this polynomial.
                star = Some((resume, extent + 1));
                pi = resume;
                ni = extent + 1;
            }
            (None, None) => return false,
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == '*')
}

/// Match `c` against the bracket expression starting at `p[start] == '['`. Returns whether it
/// matched and the index after the closing `]`, or None when the class is not terminated.
fn match_class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        match (p.get(i + 1), p.get(i + 2)) {
            (Some('-'), Some(&hi)) if hi != ']' => {
                matched |= lo <= c && c <= hi;
                i += 3;
            }
            _ => {
                matched |= lo == c;
                i += 1;
            }
        }
    }
}

/// A pattern in the tokens file must be one `glob_match` reads the way its author meant: an
/// unterminated `[` is almost certainly a typo, not a wish to match a literal bracket.
fn validate_pattern(pattern: &str) -> std::result::Result<(), String> {
    if pattern.is_empty() || pattern.len() > MAX_PATTERN_LEN {
        return Err(format!(
            "application pattern must be 1 to {MAX_PATTERN_LEN} bytes"
        ));
    }
    let p: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < p.len() {
        if p[i] == '[' {
            match match_class(&p, i, '\0') {
                Some((_, next)) => i = next,
                None => {
                    return Err(format!(
                        "application pattern {:?} has a '[' without its ']'",
                        shorten(pattern)
                    ));
                }
            }
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// A new random token: 256 bits from getrandom(2), base64url without padding, prefixed `supd_`
/// so that secret scanners and people recognise it.
pub fn generate_token() -> Result<String> {
    let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
    getrandom(&mut bytes).map_err(Error::Random)?;
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    Ok(format!("{TOKEN_PREFIX}{encoded}"))
}

/// Append a new entry to the tokens file at `path`, creating it (mode 0600, parent directory
/// 0700) if missing. Fails if `name` exists. Returns the new token, which is stored nowhere.
pub fn create_token(
    path: &Path,
    name: &str,
    operations: &[Operation],
    applications: &[String],
) -> Result<String> {
    let token = generate_token()?;
    add_entry(path, name, operations, applications, &token)?;
    Ok(token)
}

/// First start: when `tokens_path` does not exist, create it with one `admin` token (every
/// operation, every application) and write that token to `token_out` (mode 0600). Returns
/// where the token went, or None when the tokens file already existed.
pub fn bootstrap(tokens_path: &Path, token_out: &Path) -> Result<Option<PathBuf>> {
    if tokens_path.try_exists().map_err(io_err(tokens_path))? {
        return Ok(None);
    }
    let token = generate_token()?;
    // The token file first: if the tokens file were written first and this failed, the admin
    // token would be lost and the next start would find a tokens file nobody can use.
    ensure_parent_dir(token_out)?;
    write_atomic(token_out, format!("{token}\n").as_bytes())?;
    add_entry(
        tokens_path,
        "admin",
        &Operation::ALL,
        &["*".to_owned()],
        &token,
    )?;
    Ok(Some(token_out.to_owned()))
}

fn add_entry(
    path: &Path,
    name: &str,
    operations: &[Operation],
    applications: &[String],
    token: &str,
) -> Result<()> {
    let raw = RawEntry {
        name: name.to_owned(),
        sha256: hash_hex(token),
        operations: operations.to_vec(),
        applications: applications.to_vec(),
    };
    let entry = validate_entry(0, raw).map_err(|e| match e {
        Error::Invalid { message, .. } => Error::Invalid {
            path: Some(path.to_owned()),
            location: format!("new token {:?}", shorten(name)),
            message,
        },
        other => other,
    })?;
    ensure_parent_dir(path)?;
    let existing = match read_bounded(path) {
        Ok(text) => Some(text),
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            check_dir(path, parent_dir(path))?;
            None
        }
        Err(e) => return Err(e),
    };
    let text = match existing {
        // A new file: not where others could replace it (an existing one was checked).
        None => Tokens {
            entries: vec![entry],
        }
        .to_yaml()?,
        Some(old_text) => {
            let old = Tokens::parse(&old_text).map_err(|e| e.at(path))?;
            if old.contains_name(name) {
                return Err(Error::NameExists {
                    path: path.to_owned(),
                    name: name.to_owned(),
                });
            }
            let mut expected = old;
            expected.entries.push(entry.clone());
            appended_text(&old_text, &entry, &expected)?
        }
    };
    write_atomic(path, text.as_bytes())
}

/// The new file's text: the old text with the entry appended, which keeps the operator's
/// comments and layout, when that parses back to exactly `expected`; otherwise (flow style,
/// another list after `tokens`, ...) the whole file serialised anew.
fn appended_text(old_text: &str, entry: &Entry, expected: &Tokens) -> Result<String> {
    let one = RawFile {
        tokens: vec![entry.to_raw()],
    };
    let serialized = serde_yaml::to_string(&one).map_err(Error::Serialize)?;
    let item = serialized.strip_prefix("tokens:\n").unwrap_or(&serialized);
    let separator = if old_text.is_empty() || old_text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    for indent in ["", "  "] {
        let mut candidate = format!("{old_text}{separator}");
        for line in item.lines() {
            candidate.push_str(indent);
            candidate.push_str(line);
            candidate.push('\n');
        }
        if Tokens::parse(&candidate).ok().as_ref() == Some(expected) {
            return Ok(candidate);
        }
    }
    expected.to_yaml()
}

/// A secret kept in a file of its own (a peer site's `token-file`): trusted as the tokens
/// file is (root's or supd's, in a directory only they write, not writable by others), one
/// line, surrounding white space ignored.
pub fn read_secret_file(path: &Path) -> Result<String> {
    let text = read_bounded(path)?;
    let secret = text.trim();
    if secret.is_empty() || secret.contains(['\n', '\r']) || secret.chars().any(char::is_control) {
        return Err(Error::Invalid {
            path: Some(path.to_owned()),
            location: "token".to_owned(),
            message: "must hold one token on one line".to_owned(),
        });
    }
    Ok(secret.to_owned())
}

fn read_bounded(path: &Path) -> Result<String> {
    // Never blocks (a FIFO in the file's place), refuses all but a regular file.
    let (file, meta) = crate::sys::fd::open_regular(path).map_err(io_err(path))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Error::Insecure {
            path: path.to_owned(),
            mode,
        });
    }
    check_trusted(path, &meta)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io_err(path))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(text)
}

fn own_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Whoever can change the tokens file can grant themselves any operation, so only root and
/// supd's own user may: the file must be theirs, and so must the directory holding it, which
/// nobody else may write either (whoever writes a directory can rename another file over
/// the tokens file). A sticky world-writable directory such as /tmp is refused too: a file
/// of supd's there is safe from others, but one missing for a moment (before the first
/// write) is not, and a tokens file has no business there. Both the directory named and,
/// when the path goes through symbolic links, the one the file really lies in are checked.
fn check_trusted(path: &Path, meta: &fs::Metadata) -> Result<()> {
    let trusted = |uid: u32| uid == 0 || uid == own_uid();
    if !trusted(meta.uid()) {
        return Err(Error::Owner {
            path: path.to_owned(),
            uid: meta.uid(),
        });
    }
    let real = fs::canonicalize(path).map_err(io_err(path))?;
    check_dir(path, parent_dir(path))?;
    check_dir(path, parent_dir(&real))
}

/// The directory `dir` holding the tokens file `path` is root's or supd's, and only its owner
/// writes it.
fn check_dir(path: &Path, dir: &Path) -> Result<()> {
    let d = fs::metadata(dir).map_err(io_err(dir))?;
    let mode = d.mode() & 0o7777;
    if (d.uid() != 0 && d.uid() != own_uid()) || mode & 0o022 != 0 {
        return Err(Error::InsecureDir {
            path: path.to_owned(),
            dir: dir.to_owned(),
            uid: d.uid(),
            mode,
        });
    }
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn ensure_parent_dir(path: &Path) -> Result<()> {
    let dir = parent_dir(path);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

/// Replace `path` with `bytes` atomically, mode 0600: write a temporary file in the same
/// directory, fsync it, rename it over `path`, fsync the directory. A reader (or a crash) sees
/// the old file or the new one, never a mix.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    let file_name = path.file_name().ok_or_else(|| Error::Io {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "no file name"),
    })?;
    let mut suffix = [0u8; 8];
    getrandom(&mut suffix).map_err(Error::Random)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", hex(&suffix)));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The umask can only take bits away, but say 0600 explicitly rather than rely on it.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    result.map_err(|source| {
        // Best effort: the temporary name is random, so a leftover harms nothing but space.
        let _ = fs::remove_file(&tmp);
        Error::Io {
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn temp_dir(tag: &str) -> PathBuf {
        let mut r = [0u8; 8];
        getrandom(&mut r).unwrap();
        let dir = std::env::temp_dir().join(format!("supd-auth-{tag}-{}", hex(&r)));
        fs::create_dir_all(&dir).unwrap();
        // Whatever the umask: only the owner writes it, as a tokens file's directory must.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    fn sample() -> (Tokens, [&'static str; 3]) {
        let yaml = format!(
            "tokens:\n\
             - name: admin\n  sha256: \"{}\"\n  operations: [read, exec, connect, restart]\n  applications: [\"*\"]\n\
             - name: ops\n  sha256: \"{}\"\n  operations: [read, restart]\n  applications: [\"web-*\", \"db\"]\n\
             - name: viewer\n  sha256: \"{}\"\n  operations: [read]\n  applications: [\"[a-c]?p\"]\n",
            hash_hex("admin-token"),
            hash_hex("ops-token").to_uppercase(),
            hash_hex("viewer-token"),
        );
        (
            Tokens::parse(&yaml).unwrap(),
            ["admin-token", "ops-token", "viewer-token"],
        )
    }

    #[test]
    fn policy_decisions() {
        let (t, [admin, ops, viewer]) = sample();
        assert_eq!(t.len(), 3);
        use Decision::*;
        use Operation::*;
        assert_eq!(t.check(None, Read, "web"), Unauthorized);
        assert_eq!(t.check(Some(""), Read, "web"), Unauthorized);
        assert_eq!(t.check(Some("nope"), Read, "web"), Unauthorized);
        assert_eq!(t.check(Some("admin-token "), Read, "x"), Unauthorized);
        for op in Operation::ALL {
            assert_eq!(
                t.check(Some(admin), op, "anything"),
                Allow { token: "admin" }
            );
        }
        assert_eq!(t.check(Some(ops), Restart, "web-1"), Allow { token: "ops" });
        assert_eq!(t.check(Some(ops), Read, "db"), Allow { token: "ops" });
        assert_eq!(
            t.check(Some(ops), Exec, "web-1"),
            Forbidden { token: "ops" }
        );
        assert_eq!(t.check(Some(ops), Read, "dbx"), Forbidden { token: "ops" });
        assert_eq!(t.check(Some(ops), Read, "web"), Forbidden { token: "ops" });
        assert_eq!(
            t.check(Some(viewer), Read, "bap"),
            Allow { token: "viewer" }
        );
        assert_eq!(
            t.check(Some(viewer), Read, "dap"),
            Forbidden { token: "viewer" }
        );
        assert_eq!(
            t.check(Some(viewer), Connect, "app"),
            Forbidden { token: "viewer" }
        );
    }

    #[test]
    fn empty_tokens_deny_everything() {
        let t = Tokens::parse("tokens: []\n").unwrap();
        assert!(t.is_empty());
        assert_eq!(
            t.check(Some("x"), Operation::Read, "a"),
            Decision::Unauthorized
        );
    }

    #[test]
    fn ct_eq_compares_whole_arrays() {
        let a = [7u8; 32];
        assert_eq!(ct_eq(&a, &a), 1);
        for i in 0..32 {
            for bit in 0..8 {
                let mut b = a;
                b[i] ^= 1 << bit;
                assert_eq!(ct_eq(&a, &b), 0, "byte {i} bit {bit}");
            }
        }
        assert_eq!(ct_eq(&[0; 32], &[0; 32]), 1);
        assert_eq!(ct_eq(&[0; 32], &[0xff; 32]), 0);
    }

    #[test]
    fn matches_last_entry_too() {
        // The match index is selected with masks; make sure every position can win.
        let yaml: String = (0..10)
            .map(|i| {
                format!(
                    "- name: t{i}\n  sha256: {}\n  operations: [read]\n  applications: ['*']\n",
                    hash_hex(&format!("tok{i}"))
                )
            })
            .collect();
        let t = Tokens::parse(&format!("tokens:\n{yaml}")).unwrap();
        for i in 0..10 {
            let name = format!("t{i}");
            assert_eq!(
                t.check(Some(&format!("tok{i}")), Operation::Read, "a"),
                Decision::Allow { token: &name }
            );
        }
    }

    fn parse_err(yaml: &str) -> String {
        Tokens::parse(yaml).unwrap_err().to_string()
    }

    #[test]
    fn parse_errors() {
        let h = hash_hex("x");
        let entry = |extra: &str| {
            format!(
                "tokens:\n- name: a\n  sha256: {h}\n  operations: [read]\n  applications: ['*']\n{extra}"
            )
        };
        assert!(parse_err(&entry("  colour: red\n")).contains("unknown field `colour`"));
        assert!(parse_err("tokens: []\nextra: 1\n").contains("unknown field `extra`"));
        assert!(parse_err("").contains("tokens"));
        assert!(parse_err("- a\n").contains("tokens"));
        let bad_op = entry("").replace("[read]", "[read, fly]");
        let msg = parse_err(&bad_op);
        assert!(msg.contains("fly") && msg.contains("line"), "{msg}");
        let bad_hex = entry("").replace(&h, &format!("{}zz", &h[..62]));
        assert!(parse_err(&bad_hex).contains("64 hex digits"));
        let short = entry("").replace(&h, &h[..62]);
        assert!(parse_err(&short).contains("64 hex digits"));
        let empty_ops = entry("").replace("[read]", "[]");
        assert!(parse_err(&empty_ops).contains("operations is empty"));
        let empty_apps = entry("").replace("['*']", "[]");
        assert!(parse_err(&empty_apps).contains("applications is empty"));
        let bad_glob = entry("").replace("['*']", "['web-[ab']");
        assert!(parse_err(&bad_glob).contains("without its"));
        let bad_name = entry("").replace("name: a", "name: 'a b'");
        assert!(parse_err(&bad_name).contains("name"));
        let dup = format!(
            "{}- name: a\n  sha256: {}\n  operations: [read]\n  applications: ['*']\n",
            entry(""),
            hash_hex("y")
        );
        assert!(
            parse_err(&dup).contains("used twice"),
            "{}",
            parse_err(&dup)
        );
        let dup_hash = format!(
            "{}- name: b\n  sha256: {h}\n  operations: [read]\n  applications: ['*']\n",
            entry("")
        );
        assert!(parse_err(&dup_hash).contains("same sha256"));
        let missing = "tokens:\n- name: a\n  operations: [read]\n  applications: ['*']\n";
        assert!(parse_err(missing).contains("sha256"));
        // Arbitrary bytes never panic.
        for junk in [
            "\0\u{1}",
            "tokens: {",
            "tokens: [[[[[[",
            "&a [*a]",
            "tokens: !!binary x",
        ] {
            assert!(Tokens::parse(junk).is_err());
        }
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = temp_dir("load");
        let path = dir.join("tokens.yaml");
        let err = Tokens::load(&path).unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        assert!(err.to_string().contains("tokens.yaml"));
        fs::write(&path, "tokens: [1]\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = Tokens::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            Tokens::load(&path).unwrap_err(),
            Error::Insecure { mode: 0o666, .. }
        ));
        fs::write(&path, vec![b' '; MAX_FILE_BYTES as usize + 1]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Tokens::load(&path).unwrap_err(),
            Error::TooLarge { .. }
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A file or directory that a user other than root and supd's own could change is refused,
    /// whatever the file's mode. The tests run as root, so chown works.
    /// A FIFO in place of a token file (or the tokens file, or a PEM file) is refused at
    /// once: opening it must not wait for a writer (this runs on the loop at SIGHUP).
    #[test]
    fn a_fifo_in_place_of_a_secret_file_is_refused_without_blocking() {
        let dir = temp_dir("fifo");
        let path = dir.join("b.token");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let secret = read_secret_file(&p).map_err(|e| e.to_string());
            let tokens = Tokens::load(&p).map(|_| ()).map_err(|e| e.to_string());
            let pem = crate::tls::load_certs(&p)
                .map(|_| ())
                .map_err(|e| e.to_string());
            let _ = tx.send((secret, tokens, pem));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(3));
        // Release the opener, if it is stuck, before asserting.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path);
        let (secret, tokens, pem) = got.expect("opening a FIFO blocked");
        for r in [secret.map(|_| ()), tokens, pem] {
            let e = r.unwrap_err();
            assert!(e.contains("not a regular file"), "{e}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn foreign_owners_and_open_directories_are_refused() {
        assert_eq!(own_uid(), 0, "these checks need root");
        let dir = temp_dir("owner");
        let path = dir.join("tokens.yaml");
        fs::write(&path, "tokens: []\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Tokens::load(&path).is_ok());

        std::os::unix::fs::chown(&path, Some(1000), Some(1000)).unwrap();
        let err = Tokens::load(&path).unwrap_err();
        assert!(matches!(err, Error::Owner { uid: 1000, .. }), "{err}");
        assert!(err.to_string().contains("owned by uid 1000"), "{err}");
        // Adding a token to it is refused alike.
        assert!(matches!(
            create_token(&path, "x", &[Operation::Read], &["*".into()]),
            Err(Error::Owner { .. })
        ));
        std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
        assert!(Tokens::load(&path).is_ok());

        for mode in [0o777, 0o1777, 0o775, 0o757] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
            let err = Tokens::load(&path).unwrap_err();
            assert!(
                matches!(&err, Error::InsecureDir { dir: d, mode: m, .. } if *d == dir && *m == mode),
                "{mode:o}: {err}"
            );
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Tokens::load(&path).is_ok());
        std::os::unix::fs::chown(&dir, Some(1000), None).unwrap();
        let err = Tokens::load(&path).unwrap_err();
        assert!(matches!(err, Error::InsecureDir { uid: 1000, .. }), "{err}");
        std::os::unix::fs::chown(&dir, Some(0), None).unwrap();

        // Through a symbolic link the real directory counts too.
        let open = dir.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let real = open.join("tokens.yaml");
        fs::rename(&path, &real).unwrap();
        std::os::unix::fs::symlink(&real, &path).unwrap();
        assert!(matches!(
            Tokens::load(&path).unwrap_err(),
            Error::InsecureDir { dir: d, .. } if d == open
        ));
        fs::set_permissions(&open, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(Tokens::load(&path).is_ok());

        // A new tokens file is not created where others could replace it.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        let new = open.join("new.yaml");
        assert!(matches!(
            create_token(&new, "x", &[Operation::Read], &["*".into()]),
            Err(Error::InsecureDir { .. })
        ));
        assert!(!new.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn operations_round_trip() {
        for op in Operation::ALL {
            assert_eq!(op.to_string().parse::<Operation>().unwrap(), op);
        }
        assert!("Read".parse::<Operation>().is_err());
        assert!("".parse::<Operation>().is_err());
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER   abc-._~+/=="), Some("abc-._~+/=="));
        assert_eq!(bearer_token(" Bearer abc \t"), Some("abc"));
        assert_eq!(bearer_token("Bearer supd_AZaz09-_"), Some("supd_AZaz09-_"));
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer =="), None);
        assert_eq!(bearer_token("Bearer a=b"), None);
        assert_eq!(bearer_token("Bearer a b"), None);
        assert_eq!(bearer_token("Bearer\tabc"), None);
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
        assert_eq!(bearer_token("Bearer ab\u{e9}"), None);
        assert_eq!(bearer_token(""), None);
    }

    #[test]
    fn globs() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "a", false),
            ("web", "web", true),
            ("web", "web2", false),
            ("web*", "web", true),
            ("web*", "web-1", true),
            ("*-1", "web-1", true),
            ("*-1", "web-2", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "abcbc", true),
            ("a*b*c", "acb", false),
            ("?", "a", true),
            ("?", "", false),
            ("??", "ab", true),
            ("?", "\u{e9}", true),
            ("[abc]x", "bx", true),
            ("[abc]x", "dx", false),
            ("[a-c]", "b", true),
            ("[a-c]", "d", false),
            ("[!x]", "y", true),
            ("[!x]", "x", false),
            ("[^x]", "x", false),
            ("[]]", "]", true),
            ("[!]]", "]", false),
            ("[a-]", "-", true),
            ("[ab", "[ab", true),
            ("[ab", "a", false),
            ("*[0-9]", "web9", true),
            ("*[0-9]", "web", false),
            ("**", "x", true),
            ("a**", "a", true),
        ];
        for (p, n, want) in cases {
            assert_eq!(glob_match(p, n), want, "{p:?} vs {n:?}");
        }
    }

    #[test]
    fn glob_is_not_exponential() {
        let name = "a".repeat(2000);
        let pattern = format!("{}b", "a*".repeat(200));
        let start = std::time::Instant::now();
        assert!(!glob_match(&pattern, &name));
        // Generous: quadratic is a few ms; exponential would never finish.
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn generated_tokens() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_eq!(bearer_token(&format!("Bearer {a}")), Some(a.as_str()));
        assert_eq!(hash_hex("abc").len(), 64);
        assert_eq!(
            hash_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn create_and_append() {
        let dir = temp_dir("create");
        let path = dir.join("sub/dir/tokens.yaml");
        let first = create_token(&path, "ci", &[Operation::Read], &["web-*".to_owned()]).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.join("sub")), 0o700);
        assert_eq!(mode(&dir.join("sub/dir")), 0o700);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&first),
            "the token itself must not be stored"
        );
        let second = create_token(
            &path,
            "deploy",
            &[Operation::Restart, Operation::Read],
            &["*".to_owned()],
        )
        .unwrap();
        assert_eq!(mode(&path), 0o600);
        let t = Tokens::load(&path).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.check(Some(&first), Operation::Read, "web-a"),
            Decision::Allow { token: "ci" }
        );
        assert_eq!(
            t.check(Some(&second), Operation::Restart, "db"),
            Decision::Allow { token: "deploy" }
        );
        let err = create_token(&path, "ci", &[Operation::Read], &["*".to_owned()]).unwrap_err();
        assert!(matches!(err, Error::NameExists { .. }));
        assert!(create_token(&path, "x", &[], &["*".to_owned()]).is_err());
        assert!(create_token(&path, "x", &[Operation::Read], &[]).is_err());
        assert!(create_token(&path, "bad name", &[Operation::Read], &["*".to_owned()]).is_err());
        assert_eq!(Tokens::load(&path).unwrap().len(), 2);
        // No temporary files left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn append_keeps_comments_or_rewrites() {
        let dir = temp_dir("append");
        let path = dir.join("tokens.yaml");
        let indented = format!(
            "# operators' notes\ntokens:\n  - name: a # first\n    sha256: {}\n    operations: [read]\n    applications: ['*']",
            hash_hex("a")
        );
        fs::write(&path, &indented).unwrap();
        let tok = create_token(&path, "b", &[Operation::Exec], &["x".to_owned()]).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&indented), "{text}");
        assert!(text.contains("# first"));
        let t = Tokens::load(&path).unwrap();
        assert_eq!(
            t.check(Some(&tok), Operation::Exec, "x"),
            Decision::Allow { token: "b" }
        );
        assert_eq!(
            t.check(Some("a"), Operation::Read, "y"),
            Decision::Allow { token: "a" }
        );

        // Flow style cannot be appended to: the file is written anew, entries kept.
        fs::write(&path, "tokens: []\n").unwrap();
        create_token(&path, "c", &[Operation::Read], &["*".to_owned()]).unwrap();
        create_token(&path, "d", &[Operation::Read], &["*".to_owned()]).unwrap();
        let t = Tokens::load(&path).unwrap();
        assert!(t.contains_name("c") && t.contains_name("d") && t.len() == 2);

        // A broken file is an error, not overwritten.
        fs::write(&path, "tokens: [\n").unwrap();
        assert!(matches!(
            create_token(&path, "e", &[Operation::Read], &["*".to_owned()]).unwrap_err(),
            Error::Parse { path: Some(_), .. }
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), "tokens: [\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bootstrap_once() {
        let dir = temp_dir("bootstrap");
        let tokens = dir.join("etc/tokens.yaml");
        let out = dir.join("etc/admin.token");
        assert_eq!(bootstrap(&tokens, &out).unwrap(), Some(out.clone()));
        assert_eq!(mode(&tokens), 0o600);
        assert_eq!(mode(&out), 0o600);
        assert_eq!(mode(&dir.join("etc")), 0o700);
        let token = fs::read_to_string(&out).unwrap();
        let token = token.trim_end();
        let t = Tokens::load(&tokens).unwrap();
        assert_eq!(t.len(), 1);
        for op in Operation::ALL {
            assert_eq!(
                t.check(Some(token), op, "any-app"),
                Decision::Allow { token: "admin" }
            );
        }
        let before = fs::read(&tokens).unwrap();
        assert_eq!(bootstrap(&tokens, &out).unwrap(), None);
        assert_eq!(fs::read(&tokens).unwrap(), before);
        assert_eq!(fs::read_to_string(&out).unwrap().trim_end(), token);
        fs::remove_dir_all(&dir).unwrap();
    }
}
