//! The inviting side: discover, seal and send the invite, wait for the accept, punch.

use super::family::{self, Leg};
use super::*;
use crate::nat::Family;
use crate::punch::nominate::{Nominated, Nomination};

/// Invite the peer and, once the corridor is open, run `executor` on it.
pub fn invite(
    settings: &SessionSettings,
    envelope: &mut Envelope,
    mediator: &mut dyn Mediator,
    executor: &mut dyn Executor,
) -> Result<Finished, SessionError> {
    connect_invite(settings, envelope, mediator).map(|c| c.finish(executor))
}

/// One family's discovery and corridor binding. They use different sockets and do not
/// wait on each other, so they run together. A refused NAT wins over a failed binding
/// (it says more).
fn prepare_leg(
    settings: &SessionSettings,
    family: Family,
    servers: Vec<SocketAddr>,
) -> Result<(Leg, Background), SessionError> {
    let s = family::settings_for(settings, family, servers);
    let stun_server = need_stun(&s)?;
    let (report, corridor) = std::thread::scope(|scope| {
        let discovery = scope.spawn(|| discover_mapping(&s));
        let corridor = corridor_socket(&s, stun_server);
        let report = discovery
            .join()
            .unwrap_or(Err(SessionError::Panicked("NAT discovery")));
        (report, corridor)
    });
    let (report, background) = report?;
    let (socket, mapped) = corridor?;
    Ok((
        Leg {
            family,
            socket,
            mapped,
            facts: facts_of(&report),
            stun: stun_server,
            settings: s,
        },
        background,
    ))
}

/// Every family's leg, prepared at once. A family that fails is logged and left out (an
/// IPv4-only network has no IPv6 route, and the reverse); the session fails only when no
/// family works, with the first family's error. Once one family is ready, the others get
/// [`family::SETUP_GRACE`]; a family still busy then is left out (its thread goes on
/// into the returned [`family::Late`]).
pub(super) fn prepare_legs(
    settings: &SessionSettings,
) -> Result<(Vec<Leg>, Vec<Background>, family::Late), SessionError> {
    let families = family::families(settings)?;
    let several = families.len() > 1;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for (f, servers) in families {
        let (tx, s) = (tx.clone(), settings.clone());
        let t = std::thread::Builder::new()
            .name(format!("{f} setup"))
            .spawn(move || {
                let _ = tx.send((f, prepare_leg(&s, f, servers)));
            })
            .map_err(|source| SessionError::Thread {
                what: "a family's discovery",
                source,
            })?;
        threads.push((f, t));
    }
    drop(tx);
    let (mut legs, mut background, mut first_error) = (Vec::new(), Vec::new(), None);
    let mut done = Vec::new();
    let mut grace_end: Option<Instant> = None;
    while done.len() < threads.len() {
        let next = match grace_end {
            None => rx.recv().ok(),
            Some(end) => rx
                .recv_timeout(end.saturating_duration_since(Instant::now()))
                .ok(),
        };
        let Some((f, r)) = next else { break };
        done.push(f);
        match r {
            Ok((leg, bg)) => {
                legs.push(leg);
                background.push(bg);
                grace_end.get_or_insert_with(|| Instant::now() + family::SETUP_GRACE);
            }
            Err(e) => {
                if several {
                    warn!("{f}: {e}; going on without {f}");
                }
                first_error.get_or_insert(e);
            }
        }
    }
    let mut late = family::Late::default();
    for (f, t) in threads {
        if done.contains(&f) {
            let _ = t.join();
        } else {
            warn!(
                "{f}: no answer within {} ms of the other family; going on without {f}",
                family::SETUP_GRACE.as_millis()
            );
            late.0.push(t);
        }
    }
    // The order of the settings, whatever order they finished in.
    legs.sort_by_key(|l| l.family);
    match (legs.is_empty(), first_error) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(SessionError::Panicked("a family's discovery")),
        _ => Ok((legs, background, late)),
    }
}

