//! Handshake tests over the simulated network of [`crate::testing::handshake_sim`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::handshake::{Config, Event, FailReason, Handshake};
use super::wire::{self, Role};
use crate::testing::handshake_sim::{addr, run, secrets, NetConfig, Outcome, SID};
use crate::testing::Rng;

fn connected_peer(evs: &[(Duration, Event)]) -> Option<SocketAddr> {
    evs.iter().find_map(|(_, e)| match e {
        Event::Connected { peer } => Some(*peer),
        _ => None,
    })
}

fn assert_both_connected(o: &Outcome, seed: u64) {
    for s in 0..2 {
        assert!(
            connected_peer(&o.events[s]).is_some(),
            "seed {seed}: {:?}",
            o.events
        );
        // The endpoint in use at the end is the peer's current public one (after remaps).
        assert_eq!(o.cores[s].peer(), Some(o.public[1 - s]), "seed {seed}");
        assert_eq!(
            o.events[s].last().map(|e| e.1),
            Some(Event::Closed),
            "seed {seed}"
        );
        assert_eq!(o.cores[s].session_key(), o.cores[1 - s].session_key());
    }
}

#[test]
fn clean_network_connects_in_four_packets() {
    let o = run(1, NetConfig::default(), Config::default());
    assert_both_connected(&o, 1);
    // Inviter: flag 0, then flag 1 + done; acceptor: flag 1, then the done ack. The
    // inviter also tried the stale local candidate once.
    assert_eq!(o.cores[0].stats().sent, 3);
    assert_eq!(o.cores[1].stats().sent, 2);
    // No linger wait when both sides know the other is done: closed within 2 round trips.
    let closed_at =
        |evs: &[(Duration, Event)]| evs.iter().find(|e| e.1 == Event::Closed).unwrap().0;
    assert!(closed_at(&o.events[0]) <= Duration::from_millis(40));
    assert!(closed_at(&o.events[1]) <= Duration::from_millis(40));
}

#[test]
fn thirty_percent_loss_with_duplication_and_reordering() {
    let net = NetConfig {
        loss: 0.3,
        dup: 0.2,
        jitter_ms: 80,
        ..Default::default()
    };
    for seed in 0..300 {
        let o = run(seed, net.clone(), Config::default());
        assert_both_connected(&o, seed);
    }
}

#[test]
fn duplicates_are_counted_as_replays() {
    let net = NetConfig {
        dup: 1.0,
        ..Default::default()
    };
    let o = run(5, net, Config::default());
    assert_both_connected(&o, 5);
    assert!(o.cores[0].stats().replayed + o.cores[1].stats().replayed > 0);
}

#[test]
fn inviter_port_remap_is_followed() {
    // The inviter's NAT gives it a new port before its first packet leaves: the acceptor
    // sees a valid packet from a port that is not in its candidates and answers there.
    let net = NetConfig {
        remap: Some((0, Duration::ZERO)),
        ..Default::default()
    };
    let o = run(2, net, Config::default());
    assert_eq!(o.public[0].port(), 50000);
    assert_both_connected(&o, 2);
    assert_eq!(o.cores[1].stats().new_source, 1);
}

#[test]
fn acceptor_port_remap_mid_handshake_is_followed() {
    // The acceptor's mapping changes after its first answer is in flight, with loss so
    // that the handshake is still running: the inviter must switch to the new port.
    let net = NetConfig {
        remap: Some((1, Duration::from_millis(15))),
        loss: 0.3,
        ..Default::default()
    };
    let mut switched = 0;
    for seed in 0..50 {
        let o = run(seed, net.clone(), Config::default());
        if o.cores[0].stats().new_source > 0 {
            switched += 1;
            assert_both_connected(&o, seed);
        }
    }
    assert!(switched > 0);
}

