//! `plexus invite`, `plexus accept` and the original tool's flat command line
//! (`plexus --accept --host-id … --email-smtps …`).
//!
//! Precedence: defaults < profile (`--profile`) < environment < flags. The flags become
//! one [`ProfilePatch`] applied over the profile; the result is validated and wired once
//! by the library ([`plexus::Session`]) before anything touches the network.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use plexus::defaults;
use plexus::identity::PeerId;
use plexus::profile::{
    CommandPatch, EmailPatch, HostPort, MediatorConfig, Profile, ProfilePatch, SmtpMode, TurnPatch,
};
use plexus::punch::PunchHops;
use plexus::relay::RelayPolicy;
use plexus::secret::SecretSource;
use plexus::session::Finished;
use plexus::Session;

use crate::args::Failure;

/// Options shared by `invite`, `accept` and the flat command line.
#[derive(Debug, Clone, Args, Default, PartialEq)]
pub struct ConnectArgs {
    /// Profile: a name under ~/.config/plexus/profiles/NAME.yaml, or a path. Flags
    /// override it. accept: repeat it to serve several peers through one mailbox (the
    /// first profile's mediator is used, listening for every profile's peer).
    #[arg(long, value_name = "NAME|PATH")]
    pub profile: Vec<String>,
    /// This host's id, `mail@domain/instance` (profile: host.id). A plain word, as in
    /// the original tool (`--host-id remote`), is the instance under --email-from.
    #[arg(long, value_name = "ID")]
    pub host_id: Option<String>,
    /// The peer's id, `mail@domain/instance` (profile: peer.id). A plain word is the
    /// instance under --email-to.
    #[arg(long, value_name = "ID")]
    pub peer_id: Option<String>,

    /// SMTP submission server with implicit TLS, HOST:PORT (port default 465).
    #[arg(long, value_name = "HOST:PORT")]
    pub email_smtps: Option<String>,
    /// Use STARTTLS instead of implicit TLS for SMTP (e.g. port 587).
    #[arg(long)]
    pub email_starttls: bool,
    /// IMAP server with TLS, HOST:PORT (port default 993).
    #[arg(long, value_name = "HOST:PORT")]
    pub email_imaps: Option<String>,
    /// Login for SMTP and IMAP.
    #[arg(long, value_name = "LOGIN")]
    pub email_login: Option<String>,
    /// Mail password. Visible to other users in the process list: prefer
    /// --email-passwd-file, --email-passwd-env or PLEXUS_EMAIL_PASSWORD.
    #[arg(long, value_name = "PASSWORD", hide_env_values = true)]
    pub email_passwd: Option<String>,
    /// Read the mail password from this file (mode 0600).
    #[arg(long, value_name = "PATH")]
    pub email_passwd_file: Option<PathBuf>,
    /// Read the mail password from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub email_passwd_env: Option<String>,
    /// This host's mail address (the From: of what it sends).
    #[arg(long, value_name = "ADDRESS")]
    pub email_from: Option<String>,
    /// The peer's mail address (where invites/accepts go; only its mail is opened).
    #[arg(long, value_name = "ADDRESS")]
    pub email_to: Option<String>,
    /// TLS client certificate for the mail servers (PEM).
    #[arg(long, value_name = "PATH")]
    pub email_cert: Option<PathBuf>,
    /// Key of --email-cert (PEM, mode 0600).
    #[arg(long, value_name = "PATH")]
    pub email_key: Option<PathBuf>,
    /// CA certificate(s) trusted for the mail servers' TLS (besides the system's).
    #[arg(long, value_name = "PATH")]
    pub email_ca: Option<PathBuf>,

