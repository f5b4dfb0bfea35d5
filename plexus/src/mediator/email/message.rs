//! The mail itself, with no network: an S/MIME message carrying the core's sealed bytes
//! ([`wrap`]), and the checks a received one must pass ([`classify_headers`], [`unwrap`]).
//! Pure functions of bytes, so every one is fuzzed (`fuzz/`, target `email_unwrap`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use mailparse::MailHeaderMap;

use super::{PLEXUS_HEADER, SUBJECT};

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
pub(super) fn base64_decode(body: &[u8]) -> Result<Vec<u8>, String> {
    crate::base64::decode(body).map_err(|e| format!("the body {e}"))
}

pub(super) fn base64(data: &[u8]) -> String {
    crate::base64::encode(data)
}

pub(super) const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Tue, 24 Nov 2026 16:35:26 +0000` for a Unix time.
pub(super) fn rfc5322_date(unix: u64) -> String {
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
pub(crate) fn civil_date(days: u64) -> (i64, i64, i64) {
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
