//! The QUIC side of the tunnel: one connection per corridor, streams for TCP, datagrams
//! for UDP, and the supervisor that decides when and how a run ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use plexus_plugin_sdk::{Corridor, PluginError, RunReport};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{
    Connection, ConnectionError, Endpoint, RecvStream, SendStream, TransportConfig, VarInt,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

use crate::proto::{self, OPEN_BAD, OPEN_OK, OPEN_UNKNOWN, OPEN_UNREACHABLE};
use crate::{auth, Config, Forward};

/// How often the supervisor looks at the stop conditions.
const TICK: Duration = Duration::from_millis(200);
/// Longest wait for a stream's opening header or its answer.
const HEADER_WAIT: Duration = Duration::from_secs(10);
/// Longest wait for the forwarded TCP service to accept.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// A UDP flow with no packet for this long is forgotten.
const FLOW_IDLE: Duration = Duration::from_secs(120);
/// Most UDP flows remembered per side.
const MAX_FLOWS: usize = 1024;
/// How long a clean close may take to reach the peer.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Application close codes.
const CLOSE_STOPPED: u32 = 0;

/// Counters of one run.
struct Stats {
    started: Instant,
    to_peer: AtomicU64,
    from_peer: AtomicU64,
    connections: AtomicU64,
    refused: AtomicU64,
    active: AtomicU64,
    datagrams_out: AtomicU64,
    datagrams_in: AtomicU64,
    dropped: AtomicU64,
    /// Milliseconds since `started` of the last byte or datagram carried.
    last_activity_ms: AtomicU64,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            started: Instant::now(),
            to_peer: AtomicU64::new(0),
            from_peer: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            active: AtomicU64::new(0),
            datagrams_out: AtomicU64::new(0),
            datagrams_in: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_activity_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_activity_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        if self.active.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        self.started.elapsed().saturating_sub(Duration::from_millis(
            self.last_activity_ms.load(Ordering::Relaxed),
        ))
    }

    fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "{:.1} s, {} bytes to the peer, {} bytes from the peer, {} TCP connections \
             ({} refused), {} datagrams out, {} in, {} dropped",
            self.started.elapsed().as_secs_f64(),
            g(&self.to_peer),
            g(&self.from_peer),
            g(&self.connections),
            g(&self.refused),
            g(&self.datagrams_out),
            g(&self.datagrams_in),
            g(&self.dropped),
        )
    }
}

/// Counts a connection as active while alive.
struct ActiveGuard(Arc<Stats>);

