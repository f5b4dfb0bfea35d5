//! Router port mapping: ask the home router for a UDP mapping of the corridor port with
//! PCP (RFC 6887), NAT-PMP (RFC 6886) or UPnP-IGD, so that a NAT which would otherwise
//! punch badly (a symmetric one) forwards one fixed external endpoint to us. With the
//! mapping held, this side behaves like a host without NAT for that port.
//!
//! ```no_run
//! use std::time::Duration;
//! # fn main() -> Result<(), plexus::portmap::PortmapError> {
//! let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
//! let m = plexus::portmap::map_udp(
//!     socket.local_addr().expect("local"),
//!     Duration::from_secs(600),
//!     Duration::from_millis(500),
//! )?;
//! println!("reachable at {} via {}", m.external, m.protocol);
//! let held = plexus::portmap::hold(m); // renewed in the background, removed on drop
//! # drop(held);
//! # Ok(())
//! # }
//! ```
//!
//! PCP and NAT-PMP are small fixed-layout UDP messages ([`wire`]); UPnP-IGD (SSDP, HTTP,
//! SOAP, XML) goes through the `igd-next` crate. Everything a router says is checked:
//! replies must match the request, and an external address that is itself private
//! means the router sits behind another NAT (double NAT, carrier-grade NAT), so its
//! mapping is useless: [`PortmapError::BehindAnotherNat`].

pub mod wire;

mod upnp;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wire::WireError;

/// A port mapping protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Port Control Protocol, RFC 6887 (MAP opcode).
    Pcp,
    /// NAT Port Mapping Protocol, RFC 6886.
    NatPmp,
    /// UPnP Internet Gateway Device (WANIPConnection).
    Upnp,
}

impl Protocol {
    /// Every protocol, in the order [`map_udp`] tries them (newest and cheapest first).
    pub const ALL: [Protocol; 3] = [Protocol::Pcp, Protocol::NatPmp, Protocol::Upnp];

