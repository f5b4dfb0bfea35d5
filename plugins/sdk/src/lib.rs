//! Write plexus plugins in safe Rust.
//!
//! Implement [`MediatorPlugin`] or [`ExecutorPlugin`] and add one line,
//! [`export_mediator!`] or [`export_executor!`]. The macro generates the C glue of
//! `plexus-plugin-abi`: the entry symbol, the descriptor and vtable, buffer management,
//! and a `catch_unwind` around every call so a panic becomes an error code and message
//! instead of aborting the host. `create` installs a `log` logger that forwards the
//! plugin's records to the host's log callback.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub use log;
pub use plexus_plugin_abi as abi;

#[doc(hidden)]
pub mod glue;

/// Errors a plugin reports; each maps to one ABI status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// The settings are wrong (say which one and what is expected).
    Config(String),
    /// The channel could not be reached; a retry may help. From an executor: the path
    /// died and the inviting side should invite again.
    Unreachable(String),
    /// The channel refused the credentials.
    Auth(String),
    /// The channel answered something unexpected.
    Protocol(String),
    /// Local I/O failed.
    Io(String),
    /// The host passed an invalid argument.
    InvalidArgument(String),
    /// Executor: the application could not be started.
    Spawn(String),
    /// Executor: the application failed.
    Failed(String),
}

impl PluginError {
    /// The ABI status code for this error.
    pub fn code(&self) -> i32 {
        use abi::*;
        match self {
            PluginError::Config(_) => PX_ERR_CONFIG,
            PluginError::Unreachable(_) => PX_ERR_UNREACHABLE,
            PluginError::Auth(_) => PX_ERR_AUTH,
            PluginError::Protocol(_) => PX_ERR_PROTOCOL,
            PluginError::Io(_) => PX_ERR_IO,
            PluginError::InvalidArgument(_) => PX_ERR_INVALID_ARGUMENT,
            PluginError::Spawn(_) => PX_ERR_SPAWN,
            PluginError::Failed(_) => PX_ERR_FAILED,
        }
    }

    /// The message without the category.
    pub fn message(&self) -> &str {
        match self {
            PluginError::Config(m)
            | PluginError::Unreachable(m)
            | PluginError::Auth(m)
            | PluginError::Protocol(m)
            | PluginError::Io(m)
            | PluginError::InvalidArgument(m)
            | PluginError::Spawn(m)
            | PluginError::Failed(m) => m,
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for PluginError {}

impl From<std::io::Error> for PluginError {
    fn from(e: std::io::Error) -> Self {
        PluginError::Io(e.to_string())
    }
}

/// One message picked up from the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Id the host passes back to [`MediatorPlugin::acknowledge`].
    pub id: String,
    /// The sender's address on this channel (informational).
    pub from: String,
    /// The sealed bytes, untouched.
    pub sealed: Vec<u8>,
}

/// What the host decided about a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Opened and used: remove it from the channel.
    Handled,
    /// Failed to open or verify: leave it (or quarantine it).
    Rejected,
}

/// What the host says about the channel an instance serves (ABI hosts that predate
/// these fields give all of them empty).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Channel {
    /// This host's id, empty when the host does not say.
    pub host_id: String,
    /// The peer's id, empty when the host does not say.
    pub peer_id: String,
    /// A secret only this host and the peer share (the same bytes on both sides),
    /// `None` when the host has none; wiped on drop, never printed.
    pub secret: Option<Vec<u8>>,
}