#[test]
fn attacker_cannot_stop_or_redirect_the_handshake() {
    let net = NetConfig {
        attacker: true,
        loss: 0.1,
        jitter_ms: 30,
        ..Default::default()
    };
    let mut seen = super::Stats::default();
    for seed in 0..100 {
        let o = run(seed, net.clone(), Config::default());
        assert_both_connected(&o, seed);
        for c in &o.cores {
            let s = c.stats();
            seen.malformed += s.malformed;
            seen.bad_mac += s.bad_mac;
            seen.wrong_session += s.wrong_session;
            seen.replayed += s.replayed;
            seen.wrong_direction += s.wrong_direction;
        }
    }
    assert!(seen.malformed > 0 && seen.bad_mac > 0 && seen.wrong_session > 0);
    assert!(seen.replayed > 0 && seen.wrong_direction > 0, "{seen:?}");
}

#[test]
fn silent_acceptor_times_out_at_the_configured_time() {
    let config = Config {
        timeout: Duration::from_secs(7),
        ..Default::default()
    };
    let net = NetConfig {
        silent: [false, true],
        ..Default::default()
    };
    let o = run(3, net, config);
    let fail = o.events[0]
        .iter()
        .find(|e| matches!(e.1, Event::Failed(_)))
        .unwrap();
    assert_eq!(fail.1, Event::Failed(FailReason::Timeout));
    assert_eq!(fail.0, Duration::from_secs(7));
    assert!(connected_peer(&o.events[0]).is_none());
    // Backoff 100 ms ×1.5 capped at 500 ms, two candidates each time: bounded traffic.
    let sent = o.cores[0].stats().sent;
    assert!(sent > 20 && sent < 2 * 7000 / 100, "{sent}");
}

