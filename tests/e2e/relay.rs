//! The TURN relay (issue 12) against the lab's real coturn: a host behind the symmetric
//! NAT allocates, a host in another site sends plain UDP to the relayed address, and
//! both exchange datagrams through the library's forwarder.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use plexus::relay::{self, Forwarder, RelayError, TurnCredentials, TurnSettings};
use plexus::secret::Password;

use crate::lab::{stun_mapped, Lab};

const RELAYING: &str = "a-symmetric";
const PEER: &str = "a-port";

fn long_term(lab: &Lab) -> TurnSettings {
    let t = lab
        .turn
        .as_ref()
        .expect("lab.json has no \"turn\": rebuild the lab");
    TurnSettings {
        server: SocketAddr::new(t.ip.into(), t.port),
        credentials: TurnCredentials::LongTerm {
            user: t.user.clone(),
            password: Password::new(t.password.clone()),
        },
    }
}

fn rest(lab: &Lab) -> TurnSettings {
    let t = lab
        .turn
        .as_ref()
        .expect("lab.json has no \"turn\": rebuild the lab");
    TurnSettings {
        server: SocketAddr::new(t.ip.into(), t.rest_port),
        credentials: TurnCredentials::Rest {
            user: "alice".into(),
            secret: Password::new(t.rest_secret.clone()),
            ttl: relay::DEFAULT_REST_TTL,
        },
    }
}

/// One relayed corridor: the executor's socket and the forwarder on the relaying host,
/// the peer's socket on the other, and the relayed address.
struct Corridor {
    executor: UdpSocket,
    forwarder: Forwarder,
    peer: UdpSocket,
    relayed: SocketAddr,
}

fn corridor(lab: &Lab, settings: &TurnSettings, refresh: Option<Duration>) -> Corridor {
    let peer_site = lab.site(PEER);
    let stun = SocketAddr::new(lab.stun.ips[0].into(), lab.stun.port);
    // The peer learns its public endpoint (port-restricted NAT: the same toward any
    // destination), as the handshake would tell the relaying side.
    let (peer, peer_public) = lab.in_ns(&peer_site.host_netns, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let mapped = stun_mapped(&s, stun);
        (s, mapped)
    });
    assert_eq!(peer_public.ip(), IpAddr::from(peer_site.public_ip));
    let (executor, forwarder, relayed, mapped) = lab.in_ns(&lab.site(RELAYING).host_netns, || {
        let mut alloc = relay::allocate(
            settings,
            "0.0.0.0:0".parse().unwrap(),
            Duration::from_secs(5),
        )
        .expect("allocate");
        alloc
            .permit(peer_public.ip(), Duration::from_secs(5))
            .expect("permit");
        alloc
            .permit(peer_public.ip(), Duration::from_secs(1))
            .expect("a second permit of the same address returns at once");
        if let Some(every) = refresh {
            alloc.set_refresh_interval(every);
        }
        let (relayed, mapped) = (alloc.relayed(), alloc.mapped());
        let executor = UdpSocket::bind("127.0.0.1:0").unwrap();
        let fwd =
            relay::forward(alloc, peer_public, executor.local_addr().unwrap()).expect("forward");
        (executor, fwd, relayed, mapped)
    });
    let turn = lab.turn.as_ref().unwrap();
    assert_eq!(
        relayed.ip(),
        IpAddr::from(turn.ip),
        "relayed address on the server"
    );
    assert_eq!(
        mapped.ip(),
        IpAddr::from(lab.site(RELAYING).public_ip),
        "the server saw the symmetric NAT's public address"
    );
    for s in [&executor, &peer] {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    Corridor {
        executor,
        forwarder,
        peer,
        relayed,
    }
}

/// Sends `msg` from `from` to `to` until `rx` receives it (bounded: 10 tries); returns
/// the source the receiver saw.
fn deliver(from: &UdpSocket, to: SocketAddr, rx: &UdpSocket, msg: &[u8]) -> SocketAddr {
    try_deliver(from, to, rx, msg)
        .unwrap_or_else(|| panic!("{:?} never arrived", String::from_utf8_lossy(msg)))
}

