//! `plexus nat`: arguments, validation, and the two output formats.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::Args;

use plexus::nat::{
    Behaviour, FamiliesConfig, Family, FamilyChoice, NatError, NatReport, DEFAULT_PROBE_TIMEOUT,
};
use plexus::portmap::Protocol;

/// What `plexus::portmap::probe` found: each protocol's external address or why not.
pub type PortMapProbe = Vec<(Protocol, Result<IpAddr, String>)>;

/// Default STUN port.
pub const STUN_PORT: u16 = 3478;

/// Text after `plexus nat --help`.
pub const AFTER_HELP: &str = "IPv4 and IPv6 are measured separately and at the same time, each \
against the --stun servers of its family: a name stands for all its addresses (A and AAAA), an IP \
literal for one family. A family without a server, without a route (an IPv6-only host has no IPv4) \
or without an answer is reported unavailable, with the reason.

With an RFC 5780 server (two addresses, e.g. coturn with \
alt-listening-ip) the full profile is measured: mapping (tests I-III), filtering (CHANGE-REQUEST on \
their own sockets, in parallel), hairpin, port preservation. Without RFC 5780, give two --stun \
servers to compare mappings; what cannot be measured is reported as unknown (null in --json). \
IPv6 is usually no NAT: its filtering is then the host's or router's stateful firewall.

--json prints an array of two objects, ipv4 then ipv6: family (\"ipv4\" | \"ipv6\"), available \
(bool), error (why not, only when not available), and when available: nat, mapping, filtering \
(\"endpoint-independent\" | \"address-dependent\" | \"address-and-port-dependent\" | null), hairpin \
(null without NAT), port_preserved, address_stable (bool | null), local, mapped (\"ip:port\", \
\"[ipv6]:port\"), punchable, reason, elapsed_ms, rfc5780, servers, port_mapping (ipv4 only: null \
for ipv6 and with --no-port-mapping, else one entry per protocol: {protocol: \"PCP\" | \"NAT-PMP\" | \
\"UPnP-IGD\", available, external (\"ip\" | null), error (text | null)}), and methods: for each \
kind of peer NAT (none, full cone, address-restricted, port-restricted, symmetric) the method when \
this side invites and when it accepts, with a TURN relay configured (null: no method works).

Exit codes:
  0  at least one address family was measured (whatever the NAT)
  1  no family could be measured (no STUN server answered, no route)
  2  usage error";

/// Arguments of `plexus nat`.
#[derive(Debug, Args)]
pub struct NatArgs {
    /// STUN server HOST[:PORT] (port 3478 by default; a name stands for all its IPv4 and
    /// IPv6 addresses); repeat to compare two servers or to give each family its own.
    #[arg(long = "stun", value_name = "HOST[:PORT]")]
    pub stun: Vec<String>,
    /// Address families to measure: auto (both), ipv4 or ipv6.
    #[arg(long, value_name = "auto|ipv4|ipv6", default_value = "auto")]
    pub family: FamilyChoice,
    /// Local IP:PORT for the primary probe socket of its family (default: any address,
    /// a free port).
    #[arg(long, value_name = "IP:PORT")]
    pub bind: Option<SocketAddr>,
    /// Per-probe deadline in milliseconds: no answer by then counts as filtered.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_PROBE_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub timeout: u64,
    /// Print JSON (an array, one object per family) instead of text for people.
    #[arg(long)]
    pub json: bool,
    /// Do not ask the router which port mapping protocols (PCP, NAT-PMP, UPnP-IGD) it
    /// answers (asked by default, in parallel with STUN).
    #[arg(long)]
    pub no_port_mapping: bool,
    /// Deadline in milliseconds for the router's port mapping answers.
    #[arg(long, value_name = "MS", default_value_t = plexus::defaults::PORTMAP_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub port_mapping_timeout: u64,
}

/// A usage problem, reported with exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Resolves `HOST[:PORT]` (every address of the name, both families), `IP`, `IP:PORT`,
/// `[IPv6]` or `[IPv6]:PORT`.
pub fn parse_servers(s: &str) -> Result<Vec<SocketAddr>, UsageError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, STUN_PORT)]);
    }
    let with_port = if s.contains(':') {
        s.to_string()
    } else {
        format!("{s}:{STUN_PORT}")
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|e| {
            UsageError(format!(
                "--stun {s}: cannot resolve ({e}); give HOST[:PORT] or IP[:PORT]"
            ))
        })?
        .collect();
    if addrs.is_empty() {
        return Err(UsageError(format!(
            "--stun {s}: the name has no address; give an IP instead"
        )));
    }
    Ok(addrs)
}

