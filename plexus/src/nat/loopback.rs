//! Discovery with real sockets against the loopback STUN server of [`crate::testing::stun`].

use std::time::Duration;

use super::*;
use crate::testing::stun::{config, FilteringServer};

#[test]
fn the_real_driver_hands_out_the_mapping_before_the_filtering_verdict() {
    let server = FilteringServer::start();
    let mut early = None;
    let full = discover_staged(&config(server.addr, Duration::from_millis(200)), |r| {
        early = Some(r.clone())
    })
    .unwrap();
    let early = early.expect("a mapping verdict");
    assert!(early.nat && full.nat);
    assert_eq!(early.mapping, Some(Behaviour::EndpointIndependent));
    assert_eq!(early.mapped, full.mapped);
    assert_eq!((early.filtering, early.hairpin), (None, None), "{early:?}");
    assert_eq!(full.filtering, Some(Behaviour::AddressAndPortDependent));
    assert_eq!(full.hairpin, Some(false));
    // `discover` is the same profile.
    let again = discover(&config(server.addr, Duration::from_millis(200))).unwrap();
    assert_eq!(
        (again.mapping, again.filtering, again.hairpin),
        (full.mapping, full.filtering, full.hairpin)
    );
}

#[test]
fn ipv6_no_nat_behind_a_stateful_firewall() {
    let Some(server) = FilteringServer::start_v6() else {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    };
    let r = discover(&config(server.addr, Duration::from_millis(200))).unwrap();
    assert!(!r.nat, "{r:?}");
    assert!(r.local.is_ipv6() && r.mapped == r.local, "{r:?}");
    assert!(r.rfc5780 && r.port_preserved, "{r:?}");
    assert_eq!(r.mapping, Some(Behaviour::EndpointIndependent));
    assert_eq!(r.filtering, Some(Behaviour::AddressAndPortDependent));
    assert!(r.punchable);
    assert!(
        r.reason
            .starts_with("no NAT, stateful firewall: filtering address-and-port-dependent"),
        "{}",
        r.reason
    );
}

#[test]
fn both_families_at_once_each_on_its_own_servers() {
    let Some(v6) = FilteringServer::start_v6() else {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    };
    let v4 = FilteringServer::start();
    let cfg = FamiliesConfig {
        // IPv6 first: each family still finds its own, and output order is IPv4 first.
        servers: vec![v6.addr, v4.addr],
        // Fixes IPv4's local address only; IPv6 binds `[::]` and routes to `[::1]`.
        bind: Some("127.0.0.1:0".parse().unwrap()),
        family: FamilyChoice::Auto,
        probe_timeout: Duration::from_millis(200),
    };
    let out = discover_families(&cfg);
    assert_eq!(out.len(), 2);
    let (f4, r4) = &out[0];
    let (f6, r6) = &out[1];
    assert_eq!((*f4, *f6), (Family::V4, Family::V6));
    let (r4, r6) = (r4.as_ref().unwrap(), r6.as_ref().unwrap());
    assert!(
        r4.nat && r4.local.is_ipv4() && r4.servers == [v4.addr],
        "{r4:?}"
    );
    assert_eq!(r4.filtering, Some(Behaviour::AddressAndPortDependent));
    assert!(
        !r6.nat && r6.local.is_ipv6() && r6.servers == [v6.addr],
        "{r6:?}"
    );
    assert_eq!(r6.local.ip(), std::net::Ipv6Addr::LOCALHOST);

    // One family only; a family without a server is its own error, not the whole run's.
    let only6 = discover_families(&FamiliesConfig {
        family: FamilyChoice::Only(Family::V6),
        ..cfg.clone()
    });
    assert_eq!(only6.len(), 1);
    assert!(only6[0].0 == Family::V6 && only6[0].1.is_ok());
    let no6 = discover_families(&FamiliesConfig {
        servers: vec![v4.addr],
        ..cfg
    });
    assert!(no6[0].1.is_ok());
    let e = no6[1].1.as_ref().unwrap_err();
    assert_eq!(*e, NatError::NoFamilyServer(Family::V6));
    assert!(e.to_string().contains("no IPv6 STUN server"), "{e}");
}
