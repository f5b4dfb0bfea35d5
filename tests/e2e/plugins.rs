//! Dynamic-library plugins end to end (issue 6): `plexus invite` / `plexus accept` in
//! the lab with both sides configured by YAML profiles only, the rendezvous carried by
//! the `file` mediator plugin (a directory both hosts see: the lab's namespaces share
//! one filesystem, which stands for a synced folder), and the `udp-bridge` executor
//! plugin carrying a UDP application's datagrams over the punched path. Plus
//! `plexus profile check` on such a profile.
//!
//! The plugin libraries are loaded from next to the plexus binary (target/debug), so
//! build the whole workspace first: `cargo build --workspace`.

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::corridor::{demo_certs, id_of, read, wait, wait_for_text};
use crate::lab::{plexus_bin, Lab};

/// `libplexus_<name>.so` next to the plexus binary, built from `plugins/<crate_dir>`, or
/// a panic saying how to build it. `cargo test -p plexus` does not rebuild plugins, so a
/// library older than its sources (or the SDK's) is refused as stale too.
pub(crate) fn plugin_lib(name: &str, crate_dir: &str) -> PathBuf {
    let so = plugin_path(name);
    let build = "build them first with `cargo build --workspace` (tests/run-all.sh does)";
    let built = fs::metadata(&so)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "plugin library {} is missing: the e2e tests load plugins from next to the \
                 plexus binary; {build}",
                so.display()
            )
        });
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let newest = [crate_dir, "sdk", "abi"]
        .iter()
        .flat_map(|d| {
            let d = plugins.join(d);
            let src = fs::read_dir(d.join("src")).into_iter().flatten().flatten();
            src.map(|e| e.path()).chain([d.join("Cargo.toml")])
        })
        .filter_map(|p| {
            fs::metadata(&p)
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, p))
        })
        .max();
    if let Some((t, p)) = newest {
        assert!(
            t <= built,
            "plugin library {} is older than {}: {build}",
            so.display(),
            p.display()
        );
    }
    so
}

fn plugin_path(name: &str) -> PathBuf {
    let bin = PathBuf::from(plexus_bin());
    bin.parent()
        .unwrap_or_else(|| Path::new("."))
        .join(format!("libplexus_{name}.so"))
}

fn exchange_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lab/exchange.py")
}

/// alice's and bob's profiles (`dir/alice.yaml`, `dir/bob.yaml`) through the file
/// plugin on `shared`; with `exchange`, exchange.py is their executor, else they have
/// none (a library caller runs nothing on the path).
pub(crate) fn file_profiles(
    lab: &Lab,
    so: &Path,
    dir: &Path,
    shared: &Path,
    exchange: bool,
) -> (PathBuf, PathBuf) {
    let profile = |who: &str, peer: &str| {
        let executor = if exchange {
            exchange_executor(dir, who)
        } else {
            String::new()
        };
        write(
            &dir.join(format!("{who}.yaml")),
            &profile_yaml(
                who,
                peer,
                &stun_of(lab),
                &file_mediator(so, shared, who, peer, ""),
                &executor,
            ),
        )
    };
    (profile("alice", "bob"), profile("bob", "alice"))
}

/// `executor:` running exchange.py, its result in `dir/WHO.exchange.json` (passed in
/// the executor's `env:`: it inherits none of plexus's environment).
pub(crate) fn exchange_executor(dir: &Path, who: &str) -> String {
    format!(
        "executor:\n  command:\n    program: {}\n    env: {{ EXCHANGE_OUT: {}, EXCHANGE_SECONDS: \"8\" }}\n",
        q(exchange_py().display()),
        q(dir.join(format!("{who}.exchange.json")).display())
    )
}

/// A YAML scalar for any string (JSON strings are valid YAML flow scalars).
fn q(s: impl std::fmt::Display) -> String {
    serde_json::to_string(&s.to_string()).unwrap()
}

/// The file mediator's address for a demo identity.
fn address_of(who: &str) -> &'static str {
    match who {
        "alice" => "alice@lab.example",
        "bob" => "bob@lab.example",
        other => panic!("no address for {other}"),
    }
}