    /// This host's S/MIME certificate (PEM) [default: ~/.config/plexus/keys/ID.pem,
    /// ID being the host id with `/` as `_`, as `plexus cert new` names it].
    #[arg(long, value_name = "PATH")]
    pub smime_cert: Option<PathBuf>,
    /// This host's S/MIME private key (PEM, mode 0600) [default:
    /// ~/.config/plexus/keys/ID.key].
    #[arg(long, value_name = "PATH")]
    pub smime_key: Option<PathBuf>,
    /// The peer's pinned S/MIME certificate (PEM) [default:
    /// ~/.config/plexus/keys/PEER-ID.pem].
    #[arg(long, value_name = "PATH")]
    pub smime_peer: Option<PathBuf>,
    /// A CA the peer's certificate must also chain to.
    #[arg(long, value_name = "PATH")]
    pub smime_ca: Option<PathBuf>,
    /// Replay-protection state file [default: ~/.local/state/plexus/replay-HOST-PEER, or
    /// under $XDG_STATE_HOME; with neither HOME nor XDG_STATE_HOME set it must be given].
    #[arg(long, value_name = "PATH")]
    pub replay_state: Option<PathBuf>,

    /// STUN server, HOST[:PORT]; repeat for more (profile: stun).
    #[arg(long = "stun", value_name = "HOST[:PORT]")]
    pub stun: Vec<String>,
    /// STUN server address (the original tool's flag; same as --stun).
    #[arg(long, value_name = "HOST")]
    pub stun_ip: Option<String>,
    /// Port for --stun-ip [default: 3478].
    #[arg(long, value_name = "PORT")]
    pub stun_port: Option<u16>,
    /// Local address to punch from [default: 0.0.0.0].
    #[arg(long, value_name = "IP")]
    pub bind_ip: Option<std::net::IpAddr>,
    /// Local port to punch from [default: 0, any].
    #[arg(long, value_name = "PORT")]
    pub bind_port: Option<u16>,
    /// TTL of the acceptor's first punch: `auto` (probe how many hops pass the own NAT)
    /// or a number [default: auto].
    #[arg(long, value_name = "auto|N")]
    pub punch_hops: Option<PunchHops>,
    /// Ask the router for a mapping of the corridor port with PCP, NAT-PMP or UPnP-IGD
    /// (`auto`), or never (`off`) [default: auto].
    #[arg(long, value_name = "auto|off")]
    pub port_mapping: Option<plexus::profile::PortMapping>,
    /// Address families to try: `auto` (IPv4 and IPv6, each where a STUN server of that
    /// family answers), `ipv4` or `ipv6` [default: auto].
    #[arg(long, value_name = "auto|ipv4|ipv6")]
    pub family: Option<plexus::nat::FamilyChoice>,

    /// Executor program, started with `innerip innerport outerip outerport peerip
    /// peerport` (no shell).
    #[arg(long, value_name = "PROGRAM")]
    pub exec_command: Option<String>,
    /// Argument template instead of the six defaults; repeat per argument. Placeholders:
    /// {inner_ip} {inner_port} {outer_ip} {outer_port} {peer_ip} {peer_port} {host_id}
    /// {peer_id}.
    #[arg(long = "exec-arg", value_name = "TEMPLATE")]
    pub exec_args: Vec<String>,
    /// Working directory of the executor.
    #[arg(long, value_name = "DIR")]
    pub exec_pwd: Option<PathBuf>,
    /// Set NAME=VALUE in the executor's environment (repeatable; the value may use the
    /// placeholders of --exec-arg). The executor sees only a short list of plexus's own
    /// variables (PATH, HOME, LANG…), never its secrets: pass anything else this way.
    #[arg(long = "exec-env", value_name = "NAME=VALUE")]
    pub exec_env: Vec<String>,
    /// Append the executor's output to this file (created 0600).
    #[arg(long, value_name = "PATH")]
    pub exec_log_file: Option<PathBuf>,

