//! `plexus invite`, `plexus accept` and the original tool's flat command line
//! (`plexus --accept --host-id … --email-smtps …`).
//!
//! Flags override the profile (`--profile`), which overrides the environment's defaults;
//! everything is turned once into a validated [`Prepared`] before anything touches the
//! network.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use plexus::exec::{CommandConfig, CommandExecutor};
use plexus::executor::Executor;
use plexus::identity::PeerId;
use plexus::mediator::email::{EmailMediator, EmailSettings, SmtpMode};
use plexus::mediator::Mediator;
use plexus::plugin::{PluginExecutor, PluginMediator};
use plexus::profile::{
    EmailConfig, ExecutorConfig, HostPort, MediatorConfig, PluginConfig, PluginLocation, Profile,
    SmtpTls, DEFAULT_STUN_PORT,
};
use plexus::punch::PunchHops;
use plexus::rendezvous::{Envelope, EnvelopeFiles, Freshness};
use plexus::secret::SecretSource;
use plexus::session::{self, ExecutorFactory, Finished, Peer, SessionSettings};

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
    /// Replay-protection state file [default: ~/.local/state/plexus/replay-HOST-PEER].
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
    /// accept: handle one invitation, then exit with its result.
    #[arg(long)]
    pub once: bool,
    /// INSECURE: send rendezvous messages unsigned and unencrypted. For tests only;
    /// every message logs a warning.
    #[arg(long)]
    pub insecure_plaintext: bool,
}

/// A validated run: everything resolved, nothing connected yet.
pub struct Prepared {
    settings: SessionSettings,
    /// Per peer: its envelope, its address on the channel, its executor.
    peers: Vec<(Envelope, String, ExecutorFactory)>,
    mediator: Box<dyn Mediator>,
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure::Usage(msg.into())
}

fn failed(msg: impl Into<String>) -> Failure {
    Failure::Failed(msg.into())
}

/// Load a profile (if any), apply the environment and the flags.
pub fn resolve_profile(args: &ConnectArgs, name: Option<&str>) -> Result<Profile, Failure> {
    let mut p = match name {
        Some(name) => Profile::load(name).map_err(|e| usage(e.to_string()))?,
        None => Profile::default(),
    };
    p.apply_env(|k| std::env::var(k).ok())
        .map_err(|e| usage(e.to_string()))?;
    apply_flags(&mut p, args)?;
    for w in &p.warnings {
        log::warn!("{w}");
    }
    Ok(p)
}

fn apply_flags(p: &mut Profile, a: &ConnectArgs) -> Result<(), Failure> {
    if let Some(v) = &a.smime_cert {
        p.host.cert = v.clone();
    }
    if let Some(v) = &a.smime_key {
        p.host.key = v.clone();
    }
    if let Some(v) = &a.smime_peer {
        p.peer.cert = v.clone();
    }
    if let Some(v) = &a.smime_ca {
        p.peer.ca = Some(v.clone());
    }
    if let Some(v) = &a.replay_state {
        p.replay.state_file = Some(v.clone());
    }
    let mut stun: Vec<HostPort> = Vec::new();
    for s in &a.stun {
        stun.push(
            HostPort::parse(s, Some(DEFAULT_STUN_PORT))
                .map_err(|e| usage(format!("--stun: {e}")))?,
        );
    }
    if let Some(ip) = &a.stun_ip {
        let port = a.stun_port.unwrap_or(DEFAULT_STUN_PORT);
        stun.push(HostPort {
            host: ip.trim_start_matches('[').trim_end_matches(']').to_string(),
            port,
        });
    } else if a.stun_port.is_some() {
        return Err(usage("--stun-port needs --stun-ip"));
    }
    if !stun.is_empty() {
        p.stun = stun;
    }
    if let Some(ip) = a.bind_ip {
        p.bind.set_ip(ip);
    }
    if let Some(port) = a.bind_port {
        p.bind.set_port(port);
    }
    if let Some(h) = a.punch_hops {
        p.punch_hops = h;
    }
    if let Some(ms) = a.stun_timeout {
        p.timeouts.discovery = Duration::from_millis(ms.max(1));
    }
    if let Some(s) = a.rendezvous_timeout {
        p.timeouts.rendezvous = Duration::from_secs(s.max(1));
    }
    if let Some(ms) = a.handshake_timeout {
        p.timeouts.handshake = Duration::from_millis(ms.max(1));
    }
    if a.insecure_plaintext {
        p.insecure_plaintext = true;
    }
    if let Some(n) = a.max_corridors {
        p.max_corridors = n as usize;
    }
    apply_email_flags(p, a)?;
    apply_exec_flags(p, a)?;
    if let Some(v) = &a.host_id {
        p.host.id = qualify_id(v, "--host-id", "--email-from", email_address(p, true))?;
    }
    if let Some(v) = &a.peer_id {
        p.peer.id = qualify_id(v, "--peer-id", "--email-to", email_address(p, false))?;
    }
    Ok(())
}

