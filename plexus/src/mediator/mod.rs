//! Rendezvous transports.
//!
//! A mediator carries opaque, already sealed bytes (see `rendezvous`) between this host
//! and its peer over a channel the users control: e-mail (built in), a shared folder,
//! Telegram (plugins). The core seals and opens messages itself, so a mediator never
//! sees an endpoint or a secret.

use std::fmt;
use std::time::Duration;

/// One sealed message picked up from the channel.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Mediator-specific handle used to acknowledge this message (an IMAP UID, a file name…).
    pub id: String,
    /// The sender's address on this channel as the channel reports it (informational only:
    /// the peer is identified by its certificate, never by this).
    pub from: String,
    /// The sealed bytes exactly as the peer's core produced them.
    pub sealed: Vec<u8>,
}

/// What the core decided about an [`Incoming`] message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Opened and used: the mediator removes it (or moves it to the configured folder).
    Handled,
    /// Failed to open or verify: the mediator leaves it in place (or quarantines it).
    Rejected,
}

/// Errors of a rendezvous transport.
#[derive(Debug)]
#[non_exhaustive]
pub enum MediatorError {
    /// The channel could not be reached (DNS, TCP, TLS): usually worth a retry.
    Unreachable(String),
    /// The channel refused our credentials; retrying will not help.
    Auth(String),
    /// The channel answered something we do not understand or refuse to accept.
    Protocol(String),
    /// The mediator's own settings are wrong (named in the message).
    Config(String),
    /// Local I/O failed.
    Io(std::io::Error),
}

impl fmt::Display for MediatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediatorError::Unreachable(m) => write!(f, "rendezvous channel unreachable: {m}"),
            MediatorError::Auth(m) => write!(f, "rendezvous channel refused the login: {m}"),
            MediatorError::Protocol(m) => write!(f, "rendezvous channel protocol error: {m}"),
            MediatorError::Config(m) => write!(f, "rendezvous channel settings: {m}"),
            MediatorError::Io(e) => write!(f, "rendezvous channel I/O: {e}"),
        }
    }
}

impl std::error::Error for MediatorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MediatorError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for MediatorError {
    fn from(e: std::io::Error) -> Self {
        MediatorError::Io(e)
    }
}

/// A rendezvous transport. Built-ins implement it directly; dynamic-library plugins are
/// adapted to it by the plugin loader.
pub trait Mediator: Send {
    /// Short name for logs ("email", "file", a plugin's name).
    fn name(&self) -> &str;
    /// Deliver `sealed` to the peer whose channel address is `to`.
    fn send(&mut self, to: &str, sealed: &[u8]) -> Result<(), MediatorError>;
    /// Wait at most `timeout` for the next plexus message; `Ok(None)` on timeout.
    /// Messages already returned and not yet acknowledged are not returned again.
    fn receive(&mut self, timeout: Duration) -> Result<Option<Incoming>, MediatorError>;
    /// Report what became of a message returned by [`Mediator::receive`].
    fn acknowledge(&mut self, id: &str, outcome: Outcome) -> Result<(), MediatorError>;
}

pub mod email;
