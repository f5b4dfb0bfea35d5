//! [`PluginMediator`]: a mediator plugin behind the [`Mediator`] trait.

use super::{
    abi, copy_owned, create_instance, open, resolve, status_name, Channel, ErrBuf, HostCallbacks,
    PluginError, PluginInfo,
};
use crate::mediator::{Incoming, Mediator, MediatorError, Outcome};
use std::path::Path;
use std::time::Duration;

/// Largest sealed message accepted from a plugin.
const MAX_SEALED: usize = 16 * 1024 * 1024;
/// Largest message id or sender address accepted from a plugin.
const MAX_TEXT: usize = 4096;

/// A loaded mediator plugin instance.
pub struct PluginMediator {
    info: PluginInfo,
    vt: &'static abi::PxMediatorVtable,
    handle: *mut abi::PxHandle,
    // Kept alive for the plugin's log callback until destroy.
    #[cfg_attr(not(test), allow(dead_code))]
    callbacks: HostCallbacks,
}

// SAFETY: the ABI requires handles to be usable from any one thread at a time; the
// adapter is only reachable through `&mut self` (no concurrent calls).
unsafe impl Send for PluginMediator {}

impl std::fmt::Debug for PluginMediator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginMediator")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl PluginMediator {
    /// Loads the mediator plugin `spec` (a path or a name, see [`resolve`]) and creates an
    /// instance with `settings` (YAML or JSON text, passed to the plugin as is).
    pub fn load(spec: &str, settings: &str) -> Result<PluginMediator, PluginError> {
        Self::open(&resolve(spec)?, settings)
    }

    /// Like [`PluginMediator::load`] with the library's path.
    pub fn open(path: &Path, settings: &str) -> Result<PluginMediator, PluginError> {
        Self::open_for(path, settings, &Channel::default())
    }

    /// Like [`PluginMediator::open`], telling the plugin about the channel it serves
    /// (ids and the per-peer secret; a plugin built before these fields ignores them).
    pub fn open_for(
        path: &Path,
        settings: &str,
        channel: &Channel,
    ) -> Result<PluginMediator, PluginError> {
        let loaded = open(path, abi::PX_KIND_MEDIATOR)?;
        let needed = std::mem::size_of::<abi::PxMediatorVtable>();
        if (loaded.vtable_size as usize) < needed {
            return Err(PluginError::StructSize {
                path: path.to_path_buf(),
                what: "mediator vtable",
                found: loaded.vtable_size,
                expected: needed,
            });
        }
        // SAFETY: size checked; the vtable is static in a library we never unload.
        let vt: &'static abi::PxMediatorVtable =
            unsafe { &*(loaded.vtable as *const abi::PxMediatorVtable) };
        let missing = [
            ("free_bytes", vt.free_bytes.is_none()),
            ("create", vt.create.is_none()),
            ("send", vt.send.is_none()),
            ("receive", vt.receive.is_none()),
            ("acknowledge", vt.acknowledge.is_none()),
            ("destroy", vt.destroy.is_none()),
        ];
        if let Some((f, _)) = missing.iter().find(|(_, m)| *m) {
            return Err(PluginError::BadDescriptor {
                path: path.to_path_buf(),
                reason: format!("its mediator vtable has no {f} function"),
            });
        }
        let info = loaded.info;
        let callbacks = HostCallbacks::new(&info.name, &channel.for_plugin(&info.name));
        let create = vt.create.expect("checked above");
        let handle = create_instance(create, &info.name, settings, &callbacks)?;
        log::debug!(
            "loaded mediator plugin {} from {}",
            info.name,
            info.path.display()
        );
        Ok(PluginMediator {
            info,
            vt,
            handle,
            callbacks,
        })
    }

    /// What the library said about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Log lines this plugin sent through the host callback, as `LEVEL message`
    /// (feature `testing`: the loader tests assert on what a plugin logged).
    #[cfg(any(test, feature = "testing"))]
    pub fn captured_logs(&self) -> Vec<String> {
        self.callbacks.captured()
    }

    /// Maps a failed call's status to the trait's error, naming the plugin and call.
    fn error(&self, call: &str, code: i32, err: &ErrBuf) -> MediatorError {
        let m = format!("plugin {} ({call}): {}", self.info.name, err.message());
        match code {
            abi::PX_ERR_CONFIG => MediatorError::Config(m),
            abi::PX_ERR_UNREACHABLE => MediatorError::Unreachable(m),
            abi::PX_ERR_AUTH => MediatorError::Auth(m),
            abi::PX_ERR_IO => MediatorError::Io(std::io::Error::other(m)),
            other => MediatorError::Protocol(format!("{m} [{}]", status_name(other))),
        }
    }

    fn garbage(&self, what: &str) -> MediatorError {
        MediatorError::Protocol(format!(
            "plugin {} returned garbage: {what}; the plugin is broken, report it to its author",
            self.info.name
        ))
    }
}

