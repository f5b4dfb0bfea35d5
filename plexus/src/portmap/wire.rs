//! The two fixed-layout protocols routers answer on UDP port 5351: PCP (RFC 6887, only
//! the MAP opcode) and its predecessor NAT-PMP (RFC 6886). Pure: bytes in, a typed reply
//! or a typed error out. Replies come from the network and are treated as hostile: every
//! length, version, opcode and echoed field is checked before anything is believed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The server port of both protocols.
pub const SERVER_PORT: u16 = 5351;
/// PCP version (RFC 6887 §7).
pub const PCP_VERSION: u8 = 2;
/// NAT-PMP version (RFC 6886 §3).
pub const NATPMP_VERSION: u8 = 0;
/// PCP MAP opcode.
pub const PCP_OP_MAP: u8 = 1;
/// The response bit of a PCP opcode byte / a NAT-PMP opcode.
pub const RESPONSE_BIT: u8 = 0x80;
/// IANA protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// A PCP MAP request and the fixed part of its response are both this long.
pub const PCP_MAP_LEN: usize = 60;
/// RFC 6887 §7: a PCP message is at most 1100 bytes.
pub const PCP_MAX_LEN: usize = 1100;
/// NAT-PMP opcodes: external address, UDP mapping.
pub const NATPMP_OP_ADDRESS: u8 = 0;
/// NAT-PMP opcode for a UDP mapping.
pub const NATPMP_OP_MAP_UDP: u8 = 1;

/// What a reply said that made it unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Shorter or longer than the protocol allows, or not a multiple of 4 (PCP).
    Length(usize),
    /// A version this client does not speak (a PCP server answering NAT-PMP with
    /// UNSUPP_VERSION shows up here as 0).
    Version(u8),
    /// Not the response to the request sent (opcode, nonce, protocol or port differ).
    Mismatch(&'static str),
    /// The server's non-zero result code, with its RFC name.
    Result(u16, &'static str),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Length(n) => write!(f, "reply of {n} bytes has the wrong length"),
            WireError::Version(v) => write!(f, "reply has protocol version {v}"),
            WireError::Mismatch(what) => write!(f, "reply does not match the request ({what})"),
            WireError::Result(c, name) => write!(f, "router answered {name} (result code {c})"),
        }
    }
}

/// IPv4 addresses travel as IPv4-mapped IPv6 addresses in PCP.
fn to_v6(ip: Ipv4Addr) -> [u8; 16] {
    ip.to_ipv6_mapped().octets()
}

fn from_v6(b: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(b);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A PCP MAP request for UDP (RFC 6887 §11.1). `lifetime` 0 deletes the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcpMapRequest {
    /// The client's own address (the router checks it against the packet's source).
    pub client: Ipv4Addr,
    /// Identifies the mapping across renewals and the delete.
    pub nonce: [u8; 12],
    /// The internal port to map.
    pub internal_port: u16,
    /// The external port asked for (0: no preference).
    pub suggested_port: u16,
    /// Requested lifetime in seconds.
    pub lifetime: u32,
}

impl PcpMapRequest {
    /// The 60 request bytes.
    pub fn encode(&self) -> [u8; PCP_MAP_LEN] {
        let mut b = [0u8; PCP_MAP_LEN];
        b[0] = PCP_VERSION;
        b[1] = PCP_OP_MAP;
        b[4..8].copy_from_slice(&self.lifetime.to_be_bytes());
        b[8..24].copy_from_slice(&to_v6(self.client));
        b[24..36].copy_from_slice(&self.nonce);
        b[36] = IPPROTO_UDP;
        b[40..42].copy_from_slice(&self.internal_port.to_be_bytes());
        b[42..44].copy_from_slice(&self.suggested_port.to_be_bytes());
        // Suggested external address: the IPv4-mapped "any" (no preference).
        b[44..60].copy_from_slice(&to_v6(Ipv4Addr::UNSPECIFIED));
        b
    }
}

/// A successful PCP MAP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcpMapResponse {
    /// Granted lifetime in seconds.
    pub lifetime: u32,
    /// The server's epoch (seconds since its state began; a drop means it lost mappings).
    pub epoch: u32,
    /// The external port assigned.
    pub external_port: u16,
    /// The external address assigned.
    pub external_ip: IpAddr,
}

