//! The rendezvous message: what an invite or an accept says, and its exact encoding.
//!
//! The encoding is a strict line-based text format rather than JSON: once decrypted it is
//! readable in a mail client or after `openssl smime -decrypt`, and there is exactly one
//! valid encoding of each message (fixed key order, canonical numbers and addresses, no
//! optional whitespace, no escapes), so the parser stays small and a golden vector pins
//! it byte for byte. JSON would allow duplicate keys, key reordering, escapes and number
//! forms that each need a rule.
//!
//! ```text
//! PLEXUS-RENDEZVOUS 3
//! kind: invite
//! from: alice@lab.example/home
//! to: bob@lab.example/office
//! session: 000102030405060708090a0b0c0d0e0f
//! time: 1700000000
//! mapped: 203.0.113.7:40000 [2001:db8:a::7]:40000
//! local: 192.168.1.20:40000 [2001:db8:a::7]:40000
//! nat: yes
//! mapping: endpoint-independent
//! filtering: address-and-port-dependent
//! hairpin: unknown
//! port-preserved: no
//! port-mapping: -
//! nat6: no endpoint-independent address-and-port-dependent unknown yes -
//! relay: fallback
//! method: -
//! method6: -
//! relayed: -
//! secret: <64 lower-case hex digits>
//! ```
//!
//! Every line is `key: value` ending in `\n` (no CR, printable ASCII only); every key is
//! required, in this order, once. Lists are space-separated, `-` when empty. Unknown facts
//! are `unknown`. A message larger than [`MAX_ENCODED`] is refused before parsing.
//!
//! Version 2 added `port-mapping` (how the sender's endpoint was mapped, when its router
//! did it), `relay` (the sender's relay policy), `method` (in an accept: how the pair will
//! connect, chosen by the acceptor) and `relayed` (the acceptor's TURN relayed endpoint),
//! and the kind `decline`: an acceptor's sealed "no" to an invite it cannot serve, so the
//! inviter ends at once instead of waiting out its timeout. A decline carries only
//! `kind from to session time reason`. Version 1 messages (no such lines: a direct punch,
//! no relay) are still read, never written.
//!
//! Version 3 speaks of both address families. `mapped` and `local` always could mix
//! IPv4 and IPv6 endpoints; the six fact lines from `nat` to `port-mapping` describe the
//! sender's **IPv4** side (`nat: no` and unknowns for a side without IPv4). Version 3
//! adds `nat6`, the same six facts for the IPv6 side as one line of six tokens in that
//! order (`-`: no IPv6 side), and `method6`, the acceptor's plan over IPv6: `-`,
//! `direct` or `direct-full-ttl` (prediction and relaying are IPv4 plans). In a version
//! 3 accept `method` may be `-` when `method6` names a plan; at least one does. A family's
//! facts or plan need an endpoint of that family in `mapped` (a relay plan excepted).
//!
//! **One encoding per message, in the lowest version that can say it**: a message
//! without `nat6` and `method6` is written as version 2, byte for byte as before, so a
//! peer of the previous release still reads it when IPv6 is not in play; a decline is
//! always version 2. Decoding refuses a version 3 message that version 2 could say
//! ([`MessageError::NotLowestVersion`]), so decoding and encoding stay inverse.

use std::fmt;
use std::net::SocketAddr;

use crate::identity::{wipe, IdError, PeerId};
use crate::nat::{Behaviour, Family};

/// The first line of every message; the number is the format version.
pub const MAGIC: &str = "PLEXUS-RENDEZVOUS";
/// The newest format version this code writes (only when a message needs it: see the
/// module docs).
pub const VERSION: u32 = 3;
/// The version of a message without IPv6 facts or plan, and of every decline.
const VERSION_2: u32 = 2;
/// The oldest version this code still reads (its messages mean: direct punch, no relay).
pub const MIN_VERSION: u32 = 1;
/// Longest reason a decline may carry.
pub const MAX_REASON: usize = 400;
/// Largest encoded message accepted (the largest valid one, a version 3 accept with 16
/// IPv6 endpoints and the longest ids, is about 1.8 KiB).
pub const MAX_ENCODED: usize = 4096;
/// Most endpoints in one list (mapped or local).
pub const MAX_ENDPOINTS: usize = 8;

/// The keys of a version 1 message, in their required order.
const FIELDS_V1: [&str; 13] = [
    "kind",
    "from",
    "to",
    "session",
    "time",
    "mapped",
    "local",
    "nat",
    "mapping",
    "filtering",
    "hairpin",
    "port-preserved",
    "secret",
];

/// The keys of a version 2 invite or accept, in their required order.
const FIELDS_V2: [&str; 17] = [
    "kind",
    "from",
    "to",
    "session",
    "time",
    "mapped",
    "local",
    "nat",
    "mapping",
    "filtering",
    "hairpin",
    "port-preserved",
    "port-mapping",
    "relay",
    "method",
    "relayed",
    "secret",
];

/// The keys of a version 3 invite or accept: version 2's with `nat6` after
/// `port-mapping` and `method6` after `method`.
const FIELDS_V3: [&str; 19] = [
    "kind",
    "from",
    "to",
    "session",
    "time",
    "mapped",
    "local",
    "nat",
    "mapping",
    "filtering",
    "hairpin",
    "port-preserved",
    "port-mapping",
    "nat6",
    "relay",
    "method",
    "method6",
    "relayed",
    "secret",
];

/// The keys of a decline (always version 2), in their required order.
const FIELDS_DECLINE: [&str; 6] = ["kind", "from", "to", "session", "time", "reason"];

/// Invite (first message of a session), accept (the answer) or decline (the answer
/// when the pair cannot connect with the settings given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Sent by the side that starts a session.
    Invite,
    /// Sent back by the side that accepted an invite.
    Accept,
    /// Sent back instead of an accept when no method can connect the pair.
    Decline,
}

impl Kind {
    /// The spelling in the encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Invite => "invite",
            Kind::Accept => "accept",
            Kind::Decline => "decline",
        }
    }
}

/// The router protocol that mapped a side's endpoint (its NAT then behaves as none for
/// that port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortMapping {
    /// Port Control Protocol (RFC 6887).
    Pcp,
    /// NAT Port Mapping Protocol (RFC 6886).
    NatPmp,
    /// UPnP Internet Gateway Device.
    Upnp,
}

