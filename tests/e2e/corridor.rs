//! `plexus invite` / `plexus accept` end to end in the lab: real NATs, real coturn,
//! real postfix + dovecot, S/MIME-sealed rendezvous, and `tests/lab/exchange.py` as
//! the executor on both sides proving datagrams cross the punched path both ways.
//!
//! Each test claims its two sites (so no loss test disturbs it) and takes two fresh
//! mailboxes from the lab's pool, so tests running at the same time never read each
//! other's mail. Timelines are printed, never asserted.

use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use plexus::identity::{Identity, PeerCert, PeerId};
use plexus::mediator::email::EmailMediator;
use plexus::mediator::Mediator;
use plexus::nat::Behaviour;
use plexus::rendezvous::{Envelope, Freshness, Invite, NatFacts, ReplayGuard};

use crate::lab::{plexus_bin, Account, Lab};

/// Next unused mailbox of the pool (p01, p02, …). The counter lives in the lab's state
/// dir, so test runs against one long-lived lab (`PLEXUS_LAB`) never reuse a mailbox
/// that may still hold an earlier run's unconsumed invite.
pub(crate) fn take_mailbox(lab: &Lab) -> Account {
    use std::io::{Seek, Write};
    use std::os::fd::AsRawFd;
    static LOCAL: Mutex<()> = Mutex::new(());
    let _g = LOCAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lab.state_dir.join("mailbox-pool.next"))
        .unwrap();
    // SAFETY: flock on a descriptor we own; released when `f` closes.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    let mut text = String::new();
    f.read_to_string(&mut text).unwrap();
    let n: usize = text.trim().parse().unwrap_or(1);
    f.set_len(0).unwrap();
    f.rewind().unwrap();
    write!(f, "{}", n + 1).unwrap();
    let want = format!("p{n:02}@");
    lab.mail()
        .accounts
        .iter()
        .find(|a| a.address.starts_with(&want))
        .unwrap_or_else(|| panic!("the lab's mailbox pool is used up (wanted {want}…)"))
        .clone()
}

/// The demo identities in `dir/certs`, with private keys at 0600.
pub(crate) fn demo_certs(dir: &Path) -> PathBuf {
    let out = dir.join("certs");
    plexus::testing::copy_demo_certs(&out);
    out
}

/// A demo identity's peer id, as text.
pub(crate) fn id_of(who: &str) -> String {
    plexus::testing::demo_id(who).to_string()
}

/// One side's command line.
struct Side {
    site: String,
    who: &'static str,
    peer: &'static str,
    mailbox: Account,
    peer_mailbox: Account,
    accept: bool,
    extra: Vec<String>,
}

impl Side {
    /// `who` at `site`, inviting `peer` (see [`Side::accepting`]).
    fn of(
        who: &'static str,
        peer: &'static str,
        site: &str,
        mailbox: Account,
        peer_mailbox: Account,
    ) -> Side {
        Side {
            site: site.into(),
            who,
            peer,
            mailbox,
            peer_mailbox,
            accept: false,
            extra: vec![],
        }
    }

    /// Wait for invites from the peer instead (`accept --once`).
    fn accepting(mut self) -> Side {
        self.accept = true;
        self
    }

    /// More command-line arguments (they come last, so they override).
    fn with_extra(mut self, extra: Vec<String>) -> Side {
        self.extra = extra;
        self
    }

