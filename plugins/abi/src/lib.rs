//! The C ABI between plexus and its dynamic-library plugins, version 1.
//!
//! Only plain `#[repr(C)]` data crosses the boundary: pointer+length byte slices,
//! integer status codes and opaque handles. `plugins/plexus-plugin.h` describes exactly
//! these types for C authors; a test keeps the two in sync.
//!
//! Rules of the ABI:
//! - A plugin exports one symbol, [`ENTRY_SYMBOL`] (`plexus_plugin_entry_v1`), a function
//!   returning a pointer to a static [`PxDescriptor`]. The host checks `abi_version` and
//!   `struct_size` before reading anything else.
//! - Structs only grow at the end; each starts with (or, for the descriptor, carries) a
//!   `struct_size` so either side can tell which fields the other knows.
//! - Whoever allocates frees: byte buffers a plugin hands to the host ([`PxOwnedBytes`])
//!   are released with the vtable's `free_bytes`; error messages are written into a
//!   buffer the host owns ([`PxErrBuf`]).
//! - Handles are used by one thread at a time but may move between threads.
//! - [`PxHost`] grew once (host and peer ids, a per-peer channel secret); a plugin reads
//!   the new fields only when the host's `struct_size` covers them, and the host accepts
//!   plugins built before them unchanged, so the ABI version stayed 1.
//! - Function pointers are `Option<extern "C" fn>`: the guaranteed-nullable C function
//!   pointer, so a missing entry reads as `None` instead of undefined behaviour.

#![no_std]

use core::ffi::c_void;

/// The ABI version this crate describes.
pub const ABI_VERSION: u32 = 1;
/// Name of the exported entry function, NUL-terminated for `dlsym`.
pub const ENTRY_SYMBOL: &[u8] = b"plexus_plugin_entry_v1\0";

/// Status: success.
pub const PX_OK: i32 = 0;
/// Status of `receive`: no message arrived within the timeout.
pub const PX_NONE: i32 = 1;
/// Status: the settings are invalid (the message names what is wrong).
pub const PX_ERR_CONFIG: i32 = -1;
/// Status: the channel could not be reached; a retry may help. From an executor's
/// `run`: the path died, and the inviting side should invite again and run the same
/// instance on the new corridor.
pub const PX_ERR_UNREACHABLE: i32 = -2;
/// Status: the channel refused the credentials.
pub const PX_ERR_AUTH: i32 = -3;
/// Status: the channel answered something unexpected.
pub const PX_ERR_PROTOCOL: i32 = -4;
/// Status: local I/O failed.
pub const PX_ERR_IO: i32 = -5;
/// Status: the plugin panicked (or hit an internal bug) inside the call.
pub const PX_ERR_PANIC: i32 = -6;
/// Status: the host passed an invalid argument (null pointer, bad UTF-8).
pub const PX_ERR_INVALID_ARGUMENT: i32 = -7;
/// Status of an executor: the application could not be started.
pub const PX_ERR_SPAWN: i32 = -8;
/// Status of an executor: the application failed.
pub const PX_ERR_FAILED: i32 = -9;

/// Descriptor kind: a rendezvous transport, `vtable` points to a [`PxMediatorVtable`].
pub const PX_KIND_MEDIATOR: u32 = 1;
/// Descriptor kind: an executor, `vtable` points to a [`PxExecutorVtable`].
pub const PX_KIND_EXECUTOR: u32 = 2;

/// Acknowledgement outcome: the message was opened and used.
pub const PX_OUTCOME_HANDLED: u32 = 1;
/// Acknowledgement outcome: the message failed to open or verify.
pub const PX_OUTCOME_REJECTED: u32 = 2;

/// Log levels, numerically equal to the `log` crate's `Level` values.
pub const PX_LOG_ERROR: u32 = 1;
/// Warning.
pub const PX_LOG_WARN: u32 = 2;
/// Information.
pub const PX_LOG_INFO: u32 = 3;
/// Debugging detail.
pub const PX_LOG_DEBUG: u32 = 4;
/// Tracing detail.
pub const PX_LOG_TRACE: u32 = 5;

/// A borrowed byte slice; valid only for the duration of the call it is passed to.
/// `ptr` may be null when `len` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PxBytes {
    /// First byte.
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

/// Bytes allocated by the plugin and handed to the host, which releases them with the
/// vtable's `free_bytes` (exactly `ptr` and `len` as received).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PxOwnedBytes {
    /// First byte (null when empty).
    pub ptr: *mut u8,
    /// Number of bytes.
    pub len: usize,
}

