//! One invitation, end to end: discovery, the sealed rendezvous, the punch, the
//! authenticated handshake and the executor (DESIGN.md "The flow").
//!
//! The pieces live in their own layers; this module only sequences them around the one
//! UDP socket whose mapped endpoint goes into the rendezvous message (the socket must
//! not change between the STUN binding and the handshake, or the NAT mapping changes
//! with it).
//!
//! Inviter: discover the NAT's mapping while binding the corridor socket and asking
//! STUN for its mapping (filtering and hairpin go on being measured in the background
//! and are only logged) → seal + send invite → wait for the accept (refreshing the
//! mapping) → handshake → release the socket → run the executor.
//!
//! Acceptor: discover NAT once → wait for an invite → for each: bind → STUN binding →
//! low-TTL punch toward the inviter → seal + send accept → handshake → executor, while
//! the main loop goes back to waiting.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};

use crate::executor::{Corridor, ExecError, ExecReport, Executor};
use crate::mediator::{Mediator, MediatorError, Outcome};
use crate::nat::{self, pair, Behaviour, NatError, NatReport};
use crate::punch::{self, hops, Handshake, HopsConfig, PunchHops, Role, Secrets};
use crate::rendezvous::{
    Accept, Body, Decline, Envelope, Invite, Message, MessageError, Method, NatFacts, OpenError,
    SealError, Side,
};
use crate::stun::{self, StunError};

mod accept;
mod family;
mod invite;
mod wait;

pub use accept::{accept, accept_one, ExecutorFactory};
pub use invite::{connect_invite, invite};
use wait::wait_for;
pub use wait::Peer;

/// How long the inviter waits for a mediator answer before refreshing its NAT mapping.
/// Linux conntrack forgets an unreplied UDP flow after 30 s; home routers vary.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(15);

/// How long an acceptor's corridor waits, beyond the handshake timeout, for its accept
/// to reach the inviter: mail on a lossy path can take tens of seconds (TCP backoff).
const ACCEPT_DELIVERY: Duration = Duration::from_secs(60);

/// Pause after the mediator lost its channel, doubling up to the maximum.
const RECEIVE_BACKOFF_START: Duration = Duration::from_millis(500);
const RECEIVE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How often a waiting acceptor repeats its low-TTL punch, well inside the 30 s after
/// which Linux conntrack forgets an unanswered UDP flow (home routers vary, some less).
const REPUNCH_EVERY: Duration = Duration::from_secs(10);

/// Everything a session needs besides its components (resolved from profile and flags).
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// STUN servers, first one used for the corridor socket's binding.
    pub stun: Vec<SocketAddr>,
    /// Where the corridor socket of this address's family binds; the other family binds
    /// its unspecified address with the same port.
    pub bind: SocketAddr,
    /// The address families tried (each needs a STUN server of its family in `stun`).
    pub family: nat::FamilyChoice,
    /// Punch TTL (acceptor only).
    pub punch_hops: PunchHops,
    /// Ask the router for a mapping of the corridor port ([`crate::portmap`]).
    pub port_mapping: bool,
    /// Per-probe deadline of NAT discovery and the STUN binding.
    pub discovery_timeout: Duration,
    /// How long the inviter waits for the accept; how long an acceptor waits in total
    /// (`None`: forever).
    pub rendezvous_timeout: Option<Duration>,
    /// Overall handshake timeout.
    pub handshake_timeout: Duration,
    /// The peer's address on the mediator's channel (its mail address, a plugin address).
    pub peer_address: String,
    /// Accept mode: most corridors (handshake and executor) running at once; an invite
    /// beyond that is refused, so an authenticated but misbehaving peer cannot make the
    /// acceptor spawn without bound.
    pub max_corridors: usize,
    /// Sockets this side opens when it is the hard side of a birthday pair; as acceptor,
    /// 0 turns port prediction off (such pairs are relayed or declined).
    pub birthday_sockets: u16,
    /// Probe budget and rate when this side is the easy side of a birthday pair.
    pub probe_limits: punch::birthday::ProbeLimits,
    /// The TURN relay: when to use it and the server (default: never, none).
    pub relay: crate::relay::RelaySettings,
}

/// Default for [`SessionSettings::max_corridors`].
pub const DEFAULT_MAX_CORRIDORS: usize = crate::defaults::MAX_CORRIDORS;

