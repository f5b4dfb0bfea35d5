//! Tests that need real NATs: network namespaces joined by veth pairs, with nftables
//! masquerade, all built here and removed afterwards (names prefixed `crd-`; traffic
//! never leaves them). Root only: without it they skip loudly, and with `CI=true` that
//! skip is a failure, as for the lab tests. Moved here from the library's unit tests.

mod hops {
    //! Real hop probes across namespaces with masquerading routers.

    use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
    use std::process::Command;
    use std::time::Duration;

    use plexus::punch::hops::{choose_punch_ttl, probe_hops, HopsConfig};
    use plexus::testing::netns::{in_netns, ip, nft, root_or_skip, Chain};

    /// `host → nat… → router… → target`. Link `i` joins node `i` and node `i+1`; the
    /// first `nat_nets.len()` links use those private /30s (host side `.2`, router side
    /// `.1`), the rest public /30s of 198.51.100.0/24. Node `i` (1 ≤ i ≤ nats) masquerades
    /// out of its right link. Returns the chain, the host namespace and the target.
    fn build(tag: &str, nat_nets: &[&str], routers: usize) -> (Chain, String, Ipv4Addr) {
        let pid = std::process::id() % 100_000;
        let k = nat_nets.len();
        let mut names = vec![format!("crd-{tag}{pid}-h")];
        names.extend((0..k).map(|i| format!("crd-{tag}{pid}-n{i}")));
        names.extend((0..routers).map(|i| format!("crd-{tag}{pid}-r{i}")));
        names.push(format!("crd-{tag}{pid}-t"));
        let chain = Chain {
            names: names.clone(),
        };
        for n in &names {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(std::process::Stdio::null())
                .status();
            ip(&format!("netns add {n}"));
            ip(&format!("-n {n} link set lo up"));
            for kv in ["net.ipv4.icmp_ratelimit=0", "net.ipv4.ip_forward=1"] {
                let st = Command::new("ip")
                    .args(["netns", "exec", n, "sysctl", "-qw", kv])
                    .status()
                    .unwrap();
                assert!(st.success());
            }
        }
        let addrs = |i: usize| -> (String, String) {
            if i < k {
                (format!("{}.2", nat_nets[i]), format!("{}.1", nat_nets[i]))
            } else {
                let base = 4 * (i - k) as u8;
                (
                    format!("198.51.100.{}", base + 1),
                    format!("198.51.100.{}", base + 2),
                )
            }
        };
        let links = names.len() - 1;
        for i in 0..links {
            let (a, b) = (&names[i], &names[i + 1]);
            let (left, right) = addrs(i);
            ip(&format!(
                "-n {a} link add r{i} type veth peer name l{i} netns {b}"
            ));
            ip(&format!("-n {a} addr add {left}/30 dev r{i}"));
            ip(&format!("-n {b} addr add {right}/30 dev l{i}"));
            ip(&format!("-n {a} link set r{i} up"));
            ip(&format!("-n {b} link set l{i} up"));
            ip(&format!("-n {a} route add default via {right}"));
        }
        for (i, n) in names.iter().enumerate().take(k + 1).skip(1) {
            nft(
                n,
                &format!(
                    "table ip crd {{\n chain post {{\n  type nat hook postrouting priority 100;\n  \
                     oifname \"r{i}\" masquerade\n }}\n}}\n"
                ),
            );
        }
        // Public nodes past the first need a way back to the last NAT's public /30.
        for (j, n) in names.iter().enumerate().skip(k + 2) {
            let (via, _) = addrs(j - 1);
            ip(&format!("-n {n} route add 198.51.100.0/30 via {via}"));
        }
        let target = addrs(links - 1).1.parse().unwrap();
        (chain, names[0].clone(), target)
    }