impl PortMapping {
    /// The spelling in the encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            PortMapping::Pcp => "pcp",
            PortMapping::NatPmp => "nat-pmp",
            PortMapping::Upnp => "upnp-igd",
        }
    }

    /// The name people know it by, for progress lines.
    pub fn label(self) -> &'static str {
        match self {
            PortMapping::Pcp => "PCP",
            PortMapping::NatPmp => "NAT-PMP",
            PortMapping::Upnp => "UPnP-IGD",
        }
    }
}

/// When a side lets a TURN relay carry its corridor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RelayPolicy {
    /// Direct paths only: a pair that needs a relay is declined.
    #[default]
    Never,
    /// Direct when physics allows it, the relay otherwise (or when the direct handshake fails).
    Fallback,
    /// Always through the relay (hides the addresses from each other; testing).
    Always,
}

impl RelayPolicy {
    /// The spelling in the encoding, in profiles and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayPolicy::Never => "never",
            RelayPolicy::Fallback => "fallback",
            RelayPolicy::Always => "always",
        }
    }
}

impl fmt::Display for RelayPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RelayPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "never" => Ok(RelayPolicy::Never),
            "fallback" => Ok(RelayPolicy::Fallback),
            "always" => Ok(RelayPolicy::Always),
            other => Err(format!(
                "unknown relay policy {:?}: expected never, fallback or always",
                other.escape_debug().to_string()
            )),
        }
    }
}

/// Which side of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The side that sent the invite.
    Inviter,
    /// The side that answered it.
    Acceptor,
}

impl Side {
    /// The spelling in the encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Inviter => "inviter",
            Side::Acceptor => "acceptor",
        }
    }
}

/// How a pair connects: chosen by the acceptor, which knows both NAT profiles, and
/// carried in its accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// The simultaneous punch: the acceptor's low-TTL punch, then the handshake.
    Direct,
    /// The acceptor's mapping depends on the destination, so its punch must reach the
    /// inviter (whose NAT lets it in): the acceptor sends at full TTL and keeps sending.
    DirectFullTtl,
    /// Port prediction by the birthday paradox: the `hard` side (destination-dependent
    /// mapping) opens `sockets` mappings toward the other side, which probes random ports.
    Birthday {
        /// The side whose NAT maps per destination.
        hard: Side,
        /// How many sockets the hard side opens.
        sockets: u16,
    },
    /// Through the acceptor's TURN allocation (`relayed`).
    Relay,
}

/// Most sockets a birthday plan may ask the hard side to open.
pub const MAX_BIRTHDAY_SOCKETS: u16 = 1024;

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Direct => f.write_str("direct"),
            Method::DirectFullTtl => f.write_str("direct-full-ttl"),
            Method::Birthday { hard, sockets } => write!(f, "birthday {} {sockets}", hard.as_str()),
            Method::Relay => f.write_str("relay"),
        }
    }
}

fn parse_method(v: &str) -> Result<Option<Method>, MessageError> {
    let want = "-, direct, direct-full-ttl, relay or 'birthday inviter|acceptor N'";
    Ok(Some(match v {
        "-" => return Ok(None),
        "direct" => Method::Direct,
        "direct-full-ttl" => Method::DirectFullTtl,
        "relay" => Method::Relay,
        _ => {
            let parts: Vec<&str> = v.split(' ').collect();
            let [b, side, n] = parts[..] else {
                return Err(bad("method", v, want));
            };
            let hard = match side {
                "inviter" => Side::Inviter,
                "acceptor" => Side::Acceptor,
                _ => return Err(bad("method", v, want)),
            };
            let sockets = canonical_u64(n)
                .filter(|&n| (1..=u64::from(MAX_BIRTHDAY_SOCKETS)).contains(&n))
                .ok_or_else(|| {
                    bad(
                        "method",
                        v,
                        &format!("birthday with 1..={MAX_BIRTHDAY_SOCKETS} sockets"),
                    )
                })?;
            if b != "birthday" {
                return Err(bad("method", v, want));
            }
            Method::Birthday {
                hard,
                sockets: sockets as u16,
            }
        }
    }))
}

/// A decimal without leading zeros (one spelling per number).
fn canonical_u64(t: &str) -> Option<u64> {
    let canonical = !t.is_empty()
        && t.len() <= 20
        && t.bytes().all(|b| b.is_ascii_digit())
        && (t == "0" || !t.starts_with('0'));
    canonical.then(|| t.parse::<u64>().ok()).flatten()
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A random 16-byte session id, shared by an invite and its accept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    /// A fresh id from OpenSSL's CSPRNG.
    pub fn random() -> Result<SessionId, MessageError> {
        let mut b = [0u8; 16];
        openssl::rand::rand_bytes(&mut b).map_err(|e| MessageError::Random(e.to_string()))?;
        Ok(SessionId(b))
    }

    /// Lower-case hex (32 digits).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parse exactly 32 lower-case hex digits.
    pub fn from_hex(s: &str) -> Option<SessionId> {
        let mut b = [0u8; 16];
        unhex(s, &mut b).then_some(SessionId(b))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.to_hex())
    }
}

/// A fresh 32-byte secret; the handshake key is derived from both sides' secrets.
/// `Debug` prints a placeholder, equality is constant-time, and the bytes are wiped on drop.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    /// A fresh secret from OpenSSL's CSPRNG.
    pub fn random() -> Result<Secret, MessageError> {
        let mut b = [0u8; 32];
        openssl::rand::rand_bytes(&mut b).map_err(|e| MessageError::Random(e.to_string()))?;
        Ok(Secret(b))
    }

    /// Wrap known bytes (tests, key derivation inputs).
    pub fn from_bytes(b: [u8; 32]) -> Secret {
        Secret(b)
    }

    /// The raw bytes, for key derivation only; never log them.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        openssl::memcmp::eq(&self.0, &other.0)
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// What a side knows about its NAT (RFC 4787 vocabulary). Facts that could not be measured
/// are `None`, never guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NatFacts {
    /// Whether the host is behind a NAT at all (mapped address differs from local).
    pub nat: bool,
    /// Mapping behaviour, if measured.
    pub mapping: Option<Behaviour>,
    /// Filtering behaviour, if measured.
    pub filtering: Option<Behaviour>,
    /// Whether the NAT hairpins, if measured.
    pub hairpin: Option<bool>,
    /// Whether the NAT keeps the local port, if measured.
    pub port_preserved: Option<bool>,
    /// The router mapped the sender's endpoint by this protocol: for that endpoint the
    /// NAT forwards everything, like none at all.
    pub port_mapping: Option<PortMapping>,
}

