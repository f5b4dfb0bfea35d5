//! Replay protection: which (kind, sender, session) were already accepted.
//!
//! The list lives in a small state file so that it survives restarts. Entries older than
//! the freshness window are pruned (such a message would be refused as stale anyway), the
//! list is bounded, and the file is rewritten atomically (temporary file, fsync, rename)
//! with mode 0600 under an exclusive `flock`, so two plexus processes sharing it do not
//! lose each other's entries. A corrupt file is an error, never silently reset: a reset
//! would reopen the door to replays.
//!
//! ```text
//! PLEXUS-REPLAY 1
//! <unix-time> <invite|accept> <sender-id> <session-hex>
//! ```

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::message::{Kind, SessionId};
use crate::identity::PeerId;

const HEADER: &str = "PLEXUS-REPLAY 1";
/// Most remembered messages; far above what one pair of peers sends in a window.
pub const MAX_ENTRIES: usize = 4096;
/// Largest state file read (MAX_ENTRIES lines of at most ~400 bytes).
const MAX_FILE: u64 = 2 << 20;

/// Errors of the replay guard.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReplayError {
    /// This (kind, sender, session) was already accepted.
    Replayed {
        /// Invite or accept.
        kind: Kind,
        /// Who sent it.
        sender: PeerId,
        /// Its session.
        session: SessionId,
    },
    /// The window holds [`MAX_ENTRIES`] messages already; refusing rather than forgetting.
    Full,
    /// The state file is not what plexus writes.
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// The first bad line.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The state file could not be read, locked or written.
    Io {
        /// The state file.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Replayed { kind, sender, session } => write!(
                f,
                "replayed message: {kind} {session} from {sender} was already accepted; someone resent an old message"
            ),
            ReplayError::Full => write!(
                f,
                "replay state holds {MAX_ENTRIES} messages within the freshness window; refusing more until they age out"
            ),
            ReplayError::Corrupt { path, line, reason } => write!(
                f,
                "replay state file '{}' is corrupt at line {line}: {reason}; remove it only after the freshness window has passed since the last message",
                path.display()
            ),
            ReplayError::Io { path, source } => {
                write!(f, "replay state file '{}': {source}", path.display())
            }
        }
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReplayError::Io { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    time: u64,
    kind: Kind,
    sender: PeerId,
    session: SessionId,
}

/// Remembers accepted messages, in memory or in a state file.
#[derive(Debug)]
pub struct ReplayGuard {
    path: Option<PathBuf>,
    entries: Vec<Entry>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io {
        path: path.into(),
        source,
    }
}

impl ReplayGuard {
    /// A guard that forgets everything when dropped (tests, one-shot tools).
    pub fn in_memory() -> ReplayGuard {
        ReplayGuard {
            path: None,
            entries: Vec::new(),
        }
    }

    /// A guard backed by `path` (created on first use; parent directories too, 0700).
    /// The file is read now to report corruption early, and again under the lock on
    /// every check.
    pub fn open(path: &Path) -> Result<ReplayGuard, ReplayError> {
        let entries = read_entries(path)?;
        Ok(ReplayGuard {
            path: Some(path.into()),
            entries,
        })
    }

    /// Number of remembered messages (after the last prune).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Refuse a message already seen; otherwise remember it (persisting before returning,
    /// so an accepted message is never forgotten by a crash). `max_age` is the freshness
    /// window: entries older than it are dropped.
    pub fn check_and_record(
        &mut self,
        kind: Kind,
        sender: &PeerId,
        session: SessionId,
        time: u64,
        now: u64,
        max_age: u64,
    ) -> Result<(), ReplayError> {
        let _lock = match &self.path {
            Some(p) => {
                let lock = lock(p)?;
                self.entries = read_entries(p)?;
                Some(lock)
            }
            None => None,
        };
        self.entries
            .retain(|e| e.time.saturating_add(max_age) >= now);
        if self
            .entries
            .iter()
            .any(|e| e.kind == kind && e.session == session && &e.sender == sender)
        {
            return Err(ReplayError::Replayed {
                kind,
                sender: sender.clone(),
                session,
            });
        }
        if self.entries.len() >= MAX_ENTRIES {
            return Err(ReplayError::Full);
        }
        self.entries.push(Entry {
            time,
            kind,
            sender: sender.clone(),
            session,
        });
        if let Some(p) = &self.path {
            if let Err(e) = write_entries(p, &self.entries) {
                self.entries.pop();
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Take an exclusive lock on `<path>.lock` (released when the file is closed).
fn lock(path: &Path) -> Result<File, ReplayError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(path))?;
    }
    let lock_path = sibling(path, ".lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    // SAFETY: flock on a file descriptor we own; blocking until the other holder is done
    // (it holds the lock only for one read-check-write).
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(ReplayError::Io {
            path: lock_path,
            source: io::Error::last_os_error(),
        });
    }
    Ok(f)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn read_entries(path: &Path) -> Result<Vec<Entry>, ReplayError> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ReplayError::Io {
                path: path.into(),
                source: e,
            })
        }
    };
    let mut buf = Vec::new();
    (&mut f)
        .take(MAX_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(io_err(path))?;
    let corrupt = |line: usize, reason: &str| ReplayError::Corrupt {
        path: path.into(),
        line,
        reason: reason.into(),
    };
    if buf.len() as u64 > MAX_FILE {
        return Err(corrupt(0, "larger than 2 MiB"));
    }
    let text = std::str::from_utf8(&buf).map_err(|_| corrupt(0, "not UTF-8 text"))?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(corrupt(1, "first line is not 'PLEXUS-REPLAY 1'"));
    }
    let mut entries = Vec::new();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() != 4 {
            return Err(corrupt(n, "expected 'time kind sender session'"));
        }
        let time = f[0].parse().map_err(|_| corrupt(n, "bad time"))?;
        let kind = match f[1] {
            "invite" => Kind::Invite,
            "accept" => Kind::Accept,
            "decline" => Kind::Decline,
            _ => return Err(corrupt(n, "bad kind")),
        };
        let sender = PeerId::parse(f[2]).map_err(|_| corrupt(n, "bad sender id"))?;
        let session = SessionId::from_hex(f[3]).ok_or_else(|| corrupt(n, "bad session id"))?;
        if entries.len() >= MAX_ENTRIES {
            return Err(corrupt(n, "too many entries"));
        }
        entries.push(Entry {
            time,
            kind,
            sender,
            session,
        });
    }
    Ok(entries)
}

