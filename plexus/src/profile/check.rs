//! Validation (once, after every layer is applied), `plexus profile check` (what only
//! this machine can tell) and the settings shown with secrets masked.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::executor::command::CommandExecutor;
use crate::secret::check_private_file;

impl Profile {
    /// Check the settings once, after the file, the environment and the command line are
    /// applied: what each value must be on its own and together, without touching files
    /// or the network ([`check_files`](Self::check_files) does that). The session setup
    /// calls this; nothing else checks the same things again.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let invalid = |key: &str, message: String| ProfileError::Invalid {
            path: self.source.clone().unwrap_or_default(),
            key: key.to_string(),
            message,
        };
        if self.host.id.is_none() || self.peer.id.is_none() {
            let key = if self.host.id.is_none() {
                "host.id"
            } else {
                "peer.id"
            };
            return Err(invalid(
                key,
                "pass --host-id and --peer-id (or set host.id and peer.id in the profile)".into(),
            ));
        }
        for (key, zero) in [
            ("timeouts.discovery_ms", self.timeouts.discovery.is_zero()),
            ("timeouts.rendezvous_s", self.timeouts.rendezvous.is_zero()),
            ("timeouts.handshake_ms", self.timeouts.handshake.is_zero()),
            ("replay.window_s", self.replay.window.as_secs() == 0),
            ("max_corridors", self.max_corridors == 0),
            ("birthday.probes", self.birthday.probes == 0),
            ("birthday.rate", self.birthday.rate == 0),
        ] {
            if zero {
                return Err(invalid(key, "must be greater than 0".into()));
            }
        }
        let max = crate::rendezvous::message::MAX_BIRTHDAY_SOCKETS;
        if self.birthday.sockets > max {
            return Err(invalid(
                "birthday.sockets",
                format!("at most {max} (each is a socket and a NAT mapping); 256 is plenty"),
            ));
        }
        if self.birthday.probes > 65_535 || self.birthday.rate > 10_000 {
            return Err(invalid(
                "birthday",
                "probes at most 65535 and rate at most 10000 per second (probing is bounded)"
                    .into(),
            ));
        }
        match &self.mediator {
            Some(MediatorConfig::Email(e)) => {
                if e.from.is_empty() || e.peer.is_empty() {
                    return Err(invalid(
                        "mediator.email",
                        "e-mail rendezvous needs --email-from and --email-to                          (profile: from, to)"
                            .into(),
                    ));
                }
                e.validate().map_err(|er| match er {
                    crate::mediator::MediatorError::Config(m) => invalid("mediator.email", m),
                    other => invalid("mediator.email", other.to_string()),
                })?;
            }
            Some(MediatorConfig::Plugin(pl)) if pl.to.is_none() => {
                return Err(invalid(
                    "mediator.plugin.to",
                    "the mediator plugin needs `to:` (the peer's address on its channel)".into(),
                ));
            }
            _ => {}
        }
        // A policy other than never without a server is fine: the accepting side
        // allocates, so an inviter only says it lets the acceptor's relay carry it.
        if let Some(t) = &self.turn {
            if t.user.is_empty() {
                return Err(invalid(
                    "turn.user",
                    "the TURN server needs a user: pass --turn-user (profile: turn.user)".into(),
                ));
            }
            match (&t.password, &t.secret) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "turn",
                        "give a TURN password (--turn-password-file/--turn-password-env) or a \
                         TURN REST secret (--turn-secret-file), not both"
                            .into(),
                    ))
                }
                (None, None) => {
                    return Err(invalid(
                        "turn",
                        "the TURN server needs a password (--turn-password-file or \
                         --turn-password-env; profile: turn.password_file/password_env) or a \
                         TURN REST secret (--turn-secret-file; profile: turn.secret_file)"
                            .into(),
                    ))
                }
                _ => {}
            }
        }
        if let Some(ExecutorConfig::Command(c)) = &self.executor {
            // Template and env names are checked now; the directory only at run time.
            CommandExecutor::new(CommandConfig {
                pwd: None,
                ..c.clone()
            })
            .map_err(|e| invalid("executor.command", e.to_string()))?;
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
        if let Some(t) = &self.turn {
            for (key, src) in [("turn.password", &t.password), ("turn.secret", &t.secret)] {
                if let Some(src) = src {
                    src.resolve().map_err(|error| ProfileError::Secret {
                        path: path.clone(),
                        key: key.into(),
                        error,
                    })?;
                }
            }
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

fn opt_id(id: &Option<PeerId>) -> &str {
    id.as_ref().map(PeerId::as_str).unwrap_or("-")
}

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
            opt_id(&self.host.id),
            self.host.cert.display(),
            self.host.key.display()
        )?;
        writeln!(
            f,
            "peer: {} (cert {}, ca {})",
            opt_id(&self.peer.id),
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
        writeln!(f, "port_mapping: {}", self.port_mapping)?;
        writeln!(f, "family: {}", self.family)?;
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
                let smtp = HostPort {
                    host: e.smtp_host.clone(),
                    port: e.smtp_port,
                };
                let tls = match e.smtp_mode {
                    SmtpMode::ImplicitTls => "Implicit",
                    SmtpMode::StartTls => "Starttls",
                };
                let imap = HostPort {
                    host: e.imap_host.clone(),
                    port: e.imap_port,
                };
                writeln!(f, "  smtp: {smtp} ({tls})")?;
                writeln!(f, "  imap: {imap}")?;
                writeln!(f, "  login: {}", e.login)?;
                writeln!(f, "  password: {}", e.password)?;
                writeln!(f, "  from: {} to: {}", e.from, e.peer)?;
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
                    e.quarantine_folder.as_deref().unwrap_or("-")
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
                let args = c.args.clone().unwrap_or_else(|| {
                    crate::executor::command::DEFAULT_ARGS
                        .map(String::from)
                        .to_vec()
                });
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
        writeln!(
            f,
            "birthday: sockets {}, probes {}, rate {}/s",
            self.birthday.sockets, self.birthday.probes, self.birthday.rate
        )?;
        writeln!(f, "relay: {}", self.relay)?;
        match &self.turn {
            None => writeln!(f, "turn: -")?,
            Some(t) => {
                writeln!(f, "turn: {} user {}", t.server, t.user)?;
                if let Some(pw) = &t.password {
                    writeln!(f, "  password: {pw}")?;
                }
                if let Some(s) = &t.secret {
                    writeln!(f, "  secret (TURN REST): {s}")?;
                }
            }
        }
        if self.insecure_plaintext {
            writeln!(f, "insecure_plaintext: true  (!)")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// `plexus profile check NAME|PATH`: load, validate, check files and secrets, and return
/// the resolved settings with secrets masked.
pub fn check(name_or_path: &str) -> Result<String, ProfileError> {
    let p = Profile::load(name_or_path)?;
    p.validate()?;
    p.check_files()?;
    Ok(p.to_string())
}
