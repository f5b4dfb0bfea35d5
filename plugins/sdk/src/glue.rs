//! The C side of the SDK: what the export macros point the vtables at. Every function
//! here runs the plugin's code inside `catch_unwind`, so a panic turns into
//! `PX_ERR_PANIC` and a message instead of unwinding into (and aborting) the host.

use crate::abi::*;
use crate::{Channel, Corridor, ExecutorPlugin, Key, MediatorPlugin, Outcome, PluginError};
use std::any::Any;
use std::ffi::c_void;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

/// Copies `msg` into the host's error buffer, truncated at a char boundary. Never panics.
unsafe fn write_err(err: *mut PxErrBuf, msg: &str) {
    if err.is_null() {
        return;
    }
    let buf = &mut *err;
    if buf.ptr.is_null() {
        buf.len = 0;
        return;
    }
    let mut n = msg.len().min(buf.cap);
    while n > 0 && !msg.is_char_boundary(n) {
        n -= 1;
    }
    std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.ptr, n);
    buf.len = n;
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs `f` with panics caught; errors become their code plus a message in `err`.
unsafe fn guard(
    err: *mut PxErrBuf,
    what: &str,
    f: impl FnOnce() -> Result<i32, PluginError>,
) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            write_err(err, e.message());
            e.code()
        }
        Err(payload) => {
            // Formatting the payload could itself panic only on allocation failure.
            let msg = catch_unwind(AssertUnwindSafe(|| {
                format!("plugin panicked in {what}: {}", panic_message(&*payload))
            }))
            .unwrap_or_else(|_| String::new());
            write_err(err, &msg);
            PX_ERR_PANIC
        }
    }
}

unsafe fn borrowed<'a>(b: PxBytes, what: &str) -> Result<&'a [u8], PluginError> {
    if b.len == 0 {
        Ok(&[])
    } else if b.ptr.is_null() {
        Err(PluginError::InvalidArgument(format!(
            "{what}: null pointer with a length"
        )))
    } else {
        Ok(std::slice::from_raw_parts(b.ptr, b.len))
    }
}

unsafe fn borrowed_str<'a>(b: PxBytes, what: &str) -> Result<&'a str, PluginError> {
    std::str::from_utf8(borrowed(b, what)?)
        .map_err(|_| PluginError::InvalidArgument(format!("{what} is not UTF-8")))
}

/// Hands `bytes` to the host; released by [`free_bytes`].
pub fn into_owned(bytes: Vec<u8>) -> PxOwnedBytes {
    if bytes.is_empty() {
        return PxOwnedBytes::EMPTY;
    }
    let boxed = bytes.into_boxed_slice();
    let len = boxed.len();
    PxOwnedBytes {
        ptr: Box::into_raw(boxed) as *mut u8,
        len,
    }
}

/// Releases bytes made by [`into_owned`].
///
/// # Safety
/// `bytes` must come from [`into_owned`] of this library and not be freed twice.
pub unsafe extern "C" fn free_bytes(bytes: PxOwnedBytes) {
    if bytes.ptr.is_null() || bytes.len == 0 {
        return;
    }
    let _ = catch_unwind(|| {
        drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
            bytes.ptr, bytes.len,
        )));
    });
}

// ---- logging -------------------------------------------------------------------------

struct HostLog {
    /// Registration number (one per create call).
    token: u64,
    /// The instance this host belongs to, once created (0 while creating).
    handle: usize,
    ctx: usize,
    log: unsafe extern "C" fn(*mut c_void, u32, PxBytes, PxBytes),
}

/// Host log callbacks of live instances. `log` is process-global, so records go to the
/// most recently registered one; an entry leaves when its instance is destroyed (the ABI
/// only promises the callback until then).
static HOSTS: Mutex<Vec<HostLog>> = Mutex::new(Vec::new());
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);
static LOGGER_ONCE: Once = Once::new();

