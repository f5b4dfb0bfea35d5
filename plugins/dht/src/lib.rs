//! `dht`: a plexus mediator plugin over the BitTorrent mainline DHT (BEP 5), carrying
//! messages in BEP 44 mutable items.
//!
//! Where an item lives (its ed25519 key and salt) and the key its content is encrypted
//! with come from the channel secret the host hands over (ECDH of the two identities'
//! EC keys; or a `secret_file` both sides hold), the direction and the UTC day: observers
//! of the DHT see random keys that change daily and opaque ciphertext, nothing linkable
//! to the identities. See [`codec`] and the README's "`dht` mediator".
//!
//! Settings (YAML or JSON):
//! - `bootstrap: ["HOST:PORT", …]`: nodes to join through (default: the well-known
//!   public mainline bootstrap nodes);
//! - `poll_interval_ms` (default 1000): how often a waiting side looks up the peer's
//!   item; `max_poll_interval_ms` (default 5000): empty lookups back off up to this;
//! - `request_timeout_ms` (default 2000): one DHT request's timeout;
//! - `secret_file`: a file of at least 16 random bytes both peers hold, used only when
//!   the host has no channel secret (an RSA key on either side).

pub mod codec;

use codec::{Assembly, Chunk, Schedule, DAY, MAX_CHUNKS, MAX_TOTAL, TAG};
use mainline::{Dht, MutableItem, SigningKey};
use plexus_plugin_sdk::{export_mediator, Channel, MediatorPlugin, Message, Outcome, PluginError};
use serde::Deserialize;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Message ids remembered as delivered (or refused), so they are not returned again.
const REMEMBERED: usize = 256;
/// Near midnight (UTC) within this margin, the neighbouring day is polled too: clocks
/// differ and a message written just before midnight is read just after.
const MIDNIGHT_MARGIN: u64 = 3600;
/// Largest `secret_file` read.
const MAX_SECRET_FILE: u64 = 4096;
/// Tries to store one item (each bounded by mainline's query timeouts).
const PUT_ATTEMPTS: usize = 2;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    bootstrap: Option<Vec<String>>,
    #[serde(default = "default_poll")]
    poll_interval_ms: u64,
    #[serde(default)]
    max_poll_interval_ms: Option<u64>,
    #[serde(default = "default_request_timeout")]
    request_timeout_ms: u64,
    #[serde(default)]
    secret_file: Option<PathBuf>,
}

fn default_poll() -> u64 {
    1000
}
fn default_request_timeout() -> u64 {
    2000
}

/// The plugin instance: one DHT client node and one peer.
pub struct DhtMediator {
    dht: Dht,
    schedule: Schedule,
    me: String,
    peer: String,
    poll: Duration,
    max_poll: Duration,
    /// Current wait between lookups (grows while nothing arrives).
    interval: Duration,
    /// Ids of messages already returned or refused.
    seen: VecDeque<[u8; 12]>,
}

fn config(m: impl Into<String>) -> PluginError {
    PluginError::Config(m.into())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// UTC days to look in at `now`: today, and the neighbour near midnight.
fn days_at(now: u64) -> Vec<u64> {
    let day = now / DAY;
    let into = now % DAY;
    let mut days = vec![day];
    if into < MIDNIGHT_MARGIN {
        days.push(day.saturating_sub(1));
    } else if DAY - into <= MIDNIGHT_MARGIN {
        days.push(day + 1);
    }
    days
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads a shared secret file: private to its owner, 16 to 4096 bytes.
fn read_secret_file(path: &PathBuf) -> Result<Vec<u8>, PluginError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| config(format!("secret_file {}: {e}", path.display())))?;
    if meta.mode() & 0o077 != 0 {
        return Err(config(format!(
            "secret_file {} is readable by group or others (mode {:04o}): run chmod 600 on it",
            path.display(),
            meta.mode() & 0o7777
        )));
    }
    if meta.len() > MAX_SECRET_FILE {
        return Err(config(format!(
            "secret_file {} is {} bytes, more than {MAX_SECRET_FILE}: it should hold a short random secret",
            path.display(),
            meta.len()
        )));
    }
    let bytes =
        std::fs::read(path).map_err(|e| config(format!("secret_file {}: {e}", path.display())))?;
    if bytes.len() < 16 {
        return Err(config(format!(
            "secret_file {} holds {} bytes; use at least 16 random bytes \
             (e.g. head -c 32 /dev/urandom > FILE) and give both peers the same file",
            path.display(),
            bytes.len()
        )));
    }
    Ok(bytes)
}

