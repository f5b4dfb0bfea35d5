//! The UIDs the e-mail mediator has set aside, kept across restarts.
//!
//! Anyone who can send mail can fill the watched folder with plexus-looking mail from the
//! peer's address. Each such mail costs a header fetch, a body fetch and an attempt to open
//! it; remembering the UIDs that were refused (by the core or by the mediator itself) makes
//! a restart skip them instead of paying again. The set belongs to one UIDVALIDITY of the
//! folder: when the server reports another, every UID may name a different mail and the
//! set is forgotten.
//!
//! The file is small text, written atomically (temporary file + rename, mode 0600):
//!
//! ```text
//! plexus-email-refused 1
//! uidvalidity 1795975902
//! uids 3
//! 17
//! 42
//! 99
//! ```
//!
//! Its content is read back as outside bytes: [`decode_refused_state`] is strict and
//! bounded, and a file it refuses is logged and treated as empty.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use log::{info, warn};

/// At most this many refused UIDs are kept (the newest, i.e. highest, ones).
pub const MAX_REFUSED: usize = 10_000;

const MAGIC: &str = "plexus-email-refused 1";

/// The longest file [`decode_refused_state`] accepts: the header lines plus
/// [`MAX_REFUSED`] UIDs of at most 10 digits and a newline each.
pub const MAX_STATE_FILE: usize = 128 + MAX_REFUSED * 11;

/// The refused UIDs of one UIDVALIDITY of the watched folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusedState {
    /// The folder's UIDVALIDITY the UIDs belong to.
    pub uid_validity: u32,
    /// Refused UIDs, at most [`MAX_REFUSED`].
    pub uids: BTreeSet<u32>,
}

/// Why a refused-UID state file was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateError {
    /// Longer than [`MAX_STATE_FILE`] bytes.
    TooLarge(usize),
    /// Line `line` (1-based) is not what the format has there.
    BadLine {
        /// The 1-based line number.
        line: usize,
        /// What was expected.
        expected: &'static str,
    },
    /// The file ends before the announced number of UIDs, or without its last newline.
    Truncated,
    /// More lines follow the announced UIDs.
    TrailingData,
    /// More than [`MAX_REFUSED`] UIDs announced.
    TooMany(u64),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::TooLarge(n) => {
                write!(f, "{n} bytes, over the limit of {MAX_STATE_FILE}")
            }
            StateError::BadLine { line, expected } => {
                write!(f, "line {line} is not {expected}")
            }
            StateError::Truncated => write!(f, "truncated"),
            StateError::TrailingData => write!(f, "data after the announced UIDs"),
            StateError::TooMany(n) => write!(f, "{n} UIDs, over the limit of {MAX_REFUSED}"),
        }
    }
}

impl std::error::Error for StateError {}