#[test]
fn acceptor_that_never_hears_the_inviter_times_out() {
    let config = Config {
        timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let net = NetConfig {
        silent: [true, false],
        ..Default::default()
    };
    let o = run(4, net, config);
    assert_eq!(
        o.events[1],
        vec![(Duration::from_secs(5), Event::Failed(FailReason::Timeout))]
    );
    assert_eq!(
        o.cores[1].stats().sent,
        0,
        "the acceptor never speaks first"
    );
}

#[test]
fn attacker_alone_never_connects() {
    // Only forgeries and junk reach the acceptor: it must fail, not connect.
    let config = Config {
        timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let net = NetConfig {
        silent: [true, false],
        attacker: true,
        ..Default::default()
    };
    let o = run(6, net, config);
    assert!(connected_peer(&o.events[1]).is_none());
    assert_eq!(
        o.events[1].last().unwrap().1,
        Event::Failed(FailReason::Timeout)
    );
    assert!(o.cores[1].stats().received > 0);
    assert_eq!(o.cores[1].stats().accepted, 0);
}

#[test]
fn lost_final_packet_is_repaired_during_linger() {
    // With heavy loss some runs lose the inviter's flag-1 packet; retransmissions from
    // both ends during the linger still let the acceptor finish.
    // The linger must span a few retransmission intervals at the loss rate expected.
    let net = NetConfig {
        loss: 0.5,
        ..Default::default()
    };
    let config = Config {
        timeout: Duration::from_secs(30),
        linger: Duration::from_secs(5),
        ..Default::default()
    };
    for seed in 0..100 {
        let o = run(seed, net.clone(), config.clone());
        assert_both_connected(&o, seed);
    }
}

#[test]
fn punch_packet_reaching_a_open_inviter_starts_the_exchange() {
    let t0 = Instant::now();
    let inv_addr = addr("198.51.100.10:40000");
    let acc_addr = addr("203.0.113.20:50000");
    let mut inv = Handshake::new(
        Role::Inviter,
        &secrets(),
        SID,
        vec![acc_addr],
        t0,
        Config::default(),
    );
    let mut acc = Handshake::new(
        Role::Acceptor,
        &secrets(),
        SID,
        vec![inv_addr],
        t0,
        Config::default(),
    );
    let punch = acc.punch_packet();
    inv.handle_datagram(acc_addr, &punch, t0);
    assert_eq!(inv.stats().accepted, 1);
    // The inviter answers with flag 1 at once (no flag-0 round first)...
    let mut out = Vec::new();
    while let Some(t) = inv.poll_transmit(t0) {
        out.push(t);
    }
    assert!(!out.is_empty());
    for (dest, bytes) in &out {
        assert_eq!(*dest, acc_addr);
        assert_eq!(bytes[5] & wire::FLAG_SEEN, wire::FLAG_SEEN);
    }
    // ...which the acceptor takes as seen + confirmed: it connects with its answer.
    for (_, bytes) in &out {
        acc.handle_datagram(inv_addr, bytes, t0);
    }
    let (_, answer) = acc.poll_transmit(t0).unwrap();
    assert_eq!(answer[5] & 0x03, wire::FLAG_SEEN | wire::FLAG_DONE);
    assert_eq!(acc.poll_event(), Some(Event::Connected { peer: inv_addr }));
    inv.handle_datagram(acc_addr, &answer, t0);
    assert!(inv.is_connected() || inv.poll_transmit(t0).is_some());
}

#[test]
fn random_datagrams_never_panic_and_are_counted() {
    let mut rng = Rng::new(0x1234_5678);
    let t0 = Instant::now();
    let mut core = Handshake::new(
        Role::Acceptor,
        &secrets(),
        SID,
        vec![],
        t0,
        Config::default(),
    );
    let from = addr("192.0.2.1:1");
    let n = 20_000u64;
    for i in 0..n {
        let len = rng.below(80) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Half of them look like our packets up to the MAC, to reach the deeper checks.
        if i % 2 == 0 && d.len() >= 22 {
            d[..4].copy_from_slice(&wire::MAGIC);
            d[4] = wire::VERSION;
            d[5] = 0x10 | (d[5] & 0x03);
            d[6..22].copy_from_slice(&SID);
        }
        core.handle_datagram(from, &d, t0);
    }
    let s = core.stats();
    assert_eq!(s.received, n);
    assert_eq!(s.accepted, 0);
    assert_eq!(
        s.malformed + s.bad_mac + s.wrong_session + s.wrong_direction,
        n
    );
    assert!(s.bad_mac > 0);
    assert!(
        core.poll_transmit(t0).is_none(),
        "nothing valid, nothing to answer"
    );
}

#[test]
fn a_late_flag_0_packet_does_not_take_back_what_the_peer_said() {
    let t0 = Instant::now();
    let (inv_addr, acc_addr) = (addr("198.51.100.1:1000"), addr("203.0.113.2:2000"));
    let mut inv = Handshake::new(
        Role::Inviter,
        &secrets(),
        SID,
        vec![acc_addr],
        t0,
        Config::default(),
    );
    let mut acc = Handshake::new(
        Role::Acceptor,
        &secrets(),
        SID,
        vec![inv_addr],
        t0,
        Config::default(),
    );
    let (_, calling) = inv.poll_transmit(t0).unwrap();
    assert_eq!(calling[5] & 0x03, 0);
    inv.handle_datagram(acc_addr, &acc.punch_packet(), t0);
    let (_, seen) = inv.poll_transmit(t0).unwrap();
    assert_eq!(seen[5] & 0x03, wire::FLAG_SEEN);
    // Reordered: the flag-1 packet arrives before the older flag-0 one.
    acc.handle_datagram(inv_addr, &seen, t0);
    acc.handle_datagram(inv_addr, &calling, t0);
    assert_eq!(acc.stats().accepted, 2);
    let (_, answer) = acc.poll_transmit(t0).unwrap();
    assert_eq!(answer[5] & 0x03, wire::FLAG_SEEN | wire::FLAG_DONE);
    assert_eq!(acc.poll_event(), Some(Event::Connected { peer: inv_addr }));
}
