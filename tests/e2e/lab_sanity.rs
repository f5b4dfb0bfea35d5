//! The lab itself: idempotent start, complete teardown, unique names.

use std::process::Command;

use crate::lab::{lab_sh, state_dir_of};

fn netns_of(name: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{name}-")))
        .map(str::to_string)
        .collect()
}

fn lab_sh_run(args: &[&str]) -> std::process::Output {
    Command::new(lab_sh())
        .args(args)
        .output()
        .expect("run lab.sh")
}

/// A second, mail-less lab next to the shared one: up twice, status, down.
#[test]
fn second_lab_is_idempotent_unique_and_torn_down_completely() {
    let lab = lab_or_skip!();
    let name = format!("plxs{:x}", std::process::id() & 0xffff);
    assert_ne!(name, lab.name);
    let owner = std::process::id().to_string();
    let up = lab_sh_run(&["up", "--name", &name, "--no-mail", "--owner", &owner]);
    crate::lab::assert_ok("lab.sh up (second lab)", &up);
    let first = std::fs::read_to_string(state_dir_of(&name).join("lab.json")).unwrap();
    let ns = netns_of(&name);
    assert!(ns.len() > 20, "second lab has only {} namespaces", ns.len());
    // The shared lab is untouched by the second one.
    assert!(!netns_of(&lab.name).is_empty());
    for n in &ns {
        assert!(!netns_of(&lab.name).contains(n));
    }
    // coturn runs in the second lab's STUN namespace, not only in the first.
    let pids = Command::new("ip")
        .args(["netns", "pids", &format!("{name}-stun")])
        .output()
        .unwrap();
    let pids: Vec<String> = String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(!pids.is_empty(), "no coturn in the second lab");

    // Up again: nothing rebuilt (same lab.json, same daemons).
    let again = lab_sh_run(&["up", "--name", &name, "--no-mail", "--owner", &owner]);
    crate::lab::assert_ok("lab.sh up (again)", &again);
    assert_eq!(
        first,
        std::fs::read_to_string(state_dir_of(&name).join("lab.json")).unwrap()
    );
    crate::lab::assert_ok("lab.sh status", &lab_sh_run(&["status", &name]));

    let down = lab_sh_run(&["down", &name]);
    crate::lab::assert_ok("lab.sh down", &down);
    assert!(
        netns_of(&name).is_empty(),
        "namespaces left: {:?}",
        netns_of(&name)
    );
    assert!(!state_dir_of(&name).exists(), "state dir left");
    for p in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists(),
            "daemon {p} still running"
        );
    }
    assert!(!lab_sh_run(&["status", &name]).status.success());
}

/// gc removes a lab whose owner is gone and leaves live ones alone.
#[test]
fn gc_removes_labs_of_dead_owners_only() {
    let lab = lab_or_skip!();
    let name = format!("plxg{:x}", std::process::id() & 0xffff);
    // An owner that exits at once.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id().to_string();
    child.wait().unwrap();
    let up = lab_sh_run(&["up", "--name", &name, "--no-mail", "--owner", &dead]);
    crate::lab::assert_ok("lab.sh up (gc lab)", &up);
    crate::lab::assert_ok("lab.sh gc", &lab_sh_run(&["gc"]));
    assert!(
        netns_of(&name).is_empty(),
        "gc left namespaces of a dead owner's lab"
    );
    assert!(!state_dir_of(&name).exists());
    assert!(!netns_of(&lab.name).is_empty(), "gc removed the live lab");
}

/// `in_ns` sockets live in the lab, and `set_loss` drops on the site's link only.
#[test]
fn in_ns_sockets_and_loss_switch() {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-full", "b-full"]);
    let (a, b) = (lab.site("a-full"), lab.site("b-full"));
    let rx = lab.in_ns(&a.host_netns, || UdpSocket::bind("0.0.0.0:0").unwrap());
    let tx = lab.in_ns(&b.host_netns, || UdpSocket::bind("0.0.0.0:0").unwrap());
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // a-full is full cone: anything sent to its public address reaches the host.
    let port = rx.local_addr().unwrap().port();
    let dst = SocketAddr::from((a.public_ip, port));
    let count = |n: usize| {
        for i in 0..n {
            tx.send_to(&(i as u32).to_be_bytes(), dst).unwrap();
        }
        let mut got = 0;
        let mut buf = [0u8; 16];
        while let Ok((_, from)) = rx.recv_from(&mut buf) {
            assert_eq!(
                from.ip(),
                std::net::IpAddr::V4(b.public_ip),
                "source is b-full's NAT"
            );
            got += 1;
        }
        got
    };
    assert_eq!(count(50), 50, "no loss configured, all must arrive");
    lab.set_loss("b-full", 100);
    assert_eq!(count(50), 0, "100 % loss on b-full's link");
    lab.set_loss("b-full", 50);
    // In batches, so the receive buffer never overflows (that would look like loss).
    let half: usize = (0..8).map(|_| count(50)).sum();
    // Binomial(400, 0.25..0.5 both ways): far outside these bounds is a broken rule.
    assert!(
        (40..=320).contains(&half),
        "50 % loss let {half} of 400 through"
    );
    lab.set_loss("b-full", 0);
    assert_eq!(count(50), 50, "loss switched off again");
}

