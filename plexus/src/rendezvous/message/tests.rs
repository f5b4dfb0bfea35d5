use super::*;

fn golden() -> Invite {
    Invite(Body {
        from: PeerId::parse("alice@lab.example/home").unwrap(),
        to: PeerId::parse("bob@lab.example/office").unwrap(),
        session: SessionId(*b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"),
        time: 1_700_000_000,
        mapped: vec![
            "203.0.113.7:40000".parse().unwrap(),
            "[2001:db8::7]:40000".parse().unwrap(),
        ],
        local: vec!["192.168.1.20:40000".parse().unwrap()],
        nat: NatFacts {
            nat: true,
            mapping: Some(Behaviour::EndpointIndependent),
            filtering: Some(Behaviour::AddressAndPortDependent),
            hairpin: None,
            port_preserved: Some(false),
            port_mapping: None,
        },
        nat6: None,
        relay: RelayPolicy::Never,
        method: None,
        method6: None,
        relayed: None,
        secret: Secret::from_bytes(core::array::from_fn(|i| (0xa0 + i) as u8)),
    })
}

const GOLDEN: &str = "PLEXUS-RENDEZVOUS 2\n\
kind: invite\n\
from: alice@lab.example/home\n\
to: bob@lab.example/office\n\
session: 000102030405060708090a0b0c0d0e0f\n\
time: 1700000000\n\
mapped: 203.0.113.7:40000 [2001:db8::7]:40000\n\
local: 192.168.1.20:40000\n\
nat: yes\n\
mapping: endpoint-independent\n\
filtering: address-and-port-dependent\n\
hairpin: unknown\n\
port-preserved: no\n\
port-mapping: -\n\
relay: never\n\
method: -\n\
relayed: -\n\
secret: a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf\n";

const GOLDEN_ACCEPT: &str = "PLEXUS-RENDEZVOUS 2\n\
kind: accept\n\
from: bob@lab.example/office\n\
to: alice@lab.example/home\n\
session: 000102030405060708090a0b0c0d0e0f\n\
time: 0\n\
mapped: -\n\
local: -\n\
nat: no\n\
mapping: unknown\n\
filtering: unknown\n\
hairpin: yes\n\
port-preserved: unknown\n\
port-mapping: -\n\
relay: never\n\
method: direct\n\
relayed: -\n\
secret: 0000000000000000000000000000000000000000000000000000000000000000\n";

/// Version 1 (before relay, port mapping, methods and declines): still read, as a
/// direct punch without relay.
const GOLDEN_V1: &str = "PLEXUS-RENDEZVOUS 1\n\
kind: invite\n\
from: alice@lab.example/home\n\
to: bob@lab.example/office\n\
session: 000102030405060708090a0b0c0d0e0f\n\
time: 1700000000\n\
mapped: 203.0.113.7:40000 [2001:db8::7]:40000\n\
local: 192.168.1.20:40000\n\
nat: yes\n\
mapping: endpoint-independent\n\
filtering: address-and-port-dependent\n\
hairpin: unknown\n\
port-preserved: no\n\
secret: a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf\n";

const GOLDEN_ROUTED_ACCEPT: &str = "PLEXUS-RENDEZVOUS 2\n\
kind: accept\n\
from: bob@lab.example/office\n\
to: alice@lab.example/home\n\
session: 000102030405060708090a0b0c0d0e0f\n\
time: 1700000001\n\
mapped: 198.51.100.30:50000\n\
local: 10.9.0.2:50000\n\
nat: yes\n\
mapping: address-and-port-dependent\n\
filtering: address-and-port-dependent\n\
hairpin: no\n\
port-preserved: no\n\
port-mapping: nat-pmp\n\
relay: fallback\n\
method: birthday acceptor 256\n\
relayed: 203.0.113.5:49160\n\
secret: 0101010101010101010101010101010101010101010101010101010101010101\n";

const GOLDEN_DECLINE: &str = "PLEXUS-RENDEZVOUS 2\n\
kind: decline\n\
from: bob@lab.example/office\n\
to: alice@lab.example/home\n\
session: 000102030405060708090a0b0c0d0e0f\n\
time: 1700000002\n\
reason: both NATs map per destination and relay is never\n";

#[test]
fn version_1_still_decodes_as_a_direct_punch_without_relay() {
    let Message::Invite(i) = Message::decode(GOLDEN_V1.as_bytes()).unwrap() else {
        panic!("a v1 invite decodes as an invite");
    };
    assert_eq!(i, golden());
    let accept_v1 = GOLDEN_V1.replace("kind: invite", "kind: accept");
    let Message::Accept(a) = Message::decode(accept_v1.as_bytes()).unwrap() else {
        panic!("a v1 accept decodes as an accept");
    };
    assert_eq!(a.method(), Method::Direct);
    assert_eq!((a.relay, a.relayed), (RelayPolicy::Never, None));
    // A decline did not exist in version 1.
    let decline_v1 = GOLDEN_DECLINE.replace("RENDEZVOUS 2", "RENDEZVOUS 1");
    assert!(Message::decode(decline_v1.as_bytes()).is_err());
}

#[test]
fn golden_routed_accept_and_decline() {
    let invite = golden();
    let mut accept = Accept::new(
        &invite,
        1_700_000_001,
        vec!["198.51.100.30:50000".parse().unwrap()],
        vec!["10.9.0.2:50000".parse().unwrap()],
        NatFacts {
            nat: true,
            mapping: Some(Behaviour::AddressAndPortDependent),
            filtering: Some(Behaviour::AddressAndPortDependent),
            hairpin: Some(false),
            port_preserved: Some(false),
            port_mapping: Some(PortMapping::NatPmp),
        },
    )
    .unwrap()
    .with_route(
        Method::Birthday {
            hard: Side::Acceptor,
            sockets: 256,
        },
        RelayPolicy::Fallback,
        Some("203.0.113.5:49160".parse().unwrap()),
    )
    .unwrap();
    accept.0.secret = Secret::from_bytes([1; 32]);
    assert_eq!(
        String::from_utf8(accept.encode().unwrap()).unwrap(),
        GOLDEN_ROUTED_ACCEPT
    );
    assert_eq!(
        Message::decode(GOLDEN_ROUTED_ACCEPT.as_bytes()).unwrap(),
        Message::Accept(accept)
    );

    let decline = Decline::new(
        &invite,
        1_700_000_002,
        "both NATs map per destination and relay is never",
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(decline.encode().unwrap()).unwrap(),
        GOLDEN_DECLINE
    );
    let Message::Decline(d) = Message::decode(GOLDEN_DECLINE.as_bytes()).unwrap() else {
        panic!("decodes as a decline");
    };
    assert_eq!(d, decline);
    assert_eq!(
        d.reason(),
        "both NATs map per destination and relay is never"
    );
    assert_eq!(
        (d.session, &d.from, &d.to),
        (invite.session, &invite.to, &invite.from)
    );
    // Sealing takes the same path as every message: the trait's encoding is the decline's.
    assert_eq!(
        Message::Decline(d).encode().unwrap(),
        GOLDEN_DECLINE.as_bytes()
    );
}

#[test]
fn route_fields_are_checked() {
    use MessageError as E;
    let routed = |key: &str, v: &str| {
        let mut lines: Vec<String> = GOLDEN_ROUTED_ACCEPT.lines().map(String::from).collect();
        let i = lines
            .iter()
            .position(|l| l.starts_with(&format!("{key}: ")))
            .unwrap();
        lines[i] = format!("{key}: {v}");
        lines.join("\n") + "\n"
    };
    for (key, v) in [
        ("method", "-"),
        ("method", "birthday acceptor 0"),
        ("method", "birthday acceptor 1025"),
        ("method", "birthday acceptor 0256"),
        ("method", "birthday both 256"),
        ("method", "birthday acceptor"),
        ("method", "telepathy"),
        ("relay", "sometimes"),
        ("port-mapping", "upnp"),
        ("relayed", "203.0.113.5:49160 203.0.113.5:49161"),
        ("relayed", "203.0.113.5:0"),
    ] {
        assert!(
            matches!(
                err(&routed(key, v)),
                E::BadValue { .. } | E::TooManyEndpoints { .. }
            ),
            "{key}: {v} -> {:?}",
            err(&routed(key, v))
        );
    }
    // The relay method needs its endpoint; an invite names no method and no relayed one.
    let relay_without =
        routed("method", "relay").replace("relayed: 203.0.113.5:49160", "relayed: -");
    assert!(matches!(
        err(&relay_without),
        E::BadValue {
            field: "relayed",
            ..
        }
    ));
    assert!(matches!(
        err(&GOLDEN.replace("method: -", "method: direct")),
        E::BadValue {
            field: "method",
            ..
        }
    ));
    assert!(matches!(
        err(&GOLDEN.replace("relayed: -", "relayed: 203.0.113.5:49160")),
        E::BadValue {
            field: "relayed",
            ..
        }
    ));
    // Declines: a reason, bounded, trimmed; nothing but their own keys.
    for bad in [
        "reason: ",
        "reason:  padded",
        &format!("reason: {}", "x".repeat(MAX_REASON + 1)),
    ] {
        let text = GOLDEN_DECLINE.replace(
            "reason: both NATs map per destination and relay is never",
            bad,
        );
        assert!(Message::decode(text.as_bytes()).is_err(), "{bad}");
    }
    let with_secret = format!("{GOLDEN_DECLINE}secret: 00\n");
    assert!(matches!(err(&with_secret), E::TrailingData { .. }));
    assert!(Decline::new(&golden(), 1, " \t ").is_err());
    let long = Decline::new(&golden(), 1, &"é".repeat(1000)).unwrap();
    assert!(long.reason().len() <= MAX_REASON && long.reason().is_ascii());
    assert!(golden().body().encode_as(Kind::Decline).is_err());
}

#[test]
fn golden_invite_encodes_and_decodes_exactly() {
    let m = golden();
    assert_eq!(String::from_utf8(m.encode().unwrap()).unwrap(), GOLDEN);
    assert_eq!(
        Message::decode(GOLDEN.as_bytes()).unwrap(),
        Message::Invite(m)
    );
}

#[test]
fn golden_accept_with_empty_lists_and_unknowns() {
    let m = Accept(Body {
        from: PeerId::parse("bob@lab.example/office").unwrap(),
        to: PeerId::parse("alice@lab.example/home").unwrap(),
        session: golden().session,
        time: 0,
        mapped: vec![],
        local: vec![],
        nat: NatFacts {
            nat: false,
            mapping: None,
            filtering: None,
            hairpin: Some(true),
            port_preserved: None,
            port_mapping: None,
        },
        nat6: None,
        relay: RelayPolicy::Never,
        method: Some(Method::Direct),
        method6: None,
        relayed: None,
        secret: Secret::from_bytes([0; 32]),
    });
    assert_eq!(
        String::from_utf8(m.encode().unwrap()).unwrap(),
        GOLDEN_ACCEPT
    );
    assert_eq!(
        Message::decode(GOLDEN_ACCEPT.as_bytes()).unwrap(),
        Message::Accept(m)
    );
}

#[test]
fn constructors_make_fresh_randomness() {
    let a = golden();
    let i1 = Invite::new(
        a.from.clone(),
        a.to.clone(),
        5,
        a.mapped.clone(),
        vec![],
        a.nat,
    )
    .unwrap();
    let i2 = Invite::new(
        a.from.clone(),
        a.to.clone(),
        5,
        a.mapped.clone(),
        vec![],
        a.nat,
    )
    .unwrap();
    assert_ne!(i1.session, i2.session);
    assert_ne!(i1.secret, i2.secret);
    let acc = Accept::new(&i1, 6, vec![], vec![], NatFacts::default()).unwrap();
    assert_eq!(
        (acc.kind(), acc.session, &acc.from, &acc.to),
        (Kind::Accept, i1.session, &i1.to, &i1.from)
    );
    assert_ne!(acc.secret, i1.secret);
    let round = Message::decode(&i1.encode().unwrap()).unwrap();
    assert_eq!(round, Message::Invite(i1));
}

#[test]
fn a_body_encodes_as_either_kind_and_decodes_as_that_kind() {
    let m = golden();
    assert_eq!(m.body().encode_as(Kind::Invite).unwrap(), GOLDEN.as_bytes());
    // An accept always names its method: a body without one is a direct punch.
    let as_accept = m.body().encode_as(Kind::Accept).unwrap();
    assert_eq!(
        as_accept,
        GOLDEN
            .replace("kind: invite", "kind: accept")
            .replace("method: -", "method: direct")
            .as_bytes()
    );
    match Message::decode(&as_accept).unwrap() {
        Message::Accept(a) => assert_eq!(
            a.body(),
            &Body {
                method: Some(Method::Direct),
                ..m.body().clone()
            }
        ),
        other => panic!("decoded as {:?}", other.kind()),
    }
}

#[test]
fn debug_never_shows_the_secret() {
    let text = format!("{:?}", golden());
    assert!(text.contains("Secret(<redacted>)"));
    assert!(!text.contains("a0a1a2"));
    assert!(!text.contains("160, 161"));
}

fn with(line: usize, new: &str) -> String {
    let mut lines: Vec<&str> = GOLDEN.lines().collect();
    lines[line] = new;
    lines.join("\n") + "\n"
}

fn err(input: &str) -> MessageError {
    Message::decode(input.as_bytes()).unwrap_err()
}

#[test]
fn each_malformation_has_its_own_error() {
    use MessageError as E;
    assert_eq!(
        err(&"x".repeat(MAX_ENCODED + 1)),
        E::TooLarge {
            len: MAX_ENCODED + 1
        }
    );
    assert_eq!(
        err(&GOLDEN.replace("kind: invite\n", "kind: invite\r\n")),
        E::NotText { offset: 32 }
    );
    assert!(matches!(
        err(&GOLDEN.replace("home", "hömé")),
        E::NotText { .. }
    ));
    assert_eq!(err(GOLDEN.trim_end()), E::Unterminated);
    assert_eq!(err(""), E::BadMagic);
    assert_eq!(err("PLEXUS-RENDEZVOUS 1\n"), E::MissingField("kind"));
    assert_eq!(err("hello\n"), E::BadMagic);
    assert_eq!(
        err(&with(0, "PLEXUS-RENDEZVOUS 4")),
        E::UnsupportedVersion("4".into())
    );
    // Version 3 has `nat6` after `port-mapping`: a version 2 body under its magic line.
    assert_eq!(
        err(&with(0, "PLEXUS-RENDEZVOUS 3")),
        E::OutOfOrder {
            line: 15,
            expected: "nat6",
            found: "relay"
        }
    );
    assert_eq!(err(&with(0, "PLEXUS-RENDEZVOUS  1")), E::BadMagic);
    assert_eq!(err(&with(1, "kind:invite")), E::BadLine { line: 2 });
    assert_eq!(
        err(&with(1, "colour: blue")),
        E::UnknownField {
            line: 2,
            key: "colour".into()
        }
    );
    assert_eq!(
        err(&with(2, "kind: invite")),
        E::DuplicateField {
            line: 3,
            key: "kind"
        }
    );
    assert_eq!(
        err(&with(2, "to: bob@lab.example/office")),
        E::OutOfOrder {
            line: 3,
            expected: "from",
            found: "to"
        }
    );
    let cut: String = GOLDEN.lines().take(5).map(|l| format!("{l}\n")).collect();
    assert_eq!(err(&cut), E::MissingField("time"));
    assert_eq!(
        err(&format!("{GOLDEN}secret: 00\n")),
        E::DuplicateField {
            line: 19,
            key: "secret"
        }
    );
    assert_eq!(
        err(&format!("{GOLDEN}more\n")),
        E::TrailingData { line: 19 }
    );
    assert_eq!(err(&format!("{GOLDEN}\n")), E::TrailingData { line: 19 });
    assert!(matches!(
        err(&with(1, "kind: hello")),
        E::BadValue { field: "kind", .. }
    ));
    assert!(matches!(
        err(&with(2, "from: Alice@lab.example/home")),
        E::BadId {
            field: "from",
            error: IdError::BadLocalPart(_)
        }
    ));
    assert!(matches!(
        err(&with(3, "to: bob@lab.example")),
        E::BadId {
            field: "to",
            error: IdError::MissingInstance(_)
        }
    ));
    assert!(matches!(
        err(&with(4, "session: 000102")),
        E::BadValue {
            field: "session",
            ..
        }
    ));
    assert!(matches!(
        err(&with(4, "session: 000102030405060708090A0B0C0D0E0F")),
        E::BadValue {
            field: "session",
            ..
        }
    ));
    for t in ["01700000000", "", "-1", "+5", "1e9", "99999999999999999999"] {
        assert!(
            matches!(
                err(&with(5, &format!("time: {t}"))),
                E::BadValue { field: "time", .. }
            ),
            "{t}"
        );
    }
    assert!(matches!(
        err(&with(6, "mapped: 203.0.113.7")),
        E::BadValue {
            field: "mapped",
            ..
        }
    ));
    assert!(matches!(
        err(&with(6, "mapped: [2001:DB8::7]:40000")),
        E::BadValue {
            field: "mapped",
            ..
        }
    ));
    assert!(matches!(
        err(&with(6, "mapped: 203.0.113.7:0")),
        E::BadValue {
            field: "mapped",
            ..
        }
    ));
    assert!(matches!(
        err(&with(6, "mapped: 203.0.113.7:1  203.0.113.7:2")),
        E::BadValue {
            field: "mapped",
            ..
        }
    ));
    assert!(matches!(
        err(&with(6, "mapped: ")),
        E::BadValue {
            field: "mapped",
            ..
        }
    ));
    assert_eq!(
        err(&with(7, "local: 10.0.0.1:5 10.0.0.1:5")),
        E::DuplicateEndpoint {
            field: "local",
            addr: "10.0.0.1:5".parse().unwrap()
        }
    );
    let nine: Vec<String> = (1..=9).map(|p| format!("10.0.0.1:{p}")).collect();
    assert_eq!(
        err(&with(7, &format!("local: {}", nine.join(" ")))),
        E::TooManyEndpoints {
            field: "local",
            count: 9
        }
    );
    assert!(matches!(
        err(&with(8, "nat: maybe")),
        E::BadValue { field: "nat", .. }
    ));
    assert!(matches!(
        err(&with(8, "nat: unknown")),
        E::BadValue { field: "nat", .. }
    ));
    assert!(matches!(
        err(&with(9, "mapping: symmetric")),
        E::BadValue {
            field: "mapping",
            ..
        }
    ));
    assert!(matches!(
        err(&with(10, "filtering: ")),
        E::BadValue {
            field: "filtering",
            ..
        }
    ));
    assert!(matches!(
        err(&with(11, "hairpin: true")),
        E::BadValue {
            field: "hairpin",
            ..
        }
    ));
    assert!(matches!(
        err(&with(12, "port-preserved: 1")),
        E::BadValue {
            field: "port-preserved",
            ..
        }
    ));
    let e = err(&with(
        17,
        "secret: a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbe",
    ));
    assert!(matches!(
        e,
        E::BadValue {
            field: "secret",
            ..
        }
    ));
    assert!(
        !e.to_string().contains("a0a1"),
        "the secret must not be echoed: {e}"
    );
}

#[test]
fn encode_refuses_what_decode_would_refuse() {
    let mut m = golden();
    m.0.local = (1..=9)
        .map(|p| SocketAddr::from(([10, 0, 0, 1], p)))
        .collect();
    assert!(matches!(
        m.encode(),
        Err(MessageError::TooManyEndpoints {
            field: "local",
            count: 9
        })
    ));
    m.0.local = vec![SocketAddr::from(([10, 0, 0, 1], 0))];
    assert!(matches!(
        m.encode(),
        Err(MessageError::BadValue { field: "local", .. })
    ));
    m.0.local = vec!["[fe80::1%2]:5".parse().unwrap()];
    assert!(matches!(
        m.encode(),
        Err(MessageError::BadValue { field: "local", .. })
    ));
}

#[test]
fn largest_message_fits_the_bound() {
    let mut m = golden();
    let v6 = |p| {
        SocketAddr::from((
            [
                0x2001, 0xdb8, 0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x6666,
            ],
            p,
        ))
    };
    m.0.mapped = (1..=MAX_ENDPOINTS as u16).map(|p| v6(60000 + p)).collect();
    m.0.local = (1..=MAX_ENDPOINTS as u16).map(|p| v6(50000 + p)).collect();
    m.0.from = PeerId::parse(&format!(
        "{}@{}/{}",
        "a".repeat(64),
        vec!["d".repeat(63); 3].join("."),
        "i".repeat(32)
    ))
    .unwrap();
    m.0.to = m.0.from.clone();
    let enc = m.encode().unwrap();
    assert!(enc.len() <= MAX_ENCODED, "{}", enc.len());
    assert_eq!(Message::decode(&enc).unwrap(), Message::Invite(m));
}

/// Bounded randomized robustness: mutated golden messages (versions 2 and 3) never
/// panic and either fail with an error or decode to something that re-encodes to the
/// same bytes.
#[test]
fn random_mutations_never_panic() {
    let mut state: u64 = 0x5eed_1234_abcd_0001;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let bases = [
        GOLDEN,
        GOLDEN_V3_INVITE,
        GOLDEN_V3_ACCEPT,
        GOLDEN_V3_ACCEPT_V6_ONLY,
    ];
    for i in 0..40_000 {
        let mut m = bases[i % bases.len()].as_bytes().to_vec();
        for _ in 0..1 + next() % 4 {
            let pos = (next() as usize) % (m.len() + 1);
            match next() % 4 {
                0 if pos < m.len() => m[pos] = next() as u8,
                1 if pos < m.len() => {
                    m.remove(pos);
                }
                2 => m.insert(pos, b" :\n-0a@/.[]"[(next() % 11) as usize]),
                _ => m.truncate(pos),
            }
        }
        if let Ok(r) = Message::decode(&m) {
            assert_eq!(r.encode().unwrap(), m, "decoded input must be canonical");
        }
    }
}

// ---- Version 3: both address families ----

/// The IPv6 side of a site behind a home router's stateful firewall: no NAT, the
/// firewall filters per address and port.
fn firewalled6() -> NatFacts {
    NatFacts {
        nat: false,
        mapping: Some(Behaviour::EndpointIndependent),
        filtering: Some(Behaviour::AddressAndPortDependent),
        hairpin: None,
        port_preserved: Some(true),
        port_mapping: None,
    }
}

/// A dual-stack invite: both families in `mapped` and `local`, IPv6 facts.
const GOLDEN_V3_INVITE: &str = "PLEXUS-RENDEZVOUS 3\n\
kind: invite\n\
from: alice@lab.example/home\n\
to: bob@lab.example/office\n\
session: 000102030405060708090a0b0c0d0e0f\n\
time: 1700000000\n\
mapped: 203.0.113.7:40000 [2001:db8:a::7]:40000\n\
local: 192.168.1.20:40000 [2001:db8:a::7]:40000\n\
nat: yes\n\
mapping: endpoint-independent\n\
filtering: address-and-port-dependent\n\
hairpin: unknown\n\
port-preserved: no\n\
port-mapping: -\n\
nat6: no endpoint-independent address-and-port-dependent unknown yes -\n\
relay: fallback\n\
method: -\n\
method6: -\n\
relayed: -\n\
secret: a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf\n";

/// Birthday probing over IPv4 and the plain punch over IPv6, both offered.
const GOLDEN_V3_ACCEPT: &str = "PLEXUS-RENDEZVOUS 3\n\
kind: accept\n\
from: bob@lab.example/office\n\
to: alice@lab.example/home\n\
session: 000102030405060708090a0b0c0d0e0f\n\
time: 1700000001\n\
mapped: 198.51.100.30:50000 [2001:db8:b::30]:50000\n\
local: 10.9.0.2:50000 [2001:db8:b::30]:50000\n\
nat: yes\n\
mapping: address-and-port-dependent\n\
filtering: address-and-port-dependent\n\
hairpin: no\n\
port-preserved: no\n\
port-mapping: -\n\
nat6: no endpoint-independent address-dependent no yes pcp\n\
relay: never\n\
method: birthday acceptor 256\n\
method6: direct\n\
relayed: -\n\
secret: 0101010101010101010101010101010101010101010101010101010101010101\n";

/// An IPv6-only acceptor: no IPv4 side (`nat: no` and unknowns), no IPv4 plan.
const GOLDEN_V3_ACCEPT_V6_ONLY: &str = "PLEXUS-RENDEZVOUS 3\n\
kind: accept\n\
from: bob@lab.example/office\n\
to: alice@lab.example/home\n\
session: 000102030405060708090a0b0c0d0e0f\n\
time: 1700000002\n\
mapped: [2001:db8:c::2]:40000\n\
local: [2001:db8:c::2]:40000\n\
nat: no\n\
mapping: unknown\n\
filtering: unknown\n\
hairpin: unknown\n\
port-preserved: unknown\n\
port-mapping: -\n\
nat6: no endpoint-independent endpoint-independent unknown yes -\n\
relay: never\n\
method: -\n\
method6: direct-full-ttl\n\
relayed: -\n\
secret: 0202020202020202020202020202020202020202020202020202020202020202\n";

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

/// The dual-stack invite, built as a session builds one.
fn golden_v3() -> Invite {
    let g = golden();
    let mut i = Invite::new(
        g.from.clone(),
        g.to.clone(),
        g.time,
        addrs(&["203.0.113.7:40000", "[2001:db8:a::7]:40000"]),
        addrs(&["192.168.1.20:40000", "[2001:db8:a::7]:40000"]),
        g.nat,
    )
    .unwrap()
    .with_relay(RelayPolicy::Fallback)
    .with_nat6(Some(firewalled6()));
    i.0.session = g.session;
    i.0.secret = g.secret.clone();
    i
}

fn golden_v3_accept() -> Accept {
    let mut a = Accept::new(
        &golden_v3(),
        1_700_000_001,
        addrs(&["198.51.100.30:50000", "[2001:db8:b::30]:50000"]),
        addrs(&["10.9.0.2:50000", "[2001:db8:b::30]:50000"]),
        NatFacts {
            nat: true,
            mapping: Some(Behaviour::AddressAndPortDependent),
            filtering: Some(Behaviour::AddressAndPortDependent),
            hairpin: Some(false),
            port_preserved: Some(false),
            port_mapping: None,
        },
    )
    .unwrap()
    .with_nat6(Some(NatFacts {
        filtering: Some(Behaviour::AddressDependent),
        hairpin: Some(false),
        port_mapping: Some(PortMapping::Pcp),
        ..firewalled6()
    }))
    .with_families(
        Some(Method::Birthday {
            hard: Side::Acceptor,
            sockets: 256,
        }),
        Some(Method::Direct),
        RelayPolicy::Never,
        None,
    )
    .unwrap();
    a.0.secret = Secret::from_bytes([1; 32]);
    a
}

fn golden_v3_accept_v6_only() -> Accept {
    let mut a = Accept::new(
        &golden_v3(),
        1_700_000_002,
        addrs(&["[2001:db8:c::2]:40000"]),
        addrs(&["[2001:db8:c::2]:40000"]),
        NatFacts::default(),
    )
    .unwrap()
    .with_nat6(Some(NatFacts {
        filtering: Some(Behaviour::EndpointIndependent),
        ..firewalled6()
    }))
    .with_families(None, Some(Method::DirectFullTtl), RelayPolicy::Never, None)
    .unwrap();
    a.0.secret = Secret::from_bytes([2; 32]);
    a
}

#[test]
fn golden_v3_messages_encode_and_decode_exactly() {
    let cases: [(Message, &str); 3] = [
        (golden_v3().into(), GOLDEN_V3_INVITE),
        (golden_v3_accept().into(), GOLDEN_V3_ACCEPT),
        (golden_v3_accept_v6_only().into(), GOLDEN_V3_ACCEPT_V6_ONLY),
    ];
    for (m, text) in cases {
        assert_eq!(String::from_utf8(m.encode().unwrap()).unwrap(), text);
        assert_eq!(Message::decode(text.as_bytes()).unwrap(), m);
    }
    let Message::Accept(a) = Message::decode(GOLDEN_V3_ACCEPT.as_bytes()).unwrap() else {
        panic!("an accept");
    };
    assert_eq!(
        (a.method4(), a.method6()),
        (
            Some(Method::Birthday {
                hard: Side::Acceptor,
                sockets: 256
            }),
            Some(Method::Direct)
        )
    );
    let Message::Accept(a) = Message::decode(GOLDEN_V3_ACCEPT_V6_ONLY.as_bytes()).unwrap() else {
        panic!("an accept");
    };
    assert_eq!(
        (a.method4(), a.method6(), a.method()),
        (None, Some(Method::DirectFullTtl), Method::Direct)
    );
    assert_eq!(a.nat, NatFacts::default());
}

/// Drops the `nat6` and `method6` lines of a version 3 text and writes it as version 2.
fn as_v2(v3: &str) -> String {
    v3.lines()
        .filter(|l| !l.starts_with("nat6: ") && !l.starts_with("method6: "))
        .map(|l| l.replace("PLEXUS-RENDEZVOUS 3", "PLEXUS-RENDEZVOUS 2") + "\n")
        .collect()
}

#[test]
fn without_ipv6_facts_or_method_a_message_is_written_as_version_2() {
    // Byte for byte what version 2 wrote, so the previous release reads it.
    let invite = golden_v3().with_nat6(None);
    let v2 = as_v2(GOLDEN_V3_INVITE);
    assert_eq!(String::from_utf8(invite.encode().unwrap()).unwrap(), v2);
    assert_eq!(Message::decode(v2.as_bytes()).unwrap(), invite);
    let accept = golden_v3_accept()
        .with_nat6(None)
        .with_families(
            Some(Method::Birthday {
                hard: Side::Acceptor,
                sockets: 256,
            }),
            None,
            RelayPolicy::Never,
            None,
        )
        .unwrap();
    let v2 = as_v2(GOLDEN_V3_ACCEPT);
    assert_eq!(String::from_utf8(accept.encode().unwrap()).unwrap(), v2);
    assert_eq!(Message::decode(v2.as_bytes()).unwrap(), accept);
    // `with_route` is the IPv4-only `with_families`.
    let routed = golden_v3_accept()
        .with_nat6(None)
        .with_route(Method::DirectFullTtl, RelayPolicy::Fallback, None)
        .unwrap();
    assert_eq!(
        (routed.method4(), routed.method6(), routed.relay),
        (Some(Method::DirectFullTtl), None, RelayPolicy::Fallback)
    );
    assert!(routed
        .encode()
        .unwrap()
        .starts_with(b"PLEXUS-RENDEZVOUS 2\n"));
    // Either IPv6 field alone makes it version 3.
    let six_facts_only = golden_v3_accept()
        .with_families(Some(Method::Direct), None, RelayPolicy::Never, None)
        .unwrap();
    assert!(six_facts_only
        .encode()
        .unwrap()
        .starts_with(b"PLEXUS-RENDEZVOUS 3\n"));
    let six_method_only = six_facts_only
        .with_nat6(None)
        .with_families(None, Some(Method::Direct), RelayPolicy::Never, None)
        .unwrap();
    let text = String::from_utf8(six_method_only.encode().unwrap()).unwrap();
    assert!(text.starts_with("PLEXUS-RENDEZVOUS 3\n"), "{text}");
    assert!(text.contains("\nnat6: -\n") && text.contains("\nmethod: -\nmethod6: direct\n"));
    assert_eq!(Message::decode(text.as_bytes()).unwrap(), six_method_only);
}

#[test]
fn older_versions_read_without_ipv6() {
    for text in [GOLDEN, GOLDEN_ACCEPT, GOLDEN_ROUTED_ACCEPT, GOLDEN_V1] {
        let m = Message::decode(text.as_bytes()).unwrap();
        assert_eq!((m.body().nat6, m.body().method6), (None, None), "{text}");
    }
    let accept_v1 = GOLDEN_V1.replace("kind: invite", "kind: accept");
    for (text, want) in [
        (accept_v1.as_str(), Method::Direct),
        (GOLDEN_ACCEPT, Method::Direct),
        (
            GOLDEN_ROUTED_ACCEPT,
            Method::Birthday {
                hard: Side::Acceptor,
                sockets: 256,
            },
        ),
    ] {
        let Message::Accept(a) = Message::decode(text.as_bytes()).unwrap() else {
            panic!("an accept");
        };
        assert_eq!((a.method4(), a.method6()), (Some(want), None));
    }
}

/// `text` with the value of `key` replaced (the key must be there once).
fn set(text: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key}: ");
    assert_eq!(text.lines().filter(|l| l.starts_with(&prefix)).count(), 1);
    text.lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                format!("{prefix}{value}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

fn bad_field(e: &MessageError) -> Option<&'static str> {
    match e {
        MessageError::BadValue { field, .. } => Some(field),
        _ => None,
    }
}

#[test]
fn nat6_is_six_canonical_tokens() {
    let good = "no endpoint-independent address-and-port-dependent unknown yes -";
    assert!(Message::decode(set(GOLDEN_V3_INVITE, "nat6", good).as_bytes()).is_ok());
    for (v, says) in [
        ("", "found 1 tokens"),
        ("none", "found 1 tokens"),
        (
            "no endpoint-independent address-and-port-dependent unknown yes",
            "found 5 tokens",
        ),
        (
            "no endpoint-independent address-and-port-dependent unknown yes - -",
            "found 7 tokens",
        ),
        (
            "no  endpoint-independent address-and-port-dependent unknown yes -",
            "found 7 tokens",
        ),
        (
            " no endpoint-independent address-and-port-dependent unknown yes -",
            "found 7 tokens",
        ),
        (
            "no endpoint-independent address-and-port-dependent unknown yes - ",
            "found 7 tokens",
        ),
        (
            "unknown endpoint-independent address-and-port-dependent unknown yes -",
            "token 1 (nat)",
        ),
        (
            "maybe endpoint-independent address-and-port-dependent unknown yes -",
            "token 1 (nat)",
        ),
        (
            "no symmetric address-and-port-dependent unknown yes -",
            "token 2 (mapping)",
        ),
        (
            "no endpoint-independent Address-Dependent unknown yes -",
            "token 3 (filtering)",
        ),
        (
            "no endpoint-independent address-and-port-dependent true yes -",
            "token 4 (hairpin)",
        ),
        (
            "no endpoint-independent address-and-port-dependent unknown - -",
            "token 5 (port-preserved)",
        ),
        (
            "no endpoint-independent address-and-port-dependent unknown yes upnp",
            "token 6 (port-mapping)",
        ),
        (
            "no endpoint-independent address-and-port-dependent unknown yes unknown",
            "token 6 (port-mapping)",
        ),
    ] {
        let e = err(&set(GOLDEN_V3_INVITE, "nat6", v));
        assert_eq!(bad_field(&e), Some("nat6"), "{v:?} -> {e:?}");
        assert!(e.to_string().contains(says), "{v:?} -> {e}");
    }
}

#[test]
fn method6_is_a_plain_punch_named_by_an_accept() {
    for v in [
        "relay",
        "birthday acceptor 256",
        "birthday inviter 1",
        "telepathy",
        "Direct",
        "direct ",
        "",
    ] {
        let e = err(&set(GOLDEN_V3_ACCEPT, "method6", v));
        assert_eq!(bad_field(&e), Some("method6"), "{v:?} -> {e:?}");
    }
    let e = err(&set(GOLDEN_V3_ACCEPT, "method6", "relay"));
    assert!(e.to_string().contains("IPv4-only plan"), "{e}");
    // An invite names no method, for either family.
    let e = err(&set(GOLDEN_V3_INVITE, "method6", "direct"));
    assert_eq!(bad_field(&e), Some("method6"), "{e:?}");
    let e = err(&set(GOLDEN_V3_INVITE, "method", "direct"));
    assert_eq!(bad_field(&e), Some("method"), "{e:?}");
    // An accept names at least one.
    let e = err(&set(GOLDEN_V3_ACCEPT_V6_ONLY, "method6", "-"));
    assert_eq!(bad_field(&e), Some("method"), "{e:?}");
    assert!(e.to_string().contains("at least one family"), "{e}");
    // The keys come in their order: method6 right after method.
    let swapped = GOLDEN_V3_ACCEPT.replace(
        "method: birthday acceptor 256\nmethod6: direct\n",
        "method6: direct\nmethod: birthday acceptor 256\n",
    );
    assert_eq!(
        err(&swapped),
        MessageError::OutOfOrder {
            line: 17,
            expected: "method",
            found: "method6"
        }
    );
    // Version 2 knows neither key.
    let v2_with_nat6 = GOLDEN_V3_INVITE
        .replace("PLEXUS-RENDEZVOUS 3", "PLEXUS-RENDEZVOUS 2")
        .replace("method6: -\n", "");
    assert_eq!(
        err(&v2_with_nat6),
        MessageError::UnknownField {
            line: 15,
            key: "nat6".into()
        }
    );
}

#[test]
fn a_family_needs_an_endpoint_of_that_family() {
    // IPv6 facts without an IPv6 endpoint.
    let e = err(&set(GOLDEN_V3_INVITE, "mapped", "203.0.113.7:40000"));
    assert_eq!(bad_field(&e), Some("nat6"), "{e:?}");
    // `local` does not count: the peer reaches `mapped`.
    let e = err(&set(
        &set(GOLDEN_V3_ACCEPT, "mapped", "198.51.100.30:50000"),
        "nat6",
        "-",
    ));
    assert_eq!(bad_field(&e), Some("method6"), "{e:?}");
    // An IPv4 plan without an IPv4 endpoint, unless it is the relay's.
    let v6_only = GOLDEN_V3_ACCEPT_V6_ONLY;
    for m in ["direct", "direct-full-ttl", "birthday inviter 64"] {
        let e = err(&set(v6_only, "method", m));
        assert_eq!(bad_field(&e), Some("method"), "{m}: {e:?}");
    }
    let relayed = set(
        &set(v6_only, "method", "relay"),
        "relayed",
        "203.0.113.5:49160",
    );
    let Message::Accept(a) = Message::decode(relayed.as_bytes()).unwrap() else {
        panic!("an accept");
    };
    assert_eq!(
        (a.method4(), a.method6()),
        (Some(Method::Relay), Some(Method::DirectFullTtl))
    );
    assert_eq!(a.encode().unwrap(), relayed.as_bytes());
    // An IPv4-mapped IPv6 address is of the IPv6 family, as `Family::of` says.
    let mapped4in6 = set(GOLDEN_V3_INVITE, "mapped", "[::ffff:203.0.113.7]:40000");
    assert!(Message::decode(mapped4in6.as_bytes()).is_ok());
    // Version 2 said nothing of families: an IPv6-only side's v2 accept stays valid.
    let v2 = as_v2(&set(v6_only, "method", "direct"));
    assert!(Message::decode(v2.as_bytes()).is_ok());
}

#[test]
fn version_3_only_when_version_2_cannot_say_it() {
    use MessageError as E;
    let lowest = E::NotLowestVersion {
        version: 3,
        lowest: 2,
    };
    let plain = set(&set(GOLDEN_V3_INVITE, "nat6", "-"), "method6", "-");
    assert_eq!(err(&plain), lowest);
    let plain_accept = set(&set(GOLDEN_V3_ACCEPT, "nat6", "-"), "method6", "-");
    assert_eq!(err(&plain_accept), lowest);
    // A decline carries no family data: always version 2.
    let decline_v3 = GOLDEN_DECLINE.replace("RENDEZVOUS 2", "RENDEZVOUS 3");
    assert_eq!(err(&decline_v3), lowest);
    assert!(lowest.to_string().contains("lowest version"), "{lowest}");
    let decline = Decline::new(&golden_v3(), 1_700_000_002, "no").unwrap();
    assert!(decline
        .encode()
        .unwrap()
        .starts_with(b"PLEXUS-RENDEZVOUS 2\n"));
}

#[test]
fn builders_and_encoding_refuse_what_decoding_refuses() {
    let accept = || {
        let mut a = golden_v3_accept();
        a.0.method = Some(Method::Direct);
        a.0.method6 = None;
        a
    };
    let fam = |m4, m6, relayed| accept().with_families(m4, m6, RelayPolicy::Fallback, relayed);
    let field = |r: Result<Accept, MessageError>| bad_field(&r.unwrap_err());
    assert_eq!(field(fam(None, None, None)), Some("method"));
    assert_eq!(field(fam(None, Some(Method::Relay), None)), Some("method6"));
    assert_eq!(
        field(fam(
            Some(Method::Direct),
            Some(Method::Birthday {
                hard: Side::Inviter,
                sockets: 8
            }),
            None
        )),
        Some("method6")
    );
    assert_eq!(field(fam(Some(Method::Relay), None, None)), Some("relayed"));
    assert!(fam(
        Some(Method::Relay),
        Some(Method::Direct),
        Some("203.0.113.5:49160".parse().unwrap())
    )
    .is_ok());
    // A plan for a family the acceptor has no mapped endpoint of.
    let mut v4_only = accept();
    v4_only.0.mapped = addrs(&["198.51.100.30:50000"]);
    v4_only.0.nat6 = None;
    assert_eq!(
        field(v4_only.with_families(None, Some(Method::Direct), RelayPolicy::Never, None)),
        Some("method6")
    );
    let v6_only = golden_v3_accept_v6_only();
    assert_eq!(
        field(
            v6_only
                .clone()
                .with_families(Some(Method::Direct), None, RelayPolicy::Never, None)
        ),
        Some("method")
    );
    // Fields set by hand: encoding checks them all.
    let encode_field = |b: &Body, kind| bad_field(&b.encode_as(kind).unwrap_err());
    let mut b = golden_v3().body().clone();
    b.mapped = addrs(&["203.0.113.7:40000"]);
    assert_eq!(encode_field(&b, Kind::Invite), Some("nat6"));
    let mut b = golden_v3().body().clone();
    b.method6 = Some(Method::Direct);
    assert_eq!(encode_field(&b, Kind::Invite), Some("method6"));
    b.method6 = Some(Method::Relay);
    assert_eq!(encode_field(&b, Kind::Accept), Some("method6"));
    let mut b = golden_v3().body().clone();
    b.relayed = Some("203.0.113.5:49160".parse().unwrap());
    assert_eq!(encode_field(&b, Kind::Invite), Some("relayed"));
    let mut b = v6_only.body().clone();
    b.method = Some(Method::Relay);
    assert_eq!(encode_field(&b, Kind::Accept), Some("relayed"));
    b.method = Some(Method::Direct);
    assert_eq!(encode_field(&b, Kind::Accept), Some("method"));
}

/// Random bodies of every shape: those the rules allow encode in the lowest version
/// and decode to themselves; the others are refused. Which is which is worked out here
/// from the rules, not by the code under test.
#[test]
fn generated_bodies_round_trip_or_are_refused() {
    let mut rng = crate::testing::Rng::new(13);
    let pool: Vec<SocketAddr> = addrs(&[
        "203.0.113.7:40000",
        "198.51.100.30:1",
        "10.9.0.2:65535",
        "192.168.1.20:40000",
        "[2001:db8:a::7]:40000",
        "[2001:db8:b::30]:50000",
        "[fd00::1]:4000",
        "[fe80::1]:5",
        "[2001:db8:1111:2222:3333:4444:5555:6666]:60001",
    ]);
    let pick_list = |rng: &mut crate::testing::Rng| {
        let mut list: Vec<SocketAddr> = Vec::new();
        for a in &pool {
            if list.len() < MAX_ENDPOINTS && rng.chance(0.3) {
                list.push(*a);
            }
        }
        list
    };
    let behaviour = |rng: &mut crate::testing::Rng| match rng.below(4) {
        0 => None,
        1 => Some(Behaviour::EndpointIndependent),
        2 => Some(Behaviour::AddressDependent),
        _ => Some(Behaviour::AddressAndPortDependent),
    };
    let opt_bool = |rng: &mut crate::testing::Rng| match rng.below(3) {
        0 => None,
        n => Some(n == 1),
    };
    let facts = |rng: &mut crate::testing::Rng| NatFacts {
        nat: rng.chance(0.5),
        mapping: behaviour(rng),
        filtering: behaviour(rng),
        hairpin: opt_bool(rng),
        port_preserved: opt_bool(rng),
        port_mapping: match rng.below(4) {
            0 => Some(PortMapping::Pcp),
            1 => Some(PortMapping::NatPmp),
            2 => Some(PortMapping::Upnp),
            _ => None,
        },
    };
    let (mut written, mut v3, mut refused) = (0, 0, 0);
    for i in 0..4000u64 {
        let kind = if rng.chance(0.5) {
            Kind::Invite
        } else {
            Kind::Accept
        };
        let mapped = pick_list(&mut rng);
        let local = pick_list(&mut rng);
        let nat = facts(&mut rng);
        let nat6 = rng.chance(0.5).then(|| facts(&mut rng));
        let (mut method, mut method6, mut relayed) = (None, None, None);
        if kind == Kind::Accept {
            method = match rng.below(5) {
                0 => None,
                1 => Some(Method::Direct),
                2 => Some(Method::DirectFullTtl),
                3 => Some(Method::Birthday {
                    hard: if rng.chance(0.5) {
                        Side::Inviter
                    } else {
                        Side::Acceptor
                    },
                    sockets: 1 + rng.below(u64::from(MAX_BIRTHDAY_SOCKETS)) as u16,
                }),
                _ => Some(Method::Relay),
            };
            method6 = match rng.below(3) {
                0 => None,
                1 => Some(Method::Direct),
                _ => Some(Method::DirectFullTtl),
            };
            if method.is_none() && method6.is_none() {
                method = Some(Method::Direct);
            }
            if method == Some(Method::Relay) || rng.chance(0.2) {
                relayed = Some(pool[rng.below(pool.len() as u64) as usize]);
            }
        }
        let body = Body {
            from: PeerId::parse("alice@lab.example/home").unwrap(),
            to: PeerId::parse("bob@lab.example/office").unwrap(),
            session: SessionId(core::array::from_fn(|j| (i as u8).wrapping_add(j as u8))),
            time: rng.next_u64() >> rng.below(64),
            mapped,
            local,
            nat,
            nat6,
            relay: [
                RelayPolicy::Never,
                RelayPolicy::Fallback,
                RelayPolicy::Always,
            ][rng.below(3) as usize],
            method,
            method6,
            relayed,
            secret: Secret::from_bytes(core::array::from_fn(|_| rng.next_u64() as u8)),
        };
        let has = |f| body.mapped.iter().any(|a| Family::of(a) == f);
        let is_v3 = nat6.is_some() || method6.is_some();
        let ipv4_plan = matches!(method, Some(m) if m != Method::Relay);
        let allowed = !is_v3
            || ((nat6.is_none() || has(Family::V6))
                && (method6.is_none() || has(Family::V6))
                && (!ipv4_plan || has(Family::V4)));
        match body.encode_as(kind) {
            Ok(bytes) => {
                assert!(allowed, "{body:?} encoded");
                let magic = if is_v3 {
                    "PLEXUS-RENDEZVOUS 3\n"
                } else {
                    "PLEXUS-RENDEZVOUS 2\n"
                };
                assert!(bytes.starts_with(magic.as_bytes()));
                let back = Message::decode(&bytes).unwrap();
                assert_eq!((back.kind(), back.body()), (kind, &body));
                written += 1;
                v3 += usize::from(is_v3);
            }
            Err(e) => {
                assert!(!allowed, "{body:?} refused: {e}");
                assert!(
                    matches!(bad_field(&e), Some("nat6" | "method6" | "method")),
                    "{e:?}"
                );
                refused += 1;
            }
        }
    }
    // Every shape was reached.
    assert!(
        written > 1000 && v3 > 500 && refused > 200,
        "{written} {v3} {refused}"
    );
}

#[test]
fn largest_v3_message_fits_the_bound() {
    let v6 = |p| {
        SocketAddr::from((
            [
                0x2001, 0xdb8, 0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x6666,
            ],
            p,
        ))
    };
    let longest = NatFacts {
        nat: true,
        mapping: Some(Behaviour::AddressAndPortDependent),
        filtering: Some(Behaviour::AddressAndPortDependent),
        hairpin: Some(false),
        port_preserved: Some(false),
        port_mapping: Some(PortMapping::NatPmp),
    };
    let id = PeerId::parse(&format!(
        "{}@{}/{}",
        "a".repeat(64),
        vec!["d".repeat(63); 3].join("."),
        "i".repeat(32)
    ))
    .unwrap();
    let mut a = golden_v3_accept();
    let mut mapped: Vec<SocketAddr> = (1..MAX_ENDPOINTS as u16).map(|p| v6(60000 + p)).collect();
    mapped.push("255.255.255.254:65535".parse().unwrap());
    a.0.mapped = mapped;
    a.0.local = (1..=MAX_ENDPOINTS as u16).map(|p| v6(50000 + p)).collect();
    a.0.from = id.clone();
    a.0.to = id;
    a.0.nat = longest;
    a.0.nat6 = Some(longest);
    a.0.time = u64::MAX;
    let a = a
        .with_families(
            Some(Method::Birthday {
                hard: Side::Acceptor,
                sockets: MAX_BIRTHDAY_SOCKETS,
            }),
            Some(Method::DirectFullTtl),
            RelayPolicy::Fallback,
            Some(v6(65535)),
        )
        .unwrap();
    let enc = a.encode().unwrap();
    assert!(enc.len() <= MAX_ENCODED, "{}", enc.len());
    assert_eq!(Message::decode(&enc).unwrap(), Message::Accept(a));
}
