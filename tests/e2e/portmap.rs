//! Router port mapping against the real daemon: miniupnpd on the `upnp-symmetric`
//! site's router (a symmetric NAT). For each protocol (PCP, NAT-PMP, UPnP-IGD) the
//! host maps a UDP port; a host in `a-none` reaches it through the external endpoint,
//! the answers come back from that endpoint (port kept, even toward a new peer), and
//! after `remove()` the router's rule is gone and packets stop arriving.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use plexus::portmap::{self, Protocol};

use crate::lab::{assert_ok, plexus_bin, Lab, Site};

const SITE: &str = "upnp-symmetric";
const PEER: &str = "a-none";
const LEASE: Duration = Duration::from_secs(120);
const TIMEOUT: Duration = Duration::from_millis(2000);

/// miniupnpd's DNAT rules, as `nft` prints them in the router.
fn router_rules(lab: &Lab, s: &Site) -> String {
    let out = lab.exec(
        &s.router_netns,
        &["nft", "list", "table", "inet", "miniupnpd"],
    );
    assert_ok("nft list table inet miniupnpd", &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `rules` holds a DNAT to the host's `port` (whole tokens: 4000 is not 40001).
fn has_dnat(rules: &str, s: &Site, port: u16) -> bool {
    let to = format!("{}:{port}", s.host_ip);
    rules.lines().any(|l| {
        let t: Vec<&str> = l.split_whitespace().collect();
        t.windows(4)
            .any(|w| w[..3] == ["dnat", "ip", "to"] && w[3] == to)
    })
}

/// Waits (bounded) until the lab's rule follower has put the mapping in `port_keep`:
/// it mirrors miniupnpd's rule a few milliseconds after the router answered.
fn wait_port_kept(lab: &Lab, s: &Site, port: u16) {
    let want = format!("{} . {port}", s.host_ip);
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        let out = lab.exec(
            &s.router_netns,
            &["nft", "list", "set", "ip", "port_keep", "mapped"],
        );
        let text = String::from_utf8_lossy(&out.stdout).replace([',', '{', '}'], " ");
        let words: Vec<&str> = text.split_whitespace().collect();
        let (ip, port) = (s.host_ip.to_string(), port.to_string());
        if words
            .windows(3)
            .any(|w| w == [ip.as_str(), ".", port.as_str()])
        {
            return;
        }
        assert!(
            Instant::now() < end,
            "the lab's port_keep set never got {want} (see the state dir's portmap-sync log)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn recv(sock: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    sock.set_read_timeout(Some(wait)).expect("set_read_timeout");
    let mut buf = [0u8; 1500];
    let (n, from) = sock.recv_from(&mut buf).ok()?;
    Some((buf[..n].to_vec(), from))
}

fn map_and_exchange(protocol: Protocol) {
    let lab = lab_or_skip!();
    let _c = lab.claim(&[SITE, PEER]);
    let s = lab.site(SITE);
    let peer = lab.site(PEER);
    assert_eq!(
        s.portmap.as_deref(),
        Some("miniupnpd"),
        "lab.json marks {SITE}"
    );

    let (sock, m, took) = lab.in_ns(&s.host_netns, || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let local = sock.local_addr().expect("local_addr");
        let t0 = Instant::now();
        let m = portmap::map_udp_with(&[protocol], local, LEASE, TIMEOUT)
            .unwrap_or_else(|e| panic!("{protocol} mapping failed: {e}"));
        (sock, m, t0.elapsed())
    });
    let port = sock.local_addr().unwrap().port();
    eprintln!(
        "{protocol}: {} -> {}, lease {:?}, mapped in {:.1} ms",
        m.external,
        m.internal,
        m.lease,
        took.as_secs_f64() * 1000.0
    );
    assert_eq!(m.protocol, protocol);
    assert_eq!(
        m.internal,
        SocketAddr::from((s.host_ip, port)),
        "the LAN address was mapped"
    );
    assert_eq!(
        m.external.ip(),
        IpAddr::V4(s.public_ip),
        "external address is the router's"
    );
    assert_eq!(
        m.external.port(),
        port,
        "miniupnpd grants the port asked for when free"
    );
    assert!(
        !m.lease.is_zero() && m.lease <= LEASE,
        "lease {:?}",
        m.lease
    );
    assert!(
        has_dnat(&router_rules(lab, s), s, port),
        "no DNAT rule for {port} in the router:\n{}",
        router_rules(lab, s)
    );
    wait_port_kept(lab, s, port);

    let (a, b) = lab.in_ns(&peer.host_netns, || {
        (
            UdpSocket::bind("0.0.0.0:0").unwrap(),
            UdpSocket::bind("0.0.0.0:0").unwrap(),
        )
    });
    let a_addr = SocketAddr::from((peer.host_ip, a.local_addr().unwrap().port()));
    let b_addr = SocketAddr::from((peer.host_ip, b.local_addr().unwrap().port()));

    // Inbound through the mapping, and the answer from the external endpoint.
    a.send_to(b"in", m.external).unwrap();
    let (d, from) =
        recv(&sock, Duration::from_secs(3)).expect("nothing arrived through the mapping");
    assert_eq!((d.as_slice(), from), (&b"in"[..], a_addr));
    sock.send_to(b"back", from).unwrap();
    let (d, from) = recv(&a, Duration::from_secs(3)).expect("the answer did not arrive");
    assert_eq!(
        (d.as_slice(), from),
        (&b"back"[..], m.external),
        "answer from the external endpoint"
    );

    // Outbound first toward a peer never seen: the symmetric NAT would pick a random
    // port; the mapping's port must be kept, or this side is not "unNATed" for it.
    sock.send_to(b"first", b_addr).unwrap();
    let (d, from) = recv(&b, Duration::from_secs(3)).expect("outbound did not arrive");
    assert_eq!(
        (d.as_slice(), from),
        (&b"first"[..], m.external),
        "outbound keeps the mapped port"
    );

    // Renewal keeps the same endpoint.
    let mut m = m;
    let before = m.external;
    lab.in_ns(&s.host_netns, || m.renew())
        .unwrap_or_else(|e| panic!("{protocol} renew: {e}"));
    assert_eq!(m.external, before, "renewal kept the endpoint");

    // Removal: the rule goes, and a new flow no longer gets in.
    let ext = m.external;
    lab.in_ns(&s.host_netns, || m.remove())
        .unwrap_or_else(|e| panic!("{protocol} remove: {e}"));
    assert!(
        !has_dnat(&router_rules(lab, s), s, port),
        "the DNAT rule for {port} is still there after remove():\n{}",
        router_rules(lab, s)
    );
    // A new source socket: the conntrack entry of the earlier exchange must not count.
    let c = lab.in_ns(&peer.host_netns, || UdpSocket::bind("0.0.0.0:0").unwrap());
    for _ in 0..3 {
        c.send_to(b"after", ext).unwrap();
    }
    assert_eq!(
        recv(&sock, Duration::from_millis(700)),
        None,
        "a packet arrived after remove()"
    );
}

#[test]
fn pcp_maps_a_udp_port() {
    map_and_exchange(Protocol::Pcp);
}

#[test]
fn natpmp_maps_a_udp_port() {
    map_and_exchange(Protocol::NatPmp);
}

#[test]
fn upnp_igd_maps_a_udp_port() {
    map_and_exchange(Protocol::Upnp);
}

/// `map_udp` takes the first protocol that works (PCP here); `hold` keeps the mapping
/// and removes it when dropped.
#[test]
fn hold_removes_on_drop() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&[SITE]);
    let s = lab.site(SITE);
    let held = lab.in_ns(&s.host_netns, || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let m = portmap::map_udp(sock.local_addr().unwrap(), LEASE, TIMEOUT).expect("map_udp");
        (sock, portmap::hold(m))
    });
    let m = held.1.mapping();
    assert_eq!(m.protocol, Protocol::Pcp, "PCP is tried first");
    let port = m.internal.port();
    assert!(has_dnat(&router_rules(lab, s), s, port));
    drop(held);
    assert!(
        !has_dnat(&router_rules(lab, s), s, port),
        "dropping the guard left the mapping:\n{}",
        router_rules(lab, s)
    );
}