/// Nothing routes out of the lab: the public router has no default route (IPv4 or
/// IPv6), and no
/// lab namespace has an interface other than the lab's own links.
#[test]
fn nothing_routes_out_of_the_lab() {
    let lab = lab_or_skip!();
    let inet = format!("{}-inet", lab.name);
    for outside in [
        "8.8.8.8",
        "192.168.1.1",
        "10.200.0.1",
        "2001:4860:4860::8888",
        "2a00:1450::1",
        "fd12:3456::1",
    ] {
        let out = Command::new("ip")
            .args(["-n", &inet, "route", "get", outside])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "the public router has a route to {outside}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let known = |i: &str| {
        [
            "lo", "eth0", "wan", "lan", "br0", "sub", "stun", "mail", "dht",
        ]
        .contains(&i)
            || (i.starts_with('s') || i.starts_with("lan"))
                && i[1..].trim_start_matches("an").parse::<u32>().is_ok()
    };
    assert_eq!(
        {
            let mut a = netns_of(&lab.name);
            a.sort();
            a
        },
        {
            let mut b = lab.netns.clone();
            b.sort();
            b
        },
        "lab.json lists exactly the lab's namespaces"
    );
    for ns in netns_of(&lab.name) {
        let out = Command::new("ip")
            .args(["-n", &ns, "-o", "link"])
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let ifname = line
                .split(": ")
                .nth(1)
                .unwrap_or("")
                .split('@')
                .next()
                .unwrap_or("");
            assert!(
                known(ifname),
                "unexpected interface {ifname:?} in {ns}: {line}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// IPv6 (issue 13): the dual-stack sites, STUN and mail over IPv6.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::lab::{stun_mapped, Lab, NatType, V6Mode};

/// A UDP socket on `[::]:0` inside `netns`, with a short read timeout.
fn udp6(lab: &Lab, netns: &str) -> UdpSocket {
    let s = lab.in_ns(netns, || UdpSocket::bind("[::]:0").unwrap());
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

/// Sends `msg` from `tx` to `to` up to 5 times; true once `rx` receives it from
/// `from` (each try waits for rx's read timeout, so a dropped packet costs ~1.5 s).
fn delivered(tx: &UdpSocket, to: SocketAddr, rx: &UdpSocket, from: SocketAddr, msg: &[u8]) -> bool {
    let mut buf = [0u8; 64];
    for _ in 0..5 {
        tx.send_to(msg, to).unwrap();
        while let Ok((n, src)) = rx.recv_from(&mut buf) {
            if src == from && &buf[..n] == msg {
                return true;
            }
        }
    }
    false
}

/// The endpoint a socket in `netns` sends from, as peers see it (its own global address).
fn ep(s: &UdpSocket, ip: Ipv6Addr) -> SocketAddr {
    SocketAddr::from((ip, s.local_addr().unwrap().port()))
}

/// One STUN binding request (RFC 8489, optionally with an RFC 5780 CHANGE-REQUEST) and
/// the answer: where it came from and its attributes (type, value). A few tries.
fn stun_exchange(
    sock: &UdpSocket,
    server: SocketAddr,
    change: Option<u32>,
) -> (SocketAddr, Vec<(u16, Vec<u8>)>) {
    // A fresh transaction ID per exchange: a late answer to an earlier one is ignored.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tid = [0u8; 12];
    tid[..4].copy_from_slice(&std::process::id().to_be_bytes());
    tid[8..].copy_from_slice(&n.to_be_bytes());
    let attrs = change.map(|c| [&[0x00, 0x03, 0x00, 0x04][..], &c.to_be_bytes()].concat());
    let attrs = attrs.unwrap_or_default();
    let mut req = vec![0x00, 0x01];
    req.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    req.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    req.extend_from_slice(&tid);
    req.extend_from_slice(&attrs);
    let mut buf = [0u8; 1500];
    for _ in 0..10 {
        sock.send_to(&req, server).unwrap();
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let m = &buf[..n];
        if n < 20 || m[8..20] != tid || m[0..2] != [0x01, 0x01] {
            continue;
        }
        let mut out = Vec::new();
        let mut pos = 20;
        while pos + 4 <= n {
            let typ = u16::from_be_bytes([m[pos], m[pos + 1]]);
            let len = usize::from(u16::from_be_bytes([m[pos + 2], m[pos + 3]]));
            out.push((typ, m[pos + 4..(pos + 4 + len).min(n)].to_vec()));
            pos += 4 + len.div_ceil(4) * 4;
        }
        return (from, out);
    }
    panic!("no STUN success answer from {server} (change request {change:?})");
}

/// A plain (not XORed) IPv6 address attribute: OTHER-ADDRESS, RESPONSE-ORIGIN.
fn plain_addr6(v: &[u8]) -> SocketAddr {
    assert!(
        v.len() >= 20 && v[1] == 2,
        "not an IPv6 address attribute: {v:?}"
    );
    let ip: [u8; 16] = v[4..20].try_into().unwrap();
    SocketAddr::from((Ipv6Addr::from(ip), u16::from_be_bytes([v[2], v[3]])))
}

/// lab.json describes the five IPv6 sites as built, and the old sites as IPv4-only.
#[test]
fn v6_sites_are_described() {
    let lab = lab_or_skip!();
    let v6: Vec<(&str, V6Mode, bool)> = lab
        .v6_sites()
        .map(|(n, s, v6)| (n, v6.mode, s.ipv4))
        .collect();
    assert_eq!(
        v6,
        [
            ("v6-fw-a", V6Mode::Firewall, true),
            ("v6-fw-b", V6Mode::Firewall, true),
            ("v6-nat66", V6Mode::Nat66, true),
            ("v6-only", V6Mode::Firewall, false),
            ("v6-symmetric", V6Mode::Firewall, true),
        ]
    );
    for (name, nat) in [
        ("v6-fw-a", NatType::Port),
        ("v6-fw-b", NatType::Port),
        ("v6-symmetric", NatType::Symmetric),
        ("v6-only", NatType::NoIpv4),
        ("v6-nat66", NatType::Port),
    ] {
        assert_eq!(lab.site(name).nat, nat, "IPv4 of {name}");
    }
    let only = lab.site("v6-only");
    assert!(
        only.public_ip.is_unspecified() && only.host_ip.is_unspecified() && only.lan.is_empty()
    );
    assert_eq!(only.hosts[0].ip6, Some(only.ipv6.as_ref().unwrap().host_ip));
    let stun6 = lab.stun6();
    assert_eq!(
        stun6.ips,
        [
            "2001:db8:0:5::3".parse::<Ipv6Addr>().unwrap(),
            "2001:db8:0:5::4".parse().unwrap()
        ]
    );
    assert_eq!((stun6.port, stun6.alt_port), (3478, 3479));
    if let Some(mail) = &lab.mail {
        assert_eq!(mail.ip6, Some("2001:db8:0:25::25".parse().unwrap()));
    }
    // An IPv4-only site has link-local IPv6 only, and no IPv6 route out.
    for (name, s) in lab.sites.iter().filter(|(_, s)| s.ipv6.is_none()) {
        let out = lab.exec(
            &s.host_netns,
            &["ip", "-6", "-o", "addr", "show", "scope", "global"],
        );
        crate::lab::assert_ok("ip -6 addr", &out);
        assert!(
            out.stdout.is_empty(),
            "{name} has a global IPv6 address: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let a = lab.site("a-port");
    let err = lab.in_ns(&a.host_netns, || {
        UdpSocket::bind("[::]:0")
            .unwrap()
            .send_to(b"x", SocketAddr::from((stun6.ips[0], stun6.port)))
            .unwrap_err()
    });
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENETUNREACH),
        "a-port over IPv6: {err}"
    );
}

/// From every IPv6 site host, a STUN binding over IPv6 returns the host's own global
/// address and port (firewall: no NAT) or the router's WAN address (NAT66).
#[test]
fn v6_stun_binding_from_every_v6_site() {
    let lab = lab_or_skip!();
    let server = SocketAddr::from((lab.stun6().ips[0], lab.stun6().port));
    let mut seen = 0;
    for (name, s, v6) in lab.v6_sites() {
        let sock = udp6(lab, &s.host_netns);
        let mapped = stun_mapped(&sock, server);
        eprintln!("{name}: {:?} mapped to {mapped}", v6.mode);
        assert_eq!(
            mapped.ip(),
            IpAddr::V6(v6.public_ip),
            "mapped address of {name}"
        );
        match v6.mode {
            V6Mode::Firewall => {
                assert_eq!(v6.public_ip, v6.host_ip);
                assert_eq!(
                    mapped.port(),
                    sock.local_addr().unwrap().port(),
                    "{name} keeps its port"
                );
            }
            V6Mode::Nat66 => assert_eq!(v6.public_ip, v6.router_wan_ip),
        }
        seen += 1;
    }
    assert_eq!(seen, 5, "five IPv6 sites");
}

/// The stateful firewall: unsolicited inbound IPv6 UDP is dropped (from the public
/// router and from another site), replies to what the host sent come in, ICMPv6
/// errors about an outbound flow come in as related, and two firewalled hosts that
/// send to each other get through (the punch IPv6 needs).
#[test]
fn v6_firewall_drops_unsolicited_and_passes_replies() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["v6-fw-a", "v6-fw-b"]);
    let (sa, sb) = (lab.site("v6-fw-a"), lab.site("v6-fw-b"));
    let (a_ip, b_ip) = (
        sa.ipv6.as_ref().unwrap().host_ip,
        sb.ipv6.as_ref().unwrap().host_ip,
    );
    let inet_ns = format!("{}-inet", lab.name);
    let inet_ip: Ipv6Addr = "2001:db8:ff:16::1".parse().unwrap();
    let a = udp6(lab, &sa.host_netns);
    let b = udp6(lab, &sb.host_netns);
    let inet = udp6(lab, &inet_ns);
    let inet2 = udp6(lab, &inet_ns);
    let (a_ep, b_ep) = (ep(&a, a_ip), ep(&b, b_ip));
    let (inet_ep, inet2_ep) = (ep(&inet, inet_ip), ep(&inet2, inet_ip));

    assert!(
        !delivered(&inet, a_ep, &a, inet_ep, b"unsolicited"),
        "firewall let an unsolicited packet from the public router in"
    );
    // The host sends first: the reply comes in, from that endpoint only.
    assert!(
        delivered(&a, inet_ep, &inet, a_ep, b"out"),
        "v6-fw-a cannot reach the public router"
    );
    assert!(
        delivered(&inet, a_ep, &a, inet_ep, b"reply"),
        "the reply to v6-fw-a's packet was dropped"
    );
    assert!(
        !delivered(&inet2, a_ep, &a, inet2_ep, b"other port"),
        "another port of the same remote got in"
    );

    // ICMPv6 port unreachable about a's flow to a closed port comes back as related.
    let closed = lab.in_ns(&inet_ns, || UdpSocket::bind("[::]:0").unwrap());
    let closed_ep = ep(&closed, inet_ip);
    drop(closed);
    let err = lab.in_ns(&sa.host_netns, || {
        let s = UdpSocket::bind("[::]:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.connect(closed_ep).unwrap();
        s.send(b"anyone?").unwrap();
        s.recv(&mut [0u8; 8]).unwrap_err()
    });
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "ICMPv6 error for an outbound flow: {err}"
    );

    // Site to site: b's first packet is dropped by a's firewall, but opens b's for a's
    // answer; a's answer opens a's for b. From then on both ways pass: the punch.
    assert!(
        !delivered(&b, a_ep, &a, b_ep, b"b first"),
        "v6-fw-a let an unsolicited packet from v6-fw-b in"
    );
    assert!(
        delivered(&a, b_ep, &b, a_ep, b"a answers"),
        "v6-fw-b dropped v6-fw-a although it had sent to it"
    );
    assert!(
        delivered(&b, a_ep, &a, b_ep, b"b again"),
        "v6-fw-a dropped v6-fw-b after sending to it"
    );
}

/// NAT66: the ULA host is seen from its router's WAN address, replies come back, the
/// ULA LAN is not routed, and an unsolicited packet to the mapping is dropped.
#[test]
fn v6_nat66_rewrites_the_source() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["v6-nat66"]);
    let s = lab.site("v6-nat66");
    let v6 = s.ipv6.as_ref().unwrap();
    assert!(
        v6.host_ip.segments()[0] == 0xfd00,
        "ULA host address: {}",
        v6.host_ip
    );
    let inet_ns = format!("{}-inet", lab.name);
    let inet_ip: Ipv6Addr = "2001:db8:ff:20::1".parse().unwrap();
    let h = udp6(lab, &s.host_netns);
    let inet = udp6(lab, &inet_ns);
    let inet2 = udp6(lab, &inet_ns);
    let inet_ep = ep(&inet, inet_ip);
    let mut buf = [0u8; 64];
    let mut from = None;
    for _ in 0..5 {
        h.send_to(b"out", inet_ep).unwrap();
        if let Ok((n, src)) = inet.recv_from(&mut buf) {
            if &buf[..n] == b"out" {
                from = Some(src);
                break;
            }
        }
    }
    let mapped = from.expect("the NAT66 host cannot reach the public router");
    assert_eq!(
        mapped.ip(),
        IpAddr::V6(v6.router_wan_ip),
        "NAT66 source address"
    );
    assert!(
        delivered(&inet, mapped, &h, inet_ep, b"reply"),
        "reply through NAT66 dropped"
    );
    assert!(
        !delivered(&inet2, mapped, &h, ep(&inet2, inet_ip), b"other"),
        "an unsolicited packet got through NAT66"
    );
    let err = lab.in_ns(&inet_ns, || {
        UdpSocket::bind("[::]:0")
            .unwrap()
            .send_to(b"x", SocketAddr::from((v6.host_ip, 9)))
            .unwrap_err()
    });
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENETUNREACH),
        "the ULA LAN must not be routed: {err}"
    );
}

