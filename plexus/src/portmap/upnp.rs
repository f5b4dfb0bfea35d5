//! UPnP-IGD through `igd-next` (SSDP discovery, then SOAP over HTTP to the router).
//!
//! igd-next's blocking calls bound the search but not every HTTP exchange, so each call
//! runs on its own thread and the caller waits at most its deadline; a call that overruns
//! is abandoned (attohttpc's own 30 s timeouts end it later).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::mpsc;
use std::time::Duration;

use igd_next::{PortMappingProtocol, SearchOptions};

use super::{PortmapError, Protocol};

/// What plexus keeps of a discovered gateway (igd-next's type stays inside this module).
#[derive(Debug, Clone)]
pub(super) struct Gateway(igd_next::Gateway);

const DESCRIPTION: &str = "plexus";

/// Runs `f` on a thread and waits for it until `timeout`.
fn bounded<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, PortmapError> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("plexus-upnp".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| PortmapError::Io(format!("cannot start the UPnP thread: {e}")))?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(reason)) => Err(PortmapError::Refused {
            protocol: Protocol::Upnp,
            reason: format!("{what}: {reason}"),
        }),
        Err(_) => Err(PortmapError::NoAnswer {
            protocol: Protocol::Upnp,
            detail: format!("{what} took longer than {} ms", timeout.as_millis()),
        }),
    }
}

/// SSDP search from `local` (so the multicast leaves on the LAN toward `gateway`), and a
/// check that the device found is the default gateway: a mapping on another box of the
/// LAN would not be on the path to the internet.
pub(super) fn discover(
    local: Ipv4Addr,
    gateway: Ipv4Addr,
    timeout: Duration,
) -> Result<Gateway, PortmapError> {
    let opts = SearchOptions {
        bind_addr: SocketAddr::from((local, 0)),
        timeout: Some(timeout),
        single_search_timeout: Some(timeout),
        ..Default::default()
    };
    const SILENT: &str = "no SSDP answer";
    let gw = match bounded(
        timeout + Duration::from_millis(100),
        "SSDP search",
        move || {
            igd_next::search_gateway(opts).map_err(|e| match e {
                igd_next::SearchError::NoResponseWithinTimeout => SILENT.to_string(),
                igd_next::SearchError::IoError(ref io)
                    if matches!(
                        io.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    SILENT.to_string()
                }
                e => e.to_string(),
            })
        },
    ) {
        Ok(gw) => gw,
        Err(PortmapError::Refused { reason, .. }) if reason.ends_with(SILENT) => {
            return Err(PortmapError::NoAnswer {
                protocol: Protocol::Upnp,
                detail: SILENT.into(),
            })
        }
        Err(e) => return Err(e),
    };
    if gw.addr.ip() != IpAddr::V4(gateway) {
        return Err(PortmapError::Refused {
            protocol: Protocol::Upnp,
            reason: format!(
                "the UPnP device that answered is {}, not the default gateway {gateway}",
                gw.addr.ip()
            ),
        });
    }
    Ok(Gateway(gw))
}

impl Gateway {
    /// GetExternalIPAddress.
    pub(super) fn external_ip(&self, timeout: Duration) -> Result<IpAddr, PortmapError> {
        let gw = self.0.clone();
        bounded(timeout, "GetExternalIPAddress", move || {
            gw.get_external_ip().map_err(|e| e.to_string())
        })
    }

    /// AddPortMapping for `internal`, asking for the same external port first and for
    /// any port (AddAnyPortMapping) when that one is taken. Returns the external port.
    pub(super) fn add(
        &self,
        internal: SocketAddrV4,
        lease: Duration,
        timeout: Duration,
    ) -> Result<u16, PortmapError> {
        let gw = self.0.clone();
        let secs = lease_secs(lease);
        bounded(timeout, "AddPortMapping", move || {
            let local = SocketAddr::V4(internal);
            match gw.add_port(
                PortMappingProtocol::UDP,
                internal.port(),
                local,
                secs,
                DESCRIPTION,
            ) {
                Ok(()) => Ok(internal.port()),
                Err(same) => gw
                    .add_any_port(PortMappingProtocol::UDP, local, secs, DESCRIPTION)
                    .map_err(|any| format!("{same}; any port: {any}")),
            }
        })
    }

    /// Renews a mapping (UPnP has no renew: the same AddPortMapping again).
    pub(super) fn renew(
        &self,
        external_port: u16,
        internal: SocketAddrV4,
        lease: Duration,
        timeout: Duration,
    ) -> Result<(), PortmapError> {
        let gw = self.0.clone();
        let secs = lease_secs(lease);
        bounded(timeout, "AddPortMapping (renew)", move || {
            gw.add_port(
                PortMappingProtocol::UDP,
                external_port,
                SocketAddr::V4(internal),
                secs,
                DESCRIPTION,
            )
            .map_err(|e| e.to_string())
        })
    }

    /// DeletePortMapping.
    pub(super) fn remove(&self, external_port: u16, timeout: Duration) -> Result<(), PortmapError> {
        let gw = self.0.clone();
        bounded(timeout, "DeletePortMapping", move || {
            gw.remove_port(PortMappingProtocol::UDP, external_port)
                .map_err(|e| e.to_string())
        })
    }
}

/// Whole seconds, at least 1 (0 means "forever" in UPnP, which plexus never asks for).
fn lease_secs(lease: Duration) -> u32 {
    u32::try_from(lease.as_secs()).unwrap_or(u32::MAX).max(1)
}
