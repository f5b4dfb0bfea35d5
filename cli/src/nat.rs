//! `plexus nat`: arguments, validation, and the two output formats.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::Args;

use plexus::nat::{Behaviour, DiscoverConfig, NatReport, DEFAULT_PROBE_TIMEOUT};
use plexus::portmap::Protocol;

/// What `plexus::portmap::probe` found: each protocol's external address or why not.
pub type PortMapProbe = Vec<(Protocol, Result<IpAddr, String>)>;

/// Default STUN port.
pub const STUN_PORT: u16 = 3478;

/// Text after `plexus nat --help`.
pub const AFTER_HELP: &str = "With an RFC 5780 server (two addresses, e.g. coturn with \
alt-listening-ip) the full profile is measured: mapping (tests I-III), filtering (CHANGE-REQUEST on \
their own sockets, in parallel), hairpin, port preservation. Without RFC 5780, give two --stun \
servers to compare mappings; what cannot be measured is reported as unknown (null in --json).

--json prints one object: nat, mapping, filtering (\"endpoint-independent\" | \"address-dependent\" | \
\"address-and-port-dependent\" | null), hairpin, port_preserved, address_stable (bool | null), local, \
mapped (\"ip:port\"), punchable, reason, elapsed_ms, rfc5780, servers, port_mapping (null with \
--no-port-mapping, else one entry per protocol: {protocol: \"PCP\" | \"NAT-PMP\" | \"UPnP-IGD\", \
available, external (\"ip\" | null), error (text | null)}), and methods: for each kind of peer NAT \
(none, full cone, address-restricted, port-restricted, symmetric) the method when this side invites \
and when it accepts, with a TURN relay configured (null: no method works).

Exit codes:
  0  discovery completed (whatever the NAT)
  1  no STUN server answered
  2  usage error";

/// Arguments of `plexus nat`.
#[derive(Debug, Args)]
pub struct NatArgs {
    /// STUN server HOST[:PORT] (port 3478 by default); repeat to compare two servers.
    #[arg(long = "stun", value_name = "HOST[:PORT]")]
    pub stun: Vec<String>,
    /// Local IP:PORT for the primary probe socket (default: any address, a free port).
    #[arg(long, value_name = "IP:PORT")]
    pub bind: Option<SocketAddr>,
    /// Per-probe deadline in milliseconds: no answer by then counts as filtered.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_PROBE_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub timeout: u64,
    /// Print one JSON object instead of text for people.
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

/// Resolves `HOST[:PORT]`, `IP`, `IP:PORT`, `[IPv6]` or `[IPv6]:PORT`.
pub fn parse_server(s: &str) -> Result<SocketAddr, UsageError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, STUN_PORT));
    }
    let with_port = if s.contains(':') {
        s.to_string()
    } else {
        format!("{s}:{STUN_PORT}")
    };
    let mut addrs = with_port.to_socket_addrs().map_err(|e| {
        UsageError(format!(
            "--stun {s}: cannot resolve ({e}); give HOST[:PORT] or IP[:PORT]"
        ))
    })?;
    addrs.next().ok_or_else(|| {
        UsageError(format!(
            "--stun {s}: the name has no address; give an IP instead"
        ))
    })
}

impl NatArgs {
    /// The validated library configuration.
    pub fn config(&self) -> Result<(DiscoverConfig, bool), UsageError> {
        if self.stun.is_empty() {
            return Err(UsageError(plexus::nat::NatError::NoServer.to_string()));
        }
        let servers = self
            .stun
            .iter()
            .map(|s| parse_server(s))
            .collect::<Result<Vec<_>, _>>()?;
        let bind = match self.bind {
            Some(b) => {
                if servers.iter().any(|s| s.is_ipv4() != b.is_ipv4()) {
                    return Err(UsageError(format!(
                        "--bind {b} and the STUN server(s) are of different IP versions: use one family"
                    )));
                }
                b
            }
            None if servers[0].is_ipv6() => "[::]:0"
                .parse()
                .map_err(|_| UsageError("internal".into()))?,
            None => "0.0.0.0:0"
                .parse()
                .map_err(|_| UsageError("internal".into()))?,
        };
        Ok((
            DiscoverConfig {
                servers,
                bind,
                probe_timeout: Duration::from_millis(self.timeout),
            },
            self.json,
        ))
    }
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
        "hairpin": r.hairpin,
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
        "no NAT (public address)".to_string()
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
        yes_no(r.hairpin),
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

    #[test]
    fn server_forms() {
        assert_eq!(
            parse_server("203.0.113.3").unwrap(),
            "203.0.113.3:3478".parse().unwrap()
        );
        assert_eq!(
            parse_server("203.0.113.3:9").unwrap(),
            "203.0.113.3:9".parse().unwrap()
        );
        assert_eq!(
            parse_server("[2001:db8::1]").unwrap(),
            "[2001:db8::1]:3478".parse().unwrap()
        );
        assert_eq!(parse_server("localhost").unwrap().port(), 3478);
        assert!(parse_server("no such host.invalid:x").is_err());
    }
}
