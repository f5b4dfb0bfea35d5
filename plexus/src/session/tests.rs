use super::*;
use crate::mediator::Incoming;

/// A channel that fails its first sends (and receives) with the given errors.
struct Flaky {
    failures: Vec<MediatorError>,
    receive_failures: Vec<MediatorError>,
    sent: usize,
    tries: usize,
    receives: usize,
}

impl Mediator for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    fn send(&mut self, _to: &str, _sealed: &[u8]) -> Result<(), MediatorError> {
        self.tries += 1;
        if self.failures.is_empty() {
            self.sent += 1;
            Ok(())
        } else {
            Err(self.failures.remove(0))
        }
    }
    fn receive(&mut self, t: Duration) -> Result<Option<Incoming>, MediatorError> {
        self.receives += 1;
        if self.receive_failures.is_empty() {
            std::thread::sleep(t.min(Duration::from_millis(10)));
            Ok(None)
        } else {
            Err(self.receive_failures.remove(0))
        }
    }
    fn acknowledge(&mut self, _id: &str, _o: Outcome) -> Result<(), MediatorError> {
        Ok(())
    }
}

fn flaky(failures: Vec<MediatorError>) -> Flaky {
    Flaky {
        failures,
        receive_failures: Vec::new(),
        sent: 0,
        tries: 0,
        receives: 0,
    }
}

#[test]
fn a_lost_channel_while_waiting_is_retried_until_the_deadline() {
    let mut m = flaky(vec![]);
    m.receive_failures = vec![
        MediatorError::Unreachable("connection lost".into()),
        MediatorError::Unreachable("connection lost".into()),
    ];
    let e = wait_for(
        &mut [],
        &mut m,
        Some,
        Some(Duration::from_millis(2000)),
        &[],
    )
    .unwrap_err();
    // Both failures were waited out (0.5 s + 1 s), then it kept receiving.
    assert!(matches!(e, SessionError::RendezvousTimeout(_)), "{e}");
    assert!(m.receives > 2, "{} receives", m.receives);

    // Wrong credentials end the wait at once.
    let mut m = flaky(vec![]);
    m.receive_failures = vec![MediatorError::Auth("bad password".into())];
    let e = wait_for(&mut [], &mut m, Some, Some(Duration::from_secs(5)), &[]).unwrap_err();
    assert!(
        matches!(e, SessionError::Mediator(MediatorError::Auth(_))),
        "{e}"
    );
    assert_eq!(m.receives, 1);
}

/// A channel that hands out one hostile message after another and refuses every
/// acknowledgement, the way a server refusing MOVE/EXPUNGE or a shared folder with
/// a vanished file would.
struct Hostile {
    handed: usize,
    acks: usize,
}

impl Mediator for Hostile {
    fn name(&self) -> &str {
        "hostile"
    }
    fn send(&mut self, _to: &str, _sealed: &[u8]) -> Result<(), MediatorError> {
        Ok(())
    }
    fn receive(&mut self, _t: Duration) -> Result<Option<Incoming>, MediatorError> {
        self.handed += 1;
        std::thread::sleep(Duration::from_millis(5));
        Ok(Some(Incoming {
            id: format!("m{}", self.handed),
            from: "mallory".into(),
            sealed: vec![0xff; 64],
        }))
    }
    fn acknowledge(&mut self, _id: &str, _o: Outcome) -> Result<(), MediatorError> {
        self.acks += 1;
        Err(MediatorError::Protocol("NO [CANNOT] MOVE refused".into()))
    }
}

#[test]
fn only_credentials_and_settings_end_a_wait() {
    for transient in [
        MediatorError::Protocol("unexpected answer".into()),
        MediatorError::Io(std::io::Error::other("EIO")),
        MediatorError::Unreachable("gone".into()),
    ] {
        let mut m = flaky(vec![]);
        m.receive_failures = vec![transient];
        let e = wait_for(
            &mut [],
            &mut m,
            Some,
            Some(Duration::from_millis(1500)),
            &[],
        )
        .unwrap_err();
        assert!(matches!(e, SessionError::RendezvousTimeout(_)), "{e}");
        assert!(m.receives > 1, "kept receiving after the failure");
    }
    let mut m = flaky(vec![]);
    m.receive_failures = vec![MediatorError::Config("no such folder".into())];
    let e = wait_for(&mut [], &mut m, Some, Some(Duration::from_secs(5)), &[]).unwrap_err();
    assert!(
        matches!(e, SessionError::Mediator(MediatorError::Config(_))),
        "{e}"
    );
    assert_eq!(m.receives, 1);
}

