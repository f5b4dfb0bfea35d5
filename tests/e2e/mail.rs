//! The e-mail mediator against the lab's real postfix + dovecot (tests/lab/mail.sh).
//!
//! Each test runs its clients inside a site host namespace (`b-full`, claimed so no loss
//! test disturbs it and so the mail tests, which share four mailboxes and restart
//! dovecot, run one at a time). Latencies are printed, never asserted.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use plexus::mediator::email::{EmailMediator, EmailSettings, Password, SecretSource, SmtpMode};
use plexus::mediator::{Mediator, MediatorError, Outcome};

use crate::lab::{Account, Lab, Mail};

/// How long a receiver waits before the send starts (to be in IDLE already).
const LEAD: Duration = Duration::from_millis(300);

/// The site whose host runs the mail clients.
const SITE: &str = "b-full";

pub(crate) type Session = imap::Session<native_tls::TlsStream<TcpStream>>;

fn account<'a>(mail: &'a Mail, user: &str) -> &'a Account {
    mail.accounts
        .iter()
        .find(|a| a.address.starts_with(&format!("{user}@")))
        .unwrap_or_else(|| panic!("lab mail has no account {user}"))
}

/// `me`'s mediator settings for the lab mail host: the shipped defaults (io timeout,
/// IDLE period), only the lab's ports and CA.
pub(crate) fn lab_settings(mail: &Mail, me: &Account, peer: &Account) -> EmailSettings {
    let mut s = EmailSettings::new(
        &mail.ip.to_string(),
        &me.login,
        Password::new(me.password.clone()),
        &me.address,
        &peer.address,
    );
    s.smtp_port = mail.smtps_port;
    s.imap_port = mail.imaps_port;
    s.ca_file = Some(mail.ca_file.clone());
    s
}

/// [`lab_settings`] with a shorter io timeout and fast polling, for the tests here.
fn settings(mail: &Mail, me: &Account, peer: &Account) -> EmailSettings {
    let mut s = lab_settings(mail, me, peer);
    s.io_timeout = Duration::from_secs(10);
    s.poll_interval = Duration::from_millis(500);
    s
}

