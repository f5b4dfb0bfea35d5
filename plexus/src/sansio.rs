//! The one shape of every protocol core in plexus: no sockets, no clock.
//!
//! A core ([`crate::stun::Transaction`], [`crate::nat::plan::Discovery`],
//! [`crate::punch::Handshake`], [`crate::punch::hops::HopProbe`]) is fed datagrams and
//! time, and asked for datagrams to send, the next deadline and what happened. Every
//! call that can change state takes `now`, so a test runs a whole exchange in virtual
//! time (see `nat/sim.rs`, `punch/sim.rs`), and [`crate::net::drive`] runs it over
//! real sockets.
//!
//! A core is finished when [`Core::poll_timeout`] returns `None` after its transmits
//! and events have been drained: it will never want anything again.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// A datagram a core wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Index of the socket to send from, among the sockets the core was driven over
    /// (0 for cores that use one socket).
    pub socket: usize,
    /// Destination.
    pub dest: SocketAddr,
    /// The datagram.
    pub payload: Vec<u8>,
    /// IP TTL (hop limit) for this datagram alone; `None` keeps the socket's own. The
    /// low-TTL punch and the hop probe need it.
    pub ttl: Option<u8>,
}

impl Transmit {
    /// A datagram from socket 0 with the socket's own TTL.
    pub fn to(dest: SocketAddr, payload: Vec<u8>) -> Transmit {
        Transmit {
            socket: 0,
            dest,
            payload,
            ttl: None,
        }
    }
}

/// An ICMP error about a datagram this socket sent, read from the socket's error queue
/// (Linux `IP_RECVERR`). Only cores with [`Core::WANTS_ICMP`] get these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpReport {
    /// ICMP type (11 time exceeded, 3 destination unreachable); ICMPv6 arrives in these
    /// ICMPv4 numbers (time exceeded 3 becomes 11, unreachable 1 becomes 3).
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// Who sent the ICMP message (`SO_EE_OFFENDER`), when the kernel says.
    pub offender: Option<IpAddr>,
    /// The start of the payload of the datagram the error is about (the kernel returns
    /// our own datagram), so a core can tell which of its sends it answers.
    pub quoted: Vec<u8>,
}

/// A sans-IO protocol core. See the module docs.
pub trait Core {
    /// What the core reports to its driver.
    type Event;

    /// Whether the driver should turn on the socket error queue and hand ICMP errors to
    /// [`Core::handle_icmp`]. Off for everything but the hop probe: on a socket with
    /// `IP_RECVERR`, ordinary receives fail with the queued errors.
    const WANTS_ICMP: bool = false;

    /// A datagram `bytes` arrived on socket `socket` from `from` at `now`. Anything from
    /// the network is hostile: a core counts or logs what it cannot use, never panics.
    fn handle_input(&mut self, now: Instant, socket: usize, from: SocketAddr, bytes: &[u8]);

    /// An ICMP error arrived on socket `socket` at `now` (only with [`Core::WANTS_ICMP`]).
    fn handle_icmp(&mut self, now: Instant, socket: usize, report: &IcmpReport) {
        let _ = (now, socket, report);
    }

    /// Time passed: run the timers due at `now`.
    fn handle_timeout(&mut self, now: Instant);

    /// The next datagram to send at `now`, if any; call until `None`.
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit>;

    /// When [`Core::handle_timeout`] must be called even if nothing arrives; `None` once
    /// the core is finished.
    fn poll_timeout(&self) -> Option<Instant>;

    /// The next event, if any; call until `None`.
    fn poll_event(&mut self) -> Option<Self::Event>;
}