#[test]
fn refused_acknowledgements_of_hostile_messages_do_not_end_a_wait() {
    let mut m = Hostile { handed: 0, acks: 0 };
    let e = wait_for(&mut [], &mut m, Some, Some(Duration::from_millis(300)), &[]).unwrap_err();
    assert!(matches!(e, SessionError::RendezvousTimeout(_)), "{e}");
    assert!(
        m.handed > 3 && m.acks == m.handed,
        "{} / {}",
        m.handed,
        m.acks
    );
}

#[test]
fn endpoints_no_peer_can_have_are_refused() {
    use crate::identity::PeerId;
    // Built field by field: the constructors already refuse port 0.
    let msg = |mapped: &str, local: &[&str]| Body {
        from: PeerId::parse("a@x.example/one").unwrap(),
        to: PeerId::parse("b@y.example/two").unwrap(),
        session: crate::rendezvous::SessionId([1; 16]),
        time: 0,
        mapped: vec![mapped.parse().unwrap()],
        local: local.iter().map(|l| l.parse().unwrap()).collect(),
        nat: NatFacts::default(),
        nat6: None,
        relay: crate::rendezvous::RelayPolicy::Never,
        method: None,
        method6: None,
        relayed: None,
        secret: crate::rendezvous::Secret::from_bytes([2; 32]),
    };
    assert!(check_endpoints(&msg("198.51.100.7:4000", &["192.168.1.5:4000"])).is_ok());
    assert!(check_endpoints(&msg("[2001:db8::1]:4000", &[])).is_ok());
    for bad in [
        "0.0.0.0:4000",
        "127.0.0.1:4000",
        "224.0.0.1:4000",
        "255.255.255.255:4000",
        "198.51.100.7:0",
        "[::]:4000",
        "[::1]:4000",
        "[ff02::1]:4000",
        "[::ffff:127.0.0.1]:4000",
    ] {
        let e = check_endpoints(&msg(bad, &[])).unwrap_err();
        assert!(matches!(e, SessionError::BadEndpoint(_)), "{bad}: {e}");
        let e = check_endpoints(&msg("198.51.100.7:4000", &[bad])).unwrap_err();
        assert!(
            matches!(e, SessionError::BadEndpoint(_)),
            "local {bad}: {e}"
        );
    }
}

#[test]
fn accept_refuses_mismatched_peers_and_no_stun_without_panicking() {
    let mut m = flaky(vec![]);
    let mut settings = settings_for("127.0.0.1:9".parse().unwrap());
    let factory: ExecutorFactory = Arc::new(|| Err(ExecError::Config("none".into())));
    let e = accept(&settings, &mut [], &mut m, &[factory], true).unwrap_err();
    assert!(e.to_string().contains("one executor per peer"), "{e}");
    settings.stun.clear();
    let e = accept(&settings, &mut [], &mut m, &[], true).unwrap_err();
    assert!(e.to_string().contains("no STUN server"), "{e}");
}

#[test]
fn a_lower_error_stays_a_typed_cause() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut settings = settings_for("127.0.0.1:9".parse().unwrap());
    settings.bind = taken.local_addr().unwrap();
    let e = corridor_socket(&settings, "127.0.0.1:9".parse().unwrap()).unwrap_err();
    let SessionError::Bind { addr, source } = &e else {
        panic!("not a bind error: {e}");
    };
    assert_eq!(*addr, settings.bind);
    assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
    let cause = std::error::Error::source(&e).expect("the io::Error is the source");
    assert_eq!(
        cause.downcast_ref::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::AddrInUse)
    );
    assert!(e.to_string().contains("cannot bind"), "{e}");
}