/// What every rendezvous message says, invite or accept. Messages are the typed
/// [`Invite`] and [`Accept`] (both deref to their body) or, when either may come, a
/// [`Message`]; a body alone cannot be sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// Who sends it (checked against the pinned peer when opened).
    pub from: PeerId,
    /// Who it is for (checked against this host when opened).
    pub to: PeerId,
    /// The session; an accept repeats its invite's id.
    pub session: SessionId,
    /// When it was made, unix seconds.
    pub time: u64,
    /// The sender's public endpoints as its NAT maps them (from STUN).
    pub mapped: Vec<SocketAddr>,
    /// The sender's local endpoints, for peers behind the same NAT.
    pub local: Vec<SocketAddr>,
    /// The sender's NAT behaviour on its IPv4 side (`nat: no` and unknowns without one).
    pub nat: NatFacts,
    /// The sender's NAT and firewall behaviour on its IPv6 side; `None` when it has none
    /// (and in every version 1 or 2 message).
    pub nat6: Option<NatFacts>,
    /// The sender's relay policy.
    pub relay: RelayPolicy,
    /// In an accept, how the pair connects over IPv4 (`None` in an invite, and in a
    /// version 3 accept that connects over IPv6 only).
    pub method: Option<Method>,
    /// In an accept, how the pair connects over IPv6: [`Method::Direct`] or
    /// [`Method::DirectFullTtl`], or `None` (an invite, no IPv6 plan, version 1 or 2).
    pub method6: Option<Method>,
    /// In an accept, the acceptor's TURN relayed endpoint, when it allocated one.
    pub relayed: Option<SocketAddr>,
    /// The sender's fresh secret for the handshake key.
    pub secret: Secret,
}

/// The first message of a session, sent by the side that starts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite(Body);

/// The answer to an [`Invite`]. Only [`Accept::new`] (from the invite it answers) and
/// decoding make one, so an accept cannot answer an accept:
///
/// ```compile_fail
/// # use plexus::rendezvous::{Accept, NatFacts};
/// fn answer_an_accept(accept: &Accept) {
///     let _ = Accept::new(accept, 0, vec![], vec![], NatFacts::default());
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept(Body);

/// The acceptor's sealed "no" to an invite: no method can connect the pair with the
/// settings both sides gave (e.g. both NATs symmetric and no relay allowed). Its body
/// carries only `from`, `to`, `session` and `time` (the lists are empty, the facts
/// default, the secret unused); [`Decline::reason`] says why, for the inviter's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decline {
    body: Body,
    reason: String,
}

/// A decoded or opened message, when either kind may arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// An invite.
    Invite(Invite),
    /// An accept.
    Accept(Accept),
    /// A decline.
    Decline(Decline),
}

mod sealed {
    /// Only this module's message types can be sealed: an outside implementation could
    /// claim to be an accept for any body.
    pub trait Sealed {}
    impl Sealed for super::Invite {}
    impl Sealed for super::Accept {}
    impl Sealed for super::Decline {}
    impl Sealed for super::Message {}
}

/// What [`Invite`], [`Accept`] and [`Message`] share: a kind, a body and the encoding.
/// Implemented by these three only.
pub trait Rendezvous: sealed::Sealed {
    /// Invite, accept or decline.
    fn kind(&self) -> Kind;
    /// What the message says.
    fn body(&self) -> &Body;
    /// The canonical encoding. It contains the secret: callers wipe it after use.
    fn encode(&self) -> Result<Vec<u8>, MessageError> {
        self.body().encode_as(self.kind())
    }
}

impl std::ops::Deref for Decline {
    type Target = Body;
    fn deref(&self) -> &Body {
        &self.body
    }
}

impl Rendezvous for Decline {
    fn kind(&self) -> Kind {
        Kind::Decline
    }
    fn body(&self) -> &Body {
        &self.body
    }
    fn encode(&self) -> Result<Vec<u8>, MessageError> {
        self.encode_decline()
    }
}

impl std::ops::Deref for Invite {
    type Target = Body;
    fn deref(&self) -> &Body {
        &self.0
    }
}

impl std::ops::Deref for Accept {
    type Target = Body;
    fn deref(&self) -> &Body {
        &self.0
    }
}

impl Rendezvous for Invite {
    fn kind(&self) -> Kind {
        Kind::Invite
    }
    fn body(&self) -> &Body {
        &self.0
    }
}

impl Rendezvous for Accept {
    fn kind(&self) -> Kind {
        Kind::Accept
    }
    fn body(&self) -> &Body {
        &self.0
    }
}

// Inherent as well as through the trait, so that what `Envelope::open` returns can be
// read without importing the trait.
impl Message {
    /// Invite, accept or decline.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Invite(_) => Kind::Invite,
            Message::Accept(_) => Kind::Accept,
            Message::Decline(_) => Kind::Decline,
        }
    }

    /// What the message says.
    pub fn body(&self) -> &Body {
        match self {
            Message::Invite(m) => &m.0,
            Message::Accept(m) => &m.0,
            Message::Decline(m) => &m.body,
        }
    }
}

impl Rendezvous for Message {
    fn kind(&self) -> Kind {
        Message::kind(self)
    }
    fn body(&self) -> &Body {
        Message::body(self)
    }
    fn encode(&self) -> Result<Vec<u8>, MessageError> {
        match self {
            Message::Decline(d) => d.encode_decline(),
            m => m.body().encode_as(m.kind()),
        }
    }
}

// A message equals the invite or accept it holds (handy when checking what was opened).
impl PartialEq<Invite> for Message {
    fn eq(&self, other: &Invite) -> bool {
        matches!(self, Message::Invite(m) if m == other)
    }
}

impl PartialEq<Accept> for Message {
    fn eq(&self, other: &Accept) -> bool {
        matches!(self, Message::Accept(m) if m == other)
    }
}

impl From<Invite> for Message {
    fn from(m: Invite) -> Message {
        Message::Invite(m)
    }
}

impl From<Accept> for Message {
    fn from(m: Accept) -> Message {
        Message::Accept(m)
    }
}

impl From<Decline> for Message {
    fn from(m: Decline) -> Message {
        Message::Decline(m)
    }
}

