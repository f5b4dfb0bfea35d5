//! `file` mediator plugin: a shared directory as the rendezvous — a folder synced by
//! Syncthing, a network share, or just a directory two local instances use.
//!
//! Settings (YAML or JSON):
//! ```yaml
//! dir: /home/me/Sync/plexus     # must exist
//! address: alice                # own address; peers send to it
//! poll_interval_ms: 1000        # optional, 10..=60000
//! max_message_bytes: 1048576    # optional, at most 16 MiB
//! reclaim_after_secs: 600       # optional, 0 = never (see below)
//! ```
//!
//! One file per message, named `<to>~<from>~<unique>.plexus`. Writing is atomic: a
//! dot-prefixed `.tmp` file in the same directory, fsync, rename, fsync of the directory.
//! Receiving considers only names addressed to us that do not start with a dot or end in
//! `.tmp` (so sync tools' partial files, like Syncthing's `.syncthing.*.tmp`, are never
//! read). Anyone who can write to the folder can put anything there, so each candidate is
//! opened with `O_NOFOLLOW | O_NONBLOCK` and the opened file is checked (`fstat`): a
//! regular, non-empty file within `max_message_bytes`, then read through that same
//! descriptor. A file is claimed by an atomic rename to a dot-name before it is read, so
//! two instances on one directory never both take it.
//!
//! Nothing about one file stops the receiver: a file that cannot be opened, is not a
//! regular file, has the wrong size or cannot be claimed is left where it is and
//! reported once (until it changes); only a folder that cannot be listed is an error, of
//! the retried "unreachable" kind. `Handled` removes only the claimed file; `Rejected`
//! renames it to `<name>.rejected`; either finding the claim already gone is fine.
//! Nothing else in the directory is touched.
//!
//! The claimed name records the claim time and how often the message has been handed
//! out: `.claimed~<instance>~<unix seconds>~<deliveries>~<name>`. A message another
//! instance claimed for our address but never acknowledged (it crashed) is taken over
//! `reclaim_after_secs` after that claim, measured from the time in the name, not the
//! file's mtime (a sync tool keeps the sender's mtime, and only a file's owner may change
//! it). After three deliveries without an acknowledgement it is set aside as
//! `<name>.rejected` instead, so a message that makes receivers crash cannot loop.
//! plexus refuses replays, so a late duplicate is harmless.

use plexus_plugin_sdk::{export_mediator, MediatorPlugin, Message, Outcome, PluginError};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Suffix of message files.
const SUFFIX: &str = ".plexus";
/// Suffix added to a message set aside.
const REJECTED: &str = ".rejected";
/// Prefix of a claimed file's name (see the module docs for the rest).
const CLAIM_PREFIX: &str = ".claimed~";
/// Upper bound for `max_message_bytes`.
const MAX_LIMIT: u64 = 16 * 1024 * 1024;
/// Longest address.
const MAX_ADDRESS: usize = 64;
/// Times a message is handed out without an acknowledgement before it is set aside.
const MAX_DELIVERIES: u32 = 3;
/// Unusable files remembered at most (each costs a name and a stat).
const MAX_SKIPPED: usize = 4096;
/// A skipped file is looked at again after this long even if it did not change, in case
/// what was wrong was around it (the folder's permissions, the file's owner).
const RECHECK_AFTER: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    dir: PathBuf,
    address: String,
    #[serde(default = "default_poll")]
    poll_interval_ms: u64,
    #[serde(default = "default_max")]
    max_message_bytes: u64,
    #[serde(default = "default_reclaim")]
    reclaim_after_secs: u64,
}

fn default_poll() -> u64 {
    1000
}

fn default_reclaim() -> u64 {
    600
}

fn default_max() -> u64 {
    1024 * 1024
}

/// Whether `a` can be a channel address: 1-64 of `A-Z a-z 0-9 . _ @ + -`, no leading dot.
pub fn valid_address(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= MAX_ADDRESS
        && !a.starts_with('.')
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
}

/// A message file name split into (to, from, unique), if it is one.
#[doc(hidden)]
pub fn parse_name(name: &str) -> Option<(&str, &str, &str)> {
    if name.starts_with('.') {
        return None;
    }
    let stem = name.strip_suffix(SUFFIX)?;
    let mut parts = stem.split('~');
    let (to, from, unique) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !valid_address(to) || !valid_address(from) || unique.is_empty() {
        return None;
    }
    unique
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        .then_some((to, from, unique))
}

