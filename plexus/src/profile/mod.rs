//! YAML profiles: one file per peer, turned into a typed [`Profile`], patched, validated once.
//!
//! By concern: `schema` (the private serde types; serde_yaml is used there and nowhere
//! else, so swapping it is a change to that file only), `locate` (where a profile is,
//! reading it), `env` (environment overrides), `patch` (command-line overrides) and
//! `check` (validation, `profile check`, the masked display). Defaults are
//! [`crate::defaults`].
//!
//! Where a profile is: `--profile NAME` means
//! `$XDG_CONFIG_HOME/plexus/profiles/NAME.yaml` (or `~/.config/plexus/profiles/NAME.yaml`);
//! anything with a `/` or ending in `.yaml`/`.yml` is a path. Relative paths inside a
//! profile are relative to the profile's directory; `~/` means the home directory.
//!
//! Precedence, lowest first: built-in defaults < profile < environment
//! ([`Profile::apply_env`]: `PLEXUS_BIND`, `PLEXUS_STUN`, `PLEXUS_PUNCH_HOPS`,
//! `PLEXUS_EMAIL_PASSWORD`) < command-line flags ([`ProfilePatch`], applied once), then
//! [`Profile::validate`].
//!
//! ```yaml
//! host: { id: alice@example.org/laptop, cert: alice.pem, key: alice.key }
//! peer: { id: bob@example.net/nas, cert: bob.pem, ca: ca.pem }   # ca optional
//! stun: ["stun.example.net:3478"]
//! bind: "0.0.0.0:40000"
//! punch_hops: auto            # or a number
//! port_mapping: auto          # or off: no PCP / NAT-PMP / UPnP-IGD mapping of the corridor
//! family: auto                # or ipv4 / ipv6: the address families tried
//! timeouts: { discovery_ms: 400, rendezvous_s: 300, handshake_ms: 10000 }
//! replay: { window_s: 600, state_file: replay.state }
//! mediator:
//!   email:
//!     smtp: "mail.example.org:465"
//!     smtp_tls: implicit      # or starttls
//!     imap: "mail.example.org:993"
//!     login: alice
//!     password: { env: MAIL_PASSWORD }   # or { file: pw.txt } or { command: [pass, mail] }
//!     from: alice@example.org
//!     to: bob@example.net
//!     ca_file: mail-ca.pem
//! executor:
//!   command: { program: ./tunnel.sh, args: ["{peer_ip}", "{peer_port}"], env: { MODE: udp } }
//! max_corridors: 32          # accept: corridors running at once
//! birthday: { sockets: 256, probes: 2048, rate: 400 }   # port prediction (symmetric NATs)
//! relay: fallback            # never (default) | fallback | always: the TURN relay
//! turn:                      # needed unless relay is never
//!   server: "turn.example.net:3478"
//!   user: alice
//!   password_file: turn.pw   # or password_env: NAME (long-term credentials),
//!                            # or secret_file: PATH (TURN REST shared secret)
//! insecure_plaintext: false
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::defaults;
use crate::executor::command::CommandConfig;
use crate::identity::PeerId;
use crate::punch::hops::PunchHops;
use crate::relay::RelayPolicy;
use crate::secret::{SecretError, SecretSource};

mod check;
mod env;
mod locate;
mod patch;
mod schema;

pub use crate::mediator::email::{EmailSettings, SmtpMode};
pub use check::check;
pub use locate::{config_dir, default_keys_dir, locate};
pub use patch::{CommandPatch, EmailPatch, ProfilePatch, TurnPatch};

/// Largest profile file read.
pub const MAX_PROFILE_LEN: u64 = 1024 * 1024;
/// Default STUN port (RFC 8489).
pub const DEFAULT_STUN_PORT: u16 = defaults::STUN_PORT;

