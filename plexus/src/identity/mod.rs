//! Who is who: peer ids, certificates and private keys.
//!
//! An id is a mail address plus an instance name (`alice@example.org/laptop`): one person
//! may run plexus on several machines with the same certificate. A host is an id with
//! its certificate and private key ([`Identity`]); a peer is an id with the certificate
//! pinned in the profile ([`PeerCert`]). Keys readable by group or others are refused, as
//! ssh does, and so is a certificate outside its validity dates. [`create`] makes a new
//! key and self-signed S/MIME certificate (`plexus cert new`).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509Ref, X509ReqBuilder, X509};

/// Longest accepted mail local part (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL: usize = 64;
/// Longest accepted mail domain (RFC 1035 name length).
pub const MAX_DOMAIN: usize = 253;
/// Longest accepted instance name.
pub const MAX_INSTANCE: usize = 32;
/// Largest certificate, key or CA file we read (they are a few KiB).
const MAX_PEM_FILE: u64 = 1 << 20;

/// Why a text is not a valid peer id.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdError {
    /// There is no `/instance` part.
    MissingInstance(String),
    /// The part before `/` has no `@`.
    MissingAt(String),
    /// The mail local part is empty, too long or has a character outside `a-z 0-9 . _ + -`.
    BadLocalPart(String),
    /// The domain is empty, too long, or a label is not `a-z 0-9 -` (1–63, no edge `-`).
    BadDomain(String),
    /// The instance name is empty, too long or has a character outside `a-z 0-9 . _ -`.
    BadInstance(String),
}

/// Shortened, escaped rendering of untrusted input for error messages.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(80).collect();
    let more = if s.chars().count() > 80 { "…" } else { "" };
    format!("\"{}{more}\"", cut.escape_debug())
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FORM: &str = "expected mail@domain/instance, e.g. alice@example.org/laptop";
        match self {
            IdError::MissingInstance(s) => write!(f, "peer id {} has no /instance; {FORM}", shown(s)),
            IdError::MissingAt(s) => write!(f, "peer id {} has no @ in its mail address; {FORM}", shown(s)),
            IdError::BadLocalPart(s) => write!(
                f,
                "peer id {}: the mail local part must be 1-{MAX_LOCAL} characters of lower-case a-z, 0-9, '.', '_', '+', '-' (no leading, trailing or double '.')",
                shown(s)
            ),
            IdError::BadDomain(s) => write!(
                f,
                "peer id {}: the domain must be at most {MAX_DOMAIN} characters of dot-separated labels of lower-case a-z, 0-9, '-' (1-63 each, not starting or ending with '-')",
                shown(s)
            ),
            IdError::BadInstance(s) => write!(
                f,
                "peer id {}: the instance name must be 1-{MAX_INSTANCE} characters of lower-case a-z, 0-9, '.', '_', '-'",
                shown(s)
            ),
        }
    }
}

impl std::error::Error for IdError {}

/// A peer id: `mail@domain/instance`, strictly validated and always in canonical form
/// (lower-case ASCII), so two ids are equal exactly when their texts are.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId {
    text: String,
    slash: usize,
}

impl PeerId {
    /// Parse and validate an id. Nothing is normalised: upper case is refused, not folded,
    /// so that the id in a signed message is exactly the id in the profile.
    pub fn parse(s: &str) -> Result<PeerId, IdError> {
        let slash = s
            .find('/')
            .ok_or_else(|| IdError::MissingInstance(s.into()))?;
        let (mail, instance) = (&s[..slash], &s[slash + 1..]);
        let at = mail
            .rfind('@')
            .ok_or_else(|| IdError::MissingAt(s.into()))?;
        let (local, domain) = (&mail[..at], &mail[at + 1..]);
        let local_ok = !local.is_empty()
            && local.len() <= MAX_LOCAL
            && local
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'+' | b'-'))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        if !local_ok {
            return Err(IdError::BadLocalPart(s.into()));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        };
        if domain.is_empty() || domain.len() > MAX_DOMAIN || !domain.split('.').all(label_ok) {
            return Err(IdError::BadDomain(s.into()));
        }
        let instance_ok = !instance.is_empty()
            && instance.len() <= MAX_INSTANCE
            && instance
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
            && instance != "."
            && instance != "..";
        if !instance_ok {
            return Err(IdError::BadInstance(s.into()));
        }
        Ok(PeerId {
            text: s.to_owned(),
            slash,
        })
    }

    /// The whole id, `mail@domain/instance`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The mail address (`mail@domain`), as found in the certificate's subjectAltName.
    pub fn mail(&self) -> &str {
        &self.text[..self.slash]
    }

    /// The instance name after `/`.
    pub fn instance(&self) -> &str {
        &self.text[self.slash + 1..]
    }

    /// A file name stem for this id: `mail@domain_instance` (`_` cannot occur in a
    /// domain, so the first `_` after `@` separates the two unambiguously).
    pub fn file_stem(&self) -> String {
        format!("{}_{}", self.mail(), self.instance())
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.text)
    }
}

