//! The README's example plugin: its text matches `examples/echo.rs`, and the built
//! library works through the raw C ABI (entry symbol, vtable, buffers, log callback).

use plexus_plugin_sdk::abi::*;
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::Mutex;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn readme_example_is_examples_echo() {
    let readme = std::fs::read_to_string(manifest().join("../../README.md")).unwrap();
    let section = &readme[readme
        .find("## Writing a plugin")
        .expect("README has the section")..];
    let start = section.find("```rust\n").expect("a rust block") + "```rust\n".len();
    let snippet = &section[start..start + section[start..].find("```\n").unwrap()];
    let file = std::fs::read_to_string(manifest().join("examples/echo.rs")).unwrap();
    assert_eq!(
        snippet, file,
        "README's example differs from examples/echo.rs: copy the file into the README"
    );
}

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

unsafe extern "C" fn record(_ctx: *mut c_void, level: u32, _target: PxBytes, message: PxBytes) {
    let m = std::slice::from_raw_parts(message.ptr, message.len);
    LOGS.lock()
        .unwrap()
        .push(format!("{level} {}", String::from_utf8_lossy(m)));
}

fn echo_lib() -> PathBuf {
    // `cargo test` builds examples next to the test binaries: target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/libecho.so")
}

#[test]
fn a_host_of_the_first_release_is_served_and_its_missing_fields_never_read() {
    let lib_path = echo_lib();
    unsafe {
        let lib = Box::leak(Box::new(libloading::Library::new(&lib_path).unwrap()));
        let entry = *lib.get::<PxEntryFn>(ENTRY_SYMBOL).unwrap();
        let vt = &*((*entry()).vtable as *const PxMediatorVtable);
        // The channel fields lie beyond what this host's size covers: pointers that
        // would crash if the plugin read them.
        let bogus = PxBytes {
            ptr: 8 as *const u8,
            len: 1 << 40,
        };
        let host = PxHost {
            struct_size: PX_HOST_V1_SIZE,
            max_log_level: PX_LOG_TRACE,
            ctx: std::ptr::null_mut(),
            log: Some(record),
            host_id: bogus,
            peer_id: bogus,
            channel_secret: bogus,
        };
        assert!(PX_HOST_V1_SIZE < std::mem::size_of::<PxHost>() as u32);
        let mut storage = [0u8; 256];
        let mut err = PxErrBuf {
            ptr: storage.as_mut_ptr(),
            cap: storage.len(),
            len: 0,
        };
        let mut handle = std::ptr::null_mut();
        let code = vt.create.unwrap()(PxBytes::new(b"{}"), &host, &mut handle, &mut err);
        assert_eq!(code, PX_OK);
        let code = vt.send.unwrap()(
            handle,
            PxBytes::new(b"v1host"),
            PxBytes::new(&[1]),
            &mut err,
        );
        assert_eq!(code, PX_OK);
        vt.destroy.unwrap()(handle);
        // Its log callback is used: logging is part of the first release.
        assert!(LOGS
            .lock()
            .unwrap()
            .iter()
            .any(|l| l == "3 echoing 1 bytes for v1host"));
    }
}

#[test]
fn echo_example_works_through_the_c_abi() {
    // `cargo test` builds examples next to the test binaries: target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let lib_path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/libecho.so");
    assert!(
        lib_path.is_file(),
        "{} missing: run `cargo test -p plexus-plugin-sdk`",
        lib_path.display()
    );
    unsafe {
        let lib = Box::leak(Box::new(libloading::Library::new(&lib_path).unwrap()));
        let entry = *lib.get::<PxEntryFn>(ENTRY_SYMBOL).unwrap();
        let d = &*entry();
        assert_eq!((d.abi_version, d.kind), (ABI_VERSION, PX_KIND_MEDIATOR));
        assert_eq!(d.struct_size as usize, std::mem::size_of::<PxDescriptor>());
        assert_eq!(std::slice::from_raw_parts(d.name.ptr, d.name.len), b"echo");
        let vt = &*(d.vtable as *const PxMediatorVtable);
        assert_eq!(
            vt.struct_size as usize,
            std::mem::size_of::<PxMediatorVtable>()
        );

        let host = PxHost {
            struct_size: std::mem::size_of::<PxHost>() as u32,
            max_log_level: PX_LOG_TRACE,
            ctx: std::ptr::null_mut(),
            log: Some(record),
            host_id: PxBytes::EMPTY,
            peer_id: PxBytes::EMPTY,
            channel_secret: PxBytes::EMPTY,
        };
        let mut storage = [0u8; 256];
        let mut err = PxErrBuf {
            ptr: storage.as_mut_ptr(),
            cap: storage.len(),
            len: 0,
        };
        let mut handle = std::ptr::null_mut();
        // Bad settings: a config error with the plugin's message, no handle.
        let code = vt.create.unwrap()(PxBytes::new(b"x: 1"), &host, &mut handle, &mut err);
        assert_eq!(code, PX_ERR_CONFIG);
        assert_eq!(&storage[..err.len], b"echo takes no settings");
        assert!(handle.is_null());

        let code = vt.create.unwrap()(PxBytes::new(b"{}"), &host, &mut handle, &mut err);
        assert_eq!(code, PX_OK);
        let code = vt.send.unwrap()(
            handle,
            PxBytes::new(b"bob"),
            PxBytes::new(&[1, 2, 3]),
            &mut err,
        );
        assert_eq!(code, PX_OK);
        let mut msg = PxMessage {
            id: PxOwnedBytes::EMPTY,
            from: PxOwnedBytes::EMPTY,
            sealed: PxOwnedBytes::EMPTY,
        };
        assert_eq!(vt.receive.unwrap()(handle, 0, &mut msg, &mut err), PX_OK);
        assert_eq!(
            std::slice::from_raw_parts(msg.sealed.ptr, msg.sealed.len),
            &[1, 2, 3]
        );
        assert_eq!(
            std::slice::from_raw_parts(msg.from.ptr, msg.from.len),
            b"bob"
        );
        let id = std::slice::from_raw_parts(msg.id.ptr, msg.id.len).to_vec();
        for b in [msg.id, msg.from, msg.sealed] {
            vt.free_bytes.unwrap()(b);
        }
        assert_eq!(
            vt.acknowledge.unwrap()(handle, PxBytes::new(&id), PX_OUTCOME_HANDLED, &mut err),
            PX_OK
        );
        // An undefined outcome and invalid UTF-8 are refused, not trusted.
        assert_eq!(
            vt.acknowledge.unwrap()(handle, PxBytes::new(&id), 9, &mut err),
            PX_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            vt.send.unwrap()(handle, PxBytes::new(&[0xff]), PxBytes::new(b"x"), &mut err),
            PX_ERR_INVALID_ARGUMENT
        );
        assert_eq!(&storage[..err.len], b"recipient address is not UTF-8");
        // A null pointer with a length is refused too.
        let bogus = PxBytes {
            ptr: std::ptr::null(),
            len: 5,
        };
        assert_eq!(
            vt.send.unwrap()(handle, PxBytes::new(b"bob"), bogus, &mut err),
            PX_ERR_INVALID_ARGUMENT
        );
        assert_eq!(vt.receive.unwrap()(handle, 0, &mut msg, &mut err), PX_NONE);
        vt.destroy.unwrap()(handle);
        assert!(
            LOGS.lock()
                .unwrap()
                .iter()
                .any(|l| l == "3 echoing 3 bytes for bob"),
            "{:?}",
            LOGS.lock().unwrap()
        );
    }
}