/// An independent IMAP client (the "user's mail program") to plant and inspect mail.
pub(crate) fn user_session(mail: &Mail, who: &Account) -> Session {
    let ca = std::fs::read(&mail.ca_file).unwrap();
    let tls = native_tls::TlsConnector::builder()
        .add_root_certificate(native_tls::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let tcp = TcpStream::connect((mail.ip, mail.imaps_port)).expect("connect to lab IMAPS");
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let stream = tls
        .connect(&mail.ip.to_string(), tcp)
        .expect("TLS to lab IMAPS");
    let mut client = imap::Client::new(stream);
    client.read_greeting().unwrap();
    let mut s = client
        .login(&who.login, &who.password)
        .map_err(|(e, _)| e)
        .expect("user login");
    s.select("INBOX").unwrap();
    s
}

/// Empty the INBOX of a test account (each test starts from a known mailbox).
fn clear(s: &mut Session) {
    s.select("INBOX").unwrap();
    let all = s.uid_search("ALL").unwrap();
    if !all.is_empty() {
        s.uid_store("1:*", "+FLAGS.SILENT (\\Deleted)").unwrap();
        s.expunge().unwrap();
    }
}

/// (UID, sorted flags, size) of every message in `folder`, read without touching \Seen.
pub(crate) fn snapshot(s: &mut Session, folder: &str) -> Vec<(u32, Vec<String>, u32)> {
    s.select(folder).unwrap();
    if s.uid_search("ALL").unwrap().is_empty() {
        return Vec::new();
    }
    let fetches = s.uid_fetch("1:*", "(UID FLAGS RFC822.SIZE)").unwrap();
    let mut v: Vec<_> = fetches
        .iter()
        .map(|f| {
            let mut fl: Vec<String> = f
                .flags()
                .iter()
                .map(|x| format!("{x:?}"))
                .filter(|x| x != "Recent")
                .collect();
            fl.sort();
            (f.uid.unwrap(), fl, f.size.unwrap())
        })
        .collect();
    v.sort();
    v
}

pub(crate) fn append(s: &mut Session, raw: &str, flags: &[imap::types::Flag<'static>]) {
    let mut cmd = s.append("INBOX", raw.as_bytes());
    for f in flags {
        cmd.flag(f.clone());
    }
    cmd.finish().expect("APPEND");
}

pub(crate) fn plain_mail(from: &str, to: &str, subject: &str, extra: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <{subject}.{}@lab.example>\r\n{extra}\r\nhello, this is not for plexus\r\n",
        subject.len()
    )
}

/// Run the openssl CLI, panicking with its stderr on failure.
fn openssl(args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A DER PKCS#7 EnvelopedData made with the openssl CLI for a throwaway RSA recipient
/// (the sealed bytes the core would hand over), so a received mail can be decrypted
/// again with `openssl smime -decrypt`.
fn sealed_blob(dir: &Path, plaintext: &str) -> Vec<u8> {
    let (key, cert) = (dir.join("rcpt.key"), dir.join("rcpt.pem"));
    if !cert.exists() {
        openssl(&[
            "req".as_ref(),
            "-x509".as_ref(),
            "-newkey".as_ref(),
            "rsa:2048".as_ref(),
            "-nodes".as_ref(),
            "-days".as_ref(),
            "2".as_ref(),
            "-subj".as_ref(),
            "/CN=plexus test recipient".as_ref(),
            "-keyout".as_ref(),
            key.as_os_str(),
            "-out".as_ref(),
            cert.as_os_str(),
        ]);
    }
    let input = dir.join("plain.txt");
    let out = dir.join("sealed.der");
    std::fs::write(&input, plaintext).unwrap();
    openssl(&[
        "smime".as_ref(),
        "-encrypt".as_ref(),
        "-binary".as_ref(),
        "-aes256".as_ref(),
        "-outform".as_ref(),
        "DER".as_ref(),
        "-in".as_ref(),
        input.as_os_str(),
        "-out".as_ref(),
        out.as_os_str(),
        cert.as_os_str(),
    ]);
    std::fs::read(&out).unwrap()
}

/// `openssl smime -decrypt` on a whole saved mail; returns the plaintext.
fn openssl_decrypt(dir: &Path, mail: &[u8]) -> String {
    let eml = dir.join("received.eml");
    std::fs::write(&eml, mail).unwrap();
    let out = openssl(&[
        "smime".as_ref(),
        "-decrypt".as_ref(),
        "-in".as_ref(),
        eml.as_os_str(),
        "-inkey".as_ref(),
        dir.join("rcpt.key").as_os_str(),
        "-recip".as_ref(),
        dir.join("rcpt.pem").as_os_str(),
    ]);
    String::from_utf8(out).unwrap()
}

/// Send `sealed` from `sender` and measure until `receiver` returns it (receive is
/// already waiting, in IDLE or polling, when the send starts).
fn send_and_receive(
    sender: &mut EmailMediator,
    to: &str,
    receiver: EmailMediator,
    sealed: &[u8],
    lead: Duration,
) -> (
    EmailMediator,
    plexus::mediator::Incoming,
    Duration,
    Duration,
) {
    std::thread::scope(|sc| {
        let waiter = sc.spawn(move || {
            let mut r = receiver;
            let got = r.receive(Duration::from_secs(30));
            (r, got, Instant::now())
        });
        // Let the receiver reach its wait (IDLE or sleep) first; not an assertion.
        std::thread::sleep(lead);
        let t0 = Instant::now();
        sender
            .send(to, sealed)
            .expect("send through the lab postfix");
        let sent = t0.elapsed();
        let (r, got, t1) = waiter.join().unwrap();
        let msg = got
            .expect("receive failed")
            .expect("no plexus mail arrived within 30 s");
        (r, msg, sent, t1 - t0)
    })
}

fn with_mail<R: Send>(f: impl FnOnce(&Lab, &Mail, &str) -> R + Send) -> Option<R> {
    let lab = crate::lab::lab()?;
    let mail = lab.mail();
    let _claim = lab.claim(&[SITE]);
    let ns = lab.site(SITE).host_netns.clone();
    Some(lab.in_ns(&ns, || f(lab, mail, &ns)))
}

#[test]
fn mail_invite_delivered_through_idle_465_and_587_and_opens_with_openssl() {
    with_mail(|lab, mail, _| {
        let dir = lab.scratch("mail_idle");
        let (alice, bob) = (account(mail, "alice"), account(mail, "bob"));
        let mut user = user_session(mail, bob);
        clear(&mut user);
        let plaintext = "plexus invite test: 198.51.100.7:40000";
        let sealed = sealed_blob(&dir, plaintext);

        for mode in [SmtpMode::ImplicitTls, SmtpMode::StartTls] {
            let mut s = settings(mail, alice, bob);
            s.smtp_mode = mode;
            s.smtp_port = match mode {
                SmtpMode::ImplicitTls => mail.smtps_port,
                SmtpMode::StartTls => mail.submission_port,
            };
            let mut sender = EmailMediator::connect(s).expect("alice connects");
            let receiver =
                EmailMediator::connect(settings(mail, bob, alice)).expect("bob connects");
            assert!(receiver.uses_idle(), "dovecot offers IDLE and it is used");
            let (mut receiver, msg, sent, total) =
                send_and_receive(&mut sender, &bob.address, receiver, &sealed, LEAD);
            println!(
                "mail latency ({mode:?}, IDLE): send {:.0} ms, send-to-receipt {:.0} ms",
                sent.as_secs_f64() * 1e3,
                total.as_secs_f64() * 1e3
            );
            assert_eq!(msg.sealed, sealed);
            assert_eq!(msg.from, alice.address);

            // The stored mail is a standard S/MIME message: openssl decrypts it as is.
            let uid: u32 = msg.id.split(':').nth(1).unwrap().parse().unwrap();
            user.select("INBOX").unwrap();
            let f = user.uid_fetch(uid.to_string(), "BODY.PEEK[]").unwrap();
            let raw = f.iter().next().and_then(|f| f.body()).unwrap().to_vec();
            drop(f);
            assert_eq!(openssl_decrypt(&dir, &raw), plaintext);
            // Fetched with PEEK by the mediator: still unseen before the acknowledgement.
            let before = snapshot(&mut user, "INBOX");
            assert_eq!(before.len(), 1);
            assert!(before[0].1.is_empty(), "flags changed: {:?}", before[0].1);

            receiver.acknowledge(&msg.id, Outcome::Handled).unwrap();
            assert!(
                snapshot(&mut user, "INBOX").is_empty(),
                "handled mail was not removed"
            );
            assert!(
                receiver.acknowledge(&msg.id, Outcome::Handled).is_err(),
                "a second acknowledgement of the same id is refused"
            );
        }
    });
}

#[test]
fn mail_mailbox_with_other_mail_is_left_exactly_as_it_was() {
    with_mail(|lab, mail, _| {
        let dir = lab.scratch("mail_hygiene");
        let (carol, dave, alice) = (
            account(mail, "carol"),
            account(mail, "dave"),
            account(mail, "alice"),
        );
        let mut user = user_session(mail, carol);
        clear(&mut user);
        let _ = user.delete("plexus-quarantine");
        use imap::types::Flag;
        let to = &carol.address;
        append(
            &mut user,
            &plain_mail(&dave.address, to, "read-mail", ""),
            &[Flag::Seen],
        );
        append(
            &mut user,
            &plain_mail(&dave.address, to, "unread-mail", ""),
            &[],
        );
        append(
            &mut user,
            &plain_mail("x@lab.example", to, "marked-for-deletion-by-the-user", ""),
            &[Flag::Deleted, Flag::Flagged],
        );
        // Our header but not from the peer; from the peer but without our header.
        append(
            &mut user,
            &plain_mail(&alice.address, to, "plexus rendezvous", "X-Plexus: 1\r\n"),
            &[],
        );
        append(
            &mut user,
            &plain_mail(&dave.address, to, "plexus rendezvous", ""),
            &[],
        );
        // From the peer with our header: too big, and not S/MIME.
        let big = format!(
            "{}{}",
            plain_mail(&dave.address, to, "plexus rendezvous", "X-Plexus: 1\r\n"),
            "A".repeat(300 * 1024)
        );
        append(&mut user, &big, &[]);
        append(
            &mut user,
            &plain_mail(&dave.address, to, "plexus rendezvous", "X-Plexus: 1\r\n"),
            &[],
        );
        let before = snapshot(&mut user, "INBOX");
        assert_eq!(before.len(), 7);

        let sealed = sealed_blob(&dir, "hygiene");
        let mut sender = EmailMediator::connect(settings(mail, dave, carol)).unwrap();
        let receiver = EmailMediator::connect(settings(mail, carol, dave)).unwrap();
        let (mut receiver, msg, _, _) = send_and_receive(&mut sender, to, receiver, &sealed, LEAD);
        assert_eq!(msg.sealed, sealed);
        receiver.acknowledge(&msg.id, Outcome::Handled).unwrap();
        // Nothing else is offered: the rest is not plexus mail from the peer, too big,
        // or unusable.
        assert!(receiver.receive(Duration::from_secs(1)).unwrap().is_none());
        let after = snapshot(&mut user, "INBOX");
        assert_eq!(before, after, "the mailbox changed");

        // A rejected message stays in place, unseen, and is not offered again...
        sender.send(to, &sealed).unwrap();
        let msg = receiver
            .receive(Duration::from_secs(20))
            .unwrap()
            .expect("second mail");
        receiver.acknowledge(&msg.id, Outcome::Rejected).unwrap();
        assert!(receiver.receive(Duration::from_secs(1)).unwrap().is_none());
        let with_rejected = snapshot(&mut user, "INBOX");
        assert_eq!(with_rejected.len(), before.len() + 1);
        assert!(with_rejected.last().unwrap().1.is_empty());
        drop(receiver);
        // ...unless a quarantine folder is configured: then only it moves there.
        let mut qs = settings(mail, carol, dave);
        qs.quarantine_folder = Some("plexus-quarantine".into());
        let mut q = EmailMediator::connect(qs).unwrap();
        let again = q
            .receive(Duration::from_secs(10))
            .unwrap()
            .expect("offered again");
        assert_eq!(again.sealed, sealed);
        q.acknowledge(&again.id, Outcome::Rejected).unwrap();
        // The quarantining mediator also moves the plexus mail from the peer that is not
        // S/MIME (it fails to open) when it comes to it (newest first, so on the next
        // look); everything else stays exactly as it was.
        assert!(q.receive(Duration::from_secs(1)).unwrap().is_none());
        let not_smime = before.last().unwrap().clone();
        let mut expected = before.clone();
        expected.pop();
        assert_eq!(
            snapshot(&mut user, "INBOX"),
            expected,
            "only unusable plexus mail moved"
        );
        let quarantined = snapshot(&mut user, "plexus-quarantine");
        assert_eq!(quarantined.len(), 2, "{quarantined:?}");
        assert!(quarantined.iter().any(|m| m.2 == not_smime.2));
        assert!(
            quarantined.iter().all(|m| m.1.is_empty()),
            "flags changed: {quarantined:?}"
        );
        user.select("INBOX").unwrap();
    });
}

#[test]
fn mail_imap_server_restart_while_waiting_is_survived() {
    with_mail(|lab, mail, _| {
        let dir = lab.scratch("mail_restart");
        let (alice, bob) = (account(mail, "alice"), account(mail, "bob"));
        let mut user = user_session(mail, alice);
        clear(&mut user);
        drop(user);
        let sealed = sealed_blob(&dir, "restart");
        let receiver = EmailMediator::connect(settings(mail, alice, bob)).unwrap();
        let mut sender = EmailMediator::connect(settings(mail, bob, alice)).unwrap();
        let mail_sh = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lab/mail.sh");
        let state = lab.state_dir.join("mail");
        let (mut receiver, got, restarted) = std::thread::scope(|sc| {
            let waiter = sc.spawn(move || {
                let mut r = receiver;
                let got = r.receive(Duration::from_secs(60));
                (r, got)
            });
            std::thread::sleep(Duration::from_millis(500));
            let t = Instant::now();
            let out = Command::new(&mail_sh)
                .arg("restart-imap")
                .arg(&state)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "mail.sh restart-imap: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let restarted = t.elapsed();
            sender.send(&alice.address, &sealed).unwrap();
            let (r, got) = waiter.join().unwrap();
            (r, got, restarted)
        });
        println!("dovecot restarted in {restarted:?} while plexus waited");
        let msg = got
            .expect("receive across the restart")
            .expect("mail after restart");
        assert_eq!(msg.sealed, sealed);
        receiver.acknowledge(&msg.id, Outcome::Handled).unwrap();
    });
}

#[test]
fn mail_wrong_password_and_missing_ca_are_clear_errors() {
    with_mail(|_, mail, _| {
        let (dave, alice) = (account(mail, "dave"), account(mail, "alice"));
        let mut s = settings(mail, dave, alice);
        s.password = SecretSource::Plain(Password::new("not-the-password"));
        match EmailMediator::connect(s) {
            Err(MediatorError::Auth(m)) => {
                println!("wrong password: {m}");
                assert!(m.contains(&dave.login), "names the account: {m}");
                assert!(
                    m.contains(&format!("{}:{}", mail.ip, mail.imaps_port)),
                    "{m}"
                );
            }
            other => panic!("expected MediatorError::Auth, got {other:?}"),
        }
        // The same through SMTP submission (sender-only mediator, no IMAP session).
        for (mode, port) in [
            (SmtpMode::ImplicitTls, mail.smtps_port),
            (SmtpMode::StartTls, mail.submission_port),
        ] {
            let mut s = settings(mail, dave, alice);
            s.password = SecretSource::Plain(Password::new("not-the-password"));
            s.smtp_mode = mode;
            s.smtp_port = port;
            let mut m = EmailMediator::new(s).unwrap();
            match m.send(&alice.address, b"\x30\x03\x02\x01\x00") {
                Err(MediatorError::Auth(m)) => {
                    println!("wrong password ({mode:?}): {m}");
                    assert!(m.contains(&dave.login), "names the account: {m}");
                    assert!(m.contains(&format!("{}:{port}", mail.ip)), "{m}");
                }
                other => panic!("expected MediatorError::Auth from SMTP, got {other:?}"),
            }
        }
        let mut s = settings(mail, dave, alice);
        s.ca_file = None;
        match EmailMediator::connect(s) {
            Err(MediatorError::Config(m)) => {
                println!("no CA: {m}");
                assert!(m.contains("ca_file"), "says to pass the CA file: {m}");
            }
            other => panic!("expected MediatorError::Config about the CA, got {other:?}"),
        }
        let mut s = settings(mail, dave, alice);
        s.ca_file = None;
        match EmailMediator::new(s)
            .unwrap()
            .send(&alice.address, b"\x30\x00")
        {
            Err(MediatorError::Config(m)) => {
                println!("no CA (SMTP): {m}");
                assert!(m.contains("ca_file"), "says to pass the CA file: {m}");
            }
            other => panic!("expected MediatorError::Config about the CA, got {other:?}"),
        }
        let mut s = settings(mail, dave, alice);
        s.imap_port = 9;
        match EmailMediator::connect(s) {
            Err(MediatorError::Unreachable(m)) => assert!(m.contains(":9"), "names host:port: {m}"),
            other => panic!("expected MediatorError::Unreachable, got {other:?}"),
        }
    });
}

/// Benchmark-style figures: send-to-receipt with IDLE and with 500 ms polling.
#[test]
fn mail_latency_idle_vs_polling() {
    with_mail(|lab, mail, _| {
        let dir = lab.scratch("mail_latency");
        let (alice, dave) = (account(mail, "alice"), account(mail, "dave"));
        let mut user = user_session(mail, dave);
        clear(&mut user);
        let sealed = sealed_blob(&dir, "latency");
        let mut sender = EmailMediator::connect(settings(mail, alice, dave)).unwrap();
        for use_idle in [true, false] {
            let mut s = settings(mail, dave, alice);
            s.use_idle = use_idle;
            let mut receiver = EmailMediator::connect(s).unwrap();
            let mut figures = Vec::new();
            for i in 0..6u64 {
                // Vary the phase against the polling period, or every round measures the same.
                let lead = Duration::from_millis(300 + 83 * i);
                let (r, msg, _, total) =
                    send_and_receive(&mut sender, &dave.address, receiver, &sealed, lead);
                receiver = r;
                assert_eq!(msg.sealed, sealed);
                receiver.acknowledge(&msg.id, Outcome::Handled).unwrap();
                figures.push(total.as_secs_f64() * 1e3);
            }
            let mean = figures.iter().sum::<f64>() / figures.len() as f64;
            let max = figures.iter().cloned().fold(0.0, f64::max);
            let min = figures.iter().cloned().fold(f64::MAX, f64::min);
            println!(
                "mail send-to-receipt ({}): mean {mean:.0} ms, min {min:.0} ms, max {max:.0} ms over {} mails",
                if use_idle { "IDLE" } else { "polling every 500 ms" },
                figures.len()
            );
        }
        assert!(snapshot(&mut user, "INBOX").is_empty());
    });
}

/// Mail through a link that drops 20 % of all packets (TCP included) each way: every
/// invite still arrives and is acknowledged. The mediator must not sit in a stalled
/// IDLE or SMTP session; send-to-receipt figures are printed.
#[test]
fn mail_survives_twenty_percent_loss_on_the_clients_link() {
    const SITE_LOSSY: &str = "c-port";
    const MAILS: usize = 6;
    let Some(lab) = crate::lab::lab() else {
        return;
    };
    let mail = lab.mail();
    let _claim = lab.claim(&[SITE_LOSSY]);
    let (a, b) = (
        crate::corridor::take_mailbox(lab),
        crate::corridor::take_mailbox(lab),
    );
    let dir = lab.scratch("mail_loss");
    let sealed = sealed_blob(&dir, "lossy");
    lab.set_loss(SITE_LOSSY, 20);
    let ns = lab.site(SITE_LOSSY).host_netns.clone();
    let figures = lab.in_ns(&ns, || {
        let mut sender = EmailMediator::new(lab_settings(mail, &a, &b)).unwrap();
        let mut receiver = EmailMediator::new(lab_settings(mail, &b, &a)).unwrap();
        let mut figures = Vec::new();
        for i in 0..MAILS {
            let t0 = Instant::now();
            let (r, got) = std::thread::scope(|sc| {
                let waiter = sc.spawn(|| {
                    let got = receiver.receive(Duration::from_secs(120));
                    (Instant::now(), got)
                });
                // Like the session: a transport failure is retried a bounded number of times.
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    match sender.send(&b.address, &sealed) {
                        Ok(()) => break,
                        Err(MediatorError::Unreachable(e)) if attempts < 3 => {
                            println!("mail {i}: send attempt {attempts} failed: {e}")
                        }
                        Err(e) => panic!("mail {i}: send failed: {e}"),
                    }
                }
                waiter.join().unwrap()
            });
            let msg = got
                .unwrap_or_else(|e| panic!("mail {i}: receive failed: {e}"))
                .unwrap_or_else(|| panic!("mail {i}: nothing arrived within 120 s"));
            assert_eq!(msg.sealed, sealed);
            receiver
                .acknowledge(&msg.id, Outcome::Handled)
                .unwrap_or_else(|e| panic!("mail {i}: acknowledge failed: {e}"));
            figures.push((r - t0).as_secs_f64() * 1e3);
        }
        figures
    });
    lab.set_loss(SITE_LOSSY, 0);
    let mut sorted = figures.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "mail send-to-receipt under 20 % loss: median {:.0} ms, max {:.0} ms over {MAILS} mails ({:?})",
        sorted[MAILS / 2],
        sorted[MAILS - 1],
        figures.iter().map(|f| f.round() as u64).collect::<Vec<_>>()
    );
}