impl FromStr for PeerId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        PeerId::parse(s)
    }
}

/// Errors loading or creating keys and certificates.
#[derive(Debug)]
#[non_exhaustive]
pub enum IdentityError {
    /// A file could not be read (missing, unreadable, a directory).
    Read {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// A private key file is readable or writable by group or others.
    KeyTooOpen {
        /// The key file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// A private key file is encrypted; plexus needs it unencrypted (protected by 0600).
    KeyEncrypted {
        /// The key file.
        path: PathBuf,
    },
    /// A file is not the PEM (or DER) object we expected, or is larger than 1 MiB.
    BadFile {
        /// The file.
        path: PathBuf,
        /// What it should hold ("a certificate", "a private key"…).
        expected: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A private key file is not a regular file, or belongs to another user than this
    /// one or root.
    KeyUnsafe(crate::secret::PrivateFileError),
    /// The private key does not belong to the certificate.
    KeyMismatch {
        /// The certificate.
        cert: PathBuf,
        /// The key that does not match it.
        key: PathBuf,
    },
    /// The certificate's subjectAltName does not name the id's mail address.
    CertNotForId {
        /// The certificate.
        path: PathBuf,
        /// The id it was loaded for.
        id: String,
        /// The mail addresses it does name.
        found: Vec<String>,
    },
    /// A certificate is expired or not yet valid now (`pinned`: the peer's, else the
    /// host's own).
    OutOfDate {
        /// The certificate.
        path: PathBuf,
        /// Whether it is the pinned peer certificate (else this host's own).
        pinned: bool,
        /// Its validity period and which end was crossed.
        when: OutOfDate,
    },
    /// The pinned peer certificate does not chain to the configured CA.
    NotIssuedByCa {
        /// The pinned certificate.
        path: PathBuf,
        /// The CA bundle.
        ca: PathBuf,
        /// OpenSSL's verification result.
        reason: String,
    },
    /// `cert new` would overwrite an existing file.
    Exists(PathBuf),
    /// A new file could not be written.
    Write {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// OpenSSL failed to generate a key or certificate.
    Crypto(String),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Read { path, source } => {
                write!(f, "cannot read '{}': {source}", path.display())
            }
            IdentityError::KeyTooOpen { path, mode } => write!(
                f,
                "permissions {:04o} for '{}' are too open: a private key must not be accessible by others; run chmod 600 '{}'",
                mode & 0o7777,
                path.display(),
                path.display()
            ),
            IdentityError::KeyEncrypted { path } => write!(
                f,
                "private key '{}' is encrypted with a passphrase; plexus runs unattended and needs an unencrypted key kept at mode 0600 (openssl pkey -in KEY -out NEWKEY)",
                path.display()
            ),
            IdentityError::BadFile { path, expected, detail } => {
                write!(f, "'{}' is not {expected}: {detail}", path.display())
            }
            IdentityError::KeyUnsafe(e) => write!(f, "private key {e}"),
            IdentityError::KeyMismatch { cert, key } => write!(
                f,
                "private key '{}' does not belong to certificate '{}'; check the profile's key and cert paths",
                key.display(),
                cert.display()
            ),
            IdentityError::CertNotForId { path, id, found } => write!(
                f,
                "certificate '{}' is not for {id}: its subjectAltName mail addresses are [{}]; use the certificate of that address or fix the id",
                path.display(),
                found.join(", ")
            ),
            IdentityError::OutOfDate { path, pinned: true, when } => write!(
                f,
                "pinned peer certificate '{}' {when}; {}",
                path.display(),
                if when.expired {
                    "ask the peer for a current certificate (`plexus cert new` makes one) and pin that"
                } else {
                    "check this machine's clock, or ask the peer for a current certificate"
                }
            ),
            IdentityError::OutOfDate { path, pinned: false, when } => write!(
                f,
                "this host's certificate '{}' {when}; {}",
                path.display(),
                if when.expired {
                    "make a new one with `plexus cert new` and give it to your peers to pin"
                } else {
                    "check this machine's clock"
                }
            ),
            IdentityError::NotIssuedByCa { path, ca, reason } => write!(
                f,
                "pinned certificate '{}' does not chain to the CA in '{}': {reason}",
                path.display(),
                ca.display()
            ),
            IdentityError::Exists(path) => write!(
                f,
                "'{}' already exists; plexus never overwrites a key or certificate: choose another --out directory or move the old files away",
                path.display()
            ),
            IdentityError::Write { path, source } => {
                write!(f, "cannot write '{}': {source}", path.display())
            }
            IdentityError::Crypto(m) => write!(f, "OpenSSL failed: {m}"),
        }
    }
}

impl std::error::Error for IdentityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdentityError::Read { source, .. } | IdentityError::Write { source, .. } => {
                Some(source)
            }
            IdentityError::KeyUnsafe(e) => Some(e),
            _ => None,
        }
    }
}

