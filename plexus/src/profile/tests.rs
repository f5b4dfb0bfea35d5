use super::*;
use crate::relay::RelayPolicy;
use crate::secret::SecretSource;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

struct Dir(PathBuf);
impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("crd-profile-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const FULL: &str = r#"
host: { id: alice@example.org/laptop, cert: alice.pem, key: alice.key }
peer:
  id: bob@example.net/nas
  cert: certs/bob.pem
  ca: /etc/plexus/ca.pem
stun: ["stun.example.net", "198.51.100.1:3479", "[2001:db8::1]:3478"]
bind: "10.0.0.2:40000"
punch_hops: 3
timeouts: { discovery_ms: 1500, rendezvous_s: 60, handshake_ms: 8000 }
replay: { window_s: 120, state_file: state/replay }
mediator:
  email:
    smtp: "mail.example.org:587"
    smtp_tls: starttls
    imap: "mail.example.org:993"
    login: alice
    password: { env: CRD_MAIL_PW }
    from: alice@example.org
    to: bob@example.net
    ca_file: mail-ca.pem
executor:
  command:
    program: ./tunnel.sh
    args: ["--peer={peer_ip}:{peer_port}", "{peer_id}"]
    env: { MODE: udp }
    log_file: ~/tunnel.log
"#;

fn parse(text: &str) -> Result<Profile, ProfileError> {
    Profile::from_yaml(
        text,
        Path::new("/home/u/.config/plexus/profiles/bob.yaml"),
        false,
    )
}

#[test]
fn full_profile_resolves() {
    let p = parse(FULL).unwrap();
    let dir = Path::new("/home/u/.config/plexus/profiles");
    assert_eq!(
        p.host.id.as_ref().unwrap().as_str(),
        "alice@example.org/laptop"
    );
    assert_eq!(p.host.key, dir.join("alice.key"));
    assert_eq!(p.peer.cert, dir.join("certs/bob.pem"));
    assert_eq!(p.peer.ca, Some(PathBuf::from("/etc/plexus/ca.pem")));
    assert_eq!(
        p.stun,
        vec![
            HostPort {
                host: "stun.example.net".into(),
                port: 3478
            },
            HostPort {
                host: "198.51.100.1".into(),
                port: 3479
            },
            HostPort {
                host: "2001:db8::1".into(),
                port: 3478
            },
        ]
    );
    assert_eq!(p.bind, "10.0.0.2:40000".parse().unwrap());
    assert_eq!(p.punch_hops, PunchHops::Fixed(3));
    assert_eq!(p.timeouts.handshake, Duration::from_millis(8000));
    assert_eq!(p.replay.state_file, Some(dir.join("state/replay")));
    let Some(MediatorConfig::Email(e)) = &p.mediator else {
        panic!()
    };
    assert_eq!(e.smtp_mode, SmtpMode::StartTls);
    assert_eq!(e.password, SecretSource::Env("CRD_MAIL_PW".into()));
    assert_eq!(e.folder, "INBOX");
    assert_eq!(e.ca_file, Some(dir.join("mail-ca.pem")));
    let Some(ExecutorConfig::Command(c)) = &p.executor else {
        panic!()
    };
    assert_eq!(c.program, dir.join("tunnel.sh").display().to_string());
    assert_eq!(c.env, vec![("MODE".to_string(), "udp".to_string())]);
    assert!(c.log_file.as_ref().unwrap().ends_with("tunnel.log"));
    assert!(p.warnings.is_empty());
}

#[test]
fn defaults_apply() {
    let p = parse("host: {id: a@x/1, cert: c, key: k}\npeer: {id: b@y/1, cert: pc}\n").unwrap();
    assert_eq!(p.punch_hops, PunchHops::Auto);
    assert_eq!(p.bind, "0.0.0.0:0".parse().unwrap());
    assert_eq!(p.timeouts, Timeouts::default());
    assert!(p.mediator.is_none() && p.executor.is_none() && !p.insecure_plaintext);
}

fn parse_err(text: &str) -> (Option<usize>, Option<usize>, String) {
    match parse(text) {
        Err(ProfileError::Parse {
            line,
            column,
            message,
            ..
        }) => (line, column, message),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn unknown_key_names_key_line_and_column() {
    let text = "host: {id: a@x/1, cert: c, key: k}\npeer:\n  id: b@y/1\n  cert: pc\n  kye: x\n";
    let (line, column, msg) = parse_err(text);
    assert_eq!((line, column), (Some(5), Some(3)));
    assert!(msg.contains("unknown field `kye`"), "{msg}");
    assert!(msg.contains("peer"), "{msg}");
    let full = parse(text).unwrap_err().to_string();
    assert!(full.contains("line 5, column 3"), "{full}");
}

#[test]
fn wrong_types_name_line() {
    let base = "host: {id: a@x/1, cert: c, key: k}\npeer: {id: b@y/1, cert: pc}\n";
    let (line, _, msg) = parse_err(&format!("{base}punch_hops: lots\n"));
    assert_eq!(line, Some(3));
    assert!(msg.contains("punch hops"), "{msg}");
    let (line, _, msg) = parse_err(&format!("{base}punch_hops: 300\n"));
    assert_eq!(line, Some(3), "{msg}");
    let (line, _, msg) = parse_err(&format!("{base}bind: nowhere\n"));
    assert_eq!(line, Some(3));
    assert!(msg.contains("bind"), "{msg}");
    let (line, _, msg) = parse_err(&format!("{base}timeouts:\n  handshake_ms: soon\n"));
    assert_eq!(line, Some(4));
    assert!(msg.contains("handshake_ms"), "{msg}");
    let (line, _, msg) = parse_err(&format!("{base}stun: [\"a:b:c\"]\n"));
    assert_eq!(line, Some(3), "{msg}");
    let (_, _, msg) = parse_err("peer: {id: b@y/1, cert: pc}\n");
    assert!(msg.contains("missing field `host`"), "{msg}");
}

#[test]
fn one_of_maps() {
    let base = "host: {id: a@x/1, cert: c, key: k}\npeer: {id: b@y/1, cert: pc}\n";
    let (line, _, msg) = parse_err(&format!("{base}mediator:\n  telegram: {{}}\n"));
    assert_eq!(line, Some(4), "{msg}");
    assert!(msg.contains("telegram"), "{msg}");
    let (_, _, msg) = parse_err(&format!(
        "{base}executor:\n  command: {{program: x}}\n  plugin: {{name: y}}\n"
    ));
    assert!(msg.contains("only one"), "{msg}");
    let p = parse(&format!(
        "{base}mediator:\n  plugin:\n    name: telegram\n    settings: {{chat: 42, token: {{env: T}}}}\n"
    ))
    .unwrap();
    let Some(MediatorConfig::Plugin(pl)) = p.mediator else {
        panic!()
    };
    assert_eq!(pl.location, PluginLocation::Name("telegram".into()));
    assert_eq!(pl.settings_json, r#"{"chat":42,"token":{"env":"T"}}"#);
    // Plugin settings may hold tokens: only their keys are shown.
    let shown = parse(&format!(
        "{base}mediator:\n  plugin: {{name: t, settings: {{token: abc123}}}}\n"
    ))
    .unwrap()
    .to_string();
    assert!(
        shown.contains("settings keys: token") && !shown.contains("abc123"),
        "{shown}"
    );
    let err = parse(&format!("{base}executor:\n  plugin: {{settings: {{}}}}\n")).unwrap_err();
    assert!(
        err.to_string()
            .contains("executor.plugin: give exactly one"),
        "{err}"
    );
}

#[test]
fn secrets_sources_and_plain_policy() {
    let base = "host: {id: a@x/1, cert: c, key: k}\npeer: {id: b@y/1, cert: pc}\nmediator:\n  email:\n    smtp: \"m:465\"\n    imap: \"m:993\"\n    login: l\n    from: a@x\n    to: b@y\n";
    let with = |pw: &str| format!("{base}    password: {pw}\n");
    let p = parse(&with("{file: pw.txt}")).unwrap();
    let Some(MediatorConfig::Email(e)) = &p.mediator else {
        panic!()
    };
    assert_eq!(
        e.password,
        SecretSource::File(PathBuf::from("/home/u/.config/plexus/profiles/pw.txt"))
    );
    let p = parse(&with("{command: [pass, show, mail]}")).unwrap();
    let Some(MediatorConfig::Email(e)) = &p.mediator else {
        panic!()
    };
    assert_eq!(
        e.password,
        SecretSource::Command(vec!["pass".into(), "show".into(), "mail".into()])
    );
    let (line, _, msg) = parse_err(&with("{vault: x}"));
    assert_eq!(line, Some(10), "{msg}");
    assert!(msg.contains("vault"), "{msg}");
    let (_, _, msg) = parse_err(&with("{env: A, file: b}"));
    assert!(msg.contains("only one"), "{msg}");
    // Plain: allowed with a warning in a private profile, refused in an open one.
    let p = parse(&with("hunter2")).unwrap();
    assert_eq!(p.warnings.len(), 1);
    let shown = p.to_string();
    assert!(
        !shown.contains("hunter2") && shown.contains("****"),
        "{shown}"
    );
    let err = Profile::from_yaml(&with("hunter2"), Path::new("/p/x.yaml"), true).unwrap_err();
    assert!(err.to_string().contains("mediator.email.password"), "{err}");
    assert!(!err.to_string().contains("hunter2"));
}

#[test]
fn executor_template_is_checked_at_load() {
    let base = "host: {id: a@x/1, cert: c, key: k}\npeer: {id: b@y/1, cert: pc}\n";
    // Loaded as written; refused by the one validation that setup and `profile check` run.
    let err = parse(&format!(
        "{base}executor:\n  command: {{program: x, args: [\"{{nope}}\"]}}\n"
    ))
    .unwrap()
    .validate()
    .unwrap_err();
    assert!(err.to_string().contains("executor.command"), "{err}");
    assert!(err.to_string().contains("{nope}"), "{err}");
    let err =
        parse("host: {id: \"-x\", cert: c, key: k}\npeer: {id: b@y/1, cert: pc}\n").unwrap_err();
    assert!(err.to_string().contains("host.id"), "{err}");
}

#[test]
fn env_overrides_profile() {
    let mut p = parse(FULL).unwrap();
    let env: HashMap<&str, &str> = [
        ("PLEXUS_BIND", "0.0.0.0:5000"),
        ("PLEXUS_STUN", "a.example:1, b.example"),
        ("PLEXUS_PUNCH_HOPS", "auto"),
        ("PLEXUS_EMAIL_PASSWORD", "x"),
    ]
    .into();
    p.apply_env(|k| env.get(k).map(|v| v.to_string())).unwrap();
    assert_eq!(p.bind, "0.0.0.0:5000".parse().unwrap());
    assert_eq!(
        p.stun[1],
        HostPort {
            host: "b.example".into(),
            port: 3478
        }
    );
    assert_eq!(p.punch_hops, PunchHops::Auto);
    let Some(MediatorConfig::Email(e)) = &p.mediator else {
        panic!()
    };
    assert_eq!(
        e.password,
        SecretSource::Env("PLEXUS_EMAIL_PASSWORD".into())
    );
    let err = p
        .apply_env(|k| (k == "PLEXUS_PUNCH_HOPS").then(|| "0".into()))
        .unwrap_err();
    assert!(err.to_string().contains("PLEXUS_PUNCH_HOPS"));
}

#[test]
fn locate_names_and_paths() {
    assert!(locate("bob").unwrap().ends_with("plexus/profiles/bob.yaml"));
    assert_eq!(locate("./x.yaml").unwrap(), PathBuf::from("./x.yaml"));
    assert_eq!(locate("/etc/p.yml").unwrap(), PathBuf::from("/etc/p.yml"));
    for bad in ["", ".hidden", "a b", "a;b"] {
        assert!(
            matches!(locate(bad), Err(ProfileError::BadName(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn check_reads_files_and_masks_secrets() {
    let d = Dir::new("check");
    d.file("alice.pem", "cert", 0o644);
    let key = d.file("alice.key", "key", 0o600);
    d.file("bob.pem", "cert", 0o644);
    let pw = d.file("pw.txt", "s3cret-pw\n", 0o600);
    let text = "host: {id: a@x/1, cert: alice.pem, key: alice.key}\npeer: {id: b@y/1, cert: bob.pem}\nmediator:\n  email:\n    smtp: \"m:465\"\n    imap: \"m:993\"\n    login: l\n    password: {file: pw.txt}\n    from: a@x\n    to: b@y\n";
    let prof = d.file("bob.yaml", text, 0o600);
    let out = check(prof.to_str().unwrap()).unwrap();
    assert!(out.contains("password: **** (from file"), "{out}");
    assert!(!out.contains("s3cret-pw"));
    assert!(out.contains("host: a@x/1"));
    // A private key readable by others is refused, naming the key.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = check(prof.to_str().unwrap()).unwrap_err().to_string();
    assert!(
        err.contains("host.key") && err.contains("chmod 600"),
        "{err}"
    );
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    // So is an open password file.
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o644)).unwrap();
    let err = check(prof.to_str().unwrap()).unwrap_err().to_string();
    assert!(err.contains("mediator.email.password"), "{err}");
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
    // A missing certificate is named.
    fs::remove_file(d.0.join("bob.pem")).unwrap();
    let err = check(prof.to_str().unwrap()).unwrap_err().to_string();
    assert!(err.contains("peer.cert"), "{err}");
    // A missing profile.
    let err = check(d.0.join("none.yaml").to_str().unwrap()).unwrap_err();
    assert!(matches!(err, ProfileError::NotFound(_)));
}

#[test]
fn check_locates_plugin_libraries() {
    let d = Dir::new("check-plugins");
    d.file("alice.pem", "cert", 0o644);
    d.file("alice.key", "key", 0o600);
    d.file("bob.pem", "cert", 0o644);
    d.file("libplexus_x.so", "not loaded by check", 0o644);
    let base =
        "host: {id: a@x/1, cert: alice.pem, key: alice.key}\npeer: {id: b@y/1, cert: bob.pem}\n";
    let with = |mediator: &str, executor: &str| {
        let text = format!(
            "{base}mediator:\n  plugin: {{ {mediator}, to: bob, settings: {{ token: s3cret-tk }} }}\n\
             executor:\n  plugin: {{ {executor} }}\n"
        );
        d.file("p.yaml", &text, 0o600).to_str().unwrap().to_string()
    };
    let out = check(&with("path: libplexus_x.so", "path: ./libplexus_x.so")).unwrap();
    assert!(out.contains("settings keys: token (values ****)"), "{out}");
    assert!(!out.contains("s3cret-tk"), "{out}");
    let err = check(&with("path: libplexus_x.so", "path: missing.so"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("executor.plugin.path") && err.contains("missing.so is not a file"),
        "{err}"
    );
    let err = check(&with("name: crd-no-such-plugin", "path: libplexus_x.so"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mediator.plugin.name") && err.contains("crd-no-such-plugin"),
        "{err}"
    );
}

/// Layers: defaults < profile < environment < patch, each field from the highest layer
/// that sets it.
#[test]
fn patch_applies_over_profile_and_environment() {
    let mut p = parse(FULL).unwrap();
    p.apply_env(|k| (k == "PLEXUS_BIND").then(|| "0.0.0.0:5000".into()))
        .unwrap();
    p.apply(ProfilePatch {
        peer_id: Some(PeerId::parse("carol@example.net/nas").unwrap()),
        bind_port: Some(6000),
        handshake_timeout: Some(Duration::from_millis(50)),
        email: Some(EmailPatch {
            to: Some("carol@example.net".into()),
            ..EmailPatch::default()
        }),
        command: Some(CommandPatch {
            env: vec![("MODE".into(), "tcp".into()), ("X".into(), "1".into())],
            ..CommandPatch::default()
        }),
        ..ProfilePatch::default()
    })
    .unwrap();
    assert_eq!(
        p.peer.id.as_ref().unwrap().as_str(),
        "carol@example.net/nas"
    );
    assert_eq!(
        p.host.id.as_ref().unwrap().as_str(),
        "alice@example.org/laptop"
    );
    assert_eq!(p.bind, "0.0.0.0:6000".parse().unwrap());
    assert_eq!(p.timeouts.handshake, Duration::from_millis(50));
    assert_eq!(p.timeouts.discovery, Duration::from_millis(1500));
    let Some(MediatorConfig::Email(e)) = &p.mediator else {
        panic!()
    };
    assert_eq!(
        (e.peer.as_str(), e.from.as_str()),
        ("carol@example.net", "alice@example.org")
    );
    assert_eq!(e.smtp_mode, SmtpMode::StartTls);
    let Some(ExecutorConfig::Command(c)) = &p.executor else {
        panic!()
    };
    assert_eq!(
        c.env,
        vec![("MODE".into(), "tcp".into()), ("X".into(), "1".into())]
    );
    p.validate().unwrap();
}

/// E-mail introduced by flags and e-mail from a profile get the same defaults (the
/// poll interval was 5 s from a profile and 30 s from flags).
#[test]
fn email_defaults_are_the_same_from_profile_flags_and_code() {
    let from_file = parse(
        "host: {id: a@x/1, cert: c, key: k}\npeer: {id: b@y/1, cert: pc}\nmediator:\n  email:\n    smtp: \"m:465\"\n    imap: \"m:993\"\n    login: a@x\n    password: {env: PLEXUS_EMAIL_PASSWORD}\n    from: a@x\n    to: b@y\n",
    )
    .unwrap();
    let mut from_flags = Profile::default();
    from_flags
        .apply(ProfilePatch {
            email: Some(EmailPatch {
                smtp: Some(HostPort::parse("m", Some(defaults::SMTP_IMPLICIT_TLS_PORT)).unwrap()),
                imap: Some(HostPort::parse("m", Some(defaults::IMAP_PORT)).unwrap()),
                from: Some("a@x".into()),
                to: Some("b@y".into()),
                ..EmailPatch::default()
            }),
            ..ProfilePatch::default()
        })
        .unwrap();
    let code = EmailSettings {
        password: SecretSource::Env(defaults::MAIL_PASSWORD_ENV.into()),
        ..EmailSettings::new("m", "a@x", crate::secret::Password::new(""), "a@x", "b@y")
    };
    for p in [&from_file, &from_flags] {
        assert_eq!(p.mediator, Some(MediatorConfig::Email(code.clone())));
    }
    assert_eq!(code.poll_interval, defaults::POLL_INTERVAL);
    // A new e-mail mediator needs its servers; e-mail over a plugin is refused.
    let err = Profile::default()
        .apply(ProfilePatch {
            email: Some(EmailPatch {
                smtp: Some(HostPort::parse("m:465", None).unwrap()),
                ..EmailPatch::default()
            }),
            ..ProfilePatch::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("--email-imaps"), "{err}");
    let mut plugin = parse(
        "host: {id: a@x/1, cert: c, key: k}\npeer: {id: b@y/1, cert: pc}\nmediator:\n  plugin: {name: t, to: b}\n",
    )
    .unwrap();
    let err = plugin
        .apply(ProfilePatch {
            email: Some(EmailPatch::default()),
            ..ProfilePatch::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("plugin"), "{err}");
    assert!(matches!(plugin.mediator, Some(MediatorConfig::Plugin(_))));
}

/// Ids have one rule, PeerId's, applied at load (the loader used to accept ids that
/// the session setup then refused).
#[test]
fn ids_are_peer_ids_at_load() {
    let err =
        parse("host: {id: Alice@x/1, cert: c, key: k}\npeer: {id: b@y/1, cert: pc}\n").unwrap_err();
    assert!(err.to_string().contains("host.id"), "{err}");
    let err = parse("host: {id: a@x/1, cert: c, key: k}\npeer: {id: bob, cert: pc}\n").unwrap_err();
    assert!(err.to_string().contains("peer.id"), "{err}");
}

/// Values are checked once, by validate, whichever layer set them.
#[test]
fn validate_checks_every_layer() {
    let base = "host: {id: a@x/1, cert: c, key: k}\npeer: {id: b@y/1, cert: pc}\n";
    let err = parse(&format!("{base}timeouts: {{handshake_ms: 0}}\n"))
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("timeouts.handshake_ms"), "{err}");
    let mut p = parse(FULL).unwrap();
    p.apply(ProfilePatch {
        email: Some(EmailPatch {
            to: Some("Bob <bob@example.net>".into()),
            ..EmailPatch::default()
        }),
        ..ProfilePatch::default()
    })
    .unwrap();
    let err = p.validate().unwrap_err();
    assert!(err.to_string().contains("mediator.email"), "{err}");
    // Flags alone: no id yet, named without a file path.
    let err = Profile::default().validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "host.id: pass --host-id and --peer-id (or set host.id and peer.id in the profile)"
    );
}

#[test]
fn port_mapping_setting() {
    let base = "host: {id: a@x/1, cert: c, key: k}\npeer: {id: b@y/1, cert: pc}\n";
    assert_eq!(parse(base).unwrap().port_mapping, super::PortMapping::Auto);
    let mut p = parse(&format!("{base}port_mapping: off\n")).unwrap();
    assert_eq!(p.port_mapping, super::PortMapping::Off);
    let (line, _, msg) = parse_err(&format!("{base}port_mapping: maybe\n"));
    assert_eq!(line, Some(3));
    assert!(msg.contains("auto") && msg.contains("off"), "{msg}");
    // The flag wins over the profile.
    p.apply(ProfilePatch {
        port_mapping: Some(super::PortMapping::Auto),
        ..ProfilePatch::default()
    })
    .unwrap();
    assert_eq!(p.port_mapping, super::PortMapping::Auto);
    assert_eq!("off".parse(), Ok(super::PortMapping::Off));
    assert!("no".parse::<super::PortMapping>().is_err());
}

#[test]
fn family_setting() {
    use crate::nat::{Family, FamilyChoice};
    let base = "host: {id: a@x/1, cert: c, key: k}\npeer: {id: b@y/1, cert: pc}\n";
    assert_eq!(parse(base).unwrap().family, FamilyChoice::Auto);
    let mut p = parse(&format!("{base}family: ipv6\n")).unwrap();
    assert_eq!(p.family, FamilyChoice::Only(Family::V6));
    let (line, _, msg) = parse_err(&format!("{base}family: both\n"));
    assert_eq!(line, Some(3));
    assert!(
        msg.contains("auto") && msg.contains("ipv4") && msg.contains("ipv6"),
        "{msg}"
    );
    // The flag wins over the profile.
    p.apply(ProfilePatch {
        family: Some(FamilyChoice::Only(Family::V4)),
        ..ProfilePatch::default()
    })
    .unwrap();
    assert_eq!(p.family, FamilyChoice::Only(Family::V4));
}

const BASE: &str = "host: {id: a@x/1, cert: c, key: k}\npeer: {id: b@y/1, cert: pc}\n";

#[test]
fn relay_and_turn_keys_parse_with_defaults() {
    let p = parse(&format!(
        "{BASE}relay: fallback\nturn:\n  server: turn.example.net\n  user: alice\n  password_file: turn.pw\n"
    ))
    .unwrap();
    assert_eq!(p.relay, RelayPolicy::Fallback);
    let t = p.turn.as_ref().unwrap();
    assert_eq!(t.server.to_string(), "turn.example.net:3478");
    assert_eq!(t.user, "alice");
    assert_eq!(
        t.password,
        Some(SecretSource::File(
            "/home/u/.config/plexus/profiles/turn.pw".into()
        ))
    );
    assert_eq!(t.secret, None);
    p.validate().unwrap();
    let shown = p.to_string();
    assert!(shown.contains("relay: fallback"), "{shown}");
    assert!(
        shown.contains("turn: turn.example.net:3478 user alice"),
        "{shown}"
    );

    let p = parse(&format!(
        "{BASE}relay: always\nturn: {{server: \"t:3480\", user: alice, secret_file: s}}\n"
    ))
    .unwrap();
    let t = p.turn.as_ref().unwrap();
    assert_eq!(
        (t.server.port, t.password.is_none(), t.secret.is_some()),
        (3480, true, true)
    );
    assert_eq!(parse(BASE).unwrap().relay, RelayPolicy::Never);
}

#[test]
fn relay_settings_are_refused_with_a_reason() {
    let err = parse(&format!("{BASE}relay: sometimes\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("never, fallback or always"), "{err}");
    // An inviter may allow the relay without a server of its own (the acceptor allocates).
    parse(&format!("{BASE}relay: always\n"))
        .unwrap()
        .validate()
        .unwrap();
    let err = parse(&format!(
        "{BASE}turn: {{server: t, user: u, password_file: f, password_env: E}}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("not both"), "{err}");
    let err = parse(&format!("{BASE}turn: {{server: t, user: u}}\n"))
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--turn-password-file") && err.contains("--turn-secret-file"),
        "{err}"
    );
    let err = parse(&format!(
        "{BASE}turn: {{server: t, user: u, password_env: E, secret_file: s}}\n"
    ))
    .unwrap()
    .validate()
    .unwrap_err()
    .to_string();
    assert!(err.contains("not both"), "{err}");
    let err = parse(&format!(
        "{BASE}turn: {{server: t, user: \"\", password_env: E}}\n"
    ))
    .unwrap()
    .validate()
    .unwrap_err()
    .to_string();
    assert!(err.contains("--turn-user"), "{err}");
}

#[test]
fn turn_flags_patch_the_profile_and_choose_the_credentials() {
    let mut p = parse(&format!(
        "{BASE}turn: {{server: t, user: alice, password_file: pw}}\n"
    ))
    .unwrap();
    p.apply(ProfilePatch {
        relay: Some(RelayPolicy::Always),
        turn: Some(TurnPatch {
            secret: Some(SecretSource::File("s".into())),
            ..TurnPatch::default()
        }),
        ..ProfilePatch::default()
    })
    .unwrap();
    let t = p.turn.as_ref().unwrap();
    assert_eq!((t.user.as_str(), t.password.is_none()), ("alice", true));
    assert_eq!(t.secret, Some(SecretSource::File("s".into())));
    assert_eq!(p.relay, RelayPolicy::Always);
    p.validate().unwrap();

    // Flags without a server, over a profile without one: the error names --turn.
    let mut p = parse(BASE).unwrap();
    let err = p
        .apply(ProfilePatch {
            turn: Some(TurnPatch {
                user: Some("u".into()),
                ..TurnPatch::default()
            }),
            ..ProfilePatch::default()
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("--turn HOST[:PORT]"), "{err}");
}
