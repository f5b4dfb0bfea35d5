//! The NAT lab as seen from the end-to-end tests.
//!
//! [`lab()`] starts one lab per test process on first use (`tests/lab/lab.sh up`)
//! and tears it down when the process exits, or uses the running lab named by
//! `PLEXUS_LAB` (never torn down). Where network namespaces cannot be created
//! (not root), it prints a loud skip reason and returns `None`; with `CI=true`
//! that is a panic instead, because a skipped lab test in CI is a failure.
//!
//! Run the e2e binary with plain `cargo test` (one process, tests in threads):
//! nextest runs each test in its own process and would build a lab per test.
//!
//! Tests share the one lab. A test that changes a site (loss) or needs it quiet
//! takes the site with [`Lab::claim`]; claims are per site, so tests on
//! different sites run in parallel.

#![allow(dead_code)] // each test module uses its own subset of the API

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer};

/// How a site's router treats traffic (see README, "The lab").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NatType {
    /// Host has a public address; the router only routes.
    None,
    /// EIM + EIF (1:1 source NAT keeping ports, everything inbound forwarded).
    Full,
    /// EIM + ADF (as full, inbound filtered per mapping and remote address).
    Address,
    /// EIM + APDF (Linux masquerade).
    Port,
    /// APDM (masquerade with fully random ports).
    Symmetric,
    /// Port-restricted NAT for two hosts that hairpins.
    Hairpin,
    /// No IPv4 at all: neither the host nor its router has an IPv4 address or route
    /// (the `v6-only` site).
    #[serde(rename = "no-ipv4")]
    NoIpv4,
}

/// lab.json writes `null` for the IPv4 addresses of a site without IPv4; they read as
/// `0.0.0.0`, so code written for IPv4-only sites keeps its plain `Ipv4Addr` fields.
/// Check [`Site::ipv4`] before using them.
fn v4_or_unspecified<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Addr, D::Error> {
    Ok(Option::<Ipv4Addr>::deserialize(d)?.unwrap_or(Ipv4Addr::UNSPECIFIED))
}

/// `null` (no IPv4 LAN) reads as an empty string.
fn string_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn yes() -> bool {
    true
}

/// One host inside a site.
#[derive(Debug, Clone, Deserialize)]
pub struct Host {
    pub netns: String,
    /// Its IPv4 address (`0.0.0.0` on a site without IPv4).
    #[serde(deserialize_with = "v4_or_unspecified")]
    pub ip: Ipv4Addr,
    /// Its global (or, behind NAT66, ULA) IPv6 address; `None` on an IPv4-only site.
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
}

/// How a site's router treats IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum V6Mode {
    /// Global /64 on the LAN behind a stateful firewall (established/related in, new
    /// inbound dropped): the host's own address is its public one.
    Firewall,
    /// ULA LAN (`fd00:0:0:IDX::/64`) masqueraded to the router's WAN address, behind the
    /// same firewall.
    Nat66,
}

/// A site's IPv6 side (sites with a global prefix or NAT66; see README, "The lab").
#[derive(Debug, Clone, Deserialize)]
pub struct Ipv6Site {
    pub mode: V6Mode,
    /// The first host's address (`2001:db8:1:IDX::2`, or `fd00:0:0:IDX::2` for NAT66).
    pub host_ip: Ipv6Addr,
    /// The address peers see: the host's own (firewall) or the router WAN (NAT66).
    pub public_ip: Ipv6Addr,
    pub router_lan_ip: Ipv6Addr,
    /// The router's address on its uplink (`2001:db8:ff:IDX::2`).
    pub router_wan_ip: Ipv6Addr,
    /// The LAN prefix, e.g. `2001:db8:1:16::/64`.
    pub lan: String,
}

