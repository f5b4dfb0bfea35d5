use std::collections::VecDeque;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use super::*;
use crate::sansio::{IcmpReport, Transmit};

fn loopback() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// Sends its transmits at the start, then reports every datagram and ICMP error it gets
/// as events until `want` of them arrived, or its own timer (`give_up`) runs out.
struct Script {
    sends: VecDeque<Transmit>,
    got: VecDeque<Got>,
    want: usize,
    seen: usize,
    give_up: Instant,
    icmp: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Datagram(usize, SocketAddr, Vec<u8>),
    Icmp(usize, u8, Vec<u8>),
}

impl Script {
    fn new(sends: Vec<Transmit>, want: usize, give_up: Duration) -> Script {
        Script {
            sends: sends.into(),
            got: VecDeque::new(),
            want,
            seen: 0,
            give_up: Instant::now() + give_up,
            icmp: false,
        }
    }
}

impl Core for Script {
    type Event = Got;
    fn handle_input(&mut self, _: Instant, socket: usize, from: SocketAddr, bytes: &[u8]) {
        self.seen += 1;
        self.got
            .push_back(Got::Datagram(socket, from, bytes.to_vec()));
    }
    fn handle_icmp(&mut self, _: Instant, socket: usize, r: &IcmpReport) {
        self.seen += 1;
        self.got
            .push_back(Got::Icmp(socket, r.icmp_type, r.quoted.clone()));
    }
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_transmit(&mut self, _: Instant) -> Option<Transmit> {
        self.sends.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        (self.seen < self.want && Instant::now() < self.give_up).then_some(self.give_up)
    }
    fn poll_event(&mut self) -> Option<Got> {
        self.got.pop_front()
    }
}

/// The same, with the error queue on; keeps every report whole.
struct IcmpScript(Script, Vec<IcmpReport>);