    fn args(&self, lab: &Lab, dir: &Path, certs: &Path) -> Vec<String> {
        let mail = lab.mail();
        // A site without IPv4 reaches the mail host over IPv6.
        let mail_host = if lab
            .site(self.site.split('#').next().unwrap_or_default())
            .ipv4
        {
            mail.ip.to_string()
        } else {
            format!("[{}]", mail.ip6.expect("the lab mail host has IPv6"))
        };
        let pw = dir.join(format!("{}.pw", self.who));
        fs::write(&pw, &self.mailbox.password).unwrap();
        fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
        let c = |f: &str| certs.join(f).display().to_string();
        let mut a: Vec<String> = vec![
            if self.accept { "accept" } else { "invite" }.into(),
            "--log-level".into(),
            "debug".into(),
            "--host-id".into(),
            id_of(self.who),
            "--peer-id".into(),
            id_of(self.peer),
            "--smime-cert".into(),
            c(&format!("{}.pem", self.who)),
            "--smime-key".into(),
            c(&format!("{}.key", self.who)),
            "--smime-peer".into(),
            c(&format!("{}.pem", self.peer)),
            "--replay-state".into(),
            dir.join(format!("{}.replay", self.who))
                .display()
                .to_string(),
            "--email-smtps".into(),
            format!("{mail_host}:{}", mail.smtps_port),
            "--email-imaps".into(),
            format!("{mail_host}:{}", mail.imaps_port),
            "--email-login".into(),
            self.mailbox.login.clone(),
            "--email-passwd-file".into(),
            pw.display().to_string(),
            "--email-from".into(),
            self.mailbox.address.clone(),
            "--email-to".into(),
            self.peer_mailbox.address.clone(),
            "--email-ca".into(),
            mail.ca_file.display().to_string(),
            "--stun".into(),
            format!("{}:{}", lab.stun.ips[0], lab.stun.port),
            "--exec-command".into(),
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/lab/exchange.py")
                .display()
                .to_string(),
            // The executor sees none of plexus's environment but a short allow-list.
            "--exec-env".into(),
            format!(
                "EXCHANGE_OUT={}",
                dir.join(format!("{}.exchange.json", self.who)).display()
            ),
            "--exec-env".into(),
            "EXCHANGE_SECONDS=8".into(),
        ];
        if self.accept {
            a.push("--once".into());
        } else if !self.extra.iter().any(|e| e == "--rendezvous-timeout") {
            a.extend(["--rendezvous-timeout".into(), "60".into()]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    fn spawn(&self, lab: &Lab, dir: &Path, certs: &Path) -> Child {
        self.spawn_with(lab, dir, self.args(lab, dir, certs))
    }

    /// Start this side with `args` (its [`Side::args`], edited by the caller).
    fn spawn_with(&self, lab: &Lab, dir: &Path, args: Vec<String>) -> Child {
        let netns = &host_of(lab, &self.site).netns;
        let log = fs::File::create(dir.join(format!("{}.log", self.who))).unwrap();
        let out = fs::File::create(dir.join(format!("{}.out", self.who))).unwrap();
        lab.command(netns, &plexus_bin())
            .args(args)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start plexus in the lab")
    }
}

/// `SITE` is the site's first host, `SITE#N` its N-th (sites with several hosts).
pub(crate) fn host_of<'a>(lab: &'a Lab, site: &str) -> &'a crate::lab::Host {
    match site.split_once('#') {
        None => &lab.site(site).hosts[0],
        Some((name, n)) => {
            let n: usize = n.parse().expect("SITE#N with N a number");
            lab.site(name)
                .hosts
                .get(n - 1)
                .unwrap_or_else(|| panic!("site {name} has no host {n}"))
        }
    }
}

pub(crate) fn read(path: PathBuf) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// Wait for `child` at most `limit`; kill it (we started it) when it overstays.
pub(crate) fn wait(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Wait until `file` contains `text` (bounded).
pub(crate) fn wait_for_text(file: &Path, text: &str, limit: Duration) -> bool {
    wait_for_count(file, text, 1, limit)
}

/// Wait until `file` contains `text` at least `n` times (bounded).
pub(crate) fn wait_for_count(file: &Path, text: &str, n: usize, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if read(file.to_path_buf()).matches(text).count() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A child of ours that is killed (by its handle, so never a reused PID) when the
/// test ends early, e.g. an acceptor serving without `--once` when an assert fails.
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) struct Run {
    dir: PathBuf,
    inviter: Option<ExitStatus>,
    acceptor: Option<ExitStatus>,
}

impl Run {
    pub(crate) fn log(&self, who: &str) -> String {
        read(self.dir.join(format!("{who}.log")))
    }
    fn out(&self, who: &str) -> String {
        read(self.dir.join(format!("{who}.out")))
    }
    fn exchange(&self, who: &str) -> Option<serde_json::Value> {
        serde_json::from_str(read(self.dir.join(format!("{who}.exchange.json"))).trim()).ok()
    }
    fn dump(&self) -> String {
        format!(
            "--- alice (inviter) {:?}\n{}\n{}\n--- bob (acceptor) {:?}\n{}\n{}",
            self.inviter,
            self.out("alice"),
            self.log("alice"),
            self.acceptor,
            self.out("bob"),
            self.log("bob")
        )
    }
    pub(crate) fn assert_connected(&self) {
        assert!(
            self.inviter.map(|s| s.success()).unwrap_or(false)
                && self.acceptor.map(|s| s.success()).unwrap_or(false),
            "both sides should connect and their executors exchange datagrams:\n{}",
            self.dump()
        );
        for who in ["alice", "bob"] {
            let ex = self
                .exchange(who)
                .unwrap_or_else(|| panic!("{who}'s executor left no result:\n{}", self.dump()));
            assert!(
                ex["received"].is_object() && ex["acknowledged"] == true,
                "{who}'s executor: {ex}\n{}",
                self.dump()
            );
            assert_eq!(ex["key_len"], 64, "PLEXUS_KEY is a 256-bit hex key");
        }
        eprintln!(
            "corridor {}: inviter: {}",
            self.dir.file_name().unwrap().to_string_lossy(),
            self.out("alice").trim()
        );
    }
}

/// alice invites from `inviter_site`, bob accepts at `acceptor_site`.
fn corridor(
    lab: &Lab,
    test: &str,
    inviter_site: &str,
    acceptor_site: &str,
    inviter_extra: &[&str],
    acceptor_extra: &[&str],
) -> Run {
    corridor_seeded(
        lab,
        test,
        (inviter_site, acceptor_site),
        (inviter_extra, acceptor_extra),
        |_, _, _| 0,
    )
}

/// [`corridor`], with `seed(dir, certs, (alice's mailbox, bob's))` run before bob
/// starts; it returns how many messages bob must refuse before alice may invite.
pub(crate) fn corridor_seeded(
    lab: &Lab,
    test: &str,
    (inviter_site, acceptor_site): (&str, &str),
    (inviter_extra, acceptor_extra): (&[&str], &[&str]),
    seed: impl FnOnce(&Path, &Path, (&Account, &Account)) -> usize,
) -> Run {
    let dir = lab.scratch(test);
    let certs = demo_certs(&dir);
    let (m_alice, m_bob) = (take_mailbox(lab), take_mailbox(lab));
    let refusals = seed(&dir, &certs, (&m_alice, &m_bob));
    let acceptor = Side::of(
        "bob",
        "alice",
        acceptor_site,
        m_bob.clone(),
        m_alice.clone(),
    )
    .accepting()
    .with_extra(acceptor_extra.iter().map(|s| s.to_string()).collect());
    let inviter = Side::of("alice", "bob", inviter_site, m_alice, m_bob)
        .with_extra(inviter_extra.iter().map(|s| s.to_string()).collect());
    let mut bob = acceptor.spawn(lab, &dir, &certs);
    let ready = wait_for_text(
        &dir.join("bob.log"),
        "waiting for invites",
        Duration::from_secs(20),
    );
    // Everything seeded was refused, and bob is still waiting.
    let refused = refusals == 0
        || wait_for_count(
            &dir.join("bob.log"),
            "refused a rendezvous message",
            refusals,
            Duration::from_secs(120),
        );
    assert!(
        refused && bob.try_wait().unwrap().is_none(),
        "bob should refuse {refusals} seeded messages and keep waiting:\n{}",
        read(dir.join("bob.log"))
    );
    let mut alice = inviter.spawn(lab, &dir, &certs);
    let a = wait(&mut alice, Duration::from_secs(200));
    let b = if ready {
        wait(&mut bob, Duration::from_secs(30))
    } else {
        wait(&mut bob, Duration::from_secs(1))
    };
    Run {
        dir,
        inviter: a,
        acceptor: b,
    }
}

/// `inviter_site` invites `acceptor_site`; both executors exchange datagrams, and the
/// inviter's log names the method the acceptor planned (`plexus::nat::pair::describe`).
fn pair(inviter: &str, acceptor: &str, method: &str) {
    pair_one_of(inviter, acceptor, &[method]);
}

/// [`pair`], where the plan may be any of `methods`.
fn pair_one_of(inviter: &str, acceptor: &str, methods: &[&str]) {
    let lab = lab_or_skip!();
    let _c = lab.claim(&[inviter, acceptor]);
    let run = corridor(
        lab,
        &format!("corridor-{inviter}-{acceptor}"),
        inviter,
        acceptor,
        &[],
        &[],
    );
    run.assert_connected();
    let said = run
        .log("alice")
        .lines()
        .find(|l| l.contains("accept from"))
        .map(|l| l.rsplit("): ").next().unwrap_or_default().to_string())
        .unwrap_or_default();
    assert!(
        methods.contains(&said.as_str()),
        "method for {inviter} -> {acceptor}: {said:?}, expected one of {methods:?}\n{}",
        run.dump()
    );
}

macro_rules! pairs {
    ($($name:ident: $inv:literal => $acc:literal, $method:expr,)*) => {
        $(
            #[test]
            fn $name() {
                pair($inv, $acc, $method);
            }
        )*
    };
}

const FULL_TTL: &str = "direct, acceptor punches at full TTL";
const INVITER_HARD: &str = "birthday probing: 256 sockets on the inviter side";
const ACCEPTOR_HARD: &str = "birthday probing: 256 sockets on the acceptor side";

pairs! {
    none_to_none: "a-none" => "b-none", "direct",
    none_to_full: "a-none" => "b-full", "direct",
    none_to_address: "a-none" => "b-address", "direct",
    none_to_port: "a-none" => "b-port", "direct",
    none_to_symmetric: "a-none" => "b-symmetric", FULL_TTL,
    full_to_none: "a-full" => "b-none", "direct",
    full_to_full: "a-full" => "b-full", "direct",
    full_to_address: "a-full" => "b-address", "direct",
    full_to_port: "a-full" => "b-port", "direct",
    address_to_none: "a-address" => "b-none", "direct",
    address_to_full: "a-address" => "b-full", "direct",
    address_to_address: "a-address" => "b-address", "direct",
    address_to_port: "a-address" => "b-port", "direct",
    // The inviter's address-dependent filtering is only known after a probe deadline,
    // when the invite has long left: unknown filtering is planned as port-dependent.
    address_to_symmetric: "a-address" => "b-symmetric", ACCEPTOR_HARD,
    port_to_none: "a-port" => "b-none", "direct",
    port_to_full: "a-port" => "b-full", "direct",
    port_to_address: "a-port" => "b-address", "direct",
    port_to_port: "a-port" => "b-port", "direct",
    port_to_symmetric: "a-port" => "b-symmetric", ACCEPTOR_HARD,
    symmetric_to_none: "a-symmetric" => "b-none", "direct",
    symmetric_to_full: "a-symmetric" => "b-full", "direct",
    symmetric_to_address: "a-symmetric" => "b-address", "direct",
    symmetric_to_port: "a-symmetric" => "b-port", INVITER_HARD,
}

/// A full-cone inviter's filtering verdict is an answer that usually beats its invite
/// (the inviter waits 30 ms for it): then the symmetric acceptor punches at full TTL.
/// On a loaded machine the answer can come later and the invite says "unknown": then
/// the plan is birthday probing, which connects as well. Either way it connects.
#[test]
fn full_to_symmetric() {
    pair_one_of("a-full", "b-symmetric", &[FULL_TTL, ACCEPTOR_HARD]);
}

/// A symmetric site whose router runs miniupnpd: the side asks its router for a mapping
/// of the corridor port (PCP first) and is open there, so a port-restricted peer connects
/// directly, in both roles.
#[test]
fn router_port_mapping_makes_a_symmetric_side_direct() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["upnp-symmetric", "b-port", "a-port"]);
    for (inviter, acceptor, mapped_side) in [
        ("upnp-symmetric", "b-port", "alice"),
        ("a-port", "upnp-symmetric", "bob"),
    ] {
        let run = corridor(
            lab,
            &format!("corridor-portmap-{inviter}-{acceptor}"),
            inviter,
            acceptor,
            &[],
            &[],
        );
        run.assert_connected();
        let log = run.log(mapped_side);
        assert!(
            log.contains("router mapping via PCP"),
            "{mapped_side} on the miniupnpd site maps its corridor port:\n{}",
            run.dump()
        );
        let alice = run.log("alice");
        let line = alice
            .lines()
            .find(|l| l.contains("accept from"))
            .unwrap_or_default();
        assert!(
            line.ends_with("): direct"),
            "planned direct: {line}\n{}",
            run.dump()
        );
    }
}

