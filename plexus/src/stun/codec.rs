//! STUN message codec (RFC 8489/5389, RFC 5780, RFC 3489 legacy attributes).
//!
//! Pure: [`decode`] takes bytes and returns a [`Message`] or a [`StunDecodeError`];
//! [`Message::encode`] writes bytes. Unknown attributes are kept raw so a decoded
//! message re-encodes byte for byte.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The fixed value in bytes 4..8 of every RFC 5389+ message.
pub const MAGIC_COOKIE: u32 = 0x2112_a442;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 20;
/// The Binding method.
pub const METHOD_BINDING: u16 = 0x001;

/// Attribute code points.
pub mod attr {
    /// RFC 8489 MAPPED-ADDRESS.
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// RFC 5780 RESPONSE-PORT.
    pub const RESPONSE_PORT: u16 = 0x0027;
    /// RFC 5780 CHANGE-REQUEST.
    pub const CHANGE_REQUEST: u16 = 0x0003;
    /// RFC 3489 SOURCE-ADDRESS.
    pub const SOURCE_ADDRESS: u16 = 0x0004;
    /// RFC 3489 CHANGED-ADDRESS.
    pub const CHANGED_ADDRESS: u16 = 0x0005;
    /// RFC 8489 USERNAME (kept raw).
    pub const USERNAME: u16 = 0x0006;
    /// RFC 8489 MESSAGE-INTEGRITY.
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// RFC 8489 ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// RFC 8489 UNKNOWN-ATTRIBUTES.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000a;
    /// RFC 5780 PADDING.
    pub const PADDING: u16 = 0x0026;
    /// RFC 8489 XOR-MAPPED-ADDRESS.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// RFC 8489 SOFTWARE.
    pub const SOFTWARE: u16 = 0x8022;
    /// RFC 8489 FINGERPRINT.
    pub const FINGERPRINT: u16 = 0x8028;
    /// RFC 5780 RESPONSE-ORIGIN.
    pub const RESPONSE_ORIGIN: u16 = 0x802b;
    /// RFC 5780 OTHER-ADDRESS.
    pub const OTHER_ADDRESS: u16 = 0x802c;
}

/// XORed into the CRC-32 of a FINGERPRINT ("STUN").
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// The four message classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A request (expects a response).
    Request,
    /// An indication (no response).
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// A 96-bit transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

/// One attribute, typed where plexus understands it, raw otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// MAPPED-ADDRESS.
    MappedAddress(SocketAddr),
    /// XOR-MAPPED-ADDRESS (already un-XORed).
    XorMappedAddress(SocketAddr),
    /// ERROR-CODE: code 300..699 and reason phrase.
    ErrorCode {
        /// Class*100 + number.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
    /// UNKNOWN-ATTRIBUTES.
    UnknownAttributes(Vec<u16>),
    /// SOFTWARE.
    Software(String),
    /// FINGERPRINT value as carried.
    Fingerprint(u32),
    /// MESSAGE-INTEGRITY HMAC as carried.
    MessageIntegrity([u8; 20]),
    /// CHANGE-REQUEST flags.
    ChangeRequest {
        /// Ask the server to answer from its other IP.
        ip: bool,
        /// Ask the server to answer from its other port.
        port: bool,
    },
    /// RESPONSE-ORIGIN.
    ResponseOrigin(SocketAddr),
    /// OTHER-ADDRESS.
    OtherAddress(SocketAddr),
    /// RESPONSE-PORT.
    ResponsePort(u16),
    /// PADDING.
    Padding(Vec<u8>),
    /// CHANGED-ADDRESS (RFC 3489).
    ChangedAddress(SocketAddr),
    /// SOURCE-ADDRESS (RFC 3489).
    SourceAddress(SocketAddr),
    /// Anything else, kept raw.
    Other {
        /// Code point.
        kind: u16,
        /// Value without padding.
        value: Vec<u8>,
    },
}

/// A decoded STUN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Message class.
    pub class: Class,
    /// Method (12 bits).
    pub method: u16,
    /// Transaction id.
    pub transaction_id: TransactionId,
    /// Attributes in wire order.
    pub attributes: Vec<Attribute>,
    /// Byte used to pad attribute values to 4 bytes; any value is legal, kept so
    /// a decoded message re-encodes byte for byte.
    pub padding: u8,
}

