//! NAT behaviour vocabulary (RFC 4787 / RFC 5780) and discovery.

use std::fmt;
use std::str::FromStr;

/// A mapping or filtering behaviour (RFC 4787 §4.1, §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// Depends on nothing about the remote endpoint (EIM / EIF).
    EndpointIndependent,
    /// Depends on the remote address only (ADM / ADF).
    AddressDependent,
    /// Depends on the remote address and port (APDM "symmetric" / APDF).
    AddressAndPortDependent,
}

impl Behaviour {
    /// The spelling used in `--json` output and in rendezvous messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Behaviour::EndpointIndependent => "endpoint-independent",
            Behaviour::AddressDependent => "address-dependent",
            Behaviour::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Behaviour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "endpoint-independent" => Ok(Behaviour::EndpointIndependent),
            "address-dependent" => Ok(Behaviour::AddressDependent),
            "address-and-port-dependent" => Ok(Behaviour::AddressAndPortDependent),
            other => Err(format!(
                "unknown NAT behaviour {other:?}: expected endpoint-independent, \
                 address-dependent or address-and-port-dependent"
            )),
        }
    }
}

mod family;
#[cfg(test)]
mod loopback;
pub mod pair;
pub mod plan;
#[cfg(test)]
mod sim;

use std::net::{SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

pub use family::{Family, FamilyChoice};

use crate::stun::{StunError, Timing};
use plan::{Discovery, Findings, Plan, SOCKETS};

/// Why discovery could not run or produced nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NatError {
    /// No STUN server answered test I within the probe deadline.
    NoAnswer {
        /// The servers asked.
        servers: Vec<SocketAddr>,
        /// The per-probe deadline.
        timeout: Duration,
    },
    /// The server answered with an error (or a broken response).
    Server(StunError),
    /// No server was given.
    NoServer,
    /// The host has no route toward the server (no address of its family, no default
    /// route): that family is not available here.
    NoRoute {
        /// The server.
        server: SocketAddr,
        /// The OS error text.
        error: String,
    },
    /// No server of this family was given.
    NoFamilyServer(Family),
    /// A local socket could not be bound or used.
    Io {
        /// What was being done.
        what: String,
        /// The OS error text.
        error: String,
    },
}

impl fmt::Display for NatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatError::NoAnswer { servers, timeout } => {
                let list: Vec<String> = servers.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "no STUN server answered within {} ms ({}): check the address and port \
                     (default 3478), that outgoing UDP is allowed, or raise --timeout",
                    timeout.as_millis(),
                    list.join(", ")
                )
            }
            NatError::Server(e) => write!(f, "{e}"),
            NatError::NoServer => write!(
                f,
                "pass --stun HOST[:PORT] (a STUN server with RFC 5780, e.g. coturn, gives the full profile)"
            ),
            NatError::NoRoute { server, error } => write!(
                f,
                "no route to the STUN server {server} ({error}): this host has no {} connectivity",
                Family::of(server)
            ),
            NatError::NoFamilyServer(fam) => write!(
                f,
                "no {fam} STUN server: give --stun with an {fam} address, or a name that resolves to one"
            ),
            NatError::Io { what, error } => write!(f, "cannot {what}: {error}"),
        }
    }
}

impl std::error::Error for NatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NatError::Server(e) => Some(e),
            _ => None,
        }
    }
}

/// What to probe and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverConfig {
    /// STUN servers (resolved); the first one is used for the RFC 5780 tests.
    pub servers: Vec<SocketAddr>,
    /// Local endpoint of the primary socket (`0.0.0.0:0` for any).
    pub bind: SocketAddr,
    /// Per-probe deadline: no answer by then means filtered.
    pub probe_timeout: Duration,
}

/// Default per-probe deadline: 3 sends inside it on a LAN-to-Internet path.
pub const DEFAULT_PROBE_TIMEOUT: Duration = crate::defaults::DISCOVERY_TIMEOUT;

/// What discovery measured ([`Findings`], reached through this report as
/// `report.mapping` etc.), and what follows from it.
#[derive(Debug, Clone, PartialEq)]
pub struct NatReport {
    /// The measured behaviour and endpoints, as the discovery plan found them.
    pub findings: Findings,
    /// Whether this side can take part in a direct punch.
    pub punchable: bool,
    /// Why (not), and what would help; a caution when something is unknown.
    pub reason: String,
    /// Time the whole profile took.
    pub elapsed: Duration,
    /// The servers asked.
    pub servers: Vec<SocketAddr>,
}