fn write_entries(path: &Path, entries: &[Entry]) -> Result<(), ReplayError> {
    let mut text = String::with_capacity(64 + entries.len() * 96);
    text.push_str(HEADER);
    text.push('\n');
    for e in entries {
        text.push_str(&format!(
            "{} {} {} {}\n",
            e.time, e.kind, e.sender, e.session
        ));
    }
    let tmp = sibling(path, ".tmp");
    // We hold the lock, so a leftover temporary file is from a crashed run: replace it.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    result.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        ReplayError::Io {
            path: path.into(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(tag: &str) -> TempDir {
        TempDir::new(&format!("replay-{tag}"))
    }

    fn alice() -> PeerId {
        PeerId::parse("alice@lab.example/home").unwrap()
    }

    #[test]
    fn replays_are_refused_across_restarts_and_pruned_after_the_window() {
        let dir = tmpdir("restart");
        let path = dir.join("state/replay");
        let s1 = SessionId([1; 16]);
        let s2 = SessionId([2; 16]);
        let mut g = ReplayGuard::open(&path).unwrap();
        g.check_and_record(Kind::Invite, &alice(), s1, 1000, 1000, 600)
            .unwrap();
        // Same session, other kind: a different message.
        g.check_and_record(Kind::Accept, &alice(), s1, 1000, 1000, 600)
            .unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        drop(g);

        let mut g = ReplayGuard::open(&path).unwrap();
        assert_eq!(g.len(), 2);
        let e = g
            .check_and_record(Kind::Invite, &alice(), s1, 1000, 1100, 600)
            .unwrap_err();
        assert!(
            matches!(e, ReplayError::Replayed { kind: Kind::Invite, session, .. } if session == s1),
            "{e}"
        );
        // After the window the old entries are pruned when the next message comes.
        g.check_and_record(Kind::Invite, &alice(), s2, 1700, 1700, 600)
            .unwrap();
        assert_eq!(ReplayGuard::open(&path).unwrap().len(), 1);
        assert!(!sibling(&path, ".tmp").exists());
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_reset() {
        let dir = tmpdir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("replay");
        fs::write(
            &path,
            "PLEXUS-REPLAY 1\n1000 invite alice@lab.example/home zz\n",
        )
        .unwrap();
        let e = ReplayGuard::open(&path).unwrap_err();
        assert!(matches!(e, ReplayError::Corrupt { line: 2, .. }), "{e}");
        fs::write(&path, "something else\n").unwrap();
        assert!(matches!(
            ReplayGuard::open(&path),
            Err(ReplayError::Corrupt { line: 1, .. })
        ));
    }

    #[test]
    fn the_guard_is_bounded() {
        let mut g = ReplayGuard::in_memory();
        for i in 0..MAX_ENTRIES {
            let mut s = [0u8; 16];
            s[..8].copy_from_slice(&(i as u64).to_be_bytes());
            g.check_and_record(Kind::Invite, &alice(), SessionId(s), 50, 50, 600)
                .unwrap();
        }
        let e = g.check_and_record(Kind::Invite, &alice(), SessionId([9; 16]), 50, 50, 600);
        assert!(matches!(e, Err(ReplayError::Full)));
        // Once the window has passed, there is room again.
        g.check_and_record(Kind::Invite, &alice(), SessionId([9; 16]), 700, 700, 600)
            .unwrap();
        assert_eq!(g.len(), 1);
    }
}
