//! The built-in command executor: starts the user's program on an open corridor.
//!
//! By default the program gets the original tool's six arguments
//! `innerip innerport outerip outerport peerip peerport`; an argument template with
//! placeholders can replace them. No shell is involved unless asked for, and even then
//! the values are passed as positional parameters (`"$@"`, `$1`…), never pasted into
//! shell code. Every value is typed (addresses) or checked against a safe charset (ids)
//! before it reaches argv.
//!
//! The program does not inherit plexus's environment, which holds secrets (the mail
//! password, a Telegram token, whatever a `*_env` setting names). It gets the variables
//! in [`ENV_ALLOW`] and every `LC_*` from plexus's environment, the names the user lists
//! in `env_pass`, then the `PLEXUS_*` corridor variables set by plexus itself, then the
//! user's `env` settings. Nothing else is copied, whatever its prefix.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::executor::{Corridor, ExecError, ExecReport, Executor};

/// Placeholders an argument template (and env values) may use.
pub const PLACEHOLDERS: [&str; 8] = [
    "inner_ip",
    "inner_port",
    "outer_ip",
    "outer_port",
    "peer_ip",
    "peer_port",
    "host_id",
    "peer_id",
];

/// Variables an executor inherits from plexus's environment (with every `LC_*`): what a
/// program needs to find its tools, its home and the user's terminal, locale, agent and
/// display. No secret travels in any of them.
pub const ENV_ALLOW: [&str; 16] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "COLORTERM",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "SSH_AUTH_SOCK",
];

/// The default template: the original tool's argument order.
pub const DEFAULT_ARGS: [&str; 6] = [
    "{inner_ip}",
    "{inner_port}",
    "{outer_ip}",
    "{outer_port}",
    "{peer_ip}",
    "{peer_port}",
];

/// Settings of the command executor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandConfig {
    /// The program (a leading `~/` means the home directory). With `shell`, a shell
    /// command line that receives the arguments as `"$@"`.
    pub program: String,
    /// Argument template; `None` means [`DEFAULT_ARGS`].
    pub args: Option<Vec<String>>,
    /// Run through `/bin/sh -c` (values still travel as positional parameters).
    pub shell: bool,
    /// Working directory (`--exec-pwd`).
    pub pwd: Option<PathBuf>,
    /// Extra environment, values may use placeholders.
    pub env: Vec<(String, String)>,
    /// Names of further variables to pass from plexus's environment (beyond
    /// [`ENV_ALLOW`]); `PLEXUS_*` names are refused.
    pub env_pass: Vec<String>,
    /// Append stdout and stderr here (created mode 0600) instead of inheriting them.
    pub log_file: Option<PathBuf>,
}

/// Runs a command; see the module docs.
#[derive(Debug)]
pub struct CommandExecutor {
    config: CommandConfig,
}

/// A host or peer id is safe for argv when it is short, uses only
/// `A-Z a-z 0-9 . _ - @ + / = :` and does not start with `-` (no option injection).
pub fn validate_id(id: &str) -> Result<(), ExecError> {
    let ok = !id.is_empty()
        && id.len() <= 256
        && !id.starts_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@+/=:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ExecError::Config(format!(
            "id {id:?} is not allowed on a command line: use 1-256 characters from \
             A-Z a-z 0-9 . _ - @ + / = : and do not start with '-'"
        )))
    }
}

fn validate_env_name(name: &str) -> Result<(), ExecError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok && !name.starts_with("PLEXUS_") {
        Ok(())
    } else {
        Err(ExecError::Config(format!(
            "environment variable name {name:?}: use letters, digits and '_', not starting \
             with a digit, and not the reserved PLEXUS_ prefix"
        )))
    }
}

/// The part of `vars` (plexus's environment) an executor inherits: [`ENV_ALLOW`], every
/// `LC_*` and the names in `pass`. Never a `PLEXUS_*` variable: the corridor's are set
/// afresh, and the others may hold secrets.
pub fn inherited_env(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    pass: &[String],
) -> Vec<(OsString, OsString)> {
    vars.into_iter()
        .filter(|(name, _)| {
            let Some(name) = name.to_str() else {
                return false;
            };
            !name.starts_with("PLEXUS_")
                && (ENV_ALLOW.contains(&name)
                    || name.starts_with("LC_")
                    || pass.iter().any(|p| p == name))
        })
        .collect()
}

