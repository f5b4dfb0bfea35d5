//! Sealing and opening rendezvous messages with S/MIME (OpenSSL).
//!
//! Seal: encode the message, sign it with the host's key (PKCS#7 signed-data, opaque, the
//! signer certificate included) and write that as an S/MIME entity
//! (`application/pkcs7-mime; smime-type=signed-data`); then encrypt the entity to the
//! peer's certificate (CMS enveloped-data, AES-256-CBC) and return its DER. So
//! `openssl smime -decrypt` (RSA) or `openssl cms -decrypt` (RSA and EC) followed by
//! `openssl smime -verify` reads it, and so does a mail client holding the key.
//!
//! CMS is used for the encryption because PKCS#7 cannot encrypt to EC keys (ECDH key
//! agreement exists only in CMS); for RSA recipients the output is the same structure
//! PKCS#7 tools read.
//!
//! Open: check that the pinned peer certificate is within its validity dates at `now`,
//! decrypt with the host key, read the S/MIME entity inside with our own strict MIME
//! reader (the `mime` module; OpenSSL only ever parses DER), verify the
//! signature against the pinned certificate (the exact certificate, compared by DER;
//! and its chain to the CA when one is configured), then check the ids, the time and
//! the replay state.
//!
//! Anything can arrive: the unauthenticated CMS fields OpenSSL ignores are checked here
//! (so no altered byte of a sealed message goes unnoticed), every OpenSSL call runs with
//! the thread's error queue cleared before and after (a stale entry must never end up in
//! a later error), and opening runs inside `catch_unwind`, so even a panic in a library
//! becomes a typed refusal.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use log::warn;
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::error::ErrorStack;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509StoreContext, X509};

use super::message::{Kind, Message, MessageError, Rendezvous, SessionId, MAX_ENCODED};
use super::mime::{self, Signed};
use super::replay::{ReplayError, ReplayGuard};
use crate::identity::{
    check_validity, fingerprint_sha256, load_cert_bundle, wipe, Identity, IdentityError, OutOfDate,
    PeerCert, PeerId,
};

/// Largest sealed message accepted: a sealed 4 KiB message with an RSA-4096 signer
/// certificate and chain is ~16 KiB; anything much bigger is not ours.
pub const MAX_SEALED: usize = 64 * 1024;
/// Default freshness window: messages older than this are refused.
pub const DEFAULT_MAX_AGE: u64 = crate::defaults::REPLAY_WINDOW.as_secs();
/// Default allowance for the sender's clock being ahead of ours.
pub const DEFAULT_MAX_SKEW: u64 = 120;

const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OID_SIGNED: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
const OID_ENVELOPED: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];

// OpenSSL library and reason codes (openssl/err.h, cmserr.h, pkcs7err.h).
const LIB_ASN1: i32 = 13;
const ASN1_R_HEADER_TOO_LONG: i32 = 123;
const ASN1_R_MISSING_EOC: i32 = 137;
const ASN1_R_NOT_ENOUGH_DATA: i32 = 142;
const ASN1_R_TOO_LONG: i32 = 155;
const LIB_PKCS7: i32 = 33;
const LIB_CMS: i32 = 46;
const CMS_R_NO_MATCHING_RECIPIENT: i32 = 132;
const PKCS7_R_DIGEST_FAILURE: i32 = 101;
const PKCS7_R_SIGNATURE_FAILURE: i32 = 105;
const PKCS7_R_NO_CONTENT: i32 = 122;
const PKCS7_R_NO_SIGNATURES_ON_DATA: i32 = 123;
const PKCS7_R_CERTIFICATE_VERIFY_ERROR: i32 = 117;
const PKCS7_R_SIGNER_CERTIFICATE_NOT_FOUND: i32 = 128;

/// How old and how far ahead a message may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Seconds a message stays acceptable after its timestamp.
    pub max_age: u64,
    /// Seconds a message's timestamp may be ahead of our clock.
    pub max_skew: u64,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            max_age: DEFAULT_MAX_AGE,
            max_skew: DEFAULT_MAX_SKEW,
        }
    }
}

/// Errors while sealing.
#[derive(Debug)]
#[non_exhaustive]
pub enum SealError {
    /// The message's `from`/`to` are not this host and the configured peer.
    WrongIds {
        /// The message's sender.
        from: String,
        /// The message's recipient.
        to: String,
        /// This envelope's host.
        host: String,
        /// This envelope's peer.
        peer: String,
    },
    /// The message cannot be encoded (see the inner error).
    Message(MessageError),
    /// OpenSSL failed to sign or encrypt.
    Crypto(String),
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::WrongIds { from, to, host, peer } => write!(
                f,
                "refusing to seal a message from {from} to {to}: this envelope is for {host} to {peer}"
            ),
            SealError::Message(e) => write!(f, "cannot encode the rendezvous message: {e}"),
            SealError::Crypto(m) => write!(f, "OpenSSL failed to sign or encrypt: {m}"),
        }
    }
}

impl std::error::Error for SealError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SealError::Message(e) => Some(e),
            _ => None,
        }
    }
}

/// Why an envelope could not be set up from the configuration. There is no fallback:
/// a missing or bad certificate stops plexus, it never downgrades to plaintext.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetupError {
    /// The host's or the peer's certificate or key could not be loaded (see inner error).
    Identity(IdentityError),
    /// The pinned peer certificate does not chain to the configured CA.
    CaChain(String),
    /// The replay state file is unusable.
    Replay(ReplayError),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Identity(e) => write!(f, "{e}"),
            SetupError::CaChain(m) => write!(f, "the peer certificate does not chain to the configured CA: {m}; pin the right certificate or name the right CA"),
            SetupError::Replay(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetupError::Identity(e) => Some(e),
            SetupError::Replay(e) => Some(e),
            _ => None,
        }
    }
}

/// Where an S/MIME envelope's material lives (from the profile).
#[derive(Debug, Clone)]
pub struct EnvelopeFiles {
    /// This host's id.
    pub host_id: PeerId,
    /// This host's certificate (PEM).
    pub host_cert: std::path::PathBuf,
    /// This host's private key (PEM, mode 0600).
    pub host_key: std::path::PathBuf,
    /// The peer's id.
    pub peer_id: PeerId,
    /// The peer's pinned certificate (PEM or DER).
    pub peer_cert: std::path::PathBuf,
    /// A CA bundle the peer certificate must also chain to.
    pub ca: Option<std::path::PathBuf>,
    /// The replay state file; `None` keeps it in memory (forgotten on exit).
    pub replay_state: Option<std::path::PathBuf>,
    /// Freshness window.
    pub freshness: Freshness,
}

/// Why a sealed message was refused. Each has its own message saying what was wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// Larger than [`MAX_SEALED`] bytes.
    Oversized {
        /// Its length in bytes.
        len: usize,
    },
    /// Not DER-encoded S/MIME (CMS/PKCS#7) at all.
    NotSmime(String),
    /// DER that ends before its declared length.
    Truncated {
        /// Bytes received.
        have: usize,
        /// Bytes the DER header announces, when it could be read.
        need: Option<usize>,
    },
    /// S/MIME signed but not encrypted: rendezvous content must never travel in clear.
    NotEncrypted,
    /// Encrypted, but not to this host's certificate.
    NotForUs,
    /// Decryption failed: the ciphertext was altered or damaged.
    DecryptFailed(String),
    /// The decrypted content carries no S/MIME signature.
    Unsigned,
    /// Signed by a certificate other than the one pinned for the peer.
    WrongSigner {
        /// The signer certificate found (subject and fingerprint).
        found: String,
    },
    /// The signature does not verify: the content was altered after signing.
    BadSignature(String),
    /// The pinned certificate does not chain to the configured CA.
    CaChain(String),
    /// The signed content is not a valid rendezvous message.
    Malformed(MessageError),
    /// The signed sender id is not the configured peer.
    SenderMismatch {
        /// The configured peer.
        expected: PeerId,
        /// The id in the message.
        found: PeerId,
    },
    /// The signed recipient id is not this host.
    RecipientMismatch {
        /// This host.
        expected: PeerId,
        /// The id in the message.
        found: PeerId,
    },
    /// Older than the freshness window.
    Stale {
        /// Its age in seconds.
        age: u64,
        /// The freshness window in seconds.
        max_age: u64,
    },
    /// Timestamped further ahead than the allowed clock skew.
    FromFuture {
        /// Seconds it is dated ahead of our clock.
        ahead: u64,
        /// The allowed skew in seconds.
        max_skew: u64,
    },
    /// Already accepted once.
    Replayed {
        /// Invite or accept.
        kind: Kind,
        /// Its session.
        session: SessionId,
    },
    /// The replay state could not be read or written (the message was not accepted).
    ReplayState(ReplayError),
    /// The pinned peer certificate is expired or not yet valid at the time of opening.
    PeerCertOutOfDate(OutOfDate),
    /// A bug: opening panicked (caught); the message was refused.
    Internal(String),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Oversized { len } => write!(f, "sealed message is {len} bytes, more than the {MAX_SEALED} allowed; not a plexus message"),
            OpenError::NotSmime(d) => write!(f, "not an S/MIME (DER CMS/PKCS#7) message: {d}"),
            OpenError::Truncated { have, need: Some(need) } => write!(f, "sealed message is truncated: {have} bytes of {need}; it was cut in transit"),
            OpenError::Truncated { have, need: None } => write!(f, "sealed message is truncated after {have} bytes; it was cut in transit"),
            OpenError::NotEncrypted => write!(f, "message is not encrypted (S/MIME signed-data only); plexus refuses rendezvous content sent in clear"),
            OpenError::NotForUs => write!(f, "message is not encrypted to this host's certificate; it was sealed for someone else, or the peer pinned an old certificate of ours"),
            OpenError::DecryptFailed(d) => write!(f, "decryption failed, the ciphertext was altered or damaged: {d}"),
            OpenError::Unsigned => write!(f, "decrypted content is not S/MIME signed; plexus only accepts messages signed by the pinned peer certificate"),
            OpenError::WrongSigner { found } => write!(f, "message is signed by another key ({found}), not by the certificate pinned for the peer"),
            OpenError::BadSignature(d) => write!(f, "signature does not verify, the content was altered: {d}"),
            OpenError::CaChain(d) => write!(f, "the signer certificate does not chain to the configured CA: {d}"),
            OpenError::Malformed(e) => write!(f, "signed content is not a valid rendezvous message: {e}"),
            OpenError::SenderMismatch { expected, found } => write!(f, "signed sender id is {found}, but the peer is {expected}"),
            OpenError::RecipientMismatch { expected, found } => write!(f, "signed recipient id is {found}, but this host is {expected}"),
            OpenError::Stale { age, max_age } => write!(f, "message is {age} s old, older than the {max_age} s window; ask the peer to send a new one"),
            OpenError::FromFuture { ahead, max_skew } => write!(f, "message is dated {ahead} s in the future (more than the {max_skew} s skew allowed); check both clocks"),
            OpenError::Replayed { kind, session } => write!(f, "replayed message: {kind} {session} was already accepted"),
            OpenError::ReplayState(e) => write!(f, "{e}"),
            OpenError::PeerCertOutOfDate(when) => write!(f, "the pinned peer certificate {when}, so nothing signed with it is accepted now; ask the peer for a current certificate and pin it, or check this machine's clock"),
            OpenError::Internal(m) => write!(f, "internal error while opening a message ({m}); the message was refused; please report this as a plexus bug"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Malformed(e) => Some(e),
            OpenError::ReplayState(e) => Some(e),
            _ => None,
        }
    }
}

