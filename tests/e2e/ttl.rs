//! The low-TTL punch (tests/lab/ttl-punch.py explains the mechanism): between
//! two port-restricted NATs, the accepting side's first packet must expire
//! between the NATs. TTL 2 connects; TTL 64 reaches the other NAT, which then
//! remaps the inviter to another public port, and the corridor fails.

use std::io::Read;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::lab::{Lab, Site};

fn script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/lab/ttl-punch.py")
        .display()
        .to_string()
}

/// Wait for `child` (bounded: the script ends on its own in ~10 s); returns
/// (exit code, parsed JSON line).
fn finish(mut child: Child, what: &str) -> (i32, serde_json::Value) {
    let end = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for ttl-punch.py") {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("{what}: ttl-punch.py did not finish in 40 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let code = status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 1,
        "{what}: ttl-punch.py failed ({status}): {out}{err}"
    );
    let v = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("{what}: bad output ({e}): {out}{err}"));
    (code, v)
}

/// The public port the inviter's NAT gave the flow toward the acceptor
/// (from conntrack in the NAT router: the reply direction's destination port).
fn nat_port_toward(lab: &Lab, inviter: &Site, local_port: u64, peer: &str) -> Option<u16> {
    let out = lab.exec(
        &inviter.router_netns,
        &[
            "conntrack",
            "-L",
            "-p",
            "udp",
            "-s",
            &inviter.host_ip.to_string(),
            "--sport",
            &local_port.to_string(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.contains(&format!("dst={peer} ")))
        .find_map(|l| {
            // "... src=A dst=B sport=a dport=b src=B dst=PUB sport=b dport=MAPPED ..."
            let dports: Vec<&str> = l
                .split_whitespace()
                .filter(|w| w.starts_with("dport="))
                .collect();
            dports.get(1).and_then(|d| d[6..].parse().ok())
        })
}

/// Run one punch: the acceptor in `acceptor`'s host punches with `ttl`.
/// Returns whether both sides connected, after checking the NAT's port choice.
fn punch(lab: &Lab, inviter: &str, acceptor: &str, ttl: u8) -> bool {
    let (inv, acc) = (lab.site(inviter), lab.site(acceptor));
    let dir = lab.scratch(&format!("ttl-{inviter}-{acceptor}-{ttl}"));
    let dir = dir.to_str().unwrap();
    let stun = lab.stun.ips[0].to_string();
    let script = script();
    let common = ["--dir", dir, "--stun", &stun, "--timeout", "3"];
    let mut inv_args = vec!["python3", &script, "--role", "inviter"];
    inv_args.extend(common);
    let ttl_s = ttl.to_string();
    let mut acc_args = vec!["python3", &script, "--role", "acceptor", "--ttl", &ttl_s];
    acc_args.extend(common);
    let i = lab.spawn(&inv.host_netns, &inv_args);
    let a = lab.spawn(&acc.host_netns, &acc_args);
    let what = format!("{inviter} <- {acceptor} ttl {ttl}");
    let (ic, iv) = finish(i, &what);
    let (ac, av) = finish(a, &what);
    eprintln!("ttl punch {what}: inviter {iv}, acceptor {av}");
    assert_eq!(
        ic == 0,
        ac == 0,
        "{what}: only one side connected: {iv} {av}"
    );
    // What the inviter's NAT did with the inviter's flow toward the acceptor.
    let mapped_port: u16 = iv["mapped"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let toward = nat_port_toward(
        lab,
        inv,
        iv["local_port"].as_u64().unwrap(),
        &acc.public_ip.to_string(),
    );
    eprintln!("{what}: inviter mapped port {mapped_port}, port toward the acceptor {toward:?}");
    if ic == 0 {
        assert_eq!(
            toward,
            Some(mapped_port),
            "{what}: connected, so the NAT kept the port"
        );
    } else {
        assert!(
            toward.is_some_and(|p| p != mapped_port),
            "{what}: failed, but not because the NAT remapped the inviter's port ({toward:?} vs {mapped_port})"
        );
    }
    ic == 0
}

#[test]
fn ttl2_punch_connects_port_restricted_pair() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-port", "b-port"]);
    assert!(
        punch(lab, "a-port", "b-port", 2),
        "TTL 2 punch must connect"
    );
}

#[test]
fn ttl64_punch_breaks_port_restricted_pair() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-port", "b-port"]);
    assert!(
        !punch(lab, "a-port", "b-port", 64),
        "a punch reaching the other NAT must break the corridor"
    );
}

#[test]
fn ttl2_punch_connects_behind_two_extra_routers() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["c-port", "d-port"]);
    assert!(
        punch(lab, "c-port", "d-port", 2),
        "TTL 2 dies at the first extra router and must connect"
    );
    assert!(
        !punch(lab, "c-port", "d-port", 64),
        "TTL 64 reaches the other NAT and must fail"
    );
}