impl ActiveGuard {
    fn new(stats: &Arc<Stats>) -> ActiveGuard {
        stats.active.fetch_add(1, Ordering::Relaxed);
        stats.touch();
        ActiveGuard(stats.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Tasks of one run, aborted together when it ends.
type Tasks = Arc<Mutex<JoinSet<()>>>;

fn spawn(tasks: &Tasks, f: impl std::future::Future<Output = ()> + Send + 'static) {
    let mut t = tasks.lock().unwrap_or_else(|p| p.into_inner());
    // Reap finished tasks so a long run does not collect their results.
    while t.try_join_next().is_some() {}
    t.spawn(f);
}

/// The inviting side's local listeners, bound once and kept across corridors.
struct Listeners {
    tcp: Vec<(Arc<str>, Arc<TcpListener>)>,
    udp: Vec<(Arc<str>, Arc<UdpSocket>)>,
}

/// What lives as long as the plugin instance: the runtime and the listeners.
pub(crate) struct State {
    rt: tokio::runtime::Runtime,
    listeners: Option<Listeners>,
}

impl State {
    pub(crate) fn new() -> Result<State, PluginError> {
        // One thread: the work is mostly one QUIC connection's packet processing,
        // and handing it between threads costs more than it gains.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PluginError::Spawn(format!("tunnel: cannot start its runtime: {e}")))?;
        Ok(State {
            rt,
            listeners: None,
        })
    }

    pub(crate) fn run(
        &mut self,
        config: &Config,
        corridor: &Corridor,
    ) -> Result<RunReport, PluginError> {
        // Bound on the first inviting run and kept for the next ones.
        if !corridor.accepted && self.listeners.is_none() {
            self.listeners = Some(self.rt.block_on(bind_listeners(config))?);
        }
        let stats = Arc::new(Stats::new());
        let tasks: Tasks = Arc::new(Mutex::new(JoinSet::new()));
        let listeners = self.listeners.as_ref();
        let out = self
            .rt
            .block_on(run_corridor(config, corridor, listeners, &stats, &tasks));
        // Cancel and drop every task of this run now (their TCP connections are reset),
        // not at the next run: the one-thread runtime only runs while blocked on.
        // A cancelled task spawns nothing more, so a few rounds empty the set.
        self.rt.block_on(async {
            for _ in 0..8 {
                let mut set = std::mem::take(&mut *tasks.lock().unwrap_or_else(|p| p.into_inner()));
                if set.is_empty() {
                    break;
                }
                set.abort_all();
                while set.join_next().await.is_some() {}
            }
        });
        let role = if corridor.accepted {
            "acceptor"
        } else {
            "inviter"
        };
        match out {
            Ok(reason) => {
                let output = format!("tunnel ({role}) ended ({reason}): {}", stats.summary());
                log::info!("{output}");
                Ok(RunReport {
                    status: None,
                    output,
                })
            }
            Err(e) => {
                let summary = stats.summary();
                log::warn!("tunnel ({role}) failed: {e}; {summary}");
                Err(match e {
                    PluginError::Auth(m) => PluginError::Auth(format!("{m}; {summary}")),
                    PluginError::Unreachable(m) => {
                        PluginError::Unreachable(format!("{m}; {summary}"))
                    }
                    PluginError::Spawn(m) => PluginError::Spawn(m),
                    PluginError::Config(m) => PluginError::Config(m),
                    other => PluginError::Failed(format!("{}; {summary}", other.message())),
                })
            }
        }
    }
}

async fn bind_listeners(config: &Config) -> Result<Listeners, PluginError> {
    let mut l = Listeners {
        tcp: Vec::new(),
        udp: Vec::new(),
    };
    for s in &config.listen {
        let fail = |e: std::io::Error| {
            PluginError::Spawn(format!(
                "tunnel: cannot listen on {} ({}) for {}: {e}",
                s.on,
                if s.udp { "UDP" } else { "TCP" },
                s.name
            ))
        };
        let name: Arc<str> = s.name.as_str().into();
        if s.udp {
            l.udp
                .push((name, Arc::new(UdpSocket::bind(s.on).await.map_err(fail)?)));
        } else {
            l.tcp
                .push((name, Arc::new(TcpListener::bind(s.on).await.map_err(fail)?)));
        }
        log::info!(
            "tunnel: {} listens on {}{}",
            s.name,
            s.on,
            if s.udp { " (UDP)" } else { "" }
        );
    }
    Ok(l)
}

fn transport(config: &Config, server: bool) -> Result<Arc<TransportConfig>, PluginError> {
    let mut t = TransportConfig::default();
    t.keep_alive_interval(Some(config.keepalive));
    t.max_idle_timeout(Some(config.path_timeout.try_into().map_err(|_| {
        PluginError::Config("tunnel settings: path_timeout_secs is too long".into())
    })?));
    // Windows sized for a fast path with a few ms of RTT; memory stays bounded by them.
    t.stream_receive_window(VarInt::from_u32(8 << 20));
    t.receive_window(VarInt::from_u32(32 << 20));
    t.send_window(32 << 20);
    // Only the inviter opens streams; the acceptor's end accepts at most 256 at once.
    t.max_concurrent_bidi_streams(VarInt::from_u32(if server { 256 } else { 0 }));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.datagram_receive_buffer_size(Some(1 << 20));
    t.datagram_send_buffer_size(1 << 20);
    Ok(Arc::new(t))
}

fn describe(e: &ConnectionError, config: &Config) -> String {
    match e {
        ConnectionError::TimedOut => format!(
            "the peer stopped answering: nothing from it for {} s (path_timeout_secs); it \
             exited or the path through the NATs is gone",
            config.path_timeout.as_secs()
        ),
        ConnectionError::ApplicationClosed(c) => format!(
            "the peer closed the tunnel ({})",
            String::from_utf8_lossy(&c.reason)
        ),
        ConnectionError::Reset => "the peer reset the connection (it restarted?)".into(),
        other => format!("the QUIC connection failed: {other}"),
    }
}

/// One corridor: handshake, serve, supervise. `Ok` carries why it ended.
async fn run_corridor(
    config: &Config,
    corridor: &Corridor,
    listeners: Option<&Listeners>,
    stats: &Arc<Stats>,
    tasks: &Tasks,
) -> Result<String, PluginError> {
    let socket = std::net::UdpSocket::bind(corridor.inner).map_err(|e| {
        PluginError::Spawn(format!(
            "tunnel: cannot bind the corridor endpoint {}: {e}",
            corridor.inner
        ))
    })?;
    let key = &corridor.key.0;
    let peer = corridor.peer;
    let quic_err =
        |e: &dyn std::fmt::Display| PluginError::Failed(format!("tunnel: QUIC setup: {e}"));
    // Waiting for the other side's first packet: both sides start at about the same
    // time, right after the punch.
    let handshake_wait = config.path_timeout.max(Duration::from_secs(5));
    let lost = |m: String| {
        if config.persistent && !corridor.accepted {
            PluginError::Unreachable(format!("path lost: {m}"))
        } else {
            PluginError::Failed(m)
        }
    };
    let (endpoint, conn) = if corridor.accepted {
        let tls = auth::server_config(key).map_err(|e| quic_err(&e))?;
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| quic_err(&e))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(transport(config, true)?);
        let endpoint = Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| quic_err(&e))?;
        let deadline = tokio::time::Instant::now() + handshake_wait;
        let conn = loop {
            let incoming = match tokio::time::timeout_at(deadline, endpoint.accept()).await {
                Ok(Some(i)) => i,
                Ok(None) => return Err(PluginError::Failed("tunnel: endpoint closed".into())),
                Err(_) => {
                    return Err(lost(format!(
                        "the peer never connected within {} s",
                        handshake_wait.as_secs()
                    )))
                }
            };
            if incoming.remote_address() != peer {
                log::warn!(
                    "tunnel: ignored a QUIC connection from {} (the peer is {peer})",
                    incoming.remote_address()
                );
                incoming.ignore();
                continue;
            }
            match tokio::time::timeout_at(deadline, incoming).await {
                Ok(Ok(c)) => break c,
                Ok(Err(e)) => return Err(handshake_error(&e)),
                Err(_) => return Err(lost("the QUIC handshake did not finish in time".into())),
            }
        };
        // Later connection attempts on this endpoint are refused.
        let ep = endpoint.clone();
        spawn(tasks, async move {
            while let Some(i) = ep.accept().await {
                log::warn!(
                    "tunnel: refused a second QUIC connection from {}",
                    i.remote_address()
                );
                i.refuse();
            }
        });
        (endpoint, conn)
    } else {
        let tls = auth::client_config(key).map_err(|e| quic_err(&e))?;
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| quic_err(&e))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(transport(config, false)?);
        let endpoint = Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| quic_err(&e))?;
        let connecting = endpoint
            .connect_with(client, peer, auth::SERVER_NAME)
            .map_err(|e| quic_err(&e))?;
        let conn = match tokio::time::timeout(handshake_wait, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(ConnectionError::TimedOut)) | Err(_) => {
                return Err(lost(format!(
                    "the peer never answered the QUIC handshake within {} s",
                    handshake_wait.as_secs()
                )))
            }
            Ok(Err(e)) => return Err(handshake_error(&e)),
        };
        (endpoint, conn)
    };
    log::info!(
        "tunnel: authenticated QUIC connection with {} at {peer} ({})",
        corridor.peer_id,
        if corridor.accepted {
            "serving"
        } else {
            "listening"
        }
    );

    if corridor.accepted {
        let forwards: Arc<[Forward]> = config.forward.clone().into();
        let (c, f, s, t) = (conn.clone(), forwards.clone(), stats.clone(), tasks.clone());
        spawn(tasks, accept_streams(c, f, s, t));
        let (c, s, t) = (conn.clone(), stats.clone(), tasks.clone());
        spawn(tasks, serve_datagrams(c, forwards, s, t));
    } else {
        let l = listeners.expect("the inviting side bound its listeners");
        for (name, listener) in &l.tcp {
            let (c, n, li, s, t) = (
                conn.clone(),
                name.clone(),
                listener.clone(),
                stats.clone(),
                tasks.clone(),
            );
            spawn(tasks, listen_tcp(c, li, n, s, t));
        }
        if !l.udp.is_empty() {
            let socks: Vec<_> = l
                .udp
                .iter()
                .map(|(n, s)| (n.clone(), s.clone(), Arc::new(Mutex::new(Flows::default()))))
                .collect();
            let socks: Arc<[_]> = socks.into();
            for i in 0..socks.len() {
                let (c, s, st) = (conn.clone(), socks.clone(), stats.clone());
                spawn(tasks, listen_udp(c, s, i, st));
            }
            let (c, st) = (conn.clone(), stats.clone());
            spawn(tasks, datagrams_to_local(c, socks, st));
        }
    }

    // Supervise. A peer that closes the tunnel meant to (it stopped): that ends the
    // run. A path that dies (silence, a reset from a restarted peer) is an error, or
    // for a persistent inviter a request to be invited again, unless this side is
    // stopping anyway.
    let closed = conn.closed();
    tokio::pin!(closed);
    let local = loop {
        tokio::select! {
            e = &mut closed => {
                return match e {
                    ConnectionError::ApplicationClosed(_) => Ok(describe(&e, config)),
                    ConnectionError::LocallyClosed => Ok("closed".into()),
                    _ if config.stop_file.as_deref().is_some_and(|f| f.exists()) => {
                        Ok(format!("{}; stop_file appeared", describe(&e, config)))
                    }
                    e => Err(lost(describe(&e, config))),
                };
            }
            _ = tokio::time::sleep(TICK) => {}
        }
        if config.stop_file.as_deref().is_some_and(|f| f.exists()) {
            break "stop_file appeared";
        }
        if config.max.is_some_and(|m| stats.started.elapsed() >= m) {
            break "max_duration_secs reached";
        }
        if config.idle.is_some_and(|i| stats.idle_for() >= i) {
            break "idle_timeout_secs reached";
        }
    };
    conn.close(VarInt::from_u32(CLOSE_STOPPED), local.as_bytes());
    let _ = tokio::time::timeout(CLOSE_WAIT, endpoint.wait_idle()).await;
    Ok(local.into())
}

