//! The TURN client core (RFC 8656 over UDP): allocation, long-term authentication with
//! nonce renewal, refreshes, permissions and channel bindings, wrapping and unwrapping
//! peer datagrams. Sans-IO: every datagram it wants sent goes to the server, every call
//! that can change state takes `now`.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::proto::{self, attr, method, ServerDatagram};
use super::RelayError;
use crate::secret::{Password, Zeroizing};
use crate::stun::codec::{self, Class, Message, TransactionId};
use crate::stun::new_transaction_id;

/// First retransmission timeout of a request (RFC 8489 recommends 500 ms).
const RTO: Duration = Duration::from_millis(500);
/// Longest retransmission timeout.
const RTO_MAX: Duration = Duration::from_secs(3);
/// Sends of one request before it is given up (about 10 s in all).
const MAX_SENDS: u32 = 6;
/// Re-authentications of one request after stale nonces.
const MAX_STALE: u32 = 3;
/// Refresh at least this often by default, so permissions (300 s) and channels (600 s)
/// never lapse.
pub const REFRESH_MAX: Duration = Duration::from_secs(120);
/// Peers with a channel at most (bounds memory; plexus relays to one peer).
const MAX_CHANNELS: usize = 64;
/// Permissions at most.
const MAX_PERMISSIONS: usize = 64;

/// What the client reports.
#[derive(Debug)]
pub enum TurnEvent {
    /// The allocation exists.
    Allocated {
        /// XOR-RELAYED-ADDRESS: where peers send.
        relayed: SocketAddr,
        /// XOR-MAPPED-ADDRESS: this host as the server sees it.
        mapped: SocketAddr,
        /// Lifetime the server granted.
        lifetime: Duration,
    },
    /// A refresh succeeded.
    Refreshed {
        /// Lifetime the server granted.
        lifetime: Duration,
    },
    /// The server installed (or refreshed) the permissions for these addresses.
    Permitted(Vec<IpAddr>),
    /// A channel is bound (or its binding refreshed).
    ChannelBound {
        /// The peer.
        peer: SocketAddr,
        /// Its channel number.
        channel: u16,
    },
    /// A permission or channel request failed; the allocation lives on.
    RequestFailed(RelayError),
    /// The allocation is gone: fatal.
    Failed(RelayError),
    /// The allocation ended after [`TurnClient::close`].
    Closed {
        /// The server confirmed the deletion (false: it refused or did not answer, and
        /// the allocation lapses at the end of its lifetime).
        deleted: bool,
    },
}

/// Counters for logs, benchmarks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnStats {
    /// Successful allocation refreshes.
    pub refreshes: u64,
    /// Successful CreatePermission transactions.
    pub permissions: u64,
    /// Successful ChannelBind transactions (first bind and refreshes).
    pub channel_binds: u64,
    /// Stale-nonce answers (438) that made the client re-sign a request.
    pub stale_nonces: u64,
    /// Requests sent, retransmissions included.
    pub requests_sent: u64,
    /// Peer datagrams wrapped to the server.
    pub to_peer: u64,
    /// Peer datagrams unwrapped from the server.
    pub from_peer: u64,
    /// Datagrams dropped: undecodable, unsigned, unknown channel, not from the server.
    pub dropped: u64,
}

/// What [`TurnClient::receive`] made of a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// A peer's datagram, relayed.
    Peer {
        /// The peer (its address as the relay sees it).
        peer: SocketAddr,
        /// Its payload.
        data: Cow<'a, [u8]>,
    },
    /// A TURN response the client used.
    Handled,
    /// Something it could not use (counted in [`TurnStats::dropped`]).
    Ignored,
}

#[derive(Debug, Clone)]
enum Request {
    Allocate,
    Refresh { lifetime: Option<u32> },
    Permission(Vec<IpAddr>),
    ChannelBind { channel: u16, peer: SocketAddr },
}