/// Errors of loading or checking a profile.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProfileError {
    /// The name is not a valid profile name (use letters, digits, `.`, `_`, `-`).
    BadName(String),
    /// No such profile file.
    NotFound(PathBuf),
    /// The file could not be read or is too large.
    Io(PathBuf, String),
    /// The YAML does not fit the schema (unknown key, wrong type…), at a line and column.
    Parse {
        /// The profile file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// What was wrong, naming the key.
        message: String,
    },
    /// A value is well-formed YAML but not acceptable (named by its key).
    Invalid {
        /// The profile file.
        path: PathBuf,
        /// The key, dotted (`mediator.email.password`).
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A secret could not be read.
    Secret {
        /// The profile file.
        path: PathBuf,
        /// The key of the secret.
        key: String,
        /// Why.
        error: SecretError,
    },
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfileError::BadName(n) => write!(
                f,
                "profile name {n:?}: use letters, digits, '.', '_' and '-', or give a path"
            ),
            ProfileError::NotFound(p) => write!(
                f,
                "profile {} not found: create it or give the path with --profile",
                p.display()
            ),
            ProfileError::Io(p, m) => write!(f, "profile {}: {m}", p.display()),
            ProfileError::Parse {
                path,
                line,
                column,
                message,
            } => {
                write!(f, "profile {}", path.display())?;
                if let (Some(l), Some(c)) = (line, column) {
                    write!(f, ", line {l}, column {c}")?;
                }
                write!(f, ": {message}")
            }
            // No path: the settings came from the command line alone.
            ProfileError::Invalid { path, key, message } if path.as_os_str().is_empty() => {
                write!(f, "{key}: {message}")
            }
            ProfileError::Invalid { path, key, message } => {
                write!(f, "profile {}: {key}: {message}", path.display())
            }
            ProfileError::Secret { path, key, error } => {
                write!(f, "profile {}: {key}: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for ProfileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProfileError::Secret { error: e, .. } => Some(e),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Plain configuration (what the rest of plexus sees).

/// This host's identity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostIdentity {
    /// `mail@domain/instance` (`None` until given by the profile or flags).
    pub id: Option<PeerId>,
    /// S/MIME certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM), readable by its owner only.
    pub key: PathBuf,
}

/// The peer's identity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerIdentity {
    /// The peer's id (`None` until given by the profile or flags).
    pub id: Option<PeerId>,
    /// The peer's pinned certificate.
    pub cert: PathBuf,
    /// Optional CA the certificate must chain to.
    pub ca: Option<PathBuf>,
}

/// `host:port` (a name or an address; IPv6 in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or address (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl HostPort {
    /// Parse `host:port`, or `host` alone when `default_port` is given.
    pub fn parse(s: &str, default_port: Option<u16>) -> Result<HostPort, String> {
        let bad = || {
            format!(
                "{s:?} is not host:port (e.g. \"stun.example.net:3478\", \"[2001:db8::1]:3478\")"
            )
        };
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(bad)?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(bad()),
            }
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                Some(_) => return Err(bad()),
                None => (s, None),
            }
        };
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c));
        if !valid_host {
            return Err(bad());
        }
        let port = match (port, default_port) {
            (Some(p), _) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
            (None, Some(d)) => d,
            (None, None) => return Err(bad()),
        };
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Timeouts of the phases.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    /// Per-probe STUN deadline: a filtering probe unanswered by then counts as filtered.
    pub discovery: Duration,
    /// Waiting for the peer's rendezvous message.
    pub rendezvous: Duration,
    /// The UDP handshake.
    pub handshake: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            discovery: defaults::DISCOVERY_TIMEOUT,
            rendezvous: defaults::RENDEZVOUS_TIMEOUT,
            handshake: defaults::HANDSHAKE_TIMEOUT,
        }
    }
}

/// Port prediction by the birthday paradox (see `plexus::punch::birthday`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Birthday {
    /// Sockets opened as the hard side; as acceptor, 0 turns prediction off.
    pub sockets: u16,
    /// Most probes sent as the easy side.
    pub probes: u32,
    /// Probes per second as the easy side.
    pub rate: u32,
}

impl Default for Birthday {
    fn default() -> Self {
        Birthday {
            sockets: defaults::BIRTHDAY_SOCKETS,
            probes: defaults::BIRTHDAY_PROBES,
            rate: defaults::BIRTHDAY_RATE,
        }
    }
}

/// Replay protection of rendezvous messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// How old a message may be.
    pub window: Duration,
    /// Where seen session ids are remembered (`None`: the rendezvous layer's default).
    pub state_file: Option<PathBuf>,
}

impl Default for Replay {
    fn default() -> Self {
        Replay {
            window: defaults::REPLAY_WINDOW,
            state_file: None,
        }
    }
}

/// Which dynamic library a plugin is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginLocation {
    /// A path to the library.
    Path(PathBuf),
    /// A name looked up in the plugin directories.
    Name(String),
}