impl Mediator for PluginMediator {
    fn name(&self) -> &str {
        &self.info.name
    }

    fn send(&mut self, to: &str, sealed: &[u8]) -> Result<(), MediatorError> {
        let mut err = ErrBuf::new();
        let send = self.vt.send.expect("checked at load");
        // SAFETY: handle from create; slices valid for the call.
        let code = unsafe {
            send(
                self.handle,
                abi::PxBytes::new(to.as_bytes()),
                abi::PxBytes::new(sealed),
                err.as_ptr(),
            )
        };
        match code {
            abi::PX_OK => Ok(()),
            code if code < 0 => Err(self.error("send", code, &err)),
            other => Err(self.garbage(&format!("send answered status {other}"))),
        }
    }

    fn receive(&mut self, timeout: Duration) -> Result<Option<Incoming>, MediatorError> {
        let mut err = ErrBuf::new();
        let mut out = abi::PxMessage {
            id: abi::PxOwnedBytes::EMPTY,
            from: abi::PxOwnedBytes::EMPTY,
            sealed: abi::PxOwnedBytes::EMPTY,
        };
        let receive = self.vt.receive.expect("checked at load");
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        // SAFETY: handle from create; `out` and `err` live across the call.
        let code = unsafe { receive(self.handle, ms, &mut out, err.as_ptr()) };
        match code {
            abi::PX_NONE => return Ok(None),
            abi::PX_OK => {}
            code if code < 0 => return Err(self.error("receive", code, &err)),
            other => return Err(self.garbage(&format!("receive answered status {other}"))),
        }
        // SAFETY: checked pointer/length pairs, per the ABI readable until freed. An
        // impossible pair is neither read nor freed (leaking beats crashing).
        let (id, from, sealed) = unsafe {
            (
                copy_owned(&out.id, MAX_TEXT),
                copy_owned(&out.from, MAX_TEXT),
                copy_owned(&out.sealed, MAX_SEALED),
            )
        };
        let (Some(id), Some(from), Some(sealed)) = (id, from, sealed) else {
            return Err(self.garbage(&format!(
                "a message with impossible lengths (id {} bytes, from {} bytes, sealed {} bytes; \
                 limits {MAX_TEXT}, {MAX_TEXT}, {MAX_SEALED})",
                out.id.len, out.from.len, out.sealed.len
            )));
        };
        let free = self.vt.free_bytes.expect("checked at load");
        // SAFETY: the pairs passed the checks and are freed once, by their allocator.
        unsafe {
            free(out.id);
            free(out.from);
            free(out.sealed);
        }
        let id =
            String::from_utf8(id).map_err(|_| self.garbage("a message id that is not UTF-8"))?;
        let from = String::from_utf8(from)
            .map_err(|_| self.garbage("a sender address that is not UTF-8"))?;
        if id.is_empty() {
            return Err(self.garbage("a message without an id"));
        }
        Ok(Some(Incoming { id, from, sealed }))
    }

    fn acknowledge(&mut self, id: &str, outcome: Outcome) -> Result<(), MediatorError> {
        let mut err = ErrBuf::new();
        let outcome = match outcome {
            Outcome::Handled => abi::PX_OUTCOME_HANDLED,
            Outcome::Rejected => abi::PX_OUTCOME_REJECTED,
        };
        let ack = self.vt.acknowledge.expect("checked at load");
        // SAFETY: handle from create; slice valid for the call.
        let code = unsafe {
            ack(
                self.handle,
                abi::PxBytes::new(id.as_bytes()),
                outcome,
                err.as_ptr(),
            )
        };
        match code {
            abi::PX_OK => Ok(()),
            code if code < 0 => Err(self.error("acknowledge", code, &err)),
            other => Err(self.garbage(&format!("acknowledge answered status {other}"))),
        }
    }
}

impl Drop for PluginMediator {
    fn drop(&mut self) {
        if let Some(destroy) = self.vt.destroy {
            // SAFETY: handle from create, destroyed once; callbacks still alive.
            unsafe { destroy(self.handle) };
        }
    }
}