/// Why bytes are not a STUN message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StunDecodeError {
    /// Fewer than 20 bytes.
    ShortHeader(usize),
    /// The two top bits are not 00 (not STUN; maybe another protocol on the port).
    NotStun,
    /// Bytes 4..8 are not the magic cookie (RFC 3489-only peer or not STUN).
    BadCookie(u32),
    /// Header length not a multiple of 4.
    UnalignedLength(u16),
    /// Header length does not match the datagram.
    LengthMismatch {
        /// Length in the header.
        header: u16,
        /// Bytes after the header.
        actual: usize,
    },
    /// An attribute runs past the end of the message.
    AttributePastEnd(u16),
    /// An address attribute has a family other than 1 (IPv4) or 2 (IPv6).
    BadAddressFamily(u16, u8),
    /// An attribute's length is wrong for its type.
    BadAttributeLength(u16, u16),
    /// An ERROR-CODE outside 300..699 or a text attribute not UTF-8.
    BadValue(u16),
    /// FINGERPRINT does not match the message (corrupted or not STUN).
    BadFingerprint,
}

impl fmt::Display for StunDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StunDecodeError::ShortHeader(n) => {
                write!(f, "STUN message too short: {n} bytes, a header needs 20")
            }
            StunDecodeError::NotStun => {
                write!(f, "not a STUN message: the two top bits are not 00")
            }
            StunDecodeError::BadCookie(c) => write!(
                f,
                "not an RFC 5389 STUN message: magic cookie {c:#010x}, expected 0x2112a442"
            ),
            StunDecodeError::UnalignedLength(l) => {
                write!(f, "STUN length {l} is not a multiple of 4")
            }
            StunDecodeError::LengthMismatch { header, actual } => write!(
                f,
                "STUN header says {header} bytes of attributes, the datagram has {actual}"
            ),
            StunDecodeError::AttributePastEnd(t) => write!(
                f,
                "STUN attribute {t:#06x} runs past the end of the message"
            ),
            StunDecodeError::BadAddressFamily(t, fam) => write!(
                f,
                "STUN attribute {t:#06x} has address family {fam}, expected 1 (IPv4) or 2 (IPv6)"
            ),
            StunDecodeError::BadAttributeLength(t, l) => {
                write!(f, "STUN attribute {t:#06x} has invalid length {l}")
            }
            StunDecodeError::BadValue(t) => {
                write!(f, "STUN attribute {t:#06x} has an invalid value")
            }
            StunDecodeError::BadFingerprint => write!(
                f,
                "STUN FINGERPRINT does not match the message (corrupted in transit)"
            ),
        }
    }
}

impl std::error::Error for StunDecodeError {}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}
fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn class_of(ty: u16) -> Class {
    match ty & 0x0110 {
        0x0000 => Class::Request,
        0x0010 => Class::Indication,
        0x0100 => Class::Success,
        _ => Class::Error,
    }
}
fn method_of(ty: u16) -> u16 {
    (ty & 0x000f) | ((ty & 0x00e0) >> 1) | ((ty & 0x3e00) >> 2)
}
fn message_type(class: Class, method: u16) -> u16 {
    let c = match class {
        Class::Request => 0x0000,
        Class::Indication => 0x0010,
        Class::Success => 0x0100,
        Class::Error => 0x0110,
    };
    (method & 0x000f) | ((method & 0x0070) << 1) | ((method & 0x0f80) << 2) | c
}

/// Checks the header of `b` and returns (type, transaction id); `Ok(None)`-free helper.
fn header(b: &[u8]) -> Result<(u16, TransactionId), StunDecodeError> {
    if b.len() < HEADER_LEN {
        return Err(StunDecodeError::ShortHeader(b.len()));
    }
    if b[0] & 0xc0 != 0 {
        return Err(StunDecodeError::NotStun);
    }
    let cookie = be32(b, 4);
    if cookie != MAGIC_COOKIE {
        return Err(StunDecodeError::BadCookie(cookie));
    }
    let len = be16(b, 2);
    if len % 4 != 0 {
        return Err(StunDecodeError::UnalignedLength(len));
    }
    if usize::from(len) != b.len() - HEADER_LEN {
        return Err(StunDecodeError::LengthMismatch {
            header: len,
            actual: b.len() - HEADER_LEN,
        });
    }
    let mut tid = [0u8; 12];
    tid.copy_from_slice(&b[8..20]);
    Ok((be16(b, 0), TransactionId(tid)))
}

/// True when `b` looks like a STUN message (cheap demultiplexing check).
pub fn is_stun(b: &[u8]) -> bool {
    header(b).is_ok()
}

fn xor_key(tid: &TransactionId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    k[4..].copy_from_slice(&tid.0);
    k
}

