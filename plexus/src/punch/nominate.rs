//! Choosing one path among several tried at once (one per address family).
//!
//! Both sides must end on the same path, and a handshake completes on each side at its
//! own time, so "each side keeps the first that completes" can disagree. Instead the
//! inviter nominates: on every path its handshake is [`Handshake::hold`] (it never says
//! "seen"), so the acceptor cannot connect on any of them; once a path is proven both
//! ways ([`Handshake::path_proven`]) the inviter picks one by the rule below and
//! releases only that one. The acceptor then connects on the one path that can, and
//! ends the others.
//!
//! The rule ([`Nomination::decide`]): paths are listed by preference (IPv6 first: no NAT
//! state to keep alive, no port translation). The most preferred proven path is chosen at
//! once when every more preferred path has failed; otherwise it is chosen when the
//! grace window since the first proof has passed. So IPv6 wins whenever it proves within
//! the window after IPv4, and IPv4 costs at most the window when IPv6 does not work.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::handshake::{Event, Handshake};
use super::HandshakeCore;
use crate::sansio::{Core, Transmit};

/// The shared decision of the inviter's paths (one core per path, each in its own thread).
#[derive(Debug)]
pub struct Nomination {
    grace: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone)]
struct State {
    proven: Vec<Option<Instant>>,
    failed: Vec<bool>,
    chosen: Option<usize>,
}

