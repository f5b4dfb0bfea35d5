//! The discovery plan (RFC 5780 §4.3 mapping, §4.4 filtering, plus hairpin) as a
//! sans-IO core over four sockets. Probes that do not depend on each other run
//! at the same time, so a full profile costs about one probe deadline:
//!
//! - socket [`PRIMARY`]: test I to every server; once the first server answers
//!   with OTHER-ADDRESS, tests II (alternate IP, primary port) and III (alternate
//!   IP and port) together;
//! - sockets [`FILTER_BOTH`] and [`FILTER_PORT`]: from the start, one CHANGE-REQUEST
//!   each (change IP+port; change port), on their own mappings, so one test's
//!   traffic cannot open the filter for the other;
//! - socket [`HAIRPIN`]: once test I answered, a Binding request to the primary
//!   socket's mapped endpoint; if the primary socket receives it, the NAT hairpins.
//!
//! It is a [`Core`] over [`SOCKETS`] sockets: drive it until it is finished (its
//! [`Event::Finished`]), then read [`Discovery::findings`]. A caller that needs only
//! the mapping can read `findings` at [`Event::MappingKnown`]: filtering and hairpin are
//! `None` there until measured.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use super::{Behaviour, NatError};
use crate::sansio::{Core, Transmit};
use crate::stun::{self, Attribute, Class, Expect, Timing, Transaction};

/// The socket that runs the mapping tests (and is the one reported as local/mapped).
pub const PRIMARY: usize = 0;
/// The socket for filtering test II (CHANGE-REQUEST change IP and port).
pub const FILTER_BOTH: usize = 1;
/// The socket for filtering test III (CHANGE-REQUEST change port).
pub const FILTER_PORT: usize = 2;
/// The socket that sends the hairpin probe.
pub const HAIRPIN: usize = 3;
/// How many sockets the plan uses.
pub const SOCKETS: usize = 4;

/// What to probe.
#[derive(Debug, Clone)]
pub struct Plan {
    /// STUN servers, first one preferred for the RFC 5780 tests.
    pub servers: Vec<SocketAddr>,
    /// Local endpoint of each socket, with a concrete IP (not 0.0.0.0).
    pub locals: [SocketAddr; SOCKETS],
    /// Per-probe retransmission timing; its deadline is the "filtered" verdict.
    pub timing: Timing,
}

/// What discovery reports to its driver; each happens once, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// [`Discovery::mapping_known`] became true: [`Discovery::findings`] has the final
    /// mapping verdict (or says that no server answered).
    MappingKnown,
    /// Every probe finished: [`Discovery::findings`] is final.
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Test1(usize),
    Test2,
    Test3,
    FilterBoth,
    FilterPort,
    Hairpin,
}

#[derive(Debug)]
struct Probe {
    socket: usize,
    kind: Kind,
    tx: Transaction,
    /// Finished without a response (the hairpin request arrived).
    resolved: bool,
}

impl Probe {
    fn done(&self) -> bool {
        self.resolved || self.tx.outcome().is_some()
    }
    fn ok(&self) -> Option<&stun::Response> {
        self.tx.outcome().and_then(|o| o.as_ref().ok())
    }
}

/// What discovery measured; `None` means not measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Findings {
    /// The mapped endpoint differs from the local one.
    pub nat: bool,
    /// Mapping behaviour.
    pub mapping: Option<Behaviour>,
    /// Two servers saw different mapped endpoints, but which dependent kind is unknown.
    pub mapping_varies: bool,
    /// Filtering behaviour (needs RFC 5780).
    pub filtering: Option<Behaviour>,
    /// A packet to our own public endpoint comes back in.
    pub hairpin: Option<bool>,
    /// The mapped port equals the local port.
    pub port_preserved: bool,
    /// The mapped IP was the same in every answer (needs at least two answers).
    pub address_stable: Option<bool>,
    /// Local endpoint of the primary socket.
    pub local: SocketAddr,
    /// Mapped endpoint of the primary socket.
    pub mapped: SocketAddr,
    /// The server answered with OTHER-ADDRESS.
    pub rfc5780: bool,
}

/// The discovery state machine.
#[derive(Debug)]
pub struct Discovery {
    plan: Plan,
    probes: Vec<Probe>,
    phase2: bool,
    events: VecDeque<Event>,
    told_mapping: bool,
    told_finished: bool,
}

fn change(ip: bool, port: bool) -> Vec<Attribute> {
    vec![Attribute::ChangeRequest { ip, port }]
}