/// v6-only has no IPv4: only lo on the host, no IPv4 route, and sending to an IPv4
/// address fails with "network unreachable"; its router has no IPv4 either.
#[test]
fn v6_only_has_no_ipv4() {
    let lab = lab_or_skip!();
    let s = lab.site("v6-only");
    assert!(!s.ipv4);
    for ns in [&s.host_netns, &s.router_netns] {
        let addrs = lab.exec(ns, &["ip", "-4", "-o", "addr"]);
        crate::lab::assert_ok("ip -4 addr", &addrs);
        let addrs = String::from_utf8_lossy(&addrs.stdout).to_string();
        assert!(
            addrs.lines().all(|l| l.contains(" lo ")),
            "IPv4 address in {ns}: {addrs}"
        );
        let routes = lab.exec(ns, &["ip", "-4", "route", "show", "table", "main"]);
        crate::lab::assert_ok("ip -4 route", &routes);
        assert!(
            routes.stdout.is_empty(),
            "IPv4 route in {ns}: {}",
            String::from_utf8_lossy(&routes.stdout)
        );
    }
    let err = lab.in_ns(&s.host_netns, || {
        UdpSocket::bind("0.0.0.0:0")
            .unwrap()
            .send_to(b"x", "203.0.113.3:3478")
            .unwrap_err()
    });
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENETUNREACH),
        "v6-only to 203.0.113.3: {err}"
    );
    assert_eq!(err.kind(), std::io::ErrorKind::NetworkUnreachable);
}