/// Two hosts behind one NAT that hairpins: the public endpoints work.
#[test]
fn same_nat_with_hairpin_connects() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["hairpin"]);
    corridor(lab, "corridor-hairpin", "hairpin#1", "hairpin#2", &[], &[]).assert_connected();
}

/// Two hosts behind one NAT that does not hairpin: a packet to the own public address
/// goes nowhere, so only the local endpoints carried in the rendezvous can connect.
#[test]
fn same_nat_without_hairpin_connects_over_local_endpoints() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["lan2"]);
    let run = corridor(lab, "corridor-lan2", "lan2#1", "lan2#2", &[], &[]);
    run.assert_connected();
    let bob_ip = lab.site("lan2").hosts[1].ip.to_string();
    let line = run.out("alice");
    assert!(
        line.contains(&format!("-> {bob_ip}:")),
        "the corridor must run to bob's local address {bob_ip}:
{}",
        run.dump()
    );
}

/// Two extra routers on each side: `auto` still punches just past the own NAT.
#[test]
fn port_to_port_two_extra_routers_auto_hops() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["c-port", "d-port"]);
    let run = corridor(lab, "corridor-extra-routers", "c-port", "d-port", &[], &[]);
    run.assert_connected();
    let log = run.log("bob");
    assert!(
        log.contains("punching toward") && log.contains("with TTL"),
        "the acceptor should punch with a chosen TTL:\n{log}"
    );
}

/// A punch whose TTL reaches the inviter's port-restricted NAT makes that NAT give the
/// inviter's handshake a new public port, which the acceptor's NAT filters: no corridor.
#[test]
fn port_to_port_punch_reaching_the_other_nat_breaks_it() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-port", "b-port"]);
    let run = corridor(
        lab,
        "corridor-ttl-64",
        "a-port",
        "b-port",
        &["--handshake-timeout", "3000"],
        &["--punch-hops", "64", "--handshake-timeout", "3000"],
    );
    assert_eq!(
        run.inviter.and_then(|s| s.code()),
        Some(1),
        "the inviter should fail (exit 1):\n{}",
        run.dump()
    );
    assert!(
        run.log("alice").contains("handshake timed out"),
        "the inviter should report a handshake timeout:\n{}",
        run.dump()
    );
}

/// The acceptor's TURN flags: the lab's long-term (or REST) server, credentials in a
/// file of the test's.
fn turn_flags(lab: &Lab, test: &str, rest: bool) -> Vec<String> {
    let t = lab.turn.as_ref().expect("the lab has TURN servers");
    // Not the corridor's own scratch directory: that one is made afresh for the run.
    let dir = lab.scratch(&format!("{test}-turn"));
    let (port, file, flag, text) = if rest {
        (
            t.rest_port,
            "turn.secret",
            "--turn-secret-file",
            &t.rest_secret,
        )
    } else {
        (t.port, "turn.pw", "--turn-password-file", &t.password)
    };
    let path = dir.join(file);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    vec![
        "--relay".into(),
        "fallback".into(),
        "--turn".into(),
        format!("{}:{port}", t.ip),
        "--turn-user".into(),
        t.user.clone(),
        flag.into(),
        path.display().to_string(),
    ]
}