/// This host's (`own`) or the peer's mail address, when the channel is e-mail.
fn email_address(p: &Profile, own: bool) -> Option<&str> {
    match &p.mediator {
        Some(MediatorConfig::Email(e)) => Some(if own { e.from.as_str() } else { e.to.as_str() }),
        _ => None,
    }
    .filter(|a| !a.is_empty())
}

/// The original tool's ids are plain words (`--host-id=remote`): on the command line an
/// id without `@` is the instance name under the side's mail address, so
/// `--host-id=remote --email-from=peerhost@peermailer.com` is
/// `peerhost@peermailer.com/remote`. Mail addresses are case-insensitive in practice
/// and ids are lower case, so the address is lower-cased.
fn qualify_id(
    id: &str,
    flag: &str,
    address_flag: &str,
    address: Option<&str>,
) -> Result<String, Failure> {
    if id.contains('@') {
        return Ok(id.to_string());
    }
    match address {
        Some(mail) => Ok(format!("{}/{id}", mail.to_ascii_lowercase())),
        None => Err(usage(format!(
            "{flag} {id:?} is an instance name without a mail address: give the whole id \
             (mail@domain/{id}) or {address_flag} to put it under"
        ))),
    }
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

fn apply_email_flags(p: &mut Profile, a: &ConnectArgs) -> Result<(), Failure> {
    if !any_email_flag(a) {
        return Ok(());
    }
    let mut e = match p.mediator.take() {
        Some(MediatorConfig::Email(e)) => e,
        Some(MediatorConfig::Plugin(_)) => {
            return Err(usage(
                "--email-* flags given but the profile's mediator is a plugin: remove one",
            ))
        }
        None => {
            let need = |v: &Option<String>, flag: &str| {
                v.clone()
                    .ok_or_else(|| usage(format!("e-mail rendezvous needs {flag}")))
            };
            let smtp = need(&a.email_smtps, "--email-smtps HOST:PORT")?;
            let imap = need(&a.email_imaps, "--email-imaps HOST:PORT")?;
            let smtp_port = if a.email_starttls { 587 } else { 465 };
            EmailConfig {
                smtp: HostPort::parse(&smtp, Some(smtp_port))
                    .map_err(|e| usage(format!("--email-smtps: {e}")))?,
                smtp_tls: SmtpTls::Implicit,
                imap: HostPort::parse(&imap, Some(993))
                    .map_err(|e| usage(format!("--email-imaps: {e}")))?,
                login: String::new(),
                password: SecretSource::Env("PLEXUS_EMAIL_PASSWORD".into()),
                from: String::new(),
                to: String::new(),
                ca_file: None,
                client_cert: None,
                client_key: None,
                folder: "INBOX".into(),
                quarantine: None,
                poll_interval: Duration::from_secs(30),
            }
        }
    };
    if let Some(v) = &a.email_smtps {
        let port = if a.email_starttls { 587 } else { 465 };
        e.smtp =
            HostPort::parse(v, Some(port)).map_err(|er| usage(format!("--email-smtps: {er}")))?;
    }
    if a.email_starttls {
        e.smtp_tls = SmtpTls::Starttls;
    }
    if let Some(v) = &a.email_imaps {
        e.imap =
            HostPort::parse(v, Some(993)).map_err(|er| usage(format!("--email-imaps: {er}")))?;
    }
    if let Some(v) = &a.email_login {
        e.login = v.clone();
    }
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
    if let Some(v) = &a.email_passwd {
        log::warn!(
            "--email-passwd puts the password in the process list; prefer --email-passwd-file"
        );
        e.password = SecretSource::Plain(plexus::secret::Secret::new(v.clone()));
    }
    if let Some(v) = &a.email_passwd_file {
        e.password = SecretSource::File(v.clone());
    }
    if let Some(v) = &a.email_passwd_env {
        e.password = SecretSource::Env(v.clone());
    }
    if let Some(v) = &a.email_from {
        e.from = v.clone();
    }
    if let Some(v) = &a.email_to {
        e.to = v.clone();
    }
    if let Some(v) = &a.email_ca {
        e.ca_file = Some(v.clone());
    }
    if let Some(v) = &a.email_cert {
        e.client_cert = Some(v.clone());
    }
    if let Some(v) = &a.email_key {
        e.client_key = Some(v.clone());
    }
    if e.login.is_empty() {
        e.login = e.from.clone();
    }
    p.mediator = Some(MediatorConfig::Email(e));
    Ok(())
}

fn apply_exec_flags(p: &mut Profile, a: &ConnectArgs) -> Result<(), Failure> {
    let any = a.exec_command.is_some()
        || !a.exec_args.is_empty()
        || !a.exec_env.is_empty()
        || a.exec_pwd.is_some()
        || a.exec_log_file.is_some();
    if !any {
        return Ok(());
    }
    let mut c = match p.executor.take() {
        Some(ExecutorConfig::Command(c)) => c,
        _ => CommandConfig::default(),
    };
    if let Some(v) = &a.exec_command {
        c.program = v.clone();
    }
    if !a.exec_args.is_empty() {
        c.args = Some(a.exec_args.clone());
    }
    if let Some(v) = &a.exec_pwd {
        c.pwd = Some(v.clone());
    }
    if let Some(v) = &a.exec_log_file {
        c.log_file = Some(v.clone());
    }
    for kv in &a.exec_env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| usage(format!("--exec-env {kv:?}: expected NAME=VALUE")))?;
        c.env.retain(|(name, _)| name != k);
        c.env.push((k.to_string(), v.to_string()));
    }
    p.executor = Some(ExecutorConfig::Command(c));
    Ok(())
}

