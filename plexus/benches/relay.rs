//! Relay figures (bench/run.sh part j), printed and never asserted: on one pair of lab
//! hosts (a-symmetric relaying, a-none as the peer, which it also reaches directly),
//! the TURN allocation's cost, the round-trip time direct and through coturn (via the
//! forwarder, as an executor sees it), and one-way UDP throughput both ways.
//!
//! `PLEXUS_LAB=NAME cargo bench -p plexus --bench relay` as root, with the lab up
//! (`tests/lab/lab.sh up --name NAME`). Without a lab it says so and exits 0.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus::relay::{self, TurnCredentials, TurnSettings};
use plexus::secret::Password;
use plexus::testing::netns::{in_netns, spawn_in_netns};

const PINGS: usize = 200;
const PAYLOAD: usize = 1200;
const BLAST: Duration = Duration::from_secs(2);

struct Lab {
    relaying_ns: String,
    peer_ns: String,
    peer_public: std::net::IpAddr,
    turn: TurnSettings,
}

fn load() -> Option<Lab> {
    let name = std::env::var("PLEXUS_LAB").ok()?;
    let path = format!("/run/plexus-lab/{name}/lab.json");
    let text = std::fs::read_to_string(&path).ok()?;
    let j: serde_json::Value = serde_json::from_str(&text).ok()?;
    let site = |s: &str, k: &str| j["sites"][s][k].as_str().map(str::to_string);
    let t = &j["turn"];
    Some(Lab {
        relaying_ns: site("a-symmetric", "host_netns")?,
        peer_ns: site("a-none", "host_netns")?,
        peer_public: site("a-none", "public_ip")?.parse().ok()?,
        turn: TurnSettings {
            server: SocketAddr::new(t["ip"].as_str()?.parse().ok()?, t["port"].as_u64()? as u16),
            credentials: TurnCredentials::LongTerm {
                user: t["user"].as_str()?.into(),
                password: Password::new(t["password"].as_str()?),
            },
        },
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Echoes every datagram back to its source until `stop`.
fn echo(sock: UdpSocket, stop: Arc<AtomicBool>) {
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}

/// `PINGS` round trips from `sock` to `to`, one at a time: median and p95.
fn pings(sock: &UdpSocket, to: SocketAddr) -> (Duration, Duration, usize) {
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut rtts = Vec::new();
    let mut buf = [0u8; 2048];
    for i in 0..PINGS as u32 {
        let msg = i.to_be_bytes();
        let t = Instant::now();
        sock.send_to(&msg, to).unwrap();
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            if buf[..n] == msg {
                rtts.push(t.elapsed());
                break;
            }
        }
    }
    let lost = PINGS - rtts.len();
    if rtts.is_empty() {
        return (Duration::ZERO, Duration::ZERO, lost);
    }
    (
        percentile(&mut rtts, 0.5),
        percentile(&mut rtts, 0.95),
        lost,
    )
}

/// Sends `PAYLOAD`-byte datagrams from `tx` to `to` at `mbps` (paced per millisecond)
/// for `BLAST`, counting at `rx`: (received Mbit/s, loss %).
fn blast(tx: &UdpSocket, to: SocketAddr, rx: &UdpSocket, mbps: f64) -> (f64, f64) {
    let rx = rx.try_clone().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let counter = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut got = 0u64;
        while let Ok((n, _)) = rx.recv_from(&mut buf) {
            if n == PAYLOAD {
                got += 1;
            }
        }
        got
    });
    let per_ms = mbps * 1e6 / 8.0 / PAYLOAD as f64 / 1000.0;
    let data = vec![0x5au8; PAYLOAD];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < BLAST {
        let due = (start.elapsed().as_secs_f64() * 1000.0 * per_ms) as u64;
        while sent < due {
            if tx.send_to(&data, to).is_ok() {
                sent += 1;
            } else {
                break;
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let secs = start.elapsed().as_secs_f64();
    let got = counter.join().unwrap();
    let rate = got as f64 * PAYLOAD as f64 * 8.0 / secs / 1e6;
    (
        rate,
        100.0 * (sent - got.min(sent)) as f64 / sent.max(1) as f64,
    )
}

fn main() {
    let Some(lab) = load() else {
        println!("relay: no lab (set PLEXUS_LAB to a running lab's name, as root): skipped");
        return;
    };
    let turn = lab.turn.clone();
    // Allocation cost: Allocate (challenge + signed) and CreatePermission.
    let peer_ip = lab.peer_public;
    let (mut alloc_t, mut perm_t) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let turn = turn.clone();
        let (a, p) = in_netns(&lab.relaying_ns, move || {
            let t = Instant::now();
            let mut a =
                relay::allocate(&turn, "0.0.0.0:0".parse().unwrap(), Duration::from_secs(5))
                    .expect("allocate");
            let at = t.elapsed();
            let t = Instant::now();
            a.permit(peer_ip, Duration::from_secs(5)).expect("permit");
            let pt = t.elapsed();
            let _ = a.close(Duration::from_secs(2));
            (at, pt)
        });
        alloc_t.push(a);
        perm_t.push(p);
    }
    println!(
        "  allocate (2 round trips to the server): median {:.2} ms, p95 {:.2} ms; permission (1): median {:.2} ms",
        ms(percentile(&mut alloc_t, 0.5)),
        ms(percentile(&mut alloc_t, 0.95)),
        ms(percentile(&mut perm_t, 0.5))
    );

    // The peer: an echo socket (RTT) and a counting socket (throughput), both public.
    let peer_echo = in_netns(&lab.peer_ns, || UdpSocket::bind("0.0.0.0:0").unwrap());
    let peer_sink = in_netns(&lab.peer_ns, || UdpSocket::bind("0.0.0.0:0").unwrap());
    let echo_addr = SocketAddr::new(peer_ip, peer_echo.local_addr().unwrap().port());
    let sink_addr = SocketAddr::new(peer_ip, peer_sink.local_addr().unwrap().port());
    let stop = Arc::new(AtomicBool::new(false));
    let echo_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || echo(peer_echo, stop))
    };

    // Direct: a socket on the relaying host straight to the peer (a-none has no NAT).
    let direct = in_netns(&lab.relaying_ns, || UdpSocket::bind("0.0.0.0:0").unwrap());
    let (d50, d95, dlost) = pings(&direct, echo_addr);

    // Relayed: executor socket -> forwarder -> coturn -> peer.
    let turn2 = turn.clone();
    let (exec, fwd) = spawn_in_netns(&lab.relaying_ns, move || {
        let mut a = relay::allocate(&turn2, "0.0.0.0:0".parse().unwrap(), Duration::from_secs(5))
            .expect("allocate");
        a.permit(peer_ip, Duration::from_secs(5)).expect("permit");
        let exec = UdpSocket::bind("127.0.0.1:0").unwrap();
        let fwd = relay::forward(a, echo_addr, exec.local_addr().unwrap()).expect("forward");
        (exec, fwd)
    })
    .join()
    .unwrap();
    let (r50, r95, rlost) = pings(&exec, fwd.local_addr());
    println!(
        "  RTT, {PINGS} pings: direct median {:.3} ms p95 {:.3} ms (lost {dlost}); relayed median {:.3} ms p95 {:.3} ms (lost {rlost})",
        ms(d50), ms(d95), ms(r50), ms(r95)
    );
    let s = fwd.stats();
    drop(fwd);
    stop.store(true, Ordering::Relaxed);
    echo_thread.join().unwrap();
    println!(
        "  forwarder: {} to peer, {} from peer, {} channel binds",
        s.to_peer, s.from_peer, s.turn.channel_binds
    );

    // Throughput, relaying host -> peer, paced.
    let turn3 = turn.clone();
    let (exec, fwd) = spawn_in_netns(&lab.relaying_ns, move || {
        let mut a = relay::allocate(&turn3, "0.0.0.0:0".parse().unwrap(), Duration::from_secs(5))
            .expect("allocate");
        a.permit(peer_ip, Duration::from_secs(5)).expect("permit");
        let exec = UdpSocket::bind("127.0.0.1:0").unwrap();
        let fwd = relay::forward(a, sink_addr, exec.local_addr().unwrap()).expect("forward");
        (exec, fwd)
    })
    .join()
    .unwrap();
    // Warm up: the first datagrams go as Send indications until the channel is bound.
    for _ in 0..5 {
        exec.send_to(b"warm", fwd.local_addr()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "  throughput, {PAYLOAD}-byte datagrams paced for {} s each, relaying host -> peer (received Mbit/s, loss):",
        BLAST.as_secs()
    );
    for mbps in [50.0, 100.0, 200.0, 400.0, 800.0] {
        let (dm, dl) = blast(&direct, sink_addr, &peer_sink, mbps);
        let before = fwd.stats().to_peer;
        let (rm, rl) = blast(&exec, fwd.local_addr(), &peer_sink, mbps);
        // Where relayed datagrams were lost: before the forwarder sent them on, or after.
        let through = fwd.stats().to_peer - before;
        println!(
            "    offered {mbps:>4.0}: direct {dm:>6.1} Mbit/s ({dl:>4.1} % lost)   relayed {rm:>6.1} Mbit/s ({rl:>4.1} % lost; forwarder passed {through})"
        );
    }
    drop(fwd);
}
