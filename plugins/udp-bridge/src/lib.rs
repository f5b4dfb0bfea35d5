//! `udp-bridge` executor plugin: lets any UDP application (WireGuard, a game server) use
//! the punched path without knowing about plexus.
//!
//! The bridge binds the corridor's inner endpoint (the socket plexus punched from, now
//! released) and a local socket. Datagrams from the peer endpoint go to the application;
//! datagrams the application sends to the local socket go to the peer. Anything from
//! other sources is dropped.
//!
//! Settings (YAML or JSON):
//! ```yaml
//! local: 127.0.0.1:51821      # the bridge's local socket; point the application here
//! app: 127.0.0.1:51820        # optional: where peer datagrams go before the app has
//!                             # sent anything (a server that only listens, like WireGuard)
//! keepalive_secs: 25          # optional, 0 = off: empty datagram to the peer so the NAT
//!                             # mapping stays open while the application is quiet
//! idle_timeout_secs: 120      # stop when nothing was forwarded for this long
//! max_duration_secs: 0        # optional, 0 = no limit
//! stop_file: /run/user/1000/plexus-stop   # optional: stop when this file appears
//! ```
//! The application's address is learned from the latest datagram it sent to `local`.
//! Empty datagrams are keepalives and never forwarded (no UDP application we know
//! sends empty datagrams).

use plexus_plugin_sdk::{export_executor, Corridor, ExecutorPlugin, PluginError, RunReport};
use serde::Deserialize;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the workers look at the stop flag.
const TICK: Duration = Duration::from_millis(100);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    local: SocketAddr,
    #[serde(default)]
    app: Option<SocketAddr>,
    #[serde(default)]
    keepalive_secs: u64,
    #[serde(default = "default_idle")]
    idle_timeout_secs: u64,
    #[serde(default)]
    max_duration_secs: u64,
    #[serde(default)]
    stop_file: Option<std::path::PathBuf>,
}

fn default_idle() -> u64 {
    120
}

/// The bridge executor.
#[derive(Debug)]
pub struct UdpBridge {
    local: SocketAddr,
    app: Option<SocketAddr>,
    keepalive: Option<Duration>,
    idle: Duration,
    max: Option<Duration>,
    stop_file: Option<std::path::PathBuf>,
}

/// State shared by the two forwarding threads and the supervisor.
struct Shared {
    stop: AtomicBool,
    started: Instant,
    /// Milliseconds since `started` of the last forwarded datagram.
    last_activity_ms: AtomicU64,
    app: Mutex<Option<SocketAddr>>,
    to_peer: AtomicU64,
    to_app: AtomicU64,
    dropped: AtomicU64,
}

impl Shared {
    fn touch(&self) {
        self.last_activity_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

fn bind(addr: SocketAddr, what: &str) -> Result<UdpSocket, PluginError> {
    let s = UdpSocket::bind(addr)
        .map_err(|e| PluginError::Spawn(format!("cannot bind the {what} {addr}: {e}")))?;
    s.set_read_timeout(Some(TICK)).map_err(PluginError::from)?;
    Ok(s)
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Peer → application.
fn from_peer(inner: UdpSocket, local: UdpSocket, peer: SocketAddr, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65536];
    let mut warned = false;
    while !shared.stop.load(Ordering::Relaxed) {
        let (n, src) = match inner.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if timed_out(&e) => continue,
            Err(e) => {
                log::warn!("corridor socket: {e}");
                std::thread::sleep(TICK);
                continue;
            }
        };
        if src != peer {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            log::debug!("dropped {n} bytes from {src}: not the peer");
            continue;
        }
        if n == 0 {
            continue; // the peer bridge's keepalive
        }
        let app = *shared.app.lock().unwrap_or_else(|p| p.into_inner());
        let Some(app) = app else {
            if !warned {
                log::warn!("datagram from the peer before the application sent anything; dropped");
                warned = true;
            }
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match local.send_to(&buf[..n], app) {
            Ok(_) => {
                shared.to_app.fetch_add(1, Ordering::Relaxed);
                shared.touch();
            }
            Err(e) => log::debug!("to the application {app}: {e}"),
        }
    }
}

/// Application → peer.
fn from_app(local: UdpSocket, inner: UdpSocket, peer: SocketAddr, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65536];
    while !shared.stop.load(Ordering::Relaxed) {
        let (n, src) = match local.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if timed_out(&e) => continue,
            Err(e) => {
                // ICMP port unreachable from an app that is not up yet shows up here.
                log::debug!("local socket: {e}");
                std::thread::sleep(TICK);
                continue;
            }
        };
        {
            let mut app = shared.app.lock().unwrap_or_else(|p| p.into_inner());
            if *app != Some(src) {
                log::info!("application is at {src}");
                *app = Some(src);
            }
        }
        if n == 0 {
            continue;
        }
        match inner.send_to(&buf[..n], peer) {
            Ok(_) => {
                shared.to_peer.fetch_add(1, Ordering::Relaxed);
                shared.touch();
            }
            Err(e) => log::debug!("to the peer {peer}: {e}"),
        }
    }
}

