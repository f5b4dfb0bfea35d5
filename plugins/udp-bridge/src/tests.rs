//! Two bridges on loopback with two "applications" exchanging datagrams.

use super::*;
use plexus_plugin_sdk::Key;

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a UDP socket is bound to `port`, read from /proc so probing takes nothing.
fn udp_port_bound(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    let needle = format!(":{port:04X} ");
    table.lines().skip(1).any(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|local| format!("{local} ").ends_with(&needle))
    })
}

fn corridor(inner: u16, peer: u16) -> Corridor {
    let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    Corridor {
        inner: a(inner),
        outer: a(inner),
        peer: a(peer),
        host_id: "a@example.org/x".into(),
        peer_id: "b@example.org/y".into(),
        key: Key([1; 32]),
        accepted: false,
    }
}

#[test]
fn two_bridges_carry_datagrams_both_ways_and_stop_when_idle() {
    let (pa, pb, la, lb) = (free_port(), free_port(), free_port(), free_port());
    // Application B is a server that only listens (configured `app`); application A is
    // a client the bridge learns from its first datagram.
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    let mut a = UdpBridge::create(&format!(
        "local: 127.0.0.1:{la}\nkeepalive_secs: 1\nidle_timeout_secs: 2"
    ))
    .unwrap();
    let mut b = UdpBridge::create(&format!(
        "{{\"local\": \"127.0.0.1:{lb}\", \"app\": \"{server_addr}\", \"keepalive_secs\": 1, \"idle_timeout_secs\": 2}}"
    ))
    .unwrap();
    let ta = std::thread::spawn(move || a.run(&corridor(pa, pb)));
    let tb = std::thread::spawn(move || b.run(&corridor(pb, pa)));

    // Wait (bounded) until both bridges hold their sockets: loopback loses nothing after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ![pa, pb, la, lb].iter().all(|p| udp_port_bound(*p)) {
        assert!(
            Instant::now() < deadline,
            "bridges did not bind their sockets"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut served = 0;
        let quiet_until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < quiet_until && served < 10 {
            if let Ok((n, src)) = server.recv_from(&mut buf) {
                assert!(n > 0, "keepalives never reach the application");
                let mut reply = b"pong ".to_vec();
                reply.extend_from_slice(&buf[..n]);
                server.send_to(&reply, src).unwrap();
                served += 1;
            }
        }
        served
    });
    // A stranger on loopback must not get through to application B.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();

    let mut answered = 0;
    let mut buf = [0u8; 2048];
    for i in 0..10 {
        let msg = format!("ping {i}");
        stranger.send_to(b"intruder", ("127.0.0.1", pb)).unwrap();
        client.send_to(msg.as_bytes(), ("127.0.0.1", la)).unwrap();
        if let Ok((n, _)) = client.recv_from(&mut buf) {
            assert_eq!(&buf[..n], format!("pong {msg}").as_bytes());
            answered += 1;
        }
    }
    assert_eq!(answered, 10);
    assert_eq!(
        echo.join().unwrap(),
        10,
        "the server saw exactly the pings, no intruder"
    );
    let ra = ta.join().unwrap().unwrap();
    let rb = tb.join().unwrap().unwrap();
    assert!(
        ra.output.contains("idle_timeout_secs reached"),
        "{}",
        ra.output
    );
    assert!(
        ra.output
            .contains("10 datagrams to the peer, 10 to the application"),
        "{}",
        ra.output
    );
    assert!(
        rb.output
            .contains("10 datagrams to the peer, 10 to the application"),
        "{}",
        rb.output
    );
    assert!(
        !rb.output.contains(" 0 dropped"),
        "intruders counted as dropped: {}",
        rb.output
    );
    assert_eq!(ra.status, None);
}

#[test]
fn settings_are_checked() {
    for (s, needle) in [
        ("local: 127.0.0.1:0", "fixed port"),
        ("local: nowhere", "udp-bridge settings"),
        (
            "local: 127.0.0.1:9\nidle_timeout_secs: 0",
            "idle_timeout_secs",
        ),
        ("local: 127.0.0.1:9\nspeed: 11", "unknown field"),
    ] {
        match UdpBridge::create(s) {
            Err(PluginError::Config(m)) => assert!(m.contains(needle), "{s}: {m}"),
            other => panic!("{s}: {other:?}"),
        }
    }
}

#[test]
fn an_endpoint_in_use_is_a_spawn_error() {
    let busy = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let mut b = UdpBridge::create(&format!("local: 127.0.0.1:{}", free_port())).unwrap();
    match b.run(&corridor(port, free_port())) {
        Err(PluginError::Spawn(m)) => assert!(m.contains("corridor endpoint"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_stop_file_ends_the_bridge() {
    let dir = std::env::temp_dir().join(format!("plexus-plugins-bridge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stop = dir.join("stop");
    let _ = std::fs::remove_file(&stop);
    let settings = format!(
        "local: 127.0.0.1:{}\nidle_timeout_secs: 600\nstop_file: {}",
        free_port(),
        stop.display()
    );
    let mut b = UdpBridge::create(&settings).unwrap();
    let c = corridor(free_port(), free_port());
    let run = std::thread::spawn(move || b.run(&c));
    std::fs::write(&stop, "").unwrap();
    let report = run.join().unwrap().unwrap();
    assert!(
        report.output.contains("stop_file appeared"),
        "{}",
        report.output
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