#[test]
fn transport_failures_are_retried_a_bounded_number_of_times() {
    let unreachable = || MediatorError::Unreachable("timeout".into());
    let mut m = flaky(vec![unreachable(), unreachable()]);
    send_retrying(&mut m, "p", b"x", Duration::from_millis(1)).unwrap();
    assert_eq!((m.tries, m.sent), (3, 1));

    let mut m = flaky(vec![unreachable(), unreachable(), unreachable()]);
    let e = send_retrying(&mut m, "p", b"x", Duration::from_millis(1)).unwrap_err();
    assert!(matches!(
        e,
        SessionError::Mediator(MediatorError::Unreachable(_))
    ));
    assert_eq!((m.tries, m.sent), (3, 0));
}

#[test]
fn a_refused_login_is_not_retried() {
    let mut m = flaky(vec![MediatorError::Auth("bad password".into())]);
    let e = send_retrying(&mut m, "p", b"x", Duration::from_millis(1)).unwrap_err();
    assert!(matches!(e, SessionError::Mediator(MediatorError::Auth(_))));
    assert_eq!(m.tries, 1);
}

fn settings_for(stun: SocketAddr) -> SessionSettings {
    let config = crate::testing::stun::config(stun, Duration::from_millis(200));
    SessionSettings {
        stun: config.servers,
        bind: config.bind,
        family: nat::FamilyChoice::Auto,
        punch_hops: PunchHops::Auto,
        port_mapping: false,
        discovery_timeout: config.probe_timeout,
        rendezvous_timeout: None,
        handshake_timeout: Duration::from_secs(1),
        peer_address: "peer".into(),
        max_corridors: DEFAULT_MAX_CORRIDORS,
        birthday_sockets: crate::defaults::BIRTHDAY_SOCKETS,
        probe_limits: crate::punch::birthday::ProbeLimits::default(),
        relay: Default::default(),
    }
}

#[test]
fn the_inviter_goes_on_with_the_mapping_while_filtering_is_still_measured() {
    let server = crate::testing::stun::FilteringServer::start();
    let settings = settings_for(server.addr);
    let (early, _background) = discover_mapping(&settings).unwrap();
    assert!(early.nat);
    assert_eq!(early.mapping, Some(Behaviour::EndpointIndependent));
    // Not waited for: the invite says "unknown" (the format allows it).
    assert_eq!((early.filtering, early.hairpin), (None, None));
    let facts = facts_of(&early);
    assert_eq!((facts.filtering, facts.hairpin), (None, None));
    // The acceptor's discovery still waits for the whole profile.
    let full = discover(&settings).unwrap();
    assert_eq!(full.filtering, Some(Behaviour::AddressAndPortDependent));
}

