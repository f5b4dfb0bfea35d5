//! How far the punch packet must go: just past the own NAT, and no further.
//!
//! The acceptor's punch must open its own NAT toward the inviter but die before the
//! inviter's NAT (a packet arriving there unasked can make that NAT pick a new mapping,
//! and the corridor fails). We probe toward a target that is *not* the peer (the STUN
//! server) with TTL 1, 2, 3… on the very UDP socket and read the ICMP time-exceeded
//! answers from the socket's error queue (`IP_RECVERR`, `MSG_ERRQUEUE`): no raw sockets,
//! no privileges. The first hop that answers from a public address is the first router
//! past the own NAT(s); punching with that TTL makes the packet die there.

use std::fmt;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// TTL used when no hop answered at all. 2 is the smallest TTL that passes one NAT and
/// what a single home NAT needs; a larger guess (the original's 7) reaches the peer's
/// NAT on short paths and breaks port-restricted pairs silently, which is worse than a
/// punch that falls short. The user can always set a number.
pub const FALLBACK_TTL: u8 = 2;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PunchHops {
    /// Probe and choose (the default).
    #[default]
    Auto,
    /// Use this TTL (1–255) as given.
    Fixed(u8),
}

impl fmt::Display for PunchHops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PunchHops::Auto => f.write_str("auto"),
            PunchHops::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for PunchHops {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(PunchHops::Auto);
        }
        match s.parse::<u8>() {
            Ok(n) if n >= 1 => Ok(PunchHops::Fixed(n)),
            _ => Err(format!(
                "punch hops {s:?}: expected `auto` or a TTL between 1 and 255"
            )),
        }
    }
}

/// An address a public-internet router could have. The lab's TEST-NETs
/// (192.0.2/24, 198.51.100/24, 203.0.113/24) count as public on purpose.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Choose the punch TTL from probe observations `(ttl, address that answered)`:
/// - the smallest TTL whose answer came from a public address (the first router past
///   the own NAT, or the target itself when no router lies between);
/// - else, when only private hops answered, one past the deepest of them;
/// - else [`FALLBACK_TTL`].
pub fn choose_punch_ttl(observations: &[(u8, IpAddr)]) -> u8 {
    if let Some(ttl) = observations
        .iter()
        .filter(|(_, ip)| is_public(*ip))
        .map(|(t, _)| *t)
        .min()
    {
        return ttl;
    }
    match observations.iter().map(|(t, _)| *t).max() {
        Some(t) => t.saturating_add(1),
        None => FALLBACK_TTL,
    }
}

/// Whether this side is behind a NAT at all: a mapped address equal to one of the
/// host's own addresses means no NAT, and then no punch is sent.
pub fn needs_punch(mapped: IpAddr, local: &[IpAddr]) -> bool {
    !local.contains(&mapped)
}

/// [`needs_punch`] against this host's interface addresses.
pub fn behind_nat(mapped: IpAddr) -> io::Result<bool> {
    Ok(needs_punch(mapped, &local_addresses()?))
}

/// The host's interface addresses (getifaddrs).
pub fn local_addresses() -> io::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family tells its real type.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as libc::c_int;
            if family == libc::AF_INET {
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Send `bytes` to `dest` with IP TTL `ttl`, then put the socket's TTL back.
pub fn send_with_ttl(
    socket: &UdpSocket,
    dest: SocketAddr,
    bytes: &[u8],
    ttl: u8,
) -> io::Result<usize> {
    let saved = socket.ttl()?;
    socket.set_ttl(u32::from(ttl))?;
    let sent = socket.send_to(bytes, dest);
    let restored = socket.set_ttl(saved);
    let n = sent?;
    restored?;
    Ok(n)
}

/// Limits of the hop probe.
#[derive(Debug, Clone)]
pub struct HopsConfig {
    /// Highest TTL probed.
    pub max_ttl: u8,
    /// How long to wait for the answer to one probe.
    pub per_probe: Duration,
}

impl Default for HopsConfig {
    fn default() -> Self {
        HopsConfig {
            max_ttl: 8,
            per_probe: Duration::from_millis(250),
        }
    }
}

/// One ICMP error read from the error queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpReport {
    /// ICMP type (11 time exceeded, 3 destination unreachable).
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// Who sent the ICMP message (`SO_EE_OFFENDER`).
    pub offender: Option<Ipv4Addr>,
}

const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_DEST_UNREACH: u8 = 3;
const PROBE_MAGIC: &[u8; 4] = b"PLXP";

