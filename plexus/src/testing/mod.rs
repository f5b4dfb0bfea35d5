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
