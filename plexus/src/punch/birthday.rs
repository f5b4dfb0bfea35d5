//! Port prediction by the birthday paradox, for a pair where one NAT maps per
//! destination ("hard") and the other filters per port ("easy", endpoint-independent
//! mapping, so its public endpoint is known).
//!
//! The hard side opens `n` sockets and sends one packet from each toward the easy side's
//! public endpoint, at a TTL that leaves its own NAT (creating `n` mappings, each
//! admitting exactly that endpoint) but dies before the easy side's NAT: a packet that
//! reached a Linux port-restricted NAT before its host had sent toward that peer would
//! make the NAT remap the host's port. The easy side sends probes from its one socket to
//! random ports of the hard side's public address; its own NAT then admits replies from
//! each probed port. A probe that lands on one of the `n` mappings is answered, and the
//! ordinary authenticated handshake completes on that path. With `n` mappings among `P`
//! ports, `k` distinct probes all miss with probability about `(1 - n/P)^k`: 256 × 1,024
//! over 64,512 ports misses 1.7 % of the time, 256 × 2,048 0.03 %.
//!
//! Both sides are [`Core`]s around the usual [`Handshake`]: every probe and opener is a
//! handshake packet (MAC, session id, sequence number), so whatever lands is
//! authenticated by the handshake itself and anything else is discarded by it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::handshake::{Event, Handshake};
use crate::sansio::{Core, Transmit};

/// Lowest port a NAT hands out for a high source port (Linux: 1024..=65535).
pub const FIRST_PORT: u16 = 1024;

/// The easy side's probing limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeLimits {
    /// Most probes sent in all.
    pub budget: u32,
    /// Probes per second.
    pub rate: u32,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        ProbeLimits {
            budget: crate::defaults::BIRTHDAY_PROBES,
            rate: crate::defaults::BIRTHDAY_RATE,
        }
    }
}

/// What the birthday cores counted, for the progress line and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BirthdayStats {
    /// Openers (hard side) or probes (easy side) sent.
    pub sent: u32,
    /// The hard side's socket the peer was first heard on.
    pub winner: Option<usize>,
}

/// The hard side: `sockets` sockets, openers toward the easy side's public endpoint at
/// `ttl`, repeated every `refresh` (an unanswered UDP mapping expires: 30 s on Linux)
/// until the peer is heard; from then on, the handshake runs on the socket it was
/// heard on, at the socket's own TTL.
#[derive(Debug)]
pub struct Opener {
    inner: Handshake,
    sockets: usize,
    dest: SocketAddr,
    ttl: u8,
    refresh: Duration,
    next_round: Option<Instant>,
    /// Sockets still to send from in the current round.
    cursor: usize,
    stats: BirthdayStats,
}

impl Opener {
    /// Openers from `sockets` sockets (indices `0..sockets` of the driver) toward `dest`,
    /// the first round at `now`.
    pub fn new(
        inner: Handshake,
        sockets: usize,
        dest: SocketAddr,
        ttl: u8,
        refresh: Duration,
        now: Instant,
    ) -> Opener {
        Opener {
            inner,
            sockets,
            dest,
            ttl,
            refresh,
            next_round: Some(now),
            cursor: 0,
            stats: BirthdayStats::default(),
        }
    }

    /// The handshake inside.
    pub fn handshake(&self) -> &Handshake {
        &self.inner
    }

    /// The handshake inside, to hold or release it.
    pub fn handshake_mut(&mut self) -> &mut Handshake {
        &mut self.inner
    }

    /// Openers sent and the winning socket.
    pub fn stats(&self) -> BirthdayStats {
        self.stats
    }
}

impl Core for Opener {
    type Event = Event;

