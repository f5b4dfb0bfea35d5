//! The `tunnel` executor plugin (issue 14) end to end: `plexus invite` and `plexus
//! accept` in two sites of the lab (both behind port-restricted NATs), rendezvous
//! through the `file` mediator, and real services behind the accepting side: Debian's
//! sshd on the acceptor's loopback, reached from the inviter's site with
//! `ssh -p 2222 127.0.0.1`, and a UDP echo service.
//!
//! Needs `openssh-server` (tests/lab/install-deps.sh) and the plugins built next to the
//! plexus binary (`cargo build --workspace`).

use std::fs;
use std::io::Read;
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::corridor::{demo_certs, read, wait, wait_for_count, wait_for_text};
use crate::lab::{assert_ok, Lab};
use crate::plugins::{
    file_mediator, plugin_lib, profile_yaml, start_acceptor, start_side, stun_of, write,
};

const INVITER: &str = "a-port";
const ACCEPTOR: &str = "b-port";

/// A YAML scalar for any string (JSON strings are valid YAML flow scalars).
fn q(s: impl std::fmt::Display) -> String {
    serde_json::to_string(&s.to_string()).unwrap()
}

/// One test's setup: scratch dir, profiles, sshd keys.
struct Setup<'a> {
    lab: &'a Lab,
    dir: PathBuf,
    stop: PathBuf,
}

