//! YAML profiles: one file per peer, turned once into a validated [`Profile`].
//!
//! serde_yaml is used here and nowhere else (it is archived upstream; swapping it is a
//! change to this file only), and nothing outside needs serde: [`Profile`] is plain data.
//!
//! Where a profile is: `--profile NAME` means
//! `$XDG_CONFIG_HOME/plexus/profiles/NAME.yaml` (or `~/.config/plexus/profiles/NAME.yaml`);
//! anything with a `/` or ending in `.yaml`/`.yml` is a path. Relative paths inside a
//! profile are relative to the profile's directory; `~/` means the home directory.
//!
//! Precedence, lowest first: built-in defaults < profile < environment
//! ([`Profile::apply_env`]: `PLEXUS_BIND`, `PLEXUS_STUN`, `PLEXUS_PUNCH_HOPS`,
//! `PLEXUS_EMAIL_PASSWORD`) < command-line flags (the CLI sets the public fields).
//!
//! ```yaml
//! host: { id: alice@example.org/laptop, cert: alice.pem, key: alice.key }
//! peer: { id: bob@example.net/nas, cert: bob.pem, ca: ca.pem }   # ca optional
//! stun: ["stun.example.net:3478"]
//! bind: "0.0.0.0:40000"
//! punch_hops: auto            # or a number
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
//! insecure_plaintext: false
//! ```

use std::fmt;
use std::fs;
use std::io::Read;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::exec::CommandConfig;
use crate::punch::hops::PunchHops;
use crate::secret::{check_private_file, SecretError, SecretSource};

/// Largest profile file read.
pub const MAX_PROFILE_LEN: u64 = 1024 * 1024;
/// Default STUN port (RFC 8489).
pub const DEFAULT_STUN_PORT: u16 = 3478;

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
    /// `mail@domain/instance`.
    pub id: String,
    /// S/MIME certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM), readable by its owner only.
    pub key: PathBuf,
}

/// The peer's identity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerIdentity {
    /// The peer's id.
    pub id: String,
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
            discovery: Duration::from_millis(400),
            rendezvous: Duration::from_secs(300),
            handshake: Duration::from_millis(10_000),
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
            window: Duration::from_secs(600),
            state_file: None,
        }
    }
}

/// How SMTP is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpTls {
    /// TLS from the first byte (port 465).
    #[default]
    Implicit,
    /// STARTTLS upgrade (port 587); refused if the server does not offer it.
    Starttls,
}

/// The built-in e-mail mediator's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailConfig {
    /// SMTP submission server.
    pub smtp: HostPort,
    /// SMTP TLS mode.
    pub smtp_tls: SmtpTls,
    /// IMAP server (implicit TLS).
    pub imap: HostPort,
    /// Login for both servers.
    pub login: String,
    /// Password source.
    pub password: SecretSource,
    /// This host's address.
    pub from: String,
    /// The peer's address.
    pub to: String,
    /// Trust anchor for the servers' TLS (`None`: the system's).
    pub ca_file: Option<PathBuf>,
    /// Optional TLS client certificate.
    pub client_cert: Option<PathBuf>,
    /// Its key.
    pub client_key: Option<PathBuf>,
    /// Folder polled for messages.
    pub folder: String,
    /// Where rejected messages go (`None`: left in place).
    pub quarantine: Option<String>,
    /// Poll interval when IDLE is not available.
    pub poll_interval: Duration,
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
// Built once per run: boxing would only make the CLI's overrides clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum MediatorConfig {
    /// Built-in e-mail.
    Email(EmailConfig),
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

/// A validated profile: plain data, public fields (the CLI writes flag overrides here).
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
    /// Send rendezvous messages unsealed (tests only; loudly named on purpose).
    pub insecure_plaintext: bool,
    /// Things the user should know (a plain password in the file…).
    pub warnings: Vec<String>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            source: None,
            host: HostIdentity::default(),
            peer: PeerIdentity::default(),
            stun: Vec::new(),
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            punch_hops: PunchHops::Auto,
            timeouts: Timeouts::default(),
            replay: Replay::default(),
            mediator: None,
            executor: None,
            max_corridors: crate::session::DEFAULT_MAX_CORRIDORS,
            insecure_plaintext: false,
            warnings: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The YAML schema (private).