    /// The name shown to people and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Pcp => "PCP",
            Protocol::NatPmp => "NAT-PMP",
            Protocol::Upnp => "UPnP-IGD",
        }
    }

    /// The same protocol in the rendezvous message's vocabulary.
    pub fn wire(self) -> crate::rendezvous::PortMapping {
        match self {
            Protocol::Pcp => crate::rendezvous::PortMapping::Pcp,
            Protocol::NatPmp => crate::rendezvous::PortMapping::NatPmp,
            Protocol::Upnp => crate::rendezvous::PortMapping::Upnp,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a mapping could not be made, renewed or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortmapError {
    /// No default IPv4 gateway to ask.
    NoGateway(String),
    /// Only IPv4 is mapped (an IPv6 host has no NAT to map through).
    NotIpv4(SocketAddr),
    /// The router did not answer this protocol in time (or its port is closed).
    NoAnswer {
        /// The protocol asked.
        protocol: Protocol,
        /// What was seen: a timeout, a closed port.
        detail: String,
    },
    /// The router answered with an error (result code, SOAP fault).
    Refused {
        /// The protocol asked.
        protocol: Protocol,
        /// The router's reason.
        reason: String,
    },
    /// The reply was malformed (wrong length, version, or not for our request).
    BadReply {
        /// The protocol asked.
        protocol: Protocol,
        /// What was wrong with it.
        reason: String,
    },
    /// The router's external address is private: it is behind another NAT, so a mapping
    /// on it is not reachable from the internet. The mapping (if made) was removed.
    BehindAnotherNat {
        /// The protocol that reported it.
        protocol: Protocol,
        /// The private address the router reported.
        external: IpAddr,
    },
    /// A local socket failed.
    Io(String),
    /// Every protocol tried failed; what each one said, in order.
    AllFailed(Vec<PortmapError>),
}

impl PortmapError {
    /// True when some router answered but is behind another NAT (worth logging apart:
    /// port mapping cannot help there, whatever the settings).
    pub fn behind_another_nat(&self) -> bool {
        match self {
            PortmapError::BehindAnotherNat { .. } => true,
            PortmapError::AllFailed(v) => v.iter().any(PortmapError::behind_another_nat),
            _ => false,
        }
    }
}

impl fmt::Display for PortmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortmapError::NoGateway(why) => write!(
                f,
                "no default IPv4 gateway to ask for a port mapping ({why})"
            ),
            PortmapError::NotIpv4(a) => write!(f, "port mapping is for IPv4 sockets only, not {a}"),
            PortmapError::NoAnswer { protocol, detail } => {
                write!(f, "{protocol}: no answer ({detail})")
            }
            PortmapError::Refused { protocol, reason } => {
                write!(f, "{protocol}: refused: {reason}")
            }
            PortmapError::BadReply { protocol, reason } => {
                write!(f, "{protocol}: bad reply: {reason}")
            }
            PortmapError::BehindAnotherNat { protocol, external } => write!(
                f,
                "{protocol}: the router's external address {external} is private, so another NAT \
                 sits in front of it and a mapping there is unreachable from outside"
            ),
            PortmapError::Io(e) => write!(f, "port mapping socket error: {e}"),
            PortmapError::AllFailed(v) => {
                f.write_str("no router port mapping: ")?;
                for (i, e) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for PortmapError {}

/// How to talk to the router again about this mapping.
#[derive(Debug, Clone)]
enum Handle {
    Pcp { nonce: [u8; 12] },
    NatPmp,
    Upnp(upnp::Gateway),
}

/// A UDP mapping on the router. Dropping it leaves the mapping to expire at the end of
/// its lease; [`Mapping::remove`] (or [`hold`]) removes it at once.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The protocol that made it.
    pub protocol: Protocol,
    /// Where the internet reaches us (the router's external address and port).
    pub external: SocketAddr,
    /// The mapped local socket address (a concrete LAN address, never 0.0.0.0).
    pub internal: SocketAddr,
    /// The lease the router granted; the mapping ends after it unless renewed.
    pub lease: Duration,
    /// The router asked.
    pub gateway: Ipv4Addr,
    timeout: Duration,
    handle: Handle,
}

/// Asks the default gateway for a UDP mapping of `internal` (the corridor socket's local
/// address; 0.0.0.0 is replaced by the address that reaches the gateway), asking for the
/// same external port and accepting another, for `lease`. Tries PCP, NAT-PMP and
/// UPnP-IGD in turn, each bounded by `timeout`; the error says what each one said.
pub fn map_udp(
    internal: SocketAddr,
    lease: Duration,
    timeout: Duration,
) -> Result<Mapping, PortmapError> {
    map_udp_with(&Protocol::ALL, internal, lease, timeout)
}

/// [`map_udp`] with the protocols to try, in order (one of them to force it).
pub fn map_udp_with(
    protocols: &[Protocol],
    internal: SocketAddr,
    lease: Duration,
    timeout: Duration,
) -> Result<Mapping, PortmapError> {
    let SocketAddr::V4(v4) = internal else {
        return Err(PortmapError::NotIpv4(internal));
    };
    let gateway = default_gateway()?;
    let local = SocketAddrV4::new(local_ip_toward(*v4.ip(), gateway)?, v4.port());
    let mut errors = Vec::new();
    for &p in protocols {
        let r = match p {
            Protocol::Pcp => map_pcp(local, gateway, lease, timeout),
            Protocol::NatPmp => map_natpmp(local, gateway, lease, timeout),
            Protocol::Upnp => map_upnp(local, gateway, lease, timeout),
        };
        match r.and_then(check_external) {
            Ok(m) => {
                log::info!(
                    "router port mapping via {p}: {} -> {}, lease {:?}",
                    m.external,
                    m.internal,
                    m.lease
                );
                return Ok(m);
            }
            Err(e) => {
                log::debug!("router port mapping via {p} failed: {e}");
                errors.push(e);
            }
        }
    }
    Err(PortmapError::AllFailed(errors))
}

/// A private external address makes the mapping useless: remove it and say why.
fn check_external(m: Mapping) -> Result<Mapping, PortmapError> {
    let ip = m.external.ip();
    if ip.is_unspecified() {
        // RFC 6886 §3.2: 0.0.0.0 means the router has no external address (WAN down).
        let protocol = m.protocol;
        let _ = m.remove();
        return Err(PortmapError::Refused {
            protocol,
            reason: "the router has no external address (is its uplink down?)".into(),
        });
    }
    if is_private(ip) {
        let protocol = m.protocol;
        if let Err(e) = m.remove() {
            log::debug!("removing the useless mapping failed: {e}");
        }
        return Err(PortmapError::BehindAnotherNat {
            protocol,
            external: ip,
        });
    }
    Ok(m)
}

/// Addresses that cannot be reached from the internet: RFC 1918, shared (CGNAT, RFC
/// 6598), loopback, link-local, "this network". Documentation ranges count as public
/// (the lab's internet uses them).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xfe00) == 0xfc00
        }
    }
}