/// Both NATs symmetric: only a relay joins them. The acceptor allocates on the lab's
/// coturn and names the relayed address in its accept; the inviter sends plain UDP
/// there; the acceptor's executor talks to a local forwarder. With `hold`, the
/// executors keep ticking for a minute: allocation, permission and channel must be
/// refreshed (the lab's coturn grants 40 s) for the last ticks to arrive.
fn symmetric_pair_relays(test: &str, rest: bool, hold: u32) {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-symmetric", "b-symmetric"]);
    let bob_flags = turn_flags(lab, test, rest);
    let bob: Vec<&str> = bob_flags.iter().map(String::as_str).collect();
    let hold_env = format!("EXCHANGE_HOLD={hold}");
    let mut alice = vec!["--relay", "fallback"];
    if hold > 0 {
        alice.extend(["--exec-env", &hold_env]);
    }
    let mut bob = bob;
    if hold > 0 {
        bob.extend(["--exec-env", &hold_env]);
    }
    let run = corridor(lab, test, "a-symmetric", "b-symmetric", &alice, &bob);
    run.assert_connected();
    let line = run
        .log("alice")
        .lines()
        .find(|l| l.contains("accept from"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.ends_with("): relayed through TURN"),
        "{line}\n{}",
        run.dump()
    );
    let turn_ip = lab.turn.as_ref().expect("the lab has TURN servers").ip;
    let relayed = format!("{turn_ip}:");
    assert!(
        run.log("bob").contains("relay: allocated") && run.out("alice").contains(&relayed),
        "alice's corridor runs to the relayed address on {turn_ip}:\n{}",
        run.dump()
    );
    if hold > 0 {
        for who in ["alice", "bob"] {
            let held = &run.exchange(who).unwrap()["held"];
            let got = held["received"].as_u64().unwrap_or(0);
            let last = held["last_at"].as_f64().unwrap_or(0.0);
            assert!(
                got >= u64::from(hold) && last >= f64::from(hold) - 5.0,
                "{who} kept receiving ticks for {hold} s through the relay: {held}\n{}",
                run.dump()
            );
        }
        assert!(
            run.log("bob").contains("allocation refreshed") || run.log("bob").contains("refresh"),
            "the forwarder refreshed the allocation:\n{}",
            run.dump()
        );
    }
}

#[test]
fn symmetric_pair_relays_with_long_term_credentials_for_a_minute() {
    symmetric_pair_relays("corridor-relay-long-term", false, 60);
}

#[test]
fn symmetric_pair_relays_with_rest_credentials() {
    symmetric_pair_relays("corridor-relay-rest", true, 0);
}

/// A pair planned direct whose direct path cannot work (the acceptor's punch reaches the
/// inviter's port-restricted NAT, see the TTL test): the inviter falls back to the relay
/// the accept already named, with no further rendezvous.
#[test]
fn a_failed_direct_handshake_falls_back_to_the_relay() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-port", "b-port"]);
    let test = "corridor-relay-fallback";
    let mut bob = turn_flags(lab, test, false);
    bob.extend(["--punch-hops", "64", "--handshake-timeout", "3000"].map(String::from));
    let bob: Vec<&str> = bob.iter().map(String::as_str).collect();
    let run = corridor(
        lab,
        test,
        "a-port",
        "b-port",
        &["--relay", "fallback", "--handshake-timeout", "3000"],
        &bob,
    );
    run.assert_connected();
    let alice = run.log("alice");
    assert!(
        alice.contains("): direct") && alice.contains("falling back to the relay"),
        "planned direct, then the relay:\n{}",
        run.dump()
    );
    assert_eq!(
        run.log("alice").matches("invite sent").count(),
        1,
        "one rendezvous only"
    );
}

/// Two symmetric NATs and `--relay never` on the acceptor (which has a TURN server):
/// it declines, sealed, and the inviter ends with the reason and exit 1 at once, long
/// before its rendezvous timeout.
#[test]
fn symmetric_pair_without_relay_is_declined() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-symmetric", "b-symmetric"]);
    let test = "corridor-symmetric-declined";
    let mut bob = turn_flags(lab, test, false);
    bob[1] = "never".into();
    let bob: Vec<&str> = bob.iter().map(String::as_str).collect();
    let run = corridor(
        lab,
        test,
        "a-symmetric",
        "b-symmetric",
        &["--rendezvous-timeout", "120", "--relay", "fallback"],
        &bob,
    );
    assert_eq!(
        (
            run.inviter.and_then(|s| s.code()),
            run.acceptor.and_then(|s| s.code())
        ),
        (Some(1), Some(1)),
        "both end with exit 1:\n{}",
        run.dump()
    );
    let alice = run.log("alice");
    assert!(
        alice.contains("the peer declined the invite")
            && alice.contains("both NATs map per destination")
            && alice.contains("relay policy is never"),
        "the inviter names the decline and its reason:\n{}",
        run.dump()
    );
    assert!(
        !alice.contains("no answer from the peer"),
        "a decline, not a timeout:\n{}",
        run.dump()
    );
    assert!(
        run.log("bob").contains("declining invite"),
        "{}",
        run.dump()
    );
}

#[test]
fn twenty_percent_loss_still_connects() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-port", "b-address"]);
    lab.set_loss("a-port", 20);
    lab.set_loss("b-address", 20);
    // Every packet of both public links, mail (TCP) included: the mail legs can take tens
    // of seconds, hence the long rendezvous timeout.
    let run = corridor(
        lab,
        "corridor-loss",
        "a-port",
        "b-address",
        &["--rendezvous-timeout", "150"],
        &[],
    );
    run.assert_connected();
}

