//! Each lab NAT type behaves as intended: checked with coturn's own client
//! (`turnutils_natdiscovery`) and with `plexus nat --json`.

use crate::lab::{assert_ok, plexus_bin, Lab, NatType};

/// The verdicts turnutils_natdiscovery prints ("NAT with ... Mapping!").
fn verdict(out: &str, what: &str) -> Option<&'static str> {
    // Longest first: "Address Dependent" is a suffix of "Address and Port Dependent".
    for (text, v) in [
        ("Address and Port Dependent", "address-and-port-dependent"),
        ("Endpoint Independent", "endpoint-independent"),
        ("Address Dependent", "address-dependent"),
    ] {
        if out.contains(&format!("NAT with {text} {what}!")) {
            return Some(v);
        }
    }
    None
}

/// Every "UDP reflexive addr: IP:PORT" the tool printed, as IPs.
fn reflexive_ips(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split("UDP reflexive addr: ").nth(1))
        .filter_map(|a| a.trim().rsplit_once(':').map(|(ip, _)| ip.to_string()))
        .collect()
}

fn natdiscovery(lab: &Lab, site: &str, mapping: &str, filtering: &str) {
    let _c = lab.claim(&[site]);
    let s = lab.site(site);
    let stun = lab.stun.ips[0].to_string();
    let out = lab.exec_timeout(
        &s.host_netns,
        90,
        &["turnutils_natdiscovery", "-m", "-f", "-H", &stun],
    );
    assert_ok("turnutils_natdiscovery", &out);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "natdiscovery {site} ({:?}): mapping {:?}, filtering {:?}",
        s.nat,
        verdict(&text, "Mapping"),
        verdict(&text, "Filtering")
    );
    assert_eq!(
        verdict(&text, "Mapping"),
        Some(mapping),
        "mapping of {site}:\n{text}"
    );
    assert_eq!(
        verdict(&text, "Filtering"),
        Some(filtering),
        "filtering of {site}:\n{text}"
    );
    // The server saw the site's public address: the host itself without NAT,
    // the NAT's public address otherwise.
    let ips = reflexive_ips(&text);
    assert!(!ips.is_empty(), "no reflexive address printed:\n{text}");
    for ip in ips {
        assert_eq!(
            ip,
            s.public_ip.to_string(),
            "reflexive address of {site}:\n{text}"
        );
    }
}

#[test]
fn natdiscovery_none() {
    let lab = lab_or_skip!();
    natdiscovery(
        lab,
        "a-none",
        "endpoint-independent",
        "endpoint-independent",
    );
}

#[test]
fn natdiscovery_full_cone() {
    let lab = lab_or_skip!();
    natdiscovery(
        lab,
        "a-full",
        "endpoint-independent",
        "endpoint-independent",
    );
}

#[test]
fn natdiscovery_address_restricted() {
    let lab = lab_or_skip!();
    natdiscovery(
        lab,
        "a-address",
        "endpoint-independent",
        "address-dependent",
    );
}

#[test]
fn natdiscovery_port_restricted() {
    let lab = lab_or_skip!();
    natdiscovery(
        lab,
        "a-port",
        "endpoint-independent",
        "address-and-port-dependent",
    );
}

#[test]
fn natdiscovery_symmetric() {
    let lab = lab_or_skip!();
    natdiscovery(
        lab,
        "a-symmetric",
        "address-and-port-dependent",
        "address-and-port-dependent",
    );
}

#[test]
fn natdiscovery_hairpin_site_hairpins() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["hairpin", "a-port"]);
    let s = lab.site("hairpin");
    let stun = lab.stun.ips[0].to_string();
    for host in &s.hosts {
        let out = lab.exec_timeout(&host.netns, 60, &["turnutils_natdiscovery", "-H", &stun]);
        assert_ok("turnutils_natdiscovery -H", &out);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("successful hairpinning"),
            "hairpin site host {} does not hairpin:\n{text}",
            host.netns
        );
    }
    // And the check can fail: plain masquerade does not hairpin.
    let port = lab.site("a-port");
    let out = lab.exec_timeout(
        &port.host_netns,
        60,
        &["turnutils_natdiscovery", "-H", &stun],
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("successful hairpinning"),
        "a-port (plain masquerade) hairpins, the lab is wrong:\n{text}"
    );
}