// A report *is* its findings plus a verdict: reading `report.mapping` needs no copy.
impl std::ops::Deref for NatReport {
    type Target = Findings;
    fn deref(&self) -> &Findings {
        &self.findings
    }
}

/// Reason given for a symmetric mapping.
pub const SYMMETRIC_REASON: &str = "address-and-port-dependent (symmetric) mapping: the peer cannot \
predict your public port. Peers with no NAT, a full-cone or an address-restricted NAT still connect \
directly, port-restricted peers by port prediction (birthday probing), and another symmetric NAT \
only through a TURN relay (--relay fallback --turn HOST); UPnP/NAT-PMP/PCP on your router or a port \
forward makes this side open";

/// Decides `punchable` (the peer can predict this side's public endpoint, so a plain
/// simultaneous punch works from here) and `reason`. Only a mapping known to depend on
/// the destination makes it false; an unknown mapping is reported punchable with a
/// plain caution. What each pair then uses is [`pair::table`].
pub fn judge(f: &Findings) -> (bool, String) {
    if !f.nat {
        // No NAT, but often a stateful firewall (IPv6's usual case): its filtering
        // decides whether the peer can come in unasked.
        return (
            true,
            match f.filtering {
                Some(Behaviour::EndpointIndependent) => {
                    "no NAT: this host has a public address and nothing filters it; the peer can \
                     reach it directly"
                        .into()
                }
                Some(b) => format!(
                    "no NAT, stateful firewall: filtering {b}; your public endpoint is your local \
                     one, so the peer can predict it, and the simultaneous punch opens the firewall"
                ),
                None => "no NAT: this host has a public address; filtering unknown (a firewall \
                         may drop what this host did not ask for, the simultaneous punch opens it)"
                    .into(),
            },
        );
    }
    match f.mapping {
        Some(Behaviour::EndpointIndependent) => (
            true,
            match f.filtering {
                Some(Behaviour::EndpointIndependent) => {
                    "endpoint-independent mapping and filtering (full cone): anyone can reach your public endpoint".into()
                }
                Some(b) => format!(
                    "endpoint-independent mapping: the peer can predict your public port; {b} filtering \
                     is opened by the punch itself"
                ),
                None => "endpoint-independent mapping: the peer can predict your public port; filtering unknown".into(),
            },
        ),
        Some(Behaviour::AddressDependent) => (
            false,
            "address-dependent mapping: your public port changes with the peer's address, so the peer \
             cannot predict it; plexus plans it like a symmetric NAT (direct with open peers, port \
             prediction with port-restricted ones, a TURN relay with another such NAT)"
                .into(),
        ),
        Some(Behaviour::AddressAndPortDependent) => (false, SYMMETRIC_REASON.into()),
        None if f.mapping_varies => (
            false,
            "the two STUN servers saw different public ports: the mapping depends on the destination \
             (address-dependent or symmetric; these servers cannot tell which), so the peer cannot \
             predict your port; give an RFC 5780 server to know, since the invite then says mapping \
             unknown and the peer plans a direct punch"
                .into(),
        ),
        None => (
            true,
            "mapping unknown (the server does not support RFC 5780 and only one server answered): a \
             punch may work; give an RFC 5780 server (e.g. coturn) or a second --stun server to know"
                .into(),
        ),
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NatError {
    let what = what.into();
    move |e| NatError::Io {
        what,
        error: e.to_string(),
    }
}

/// "No route" (no address of that family, no default route) is a fact about the host,
/// not a failure: the caller reports the family unavailable.
fn route_err(server: SocketAddr, e: std::io::Error) -> NatError {
    let no_route = matches!(
        e.raw_os_error(),
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT)
    );
    if no_route {
        NatError::NoRoute {
            server,
            error: e.to_string(),
        }
    } else {
        io_err(format!("find a route to {server}"))(e)
    }
}

/// The report of what `f` says, `elapsed` after the start.
fn report_of(f: &Findings, elapsed: Duration, servers: &[SocketAddr]) -> NatReport {
    let (punchable, reason) = judge(f);
    NatReport {
        findings: f.clone(),
        punchable,
        reason,
        elapsed,
        servers: servers.to_vec(),
    }
}

/// Runs the full profile with real sockets, driven by [`crate::net::drive`] from the
/// calling thread.
pub fn discover(cfg: &DiscoverConfig) -> Result<NatReport, NatError> {
    discover_staged(cfg, |_| {})
}

/// Runs the full profile like [`discover()`], and hands `on_mapping` a first report as
/// soon as the mapping behaviour is known ([`plan::Event::MappingKnown`]): there,
/// filtering and hairpin are `None` unless already measured. A filtering NAT's verdict
/// is "no answer within the probe deadline", so the full report comes a whole deadline
/// later; a caller that only needs the mapping can go on meanwhile. `on_mapping` is
/// called at most once, from the calling thread, and not at all when no server answered.
pub fn discover_staged(
    cfg: &DiscoverConfig,
    on_mapping: impl FnOnce(&NatReport),
) -> Result<NatReport, NatError> {
    let start = Instant::now();
    let Some(&first) = cfg.servers.first() else {
        return Err(NatError::NoServer);
    };
    let mut socks = Vec::with_capacity(SOCKETS);
    for i in 0..SOCKETS {
        let addr = if i == plan::PRIMARY {
            cfg.bind
        } else {
            SocketAddr::new(cfg.bind.ip(), 0)
        };
        socks.push(UdpSocket::bind(addr).map_err(io_err(format!("bind UDP {addr}")))?);
    }
    let mut locals = [cfg.bind; SOCKETS];
    for (l, s) in locals.iter_mut().zip(&socks) {
        *l = s.local_addr().map_err(io_err("read the local address"))?;
        if l.ip().is_unspecified() {
            l.set_ip(crate::net::route_ip(first).map_err(|e| route_err(first, e))?);
        }
    }
    let plan = Plan {
        servers: cfg.servers.clone(),
        locals,
        timing: Timing::for_deadline(cfg.probe_timeout),
    };
    let mut core = Discovery::new(plan, start);
    let mut on_mapping = Some(on_mapping);
    let sockets: Vec<&UdpSocket> = socks.iter().collect();
    crate::net::drive(&sockets, &mut core, |core, event, _| {
        if event == plan::Event::MappingKnown {
            if let (Some(f), Ok(findings)) = (on_mapping.take(), core.findings()) {
                f(&report_of(&findings, start.elapsed(), &cfg.servers));
            }
        }
        ControlFlow::Continue(())
    })
    .map_err(|e| NatError::Io {
        what: e.what.to_string(),
        error: e.source.to_string(),
    })?;
    let f = core.findings()?;
    Ok(report_of(&f, start.elapsed(), &cfg.servers))
}

/// What to probe in each address family ([`discover_families`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamiliesConfig {
    /// STUN servers of either family (resolved); each family asks its own, first one
    /// preferred for the RFC 5780 tests.
    pub servers: Vec<SocketAddr>,
    /// Local endpoint of the primary socket in its own family; the other family binds
    /// any address and a free port.
    pub bind: Option<SocketAddr>,
    /// Which families to measure.
    pub family: FamilyChoice,
    /// Per-probe deadline: no answer by then means filtered.
    pub probe_timeout: Duration,
}

