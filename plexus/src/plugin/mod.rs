//! Dynamic-library plugins: loading, checking and adapting them to [`Mediator`] and
//! [`Executor`].
//!
//! A plugin is a shared library `libplexus_<name>.so` exporting
//! `plexus_plugin_entry_v1` (the C ABI of `plexus-plugin-abi`, header
//! `plugins/plexus-plugin.h`). Loading goes:
//! 1. resolve the library: a path as given, or a name searched in [`plugin_dirs`];
//! 2. check its permissions as ssh checks its files (see [`check_library`]), then open
//!    it and look up the entry symbol;
//! 3. check the descriptor's ABI version and struct size before reading anything else,
//!    then its kind, name and vtable (size and every function present);
//! 4. create an instance from the settings; the plugin's log records reach our logger.
//!
//! Libraries are never unloaded: unloading Rust cdylibs crashes on thread-local
//! destructors, and a plugin's threads may still run. Everything a plugin returns is
//! untrusted: statuses, lengths and UTF-8 are checked and bounded, a panic inside the
//! plugin comes back as an error.
//!
//! [`Mediator`]: crate::mediator::Mediator
//! [`Executor`]: crate::executor::Executor

mod channel;
mod executor;
mod mediator;

pub use channel::Channel;
pub use executor::PluginExecutor;
pub use mediator::PluginMediator;

use plexus_plugin_abi as abi;
use std::ffi::c_void;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Largest plugin name we accept (descriptor name and names looked up in directories).
const MAX_NAME: usize = 64;
/// Size of the error buffer handed to every call.
const ERR_CAP: usize = 4096;
/// Largest log message taken from a plugin (longer ones are truncated).
const MAX_LOG: usize = 64 * 1024;

/// Errors of loading and starting a plugin.
#[derive(Debug)]
#[non_exhaustive]
pub enum PluginError {
    /// The plugin name is not `[a-z0-9_-]{1,64}`.
    BadName(String),
    /// No `libplexus_<name>.so` in any plugin directory.
    NotFound {
        /// The name looked up.
        name: String,
        /// Every file tried.
        tried: Vec<PathBuf>,
    },
    /// The library, or a directory above it, may be changed by someone other than this
    /// user and root.
    Unsafe {
        /// The library.
        path: PathBuf,
        /// What is wrong and how to fix it, naming the file or directory.
        reason: String,
    },
    /// The dynamic loader refused the file (missing, not a shared library, bad deps).
    Open {
        /// The library.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// The library does not export `plexus_plugin_entry_v1`.
    MissingEntry {
        /// The library.
        path: PathBuf,
    },
    /// The library speaks another ABI version.
    AbiVersion {
        /// The library.
        path: PathBuf,
        /// Version it reports.
        found: u32,
    },
    /// A descriptor or vtable is smaller than ABI version 1 requires.
    StructSize {
        /// The library.
        path: PathBuf,
        /// Which struct.
        what: &'static str,
        /// Size it reports.
        found: u32,
        /// Size we need at least.
        expected: usize,
    },
    /// The plugin is a mediator where an executor was asked for, or the reverse.
    WrongKind {
        /// The library.
        path: PathBuf,
        /// What the profile asked for.
        expected: &'static str,
        /// What the library is ("mediator", "executor" or a number).
        found: String,
    },
    /// The descriptor is malformed (null pointers, missing functions, bad name).
    BadDescriptor {
        /// The library.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The plugin rejected its settings.
    Settings {
        /// Plugin name.
        plugin: String,
        /// The plugin's message.
        message: String,
    },
    /// The plugin failed to start for another reason (including a panic).
    Init {
        /// Plugin name.
        plugin: String,
        /// The plugin's message, prefixed with the status.
        message: String,
    },
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginError::BadName(n) => write!(
                f,
                "plugin name {n:?} is invalid: use 1-{MAX_NAME} of a-z, 0-9, '_' and '-', or give a path"
            ),
            PluginError::NotFound { name, tried } => {
                write!(f, "plugin {name:?} not found; tried")?;
                for p in tried {
                    write!(f, " {}", p.display())?;
                }
                write!(f, " (set PLEXUS_PLUGIN_DIR or give the library's path)")
            }
            PluginError::Unsafe { path, reason } => {
                write!(f, "refusing to load plugin {}: {reason}", path.display())
            }
            PluginError::Open { path, reason } => {
                write!(f, "cannot load plugin {}: {reason}", path.display())
            }
            PluginError::MissingEntry { path } => write!(
                f,
                "{} is not a plexus plugin: it does not export plexus_plugin_entry_v1",
                path.display()
            ),
            PluginError::AbiVersion { path, found } => write!(
                f,
                "plugin {} uses plugin ABI version {found}, this plexus speaks version {}: \
                 rebuild the plugin against this plexus",
                path.display(),
                abi::ABI_VERSION
            ),
            PluginError::StructSize { path, what, found, expected } => write!(
                f,
                "plugin {} has a {found}-byte {what}, ABI version {} needs at least {expected}: \
                 the plugin is broken or built against another header",
                path.display(),
                abi::ABI_VERSION
            ),
            PluginError::WrongKind { path, expected, found } => write!(
                f,
                "plugin {} is a {found}, not a {expected}: check the profile names the right plugin",
                path.display()
            ),
            PluginError::BadDescriptor { path, reason } => {
                write!(f, "plugin {} is broken: {reason}", path.display())
            }
            PluginError::Settings { plugin, message } => {
                write!(f, "plugin {plugin} rejected its settings: {message}")
            }
            PluginError::Init { plugin, message } => {
                write!(f, "plugin {plugin} failed to start: {message}")
            }
        }
    }
}

