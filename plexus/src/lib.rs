//! plexus: open a direct UDP path between two machines behind NAT.
//!
//! Layers, bottom up (each a module with its own error enum):
//! - [`stun`]: STUN codec and binding transactions (RFC 8489/5389/5780), pure cores.
//! - [`nat`]: NAT behaviour discovery (RFC 5780 §4.3/§4.4 plus hairpin).
//! - [`mediator`]: the trait for rendezvous transports (e-mail built in, plugins).
//! - [`executor`]: the trait for what runs on the punched path.
//! - [`plugin`]: loads mediator and executor plugins from dynamic libraries (C ABI).

pub mod executor;
pub mod mediator;
pub mod nat;
pub mod plugin;
pub mod stun;