impl Drop for Channel {
    fn drop(&mut self) {
        if let Some(s) = self.secret.as_mut() {
            zeroize::Zeroize::zeroize(s);
        }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("host_id", &self.host_id)
            .field("peer_id", &self.peer_id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A rendezvous transport carrying opaque sealed bytes.
///
/// The host never uses one instance from two threads at once.
pub trait MediatorPlugin: Sized + Send + 'static {
    /// Short name for logs.
    const NAME: &'static str;
    /// Builds an instance from the UTF-8 YAML or JSON settings of the profile.
    fn create(settings: &str) -> Result<Self, PluginError>;
    /// Like [`MediatorPlugin::create`], with what the host says about the channel; the
    /// host calls this one. The default ignores `channel`.
    fn create_for(settings: &str, channel: &Channel) -> Result<Self, PluginError> {
        let _ = channel;
        Self::create(settings)
    }
    /// Delivers `sealed` to the peer whose address on this channel is `to`.
    fn send(&mut self, to: &str, sealed: &[u8]) -> Result<(), PluginError>;
    /// Waits at most `timeout` for the next message; `Ok(None)` on timeout. A message
    /// returned and not yet acknowledged is not returned again.
    fn receive(&mut self, timeout: Duration) -> Result<Option<Message>, PluginError>;
    /// Reports what became of message `id`.
    fn acknowledge(&mut self, id: &str, outcome: Outcome) -> Result<(), PluginError>;
}

/// The 32-byte session key; `Debug` never prints it, and it is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub [u8; 32]);

impl Drop for Key {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// An open corridor.
#[derive(Debug, Clone)]
pub struct Corridor {
    /// Local endpoint the corridor was punched from (free to bind).
    pub inner: SocketAddr,
    /// This side's public endpoint.
    pub outer: SocketAddr,
    /// The peer's endpoint.
    pub peer: SocketAddr,
    /// This host's id.
    pub host_id: String,
    /// The peer's id.
    pub peer_id: String,
    /// Key derived from both sides' secrets.
    pub key: Key,
    /// Whether this side accepted (true) or invited (false).
    pub accepted: bool,
}

/// How an executor finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Exit status, when the application is a process that exited.
    pub status: Option<i32>,
    /// What happened / where the output went, for the user.
    pub output: String,
}

/// Runs an application on an open corridor.
pub trait ExecutorPlugin: Sized + Send + 'static {
    /// Short name for logs.
    const NAME: &'static str;
    /// Builds an instance from the UTF-8 YAML or JSON settings of the profile.
    fn create(settings: &str) -> Result<Self, PluginError>;
    /// Runs until the application is done. [`PluginError::Unreachable`] from an
    /// inviting side means "the path died, give me a new one": `plexus invite` invites
    /// again (with backoff, a bounded number of times) and calls `run` on this same
    /// instance with the new corridor.
    fn run(&mut self, corridor: &Corridor) -> Result<RunReport, PluginError>;
}

/// Exports `$ty` (a [`MediatorPlugin`]) as this library's plugin: generates the entry
/// symbol `plexus_plugin_entry_v1`, the descriptor and the vtable. Use once per cdylib.
#[macro_export]
macro_rules! export_mediator {
    ($ty:ty) => {
        const _: () = {
            use $crate::abi;
            use $crate::glue;
            static VTABLE: abi::PxMediatorVtable = abi::PxMediatorVtable {
                struct_size: ::std::mem::size_of::<abi::PxMediatorVtable>() as u32,
                reserved: 0,
                free_bytes: Some(glue::free_bytes),
                create: Some(glue::mediator_create::<$ty>),
                send: Some(glue::mediator_send::<$ty>),
                receive: Some(glue::mediator_receive::<$ty>),
                acknowledge: Some(glue::mediator_acknowledge::<$ty>),
                destroy: Some(glue::destroy::<$ty>),
            };
            static DESCRIPTOR: abi::PxDescriptor = abi::PxDescriptor {
                abi_version: abi::ABI_VERSION,
                struct_size: ::std::mem::size_of::<abi::PxDescriptor>() as u32,
                kind: abi::PX_KIND_MEDIATOR,
                reserved: 0,
                name: abi::PxBytes::new(<$ty as $crate::MediatorPlugin>::NAME.as_bytes()),
                vtable: &VTABLE as *const abi::PxMediatorVtable as *const ::std::ffi::c_void,
            };
            #[no_mangle]
            pub extern "C" fn plexus_plugin_entry_v1() -> *const abi::PxDescriptor {
                &DESCRIPTOR
            }
        };
    };
}

/// Exports `$ty` (an [`ExecutorPlugin`]) as this library's plugin; see
/// [`export_mediator!`].
#[macro_export]
macro_rules! export_executor {
    ($ty:ty) => {
        const _: () = {
            use $crate::abi;
            use $crate::glue;
            static VTABLE: abi::PxExecutorVtable = abi::PxExecutorVtable {
                struct_size: ::std::mem::size_of::<abi::PxExecutorVtable>() as u32,
                reserved: 0,
                free_bytes: Some(glue::free_bytes),
                create: Some(glue::executor_create::<$ty>),
                run: Some(glue::executor_run::<$ty>),
                destroy: Some(glue::destroy::<$ty>),
            };
            static DESCRIPTOR: abi::PxDescriptor = abi::PxDescriptor {
                abi_version: abi::ABI_VERSION,
                struct_size: ::std::mem::size_of::<abi::PxDescriptor>() as u32,
                kind: abi::PX_KIND_EXECUTOR,
                reserved: 0,
                name: abi::PxBytes::new(<$ty as $crate::ExecutorPlugin>::NAME.as_bytes()),
                vtable: &VTABLE as *const abi::PxExecutorVtable as *const ::std::ffi::c_void,
            };
            #[no_mangle]
            pub extern "C" fn plexus_plugin_entry_v1() -> *const abi::PxDescriptor {
                &DESCRIPTOR
            }
        };
    };
}
