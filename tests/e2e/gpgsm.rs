//! gpgsm (GnuPG's S/MIME tool) interop: what plexus seals, gpgsm decrypts and verifies
//! against the demo CA, and what gpgsm signs and encrypts, plexus opens. Moved here from
//! the library's unit tests: they run gpgsm and a gpg-agent. Need no lab and no root; a
//! missing gpgsm skips loudly (a failure with CI=true).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use openssl::hash::MessageDigest;
use openssl::x509::X509;
use plexus::rendezvous::message::{Invite, Rendezvous};
use plexus::rendezvous::{Envelope, OpenError};
use plexus::testing::{sh, DemoCerts};

const NOW: u64 = 1_800_000_000;

fn envelope(demo: &DemoCerts, host: &str, peer: &str) -> Envelope {
    demo.envelope(host, peer)
}

fn invite(from: &str, to: &str) -> Invite {
    DemoCerts::invite(from, to, NOW)
}

/// Sign with `signer`'s key and encrypt to `to`'s certificate whatever the ids say.
fn forge(demo: &DemoCerts, signer: &str, to: &str, msg: &impl Rendezvous) -> Vec<u8> {
    plexus::testing::seal_as(
        &demo.identity(signer),
        &demo.peer(to),
        &msg.encode().unwrap(),
    )
}

// gpgsm (GnuPG's S/MIME tool, 2.2 on Debian 12) interop. What 2.2 cannot do, and so
// what these tests leave out: an EC recipient (gpgsm 2.2 has no ECDH key agreement
// for CMS: decryption fails with "Invalid session key", the code arrived in GnuPG
// 2.3) and an EC key in PKCS#12 (its import crashes gpgsm 2.2). RSA works both ways.

/// Passphrase of the throwaway PKCS#12 files and of the keys inside gpg-agent.
const GPGSM_PASS: &str = "plexus-test-only";
/// Upper bound for one gpgsm call: a gpg-agent that hangs must not hang the test.
const GPGSM_LIMIT: Duration = Duration::from_secs(60);

/// True (after a loud message) when gpgsm or gpg-agent is missing; with CI=true a
/// missing tool is a failure instead, as for the lab tests.
fn skip_without_gpgsm(test: &str) -> bool {
    let mut missing = Vec::new();
    for tool in ["gpgsm", "gpg-agent", "gpgconf"] {
        let ok = Command::new(tool)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            missing.push(tool);
        }
    }
    if missing.is_empty() {
        return false;
    }
    let msg = format!(
        "GPGSM INTEROP TEST {test} SKIPPED: {} not runnable. Install with \
         tests/lab/install-deps.sh (apt-get install gpgsm gpg-agent).",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true, so a missing tool is a failure: {msg}");
    }
    eprintln!("\n{}\n!!! {msg}\n{}\n", "!".repeat(72), "!".repeat(72));
    true
}

/// What a bounded gpgsm call left behind.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// gpgsm with a throwaway home (0700) inside the demo directory, which trusts the
/// demo CA as a root (trustlist.txt) and holds the secret keys it was given. Drop
/// stops the gpg-agent gpgsm started for that home.
struct Gpgsm<'a> {
    demo: &'a DemoCerts,
    home: PathBuf,
    calls: u32,
}

