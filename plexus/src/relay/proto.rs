//! TURN (RFC 8656) on top of plexus's STUN codec: the TURN methods and attributes, the
//! XOR address encoding of XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS, ChannelData framing,
//! and [`decode_server`], the one decoder of what a TURN server sends.
//!
//! The STUN codec keeps attributes it does not know as raw bytes; this module gives the
//! TURN ones their meaning. Pure: no sockets, no clock.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::stun::codec::{self, Attribute, Message, StunDecodeError, TransactionId, MAGIC_COOKIE};

/// TURN methods (RFC 8656 §18).
pub mod method {
    /// Allocate.
    pub const ALLOCATE: u16 = 0x003;
    /// Refresh.
    pub const REFRESH: u16 = 0x004;
    /// Send (indication).
    pub const SEND: u16 = 0x006;
    /// Data (indication).
    pub const DATA: u16 = 0x007;
    /// CreatePermission.
    pub const CREATE_PERMISSION: u16 = 0x008;
    /// ChannelBind.
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// TURN and authentication attribute code points (RFC 8656 §18, RFC 8489 §18.3).
pub mod attr {
    /// USERNAME.
    pub const USERNAME: u16 = 0x0006;
    /// CHANNEL-NUMBER.
    pub const CHANNEL_NUMBER: u16 = 0x000c;
    /// LIFETIME (seconds).
    pub const LIFETIME: u16 = 0x000d;
    /// XOR-PEER-ADDRESS.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA.
    pub const DATA: u16 = 0x0013;
    /// REALM.
    pub const REALM: u16 = 0x0014;
    /// NONCE.
    pub const NONCE: u16 = 0x0015;
    /// XOR-RELAYED-ADDRESS.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-TRANSPORT.
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
}

/// IANA protocol number of UDP, the only transport plexus relays.
pub const TRANSPORT_UDP: u8 = 17;
/// Lowest channel number (RFC 8656 §12).
pub const CHANNEL_MIN: u16 = 0x4000;
/// Highest channel number.
pub const CHANNEL_MAX: u16 = 0x4fff;
/// ChannelData header size.
pub const CHANNEL_HEADER: usize = 4;

/// What one datagram from the TURN server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerDatagram<'a> {
    /// A STUN message (response or Data indication).
    Stun(Message),
    /// ChannelData: a peer's datagram on a bound channel.
    ChannelData {
        /// Channel number, 0x4000..=0x4fff.
        channel: u16,
        /// The peer's datagram.
        data: &'a [u8],
    },
}

/// Why a datagram from the TURN server was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnDecodeError {
    /// Not STUN and not ChannelData.
    Stun(StunDecodeError),
    /// ChannelData shorter than its header or its length field.
    ShortChannelData {
        /// Length field.
        header: u16,
        /// Bytes after the header.
        actual: usize,
    },
    /// A channel number outside 0x4000..=0x4fff.
    BadChannel(u16),
}

impl fmt::Display for TurnDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TurnDecodeError::Stun(e) => write!(f, "TURN server datagram: {e}"),
            TurnDecodeError::ShortChannelData { header, actual } => write!(
                f,
                "TURN ChannelData says {header} bytes, the datagram has {actual}"
            ),
            TurnDecodeError::BadChannel(c) => write!(
                f,
                "TURN ChannelData on channel {c:#06x}, outside 0x4000..=0x4fff"
            ),
        }
    }
}

impl std::error::Error for TurnDecodeError {}

/// Decodes one datagram from the TURN server: ChannelData (first two bits 01) or STUN.
pub fn decode_server(b: &[u8]) -> Result<ServerDatagram<'_>, TurnDecodeError> {
    if b.first().is_some_and(|x| x & 0xc0 == 0x40) {
        if b.len() < CHANNEL_HEADER {
            return Err(TurnDecodeError::ShortChannelData {
                header: 0,
                actual: 0,
            });
        }
        let channel = u16::from_be_bytes([b[0], b[1]]);
        let len = u16::from_be_bytes([b[2], b[3]]);
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&channel) {
            return Err(TurnDecodeError::BadChannel(channel));
        }
        let rest = &b[CHANNEL_HEADER..];
        // Over UDP the padding to 4 bytes may or may not be there (RFC 8656 §12.5).
        if rest.len() < usize::from(len) {
            return Err(TurnDecodeError::ShortChannelData {
                header: len,
                actual: rest.len(),
            });
        }
        return Ok(ServerDatagram::ChannelData {
            channel,
            data: &rest[..usize::from(len)],
        });
    }
    codec::decode(b)
        .map(ServerDatagram::Stun)
        .map_err(TurnDecodeError::Stun)
}

/// A ChannelData frame carrying `data` on `channel` (no padding: UDP keeps boundaries).
pub fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHANNEL_HEADER + data.len());
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(data.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(&data[..data.len().min(usize::from(u16::MAX))]);
    out
}

/// The value of an XOR address attribute for `addr` in a message with `tid`.
pub fn xor_addr_value(addr: SocketAddr, tid: &TransactionId) -> Vec<u8> {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(&tid.0);
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut v = Vec::with_capacity(20);
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.extend_from_slice(&[0, 1]);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(key).map(|(a, k)| a ^ k));
        }
        IpAddr::V6(ip) => {
            v.extend_from_slice(&[0, 2]);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(key).map(|(a, k)| a ^ k));
        }
    }
    v
}

/// Decodes an XOR address attribute value; `None` when malformed.
pub fn xor_addr_decode(v: &[u8], tid: &TransactionId) -> Option<SocketAddr> {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(&tid.0);
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip: IpAddr = match (v.get(1)?, v.len()) {
        (1, 8) => {
            let mut o = [0u8; 4];
            for i in 0..4 {
                o[i] = v[4 + i] ^ key[i];
            }
            Ipv4Addr::from(o).into()
        }
        (2, 20) => {
            let mut o = [0u8; 16];
            for i in 0..16 {
                o[i] = v[4 + i] ^ key[i];
            }
            Ipv6Addr::from(o).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A raw attribute.
pub fn raw(kind: u16, value: Vec<u8>) -> Attribute {
    Attribute::Other { kind, value }
}

/// The raw value of the first attribute `kind` in `m`.
pub fn find_raw(m: &Message, kind: u16) -> Option<&[u8]> {
    m.attributes.iter().find_map(|a| match a {
        Attribute::Other { kind: k, value } if *k == kind => Some(value.as_slice()),
        _ => None,
    })
}

/// The first XOR address attribute `kind` in `m`, decoded.
pub fn find_xor_addr(m: &Message, kind: u16) -> Option<SocketAddr> {
    xor_addr_decode(find_raw(m, kind)?, &m.transaction_id)
}

/// LIFETIME in seconds, when present and well-formed.
pub fn find_lifetime(m: &Message) -> Option<u32> {
    let v = find_raw(m, attr::LIFETIME)?;
    Some(u32::from_be_bytes(v.try_into().ok()?))
}
