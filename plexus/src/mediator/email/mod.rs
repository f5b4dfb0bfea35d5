//! The built-in e-mail mediator: S/MIME mail over SMTP submission, picked up over IMAP.
//!
//! Sending wraps the core's sealed bytes (DER PKCS#7/CMS EnvelopedData) in a standard
//! S/MIME message (`application/pkcs7-mime; smime-type=enveloped-data`, base64), marked
//! with the header `X-Plexus: 1`, and submits it with lettre (implicit TLS or STARTTLS,
//! AUTH, verified certificates).
//!
//! Receiving watches one IMAP folder (IDLE when the server has it, otherwise polling) and
//! keeps the mailbox exactly as the user left it:
//! 1. candidates come from a server-side `UID SEARCH` on our header and the peer's address
//!    (and `SINCE` a day before `max_age`), and are handled newest (highest UID) first;
//! 2. their flags, `RFC822.SIZE` and `INTERNALDATE` are fetched; mail the server received
//!    longer ago than `max_age`, or over the size limit, is left alone unopened;
//! 3. only then headers are fetched, at most [`HEADER_CAP`] bytes, with `BODY.PEEK` (no
//!    `\Seen`), and checked again here ([`classify_headers`]): our header and the
//!    configured peer in `From:`;
//! 4. only then the body is fetched, again with `BODY.PEEK`, and unwrapped ([`unwrap`]);
//! 5. after [`Outcome::Handled`] that one message is deleted (`\Deleted` then
//!    `UID EXPUNGE` of its UID — a plain `EXPUNGE` would also remove mail the user had
//!    marked) or moved to a folder; after [`Outcome::Rejected`] it is left in place or
//!    moved to a quarantine folder.
//!
//! Nothing else in the mailbox is ever fetched past its headers, flagged or deleted.
//!
//! Anyone can send mail, so nothing about one message stops the mediator: a mail that is
//! refused (by the core or here), or that the server will not fetch, move or delete, is
//! logged once and set aside by UID (kept across restarts in the [`refused`] state file).
//! Only wrong credentials and settings are fatal; trouble with the server is
//! [`MediatorError::Unreachable`], which the caller retries.

use std::collections::HashSet;
use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imap::extensions::idle::WaitOutcome;
use log::{debug, info, warn};
use mailparse::MailHeaderMap;
use native_tls::{Certificate, Identity, TlsConnector, TlsStream};

use super::{Incoming, Mediator, MediatorError, Outcome};
use crate::defaults;

pub mod refused;

use refused::Refused;
pub use refused::{decode_refused_state, encode_refused_state, RefusedState, StateError};

/// Our own header; its presence (value `1`) marks plexus mail.
pub const PLEXUS_HEADER: &str = "X-Plexus";
/// The recognisable subject of plexus mail.
pub const SUBJECT: &str = "plexus rendezvous";
/// Default upper bound for one plexus mail (whole RFC 822 message).
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 256 * 1024;

/// The mail password: the crate's one secret type (its `Debug` never shows the value).
pub use crate::secret::{Secret, SecretSource};

/// How the SMTP connection is protected. There is no plaintext mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpMode {
    /// TLS from the first byte (submissions, port 465).
    ImplicitTls,
    /// Plain connect, then STARTTLS is required before AUTH (submission, port 587).
    StartTls,
}

/// Polling interval when the server has no IDLE: the one default, whether the settings
/// come from a profile, from flags or from code.
pub const DEFAULT_POLL_INTERVAL: Duration = crate::defaults::POLL_INTERVAL;

/// Settings of the e-mail mediator: the one type for them, held as such by a profile
/// (`mediator: email:`), patched by the command line and checked by [`validate`](Self::validate).
/// Defaults come from [`crate::defaults`].
#[derive(Debug, Clone, PartialEq)]
pub struct EmailSettings {
    /// SMTP submission server host name (or address); also the name checked in its certificate.
    pub smtp_host: String,
    /// SMTP submission port (465 for implicit TLS, 587 for STARTTLS).
    pub smtp_port: u16,
    /// Implicit TLS or STARTTLS.
    pub smtp_mode: SmtpMode,
    /// IMAP server host name (or address); also the name checked in its certificate.
    pub imap_host: String,
    /// IMAPS port (993).
    pub imap_port: u16,
    /// Login for both SMTP AUTH and IMAP LOGIN.
    pub login: String,
    /// Password for both: where it is read from; read once, when the mediator is made.
    pub password: SecretSource,
    /// Our own mail address (the `From:` of what we send).
    pub from: String,
    /// The peer's mail address: only plexus mail from it is opened.
    pub peer: String,
    /// More peers' addresses, for an acceptor serving several peers from one mailbox.
    pub extra_peers: Vec<String>,
    /// Extra CA certificate (PEM) trusted for the mail servers, e.g. a lab or company CA.
    pub ca_file: Option<PathBuf>,
    /// TLS client certificate (PEM), if the servers want one.
    pub client_cert: Option<PathBuf>,
    /// Private key (PKCS#8 PEM) of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Folder watched for incoming plexus mail.
    pub folder: String,
    /// Handled mail is moved here instead of being deleted.
    pub done_folder: Option<String>,
    /// Mail that failed to open is moved here instead of being left in place.
    pub quarantine_folder: Option<String>,
    /// Polling interval when the server has no IDLE (or `use_idle` is off).
    pub poll_interval: Duration,
    /// Longest single IDLE before it is re-issued (RFC 2177 advises under 29 minutes).
    pub idle_timeout: Duration,
    /// Use IDLE when the server offers it.
    pub use_idle: bool,
    /// Largest plexus mail accepted, in bytes; bigger ones are left unread.
    pub max_message_size: u32,
    /// TCP connect / read timeout towards the servers.
    pub io_timeout: Duration,
    /// Plexus mail the server received longer ago than this is left in place unopened
    /// (its INTERNALDATE, which a sender cannot forge, is checked before the body is
    /// fetched). `None`: no age limit. Usually the replay window plus the allowed clock skew.
    pub max_age: Option<Duration>,
    /// File remembering refused UIDs across restarts (see [`refused`]); `None`: in
    /// memory only. Its directory is created 0700 if missing.
    pub refused_state: Option<PathBuf>,
}

impl EmailSettings {
    /// Settings for one mail host with the defaults of [`crate::defaults`] (465 implicit
    /// TLS, 993, INBOX, IDLE, 5 s polling) and a password given as is.
    pub fn new(host: &str, login: &str, password: Secret, from: &str, peer: &str) -> EmailSettings {
        EmailSettings {
            smtp_host: host.to_string(),
            smtp_port: defaults::SMTP_IMPLICIT_TLS_PORT,
            smtp_mode: SmtpMode::ImplicitTls,
            imap_host: host.to_string(),
            imap_port: defaults::IMAP_PORT,
            login: login.to_string(),
            password: SecretSource::Plain(password),
            from: from.to_string(),
            peer: peer.to_string(),
            extra_peers: Vec::new(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            folder: defaults::MAIL_FOLDER.to_string(),
            done_folder: None,
            quarantine_folder: None,
            poll_interval: defaults::POLL_INTERVAL,
            idle_timeout: Duration::from_secs(25 * 60),
            use_idle: true,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            io_timeout: Duration::from_secs(20),
            max_age: None,
            refused_state: None,
        }
    }

    /// Check the settings that need no file or network: addresses, pairs, intervals,
    /// folder names. The one place they are checked: a profile's `validate` calls this.
    pub fn validate(&self) -> Result<(), MediatorError> {
        let peers = std::iter::once(&self.peer).chain(self.extra_peers.iter());
        for (what, a) in std::iter::once(("from", &self.from)).chain(peers.map(|p| ("peer", p))) {
            if !valid_address(a) {
                return Err(MediatorError::Config(format!(
                    "{what} address {a:?} is not a plain mail address (user@domain)"
                )));
            }
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(MediatorError::Config(
                "client_cert and client_key must be given together".into(),
            ));
        }
        if self.poll_interval.is_zero() || self.idle_timeout.is_zero() {
            return Err(MediatorError::Config(
                "poll_interval and idle_timeout must be above zero".into(),
            ));
        }
        if self.max_age.is_some_and(|a| a.as_secs() == 0) {
            return Err(MediatorError::Config(
                "max_age must be at least one second (or unset)".into(),
            ));
        }
        if self.max_message_size < 1024 {
            return Err(MediatorError::Config(
                "max_message_size below 1024 bytes cannot hold any sealed message".into(),
            ));
        }
        for f in [&self.folder]
            .into_iter()
            .chain(self.done_folder.iter())
            .chain(self.quarantine_folder.iter())
        {
            if f.is_empty() || f.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
                return Err(MediatorError::Config(format!(
                    "folder name {f:?} is empty or has quotes, backslashes or control characters"
                )));
            }
        }
        Ok(())
    }
}