impl<'a> Gpgsm<'a> {
    fn new(demo: &'a DemoCerts, secret_keys: &[&str]) -> Gpgsm<'a> {
        use std::os::unix::fs::DirBuilderExt;
        let home = demo.path("gnupg");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&home)
            .unwrap();
        let mut g = Gpgsm {
            demo,
            home,
            calls: 0,
        };
        // The CA as a trusted root: SHA-1 fingerprint and the S(/MIME) flag.
        let ca = X509::from_pem(&std::fs::read(demo.path("ca.pem")).unwrap()).unwrap();
        let fpr = ca.digest(MessageDigest::sha1()).unwrap();
        let fpr: Vec<String> = fpr.iter().map(|b| format!("{b:02X}")).collect();
        std::fs::write(
            g.home.join("trustlist.txt"),
            format!("{} S\n", fpr.join(":")),
        )
        .unwrap();
        // Start this home's agent now and wait for it: gpgsm's own autostart gives
        // the agent 5 s, which a busy machine (the whole test run) can overrun.
        let launched = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&g.home)
            .args(["--launch", "gpg-agent"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .and_then(|mut c| wait_bounded(&mut c));
        assert!(
            launched.is_some_and(|s| s.success()),
            "gpgconf --launch gpg-agent failed"
        );
        let r = g.run(&["--import", "ca.pem"], "");
        assert!(r.ok, "gpgsm --import ca.pem: {}", r.stderr);
        for name in secret_keys {
            // gpgsm 2.2 reads only the classic PKCS#12 encryption (3DES, SHA-1 MAC),
            // not OpenSSL 3's default PBES2/AES-256 ("pkcs5PBES2-params" error).
            sh(
                &format!(
                    "openssl pkcs12 -export -keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES \
                     -macalg sha1 -in {name}.pem -inkey {name}.key \
                     -passout pass:{GPGSM_PASS} -out {name}.p12"
                ),
                &demo.dir,
            );
            let r = g.run_pass(&["--import", &format!("{name}.p12")]);
            assert!(
                r.ok && r.stderr.contains("secret keys imported: 1"),
                "gpgsm --import {name}.p12: {}",
                r.stderr
            );
        }
        g
    }

    /// gpgsm with the passphrase on stdin (gpgsm 2.2 has no --passphrase option:
    /// loopback pinentry plus --passphrase-fd is its batch way).
    fn run_pass(&mut self, args: &[&str]) -> Ran {
        let mut all = vec!["--passphrase-fd", "0"];
        all.extend_from_slice(args);
        self.run(&all, GPGSM_PASS)
    }

    /// One gpgsm call in the demo directory, killed after GPGSM_LIMIT. Files, not
    /// pipes, carry stdin/stdout/stderr, so no reader thread is needed.
    fn run(&mut self, args: &[&str], stdin: &str) -> Ran {
        self.calls += 1;
        let file = |what: &str| self.demo.path(&format!("gpgsm-{}.{what}", self.calls));
        std::fs::write(file("in"), stdin).unwrap();
        let mut child = Command::new("gpgsm")
            .arg("--homedir")
            .arg(&self.home)
            // No dirmngr (and so no CRL fetch: offline); chains are still checked.
            .args([
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--disable-dirmngr",
            ])
            .args(args)
            .current_dir(&self.demo.dir)
            .stdin(std::fs::File::open(file("in")).unwrap())
            .stdout(std::fs::File::create(file("out")).unwrap())
            .stderr(std::fs::File::create(file("err")).unwrap())
            .spawn()
            .expect("run gpgsm");
        let Some(status) = wait_bounded(&mut child) else {
            panic!("gpgsm {args:?} still running after {GPGSM_LIMIT:?}: killed");
        };
        let read =
            |what: &str| String::from_utf8_lossy(&std::fs::read(file(what)).unwrap()).into_owned();
        Ran {
            ok: status.success(),
            stdout: read("out"),
            stderr: read("err"),
        }
    }
}

impl Drop for Gpgsm<'_> {
    fn drop(&mut self) {
        // Stop the agent this home started (bounded: never hang the test run).
        if let Ok(mut c) = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.home)
            .args(["--kill", "all"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            wait_bounded(&mut c);
        }
    }
}

/// Wait for `child` at most GPGSM_LIMIT; past that it is killed and `None` returned.
fn wait_bounded(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < GPGSM_LIMIT {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// SHA-1 fingerprint as gpgsm prints it in status lines (hex, no colons).
fn gpgsm_fpr(demo: &DemoCerts, name: &str) -> String {
    let cert = X509::from_pem(&std::fs::read(demo.path(&format!("{name}.pem"))).unwrap()).unwrap();
    let fpr = cert.digest(MessageDigest::sha1()).unwrap();
    fpr.iter().map(|b| format!("{b:02X}")).collect()
}

/// The status lines of one kind (`[GNUPG:] KIND args`), as their args.
fn status_lines<'s>(status: &'s str, kind: &str) -> Vec<&'s str> {
    let prefix = format!("[GNUPG:] {kind} ");
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix(&prefix)
                .or((l == prefix.trim_end()).then_some(""))
        })
        .collect()
}

/// `gpgsm --decrypt` of a sealed message, then `gpgsm --verify` of the S/MIME
/// signed entity inside; returns (verify ran ok, its status lines, the content).
fn gpgsm_open(g: &mut Gpgsm, sealed: &str) -> (bool, String, Vec<u8>) {
    let inner = format!("{sealed}.inner");
    let r = g.run_pass(&["--status-fd", "1", "--output", &inner, "--decrypt", sealed]);
    assert!(r.ok, "gpgsm --decrypt {sealed}: {}", r.stderr);
    assert!(
        !status_lines(&r.stdout, "DECRYPTION_OKAY").is_empty(),
        "{}",
        r.stdout
    );
    // The decrypted entity is MIME: headers, a blank line, the base64 signed-data.
    // gpgsm reads the base64 but not MIME headers, so hand it the body (as a mail
    // client does when it passes the part on).
    let entity = std::fs::read_to_string(g.demo.path(&inner)).unwrap();
    let entity = entity.replace("\r\n", "\n");
    let (head, body) = entity.split_once("\n\n").expect("MIME headers and body");
    assert!(head.contains("smime-type=signed-data"), "{head}");
    assert!(head.contains("Content-Transfer-Encoding: base64"), "{head}");
    std::fs::write(g.demo.path(&format!("{inner}.b64")), body).unwrap();
    let content = format!("{inner}.content");
    let r = g.run(
        &[
            "--status-fd",
            "1",
            "--assume-base64",
            "--output",
            &content,
            "--verify",
            &format!("{inner}.b64"),
        ],
        "",
    );
    let plain = std::fs::read(g.demo.path(&content)).unwrap_or_default();
    (r.ok, r.stdout, plain)
}

