//! The TURN relay (RFC 8656 over UDP): the path of last resort when no direct path can
//! work (symmetric × symmetric) or a planned direct one failed.
//!
//! One side allocates a relayed address on a TURN server (coturn in the lab) and puts
//! it in the accept; the other side sends plain UDP to it. Pieces, smallest first:
//!
//! - [`proto`]: TURN attributes and ChannelData on top of [`crate::stun::codec`].
//! - [`client::TurnClient`]: the sans-IO client core (authentication, refreshes,
//!   permissions, channels).
//! - [`allocate`] → [`Allocation`]: a blocking allocation on its own UDP socket.
//! - [`Relayed`]: runs any [`Core`] (the punch handshake) *through* the allocation: the
//!   inner core sees the peer's datagrams as coming from the peer and sends to the peer.
//! - [`forward`] → [`Forwarder`]: after the handshake, a thread between the executor's
//!   local socket and the allocation, until the executor exits.
//!
//! Credentials: long-term (user + password) or TURN REST (user + shared secret; the
//! username sent is `EXPIRY:USER` and the password base64(HMAC-SHA1(secret, username))).

pub mod client;
pub mod proto;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use client::{Input, TurnClient, TurnEvent, TurnStats};

use crate::net::{Driver, Stop};
use crate::sansio::{Core, Transmit};
use crate::secret::Password;

/// Default TURN port (RFC 8656).
pub const DEFAULT_PORT: u16 = 3478;
/// Default validity of TURN REST credentials: long enough for a long session, since the
/// server checks the expiry on every refresh too.
pub const DEFAULT_REST_TTL: Duration = Duration::from_secs(24 * 3600);
/// Datagrams from the executor this long or longer are dropped: the socket driver reads
/// 1,500 bytes at most, so they may have been cut short.
pub const MAX_FORWARDED: usize = 1500;
/// How long a stopping forwarder waits for the server to confirm the deletion.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Receive buffer asked for the forwarder's sockets.
const FORWARD_BUFFER: usize = 4 << 20;
/// How often the forwarder looks at its stop flag.
const TICK: Duration = Duration::from_millis(100);

/// When plexus uses the relay (the same vocabulary the rendezvous messages carry).
pub use crate::rendezvous::RelayPolicy;

/// How to authenticate to the TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnCredentials {
    /// Long-term credentials (RFC 8489 §9.2).
    LongTerm {
        /// User name.
        user: String,
        /// Password.
        password: Password,
    },
    /// TURN REST API time-limited credentials computed from a secret shared with the
    /// server (coturn's `static-auth-secret`).
    Rest {
        /// User part of the name (the name sent is `EXPIRY:USER`).
        user: String,
        /// The shared secret.
        secret: Password,
        /// Validity of the computed credentials.
        ttl: Duration,
    },
}

impl TurnCredentials {
    /// The user name and password to send, at wall-clock time `now`.
    pub fn username_password(&self, now: SystemTime) -> Result<(String, Password), RelayError> {
        match self {
            TurnCredentials::LongTerm { user, password } => Ok((user.clone(), password.clone())),
            TurnCredentials::Rest { user, secret, ttl } => {
                let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
                let expiry = since.saturating_add(*ttl).as_secs();
                let name = format!("{expiry}:{user}");
                let mac = rest_password(secret.expose().as_bytes(), name.as_bytes()).ok_or_else(
                    || {
                        RelayError::Config(
                            "the crypto library failed to compute the TURN REST password".into(),
                        )
                    },
                )?;
                Ok((name, Password::new(mac)))
            }
        }
    }
}

/// base64(HMAC-SHA1(secret, username)), the TURN REST API password.
pub fn rest_password(secret: &[u8], username: &[u8]) -> Option<String> {
    use openssl::{hash::MessageDigest, pkey::PKey, sign::Signer};
    let key = PKey::hmac(secret).ok()?;
    let mut s = Signer::new(MessageDigest::sha1(), &key).ok()?;
    s.update(username).ok()?;
    Some(crate::base64::encode(&s.sign_to_vec().ok()?))
}

/// A TURN server and how to log in to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnSettings {
    /// The server's UDP address.
    pub server: SocketAddr,
    /// Credentials.
    pub credentials: TurnCredentials,
}

/// The relay part of the session settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelaySettings {
    /// When to relay.
    pub policy: RelayPolicy,
    /// The TURN server; required unless the policy is `never`.
    pub turn: Option<TurnSettings>,
}

