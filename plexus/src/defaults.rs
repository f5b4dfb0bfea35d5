//! Every built-in default, in one table: the profile loader, the command line and the
//! settings constructors (`EmailSettings::new`, `SessionSettings`) all read them here,
//! so a default cannot differ between a profile, a flag and code.
//!
//! A leaf module: the mediators and the session use it without depending on the profile.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::punch::hops::PunchHops;

/// STUN server port when none is given (RFC 8489).
pub const STUN_PORT: u16 = 3478;
/// Local address the corridor is punched from: any interface, any port.
pub const BIND: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
/// TTL of the acceptor's first punch: probe the own NAT.
pub const PUNCH_HOPS: PunchHops = PunchHops::Auto;

/// Per-probe STUN deadline: 3 sends inside it on a LAN-to-Internet path.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_millis(400);
/// Waiting for the peer's rendezvous message (an inviter; an acceptor waits forever).
pub const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(300);
/// Router port mapping: each protocol's exchange (PCP, NAT-PMP, UPnP-IGD) and the whole
/// `plexus nat` probe (the three run in parallel).
pub const PORTMAP_TIMEOUT: Duration = Duration::from_millis(1000);
/// Router port mapping in a session (a symmetric side asking for its corridor port):
/// each protocol's exchange. Shorter than `plexus nat`'s, as every session of a symmetric
/// side without a mapping router waits it out (UPnP's SSDP search gets no answer); a
/// router that maps answers within tens of milliseconds.
pub const PORTMAP_SESSION_TIMEOUT: Duration = Duration::from_millis(300);
/// Router port mapping: the lease asked for (renewed at half of it while held).
pub const PORTMAP_LEASE: Duration = Duration::from_secs(600);
/// The UDP handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(10_000);

/// Sockets the hard side of a birthday pair opens (port prediction).
pub const BIRTHDAY_SOCKETS: u16 = 256;
/// Most probes the easy side of a birthday pair sends.
pub const BIRTHDAY_PROBES: u32 = 2048;
/// Probes per second of the easy side.
pub const BIRTHDAY_RATE: u32 = 400;

/// How old a rendezvous message may be.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(600);
/// Accept mode: most corridors running at once.
pub const MAX_CORRIDORS: usize = 32;

/// SMTP submission port with implicit TLS.
pub const SMTP_IMPLICIT_TLS_PORT: u16 = 465;
/// SMTP submission port with STARTTLS.
pub const SMTP_STARTTLS_PORT: u16 = 587;
/// IMAPS port.
pub const IMAP_PORT: u16 = 993;
/// Mail folder watched for rendezvous mail.
pub const MAIL_FOLDER: &str = "INBOX";
/// Polling interval when the IMAP server has no IDLE.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Where the mail password is read from when flags introduce e-mail and name no source.
pub const MAIL_PASSWORD_ENV: &str = "PLEXUS_EMAIL_PASSWORD";

/// How long an inviter with paths of both families, once one is proven, waits for a more
/// preferred family's (IPv6) before taking it: about two round trips on a long path, so
/// IPv6 wins whenever both work, and IPv4 alone costs at most this much more.
pub const FAMILY_GRACE: Duration = Duration::from_millis(100);

/// How long an inviter, once one address family's discovery and STUN binding are done,
/// waits for the other family's: families normally finish within a round trip of each
/// other, and a broken one (a route into nowhere) would otherwise cost its whole retry
/// budget (seconds) on every session.
pub const FAMILY_SETUP_GRACE: Duration = Duration::from_millis(1000);
