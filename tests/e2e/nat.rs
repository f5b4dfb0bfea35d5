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

/// `plexus nat --json` in `site`'s host; checks the JSON contract and returns it.
fn plexus_nat(lab: &Lab, site: &str) -> serde_json::Value {
    let _c = lab.claim(&[site]);
    let s = lab.site(site);
    let stun = lab.stun.ips[0].to_string();
    let bin = plexus_bin();
    let out = lab.exec_timeout(&s.host_netns, 60, &[&bin, "nat", "--json", "--stun", &stun]);
    assert_ok("plexus nat --json", &out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "plexus nat --json printed no JSON object ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
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
    ] {
        assert!(v.get(key).is_some(), "plexus nat --json lacks {key:?}: {v}");
    }
    eprintln!("plexus nat {site} ({:?}): {v}", s.nat);
    let mapped_ip = v["mapped"]
        .as_str()
        .and_then(|m| m.rsplit_once(':'))
        .map(|(ip, _)| ip.to_string());
    assert_eq!(
        mapped_ip,
        Some(s.public_ip.to_string()),
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