/// Mail over IPv6 from the IPv6-only host: SMTP submission (465 TLS, 587 STARTTLS, with
/// AUTH) and IMAPS on [2001:db8:0:25::25], the certificate verified against the lab CA
/// for that IP address (and refused for another one).
#[test]
fn mail_over_ipv6_from_the_v6_only_host() {
    let lab = lab_or_skip!();
    let Some(mail) = &lab.mail else {
        panic!("lab {} runs without mail", lab.name)
    };
    let ip6 = mail.ip6.expect("mail host has an IPv6 address").to_string();
    let acct = mail.accounts.last().expect("mail accounts");
    let script = r#"
import imaplib, os, smtplib, socket, ssl, sys
host, ca = sys.argv[1], sys.argv[2]
login, pw = os.environ["MAIL_LOGIN"], os.environ["MAIL_PW"]
ctx = ssl.create_default_context(cafile=ca)
with smtplib.SMTP_SSL(host, 465, context=ctx, timeout=20) as s:
    s.login(login, pw)
    print("465", s.sock.getpeername()[0], s.sock.version())
with smtplib.SMTP(host, 587, timeout=20) as s:
    s.starttls(context=ctx)
    s.login(login, pw)
    print("587", s.sock.getpeername()[0], s.sock.version())
m = imaplib.IMAP4_SSL(host, 993, ssl_context=ctx, timeout=20)
m.login(login, pw)
typ, _ = m.select("INBOX", readonly=True)
print("993", m.sock.getpeername()[0], m.sock.version(), typ)
m.logout()
# The same certificate must not pass for another address.
raw = socket.create_connection((host, 993), timeout=20)
try:
    ctx.wrap_socket(raw, server_hostname="2001:db8:0:25::26")
    print("WRONG-NAME-ACCEPTED")
except ssl.SSLCertVerificationError as e:
    print("wrong name refused:", e.verify_message)
"#;
    let out = lab
        .command(&lab.site("v6-only").host_netns, "timeout")
        .args(["60", "python3", "-c", script, &ip6])
        .arg(&mail.ca_file)
        .env("MAIL_LOGIN", &acct.login)
        .env("MAIL_PW", &acct.password)
        .output()
        .unwrap();
    crate::lab::assert_ok("mail over IPv6 (python3 in v6-only)", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    for port in ["465", "587", "993"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(port) && l.contains(&ip6)),
            "port {port} over IPv6: {text}"
        );
    }
    assert!(text.contains("wrong name refused"), "{text}");
}