impl Mapping {
    /// Asks the router to extend the mapping by another lease (same external port).
    pub fn renew(&mut self) -> Result<(), PortmapError> {
        let local = self.local_v4();
        let secs = lease_secs(self.lease);
        match &self.handle {
            Handle::Pcp { nonce } => {
                let r = pcp_map(
                    local,
                    self.gateway,
                    *nonce,
                    self.external.port(),
                    secs,
                    self.timeout,
                )?;
                self.external = SocketAddr::new(r.external_ip, r.external_port);
                self.lease = Duration::from_secs(r.lifetime.into());
            }
            Handle::NatPmp => {
                let r = natpmp_map(
                    local,
                    self.gateway,
                    self.external.port(),
                    secs,
                    self.timeout,
                )?;
                self.external.set_port(r.external_port);
                self.lease = Duration::from_secs(r.lifetime.into());
            }
            Handle::Upnp(gw) => gw.renew(self.external.port(), local, self.lease, self.timeout)?,
        }
        if self.lease.is_zero() {
            return Err(PortmapError::Refused {
                protocol: self.protocol,
                reason: "the router granted a lease of 0 s".into(),
            });
        }
        Ok(())
    }

    /// Removes the mapping from the router.
    pub fn remove(self) -> Result<(), PortmapError> {
        let local = self.local_v4();
        match &self.handle {
            Handle::Pcp { nonce } => {
                pcp_map(local, self.gateway, *nonce, 0, 0, self.timeout).map(|_| ())
            }
            // RFC 6886 §3.4: a delete asks for external port 0 and lifetime 0.
            Handle::NatPmp => natpmp_map(local, self.gateway, 0, 0, self.timeout).map(|_| ()),
            Handle::Upnp(gw) => gw.remove(self.external.port(), self.timeout),
        }
    }

    fn local_v4(&self) -> SocketAddrV4 {
        match self.internal {
            SocketAddr::V4(a) => a,
            // Only IPv4 mappings are ever made (map_udp_with checks).
            SocketAddr::V6(a) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, a.port()),
        }
    }
}