/// What went wrong with the relay.
#[derive(Debug)]
#[non_exhaustive]
pub enum RelayError {
    /// The settings are unusable.
    Config(String),
    /// A socket operation failed.
    Io {
        /// What plexus was doing.
        what: &'static str,
        /// The system's reason.
        source: io::Error,
    },
    /// The server did not answer a request.
    Timeout {
        /// The server.
        server: SocketAddr,
        /// The request.
        request: &'static str,
    },
    /// The server refused the credentials (401).
    Auth {
        /// The server.
        server: SocketAddr,
        /// Its error code and reason.
        reason: String,
    },
    /// The server refused a request (quota, forbidden peer, mismatch...).
    Refused {
        /// The server.
        server: SocketAddr,
        /// The request.
        request: &'static str,
        /// ERROR-CODE (0 when missing).
        code: u16,
        /// Reason phrase.
        reason: String,
    },
    /// The server's answer makes no sense.
    Protocol {
        /// The server.
        server: SocketAddr,
        /// What was wrong.
        what: String,
    },
    /// The allocation expired (refreshes went unanswered).
    Expired {
        /// The server.
        server: SocketAddr,
    },
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayError::Config(m) => f.write_str(m),
            RelayError::Io { what, source } => write!(f, "TURN relay: {what}: {source}"),
            RelayError::Timeout { server, request } => write!(
                f,
                "TURN server {server} did not answer {request}: check --turn HOST[:PORT] and \
                 that UDP to it is not blocked"
            ),
            RelayError::Auth { server, reason } => write!(
                f,
                "TURN server {server} refused the credentials ({reason}): check --turn-user and \
                 the password (--turn-password-file/--turn-password-env) or the REST secret \
                 (--turn-secret-file)"
            ),
            RelayError::Refused {
                server,
                request,
                code,
                reason,
            } => write!(f, "TURN server {server} refused {request}: {code} {reason}"),
            RelayError::Protocol { server, what } => {
                write!(f, "TURN server {server} answered nonsense: {what}")
            }
            RelayError::Expired { server } => write!(
                f,
                "the TURN allocation on {server} expired: refreshes went unanswered"
            ),
        }
    }
}

impl std::error::Error for RelayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RelayError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> RelayError {
    move |source| RelayError::Io { what, source }
}

/// A [`TurnClient`] alone as a [`Core`] over one socket (allocation, permissions, close).
struct Alone<'a>(&'a mut TurnClient);

impl Core for Alone<'_> {
    type Event = TurnEvent;
    fn handle_input(&mut self, now: Instant, _socket: usize, from: SocketAddr, bytes: &[u8]) {
        // Nothing relayed is expected before the handshake starts: drop it.
        let _ = self.0.receive(now, from, bytes);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.0.handle_timeout(now);
    }
    fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        let server = self.0.server();
        self.0.poll_transmit().map(|p| Transmit::to(server, p))
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn poll_event(&mut self) -> Option<TurnEvent> {
        self.0.poll_event()
    }
}

/// Allocate on a fresh UDP socket bound to `bind` (blocking, at most `timeout`).
pub fn allocate(
    settings: &TurnSettings,
    bind: SocketAddr,
    timeout: Duration,
) -> Result<Allocation, RelayError> {
    let socket = UdpSocket::bind(bind).map_err(io_err("binding the TURN socket"))?;
    Allocation::on_socket(socket, settings, timeout)
}

/// A TURN allocation and the socket it lives on.
#[derive(Debug)]
pub struct Allocation {
    socket: UdpSocket,
    client: TurnClient,
}

impl Allocation {
    /// Allocate on `socket` (blocking, at most `timeout`).
    pub fn on_socket(
        socket: UdpSocket,
        settings: &TurnSettings,
        timeout: Duration,
    ) -> Result<Allocation, RelayError> {
        let (user, password) = settings.credentials.username_password(SystemTime::now())?;
        let client = TurnClient::new(settings.server, user, password, None, Instant::now());
        let mut a = Allocation { socket, client };
        a.run_until(timeout, "Allocate", |ev| match ev {
            TurnEvent::Allocated { .. } => Some(Ok(())),
            TurnEvent::Failed(e) => Some(Err(e)),
            _ => None,
        })?;
        Ok(a)
    }