fn decode_addr(
    kind: u16,
    v: &[u8],
    xor: Option<&TransactionId>,
) -> Result<SocketAddr, StunDecodeError> {
    if v.len() < 4 {
        return Err(StunDecodeError::BadAttributeLength(kind, v.len() as u16));
    }
    let fam = v[1];
    let key = xor.map(xor_key);
    let mut port = be16(v, 2);
    if key.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match (fam, v.len()) {
        (1, 8) => {
            let mut o = [v[4], v[5], v[6], v[7]];
            if let Some(k) = key {
                for (i, b) in o.iter_mut().enumerate() {
                    *b ^= k[i];
                }
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (2, 20) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&v[4..20]);
            if let Some(k) = key {
                for (i, b) in o.iter_mut().enumerate() {
                    *b ^= k[i];
                }
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        (1 | 2, n) => return Err(StunDecodeError::BadAttributeLength(kind, n as u16)),
        (f, _) => return Err(StunDecodeError::BadAddressFamily(kind, f)),
    };
    Ok(SocketAddr::new(ip, port))
}

fn encode_addr(out: &mut Vec<u8>, a: SocketAddr, xor: Option<&TransactionId>) {
    let key = xor.map(xor_key);
    let mut port = a.port();
    if key.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let mut ip: Vec<u8> = match a.ip() {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    };
    if let Some(k) = key {
        for (i, b) in ip.iter_mut().enumerate() {
            *b ^= k[i];
        }
    }
    out.push(0);
    out.push(if ip.len() == 4 { 1 } else { 2 });
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&ip);
}

fn text(kind: u16, v: &[u8]) -> Result<String, StunDecodeError> {
    String::from_utf8(v.to_vec()).map_err(|_| StunDecodeError::BadValue(kind))
}

fn decode_attr(kind: u16, v: &[u8], tid: &TransactionId) -> Result<Attribute, StunDecodeError> {
    let bad_len = || StunDecodeError::BadAttributeLength(kind, v.len() as u16);
    Ok(match kind {
        attr::MAPPED_ADDRESS => Attribute::MappedAddress(decode_addr(kind, v, None)?),
        attr::XOR_MAPPED_ADDRESS => Attribute::XorMappedAddress(decode_addr(kind, v, Some(tid))?),
        attr::RESPONSE_ORIGIN => Attribute::ResponseOrigin(decode_addr(kind, v, None)?),
        attr::OTHER_ADDRESS => Attribute::OtherAddress(decode_addr(kind, v, None)?),
        attr::CHANGED_ADDRESS => Attribute::ChangedAddress(decode_addr(kind, v, None)?),
        attr::SOURCE_ADDRESS => Attribute::SourceAddress(decode_addr(kind, v, None)?),
        attr::ERROR_CODE => {
            if v.len() < 4 {
                return Err(bad_len());
            }
            let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
            if !(300..700).contains(&code) || v[3] > 99 {
                return Err(StunDecodeError::BadValue(kind));
            }
            Attribute::ErrorCode {
                code,
                reason: text(kind, &v[4..])?,
            }
        }
        attr::UNKNOWN_ATTRIBUTES => {
            if v.len() % 2 != 0 {
                return Err(bad_len());
            }
            Attribute::UnknownAttributes(
                v.chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect(),
            )
        }
        attr::SOFTWARE => Attribute::Software(text(kind, v)?),
        attr::FINGERPRINT => {
            if v.len() != 4 {
                return Err(bad_len());
            }
            Attribute::Fingerprint(be32(v, 0))
        }
        attr::MESSAGE_INTEGRITY => {
            let mac: [u8; 20] = v.try_into().map_err(|_| bad_len())?;
            Attribute::MessageIntegrity(mac)
        }
        attr::CHANGE_REQUEST => {
            if v.len() != 4 {
                return Err(bad_len());
            }
            Attribute::ChangeRequest {
                ip: v[3] & 0x04 != 0,
                port: v[3] & 0x02 != 0,
            }
        }
        attr::RESPONSE_PORT => {
            if v.len() != 4 {
                return Err(bad_len());
            }
            Attribute::ResponsePort(be16(v, 0))
        }
        attr::PADDING => Attribute::Padding(v.to_vec()),
        _ => Attribute::Other {
            kind,
            value: v.to_vec(),
        },
    })
}

/// Decodes one datagram. Checks FINGERPRINT when present; MESSAGE-INTEGRITY is
/// checked separately with [`verify_integrity`] (it needs the key).
pub fn decode(b: &[u8]) -> Result<Message, StunDecodeError> {
    let (ty, tid) = header(b)?;
    let mut attributes = Vec::new();
    let mut padding = None;
    let mut i = HEADER_LEN;
    while i < b.len() {
        if b.len() - i < 4 {
            return Err(StunDecodeError::AttributePastEnd(0));
        }
        let kind = be16(b, i);
        let len = usize::from(be16(b, i + 2));
        let padded = (len + 3) & !3;
        if b.len() - i - 4 < padded {
            return Err(StunDecodeError::AttributePastEnd(kind));
        }
        let v = &b[i + 4..i + 4 + len];
        if padded > len && padding.is_none() {
            padding = Some(b[i + 4 + len]);
        }
        let a = decode_attr(kind, v, &tid)?;
        if let Attribute::Fingerprint(fp) = a {
            if fingerprint_of(b, i) != fp {
                return Err(StunDecodeError::BadFingerprint);
            }
        }
        attributes.push(a);
        i += 4 + padded;
    }
    Ok(Message {
        class: class_of(ty),
        method: method_of(ty),
        transaction_id: tid,
        attributes,
        padding: padding.unwrap_or(0),
    })
}

/// CRC-32 (IEEE, reflected) with a table built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[n] = c;
        n += 1;
    }
    t
};

/// CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    c ^ 0xffff_ffff
}

/// Header with its length field rewritten to end `end_of_attr` bytes into the message.
fn adjusted_prefix(b: &[u8], at: usize, end_of_attr: usize) -> Vec<u8> {
    let mut p = b[..at].to_vec();
    let len = (end_of_attr - HEADER_LEN) as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p
}

/// FINGERPRINT over `b[..at]` where the FINGERPRINT attribute starts at `at`.
fn fingerprint_of(b: &[u8], at: usize) -> u32 {
    crc32(&adjusted_prefix(b, at, at + 8)) ^ FINGERPRINT_XOR
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> Option<[u8; 20]> {
    use openssl::{hash::MessageDigest, pkey::PKey, sign::Signer};
    let pkey = PKey::hmac(key).ok()?;
    let mut s = Signer::new(MessageDigest::sha1(), &pkey).ok()?;
    s.update(data).ok()?;
    s.sign_to_vec().ok()?.try_into().ok()
}

/// The long-term credential key MD5(username ":" realm ":" password) (RFC 8489 §9.2.2);
/// `None` only if the crypto library fails.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> Option<[u8; 16]> {
    let data = format!("{username}:{realm}:{password}");
    let d = openssl::hash::hash(openssl::hash::MessageDigest::md5(), data.as_bytes()).ok()?;
    d.as_ref().try_into().ok()
}

/// Verifies MESSAGE-INTEGRITY of the raw message `b` with `key`: `Some(true)` when it
/// matches, `Some(false)` when it does not, `None` when the message has none or is malformed.
pub fn verify_integrity(b: &[u8], key: &[u8]) -> Option<bool> {
    header(b).ok()?;
    let mut i = HEADER_LEN;
    while b.len().saturating_sub(i) >= 4 {
        let kind = be16(b, i);
        let len = usize::from(be16(b, i + 2));
        let padded = (len + 3) & !3;
        if b.len() - i - 4 < padded {
            return None;
        }
        if kind == attr::MESSAGE_INTEGRITY {
            if len != 20 {
                return None;
            }
            let mac = hmac_sha1(key, &adjusted_prefix(b, i, i + 24))?;
            return Some(mac[..] == b[i + 4..i + 24]);
        }
        i += 4 + padded;
    }
    None
}

impl Message {
    /// A Binding request with the given attributes.
    pub fn binding_request(transaction_id: TransactionId, attributes: Vec<Attribute>) -> Message {
        Message {
            class: Class::Request,
            method: METHOD_BINDING,
            transaction_id,
            attributes,
            padding: 0,
        }
    }