fn handshake_error(e: &ConnectionError) -> PluginError {
    let m = format!(
        "tunnel: the QUIC handshake with the peer failed: {e}. Both ends must prove this \
         session's key; a peer that cannot (another key, not the peer of the rendezvous) \
         is refused before any stream opens"
    );
    match e {
        ConnectionError::TransportError(_) | ConnectionError::ConnectionClosed(_) => {
            PluginError::Auth(m)
        }
        _ => PluginError::Failed(m),
    }
}

/// Copies `r` to `w` until EOF, counting bytes.
async fn pump<R, W>(r: &mut R, w: &mut W, count: &AtomicU64, stats: &Stats) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        w.write_all(&buf[..n]).await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
        stats.touch();
    }
}

/// Carries one TCP connection over one stream, both directions, until both ends
/// finished; a failure on either side resets the other (so a cut transfer is never
/// mistaken for a complete one).
async fn splice(tcp: TcpStream, mut send: SendStream, mut recv: RecvStream, stats: Arc<Stats>) {
    let _active = ActiveGuard::new(&stats);
    let (mut rd, mut wr) = tcp.into_split();
    let up = async {
        match pump(&mut rd, &mut send, &stats.to_peer, &stats).await {
            Ok(()) => {
                let _ = send.finish();
                Ok(())
            }
            Err(e) => {
                let _ = send.reset(VarInt::from_u32(1));
                Err(e)
            }
        }
    };
    let down = async {
        match pump(&mut recv, &mut wr, &stats.from_peer, &stats).await {
            Ok(()) => {
                let _ = wr.shutdown().await;
                Ok(())
            }
            Err(e) => Err(e),
        }
    };
    let r = tokio::try_join!(up, down);
    if let Err(e) = r {
        log::debug!("tunnel: connection cut: {e}");
        let _ = recv.stop(VarInt::from_u32(1));
        if let Ok(tcp) = rd.reunite(wr) {
            // Zero linger never blocks: the close becomes an immediate RST.
            #[allow(deprecated)]
            let _ = tcp.set_linger(Some(Duration::ZERO));
        }
    } else {
        // Wait until the peer has everything we sent before the stream is dropped.
        let _ = send.stopped().await;
    }
}