/// A canonical decimal u32: digits only, no sign, no leading zero (so encoding what was
/// decoded gives the same bytes back).
fn canonical_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if s.len() > 1 && s[0] == b'0' {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Decode a refused-UID state file (see the module documentation for the format).
/// Strict: UIDs are non-zero and strictly ascending, the count matches, the file ends
/// with a newline and nothing follows; at most [`MAX_STATE_FILE`] bytes.
pub fn decode_refused_state(bytes: &[u8]) -> Result<RefusedState, StateError> {
    if bytes.len() > MAX_STATE_FILE {
        return Err(StateError::TooLarge(bytes.len()));
    }
    let Some(body) = bytes.strip_suffix(b"\n") else {
        return Err(StateError::Truncated);
    };
    let mut lines = body.split(|&b| b == b'\n');
    let mut line = |n: usize, expected: &'static str| {
        lines.next().ok_or(StateError::Truncated).and_then(|l| {
            if l.is_empty() {
                Err(StateError::BadLine { line: n, expected })
            } else {
                Ok(l)
            }
        })
    };
    if line(1, "the format line")? != MAGIC.as_bytes() {
        return Err(StateError::BadLine {
            line: 1,
            expected: "the format line",
        });
    }
    let uid_validity = line(2, "uidvalidity N")?
        .strip_prefix(b"uidvalidity ")
        .and_then(canonical_u32)
        .ok_or(StateError::BadLine {
            line: 2,
            expected: "uidvalidity N",
        })?;
    let count = line(3, "uids N")?
        .strip_prefix(b"uids ")
        .and_then(canonical_u32)
        .ok_or(StateError::BadLine {
            line: 3,
            expected: "uids N",
        })?;
    if count as usize > MAX_REFUSED {
        return Err(StateError::TooMany(count.into()));
    }
    let mut uids = BTreeSet::new();
    let mut last = 0u32;
    for i in 0..count as usize {
        let n = i + 4;
        let uid = line(n, "a UID above the previous one")?;
        match canonical_u32(uid) {
            Some(u) if u > last => {
                uids.insert(u);
                last = u;
            }
            _ => {
                return Err(StateError::BadLine {
                    line: n,
                    expected: "a UID above the previous one",
                })
            }
        }
    }
    if lines.next().is_some() {
        return Err(StateError::TrailingData);
    }
    Ok(RefusedState { uid_validity, uids })
}

/// Encode `s` in the format [`decode_refused_state`] reads (the newest [`MAX_REFUSED`]
/// UIDs if there are more).
pub fn encode_refused_state(s: &RefusedState) -> Vec<u8> {
    let skip = s.uids.len().saturating_sub(MAX_REFUSED);
    let kept = s.uids.len() - skip;
    let mut out = format!("{MAGIC}\nuidvalidity {}\nuids {kept}\n", s.uid_validity);
    for u in s.uids.iter().skip(skip) {
        out.push_str(&u.to_string());
        out.push('\n');
    }
    out.into_bytes()
}

/// The mediator's refused set, optionally backed by a state file.
#[derive(Debug)]
pub(crate) struct Refused {
    state: RefusedState,
    path: Option<PathBuf>,
    /// A failed write is reported once, not for every UID.
    write_failed: bool,
}

