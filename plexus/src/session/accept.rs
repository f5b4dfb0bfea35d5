//! The accepting side: wait for invites, answer and punch each, run the corridors
//! (bounded, joined threads).

use super::*;

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
    /// accept travels) to the open corridor.
    fn handshake(self) -> Result<Connected, SessionError> {
        let Prepared {
            socket,
            mapped,
            core,
            path,
            mut timeline,
            keep,
        } = self.prepared;
        let t = Instant::now();
        let deadline =
            Instant::now() + self.handshake_timeout + ACCEPT_DELIVERY + Duration::from_secs(3);
        let (socket, connected) = match path {
            Path::Punch(repunch) => {
                let c = punch::run_handshake_repunching(&socket, core, deadline, repunch)
                    .map_err(SessionError::Punch)?;
                (socket, c)
            }
            Path::Hard { sockets, dest } => birthday_hard(
                &self.settings,
                socket,
                sockets,
                dest,
                self.stun_server,
                core,
                deadline,
            )?,
            Path::Probe { target } => {
                let c = birthday_easy(&self.settings, &socket, target, core, deadline)?;
                (socket, c)
            }
        };
        timeline.handshake = t.elapsed();
        timeline.total = self.session_start.elapsed();
        let corridor = Corridor {
            inner: inner_endpoint(&socket, connected.peer),
            outer: mapped,
            peer: connected.peer,
            host_id: self.host_id,
            peer_id: self.peer_id,
            key: connected.key,
            accepted: true,
        };
        Ok(Connected::opened(socket, corridor, timeline, keep))
    }
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
}

/// An answered invite, ready for its handshake.
pub(super) struct Prepared {
    socket: UdpSocket,
    mapped: SocketAddr,
    core: Handshake,
    path: Path,
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
    if choice.method == Method::Relay {
        // The relay path arrives with the TURN client; until then no pair plans it.
        let reason = "this acceptor cannot relay yet".to_string();
        decline(peer, mediator, invite, &reason);
        return Err(SessionError::NoMethod(reason));
    }
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
    .and_then(|a| a.with_route(choice.method, policy, None))
    .map_err(SessionError::Message)?;
    let acceptor_config = punch::Config {
        timeout: settings.handshake_timeout + ACCEPT_DELIVERY,
        ..handshake_config(settings)
    };
    let mut core = Handshake::new(
        Role::Acceptor,
        &Secrets::from_rendezvous(invite, &accept),
        invite.session.0,
        candidates(invite, mapped),
        Instant::now(),
        acceptor_config,
    );
    let path = match choice.method {
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
        Method::Relay => {
            return Err(SessionError::NoMethod(
                "this acceptor cannot relay yet".into(),
            ))
        }
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
        timeline: Timeline {
            discovery,
            send: t.elapsed(),
            ..Timeline::default()
        },
        keep: Keep { _router: router },
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