impl Core for IcmpScript {
    type Event = Got;
    const WANTS_ICMP: bool = true;
    fn handle_input(&mut self, now: Instant, socket: usize, from: SocketAddr, bytes: &[u8]) {
        self.0.handle_input(now, socket, from, bytes)
    }
    fn handle_icmp(&mut self, now: Instant, socket: usize, r: &IcmpReport) {
        self.0.icmp = true;
        self.1.push(r.clone());
        self.0.handle_icmp(now, socket, r)
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.0.handle_timeout(now)
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.0.poll_transmit(now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn poll_event(&mut self) -> Option<Got> {
        self.0.poll_event()
    }
}

fn collect<C: Core<Event = Got>>(
    driver: Driver<'_>,
    core: &mut C,
) -> (Result<Stop, DriveError>, Vec<Got>) {
    let mut got = Vec::new();
    let r = driver.run(core, |_, g, _| {
        got.push(g);
        ControlFlow::Continue(())
    });
    (r, got)
}

#[test]
fn send_with_ttl_restores_default() {
    let a = loopback();
    let b = loopback();
    let before = a.ttl().unwrap();
    send_with_ttl(&a, b.local_addr().unwrap(), b"x", 3).unwrap();
    assert_eq!(a.ttl().unwrap(), before);
    let mut buf = [0u8; 4];
    b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(b.recv_from(&mut buf).unwrap().0, 1);
}

#[test]
fn transmits_leave_from_the_socket_they_name_and_input_says_where_it_arrived() {
    let (a, b) = (loopback(), loopback());
    let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let ttl_before = a.ttl().unwrap();
    let sends = vec![
        Transmit::to(ba, b"from a".to_vec()),
        Transmit {
            socket: 1,
            dest: aa,
            payload: b"from b, low TTL".to_vec(),
            ttl: Some(2),
        },
    ];
    let mut core = Script::new(sends, 2, Duration::from_secs(10));
    let (r, mut got) = collect(Driver::new(&[&a, &b]), &mut core);
    assert_eq!(r.unwrap(), Stop::Finished);
    got.sort_by_key(|g| format!("{g:?}"));
    assert_eq!(
        got,
        vec![
            Got::Datagram(0, ba, b"from b, low TTL".to_vec()),
            Got::Datagram(1, aa, b"from a".to_vec()),
        ]
    );
    assert_eq!(b.ttl().unwrap(), ttl_before, "the TTL is per datagram");
    assert_eq!(a.read_timeout().unwrap(), None, "socket settings untouched");
}

#[test]
fn the_deadline_and_the_caller_stop_a_core_that_would_go_on() {
    let a = loopback();
    let mut core = Script::new(vec![], 1, Duration::from_secs(3600));
    let (r, got) = collect(
        Driver::new(&[&a]).deadline(Instant::now() + Duration::from_millis(50)),
        &mut core,
    );
    assert_eq!(r.unwrap(), Stop::Deadline);
    assert!(got.is_empty());
    // An event handler that breaks ends the run at once.
    let b = loopback();
    let sends = vec![Transmit::to(b.local_addr().unwrap(), b"x".to_vec())];
    let mut core = Script::new(sends, 5, Duration::from_secs(3600));
    let peer = std::thread::spawn(move || {
        let mut buf = [0u8; 8];
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (_, from) = b.recv_from(&mut buf).unwrap();
        b.send_to(b"answer", from).unwrap();
    });
    let r = Driver::new(&[&a]).run(&mut core, |_, _, _| ControlFlow::Break(()));
    assert_eq!(r.unwrap(), Stop::Stopped);
    peer.join().unwrap();
}

#[test]
fn a_failed_send_is_logged_or_fatal_as_asked_and_a_bad_socket_index_is_an_error() {
    let a = loopback();
    // An IPv6 destination from an IPv4 socket cannot be sent to.
    let v6: SocketAddr = "[::1]:9".parse().unwrap();
    let mut core = Script::new(vec![Transmit::to(v6, b"x".to_vec())], 1, Duration::ZERO);
    let (r, _) = collect(Driver::new(&[&a]), &mut core);
    assert_eq!(r.unwrap(), Stop::Finished, "a failed send is not fatal");
    let mut core = Script::new(vec![Transmit::to(v6, b"x".to_vec())], 1, Duration::ZERO);
    let (r, _) = collect(Driver::new(&[&a]).fatal_send_errors(), &mut core);
    let e = r.unwrap_err();
    assert_eq!(e.what, "sending");
    let mut bad = Transmit::to(a.local_addr().unwrap(), b"x".to_vec());
    bad.socket = 3;
    let mut core = Script::new(vec![bad], 1, Duration::from_secs(1));
    let (r, _) = collect(Driver::new(&[&a]), &mut core);
    let e = r.unwrap_err();
    assert!(e.to_string().contains("socket 3 of 1"), "{e}");
}

#[test]
fn icmp_errors_reach_a_core_that_wants_them_with_the_datagram_they_quote() {
    let a = loopback();
    let closed = loopback();
    let target = closed.local_addr().unwrap();
    drop(closed);
    let sends = vec![Transmit::to(target, b"PLXP\x01".to_vec())];
    let mut core = IcmpScript(Script::new(sends, 1, Duration::from_secs(5)), vec![]);
    let (r, got) = collect(Driver::new(&[&a]), &mut core);
    assert_eq!(r.unwrap(), Stop::Finished);
    assert!(core.0.icmp);
    assert_eq!(core.1[0].offender, Some(target.ip()));
    // Port unreachable (type 3), quoting our own payload.
    assert_eq!(got, vec![Got::Icmp(0, 3, b"PLXP\x01".to_vec())]);
    // The error queue is off again: the socket still sends and receives normally.
    let b = loopback();
    a.send_to(b"ok", b.local_addr().unwrap()).unwrap();
    b.send_to(b"back", a.local_addr().unwrap()).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(a.recv_from(&mut buf).unwrap().0, 4);
}

#[test]
fn a_core_without_icmp_sees_no_errors_from_unreachable_ports() {
    let a = loopback();
    let closed = loopback();
    let target = closed.local_addr().unwrap();
    drop(closed);
    let b = loopback();
    let sends = vec![
        Transmit::to(target, b"nobody".to_vec()),
        Transmit::to(b.local_addr().unwrap(), b"ping".to_vec()),
    ];
    let mut core = Script::new(sends, 1, Duration::from_secs(5));
    let peer = std::thread::spawn(move || {
        let mut buf = [0u8; 8];
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (_, from) = b.recv_from(&mut buf).unwrap();
        b.send_to(b"pong", from).unwrap();
    });
    let (r, got) = collect(Driver::new(&[&a]), &mut core);
    peer.join().unwrap();
    assert_eq!(r.unwrap(), Stop::Finished);
    assert!(
        matches!(&got[..], [Got::Datagram(0, _, p)] if p == b"pong"),
        "{got:?}"
    );
}

#[test]
fn the_route_to_loopback_leaves_from_loopback_and_it_is_one_of_ours() {
    let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert_eq!(route_ip(to).unwrap(), to.ip());
    assert!(local_addresses().unwrap().contains(&to.ip()));
}

fn loopback6() -> UdpSocket {
    UdpSocket::bind("[::1]:0").unwrap()
}

/// A socket on `[::]` that takes IPv4 too (IPv4-mapped addresses).
fn dual_stack() -> UdpSocket {
    let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None).unwrap();
    s.set_only_v6(false).unwrap();
    s.bind(&"[::]:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.into()
}

/// Receive one datagram on `s` and the TTL or hop limit it arrived with (the socket
/// must have `IP_RECVTTL` or `IPV6_RECVHOPLIMIT` on).
fn recv_with_hops(s: &UdpSocket) -> (Vec<u8>, Option<i32>) {
    let mut fds = [libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), 1, 2000) };
    assert_eq!(r, 1, "nothing arrived in 2 s");
    let mut payload = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: a zeroed msghdr is valid; the buffers outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg describes valid buffers.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    assert!(n >= 0, "{}", io::Error::last_os_error());
    let mut hops = None;
    // SAFETY: the kernel filled the control buffer; CMSG_* walk it within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let known = ((*c).cmsg_level, (*c).cmsg_type);
            if known == (libc::SOL_IP, libc::IP_TTL)
                || known == (libc::SOL_IPV6, libc::IPV6_HOPLIMIT)
            {
                hops = Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>()));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    (payload[..n as usize].to_vec(), hops)
}