/// Where time went, for the progress lines and the benchmark.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// NAT discovery (and, for the acceptor, the hop probe and punch).
    pub discovery: Duration,
    /// Sealing and handing our message to the mediator.
    pub send: Duration,
    /// From our message sent (inviter) or the session start (acceptor) to the peer's
    /// message opened.
    pub wait: Duration,
    /// The UDP handshake.
    pub handshake: Duration,
    /// From the start to the corridor being open.
    pub total: Duration,
}

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "discovery {} ms, send {} ms, wait {} ms, handshake {} ms, total {} ms",
            self.discovery.as_millis(),
            self.send.as_millis(),
            self.wait.as_millis(),
            self.handshake.as_millis(),
            self.total.as_millis()
        )
    }
}

/// A finished session.
#[derive(Debug)]
pub struct Finished {
    /// What the executor was given.
    pub corridor: Corridor,
    /// Where the time went.
    pub timeline: Timeline,
    /// The executor's result.
    pub exec: Result<ExecReport, ExecError>,
}

/// Errors of a session; each says what failed and what to try. A failure of a lower
/// layer is kept as it came, typed, and returned by `source()`.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer declined the invite: no method connects the pair with the settings of
    /// both sides (its reason).
    Declined(String),
    /// This acceptor found no method for the pair and declined the invite (the reason).
    NoMethod(String),
    /// NAT discovery failed.
    Discovery(NatError),
    /// The corridor socket's STUN binding failed, so its public endpoint is unknown.
    Binding {
        /// The STUN server asked.
        server: SocketAddr,
        /// Why it failed.
        source: StunError,
    },
    /// The corridor socket could not be bound.
    Bind {
        /// The address it was to be bound to.
        addr: SocketAddr,
        /// The system's reason.
        source: io::Error,
    },
    /// A thread of the session could not be started.
    Thread {
        /// What the thread was for.
        what: &'static str,
        /// The system's reason.
        source: io::Error,
    },
    /// A part of the session panicked (a bug; named here).
    Panicked(&'static str),
    /// Our invite or accept could not be built (the format refuses an endpoint).
    Message(MessageError),
    /// The mediator failed.
    Mediator(MediatorError),
    /// Our message could not be sealed.
    Seal(SealError),
    /// No answer from the peer in time.
    RendezvousTimeout(Duration),
    /// The UDP handshake failed.
    Punch(punch::PunchError),
    /// The peer's message names an endpoint no real peer can have (unspecified,
    /// loopback, multicast, broadcast, port 0).
    BadEndpoint(SocketAddr),
    /// The peer's invite names no endpoint to punch toward.
    NoEndpoint,
    /// The settings cannot work (named in the message).
    Settings(String),
    /// The TURN relay failed (allocation, permission, forwarding).
    Relay(crate::relay::RelayError),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Declined(m) => write!(f, "the peer declined the invite: {m}"),
            SessionError::NoMethod(m) => write!(f, "no way to connect this pair: {m}"),
            SessionError::Discovery(e) => write!(f, "STUN: {e}"),
            SessionError::Binding { server, source } => {
                write!(f, "STUN: binding via {server}: {source}")
            }
            SessionError::Bind { addr, source } => write!(
                f,
                "corridor socket: cannot bind {addr}: {source} (is another plexus or the \
                 previous executor using it?)"
            ),
            SessionError::Thread { what, source } => {
                write!(f, "corridor socket: cannot start {what}: {source}")
            }
            SessionError::Panicked(what) => {
                write!(f, "{what} panicked; please report this as a plexus bug")
            }
            SessionError::Message(e) => write!(f, "building our rendezvous message: {e}"),
            SessionError::NoEndpoint => write!(
                f,
                "the peer's invite names no endpoint to punch toward; refused"
            ),
            SessionError::Mediator(e) => write!(f, "{e}"),
            SessionError::Seal(e) => write!(f, "sealing the rendezvous message: {e}"),
            SessionError::RendezvousTimeout(d) => write!(
                f,
                "no answer from the peer within {} s: is `plexus accept` running on the \
                 peer, with this host's certificate pinned and the same mail settings?",
                d.as_secs()
            ),
            SessionError::Punch(e) => write!(f, "{e}"),
            SessionError::BadEndpoint(a) => write!(
                f,
                "the peer's message names the endpoint {a}, which cannot be a peer's \
                 (unspecified, loopback, multicast, broadcast or port 0); refused"
            ),
            SessionError::Settings(m) => write!(f, "{m}"),
            SessionError::Relay(e) => write!(f, "relay: {e}"),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionError::Discovery(e) => Some(e),
            SessionError::Binding { source, .. } => Some(source),
            SessionError::Bind { source, .. } | SessionError::Thread { source, .. } => Some(source),
            SessionError::Message(e) => Some(e),
            SessionError::Mediator(e) => Some(e),
            SessionError::Seal(e) => Some(e),
            SessionError::Punch(e) => Some(e),
            SessionError::Relay(e) => Some(e),
            _ => None,
        }
    }
}

