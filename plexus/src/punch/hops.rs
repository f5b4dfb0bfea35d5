//! How far the punch packet must go: just past the own NAT, and no further.
//!
//! The acceptor's punch must open its own NAT toward the inviter but die before the
//! inviter's NAT (a packet arriving there unasked can make that NAT pick a new mapping,
//! and the corridor fails). We probe toward a target that is *not* the peer (the STUN
//! server) with TTL 1, 2, 3… on the very UDP socket and read the ICMP time-exceeded
//! answers from the socket's error queue (`IP_RECVERR`, `MSG_ERRQUEUE`): no raw sockets,
//! no privileges. [`HopProbe`] is the pure part; [`probe_hops`] runs it over the socket
//! with [`crate::net::drive`], which owns the error-queue code. The first hop that
//! answers from a public address is the first router past the own NAT(s); punching
//! with that TTL makes the packet die there.
//!
//! IPv6 works the same way with the hop limit (`IPV6_UNICAST_HOPS`) and ICMPv6
//! time-exceeded (`IPV6_RECVERR`), but needs its own rule to pick the TTL: there is
//! usually no NAT, only the own router's stateful firewall, and every router answers
//! from a global address, so "the first public hop" would be hop 1, where the punch dies
//! *before* the firewall forwards it and makes its state. The IPv6 rule
//! ([`choose_punch_ttl_for`]): the first hop outside every /64 of this host's own
//! addresses (the own router answers from the host's own /64, or from a ULA behind
//! NAT66), and never less than 2.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::sansio::{Core, IcmpReport, Transmit};

/// TTL used when no hop answered at all. 2 is the smallest TTL that passes one NAT and
/// what a single home NAT needs; a larger guess (the original's 7) reaches the peer's
/// NAT on short paths and breaks port-restricted pairs silently, which is worse than a
/// punch that falls short. The user can always set a number.
pub const FALLBACK_TTL: u8 = 2;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PunchHops {
    /// Probe and choose (the default).
    #[default]
    Auto,
    /// Use this TTL (1–255) as given.
    Fixed(u8),
}

impl fmt::Display for PunchHops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PunchHops::Auto => f.write_str("auto"),
            PunchHops::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for PunchHops {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(PunchHops::Auto);
        }
        match s.parse::<u8>() {
            Ok(n) if n >= 1 => Ok(PunchHops::Fixed(n)),
            _ => Err(format!(
                "punch hops {s:?}: expected `auto` or a TTL between 1 and 255"
            )),
        }
    }
}

/// An address a public-internet router could have. The lab's TEST-NETs
/// (192.0.2/24, 198.51.100/24, 203.0.113/24) count as public on purpose.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Choose the punch TTL from IPv4 probe observations `(ttl, address that answered)`:
/// - the smallest TTL whose answer came from a public address (the first router past
///   the own NAT, or the target itself when no router lies between);
/// - else, when only private hops answered, one past the deepest of them;
/// - else [`FALLBACK_TTL`].
///
/// The same as [`choose_punch_ttl_for`] with no own addresses, for IPv4 observations.
pub fn choose_punch_ttl(observations: &[(u8, IpAddr)]) -> u8 {
    if let Some(ttl) = observations
        .iter()
        .filter(|(_, ip)| is_public(*ip))
        .map(|(t, _)| *t)
        .min()
    {
        return ttl;
    }
    match observations.iter().map(|(t, _)| *t).max() {
        Some(t) => t.saturating_add(1),
        None => FALLBACK_TTL,
    }
}

/// Whether `ip` is in the same /64 as one of the host's own IPv6 addresses `own`.
/// IPv4 addresses are never "own prefix" (the IPv4 rule has NATs to go by).
pub fn in_own_prefix(ip: IpAddr, own: &[IpAddr]) -> bool {
    let IpAddr::V6(ip) = ip else { return false };
    let net = |a: std::net::Ipv6Addr| u128::from(a) >> 64;
    own.iter().any(|o| match o {
        IpAddr::V6(o) => net(*o) == net(ip),
        IpAddr::V4(_) => false,
    })
}

/// Whether a responder is past the own router: public, and for IPv6 also outside
/// every /64 of the host's own addresses.
fn past_own_router(ip: IpAddr, own: &[IpAddr]) -> bool {
    is_public(ip) && !in_own_prefix(ip, own)
}