/// Why a message could not be encoded or decoded. Every malformed input has its own
/// variant; line numbers count from 1 (the magic line).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageError {
    /// The encoding is larger than [`MAX_ENCODED`] bytes.
    TooLarge {
        /// Its length in bytes.
        len: usize,
    },
    /// A byte that is not printable ASCII or `\n` (CR, tab, NUL, UTF-8…).
    NotText {
        /// Where the first such byte is.
        offset: usize,
    },
    /// The text does not end with `\n` (cut off?).
    Unterminated,
    /// The first line is not `PLEXUS-RENDEZVOUS <n>`: not a rendezvous message.
    BadMagic,
    /// A rendezvous message of a version this build does not read.
    UnsupportedVersion(String),
    /// A message written in a newer version than what it says needs (each message has
    /// one encoding: the lowest version that can say it).
    NotLowestVersion {
        /// The version it is written in.
        version: u32,
        /// The version it must be written in.
        lowest: u32,
    },
    /// A line is not `key: value`.
    BadLine {
        /// The line number.
        line: usize,
    },
    /// A key this version does not know.
    UnknownField {
        /// The line number.
        line: usize,
        /// The key (its first 40 characters).
        key: String,
    },
    /// A key appears a second time.
    DuplicateField {
        /// The line number of the repeat.
        line: usize,
        /// The key.
        key: &'static str,
    },
    /// A key appears before one that must come first (or that one is missing).
    OutOfOrder {
        /// The line number.
        line: usize,
        /// The key that belongs on this line.
        expected: &'static str,
        /// The key found there.
        found: &'static str,
    },
    /// The message ends before this required key.
    MissingField(&'static str),
    /// Lines after the last key.
    TrailingData {
        /// The first extra line.
        line: usize,
    },
    /// A value is not valid for its key.
    BadValue {
        /// The key.
        field: &'static str,
        /// What is wrong (never the secret's text).
        reason: String,
    },
    /// `from` or `to` is not a valid peer id.
    BadId {
        /// `from` or `to`.
        field: &'static str,
        /// Why the id is invalid.
        error: IdError,
    },
    /// An endpoint list is longer than [`MAX_ENDPOINTS`].
    TooManyEndpoints {
        /// `mapped` or `local`.
        field: &'static str,
        /// How many it lists.
        count: usize,
    },
    /// The same endpoint twice in one list.
    DuplicateEndpoint {
        /// `mapped` or `local`.
        field: &'static str,
        /// The repeated endpoint.
        addr: SocketAddr,
    },
    /// The system random generator failed.
    Random(String),
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::TooLarge { len } => write!(f, "rendezvous message is {len} bytes, more than the {MAX_ENCODED} allowed"),
            MessageError::NotText { offset } => write!(f, "rendezvous message has a non-printable or non-ASCII byte at offset {offset}"),
            MessageError::Unterminated => write!(f, "rendezvous message does not end with a newline (truncated?)"),
            MessageError::BadMagic => write!(f, "not a plexus rendezvous message (the first line is not '{MAGIC} <version>')"),
            MessageError::UnsupportedVersion(v) => write!(f, "rendezvous message version {v:?} is not supported by this plexus (it reads versions {MIN_VERSION} to {VERSION}); upgrade plexus on both sides"),
            MessageError::NotLowestVersion { version, lowest } => write!(f, "rendezvous message is written as version {version}, but what it says needs only version {lowest} (a decline, or no IPv6 facts or method): a message is written in the lowest version that can say it"),
            MessageError::BadLine { line } => write!(f, "rendezvous message line {line} is not 'key: value'"),
            MessageError::UnknownField { line, key } => write!(f, "rendezvous message line {line} has unknown key {:?}", key.escape_debug().to_string()),
            MessageError::DuplicateField { line, key } => write!(f, "rendezvous message line {line} repeats key '{key}'"),
            MessageError::OutOfOrder { line, expected, found } => write!(f, "rendezvous message line {line} has '{found}' where '{expected}' must come"),
            MessageError::MissingField(key) => write!(f, "rendezvous message ends before the required key '{key}'"),
            MessageError::TrailingData { line } => write!(f, "rendezvous message has extra data from line {line}"),
            MessageError::BadValue { field, reason } => write!(f, "rendezvous message field '{field}': {reason}"),
            MessageError::BadId { field, error } => write!(f, "rendezvous message field '{field}': {error}"),
            MessageError::TooManyEndpoints { field, count } => write!(f, "rendezvous message field '{field}' lists {count} endpoints, more than the {MAX_ENDPOINTS} allowed"),
            MessageError::DuplicateEndpoint { field, addr } => write!(f, "rendezvous message field '{field}' lists {addr} twice"),
            MessageError::Random(m) => write!(f, "random number generator failed: {m}"),
        }
    }
}

