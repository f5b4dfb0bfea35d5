//! The binary's exit codes where no lab is needed (loopback only).

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::lab::plexus_bin;

/// Ctrl-C (SIGINT) ends plexus with the documented exit code 130 and a clear line,
/// not with death by signal.
#[test]
fn interrupt_exits_130() {
    // A "STUN server" that never answers, so `plexus nat` waits out its long timeout.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = silent.local_addr().unwrap();
    let mut child = Command::new(plexus_bin())
        .args(["nat", "--stun", &server.to_string(), "--timeout", "20000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt only once plexus is waiting (its first request has arrived).
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 1500];
    silent
        .recv_from(&mut buf)
        .expect("plexus nat should send a Binding request");
    // SAFETY: signalling our own child by its PID.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "plexus ignored SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(130), "{status:?} {stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
}