/// Choose the punch TTL from probe observations, knowing the host's own addresses
/// `own` (its interface addresses, [`local_addresses`]):
/// - IPv4 observations: exactly [`choose_punch_ttl`] (own addresses play no part);
/// - IPv6 observations: the smallest TTL whose responder is public and outside every
///   /64 of `own` (the own router answers from the host's /64, or from a ULA behind
///   NAT66, and a punch that dies there makes no firewall state); else, when only
///   own-prefix or private hops answered, one past the deepest; never less than 2;
/// - nothing observed: [`FALLBACK_TTL`].
pub fn choose_punch_ttl_for(observations: &[(u8, IpAddr)], own: &[IpAddr]) -> u8 {
    let past = observations
        .iter()
        .filter(|(_, ip)| past_own_router(*ip, own))
        .map(|(t, _)| *t)
        .min();
    let ttl = match (past, observations.iter().map(|(t, _)| *t).max()) {
        (Some(t), _) => t,
        (None, Some(deepest)) => deepest.saturating_add(1),
        (None, None) => return FALLBACK_TTL,
    };
    if observations.iter().any(|(_, ip)| ip.is_ipv6()) {
        ttl.max(2)
    } else {
        ttl
    }
}

/// Whether this side is behind a NAT at all: a mapped address equal to one of the
/// host's own addresses means no NAT, and then no punch is sent.
pub fn needs_punch(mapped: IpAddr, local: &[IpAddr]) -> bool {
    !local.contains(&mapped)
}

/// [`needs_punch`] against this host's interface addresses.
pub fn behind_nat(mapped: IpAddr) -> io::Result<bool> {
    Ok(needs_punch(mapped, &local_addresses()?))
}

// Their old home: callers (the session, the fuzz targets) keep these names.
pub use crate::net::{local_addresses, parse_extended_err, send_with_ttl};

/// Limits of the hop probe.
#[derive(Debug, Clone)]
pub struct HopsConfig {
    /// Highest TTL probed.
    pub max_ttl: u8,
    /// How long to wait for the answer to one probe.
    pub per_probe: Duration,
}

impl Default for HopsConfig {
    fn default() -> Self {
        HopsConfig {
            max_ttl: 8,
            per_probe: Duration::from_millis(250),
        }
    }
}

const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_DEST_UNREACH: u8 = 3;
/// Every probe starts with this and its TTL, so an ICMP error quoting it says which
/// probe died where.
const PROBE_MAGIC: &[u8; 4] = b"PLXP";

/// The hop probe's pure part: probes toward a target with TTL 1, 2, 3…, one at a time,
/// each waiting [`HopsConfig::per_probe`] for an answer, and collects the observations
/// `(ttl, responder)`: ICMP time-exceeded and unreachable offenders, and the target
/// itself when a datagram comes from it. It moves on to the next TTL once the current
/// one was answered or timed out, and finishes at the first responder past the own
/// router (public, and for IPv6 outside the host's /64s) of the current TTL or of an
/// earlier one answering late, when the target answers, or after
/// [`HopsConfig::max_ttl`]. Its one event is the
/// observations. IPv4 and IPv6 alike; for IPv6, give the host's own addresses
/// ([`HopProbe::own_addresses`]) so that the own router, which answers from the host's
/// /64, does not count as "public" and the walk goes one hop further (the IPv6 rule of
/// [`choose_punch_ttl_for`]).
#[derive(Debug)]
pub struct HopProbe {
    target: SocketAddr,
    /// The host's own addresses: a responder in one of their /64s is not past the own
    /// router.
    own: Vec<IpAddr>,
    max_ttl: u8,
    per_probe: Duration,
    /// The TTL being probed.
    ttl: u8,
    /// The probe for `ttl` is due then (not sent yet).
    send_at: Option<Instant>,
    /// The probe for `ttl` was sent; its answers count until then.
    until: Option<Instant>,
    obs: Vec<(u8, IpAddr)>,
    finished: bool,
    event: Option<Vec<(u8, IpAddr)>>,
}

impl HopProbe {
    /// A probe toward `target` (never the peer: probes must not open a mapping toward
    /// it), starting at `now`.
    pub fn new(target: SocketAddr, config: &HopsConfig, now: Instant) -> HopProbe {
        let mut p = HopProbe {
            target,
            own: Vec::new(),
            max_ttl: config.max_ttl,
            per_probe: config.per_probe,
            ttl: 1,
            send_at: Some(now),
            until: None,
            obs: Vec::new(),
            finished: false,
            event: None,
        };
        if p.max_ttl == 0 {
            p.finish();
        }
        p
    }