/// Decode the payload of an `IP_RECVERR` control message: a `sock_extended_err`
/// followed by the offender's `sockaddr_in`. `None` unless it is an ICMP report.
pub fn parse_extended_err(data: &[u8]) -> Option<IcmpReport> {
    let ee_len = mem::size_of::<libc::sock_extended_err>();
    if data.len() < ee_len {
        return None;
    }
    // Layout (linux/errqueue.h): u32 errno, u8 origin, u8 type, u8 code, u8 pad, ...
    let origin = data[4];
    if origin != libc::SO_EE_ORIGIN_ICMP {
        return None;
    }
    let offender = data
        .get(ee_len..ee_len + mem::size_of::<libc::sockaddr_in>())
        .and_then(|sa| {
            let family = u16::from_ne_bytes([sa[0], sa[1]]);
            (family == libc::AF_INET as u16).then(|| Ipv4Addr::new(sa[4], sa[5], sa[6], sa[7]))
        });
    Some(IcmpReport {
        icmp_type: data[5],
        icmp_code: data[6],
        offender,
    })
}

/// Turns `IP_RECVERR` on for the probe and back off afterwards, so the socket's later
/// users see ordinary errors again.
struct RecvErrGuard<'a>(&'a UdpSocket);

fn set_recverr(socket: &UdpSocket, on: bool) -> io::Result<()> {
    let v: libc::c_int = on.into();
    // SAFETY: plain setsockopt on a valid fd with an int option.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_IP,
            libc::IP_RECVERR,
            &v as *const libc::c_int as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Drop for RecvErrGuard<'_> {
    fn drop(&mut self) {
        while recv_err(self.0).ok().flatten().is_some() {}
        let _ = set_recverr(self.0, false);
    }
}

/// Read one message from the error queue without blocking: the probe TTL it quotes (from
/// our payload) and the report.
fn recv_err(socket: &UdpSocket) -> io::Result<Option<(Option<u8>, IcmpReport)>> {
    let mut payload = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let mut control = [0u64; 64];
    // SAFETY: zeroed msghdr/sockaddr_in are valid; every pointer set below outlives the call.
    let mut name: libc::sockaddr_in = unsafe { mem::zeroed() };
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = &mut name as *mut libc::sockaddr_in as *mut libc::c_void;
    msg.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = mem::size_of_val(&control) as _;
    // SAFETY: msg describes valid buffers.
    let n = unsafe {
        libc::recvmsg(
            socket.as_raw_fd(),
            &mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(e)
        };
    }
    let n = n as usize;
    let probe_ttl = (n >= 5 && &payload[..4] == PROBE_MAGIC).then_some(payload[4]);
    let mut report = None;
    // SAFETY: CMSG_* walk the control buffer the kernel filled, bounded by msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_IP && c.cmsg_type == libc::IP_RECVERR {
                let data = libc::CMSG_DATA(cmsg);
                let len = c.cmsg_len as usize - (data as usize - cmsg as usize);
                report = parse_extended_err(std::slice::from_raw_parts(data, len));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Some((
        probe_ttl,
        report.unwrap_or(IcmpReport {
            icmp_type: 0,
            icmp_code: 0,
            offender: None,
        }),
    )))
}

fn wait_readable(socket: &UdpSocket, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(r > 0)
}