/// A claimed file's name taken apart.
#[derive(Debug, PartialEq, Eq)]
struct Claim<'a> {
    /// The claiming instance.
    token: &'a str,
    /// Unix seconds of the claim; `None` for the older form without it.
    since: Option<u64>,
    /// How often the message has been handed out, this claim included.
    deliveries: u32,
    /// The message's own name.
    original: &'a str,
}

/// Parses `.claimed~<token>~<secs>~<deliveries>~<name>`, or the older
/// `.claimed~<token>~<name>`. A message name has exactly three `~`-separated fields, so
/// the two forms cannot be confused.
fn parse_claim(name: &str) -> Option<Claim<'_>> {
    let (token, rest) = name.strip_prefix(CLAIM_PREFIX)?.split_once('~')?;
    let current = || {
        let (since, rest) = rest.split_once('~')?;
        let (deliveries, original) = rest.split_once('~')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(since) || !digits(deliveries) {
            return None;
        }
        parse_name(original)?;
        Some(Claim {
            token,
            since: Some(since.parse().ok()?),
            deliveries: deliveries.parse().ok()?,
            original,
        })
    };
    current().or_else(|| {
        parse_name(rest)?;
        Some(Claim {
            token,
            since: None,
            deliveries: 1,
            original: rest,
        })
    })
}

/// What identifies one version of a file: a name whose stamp changed is looked at again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Why a file was skipped; the same reason for the same name is reported only once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    NotRegular,
    Empty,
    Oversized,
    Unopenable,
    Unclaimable,
    Unreadable,
}

/// A file left alone, and until when.
struct Skipped {
    stamp: Stamp,
    why: Why,
    recheck_at: Instant,
}

/// A message for us found in the listing: a new one, or another instance's stale claim.
struct Candidate {
    /// Its current name in the folder.
    name: String,
    /// The message's own name (differs from `name` for a stale claim).
    original: String,
    from: String,
    /// Times it was handed out before.
    deliveries: u32,
}

#[cfg(test)]
type TestHook = Box<dyn FnMut(&Path, &str) + Send>;

/// The shared-directory mediator.
pub struct FileMediator {
    dir: PathBuf,
    address: String,
    poll: Duration,
    max: u64,
    /// Random per instance: names our claims so acknowledge only touches our own files.
    token: String,
    counter: u64,
    /// Age after which another instance's unacknowledged claim is taken over.
    reclaim_after: Option<Duration>,
    /// Files addressed to us that could not be used, by name (bounded).
    skipped: HashMap<String, Skipped>,
    /// Room in `skipped` (a field so a test can make it small).
    max_skipped: usize,
    /// Whether running out of room in `skipped` was reported.
    skipped_full: bool,
    /// Test seam: runs on a candidate's path just before it is opened (`"open"`) and
    /// just before it is claimed (`"claim"`), so a test can swap something else in at
    /// the worst moments.
    #[cfg(test)]
    hook: Option<TestHook>,
    /// Test seam: added to the clock, so a test can let time pass without sleeping.
    #[cfg(test)]
    advance: Duration,
}