/// Acceptor: each stream the inviter opens names a service; connect it or refuse it.
async fn accept_streams(
    conn: Connection,
    forwards: Arc<[Forward]>,
    stats: Arc<Stats>,
    tasks: Tasks,
) {
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                log::debug!("tunnel: no more streams: {e}");
                return;
            }
        };
        let (f, s) = (forwards.clone(), stats.clone());
        spawn(&tasks, serve_stream(send, recv, f, s));
    }
}

async fn read_open(recv: &mut RecvStream) -> Result<String, String> {
    let mut first = [0u8; 2];
    recv.read_exact(&mut first)
        .await
        .map_err(|e| format!("reading the stream header: {e}"))?;
    let rest = proto::open_rest_len(first).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 2 + rest];
    buf[..2].copy_from_slice(&first);
    recv.read_exact(&mut buf[2..])
        .await
        .map_err(|e| format!("reading the stream header: {e}"))?;
    proto::decode_open(&buf)
        .map(str::to_string)
        .map_err(|e| e.to_string())
}

async fn serve_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    forwards: Arc<[Forward]>,
    stats: Arc<Stats>,
) {
    let name = match tokio::time::timeout(HEADER_WAIT, read_open(&mut recv)).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            log::warn!("tunnel: refused a stream: {e}");
            stats.refused.fetch_add(1, Ordering::Relaxed);
            let _ = send.write_all(&[OPEN_BAD]).await;
            let _ = send.finish();
            return;
        }
        Err(_) => {
            log::warn!(
                "tunnel: refused a stream: no header within {} s",
                HEADER_WAIT.as_secs()
            );
            stats.refused.fetch_add(1, Ordering::Relaxed);
            let _ = send.reset(VarInt::from_u32(1));
            return;
        }
    };
    let refuse = |code: u8, why: String| {
        log::warn!("tunnel: refused a connection to {name:?}: {why}");
        stats.refused.fetch_add(1, Ordering::Relaxed);
        code
    };
    let code = match forwards.iter().find(|f| f.name == name && !f.udp) {
        None => refuse(
            OPEN_UNKNOWN,
            "no TCP service of that name in `forward`".into(),
        ),
        Some(f) => match tokio::time::timeout(CONNECT_WAIT, TcpStream::connect(f.to)).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                if send.write_all(&[OPEN_OK]).await.is_err() {
                    return;
                }
                stats.connections.fetch_add(1, Ordering::Relaxed);
                log::info!("tunnel: connection to {name} ({})", f.to);
                splice(tcp, send, recv, stats).await;
                return;
            }
            Ok(Err(e)) => refuse(OPEN_UNREACHABLE, format!("{}: {e}", f.to)),
            Err(_) => refuse(OPEN_UNREACHABLE, format!("{}: no answer", f.to)),
        },
    };
    let _ = send.write_all(&[code]).await;
    let _ = send.finish();
    let _ = send.stopped().await;
}

