//! Rendezvous messages: what peers tell each other through a mediator, and how it is
//! protected.
//!
//! - [`message`]: the [`Invite`] and [`Accept`] messages and their strict, versioned text
//!   encoding.
//! - [`seal`]: S/MIME sign-then-encrypt with the host's key to the pinned peer
//!   certificate, and opening with all checks ([`Envelope`]).
//! - [`replay`]: the state file that refuses a message seen before.
//!
//! ```no_run
//! use plexus::rendezvous::{Envelope, EnvelopeFiles, Freshness, Invite, Message, NatFacts};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let files = EnvelopeFiles {
//!     host_id: "alice@lab.example/home".parse()?,
//!     host_cert: "alice.pem".into(),
//!     host_key: "alice.key".into(), // mode 0600, or loading fails
//!     peer_id: "bob@lab.example/office".parse()?,
//!     peer_cert: "bob.pem".into(), // pinned: only this certificate's key may sign
//!     ca: None,
//!     replay_state: Some("replay.state".into()),
//!     freshness: Freshness::default(),
//! };
//! let mut env = Envelope::from_files(&files)?;
//! let now = 1_700_000_000; // unix seconds, from the caller's clock
//! let invite = Invite::new(
//!     env.host_id().clone(),
//!     env.peer_id().clone(),
//!     now,
//!     vec!["203.0.113.7:40000".parse()?],
//!     vec![],
//!     NatFacts::default(),
//! )?;
//! let sealed: Vec<u8> = env.seal(&invite)?; // DER; the mediator carries it
//! # let received = sealed;
//! match env.open(&received, now + 3)? {
//!     // every check passed; otherwise a typed OpenError
//!     Message::Accept(accept) => println!("accepted by {}", accept.from),
//!     Message::Decline(no) => println!("declined: {}", no.reason()),
//!     Message::Invite(_) => println!("an invite, not the answer"),
//! }
//! # Ok(())
//! # }
//! ```

pub mod message;
// Public only for the fuzz targets: the reader of decrypted S/MIME entities.
#[doc(hidden)]
pub mod mime;
pub mod replay;
pub mod seal;

pub use crate::identity::PeerId;
pub use message::{
    Accept, Body, Decline, Invite, Kind, Message, MessageError, Method, NatFacts, PortMapping,
    RelayPolicy, Rendezvous, Secret, SessionId, Side,
};
pub use replay::{ReplayError, ReplayGuard};
pub use seal::{Envelope, EnvelopeFiles, Freshness, OpenError, SealError, SetupError};
