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
mod tests;
