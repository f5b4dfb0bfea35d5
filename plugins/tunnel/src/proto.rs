//! The tunnel's two wire formats inside QUIC (authenticated and encrypted by it, but
//! still decoded as hostile: the peer's software may be broken).
//!
//! A TCP connection is one bidirectional stream. The inviter opens it with
//! `[VERSION, name length, name]`; the acceptor answers one status byte ([`OPEN_OK`] or
//! a refusal code) and then both directions carry the connection's bytes.
//!
//! A UDP packet is one QUIC datagram: `[name length, name, flow id (u32 BE), payload]`.
//! The flow id tells the inviter's local clients apart so replies find their sender.

use std::fmt;

/// Version byte opening every stream.
pub const VERSION: u8 = 1;
/// Longest service name.
pub const MAX_NAME: usize = 64;
/// The acceptor connected the stream to the service.
pub const OPEN_OK: u8 = 0;
/// No TCP service of that name is forwarded.
pub const OPEN_UNKNOWN: u8 = 1;
/// The service is forwarded but did not accept the connection.
pub const OPEN_UNREACHABLE: u8 = 2;
/// The opening header was malformed.
pub const OPEN_BAD: u8 = 3;

/// A malformed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// Fewer bytes than the header needs.
    Short,
    /// A stream header of a version this build does not speak.
    Version(u8),
    /// A name that is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    Name,
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::Short => f.write_str("truncated header"),
            ProtoError::Version(v) => write!(f, "unknown protocol version {v} (this is {VERSION})"),
            ProtoError::Name => write!(
                f,
                "bad service name (1 to {MAX_NAME} characters of A-Z a-z 0-9 . _ -)"
            ),
        }
    }
}

impl std::error::Error for ProtoError {}

/// Whether `name` is a valid service name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn name_at(buf: &[u8], len_at: usize) -> Result<(&str, usize), ProtoError> {
    let len = usize::from(*buf.get(len_at).ok_or(ProtoError::Short)?);
    if len == 0 || len > MAX_NAME {
        return Err(ProtoError::Name);
    }
    let end = len_at + 1 + len;
    let raw = buf.get(len_at + 1..end).ok_or(ProtoError::Short)?;
    let name = std::str::from_utf8(raw).map_err(|_| ProtoError::Name)?;
    if !valid_name(name) {
        return Err(ProtoError::Name);
    }
    Ok((name, end))
}

/// The stream-opening header for `name` (a valid name).
pub fn encode_open(name: &str) -> Vec<u8> {
    debug_assert!(valid_name(name));
    let mut v = Vec::with_capacity(2 + name.len());
    v.push(VERSION);
    v.push(name.len() as u8);
    v.extend_from_slice(name.as_bytes());
    v
}

/// How many more bytes the opening header in `first2` (its first two bytes) needs.
pub fn open_rest_len(first2: [u8; 2]) -> Result<usize, ProtoError> {
    if first2[0] != VERSION {
        return Err(ProtoError::Version(first2[0]));
    }
    let len = usize::from(first2[1]);
    if len == 0 || len > MAX_NAME {
        return Err(ProtoError::Name);
    }
    Ok(len)
}

/// The service named by a whole opening header (nothing may follow it).
pub fn decode_open(buf: &[u8]) -> Result<&str, ProtoError> {
    let first2 = [
        *buf.first().ok_or(ProtoError::Short)?,
        *buf.get(1).ok_or(ProtoError::Short)?,
    ];
    open_rest_len(first2)?;
    let (name, end) = name_at(buf, 1)?;
    if end != buf.len() {
        return Err(ProtoError::Name);
    }
    Ok(name)
}

/// A datagram header; the payload follows it.
pub fn encode_datagram(name: &str, flow: u32, payload: &[u8]) -> Vec<u8> {
    debug_assert!(valid_name(name));
    let mut v = Vec::with_capacity(1 + name.len() + 4 + payload.len());
    v.push(name.len() as u8);
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&flow.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Bytes a datagram header for `name` takes.
pub fn datagram_overhead(name: &str) -> usize {
    1 + name.len() + 4
}

/// Service name, flow id and payload of a datagram.
pub fn decode_datagram(buf: &[u8]) -> Result<(&str, u32, &[u8]), ProtoError> {
    let (name, end) = name_at(buf, 0)?;
    let flow = buf.get(end..end + 4).ok_or(ProtoError::Short)?;
    let flow = u32::from_be_bytes([flow[0], flow[1], flow[2], flow[3]]);
    Ok((name, flow, &buf[end + 4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_round_trip_and_refusals() {
        let h = encode_open("ssh");
        assert_eq!(decode_open(&h), Ok("ssh"));
        assert_eq!(open_rest_len([h[0], h[1]]), Ok(3));
        assert_eq!(
            decode_open(&[2, 3, b's', b's', b'h']),
            Err(ProtoError::Version(2))
        );
        assert_eq!(decode_open(&[1, 3, b's']), Err(ProtoError::Short));
        assert_eq!(decode_open(&[1, 0]), Err(ProtoError::Name));
        assert_eq!(decode_open(&[1, 65]), Err(ProtoError::Name));
        assert_eq!(decode_open(&[1, 1, b'/']), Err(ProtoError::Name));
        assert_eq!(decode_open(&[1, 2, 0xc3, 0xa9]), Err(ProtoError::Name));
        assert_eq!(
            decode_open(&[1, 1, b'a', b'b']),
            Err(ProtoError::Name),
            "trailing bytes"
        );
        assert_eq!(decode_open(&[]), Err(ProtoError::Short));
    }

    #[test]
    fn datagram_round_trip_and_refusals() {
        let d = encode_datagram("dns", 0xdead_beef, b"payload");
        assert_eq!(d.len(), datagram_overhead("dns") + 7);
        assert_eq!(
            decode_datagram(&d),
            Ok(("dns", 0xdead_beef, &b"payload"[..]))
        );
        let empty = encode_datagram("x", 1, b"");
        assert_eq!(decode_datagram(&empty), Ok(("x", 1, &b""[..])));
        assert_eq!(decode_datagram(&d[..5]), Err(ProtoError::Short));
        assert_eq!(decode_datagram(&[0]), Err(ProtoError::Name));
        assert_eq!(decode_datagram(&[]), Err(ProtoError::Short));
        assert_eq!(
            decode_datagram(&[1, b' ', 0, 0, 0, 0]),
            Err(ProtoError::Name)
        );
    }
}