/// Runs [`discover()`] in every family `cfg.family` allows, each on its own sockets and
/// thread at the same time (so both cost one profile's time), in [`Family::ALL`] order.
/// A family without a server, a route or an answer is an `Err` of its own: the other
/// one is still measured.
pub fn discover_families(cfg: &FamiliesConfig) -> Vec<(Family, Result<NatReport, NatError>)> {
    let one = |fam: Family| {
        let servers = fam.filter(&cfg.servers);
        if servers.is_empty() {
            return Err(NatError::NoFamilyServer(fam));
        }
        let bind = cfg
            .bind
            .filter(|b| Family::of(b) == fam)
            .unwrap_or_else(|| SocketAddr::new(fam.unspecified(), 0));
        discover(&DiscoverConfig {
            servers,
            bind,
            probe_timeout: cfg.probe_timeout,
        })
    };
    let families: Vec<Family> = Family::ALL
        .into_iter()
        .filter(|f| cfg.family.allows(*f))
        .collect();
    std::thread::scope(|s| {
        let runs: Vec<_> = families
            .iter()
            .map(|&fam| (fam, s.spawn(move || one(fam))))
            .collect();
        runs.into_iter()
            .map(|(fam, t)| {
                let r = t.join().unwrap_or_else(|_| {
                    Err(NatError::Io {
                        what: format!("measure {fam}"),
                        error: "the discovery thread panicked".into(),
                    })
                });
                (fam, r)
            })
            .collect()
    })
}