impl std::error::Error for PluginError {}

/// Directories searched for a plugin given by name, in order: each entry of
/// `$PLEXUS_PLUGIN_DIR` (colon-separated), `~/.local/lib/plexus/plugins`, the directory
/// of the running binary, and `<that>/../lib/plexus/plugins`.
pub fn plugin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(v) = std::env::var_os("PLEXUS_PLUGIN_DIR") {
        dirs.extend(std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".local/lib/plexus/plugins"));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        let beside = exe_dir.join("../lib/plexus/plugins");
        dirs.push(exe_dir);
        dirs.push(beside);
    }
    dirs
}

/// File name of plugin `name`: `libplexus_<name>.so` with `-` written as `_`.
pub fn library_file_name(name: &str) -> Result<String, PluginError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        return Err(PluginError::BadName(name.to_string()));
    }
    Ok(format!("libplexus_{}.so", name.replace('-', "_")))
}

/// Resolves a profile's plugin reference: a path (anything with a `/` or ending in
/// `.so`) as given, otherwise a name searched in `dirs`.
pub fn resolve_in(spec: &str, dirs: &[PathBuf]) -> Result<PathBuf, PluginError> {
    if spec.contains('/') || spec.ends_with(".so") {
        return Ok(PathBuf::from(spec));
    }
    let file = library_file_name(spec)?;
    let tried: Vec<PathBuf> = dirs.iter().map(|d| d.join(&file)).collect();
    match tried.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(PluginError::NotFound {
            name: spec.to_string(),
            tried,
        }),
    }
}

/// [`resolve_in`] over [`plugin_dirs`].
pub fn resolve(spec: &str) -> Result<PathBuf, PluginError> {
    resolve_in(spec, &plugin_dirs())
}

/// What a library says about itself, checked.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// The library file.
    pub path: PathBuf,
    /// The plugin's name.
    pub name: String,
    /// "mediator" or "executor".
    pub kind: &'static str,
}

/// A checked descriptor of a leaked (never unloaded) library.
struct Loaded {
    info: PluginInfo,
    vtable: *const c_void,
    vtable_size: u32,
}

fn kind_name(kind: u32) -> String {
    match kind {
        abi::PX_KIND_MEDIATOR => "mediator".into(),
        abi::PX_KIND_EXECUTOR => "executor".into(),
        k => format!("plugin of unknown kind {k}"),
    }
}