/// Why a mail is not (or not acceptably) a plexus mail from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MailError {
    /// The headers do not parse as RFC 5322 headers.
    BadHeaders(String),
    /// No `X-Plexus: 1` header: not plexus mail, never touched.
    NotPlexus,
    /// Plexus mail, but `From:` is not the configured peer: never touched.
    NotFromPeer(String),
    /// The mail (or the sealed payload) is larger than the configured limit.
    TooLarge {
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The body is not a single `application/pkcs7-mime` part.
    WrongContentType(String),
    /// The base64 body does not decode, or is empty.
    BadBody(String),
    /// An address given to compose a mail is not a plain `user@domain`.
    BadAddress(String),
}

impl fmt::Display for MailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailError::BadHeaders(m) => write!(f, "mail headers do not parse: {m}"),
            MailError::NotPlexus => write!(f, "not plexus mail (no {PLEXUS_HEADER}: 1 header)"),
            MailError::NotFromPeer(a) => {
                write!(f, "plexus mail from {a:?}, which is not the configured peer")
            }
            MailError::TooLarge { size, limit } => write!(
                f,
                "mail of {size} bytes is over the limit of {limit} bytes; raise max_message_size if it is genuine"
            ),
            MailError::WrongContentType(t) => write!(
                f,
                "mail body is {t:?}, expected application/pkcs7-mime (S/MIME enveloped data)"
            ),
            MailError::BadBody(m) => write!(f, "mail body is not valid base64 S/MIME data: {m}"),
            MailError::BadAddress(a) => {
                write!(f, "{a:?} is not a plain mail address (user@domain)")
            }
        }
    }
}

impl std::error::Error for MailError {}

/// A plain `user@domain` address: no display name, no spaces, quotes or control characters
/// (so it can go into a header and an SMTP envelope as is).
pub fn valid_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    a.len() <= 254
        && !local.is_empty()
        && !domain.is_empty()
        && !local.contains('@')
        && a.chars().all(|c| {
            c.is_ascii_graphic()
                && !matches!(
                    c,
                    '<' | '>' | '(' | ')' | ',' | ';' | ':' | '"' | '\\' | '[' | ']'
                )
        })
}

static MESSAGE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Build the complete S/MIME mail (CRLF line ends) carrying `sealed` from `from` to `to`.
pub fn wrap(from: &str, to: &str, sealed: &[u8], now: SystemTime) -> Result<Vec<u8>, MailError> {
    for a in [from, to] {
        if !valid_address(a) {
            return Err(MailError::BadAddress(a.to_string()));
        }
    }
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let domain = from
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or("plexus.invalid");
    let n = MESSAGE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut m = String::with_capacity(sealed.len() * 4 / 3 + 1024);
    m.push_str(&format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {SUBJECT}\r\n"
    ));
    m.push_str(&format!("Date: {}\r\n", rfc5322_date(secs.as_secs())));
    m.push_str(&format!(
        "Message-ID: <plexus.{}.{}.{}.{n}@{domain}>\r\n",
        secs.as_secs(),
        secs.subsec_nanos(),
        std::process::id()
    ));
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!("{PLEXUS_HEADER}: 1\r\n"));
    m.push_str(
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n",
    );
    m.push_str("Content-Transfer-Encoding: base64\r\n");
    m.push_str("Content-Disposition: attachment; filename=smime.p7m\r\n");
    m.push_str("Content-Description: S/MIME encrypted message\r\n\r\n");
    let b64 = base64(sealed);
    for line in b64.as_bytes().chunks(76) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        m.push_str(std::str::from_utf8(line).unwrap_or_default());
        m.push_str("\r\n");
    }
    Ok(m.into_bytes())
}

/// Check the headers of a mail: `Ok(from)` when it is plexus mail from `peer`.
pub fn classify_headers(headers: &[u8], peer: &str) -> Result<String, MailError> {
    let (hs, _) =
        mailparse::parse_headers(headers).map_err(|e| MailError::BadHeaders(e.to_string()))?;
    let marked = hs
        .get_all_values(PLEXUS_HEADER)
        .iter()
        .any(|v| v.trim() == "1");
    if !marked {
        return Err(MailError::NotPlexus);
    }
    let from_hdr = hs
        .get_first_header("From")
        .ok_or_else(|| MailError::NotFromPeer(String::new()))?;
    let addrs = mailparse::addrparse_header(from_hdr)
        .map_err(|e| MailError::BadHeaders(format!("From: {e}")))?;
    let singles: Vec<_> = addrs
        .iter()
        .flat_map(|a| match a {
            mailparse::MailAddr::Single(s) => vec![s.addr.clone()],
            mailparse::MailAddr::Group(g) => g.addrs.iter().map(|s| s.addr.clone()).collect(),
        })
        .collect();
    match singles.as_slice() {
        [one] if one.eq_ignore_ascii_case(peer) => Ok(one.clone()),
        _ => Err(MailError::NotFromPeer(from_hdr.get_value())),
    }
}

/// IMAP SEARCH key matching mail from any of the peers (`OR` takes two keys, so
/// several addresses nest: `OR FROM a OR FROM b FROM c`).
fn from_any_query(peer: &str, extra: &[String]) -> String {
    let mut keys: Vec<String> = std::iter::once(peer)
        .chain(extra.iter().map(String::as_str))
        .map(|p| format!("FROM \"{p}\""))
        .collect();
    let mut q = keys.pop().unwrap_or_default();
    while let Some(k) = keys.pop() {
        q = format!("OR {k} {q}");
    }
    q
}

/// A plexus mail taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwrapped {
    /// The `From:` address (already checked against the peer).
    pub from: String,
    /// The sealed bytes.
    pub sealed: Vec<u8>,
}

/// Take a complete plexus mail from `peer` apart; every check of [`classify_headers`]
/// applies, then the content type, the base64 body and the size limit.
pub fn unwrap(raw: &[u8], peer: &str, limit: u32) -> Result<Unwrapped, MailError> {
    if raw.len() as u64 > u64::from(limit) {
        return Err(MailError::TooLarge {
            size: raw.len() as u64,
            limit: limit.into(),
        });
    }
    let from = classify_headers(raw, peer)?;
    let mail = mailparse::parse_mail(raw).map_err(|e| MailError::BadHeaders(e.to_string()))?;
    let ct = &mail.ctype;
    if !ct.mimetype.eq_ignore_ascii_case("application/pkcs7-mime")
        && !ct.mimetype.eq_ignore_ascii_case("application/x-pkcs7-mime")
    {
        return Err(MailError::WrongContentType(ct.mimetype.clone()));
    }
    if let Some(t) = ct.params.get("smime-type") {
        if !t.eq_ignore_ascii_case("enveloped-data") {
            return Err(MailError::WrongContentType(format!(
                "{}; smime-type={t}",
                ct.mimetype
            )));
        }
    }
    let sealed = match mail.get_body_encoded() {
        mailparse::body::Body::Base64(b) => {
            base64_decode(b.get_raw()).map_err(MailError::BadBody)?
        }
        _ => {
            let cte = mail
                .headers
                .get_first_value("Content-Transfer-Encoding")
                .unwrap_or_default();
            return Err(MailError::BadBody(format!(
                "Content-Transfer-Encoding is {cte:?}, expected base64"
            )));
        }
    };
    if sealed.is_empty() {
        return Err(MailError::BadBody("empty body".into()));
    }
    Ok(Unwrapped { from, sealed })
}

/// The body as transported: strict base64 decoding (mailparse's own decoder skips garbage,
/// which would hide a truncated or damaged body).
fn base64_decode(body: &[u8]) -> Result<Vec<u8>, String> {
    crate::base64::decode(body).map_err(|e| format!("the body {e}"))
}