fn crypto(e: openssl::error::ErrorStack) -> IdentityError {
    IdentityError::Crypto(e.to_string())
}

/// Read a whole (small) file from an already opened handle.
fn read_bounded(mut file: File, path: &Path) -> Result<Vec<u8>, IdentityError> {
    let mut buf = Vec::new();
    (&mut file)
        .take(MAX_PEM_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|source| IdentityError::Read {
            path: path.into(),
            source,
        })?;
    if buf.len() as u64 > MAX_PEM_FILE {
        return Err(IdentityError::BadFile {
            path: path.into(),
            expected: "a key or certificate",
            detail: "larger than 1 MiB".into(),
        });
    }
    Ok(buf)
}

fn open(path: &Path) -> Result<File, IdentityError> {
    File::open(path).map_err(|source| IdentityError::Read {
        path: path.into(),
        source,
    })
}

/// Load an unencrypted PEM private key, refusing it when group or others may access it.
/// The checks are made on the opened file (see [`crate::secret::read_private_file`]), so
/// a swap between check and read cannot slip through; the PEM text is wiped after use.
pub fn load_private_key(path: &Path) -> Result<PKey<Private>, IdentityError> {
    use crate::secret::PrivateFileError as E;
    let pem =
        crate::secret::read_private_file(path, MAX_PEM_FILE as usize).map_err(|e| match e {
            E::TooOpen { path, mode } => IdentityError::KeyTooOpen { path, mode },
            E::Io { path, source } => IdentityError::Read { path, source },
            E::TooLarge { path, .. } => IdentityError::BadFile {
                path,
                expected: "a key or certificate",
                detail: "larger than 1 MiB".into(),
            },
            other => IdentityError::KeyUnsafe(other),
        })?;
    if pem.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(IdentityError::KeyEncrypted { path: path.into() });
    }
    // A callback that supplies no passphrase: OpenSSL must never prompt on a terminal.
    PKey::private_key_from_pem_callback(&pem, |_| Ok(0)).map_err(|e| IdentityError::BadFile {
        path: path.into(),
        expected: "a PEM private key",
        detail: e.to_string(),
    })
}

/// Load one certificate (PEM, or DER when the file is not PEM).
pub fn load_cert(path: &Path) -> Result<X509, IdentityError> {
    let data = read_bounded(open(path)?, path)?;
    X509::from_pem(&data)
        .or_else(|_| X509::from_der(&data))
        .map_err(|e| IdentityError::BadFile {
            path: path.into(),
            expected: "a PEM or DER certificate",
            detail: e.to_string(),
        })
}

