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
//! PLEXUS-RENDEZVOUS 1
//! kind: invite
//! from: alice@lab.example/home
//! to: bob@lab.example/office
//! session: 000102030405060708090a0b0c0d0e0f
//! time: 1700000000
//! mapped: 203.0.113.7:40000 [2001:db8::7]:40000
//! local: 192.168.1.20:40000
//! nat: yes
//! mapping: endpoint-independent
//! filtering: address-and-port-dependent
//! hairpin: unknown
//! port-preserved: no
//! secret: <64 lower-case hex digits>
//! ```
//!
//! Every line is `key: value` ending in `\n` (no CR, printable ASCII only); every key is
//! required, in this order, once. Lists are space-separated, `-` when empty. Unknown facts
//! are `unknown`. A message larger than [`MAX_ENCODED`] is refused before parsing.

use std::fmt;
use std::net::SocketAddr;

use crate::identity::{wipe, IdError, PeerId};
use crate::nat::Behaviour;

/// The first line of every message; the number is the format version.
pub const MAGIC: &str = "PLEXUS-RENDEZVOUS";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
/// Largest encoded message accepted (a full message with 16 IPv6 endpoints is ~1.5 KiB).
pub const MAX_ENCODED: usize = 4096;
/// Most endpoints in one list (mapped or local).
pub const MAX_ENDPOINTS: usize = 8;

/// The keys, in their required order.
const FIELDS: [&str; 13] = [
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

/// Invite (first message of a session) or accept (the answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Sent by the side that starts a session.
    Invite,
    /// Sent back by the side that accepted an invite.
    Accept,
}

impl Kind {
    /// The spelling in the encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Invite => "invite",
            Kind::Accept => "accept",
        }
    }
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
    /// The sender's NAT behaviour.
    pub nat: NatFacts,
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

/// A decoded or opened message, when either kind may arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// An invite.
    Invite(Invite),
    /// An accept.
    Accept(Accept),
}

mod sealed {
    /// Only this module's message types can be sealed: an outside implementation could
    /// claim to be an accept for any body.
    pub trait Sealed {}
    impl Sealed for super::Invite {}
    impl Sealed for super::Accept {}
    impl Sealed for super::Message {}
}

/// What [`Invite`], [`Accept`] and [`Message`] share: a kind, a body and the encoding.
/// Implemented by these three only.
pub trait Rendezvous: sealed::Sealed {
    /// Invite or accept.
    fn kind(&self) -> Kind;
    /// What the message says.
    fn body(&self) -> &Body;
    /// The canonical encoding. It contains the secret: callers wipe it after use.
    fn encode(&self) -> Result<Vec<u8>, MessageError> {
        self.body().encode_as(self.kind())
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
    /// Invite or accept.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Invite(_) => Kind::Invite,
            Message::Accept(_) => Kind::Accept,
        }
    }

    /// What the message says.
    pub fn body(&self) -> &Body {
        match self {
            Message::Invite(m) => &m.0,
            Message::Accept(m) => &m.0,
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
            MessageError::BadMagic => write!(f, "not a plexus rendezvous message (the first line is not '{MAGIC} {VERSION}')"),
            MessageError::UnsupportedVersion(v) => write!(f, "rendezvous message version {v:?} is not supported by this plexus (it reads version {VERSION}); upgrade plexus on both sides"),
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
            secret: Secret::random()?,
        }))
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
            secret: Secret::random()?,
        }))
    }
}

impl Body {
    /// These fields encoded as a message of `kind`: for tests and tools that need bytes
    /// no session would send (an altered time, another sender). It makes bytes only;
    /// sealing and key derivation take an [`Invite`] or [`Accept`], so this cannot
    /// stand in for one.
    pub fn encode_as(&self, kind: Kind) -> Result<Vec<u8>, MessageError> {
        check_endpoints("mapped", &self.mapped)?;
        check_endpoints("local", &self.local)?;
        let n = &self.nat;
        let values = [
            kind.as_str().to_string(),
            self.from.to_string(),
            self.to.to_string(),
            self.session.to_hex(),
            self.time.to_string(),
            endpoints_text(&self.mapped),
            endpoints_text(&self.local),
            yes_no(n.nat).to_string(),
            opt_text(n.mapping),
            opt_text(n.filtering),
            opt_text(n.hairpin.map(yes_no)),
            opt_text(n.port_preserved.map(yes_no)),
            hex(&self.secret.0),
        ];
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(format!("{MAGIC} {VERSION}\n").as_bytes());
        for (k, mut v) in FIELDS.iter().zip(values) {
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
        match first.strip_prefix(MAGIC).and_then(|r| r.strip_prefix(' ')) {
            Some(v) if v == VERSION.to_string() => {}
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(MessageError::UnsupportedVersion(v.into()))
            }
            _ => return Err(MessageError::BadMagic),
        }
        if !text.ends_with('\n') {
            return Err(MessageError::Unterminated);
        }
        let mut values: Vec<&str> = Vec::with_capacity(FIELDS.len());
        for (i, expected) in FIELDS.iter().enumerate() {
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
                return Err(match FIELDS.iter().position(|k| *k == key) {
                    Some(j) if j < i => MessageError::DuplicateField {
                        line: line_no,
                        key: FIELDS[j],
                    },
                    Some(j) => MessageError::OutOfOrder {
                        line: line_no,
                        expected,
                        found: FIELDS[j],
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
            let line = FIELDS.len() + 2;
            if let Some((key, _)) = rest[0].split_once(": ") {
                if let Some(j) = FIELDS.iter().position(|k| *k == key) {
                    return Err(MessageError::DuplicateField {
                        line,
                        key: FIELDS[j],
                    });
                }
            }
            return Err(MessageError::TrailingData { line });
        }

        let kind = match values[0] {
            "invite" => Kind::Invite,
            "accept" => Kind::Accept,
            v => return Err(bad("kind", v, "invite or accept")),
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
        let canonical_number = !t.is_empty()
            && t.len() <= 20
            && t.bytes().all(|b| b.is_ascii_digit())
            && (t == "0" || !t.starts_with('0'));
        let time = canonical_number
            .then(|| t.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| {
                bad(
                    "time",
                    t,
                    "unix seconds (a decimal number without leading zeros)",
                )
            })?;
        let mapped = parse_endpoints("mapped", values[5])?;
        let local = parse_endpoints("local", values[6])?;
        let nat = NatFacts {
            nat: parse_bool("nat", values[7])?,
            mapping: parse_opt_behaviour("mapping", values[8])?,
            filtering: parse_opt_behaviour("filtering", values[9])?,
            hairpin: parse_opt_bool("hairpin", values[10])?,
            port_preserved: parse_opt_bool("port-preserved", values[11])?,
        };
        let mut secret = Secret([0; 32]);
        if !unhex(values[12], &mut secret.0) {
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
            secret,
        };
        Ok(match kind {
            Kind::Invite => Message::Invite(Invite(body)),
            Kind::Accept => Message::Accept(Accept(body)),
        })
    }
}

#[cfg(test)]
mod tests;