impl<'a> Setup<'a> {
    /// Profiles for alice (inviter: `listen`) and bob (acceptor: `forward`), with the
    /// given extra inviter settings (e.g. `persistent: true`).
    fn new(lab: &'a Lab, test: &str, inviter_extra: &str) -> Setup<'a> {
        let file_so = plugin_lib("file", "file");
        plugin_lib("tunnel", "tunnel");
        let dir = lab.scratch(test);
        demo_certs(&dir);
        let shared = dir.join("shared");
        fs::create_dir(&shared).unwrap();
        let stop = dir.join("stop");
        let common = format!(
            "      keepalive_secs: 1\n      path_timeout_secs: 4\n      max_duration_secs: 300\n      \
             stop_file: {}\n",
            q(stop.display())
        );
        let executor = |services: &str, extra: &str| {
            format!(
                "executor:\n  plugin:\n    name: tunnel\n    settings:\n{services}{common}{extra}"
            )
        };
        let forward = "      forward:\n        - { name: ssh, to: \"127.0.0.1:22\" }\n        \
                       - { name: echo, to: \"127.0.0.1:7\", udp: true }\n";
        let listen = "      listen:\n        - { name: ssh, on: \"127.0.0.1:2222\" }\n        \
                      - { name: echo, on: \"127.0.0.1:7007\", udp: true }\n        \
                      - { name: secret, on: \"127.0.0.1:2223\" }\n";
        let profile = |who: &str, peer: &str, ex: String| {
            write(
                &dir.join(format!("{who}.yaml")),
                &profile_yaml(
                    who,
                    peer,
                    &stun_of(lab),
                    &file_mediator(&file_so, &shared, who, peer, ""),
                    &ex,
                ),
            )
        };
        profile("alice", "bob", executor(listen, inviter_extra));
        profile("bob", "alice", executor(forward, ""));
        Setup { lab, dir, stop }
    }

    fn profile(&self, who: &str) -> PathBuf {
        self.dir.join(format!("{who}.yaml"))
    }

    fn acceptor(&self) -> Child {
        start_acceptor(self.lab, &self.dir, ACCEPTOR, &self.profile("bob"))
    }

    fn inviter(&self) -> Child {
        start_side(
            self.lab,
            &self.dir,
            INVITER,
            "alice",
            &self.profile("alice"),
            false,
        )
    }

    fn log(&self, who: &str) -> String {
        read(self.dir.join(format!("{who}.log")))
    }

    fn dump(&self, alice: Option<ExitStatus>, bob: Option<ExitStatus>) -> String {
        let side = |who: &str| {
            format!(
                "{}\n{}",
                read(self.dir.join(format!("{who}.out"))),
                self.log(who)
            )
        };
        format!(
            "--- alice (inviter) {alice:?}\n{}\n--- bob (acceptor) {bob:?}\n{}\n--- sshd\n{}",
            side("alice"),
            side("bob"),
            read(self.dir.join("sshd.log"))
        )
    }

    /// Waits until alice's tunnel has its `n`th authenticated connection.
    fn wait_tunnel_up(&self, n: usize, alice: &mut Child, bob: &mut Child) {
        if !wait_for_count(
            &self.dir.join("alice.log"),
            "authenticated QUIC connection",
            n,
            Duration::from_secs(90),
        ) {
            let a = wait(alice, Duration::from_secs(1));
            let b = wait(bob, Duration::from_secs(1));
            panic!("the tunnel never came up:\n{}", self.dump(a, b));
        }
    }
}

/// sshd on 127.0.0.1:22 in the acceptor's host namespace, with a fresh host key and a
/// client key it trusts; the client's known_hosts names the host key for
/// `[127.0.0.1]:2222`, where the tunnel makes it appear on the inviter's side.
struct Sshd {
    child: Child,
    dir: PathBuf,
}

impl Sshd {
    fn start(lab: &Lab, dir: &Path) -> Sshd {
        let keygen = |file: &str| {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "plexus-e2e", "-f"])
                .arg(dir.join(file))
                .output()
                .expect("ssh-keygen (package openssh-client)");
            assert_ok("ssh-keygen", &out);
        };
        keygen("host_key");
        keygen("client_key");
        fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let host_pub = read(dir.join("host_key.pub"));
        fs::write(
            dir.join("known_hosts"),
            format!("[127.0.0.1]:2222 {host_pub}"),
        )
        .unwrap();
        let config = format!(
            "ListenAddress 127.0.0.1:22\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PidFile {d}/sshd.pid\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nLogLevel VERBOSE\n\
             MaxStartups 50\n",
            d = dir.display()
        );
        fs::write(dir.join("sshd_config"), config).unwrap();
        // Debian's sshd refuses to start without its privilege separation directory.
        fs::create_dir_all("/run/sshd").unwrap();
        let log = fs::File::create(dir.join("sshd.log")).unwrap();
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "{} is missing: install openssh-server (tests/lab/install-deps.sh)",
            sshd.display()
        );
        let child = lab
            .command(&lab.site(ACCEPTOR).host_netns, "/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start sshd in the lab");
        let mut s = Sshd {
            child,
            dir: dir.to_path_buf(),
        };
        if !wait_for_text(
            &dir.join("sshd.log"),
            "Server listening on 127.0.0.1 port 22",
            Duration::from_secs(20),
        ) {
            let st = wait(&mut s.child, Duration::from_secs(1));
            panic!(
                "sshd did not start ({st:?}):\n{}",
                read(dir.join("sshd.log"))
            );
        }
        s
    }

    fn ssh(&self, lab: &Lab, cmd: &str, out: Option<&Path>) -> Output {
        ssh(lab, &self.dir, cmd, out)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // We started it: end it by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ssh -p 2222 127.0.0.1 CMD` in the inviter's site, BatchMode and strict host key
/// checking against the known_hosts we wrote; stdout to `out` when given.
/// `ssh -p 2222 127.0.0.1 CMD` in the inviter's site (bounded by `timeout`), in
/// BatchMode with strict host key checking against the known_hosts we wrote.
fn ssh_command(lab: &Lab, d: &Path, cmd: &str) -> Command {
    let mut c = lab.command(&lab.site(INVITER).host_netns, "timeout");
    c.args([
        "--kill-after=5",
        "120",
        "ssh",
        "-F",
        "/dev/null",
        "-p",
        "2222",
    ])
    .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
    .arg("-o")
    .arg(format!(
        "UserKnownHostsFile={}",
        d.join("known_hosts").display()
    ))
    .args(["-o", "ConnectTimeout=60", "-o", "ServerAliveInterval=5"])
    .arg("-i")
    .arg(d.join("client_key"))
    .args(["root@127.0.0.1", cmd]);
    c
}

/// [`ssh_command`] to completion; stdout to the file `out` when given.
fn ssh(lab: &Lab, d: &Path, cmd: &str, out: Option<&Path>) -> Output {
    let mut c = ssh_command(lab, d, cmd);
    match out {
        Some(p) => {
            let status = c
                .stdout(Stdio::from(fs::File::create(p).unwrap()))
                .stderr(Stdio::from(fs::File::create(d.join("ssh.err")).unwrap()))
                .status()
                .expect("run ssh");
            Output {
                status,
                stdout: Vec::new(),
                stderr: read(d.join("ssh.err")).into_bytes(),
            }
        }
        None => c.output().expect("run ssh"),
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert_ok("sha256sum", &out);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A UDP echo server on 127.0.0.1:7 in the acceptor's namespace until `stop` (at most
/// two minutes); returns how many datagrams it echoed.
fn udp_echo(lab: &'static Lab, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    let ns = lab.site(ACCEPTOR).host_netns.clone();
    std::thread::spawn(move || {
        lab.in_ns(&ns, move || {
            let s = UdpSocket::bind("127.0.0.1:7").expect("bind the UDP echo service");
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let end = Instant::now() + Duration::from_secs(120);
            let mut buf = [0u8; 2048];
            let mut echoed = 0;
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                    echoed += 1;
                }
            }
            echoed
        })
    })
}

/// ssh through the tunnel runs a command on the acceptor's host; a 100 MB file comes
/// through with the same SHA-256; four ssh sessions run at once; UDP datagrams reach
/// an echo service and come back; a service the acceptor does not forward is refused;
/// the stop file ends both sides cleanly with a summary.
#[test]
fn tunnel_reaches_sshd_and_udp_behind_nat() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&[INVITER, ACCEPTOR]);
    let s = Setup::new(lab, "tunnel-ssh", "");
    let sshd = Sshd::start(lab, &s.dir);
    let echo_stop = Arc::new(AtomicBool::new(false));
    let echo = udp_echo(lab, echo_stop.clone());
    let mut bob = s.acceptor();
    let mut alice = s.inviter();
    s.wait_tunnel_up(1, &mut alice, &mut bob);

    // A command runs on the acceptor's host: its address is the acceptor site's.
    let out = sshd.ssh(lab, "ip -4 -o addr show", None);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let bob_ip = lab.site(ACCEPTOR).host_ip.to_string();
    assert!(
        out.status.success() && text.contains(&bob_ip),
        "ssh -p 2222 127.0.0.1 should run on bob's host ({bob_ip}): {}\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.dump(None, None)
    );

    // 100 MB through ssh.
    let src = s.dir.join("big.src");
    let dst = s.dir.join("big.dst");
    let gen = Command::new("head")
        .args(["-c", "100000000", "/dev/urandom"])
        .stdout(Stdio::from(fs::File::create(&src).unwrap()))
        .status()
        .unwrap();
    assert!(gen.success());
    let started = Instant::now();
    let out = sshd.ssh(lab, &format!("cat {}", src.display()), Some(&dst));
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "the copy failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.dump(None, None)
    );
    assert_eq!(fs::metadata(&dst).unwrap().len(), 100_000_000);
    assert_eq!(sha256(&src), sha256(&dst), "the copy must be identical");
    eprintln!("tunnel-ssh: 100 MB through ssh over the tunnel in {secs:.1} s");
    let _ = fs::remove_file(&src);
    let _ = fs::remove_file(&dst);

    // Four sessions at once.
    let parallel: Vec<_> = (0..4)
        .map(|i| {
            let dir = s.dir.clone();
            std::thread::spawn(move || ssh(lab, &dir, &format!("sleep 2; echo session-{i}"), None))
        })
        .collect();
    for (i, t) in parallel.into_iter().enumerate() {
        let o = t.join().unwrap();
        assert!(
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).trim() == format!("session-{i}"),
            "parallel session {i}: {o:?}"
        );
    }

    // UDP through datagrams.
    let ns_a = lab.site(INVITER).host_netns.clone();
    let got = lab.in_ns(&ns_a, || {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 2048];
        let mut got = 0;
        for i in 0..20u32 {
            let msg = format!("datagram {i}");
            u.send_to(msg.as_bytes(), "127.0.0.1:7007").unwrap();
            if let Ok((n, _)) = u.recv_from(&mut buf) {
                if &buf[..n] == msg.as_bytes() {
                    got += 1;
                }
            }
        }
        got
    });
    assert!(
        got >= 15,
        "UDP echo through the tunnel: {got} of 20 came back"
    );

    // Not forwarded: the connection is closed without a byte, and bob says why.
    let refused = lab.in_ns(&ns_a, || {
        let mut c = TcpStream::connect("127.0.0.1:2223").expect("alice listens for `secret`");
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut v = Vec::new();
        let r = c.read_to_end(&mut v);
        (r.is_ok() || v.is_empty(), v.len())
    });
    assert_eq!(
        refused,
        (true, 0),
        "a service bob does not forward gets nothing"
    );
    assert!(
        wait_for_text(
            &s.dir.join("bob.log"),
            "refused a connection to \"secret\"",
            Duration::from_secs(10)
        ),
        "bob should log the refusal:\n{}",
        s.log("bob")
    );

    fs::write(&s.stop, b"").unwrap();
    let a = wait(&mut alice, Duration::from_secs(30));
    let b = wait(&mut bob, Duration::from_secs(30));
    echo_stop.store(true, Ordering::Relaxed);
    let echoed = echo.join().unwrap();
    assert!(echoed >= 15, "the echo service saw {echoed} datagrams");
    assert!(
        a.and_then(|s| s.code()) == Some(0) && b.and_then(|s| s.code()) == Some(0),
        "both sides stop cleanly:\n{}",
        s.dump(a, b)
    );
    let alog = s.log("alice");
    assert!(
        // Whichever side sees the stop file first closes; the other hears about it.
        alog.contains("tunnel (inviter) ended (")
            && alog.contains("stop_file appeared)")
            && alog.contains("(1 refused)"),
        "alice's summary:\n{alog}"
    );
    let blog = s.log("bob");
    assert!(
        blog.contains("tunnel (acceptor) ended"),
        "bob's summary:\n{blog}"
    );
    for l in alog
        .lines()
        .chain(blog.lines())
        .filter(|l| l.contains(") ended"))
    {
        eprintln!("tunnel-ssh: {l}");
    }
}