/// Empty this thread's OpenSSL error queue (without reading it: reading is where the
/// Rust binding can panic on non-UTF-8 error data).
fn clear_openssl_errors() {
    // SAFETY: ERR_clear_error takes no arguments and only frees this thread's entries.
    unsafe { openssl_sys::ERR_clear_error() }
}

/// Run one OpenSSL call with the error queue empty before and after it, so its error
/// (if any) holds only its own entries and nothing it left behind reaches a later call.
fn ossl<T>(call: impl FnOnce() -> Result<T, ErrorStack>) -> Result<T, ErrorStack> {
    clear_openssl_errors();
    let r = call();
    clear_openssl_errors();
    r
}

fn has_reason(e: &ErrorStack, lib: i32, reason: i32) -> bool {
    e.errors()
        .iter()
        .any(|x| x.library_code() == lib && x.reason_code() == reason)
}

/// Read a tag-length header at the start of `b`: (header length, content length), the
/// length `None` for BER indefinite length (NSS-based mail clients write those).
fn der_header(b: &[u8]) -> Option<(usize, Option<usize>)> {
    let first = *b.get(1)?;
    if first < 0x80 {
        return Some((2, Some(first as usize)));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 {
        return Some((2, None));
    }
    if n > 4 || b.len() < 2 + n {
        return None;
    }
    let len = b[2..2 + n]
        .iter()
        .fold(0usize, |acc, &x| (acc << 8) | x as usize);
    Some((2 + n, Some(len)))
}

/// Classify the outer structure before handing it to OpenSSL: garbage, truncated, or
/// the content type OID of a ContentInfo.
fn content_type(b: &[u8]) -> Result<&[u8], OpenError> {
    if b.first() != Some(&0x30) {
        return Err(OpenError::NotSmime(
            "does not start with a DER SEQUENCE".into(),
        ));
    }
    let (h, len) = der_header(b).ok_or_else(|| {
        if b.len() < 6 {
            OpenError::Truncated {
                have: b.len(),
                need: None,
            }
        } else {
            OpenError::NotSmime("bad DER length".into())
        }
    })?;
    if let Some(len) = len {
        let need = h.saturating_add(len);
        if b.len() < need {
            return Err(OpenError::Truncated {
                have: b.len(),
                need: Some(need),
            });
        }
        if b.len() > need {
            return Err(OpenError::NotSmime(format!(
                "{} bytes after the DER structure",
                b.len() - need
            )));
        }
    }
    let inner = &b[h..];
    if inner.first() != Some(&0x06) {
        return Err(if inner.is_empty() {
            OpenError::Truncated {
                have: b.len(),
                need: None,
            }
        } else {
            OpenError::NotSmime("no content type".into())
        });
    }
    let bad = || OpenError::NotSmime("bad content type".into());
    match der_header(inner) {
        Some((oh, Some(olen))) => inner.get(oh..oh + olen).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// A buffer holding decrypted or to-be-encrypted plaintext, wiped on drop.
struct Plain(Vec<u8>);

impl Drop for Plain {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

enum Mode {
    Smime {
        host: Identity,
        peer: PeerCert,
        ca: Option<X509Store>,
    },
    InsecurePlaintext,
}

/// Seals messages to the configured peer and opens messages from it.
pub struct Envelope {
    host_id: PeerId,
    peer_id: PeerId,
    mode: Mode,
    freshness: Freshness,
    replay: ReplayGuard,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.mode {
            Mode::Smime { ca, .. } => {
                if ca.is_some() {
                    "s/mime, pinned + CA"
                } else {
                    "s/mime, pinned"
                }
            }
            Mode::InsecurePlaintext => "INSECURE PLAINTEXT",
        };
        f.debug_struct("Envelope")
            .field("host", &self.host_id)
            .field("peer", &self.peer_id)
            .field("mode", &mode)
            .field("freshness", &self.freshness)
            .finish()
    }
}

impl Envelope {
    /// S/MIME envelope between `host` and the pinned `peer`. With `ca`, the peer's
    /// certificate must chain to it (checked now, and again on every message).
    pub fn new(
        host: Identity,
        peer: PeerCert,
        ca: Option<&[X509]>,
        freshness: Freshness,
        replay: ReplayGuard,
    ) -> Result<Envelope, SetupError> {
        let ca = match ca {
            None => None,
            Some(certs) => {
                let store = build_store(certs).map_err(|e| SetupError::CaChain(e.to_string()))?;
                check_chain(&store, peer.cert()).map_err(SetupError::CaChain)?;
                Some(store)
            }
        };
        Ok(Envelope {
            host_id: host.id().clone(),
            peer_id: peer.id().clone(),
            mode: Mode::Smime { host, peer, ca },
            freshness,
            replay,
        })
    }

    /// Load everything named in `files` and build the envelope.
    pub fn from_files(files: &EnvelopeFiles) -> Result<Envelope, SetupError> {
        let host = Identity::load(files.host_id.clone(), &files.host_cert, &files.host_key)
            .map_err(SetupError::Identity)?;
        let peer = PeerCert::load(files.peer_id.clone(), &files.peer_cert)
            .map_err(SetupError::Identity)?;
        let ca = match &files.ca {
            Some(p) => Some(load_cert_bundle(p).map_err(SetupError::Identity)?),
            None => None,
        };
        let replay = match &files.replay_state {
            Some(p) => ReplayGuard::open(p).map_err(SetupError::Replay)?,
            None => ReplayGuard::in_memory(),
        };
        Envelope::new(host, peer, ca.as_deref(), files.freshness, replay)
    }

    /// INSECURE: no signature, no encryption; the message travels readable by anyone on
    /// the channel, and anyone can forge one. Ids, freshness and replays are still
    /// checked. Only for `--insecure-plaintext`; every message sealed or opened logs a
    /// warning.
    pub fn insecure_plaintext(
        host: PeerId,
        peer: PeerId,
        freshness: Freshness,
        replay: ReplayGuard,
    ) -> Envelope {
        warn!("INSECURE: rendezvous messages with {peer} are neither signed nor encrypted (--insecure-plaintext)");
        Envelope {
            host_id: host,
            peer_id: peer,
            mode: Mode::InsecurePlaintext,
            freshness,
            replay,
        }
    }

    /// Whether this envelope is the insecure plaintext one.
    pub fn is_insecure(&self) -> bool {
        matches!(self.mode, Mode::InsecurePlaintext)
    }

    /// This host's id.
    pub fn host_id(&self) -> &PeerId {
        &self.host_id
    }

    /// The peer's id.
    pub fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }

    /// Sign and encrypt `msg` (an [`Invite`](super::Invite), an [`Accept`](super::Accept)
    /// or a [`Message`], from this host to the peer); DER bytes out.
    pub fn seal(&self, msg: &impl Rendezvous) -> Result<Vec<u8>, SealError> {
        let body = msg.body();
        if body.from != self.host_id || body.to != self.peer_id {
            return Err(SealError::WrongIds {
                from: body.from.to_string(),
                to: body.to.to_string(),
                host: self.host_id.to_string(),
                peer: self.peer_id.to_string(),
            });
        }
        let plain = Plain(msg.encode().map_err(SealError::Message)?);
        match &self.mode {
            Mode::InsecurePlaintext => {
                warn!(
                    "INSECURE: sending {} {} to {} in PLAINTEXT (--insecure-plaintext): anyone on the channel can read its endpoints and secret",
                    msg.kind(),
                    body.session,
                    self.peer_id
                );
                Ok(plain.0.clone())
            }
            Mode::Smime { host, peer, .. } => {
                seal_smime(host, peer, &plain.0).map_err(|e| SealError::Crypto(e.to_string()))
            }
        }
    }

    /// Decrypt, verify and check a sealed message received at `now` (unix seconds). On
    /// success the message is remembered, so the same message is refused next time.
    pub fn open(&mut self, sealed: &[u8], now: u64) -> Result<Message, OpenError> {
        if sealed.len() > MAX_SEALED {
            return Err(OpenError::Oversized { len: sealed.len() });
        }
        let msg = match &self.mode {
            Mode::InsecurePlaintext => {
                warn!(
                    "INSECURE: opening a PLAINTEXT rendezvous message claiming to be from {} (--insecure-plaintext): it is not authenticated",
                    self.peer_id
                );
                Message::decode(sealed).map_err(OpenError::Malformed)?
            }
            Mode::Smime { host, peer, ca } => {
                clear_openssl_errors();
                let valid = check_validity(peer.cert(), now);
                clear_openssl_errors();
                valid.map_err(OpenError::PeerCertOutOfDate)?;
                open_guarded(host, peer, ca.as_ref(), sealed)?
            }
        };
        let body = msg.body();
        if body.from != self.peer_id {
            return Err(OpenError::SenderMismatch {
                expected: self.peer_id.clone(),
                found: body.from.clone(),
            });
        }
        if body.to != self.host_id {
            return Err(OpenError::RecipientMismatch {
                expected: self.host_id.clone(),
                found: body.to.clone(),
            });
        }
        let f = self.freshness;
        if body.time > now.saturating_add(f.max_skew) {
            return Err(OpenError::FromFuture {
                ahead: body.time - now,
                max_skew: f.max_skew,
            });
        }
        if now > body.time.saturating_add(f.max_age) {
            return Err(OpenError::Stale {
                age: now - body.time,
                max_age: f.max_age,
            });
        }
        // Entries are kept for max_age + max_skew: a message dated ahead stays acceptable
        // that much longer.
        let keep = f.max_age.saturating_add(f.max_skew);
        self.replay
            .check_and_record(msg.kind(), &body.from, body.session, body.time, now, keep)
            .map_err(|e| match e {
                ReplayError::Replayed { kind, session, .. } => {
                    OpenError::Replayed { kind, session }
                }
                other => OpenError::ReplayState(other),
            })?;
        Ok(msg)
    }
}

fn build_store(certs: &[X509]) -> Result<X509Store, ErrorStack> {
    let mut b = X509StoreBuilder::new()?;
    for c in certs {
        b.add_cert(c.clone())?;
    }
    Ok(b.build())
}

fn check_chain(store: &X509Store, cert: &X509) -> Result<(), String> {
    let chain = Stack::new().map_err(|e| e.to_string())?;
    let mut ctx = X509StoreContext::new().map_err(|e| e.to_string())?;
    let res = ctx
        .init(store, cert, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok(if ok {
                Ok(())
            } else {
                Err(c.error().error_string().to_string())
            })
        })
        .map_err(|e| e.to_string())?;
    res.map_err(|reason| format!("pinned certificate {}: {reason}", fingerprint_sha256(cert)))
}

pub(crate) fn seal_smime(
    host: &Identity,
    peer: &PeerCert,
    plain: &[u8],
) -> Result<Vec<u8>, ErrorStack> {
    let no_extra = ossl(Stack::new)?;
    // BINARY: sign the bytes as they are (no CRLF translation); opaque (not detached):
    // the content travels inside the signature.
    let flags = Pkcs7Flags::BINARY;
    let signed = ossl(|| Pkcs7::sign(host.cert(), host.key(), &no_extra, plain, flags))?;
    let entity = Plain(ossl(|| signed.to_smime(plain, flags))?);
    let mut to = ossl(Stack::new)?;
    ossl(|| to.push(peer.cert().clone()))?;
    let env = ossl(|| {
        CmsContentInfo::encrypt(&to, &entity.0, Cipher::aes_256_cbc(), CMSOptions::BINARY)
    })?;
    ossl(|| env.to_der())
}

/// Open inside a `catch_unwind` boundary: whatever arrives, a panic (a bug, here or in a
/// library) refuses the message instead of ending the process.
fn open_guarded(
    host: &Identity,
    peer: &PeerCert,
    ca: Option<&X509Store>,
    sealed: &[u8],
) -> Result<Message, OpenError> {
    // Only shared references go in and nothing is kept on a panic, so no broken state
    // can be observed afterwards.
    let opened = catch_unwind(AssertUnwindSafe(|| open_smime(host, peer, ca, sealed)));
    // A panic can leave entries behind (it may have struck while the queue was read).
    clear_openssl_errors();
    opened.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        let what: String = what.chars().take(200).collect();
        Err(OpenError::Internal(what.escape_debug().to_string()))
    })
}

