//! What runs on the punched path once the corridor is open.

pub mod command;

use std::fmt;
use std::net::SocketAddr;

use crate::secret::{Zeroize, Zeroizing};

/// A 256-bit key derived from both sides' secrets; `Debug` never prints it, equality is
/// constant-time, and the bytes are wiped on drop.
#[derive(Clone)]
pub struct SessionKey(pub [u8; 32]);

impl PartialEq for SessionKey {
    fn eq(&self, other: &SessionKey) -> bool {
        openssl::memcmp::eq(&self.0, &other.0)
    }
}

impl Eq for SessionKey {}

impl Drop for SessionKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

impl SessionKey {
    /// Lower-case hex, for handing to an executor's environment; wiped on drop.
    pub fn to_hex(&self) -> Zeroizing<String> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        // Allocated once at its final size, so no reallocation leaves a copy behind.
        let mut hex = Zeroizing::new(String::with_capacity(64));
        for b in self.0 {
            hex.push(DIGITS[usize::from(b >> 4)] as char);
            hex.push(DIGITS[usize::from(b & 0xf)] as char);
        }
        hex
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
#[non_exhaustive]
pub enum ExecError {
    /// The executor's settings are wrong (named in the message).
    Config(String),
    /// The application could not be started.
    Spawn(String),
    /// The application failed (non-zero exit, a plugin error).
    Failed(String),
    /// The path died and the executor wants a new one: the inviting side invites
    /// again and runs the same executor on the new corridor (a plugin reports this
    /// with `PX_ERR_UNREACHABLE`, e.g. the tunnel's `persistent`).
    PathLost(String),
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Config(m) => write!(f, "executor settings: {m}"),
            ExecError::Spawn(m) => write!(f, "executor could not start: {m}"),
            ExecError::Failed(m) => write!(f, "executor failed: {m}"),
            ExecError::PathLost(m) => write!(f, "executor lost the path: {m}"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::ManuallyDrop;

    #[test]
    fn session_key_hex_and_redacted_debug() {
        let k = SessionKey(core::array::from_fn(|i| i as u8 * 8));
        assert_eq!(
            k.to_hex().as_str(),
            "0008101820283038404850586068707880889098a0a8b0b8c0c8d0d8e0e8f0f8"
        );
        assert_eq!(format!("{k:?}"), "SessionKey(<redacted>)");
        let c = Corridor {
            inner: "127.0.0.1:1".parse().unwrap(),
            outer: "127.0.0.1:2".parse().unwrap(),
            peer: "127.0.0.1:3".parse().unwrap(),
            host_id: "a@b/c".into(),
            peer_id: "d@e/f".into(),
            key: SessionKey([0xab; 32]),
            accepted: true,
        };
        assert!(!format!("{c:?}").to_lowercase().contains("abab"), "{c:?}");
    }

    #[test]
    fn session_key_is_wiped_on_drop() {
        let mut k = ManuallyDrop::new(SessionKey([0x5a; 32]));
        // SAFETY: dropped once; the storage stays ours (inline array, no heap) and is
        // only read afterwards, never dropped again.
        unsafe { ManuallyDrop::drop(&mut k) };
        assert_eq!(k.0, [0; 32]);
    }
}