#[test]
fn sealed_by_plexus_decrypts_and_verifies_with_gpgsm() {
    if skip_without_gpgsm("sealed_by_plexus_decrypts_and_verifies_with_gpgsm") {
        return;
    }
    let demo = DemoCerts::new("seal-gpgsm-out");
    let mut g = Gpgsm::new(&demo, &["carol"]);
    let msg = invite("alice", "carol");
    std::fs::write(
        demo.path("m.p7m"),
        envelope(&demo, "alice", "carol").seal(&msg).unwrap(),
    )
    .unwrap();
    let (ok, status, plain) = gpgsm_open(&mut g, "m.p7m");
    assert!(ok, "gpgsm --verify failed:\n{status}");
    assert_eq!(plain, msg.encode().unwrap());
    let alice = gpgsm_fpr(&demo, "alice");
    let good = status_lines(&status, "GOODSIG");
    assert!(
        good.len() == 1 && good[0].starts_with(&format!("{alice} ")),
        "{status}"
    );
    let valid = status_lines(&status, "VALIDSIG");
    assert!(
        valid.len() == 1 && valid[0].starts_with(&format!("{alice} ")),
        "{status}"
    );
    // Fully trusted: the chain alice -> demo CA (a trusted root) was checked.
    assert_eq!(status_lines(&status, "TRUST_FULLY").len(), 1, "{status}");

    // Control: the same path with a signer the CA did not issue is not trusted.
    let forged = invite("alice", "carol");
    std::fs::write(
        demo.path("forged.p7m"),
        forge(&demo, "mallory", "carol", &forged),
    )
    .unwrap();
    let (ok, status, _) = gpgsm_open(&mut g, "forged.p7m");
    assert!(!ok, "gpgsm accepted mallory's signature:\n{status}");
    assert!(status_lines(&status, "TRUST_FULLY").is_empty(), "{status}");
    assert!(
        !status_lines(&status, "VALIDSIG")
            .iter()
            .any(|v| v.starts_with(&format!("{alice} "))),
        "{status}"
    );
}

#[test]
fn made_by_gpgsm_opens_in_plexus() {
    if skip_without_gpgsm("made_by_gpgsm_opens_in_plexus") {
        return;
    }
    let demo = DemoCerts::new("seal-gpgsm-in");
    let mut g = Gpgsm::new(&demo, &["alice"]);
    let r = g.run(&["--import", "carol.pem"], "");
    assert!(r.ok, "gpgsm --import carol.pem: {}", r.stderr);
    let msg = invite("alice", "carol");
    std::fs::write(demo.path("msg.txt"), msg.encode().unwrap()).unwrap();
    // Opaque signed-data by alice, wrapped as an S/MIME entity (what a mail client
    // around gpgsm does), then encrypted to carol with AES-256.
    let r = g.run_pass(&[
        "--status-fd",
        "1",
        "--base64",
        "--local-user",
        "alice@lab.example",
        "--output",
        "signed.b64",
        "--sign",
        "msg.txt",
    ]);
    assert!(r.ok, "gpgsm --sign: {}", r.stderr);
    let created = status_lines(&r.stdout, "SIG_CREATED");
    assert!(
        created.len() == 1 && created[0].ends_with(&gpgsm_fpr(&demo, "alice")),
        "{}",
        r.stdout
    );
    let b64 = std::fs::read_to_string(demo.path("signed.b64")).unwrap();
    let entity = format!(
        "MIME-Version: 1.0\r\n\
         Content-Type: application/pkcs7-mime; smime-type=signed-data; name=\"smime.p7m\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}",
        b64.replace('\n', "\r\n")
    );
    std::fs::write(demo.path("entity.eml"), entity).unwrap();
    let r = g.run(
        &[
            "--cipher-algo",
            "AES256",
            "--recipient",
            "carol@lab.example",
            "--output",
            "g.p7m",
            "--encrypt",
            "entity.eml",
        ],
        "",
    );
    assert!(r.ok, "gpgsm --encrypt: {}", r.stderr);
    let der = std::fs::read(demo.path("g.p7m")).unwrap();
    assert_eq!(
        envelope(&demo, "carol", "alice").open(&der, NOW).unwrap(),
        msg
    );
    // And only the right recipient: bob's key does not open it.
    assert!(matches!(
        envelope(&demo, "bob", "alice").open(&der, NOW),
        Err(OpenError::NotForUs)
    ));
}