/// Refuse endpoints that no peer across a NAT can have: sending the handshake there
/// would aim our packets at ourselves, a whole segment or nowhere.
fn check_endpoints(msg: &Body) -> Result<(), SessionError> {
    let bad = |a: &SocketAddr| {
        let ip = a.ip();
        a.port() == 0
            || ip.is_unspecified()
            || ip.is_loopback()
            || ip.is_multicast()
            || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
            || matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| {
                v4.is_unspecified() || v4.is_loopback() || v4.is_multicast() || v4.is_broadcast()
            }))
    };
    match msg.mapped.iter().chain(msg.local.iter()).find(|a| bad(a)) {
        Some(a) => Err(SessionError::BadEndpoint(*a)),
        None => Ok(()),
    }
}

fn need_stun(settings: &SessionSettings) -> Result<SocketAddr, SessionError> {
    settings.stun.first().copied().ok_or_else(|| {
        SessionError::Settings("no STUN server configured: name at least one".into())
    })
}

impl From<MediatorError> for SessionError {
    fn from(e: MediatorError) -> Self {
        SessionError::Mediator(e)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The facts a rendezvous message carries about this side's NAT.
pub fn facts_of(report: &NatReport) -> NatFacts {
    NatFacts {
        nat: report.nat,
        mapping: report.mapping,
        filtering: report.filtering,
        hairpin: report.hairpin,
        port_preserved: Some(report.port_preserved),
        port_mapping: None,
    }
}

/// Discover this side's NAT and refuse up front when the peer could not predict our
/// public endpoint (address- or address-and-port-dependent mapping).
pub fn discover(settings: &SessionSettings) -> Result<NatReport, SessionError> {
    info!("discovering NAT…");
    let report = discover_rounds(&discover_config(settings), |_| {})?;
    judge_mapping(report)
}

fn discover_config(settings: &SessionSettings) -> nat::DiscoverConfig {
    // Discovery uses sockets of its own: the corridor socket's port must not be spent
    // on probes toward the STUN server's alternate addresses.
    nat::DiscoverConfig {
        servers: settings.stun.clone(),
        bind: SocketAddr::new(settings.bind.ip(), 0),
        probe_timeout: settings.discovery_timeout,
    }
}

/// Full discovery, in up to three rounds; `on_mapping` gets the first mapping verdict
/// ([`nat::discover_staged`]).
fn discover_rounds(
    config: &nat::DiscoverConfig,
    mut on_mapping: impl FnMut(&NatReport),
) -> Result<NatReport, SessionError> {
    // On a lossy path every send of test I can be lost inside one probe deadline.
    in_rounds(
        "NAT discovery",
        || nat::discover_staged(config, &mut on_mapping),
        |_| true,
    )
    .map_err(SessionError::Discovery)
}

/// A STUN step that must be answered, tried up to three times while `retry` says the
/// error is worth it: on a lossy path every send of one round can be lost (20 % loss each
/// way loses a round trip 36 % of the time); more rounds make that unlikely without
/// slowing the common case.
fn in_rounds<T, E: fmt::Display>(
    what: &str,
    mut attempt: impl FnMut() -> Result<T, E>,
    retry: impl Fn(&E) -> bool,
) -> Result<T, E> {
    const ROUNDS: u32 = 3;
    let mut round = 1;
    loop {
        match attempt() {
            Err(e) if round < ROUNDS && retry(&e) => {
                warn!("{what}, round {round} of {ROUNDS}: {e}; trying again");
                round += 1;
            }
            r => return r,
        }
    }
}

/// Log the verdict. A mapping that depends on the destination is no longer refused
/// here: the acceptor plans per pair ([`crate::nat::pair`]) and declines what no method
/// can connect.
fn judge_mapping(report: NatReport) -> Result<NatReport, SessionError> {
    info!(
        "NAT: {} ({} ms)",
        describe_facts(&facts_of(&report)),
        report.elapsed.as_millis()
    );
    match report.mapping {
        Some(Behaviour::AddressAndPortDependent) | Some(Behaviour::AddressDependent) => {
            info!(
                "the NAT's mapping depends on the destination: the peer's NAT decides how \
                 the pair connects (a full-TTL punch, port prediction or a relay)"
            );
            Ok(report)
        }
        None if report.nat => {
            warn!(
                "the NAT's mapping could not be measured ({}); trying anyway",
                report.reason
            );
            Ok(report)
        }
        _ => Ok(report),
    }
}

/// The inviter's discovery: the full profile runs in a thread of its own, and this
/// returns (judged as in [`discover`]) as soon as the mapping verdict is in. Filtering
/// and hairpin need no answer to be known, so their verdict takes a whole probe
/// deadline; nothing the invite is decided on depends on them, so the thread logs
/// them when they arrive and the invite carries them as unknown until then.
fn discover_mapping(settings: &SessionSettings) -> Result<(NatReport, Background), SessionError> {
    info!("discovering NAT…");
    let config = discover_config(settings);
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("nat-discovery".into())
        .spawn(move || -> Result<NatReport, SessionError> {
            let mut first = Some(tx.clone());
            let full = discover_rounds(&config, |r| {
                if let Some(tx) = first.take() {
                    let _ = tx.send(r.clone());
                }
            })?;
            // The full profile too, for a caller still within its grace (see below).
            let _ = tx.send(full.clone());
            info!(
                "NAT filtering {}, hairpin {} ({} ms)",
                full.filtering.map(|b| b.as_str()).unwrap_or("unknown"),
                full.hairpin
                    .map(|h| if h { "yes" } else { "no" })
                    .unwrap_or("unknown"),
                full.elapsed.as_millis()
            );
            Ok(full)
        })
        .map_err(|source| SessionError::Thread {
            what: "NAT discovery",
            source,
        })?;
    match rx.recv() {
        Ok(report) => {
            // Joined on every way out, a refused NAT included.
            let background = Background(Some(thread));
            // A cone NAT's filtering decides the plan against a symmetric acceptor. An
            // endpoint-independent verdict is an answer, due about now: wait a moment
            // for it. Filtering verdicts that are timeouts never come this soon.
            let cone = report.nat && report.mapping == Some(Behaviour::EndpointIndependent);
            let report = if cone && report.filtering.is_none() {
                match rx.recv_timeout(FILTERING_GRACE) {
                    Ok(full) if full.filtering.is_some() => full,
                    _ => report,
                }
            } else {
                report
            };
            Ok((judge_mapping(report)?, background))
        }
        // No mapping verdict: the thread ended, with the discovery error.
        Err(_) => match thread.join() {
            Ok(r) => Ok((judge_mapping(r?)?, Background(None))),
            Err(_) => Err(SessionError::Panicked("NAT discovery")),
        },
    }
}

/// How long an inviter behind a cone NAT waits, after its mapping verdict, for a
/// filtering verdict that is an answer (endpoint-independent): about a round trip.
const FILTERING_GRACE: Duration = Duration::from_millis(30);

/// A thread that goes on after its caller has what it needs (the inviter's filtering
/// measurement): joined when this is dropped, so no thread outlives the session call.
/// It ends by itself within one probe deadline.
struct Background(Option<std::thread::JoinHandle<Result<NatReport, SessionError>>>);

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            let _ = t.join();
        }
    }
}

