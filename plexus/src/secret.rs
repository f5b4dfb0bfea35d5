//! Secrets from where the user keeps them: an environment variable, a private file or a
//! command's output (never only argv), with a `Debug` that never prints them.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest secret accepted from a file or a command.
pub const MAX_SECRET_LEN: usize = 64 * 1024;
/// How long a secret command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A secret value; `Debug` and `Display` print `****`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the profile itself (allowed, warned about; refused when the profile is
    /// readable by other users).
    Plain(Secret),
    /// An environment variable.
    Env(String),
    /// A file readable by its owner only (like ssh keys); a trailing newline is dropped.
    File(PathBuf),
    /// A command run without a shell; its stdout, minus a trailing newline.
    Command(Vec<String>),
}

impl fmt::Display for SecretSource {
    /// A masked description, for `profile check`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Plain(_) => f.write_str("**** (plain in the profile)"),
            SecretSource::Env(n) => write!(f, "**** (from environment variable {n})"),
            SecretSource::File(p) => write!(f, "**** (from file {})", p.display()),
            SecretSource::Command(c) => write!(f, "**** (from command {:?})", c),
        }
    }
}

/// Why a secret could not be read.
#[derive(Debug)]
pub enum SecretError {
    /// The environment variable is not set or empty.
    EnvMissing(String),
    /// The file is readable by group or others: `chmod 600` it.
    FileTooOpen(PathBuf, u32),
    /// The file could not be read.
    File(PathBuf, std::io::Error),
    /// The command could not start, failed, timed out or printed too much.
    Command(String),
    /// The value is empty or too long.
    BadValue(String),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::EnvMissing(n) => {
                write!(f, "environment variable {n} is not set or empty: export it")
            }
            SecretError::FileTooOpen(p, mode) => write!(
                f,
                "secret file {} has mode {:o}, readable by other users: run chmod 600 on it",
                p.display(),
                mode & 0o777
            ),
            SecretError::File(p, e) => write!(f, "secret file {}: {e}", p.display()),
            SecretError::Command(m) => write!(f, "secret command: {m}"),
            SecretError::BadValue(m) => write!(f, "secret value: {m}"),
        }
    }
}

impl std::error::Error for SecretError {}

/// Refuse a file that group or others may read or write (like ssh does for keys).
pub fn check_private_file(path: &Path) -> Result<(), SecretError> {
    let meta = std::fs::metadata(path).map_err(|e| SecretError::File(path.to_owned(), e))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(SecretError::FileTooOpen(path.to_owned(), mode));
    }
    Ok(())
}

fn trim_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

fn checked(s: String, what: &str) -> Result<Secret, SecretError> {
    if s.is_empty() {
        return Err(SecretError::BadValue(format!(
            "{what} gave an empty secret"
        )));
    }
    Ok(Secret(s))
}

impl SecretSource {
    /// Read the secret now.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        match self {
            SecretSource::Plain(s) => Ok(s.clone()),
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Secret(v)),
                _ => Err(SecretError::EnvMissing(name.clone())),
            },
            SecretSource::File(path) => {
                check_private_file(path)?;
                let mut buf = Vec::new();
                std::fs::File::open(path)
                    .and_then(|f| f.take(MAX_SECRET_LEN as u64 + 1).read_to_end(&mut buf))
                    .map_err(|e| SecretError::File(path.clone(), e))?;
                if buf.len() > MAX_SECRET_LEN {
                    return Err(SecretError::BadValue(format!(
                        "file {} is longer than {MAX_SECRET_LEN} bytes",
                        path.display()
                    )));
                }
                let s = String::from_utf8(buf).map_err(|_| {
                    SecretError::BadValue(format!("file {} is not UTF-8", path.display()))
                })?;
                checked(trim_newline(s), &format!("file {}", path.display()))
            }
            SecretSource::Command(argv) => run_command(argv, COMMAND_TIMEOUT),
        }
    }
}

/// Run `argv` without a shell, with a timeout and bounded output.
fn run_command(argv: &[String], timeout: Duration) -> Result<Secret, SecretError> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(SecretError::Command("empty command".into()));
    };
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| SecretError::Command(format!("{prog}: {e}")))?;
    let mut out = child.stdout.take().expect("piped stdout");
    // Read on a thread so that a command that never exits cannot block us past timeout.
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let r = (&mut out)
            .take(MAX_SECRET_LEN as u64 + 1)
            .read_to_end(&mut buf);
        r.map(|_| buf)
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SecretError::Command(format!(
                    "{prog} did not finish within {} s",
                    timeout.as_secs()
                )));
            }
            Err(e) => return Err(SecretError::Command(format!("{prog}: {e}"))),
        }
    };
    let buf = reader
        .join()
        .map_err(|_| SecretError::Command(format!("{prog}: reading output failed")))?
        .map_err(|e| SecretError::Command(format!("{prog}: {e}")))?;
    // Size first: we stop reading past the limit, so a chatty command may die of
    // SIGPIPE, and "too much output" is the real reason then.
    if buf.len() > MAX_SECRET_LEN {
        return Err(SecretError::Command(format!(
            "{prog} printed more than {MAX_SECRET_LEN} bytes"
        )));
    }
    if !status.success() {
        return Err(SecretError::Command(format!("{prog} failed: {status}")));
    }
    let s = String::from_utf8(buf)
        .map_err(|_| SecretError::Command(format!("{prog} printed non-UTF-8 output")))?;
    checked(trim_newline(s), &format!("command {prog}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn masked_everywhere() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "**** ****");
        let src = SecretSource::Plain(s);
        assert!(!format!("{src:?} {src}").contains("hunter2"));
    }

    #[test]
    fn file_source_refuses_open_modes() {
        let dir = std::env::temp_dir().join(format!("crd-secret-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pw");
        fs::write(&p, "s3cret\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let err = SecretSource::File(p.clone()).resolve().unwrap_err();
        assert!(matches!(err, SecretError::FileTooOpen(..)), "{err}");
        assert!(err.to_string().contains("chmod 600"));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            SecretSource::File(p.clone()).resolve().unwrap().expose(),
            "s3cret"
        );
        fs::write(&p, "").unwrap();
        assert!(SecretSource::File(p).resolve().is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn command_source() {
        let ok = SecretSource::Command(vec!["printf".into(), "%s\\n".into(), "pw;$(x)".into()]);
        assert_eq!(ok.resolve().unwrap().expose(), "pw;$(x)");
        assert!(SecretSource::Command(vec!["false".into()])
            .resolve()
            .is_err());
        assert!(SecretSource::Command(vec![]).resolve().is_err());
        assert!(SecretSource::Command(vec!["/nonexistent-crd".into()])
            .resolve()
            .is_err());
        let err =
            run_command(&["sleep".into(), "5".into()], Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        let big = SecretSource::Command(vec![
            "head".into(),
            "-c".into(),
            "70000".into(),
            "/dev/zero".into(),
        ]);
        assert!(big.resolve().unwrap_err().to_string().contains("more than"));
    }

    #[test]
    fn env_source() {
        assert!(matches!(
            SecretSource::Env("CRD_SURELY_UNSET_VAR".into()).resolve(),
            Err(SecretError::EnvMissing(_))
        ));
        assert_eq!(
            SecretSource::Env("PATH".into()).resolve().unwrap().expose(),
            std::env::var("PATH").unwrap()
        );
    }
}