/// Inviter: each local TCP connection becomes a stream to the peer.
async fn listen_tcp(
    conn: Connection,
    listener: Arc<TcpListener>,
    name: Arc<str>,
    stats: Arc<Stats>,
    tasks: Tasks,
) {
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                log::warn!("tunnel: accept on {name}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        log::debug!("tunnel: {name}: connection from {from}");
        let (c, n, s) = (conn.clone(), name.clone(), stats.clone());
        spawn(&tasks, open_stream(c, tcp, n, s));
    }
}

async fn open_stream(conn: Connection, tcp: TcpStream, name: Arc<str>, stats: Arc<Stats>) {
    let _ = tcp.set_nodelay(true);
    let (mut send, mut recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => {
            log::warn!("tunnel: {name}: cannot open a stream: {e}");
            return;
        }
    };
    if send.write_all(&proto::encode_open(&name)).await.is_err() {
        return;
    }
    let mut status = [0u8; 1];
    match tokio::time::timeout(HEADER_WAIT, recv.read_exact(&mut status)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            log::warn!("tunnel: {name}: no answer from the peer: {e}");
            return;
        }
        Err(_) => {
            log::warn!(
                "tunnel: {name}: no answer from the peer in {} s",
                HEADER_WAIT.as_secs()
            );
            return;
        }
    }
    match status[0] {
        OPEN_OK => {
            stats.connections.fetch_add(1, Ordering::Relaxed);
            splice(tcp, send, recv, stats).await;
        }
        code => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            let why = match code {
                OPEN_UNKNOWN => "the peer does not forward a TCP service of that name",
                OPEN_UNREACHABLE => "the peer's service did not accept the connection",
                _ => "the peer refused the stream",
            };
            log::warn!("tunnel: {name}: refused: {why}");
        }
    }
}