/// `wrap`ped plexus mail carrying `sealed` from `from` to `to`, as a string for [`append`].
fn plexus_mail(from: &str, to: &str, sealed: &[u8]) -> Vec<u8> {
    plexus::mediator::email::wrap(from, to, sealed, std::time::SystemTime::now()).unwrap()
}

/// RFC 3339 for a Unix time (the form the IMAP client takes an INTERNALDATE in).
fn rfc3339(unix: u64) -> String {
    let (days, rem) = (unix / 86_400, unix % 86_400);
    let (y, m, d) = plexus::testing::civil_date(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// APPEND raw mail to the INBOX, with the server's receipt time set `age` in the past.
fn append_received(s: &mut Session, raw: &[u8], age: Option<Duration>) {
    let mut cmd = s.append("INBOX", raw);
    if let Some(age) = age {
        let at = std::time::SystemTime::now() - age;
        let unix = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        cmd.internal_date(rfc3339(unix).parse().expect("RFC 3339 date"));
    }
    cmd.finish().expect("APPEND");
}

/// A TLS relay in front of the lab's dovecot that answers NO to the commands it is told to
/// refuse (dovecot never refuses a STORE or EXPUNGE in a selected folder). It listens on
/// the mail host's address, so the server certificate still matches.
struct RefusingProxy {
    port: u16,
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RefusingProxy {
    fn start(mail: &Mail, refuse: &'static [&'static str]) -> RefusingProxy {
        use std::os::fd::AsRawFd;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let refused = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs/lab");
        let identity = native_tls::Identity::from_pkcs8(
            &std::fs::read(certs.join("mail.pem")).unwrap(),
            &std::fs::read(certs.join("mail.key")).unwrap(),
        )
        .unwrap();
        let acceptor = native_tls::TlsAcceptor::new(identity).unwrap();
        let connector = native_tls::TlsConnector::builder()
            .add_root_certificate(
                native_tls::Certificate::from_pem(&std::fs::read(&mail.ca_file).unwrap()).unwrap(),
            )
            .build()
            .unwrap();
        let netns = std::fs::File::open(Path::new("/run/netns").join(&mail.netns)).unwrap();
        let (ip, imaps) = (mail.ip, mail.imaps_port);
        let (tx, rx) = std::sync::mpsc::channel();
        let (refused2, stop2) = (refused.clone(), stop.clone());
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only; the fd is valid for the call.
            assert_eq!(
                unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let l = std::net::TcpListener::bind((ip, 0)).unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            while !stop2.load(Ordering::Relaxed) {
                let (c, _) = match l.accept() {
                    Ok(c) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                c.set_nonblocking(false).unwrap();
                let up = TcpStream::connect((ip, imaps)).unwrap();
                let (acceptor, connector) = (acceptor.clone(), connector.clone());
                let (refused, stop) = (refused2.clone(), stop2.clone());
                std::thread::spawn(move || {
                    relay(c, up, &acceptor, &connector, ip, refuse, &refused, &stop)
                });
            }
        });
        RefusingProxy {
            port: rx.recv().unwrap(),
            refused,
            stop,
        }
    }

    fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RefusingProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Relay one client line by line; a command starting with one of `refuse` (after its tag)
/// gets `NO` and never reaches the server.
#[allow(clippy::too_many_arguments)]
fn relay(
    c: TcpStream,
    up: TcpStream,
    acceptor: &native_tls::TlsAcceptor,
    connector: &native_tls::TlsConnector,
    ip: std::net::Ipv4Addr,
    refuse: &[&str],
    refused: &std::sync::atomic::AtomicUsize,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::io::{ErrorKind, Read, Write};
    use std::sync::atomic::Ordering;
    let (c_raw, up_raw) = (c.try_clone().unwrap(), up.try_clone().unwrap());
    let Ok(mut client) = acceptor.accept(c) else {
        return;
    };
    let Ok(mut server) = connector.connect(&ip.to_string(), up) else {
        return;
    };
    // Short read timeouts: one thread takes turns at both directions.
    for t in [&c_raw, &up_raw] {
        t.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    }
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let idle = |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    while !stop.load(Ordering::Relaxed) {
        match client.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
                    let line: Vec<u8> = pending.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&line);
                    let (tag, rest) = text.split_once(' ').unwrap_or((&text, ""));
                    let upper = rest.to_ascii_uppercase();
                    if refuse.iter().any(|r| upper.starts_with(r)) {
                        refused.fetch_add(1, Ordering::Relaxed);
                        let no = format!("{tag} NO [CANNOT] refused by the test proxy\r\n");
                        if client.write_all(no.as_bytes()).is_err() {
                            return;
                        }
                    } else if server.write_all(&line).is_err() {
                        return;
                    }
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => return,
        }
        match server.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if client.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => return,
        }
    }
}