/// Refuses a library that someone other than this user or root could change, as ssh
/// refuses such keys and configuration: the file (symlinks resolved) must be a regular
/// file owned by this user or root and not writable by group or others, and so must
/// every directory from it up to `/`. A group- or world-writable directory passes only
/// with the sticky bit (like `/tmp`): there nobody else can rename or remove entries
/// that are ours or root's, and the owner check refuses entries of others. Returns the
/// resolved path, which is what must be loaded.
///
/// The loader opens by path, so this cannot be checked on the opened file; the residual
/// race is closed by the checks themselves: nothing on the checked path can be replaced
/// by anyone but this user or root between the check and the load.
pub fn check_library(path: &Path) -> Result<PathBuf, PluginError> {
    let real = path.canonicalize().map_err(|e| PluginError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let unsafe_ = |reason: String| PluginError::Unsafe {
        path: path.to_path_buf(),
        reason,
    };
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    let mut here: &Path = &real;
    loop {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(here).map_err(|e| PluginError::Open {
            path: path.to_path_buf(),
            reason: format!("{}: {e}", here.display()),
        })?;
        let what = if here == real {
            "the library"
        } else {
            "directory"
        };
        if here == real && !meta.file_type().is_file() {
            return Err(unsafe_(format!("{} is not a regular file", here.display())));
        }
        if meta.uid() != me && meta.uid() != 0 {
            return Err(unsafe_(format!(
                "{what} {} belongs to uid {}, neither this user nor root: \
                 install the plugin somewhere only you or root can write",
                here.display(),
                meta.uid()
            )));
        }
        let sticky_dir = meta.is_dir() && meta.mode() & 0o1000 != 0;
        if meta.mode() & 0o022 != 0 && !sticky_dir {
            return Err(unsafe_(format!(
                "{what} {} is writable by group or others (mode {:04o}): run chmod go-w {}",
                here.display(),
                meta.mode() & 0o7777,
                here.display()
            )));
        }
        match here.parent() {
            Some(p) => here = p,
            None => break,
        }
    }
    Ok(real)
}

/// Opens `path` and checks its descriptor, in the order the ABI demands.
fn open(path: &Path, expected_kind: u32) -> Result<Loaded, PluginError> {
    let bad = |reason: String| PluginError::BadDescriptor {
        path: path.to_path_buf(),
        reason,
    };
    let real = check_library(path)?;
    // SAFETY: loading runs the library's initialisers; that is what loading a plugin
    // means, and the user chose this library in their profile. `real` is the checked
    // path (symlinks resolved), so no link can be repointed after the check.
    let lib = unsafe { libloading::Library::new(&real) }.map_err(|e| PluginError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    // Never unloaded (see the module docs).
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    // SAFETY: the symbol's type is fixed by the ABI.
    let entry: abi::PxEntryFn = unsafe { lib.get::<abi::PxEntryFn>(abi::ENTRY_SYMBOL) }
        .map(|s| *s)
        .map_err(|_| PluginError::MissingEntry {
            path: path.to_path_buf(),
        })?;
    // SAFETY: calling the entry function is the ABI's first step; a Rust SDK plugin's
    // entry cannot panic (it returns a static).
    let desc = unsafe { entry() };
    if desc.is_null() {
        return Err(bad("the entry function returned no descriptor".into()));
    }
    if (desc as usize) % std::mem::align_of::<abi::PxDescriptor>() != 0 {
        return Err(bad("its descriptor pointer is misaligned".into()));
    }
    // Read the two leading u32s first: version and size decide whether the rest exists.
    // SAFETY: every ABI version starts with these two fields.
    let (version, size) = unsafe {
        let head = desc as *const u32;
        (head.read_unaligned(), head.add(1).read_unaligned())
    };
    if version != abi::ABI_VERSION {
        return Err(PluginError::AbiVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    if (size as usize) < std::mem::size_of::<abi::PxDescriptor>() {
        return Err(PluginError::StructSize {
            path: path.to_path_buf(),
            what: "descriptor",
            found: size,
            expected: std::mem::size_of::<abi::PxDescriptor>(),
        });
    }
    // SAFETY: version and size say the v1 descriptor is there.
    let desc = unsafe { &*desc };
    if desc.kind != expected_kind {
        return Err(PluginError::WrongKind {
            path: path.to_path_buf(),
            expected: if expected_kind == abi::PX_KIND_MEDIATOR {
                "mediator"
            } else {
                "executor"
            },
            found: kind_name(desc.kind),
        });
    }
    if desc.name.ptr.is_null() || desc.name.len == 0 || desc.name.len > MAX_NAME {
        return Err(bad(format!(
            "its name is missing or longer than {MAX_NAME} bytes"
        )));
    }
    // SAFETY: non-null, bounded length, static per the ABI.
    let name = unsafe { std::slice::from_raw_parts(desc.name.ptr, desc.name.len) };
    let name = std::str::from_utf8(name)
        .map_err(|_| bad("its name is not UTF-8".into()))?
        .to_string();
    // Both vtables hold pointers, so pointer alignment is what they need.
    if desc.vtable.is_null() || (desc.vtable as usize) % std::mem::align_of::<usize>() != 0 {
        return Err(bad("its vtable pointer is null or misaligned".into()));
    }
    // SAFETY: non-null; every vtable starts with its u32 size.
    let vtable_size = unsafe { (desc.vtable as *const u32).read_unaligned() };
    let kind = if expected_kind == abi::PX_KIND_MEDIATOR {
        "mediator"
    } else {
        "executor"
    };
    Ok(Loaded {
        info: PluginInfo {
            path: path.to_path_buf(),
            name,
            kind,
        },
        vtable: desc.vtable,
        vtable_size,
    })
}

/// Opens a plugin and reports what it is, without creating an instance.
pub fn inspect(path: &Path) -> Result<PluginInfo, PluginError> {
    match open(path, abi::PX_KIND_MEDIATOR) {
        Err(PluginError::WrongKind { .. }) => open(path, abi::PX_KIND_EXECUTOR).map(|l| l.info),
        other => other.map(|l| l.info),
    }
}

/// Per-instance logging context handed to the plugin as `PxHost::ctx`.
struct LogCtx {
    target: String,
    #[cfg(any(test, feature = "testing"))]
    captured: std::sync::Mutex<Vec<String>>,
}

/// The host's log callback: records land in our `log` logger under
/// `plexus::plugin::<name>`. Never unwinds into the plugin.
unsafe extern "C" fn host_log(
    ctx: *mut c_void,
    level: u32,
    target: abi::PxBytes,
    message: abi::PxBytes,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if ctx.is_null() {
            return;
        }
        let ctx = &*(ctx as *const LogCtx);
        let level = match level {
            abi::PX_LOG_ERROR => log::Level::Error,
            abi::PX_LOG_WARN => log::Level::Warn,
            abi::PX_LOG_INFO => log::Level::Info,
            abi::PX_LOG_DEBUG => log::Level::Debug,
            _ => log::Level::Trace,
        };
        let text = |b: abi::PxBytes| -> String {
            if b.ptr.is_null() || b.len == 0 {
                return String::new();
            }
            let s = std::slice::from_raw_parts(b.ptr, b.len.min(MAX_LOG));
            String::from_utf8_lossy(s).into_owned()
        };
        let (origin, message) = (text(target), text(message));
        #[cfg(any(test, feature = "testing"))]
        if let Ok(mut c) = ctx.captured.lock() {
            c.push(format!("{level} {message}"));
        }
        log::logger().log(
            &log::Record::builder()
                .level(level)
                .target(&ctx.target)
                .args(format_args!("{message} ({origin})"))
                .build(),
        );
    }));
}

/// Host callbacks for one instance; must outlive it (owned by the adapter).
struct HostCallbacks {
    host: Box<abi::PxHost>,
    // What `host`'s channel fields point into; the heap buffers stay put while owned.
    #[allow(dead_code)]
    channel: Channel,
    #[cfg_attr(not(test), allow(dead_code))]
    ctx: &'static LogCtx,
}

/// One logging context per plugin name, never freed: a plugin library is never unloaded
/// and may keep logging from its own threads, so its context must not dangle either.
fn log_ctx(plugin: &str) -> &'static LogCtx {
    static CTXS: std::sync::Mutex<Vec<&'static LogCtx>> = std::sync::Mutex::new(Vec::new());
    let target = format!("plexus::plugin::{plugin}");
    let mut ctxs = CTXS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = ctxs.iter().find(|c| c.target == target) {
        return c;
    }
    let c: &'static LogCtx = Box::leak(Box::new(LogCtx {
        target,
        #[cfg(any(test, feature = "testing"))]
        captured: std::sync::Mutex::new(Vec::new()),
    }));
    ctxs.push(c);
    c
}