/// Load every certificate of a PEM bundle (a CA file); at least one is required.
pub fn load_cert_bundle(path: &Path) -> Result<Vec<X509>, IdentityError> {
    let data = read_bounded(open(path)?, path)?;
    let certs = X509::stack_from_pem(&data).map_err(|e| IdentityError::BadFile {
        path: path.into(),
        expected: "a PEM certificate bundle",
        detail: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(IdentityError::BadFile {
            path: path.into(),
            expected: "a PEM certificate bundle",
            detail: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

/// SHA-256 fingerprint of a certificate's DER, as `openssl x509 -fingerprint -sha256`
/// prints it (`AB:CD:…`).
pub fn fingerprint_sha256(cert: &X509Ref) -> String {
    match cert.digest(MessageDigest::sha256()) {
        Ok(d) => d
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
        Err(_) => "<fingerprint unavailable>".into(),
    }
}

/// The mail addresses in a certificate's subjectAltName.
pub fn cert_emails(cert: &X509Ref) -> Vec<String> {
    cert.subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.email().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn check_cert_for_id(cert: &X509Ref, id: &PeerId, path: &Path) -> Result<(), IdentityError> {
    let found = cert_emails(cert);
    if found.iter().any(|m| m.eq_ignore_ascii_case(id.mail())) {
        Ok(())
    } else {
        Err(IdentityError::CertNotForId {
            path: path.into(),
            id: id.to_string(),
            found,
        })
    }
}

/// A certificate used outside its validity period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfDate {
    /// Start of the validity period, as OpenSSL prints it (`Nov 24 16:57:14 2026 GMT`).
    pub not_before: String,
    /// End of the validity period.
    pub not_after: String,
    /// True when the period is over, false when it has not begun.
    pub expired: bool,
}

impl fmt::Display for OutOfDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.expired {
            write!(f, "expired on {}", self.not_after)?;
        } else {
            write!(f, "is not valid until {}", self.not_before)?;
        }
        write!(f, " (valid from {} to {})", self.not_before, self.not_after)
    }
}

/// Check that `cert` is valid at `now` (unix seconds): notBefore <= now <= notAfter.
/// A time OpenSSL cannot compare counts as out of date (fail closed).
pub fn check_validity(cert: &X509Ref, now: u64) -> Result<(), OutOfDate> {
    use std::cmp::Ordering;
    let (nb, na) = (cert.not_before(), cert.not_after());
    let out = |expired| OutOfDate {
        not_before: nb.to_string(),
        not_after: na.to_string(),
        expired,
    };
    let Some(at) = i64::try_from(now)
        .ok()
        .and_then(|t| Asn1Time::from_unix(t).ok())
    else {
        return Err(out(true));
    };
    match (nb.compare(&at), na.compare(&at)) {
        (Ok(Ordering::Greater), _) => Err(out(false)),
        (Ok(_), Ok(Ordering::Greater | Ordering::Equal)) => Ok(()),
        _ => Err(out(true)),
    }
}

/// Unix seconds now, by the system clock.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This host: its id, certificate and private key. `Debug` never prints the key.
pub struct Identity {
    id: PeerId,
    cert: X509,
    key: PKey<Private>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .field("cert", &fingerprint_sha256(&self.cert))
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Identity {
    /// Load the host's certificate and key, checking the key's permissions, that the key
    /// belongs to the certificate, that the certificate names the id's mail address and
    /// that it is valid now (system clock).
    pub fn load(id: PeerId, cert_path: &Path, key_path: &Path) -> Result<Identity, IdentityError> {
        let cert = load_cert(cert_path)?;
        check_validity(&cert, unix_now()).map_err(|when| IdentityError::OutOfDate {
            path: cert_path.into(),
            pinned: false,
            when,
        })?;
        let key = load_private_key(key_path)?;
        let public = cert.public_key().map_err(crypto)?;
        if !public.public_eq(&key) {
            return Err(IdentityError::KeyMismatch {
                cert: cert_path.into(),
                key: key_path.into(),
            });
        }
        check_cert_for_id(&cert, &id, cert_path)?;
        Ok(Identity { id, cert, key })
    }

    /// The host's id.
    pub fn id(&self) -> &PeerId {
        &self.id
    }

    /// The host's certificate.
    pub fn cert(&self) -> &X509 {
        &self.cert
    }

    /// The host's private key.
    pub fn key(&self) -> &PKey<Private> {
        &self.key
    }
}

/// The peer: its id and the certificate pinned for it in the profile.
#[derive(Clone)]
pub struct PeerCert {
    id: PeerId,
    cert: X509,
}

impl fmt::Debug for PeerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerCert")
            .field("id", &self.id)
            .field("cert", &fingerprint_sha256(&self.cert))
            .finish()
    }
}

impl PeerCert {
    /// Load the pinned certificate of `id` and check that it names the id's address and
    /// is valid now (system clock).
    pub fn load(id: PeerId, path: &Path) -> Result<PeerCert, IdentityError> {
        let cert = load_cert(path)?;
        check_validity(&cert, unix_now()).map_err(|when| IdentityError::OutOfDate {
            path: path.into(),
            pinned: true,
            when,
        })?;
        check_cert_for_id(&cert, &id, path)?;
        Ok(PeerCert { id, cert })
    }

    /// The peer's id.
    pub fn id(&self) -> &PeerId {
        &self.id
    }

    /// The pinned certificate.
    pub fn cert(&self) -> &X509 {
        &self.cert
    }
}

/// Key algorithm for a new identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA/ECDH on P-256: small and fast; S/MIME encryption to it needs CMS
    /// (`openssl cms`, most current mail clients).
    Ec,
    /// RSA 3072: the most widely interoperable (`openssl smime`, every mail client).
    Rsa,
}

/// What `plexus cert new` should create.
#[derive(Debug, Clone)]
pub struct NewCert {
    /// The id the certificate is for.
    pub id: PeerId,
    /// Directory to write into (created if missing, mode 0700).
    pub out_dir: PathBuf,
    /// Key algorithm.
    pub kind: KeyKind,
    /// Validity in days.
    pub days: u32,
    /// Also write a certificate signing request for a real CA.
    pub csr: bool,
}

/// What `plexus cert new` created.
#[derive(Debug, Clone)]
pub struct Created {
    /// The private key (0600). Never leaves this machine.
    pub key: PathBuf,
    /// The self-signed certificate to hand to the peer.
    pub cert: PathBuf,
    /// The CSR, when asked for.
    pub csr: Option<PathBuf>,
    /// SHA-256 fingerprint of the certificate, to compare over another channel.
    pub fingerprint: String,
}

/// Create a file that must not exist yet, with `mode`, and write `data` into it. The data
/// goes to a temporary file first, which is then hard-linked to `path`: the link fails
/// if `path` exists (never overwriting, even in a race), and an interruption leaves
/// `path` either complete or absent, never half-written.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), IdentityError> {
    let write_err = |source| IdentityError::Write {
        path: path.into(),
        source,
    };
    if path.symlink_metadata().is_ok() {
        return Err(IdentityError::Exists(path.into()));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|_| f.sync_all()));
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.symlink_metadata().is_ok() => {
            Err(IdentityError::Exists(path.into()))
        }
        Err(e) => Err(write_err(e)),
    }
}

