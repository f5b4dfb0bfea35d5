//! The library's entry point: a validated [`Profile`] in, a ready [`Session`] out, and
//! from it a punched path the caller owns ([`Connected`]).
//!
//! ```no_run
//! use plexus::profile::Profile;
//! use plexus::Session;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let profile = Profile::load("bob")?; // ~/.config/plexus/profiles/bob.yaml
//! let connected = Session::from_profile(&profile)?.invite()?;
//! // The punched socket, the peer's endpoint and the 256-bit session key are ours now.
//! connected.socket.send_to(b"hello", connected.corridor.peer)?;
//! println!("session key {}", connected.key().to_hex().as_str());
//! # Ok(())
//! # }
//! ```
//!
//! Running an executor on the path is a separate, optional step:
//! [`Connected::run`] releases the socket and starts it, the way the `plexus` command
//! does. Everything here is wired from the profile the same way for the command line
//! and for a library user: the S/MIME envelope (pinned certificate, replay state), the
//! mediator (built-in e-mail or a plugin), the STUN servers and, when the profile names
//! one, the executor.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::executor::command::CommandExecutor;
use crate::executor::{ExecError, Executor};
use crate::identity::PeerId;
use crate::mediator::email::EmailMediator;
use crate::mediator::Mediator;
use crate::plugin::{
    resolve as resolve_plugin, Channel, PluginError, PluginExecutor, PluginMediator,
};
use crate::profile::{
    ExecutorConfig, MediatorConfig, PluginConfig, PluginLocation, Profile, ProfileError,
};
use crate::rendezvous::{Envelope, EnvelopeFiles, Freshness, ReplayError, ReplayGuard};
use crate::secret::SecretSource;
pub use crate::session::Connected;
use crate::session::{self, ExecutorFactory, Finished, Peer, SessionError, SessionSettings};

/// Why a profile could not be turned into a session. [`SetupError::is_usage`] tells
/// settings the user must change from a resource that could not be had.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetupError {
    /// A setting is missing, contradictory or invalid (named in the message).
    Settings(String),
    /// The profile did not pass [`Profile::validate`].
    Profile(ProfileError),
    /// This host's or the peer's certificate or key, or the CA, could not be used.
    Identity(crate::rendezvous::SetupError),
    /// A mediator or executor plugin could not be loaded.
    Plugin(PluginError),
    /// A STUN (or the TURN) server's name could not be resolved to an address of the
    /// bind family.
    Stun(String),
    /// The state directory could not be created or made private.
    State {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The replay state file could not be opened.
    Replay(ReplayError),
}

impl SetupError {
    /// Whether the user must change a setting (the command line's exit code 2), as
    /// opposed to a resource that failed (exit code 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            SetupError::Settings(_) | SetupError::Profile(_) | SetupError::Identity(_)
        )
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Settings(m) | SetupError::Stun(m) => f.write_str(m),
            SetupError::Identity(e) => write!(f, "{e}"),
            SetupError::Profile(e) => write!(f, "{e}"),
            SetupError::Plugin(e) => write!(f, "{e}"),
            SetupError::State { path, source } => {
                write!(
                    f,
                    "cannot prepare the state directory {}: {source}",
                    path.display()
                )
            }
            SetupError::Replay(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetupError::Identity(e) => Some(e),
            SetupError::Profile(e) => Some(e),
            SetupError::Plugin(e) => Some(e),
            SetupError::State { source, .. } => Some(source),
            SetupError::Replay(e) => Some(e),
            SetupError::Settings(_) | SetupError::Stun(_) => None,
        }
    }
}

fn settings(m: impl Into<String>) -> SetupError {
    SetupError::Settings(m.into())
}

/// One peer of a session: how to seal to it, where it is on the channel, and what runs
/// on its corridors (when the profile names an executor).
struct PeerSetup {
    envelope: Envelope,
    address: String,
    executor: Option<ExecutorFactory>,
}

/// A session wired from one profile (or, to accept for several peers through one
/// mailbox, several): nothing has touched the network yet.
pub struct Session {
    settings: SessionSettings,
    peers: Vec<PeerSetup>,
    mediator: Box<dyn Mediator>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("settings", &self.settings)
            .field(
                "peers",
                &self.peers.iter().map(|p| &p.address).collect::<Vec<_>>(),
            )
            .field("mediator", &self.mediator.name())
            .finish()
    }
}

impl Session {
    /// A session with the one peer `profile` describes. The profile is validated here
    /// ([`Profile::validate`]), once, whatever layers built it.
    pub fn from_profile(profile: &Profile) -> Result<Session, SetupError> {
        Session::from_profiles(std::slice::from_ref(profile))
    }

