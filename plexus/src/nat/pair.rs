//! How a pair of NATs connects: the acceptor's choice, from both sides' facts.
//!
//! A side is one of four classes (RFC 4787 vocabulary):
//!
//! | class | what it is | who can reach it |
//! |---|---|---|
//! | open | no NAT (filtering endpoint-independent or unknown), endpoint-independent filtering, or a router port mapping | anyone, at its public endpoint |
//! | address | endpoint-independent mapping (or no NAT), address-dependent filtering | a peer it has sent to, from any port |
//! | port | endpoint-independent mapping (or no NAT: a stateful firewall), address-and-port-dependent filtering | a peer it has sent to, from that port only |
//! | hard | the mapping depends on the destination (symmetric, or address-dependent) | only replies: its public port toward the peer is unknown |
//!
//! An unknown mapping counts as endpoint-independent (refusing would block hosts that
//! work); unknown filtering counts as port-dependent (the strictest that any method
//! below still handles). In practice an inviter's filtering is known in its invite only
//! when it is none or endpoint-independent (a probe answered at once): address- and
//! port-dependent filtering are verdicts of a probe deadline that ends after the invite
//! has left. So an address-restricted inviter meets a hard acceptor by port prediction,
//! which works for it as well.
//!
//! | inviter \ acceptor | open / address | port | hard |
//! |---|---|---|---|
//! | open | direct | direct | direct, acceptor at full TTL |
//! | address | direct | direct | direct, acceptor at full TTL |
//! | port | direct | direct | birthday, acceptor hard |
//! | hard | direct | birthday, inviter hard | relay |
//!
//! Why these work (and are tested per pair in the lab): an open or address-filtering side
//! is opened by the hard side's packets or by its own packet toward the hard side's
//! address (any port), and the handshake follows whatever source port the hard side's
//! NAT picked. A hard acceptor's punch must then reach the inviter (full TTL, repeated).
//! A port-filtering side admits only the exact port the hard side's NAT picked, which
//! nobody knows: the hard side opens many mappings toward the easy side's public
//! endpoint (at a TTL that dies before the easy side's NAT) and the easy side probes
//! random ports until one lands (birthday paradox). Two hard sides share no predictable
//! port: only a relay joins them.

use crate::nat::Behaviour;
use crate::rendezvous::{Method, NatFacts, RelayPolicy, Side};

/// Sockets the hard side of a birthday pair opens by default.
pub const BIRTHDAY_SOCKETS: u16 = crate::defaults::BIRTHDAY_SOCKETS;

/// What a side's NAT lets in, for planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Reachable at its public endpoint by anyone.
    Open,
    /// Endpoint-independent mapping, address-dependent filtering.
    Address,
    /// Endpoint-independent mapping, address-and-port-dependent (or unknown) filtering.
    Port,
    /// The mapping depends on the destination.
    Hard,
}

impl Class {
    /// The class of a side with these facts.
    pub fn of(f: &NatFacts) -> Class {
        if f.port_mapping.is_some() {
            return Class::Open;
        }
        if !f.nat {
            // A public address behind a stateful firewall (IPv6's usual case) is only
            // open when nothing filters; unknown filtering stays open as before.
            return match f.filtering {
                Some(Behaviour::AddressDependent) => Class::Address,
                Some(Behaviour::AddressAndPortDependent) => Class::Port,
                _ => Class::Open,
            };
        }
        match f.mapping {
            Some(Behaviour::AddressDependent | Behaviour::AddressAndPortDependent) => Class::Hard,
            _ => match f.filtering {
                Some(Behaviour::EndpointIndependent) => Class::Open,
                Some(Behaviour::AddressDependent) => Class::Address,
                _ => Class::Port,
            },
        }
    }
}

/// What the acceptor can offer besides a direct path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// The inviter's relay policy (from its invite).
    pub inviter_relay: RelayPolicy,
    /// The acceptor's relay policy.
    pub acceptor_relay: RelayPolicy,
    /// Whether the acceptor has a TURN server to allocate on.
    pub turn: bool,
    /// Sockets for the hard side of a birthday pair; 0 turns port prediction off.
    pub birthday_sockets: u16,
}

/// The acceptor's choice for a pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// How the pair connects.
    pub method: Method,
    /// Whether the acceptor allocates a relay anyway, for the inviter to fall back on
    /// when the planned direct handshake fails (always true for [`Method::Relay`]).
    pub allocate: bool,
}

