//! Waiting on the rendezvous channel: what opens, what is refused, what is acknowledged.

use super::*;

/// Wait for a message that opens and that `want` takes.
/// Everything else the mediator hands us is acknowledged: refused (left or quarantined)
/// when it fails to open, consumed when it opened but is not what this session waits
/// for (a stale accept, say — it is authentic, and replay protection already remembers
/// it).
pub(super) fn wait_for<T>(
    peers: &mut [Peer<'_>],
    mediator: &mut dyn Mediator,
    want: impl Fn(Message) -> Option<T>,
    timeout: Option<Duration>,
    keepalive: &[(&UdpSocket, SocketAddr)],
) -> Result<(usize, T), SessionError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut next_keepalive = Instant::now() + KEEPALIVE_EVERY;
    let mut backoff = RECEIVE_BACKOFF_START;
    loop {
        let now = Instant::now();
        if now >= next_keepalive && !keepalive.is_empty() {
            // Keep the NAT mappings (one per family) that went into our message alive.
            for (socket, server) in keepalive {
                if let Err(e) = stun::binding(socket, *server, Duration::from_secs(2)) {
                    debug!("keepalive binding via {server}: {e}");
                }
            }
            next_keepalive = Instant::now() + KEEPALIVE_EVERY;
        }
        let mut slice = KEEPALIVE_EVERY;
        if let Some(d) = deadline {
            if now >= d {
                return Err(SessionError::RendezvousTimeout(timeout.unwrap_or_default()));
            }
            slice = slice.min(d - now);
        }
        let incoming = match mediator.receive(slice) {
            Ok(Some(incoming)) => {
                backoff = RECEIVE_BACKOFF_START;
                incoming
            }
            Ok(None) => continue,
            // Only wrong credentials or settings end a waiting side. Anything else
            // (the channel dropped, a server or plugin answering something odd, local
            // I/O trouble) may pass, and an always-on acceptor must outlive it: wait
            // with a backoff and try again.
            Err(e @ (MediatorError::Auth(_) | MediatorError::Config(_))) => return Err(e.into()),
            Err(e) => {
                let pause = deadline.map_or(backoff, |d| {
                    backoff.min(d.saturating_duration_since(Instant::now()))
                });
                warn!("{e}; trying again in {} ms", pause.as_millis());
                std::thread::sleep(pause);
                backoff = (backoff * 2).min(RECEIVE_BACKOFF_MAX);
                continue;
            }
        };
        match open_from(peers, &incoming.from, &incoming.sealed) {
            Err(e) => {
                warn!(
                    "refused a rendezvous message from {} ({}): {e}",
                    incoming.from, incoming.id
                );
                acknowledge(mediator, &incoming.id, Outcome::Rejected);
            }
            Ok((i, msg)) => {
                let (kind, from, session) =
                    (msg.kind(), msg.body().from.clone(), msg.body().session);
                acknowledge(mediator, &incoming.id, Outcome::Handled);
                match want(msg) {
                    Some(wanted) => return Ok((i, wanted)),
                    None => info!(
                        "ignoring a {} from {from} for session {} (not the one awaited)",
                        kind.as_str(),
                        session.to_hex()
                    ),
                }
            }
        }
    }
}

/// Acknowledge a message. Failing to only costs the cleanup: the message stays where it
/// is and is refused as a replay if it is read again; wrong credentials or settings
/// show up again at the next receive, which ends the wait.
pub(super) fn acknowledge(mediator: &mut dyn Mediator, id: &str, outcome: Outcome) {
    if let Err(e) = mediator.acknowledge(id, outcome) {
        warn!("could not acknowledge message {id} ({e}); it stays in place");
    }
}

/// A peer this side talks to: its envelope (pinned certificate, replay state) and its
/// address on the mediator's channel.
pub struct Peer<'a> {
    /// Seals to and opens from this peer.
    pub envelope: &'a mut Envelope,
    /// The peer's address on the channel (mail address, plugin address).
    pub address: String,
}

/// Open `sealed` with the envelope of the peer the channel says sent it; when the
/// channel's sender matches no peer (or to be safe, when that peer's envelope refuses
/// it), the other peers' envelopes are tried: the signature, not the channel address,
/// decides who sent it. The first error is reported, being the most telling one.
pub(super) fn open_from(
    peers: &mut [Peer<'_>],
    from: &str,
    sealed: &[u8],
) -> Result<(usize, Message), OpenError> {
    let (mut order, rest): (Vec<usize>, Vec<usize>) =
        (0..peers.len()).partition(|&i| peers[i].address.eq_ignore_ascii_case(from));
    order.extend(rest);
    let mut first_err = None;
    for i in order {
        match peers[i].envelope.open(sealed, unix_now()) {
            Ok(m) => return Ok((i, m)),
            // Only "another sender" means "maybe another peer's": anything else (stale,
            // replayed, tampered) is final for this message.
            Err(e @ (OpenError::WrongSigner { .. } | OpenError::SenderMismatch { .. })) => {
                first_err.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(first_err.unwrap_or_else(|| OpenError::NotSmime("no peer is configured".into())))
}