    /// A session for accepting invites from several peers through the first profile's
    /// mediator (the others' channel addresses are listened for too). All profiles must
    /// name the same host.
    pub fn from_profiles(profiles: &[Profile]) -> Result<Session, SetupError> {
        let Some(first) = profiles.first() else {
            return Err(settings("no profile given"));
        };
        for p in profiles {
            p.validate().map_err(SetupError::Profile)?;
        }
        for p in &profiles[1..] {
            if p.host.id != first.host.id {
                let id = |p: &Profile| p.host.id.as_ref().map(|i| i.to_string());
                return Err(settings(format!(
                    "all profiles of one acceptor must name the same host id ({} vs {})",
                    id(first).unwrap_or_default(),
                    id(p).unwrap_or_default()
                )));
            }
        }
        let extra: Vec<String> = profiles[1..].iter().filter_map(channel_address).collect();
        let (mediator, peer_address) = build_mediator(first, &extra)?;
        let stun = resolve_stun(first)?;
        let mut peers = Vec::new();
        for p in profiles {
            peers.push(PeerSetup {
                envelope: build_envelope(p)?,
                address: channel_address(p).unwrap_or_else(|| peer_address.clone()),
                executor: executor_factory(p)?,
            });
        }
        let settings = SessionSettings {
            stun,
            bind: first.bind,
            family: first.family,
            punch_hops: first.punch_hops,
            port_mapping: first.port_mapping == crate::profile::PortMapping::Auto,
            discovery_timeout: first.timeouts.discovery,
            rendezvous_timeout: Some(first.timeouts.rendezvous),
            handshake_timeout: first.timeouts.handshake,
            peer_address,
            max_corridors: first.max_corridors,
            birthday_sockets: first.birthday.sockets,
            probe_limits: crate::punch::birthday::ProbeLimits {
                budget: first.birthday.probes,
                rate: first.birthday.rate,
            },
            relay: resolve_relay(first)?,
        };
        Ok(Session {
            settings,
            peers,
            mediator,
        })
    }

    /// The resolved settings (e.g. to wait forever: `rendezvous_timeout = None`).
    pub fn settings_mut(&mut self) -> &mut SessionSettings {
        &mut self.settings
    }

    /// A fresh executor for peer `i`'s corridors, as its profile names it (`None`
    /// without an `executor:`).
    pub fn executor(&self, i: usize) -> Option<Result<Box<dyn Executor>, ExecError>> {
        self.peers.get(i)?.executor.as_ref().map(|f| f())
    }

    /// Invite the (one) peer and punch: the path is the caller's.
    pub fn invite(&mut self) -> Result<Connected, SessionError> {
        let [peer] = &mut self.peers[..] else {
            return Err(SessionError::Settings(format!(
                "invite talks to one peer; this session has {}",
                self.peers.len()
            )));
        };
        session::connect_invite(&self.settings, &mut peer.envelope, self.mediator.as_mut())
    }

    /// Invite as `plexus invite` does and run `executor` on the corridor. While the
    /// executor reports the path lost ([`ExecError::PathLost`]: a persistent one, such
    /// as the tunnel plugin's `persistent`), invite again and run the same executor
    /// (which keeps its state, e.g. bound listeners) on the new corridor. The waits
    /// before re-inviting double from 1 s to 60 s, back to 1 s after a corridor that
    /// lasted 5 minutes; after 5 failed invites in a row the last error is returned.
    /// A failure of the first invite is returned at once.
    pub fn invite_and_run(
        &mut self,
        executor: &mut dyn Executor,
    ) -> Result<Finished, SessionError> {
        const FIRST_DELAY: Duration = Duration::from_secs(1);
        const MAX_DELAY: Duration = Duration::from_secs(60);
        const STABLE: Duration = Duration::from_secs(300);
        const ATTEMPTS: u32 = 5;
        let mut delay = FIRST_DELAY;
        let mut connected = self.invite()?;
        loop {
            let started = std::time::Instant::now();
            let finished = connected.finish(executor);
            let Err(ExecError::PathLost(why)) = &finished.exec else {
                return Ok(finished);
            };
            if started.elapsed() >= STABLE {
                delay = FIRST_DELAY;
            }
            let mut failures = 0;
            connected = loop {
                log::warn!(
                    "{why}; inviting {} again in {} s",
                    finished.corridor.peer_id,
                    delay.as_secs()
                );
                std::thread::sleep(delay);
                delay = (delay * 2).min(MAX_DELAY);
                match self.invite() {
                    Ok(c) => break c,
                    Err(e) => {
                        failures += 1;
                        if failures >= ATTEMPTS {
                            return Err(e);
                        }
                        log::warn!("re-invite {failures} of {ATTEMPTS} failed: {e}");
                    }
                }
            };
        }
    }