/// Whether both sides allow the relay, and whether either insists on it.
fn relay_terms(o: &Offer) -> Result<(bool, bool), String> {
    use RelayPolicy::*;
    let insist = o.inviter_relay == Always || o.acceptor_relay == Always;
    let allowed = o.inviter_relay != Never && o.acceptor_relay != Never;
    if insist && !allowed {
        let (who, other) = if o.inviter_relay == Always {
            ("the inviter", "the acceptor's")
        } else {
            ("the acceptor", "the inviter's")
        };
        return Err(format!(
            "{who} allows only a relayed path (relay: always) but {other} relay policy is \
             never; change one of them"
        ));
    }
    if allowed && !o.turn {
        if insist {
            return Err("relay: always, but the accepting side has no TURN server \
                        configured (--turn HOST[:PORT] with credentials)"
                .into());
        }
        return Ok((false, false));
    }
    Ok((allowed, insist))
}

/// The method for this pair, or why none can work (the decline's reason).
pub fn choose(inviter: &NatFacts, acceptor: &NatFacts, offer: &Offer) -> Result<Choice, String> {
    let (relay_ok, relay_only) = relay_terms(offer)?;
    if relay_only {
        return Ok(Choice {
            method: Method::Relay,
            allocate: true,
        });
    }
    let birthday = |hard: Side| {
        (offer.birthday_sockets > 0).then_some(Method::Birthday {
            hard,
            sockets: offer.birthday_sockets,
        })
    };
    let direct = match (Class::of(inviter), Class::of(acceptor)) {
        (Class::Hard, Class::Hard) => None,
        (Class::Hard, Class::Port) => birthday(Side::Inviter),
        (Class::Port, Class::Hard) => birthday(Side::Acceptor),
        (Class::Open | Class::Address, Class::Hard) => Some(Method::DirectFullTtl),
        _ => Some(Method::Direct),
    };
    match (direct, relay_ok) {
        (Some(method), allocate) => Ok(Choice { method, allocate }),
        (None, true) => Ok(Choice {
            method: Method::Relay,
            allocate: true,
        }),
        (None, false) => Err(no_method_reason(inviter, acceptor, offer)),
    }
}

fn no_method_reason(inviter: &NatFacts, acceptor: &NatFacts, offer: &Offer) -> String {
    let both_hard = Class::of(inviter) == Class::Hard && Class::of(acceptor) == Class::Hard;
    let why = if both_hard {
        "both NATs map per destination (symmetric): neither side can predict the other's \
         public port"
    } else {
        "one NAT maps per destination and the other filters per port, and port prediction \
         is off (birthday sockets 0)"
    };
    let relay = if offer.acceptor_relay == RelayPolicy::Never
        || offer.inviter_relay == RelayPolicy::Never
    {
        "a TURN relay would connect them, but a relay policy is never (--relay fallback on both sides)"
    } else {
        "a TURN relay would connect them: configure one on the accepting side (--turn HOST[:PORT])"
    };
    format!("{why}; {relay}")
}

/// The facts an inviter's invite carries: it goes as soon as the mapping is known, so
/// filtering is there only when a probe answered at once (none, endpoint-independent).
pub fn as_invited(f: &NatFacts) -> NatFacts {
    let quick = !f.nat || f.filtering == Some(Behaviour::EndpointIndependent);
    NatFacts {
        filtering: if quick { f.filtering } else { None },
        ..*f
    }
}

/// The five kinds of peer NAT people meet, as facts (name, facts).
pub fn peer_kinds() -> [(&'static str, NatFacts); 5] {
    use Behaviour::*;
    let nat = |m, f| NatFacts {
        nat: true,
        mapping: Some(m),
        filtering: Some(f),
        ..NatFacts::default()
    };
    [
        ("none", NatFacts::default()),
        ("full cone", nat(EndpointIndependent, EndpointIndependent)),
        (
            "address-restricted",
            nat(EndpointIndependent, AddressDependent),
        ),
        (
            "port-restricted",
            nat(EndpointIndependent, AddressAndPortDependent),
        ),
        (
            "symmetric",
            nat(AddressAndPortDependent, AddressAndPortDependent),
        ),
    ]
}

/// One row of `plexus nat`'s "what works where" table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRow {
    /// The kind of the peer's NAT.
    pub peer: &'static str,
    /// The method when this side invites such a peer (or why none works).
    pub inviting: Result<Method, String>,
    /// The method when this side accepts such a peer's invite.
    pub accepting: Result<Method, String>,
}