fn hosts() -> std::sync::MutexGuard<'static, Vec<HostLog>> {
    HOSTS.lock().unwrap_or_else(|p| p.into_inner())
}

struct Forwarder;

impl log::Log for Forwarder {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        let target = record.target();
        let hosts = hosts();
        if let Some(host) = hosts.last() {
            // SAFETY: entries are removed before their instance is destroyed.
            unsafe {
                (host.log)(
                    host.ctx as *mut c_void,
                    record.level() as u32,
                    PxBytes::new(target.as_bytes()),
                    PxBytes::new(message.as_bytes()),
                )
            };
        }
    }

    fn flush(&self) {}
}

static FORWARDER: Forwarder = Forwarder;

/// Registers the host's log callback for an instance being created and points this
/// library's `log` records at it; returns the registration token (0: nothing
/// registered).
unsafe fn register_host(host: *const PxHost) -> u64 {
    if host.is_null() {
        return 0;
    }
    let host = &*host;
    // A host of the first release passes the shorter struct; logging is in both.
    if host.struct_size < PX_HOST_V1_SIZE {
        return 0;
    }
    let Some(log_fn) = host.log else { return 0 };
    let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    hosts().push(HostLog {
        token,
        handle: 0,
        ctx: host.ctx as usize,
        log: log_fn,
    });
    LOGGER_ONCE.call_once(|| {
        let _ = log::set_logger(&FORWARDER);
    });
    log::set_max_level(match host.max_log_level {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        4 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    });
    token
}

/// Ties a registration to its instance, or drops it when create failed (`handle` 0).
fn settle_host(token: u64, handle: usize) {
    let mut hosts = hosts();
    if handle == 0 {
        hosts.retain(|h| h.token != token);
    } else if let Some(h) = hosts.iter_mut().find(|h| h.token == token) {
        h.handle = handle;
    }
}

// ---- instances -----------------------------------------------------------------------

unsafe fn instance<'a, T>(handle: *mut PxHandle) -> Result<&'a mut T, PluginError> {
    if handle.is_null() {
        return Err(PluginError::InvalidArgument("null handle".into()));
    }
    Ok(&mut *(handle as *mut T))
}

unsafe fn create<T>(
    settings: PxBytes,
    host: *const PxHost,
    out: *mut *mut PxHandle,
    err: *mut PxErrBuf,
    make: impl FnOnce(&str) -> Result<T, PluginError>,
) -> i32 {
    let token = register_host(host);
    let mut created: usize = 0;
    let code = guard(err, "create", || {
        if out.is_null() {
            return Err(PluginError::InvalidArgument("null output handle".into()));
        }
        let settings = borrowed_str(settings, "settings")?;
        let plugin = make(settings)?;
        let handle = Box::into_raw(Box::new(plugin)) as *mut PxHandle;
        created = handle as usize;
        *out = handle;
        Ok(PX_OK)
    });
    if token != 0 {
        settle_host(token, created);
    }
    code
}

/// Releases an instance made by one of the create functions.
///
/// # Safety
/// `handle` must come from this library's create and not be destroyed twice.
pub unsafe extern "C" fn destroy<T>(handle: *mut PxHandle) {
    if handle.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        drop(Box::from_raw(handle as *mut T));
    }));
    // After the drop: the instance may log while it shuts down.
    hosts().retain(|h| h.handle != handle as usize);
}

/// Vtable `create` of a mediator.
///
/// # Safety
/// Pointers as described in the C header.
pub unsafe extern "C" fn mediator_create<T: MediatorPlugin>(
    settings: PxBytes,
    host: *const PxHost,
    out: *mut *mut PxHandle,
    err: *mut PxErrBuf,
) -> i32 {
    let channel = channel_of(host);
    create(settings, host, out, err, |s| T::create_for(s, &channel))
}

