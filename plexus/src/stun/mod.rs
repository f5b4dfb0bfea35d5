//! STUN (RFC 8489/5389, RFC 5780 attributes): a pure codec, a sans-IO binding
//! transaction with RFC 8489 retransmission, and [`binding`], which runs one over an
//! already-bound socket with [`crate::net::drive`].
//!
//! The transaction is a [`Core`]: it never reads the clock or touches a socket. Built
//! with [`Transaction::new`] at `now`, it sends the request and its retransmissions,
//! and reports its one event, the outcome, when an answer or the deadline arrives.

pub mod codec;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::net::Driver;
use crate::sansio::{Core, Transmit};

pub use codec::{decode, Attribute, Class, Message, StunDecodeError, TransactionId};

/// Why a binding transaction failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StunError {
    /// No answer before the overall deadline.
    Timeout {
        /// The server asked.
        server: SocketAddr,
        /// The deadline that passed.
        after: Duration,
    },
    /// The server answered with an error response.
    ErrorResponse {
        /// The server asked.
        server: SocketAddr,
        /// ERROR-CODE (0 when the response carried none).
        code: u16,
        /// Reason phrase.
        reason: String,
    },
    /// A success response without (XOR-)MAPPED-ADDRESS.
    NoMappedAddress {
        /// The server asked.
        server: SocketAddr,
    },
    /// A socket operation failed.
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error text.
        error: String,
    },
}

impl fmt::Display for StunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StunError::Timeout { server, after } => write!(
                f,
                "STUN server {server} did not answer within {} ms: check the address and port \
                 (default 3478), that UDP to it is not blocked, or raise --timeout",
                after.as_millis()
            ),
            StunError::ErrorResponse { server, code, reason } => write!(
                f,
                "STUN server {server} answered with error {code} {reason:?}: use a server that \
                 accepts unauthenticated Binding requests"
            ),
            StunError::NoMappedAddress { server } => write!(
                f,
                "STUN server {server} answered without a mapped address: it is broken or not a STUN server"
            ),
            StunError::Io { what, error } => write!(f, "STUN socket error while {what}: {error}"),
        }
    }
}

impl std::error::Error for StunError {}

/// RFC 8489 §6.2.1 timing: first RTO, doubling, bounded by an overall deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// First retransmission timeout (RFC 8489 recommends 500 ms on the Internet).
    pub initial_rto: Duration,
    /// No answer by then: the transaction fails (or, in discovery, the path is filtered).
    pub deadline: Duration,
}

impl Timing {
    /// Timing for a deadline: RTO a quarter of it, so there are 3 sends (0, ¼, ¾).
    pub fn for_deadline(deadline: Duration) -> Timing {
        Timing {
            initial_rto: (deadline / 4).max(Duration::from_millis(1)),
            deadline,
        }
    }
}

/// Which source address a response must come from to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Exactly the destination of the request.
    SameEndpoint,
    /// Another IP and another port than the destination (CHANGE-REQUEST ip+port).
    ChangedIpAndPort,
    /// The same IP, another port (CHANGE-REQUEST port).
    ChangedPort,
}

/// A successful Binding response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The mapped (server-reflexive) endpoint.
    pub mapped: SocketAddr,
    /// OTHER-ADDRESS (or RFC 3489 CHANGED-ADDRESS): the server supports RFC 5780.
    pub other: Option<SocketAddr>,
    /// Where the response came from.
    pub from: SocketAddr,
}

/// A fresh random transaction id.
pub fn new_transaction_id() -> TransactionId {
    let mut id = [0u8; 12];
    if openssl::rand::rand_bytes(&mut id).is_err() {
        // Uniqueness, not secrecy, is what matters for matching; fall back to time.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        id.copy_from_slice(&t.to_le_bytes()[..12]);
    }
    TransactionId(id)
}

