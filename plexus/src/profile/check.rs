//! `plexus profile check`: what only this machine can tell, and the settings shown with
//! secrets masked.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::secret::check_private_file;

impl Profile {
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
