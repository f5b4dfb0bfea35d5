//! A small RFC 5780 server on loopback that plays a port-restricted NAT: it reports a mapped endpoint on another loopback
//! address (so the host looks NATed and the hairpin probe stays on loopback), the
//! same one from every server address (endpoint-independent mapping), and never
//! answers a CHANGE-REQUEST (the filter drops what comes from elsewhere).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::nat::DiscoverConfig;
use crate::stun::codec::{self, Attribute, Class, Message};

const HOST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const ALT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Where the "NAT" maps the host's sockets to (nothing listens there).
const MAPPED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// The fake server; stops and joins its threads when dropped.
pub struct FilteringServer {
    /// The primary address (give it as the STUN server).
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FilteringServer {
    /// Bind the three sockets and start answering.
    pub fn start() -> FilteringServer {
        // The alternate address must use the primary port too (test II): retry on the
        // rare clash with a port in use on 127.0.0.2.
        let socks = (0..20)
            .find_map(|_| {
                let p = UdpSocket::bind((HOST, 0)).ok()?;
                let port = p.local_addr().ok()?.port();
                let a1 = UdpSocket::bind((ALT, port)).ok()?;
                let a2 = UdpSocket::bind((ALT, 0)).ok()?;
                Some([p, a1, a2])
            })
            .expect("three loopback UDP sockets");
        let other = socks[2].local_addr().unwrap();
        FilteringServer::serve_on(socks.into(), other, Some(IpAddr::V4(MAPPED)))
    }

    /// The IPv6 case: a public address behind a stateful firewall, on `[::1]`. It
    /// reports each request's true source (no NAT), gives another port of `[::1]` as
    /// OTHER-ADDRESS (loopback has one IPv6 address, so test II meets the primary
    /// socket again), and never answers a CHANGE-REQUEST (the firewall drops it).
    /// `None` where the host has no IPv6 loopback.
    pub fn start_v6() -> Option<FilteringServer> {
        let p = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).ok()?;
        let a = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).ok()?;
        let other = a.local_addr().ok()?;
        Some(FilteringServer::serve_on(vec![p, a], other, None))
    }

    fn serve_on(
        socks: Vec<UdpSocket>,
        other: SocketAddr,
        mapped: Option<IpAddr>,
    ) -> FilteringServer {
        let addr = socks[0].local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let threads = socks
            .into_iter()
            .map(|s| {
                let stop = stop.clone();
                std::thread::spawn(move || serve(s, other, mapped, &stop))
            })
            .collect();
        FilteringServer {
            addr,
            stop,
            threads,
        }
    }
}

impl Drop for FilteringServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Answers Binding requests on `s` until `stop`: the mapped address is `mapped` with the
/// source port, or the source itself when `None`.
fn serve(s: UdpSocket, other: SocketAddr, mapped: Option<IpAddr>, stop: &AtomicBool) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(10)));
    let here = s.local_addr().unwrap();
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = s.recv_from(&mut buf) else {
            continue;
        };
        let Ok(req) = codec::decode(&buf[..n]) else {
            continue;
        };
        let changes = req
            .find(|a| match a {
                Attribute::ChangeRequest { ip, port } => Some(*ip || *port),
                _ => None,
            })
            .unwrap_or(false);
        if req.class != Class::Request || changes {
            continue;
        }
        let resp = Message {
            class: Class::Success,
            method: codec::METHOD_BINDING,
            transaction_id: req.transaction_id,
            attributes: vec![
                Attribute::XorMappedAddress(SocketAddr::new(
                    mapped.unwrap_or(from.ip()),
                    from.port(),
                )),
                Attribute::OtherAddress(other),
                Attribute::ResponseOrigin(here),
            ],
            padding: 0,
        };
        if let Some(bytes) = resp.encode_signed(None, true) {
            let _ = s.send_to(&bytes, from);
        }
    }
}

/// A discovery configuration against `server`, bound to loopback of its family.
pub fn config(server: SocketAddr, probe_timeout: Duration) -> DiscoverConfig {
    let lo = match server.ip() {
        IpAddr::V4(_) => IpAddr::V4(HOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    DiscoverConfig {
        servers: vec![server],
        bind: SocketAddr::new(lo, 0),
        probe_timeout,
    }
}