/// A mapping kept alive: renewed on a background thread at half its lease, removed when
/// the guard drops (bounded by the mapping's timeout).
pub struct Held {
    current: Arc<Mutex<Mapping>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Held {
    /// The mapping as last granted (the external port can change on renewal).
    pub fn mapping(&self) -> Mapping {
        self.current
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Held")
            .field("mapping", &self.mapping())
            .finish()
    }
}

/// Keeps `m` alive until the returned guard drops, then removes it.
pub fn hold(m: Mapping) -> Held {
    let current = Arc::new(Mutex::new(m));
    let (tx, rx) = mpsc::channel::<()>();
    let shared = Arc::clone(&current);
    let thread = std::thread::Builder::new()
        .name("plexus-portmap".into())
        .spawn(move || renew_loop(&shared, &rx))
        .map_err(|e| log::warn!("cannot start the port mapping renewal thread: {e}"))
        .ok();
    Held {
        current,
        stop: Some(tx),
        thread,
    }
}

fn renew_loop(shared: &Mutex<Mapping>, stop: &mpsc::Receiver<()>) {
    let snapshot = || {
        shared
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    };
    let mut wait = snapshot().lease / 2;
    loop {
        match stop.recv_timeout(wait.max(Duration::from_millis(500))) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let mut m = snapshot();
                match m.renew() {
                    Ok(()) => {
                        log::debug!(
                            "renewed {} mapping {} for {:?}",
                            m.protocol,
                            m.external,
                            m.lease
                        );
                        wait = m.lease / 2;
                        if let Ok(mut g) = shared.lock() {
                            *g = m;
                        }
                    }
                    Err(e) => {
                        // Try again soon; the mapping still has half its lease.
                        log::warn!("renewing the router port mapping failed: {e}");
                        wait = (m.lease / 8).min(Duration::from_secs(5));
                    }
                }
            }
            // Asked to stop, or the guard is gone: remove the mapping.
            _ => {
                let m = snapshot();
                let (p, ext) = (m.protocol, m.external);
                match m.remove() {
                    Ok(()) => log::debug!("removed {p} mapping {ext}"),
                    Err(e) => log::warn!("removing the router port mapping {ext} failed: {e}"),
                }
                return;
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Which protocols the default gateway answers and the external address each reports
/// (PCP: a throwaway 60 s mapping, deleted at once). All three run in parallel, each
/// bounded by `timeout`. For `plexus nat`.
pub fn probe(timeout: Duration) -> Vec<(Protocol, Result<IpAddr, String>)> {
    let gateway = match default_gateway() {
        Ok(g) => g,
        Err(e) => {
            return Protocol::ALL
                .iter()
                .map(|&p| (p, Err(e.to_string())))
                .collect()
        }
    };
    let local = match local_ip_toward(Ipv4Addr::UNSPECIFIED, gateway) {
        Ok(l) => l,
        Err(e) => {
            return Protocol::ALL
                .iter()
                .map(|&p| (p, Err(e.to_string())))
                .collect()
        }
    };
    let threads: Vec<_> = Protocol::ALL
        .iter()
        .map(|&p| {
            let t = std::thread::Builder::new()
                .name("plexus-portmap-probe".into())
                .spawn(move || probe_one(p, local, gateway, timeout));
            (p, t)
        })
        .collect();
    threads
        .into_iter()
        .map(|(p, t)| {
            let r = match t {
                Ok(t) => t
                    .join()
                    .unwrap_or_else(|_| Err(format!("{p}: the probe failed"))),
                Err(e) => Err(format!("{p}: cannot start a probe thread: {e}")),
            };
            (p, r)
        })
        .collect()
}

fn probe_one(
    p: Protocol,
    local: Ipv4Addr,
    gateway: Ipv4Addr,
    timeout: Duration,
) -> Result<IpAddr, String> {
    let ip = match p {
        Protocol::Pcp => {
            let sock = UdpSocket::bind((local, 0)).map_err(|e| e.to_string())?;
            let port = sock.local_addr().map_err(|e| e.to_string())?.port();
            let m = map_pcp(
                SocketAddrV4::new(local, port),
                gateway,
                Duration::from_secs(60),
                timeout,
            )
            .map_err(|e| e.to_string())?;
            let ip = m.external.ip();
            if let Err(e) = m.remove() {
                log::debug!("removing the PCP probe mapping failed: {e}");
            }
            ip
        }
        Protocol::NatPmp => {
            let b = wire::encode_natpmp_address();
            IpAddr::V4(
                transact(
                    Protocol::NatPmp,
                    local,
                    gateway,
                    &b,
                    timeout,
                    wire::decode_natpmp_address,
                )
                .map_err(|e| e.to_string())?,
            )
        }
        Protocol::Upnp => {
            let deadline = Instant::now() + timeout;
            let gw = upnp::discover(local, gateway, timeout).map_err(|e| e.to_string())?;
            gw.external_ip(remaining(deadline))
                .map_err(|e| e.to_string())?
        }
    };
    if ip.is_unspecified() {
        return Err(format!("{p}: the router has no external address"));
    }
    if is_private(ip) {
        return Err(PortmapError::BehindAnotherNat {
            protocol: p,
            external: ip,
        }
        .to_string());
    }
    Ok(ip)
}

/// The default IPv4 gateway, from the kernel's routing table (Linux `/proc/net/route`).
pub fn default_gateway() -> Result<Ipv4Addr, PortmapError> {
    // thread-self: the calling thread's network namespace (tests move threads into
    // namespaces; /proc/net follows the main thread).
    let table = std::fs::read_to_string("/proc/thread-self/net/route")
        .or_else(|_| std::fs::read_to_string("/proc/net/route"))
        .map_err(|e| PortmapError::NoGateway(format!("cannot read /proc/net/route: {e}")))?;
    parse_route_table(&table).ok_or_else(|| PortmapError::NoGateway("no default route".into()))
}

/// The first default route with a gateway in `/proc/net/route` text (addresses are the
/// kernel's in-memory words printed in hex, so native byte order).
fn parse_route_table(table: &str) -> Option<Ipv4Addr> {
    const RTF_GATEWAY: u32 = 0x2;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dest, gw, flags, mask) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(7)?);
        let flags = u32::from_str_radix(flags, 16).ok()?;
        if *dest != "00000000" || *mask != "00000000" || flags & RTF_GATEWAY == 0 {
            return None;
        }
        let gw = u32::from_str_radix(gw, 16).ok()?;
        Some(Ipv4Addr::from(gw.to_ne_bytes()))
    })
}