/// A buffer owned by the host into which the plugin writes an UTF-8 error message:
/// at most `cap` bytes at `ptr`, then sets `len`.
#[repr(C)]
#[derive(Debug)]
pub struct PxErrBuf {
    /// Host-owned storage.
    pub ptr: *mut u8,
    /// Capacity of the storage.
    pub cap: usize,
    /// Bytes written by the plugin (the host clamps it to `cap`).
    pub len: usize,
}

/// An opaque plugin instance. Only ever used behind a pointer.
#[repr(C)]
pub struct PxHandle {
    _private: [u8; 0],
}

/// The host's log sink: `target` and `message` are UTF-8, valid during the call.
pub type PxLogFn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, level: u32, target: PxBytes, message: PxBytes)>;

/// Callbacks the host offers a plugin instance; valid until `destroy` returns.
#[repr(C)]
#[derive(Debug)]
pub struct PxHost {
    /// `size_of::<PxHost>()` as the host knows it.
    pub struct_size: u32,
    /// Most verbose level the host will record (one of the `PX_LOG_*`), 0 for none.
    pub max_log_level: u32,
    /// Passed back to `log` unchanged.
    pub ctx: *mut c_void,
    /// Where the plugin's log records go.
    pub log: PxLogFn,
    // ---- Fields added after the first release: present when `struct_size` reaches
    // [`PX_HOST_CHANNEL_SIZE`]. A plugin built before them reads only the fields above.
    /// This host's id (UTF-8), empty when the host does not say.
    pub host_id: PxBytes,
    /// The peer's id (UTF-8), empty when the host does not say.
    pub peer_id: PxBytes,
    /// A secret only this host and the peer can compute (the same bytes on both sides),
    /// empty when the profile allows none. Never log it.
    pub channel_secret: PxBytes,
}

/// `struct_size` of a [`PxHost`] of the first release (up to `log`): what every host
/// passes at least.
pub const PX_HOST_V1_SIZE: u32 =
    (core::mem::offset_of!(PxHost, log) + core::mem::size_of::<PxLogFn>()) as u32;
/// `struct_size` from which a [`PxHost`] carries `host_id`, `peer_id` and
/// `channel_secret`.
pub const PX_HOST_CHANNEL_SIZE: u32 =
    (core::mem::offset_of!(PxHost, channel_secret) + core::mem::size_of::<PxBytes>()) as u32;

/// What an entry symbol returns; static for the life of the process.
#[repr(C)]
#[derive(Debug)]
pub struct PxDescriptor {
    /// Must equal [`ABI_VERSION`].
    pub abi_version: u32,
    /// `size_of::<PxDescriptor>()` as the plugin knows it.
    pub struct_size: u32,
    /// [`PX_KIND_MEDIATOR`] or [`PX_KIND_EXECUTOR`].
    pub kind: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Short UTF-8 name for logs ("file", "telegram").
    pub name: PxBytes,
    /// The kind's vtable.
    pub vtable: *const c_void,
}

/// Type of the entry function.
pub type PxEntryFn = unsafe extern "C" fn() -> *const PxDescriptor;

/// Creates an instance from UTF-8 YAML or JSON settings; on success stores the handle.
pub type PxCreateFn = Option<
    unsafe extern "C" fn(
        settings: PxBytes,
        host: *const PxHost,
        out: *mut *mut PxHandle,
        err: *mut PxErrBuf,
    ) -> i32,
>;
/// Releases an instance.
pub type PxDestroyFn = Option<unsafe extern "C" fn(handle: *mut PxHandle)>;
/// Releases bytes the plugin allocated.
pub type PxFreeBytesFn = Option<unsafe extern "C" fn(bytes: PxOwnedBytes)>;

/// A message picked up by `receive`; every field is plugin-allocated.
#[repr(C)]
#[derive(Debug)]
pub struct PxMessage {
    /// Plugin-specific id used to acknowledge the message (UTF-8).
    pub id: PxOwnedBytes,
    /// The sender's address on this channel (UTF-8, informational).
    pub from: PxOwnedBytes,
    /// The sealed bytes as the peer's core produced them.
    pub sealed: PxOwnedBytes,
}