/// Generate a key and a self-signed S/MIME certificate (and optionally a CSR) for
/// `req.id` in `req.out_dir`. Refuses to overwrite anything; on failure, removes what it
/// wrote, so nothing is half-written.
pub fn create(req: &NewCert) -> Result<Created, IdentityError> {
    let stem = req.id.file_stem();
    let key_path = req.out_dir.join(format!("{stem}.key"));
    let cert_path = req.out_dir.join(format!("{stem}.pem"));
    let csr_path = req.csr.then(|| req.out_dir.join(format!("{stem}.csr")));
    for p in [Some(&key_path), Some(&cert_path), csr_path.as_ref()]
        .into_iter()
        .flatten()
    {
        if p.symlink_metadata().is_ok() {
            return Err(IdentityError::Exists(p.clone()));
        }
    }

    let key = match req.kind {
        KeyKind::Ec => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(crypto)?;
            PKey::from_ec_key(EcKey::generate(&group).map_err(crypto)?).map_err(crypto)?
        }
        KeyKind::Rsa => PKey::from_rsa(Rsa::generate(3072).map_err(crypto)?).map_err(crypto)?,
    };
    let cert = self_signed(&req.id, &key, req.kind, req.days).map_err(crypto)?;
    let csr = if req.csr {
        Some(make_csr(&req.id, &key).map_err(crypto)?)
    } else {
        None
    };
    let key_pem = crate::secret::Zeroizing::new(key.private_key_to_pem_pkcs8().map_err(crypto)?);
    let cert_pem = cert.to_pem().map_err(crypto)?;

    if !req.out_dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&req.out_dir)
            .map_err(|source| IdentityError::Write {
                path: req.out_dir.clone(),
                source,
            })?;
    }
    // The key first: if it exists already we stop before touching anything.
    write_new(&key_path, &key_pem, 0o600)?;
    let rest = write_new(&cert_path, &cert_pem, 0o644).and_then(|_| match (&csr_path, &csr) {
        (Some(p), Some(c)) => write_new(p, c, 0o644),
        _ => Ok(()),
    });
    if let Err(e) = rest {
        // Remove only what this call created (Exists means the file is not ours).
        let _ = fs::remove_file(&key_path);
        if !matches!(&e, IdentityError::Exists(p) if *p == cert_path) {
            let _ = fs::remove_file(&cert_path);
        }
        return Err(e);
    }
    Ok(Created {
        key: key_path,
        cert: cert_path,
        csr: csr_path,
        fingerprint: fingerprint_sha256(&cert),
    })
}