    /// Wait for one valid invite from any configured peer, answer it and punch: the
    /// path is the caller's. Refused messages are logged and waited past.
    pub fn accept(&mut self) -> Result<Connected, SessionError> {
        let mut peers = session_peers(&mut self.peers);
        session::accept_one(&self.settings, &mut peers, self.mediator.as_mut())
    }

    /// Serve invites as `plexus accept` does: each corridor runs its peer's executor in
    /// a thread of its own while this goes back to waiting. With `once`, handle one
    /// invite and return its result; otherwise return only on an error or when the
    /// rendezvous timeout (if any) runs out.
    pub fn serve(&mut self, once: bool) -> Result<Finished, SessionError> {
        let executors = self
            .peers
            .iter()
            .map(|p| p.executor.clone())
            .collect::<Option<Vec<ExecutorFactory>>>()
            .ok_or_else(|| {
                SessionError::Settings("serving needs an executor for every peer".into())
            })?;
        let mut peers = session_peers(&mut self.peers);
        session::accept(
            &self.settings,
            &mut peers,
            self.mediator.as_mut(),
            &executors,
            once,
        )
    }
}

/// The session layer's view of the peers (borrowing their envelopes).
fn session_peers(peers: &mut [PeerSetup]) -> Vec<Peer<'_>> {
    peers
        .iter_mut()
        .map(|p| Peer {
            envelope: &mut p.envelope,
            address: p.address.clone(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Wiring one profile.

/// The peer's address on the profile's channel (mail `to`, plugin `to`).
fn channel_address(p: &Profile) -> Option<String> {
    match &p.mediator {
        Some(MediatorConfig::Email(e)) => Some(e.peer.clone()),
        Some(MediatorConfig::Plugin(pl)) => pl.to.clone(),
        None => None,
    }
}

/// `$XDG_STATE_HOME/plexus` (or `~/.local/state/plexus`); `None` when neither variable
/// is set.
pub fn default_state_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })
        .map(|base| base.join("plexus"))
}

/// Where this profile's state lives: beside an explicit replay state file, else the
/// default state directory.
fn state_dir(p: &Profile) -> Option<PathBuf> {
    match &p.replay.state_file {
        Some(f) => f.parent().map(Path::to_path_buf),
        None => default_state_dir(),
    }
}

/// Create the state directory 0700: its file names reveal host and peer ids. An
/// existing directory of ours that is open to others is tightened.
fn private_state_dir(dir: &Path) -> Result<(), SetupError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let fail = |source| SetupError::State {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    let meta = std::fs::metadata(dir).map_err(fail)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() == me && meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    }
    Ok(())
}

fn resolve_stun(p: &Profile) -> Result<Vec<SocketAddr>, SetupError> {
    if p.stun.is_empty() {
        return Err(settings(
            "no STUN server: pass --stun HOST[:PORT] (or --stun-ip) or set `stun:` in the profile",
        ));
    }
    // Every address of every server, of each family allowed: a name with both gives a
    // server per family, and the session measures each family with its own servers.
    let mut out = Vec::new();
    for hp in &p.stun {
        let addrs = (hp.host.as_str(), hp.port)
            .to_socket_addrs()
            .map_err(|e| SetupError::Stun(format!("cannot resolve STUN server {hp}: {e}")))?;
        for a in addrs {
            if p.family.allows(crate::nat::Family::of(&a)) && !out.contains(&a) {
                out.push(a);
            }
        }
    }
    if out.is_empty() {
        return Err(SetupError::Stun(match p.family {
            crate::nat::FamilyChoice::Only(f) => format!(
                "no STUN server has an {} address (family: {}): name one that has",
                f.label(),
                p.family
            ),
            crate::nat::FamilyChoice::Auto => {
                "no STUN server address could be resolved: give an IP address".into()
            }
        }));
    }
    Ok(out)
}