impl Discovery {
    /// Starts the plan at `now`.
    pub fn new(plan: Plan, now: Instant) -> Discovery {
        let t = plan.timing;
        let mut probes = Vec::new();
        for (i, s) in plan.servers.iter().enumerate() {
            let tx = Transaction::new(
                stun::new_transaction_id(),
                *s,
                vec![],
                Expect::SameEndpoint,
                t,
                now,
            );
            probes.push(Probe {
                socket: PRIMARY,
                kind: Kind::Test1(i),
                tx,
                resolved: false,
            });
        }
        if let Some(s) = plan.servers.first() {
            for (socket, kind, attrs, expect) in [
                (
                    FILTER_BOTH,
                    Kind::FilterBoth,
                    change(true, true),
                    Expect::ChangedIpAndPort,
                ),
                (
                    FILTER_PORT,
                    Kind::FilterPort,
                    change(false, true),
                    Expect::ChangedPort,
                ),
            ] {
                let tx = Transaction::new(stun::new_transaction_id(), *s, attrs, expect, t, now);
                probes.push(Probe {
                    socket,
                    kind,
                    tx,
                    resolved: false,
                });
            }
        }
        Discovery {
            plan,
            probes,
            phase2: false,
            events: VecDeque::new(),
            told_mapping: false,
            told_finished: false,
        }
    }

    fn probe(&self, kind: Kind) -> Option<&Probe> {
        self.probes.iter().find(|p| p.kind == kind)
    }

    /// Starts phase 2 when test I answered, and raises the events that became true.
    fn advance(&mut self, now: Instant) {
        self.start_phase2(now);
        if !self.told_mapping && self.mapping_known() {
            self.told_mapping = true;
            self.events.push_back(Event::MappingKnown);
        }
        if !self.told_finished && self.is_done() {
            self.told_finished = true;
            self.events.push_back(Event::Finished);
        }
    }

    fn start_phase2(&mut self, now: Instant) {
        if self.phase2 {
            return;
        }
        let Some(first) = self.probe(Kind::Test1(0)) else {
            return;
        };
        let Some(r) = first.ok().cloned() else { return };
        self.phase2 = true;
        let t = self.plan.timing;
        let id = stun::new_transaction_id;
        if let Some(other) = r.other {
            let primary = self.plan.servers[0];
            let t2 = SocketAddr::new(other.ip(), primary.port());
            for (kind, dest) in [(Kind::Test2, t2), (Kind::Test3, other)] {
                let tx = Transaction::new(id(), dest, vec![], Expect::SameEndpoint, t, now);
                self.probes.push(Probe {
                    socket: PRIMARY,
                    kind,
                    tx,
                    resolved: false,
                });
            }
        }
        let tx = Transaction::new(id(), r.mapped, vec![], Expect::SameEndpoint, t, now);
        self.probes.push(Probe {
            socket: HAIRPIN,
            kind: Kind::Hairpin,
            tx,
            resolved: false,
        });
    }

    /// The mapping verdict (and whether there is a NAT at all) will not change any more:
    /// every test I is finished, and so are tests II and III, unless test II already
    /// showed the mapping endpoint-independent. Filtering and hairpin may still be
    /// running: their "no answer" verdicts take a whole probe deadline, and a caller
    /// that needs only the mapping (the inviter's refusal decision) need not wait.
    pub fn mapping_known(&self) -> bool {
        let pending = |k: Kind| self.probe(k).is_some_and(|p| !p.done());
        let test1_pending = self
            .probes
            .iter()
            .any(|p| matches!(p.kind, Kind::Test1(_)) && !p.done());
        if test1_pending {
            return false;
        }
        let first_ok = self.probe(Kind::Test1(0)).and_then(Probe::ok);
        if first_ok.is_some() && !self.phase2 {
            return false;
        }
        let m1 = first_ok.map(|r| r.mapped);
        let m2 = self
            .probe(Kind::Test2)
            .and_then(Probe::ok)
            .map(|r| r.mapped);
        (m2.is_some() && m2 == m1) || (!pending(Kind::Test2) && !pending(Kind::Test3))
    }

    /// All probes finished (answered, failed or timed out).
    pub fn is_done(&self) -> bool {
        let test1_pending = self
            .probes
            .iter()
            .any(|p| matches!(p.kind, Kind::Test1(_)) && !p.done());
        let can_start_phase2 =
            !self.phase2 && self.probe(Kind::Test1(0)).is_some_and(|p| !p.done());
        !test1_pending && !can_start_phase2 && self.probes.iter().all(Probe::done)
    }

