//! The `dht` plugin against real mainline nodes: `plexus-dht-testnet` processes on
//! loopback addresses (never the real network). Need no root and no lab.

use plexus_dht::codec::{self, Chunk, Schedule, DAY};
use plexus_dht::DhtMediator;
use plexus_plugin_sdk::{Channel, MediatorPlugin, Outcome};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ALICE: &str = "alice@lab.example/home";
const BOB: &str = "bob@lab.example/office";

/// A testnet process; killed on drop.
struct Testnet {
    child: Child,
    bootstrap: Vec<String>,
}

impl Drop for Testnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP port free on 127.0.0.1 now (the nodes bind other loopback addresses, on
/// which it is free too unless something binds 0.0.0.0 there meanwhile).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `count` nodes on 127.0.0.`first`… port `port`, joining through `join` if given.
fn testnet(first: u8, count: u8, port: u16, join: &[String], observe: Option<&PathBuf>) -> Testnet {
    let ips = format!("127.0.0.{first}-127.0.0.{}", first + count - 1);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plexus-dht-testnet"));
    cmd.args(["--ips", &ips, "--port", &port.to_string()]);
    if !join.is_empty() {
        cmd.args(["--bootstrap", &join.join(",")]);
    }
    if let Some(f) = observe {
        cmd.arg("--observe").arg(f);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("start plexus-dht-testnet");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        format!("ready {count}"),
        "testnet did not start"
    );
    let bootstrap = (0..count.min(3))
        .map(|i| format!("127.0.0.{}:{port}", first + i))
        .collect();
    Testnet { child, bootstrap }
}

fn channel(me: &str, peer: &str, secret: &[u8]) -> Channel {
    Channel {
        host_id: me.into(),
        peer_id: peer.into(),
        secret: Some(secret.to_vec()),
    }
}

fn settings(bootstrap: &[String]) -> String {
    format!(
        "bootstrap: [{}]\npoll_interval_ms: 100\nmax_poll_interval_ms: 200\nrequest_timeout_ms: 1000\n",
        bootstrap.join(", ")
    )
}

fn pair(bootstrap: &[String], secret: &[u8]) -> (DhtMediator, DhtMediator) {
    let s = settings(bootstrap);
    (
        DhtMediator::create_for(&s, &channel(ALICE, BOB, secret)).unwrap(),
        DhtMediator::create_for(&s, &channel(BOB, ALICE, secret)).unwrap(),
    )
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("plexus-dht-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn message(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

#[test]
fn a_message_larger_than_one_item_goes_both_ways_and_is_returned_once() {
    let net = testnet(10, 30, free_port(), &[], None);
    let (mut alice, mut bob) = pair(&net.bootstrap, &[0x42; 32]);
    let invite = message(2500); // 3 items
    alice.send(BOB, &invite).unwrap();
    let got = bob
        .receive(Duration::from_secs(20))
        .unwrap()
        .expect("bob gets the invite");
    assert_eq!(got.sealed, invite);
    assert_eq!(got.from, ALICE);
    bob.acknowledge(&got.id, Outcome::Handled).unwrap();
    assert!(
        bob.receive(Duration::from_millis(500)).unwrap().is_none(),
        "a message is returned once"
    );
    let answer = message(700);
    bob.send(ALICE, &answer).unwrap();
    let got = alice
        .receive(Duration::from_secs(20))
        .unwrap()
        .expect("alice gets the answer");
    assert_eq!(got.sealed, answer);
    // alice never reads her own message as one from bob.
    assert!(alice.receive(Duration::from_millis(300)).unwrap().is_none());
    // Too large for 64 items: refused before anything is stored.
    let e = alice.send(BOB, &message(codec::MAX_TOTAL)).unwrap_err();
    assert!(e.message().contains("does not fit"), "{e}");
}

#[test]
fn a_third_of_the_nodes_stopping_mid_test_does_not_stop_the_channel() {
    let port = free_port();
    let core = testnet(40, 20, port, &[], None);
    let extra = testnet(60, 10, port, &core.bootstrap, None);
    let (mut alice, mut bob) = pair(&core.bootstrap, &[0x17; 32]);
    alice.send(BOB, &message(1500)).unwrap();
    assert_eq!(
        bob.receive(Duration::from_secs(20))
            .unwrap()
            .unwrap()
            .sealed,
        message(1500)
    );
    drop(extra); // 10 of 30 nodes gone, some of them holding the items
    bob.send(ALICE, &message(2100)).unwrap();
    let got = alice.receive(Duration::from_secs(30)).unwrap();
    assert_eq!(
        got.expect("alice still gets bob's answer").sealed,
        message(2100)
    );
}

/// What someone without the channel secret can compute: a schedule over secrets made
/// from public data only (the ids, nothing, hashes of the ids and of the two demo
/// certificates, which a peer publishes).
fn public_guesses() -> Vec<Schedule> {
    let sha = |b: &[u8]| <sha2::Sha256 as sha2::Digest>::digest(b).to_vec();
    let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../certs/demo");
    let pem = |f: &str| std::fs::read(certs.join(f)).unwrap();
    let (a, b) = (pem("alice.pem"), pem("bob.pem"));
    let ids = format!("{ALICE}{BOB}");
    vec![
        Schedule::new(ids.as_bytes()),
        Schedule::new(&[0; 32]),
        Schedule::new(&sha(ids.as_bytes())),
        Schedule::new(&sha(&[a.clone(), b.clone()].concat())),
        Schedule::new(&sha(&[b.clone(), a.clone()].concat())),
        Schedule::new(&sha(&a)),
        Schedule::new(&sha(&b)),
    ]
}

#[test]
fn items_written_without_the_channel_secret_are_ignored() {
    let net = testnet(80, 30, free_port(), &[], None);
    let (mut alice, mut bob) = pair(&net.bootstrap, &[0x99; 32]);
    // mallory knows everything public and writes well-formed chunks where a scheme
    // without the secret would put them, and has a peer with the wrong secret.
    let mallory = mainline::Dht::builder()
        .bootstrap(&net.bootstrap)
        .build()
        .unwrap();
    let day = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / DAY;
    for (i, guess) in public_guesses().iter().enumerate() {
        let key = guess.message_key(ALICE, BOB, day);
        let id = [i as u8; 12];
        let ct = codec::seal(&key, &id, &codec::aad(ALICE, BOB, day), b"forged invite");
        let chunk: Chunk = codec::split(id, &ct).unwrap().remove(0);
        let slot = guess.slot(ALICE, BOB, day, 0);
        let item = mainline::MutableItem::new(
            mainline::SigningKey::from_bytes(&slot.seed),
            &chunk.encode(),
            1,
            Some(&slot.salt),
        );
        mallory.put_mutable(item, None).unwrap();
    }
    let mut eve =
        DhtMediator::create_for(&settings(&net.bootstrap), &channel(ALICE, BOB, &[0x98; 32]))
            .unwrap();
    eve.send(BOB, b"eve has the wrong secret").unwrap();
    assert!(
        bob.receive(Duration::from_secs(2)).unwrap().is_none(),
        "nothing written without the secret reaches bob"
    );
    alice.send(BOB, b"the real invite").unwrap();
    let got = bob.receive(Duration::from_secs(20)).unwrap().unwrap();
    assert_eq!(got.sealed, b"the real invite");
}

#[test]
fn an_observer_of_every_put_sees_nothing_derived_from_public_data() {
    let log = tmp("observe").join("puts.log");
    let _ = std::fs::remove_file(&log);
    let net = testnet(120, 30, free_port(), &[], Some(&log));
    let secret = [0x5a; 32];
    let (mut alice, mut bob) = pair(&net.bootstrap, &secret);
    alice.send(BOB, &message(2500)).unwrap();
    bob.send(ALICE, &message(300)).unwrap();
    assert!(bob.receive(Duration::from_secs(20)).unwrap().is_some());
    assert!(alice.receive(Duration::from_secs(20)).unwrap().is_some());
    let text = std::fs::read_to_string(&log).unwrap();
    let seen: HashSet<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let f = |k: &str| l.split(k).nth(1)?.split(' ').next().map(str::to_string);
            Some((f("key=")?, f("salt=")?))
        })
        .collect();
    // 3 + 1 items, each stored on several nodes.
    assert_eq!(seen.len(), 4, "the observer saw every item:\n{text}");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let day = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / DAY;
    // The real schedule is what was stored…
    let real: HashSet<(String, String)> = (0..3)
        .map(|i| Schedule::new(&secret).slot(ALICE, BOB, day, i))
        .chain([Schedule::new(&secret).slot(BOB, ALICE, day, 0)])
        .map(|s| {
            let k = mainline::SigningKey::from_bytes(&s.seed)
                .verifying_key()
                .to_bytes();
            (hex(&k), hex(&s.salt))
        })
        .collect();
    assert_eq!(seen, real);
    // …and nothing computable from public data matches any key or salt, nor does
    // any id or its hash appear in them.
    for guess in public_guesses() {
        for (a, b) in [(ALICE, BOB), (BOB, ALICE)] {
            for d in [day - 1, day, day + 1] {
                for i in 0..4 {
                    let s = guess.slot(a, b, d, i);
                    let k = mainline::SigningKey::from_bytes(&s.seed)
                        .verifying_key()
                        .to_bytes();
                    for (key, salt) in &seen {
                        assert_ne!(key, &hex(&k));
                        assert_ne!(salt, &hex(&s.salt));
                    }
                }
            }
        }
    }
    for public in [ALICE, BOB, "alice", "bob", "lab.example"] {
        let h = hex(&<sha2::Sha256 as sha2::Digest>::digest(public.as_bytes()));
        for (key, salt) in &seen {
            for needle in [hex(public.as_bytes()), h[..16].to_string()] {
                assert!(!key.contains(&needle) && !salt.contains(&needle));
            }
        }
    }
    // The stored values are ciphertext: the sealed bytes never appear in clear.
    assert!(!text.contains(&hex(&message(300)[..16])));
}