    /// When to relay through a TURN server: never (pairs that need it are declined),
    /// fallback (when the plan says so or a direct handshake fails), always
    /// [default: profile or never].
    #[arg(long, value_name = "never|fallback|always", value_parser = parse_relay)]
    pub relay: Option<RelayPolicy>,
    /// TURN server, HOST[:PORT] [default port: 3478] (profile: turn.server).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub turn: Option<String>,
    /// TURN user name (profile: turn.user); with --turn-secret-file the user part of the
    /// TURN REST credentials.
    #[arg(long, value_name = "USER")]
    pub turn_user: Option<String>,
    /// File holding the TURN password (long-term credentials; mode 0600).
    #[arg(long, value_name = "PATH")]
    pub turn_password_file: Option<PathBuf>,
    /// Environment variable holding the TURN password (long-term credentials).
    #[arg(long, value_name = "NAME")]
    pub turn_password_env: Option<String>,
    /// File holding the secret shared with the TURN server (TURN REST API credentials,
    /// coturn's static-auth-secret; mode 0600).
    #[arg(long, value_name = "PATH")]
    pub turn_secret_file: Option<PathBuf>,

    /// Per-probe STUN deadline in milliseconds [default: profile or 400].
    #[arg(long, value_name = "MS")]
    pub stun_timeout: Option<u64>,
    /// How long to wait for the peer's answer, seconds (accept: total waiting time;
    /// default forever) [default: profile or 300 for invite].
    #[arg(long, value_name = "SECS")]
    pub rendezvous_timeout: Option<u64>,
    /// Handshake timeout in milliseconds [default: profile or 10000].
    #[arg(long, value_name = "MS")]
    pub handshake_timeout: Option<u64>,
    /// accept: most corridors running at once; further invites are refused until one
    /// ends [default: profile or 32].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_corridors: Option<u32>,
    /// Sockets this side opens as the hard (symmetric) side of a port-prediction pair;
    /// as acceptor, 0 turns port prediction off [default: profile or 256].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub birthday_sockets: Option<u16>,
    /// Most probes this side sends as the easy side of a port-prediction pair
    /// [default: profile or 2048].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub probe_budget: Option<u32>,
    /// Probes per second as the easy side of a port-prediction pair [default: profile or 400].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub probe_rate: Option<u32>,
    /// accept: handle one invitation, then exit with its result.
    #[arg(long)]
    pub once: bool,
    /// INSECURE: send rendezvous messages unsigned and unencrypted. For tests only;
    /// every message logs a warning.
    #[arg(long)]
    pub insecure_plaintext: bool,
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure::Usage(msg.into())
}

fn failed(msg: impl Into<String>) -> Failure {
    Failure::Failed(msg.into())
}

/// Load a profile (if any), apply the environment, then the flags as one patch.
/// Validation is the session setup's ([`Session::from_profiles`]).
pub fn resolve_profile(args: &ConnectArgs, name: Option<&str>) -> Result<Profile, Failure> {
    let mut p = match name {
        Some(name) => Profile::load(name).map_err(|e| usage(e.to_string()))?,
        None => Profile::default(),
    };
    p.apply_env(|k| std::env::var(k).ok())
        .map_err(|e| usage(e.to_string()))?;
    let patch = flags_patch(&p, args)?;
    p.apply(patch).map_err(|e| usage(e.to_string()))?;
    Ok(p)
}