/// The relay settings: the TURN server's name resolved (in the bind's family) and its
/// password or secret read now, so a bad one fails before any rendezvous.
fn resolve_relay(p: &Profile) -> Result<crate::relay::RelaySettings, SetupError> {
    use crate::relay::{RelaySettings, TurnCredentials, TurnSettings, DEFAULT_REST_TTL};
    let Some(t) = &p.turn else {
        return Ok(RelaySettings {
            policy: p.relay,
            turn: None,
        });
    };
    let want_v4 = p.bind.is_ipv4();
    let server = (t.server.host.as_str(), t.server.port)
        .to_socket_addrs()
        .map_err(|e| SetupError::Stun(format!("cannot resolve TURN server {}: {e}", t.server)))?
        .find(|a| a.is_ipv4() == want_v4)
        .ok_or_else(|| {
            SetupError::Stun(format!(
                "TURN server {} has no {} address",
                t.server,
                if want_v4 { "IPv4" } else { "IPv6" }
            ))
        })?;
    let read = |key: &str, src: &crate::secret::SecretSource| {
        src.resolve().map_err(|e| settings(format!("{key}: {e}")))
    };
    // `validate` made sure exactly one of the two is there.
    let credentials = match (&t.password, &t.secret) {
        (Some(pw), _) => TurnCredentials::LongTerm {
            user: t.user.clone(),
            password: read("turn.password", pw)?,
        },
        (None, Some(s)) => TurnCredentials::Rest {
            user: t.user.clone(),
            secret: read("turn.secret", s)?,
            ttl: DEFAULT_REST_TTL,
        },
        (None, None) => return Err(settings("turn: no password and no secret")),
    };
    Ok(RelaySettings {
        policy: p.relay,
        turn: Some(TurnSettings {
            server,
            credentials,
        }),
    })
}

fn build_mediator(
    p: &Profile,
    extra_peers: &[String],
) -> Result<(Box<dyn Mediator>, String), SetupError> {
    match &p.mediator {
        None => Err(settings(
            "no rendezvous channel: pass --email-smtps/--email-imaps/… or set `mediator:` in the profile",
        )),
        Some(MediatorConfig::Email(e)) => {
            // The profile holds the mediator's own settings: only what the session adds.
            let mut s = e.clone();
            // The password is read once, here.
            let password = e
                .password
                .resolve()
                .map_err(|er| settings(format!("mail password: {er}")))?;
            s.password = SecretSource::Plain(password);
            s.extra_peers = extra_peers.to_vec();
            // Mail the server received before any message could still be fresh is
            // skipped unopened, so a flood of old mail costs nothing.
            s.max_age = Some(p.replay.window + Duration::from_secs(Freshness::default().max_skew));
            // Refused UIDs are remembered per mailbox and folder, next to the replay state.
            s.refused_state = state_dir(p).map(|d| {
                let key = format!("{}@{}_{}_{}", e.login, e.imap_host, e.imap_port, e.folder);
                let safe: String = key
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || "@._-".contains(c) { c } else { '_' })
                    .collect();
                d.join(format!("email-refused-{safe}"))
            });
            let m = EmailMediator::new(s).map_err(|er| settings(er.to_string()))?;
            Ok((Box::new(m), e.peer.clone()))
        }
        Some(MediatorConfig::Plugin(pl)) => {
            // `validate` made sure it is there.
            let to = pl.to.clone().unwrap_or_default();
            let channel = plugin_channel(p);
            let path = match &pl.location {
                PluginLocation::Path(path) => path.clone(),
                PluginLocation::Name(n) => resolve_plugin(n).map_err(SetupError::Plugin)?,
            };
            let m = PluginMediator::open_for(&path, &pl.settings_json, &channel)
                .map_err(SetupError::Plugin)?;
            Ok((Box::new(m), to))
        }
    }
}

/// The ids and, when both keys are EC, the ECDH channel secret a mediator plugin gets
/// (see [`Channel`]). Missing files are the envelope's error to report, not this one's.
fn plugin_channel(p: &Profile) -> Channel {
    let id = |i: &Option<PeerId>| i.as_ref().map(|i| i.to_string()).unwrap_or_default();
    let (host_id, peer_id) = (id(&p.host.id), id(&p.peer.id));
    let (Some(hid), Some(pid)) = (&p.host.id, &p.peer.id) else {
        return Channel {
            host_id,
            peer_id,
            secret: None,
        };
    };
    let keys = crate::profile::default_keys_dir();
    let file = |given: &Path, stem: String, ext: &str| -> PathBuf {
        match (&keys, given.as_os_str().is_empty()) {
            (Some(k), true) => k.join(format!("{stem}.{ext}")),
            _ => given.to_path_buf(),
        }
    };
    let key = file(&p.host.key, hid.file_stem(), "key");
    let cert = file(&p.peer.cert, pid.file_stem(), "pem");
    let (channel, why) = Channel::derive(&host_id, &key, &peer_id, &cert);
    if let Some(why) = why {
        log::debug!("mediator plugin gets {why}");
    }
    channel
}