/// The channel fields of `host`, when its size says it has them; bad UTF-8 or a null
/// pointer with a length reads as "not given".
unsafe fn channel_of(host: *const PxHost) -> Channel {
    let mut channel = Channel::default();
    if host.is_null() || (*host).struct_size < PX_HOST_CHANNEL_SIZE {
        return channel;
    }
    let host = &*host;
    let text = |b: PxBytes| {
        borrowed_str(b, "id")
            .map(str::to_string)
            .unwrap_or_default()
    };
    channel.host_id = text(host.host_id);
    channel.peer_id = text(host.peer_id);
    channel.secret = borrowed(host.channel_secret, "channel secret")
        .ok()
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec);
    channel
}

/// Vtable `send` of a mediator.
///
/// # Safety
/// Pointers as described in the C header.
pub unsafe extern "C" fn mediator_send<T: MediatorPlugin>(
    handle: *mut PxHandle,
    to: PxBytes,
    sealed: PxBytes,
    err: *mut PxErrBuf,
) -> i32 {
    guard(err, "send", || {
        let plugin = instance::<T>(handle)?;
        let to = borrowed_str(to, "recipient address")?;
        let sealed = borrowed(sealed, "sealed bytes")?;
        plugin.send(to, sealed)?;
        Ok(PX_OK)
    })
}

/// Vtable `receive` of a mediator.
///
/// # Safety
/// Pointers as described in the C header.
pub unsafe extern "C" fn mediator_receive<T: MediatorPlugin>(
    handle: *mut PxHandle,
    timeout_ms: u64,
    out: *mut PxMessage,
    err: *mut PxErrBuf,
) -> i32 {
    guard(err, "receive", || {
        let plugin = instance::<T>(handle)?;
        if out.is_null() {
            return Err(PluginError::InvalidArgument("null output message".into()));
        }
        match plugin.receive(Duration::from_millis(timeout_ms))? {
            None => Ok(PX_NONE),
            Some(m) => {
                *out = PxMessage {
                    id: into_owned(m.id.into_bytes()),
                    from: into_owned(m.from.into_bytes()),
                    sealed: into_owned(m.sealed),
                };
                Ok(PX_OK)
            }
        }
    })
}

/// Vtable `acknowledge` of a mediator.
///
/// # Safety
/// Pointers as described in the C header.
pub unsafe extern "C" fn mediator_acknowledge<T: MediatorPlugin>(
    handle: *mut PxHandle,
    id: PxBytes,
    outcome: u32,
    err: *mut PxErrBuf,
) -> i32 {
    guard(err, "acknowledge", || {
        let plugin = instance::<T>(handle)?;
        let id = borrowed_str(id, "message id")?;
        let outcome = match outcome {
            PX_OUTCOME_HANDLED => Outcome::Handled,
            PX_OUTCOME_REJECTED => Outcome::Rejected,
            other => {
                return Err(PluginError::InvalidArgument(format!(
                    "unknown outcome {other}"
                )))
            }
        };
        plugin.acknowledge(id, outcome)?;
        Ok(PX_OK)
    })
}

/// Vtable `create` of an executor.
///
/// # Safety
/// Pointers as described in the C header.
pub unsafe extern "C" fn executor_create<T: ExecutorPlugin>(
    settings: PxBytes,
    host: *const PxHost,
    out: *mut *mut PxHandle,
    err: *mut PxErrBuf,
) -> i32 {
    create(settings, host, out, err, T::create)
}

unsafe fn endpoint(b: PxBytes, what: &str) -> Result<SocketAddr, PluginError> {
    let text = borrowed_str(b, what)?;
    text.parse()
        .map_err(|_| PluginError::InvalidArgument(format!("{what} {text:?} is not ip:port")))
}