/// One BER/DER element at the start of `b`: (tag, header length, content length, `None`
/// for indefinite length), its content within `b`. Low tag numbers only: the CMS fields
/// read here use no others.
fn element(b: &[u8]) -> Option<(u8, usize, Option<usize>)> {
    let tag = *b.first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (h, len) = der_header(b)?;
    match len {
        Some(l) if h.checked_add(l)? <= b.len() => Some((tag, h, Some(l))),
        None if tag & 0x20 != 0 => Some((tag, h, None)),
        _ => None,
    }
}

/// Nesting of indefinite lengths walked at most (plexus and OpenSSL write 4).
const MAX_BER_DEPTH: u8 = 8;

/// Total length of the element at the start of `b`, walking indefinite lengths to their
/// end-of-contents.
fn element_len(b: &[u8], depth: u8) -> Option<usize> {
    let (_, h, len) = element(b)?;
    match len {
        Some(l) => Some(h + l),
        None => {
            let depth = depth.checked_sub(1)?;
            let mut pos = h;
            loop {
                let rest = b.get(pos..)?;
                if rest.starts_with(&[0, 0]) {
                    return Some(pos + 2);
                }
                pos += element_len(rest, depth)?;
            }
        }
    }
}

/// The child elements of the constructed element at the start of `b`.
fn children(b: &[u8]) -> Option<Vec<&[u8]>> {
    let (tag, h, len) = element(b)?;
    if tag & 0x20 == 0 {
        return None;
    }
    let end = match len {
        Some(l) => h + l,
        None => element_len(b, MAX_BER_DEPTH)? - 2,
    };
    let mut out = Vec::new();
    let mut pos = h;
    while pos < end {
        let n = element_len(&b[pos..end], MAX_BER_DEPTH)?;
        out.push(&b[pos..pos + n]);
        pos += n;
    }
    Some(out)
}

/// The content of an element after its header.
fn content_of(e: &[u8]) -> Option<&[u8]> {
    let (_, h, len) = element(e)?;
    e.get(h..h + len?)
}

/// The OID (content octets) and the parameters of an AlgorithmIdentifier element.
fn algorithm(e: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let parts = children(e).filter(|_| e.first() == Some(&0x30))?;
    let oid = parts.first().filter(|o| o.first() == Some(&0x06))?;
    match parts[..] {
        [_] => Some((content_of(oid)?, None)),
        [_, p] => Some((content_of(oid)?, Some(p))),
        _ => None,
    }
}

// Algorithm OIDs (content octets) OpenSSL does not check when it decrypts, so plexus
// does: rsaEncryption, id-RSAES-OAEP; id-ecPublicKey, X25519, X448; and the ECDH
// schemes dhSinglePass-stdDH-sha1kdf and -sha224/256/384/512kdf (RFC 5753).
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_RSA_OAEP: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07];
const ORIGINATOR_KEYS: &[&[u8]] = &[
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01],
    &[0x2b, 0x65, 0x6e],
    &[0x2b, 0x65, 0x6f],
];
const ECDH_SCHEMES: &[&[u8]] = &[
    &[0x2b, 0x81, 0x05, 0x10, 0x86, 0x48, 0x3f, 0x00, 0x02],
    &[0x2b, 0x81, 0x04, 0x01, 0x0b, 0x00],
    &[0x2b, 0x81, 0x04, 0x01, 0x0b, 0x01],
    &[0x2b, 0x81, 0x04, 0x01, 0x0b, 0x02],
    &[0x2b, 0x81, 0x04, 0x01, 0x0b, 0x03],
];

/// A KeyTransRecipientInfo's key encryption: RSA PKCS#1 v1.5 (parameters NULL or
/// absent), or RSA-OAEP (whose parameters OpenSSL reads and applies).
fn key_transport_ok(alg: &[u8]) -> bool {
    match algorithm(alg) {
        Some((oid, None)) => oid == OID_RSA,
        Some((oid, Some(p))) => (oid == OID_RSA && p == [0x05, 0x00]) || oid == OID_RSA_OAEP,
        None => false,
    }
}

/// A KeyAgreeRecipientInfo after its version: the originator (an ephemeral key must be
/// EC, X25519 or X448, its BIT STRING without unused bits), an optional ukm, and a
/// known ECDH scheme.
fn key_agreement_ok(parts: &[&[u8]]) -> bool {
    let Some(originator) = parts.first().filter(|o| o.first() == Some(&0xa0)) else {
        return false;
    };
    let Some(choice) = children(originator).and_then(|c| c.first().copied()) else {
        return false;
    };
    if choice.first() == Some(&0xa1) {
        let key = children(choice).unwrap_or_default();
        let [alg, bits] = key[..] else {
            return false;
        };
        let alg_ok = algorithm(alg).is_some_and(|(oid, _)| ORIGINATOR_KEYS.contains(&oid));
        let bits_ok =
            bits.first() == Some(&0x03) && content_of(bits).and_then(|c| c.first()) == Some(&0);
        if !alg_ok || !bits_ok {
            return false;
        }
    }
    let rest = &parts[1..];
    let rest = if rest.first().and_then(|u| u.first()) == Some(&0xa1) {
        &rest[1..]
    } else {
        rest
    };
    rest.first()
        .and_then(|a| algorithm(a))
        .is_some_and(|(oid, _)| ECDH_SCHEMES.contains(&oid))
}

/// The value of a one-byte INTEGER element (CMS versions).
fn small_int(e: &[u8]) -> Option<u8> {
    match e {
        [0x02, 0x01, v] => Some(*v),
        _ => None,
    }
}