/// Killing the acceptor's plexus in the middle of a transfer: the inviter's tunnel
/// notices within path_timeout_secs, plexus invite exits non-zero with an error saying
/// the peer stopped answering, and the ssh transfer fails rather than looking complete.
#[test]
fn tunnel_inviter_fails_clearly_when_the_acceptor_dies() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&[INVITER, ACCEPTOR]);
    let s = Setup::new(lab, "tunnel-kill", "");
    let _sshd = Sshd::start(lab, &s.dir);
    let mut bob = s.acceptor();
    let mut alice = s.inviter();
    s.wait_tunnel_up(1, &mut alice, &mut bob);

    let mut transfer = ssh_command(lab, &s.dir, "cat /dev/zero")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ssh");
    let mut stdout = transfer.stdout.take().unwrap();
    let counter = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    // Let data flow, then kill bob's plexus (we started it: by its pid).
    std::thread::sleep(Duration::from_secs(3));
    bob.kill().unwrap();
    let b = bob.wait().ok();
    let a = wait(&mut alice, Duration::from_secs(40));
    let st = wait(&mut transfer, Duration::from_secs(40));
    let total = counter.join().unwrap();
    assert!(
        total > 1_000_000,
        "the transfer was running: {total} bytes\n{}",
        s.dump(a, b)
    );
    assert!(
        st.is_some_and(|st| !st.success()),
        "the cut transfer must not look complete: ssh {st:?}"
    );
    assert!(
        a.and_then(|s| s.code()).is_some_and(|c| c != 0),
        "plexus invite must fail when its peer vanishes:\n{}",
        s.dump(a, b)
    );
    let alog = s.log("alice");
    assert!(
        alog.contains("the peer stopped answering: nothing from it for 4 s"),
        "alice's error should say the peer vanished:\n{alog}"
    );
    eprintln!(
        "tunnel-kill: {total} bytes before the kill; alice: {}",
        alog.lines()
            .rev()
            .find(|l| l.contains("stopped answering"))
            .unwrap_or("")
    );
}