/// The flags as a patch over `p` (the profile after the environment, read only to put
/// plain-word ids under its mail addresses).
fn flags_patch(p: &Profile, a: &ConnectArgs) -> Result<ProfilePatch, Failure> {
    let mut stun: Vec<HostPort> = Vec::new();
    for s in &a.stun {
        stun.push(
            HostPort::parse(s, Some(defaults::STUN_PORT))
                .map_err(|e| usage(format!("--stun: {e}")))?,
        );
    }
    if let Some(ip) = &a.stun_ip {
        stun.push(HostPort {
            host: ip.trim_start_matches('[').trim_end_matches(']').to_string(),
            port: a.stun_port.unwrap_or(defaults::STUN_PORT),
        });
    } else if a.stun_port.is_some() {
        return Err(usage("--stun-port needs --stun-ip"));
    }
    let email = email_patch(a)?;
    // A plain-word id goes under this side's mail address: the flag's, else the profile's.
    let address = |flag: &Option<String>, own: bool| {
        flag.clone()
            .or_else(|| email_address(p, own).map(str::to_string))
            .filter(|a| !a.is_empty())
    };
    let host_id = a
        .host_id
        .as_deref()
        .map(|v| {
            let from = address(&a.email_from, true);
            qualify_id(v, "--host-id", "--email-from", from.as_deref())
        })
        .transpose()?;
    let peer_id = a
        .peer_id
        .as_deref()
        .map(|v| {
            let to = address(&a.email_to, false);
            qualify_id(v, "--peer-id", "--email-to", to.as_deref())
        })
        .transpose()?;
    Ok(ProfilePatch {
        host_id,
        peer_id,
        host_cert: a.smime_cert.clone(),
        host_key: a.smime_key.clone(),
        peer_cert: a.smime_peer.clone(),
        peer_ca: a.smime_ca.clone(),
        replay_state: a.replay_state.clone(),
        stun: (!stun.is_empty()).then_some(stun),
        bind_ip: a.bind_ip,
        bind_port: a.bind_port,
        punch_hops: a.punch_hops,
        port_mapping: a.port_mapping,
        family: a.family,
        discovery_timeout: a.stun_timeout.map(|ms| Duration::from_millis(ms.max(1))),
        rendezvous_timeout: a.rendezvous_timeout.map(|s| Duration::from_secs(s.max(1))),
        handshake_timeout: a
            .handshake_timeout
            .map(|ms| Duration::from_millis(ms.max(1))),
        max_corridors: a.max_corridors.map(|n| n as usize),
        birthday_sockets: a.birthday_sockets,
        probe_budget: a.probe_budget,
        probe_rate: a.probe_rate,
        insecure_plaintext: a.insecure_plaintext.then_some(true),
        email,
        command: command_patch(a)?,
        relay: a.relay,
        turn: turn_patch(a)?,
    })
}

fn parse_relay(s: &str) -> Result<RelayPolicy, String> {
    s.parse()
}

/// The --turn* flags as a patch (`None` when none is given).
fn turn_patch(a: &ConnectArgs) -> Result<Option<TurnPatch>, Failure> {
    let any = a.turn.is_some()
        || a.turn_user.is_some()
        || a.turn_password_file.is_some()
        || a.turn_password_env.is_some()
        || a.turn_secret_file.is_some();
    if !any {
        return Ok(None);
    }
    let server = a
        .turn
        .as_deref()
        .map(|s| HostPort::parse(s, Some(plexus::relay::DEFAULT_PORT)))
        .transpose()
        .map_err(|e| usage(format!("--turn: {e}")))?;
    let password = match (&a.turn_password_file, &a.turn_password_env) {
        (Some(_), Some(_)) => {
            return Err(usage(
                "give one of --turn-password-file and --turn-password-env, not both",
            ))
        }
        (Some(f), None) => Some(SecretSource::File(f.clone())),
        (None, Some(n)) => Some(SecretSource::Env(n.clone())),
        (None, None) => None,
    };
    if password.is_some() && a.turn_secret_file.is_some() {
        return Err(usage(
            "give a TURN password (--turn-password-file/--turn-password-env) or a TURN REST \
             secret (--turn-secret-file), not both",
        ));
    }
    Ok(Some(TurnPatch {
        server,
        user: a.turn_user.clone(),
        password,
        secret: a.turn_secret_file.clone().map(SecretSource::File),
    }))
}

/// This host's (`own`) or the peer's mail address, when the channel is e-mail.
fn email_address(p: &Profile, own: bool) -> Option<&str> {
    match &p.mediator {
        Some(MediatorConfig::Email(e)) => Some(if own {
            e.from.as_str()
        } else {
            e.peer.as_str()
        }),
        _ => None,
    }
    .filter(|a| !a.is_empty())
}