/// `$XDG_STATE_HOME/plexus` (or `~/.local/state/plexus`); `None` when neither
/// variable is set.
fn default_state_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })
        .map(|base| base.join("plexus"))
}

/// Where this profile's state lives: beside an explicit replay state file, else the
/// default state directory.
fn state_dir(p: &Profile) -> Option<PathBuf> {
    match &p.replay.state_file {
        Some(f) => f.parent().map(Path::to_path_buf),
        None => default_state_dir(),
    }
}

/// `<state dir>/replay-HOST-PEER`; `None` when there is no state directory, and then
/// the caller must refuse rather than keep replay protection in memory only (a restart
/// would forget every message seen).
fn default_replay_state(host: &PeerId, peer: &PeerId) -> Option<PathBuf> {
    Some(default_state_dir()?.join(format!("replay-{}-{}", host.file_stem(), peer.file_stem())))
}

/// Create the replay state's directory 0700: its file names reveal host and peer ids.
/// An existing directory of ours that is open to others is tightened.
fn private_state_dir(dir: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
    let meta = std::fs::metadata(dir)
        .map_err(|e| failed(format!("cannot read {}: {e}", dir.display())))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() == me && meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| failed(format!("cannot make {} private: {e}", dir.display())))?;
    }
    Ok(())
}

