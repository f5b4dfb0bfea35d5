//! Plugin loader tests against real shared libraries: the Rust fixture and plugins
//! built by `cargo build --workspace`, and C plugins compiled here with gcc from the
//! header. Moved here from the library's unit tests: they load what cargo built into
//! target/, which a unit test should not depend on. Need no lab and no root.

use plexus::executor::{Corridor, ExecError, Executor, SessionKey};
use plexus::mediator::{Mediator, MediatorError, Outcome};
use plexus::plugin::{inspect, resolve_in, Channel, PluginError, PluginExecutor, PluginMediator};
use plexus::testing::TempDir;
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The profile directory this test binary was built into (`target/debug`).
fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// A workspace plugin built by cargo; fails with the command to run when missing.
fn built(name: &str) -> PathBuf {
    let p = target_profile_dir().join(format!("libplexus_{name}.so"));
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace` before the plugin loader tests",
        p.display()
    );
    p
}

/// Compiles a C plugin from `src` (relative to the workspace) into `out`.
fn gcc(src: &str, defines: &[&str], out: &Path, werror: bool) -> PathBuf {
    let mut cmd = Command::new("gcc");
    cmd.args(["-shared", "-fPIC", "-std=c99", "-Wall"]);
    if werror {
        cmd.arg("-Werror");
    }
    for d in defines {
        cmd.arg(format!("-D{d}"));
    }
    cmd.arg("-I")
        .arg(workspace().join("plugins"))
        .arg(workspace().join(src))
        .arg("-o")
        .arg(out);
    let o = cmd.output().expect("gcc is needed for the C plugin tests");
    assert!(
        o.status.success(),
        "gcc failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::set_permissions(out, Permissions::from_mode(0o755)).unwrap();
    out.to_path_buf()
}

fn broken(variant: &str, dir: &TempDir) -> PathBuf {
    let defines: Vec<&str> = if variant.is_empty() {
        vec![]
    } else {
        vec![variant]
    };
    let name = if variant.is_empty() {
        "garbage".to_string()
    } else {
        variant.to_lowercase()
    };
    gcc(
        "plugins/fixtures/c/broken.c",
        &defines,
        &dir.join(format!("libplexus_{name}.so")),
        false,
    )
}

fn corridor(inner: &str, peer: &str) -> Corridor {
    Corridor {
        inner: inner.parse().unwrap(),
        outer: "198.51.100.7:40000".parse().unwrap(),
        peer: peer.parse().unwrap(),
        host_id: "alice@example.org/home".into(),
        peer_id: "bob@example.org/nas".into(),
        key: SessionKey([7; 32]),
        accepted: false,
    }
}

#[test]
fn rust_fixture_round_trip_and_log_forwarding() {
    let mut m = PluginMediator::open(&built("fixture"), "mode: ok").unwrap();
    assert_eq!(m.name(), "fixture");
    assert_eq!(m.info().kind, "mediator");
    m.send("bob", b"sealed bytes").unwrap();
    let got = m.receive(Duration::from_millis(10)).unwrap().unwrap();
    assert_eq!(
        (got.from.as_str(), got.sealed.as_slice()),
        ("bob", &b"sealed bytes"[..])
    );
    m.acknowledge(&got.id, Outcome::Handled).unwrap();
    assert!(m.receive(Duration::from_millis(10)).unwrap().is_none());
    // Records below the host's max level are filtered in the plugin, so only check
    // forwarding when info is enabled.
    if log::max_level() >= log::LevelFilter::Info {
        assert!(m
            .captured_logs()
            .iter()
            .any(|l| l.contains("fixture created in mode ok")));
    }
}

#[test]
fn init_failure_and_bad_settings_carry_the_plugin_message() {
    let e = PluginMediator::open(&built("fixture"), "mode: fail_create").unwrap_err();
    assert!(
        matches!(&e, PluginError::Settings { message, .. } if message == "fixture refuses to start"),
        "{e}"
    );
    let e = PluginMediator::open(&built("fixture"), "no mode here").unwrap_err();
    assert!(
        e.to_string()
            .contains("rejected its settings: expected `mode: <m>`"),
        "{e}"
    );
    let e = PluginMediator::open(&built("fixture"), "mode: panic_create").unwrap_err();
    assert!(
        matches!(&e, PluginError::Init { message, .. } if message.contains("panicked in create")),
        "{e}"
    );
}

#[test]
fn a_panic_inside_a_call_is_an_error_and_the_host_goes_on() {
    let mut m = PluginMediator::open(&built("fixture"), "mode: panic_send").unwrap();
    let e = m.send("bob", b"x").unwrap_err();
    assert!(
        matches!(&e, MediatorError::Protocol(s) if s.contains("fixture panics in send")),
        "{e}"
    );
    // The same instance still answers other calls.
    assert!(m.receive(Duration::from_millis(1)).unwrap().is_none());
    let mut r = PluginMediator::open(&built("fixture"), "mode: panic_receive").unwrap();
    let e = r.receive(Duration::from_millis(1)).unwrap_err();
    assert!(e.to_string().contains("panicked in receive"), "{e}");
    let mut a = PluginMediator::open(&built("fixture"), "mode: auth_error").unwrap();
    assert!(
        matches!(a.send("bob", b"x"), Err(MediatorError::Auth(s)) if s.contains("fixture says no"))
    );
}

#[test]
fn a_mediator_is_not_an_executor() {
    let e = PluginExecutor::open(&built("fixture"), "mode: ok").unwrap_err();
    assert!(
        matches!(&e, PluginError::WrongKind { found, .. } if found == "mediator"),
        "{e}"
    );
}

#[test]
fn wrong_abi_version_is_refused_before_anything_else() {
    let dir = TempDir::new("abi");
    let e = PluginMediator::open(&broken("WRONG_ABI", &dir), "").unwrap_err();
    assert!(
        matches!(e, PluginError::AbiVersion { found: 99, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("rebuild the plugin"));
    let e = PluginMediator::open(&broken("SMALL_DESCRIPTOR", &dir), "").unwrap_err();
    assert!(
        matches!(
            e,
            PluginError::StructSize {
                found: 8,
                what: "descriptor",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn missing_entry_symbol_and_missing_functions_are_refused() {
    let dir = TempDir::new("entry");
    let e = PluginMediator::open(&broken("NO_ENTRY", &dir), "").unwrap_err();
    assert!(matches!(e, PluginError::MissingEntry { .. }), "{e}");
    let e = PluginMediator::open(&broken("MISSING_FN", &dir), "").unwrap_err();
    assert!(e.to_string().contains("no receive function"), "{e}");
    let e = PluginMediator::open(&dir.join("libplexus_absent.so"), "").unwrap_err();
    assert!(matches!(e, PluginError::Open { .. }), "{e}");
    let not_elf = dir.join("libplexus_text.so");
    std::fs::write(&not_elf, "not a library").unwrap();
    assert!(matches!(
        PluginMediator::open(&not_elf, ""),
        Err(PluginError::Open { .. })
    ));
}

#[test]
fn garbage_returned_by_a_plugin_is_an_error() {
    let dir = TempDir::new("garbage");
    let mut m = PluginMediator::open(&broken("", &dir), "").unwrap();
    let e = m.receive(Duration::from_millis(1)).unwrap_err();
    assert!(e.to_string().contains("impossible lengths"), "{e}");
    let e = m.send("bob", b"x").unwrap_err();
    assert!(e.to_string().contains("send answered status 77"), "{e}");
    let e = m.acknowledge("m1", Outcome::Handled).unwrap_err();
    assert!(e.to_string().contains("gave no message"), "{e}");
    let mut x = PluginExecutor::open(&broken("EXECUTOR", &dir), "").unwrap();
    let e = x.run(&corridor("127.0.0.1:1", "127.0.0.1:2")).unwrap_err();
    assert!(e.to_string().contains("12345-byte output"), "{e}");
}

/// The channel the host hands a mediator plugin (ids and secret).
fn a_channel() -> Channel {
    Channel {
        host_id: "alice@example.org/home".into(),
        peer_id: "bob@example.org/nas".into(),
        secret: Some(plexus::secret::Zeroizing::new(vec![0xab; 32])),
    }
}

#[test]
fn a_plugin_built_with_the_channel_fields_gets_them() {
    let mut m = PluginMediator::open_for(&built("fixture"), "mode: channel", &a_channel()).unwrap();
    let got = m.receive(Duration::from_millis(10)).unwrap().unwrap();
    assert_eq!(got.from, "bob@example.org/nas");
    // The secret as bound to this plugin's name, not the pair's secret itself.
    let bound: String = a_channel()
        .for_plugin("fixture")
        .secret
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_ne!(bound, "ab".repeat(32));
    assert_eq!(
        String::from_utf8(got.sealed).unwrap(),
        format!("alice@example.org/home\nbob@example.org/nas\n{bound}")
    );
    // Without a channel (an executor's case, or a caller that has none): empty fields.
    let mut m = PluginMediator::open(&built("fixture"), "mode: channel").unwrap();
    let got = m.receive(Duration::from_millis(10)).unwrap().unwrap();
    assert_eq!(String::from_utf8(got.sealed).unwrap(), "\n\n");
}

#[test]
fn a_plugin_built_before_the_channel_fields_still_loads_and_works() {
    // The C example compiled against the first release's header: its PxHost ends at
    // `log`, so the host's larger struct must be accepted and its log callback used.
    let dir = TempDir::new("cexample-v1");
    let header = std::fs::read_to_string(workspace().join("plugins/plexus-plugin.h")).unwrap();
    let start = header
        .find("    /* Added later")
        .expect("the marked new fields");
    let end = header[start..].find("} PxHost;").unwrap() + start;
    let old = format!("{}{}", &header[..start], &header[end..]);
    let old: String = old
        .lines()
        .filter(|l| !l.starts_with("#define PX_HOST_"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!old.contains("channel_secret"));
    std::fs::create_dir_all(dir.join("inc")).unwrap();
    std::fs::write(dir.join("inc/plexus-plugin.h"), old).unwrap();
    let src = dir.join("example.c");
    std::fs::copy(workspace().join("plugins/c-example/example.c"), &src).unwrap();
    let lib = dir.join("libplexus_cexamplev1.so");
    let o = Command::new("gcc")
        // The first release had no size constants: its struct's size was the v1 size.
        .args(["-shared", "-fPIC", "-std=c99", "-Wall", "-Werror"])
        .arg("-DPX_HOST_V1_SIZE=sizeof(PxHost)")
        .arg("-I")
        .arg(dir.join("inc"))
        .arg(&src)
        .arg("-o")
        .arg(&lib)
        .output()
        .expect("gcc is needed for the C plugin tests");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::set_permissions(&lib, Permissions::from_mode(0o755)).unwrap();
    let shared = dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    let settings = |who: &str| format!("dir: {}\naddress: {who}\n", shared.display());
    let mut alice = PluginMediator::open_for(&lib, &settings("alice"), &a_channel()).unwrap();
    let mut bob = PluginMediator::open_for(&lib, &settings("bob"), &a_channel()).unwrap();
    alice.send("bob", b"old plugin").unwrap();
    let got = bob.receive(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(got.sealed, b"old plugin");
    if log::max_level() >= log::LevelFilter::Info {
        assert!(alice
            .captured_logs()
            .iter()
            .any(|l| l.contains("c-example mediator ready")));
    }
}

#[test]
fn c_mediator_round_trip_through_a_directory() {
    let dir = TempDir::new("cexample");
    let lib = gcc(
        "plugins/c-example/example.c",
        &[],
        &dir.join("libplexus_cexample.so"),
        true,
    );
    let shared = dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    let settings = |who: &str| format!("dir: {}\naddress: {who}\n", shared.display());
    let mut alice = PluginMediator::open(&lib, &settings("alice")).unwrap();
    let mut bob = PluginMediator::open(&lib, &settings("bob")).unwrap();
    assert_eq!(alice.name(), "c-example");
    alice.send("bob", &[0, 1, 2, 255]).unwrap();
    assert!(
        alice.receive(Duration::from_millis(50)).unwrap().is_none(),
        "not addressed to alice"
    );
    let got = bob.receive(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(
        (got.from.as_str(), got.sealed.as_slice()),
        ("alice", &[0u8, 1, 2, 255][..])
    );
    bob.acknowledge(&got.id, Outcome::Handled).unwrap();
    assert_eq!(
        std::fs::read_dir(&shared).unwrap().count(),
        0,
        "handled message removed"
    );
    let e = PluginMediator::open(&lib, "dir: /x\n").unwrap_err();
    assert!(matches!(e, PluginError::Settings { .. }), "{e}");
    if log::max_level() >= log::LevelFilter::Info {
        assert!(alice
            .captured_logs()
            .iter()
            .any(|l| l.contains("c-example mediator ready")));
    }
}

#[test]
fn names_resolve_in_plugin_dirs() {
    let dir = TempDir::new("resolve");
    let lib = dir.join("libplexus_udp_bridge.so");
    std::fs::write(&lib, "").unwrap();
    assert_eq!(
        resolve_in(
            "udp-bridge",
            &[PathBuf::from("/nonexistent"), dir.to_path_buf()]
        )
        .unwrap(),
        lib
    );
    assert!(
        matches!(resolve_in("nope", std::slice::from_ref(&dir.to_path_buf())), Err(PluginError::NotFound { tried, .. }) if tried.len() == 1)
    );
    assert!(matches!(resolve_in("../evil", &[]), Ok(p) if p == Path::new("../evil")));
    assert!(matches!(
        resolve_in("Evil", &[]),
        Err(PluginError::BadName(_))
    ));
    assert_eq!(
        resolve_in("x/libplexus_file.so", &[]).unwrap(),
        PathBuf::from("x/libplexus_file.so")
    );
}

#[test]
fn rust_plugins_load_through_the_loader() {
    // The file mediator as a real cdylib: two instances on one directory.
    let dir = TempDir::new("fileplugin");
    let settings = |who: &str| {
        format!(
            "dir: {}\naddress: {who}\npoll_interval_ms: 20\n",
            dir.display()
        )
    };
    let mut alice = PluginMediator::open(&built("file"), &settings("alice")).unwrap();
    let mut bob = PluginMediator::open(&built("file"), &settings("bob")).unwrap();
    bob.send("alice", b"hello").unwrap();
    let got = alice.receive(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(
        (got.from.as_str(), got.sealed.as_slice()),
        ("bob", &b"hello"[..])
    );
    alice.acknowledge(&got.id, Outcome::Handled).unwrap();
    let info = inspect(&built("udp_bridge")).unwrap();
    assert_eq!((info.name.as_str(), info.kind), ("udp-bridge", "executor"));
}

/// A copy of the Rust fixture at `dir/libplexus_fixture.so`, mode 0755.
fn fixture_copy(dir: &Path) -> PathBuf {
    let lib = dir.join("libplexus_fixture.so");
    std::fs::copy(built("fixture"), &lib).unwrap();
    std::fs::set_permissions(&lib, Permissions::from_mode(0o755)).unwrap();
    lib
}

fn unsafe_reason(e: PluginError) -> String {
    match e {
        PluginError::Unsafe { reason, .. } => reason,
        other => panic!("expected a refusal for permissions, got: {other}"),
    }
}

#[test]
fn a_group_writable_library_is_refused() {
    let dir = TempDir::new("perm-file");
    let lib = fixture_copy(&dir);
    for mode in [0o775, 0o757] {
        std::fs::set_permissions(&lib, Permissions::from_mode(mode)).unwrap();
        let e = PluginMediator::open(&lib, "mode: ok").unwrap_err();
        let text = e.to_string();
        let reason = unsafe_reason(e);
        assert!(
            reason.contains(&format!("chmod go-w {}", lib.display())),
            "{reason}"
        );
        assert!(text.contains(&lib.display().to_string()), "{text}");
        assert!(matches!(inspect(&lib), Err(PluginError::Unsafe { .. })));
    }
    // The normal case loads.
    std::fs::set_permissions(&lib, Permissions::from_mode(0o755)).unwrap();
    let m = PluginMediator::open(&lib, "mode: ok").unwrap();
    assert_eq!(m.name(), "fixture");
}

#[test]
fn a_world_writable_directory_is_refused() {
    let dir = TempDir::new("perm-dir");
    let open_dir = dir.join("open");
    std::fs::create_dir(&open_dir).unwrap();
    let lib = fixture_copy(&open_dir);
    std::fs::set_permissions(&open_dir, Permissions::from_mode(0o777)).unwrap();
    let reason = unsafe_reason(PluginMediator::open(&lib, "mode: ok").unwrap_err());
    assert!(
        reason.contains(&format!("directory {} is writable", open_dir.display()))
            && reason.contains(&format!("chmod go-w {}", open_dir.display())),
        "{reason}"
    );
    // A link from a safe place is resolved first: the real path is what is checked.
    let link = dir.join("libplexus_link.so");
    std::os::unix::fs::symlink(&lib, &link).unwrap();
    assert!(matches!(
        PluginMediator::open(&link, "mode: ok"),
        Err(PluginError::Unsafe { .. })
    ));
    // Group-writable is refused too; sticky (as /tmp) passes: nobody else can rename or
    // remove our entries there.
    std::fs::set_permissions(&open_dir, Permissions::from_mode(0o775)).unwrap();
    assert!(matches!(
        PluginMediator::open(&lib, "mode: ok"),
        Err(PluginError::Unsafe { .. })
    ));
    std::fs::set_permissions(&open_dir, Permissions::from_mode(0o1777)).unwrap();
    PluginMediator::open(&link, "mode: ok").unwrap();
}

#[test]
fn a_library_of_another_user_is_refused() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to give a file to another user");
        return;
    }
    let dir = TempDir::new("perm-owner");
    let lib = fixture_copy(&dir);
    std::os::unix::fs::chown(&lib, Some(54321), None).unwrap();
    let reason = unsafe_reason(PluginMediator::open(&lib, "mode: ok").unwrap_err());
    assert!(reason.contains("belongs to uid 54321"), "{reason}");
    // A directory of another user, even one that is not writable by others.
    std::os::unix::fs::chown(&lib, Some(0), None).unwrap();
    std::os::unix::fs::chown(&dir, Some(54321), None).unwrap();
    let reason = unsafe_reason(PluginMediator::open(&lib, "mode: ok").unwrap_err());
    assert!(
        reason.contains(&format!("directory {} belongs to uid 54321", dir.display())),
        "{reason}"
    );
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn udp_bridge_runs_through_the_executor_adapter() {
    let lib = built("udp_bridge");
    let e = PluginExecutor::open(&lib, "local: 127.0.0.1:0").unwrap_err();
    assert!(
        matches!(&e, PluginError::Settings { message, .. } if message.contains("fixed port")),
        "{e}"
    );
    let settings = format!("local: 127.0.0.1:{}\nidle_timeout_secs: 1", free_udp_port());
    let mut x = PluginExecutor::open(&lib, &settings).unwrap();
    assert_eq!(x.name(), "udp-bridge");
    let (inner, peer) = (free_udp_port(), free_udp_port());
    let report = x
        .run(&corridor(
            &format!("127.0.0.1:{inner}"),
            &format!("127.0.0.1:{peer}"),
        ))
        .unwrap();
    assert_eq!(report.status, None);
    assert!(
        report.output.contains("idle_timeout_secs reached"),
        "{}",
        report.output
    );
    // The corridor endpoint taken by someone else: the plugin's spawn error comes through.
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    match x.run(&corridor(&busy_addr, "127.0.0.1:9")) {
        Err(ExecError::Spawn(m)) => {
            assert!(m.contains("cannot bind the corridor endpoint"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}