/// `mediator:` through the file plugin on `shared`.
pub(crate) fn file_mediator(
    so: &Path,
    shared: &Path,
    who: &str,
    peer: &str,
    extra: &str,
) -> String {
    format!(
        "mediator:\n  plugin:\n    path: {}\n    to: {}\n    settings:\n      dir: {}\n      \
         address: {}\n      poll_interval_ms: 50\n{extra}",
        q(so.display()),
        q(address_of(peer)),
        q(shared.display()),
        q(address_of(who)),
    )
}

/// A whole profile. Certificates and the replay state are relative paths: they resolve
/// against the profile's directory.
pub(crate) fn profile_yaml(
    who: &str,
    peer: &str,
    stun: &str,
    mediator: &str,
    executor: &str,
) -> String {
    format!(
        "# {who}'s side, written by tests/e2e/plugins.rs\n\
         host: {{ id: {}, cert: certs/{who}.pem, key: certs/{who}.key }}\n\
         peer: {{ id: {}, cert: certs/{peer}.pem }}\n\
         stun: [{}]\n\
         timeouts: {{ rendezvous_s: 60 }}\n\
         replay: {{ state_file: {who}.replay }}\n\
         {mediator}{executor}",
        q(id_of(who)),
        q(id_of(peer)),
        q(stun),
    )
}

pub(crate) fn write(path: &Path, text: &str) -> PathBuf {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.to_path_buf()
}

pub(crate) fn stun_of(lab: &Lab) -> String {
    format!("{}:{}", lab.stun.ips[0], lab.stun.port)
}

/// Start `plexus accept --once` (bob) and, once it waits, `plexus invite` (alice), each
/// with nothing but its profile on the command line.
fn start_pair(
    lab: &Lab,
    dir: &Path,
    sites: (&str, &str),
    profiles: (&Path, &Path),
) -> (Child, Child) {
    let bob = start_acceptor(lab, dir, sites.1, profiles.1);
    (
        start_side(lab, dir, sites.0, "alice", profiles.0, false),
        bob,
    )
}

/// Start `plexus accept --once` as bob and return once it waits for invites.
pub(crate) fn start_acceptor(lab: &Lab, dir: &Path, site: &str, profile: &Path) -> Child {
    let mut bob = start_side(lab, dir, site, "bob", profile, true);
    if !wait_for_text(
        &dir.join("bob.log"),
        "waiting for invites",
        Duration::from_secs(20),
    ) {
        let st = wait(&mut bob, Duration::from_secs(1));
        panic!(
            "the acceptor never started waiting ({st:?}):\n{}",
            read(dir.join("bob.log"))
        );
    }
    bob
}

/// Start one side with its profile; output in `dir/WHO.out`, log in `dir/WHO.log`.
pub(crate) fn start_side(
    lab: &Lab,
    dir: &Path,
    site: &str,
    who: &str,
    profile: &Path,
    accept: bool,
) -> Child {
    let log = fs::File::create(dir.join(format!("{who}.log"))).unwrap();
    let out = fs::File::create(dir.join(format!("{who}.out"))).unwrap();
    let mut c = lab.command(&lab.site(site).host_netns, &plexus_bin());
    c.arg(if accept { "accept" } else { "invite" })
        .args(["--log-level", "debug", "--profile"])
        .arg(profile);
    if accept {
        c.arg("--once");
    }
    c.stdout(Stdio::from(out))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start plexus in the lab")
}

fn dump(dir: &Path, alice: Option<ExitStatus>, bob: Option<ExitStatus>) -> String {
    let side = |who: &str| {
        format!(
            "{}\n{}",
            read(dir.join(format!("{who}.out"))),
            read(dir.join(format!("{who}.log")))
        )
    };
    format!(
        "--- alice (inviter) {alice:?}\n{}\n--- bob (acceptor) {bob:?}\n{}",
        side("alice"),
        side("bob")
    )
}