/// Bind the corridor socket and learn its public endpoint from the first STUN server.
fn corridor_socket(
    settings: &SessionSettings,
    server: SocketAddr,
) -> Result<(UdpSocket, SocketAddr), SessionError> {
    let socket = family::bind_udp(settings.bind).map_err(|source| SessionError::Bind {
        addr: settings.bind,
        source,
    })?;
    // Unlike a filtering probe, this one must be answered: allow retransmissions, and
    // rounds on a timeout. Every round uses the same socket, so the mapping it reports
    // is the one the peer will see.
    let timeout = (settings.discovery_timeout * 5).max(Duration::from_secs(2));
    let mapped = in_rounds(
        &format!("binding via {server}"),
        || stun::binding(&socket, server, timeout),
        |e| matches!(e, stun::StunError::Timeout { .. }),
    )
    .map_err(|source| SessionError::Binding { server, source })?;
    Ok((socket, mapped))
}

/// `n` more UDP sockets beside `first` (same local address, ports chosen by the OS): the
/// hard side of a birthday pair. Closed when dropped.
fn more_sockets(first: &UdpSocket, n: usize) -> Result<Vec<UdpSocket>, SessionError> {
    let ip = first
        .local_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let addr = SocketAddr::new(ip, 0);
    (0..n)
        .map(|_| family::bind_udp(addr).map_err(|source| SessionError::Bind { addr, source }))
        .collect()
}