impl HostCallbacks {
    fn new(plugin: &str, channel: &Channel) -> HostCallbacks {
        let ctx = log_ctx(plugin);
        let channel = channel.clone();
        let secret = channel.secret.as_deref().map(Vec::as_slice).unwrap_or(&[]);
        let host = Box::new(abi::PxHost {
            struct_size: std::mem::size_of::<abi::PxHost>() as u32,
            // Tests capture every level so forwarding is checked whatever the logger.
            max_log_level: if cfg!(test) {
                abi::PX_LOG_TRACE
            } else {
                log::max_level() as u32
            },
            ctx: ctx as *const LogCtx as *mut c_void,
            log: Some(host_log),
            host_id: abi::PxBytes::new(channel.host_id.as_bytes()),
            peer_id: abi::PxBytes::new(channel.peer_id.as_bytes()),
            channel_secret: abi::PxBytes::new(secret),
        });
        HostCallbacks { host, channel, ctx }
    }

    /// Log lines this plugin (by name, all instances) sent.
    #[cfg(any(test, feature = "testing"))]
    fn captured(&self) -> Vec<String> {
        self.ctx.captured.lock().unwrap().clone()
    }
}

/// The error buffer passed to every call.
struct ErrBuf {
    storage: Vec<u8>,
    raw: abi::PxErrBuf,
}