/// RFC 5780 over IPv6: a binding request with CHANGE-REQUEST (IP and port) to
/// [2001:db8:0:5::3]:3478 is answered from [2001:db8:0:5::4]:3479, and a plain one
/// names that endpoint in OTHER-ADDRESS.
#[test]
fn rfc5780_change_request_over_ipv6() {
    let lab = lab_or_skip!();
    let st = lab.stun6();
    let primary = SocketAddr::from((st.ips[0], st.port));
    let other = SocketAddr::from((st.ips[1], st.alt_port));
    let sock = udp6(lab, &format!("{}-inet", lab.name));
    let (from, attrs) = stun_exchange(&sock, primary, None);
    assert_eq!(from, primary);
    let oa = attrs
        .iter()
        .find(|(t, _)| *t == 0x802c)
        .expect("OTHER-ADDRESS in the answer");
    assert_eq!(plain_addr6(&oa.1), other, "OTHER-ADDRESS");
    let (from, _) = stun_exchange(&sock, primary, Some(0x06));
    assert_eq!(
        from, other,
        "change IP and port is answered from the other address and port"
    );
    let (from, _) = stun_exchange(&sock, primary, Some(0x02));
    assert_eq!(
        from,
        SocketAddr::from((st.ips[0], st.alt_port)),
        "change port only"
    );
}