/// How often the hard side of a birthday pair repeats its openers while no probe has
/// landed (an unanswered mapping expires after 30 s on Linux).
const OPENER_REFRESH: Duration = Duration::from_secs(10);

/// How often a hard acceptor repeats its full-TTL punch until the inviter is heard.
const FULL_TTL_REPUNCH: Duration = Duration::from_millis(200);

/// The TTL of a packet meant to arrive (the Linux default).
const FULL_TTL: u8 = 64;

/// This side's relay policy and whether it can allocate on a TURN server.
fn relay_offer(settings: &SessionSettings) -> (crate::rendezvous::RelayPolicy, bool) {
    (settings.relay.policy, settings.relay.turn.is_some())
}

/// How long allocating on the TURN server (and permitting the peer) may take.
const RELAY_SETUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long deleting an allocation nobody needs may take.
const RELAY_CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// An allocation on the configured TURN server with the peer's address permitted, for
/// the accept to name; `None` (logged) when there is no server or it failed.
fn allocate_relay(
    settings: &SessionSettings,
    peer_ip: IpAddr,
) -> Result<crate::relay::Allocation, SessionError> {
    let Some(turn) = &settings.relay.turn else {
        return Err(SessionError::Settings(
            "the relay needs a TURN server: --turn HOST[:PORT]".into(),
        ));
    };
    let t = Instant::now();
    let mut alloc = crate::relay::allocate(
        turn,
        SocketAddr::new(settings.bind.ip(), 0),
        RELAY_SETUP_TIMEOUT,
    )
    .map_err(SessionError::Relay)?;
    alloc
        .permit(peer_ip, RELAY_SETUP_TIMEOUT)
        .map_err(SessionError::Relay)?;
    info!(
        "relay: allocated {} on {} and permitted {peer_ip} in {} ms",
        alloc.relayed(),
        alloc.server(),
        t.elapsed().as_millis()
    );
    Ok(alloc)
}

/// The acceptor's handshake through its allocation (the inviter sends plain UDP to the
/// relayed address), until it connects, fails, `stop` is set or `deadline` passes.
fn run_relayed(
    alloc: &mut crate::relay::Allocation,
    core: Handshake,
    stop: &std::sync::atomic::AtomicBool,
    deadline: Instant,
) -> Result<punch::Connected, SessionError> {
    let mut core = punch::Stoppable::new(core, stop);
    let mut outcome = punch::Outcome::new(Instant::now());
    alloc
        .drive(&mut core, deadline, |_, event, now| {
            outcome.on_event(event, now)
        })
        .map_err(SessionError::Relay)?;
    outcome.finish(&core).map_err(SessionError::Punch)
}

/// The relaying side's corridor: the executor binds a loopback endpoint and talks to a
/// forwarder, which carries its datagrams through the allocation to `peer` (refreshing
/// allocation, permission and channel) until the corridor is dropped.
fn relay_corridor(
    alloc: crate::relay::Allocation,
    peer: SocketAddr,
) -> Result<(UdpSocket, SocketAddr, crate::relay::Forwarder), SessionError> {
    let loopback = if peer.is_ipv4() {
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
    };
    let addr = SocketAddr::new(loopback, 0);
    let socket = UdpSocket::bind(addr).map_err(|source| SessionError::Bind { addr, source })?;
    let inner = socket
        .local_addr()
        .map_err(|source| SessionError::Bind { addr, source })?;
    let forwarder = crate::relay::forward(alloc, peer, inner).map_err(SessionError::Relay)?;
    info!(
        "relay: forwarding {} <-> {} <-> {peer}",
        inner,
        forwarder.local_addr()
    );
    Ok((socket, inner, forwarder))
}

