//! A waiting acceptor faces a channel anyone can write to. Here its mailbox and its
//! shared folder are seeded, before it starts, with what a stranger can put there:
//! a genuine invite with bytes flipped (CBC is malleable), messages encrypted to the
//! acceptor's public certificate with hostile inner MIME (non-UTF-8 and control bytes
//! in headers, absurd lengths, deep nesting), garbage, a truncated and a stale invite,
//! and in the folder a FIFO, a symlink, a directory and an unreadable file under a
//! message's name. The acceptor must refuse each, keep waiting, and then connect a
//! genuine invite; foreign mail and files stay exactly as they were.

use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::X509;

use plexus::identity::{Identity, PeerCert, PeerId};
use plexus::mediator::email::wrap;
use plexus::rendezvous::{Envelope, Freshness, NatFacts, Rendezvous, ReplayGuard};

use crate::corridor::{corridor_seeded, id_of};
use crate::mail::{append, plain_mail, snapshot, user_session};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A genuine invite from alice to bob, sealed as alice's plexus would, dated `time`.
fn genuine_invite(certs: &Path, time: u64) -> Vec<u8> {
    let id = |who| PeerId::parse(id_of(who)).unwrap();
    let alice = Identity::load(
        id("alice"),
        &certs.join("alice.pem"),
        &certs.join("alice.key"),
    )
    .unwrap();
    let bob = PeerCert::load(id("bob"), &certs.join("bob.pem")).unwrap();
    let env = Envelope::new(
        alice,
        bob,
        None,
        Freshness::default(),
        ReplayGuard::in_memory(),
    )
    .unwrap();
    let invite = Rendezvous::invite(
        id("alice"),
        id("bob"),
        time,
        vec!["198.51.100.7:40000".parse().unwrap()],
        vec![],
        NatFacts::default(),
    )
    .unwrap();
    env.seal(&invite).unwrap()
}

/// `inner` encrypted to bob's certificate, as anyone can: it is public.
fn to_bob(certs: &Path, inner: &[u8]) -> Vec<u8> {
    let cert = X509::from_pem(&fs::read(certs.join("bob.pem")).unwrap()).unwrap();
    let mut to = Stack::new().unwrap();
    to.push(cert).unwrap();
    CmsContentInfo::encrypt(&to, inner, Cipher::aes_256_cbc(), CMSOptions::BINARY)
        .unwrap()
        .to_der()
        .unwrap()
}

/// Sealed bytes a stranger can produce without any key of alice's.
pub(crate) fn hostile_sealed(certs: &Path) -> Vec<(String, Vec<u8>)> {
    // Dated two hours back: a flip that happens to leave the message authentic (in a
    // part no signature covers, say) still ends in a refusal, as stale, instead of an
    // invite bob would rightly answer.
    let genuine = genuine_invite(certs, now() - 7200);
    let mut out = Vec::new();
    // Single-byte flips spread over the whole message, the CBC blocks included.
    for pos in (0..genuine.len()).step_by(genuine.len() / 12 + 1) {
        let mut m = genuine.clone();
        m[pos] ^= 0x41;
        out.push((format!("flip@{pos}"), m));
    }
    let mut tail = genuine.clone();
    let n = tail.len();
    tail[n - 40] ^= 0x01;
    out.push(("flip in the last block".into(), tail));
    out.push((
        "truncated".into(),
        genuine_invite(certs, now())[..genuine.len() / 2].to_vec(),
    ));
    out.push(("stale".into(), genuine));
    let mime = |headers: &[u8], body: &[u8]| [headers, b"\r\n\r\n", body].concat();
    let b64 = b"MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwGggCSABA==";
    for (name, inner) in [
        (
            "non-UTF-8 header",
            mime(
                b"MIME-Version: 1.0\r\nContent-Type: application/x-pkcs7-mime\xe9; smime-type=signed-data\r\nContent-Transfer-Encoding: base64",
                b64,
            ),
        ),
        (
            "control bytes in headers",
            mime(
                b"MIME-Version: 1.0\x00\x07\r\nContent-Type: application/x-pkcs7-mime\x1b[2J\r\nContent-Transfer-Encoding: base64",
                b64,
            ),
        ),
        (
            "absurd header",
            mime(
                &[b"Content-Type: multipart/signed; boundary=".as_slice(), &[b'x'; 20_000]].concat(),
                b"--x\r\n",
            ),
        ),
        (
            "deep nesting",
            (0..60)
                .map(|i| format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"))
                .collect::<String>()
                .into_bytes(),
        ),
        (
            "multipart/signed with a garbage signature",
            b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=\"zz\"\r\n\r\n--zz\r\nhello\r\n--zz\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\n////AAAA\r\n--zz--\r\n".to_vec(),
        ),
        ("binary noise", (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect()),
    ] {
        out.push((name.into(), to_bob(certs, &inner)));
    }
    out.push((
        "garbage".into(),
        (0..4000u32).map(|i| (i * 31 % 256) as u8).collect(),
    ));
    out
}

#[test]
fn acceptor_survives_a_hostile_mailbox_then_connects() {
    let lab = lab_or_skip!();
    let (inviter, acceptor) = ("a-full", "b-port");
    let _c = lab.claim(&[inviter, acceptor]);
    let mail = lab.mail();
    let ns = lab.site(acceptor).host_netns.clone();
    let mut foreign_before = None;
    let mut bob_box = None;
    let run = corridor_seeded(
        lab,
        "hostile-mailbox",
        (inviter, acceptor),
        (&[], &[]),
        |_, certs, (alice, bob)| {
            bob_box = Some(bob.clone());
            let hostile = hostile_sealed(certs);
            lab.in_ns(&ns, || {
                let mut s = user_session(mail, bob);
                // Somebody else's mail, which must stay exactly as it is.
                append(
                    &mut s,
                    &plain_mail("carol@lab.example", &bob.address, "lunch", ""),
                    &[],
                );
                for (_, sealed) in &hostile {
                    let raw = wrap(&alice.address, &bob.address, sealed, SystemTime::now())
                        .unwrap();
                    append(&mut s, std::str::from_utf8(&raw).unwrap(), &[]);
                }
                foreign_before = Some(snapshot(&mut s, "INBOX"));
            });
            hostile.len()
        },
    );
    run.assert_connected();
    let log = run.log("bob");
    assert!(
        !log.contains("panicked"),
        "no panic may reach the acceptor's log:\n{log}"
    );
    // Nothing but the handled invite left the INBOX: refused mail stays (or goes to
    // a quarantine folder when one is set), foreign mail is untouched.
    let bob = bob_box.unwrap();
    let after = lab.in_ns(&ns, || snapshot(&mut user_session(mail, &bob), "INBOX"));
    assert_eq!(Some(after), foreign_before, "the mailbox changed");
}