/// Deserialize a string and convert it inside the visitor, so that serde_yaml attaches
/// the value's line and column to a conversion error.
fn parse_str<'de, D, T>(
    d: D,
    what: &'static str,
    convert: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T> {
        what: &'static str,
        convert: fn(&str) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.what)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.convert)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V { what, convert })
}

/// A socket address (`ip:port`).
struct BindAddr(SocketAddr);
impl<'de> Deserialize<'de> for BindAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "ip:port", |s| {
            s.parse()
                .map(BindAddr)
                .map_err(|_| format!("{s:?} is not ip:port (e.g. \"0.0.0.0:40000\")"))
        })
    }
}

struct HostPortStrict(HostPort);
impl<'de> Deserialize<'de> for HostPortStrict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "host:port", |s| {
            HostPort::parse(s, None).map(HostPortStrict)
        })
    }
}

struct StunServer(HostPort);
impl<'de> Deserialize<'de> for StunServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "host[:port]", |s| {
            HostPort::parse(s, Some(DEFAULT_STUN_PORT)).map(StunServer)
        })
    }
}

/// `auto` or a number.
struct HopsRaw(PunchHops);
impl<'de> Deserialize<'de> for HopsRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HopsRaw;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`auto` or a TTL between 1 and 255")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HopsRaw, E> {
                match u8::try_from(v) {
                    Ok(n) if n >= 1 => Ok(HopsRaw(PunchHops::Fixed(n))),
                    _ => Err(E::custom(format!(
                        "punch hops {v}: expected `auto` or a TTL between 1 and 255"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HopsRaw, E> {
                Err(E::custom(format!(
                    "punch hops {v}: expected `auto` or a TTL between 1 and 255"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HopsRaw, E> {
                v.parse().map(HopsRaw).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A password: a plain string, or exactly one of `{env}`, `{file}`, `{command}`.
enum SecretRaw {
    Plain(String),
    Env(String),
    File(PathBuf),
    Command(Vec<String>),
}

impl<'de> Deserialize<'de> for SecretRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretRaw;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or one of {env: NAME}, {file: PATH}, {command: [ARGV]}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretRaw, E> {
                Ok(SecretRaw::Plain(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<SecretRaw, A::Error> {
                const KEYS: &[&str] = &["env", "file", "command"];
                let key: String = m
                    .next_key()?
                    .ok_or_else(|| de::Error::custom("empty map: give env, file or command"))?;
                let v = match key.as_str() {
                    "env" => SecretRaw::Env(m.next_value()?),
                    "file" => SecretRaw::File(m.next_value()?),
                    "command" => {
                        let argv: Vec<String> = m.next_value()?;
                        if argv.is_empty() {
                            return Err(de::Error::custom(
                                "command: give the program and its arguments as a list",
                            ));
                        }
                        SecretRaw::Command(argv)
                    }
                    other => return Err(de::Error::unknown_field(other, KEYS)),
                };
                if m.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom(
                        "give only one of env, file or command for a secret",
                    ));
                }
                Ok(v)
            }
        }
        d.deserialize_any(V)
    }
}

/// A map with exactly one of two keys (`email`/`plugin`, `command`/`plugin`).
enum OneOf<A, B> {
    First(A),
    Second(B),
}

trait OneOfNames {
    const NAMES: [&'static str; 2];
}

struct OneOfVisitor<A, B, N>(PhantomData<(A, B, N)>);

impl<'de, A: Deserialize<'de>, B: Deserialize<'de>, N: OneOfNames> Visitor<'de>
    for OneOfVisitor<A, B, N>
{
    type Value = OneOf<A, B>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a map with one key, `{}` or `{}`",
            N::NAMES[0],
            N::NAMES[1]
        )
    }
    fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
        let key: String = m.next_key()?.ok_or_else(|| {
            de::Error::custom(format!("give `{}` or `{}`", N::NAMES[0], N::NAMES[1]))
        })?;
        let v = if key == N::NAMES[0] {
            OneOf::First(m.next_value()?)
        } else if key == N::NAMES[1] {
            OneOf::Second(m.next_value()?)
        } else {
            return Err(de::Error::unknown_field(&key, &N::NAMES));
        };
        if m.next_key::<String>()?.is_some() {
            return Err(de::Error::custom(format!(
                "give only one of `{}` or `{}`",
                N::NAMES[0],
                N::NAMES[1]
            )));
        }
        Ok(v)
    }
}

struct MediatorNames;
impl OneOfNames for MediatorNames {
    const NAMES: [&'static str; 2] = ["email", "plugin"];
}
struct ExecutorNames;
impl OneOfNames for ExecutorNames {
    const NAMES: [&'static str; 2] = ["command", "plugin"];
}

struct MediatorRaw(OneOf<EmailRaw, PluginRaw>);
impl<'de> Deserialize<'de> for MediatorRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(OneOfVisitor::<_, _, MediatorNames>(PhantomData))
            .map(MediatorRaw)
    }
}
struct ExecutorRaw(OneOf<CommandRaw, PluginRaw>);
impl<'de> Deserialize<'de> for ExecutorRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(OneOfVisitor::<_, _, ExecutorNames>(PhantomData))
            .map(ExecutorRaw)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    host: HostRaw,
    peer: PeerRaw,
    #[serde(default)]
    stun: Vec<StunServer>,
    bind: Option<BindAddr>,
    punch_hops: Option<HopsRaw>,
    #[serde(default)]
    timeouts: TimeoutsRaw,
    #[serde(default)]
    replay: ReplayRaw,
    mediator: Option<MediatorRaw>,
    executor: Option<ExecutorRaw>,
    max_corridors: Option<usize>,
    #[serde(default)]
    insecure_plaintext: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostRaw {
    id: String,
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerRaw {
    id: String,
    cert: PathBuf,
    ca: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TimeoutsRaw {
    discovery_ms: Option<u64>,
    rendezvous_s: Option<u64>,
    handshake_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayRaw {
    window_s: Option<u64>,
    state_file: Option<PathBuf>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum SmtpTlsRaw {
    Implicit,
    Starttls,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailRaw {
    smtp: HostPortStrict,
    smtp_tls: Option<SmtpTlsRaw>,
    imap: HostPortStrict,
    login: String,
    password: SecretRaw,
    from: String,
    to: String,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    folder: Option<String>,
    quarantine: Option<String>,
    poll_interval_s: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginRaw {
    path: Option<PathBuf>,
    name: Option<String>,
    to: Option<String>,
    #[serde(default)]
    settings: Option<serde_yaml::Mapping>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandRaw {
    program: String,
    args: Option<Vec<String>>,
    #[serde(default)]
    shell: bool,
    pwd: Option<PathBuf>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    /// Variables passed through from plexus's environment beyond the built-in list.
    #[serde(default)]
    env_pass: Vec<String>,
    log_file: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------
// Loading.

/// Where `--profile NAME|PATH` points.
pub fn locate(name_or_path: &str) -> Result<PathBuf, ProfileError> {
    if name_or_path.contains('/')
        || name_or_path.ends_with(".yaml")
        || name_or_path.ends_with(".yml")
    {
        return Ok(expand_home(Path::new(name_or_path)));
    }
    let valid = !name_or_path.is_empty()
        && !name_or_path.starts_with('.')
        && name_or_path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !valid {
        return Err(ProfileError::BadName(name_or_path.to_string()));
    }
    let base = config_dir().unwrap_or_else(|| PathBuf::from(".config/plexus"));
    Ok(base.join("profiles").join(format!("{name_or_path}.yaml")))
}

/// plexus's configuration directory: `$XDG_CONFIG_HOME/plexus`, else
/// `~/.config/plexus`; `None` when neither variable is set.
pub fn config_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })
        .map(|base| base.join("plexus"))
}

/// Where `plexus cert new` is told to put keys in the README, and so where the flat
/// command line looks for certificates it was not given: `<config dir>/keys`.
pub fn default_keys_dir() -> Option<PathBuf> {
    config_dir().map(|d| d.join("keys"))
}

fn expand_home(p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~") {
        if let Some(h) = std::env::var_os("HOME") {
            return PathBuf::from(h).join(rest);
        }
    }
    p.to_path_buf()
}

fn resolve_path(dir: &Path, p: PathBuf) -> PathBuf {
    let p = expand_home(&p);
    let p = p.strip_prefix(".").map(Path::to_path_buf).unwrap_or(p);
    if p.is_absolute() {
        p
    } else {
        dir.join(p)
    }
}

impl Profile {
    /// Load `--profile NAME|PATH`.
    pub fn load(name_or_path: &str) -> Result<Profile, ProfileError> {
        let path = locate(name_or_path)?;
        Self::load_path(&path)
    }

    /// Load the profile file at `path`.
    pub fn load_path(path: &Path) -> Result<Profile, ProfileError> {
        let file = fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ProfileError::NotFound(path.to_owned()),
            _ => ProfileError::Io(path.to_owned(), e.to_string()),
        })?;
        let mode = file
            .metadata()
            .map_err(|e| ProfileError::Io(path.to_owned(), e.to_string()))?
            .permissions()
            .mode();
        let mut text = String::new();
        file.take(MAX_PROFILE_LEN + 1)
            .read_to_string(&mut text)
            .map_err(|e| ProfileError::Io(path.to_owned(), e.to_string()))?;
        if text.len() as u64 > MAX_PROFILE_LEN {
            return Err(ProfileError::Io(
                path.to_owned(),
                format!("larger than {MAX_PROFILE_LEN} bytes; is this really a profile?"),
            ));
        }
        let open_to_others = mode & 0o077 != 0;
        Self::from_yaml(&text, path, open_to_others)
    }

    /// Parse profile text as if read from `path` (relative paths resolve against its
    /// directory). `open_to_others`: the file is readable by other users.
    pub fn from_yaml(
        text: &str,
        path: &Path,
        open_to_others: bool,
    ) -> Result<Profile, ProfileError> {
        let raw: RawProfile = serde_yaml::from_str(text).map_err(|e| {
            let loc = e.location();
            ProfileError::Parse {
                path: path.to_owned(),
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                message: strip_location(&e.to_string()),
            }
        })?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let invalid = |key: &str, message: String| ProfileError::Invalid {
            path: path.to_owned(),
            key: key.to_string(),
            message,
        };
        let mut p = Profile {
            source: Some(path.to_owned()),
            ..Profile::default()
        };
        for (key, id) in [("host.id", &raw.host.id), ("peer.id", &raw.peer.id)] {
            crate::exec::validate_id(id).map_err(|e| invalid(key, e.to_string()))?;
        }
        p.host = HostIdentity {
            id: raw.host.id,
            cert: resolve_path(&dir, raw.host.cert),
            key: resolve_path(&dir, raw.host.key),
        };
        p.peer = PeerIdentity {
            id: raw.peer.id,
            cert: resolve_path(&dir, raw.peer.cert),
            ca: raw.peer.ca.map(|c| resolve_path(&dir, c)),
        };
        p.stun = raw.stun.into_iter().map(|s| s.0).collect();
        if let Some(b) = raw.bind {
            p.bind = b.0;
        }
        if let Some(h) = raw.punch_hops {
            p.punch_hops = h.0;
        }
        let t = raw.timeouts;
        for (key, v) in [
            ("timeouts.discovery_ms", t.discovery_ms),
            ("timeouts.rendezvous_s", t.rendezvous_s),
            ("timeouts.handshake_ms", t.handshake_ms),
            ("replay.window_s", raw.replay.window_s),
        ] {
            if v == Some(0) {
                return Err(invalid(key, "must be greater than 0".into()));
            }
        }
        if let Some(v) = t.discovery_ms {
            p.timeouts.discovery = Duration::from_millis(v);
        }
        if let Some(v) = t.rendezvous_s {
            p.timeouts.rendezvous = Duration::from_secs(v);
        }
        if let Some(v) = t.handshake_ms {
            p.timeouts.handshake = Duration::from_millis(v);
        }
        if let Some(v) = raw.replay.window_s {
            p.replay.window = Duration::from_secs(v);
        }
        p.replay.state_file = raw.replay.state_file.map(|f| resolve_path(&dir, f));
        match raw.max_corridors {
            Some(0) => return Err(invalid("max_corridors", "must be greater than 0".into())),
            Some(n) => p.max_corridors = n,
            None => {}
        }
        p.insecure_plaintext = raw.insecure_plaintext;
        if p.insecure_plaintext {
            p.warnings.push(
                "insecure_plaintext is on: rendezvous messages travel unsealed and \
                 unauthenticated (for tests only)"
                    .into(),
            );
        }
        p.mediator = match raw.mediator.map(|m| m.0) {
            None => None,
            Some(OneOf::First(e)) => {
                let password = match e.password {
                    SecretRaw::Plain(s) => {
                        if open_to_others {
                            return Err(invalid(
                                "mediator.email.password",
                                "a plain password in a profile readable by other users: \
                                 chmod 600 the profile, or use {env: NAME}, {file: PATH} \
                                 or {command: [...]}"
                                    .into(),
                            ));
                        }
                        p.warnings.push(
                            "mediator.email.password is written in the profile: prefer \
                             {env: NAME}, {file: PATH} or {command: [...]}"
                                .into(),
                        );
                        SecretSource::Plain(crate::secret::Secret::new(s))
                    }
                    SecretRaw::Env(n) => SecretSource::Env(n),
                    SecretRaw::File(f) => SecretSource::File(resolve_path(&dir, f)),
                    SecretRaw::Command(c) => SecretSource::Command(c),
                };
                if e.client_cert.is_some() != e.client_key.is_some() {
                    return Err(invalid(
                        "mediator.email.client_cert",
                        "client_cert and client_key go together: give both or neither".into(),
                    ));
                }
                if e.poll_interval_s == Some(0) {
                    return Err(invalid(
                        "mediator.email.poll_interval_s",
                        "must be greater than 0".into(),
                    ));
                }
                Some(MediatorConfig::Email(EmailConfig {
                    smtp: e.smtp.0,
                    smtp_tls: match e.smtp_tls {
                        Some(SmtpTlsRaw::Starttls) => SmtpTls::Starttls,
                        Some(SmtpTlsRaw::Implicit) | None => SmtpTls::Implicit,
                    },
                    imap: e.imap.0,
                    login: e.login,
                    password,
                    from: e.from,
                    to: e.to,
                    ca_file: e.ca_file.map(|f| resolve_path(&dir, f)),
                    client_cert: e.client_cert.map(|f| resolve_path(&dir, f)),
                    client_key: e.client_key.map(|f| resolve_path(&dir, f)),
                    folder: e.folder.unwrap_or_else(|| "INBOX".into()),
                    quarantine: e.quarantine,
                    poll_interval: e
                        .poll_interval_s
                        .map(Duration::from_secs)
                        .unwrap_or(crate::mediator::email::DEFAULT_POLL_INTERVAL),
                }))
            }
            Some(OneOf::Second(pl)) => Some(MediatorConfig::Plugin(plugin(
                pl,
                &dir,
                "mediator.plugin",
                path,
            )?)),
        };
        p.executor = match raw.executor.map(|x| x.0) {
            None => None,
            Some(OneOf::First(c)) => {
                // A relative program path with a '/' is relative to the profile; a bare
                // name is looked up in PATH as usual.
                let program = if !c.shell && c.program.contains('/') {
                    resolve_path(&dir, PathBuf::from(&c.program))
                        .display()
                        .to_string()
                } else {
                    c.program
                };
                let cfg = CommandConfig {
                    program,
                    args: c.args,
                    shell: c.shell,
                    pwd: c.pwd.map(|d| resolve_path(&dir, d)),
                    env: c.env.into_iter().collect(),
                    env_pass: c.env_pass,
                    log_file: c.log_file.map(|f| resolve_path(&dir, f)),
                };
                // Template and env names are checked now; the directory only at run time.
                crate::exec::CommandExecutor::new(CommandConfig {
                    pwd: None,
                    ..cfg.clone()
                })
                .map_err(|e| invalid("executor.command", e.to_string()))?;
                Some(ExecutorConfig::Command(cfg))
            }
            Some(OneOf::Second(pl)) => Some(ExecutorConfig::Plugin(plugin(
                pl,
                &dir,
                "executor.plugin",
                path,
            )?)),
        };
        for w in &p.warnings {
            log::warn!("profile {}: {w}", path.display());
        }
        Ok(p)
    }

    /// Apply environment overrides (above the profile, below flags). `lookup` is
    /// `std::env::var` in the binary, a map in tests.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ProfileError> {
        let env_err = |key: &str, message: String| ProfileError::Invalid {
            path: PathBuf::from("(environment)"),
            key: key.to_string(),
            message,
        };
        if let Some(v) = lookup("PLEXUS_BIND") {
            self.bind = v
                .parse()
                .map_err(|e| env_err("PLEXUS_BIND", format!("{v:?}: {e}; expected ip:port")))?;
        }
        if let Some(v) = lookup("PLEXUS_STUN") {
            self.stun = v
                .split(',')
                .map(|s| HostPort::parse(s.trim(), Some(DEFAULT_STUN_PORT)))
                .collect::<Result<_, _>>()
                .map_err(|e| env_err("PLEXUS_STUN", e))?;
        }
        if let Some(v) = lookup("PLEXUS_PUNCH_HOPS") {
            self.punch_hops = v.parse().map_err(|e| env_err("PLEXUS_PUNCH_HOPS", e))?;
        }
        if lookup("PLEXUS_EMAIL_PASSWORD").is_some() {
            if let Some(MediatorConfig::Email(e)) = &mut self.mediator {
                e.password = SecretSource::Env("PLEXUS_EMAIL_PASSWORD".into());
            }
        }
        Ok(())
    }

    /// Check what can only be checked on this machine: the files named exist, private
    /// keys are readable by their owner only, and every secret can be read.
    pub fn check_files(&self) -> Result<(), ProfileError> {
        let path = self.source.clone().unwrap_or_default();
        let missing = |key: &str, f: &Path| ProfileError::Invalid {
            path: path.clone(),
            key: key.to_string(),
            message: format!("{} does not exist or cannot be read", f.display()),
        };
        let mut files: Vec<(&str, &Path)> = vec![
            ("host.cert", &self.host.cert),
            ("host.key", &self.host.key),
            ("peer.cert", &self.peer.cert),
        ];
        if let Some(ca) = &self.peer.ca {
            files.push(("peer.ca", ca));
        }
        let mut keys: Vec<(&str, &Path)> = vec![("host.key", &self.host.key)];
        if let Some(MediatorConfig::Email(e)) = &self.mediator {
            if let Some(f) = &e.ca_file {
                files.push(("mediator.email.ca_file", f));
            }
            if let (Some(c), Some(k)) = (&e.client_cert, &e.client_key) {
                files.push(("mediator.email.client_cert", c));
                files.push(("mediator.email.client_key", k));
                keys.push(("mediator.email.client_key", k));
            }
            e.password.resolve().map_err(|error| ProfileError::Secret {
                path: path.clone(),
                key: "mediator.email.password".into(),
                error,
            })?;
        }
        if let Some(ExecutorConfig::Command(c)) = &self.executor {
            if let Some(d) = &c.pwd {
                if !d.is_dir() {
                    return Err(missing("executor.command.pwd", d));
                }
            }
        }
        // Plugin libraries are only located here, not loaded: loading runs their code.
        let plugins = [
            match &self.mediator {
                Some(MediatorConfig::Plugin(pl)) => Some(("mediator.plugin", pl)),
                _ => None,
            },
            match &self.executor {
                Some(ExecutorConfig::Plugin(pl)) => Some(("executor.plugin", pl)),
                _ => None,
            },
        ];
        for (key, pl) in plugins.into_iter().flatten() {
            match &pl.location {
                PluginLocation::Path(p) if !p.is_file() => {
                    return Err(ProfileError::Invalid {
                        path: path.clone(),
                        key: format!("{key}.path"),
                        message: format!(
                            "{} is not a file: build or install the plugin, or fix the path",
                            p.display()
                        ),
                    })
                }
                PluginLocation::Path(_) => {}
                PluginLocation::Name(n) => {
                    crate::plugin::resolve(n).map_err(|e| ProfileError::Invalid {
                        path: path.clone(),
                        key: format!("{key}.name"),
                        message: e.to_string(),
                    })?;
                }
            }
        }
        for (key, f) in files {
            if fs::File::open(f).is_err() {
                return Err(missing(key, f));
            }
        }
        for (key, f) in keys {
            check_private_file(f).map_err(|error| ProfileError::Secret {
                path: path.clone(),
                key: key.to_string(),
                error,
            })?;
        }
        Ok(())
    }
}

fn plugin(pl: PluginRaw, dir: &Path, key: &str, path: &Path) -> Result<PluginConfig, ProfileError> {
    let location = match (pl.path, pl.name) {
        (Some(p), None) => PluginLocation::Path(resolve_path(dir, p)),
        (None, Some(n)) => PluginLocation::Name(n),
        _ => {
            return Err(ProfileError::Invalid {
                path: path.to_owned(),
                key: key.to_string(),
                message: "give exactly one of `path` or `name`".into(),
            })
        }
    };
    let settings = pl.settings.unwrap_or_default();
    let settings_json = serde_json::to_string(&settings).map_err(|e| ProfileError::Invalid {
        path: path.to_owned(),
        key: format!("{key}.settings"),
        message: format!("cannot be passed to a plugin: {e}"),
    })?;
    Ok(PluginConfig {
        location,
        settings_json,
        to: pl.to,
    })
}

/// serde_yaml appends " at line L column C"; we print the location ourselves.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Display with secrets masked.

fn opt_path(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "-".into())
}

/// A plugin's location and the keys of its settings; the values may be credentials.
fn masked_plugin(p: &PluginConfig) -> String {
    let loc = match &p.location {
        PluginLocation::Path(p) => format!("path {}", p.display()),
        PluginLocation::Name(n) => format!("name {n}"),
    };
    let keys: Vec<String> = match serde_json::from_str::<serde_json::Value>(&p.settings_json) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    format!("{loc}, settings keys: {} (values ****)", keys.join(", "))
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "profile: {}", opt_path(&self.source))?;
        writeln!(
            f,
            "host: {} (cert {}, key {})",
            self.host.id,
            self.host.cert.display(),
            self.host.key.display()
        )?;
        writeln!(
            f,
            "peer: {} (cert {}, ca {})",
            self.peer.id,
            self.peer.cert.display(),
            opt_path(&self.peer.ca)
        )?;
        let stun: Vec<String> = self.stun.iter().map(|s| s.to_string()).collect();
        writeln!(
            f,
            "stun: {}",
            if stun.is_empty() {
                "-".into()
            } else {
                stun.join(", ")
            }
        )?;
        writeln!(f, "bind: {}", self.bind)?;
        writeln!(f, "punch_hops: {}", self.punch_hops)?;
        writeln!(
            f,
            "timeouts: discovery {} ms, rendezvous {} s, handshake {} ms",
            self.timeouts.discovery.as_millis(),
            self.timeouts.rendezvous.as_secs(),
            self.timeouts.handshake.as_millis()
        )?;
        writeln!(
            f,
            "replay: window {} s, state file {}",
            self.replay.window.as_secs(),
            opt_path(&self.replay.state_file)
        )?;
        match &self.mediator {
            None => writeln!(f, "mediator: -")?,
            Some(MediatorConfig::Email(e)) => {
                writeln!(f, "mediator: email")?;
                writeln!(f, "  smtp: {} ({:?})", e.smtp, e.smtp_tls)?;
                writeln!(f, "  imap: {}", e.imap)?;
                writeln!(f, "  login: {}", e.login)?;
                writeln!(f, "  password: {}", e.password)?;
                writeln!(f, "  from: {} to: {}", e.from, e.to)?;
                writeln!(f, "  ca_file: {}", opt_path(&e.ca_file))?;
                writeln!(
                    f,
                    "  client_cert: {} client_key: {}",
                    opt_path(&e.client_cert),
                    opt_path(&e.client_key)
                )?;
                writeln!(
                    f,
                    "  folder: {} quarantine: {}",
                    e.folder,
                    e.quarantine.as_deref().unwrap_or("-")
                )?;
                writeln!(f, "  poll_interval: {} s", e.poll_interval.as_secs())?;
            }
            Some(MediatorConfig::Plugin(p)) => {
                writeln!(f, "mediator: plugin {}", masked_plugin(p))?
            }
        }
        match &self.executor {
            None => writeln!(f, "executor: -")?,
            Some(ExecutorConfig::Command(c)) => {
                writeln!(
                    f,
                    "executor: command {}{}",
                    c.program,
                    if c.shell { " (via /bin/sh)" } else { "" }
                )?;
                let args = c
                    .args
                    .clone()
                    .unwrap_or_else(|| crate::exec::DEFAULT_ARGS.map(String::from).to_vec());
                writeln!(f, "  args: {}", args.join(" "))?;
                writeln!(f, "  pwd: {}", opt_path(&c.pwd))?;
                for (k, _) in &c.env {
                    // Values may carry credentials for the application: masked too.
                    writeln!(f, "  env: {k}=****")?;
                }
                writeln!(f, "  log_file: {}", opt_path(&c.log_file))?;
            }
            Some(ExecutorConfig::Plugin(p)) => {
                writeln!(f, "executor: plugin {}", masked_plugin(p))?
            }
        }
        writeln!(f, "max_corridors: {}", self.max_corridors)?;
        if self.insecure_plaintext {
            writeln!(f, "insecure_plaintext: true  (!)")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// `plexus profile check NAME|PATH`: load, check files and secrets, and return the
/// resolved settings with secrets masked.
pub fn check(name_or_path: &str) -> Result<String, ProfileError> {
    let p = Profile::load(name_or_path)?;
    p.check_files()?;
    Ok(p.to_string())
}

#[cfg(test)]
mod tests;