/// A plugin and its own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// The library.
    pub location: PluginLocation,
    /// The `settings:` map, as JSON text for the plugin (opaque to plexus).
    pub settings_json: String,
    /// Mediator plugins: the peer's address on the plugin's channel (`to:`).
    pub to: Option<String>,
}

/// The rendezvous transport.
// Built once per run: boxing would only make patching clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum MediatorConfig {
    /// Built-in e-mail: the mediator's own settings type.
    Email(EmailSettings),
    /// A plugin.
    Plugin(PluginConfig),
}

/// What runs on the corridor.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutorConfig {
    /// The built-in command executor.
    Command(CommandConfig),
    /// A plugin.
    Plugin(PluginConfig),
}

/// The TURN server of the relay (profile `turn:`, flags `--turn*`); the session setup
/// resolves it into [`crate::relay::TurnSettings`].
#[derive(Debug, Clone, PartialEq)]
pub struct TurnConfig {
    /// The server (default port [`crate::relay::DEFAULT_PORT`]).
    pub server: HostPort,
    /// User name (long-term), or the user part of TURN REST credentials.
    pub user: String,
    /// Long-term credentials: where the password comes from.
    pub password: Option<SecretSource>,
    /// TURN REST credentials: where the secret shared with the server comes from.
    pub secret: Option<SecretSource>,
}

/// A profile: typed settings, public fields. Layers, lowest first: [`Profile::default`]
/// (the [`defaults`] table) < the file ([`Profile::load`]) < the environment
/// ([`Profile::apply_env`]) < the command line ([`Profile::apply`] of a [`ProfilePatch`]);
/// then [`Profile::validate`] checks the result once.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The file it came from (`None`: built-in defaults only).
    pub source: Option<PathBuf>,
    /// This host.
    pub host: HostIdentity,
    /// The peer.
    pub peer: PeerIdentity,
    /// STUN servers, tried in order.
    pub stun: Vec<HostPort>,
    /// Local address and port the corridor is punched from.
    pub bind: SocketAddr,
    /// Punch TTL.
    pub punch_hops: PunchHops,
    /// Ask the router for a mapping of the corridor port (PCP, NAT-PMP, UPnP-IGD).
    pub port_mapping: PortMapping,
    /// The address families tried (auto: every one with a STUN server and a route).
    pub family: crate::nat::FamilyChoice,
    /// Phase timeouts.
    pub timeouts: Timeouts,
    /// Replay protection.
    pub replay: Replay,
    /// Rendezvous transport (`None` until given by the profile or flags).
    pub mediator: Option<MediatorConfig>,
    /// Executor (`None` until given by the profile or flags).
    pub executor: Option<ExecutorConfig>,
    /// Accept mode: most corridors running at once.
    pub max_corridors: usize,
    /// Port prediction for pairs with a symmetric side.
    pub birthday: Birthday,
    /// Send rendezvous messages unsealed (tests only; loudly named on purpose).
    pub insecure_plaintext: bool,
    /// When to relay through TURN.
    pub relay: RelayPolicy,
    /// The TURN server (needed unless `relay` is never).
    pub turn: Option<TurnConfig>,
    /// Things the user should know (a plain password in the file…).
    pub warnings: Vec<String>,
}

/// `port_mapping:` in a profile, `--port-mapping` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortMapping {
    /// Ask the router (PCP, NAT-PMP, UPnP-IGD in turn) when it may help.
    #[default]
    Auto,
    /// Never ask the router.
    Off,
}

impl std::str::FromStr for PortMapping {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(PortMapping::Auto),
            "off" => Ok(PortMapping::Off),
            _ => Err(format!("port mapping {s:?}: expected `auto` or `off`")),
        }
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortMapping::Auto => "auto",
            PortMapping::Off => "off",
        })
    }
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            source: None,
            host: HostIdentity::default(),
            peer: PeerIdentity::default(),
            stun: Vec::new(),
            bind: defaults::BIND,
            punch_hops: defaults::PUNCH_HOPS,
            port_mapping: PortMapping::Auto,
            family: crate::nat::FamilyChoice::Auto,
            timeouts: Timeouts::default(),
            replay: Replay::default(),
            mediator: None,
            executor: None,
            max_corridors: defaults::MAX_CORRIDORS,
            birthday: Birthday::default(),
            insecure_plaintext: false,
            relay: RelayPolicy::Never,
            turn: None,
            warnings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
