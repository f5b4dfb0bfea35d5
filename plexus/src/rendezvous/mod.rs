//! Rendezvous messages: what peers tell each other through a mediator, and how it is
//! protected.
//!
//! - [`message`]: the invite/accept message and its strict, versioned text encoding.
//! - [`seal`]: S/MIME sign-then-encrypt with the host's key to the pinned peer
//!   certificate, and opening with all checks ([`Envelope`]).
//! - [`replay`]: the state file that refuses a message seen before.

pub mod message;
pub mod replay;
pub mod seal;

pub use crate::identity::PeerId;
pub use message::{Kind, MessageError, NatFacts, Rendezvous, Secret, SessionId};
pub use replay::{ReplayError, ReplayGuard};
pub use seal::{Envelope, EnvelopeFiles, Freshness, OpenError, SealError, SetupError};