    /// Encodes the attributes as they are (MESSAGE-INTEGRITY and FINGERPRINT values copied).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&message_type(self.class, self.method).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&self.transaction_id.0);
        for a in &self.attributes {
            self.encode_attr(&mut out, a);
        }
        let len = (out.len() - HEADER_LEN) as u16;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        out
    }

    /// Encodes the attributes other than MESSAGE-INTEGRITY and FINGERPRINT, then
    /// appends a freshly computed MESSAGE-INTEGRITY (when `key` is given) and
    /// FINGERPRINT (when `fingerprint`). `None` only if the crypto library fails.
    pub fn encode_signed(&self, key: Option<&[u8]>, fingerprint: bool) -> Option<Vec<u8>> {
        let mut m = self.clone();
        m.attributes.retain(|a| {
            !matches!(
                a,
                Attribute::MessageIntegrity(_) | Attribute::Fingerprint(_)
            )
        });
        let mut out = m.encode();
        if let Some(key) = key {
            let at = out.len();
            let mac = hmac_sha1(key, &adjusted_prefix(&out, at, at + 24))?;
            out.extend_from_slice(&attr::MESSAGE_INTEGRITY.to_be_bytes());
            out.extend_from_slice(&20u16.to_be_bytes());
            out.extend_from_slice(&mac);
        }
        if fingerprint {
            let at = out.len();
            let fp = fingerprint_of(&out, at);
            out.extend_from_slice(&attr::FINGERPRINT.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&fp.to_be_bytes());
        }
        let len = (out.len() - HEADER_LEN) as u16;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        Some(out)
    }

    fn encode_attr(&self, out: &mut Vec<u8>, a: &Attribute) {
        let tid = &self.transaction_id;
        let mut v = Vec::new();
        let kind = match a {
            Attribute::MappedAddress(x) => {
                encode_addr(&mut v, *x, None);
                attr::MAPPED_ADDRESS
            }
            Attribute::XorMappedAddress(x) => {
                encode_addr(&mut v, *x, Some(tid));
                attr::XOR_MAPPED_ADDRESS
            }
            Attribute::ResponseOrigin(x) => {
                encode_addr(&mut v, *x, None);
                attr::RESPONSE_ORIGIN
            }
            Attribute::OtherAddress(x) => {
                encode_addr(&mut v, *x, None);
                attr::OTHER_ADDRESS
            }
            Attribute::ChangedAddress(x) => {
                encode_addr(&mut v, *x, None);
                attr::CHANGED_ADDRESS
            }
            Attribute::SourceAddress(x) => {
                encode_addr(&mut v, *x, None);
                attr::SOURCE_ADDRESS
            }
            Attribute::ErrorCode { code, reason } => {
                v.extend_from_slice(&[0, 0, (code / 100) as u8 & 0x07, (code % 100) as u8]);
                v.extend_from_slice(reason.as_bytes());
                attr::ERROR_CODE
            }
            Attribute::UnknownAttributes(list) => {
                for t in list {
                    v.extend_from_slice(&t.to_be_bytes());
                }
                attr::UNKNOWN_ATTRIBUTES
            }
            Attribute::Software(s) => {
                v.extend_from_slice(s.as_bytes());
                attr::SOFTWARE
            }
            Attribute::Fingerprint(f) => {
                v.extend_from_slice(&f.to_be_bytes());
                attr::FINGERPRINT
            }
            Attribute::MessageIntegrity(m) => {
                v.extend_from_slice(m);
                attr::MESSAGE_INTEGRITY
            }
            Attribute::ChangeRequest { ip, port } => {
                v.extend_from_slice(&[0, 0, 0, (u8::from(*ip) << 2) | (u8::from(*port) << 1)]);
                attr::CHANGE_REQUEST
            }
            Attribute::ResponsePort(p) => {
                v.extend_from_slice(&p.to_be_bytes());
                v.extend_from_slice(&[0, 0]);
                attr::RESPONSE_PORT
            }
            Attribute::Padding(p) => {
                v.extend_from_slice(p);
                attr::PADDING
            }
            Attribute::Other { kind, value } => {
                v.extend_from_slice(value);
                *kind
            }
        };
        // Values longer than a u16 cannot come from decode; truncate rather than panic.
        v.truncate(usize::from(u16::MAX) & !3);
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        out.extend_from_slice(&v);
        while out.len() % 4 != 0 {
            out.push(self.padding);
        }
    }

    /// The first attribute `f` picks out.
    pub fn find<T>(&self, f: impl Fn(&Attribute) -> Option<T>) -> Option<T> {
        self.attributes.iter().find_map(f)
    }

    /// XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS (old servers).
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::XorMappedAddress(x) => Some(*x),
            _ => None,
        })
        .or_else(|| {
            self.find(|a| match a {
                Attribute::MappedAddress(x) => Some(*x),
                _ => None,
            })
        })
    }

    /// OTHER-ADDRESS, else the RFC 3489 CHANGED-ADDRESS.
    pub fn other_address(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::OtherAddress(x) => Some(*x),
            _ => None,
        })
        .or_else(|| {
            self.find(|a| match a {
                Attribute::ChangedAddress(x) => Some(*x),
                _ => None,
            })
        })
    }

    /// ERROR-CODE, when present.
    pub fn error_code(&self) -> Option<(u16, String)> {
        self.find(|a| match a {
            Attribute::ErrorCode { code, reason } => Some((*code, reason.clone())),
            _ => None,
        })
    }
}