/// Invite the peer and punch; the punched socket is returned with the corridor, for the
/// caller to use or to hand to an executor ([`Connected::run`]).
pub fn connect_invite(
    settings: &SessionSettings,
    envelope: &mut Envelope,
    mediator: &mut dyn Mediator,
) -> Result<Connected, SessionError> {
    let start = Instant::now();
    // `_filtering` is joined when this function returns, whichever way.
    let (mut legs, _filtering, late) = prepare_legs(settings)?;
    let mut router = None;
    if let Some(leg) = legs.iter_mut().find(|l| l.family == Family::V4) {
        router = router_mapping(
            &leg.settings,
            &mut leg.socket,
            &mut leg.facts,
            &mut leg.mapped,
        );
    }
    let mut timeline = Timeline {
        discovery: start.elapsed(),
        ..Timeline::default()
    };
    for leg in &legs {
        info!(
            "public endpoint {} (local {})",
            leg.mapped,
            leg.socket
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        );
    }

    let t = Instant::now();
    let facts_of_family = |f: Family| legs.iter().find(|l| l.family == f).map(|l| l.facts);
    let invite = Invite::new(
        envelope.host_id().clone(),
        envelope.peer_id().clone(),
        unix_now(),
        legs.iter().map(|l| l.mapped).collect(),
        legs.iter()
            .flat_map(|l| local_endpoints(&l.socket, LOCALS_PER_FAMILY))
            .collect(),
        facts_of_family(Family::V4).unwrap_or_default(),
    )
    .map_err(SessionError::Message)?
    .with_relay(relay_offer(settings).0)
    .with_nat6(facts_of_family(Family::V6));
    let sealed = envelope.seal(&invite).map_err(SessionError::Seal)?;
    send_sealed(mediator, &settings.peer_address, &sealed)?;
    timeline.send = t.elapsed();
    info!(
        "invite sent to {} via {} (session {})",
        settings.peer_address,
        mediator.name(),
        invite.session.to_hex()
    );

    info!("waiting for the answer…");
    let t = Instant::now();
    let keepalive: Vec<(&UdpSocket, SocketAddr)> =
        legs.iter().map(|l| (&l.socket, l.stun)).collect();
    let (_, answer) = wait_for(
        &mut [Peer {
            envelope: &mut *envelope,
            address: settings.peer_address.clone(),
        }],
        mediator,
        |m| match m {
            Message::Accept(a) if a.session == invite.session => Some(Ok(a)),
            Message::Decline(d) if d.session == invite.session => Some(Err(d)),
            _ => None,
        },
        settings.rendezvous_timeout,
        &keepalive,
    )?;
    timeline.wait = t.elapsed();
    let accept = answer.map_err(|d| SessionError::Declined(d.reason().to_string()))?;
    check_endpoints(&accept)?;
    let (method4, method6) = (accept.method4(), accept.method6());
    info!(
        "accept from {} at {:?} (NAT {}): {}",
        accept.from,
        accept.mapped,
        describe_peer_facts(&accept),
        describe_methods(method4, method6)
    );

    let t = Instant::now();
    let secrets = Secrets::from_rendezvous(&invite, &accept);
    let deadline = Instant::now() + settings.handshake_timeout + Duration::from_secs(3);
    let core_for = |leg: &Leg| {
        Handshake::new(
            Role::Inviter,
            &secrets,
            invite.session.0,
            candidates(&accept, leg.family, leg.mapped),
            Instant::now(),
            handshake_config(settings),
        )
    };
    // The legs the accept's plan uses: IPv6 first (preferred), then IPv4.
    let has = |f: Family| accept.mapped.iter().any(|a| Family::of(a) == f);
    let mut leg6 = None;
    let mut leg4 = None;
    for leg in legs {
        match leg.family {
            Family::V6 if method6.is_some() && has(Family::V6) => leg6 = Some(leg),
            Family::V4 if method4.is_some() && has(Family::V4) => leg4 = Some(leg),
            _ => {}
        }
    }
    let direct4 = matches!(method4, Some(Method::Direct | Method::DirectFullTtl));
    let direct = match (leg6, leg4) {
        (Some(l6), Some(l4)) if direct4 => {
            info!(
                "punching toward {:?} and {:?} at once…",
                candidates(&accept, Family::V6, l6.mapped),
                candidates(&accept, Family::V4, l4.mapped)
            );
            let paths = vec![(core_for(&l6), l6), (core_for(&l4), l4)];
            nominate(paths, deadline)
        }
        (Some(l6), _) => {
            info!(
                "punching toward {:?}…",
                candidates(&accept, Family::V6, l6.mapped)
            );
            punch::run_handshake(&l6.socket, core_for(&l6), deadline)
                .map_err(SessionError::Punch)
                .map(|c| (l6, c))
        }
        (None, Some(l4)) => {
            let core = core_for(&l4);
            run_v4(
                settings,
                l4,
                method4.unwrap_or(Method::Direct),
                core,
                &accept,
                deadline,
            )
        }
        (None, None) => Err(SessionError::NoMethod(
            "the accept names no method for an address family this side has".into(),
        )),
    };
    // The relay: planned, or the fallback the accept offers when the direct path failed.
    let (socket, outer, connected, router) = match (direct, accept.relayed) {
        (Ok((leg, c)), _) => {
            // The router's mapping belongs to the IPv4 socket.
            let router = if leg.family == Family::V4 {
                router
            } else {
                None
            };
            (leg.socket, leg.mapped, c, router)
        }
        (Err(e), Some(relayed)) => {
            if method4 == Some(Method::Relay) {
                info!("relayed through TURN at {relayed}…");
            } else {
                warn!("the direct path failed ({e}); falling back to the relay at {relayed}");
            }
            let addr = SocketAddr::new(Family::of(&relayed).unspecified(), 0);
            let socket =
                family::bind_udp(addr).map_err(|source| SessionError::Bind { addr, source })?;
            let core = Handshake::new(
                Role::Inviter,
                &secrets,
                invite.session.0,
                vec![relayed],
                Instant::now(),
                handshake_config(settings),
            );
            let deadline = Instant::now() + settings.handshake_timeout + Duration::from_secs(3);
            let c = punch::run_handshake(&socket, core, deadline).map_err(SessionError::Punch)?;
            let outer = socket.local_addr().unwrap_or(addr);
            (socket, outer, c, None)
        }
        (Err(SessionError::NoMethod(_)), None) if method4 == Some(Method::Relay) => {
            return Err(SessionError::NoMethod(
                "the peer planned a relayed path but named no relayed endpoint".into(),
            ))
        }
        (Err(e), None) => return Err(e),
    };
    timeline.handshake = t.elapsed();
    timeline.total = start.elapsed();
    let corridor = Corridor {
        inner: inner_endpoint(&socket, connected.peer),
        outer,
        peer: connected.peer,
        host_id: envelope.host_id().to_string(),
        peer_id: envelope.peer_id().to_string(),
        key: connected.key,
        accepted: false,
    };
    Ok(Connected::opened(
        socket,
        corridor,
        timeline,
        Keep {
            _router: router,
            _relay: None,
            _late: late,
        },
    ))
}