/// Defect: a NO to the quarantine MOVE ended `receive` and `acknowledge` (and with them
/// `plexus accept`). Now the message is set aside and later mail still arrives.
#[test]
fn mail_refused_quarantine_move_sets_the_message_aside() {
    with_mail(|lab, mail, _| {
        let (peer, me) = (
            crate::corridor::take_mailbox(lab),
            crate::corridor::take_mailbox(lab),
        );
        let mut user = user_session(mail, &me);
        clear(&mut user);
        append_received(
            &mut user,
            &plexus_mail(&peer.address, &me.address, b"first"),
            None,
        );
        // Newer: plexus mail from the peer that is not S/MIME, so it goes to quarantine.
        append(
            &mut user,
            &plain_mail(
                &peer.address,
                &me.address,
                "plexus rendezvous",
                "X-Plexus: 1\r\n",
            ),
            &[],
        );
        let mut s = settings(mail, &me, &peer);
        // Dovecot refuses this name ('/' is not allowed in its maildir names): every MOVE
        // to it is answered NO.
        s.quarantine_folder = Some("plexus/quarantine".into());
        let mut m = EmailMediator::connect(s).unwrap();
        let first = m
            .receive(Duration::from_secs(10))
            .expect("a refused quarantine move does not fail receive")
            .expect("the first mail");
        assert_eq!(first.sealed, b"first");
        m.acknowledge(&first.id, Outcome::Rejected)
            .expect("a refused quarantine move does not fail acknowledge");
        append_received(
            &mut user,
            &plexus_mail(&peer.address, &me.address, b"second"),
            None,
        );
        let second = m
            .receive(Duration::from_secs(10))
            .unwrap()
            .expect("mail after the refused moves");
        assert_eq!(
            second.sealed, b"second",
            "set-aside mail is not offered again"
        );
        m.acknowledge(&second.id, Outcome::Handled).unwrap();
        assert!(m.receive(Duration::from_secs(1)).unwrap().is_none());
        // Both refused messages stay where they were, untouched.
        let left = snapshot(&mut user, "INBOX");
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(
            left.iter().all(|m| m.1.is_empty()),
            "flags changed: {left:?}"
        );
    });
}