/// A site: host(s) behind a router, possibly behind extra routers. The IPv4 fields
/// are `0.0.0.0` (and `lan` empty) on a site without IPv4 (`ipv4 == false`).
#[derive(Debug, Clone, Deserialize)]
pub struct Site {
    pub nat: NatType,
    pub hosts: Vec<Host>,
    /// The first (usually only) host's namespace.
    pub host_netns: String,
    /// The first host's LAN address (public for `none`).
    #[serde(deserialize_with = "v4_or_unspecified")]
    pub host_ip: Ipv4Addr,
    pub router_netns: String,
    /// The address peers see: the NAT's public address, or the host's for `none`.
    #[serde(deserialize_with = "v4_or_unspecified")]
    pub public_ip: Ipv4Addr,
    /// The router's address on its uplink.
    #[serde(deserialize_with = "v4_or_unspecified")]
    pub router_wan_ip: Ipv4Addr,
    #[serde(deserialize_with = "string_or_empty")]
    pub lan: String,
    #[serde(deserialize_with = "v4_or_unspecified")]
    pub gateway: Ipv4Addr,
    /// Whether the site has IPv4 at all (false only for `v6-only`).
    #[serde(default = "yes")]
    pub ipv4: bool,
    /// The site's IPv6 side; `None` for an IPv4-only site (link-local IPv6 only).
    #[serde(default)]
    pub ipv6: Option<Ipv6Site>,
    /// Interface on the public router facing this site (where loss is applied).
    pub uplink_iface: String,
    /// Namespaces of the routers between the NAT and the public router, NAT side last.
    pub extra_routers: Vec<String>,
    /// The port mapping daemon on the site's router (`"miniupnpd"`: UPnP-IGD, NAT-PMP,
    /// PCP), if any.
    #[serde(default)]
    pub portmap: Option<String>,
}

/// The STUN server (coturn, RFC 5780: two addresses, two ports).
#[derive(Debug, Clone, Deserialize)]
pub struct Stun {
    pub netns: String,
    pub ips: Vec<Ipv4Addr>,
    pub port: u16,
    pub alt_port: u16,
}

/// The STUN server over IPv6 (the same coturn, RFC 5780 on two IPv6 addresses).
#[derive(Debug, Clone, Deserialize)]
pub struct Stun6 {
    pub netns: String,
    pub ips: Vec<Ipv6Addr>,
    pub port: u16,
    pub alt_port: u16,
}

/// The TURN relays (coturn, RFC 8656) on their own address: long-term credentials on
/// `port`, TURN REST credentials (shared secret) on `rest_port`.
#[derive(Clone, Deserialize)]
pub struct Turn {
    pub netns: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub rest_port: u16,
    pub realm: String,
    pub user: String,
    pub password: String,
    pub rest_secret: String,
    /// The servers' max-allocate-lifetime (also their permission and channel lifetime).
    pub max_lifetime_s: u64,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn")
            .field("ip", &self.ip)
            .field("port", &self.port)
            .field("rest_port", &self.rest_port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A mailbox on the lab mail host.
#[derive(Clone, Deserialize)]
pub struct Account {
    pub address: String,
    pub login: String,
    pub password: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("address", &self.address)
            .field("login", &self.login)
            .field("password", &"<redacted>")
            .finish()
    }
}

fn default_smtps() -> u16 {
    465
}
fn default_submission() -> u16 {
    587
}
fn default_imaps() -> u16 {
    993
}

/// The mail host (postfix + dovecot), as written by `tests/lab/mail.sh` into mail.json.
#[derive(Debug, Clone, Deserialize)]
pub struct Mail {
    pub netns: String,
    pub ip: Ipv4Addr,
    /// Its IPv6 address (also in the certificate's SAN); absent in an older lab.
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    /// Host name in the server certificate (connect to `ip`, verify this name).
    pub host: String,
    #[serde(default)]
    pub domain: String,
    #[serde(default = "default_smtps")]
    pub smtps_port: u16,
    #[serde(default = "default_submission")]
    pub submission_port: u16,
    #[serde(default = "default_imaps")]
    pub imaps_port: u16,
    /// The lab CA that issued the server certificate.
    pub ca_file: PathBuf,
    pub accounts: Vec<Account>,
}

#[derive(Debug, Deserialize)]
struct LabJson {
    name: String,
    state_dir: PathBuf,
    extra_routers: u32,
    start_ms: u64,
    #[serde(default)]
    netns: Vec<String>,
    stun: Stun,
    #[serde(default)]
    stun6: Option<Stun6>,
    #[serde(default)]
    turn: Option<Turn>,
    sites: BTreeMap<String, Site>,
    mail: Option<serde_json::Value>,
}

/// A running lab.
#[derive(Debug)]
pub struct Lab {
    pub name: String,
    pub state_dir: PathBuf,
    /// Extra routers of the default sites (c-port/d-port always have 2).
    pub extra_routers: u32,
    /// How long `lab.sh up` took to build it, in ms (from lab.json).
    pub start_ms: u64,
    /// Every namespace of the lab.
    pub netns: Vec<String>,
    pub stun: Stun,
    /// The STUN server's IPv6 addresses (absent in a lab built before IPv6).
    pub stun6: Option<Stun6>,
    /// The TURN relays (absent in a lab built before they existed).
    pub turn: Option<Turn>,
    pub sites: BTreeMap<String, Site>,
    pub mail: Option<Mail>,
    /// The raw lab.json, for anything not typed above.
    pub json: serde_json::Value,
    /// One lock per site, leaked on purpose: a handful, living as long as the process.
    claims: Mutex<BTreeMap<String, &'static Mutex<()>>>,
}

/// Path of tests/lab/lab.sh.
pub fn lab_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lab/lab.sh")
}

