use super::*;
use mailparse::MailHeaderMap;

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
    let mut s = EmailSettings::new("h", "l", Password::new("p"), ME, PEER);
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
    let s = EmailSettings::new("h", "l", Password::new("hunter2"), PEER, ME);
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
    let ok = EmailSettings::new("h", "l", Password::new("p"), ME, PEER);
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