impl std::error::Error for MessageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MessageError::BadId { error: e, .. } => Some(e),
            _ => None,
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decode exactly `2 * out.len()` lower-case hex digits.
fn unhex(s: &str, out: &mut [u8]) -> bool {
    let s = s.as_bytes();
    if s.len() != out.len() * 2 {
        return false;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (i, o) in out.iter_mut().enumerate() {
        match (digit(s[2 * i]), digit(s[2 * i + 1])) {
            (Some(h), Some(l)) => *o = (h << 4) | l,
            _ => return false,
        }
    }
    true
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn check_endpoints(field: &'static str, list: &[SocketAddr]) -> Result<(), MessageError> {
    if list.len() > MAX_ENDPOINTS {
        return Err(MessageError::TooManyEndpoints {
            field,
            count: list.len(),
        });
    }
    for (i, a) in list.iter().enumerate() {
        if a.port() == 0 {
            return Err(MessageError::BadValue {
                field,
                reason: format!("{a} has port 0"),
            });
        }
        if let SocketAddr::V6(v6) = a {
            if v6.scope_id() != 0 || v6.flowinfo() != 0 {
                return Err(MessageError::BadValue {
                    field,
                    reason: format!(
                        "{a} carries a scope id or flow label, which mean nothing to the peer"
                    ),
                });
            }
        }
        if list[..i].contains(a) {
            return Err(MessageError::DuplicateEndpoint { field, addr: *a });
        }
    }
    Ok(())
}

fn endpoints_text(list: &[SocketAddr]) -> String {
    if list.is_empty() {
        "-".into()
    } else {
        list.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn parse_endpoints(field: &'static str, v: &str) -> Result<Vec<SocketAddr>, MessageError> {
    if v == "-" {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = v.split(' ').collect();
    if parts.len() > MAX_ENDPOINTS {
        return Err(MessageError::TooManyEndpoints {
            field,
            count: parts.len(),
        });
    }
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let a: SocketAddr = p.parse().map_err(|_| MessageError::BadValue {
            field,
            reason: format!("{:?} is not an IP address and port", p),
        })?;
        // Only the canonical spelling (RFC 5952 for IPv6) is accepted: one encoding per message.
        if a.to_string() != p {
            return Err(MessageError::BadValue {
                field,
                reason: format!("{p:?} is not written canonically (expected {a})"),
            });
        }
        out.push(a);
    }
    check_endpoints(field, &out)?;
    Ok(out)
}

fn opt_text<T: fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "unknown".to_string(), |x| x.to_string())
}

fn bad(field: &'static str, v: &str, want: &str) -> MessageError {
    MessageError::BadValue {
        field,
        reason: format!("{:?} is not {want}", v.escape_debug().to_string()),
    }
}

fn parse_bool(field: &'static str, v: &str) -> Result<bool, MessageError> {
    match v {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(bad(field, v, "yes or no")),
    }
}

fn parse_opt_bool(field: &'static str, v: &str) -> Result<Option<bool>, MessageError> {
    match v {
        "unknown" => Ok(None),
        _ => parse_bool(field, v)
            .map(Some)
            .map_err(|_| bad(field, v, "yes, no or unknown")),
    }
}

fn parse_opt_behaviour(field: &'static str, v: &str) -> Result<Option<Behaviour>, MessageError> {
    match v {
        "unknown" => Ok(None),
        _ => v.parse().map(Some).map_err(|_| {
            bad(
                field,
                v,
                "endpoint-independent, address-dependent, address-and-port-dependent or unknown",
            )
        }),
    }
}

fn parse_port_mapping(field: &'static str, v: &str) -> Result<Option<PortMapping>, MessageError> {
    match v {
        "-" => Ok(None),
        "pcp" => Ok(Some(PortMapping::Pcp)),
        "nat-pmp" => Ok(Some(PortMapping::NatPmp)),
        "upnp-igd" => Ok(Some(PortMapping::Upnp)),
        _ => Err(bad(field, v, "-, pcp, nat-pmp or upnp-igd")),
    }
}

/// The names of the six facts, in the order of the IPv4 lines and of the `nat6` tokens.
const FACTS: [&str; 6] = [
    "nat",
    "mapping",
    "filtering",
    "hairpin",
    "port-preserved",
    "port-mapping",
];

/// The six facts as written, in the order of [`FACTS`].
fn facts_tokens(n: &NatFacts) -> [String; 6] {
    [
        yes_no(n.nat).to_string(),
        opt_text(n.mapping),
        opt_text(n.filtering),
        opt_text(n.hairpin.map(yes_no)),
        opt_text(n.port_preserved.map(yes_no)),
        n.port_mapping.map_or("-", PortMapping::as_str).to_string(),
    ]
}

fn nat6_text(n: &NatFacts) -> String {
    facts_tokens(n).join(" ")
}

/// `nat6`: `-`, or the six facts separated by single spaces, spelled as the IPv4 lines.
fn parse_nat6(v: &str) -> Result<Option<NatFacts>, MessageError> {
    if v == "-" {
        return Ok(None);
    }
    let tokens: Vec<&str> = v.split(' ').collect();
    let [nat, mapping, filtering, hairpin, port_preserved, port_mapping] = tokens[..] else {
        return Err(MessageError::BadValue {
            field: "nat6",
            reason: format!(
                "{:?} is not - or six facts separated by single spaces ({}): found {} tokens",
                v.escape_debug().to_string(),
                FACTS.join(" "),
                tokens.len()
            ),
        });
    };
    // Name the token that is wrong: the error of its own line, under `nat6`.
    let token = |i: usize| {
        move |e: MessageError| match e {
            MessageError::BadValue { reason, .. } => MessageError::BadValue {
                field: "nat6",
                reason: format!("token {} ({}): {reason}", i + 1, FACTS[i]),
            },
            e => e,
        }
    };
    Ok(Some(NatFacts {
        nat: parse_bool("nat6", nat).map_err(token(0))?,
        mapping: parse_opt_behaviour("nat6", mapping).map_err(token(1))?,
        filtering: parse_opt_behaviour("nat6", filtering).map_err(token(2))?,
        hairpin: parse_opt_bool("nat6", hairpin).map_err(token(3))?,
        port_preserved: parse_opt_bool("nat6", port_preserved).map_err(token(4))?,
        port_mapping: parse_port_mapping("nat6", port_mapping).map_err(token(5))?,
    }))
}

/// Why a version 3 accept without any method is refused.
const ONE_PLAN: &str =
    "method and method6 are both -: an accept names a method for at least one family";

/// Over IPv6 there is nothing to predict and no relay plan: direct or direct-full-ttl.
fn check_method6(m: Method) -> Result<(), MessageError> {
    match m {
        Method::Direct | Method::DirectFullTtl => Ok(()),
        m => Err(MessageError::BadValue {
            field: "method6",
            reason: format!(
                "{m} is an IPv4-only plan: over IPv6 the method is -, direct or direct-full-ttl"
            ),
        }),
    }
}

fn parse_method6(v: &str) -> Result<Option<Method>, MessageError> {
    match v {
        "-" => Ok(None),
        "direct" => Ok(Some(Method::Direct)),
        "direct-full-ttl" => Ok(Some(Method::DirectFullTtl)),
        _ => Err(match parse_method(v) {
            // A valid IPv4-only plan: say why it cannot be here.
            Ok(Some(m)) => check_method6(m)
                .err()
                .unwrap_or_else(|| bad("method6", v, "-, direct or direct-full-ttl")),
            _ => bad("method6", v, "-, direct or direct-full-ttl"),
        }),
    }
}

/// The IPv4 plan a message of `kind` says: an accept without any plan is a direct punch
/// (version 1, and bodies built field by field), as version 2 always wrote it.
fn ipv4_method(kind: Kind, b: &Body) -> Option<Method> {
    match (kind, b.method, b.method6) {
        (Kind::Accept, None, None) => Some(Method::Direct),
        (_, m, _) => m,
    }
}

/// The rules that tie a family's facts and plan to an endpoint of that family in
/// `mapped`. They hold from version 3 on: version 2 said nothing of families, and what
/// it says must keep reading as before.
fn check_families(kind: Kind, b: &Body) -> Result<(), MessageError> {
    if let Some(m) = b.method6 {
        if kind != Kind::Accept {
            return Err(MessageError::BadValue {
                field: "method6",
                reason: "only an accept names a method (the acceptor chooses)".into(),
            });
        }
        check_method6(m)?;
    }
    if b.version(kind) < 3 {
        return Ok(());
    }
    let has = |f: Family| b.mapped.iter().any(|a| Family::of(a) == f);
    if b.nat6.is_some() && !has(Family::V6) {
        return Err(MessageError::BadValue {
            field: "nat6",
            reason: "IPv6 facts without an IPv6 endpoint in mapped \
                     (- when the sender has no IPv6 side)"
                .into(),
        });
    }
    if kind == Kind::Accept {
        if b.method6.is_some() && !has(Family::V6) {
            return Err(MessageError::BadValue {
                field: "method6",
                reason: "an IPv6 method without an IPv6 endpoint in mapped \
                         (- when the pair has no IPv6 path)"
                    .into(),
            });
        }
        match ipv4_method(kind, b) {
            None | Some(Method::Relay) => {}
            Some(m) if !has(Family::V4) => {
                return Err(MessageError::BadValue {
                    field: "method",
                    reason: format!(
                        "{m} over IPv4 without an IPv4 endpoint in mapped \
                         (- when the pair connects over IPv6 only)"
                    ),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

impl Invite {
    /// A new invite from `from` to `to`, with a fresh session id and secret.
    pub fn new(
        from: PeerId,
        to: PeerId,
        now: u64,
        mapped: Vec<SocketAddr>,
        local: Vec<SocketAddr>,
        nat: NatFacts,
    ) -> Result<Invite, MessageError> {
        check_endpoints("mapped", &mapped)?;
        check_endpoints("local", &local)?;
        Ok(Invite(Body {
            from,
            to,
            session: SessionId::random()?,
            time: now,
            mapped,
            local,
            nat,
            nat6: None,
            relay: RelayPolicy::Never,
            method: None,
            method6: None,
            relayed: None,
            secret: Secret::random()?,
        }))
    }

    /// This invite, saying the inviter's relay policy.
    pub fn with_relay(mut self, relay: RelayPolicy) -> Invite {
        self.0.relay = relay;
        self
    }

    /// This invite with the facts of the inviter's IPv6 side (`None`: it has none). With
    /// facts it is written as version 3, and `mapped` must hold an IPv6 endpoint
    /// (encoding refuses it otherwise).
    pub fn with_nat6(mut self, nat6: Option<NatFacts>) -> Invite {
        self.0.nat6 = nat6;
        self
    }
}

impl Accept {
    /// The accept answering `invite`: same session id, ids swapped, a fresh secret.
    pub fn new(
        invite: &Invite,
        now: u64,
        mapped: Vec<SocketAddr>,
        local: Vec<SocketAddr>,
        nat: NatFacts,
    ) -> Result<Accept, MessageError> {
        check_endpoints("mapped", &mapped)?;
        check_endpoints("local", &local)?;
        Ok(Accept(Body {
            from: invite.to.clone(),
            to: invite.from.clone(),
            session: invite.session,
            time: now,
            mapped,
            local,
            nat,
            nat6: None,
            relay: RelayPolicy::Never,
            method: Some(Method::Direct),
            method6: None,
            relayed: None,
            secret: Secret::random()?,
        }))
    }

    /// This accept with the facts of the acceptor's IPv6 side (`None`: it has none). With
    /// facts it is written as version 3, and `mapped` must hold an IPv6 endpoint
    /// (encoding refuses it otherwise).
    pub fn with_nat6(mut self, nat6: Option<NatFacts>) -> Accept {
        self.0.nat6 = nat6;
        self
    }

    /// This accept with the method chosen (over IPv4), the acceptor's relay policy and
    /// its relayed endpoint (if it allocated one): `with_families(Some(method), None, …)`.
    pub fn with_route(
        self,
        method: Method,
        relay: RelayPolicy,
        relayed: Option<SocketAddr>,
    ) -> Result<Accept, MessageError> {
        self.with_families(Some(method), None, relay, relayed)
    }

    /// This accept with the plan for each family, the acceptor's relay policy and its
    /// relayed endpoint (if it allocated one). Refused: no plan at all, a `method6` other
    /// than direct or direct-full-ttl, the relay method without `relayed`, and a plan
    /// for a family `mapped` has no endpoint of, where version 3 is needed to say it
    /// (see the module docs).
    pub fn with_families(
        mut self,
        method4: Option<Method>,
        method6: Option<Method>,
        relay: RelayPolicy,
        relayed: Option<SocketAddr>,
    ) -> Result<Accept, MessageError> {
        if let Some(r) = relayed {
            check_endpoints("relayed", &[r])?;
        }
        if let Some(m) = method6 {
            check_method6(m)?;
        }
        if method4.is_none() && method6.is_none() {
            return Err(MessageError::BadValue {
                field: "method",
                reason: ONE_PLAN.into(),
            });
        }
        if method4 == Some(Method::Relay) && relayed.is_none() {
            return Err(MessageError::BadValue {
                field: "relayed",
                reason: "the relay method needs the relayed endpoint".into(),
            });
        }
        self.0.method = method4;
        self.0.method6 = method6;
        self.0.relay = relay;
        self.0.relayed = relayed;
        check_families(Kind::Accept, &self.0)?;
        Ok(self)
    }

    /// The plan over IPv4: a version 1 accept means [`Method::Direct`], a version 2
    /// accept says it, a version 3 accept may have none (IPv6 only).
    pub fn method4(&self) -> Option<Method> {
        ipv4_method(Kind::Accept, &self.0)
    }

    /// The plan over IPv6 (`None` before version 3, or when the pair has no IPv6 path).
    pub fn method6(&self) -> Option<Method> {
        self.0.method6
    }

    /// The plan over IPv4, [`Method::Direct`] when there is none (for callers that know
    /// only IPv4).
    pub fn method(&self) -> Method {
        self.method4().unwrap_or(Method::Direct)
    }
}

impl Decline {
    /// The decline answering `invite`, saying why (printable ASCII, at most
    /// [`MAX_REASON`] bytes; other characters are replaced, longer text cut).
    pub fn new(invite: &Invite, now: u64, reason: &str) -> Result<Decline, MessageError> {
        let mut reason: String = reason
            .chars()
            .map(|c| match c {
                ' '..='~' => c,
                c if c.is_whitespace() => ' ',
                _ => '?',
            })
            .collect();
        reason.truncate(MAX_REASON);
        let reason = reason.trim().to_string();
        if reason.is_empty() {
            return Err(MessageError::BadValue {
                field: "reason",
                reason: "a decline must say why".into(),
            });
        }
        Ok(Decline {
            body: Body {
                from: invite.to.clone(),
                to: invite.from.clone(),
                session: invite.session,
                time: now,
                mapped: Vec::new(),
                local: Vec::new(),
                nat: NatFacts::default(),
                nat6: None,
                relay: RelayPolicy::Never,
                method: None,
                method6: None,
                relayed: None,
                secret: Secret([0; 32]),
            },
            reason,
        })
    }

    /// Why the acceptor declined.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    fn encode_decline(&self) -> Result<Vec<u8>, MessageError> {
        let b = &self.body;
        let values = [
            Kind::Decline.as_str().to_string(),
            b.from.to_string(),
            b.to.to_string(),
            b.session.to_hex(),
            b.time.to_string(),
            self.reason.clone(),
        ];
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(format!("{MAGIC} {VERSION_2}\n").as_bytes());
        for (k, v) in FIELDS_DECLINE.iter().zip(values) {
            out.extend_from_slice(format!("{k}: {v}\n").as_bytes());
        }
        if out.len() > MAX_ENCODED {
            return Err(MessageError::TooLarge { len: out.len() });
        }
        Ok(out)
    }
}

impl Body {
    /// The version a message of `kind` with these fields is written in: the lowest that
    /// can say it.
    fn version(&self, kind: Kind) -> u32 {
        if kind == Kind::Decline || (self.nat6.is_none() && self.method6.is_none()) {
            VERSION_2
        } else {
            VERSION
        }
    }

    /// These fields encoded as a message of `kind`: for tests and tools that need bytes
    /// no session would send (an altered time, another sender). It makes bytes only;
    /// sealing and key derivation take an [`Invite`] or [`Accept`], so this cannot
    /// stand in for one.
    pub fn encode_as(&self, kind: Kind) -> Result<Vec<u8>, MessageError> {
        check_endpoints("mapped", &self.mapped)?;
        check_endpoints("local", &self.local)?;
        if kind == Kind::Decline {
            return Err(MessageError::BadValue {
                field: "kind",
                reason: "a decline is built with Decline::new, not from a body".into(),
            });
        }
        if kind == Kind::Invite && self.method.is_some() {
            return Err(MessageError::BadValue {
                field: "method",
                reason: "an invite names no method (the acceptor chooses)".into(),
            });
        }
        if let Some(r) = self.relayed {
            check_endpoints("relayed", &[r])?;
            if kind == Kind::Invite {
                return Err(MessageError::BadValue {
                    field: "relayed",
                    reason: "an invite names no relayed endpoint (the acceptor allocates it)"
                        .into(),
                });
            }
        }
        if self.method == Some(Method::Relay) && self.relayed.is_none() {
            return Err(MessageError::BadValue {
                field: "relayed",
                reason: "the relay method needs the relayed endpoint".into(),
            });
        }
        check_families(kind, self)?;
        let version = self.version(kind);
        let method_text = |m: Option<Method>| m.map_or_else(|| "-".to_string(), |m| m.to_string());
        let [nat, mapping, filtering, hairpin, port_preserved, port_mapping] =
            facts_tokens(&self.nat);
        let mut values = vec![
            kind.as_str().to_string(),
            self.from.to_string(),
            self.to.to_string(),
            self.session.to_hex(),
            self.time.to_string(),
            endpoints_text(&self.mapped),
            endpoints_text(&self.local),
            nat,
            mapping,
            filtering,
            hairpin,
            port_preserved,
            port_mapping,
        ];
        if version == 3 {
            values.push(self.nat6.as_ref().map_or_else(|| "-".into(), nat6_text));
        }
        values.push(self.relay.as_str().to_string());
        values.push(method_text(ipv4_method(kind, self)));
        if version == 3 {
            values.push(method_text(self.method6));
        }
        values.push(
            self.relayed
                .map_or_else(|| "-".to_string(), |a| a.to_string()),
        );
        values.push(hex(&self.secret.0));
        let fields: &[&str] = if version == 3 { &FIELDS_V3 } else { &FIELDS_V2 };
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(format!("{MAGIC} {version}\n").as_bytes());
        for (k, mut v) in fields.iter().zip(values) {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
            // SAFETY of the wipe: the secret's hex must not linger in freed heap memory.
            // Zeroes are valid UTF-8, so the String stays well-formed.
            unsafe { wipe(v.as_bytes_mut()) };
        }
        if out.len() > MAX_ENCODED {
            let len = out.len();
            wipe(&mut out);
            return Err(MessageError::TooLarge { len });
        }
        Ok(out)
    }
}

impl Message {
    /// Strictly decode a message: exactly the canonical encoding, nothing else.
    pub fn decode(bytes: &[u8]) -> Result<Message, MessageError> {
        if bytes.len() > MAX_ENCODED {
            return Err(MessageError::TooLarge { len: bytes.len() });
        }
        if let Some(offset) = bytes
            .iter()
            .position(|&b| b != b'\n' && !(0x20..0x7f).contains(&b))
        {
            return Err(MessageError::NotText { offset });
        }
        // Only printable ASCII and '\n' remain, so this cannot fail.
        let text = std::str::from_utf8(bytes).map_err(|e| MessageError::NotText {
            offset: e.valid_up_to(),
        })?;
        let mut lines = text.split('\n');
        let first = lines.next().unwrap_or("");
        let version = match first.strip_prefix(MAGIC).and_then(|r| r.strip_prefix(' ')) {
            Some("1") => 1,
            Some("2") => 2,
            Some("3") => 3,
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(MessageError::UnsupportedVersion(v.into()))
            }
            _ => return Err(MessageError::BadMagic),
        };
        if !text.ends_with('\n') {
            return Err(MessageError::Unterminated);
        }
        // The kind line picks the keys that follow (a decline has fewer).
        let fields: &[&'static str] = match (version, lines.clone().next()) {
            (1, _) => &FIELDS_V1,
            (2, Some("kind: decline")) => &FIELDS_DECLINE,
            // A decline carries no family data: version 2 says every one.
            (_, Some("kind: decline")) => {
                return Err(MessageError::NotLowestVersion {
                    version,
                    lowest: VERSION_2,
                })
            }
            (2, _) => &FIELDS_V2,
            _ => &FIELDS_V3,
        };
        let mut values: Vec<&str> = Vec::with_capacity(fields.len());
        for (i, expected) in fields.iter().enumerate() {
            let line_no = i + 2;
            let line = match lines.next() {
                Some(l) if !l.is_empty() || lines.clone().next().is_some() => l,
                // The empty piece after the final '\n' is the end of the input.
                _ => return Err(MessageError::MissingField(expected)),
            };
            let (key, value) = line
                .split_once(": ")
                .ok_or(MessageError::BadLine { line: line_no })?;
            if key != *expected {
                return Err(match fields.iter().position(|k| *k == key) {
                    Some(j) if j < i => MessageError::DuplicateField {
                        line: line_no,
                        key: fields[j],
                    },
                    Some(j) => MessageError::OutOfOrder {
                        line: line_no,
                        expected,
                        found: fields[j],
                    },
                    None => MessageError::UnknownField {
                        line: line_no,
                        key: key.chars().take(40).collect(),
                    },
                });
            }
            values.push(value);
        }
        // What is left must be exactly the empty piece after the final '\n'.
        let rest: Vec<&str> = lines.collect();
        if rest != [""] {
            let line = fields.len() + 2;
            if let Some((key, _)) = rest[0].split_once(": ") {
                if let Some(j) = fields.iter().position(|k| *k == key) {
                    return Err(MessageError::DuplicateField {
                        line,
                        key: fields[j],
                    });
                }
            }
            return Err(MessageError::TrailingData { line });
        }

        let kind = match values[0] {
            "invite" => Kind::Invite,
            "accept" => Kind::Accept,
            "decline" if version >= 2 => Kind::Decline,
            v => {
                return Err(bad(
                    "kind",
                    v,
                    if version >= 2 {
                        "invite, accept or decline"
                    } else {
                        "invite or accept"
                    },
                ))
            }
        };
        let from = PeerId::parse(values[1]).map_err(|error| MessageError::BadId {
            field: "from",
            error,
        })?;
        let to =
            PeerId::parse(values[2]).map_err(|error| MessageError::BadId { field: "to", error })?;
        let session = SessionId::from_hex(values[3])
            .ok_or_else(|| bad("session", values[3], "32 lower-case hex digits"))?;
        let t = values[4];
        let time = canonical_u64(t).ok_or_else(|| {
            bad(
                "time",
                t,
                "unix seconds (a decimal number without leading zeros)",
            )
        })?;
        if kind == Kind::Decline {
            let reason = values[5];
            if reason.is_empty() || reason.len() > MAX_REASON || reason.trim() != reason {
                return Err(MessageError::BadValue {
                    field: "reason",
                    reason: format!(
                        "must be 1..={MAX_REASON} characters without leading or trailing spaces"
                    ),
                });
            }
            return Ok(Message::Decline(Decline {
                body: Body {
                    from,
                    to,
                    session,
                    time,
                    mapped: Vec::new(),
                    local: Vec::new(),
                    nat: NatFacts::default(),
                    nat6: None,
                    relay: RelayPolicy::Never,
                    method: None,
                    method6: None,
                    relayed: None,
                    secret: Secret([0; 32]),
                },
                reason: reason.to_string(),
            }));
        }
        let mapped = parse_endpoints("mapped", values[5])?;
        let local = parse_endpoints("local", values[6])?;
        let mut nat = NatFacts {
            nat: parse_bool("nat", values[7])?,
            mapping: parse_opt_behaviour("mapping", values[8])?,
            filtering: parse_opt_behaviour("filtering", values[9])?,
            hairpin: parse_opt_bool("hairpin", values[10])?,
            port_preserved: parse_opt_bool("port-preserved", values[11])?,
            port_mapping: None,
        };
        // Version 1 said nothing of these: a direct punch, no relay; only version 3 has
        // an IPv6 side.
        let (mut nat6, mut relay, mut method, mut method6, mut relayed) = (
            None,
            RelayPolicy::Never,
            (kind == Kind::Accept).then_some(Method::Direct),
            None,
            None,
        );
        let secret_text = if version == 1 {
            values[12]
        } else {
            // Version 3 has one more line before `relay` and one more before `relayed`.
            let v3 = usize::from(version == 3);
            nat.port_mapping = parse_port_mapping("port-mapping", values[12])?;
            if v3 == 1 {
                nat6 = parse_nat6(values[13])?;
            }
            let (relay_text, method_text) = (values[13 + v3], values[14 + v3]);
            relay = relay_text
                .parse()
                .map_err(|_| bad("relay", relay_text, "never, fallback or always"))?;
            method = parse_method(method_text)?;
            if v3 == 1 {
                method6 = parse_method6(values[16])?;
            }
            match (kind, method, method6) {
                (Kind::Invite, Some(_), _) => {
                    return Err(bad(
                        "method",
                        method_text,
                        "- in an invite (the acceptor chooses)",
                    ))
                }
                (Kind::Invite, None, Some(_)) => {
                    return Err(bad(
                        "method6",
                        values[16],
                        "- in an invite (the acceptor chooses)",
                    ))
                }
                (Kind::Accept, None, None) if v3 == 1 => {
                    return Err(MessageError::BadValue {
                        field: "method",
                        reason: ONE_PLAN.into(),
                    })
                }
                (Kind::Accept, None, None) => {
                    return Err(bad("method", method_text, "a method in an accept"))
                }
                _ => {}
            }
            let relayed_text = values[15 + 2 * v3];
            relayed = match relayed_text {
                "-" => None,
                v => {
                    let list = parse_endpoints("relayed", v)?;
                    match list[..] {
                        [one] => Some(one),
                        _ => return Err(bad("relayed", v, "- or one endpoint")),
                    }
                }
            };
            if kind == Kind::Invite && relayed.is_some() {
                return Err(bad("relayed", relayed_text, "- in an invite"));
            }
            if method == Some(Method::Relay) && relayed.is_none() {
                return Err(bad(
                    "relayed",
                    relayed_text,
                    "the relayed endpoint when the method is relay",
                ));
            }
            if version == 3 && nat6.is_none() && method6.is_none() {
                return Err(MessageError::NotLowestVersion {
                    version,
                    lowest: VERSION_2,
                });
            }
            values[16 + 2 * v3]
        };
        let mut secret = Secret([0; 32]);
        if !unhex(secret_text, &mut secret.0) {
            // Never echo the secret's text in an error.
            return Err(MessageError::BadValue {
                field: "secret",
                reason: "not 64 lower-case hex digits".into(),
            });
        }
        let body = Body {
            from,
            to,
            session,
            time,
            mapped,
            local,
            nat,
            nat6,
            relay,
            method,
            method6,
            relayed,
            secret,
        };
        check_families(kind, &body)?;
        Ok(match kind {
            Kind::Invite => Message::Invite(Invite(body)),
            Kind::Accept => Message::Accept(Accept(body)),
            // Returned above; no panic in a decoder even so.
            Kind::Decline => return Err(bad("kind", "decline", "a decline's keys")),
        })
    }
}

#[cfg(test)]
mod tests;