/// `plexus nat --json ARGS` in `site`'s host: the array, checked to hold one object per
/// family (ipv4, then ipv6), each either measured or unavailable with a reason.
fn plexus_nat_json(lab: &Lab, site: &str, args: &[&str]) -> [serde_json::Value; 2] {
    let s = lab.site(site);
    let bin = plexus_bin();
    let mut argv = vec![bin.as_str(), "nat", "--json"];
    argv.extend_from_slice(args);
    let out = lab.exec_timeout(&s.host_netns, 60, &argv);
    assert_ok("plexus nat --json", &out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "plexus nat --json printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    eprintln!("plexus nat {site} ({:?}): {v}", s.nat);
    let a = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
    assert_eq!(a.len(), 2, "one object per family: {v}");
    for (o, fam) in a.iter().zip(["ipv4", "ipv6"]) {
        assert_eq!(o["family"], fam, "{v}");
        match o["available"].as_bool() {
            Some(true) => {
                for key in [
                    "nat",
                    "mapping",
                    "filtering",
                    "hairpin",
                    "port_preserved",
                    "address_stable",
                    "local",
                    "mapped",
                    "punchable",
                    "reason",
                    "elapsed_ms",
                    "rfc5780",
                    "servers",
                    "methods",
                    "port_mapping",
                ] {
                    assert!(o.get(key).is_some(), "{fam} lacks {key:?}: {v}");
                }
            }
            Some(false) => assert!(
                o["error"].as_str().is_some_and(|e| !e.is_empty()),
                "an unavailable family says why: {v}"
            ),
            None => panic!("{fam}: no \"available\": {v}"),
        }
    }
    [a[0].clone(), a[1].clone()]
}

/// The IP of an `"ip:port"` / `"[ipv6]:port"` field.
fn ip_of(v: &serde_json::Value) -> Option<std::net::IpAddr> {
    v.as_str()?
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip())
}

/// `plexus nat --json` against the IPv4 STUN server only: the IPv4 object, whose
/// mapped address must be the site's public one.
fn plexus_nat(lab: &Lab, site: &str) -> serde_json::Value {
    let _c = lab.claim(&[site]);
    let stun = lab.stun.ips[0].to_string();
    let [v, v6] = plexus_nat_json(lab, site, &["--stun", &stun]);
    assert_eq!(v["available"], true, "{site}: {v}");
    assert_eq!(v6["available"], false, "no IPv6 server given: {v6}");
    assert!(
        v6["error"]
            .as_str()
            .is_some_and(|e| e.contains("no IPv6 STUN server")),
        "{v6}"
    );
    assert_eq!(
        ip_of(&v["mapped"]),
        Some(lab.site(site).public_ip.into()),
        "mapped address of {site}: {v}"
    );
    v
}

fn expect(
    v: &serde_json::Value,
    site: &str,
    nat: bool,
    mapping: &str,
    filtering: &str,
    punchable: bool,
) {
    assert_eq!(v["nat"], nat, "nat of {site}: {v}");
    assert_eq!(v["mapping"], mapping, "mapping of {site}: {v}");
    assert_eq!(v["filtering"], filtering, "filtering of {site}: {v}");
    assert_eq!(v["punchable"], punchable, "punchable of {site}: {v}");
}

#[test]
fn plexus_nat_none() {
    let lab = lab_or_skip!();
    let v = plexus_nat(lab, "b-none");
    assert_eq!(v["nat"], false, "b-none has a public address: {v}");
    assert_eq!(v["punchable"], true, "b-none: {v}");
    assert_eq!(v["port_preserved"], true, "b-none: {v}");
}

#[test]
fn plexus_nat_full_cone() {
    let lab = lab_or_skip!();
    let v = plexus_nat(lab, "b-full");
    expect(
        &v,
        "b-full",
        true,
        "endpoint-independent",
        "endpoint-independent",
        true,
    );
    assert_eq!(v["port_preserved"], true, "1:1 NAT keeps ports: {v}");
}

#[test]
fn plexus_nat_address_restricted() {
    let lab = lab_or_skip!();
    let v = plexus_nat(lab, "b-address");
    expect(
        &v,
        "b-address",
        true,
        "endpoint-independent",
        "address-dependent",
        true,
    );
    assert_eq!(v["port_preserved"], true, "1:1 NAT keeps ports: {v}");
}

