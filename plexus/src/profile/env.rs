//! Environment overrides: above the profile, below the command line.

use std::path::PathBuf;

use super::{HostPort, MediatorConfig, Profile, ProfileError, DEFAULT_STUN_PORT};
use crate::defaults;
use crate::secret::SecretSource;

impl Profile {
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
        if lookup(defaults::MAIL_PASSWORD_ENV).is_some() {
            if let Some(MediatorConfig::Email(e)) = &mut self.mediator {
                e.password = SecretSource::Env(defaults::MAIL_PASSWORD_ENV.into());
            }
        }
        Ok(())
    }
}
