//! The corridor: the low-TTL punch and the authenticated flag-0/flag-1 handshake.
//!
//! - [`wire`]: packet format and HKDF key schedule (golden vectors in its tests).
//! - [`handshake`]: the sans-IO, clock-free handshake core.
//! - [`hops`]: finding how many hops it takes to get past the own NAT (ICMP
//!   time-exceeded through `IP_RECVERR`, no raw sockets).
//! - [`run_handshake`]: the handshake (and [`Punching`], its repunch timer) run over a
//!   `UdpSocket` by [`crate::net::Driver`].
//!
//! How the corridor uses them, on the one UDP socket whose mapped endpoint went into the
//! rendezvous message (the socket must not change, or the NAT mapping changes with it):
//! 1. Acceptor, after opening the invite: if [`hops::behind_nat`] says so, get the TTL
//!    with [`discover_punch_ttl`] (probes go to the STUN server, never to the peer, so
//!    they open no mapping toward it), build its [`Handshake`] and send
//!    `send_with_ttl(&socket, inviter_mapped, &core.punch_packet(), ttl)`; then send
//!    the accept message and [`run_handshake`].
//! 2. Inviter, after reading the accept: [`Handshake::new`] with the acceptor's
//!    endpoints (mapped first, then local ones for peers behind the same NAT) and
//!    [`run_handshake`].
//! 3. Both: on `Ok(Connected)` drop the socket and start the executor with
//!    `Connected::peer` and `Connected::key`.

pub mod birthday;
pub mod handshake;
pub mod hops;
pub mod nominate;
pub mod wire;

#[cfg(test)]
mod sim;

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

pub use handshake::{Config, Event, FailReason, Handshake, Stats};
pub use hops::{
    choose_punch_ttl, choose_punch_ttl_for, discover_punch_ttl, send_with_ttl, HopsConfig,
    PunchHops,
};
pub use wire::{Role, Secrets};

use crate::executor::SessionKey;
use crate::net::Driver;
use crate::sansio::{Core, Transmit};

/// Errors of the corridor layer.
#[derive(Debug)]
#[non_exhaustive]
pub enum PunchError {
    /// The peer did not complete the handshake before the deadline: check that its NAT
    /// is not symmetric, that the punch TTL does not reach the peer's NAT, and that both
    /// sides use the endpoints from this session.
    Timeout {
        /// How long we tried.
        after: Duration,
        /// What was received meanwhile (forgeries, replays…), for the log.
        stats: Stats,
    },
    /// The socket failed (bind, send, receive, socket options).
    Io(io::Error),
}

impl fmt::Display for PunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PunchError::Timeout { after, stats } => write!(
                f,
                "handshake timed out after {} ms ({} datagrams received, {} valid): check \
                 the peer's NAT type, the punch hops and that the peer is running",
                after.as_millis(),
                stats.received,
                stats.accepted
            ),
            PunchError::Io(e) => write!(f, "corridor socket error: {e}"),
        }
    }
}

impl std::error::Error for PunchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PunchError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for PunchError {
    fn from(e: io::Error) -> Self {
        PunchError::Io(e)
    }
}

impl From<crate::net::DriveError> for PunchError {
    fn from(e: crate::net::DriveError) -> Self {
        PunchError::Io(e.into())
    }
}