impl Refused {
    /// Load the set from `path` (missing: empty; unreadable or corrupt: logged, empty).
    /// Creates the file's directory (0700) if needed, so an unusable location is a
    /// settings error at start rather than a surprise later.
    pub(crate) fn load(path: Option<PathBuf>) -> Result<Refused, String> {
        let mut state = RefusedState::default();
        if let Some(p) = &path {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                create_private_dir(dir).map_err(|e| {
                    format!(
                        "cannot create the directory {} of refused_state: {e}",
                        dir.display()
                    )
                })?;
            }
            match read_bounded(p) {
                Ok(None) => {}
                Ok(Some(bytes)) => match decode_refused_state(&bytes) {
                    Ok(s) => {
                        info!(
                            "email: {} refused UIDs remembered from {}",
                            s.uids.len(),
                            p.display()
                        );
                        state = s;
                    }
                    Err(e) => warn!(
                        "email: refused-UID state {} is not usable ({e}); starting with an empty set",
                        p.display()
                    ),
                },
                Err(e) => warn!(
                    "email: cannot read refused-UID state {} ({e}); starting with an empty set",
                    p.display()
                ),
            }
        }
        Ok(Refused {
            state,
            path,
            write_failed: false,
        })
    }

    pub(crate) fn contains(&self, uid_validity: u32, uid: u32) -> bool {
        self.state.uid_validity == uid_validity && self.state.uids.contains(&uid)
    }

    /// The folder was (re)selected with `uid_validity`: a different one voids the set.
    pub(crate) fn observe(&mut self, uid_validity: u32) {
        if self.state.uid_validity != uid_validity {
            if !self.state.uids.is_empty() {
                info!(
                    "email: folder UIDVALIDITY changed ({} -> {uid_validity}); forgetting {} refused UIDs",
                    self.state.uid_validity,
                    self.state.uids.len()
                );
            }
            self.state = RefusedState {
                uid_validity,
                uids: BTreeSet::new(),
            };
            self.save();
        }
    }

    /// Remember `uid` (of `uid_validity`) as refused and write the file. A UID of
    /// another UIDVALIDITY than the last observed one names no current mail: ignored.
    pub(crate) fn insert(&mut self, uid_validity: u32, uid: u32) {
        if uid_validity != self.state.uid_validity {
            return;
        }
        if self.state.uids.insert(uid) {
            while self.state.uids.len() > MAX_REFUSED {
                self.state.uids.pop_first();
            }
            self.save();
        }
    }

    fn save(&mut self) {
        let Some(p) = &self.path else {
            return;
        };
        match write_atomic(p, &encode_refused_state(&self.state)) {
            Ok(()) => self.write_failed = false,
            Err(e) => {
                if !self.write_failed {
                    warn!(
                        "email: cannot write refused-UID state {} ({e}); refused UIDs are kept in memory only",
                        p.display()
                    );
                }
                self.write_failed = true;
            }
        }
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Read at most [`MAX_STATE_FILE`] + 1 bytes of a regular file; `None` when it is missing.
/// No symlink is followed and a FIFO swapped in does not block the open.
fn read_bounded(p: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let f = match o.open(p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut buf = Vec::new();
    f.take(MAX_STATE_FILE as u64 + 1).read_to_end(&mut buf)?;
    Ok(Some(buf))
}

/// Replace `p` with `bytes` so a reader (or a crash) sees the old or the new file, never
/// half of one.
fn write_atomic(p: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = p
        .file_name()
        .ok_or_else(|| std::io::Error::other("refused_state has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = p.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let r = o.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        drop(f);
        std::fs::rename(&tmp, p)
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;

    fn state(uv: u32, uids: &[u32]) -> RefusedState {
        RefusedState {
            uid_validity: uv,
            uids: uids.iter().copied().collect(),
        }
    }

    fn scratch(name: &str) -> TempDir {
        TempDir::new(&format!("refused-{name}"))
    }

    #[test]
    fn round_trip() {
        for s in [
            state(0, &[]),
            state(1, &[1]),
            state(u32::MAX, &[1, 2, 99, 4_000_000_000, u32::MAX]),
        ] {
            let bytes = encode_refused_state(&s);
            assert_eq!(decode_refused_state(&bytes), Ok(s.clone()));
            assert_eq!(
                encode_refused_state(&decode_refused_state(&bytes).unwrap()),
                bytes
            );
        }
        let full = RefusedState {
            uid_validity: 7,
            uids: (1..=MAX_REFUSED as u32)
                .map(|u| u + 4_000_000_000)
                .collect(),
        };
        let bytes = encode_refused_state(&full);
        assert!(bytes.len() <= MAX_STATE_FILE, "{} bytes", bytes.len());
        assert_eq!(decode_refused_state(&bytes), Ok(full));
    }

    #[test]
    fn encoding_keeps_the_newest() {
        let s = RefusedState {
            uid_validity: 3,
            uids: (1..=MAX_REFUSED as u32 + 5).collect(),
        };
        let d = decode_refused_state(&encode_refused_state(&s)).unwrap();
        assert_eq!(d.uids.len(), MAX_REFUSED);
        assert_eq!(d.uids.first(), Some(&6));
        assert_eq!(d.uids.last(), Some(&(MAX_REFUSED as u32 + 5)));
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = encode_refused_state(&state(42, &[5, 17, 123_456]));
        for cut in 0..bytes.len() {
            assert!(
                decode_refused_state(&bytes[..cut]).is_err(),
                "accepted a file cut at {cut}: {:?}",
                String::from_utf8_lossy(&bytes[..cut])
            );
        }
    }

    #[test]
    fn corrupt_files_are_refused() {
        let bad: &[&[u8]] = &[
            b"",
            b"\n",
            b"plexus-email-refused 2\nuidvalidity 1\nuids 0\n",
            b"plexus-email-refused 1\nuidvalidity +1\nuids 0\n",
            b"plexus-email-refused 1\nuidvalidity 01\nuids 0\n",
            b"plexus-email-refused 1\nuidvalidity 4294967296\nuids 0\n",
            b"plexus-email-refused 1\nuidvalidity 1\nuids 1\n0\n",
            b"plexus-email-refused 1\nuidvalidity 1\nuids 2\n5\n5\n",
            b"plexus-email-refused 1\nuidvalidity 1\nuids 2\n6\n5\n",
            b"plexus-email-refused 1\nuidvalidity 1\nuids 1\n5\n6\n",
            b"plexus-email-refused 1\nuidvalidity 1\nuids 1\n5\n\n",
            b"plexus-email-refused 1\nuidvalidity 1\nuids 1\n 5\n",
            b"plexus-email-refused 1\nuidvalidity 1\nuids 1\n5\r\n",
            b"plexus-email-refused 1\r\nuidvalidity 1\nuids 0\n",
            b"plexus-email-refused 1\nuidvalidity 1\nuids 10001\n",
            b"plexus-email-refused 1\nuidvalidity 1\nuids 99999999999\n",
            b"plexus-email-refused 1\nuidvalidity 1\nuids 1\n\xff\n",
            b"\x00\x01\x02",
        ];
        for b in bad {
            assert!(
                decode_refused_state(b).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn huge_files_are_refused_before_parsing() {
        let mut big = encode_refused_state(&state(1, &[1]));
        big.resize(MAX_STATE_FILE + 1, b'\n');
        assert_eq!(
            decode_refused_state(&big),
            Err(StateError::TooLarge(MAX_STATE_FILE + 1))
        );
    }

    #[test]
    fn bytes_flipped_anywhere_never_panic() {
        let bytes = encode_refused_state(&state(77, &[3, 9, 1000, 65_536]));
        for i in 0..bytes.len() {
            for v in [0u8, b'0', b'9', b'\n', b' ', 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                if let Ok(s) = decode_refused_state(&b) {
                    assert_eq!(encode_refused_state(&s), b, "non-canonical accepted");
                }
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn file_survives_a_restart_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("restart");
        let p = dir.join("state").join("refused");
        let mut r = Refused::load(Some(p.clone())).unwrap();
        r.observe(5);
        r.insert(5, 10);
        r.insert(4, 12);
        r.insert(5, 11);
        assert_eq!(
            std::fs::metadata(p.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut again = Refused::load(Some(p.clone())).unwrap();
        assert!(again.contains(5, 10) && again.contains(5, 11));
        assert!(
            !again.contains(5, 12) && !again.contains(4, 12),
            "stale UIDVALIDITY ignored"
        );
        assert!(
            !again.contains(6, 10),
            "another UIDVALIDITY is another folder"
        );
        // A new UIDVALIDITY forgets the set, also on disk.
        again.observe(6);
        assert!(!again.contains(5, 10));
        let third = Refused::load(Some(p.clone())).unwrap();
        assert!(!third.contains(5, 10));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("refused")]);
    }

    #[cfg(unix)]
    #[test]
    fn corrupt_or_odd_files_start_empty() {
        let dir = scratch("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("refused");
        std::fs::write(&p, b"plexus-email-refused 1\nuidvalidity 1\nuids 3\n1\n2\n").unwrap();
        let r = Refused::load(Some(p.clone())).unwrap();
        assert!(!r.contains(1, 1));
        // A FIFO in its place neither blocks nor is read.
        std::fs::remove_file(&p).unwrap();
        let c = std::ffi::CString::new(p.as_os_str().to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let r = Refused::load(Some(p.clone())).unwrap();
        assert!(!r.contains(1, 1));
        // A huge file is not read past the limit.
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, vec![b'1'; MAX_STATE_FILE * 3]).unwrap();
        let r = Refused::load(Some(p)).unwrap();
        assert!(r.state.uids.is_empty());
    }
}