/// Reads a corridor passed by the host.
///
/// # Safety
/// `c` must point to a valid `PxCorridor` or be null.
pub unsafe fn corridor_from_c(c: *const PxCorridor) -> Result<Corridor, PluginError> {
    if c.is_null() {
        return Err(PluginError::InvalidArgument("null corridor".into()));
    }
    let c = &*c;
    if (c.struct_size as usize) < std::mem::size_of::<PxCorridor>() {
        return Err(PluginError::InvalidArgument(format!(
            "corridor struct of {} bytes, expected at least {}",
            c.struct_size,
            std::mem::size_of::<PxCorridor>()
        )));
    }
    Ok(Corridor {
        inner: endpoint(c.inner, "inner endpoint")?,
        outer: endpoint(c.outer, "outer endpoint")?,
        peer: endpoint(c.peer, "peer endpoint")?,
        host_id: borrowed_str(c.host_id, "host id")?.to_string(),
        peer_id: borrowed_str(c.peer_id, "peer id")?.to_string(),
        key: Key(c.key),
        accepted: c.accepted != 0,
    })
}

/// Vtable `run` of an executor.
///
/// # Safety
/// Pointers as described in the C header.
pub unsafe extern "C" fn executor_run<T: ExecutorPlugin>(
    handle: *mut PxHandle,
    corridor: *const PxCorridor,
    out: *mut PxRunResult,
    err: *mut PxErrBuf,
) -> i32 {
    guard(err, "run", || {
        let plugin = instance::<T>(handle)?;
        if out.is_null() {
            return Err(PluginError::InvalidArgument("null output result".into()));
        }
        let corridor = corridor_from_c(corridor)?;
        let report = plugin.run(&corridor)?;
        *out = PxRunResult {
            has_status: report.status.is_some() as u32,
            status: report.status.unwrap_or(0),
            output: into_owned(report.output.into_bytes()),
        };
        Ok(PX_OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_wiped_on_drop_and_never_printed() {
        let mut k = std::mem::ManuallyDrop::new(Key([0x5a; 32]));
        assert_eq!(format!("{:?}", *k), "Key(<redacted>)");
        // SAFETY: dropped once; the inline array stays ours and is only read afterwards.
        unsafe { std::mem::ManuallyDrop::drop(&mut k) };
        assert_eq!(k.0, [0; 32]);
    }

    #[test]
    fn error_messages_are_truncated_on_a_char_boundary() {
        let mut storage = [0u8; 5];
        let mut err = PxErrBuf {
            ptr: storage.as_mut_ptr(),
            cap: 5,
            len: 99,
        };
        unsafe { write_err(&mut err, "abcé€") };
        assert_eq!(err.len, 5);
        assert_eq!(&storage[..err.len], "abcé".as_bytes());
        let mut err = PxErrBuf {
            ptr: storage.as_mut_ptr(),
            cap: 4,
            len: 0,
        };
        unsafe { write_err(&mut err, "abcé") };
        assert_eq!(&storage[..err.len], b"abc");
        unsafe { write_err(std::ptr::null_mut(), "ignored") };
    }

    #[test]
    fn a_panic_becomes_an_error_code_and_message() {
        let mut storage = [0u8; 128];
        let mut err = PxErrBuf {
            ptr: storage.as_mut_ptr(),
            cap: 128,
            len: 0,
        };
        let code = unsafe { guard(&mut err, "send", || panic!("boom {}", 7)) };
        assert_eq!(code, PX_ERR_PANIC);
        assert_eq!(&storage[..err.len], b"plugin panicked in send: boom 7");
        let code = unsafe { guard(&mut err, "send", || Err(PluginError::Auth("no".into()))) };
        assert_eq!((code, &storage[..err.len]), (PX_ERR_AUTH, &b"no"[..]));
    }

    #[test]
    fn owned_bytes_round_trip() {
        let b = into_owned(vec![1, 2, 3]);
        assert_eq!(
            unsafe { std::slice::from_raw_parts(b.ptr, b.len) },
            &[1, 2, 3]
        );
        unsafe { free_bytes(b) };
        let e = into_owned(Vec::new());
        assert!(e.ptr.is_null() && e.len == 0);
        unsafe { free_bytes(e) };
    }
}