    /// Drives the client alone until `done` says so or `timeout` passes.
    fn run_until(
        &mut self,
        timeout: Duration,
        request: &'static str,
        mut done: impl FnMut(TurnEvent) -> Option<Result<(), RelayError>>,
    ) -> Result<(), RelayError> {
        let mut outcome = None;
        let server = self.client.server();
        let stop = Driver::new(&[&self.socket])
            .deadline(Instant::now() + timeout)
            .run(&mut Alone(&mut self.client), |_, ev, _| match done(ev) {
                Some(r) => {
                    outcome = Some(r);
                    ControlFlow::Break(())
                }
                None => ControlFlow::Continue(()),
            })
            .map_err(|e| RelayError::Io {
                what: "talking to the TURN server",
                source: e.into(),
            })?;
        match (outcome, stop) {
            (Some(r), _) => r,
            _ => Err(RelayError::Timeout { server, request }),
        }
    }

    /// XOR-RELAYED-ADDRESS: where the peer sends (goes into the accept).
    pub fn relayed(&self) -> SocketAddr {
        self.client.relayed().unwrap_or(self.client.server())
    }
    /// XOR-MAPPED-ADDRESS from the Allocate response.
    pub fn mapped(&self) -> SocketAddr {
        self.client.mapped().unwrap_or(self.client.server())
    }
    /// The TURN server.
    pub fn server(&self) -> SocketAddr {
        self.client.server()
    }
    /// The local socket the allocation lives on.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }
    /// The client core (for drivers of their own).
    pub fn client(&mut self) -> &mut TurnClient {
        &mut self.client
    }
    /// Counters.
    pub fn stats(&self) -> TurnStats {
        self.client.stats()
    }
    /// See [`TurnClient::set_refresh_interval`].
    pub fn set_refresh_interval(&mut self, every: Duration) {
        self.client.set_refresh_interval(every);
    }

    /// Let datagrams from `peer_ip` in (CreatePermission; blocking, at most `timeout`).
    /// Returns at once when it was asked for already.
    pub fn permit(&mut self, peer_ip: IpAddr, timeout: Duration) -> Result<(), RelayError> {
        if !self.client.permit(peer_ip, Instant::now()) {
            if self.client.is_permitted(peer_ip) {
                return Ok(()); // asked for already; refreshed with the allocation
            }
            return Err(RelayError::Config(format!(
                "cannot permit {peer_ip}: the TURN client's permission table is full"
            )));
        }
        self.run_until(timeout, "CreatePermission", |ev| match ev {
            TurnEvent::Permitted(ips) if ips.contains(&peer_ip) => Some(Ok(())),
            TurnEvent::RequestFailed(e) | TurnEvent::Failed(e) => Some(Err(e)),
            _ => None,
        })
    }

    /// Runs `inner` through the relay on this allocation's socket until it is finished,
    /// `deadline` passes or `on_event` breaks. See [`Relayed`].
    pub fn drive<C: Core>(
        &mut self,
        inner: &mut C,
        deadline: Instant,
        mut on_event: impl FnMut(&mut C, C::Event, Instant) -> ControlFlow<()>,
    ) -> Result<Stop, RelayError> {
        let mut relayed = Relayed::new(&mut self.client, inner);
        Driver::new(&[&self.socket])
            .deadline(deadline)
            .run(&mut relayed, |r, ev, now| match ev {
                RelayedEvent::Inner(e) => on_event(r.inner, e, now),
                RelayedEvent::Turn(TurnEvent::Failed(e)) => {
                    log::warn!("relay lost during the handshake: {e}");
                    ControlFlow::Break(())
                }
                RelayedEvent::Turn(_) => ControlFlow::Continue(()),
            })
            .map_err(|e| RelayError::Io {
                what: "driving the handshake through the relay",
                source: e.into(),
            })
    }

    /// Delete the allocation (blocking, at most `timeout`).
    pub fn close(mut self, timeout: Duration) -> Result<(), RelayError> {
        self.client.close(Instant::now());
        let server = self.server();
        self.run_until(timeout, "Refresh (delete)", |ev| match ev {
            TurnEvent::Closed { deleted: true } => Some(Ok(())),
            TurnEvent::Closed { deleted: false } => Some(Err(RelayError::Timeout {
                server,
                request: "Refresh (delete)",
            })),
            TurnEvent::Failed(e) => Some(Err(e)),
            _ => None,
        })
    }
}

/// What [`Relayed`] reports.
#[derive(Debug)]
pub enum RelayedEvent<E> {
    /// The inner core's event.
    Inner(E),
    /// The TURN client's.
    Turn(TurnEvent),
}