/// The acceptor's punch (step 1 of the module docs): when this side is behind a NAT
/// (`own_mapped` is not one of the host's addresses) or a stateful firewall
/// (`firewalled`: no NAT, yet filtering), find the TTL (`hops`; probes go to
/// `probe_target`, which must not be the peer) and send the punch packet toward the
/// inviter's mapped endpoint from `socket`. Returns the TTL used, or `None` when no
/// punch was needed.
#[allow(clippy::too_many_arguments)]
pub fn acceptor_punch(
    socket: &UdpSocket,
    core: &mut Handshake,
    inviter: SocketAddr,
    own_mapped: SocketAddr,
    hops: PunchHops,
    probe_target: SocketAddr,
    config: &HopsConfig,
    firewalled: bool,
) -> Result<Option<u8>, PunchError> {
    if !firewalled && !hops::behind_nat(own_mapped.ip())? {
        log::info!("public address {}: no punch needed", own_mapped.ip());
        return Ok(None);
    }
    if probe_target.ip() == inviter.ip() && hops == PunchHops::Auto {
        // Probing the peer would open our NAT toward it at full TTL: the very thing the
        // low-TTL punch avoids.
        return Err(PunchError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the hop probe target is the peer's address: probe toward the STUN server",
        )));
    }
    let ttl = discover_punch_ttl(socket, probe_target, hops, config)?;
    log::info!("punching toward {inviter} with TTL {ttl}");
    send_with_ttl(socket, inviter, &core.punch_packet(), ttl)?;
    Ok(Some(ttl))
}

/// The acceptor's punch, repeated while the inviter has not been heard: an outgoing
/// packet refreshes the own NAT's mapping and filter state, which would otherwise expire
/// (Linux conntrack: 30 s for an unanswered UDP flow) while the accept is still on its
/// way through a slow mediator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repunch {
    /// The inviter's mapped endpoint (the punch target).
    pub dest: SocketAddr,
    /// The TTL of the first punch: enough to leave the own NAT, too little to reach the peer's.
    pub ttl: u8,
    /// Time between punches.
    pub every: Duration,
}

/// The handshake as a [`Core`]; the inherent methods of [`Handshake`] do the work.
impl Core for Handshake {
    type Event = Event;

    fn handle_input(&mut self, now: Instant, _socket: usize, from: SocketAddr, bytes: &[u8]) {
        self.handle_datagram(from, bytes, now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        Handshake::handle_timeout(self, now);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        Handshake::poll_transmit(self, now).map(|(dest, payload)| Transmit::to(dest, payload))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Handshake::poll_timeout(self)
    }

    fn poll_event(&mut self) -> Option<Event> {
        Handshake::poll_event(self)
    }
}

/// The acceptor's handshake with its [`Repunch`] timer, as one pure [`Core`]: besides
/// the handshake's own datagrams it sends a fresh low-TTL punch packet every
/// [`Repunch::every`] until the first valid packet from the peer arrives.
#[derive(Debug)]
pub struct Punching {
    core: Handshake,
    repunch: Option<Repunch>,
    next_punch: Option<Instant>,
}

impl Punching {
    /// `core`, re-punching per `repunch` (none: the handshake alone), first at
    /// `now + every`: the first punch went out before the accept.
    pub fn new(core: Handshake, repunch: Option<Repunch>, now: Instant) -> Punching {
        Punching {
            core,
            next_punch: repunch.map(|r| now + r.every),
            repunch,
        }
    }

    /// The handshake inside.
    pub fn handshake(&self) -> &Handshake {
        &self.core
    }
}

impl Core for Punching {
    type Event = Event;

    fn handle_input(&mut self, now: Instant, socket: usize, from: SocketAddr, bytes: &[u8]) {
        Core::handle_input(&mut self.core, now, socket, from, bytes);
    }

    fn handle_timeout(&mut self, now: Instant) {
        Core::handle_timeout(&mut self.core, now);
        if self.core.heard_peer() || self.core.is_finished() {
            self.next_punch = None;
        }
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if let Some(t) = Core::poll_transmit(&mut self.core, now) {
            return Some(t);
        }
        if self.core.heard_peer() || self.core.is_finished() {
            self.next_punch = None;
        }
        let (r, due) = (self.repunch?, self.next_punch?);
        if now < due {
            return None;
        }
        log::debug!("re-punching toward {} with TTL {}", r.dest, r.ttl);
        self.next_punch = Some(now + r.every);
        Some(Transmit {
            socket: 0,
            dest: r.dest,
            payload: self.core.punch_packet(),
            ttl: Some(r.ttl),
        })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let t = Core::poll_timeout(&self.core)?;
        Some(self.next_punch.map_or(t, |p| t.min(p)))
    }

