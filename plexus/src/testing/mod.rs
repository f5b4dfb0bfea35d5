//! Test support in one place, shared by the unit tests, the end-to-end binary, the
//! benches and the fuzz targets (feature `testing`; always on for the unit tests).
//!
//! - [`TempDir`]: a private temporary directory, removed on drop.
//! - [`DemoCerts`]: the committed demo identities, copied with keys at 0600.
//! - [`Rng`]: the one seeded RNG of the simulations (NAT discovery, handshake).
//! - [`handshake_sim`]: two handshake cores over a simulated network in virtual time.
//! - [`stun`]: a loopback RFC 5780 server that plays a port-restricted NAT.
//! - [`netns`]: network-namespace helpers for tests that need real NATs (root only).
//!
//! Nothing here is for production use: helpers panic on setup failures, as tests should.

mod certs;
pub mod handshake_sim;
pub mod netns;
mod rng;
pub mod stun;
mod tempdir;

pub use certs::{copy_demo_certs, dated_cert, demo_id, DemoCerts, DEMO_DIR};
pub use rng::Rng;
pub use tempdir::TempDir;

use crate::identity::{Identity, PeerCert};

/// Seal `plain` as `host` to `peer` without the envelope's checks (ids, encoding): the
/// S/MIME a forger with `host`'s key would send.
pub fn seal_as(host: &Identity, peer: &PeerCert, plain: &[u8]) -> Vec<u8> {
    crate::rendezvous::seal::seal_smime(host, peer, plain).unwrap()
}

/// Run `script` with `sh -ec` in `dir` and return its stdout; panics with the script and
/// its stderr when it fails (the openssl/gpgsm interop tests drive the CLIs this way).
pub fn sh(script: &str, dir: &std::path::Path) -> Vec<u8> {
    let out = std::process::Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// (year, month 1-12, day 1-31) of the day `days` after 1970-01-01: the mail code's own
/// calendar, for tests that write dates (an IMAP INTERNALDATE).
pub fn civil_date(days: u64) -> (i64, i64, i64) {
    crate::mediator::email::civil_date(days)
}
