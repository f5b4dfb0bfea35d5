//! The socket error queue (Linux `IP_RECVERR`/`IPV6_RECVERR`, `MSG_ERRQUEUE`): ICMP and
//! ICMPv6 errors about our own datagrams, readable without raw sockets or privileges.
//!
//! On an IPv6 socket the kernel reports both families through one control message,
//! (`SOL_IPV6`, `IPV6_RECVERR`): ICMPv6 errors with origin `SO_EE_ORIGIN_ICMP6` and a
//! `sockaddr_in6` offender, and (for IPv4-mapped destinations of a dual-stack socket)
//! ICMPv4 errors with origin `SO_EE_ORIGIN_ICMP` and the offender as an IPv4-mapped
//! `sockaddr_in6`. Both options must be on for both to be queued, so an IPv6 socket gets
//! both. Reports reach the cores in ICMPv4 numbering ([`ExtendedErr::v4_numbering`]),
//! so a core asks one question ("time exceeded?") whatever the family.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;

use crate::sansio::IcmpReport;

/// Which ICMP the kernel says the error came from (`ee_origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpVersion {
    /// ICMP for IPv4 (`SO_EE_ORIGIN_ICMP`).
    V4,
    /// ICMPv6 (`SO_EE_ORIGIN_ICMP6`).
    V6,
}

/// The fields of a `sock_extended_err` control message that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedErr {
    /// ICMP or ICMPv6: says how to read `icmp_type` and `icmp_code`.
    pub version: IcmpVersion,
    /// The type as its ICMP version numbers it (v4: 11 time exceeded, 3 destination
    /// unreachable; v6: 3 time exceeded, 1 destination unreachable).
    pub icmp_type: u8,
    /// The code, numbered likewise.
    pub icmp_code: u8,
    /// Who sent the ICMP message (`SO_EE_OFFENDER`); an IPv4-mapped IPv6 offender is
    /// given as the IPv4 address it maps.
    pub offender: Option<IpAddr>,
}

/// ICMPv4 numbers the cores use for every report.
const V4_DEST_UNREACH: u8 = 3;
const V4_TIME_EXCEEDED: u8 = 11;
const V4_PARAMETER_PROBLEM: u8 = 12;

impl ExtendedErr {
    /// The type and code in ICMPv4 numbering: ICMPv6 time exceeded (3) becomes 11 with
    /// its code, destination unreachable (1) becomes 3 with the nearest v4 code (no
    /// route 0 → net 0, address 3 → host 1, port 4 → port 3, administratively
    /// prohibited and the policy codes → 13, others → host 1), packet too big (2)
    /// becomes 3/4 (fragmentation needed), parameter problem (4) becomes 12. `None` for
    /// an ICMPv6 type with no such meaning.
    pub fn v4_numbering(&self) -> Option<(u8, u8)> {
        match self.version {
            IcmpVersion::V4 => Some((self.icmp_type, self.icmp_code)),
            IcmpVersion::V6 => match self.icmp_type {
                1 => Some((
                    V4_DEST_UNREACH,
                    match self.icmp_code {
                        0 => 0,
                        4 => 3,
                        1 | 5 | 6 => 13,
                        _ => 1,
                    },
                )),
                2 => Some((V4_DEST_UNREACH, 4)),
                3 => Some((V4_TIME_EXCEEDED, self.icmp_code.min(1))),
                4 => Some((V4_PARAMETER_PROBLEM, 0)),
                _ => None,
            },
        }
    }
}

/// Decode the payload of an `IP_RECVERR` or `IPV6_RECVERR` control message: a
/// `sock_extended_err` followed by the offender's `sockaddr_in` or `sockaddr_in6`.
/// `None` unless it is an ICMP or ICMPv6 report; a missing, short or foreign offender
/// address is `offender: None`.
pub fn parse_extended_err(data: &[u8]) -> Option<ExtendedErr> {
    let ee_len = mem::size_of::<libc::sock_extended_err>();
    if data.len() < ee_len {
        return None;
    }
    // Layout (linux/errqueue.h): u32 errno, u8 origin, u8 type, u8 code, u8 pad, ...
    let version = match data[4] {
        libc::SO_EE_ORIGIN_ICMP => IcmpVersion::V4,
        libc::SO_EE_ORIGIN_ICMP6 => IcmpVersion::V6,
        _ => return None,
    };
    Some(ExtendedErr {
        version,
        icmp_type: data[5],
        icmp_code: data[6],
        offender: offender(&data[ee_len..]),
    })
}