    /// The host's own addresses ([`local_addresses`]): an IPv6 responder in one of their
    /// /64s is the own router, and the probe goes on past it.
    pub fn own_addresses(mut self, own: Vec<IpAddr>) -> HopProbe {
        self.own = own;
        self
    }

    /// What was observed so far.
    pub fn observations(&self) -> &[(u8, IpAddr)] {
        &self.obs
    }

    fn finish(&mut self) {
        self.finished = true;
        self.send_at = None;
        self.until = None;
        self.event = Some(self.obs.clone());
    }

    fn next_ttl(&mut self, now: Instant) {
        if self.ttl >= self.max_ttl {
            self.finish();
        } else {
            self.ttl += 1;
            self.send_at = Some(now);
            self.until = None;
        }
    }
}

/// The TTL a probe payload carries, if it is one of ours.
fn quoted_ttl(payload: &[u8]) -> Option<u8> {
    match payload {
        [m0, m1, m2, m3, ttl, ..] if [*m0, *m1, *m2, *m3] == *PROBE_MAGIC => Some(*ttl),
        _ => None,
    }
}

impl Core for HopProbe {
    type Event = Vec<(u8, IpAddr)>;
    const WANTS_ICMP: bool = true;

    fn handle_input(&mut self, _now: Instant, _socket: usize, from: SocketAddr, _bytes: &[u8]) {
        // A datagram from the target itself (a STUN server answering the probe, say)
        // means the probe got all the way there.
        if !self.finished && from.ip() == self.target.ip() {
            self.obs.push((self.ttl, from.ip()));
            self.finish();
        }
    }

