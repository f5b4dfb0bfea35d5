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

use super::*;
use crate::testing::netns::{ip, nft, root, spawn_in_netns, Chain};

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
        let ttl = acceptor_punch(&s, &mut core, a_mapped, b_mapped, hops, target, &hcfg)
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
    if !root() {
        eprintln!("SKIP: needs root for network namespaces");
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
    if !root() {
        eprintln!("SKIP: needs root for network namespaces");
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