/// Birthday probing with 5 % loss on both public links (UDP only: the probes, the
/// openers and the handshake; the mail legs are not what this tests).
#[test]
fn birthday_probing_connects_with_five_percent_loss() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-port", "b-symmetric"]);
    for site in ["a-port", "b-symmetric"] {
        let out = std::process::Command::new(crate::lab::lab_sh())
            .args(["loss", &lab.name, site, "5", "udp"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let run = corridor(
        lab,
        "corridor-birthday-loss",
        "a-port",
        "b-symmetric",
        &[],
        &[],
    );
    run.assert_connected();
    let bob = run.log("bob");
    assert!(
        bob.contains("birthday probing:") && bob.contains("a probe landed on socket"),
        "the symmetric acceptor opened sockets and one probe landed:\n{}",
        run.dump()
    );
    let alice = run.log("alice");
    let probes: u32 = alice
        .lines()
        .find_map(|l| {
            l.split("after ")
                .nth(1)?
                .strip_suffix(" probes")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("alice logs how many probes it took:\n{}", run.dump()));
    assert!(
        probes <= plexus::defaults::BIRTHDAY_PROBES,
        "within the probe budget: {probes}"
    );
}

#[test]
fn silent_peer_ends_in_a_clear_timeout() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-full"]);
    let dir = lab.scratch("corridor-silent");
    let certs = demo_certs(&dir);
    let side = Side::of(
        "alice",
        "bob",
        "a-full",
        take_mailbox(lab),
        take_mailbox(lab),
    )
    .with_extra(vec!["--rendezvous-timeout".into(), "4".into()]);
    let mut child = side.spawn(lab, &dir, &certs);
    let st = wait(&mut child, Duration::from_secs(60));
    let err = read(dir.join("alice.log"));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(1),
        "exit 1 expected:\n{err}"
    );
    assert!(
        err.contains("no answer from the peer within 4 s"),
        "a clear timeout message:\n{err}"
    );
}

/// An envelope sealing as `signer_id` with the demo key pair `key_name` to `peer`'s
/// pinned demo certificate (replay state in memory: the test only seals with it).
fn envelope_as(certs: &Path, signer_id: &str, key_name: &str, peer: &str) -> Envelope {
    let me = Identity::load(
        PeerId::parse(signer_id).unwrap(),
        &certs.join(format!("{key_name}.pem")),
        &certs.join(format!("{key_name}.key")),
    )
    .unwrap();
    let peer_cert = PeerCert::load(
        PeerId::parse(&id_of(peer)).unwrap(),
        &certs.join(format!("{peer}.pem")),
    )
    .unwrap();
    Envelope::new(
        me,
        peer_cert,
        None,
        Freshness::default(),
        ReplayGuard::in_memory(),
    )
    .unwrap()
}

/// A fresh invite from `from` to `to` (ids), dated now, naming `mapped` as the
/// inviter's public endpoint behind an endpoint-independent NAT.
fn invite_now(from: &str, to: &str, mapped: SocketAddr) -> Invite {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Invite::new(
        PeerId::parse(from).unwrap(),
        PeerId::parse(to).unwrap(),
        now,
        vec![mapped],
        vec![],
        NatFacts {
            nat: true,
            mapping: Some(Behaviour::EndpointIndependent),
            ..NatFacts::default()
        },
    )
    .unwrap()
}

/// Mail `sealed` from `from`'s mailbox to `to`'s through the lab mail server, with
/// plexus's own e-mail mediator running inside `site`'s host namespace.
fn mail_sealed(lab: &Lab, site: &str, from: &Account, to: &Account, sealed: &[u8]) {
    let s = crate::mail::lab_settings(lab.mail(), from, to);
    lab.in_ns(&lab.site(site).host_netns, || {
        let mut m = EmailMediator::new(s).unwrap();
        m.send(&to.address, sealed).unwrap();
    });
}

/// (UID, flags, size) of every message in `folder` of `who`'s mailbox, read by a
/// separate IMAP client (the user's mail program) from `site`'s host namespace.
fn mailbox(lab: &Lab, site: &str, who: &Account, folder: &str) -> Vec<(u32, Vec<String>, u32)> {
    lab.in_ns(&lab.site(site).host_netns, || {
        crate::mail::snapshot(&mut crate::mail::user_session(lab.mail(), who), folder)
    })
}

/// A message signed by another key (mallory's, sent from alice's mailbox) is refused
/// and the acceptor keeps waiting; the real invite after it connects.
#[test]
fn forged_invite_is_refused_and_acceptor_keeps_waiting() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-full", "b-port"]);
    let dir = lab.scratch("corridor-forged");
    let certs = demo_certs(&dir);
    let (m_alice, m_bob) = (take_mailbox(lab), take_mailbox(lab));
    let bob = Side::of("bob", "alice", "b-port", m_bob.clone(), m_alice.clone()).accepting();
    let mut bob_child = Reaped(bob.spawn(lab, &dir, &certs));
    assert!(wait_for_text(
        &dir.join("bob.log"),
        "waiting for invites",
        Duration::from_secs(20)
    ));

    // Mallory writes to bob from alice's mailbox, sealed with her own key.
    let mallory = "mallory@lab.example/evil";
    let env = envelope_as(&certs, mallory, "mallory", "bob");
    let forged = invite_now(
        mallory,
        &id_of("bob"),
        "198.51.100.200:4000".parse().unwrap(),
    );
    mail_sealed(lab, "a-full", &m_alice, &m_bob, &env.seal(&forged).unwrap());
    assert!(
        wait_for_text(
            &dir.join("bob.log"),
            "refused a rendezvous message",
            Duration::from_secs(20)
        ),
        "the forged invite should be refused:\n{}",
        read(dir.join("bob.log"))
    );

    // Still waiting: the real alice now connects.
    let alice = Side::of("alice", "bob", "a-full", m_alice, m_bob);
    let mut alice_child = alice.spawn(lab, &dir, &certs);
    let run = Run {
        inviter: wait(&mut alice_child, Duration::from_secs(90)),
        acceptor: wait(&mut bob_child.0, Duration::from_secs(30)),
        dir,
    };
    assert!(
        run.log("bob").contains("signed by another key"),
        "the refusal names the reason:\n{}",
        run.dump()
    );
    run.assert_connected();
}