/// The original tool's ids are plain words (`--host-id=remote`): on the command line an
/// id without `@` is the instance name under the side's mail address, so
/// `--host-id=remote --email-from=peerhost@peermailer.com` is
/// `peerhost@peermailer.com/remote`. Mail addresses are case-insensitive in practice
/// and ids are lower case, so the address is lower-cased. The result is parsed with
/// the one rule of [`PeerId`].
fn qualify_id(
    id: &str,
    flag: &str,
    address_flag: &str,
    address: Option<&str>,
) -> Result<PeerId, Failure> {
    let full = if id.contains('@') {
        id.to_string()
    } else {
        match address {
            Some(mail) => format!("{}/{id}", mail.to_ascii_lowercase()),
            None => {
                return Err(usage(format!(
                    "{flag} {id:?} is an instance name without a mail address: give the whole \
                     id (mail@domain/{id}) or {address_flag} to put it under"
                )))
            }
        }
    };
    PeerId::parse(&full).map_err(|e| usage(format!("{flag}: {e}")))
}

fn any_email_flag(a: &ConnectArgs) -> bool {
    a.email_smtps.is_some()
        || a.email_imaps.is_some()
        || a.email_login.is_some()
        || a.email_passwd.is_some()
        || a.email_passwd_file.is_some()
        || a.email_passwd_env.is_some()
        || a.email_from.is_some()
        || a.email_to.is_some()
        || a.email_ca.is_some()
        || a.email_cert.is_some()
        || a.email_key.is_some()
        || a.email_starttls
}

fn email_patch(a: &ConnectArgs) -> Result<Option<EmailPatch>, Failure> {
    if !any_email_flag(a) {
        return Ok(None);
    }
    let smtp_port = if a.email_starttls {
        defaults::SMTP_STARTTLS_PORT
    } else {
        defaults::SMTP_IMPLICIT_TLS_PORT
    };
    let smtp = a
        .email_smtps
        .as_deref()
        .map(|v| HostPort::parse(v, Some(smtp_port)))
        .transpose()
        .map_err(|e| usage(format!("--email-smtps: {e}")))?;
    let imap = a
        .email_imaps
        .as_deref()
        .map(|v| HostPort::parse(v, Some(defaults::IMAP_PORT)))
        .transpose()
        .map_err(|e| usage(format!("--email-imaps: {e}")))?;
    let sources = [
        a.email_passwd.is_some(),
        a.email_passwd_file.is_some(),
        a.email_passwd_env.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        return Err(usage(
            "give only one of --email-passwd, --email-passwd-file, --email-passwd-env",
        ));
    }
    let password = if let Some(v) = &a.email_passwd {
        log::warn!(
            "--email-passwd puts the password in the process list; prefer --email-passwd-file"
        );
        Some(SecretSource::Plain(plexus::secret::Password::new(
            v.clone(),
        )))
    } else if let Some(v) = &a.email_passwd_file {
        Some(SecretSource::File(v.clone()))
    } else {
        a.email_passwd_env.clone().map(SecretSource::Env)
    };
    Ok(Some(EmailPatch {
        smtp,
        smtp_mode: a.email_starttls.then_some(SmtpMode::StartTls),
        imap,
        login: a.email_login.clone(),
        password,
        from: a.email_from.clone(),
        to: a.email_to.clone(),
        ca_file: a.email_ca.clone(),
        client_cert: a.email_cert.clone(),
        client_key: a.email_key.clone(),
    }))
}

fn command_patch(a: &ConnectArgs) -> Result<Option<CommandPatch>, Failure> {
    let any = a.exec_command.is_some()
        || !a.exec_args.is_empty()
        || !a.exec_env.is_empty()
        || a.exec_pwd.is_some()
        || a.exec_log_file.is_some();
    if !any {
        return Ok(None);
    }
    let env = a
        .exec_env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| usage(format!("--exec-env {kv:?}: expected NAME=VALUE")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(CommandPatch {
        program: a.exec_command.clone(),
        args: (!a.exec_args.is_empty()).then(|| a.exec_args.clone()),
        pwd: a.exec_pwd.clone(),
        log_file: a.exec_log_file.clone(),
        env,
    }))
}