    fn poll_event(&mut self) -> Option<Event> {
        Core::poll_event(&mut self.core)
    }
}

/// A completed handshake.
#[derive(Debug, Clone)]
pub struct Connected {
    /// The peer endpoint the handshake completed with (newest valid source).
    pub peer: SocketAddr,
    /// Key for the executor.
    pub key: SessionKey,
    /// From the driver's start to the `Connected` event.
    pub elapsed: Duration,
    /// What the core counted.
    pub stats: Stats,
    /// Index of the socket the corridor runs on, among those the core was driven over
    /// (0 but for the hard side of a birthday pair).
    pub socket: usize,
}

/// A [`Core`] around one [`Handshake`]: what [`run_core`] drives.
pub trait HandshakeCore: Core<Event = Event> {
    /// The handshake inside.
    fn handshake(&self) -> &Handshake;
    /// The handshake inside, to hold or release it ([`nominate`]).
    fn handshake_mut(&mut self) -> &mut Handshake;
    /// The socket the corridor runs on once connected.
    fn corridor_socket(&self) -> usize {
        0
    }
}

impl HandshakeCore for Handshake {
    fn handshake(&self) -> &Handshake {
        self
    }
    fn handshake_mut(&mut self) -> &mut Handshake {
        self
    }
}

impl HandshakeCore for Punching {
    fn handshake(&self) -> &Handshake {
        &self.core
    }
    fn handshake_mut(&mut self) -> &mut Handshake {
        &mut self.core
    }
}

impl HandshakeCore for birthday::Opener {
    fn handshake(&self) -> &Handshake {
        birthday::Opener::handshake(self)
    }
    fn handshake_mut(&mut self) -> &mut Handshake {
        birthday::Opener::handshake_mut(self)
    }
    fn corridor_socket(&self) -> usize {
        self.stats().winner.unwrap_or(0)
    }
}

impl HandshakeCore for birthday::Prober {
    fn handshake(&self) -> &Handshake {
        birthday::Prober::handshake(self)
    }
    fn handshake_mut(&mut self) -> &mut Handshake {
        birthday::Prober::handshake_mut(self)
    }
}

/// A handshake core that gives up, as if finished, soon after `stop` is set: two paths
/// tried at once (direct and relayed) end each other this way. It checks the flag at
/// least every [`Stoppable::TICK`].
#[derive(Debug)]
pub struct Stoppable<'f, C> {
    inner: C,
    stop: &'f std::sync::atomic::AtomicBool,
    stopped: bool,
    next_check: Option<Instant>,
}

impl<'f, C: HandshakeCore> Stoppable<'f, C> {
    /// How often the flag is looked at while nothing else happens.
    pub const TICK: Duration = Duration::from_millis(50);

    /// `inner`, ended when `stop` is set.
    pub fn new(inner: C, stop: &'f std::sync::atomic::AtomicBool) -> Stoppable<'f, C> {
        Stoppable {
            inner,
            stop,
            stopped: false,
            next_check: None,
        }
    }

    /// Whether it ended because of the flag.
    pub fn was_stopped(&self) -> bool {
        self.stopped
    }

    /// The core inside.
    pub fn inner(&self) -> &C {
        &self.inner
    }
}

impl<C: HandshakeCore> Core for Stoppable<'_, C> {
    type Event = Event;

    fn handle_input(&mut self, now: Instant, socket: usize, from: SocketAddr, bytes: &[u8]) {
        if !self.stopped {
            self.inner.handle_input(now, socket, from, bytes);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        // A side that has connected finishes its linger whatever the other path does.
        if !self.inner.handshake().is_connected()
            && self.stop.load(std::sync::atomic::Ordering::Relaxed)
        {
            self.stopped = true;
        }
        self.next_check = Some(now + Self::TICK);
        if !self.stopped {
            self.inner.handle_timeout(now);
        }
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.stopped {
            return None;
        }
        self.inner.poll_transmit(now)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        let t = self.inner.poll_timeout()?;
        Some(self.next_check.map_or(t, |c| c.min(t)))
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.inner.poll_event()
    }
}

impl<C: HandshakeCore> HandshakeCore for Stoppable<'_, C> {
    fn handshake(&self) -> &Handshake {
        self.inner.handshake()
    }
    fn handshake_mut(&mut self) -> &mut Handshake {
        self.inner.handshake_mut()
    }
    fn corridor_socket(&self) -> usize {
        self.inner.corridor_socket()
    }
}