/// Overwrite a buffer with zeros in a way the optimiser keeps ([`crate::secret::wipe`]).
pub(crate) fn wipe(buf: &mut [u8]) {
    crate::secret::wipe(buf);
}

pub(crate) fn subject(id: &PeerId) -> Result<openssl::x509::X509Name, openssl::error::ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, id.as_str())?;
    Ok(name.build())
}

fn self_signed(
    id: &PeerId,
    key: &PKey<Private>,
    kind: KeyKind,
    days: u32,
) -> Result<X509, openssl::error::ErrorStack> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    // 127 random bits: positive, unique, within the 20-octet limit of RFC 5280.
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = Asn1Integer::from_bn(&serial)?;
    b.set_serial_number(&serial)?;
    let name = subject(id)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    // Valid from an hour ago: a peer whose clock is a little behind must not find the
    // new certificate "not yet valid".
    let an_hour_ago = i64::try_from(unix_now()).unwrap_or(i64::MAX) - 3600;
    let (not_before, not_after) = (
        Asn1Time::from_unix(an_hour_ago)?,
        Asn1Time::days_from_now(days)?,
    );
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    b.set_pubkey(key)?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    let mut ku = KeyUsage::new();
    ku.critical().digital_signature();
    match kind {
        KeyKind::Rsa => ku.key_encipherment(),
        KeyKind::Ec => ku.key_agreement(),
    };
    b.append_extension(ku.build()?)?;
    b.append_extension(ExtendedKeyUsage::new().email_protection().build()?)?;
    let ctx = b.x509v3_context(None, None);
    let san = SubjectAlternativeName::new().email(id.mail()).build(&ctx)?;
    let ski = SubjectKeyIdentifier::new().build(&ctx)?;
    b.append_extension(san)?;
    b.append_extension(ski)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

fn make_csr(id: &PeerId, key: &PKey<Private>) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let mut b = X509ReqBuilder::new()?;
    b.set_version(0)?;
    let name = subject(id)?;
    b.set_subject_name(&name)?;
    b.set_pubkey(key)?;
    let mut exts = openssl::stack::Stack::new()?;
    let ctx = b.x509v3_context(None);
    exts.push(SubjectAlternativeName::new().email(id.mail()).build(&ctx)?)?;
    exts.push(ExtendedKeyUsage::new().email_protection().build()?)?;
    b.add_extensions(&exts)?;
    b.sign(key, MessageDigest::sha256())?;
    b.build().to_pem()
}

#[cfg(test)]
mod tests;
