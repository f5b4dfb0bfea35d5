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
