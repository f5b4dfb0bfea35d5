//! `tunnel` executor plugin: reach TCP and UDP services behind NAT over QUIC on the
//! punched path, without root on either side.
//!
//! The accepting side is a QUIC server on the corridor's inner endpoint (so QUIC uses
//! the NAT mapping the punch opened) and connects streams to the services it names in
//! `forward:`, nothing else. The inviting side is the QUIC client and listens locally
//! where `listen:` says. Each TCP connection is one QUIC stream; UDP packets are QUIC
//! datagrams. Both ends prove the session key (see [`auth`](crate::auth)).
//!
//! Settings (YAML or JSON):
//! ```yaml
//! forward:                      # accepting side: what the peer may reach
//!   - { name: ssh, to: 127.0.0.1:22 }
//!   - { name: dns, to: 127.0.0.1:53, udp: true }
//! listen:                       # inviting side: where each service appears locally
//!   - { name: ssh, on: 127.0.0.1:2222 }
//!   - { name: dns, on: 127.0.0.1:5353, udp: true }
//! keepalive_secs: 10            # QUIC keepalive, inside any NAT's idle timeout
//! path_timeout_secs: 30         # no packet from the peer this long: the path is dead
//! idle_timeout_secs: 0          # stop when no connection or datagram for this long (0 = never)
//! max_duration_secs: 0          # stop after this long (0 = no limit)
//! stop_file: /run/user/1000/plexus-tunnel-stop   # stop when this file appears
//! persistent: false             # inviting side: when the path dies (silence for
//!                               # path_timeout_secs, a restarted peer), ask plexus to
//!                               # invite again; the local listeners stay bound meanwhile.
//!                               # A peer that closes the tunnel on purpose ends it.
//! ```

mod auth;
pub mod proto;
mod run;

use plexus_plugin_sdk::{export_executor, Corridor, ExecutorPlugin, PluginError, RunReport};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    forward: Vec<ForwardSetting>,
    #[serde(default)]
    listen: Vec<ListenSetting>,
    #[serde(default = "default_keepalive")]
    keepalive_secs: u64,
    #[serde(default = "default_path_timeout")]
    path_timeout_secs: u64,
    #[serde(default)]
    idle_timeout_secs: u64,
    #[serde(default)]
    max_duration_secs: u64,
    #[serde(default)]
    stop_file: Option<PathBuf>,
    #[serde(default)]
    persistent: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForwardSetting {
    name: String,
    to: String,
    #[serde(default)]
    udp: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenSetting {
    name: String,
    on: SocketAddr,
    #[serde(default)]
    udp: bool,
}

fn default_keepalive() -> u64 {
    10
}

fn default_path_timeout() -> u64 {
    30
}

/// One service the accepting side exposes.
#[derive(Debug, Clone)]
pub(crate) struct Forward {
    pub(crate) name: String,
    pub(crate) to: SocketAddr,
    pub(crate) udp: bool,
}

/// One place the inviting side listens.
#[derive(Debug, Clone)]
pub(crate) struct Listen {
    pub(crate) name: String,
    pub(crate) on: SocketAddr,
    pub(crate) udp: bool,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) forward: Vec<Forward>,
    pub(crate) listen: Vec<Listen>,
    pub(crate) keepalive: Duration,
    pub(crate) path_timeout: Duration,
    pub(crate) idle: Option<Duration>,
    pub(crate) max: Option<Duration>,
    pub(crate) stop_file: Option<PathBuf>,
    pub(crate) persistent: bool,
}

fn config_error(m: impl Into<String>) -> PluginError {
    PluginError::Config(format!("tunnel settings: {}", m.into()))
}

/// Most services one side may name (each is a listener or a forward target).
const MAX_SERVICES: usize = 64;