impl DhtMediator {
    fn signing_key(seed: &[u8; 32]) -> SigningKey {
        SigningKey::from_bytes(seed)
    }

    fn remember(&mut self, id: [u8; 12]) {
        if self.seen.len() >= REMEMBERED {
            self.seen.pop_front();
        }
        self.seen.push_back(id);
    }

    /// The newest value stored at chunk `index` of the peer's messages on `day`.
    fn fetch(&self, day: u64, index: u8) -> Option<Chunk> {
        let slot = self.schedule.slot(&self.peer, &self.me, day, index);
        let key = Self::signing_key(&slot.seed).verifying_key().to_bytes();
        // mainline checks each item's signature against `key`: nobody without the
        // signing key (so without the channel secret) can place a value here.
        let item = self.dht.get_mutable_most_recent(&key, Some(&slot.salt))?;
        match Chunk::decode(item.value()) {
            Ok(c) => Some(c),
            Err(e) => {
                log::debug!("dht: ignoring a value at chunk {index}: {e}");
                None
            }
        }
    }

    /// One lookup of the peer's message of `day`; `None` when there is none (new).
    fn poll_day(&mut self, day: u64) -> Option<Message> {
        let t0 = Instant::now();
        let first = self.fetch(day, 0)?;
        if self.seen.contains(&first.msg_id) {
            return None;
        }
        let mut asm = Assembly::new(first);
        // The other chunks in parallel: each lookup waits on the slowest node it asks.
        let this: &Self = self;
        let rest: Vec<Option<Chunk>> = std::thread::scope(|s| {
            let handles: Vec<_> = asm
                .missing()
                .into_iter()
                .map(|i| s.spawn(move || this.fetch(day, i)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().ok().flatten())
                .collect()
        });
        for c in rest {
            if !asm.add(c?) {
                log::debug!("dht: the peer replaced its message while it was read; next poll");
                return None;
            }
        }
        let ct = asm.finish()?;
        let id = asm.msg_id();
        self.remember(id);
        let key = self.schedule.message_key(&self.peer, &self.me, day);
        let Some(sealed) = codec::open(&key, &id, &codec::aad(&self.peer, &self.me, day), &ct)
        else {
            log::warn!(
                "dht: ignoring message {} that does not decrypt under the channel secret",
                hex(&id)
            );
            return None;
        };
        log::info!(
            "dht: found message {} ({} items, {} bytes) in {} ms",
            hex(&id),
            ct.len().div_ceil(codec::CHUNK_DATA),
            sealed.len(),
            t0.elapsed().as_millis()
        );
        Some(Message {
            id: format!("{}-{day}", hex(&id)),
            from: self.peer.clone(),
            sealed,
        })
    }
}

impl MediatorPlugin for DhtMediator {
    const NAME: &'static str = "dht";

    fn create(settings: &str) -> Result<Self, PluginError> {
        Self::create_for(settings, &Channel::default())
    }