/// Defect: a NO to STORE, EXPUNGE or the MOVE to the done folder when a handled message is
/// acknowledged ended `plexus accept`. Now it is logged, the message set aside, `Ok`.
#[test]
fn mail_refused_store_expunge_or_move_on_acknowledge_is_not_an_error() {
    with_mail(|lab, mail, _| {
        let (peer, me) = (
            crate::corridor::take_mailbox(lab),
            crate::corridor::take_mailbox(lab),
        );
        let mut user = user_session(mail, &me);
        let cases: [(&[&str], Option<&str>); 3] = [
            (&["UID STORE"], None),
            (&["UID EXPUNGE"], None),
            (&["UID MOVE", "UID COPY"], Some("plexus-done")),
        ];
        for (refuse, done_folder) in cases {
            clear(&mut user);
            let proxy = RefusingProxy::start(mail, refuse);
            let mut s = settings(mail, &me, &peer);
            s.imap_port = proxy.port;
            s.done_folder = done_folder.map(str::to_string);
            let mut m = EmailMediator::connect(s).unwrap();
            for round in ["one", "two"] {
                let sealed = format!("{refuse:?} {round}").into_bytes();
                append_received(
                    &mut user,
                    &plexus_mail(&peer.address, &me.address, &sealed),
                    None,
                );
                let msg = m
                    .receive(Duration::from_secs(10))
                    .unwrap()
                    .unwrap_or_else(|| panic!("{refuse:?}: no mail in round {round}"));
                // The one of round one was set aside: round two gets the new one.
                assert_eq!(msg.sealed, sealed);
                m.acknowledge(&msg.id, Outcome::Handled)
                    .unwrap_or_else(|e| panic!("{refuse:?} refused: acknowledge failed: {e}"));
            }
            assert!(
                proxy.refused() >= 2,
                "{refuse:?}: the proxy refused nothing"
            );
            assert!(m.receive(Duration::from_secs(1)).unwrap().is_none());
            let left = snapshot(&mut user, "INBOX");
            assert_eq!(left.len(), 2, "{refuse:?}: {left:?}");
            println!(
                "{refuse:?} refused {} times: acknowledge Ok, messages left as {left:?}",
                proxy.refused()
            );
        }
        // Without the proxy: the handled message is expunged by another client between
        // receive and acknowledge.
        clear(&mut user);
        let mut s = settings(mail, &me, &peer);
        s.done_folder = Some("plexus-done".into());
        let mut m = EmailMediator::connect(s).unwrap();
        append_received(
            &mut user,
            &plexus_mail(&peer.address, &me.address, b"gone"),
            None,
        );
        let msg = m.receive(Duration::from_secs(10)).unwrap().unwrap();
        clear(&mut user);
        m.acknowledge(&msg.id, Outcome::Handled)
            .expect("acknowledging mail another client expunged is not an error");
    });
}