/// Drive `core` over `socket` until it has connected and finished lingering, or failed,
/// or `deadline` passes. Blocking; the socket's own settings are left as they were.
pub fn run_handshake(
    socket: &UdpSocket,
    core: Handshake,
    deadline: Instant,
) -> Result<Connected, PunchError> {
    run_handshake_repunching(socket, core, deadline, None)
}

/// [`run_handshake`], repeating the acceptor's low-TTL punch ([`Repunch`]) until the
/// first valid packet from the peer arrives ([`Punching`]).
pub fn run_handshake_repunching(
    socket: &UdpSocket,
    core: Handshake,
    deadline: Instant,
    repunch: Option<Repunch>,
) -> Result<Connected, PunchError> {
    let mut core = Punching::new(core, repunch, Instant::now());
    run_core(&[socket], &mut core, deadline)
}

/// Drive any handshake core over `sockets` until it has connected and finished
/// lingering, or failed, or `deadline` passes.
pub fn run_core<C: HandshakeCore>(
    sockets: &[&UdpSocket],
    core: &mut C,
    deadline: Instant,
) -> Result<Connected, PunchError> {
    let mut outcome = Outcome::new(Instant::now());
    Driver::new(sockets)
        .deadline(deadline)
        .run(core, |_, event, now| outcome.on_event(event, now))?;
    outcome.finish(core)
}

/// What a driven handshake core reported, turned into its result: shared by every
/// driver of a handshake (over sockets, through a relay).
#[derive(Debug, Clone)]
pub struct Outcome {
    start: Instant,
    connected: Option<(SocketAddr, Duration)>,
    failed: Option<Duration>,
}

impl Outcome {
    /// Nothing reported yet; times count from `start`.
    pub fn new(start: Instant) -> Outcome {
        Outcome {
            start,
            connected: None,
            failed: None,
        }
    }

    /// Record `event`; the driver should stop on `Break` (the handshake failed).
    pub fn on_event(&mut self, event: Event, now: Instant) -> ControlFlow<()> {
        match event {
            Event::Connected { peer } => {
                let elapsed = now.duration_since(self.start);
                log::info!("connected to {peer} in {} ms", elapsed.as_millis());
                self.connected = Some((peer, elapsed));
                ControlFlow::Continue(())
            }
            Event::Failed(_) => {
                self.failed = Some(now.duration_since(self.start));
                ControlFlow::Break(())
            }
            Event::Closed => ControlFlow::Continue(()),
        }
    }

    /// The result once the driver has stopped: connected, or timed out (also when the
    /// driver's deadline came first).
    pub fn finish<C: HandshakeCore>(self, core: &C) -> Result<Connected, PunchError> {
        let hs = core.handshake();
        match (self.failed, self.connected) {
            (None, Some((peer, elapsed))) => Ok(Connected {
                peer: hs.peer().unwrap_or(peer),
                key: hs.session_key(),
                elapsed,
                stats: hs.stats().clone(),
                socket: core.corridor_socket(),
            }),
            (failed, _) => Err(PunchError::Timeout {
                after: failed.unwrap_or_else(|| self.start.elapsed()),
                stats: hs.stats().clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets {
            inviter: [3; 32],
            acceptor: [4; 32],
        }
    }

    #[test]
    fn a_stopped_core_ends_without_connecting() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let core = Handshake::new(
            Role::Inviter,
            &secrets(),
            [9; 16],
            vec![silent.local_addr().unwrap()],
            Instant::now(),
            Config::default(),
        );
        let flag = std::sync::atomic::AtomicBool::new(false);
        let mut core = Stoppable::new(core, &flag);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let r = run_core(&[&a], &mut core, Instant::now() + Duration::from_secs(30));
            assert!(matches!(r, Err(PunchError::Timeout { .. })), "{r:?}");
        });
        assert!(core.was_stopped());
        assert!(!core.handshake().is_connected());
        // It called the silent peer before the flag: the handshake really ran.
        assert!(core.handshake().stats().sent > 0);
    }

