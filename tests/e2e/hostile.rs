//! A waiting acceptor faces a channel anyone can write to. Here its mailbox and its
//! shared folder are seeded, before it starts, with what a stranger can put there:
//! a genuine invite with bytes flipped (CBC is malleable), messages encrypted to the
//! acceptor's public certificate with hostile inner MIME (non-UTF-8 and control bytes
//! in headers, absurd lengths, deep nesting), garbage, a truncated and a stale invite,
//! and in the folder a FIFO, a symlink, a directory and an unreadable file under a
//! message's name. The acceptor must refuse each, keep waiting, and then connect a
//! genuine invite; foreign mail and files stay exactly as they were.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::X509;

use plexus::identity::{Identity, PeerCert, PeerId};
use plexus::mediator::email::wrap;
use plexus::rendezvous::{Envelope, Freshness, Invite, NatFacts, ReplayGuard};

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
    let id = |who| PeerId::parse(&id_of(who)).unwrap();
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
    let invite = Invite::new(
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
                    let raw =
                        wrap(&alice.address, &bob.address, sealed, SystemTime::now()).unwrap();
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

#[test]
fn acceptor_survives_a_hostile_shared_folder_then_connects() {
    use crate::corridor::{demo_certs, wait};
    use crate::plugins::{
        assert_both_succeeded, file_profiles, plugin_lib, start_acceptor, start_side,
    };
    use std::os::unix::fs::PermissionsExt;

    let lab = lab_or_skip!();
    let (inviter, acceptor) = ("a-port", "b-address");
    let _c = lab.claim(&[inviter, acceptor]);
    let so = plugin_lib("file", "file");
    let dir = lab.scratch("hostile-folder");
    let certs = demo_certs(&dir);
    let shared = dir.join("shared");
    fs::create_dir_all(&shared).unwrap();
    let name = |n: &str| shared.join(format!("bob@lab.example~alice@lab.example~{n}.plexus"));

    // Sealed bytes that reach bob's core, each to be refused there.
    let hostile = hostile_sealed(&certs);
    for (i, (_, sealed)) in hostile.iter().enumerate() {
        fs::write(name(&format!("h{i}")), sealed).unwrap();
    }
    // Things under a message's name that must never be opened or must be skipped.
    let fifo = std::ffi::CString::new(name("fifo").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0);
    std::os::unix::fs::symlink("/etc/passwd", name("symlink")).unwrap();
    fs::create_dir(name("directory")).unwrap();
    fs::write(name("empty"), b"").unwrap();
    fs::write(name("oversized"), vec![0x30u8; 2 << 20]).unwrap();
    let locked = name("locked");
    fs::write(&locked, b"\x30\x80").unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    // Not ours: somebody else's files, which stay exactly as they are.
    fs::write(shared.join("notes.txt"), b"my notes").unwrap();
    fs::write(
        shared.join("carol@lab.example~alice@lab.example~c1.plexus"),
        b"for carol",
    )
    .unwrap();
    // Read by name only: the folder also holds a FIFO, which a read would block on.
    let foreign = || -> Vec<(String, Vec<u8>)> {
        ["notes.txt", "carol@lab.example~alice@lab.example~c1.plexus"]
            .iter()
            .map(|n| (n.to_string(), fs::read(shared.join(n)).unwrap_or_default()))
            .collect()
    };
    let foreign_before = foreign();

    let (pa, pb) = file_profiles(lab, &so, &dir, &shared, true);
    let mut bob = start_acceptor(lab, &dir, acceptor, &pb);
    let refused = crate::corridor::wait_for_count(
        &dir.join("bob.log"),
        "refused a rendezvous message",
        hostile.len(),
        Duration::from_secs(120),
    );
    assert!(
        refused && bob.try_wait().unwrap().is_none(),
        "bob should refuse {} hostile files and keep waiting:\n{}",
        hostile.len(),
        crate::corridor::read(dir.join("bob.log"))
    );
    let mut alice = start_side(lab, &dir, inviter, "alice", &pa, false);
    let a = wait(&mut alice, Duration::from_secs(90));
    let b = wait(&mut bob, Duration::from_secs(30));
    assert_both_succeeded(&dir, a, b);
    let log = crate::corridor::read(dir.join("bob.log"));
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(foreign(), foreign_before, "foreign files changed");
    assert!(
        fs::symlink_metadata(name("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
            && fs::symlink_metadata(name("symlink"))
                .unwrap()
                .file_type()
                .is_symlink(),
        "the FIFO and the symlink are left where they are"
    );
}