impl Config {
    fn parse(text: &str) -> Result<Config, PluginError> {
        let s: Settings = serde_yaml::from_str(text).map_err(|e| config_error(e.to_string()))?;
        if s.forward.is_empty() && s.listen.is_empty() {
            return Err(config_error(
                "name the services: `forward: [{ name: ssh, to: 127.0.0.1:22 }]` on the \
                 accepting side, `listen: [{ name: ssh, on: 127.0.0.1:2222 }]` on the inviting side",
            ));
        }
        if s.forward.len() > MAX_SERVICES || s.listen.len() > MAX_SERVICES {
            return Err(config_error(format!(
                "at most {MAX_SERVICES} entries in forward and in listen"
            )));
        }
        let check_name = |seen: &mut HashSet<String>, what: &str, name: &str| {
            if !proto::valid_name(name) {
                return Err(config_error(format!(
                    "{what} name {name:?}: use 1 to {} characters of A-Z a-z 0-9 . _ -",
                    proto::MAX_NAME
                )));
            }
            if !seen.insert(name.to_string()) {
                return Err(config_error(format!("{what} name {name:?} appears twice")));
            }
            Ok(())
        };
        let mut seen = HashSet::new();
        let mut forward = Vec::new();
        for f in s.forward {
            check_name(&mut seen, "forward", &f.name)?;
            let to =
                f.to.to_socket_addrs()
                    .map_err(|e| {
                        config_error(format!(
                            "forward {}: `to: {}` is not a HOST:PORT that resolves ({e})",
                            f.name, f.to
                        ))
                    })?
                    .next()
                    .ok_or_else(|| {
                        config_error(format!("forward {}: {} has no address", f.name, f.to))
                    })?;
            if to.port() == 0 {
                return Err(config_error(format!("forward {}: port 0", f.name)));
            }
            forward.push(Forward {
                name: f.name,
                to,
                udp: f.udp,
            });
        }
        let mut seen = HashSet::new();
        let mut bound = HashSet::new();
        let mut listen = Vec::new();
        for l in s.listen {
            check_name(&mut seen, "listen", &l.name)?;
            if l.on.port() == 0 {
                return Err(config_error(format!(
                    "listen {}: `on` needs a fixed port (the user's client must know it)",
                    l.name
                )));
            }
            if !bound.insert((l.on, l.udp)) {
                return Err(config_error(format!(
                    "listen {}: {} is used twice",
                    l.name, l.on
                )));
            }
            listen.push(Listen {
                name: l.name,
                on: l.on,
                udp: l.udp,
            });
        }
        let day = 86_400;
        if s.keepalive_secs == 0 || s.keepalive_secs > day {
            return Err(config_error("keepalive_secs must be 1 to 86400"));
        }
        if s.path_timeout_secs <= s.keepalive_secs || s.path_timeout_secs > day {
            return Err(config_error(
                "path_timeout_secs must be longer than keepalive_secs (and at most 86400)",
            ));
        }
        let secs = |n: u64| (n > 0).then(|| Duration::from_secs(n));
        if s.idle_timeout_secs > 100 * 365 * day || s.max_duration_secs > 100 * 365 * day {
            return Err(config_error(
                "idle_timeout_secs / max_duration_secs: absurdly long",
            ));
        }
        Ok(Config {
            forward,
            listen,
            keepalive: Duration::from_secs(s.keepalive_secs),
            path_timeout: Duration::from_secs(s.path_timeout_secs),
            idle: secs(s.idle_timeout_secs),
            max: secs(s.max_duration_secs),
            stop_file: s.stop_file,
            persistent: s.persistent,
        })
    }
}

/// The tunnel executor. One instance serves every corridor plexus hands it (the
/// inviting side's listeners stay bound between corridors).
pub struct Tunnel {
    config: Config,
    state: Option<run::State>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("config", &self.config)
            .finish()
    }
}

impl ExecutorPlugin for Tunnel {
    const NAME: &'static str = "tunnel";

    fn create(settings: &str) -> Result<Self, PluginError> {
        Ok(Tunnel {
            config: Config::parse(settings)?,
            state: None,
        })
    }

    fn run(&mut self, corridor: &Corridor) -> Result<RunReport, PluginError> {
        if corridor.accepted && self.config.forward.is_empty() {
            return Err(config_error(
                "this side accepted, so it serves `forward:` entries, and there are none",
            ));
        }
        if !corridor.accepted && self.config.listen.is_empty() {
            return Err(config_error(
                "this side invited, so it needs `listen:` entries, and there are none",
            ));
        }
        if self.state.is_none() {
            self.state = Some(run::State::new()?);
        }
        let state = self.state.as_mut().expect("set above");
        state.run(&self.config, corridor)
    }
}

export_executor!(Tunnel);

#[cfg(test)]
mod tests;