/// `ip` itself, or (for 0.0.0.0) the local address the kernel uses toward `gateway`.
fn local_ip_toward(ip: Ipv4Addr, gateway: Ipv4Addr) -> Result<Ipv4Addr, PortmapError> {
    if !ip.is_unspecified() {
        return Ok(ip);
    }
    let s =
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| PortmapError::Io(e.to_string()))?;
    s.connect((gateway, wire::SERVER_PORT))
        .map_err(|e| PortmapError::NoGateway(format!("no route to the gateway {gateway}: {e}")))?;
    match s.local_addr() {
        Ok(SocketAddr::V4(a)) => Ok(*a.ip()),
        Ok(other) => Err(PortmapError::NotIpv4(other)),
        Err(e) => Err(PortmapError::Io(e.to_string())),
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

fn lease_secs(lease: Duration) -> u32 {
    u32::try_from(lease.as_secs()).unwrap_or(u32::MAX).max(1)
}

fn wire_error(protocol: Protocol, e: WireError) -> PortmapError {
    match e {
        WireError::Result(..) => PortmapError::Refused {
            protocol,
            reason: e.to_string(),
        },
        WireError::Version(v) if protocol == Protocol::Pcp && v == wire::NATPMP_VERSION => {
            PortmapError::Refused {
                protocol,
                reason: "the router speaks only NAT-PMP".into(),
            }
        }
        _ => PortmapError::BadReply {
            protocol,
            reason: e.to_string(),
        },
    }
}

/// One request/response exchange with the router on port 5351, from `local`:
/// retransmitted at 250 ms, 500 ms, 1 s… (RFC 6886 §3.1) until `timeout`. Replies that
/// are not for this request are skipped; anything else decides.
fn transact<T>(
    protocol: Protocol,
    local: Ipv4Addr,
    gateway: Ipv4Addr,
    req: &[u8],
    timeout: Duration,
    decode: impl Fn(&[u8]) -> Result<T, WireError>,
) -> Result<T, PortmapError> {
    let io = |e: std::io::Error| PortmapError::Io(format!("{protocol}: {e}"));
    let sock = UdpSocket::bind((local, 0)).map_err(io)?;
    // Connected: the kernel drops datagrams from anyone but the gateway's port 5351.
    sock.connect((gateway, wire::SERVER_PORT)).map_err(io)?;
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(250);
    let mut buf = [0u8; wire::PCP_MAX_LEN + 4];
    loop {
        sock.send(req).map_err(io)?;
        let resend_at = (Instant::now() + interval).min(deadline);
        interval *= 2;
        loop {
            let left = remaining(resend_at);
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left)).map_err(io)?;
            match sock.recv(&mut buf) {
                Ok(n) => match decode(&buf[..n]) {
                    Ok(v) => return Ok(v),
                    Err(WireError::Mismatch(what)) => {
                        log::debug!("{protocol}: skipping a reply not for this request ({what})");
                    }
                    Err(e) => return Err(wire_error(protocol, e)),
                },
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(PortmapError::NoAnswer {
                        protocol,
                        detail: format!("port {} on {gateway} is closed", wire::SERVER_PORT),
                    })
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(io(e)),
            }
        }
        if remaining(deadline).is_zero() {
            return Err(PortmapError::NoAnswer {
                protocol,
                detail: format!("{gateway} was silent for {} ms", timeout.as_millis()),
            });
        }
    }
}

fn pcp_map(
    local: SocketAddrV4,
    gateway: Ipv4Addr,
    nonce: [u8; 12],
    suggested_port: u16,
    lifetime: u32,
    timeout: Duration,
) -> Result<wire::PcpMapResponse, PortmapError> {
    let req = wire::PcpMapRequest {
        client: *local.ip(),
        nonce,
        internal_port: local.port(),
        suggested_port,
        lifetime,
    };
    transact(
        Protocol::Pcp,
        *local.ip(),
        gateway,
        &req.encode(),
        timeout,
        |b| wire::decode_pcp_map(b, &req),
    )
}