/// One Binding request/response exchange, sans-IO.
#[derive(Debug)]
pub struct Transaction {
    id: TransactionId,
    dest: SocketAddr,
    request: Vec<u8>,
    expect: Expect,
    rto: Duration,
    next_send: Option<Instant>,
    deadline: Instant,
    timing: Timing,
    outcome: Option<Result<Response, StunError>>,
    /// The outcome went out as the event already.
    reported: bool,
}

impl Transaction {
    /// A Binding request to `dest` carrying `attributes`, first send at `now`.
    pub fn new(
        id: TransactionId,
        dest: SocketAddr,
        attributes: Vec<Attribute>,
        expect: Expect,
        timing: Timing,
        now: Instant,
    ) -> Transaction {
        let request = Message::binding_request(id, attributes).encode();
        Transaction {
            id,
            dest,
            request,
            expect,
            rto: timing.initial_rto,
            next_send: Some(now),
            deadline: now + timing.deadline,
            timing,
            outcome: None,
            reported: false,
        }
    }

    /// The transaction id.
    pub fn id(&self) -> TransactionId {
        self.id
    }

    /// The destination.
    pub fn dest(&self) -> SocketAddr {
        self.dest
    }

    /// A decoded message arrived from `from` at `now`. Returns true when it answered
    /// this transaction; strays (other id, unexpected source, requests) return false.
    /// ([`Core::handle_input`] decodes and calls this; discovery decodes once and offers
    /// the message to each of its transactions.) An answer counts until the deadline
    /// has been handled by [`Core::handle_timeout`], however late `now` is: the driver
    /// runs the timers first in every turn.
    pub fn handle_message(&mut self, _now: Instant, from: SocketAddr, msg: &Message) -> bool {
        if self.outcome.is_some() || msg.transaction_id != self.id {
            return false;
        }
        let d = self.dest;
        let source_ok = match self.expect {
            Expect::SameEndpoint => from == d,
            Expect::ChangedIpAndPort => from.ip() != d.ip() && from.port() != d.port(),
            Expect::ChangedPort => from.ip() == d.ip() && from.port() != d.port(),
        };
        if !source_ok {
            log::debug!("STUN response for {d} from unexpected source {from} ignored");
            return false;
        }
        let outcome = match msg.class {
            Class::Success => match msg.mapped() {
                Some(mapped) => Ok(Response {
                    mapped,
                    other: msg.other_address(),
                    from,
                }),
                None => Err(StunError::NoMappedAddress { server: d }),
            },
            Class::Error => {
                let (code, reason) = msg.error_code().unwrap_or((0, String::new()));
                Err(StunError::ErrorResponse {
                    server: d,
                    code,
                    reason,
                })
            }
            Class::Request | Class::Indication => return false,
        };
        self.outcome = Some(outcome);
        true
    }

    /// The result once known (it is also the one [`Core::poll_event`]).
    pub fn outcome(&self) -> Option<&Result<Response, StunError>> {
        self.outcome.as_ref()
    }
}

impl Core for Transaction {
    type Event = Result<Response, StunError>;

    fn handle_input(&mut self, now: Instant, _socket: usize, from: SocketAddr, bytes: &[u8]) {
        match decode(bytes) {
            Ok(m) => {
                self.handle_message(now, from, &m);
            }
            Err(e) => log::debug!("ignoring a datagram from {from}: {e}"),
        }
    }

    /// The next datagram to send now, if any (first send and retransmissions).
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.outcome.is_some() {
            return None;
        }
        let due = self.next_send.filter(|t| *t <= now)?;
        let next = due.max(now) + self.rto;
        self.rto = self.rto.saturating_mul(2);
        // A retransmission at or after the deadline could not be answered in time.
        self.next_send = (next < self.deadline).then_some(next);
        Some(Transmit::to(self.dest, self.request.clone()))
    }

    /// When the transaction next needs attention (a retransmission or the deadline).
    fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome.is_some() {
            return None;
        }
        Some(
            self.next_send
                .map_or(self.deadline, |t| t.min(self.deadline)),
        )
    }

    /// Time passes: fails the transaction once the deadline is reached.
    fn handle_timeout(&mut self, now: Instant) {
        if self.outcome.is_none() && now >= self.deadline {
            self.outcome = Some(Err(StunError::Timeout {
                server: self.dest,
                after: self.timing.deadline,
            }));
        }
    }

    fn poll_event(&mut self) -> Option<Self::Event> {
        if self.reported {
            return None;
        }
        let o = self.outcome.clone()?;
        self.reported = true;
        Some(o)
    }
}

