//! The committed demo identities (`certs/demo`), ready to load.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509Builder, X509};

use super::TempDir;
use crate::identity::{Identity, PeerCert, PeerId};
use crate::rendezvous::message::{Invite, NatFacts};
use crate::rendezvous::{Envelope, Freshness, ReplayGuard};

/// Where the demo identities are committed (`certs/demo` in the repository).
pub const DEMO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../certs/demo");

/// The peer id of a demo identity: `alice` (RSA), `bob` (EC), `carol`, `mallory`.
pub fn demo_id(name: &str) -> PeerId {
    let s = match name {
        "alice" => "alice@lab.example/home",
        "bob" => "bob@lab.example/office",
        "carol" => "carol@lab.example/nas",
        "mallory" => "mallory@lab.example/evil",
        other => panic!("no demo identity {other}"),
    };
    PeerId::parse(s).unwrap()
}

/// Copy every demo certificate and key into `to` (created if missing). Git checks the
/// keys out 0644 and the loader insists on 0600, so the copies get 0600.
pub fn copy_demo_certs(to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for entry in fs::read_dir(DEMO_DIR).unwrap_or_else(|e| panic!("read {DEMO_DIR}: {e}")) {
        let p = entry.unwrap().path();
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "pem" || ext == "key" {
            let dest = to.join(p.file_name().unwrap());
            fs::copy(&p, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", p.display()));
            let mode = if ext == "key" { 0o600 } else { 0o644 };
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

/// The demo identities in a private temporary directory, removed on drop.
#[derive(Debug)]
pub struct DemoCerts {
    /// The directory holding `<name>.pem`, `<name>.key` and `ca.pem`.
    pub dir: TempDir,
}

impl DemoCerts {
    /// Copy the demo identities into a fresh directory tagged `tag`.
    pub fn new(tag: &str) -> DemoCerts {
        let dir = TempDir::new(&format!("certs-{tag}"));
        copy_demo_certs(dir.path());
        DemoCerts { dir }
    }

    /// A file in the directory (`alice.pem`, `bob.key`, `ca.pem`, …).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The peer id of a demo identity (see [`demo_id`]).
    pub fn id(name: &str) -> PeerId {
        demo_id(name)
    }

    /// A demo identity with its private key, loaded through the real checks.
    pub fn identity(&self, name: &str) -> Identity {
        Identity::load(
            Self::id(name),
            &self.path(&format!("{name}.pem")),
            &self.path(&format!("{name}.key")),
        )
        .unwrap()
    }

    /// A demo identity's certificate, as a peer sees it.
    pub fn peer(&self, name: &str) -> PeerCert {
        PeerCert::load(Self::id(name), &self.path(&format!("{name}.pem"))).unwrap()
    }

    /// The demo CA certificate.
    pub fn ca(&self) -> Vec<X509> {
        vec![X509::from_pem(&fs::read(self.path("ca.pem")).unwrap()).unwrap()]
    }

    /// The envelope demo identity `host` seals to `peer` with (pinned, no CA, default
    /// freshness, replay state in memory).
    pub fn envelope(&self, host: &str, peer: &str) -> Envelope {
        Envelope::new(
            self.identity(host),
            self.peer(peer),
            None,
            Freshness::default(),
            ReplayGuard::in_memory(),
        )
        .unwrap()
    }

    /// An invite from demo identity `from` to `to` dated `now`, with a public and a
    /// local endpoint from the documentation ranges.
    pub fn invite(from: &str, to: &str, now: u64) -> Invite {
        Invite::new(
            Self::id(from),
            Self::id(to),
            now,
            vec!["198.51.100.4:41000".parse().unwrap()],
            vec!["10.1.0.2:41000".parse().unwrap()],
            NatFacts {
                nat: true,
                ..NatFacts::default()
            },
        )
        .unwrap()
    }
}

/// Write a new EC key and a self-signed S/MIME certificate for `id`, valid from
/// `not_before` to `not_after` (unix seconds), into `dir` as `<stem>.pem`/`.key`.
pub fn dated_cert(
    dir: impl AsRef<Path>,
    stem: &str,
    id: &PeerId,
    not_before: i64,
    not_after: i64,
) -> (PathBuf, PathBuf) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let name = crate::identity::subject(id).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_not_before(&Asn1Time::from_unix(not_before).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(not_after).unwrap())
        .unwrap();
    b.set_pubkey(&key).unwrap();
    let ctx = b.x509v3_context(None, None);
    let san = SubjectAlternativeName::new()
        .email(id.mail())
        .build(&ctx)
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let dir = dir.as_ref();
    let (cert, keyp) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    fs::write(&cert, b.build().to_pem().unwrap()).unwrap();
    fs::write(&keyp, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    fs::set_permissions(&keyp, fs::Permissions::from_mode(0o600)).unwrap();
    (cert, keyp)
}
