//! plexus: open a direct UDP path between two machines behind NAT.
//!
//! A profile in, a punched socket and a session key back:
//!
//! ```no_run
//! use plexus::profile::Profile;
//! use plexus::Session;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let profile = Profile::load("bob")?; // ~/.config/plexus/profiles/bob.yaml, or a path
//! let connected = Session::from_profile(&profile)?.invite()?; // or .accept()
//! connected.socket.send_to(b"hello", connected.corridor.peer)?;
//! let _key = connected.key(); // 256 bits both sides derived
//! # Ok(())
//! # }
//! ```
//!
//! Running a program on the path is optional ([`Connected::run`]); `plexus/examples/punch.rs`
//! is a complete program.
//!
//! Layers, bottom up (each a module with its own error enum):
//! - [`defaults`]: every built-in default, in one table.
//! - [`sansio`]: the one trait every protocol core implements (datagrams and time in,
//!   datagrams, deadlines and events out) and its `Transmit`.
//! - [`net`]: all socket code: the driver that runs any core over UDP sockets, TTL per
//!   datagram, the ICMP error queue, interface addresses.
//! - [`stun`]: STUN codec and binding transactions (RFC 8489/5389/5780), pure cores.
//! - [`nat`]: NAT behaviour discovery (RFC 5780 §4.3/§4.4 plus hairpin).
//! - [`portmap`]: router port mapping (PCP, NAT-PMP, UPnP-IGD) for the corridor port.
//! - [`mediator`]: the trait for rendezvous transports (e-mail built in, plugins).
//! - [`executor`]: the trait for what runs on the punched path, and the built-in command
//!   executor ([`executor::command`]).
//! - [`punch`]: the corridor: low-TTL punch, hop discovery, authenticated handshake.
//! - [`profile`]: YAML profiles, validated into plain configuration.
//! - [`plugin`]: loads mediator and executor plugins from dynamic libraries (C ABI).
//! - [`identity`]: peer ids, certificates and keys (`plexus cert new`).
//! - [`rendezvous`]: the invite/accept message, S/MIME sealing and replay protection.
//! - [`session`]: one invitation end to end (discovery, rendezvous, punch, handshake).
//! - [`setup`]: the entry point: a profile in, a [`Session`] out, a punched path back.
//! - `testing` (feature `testing`): test support shared by unit, end-to-end and fuzz
//!   tests and the benches: demo certificates, temp dirs, simulations, netns helpers.

mod base64;
pub mod defaults;
pub mod executor;
pub mod identity;
pub mod mediator;
pub mod nat;
pub mod net;
pub mod plugin;
pub mod portmap;
pub mod profile;
pub mod punch;
pub mod relay;
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