/// The plexus binary under test (`PLEXUS_BIN` overrides it, for debugging
/// another build against the lab).
pub fn plexus_bin() -> String {
    std::env::var("PLEXUS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_plexus").to_string())
}

/// Where `lab.sh` keeps the state of lab `name`.
pub fn state_dir_of(name: &str) -> PathBuf {
    PathBuf::from("/run/plexus-lab").join(name)
}

static LAB: OnceLock<Result<Option<Lab>, String>> = OnceLock::new();
static OWNED: OnceLock<String> = OnceLock::new();

/// The lab for this test process; `None` (after a loud message) where it cannot run.
pub fn lab() -> Option<&'static Lab> {
    match LAB.get_or_init(start) {
        Ok(Some(lab)) => Some(lab),
        Ok(None) => None,
        Err(e) => panic!("{e}"),
    }
}

fn skip(reason: &str) -> Result<Option<Lab>, String> {
    let ci = std::env::var("CI").map(|v| v == "true").unwrap_or(false);
    let msg = format!("NAT LAB TESTS SKIPPED: {reason}. Run as root (sudo ./tests/run-all.sh).");
    if ci {
        return Err(format!("CI=true and the lab cannot run: {msg}"));
    }
    eprintln!("\n{}\n!!! {msg}\n{}\n", "!".repeat(72), "!".repeat(72));
    Ok(None)
}