fn resolve_stun(p: &Profile) -> Result<Vec<SocketAddr>, Failure> {
    if p.stun.is_empty() {
        return Err(usage(
            "no STUN server: pass --stun HOST[:PORT] (or --stun-ip) or set `stun:` in the profile",
        ));
    }
    let want_v4 = p.bind.is_ipv4();
    let mut out = Vec::new();
    for hp in &p.stun {
        let addrs = (hp.host.as_str(), hp.port)
            .to_socket_addrs()
            .map_err(|e| failed(format!("cannot resolve STUN server {hp}: {e}")))?;
        match addrs.into_iter().find(|a| a.is_ipv4() == want_v4) {
            Some(a) => out.push(a),
            None => {
                return Err(failed(format!(
                    "STUN server {hp} has no {} address",
                    if want_v4 { "IPv4" } else { "IPv6" }
                )))
            }
        }
    }
    Ok(out)
}

fn build_mediator(
    p: &Profile,
    extra_peers: &[String],
) -> Result<(Box<dyn Mediator>, String), Failure> {
    match &p.mediator {
        None => Err(usage(
            "no rendezvous channel: pass --email-smtps/--email-imaps/… or set `mediator:` in the profile",
        )),
        Some(MediatorConfig::Email(e)) => {
            if e.from.is_empty() || e.to.is_empty() {
                return Err(usage("e-mail rendezvous needs --email-from and --email-to"));
            }
            let password = e
                .password
                .resolve()
                .map_err(|er| usage(format!("mail password: {er}")))?;
            let mut s = EmailSettings::new(
                &e.smtp.host,
                &e.login,
                password,
                &e.from,
                &e.to,
            );
            s.smtp_port = e.smtp.port;
            s.smtp_mode = match e.smtp_tls {
                SmtpTls::Implicit => SmtpMode::ImplicitTls,
                SmtpTls::Starttls => SmtpMode::StartTls,
            };
            s.imap_host = e.imap.host.clone();
            s.imap_port = e.imap.port;
            s.ca_file = e.ca_file.clone();
            s.client_cert = e.client_cert.clone();
            s.client_key = e.client_key.clone();
            s.folder = e.folder.clone();
            s.quarantine_folder = e.quarantine.clone();
            s.poll_interval = e.poll_interval;
            s.extra_peers = extra_peers.to_vec();
            // Mail the server received before any message could still be fresh is
            // skipped unopened, so a flood of old mail costs nothing.
            s.max_age = Some(p.replay.window + Duration::from_secs(Freshness::default().max_skew));
            // Refused UIDs are remembered per mailbox and folder, next to the replay state.
            s.refused_state = state_dir(p).map(|d| {
                let key = format!("{}@{}_{}_{}", e.login, e.imap.host, e.imap.port, e.folder);
                let safe: String = key
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || "@._-".contains(c) { c } else { '_' })
                    .collect();
                d.join(format!("email-refused-{safe}"))
            });
            let m = EmailMediator::new(s).map_err(|er| usage(er.to_string()))?;
            Ok((Box::new(m), e.to.clone()))
        }
        Some(MediatorConfig::Plugin(pl)) => {
            let to = pl.to.clone().ok_or_else(|| {
                usage("the mediator plugin needs `to:` (the peer's address on its channel)")
            })?;
            let m = match &pl.location {
                PluginLocation::Path(path) => PluginMediator::open(path, &pl.settings_json),
                PluginLocation::Name(n) => PluginMediator::load(n, &pl.settings_json),
            }
            .map_err(|e| failed(e.to_string()))?;
            Ok((Box::new(m), to))
        }
    }
}

