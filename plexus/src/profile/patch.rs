//! Command-line overrides: a [`ProfilePatch`] (every field optional) applied once over
//! the profile and the environment. Nothing here validates: [`Profile::validate`] does,
//! after the patch.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ExecutorConfig, HostPort, MediatorConfig, Profile, ProfileError, TurnConfig};
use crate::defaults;
use crate::executor::command::CommandConfig;
use crate::identity::PeerId;
use crate::mediator::email::{EmailSettings, SmtpMode};
use crate::punch::hops::PunchHops;
use crate::relay::RelayPolicy;
use crate::secret::{Password, SecretSource};

/// Overrides of a [`Profile`]: `None` (or empty) leaves the profile's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfilePatch {
    /// This host's id.
    pub host_id: Option<PeerId>,
    /// The peer's id.
    pub peer_id: Option<PeerId>,
    /// This host's S/MIME certificate.
    pub host_cert: Option<PathBuf>,
    /// Its key.
    pub host_key: Option<PathBuf>,
    /// The peer's pinned certificate.
    pub peer_cert: Option<PathBuf>,
    /// A CA the peer's certificate must chain to.
    pub peer_ca: Option<PathBuf>,
    /// The replay state file.
    pub replay_state: Option<PathBuf>,
    /// STUN servers (replacing the profile's list).
    pub stun: Option<Vec<HostPort>>,
    /// The bind address's IP.
    pub bind_ip: Option<IpAddr>,
    /// The bind address's port.
    pub bind_port: Option<u16>,
    /// Punch TTL.
    pub punch_hops: Option<PunchHops>,
    /// Router port mapping on or off.
    pub port_mapping: Option<super::PortMapping>,
    /// The address families tried.
    pub family: Option<crate::nat::FamilyChoice>,
    /// Per-probe STUN deadline.
    pub discovery_timeout: Option<Duration>,
    /// Waiting for the peer's rendezvous message.
    pub rendezvous_timeout: Option<Duration>,
    /// The UDP handshake.
    pub handshake_timeout: Option<Duration>,
    /// Accept mode: most corridors at once.
    pub max_corridors: Option<usize>,
    /// Sockets of the hard side of a birthday pair (0: no port prediction).
    pub birthday_sockets: Option<u16>,
    /// Most probes of the easy side of a birthday pair.
    pub probe_budget: Option<u32>,
    /// Probes per second of the easy side.
    pub probe_rate: Option<u32>,
    /// Send rendezvous messages unsealed (tests only).
    pub insecure_plaintext: Option<bool>,
    /// E-mail mediator settings (introducing the e-mail mediator when there is none).
    pub email: Option<EmailPatch>,
    /// Command executor settings (replacing an executor plugin).
    pub command: Option<CommandPatch>,
    /// When to relay through TURN.
    pub relay: Option<RelayPolicy>,
    /// TURN server settings.
    pub turn: Option<TurnPatch>,
}

/// Overrides of the TURN server settings. A password replaces the profile's secret
/// and the other way round: the flags choose the kind of credentials.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnPatch {
    /// The server (needed when the profile has none).
    pub server: Option<HostPort>,
    /// User name.
    pub user: Option<String>,
    /// Long-term password source.
    pub password: Option<SecretSource>,
    /// TURN REST secret source.
    pub secret: Option<SecretSource>,
}

/// Overrides of the e-mail mediator's settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmailPatch {
    /// SMTP submission server (needed when the profile has no e-mail mediator).
    pub smtp: Option<HostPort>,
    /// Implicit TLS or STARTTLS.
    pub smtp_mode: Option<SmtpMode>,
    /// IMAP server (needed when the profile has no e-mail mediator).
    pub imap: Option<HostPort>,
    /// Login for both (default: the `from` address).
    pub login: Option<String>,
    /// Where the password comes from (default when new: [`defaults::MAIL_PASSWORD_ENV`]).
    pub password: Option<SecretSource>,
    /// This host's address.
    pub from: Option<String>,
    /// The peer's address.
    pub to: Option<String>,
    /// CA trusted for the servers' TLS.
    pub ca_file: Option<PathBuf>,
    /// TLS client certificate.
    pub client_cert: Option<PathBuf>,
    /// Its key.
    pub client_key: Option<PathBuf>,
}

/// Overrides of the command executor's settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandPatch {
    /// The program.
    pub program: Option<String>,
    /// Argument templates instead of the defaults.
    pub args: Option<Vec<String>>,
    /// Working directory.
    pub pwd: Option<PathBuf>,
    /// Output log file.
    pub log_file: Option<PathBuf>,
    /// Environment entries set (replacing the same names).
    pub env: Vec<(String, String)>,
}