/// Runs an inner [`Core`] through a TURN allocation. One of the driver's sockets is the
/// allocation's (socket 0 with [`Relayed::new`], as [`Allocation::drive`] drives it):
/// datagrams from the server on it that carry a peer's datagram (Data indication,
/// ChannelData) reach the inner core as coming from the peer on that socket, and the
/// inner core's transmits from that socket are wrapped to the server (after a channel
/// bind to each new peer; per-datagram TTLs do not apply to a relayed path). Anything
/// else on the allocation's socket is dropped. The other sockets pass through
/// untouched, so a core can try a direct path and the relay at once.
#[derive(Debug)]
pub struct Relayed<'a, C> {
    client: &'a mut TurnClient,
    /// The inner core.
    pub inner: &'a mut C,
    socket: usize,
}

impl<'a, C: Core> Relayed<'a, C> {
    /// Wraps `inner` over `client` (allocated already) on socket 0.
    pub fn new(client: &'a mut TurnClient, inner: &'a mut C) -> Relayed<'a, C> {
        Relayed::on_socket(client, inner, 0)
    }

    /// Wraps `inner` over `client`, whose allocation lives on the driver's socket
    /// `socket`.
    pub fn on_socket(
        client: &'a mut TurnClient,
        inner: &'a mut C,
        socket: usize,
    ) -> Relayed<'a, C> {
        Relayed {
            client,
            inner,
            socket,
        }
    }
}

impl<C: Core> Core for Relayed<'_, C> {
    type Event = RelayedEvent<C::Event>;

    fn handle_input(&mut self, now: Instant, socket: usize, from: SocketAddr, bytes: &[u8]) {
        if socket != self.socket {
            return self.inner.handle_input(now, socket, from, bytes);
        }
        if let Input::Peer { peer, data } = self.client.receive(now, from, bytes) {
            self.inner.handle_input(now, socket, peer, &data);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        self.inner.handle_timeout(now);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let wrap = |p: Vec<u8>, server: SocketAddr, socket: usize| Transmit {
            socket,
            dest: server,
            payload: p,
            ttl: None,
        };
        let server = self.client.server();
        if let Some(p) = self.client.poll_transmit() {
            return Some(wrap(p, server, self.socket));
        }
        while let Some(t) = self.inner.poll_transmit(now) {
            if t.socket != self.socket {
                return Some(t);
            }
            self.client.send_to_peer(t.dest, &t.payload, now);
            if let Some(p) = self.client.poll_transmit() {
                return Some(wrap(p, server, self.socket));
            }
        }
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let inner = self.inner.poll_timeout()?;
        Some(self.client.poll_timeout().map_or(inner, |t| t.min(inner)))
    }

    fn poll_event(&mut self) -> Option<Self::Event> {
        if let Some(e) = self.client.poll_event() {
            return Some(RelayedEvent::Turn(e));
        }
        self.inner.poll_event().map(RelayedEvent::Inner)
    }
}

/// Counters of a [`Forwarder`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwarderStats {
    /// The TURN client's counters (refreshes, permissions, channel binds...).
    pub turn: TurnStats,
    /// Datagrams from the executor sent to the peer.
    pub to_peer: u64,
    /// Datagrams from the peer handed to the executor.
    pub from_peer: u64,
    /// Local datagrams dropped: not from the executor, or too long.
    pub dropped_local: u64,
    /// Relayed datagrams dropped: from another peer than the one of this corridor.
    pub dropped_peer: u64,
    /// The server confirmed the allocation's deletion (after a stop).
    pub deleted: bool,
}

/// The forwarder's core: socket 0 is the allocation's, socket 1 the local one.
struct ForwardCore {
    client: TurnClient,
    peer: SocketAddr,
    executor: SocketAddr,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<ForwarderStats>>,
    stats: ForwarderStats,
    out: VecDeque<Transmit>,
    last_now: Instant,
    close_by: Option<Instant>,
    error: Option<RelayError>,
}

impl ForwardCore {
    fn publish(&mut self) {
        self.stats.turn = self.client.stats();
        if let Ok(mut s) = self.shared.lock() {
            *s = self.stats;
        }
    }
}

impl Core for ForwardCore {
    type Event = TurnEvent;

