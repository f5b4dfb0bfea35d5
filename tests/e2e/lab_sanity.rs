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

/// Nothing routes out of the lab: the public router has no default route, and no
/// lab namespace has an interface other than the lab's own links.
#[test]
fn nothing_routes_out_of_the_lab() {
    let lab = lab_or_skip!();
    let inet = format!("{}-inet", lab.name);
    for outside in ["8.8.8.8", "192.168.1.1", "10.200.0.1"] {
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