/// Probe toward `target` (never the peer: the probes must not open a mapping toward
/// it) with rising TTLs on `socket` and return the observations `(ttl, responder)`:
/// ICMP time-exceeded offenders, and the target itself when it answers (port
/// unreachable, or any datagram from it). Stops at the first public responder.
/// Bounded by `max_ttl × per_probe`. IPv4 only; IPv6 targets give no observations.
pub fn probe_hops(
    socket: &UdpSocket,
    target: SocketAddr,
    config: &HopsConfig,
) -> io::Result<Vec<(u8, IpAddr)>> {
    let mut obs = Vec::new();
    let SocketAddr::V4(target4) = target else {
        return Ok(obs);
    };
    set_recverr(socket, true)?;
    let guard = RecvErrGuard(socket);
    let mut buf = [0u8; 1500];
    'ttls: for ttl in 1..=config.max_ttl {
        let mut probe = PROBE_MAGIC.to_vec();
        probe.push(ttl);
        // A send can fail with an error queued by an earlier probe; that is not fatal.
        if let Err(e) = send_with_ttl(socket, target, &probe, ttl) {
            log::debug!("hop probe ttl {ttl}: send failed: {e}");
        }
        let until = Instant::now() + config.per_probe;
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            if !wait_readable(socket, until - now)? {
                continue;
            }
            while let Some((quoted, rep)) = recv_err(socket)? {
                let Some(off) = rep.offender else { continue };
                let at = quoted.unwrap_or(ttl);
                match rep.icmp_type {
                    ICMP_TIME_EXCEEDED => obs.push((at, IpAddr::V4(off))),
                    ICMP_DEST_UNREACH => obs.push((at, IpAddr::V4(off))),
                    _ => continue,
                }
                log::debug!("hop probe ttl {at}: ICMP type {} from {off}", rep.icmp_type);
                if is_public(IpAddr::V4(off)) && at == ttl {
                    break 'ttls;
                }
            }
            // A datagram from the target itself (a STUN server answering garbage, say).
            match socket_recv_nowait(socket, &mut buf) {
                Some(from) if from.ip() == IpAddr::V4(*target4.ip()) => {
                    obs.push((ttl, from.ip()));
                    break 'ttls;
                }
                _ => {}
            }
            if obs.iter().any(|(t, _)| *t == ttl) {
                break;
            }
        }
    }
    drop(guard);
    Ok(obs)
}

fn socket_recv_nowait(socket: &UdpSocket, buf: &mut [u8]) -> Option<SocketAddr> {
    // SAFETY: recvfrom with MSG_DONTWAIT into a valid buffer.
    let mut name: libc::sockaddr_in = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let n = unsafe {
        libc::recvfrom(
            socket.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_DONTWAIT,
            &mut name as *mut libc::sockaddr_in as *mut libc::sockaddr,
            &mut len,
        )
    };
    if n < 0 || name.sin_family != libc::AF_INET as libc::sa_family_t {
        return None;
    }
    Some(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)),
        u16::from_be(name.sin_port),
    )))
}