#[test]
fn plexus_nat_port_restricted() {
    let lab = lab_or_skip!();
    let v = plexus_nat(lab, "b-port");
    expect(
        &v,
        "b-port",
        true,
        "endpoint-independent",
        "address-and-port-dependent",
        true,
    );
    assert_eq!(
        v["hairpin"], false,
        "plain masquerade does not hairpin: {v}"
    );
}

#[test]
fn plexus_nat_symmetric() {
    let lab = lab_or_skip!();
    let v = plexus_nat(lab, "a-symmetric");
    expect(
        &v,
        "a-symmetric",
        true,
        "address-and-port-dependent",
        "address-and-port-dependent",
        false,
    );
    assert!(
        v["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "a symmetric NAT must say why it cannot punch: {v}"
    );
}

#[test]
fn plexus_nat_hairpin() {
    let lab = lab_or_skip!();
    let v = plexus_nat(lab, "hairpin");
    assert_eq!(v["hairpin"], true, "the hairpin site hairpins: {v}");
    assert_eq!(v["mapping"], "endpoint-independent", "hairpin site: {v}");
}

/// Sanity of the lab description itself, so the tests above test the right sites.
#[test]
fn sites_have_the_intended_types() {
    let lab = lab_or_skip!();
    for (name, nat) in [
        ("a-none", NatType::None),
        ("b-none", NatType::None),
        ("a-full", NatType::Full),
        ("b-full", NatType::Full),
        ("a-address", NatType::Address),
        ("b-address", NatType::Address),
        ("a-port", NatType::Port),
        ("b-port", NatType::Port),
        ("c-port", NatType::Port),
        ("d-port", NatType::Port),
        ("a-symmetric", NatType::Symmetric),
        ("hairpin", NatType::Hairpin),
        ("upnp-symmetric", NatType::Symmetric),
    ] {
        assert_eq!(lab.site(name).nat, nat, "site {name}");
    }
    assert_eq!(lab.site("hairpin").hosts.len(), 2);
    assert_eq!(lab.site("c-port").extra_routers.len(), 2);
    assert_eq!(lab.site("d-port").extra_routers.len(), 2);
}

/// Hairpinning as RFC 4787 REQ-9 wants it: a packet from one host to the other
/// host's public endpoint arrives, from the sender's public endpoint.
#[test]
fn hairpin_site_translates_both_ways() {
    use std::net::{SocketAddr, UdpSocket};
    let lab = lab_or_skip!();
    let _c = lab.claim(&["hairpin"]);
    let s = lab.site("hairpin");
    let server = SocketAddr::from((lab.stun.ips[0], lab.stun.port));
    let h1 = lab.in_ns(&s.hosts[0].netns, || UdpSocket::bind("0.0.0.0:0").unwrap());
    let h2 = lab.in_ns(&s.hosts[1].netns, || UdpSocket::bind("0.0.0.0:0").unwrap());
    let m1 = crate::lab::stun_mapped(&h1, server);
    let m2 = crate::lab::stun_mapped(&h2, server);
    assert_eq!(m1.ip(), std::net::IpAddr::V4(s.public_ip));
    assert_eq!(m2.ip(), std::net::IpAddr::V4(s.public_ip));
    h1.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    let mut got = None;
    for _ in 0..5 {
        h2.send_to(b"hairpin", m1).unwrap();
        if let Ok((n, from)) = h1.recv_from(&mut buf) {
            got = Some((buf[..n].to_vec(), from));
            break;
        }
    }
    let (data, from) = got.expect("h2 -> h1's public endpoint did not hairpin");
    assert_eq!(data, b"hairpin");
    assert_eq!(
        from, m2,
        "the hairpinned packet comes from h2's public endpoint"
    );
}

/// The lab's filtering, probed directly with sockets in the STUN namespace:
/// which remote endpoints get through to a mapping, and that address-restricted
/// filtering is per mapping (a second socket of the same host that only talked to
/// another address is not opened by the first socket's traffic).
fn filtering_matrix(lab: &Lab, site: &str) -> [bool; 4] {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;
    let _c = lab.claim(&[site]);
    let s = lab.site(site);
    let (ip3, ip4) = (lab.stun.ips[0], lab.stun.ips[1]);
    let bind = |ip| move || UdpSocket::bind(SocketAddr::from((ip, 0))).unwrap();
    let (r1, r1b, r2) = (
        lab.in_ns(&lab.stun.netns, bind(ip3)),
        lab.in_ns(&lab.stun.netns, bind(ip3)),
        lab.in_ns(&lab.stun.netns, bind(ip4)),
    );
    let h = lab.in_ns(&s.host_netns, || UdpSocket::bind("0.0.0.0:0").unwrap());
    let h2 = lab.in_ns(&s.host_netns, || UdpSocket::bind("0.0.0.0:0").unwrap());
    for sock in [&r1, &r1b, &r2, &h, &h2] {
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    let mut buf = [0u8; 64];
    // Open the mappings: h -> r1, h2 -> r2; learn the public endpoints.
    let learn = |from: &UdpSocket, to: &UdpSocket| -> SocketAddr {
        for _ in 0..5 {
            from.send_to(b"out", to.local_addr().unwrap()).unwrap();
            if let Ok((_, public)) = to.recv_from(&mut [0u8; 16]) {
                return public;
            }
        }
        panic!("{site}: outbound packet never reached the STUN namespace");
    };
    let pub1 = learn(&h, &r1);
    let pub2 = learn(&h2, &r2);
    let reaches = |from: &UdpSocket, to: SocketAddr, at: &UdpSocket, buf: &mut [u8]| {
        (0..3).any(|_| {
            from.send_to(b"in", to).unwrap();
            at.recv_from(buf).is_ok()
        })
    };
    [
        reaches(&r1, pub1, &h, &mut buf),  // the endpoint h sent to
        reaches(&r1b, pub1, &h, &mut buf), // same address, other port
        reaches(&r2, pub1, &h, &mut buf),  // other address
        reaches(&r1, pub2, &h2, &mut buf), // h2's mapping, from h's peer
    ]
}

#[test]
fn filtering_full_cone_lets_everything_in() {
    let lab = lab_or_skip!();
    assert_eq!(filtering_matrix(lab, "b-full"), [true, true, true, true]);
}

#[test]
fn filtering_address_restricted_is_per_mapping() {
    let lab = lab_or_skip!();
    assert_eq!(
        filtering_matrix(lab, "b-address"),
        [true, true, false, false]
    );
}

#[test]
fn filtering_port_restricted_needs_address_and_port() {
    let lab = lab_or_skip!();
    assert_eq!(filtering_matrix(lab, "b-port"), [true, false, false, false]);
}

/// `plexus nat --json` with one STUN address per family, as the issue has it: both
/// families' objects, the IPv4 one checked against the site's IPv4 public address
/// where the site has IPv4.
fn plexus_nat_both(lab: &Lab, site: &str) -> [serde_json::Value; 2] {
    let _c = lab.claim(&[site]);
    let v4 = lab.stun.ips[0].to_string();
    let v6 = format!("[{}]", lab.stun6().ips[0]);
    let both = plexus_nat_json(lab, site, &["--stun", &v4, "--stun", &v6]);
    let s = lab.site(site);
    if s.ipv4 {
        assert_eq!(both[0]["available"], true, "{site}: {}", both[0]);
        assert_eq!(
            ip_of(&both[0]["mapped"]),
            Some(s.public_ip.into()),
            "{site}: {}",
            both[0]
        );
    }
    both
}

/// A host with a global IPv6 address behind a stateful firewall: no NAT, its own
/// address as the mapped one, and the firewall's filtering.
fn expect_v6_firewall(lab: &Lab, site: &str, v: &serde_json::Value) {
    let v6 = lab.site(site).ipv6.as_ref().expect("an IPv6 site");
    assert_eq!(v["available"], true, "{site}: {v}");
    expect(
        v,
        site,
        false,
        "endpoint-independent",
        "address-and-port-dependent",
        true,
    );
    assert_eq!(ip_of(&v["mapped"]), Some(v6.host_ip.into()), "{site}: {v}");
    assert_eq!(v["mapped"], v["local"], "{site}: {v}");
    assert_eq!(
        v["hairpin"],
        serde_json::Value::Null,
        "no NAT, no hairpin: {v}"
    );
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r
                .starts_with("no NAT, stateful firewall: filtering address-and-port-dependent")),
        "{site}: {v}"
    );
    // Planned like a port-restricted NAT: port prediction with a symmetric peer (when
    // accepting: an inviter's filtering is not in its invite yet).
    assert_eq!(
        v["methods"]["symmetric"]["accepting"], "birthday probing: 256 sockets on the inviter side",
        "{site}: {v}"
    );
}