fn base64(data: &[u8]) -> String {
    crate::base64::encode(data)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Tue, 24 Nov 2026 16:35:26 +0000` for a Unix time.
fn rfc5322_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let days = unix / 86400;
    let rem = unix % 86400;
    let (y, m, d) = civil_date(days);
    format!(
        "{}, {d} {} {y} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// (year, month 1-12, day 1-31) of the day `days` after 1970-01-01.
fn civil_date(days: u64) -> (i64, i64, i64) {
    // Howard Hinnant's algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The error chain of `e` on one line (TLS libraries hide the useful part in sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn is_cert_failure(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("certificate verify failed")
        || m.contains("unable to get local issuer")
        || m.contains("self-signed certificate")
        || m.contains("self signed certificate")
        || m.contains("hostname mismatch")
}

fn tls_error(server: &str, host_port: &str, msg: String) -> MediatorError {
    if is_cert_failure(&msg) {
        MediatorError::Config(format!(
            "the TLS certificate of the {server} server {host_port} could not be verified ({msg}); \
             if it is issued by a private CA, pass that CA's certificate as ca_file, and check \
             that the host name matches the certificate"
        ))
    } else {
        MediatorError::Unreachable(format!(
            "TLS with the {server} server {host_port} failed: {msg}"
        ))
    }
}

fn read_file(what: &str, p: &PathBuf) -> Result<Vec<u8>, MediatorError> {
    std::fs::read(p)
        .map_err(|e| MediatorError::Config(format!("cannot read {what} {}: {e}", p.display())))
}

/// Certificates and identity loaded once from the settings.
struct TlsMaterial {
    ca_pem: Option<Vec<u8>>,
    cert_pem: Option<Vec<u8>>,
    key_pem: Option<crate::secret::Zeroizing<Vec<u8>>>,
}

impl TlsMaterial {
    fn load(s: &EmailSettings) -> Result<TlsMaterial, MediatorError> {
        let ca_pem = s
            .ca_file
            .as_ref()
            .map(|p| read_file("ca_file", p))
            .transpose()?;
        let cert_pem = s
            .client_cert
            .as_ref()
            .map(|p| read_file("client_cert", p))
            .transpose()?;
        // Checked on the opened file (regular, ours or root's, mode 0600 or stricter).
        let key_pem = match &s.client_key {
            Some(p) => Some(
                crate::secret::read_private_file(p, 1 << 20)
                    .map_err(|e| MediatorError::Config(format!("client_key: {e}")))?,
            ),
            None => None,
        };
        let m = TlsMaterial {
            ca_pem,
            cert_pem,
            key_pem,
        };
        // Parse now so a bad file is reported at connect, not at the first message.
        m.native()?;
        Ok(m)
    }

    fn native(&self) -> Result<TlsConnector, MediatorError> {
        let mut b = TlsConnector::builder();
        b.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
        if let Some(ca) = &self.ca_pem {
            let c = Certificate::from_pem(ca).map_err(|e| {
                MediatorError::Config(format!("ca_file is not a PEM certificate: {e}"))
            })?;
            b.add_root_certificate(c);
        }
        if let (Some(c), Some(k)) = (&self.cert_pem, &self.key_pem) {
            let id = Identity::from_pkcs8(c, k).map_err(|e| {
                MediatorError::Config(format!(
                    "client_cert/client_key are not a PEM certificate and PKCS#8 PEM key: {e}"
                ))
            })?;
            b.identity(id);
        }
        b.build()
            .map_err(|e| MediatorError::Config(format!("TLS setup failed: {e}")))
    }
}

/// What one pass over the folder found.
enum Scan {
    Found(u32, Incoming),
    Quarantine(u32, String),
    Nothing,
}

type ImapSession = imap::Session<TlsStream<TcpStream>>;

/// An open, logged-in IMAP session with the watched folder selected.
struct Imap {
    session: ImapSession,
    /// The same socket as under the TLS stream: IDLE clears its read timeout, we restore it.
    tcp: TcpStream,
    uid_validity: u32,
    idle: bool,
    uidplus: bool,
    moves: bool,
}

/// The e-mail mediator. See the module documentation.
pub struct EmailMediator {
    settings: EmailSettings,
    /// `settings.password`, read once.
    password: Secret,
    tls: TlsMaterial,
    imap: Option<Imap>,
    /// The folder was selected once: a later NO to SELECT is trouble on the server, not
    /// a wrong folder name.
    selected_once: bool,
    /// UIDs returned by `receive` and not yet acknowledged, with the UIDVALIDITY they belong to.
    pending: HashSet<(u32, u32)>,
    /// UIDs set aside (rejected, oversized, too old, undecodable, not from the peer, or
    /// refused by the server): not offered again, also after a restart with `refused_state`.
    refused: Refused,
    /// UIDs whose deletion could not be completed (no UIDPLUS): not offered again.
    done: HashSet<(u32, u32)>,
    /// What the searches found and is not looked at yet.
    candidates: Candidates,
}

impl fmt::Debug for EmailMediator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailMediator")
            .field("settings", &self.settings)
            .field("connected", &self.imap.is_some())
            .finish()
    }
}

/// First delay after a dropped connection; doubled up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Header bytes fetched per mail (`BODY.PEEK[HEADER]<0.N>`); a header this long or longer
/// is not plexus mail (ours is under 1 KiB).
pub const HEADER_CAP: usize = 65_536;

/// Candidates whose size and date are fetched in one command.
const META_CHUNK: usize = 100;

/// How the age of a mail compares with `max_age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Age {
    /// Within the window (or no window, or a date in the future: clocks differ).
    Fresh,
    /// Received this many seconds ago, beyond the window.
    TooOld(u64),
    /// A window is set but the server gave no usable INTERNALDATE.
    Unknown,
}

/// The age decision for a mail the server received at `received` (Unix seconds).
fn age_of(received: Option<i64>, now: SystemTime, max_age: Option<Duration>) -> Age {
    let Some(max) = max_age else {
        return Age::Fresh;
    };
    let Some(received) = received else {
        return Age::Unknown;
    };
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match u64::try_from(now.saturating_sub(received)) {
        Ok(age) if age > max.as_secs() => Age::TooOld(age),
        _ => Age::Fresh,
    }
}

/// Plexus mail found by the searches and not looked at yet, handed out newest (highest
/// UID) first. Later searches only ask for mail above the highest UID any search returned
/// (UIDs only grow and headers never change), so a flood is searched once, not once per
/// message.
#[derive(Debug, Default)]
struct Candidates {
    /// The UIDVALIDITY the UIDs belong to.
    uid_validity: u32,
    /// The highest UID a search returned, if any search ran.
    top: Option<u32>,
    /// Not yet looked at, ascending (the newest is popped from the end).
    queue: Vec<u32>,
}

impl Candidates {
    /// `UID n:*` limiting a search to mail above what is known; empty: search everything.
    fn range_key(&self, uid_validity: u32) -> String {
        match self.top {
            Some(top) if self.uid_validity == uid_validity => {
                format!("UID {}:* ", top.saturating_add(1))
            }
            _ => String::new(),
        }
    }

    /// Add what a search returned. (`n:*` also matches the highest UID when it is below
    /// `n`, so only UIDs above the known top are new.)
    fn add(&mut self, uid_validity: u32, found: impl IntoIterator<Item = u32>) {
        if self.uid_validity != uid_validity {
            *self = Candidates {
                uid_validity,
                ..Candidates::default()
            };
        }
        let top = self.top;
        let before = self.queue.len();
        self.queue
            .extend(found.into_iter().filter(|u| top.map_or(true, |t| *u > t)));
        if let Some(max) = self.queue[before..].iter().max() {
            self.top = Some(top.map_or(*max, |t| t.max(*max)));
        } else if top.is_none() {
            self.top = Some(0);
        }
        self.queue.sort_unstable();
        self.queue.dedup();
    }

    /// Take up to `n` candidates, newest first.
    fn take_newest(&mut self, n: usize) -> Vec<u32> {
        let at = self.queue.len().saturating_sub(n);
        let mut v = self.queue.split_off(at);
        v.reverse();
        v
    }

    /// Put back candidates that were taken but not looked at.
    fn put_back(&mut self, uids: &[u32]) {
        self.queue.extend_from_slice(uids);
        self.queue.sort_unstable();
        self.queue.dedup();
    }

    /// Forget everything (a new connection searches the whole folder again).
    fn reset(&mut self) {
        *self = Candidates::default();
    }
}

/// `SINCE` key (day granularity) that surely covers everything younger than `max_age`: one
/// day earlier, since the server compares dates in its own time zone.
fn since_key(now: SystemTime, max_age: Duration) -> String {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let day = now.saturating_sub(max_age.as_secs()).saturating_sub(86_400) / 86_400;
    let (y, m, d) = civil_date(day);
    format!("SINCE {d}-{}-{y}", MONTHS[(m - 1) as usize])
}

/// A UID set `a,b,c` for one command.
fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// What a command about one message came back with.
enum OneMessage {
    /// The server refused it for this message (NO/BAD): set the message aside.
    Refused(String),
    /// The answer could not be read (a parse error): the connection is no longer in a
    /// known state and is dropped; the message is set aside.
    Garbled(String),
}

/// Sort an error of a command about one message: the server's refusal concerns only that
/// message; a lost connection is the channel's trouble (`Err`, the caller reconnects).
fn one_message(hp: &str, cmd: &str, uid: u32, e: imap::Error) -> Result<OneMessage, MediatorError> {
    match e {
        imap::Error::No(no) => Ok(OneMessage::Refused(format!(
            "IMAP server {hp} answered NO to {cmd} of UID {uid}: {}",
            no.information
        ))),
        imap::Error::Bad(bad) => Ok(OneMessage::Refused(format!(
            "IMAP server {hp} answered BAD to {cmd} of UID {uid}: {}",
            bad.information
        ))),
        imap::Error::Io(_)
        | imap::Error::ConnectionLost
        | imap::Error::Bye(_)
        | imap::Error::Tls(_)
        | imap::Error::TagMismatch(_) => Err(imap_err(hp, cmd, e)),
        e => Ok(OneMessage::Garbled(format!(
            "IMAP server {hp} during {cmd} of UID {uid}: {}",
            chain(&e)
        ))),
    }
}

impl EmailMediator {
    /// Check the settings, load the TLS material and log in to the IMAP server once, so
    /// that a wrong password or CA is reported now.
    pub fn connect(settings: EmailSettings) -> Result<EmailMediator, MediatorError> {
        let mut m = EmailMediator::new(settings)?;
        let i = m.open_imap()?;
        m.refused.observe(i.uid_validity);
        m.imap = Some(i);
        Ok(m)
    }

    /// Check the settings and load the TLS material and the refused-UID state without any
    /// network traffic; the IMAP session is opened by the first `receive` (a sender-only
    /// use never opens it).
    pub fn new(settings: EmailSettings) -> Result<EmailMediator, MediatorError> {
        settings.validate()?;
        let password = settings
            .password
            .resolve()
            .map_err(|e| MediatorError::Config(format!("mail password: {e}")))?;
        let tls = TlsMaterial::load(&settings)?;
        let refused =
            Refused::load(settings.refused_state.clone()).map_err(MediatorError::Config)?;
        Ok(EmailMediator {
            settings,
            password,
            tls,
            imap: None,
            selected_once: false,
            pending: HashSet::new(),
            refused,
            done: HashSet::new(),
            candidates: Candidates::default(),
        })
    }

    /// Whether the current IMAP session waits with IDLE (false: polling).
    pub fn uses_idle(&self) -> bool {
        self.imap.as_ref().is_some_and(|i| i.idle)
    }

    fn imap_addr(&self) -> String {
        format!("{}:{}", self.settings.imap_host, self.settings.imap_port)
    }

    fn open_imap(&mut self) -> Result<Imap, MediatorError> {
        let s = &self.settings;
        let hp = self.imap_addr();
        let tcp = tcp_connect(&s.imap_host, s.imap_port, s.io_timeout, "IMAP")?;
        let tcp_handle = tcp
            .try_clone()
            .map_err(|e| MediatorError::Unreachable(format!("IMAP connection to {hp}: {e}")))?;
        let tls = self
            .tls
            .native()?
            .connect(&s.imap_host, tcp)
            .map_err(|e| match e {
                native_tls::HandshakeError::Failure(e) => tls_error("IMAP", &hp, chain(&e)),
                native_tls::HandshakeError::WouldBlock(_) => MediatorError::Unreachable(format!(
                    "TLS handshake with the IMAP server {hp} timed out"
                )),
            })?;
        let mut client = imap::Client::new(tls);
        client
            .read_greeting()
            .map_err(|e| imap_err(&hp, "greeting", e))?;
        let mut session = client
            .login(&s.login, self.password.expose())
            .map_err(|(e, _)| match e {
                imap::Error::No(no) if transient_no(&no.information) => {
                    MediatorError::Unreachable(format!(
                        "the IMAP server {hp} cannot log in account {:?} now: {}",
                        s.login, no.information
                    ))
                }
                imap::Error::No(no) => MediatorError::Auth(format!(
                    "the IMAP server {hp} refused the login of account {:?}: {}; check login and password",
                    s.login, no.information
                )),
                imap::Error::Bad(bad) => MediatorError::Auth(format!(
                    "the IMAP server {hp} refused the login of account {:?}: {}",
                    s.login, bad.information
                )),
                e => imap_err(&hp, "LOGIN", e),
            })?;
        let caps = session
            .capabilities()
            .map_err(|e| imap_err(&hp, "CAPABILITY", e))?;
        let idle = caps.has_str("IDLE");
        let uidplus = caps.has_str("UIDPLUS");
        let moves = caps.has_str("MOVE");
        drop(caps);
        let selected_once = self.selected_once;
        let mb = session.select(&s.folder).map_err(|e| match e {
            // Refused at the first SELECT: the folder name is wrong. Refused after it
            // worked once: the server is in trouble (retried).
            imap::Error::No(no) if !selected_once && !transient_no(&no.information) => {
                MediatorError::Config(format!(
                    "folder {:?} on {hp} cannot be selected: {}",
                    s.folder, no.information
                ))
            }
            imap::Error::No(no) => MediatorError::Unreachable(format!(
                "IMAP server {hp} refused to select folder {:?} for now: {}",
                s.folder, no.information
            )),
            e => imap_err(&hp, "SELECT", e),
        })?;
        self.selected_once = true;
        let uid_validity = mb.uid_validity.unwrap_or(0);
        debug!(
            "email: logged in to {hp} as {}, folder {} (uidvalidity {uid_validity}, IDLE {idle}, UIDPLUS {uidplus}, MOVE {moves})",
            s.login, s.folder
        );
        Ok(Imap {
            session,
            tcp: tcp_handle,
            uid_validity,
            idle,
            uidplus,
            moves,
        })
    }

    /// Reconnect with bounded exponential backoff until `deadline`.
    fn ensure_imap(&mut self, deadline: Instant) -> Result<(), MediatorError> {
        let mut delay = BACKOFF_START;
        loop {
            if self.imap.is_some() {
                return Ok(());
            }
            match self.open_imap() {
                Ok(i) => {
                    info!("email: connected to the IMAP server {}", self.imap_addr());
                    self.refused.observe(i.uid_validity);
                    // Taken candidates may have been lost with the old connection.
                    self.candidates.reset();
                    self.imap = Some(i);
                    return Ok(());
                }
                Err(e @ MediatorError::Unreachable(_)) => {
                    let now = Instant::now();
                    if now + delay >= deadline {
                        return Err(e);
                    }
                    warn!("email: {e}; retrying in {delay:?}");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Look at the folder: the next plexus mail from the peer, if any.
    fn scan(&mut self) -> Result<Option<Incoming>, MediatorError> {
        loop {
            let r = self.scan_once();
            // Untagged updates are otherwise not needed (we search by UID): drop them so a
            // long wait does not pile them up. But an EXISTS means mail arrived that the
            // search may not have seen (dovecot reports it only after the command), and
            // IDLE would not report it again: look once more before waiting.
            let arrived = self.imap.as_mut().is_some_and(|i| {
                // (take_all_unsolicited has already emptied the queue: `any` drops the rest.)
                i.session
                    .take_all_unsolicited()
                    .any(|u| matches!(u, imap::types::UnsolicitedResponse::Exists(_)))
            });
            match r? {
                Scan::Found(_, m) => return Ok(Some(m)),
                Scan::Nothing if arrived => debug!("email: mail arrived during the scan"),
                Scan::Nothing => return Ok(None),
                Scan::Quarantine(uid, folder) => {
                    self.move_to(uid, &folder)?;
                }
            }
        }
    }

    /// Set `uid` aside for good (this process and, with `refused_state`, the next).
    fn set_aside(&mut self, uid: u32) {
        if let Some(uv) = self.imap.as_ref().map(|i| i.uid_validity) {
            self.refused.insert(uv, uid);
        }
    }

    /// A command about `uid` failed: set the message aside (logged once, as it is not
    /// looked at again) and go on, unless the channel itself is lost.
    fn skip_message(
        &mut self,
        hp: &str,
        cmd: &str,
        uid: u32,
        e: imap::Error,
    ) -> Result<(), MediatorError> {
        match one_message(hp, cmd, uid, e)? {
            OneMessage::Refused(m) => {
                warn!("email: {m}; the message is set aside");
                self.set_aside(uid);
                Ok(())
            }
            OneMessage::Garbled(m) => {
                warn!("email: {m}; the message is set aside and the connection renewed");
                self.set_aside(uid);
                self.imap = None;
                Err(MediatorError::Unreachable(m))
            }
        }
    }

    fn scan_once(&mut self) -> Result<Scan, MediatorError> {
        let hp = self.imap_addr();
        let now = SystemTime::now();
        let Some(imap) = self.imap.as_mut() else {
            return Ok(Scan::Nothing);
        };
        let uv = imap.uid_validity;
        let s = &self.settings;
        // Server-side pre-filter; everything is checked again on the headers below.
        let mut query = format!(
            "{}UNDELETED HEADER {PLEXUS_HEADER} \"1\" {}",
            self.candidates.range_key(uv),
            from_any_query(&s.peer, &s.extra_peers)
        );
        if let Some(max) = s.max_age {
            query = format!("{} {query}", since_key(now, max));
        }
        let found = imap
            .session
            .uid_search(&query)
            .map_err(|e| imap_err(&hp, "UID SEARCH", e))?;
        self.candidates.add(uv, found);
        let mut n = 4;
        loop {
            let chunk = self.candidates.take_newest(n);
            if chunk.is_empty() {
                return Ok(Scan::Nothing);
            }
            // Few at first (one mail is usually all there is), more while nothing is found.
            n = (n * 2).min(META_CHUNK);
            let (pending, refused, done) = (&self.pending, &self.refused, &self.done);
            let chunk: Vec<u32> = chunk
                .into_iter()
                .filter(|&u| {
                    let k = (uv, u);
                    !(pending.contains(&k) || refused.contains(uv, u) || done.contains(&k))
                })
                .collect();
            if chunk.is_empty() {
                continue;
            }
            let r = self.scan_chunk(&hp, uv, &chunk, now)?;
            let at = match &r {
                Scan::Found(uid, _) | Scan::Quarantine(uid, _) => *uid,
                Scan::Nothing => continue,
            };
            // What this chunk did not get to stays a candidate.
            if let Some(p) = chunk.iter().position(|u| *u == at) {
                self.candidates.put_back(&chunk[p + 1..]);
            }
            return Ok(r);
        }
    }

    /// Look at `chunk` (newest first): dates and sizes in one command, then headers and
    /// bodies one by one of what is still a candidate.
    fn scan_chunk(
        &mut self,
        hp: &str,
        uv: u32,
        chunk: &[u32],
        now: SystemTime,
    ) -> Result<Scan, MediatorError> {
        let Some(imap) = self.imap.as_mut() else {
            return Ok(Scan::Nothing);
        };
        // (deleted, size, INTERNALDATE as Unix seconds) per UID.
        let meta: std::collections::HashMap<u32, (bool, u32, Option<i64>)> = {
            let fetches = match imap
                .session
                .uid_fetch(uid_set(chunk), "(UID FLAGS RFC822.SIZE INTERNALDATE)")
            {
                Ok(f) => f,
                Err(e @ (imap::Error::No(_) | imap::Error::Bad(_))) => {
                    // One message of the set may be the cause: go one by one instead.
                    if chunk.len() > 1 {
                        debug!(
                            "email: UID FETCH of {} mails refused ({e}); one by one",
                            chunk.len()
                        );
                        for one in chunk {
                            match self.scan_chunk(hp, uv, std::slice::from_ref(one), now)? {
                                Scan::Nothing => {}
                                found => return Ok(found),
                            }
                        }
                        return Ok(Scan::Nothing);
                    }
                    self.skip_message(hp, "UID FETCH", chunk[0], e)?;
                    return Ok(Scan::Nothing);
                }
                Err(e) => return Err(imap_err(hp, "UID FETCH", e)),
            };
            fetches
                .iter()
                .filter_map(|f| {
                    let uid = f.uid?;
                    let deleted = f.flags().contains(&imap::types::Flag::Deleted);
                    let date = f.internal_date().map(|d| d.timestamp());
                    Some((uid, (deleted, f.size.unwrap_or(u32::MAX), date)))
                })
                .collect()
        };
        for &uid in chunk {
            let Some(&(deleted, size, date)) = meta.get(&uid) else {
                continue; // expunged meanwhile
            };
            if deleted {
                continue;
            }
            let s = &self.settings;
            match age_of(date, now, s.max_age) {
                Age::Fresh => {}
                Age::TooOld(age) => {
                    // Not ours to delete: it stays where it is, only never fetched again.
                    info!(
                        "email: plexus mail UID {uid} left unopened: the server received it {age} s ago, \
                         longer ago than max_age ({} s)",
                        s.max_age.unwrap_or_default().as_secs()
                    );
                    self.set_aside(uid);
                    continue;
                }
                Age::Unknown => {
                    warn!("email: plexus mail UID {uid} left unopened: the server gave no usable INTERNALDATE");
                    self.set_aside(uid);
                    continue;
                }
            }
            if size > s.max_message_size {
                warn!(
                    "email: plexus mail UID {uid} left unread: {}",
                    MailError::TooLarge {
                        size: size.into(),
                        limit: s.max_message_size.into()
                    }
                );
                self.set_aside(uid);
                continue;
            }
            match self.check_one(hp, uv, uid)? {
                Scan::Nothing => {}
                found => return Ok(found),
            }
        }
        Ok(Scan::Nothing)
    }

    /// Headers (capped), then the body of one candidate.
    fn check_one(&mut self, hp: &str, uv: u32, uid: u32) -> Result<Scan, MediatorError> {
        let Some(imap) = self.imap.as_mut() else {
            return Ok(Scan::Nothing);
        };
        let s = &self.settings;
        let query = format!("(UID BODY.PEEK[HEADER]<0.{HEADER_CAP}>)");
        let verdict = match imap.session.uid_fetch(uid.to_string(), &query) {
            Ok(fetches) => {
                let Some(f) = fetches.iter().find(|f| f.uid == Some(uid)) else {
                    return Ok(Scan::Nothing); // expunged meanwhile
                };
                let header = f.header().unwrap_or_default();
                if header.len() >= HEADER_CAP {
                    info!(
                        "email: UID {uid} left unopened: its header is {HEADER_CAP} bytes or \
                         longer, which plexus mail never is"
                    );
                    drop(fetches);
                    self.set_aside(uid);
                    return Ok(Scan::Nothing);
                } else {
                    s.extra_peers
                        .iter()
                        .fold(classify_headers(header, &s.peer), |r, p| {
                            r.or_else(|_| classify_headers(header, p))
                        })
                        .map_err(|e| e.to_string())
                }
            }
            Err(e) => {
                self.skip_message(hp, "UID FETCH", uid, e)?;
                return Ok(Scan::Nothing);
            }
        };
        let from = match verdict {
            Ok(from) => from,
            Err(e) => {
                // Not ours after all (the server's search is looser): never touch it.
                debug!("email: UID {uid} skipped: {e}");
                self.set_aside(uid);
                return Ok(Scan::Nothing);
            }
        };
        let Some(imap) = self.imap.as_mut() else {
            return Ok(Scan::Nothing);
        };
        let unwrapped = match imap.session.uid_fetch(uid.to_string(), "(UID BODY.PEEK[])") {
            Ok(fetches) => {
                let Some(body) = fetches
                    .iter()
                    .find(|f| f.uid == Some(uid))
                    .and_then(|f| f.body())
                else {
                    return Ok(Scan::Nothing); // expunged meanwhile
                };
                // The From: that passed above is the peer to check the whole mail against.
                unwrap(body, &from, s.max_message_size)
            }
            Err(e) => {
                self.skip_message(hp, "UID FETCH", uid, e)?;
                return Ok(Scan::Nothing);
            }
        };
        match unwrapped {
            Ok(u) => {
                self.pending.insert((uv, uid));
                Ok(Scan::Found(
                    uid,
                    Incoming {
                        id: format!("{uv}:{uid}"),
                        from: u.from,
                        sealed: u.sealed,
                    },
                ))
            }
            Err(e) => {
                warn!("email: plexus mail UID {uid} from {from} cannot be used: {e}");
                self.set_aside(uid);
                Ok(match &self.settings.quarantine_folder {
                    Some(q) => Scan::Quarantine(uid, q.clone()),
                    None => Scan::Nothing,
                })
            }
        }
    }

    /// Wait for the folder to change (IDLE) or for the next poll, at most until `deadline`.
    fn wait(&mut self, deadline: Instant) -> Result<(), MediatorError> {
        let hp = self.imap_addr();
        let use_idle = self.settings.use_idle;
        let poll = self.settings.poll_interval;
        let idle_max = self.settings.idle_timeout;
        let io_timeout = self.settings.io_timeout;
        let Some(imap) = self.imap.as_mut() else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        if use_idle && imap.idle {
            let outcome = {
                let mut h = imap.session.idle();
                h.timeout(left.min(idle_max).max(Duration::from_millis(10)))
                    .keepalive(false);
                // imap 3.0-alpha panics (unreachable!) if the server refuses IDLE after
                // announcing it: turn that into an error instead of taking the host down.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    h.wait_while(imap::extensions::idle::stop_on_any)
                }))
            };
            // wait_while leaves the socket without a read timeout; a hung server must not
            // block later commands forever.
            imap.tcp.set_read_timeout(Some(io_timeout)).map_err(|e| {
                MediatorError::Unreachable(format!("IMAP connection to {hp} after IDLE: {e}"))
            })?;
            match outcome {
                Ok(Ok(WaitOutcome::MailboxChanged)) => debug!("email: IDLE: folder changed"),
                Ok(Ok(WaitOutcome::TimedOut)) => {}
                Ok(Err(e)) => return Err(imap_err(&hp, "IDLE", e)),
                Err(_) => {
                    return Err(MediatorError::Unreachable(format!(
                        "IMAP server {hp} answered IDLE unexpectedly; reconnecting"
                    )))
                }
            }
            Ok(())
        } else {
            std::thread::sleep(left.min(poll));
            // Some servers only report new mail in answer to a command.
            imap.session.noop().map_err(|e| imap_err(&hp, "NOOP", e))
        }
    }

    /// Make sure `folder` exists, then move `uid` there without touching other mail.
    /// `Ok(false)`: the server refused (logged); the message stays where it is.
    fn move_to(&mut self, uid: u32, folder: &str) -> Result<bool, MediatorError> {
        let hp = self.imap_addr();
        let Some(imap) = self.imap.as_mut() else {
            return Err(MediatorError::Unreachable(format!("not connected to {hp}")));
        };
        // CREATE fails harmlessly when it exists; the MOVE/COPY below reports real problems.
        let _ = imap.session.create(folder);
        let set = uid.to_string();
        let (cmd, r) = if imap.moves {
            ("UID MOVE", imap.session.uid_mv(&set, folder))
        } else {
            ("UID COPY", imap.session.uid_copy(&set, folder))
        };
        if let Err(e) = r {
            let cmd = format!("{cmd} to {folder:?}");
            self.skip_message(&hp, &cmd, uid, e)?;
            return Ok(false);
        }
        if !imap.moves && !self.delete_uid(uid)? {
            warn!("email: UID {uid} was copied to {folder} but stays in place as well");
            return Ok(false);
        }
        info!("email: moved UID {uid} to {folder}");
        Ok(true)
    }

    /// Flag `uid` \Deleted and expunge only that UID (UIDPLUS); without UIDPLUS it stays
    /// flagged. `Ok(false)`: the server refused (logged); the message stays where it is.
    fn delete_uid(&mut self, uid: u32) -> Result<bool, MediatorError> {
        let hp = self.imap_addr();
        let Some(imap) = self.imap.as_mut() else {
            return Err(MediatorError::Unreachable(format!("not connected to {hp}")));
        };
        let set = uid.to_string();
        if let Err(e) = imap.session.uid_store(&set, "+FLAGS.SILENT (\\Deleted)") {
            self.skip_message(&hp, "UID STORE", uid, e)?;
            return Ok(false);
        }
        if imap.uidplus {
            if let Err(e) = imap.session.uid_expunge(&set) {
                self.skip_message(&hp, "UID EXPUNGE", uid, e)?;
                return Ok(false);
            }
        } else {
            warn!(
                "email: {hp} lacks UIDPLUS: UID {uid} is flagged \\Deleted but not expunged \
                 (a plain EXPUNGE would also remove mail you marked); set done_folder to move it instead"
            );
        }
        Ok(true)
    }

    fn parse_id(&self, id: &str) -> Result<(u32, u32), MediatorError> {
        id.split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .filter(|k| self.pending.contains(k))
            .ok_or_else(|| {
                MediatorError::Protocol(format!(
                    "message id {id:?} was not returned by receive or was already acknowledged"
                ))
            })
    }

    /// Carry out `outcome` on one message. `Ok(true)`: it is gone from the folder as
    /// asked; `Ok(false)`: it stays (by design or because the server refused, logged).
    fn acknowledge_once(
        &mut self,
        key: (u32, u32),
        outcome: Outcome,
    ) -> Result<bool, MediatorError> {
        let hp = self.imap_addr();
        let (uv, uid) = key;
        let current = self.imap.as_ref().map(|i| i.uid_validity);
        if current != Some(uv) {
            warn!(
                "email: folder {} on {hp} changed UIDVALIDITY since UID {uid} was read; the message is left where it is",
                self.settings.folder
            );
            return Ok(false);
        }
        match outcome {
            Outcome::Handled => {
                if let Some(f) = self.settings.done_folder.clone() {
                    self.move_to(uid, &f)
                } else {
                    let gone = self.delete_uid(uid)?;
                    if gone {
                        info!("email: deleted handled UID {uid}");
                    }
                    Ok(gone)
                }
            }
            Outcome::Rejected => match self.settings.quarantine_folder.clone() {
                Some(q) => self.move_to(uid, &q).map(|_| false),
                None => {
                    info!("email: rejected UID {uid} left in place");
                    Ok(false)
                }
            },
        }
    }
}

fn tcp_connect(
    host: &str,
    port: u16,
    timeout: Duration,
    what: &str,
) -> Result<TcpStream, MediatorError> {
    let hp = format!("{host}:{port}");
    let addrs = (host, port).to_socket_addrs().map_err(|e| {
        MediatorError::Unreachable(format!("cannot resolve the {what} server {hp}: {e}"))
    })?;
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(t) => {
                t.set_read_timeout(Some(timeout))?;
                t.set_write_timeout(Some(timeout))?;
                keepalive(&t);
                return Ok(t);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(MediatorError::Unreachable(match last {
        Some(e) => format!("cannot connect to the {what} server {hp}: {e}"),
        None => format!("the {what} server name {hp} resolves to no address"),
    }))
}

/// TCP keepalive on a long-lived IMAP connection: home NATs and firewalls drop idle TCP
/// flows after a few minutes, and a dropped flow is otherwise only noticed when the IDLE
/// period ends (25 min). Probes after 60 s of silence, every 15 s, 4 lost = dead: the
/// blocked read then fails and the mediator reconnects. Best effort: a system that
/// refuses the options still works, only slower to notice.
fn keepalive(t: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(15))
        .with_retries(4);
    if let Err(e) = socket2::SockRef::from(t).set_tcp_keepalive(&ka) {
        debug!("email: TCP keepalive not set: {e}");
    }
}

/// A NO that says the server is in trouble for now (RFC 5530 response codes) rather than
/// that the login or folder is wrong; the response code is still in the text, as the imap
/// crate does not know these codes.
fn transient_no(information: &str) -> bool {
    let t = information.trim_start().to_ascii_uppercase();
    ["[UNAVAILABLE]", "[SERVERBUG]", "[INUSE]", "[LIMIT]"]
        .iter()
        .any(|c| t.starts_with(c))
}

/// Map an IMAP error of a command about the session or folder (not one message): lost
/// connections and refusals alike are the channel's trouble, `Unreachable`, so the caller
/// reconnects and the session retries with backoff. (Wrong credentials and a wrong folder
/// are told apart where LOGIN and SELECT are sent; one message's trouble is sorted by
/// [`one_message`].)
fn imap_err(hp: &str, cmd: &str, e: imap::Error) -> MediatorError {
    MediatorError::Unreachable(format!("IMAP server {hp} during {cmd}: {}", chain(&e)))
}

impl Mediator for EmailMediator {
    fn name(&self) -> &str {
        "email"
    }

    fn send(&mut self, to: &str, sealed: &[u8]) -> Result<(), MediatorError> {
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::transport::smtp::client::{
            Certificate as LCert, Identity as LId, Tls, TlsParameters,
        };
        use lettre::transport::smtp::extension::ClientId;
        use lettre::{Address, Transport};

        let s = &self.settings;
        let hp = format!("{}:{}", s.smtp_host, s.smtp_port);
        let mail = wrap(&s.from, to, sealed, SystemTime::now())
            .map_err(|e| MediatorError::Config(e.to_string()))?;
        if mail.len() as u64 > u64::from(s.max_message_size) {
            return Err(MediatorError::Config(format!(
                "{}; the peer would refuse it",
                MailError::TooLarge {
                    size: mail.len() as u64,
                    limit: s.max_message_size.into()
                }
            )));
        }
        let addr = |a: &str| {
            Address::from_str(a).map_err(|e| MediatorError::Config(format!("address {a:?}: {e}")))
        };
        let envelope = lettre::address::Envelope::new(Some(addr(&s.from)?), vec![addr(to)?])
            .map_err(|e| MediatorError::Config(format!("envelope: {e}")))?;

        let mut tb = TlsParameters::builder(s.smtp_host.clone());
        if let Some(ca) = &self.tls.ca_pem {
            tb = tb.add_root_certificate(
                LCert::from_pem(ca).map_err(|e| MediatorError::Config(format!("ca_file: {e}")))?,
            );
        }
        if let (Some(c), Some(k)) = (&self.tls.cert_pem, &self.tls.key_pem) {
            tb = tb.identify_with(
                LId::from_pem(c, k)
                    .map_err(|e| MediatorError::Config(format!("client_cert/client_key: {e}")))?,
            );
        }
        let params = tb
            .build_native()
            .map_err(|e| MediatorError::Config(format!("SMTP TLS setup: {}", chain(&e))))?;
        let tls = match s.smtp_mode {
            SmtpMode::ImplicitTls => Tls::Wrapper(params),
            SmtpMode::StartTls => Tls::Required(params),
        };
        let helo = s
            .from
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_else(|| "localhost".into());
        let transport = lettre::SmtpTransport::builder_dangerous(s.smtp_host.clone())
            .port(s.smtp_port)
            .tls(tls)
            .hello_name(ClientId::Domain(helo))
            .credentials(Credentials::new(
                s.login.clone(),
                self.password.expose().to_string(),
            ))
            .timeout(Some(s.io_timeout))
            .build();
        let started = Instant::now();
        transport.send_raw(&envelope, &mail).map_err(|e| {
            let msg = chain(&e);
            let code = e.status().map(|c| c.to_string());
            if e.is_tls() || is_cert_failure(&msg) {
                tls_error("SMTP", &hp, msg)
            } else if matches!(code.as_deref(), Some("535") | Some("534") | Some("530")) {
                MediatorError::Auth(format!(
                    "the SMTP server {hp} refused the login of account {:?}: {msg}; check login and password",
                    s.login
                ))
            } else if e.is_permanent() || e.is_response() {
                MediatorError::Protocol(format!("the SMTP server {hp} refused the mail to {to}: {msg}"))
            } else {
                MediatorError::Unreachable(format!("SMTP server {hp}: {msg}"))
            }
        })?;
        info!(
            "email: sent {} bytes to {to} through {hp} in {:?}",
            mail.len(),
            started.elapsed()
        );
        Ok(())
    }

    fn receive(&mut self, timeout: Duration) -> Result<Option<Incoming>, MediatorError> {
        let deadline = Instant::now() + timeout;
        let mut delay = BACKOFF_START;
        loop {
            self.ensure_imap(deadline)?;
            let step = match self.scan() {
                Ok(Some(m)) => return Ok(Some(m)),
                Ok(None) if Instant::now() >= deadline => return Ok(None),
                Ok(None) => self.wait(deadline),
                Err(e) => Err(e),
            };
            match step {
                Ok(()) => delay = BACKOFF_START,
                Err(e @ MediatorError::Unreachable(_)) => {
                    warn!("email: connection lost ({e}); reconnecting");
                    self.imap = None;
                    if Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Never fails because of what the server answers about this one message: a refused
    /// move or deletion is logged and the message set aside (not offered again, also
    /// after a restart with `refused_state`). Only a lost channel is an error.
    fn acknowledge(&mut self, id: &str, outcome: Outcome) -> Result<(), MediatorError> {
        let key = self.parse_id(id)?;
        let deadline = Instant::now() + self.settings.io_timeout;
        let r = match self.ensure_imap(deadline) {
            Ok(()) => match self.acknowledge_once(key, outcome) {
                Err(e @ MediatorError::Unreachable(_)) => {
                    // One more try on a fresh connection: UIDs survive reconnects.
                    self.imap = None;
                    warn!("email: {e}; reconnecting to acknowledge {id}");
                    self.ensure_imap(deadline)
                        .and_then(|()| self.acknowledge_once(key, outcome))
                }
                r => r,
            },
            Err(e) => Err(e),
        };
        self.pending.remove(&key);
        match (&r, outcome) {
            (Ok(true), Outcome::Handled) => {
                self.done.insert(key);
            }
            _ => self.refused.insert(key.0, key.1),
        }
        r.map(|_| ())
    }
}

impl Drop for EmailMediator {
    fn drop(&mut self) {
        if let Some(mut i) = self.imap.take() {
            let _ = i.session.logout();
        }
    }
}

// Keep the stream bound explicit: IDLE needs a read timeout on the TLS stream.
const _: fn() = || {
    fn needs<T: Read + Write + imap::extensions::idle::SetReadTimeout>() {}
    needs::<TlsStream<TcpStream>>();
};

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "alice@lab.example";
    const ME: &str = "bob@lab.example";

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_538_126)
    }

    #[test]
    fn search_key_covers_every_peer() {
        assert_eq!(from_any_query(PEER, &[]), format!("FROM \"{PEER}\""));
        let extra = vec!["c@x.example".to_string(), "d@x.example".to_string()];
        assert_eq!(
            from_any_query(PEER, &extra),
            format!("OR FROM \"{PEER}\" OR FROM \"c@x.example\" FROM \"d@x.example\"")
        );
    }

    #[test]
    fn extra_peers_are_validated() {
        let mut s = EmailSettings::new("h", "l", Secret::new("p"), ME, PEER);
        s.extra_peers = vec!["not an address".into()];
        assert!(matches!(s.validate(), Err(MediatorError::Config(_))));
    }

    #[test]
    fn wrap_unwrap_round_trip_all_lengths() {
        for len in [1, 2, 3, 4, 57, 58, 1000, 4096] {
            let sealed = sample(len);
            let mail = wrap(PEER, ME, &sealed, t0()).unwrap();
            let u = unwrap(&mail, PEER, DEFAULT_MAX_MESSAGE_SIZE).unwrap();
            assert_eq!(u.sealed, sealed, "length {len}");
            assert_eq!(u.from, PEER);
        }
    }

    #[test]
    fn wrapped_mail_is_standard_smime() {
        let mail = wrap(PEER, ME, &sample(100), t0()).unwrap();
        let p = mailparse::parse_mail(&mail).unwrap();
        assert_eq!(p.ctype.mimetype, "application/pkcs7-mime");
        assert_eq!(p.ctype.params.get("smime-type").unwrap(), "enveloped-data");
        assert_eq!(p.ctype.params.get("name").unwrap(), "smime.p7m");
        assert_eq!(p.headers.get_first_value("X-Plexus").unwrap(), "1");
        assert_eq!(p.headers.get_first_value("Subject").unwrap(), SUBJECT);
        assert_eq!(
            p.headers.get_first_value("Content-Disposition").unwrap(),
            "attachment; filename=smime.p7m"
        );
        assert_eq!(
            p.headers.get_first_value("Date").unwrap(),
            "Tue, 24 Nov 2026 16:35:26 +0000"
        );
        let text = String::from_utf8(mail).unwrap();
        assert!(text.lines().all(|l| l.len() <= 998));
        assert!(text.split("\r\n").all(|l| !l.contains('\n')), "bare LF");
    }

    #[test]
    fn header_injection_refused() {
        for bad in [
            "a@b\r\nBcc: x@y",
            "Alice <a@b>",
            "a b@c",
            "noat",
            "@b",
            "a@",
            "a@b@c",
        ] {
            assert_eq!(
                wrap(bad, ME, b"x", t0()),
                Err(MailError::BadAddress(bad.to_string()))
            );
            assert!(wrap(PEER, bad, b"x", t0()).is_err());
        }
    }

    fn headers(from: &str, marker: Option<&str>) -> Vec<u8> {
        let mut h = format!("From: {from}\r\nSubject: {SUBJECT}\r\n");
        if let Some(m) = marker {
            h.push_str(&format!("X-Plexus: {m}\r\n"));
        }
        h.push_str("\r\n");
        h.into_bytes()
    }

    #[test]
    fn header_filter() {
        assert_eq!(
            classify_headers(&headers("<alice@lab.example>", Some("1")), PEER),
            Ok(PEER.to_string())
        );
        assert_eq!(
            classify_headers(&headers("Alice <ALICE@lab.example>", Some("1")), PEER),
            Ok("ALICE@lab.example".to_string())
        );
        assert_eq!(
            classify_headers(&headers("alice@lab.example", None), PEER),
            Err(MailError::NotPlexus)
        );
        assert_eq!(
            classify_headers(&headers("alice@lab.example", Some("0")), PEER),
            Err(MailError::NotPlexus)
        );
        assert!(matches!(
            classify_headers(&headers("carol@lab.example", Some("1")), PEER),
            Err(MailError::NotFromPeer(_))
        ));
        // A look-alike that a substring search on the server would match.
        assert!(matches!(
            classify_headers(&headers("xalice@lab.example.evil", Some("1")), PEER),
            Err(MailError::NotFromPeer(_))
        ));
        // Two senders: refused, the peer must be the only one.
        assert!(matches!(
            classify_headers(
                &headers("alice@lab.example, carol@lab.example", Some("1")),
                PEER
            ),
            Err(MailError::NotFromPeer(_))
        ));
        assert!(matches!(
            classify_headers(b"X-Plexus: 1\r\n\r\n", PEER),
            Err(MailError::NotFromPeer(_))
        ));
    }

    #[test]
    fn size_limit() {
        let mail = wrap(PEER, ME, &sample(3000), t0()).unwrap();
        let limit = (mail.len() - 1) as u32;
        assert_eq!(
            unwrap(&mail, PEER, limit),
            Err(MailError::TooLarge {
                size: mail.len() as u64,
                limit: limit.into()
            })
        );
        assert!(unwrap(&mail, PEER, mail.len() as u32).is_ok());
    }

    #[test]
    fn bad_bodies_refused() {
        let mail = String::from_utf8(wrap(PEER, ME, &sample(300), t0()).unwrap()).unwrap();
        // Truncated base64 (a line cut in the middle of a quantum).
        let cut = mail.trim_end().len() - 3;
        let truncated = format!("{}\r\n", &mail[..cut]);
        assert!(matches!(
            unwrap(truncated.as_bytes(), PEER, DEFAULT_MAX_MESSAGE_SIZE),
            Err(MailError::BadBody(_))
        ));
        // Garbage in the base64.
        let garbage = mail.replacen("\r\n\r\n", "\r\n\r\n#!*", 1);
        assert!(matches!(
            unwrap(garbage.as_bytes(), PEER, DEFAULT_MAX_MESSAGE_SIZE),
            Err(MailError::BadBody(_))
        ));
        // Other content types.
        let plain = mail.replace(
            "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
            "text/plain",
        );
        assert_eq!(
            unwrap(plain.as_bytes(), PEER, DEFAULT_MAX_MESSAGE_SIZE),
            Err(MailError::WrongContentType("text/plain".into()))
        );
        let signed = mail.replace("smime-type=enveloped-data", "smime-type=signed-data");
        assert!(matches!(
            unwrap(signed.as_bytes(), PEER, DEFAULT_MAX_MESSAGE_SIZE),
            Err(MailError::WrongContentType(_))
        ));
        let qp = mail.replace("Transfer-Encoding: base64", "Transfer-Encoding: 8bit");
        assert!(matches!(
            unwrap(qp.as_bytes(), PEER, DEFAULT_MAX_MESSAGE_SIZE),
            Err(MailError::BadBody(_))
        ));
        let empty = format!("{}\r\n\r\n", mail.split("\r\n\r\n").next().unwrap());
        assert_eq!(
            unwrap(empty.as_bytes(), PEER, DEFAULT_MAX_MESSAGE_SIZE),
            Err(MailError::BadBody("empty body".into()))
        );
        // Garbage that is not a mail at all.
        assert!(unwrap(b"\x00\x01\x02garbage", PEER, DEFAULT_MAX_MESSAGE_SIZE).is_err());
    }

    /// Every truncation and many byte flips of a valid mail: an error or a result,
    /// never a panic (the mailbox is untrusted input).
    #[test]
    fn damaged_mail_never_panics() {
        let mail = wrap(PEER, ME, &sample(200), t0()).unwrap();
        for cut in 0..mail.len() {
            let _ = unwrap(&mail[..cut], PEER, DEFAULT_MAX_MESSAGE_SIZE);
            let _ = classify_headers(&mail[..cut], PEER);
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut m = mail.clone();
            let i = (x as usize) % m.len();
            m[i] = (x >> 32) as u8;
            if let Ok(u) = unwrap(&m, PEER, DEFAULT_MAX_MESSAGE_SIZE) {
                assert_eq!(u.from.to_ascii_lowercase(), PEER);
            }
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc.as_bytes()).unwrap(), plain.as_bytes());
        }
        assert!(base64_decode(b"Zm9=v").is_err());
        assert!(base64_decode(b"Z").is_err());
    }

    #[test]
    fn imap_connections_use_tcp_keepalive() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = tcp_connect("127.0.0.1", port, Duration::from_secs(2), "IMAP").unwrap();
        let s = socket2::SockRef::from(&t);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.keepalive_time().unwrap(), Duration::from_secs(60));
        assert_eq!(s.keepalive_interval().unwrap(), Duration::from_secs(15));
        assert_eq!(s.keepalive_retries().unwrap(), 4);
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = EmailSettings::new("h", "l", Secret::new("hunter2"), PEER, ME);
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.password.resolve().unwrap().expose(), "hunter2");
    }

    #[test]
    fn candidates_newest_first_and_searched_once() {
        let mut c = Candidates::default();
        assert_eq!(
            c.range_key(7),
            "",
            "the first search covers the whole folder"
        );
        c.add(7, [3, 17, 5, 1000, 42, 17]);
        assert_eq!(c.range_key(7), "UID 1001:* ");
        assert_eq!(c.take_newest(2), vec![1000, 42]);
        // Newer mail found later comes first; `n:*` may repeat the known top: ignored.
        c.add(7, [1000, 1500, 1200]);
        assert_eq!(c.range_key(7), "UID 1501:* ");
        assert_eq!(c.take_newest(3), vec![1500, 1200, 17]);
        c.put_back(&[1200]);
        assert_eq!(c.take_newest(10), vec![1200, 5, 3]);
        assert!(c.take_newest(4).is_empty());
        // An empty folder still counts as searched.
        let mut e = Candidates::default();
        e.add(7, []);
        assert_eq!(e.range_key(7), "UID 1:* ");
        // Another UIDVALIDITY: everything known is void.
        c.add(8, [2]);
        assert_eq!(c.range_key(7), "");
        assert_eq!(c.range_key(8), "UID 3:* ");
        assert_eq!(c.take_newest(10), vec![2]);
        c.reset();
        assert_eq!(c.range_key(8), "");
        let mut top = Candidates::default();
        top.add(1, [u32::MAX]);
        assert_eq!(top.range_key(1), format!("UID {}:* ", u32::MAX));
    }

    #[test]
    fn age_decision_uses_the_servers_receipt_time() {
        let now = t0();
        let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let max = Some(Duration::from_secs(720));
        assert_eq!(age_of(Some(secs - 10), now, max), Age::Fresh);
        assert_eq!(age_of(Some(secs - 720), now, max), Age::Fresh);
        assert_eq!(age_of(Some(secs - 721), now, max), Age::TooOld(721));
        assert_eq!(age_of(Some(0), now, max), Age::TooOld(secs as u64));
        // A server clock ahead of ours is not a reason to drop mail.
        assert_eq!(age_of(Some(secs + 3600), now, max), Age::Fresh);
        assert!(matches!(age_of(Some(i64::MIN), now, max), Age::TooOld(_)));
        assert_eq!(age_of(None, now, max), Age::Unknown);
        // No window: nothing is too old, not even mail without a date.
        assert_eq!(age_of(Some(0), now, None), Age::Fresh);
        assert_eq!(age_of(None, now, None), Age::Fresh);
    }

    #[test]
    fn since_key_is_a_day_before_the_window() {
        // t0 is Tue, 24 Nov 2026 16:35:26 UTC.
        assert_eq!(
            since_key(t0(), Duration::from_secs(720)),
            "SINCE 23-Nov-2026"
        );
        assert_eq!(
            since_key(t0(), Duration::from_secs(3 * 86_400)),
            "SINCE 20-Nov-2026"
        );
        assert_eq!(
            since_key(UNIX_EPOCH, Duration::from_secs(720)),
            "SINCE 1-Jan-1970"
        );
        assert_eq!(uid_set(&[9, 7, 3]), "9,7,3");
    }

    #[test]
    fn one_messages_refusal_is_not_the_channels_trouble() {
        // (NO and BAD cannot be built outside the imap crate; the lab tests cover them.)
        assert!(matches!(
            one_message("h:993", "UID FETCH", 7, imap::Error::Parse(imap::error::ParseError::Invalid(b"*".to_vec()))),
            Ok(OneMessage::Garbled(m)) if m.contains("UID 7")
        ));
        assert!(matches!(
            one_message("h:993", "UID FETCH", 7, imap::Error::ConnectionLost),
            Err(MediatorError::Unreachable(_))
        ));
        // Everything else about the session is retried, never fatal.
        assert!(matches!(
            imap_err("h:993", "NOOP", imap::Error::ConnectionLost),
            MediatorError::Unreachable(_)
        ));
    }

    #[test]
    fn transient_refusals_are_told_from_wrong_settings() {
        assert!(transient_no(
            "[UNAVAILABLE] Temporary authentication failure."
        ));
        assert!(transient_no(" [inuse] Mailbox is locked"));
        assert!(transient_no("[SERVERBUG] Internal error occurred."));
        assert!(transient_no("[LIMIT] Too many connections"));
        assert!(!transient_no(
            "[AUTHENTICATIONFAILED] Authentication failed."
        ));
        assert!(!transient_no("[CONTACTADMIN] Account disabled"));
        assert!(!transient_no("[NONEXISTENT] Mailbox doesn't exist: nope"));
        assert!(!transient_no("Mailbox is [UNAVAILABLE]"));
        assert!(!transient_no(""));
    }

    #[test]
    fn settings_validation() {
        let ok = EmailSettings::new("h", "l", Secret::new("p"), ME, PEER);
        assert!(ok.validate().is_ok());
        let mut bad = ok.clone();
        bad.peer = "Alice <alice@lab.example>".into();
        assert!(matches!(bad.validate(), Err(MediatorError::Config(_))));
        let mut bad = ok.clone();
        bad.client_cert = Some("c.pem".into());
        assert!(matches!(bad.validate(), Err(MediatorError::Config(_))));
        let mut bad = ok.clone();
        bad.quarantine_folder = Some("a\"b".into());
        assert!(matches!(bad.validate(), Err(MediatorError::Config(_))));
        let mut bad = ok;
        bad.max_age = Some(Duration::ZERO);
        assert!(matches!(bad.validate(), Err(MediatorError::Config(_))));
    }
}