/// The punch TTL to use: a user's number as given; otherwise probe toward `target`
/// and apply [`choose_punch_ttl`].
pub fn discover_punch_ttl(
    socket: &UdpSocket,
    target: SocketAddr,
    hops: PunchHops,
    config: &HopsConfig,
) -> io::Result<u8> {
    match hops {
        PunchHops::Fixed(n) => Ok(n),
        PunchHops::Auto => {
            let obs = probe_hops(socket, target, config)?;
            let ttl = choose_punch_ttl(&obs);
            log::info!("punch hops: {ttl} (probe answers: {obs:?})");
            Ok(ttl)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_addresses() {
        for p in [
            "203.0.113.1",
            "198.51.100.7",
            "192.0.2.1",
            "8.8.8.8",
            "2001:db8::1",
        ] {
            assert!(is_public(ip(p)), "{p}");
        }
        for p in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.1.1",
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "fd00::1",
            "fe80::1",
            "::1",
        ] {
            assert!(!is_public(ip(p)), "{p}");
        }
        assert!(is_public(ip("100.128.0.1")));
        assert!(is_public(ip("172.32.0.1")));
    }

    #[test]
    fn choose_first_public_hop() {
        // Home NAT, then the ISP's router.
        assert_eq!(
            choose_punch_ttl(&[(1, ip("192.168.1.1")), (2, ip("203.0.113.1"))]),
            2
        );
        // Home NAT behind a CGNAT: two private hops first.
        assert_eq!(
            choose_punch_ttl(&[
                (1, ip("192.168.1.1")),
                (2, ip("100.64.0.1")),
                (3, ip("198.51.100.1"))
            ]),
            3
        );
        // Observations out of order: smallest public TTL wins.
        assert_eq!(
            choose_punch_ttl(&[
                (4, ip("198.51.100.9")),
                (3, ip("198.51.100.1")),
                (1, ip("10.0.0.1"))
            ]),
            3
        );
        // Only private hops answered: one past the deepest.
        assert_eq!(
            choose_punch_ttl(&[(1, ip("10.0.0.1")), (2, ip("100.64.1.1"))]),
            3
        );
        // Nothing answered.
        assert_eq!(choose_punch_ttl(&[]), FALLBACK_TTL);
    }

    #[test]
    fn punch_hops_parse() {
        assert_eq!("auto".parse::<PunchHops>(), Ok(PunchHops::Auto));
        assert_eq!("7".parse::<PunchHops>(), Ok(PunchHops::Fixed(7)));
        assert!("0".parse::<PunchHops>().is_err());
        assert!("256".parse::<PunchHops>().is_err());
        assert!("-1".parse::<PunchHops>().is_err());
        assert_eq!(PunchHops::Fixed(3).to_string(), "3");
    }

    #[test]
    fn no_nat_no_punch() {
        let local = [ip("127.0.0.1"), ip("203.0.113.5")];
        assert!(!needs_punch(ip("203.0.113.5"), &local));
        assert!(needs_punch(ip("198.51.100.2"), &local));
        // Loopback is always one of ours; 192.0.2.255 is never assigned here.
        assert!(local_addresses().unwrap().contains(&ip("127.0.0.1")));
        assert!(!behind_nat(ip("127.0.0.1")).unwrap());
        assert!(behind_nat(ip("192.0.2.255")).unwrap());
    }

    #[test]
    fn parse_errqueue_payload() {
        let ee_len = mem::size_of::<libc::sock_extended_err>();
        let mut d = vec![0u8; ee_len + mem::size_of::<libc::sockaddr_in>()];
        d[0..4].copy_from_slice(&(libc::EHOSTUNREACH as u32).to_ne_bytes());
        d[4] = libc::SO_EE_ORIGIN_ICMP;
        d[5] = 11;
        d[6] = 0;
        d[ee_len..ee_len + 2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        d[ee_len + 4..ee_len + 8].copy_from_slice(&[198, 51, 100, 1]);
        assert_eq!(
            parse_extended_err(&d),
            Some(IcmpReport {
                icmp_type: 11,
                icmp_code: 0,
                offender: Some(Ipv4Addr::new(198, 51, 100, 1))
            })
        );
        // Local origin (not ICMP) and short buffers are not reports.
        let mut local = d.clone();
        local[4] = 1;
        assert_eq!(parse_extended_err(&local), None);
        assert_eq!(parse_extended_err(&d[..4]), None);
        // No offender address attached.
        assert_eq!(parse_extended_err(&d[..ee_len]).unwrap().offender, None);
    }

    #[test]
    fn send_with_ttl_restores_default() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = a.ttl().unwrap();
        send_with_ttl(&a, b.local_addr().unwrap(), b"x", 3).unwrap();
        assert_eq!(a.ttl().unwrap(), before);
        let mut buf = [0u8; 4];
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(b.recv_from(&mut buf).unwrap().0, 1);
    }

    #[test]
    fn probe_over_loopback_reaches_target() {
        // On loopback the target is reached at TTL 1; with no listener it answers
        // port-unreachable from 127.0.0.1, which is not public: no public hop, one past.
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = closed.local_addr().unwrap();
        drop(closed);
        let before = s.ttl().unwrap();
        let cfg = HopsConfig {
            max_ttl: 2,
            per_probe: Duration::from_millis(200),
        };
        let obs = probe_hops(&s, target, &cfg).unwrap();
        assert!(
            obs.iter().any(|(t, a)| *t == 1 && *a == ip("127.0.0.1")),
            "{obs:?}"
        );
        assert_eq!(s.ttl().unwrap(), before);
        // IP_RECVERR is off again: the socket still works normally.
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(b"ok", peer.local_addr().unwrap()).unwrap();
    }
}

/// Real hop probes across network namespaces with masquerading routers. They need root
/// (as the project's test command runs) and skip otherwise, like the lab tests. Every
/// namespace is prefixed `crd-` and removed afterwards; traffic never leaves them.
#[cfg(test)]
mod netns {
    use super::*;
    use crate::punch::testnet::{in_netns, ip, nft, root, Chain};
    use std::process::Command;

    /// `host → nat… → router… → target`. Link `i` joins node `i` and node `i+1`; the
    /// first `nat_nets.len()` links use those private /30s (host side `.2`, router side
    /// `.1`), the rest public /30s of 198.51.100.0/24. Node `i` (1 ≤ i ≤ nats) masquerades
    /// out of its right link. Returns the chain, the host namespace and the target.
    fn build(tag: &str, nat_nets: &[&str], routers: usize) -> (Chain, String, Ipv4Addr) {
        let pid = std::process::id() % 100_000;
        let k = nat_nets.len();
        let mut names = vec![format!("crd-{tag}{pid}-h")];
        names.extend((0..k).map(|i| format!("crd-{tag}{pid}-n{i}")));
        names.extend((0..routers).map(|i| format!("crd-{tag}{pid}-r{i}")));
        names.push(format!("crd-{tag}{pid}-t"));
        let chain = Chain {
            names: names.clone(),
        };
        for n in &names {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(std::process::Stdio::null())
                .status();
            ip(&format!("netns add {n}"));
            ip(&format!("-n {n} link set lo up"));
            for kv in ["net.ipv4.icmp_ratelimit=0", "net.ipv4.ip_forward=1"] {
                let st = Command::new("ip")
                    .args(["netns", "exec", n, "sysctl", "-qw", kv])
                    .status()
                    .unwrap();
                assert!(st.success());
            }
        }
        let addrs = |i: usize| -> (String, String) {
            if i < k {
                (format!("{}.2", nat_nets[i]), format!("{}.1", nat_nets[i]))
            } else {
                let base = 4 * (i - k) as u8;
                (
                    format!("198.51.100.{}", base + 1),
                    format!("198.51.100.{}", base + 2),
                )
            }
        };
        let links = names.len() - 1;
        for i in 0..links {
            let (a, b) = (&names[i], &names[i + 1]);
            let (left, right) = addrs(i);
            ip(&format!(
                "-n {a} link add r{i} type veth peer name l{i} netns {b}"
            ));
            ip(&format!("-n {a} addr add {left}/30 dev r{i}"));
            ip(&format!("-n {b} addr add {right}/30 dev l{i}"));
            ip(&format!("-n {a} link set r{i} up"));
            ip(&format!("-n {b} link set l{i} up"));
            ip(&format!("-n {a} route add default via {right}"));
        }
        for (i, n) in names.iter().enumerate().take(k + 1).skip(1) {
            nft(
                n,
                &format!(
                    "table ip crd {{\n chain post {{\n  type nat hook postrouting priority 100;\n  \
                     oifname \"r{i}\" masquerade\n }}\n}}\n"
                ),
            );
        }
        // Public nodes past the first need a way back to the last NAT's public /30.
        for (j, n) in names.iter().enumerate().skip(k + 2) {
            let (via, _) = addrs(j - 1);
            ip(&format!("-n {n} route add 198.51.100.0/30 via {via}"));
        }
        let target = addrs(links - 1).1.parse().unwrap();
        (chain, names[0].clone(), target)
    }

    fn probe(host: &str, target: Ipv4Addr) -> (Vec<(u8, IpAddr)>, u8) {
        in_netns(host, move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            let cfg = HopsConfig {
                max_ttl: 6,
                per_probe: Duration::from_millis(300),
            };
            // Port 9 (discard): nobody listens in the target namespace, so the target
            // itself answers port-unreachable when a probe reaches it.
            let obs = probe_hops(&s, SocketAddr::from((target, 9)), &cfg).unwrap();
            let ttl = choose_punch_ttl(&obs);
            eprintln!("probe toward {target}: {obs:?} -> punch TTL {ttl}");
            (obs, ttl)
        })
    }

    #[test]
    fn netns_one_nat_no_extra_router() {
        if !root() {
            eprintln!("SKIP: needs root for network namespaces");
            return;
        }
        let (_chain, host, target) = build("a", &["10.77.0"], 0);
        let (obs, ttl) = probe(&host, target);
        // TTL 1 dies at the NAT, which answers from its private LAN address; TTL 2
        // reaches the target, which answers port-unreachable from a public address.
        assert_eq!(obs[0], (1, IpAddr::from([10, 77, 0, 1])), "{obs:?}");
        assert_eq!(ttl, 2, "{obs:?}");
    }

    #[test]
    fn netns_one_nat_two_routers() {
        if !root() {
            eprintln!("SKIP: needs root for network namespaces");
            return;
        }
        let (_chain, host, target) = build("b", &["10.78.0"], 2);
        let (obs, ttl) = probe(&host, target);
        // TTL 2 dies at the first public router, the one right past the NAT.
        assert!(
            obs.contains(&(2, IpAddr::from([198, 51, 100, 2]))),
            "{obs:?}"
        );
        assert_eq!(ttl, 2, "{obs:?}");
    }

    #[test]
    fn netns_double_nat_needs_three() {
        if !root() {
            eprintln!("SKIP: needs root for network namespaces");
            return;
        }
        // Home NAT (10.79.0/30 inside) behind a carrier-grade NAT (100.64.7/30 inside).
        let (_chain, host, target) = build("c", &["10.79.0", "100.64.7"], 1);
        let (obs, ttl) = probe(&host, target);
        assert!(obs.contains(&(2, IpAddr::from([100, 64, 7, 1]))), "{obs:?}");
        assert_eq!(ttl, 3, "{obs:?}");
    }
}