/// Forged plexus mails in one flood test: the acceptor's mailbox, as anyone who can send
/// mail could fill it.
const FORGED: usize = 2000;
/// Forged mails the server received an hour ago (past `max_age`, same or previous day).
const OLD_HOUR: usize = 300;
/// Forged mails the server received three days ago (outside the `SINCE` search).
const OLD_DAYS: usize = 100;
/// The acceptor's `max_age`: the CLI's default replay window plus the clock skew.
const MAX_AGE: Duration = Duration::from_secs(600 + 120);

/// Sealed-looking forged bytes: DER SEQUENCE header, then noise, ~2 KB like an invite.
fn forged(i: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut v = vec![0x30, 0x82, 0x07, 0xc0];
    v.extend((0..1984).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 24) as u8
    }));
    v
}

/// What one acceptor run in a child process saw (see [`flood_runner_child`]).
#[derive(Debug, Default)]
struct FloodRun {
    /// Sealed payloads of the genuine mails in the order they were handed over.
    genuine: Vec<String>,
    /// Milliseconds from start (before connecting) to each genuine mail.
    genuine_ms: Vec<u64>,
    /// Order (0-based) in which each genuine mail was handed over among all mails.
    genuine_pos: Vec<usize>,
    forged: usize,
    old: usize,
    /// Milliseconds from start to the last mail handed over.
    last_ms: u64,
    vm_hwm_kb: u64,
}