    fn create_for(settings: &str, channel: &Channel) -> Result<Self, PluginError> {
        let s: Settings = if settings.trim().is_empty() {
            serde_yaml::from_str("{}")
        } else {
            serde_yaml::from_str(settings)
        }
        .map_err(|e| config(format!("dht settings: {e}")))?;
        if channel.host_id.is_empty() || channel.peer_id.is_empty() {
            return Err(config(
                "dht needs the host's and the peer's ids from plexus (this plexus is too old \
                 for the dht plugin: update it)",
            ));
        }
        let secret = match (&channel.secret, &s.secret_file) {
            (Some(secret), _) => secret.clone(),
            (None, Some(f)) => read_secret_file(f)?,
            (None, None) => {
                return Err(config(
                    "dht needs a secret shared with the peer: both identities with EC keys \
                     (what `plexus cert new` makes) give one, otherwise set `secret_file` to a \
                     file of random bytes both peers hold",
                ))
            }
        };
        if !(10..=60_000).contains(&s.poll_interval_ms) {
            return Err(config(format!(
                "poll_interval_ms is {}, expected 10..=60000",
                s.poll_interval_ms
            )));
        }
        let max_poll = s
            .max_poll_interval_ms
            .unwrap_or(5000.max(s.poll_interval_ms));
        if max_poll < s.poll_interval_ms || max_poll > 600_000 {
            return Err(config(format!(
                "max_poll_interval_ms is {max_poll}, expected poll_interval_ms..=600000"
            )));
        }
        if !(50..=30_000).contains(&s.request_timeout_ms) {
            return Err(config(format!(
                "request_timeout_ms is {}, expected 50..=30000",
                s.request_timeout_ms
            )));
        }
        let bootstrap: Vec<String> =
            match s.bootstrap {
                Some(b) if b.is_empty() => return Err(config(
                    "bootstrap is empty: list HOST:PORT nodes, or leave it out for the public ones",
                )),
                Some(b) => b,
                None => mainline::DEFAULT_BOOTSTRAP_NODES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            };
        for b in &bootstrap {
            if b.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(config(format!("bootstrap entry {b:?} is not HOST:PORT")));
            }
        }
        let dht = Dht::builder()
            .bootstrap(&bootstrap)
            .request_timeout(Duration::from_millis(s.request_timeout_ms))
            .build()
            .map_err(|e| PluginError::Io(format!("cannot open the DHT node's socket: {e}")))?;
        let t0 = Instant::now();
        if !dht.bootstrapped() {
            return Err(PluginError::Unreachable(format!(
                "no DHT node answered through the bootstrap nodes {}: check them and that UDP \
                 goes out",
                bootstrap.join(", ")
            )));
        }
        log::info!(
            "dht: joined through {} bootstrap node(s) in {} ms",
            bootstrap.len(),
            t0.elapsed().as_millis()
        );
        let poll = Duration::from_millis(s.poll_interval_ms);
        Ok(DhtMediator {
            dht,
            schedule: Schedule::new(&secret),
            me: channel.host_id.clone(),
            peer: channel.peer_id.clone(),
            poll,
            max_poll: Duration::from_millis(max_poll),
            interval: poll,
            seen: VecDeque::new(),
        })
    }

