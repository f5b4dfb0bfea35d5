//! The accepting side: wait for invites, answer and punch each, run the corridors
//! (bounded, joined threads).

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// Builds a fresh executor for each accepted corridor (they may run concurrently).
pub type ExecutorFactory =
    Arc<dyn Fn() -> Result<Box<dyn Executor>, ExecError> + Send + Sync + 'static>;

/// Serve invitations: for each valid invite, punch, answer, handshake and run a fresh
/// executor in its own thread, then go back to waiting. With `once`, handle a single
/// invite and return its result; otherwise this returns only on an error (or when the
/// rendezvous timeout, if any, runs out), after the corridors still running have ended.
/// Refused or failed invitations are logged and the acceptor keeps waiting. `peers`
/// are the configured peers (one mediator serves them all; `settings.peer_address` is
/// not used here); `executors[i]` runs the corridors of `peers[i]`. At most
/// `settings.max_corridors` corridors run at once.
pub fn accept(
    settings: &SessionSettings,
    peers: &mut [Peer<'_>],
    mediator: &mut dyn Mediator,
    executors: &[ExecutorFactory],
    once: bool,
) -> Result<Finished, SessionError> {
    if peers.len() != executors.len() {
        return Err(SessionError::Settings(format!(
            "accept needs one executor per peer ({} peers, {} executors)",
            peers.len(),
            executors.len()
        )));
    }
    let listening = Listening::start(settings, peers, mediator)?;
    let mut corridors: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let result = loop {
        // Finished corridors are joined here, so the count below is of live ones.
        let (done, live): (Vec<_>, Vec<_>) = corridors.drain(..).partition(|h| h.is_finished());
        corridors = live;
        for h in done {
            let _ = h.join();
        }
        let next = match listening.next(settings, peers, mediator, once, corridors.len()) {
            Ok(Some(next)) => next,
            Ok(None) => continue,
            Err(e) => break Err(e),
        };
        let factory = executors[next.peer].clone();
        let run = move || -> Result<Finished, SessionError> {
            let connected = next.handshake()?;
            Ok(match factory() {
                Ok(mut ex) => connected.finish(ex.as_mut()),
                Err(e) => Finished {
                    corridor: connected.corridor,
                    timeline: connected.timeline,
                    exec: Err(e),
                },
            })
        };
        if once {
            break run();
        }
        let spawned = std::thread::Builder::new()
            .name("corridor".into())
            .spawn(move || {
                if let Err(e) = run() {
                    warn!("corridor failed: {e}");
                }
            });
        match spawned {
            Ok(h) => corridors.push(h),
            Err(e) => warn!("cannot start a thread for the corridor: {e}"),
        }
    };
    if !corridors.is_empty() {
        info!("waiting for {} running corridor(s) to end", corridors.len());
    }
    for h in corridors {
        let _ = h.join();
    }
    result
}

/// Wait for one valid invite from any of `peers`, answer it and punch: the path is
/// returned to the caller (no executor runs). A message that does not open (garbage,
/// tampered, stale, replayed, from a stranger) is logged and waited past; an authentic
/// invite that cannot be answered or punched (impossible endpoints, the accept could
/// not be sent, the handshake timed out) is returned as the error.
pub fn accept_one(
    settings: &SessionSettings,
    peers: &mut [Peer<'_>],
    mediator: &mut dyn Mediator,
) -> Result<Connected, SessionError> {
    let listening = Listening::start(settings, peers, mediator)?;
    loop {
        if let Some(next) = listening.next(settings, peers, mediator, true, 0)? {
            return next.handshake();
        }
    }
}

/// An acceptor that has measured its NAT and waits for invites.
pub(super) struct Listening {
    stun_server: SocketAddr,
    facts: NatFacts,
    started: Instant,
}

/// An invite answered and punched toward, its handshake still to run.
pub(super) struct Answered {
    peer: usize,
    prepared: Prepared,
    settings: SessionSettings,
    stun_server: SocketAddr,
    handshake_timeout: Duration,
    session_start: Instant,
    host_id: String,
    peer_id: String,
}

impl Listening {
    fn start(
        settings: &SessionSettings,
        peers: &[Peer<'_>],
        mediator: &dyn Mediator,
    ) -> Result<Listening, SessionError> {
        let stun_server = need_stun(settings)?;
        if peers.is_empty() {
            return Err(SessionError::Settings(
                "accept needs at least one peer".into(),
            ));
        }
        let report = discover(settings)?;
        let names: Vec<String> = peers
            .iter()
            .map(|p| p.envelope.peer_id().to_string())
            .collect();
        info!(
            "waiting for invites from {} via {}…",
            names.join(", "),
            mediator.name()
        );
        Ok(Listening {
            stun_server,
            facts: facts_of(&report),
            started: Instant::now(),
        })
    }

    /// The next invite answered: `Ok(None)` when one was refused or failed and the
    /// acceptor should wait on (with `once`, such a failure is returned instead).
    /// `running` corridors count against `max_corridors`.
    fn next(
        &self,
        settings: &SessionSettings,
        peers: &mut [Peer<'_>],
        mediator: &mut dyn Mediator,
        once: bool,
        running: usize,
    ) -> Result<Option<Answered>, SessionError> {
        let remaining = settings
            .rendezvous_timeout
            .map(|t| t.checked_sub(self.started.elapsed()).unwrap_or_default());
        let (who, invite) = wait_for(
            peers,
            mediator,
            |m| match m {
                Message::Invite(i) => Some(i),
                _ => None,
            },
            remaining,
            None,
        )?;
        let session_start = Instant::now();
        let give_up = |e: SessionError| {
            warn!("invite {} refused: {e}", invite.session.to_hex());
            if once {
                Err(e)
            } else {
                Ok(None)
            }
        };
        // An authentic invite that cannot be served is declined, sealed, so the inviter
        // ends at once with the reason instead of waiting out its timeout.
        if let Err(e) = check_endpoints(&invite) {
            decline(&mut peers[who], mediator, &invite, &e.to_string());
            return give_up(e);
        }
        if running >= settings.max_corridors.max(1) {
            let reason = format!(
                "the acceptor is busy: {running} corridors are running, the most it allows \
                 (max_corridors); invite again when one ends"
            );
            decline(&mut peers[who], mediator, &invite, &reason);
            return Ok(None);
        }
        info!(
            "invite from {} (session {}) at {:?}, NAT {}",
            invite.from,
            invite.session.to_hex(),
            invite.mapped,
            describe_facts(&invite.nat)
        );
        let peer = &mut peers[who];
        let prepared = match answer(
            settings,
            self.stun_server,
            peer,
            mediator,
            &invite,
            self.facts,
        ) {
            Ok(p) => p,
            Err(e) => return give_up(e),
        };
        Ok(Some(Answered {
            peer: who,
            prepared,
            settings: settings.clone(),
            stun_server: self.stun_server,
            handshake_timeout: settings.handshake_timeout,
            session_start,
            host_id: peer.envelope.host_id().to_string(),
            peer_id: peer.envelope.peer_id().to_string(),
        }))
    }
}

impl Answered {
    /// Run the handshake (re-punching, opening or probing as the plan says, while the
    /// accept travels) to the open corridor. With an allocation beside a direct plan,
    /// both paths are tried at once (the inviter falls back to the relay when its direct
    /// handshake fails); the first to connect ends the other.
    fn handshake(self) -> Result<Connected, SessionError> {
        let Prepared {
            socket,
            mapped,
            core,
            path,
            relay,
            mut timeline,
            mut keep,
        } = self.prepared;
        let t = Instant::now();
        // The inviter may try the direct path for a whole handshake timeout first.
        let deadline =
            Instant::now() + self.handshake_timeout * 2 + ACCEPT_DELIVERY + Duration::from_secs(3);
        let settings = &self.settings;
        let stun_server = self.stun_server;
        let direct =
            move |stop: &AtomicBool| -> Result<(UdpSocket, punch::Connected), SessionError> {
                match path {
                    Path::Punch(repunch) => {
                        let core = punch::Punching::new(core, repunch, Instant::now());
                        let mut core = punch::Stoppable::new(core, stop);
                        let c = punch::run_core(&[&socket], &mut core, deadline)
                            .map_err(SessionError::Punch)?;
                        Ok((socket, c))
                    }
                    Path::Hard { sockets, dest } => birthday_hard(
                        settings,
                        HardSide {
                            socket,
                            sockets,
                            dest,
                            stun_server,
                        },
                        core,
                        stop,
                        deadline,
                    ),
                    Path::Probe { target } => {
                        let c = birthday_easy(settings, &socket, target, core, stop, deadline)?;
                        Ok((socket, c))
                    }
                    Path::RelayOnly => Err(SessionError::Settings("no direct path planned".into())),
                }
            };
        let relayed = |mut r: RelayPath, stop: &AtomicBool| {
            match run_relayed(&mut r.alloc, r.core, stop, deadline) {
                Ok(c) => Ok((r.alloc, c)),
                Err(e) => {
                    // Not needed (the direct path won, or nothing did): free it on the
                    // server now rather than when its lifetime runs out.
                    if let Err(close) = r.alloc.close(RELAY_CLOSE_TIMEOUT) {
                        debug!("relay: deleting the unused allocation: {close}");
                    }
                    Err(e)
                }
            }
        };
        let won = match relay {
            None => Won::Direct(direct(&AtomicBool::new(false))?),
            Some(r) if r.only => Won::Relay(Box::new(relayed(r, &AtomicBool::new(false))?)),
            Some(r) => race(direct, |stop| relayed(r, stop))?,
        };
        let (socket, corridor) = match won {
            Won::Direct((socket, connected)) => {
                let corridor = Corridor {
                    inner: inner_endpoint(&socket, connected.peer),
                    outer: mapped,
                    peer: connected.peer,
                    host_id: self.host_id,
                    peer_id: self.peer_id,
                    key: connected.key,
                    accepted: true,
                };
                (socket, corridor)
            }
            Won::Relay(won) => {
                let (alloc, connected) = *won;
                info!(
                    "relayed through TURN at {}: the inviter is at {}",
                    alloc.relayed(),
                    connected.peer
                );
                let outer = alloc.relayed();
                let (socket, inner, forwarder) = relay_corridor(alloc, connected.peer)?;
                let corridor = Corridor {
                    inner,
                    outer,
                    peer: forwarder.local_addr(),
                    host_id: self.host_id,
                    peer_id: self.peer_id,
                    key: connected.key,
                    accepted: true,
                };
                keep._relay = Some(forwarder);
                (socket, corridor)
            }
        };
        timeline.handshake = t.elapsed();
        timeline.total = self.session_start.elapsed();
        Ok(Connected::opened(socket, corridor, timeline, keep))
    }
}

/// Which path connected first.
enum Won {
    Direct((UdpSocket, punch::Connected)),
    // Boxed: an allocation is large beside a socket.
    Relay(Box<(crate::relay::Allocation, punch::Connected)>),
}

/// Run both paths in threads; the first to connect stops the other (which then ends
/// within [`punch::Stoppable::TICK`]). Both failing returns the direct path's error.
fn race(
    direct: impl FnOnce(&AtomicBool) -> Result<(UdpSocket, punch::Connected), SessionError> + Send,
    relayed: impl FnOnce(&AtomicBool) -> Result<(crate::relay::Allocation, punch::Connected), SessionError>
        + Send,
) -> Result<Won, SessionError> {
    let stop_direct = AtomicBool::new(false);
    let stop_relay = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let d = scope.spawn(|| {
            let r = direct(&stop_direct);
            if r.is_ok() {
                stop_relay.store(true, Ordering::Relaxed);
            }
            r
        });
        let r = scope.spawn(|| {
            let r = relayed(&stop_relay);
            if r.is_ok() {
                stop_direct.store(true, Ordering::Relaxed);
            }
            r
        });
        let d = d
            .join()
            .unwrap_or(Err(SessionError::Panicked("the direct path")));
        let r = r
            .join()
            .unwrap_or(Err(SessionError::Panicked("the relayed path")));
        match (d, r) {
            (Ok(d), _) => Ok(Won::Direct(d)),
            (Err(_), Ok(r)) => Ok(Won::Relay(Box::new(r))),
            (Err(e), Err(_)) => Err(e),
        }
    })
}

/// The acceptor's side of a relayed path: its allocation and a handshake of its own.
pub(super) struct RelayPath {
    alloc: crate::relay::Allocation,
    core: Handshake,
    /// The plan is the relay alone (no direct path to try beside it).
    only: bool,
}

/// What the acceptor does toward the inviter while its accept travels.
pub(super) enum Path {
    /// The punch (low TTL, or full TTL for a hard acceptor), repeated until heard.
    Punch(Option<punch::Repunch>),
    /// Hard side of a birthday pair: openers from this many sockets toward `dest`.
    Hard {
        /// Sockets in all (the corridor socket is the first).
        sockets: u16,
        /// The inviter's public endpoint.
        dest: SocketAddr,
    },
    /// Easy side of a birthday pair: probes to random ports of `target`.
    Probe {
        /// The inviter's public address.
        target: IpAddr,
    },
    /// Nothing direct: the relay alone.
    RelayOnly,
}

/// An answered invite, ready for its handshake.
pub(super) struct Prepared {
    socket: UdpSocket,
    mapped: SocketAddr,
    core: Handshake,
    path: Path,
    relay: Option<RelayPath>,
    timeline: Timeline,
    keep: Keep,
}

/// The acceptor's part before the handshake: bind, binding, plan, punch, send the
/// accept (or the decline, when no method can connect the pair).
pub(super) fn answer(
    settings: &SessionSettings,
    stun_server: SocketAddr,
    peer: &mut Peer<'_>,
    mediator: &mut dyn Mediator,
    invite: &Invite,
    facts: NatFacts,
) -> Result<Prepared, SessionError> {
    let start = Instant::now();
    let Some(&inviter) = invite.mapped.first() else {
        return Err(SessionError::NoEndpoint);
    };
    // Bound and mapped first: a router port mapping changes this side's class.
    let (mut socket, mut mapped) = corridor_socket(settings, stun_server)?;
    let mut facts = facts;
    let router = router_mapping(settings, &mut socket, &mut facts, &mut mapped);
    let (policy, turn) = relay_offer(settings);
    let offer = pair::Offer {
        inviter_relay: invite.relay,
        acceptor_relay: policy,
        turn,
        birthday_sockets: settings.birthday_sockets,
    };
    let choice = match pair::choose(&invite.nat, &facts, &offer) {
        Ok(c) => c,
        Err(reason) => {
            decline(peer, mediator, invite, &reason);
            return Err(SessionError::NoMethod(reason));
        }
    };
    // The allocation goes into the accept, so the inviter needs no further round trip
    // to fall back on it. Without it, a relay-only plan is declined; a direct plan goes on.
    let alloc = if choice.allocate {
        match allocate_relay(settings, inviter.ip()) {
            Ok(a) => Some(a),
            Err(e) if choice.method == Method::Relay => {
                let reason = format!("the acceptor's TURN relay failed: {e}");
                decline(peer, mediator, invite, &reason);
                return Err(SessionError::NoMethod(reason));
            }
            Err(e) => {
                warn!("no relay to fall back on: {e}");
                None
            }
        }
    } else {
        None
    };
    info!(
        "plan for {} (NAT {}): {}",
        invite.from,
        describe_facts(&invite.nat),
        pair::describe(&choice.method)
    );
    let accept = Accept::new(
        invite,
        unix_now(),
        vec![mapped],
        local_endpoints(&socket),
        facts,
    )
    .and_then(|a| a.with_route(choice.method, policy, alloc.as_ref().map(|a| a.relayed())))
    .map_err(SessionError::Message)?;
    let acceptor_config = punch::Config {
        timeout: settings.handshake_timeout + ACCEPT_DELIVERY,
        ..handshake_config(settings)
    };
    let secrets = Secrets::from_rendezvous(invite, &accept);
    let mut core = Handshake::new(
        Role::Acceptor,
        &secrets,
        invite.session.0,
        candidates(invite, mapped),
        Instant::now(),
        acceptor_config.clone(),
    );
    // A handshake of its own for the relayed path (its own sequence window): the
    // inviter tries it after a failed direct handshake, so it waits that much longer.
    let relay = alloc.map(|alloc| RelayPath {
        alloc,
        core: Handshake::new(
            Role::Acceptor,
            &secrets,
            invite.session.0,
            Vec::new(),
            Instant::now(),
            punch::Config {
                timeout: acceptor_config.timeout + settings.handshake_timeout,
                ..acceptor_config
            },
        ),
        only: choice.method == Method::Relay,
    });
    let path = match choice.method {
        Method::Direct if facts.port_mapping.is_some() => {
            // The router forwards the mapped port: nothing to open. And the socket's
            // first packet must wait: it fixes the NAT's mapping of the port, which the
            // router's port-keeping rule may not have caught up with yet.
            info!("router mapping: no punch needed toward {inviter}");
            Path::Punch(None)
        }
        Method::Direct => {
            info!("punching toward {inviter}…");
            let ttl = punch::acceptor_punch(
                &socket,
                &mut core,
                inviter,
                mapped,
                settings.punch_hops,
                stun_server,
                &HopsConfig::default(),
            )
            .map_err(SessionError::Punch)?;
            Path::Punch(ttl.map(|ttl| punch::Repunch {
                dest: inviter,
                ttl,
                every: REPUNCH_EVERY,
            }))
        }
        Method::DirectFullTtl => {
            // Our NAT picks a new port toward the inviter, which only our packets can
            // tell it: they must arrive, and keep coming until it answers.
            info!("punching toward {inviter} at full TTL…");
            punch::send_with_ttl(&socket, inviter, &core.punch_packet(), FULL_TTL)
                .map_err(|e| SessionError::Punch(e.into()))?;
            Path::Punch(Some(punch::Repunch {
                dest: inviter,
                ttl: FULL_TTL,
                every: FULL_TTL_REPUNCH,
            }))
        }
        Method::Birthday {
            hard: Side::Acceptor,
            sockets,
        } => Path::Hard {
            sockets,
            dest: inviter,
        },
        Method::Birthday {
            hard: Side::Inviter,
            ..
        } => Path::Probe {
            target: inviter.ip(),
        },
        Method::Relay => Path::RelayOnly,
    };
    let discovery = start.elapsed();
    let t = Instant::now();
    let sealed = peer.envelope.seal(&accept).map_err(SessionError::Seal)?;
    send_sealed(mediator, &peer.address, &sealed)?;
    info!("accept sent to {} via {}", peer.address, mediator.name());
    Ok(Prepared {
        socket,
        mapped,
        core,
        path,
        relay,
        timeline: Timeline {
            discovery,
            send: t.elapsed(),
            ..Timeline::default()
        },
        keep: Keep {
            _router: router,
            _relay: None,
        },
    })
}

/// Tell the inviter, sealed, why its invite cannot be served, so it ends at once.
/// Best effort: the refusal is logged by the caller either way.
fn decline(peer: &mut Peer<'_>, mediator: &mut dyn Mediator, invite: &Invite, reason: &str) {
    warn!(
        "declining invite {} from {}: {reason}",
        invite.session.to_hex(),
        invite.from
    );
    let sent = Decline::new(invite, unix_now(), reason)
        .map_err(SessionError::Message)
        .and_then(|d| peer.envelope.seal(&d).map_err(SessionError::Seal))
        .and_then(|sealed| send_sealed(mediator, &peer.address, &sealed));
    if let Err(e) = sent {
        warn!("the decline could not be sent: {e}");
    }
}