#[test]
fn local_endpoints_go_to_the_peer_only_behind_the_same_public_address() {
    let msg = |mapped: &[&str], local: &[&str]| Body {
        from: crate::rendezvous::PeerId::parse("a@x.example/one").unwrap(),
        to: crate::rendezvous::PeerId::parse("b@x.example/two").unwrap(),
        session: crate::rendezvous::SessionId([1; 16]),
        time: 0,
        mapped: mapped.iter().map(|a| a.parse().unwrap()).collect(),
        local: local.iter().map(|a| a.parse().unwrap()).collect(),
        nat: NatFacts::default(),
        nat6: None,
        relay: crate::rendezvous::RelayPolicy::Never,
        method: None,
        method6: None,
        relayed: None,
        secret: crate::rendezvous::Secret::from_bytes([2; 32]),
    };
    let v4 = nat::Family::V4;
    let peer = msg(&["198.51.100.2:4000"], &["10.0.0.5:4000"]);
    assert_eq!(
        candidates(&peer, v4, "203.0.113.9:5000".parse().unwrap()),
        vec!["198.51.100.2:4000".parse().unwrap()]
    );
    assert_eq!(
        candidates(&peer, v4, "198.51.100.2:5000".parse().unwrap()),
        vec![
            "198.51.100.2:4000".parse::<SocketAddr>().unwrap(),
            "10.0.0.5:4000".parse().unwrap()
        ]
    );
    // A dual-stack peer: each family's punch gets that family's endpoints only.
    let peer = msg(
        &["198.51.100.2:4000", "[2001:db8:1::2]:4001"],
        &["10.0.0.5:4000", "[2001:db8:1::2]:4001"],
    );
    assert_eq!(
        candidates(
            &peer,
            nat::Family::V6,
            "[2001:db8:2::9]:5000".parse().unwrap()
        ),
        vec!["[2001:db8:1::2]:4001".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(
        candidates(&peer, v4, "203.0.113.9:5000".parse().unwrap()),
        vec!["198.51.100.2:4000".parse::<SocketAddr>().unwrap()]
    );
}

/// Hands out the given sealed messages once, records what is sent back.
struct Scripted {
    inbox: Vec<Vec<u8>>,
    sent: Vec<(String, Vec<u8>)>,
}

impl Mediator for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn send(&mut self, to: &str, sealed: &[u8]) -> Result<(), MediatorError> {
        self.sent.push((to.to_string(), sealed.to_vec()));
        Ok(())
    }
    fn receive(&mut self, t: Duration) -> Result<Option<Incoming>, MediatorError> {
        match self.inbox.pop() {
            Some(sealed) => Ok(Some(Incoming {
                id: format!("m{}", self.inbox.len()),
                from: "alice".into(),
                sealed,
            })),
            None => {
                std::thread::sleep(t.min(Duration::from_millis(20)));
                Ok(None)
            }
        }
    }
    fn acknowledge(&mut self, _id: &str, _o: Outcome) -> Result<(), MediatorError> {
        Ok(())
    }
}

#[test]
fn an_authentic_invite_that_cannot_be_served_is_declined_sealed() {
    use crate::testing::DemoCerts;
    let demo = DemoCerts::new("session-decline");
    let stun = crate::testing::stun::FilteringServer::start();
    let now = unix_now();
    // Signed and sealed by the pinned peer, but naming a loopback endpoint.
    let good = DemoCerts::invite("alice", "bob", now);
    let invite = Invite::new(
        good.from.clone(),
        good.to.clone(),
        now,
        vec!["127.0.0.1:41000".parse().unwrap()],
        vec![],
        good.nat,
    )
    .unwrap();
    let alice = demo.envelope("alice", "bob");
    let mut m = Scripted {
        inbox: vec![alice.seal(&invite).unwrap()],
        sent: vec![],
    };
    let mut bob = demo.envelope("bob", "alice");
    let mut settings = settings_for(stun.addr);
    settings.rendezvous_timeout = Some(Duration::from_secs(20));
    let e = accept_one(
        &settings,
        &mut [Peer {
            envelope: &mut bob,
            address: "alice".into(),
        }],
        &mut m,
    )
    .unwrap_err();
    assert!(matches!(e, SessionError::BadEndpoint(_)), "{e}");
    let [(to, sealed)] = &m.sent[..] else {
        panic!("one decline sent, got {} messages", m.sent.len());
    };
    assert_eq!(to, "alice");
    let mut alice = demo.envelope("alice", "bob");
    match alice.open(sealed, unix_now()).unwrap() {
        Message::Decline(d) => {
            assert_eq!(d.session, invite.session);
            assert!(d.reason().contains("127.0.0.1:41000"), "{}", d.reason());
        }
        other => panic!("a decline, not {:?}", other.kind()),
    }
}

/// Both families answer: a leg each, in the settings' order. A family whose server never
/// answers is left out once the other has been ready for the grace, its setup still
/// running (joined later, never waited for).
#[test]
fn an_inviter_uses_every_family_that_answers_and_does_not_wait_for_a_silent_one() {
    let v4 = crate::testing::stun::FilteringServer::start();
    let v6 = crate::testing::stun::FilteringServer::start_v6().expect("an IPv6 loopback");
    let mut settings = settings_for(v4.addr);
    settings.stun.push(v6.addr);
    let (legs, _bg, late) = invite::prepare_legs(&settings).unwrap();
    let families: Vec<nat::Family> = legs.iter().map(|l| l.family).collect();
    assert_eq!(families, vec![nat::Family::V4, nat::Family::V6]);
    assert!(legs[1].mapped.is_ipv6() && legs[1].socket.local_addr().unwrap().is_ipv6());
    assert!(late.0.is_empty());

    let silent = UdpSocket::bind("[::1]:0").unwrap();
    let mut settings = settings_for(v4.addr);
    settings.stun.push(silent.local_addr().unwrap());
    let (legs, _bg, late) = invite::prepare_legs(&settings).unwrap();
    let families: Vec<nat::Family> = legs.iter().map(|l| l.family).collect();
    assert_eq!(families, vec![nat::Family::V4]);
    assert_eq!(
        late.0.len(),
        1,
        "the IPv6 setup was still running and left behind"
    );
}