/// `hold` renews at half the lease: after several leases the held mapping is still on
/// the router while one made at the same time without `hold` has expired (miniupnpd
/// removes expired mappings within a second).
#[test]
fn hold_renews_past_the_lease() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&[SITE]);
    let s = lab.site(SITE);
    let lease = Duration::from_secs(3);
    let (socks, held, bare) = lab.in_ns(&s.host_netns, || {
        let a = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let b = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let held =
            portmap::hold(portmap::map_udp(a.local_addr().unwrap(), lease, TIMEOUT).expect("map"));
        let bare = portmap::map_udp(b.local_addr().unwrap(), lease, TIMEOUT).expect("map");
        ((a, b), held, bare)
    });
    let first = held.mapping();
    assert_eq!(
        first.lease, lease,
        "miniupnpd grants short leases in the lab"
    );
    std::thread::sleep(lease * 3);
    let rules = router_rules(lab, s);
    assert!(
        has_dnat(&rules, s, first.internal.port()),
        "the held mapping expired:\n{rules}"
    );
    assert!(
        !has_dnat(&rules, s, bare.internal.port()),
        "the mapping without hold did not expire, so this test shows nothing:\n{rules}"
    );
    assert_eq!(
        held.mapping().external,
        first.external,
        "renewals kept the endpoint"
    );
    drop(held);
    drop(socks);
}