impl ExecutorPlugin for UdpBridge {
    const NAME: &'static str = "udp-bridge";

    fn create(settings: &str) -> Result<Self, PluginError> {
        let s: Settings = serde_yaml::from_str(settings)
            .map_err(|e| PluginError::Config(format!("udp-bridge settings: {e}")))?;
        if s.local.port() == 0 {
            return Err(PluginError::Config(
                "local needs a fixed port: the application must know where to send".into(),
            ));
        }
        if s.idle_timeout_secs == 0 {
            return Err(PluginError::Config(
                "idle_timeout_secs must be at least 1".into(),
            ));
        }
        if s.keepalive_secs != 0 && s.keepalive_secs >= s.idle_timeout_secs.saturating_mul(1000) {
            return Err(PluginError::Config(
                "keepalive_secs is absurdly long".into(),
            ));
        }
        let secs = |n: u64| (n > 0).then(|| Duration::from_secs(n));
        Ok(UdpBridge {
            local: s.local,
            app: s.app,
            keepalive: secs(s.keepalive_secs),
            idle: Duration::from_secs(s.idle_timeout_secs),
            max: secs(s.max_duration_secs),
            stop_file: s.stop_file,
        })
    }

    fn run(&mut self, corridor: &Corridor) -> Result<RunReport, PluginError> {
        let inner = bind(corridor.inner, "corridor endpoint")?;
        let local = bind(self.local, "local endpoint")?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            app: Mutex::new(self.app),
            to_peer: AtomicU64::new(0),
            to_app: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let peer = corridor.peer;
        let clone = |s: &UdpSocket| s.try_clone().map_err(PluginError::from);
        let (inner2, local2, keep) = (clone(&inner)?, clone(&local)?, clone(&inner)?);
        log::info!(
            "bridging {} (peer {peer}) <-> {}",
            corridor.inner,
            self.local
        );
        let s1 = shared.clone();
        let t1 = std::thread::spawn(move || from_peer(inner, local, peer, s1));
        let s2 = shared.clone();
        let t2 = std::thread::spawn(move || from_app(local2, inner2, peer, s2));

        let mut last_keepalive = Instant::now();
        let reason = loop {
            std::thread::sleep(TICK);
            let elapsed = shared.started.elapsed();
            if self.stop_file.as_deref().is_some_and(|f| f.exists()) {
                break "stop_file appeared";
            }
            if let Some(max) = self.max {
                if elapsed >= max {
                    break "max_duration_secs reached";
                }
            }
            let idle_for = elapsed.saturating_sub(Duration::from_millis(
                shared.last_activity_ms.load(Ordering::Relaxed),
            ));
            if idle_for >= self.idle {
                break "idle_timeout_secs reached";
            }
            if let Some(every) = self.keepalive {
                if last_keepalive.elapsed() >= every {
                    if let Err(e) = keep.send_to(&[], peer) {
                        log::debug!("keepalive: {e}");
                    }
                    last_keepalive = Instant::now();
                }
            }
        };
        shared.stop.store(true, Ordering::Relaxed);
        let panicked = t1.join().is_err() | t2.join().is_err();
        if panicked {
            return Err(PluginError::Failed("a forwarding thread panicked".into()));
        }
        let output = format!(
            "udp-bridge stopped ({reason}): {} datagrams to the peer, {} to the application, {} dropped",
            shared.to_peer.load(Ordering::Relaxed),
            shared.to_app.load(Ordering::Relaxed),
            shared.dropped.load(Ordering::Relaxed),
        );
        log::info!("{output}");
        Ok(RunReport {
            status: None,
            output,
        })
    }
}

export_executor!(UdpBridge);

#[cfg(test)]
mod tests;
