//! Component figures for the report, printed and never asserted (no timing assertions
//! anywhere): S/MIME seal/open per key type, the handshake under loss in virtual time,
//! and one call through the plugin ABI. `cargo bench -p plexus --bench figures`
//! (bench/run.sh part e); an argument runs only the sections whose name contains it.
//!
//! The plugin figure loads the fixture plugin from the same profile directory
//! (`cargo build --release --workspace` first); without it, it says so and skips.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plexus::mediator::{Mediator, Outcome};
use plexus::plugin::PluginMediator;
use plexus::punch::{Config, Event};
use plexus::rendezvous::message::Rendezvous;
use plexus::rendezvous::{Envelope, Freshness, Invite, NatFacts, ReplayGuard};
use plexus::testing::handshake_sim::{run, NetConfig};
use plexus::testing::DemoCerts;

fn main() {
    // `cargo bench` passes `--bench`; anything else not starting with `-` filters.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let sections: [(&str, fn()); 3] = [
        ("seal", seal),
        ("handshake_under_loss", handshake_under_loss),
        ("plugin_call", plugin_call),
    ];
    for (name, f) in sections {
        if filter.is_empty() || filter.iter().any(|w| name.contains(w.as_str())) {
            println!("{name}:");
            f();
        }
    }
}

/// Seal and open one invite per key pair (RSA and EC, both directions).
fn seal() {
    let demo = DemoCerts::new("figures");
    for (from, to) in [("alice", "carol"), ("alice", "bob"), ("bob", "alice")] {
        let s = Envelope::new(
            demo.identity(from),
            demo.peer(to),
            None,
            Freshness::default(),
            ReplayGuard::in_memory(),
        )
        .unwrap();
        let mut r = Envelope::new(
            demo.identity(to),
            demo.peer(from),
            None,
            Freshness::default(),
            ReplayGuard::in_memory(),
        )
        .unwrap();
        let mapped = vec![
            "203.0.113.7:40000".parse().unwrap(),
            "[2001:db8::7]:40000".parse().unwrap(),
        ];
        let n = 50u32;
        let (mut seal_t, mut open_t, mut size, mut plain) = (0f64, 0f64, 0, 0);
        for i in 0..n {
            let m = Invite::new(
                s.host_id().clone(),
                s.peer_id().clone(),
                1_800_000_000 + i as u64,
                mapped.clone(),
                vec![],
                NatFacts::default(),
            )
            .unwrap();
            plain = m.encode().unwrap().len();
            let t = Instant::now();
            let sealed = s.seal(&m).unwrap();
            seal_t += t.elapsed().as_secs_f64();
            size = sealed.len();
            let t = Instant::now();
            r.open(&sealed, 1_800_000_000 + i as u64).unwrap();
            open_t += t.elapsed().as_secs_f64();
        }
        println!(
            "    {from:>5} -> {to:<5}: message {plain} B, sealed {size} B, seal {:.2} ms, open {:.2} ms (mean of {n}, {} build)",
            seal_t * 1000.0 / n as f64,
            open_t * 1000.0 / n as f64,
            if cfg!(debug_assertions) { "debug" } else { "release" }
        );
    }
}

/// Virtual-time figures (10 ms one way, up to 20 ms jitter): how long until each side is
/// connected and how many datagrams it took.
fn handshake_under_loss() {
    println!(
        "    loss  runs  inviter p50/p95/max ms  acceptor p50/p95/max ms  datagrams/run  failed"
    );
    for loss in [0.0, 0.1, 0.2, 0.3] {
        let net = NetConfig {
            loss,
            jitter_ms: 20,
            ..Default::default()
        };
        let (mut inv, mut acc, mut sent, mut failed) = (Vec::new(), Vec::new(), 0u64, 0);
        let runs = 1000u64;
        for seed in 0..runs {
            let o = run(seed, net.clone(), Config::default());
            let at = |evs: &[(Duration, Event)]| {
                evs.iter()
                    .find(|e| matches!(e.1, Event::Connected { .. }))
                    .map(|e| e.0.as_millis() as u64)
            };
            match (at(&o.events[0]), at(&o.events[1])) {
                (Some(a), Some(b)) => {
                    inv.push(a);
                    acc.push(b);
                }
                _ => failed += 1,
            }
            sent += o.cores[0].stats().sent + o.cores[1].stats().sent;
        }
        let q = |v: &mut Vec<u64>| {
            if v.is_empty() {
                return "-".to_string();
            }
            v.sort_unstable();
            let p = |f: f64| v[((v.len() - 1) as f64 * f) as usize];
            format!("{}/{}/{}", p(0.5), p(0.95), v[v.len() - 1])
        };
        println!(
            "    {:>4.0}%  {runs:>4}  {:>22}  {:>23}  {:>13.1}  {failed}",
            loss * 100.0,
            q(&mut inv),
            q(&mut acc),
            sent as f64 / runs as f64
        );
    }
}

/// Cost of one call through the C ABI (send + receive + acknowledge of a 1 KiB message
/// through the Rust fixture plugin).
fn plugin_call() {
    // This binary is target/<profile>/deps/figures-…; the plugins are in target/<profile>.
    let exe = std::env::current_exe().unwrap();
    let dir: PathBuf = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let lib = dir.join("libplexus_fixture.so");
    if !lib.is_file() {
        println!(
            "    SKIPPED: {} is missing; build it first (`cargo build --release --workspace`)",
            lib.display()
        );
        return;
    }
    let mut m = PluginMediator::open(&lib, "mode: ok").unwrap();
    let payload = vec![7u8; 1024];
    let rounds = 100_000u32;
    let start = Instant::now();
    for _ in 0..rounds {
        m.send("bob", &payload).unwrap();
        let got = m.receive(Duration::ZERO).unwrap().unwrap();
        m.acknowledge(&got.id, Outcome::Handled).unwrap();
    }
    let per = start.elapsed() / rounds;
    println!(
        "    send+receive+acknowledge of 1 KiB through the plugin ABI: {per:?} per round ({rounds} rounds)"
    );
}