/// The IPv4 leg alone, by the accept's method: the punch, either side of a birthday
/// pair, or (relay only) nothing direct.
fn run_v4(
    settings: &SessionSettings,
    leg: Leg,
    method: Method,
    core: Handshake,
    accept: &Accept,
    deadline: Instant,
) -> Result<(Leg, punch::Connected), SessionError> {
    let never = std::sync::atomic::AtomicBool::new(false);
    let Some(acceptor) = accept.mapped.iter().copied().find(|a| a.is_ipv4()) else {
        return Err(SessionError::NoEndpoint);
    };
    match method {
        Method::Direct | Method::DirectFullTtl => {
            info!(
                "punching toward {:?}…",
                candidates(accept, Family::V4, leg.mapped)
            );
            let c =
                punch::run_handshake(&leg.socket, core, deadline).map_err(SessionError::Punch)?;
            Ok((leg, c))
        }
        Method::Birthday {
            hard: Side::Inviter,
            sockets,
        } => {
            let sockets = sockets.min(settings.birthday_sockets.max(1));
            let Leg {
                family,
                socket,
                mapped,
                facts,
                stun,
                settings: leg_settings,
            } = leg;
            let (socket, c) = birthday_hard(
                &leg_settings,
                HardSide {
                    socket,
                    sockets,
                    dest: acceptor,
                    stun_server: stun,
                },
                core,
                &never,
                deadline,
            )?;
            Ok((
                Leg {
                    family,
                    socket,
                    mapped,
                    facts,
                    stun,
                    settings: leg_settings,
                },
                c,
            ))
        }
        Method::Birthday {
            hard: Side::Acceptor,
            ..
        } => {
            let c = birthday_easy(settings, &leg.socket, acceptor.ip(), core, &never, deadline)?;
            Ok((leg, c))
        }
        Method::Relay => Err(SessionError::NoMethod("relay only".into())),
    }
}

/// Both families' punches at once, each handshake held until the [`Nomination`] picks
/// one (IPv6 first, within [`family::FAMILY_GRACE`]): only that one is released, so the
/// acceptor can connect on it alone ([`punch::nominate`]).
fn nominate(
    paths: Vec<(Handshake, Leg)>,
    deadline: Instant,
) -> Result<(Leg, punch::Connected), SessionError> {
    let nomination = Nomination::new(paths.len(), family::FAMILY_GRACE);
    let results: Vec<_> = std::thread::scope(|scope| {
        let running: Vec<_> = paths
            .into_iter()
            .enumerate()
            .map(|(i, (core, leg))| {
                let nomination = &nomination;
                scope.spawn(move || {
                    let mut core = Nominated::new(core, nomination, i);
                    let r = punch::run_core(&[&leg.socket], &mut core, deadline);
                    (leg, r, core.lost())
                })
            })
            .collect();
        running.into_iter().map(|h| h.join()).collect()
    });
    let mut first_error = None;
    for r in results {
        match r {
            Ok((leg, Ok(c), _)) => {
                info!("{} chosen", leg.family);
                return Ok((leg, c));
            }
            Ok((leg, Err(e), lost)) => {
                if !lost {
                    warn!("{}: {e}", leg.family);
                    first_error.get_or_insert(SessionError::Punch(e));
                }
            }
            Err(_) => {
                first_error.get_or_insert(SessionError::Panicked("a punch thread"));
            }
        }
    }
    Err(first_error.unwrap_or(SessionError::Panicked("the path nomination")))
}
