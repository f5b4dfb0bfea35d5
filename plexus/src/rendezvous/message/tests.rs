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
        relay: RelayPolicy::Never,
        method: None,
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
        relay: RelayPolicy::Never,
        method: Some(Method::Direct),
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
        err(&with(0, "PLEXUS-RENDEZVOUS 3")),
        E::UnsupportedVersion("3".into())
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

/// Bounded randomized robustness: mutated golden messages never panic and either
/// fail with an error or decode to something that re-encodes to the same bytes.
#[test]
fn random_mutations_never_panic() {
    let mut state: u64 = 0x5eed_1234_abcd_0001;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let base = GOLDEN.as_bytes().to_vec();
    for _ in 0..20_000 {
        let mut m = base.clone();
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
