//! All socket code in one place: the driver that runs any [`Core`] over real UDP
//! sockets, and the socket helpers the cores' callers need (TTL or hop limit per
//! datagram, the `IP_RECVERR`/`IPV6_RECVERR` error queue, the host's interface
//! addresses and the route's source address). IPv4 and IPv6 sockets alike.
//!
//! The cores never touch a socket and never read the clock; [`drive`] is the only loop.
//! One turn of it, repeated until the core is finished, the deadline passes or the
//! caller stops it:
//!
//! 1. `now = Instant::now()`; [`Core::handle_timeout`]`(now)` runs the timers due.
//! 2. Every [`Core::poll_event`] goes to the caller's `on_event`, which may stop the
//!    loop (a STUN answer, a connected handshake nobody wants to linger on).
//! 3. Every [`Core::poll_transmit`] is sent from the socket it names, with its own TTL
//!    when it carries one ([`send_with_ttl`]). A failed send is logged, not fatal: the
//!    core retransmits, and an unreachable STUN alternate is just a probe without an
//!    answer ([`Driver::fatal_send_errors`] makes it fatal where a fast error helps).
//! 4. Events raised by those sends (the handshake connects when it sends its flag-1
//!    packet) go to `on_event` as in step 2.
//! 5. [`Core::poll_timeout`] `None` means the core is finished: return. A deadline
//!    that has passed returns too.
//! 6. Wait with `poll(2)` on every socket until `min(poll_timeout, deadline) - now`
//!    (at least 1 ms: zero would not wait at all).
//! 7. Read every socket that is ready without blocking: its ICMP error queue into
//!    [`Core::handle_icmp`], its datagrams into [`Core::handle_input`], each with a
//!    fresh `now`. Then the next turn.
//!
//! Running a STUN binding transaction by hand (what [`crate::stun::binding`] does):
//!
//! ```no_run
//! use std::net::UdpSocket;
//! use std::ops::ControlFlow;
//! use std::time::{Duration, Instant};
//! use plexus::net::Driver;
//! use plexus::stun::{new_transaction_id, Expect, Timing, Transaction};
//!
//! let socket = UdpSocket::bind("0.0.0.0:0")?;
//! let server = "203.0.113.3:3478".parse()?;
//! let timing = Timing::for_deadline(Duration::from_secs(2));
//! let mut tx = Transaction::new(
//!     new_transaction_id(), server, vec![], Expect::SameEndpoint, timing, Instant::now(),
//! );
//! let mut outcome = None;
//! Driver::new(&[&socket]).run(&mut tx, |_, result, _| {
//!     outcome = Some(result);
//!     ControlFlow::Break(())
//! })?;
//! println!("{outcome:?}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Why `poll(2)` and not `set_read_timeout(deadline - now)` and a blocking `recv_from`,
//! as str0m shows for one socket: discovery waits on four sockets at once (the old code
//! needed a thread per socket for that), and the hop probe must wake for ICMP errors
//! that sit in the error queue with no datagram to read. The sockets' own settings
//! (blocking mode, read timeout) are left untouched.

mod errqueue;
mod iface;

use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

pub use errqueue::{parse_errqueue_control, parse_extended_err, ExtendedErr, IcmpVersion};
pub use iface::{local_addresses, route_ip};

use crate::sansio::Core;

/// Largest datagram read whole; longer ones are truncated, and every core rejects a
/// truncated datagram by its length or its MAC.
const RECV_BUF: usize = 1500;

/// Datagrams read from one socket per turn at most, so a flood cannot starve the timers.
const READS_PER_TURN: usize = 64;