/// The address in a `sockaddr_in` or `sockaddr_in6` at the start of `sa`.
fn offender(sa: &[u8]) -> Option<IpAddr> {
    let family = u16::from_ne_bytes([*sa.first()?, *sa.get(1)?]);
    if family == libc::AF_INET as u16 {
        let a: [u8; 4] = sa.get(4..8)?.try_into().ok()?;
        Some(IpAddr::V4(Ipv4Addr::from(a)))
    } else if family == libc::AF_INET6 as u16 {
        // sin6_family, sin6_port, sin6_flowinfo, then the 16 address bytes.
        let a: [u8; 16] = sa.get(8..24)?.try_into().ok()?;
        let v6 = Ipv6Addr::from(a);
        Some(match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        })
    } else {
        None
    }
}

/// Walk a control buffer as `recvmsg` fills it (a sequence of `cmsghdr` + data, each
/// padded to the alignment of `size_t`) and decode its `IP_RECVERR`/`IPV6_RECVERR`
/// message (the last one, when there are several). Every length is checked against
/// the buffer, so odd or truncated headers end the walk instead of reading past it.
pub fn parse_errqueue_control(control: &[u8]) -> Option<ExtendedErr> {
    let hdr = mem::size_of::<libc::cmsghdr>();
    // SAFETY: CMSG_LEN only computes a length.
    let data_at = unsafe { libc::CMSG_LEN(0) } as usize;
    let align = mem::size_of::<usize>();
    let mut at = 0usize;
    let mut found = None;
    while control.len().saturating_sub(at) >= hdr {
        // SAFETY: `hdr` bytes from `at` are in bounds (checked above); cmsghdr is plain
        // integers, and read_unaligned has no alignment requirement.
        let c: libc::cmsghdr =
            unsafe { std::ptr::read_unaligned(control[at..].as_ptr().cast::<libc::cmsghdr>()) };
        let len = c.cmsg_len as usize;
        if len < data_at || len > control.len() - at {
            break;
        }
        let data = &control[at + data_at..at + len];
        if (c.cmsg_level, c.cmsg_type) == (libc::SOL_IP, libc::IP_RECVERR)
            || (c.cmsg_level, c.cmsg_type) == (libc::SOL_IPV6, libc::IPV6_RECVERR)
        {
            found = parse_extended_err(data).or(found);
        }
        // Next header: this one's length rounded up to the alignment.
        match len.checked_next_multiple_of(align) {
            Some(next) => at += next,
            None => break,
        }
    }
    found
}

fn set_int_opt(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: plain setsockopt on a valid fd with an int option.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
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

/// Turn the error queue on or off. An IPv6 socket gets `IPV6_RECVERR` for ICMPv6 and
/// `IP_RECVERR` for what it sends to IPv4-mapped addresses (the kernel queues each
/// family's errors only under its own option); the second may fail on an IPv6-only
/// socket, which never sends IPv4 anyway.
fn set_recverr(socket: &UdpSocket, v6: bool, on: bool) -> io::Result<()> {
    if v6 {
        set_int_opt(socket, libc::SOL_IPV6, libc::IPV6_RECVERR, on.into())?;
        let _ = set_int_opt(socket, libc::SOL_IP, libc::IP_RECVERR, on.into());
        Ok(())
    } else {
        set_int_opt(socket, libc::SOL_IP, libc::IP_RECVERR, on.into())
    }
}

/// The error queue on while this lives; on drop it is emptied and turned off again, so
/// the socket's later users see ordinary errors.
pub(super) struct RecvErr<'a> {
    socket: &'a UdpSocket,
    v6: bool,
}