impl Request {
    fn name(&self) -> &'static str {
        match self {
            Request::Allocate => "Allocate",
            Request::Refresh { .. } => "Refresh",
            Request::Permission(_) => "CreatePermission",
            Request::ChannelBind { .. } => "ChannelBind",
        }
    }
}

#[derive(Debug)]
struct Pending {
    tid: TransactionId,
    req: Request,
    bytes: Vec<u8>,
    next_send: Instant,
    rto: Duration,
    sends: u32,
    signed: bool,
    stale: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Allocating,
    Allocated,
    Closing,
    Closed,
    Failed,
}

/// The TURN client core. See the module docs.
#[derive(Debug)]
pub struct TurnClient {
    server: SocketAddr,
    username: String,
    password: Password,
    requested_lifetime: Option<u32>,
    realm: Option<String>,
    nonce: Option<Vec<u8>>,
    key: Option<Zeroizing<Vec<u8>>>,
    state: State,
    relayed: Option<SocketAddr>,
    mapped: Option<SocketAddr>,
    expires: Option<Instant>,
    next_refresh: Option<Instant>,
    pending: Vec<Pending>,
    permissions: Vec<IpAddr>,
    channels: HashMap<SocketAddr, (u16, bool)>,
    by_channel: HashMap<u16, SocketAddr>,
    next_channel: u16,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<TurnEvent>,
    stats: TurnStats,
    refresh_every: Duration,
    granted_at: Option<Instant>,
}

impl TurnClient {
    /// A client that starts allocating at `now` on `server` as `username` / `password`
    /// (for REST credentials: the computed pair, see [`super::TurnCredentials`]).
    /// `lifetime` asks the server for a lifetime (it may grant less).
    pub fn new(
        server: SocketAddr,
        username: String,
        password: Password,
        lifetime: Option<Duration>,
        now: Instant,
    ) -> TurnClient {
        let mut c = TurnClient {
            server,
            username,
            password,
            requested_lifetime: lifetime.map(|l| l.as_secs().min(u64::from(u32::MAX)) as u32),
            realm: None,
            nonce: None,
            key: None,
            state: State::Allocating,
            relayed: None,
            mapped: None,
            expires: None,
            next_refresh: None,
            pending: Vec::new(),
            permissions: Vec::new(),
            channels: HashMap::new(),
            by_channel: HashMap::new(),
            next_channel: proto::CHANNEL_MIN,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: TurnStats::default(),
            refresh_every: REFRESH_MAX,
            granted_at: None,
        };
        c.start(Request::Allocate, now);
        c
    }