    fn handle_input(&mut self, now: Instant, socket: usize, from: SocketAddr, bytes: &[u8]) {
        if socket == 0 {
            if let Input::Peer { peer, data } = self.client.receive(now, from, bytes) {
                if peer == self.peer {
                    self.stats.from_peer += 1;
                    self.out.push_back(Transmit {
                        socket: 1,
                        dest: self.executor,
                        payload: data.into_owned(),
                        ttl: None,
                    });
                } else {
                    self.stats.dropped_peer += 1;
                }
            }
        } else if from == self.executor && bytes.len() < MAX_FORWARDED {
            if self.client.send_to_peer(self.peer, bytes, now) {
                self.stats.to_peer += 1;
            }
        } else {
            self.stats.dropped_local += 1;
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        if self.close_by.is_none() && self.stop.load(Ordering::Relaxed) {
            self.close_by = Some(now + CLOSE_WAIT);
            self.client.close(now);
        }
        self.client.handle_timeout(now);
        self.publish();
    }

    fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        if let Some(p) = self.client.poll_transmit() {
            return Some(Transmit::to(self.client.server(), p));
        }
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.close_by.is_some_and(|d| self.last_now >= d) {
            return None;
        }
        let t = self.client.poll_timeout()?;
        Some(t.min(self.last_now + TICK))
    }

    fn poll_event(&mut self) -> Option<TurnEvent> {
        self.client.poll_event()
    }
}

/// A thread forwarding between the executor and the peer through the allocation.
#[derive(Debug)]
pub struct Forwarder {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<ForwarderStats>>,
    thread: Option<JoinHandle<Result<ForwarderStats, RelayError>>>,
}

/// Start forwarding: datagrams from `executor` to the forwarder's local socket
/// ([`Forwarder::local_addr`], on `executor`'s loopback address) go to `peer` through
/// the relay, and `peer`'s datagrams come back to `executor`. Binds a channel to `peer`
/// at once and keeps the allocation, permission and channel refreshed.
pub fn forward(
    alloc: Allocation,
    peer: SocketAddr,
    executor: SocketAddr,
) -> Result<Forwarder, RelayError> {
    let local = UdpSocket::bind(SocketAddr::new(executor.ip(), 0))
        .map_err(io_err("binding the forwarder's local socket"))?;
    let local_addr = local
        .local_addr()
        .map_err(io_err("reading the forwarder's address"))?;
    let Allocation { socket, mut client } = alloc;
    // Both sockets carry the corridor's whole traffic, and the thread may be scheduled
    // late on a busy host: room for bursts instead of drops (the kernel caps the size).
    for s in [&socket, &local] {
        if let Err(e) = socket2::SockRef::from(s).set_recv_buffer_size(FORWARD_BUFFER) {
            log::debug!("forwarder: cannot enlarge the receive buffer: {e}");
        }
    }
    let now = Instant::now();
    client.bind_channel(peer, now);
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Mutex::new(ForwarderStats::default()));
    let mut core = ForwardCore {
        client,
        peer,
        executor,
        stop: stop.clone(),
        shared: shared.clone(),
        stats: ForwarderStats::default(),
        out: VecDeque::new(),
        last_now: now,
        close_by: None,
        error: None,
    };
    let thread = std::thread::Builder::new()
        .name("turn-forwarder".into())
        .spawn(move || {
            let run = Driver::new(&[&socket, &local]).run(&mut core, |c, ev, _| {
                match ev {
                    TurnEvent::Failed(e) => c.error = Some(e),
                    TurnEvent::Closed { deleted } => c.stats.deleted = deleted,
                    TurnEvent::RequestFailed(e) => log::warn!("forwarder: {e}"),
                    TurnEvent::Refreshed { lifetime } => {
                        log::debug!("forwarder: allocation refreshed ({} s)", lifetime.as_secs())
                    }
                    _ => {}
                }
                ControlFlow::Continue(())
            });
            core.publish();
            if let Err(e) = run {
                return Err(RelayError::Io {
                    what: "forwarding",
                    source: e.into(),
                });
            }
            match core.error.take() {
                Some(e) => Err(e),
                None => Ok(core.stats),
            }
        })
        .map_err(io_err("starting the forwarder thread"))?;
    Ok(Forwarder {
        local: local_addr,
        stop,
        shared,
        thread: Some(thread),
    })
}

impl Forwarder {
    /// The local socket the executor sends to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
    /// The counters so far.
    pub fn stats(&self) -> ForwarderStats {
        self.shared.lock().map(|s| *s).unwrap_or_default()
    }
    /// True when the thread ended (stopped or failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().map_or(true, |t| t.is_finished())
    }
    /// Stop (deleting the allocation) and return the final counters, or the error that
    /// ended the forwarder earlier.
    pub fn stop(mut self) -> Result<ForwarderStats, RelayError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<ForwarderStats, RelayError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(RelayError::Io {
                    what: "forwarding",
                    source: io::Error::other("the forwarder thread panicked"),
                })
            }),
            None => Ok(self.stats()),
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests;
