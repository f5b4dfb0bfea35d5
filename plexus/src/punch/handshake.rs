//! The corridor handshake as a sans-IO, clock-free state machine.
//!
//! The article's exchange: every packet says whether its sender has already seen a valid
//! packet from the peer (flag 0 / flag 1). The inviter speaks first, to every candidate
//! endpoint of the acceptor; the acceptor stays silent (its NAT was opened by the low-TTL
//! punch) until it hears the inviter, then answers. A side is *connected* once it has both
//! sent flag 1 and received flag 1. Packets also carry a "done" bit so a finished side
//! can stop lingering as soon as it knows its peer finished too; otherwise it lingers
//! for [`Config::linger`], retransmitting and answering so the peer can finish.
//!
//! Driving loop (any transport, any clock):
//! 1. feed each received datagram to [`Handshake::handle_datagram`];
//! 2. send everything [`Handshake::poll_transmit`] returns (it also runs due timers);
//! 3. drain [`Handshake::poll_event`];
//! 4. wait for a datagram until [`Handshake::poll_timeout`] (or stop when it is `None`).
//!
//! Source addresses: a valid packet is accepted from *any* source, and the source of the
//! newest valid packet becomes the peer endpoint. The MAC already proves the peer sent it
//! (an off-path host cannot forge one, and replays are dropped by sequence number), NATs
//! remap ports and, with non-paired address pooling (RFC 4787 §4.1), even addresses, and
//! peers behind one NAT may answer from a local address not in the list. Only an on-path
//! attacker could redirect us, and such an attacker controls an unauthenticated UDP path
//! anyway. Each such case is counted in [`Stats::new_source`] and logged.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::wire::{self, Keys, Packet, Role, Secrets, WireError, FLAG_DONE, FLAG_SEEN};
use crate::executor::SessionKey;

/// Timing of the handshake.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Give up when not connected this long after [`Handshake::new`].
    pub timeout: Duration,
    /// First retransmission interval.
    pub initial_rto: Duration,
    /// Each retransmission interval is the previous one times this (≥ 1).
    pub rto_factor: f64,
    /// Upper bound of the retransmission interval.
    pub max_rto: Duration,
    /// How long a connected side keeps answering so that its peer can finish.
    pub linger: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeout: Duration::from_secs(10),
            initial_rto: Duration::from_millis(100),
            rto_factor: 1.5,
            max_rto: Duration::from_millis(500),
            linger: Duration::from_secs(2),
        }
    }
}

/// Why a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailReason {
    /// No valid exchange with the peer within [`Config::timeout`].
    Timeout,
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::Timeout => f.write_str("the peer did not complete the handshake in time"),
        }
    }
}

/// What the handshake reports to its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Both flags exchanged; the corridor is open toward `peer`. The core keeps answering
    /// (linger) until [`Event::Closed`].
    Connected {
        /// The peer endpoint at that moment; a later remap can still move it, so the
        /// driver reads [`Handshake::peer`] when the handshake closes.
        peer: SocketAddr,
    },
    /// The handshake gave up.
    Failed(FailReason),
    /// Linger over (or the peer is known to be done): the socket may be released.
    Closed,
}

/// Counters of what came in, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to [`Handshake::handle_datagram`].
    pub received: u64,
    /// Valid, fresh packets from the peer.
    pub accepted: u64,
    /// Not a plexus handshake packet at all.
    pub malformed: u64,
    /// Handshake packets of another session.
    pub wrong_session: u64,
    /// Packets claiming our own direction (reflections).
    pub wrong_direction: u64,
    /// Packets whose MAC did not verify (forgeries, other keys).
    pub bad_mac: u64,
    /// Valid packets whose sequence number was already seen or is too old (replays,
    /// network duplicates).
    pub replayed: u64,
    /// Times the peer endpoint changed to a new source (NAT remap, other address).
    pub new_source: u64,
    /// Datagrams returned by [`Handshake::poll_transmit`].
    pub sent: u64,
    /// Datagrams after the handshake ended (closed or failed), ignored.
    pub late: u64,
}

/// Sliding-window replay filter over a direction's sequence numbers (like IPsec's).
#[derive(Debug, Default)]
struct ReplayWindow {
    highest: Option<u64>,
    /// Bit i set: `highest - i` was seen.
    bits: u64,
}

