use super::*;
use crate::testing::{dated_cert, DemoCerts};
use std::os::unix::fs::PermissionsExt;

#[test]
fn certificates_outside_their_dates_are_refused_at_load() {
    let demo = DemoCerts::new("dates");
    let id = PeerId::parse("dana@lab.example/x").unwrap();
    let now = unix_now() as i64;
    let day = 86_400;
    for (stem, nb, na, expired) in [
        ("expired", now - 30 * day, now - day, true),
        ("future", now + day, now + 30 * day, false),
    ] {
        let (cert, key) = dated_cert(&demo.dir, stem, &id, nb, na);
        let e = PeerCert::load(id.clone(), &cert).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(&e, IdentityError::OutOfDate { pinned: true, when, .. } if when.expired == expired),
            "{text}"
        );
        assert!(text.contains(&cert.display().to_string()), "{text}");
        assert!(text.contains("ask the peer"), "{text}");
        let e = Identity::load(id.clone(), &cert, &key).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(&e, IdentityError::OutOfDate { pinned: false, when, .. } if when.expired == expired),
            "{text}"
        );
        let dates = load_cert(&cert).unwrap();
        assert!(text.contains(&dates.not_before().to_string()), "{text}");
        assert!(text.contains(&dates.not_after().to_string()), "{text}");
        if expired {
            assert!(text.contains("plexus cert new"), "{text}");
        } else {
            assert!(text.contains("clock"), "{text}");
        }
    }
    // Valid now: loads. The edges of the period are inside it.
    let (cert, key) = dated_cert(&demo.dir, "current", &id, now - day, now + day);
    PeerCert::load(id.clone(), &cert).unwrap();
    Identity::load(id, &cert, &key).unwrap();
    let c = load_cert(&cert).unwrap();
    let (nb, na) = ((now - day) as u64, (now + day) as u64);
    assert!(check_validity(&c, nb).is_ok());
    assert!(check_validity(&c, na).is_ok());
    assert!(matches!(
        check_validity(&c, nb - 1),
        Err(OutOfDate { expired: false, .. })
    ));
    assert!(matches!(
        check_validity(&c, na + 1),
        Err(OutOfDate { expired: true, .. })
    ));
    assert!(matches!(
        check_validity(&c, u64::MAX),
        Err(OutOfDate { expired: true, .. })
    ));
}

#[test]
fn new_certificates_are_valid_from_an_hour_ago() {
    let demo = DemoCerts::new("backdate");
    let req = NewCert {
        id: PeerId::parse("erin@example.org/nas").unwrap(),
        out_dir: demo.path("mine"),
        kind: KeyKind::Ec,
        days: 1,
        csr: false,
    };
    let made = create(&req).unwrap();
    let cert = load_cert(&made.cert).unwrap();
    assert!(check_validity(&cert, unix_now() - 3000).is_ok());
    assert!(check_validity(&cert, unix_now() - 4000).is_err());
}

#[test]
fn demo_certificates_are_valid_for_years() {
    // 2040-01-01: the demo identities must not start failing tests soon.
    let demo = DemoCerts::new("demo-dates");
    for name in ["alice", "bob", "carol", "mallory", "ca"] {
        let c = load_cert(&demo.path(&format!("{name}.pem"))).unwrap();
        assert!(check_validity(&c, 2_208_988_800).is_ok(), "{name}");
    }
}

#[test]
fn ids_parse_strictly() {
    let id = PeerId::parse("alice@example.org/laptop").unwrap();
    assert_eq!(id.mail(), "alice@example.org");
    assert_eq!(id.instance(), "laptop");
    assert_eq!(id.file_stem(), "alice@example.org_laptop");
    assert_eq!(id.to_string(), "alice@example.org/laptop");
    for (bad, want) in [
        (
            "alice@example.org",
            IdError::MissingInstance("alice@example.org".into()),
        ),
        (
            "alice.example.org/x",
            IdError::MissingAt("alice.example.org/x".into()),
        ),
        (
            "@example.org/x",
            IdError::BadLocalPart("@example.org/x".into()),
        ),
        (
            "Alice@example.org/x",
            IdError::BadLocalPart("Alice@example.org/x".into()),
        ),
        (
            "a..b@example.org/x",
            IdError::BadLocalPart("a..b@example.org/x".into()),
        ),
        (
            "a b@example.org/x",
            IdError::BadLocalPart("a b@example.org/x".into()),
        ),
        ("a@/x", IdError::BadDomain("a@/x".into())),
        ("a@-x.org/x", IdError::BadDomain("a@-x.org/x".into())),
        ("a@x..org/x", IdError::BadDomain("a@x..org/x".into())),
        ("a@x.org/", IdError::BadInstance("a@x.org/".into())),
        ("a@x.org/a/b", IdError::BadInstance("a@x.org/a/b".into())),
        ("a@x.org/..", IdError::BadInstance("a@x.org/..".into())),
        ("a@x.org/ä", IdError::BadInstance("a@x.org/ä".into())),
    ] {
        assert_eq!(PeerId::parse(bad), Err(want), "{bad}");
    }
    let long_local = format!("{}@x.org/i", "a".repeat(MAX_LOCAL + 1));
    assert!(matches!(
        PeerId::parse(&long_local),
        Err(IdError::BadLocalPart(_))
    ));
    let long_inst = format!("a@x.org/{}", "i".repeat(MAX_INSTANCE + 1));
    assert!(matches!(
        PeerId::parse(&long_inst),
        Err(IdError::BadInstance(_))
    ));
    let long_label = format!("a@{}.org/i", "d".repeat(64));
    assert!(matches!(
        PeerId::parse(&long_label),
        Err(IdError::BadDomain(_))
    ));
}