/// One genuine invite from alice, mailed three times. Bob answers the first, refuses
/// the second as a replay and keeps waiting; restarted on the same state, he does not
/// look at the copy he already refused (its UID is remembered) and refuses a third
/// copy as a replay, and the real alice then connects. Refused mail is left in place,
/// or moved to the quarantine folder once one is configured; the user's other mail is
/// never touched.
#[test]
fn replayed_invite_is_refused_even_after_a_restart_and_acceptor_keeps_waiting() {
    use imap::types::Flag;

    let lab = lab_or_skip!();
    let (a_site, b_site) = ("a-address", "b-port");
    let _c = lab.claim(&[a_site, b_site]);
    let dir = lab.scratch("corridor-replayed");
    let certs = demo_certs(&dir);
    let (m_alice, m_bob) = (take_mailbox(lab), take_mailbox(lab));
    let log = dir.join("bob.log");
    let dump = |f: &str| read(dir.join(f));

    // The user's own mail in bob's mailbox, one read and one unread.
    lab.in_ns(&lab.site(b_site).host_netns, || {
        use crate::mail::{append, plain_mail, user_session};
        let mut s = user_session(lab.mail(), &m_bob);
        let from = "someone@lab.example";
        append(
            &mut s,
            &plain_mail(from, &m_bob.address, "read", ""),
            &[Flag::Seen],
        );
        append(&mut s, &plain_mail(from, &m_bob.address, "unread", ""), &[]);
    });
    let users_mail = mailbox(lab, b_site, &m_bob, "INBOX");
    assert_eq!(users_mail.len(), 2, "a fresh mailbox: {users_mail:?}");

    // Bob serves on (no --once), so answering the invite does not end him.
    let bob = Side::of("bob", "alice", b_site, m_bob.clone(), m_alice.clone()).accepting();
    let mut args = bob.args(lab, &dir, &certs);
    args.retain(|a| a != "--once");
    let mut bob_child = Reaped(bob.spawn_with(lab, &dir, args));
    assert!(
        wait_for_text(&log, "waiting for invites", Duration::from_secs(20)),
        "bob did not start:\n{}",
        dump("bob.log")
    );

    // One genuine invite, alice's key and ids, naming an endpoint at alice's site.
    let env = envelope_as(&certs, &id_of("alice"), "alice", "bob");
    let invite = invite_now(
        &id_of("alice"),
        &id_of("bob"),
        SocketAddr::new(lab.site(a_site).public_ip.into(), 40000),
    );
    let session = invite.session.to_hex();
    let sealed = env.seal(&invite).unwrap();
    let replayed = format!("replayed message: invite {session} was already accepted");

    // 1st copy: answered (nobody completes the handshake; that corridor times out in
    // the background while the main loop waits on).
    mail_sealed(lab, a_site, &m_alice, &m_bob, &sealed);
    assert!(
        wait_for_text(&log, "accept sent to", Duration::from_secs(60)),
        "bob should answer the genuine invite:\n{}",
        dump("bob.log")
    );
    assert!(
        read(log.clone()).contains(&format!(
            "invite from {} (session {session})",
            id_of("alice")
        )),
        "{}",
        dump("bob.log")
    );
    let state = dir.join("bob.replay");
    assert_eq!(
        fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600,
        "the replay state file is private"
    );
    assert!(
        read(state.clone()).contains(&session),
        "the replay state remembers the session"
    );
    assert_eq!(
        mailbox(lab, b_site, &m_bob, "INBOX"),
        users_mail,
        "the handled invite is deleted, nothing else touched"
    );

    // 2nd copy: refused as a replay, left in place (no quarantine configured), unread.
    mail_sealed(lab, a_site, &m_alice, &m_bob, &sealed);
    assert!(
        wait_for_text(&log, &replayed, Duration::from_secs(30))
            && wait_for_text(&log, "left in place", Duration::from_secs(10)),
        "the replayed invite should be refused:\n{}",
        dump("bob.log")
    );
    let inbox = mailbox(lab, b_site, &m_bob, "INBOX");
    assert_eq!(inbox.len(), users_mail.len() + 1, "{inbox:?}");
    assert_eq!(inbox[..users_mail.len()], users_mail[..]);
    assert!(
        inbox[users_mail.len()].1.is_empty(),
        "refused mail stays unread: {inbox:?}"
    );
    assert!(
        bob_child.0.try_wait().unwrap().is_none(),
        "bob should keep waiting after a replay:\n{}",
        dump("bob.log")
    );
    assert_eq!(read(log.clone()).matches("accept sent to").count(), 1);

    // Restart bob (our child) on the same replay state, now with a quarantine folder.
    drop(bob_child);
    for f in ["log", "out"] {
        fs::rename(
            dir.join(format!("bob.{f}")),
            dir.join(format!("bob-first.{f}")),
        )
        .unwrap();
    }
    let mail = lab.mail();
    let profile = dir.join("bob-quarantine.yaml");
    fs::write(
        &profile,
        format!(
            "host: {{ id: {bob}, cert: {certs}/bob.pem, key: {certs}/bob.key }}\n\
             peer: {{ id: {alice}, cert: {certs}/alice.pem }}\n\
             mediator:\n  email:\n    smtp: \"{ip}:{smtps}\"\n    imap: \"{ip}:{imaps}\"\n\
             \x20   login: {login}\n    password: {{ file: {pw} }}\n    from: {from}\n\
             \x20   to: {to}\n    ca_file: {ca}\n    quarantine: plexus-quarantine\n",
            bob = id_of("bob"),
            alice = id_of("alice"),
            certs = certs.display(),
            ip = mail.ip,
            smtps = mail.smtps_port,
            imaps = mail.imaps_port,
            login = m_bob.login,
            pw = dir.join("bob.pw").display(),
            from = m_bob.address,
            to = m_alice.address,
            ca = mail.ca_file.display(),
        ),
    )
    .unwrap();
    let mut args = bob.args(lab, &dir, &certs);
    args.extend(["--profile".into(), profile.display().to_string()]);
    let mut bob_child = Reaped(bob.spawn_with(lab, &dir, args));
    assert!(
        wait_for_text(&log, "waiting for invites", Duration::from_secs(20)),
        "bob did not restart:\n{}",
        dump("bob.log")
    );
    // 3rd copy: a mail never seen, so it is opened, and refused as a replay: the
    // replay state survived the restart.
    mail_sealed(lab, a_site, &m_alice, &m_bob, &sealed);
    assert!(
        wait_for_text(&log, &replayed, Duration::from_secs(30))
            && wait_for_text(&log, "to plexus-quarantine", Duration::from_secs(10)),
        "the restarted bob should refuse the third copy and quarantine it:\n{}",
        dump("bob.log")
    );
    // The copy left in place before the restart is remembered as refused (by UID, in
    // the state beside the replay state): not offered again, not touched.
    assert_eq!(
        read(log.clone()).matches(&replayed).count(),
        1,
        "{}",
        dump("bob.log")
    );
    assert!(
        bob_child.0.try_wait().unwrap().is_none(),
        "the restarted bob should keep waiting:\n{}",
        dump("bob.log")
    );
    assert!(!read(log.clone()).contains("accept sent to"));
    assert_eq!(mailbox(lab, b_site, &m_bob, "INBOX"), inbox);
    let quarantined = mailbox(lab, b_site, &m_bob, "plexus-quarantine");
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(
        quarantined.iter().all(|m| m.1.is_empty()),
        "quarantined mail keeps its flags: {quarantined:?}"
    );

    // The real alice connects to the restarted bob.
    let alice = Side::of("alice", "bob", a_site, m_alice, m_bob.clone());
    let mut alice_child = alice.spawn(lab, &dir, &certs);
    let run = Run {
        inviter: wait(&mut alice_child, Duration::from_secs(90)),
        acceptor: wait(&mut bob_child.0, Duration::from_secs(30)),
        dir: dir.clone(),
    };
    run.assert_connected();
    assert_eq!(
        mailbox(lab, b_site, &m_bob, "INBOX"),
        inbox,
        "the user's mail, and the copy refused before the restart, are left as they were"
    );
}