/// When this side's mapping depends on the destination and the router maps ports (PCP,
/// NAT-PMP, UPnP-IGD), a mapping of a fresh corridor socket's port: the side is then open
/// at the mapping's external endpoint, which replaces `mapped` (and `socket`) and goes
/// into `facts`. A fresh socket, because the old one's STUN binding already gave its
/// port a NAT mapping, and a Linux NAT reuses a source's existing mapping for every new
/// flow from it, whatever the router's mapping says. Anything else (the setting off, no
/// answer, a router behind another NAT) is logged and leaves all three as they are.
fn router_mapping(
    settings: &SessionSettings,
    socket: &mut UdpSocket,
    facts: &mut NatFacts,
    mapped: &mut SocketAddr,
) -> Option<crate::portmap::Held> {
    if !settings.port_mapping || pair::Class::of(facts) != pair::Class::Hard {
        return None;
    }
    let ip = socket.local_addr().ok()?.ip();
    let fresh = match UdpSocket::bind(SocketAddr::new(ip, 0)) {
        Ok(s) => s,
        Err(e) => {
            debug!("router port mapping: cannot bind a socket: {e}");
            return None;
        }
    };
    let local = fresh.local_addr().ok()?;
    match crate::portmap::map_udp(
        local,
        crate::defaults::PORTMAP_LEASE,
        crate::defaults::PORTMAP_SESSION_TIMEOUT,
    ) {
        Ok(m) => {
            info!(
                "router mapping via {}: {} -> {} (lease {} s)",
                m.protocol,
                m.external,
                local,
                m.lease.as_secs()
            );
            facts.port_mapping = Some(m.protocol.wire());
            *mapped = m.external;
            *socket = fresh;
            Some(crate::portmap::hold(m))
        }
        Err(e) if e.behind_another_nat() => {
            info!("router port mapping: {e}");
            None
        }
        Err(e) => {
            debug!("router port mapping: {e}");
            None
        }
    }
}

/// Local endpoints told per family (the message holds at most 8 in all).
const LOCALS_PER_FAMILY: usize = 4;

