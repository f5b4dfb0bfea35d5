//! Keeps `plugins/plexus-plugin.h` in sync with the Rust definitions: compiles a C
//! program with the header that prints every size, field offset and constant, and
//! compares each with the Rust side. Also checks that each header struct has exactly the
//! fields listed here (so a field added on one side only is caught even when padding
//! would hide it).

use plexus_plugin_abi::*;
use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

/// (struct, fields) → Rust sizes and offsets plus the C lines printing the same facts.
macro_rules! layout {
    ($($ty:ident { $($field:ident),* $(,)? })*) => {{
        let mut rust = BTreeMap::new();
        let mut c = String::new();
        let mut fields: Vec<(&str, Vec<&str>)> = Vec::new();
        $(
            rust.insert(format!("sizeof {}", stringify!($ty)), size_of::<$ty>() as u64);
            c += &format!("printf(\"sizeof {0} %zu\\n\", sizeof({0}));\n", stringify!($ty));
            $(
                rust.insert(
                    format!("offsetof {}.{}", stringify!($ty), stringify!($field)),
                    offset_of!($ty, $field) as u64,
                );
                c += &format!(
                    "printf(\"offsetof {0}.{1} %zu\\n\", offsetof({0}, {1}));\n",
                    stringify!($ty),
                    stringify!($field)
                );
            )*
            fields.push((stringify!($ty), vec![$(stringify!($field)),*]));
        )*
        (rust, c, fields)
    }};
}

macro_rules! constants {
    ($rust:ident, $c:ident; $($name:ident),* $(,)?) => {
        $(
            $rust.insert(stringify!($name).to_string(), $name as i64 as u64);
            $c += &format!(
                "printf(\"{0} %llu\\n\", (unsigned long long)(long long)({0}));\n",
                stringify!($name)
            );
        )*
    };
}

fn header_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plexus-plugin.h")
}

#[test]
fn header_matches_rust_layout_and_constants() {
    let (mut rust, mut c, _) = layout! {
        PxBytes { ptr, len }
        PxOwnedBytes { ptr, len }
        PxErrBuf { ptr, cap, len }
        PxHost { struct_size, max_log_level, ctx, log, host_id, peer_id, channel_secret }
        PxDescriptor { abi_version, struct_size, kind, reserved, name, vtable }
        PxMessage { id, from, sealed }
        PxMediatorVtable { struct_size, reserved, free_bytes, create, send, receive, acknowledge, destroy }
        PxCorridor { struct_size, accepted, inner, outer, peer, host_id, peer_id, key }
        PxRunResult { has_status, status, output }
        PxExecutorVtable { struct_size, reserved, free_bytes, create, run, destroy }
    };
    constants!(rust, c;
        PX_OK, PX_NONE, PX_ERR_CONFIG, PX_ERR_UNREACHABLE, PX_ERR_AUTH, PX_ERR_PROTOCOL,
        PX_ERR_IO, PX_ERR_PANIC, PX_ERR_INVALID_ARGUMENT, PX_ERR_SPAWN, PX_ERR_FAILED,
        PX_KIND_MEDIATOR, PX_KIND_EXECUTOR, PX_OUTCOME_HANDLED, PX_OUTCOME_REJECTED,
        PX_LOG_ERROR, PX_LOG_WARN, PX_LOG_INFO, PX_LOG_DEBUG, PX_LOG_TRACE,
        PX_HOST_V1_SIZE, PX_HOST_CHANNEL_SIZE,
    );
    rust.insert("PX_ABI_VERSION".into(), ABI_VERSION as u64);
    c += "printf(\"PX_ABI_VERSION %llu\\n\", (unsigned long long)PX_ABI_VERSION);\n";

    let dir = TempDir::new("header");
    let src = dir.0.join("layout.c");
    let exe = dir.0.join("layout");
    std::fs::write(
        &src,
        format!(
            "#include <stdio.h>\n#include <string.h>\n#include \"plexus-plugin.h\"\n\
             int main(void) {{\n{c}\
             printf(\"entry %d\\n\", strcmp(PX_ENTRY_SYMBOL, \"{}\") == 0);\nreturn 0;\n}}\n",
            std::str::from_utf8(&ENTRY_SYMBOL[..ENTRY_SYMBOL.len() - 1]).unwrap()
        ),
    )
    .unwrap();
    let include = header_path().parent().unwrap().to_path_buf();
    let out = Command::new("gcc")
        .args(["-std=c99", "-Wall", "-Werror", "-I"])
        .arg(&include)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("gcc is needed to check the C header");
    assert!(
        out.status.success(),
        "the header no longer compiles against the Rust field list:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    let mut c_facts = BTreeMap::new();
    for line in String::from_utf8(run.stdout).unwrap().lines() {
        let (k, v) = line.rsplit_once(' ').unwrap();
        c_facts.insert(k.to_string(), v.parse::<u64>().unwrap());
    }
    assert_eq!(c_facts.remove("entry"), Some(1), "PX_ENTRY_SYMBOL differs");
    assert_eq!(c_facts, rust);
}

#[test]
fn header_structs_have_exactly_the_rust_fields() {
    let (_, _, fields) = layout! {
        PxBytes { ptr, len }
        PxOwnedBytes { ptr, len }
        PxErrBuf { ptr, cap, len }
        PxHost { struct_size, max_log_level, ctx, log, host_id, peer_id, channel_secret }
        PxDescriptor { abi_version, struct_size, kind, reserved, name, vtable }
        PxMessage { id, from, sealed }
        PxMediatorVtable { struct_size, reserved, free_bytes, create, send, receive, acknowledge, destroy }
        PxCorridor { struct_size, accepted, inner, outer, peer, host_id, peer_id, key }
        PxRunResult { has_status, status, output }
        PxExecutorVtable { struct_size, reserved, free_bytes, create, run, destroy }
    };
    let header = std::fs::read_to_string(header_path()).unwrap();
    for (name, expected) in fields {
        let start = header
            .find(&format!("typedef struct {name} {{"))
            .unwrap_or_else(|| panic!("{name} missing from the header"));
        let body = &header[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find(&format!("}} {name};")).unwrap()];
        let found = declared_fields(body);
        assert_eq!(found, expected, "fields of {name}");
    }
}

/// Field names of a C struct body: the identifier before `;`, `[`, or the `(*name)` of a
/// function pointer; comments removed.
fn declared_fields(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(end) = rest.find(';') {
        let decl = strip_comments(&rest[..end]);
        rest = &rest[end + 1..];
        let name_end = decl.find("(*").map(|p| p + 2);
        let ident = match name_end {
            Some(p) => &decl[p..p + decl[p..].find(')').unwrap()],
            None => {
                let d = decl.split('[').next().unwrap().trim_end();
                let s = d
                    .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap();
                &d[s + 1..]
            }
        };
        out.push(ident.trim());
    }
    out
}

fn strip_comments(s: &str) -> &str {
    let s = s.trim();
    match s.rfind("*/") {
        Some(p) if s.trim_start().starts_with("/*") => s[p + 2..].trim(),
        _ => s,
    }
}

/// A scratch directory removed on drop, also when an assertion fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d =
            std::env::temp_dir().join(format!("plexus-plugins-abi-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
