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
//! Receiving considers only regular, non-empty, not oversized files addressed to us
//! whose name does not start with a dot or end in `.tmp` (so sync tools' partial files,
//! like Syncthing's `.syncthing.*.tmp`, are never read). A file is claimed by an atomic
//! rename to a dot-name before it is read, so two instances on one directory never both
//! take it. `Handled` removes only that claimed file; `Rejected` renames it to
//! `<name>.rejected`. Nothing else in the directory is touched. A message another
//! instance claimed for our address but never acknowledged (it crashed) is renamed back
//! after `reclaim_after_secs` and taken again; plexus refuses replays, so a late
//! duplicate is harmless.

use plexus_plugin_sdk::{export_mediator, MediatorPlugin, Message, Outcome, PluginError};
use serde::Deserialize;
use std::collections::HashSet;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Suffix of message files.
const SUFFIX: &str = ".plexus";
/// Prefix of a claimed file's name (followed by the instance token and `~`).
const CLAIM_PREFIX: &str = ".claimed~";
/// Upper bound for `max_message_bytes`.
const MAX_LIMIT: u64 = 16 * 1024 * 1024;
/// Longest address.
const MAX_ADDRESS: usize = 64;

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

/// The shared-directory mediator.
pub struct FileMediator {
    dir: PathBuf,
    address: String,
    poll: Duration,
    max: u64,
    /// Random per instance: names our claims so acknowledge only touches our own files.
    token: String,
    counter: u64,
    /// Age after which another instance's unacknowledged claim is put back.
    reclaim_after: Option<Duration>,
    /// Oversized files already reported (logged once each).
    warned: HashSet<String>,
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

fn io(context: &str, path: &Path, e: std::io::Error) -> PluginError {
    PluginError::Io(format!("{context} {}: {e}", path.display()))
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

    fn claim_prefix(&self) -> String {
        format!("{CLAIM_PREFIX}{}~", self.token)
    }

    fn sync_dir(&self) {
        // Makes the rename durable; not all filesystems allow it, so failure is ignored.
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
    }

    /// Candidate files addressed to us, oldest first.
    fn candidates(&mut self) -> Result<Vec<(String, String)>, PluginError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| io("cannot list", &self.dir, e))?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Ok(mut name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with(CLAIM_PREFIX) {
                match self.reclaim(&name) {
                    Some(original) => name = original,
                    None => continue,
                }
            }
            let Some((to, from, unique)) = parse_name(&name) else {
                continue;
            };
            if to != self.address {
                continue;
            }
            // Not following symlinks: only regular files count.
            let Ok(meta) = fs::symlink_metadata(self.dir.join(&name)) else {
                continue;
            };
            if !meta.file_type().is_file() || meta.len() == 0 {
                continue;
            }
            if meta.len() > self.max {
                if self.warned.insert(name.clone()) {
                    log::warn!(
                        "ignoring {name}: {} bytes is over max_message_bytes {}",
                        meta.len(),
                        self.max
                    );
                }
                continue;
            }
            found.push((unique.to_string(), name.clone(), from.to_string()));
        }
        found.sort();
        Ok(found
            .into_iter()
            .map(|(_, name, from)| (name, from))
            .collect())
    }

    /// Puts back a message another instance claimed for our address and never
    /// acknowledged (it crashed) once the claim is older than `reclaim_after`; returns
    /// the original name when it did.
    fn reclaim(&self, claimed: &str) -> Option<String> {
        let after = self.reclaim_after?;
        let (token, original) = claimed.strip_prefix(CLAIM_PREFIX)?.split_once('~')?;
        if token == self.token || parse_name(original)?.0 != self.address {
            return None;
        }
        let path = self.dir.join(claimed);
        let meta = fs::symlink_metadata(&path).ok()?;
        let age = meta.modified().ok()?.elapsed().unwrap_or_default();
        if !meta.file_type().is_file() || age < after {
            return None;
        }
        // Atomic: if two instances race here, only one rename succeeds.
        fs::rename(&path, self.dir.join(original)).ok()?;
        log::warn!(
            "put back {original}: claimed {} s ago and never acknowledged",
            age.as_secs()
        );
        Some(original.to_string())
    }

    /// Claims and reads the oldest message for us, if any.
    fn try_take(&mut self) -> Result<Option<Message>, PluginError> {
        for (name, from) in self.candidates()? {
            let claimed = format!("{}{name}", self.claim_prefix());
            let (src, dst) = (self.dir.join(&name), self.dir.join(&claimed));
            match fs::rename(&src, &dst) {
                Ok(()) => {}
                // Another instance took it between listing and claiming.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("cannot claim", &src, e)),
            }
            let mut sealed = Vec::new();
            let file = fs::File::open(&dst).map_err(|e| io("cannot open", &dst, e))?;
            // The claim's age is measured from now (a rename keeps the old mtime).
            let _ = file.set_modified(SystemTime::now());
            file.take(self.max + 1)
                .read_to_end(&mut sealed)
                .map_err(|e| io("cannot read", &dst, e))?;
            if sealed.len() as u64 > self.max || sealed.is_empty() {
                // It changed after listing: set it aside rather than guess.
                log::warn!("{name} changed size while being claimed; renamed to {name}.rejected");
                let _ = fs::rename(&dst, self.dir.join(format!("{name}.rejected")));
                continue;
            }
            log::debug!("claimed {name} ({} bytes)", sealed.len());
            return Ok(Some(Message {
                id: claimed,
                from,
                sealed,
            }));
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
            warned: HashSet::new(),
            reclaim_after: (s.reclaim_after_secs > 0)
                .then(|| Duration::from_secs(s.reclaim_after_secs)),
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
            return Err(io("cannot write", &dst, e));
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
        let prefix = self.claim_prefix();
        let original = id
            .strip_prefix(&prefix)
            .filter(|o| parse_name(o).is_some())
            .ok_or_else(|| {
                PluginError::InvalidArgument(format!(
                    "{id:?} is not a message this instance received"
                ))
            })?;
        let path = self.dir.join(id);
        match outcome {
            Outcome::Handled => {
                fs::remove_file(&path).map_err(|e| io("cannot remove", &path, e))?
            }
            Outcome::Rejected => {
                let kept = self.dir.join(format!("{original}.rejected"));
                fs::rename(&path, &kept).map_err(|e| io("cannot set aside", &path, e))?;
                log::warn!("rejected message kept as {}", kept.display());
            }
        }
        self.sync_dir();
        Ok(())
    }
}

export_mediator!(FileMediator);

#[cfg(test)]
mod tests;
