//! Address families in a session: each family the side uses is a *leg* — its own corridor
//! socket, public endpoint, NAT facts and STUN server — because each family has its own
//! NAT (or, on IPv6, usually none but a stateful firewall).
//!
//! Two sockets rather than one `[::]` socket with `IPV6_V6ONLY` off: each family has its
//! own mapping, its own STUN binding and its own hop-limit and error-queue options
//! (`IP_TTL`/`IP_RECVERR` against `IPV6_UNICAST_HOPS`/`IPV6_RECVERR`; a v4-mapped flow on
//! a v6 socket needs the v4 ones), the executor gets one family anyway, and a host whose
//! IPv6 is off simply has no v6 leg. The v6 socket is `IPV6_V6ONLY`, so both can share a
//! fixed port.

use super::*;
use crate::nat::Family;

/// Which families this side tries, each with its STUN servers, in the order of the
/// settings; a family without a server is not tried, and none at all is a settings error.
pub(super) fn families(
    settings: &SessionSettings,
) -> Result<Vec<(Family, Vec<SocketAddr>)>, SessionError> {
    let out: Vec<_> = Family::ALL
        .into_iter()
        .filter(|f| settings.family.allows(*f))
        .map(|f| (f, f.filter(&settings.stun)))
        .filter(|(_, servers)| !servers.is_empty())
        .collect();
    if out.is_empty() {
        return Err(SessionError::Settings(format!(
            "no STUN server of an address family allowed (family: {}): name one of that family",
            settings.family
        )));
    }
    Ok(out)
}

/// The settings of one family's leg: its STUN servers only, and the bind address of its
/// family (the configured one, or the unspecified address with the configured port).
pub(super) fn settings_for(
    settings: &SessionSettings,
    family: Family,
    servers: Vec<SocketAddr>,
) -> SessionSettings {
    let bind = if Family::of(&settings.bind) == family {
        settings.bind
    } else {
        SocketAddr::new(family.unspecified(), settings.bind.port())
    };
    SessionSettings {
        stun: servers,
        bind,
        family: nat::FamilyChoice::Only(family),
        ..settings.clone()
    }
}

/// A UDP socket bound to `addr`; an IPv6 one only for IPv6 (see the module docs).
pub(super) fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// One family's part of this side: the corridor socket and what went into the message.
pub(super) struct Leg {
    pub(super) family: Family,
    pub(super) socket: UdpSocket,
    pub(super) mapped: SocketAddr,
    pub(super) facts: NatFacts,
    pub(super) stun: SocketAddr,
    /// This family's settings (STUN servers and bind of the family).
    pub(super) settings: SessionSettings,
}

/// The peer's facts for `family`: IPv4 from the v4 lines, IPv6 from `nat6`. An IPv6
/// side without NAT whose filtering is not known yet (an inviter's invite leaves before
/// a filtering verdict that is a timeout) is taken to be behind a stateful firewall, as
/// nearly every IPv6 host is: planning it as unfiltered would send a hard acceptor's
/// full-TTL punch into that firewall.
pub(super) fn peer_facts(peer: &Body, family: Family) -> NatFacts {
    match family {
        Family::V4 => peer.nat,
        Family::V6 => {
            let mut f = peer.nat6.unwrap_or_default();
            if !f.nat && f.filtering.is_none() {
                f.filtering = Some(Behaviour::AddressAndPortDependent);
            }
            f
        }
    }
}

/// The families the peer's message has public endpoints of.
pub(super) fn peer_families(peer: &Body) -> Vec<Family> {
    Family::ALL
        .into_iter()
        .filter(|f| peer.mapped.iter().any(|a| Family::of(a) == *f))
        .collect()
}

/// The families of `have` in words: "IPv4", "IPv4 and IPv6", "no address".
pub(super) fn family_words(have: &[Family]) -> String {
    match have {
        [] => "no address".into(),
        [one] => format!("{one} only"),
        _ => have
            .iter()
            .map(|f| f.label())
            .collect::<Vec<_>>()
            .join(" and "),
    }
}

/// The reason given when the two sides share no family.
pub(super) fn no_common_family(inviter: &[Family], acceptor: &[Family]) -> String {
    format!(
        "no common address family: the inviter has {}, the acceptor {}; a dual-stack \
         host on either side, or a NAT64/relay in between, is needed",
        family_words(inviter),
        family_words(acceptor)
    )
}

/// How long the inviter waits, after one family's path is proven, for a more preferred
/// family's (IPv6) before taking it ([`punch::nominate`]).
pub(super) const FAMILY_GRACE: Duration = crate::defaults::FAMILY_GRACE;

/// Threads of a family's setup the inviter stopped waiting for (its network is slow or
/// broken): joined when dropped, which is after the corridor's executor ended. Each
/// ends by itself within its STUN rounds.
#[derive(Debug, Default)]
pub(super) struct Late(pub(super) Vec<std::thread::JoinHandle<()>>);

impl Drop for Late {
    fn drop(&mut self) {
        for t in self.0.drain(..) {
            let _ = t.join();
        }
    }
}

/// How long the inviter waits for the other families' setup once one family is ready:
/// a family whose network drops packets (an IPv6 route that goes nowhere) would
/// otherwise hold every session for its whole STUN retry budget.
pub(super) const SETUP_GRACE: Duration = crate::defaults::FAMILY_SETUP_GRACE;