/// RFC 6887 §7.4 result codes.
fn pcp_result_name(code: u8) -> &'static str {
    match code {
        1 => "UNSUPP_VERSION",
        2 => "NOT_AUTHORIZED",
        3 => "MALFORMED_REQUEST",
        4 => "UNSUPP_OPCODE",
        5 => "UNSUPP_OPTION",
        6 => "MALFORMED_OPTION",
        7 => "NETWORK_FAILURE",
        8 => "NO_RESOURCES",
        9 => "UNSUPP_PROTOCOL",
        10 => "USER_EX_QUOTA",
        11 => "CANNOT_PROVIDE_EXTERNAL",
        12 => "ADDRESS_MISMATCH",
        13 => "EXCESSIVE_REMOTE_PEERS",
        _ => "an unknown error",
    }
}

/// Decodes a reply to `req`. Options after the MAP payload are skipped (none is needed
/// for a plain MAP, and an unknown one cannot make the answer wrong).
pub fn decode_pcp_map(b: &[u8], req: &PcpMapRequest) -> Result<PcpMapResponse, WireError> {
    if b.len() < 4 || b.len() > PCP_MAX_LEN || b.len() % 4 != 0 {
        return Err(WireError::Length(b.len()));
    }
    if b[0] != PCP_VERSION {
        return Err(WireError::Version(b[0]));
    }
    if b[1] != (PCP_OP_MAP | RESPONSE_BIT) {
        return Err(WireError::Mismatch("opcode"));
    }
    // An error response may be shorter than a MAP response only if it is broken; the
    // result code sits in the common header, so report it whenever it is there.
    if b.len() < 24 {
        return Err(WireError::Length(b.len()));
    }
    if b[3] != 0 {
        return Err(WireError::Result(b[3].into(), pcp_result_name(b[3])));
    }
    if b.len() < PCP_MAP_LEN {
        return Err(WireError::Length(b.len()));
    }
    if b[24..36] != req.nonce {
        return Err(WireError::Mismatch("nonce"));
    }
    if b[36] != IPPROTO_UDP {
        return Err(WireError::Mismatch("protocol"));
    }
    if be16(b, 40) != req.internal_port {
        return Err(WireError::Mismatch("internal port"));
    }
    let mut ext = [0u8; 16];
    ext.copy_from_slice(&b[44..60]);
    let external_port = be16(b, 42);
    if external_port == 0 && req.lifetime != 0 {
        return Err(WireError::Mismatch("external port 0 for a mapping"));
    }
    Ok(PcpMapResponse {
        lifetime: be32(b, 4),
        epoch: be32(b, 8),
        external_port,
        external_ip: from_v6(ext),
    })
}

/// A NAT-PMP UDP mapping request (RFC 6886 §3.3). `lifetime` 0 deletes the mapping.
pub fn encode_natpmp_map(internal_port: u16, suggested_port: u16, lifetime: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0] = NATPMP_VERSION;
    b[1] = NATPMP_OP_MAP_UDP;
    b[4..6].copy_from_slice(&internal_port.to_be_bytes());
    b[6..8].copy_from_slice(&suggested_port.to_be_bytes());
    b[8..12].copy_from_slice(&lifetime.to_be_bytes());
    b
}

/// The NAT-PMP external address request (RFC 6886 §3.2).
pub fn encode_natpmp_address() -> [u8; 2] {
    [NATPMP_VERSION, NATPMP_OP_ADDRESS]
}

/// A successful NAT-PMP UDP mapping response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatPmpMapResponse {
    /// Seconds since the router's mapping table started.
    pub epoch: u32,
    /// The external port assigned.
    pub external_port: u16,
    /// Granted lifetime in seconds.
    pub lifetime: u32,
}