fn executor_factory(p: &Profile) -> Result<ExecutorFactory, Failure> {
    match p.executor.clone() {
        None => Err(usage(
            "no executor: pass --exec-command PROGRAM or set `executor:` in the profile",
        )),
        Some(ExecutorConfig::Command(c)) => {
            // Validate once now, so a bad template is a usage error, not a late failure.
            CommandExecutor::new(c.clone()).map_err(|e| usage(e.to_string()))?;
            Ok(Arc::new(move || {
                CommandExecutor::new(c.clone()).map(|e| Box::new(e) as Box<dyn Executor>)
            }))
        }
        Some(ExecutorConfig::Plugin(pl)) => {
            let load = move |pl: &PluginConfig| match &pl.location {
                PluginLocation::Path(path) => PluginExecutor::open(path, &pl.settings_json),
                PluginLocation::Name(n) => PluginExecutor::load(n, &pl.settings_json),
            };
            load(&pl).map_err(|e| failed(e.to_string()))?;
            Ok(Arc::new(move || {
                load(&pl)
                    .map(|e| Box::new(e) as Box<dyn Executor>)
                    .map_err(|e| plexus::executor::ExecError::Config(e.to_string()))
            }))
        }
    }
}

/// The peer's address on the profile's channel (mail `to`, plugin `to`).
fn channel_address(p: &Profile) -> Option<String> {
    match &p.mediator {
        Some(MediatorConfig::Email(e)) => Some(e.to.clone()),
        Some(MediatorConfig::Plugin(pl)) => pl.to.clone(),
        None => None,
    }
}

/// Turn the arguments into a ready-to-run session: one peer per `--profile` (at
/// least one, even without a profile: flags alone describe a peer).
pub fn prepare(args: &ConnectArgs, accepting: bool) -> Result<Prepared, Failure> {
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
    let first = &profiles[0];
    for p in &profiles[1..] {
        if p.host.id != first.host.id {
            return Err(usage(format!(
                "all profiles of one acceptor must name the same host id ({} vs {})",
                first.host.id, p.host.id
            )));
        }
    }
    let extra: Vec<String> = profiles[1..].iter().filter_map(channel_address).collect();
    let (mediator, peer_address) = build_mediator(first, &extra)?;
    let stun = resolve_stun(first)?;
    let mut peers = Vec::new();
    for p in &profiles {
        let address = channel_address(p).unwrap_or_else(|| peer_address.clone());
        peers.push((build_envelope(p)?, address, executor_factory(p)?));
    }
    let p = first;
    let settings = SessionSettings {
        stun,
        bind: p.bind,
        punch_hops: p.punch_hops,
        discovery_timeout: p.timeouts.discovery,
        rendezvous_timeout: if accepting && args.rendezvous_timeout.is_none() {
            None
        } else {
            Some(p.timeouts.rendezvous)
        },
        handshake_timeout: p.timeouts.handshake,
        peer_address,
        max_corridors: p.max_corridors,
    };
    Ok(Prepared {
        settings,
        peers,
        mediator,
    })
}

