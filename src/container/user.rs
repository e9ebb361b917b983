//! Resolving a container's user (`Config.User`) from its own /etc/passwd and /etc/group,
//! with runc's rules (`GetExecUser`), inside the container's mount namespace.
//!
//! This runs in a forked child, so nothing here allocates: results go into buffers that
//! [`Identity::with_capacity`] reserves before the fork.

use std::ffi::CStr;
use std::ops::ControlFlow;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};

/// Longest line of passwd or group considered; longer lines are skipped.
pub const LINE_BUFFER: usize = 8192;
const MAX_HOME: usize = 4096;
const MAX_NAME: usize = 256;
/// Supplementary groups kept for one user.
pub const MAX_GROUPS: usize = 256;
/// runc's valid id range: 0 ..= 2^31 - 1.
const MAX_ID: u32 = i32::MAX as u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserError {
    NoSuchUser,
    NoSuchGroup,
    IdOutOfRange,
    TooManyGroups,
    NameTooLong,
    HomeTooLong,
    Read(&'static str, Errno),
}

impl UserError {
    /// The words of a one-line message, without allocating.
    pub fn describe(&self) -> (&'static str, &'static str) {
        match self {
            UserError::NoSuchUser => ("user", "no matching entry in /etc/passwd"),
            UserError::NoSuchGroup => ("group", "no matching entry in /etc/group"),
            UserError::IdOutOfRange => ("user", "id out of range"),
            UserError::TooManyGroups => ("user", "too many supplementary groups"),
            UserError::NameTooLong => ("user", "name too long"),
            UserError::HomeTooLong => ("user", "home directory too long"),
            UserError::Read(file, errno) => (file, errno.desc()),
        }
    }
}

/// `user`, `uid`, `user:group`, `uid:gid`... split on the first colon.
#[derive(Debug, PartialEq, Eq)]
pub struct UserSpec<'a> {
    pub user: &'a [u8],
    pub group: &'a [u8],
}

pub fn parse_spec(spec: &[u8]) -> UserSpec<'_> {
    match spec.iter().position(|&b| b == b':') {
        Some(colon) => UserSpec {
            user: &spec[..colon],
            group: &spec[colon + 1..],
        },
        None => UserSpec {
            user: spec,
            group: &[],
        },
    }
}

/// A decimal id in runc's range; anything else is a name.
pub fn parse_id(text: &[u8]) -> Option<u32> {
    if text.is_empty() || text.len() > 10 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = text
        .iter()
        .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
    u32::try_from(value).ok().filter(|&id| id <= MAX_ID)
}

#[derive(Debug, PartialEq, Eq)]
pub struct PasswdEntry<'a> {
    pub name: &'a [u8],
    pub uid: u32,
    pub gid: u32,
    pub home: &'a [u8],
}

#[derive(Debug, PartialEq, Eq)]
pub struct GroupEntry<'a> {
    pub name: &'a [u8],
    pub gid: u32,
    pub members: &'a [u8],
}

impl GroupEntry<'_> {
    pub fn has_member(&self, name: &[u8]) -> bool {
        !name.is_empty() && self.members.split(|&b| b == b',').any(|m| trim(m) == name)
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Significant line content: none for blank lines and comments.
fn content(line: &[u8]) -> Option<&[u8]> {
    let line = trim(line);
    (!line.is_empty() && line[0] != b'#').then_some(line)
}

/// `name:password:uid:gid:gecos:home:shell`. Lines whose ids do not parse are skipped
/// rather than read as 0, so a garbled line can never become root.
pub fn parse_passwd_line(line: &[u8]) -> Option<PasswdEntry<'_>> {
    let mut fields = content(line)?.split(|&b| b == b':');
    let name = fields.next()?;
    let _password = fields.next()?;
    let uid = parse_id(fields.next()?)?;
    let gid = parse_id(fields.next()?)?;
    let _gecos = fields.next();
    let home = fields.next().unwrap_or_default();
    (!name.is_empty()).then_some(PasswdEntry {
        name,
        uid,
        gid,
        home,
    })
}

/// `name:password:gid:member,member`.
pub fn parse_group_line(line: &[u8]) -> Option<GroupEntry<'_>> {
    let mut fields = content(line)?.split(|&b| b == b':');
    let name = fields.next()?;
    let _password = fields.next()?;
    let gid = parse_id(fields.next()?)?;
    let members = fields.next().unwrap_or_default();
    (!name.is_empty()).then_some(GroupEntry { name, gid, members })
}

