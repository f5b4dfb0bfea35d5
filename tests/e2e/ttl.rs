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