/// One acceptor serving two configured peers (two profiles, one mailbox): alice and
/// carol invite at the same moment, and both corridors open.
#[test]
fn one_acceptor_serves_two_peers_at_once() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-address", "a-port", "b-full"]);
    let dir = lab.scratch("corridor-two-peers");
    let certs = demo_certs(&dir);
    let (m_bob, m_alice, m_carol) = (take_mailbox(lab), take_mailbox(lab), take_mailbox(lab));
    let mail = lab.mail();
    let pw = dir.join("bob.pw");
    fs::write(&pw, &m_bob.password).unwrap();
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
    let exchange = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lab/exchange.py");
    let mut profiles = Vec::new();
    for (peer, peer_box) in [("alice", &m_alice), ("carol", &m_carol)] {
        let yaml = format!(
            "host: {{ id: {host}, cert: {certs}/bob.pem, key: {certs}/bob.key }}\n\
             peer: {{ id: {peer_id}, cert: {certs}/{peer}.pem }}\n\
             stun: [\"{stun}:{port}\"]\n\
             replay: {{ window_s: 600, state_file: bob-{peer}.replay }}\n\
             mediator:\n  email:\n    smtp: \"{mip}:{smtps}\"\n    imap: \"{mip}:{imaps}\"\n\
             \x20   login: {login}\n    password: {{ file: {pw} }}\n    from: {from}\n\
             \x20   to: {to}\n    ca_file: {ca}\n\
             executor:\n  command:\n    program: {exchange}\n\
             \x20   env: {{ EXCHANGE_OUT: \"{dir}/bob-{{peer_port}}.json\", EXCHANGE_SECONDS: \"8\" }}\n",
            host = id_of("bob"),
            certs = certs.display(),
            peer_id = id_of(peer),
            stun = lab.stun.ips[0],
            port = lab.stun.port,
            mip = mail.ip,
            smtps = mail.smtps_port,
            imaps = mail.imaps_port,
            login = m_bob.login,
            pw = pw.display(),
            from = m_bob.address,
            to = peer_box.address,
            ca = mail.ca_file.display(),
            exchange = exchange.display(),
            dir = dir.display(),
        );
        let path = dir.join(format!("bob-{peer}.yaml"));
        fs::write(&path, yaml).unwrap();
        profiles.push(path);
    }
    let log = fs::File::create(dir.join("bob.log")).unwrap();
    let mut bob = lab
        .command(&lab.site("b-full").host_netns, &plexus_bin())
        .args(["accept", "--log-level", "debug"])
        .args(
            profiles
                .iter()
                .flat_map(|p| ["--profile".to_string(), p.display().to_string()]),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start the acceptor");
    assert!(
        wait_for_text(
            &dir.join("bob.log"),
            "waiting for invites",
            Duration::from_secs(20)
        ),
        "acceptor did not start:\n{}",
        read(dir.join("bob.log"))
    );
    let inviters: Vec<(Side, Child)> = [
        ("alice", "a-address", m_alice),
        ("carol", "a-port", m_carol),
    ]
    .into_iter()
    .map(|(who, site, mbox)| {
        let side = Side::of(who, "bob", site, mbox, m_bob.clone());
        let child = side.spawn(lab, &dir, &certs);
        (side, child)
    })
    .collect();
    let mut results = Vec::new();
    for (side, mut child) in inviters {
        let st = wait(&mut child, Duration::from_secs(90));
        results.push((side.who, st));
    }
    // The acceptor keeps serving; it is ours to stop.
    let _ = bob.kill();
    let _ = bob.wait();
    let bob_log = read(dir.join("bob.log"));
    for (who, st) in &results {
        let ex = read(dir.join(format!("{who}.exchange.json")));
        assert!(
            st.map(|s| s.success()).unwrap_or(false) && ex.contains("\"acknowledged\": true"),
            "{who} should connect through the shared acceptor ({st:?}):\n{}\n{ex}\n--- bob\n{bob_log}",
            read(dir.join(format!("{who}.log")))
        );
    }
    assert_eq!(
        // The session's line ("connected to X in N ms (discovery …)"), not the punch's.
        bob_log.matches(" ms (discovery ").count(),
        2,
        "the acceptor opened two corridors:\n{bob_log}"
    );
}

/// The original tool's flat command line (`--accept`, `--stun-ip`/`--stun-port`, no
/// subcommand) still opens a corridor.
#[test]
fn original_flat_command_line_connects() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-none", "b-port"]);
    let dir = lab.scratch("corridor-flat");
    let certs = demo_certs(&dir);
    let (m_alice, m_bob) = (take_mailbox(lab), take_mailbox(lab));
    let flat = |side: &Side| -> Vec<String> {
        let mut a = side.args(lab, &dir, &certs);
        // `accept … --once` / `invite …` become `--accept … --once` / `…`.
        if side.accept {
            a[0] = "--accept".into();
        } else {
            a.remove(0);
        }
        let i = a.iter().position(|x| x == "--stun").unwrap();
        a.splice(
            i..i + 2,
            [
                "--stun-ip".to_string(),
                lab.stun.ips[0].to_string(),
                "--stun-port".to_string(),
                lab.stun.port.to_string(),
            ],
        );
        a
    };
    let bob = Side::of("bob", "alice", "b-port", m_bob.clone(), m_alice.clone()).accepting();
    let alice = Side::of("alice", "bob", "a-none", m_alice, m_bob);
    let start = |side: &Side| -> Child {
        lab.command(&lab.site(&side.site).host_netns, &plexus_bin())
            .args(flat(side))
            .stdout(Stdio::from(
                fs::File::create(dir.join(format!("{}.out", side.who))).unwrap(),
            ))
            .stderr(Stdio::from(
                fs::File::create(dir.join(format!("{}.log", side.who))).unwrap(),
            ))
            .spawn()
            .unwrap()
    };
    let mut b = start(&bob);
    assert!(wait_for_text(
        &dir.join("bob.log"),
        "waiting for invites",
        Duration::from_secs(20)
    ));
    let mut a = start(&alice);
    let run = Run {
        inviter: wait(&mut a, Duration::from_secs(90)),
        acceptor: wait(&mut b, Duration::from_secs(30)),
        dir,
    };
    run.assert_connected();
}