fn start() -> Result<Option<Lab>, String> {
    if let Ok(name) = std::env::var("PLEXUS_LAB") {
        let path = state_dir_of(&name).join("lab.json");
        return Lab::load(&path).map(Some).map_err(|e| {
            format!("PLEXUS_LAB={name}: {e} (start it with tests/lab/lab.sh up --name {name})")
        });
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("not running as root, so no network namespaces");
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!("plx{:07x}", (std::process::id() ^ nanos) & 0xfff_ffff);
    let probe = format!("{name}-probe");
    match Command::new("ip").args(["netns", "add", &probe]).output() {
        Ok(o) if o.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).output();
        }
        Ok(o) => {
            return skip(&format!(
                "`ip netns add` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
        Err(e) => return skip(&format!("cannot run `ip` (iproute2): {e}")),
    }
    // Register teardown before starting, so a half-started lab is removed too.
    let _ = OWNED.set(name.clone());
    // SAFETY: registering a plain extern "C" fn with no captured state.
    unsafe { libc::atexit(teardown) };
    let out = Command::new(lab_sh())
        .args(["up", "--name", &name, "--owner"])
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", lab_sh().display()))?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!(
            "lab.sh up --name {name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Lab::load(&state_dir_of(&name).join("lab.json")).map(Some)
}

extern "C" fn teardown() {
    if let Some(name) = OWNED.get() {
        let _ = Command::new(lab_sh())
            .args(["down", name])
            .stdin(Stdio::null())
            .status();
    }
}

impl Lab {
    /// Parse a lab.json written by `lab.sh up`.
    pub fn load(path: &Path) -> Result<Lab, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        let raw: LabJson = serde_json::from_value(json.clone())
            .map_err(|e| format!("{} has an unexpected shape: {e}", path.display()))?;
        let mail = match raw.mail {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value(v)
                    .map_err(|e| format!("{}: bad \"mail\" section: {e}", path.display()))?,
            ),
        };
        Ok(Lab {
            name: raw.name,
            state_dir: raw.state_dir,
            extra_routers: raw.extra_routers,
            start_ms: raw.start_ms,
            netns: raw.netns,
            stun: raw.stun,
            stun6: raw.stun6,
            turn: raw.turn,
            sites: raw.sites,
            mail,
            json,
            claims: Mutex::new(BTreeMap::new()),
        })
    }

    /// The site called `name` (panics with the list of sites if there is none).
    pub fn site(&self, name: &str) -> &Site {
        self.sites.get(name).unwrap_or_else(|| {
            panic!(
                "lab {} has no site {name:?}; sites: {:?}",
                self.name,
                self.sites.keys().collect::<Vec<_>>()
            )
        })
    }

    /// The STUN server over IPv6, or a panic explaining that the lab predates IPv6.
    pub fn stun6(&self) -> &Stun6 {
        self.stun6.as_ref().unwrap_or_else(|| {
            panic!(
                "lab {} has no IPv6 STUN (built by an older lab.sh: tear it down and up again)",
                self.name
            )
        })
    }

    /// The sites with IPv6 (a global prefix or NAT66), by name.
    pub fn v6_sites(&self) -> impl Iterator<Item = (&str, &Site, &Ipv6Site)> {
        self.sites
            .iter()
            .filter_map(|(n, s)| s.ipv6.as_ref().map(|v6| (n.as_str(), s, v6)))
    }

    /// The mail host, or a panic explaining that the lab runs without mail.
    pub fn mail(&self) -> &Mail {
        self.mail.as_ref().unwrap_or_else(|| {
            panic!(
                "lab {} has no mail host (tests/lab/mail.sh missing or --no-mail)",
                self.name
            )
        })
    }

    /// A directory for one test's scratch files inside the lab state dir.
    pub fn scratch(&self, test: &str) -> PathBuf {
        let dir = self.state_dir.join("scratch").join(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir in the lab state dir");
        dir
    }

    /// A `Command` that runs `program` inside `netns` (`ip netns exec`).
    pub fn command(&self, netns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", netns, program])
            .stdin(Stdio::null());
        c
    }

    /// Run `args` in `netns` to completion, killed after `secs` seconds.
    pub fn exec_timeout(&self, netns: &str, secs: u32, args: &[&str]) -> Output {
        let mut c = self.command(netns, "timeout");
        c.args(["--kill-after=5", &secs.to_string()]).args(args);
        c.output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {netns}: {e}"))
    }

    /// Run `args` in `netns` to completion (at most 120 s), capturing output.
    pub fn exec(&self, netns: &str, args: &[&str]) -> Output {
        self.exec_timeout(netns, 120, args)
    }

    /// Start `args` in `netns` with piped stdout/stderr; the caller waits or kills.
    /// Whatever is still running in the lab is killed by `lab.sh down`.
    pub fn spawn(&self, netns: &str, args: &[&str]) -> Child {
        let (program, rest) = args.split_first().expect("spawn needs a program");
        self.command(netns, program)
            .args(rest)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?} in {netns}: {e}"))
    }

    /// Run `f` on a thread that has entered `netns`, so it can open sockets there.
    pub fn in_ns<F, R>(&self, netns: &str, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = PathBuf::from("/run/netns").join(netns);
        let file =
            File::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns on this thread only (network namespaces are per thread);
                // the fd is valid for the duration of the call.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into {netns}: {}",
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Drop `pct` % of the packets on `site`'s link to the public router (0 = none).
    /// Take the site with [`Lab::claim`] first: loss would disturb other tests.
    pub fn set_loss(&self, site: &str, pct: u8) {
        let out = Command::new(lab_sh())
            .args(["loss", &self.name, site, &pct.to_string()])
            .output()
            .expect("run lab.sh loss");
        assert!(
            out.status.success(),
            "lab.sh loss {} {site} {pct}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Exclusive use of `sites` until the guard drops (then their loss is reset).
    /// Locks are taken in name order, so claims never deadlock.
    pub fn claim(&self, sites: &[&str]) -> Claim<'_> {
        let mut names: Vec<String> = sites.iter().map(|s| s.to_string()).collect();
        names.sort();
        names.dedup();
        let locks: Vec<_> = {
            let mut map = self.claims.lock().unwrap_or_else(|p| p.into_inner());
            names
                .iter()
                .map(|n| {
                    let _ = self.site(n);
                    *map.entry(n.clone())
                        .or_insert_with(|| Box::leak(Box::new(Mutex::new(()))))
                })
                .collect()
        };
        let guards = locks
            .into_iter()
            .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        Claim {
            lab: self,
            sites: names,
            _guards: guards,
        }
    }
}

/// Exclusive use of some sites; resets their loss on drop.
pub struct Claim<'a> {
    lab: &'a Lab,
    sites: Vec<String>,
    _guards: Vec<MutexGuard<'static, ()>>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        for s in &self.sites {
            let _ = Command::new(lab_sh())
                .args(["loss", &self.lab.name, s, "0"])
                .output();
        }
    }
}