impl Profile {
    /// Apply command-line overrides (above the environment). Fails only when the patch
    /// does not fit the profile's shape (e-mail settings over a mediator plugin, a new
    /// e-mail mediator without servers); values are checked by [`Profile::validate`].
    pub fn apply(&mut self, patch: ProfilePatch) -> Result<(), ProfileError> {
        let ProfilePatch {
            host_id,
            peer_id,
            host_cert,
            host_key,
            peer_cert,
            peer_ca,
            replay_state,
            stun,
            bind_ip,
            bind_port,
            punch_hops,
            port_mapping,
            family,
            discovery_timeout,
            rendezvous_timeout,
            handshake_timeout,
            max_corridors,
            birthday_sockets,
            probe_budget,
            probe_rate,
            insecure_plaintext,
            email,
            command,
            relay,
            turn,
        } = patch;
        set(&mut self.host.id, host_id.map(Some));
        set(&mut self.peer.id, peer_id.map(Some));
        set(&mut self.host.cert, host_cert);
        set(&mut self.host.key, host_key);
        set(&mut self.peer.cert, peer_cert);
        set(&mut self.peer.ca, peer_ca.map(Some));
        set(&mut self.replay.state_file, replay_state.map(Some));
        set(&mut self.stun, stun);
        if let Some(ip) = bind_ip {
            self.bind.set_ip(ip);
        }
        if let Some(port) = bind_port {
            self.bind.set_port(port);
        }
        set(&mut self.punch_hops, punch_hops);
        set(&mut self.port_mapping, port_mapping);
        set(&mut self.family, family);
        set(&mut self.timeouts.discovery, discovery_timeout);
        set(&mut self.timeouts.rendezvous, rendezvous_timeout);
        set(&mut self.timeouts.handshake, handshake_timeout);
        set(&mut self.max_corridors, max_corridors);
        set(&mut self.birthday.sockets, birthday_sockets);
        set(&mut self.birthday.probes, probe_budget);
        set(&mut self.birthday.rate, probe_rate);
        set(&mut self.insecure_plaintext, insecure_plaintext);
        if let Some(e) = email {
            self.apply_email(e)?;
        }
        set(&mut self.relay, relay);
        if let Some(t) = turn {
            self.apply_turn(t)?;
        }
        if let Some(c) = command {
            let mut cfg = match self.executor.take() {
                Some(ExecutorConfig::Command(c)) => c,
                _ => CommandConfig::default(),
            };
            set(&mut cfg.program, c.program);
            set(&mut cfg.args, c.args.map(Some));
            set(&mut cfg.pwd, c.pwd.map(Some));
            set(&mut cfg.log_file, c.log_file.map(Some));
            for (k, v) in c.env {
                cfg.env.retain(|(name, _)| *name != k);
                cfg.env.push((k, v));
            }
            self.executor = Some(ExecutorConfig::Command(cfg));
        }
        Ok(())
    }

    fn apply_turn(&mut self, p: TurnPatch) -> Result<(), ProfileError> {
        let mut t = match (self.turn.take(), p.server.clone()) {
            (Some(t), _) => t,
            (None, Some(server)) => TurnConfig {
                server,
                user: String::new(),
                password: None,
                secret: None,
            },
            (None, None) => {
                return Err(ProfileError::Invalid {
                    path: self.source.clone().unwrap_or_default(),
                    key: "turn.server".into(),
                    message: "--turn-* flags given without a TURN server: pass --turn \
                              HOST[:PORT] (profile: turn.server)"
                        .into(),
                })
            }
        };
        set(&mut t.server, p.server);
        set(&mut t.user, p.user);
        if p.password.is_some() || p.secret.is_some() {
            t.password = p.password;
            t.secret = p.secret;
        }
        self.turn = Some(t);
        Ok(())
    }

    fn apply_email(&mut self, p: EmailPatch) -> Result<(), ProfileError> {
        let shape = |key: &str, message: &str| ProfileError::Invalid {
            path: self.source.clone().unwrap_or_default(),
            key: key.to_string(),
            message: message.to_string(),
        };
        let mut e = match self.mediator.take() {
            Some(MediatorConfig::Email(e)) => e,
            Some(m @ MediatorConfig::Plugin(_)) => {
                self.mediator = Some(m);
                return Err(shape(
                    "mediator",
                    "--email-* flags given but the profile's mediator is a plugin: remove one",
                ));
            }
            None => {
                let (Some(smtp), Some(imap)) = (&p.smtp, &p.imap) else {
                    let flag = if p.smtp.is_none() {
                        "--email-smtps HOST:PORT"
                    } else {
                        "--email-imaps HOST:PORT"
                    };
                    return Err(shape(
                        "mediator.email",
                        &format!("e-mail rendezvous needs {flag}"),
                    ));
                };
                let mut e =
                    EmailSettings::new(&smtp.host, "", Password::new(String::new()), "", "");
                e.imap_host = imap.host.clone();
                e.password = SecretSource::Env(defaults::MAIL_PASSWORD_ENV.into());
                e
            }
        };
        if let Some(hp) = p.smtp {
            e.smtp_host = hp.host;
            e.smtp_port = hp.port;
        }
        set(&mut e.smtp_mode, p.smtp_mode);
        if let Some(hp) = p.imap {
            e.imap_host = hp.host;
            e.imap_port = hp.port;
        }
        set(&mut e.login, p.login);
        set(&mut e.password, p.password);
        set(&mut e.from, p.from);
        set(&mut e.peer, p.to);
        set(&mut e.ca_file, p.ca_file.map(Some));
        set(&mut e.client_cert, p.client_cert.map(Some));
        set(&mut e.client_key, p.client_key.map(Some));
        if e.login.is_empty() {
            e.login = e.from.clone();
        }
        self.mediator = Some(MediatorConfig::Email(e));
        Ok(())
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}
