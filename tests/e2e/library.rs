//! The library's entry point in the lab: `plexus/examples/punch.rs` (a profile in,
//! `Session::from_profile(..)?.invite()` / `.accept()`, the punched socket used
//! directly, no executor) connects two NATed sites and exchanges datagrams.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::corridor::{demo_certs, read, wait, Reaped};
use crate::lab::plexus_bin;
use crate::plugins::{file_profiles, plugin_lib};

/// The example's binary, built next to the plexus binary by `cargo build
/// --workspace --all-targets` (or `cargo build -p plexus --examples`).
fn example_bin() -> PathBuf {
    let bin = PathBuf::from(plexus_bin());
    let p = bin.parent().unwrap().join("examples/punch");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p plexus --examples`",
        p.display()
    );
    p
}

#[test]
fn library_example_punches_and_owns_the_socket() {
    let lab = lab_or_skip!();
    let (inviter, acceptor) = ("a-port", "b-port");
    let _c = lab.claim(&[inviter, acceptor]);
    let so = plugin_lib("file", "file");
    let dir = lab.scratch("library-example");
    let _certs = demo_certs(&dir);
    let shared = dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let (pa, pb) = file_profiles(lab, &so, &dir, &shared, false);
    let spawn = |site: &str, who: &str, mode: &str, profile: &PathBuf| {
        let out = std::fs::File::create(dir.join(format!("{who}.out"))).unwrap();
        let log = std::fs::File::create(dir.join(format!("{who}.log"))).unwrap();
        lab.command(&lab.site(site).host_netns, example_bin().to_str().unwrap())
            .arg(mode)
            .arg(profile)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap()
    };
    // No need to wait for bob: the invite waits in the folder until he reads it.
    let mut bob = Reaped(spawn(acceptor, "bob", "accept", &pb));
    let mut alice = spawn(inviter, "alice", "invite", &pa);
    let a = wait(&mut alice, Duration::from_secs(90));
    let b = wait(&mut bob.0, Duration::from_secs(30));
    let dump = || {
        format!(
            "--- alice {a:?}\n{}{}\n--- bob {b:?}\n{}{}",
            read(dir.join("alice.out")),
            read(dir.join("alice.log")),
            read(dir.join("bob.out")),
            read(dir.join("bob.log"))
        )
    };
    assert!(
        a.map(|s| s.success()).unwrap_or(false) && b.map(|s| s.success()).unwrap_or(false),
        "both sides should punch and exchange greetings:\n{}",
        dump()
    );
    for (who, peer) in [("alice", "bob"), ("bob", "alice")] {
        let out = read(dir.join(format!("{who}.out")));
        assert!(
            out.contains("key of 256 bits")
                && out.contains(&format!(
                    "received \"hello from {}",
                    crate::corridor::id_of(peer)
                )),
            "{who}: {}",
            dump()
        );
    }
}