/// RFC 6886 §3.5 result codes.
fn natpmp_result_name(code: u16) -> &'static str {
    match code {
        1 => "Unsupported Version",
        2 => "Not Authorized/Refused",
        3 => "Network Failure",
        4 => "Out of resources",
        5 => "Unsupported opcode",
        _ => "an unknown error",
    }
}

/// The checks both NAT-PMP responses share: length, version, opcode, result code.
fn natpmp_header(b: &[u8], op: u8, len: usize) -> Result<(), WireError> {
    // A result code can arrive in a short error reply (8 bytes); read it first.
    if b.len() < 4 {
        return Err(WireError::Length(b.len()));
    }
    if b[0] != NATPMP_VERSION {
        return Err(WireError::Version(b[0]));
    }
    if b[1] != (op | RESPONSE_BIT) {
        return Err(WireError::Mismatch("opcode"));
    }
    let code = be16(b, 2);
    if code != 0 {
        return Err(WireError::Result(code, natpmp_result_name(code)));
    }
    // Some routers pad; RFC 6886 says to accept longer and ignore the rest, up to a
    // sane bound.
    if b.len() < len || b.len() > 1100 {
        return Err(WireError::Length(b.len()));
    }
    Ok(())
}

/// Decodes the reply to a UDP mapping request for `internal_port`.
pub fn decode_natpmp_map(b: &[u8], internal_port: u16) -> Result<NatPmpMapResponse, WireError> {
    natpmp_header(b, NATPMP_OP_MAP_UDP, 16)?;
    if be16(b, 8) != internal_port {
        return Err(WireError::Mismatch("internal port"));
    }
    let r = NatPmpMapResponse {
        epoch: be32(b, 4),
        external_port: be16(b, 10),
        lifetime: be32(b, 12),
    };
    if r.external_port == 0 && r.lifetime != 0 {
        return Err(WireError::Mismatch("external port 0 for a mapping"));
    }
    Ok(r)
}