/// In the lab's IPv6 sites the hop probe toward the IPv6 STUN server passes the own
/// router, which answers from the site's /64 (`v6-fw-a`, `v6-only`: global prefix behind
/// a stateful firewall) or from its ULA (`v6-nat66`), and stops at the public router:
/// hop limit 2.
#[test]
fn ipv6_auto_punch_hop_limit_in_the_lab_sites_is_2() {
    use plexus::punch::hops::{discover_punch_ttl, probe_hops, HopsConfig, PunchHops};
    use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};

    let lab = lab_or_skip!();
    let sites = ["v6-fw-a", "v6-nat66", "v6-only"];
    let _c = lab.claim(&sites);
    let stun6 = lab.stun6();
    let stun = SocketAddr::new(IpAddr::V6(stun6.ips[0]), stun6.port);
    for name in sites {
        let site = lab.site(name);
        let v6 = site.ipv6.as_ref().expect("an IPv6 site");
        let (obs, ttl, took) = lab.in_ns(&site.host_netns, || {
            let s = UdpSocket::bind("[::]:0").unwrap();
            let cfg = HopsConfig::default();
            let obs = probe_hops(&s, stun, &cfg).unwrap();
            let t0 = Instant::now();
            let ttl = discover_punch_ttl(&s, stun, PunchHops::Auto, &cfg).unwrap();
            (obs, ttl, t0.elapsed())
        });
        eprintln!(
            "{name} toward {stun}: {obs:?} -> punch hop limit {ttl} (discovery {} µs)",
            took.as_micros()
        );
        // The public router is `::1` of the site's uplink, whose `::2` is the site router.
        let mut inet = v6.router_wan_ip.segments();
        inet[7] = 1;
        assert_eq!(
            obs,
            vec![
                (1, IpAddr::V6(v6.router_lan_ip)),
                (2, IpAddr::V6(Ipv6Addr::from(inet)))
            ],
            "{name}"
        );
        assert_eq!(ttl, 2, "{name}");
    }
}

/// Two lab sites with global IPv6 behind stateful firewalls (`v6-fw-b` accepts,
/// `v6-fw-a` invites): the acceptor's punch with the probed hop limit opens its own
/// firewall without reaching the inviter, and then the inviter's packets get in and
/// the answers get back; with hop limit 1 the punch dies at its own router and the
/// inviter's packet is dropped there.
#[test]
fn ipv6_punch_with_the_probed_hop_limit_opens_a_firewalled_site() {
    use plexus::punch::hops::{discover_punch_ttl, send_with_ttl, HopsConfig, PunchHops};
    use std::net::{IpAddr, SocketAddr, UdpSocket};

    let lab = lab_or_skip!();
    let _c = lab.claim(&["v6-fw-a", "v6-fw-b"]);
    let (a, b) = (lab.site("v6-fw-a"), lab.site("v6-fw-b"));
    let (a6, b6) = (a.ipv6.as_ref().unwrap(), b.ipv6.as_ref().unwrap());
    let stun6 = lab.stun6();
    let stun = SocketAddr::new(IpAddr::V6(stun6.ips[0]), stun6.port);
    let bind = |netns: &str, ip| {
        lab.in_ns(netns, move || {
            let s = UdpSocket::bind(SocketAddr::new(IpAddr::V6(ip), 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(800)))
                .unwrap();
            s
        })
    };
    let got = |s: &UdpSocket, want: &[u8], from: SocketAddr| {
        let mut buf = [0u8; 64];
        match s.recv_from(&mut buf) {
            Ok((n, f)) => &buf[..n] == want && f == from,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(e) => panic!("receive: {e}"),
        }
    };
    let auto = lab.in_ns(&b.host_netns, || {
        let s = UdpSocket::bind("[::]:0").unwrap();
        discover_punch_ttl(&s, stun, PunchHops::Auto, &HopsConfig::default()).unwrap()
    });
    assert_eq!(auto, 2);
    for (hops, opens) in [(1, false), (auto, true)] {
        let inviter = bind(&a.host_netns, a6.host_ip);
        let acceptor = bind(&b.host_netns, b6.host_ip);
        let (ia, aa) = (
            inviter.local_addr().unwrap(),
            acceptor.local_addr().unwrap(),
        );
        send_with_ttl(&acceptor, ia, b"punch", hops).unwrap();
        assert!(
            !got(&inviter, b"punch", aa),
            "hop limit {hops}: the punch reached the inviter"
        );
        inviter.send_to(b"hello", aa).unwrap();
        let came_in = got(&acceptor, b"hello", ia);
        eprintln!("v6-fw-b punches with hop limit {hops}: v6-fw-a's packet got in: {came_in}");
        assert_eq!(came_in, opens, "hop limit {hops}");
        if came_in {
            acceptor.send_to(b"answer", ia).unwrap();
            assert!(got(&inviter, b"answer", aa), "the answer went back");
        }
    }
}