#[test]
fn plexus_nat_v6_firewalled_sites() {
    let lab = lab_or_skip!();
    for site in ["v6-fw-a", "v6-fw-b"] {
        let [v4, v6] = plexus_nat_both(lab, site);
        expect(
            &v4,
            site,
            true,
            "endpoint-independent",
            "address-and-port-dependent",
            true,
        );
        expect_v6_firewall(lab, site, &v6);
    }
    // And for people: one section per family, the firewall named as such.
    let _c = lab.claim(&["v6-fw-a"]);
    let s = lab.site("v6-fw-a");
    let v6 = format!("[{}]", lab.stun6().ips[0]);
    let out = lab.exec_timeout(
        &s.host_netns,
        60,
        &[
            &plexus_bin(),
            "nat",
            "--no-port-mapping",
            "--stun",
            &lab.stun.ips[0].to_string(),
            "--stun",
            &v6,
        ],
    );
    assert_ok("plexus nat", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    let (four, six) = text.split_once("=== IPv6 ===").expect("an IPv6 section");
    assert!(
        four.starts_with("=== IPv4 ===") && four.contains("port-restricted cone NAT"),
        "{text}"
    );
    assert!(
        six.contains(
            "NAT type:        no NAT, stateful firewall: filtering address-and-port-dependent"
        ),
        "{text}"
    );
}

#[test]
fn plexus_nat_v6_symmetric_ipv4_firewalled_ipv6() {
    let lab = lab_or_skip!();
    let [v4, v6] = plexus_nat_both(lab, "v6-symmetric");
    expect(
        &v4,
        "v6-symmetric",
        true,
        "address-and-port-dependent",
        "address-and-port-dependent",
        false,
    );
    expect_v6_firewall(lab, "v6-symmetric", &v6);
}

#[test]
fn plexus_nat_v6_only_has_no_ipv4() {
    let lab = lab_or_skip!();
    let [v4, v6] = plexus_nat_both(lab, "v6-only");
    assert_eq!(v4["available"], false, "{v4}");
    let e = v4["error"].as_str().unwrap_or("");
    assert!(
        e.contains("no route") && e.contains("unreachable"),
        "IPv4 on an IPv6-only host: {v4}"
    );
    expect_v6_firewall(lab, "v6-only", &v6);
    // Only IPv4 asked for: nothing measurable, exit 1 with the reason.
    let _c = lab.claim(&["v6-only"]);
    let s = lab.site("v6-only");
    let out = lab.exec_timeout(
        &s.host_netns,
        60,
        &[
            &plexus_bin(),
            "nat",
            "--no-port-mapping",
            "--family",
            "ipv4",
            "--stun",
            &lab.stun.ips[0].to_string(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no address family could be measured") && err.contains("IPv4: no route"),
        "{err}"
    );
}

#[test]
fn plexus_nat_v6_nat66() {
    let lab = lab_or_skip!();
    let [v4, v6] = plexus_nat_both(lab, "v6-nat66");
    expect(
        &v4,
        "v6-nat66",
        true,
        "endpoint-independent",
        "address-and-port-dependent",
        true,
    );
    let site = lab.site("v6-nat66").ipv6.as_ref().expect("an IPv6 site");
    assert_eq!(v6["available"], true, "{v6}");
    assert_eq!(v6["nat"], true, "NAT66: {v6}");
    assert_eq!(v6["mapping"], "endpoint-independent", "{v6}");
    assert_eq!(v6["punchable"], true, "{v6}");
    assert_eq!(ip_of(&v6["mapped"]), Some(site.public_ip.into()), "{v6}");
    assert_eq!(ip_of(&v6["local"]), Some(site.host_ip.into()), "{v6}");
}

#[test]
fn plexus_nat_ipv4_only_site_has_no_ipv6() {
    let lab = lab_or_skip!();
    let [v4, v6] = plexus_nat_both(lab, "a-port");
    expect(
        &v4,
        "a-port",
        true,
        "endpoint-independent",
        "address-and-port-dependent",
        true,
    );
    assert_eq!(v6["available"], false, "{v6}");
    assert!(
        v6["error"].as_str().is_some_and(|e| e.contains("no route")),
        "IPv6 on an IPv4-only site: {v6}"
    );
}