/// Decodes the reply to the external address request.
pub fn decode_natpmp_address(b: &[u8]) -> Result<Ipv4Addr, WireError> {
    natpmp_header(b, NATPMP_OP_ADDRESS, 12)?;
    Ok(Ipv4Addr::new(b[8], b[9], b[10], b[11]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn req() -> PcpMapRequest {
        PcpMapRequest {
            client: Ipv4Addr::new(10, 14, 0, 2),
            nonce: *b"0123456789ab",
            internal_port: 40000,
            suggested_port: 40000,
            lifetime: 60,
        }
    }

    /// The request layout of RFC 6887 §7.1 and §11.1, byte by byte.
    #[test]
    fn pcp_map_request_golden() {
        let want = hex("02 01 0000 0000003c 00000000000000000000ffff0a0e0002
             303132333435363738396162 11 000000 9c40 9c40 00000000000000000000ffff00000000");
        assert_eq!(req().encode().to_vec(), want);
    }

    fn pcp_reply(result: u8, nonce: &[u8; 12], proto: u8, iport: u16) -> Vec<u8> {
        let mut b = vec![0u8; 60];
        b[0] = 2;
        b[1] = 0x81;
        b[3] = result;
        b[4..8].copy_from_slice(&60u32.to_be_bytes());
        b[8..12].copy_from_slice(&1234u32.to_be_bytes());
        b[24..36].copy_from_slice(nonce);
        b[36] = proto;
        b[40..42].copy_from_slice(&iport.to_be_bytes());
        b[42..44].copy_from_slice(&40001u16.to_be_bytes());
        b[44..60].copy_from_slice(&Ipv4Addr::new(198, 51, 100, 70).to_ipv6_mapped().octets());
        b
    }

    #[test]
    fn pcp_map_response_decodes() {
        let r = decode_pcp_map(&pcp_reply(0, b"0123456789ab", 17, 40000), &req()).unwrap();
        assert_eq!(
            r,
            PcpMapResponse {
                lifetime: 60,
                epoch: 1234,
                external_port: 40001,
                external_ip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 70)),
            }
        );
        // Trailing options are skipped.
        let mut with_opt = pcp_reply(0, b"0123456789ab", 17, 40000);
        with_opt.extend_from_slice(&[0x80, 0, 0, 0]);
        assert!(decode_pcp_map(&with_opt, &req()).is_ok());
    }

    #[test]
    fn pcp_map_response_rejections() {
        let r = req();
        let ok = pcp_reply(0, b"0123456789ab", 17, 40000);
        assert_eq!(
            decode_pcp_map(&pcp_reply(2, b"0123456789ab", 17, 40000), &r),
            Err(WireError::Result(2, "NOT_AUTHORIZED"))
        );
        assert_eq!(
            decode_pcp_map(&pcp_reply(0, b"xxxxxxxxxxxx", 17, 40000), &r),
            Err(WireError::Mismatch("nonce"))
        );
        assert_eq!(
            decode_pcp_map(&pcp_reply(0, b"0123456789ab", 6, 40000), &r),
            Err(WireError::Mismatch("protocol"))
        );
        assert_eq!(
            decode_pcp_map(&pcp_reply(0, b"0123456789ab", 17, 1), &r),
            Err(WireError::Mismatch("internal port"))
        );
        assert_eq!(decode_pcp_map(&ok[..56], &r), Err(WireError::Length(56)));
        assert_eq!(decode_pcp_map(&ok[..59], &r), Err(WireError::Length(59)));
        assert_eq!(decode_pcp_map(&[], &r), Err(WireError::Length(0)));
        assert_eq!(
            decode_pcp_map(&vec![2u8; 1104], &r),
            Err(WireError::Length(1104))
        );
        let mut v0 = ok.clone();
        v0[0] = 0;
        assert_eq!(decode_pcp_map(&v0, &r), Err(WireError::Version(0)));
        let mut req_op = ok;
        req_op[1] = 1;
        assert_eq!(
            decode_pcp_map(&req_op, &r),
            Err(WireError::Mismatch("opcode"))
        );
    }

    /// RFC 6886 §3.3 request layout.
    #[test]
    fn natpmp_requests_golden() {
        assert_eq!(
            encode_natpmp_map(40000, 40000, 60).to_vec(),
            hex("00 01 0000 9c40 9c40 0000003c")
        );
        assert_eq!(encode_natpmp_address(), [0, 0]);
    }

    /// Replies as miniupnpd sent them in the lab.
    #[test]
    fn natpmp_replies_decode() {
        assert_eq!(
            decode_natpmp_map(&hex("00810000000020789c409c400000003c"), 40000),
            Ok(NatPmpMapResponse {
                epoch: 0x2078,
                external_port: 40000,
                lifetime: 60
            })
        );
        assert_eq!(
            decode_natpmp_address(&hex("0080000000002078c6336446")),
            Ok(Ipv4Addr::new(198, 51, 100, 70))
        );
    }

    #[test]
    fn natpmp_rejections() {
        let ok = hex("00810000000020789c409c400000003c");
        assert_eq!(
            decode_natpmp_map(&ok, 1),
            Err(WireError::Mismatch("internal port"))
        );
        assert_eq!(
            decode_natpmp_map(&ok[..15], 40000),
            Err(WireError::Length(15))
        );
        assert_eq!(
            decode_natpmp_map(&hex("0081000200002078"), 40000),
            Err(WireError::Result(2, "Not Authorized/Refused"))
        );
        assert_eq!(
            decode_natpmp_map(&hex("02810000000020789c409c400000003c"), 40000),
            Err(WireError::Version(2))
        );
        assert_eq!(
            decode_natpmp_address(&ok),
            Err(WireError::Mismatch("opcode"))
        );
        assert_eq!(decode_natpmp_address(&[0]), Err(WireError::Length(1)));
    }
}
