//! IP address families: discovery, candidates and the corridor are per family, because
//! each family has its own NAT (or none: IPv6 is usually a stateful firewall only), its
//! own mapping and its own socket.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Both, in the order output lists them.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family of an address.
    pub fn of_ip(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The family of an endpoint.
    pub fn of(addr: &SocketAddr) -> Family {
        Family::of_ip(addr.ip())
    }

    /// The spelling in `--json` output and settings: `ipv4`, `ipv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    /// The name people write: `IPv4`, `IPv6`.
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The unspecified address of this family (`0.0.0.0`, `::`).
    pub fn unspecified(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }

    /// The members of `addrs` of this family, in order.
    pub fn filter(self, addrs: &[SocketAddr]) -> Vec<SocketAddr> {
        addrs
            .iter()
            .copied()
            .filter(|a| Family::of(a) == self)
            .collect()
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Which families a side uses (the `family` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FamilyChoice {
    /// Every family that has a route and a STUN server (the default).
    #[default]
    Auto,
    /// This family only.
    Only(Family),
}

impl FamilyChoice {
    /// Whether `f` may be used.
    pub fn allows(self, f: Family) -> bool {
        match self {
            FamilyChoice::Auto => true,
            FamilyChoice::Only(g) => f == g,
        }
    }

    /// The spelling in settings: `auto`, `ipv4`, `ipv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            FamilyChoice::Auto => "auto",
            FamilyChoice::Only(f) => f.as_str(),
        }
    }
}

impl fmt::Display for FamilyChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FamilyChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(FamilyChoice::Auto),
            "ipv4" => Ok(FamilyChoice::Only(Family::V4)),
            "ipv6" => Ok(FamilyChoice::Only(Family::V6)),
            other => Err(format!(
                "unknown address family {:?}: expected auto, ipv4 or ipv6",
                other.escape_debug().to_string()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_of_addresses_and_choices() {
        let a: SocketAddr = "203.0.113.1:3478".parse().unwrap();
        let b: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
        assert_eq!((Family::of(&a), Family::of(&b)), (Family::V4, Family::V6));
        assert_eq!(Family::V6.filter(&[a, b, a]), vec![b]);
        assert_eq!("ipv6".parse(), Ok(FamilyChoice::Only(Family::V6)));
        assert!(FamilyChoice::Auto.allows(Family::V4) && FamilyChoice::Auto.allows(Family::V6));
        assert!(!FamilyChoice::Only(Family::V4).allows(Family::V6));
        assert!("IPv6"
            .parse::<FamilyChoice>()
            .unwrap_err()
            .contains("auto, ipv4 or ipv6"));
        for c in ["auto", "ipv4", "ipv6"] {
            assert_eq!(c.parse::<FamilyChoice>().unwrap().as_str(), c);
        }
    }
}