/// Send `bytes` to `dest` with IP TTL (IPv4) or hop limit (IPv6) `ttl`, then put the
/// socket's value back. Which option depends on the destination, not the socket: an
/// IPv6 socket sending to an IPv4 or IPv4-mapped address sends IPv4, which takes
/// `IP_TTL`; a real IPv6 destination takes `IPV6_UNICAST_HOPS`.
pub fn send_with_ttl(
    socket: &UdpSocket,
    dest: SocketAddr,
    bytes: &[u8],
    ttl: u8,
) -> io::Result<usize> {
    let ipv4_packet = match dest {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(d) => d.ip().to_ipv4_mapped().is_some(),
    };
    if ipv4_packet {
        let saved = socket.ttl()?;
        socket.set_ttl(u32::from(ttl))?;
        let sent = socket.send_to(bytes, dest);
        let restored = socket.set_ttl(saved);
        let n = sent?;
        restored?;
        Ok(n)
    } else {
        let sock = socket2::SockRef::from(socket);
        let saved = sock.unicast_hops_v6()?;
        sock.set_unicast_hops_v6(u32::from(ttl))?;
        let sent = socket.send_to(bytes, dest);
        let restored = sock.set_unicast_hops_v6(saved);
        let n = sent?;
        restored?;
        Ok(n)
    }
}

/// A socket operation of the driver failed.
#[derive(Debug)]
pub struct DriveError {
    /// What the driver was doing.
    pub what: &'static str,
    /// The OS error.
    pub source: io::Error,
}

impl fmt::Display for DriveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for DriveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<DriveError> for io::Error {
    fn from(e: DriveError) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

fn failed(what: &'static str) -> impl FnOnce(io::Error) -> DriveError {
    move |source| DriveError { what, source }
}

/// Why [`Driver::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The core is finished ([`Core::poll_timeout`] returned `None`).
    Finished,
    /// The driver's deadline passed first.
    Deadline,
    /// `on_event` broke the loop.
    Stopped,
}

/// Runs a core over one or several sockets; see the module docs for the loop.
#[derive(Debug)]
pub struct Driver<'s> {
    sockets: Vec<&'s UdpSocket>,
    deadline: Option<Instant>,
    fatal_send_errors: bool,
}

/// [`Driver::run`] over `sockets` without a deadline of its own.
pub fn drive<C: Core>(
    sockets: &[&UdpSocket],
    core: &mut C,
    on_event: impl FnMut(&mut C, C::Event, Instant) -> ControlFlow<()>,
) -> Result<Stop, DriveError> {
    Driver::new(sockets).run(core, on_event)
}

impl<'s> Driver<'s> {
    /// A driver over `sockets`: [`crate::sansio::Transmit::socket`] indexes this list,
    /// and input from `sockets[i]` reaches the core as socket `i`.
    pub fn new(sockets: &[&'s UdpSocket]) -> Driver<'s> {
        Driver {
            sockets: sockets.to_vec(),
            deadline: None,
            fatal_send_errors: false,
        }
    }

    /// Stop at `deadline` even if the core still has timers.
    pub fn deadline(mut self, deadline: Instant) -> Driver<'s> {
        self.deadline = Some(deadline);
        self
    }

    /// Return the first failed send as an error instead of logging it (a STUN binding
    /// with no route gets a clear error at once instead of a timeout).
    pub fn fatal_send_errors(mut self) -> Driver<'s> {
        self.fatal_send_errors = true;
        self
    }

    /// Drive `core` until it is finished, the deadline passes, or `on_event` breaks.
    /// `on_event` gets the core, the event and the `now` of the turn.
    pub fn run<C: Core>(
        &self,
        core: &mut C,
        mut on_event: impl FnMut(&mut C, C::Event, Instant) -> ControlFlow<()>,
    ) -> Result<Stop, DriveError> {
        // Held for the whole run: the error queue is on exactly while the core wants it.
        let _recverr = if C::WANTS_ICMP {
            let mut guards = Vec::with_capacity(self.sockets.len());
            for s in &self.sockets {
                guards
                    .push(errqueue::RecvErr::on(s).map_err(failed("turning the error queue on"))?);
            }
            guards
        } else {
            Vec::new()
        };
        let mut buf = [MaybeUninit::<u8>::uninit(); RECV_BUF];
        loop {
            // 1.
            let now = Instant::now();
            core.handle_timeout(now);
            // 2.
            if drain_events(core, &mut on_event, now).is_break() {
                return Ok(Stop::Stopped);
            }
            // 3.
            while let Some(t) = core.poll_transmit(now) {
                self.send(&t)?;
            }
            // 4.
            if drain_events(core, &mut on_event, now).is_break() {
                return Ok(Stop::Stopped);
            }
            // 5.
            let Some(wake) = core.poll_timeout() else {
                return Ok(Stop::Finished);
            };
            if self.deadline.is_some_and(|d| now >= d) {
                return Ok(Stop::Deadline);
            }
            let wake = self.deadline.map_or(wake, |d| wake.min(d));
            // 6.
            let ready = self.wait(wake.saturating_duration_since(now))?;
            // 7.
            for (i, revents) in ready.into_iter().enumerate() {
                if revents & libc::POLLERR != 0 {
                    self.read_errqueue(i, core)?;
                }
                if revents & (libc::POLLIN | libc::POLLERR) != 0 {
                    self.read_datagrams(i, core, &mut buf)?;
                }
            }
        }
    }