/// A source of lines: a file read through a fixed buffer, or bytes in tests.
pub trait Lines {
    /// Calls `each` for every line until it breaks. A missing source has no lines.
    fn for_each_line(
        &mut self,
        each: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), UserError>;
}

impl Lines for &[u8] {
    fn for_each_line(
        &mut self,
        each: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), UserError> {
        for line in self.split(|&b| b == b'\n') {
            if each(line).is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// A file of the current root, read line by line through a caller's buffer.
pub struct FileLines<'b> {
    pub path: &'static CStr,
    pub buf: &'b mut [u8],
}

impl Lines for FileLines<'_> {
    fn for_each_line(
        &mut self,
        each: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), UserError> {
        let name = self.path.to_str().unwrap_or("file");
        let fail = |errno| UserError::Read(name, errno);
        // Non-blocking open and a regular-file check: a FIFO planted at /etc/passwd must not
        // hang the exec.
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let fd = match nix::fcntl::open(self.path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(()),
            Err(errno) => return Err(fail(errno)),
        };
        let stat = nix::sys::stat::fstat(fd.as_fd()).map_err(fail)?;
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(fail(Errno::EINVAL));
        }
        let buf = &mut *self.buf;
        let (mut filled, mut skipping) = (0, false);
        loop {
            let n = match nix::unistd::read(fd.as_fd(), &mut buf[filled..]) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(errno) => return Err(fail(errno)),
            };
            filled += n;
            let mut start = 0;
            while let Some(nl) = buf[start..filled].iter().position(|&b| b == b'\n') {
                let line = &buf[start..start + nl];
                start += nl + 1;
                if skipping {
                    skipping = false;
                } else if each(line).is_break() {
                    return Ok(());
                }
            }
            if n == 0 {
                if !skipping && start < filled {
                    let _ = each(&buf[start..filled]);
                }
                return Ok(());
            }
            buf.copy_within(start..filled, 0);
            filled -= start;
            if filled == buf.len() {
                // A line longer than the buffer: drop it up to its newline.
                skipping = true;
                filled = 0;
            }
        }
    }
}

/// A resolved user; its buffers are reserved before forking and filled without allocating.
#[derive(Debug)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub home: Vec<u8>,
    pub name: Vec<u8>,
    pub groups: Vec<nix::unistd::Gid>,
}

impl Identity {
    pub fn with_capacity() -> Self {
        Identity {
            uid: 0,
            gid: 0,
            home: Vec::with_capacity(MAX_HOME),
            name: Vec::with_capacity(MAX_NAME),
            groups: Vec::with_capacity(MAX_GROUPS),
        }
    }
}

fn copy_within_capacity(to: &mut Vec<u8>, from: &[u8], err: UserError) -> Result<(), UserError> {
    to.clear();
    if from.len() > to.capacity() {
        return Err(err);
    }
    to.extend_from_slice(from);
    Ok(())
}