/// Run an acceptor's mediator over the flooded mailbox in a child process (so its peak
/// RSS is its own): everything it hands over goes to a stand-in core that takes mail
/// whose payload starts with `GENUINE` and rejects the rest.
fn flood_run(lab: &Lab, me: &Account, peer: &Account, state: &Path) -> FloodRun {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "mail::flood_runner_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PLEXUS_LAB", &lab.name)
        .env(
            "PLEXUS_FLOOD_RUNNER",
            format!("{}|{}|{}", me.address, peer.address, state.display()),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "flood runner failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("FLOOD ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no FLOOD line from the runner: {stdout}"));
    let mut r = FloodRun::default();
    for kv in line.split_whitespace() {
        let (k, v) = kv.split_once('=').unwrap();
        match k {
            "genuine" => r.genuine.push(v.to_string()),
            "genuine_ms" => r.genuine_ms.push(v.parse().unwrap()),
            "genuine_pos" => r.genuine_pos.push(v.parse().unwrap()),
            "forged" => r.forged = v.parse().unwrap(),
            "old" => r.old = v.parse().unwrap(),
            "last_ms" => r.last_ms = v.parse().unwrap(),
            "vm_hwm_kb" => r.vm_hwm_kb = v.parse().unwrap(),
            _ => panic!("unknown key {k}"),
        }
    }
    r
}