impl ErrBuf {
    fn new() -> ErrBuf {
        let mut storage = vec![0u8; ERR_CAP];
        let raw = abi::PxErrBuf {
            ptr: storage.as_mut_ptr(),
            cap: ERR_CAP,
            len: 0,
        };
        ErrBuf { storage, raw }
    }

    fn as_ptr(&mut self) -> *mut abi::PxErrBuf {
        self.raw.len = 0;
        &mut self.raw
    }

    /// The plugin's message (lossy UTF-8, clamped to the buffer), or a placeholder.
    fn message(&self) -> String {
        let n = self.raw.len.min(self.storage.len());
        if n == 0 {
            return "(the plugin gave no message)".into();
        }
        String::from_utf8_lossy(&self.storage[..n]).into_owned()
    }
}

/// Name of a status code for messages.
fn status_name(code: i32) -> String {
    match code {
        abi::PX_ERR_CONFIG => "settings error".into(),
        abi::PX_ERR_UNREACHABLE => "unreachable".into(),
        abi::PX_ERR_AUTH => "authentication error".into(),
        abi::PX_ERR_PROTOCOL => "protocol error".into(),
        abi::PX_ERR_IO => "I/O error".into(),
        abi::PX_ERR_PANIC => "panic".into(),
        abi::PX_ERR_INVALID_ARGUMENT => "invalid argument".into(),
        abi::PX_ERR_SPAWN => "could not start".into(),
        abi::PX_ERR_FAILED => "failed".into(),
        other => format!("unknown status {other}"),
    }
}

/// Creates an instance through a vtable's `create`; maps failures to [`PluginError`].
fn create_instance(
    create: unsafe extern "C" fn(
        abi::PxBytes,
        *const abi::PxHost,
        *mut *mut abi::PxHandle,
        *mut abi::PxErrBuf,
    ) -> i32,
    name: &str,
    settings: &str,
    callbacks: &HostCallbacks,
) -> Result<*mut abi::PxHandle, PluginError> {
    let mut handle: *mut abi::PxHandle = std::ptr::null_mut();
    let mut err = ErrBuf::new();
    // SAFETY: arguments follow the ABI; `callbacks` outlives the instance.
    let code = unsafe {
        create(
            abi::PxBytes::new(settings.as_bytes()),
            &*callbacks.host,
            &mut handle,
            err.as_ptr(),
        )
    };
    match code {
        abi::PX_OK if !handle.is_null() => Ok(handle),
        abi::PX_OK => Err(PluginError::Init {
            plugin: name.to_string(),
            message: "create reported success but returned no instance".into(),
        }),
        abi::PX_ERR_CONFIG => Err(PluginError::Settings {
            plugin: name.to_string(),
            message: err.message(),
        }),
        other => Err(PluginError::Init {
            plugin: name.to_string(),
            message: format!("{}: {}", status_name(other), err.message()),
        }),
    }
}

/// Copies plugin-owned bytes after checking them against `max`; `None` when the
/// plugin returned an impossible pointer/length pair.
///
/// # Safety
/// When the pair passes the checks it must describe readable memory (the ABI contract).
#[doc(hidden)]
pub unsafe fn copy_owned(b: &abi::PxOwnedBytes, max: usize) -> Option<Vec<u8>> {
    if b.len == 0 {
        return Some(Vec::new());
    }
    if b.ptr.is_null() || b.len > max {
        return None;
    }
    Some(std::slice::from_raw_parts(b.ptr, b.len).to_vec())
}