#[test]
fn demo_identities_load() {
    let demo = DemoCerts::new("load");
    for name in ["alice", "bob", "carol", "mallory"] {
        let ident = demo.identity(name);
        assert_eq!(ident.id(), &DemoCerts::id(name));
        assert!(!format!("{ident:?}").contains("PRIVATE"));
    }
}

#[test]
fn open_key_permissions_are_refused() {
    let demo = DemoCerts::new("perm");
    let key = demo.path("alice.key");
    for mode in [0o644, 0o640, 0o604, 0o660] {
        fs::set_permissions(&key, fs::Permissions::from_mode(mode)).unwrap();
        let err = load_private_key(&key).unwrap_err();
        assert!(matches!(err, IdentityError::KeyTooOpen { mode: m, .. } if m & 0o777 == mode));
        let text = err.to_string();
        assert!(text.contains(&format!("permissions {mode:04o}")), "{text}");
        assert!(text.contains("chmod 600"), "{text}");
    }
    fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).unwrap();
    load_private_key(&key).unwrap();
}

#[test]
fn encrypted_keys_are_refused_without_prompting() {
    let demo = DemoCerts::new("enc");
    let key = load_private_key(&demo.path("bob.key")).unwrap();
    let pem = key
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"pw")
        .unwrap();
    let p = demo.path("enc.key");
    fs::write(&p, pem).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    let e = load_private_key(&p).unwrap_err();
    assert!(matches!(e, IdentityError::KeyEncrypted { .. }), "{e}");
}

#[test]
fn key_must_match_cert_and_cert_must_name_the_id() {
    let demo = DemoCerts::new("match");
    let err = Identity::load(
        DemoCerts::id("alice"),
        &demo.path("alice.pem"),
        &demo.path("carol.key"),
    )
    .unwrap_err();
    assert!(matches!(err, IdentityError::KeyMismatch { .. }), "{err}");
    let err = PeerCert::load(DemoCerts::id("bob"), &demo.path("alice.pem")).unwrap_err();
    assert!(
        matches!(&err, IdentityError::CertNotForId { found, .. } if found == &["alice@lab.example"]),
        "{err}"
    );
}

#[test]
fn garbage_files_are_typed_errors() {
    let demo = DemoCerts::new("garbage");
    let p = demo.path("junk.pem");
    fs::write(&p, b"not a certificate").unwrap();
    assert!(matches!(load_cert(&p), Err(IdentityError::BadFile { .. })));
    assert!(matches!(
        load_cert_bundle(&p),
        Err(IdentityError::BadFile { .. })
    ));
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        load_private_key(&p),
        Err(IdentityError::BadFile { .. })
    ));
    assert!(matches!(
        load_cert(&demo.path("missing.pem")),
        Err(IdentityError::Read { .. })
    ));
}

#[test]
fn cert_new_creates_and_never_overwrites() {
    let demo = DemoCerts::new("new");
    let out = demo.path("mine");
    for (kind, id) in [
        (KeyKind::Ec, "dave@example.org/pc"),
        (KeyKind::Rsa, "erin@example.org/nas"),
    ] {
        let req = NewCert {
            id: PeerId::parse(id).unwrap(),
            out_dir: out.clone(),
            kind,
            days: 30,
            csr: true,
        };
        let made = create(&req).unwrap();
        let mode = fs::metadata(&made.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let ident = Identity::load(req.id.clone(), &made.cert, &made.key).unwrap();
        assert_eq!(fingerprint_sha256(ident.cert()), made.fingerprint);
        assert_eq!(cert_emails(ident.cert()), vec![req.id.mail().to_string()]);
        let csr = fs::read(made.csr.as_ref().unwrap()).unwrap();
        openssl::x509::X509Req::from_pem(&csr).unwrap();

        // A second run must fail and leave the key byte for byte as it was.
        let key_before = fs::read(&made.key).unwrap();
        let cert_before = fs::read(&made.cert).unwrap();
        let err = create(&req).unwrap_err();
        assert!(
            matches!(&err, IdentityError::Exists(p) if *p == made.key),
            "{err}"
        );
        assert_eq!(fs::read(&made.key).unwrap(), key_before);
        assert_eq!(fs::read(&made.cert).unwrap(), cert_before);
    }
    // Only the certificate exists: still refused, and no stray key is left behind.
    let id = PeerId::parse("frank@example.org/x").unwrap();
    let stem = id.file_stem();
    fs::write(out.join(format!("{stem}.pem")), b"keep me").unwrap();
    let req = NewCert {
        id,
        out_dir: out.clone(),
        kind: KeyKind::Ec,
        days: 1,
        csr: false,
    };
    assert!(matches!(create(&req), Err(IdentityError::Exists(_))));
    assert!(!out.join(format!("{stem}.key")).exists());
    assert_eq!(
        fs::read(out.join(format!("{stem}.pem"))).unwrap(),
        b"keep me"
    );
    // Files are written under a temporary name first; none is left behind.
    let leftovers: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