pub(crate) fn assert_both_succeeded(
    dir: &Path,
    alice: Option<ExitStatus>,
    bob: Option<ExitStatus>,
) {
    assert!(
        alice.and_then(|s| s.code()) == Some(0) && bob.and_then(|s| s.code()) == Some(0),
        "both sides should connect and their executors succeed (exit 0):\n{}",
        dump(dir, alice, bob)
    );
}

/// Files in `dir` with their contents, sorted by name.
fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Invite → accept through the `file` mediator plugin, both sides from YAML profiles,
/// `exchange.py` as the executor. The shared folder also holds things that are not
/// ours to touch (a note, a message for other peers, a sync tool's partial file named
/// like a message to bob); afterwards exactly those remain, unchanged: each side
/// removed only the message it consumed.
#[test]
fn file_mediator_invite_accept() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-port", "b-address"]);
    let so = plugin_lib("file", "file");
    let dir = lab.scratch("plugins-file");
    demo_certs(&dir);
    let shared = dir.join("shared");
    fs::create_dir(&shared).unwrap();
    let decoys: Vec<(String, Vec<u8>)> = vec![
        ("notes.txt".into(), b"not plexus's business\n".to_vec()),
        (
            "carol@lab.example~dave@lab.example~00000000000000000001-1-0000000001-0000000000000001.plexus"
                .into(),
            b"for someone else".to_vec(),
        ),
        (
            ".syncthing.bob@lab.example~alice@lab.example~00000000000000000002-1-0000000001-0000000000000002.plexus.tmp"
                .into(),
            b"half-synced".to_vec(),
        ),
    ];
    for (name, body) in &decoys {
        fs::write(shared.join(name), body).unwrap();
    }
    let (pa, pb) = file_profiles(lab, &so, &dir, &shared, true);
    let (mut alice, mut bob) = start_pair(lab, &dir, ("a-port", "b-address"), (&pa, &pb));
    let a = wait(&mut alice, Duration::from_secs(90));
    let b = wait(&mut bob, Duration::from_secs(30));
    assert_both_succeeded(&dir, a, b);

    for who in ["alice", "bob"] {
        let text = read(dir.join(format!("{who}.exchange.json")));
        let ex: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "{who}'s executor left no result ({e}):\n{}",
                dump(&dir, a, b)
            )
        });
        assert!(
            ex["received"].is_object() && ex["acknowledged"] == true,
            "{who}'s executor should have exchanged datagrams: {ex}\n{}",
            dump(&dir, a, b)
        );
        assert_eq!(ex["key_len"], 64, "PLEXUS_KEY is a 256-bit hex key");
    }
    let (alog, blog) = (read(dir.join("alice.log")), read(dir.join("bob.log")));
    assert!(
        alog.contains("invite sent to bob@lab.example via file"),
        "the invite went through the file plugin:\n{alog}"
    );
    assert!(
        blog.contains("accept sent to alice@lab.example via file"),
        "the accept went through the file plugin:\n{blog}"
    );
    assert!(
        !blog.contains("refused a rendezvous message") && !alog.contains("refused a rendezvous"),
        "nothing in the folder but the two real messages should have been opened:\n{}",
        dump(&dir, a, b)
    );

    let mut want = decoys.clone();
    want.sort();
    let left = listing(&shared);
    assert_eq!(
        left.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        want.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        "the shared folder should hold only what was there before: both messages consumed \
         and removed, nothing else touched"
    );
    assert_eq!(left, want, "files not ours must be left unchanged");
    eprintln!(
        "plugins-file: inviter: {}",
        read(dir.join("alice.out")).trim()
    );
}

/// What one test application saw.
#[derive(Debug, Default)]
struct AppLog {
    /// Sequence numbers of well-formed datagrams received from the other application.
    seqs: std::collections::BTreeSet<u32>,
    /// Sizes of those datagrams.
    sizes: std::collections::BTreeSet<usize>,
    /// Where they came from (the local bridge).
    sources: std::collections::BTreeSet<SocketAddr>,
    /// Empty datagrams (bridge keepalives must never reach the application).
    empty: u32,
    /// Anything else (e.g. a late handshake packet the bridge passed on).
    other: u32,
    sent: u32,
}