impl Nomination {
    /// A decision among `paths` paths (index 0 most preferred) with `grace`.
    pub fn new(paths: usize, grace: Duration) -> Nomination {
        Nomination {
            grace,
            state: Mutex::new(State {
                proven: vec![None; paths],
                failed: vec![false; paths],
                chosen: None,
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A poisoned lock only means another path's thread panicked; the state is plain data.
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Path `i` works both ways (first proof at `now`).
    pub fn proven(&self, i: usize, now: Instant) {
        self.with(|s| {
            if let Some(p) = s.proven.get_mut(i) {
                p.get_or_insert(now);
            }
        });
    }

    /// Path `i` gave up.
    pub fn failed(&self, i: usize) {
        self.with(|s| {
            if let Some(f) = s.failed.get_mut(i) {
                *f = true;
            }
        });
    }

    /// The chosen path, deciding it now if the rule allows (see the module docs).
    pub fn decide(&self, now: Instant) -> Option<usize> {
        let grace = self.grace;
        self.with(|s| {
            if s.chosen.is_none() {
                let best = s.proven.iter().position(Option::is_some)?;
                let first = s.proven.iter().flatten().min().copied()?;
                let better_failed = s.failed[..best].iter().all(|&f| f);
                if better_failed || now >= first + grace {
                    s.chosen = Some(best);
                }
            }
            s.chosen
        })
    }

    /// The chosen path, if decided.
    pub fn chosen(&self) -> Option<usize> {
        self.with(|s| s.chosen)
    }
}

/// One of the inviter's paths: `inner` (its handshake held) released when the
/// [`Nomination`] picks this path, abandoned when it picks another.
#[derive(Debug)]
pub struct Nominated<'n, C> {
    inner: C,
    nomination: &'n Nomination,
    index: usize,
    lost: bool,
    next_check: Option<Instant>,
}

impl<'n, C: HandshakeCore> Nominated<'n, C> {
    /// How often an undecided path looks at the others.
    pub const TICK: Duration = Duration::from_millis(5);

    /// Path `index` of `nomination`, its handshake held until chosen.
    pub fn new(mut inner: C, nomination: &'n Nomination, index: usize) -> Nominated<'n, C> {
        inner.handshake_mut().hold();
        Nominated {
            inner,
            nomination,
            index,
            lost: false,
            next_check: None,
        }
    }

    /// Whether another path was chosen.
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// The core inside.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    fn update(&mut self, now: Instant) {
        if self.lost || !self.inner.handshake().is_held() {
            return;
        }
        let hs = self.inner.handshake();
        if hs.is_finished() && !hs.is_connected() {
            self.nomination.failed(self.index);
            return;
        }
        if hs.path_proven() {
            self.nomination.proven(self.index, now);
        }
        match self.nomination.decide(now) {
            Some(i) if i == self.index => {
                if let Some(peer) = self.inner.handshake().peer() {
                    log::info!("path to {peer} chosen");
                }
                self.inner.handshake_mut().release();
            }
            Some(_) => self.lost = true,
            None => self.next_check = Some(now + Self::TICK),
        }
    }
}

impl<C: HandshakeCore> Core for Nominated<'_, C> {
    type Event = Event;

    fn handle_input(&mut self, now: Instant, socket: usize, from: SocketAddr, bytes: &[u8]) {
        if !self.lost {
            self.inner.handle_input(now, socket, from, bytes);
            self.update(now);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if !self.lost {
            self.inner.handle_timeout(now);
            self.update(now);
        }
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.lost {
            return None;
        }
        self.inner.poll_transmit(now)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.lost {
            return None;
        }
        let t = self.inner.poll_timeout()?;
        if !self.inner.handshake().is_held() {
            return Some(t);
        }
        Some(self.next_check.map_or(t, |c| c.min(t)))
    }

    fn poll_event(&mut self) -> Option<Event> {
        if self.lost {
            return None;
        }
        self.inner.poll_event()
    }
}

impl<C: HandshakeCore> HandshakeCore for Nominated<'_, C> {
    fn handshake(&self) -> &Handshake {
        self.inner.handshake()
    }
    fn handshake_mut(&mut self) -> &mut Handshake {
        self.inner.handshake_mut()
    }
    fn corridor_socket(&self) -> usize {
        self.inner.corridor_socket()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::punch::{Config, Role, Secrets};
    use std::collections::VecDeque;

    /// Path `i`'s inviter and acceptor endpoints.
    fn ends(i: usize) -> (SocketAddr, SocketAddr) {
        match i {
            0 => (
                "[2001:db8:1::2]:4000".parse().unwrap(),
                "[2001:db8:2::2]:5000".parse().unwrap(),
            ),
            _ => (
                "198.51.100.2:4000".parse().unwrap(),
                "198.51.100.6:5000".parse().unwrap(),
            ),
        }
    }

    /// One network path: one-way delay, or dropping everything.
    #[derive(Clone, Copy)]
    enum Link {
        Delay(Duration),
        Dead,
    }

    /// Runs both sides over two paths (0 = IPv6, 1 = IPv4) with `links`; returns the
    /// path each side connected on (inviter, acceptor) and when the inviter did.
    fn run(links: [Link; 2], grace: Duration) -> (Option<usize>, Option<usize>, Duration) {
        let t0 = Instant::now();
        let secrets = Secrets {
            inviter: [1; 32],
            acceptor: [2; 32],
        };
        let nomination = Nomination::new(2, grace);
        let mut inviters: Vec<Nominated<'_, Handshake>> = Vec::new();
        let mut acceptors: Vec<Handshake> = Vec::new();
        for i in 0..2 {
            let (ia, aa) = ends(i);
            let inv = Handshake::new(
                Role::Inviter,
                &secrets,
                [7; 16],
                vec![aa],
                t0,
                Config::default(),
            );
            inviters.push(Nominated::new(inv, &nomination, i));
            acceptors.push(Handshake::new(
                Role::Acceptor,
                &secrets,
                [7; 16],
                vec![ia],
                t0,
                Config::default(),
            ));
        }
        // (due, path, to the acceptor?, bytes)
        let mut wire: VecDeque<(Instant, usize, bool, Vec<u8>)> = VecDeque::new();
        let (mut inv_won, mut acc_won, mut inv_at) = (None, None, Duration::ZERO);
        let mut now = t0;
        while now < t0 + Duration::from_secs(12) {
            let due: Vec<_> = wire.iter().filter(|w| w.0 <= now).cloned().collect();
            wire.retain(|w| w.0 > now);
            for (_, i, to_acc, bytes) in due {
                let (ia, aa) = ends(i);
                if to_acc {
                    if acc_won.is_none() {
                        acceptors[i].handle_datagram(ia, &bytes, now);
                    }
                } else {
                    inviters[i].handle_input(now, 0, aa, &bytes);
                }
            }
            for i in 0..2 {
                inviters[i].handle_timeout(now);
                while let Some(t) = inviters[i].poll_transmit(now) {
                    if let Link::Delay(d) = links[i] {
                        wire.push_back((now + d, i, true, t.payload));
                    }
                }
                while let Some(e) = inviters[i].poll_event() {
                    if let Event::Connected { .. } = e {
                        assert!(inv_won.is_none(), "the inviter connected twice");
                        inv_won = Some(i);
                        inv_at = now - t0;
                    }
                }
                // The acceptor's race: the first path to connect ends the others.
                if acc_won.is_some_and(|w| w != i) {
                    continue;
                }
                acceptors[i].handle_timeout(now);
                while let Some((_, bytes)) = acceptors[i].poll_transmit(now) {
                    if let Link::Delay(d) = links[i] {
                        wire.push_back((now + d, i, false, bytes));
                    }
                }
                while let Some(e) = acceptors[i].poll_event() {
                    if let Event::Connected { .. } = e {
                        acc_won.get_or_insert(i);
                    }
                }
            }
            if inv_won.is_some() && acc_won.is_some() {
                break;
            }
            now += Duration::from_millis(1);
        }
        (inv_won, acc_won, inv_at)
    }

    const GRACE: Duration = Duration::from_millis(100);

    #[test]
    fn both_sides_end_on_the_same_path_and_ipv6_is_preferred() {
        let ms = Duration::from_millis;
        // Both work, IPv4 faster: IPv6 still wins, within the grace.
        let (i, a, at) = run([Link::Delay(ms(30)), Link::Delay(ms(5))], GRACE);
        assert_eq!((i, a), (Some(0), Some(0)));
        assert!(at < ms(100), "{at:?}");
        // Both work, IPv6 faster: at once.
        let (i, a, _) = run([Link::Delay(ms(5)), Link::Delay(ms(30))], GRACE);
        assert_eq!((i, a), (Some(0), Some(0)));
        // IPv6 too slow for the grace: IPv4, when the grace ends.
        let (i, a, at) = run([Link::Delay(ms(200)), Link::Delay(ms(5))], GRACE);
        assert_eq!((i, a), (Some(1), Some(1)));
        assert!(at >= ms(100) && at < ms(150), "{at:?}");
        // IPv6 dead: IPv4 after the grace.
        let (i, a, _) = run([Link::Dead, Link::Delay(ms(5))], GRACE);
        assert_eq!((i, a), (Some(1), Some(1)));
        // IPv4 dead: IPv6.
        let (i, a, _) = run([Link::Delay(ms(5)), Link::Dead], GRACE);
        assert_eq!((i, a), (Some(0), Some(0)));
        // Both dead: nobody connects.
        let (i, a, _) = run([Link::Dead, Link::Dead], GRACE);
        assert_eq!((i, a), (None, None));
    }

    #[test]
    fn a_failed_better_path_lets_the_next_win_at_once() {
        let n = Nomination::new(2, GRACE);
        let t = Instant::now();
        n.proven(1, t);
        assert_eq!(n.decide(t), None, "IPv4 waits for IPv6");
        n.failed(0);
        assert_eq!(n.decide(t), Some(1));
        // Decided once: a later proof of IPv6 changes nothing.
        n.proven(0, t);
        assert_eq!(n.decide(t + GRACE), Some(1));
        assert_eq!(n.chosen(), Some(1));
    }
}