fn hops_receiver(addr: &str) -> UdpSocket {
    let r = UdpSocket::bind(addr).unwrap();
    let sock = socket2::SockRef::from(&r);
    if r.local_addr().unwrap().is_ipv6() {
        sock.set_recv_hoplimit_v6(true).unwrap();
    } else {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with an int option on a valid fd.
        let r = unsafe {
            libc::setsockopt(
                r.as_raw_fd(),
                libc::SOL_IP,
                libc::IP_RECVTTL,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
    }
    r
}

#[test]
fn send_with_ttl_sets_and_restores_the_ipv6_hop_limit() {
    let a = loopback6();
    let b = hops_receiver("[::1]:0");
    let sock = socket2::SockRef::from(&a);
    let before = sock.unicast_hops_v6().unwrap();
    send_with_ttl(&a, b.local_addr().unwrap(), b"low", 3).unwrap();
    assert_eq!(recv_with_hops(&b), (b"low".to_vec(), Some(3)));
    assert_eq!(sock.unicast_hops_v6().unwrap(), before, "restored");
    a.send_to(b"normal", b.local_addr().unwrap()).unwrap();
    assert_eq!(
        recv_with_hops(&b),
        (b"normal".to_vec(), Some(before as i32))
    );
    // The driver's per-datagram TTL on an IPv6 socket is the hop limit.
    let sends = vec![Transmit {
        socket: 0,
        dest: b.local_addr().unwrap(),
        payload: b"driven".to_vec(),
        ttl: Some(5),
    }];
    let mut core = Script::new(sends, 0, Duration::ZERO);
    assert_eq!(
        collect(Driver::new(&[&a]), &mut core).0.unwrap(),
        Stop::Finished
    );
    assert_eq!(recv_with_hops(&b), (b"driven".to_vec(), Some(5)));
    assert_eq!(sock.unicast_hops_v6().unwrap(), before);
}

#[test]
fn send_with_ttl_on_a_dual_stack_socket_uses_the_ttl_for_ipv4_mapped() {
    // An IPv6 socket sending to an IPv4-mapped address sends IPv4: IP_TTL applies, and
    // the hop limit is untouched.
    let a = dual_stack();
    let b = hops_receiver("127.0.0.1:0");
    let mapped = SocketAddr::new(
        std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(),
        b.local_addr().unwrap().port(),
    );
    let sock = socket2::SockRef::from(&a);
    let (ttl, hops) = (a.ttl().unwrap(), sock.unicast_hops_v6().unwrap());
    send_with_ttl(&a, mapped, b"v4", 4).unwrap();
    assert_eq!(recv_with_hops(&b), (b"v4".to_vec(), Some(4)));
    send_with_ttl(&a, b.local_addr().unwrap(), b"plain v4", 6).unwrap();
    assert_eq!(recv_with_hops(&b), (b"plain v4".to_vec(), Some(6)));
    assert_eq!(
        (a.ttl().unwrap(), sock.unicast_hops_v6().unwrap()),
        (ttl, hops)
    );
}

fn closed_port(addr: &str) -> SocketAddr {
    let closed = UdpSocket::bind(addr).unwrap();
    closed.local_addr().unwrap()
}

#[test]
fn icmpv6_errors_reach_a_core_through_the_ipv6_error_queue() {
    let a = loopback6();
    let target = closed_port("[::1]:0");
    let sends = vec![Transmit {
        socket: 0,
        dest: target,
        payload: b"PLXP\x01".to_vec(),
        ttl: Some(1),
    }];
    let mut core = IcmpScript(Script::new(sends, 1, Duration::from_secs(5)), vec![]);
    let (r, got) = collect(Driver::new(&[&a]), &mut core);
    assert_eq!(r.unwrap(), Stop::Finished);
    // ICMPv6 port unreachable (1/4), reported as the v4 kind (3/3), from ::1.
    assert_eq!(got, vec![Got::Icmp(0, 3, b"PLXP\x01".to_vec())]);
    assert_eq!(
        core.1,
        vec![IcmpReport {
            icmp_type: 3,
            icmp_code: 3,
            offender: Some(target.ip()),
            quoted: b"PLXP\x01".to_vec(),
        }]
    );
    // The error queue is off again: a later send to the closed port gives the plain
    // error on receive (or nothing), never a queued report, and data still flows.
    let b = loopback6();
    a.send_to(b"ok", b.local_addr().unwrap()).unwrap();
    b.send_to(b"back", a.local_addr().unwrap()).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(a.recv_from(&mut buf).unwrap().0, 4);
    assert!(errqueue::recv(&a).unwrap().is_none());
}

#[test]
fn a_dual_stack_socket_reports_both_families() {
    let a = dual_stack();
    let v6 = closed_port("[::1]:0");
    let v4 = closed_port("127.0.0.1:0");
    let mapped = SocketAddr::new(
        std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(),
        v4.port(),
    );
    // One run per destination: with the error queue on, the kernel also keeps the
    // error as the socket's pending error until the queue is read, and a send made
    // before that would fail with it.
    let mut got = Vec::new();
    for (dest, payload) in [(v6, "to v6"), (mapped, "to mapped"), (v4, "to v4")] {
        let sends = vec![Transmit::to(dest, payload.as_bytes().to_vec())];
        let mut core = IcmpScript(Script::new(sends, 1, Duration::from_secs(5)), vec![]);
        let (r, _) = collect(Driver::new(&[&a]).fatal_send_errors(), &mut core);
        assert_eq!(r.unwrap(), Stop::Finished);
        got.extend(
            core.1
                .iter()
                .map(|r| (r.quoted.clone(), r.icmp_type, r.icmp_code, r.offender)),
        );
    }
    got.sort();
    // Port unreachable each time; the IPv4 offender as an IPv4 address, not mapped.
    assert_eq!(
        got,
        vec![
            (b"to mapped".to_vec(), 3, 3, Some(v4.ip())),
            (b"to v4".to_vec(), 3, 3, Some(v4.ip())),
            (b"to v6".to_vec(), 3, 3, Some(v6.ip())),
        ]
    );
}