/// Check the unauthenticated fields of a parsed enveloped-data that OpenSSL ignores when
/// it decrypts: the version numbers (RFC 5652 §6.1, §6.2), the key encryption algorithm
/// identifiers and the content type (id-data, as S/MIME requires). Altered, they would
/// still decrypt; checked, a changed byte anywhere in a sealed message is refused rather
/// than silently accepted.
fn check_enveloped(sealed: &[u8]) -> Result<(), OpenError> {
    let bad = |what: &str| OpenError::NotSmime(format!("CMS enveloped-data with {what}"));
    let unreadable = || bad("a structure plexus cannot read");
    let ci = children(sealed).ok_or_else(unreadable)?;
    let explicit = ci
        .get(1)
        .filter(|e| e.first() == Some(&0xa0))
        .ok_or_else(unreadable)?;
    let env = children(explicit).ok_or_else(unreadable)?;
    let [seq] = env[..] else {
        return Err(unreadable());
    };
    let fields = children(seq).ok_or_else(unreadable)?;
    let mut fields = fields.iter().peekable();
    let version = fields
        .next()
        .and_then(|v| small_int(v))
        .ok_or_else(unreadable)?;
    let originator = fields.next_if(|f| f.first() == Some(&0xa0)).is_some();
    let recipients = fields
        .next()
        .filter(|f| f.first() == Some(&0x31))
        .and_then(|f| children(f))
        .ok_or_else(unreadable)?;
    let (mut all_v0, mut pwri_or_ori) = (true, false);
    for ri in &recipients {
        let parts = children(ri).ok_or_else(unreadable)?;
        let v = parts.first().and_then(|v| small_int(v));
        let want = match ri.first() {
            // KeyTransRecipientInfo: 0 with issuerAndSerialNumber, 2 with a key id.
            Some(0x30) => match parts.get(1).and_then(|r| r.first()) {
                Some(0x30) => 0,
                _ => 2,
            },
            Some(0xa1) => 3, // KeyAgreeRecipientInfo
            Some(0xa2) => 4, // KEKRecipientInfo
            Some(0xa3) => {
                pwri_or_ori = true;
                0 // PasswordRecipientInfo
            }
            Some(0xa4) => {
                pwri_or_ori = true;
                all_v0 = false;
                continue; // OtherRecipientInfo has no version
            }
            _ => return Err(unreadable()),
        };
        if v != Some(want) {
            return Err(bad(&format!("a recipient of version {v:?}, not {want}")));
        }
        let alg_ok = match ri.first() {
            Some(0x30) => parts.get(2).is_some_and(|a| key_transport_ok(a)),
            Some(0xa1) => key_agreement_ok(&parts[1..]),
            _ => true, // OpenSSL applies the algorithms of the other kinds
        };
        if !alg_ok {
            return Err(bad("a key encryption algorithm plexus does not accept"));
        }
        all_v0 &= want == 0;
    }
    let content = fields
        .next()
        .filter(|f| f.first() == Some(&0x30))
        .and_then(|f| children(f))
        .ok_or_else(unreadable)?;
    let is_data = content.first().is_some_and(|oid| {
        oid.len() == 2 + OID_DATA.len() && oid[..2] == [0x06, 0x09] && oid[2..] == *OID_DATA
    });
    if !is_data {
        return Err(bad("encrypted content that is not id-data"));
    }
    let unprotected = fields.next_if(|f| f.first() == Some(&0xa1)).is_some();
    if fields.next().is_some() {
        return Err(unreadable());
    }
    let want: &[u8] = if originator {
        &[2, 3, 4]
    } else if pwri_or_ori {
        &[3]
    } else if all_v0 && !unprotected {
        &[0]
    } else {
        &[2]
    };
    if !want.contains(&version) {
        return Err(bad(&format!(
            "version {version}, which does not match its recipients"
        )));
    }
    Ok(())
}

fn open_smime(
    host: &Identity,
    peer: &PeerCert,
    ca: Option<&X509Store>,
    sealed: &[u8],
) -> Result<Message, OpenError> {
    #[cfg(test)]
    if tests::PANIC_IN_OPEN.with(|p| p.replace(false)) {
        panic!("a test asked open to panic");
    }
    match content_type(sealed)? {
        t if t == OID_ENVELOPED => {}
        t if t == OID_SIGNED => return Err(OpenError::NotEncrypted),
        t if t == OID_DATA => return Err(OpenError::NotEncrypted),
        _ => return Err(OpenError::NotSmime("not CMS enveloped-data".into())),
    }
    let env = ossl(|| CmsContentInfo::from_der(sealed)).map_err(|e| {
        let short = [
            ASN1_R_HEADER_TOO_LONG,
            ASN1_R_MISSING_EOC,
            ASN1_R_NOT_ENOUGH_DATA,
            ASN1_R_TOO_LONG,
        ];
        if short.iter().any(|&r| has_reason(&e, LIB_ASN1, r)) {
            OpenError::Truncated {
                have: sealed.len(),
                need: None,
            }
        } else {
            OpenError::NotSmime(e.to_string())
        }
    })?;
    check_enveloped(sealed)?;
    let inner = Plain(ossl(|| env.decrypt(host.key(), host.cert())).map_err(|e| {
        if has_reason(&e, LIB_CMS, CMS_R_NO_MATCHING_RECIPIENT) {
            OpenError::NotForUs
        } else {
            OpenError::DecryptFailed(e.to_string())
        }
    })?);
    if inner.0.len() > MAX_SEALED {
        return Err(OpenError::Oversized { len: inner.0.len() });
    }

    // Text that is not S/MIME is an unsigned message; binary noise means the ciphertext
    // was altered and still happened to decrypt with valid padding.
    let not_smime = |why: String| {
        if inner
            .0
            .iter()
            .all(|&b| b == b'\n' || b == b'\r' || (0x20..0x7f).contains(&b))
        {
            OpenError::Unsigned
        } else {
            OpenError::DecryptFailed(format!("decrypted content is not S/MIME ({why})"))
        }
    };
    let (der, detached) = match mime::parse(&inner.0) {
        Ok(Signed::Opaque { der }) => (Plain(der), None),
        Ok(Signed::Detached { content, signature }) => (Plain(signature), Some(content)),
        Err(e) => return Err(not_smime(e.to_string())),
    };
    let p7 = ossl(|| Pkcs7::from_der(&der.0))
        .map_err(|e| not_smime(format!("its PKCS#7 does not parse: {e}")))?;
    if p7.signed().is_none() {
        return Err(OpenError::Unsigned);
    }
    // The signer must be exactly the pinned certificate (when the message carries it).
    let none: Stack<X509> = ossl(Stack::new).map_err(|e| OpenError::BadSignature(e.to_string()))?;
    if let Ok(signers) = ossl(|| p7.signers(&none, Pkcs7Flags::empty())) {
        let pinned =
            ossl(|| peer.cert().to_der()).map_err(|e| OpenError::BadSignature(e.to_string()))?;
        for s in &signers {
            if ossl(|| s.to_der()).ok().as_deref() != Some(&pinned[..]) {
                return Err(OpenError::WrongSigner { found: describe(s) });
            }
        }
    }
    let mut pinned = ossl(Stack::new).map_err(|e| OpenError::BadSignature(e.to_string()))?;
    ossl(|| pinned.push(peer.cert().clone()))
        .map_err(|e| OpenError::BadSignature(e.to_string()))?;
    // NOINTERN: only the pinned certificate may be the signer, whatever the message carries.
    let mut flags = Pkcs7Flags::NOINTERN;
    let empty_store;
    let store = match ca {
        Some(s) => s,
        None => {
            // Pinned only: the pinned certificate is the trust; no chain to build. Its
            // validity dates were checked against `now` before opening.
            flags |= Pkcs7Flags::NOVERIFY;
            empty_store = ossl(X509StoreBuilder::new)
                .map_err(|e| OpenError::BadSignature(e.to_string()))?
                .build();
            &empty_store
        }
    };
    let mut content = Vec::new();
    let verified = ossl(|| p7.verify(&pinned, store, detached, Some(&mut content), flags));
    let content = Plain(content);
    verified.map_err(|e| {
        if has_reason(&e, LIB_PKCS7, PKCS7_R_SIGNER_CERTIFICATE_NOT_FOUND) {
            OpenError::WrongSigner {
                found: "a certificate not included in the message".into(),
            }
        } else if has_reason(&e, LIB_PKCS7, PKCS7_R_NO_SIGNATURES_ON_DATA)
            || has_reason(&e, LIB_PKCS7, PKCS7_R_NO_CONTENT)
        {
            // A certificates-only signed-data, or a signature with no content.
            OpenError::Unsigned
        } else if has_reason(&e, LIB_PKCS7, PKCS7_R_CERTIFICATE_VERIFY_ERROR) {
            OpenError::CaChain(e.to_string())
        } else if has_reason(&e, LIB_PKCS7, PKCS7_R_DIGEST_FAILURE)
            || has_reason(&e, LIB_PKCS7, PKCS7_R_SIGNATURE_FAILURE)
        {
            OpenError::BadSignature("digest or signature mismatch".into())
        } else {
            OpenError::BadSignature(e.to_string())
        }
    })?;
    if content.0.len() > MAX_ENCODED {
        return Err(OpenError::Malformed(MessageError::TooLarge {
            len: content.0.len(),
        }));
    }
    // Text signed in S/MIME canonical form (as mail clients and `openssl smime -sign`
    // without -binary do, and as multipart/signed forces) has CRLF line ends; the
    // message format has LF. A lone CR stays and is refused by the decoder.
    let content = if content.0.windows(2).any(|w| w == b"\r\n") {
        let mut lf = Vec::with_capacity(content.0.len());
        let mut i = 0;
        while i < content.0.len() {
            if content.0[i] == b'\r' && content.0.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
            lf.push(content.0[i]);
            i += 1;
        }
        Plain(lf)
    } else {
        content
    };
    Message::decode(&content.0).map_err(OpenError::Malformed)
}

