//! The socket error queue (Linux `IP_RECVERR`, `MSG_ERRQUEUE`): ICMP errors about our
//! own datagrams, readable without raw sockets or privileges.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;

use crate::sansio::IcmpReport;

/// The fields of a `sock_extended_err` control message that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedErr {
    /// ICMP type (11 time exceeded, 3 destination unreachable).
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// Who sent the ICMP message (`SO_EE_OFFENDER`).
    pub offender: Option<Ipv4Addr>,
}

/// Decode the payload of an `IP_RECVERR` control message: a `sock_extended_err`
/// followed by the offender's `sockaddr_in`. `None` unless it is an ICMP report.
pub fn parse_extended_err(data: &[u8]) -> Option<ExtendedErr> {
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
    Some(ExtendedErr {
        icmp_type: data[5],
        icmp_code: data[6],
        offender,
    })
}

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

/// `IP_RECVERR` on while this lives; on drop the queue is emptied and the option turned
/// off again, so the socket's later users see ordinary errors.
pub(super) struct RecvErr<'a>(&'a UdpSocket);

impl<'a> RecvErr<'a> {
    pub(super) fn on(socket: &'a UdpSocket) -> io::Result<RecvErr<'a>> {
        set_recverr(socket, true)?;
        Ok(RecvErr(socket))
    }
}

impl Drop for RecvErr<'_> {
    fn drop(&mut self) {
        while recv(self.0).ok().flatten().is_some() {}
        let _ = set_recverr(self.0, false);
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
    let quoted = payload[..(n as usize).min(payload.len())].to_vec();
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
    // A queued error that is not an ICMP report (a local one) carries no offender.
    let ee = report.unwrap_or(ExtendedErr {
        icmp_type: 0,
        icmp_code: 0,
        offender: None,
    });
    Ok(Some(IcmpReport {
        icmp_type: ee.icmp_type,
        icmp_code: ee.icmp_code,
        offender: ee.offender.map(IpAddr::V4),
        quoted,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Some(ExtendedErr {
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
}
