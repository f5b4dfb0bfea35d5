use std::collections::VecDeque;
use std::net::UdpSocket;

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

/// The same, with the error queue on.
struct IcmpScript(Script);

impl Core for IcmpScript {
    type Event = Got;
    const WANTS_ICMP: bool = true;
    fn handle_input(&mut self, now: Instant, socket: usize, from: SocketAddr, bytes: &[u8]) {
        self.0.handle_input(now, socket, from, bytes)
    }
    fn handle_icmp(&mut self, now: Instant, socket: usize, r: &IcmpReport) {
        self.0.icmp = true;
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
    let mut core = IcmpScript(Script::new(sends, 1, Duration::from_secs(5)));
    let (r, got) = collect(Driver::new(&[&a]), &mut core);
    assert_eq!(r.unwrap(), Stop::Finished);
    assert!(core.0.icmp);
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