impl<'a> RecvErr<'a> {
    pub(super) fn on(socket: &'a UdpSocket) -> io::Result<RecvErr<'a>> {
        let v6 = socket.local_addr()?.is_ipv6();
        set_recverr(socket, v6, true)?;
        Ok(RecvErr { socket, v6 })
    }
}

impl Drop for RecvErr<'_> {
    fn drop(&mut self) {
        // Bounded: the queue holds what arrived so far, and a socket buffer's worth.
        for _ in 0..1024 {
            if recv(self.socket).ok().flatten().is_none() {
                break;
            }
        }
        let _ = set_recverr(self.socket, self.v6, false);
    }
}

/// Read one message from the error queue without blocking: the report and the start of
/// the datagram it is about. `None` when the queue is empty.
pub(super) fn recv(socket: &UdpSocket) -> io::Result<Option<IcmpReport>> {
    let mut payload = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let mut control = [0u64; 64];
    // SAFETY: zeroed msghdr/sockaddr_storage are valid; every pointer set below outlives
    // the call.
    let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = &mut name as *mut libc::sockaddr_storage as *mut libc::c_void;
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
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
    let quoted = payload[..(n as usize).min(payload.len())].to_vec();
    // SAFETY: `control` is plain memory; the kernel filled its first msg_controllen bytes.
    let filled = unsafe {
        std::slice::from_raw_parts(
            control.as_ptr().cast::<u8>(),
            (msg.msg_controllen as usize).min(mem::size_of_val(&control)),
        )
    };
    let ee = parse_errqueue_control(filled);
    // A queued error that is not an ICMP report (a local one), or an ICMPv6 type with no
    // ICMPv4 meaning, carries type 0 and no offender: no core acts on it.
    let (icmp_type, icmp_code) = ee.and_then(|e| e.v4_numbering()).unwrap_or((0, 0));
    Ok(Some(IcmpReport {
        icmp_type,
        icmp_code,
        offender: ee
            .filter(|e| e.v4_numbering().is_some())
            .and_then(|e| e.offender),
        quoted,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EE: usize = mem::size_of::<libc::sock_extended_err>();

    /// A `sock_extended_err` with `origin`, `type`, `code`, followed by `offender`.
    fn ee(origin: u8, t: u8, code: u8, offender: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; EE];
        d[0..4].copy_from_slice(&(libc::EHOSTUNREACH as u32).to_ne_bytes());
        d[4] = origin;
        d[5] = t;
        d[6] = code;
        d.extend_from_slice(offender);
        d
    }

    fn sin(ip: [u8; 4]) -> Vec<u8> {
        let mut sa = vec![0u8; mem::size_of::<libc::sockaddr_in>()];
        sa[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        sa[4..8].copy_from_slice(&ip);
        sa
    }

    fn sin6(ip: &str) -> Vec<u8> {
        let mut sa = vec![0u8; mem::size_of::<libc::sockaddr_in6>()];
        sa[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        sa[2..4].copy_from_slice(&3478u16.to_be_bytes());
        sa[8..24].copy_from_slice(&ip.parse::<Ipv6Addr>().unwrap().octets());
        sa
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const V4: u8 = libc::SO_EE_ORIGIN_ICMP;
    const V6: u8 = libc::SO_EE_ORIGIN_ICMP6;

    /// What a payload parses to: version, type, code, offender.
    type Row = (IcmpVersion, u8, u8, Option<IpAddr>);
    /// A payload, what it parses to, and its ICMPv4 numbering.
    type Case = (Vec<u8>, Option<Row>, Option<(u8, u8)>);

    #[test]
    fn parse_errqueue_payload() {
        // (payload, expected parse, expected ICMPv4 numbering)
        let table: Vec<Case> = vec![
            // v4 time exceeded from a router.
            (
                ee(V4, 11, 0, &sin([198, 51, 100, 1])),
                Some((IcmpVersion::V4, 11, 0, Some(ip("198.51.100.1")))),
                Some((11, 0)),
            ),
            // v4 port unreachable.
            (
                ee(V4, 3, 3, &sin([127, 0, 0, 1])),
                Some((IcmpVersion::V4, 3, 3, Some(ip("127.0.0.1")))),
                Some((3, 3)),
            ),
            // ICMPv6 time exceeded (type 3) from a router: the same as v4's 11.
            (
                ee(V6, 3, 0, &sin6("2001:db8:ff:1::1")),
                Some((IcmpVersion::V6, 3, 0, Some(ip("2001:db8:ff:1::1")))),
                Some((11, 0)),
            ),
            // ICMPv6 port unreachable (1/4): v4's 3/3.
            (
                ee(V6, 1, 4, &sin6("::1")),
                Some((IcmpVersion::V6, 1, 4, Some(ip("::1")))),
                Some((3, 3)),
            ),
            // ICMPv6 no route (1/0), address unreachable (1/3), administratively
            // prohibited (1/1), reject route (1/6), an unknown code (1/9).
            (
                ee(V6, 1, 0, &sin6("2001:db8::1")),
                Some((IcmpVersion::V6, 1, 0, Some(ip("2001:db8::1")))),
                Some((3, 0)),
            ),
            (
                ee(V6, 1, 3, &sin6("2001:db8::1")),
                Some((IcmpVersion::V6, 1, 3, Some(ip("2001:db8::1")))),
                Some((3, 1)),
            ),
            (
                ee(V6, 1, 1, &sin6("2001:db8::1")),
                Some((IcmpVersion::V6, 1, 1, Some(ip("2001:db8::1")))),
                Some((3, 13)),
            ),
            (
                ee(V6, 1, 6, &sin6("2001:db8::1")),
                Some((IcmpVersion::V6, 1, 6, Some(ip("2001:db8::1")))),
                Some((3, 13)),
            ),
            (
                ee(V6, 1, 9, &sin6("2001:db8::1")),
                Some((IcmpVersion::V6, 1, 9, Some(ip("2001:db8::1")))),
                Some((3, 1)),
            ),
            // Packet too big, parameter problem, fragment reassembly time exceeded.
            (
                ee(V6, 2, 0, &sin6("2001:db8::1")),
                Some((IcmpVersion::V6, 2, 0, Some(ip("2001:db8::1")))),
                Some((3, 4)),
            ),
            (
                ee(V6, 4, 1, &sin6("2001:db8::1")),
                Some((IcmpVersion::V6, 4, 1, Some(ip("2001:db8::1")))),
                Some((12, 0)),
            ),
            (
                ee(V6, 3, 1, &sin6("2001:db8::1")),
                Some((IcmpVersion::V6, 3, 1, Some(ip("2001:db8::1")))),
                Some((11, 1)),
            ),
            // An ICMPv6 type with no v4 meaning (an echo reply) parses, maps to nothing.
            (
                ee(V6, 129, 0, &sin6("2001:db8::1")),
                Some((IcmpVersion::V6, 129, 0, Some(ip("2001:db8::1")))),
                None,
            ),
            // A v4 error on a dual-stack socket: ICMP origin, offender IPv4-mapped.
            (
                ee(V4, 11, 0, &sin6("::ffff:203.0.113.1")),
                Some((IcmpVersion::V4, 11, 0, Some(ip("203.0.113.1")))),
                Some((11, 0)),
            ),
            // Offender missing, truncated, or of an unknown family: no offender.
            (
                ee(V6, 3, 0, &[]),
                Some((IcmpVersion::V6, 3, 0, None)),
                Some((11, 0)),
            ),
            (
                ee(V6, 3, 0, &sin6("2001:db8::1")[..23]),
                Some((IcmpVersion::V6, 3, 0, None)),
                Some((11, 0)),
            ),
            (
                ee(V4, 11, 0, &sin([1, 2, 3, 4])[..7]),
                Some((IcmpVersion::V4, 11, 0, None)),
                Some((11, 0)),
            ),
            (
                ee(V4, 11, 0, &[1, 0, 0, 0, 9, 9, 9, 9]),
                Some((IcmpVersion::V4, 11, 0, None)),
                Some((11, 0)),
            ),
            // Local origin (1), the TX timestamp origins (4), garbage: not reports.
            (ee(1, 0, 0, &sin6("::1")), None, None),
            (ee(4, 3, 0, &sin6("::1")), None, None),
            (vec![0xff; 64], None, None),
            // Truncated before the end of sock_extended_err.
            (ee(V6, 3, 0, &[])[..EE - 1].to_vec(), None, None),
            (vec![], None, None),
        ];
        for (i, (data, want, v4)) in table.into_iter().enumerate() {
            let got = parse_extended_err(&data);
            let want = want.map(|(version, icmp_type, icmp_code, offender)| ExtendedErr {
                version,
                icmp_type,
                icmp_code,
                offender,
            });
            assert_eq!(got, want, "row {i}");
            assert_eq!(got.and_then(|e| e.v4_numbering()), v4, "row {i}");
        }
    }

    /// One control message as the kernel lays it out.
    fn cmsg(level: libc::c_int, ty: libc::c_int, data: &[u8]) -> Vec<u8> {
        // SAFETY: CMSG_LEN/CMSG_SPACE only compute lengths.
        let (len, space) = unsafe {
            (
                libc::CMSG_LEN(data.len() as u32) as usize,
                libc::CMSG_SPACE(data.len() as u32) as usize,
            )
        };
        let mut h: libc::cmsghdr = unsafe { mem::zeroed() };
        h.cmsg_len = len as _;
        h.cmsg_level = level;
        h.cmsg_type = ty;
        let mut out = vec![0u8; space];
        // SAFETY: `out` has room for a header; write_unaligned needs no alignment.
        unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast::<libc::cmsghdr>(), h) };
        let at = unsafe { libc::CMSG_LEN(0) } as usize;
        out[at..at + data.len()].copy_from_slice(data);
        out
    }

    #[test]
    fn parse_control_buffers() {
        let te6 = ee(V6, 3, 0, &sin6("2001:db8:ff:1::1"));
        let pu4 = ee(V4, 3, 3, &sin([192, 0, 2, 9]));
        let v6 = cmsg(libc::SOL_IPV6, libc::IPV6_RECVERR, &te6);
        let v4 = cmsg(libc::SOL_IP, libc::IP_RECVERR, &pu4);
        let other = cmsg(libc::SOL_IPV6, libc::IPV6_HOPLIMIT, &5i32.to_ne_bytes());
        let got = |b: &[u8]| parse_errqueue_control(b).map(|e| (e.icmp_type, e.offender));
        assert_eq!(got(&v6), Some((3, Some(ip("2001:db8:ff:1::1")))));
        assert_eq!(got(&v4), Some((3, Some(ip("192.0.2.9")))));
        // Another message first is skipped over.
        assert_eq!(
            got(&[other.clone(), v6.clone()].concat()),
            Some((3, Some(ip("2001:db8:ff:1::1"))))
        );
        assert_eq!(got(&other), None);
        assert_eq!(got(&[]), None);
        // A truncated buffer, a length past the end, a length shorter than the header,
        // a huge length: the walk ends without reading out of bounds.
        assert_eq!(got(&v6[..v6.len() - 8]), None);
        for bad_len in [v6.len() + 1, 3, usize::MAX] {
            let mut b = v6.clone();
            let mut h: libc::cmsghdr = unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) };
            h.cmsg_len = bad_len as _;
            unsafe { std::ptr::write_unaligned(b.as_mut_ptr().cast::<libc::cmsghdr>(), h) };
            assert_eq!(got(&b), None, "cmsg_len {bad_len}");
        }
        // Garbage after a good message does not undo it.
        assert_eq!(
            got(&[v6.clone(), vec![0xff; 40]].concat()),
            Some((3, Some(ip("2001:db8:ff:1::1"))))
        );
    }
}