fn random_u64() -> u64 {
    // RandomState is seeded from the OS per process and varies per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// Trouble with the folder itself (it vanished during a sync tool's rename, a network
/// share dropped, permissions being fixed): the host retries with backoff.
fn unreachable(context: &str, path: &Path, e: std::io::Error) -> PluginError {
    PluginError::Unreachable(format!("{context} {}: {e}", path.display()))
}

fn kind_name(t: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

impl FileMediator {
    fn unique(&mut self) -> String {
        self.counter += 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        // Zero-padded time first so names sort oldest first.
        format!(
            "{nanos:020}-{}-{:010}-{:016x}",
            std::process::id(),
            self.counter,
            random_u64()
        )
    }

    /// Unix seconds now (plus the test clock offset).
    fn now_secs(&self) -> u64 {
        let now = SystemTime::now();
        #[cfg(test)]
        let now = now + self.advance;
        now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
    }

    fn sync_dir(&self) {
        // Makes the rename durable; not all filesystems allow it, so failure is ignored.
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
    }

    /// Whether `name`, a file addressed to us, is a known unusable file that has not
    /// changed and is not due for another look.
    fn still_skipped(&self, name: &str, entry: &fs::DirEntry) -> bool {
        let Some(s) = self.skipped.get(name) else {
            return false;
        };
        let Ok(meta) = entry.metadata() else {
            // Gone since the listing.
            return true;
        };
        s.stamp == Stamp::of(&meta) && Instant::now() < s.recheck_at
    }

    /// Leaves `name` alone until it changes (or for a while), reporting why once.
    fn skip(&mut self, name: &str, stamp: Option<Stamp>, why: Why, detail: &str) {
        let stamp = match stamp {
            Some(s) => s,
            None => match fs::symlink_metadata(self.dir.join(name)) {
                Ok(m) => Stamp::of(&m),
                // Gone: nothing to remember.
                Err(_) => return,
            },
        };
        let known = self.skipped.get(name).map(|s| s.why);
        if known.is_none() && self.skipped.len() >= self.max_skipped {
            if !self.skipped_full {
                self.skipped_full = true;
                log::warn!(
                    "more than {} unusable files addressed to {} in {}; \
                     further ones are skipped without being reported",
                    self.max_skipped,
                    self.address,
                    self.dir.display()
                );
            }
            log::debug!("skipping {name}: {detail}");
            return;
        }
        if known != Some(why) {
            if why == Why::Empty {
                // Often a writer that is not done yet.
                log::info!("skipping {name} for now: {detail}");
            } else {
                log::warn!("skipping {name}: {detail}; it is left in place");
            }
        }
        self.skipped.insert(
            name.to_string(),
            Skipped {
                stamp,
                why,
                recheck_at: Instant::now() + RECHECK_AFTER,
            },
        );
    }

    /// Messages for us, oldest first: new ones, and other instances' claims that are
    /// older than `reclaim_after`. Only a folder that cannot be listed is an error.
    fn candidates(&mut self) -> Result<Vec<Candidate>, PluginError> {
        let cannot_list = |e| unreachable("cannot list", &self.dir, e);
        let entries = fs::read_dir(&self.dir).map_err(cannot_list)?;
        let now = self.now_secs();
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        for entry in entries {
            let entry = entry.map_err(|e| unreachable("cannot list", &self.dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let (original, deliveries) = if name.starts_with(CLAIM_PREFIX) {
                let Some(c) = parse_claim(&name) else {
                    continue;
                };
                if !self.stale(&c, &entry, now) {
                    continue;
                }
                (c.original.to_string(), c.deliveries)
            } else {
                (name.clone(), 0)
            };
            let Some((to, from, unique)) = parse_name(&original) else {
                continue;
            };
            if to != self.address {
                continue;
            }
            seen.insert(name.clone());
            if self.still_skipped(&name, &entry) {
                continue;
            }
            // A cheap first look (the opened file is checked again): a FIFO or a device
            // is never even opened.
            match entry.file_type() {
                Ok(t) if t.is_file() => {}
                Ok(t) => {
                    let why = format!("it is {}, not a regular file", kind_name(t));
                    self.skip(&name, None, Why::NotRegular, &why);
                    continue;
                }
                Err(_) => continue,
            }
            found.push((
                unique.to_string(),
                Candidate {
                    from: from.to_string(),
                    original,
                    name,
                    deliveries,
                },
            ));
        }
        // Forget files that are gone, so memory follows the folder.
        self.skipped.retain(|name, _| seen.contains(name));
        if self.skipped.len() < self.max_skipped {
            self.skipped_full = false;
        }
        found.sort_by(|a, b| (&a.0, &a.1.name).cmp(&(&b.0, &b.1.name)));
        Ok(found.into_iter().map(|(_, c)| c).collect())
    }

    /// Whether claim `c` is another instance's and older than `reclaim_after`.
    fn stale(&self, c: &Claim<'_>, entry: &fs::DirEntry, now: u64) -> bool {
        let Some(after) = self.reclaim_after else {
            return false;
        };
        if c.token == self.token {
            return false;
        }
        let since = match c.since {
            Some(s) => s,
            // The older form has no claim time; its claimer refreshed the mtime.
            None => match entry.metadata() {
                Ok(m) => u64::try_from(m.mtime()).unwrap_or(0),
                Err(_) => return false,
            },
        };
        now.saturating_sub(since) >= after.as_secs()
    }

    /// Renames `from` to `<original>.rejected`, reporting why.
    fn set_aside(&mut self, name: &str, original: &str, why: &str) {
        let kept = format!("{original}{REJECTED}");
        match fs::rename(self.dir.join(name), self.dir.join(&kept)) {
            Ok(()) => {
                log::warn!("set aside {original} as {kept}: {why}");
                self.sync_dir();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let detail = format!("{why}, and it cannot be set aside ({e})");
                self.skip(name, None, Why::Unclaimable, &detail);
            }
        }
    }

    /// Claims and reads one candidate; `None` when it is not usable now (skipped,
    /// reported, and left or set aside).
    fn take(&mut self, c: &Candidate) -> Option<Message> {
        let name = c.name.as_str();
        if c.deliveries >= MAX_DELIVERIES {
            let why = format!(
                "handed out {} times and never acknowledged (does it stop the receiver?)",
                c.deliveries
            );
            self.set_aside(name, &c.original, &why);
            return None;
        }
        let src = self.dir.join(name);
        #[cfg(test)]
        if let Some(hook) = self.hook.as_mut() {
            hook(&src, "open");
        }
        // No check-then-open: open without following a link and without waiting for a
        // FIFO's writer, then judge what was opened.
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&src);
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                log::debug!("{name} went away before it was claimed");
                return None;
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                self.skip(name, None, Why::NotRegular, "it is a symbolic link");
                return None;
            }
            Err(e) => {
                self.skip(name, None, Why::Unopenable, &format!("cannot open it: {e}"));
                return None;
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.skip(name, None, Why::Unopenable, &format!("cannot stat it: {e}"));
                return None;
            }
        };
        let stamp = Some(Stamp::of(&meta));
        if !meta.file_type().is_file() {
            let why = format!("it is {}, not a regular file", kind_name(meta.file_type()));
            self.skip(name, stamp, Why::NotRegular, &why);
            return None;
        }
        if meta.len() == 0 {
            self.skip(name, stamp, Why::Empty, "it is empty");
            return None;
        }
        if meta.len() > self.max {
            let why = format!(
                "{} bytes is over max_message_bytes {}",
                meta.len(),
                self.max
            );
            self.skip(name, stamp, Why::Oversized, &why);
            return None;
        }
        #[cfg(test)]
        if let Some(hook) = self.hook.as_mut() {
            hook(&src, "claim");
        }
        let deliveries = c.deliveries + 1;
        let claimed = format!(
            "{CLAIM_PREFIX}{}~{}~{deliveries}~{}",
            self.token,
            self.now_secs(),
            c.original
        );
        let dst = self.dir.join(&claimed);
        match fs::rename(&src, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                log::debug!("{name} was taken by someone else");
                return None;
            }
            Err(e) => {
                // A sticky folder and a file of another user (EPERM), a bind mount
                // (EXDEV), a read-only share: this file cannot be ours for now.
                let why = format!("cannot claim it (rename: {e})");
                self.skip(name, stamp, Why::Unclaimable, &why);
                return None;
            }
        }
        // The name now claimed must still be the file opened above.
        let same = fs::symlink_metadata(&dst)
            .map(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
            .unwrap_or(false);
        if !same {
            self.set_aside(&claimed, &c.original, "it was replaced while being claimed");
            return None;
        }
        let mut sealed = Vec::with_capacity(meta.len() as usize);
        let read = (&file).take(self.max + 1).read_to_end(&mut sealed);
        if read.is_err() || sealed.len() as u64 != meta.len() {
            // Being written, or unreadable after all: back under its message name.
            let back = self.dir.join(&c.original);
            if let Err(e) = fs::rename(&dst, &back) {
                log::warn!("cannot put {claimed} back as {}: {e}", c.original);
                return None;
            }
            match read {
                Err(e) => {
                    let why = format!("cannot read it: {e}");
                    self.skip(&c.original, None, Why::Unreadable, &why);
                }
                Ok(_) => log::debug!(
                    "{} changed while being read; looked at again later",
                    c.original
                ),
            }
            return None;
        }
        if deliveries > 1 {
            log::warn!(
                "took over {}: claimed by another instance and never acknowledged \
                 (delivery {deliveries} of at most {MAX_DELIVERIES})",
                c.original
            );
        }
        self.skipped.remove(name);
        log::debug!("claimed {} ({} bytes)", c.original, sealed.len());
        Some(Message {
            id: claimed,
            from: c.from.clone(),
            sealed,
        })
    }

    /// Claims and reads the oldest usable message for us, if any.
    fn try_take(&mut self) -> Result<Option<Message>, PluginError> {
        for c in self.candidates()? {
            if let Some(m) = self.take(&c) {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }
}

impl MediatorPlugin for FileMediator {
    const NAME: &'static str = "file";

    fn create(settings: &str) -> Result<Self, PluginError> {
        let s: Settings = serde_yaml::from_str(settings)
            .map_err(|e| PluginError::Config(format!("file mediator settings: {e}")))?;
        if !valid_address(&s.address) {
            return Err(PluginError::Config(format!(
                "address {:?} must be 1-{MAX_ADDRESS} of A-Z a-z 0-9 . _ @ + - and not start with a dot",
                s.address
            )));
        }
        if !s.dir.is_dir() {
            return Err(PluginError::Config(format!(
                "dir {} is not an existing directory",
                s.dir.display()
            )));
        }
        if !(10..=60_000).contains(&s.poll_interval_ms) {
            return Err(PluginError::Config(
                "poll_interval_ms must be 10..=60000".into(),
            ));
        }
        if s.max_message_bytes == 0 || s.max_message_bytes > MAX_LIMIT {
            return Err(PluginError::Config(format!(
                "max_message_bytes must be 1..={MAX_LIMIT}"
            )));
        }
        log::info!("file mediator on {} as {}", s.dir.display(), s.address);
        Ok(FileMediator {
            dir: s.dir,
            address: s.address,
            poll: Duration::from_millis(s.poll_interval_ms),
            max: s.max_message_bytes,
            token: format!("{:016x}", random_u64()),
            counter: 0,
            skipped: HashMap::new(),
            max_skipped: MAX_SKIPPED,
            skipped_full: false,
            reclaim_after: (s.reclaim_after_secs > 0)
                .then(|| Duration::from_secs(s.reclaim_after_secs)),
            #[cfg(test)]
            hook: None,
            #[cfg(test)]
            advance: Duration::ZERO,
        })
    }

    fn send(&mut self, to: &str, sealed: &[u8]) -> Result<(), PluginError> {
        if !valid_address(to) {
            return Err(PluginError::InvalidArgument(format!(
                "recipient {to:?} is not a valid file-mediator address"
            )));
        }
        if sealed.is_empty() || sealed.len() as u64 > self.max {
            return Err(PluginError::InvalidArgument(format!(
                "message of {} bytes; must be 1..={} (max_message_bytes)",
                sealed.len(),
                self.max
            )));
        }
        let unique = self.unique();
        let tmp = self.dir.join(format!(".plexus-{unique}.tmp"));
        let dst = self
            .dir
            .join(format!("{to}~{}~{unique}{SUFFIX}", self.address));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(sealed)?;
            f.sync_all()?;
            fs::rename(&tmp, &dst)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            // The folder was fine at start: whatever went wrong (gone for a moment, full,
            // a dropped share) may pass, so the host may retry.
            return Err(unreachable("cannot write", &dst, e));
        }
        self.sync_dir();
        log::debug!("wrote {} ({} bytes)", dst.display(), sealed.len());
        Ok(())
    }

    fn receive(&mut self, timeout: Duration) -> Result<Option<Message>, PluginError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.try_take()? {
                return Ok(Some(m));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(self.poll.min(deadline - now));
        }
    }

    fn acknowledge(&mut self, id: &str, outcome: Outcome) -> Result<(), PluginError> {
        let claim = parse_claim(id)
            .filter(|c| c.token == self.token && c.since.is_some())
            .ok_or_else(|| {
                PluginError::InvalidArgument(format!(
                    "{id:?} is not a message this instance received"
                ))
            })?;
        let path = self.dir.join(id);
        let (done, what) = match outcome {
            Outcome::Handled => (fs::remove_file(&path), "remove"),
            Outcome::Rejected => {
                let kept = format!("{}{REJECTED}", claim.original);
                let done = fs::rename(&path, self.dir.join(&kept));
                if done.is_ok() {
                    log::warn!("rejected message kept as {kept}");
                }
                (done, "set aside")
            }
        };
        match done {
            Ok(()) => self.sync_dir(),
            // Someone removed it meanwhile: what we wanted, or near enough.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                log::info!("{} was already gone when acknowledged", claim.original)
            }
            // Only this file is affected, and the host carries on after an unreachable
            // acknowledge; the claim stays and is handled by the delivery limit.
            Err(e) => return Err(unreachable(&format!("cannot {what}"), &path, e)),
        }
        Ok(())
    }
}

export_mediator!(FileMediator);

#[cfg(test)]
mod tests;
