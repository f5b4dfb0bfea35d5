use super::*;
use crate::rendezvous::message::{Accept, Invite, NatFacts};
use crate::testing::{sh, DemoCerts};

const NOW: u64 = 1_800_000_000;

fn envelope(demo: &DemoCerts, host: &str, peer: &str) -> Envelope {
    demo.envelope(host, peer)
}

fn invite(from: &str, to: &str) -> Invite {
    DemoCerts::invite(from, to, NOW)
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
        let accept = Accept::new(&opened, NOW + 6, vec![], vec![], NatFacts::default()).unwrap();
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
        b"PLEXUS-RENDEZVOUS 4\n",
    )
    .unwrap();
    let e = bob.open(&sealed, NOW).unwrap_err();
    assert!(matches!(e, OpenError::Malformed(_)), "{e}");
    let cause = std::error::Error::source(&e).expect("the message error is the source");
    assert_eq!(
        cause.downcast_ref::<MessageError>(),
        Some(&MessageError::UnsupportedVersion("4".into()))
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
    std::fs::set_permissions(demo.path("bob.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
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
    let (cert, key) = crate::testing::dated_cert(&demo.dir, "dana", &dana, nb as i64, na as i64);
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
