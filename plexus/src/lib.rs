//! plexus: open a direct UDP path between two machines behind NAT.
//!
//! Layers, bottom up (each a module with its own error enum):
//! - [`sansio`]: the one trait every protocol core implements (datagrams and time in,
//!   datagrams, deadlines and events out) and its `Transmit`.
//! - [`net`]: all socket code: the driver that runs any core over UDP sockets, TTL per
//!   datagram, the ICMP error queue, interface addresses.
//! - [`stun`]: STUN codec and binding transactions (RFC 8489/5389/5780), pure cores.
//! - [`nat`]: NAT behaviour discovery (RFC 5780 §4.3/§4.4 plus hairpin).
//! - [`mediator`]: the trait for rendezvous transports (e-mail built in, plugins).
//! - [`executor`]: the trait for what runs on the punched path.
//! - [`punch`]: the corridor: low-TTL punch, hop discovery, authenticated handshake.
//! - [`exec`]: the built-in command executor.
//! - [`profile`]: YAML profiles, validated into plain configuration.
//! - [`plugin`]: loads mediator and executor plugins from dynamic libraries (C ABI).
//! - [`identity`]: peer ids, certificates and keys (`plexus cert new`).
//! - [`rendezvous`]: the invite/accept message, S/MIME sealing and replay protection.
//! - [`session`]: one invitation end to end (discovery, rendezvous, punch, handshake).
//! - [`setup`]: the entry point: a profile in, a [`Session`] out, a punched path back.
//! - `testing` (feature `testing`): test support shared by unit, end-to-end and fuzz
//!   tests and the benches: demo certificates, temp dirs, simulations, netns helpers.

mod base64;
pub mod exec;
pub mod executor;
pub mod identity;
pub mod mediator;
pub mod nat;
pub mod net;
pub mod plugin;
pub mod profile;
pub mod punch;
pub mod rendezvous;
pub mod sansio;
pub mod secret;
pub mod session;
pub mod setup;
pub mod stun;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use session::Connected;
pub use setup::{Session, SetupError};