    /// What was measured so far (probes still running count as not measured). Fails
    /// only when no server answered test I.
    pub fn findings(&self) -> Result<Findings, NatError> {
        let answers: Vec<&stun::Response> = (0..self.plan.servers.len())
            .filter_map(|i| self.probe(Kind::Test1(i)).and_then(Probe::ok))
            .collect();
        let Some(first) = answers.first() else {
            // An error response says more than a timeout.
            let err = self
                .probes
                .iter()
                .filter(|p| matches!(p.kind, Kind::Test1(_)))
                .find_map(|p| match p.tx.outcome() {
                    Some(Err(e @ stun::StunError::ErrorResponse { .. })) => Some(e.clone()),
                    _ => None,
                });
            return Err(match err {
                Some(e) => NatError::Server(e),
                None => NatError::NoAnswer {
                    servers: self.plan.servers.clone(),
                    timeout: self.plan.timing.deadline,
                },
            });
        };
        let local = self.plan.locals[PRIMARY];
        let mapped = first.mapped;
        let primary = self.probe(Kind::Test1(0)).and_then(Probe::ok);
        let rfc5780 = primary.is_some_and(|r| r.other.is_some());
        let m2 = self
            .probe(Kind::Test2)
            .and_then(Probe::ok)
            .map(|r| r.mapped);
        let m3 = self
            .probe(Kind::Test3)
            .and_then(Probe::ok)
            .map(|r| r.mapped);
        let (mut mapping, mut mapping_varies) = (None, false);
        if let (true, Some(m1)) = (rfc5780, primary.map(|r| r.mapped)) {
            mapping = match (m2, m3) {
                (Some(m2), _) if m2 == m1 => Some(Behaviour::EndpointIndependent),
                (Some(m2), Some(m3)) if m3 == m2 => Some(Behaviour::AddressDependent),
                (Some(_), Some(_)) => Some(Behaviour::AddressAndPortDependent),
                _ => None,
            };
        } else if answers.len() >= 2 {
            let servers: Vec<SocketAddr> = (0..self.plan.servers.len())
                .filter(|i| self.probe(Kind::Test1(*i)).and_then(Probe::ok).is_some())
                .map(|i| self.plan.servers[i])
                .collect();
            if answers.iter().all(|a| a.mapped == mapped) {
                mapping = Some(Behaviour::EndpointIndependent);
            } else if servers.iter().all(|s| s.ip() == servers[0].ip()) {
                // Same server IP, other port, other mapping: the port matters.
                mapping = Some(Behaviour::AddressAndPortDependent);
            } else {
                mapping_varies = true;
            }
        }
        let answered = |k| self.probe(k).map(|p: &Probe| p.ok().is_some());
        let timed_out = |k| {
            self.probe(k).map(|p: &Probe| {
                matches!(p.tx.outcome(), Some(Err(stun::StunError::Timeout { .. })))
            })
        };
        let filtering = if !rfc5780 {
            None
        } else if answered(Kind::FilterBoth) == Some(true) {
            Some(Behaviour::EndpointIndependent)
        } else if timed_out(Kind::FilterBoth) != Some(true) {
            None
        } else if answered(Kind::FilterPort) == Some(true) {
            Some(Behaviour::AddressDependent)
        } else if timed_out(Kind::FilterPort) == Some(true) {
            Some(Behaviour::AddressAndPortDependent)
        } else {
            None
        };
        // Still running: not measured yet (only asked before `is_done`).
        let hairpin = self
            .probe(Kind::Hairpin)
            .filter(|p| p.done())
            .map(|p| p.resolved);
        let ips: Vec<_> = self
            .probes
            .iter()
            .filter_map(|p| p.ok())
            .map(|r| r.mapped.ip())
            .collect();
        let address_stable = (ips.len() >= 2).then(|| ips.iter().all(|ip| *ip == ips[0]));
        Ok(Findings {
            nat: mapped != local,
            mapping,
            mapping_varies,
            filtering,
            hairpin,
            port_preserved: mapped.port() == local.port(),
            address_stable,
            local,
            mapped,
            rfc5780,
        })
    }
}

impl Core for Discovery {
    type Event = Event;

    fn handle_input(&mut self, now: Instant, socket: usize, from: SocketAddr, bytes: &[u8]) {
        let msg = match stun::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                log::debug!("socket {socket}: ignoring a datagram from {from}: {e}");
                return;
            }
        };
        if msg.class == Class::Request {
            // Our own hairpin probe looping back through the NAT.
            if let Some(p) = self.probes.iter_mut().find(|p| {
                p.kind == Kind::Hairpin && socket == PRIMARY && p.tx.id() == msg.transaction_id
            }) {
                log::debug!("hairpin probe arrived from {from}");
                p.resolved = true;
            }
        } else if !self
            .probes
            .iter_mut()
            .any(|p| p.socket == socket && p.tx.handle_message(now, from, &msg))
        {
            log::debug!("socket {socket}: stray STUN message from {from} ignored");
        }
        self.advance(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        for p in &mut self.probes {
            p.tx.handle_timeout(now);
        }
        self.advance(now);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.probes
            .iter_mut()
            .filter(|p| !p.resolved)
            .find_map(|p| {
                p.tx.poll_transmit(now).map(|t| Transmit {
                    socket: p.socket,
                    ..t
                })
            })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.probes
            .iter()
            .filter(|p| !p.resolved)
            .filter_map(|p| p.tx.poll_timeout())
            .min()
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}