/// `let lab = lab_or_skip!();` — the lab, or return from the test (skip already reported).
macro_rules! lab_or_skip {
    () => {
        match $crate::lab::lab() {
            Some(lab) => lab,
            None => return,
        }
    };
}

/// Panic with a command's status and output unless it succeeded.
pub fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The public endpoint `sock` is seen from, asked of the lab STUN server with one
/// binding request (RFC 8489; a few retries within ~2 s), over IPv4 or IPv6. For tests
/// that need a mapped endpoint without depending on plexus's own STUN client.
pub fn stun_mapped(
    sock: &std::net::UdpSocket,
    server: std::net::SocketAddr,
) -> std::net::SocketAddr {
    use std::net::SocketAddr;
    const MAGIC: u32 = 0x2112_A442;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tid: [u8; 12] = (nanos ^ u128::from(std::process::id())).to_be_bytes()[4..]
        .try_into()
        .unwrap();
    let mut req = vec![0x00, 0x01, 0x00, 0x00];
    req.extend_from_slice(&MAGIC.to_be_bytes());
    req.extend_from_slice(&tid);
    let old = sock.read_timeout().ok().flatten();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1500];
    for _ in 0..10 {
        sock.send_to(&req, server).expect("send STUN request");
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let m = &buf[..n];
        if from != server || n < 20 || m[8..20] != tid {
            continue;
        }
        let mut pos = 20;
        while pos + 4 <= n {
            let typ = u16::from_be_bytes([m[pos], m[pos + 1]]);
            let len = usize::from(u16::from_be_bytes([m[pos + 2], m[pos + 3]]));
            let v = &m[pos + 4..(pos + 4 + len).min(n)];
            if typ == 0x0020 && v.len() >= 8 && (v[1] == 1 || (v[1] == 2 && v.len() >= 20)) {
                let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC >> 16) as u16;
                sock.set_read_timeout(old).unwrap();
                if v[1] == 1 {
                    let ip = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ MAGIC;
                    return SocketAddr::from((Ipv4Addr::from(ip), port));
                }
                // IPv6: XORed with the magic cookie followed by the transaction ID.
                let mut key = [0u8; 16];
                key[..4].copy_from_slice(&MAGIC.to_be_bytes());
                key[4..].copy_from_slice(&tid);
                let ip: [u8; 16] = std::array::from_fn(|i| v[4 + i] ^ key[i]);
                return SocketAddr::from((Ipv6Addr::from(ip), port));
            }
            pos += 4 + len.div_ceil(4) * 4;
        }
    }
    panic!("no STUN answer with XOR-MAPPED-ADDRESS from {server}");
}