/// The sealing envelope of one profile's host/peer pair.
fn build_envelope(p: &Profile) -> Result<Envelope, Failure> {
    if p.host.id.is_empty() || p.peer.id.is_empty() {
        return Err(usage(
            "pass --host-id and --peer-id (or set host.id and peer.id in the profile)",
        ));
    }
    let host_id = PeerId::parse(&p.host.id).map_err(|e| usage(format!("host id: {e}")))?;
    let peer_id = PeerId::parse(&p.peer.id).map_err(|e| usage(format!("peer id: {e}")))?;
    let freshness = Freshness {
        max_age: p.replay.window.as_secs(),
        ..Freshness::default()
    };
    let replay_state = match p.replay.state_file.clone() {
        Some(f) => f,
        None => default_replay_state(&host_id, &peer_id).ok_or_else(|| {
            usage(
                "neither HOME nor XDG_STATE_HOME is set, so replay protection has nowhere \
                 to remember messages: pass --replay-state PATH (profile: replay.state_file)",
            )
        })?,
    };
    if let Some(dir) = replay_state.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_state_dir(dir)?;
    }
    let envelope = if p.insecure_plaintext {
        let replay = plexus::rendezvous::ReplayGuard::open(&replay_state)
            .map_err(|e| failed(e.to_string()))?;
        Envelope::insecure_plaintext(host_id, peer_id, freshness, replay)
    } else {
        let keys = plexus::profile::default_keys_dir();
        // Not given: the file `plexus cert new --out <config dir>/keys` wrote, if there.
        let or_default = |given: &Path, stem: &str, ext: &str| -> Option<PathBuf> {
            if !given.as_os_str().is_empty() {
                return Some(given.to_path_buf());
            }
            let f = keys.as_ref()?.join(format!("{stem}.{ext}"));
            f.is_file().then_some(f)
        };
        let host_cert = or_default(&p.host.cert, &host_id.file_stem(), "pem");
        let host_key = or_default(&p.host.key, &host_id.file_stem(), "key");
        let peer_cert = or_default(&p.peer.cert, &peer_id.file_stem(), "pem");
        let (Some(host_cert), Some(host_key), Some(peer_cert)) =
            (host_cert.clone(), host_key.clone(), peer_cert.clone())
        else {
            let missing: Vec<String> = [
                (
                    host_cert.is_none(),
                    "--smime-cert",
                    host_id.file_stem(),
                    "pem",
                ),
                (
                    host_key.is_none(),
                    "--smime-key",
                    host_id.file_stem(),
                    "key",
                ),
                (
                    peer_cert.is_none(),
                    "--smime-peer",
                    peer_id.file_stem(),
                    "pem",
                ),
            ]
            .iter()
            .filter(|(m, ..)| *m)
            .map(|(_, flag, stem, ext)| match &keys {
                Some(k) => format!("{flag} (or {})", k.join(format!("{stem}.{ext}")).display()),
                None => flag.to_string(),
            })
            .collect();
            return Err(usage(format!(
                "rendezvous messages are S/MIME sealed: pass {} (or set host.cert, host.key, \
                 peer.cert in the profile); make a certificate with `plexus cert new`",
                missing.join(", ")
            )));
        };
        Envelope::from_files(&EnvelopeFiles {
            host_id,
            host_cert,
            host_key,
            peer_id,
            peer_cert,
            ca: p.peer.ca.clone(),
            replay_state: Some(replay_state),
            freshness,
        })
        .map_err(|e| usage(e.to_string()))?
    };
    Ok(envelope)
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
    let mut p = prepare(args, false)?;
    let (envelope, _, executors) = &mut p.peers[0];
    let mut executor = executors().map_err(|e| usage(e.to_string()))?;
    let f = session::invite(
        &p.settings,
        envelope,
        p.mediator.as_mut(),
        executor.as_mut(),
    )
    .map_err(|e| failed(e.to_string()))?;
    report(&f)
}

/// `plexus accept`.
pub fn run_accept(args: &ConnectArgs) -> Result<(), Failure> {
    let mut p = prepare(args, true)?;
    let executors: Vec<ExecutorFactory> = p.peers.iter().map(|(_, _, x)| x.clone()).collect();
    let mut peers: Vec<Peer<'_>> = p
        .peers
        .iter_mut()
        .map(|(envelope, address, _)| Peer {
            envelope,
            address: address.clone(),
        })
        .collect();
    let f = session::accept(
        &p.settings,
        &mut peers,
        p.mediator.as_mut(),
        &executors,
        args.once,
    )
    .map_err(|e| failed(e.to_string()))?;
    report(&f)
}