    fn send(&self, t: &crate::sansio::Transmit) -> Result<(), DriveError> {
        let Some(socket) = self.sockets.get(t.socket) else {
            // A core bug, not a network condition: say so instead of panicking.
            return Err(DriveError {
                what: "sending from a socket the driver does not have",
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("socket {} of {}", t.socket, self.sockets.len()),
                ),
            });
        };
        let sent = match t.ttl {
            Some(ttl) => send_with_ttl(socket, t.dest, &t.payload, ttl),
            None => socket.send_to(&t.payload, t.dest),
        };
        match sent {
            Ok(_) => Ok(()),
            Err(e) if self.fatal_send_errors => Err(DriveError {
                what: "sending",
                source: e,
            }),
            Err(e) => {
                log::debug!("socket {}: send to {} failed: {e}", t.socket, t.dest);
                Ok(())
            }
        }
    }

    /// `poll(2)` on every socket; the `revents` of each.
    fn wait(&self, timeout: Duration) -> Result<Vec<libc::c_short>, DriveError> {
        let mut fds: Vec<libc::pollfd> = self
            .sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // Zero would return at once; round up so a sub-millisecond wait still waits.
        let ms = timeout
            .as_micros()
            .div_ceil(1000)
            .clamp(1, libc::c_int::MAX as u128) as libc::c_int;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(failed("waiting for datagrams")(e));
            }
            return Ok(vec![0; fds.len()]);
        }
        Ok(fds.iter().map(|p| p.revents).collect())
    }

    fn read_errqueue<C: Core>(&self, i: usize, core: &mut C) -> Result<(), DriveError> {
        for _ in 0..READS_PER_TURN {
            match errqueue::recv(self.sockets[i]).map_err(failed("reading the error queue"))? {
                Some(report) => core.handle_icmp(Instant::now(), i, &report),
                None => break,
            }
        }
        Ok(())
    }

    fn read_datagrams<C: Core>(
        &self,
        i: usize,
        core: &mut C,
        buf: &mut [MaybeUninit<u8>],
    ) -> Result<(), DriveError> {
        let sock = socket2::SockRef::from(self.sockets[i]);
        for _ in 0..READS_PER_TURN {
            match sock.recv_from_with_flags(buf, libc::MSG_DONTWAIT) {
                Ok((n, from)) => {
                    // SAFETY: recvfrom initialised the first `n` bytes of `buf`.
                    let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
                    match from.as_socket() {
                        Some(from) => core.handle_input(Instant::now(), i, from, bytes),
                        None => log::debug!("socket {i}: datagram from a non-IP address ignored"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ICMP errors for earlier sends surface here: they are news about the
                // path (the hop probe reads them from the error queue), not a broken
                // socket.
                Err(e) if icmp_errno(&e) => log::debug!("socket {i}: {e}"),
                Err(e) => return Err(failed("receiving")(e)),
            }
        }
        Ok(())
    }
}

fn drain_events<C: Core>(
    core: &mut C,
    on_event: &mut impl FnMut(&mut C, C::Event, Instant) -> ControlFlow<()>,
    now: Instant,
) -> ControlFlow<()> {
    while let Some(ev) = core.poll_event() {
        on_event(core, ev, now)?;
    }
    ControlFlow::Continue(())
}

/// The errors a UDP receive reports for an ICMP message about an earlier send.
fn icmp_errno(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::EPROTO
                | libc::EMSGSIZE
        )
    )
}

#[cfg(test)]
mod tests;