/// A router without a mapping daemon: every protocol fails, and says so.
#[test]
fn no_daemon_no_mapping() {
    let lab = lab_or_skip!();
    let s = lab.site("a-port");
    let err = lab.in_ns(&s.host_netns, || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        portmap::map_udp(
            sock.local_addr().unwrap(),
            LEASE,
            Duration::from_millis(800),
        )
        .unwrap_err()
    });
    let text = err.to_string();
    eprintln!("a-port: {text}");
    for p in ["PCP", "NAT-PMP", "UPnP-IGD"] {
        assert!(
            text.contains(&format!("{p}: no answer")),
            "{p} missing in: {text}"
        );
    }
    assert!(!err.behind_another_nat());
}

/// `plexus nat --json` in `site`, with extra arguments: the IPv4 object.
fn plexus_nat_json(lab: &Lab, site: &str, extra: &[&str]) -> serde_json::Value {
    let s = lab.site(site);
    let stun = lab.stun.ips[0].to_string();
    let t0 = Instant::now();
    let bin = plexus_bin();
    let mut args = vec![bin.as_str(), "nat", "--json", "--stun", &stun];
    args.extend_from_slice(extra);
    let out = lab.exec_timeout(&s.host_netns, 30, &args);
    assert_ok("plexus nat --json", &out);
    eprintln!("plexus nat in {site}: {} ms", t0.elapsed().as_millis());
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("plexus nat --json prints JSON");
    // The router's protocols map IPv4: they are in the IPv4 object.
    assert_eq!(v[0]["family"], "ipv4", "{v}");
    assert_eq!(v[1]["port_mapping"], serde_json::Value::Null, "{v}");
    v[0].clone()
}

#[test]
fn plexus_nat_lists_router_protocols() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&[SITE]);
    // A generous deadline: UPnP-IGD is several HTTP exchanges, and this machine is
    // shared; the default 1 s bound is shown by the test without a daemon.
    let v = plexus_nat_json(lab, SITE, &["--port-mapping-timeout", "5000"]);
    // Without a mapping the site is what it claims: a symmetric NAT.
    assert_eq!(v["mapping"], "address-and-port-dependent", "{v}");
    let pm = v["port_mapping"].as_array().expect("port_mapping array");
    let public = lab.site(SITE).public_ip.to_string();
    let names: Vec<_> = pm
        .iter()
        .map(|e| e["protocol"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["PCP", "NAT-PMP", "UPnP-IGD"], "{v}");
    for e in pm {
        assert_eq!(e["available"], true, "{e}");
        assert_eq!(e["external"], public.as_str(), "{e}");
    }
    let s = lab.site(SITE);
    let out = lab.exec_timeout(
        &s.host_netns,
        30,
        &[
            &plexus_bin(),
            "nat",
            "--port-mapping-timeout",
            "5000",
            "--stun",
            &lab.stun.ips[0].to_string(),
        ],
    );
    assert_ok("plexus nat", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "router port mapping: PCP, NAT-PMP, UPnP-IGD available (external {public})"
        )),
        "{text}"
    );
}

#[test]
fn plexus_nat_without_router_daemon() {
    let lab = lab_or_skip!();
    let v = plexus_nat_json(lab, "a-port", &[]);
    let pm = v["port_mapping"].as_array().expect("port_mapping array");
    assert_eq!(pm.len(), 3, "{v}");
    for e in pm {
        assert_eq!(e["available"], false, "{e}");
        assert!(
            e["error"].as_str().is_some_and(|s| s.contains("no answer")),
            "{e}"
        );
    }
    let s = lab.site("a-port");
    let out = lab.exec_timeout(
        &s.host_netns,
        30,
        &[&plexus_bin(), "nat", "--stun", &lab.stun.ips[0].to_string()],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("router port mapping: none answered"));
}