/// The mapped endpoint of an already-bound `sock` as seen by `server`, within
/// `timeout` (RFC 8489 retransmissions inside it). Datagrams that are not the
/// answer are discarded; the socket's settings are left as they were.
pub fn binding(
    sock: &UdpSocket,
    server: SocketAddr,
    timeout: Duration,
) -> Result<SocketAddr, StunError> {
    let mut tx = Transaction::new(
        new_transaction_id(),
        server,
        Vec::new(),
        Expect::SameEndpoint,
        Timing::for_deadline(timeout),
        Instant::now(),
    );
    let mut result = None;
    Driver::new(&[sock])
        .fatal_send_errors()
        .run(&mut tx, |_, outcome, _| {
            result = Some(outcome);
            ControlFlow::Break(())
        })
        .map_err(|e| StunError::Io {
            what: e.what,
            error: e.source.to_string(),
        })?;
    // The transaction always ends with its outcome; a timeout is the honest fallback.
    result
        .unwrap_or(Err(StunError::Timeout {
            server,
            after: timeout,
        }))
        .map(|r| r.mapped)
}

#[cfg(test)]
mod transaction_tests {
    use super::*;

    fn server() -> SocketAddr {
        "203.0.113.3:3478".parse().unwrap()
    }

    fn answer(id: TransactionId, mapped: &str) -> Message {
        Message {
            class: Class::Success,
            method: codec::METHOD_BINDING,
            transaction_id: id,
            attributes: vec![Attribute::XorMappedAddress(mapped.parse().unwrap())],
            padding: 0,
        }
    }