impl AppLog {
    /// Count one received datagram; its sequence number when it is an intact `kind`.
    fn record(&mut self, kind: &str, data: &[u8], src: SocketAddr, token: u64) -> Option<u32> {
        if data.is_empty() {
            self.empty += 1;
            return None;
        }
        let seq = parse_app(kind, data, token);
        match seq {
            Some(seq) => {
                self.seqs.insert(seq);
                self.sizes.insert(data.len());
                self.sources.insert(src);
            }
            None => self.other += 1,
        }
        seq
    }
}

const APP_SIZE: usize = 1200;

/// `prefix seq token` padded to APP_SIZE with a pattern derived from seq.
fn app_datagram(prefix: &str, seq: u32, token: u64) -> Vec<u8> {
    let mut d = format!("{prefix} {seq} {token:016x} ").into_bytes();
    let mut x = seq.wrapping_mul(2_654_435_761);
    while d.len() < APP_SIZE {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        d.push(b'a' + (x >> 16) as u8 % 26);
    }
    d
}

/// The seq of a datagram equal to `app_datagram(prefix, seq, token)` for some seq.
fn parse_app(prefix: &str, d: &[u8], token: u64) -> Option<u32> {
    let text = std::str::from_utf8(d).ok()?;
    let mut parts = text.strip_prefix(prefix)?.split(' ');
    let _ = parts.next()?;
    let seq: u32 = parts.next()?.parse().ok()?;
    (app_datagram(prefix, seq, token) == d).then_some(seq)
}

fn app_socket(bind: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("app cannot bind {bind}: {e}"));
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

/// Alice's application: pings through its bridge until `want` distinct pongs came back
/// (each must be exactly the pong for one of its pings), or `limit` passes.
fn pinger(
    bind: SocketAddr,
    bridge: SocketAddr,
    token: u64,
    want: usize,
    limit: Duration,
) -> AppLog {
    let s = app_socket(bind);
    let mut log = AppLog::default();
    let mut buf = vec![0u8; 65536];
    let end = Instant::now() + limit;
    let mut next_send = Instant::now();
    while Instant::now() < end && log.seqs.len() < want {
        if Instant::now() >= next_send {
            // Before the bridges are up these go nowhere; that is what retries are for.
            let _ = s.send_to(&app_datagram("ping", log.sent, token), bridge);
            log.sent += 1;
            next_send = Instant::now() + Duration::from_millis(100);
        }
        let Ok((n, src)) = s.recv_from(&mut buf) else {
            continue;
        };
        log.record("pong", &buf[..n], src, token);
    }
    log
}

/// Bob's application: a server that only listens; answers each intact ping with its
/// pong, to whoever sent it (its bridge), until `stop`.
fn ponger(bind: SocketAddr, token: u64, stop: &AtomicBool, limit: Duration) -> AppLog {
    let s = app_socket(bind);
    let mut log = AppLog::default();
    let mut buf = vec![0u8; 65536];
    let end = Instant::now() + limit;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        let Ok((n, src)) = s.recv_from(&mut buf) else {
            continue;
        };
        if let Some(seq) = log.record("ping", &buf[..n], src, token) {
            let _ = s.send_to(&app_datagram("pong", seq, token), src);
            log.sent += 1;
        }
    }
    log
}