/// `persistent: true` on the inviter: the acceptor's plexus is killed and started
/// again; alice's plexus invites again on its own, keeps 127.0.0.1:2222 bound, and a
/// new ssh connection works. The stop file then ends both cleanly.
#[test]
fn tunnel_persistent_reinvites_a_restarted_acceptor() {
    let lab = lab_or_skip!();
    let _c = lab.claim(&[INVITER, ACCEPTOR]);
    let s = Setup::new(lab, "tunnel-persistent", "      persistent: true\n");
    let sshd = Sshd::start(lab, &s.dir);
    let mut bob = s.acceptor();
    let mut alice = s.inviter();
    s.wait_tunnel_up(1, &mut alice, &mut bob);
    let out = sshd.ssh(lab, "echo first", None);
    assert!(
        out.status.success() && out.stdout == b"first\n",
        "{out:?}\n{}",
        s.dump(None, None)
    );

    bob.kill().unwrap();
    let _ = bob.wait();
    let first_bob_log = s.log("bob");
    let mut bob = s.acceptor();
    s.wait_tunnel_up(2, &mut alice, &mut bob);
    let out = sshd.ssh(lab, "echo second", None);
    let alog = s.log("alice");
    assert!(
        out.status.success() && out.stdout == b"second\n",
        "a new ssh connection after the re-invite: {out:?}\n{}",
        s.dump(None, None)
    );
    assert!(
        alog.contains("path lost: the peer stopped answering") && alog.contains("again in 1 s"),
        "alice should say why she invites again:\n{alog}"
    );
    assert_eq!(
        alog.matches("listens on 127.0.0.1:2222").count(),
        1,
        "the listener is bound once and kept:\n{alog}"
    );
    assert!(alice.try_wait().unwrap().is_none(), "alice keeps running");

    fs::write(&s.stop, b"").unwrap();
    let a = wait(&mut alice, Duration::from_secs(30));
    let b = wait(&mut bob, Duration::from_secs(30));
    assert!(
        a.and_then(|s| s.code()) == Some(0) && b.and_then(|s| s.code()) == Some(0),
        "both stop cleanly:\n--- first bob\n{first_bob_log}\n{}",
        s.dump(a, b)
    );
}