fn try_deliver(from: &UdpSocket, to: SocketAddr, rx: &UdpSocket, msg: &[u8]) -> Option<SocketAddr> {
    let mut buf = [0u8; 2048];
    for _ in 0..10 {
        from.send_to(msg, to).unwrap();
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            if let Ok((n, src)) = rx.recv_from(&mut buf) {
                if &buf[..n] == msg {
                    return Some(src);
                }
            }
        }
    }
    None
}

fn exchange_both_ways(c: &Corridor) {
    let fwd = c.forwarder.local_addr();
    // The peer speaks first: that opens its port-restricted NAT toward the relay.
    let src = deliver(&c.peer, c.relayed, &c.executor, b"hello from the peer");
    assert_eq!(
        src, fwd,
        "the executor sees the peer at the forwarder's address"
    );
    let src = deliver(&c.executor, fwd, &c.peer, b"hello from the executor");
    assert_eq!(
        src, c.relayed,
        "the peer sees the executor at the relayed address"
    );
    for i in 0..20 {
        let a = format!("executor {i}");
        deliver(&c.executor, fwd, &c.peer, a.as_bytes());
        let b = format!("peer {i}");
        deliver(&c.peer, c.relayed, &c.executor, b.as_bytes());
    }
}

#[test]
fn relay_long_term_credentials_forward_both_ways() {
    let lab = lab_or_skip!();
    let _claim = lab.claim(&[RELAYING, PEER]);
    let c = corridor(lab, &long_term(lab), None);
    exchange_both_ways(&c);
    let stats = c.forwarder.stats();
    assert!(stats.to_peer >= 21 && stats.from_peer >= 21, "{stats:?}");
    assert!(
        stats.turn.channel_binds >= 1,
        "a channel was bound: {stats:?}"
    );
    let end = c.forwarder.stop().expect("forwarder ends cleanly");
    assert!(end.to_peer >= stats.to_peer, "{end:?}");
    assert!(end.deleted, "the server confirmed the deletion: {end:?}");
}

#[test]
fn relay_rest_credentials_forward_both_ways() {
    let lab = lab_or_skip!();
    let _claim = lab.claim(&[RELAYING, PEER]);
    let c = corridor(lab, &rest(lab), None);
    exchange_both_ways(&c);
    let end = c.forwarder.stop().expect("forwarder ends cleanly");
    assert!(end.deleted, "{end:?}");
}

/// `Relayed` runs an unchanged protocol core through the allocation: a STUN binding
/// transaction to the lab's STUN server, relayed, learns the *relayed* address as its
/// mapped address (the STUN server saw the request come from the relay).
#[test]
fn relay_runs_a_core_through_the_allocation() {
    use plexus::stun::{new_transaction_id, Expect, Timing, Transaction};
    use std::ops::ControlFlow;
    let lab = lab_or_skip!();
    let stun = SocketAddr::new(lab.stun.ips[0].into(), lab.stun.port);
    let settings = long_term(lab);
    let (relayed, outcome) = lab.in_ns(&lab.site(RELAYING).host_netns, || {
        let mut alloc = relay::allocate(
            &settings,
            "0.0.0.0:0".parse().unwrap(),
            Duration::from_secs(5),
        )
        .expect("allocate");
        let timing = Timing::for_deadline(Duration::from_secs(3));
        let mut tx = Transaction::new(
            new_transaction_id(),
            stun,
            vec![],
            Expect::SameEndpoint,
            timing,
            Instant::now(),
        );
        let mut outcome = None;
        alloc
            .drive(
                &mut tx,
                Instant::now() + Duration::from_secs(5),
                |_, r, _| {
                    outcome = Some(r);
                    ControlFlow::Break(())
                },
            )
            .expect("drive");
        let relayed = alloc.relayed();
        alloc
            .close(Duration::from_secs(2))
            .expect("delete the allocation");
        (relayed, outcome)
    });
    let response = outcome
        .expect("the transaction ended")
        .expect("a STUN answer through the relay");
    assert_eq!(response.mapped, relayed);
    assert_eq!(
        response.from, stun,
        "the answer is unwrapped as coming from the server"
    );
}