/// A wrong mail password is a clear error naming the server and account, exit 1.
#[test]
fn wrong_mail_password_exits_1() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-full"]);
    let dir = lab.scratch("corridor-wrong-password");
    let certs = demo_certs(&dir);
    let mut mailbox = take_mailbox(lab);
    mailbox.password = "not-the-password".into();
    let side = Side::of("alice", "bob", "a-full", mailbox.clone(), take_mailbox(lab));
    let mut child = side.spawn(lab, &dir, &certs);
    let st = wait(&mut child, Duration::from_secs(60));
    let log = read(dir.join("alice.log"));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(1),
        "exit 1 expected:\n{log}"
    );
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("refused the login") && last.contains(&mailbox.login),
        "the error names the refusal and the account:\n{log}"
    );
}

// IPv6 (issue 13). The `v6-*` sites are dual-stack (but `v6-only`), their IPv6 a global
// /64 behind the router's stateful firewall (`v6-nat66`: NAT66). Both sides name a STUN
// server of each family; a family a side cannot use (no route) is left out.

/// Both STUN servers, IPv4 and IPv6, as extra arguments.
fn dual_stun(lab: &Lab) -> Vec<String> {
    vec![
        "--stun".into(),
        format!("[{}]:{}", lab.stun6().ips[0], lab.stun6().port),
    ]
}

/// A dual-stack corridor between two sites; returns the run.
fn dual_corridor(lab: &Lab, test: &str, inviter: &str, acceptor: &str) -> Run {
    let stun = dual_stun(lab);
    let extra: Vec<&str> = stun.iter().map(String::as_str).collect();
    corridor(lab, test, inviter, acceptor, &extra, &extra)
}

/// The run connected over IPv6 on both sides: the executors got IPv6 addresses (without
/// brackets in argv), and neither side predicted ports or relayed.
fn assert_over_ipv6(run: &Run) {
    run.assert_connected();
    for who in ["alice", "bob"] {
        let ex = run.exchange(who).expect("the executor's result");
        let argv: Vec<String> = serde_json::from_value(ex["argv"].clone()).unwrap_or_default();
        assert_eq!(argv.len(), 6, "{who}: six arguments: {ex}");
        for i in [0, 2, 4] {
            let ip: std::net::IpAddr = argv[i]
                .parse()
                .unwrap_or_else(|_| panic!("{who}: argument {i} is a bare address: {argv:?}"));
            assert!(ip.is_ipv6(), "{who}: argument {i} is IPv6: {argv:?}");
        }
        let peer: SocketAddr = ex["env_peer"].as_str().unwrap_or_default().parse().unwrap();
        assert!(peer.is_ipv6(), "{who}: PLEXUS_PEER {peer}");
        let log = run.log(who);
        assert!(
            !log.contains("send openers")
                && !log.contains("probes to random ports")
                && !log.contains("relayed through TURN"),
            "{who}: no port prediction and no relay over a direct IPv6 path:\n{}",
            run.dump()
        );
    }
    assert!(
        run.log("bob").contains("connected over IPv6"),
        "the acceptor connected over IPv6:\n{}",
        run.dump()
    );
}

/// Two hosts with global IPv6 addresses behind their routers' stateful firewalls: the
/// acceptor's punch opens its firewall, the inviter's packet then gets in. IPv4 (two
/// port-restricted NATs) works too, and IPv6 is preferred.
#[test]
fn ipv6_firewalled_pair_connects_over_ipv6() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["v6-fw-a", "v6-fw-b"]);
    let run = dual_corridor(lab, "ipv6-fw-fw", "v6-fw-a", "v6-fw-b");
    assert_over_ipv6(&run);
    assert!(
        run.log("alice").contains("IPv6 chosen"),
        "both families were tried and IPv6 nominated:\n{}",
        run.dump()
    );
}

/// An IPv6-only host (no IPv4 at all, mail over IPv6 too) and a dual-stack one.
#[test]
fn ipv6_only_and_dual_stack_connect_over_ipv6() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["v6-only", "v6-fw-a"]);
    let run = dual_corridor(lab, "ipv6-only-dual", "v6-only", "v6-fw-a");
    assert_over_ipv6(&run);
    assert!(
        run.log("alice").contains("going on without IPv4"),
        "the IPv6-only side left IPv4 out:\n{}",
        run.dump()
    );
}

/// IPv4 behind a symmetric NAT (which would need port prediction) but IPv6 behind a
/// firewall, against a port-restricted IPv4 and firewalled IPv6 peer: directly over
/// IPv6, in both roles, with no prediction and no relay.
#[test]
fn symmetric_ipv4_but_ipv6_connects_directly_over_ipv6() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["v6-symmetric", "v6-fw-b"]);
    let run = dual_corridor(lab, "ipv6-sym-fw", "v6-symmetric", "v6-fw-b");
    assert_over_ipv6(&run);
    let run = dual_corridor(lab, "ipv6-fw-sym", "v6-fw-b", "v6-symmetric");
    assert_over_ipv6(&run);
    assert!(
        run.log("bob").contains("IPv6 connects directly instead"),
        "the symmetric acceptor dropped its IPv4 plan for IPv6:\n{}",
        run.dump()
    );
}

/// An IPv4-only site and an IPv6-only site share no family: the acceptor declines with
/// a clear reason, and both end with exit 1 at once.
#[test]
fn ipv4_only_and_ipv6_only_end_in_no_common_address_family() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["a-port", "v6-only"]);
    let run = dual_corridor(lab, "ipv6-no-common", "a-port", "v6-only");
    assert_eq!(
        run.inviter.and_then(|s| s.code()),
        Some(1),
        "{}",
        run.dump()
    );
    assert_eq!(
        run.acceptor.and_then(|s| s.code()),
        Some(1),
        "{}",
        run.dump()
    );
    for who in ["alice", "bob"] {
        assert!(
            run.log(who).contains(
                "no common address family: the inviter has IPv4 only, the acceptor IPv6 only"
            ),
            "{who} names the reason:\n{}",
            run.dump()
        );
    }
    let alice = run.log("alice");
    assert!(
        alice.contains("the peer declined the invite")
            && !alice.contains("no answer from the peer"),
        "a decline, not a timeout:\n{}",
        run.dump()
    );
}

/// NAT66 (masquerade behind a ULA prefix) behaves like a port-restricted cone: direct
/// over IPv6 with a firewalled peer.
#[test]
fn nat66_and_firewalled_connect_over_ipv6() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&["v6-nat66", "v6-fw-a"]);
    let run = dual_corridor(lab, "ipv6-nat66-fw", "v6-nat66", "v6-fw-a");
    assert_over_ipv6(&run);
}