/// The inviting side's UDP flows of one service: client address ↔ flow id.
#[derive(Default)]
struct Flows {
    next: u32,
    by_addr: HashMap<SocketAddr, (u32, Instant)>,
    by_id: HashMap<u32, SocketAddr>,
}

impl Flows {
    fn id_for(&mut self, addr: SocketAddr) -> Option<u32> {
        let now = Instant::now();
        if let Some((id, seen)) = self.by_addr.get_mut(&addr) {
            *seen = now;
            return Some(*id);
        }
        if self.by_addr.len() >= MAX_FLOWS {
            self.by_addr
                .retain(|_, (_, seen)| now.duration_since(*seen) < FLOW_IDLE);
            let keep: std::collections::HashSet<u32> = self.by_addr.values().map(|v| v.0).collect();
            self.by_id.retain(|id, _| keep.contains(id));
            if self.by_addr.len() >= MAX_FLOWS {
                return None;
            }
        }
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        self.by_addr.insert(addr, (id, now));
        self.by_id.insert(id, addr);
        Some(id)
    }
}

type UdpService = (Arc<str>, Arc<UdpSocket>, Arc<Mutex<Flows>>);

/// Inviter: packets from local UDP clients become datagrams.
async fn listen_udp(conn: Connection, socks: Arc<[UdpService]>, i: usize, stats: Arc<Stats>) {
    let (name, sock, flows) = &socks[i];
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                log::debug!("tunnel: {name}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let id = flows.lock().unwrap_or_else(|p| p.into_inner()).id_for(from);
        let Some(id) = id else {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        send_datagram(&conn, name, id, &buf[..n], &stats);
    }
}

fn send_datagram(conn: &Connection, name: &str, flow: u32, payload: &[u8], stats: &Stats) {
    match conn.send_datagram(Bytes::from(proto::encode_datagram(name, flow, payload))) {
        Ok(()) => {
            stats.datagrams_out.fetch_add(1, Ordering::Relaxed);
            stats.touch();
        }
        Err(e) => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            log::debug!(
                "tunnel: {name}: dropped a {}-byte packet: {e} (largest now {:?})",
                payload.len(),
                conn.max_datagram_size()
                    .map(|m| m.saturating_sub(proto::datagram_overhead(name)))
            );
        }
    }
}