impl NatArgs {
    /// The validated library configuration.
    pub fn config(&self) -> Result<(FamiliesConfig, bool), UsageError> {
        if self.stun.is_empty() {
            return Err(UsageError(NatError::NoServer.to_string()));
        }
        let mut servers: Vec<SocketAddr> = Vec::new();
        for s in &self.stun {
            for a in parse_servers(s)? {
                if !servers.contains(&a) {
                    servers.push(a);
                }
            }
        }
        if let FamilyChoice::Only(f) = self.family {
            if f.filter(&servers).is_empty() {
                return Err(UsageError(format!(
                    "--family {}: no --stun server has an {f} address",
                    f.as_str()
                )));
            }
        }
        if let Some(b) = self.bind {
            let f = Family::of(&b);
            if !self.family.allows(f) || f.filter(&servers).is_empty() {
                return Err(UsageError(format!(
                    "--bind {b} fixes the {f} socket, but {f} is not measured here (--family {}, \
                     no {f} --stun server?): bind an address of a family that is",
                    self.family
                )));
            }
        }
        Ok((
            FamiliesConfig {
                servers,
                bind: self.bind,
                family: self.family,
                probe_timeout: Duration::from_millis(self.timeout),
            },
            self.json,
        ))
    }
}

/// One family's outcome, as `plexus nat` reports it.
pub type Outcome = (Family, Result<NatReport, String>);

/// Both families in output order, those not measured (`--family`) with the reason.
pub fn outcomes(
    choice: FamilyChoice,
    measured: Vec<(Family, Result<NatReport, NatError>)>,
) -> Vec<Outcome> {
    Family::ALL
        .into_iter()
        .map(|f| {
            let r = measured
                .iter()
                .find(|(g, _)| *g == f)
                .map(|(_, r)| r.clone().map_err(|e| e.to_string()))
                .unwrap_or_else(|| Err(format!("not measured (--family {choice})")));
            (f, r)
        })
        .collect()
}

/// The message of exit code 1: no family was measured.
pub fn none_measured(outcomes: &[Outcome]) -> Option<String> {
    if outcomes.iter().any(|(_, r)| r.is_ok()) {
        return None;
    }
    let why: Vec<String> = outcomes
        .iter()
        .filter_map(|(f, r)| r.as_ref().err().map(|e| format!("{f}: {e}")))
        .collect();
    Some(format!(
        "no address family could be measured. {}",
        why.join("; ")
    ))
}

/// The `--json` array: one object per family, IPv4 first. The router's port mapping
/// protocols map IPv4, so `pm` goes with IPv4 only.
pub fn families_json(outcomes: &[Outcome], pm: Option<&PortMapProbe>) -> serde_json::Value {
    outcomes
        .iter()
        .map(|(f, r)| {
            let mut o = match r {
                Ok(r) => {
                    let pm = pm.filter(|_| *f == Family::V4);
                    let mut v = to_json(r, pm);
                    v["available"] = true.into();
                    v
                }
                Err(e) => serde_json::json!({ "available": false, "error": e }),
            };
            o["family"] = f.as_str().into();
            o
        })
        .collect()
}

/// Text for people: one section per family.
pub fn families_text(outcomes: &[Outcome], pm: Option<&PortMapProbe>) -> String {
    let mut out = String::new();
    for (i, (f, r)) in outcomes.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match r {
            Ok(r) => {
                out.push_str(&format!("=== {f} ===\n"));
                out.push_str(&to_text(r, pm.filter(|_| *f == Family::V4)));
            }
            Err(e) => out.push_str(&format!("=== {f} === unavailable: {e}\n")),
        }
    }
    out
}

fn behaviour(b: Option<Behaviour>) -> serde_json::Value {
    b.map_or(serde_json::Value::Null, |b| b.as_str().into())
}

fn port_mapping_json(pm: Option<&PortMapProbe>) -> serde_json::Value {
    let Some(pm) = pm else {
        return serde_json::Value::Null;
    };
    pm.iter()
        .map(|(p, r)| {
            serde_json::json!({
                "protocol": p.as_str(),
                "available": r.is_ok(),
                "external": r.as_ref().ok().map(ToString::to_string),
                "error": r.as_ref().err(),
            })
        })
        .collect()
}

/// The "router port mapping:" line.
pub fn port_mapping_text(pm: &PortMapProbe) -> String {
    let ok: Vec<_> = pm
        .iter()
        .filter_map(|(p, r)| Some((p, r.as_ref().ok()?)))
        .collect();
    if ok.is_empty() {
        return "none answered".into();
    }
    let names: Vec<&str> = ok.iter().map(|(p, _)| p.as_str()).collect();
    let mut ips: Vec<String> = ok.iter().map(|(_, ip)| ip.to_string()).collect();
    ips.dedup();
    format!(
        "{} available (external {})",
        names.join(", "),
        ips.join(", ")
    )
}