/// Which method connects this side (facts `own`) with each kind of peer, in both roles,
/// given a relay on the accepting side when `relay` (else direct methods only).
pub fn table(own: &NatFacts, relay: bool) -> Vec<PeerRow> {
    let policy = if relay {
        RelayPolicy::Fallback
    } else {
        RelayPolicy::Never
    };
    let offer = Offer {
        inviter_relay: policy,
        acceptor_relay: policy,
        turn: relay,
        birthday_sockets: BIRTHDAY_SOCKETS,
    };
    peer_kinds()
        .into_iter()
        .map(|(peer, theirs)| PeerRow {
            peer,
            inviting: choose(&as_invited(own), &theirs, &offer).map(|c| c.method),
            accepting: choose(&as_invited(&theirs), own, &offer).map(|c| c.method),
        })
        .collect()
}

/// How a method reads in progress lines and `plexus nat`.
pub fn describe(method: &Method) -> String {
    match method {
        Method::Direct => "direct".into(),
        Method::DirectFullTtl => "direct, acceptor punches at full TTL".into(),
        Method::Birthday { hard, sockets } => format!(
            "birthday probing: {sockets} sockets on the {} side",
            hard.as_str()
        ),
        Method::Relay => "relayed through TURN".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Behaviour::*;

    fn facts(kind: &str) -> NatFacts {
        let (nat, mapping, filtering) = match kind {
            "none" => (false, None, None),
            "full" => (true, Some(EndpointIndependent), Some(EndpointIndependent)),
            "address" => (true, Some(EndpointIndependent), Some(AddressDependent)),
            "port" => (
                true,
                Some(EndpointIndependent),
                Some(AddressAndPortDependent),
            ),
            "symmetric" => (
                true,
                Some(AddressAndPortDependent),
                Some(AddressAndPortDependent),
            ),
            "unknown-filtering" => (true, Some(EndpointIndependent), None),
            other => panic!("{other}"),
        };
        NatFacts {
            nat,
            mapping,
            filtering,
            ..NatFacts::default()
        }
    }

    fn offer(inviter: RelayPolicy, acceptor: RelayPolicy, turn: bool) -> Offer {
        Offer {
            inviter_relay: inviter,
            acceptor_relay: acceptor,
            turn,
            birthday_sockets: BIRTHDAY_SOCKETS,
        }
    }

    const KINDS: [&str; 5] = ["none", "full", "address", "port", "symmetric"];

    #[test]
    fn every_pair_has_a_method_and_only_symmetric_pairs_need_the_relay() {
        use RelayPolicy::*;
        let o = offer(Fallback, Fallback, true);
        let mut relayed = 0;
        for i in KINDS {
            for a in KINDS {
                let c = choose(&facts(i), &facts(a), &o).unwrap();
                let want = match (i, a) {
                    ("symmetric", "symmetric") => Method::Relay,
                    ("symmetric", "port") => Method::Birthday {
                        hard: Side::Inviter,
                        sockets: 256,
                    },
                    ("port", "symmetric") => Method::Birthday {
                        hard: Side::Acceptor,
                        sockets: 256,
                    },
                    (_, "symmetric") => Method::DirectFullTtl,
                    _ => Method::Direct,
                };
                assert_eq!(c.method, want, "{i} x {a}");
                assert!(c.allocate, "fallback allocates for {i} x {a}");
                relayed += usize::from(c.method == Method::Relay);
            }
        }
        assert_eq!(relayed, 1, "24 of 25 pairs connect without the relay");
    }

    #[test]
    fn without_a_relay_symmetric_pairs_are_declined_with_a_reason() {
        use RelayPolicy::*;
        for o in [
            offer(Never, Fallback, true),
            offer(Fallback, Never, true),
            offer(Fallback, Fallback, false),
        ] {
            let e = choose(&facts("symmetric"), &facts("symmetric"), &o).unwrap_err();
            assert!(e.contains("both NATs map per destination"), "{e}");
            // No relay allocated for pairs that connect directly either.
            let c = choose(&facts("port"), &facts("full"), &o).unwrap();
            assert_eq!((c.method, c.allocate), (Method::Direct, false));
        }
        let no_birthday = Offer {
            birthday_sockets: 0,
            ..offer(Never, Never, false)
        };
        let e = choose(&facts("symmetric"), &facts("port"), &no_birthday).unwrap_err();
        assert!(e.contains("port prediction is off"), "{e}");
    }

    #[test]
    fn always_means_relay_and_needs_both_sides_and_a_server() {
        use RelayPolicy::*;
        let c = choose(
            &facts("none"),
            &facts("none"),
            &offer(Always, Fallback, true),
        )
        .unwrap();
        assert_eq!(c.method, Method::Relay);
        let c = choose(
            &facts("full"),
            &facts("port"),
            &offer(Fallback, Always, true),
        )
        .unwrap();
        assert_eq!(c.method, Method::Relay);
        let e = choose(&facts("none"), &facts("none"), &offer(Always, Never, true)).unwrap_err();
        assert!(e.contains("relay: always") && e.contains("never"), "{e}");
        let e = choose(
            &facts("none"),
            &facts("none"),
            &offer(Fallback, Always, false),
        )
        .unwrap_err();
        assert!(e.contains("no TURN server"), "{e}");
    }

    #[test]
    fn the_table_of_a_symmetric_side() {
        let rows = table(&facts("symmetric"), true);
        let inviting: Vec<String> = rows
            .iter()
            .map(|r| describe(r.inviting.as_ref().unwrap()))
            .collect();
        assert_eq!(
            inviting,
            [
                "direct",
                "direct",
                "direct",
                "birthday probing: 256 sockets on the inviter side",
                "relayed through TURN"
            ]
        );
        // Accepting: an address-restricted inviter's filtering is not in its invite yet.
        let accepting: Vec<String> = rows
            .iter()
            .map(|r| describe(r.accepting.as_ref().unwrap()))
            .collect();
        assert_eq!(
            accepting,
            [
                "direct, acceptor punches at full TTL",
                "direct, acceptor punches at full TTL",
                "birthday probing: 256 sockets on the acceptor side",
                "birthday probing: 256 sockets on the acceptor side",
                "relayed through TURN"
            ]
        );
        let without = table(&facts("symmetric"), false);
        assert!(without[4].inviting.is_err() && without[4].accepting.is_err());
        assert!(table(&facts("port"), false)
            .iter()
            .all(|r| r.inviting.is_ok() && r.accepting.is_ok()));
    }

    #[test]
    fn a_public_address_behind_a_stateful_firewall_is_not_open() {
        let fw = |filtering| NatFacts {
            nat: false,
            mapping: Some(EndpointIndependent),
            filtering,
            ..NatFacts::default()
        };
        assert_eq!(Class::of(&fw(Some(AddressAndPortDependent))), Class::Port);
        assert_eq!(Class::of(&fw(Some(AddressDependent))), Class::Address);
        assert_eq!(Class::of(&fw(Some(EndpointIndependent))), Class::Open);
        assert_eq!(Class::of(&fw(None)), Class::Open);
        // So a firewalled host and a symmetric NAT need port prediction, like a
        // port-restricted NAT would.
        let o = offer(RelayPolicy::Never, RelayPolicy::Never, false);
        let c = choose(&fw(Some(AddressAndPortDependent)), &facts("symmetric"), &o).unwrap();
        assert!(
            matches!(
                c.method,
                Method::Birthday {
                    hard: Side::Acceptor,
                    ..
                }
            ),
            "{c:?}"
        );
    }

    #[test]
    fn unknown_filtering_and_port_mappings() {
        use RelayPolicy::*;
        let o = offer(Never, Never, false);
        // Unknown filtering is planned as port-dependent: prediction, which works for all.
        let c = choose(&facts("unknown-filtering"), &facts("symmetric"), &o).unwrap();
        assert!(matches!(
            c.method,
            Method::Birthday {
                hard: Side::Acceptor,
                ..
            }
        ));
        // A router mapping makes a symmetric side open: two "symmetric" sides, one mapped.
        let mapped = NatFacts {
            port_mapping: Some(crate::rendezvous::PortMapping::NatPmp),
            ..facts("symmetric")
        };
        assert_eq!(Class::of(&mapped), Class::Open);
        let c = choose(&mapped, &facts("symmetric"), &o).unwrap();
        assert_eq!(c.method, Method::DirectFullTtl);
        let c = choose(&facts("port"), &mapped, &o).unwrap();
        assert_eq!(c.method, Method::Direct);
    }
}