/// The `udp-bridge` executor plugin on a real corridor (port-restricted NAT ×
/// address-restricted NAT): a UDP application on each side talks only to its local
/// bridge port, and datagrams go from alice's application to bob's and back across the
/// punched path. The bridges stop when the stop file appears, and both plexus exit 0.
#[test]
fn udp_bridge_carries_an_application_across_the_corridor() {
    let lab = lab_or_skip!();
    let (inviter_site, acceptor_site) = ("a-address", "b-port");
    let _c = lab.claim(&[inviter_site, acceptor_site]);
    let file_so = plugin_lib("file", "file");
    let bridge_so = plugin_lib("udp_bridge", "udp-bridge");
    let dir = lab.scratch("plugins-udp-bridge");
    demo_certs(&dir);
    let shared = dir.join("shared");
    fs::create_dir(&shared).unwrap();
    let stop_file = dir.join("stop");
    let bridge: SocketAddr = "127.0.0.1:41820".parse().unwrap();
    let app: SocketAddr = "127.0.0.1:41821".parse().unwrap();
    // Bob's application only listens (`app:` tells its bridge where it is); alice's is
    // learned from its first datagram.
    let executor = |app_setting: &str| {
        format!(
            "executor:\n  plugin:\n    path: {}\n    settings:\n      local: {}\n{app_setting}      \
             keepalive_secs: 1\n      idle_timeout_secs: 30\n      max_duration_secs: 120\n      \
             stop_file: {}\n",
            q(bridge_so.display()),
            q(bridge),
            q(stop_file.display()),
        )
    };
    let profile = |who: &str, peer: &str, app_setting: &str| {
        write(
            &dir.join(format!("{who}.yaml")),
            &profile_yaml(
                who,
                peer,
                &stun_of(lab),
                &file_mediator(&file_so, &shared, who, peer, ""),
                &executor(app_setting),
            ),
        )
    };
    let pa = profile("alice", "bob", "");
    let pb = profile("bob", "alice", &format!("      app: {}\n", q(app)));

    let token = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id());
    let stop = Arc::new(AtomicBool::new(false));
    let limit = Duration::from_secs(90);
    let ns_b = lab.site(acceptor_site).host_netns.clone();
    let stop2 = stop.clone();
    let bob_app =
        std::thread::spawn(move || lab.in_ns(&ns_b, move || ponger(app, token, &stop2, limit)));
    let (mut alice, mut bob) = start_pair(lab, &dir, (inviter_site, acceptor_site), (&pa, &pb));
    let ns_a = lab.site(inviter_site).host_netns.clone();
    let alice_app =
        std::thread::spawn(move || lab.in_ns(&ns_a, move || pinger(app, bridge, token, 5, limit)));
    let got_a = alice_app.join().expect("alice's application panicked");
    stop.store(true, Ordering::Relaxed);
    let got_b = bob_app.join().expect("bob's application panicked");
    fs::write(&stop_file, b"").unwrap();
    let a = wait(&mut alice, Duration::from_secs(30));
    let b = wait(&mut bob, Duration::from_secs(30));
    let _ = fs::remove_file(&stop_file);
    eprintln!("plugins-udp-bridge: alice's app {got_a:?}\nbob's app {got_b:?}");

    assert!(
        got_b.seqs.len() >= 5 && got_a.seqs.len() >= 5,
        "five pings should cross to bob's application and their pongs come back\n\
         alice's app: {got_a:?}\nbob's app: {got_b:?}\n{}",
        dump(&dir, a, b)
    );
    assert!(
        got_a.seqs.is_subset(&got_b.seqs),
        "every pong answers a ping bob's application received"
    );
    assert_eq!(
        got_b.sizes,
        [APP_SIZE].into(),
        "datagrams keep their size across the bridges"
    );
    assert_eq!(got_a.sizes, [APP_SIZE].into());
    assert_eq!(
        got_b.sources,
        [bridge].into(),
        "bob's application hears only its local bridge"
    );
    assert_eq!(got_a.sources, [bridge].into());
    assert_eq!(
        (got_a.empty, got_b.empty),
        (0, 0),
        "bridge keepalives never reach an application"
    );
    assert_both_succeeded(&dir, a, b);
    let (alog, blog) = (read(dir.join("alice.log")), read(dir.join("bob.log")));
    let bob_public = lab.site(acceptor_site).public_ip;
    assert!(
        alog.contains(&format!("connected to {bob_public}:")),
        "alice's corridor should lead to bob's NAT's public address {bob_public}:\n{alog}"
    );
    for (who, log) in [("alice", &alog), ("bob", &blog)] {
        assert!(
            log.contains("executor udp-bridge finished") && log.contains("stop_file appeared"),
            "{who}'s bridge should stop because of the stop file:\n{log}"
        );
    }
}

