//! What runs on the punched path once the corridor is open.

use std::fmt;
use std::net::SocketAddr;

/// A 256-bit key derived from both sides' secrets; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey(pub [u8; 32]);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

impl SessionKey {
    /// Lower-case hex, for handing to an executor's environment.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Everything an executor learns about an open corridor.
#[derive(Debug, Clone)]
pub struct Corridor {
    /// Local endpoint the corridor was punched from (the socket is released before the
    /// executor starts, so the application can bind it).
    pub inner: SocketAddr,
    /// This side's public endpoint as the NAT maps `inner`.
    pub outer: SocketAddr,
    /// The peer's endpoint the handshake completed with.
    pub peer: SocketAddr,
    /// This host's id (`mail@domain/instance`).
    pub host_id: String,
    /// The peer's id.
    pub peer_id: String,
    /// Key derived from both secrets and the session id (for a pre-shared key).
    pub key: SessionKey,
    /// Whether this side accepted (true) or invited (false).
    pub accepted: bool,
}

/// How an executor finished.
#[derive(Debug, Clone)]
pub struct ExecReport {
    /// Exit status of the application, when it is a process and it exited.
    pub status: Option<i32>,
    /// Where its output went, for the user to look ("inherited", a log file path…).
    pub output: String,
}

/// Errors of an executor.
#[derive(Debug)]
pub enum ExecError {
    /// The executor's settings are wrong (named in the message).
    Config(String),
    /// The application could not be started.
    Spawn(String),
    /// The application failed (non-zero exit, a plugin error).
    Failed(String),
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Config(m) => write!(f, "executor settings: {m}"),
            ExecError::Spawn(m) => write!(f, "executor could not start: {m}"),
            ExecError::Failed(m) => write!(f, "executor failed: {m}"),
        }
    }
}

impl std::error::Error for ExecError {}

/// Runs the user's application on an open corridor. Built-ins implement it directly;
/// dynamic-library plugins are adapted to it by the plugin loader.
pub trait Executor: Send {
    /// Short name for logs.
    fn name(&self) -> &str;
    /// Start the application and wait for it to finish.
    fn run(&mut self, corridor: &Corridor) -> Result<ExecReport, ExecError>;
}