fn map_pcp(
    local: SocketAddrV4,
    gateway: Ipv4Addr,
    lease: Duration,
    timeout: Duration,
) -> Result<Mapping, PortmapError> {
    let mut nonce = [0u8; 12];
    openssl::rand::rand_bytes(&mut nonce)
        .map_err(|e| PortmapError::Io(format!("random nonce: {e}")))?;
    let r = pcp_map(
        local,
        gateway,
        nonce,
        local.port(),
        lease_secs(lease),
        timeout,
    )?;
    Ok(Mapping {
        protocol: Protocol::Pcp,
        external: SocketAddr::new(r.external_ip, r.external_port),
        internal: SocketAddr::V4(local),
        lease: Duration::from_secs(r.lifetime.into()),
        gateway,
        timeout,
        handle: Handle::Pcp { nonce },
    })
}

fn natpmp_map(
    local: SocketAddrV4,
    gateway: Ipv4Addr,
    suggested_port: u16,
    lifetime: u32,
    timeout: Duration,
) -> Result<wire::NatPmpMapResponse, PortmapError> {
    let req = wire::encode_natpmp_map(local.port(), suggested_port, lifetime);
    transact(Protocol::NatPmp, *local.ip(), gateway, &req, timeout, |b| {
        wire::decode_natpmp_map(b, local.port())
    })
}

fn map_natpmp(
    local: SocketAddrV4,
    gateway: Ipv4Addr,
    lease: Duration,
    timeout: Duration,
) -> Result<Mapping, PortmapError> {
    let deadline = Instant::now() + timeout;
    let r = natpmp_map(local, gateway, local.port(), lease_secs(lease), timeout)?;
    let mut m = Mapping {
        protocol: Protocol::NatPmp,
        external: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), r.external_port),
        internal: SocketAddr::V4(local),
        lease: Duration::from_secs(r.lifetime.into()),
        gateway,
        timeout,
        handle: Handle::NatPmp,
    };
    // The mapping reply has no address: ask for it (and undo the mapping if that fails).
    let addr = transact(
        Protocol::NatPmp,
        *local.ip(),
        gateway,
        &wire::encode_natpmp_address(),
        remaining(deadline).max(Duration::from_millis(250)),
        wire::decode_natpmp_address,
    );
    match addr {
        Ok(ip) => {
            m.external.set_ip(IpAddr::V4(ip));
            Ok(m)
        }
        Err(e) => {
            let _ = m.remove();
            Err(e)
        }
    }
}

fn map_upnp(
    local: SocketAddrV4,
    gateway: Ipv4Addr,
    lease: Duration,
    timeout: Duration,
) -> Result<Mapping, PortmapError> {
    let deadline = Instant::now() + timeout;
    let gw = upnp::discover(*local.ip(), gateway, timeout)?;
    let ip = gw.external_ip(remaining(deadline))?;
    let port = gw.add(
        local,
        lease,
        remaining(deadline).max(Duration::from_millis(250)),
    )?;
    Ok(Mapping {
        protocol: Protocol::Upnp,
        external: SocketAddr::new(ip, port),
        internal: SocketAddr::V4(local),
        lease: Duration::from_secs(lease_secs(lease).into()),
        gateway,
        timeout,
        handle: Handle::Upnp(gw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_table_default_gateway() {
        let t =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000E0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                 eth0\t00000000\t01000E0A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        // As a little-endian kernel prints 10.14.0.1.
        #[cfg(target_endian = "little")]
        assert_eq!(parse_route_table(t), Some(Ipv4Addr::new(10, 14, 0, 1)));
        assert_eq!(parse_route_table("Iface\n"), None);
        // A default route without a gateway (point-to-point) is no router to ask.
        assert_eq!(
            parse_route_table("h\nppp0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\n"),
            None
        );
    }

    #[test]
    fn private_external_addresses() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["198.51.100.70", "8.8.8.8", "100.128.0.1", "203.0.113.3"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn errors_name_each_protocol() {
        let e = PortmapError::AllFailed(vec![
            PortmapError::NoAnswer {
                protocol: Protocol::Pcp,
                detail: "x".into(),
            },
            PortmapError::BehindAnotherNat {
                protocol: Protocol::Upnp,
                external: "10.0.0.1".parse().unwrap(),
            },
        ]);
        let s = e.to_string();
        assert!(
            s.contains("PCP: no answer")
                && s.contains("UPnP-IGD: the router's external address 10.0.0.1"),
            "{s}"
        );
        assert!(e.behind_another_nat());
    }
}