/// `plexus profile check` on a plugin profile: exit 0, the resolved settings printed
/// (relative paths resolved against the profile's directory), a password-like plugin
/// setting never printed; an unknown key is exit 2 naming the key and its line, and so
/// is a plugin library that is not there. Needs no lab (and no root): it only reads files.
#[test]
fn profile_check_resolves_masks_and_names_unknown_keys() {
    let dir = plexus::testing::TempDir::new("e2e-plugins-check");
    demo_certs(&dir);
    let so = plugin_lib("file", "file");
    let shared = dir.join("shared");
    let secret = "plx-e2e-Hunter2-do-not-print";
    let good = profile_yaml(
        "alice",
        "bob",
        "203.0.113.3:3478",
        &file_mediator(
            &so,
            &shared,
            "alice",
            "bob",
            &format!("      password: {}\n", q(secret)),
        ),
        &format!(
            "executor:\n  command:\n    program: {}\n",
            q(exchange_py().display())
        ),
    );
    let path = write(&dir.join("alice.yaml"), &good);
    let out = std::process::Command::new(plexus_bin())
        .args(["profile", "check"])
        .arg(&path)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "profile check should pass:\n{stdout}\n{stderr}"
    );
    for want in [
        format!("profile: {}", path.display()),
        format!(
            "host: alice@lab.example/home (cert {}",
            dir.join("certs/alice.pem").display()
        ),
        format!(
            "peer: bob@lab.example/office (cert {}",
            dir.join("certs/bob.pem").display()
        ),
        "stun: 203.0.113.3:3478".into(),
        "rendezvous 60 s".into(),
        format!("state file {}", dir.join("alice.replay").display()),
        format!("mediator: plugin path {}", so.display()),
        format!("executor: command {}", exchange_py().display()),
    ] {
        assert!(stdout.contains(&want), "missing {want:?} in:\n{stdout}");
    }
    let keys_line = stdout
        .lines()
        .find(|l| l.starts_with("mediator: plugin"))
        .unwrap();
    for key in ["dir", "address", "poll_interval_ms", "password"] {
        assert!(
            keys_line.contains(key),
            "the plugin's setting keys are listed: {keys_line}"
        );
    }
    assert!(
        !stdout.contains(secret) && !stderr.contains(secret),
        "a plugin setting's value must never be printed:\n{stdout}\n{stderr}"
    );

    // Unknown keys, at the top and inside the plugin's block: exit 2, key and line named.
    for (from, to) in [
        ("timeouts:", "punch_hopz: 3\ntimeouts:"),
        ("    settings:", "    setings:"),
    ] {
        let bad = good.replacen(from, to, 1);
        let key = to.split(':').next().unwrap().trim();
        let line = bad
            .lines()
            .position(|l| l.trim_start().starts_with(&format!("{key}:")))
            .unwrap()
            + 1;
        let path = write(&dir.join("bad.yaml"), &bad);
        let out = std::process::Command::new(plexus_bin())
            .args(["profile", "check"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "an unknown key is a usage error:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("`{key}`")) && stderr.contains(&format!("line {line}")),
            "the error should name `{key}` and line {line}:\n{stderr}"
        );
        assert!(out.stdout.is_empty(), "nothing printed as resolved");
        assert!(!stderr.contains(secret), "{stderr}");
    }

    // A plugin library that is not there is named too (check locates it, never loads it).
    let gone = dir.join("libplexus_gone.so");
    let bad = good.replace(&q(so.display()), &q(gone.display()));
    let path = write(&dir.join("bad.yaml"), &bad);
    let out = std::process::Command::new(plexus_bin())
        .args(["profile", "check"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("mediator.plugin.path") && stderr.contains("libplexus_gone.so"),
        "a missing plugin library should be named:\n{stderr}"
    );
}