    #[test]
    fn loopback_handshake_with_punch() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let sid = [0x42; 16];
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        let cfg = Config::default();
        let mut acc = Handshake::new(Role::Acceptor, &secrets(), sid, vec![aa], now, cfg.clone());
        // The acceptor's punch, as the corridor sends it (on loopback it arrives).
        send_with_ttl(&b, aa, &acc.punch_packet(), 2).unwrap();
        let t = std::thread::spawn(move || run_handshake(&b, acc, deadline));
        let inv = Handshake::new(Role::Inviter, &secrets(), sid, vec![ba], now, cfg);
        let ci = run_handshake(&a, inv, deadline).unwrap();
        let ca = t.join().unwrap().unwrap();
        assert_eq!(ci.peer, ba);
        assert_eq!(ca.peer, aa);
        assert_eq!(ci.key, ca.key);
        // The socket's read timeout is left as it was.
        assert_eq!(a.read_timeout().unwrap(), None);
    }

    /// Datagrams an acceptor sends toward a silent inviter within `run`.
    fn sent_to_silent_inviter(repunch: bool, run: Duration) -> Vec<Vec<u8>> {
        let acc = UdpSocket::bind("127.0.0.1:0").unwrap();
        let inviter = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ia = inviter.local_addr().unwrap();
        let now = Instant::now();
        let cfg = Config {
            timeout: run,
            ..Config::default()
        };
        let core = Handshake::new(Role::Acceptor, &secrets(), [6; 16], vec![ia], now, cfg);
        let r = Repunch {
            dest: ia,
            ttl: 2,
            every: Duration::from_millis(40),
        };
        let result = run_handshake_repunching(&acc, core, now + run, repunch.then_some(r));
        assert!(
            matches!(result, Err(PunchError::Timeout { .. })),
            "{result:?}"
        );
        inviter.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1500];
        while let Ok((n, _)) = inviter.recv_from(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    }

    #[test]
    fn a_waiting_acceptor_repeats_its_punch_until_the_inviter_is_heard() {
        let run = Duration::from_millis(400);
        assert!(
            sent_to_silent_inviter(false, run).is_empty(),
            "without re-punching the acceptor stays silent until it hears the inviter"
        );
        let punches = sent_to_silent_inviter(true, run);
        assert!(punches.len() >= 3, "{} punches in 400 ms", punches.len());
        let keys = wire::Keys::derive(&secrets(), &[6; 16]);
        let mut seqs = Vec::new();
        for p in &punches {
            let packet =
                wire::decode(&keys, Role::Acceptor, &[6; 16], p).expect("a valid handshake packet");
            assert_eq!(packet.sender, Role::Acceptor);
            assert_eq!(packet.flags, 0, "a punch says it has not heard the peer");
            seqs.push(packet.seq);
        }
        seqs.dedup();
        assert_eq!(seqs.len(), punches.len(), "every punch is a fresh packet");
    }

    #[test]
    fn the_repunch_timer_is_pure_and_stops_once_the_inviter_is_heard() {
        let t0 = Instant::now();
        let (inv_addr, acc_addr): (SocketAddr, SocketAddr) = (
            "198.51.100.10:40000".parse().unwrap(),
            "203.0.113.20:50000".parse().unwrap(),
        );
        let acc = Handshake::new(
            Role::Acceptor,
            &secrets(),
            [6; 16],
            vec![inv_addr],
            t0,
            Config::default(),
        );
        let every = Duration::from_millis(40);
        let r = Repunch {
            dest: inv_addr,
            ttl: 2,
            every,
        };
        let mut p = Punching::new(acc, Some(r), t0);
        let mut punches = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_millis(130) {
            p.handle_timeout(now);
            while let Some(t) = p.poll_transmit(now) {
                assert_eq!((t.dest, t.ttl), (inv_addr, Some(2)));
                punches.push((now - t0, t.payload));
            }
            now = p.poll_timeout().unwrap();
        }
        let at: Vec<Duration> = punches.iter().map(|(t, _)| *t).collect();
        assert_eq!(at, vec![every, every * 2, every * 3]);
        // The inviter's first packet arrives: the answer goes out at the normal TTL,
        // and no punch follows.
        let mut inv = Handshake::new(
            Role::Inviter,
            &secrets(),
            [6; 16],
            vec![acc_addr],
            t0,
            Config::default(),
        );
        let (_, hello) = inv.poll_transmit(now).unwrap();
        p.handle_input(now, 0, inv_addr, &hello);
        let answer = p.poll_transmit(now).unwrap();
        assert_eq!((answer.dest, answer.ttl), (inv_addr, None));
        let later = now + every * 5;
        p.handle_timeout(later);
        while let Some(t) = p.poll_transmit(later) {
            assert_eq!(t.ttl, None, "no punch once the inviter is heard");
        }
    }

    #[test]
    fn no_punch_from_a_public_address_and_never_probe_the_peer() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_nonblocking(true).unwrap();
        let now = Instant::now();
        let mut core = Handshake::new(
            Role::Acceptor,
            &secrets(),
            [5; 16],
            vec![],
            now,
            Config::default(),
        );
        let own = s.local_addr().unwrap(); // "mapped" = a local address: no NAT
        let pa = peer.local_addr().unwrap();
        let r = acceptor_punch(
            &s,
            &mut core,
            pa,
            own,
            PunchHops::Auto,
            pa,
            &HopsConfig::default(),
            false,
        );
        assert_eq!(r.unwrap(), None);
        let mut buf = [0u8; 64];
        assert!(peer.recv_from(&mut buf).is_err(), "nothing was sent");
        // Behind a NAT (a mapped address that is not ours) with the peer as probe target.
        let mapped: SocketAddr = "192.0.2.255:4000".parse().unwrap();
        let r = acceptor_punch(
            &s,
            &mut core,
            pa,
            mapped,
            PunchHops::Auto,
            pa,
            &HopsConfig::default(),
            false,
        );
        assert!(matches!(r, Err(PunchError::Io(_))), "{r:?}");
        // A fixed TTL needs no probe: the punch goes out.
        let r = acceptor_punch(
            &s,
            &mut core,
            pa,
            mapped,
            PunchHops::Fixed(4),
            pa,
            &HopsConfig::default(),
            false,
        );
        assert_eq!(r.unwrap(), Some(4));
        peer.set_nonblocking(false).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(peer.recv_from(&mut buf).unwrap().0, wire::PACKET_LEN);
    }

    #[test]
    fn loopback_silent_peer_times_out() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let now = Instant::now();
        let cfg = Config {
            timeout: Duration::from_millis(300),
            ..Config::default()
        };
        let inv = Handshake::new(
            Role::Inviter,
            &secrets(),
            [1; 16],
            vec![silent.local_addr().unwrap()],
            now,
            cfg,
        );
        let err = run_handshake(&a, inv, now + Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, PunchError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("timed out"));
        // Forged junk on the wire is counted, not fatal.
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let now = Instant::now();
        let acc = Handshake::new(
            Role::Acceptor,
            &secrets(),
            [1; 16],
            vec![],
            now,
            Config {
                timeout: Duration::from_millis(300),
                ..Config::default()
            },
        );
        a.send_to(b"PLXH junk", b.local_addr().unwrap()).unwrap();
        match run_handshake(&b, acc, now + Duration::from_secs(5)) {
            Err(PunchError::Timeout { stats, .. }) => assert_eq!(stats.malformed, 1),
            other => panic!("{other:?}"),
        }
    }
}
