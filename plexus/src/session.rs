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
use crate::nat::{self, Behaviour, NatError, NatReport};
use crate::punch::{self, hops, Handshake, HopsConfig, PunchHops, Role, Secrets};
use crate::rendezvous::{
    Accept, Body, Envelope, Invite, Message, MessageError, NatFacts, OpenError, SealError,
};
use crate::stun::{self, StunError};

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
    /// Where the corridor socket binds.
    pub bind: SocketAddr,
    /// Punch TTL (acceptor only).
    pub punch_hops: PunchHops,
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
    /// This side's NAT cannot take part in a direct punch (discovery's reason).
    NatRefused(String),
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
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::NatRefused(m) => write!(f, "this NAT cannot punch directly: {m}"),
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

/// Log the verdict and refuse a mapping the peer could not predict; only the mapping
/// matters here.
fn judge_mapping(report: NatReport) -> Result<NatReport, SessionError> {
    info!(
        "NAT: {} ({} ms)",
        describe_facts(&facts_of(&report)),
        report.elapsed.as_millis()
    );
    match report.mapping {
        Some(Behaviour::AddressAndPortDependent) | Some(Behaviour::AddressDependent) => {
            Err(SessionError::NatRefused(report.reason.clone()))
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
            let mut tx = Some(tx);
            let full = discover_rounds(&config, |r| {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(r.clone());
                }
            })?;
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
            Ok((judge_mapping(report)?, background))
        }
        // No mapping verdict: the thread ended, with the discovery error.
        Err(_) => match thread.join() {
            Ok(r) => Ok((judge_mapping(r?)?, Background(None))),
            Err(_) => Err(SessionError::Panicked("NAT discovery")),
        },
    }
}

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
    let socket = UdpSocket::bind(settings.bind).map_err(|source| SessionError::Bind {
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

/// This socket's local endpoints worth telling a peer behind the same NAT.
fn local_endpoints(socket: &UdpSocket) -> Vec<SocketAddr> {
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
        .take(8)
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

/// Where to send handshake packets: the peer's public endpoints, and its local ones
/// when both sides sit behind the same public address (a NAT without hairpin).
fn candidates(peer: &Body, own_mapped: SocketAddr) -> Vec<SocketAddr> {
    let mut out = peer.mapped.clone();
    if peer.mapped.iter().any(|m| m.ip() == own_mapped.ip()) {
        out.extend(peer.local.iter().copied());
    }
    out
}

fn handshake_config(settings: &SessionSettings) -> punch::Config {
    punch::Config {
        timeout: settings.handshake_timeout,
        ..punch::Config::default()
    }
}

/// Invite the peer and, once the corridor is open, run `executor` on it.
pub fn invite(
    settings: &SessionSettings,
    envelope: &mut Envelope,
    mediator: &mut dyn Mediator,
    executor: &mut dyn Executor,
) -> Result<Finished, SessionError> {
    connect_invite(settings, envelope, mediator).map(|c| c.finish(executor))
}

/// Invite the peer and punch; the punched socket is returned with the corridor, for the
/// caller to use or to hand to an executor ([`Connected::run`]).
pub fn connect_invite(
    settings: &SessionSettings,
    envelope: &mut Envelope,
    mediator: &mut dyn Mediator,
) -> Result<Connected, SessionError> {
    let start = Instant::now();
    let stun_server = need_stun(settings)?;
    // The corridor socket's binding and discovery's probes use different sockets and
    // do not wait on each other: run them together. A refused NAT wins over a
    // failed binding (it says more).
    let (report, corridor) = std::thread::scope(|scope| {
        let discovery = scope.spawn(|| discover_mapping(settings));
        let corridor = corridor_socket(settings, stun_server);
        let report = discovery
            .join()
            .unwrap_or(Err(SessionError::Panicked("NAT discovery")));
        (report, corridor)
    });
    // `_filtering` is joined when this function returns, whichever way.
    let (report, _filtering) = report?;
    let (socket, mapped) = corridor?;
    let mut timeline = Timeline {
        discovery: start.elapsed(),
        ..Timeline::default()
    };
    info!(
        "public endpoint {mapped} (local {})",
        socket
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );

    let t = Instant::now();
    let invite = Invite::new(
        envelope.host_id().clone(),
        envelope.peer_id().clone(),
        unix_now(),
        vec![mapped],
        local_endpoints(&socket),
        facts_of(&report),
    )
    .map_err(SessionError::Message)?;
    let sealed = envelope.seal(&invite).map_err(SessionError::Seal)?;
    send_sealed(mediator, &settings.peer_address, &sealed)?;
    timeline.send = t.elapsed();
    info!(
        "invite sent to {} via {} (session {})",
        settings.peer_address,
        mediator.name(),
        invite.session.to_hex()
    );

    info!("waiting for the answer…");
    let t = Instant::now();
    let (_, accept) = wait_for(
        &mut [Peer {
            envelope: &mut *envelope,
            address: settings.peer_address.clone(),
        }],
        mediator,
        |m| match m {
            Message::Accept(a) if a.session == invite.session => Some(a),
            _ => None,
        },
        settings.rendezvous_timeout,
        Some((&socket, stun_server)),
    )?;
    timeline.wait = t.elapsed();
    check_endpoints(&accept)?;
    info!(
        "accept from {} at {:?} (NAT {})",
        accept.from,
        accept.mapped,
        describe_facts(&accept.nat)
    );

    let t = Instant::now();
    let core = Handshake::new(
        Role::Inviter,
        &Secrets::from_rendezvous(&invite, &accept),
        invite.session.0,
        candidates(&accept, mapped),
        Instant::now(),
        handshake_config(settings),
    );
    info!("punching toward {:?}…", candidates(&accept, mapped));
    let connected = punch::run_handshake(
        &socket,
        core,
        Instant::now() + settings.handshake_timeout + Duration::from_secs(3),
    )
    .map_err(SessionError::Punch)?;
    timeline.handshake = t.elapsed();
    timeline.total = start.elapsed();
    let corridor = Corridor {
        inner: inner_endpoint(&socket, connected.peer),
        outer: mapped,
        peer: connected.peer,
        host_id: envelope.host_id().to_string(),
        peer_id: envelope.peer_id().to_string(),
        key: connected.key,
        accepted: false,
    };
    info!(
        "connected to {} in {} ms ({timeline})",
        corridor.peer,
        timeline.total.as_millis()
    );
    Ok(Connected {
        socket,
        corridor,
        timeline,
    })
}

/// A punched, authenticated path: the caller owns the socket.
#[derive(Debug)]
pub struct Connected {
    /// The socket the path was punched from: the NAT mapping belongs to it.
    pub socket: UdpSocket,
    /// Both endpoints, both ids and the session key.
    pub corridor: Corridor,
    /// Where the time went.
    pub timeline: Timeline,
}

impl Connected {
    /// The 256-bit key both sides derived in the handshake (e.g. a pre-shared key for
    /// the caller's own tunnel).
    pub fn key(&self) -> &crate::executor::SessionKey {
        &self.corridor.key
    }

    /// Release the socket and run `executor` on the corridor (it binds the inner
    /// endpoint itself, as the original tool's programs do).
    pub fn run(self, executor: &mut dyn Executor) -> Result<ExecReport, ExecError> {
        drop(self.socket);
        run_executor(executor, &self.corridor)
    }

    /// [`Connected::run`], keeping the corridor and the timeline for a report.
    pub fn finish(self, executor: &mut dyn Executor) -> Finished {
        let Connected {
            socket,
            corridor,
            timeline,
        } = self;
        drop(socket);
        let exec = run_executor(executor, &corridor);
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

fn describe_facts(f: &NatFacts) -> String {
    if !f.nat {
        return "none".into();
    }
    let b = |x: Option<Behaviour>| x.map(|b| b.as_str()).unwrap_or("unknown");
    format!("mapping {}, filtering {}", b(f.mapping), b(f.filtering))
}

/// Wait for a message that opens and that `want` takes.
/// Everything else the mediator hands us is acknowledged: refused (left or quarantined)
/// when it fails to open, consumed when it opened but is not what this session waits
/// for (a stale accept, say — it is authentic, and replay protection already remembers
/// it).
fn wait_for<T>(
    peers: &mut [Peer<'_>],
    mediator: &mut dyn Mediator,
    want: impl Fn(Message) -> Option<T>,
    timeout: Option<Duration>,
    keepalive: Option<(&UdpSocket, SocketAddr)>,
) -> Result<(usize, T), SessionError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut next_keepalive = Instant::now() + KEEPALIVE_EVERY;
    let mut backoff = RECEIVE_BACKOFF_START;
    loop {
        let now = Instant::now();
        if let Some((socket, server)) = keepalive {
            if now >= next_keepalive {
                // Keep the NAT mapping that went into our message alive.
                if let Err(e) = stun::binding(socket, server, Duration::from_secs(2)) {
                    debug!("keepalive binding via {server}: {e}");
                }
                next_keepalive = Instant::now() + KEEPALIVE_EVERY;
            }
        }
        let mut slice = KEEPALIVE_EVERY;
        if let Some(d) = deadline {
            if now >= d {
                return Err(SessionError::RendezvousTimeout(timeout.unwrap_or_default()));
            }
            slice = slice.min(d - now);
        }
        let incoming = match mediator.receive(slice) {
            Ok(Some(incoming)) => {
                backoff = RECEIVE_BACKOFF_START;
                incoming
            }
            Ok(None) => continue,
            // Only wrong credentials or settings end a waiting side. Anything else
            // (the channel dropped, a server or plugin answering something odd, local
            // I/O trouble) may pass, and an always-on acceptor must outlive it: wait
            // with a backoff and try again.
            Err(e @ (MediatorError::Auth(_) | MediatorError::Config(_))) => return Err(e.into()),
            Err(e) => {
                let pause = deadline.map_or(backoff, |d| {
                    backoff.min(d.saturating_duration_since(Instant::now()))
                });
                warn!("{e}; trying again in {} ms", pause.as_millis());
                std::thread::sleep(pause);
                backoff = (backoff * 2).min(RECEIVE_BACKOFF_MAX);
                continue;
            }
        };
        match open_from(peers, &incoming.from, &incoming.sealed) {
            Err(e) => {
                warn!(
                    "refused a rendezvous message from {} ({}): {e}",
                    incoming.from, incoming.id
                );
                acknowledge(mediator, &incoming.id, Outcome::Rejected);
            }
            Ok((i, msg)) => {
                let (kind, from, session) =
                    (msg.kind(), msg.body().from.clone(), msg.body().session);
                acknowledge(mediator, &incoming.id, Outcome::Handled);
                match want(msg) {
                    Some(wanted) => return Ok((i, wanted)),
                    None => info!(
                        "ignoring a {} from {from} for session {} (not the one awaited)",
                        kind.as_str(),
                        session.to_hex()
                    ),
                }
            }
        }
    }
}

/// Acknowledge a message. Failing to only costs the cleanup: the message stays where it
/// is and is refused as a replay if it is read again; wrong credentials or settings
/// show up again at the next receive, which ends the wait.
fn acknowledge(mediator: &mut dyn Mediator, id: &str, outcome: Outcome) {
    if let Err(e) = mediator.acknowledge(id, outcome) {
        warn!("could not acknowledge message {id} ({e}); it stays in place");
    }
}

/// A peer this side talks to: its envelope (pinned certificate, replay state) and its
/// address on the mediator's channel.
pub struct Peer<'a> {
    /// Seals to and opens from this peer.
    pub envelope: &'a mut Envelope,
    /// The peer's address on the channel (mail address, plugin address).
    pub address: String,
}

/// Open `sealed` with the envelope of the peer the channel says sent it; when the
/// channel's sender matches no peer (or to be safe, when that peer's envelope refuses
/// it), the other peers' envelopes are tried: the signature, not the channel address,
/// decides who sent it. The first error is reported, being the most telling one.
fn open_from(
    peers: &mut [Peer<'_>],
    from: &str,
    sealed: &[u8],
) -> Result<(usize, Message), OpenError> {
    let (mut order, rest): (Vec<usize>, Vec<usize>) =
        (0..peers.len()).partition(|&i| peers[i].address.eq_ignore_ascii_case(from));
    order.extend(rest);
    let mut first_err = None;
    for i in order {
        match peers[i].envelope.open(sealed, unix_now()) {
            Ok(m) => return Ok((i, m)),
            // Only "another sender" means "maybe another peer's": anything else (stale,
            // replayed, tampered) is final for this message.
            Err(e @ (OpenError::WrongSigner { .. } | OpenError::SenderMismatch { .. })) => {
                first_err.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(first_err.unwrap_or_else(|| OpenError::NotSmime("no peer is configured".into())))
}

/// Builds a fresh executor for each accepted corridor (they may run concurrently).
pub type ExecutorFactory =
    Arc<dyn Fn() -> Result<Box<dyn Executor>, ExecError> + Send + Sync + 'static>;

/// Serve invitations: for each valid invite, punch, answer, handshake and run a fresh
/// executor in its own thread, then go back to waiting. With `once`, handle a single
/// invite and return its result; otherwise this returns only on an error (or when the
/// rendezvous timeout, if any, runs out), after the corridors still running have ended.
/// Refused or failed invitations are logged and the acceptor keeps waiting. `peers`
/// are the configured peers (one mediator serves them all; `settings.peer_address` is
/// not used here); `executors[i]` runs the corridors of `peers[i]`. At most
/// `settings.max_corridors` corridors run at once.
pub fn accept(
    settings: &SessionSettings,
    peers: &mut [Peer<'_>],
    mediator: &mut dyn Mediator,
    executors: &[ExecutorFactory],
    once: bool,
) -> Result<Finished, SessionError> {
    if peers.len() != executors.len() {
        return Err(SessionError::Settings(format!(
            "accept needs one executor per peer ({} peers, {} executors)",
            peers.len(),
            executors.len()
        )));
    }
    let listening = Listening::start(settings, peers, mediator)?;
    let mut corridors: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let result = loop {
        // Finished corridors are joined here, so the count below is of live ones.
        let (done, live): (Vec<_>, Vec<_>) = corridors.drain(..).partition(|h| h.is_finished());
        corridors = live;
        for h in done {
            let _ = h.join();
        }
        let next = match listening.next(settings, peers, mediator, once, corridors.len()) {
            Ok(Some(next)) => next,
            Ok(None) => continue,
            Err(e) => break Err(e),
        };
        let factory = executors[next.peer].clone();
        let run = move || -> Result<Finished, SessionError> {
            let connected = next.handshake()?;
            Ok(match factory() {
                Ok(mut ex) => connected.finish(ex.as_mut()),
                Err(e) => Finished {
                    corridor: connected.corridor,
                    timeline: connected.timeline,
                    exec: Err(e),
                },
            })
        };
        if once {
            break run();
        }
        let spawned = std::thread::Builder::new()
            .name("corridor".into())
            .spawn(move || {
                if let Err(e) = run() {
                    warn!("corridor failed: {e}");
                }
            });
        match spawned {
            Ok(h) => corridors.push(h),
            Err(e) => warn!("cannot start a thread for the corridor: {e}"),
        }
    };
    if !corridors.is_empty() {
        info!("waiting for {} running corridor(s) to end", corridors.len());
    }
    for h in corridors {
        let _ = h.join();
    }
    result
}

/// Wait for one valid invite from any of `peers`, answer it and punch: the path is
/// returned to the caller (no executor runs). A refused message is logged and waited
/// past; an invite that fails after it was answered (the handshake timed out) is
/// returned as the error.
pub fn accept_one(
    settings: &SessionSettings,
    peers: &mut [Peer<'_>],
    mediator: &mut dyn Mediator,
) -> Result<Connected, SessionError> {
    let listening = Listening::start(settings, peers, mediator)?;
    loop {
        if let Some(next) = listening.next(settings, peers, mediator, true, 0)? {
            return next.handshake();
        }
    }
}

/// An acceptor that has measured its NAT and waits for invites.
struct Listening {
    stun_server: SocketAddr,
    facts: NatFacts,
    started: Instant,
}

/// An invite answered and punched toward, its handshake still to run.
struct Answered {
    peer: usize,
    prepared: Prepared,
    handshake_timeout: Duration,
    session_start: Instant,
    host_id: String,
    peer_id: String,
}

impl Listening {
    fn start(
        settings: &SessionSettings,
        peers: &[Peer<'_>],
        mediator: &dyn Mediator,
    ) -> Result<Listening, SessionError> {
        let stun_server = need_stun(settings)?;
        if peers.is_empty() {
            return Err(SessionError::Settings(
                "accept needs at least one peer".into(),
            ));
        }
        let report = discover(settings)?;
        let names: Vec<String> = peers
            .iter()
            .map(|p| p.envelope.peer_id().to_string())
            .collect();
        info!(
            "waiting for invites from {} via {}…",
            names.join(", "),
            mediator.name()
        );
        Ok(Listening {
            stun_server,
            facts: facts_of(&report),
            started: Instant::now(),
        })
    }

    /// The next invite answered: `Ok(None)` when one was refused or failed and the
    /// acceptor should wait on (with `once`, such a failure is returned instead).
    /// `running` corridors count against `max_corridors`.
    fn next(
        &self,
        settings: &SessionSettings,
        peers: &mut [Peer<'_>],
        mediator: &mut dyn Mediator,
        once: bool,
        running: usize,
    ) -> Result<Option<Answered>, SessionError> {
        let remaining = settings
            .rendezvous_timeout
            .map(|t| t.checked_sub(self.started.elapsed()).unwrap_or_default());
        let (who, invite) = wait_for(
            peers,
            mediator,
            |m| match m {
                Message::Invite(i) => Some(i),
                _ => None,
            },
            remaining,
            None,
        )?;
        let session_start = Instant::now();
        let give_up = |e: SessionError| {
            warn!("invite {} refused: {e}", invite.session.to_hex());
            if once {
                Err(e)
            } else {
                Ok(None)
            }
        };
        if let Err(e) = check_endpoints(&invite) {
            return give_up(e);
        }
        if running >= settings.max_corridors.max(1) {
            warn!(
                "invite {} from {} refused: {running} corridors are running, the most allowed \
                 (max_corridors); the peer may invite again when one ends",
                invite.session.to_hex(),
                invite.from
            );
            return Ok(None);
        }
        info!(
            "invite from {} (session {}) at {:?}, NAT {}",
            invite.from,
            invite.session.to_hex(),
            invite.mapped,
            describe_facts(&invite.nat)
        );
        let peer = &mut peers[who];
        let prepared = match answer(
            settings,
            self.stun_server,
            peer,
            mediator,
            &invite,
            self.facts,
        ) {
            Ok(p) => p,
            Err(e) => return give_up(e),
        };
        Ok(Some(Answered {
            peer: who,
            prepared,
            handshake_timeout: settings.handshake_timeout,
            session_start,
            host_id: peer.envelope.host_id().to_string(),
            peer_id: peer.envelope.peer_id().to_string(),
        }))
    }
}

impl Answered {
    /// Run the handshake (re-punching while the accept travels) to the open corridor.
    fn handshake(self) -> Result<Connected, SessionError> {
        let Prepared {
            socket,
            mapped,
            core,
            repunch,
            mut timeline,
        } = self.prepared;
        let t = Instant::now();
        let connected = punch::run_handshake_repunching(
            &socket,
            core,
            Instant::now() + self.handshake_timeout + ACCEPT_DELIVERY + Duration::from_secs(3),
            repunch,
        )
        .map_err(SessionError::Punch)?;
        timeline.handshake = t.elapsed();
        timeline.total = self.session_start.elapsed();
        let corridor = Corridor {
            inner: inner_endpoint(&socket, connected.peer),
            outer: mapped,
            peer: connected.peer,
            host_id: self.host_id,
            peer_id: self.peer_id,
            key: connected.key,
            accepted: true,
        };
        info!(
            "connected to {} in {} ms ({timeline})",
            corridor.peer,
            timeline.total.as_millis()
        );
        Ok(Connected {
            socket,
            corridor,
            timeline,
        })
    }
}

/// An answered invite, ready for its handshake.
struct Prepared {
    socket: UdpSocket,
    mapped: SocketAddr,
    core: Handshake,
    repunch: Option<punch::Repunch>,
    timeline: Timeline,
}

/// The acceptor's part before the handshake: bind, binding, punch, send the accept.
fn answer(
    settings: &SessionSettings,
    stun_server: SocketAddr,
    peer: &mut Peer<'_>,
    mediator: &mut dyn Mediator,
    invite: &Invite,
    facts: NatFacts,
) -> Result<Prepared, SessionError> {
    let start = Instant::now();
    let Some(&inviter) = invite.mapped.first() else {
        return Err(SessionError::NoEndpoint);
    };
    let (socket, mapped) = corridor_socket(settings, stun_server)?;
    let accept = Accept::new(
        invite,
        unix_now(),
        vec![mapped],
        local_endpoints(&socket),
        facts,
    )
    .map_err(SessionError::Message)?;
    let acceptor_config = punch::Config {
        timeout: settings.handshake_timeout + ACCEPT_DELIVERY,
        ..handshake_config(settings)
    };
    let mut core = Handshake::new(
        Role::Acceptor,
        &Secrets::from_rendezvous(invite, &accept),
        invite.session.0,
        candidates(invite, mapped),
        Instant::now(),
        acceptor_config,
    );
    info!("punching toward {inviter}…");
    let ttl = punch::acceptor_punch(
        &socket,
        &mut core,
        inviter,
        mapped,
        settings.punch_hops,
        stun_server,
        &HopsConfig::default(),
    )
    .map_err(SessionError::Punch)?;
    let repunch = ttl.map(|ttl| punch::Repunch {
        dest: inviter,
        ttl,
        every: REPUNCH_EVERY,
    });
    let discovery = start.elapsed();
    let t = Instant::now();
    let sealed = peer.envelope.seal(&accept).map_err(SessionError::Seal)?;
    send_sealed(mediator, &peer.address, &sealed)?;
    info!("accept sent to {} via {}", peer.address, mediator.name());
    Ok(Prepared {
        socket,
        mapped,
        core,
        repunch,
        timeline: Timeline {
            discovery,
            send: t.elapsed(),
            ..Timeline::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mediator::Incoming;

    /// A channel that fails its first sends (and receives) with the given errors.
    struct Flaky {
        failures: Vec<MediatorError>,
        receive_failures: Vec<MediatorError>,
        sent: usize,
        tries: usize,
        receives: usize,
    }

    impl Mediator for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn send(&mut self, _to: &str, _sealed: &[u8]) -> Result<(), MediatorError> {
            self.tries += 1;
            if self.failures.is_empty() {
                self.sent += 1;
                Ok(())
            } else {
                Err(self.failures.remove(0))
            }
        }
        fn receive(&mut self, t: Duration) -> Result<Option<Incoming>, MediatorError> {
            self.receives += 1;
            if self.receive_failures.is_empty() {
                std::thread::sleep(t.min(Duration::from_millis(10)));
                Ok(None)
            } else {
                Err(self.receive_failures.remove(0))
            }
        }
        fn acknowledge(&mut self, _id: &str, _o: Outcome) -> Result<(), MediatorError> {
            Ok(())
        }
    }

    fn flaky(failures: Vec<MediatorError>) -> Flaky {
        Flaky {
            failures,
            receive_failures: Vec::new(),
            sent: 0,
            tries: 0,
            receives: 0,
        }
    }

    #[test]
    fn a_lost_channel_while_waiting_is_retried_until_the_deadline() {
        let mut m = flaky(vec![]);
        m.receive_failures = vec![
            MediatorError::Unreachable("connection lost".into()),
            MediatorError::Unreachable("connection lost".into()),
        ];
        let e = wait_for(
            &mut [],
            &mut m,
            Some,
            Some(Duration::from_millis(2000)),
            None,
        )
        .unwrap_err();
        // Both failures were waited out (0.5 s + 1 s), then it kept receiving.
        assert!(matches!(e, SessionError::RendezvousTimeout(_)), "{e}");
        assert!(m.receives > 2, "{} receives", m.receives);

        // Wrong credentials end the wait at once.
        let mut m = flaky(vec![]);
        m.receive_failures = vec![MediatorError::Auth("bad password".into())];
        let e = wait_for(&mut [], &mut m, Some, Some(Duration::from_secs(5)), None).unwrap_err();
        assert!(
            matches!(e, SessionError::Mediator(MediatorError::Auth(_))),
            "{e}"
        );
        assert_eq!(m.receives, 1);
    }

    /// A channel that hands out one hostile message after another and refuses every
    /// acknowledgement, the way a server refusing MOVE/EXPUNGE or a shared folder with
    /// a vanished file would.
    struct Hostile {
        handed: usize,
        acks: usize,
    }

    impl Mediator for Hostile {
        fn name(&self) -> &str {
            "hostile"
        }
        fn send(&mut self, _to: &str, _sealed: &[u8]) -> Result<(), MediatorError> {
            Ok(())
        }
        fn receive(&mut self, _t: Duration) -> Result<Option<Incoming>, MediatorError> {
            self.handed += 1;
            std::thread::sleep(Duration::from_millis(5));
            Ok(Some(Incoming {
                id: format!("m{}", self.handed),
                from: "mallory".into(),
                sealed: vec![0xff; 64],
            }))
        }
        fn acknowledge(&mut self, _id: &str, _o: Outcome) -> Result<(), MediatorError> {
            self.acks += 1;
            Err(MediatorError::Protocol("NO [CANNOT] MOVE refused".into()))
        }
    }

    #[test]
    fn only_credentials_and_settings_end_a_wait() {
        for transient in [
            MediatorError::Protocol("unexpected answer".into()),
            MediatorError::Io(std::io::Error::other("EIO")),
            MediatorError::Unreachable("gone".into()),
        ] {
            let mut m = flaky(vec![]);
            m.receive_failures = vec![transient];
            let e = wait_for(
                &mut [],
                &mut m,
                Some,
                Some(Duration::from_millis(1500)),
                None,
            )
            .unwrap_err();
            assert!(matches!(e, SessionError::RendezvousTimeout(_)), "{e}");
            assert!(m.receives > 1, "kept receiving after the failure");
        }
        let mut m = flaky(vec![]);
        m.receive_failures = vec![MediatorError::Config("no such folder".into())];
        let e = wait_for(&mut [], &mut m, Some, Some(Duration::from_secs(5)), None).unwrap_err();
        assert!(
            matches!(e, SessionError::Mediator(MediatorError::Config(_))),
            "{e}"
        );
        assert_eq!(m.receives, 1);
    }

    #[test]
    fn refused_acknowledgements_of_hostile_messages_do_not_end_a_wait() {
        let mut m = Hostile { handed: 0, acks: 0 };
        let e = wait_for(
            &mut [],
            &mut m,
            Some,
            Some(Duration::from_millis(300)),
            None,
        )
        .unwrap_err();
        assert!(matches!(e, SessionError::RendezvousTimeout(_)), "{e}");
        assert!(
            m.handed > 3 && m.acks == m.handed,
            "{} / {}",
            m.handed,
            m.acks
        );
    }

    #[test]
    fn endpoints_no_peer_can_have_are_refused() {
        use crate::identity::PeerId;
        // Built field by field: the constructors already refuse port 0.
        let msg = |mapped: &str, local: &[&str]| Body {
            from: PeerId::parse("a@x.example/one").unwrap(),
            to: PeerId::parse("b@y.example/two").unwrap(),
            session: crate::rendezvous::SessionId([1; 16]),
            time: 0,
            mapped: vec![mapped.parse().unwrap()],
            local: local.iter().map(|l| l.parse().unwrap()).collect(),
            nat: NatFacts::default(),
            secret: crate::rendezvous::Secret::from_bytes([2; 32]),
        };
        assert!(check_endpoints(&msg("198.51.100.7:4000", &["192.168.1.5:4000"])).is_ok());
        assert!(check_endpoints(&msg("[2001:db8::1]:4000", &[])).is_ok());
        for bad in [
            "0.0.0.0:4000",
            "127.0.0.1:4000",
            "224.0.0.1:4000",
            "255.255.255.255:4000",
            "198.51.100.7:0",
            "[::]:4000",
            "[::1]:4000",
            "[ff02::1]:4000",
            "[::ffff:127.0.0.1]:4000",
        ] {
            let e = check_endpoints(&msg(bad, &[])).unwrap_err();
            assert!(matches!(e, SessionError::BadEndpoint(_)), "{bad}: {e}");
            let e = check_endpoints(&msg("198.51.100.7:4000", &[bad])).unwrap_err();
            assert!(
                matches!(e, SessionError::BadEndpoint(_)),
                "local {bad}: {e}"
            );
        }
    }

    #[test]
    fn accept_refuses_mismatched_peers_and_no_stun_without_panicking() {
        let mut m = flaky(vec![]);
        let mut settings = settings_for("127.0.0.1:9".parse().unwrap());
        let factory: ExecutorFactory = Arc::new(|| Err(ExecError::Config("none".into())));
        let e = accept(&settings, &mut [], &mut m, &[factory], true).unwrap_err();
        assert!(e.to_string().contains("one executor per peer"), "{e}");
        settings.stun.clear();
        let e = accept(&settings, &mut [], &mut m, &[], true).unwrap_err();
        assert!(e.to_string().contains("no STUN server"), "{e}");
    }

    #[test]
    fn a_lower_error_stays_a_typed_cause() {
        let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut settings = settings_for("127.0.0.1:9".parse().unwrap());
        settings.bind = taken.local_addr().unwrap();
        let e = corridor_socket(&settings, "127.0.0.1:9".parse().unwrap()).unwrap_err();
        let SessionError::Bind { addr, source } = &e else {
            panic!("not a bind error: {e}");
        };
        assert_eq!(*addr, settings.bind);
        assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
        let cause = std::error::Error::source(&e).expect("the io::Error is the source");
        assert_eq!(
            cause.downcast_ref::<io::Error>().map(io::Error::kind),
            Some(io::ErrorKind::AddrInUse)
        );
        assert!(e.to_string().contains("cannot bind"), "{e}");
    }

    #[test]
    fn transport_failures_are_retried_a_bounded_number_of_times() {
        let unreachable = || MediatorError::Unreachable("timeout".into());
        let mut m = flaky(vec![unreachable(), unreachable()]);
        send_retrying(&mut m, "p", b"x", Duration::from_millis(1)).unwrap();
        assert_eq!((m.tries, m.sent), (3, 1));

        let mut m = flaky(vec![unreachable(), unreachable(), unreachable()]);
        let e = send_retrying(&mut m, "p", b"x", Duration::from_millis(1)).unwrap_err();
        assert!(matches!(
            e,
            SessionError::Mediator(MediatorError::Unreachable(_))
        ));
        assert_eq!((m.tries, m.sent), (3, 0));
    }

    #[test]
    fn a_refused_login_is_not_retried() {
        let mut m = flaky(vec![MediatorError::Auth("bad password".into())]);
        let e = send_retrying(&mut m, "p", b"x", Duration::from_millis(1)).unwrap_err();
        assert!(matches!(e, SessionError::Mediator(MediatorError::Auth(_))));
        assert_eq!(m.tries, 1);
    }

    fn settings_for(stun: SocketAddr) -> SessionSettings {
        let config = crate::testing::stun::config(stun, Duration::from_millis(200));
        SessionSettings {
            stun: config.servers,
            bind: config.bind,
            punch_hops: PunchHops::Auto,
            discovery_timeout: config.probe_timeout,
            rendezvous_timeout: None,
            handshake_timeout: Duration::from_secs(1),
            peer_address: "peer".into(),
            max_corridors: DEFAULT_MAX_CORRIDORS,
        }
    }

    #[test]
    fn the_inviter_goes_on_with_the_mapping_while_filtering_is_still_measured() {
        let server = crate::testing::stun::FilteringServer::start();
        let settings = settings_for(server.addr);
        let (early, _background) = discover_mapping(&settings).unwrap();
        assert!(early.nat);
        assert_eq!(early.mapping, Some(Behaviour::EndpointIndependent));
        // Not waited for: the invite says "unknown" (the format allows it).
        assert_eq!((early.filtering, early.hairpin), (None, None));
        let facts = facts_of(&early);
        assert_eq!((facts.filtering, facts.hairpin), (None, None));
        // The acceptor's discovery still waits for the whole profile.
        let full = discover(&settings).unwrap();
        assert_eq!(full.filtering, Some(Behaviour::AddressAndPortDependent));
    }

    #[test]
    fn local_endpoints_go_to_the_peer_only_behind_the_same_public_address() {
        let msg = |mapped: &str, local: &str| Body {
            from: crate::rendezvous::PeerId::parse("a@x.example/one").unwrap(),
            to: crate::rendezvous::PeerId::parse("b@x.example/two").unwrap(),
            session: crate::rendezvous::SessionId([1; 16]),
            time: 0,
            mapped: vec![mapped.parse().unwrap()],
            local: vec![local.parse().unwrap()],
            nat: NatFacts::default(),
            secret: crate::rendezvous::Secret::from_bytes([2; 32]),
        };
        let peer = msg("198.51.100.2:4000", "10.0.0.5:4000");
        assert_eq!(
            candidates(&peer, "203.0.113.9:5000".parse().unwrap()),
            vec!["198.51.100.2:4000".parse().unwrap()]
        );
        assert_eq!(
            candidates(&peer, "198.51.100.2:5000".parse().unwrap()),
            vec![
                "198.51.100.2:4000".parse::<SocketAddr>().unwrap(),
                "10.0.0.5:4000".parse().unwrap()
            ]
        );
    }
}