/// Resolves `spec` like runc: an empty user is uid 0; a numeric user is a uid (its passwd
/// entry, if any, gives gid, home and name); a name must have a passwd entry. An explicit
/// group replaces the primary gid (a name must exist in group); without one, the groups that
/// list the user's name become the supplementary groups. Without an entry, home is `/`.
/// The supplementary groups start with the primary one, as Docker sets them.
pub fn resolve(
    spec: &[u8],
    passwd: &mut dyn Lines,
    group: &mut dyn Lines,
    out: &mut Identity,
) -> Result<(), UserError> {
    let spec = parse_spec(spec);
    let numeric_uid = if spec.user.is_empty() {
        Some(0)
    } else {
        parse_id(spec.user)
    };
    if numeric_uid.is_none() && spec.user.iter().all(u8::is_ascii_digit) {
        return Err(UserError::IdOutOfRange);
    }
    out.uid = numeric_uid.unwrap_or(0);
    out.gid = 0;
    out.groups.clear();
    copy_within_capacity(&mut out.home, b"/", UserError::HomeTooLong)?;
    out.name.clear();

    let mut found = Ok(false);
    passwd.for_each_line(&mut |line| {
        let Some(entry) = parse_passwd_line(line) else {
            return ControlFlow::Continue(());
        };
        let matches = match numeric_uid {
            Some(uid) => entry.uid == uid,
            None => entry.name == spec.user,
        };
        if !matches {
            return ControlFlow::Continue(());
        }
        out.uid = entry.uid;
        out.gid = entry.gid;
        found = copy_within_capacity(&mut out.name, entry.name, UserError::NameTooLong)
            .and_then(|()| copy_within_capacity(&mut out.home, entry.home, UserError::HomeTooLong))
            .map(|()| true);
        ControlFlow::Break(())
    })?;
    let found = found?;
    if !found && numeric_uid.is_none() {
        return Err(UserError::NoSuchUser);
    }

    if !spec.group.is_empty() {
        let numeric_gid = parse_id(spec.group);
        if numeric_gid.is_none() && spec.group.iter().all(u8::is_ascii_digit) {
            return Err(UserError::IdOutOfRange);
        }
        let mut gid = None;
        group.for_each_line(&mut |line| match parse_group_line(line) {
            Some(entry)
                if numeric_gid.map_or(entry.name == spec.group, |wanted| entry.gid == wanted) =>
            {
                gid = Some(entry.gid);
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        })?;
        out.gid = gid.or(numeric_gid).ok_or(UserError::NoSuchGroup)?;
    } else if found {
        let mut result = Ok(());
        let (name, groups) = (&out.name, &mut out.groups);
        group.for_each_line(&mut |line| {
            let Some(entry) = parse_group_line(line) else {
                return ControlFlow::Continue(());
            };
            if !entry.has_member(name) {
                return ControlFlow::Continue(());
            }
            if groups.len() == groups.capacity() {
                result = Err(UserError::TooManyGroups);
                return ControlFlow::Break(());
            }
            groups.push(nix::unistd::Gid::from_raw(entry.gid));
            ControlFlow::Continue(())
        })?;
        result?;
    }
    // Like `docker exec`, the primary group is also a supplementary one, first.
    if !out.groups.contains(&nix::unistd::Gid::from_raw(out.gid)) {
        if out.groups.len() == out.groups.capacity() {
            return Err(UserError::TooManyGroups);
        }
        out.groups.insert(0, nix::unistd::Gid::from_raw(out.gid));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::Gid;

    const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        \n\
        daemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n\
        broken:x:notanumber:5::/nowhere:/bin/sh\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        short:x:1001:1001\n\
        app:x:2000:2000:Second:/second:/bin/sh";
    const GROUP: &[u8] = b"root:x:0:\n\
        wheel:x:10:root,app\n\
        audio:x:29: app , other\n\
        app:x:1000:\n\
        staff:x:50:other\n\
        bad:x:zz:app";

    fn resolve_str(spec: &str) -> Result<Identity, UserError> {
        let mut id = Identity::with_capacity();
        resolve(spec.as_bytes(), &mut { PASSWD }, &mut { GROUP }, &mut id).map(|()| id)
    }

    fn gids(values: &[u32]) -> Vec<Gid> {
        values.iter().map(|&g| Gid::from_raw(g)).collect()
    }

    #[test]
    fn parses_passwd_lines() {
        assert_eq!(
            parse_passwd_line(b"app:x:1000:1001:App:/home/app:/bin/sh"),
            Some(PasswdEntry {
                name: b"app",
                uid: 1000,
                gid: 1001,
                home: b"/home/app"
            })
        );
        assert_eq!(
            parse_passwd_line(b"short:x:5:6").map(|e| e.home),
            Some(&b""[..])
        );
        for bad in [
            &b""[..],
            b"#root:x:0:0::/:/bin/sh",
            b"name",
            b"name:x",
            b"name:x:1",
            b"name:x:-1:0",
            b"name:x:1:4294967296",
            b"name:x:2147483648:0",
            b":x:1:1",
            b"\xff\xfe:\x00:::",
        ] {
            assert_eq!(parse_passwd_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_group_lines() {
        let entry = parse_group_line(b"audio:x:29:a,b").unwrap();
        assert_eq!((entry.name, entry.gid), (&b"audio"[..], 29));
        assert!(entry.has_member(b"a") && entry.has_member(b"b"));
        assert!(!entry.has_member(b"c") && !entry.has_member(b""));
        assert!(!parse_group_line(b"g:x:1:").unwrap().has_member(b""));
        assert_eq!(parse_group_line(b"g:x"), None);
        assert_eq!(parse_group_line(b"g:x:x1"), None);
    }

    #[test]
    fn parses_specs() {
        assert_eq!(parse_spec(b"a:b").user, b"a");
        assert_eq!(parse_spec(b"a:b").group, b"b");
        assert_eq!(parse_spec(b"a").group, b"");
        assert_eq!(parse_spec(b"a:b:c").group, b"b:c");
    }

    #[test]
    fn empty_spec_is_root_with_its_entry() {
        let id = resolve_str("").unwrap();
        assert_eq!((id.uid, id.gid, &id.home[..]), (0, 0, &b"/root"[..]));
        assert_eq!(id.groups, gids(&[0, 10]));
    }

    #[test]
    fn name_resolves_uid_gid_home_and_groups() {
        let id = resolve_str("app").unwrap();
        // The first matching entry wins.
        assert_eq!(
            (id.uid, id.gid, &id.home[..]),
            (1000, 1000, &b"/home/app"[..])
        );
        assert_eq!(id.groups, gids(&[1000, 10, 29]));
    }

    #[test]
    fn numeric_uid_uses_its_entry_or_defaults() {
        let id = resolve_str("1000").unwrap();
        assert_eq!(
            (id.uid, id.gid, &id.home[..]),
            (1000, 1000, &b"/home/app"[..])
        );
        assert_eq!(id.groups, gids(&[1000, 10, 29]));
        let id = resolve_str("4242").unwrap();
        assert_eq!((id.uid, id.gid, &id.home[..]), (4242, 0, &b"/"[..]));
        assert_eq!(id.groups, gids(&[0]));
    }

    #[test]
    fn explicit_group_replaces_gid_and_drops_supplementary_groups() {
        let id = resolve_str("1000:1000").unwrap();
        assert_eq!((id.uid, id.gid), (1000, 1000));
        assert_eq!(id.groups, gids(&[1000]));
        let id = resolve_str("app:staff").unwrap();
        assert_eq!((id.uid, id.gid), (1000, 50));
        assert_eq!(id.groups, gids(&[50]));
        let id = resolve_str("4242:777").unwrap();
        assert_eq!((id.uid, id.gid), (4242, 777));
        assert_eq!(resolve_str(":audio").unwrap().gid, 29);
    }

    #[test]
    fn unknown_names_and_bad_ids_are_errors() {
        assert_eq!(resolve_str("nobody").unwrap_err(), UserError::NoSuchUser);
        assert_eq!(resolve_str("broken").unwrap_err(), UserError::NoSuchUser);
        assert_eq!(
            resolve_str("app:nogroup").unwrap_err(),
            UserError::NoSuchGroup
        );
        assert_eq!(
            resolve_str("99999999999").unwrap_err(),
            UserError::IdOutOfRange
        );
        assert_eq!(
            resolve_str("1:4294967295").unwrap_err(),
            UserError::IdOutOfRange
        );
    }

    #[test]
    fn missing_files_allow_numeric_ids_only() {
        let mut id = Identity::with_capacity();
        let empty: &[u8] = b"";
        resolve(b"5:6", &mut { empty }, &mut { empty }, &mut id).unwrap();
        assert_eq!((id.uid, id.gid, &id.home[..]), (5, 6, &b"/"[..]));
        let err = resolve(b"root", &mut { empty }, &mut { empty }, &mut id).unwrap_err();
        assert_eq!(err, UserError::NoSuchUser);
    }

    #[test]
    fn too_many_groups_is_an_error() {
        let mut group = String::new();
        for gid in 0..=MAX_GROUPS {
            group.push_str(&format!("g{gid}:x:{}:app\n", gid + 2000));
        }
        let mut id = Identity::with_capacity();
        let err = resolve(b"app", &mut { PASSWD }, &mut group.as_bytes(), &mut id).unwrap_err();
        assert_eq!(err, UserError::TooManyGroups);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut id = Identity::with_capacity();
        let junk: &[u8] = b"\xff:\xfe:1:2:\n:::::\n::\n\x00\x00\n1:1:1:1:1:1:1:1";
        for spec in [&b"\xff"[..], b":", b"::", b"1:", b":1", b"\x00"] {
            let _ = resolve(spec, &mut { junk }, &mut { junk }, &mut id);
        }
    }

    #[test]
    fn file_lines_reads_long_files_and_skips_overlong_lines() {
        let dir = std::env::temp_dir().join(format!("supd-user-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("passwd");
        let mut text = String::new();
        text.push_str(&"x".repeat(100));
        text.push('\n');
        for i in 0..200 {
            text.push_str(&format!("u{i}:x:{i}:{i}::/home/u{i}:/bin/sh\n"));
        }
        text.push_str("last:x:7:7::/last:/bin/sh");
        std::fs::write(&path, &text).unwrap();
        let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        let cpath: &'static CStr = Box::leak(cpath.into_boxed_c_str());
        let mut buf = vec![0; 64];
        let mut lines = FileLines {
            path: cpath,
            buf: &mut buf,
        };
        let mut seen = Vec::new();
        lines
            .for_each_line(&mut |line| {
                seen.push(String::from_utf8_lossy(line).into_owned());
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(seen.len(), 201);
        assert_eq!(seen[0], "u0:x:0:0::/home/u0:/bin/sh");
        assert_eq!(seen[200], "last:x:7:7::/last:/bin/sh");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
