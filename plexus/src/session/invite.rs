//! The inviting side: discover, seal and send the invite, wait for the accept, punch.

use super::*;

/// Invite the peer and, once the corridor is open, run `executor` on it.
pub fn invite(
    settings: &SessionSettings,
    envelope: &mut Envelope,
    mediator: &mut dyn Mediator,
    executor: &mut dyn Executor,
) -> Result<Finished, SessionError> {
    connect_invite(settings, envelope, mediator).map(|c| c.finish(executor))
}

/// Invite the peer and punch; the punched socket is returned with the corridor, for the
/// caller to use or to hand to an executor ([`Connected::run`]).
pub fn connect_invite(
    settings: &SessionSettings,
    envelope: &mut Envelope,
    mediator: &mut dyn Mediator,
) -> Result<Connected, SessionError> {
    let start = Instant::now();
    let stun_server = need_stun(settings)?;
    // The corridor socket's binding and discovery's probes use different sockets and
    // do not wait on each other: run them together. A refused NAT wins over a
    // failed binding (it says more).
    let (report, corridor) = std::thread::scope(|scope| {
        let discovery = scope.spawn(|| discover_mapping(settings));
        let corridor = corridor_socket(settings, stun_server);
        let report = discovery
            .join()
            .unwrap_or(Err(SessionError::Panicked("NAT discovery")));
        (report, corridor)
    });
    // `_filtering` is joined when this function returns, whichever way.
    let (report, _filtering) = report?;
    let (mut socket, mut mapped) = corridor?;
    let mut facts = facts_of(&report);
    let router = router_mapping(settings, &mut socket, &mut facts, &mut mapped);
    let mut timeline = Timeline {
        discovery: start.elapsed(),
        ..Timeline::default()
    };
    info!(
        "public endpoint {mapped} (local {})",
        socket
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );

    let t = Instant::now();
    let invite = Invite::new(
        envelope.host_id().clone(),
        envelope.peer_id().clone(),
        unix_now(),
        vec![mapped],
        local_endpoints(&socket),
        facts,
    )
    .map_err(SessionError::Message)?
    .with_relay(relay_offer(settings).0);
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
        Some((&socket, stun_server)),
    )?;
    timeline.wait = t.elapsed();
    let accept = answer.map_err(|d| SessionError::Declined(d.reason().to_string()))?;
    check_endpoints(&accept)?;
    let method = accept.method();
    info!(
        "accept from {} at {:?} (NAT {}): {}",
        accept.from,
        accept.mapped,
        describe_facts(&accept.nat),
        pair::describe(&method)
    );

    let t = Instant::now();
    let secrets = Secrets::from_rendezvous(&invite, &accept);
    let core = Handshake::new(
        Role::Inviter,
        &secrets,
        invite.session.0,
        candidates(&accept, mapped),
        Instant::now(),
        handshake_config(settings),
    );
    let deadline = Instant::now() + settings.handshake_timeout + Duration::from_secs(3);
    let Some(&acceptor) = accept.mapped.first() else {
        return Err(SessionError::NoEndpoint);
    };
    let never = std::sync::atomic::AtomicBool::new(false);
    let direct = match method {
        Method::Direct | Method::DirectFullTtl => {
            info!("punching toward {:?}…", candidates(&accept, mapped));
            punch::run_handshake(&socket, core, deadline)
                .map_err(SessionError::Punch)
                .map(|c| (socket, c))
        }
        Method::Birthday {
            hard: Side::Inviter,
            sockets,
        } => {
            let sockets = sockets.min(settings.birthday_sockets.max(1));
            birthday_hard(
                settings,
                HardSide {
                    socket,
                    sockets,
                    dest: acceptor,
                    stun_server,
                },
                core,
                &never,
                deadline,
            )
        }
        Method::Birthday {
            hard: Side::Acceptor,
            ..
        } => birthday_easy(settings, &socket, acceptor.ip(), core, &never, deadline)
            .map(|c| (socket, c)),
        Method::Relay => Err(SessionError::NoMethod("relay only".into())),
    };
    // The relay: planned, or the fallback the accept offers when the direct path failed.
    let (socket, connected) = match (direct, accept.relayed) {
        (Ok(done), _) => done,
        (Err(e), Some(relayed)) => {
            if method == Method::Relay {
                info!("relayed through TURN at {relayed}…");
            } else {
                warn!("the direct path failed ({e}); falling back to the relay at {relayed}");
            }
            let addr = SocketAddr::new(settings.bind.ip(), 0);
            let socket =
                UdpSocket::bind(addr).map_err(|source| SessionError::Bind { addr, source })?;
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
            (socket, c)
        }
        (Err(SessionError::NoMethod(_)), None) => {
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
        outer: mapped,
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
        },
    ))
}