    fn probe(host: &str, target: Ipv4Addr) -> (Vec<(u8, IpAddr)>, u8) {
        in_netns(host, move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            let cfg = HopsConfig {
                max_ttl: 6,
                per_probe: Duration::from_millis(300),
            };
            // Port 9 (discard): nobody listens in the target namespace, so the target
            // itself answers port-unreachable when a probe reaches it.
            let obs = probe_hops(&s, SocketAddr::from((target, 9)), &cfg).unwrap();
            let ttl = choose_punch_ttl(&obs);
            eprintln!("probe toward {target}: {obs:?} -> punch TTL {ttl}");
            (obs, ttl)
        })
    }

    #[test]
    fn netns_one_nat_no_extra_router() {
        if !root_or_skip("netns_one_nat_no_extra_router") {
            return;
        }
        let (_chain, host, target) = build("a", &["10.77.0"], 0);
        let (obs, ttl) = probe(&host, target);
        // TTL 1 dies at the NAT, which answers from its private LAN address; TTL 2
        // reaches the target, which answers port-unreachable from a public address.
        assert_eq!(obs[0], (1, IpAddr::from([10, 77, 0, 1])), "{obs:?}");
        assert_eq!(ttl, 2, "{obs:?}");
    }

    #[test]
    fn netns_one_nat_two_routers() {
        if !root_or_skip("netns_one_nat_two_routers") {
            return;
        }
        let (_chain, host, target) = build("b", &["10.78.0"], 2);
        let (obs, ttl) = probe(&host, target);
        // TTL 2 dies at the first public router, the one right past the NAT.
        assert!(
            obs.contains(&(2, IpAddr::from([198, 51, 100, 2]))),
            "{obs:?}"
        );
        assert_eq!(ttl, 2, "{obs:?}");
    }

    #[test]
    fn netns_double_nat_needs_three() {
        if !root_or_skip("netns_double_nat_needs_three") {
            return;
        }
        // Home NAT (10.79.0/30 inside) behind a carrier-grade NAT (100.64.7/30 inside).
        let (_chain, host, target) = build("c", &["10.79.0", "100.64.7"], 1);
        let (obs, ttl) = probe(&host, target);
        assert!(obs.contains(&(2, IpAddr::from([100, 64, 7, 1]))), "{obs:?}");
        assert_eq!(ttl, 3, "{obs:?}");
    }
}

mod corridor {
    //! The whole corridor across two real NATs in network namespaces (root only; skipped
    //! otherwise, like the lab tests).
    //!
    //! `a (10.81.0.2) ─ na [masquerade] ─ r ─ nb [masquerade] ─ b (10.82.0.2)`: both NATs are
    //! Linux conntrack masquerade, i.e. port-preserving, address-and-port-dependent
    //! filtering. The acceptor `b` punches toward `a`'s mapped endpoint, then both run the
    //! handshake. With the auto TTL the punch dies at `r` and the corridor opens; with the
    //! original fixed TTL 7 it reaches `na`, which then maps `a`'s handshake to another port
    //! that `nb` filters, and the handshake times out: the TTL logic is what makes it work.

    use std::net::{SocketAddr, UdpSocket};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use plexus::punch::hops::{HopsConfig, PunchHops};
    use plexus::punch::wire::{Role, Secrets};
    use plexus::punch::{acceptor_punch, run_handshake, Config, Connected, Handshake, PunchError};
    use plexus::testing::netns::{ip, nft, root_or_skip, spawn_in_netns, Chain};

    const A_MAPPED: &str = "198.51.100.1:40000";
    const B_MAPPED: &str = "198.51.100.6:50000";
    /// A stand-in for the STUN server: a public router address nobody listens on.
    const STUN_A: &str = "198.51.100.2:3478";
    const STUN_B: &str = "198.51.100.5:3478";

    fn topology(tag: &str) -> (Chain, [String; 5]) {
        let pid = std::process::id() % 100_000;
        let n = ["a", "na", "r", "nb", "b"].map(|x| format!("crd-{tag}{pid}-{x}"));
        let chain = Chain { names: n.to_vec() };
        for ns in &n {
            ip(&format!("netns add {ns}"));
            ip(&format!("-n {ns} link set lo up"));
            for kv in ["net.ipv4.icmp_ratelimit=0", "net.ipv4.ip_forward=1"] {
                let st = std::process::Command::new("ip")
                    .args(["netns", "exec", ns, "sysctl", "-qw", kv])
                    .status()
                    .unwrap();
                assert!(st.success());
            }
        }
        let links = [
            (0, "10.81.0.2", 1, "10.81.0.1"),
            (1, "198.51.100.1", 2, "198.51.100.2"),
            (2, "198.51.100.5", 3, "198.51.100.6"),
            (3, "10.82.0.1", 4, "10.82.0.2"),
        ];
        for (i, (x, xa, y, ya)) in links.iter().enumerate() {
            ip(&format!(
                "-n {} link add e{i} type veth peer name f{i} netns {}",
                n[*x], n[*y]
            ));
            ip(&format!("-n {} addr add {xa}/30 dev e{i}", n[*x]));
            ip(&format!("-n {} addr add {ya}/30 dev f{i}", n[*y]));
            ip(&format!("-n {} link set e{i} up", n[*x]));
            ip(&format!("-n {} link set f{i} up", n[*y]));
        }
        ip(&format!("-n {} route add default via 10.81.0.1", n[0]));
        ip(&format!("-n {} route add default via 198.51.100.2", n[1]));
        ip(&format!("-n {} route add default via 198.51.100.5", n[3]));
        ip(&format!("-n {} route add default via 10.82.0.1", n[4]));
        for (ns, dev) in [(&n[1], "e1"), (&n[3], "f2")] {
            nft(
                ns,
                &format!(
                    "table ip crd {{\n chain post {{\n  type nat hook postrouting priority 100;\n  \
                     oifname \"{dev}\" masquerade\n }}\n}}\n"
                ),
            );
        }
        (chain, n)
    }