    fn handle_input(&mut self, now: Instant, socket: usize, from: SocketAddr, bytes: &[u8]) {
        let before = self.inner.stats().accepted;
        self.inner.handle_datagram(from, bytes, now);
        if self.stats.winner.is_none() && self.inner.stats().accepted > before {
            log::info!(
                "birthday: probe from {from} landed on socket {socket} of {} ({} openers sent)",
                self.sockets,
                self.stats.sent
            );
            self.stats.winner = Some(socket);
            self.next_round = None;
            self.cursor = 0;
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
        if self.inner.is_finished() {
            self.next_round = None;
            self.cursor = 0;
        }
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        match self.stats.winner {
            Some(socket) => {
                let (dest, payload) = self.inner.poll_transmit(now)?;
                Some(Transmit {
                    socket,
                    dest,
                    payload,
                    ttl: None,
                })
            }
            None => {
                // Until a probe lands, the handshake's own calls would go out at full TTL
                // toward the easy side's NAT: exactly what must not happen. Drop them.
                while self.inner.poll_transmit(now).is_some() {}
                if self.cursor == 0 {
                    match self.next_round {
                        Some(t) if now >= t => {
                            self.cursor = self.sockets;
                            self.next_round = Some(now + self.refresh);
                        }
                        _ => return None,
                    }
                }
                let socket = self.sockets - self.cursor;
                self.cursor -= 1;
                self.stats.sent += 1;
                Some(Transmit {
                    socket,
                    dest: self.dest,
                    payload: self.inner.punch_packet(),
                    ttl: Some(self.ttl),
                })
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let t = self.inner.poll_timeout()?;
        Some(match (self.stats.winner, self.next_round) {
            (None, Some(r)) => t.min(r),
            _ => t,
        })
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.inner.poll_event()
    }
}

/// The easy side: probes from socket 0 to random, distinct ports of `target`, at most
/// `limits.budget` of them at `limits.rate` per second, until the peer is heard. The
/// handshake's own packets go out as usual.
#[derive(Debug)]
pub struct Prober {
    inner: Handshake,
    target: IpAddr,
    ports: PortOrder,
    limits: ProbeLimits,
    interval: Duration,
    next_probe: Option<Instant>,
    stats: BirthdayStats,
}

impl Prober {
    /// Probing `target` from `now`, in a random order seeded by `seed`.
    pub fn new(
        inner: Handshake,
        target: IpAddr,
        limits: ProbeLimits,
        seed: u64,
        now: Instant,
    ) -> Prober {
        let rate = limits.rate.max(1);
        Prober {
            inner,
            target,
            ports: PortOrder::new(seed),
            limits,
            interval: Duration::from_secs(1) / rate,
            next_probe: (limits.budget > 0).then_some(now),
            stats: BirthdayStats::default(),
        }
    }

    /// The handshake inside.
    pub fn handshake(&self) -> &Handshake {
        &self.inner
    }

    /// The handshake inside, to hold or release it.
    pub fn handshake_mut(&mut self) -> &mut Handshake {
        &mut self.inner
    }

    /// Probes sent.
    pub fn stats(&self) -> BirthdayStats {
        self.stats
    }

    fn stop_if_done(&mut self) {
        if self.next_probe.is_some()
            && (self.inner.heard_peer()
                || self.inner.is_finished()
                || self.stats.sent >= self.limits.budget)
        {
            if self.inner.heard_peer() {
                let from = self.inner.peer().map(|p| p.to_string()).unwrap_or_default();
                log::info!(
                    "birthday: the peer answered from {from} after {} probes",
                    self.stats.sent
                );
            } else if self.stats.sent >= self.limits.budget {
                log::info!("birthday: probe budget of {} spent", self.limits.budget);
            }
            self.next_probe = None;
        }
    }
}

impl Core for Prober {
    type Event = Event;

    fn handle_input(&mut self, now: Instant, _socket: usize, from: SocketAddr, bytes: &[u8]) {
        self.inner.handle_datagram(from, bytes, now);
        self.stop_if_done();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
        self.stop_if_done();
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if let Some((dest, payload)) = self.inner.poll_transmit(now) {
            return Some(Transmit::to(dest, payload));
        }
        self.stop_if_done();
        let due = self.next_probe?;
        if now < due {
            return None;
        }
        // Catch up after a late wakeup, but never burst more than 50 ms worth.
        let floor = now.checked_sub(Duration::from_millis(50)).unwrap_or(now);
        self.next_probe = Some(due.max(floor) + self.interval);
        let port = self.ports.next_port()?;
        self.stats.sent += 1;
        Some(Transmit::to(
            SocketAddr::new(self.target, port),
            self.inner.punch_packet(),
        ))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let t = self.inner.poll_timeout()?;
        Some(self.next_probe.map_or(t, |p| t.min(p)))
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.inner.poll_event()
    }
}

/// Every port of `FIRST_PORT..=65535` once, in a pseudo-random order: a full-period
/// affine map `i -> (a*i + b) mod P` with `a` coprime to `P`, so no port repeats and
/// no table is needed.
#[derive(Debug, Clone)]
struct PortOrder {
    a: u64,
    b: u64,
    i: u64,
}

const PORTS: u64 = 65536 - FIRST_PORT as u64;

impl PortOrder {
    fn new(seed: u64) -> PortOrder {
        // P = 64512 = 2^10 * 3^2 * 7: any a not divisible by 2, 3 or 7 is coprime.
        let mut a = (seed >> 16) % PORTS;
        while a % 2 == 0 || a % 3 == 0 || a % 7 == 0 {
            a = (a + 1) % PORTS;
        }
        PortOrder {
            a,
            b: seed % PORTS,
            i: 0,
        }
    }

    fn next_port(&mut self) -> Option<u16> {
        if self.i >= PORTS {
            return None;
        }
        let p = (self.a * self.i + self.b) % PORTS;
        self.i += 1;
        Some(FIRST_PORT + p as u16)
    }
}

/// A seed for the probe order from the system's random generator.
pub fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    if openssl::rand::rand_bytes(&mut b).is_err() {
        // Not a secret: the order only needs to differ between runs.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ u64::from(std::process::id());
    }
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::punch::{handshake::Config, Role, Secrets};
    use std::collections::HashSet;

    #[test]
    fn the_port_order_visits_every_port_once() {
        for seed in [0, 1, 0xdead_beef, u64::MAX] {
            let mut o = PortOrder::new(seed);
            let mut seen = HashSet::new();
            while let Some(p) = o.next_port() {
                assert!(p >= FIRST_PORT);
                assert!(seen.insert(p), "port {p} twice (seed {seed})");
            }
            assert_eq!(seen.len() as u64, PORTS);
        }
    }

    fn pair() -> (Handshake, Handshake) {
        let secrets = Secrets {
            inviter: [1; 32],
            acceptor: [2; 32],
        };
        let now = Instant::now();
        let cfg = Config::default();
        (
            Handshake::new(Role::Inviter, &secrets, [7; 16], vec![], now, cfg.clone()),
            Handshake::new(Role::Acceptor, &secrets, [7; 16], vec![], now, cfg),
        )
    }

    #[test]
    fn the_opener_sends_one_low_ttl_packet_per_socket_per_round_and_nothing_else() {
        let (inviter, _) = pair();
        let t0 = Instant::now();
        let dest: SocketAddr = "198.51.100.2:4000".parse().unwrap();
        let mut o = Opener::new(inviter, 4, dest, 3, Duration::from_secs(10), t0);
        let round: Vec<Transmit> = std::iter::from_fn(|| o.poll_transmit(t0)).collect();
        assert_eq!(
            round.iter().map(|t| t.socket).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert!(round.iter().all(|t| t.ttl == Some(3) && t.dest == dest));
        // Nothing more until the refresh, whatever the handshake's own timers say.
        let t1 = t0 + Duration::from_secs(5);
        o.handle_timeout(t1);
        assert!(o.poll_transmit(t1).is_none());
        let t2 = t0 + Duration::from_secs(10);
        assert_eq!(std::iter::from_fn(|| o.poll_transmit(t2)).count(), 4);
        assert_eq!(o.stats().sent, 8);
    }

    #[test]
    fn a_landed_probe_moves_the_handshake_to_its_socket_at_full_ttl() {
        let (inviter, acceptor) = pair();
        let t0 = Instant::now();
        let easy: SocketAddr = "198.51.100.2:4000".parse().unwrap();
        let hard_ip: IpAddr = "198.51.100.9".parse().unwrap();
        // The acceptor is hard here; the inviter probes.
        let mut hard = Opener::new(acceptor, 8, easy, 2, Duration::from_secs(10), t0);
        let limits = ProbeLimits {
            budget: 10,
            rate: 1000,
        };
        let mut easy_side = Prober::new(inviter, hard_ip, limits, 42, t0);
        while hard.poll_transmit(t0).is_some() {}
        // Probes: every one is a valid handshake packet; deliver the third to socket 5.
        let mut probes = Vec::new();
        let mut t = t0;
        while probes.len() < 3 {
            t += Duration::from_millis(1);
            while let Some(p) = easy_side.poll_transmit(t) {
                probes.push(p);
            }
        }
        assert!(probes
            .iter()
            .all(|p| p.dest.ip() == hard_ip && p.ttl.is_none()));
        let landed = &probes[2];
        hard.handle_input(t, 5, easy, &landed.payload);
        assert_eq!(hard.stats().winner, Some(5));
        let reply = hard.poll_transmit(t).expect("the hard side answers");
        assert_eq!((reply.socket, reply.dest, reply.ttl), (5, easy, None));
        // The answer comes from the probed port: the prober stops probing.
        let from = SocketAddr::new(hard_ip, landed.dest.port());
        easy_side.handle_input(t, 0, from, &reply.payload);
        let sent = easy_side.stats().sent;
        t += Duration::from_secs(1);
        while let Some(p) = easy_side.poll_transmit(t) {
            assert_eq!(p.dest, from, "after the answer only the handshake talks");
        }
        assert_eq!(easy_side.stats().sent, sent);
        assert_eq!(easy_side.handshake().peer(), Some(from));
    }

    #[test]
    fn probing_respects_budget_and_rate() {
        let (inviter, _) = pair();
        let t0 = Instant::now();
        let limits = ProbeLimits {
            budget: 500,
            rate: 200,
        };
        let mut p = Prober::new(inviter, "198.51.100.9".parse().unwrap(), limits, 7, t0);
        let mut by_second = [0u32; 4];
        let mut t = t0;
        while t < t0 + Duration::from_secs(4) {
            while let Some(tx) = p.poll_transmit(t) {
                assert_eq!(tx.dest.ip(), "198.51.100.9".parse::<IpAddr>().unwrap());
                by_second[(t - t0).as_secs() as usize] += 1;
            }
            // Late wakeups (every 30 ms here) are caught up, not lost.
            t += Duration::from_millis(30);
        }
        assert_eq!(p.stats().sent, 500);
        assert_eq!(by_second[..3].iter().sum::<u32>(), 500, "{by_second:?}");
        assert!((195..=205).contains(&by_second[0]), "{by_second:?}");
        assert!((195..=205).contains(&by_second[1]), "{by_second:?}");
        assert_eq!(by_second[3], 0, "{by_second:?}");
    }
}