/// This socket's local endpoints worth telling a peer behind the same NAT (at most `max`).
fn local_endpoints(socket: &UdpSocket, max: usize) -> Vec<SocketAddr> {
    let Ok(local) = socket.local_addr() else {
        return Vec::new();
    };
    if !local.ip().is_unspecified() {
        return vec![local];
    }
    hops::local_addresses()
        .unwrap_or_default()
        .into_iter()
        .filter(|ip| ip.is_ipv4() == local.is_ipv4() && !ip.is_loopback())
        .filter(|ip| !matches!(ip, IpAddr::V4(v4) if v4.is_link_local()))
        // fe80::/10 needs a scope the peer cannot know.
        .filter(|ip| !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
        .take(max)
        .map(|ip| SocketAddr::new(ip, local.port()))
        .collect()
}

/// The local address the kernel would use toward `peer` (for an unspecified bind).
fn inner_endpoint(socket: &UdpSocket, peer: SocketAddr) -> SocketAddr {
    let local = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    if !local.ip().is_unspecified() {
        return local;
    }
    let probe = UdpSocket::bind(SocketAddr::new(local.ip(), 0))
        .and_then(|s| s.connect(peer).map(|_| s))
        .and_then(|s| s.local_addr());
    match probe {
        Ok(a) => SocketAddr::new(a.ip(), local.port()),
        Err(_) => local,
    }
}

/// Where to send handshake packets of `family`: the peer's public endpoints of that
/// family, and its local ones when both sides sit behind the same public address (a NAT
/// without hairpin).
fn candidates(peer: &Body, family: nat::Family, own_mapped: SocketAddr) -> Vec<SocketAddr> {
    let mut out = family.filter(&peer.mapped);
    if peer.mapped.iter().any(|m| m.ip() == own_mapped.ip()) {
        out.extend(family.filter(&peer.local));
    }
    out
}

/// The peer's NAT facts per family, for the log.
fn describe_peer_facts(peer: &Body) -> String {
    let fams = family::peer_families(peer);
    let v4 = fams
        .contains(&nat::Family::V4)
        .then(|| describe_facts(&peer.nat));
    let v6 = fams
        .contains(&nat::Family::V6)
        .then(|| describe_facts(&peer.nat6.unwrap_or_default()));
    match (v4, v6) {
        (Some(a), Some(b)) => format!("IPv4 {a}; IPv6 {b}"),
        (Some(a), None) => a,
        (None, Some(b)) => format!("IPv6 {b}"),
        (None, None) => "unknown".into(),
    }
}

/// The plan per family, for the log.
fn describe_methods(method4: Option<Method>, method6: Option<Method>) -> String {
    match (method4, method6) {
        (Some(m), None) => pair::describe(&m),
        (None, Some(m)) => format!("over IPv6, {}", pair::describe(&m)),
        (Some(m4), Some(m6)) => format!(
            "over IPv6, {}; and over IPv4, {} (IPv6 preferred)",
            pair::describe(&m6),
            pair::describe(&m4)
        ),
        (None, None) => "no method".into(),
    }
}

fn handshake_config(settings: &SessionSettings) -> punch::Config {
    punch::Config {
        timeout: settings.handshake_timeout,
        ..punch::Config::default()
    }
}

/// What must live as long as the corridor: the router's mapping of the corridor port
/// (renewed, removed when dropped).
#[derive(Debug, Default)]
struct Keep {
    // Held for their Drop (removes the mapping; stops the forwarder, deleting the
    // allocation; joins a family's setup the session stopped waiting for, long done by
    // then); never read.
    _router: Option<crate::portmap::Held>,
    _relay: Option<crate::relay::Forwarder>,
    _late: family::Late,
}

/// A punched, authenticated path: the caller owns the socket. A router port mapping
/// made for it lives (renewed) as long as this value, and through [`Connected::run`].
#[derive(Debug)]
pub struct Connected {
    /// The socket the path was punched from: the NAT mapping belongs to it.
    pub socket: UdpSocket,
    /// Both endpoints, both ids and the session key.
    pub corridor: Corridor,
    /// Where the time went.
    pub timeline: Timeline,
    keep: Keep,
}

impl Connected {
    /// The path as the handshake left it; logs the one "connected" line both sides write.
    fn opened(socket: UdpSocket, corridor: Corridor, timeline: Timeline, keep: Keep) -> Connected {
        info!(
            "connected to {} in {} ms ({timeline})",
            corridor.peer,
            timeline.total.as_millis()
        );
        Connected {
            socket,
            corridor,
            timeline,
            keep,
        }
    }

    /// The 256-bit key both sides derived in the handshake (e.g. a pre-shared key for
    /// the caller's own tunnel).
    pub fn key(&self) -> &crate::executor::SessionKey {
        &self.corridor.key
    }

    /// Release the socket and run `executor` on the corridor (it binds the inner
    /// endpoint itself, as the original tool's programs do).
    pub fn run(self, executor: &mut dyn Executor) -> Result<ExecReport, ExecError> {
        drop(self.socket);
        let r = run_executor(executor, &self.corridor);
        drop(self.keep);
        r
    }

    /// [`Connected::run`], keeping the corridor and the timeline for a report.
    pub fn finish(self, executor: &mut dyn Executor) -> Finished {
        let Connected {
            socket,
            corridor,
            timeline,
            keep,
        } = self;
        drop(socket);
        let exec = run_executor(executor, &corridor);
        drop(keep);
        Finished {
            corridor,
            timeline,
            exec,
        }
    }
}

/// Hand `sealed` to the mediator, retrying a transport failure a few times: on a lossy
/// path an SMTP session can time out once and then succeed. A duplicate that reaches
/// the peer anyway is refused there as a replay.
fn send_sealed(mediator: &mut dyn Mediator, to: &str, sealed: &[u8]) -> Result<(), SessionError> {
    send_retrying(mediator, to, sealed, Duration::from_secs(1))
}

fn send_retrying(
    mediator: &mut dyn Mediator,
    to: &str,
    sealed: &[u8],
    first_delay: Duration,
) -> Result<(), SessionError> {
    const ATTEMPTS: u32 = 3;
    let mut delay = first_delay;
    let mut attempt = 1;
    loop {
        match mediator.send(to, sealed) {
            Err(MediatorError::Unreachable(m)) if attempt < ATTEMPTS => {
                warn!(
                    "sending to {to} failed (attempt {attempt} of {ATTEMPTS}): {m}; retrying in {} ms",
                    delay.as_millis()
                );
                std::thread::sleep(delay);
                delay *= 2;
                attempt += 1;
            }
            r => return r.map_err(SessionError::from),
        }
    }
}

fn run_executor(executor: &mut dyn Executor, corridor: &Corridor) -> Result<ExecReport, ExecError> {
    info!("starting executor {}", executor.name());
    let result = executor.run(corridor);
    match &result {
        Ok(r) => info!(
            "executor {} finished: status {}, output {}",
            executor.name(),
            r.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            r.output
        ),
        Err(e) => warn!("executor {}: {e}", executor.name()),
    }
    result
}

/// The hard side of a birthday pair: `socket` and `n - 1` more, openers toward `dest` at
/// the TTL that leaves our NAT (probed toward the STUN server, never the peer), the
/// handshake on whichever socket a probe lands on. Returns the winning socket.
fn birthday_hard(
    settings: &SessionSettings,
    hard: HardSide,
    core: Handshake,
    stop: &std::sync::atomic::AtomicBool,
    deadline: Instant,
) -> Result<(UdpSocket, punch::Connected), SessionError> {
    let HardSide {
        socket,
        sockets: n,
        dest,
        stun_server,
    } = hard;
    let mut sockets = vec![socket];
    sockets.extend(more_sockets(&sockets[0], usize::from(n.max(1)) - 1)?);
    let ttl = punch::discover_punch_ttl(
        &sockets[0],
        stun_server,
        settings.punch_hops,
        &HopsConfig::default(),
    )
    .map_err(|e| SessionError::Punch(punch::PunchError::Io(e)))?;
    info!(
        "birthday probing: {} sockets send openers toward {dest} with TTL {ttl}",
        sockets.len()
    );
    let core = punch::birthday::Opener::new(
        core,
        sockets.len(),
        dest,
        ttl,
        OPENER_REFRESH,
        Instant::now(),
    );
    let mut core = punch::Stoppable::new(core, stop);
    let refs: Vec<&UdpSocket> = sockets.iter().collect();
    let result = punch::run_core(&refs, &mut core, deadline);
    let stats = core.inner().stats();
    let connected = result.map_err(SessionError::Punch)?;
    info!(
        "birthday probing: {} openers sent, a probe landed on socket {} of {}",
        stats.sent,
        connected.socket,
        sockets.len()
    );
    // The others close here: only the winner's mapping is the corridor.
    let winner = sockets.swap_remove(connected.socket.min(sockets.len() - 1));
    Ok((winner, connected))
}

/// The hard side of a birthday pair: where it opens from and toward.
struct HardSide {
    /// The corridor socket (the first of the sockets).
    socket: UdpSocket,
    /// Sockets in all.
    sockets: u16,
    /// The easy side's public endpoint.
    dest: SocketAddr,
    /// Where the hop probe goes (never the peer).
    stun_server: SocketAddr,
}

/// The easy side of a birthday pair: probes from `socket` to random ports of `target`.
fn birthday_easy(
    settings: &SessionSettings,
    socket: &UdpSocket,
    target: IpAddr,
    core: Handshake,
    stop: &std::sync::atomic::AtomicBool,
    deadline: Instant,
) -> Result<punch::Connected, SessionError> {
    let limits = settings.probe_limits;
    info!(
        "birthday probing: up to {} probes to random ports of {target} at {} per second",
        limits.budget, limits.rate
    );
    let core = punch::birthday::Prober::new(
        core,
        target,
        limits,
        punch::birthday::random_seed(),
        Instant::now(),
    );
    let mut core = punch::Stoppable::new(core, stop);
    let result = punch::run_core(&[socket], &mut core, deadline);
    info!(
        "birthday probing: {} probes sent",
        core.inner().stats().sent
    );
    result.map_err(SessionError::Punch)
}

fn describe_facts(f: &NatFacts) -> String {
    if !f.nat {
        return match f.filtering {
            Some(b) if b != Behaviour::EndpointIndependent => {
                format!("none, stateful firewall (filtering {b})")
            }
            _ => "none".into(),
        };
    }
    let b = |x: Option<Behaviour>| x.map(|b| b.as_str()).unwrap_or("unknown");
    let router = f
        .port_mapping
        .map(|p| format!(", router mapping via {}", p.label()))
        .unwrap_or_default();
    format!(
        "mapping {}, filtering {}{router}",
        b(f.mapping),
        b(f.filtering)
    )
}

#[cfg(test)]
mod tests;
