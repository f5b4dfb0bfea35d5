//! The binary's exit codes where no lab is needed (loopback only).

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plexus::testing::TempDir;

use crate::lab::plexus_bin;

/// Ctrl-C (SIGINT) ends plexus with the documented exit code 130 and a clear line,
/// not with death by signal.
#[test]
fn interrupt_exits_130() {
    // A "STUN server" that never answers, so `plexus nat` waits out its long timeout.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = silent.local_addr().unwrap();
    let mut child = Command::new(plexus_bin())
        // No router probe: outside the lab it would ask the machine's real gateway.
        .args([
            "nat",
            "--no-port-mapping",
            "--stun",
            &server.to_string(),
            "--timeout",
            "20000",
        ])
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

/// A scratch directory under the system temp dir, removed at the end.
/// The article's flat command line up to the point where plexus needs certificates:
/// mail on loopback (never reached), STUN on a silent loopback port.
fn article_args(stun: &str) -> Vec<String> {
    [
        "--accept",
        "--email-smtps=127.0.0.1:1",
        "--email-imaps=127.0.0.1:1",
        "--email-login=peerlogin",
        "--email-passwd=peerpassword",
        "--email-from=PeerHost@peermailer.com",
        "--email-to=yourhost@yourmailer.com",
        "--host-id=remote",
        "--peer-id=local",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("--stun-ip={stun}"),
        "--exec-command=/bin/true".into(),
    ])
    .collect()
}

fn run_plexus(args: &[String], env: &[(&str, &std::path::Path)]) -> (Option<i32>, String) {
    let mut c = Command::new(plexus_bin());
    c.args(args).env_clear().stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--host-id=remote --email-from=peerhost@peermailer.com` means
/// `peerhost@peermailer.com/remote`: with no certificate given, plexus looks for the
/// files `plexus cert new` names after that id in the config directory.
#[test]
fn the_articles_plain_ids_are_instances_under_the_mail_addresses() {
    let home = TempDir::new("article-ids");
    let (code, err) = run_plexus(&article_args("127.0.0.1"), &[("HOME", home.path())]);
    assert_eq!(code, Some(2), "{err}");
    let keys = home.join(".config/plexus/keys");
    for want in [
        "peerhost@peermailer.com_remote.pem",
        "peerhost@peermailer.com_remote.key",
        "yourhost@yourmailer.com_local.pem",
    ] {
        assert!(
            err.contains(&keys.join(want).display().to_string()),
            "should name {want}: {err}"
        );
    }
    assert!(
        err.contains("process list"),
        "--email-passwd warns, not refuses: {err}"
    );

    // Without a mail address to put it under, a plain id is a usage error naming why.
    let args: Vec<String> = ["accept", "--host-id=remote", "--peer-id=local"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (code, err) = run_plexus(&args, &[("HOME", home.path())]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--email-from"), "{err}");
}

/// With neither HOME nor XDG_STATE_HOME, replay protection would live in memory and a
/// restart would accept a replayed invite: plexus refuses to start instead.
#[test]
fn no_home_means_no_silent_in_memory_replay_state() {
    let dir = TempDir::new("replay");
    let certs = crate::corridor::demo_certs(dir.path());
    let c = |f: &str| certs.join(f).display().to_string();
    let mut args = vec![
        "accept".to_string(),
        "--host-id=bob@lab.example/office".into(),
        "--peer-id=alice@lab.example/home".into(),
        format!("--smime-cert={}", c("bob.pem")),
        format!("--smime-key={}", c("bob.key")),
        format!("--smime-peer={}", c("alice.pem")),
        "--email-smtps=127.0.0.1:1".into(),
        "--email-imaps=127.0.0.1:1".into(),
        "--email-passwd=x".into(),
        "--email-from=bob@lab.example".into(),
        "--email-to=alice@lab.example".into(),
        "--stun=127.0.0.1:9".into(),
        "--exec-command=/bin/true".into(),
    ];
    let (code, err) = run_plexus(&args, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--replay-state"), "{err}");

    // With HOME, the default state directory is created private (its file names name
    // the host and the peer). A STUN server that never answers ends the run after that.
    use std::os::unix::fs::PermissionsExt;
    args.push("--stun-timeout=50".into());
    let (code, err) = run_plexus(&args, &[("HOME", dir.path())]);
    assert_eq!(code, Some(1), "{err}");
    let state = dir.join(".local/state/plexus");
    let mode = std::fs::metadata(&state)
        .unwrap_or_else(|e| panic!("{}: {e}; {err}", state.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{}", state.display());
}