/// `lab.sh loss` applies to a site's IPv6 traffic too (the public router's per-site
/// forward chain is in an inet table, keyed by interface).
#[test]
fn loss_covers_ipv6() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["v6-fw-b"]);
    let s = lab.site("v6-fw-b");
    let h = udp6(lab, &s.host_netns);
    // A socket in the STUN namespace: the path crosses the public router's forward hook.
    // Bound to one address: that namespace has two, and a reply must come from the one
    // the host sent to.
    let srv_ip = lab.stun6().ips[0];
    let srv = lab.in_ns(&lab.stun6().netns, || {
        UdpSocket::bind(SocketAddr::from((srv_ip, 0))).unwrap()
    });
    srv.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let srv_ep = ep(&srv, srv_ip);
    let h_ep = ep(&h, s.ipv6.as_ref().unwrap().host_ip);
    assert!(delivered(&h, srv_ep, &srv, h_ep, b"before"));
    lab.set_loss("v6-fw-b", 100);
    assert!(
        !delivered(&h, srv_ep, &srv, h_ep, b"during"),
        "100 % loss let IPv6 out"
    );
    assert!(
        !delivered(&srv, h_ep, &h, srv_ep, b"during"),
        "100 % loss let IPv6 in"
    );
    lab.set_loss("v6-fw-b", 0);
    assert!(delivered(&h, srv_ep, &srv, h_ep, b"after"));
    assert!(delivered(&srv, h_ep, &h, srv_ep, b"reply after"));
}