    #[test]
    fn retransmits_with_doubling_rto_until_the_deadline() {
        let t0 = Instant::now();
        let timing = Timing {
            initial_rto: Duration::from_millis(100),
            deadline: Duration::from_millis(400),
        };
        let mut tx = Transaction::new(
            new_transaction_id(),
            server(),
            vec![],
            Expect::SameEndpoint,
            timing,
            t0,
        );
        let mut sends = vec![];
        let mut now = t0;
        while tx.outcome().is_none() {
            tx.handle_timeout(now);
            while tx.poll_transmit(now).is_some() {
                sends.push(now - t0);
            }
            match tx.poll_timeout() {
                Some(t) => now = t,
                None => break,
            }
        }
        let ms: Vec<u128> = sends.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![0, 100, 300]);
        assert_eq!(now - t0, Duration::from_millis(400));
        assert!(matches!(tx.outcome(), Some(Err(StunError::Timeout { .. }))));
    }

    #[test]
    fn matches_id_and_source_and_ignores_strays() {
        let t0 = Instant::now();
        let id = new_transaction_id();
        let mut tx = Transaction::new(
            id,
            server(),
            vec![],
            Expect::SameEndpoint,
            Timing::for_deadline(Duration::from_secs(1)),
            t0,
        );
        assert!(tx.poll_transmit(t0).is_some());
        let other = new_transaction_id();
        assert!(
            !tx.handle_message(t0, server(), &answer(other, "198.51.100.1:1")),
            "wrong id"
        );
        assert!(
            !tx.handle_message(
                t0,
                "203.0.113.9:3478".parse().unwrap(),
                &answer(id, "198.51.100.1:1")
            ),
            "spoofed source"
        );
        let mut req = answer(id, "198.51.100.1:1");
        req.class = Class::Request;
        assert!(
            !tx.handle_message(t0, server(), &req),
            "a request is not an answer"
        );
        assert!(tx.outcome().is_none());
        assert!(tx.handle_message(t0, server(), &answer(id, "198.51.100.1:4242")));
        assert_eq!(
            tx.outcome().unwrap().as_ref().unwrap().mapped,
            "198.51.100.1:4242".parse().unwrap()
        );
        assert!(
            tx.poll_transmit(t0 + Duration::from_secs(5)).is_none(),
            "done: no more sends"
        );
    }

    #[test]
    fn error_response_is_a_typed_error() {
        let t0 = Instant::now();
        let id = new_transaction_id();
        let mut tx = Transaction::new(
            id,
            server(),
            vec![],
            Expect::SameEndpoint,
            Timing::for_deadline(Duration::from_secs(1)),
            t0,
        );
        let mut m = answer(id, "198.51.100.1:1");
        m.class = Class::Error;
        m.attributes = vec![Attribute::ErrorCode {
            code: 420,
            reason: "Unknown Attribute".into(),
        }];
        assert!(tx.handle_message(t0, server(), &m));
        assert_eq!(
            tx.outcome(),
            Some(&Err(StunError::ErrorResponse {
                server: server(),
                code: 420,
                reason: "Unknown Attribute".into()
            }))
        );
    }

    #[test]
    fn changed_source_expectations() {
        let t0 = Instant::now();
        let id = new_transaction_id();
        let t = Timing::for_deadline(Duration::from_secs(1));
        let mut both = Transaction::new(id, server(), vec![], Expect::ChangedIpAndPort, t, t0);
        assert!(
            !both.handle_message(t0, server(), &answer(id, "198.51.100.1:1")),
            "primary did not honour CHANGE-REQUEST"
        );
        assert!(!both.handle_message(
            t0,
            "203.0.113.4:3478".parse().unwrap(),
            &answer(id, "198.51.100.1:1")
        ));
        assert!(both.handle_message(
            t0,
            "203.0.113.4:3479".parse().unwrap(),
            &answer(id, "198.51.100.1:1")
        ));
        let mut port = Transaction::new(id, server(), vec![], Expect::ChangedPort, t, t0);
        assert!(!port.handle_message(
            t0,
            "203.0.113.4:3479".parse().unwrap(),
            &answer(id, "198.51.100.1:1")
        ));
        assert!(port.handle_message(
            t0,
            "203.0.113.3:3479".parse().unwrap(),
            &answer(id, "198.51.100.1:1")
        ));
    }
}

#[cfg(test)]
mod binding_tests {
    use super::*;

    /// A loopback responder that drops the first request (so a retransmission is
    /// needed) and answers the second with the sender's endpoint.
    #[test]
    fn binding_on_a_bound_socket_retransmits_and_returns_its_mapped_endpoint() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let addr = server.local_addr().unwrap();
        let responder = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let mut seen = 0;
            while let Ok((n, from)) = server.recv_from(&mut buf) {
                seen += 1;
                if seen == 1 {
                    continue;
                }
                let req = decode(&buf[..n]).unwrap();
                let resp = Message {
                    class: Class::Success,
                    method: codec::METHOD_BINDING,
                    transaction_id: req.transaction_id,
                    attributes: vec![Attribute::XorMappedAddress(from)],
                    padding: 0,
                };
                server.send_to(&resp.encode(), from).unwrap();
                return seen;
            }
            seen
        });
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mapped = binding(&client, addr, Duration::from_secs(2)).unwrap();
        assert_eq!(mapped, client.local_addr().unwrap());
        assert_eq!(responder.join().unwrap(), 2, "answered the retransmission");
        assert_eq!(
            client.read_timeout().unwrap(),
            None,
            "read timeout restored"
        );
    }

    #[test]
    fn binding_times_out_naming_the_server() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = binding(&client, addr, Duration::from_millis(100)).unwrap_err();
        assert_eq!(
            e,
            StunError::Timeout {
                server: addr,
                after: Duration::from_millis(100)
            }
        );
        assert!(e.to_string().contains(&addr.to_string()));
    }
}