#[test]
fn relay_wrong_credentials_are_a_clear_auth_error() {
    let lab = lab_or_skip!();
    let mut lt = long_term(lab);
    lt.credentials = TurnCredentials::LongTerm {
        user: lab.turn.as_ref().unwrap().user.clone(),
        password: Password::new("not-the-password"),
    };
    let mut rs = rest(lab);
    rs.credentials = TurnCredentials::Rest {
        user: "alice".into(),
        secret: Password::new("not-the-secret"),
        ttl: Duration::from_secs(600),
    };
    for settings in [lt, rs] {
        let err = lab.in_ns(&lab.site(RELAYING).host_netns, || {
            relay::allocate(
                &settings,
                "0.0.0.0:0".parse().unwrap(),
                Duration::from_secs(5),
            )
            .expect_err("allocation with wrong credentials")
        });
        assert!(matches!(err, RelayError::Auth { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("refused the credentials") && text.contains("--turn-user"),
            "{text}"
        );
    }
}

#[test]
fn relay_corridor_survives_a_minute_with_refreshes() {
    let lab = lab_or_skip!();
    let _claim = lab.claim(&[RELAYING, PEER]);
    let lifetime = lab.turn.as_ref().unwrap().max_lifetime_s;
    assert!(
        lifetime >= 30,
        "the lab's permissions outlive a 15 s refresh"
    );
    // The lab's permissions and channels last 40 s, less than RFC 8656's 300 and 600 s,
    // which a client cannot learn: refresh every 15 s.
    let c = corridor(lab, &long_term(lab), Some(Duration::from_secs(15)));
    exchange_both_ways(&c);
    // Traffic both ways every 0.5 s for 65 s: longer than the server's allocation,
    // permission and channel lifetimes (40 s in the lab) and its nonce lifetime (30 s).
    let fwd = c.forwarder.local_addr();
    let start = Instant::now();
    let mut i = 0u32;
    while start.elapsed() < Duration::from_secs(65) {
        let e = try_deliver(&c.executor, fwd, &c.peer, format!("long e{i}").as_bytes());
        let p = try_deliver(
            &c.peer,
            c.relayed,
            &c.executor,
            format!("long p{i}").as_bytes(),
        );
        assert!(
            e.is_some() && p.is_some(),
            "datagram {i} lost after {:?} (to peer {}, from peer {}): {:?}",
            start.elapsed(),
            e.is_some(),
            p.is_some(),
            c.forwarder.stats()
        );
        i += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let stats = c.forwarder.stats();
    assert!(!c.forwarder.is_finished(), "still forwarding: {stats:?}");
    // Refreshes at 15, 30, 45 and 60 s (allow one late), each also renewing the
    // permission and the channel: without them the permission would lapse at 40 s and
    // the traffic above would have stopped. The 30 s nonce went stale at least once.
    assert!(stats.turn.refreshes >= 3, "{stats:?}");
    assert!(stats.turn.permissions >= 4, "permit + refreshes: {stats:?}");
    assert!(stats.turn.channel_binds >= 4, "bind + refreshes: {stats:?}");
    assert!(stats.turn.stale_nonces >= 1, "{stats:?}");
    let end = c.forwarder.stop().expect("forwarder ends cleanly");
    assert!(end.deleted, "{end:?}");
}

/// Runs `plexus invite` with the given relay flags after a complete set of others (the
/// certificates do not exist: the relay settings are checked before they are read).
fn invite_with(extra: &[&str]) -> (Option<i32>, String) {
    let home = plexus::testing::TempDir::new("relay-flags");
    let mut args: Vec<String> = [
        "invite",
        "--host-id=alice@lab.example/home",
        "--peer-id=bob@lab.example/office",
        "--email-smtps=127.0.0.1:1",
        "--email-imaps=127.0.0.1:1",
        "--email-passwd-env=NOPE",
        "--email-from=alice@lab.example",
        "--email-to=bob@lab.example",
        "--stun=127.0.0.1:1",
        "--exec-command=/bin/true",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = std::process::Command::new(crate::lab::plexus_bin())
        .args(&args)
        .env_clear()
        .env("HOME", home.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The relay flags' usage errors: exit 2 with a message naming the flag to fix.
#[test]
fn relay_flags_usage_errors_exit_2() {
    for (extra, want) in [
        (&["--relay", "sometimes"][..], "never, fallback or always"),
        (&["--turn-user", "u"][..], "--turn HOST[:PORT]"),
        (
            &["--turn", "203.0.113.5", "--turn-password-env", "X"][..],
            "--turn-user",
        ),
        (
            &["--turn", "203.0.113.5", "--turn-user", "u"][..],
            "--turn-secret-file",
        ),
        (
            &[
                "--turn=203.0.113.5",
                "--turn-user=u",
                "--turn-password-env=X",
                "--turn-secret-file=/nonexistent",
            ][..],
            "not both",
        ),
        (
            &["--turn", "no such host!", "--turn-user", "u"][..],
            "--turn",
        ),
    ] {
        let (code, err) = invite_with(extra);
        assert_eq!(code, Some(2), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?} should say {want:?}: {err}");
    }
}

/// The punch handshake runs through the relay like any other path: the relaying side
/// (behind the symmetric NAT) drives it through `Allocation::drive`, the peer sends plain
/// UDP to the relayed address; both connect with the same session key, each sees the
/// other where it should (the peer's public endpoint; the relayed address), and the
/// forwarder then carries the executor's datagrams on the same allocation.
#[test]
fn relay_carries_the_punch_handshake_then_the_forwarder() {
    use plexus::punch::{Config, Event, Handshake, Role, Secrets};
    use std::ops::ControlFlow;
    let lab = lab_or_skip!();
    let _claim = lab.claim(&[RELAYING, PEER]);
    let settings = long_term(lab);
    let stun = SocketAddr::new(lab.stun.ips[0].into(), lab.stun.port);
    let (peer_sock, peer_public) = lab.in_ns(&lab.site(PEER).host_netns, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let mapped = stun_mapped(&s, stun);
        (s, mapped)
    });
    let mut alloc = lab.in_ns(&lab.site(RELAYING).host_netns, || {
        let mut a = relay::allocate(
            &settings,
            "0.0.0.0:0".parse().unwrap(),
            Duration::from_secs(5),
        )
        .expect("allocate");
        a.permit(peer_public.ip(), Duration::from_secs(5))
            .expect("permit");
        a
    });
    let relayed = alloc.relayed();
    let secrets = Secrets {
        inviter: [7; 32],
        acceptor: [9; 32],
    };
    let session = [3u8; 16];
    let config = Config::default();
    let (inviter, acceptor) = std::thread::scope(|s| {
        let (secrets2, config2) = (secrets.clone(), config.clone());
        let peer_sock = &peer_sock;
        let inv = s.spawn(move || {
            let mut hs = Handshake::new(
                Role::Inviter,
                &secrets2,
                session,
                vec![relayed],
                Instant::now(),
                config2,
            );
            let mut connected = None;
            plexus::net::drive(&[peer_sock], &mut hs, |_, ev, _| {
                if let Event::Connected { peer } = ev {
                    connected = Some(peer);
                }
                ControlFlow::Continue(())
            })
            .expect("drive the inviter");
            (connected, hs.session_key())
        });
        let mut hs = Handshake::new(
            Role::Acceptor,
            &secrets,
            session,
            vec![peer_public],
            Instant::now(),
            config.clone(),
        );
        let mut connected = None;
        alloc
            .drive(
                &mut hs,
                Instant::now() + Duration::from_secs(15),
                |_, ev, _| {
                    if let Event::Connected { peer } = ev {
                        connected = Some(peer);
                    }
                    ControlFlow::Continue(())
                },
            )
            .expect("drive the acceptor through the relay");
        (inv.join().unwrap(), (connected, hs.session_key()))
    });
    assert_eq!(
        inviter.0,
        Some(relayed),
        "the inviter connected to the relayed address"
    );
    assert_eq!(
        acceptor.0,
        Some(peer_public),
        "the acceptor sees the peer's endpoint"
    );
    assert_eq!(inviter.1 .0, acceptor.1 .0, "same session key");

    // The corridor: the forwarder on the same allocation.
    let (executor, fwd) = lab.in_ns(&lab.site(RELAYING).host_netns, || {
        let executor = UdpSocket::bind("127.0.0.1:0").unwrap();
        let fwd =
            relay::forward(alloc, peer_public, executor.local_addr().unwrap()).expect("forward");
        (executor, fwd)
    });
    for s in [&executor, &peer_sock] {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    let src = deliver(
        &executor,
        fwd.local_addr(),
        &peer_sock,
        b"after the handshake",
    );
    assert_eq!(src, relayed);
    let src = deliver(&peer_sock, relayed, &executor, b"and back");
    assert_eq!(src, fwd.local_addr());
    assert!(fwd.stop().expect("forwarder ends").deleted);
}