    fn handle_icmp(&mut self, now: Instant, _socket: usize, report: &IcmpReport) {
        if self.finished {
            return;
        }
        let Some(off) = report.offender else { return };
        if !matches!(report.icmp_type, ICMP_TIME_EXCEEDED | ICMP_DEST_UNREACH) {
            return;
        }
        let at = quoted_ttl(&report.quoted).unwrap_or(self.ttl);
        self.obs.push((at, off));
        log::debug!(
            "hop probe ttl {at}: ICMP type {} from {off}",
            report.icmp_type
        );
        // A hop past the own router at this TTL or an earlier one (a late answer) fixes
        // the choice, which takes the smallest: deeper probes cannot change it. The
        // target itself answering (port unreachable) ends the walk too: nothing lies
        // beyond it, whatever its address.
        if at <= self.ttl
            && (past_own_router(off, &self.own) || off == self.target.ip().to_canonical())
        {
            self.finish();
        } else if self.until.is_some() && self.obs.iter().any(|(t, _)| *t == self.ttl) {
            self.next_ttl(now);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.until.is_some_and(|u| now >= u) {
            self.next_ttl(now);
        }
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let due = self.send_at.filter(|t| *t <= now)?;
        self.send_at = None;
        self.until = Some(due.max(now) + self.per_probe);
        let mut payload = PROBE_MAGIC.to_vec();
        payload.push(self.ttl);
        Some(Transmit {
            socket: 0,
            dest: self.target,
            payload,
            ttl: Some(self.ttl),
        })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        self.send_at.or(self.until)
    }

    fn poll_event(&mut self) -> Option<Self::Event> {
        self.event.take()
    }
}

/// Probe toward `target` (never the peer: the probes must not open a mapping toward
/// it) with rising TTLs on `socket` and return the observations `(ttl, responder)`
/// ([`HopProbe`], driven by [`crate::net::drive`] with the socket's error queue on for
/// the run). Bounded by `max_ttl × per_probe`. For an IPv6 target the probe reads the
/// host's addresses ([`local_addresses`]) to walk past the own router.
pub fn probe_hops(
    socket: &UdpSocket,
    target: SocketAddr,
    config: &HopsConfig,
) -> io::Result<Vec<(u8, IpAddr)>> {
    let own = own_addresses_for(target)?;
    probe_hops_with(socket, target, config, own)
}

/// The own addresses the IPv6 rule needs; none for an IPv4 target (its rule has no use
/// for them, and this saves a `getifaddrs`).
fn own_addresses_for(target: SocketAddr) -> io::Result<Vec<IpAddr>> {
    if target.is_ipv4() {
        Ok(Vec::new())
    } else {
        local_addresses()
    }
}

fn probe_hops_with(
    socket: &UdpSocket,
    target: SocketAddr,
    config: &HopsConfig,
    own: Vec<IpAddr>,
) -> io::Result<Vec<(u8, IpAddr)>> {
    let mut core = HopProbe::new(target, config, Instant::now()).own_addresses(own);
    let mut obs = Vec::new();
    crate::net::drive(&[socket], &mut core, |_, o, _| {
        obs = o;
        ControlFlow::Break(())
    })?;
    Ok(obs)
}

/// The punch TTL to use: a user's number as given; otherwise probe toward `target`
/// and apply [`choose_punch_ttl_for`] with the host's addresses (for an IPv4 target
/// that is [`choose_punch_ttl`]; for IPv6 the hop limit past the own router).
pub fn discover_punch_ttl(
    socket: &UdpSocket,
    target: SocketAddr,
    hops: PunchHops,
    config: &HopsConfig,
) -> io::Result<u8> {
    match hops {
        PunchHops::Fixed(n) => Ok(n),
        PunchHops::Auto => {
            let own = own_addresses_for(target)?;
            let obs = probe_hops_with(socket, target, config, own.clone())?;
            let ttl = choose_punch_ttl_for(&obs, &own);
            log::info!("punch hops: {ttl} (probe answers: {obs:?})");
            Ok(ttl)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_addresses() {
        for p in [
            "203.0.113.1",
            "198.51.100.7",
            "192.0.2.1",
            "8.8.8.8",
            "2001:db8::1",
        ] {
            assert!(is_public(ip(p)), "{p}");
        }
        for p in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.1.1",
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "fd00::1",
            "fe80::1",
            "::1",
        ] {
            assert!(!is_public(ip(p)), "{p}");
        }
        assert!(is_public(ip("100.128.0.1")));
        assert!(is_public(ip("172.32.0.1")));
    }

    #[test]
    fn choose_first_public_hop() {
        // Home NAT, then the ISP's router.
        assert_eq!(
            choose_punch_ttl(&[(1, ip("192.168.1.1")), (2, ip("203.0.113.1"))]),
            2
        );
        // Home NAT behind a CGNAT: two private hops first.
        assert_eq!(
            choose_punch_ttl(&[
                (1, ip("192.168.1.1")),
                (2, ip("100.64.0.1")),
                (3, ip("198.51.100.1"))
            ]),
            3
        );
        // Observations out of order: smallest public TTL wins.
        assert_eq!(
            choose_punch_ttl(&[
                (4, ip("198.51.100.9")),
                (3, ip("198.51.100.1")),
                (1, ip("10.0.0.1"))
            ]),
            3
        );
        // Only private hops answered: one past the deepest.
        assert_eq!(
            choose_punch_ttl(&[(1, ip("10.0.0.1")), (2, ip("100.64.1.1"))]),
            3
        );
        // Nothing answered.
        assert_eq!(choose_punch_ttl(&[]), FALLBACK_TTL);
    }

    #[test]
    fn punch_hops_parse() {
        assert_eq!("auto".parse::<PunchHops>(), Ok(PunchHops::Auto));
        assert_eq!("7".parse::<PunchHops>(), Ok(PunchHops::Fixed(7)));
        assert!("0".parse::<PunchHops>().is_err());
        assert!("256".parse::<PunchHops>().is_err());
        assert!("-1".parse::<PunchHops>().is_err());
        assert_eq!(PunchHops::Fixed(3).to_string(), "3");
    }

    #[test]
    fn no_nat_no_punch() {
        let local = [ip("127.0.0.1"), ip("203.0.113.5")];
        assert!(!needs_punch(ip("203.0.113.5"), &local));
        assert!(needs_punch(ip("198.51.100.2"), &local));
        // Loopback is always one of ours; 192.0.2.255 is never assigned here.
        assert!(local_addresses().unwrap().contains(&ip("127.0.0.1")));
        assert!(!behind_nat(ip("127.0.0.1")).unwrap());
        assert!(behind_nat(ip("192.0.2.255")).unwrap());
    }

    fn icmp(ttl: u8, from: &str, icmp_type: u8) -> IcmpReport {
        IcmpReport {
            icmp_type,
            icmp_code: 0,
            offender: Some(ip(from)),
            quoted: [&PROBE_MAGIC[..], &[ttl]].concat(),
        }
    }

    /// Runs the pure probe in virtual time; `answer(ttl)` is what comes back for a probe.
    fn simulate(
        config: HopsConfig,
        answer: impl FnMut(u8) -> Vec<IcmpReport>,
    ) -> (Vec<(u8, IpAddr)>, Vec<u8>, Duration) {
        simulate_to("203.0.113.3:3478", &[], config, answer)
    }

    /// [`simulate`] toward any target, with the host's own addresses.
    fn simulate_to(
        target: &str,
        own: &[&str],
        config: HopsConfig,
        mut answer: impl FnMut(u8) -> Vec<IcmpReport>,
    ) -> (Vec<(u8, IpAddr)>, Vec<u8>, Duration) {
        let target: SocketAddr = target.parse().unwrap();
        let t0 = Instant::now();
        let mut now = t0;
        let own = own.iter().map(|a| ip(a)).collect();
        let mut p = HopProbe::new(target, &config, now).own_addresses(own);
        let mut sent = Vec::new();
        for _ in 0..1000 {
            p.handle_timeout(now);
            if let Some(obs) = p.poll_event() {
                return (obs, sent, now - t0);
            }
            while let Some(t) = p.poll_transmit(now) {
                assert_eq!((t.dest, t.socket), (target, 0));
                assert_eq!(t.payload[..4], PROBE_MAGIC[..]);
                let ttl = t.ttl.expect("every probe carries its TTL");
                assert_eq!(t.payload[4], ttl);
                sent.push(ttl);
                for r in answer(ttl) {
                    p.handle_icmp(now, 0, &r);
                }
            }
            if let Some(obs) = p.poll_event() {
                return (obs, sent, now - t0);
            }
            now = p.poll_timeout().expect("not finished: a timer is pending");
        }
        panic!("the probe did not finish");
    }

    #[test]
    fn the_pure_probe_walks_the_ttls_and_stops_at_the_first_public_hop() {
        let cfg = HopsConfig::default();
        // Home NAT at TTL 1, the ISP's router at TTL 2: no third probe.
        let (obs, sent, took) = simulate(cfg.clone(), |ttl| match ttl {
            1 => vec![icmp(1, "192.168.1.1", 11)],
            2 => vec![icmp(2, "203.0.113.1", 11)],
            _ => vec![],
        });
        assert_eq!(obs, vec![(1, ip("192.168.1.1")), (2, ip("203.0.113.1"))]);
        assert_eq!(sent, vec![1, 2]);
        assert_eq!(choose_punch_ttl(&obs), 2);
        assert_eq!(took, Duration::ZERO, "answered probes do not wait");
        // Silent hops cost one per-probe wait each; max_ttl bounds the walk.
        let (obs, sent, took) = simulate(cfg.clone(), |_| vec![]);
        assert!(obs.is_empty());
        assert_eq!(sent, (1..=cfg.max_ttl).collect::<Vec<_>>());
        assert_eq!(took, cfg.per_probe * u32::from(cfg.max_ttl));
        // A late report quoting an earlier probe is recorded at its own TTL; a private
        // one does not end the current probe, a public one does (the choice is the
        // smallest public TTL, which deeper probes cannot change). Other ICMP types and
        // reports without offender count for nothing.
        let (obs, sent, _) = simulate(cfg, |ttl| match ttl {
            1 => vec![],
            2 => vec![
                icmp(1, "10.0.0.9", 11),
                icmp(2, "10.0.0.1", 5),
                IcmpReport {
                    offender: None,
                    ..icmp(2, "10.0.0.1", 11)
                },
            ],
            3 => vec![],
            4 => vec![icmp(3, "198.51.100.1", 11)],
            _ => vec![],
        });
        assert_eq!(obs, vec![(1, ip("10.0.0.9")), (3, ip("198.51.100.1"))]);
        assert_eq!(sent, vec![1, 2, 3, 4]);
        assert_eq!(choose_punch_ttl(&obs), 3);
    }

    #[test]
    fn the_pure_probe_ends_when_the_target_answers() {
        let target: SocketAddr = "203.0.113.3:3478".parse().unwrap();
        let now = Instant::now();
        let mut p = HopProbe::new(target, &HopsConfig::default(), now);
        assert_eq!(p.poll_transmit(now).unwrap().ttl, Some(1));
        p.handle_input(
            now,
            0,
            "198.51.100.1:3478".parse().unwrap(),
            b"not the target",
        );
        assert!(p.poll_event().is_none());
        p.handle_input(now, 0, target, b"an answer");
        assert_eq!(p.poll_event(), Some(vec![(1, target.ip())]));
        assert_eq!(p.poll_timeout(), None);
        assert!(p.poll_transmit(now).is_none());
        // The target answering port-unreachable ends it too, even from a private
        // address (no hop lies beyond the target).
        let (obs, sent, _) = simulate_to("10.1.1.1:9", &[], HopsConfig::default(), |ttl| {
            vec![icmp(ttl, "10.1.1.1", 3)]
        });
        assert_eq!((obs, sent), (vec![(1, ip("10.1.1.1"))], vec![1]));
    }

    /// The host of the IPv6 tables: a global address in 2001:db8:1:7::/64.
    const OWN6: &[&str] = &["2001:db8:1:7::2", "fe80::2", "::1", "10.0.0.2", "127.0.0.1"];

    #[test]
    fn ipv6_rule_goes_past_the_own_prefix() {
        let own: Vec<IpAddr> = OWN6.iter().map(|a| ip(a)).collect();
        let obs = |rows: &[(u8, &str)]| rows.iter().map(|(t, a)| (*t, ip(a))).collect::<Vec<_>>();
        let table: &[(&[(u8, &str)], u8)] = &[
            // The own router answers from the host's /64; the next router is the one.
            (&[(1, "2001:db8:1:7::1"), (2, "2001:db8:ff:7::1")], 2),
            // Two routers inside the own /64 (a second firewall on the LAN).
            (
                &[
                    (1, "2001:db8:1:7::1"),
                    (2, "2001:db8:1:7::fe"),
                    (3, "2001:db8:ff::1"),
                ],
                3,
            ),
            // NAT66: the own router answers from a ULA.
            (&[(1, "fd00:7::1"), (2, "2001:db8:ff:7::1")], 2),
            // The own router answers from its WAN address: never less than 2.
            (&[(1, "2001:db8:ff:7::2"), (2, "2001:db8:ff:9::1")], 2),
            // Only the target answered, at hop 1: still 2.
            (&[(1, "2001:db8:0:5::3")], 2),
            // Only own-prefix or private hops: one past the deepest.
            (&[(1, "2001:db8:1:7::1"), (2, "2001:db8:1:7::fe")], 3),
            (&[(1, "fd00:7::1")], 2),
            (&[(1, "fe80::1"), (2, "fd00::1"), (3, "2001:db8:1:7::9")], 4),
            // Out of order: the smallest TTL past the own prefix wins.
            (
                &[
                    (4, "2001:db8:ff::9"),
                    (3, "2001:db8:ff::1"),
                    (1, "2001:db8:1:7::1"),
                ],
                3,
            ),
            // Nothing answered.
            (&[], FALLBACK_TTL),
            // IPv4 observations keep the IPv4 rule, own addresses or not.
            (&[(1, "192.168.1.1"), (2, "203.0.113.1")], 2),
            (&[(1, "198.51.100.1")], 1),
            (&[(1, "10.0.0.1"), (2, "100.64.1.1")], 3),
        ];
        for (rows, want) in table {
            let o = obs(rows);
            assert_eq!(choose_punch_ttl_for(&o, &own), *want, "{rows:?}");
            if o.iter().all(|(_, a)| a.is_ipv4()) {
                assert_eq!(choose_punch_ttl(&o), *want, "{rows:?}: the v4 rule");
            }
        }
        assert!(in_own_prefix(ip("2001:db8:1:7:ffff::1"), &own));
        assert!(!in_own_prefix(ip("2001:db8:1:8::1"), &own));
        assert!(
            !in_own_prefix(ip("10.0.0.1"), &own),
            "IPv4 has no own prefix"
        );
        assert!(!in_own_prefix(ip("2001:db8:1:7::1"), &[]));
    }

    #[test]
    fn the_pure_probe_walks_past_the_own_ipv6_router() {
        let cfg = HopsConfig::default();
        let target = "[2001:db8:0:5::3]:3478";
        let hops = |ttl| match ttl {
            1 => vec![icmp(1, "2001:db8:1:7::1", 11)],
            2 => vec![icmp(2, "2001:db8:ff:7::1", 11)],
            _ => vec![],
        };
        let (obs, sent, _) = simulate_to(target, OWN6, cfg.clone(), hops);
        assert_eq!(
            obs,
            vec![(1, ip("2001:db8:1:7::1")), (2, ip("2001:db8:ff:7::1"))]
        );
        assert_eq!(sent, vec![1, 2]);
        let own: Vec<IpAddr> = OWN6.iter().map(|a| ip(a)).collect();
        assert_eq!(choose_punch_ttl_for(&obs, &own), 2);
        // Without the own addresses the own router looks public and the walk stops
        // there; the rule's floor still gives 2.
        let (obs, sent, _) = simulate_to(target, &[], cfg.clone(), hops);
        assert_eq!((obs.len(), sent), (1, vec![1]));
        assert_eq!(choose_punch_ttl_for(&obs, &[]), 2);
        // An on-link target answers port-unreachable from the own /64: the end.
        let (obs, sent, _) = simulate_to("[2001:db8:1:7::99]:9", OWN6, cfg, |ttl| {
            vec![icmp(ttl, "2001:db8:1:7::99", 3)]
        });
        assert_eq!((obs, sent), (vec![(1, ip("2001:db8:1:7::99"))], vec![1]));
    }

    #[test]
    fn probe_over_loopback_reaches_target() {
        // On loopback the target is reached at TTL 1; with no listener it answers
        // port-unreachable from 127.0.0.1, which is not public: no public hop, one past.
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = closed.local_addr().unwrap();
        drop(closed);
        let before = s.ttl().unwrap();
        let cfg = HopsConfig {
            max_ttl: 2,
            per_probe: Duration::from_millis(200),
        };
        let obs = probe_hops(&s, target, &cfg).unwrap();
        assert!(
            obs.iter().any(|(t, a)| *t == 1 && *a == ip("127.0.0.1")),
            "{obs:?}"
        );
        assert_eq!(s.ttl().unwrap(), before);
        // IP_RECVERR is off again: the socket still works normally.
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(b"ok", peer.local_addr().unwrap()).unwrap();
    }

    #[test]
    fn probe_over_ipv6_loopback_reaches_target() {
        // The same over [::1]: ICMPv6 port unreachable from ::1 through IPV6_RECVERR.
        let s = UdpSocket::bind("[::1]:0").unwrap();
        let closed = UdpSocket::bind("[::1]:0").unwrap();
        let target = closed.local_addr().unwrap();
        drop(closed);
        let sock = socket2::SockRef::from(&s);
        let before = sock.unicast_hops_v6().unwrap();
        let cfg = HopsConfig {
            max_ttl: 3,
            per_probe: Duration::from_millis(500),
        };
        let obs = probe_hops(&s, target, &cfg).unwrap();
        assert_eq!(obs, vec![(1, ip("::1"))]);
        assert_eq!(sock.unicast_hops_v6().unwrap(), before);
        let own = local_addresses().unwrap();
        assert_eq!(choose_punch_ttl_for(&obs, &own), 2);
        let ttl = discover_punch_ttl(&s, target, PunchHops::Auto, &cfg).unwrap();
        assert_eq!(ttl, 2);
        // The error queue is off again: the socket still sends and receives normally.
        let peer = UdpSocket::bind("[::1]:0").unwrap();
        s.send_to(b"ok", peer.local_addr().unwrap()).unwrap();
        peer.send_to(b"back", s.local_addr().unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(s.recv_from(&mut buf).unwrap().0, 4);
    }

    #[test]
    fn probe_from_a_dual_stack_socket_to_an_ipv4_mapped_target() {
        // IPv4 sent from an IPv6 socket: TTL and ICMP are IPv4's, the report comes
        // through IPV6_RECVERR with an IPv4-mapped offender, read back as IPv4.
        let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None).unwrap();
        s.set_only_v6(false).unwrap();
        s.bind(&"[::]:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let s: UdpSocket = s.into();
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let target: SocketAddr = format!("[::ffff:127.0.0.1]:{port}").parse().unwrap();
        let cfg = HopsConfig {
            max_ttl: 3,
            per_probe: Duration::from_millis(500),
        };
        let obs = probe_hops(&s, target, &cfg).unwrap();
        assert_eq!(
            obs,
            vec![(1, ip("127.0.0.1"))],
            "the target's answer ends it"
        );
        assert_eq!(choose_punch_ttl_for(&obs, &local_addresses().unwrap()), 2);
    }
}
