//! [`PluginExecutor`]: an executor plugin behind the [`Executor`] trait.

use super::{
    abi, copy_owned, create_instance, open, resolve, status_name, ErrBuf, HostCallbacks,
    PluginError, PluginInfo,
};
use crate::executor::{Corridor, ExecError, ExecReport, Executor};
use std::path::Path;

/// Largest output description accepted from a plugin.
const MAX_OUTPUT: usize = 64 * 1024;

/// A loaded executor plugin instance.
pub struct PluginExecutor {
    info: PluginInfo,
    vt: &'static abi::PxExecutorVtable,
    handle: *mut abi::PxHandle,
    // Kept alive for the plugin's log callback until destroy.
    _callbacks: HostCallbacks,
}

// SAFETY: as for `PluginMediator`: one thread at a time, enforced by `&mut self`.
unsafe impl Send for PluginExecutor {}

impl std::fmt::Debug for PluginExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginExecutor")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl PluginExecutor {
    /// Loads the executor plugin `spec` (a path or a name, see [`resolve`]) and creates
    /// an instance with `settings` (YAML or JSON text, passed to the plugin as is).
    pub fn load(spec: &str, settings: &str) -> Result<PluginExecutor, PluginError> {
        Self::open(&resolve(spec)?, settings)
    }

    /// Like [`PluginExecutor::load`] with the library's path.
    pub fn open(path: &Path, settings: &str) -> Result<PluginExecutor, PluginError> {
        let loaded = open(path, abi::PX_KIND_EXECUTOR)?;
        let needed = std::mem::size_of::<abi::PxExecutorVtable>();
        if (loaded.vtable_size as usize) < needed {
            return Err(PluginError::StructSize {
                path: path.to_path_buf(),
                what: "executor vtable",
                found: loaded.vtable_size,
                expected: needed,
            });
        }
        // SAFETY: size checked; static in a library we never unload.
        let vt: &'static abi::PxExecutorVtable =
            unsafe { &*(loaded.vtable as *const abi::PxExecutorVtable) };
        let missing = [
            ("free_bytes", vt.free_bytes.is_none()),
            ("create", vt.create.is_none()),
            ("run", vt.run.is_none()),
            ("destroy", vt.destroy.is_none()),
        ];
        if let Some((f, _)) = missing.iter().find(|(_, m)| *m) {
            return Err(PluginError::BadDescriptor {
                path: path.to_path_buf(),
                reason: format!("its executor vtable has no {f} function"),
            });
        }
        let info = loaded.info;
        let callbacks = HostCallbacks::new(&info.name, &Default::default());
        let create = vt.create.expect("checked above");
        let handle = create_instance(create, &info.name, settings, &callbacks)?;
        log::debug!(
            "loaded executor plugin {} from {}",
            info.name,
            info.path.display()
        );
        Ok(PluginExecutor {
            info,
            vt,
            handle,
            _callbacks: callbacks,
        })
    }

    /// What the library said about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }
}

impl Executor for PluginExecutor {
    fn name(&self) -> &str {
        &self.info.name
    }

    fn run(&mut self, corridor: &Corridor) -> Result<ExecReport, ExecError> {
        let (inner, outer, peer) = (
            corridor.inner.to_string(),
            corridor.outer.to_string(),
            corridor.peer.to_string(),
        );
        let mut c = abi::PxCorridor {
            struct_size: std::mem::size_of::<abi::PxCorridor>() as u32,
            accepted: corridor.accepted as u32,
            inner: abi::PxBytes::new(inner.as_bytes()),
            outer: abi::PxBytes::new(outer.as_bytes()),
            peer: abi::PxBytes::new(peer.as_bytes()),
            host_id: abi::PxBytes::new(corridor.host_id.as_bytes()),
            peer_id: abi::PxBytes::new(corridor.peer_id.as_bytes()),
            key: corridor.key.0,
        };
        let mut out = abi::PxRunResult {
            has_status: 0,
            status: 0,
            output: abi::PxOwnedBytes::EMPTY,
        };
        let mut err = ErrBuf::new();
        let run = self.vt.run.expect("checked at load");
        // SAFETY: handle from create; `c`, its strings, `out` and `err` outlive the call.
        let code = unsafe { run(self.handle, &c, &mut out, err.as_ptr()) };
        // The plugin had to copy the key if it keeps it; our copy goes now.
        crate::secret::wipe(&mut c.key);
        let name = &self.info.name;
        match code {
            abi::PX_OK => {}
            abi::PX_ERR_CONFIG => {
                return Err(ExecError::Config(format!(
                    "plugin {name}: {}",
                    err.message()
                )))
            }
            abi::PX_ERR_SPAWN => {
                return Err(ExecError::Spawn(format!(
                    "plugin {name}: {}",
                    err.message()
                )))
            }
            abi::PX_ERR_UNREACHABLE => {
                return Err(ExecError::PathLost(format!(
                    "plugin {name}: {}",
                    err.message()
                )))
            }
            code if code < 0 => {
                return Err(ExecError::Failed(format!(
                    "plugin {name} [{}]: {}",
                    status_name(code),
                    err.message()
                )))
            }
            other => {
                return Err(ExecError::Failed(format!(
                    "plugin {name} returned garbage: status {other}"
                )))
            }
        }
        // SAFETY: checked pair, freed once by its allocator; an impossible one is leaked.
        let output = unsafe { copy_owned(&out.output, MAX_OUTPUT) }.ok_or_else(|| {
            ExecError::Failed(format!(
                "plugin {name} returned garbage: a {}-byte output description (limit {MAX_OUTPUT})",
                out.output.len
            ))
        })?;
        let free = self.vt.free_bytes.expect("checked at load");
        // SAFETY: as above.
        unsafe { free(out.output) };
        Ok(ExecReport {
            status: (out.has_status != 0).then_some(out.status),
            output: String::from_utf8_lossy(&output).into_owned(),
        })
    }
}

impl Drop for PluginExecutor {
    fn drop(&mut self) {
        if let Some(destroy) = self.vt.destroy {
            // SAFETY: handle from create, destroyed once.
            unsafe { destroy(self.handle) };
        }
    }
}