mod v6 {
    //! The IPv6 hop probe and punch hop limit over a chain built here (root only):
    //!
    //! `h (2001:db8:a:1::2) ─ r1 [stateful firewall] ─ r2 ─ t (2001:db8:c:1::2)`
    //!
    //! `r1` is a home router without NAT: its forward chain lets out anything and lets in
    //! only what conntrack knows (established/related), as IPv6 home routers do. Its LAN
    //! address is in the host's /64, so the IPv6 rule must pick hop limit 2 (dying at
    //! `r2`, after `r1` made the state), where the IPv4 "first public hop" would say 1
    //! (dying at `r1`, before it forwards: no state, and the peer's packets stay out).

    use std::net::{IpAddr, SocketAddr, UdpSocket};
    use std::process::Command;
    use std::time::Duration;

    use plexus::punch::hops::{
        choose_punch_ttl_for, discover_punch_ttl, local_addresses, probe_hops, send_with_ttl,
        HopsConfig, PunchHops,
    };
    use plexus::testing::netns::{in_netns, ip, nft, root_or_skip, Chain};

    const HOST: &str = "2001:db8:a:1::2";
    const R1_LAN: &str = "2001:db8:a:1::1";
    const R1_WAN: &str = "2001:db8:b:1::1";
    const R2: &str = "2001:db8:b:1::2";
    const R2_T: &str = "2001:db8:c:1::1";
    const TARGET: &str = "2001:db8:c:1::2";

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The four namespaces, `plxhopsix-<tag><pid>-{h,r1,r2,t}`, wired and firewalled.
    fn chain(tag: &str) -> (Chain, [String; 4]) {
        let pid = std::process::id() % 100_000;
        let n = ["h", "r1", "r2", "t"].map(|x| format!("plxhopsix-{tag}{pid}-{x}"));
        let chain = Chain { names: n.to_vec() };
        for ns in &n {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(std::process::Stdio::null())
                .status();
            ip(&format!("netns add {ns}"));
            ip(&format!("-n {ns} link set lo up"));
            // No ICMPv6 rate limit (one error per second per peer by default would eat
            // the probe's answers), the routers forward, and no duplicate-address
            // detection on the links made below (their link-local addresses would stay
            // tentative for a second, and neighbour discovery with them).
            for kv in [
                "net.ipv6.icmp.ratelimit=0",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.accept_dad=0",
            ] {
                let st = Command::new("ip")
                    .args(["netns", "exec", ns, "sysctl", "-qw", kv])
                    .status()
                    .unwrap();
                assert!(st.success(), "sysctl {kv} in {ns}");
            }
        }
        // (left node, its address, right node, its address) per link; nodad: usable at
        // once.
        let links = [
            (0, HOST, 1, R1_LAN),
            (1, R1_WAN, 2, R2),
            (2, R2_T, 3, TARGET),
        ];
        for (i, (x, xa, y, ya)) in links.iter().enumerate() {
            ip(&format!(
                "-n {} link add e{i} type veth peer name f{i} netns {}",
                n[*x], n[*y]
            ));
            ip(&format!("-n {} addr add {xa}/64 dev e{i} nodad", n[*x]));
            ip(&format!("-n {} addr add {ya}/64 dev f{i} nodad", n[*y]));
            ip(&format!("-n {} link set e{i} up", n[*x]));
            ip(&format!("-n {} link set f{i} up", n[*y]));
        }
        ip(&format!("-n {} -6 route add default via {R1_LAN}", n[0]));
        ip(&format!("-n {} -6 route add default via {R2}", n[1]));
        ip(&format!(
            "-n {} -6 route add 2001:db8:a:1::/64 via {R1_WAN}",
            n[2]
        ));
        ip(&format!("-n {} -6 route add default via {R2_T}", n[3]));
        // r1's WAN side is e1: what comes in there is let through only when conntrack
        // knows it (replies, and ICMP errors about our own packets).
        nft(
            &n[1],
            "table ip6 plxhopsix {\n chain inbound {\n  type filter hook forward priority 0; policy accept;\n  \
             ct state established,related accept\n  iifname \"e1\" drop\n }\n}\n",
        );
        (chain, n)
    }

