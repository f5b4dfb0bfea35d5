//! The YAML schema: private serde types, turned into a [`Profile`] by [`Profile::from_yaml`].
//! serde_yaml is used here and nowhere else.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::locate::resolve_path;
use super::*;
use crate::secret::{Password, SecretSource};
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

/// `family:` (an enum, so a wrong value is reported at its line).
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum FamilyRaw {
    Auto,
    Ipv4,
    Ipv6,
}

impl FamilyRaw {
    fn choice(self) -> crate::nat::FamilyChoice {
        use crate::nat::{Family, FamilyChoice};
        match self {
            FamilyRaw::Auto => FamilyChoice::Auto,
            FamilyRaw::Ipv4 => FamilyChoice::Only(Family::V4),
            FamilyRaw::Ipv6 => FamilyChoice::Only(Family::V6),
        }
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
    port_mapping: Option<super::PortMapping>,
    family: Option<FamilyRaw>,
    #[serde(default)]
    timeouts: TimeoutsRaw,
    #[serde(default)]
    replay: ReplayRaw,
    mediator: Option<MediatorRaw>,
    executor: Option<ExecutorRaw>,
    max_corridors: Option<usize>,
    #[serde(default)]
    birthday: BirthdayRaw,
    #[serde(default)]
    insecure_plaintext: bool,
    relay: Option<RelayRaw>,
    turn: Option<TurnRaw>,
}

/// `never`, `fallback` or `always`.
struct RelayRaw(crate::relay::RelayPolicy);
impl<'de> Deserialize<'de> for RelayRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "never, fallback or always", |s| s.parse().map(RelayRaw))
    }
}

struct TurnServer(HostPort);
impl<'de> Deserialize<'de> for TurnServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "host[:port]", |s| {
            HostPort::parse(s, Some(crate::relay::DEFAULT_PORT)).map(TurnServer)
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TurnRaw {
    server: TurnServer,
    user: String,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    secret_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BirthdayRaw {
    sockets: Option<u16>,
    probes: Option<u32>,
    rate: Option<u32>,
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

impl Profile {
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
        // Ids are parsed here, with the one rule of `PeerId`: what is signed is what is here.
        let id = |key: &str, s: &str| PeerId::parse(s).map_err(|e| invalid(key, e.to_string()));
        p.host = HostIdentity {
            id: Some(id("host.id", &raw.host.id)?),
            cert: resolve_path(&dir, raw.host.cert),
            key: resolve_path(&dir, raw.host.key),
        };
        p.peer = PeerIdentity {
            id: Some(id("peer.id", &raw.peer.id)?),
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
        if let Some(m) = raw.port_mapping {
            p.port_mapping = m;
        }
        if let Some(f) = raw.family {
            p.family = f.choice();
        }
        let t = raw.timeouts;
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
        if let Some(n) = raw.max_corridors {
            p.max_corridors = n;
        }
        if let Some(n) = raw.birthday.sockets {
            p.birthday.sockets = n;
        }
        if let Some(n) = raw.birthday.probes {
            p.birthday.probes = n;
        }
        if let Some(n) = raw.birthday.rate {
            p.birthday.rate = n;
        }
        p.insecure_plaintext = raw.insecure_plaintext;
        if p.insecure_plaintext {
            p.warnings.push(
                "insecure_plaintext is on: rendezvous messages travel unsealed and \
                 unauthenticated (for tests only)"
                    .into(),
            );
        }
        if let Some(r) = raw.relay {
            p.relay = r.0;
        }
        if let Some(t) = raw.turn {
            let password = match (t.password_file, t.password_env) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "turn",
                        "give one of password_file and password_env, not both".into(),
                    ))
                }
                (Some(f), None) => Some(SecretSource::File(resolve_path(&dir, f))),
                (None, Some(n)) => Some(SecretSource::Env(n)),
                (None, None) => None,
            };
            p.turn = Some(TurnConfig {
                server: t.server.0,
                user: t.user,
                password,
                secret: t
                    .secret_file
                    .map(|f| SecretSource::File(resolve_path(&dir, f))),
            });
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
                        SecretSource::Plain(crate::secret::Password::new(s))
                    }
                    SecretRaw::Env(n) => SecretSource::Env(n),
                    SecretRaw::File(f) => SecretSource::File(resolve_path(&dir, f)),
                    SecretRaw::Command(c) => SecretSource::Command(c),
                };
                // Defaults from the mediator's own constructor; checked by `validate`.
                let mut s = EmailSettings::new(
                    &e.smtp.0.host,
                    &e.login,
                    Password::new(String::new()),
                    &e.from,
                    &e.to,
                );
                s.password = password;
                s.smtp_port = e.smtp.0.port;
                if let Some(SmtpTlsRaw::Starttls) = e.smtp_tls {
                    s.smtp_mode = SmtpMode::StartTls;
                }
                s.imap_host = e.imap.0.host;
                s.imap_port = e.imap.0.port;
                s.ca_file = e.ca_file.map(|f| resolve_path(&dir, f));
                s.client_cert = e.client_cert.map(|f| resolve_path(&dir, f));
                s.client_key = e.client_key.map(|f| resolve_path(&dir, f));
                if let Some(f) = e.folder {
                    s.folder = f;
                }
                s.quarantine_folder = e.quarantine;
                if let Some(v) = e.poll_interval_s {
                    s.poll_interval = Duration::from_secs(v);
                }
                Some(MediatorConfig::Email(s))
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
                let cfg = crate::executor::command::CommandConfig {
                    program,
                    args: c.args,
                    shell: c.shell,
                    pwd: c.pwd.map(|d| resolve_path(&dir, d)),
                    env: c.env.into_iter().collect(),
                    env_pass: c.env_pass,
                    log_file: c.log_file.map(|f| resolve_path(&dir, f)),
                };
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