    /// The TURN server.
    pub fn server(&self) -> SocketAddr {
        self.server
    }
    /// The relayed address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relayed
    }
    /// The mapped address from the Allocate response, once allocated.
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.mapped
    }
    /// True between the Allocate success and the end of the allocation.
    pub fn is_allocated(&self) -> bool {
        self.state == State::Allocated
    }
    /// Counters.
    pub fn stats(&self) -> TurnStats {
        self.stats
    }

    /// Refresh the allocation, permissions and channels at least every `every` (default
    /// [`REFRESH_MAX`], at least 1 s). Servers may give permissions and channels shorter
    /// lifetimes than RFC 8656's 300 and 600 s (coturn's `permission-lifetime`) without
    /// a way for the client to learn them.
    pub fn set_refresh_interval(&mut self, every: Duration) {
        self.refresh_every = every.max(Duration::from_secs(1));
        if let (Some(r), Some(at)) = (self.next_refresh, self.granted_at) {
            self.next_refresh = Some(r.min(at + self.refresh_every));
        }
    }

    /// Ask the server to let datagrams from `ip` in (CreatePermission), once per address:
    /// false when `ip` was permitted (or asked for) already, or the table is full.
    pub fn permit(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.permissions.contains(&ip) || self.permissions.len() >= MAX_PERMISSIONS {
            return false;
        }
        self.permissions.push(ip);
        if self.state == State::Allocated {
            self.start(Request::Permission(vec![ip]), now);
        }
        true
    }

    /// True when `ip` is among the permissions asked for.
    pub fn is_permitted(&self, ip: IpAddr) -> bool {
        self.permissions.contains(&ip)
    }

    /// Bind a channel to `peer` (also installs its permission). Returns false when the
    /// channel table is full.
    pub fn bind_channel(&mut self, peer: SocketAddr, now: Instant) -> bool {
        if self.channels.contains_key(&peer) {
            return true;
        }
        if self.channels.len() >= MAX_CHANNELS || self.next_channel > proto::CHANNEL_MAX {
            return false;
        }
        let channel = self.next_channel;
        self.next_channel += 1;
        self.channels.insert(peer, (channel, false));
        self.by_channel.insert(channel, peer);
        if !self.permissions.contains(&peer.ip()) && self.permissions.len() < MAX_PERMISSIONS {
            self.permissions.push(peer.ip());
        }
        if self.state == State::Allocated {
            self.start(Request::ChannelBind { channel, peer }, now);
        }
        true
    }

    /// Queue `data` for `peer`: ChannelData on a bound channel, else a Send indication
    /// (after binding a channel, so the next datagrams travel with 4 bytes of overhead
    /// instead of 36). False when there is no allocation.
    pub fn send_to_peer(&mut self, peer: SocketAddr, data: &[u8], now: Instant) -> bool {
        if self.state != State::Allocated {
            self.stats.dropped += 1;
            return false;
        }
        match self.channels.get(&peer) {
            Some(&(channel, true)) => self.transmits.push_back(proto::channel_data(channel, data)),
            _ => {
                self.bind_channel(peer, now);
                let tid = new_transaction_id();
                let m = Message {
                    class: Class::Indication,
                    method: method::SEND,
                    transaction_id: tid,
                    attributes: vec![
                        proto::raw(attr::XOR_PEER_ADDRESS, proto::xor_addr_value(peer, &tid)),
                        proto::raw(attr::DATA, data.to_vec()),
                    ],
                    padding: 0,
                };
                self.transmits.push_back(m.encode());
            }
        }
        self.stats.to_peer += 1;
        true
    }

    /// Delete the allocation (Refresh with lifetime 0); [`TurnEvent::Closed`] follows.
    pub fn close(&mut self, now: Instant) {
        match self.state {
            State::Allocated => {
                self.pending.clear();
                self.state = State::Closing;
                self.start(Request::Refresh { lifetime: Some(0) }, now);
            }
            State::Allocating => {
                self.pending.clear();
                self.state = State::Closed;
                self.events.push_back(TurnEvent::Closed { deleted: false });
            }
            _ => {}
        }
    }

    /// A datagram arrived from `from`.
    pub fn receive<'a>(&mut self, now: Instant, from: SocketAddr, bytes: &'a [u8]) -> Input<'a> {
        if from != self.server {
            self.stats.dropped += 1;
            return Input::Ignored;
        }
        let msg = match proto::decode_server(bytes) {
            Ok(ServerDatagram::ChannelData { channel, data }) => {
                return match self.by_channel.get(&channel) {
                    Some(&peer) if self.state == State::Allocated => {
                        self.stats.from_peer += 1;
                        Input::Peer {
                            peer,
                            data: Cow::Borrowed(data),
                        }
                    }
                    _ => {
                        self.drop_input(format_args!("ChannelData on unknown channel {channel:#x}"))
                    }
                };
            }
            Ok(ServerDatagram::Stun(m)) => m,
            Err(e) => return self.drop_input(format_args!("{e}")),
        };
        if msg.class == Class::Indication && msg.method == method::DATA {
            let peer = proto::find_xor_addr(&msg, attr::XOR_PEER_ADDRESS);
            let data = proto::find_raw(&msg, attr::DATA);
            return match (peer, data) {
                (Some(peer), Some(data)) if self.state == State::Allocated => {
                    self.stats.from_peer += 1;
                    Input::Peer {
                        peer,
                        data: Cow::Owned(data.to_vec()),
                    }
                }
                _ => self.drop_input(format_args!("Data indication without peer or data")),
            };
        }
        let Some(i) = self
            .pending
            .iter()
            .position(|p| p.tid == msg.transaction_id)
        else {
            return self.drop_input(format_args!("response to no request of ours"));
        };
        match msg.class {
            Class::Success => {
                // A success must carry our key's MAC: anyone can spoof the source address.
                let ok = self
                    .key
                    .as_ref()
                    .is_some_and(|k| codec::verify_integrity(bytes, k) == Some(true));
                if !ok {
                    return self.drop_input(format_args!("success response without a valid MAC"));
                }
                let p = self.pending.remove(i);
                self.on_success(p.req, &msg, now);
            }
            Class::Error => {
                let p = self.pending.remove(i);
                self.on_error(p, &msg, now);
            }
            _ => return self.drop_input(format_args!("request or indication from the server")),
        }
        Input::Handled
    }

    fn drop_input(&mut self, why: std::fmt::Arguments<'_>) -> Input<'static> {
        self.stats.dropped += 1;
        log::debug!("TURN {}: dropped: {why}", self.server);
        Input::Ignored
    }

    fn on_success(&mut self, req: Request, msg: &Message, now: Instant) {
        match req {
            Request::Allocate => {
                let relayed = proto::find_xor_addr(msg, attr::XOR_RELAYED_ADDRESS);
                let mapped = msg.mapped();
                let (Some(relayed), Some(mapped)) = (relayed, mapped) else {
                    return self.fail(RelayError::Protocol {
                        server: self.server,
                        what:
                            "the Allocate response has no XOR-RELAYED-ADDRESS or XOR-MAPPED-ADDRESS"
                                .into(),
                    });
                };
                let lifetime = self.granted(msg, now);
                self.state = State::Allocated;
                self.relayed = Some(relayed);
                self.mapped = Some(mapped);
                log::info!(
                    "TURN {}: allocated {relayed} (mapped {mapped}, lifetime {} s)",
                    self.server,
                    lifetime.as_secs()
                );
                self.events.push_back(TurnEvent::Allocated {
                    relayed,
                    mapped,
                    lifetime,
                });
                // What was asked for before the allocation existed.
                if !self.permissions.is_empty() {
                    self.start(Request::Permission(self.permissions.clone()), now);
                }
                let binds: Vec<_> = self.channels.iter().map(|(p, (c, _))| (*p, *c)).collect();
                for (peer, channel) in binds {
                    self.start(Request::ChannelBind { channel, peer }, now);
                }
            }
            Request::Refresh { lifetime: Some(0) } => {
                self.state = State::Closed;
                self.pending.clear();
                log::info!("TURN {}: allocation deleted", self.server);
                self.events.push_back(TurnEvent::Closed { deleted: true });
            }
            Request::Refresh { .. } => {
                let lifetime = self.granted(msg, now);
                self.stats.refreshes += 1;
                log::debug!(
                    "TURN {}: refreshed, lifetime {} s",
                    self.server,
                    lifetime.as_secs()
                );
                self.events.push_back(TurnEvent::Refreshed { lifetime });
            }
            Request::Permission(ips) => {
                self.stats.permissions += 1;
                self.events.push_back(TurnEvent::Permitted(ips));
            }
            Request::ChannelBind { channel, peer } => {
                self.stats.channel_binds += 1;
                if let Some(c) = self.channels.get_mut(&peer) {
                    c.1 = true;
                }
                self.events
                    .push_back(TurnEvent::ChannelBound { peer, channel });
            }
        }
    }

    /// Records the granted lifetime and schedules the next refresh.
    fn granted(&mut self, msg: &Message, now: Instant) -> Duration {
        let secs = proto::find_lifetime(msg).unwrap_or(600).max(1);
        let lifetime = Duration::from_secs(u64::from(secs));
        self.expires = Some(now + lifetime);
        self.granted_at = Some(now);
        self.next_refresh = Some(now + (lifetime / 2).min(self.refresh_every));
        lifetime
    }

    fn on_error(&mut self, mut p: Pending, msg: &Message, now: Instant) {
        let (code, reason) = msg.error_code().unwrap_or((0, String::new()));
        let realm = proto::find_raw(msg, attr::REALM).and_then(|r| std::str::from_utf8(r).ok());
        let nonce = proto::find_raw(msg, attr::NONCE);
        match (code, realm, nonce) {
            // First challenge (unsigned request), or a stale nonce: sign and send again.
            (401, Some(realm), Some(nonce)) if !p.signed => {
                self.set_auth(realm, nonce);
                self.restart(p, now);
            }
            (438, _, Some(nonce)) if p.stale < MAX_STALE => {
                self.stats.stale_nonces += 1;
                if let Some(realm) = realm {
                    self.set_auth(realm, nonce);
                } else {
                    self.nonce = Some(nonce.to_vec());
                }
                p.stale += 1;
                self.restart(p, now);
            }
            _ => {
                // Error responses come unsigned when the credentials are wrong, so they
                // cannot be authenticated; one only ends what it answers.
                let err = if code == 401 {
                    RelayError::Auth {
                        server: self.server,
                        reason: format!("{code} {reason}"),
                    }
                } else {
                    RelayError::Refused {
                        server: self.server,
                        request: p.req.name(),
                        code,
                        reason,
                    }
                };
                match p.req {
                    Request::Allocate => self.fail(err),
                    Request::Refresh { lifetime: Some(0) } => {
                        self.state = State::Closed;
                        self.events.push_back(TurnEvent::Closed { deleted: false });
                    }
                    // 437: the allocation is gone (expired or deleted).
                    Request::Refresh { .. } => self.fail(err),
                    _ => self.events.push_back(TurnEvent::RequestFailed(err)),
                }
            }
        }
    }

    fn set_auth(&mut self, realm: &str, nonce: &[u8]) {
        if self.realm.as_deref() != Some(realm) || self.key.is_none() {
            self.key = codec::long_term_key(&self.username, realm, self.password.expose())
                .map(|k| Zeroizing::new(k.to_vec()));
            self.realm = Some(realm.to_owned());
        }
        self.nonce = Some(nonce.to_vec());
    }

    fn fail(&mut self, err: RelayError) {
        log::warn!("TURN {}: {err}", self.server);
        self.state = State::Failed;
        self.pending.clear();
        self.events.push_back(TurnEvent::Failed(err));
    }

    fn start(&mut self, req: Request, now: Instant) {
        let p = Pending {
            tid: new_transaction_id(),
            req,
            bytes: Vec::new(),
            next_send: now,
            rto: RTO,
            sends: 0,
            signed: false,
            stale: 0,
        };
        self.restart(p, now);
    }

    /// (Re)builds `p` with a fresh transaction id and the current credentials, sends it.
    fn restart(&mut self, mut p: Pending, now: Instant) {
        p.tid = new_transaction_id();
        let tid = p.tid;
        let mut attributes = Vec::new();
        let m = match &p.req {
            Request::Allocate => {
                attributes.push(proto::raw(
                    attr::REQUESTED_TRANSPORT,
                    vec![proto::TRANSPORT_UDP, 0, 0, 0],
                ));
                if let Some(l) = self.requested_lifetime {
                    attributes.push(proto::raw(attr::LIFETIME, l.to_be_bytes().to_vec()));
                }
                method::ALLOCATE
            }
            Request::Refresh { lifetime } => {
                if let Some(l) = lifetime.or(self.requested_lifetime) {
                    attributes.push(proto::raw(attr::LIFETIME, l.to_be_bytes().to_vec()));
                }
                method::REFRESH
            }
            Request::Permission(ips) => {
                for ip in ips {
                    let v = proto::xor_addr_value(SocketAddr::new(*ip, 0), &tid);
                    attributes.push(proto::raw(attr::XOR_PEER_ADDRESS, v));
                }
                method::CREATE_PERMISSION
            }
            Request::ChannelBind { channel, peer } => {
                let mut v = channel.to_be_bytes().to_vec();
                v.extend_from_slice(&[0, 0]);
                attributes.push(proto::raw(attr::CHANNEL_NUMBER, v));
                attributes.push(proto::raw(
                    attr::XOR_PEER_ADDRESS,
                    proto::xor_addr_value(*peer, &tid),
                ));
                method::CHANNEL_BIND
            }
        };
        if let (Some(realm), Some(nonce)) = (&self.realm, &self.nonce) {
            attributes.push(proto::raw(
                attr::USERNAME,
                self.username.as_bytes().to_vec(),
            ));
            attributes.push(proto::raw(attr::REALM, realm.as_bytes().to_vec()));
            attributes.push(proto::raw(attr::NONCE, nonce.clone()));
        }
        let msg = Message {
            class: Class::Request,
            method: m,
            transaction_id: tid,
            attributes,
            padding: 0,
        };
        p.signed = self.key.is_some();
        let Some(bytes) = msg.encode_signed(self.key.as_ref().map(|k| k.as_slice()), false) else {
            return self.fail(RelayError::Protocol {
                server: self.server,
                what: "the crypto library failed to sign a request".into(),
            });
        };
        p.bytes = bytes;
        p.sends = 0;
        p.rto = RTO;
        p.next_send = now;
        self.pending.push(p);
        self.send_due(now);
    }

    fn send_due(&mut self, now: Instant) {
        let mut gave_up = Vec::new();
        for (i, p) in self.pending.iter_mut().enumerate() {
            if p.next_send > now {
                continue;
            }
            if p.sends >= MAX_SENDS {
                gave_up.push(i);
                continue;
            }
            self.transmits.push_back(p.bytes.clone());
            self.stats.requests_sent += 1;
            p.sends += 1;
            p.next_send = now + p.rto;
            p.rto = (p.rto * 2).min(RTO_MAX);
        }
        for i in gave_up.into_iter().rev() {
            let p = self.pending.remove(i);
            let err = RelayError::Timeout {
                server: self.server,
                request: p.req.name(),
            };
            match p.req {
                Request::Allocate => self.fail(err),
                Request::Refresh { lifetime: Some(0) } => {
                    self.state = State::Closed;
                    self.events.push_back(TurnEvent::Closed { deleted: false });
                }
                // Try again soon while the allocation still lives; expiry is checked below.
                Request::Refresh { .. } => self.next_refresh = Some(now + RTO),
                _ => self.events.push_back(TurnEvent::RequestFailed(err)),
            }
        }
    }

    /// Run the timers due at `now`: retransmissions, refreshes, expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Allocated {
            if self.expires.is_some_and(|e| now >= e) {
                return self.fail(RelayError::Expired {
                    server: self.server,
                });
            }
            if self.next_refresh.is_some_and(|r| now >= r) {
                self.next_refresh = None;
                let busy = self
                    .pending
                    .iter()
                    .any(|p| matches!(p.req, Request::Refresh { .. }));
                if !busy {
                    self.start(Request::Refresh { lifetime: None }, now);
                }
                // Permissions and channels last 300 and 600 s on a standard server, and
                // less on some: refresh them with the allocation.
                if !self.permissions.is_empty() {
                    self.start(Request::Permission(self.permissions.clone()), now);
                }
                let binds: Vec<_> = self
                    .channels
                    .iter()
                    .filter(|(_, (_, bound))| *bound)
                    .map(|(p, (c, _))| (*p, *c))
                    .collect();
                for (peer, channel) in binds {
                    self.start(Request::ChannelBind { channel, peer }, now);
                }
            }
        }
        self.send_due(now);
    }

    /// The next datagram for the server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// When [`TurnClient::handle_timeout`] must run; `None` once closed or failed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.state, State::Closed | State::Failed) {
            return None;
        }
        let retransmit = self.pending.iter().map(|p| p.next_send).min();
        [retransmit, self.next_refresh, self.expires]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    /// True once the allocation is closed or failed.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Closed | State::Failed)
    }
}
