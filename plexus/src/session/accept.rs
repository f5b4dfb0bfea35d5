//! The accepting side: wait for invites, answer and punch each, run the corridors
//! (bounded, joined threads).

use super::family::{self, Leg};
use super::*;
use crate::nat::Family;
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

/// An acceptor that has measured its NAT, per family, and waits for invites.
pub(super) struct Listening {
    families: Vec<Measured>,
    started: Instant,
}

/// One family this acceptor can serve: its NAT facts and settings.
#[derive(Clone)]
pub(super) struct Measured {
    family: Family,
    stun: SocketAddr,
    facts: NatFacts,
    settings: SessionSettings,
}

/// An invite answered and punched toward, its handshake still to run.
pub(super) struct Answered {
    peer: usize,
    prepared: Prepared,
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
        need_stun(settings)?;
        if peers.is_empty() {
            return Err(SessionError::Settings(
                "accept needs at least one peer".into(),
            ));
        }
        let families = measure_families(settings)?;
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
            families,
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
            &[],
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
        let prepared = match answer(settings, &self.families, peer, mediator, &invite) {
            Ok(p) => p,
            Err(e) => return give_up(e),
        };
        Ok(Some(Answered {
            peer: who,
            prepared,
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
            legs,
            relay,
            mut timeline,
            mut keep,
        } = self.prepared;
        let t = Instant::now();
        // The inviter may try the direct path for a whole handshake timeout first.
        let deadline =
            Instant::now() + self.handshake_timeout * 2 + ACCEPT_DELIVERY + Duration::from_secs(3);
        let mut paths: Vec<Attempt<'_>> = Vec::new();
        // A relay-only plan has no direct path to try (its error would hide the relay's).
        for leg in legs
            .into_iter()
            .filter(|l| !matches!(l.path, Path::RelayOnly))
        {
            paths.push(Box::new(move |stop: &AtomicBool| {
                direct_path(leg, stop, deadline).map(|w| Won::Direct(Box::new(w)))
            }));
        }
        if let Some(r) = relay {
            paths.push(Box::new(move |stop: &AtomicBool| {
                relayed_path(r, stop, deadline).map(|w| Won::Relay(Box::new(w)))
            }));
        }
        let won = race(paths)?;
        let (socket, corridor) = match won {
            Won::Direct(won) => {
                let (leg, connected) = *won;
                info!("connected over {}", leg.family);
                let corridor = Corridor {
                    inner: inner_endpoint(&leg.socket, connected.peer),
                    outer: leg.mapped,
                    peer: connected.peer,
                    host_id: self.host_id,
                    peer_id: self.peer_id,
                    key: connected.key,
                    accepted: true,
                };
                if leg.family != Family::V4 {
                    // The router's mapping was for the IPv4 socket.
                    keep._router = None;
                }
                (leg.socket, corridor)
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

/// One leg's direct path (re-punching, opening or probing as its plan says).
fn direct_path(
    planned: LegPath,
    stop: &AtomicBool,
    deadline: Instant,
) -> Result<(Leg, punch::Connected), SessionError> {
    let LegPath { leg, core, path } = planned;
    match path {
        Path::Punch(repunch) => {
            let core = punch::Punching::new(core, repunch, Instant::now());
            let mut core = punch::Stoppable::new(core, stop);
            let c = punch::run_core(&[&leg.socket], &mut core, deadline)
                .map_err(SessionError::Punch)?;
            Ok((leg, c))
        }
        Path::Hard { sockets, dest } => {
            // The winner among the hard side's sockets becomes the leg's socket.
            let Leg {
                family,
                socket,
                mapped,
                facts,
                stun,
                settings,
            } = leg;
            let (socket, c) = birthday_hard(
                &settings,
                HardSide {
                    socket,
                    sockets,
                    dest,
                    stun_server: stun,
                },
                core,
                stop,
                deadline,
            )?;
            let leg = Leg {
                family,
                socket,
                mapped,
                facts,
                stun,
                settings,
            };
            Ok((leg, c))
        }
        Path::Probe { target } => {
            let c = birthday_easy(&leg.settings, &leg.socket, target, core, stop, deadline)?;
            Ok((leg, c))
        }
        Path::RelayOnly => Err(SessionError::Settings("no direct path planned".into())),
    }
}

/// The relayed path: the handshake through the allocation, which is freed at once when
/// another path won (or nothing did).
fn relayed_path(
    mut r: RelayPath,
    stop: &AtomicBool,
    deadline: Instant,
) -> Result<(crate::relay::Allocation, punch::Connected), SessionError> {
    match run_relayed(&mut r.alloc, r.core, stop, deadline) {
        Ok(c) => Ok((r.alloc, c)),
        Err(e) => {
            if let Err(close) = r.alloc.close(RELAY_CLOSE_TIMEOUT) {
                debug!("relay: deleting the unused allocation: {close}");
            }
            Err(e)
        }
    }
}

/// Measure this side's NAT in every family it may use, at once. A family that fails is
/// logged and left out (no IPv6 route, say); none working is the first family's error.
fn measure_families(settings: &SessionSettings) -> Result<Vec<Measured>, SessionError> {
    let families = family::families(settings)?;
    let several = families.len() > 1;
    let results: Vec<(Family, Result<Measured, SessionError>)> = std::thread::scope(|scope| {
        let running: Vec<_> = families
            .into_iter()
            .map(|(f, servers)| {
                let s = family::settings_for(settings, f, servers);
                let h = scope.spawn(move || {
                    let stun = need_stun(&s)?;
                    let report = discover(&s)?;
                    Ok(Measured {
                        family: f,
                        stun,
                        facts: facts_of(&report),
                        settings: s,
                    })
                });
                (f, h)
            })
            .collect();
        running
            .into_iter()
            .map(|(f, h)| {
                (
                    f,
                    h.join()
                        .unwrap_or(Err(SessionError::Panicked("NAT discovery"))),
                )
            })
            .collect()
    });
    let (mut out, mut first_error) = (Vec::new(), None);
    for (f, r) in results {
        match r {
            Ok(m) => out.push(m),
            Err(e) => {
                if several {
                    warn!("{f}: {e}; serving without {f}");
                }
                first_error.get_or_insert(e);
            }
        }
    }
    match (out.is_empty(), first_error) {
        (true, Some(e)) => Err(e),
        _ => Ok(out),
    }
}

/// Which path connected first.
// Boxed: a leg (its settings) and an allocation are large.
enum Won {
    Direct(Box<(Leg, punch::Connected)>),
    Relay(Box<(crate::relay::Allocation, punch::Connected)>),
}

/// One path to try, ended early when its flag is set.
type Attempt<'a> = Box<dyn FnOnce(&AtomicBool) -> Result<Won, SessionError> + Send + 'a>;

/// Run every path in a thread of its own; the first to connect stops the others (which
/// then end within [`punch::Stoppable::TICK`]). All failing returns the first path's
/// error (the others are logged).
fn race(paths: Vec<Attempt<'_>>) -> Result<Won, SessionError> {
    if paths.len() == 1 {
        let stop = AtomicBool::new(false);
        let only = paths.into_iter().next();
        return match only {
            Some(p) => p(&stop),
            None => Err(SessionError::Settings("no path to try".into())),
        };
    }
    let stops: Vec<AtomicBool> = paths.iter().map(|_| AtomicBool::new(false)).collect();
    let results: Vec<Result<Won, SessionError>> = std::thread::scope(|scope| {
        let stops = &stops;
        let running: Vec<_> = paths
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                scope.spawn(move || {
                    let r = p(&stops[i]);
                    if r.is_ok() {
                        for (j, s) in stops.iter().enumerate() {
                            if j != i {
                                s.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                    r
                })
            })
            .collect();
        running
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(SessionError::Panicked("a path"))))
            .collect()
    });
    let mut won = None;
    let mut first_error = None;
    for r in results {
        match r {
            Ok(w) if won.is_none() => won = Some(w),
            Ok(_) => warn!("two paths connected; keeping the first"),
            Err(e) => {
                debug!("a path ended: {e}");
                first_error.get_or_insert(e);
            }
        }
    }
    match (won, first_error) {
        (Some(w), _) => Ok(w),
        (None, Some(e)) => Err(e),
        (None, None) => Err(SessionError::Settings("no path to try".into())),
    }
}

/// The acceptor's side of a relayed path: its allocation and a handshake of its own.
pub(super) struct RelayPath {
    alloc: crate::relay::Allocation,
    core: Handshake,
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

/// One family's leg with its handshake and what the plan does on it.
pub(super) struct LegPath {
    leg: Leg,
    core: Handshake,
    path: Path,
}

/// An answered invite, ready for its handshake: a direct path per family planned, and
/// the relay.
pub(super) struct Prepared {
    legs: Vec<LegPath>,
    relay: Option<RelayPath>,
    timeline: Timeline,
    keep: Keep,
}

/// The acceptor's part before the handshake: per family both sides have, bind, binding
/// and plan; then punch, and send the accept (or the decline, when no method can
/// connect the pair).
pub(super) fn answer(
    settings: &SessionSettings,
    measured: &[Measured],
    peer: &mut Peer<'_>,
    mediator: &mut dyn Mediator,
    invite: &Invite,
) -> Result<Prepared, SessionError> {
    let start = Instant::now();
    if invite.mapped.is_empty() {
        return Err(SessionError::NoEndpoint);
    }
    let theirs = family::peer_families(invite);
    let ours: Vec<Family> = measured.iter().map(|m| m.family).collect();
    let common: Vec<&Measured> = measured
        .iter()
        .filter(|m| theirs.contains(&m.family))
        .collect();
    if common.is_empty() {
        let reason = family::no_common_family(&theirs, &ours);
        decline(peer, mediator, invite, &reason);
        return Err(SessionError::NoMethod(reason));
    }
    // Each family's STUN binding, at once: each is a round trip before the accept.
    type Bound = Result<(UdpSocket, SocketAddr), SessionError>;
    let bound: Vec<(&Measured, Bound)> = std::thread::scope(|scope| {
        let running: Vec<_> = common
            .iter()
            .map(|m| {
                (
                    *m,
                    scope.spawn(move || corridor_socket(&m.settings, m.stun)),
                )
            })
            .collect();
        running
            .into_iter()
            .map(|(m, h)| {
                let r = h
                    .join()
                    .unwrap_or(Err(SessionError::Panicked("a STUN binding")));
                (m, r)
            })
            .collect()
    });
    let mut legs: Vec<Leg> = Vec::new();
    let mut first_error = None;
    for (m, r) in bound {
        match r {
            Ok((socket, mapped)) => legs.push(Leg {
                family: m.family,
                socket,
                mapped,
                facts: m.facts,
                stun: m.stun,
                settings: m.settings.clone(),
            }),
            Err(e) => {
                warn!("{}: {e}", m.family);
                first_error.get_or_insert(e);
            }
        }
    }
    if legs.is_empty() {
        return Err(first_error.unwrap_or(SessionError::NoEndpoint));
    }
    let (policy, turn) = relay_offer(settings);
    let offer = pair::Offer {
        inviter_relay: invite.relay,
        acceptor_relay: policy,
        turn,
        birthday_sockets: settings.birthday_sockets,
    };
    let always = invite.relay == crate::rendezvous::RelayPolicy::Always
        || policy == crate::rendezvous::RelayPolicy::Always;
    // IPv6: direct only (no prediction, no relay over it), and not when either side
    // wants the relay always (it hides the addresses).
    let method6 = legs
        .iter()
        .find(|l| l.family == Family::V6)
        .filter(|_| !always)
        .and_then(|l| {
            let direct_only = pair::Offer {
                inviter_relay: crate::rendezvous::RelayPolicy::Never,
                acceptor_relay: crate::rendezvous::RelayPolicy::Never,
                turn: false,
                birthday_sockets: 0,
            };
            match pair::choose(
                &family::peer_facts(invite, Family::V6),
                &l.facts,
                &direct_only,
            ) {
                Ok(c) if matches!(c.method, Method::Direct | Method::DirectFullTtl) => {
                    Some(c.method)
                }
                Ok(c) => {
                    info!("IPv6 would need {}: not tried", pair::describe(&c.method));
                    None
                }
                Err(reason) => {
                    info!("IPv6: {reason}");
                    None
                }
            }
        });
    // A router port mapping changes the IPv4 side's class; not needed (nor waited for)
    // when IPv6 connects directly.
    let mut router = None;
    if let Some(leg) = legs
        .iter_mut()
        .find(|l| l.family == Family::V4)
        .filter(|_| method6.is_none())
    {
        router = router_mapping(
            &leg.settings,
            &mut leg.socket,
            &mut leg.facts,
            &mut leg.mapped,
        );
    }
    let choice4 = legs
        .iter()
        .find(|l| l.family == Family::V4)
        .map(|l| pair::choose(&invite.nat, &l.facts, &offer));
    // A direct IPv6 path makes port prediction and the relay needless; the relay stays
    // allocated as the fallback it was meant to be.
    let (method4, allocate) = match choice4 {
        Some(Ok(c))
            if method6.is_some() && !matches!(c.method, Method::Direct | Method::DirectFullTtl) =>
        {
            info!(
                "IPv4 would need {}: IPv6 connects directly instead",
                pair::describe(&c.method)
            );
            (None, c.allocate)
        }
        Some(Ok(c)) => (Some(c.method), c.allocate),
        Some(Err(_)) if method6.is_some() => (None, false),
        Some(Err(reason)) => {
            decline(peer, mediator, invite, &reason);
            return Err(SessionError::NoMethod(reason));
        }
        None if method6.is_some() => (None, false),
        None => {
            let reason = "over IPv6, the only family both sides have, neither side's firewall \
                          or NAT lets a direct punch through (IPv6 paths are direct only)"
                .to_string();
            decline(peer, mediator, invite, &reason);
            return Err(SessionError::NoMethod(reason));
        }
    };
    // The allocation goes into the accept, so the inviter needs no further round trip
    // to fall back on it. Without it, a relay-only plan is declined; a direct plan goes on.
    let inviter4 = invite.mapped.iter().copied().find(|a| a.is_ipv4());
    let v4_settings = legs
        .iter()
        .find(|l| l.family == Family::V4)
        .map(|l| l.settings.clone());
    let alloc = match (allocate, inviter4, v4_settings) {
        (true, Some(inviter), Some(s)) => match allocate_relay(&s, inviter.ip()) {
            Ok(a) => Some(a),
            Err(e) if method4 == Some(Method::Relay) => {
                let reason = format!("the acceptor's TURN relay failed: {e}");
                decline(peer, mediator, invite, &reason);
                return Err(SessionError::NoMethod(reason));
            }
            Err(e) => {
                warn!("no relay to fall back on: {e}");
                None
            }
        },
        _ => None,
    };
    info!(
        "plan for {} (NAT {}): {}",
        invite.from,
        describe_peer_facts(invite),
        describe_methods(method4, method6)
    );
    // Only the legs the plan uses go into the accept.
    legs.retain(|l| match l.family {
        Family::V4 => method4.is_some(),
        Family::V6 => method6.is_some(),
    });
    let facts_of_family = |f: Family| legs.iter().find(|l| l.family == f).map(|l| l.facts);
    let accept = Accept::new(
        invite,
        unix_now(),
        legs.iter().map(|l| l.mapped).collect(),
        legs.iter()
            .flat_map(|l| local_endpoints(&l.socket, LOCALS_PER_FAMILY))
            .collect(),
        facts_of_family(Family::V4).unwrap_or_default(),
    )
    .map(|a| a.with_nat6(facts_of_family(Family::V6)))
    .and_then(|a| {
        a.with_families(
            method4,
            method6,
            policy,
            alloc.as_ref().map(|a| a.relayed()),
        )
    })
    .map_err(SessionError::Message)?;
    let acceptor_config = punch::Config {
        timeout: settings.handshake_timeout + ACCEPT_DELIVERY,
        ..handshake_config(settings)
    };
    let secrets = Secrets::from_rendezvous(invite, &accept);
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
                ..acceptor_config.clone()
            },
        ),
    });
    let mut paths = Vec::new();
    for leg in legs {
        let method = match leg.family {
            Family::V4 => method4,
            Family::V6 => method6,
        };
        let Some(method) = method else { continue };
        let Some(inviter) = invite
            .mapped
            .iter()
            .copied()
            .find(|a| Family::of(a) == leg.family)
        else {
            continue;
        };
        let mut core = Handshake::new(
            Role::Acceptor,
            &secrets,
            invite.session.0,
            candidates(invite, leg.family, leg.mapped),
            Instant::now(),
            acceptor_config.clone(),
        );
        let path = plan_path(&leg, method, inviter, &mut core)?;
        paths.push(LegPath { leg, core, path });
    }
    let discovery = start.elapsed();
    let t = Instant::now();
    let sealed = peer.envelope.seal(&accept).map_err(SessionError::Seal)?;
    send_sealed(mediator, &peer.address, &sealed)?;
    info!("accept sent to {} via {}", peer.address, mediator.name());
    Ok(Prepared {
        legs: paths,
        relay,
        timeline: Timeline {
            discovery,
            send: t.elapsed(),
            ..Timeline::default()
        },
        keep: Keep {
            _router: router,
            _relay: None,
            _late: family::Late::default(),
        },
    })
}

/// What the acceptor does on one leg toward the inviter while its accept travels: the
/// first punch goes out here.
fn plan_path(
    leg: &Leg,
    method: Method,
    inviter: SocketAddr,
    core: &mut Handshake,
) -> Result<Path, SessionError> {
    let settings = &leg.settings;
    Ok(match method {
        Method::Direct if leg.facts.port_mapping.is_some() => {
            // The router forwards the mapped port: nothing to open. And the socket's
            // first packet must wait: it fixes the NAT's mapping of the port, which the
            // router's port-keeping rule may not have caught up with yet.
            info!("router mapping: no punch needed toward {inviter}");
            Path::Punch(None)
        }
        Method::Direct => {
            info!("punching toward {inviter}…");
            // No NAT but a filter (an IPv6 host behind its router's stateful firewall):
            // the punch opens the firewall as it would a NAT.
            let firewalled = !leg.facts.nat
                && leg.family == Family::V6
                && leg.facts.filtering != Some(Behaviour::EndpointIndependent);
            let ttl = punch::acceptor_punch(
                &leg.socket,
                core,
                inviter,
                leg.mapped,
                settings.punch_hops,
                leg.stun,
                &HopsConfig::default(),
                firewalled,
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
            punch::send_with_ttl(&leg.socket, inviter, &core.punch_packet(), FULL_TTL)
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