    struct Outcome {
        ttl: u8,
        inviter: Result<Connected, PunchError>,
        acceptor: Result<Connected, PunchError>,
    }

    fn corridor(tag: &str, hops: PunchHops) -> Outcome {
        let (_chain, n) = topology(tag);
        let secrets = Secrets {
            inviter: [0x31; 32],
            acceptor: [0x32; 32],
        };
        let sid = [0x77; 16];
        let cfg = Config {
            timeout: Duration::from_secs(3),
            ..Config::default()
        };
        let a_mapped: SocketAddr = A_MAPPED.parse().unwrap();
        let b_mapped: SocketAddr = B_MAPPED.parse().unwrap();
        let (punched_tx, punched_rx) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();

        let (s2, c2) = (secrets.clone(), cfg.clone());
        let inviter = spawn_in_netns(&n[0], move || {
            let s = UdpSocket::bind("10.81.0.2:40000").unwrap();
            // "Discovery": the mapping toward the STUN server exists before the invite.
            s.send_to(b"stun", STUN_A.parse::<SocketAddr>().unwrap())
                .unwrap();
            ready_tx.send(()).unwrap();
            punched_rx.recv().unwrap();
            let now = Instant::now();
            let core = Handshake::new(Role::Inviter, &s2, sid, vec![b_mapped], now, c2);
            run_handshake(&s, core, now + Duration::from_secs(5))
        });
        let acceptor = spawn_in_netns(&n[4], move || {
            ready_rx.recv().unwrap();
            let s = UdpSocket::bind("10.82.0.2:50000").unwrap();
            s.send_to(b"stun", STUN_B.parse::<SocketAddr>().unwrap())
                .unwrap();
            let target: SocketAddr = "198.51.100.5:9".parse().unwrap();
            let now = Instant::now();
            let mut core = Handshake::new(Role::Acceptor, &secrets, sid, vec![a_mapped], now, cfg);
            let hcfg = HopsConfig::default();
            let ttl = acceptor_punch(
                &s, &mut core, a_mapped, b_mapped, hops, target, &hcfg, false,
            )
            .unwrap()
            .expect("behind a NAT: a punch is sent");
            // Give the punch time to reach wherever it dies before the inviter starts.
            std::thread::sleep(Duration::from_millis(100));
            punched_tx.send(()).unwrap();
            (ttl, run_handshake(&s, core, now + Duration::from_secs(5)))
        });
        let (ttl, acceptor) = acceptor.join().unwrap();
        let inviter = inviter.join().unwrap();
        Outcome {
            ttl,
            inviter,
            acceptor,
        }
    }

    #[test]
    fn auto_ttl_opens_the_corridor_between_two_port_restricted_nats() {
        if !root_or_skip("auto_ttl_opens_the_corridor_between_two_port_restricted_nats") {
            return;
        }
        let o = corridor("k", PunchHops::Auto);
        assert_eq!(o.ttl, 2);
        let i = o.inviter.unwrap();
        let a = o.acceptor.unwrap();
        eprintln!(
            "auto TTL {}: inviter connected in {} ms, acceptor in {} ms",
            o.ttl,
            i.elapsed.as_millis(),
            a.elapsed.as_millis()
        );
        assert_eq!(i.peer, B_MAPPED.parse().unwrap());
        assert_eq!(a.peer, A_MAPPED.parse().unwrap());
        assert_eq!(i.key, a.key);
    }

    #[test]
    fn ttl_reaching_the_peer_nat_breaks_the_corridor() {
        if !root_or_skip("ttl_reaching_the_peer_nat_breaks_the_corridor") {
            return;
        }
        let o = corridor("m", PunchHops::Fixed(7));
        assert_eq!(o.ttl, 7);
        eprintln!(
            "fixed TTL 7: inviter {:?}, acceptor {:?}",
            o.inviter.as_ref().map(|c| c.peer),
            o.acceptor.as_ref().map(|c| c.peer)
        );
        assert!(matches!(o.acceptor, Err(PunchError::Timeout { .. })));
        assert!(matches!(o.inviter, Err(PunchError::Timeout { .. })));
    }
}
