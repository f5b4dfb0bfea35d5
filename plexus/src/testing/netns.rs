//! Network-namespace helpers for tests that need real NATs (root only). The caller names
//! the namespaces (each test with a prefix of its own); they are removed when their
//! [`Chain`] drops.

use std::io;
use std::os::fd::AsRawFd;
use std::process::Command;

/// Run `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &str) {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Load nftables `rules` in namespace `ns`.
pub fn nft(ns: &str, rules: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(rules.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "nft in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A chain of namespaces `host → nat… → router… → target`, deleted on drop.
pub struct Chain {
    /// Namespace names.
    pub names: Vec<String>,
}

impl Drop for Chain {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Run `f` on a thread that has entered network namespace `ns`, and wait for it.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in_netns(ns, f).join().unwrap()
}

/// Start `f` on a thread that has entered network namespace `ns`.
pub fn spawn_in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on this thread only, with a valid namespace fd.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", io::Error::last_os_error());
        f()
    })
}

/// True when we run as root. Otherwise prints a loud skip naming `test` and returns
/// false; with `CI=true` it panics instead, because a skipped test in CI is a failure.
pub fn root_or_skip(test: &str) -> bool {
    if root() {
        return true;
    }
    let msg = format!(
        "NETNS TEST {test} SKIPPED: needs root for network namespaces \
         (sudo ./tests/run-all.sh)."
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true, so a skip is a failure: {msg}");
    }
    eprintln!("\n{}\n!!! {msg}\n{}\n", "!".repeat(72), "!".repeat(72));
    false
}

/// Whether we run as root.
pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