impl ReplayWindow {
    /// Records `seq`; false when it was seen already or falls behind the window.
    fn check_and_set(&mut self, seq: u64) -> bool {
        match self.highest {
            None => {
                self.highest = Some(seq);
                self.bits = 1;
                true
            }
            Some(h) if seq > h => {
                let shift = seq - h;
                self.bits = if shift >= 64 { 0 } else { self.bits << shift };
                self.bits |= 1;
                self.highest = Some(seq);
                true
            }
            Some(h) => {
                let back = h - seq;
                if back >= 64 || self.bits & (1 << back) != 0 {
                    false
                } else {
                    self.bits |= 1 << back;
                    true
                }
            }
        }
    }
}

/// How far the peer has come, by the newest flags it sent; it never goes back (a late,
/// reordered packet with fewer flags changes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PeerProgress {
    /// Its packet says it has not seen ours yet (flag 0).
    Calling,
    /// It has seen a packet of ours (flag 1).
    SawUs,
    /// It has seen ours and finished. A "done" bit without "seen" (which no peer of ours
    /// sends) counts as nothing more than the "seen" bit beside it.
    Done,
}

impl PeerProgress {
    fn of(flags: u8) -> PeerProgress {
        match (flags & FLAG_SEEN != 0, flags & FLAG_DONE != 0) {
            (true, true) => PeerProgress::Done,
            (true, false) => PeerProgress::SawUs,
            (false, _) => PeerProgress::Calling,
        }
    }
}

/// Where one side is. A phase holds what only it needs, so no combination of flags can
/// contradict another (the five booleans this replaces could). Not one type per phase,
/// rustls style: the driver keeps one `Handshake` across `&mut` calls whatever arrives,
/// so the phases change inside it, and every `match` on them below is exhaustive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing valid from the peer yet: the inviter calls its candidates with flag 0,
    /// the acceptor waits.
    Waiting,
    /// The peer was heard: every packet now carries flag 1 ("seen"), and "done" too once
    /// the peer has seen ours; the first such packet sent connects.
    Heard(PeerProgress),
    /// Connected (sent flag 1 and "done", and heard flag 1): answering until `until` or
    /// until the peer is known to be done too.
    Lingering { until: Instant, peer_done: bool },
    /// Finished after connecting.
    Closed,
    /// Gave up before connecting.
    Failed { heard_peer: bool },
}

/// One side of the corridor handshake. See the module docs for the driving loop.
pub struct Handshake {
    role: Role,
    keys: Keys,
    session_id: [u8; 16],
    candidates: Vec<SocketAddr>,
    config: Config,
    deadline: Instant,
    phase: Phase,
    next_seq: u64,
    replay: ReplayWindow,
    peer: Option<SocketAddr>,
    /// Sequence number of the newest valid packet: only a newer packet may move `peer`,
    /// so a late, reordered packet from an old port does not undo a remap.
    peer_seq: u64,
    rto: Duration,
    next_retransmit: Option<Instant>,
    pending: VecDeque<SocketAddr>,
    events: VecDeque<Event>,
    stats: Stats,
    /// Nominating side with several paths: say "seen" only once released ([`Handshake::hold`]).
    held: bool,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("phase", &self.phase)
            .field("peer", &self.peer)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Start a handshake at `now`. `peer_candidates` are the peer's endpoints from the
    /// rendezvous message (mapped first, then local ones for peers behind the same NAT);
    /// only the inviter sends to them unprompted.
    pub fn new(
        role: Role,
        secrets: &Secrets,
        session_id: [u8; 16],
        peer_candidates: Vec<SocketAddr>,
        now: Instant,
        config: Config,
    ) -> Handshake {
        let mut candidates = Vec::new();
        for c in peer_candidates {
            if !candidates.contains(&c) {
                candidates.push(c);
            }
        }
        let rto = config.initial_rto;
        Handshake {
            role,
            keys: Keys::derive(secrets, &session_id),
            session_id,
            candidates,
            deadline: now + config.timeout,
            config,
            phase: Phase::Waiting,
            next_seq: 0,
            replay: ReplayWindow::default(),
            peer: None,
            peer_seq: 0,
            rto,
            next_retransmit: (role == Role::Inviter).then_some(now),
            pending: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            held: false,
        }
    }