/// Inviter: datagrams from the peer go back to the local client of their flow.
async fn datagrams_to_local(conn: Connection, socks: Arc<[UdpService]>, stats: Arc<Stats>) {
    loop {
        let d = match conn.read_datagram().await {
            Ok(d) => d,
            Err(_) => return,
        };
        let Ok((name, flow, payload)) = proto::decode_datagram(&d) else {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Some((_, sock, flows)) = socks.iter().find(|s| &*s.0 == name) else {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let to = flows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .get(&flow)
            .copied();
        match to {
            Some(to) => {
                stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
                stats.touch();
                let _ = sock.send_to(payload, to).await;
            }
            None => {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The acceptor's UDP flows: (service, flow id) → socket connected to the service.
type PeerFlows = HashMap<(String, u32), Arc<UdpSocket>>;

/// Acceptor: datagrams name a UDP service and a flow; each flow gets its own socket
/// connected to the service, whose answers go back as datagrams of that flow.
async fn serve_datagrams(
    conn: Connection,
    forwards: Arc<[Forward]>,
    stats: Arc<Stats>,
    tasks: Tasks,
) {
    let flows: Arc<Mutex<PeerFlows>> = Arc::default();
    let mut warned_unknown = false;
    loop {
        let d = match conn.read_datagram().await {
            Ok(d) => d,
            Err(_) => return,
        };
        let (name, flow, payload) = match proto::decode_datagram(&d) {
            Ok(x) => x,
            Err(e) => {
                log::debug!("tunnel: dropped a datagram: {e}");
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let Some(f) = forwards.iter().find(|f| f.name == name && f.udp) else {
            if !warned_unknown {
                log::warn!("tunnel: dropped datagrams for {name:?}: no UDP service of that name in `forward`");
                warned_unknown = true;
            }
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        stats.touch();
        let key = (name.to_string(), flow);
        let existing = flows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let sock = match existing {
            Some(s) => s,
            None => {
                if flows.lock().unwrap_or_else(|p| p.into_inner()).len() >= MAX_FLOWS {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let any: SocketAddr = if f.to.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                }
                .parse()
                .expect("literal");
                let sock = match UdpSocket::bind(any).await {
                    Ok(s) => s,
                    Err(e) => {
                        log::warn!("tunnel: {name}: cannot open a UDP socket: {e}");
                        continue;
                    }
                };
                if let Err(e) = sock.connect(f.to).await {
                    log::warn!("tunnel: {name}: {}: {e}", f.to);
                    continue;
                }
                let sock = Arc::new(sock);
                flows
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.clone(), sock.clone());
                let (c, s, st, fl, n) = (
                    conn.clone(),
                    sock.clone(),
                    stats.clone(),
                    flows.clone(),
                    f.name.clone(),
                );
                spawn(&tasks, async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(Ok(n_read)) =
                        tokio::time::timeout(FLOW_IDLE, s.recv(&mut buf)).await
                    {
                        send_datagram(&c, &n, flow, &buf[..n_read], &st);
                    }
                    fl.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                });
                sock
            }
        };
        let _ = sock.send(payload).await;
    }
}