/// A factory of fresh executors for the profile's `executor:`. A plugin is loaded once
/// now so that a missing one is a setup error, not a late failure (a command's template
/// was checked by `validate`).
fn executor_factory(p: &Profile) -> Result<Option<ExecutorFactory>, SetupError> {
    match p.executor.clone() {
        None => Ok(None),
        Some(ExecutorConfig::Command(c)) => Ok(Some(Arc::new(move || {
            CommandExecutor::new(c.clone()).map(|e| Box::new(e) as Box<dyn Executor>)
        }))),
        Some(ExecutorConfig::Plugin(pl)) => {
            let load = move |pl: &PluginConfig| match &pl.location {
                PluginLocation::Path(path) => PluginExecutor::open(path, &pl.settings_json),
                PluginLocation::Name(n) => PluginExecutor::load(n, &pl.settings_json),
            };
            load(&pl).map_err(SetupError::Plugin)?;
            Ok(Some(Arc::new(move || {
                load(&pl)
                    .map(|e| Box::new(e) as Box<dyn Executor>)
                    .map_err(|e| ExecError::Config(e.to_string()))
            })))
        }
    }
}

/// `<state dir>/replay-HOST-PEER`; `None` when there is no state directory, and then
/// the caller must refuse rather than keep replay protection in memory only (a restart
/// would forget every message seen).
fn default_replay_state(host: &PeerId, peer: &PeerId) -> Option<PathBuf> {
    Some(default_state_dir()?.join(format!("replay-{}-{}", host.file_stem(), peer.file_stem())))
}

/// The sealing envelope of one profile's host/peer pair.
fn build_envelope(p: &Profile) -> Result<Envelope, SetupError> {
    // `validate` made sure both are there.
    let (Some(host_id), Some(peer_id)) = (p.host.id.clone(), p.peer.id.clone()) else {
        return Err(settings("host.id and peer.id are needed"));
    };
    let freshness = Freshness {
        max_age: p.replay.window.as_secs(),
        ..Freshness::default()
    };
    let replay_state = match p.replay.state_file.clone() {
        Some(f) => f,
        None => default_replay_state(&host_id, &peer_id).ok_or_else(|| {
            settings(
                "neither HOME nor XDG_STATE_HOME is set, so replay protection has nowhere \
                 to remember messages: pass --replay-state PATH (profile: replay.state_file)",
            )
        })?,
    };
    if let Some(dir) = replay_state.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_state_dir(dir)?;
    }
    if p.insecure_plaintext {
        let replay = ReplayGuard::open(&replay_state).map_err(SetupError::Replay)?;
        return Ok(Envelope::insecure_plaintext(
            host_id, peer_id, freshness, replay,
        ));
    }
    let keys = crate::profile::default_keys_dir();
    // Not given: the file `plexus cert new --out <config dir>/keys` wrote, if there.
    let or_default = |given: &Path, stem: &str, ext: &str| -> Option<PathBuf> {
        if !given.as_os_str().is_empty() {
            return Some(given.to_path_buf());
        }
        let f = keys.as_ref()?.join(format!("{stem}.{ext}"));
        f.is_file().then_some(f)
    };
    let host_cert = or_default(&p.host.cert, &host_id.file_stem(), "pem");
    let host_key = or_default(&p.host.key, &host_id.file_stem(), "key");
    let peer_cert = or_default(&p.peer.cert, &peer_id.file_stem(), "pem");
    let (Some(host_cert), Some(host_key), Some(peer_cert)) =
        (host_cert.clone(), host_key.clone(), peer_cert.clone())
    else {
        let missing: Vec<String> = [
            (
                host_cert.is_none(),
                "--smime-cert",
                host_id.file_stem(),
                "pem",
            ),
            (
                host_key.is_none(),
                "--smime-key",
                host_id.file_stem(),
                "key",
            ),
            (
                peer_cert.is_none(),
                "--smime-peer",
                peer_id.file_stem(),
                "pem",
            ),
        ]
        .iter()
        .filter(|(m, ..)| *m)
        .map(|(_, flag, stem, ext)| match &keys {
            Some(k) => format!("{flag} (or {})", k.join(format!("{stem}.{ext}")).display()),
            None => flag.to_string(),
        })
        .collect();
        return Err(settings(format!(
            "rendezvous messages are S/MIME sealed: pass {} (or set host.cert, host.key, \
             peer.cert in the profile); make a certificate with `plexus cert new`",
            missing.join(", ")
        )));
    };
    Envelope::from_files(&EnvelopeFiles {
        host_id,
        host_cert,
        host_key,
        peer_id,
        peer_cert,
        ca: p.peer.ca.clone(),
        replay_state: Some(replay_state),
        freshness,
    })
    .map_err(SetupError::Identity)
}
