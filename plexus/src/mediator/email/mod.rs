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
use std::net::TcpStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imap::extensions::idle::WaitOutcome;
use log::{debug, info, warn};
use native_tls::TlsStream;

use super::{Incoming, Mediator, MediatorError, Outcome};
use crate::defaults;

pub mod refused;

mod connection;
mod message;

use connection::{chain, is_cert_failure, tcp_connect, tls_error, TlsMaterial};
pub(crate) use message::civil_date;
use message::MONTHS;
#[cfg(test)]
use message::{base64, base64_decode};
pub use message::{classify_headers, unwrap, valid_address, wrap, MailError, Unwrapped};
use refused::Refused;
pub use refused::{decode_refused_state, encode_refused_state, RefusedState, StateError};

/// Our own header; its presence (value `1`) marks plexus mail.
pub const PLEXUS_HEADER: &str = "X-Plexus";
/// The recognisable subject of plexus mail.
pub const SUBJECT: &str = "plexus rendezvous";
/// Default upper bound for one plexus mail (whole RFC 822 message).
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 256 * 1024;

/// The mail password: the crate's one secret type (its `Debug` never shows the value).
pub use crate::secret::{Password, SecretSource};

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
    pub fn new(
        host: &str,
        login: &str,
        password: Password,
        from: &str,
        peer: &str,
    ) -> EmailSettings {
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
    password: Password,
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
mod tests;