/// Load the profiles, apply the environment and the flags, and wire the session:
/// one peer per `--profile` (at least one, even without a profile: flags alone
/// describe a peer).
fn prepare(args: &ConnectArgs, accepting: bool) -> Result<Session, Failure> {
    let names: Vec<Option<&str>> = if args.profile.is_empty() {
        vec![None]
    } else {
        args.profile.iter().map(|s| Some(s.as_str())).collect()
    };
    if names.len() > 1 && !accepting {
        return Err(usage(
            "invite takes one --profile (accept may take several)",
        ));
    }
    let profiles: Vec<Profile> = names
        .iter()
        .map(|n| resolve_profile(args, *n))
        .collect::<Result<_, _>>()?;
    if profiles.iter().any(|p| p.executor.is_none()) {
        return Err(usage(
            "no executor: pass --exec-command PROGRAM or set `executor:` in the profile",
        ));
    }
    let mut session = Session::from_profiles(&profiles).map_err(|e| {
        if e.is_usage() {
            usage(e.to_string())
        } else {
            failed(e.to_string())
        }
    })?;
    if accepting && args.rendezvous_timeout.is_none() {
        // An acceptor waits until told otherwise.
        session.settings_mut().rendezvous_timeout = None;
    }
    Ok(session)
}

fn report(f: &Finished) -> Result<(), Failure> {
    println!(
        "corridor {} -> {} (public {}), {}",
        f.corridor.inner, f.corridor.peer, f.corridor.outer, f.timeline
    );
    match &f.exec {
        Ok(_) => Ok(()),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// `plexus invite`.
pub fn run_invite(args: &ConnectArgs) -> Result<(), Failure> {
    if args.once {
        return Err(usage("--once is for accept"));
    }
    let mut session = prepare(args, false)?;
    let mut executor = session
        .executor(0)
        .expect("prepare checked that every peer has an executor")
        .map_err(|e| usage(e.to_string()))?;
    // Loops while a persistent executor asks for a new path (see invite_and_run).
    let finished = session
        .invite_and_run(executor.as_mut())
        .map_err(|e| failed(e.to_string()))?;
    report(&finished)
}

/// `plexus accept`.
pub fn run_accept(args: &ConnectArgs) -> Result<(), Failure> {
    let mut session = prepare(args, true)?;
    let f = session
        .serve(args.once)
        .map_err(|e| failed(e.to_string()))?;
    report(&f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags become one patch: plain-word ids go under the flag's mail address, else the
    /// profile's, and come out as PeerIds; the e-mail flags keep the profile's other
    /// settings.
    #[test]
    fn flags_become_one_patch_over_the_profile() {
        let mut p = Profile::default();
        p.apply(ProfilePatch {
            email: Some(EmailPatch {
                smtp: Some(HostPort::parse("m:465", None).unwrap()),
                imap: Some(HostPort::parse("m:993", None).unwrap()),
                from: Some("Me@Example.org".into()),
                to: Some("peer@example.net".into()),
                ..EmailPatch::default()
            }),
            ..ProfilePatch::default()
        })
        .unwrap();
        let args = ConnectArgs {
            host_id: Some("laptop".into()),
            peer_id: Some("nas".into()),
            email_to: Some("other@example.net".into()),
            email_starttls: true,
            ..ConnectArgs::default()
        };
        let patch = flags_patch(&p, &args).unwrap();
        assert_eq!(patch.host_id.unwrap().as_str(), "me@example.org/laptop");
        assert_eq!(patch.peer_id.unwrap().as_str(), "other@example.net/nas");
        let e = patch.email.unwrap();
        assert_eq!(e.smtp_mode, Some(SmtpMode::StartTls));
        assert!(e.from.is_none() && e.smtp.is_none());
        // An id PeerId refuses is a usage error naming the flag.
        let args = ConnectArgs {
            host_id: Some("Bad@Example.org/x".into()),
            ..ConnectArgs::default()
        };
        match flags_patch(&p, &args) {
            Err(Failure::Usage(m)) => assert!(m.contains("--host-id"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
