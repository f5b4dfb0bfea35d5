//! The `dht` mediator plugin end to end (issue 15): `plexus invite` / `plexus accept`
//! between two NATed sites with the rendezvous carried by BEP 44 items on a mainline
//! testnet in the lab's `dht` namespace (`plexus-dht-testnet`, 30 nodes, one address
//! each; never the real network).
//!
//! The plugin library and the testnet binary come from `cargo build --workspace`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use crate::corridor::{demo_certs, id_of, read, wait};
use crate::lab::{plexus_bin, Lab};
use crate::plugins::{
    assert_both_succeeded, exchange_executor, plugin_lib, start_acceptor, start_side, stun_of,
    write,
};

/// The testnet runner next to the plexus binary.
fn testnet_bin() -> PathBuf {
    let p = Path::new(&plexus_bin()).with_file_name("plexus-dht-testnet");
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build --workspace`",
        p.display()
    );
    p
}

/// Testnet nodes in the lab's dht namespace; killed on drop (and by `lab.sh down`).
struct Nodes(Child);

impl Drop for Nodes {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `dht` namespace and its first address, from lab.json.
fn dht_host(lab: &Lab) -> (String, Ipv4Addr) {
    let d = &lab.json["dht"];
    let netns = d["netns"]
        .as_str()
        .expect("lab.json has dht.netns")
        .to_string();
    let ip = d["first_ip"].as_str().unwrap().parse().unwrap();
    (netns, ip)
}

/// Starts nodes on addresses `first + offset …` (count of them) at `port`, joining
/// `join` (or each other); returns once they are up.
fn start_nodes(
    lab: &Lab,
    offset: u8,
    count: u8,
    port: u16,
    join: &[String],
    observe: Option<&Path>,
) -> Nodes {
    let (netns, first) = dht_host(lab);
    let base = u32::from(first) + offset as u32;
    let ips = format!(
        "{}-{}",
        Ipv4Addr::from(base),
        Ipv4Addr::from(base + count as u32 - 1)
    );
    let bin = testnet_bin();
    let port_s = port.to_string();
    let joined = join.join(",");
    let mut args = vec![bin.to_str().unwrap(), "--ips", &ips, "--port", &port_s];
    if !join.is_empty() {
        args.extend(["--bootstrap", &joined]);
    }
    let obs;
    if let Some(o) = observe {
        obs = o.display().to_string();
        args.extend(["--observe", &obs]);
    }
    let mut child = lab.spawn(&netns, &args);
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        format!("ready {count}"),
        "the testnet did not start"
    );
    Nodes(child)
}

/// `HOST:PORT` of the first three nodes.
fn bootstrap_of(lab: &Lab, port: u16) -> Vec<String> {
    let (_, first) = dht_host(lab);
    (0..3)
        .map(|i| format!("{}:{port}", Ipv4Addr::from(u32::from(first) + i)))
        .collect()
}

fn q(s: impl std::fmt::Display) -> String {
    serde_json::to_string(&s.to_string()).unwrap()
}

/// `mediator:` through the dht plugin; `extra` adds settings lines (indented 6).
fn dht_mediator(so: &Path, peer_id: &str, bootstrap: &[String], extra: &str) -> String {
    format!(
        "mediator:\n  plugin:\n    path: {}\n    to: {}\n    settings:\n      bootstrap: [{}]\n      \
         poll_interval_ms: 1000\n      max_poll_interval_ms: 1000\n      request_timeout_ms: 1000\n{extra}",
        q(so.display()),
        q(peer_id),
        bootstrap.iter().map(q).collect::<Vec<_>>().join(", "),
    )
}

/// A profile with explicit certificate paths (relative to the profile's directory).
fn profile(
    who: &str,
    me: (&str, &str, &str),
    peer: (&str, &str),
    stun: &str,
    rest: &str,
) -> String {
    format!(
        "# {who}'s side, written by tests/e2e/dht.rs\n\
         host: {{ id: {}, cert: {}, key: {} }}\n\
         peer: {{ id: {}, cert: {} }}\n\
         stun: [{}]\n\
         timeouts: {{ rendezvous_s: 60 }}\n\
         replay: {{ state_file: {who}.replay }}\n{rest}",
        q(me.0),
        q(me.1),
        q(me.2),
        q(peer.0),
        q(peer.1),
        q(stun),
    )
}

/// A fresh EC identity from `plexus cert new`: (cert, key) paths.
fn ec_identity(dir: &Path, id: &str) -> (PathBuf, PathBuf) {
    let out = dir.join("certs");
    let o = std::process::Command::new(plexus_bin())
        .args(["cert", "new", "--id", id, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cert new: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stem = id.replace('/', "_");
    (
        out.join(format!("{stem}.pem")),
        out.join(format!("{stem}.key")),
    )
}

/// Invite → accept through the DHT between two port-restricted NATs, identities with
/// EC keys (`plexus cert new`), so the channel secret is the core's ECDH. The testnet
/// is two processes (20 + 10 nodes); the 10 stop while bob waits, before alice's
/// invite is even stored: a third of the DHT gone mid-test, and the pair still meets.
#[test]
fn dht_mediator_invite_accept_with_a_third_of_the_nodes_stopped() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-port", "b-port"]);
    let so = plugin_lib("dht", "dht");
    let dir = lab.scratch("dht-ec");
    let port = 6881;
    let core = start_nodes(lab, 0, 20, port, &[], None);
    let extra = start_nodes(lab, 20, 10, port, &bootstrap_of(lab, port), None);
    let boot = bootstrap_of(lab, port);
    let (alice_id, bob_id) = ("alice@lab.example/dht", "bob@lab.example/dht");
    let (ac, ak) = ec_identity(&dir, alice_id);
    let (bc, bk) = ec_identity(&dir, bob_id);
    let stun = stun_of(lab);
    let s = |p: &PathBuf| p.display().to_string();
    let pa = write(
        &dir.join("alice.yaml"),
        &profile(
            "alice",
            (alice_id, &s(&ac), &s(&ak)),
            (bob_id, &s(&bc)),
            &stun,
            &(dht_mediator(&so, bob_id, &boot, "") + &exchange_executor(&dir, "alice")),
        ),
    );
    let pb = write(
        &dir.join("bob.yaml"),
        &profile(
            "bob",
            (bob_id, &s(&bc), &s(&bk)),
            (alice_id, &s(&ac)),
            &stun,
            &(dht_mediator(&so, alice_id, &boot, "") + &exchange_executor(&dir, "bob")),
        ),
    );
    let mut bob = start_acceptor(lab, &dir, "b-port", &pb);
    drop(extra);
    let mut alice = start_side(lab, &dir, "a-port", "alice", &pa, false);
    let a = wait(&mut alice, Duration::from_secs(90));
    let b = wait(&mut bob, Duration::from_secs(30));
    assert_both_succeeded(&dir, a, b);
    let (alog, blog) = (read(dir.join("alice.log")), read(dir.join("bob.log")));
    assert!(alog.contains("dht: published message"), "{alog}");
    assert!(blog.contains("dht: found message"), "{blog}");
    assert!(
        alog.contains("dht: found message"),
        "alice reads bob's accept: {alog}"
    );
    drop(core);
}

/// RSA identities (the demo alice) have no key agreement: the plugin refuses to start
/// without a `secret_file`, and with one both sides meet. The S/MIME invite of an RSA
/// identity is larger than one 1000-byte item, so it travels as several. An observer
/// running every node logs every put: no key or salt carries the ids.
#[test]
fn dht_mediator_with_rsa_identities_needs_and_uses_a_secret_file() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-address", "b-address"]);
    let so = plugin_lib("dht", "dht");
    let dir = lab.scratch("dht-rsa");
    demo_certs(&dir);
    let port = 6882;
    let observed = dir.join("observer.log");
    let _nodes = start_nodes(lab, 30, 30, port, &[], Some(&observed));
    let (_, first) = dht_host(lab);
    let boot: Vec<String> = (30..33)
        .map(|i| format!("{}:{port}", Ipv4Addr::from(u32::from(first) + i)))
        .collect();
    let secret = dir.join("channel.secret");
    fs::write(&secret, [0x3c; 32]).unwrap();
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let stun = stun_of(lab);
    let side = |who: &str, peer: &str, secret_line: &str| {
        let me = (
            id_of(who),
            format!("certs/{who}.pem"),
            format!("certs/{who}.key"),
        );
        write(
            &dir.join(format!("{who}.yaml")),
            &profile(
                who,
                (&me.0, &me.1, &me.2),
                (&id_of(peer), &format!("certs/{peer}.pem")),
                &stun,
                &(dht_mediator(&so, &id_of(peer), &boot, secret_line)
                    + &exchange_executor(&dir, who)),
            ),
        )
    };
    // Without a secret file: a clear settings error naming the way out.
    let pa = side("alice", "bob", "");
    let o = lab.exec(
        &lab.site("a-address").host_netns,
        &[&plexus_bin(), "invite", "--profile", pa.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("secret_file"), "{err}");

    let line = format!("      secret_file: {}\n", q(secret.display()));
    let pa = side("alice", "bob", &line);
    let pb = side("bob", "alice", &line);
    let mut bob = start_acceptor(lab, &dir, "b-address", &pb);
    let mut alice = start_side(lab, &dir, "a-address", "alice", &pa, false);
    let a = wait(&mut alice, Duration::from_secs(90));
    let b = wait(&mut bob, Duration::from_secs(30));
    assert_both_succeeded(&dir, a, b);
    let blog = read(dir.join("bob.log"));
    let items: usize = blog
        .split("dht: found message ")
        .nth(1)
        .and_then(|r| r.split('(').nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bob logs the invite's item count:\n{blog}"));
    assert!(items >= 2, "an RSA invite spans several items, got {items}");

    let log = read(observed);
    assert!(
        log.lines().count() >= items,
        "the observer saw the puts:\n{log}"
    );
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for public in [id_of("alice"), id_of("bob"), "alice".into(), "bob".into()] {
        assert!(
            !log.contains(&hex(public.as_bytes())),
            "{public} is visible:\n{log}"
        );
    }
    // Nor the certificates' fingerprints (what identifies a peer publicly).
    for who in ["alice", "bob"] {
        let cert = plexus::identity::load_cert(&dir.join(format!("certs/{who}.pem"))).unwrap();
        let fp = plexus::identity::fingerprint_sha256(&cert)
            .replace(':', "")
            .to_lowercase();
        assert!(
            !log.contains(&fp[..16]),
            "{who}'s fingerprint is visible:\n{log}"
        );
    }
}