    /// This handshake, holding back its "seen" flag until [`Handshake::release`]: the
    /// inviter's part of choosing one path among several (one per address family). The
    /// peer connects only once it hears "seen", so a held path cannot connect on either
    /// side, yet [`Handshake::path_proven`] says when it works both ways. While held, it
    /// calls with flag 0 on its retransmission timer only and does not answer each
    /// packet (the peer answers every flag 0, and answering back would ping-pong).
    pub fn hold(&mut self) {
        self.held = true;
    }

    /// Whether the "seen" flag is still held back.
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Stop holding: this path was chosen. The next packet (sent at once) says "seen",
    /// and "done" when the peer already saw ours, which connects this side.
    pub fn release(&mut self) {
        if !self.held {
            return;
        }
        self.held = false;
        if let (Phase::Heard(_), Some(peer)) = (self.phase, self.peer) {
            self.pending.push_back(peer);
        }
    }

    /// Whether a valid packet said the peer has heard ours: the path works both ways.
    pub fn path_proven(&self) -> bool {
        match self.phase {
            Phase::Heard(p) => p >= PeerProgress::SawUs,
            Phase::Lingering { .. } | Phase::Closed => true,
            Phase::Waiting | Phase::Failed { .. } => false,
        }
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The key for executors, derived from both secrets and the session id.
    pub fn session_key(&self) -> SessionKey {
        self.keys.session_key()
    }

    /// The peer endpoint currently in use (source of the newest valid packet).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// True once connected (also while lingering and after closing).
    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Lingering { .. } | Phase::Closed)
    }

    /// True while connected and still answering the peer.
    pub fn is_lingering(&self) -> bool {
        matches!(self.phase, Phase::Lingering { .. })
    }

    /// True when nothing more will happen (closed or failed).
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Closed | Phase::Failed { .. })
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether a valid packet from the peer has arrived (the punch worked).
    pub fn heard_peer(&self) -> bool {
        match self.phase {
            Phase::Waiting => false,
            Phase::Failed { heard_peer } => heard_peer,
            Phase::Heard(_) | Phase::Lingering { .. } | Phase::Closed => true,
        }
    }

    /// A packet for the acceptor's low-TTL punch toward the inviter. It is an ordinary
    /// flag-0 packet: if it does reach the inviter (an inviter without a filtering NAT),
    /// it simply starts the exchange.
    pub fn punch_packet(&mut self) -> Vec<u8> {
        self.packet(0)
    }

    fn packet(&mut self, flags: u8) -> Vec<u8> {
        let seq = self.next_seq;
        self.next_seq += 1;
        wire::encode(
            &self.keys,
            &Packet {
                sender: self.role,
                flags,
                session_id: self.session_id,
                seq,
            },
        )
    }

    /// Feed one datagram received from `from` at `now`. Anything that is not a valid,
    /// fresh packet of this session from the peer is counted and ignored.
    pub fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        self.handle_timeout(now);
        self.stats.received += 1;
        if self.is_finished() {
            self.stats.late += 1;
            return;
        }
        let p = match wire::decode(&self.keys, self.role.peer(), &self.session_id, bytes) {
            Ok(p) => p,
            Err(e) => {
                match e {
                    WireError::Malformed => self.stats.malformed += 1,
                    WireError::WrongSession => self.stats.wrong_session += 1,
                    WireError::WrongDirection => self.stats.wrong_direction += 1,
                    WireError::BadMac => self.stats.bad_mac += 1,
                }
                log::debug!("handshake: dropped datagram from {from}: {e}");
                return;
            }
        };
        if !self.replay.check_and_set(p.seq) {
            self.stats.replayed += 1;
            log::debug!("handshake: dropped replayed packet {} from {from}", p.seq);
            return;
        }
        self.stats.accepted += 1;
        if self.peer.is_none() || p.seq > self.peer_seq {
            if self.peer != Some(from) {
                if self.peer.is_some() || !self.candidates.contains(&from) {
                    self.stats.new_source += 1;
                    log::info!("handshake: peer now answers from {from}");
                }
                self.peer = Some(from);
            }
            self.peer_seq = p.seq;
        }
        let said = PeerProgress::of(p.flags);
        self.phase = match self.phase {
            Phase::Waiting => Phase::Heard(said),
            Phase::Heard(before) => Phase::Heard(before.max(said)),
            Phase::Lingering { until, peer_done } => Phase::Lingering {
                until,
                peer_done: peer_done || said == PeerProgress::Done,
            },
            // Returned above.
            finished @ (Phase::Closed | Phase::Failed { .. }) => finished,
        };
        // Answer unless the peer already has everything we could tell it: that is when
        // it is done and we told it we are done too (we have, once lingering). This rule
        // also ends ping-pong.
        if said == PeerProgress::Done && self.is_lingering() {
            self.close();
        } else if !self.held {
            self.pending.push_back(from);
        }
        if self.next_retransmit.is_none() {
            self.next_retransmit = Some(now + self.rto);
        }
    }

    /// Run timers due at `now` (also done by the other calls that take `now`).
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Waiting | Phase::Heard(_) if now >= self.deadline => {
                self.phase = Phase::Failed {
                    heard_peer: self.heard_peer(),
                };
                self.pending.clear();
                self.next_retransmit = None;
                log::info!("handshake: timed out after {:?}", self.config.timeout);
                self.events.push_back(Event::Failed(FailReason::Timeout));
            }
            Phase::Lingering { until, .. } if now >= until => self.close(),
            Phase::Waiting | Phase::Heard(_) | Phase::Lingering { .. } => {
                self.retransmit_if_due(now)
            }
            Phase::Closed | Phase::Failed { .. } => {}
        }
    }

    /// Retransmissions go on while lingering too (until the peer says it is done), so a
    /// lost final flag-1 packet is repaired from both ends.
    fn retransmit_if_due(&mut self, now: Instant) {
        let Some(t) = self.next_retransmit else {
            return;
        };
        if now < t {
            return;
        }
        match self.peer {
            Some(p) => self.pending.push_back(p),
            None => self.pending.extend(self.candidates.iter().copied()),
        }
        self.next_retransmit = Some(now + self.rto);
        self.rto = self.rto.mul_f64(self.config.rto_factor.max(1.0));
        if self.rto > self.config.max_rto {
            self.rto = self.config.max_rto;
        }
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.pending.clear();
        self.events.push_back(Event::Closed);
    }

    /// The next datagram to send, if any, as (destination, bytes).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        self.handle_timeout(now);
        // Closing and failing empty the queue, and nothing fills it afterwards.
        let dest = self.pending.pop_front()?;
        let flags = match self.phase {
            Phase::Waiting => 0,
            Phase::Heard(_) if self.held => 0,
            Phase::Heard(PeerProgress::Calling) => FLAG_SEEN,
            Phase::Heard(_) | Phase::Lingering { .. } => FLAG_SEEN | FLAG_DONE,
            Phase::Closed | Phase::Failed { .. } => return None,
        };
        let bytes = self.packet(flags);
        self.stats.sent += 1;
        if let Phase::Heard(progress) = self.phase {
            if flags & FLAG_DONE != 0 {
                let peer = self.peer.unwrap_or(dest);
                self.phase = Phase::Lingering {
                    until: now + self.config.linger,
                    peer_done: progress == PeerProgress::Done,
                };
                log::info!("handshake: connected to {peer}");
                self.events.push_back(Event::Connected { peer });
            }
        }
        if matches!(
            self.phase,
            Phase::Lingering {
                peer_done: true,
                ..
            }
        ) && self.pending.is_empty()
        {
            self.close();
        }
        Some((dest, bytes))
    }

    /// When the driver must call back (with [`Handshake::poll_transmit`]) even if no
    /// datagram arrives; `None` once finished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting | Phase::Heard(_) => Some(match self.next_retransmit {
                Some(t) => t.min(self.deadline),
                None => self.deadline,
            }),
            Phase::Lingering { until, .. } => Some(match self.next_retransmit {
                Some(t) => t.min(until),
                None => until,
            }),
            Phase::Closed | Phase::Failed { .. } => None,
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}