fn method_text(m: &Result<plexus::rendezvous::Method, String>) -> Option<String> {
    m.as_ref().ok().map(plexus::nat::pair::describe)
}

/// This side's facts as a session would send them: a destination-dependent mapping
/// becomes open when the router maps ports (the session asks it for one then).
fn own_facts(r: &NatReport, pm: Option<&PortMapProbe>) -> plexus::rendezvous::NatFacts {
    let mut f = plexus::session::facts_of(r);
    let hard = plexus::nat::pair::Class::of(&f) == plexus::nat::pair::Class::Hard;
    if hard {
        f.port_mapping = pm
            .and_then(|pm| pm.iter().find(|(_, r)| r.is_ok()))
            .map(|(p, _)| p.wire());
    }
    f
}

/// The `--json` object.
pub fn to_json(r: &NatReport, pm: Option<&PortMapProbe>) -> serde_json::Value {
    let methods: serde_json::Map<String, serde_json::Value> =
        plexus::nat::pair::table(&own_facts(r, pm), true)
            .into_iter()
            .map(|row| {
                (
                    row.peer.to_string(),
                    serde_json::json!({
                        "inviting": method_text(&row.inviting),
                        "accepting": method_text(&row.accepting),
                    }),
                )
            })
            .collect();
    serde_json::json!({
        "methods": methods,
        "port_mapping": port_mapping_json(pm),
        "nat": r.nat,
        "mapping": behaviour(r.mapping),
        "filtering": behaviour(r.filtering),
        // A host without NAT reaches its own address directly: nothing to measure.
        "hairpin": if r.nat { serde_json::json!(r.hairpin) } else { serde_json::Value::Null },
        "port_preserved": r.port_preserved,
        "address_stable": r.address_stable,
        "local": r.local.to_string(),
        "mapped": r.mapped.to_string(),
        "punchable": r.punchable,
        "reason": r.reason,
        "elapsed_ms": r.elapsed.as_millis() as u64,
        "rfc5780": r.rfc5780,
        "servers": r.servers.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

fn short(b: Option<Behaviour>, m: &str) -> String {
    match b {
        Some(Behaviour::EndpointIndependent) => format!("endpoint-independent (EI{m})"),
        Some(Behaviour::AddressDependent) => format!("address-dependent (AD{m})"),
        Some(Behaviour::AddressAndPortDependent) => format!("address-and-port-dependent (APD{m})"),
        None => "unknown".into(),
    }
}

fn yes_no(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

/// Text for people.
pub fn to_text(r: &NatReport, pm: Option<&PortMapProbe>) -> String {
    use Behaviour::*;
    let kind = if !r.nat {
        match r.filtering {
            Some(b @ (AddressDependent | AddressAndPortDependent)) => {
                format!("no NAT, stateful firewall: filtering {b}")
            }
            _ => "no NAT (public address)".to_string(),
        }
    } else {
        match (r.mapping, r.filtering) {
            (Some(EndpointIndependent), Some(EndpointIndependent)) => "full cone NAT".into(),
            (Some(EndpointIndependent), Some(AddressDependent)) => {
                "address-restricted cone NAT".into()
            }
            (Some(EndpointIndependent), Some(AddressAndPortDependent)) => {
                "port-restricted cone NAT".into()
            }
            (Some(EndpointIndependent), None) => "cone NAT (filtering unknown)".into(),
            (Some(AddressAndPortDependent), _) => "symmetric NAT".into(),
            (Some(AddressDependent), _) => "address-dependent mapping NAT".into(),
            (None, _) => "NAT of unknown type".into(),
        }
    };
    let servers: Vec<String> = r.servers.iter().map(ToString::to_string).collect();
    let mut table = String::from(
        "with a peer behind      when you invite                                     when you accept\n",
    );
    for row in plexus::nat::pair::table(&own_facts(r, pm), true) {
        let cell = |m: &Result<plexus::rendezvous::Method, String>| {
            method_text(m).unwrap_or_else(|| "no method".into())
        };
        table.push_str(&format!(
            "  {:<21} {:<51} {}\n",
            row.peer,
            cell(&row.inviting),
            cell(&row.accepting)
        ));
    }
    table.push_str("  (relayed: needs a TURN server on the accepting side and --relay fallback)\n");
    let router = pm.map_or(String::new(), |pm| {
        format!("router port mapping: {}\n", port_mapping_text(pm))
    });
    format!(
        "NAT type:        {kind}\n\
         mapping:         {}\n\
         filtering:       {}\n\
         hairpin:         {}\n\
         port preserved:  {}\n\
         address stable:  {}\n\
         local:           {}\n\
         public (mapped): {}\n\
         punch:           {}\n\
         {router}\
         \n{}\n\
         \n{table}\
         \n(measured against {} in {} ms{})\n",
        short(r.mapping, "M"),
        short(r.filtering, "F"),
        if r.nat {
            yes_no(r.hairpin)
        } else {
            "not applicable (no NAT)"
        },
        if r.port_preserved { "yes" } else { "no" },
        yes_no(r.address_stable),
        r.local,
        r.mapped,
        if r.punchable {
            "direct (the peer can predict your public port)"
        } else {
            "per pair, below (the peer cannot predict your public port)"
        },
        r.reason,
        servers.join(", "),
        r.elapsed.as_millis(),
        if r.rfc5780 {
            ", RFC 5780"
        } else {
            "; the server lacks RFC 5780, so the profile is partial"
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> SocketAddr {
        let v = parse_servers(s).unwrap();
        assert_eq!(v.len(), 1, "{s}: {v:?}");
        v[0]
    }

    #[test]
    fn server_forms() {
        assert_eq!(one("203.0.113.3"), "203.0.113.3:3478".parse().unwrap());
        assert_eq!(one("203.0.113.3:9"), "203.0.113.3:9".parse().unwrap());
        assert_eq!(one("[2001:db8::1]"), "[2001:db8::1]:3478".parse().unwrap());
        assert_eq!(one("[2001:db8::1]:9"), "[2001:db8::1]:9".parse().unwrap());
        let local = parse_servers("localhost").unwrap();
        assert!(local
            .iter()
            .all(|a| a.port() == 3478 && a.ip().is_loopback()));
        assert!(parse_servers("no such host.invalid:x").is_err());
    }

    fn args(extra: &[&str]) -> Result<FamiliesConfig, UsageError> {
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            nat: NatArgs,
        }
        let t = <T as clap::Parser>::try_parse_from(["nat"].iter().chain(extra)).unwrap();
        t.nat.config().map(|(c, _)| c)
    }

    #[test]
    fn families_bind_and_servers() {
        let c = args(&["--stun", "203.0.113.3", "--stun", "[2001:db8:0:5::3]"]).unwrap();
        assert_eq!(c.family, FamilyChoice::Auto);
        assert_eq!(c.servers.len(), 2);
        // Duplicates collapse.
        let c = args(&["--stun", "203.0.113.3", "--stun", "203.0.113.3:3478"]).unwrap();
        assert_eq!(c.servers.len(), 1);
        // --bind fixes its own family's socket.
        let c = args(&[
            "--stun",
            "203.0.113.3",
            "--stun",
            "2001:db8::3",
            "--bind",
            "[::]:4000",
        ])
        .unwrap();
        assert_eq!(c.bind, Some("[::]:4000".parse().unwrap()));
        let e = args(&["--stun", "203.0.113.3", "--family", "ipv6"]).unwrap_err();
        assert!(e.0.contains("no --stun server has an IPv6 address"), "{e}");
        let e = args(&["--stun", "203.0.113.3", "--bind", "[::1]:0"]).unwrap_err();
        assert!(e.0.contains("--bind [::1]:0 fixes the IPv6 socket"), "{e}");
        let e = args(&["--stun", "::1", "--family", "ipv6", "--bind", "0.0.0.0:0"]).unwrap_err();
        assert!(e.0.contains("--family ipv6"), "{e}");
        assert!(args(&["--stun", "::1", "--family", "ipv6"]).is_ok());
    }

    #[test]
    fn an_unmeasured_family_is_reported_not_fatal() {
        let none = outcomes(
            FamilyChoice::Only(Family::V4),
            vec![(
                Family::V4,
                Err(NatError::NoRoute {
                    server: "203.0.113.3:3478".parse().unwrap(),
                    error: "Network is unreachable (os error 101)".into(),
                }),
            )],
        );
        let v = families_json(&none, None);
        assert_eq!(v[0]["family"], "ipv4");
        assert_eq!(v[0]["available"], false);
        assert!(v[0]["error"].as_str().unwrap().contains("no route"), "{v}");
        assert_eq!(v[1]["family"], "ipv6");
        assert_eq!(v[1]["error"], "not measured (--family ipv4)");
        let msg = none_measured(&none).unwrap();
        assert!(
            msg.contains("IPv4: no route") && msg.contains("IPv6: not measured"),
            "{msg}"
        );
        let text = families_text(&none, None);
        assert!(
            text.contains("=== IPv6 === unavailable: not measured"),
            "{text}"
        );
    }
}