    fn bind_in(ns: &str, at: &str) -> UdpSocket {
        let at: SocketAddr = at.parse().unwrap();
        // A socket stays in the namespace it was made in, whichever thread uses it.
        in_netns(ns, move || UdpSocket::bind(at).unwrap())
    }

    fn recv(s: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 64];
        s.set_read_timeout(Some(Duration::from_millis(800)))
            .unwrap();
        match s.recv_from(&mut buf) {
            Ok((n, from)) => Some((buf[..n].to_vec(), from)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("receive: {e}"),
        }
    }

    /// The host punches toward the target's socket with `hops`, then the target sends
    /// to the host's port. Returns (the punch reached the target, the target's packet
    /// reached the host).
    fn punch(n: &[String; 4], hops: u8) -> (bool, bool) {
        let h = bind_in(&n[0], &format!("[{HOST}]:0"));
        let t = bind_in(&n[3], &format!("[{TARGET}]:0"));
        let (ha, ta) = (h.local_addr().unwrap(), t.local_addr().unwrap());
        send_with_ttl(&h, ta, b"punch", hops).unwrap();
        let punch_arrived = recv(&t).is_some_and(|(p, from)| p == b"punch" && from == ha);
        t.send_to(b"from the target", ha).unwrap();
        let reply_arrived = recv(&h).is_some_and(|(p, from)| p == b"from the target" && from == ta);
        eprintln!("hop limit {hops}: punch reached the target {punch_arrived}, its answer got in {reply_arrived}");
        (punch_arrived, reply_arrived)
    }

    #[test]
    fn ipv6_probe_walks_past_the_own_router_and_hop_limit_2_opens_the_firewall() {
        if !root_or_skip("ipv6_probe_walks_past_the_own_router_and_hop_limit_2_opens_the_firewall")
        {
            return;
        }
        let (_chain, n) = chain("p");
        let (obs, own, ttl) = in_netns(&n[0], || {
            let s = UdpSocket::bind("[::]:0").unwrap();
            let cfg = HopsConfig {
                max_ttl: 6,
                per_probe: Duration::from_millis(500),
            };
            // Port 9: nobody listens on the target, which would answer port-unreachable.
            let target = SocketAddr::new(addr(TARGET), 9);
            let obs = probe_hops(&s, target, &cfg).unwrap();
            let own = local_addresses().unwrap();
            let ttl = discover_punch_ttl(&s, target, PunchHops::Auto, &cfg).unwrap();
            (obs, own, ttl)
        });
        eprintln!("IPv6 probe: {obs:?} -> punch hop limit {ttl}");
        // Hop 1 dies at r1, which answers from the host's own /64; hop 2 at r2, the
        // first router outside it, and the probe stops there.
        assert_eq!(obs, vec![(1, addr(R1_LAN)), (2, addr(R2))]);
        assert!(own.contains(&addr(HOST)), "{own:?}");
        assert_eq!(choose_punch_ttl_for(&obs, &own), 2);
        assert_eq!(ttl, 2);

        // Hop limit 1 dies at r1 before it forwards: no state, the target stays out.
        assert_eq!(punch(&n, 1), (false, false));
        // The chosen hop limit passes r1 (making its state) and dies at r2: the target
        // never sees the punch, yet its packet to the host now gets in.
        assert_eq!(punch(&n, ttl), (false, true));
        // A full hop limit reaches the target (the path works end to end).
        assert_eq!(punch(&n, 64), (true, true));
    }
}