/// Functions of a mediator plugin.
#[repr(C)]
#[derive(Debug)]
pub struct PxMediatorVtable {
    /// `size_of::<PxMediatorVtable>()` as the plugin knows it.
    pub struct_size: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Releases a [`PxOwnedBytes`].
    pub free_bytes: PxFreeBytesFn,
    /// See [`PxCreateFn`].
    pub create: PxCreateFn,
    /// Delivers `sealed` to `to` (UTF-8 address on this channel): `PX_OK` or an error.
    pub send: Option<
        unsafe extern "C" fn(
            handle: *mut PxHandle,
            to: PxBytes,
            sealed: PxBytes,
            err: *mut PxErrBuf,
        ) -> i32,
    >,
    /// Waits up to `timeout_ms` for a message: `PX_OK` with `out` filled, `PX_NONE`, or
    /// an error. Messages returned and not yet acknowledged are not returned again.
    pub receive: Option<
        unsafe extern "C" fn(
            handle: *mut PxHandle,
            timeout_ms: u64,
            out: *mut PxMessage,
            err: *mut PxErrBuf,
        ) -> i32,
    >,
    /// Reports the fate of message `id`: one of the `PX_OUTCOME_*`.
    pub acknowledge: Option<
        unsafe extern "C" fn(
            handle: *mut PxHandle,
            id: PxBytes,
            outcome: u32,
            err: *mut PxErrBuf,
        ) -> i32,
    >,
    /// See [`PxDestroyFn`].
    pub destroy: PxDestroyFn,
}

/// An open corridor as an executor sees it. Endpoints are UTF-8 text `ip:port`
/// (`[v6]:port` for IPv6).
#[repr(C)]
pub struct PxCorridor {
    /// `size_of::<PxCorridor>()` as the host knows it.
    pub struct_size: u32,
    /// 1 when this side accepted, 0 when it invited.
    pub accepted: u32,
    /// Local endpoint the corridor was punched from (released, free to bind).
    pub inner: PxBytes,
    /// This side's public endpoint.
    pub outer: PxBytes,
    /// The peer's endpoint.
    pub peer: PxBytes,
    /// This host's id.
    pub host_id: PxBytes,
    /// The peer's id.
    pub peer_id: PxBytes,
    /// Session key derived from both sides' secrets.
    pub key: [u8; 32],
}

impl core::fmt::Debug for PxCorridor {
    /// Every field but the key, which is never printed.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PxCorridor")
            .field("struct_size", &self.struct_size)
            .field("accepted", &self.accepted)
            .field("inner", &self.inner)
            .field("outer", &self.outer)
            .field("peer", &self.peer)
            .field("host_id", &self.host_id)
            .field("peer_id", &self.peer_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// How an executor's `run` finished.
#[repr(C)]
#[derive(Debug)]
pub struct PxRunResult {
    /// 1 when `status` holds an exit status, 0 otherwise.
    pub has_status: u32,
    /// Exit status of the application.
    pub status: i32,
    /// Where its output went, UTF-8, plugin-allocated (may be empty).
    pub output: PxOwnedBytes,
}

/// Functions of an executor plugin.
#[repr(C)]
#[derive(Debug)]
pub struct PxExecutorVtable {
    /// `size_of::<PxExecutorVtable>()` as the plugin knows it.
    pub struct_size: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Releases a [`PxOwnedBytes`].
    pub free_bytes: PxFreeBytesFn,
    /// See [`PxCreateFn`].
    pub create: PxCreateFn,
    /// Runs the application on `corridor` until it finishes: `PX_OK` with `out` filled,
    /// or an error.
    pub run: Option<
        unsafe extern "C" fn(
            handle: *mut PxHandle,
            corridor: *const PxCorridor,
            out: *mut PxRunResult,
            err: *mut PxErrBuf,
        ) -> i32,
    >,
    /// See [`PxDestroyFn`].
    pub destroy: PxDestroyFn,
}

// SAFETY: descriptors and vtables are immutable statics; their pointers reference
// 'static data (names, functions), so sharing them between threads is sound.
unsafe impl Sync for PxDescriptor {}
unsafe impl Sync for PxMediatorVtable {}
unsafe impl Sync for PxExecutorVtable {}

impl PxBytes {
    /// The empty slice.
    pub const EMPTY: PxBytes = PxBytes {
        ptr: core::ptr::null(),
        len: 0,
    };

    /// Borrows `s` for the duration of a call.
    pub const fn new(s: &[u8]) -> PxBytes {
        PxBytes {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }
}

impl PxOwnedBytes {
    /// No bytes.
    pub const EMPTY: PxOwnedBytes = PxOwnedBytes {
        ptr: core::ptr::null_mut(),
        len: 0,
    };
}