/// The child side of [`flood_run`]; does nothing unless started by it.
#[test]
fn flood_runner_child() {
    let Ok(spec) = std::env::var("PLEXUS_FLOOD_RUNNER") else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let (me, peer, state) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let lab = crate::lab::lab().expect("the parent's lab");
    let mail = lab.mail();
    let find = |a: &str| mail.accounts.iter().find(|x| x.address == a).unwrap();
    let mut s = lab_settings(mail, find(me), find(peer));
    s.max_age = Some(MAX_AGE);
    s.refused_state = Some(state.into());
    let t0 = Instant::now();
    let mut m = EmailMediator::connect(s).unwrap();
    let mut line = String::from("FLOOD");
    let (mut n, mut forged, mut old, mut last) = (0usize, 0usize, 0usize, 0u64);
    while let Some(msg) = m.receive(Duration::from_secs(3)).unwrap() {
        let ms = t0.elapsed().as_millis() as u64;
        if msg.sealed.starts_with(b"GENUINE") {
            let text = String::from_utf8_lossy(&msg.sealed).replace(' ', "_");
            line.push_str(&format!(" genuine={text} genuine_ms={ms} genuine_pos={n}"));
            m.acknowledge(&msg.id, Outcome::Handled).unwrap();
        } else {
            if msg.sealed.starts_with(b"OLD") {
                old += 1;
            } else {
                forged += 1;
            }
            m.acknowledge(&msg.id, Outcome::Rejected).unwrap();
        }
        n += 1;
        last = ms;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    println!("{line} forged={forged} old={old} last_ms={last} vm_hwm_kb={hwm}");
}

/// Defect 8: anyone who can send mail could make an acceptor work through every forged
/// plexus mail, oldest first, again after each restart. Now the newest is handled first,
/// mail older than `max_age` is never opened, and refused UIDs are remembered.
#[test]
fn mail_flood_is_handled_newest_first_and_remembered_across_restarts() {
    with_mail(|lab, mail, _| {
        let dir = lab.scratch("mail_flood");
        let (peer, me) = (
            crate::corridor::take_mailbox(lab),
            crate::corridor::take_mailbox(lab),
        );
        let mut user = user_session(mail, &me);
        clear(&mut user);
        let (from, to) = (&peer.address, &me.address);
        let t = Instant::now();
        for i in 0..OLD_DAYS {
            let raw = plexus_mail(from, to, format!("OLD days {i}").as_bytes());
            append_received(&mut user, &raw, Some(Duration::from_secs(3 * 86_400)));
        }
        for i in 0..OLD_HOUR {
            let raw = plexus_mail(from, to, format!("OLD hour {i}").as_bytes());
            append_received(&mut user, &raw, Some(Duration::from_secs(3600)));
        }
        // A genuine invite that arrived before the flood, then the flood, then another.
        append_received(&mut user, &plexus_mail(from, to, b"GENUINE before"), None);
        for i in 0..FORGED {
            append_received(&mut user, &plexus_mail(from, to, &forged(i)), None);
        }
        append_received(&mut user, &plexus_mail(from, to, b"GENUINE newest"), None);
        println!(
            "flood: {} mails appended in {:.1} s",
            OLD_DAYS + OLD_HOUR + FORGED + 2,
            t.elapsed().as_secs_f64()
        );
        let state = dir.join("state").join("refused-uids");

        let first = flood_run(lab, &me, &peer, &state);
        println!("flood, first run: {first:?}");
        assert_eq!(first.genuine, ["GENUINE_newest", "GENUINE_before"]);
        assert_eq!(first.genuine_pos[0], 0, "the newest mail is handled first");
        assert_eq!(
            first.forged, FORGED,
            "every fresh forged mail reaches the core once"
        );
        assert_eq!(first.old, 0, "mail older than max_age is never opened");

        // The acceptor restarts; meanwhile one more genuine invite arrived.
        append_received(
            &mut user,
            &plexus_mail(from, to, b"GENUINE after restart"),
            None,
        );
        let second = flood_run(lab, &me, &peer, &state);
        println!("flood, after restart: {second:?}");
        assert_eq!(second.genuine, ["GENUINE_after_restart"]);
        assert_eq!(
            (second.forged, second.old),
            (0, 0),
            "refused mail is not handed out again after a restart"
        );
        println!(
            "flood figures ({FORGED} forged + {} old mails): genuine newest received {} ms after start \
             (first run), genuine under {FORGED} newer forged ones {} ms, all handled {} ms, peak RSS {} KiB; \
             after restart: genuine received {} ms after start, peak RSS {} KiB",
            OLD_HOUR + OLD_DAYS,
            first.genuine_ms[0],
            first.genuine_ms[1],
            first.last_ms,
            first.vm_hwm_kb,
            second.genuine_ms[0],
            second.vm_hwm_kb
        );
        // Nothing in the mailbox changed but the genuine mails being removed.
        let left = snapshot(&mut user, "INBOX");
        assert_eq!(left.len(), OLD_DAYS + OLD_HOUR + FORGED);
        assert!(left.iter().all(|m| m.1.is_empty()), "flags changed");
    });
}

/// Defect 8: headers were fetched whole. Now at most 64 KiB are fetched and a plexus mail
/// whose header is longer is never opened (its body would unwrap fine).
#[test]
fn mail_header_over_the_cap_is_never_opened() {
    with_mail(|lab, mail, _| {
        let (peer, me) = (
            crate::corridor::take_mailbox(lab),
            crate::corridor::take_mailbox(lab),
        );
        let mut user = user_session(mail, &me);
        clear(&mut user);
        let genuine = plexus_mail(&peer.address, &me.address, b"GENUINE under a big one");
        append_received(&mut user, &genuine, None);
        // Newer: the same kind of mail with 70 KB of extra header lines after ours.
        let text = String::from_utf8(plexus_mail(&peer.address, &me.address, b"HUGE")).unwrap();
        let filler: String = (0..1000)
            .map(|i| format!("X-Filler-{i:04}: {}\r\n", "f".repeat(56)))
            .collect();
        let huge = text.replacen("MIME-Version:", &format!("{filler}MIME-Version:"), 1);
        assert!(huge.find("\r\n\r\n").unwrap() > 70_000);
        append_received(&mut user, huge.as_bytes(), None);
        let mut m = EmailMediator::connect(settings(mail, &me, &peer)).unwrap();
        let got = m
            .receive(Duration::from_secs(10))
            .unwrap()
            .expect("the genuine mail");
        assert_eq!(got.sealed, b"GENUINE under a big one");
        m.acknowledge(&got.id, Outcome::Handled).unwrap();
        assert!(m.receive(Duration::from_secs(1)).unwrap().is_none());
        let left = snapshot(&mut user, "INBOX");
        assert_eq!(left.len(), 1, "the big one stays, untouched: {left:?}");
        assert!(left[0].1.is_empty());
    });
}
