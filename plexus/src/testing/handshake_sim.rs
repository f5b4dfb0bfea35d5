//! Two handshake cores over a simulated network in virtual time: loss, duplication,
//! reordering, NAT remaps and an attacker, all deterministic from a seed, no sleeping.
//! The handshake tests assert on it; the benches print figures from it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Rng;
use crate::punch::handshake::{Config, Event, Handshake};
use crate::punch::wire::{self, Keys, Packet, Role, Secrets};
use crate::sansio::{Core, Transmit};

/// The simulated network between the two cores.
#[derive(Debug, Clone, Default)]
pub struct NetConfig {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram arrives twice.
    pub dup: f64,
    /// Extra random delay (ms) on top of 10 ms: reorders packets.
    pub jitter_ms: u64,
    /// At this offset, the given side's NAT gives its traffic a new source port, and
    /// only the new one is reachable from then on.
    pub remap: Option<(usize, Duration)>,
    /// Attacker: inject forgeries, wrong-session packets, replays and reflections.
    pub attacker: bool,
    /// Side 1 never answers (not running).
    pub silent: [bool; 2],
}

/// A datagram in flight.
struct Datagram {
    at: Instant,
    order: u64,
    to: usize,
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// What happened in one run.
pub struct Outcome {
    /// Each side's events with their virtual time since the start.
    pub events: [Vec<(Duration, Event)>; 2],
    /// The two cores (0 inviter, 1 acceptor) as they ended.
    pub cores: [Handshake; 2],
    /// Each side's public endpoint at the end.
    pub public: [SocketAddr; 2],
}

/// The secrets both simulated sides share.
pub fn secrets() -> Secrets {
    Secrets {
        inviter: [7; 32],
        acceptor: [9; 32],
    }
}

/// The simulated session id.
pub const SID: [u8; 16] = [0x5a; 16];

/// Parse a socket address literal.
pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Side 0 is the inviter (candidates: side 1's public endpoint and a stale local one),
/// side 1 the acceptor (candidates: side 0's public endpoint).
pub fn run(seed: u64, net: NetConfig, config: Config) -> Outcome {
    let mut rng = Rng::new(seed);
    let t0 = Instant::now();
    let mut public = [addr("198.51.100.10:40000"), addr("203.0.113.20:50000")];
    let mut cores = [
        Handshake::new(
            Role::Inviter,
            &secrets(),
            SID,
            vec![public[1], addr("10.0.0.2:5000")],
            t0,
            config.clone(),
        ),
        Handshake::new(
            Role::Acceptor,
            &secrets(),
            SID,
            vec![public[0]],
            t0,
            config.clone(),
        ),
    ];
    let mut queue: Vec<Datagram> = Vec::new();
    let mut order = 0u64;
    let mut events: [Vec<(Duration, Event)>; 2] = [Vec::new(), Vec::new()];
    let mut captured: Vec<Vec<u8>> = Vec::new();
    let attacker = addr("192.0.2.66:6666");
    let mut _other_keys = Keys::derive(
        &Secrets {
            inviter: [1; 32],
            acceptor: [2; 32],
        },
        &SID,
    );
    let mut now = t0;
    let mut remapped = false;
    for _step in 0..100_000 {
        if let Some((side, at)) = net.remap {
            if now >= t0 + at && !remapped {
                remapped = true;
                public[side].set_port(public[side].port() + 10000);
            }
        }
        // Deliver everything due now.
        queue.sort_by_key(|d| (d.at, d.order));
        while queue.first().is_some_and(|d| d.at <= now) {
            let d = queue.remove(0);
            if d.from != attacker {
                captured.push(d.bytes.clone()); // the attacker sees the wire
            }
            if !net.silent[d.to] || d.from == attacker {
                Core::handle_input(&mut cores[d.to], now, 0, d.from, &d.bytes);
            }
        }
        for s in 0..2 {
            Core::handle_timeout(&mut cores[s], now);
            if net.silent[s] {
                while Core::poll_transmit(&mut cores[s], now).is_some() {}
                continue;
            }
            while let Some(Transmit {
                dest,
                payload: bytes,
                ..
            }) = Core::poll_transmit(&mut cores[s], now)
            {
                let other = 1 - s;
                if dest != public[other] {
                    continue; // stale candidate or old mapping: nobody there
                }
                let copies = if net.dup > 0.0 && rng.chance(net.dup) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    if rng.chance(net.loss) {
                        continue;
                    }
                    order += 1;
                    queue.push(Datagram {
                        at: now + Duration::from_millis(10 + rng.below(net.jitter_ms + 1)),
                        order,
                        to: other,
                        from: public[s],
                        bytes: bytes.clone(),
                    });
                }
            }
            while let Some(ev) = Core::poll_event(&mut cores[s]) {
                events[s].push((now - t0, ev));
            }
        }
        // Attacker traffic, a few datagrams per virtual 50 ms.
        if net.attacker && rng.chance(0.2) {
            let to = rng.below(2) as usize;
            let bytes = match rng.below(5) {
                0 => (0..wire::PACKET_LEN)
                    .map(|_| rng.next_u64() as u8)
                    .collect(),
                1 => {
                    // Right keys, wrong session id: MAC is fine, session is not.
                    let k = Keys::derive(&secrets(), &[1; 16]);
                    wire::encode(
                        &k,
                        &Packet {
                            sender: Role::Inviter,
                            flags: 1,
                            session_id: [1; 16],
                            seq: 1,
                        },
                    )
                }
                2 => {
                    _other_keys = Keys::derive(
                        &Secrets {
                            inviter: [rng.next_u64() as u8; 32],
                            acceptor: [3; 32],
                        },
                        &SID,
                    );
                    wire::encode(
                        &_other_keys,
                        &Packet {
                            sender: Role::peer(if to == 0 {
                                Role::Inviter
                            } else {
                                Role::Acceptor
                            }),
                            flags: 3,
                            session_id: SID,
                            seq: rng.next_u64(),
                        },
                    )
                }
                _ => match captured.get(rng.below(captured.len() as u64 + 1) as usize) {
                    Some(b) => b.clone(),
                    None => b"junk".to_vec(),
                },
            };
            order += 1;
            queue.push(Datagram {
                at: now,
                order,
                to,
                from: attacker,
                bytes,
            });
        }
        for s in 0..2 {
            while let Some(ev) = Core::poll_event(&mut cores[s]) {
                events[s].push((now - t0, ev));
            }
        }
        // Next instant: earliest of timers and arrivals (and attacker ticks).
        let mut next: Option<Instant> = queue.iter().map(|d| d.at).min();
        for c in &cores {
            if let Some(t) = Core::poll_timeout(c) {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        if net.attacker && !(cores[0].is_finished() && cores[1].is_finished()) {
            let tick = now + Duration::from_millis(50);
            next = Some(next.map_or(tick, |n| n.min(tick)));
        }
        match next {
            Some(t) => now = t.max(now),
            None => break,
        }
        if queue.is_empty() && cores.iter().all(|c| c.is_finished()) {
            break;
        }
    }
    Outcome {
        events,
        cores,
        public,
    }
}