fn describe(cert: &openssl::x509::X509Ref) -> String {
    let cn = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_else(|| "no CN".into());
    format!("CN={:?}, SHA-256 {}", cn, fingerprint_sha256(cert))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rendezvous::message::{Accept, Invite, NatFacts};
    use crate::testing::DemoCerts;
    use std::process::{Command, Stdio};

    const NOW: u64 = 1_800_000_000;

    fn envelope(demo: &DemoCerts, host: &str, peer: &str) -> Envelope {
        Envelope::new(
            demo.identity(host),
            demo.peer(peer),
            None,
            Freshness::default(),
            ReplayGuard::in_memory(),
        )
        .unwrap()
    }

    fn invite(from: &str, to: &str) -> Invite {
        Invite::new(
            DemoCerts::id(from),
            DemoCerts::id(to),
            NOW,
            vec!["198.51.100.4:41000".parse().unwrap()],
            vec!["10.1.0.2:41000".parse().unwrap()],
            NatFacts {
                nat: true,
                ..NatFacts::default()
            },
        )
        .unwrap()
    }

    /// Sign with `signer`'s key and encrypt to `to`'s certificate whatever the ids say.
    fn forge(demo: &DemoCerts, signer: &str, to: &str, msg: &impl Rendezvous) -> Vec<u8> {
        seal_smime(
            &demo.identity(signer),
            &demo.peer(to),
            &msg.encode().unwrap(),
        )
        .unwrap()
    }

    fn encrypt_raw(demo: &DemoCerts, to: &str, data: &[u8]) -> Vec<u8> {
        let mut st = Stack::new().unwrap();
        st.push(demo.peer(to).cert().clone()).unwrap();
        CmsContentInfo::encrypt(&st, data, Cipher::aes_256_cbc(), CMSOptions::BINARY)
            .unwrap()
            .to_der()
            .unwrap()
    }

    #[test]
    fn round_trip_rsa_and_ec() {
        let demo = DemoCerts::new("seal-rt");
        // alice and carol are RSA, bob is EC: cover RSA→RSA, RSA→EC, EC→RSA.
        for (from, to) in [("alice", "carol"), ("alice", "bob"), ("bob", "alice")] {
            let sender = envelope(&demo, from, to);
            let mut receiver = envelope(&demo, to, from);
            let msg = invite(from, to);
            let sealed = sender.seal(&msg).unwrap();
            assert!(
                !sealed.windows(20).any(|w| w == b"PLEXUS-RENDEZVOUS 1\n"),
                "plaintext leaked"
            );
            let opened = receiver.open(&sealed, NOW + 5).unwrap();
            assert_eq!(opened, msg, "{from} -> {to}");
            let Message::Invite(opened) = opened else {
                unreachable!("compared equal to an invite")
            };
            let accept =
                Accept::new(&opened, NOW + 6, vec![], vec![], NatFacts::default()).unwrap();
            let back = receiver.seal(&accept).unwrap();
            let mut sender = sender;
            assert_eq!(sender.open(&back, NOW + 7).unwrap(), accept);
        }
    }

    #[test]
    fn a_malformed_message_is_the_typed_source_of_the_refusal() {
        let demo = DemoCerts::new("seal-source");
        let mut bob = envelope(&demo, "bob", "alice");
        let sealed = seal_smime(
            &demo.identity("alice"),
            &demo.peer("bob"),
            b"PLEXUS-RENDEZVOUS 2\n",
        )
        .unwrap();
        let e = bob.open(&sealed, NOW).unwrap_err();
        assert!(matches!(e, OpenError::Malformed(_)), "{e}");
        let cause = std::error::Error::source(&e).expect("the message error is the source");
        assert_eq!(
            cause.downcast_ref::<MessageError>(),
            Some(&MessageError::UnsupportedVersion("2".into()))
        );
    }

    #[test]
    fn seal_refuses_ids_that_are_not_ours() {
        let demo = DemoCerts::new("seal-ids");
        let env = envelope(&demo, "alice", "bob");
        assert!(matches!(
            env.seal(&invite("alice", "carol")),
            Err(SealError::WrongIds { .. })
        ));
        assert!(matches!(
            env.seal(&invite("bob", "alice")),
            Err(SealError::WrongIds { .. })
        ));
    }

    #[test]
    fn each_bad_input_has_its_own_error() {
        let demo = DemoCerts::new("seal-bad");
        let alice = envelope(&demo, "alice", "bob");
        let mut bob = envelope(&demo, "bob", "alice");
        let msg = invite("alice", "bob");
        let good = alice.seal(&msg).unwrap();

        // Garbage, truncated DER, oversized input.
        assert!(matches!(
            bob.open(b"hello, this is not S/MIME", NOW),
            Err(OpenError::NotSmime(_))
        ));
        assert!(matches!(bob.open(b"", NOW), Err(OpenError::NotSmime(_))));
        let e = bob.open(&good[..good.len() / 2], NOW).unwrap_err();
        assert!(
            matches!(e, OpenError::Truncated { need, .. } if need == Some(good.len())),
            "{e}"
        );
        assert!(matches!(
            bob.open(&good[..3], NOW),
            Err(OpenError::Truncated { .. })
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            bob.open(&trailing, NOW),
            Err(OpenError::NotSmime(_))
        ));
        assert!(matches!(
            bob.open(&vec![0x30; MAX_SEALED + 1], NOW),
            Err(OpenError::Oversized { .. })
        ));

        // Signed but not encrypted.
        let p7 = Pkcs7::sign(
            demo.identity("alice").cert(),
            demo.identity("alice").key(),
            &Stack::new().unwrap(),
            &msg.encode().unwrap(),
            Pkcs7Flags::BINARY,
        )
        .unwrap();
        assert!(matches!(
            bob.open(&p7.to_der().unwrap(), NOW),
            Err(OpenError::NotEncrypted)
        ));

        // Encrypted to bob but unsigned.
        let unsigned = encrypt_raw(&demo, "bob", &msg.encode().unwrap());
        assert!(matches!(bob.open(&unsigned, NOW), Err(OpenError::Unsigned)));

        // A signed-data with certificates but no signature at all.
        let degenerate = sh(
            "openssl crl2pkcs7 -nocrl -certfile alice.pem -outform DER | openssl base64",
            &demo.dir,
        );
        let mime = format!(
            "MIME-Version: 1.0\nContent-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\nContent-Transfer-Encoding: base64\n\n{}",
            String::from_utf8(degenerate).unwrap()
        );
        let e = bob
            .open(&encrypt_raw(&demo, "bob", mime.as_bytes()), NOW)
            .unwrap_err();
        assert!(matches!(e, OpenError::Unsigned), "{e}");

        // Encrypted to someone else (carol).
        let e = bob
            .open(&forge(&demo, "alice", "carol", &msg), NOW)
            .unwrap_err();
        assert!(matches!(e, OpenError::NotForUs), "{e}");

        // Signed by another key (mallory claims to be alice).
        let e = bob
            .open(&forge(&demo, "mallory", "bob", &msg), NOW)
            .unwrap_err();
        assert!(
            matches!(&e, OpenError::WrongSigner { found } if found.contains("mallory")),
            "{e}"
        );
        // Also when the other key is a CA-issued one (carol).
        assert!(matches!(
            bob.open(&forge(&demo, "carol", "bob", &msg), NOW),
            Err(OpenError::WrongSigner { .. })
        ));

        // Tampered ciphertext: flipping the top bit of the penultimate block's last byte
        // turns the final padding byte into >= 0x80, which CBC unpadding always rejects.
        let mut t = good.clone();
        let n = t.len();
        t[n - 17] ^= 0x80;
        assert!(matches!(
            bob.open(&t, NOW),
            Err(OpenError::DecryptFailed(_))
        ));
        // Tampering anywhere in the ciphertext never opens.
        for back in [40, 100, 300] {
            let mut t = good.clone();
            t[n - back] ^= 0x01;
            assert!(bob.open(&t, NOW).is_err(), "flip at -{back}");
        }

        // Content altered after signing (detached signature, altered body).
        let al = demo.identity("alice");
        let text = msg.encode().unwrap();
        let det = Pkcs7::sign(
            al.cert(),
            al.key(),
            &Stack::new().unwrap(),
            &text,
            Pkcs7Flags::BINARY | Pkcs7Flags::DETACHED,
        )
        .unwrap();
        let mime = String::from_utf8(
            det.to_smime(&text, Pkcs7Flags::BINARY | Pkcs7Flags::DETACHED)
                .unwrap(),
        )
        .unwrap();
        let altered = mime.replacen("198.51.100.4:41000", "198.51.100.9:41000", 1);
        assert_ne!(mime, altered);
        let e = bob
            .open(&encrypt_raw(&demo, "bob", altered.as_bytes()), NOW)
            .unwrap_err();
        assert!(matches!(e, OpenError::BadSignature(_)), "{e}");

        // Signed by the pinned key, but the ids inside are wrong.
        let e = bob
            .open(&forge(&demo, "alice", "bob", &invite("carol", "bob")), NOW)
            .unwrap_err();
        assert!(
            matches!(&e, OpenError::SenderMismatch { found, .. } if found.as_str() == "carol@lab.example/nas"),
            "{e}"
        );
        let e = bob
            .open(
                &forge(&demo, "alice", "bob", &invite("alice", "carol")),
                NOW,
            )
            .unwrap_err();
        assert!(
            matches!(&e, OpenError::RecipientMismatch { found, .. } if found.as_str() == "carol@lab.example/nas"),
            "{e}"
        );

        // Signed content that is not a rendezvous message.
        let junk = seal_smime(&al, &demo.peer("bob"), b"hello bob\n").unwrap();
        assert!(matches!(
            bob.open(&junk, NOW),
            Err(OpenError::Malformed(MessageError::BadMagic))
        ));
        let big = seal_smime(&al, &demo.peer("bob"), &vec![b'x'; MAX_ENCODED + 1]).unwrap();
        assert!(matches!(
            bob.open(&big, NOW),
            Err(OpenError::Malformed(MessageError::TooLarge { .. }))
        ));

        // Time window: stale, from the future, and the edges that are still accepted.
        let f = Freshness::default();
        let e = bob.open(&good, NOW + f.max_age + 1).unwrap_err();
        assert!(
            matches!(e, OpenError::Stale { age, .. } if age == f.max_age + 1),
            "{e}"
        );
        let e = bob.open(&good, NOW - f.max_skew - 1).unwrap_err();
        assert!(
            matches!(e, OpenError::FromFuture { ahead, .. } if ahead == f.max_skew + 1),
            "{e}"
        );
        assert_eq!(bob.open(&good, NOW + f.max_age).unwrap(), msg);

        // Replay.
        let e = bob.open(&good, NOW + 1).unwrap_err();
        assert!(
            matches!(e, OpenError::Replayed { kind: Kind::Invite, session } if session == msg.session),
            "{e}"
        );
    }

    #[test]
    fn indefinite_length_ber_opens_and_its_truncation_is_detected() {
        let demo = DemoCerts::new("seal-ber");
        let msg = invite("alice", "carol");
        std::fs::write(demo.path("msg.txt"), msg.encode().unwrap()).unwrap();
        // -stream makes openssl write BER with indefinite lengths, as NSS-based clients do.
        let ber = sh(
            "openssl smime -sign -binary -nodetach -signer alice.pem -inkey alice.key -in msg.txt \
             | openssl cms -encrypt -aes256 -binary -stream -outform DER carol.pem",
            &demo.dir,
        );
        assert_eq!(&ber[..2], &[0x30, 0x80], "expected indefinite-length BER");
        let mut carol = envelope(&demo, "carol", "alice");
        for cut in [ber.len() - 1, ber.len() - 30, ber.len() / 2, 40] {
            let e = carol.open(&ber[..cut], NOW).unwrap_err();
            assert!(
                matches!(e, OpenError::Truncated { need: None, .. }),
                "cut at {cut}: {e}"
            );
        }
        assert_eq!(carol.open(&ber, NOW).unwrap(), msg);
    }

    #[test]
    fn from_files_loads_everything_and_never_downgrades() {
        let demo = DemoCerts::new("seal-files");
        let files = EnvelopeFiles {
            host_id: DemoCerts::id("bob"),
            host_cert: demo.path("bob.pem"),
            host_key: demo.path("bob.key"),
            peer_id: DemoCerts::id("alice"),
            peer_cert: demo.path("alice.pem"),
            ca: Some(demo.path("ca.pem")),
            replay_state: Some(demo.path("state/replay")),
            freshness: Freshness::default(),
        };
        let mut bob = Envelope::from_files(&files).unwrap();
        assert!(!bob.is_insecure());
        let sealed = envelope(&demo, "alice", "bob")
            .seal(&invite("alice", "bob"))
            .unwrap();
        bob.open(&sealed, NOW).unwrap();
        assert!(demo.path("state/replay").exists());

        let missing = EnvelopeFiles {
            peer_cert: demo.path("nobody.pem"),
            ..files.clone()
        };
        let e = Envelope::from_files(&missing).unwrap_err();
        assert!(
            matches!(e, SetupError::Identity(IdentityError::Read { .. })),
            "{e}"
        );
        let wrong_ca = EnvelopeFiles {
            ca: Some(demo.path("mallory.pem")),
            ..files.clone()
        };
        assert!(matches!(
            Envelope::from_files(&wrong_ca),
            Err(SetupError::CaChain(_))
        ));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(demo.path("bob.key"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let e = Envelope::from_files(&files).unwrap_err();
        assert!(
            matches!(e, SetupError::Identity(IdentityError::KeyTooOpen { .. })),
            "{e}"
        );
    }

    #[test]
    fn replay_is_refused_after_a_restart() {
        let demo = DemoCerts::new("seal-restart");
        let state = demo.path("state/replay");
        let alice = envelope(&demo, "alice", "bob");
        let sealed = alice.seal(&invite("alice", "bob")).unwrap();
        let bob = |demo: &DemoCerts| {
            Envelope::new(
                demo.identity("bob"),
                demo.peer("alice"),
                None,
                Freshness::default(),
                ReplayGuard::open(&state).unwrap(),
            )
            .unwrap()
        };
        bob(&demo).open(&sealed, NOW).unwrap();
        // A new process (new envelope, state reloaded from the file) refuses it.
        assert!(matches!(
            bob(&demo).open(&sealed, NOW + 30),
            Err(OpenError::Replayed { .. })
        ));
    }

    #[test]
    fn ca_mode_chains_and_still_pins() {
        let demo = DemoCerts::new("seal-ca");
        let ca = vec![crate::identity::load_cert(&demo.path("ca.pem")).unwrap()];
        let mk = |host: &str, peer: &str| {
            Envelope::new(
                demo.identity(host),
                demo.peer(peer),
                Some(&ca),
                Freshness::default(),
                ReplayGuard::in_memory(),
            )
        };
        let alice = mk("alice", "bob").unwrap();
        let mut bob = mk("bob", "alice").unwrap();
        let msg = invite("alice", "bob");
        assert_eq!(bob.open(&alice.seal(&msg).unwrap(), NOW).unwrap(), msg);
        // carol chains to the same CA, but she is not the pinned peer.
        assert!(matches!(
            bob.open(&forge(&demo, "carol", "bob", &msg), NOW),
            Err(OpenError::WrongSigner { .. })
        ));
        // A pinned certificate outside the CA is a configuration error.
        let e = mk("bob", "mallory").unwrap_err();
        assert!(matches!(e, SetupError::CaChain(_)), "{e}");
    }

    #[test]
    fn insecure_plaintext_still_checks_ids_time_and_replays() {
        let mut a = Envelope::insecure_plaintext(
            DemoCerts::id("alice"),
            DemoCerts::id("bob"),
            Freshness::default(),
            ReplayGuard::in_memory(),
        );
        let mut b = Envelope::insecure_plaintext(
            DemoCerts::id("bob"),
            DemoCerts::id("alice"),
            Freshness::default(),
            ReplayGuard::in_memory(),
        );
        assert!(a.is_insecure());
        let msg = invite("alice", "bob");
        let wire = a.seal(&msg).unwrap();
        assert_eq!(wire, msg.encode().unwrap());
        assert_eq!(b.open(&wire, NOW).unwrap(), msg);
        assert!(matches!(
            b.open(&wire, NOW),
            Err(OpenError::Replayed { .. })
        ));
        assert!(matches!(
            a.open(&wire, NOW),
            Err(OpenError::SenderMismatch { .. })
        ));
        let other = invite("alice", "bob");
        assert!(matches!(
            b.open(&other.encode().unwrap(), NOW + 10_000),
            Err(OpenError::Stale { .. })
        ));
        assert!(matches!(
            b.open(b"garbage", NOW),
            Err(OpenError::Malformed(_))
        ));
    }

    /// Bounded randomized robustness of the opener (fixed seed): mutated sealed messages
    /// never panic and never open as anything but the original message.
    #[test]
    fn random_mutations_never_panic() {
        let demo = DemoCerts::new("seal-fuzz");
        let msg = invite("alice", "bob");
        let good = envelope(&demo, "alice", "bob").seal(&msg).unwrap();
        let mut bob = envelope(&demo, "bob", "alice");
        let mut state: u64 = 0x0bad_5eed_0000_0007;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..400 {
            let mut m = good.clone();
            for _ in 0..1 + next() % 3 {
                let pos = (next() as usize) % m.len();
                match next() % 3 {
                    0 => m[pos] ^= 1 << (next() % 8),
                    1 => m[pos] = next() as u8,
                    _ => m.truncate(pos.max(1)),
                }
            }
            if let Ok(r) = bob.open(&m, NOW) {
                assert_eq!(r, msg);
            }
        }
    }

    /// Bytes from a fixed-seed xorshift, for test noise.
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
    }

    fn b64(data: &[u8]) -> String {
        openssl::base64::encode_block(data)
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn error_queue_is_empty() -> bool {
        // SAFETY: reads the calling thread's OpenSSL error queue; no pointers involved.
        unsafe { openssl_sys::ERR_peek_last_error() == 0 }
    }

    /// Inner contents an attacker can encrypt to the host's public certificate: each is
    /// refused with a typed error (no panic), and OpenSSL's error queue is left empty.
    fn hostile_inner_contents(demo: &DemoCerts) -> Vec<(String, Vec<u8>)> {
        const P7: &str = "Content-Type: application/pkcs7-mime; smime-type=signed-data\n\
                          Content-Transfer-Encoding: base64\n";
        let al = demo.identity("alice");
        let genuine_signed = {
            let text = invite("alice", "bob").encode().unwrap();
            let p7 = Pkcs7::sign(
                al.cert(),
                al.key(),
                &Stack::new().unwrap(),
                &text,
                Pkcs7Flags::BINARY,
            )
            .unwrap();
            b64(&p7.to_der().unwrap())
        };
        let signed_by_alice = |content: &[u8]| {
            let p7 = Pkcs7::sign(
                al.cert(),
                al.key(),
                &Stack::new().unwrap(),
                content,
                Pkcs7Flags::BINARY,
            )
            .unwrap();
            format!("{P7}\n{}", b64(&p7.to_der().unwrap())).into_bytes()
        };
        let multipart = |boundary: &str, parts: &[&str]| {
            let mut m = format!(
                "MIME-Version: 1.0\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"{boundary}\"\n\npreamble\n"
            );
            for p in parts {
                m.push_str(&format!("--{boundary}\n{p}\n"));
            }
            m.push_str(&format!("--{boundary}--\n"));
            m.into_bytes()
        };
        let sig_part = |body: &str| {
            format!(
                "Content-Type: application/pkcs7-signature; name=smime.p7s\nContent-Transfer-Encoding: base64\n\n{body}"
            )
        };
        let msg_text = String::from_utf8(invite("alice", "bob").encode().unwrap()).unwrap();
        let mut nested = String::new();
        for i in 0..50 {
            nested.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"b{i}\"\n\n--b{i}\n"
            ));
        }
        nested.push_str("Content-Type: text/plain\n\nhello\n");
        for i in (0..50).rev() {
            nested.push_str(&format!("--b{i}--\n"));
        }

        let mut v: Vec<(String, Vec<u8>)> = vec![
            (
                "non-UTF-8 content type".into(),
                b"Content-Type: appl\xffcation/pkcs7-mime\n\nMIIB\n".to_vec(),
            ),
            (
                "non-UTF-8 parameter".into(),
                b"Content-Type: application/pkcs7-mime; name=\"\xfe\"\nContent-Transfer-Encoding: base64\n\nMIIB\n".to_vec(),
            ),
            (
                "non-UTF-8 header name".into(),
                [b"X-\xff\xfe: y\n".as_slice(), P7.as_bytes(), b"\n", genuine_signed.as_bytes()]
                    .concat(),
            ),
            (
                "control bytes in a header".into(),
                format!("Content-Type: application/pkcs7-mime\x01\x07; smime-type=signed-data\nContent-Transfer-Encoding: base64\n\n{genuine_signed}").into_bytes(),
            ),
            (
                "NUL in a header".into(),
                format!("Content-Type: application/pkcs7-mime;\0 smime-type=signed-data\nContent-Transfer-Encoding: base64\n\n{genuine_signed}").into_bytes(),
            ),
            (
                "lone CR in a header".into(),
                format!("Content-Type: application/pkcs7-mime;\r smime-type=signed-data\nContent-Transfer-Encoding: base64\n\n{genuine_signed}").into_bytes(),
            ),
            (
                "multipart/signed with a non-UTF-8 boundary".into(),
                b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=\"\xc3\x28\"\n\n--\xc3\x28\nx\n--\xc3\x28--\n".to_vec(),
            ),
            (
                "absurdly long header line".into(),
                format!(
                    "Content-Type: application/pkcs7-mime; smime-type=signed-data; name=\"{}\"\nContent-Transfer-Encoding: base64\n\n{genuine_signed}",
                    "x".repeat(40_000)
                )
                .into_bytes(),
            ),
            (
                "absurdly long folded header".into(),
                format!(
                    "Content-Type: application/pkcs7-mime; smime-type=signed-data;{}\nContent-Transfer-Encoding: base64\n\n{genuine_signed}",
                    "\n a=b;".repeat(5_000)
                )
                .into_bytes(),
            ),
            (
                "thousands of headers".into(),
                format!("{}{P7}\n{genuine_signed}", "Content-X: y\n".repeat(4_000)).into_bytes(),
            ),
            (
                "no blank line after the headers".into(),
                P7.as_bytes().to_vec(),
            ),
            (
                "continuation line first".into(),
                format!(" folded\n{P7}\n{genuine_signed}").into_bytes(),
            ),
            (
                "header without a colon".into(),
                format!("Content-Type application/pkcs7-mime\n\n{genuine_signed}").into_bytes(),
            ),
            (
                "duplicate Content-Type".into(),
                format!("{P7}Content-Type: text/plain\n\n{genuine_signed}").into_bytes(),
            ),
            (
                "unterminated quoted parameter".into(),
                format!("Content-Type: application/pkcs7-mime; smime-type=\"signed-data\nContent-Transfer-Encoding: base64\n\n{genuine_signed}").into_bytes(),
            ),
            (
                "enveloped-data inside".into(),
                format!("Content-Type: application/pkcs7-mime; smime-type=enveloped-data\nContent-Transfer-Encoding: base64\n\n{genuine_signed}").into_bytes(),
            ),
            (
                "quoted-printable signed-data".into(),
                format!("Content-Type: application/pkcs7-mime; smime-type=signed-data\nContent-Transfer-Encoding: quoted-printable\n\n{genuine_signed}").into_bytes(),
            ),
            ("empty".into(), Vec::new()),
            ("only a blank line".into(), b"\n".to_vec()),
            ("headers and an empty body".into(), format!("{P7}\n").into_bytes()),
            (
                "base64 with a stray byte".into(),
                format!("{P7}\n{}*{}", &genuine_signed[..100], &genuine_signed[100..]).into_bytes(),
            ),
            (
                "base64 cut off".into(),
                format!("{P7}\n{}", &genuine_signed[..genuine_signed.len() - 3]).into_bytes(),
            ),
            (
                "huge base64 of noise".into(),
                format!("{P7}\n{}", b64(&noise(45_000, 1))).into_bytes(),
            ),
            (
                "huge base64 on one line".into(),
                format!("{P7}\n{}", b64(&noise(45_000, 2)).replace('\n', "")).into_bytes(),
            ),
            (
                "DER declaring 2 GiB".into(),
                format!("{P7}\n{}", b64(&[0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x06, 0x09])).into_bytes(),
            ),
            (
                "DER with a 9-byte length".into(),
                format!("{P7}\n{}", b64(&[0x30, 0x89, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x01, 0x01])).into_bytes(),
            ),
            (
                "indefinite length never ended".into(),
                format!("{P7}\n{}", b64(&[0x30, 0x80, 0x30, 0x80, 0x30, 0x80, 0x06, 0x09])).into_bytes(),
            ),
            (
                "signed-data whose content is noise".into(),
                signed_by_alice(&noise(300, 3)),
            ),
            (
                "signed-data whose content is not a rendezvous message".into(),
                signed_by_alice(b"PLEXUS-RENDEZVOUS 9\nkind: \xff\n"),
            ),
            ("nested multiparts, depth 50".into(), nested.clone().into_bytes()),
            (
                "multipart/signed over nested multiparts, garbage signature".into(),
                multipart("outer", &[&nested, &sig_part(&b64(&noise(500, 4)))]),
            ),
            (
                "multipart/signed without a boundary".into(),
                format!("Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"\n\n--x\n{msg_text}\n--x\n{}\n--x--\n", sig_part(&genuine_signed)).into_bytes(),
            ),
            (
                "multipart/signed whose boundary never appears".into(),
                format!("Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=zz\n\n--x\n{msg_text}\n--x\n{}\n--x--\n", sig_part(&genuine_signed)).into_bytes(),
            ),
            (
                "multipart/signed never closed".into(),
                multipart("b", &[&msg_text, &sig_part(&genuine_signed)])
                    .strip_suffix(b"--b--\n")
                    .unwrap()
                    .to_vec(),
            ),
            (
                "multipart/signed with empty parts".into(),
                multipart("b", &["", ""]),
            ),
            (
                "multipart/signed with one part".into(),
                multipart("b", &[&msg_text]),
            ),
            (
                "multipart/signed with three parts".into(),
                multipart("b", &[&msg_text, &sig_part(&genuine_signed), &msg_text]),
            ),
            (
                "multipart/signed with a garbage signature".into(),
                multipart("b", &[&msg_text, &sig_part(&b64(&noise(700, 5)))]),
            ),
            (
                "multipart/signed with a non-base64 signature".into(),
                multipart("b", &[&msg_text, &sig_part("this is not base64 at all!")]),
            ),
            (
                "multipart/signed with a text/plain second part".into(),
                multipart("b", &[&msg_text, "Content-Type: text/plain\n\nhello"]),
            ),
            (
                "multipart/signed of another protocol".into(),
                multipart("b", &[&msg_text, &sig_part(&genuine_signed)])
                    .replace_first(b"application/pkcs7-signature", b"application/pgp-signature"),
            ),
            (
                "multipart/mixed".into(),
                multipart("b", &[&msg_text, &sig_part(&genuine_signed)])
                    .replace_first(b"multipart/signed", b"multipart/mixed"),
            ),
            ("binary noise".into(), noise(2_000, 6)),
            (
                "text noise".into(),
                noise(2_000, 7).iter().map(|b| b' ' + b % 94).collect(),
            ),
        ];
        // The same garbage with CRLF line ends.
        let crlf: Vec<(String, Vec<u8>)> = v
            .iter()
            .take(12)
            .map(|(n, b)| {
                let mut out = Vec::new();
                for &c in b {
                    if c == b'\n' {
                        out.push(b'\r');
                    }
                    out.push(c);
                }
                (format!("{n} (CRLF)"), out)
            })
            .collect();
        v.extend(crlf);
        v
    }

    trait ReplaceFirst {
        fn replace_first(self, from: &[u8], to: &[u8]) -> Vec<u8>;
    }

    impl ReplaceFirst for Vec<u8> {
        fn replace_first(self, from: &[u8], to: &[u8]) -> Vec<u8> {
            let at = self
                .windows(from.len())
                .position(|w| w == from)
                .expect("pattern present");
            [&self[..at], to, &self[at + from.len()..]].concat()
        }
    }

    #[test]
    fn hostile_inner_content_is_refused_and_nothing_sticks() {
        let demo = DemoCerts::new("seal-hostile");
        let mut bob = envelope(&demo, "bob", "alice");
        for (name, inner) in hostile_inner_contents(&demo) {
            let sealed = encrypt_raw(&demo, "bob", &inner);
            match bob.open(&sealed, NOW) {
                Ok(m) => panic!("{name}: opened as {m:?}"),
                Err(OpenError::Internal(e)) => panic!("{name}: internal error {e}"),
                Err(_) => {}
            }
            assert!(
                error_queue_is_empty(),
                "{name}: OpenSSL error queue not empty"
            );
        }
        // Nothing sticky: a genuine message still opens on the same envelope.
        let msg = invite("alice", "bob");
        let good = envelope(&demo, "alice", "bob").seal(&msg).unwrap();
        assert_eq!(bob.open(&good, NOW).unwrap(), msg);
        assert!(error_queue_is_empty());
    }

    /// Every single-byte change of a genuine sealed message is refused with a typed error,
    /// for an EC and an RSA recipient: xor 0x01 at every position, and xor 0x80 at every
    /// position of the encrypted content (CBC is malleable: a flip there garbles one
    /// plaintext block and flips one bit in the next).
    #[test]
    fn flipping_any_byte_of_a_sealed_message_is_refused() {
        let demo = DemoCerts::new("seal-flip");
        std::thread::scope(|s| {
            for (from, to) in [("alice", "bob"), ("bob", "alice")] {
                let demo = &demo;
                s.spawn(move || {
                    let good = envelope(demo, from, to).seal(&invite(from, to)).unwrap();
                    let mut rx = envelope(demo, to, from);
                    // The encrypted content is the last OCTET STRING: at least the last
                    // 1 KiB here (the signed entity is larger than that).
                    let cbc = good.len() - 1024;
                    let flips = (0..good.len())
                        .map(|i| (i, 0x01))
                        .chain((cbc..good.len()).map(|i| (i, 0x80)));
                    for (i, x) in flips {
                        let mut t = good.clone();
                        t[i] ^= x;
                        match rx.open(&t, NOW) {
                            Ok(_) => panic!("{from} -> {to}: byte {i} ^ {x:#04x} opened"),
                            Err(OpenError::Internal(e)) => {
                                panic!("{from} -> {to}: byte {i} ^ {x:#04x}: {e}")
                            }
                            Err(_) => {}
                        }
                        assert!(error_queue_is_empty(), "byte {i} ^ {x:#04x}");
                    }
                    assert!(rx.open(&good, NOW).is_ok(), "{from} -> {to}");
                });
            }
        });
    }

    thread_local! {
        /// Set by a test to make the next `open_smime` on this thread panic.
        pub(super) static PANIC_IN_OPEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// The second line of defence: a panic inside opening is a typed refusal, and the
    /// envelope keeps working.
    #[test]
    fn a_panic_while_opening_is_a_typed_refusal() {
        let demo = DemoCerts::new("seal-panic");
        let mut bob = envelope(&demo, "bob", "alice");
        let msg = invite("alice", "bob");
        let good = envelope(&demo, "alice", "bob").seal(&msg).unwrap();
        PANIC_IN_OPEN.with(|p| p.set(true));
        let e = bob.open(&good, NOW).unwrap_err();
        assert!(
            matches!(&e, OpenError::Internal(m) if m.contains("a test asked open to panic")),
            "{e}"
        );
        assert!(e.to_string().contains("report"), "{e}");
        assert_eq!(bob.open(&good, NOW).unwrap(), msg);
    }

    /// A leftover entry in OpenSSL's error queue (here one holding non-UTF-8 data, which
    /// the Rust binding panics on when it reads the queue) never reaches a later error.
    #[test]
    fn a_poisoned_openssl_error_queue_does_not_leak_into_open() {
        let demo = DemoCerts::new("seal-poison");
        let mut bob = envelope(&demo, "bob", "alice");
        let msg = invite("alice", "bob");
        let good = envelope(&demo, "alice", "bob").seal(&msg).unwrap();
        let poison = || {
            // SAFETY: pushes one error entry with a NUL-terminated string as its data.
            unsafe {
                openssl_sys::ERR_new();
                openssl_sys::ERR_set_error(LIB_ASN1, 1, c"%s".as_ptr(), c"\xff\xfe".as_ptr());
            }
            assert!(!error_queue_is_empty());
        };
        // A tampered message fails inside OpenSSL, so its error is read from the queue.
        let mut tampered = good.clone();
        let n = tampered.len();
        tampered[n - 17] ^= 0x80;
        poison();
        let e = bob.open(&tampered, NOW).unwrap_err();
        assert!(matches!(e, OpenError::DecryptFailed(_)), "{e}");
        assert!(error_queue_is_empty());
        poison();
        assert_eq!(bob.open(&good, NOW).unwrap(), msg);
        assert!(error_queue_is_empty());
    }

    /// A pinned certificate is refused at open when `now` is outside its dates, though
    /// it was valid when loaded (a long-running acceptor sees it expire).
    #[test]
    fn a_pinned_certificate_outside_its_dates_is_refused_at_open() {
        let demo = DemoCerts::new("seal-dates");
        let dana = PeerId::parse("dana@lab.example/x").unwrap();
        let real_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let (nb, na) = (real_now - 86_400, real_now + 86_400);
        let (cert, key) =
            crate::testing::dated_cert(&demo.dir, "dana", &dana, nb as i64, na as i64);
        let sender = Envelope::new(
            Identity::load(dana.clone(), &cert, &key).unwrap(),
            demo.peer("bob"),
            None,
            Freshness::default(),
            ReplayGuard::in_memory(),
        )
        .unwrap();
        let mut bob = Envelope::new(
            demo.identity("bob"),
            PeerCert::load(dana.clone(), &cert).unwrap(),
            None,
            Freshness::default(),
            ReplayGuard::in_memory(),
        )
        .unwrap();
        let sealed_at = |t: u64| {
            let m = Invite::new(
                dana.clone(),
                DemoCerts::id("bob"),
                t,
                vec![],
                vec![],
                NatFacts::default(),
            )
            .unwrap();
            sender.seal(&m).unwrap()
        };
        let e = bob.open(&sealed_at(na + 1), na + 1).unwrap_err();
        assert!(
            matches!(&e, OpenError::PeerCertOutOfDate(w) if w.expired),
            "{e}"
        );
        assert!(e.to_string().contains("expired on"), "{e}");
        let e = bob.open(&sealed_at(nb - 1), nb - 1).unwrap_err();
        assert!(
            matches!(&e, OpenError::PeerCertOutOfDate(w) if !w.expired),
            "{e}"
        );
        // Inside the dates, the same envelope opens.
        bob.open(&sealed_at(na), na).unwrap();
        bob.open(&sealed_at(nb), nb).unwrap();
    }

    fn sh(script: &str, dir: &std::path::Path) -> Vec<u8> {
        let out = Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("run sh");
        assert!(
            out.status.success(),
            "{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    #[test]
    fn sealed_by_plexus_opens_with_the_openssl_cli() {
        let demo = DemoCerts::new("seal-cli-out");
        // RSA recipient: the classic `openssl smime` tools read it.
        let msg = invite("alice", "carol");
        std::fs::write(
            demo.path("m.p7m"),
            envelope(&demo, "alice", "carol").seal(&msg).unwrap(),
        )
        .unwrap();
        let out = sh(
            "openssl smime -decrypt -inform DER -in m.p7m -recip carol.pem -inkey carol.key > inner.eml
             grep -q 'smime-type=signed-data' inner.eml
             openssl smime -verify -CAfile ca.pem -in inner.eml",
            &demo.dir,
        );
        assert_eq!(out, msg.encode().unwrap());
        // EC recipient: key agreement needs CMS, so `openssl cms -decrypt`.
        let msg = invite("alice", "bob");
        std::fs::write(
            demo.path("m2.p7m"),
            envelope(&demo, "alice", "bob").seal(&msg).unwrap(),
        )
        .unwrap();
        let out = sh(
            "openssl cms -decrypt -inform DER -in m2.p7m -recip bob.pem -inkey bob.key | openssl smime -verify -CAfile ca.pem",
            &demo.dir,
        );
        assert_eq!(out, msg.encode().unwrap());
    }

    #[test]
    fn made_by_the_openssl_cli_opens_in_plexus() {
        let demo = DemoCerts::new("seal-cli-in");
        // Opaque signed-data, encrypted to an RSA recipient with `openssl smime`.
        let msg = invite("alice", "carol");
        std::fs::write(demo.path("msg.txt"), msg.encode().unwrap()).unwrap();
        let der = sh(
            "openssl smime -sign -binary -nodetach -signer alice.pem -inkey alice.key -in msg.txt \
             | openssl smime -encrypt -aes256 -binary -outform DER carol.pem",
            &demo.dir,
        );
        assert_eq!(
            envelope(&demo, "carol", "alice").open(&der, NOW).unwrap(),
            msg
        );
        // Detached multipart/signed in text mode (CRLF canonical form, as mail clients
        // sign) by an EC signer, encrypted to an RSA recipient with `openssl cms`.
        let msg = invite("bob", "alice");
        std::fs::write(demo.path("msg2.txt"), msg.encode().unwrap()).unwrap();
        let der = sh(
            "openssl smime -sign -signer bob.pem -inkey bob.key -in msg2.txt \
             | openssl cms -encrypt -aes256 -binary -outform DER alice.pem",
            &demo.dir,
        );
        assert_eq!(
            envelope(&demo, "alice", "bob").open(&der, NOW).unwrap(),
            msg
        );
        // Opaque CMS signed-data by an RSA signer, encrypted to an EC recipient (ECDH).
        let msg = invite("alice", "bob");
        std::fs::write(demo.path("msg3.txt"), msg.encode().unwrap()).unwrap();
        let der = sh(
            "openssl cms -sign -binary -nodetach -signer alice.pem -inkey alice.key -in msg3.txt \
             | openssl cms -encrypt -aes256 -binary -outform DER bob.pem",
            &demo.dir,
        );
        assert_eq!(
            envelope(&demo, "bob", "alice").open(&der, NOW).unwrap(),
            msg
        );
    }
}

#[cfg(test)]
mod fresh_identity_tests {
    use super::*;
    use crate::identity::{create, KeyKind, NewCert};
    use crate::rendezvous::message::{Invite, NatFacts};

    /// Identities made by `plexus cert new` (self-signed, EC and RSA) seal and open with
    /// each other, and `openssl smime -verify -CAfile <peer>.pem` accepts the signature.
    #[test]
    fn cert_new_identities_work_end_to_end() {
        let dir = crate::testing::TempDir::new("smime-fresh");
        let mk = |id: &str, kind| {
            let id = PeerId::parse(id).unwrap();
            let made = create(&NewCert {
                id: id.clone(),
                out_dir: dir.to_path_buf(),
                kind,
                days: 2,
                csr: false,
            })
            .unwrap();
            (
                Identity::load(id.clone(), &made.cert, &made.key).unwrap(),
                PeerCert::load(id, &made.cert).unwrap(),
                made,
            )
        };
        let (hi, hp, hmade) = mk("hana@example.org/a", KeyKind::Ec);
        let (ii, ip, imade) = mk("ivan@example.org/b", KeyKind::Rsa);
        // Now: the new certificates are valid for two days from today.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let h =
            Envelope::new(hi, ip, None, Freshness::default(), ReplayGuard::in_memory()).unwrap();
        let mut i =
            Envelope::new(ii, hp, None, Freshness::default(), ReplayGuard::in_memory()).unwrap();
        let msg = Invite::new(
            h.host_id().clone(),
            h.peer_id().clone(),
            now,
            vec![],
            vec![],
            NatFacts::default(),
        )
        .unwrap();
        let sealed = h.seal(&msg).unwrap();
        assert_eq!(i.open(&sealed, now).unwrap(), msg);

        std::fs::write(dir.join("m.p7m"), &sealed).unwrap();
        let script = format!(
            "openssl smime -decrypt -inform DER -in m.p7m -recip '{}' -inkey '{}' | openssl smime -verify -CAfile '{}'",
            imade.cert.display(),
            imade.key.display(),
            hmade.cert.display()
        );
        let out = std::process::Command::new("sh")
            .arg("-ec")
            .arg(&script)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, msg.encode().unwrap());
    }
}