    fn send(&mut self, to: &str, sealed: &[u8]) -> Result<(), PluginError> {
        if !to.is_empty() && to != self.peer {
            return Err(config(format!(
                "the profile sends to {to:?}, but the dht channel serves peer {:?}: set the \
                 mediator's `to` to the peer id",
                self.peer
            )));
        }
        if sealed.len() + TAG > MAX_TOTAL {
            return Err(PluginError::Protocol(format!(
                "a message of {} bytes does not fit in {MAX_CHUNKS} DHT items",
                sealed.len()
            )));
        }
        let t0 = Instant::now();
        let day = now_secs() / DAY;
        let mut id = [0u8; 12];
        openssl::rand::rand_bytes(&mut id)
            .map_err(|e| PluginError::Io(format!("no randomness for the message id: {e}")))?;
        let key = self.schedule.message_key(&self.me, &self.peer, day);
        let ct = codec::seal(&key, &id, &codec::aad(&self.me, &self.peer, day), sealed);
        let chunks = codec::split(id, &ct).expect("length checked above");
        let seq = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(1);
        let put = |c: &Chunk| -> Result<(), PluginError> {
            let slot = self.schedule.slot(&self.me, &self.peer, day, c.index);
            let item = MutableItem::new(
                Self::signing_key(&slot.seed),
                &c.encode(),
                seq,
                Some(&slot.salt),
            );
            // One retry: a put that no node acknowledged in time (busy or lost) usually
            // succeeds the second time; storing the same item again is harmless.
            let mut last = None;
            for _ in 0..PUT_ATTEMPTS {
                match self.dht.put_mutable(item.clone(), None) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = Some(e),
                }
            }
            Err(PluginError::Unreachable(format!(
                "storing DHT item {} failed: {}",
                c.index,
                last.map(|e| e.to_string()).unwrap_or_default()
            )))
        };
        // The other chunks first (in parallel), chunk 0 last: a reader that finds chunk
        // 0 finds the rest.
        let (first, rest) = chunks.split_first().expect("at least one chunk");
        std::thread::scope(|s| {
            let handles: Vec<_> = rest.iter().map(|c| s.spawn(move || put(c))).collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(PluginError::Io("put thread panicked".into())))
            })
        })?;
        put(first)?;
        log::info!(
            "dht: published message {} ({} items, {} bytes) in {} ms",
            hex(&id),
            chunks.len(),
            sealed.len(),
            t0.elapsed().as_millis()
        );
        // An answer is due soon: look often again.
        self.interval = self.poll;
        Ok(())
    }

    fn receive(&mut self, timeout: Duration) -> Result<Option<Message>, PluginError> {
        let deadline = Instant::now() + timeout;
        loop {
            for day in days_at(now_secs()) {
                if let Some(m) = self.poll_day(day) {
                    self.interval = self.poll;
                    return Ok(Some(m));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(self.interval.min(deadline - now));
            self.interval = (self.interval * 3 / 2).min(self.max_poll);
        }
    }

    fn acknowledge(&mut self, id: &str, outcome: Outcome) -> Result<(), PluginError> {
        // Items cannot be deleted from the DHT (they expire); the id is already
        // remembered so it is not returned again. Replays are the core's job.
        log::debug!("dht: message {id} {outcome:?}");
        Ok(())
    }
}

export_mediator!(DhtMediator);

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(secret: Option<Vec<u8>>) -> Channel {
        Channel {
            host_id: "a@x/1".into(),
            peer_id: "b@x/2".into(),
            secret,
        }
    }

    fn refused(settings: &str, ch: &Channel) -> String {
        match DhtMediator::create_for(settings, ch) {
            Err(PluginError::Config(m)) => m,
            Err(e) => panic!("expected a settings error, got {e:?}"),
            Ok(_) => panic!("settings {settings:?} were accepted"),
        }
    }

    #[test]
    fn bad_settings_are_refused_before_any_network_and_name_the_setting() {
        let ok = channel(Some(vec![1; 32]));
        assert!(refused("bogus: 1", &ok).contains("unknown field `bogus`"));
        assert!(refused("poll_interval_ms: 1", &ok).contains("poll_interval_ms"));
        assert!(
            refused("poll_interval_ms: 2000\nmax_poll_interval_ms: 1000", &ok)
                .contains("max_poll_interval_ms")
        );
        assert!(refused("request_timeout_ms: 1", &ok).contains("request_timeout_ms"));
        assert!(refused("bootstrap: []", &ok).contains("bootstrap is empty"));
        assert!(refused("bootstrap: [\"nohost\"]", &ok).contains("HOST:PORT"));
        // No secret from the host and no file: says how to get one.
        let m = refused("{}", &channel(None));
        assert!(m.contains("EC keys") && m.contains("secret_file"), "{m}");
        // A host that gives no ids (a plexus from before the channel fields).
        let m = refused("{}", &Channel::default());
        assert!(m.contains("too old"), "{m}");
    }

    #[test]
    fn a_secret_file_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("plexus-dht-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s");
        std::fs::write(&f, [9u8; 32]).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_secret_file(&f)
            .unwrap_err()
            .message()
            .contains("chmod 600"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&f).unwrap(), vec![9u8; 32]);
        std::fs::write(&f, [9u8; 8]).unwrap();
        assert!(read_secret_file(&f)
            .unwrap_err()
            .message()
            .contains("at least 16"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_neighbouring_day_is_polled_only_near_midnight() {
        assert_eq!(days_at(5 * DAY + 10), vec![5, 4]);
        assert_eq!(days_at(5 * DAY + DAY / 2), vec![5]);
        assert_eq!(days_at(6 * DAY - 10), vec![5, 6]);
    }
}
