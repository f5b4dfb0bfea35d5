//! The tunnel between two instances on loopback: real QUIC, real TCP and UDP services
//! (small echo servers), both sides' threads as plexus would run them.

use super::*;
use plexus_plugin_sdk::Key;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::thread::JoinHandle;

fn free_udp_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn free_tcp_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A TCP echo server answering every connection until the process ends.
fn tcp_echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    a
}

fn udp_echo() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let a = s.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    a
}

fn corridor(inner: SocketAddr, peer: SocketAddr, key: [u8; 32], accepted: bool) -> Corridor {
    Corridor {
        inner,
        outer: inner,
        peer,
        host_id: if accepted { "b@x/b" } else { "a@x/a" }.into(),
        peer_id: if accepted { "a@x/a" } else { "b@x/b" }.into(),
        key: Key(key),
        accepted,
    }
}

struct Pair {
    acceptor: JoinHandle<Result<RunReport, PluginError>>,
    inviter: JoinHandle<Result<RunReport, PluginError>>,
    stop: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!(
        "plexus-tunnel-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

/// Starts both ends; `listen` and `forward` are YAML flow lists.
fn pair(tag: &str, forward: &str, listen: &str, keys: ([u8; 32], [u8; 32])) -> Pair {
    let dir = temp_dir(tag);
    let stop = dir.0.join("stop");
    let (a, b) = (free_udp_port(), free_udp_port());
    let common = format!(
        "keepalive_secs: 1\npath_timeout_secs: 5\nmax_duration_secs: 60\nstop_file: {}\n",
        stop.display()
    );
    let mut acc = Tunnel::create(&format!("forward: {forward}\n{common}")).unwrap();
    let mut inv = Tunnel::create(&format!("listen: {listen}\n{common}")).unwrap();
    let acceptor = std::thread::spawn(move || acc.run(&corridor(b, a, keys.1, true)));
    let inviter = std::thread::spawn(move || inv.run(&corridor(a, b, keys.0, false)));
    Pair {
        acceptor,
        inviter,
        stop,
        _dir: dir,
    }
}

impl Pair {
    fn finish(
        self,
    ) -> (
        Result<RunReport, PluginError>,
        Result<RunReport, PluginError>,
    ) {
        std::fs::write(&self.stop, b"").unwrap();
        (self.inviter.join().unwrap(), self.acceptor.join().unwrap())
    }
}

/// Connects (retrying while the listener is not up yet) and echoes `data`.
fn echo_through(at: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = None;
    for _ in 0..100 {
        match TcpStream::connect(at) {
            Ok(c) => {
                s = Some(c);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let mut s = s.ok_or_else(|| std::io::Error::other("listener never came up"))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut r = s.try_clone()?;
    let data2 = data.to_vec();
    let w = std::thread::spawn(move || -> std::io::Result<()> {
        s.write_all(&data2)?;
        s.shutdown(std::net::Shutdown::Write)
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got)?;
    w.join().unwrap()?;
    Ok(got)
}

#[test]
fn tcp_connections_at_once_and_udp_cross_the_tunnel() {
    let (tcp_svc, udp_svc) = (tcp_echo(), udp_echo());
    let (on_tcp, on_udp) = (free_tcp_port(), free_udp_port());
    let p = pair(
        "echo",
        &format!(
            "[{{name: echo, to: \"{tcp_svc}\"}}, {{name: uecho, to: \"{udp_svc}\", udp: true}}]"
        ),
        &format!(
            "[{{name: echo, on: \"{on_tcp}\"}}, {{name: uecho, on: \"{on_udp}\", udp: true}}]"
        ),
        ([9; 32], [9; 32]),
    );
    let workers: Vec<_> = (0..8u8)
        .map(|i| {
            std::thread::spawn(move || {
                let data: Vec<u8> = (0..300_000u32).map(|x| (x as u8) ^ i).collect();
                (echo_through(on_tcp, &data).unwrap(), data)
            })
        })
        .collect();
    for w in workers {
        let (got, want) = w.join().unwrap();
        assert!(
            got == want,
            "each connection gets exactly its own bytes back"
        );
    }
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let mut got = None;
    for _ in 0..50 {
        u.send_to(b"ping over datagrams", on_udp).unwrap();
        if let Ok((n, _)) = u.recv_from(&mut buf) {
            got = Some(buf[..n].to_vec());
            break;
        }
    }
    assert_eq!(got.as_deref(), Some(&b"ping over datagrams"[..]));
    let (inv, acc) = p.finish();
    let (inv, acc) = (inv.unwrap(), acc.unwrap());
    assert!(inv.output.contains("stop_file appeared"), "{}", inv.output);
    assert!(
        inv.output.contains("8 TCP connections (0 refused)"),
        "{}",
        inv.output
    );
    assert!(
        acc.output.contains("8 TCP connections (0 refused)"),
        "{}",
        acc.output
    );
}

#[test]
fn a_service_not_forwarded_is_refused() {
    let tcp_svc = tcp_echo();
    let (on_ok, on_no) = (free_tcp_port(), free_tcp_port());
    let p = pair(
        "refuse",
        &format!("[{{name: echo, to: \"{tcp_svc}\"}}]"),
        &format!("[{{name: echo, on: \"{on_ok}\"}}, {{name: secret, on: \"{on_no}\"}}]"),
        ([3; 32], [3; 32]),
    );
    assert_eq!(echo_through(on_ok, b"fine").unwrap(), b"fine");
    // The peer refuses: the local connection is closed without a byte.
    let got = echo_through(on_no, b"let me in");
    assert!(
        matches!(&got, Ok(v) if v.is_empty()) || got.is_err(),
        "{got:?}"
    );
    let (inv, acc) = p.finish();
    let acc = acc.unwrap();
    assert!(
        acc.output.contains("1 TCP connections (1 refused)"),
        "{}",
        acc.output
    );
    assert!(inv.unwrap().output.contains("(1 refused)"));
}

#[test]
fn a_peer_with_another_key_is_refused_before_any_stream() {
    let tcp_svc = tcp_echo();
    let on = free_tcp_port();
    let p = pair(
        "wrongkey",
        &format!("[{{name: echo, to: \"{tcp_svc}\"}}]"),
        &format!("[{{name: echo, on: \"{on}\"}}]"),
        ([1; 32], [2; 32]),
    );
    let (inv, acc) = (p.inviter.join().unwrap(), p.acceptor.join().unwrap());
    for (who, r) in [("inviter", inv), ("acceptor", acc)] {
        match r {
            Err(PluginError::Auth(m)) => {
                assert!(
                    m.contains("session's key") && m.contains("0 TCP connections"),
                    "{who}: {m}"
                )
            }
            other => panic!("{who} should refuse the peer: {other:?}"),
        }
    }
}

#[test]
fn settings_are_checked() {
    let bad = [
        ("", "name the services"),
        (
            "forward: [{name: ssh, to: 127.0.0.1:22, bogus: 1}]",
            "unknown field `bogus`",
        ),
        (
            "forward: [{name: 'a b', to: 127.0.0.1:22}]",
            "forward name \"a b\"",
        ),
        (
            "forward: [{name: a, to: 127.0.0.1:22}, {name: a, to: 127.0.0.1:23}]",
            "appears twice",
        ),
        ("forward: [{name: a, to: 'no port'}]", "is not a HOST:PORT"),
        ("listen: [{name: a, on: 127.0.0.1:0}]", "fixed port"),
        (
            "listen: [{name: a, on: 127.0.0.1:5}, {name: b, on: 127.0.0.1:5}]",
            "used twice",
        ),
        (
            "listen: [{name: a, on: 127.0.0.1:5}]\nkeepalive_secs: 0",
            "keepalive_secs",
        ),
        (
            "listen: [{name: a, on: 127.0.0.1:5}]\nkeepalive_secs: 30\npath_timeout_secs: 30",
            "path_timeout_secs",
        ),
        (
            "listen: [{name: a, on: 127.0.0.1:5}]\nsurprise: true",
            "unknown field `surprise`",
        ),
        ("listen: 7", "listen"),
    ];
    for (text, want) in bad {
        match Tunnel::create(text) {
            Err(PluginError::Config(m)) => assert!(m.contains(want), "{text:?}: {m}"),
            other => panic!("{text:?} should be refused: {other:?}"),
        }
    }
    let t = Tunnel::create(
        "forward: [{name: dns, to: 'localhost:53', udp: true}]\nlisten: [{name: ssh, on: 127.0.0.1:2222}]\npersistent: true",
    )
    .unwrap();
    assert!(t.config.persistent && t.config.forward[0].udp && t.config.forward[0].to.port() == 53);
    // Settings for the other role are a clear error at run time.
    let mut only_forward = Tunnel::create("forward: [{name: a, to: 127.0.0.1:9}]").unwrap();
    let c = corridor(free_udp_port(), free_udp_port(), [0; 32], false);
    match only_forward.run(&c) {
        Err(PluginError::Config(m)) => assert!(m.contains("needs `listen:`"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// An inviter whose peer never answers: a clear error, and with `persistent` the
/// "path lost, invite again" code (Unreachable) that makes plexus re-invite. The same
/// instance runs again with its listener still bound.
#[test]
fn a_silent_peer_fails_or_asks_for_a_new_path() {
    let nobody = free_udp_port();
    let run = move |persistent: bool| {
        let on = free_tcp_port();
        let mut t = Tunnel::create(&format!(
            "listen: [{{name: a, on: \"{on}\"}}]\nkeepalive_secs: 1\npath_timeout_secs: 2\npersistent: {persistent}"
        ))
        .unwrap();
        let c = corridor(free_udp_port(), nobody, [5; 32], false);
        let first = t.run(&c);
        let bound = TcpStream::connect(on).is_ok();
        let c = corridor(free_udp_port(), nobody, [5; 32], false);
        (first, bound, t.run(&c))
    };
    let p = std::thread::spawn(move || run(true));
    let (once, bound, _) = run(false);
    match once {
        Err(PluginError::Failed(m)) => assert!(m.contains("never answered"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(bound, "the listener stays bound after a run");
    let (first, bound, second) = p.join().unwrap();
    for r in [first, second] {
        match r {
            Err(PluginError::Unreachable(m)) => {
                assert!(m.starts_with("path lost: the peer never answered"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(bound);
}