/// Expand `{name}` placeholders in `template`; `{{` and `}}` stand for braces.
/// With `corridor` `None` only checks the template.
pub fn expand(template: &str, corridor: Option<&Corridor>) -> Result<String, ExecError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(ExecError::Config(format!(
                "template {template:?}: unmatched '}}' (write '}}}}' for a literal brace)"
            )));
        }
        let Some(end) = tail.find('}') else {
            return Err(ExecError::Config(format!(
                "template {template:?}: unclosed '{{' (write '{{{{' for a literal brace)"
            )));
        };
        let name = &tail[1..end];
        if !PLACEHOLDERS.contains(&name) {
            return Err(ExecError::Config(format!(
                "template {template:?}: unknown placeholder {{{name}}}; known: {}",
                PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(" ")
            )));
        }
        if let Some(c) = corridor {
            out.push_str(&value(name, c));
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn value(name: &str, c: &Corridor) -> String {
    match name {
        "inner_ip" => c.inner.ip().to_string(),
        "inner_port" => c.inner.port().to_string(),
        "outer_ip" => c.outer.ip().to_string(),
        "outer_port" => c.outer.port().to_string(),
        "peer_ip" => c.peer.ip().to_string(),
        "peer_port" => c.peer.port().to_string(),
        "host_id" => c.host_id.clone(),
        "peer_id" => c.peer_id.clone(),
        _ => String::new(),
    }
}

fn expand_home(program: &str) -> PathBuf {
    match (program.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(program),
    }
}

impl CommandExecutor {
    /// Check the settings (program, templates, env names) up front.
    pub fn new(config: CommandConfig) -> Result<CommandExecutor, ExecError> {
        if config.program.trim().is_empty() {
            return Err(ExecError::Config(
                "no command given: set executor.command.program or --exec-command".into(),
            ));
        }
        for a in config.args.iter().flatten() {
            expand(a, None)?;
        }
        for (k, v) in &config.env {
            validate_env_name(k)?;
            expand(v, None)?;
        }
        for k in &config.env_pass {
            validate_env_name(k)?;
        }
        if let Some(d) = &config.pwd {
            if !d.is_dir() {
                return Err(ExecError::Config(format!(
                    "working directory {} does not exist or is not a directory",
                    d.display()
                )));
            }
        }
        Ok(CommandExecutor { config })
    }

    /// The argument vector (after the program) for `corridor`.
    pub fn arguments(&self, corridor: &Corridor) -> Result<Vec<String>, ExecError> {
        validate_id(&corridor.host_id)?;
        validate_id(&corridor.peer_id)?;
        match &self.config.args {
            Some(t) => t.iter().map(|a| expand(a, Some(corridor))).collect(),
            None => DEFAULT_ARGS
                .iter()
                .map(|a| expand(a, Some(corridor)))
                .collect(),
        }
    }

    fn command(&self, corridor: &Corridor) -> Result<Command, ExecError> {
        let args = self.arguments(corridor)?;
        let mut cmd = if self.config.shell {
            let mut c = Command::new("/bin/sh");
            // $0 is "plexus-exec"; the values are $1.. and never parsed as shell code.
            c.arg("-c").arg(&self.config.program).arg("plexus-exec");
            c
        } else {
            Command::new(expand_home(&self.config.program))
        };
        cmd.args(&args);
        if let Some(d) = &self.config.pwd {
            cmd.current_dir(d);
        }
        // An allow-list, not a deny-list: plexus's environment holds passwords and tokens.
        cmd.env_clear()
            .envs(inherited_env(std::env::vars_os(), &self.config.env_pass));
        cmd.env("PLEXUS_KEY", corridor.key.to_hex().as_str())
            .env("PLEXUS_HOST_ID", &corridor.host_id)
            .env("PLEXUS_PEER_ID", &corridor.peer_id)
            .env("PLEXUS_INNER", corridor.inner.to_string())
            .env("PLEXUS_OUTER", corridor.outer.to_string())
            .env("PLEXUS_PEER", corridor.peer.to_string())
            .env(
                "PLEXUS_ROLE",
                if corridor.accepted {
                    "acceptor"
                } else {
                    "inviter"
                },
            );
        for (k, v) in &self.config.env {
            cmd.env(k, expand(v, Some(corridor))?);
        }
        cmd.stdin(Stdio::null());
        Ok(cmd)
    }
}

impl Executor for CommandExecutor {
    fn name(&self) -> &str {
        "command"
    }

    fn run(&mut self, corridor: &Corridor) -> Result<ExecReport, ExecError> {
        let mut cmd = self.command(corridor)?;
        let output = match &self.config.log_file {
            Some(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| {
                        ExecError::Config(format!(
                            "log file {}: {e}; choose a writable path",
                            path.display()
                        ))
                    })?;
                let err = file
                    .try_clone()
                    .map_err(|e| ExecError::Spawn(format!("log file {}: {e}", path.display())))?;
                cmd.stdout(file).stderr(err);
                format!("log file {}", path.display())
            }
            None => "inherited stdout/stderr".to_string(),
        };
        log::info!(
            "starting {} ({} arguments), output: {output}",
            self.config.program,
            self.arguments(corridor)?.len()
        );
        let mut child = cmd.spawn().map_err(|e| {
            ExecError::Spawn(format!(
                "{}: {e}; check the path and that it is executable",
                self.config.program
            ))
        })?;
        let status = child
            .wait()
            .map_err(|e| ExecError::Spawn(format!("waiting for {}: {e}", self.config.program)))?;
        log::info!("{} exited: {status}; output: {output}", self.config.program);
        match status.code() {
            Some(0) => Ok(ExecReport {
                status: Some(0),
                output,
            }),
            Some(code) => Err(ExecError::Failed(format!(
                "{} exited with status {code}; its output: {output}",
                self.config.program
            ))),
            None => Err(ExecError::Failed(format!(
                "{} was killed ({status}); its output: {output}",
                self.config.program
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::SessionKey;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use crate::testing::TempDir;

    fn corridor() -> Corridor {
        Corridor {
            inner: "10.0.0.2:5000".parse().unwrap(),
            outer: "198.51.100.10:40000".parse().unwrap(),
            peer: "203.0.113.20:50000".parse().unwrap(),
            host_id: "alice@example.org/home".into(),
            peer_id: "bob@example.net/nas".into(),
            key: SessionKey([0xab; 32]),
            accepted: true,
        }
    }

    /// A script that records its argv, cwd and environment into `out`, then exits
    /// with the code in $EXIT_CODE (default 0).
    fn script(dir: &Path) -> PathBuf {
        let p = dir.join("record.sh");
        fs::write(
            &p,
            format!(
                "#!/bin/sh\nout={}\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > \"$out.argv\"\n\
                 pwd > \"$out.pwd\"\nenv | grep -E '^(PLEXUS_|MY_)' | sort > \"$out.env\"\n\
                 echo to-stdout; echo to-stderr >&2\nexit \"${{EXIT_CODE:-0}}\"\n",
                dir.join("out").display()
            ),
        )
        .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).unwrap();
        p
    }

    fn read(dir: &Path, what: &str) -> String {
        fs::read_to_string(dir.join(format!("out.{what}"))).unwrap()
    }

    #[test]
    fn default_six_arguments_env_and_log_file() {
        let d = TempDir::new("default");
        let prog = script(&d);
        let log = d.join("exec.log");
        fs::write(&log, "earlier run\n").unwrap();
        let mut e = CommandExecutor::new(CommandConfig {
            program: prog.display().to_string(),
            pwd: Some(d.to_path_buf()),
            env: vec![("MY_VAR".into(), "peer={peer_ip}".into())],
            log_file: Some(log.clone()),
            ..Default::default()
        })
        .unwrap();
        let r = e.run(&corridor()).unwrap();
        assert_eq!(r.status, Some(0));
        assert_eq!(r.output, format!("log file {}", log.display()));
        assert_eq!(
            read(&d, "argv"),
            "10.0.0.2\n5000\n198.51.100.10\n40000\n203.0.113.20\n50000\n"
        );
        assert_eq!(
            read(&d, "pwd").trim(),
            d.canonicalize().unwrap().to_str().unwrap()
        );
        let env = read(&d, "env");
        for line in [
            "MY_VAR=peer=203.0.113.20",
            &format!("PLEXUS_KEY={}", "ab".repeat(32)),
            "PLEXUS_HOST_ID=alice@example.org/home",
            "PLEXUS_PEER_ID=bob@example.net/nas",
            "PLEXUS_INNER=10.0.0.2:5000",
            "PLEXUS_OUTER=198.51.100.10:40000",
            "PLEXUS_PEER=203.0.113.20:50000",
            "PLEXUS_ROLE=acceptor",
        ] {
            assert!(env.lines().any(|l| l == line), "{line} missing in {env}");
        }
        // Appended, both streams.
        assert_eq!(
            fs::read_to_string(&log).unwrap(),
            "earlier run\nto-stdout\nto-stderr\n"
        );
    }

    #[test]
    fn new_log_file_is_private() {
        let d = TempDir::new("logmode");
        let log = d.join("new.log");
        let mut e = CommandExecutor::new(CommandConfig {
            program: script(&d).display().to_string(),
            log_file: Some(log.clone()),
            ..Default::default()
        })
        .unwrap();
        e.run(&corridor()).unwrap();
        assert_eq!(
            fs::metadata(&log).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn template_with_text_and_ids() {
        let d = TempDir::new("template");
        let mut e = CommandExecutor::new(CommandConfig {
            program: script(&d).display().to_string(),
            args: Some(vec![
                "--remote={peer_ip}:{peer_port}".into(),
                "{host_id}".into(),
                "{peer_id}".into(),
                "{{literal}}".into(),
                "$(touch pwned)".into(),
            ]),
            log_file: Some(d.join("log")),
            ..Default::default()
        })
        .unwrap();
        e.run(&corridor()).unwrap();
        assert_eq!(
            read(&d, "argv"),
            "--remote=203.0.113.20:50000\nalice@example.org/home\nbob@example.net/nas\n{literal}\n$(touch pwned)\n"
        );
        assert!(!d.join("pwned").exists());
    }

    #[test]
    fn shell_gets_values_as_positional_parameters() {
        let d = TempDir::new("shell");
        let prog = script(&d);
        let mut e = CommandExecutor::new(CommandConfig {
            program: format!("EXIT_CODE=0 '{}' \"$@\" extra", prog.display()),
            shell: true,
            args: Some(vec!["{peer_id}".into(), "a b; touch pwned".into()]),
            log_file: Some(d.join("log")),
            ..Default::default()
        })
        .unwrap();
        e.run(&corridor()).unwrap();
        assert_eq!(
            read(&d, "argv"),
            "bob@example.net/nas\na b; touch pwned\nextra\n"
        );
        assert!(!d.join("pwned").exists());
    }

    #[test]
    fn exit_status_is_reported() {
        let d = TempDir::new("status");
        let log = d.join("log");
        let mut e = CommandExecutor::new(CommandConfig {
            program: script(&d).display().to_string(),
            env: vec![("EXIT_CODE".into(), "3".into())],
            log_file: Some(log.clone()),
            ..Default::default()
        })
        .unwrap();
        let err = e.run(&corridor()).unwrap_err().to_string();
        assert!(err.contains("status 3"), "{err}");
        assert!(err.contains(&log.display().to_string()), "{err}");
    }

    #[test]
    fn bad_settings_and_values_are_refused() {
        let bad = |args: Vec<&str>| {
            CommandExecutor::new(CommandConfig {
                program: "/bin/true".into(),
                args: Some(args.into_iter().map(String::from).collect()),
                ..Default::default()
            })
            .unwrap_err()
            .to_string()
        };
        assert!(bad(vec!["{peer_addr}"]).contains("unknown placeholder {peer_addr}"));
        assert!(bad(vec!["{peer_ip"]).contains("unclosed"));
        assert!(bad(vec!["x}"]).contains("unmatched"));
        let env_err = CommandExecutor::new(CommandConfig {
            program: "/bin/true".into(),
            env: vec![("PLEXUS_KEY".into(), "x".into())],
            ..Default::default()
        })
        .unwrap_err();
        assert!(env_err.to_string().contains("PLEXUS_"));
        assert!(CommandExecutor::new(CommandConfig::default()).is_err());
        assert!(CommandExecutor::new(CommandConfig {
            program: "/bin/true".into(),
            pwd: Some("/nonexistent-crd".into()),
            ..Default::default()
        })
        .is_err());

        let e = CommandExecutor::new(CommandConfig {
            program: "/bin/true".into(),
            ..Default::default()
        })
        .unwrap();
        for id in ["-rf", "a b", "$(x)", "a;b", "", "é"] {
            let mut c = corridor();
            c.peer_id = id.into();
            assert!(e.arguments(&c).is_err(), "{id:?}");
        }
    }

    #[test]
    fn inherited_env_is_an_allow_list() {
        let vars = [
            ("PATH", "/usr/bin"),
            ("HOME", "/home/a"),
            ("LC_TIME", "C"),
            ("SSH_AUTH_SOCK", "/run/agent"),
            ("PLEXUS_EMAIL_PASSWORD", "hunter2"),
            ("PLEXUS_TELEGRAM_TOKEN", "123:abc"),
            ("PLEXUS_KEY", "stale"),
            ("MAIL_PW", "hunter2"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("EXTRA", "yes"),
            ("PLEXUS_PASSED", "no"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let pass = ["EXTRA".to_string(), "PLEXUS_PASSED".to_string()];
        let got: Vec<String> = inherited_env(vars, &pass)
            .into_iter()
            .map(|(k, _)| k.into_string().unwrap())
            .collect();
        assert_eq!(got, ["PATH", "HOME", "LC_TIME", "SSH_AUTH_SOCK", "EXTRA"]);
        // env_pass cannot reach into PLEXUS_*.
        let e = CommandExecutor::new(CommandConfig {
            program: "/bin/true".into(),
            env_pass: vec!["PLEXUS_EMAIL_PASSWORD".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("PLEXUS_"), "{e}");
    }

    /// Where [`env_dump_child`] writes; set only by [`executor_environment_carries_no_secret`].
    const CHILD_DIR: &str = "CRD_EXEC_ENV_CHILD_DIR";

    /// Runs inside a child test process whose environment holds secrets (see below);
    /// does nothing in a normal test run.
    #[test]
    fn env_dump_child() {
        let Some(dir) = std::env::var_os(CHILD_DIR) else {
            return;
        };
        let dir = PathBuf::from(dir);
        let prog = dir.join("dump.sh");
        fs::write(
            &prog,
            format!("#!/bin/sh\nenv > '{}'\n", dir.join("env").display()),
        )
        .unwrap();
        fs::set_permissions(&prog, fs::Permissions::from_mode(0o700)).unwrap();
        let mut e = CommandExecutor::new(CommandConfig {
            program: prog.display().to_string(),
            env: vec![("MY_VAR".into(), "{peer_port}".into())],
            env_pass: vec!["EXTRA_PASSED".into()],
            log_file: Some(dir.join("log")),
            ..Default::default()
        })
        .unwrap();
        e.run(&corridor()).unwrap();
    }

    #[test]
    fn executor_environment_carries_no_secret() {
        let d = TempDir::new("envdump");
        let secrets = [
            ("PLEXUS_EMAIL_PASSWORD", "mail-pw-0001"),
            ("PLEXUS_TELEGRAM_TOKEN", "12345:tg-token-0002"),
            // What `--email-passwd-env MY_MAIL_PW` would name.
            ("MY_MAIL_PW", "custom-pw-0003"),
            ("PLEXUS_PLUGIN_DIR", "/plugins-0004"),
            ("UNRELATED", "not-passed-0005"),
        ];
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "executor::command::tests::env_dump_child",
                "--exact",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, d.path())
            .envs(secrets)
            .env("EXTRA_PASSED", "extra-ok")
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "child test failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = fs::read_to_string(d.join("env")).unwrap();
        for (name, value) in secrets {
            assert!(
                !env.contains(value),
                "{name} leaked into the executor:\n{env}"
            );
            assert!(!env.contains(&format!("{name}=")), "{name} in:\n{env}");
        }
        let path = std::env::var("PATH").unwrap();
        for line in [
            format!("PATH={path}"),
            "LC_ALL=C".into(),
            "EXTRA_PASSED=extra-ok".into(),
            "MY_VAR=50000".into(),
            format!("PLEXUS_KEY={}", "ab".repeat(32)),
            "PLEXUS_PEER=203.0.113.20:50000".into(),
            "PLEXUS_ROLE=acceptor".into(),
        ] {
            assert!(env.lines().any(|l| l == line), "{line} missing in:\n{env}");
        }
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let mut e = CommandExecutor::new(CommandConfig {
            program: "/nonexistent-crd/prog".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(e.run(&corridor()), Err(ExecError::Spawn(_))));
    }
}
