//! Secrets from where the user keeps them: an environment variable, a private file or a
//! command's output (never only argv), with a `Debug` that never prints them.
//!
//! Also the crate's one wipe-on-drop mechanism ([`Zeroizing`], [`wipe`]), the one
//! private-file reader ([`read_private_file`]: passwords, mail TLS keys, S/MIME keys) and
//! [`make_non_dumpable`].

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use zeroize::{Zeroize, Zeroizing};

/// Longest secret accepted from a file or a command.
pub const MAX_SECRET_LEN: usize = 64 * 1024;
/// How long a secret command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Overwrite a buffer with zeros in a way the optimiser keeps (the crate's one wipe).
pub fn wipe(buf: &mut [u8]) {
    buf.zeroize();
}

/// A password (the mail password, a token): `Debug` and `Display` print `****`, and the
/// text is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Password {
        Password(value.into())
    }
    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// Marks this process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): no core file, and
/// other processes of the same user can no longer ptrace it or read its memory through
/// `/proc`. Call it before reading any secret; `plexus` does so first thing in `main`.
/// Children inherit nothing of it: the flag is reset when they exec.
pub fn make_non_dumpable() -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes an integer argument and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Why a private file (password file, private key) was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum PrivateFileError {
    /// The file could not be opened or read.
    Io {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// The path names a directory, FIFO, device or socket.
    NotRegular {
        /// The file.
        path: PathBuf,
    },
    /// The file belongs to another user than this one or root.
    WrongOwner {
        /// The file.
        path: PathBuf,
        /// Its owner's uid.
        uid: u32,
    },
    /// Group or others have some permission on the file: `chmod 600` it.
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The file is longer than the caller accepts.
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        max: usize,
    },
}

impl fmt::Display for PrivateFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrivateFileError::Io { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            PrivateFileError::NotRegular { path } => write!(
                f,
                "{} is not a regular file: point the setting at the file itself",
                path.display()
            ),
            PrivateFileError::WrongOwner { path, uid } => write!(
                f,
                "{} belongs to uid {uid}, neither this user nor root: a private file must be \
                 your own; chown it or use a copy of your own",
                path.display()
            ),
            PrivateFileError::TooOpen { path, mode } => write!(
                f,
                "{} has mode {:o}, accessible by other users: run chmod 600 on it",
                path.display(),
                mode & 0o777
            ),
            PrivateFileError::TooLarge { path, max } => {
                write!(f, "{} is longer than {max} bytes", path.display())
            }
        }
    }
}

impl std::error::Error for PrivateFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PrivateFileError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Opens `path` and checks the opened file (not the path, so a swap between check and
/// read cannot slip through): a regular file, owned by this user or root, with no
/// permission for group or others, as ssh demands of private keys. Symlinks are
/// followed, as ssh does: what is checked is the file actually opened. `O_NONBLOCK`
/// keeps a FIFO put in its place from blocking the open.
fn open_private(path: &Path) -> Result<(File, u64), PrivateFileError> {
    let io = |source| PrivateFileError::Io {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(PrivateFileError::NotRegular {
            path: path.to_owned(),
        });
    }
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(PrivateFileError::WrongOwner {
            path: path.to_owned(),
            uid: meta.uid(),
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(PrivateFileError::TooOpen {
            path: path.to_owned(),
            mode: meta.mode(),
        });
    }
    Ok((file, meta.len()))
}

/// Reads at most `max` bytes from `r` into one buffer allocated up front (`hint` + 1
/// bytes, at most `max` + 1), so no reallocation leaves an unwiped copy behind.
/// Returns `None` when there is more than `max`.
fn read_wiped(mut r: impl Read, hint: usize, max: usize) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut buf = Zeroizing::new(vec![0u8; hint.min(max) + 1]);
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if buf.len() > max {
                return Ok(None);
            }
            // Longer than announced (the file grew): a bigger buffer, the old one wiped.
            let mut bigger = Zeroizing::new(vec![0u8; (buf.len() * 2).min(max + 1)]);
            bigger[..filled].copy_from_slice(&buf[..filled]);
            buf = bigger;
        }
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(Some(buf))
}

/// Reads a private file (password file, private key) of at most `max` bytes through the
/// checks of `open_private`; the contents are wiped when the buffer is dropped.
pub fn read_private_file(path: &Path, max: usize) -> Result<Zeroizing<Vec<u8>>, PrivateFileError> {
    let (file, len) = open_private(path)?;
    let hint = usize::try_from(len).unwrap_or(usize::MAX);
    read_wiped(file, hint, max)
        .map_err(|source| PrivateFileError::Io {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| PrivateFileError::TooLarge {
            path: path.to_owned(),
            max,
        })
}

/// Checks a private file as [`read_private_file`] does, without reading it.
pub fn check_private_file(path: &Path) -> Result<(), SecretError> {
    open_private(path).map(|_| ()).map_err(SecretError::File)
}

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the profile itself (allowed, warned about; refused when the profile is
    /// readable by other users).
    Plain(Password),
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
#[non_exhaustive]
pub enum SecretError {
    /// The environment variable is not set or empty.
    EnvMissing(String),
    /// The file was refused (open to others, not yours, not a file) or could not be read.
    File(PrivateFileError),
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
            SecretError::File(e) => write!(f, "secret file {e}"),
            SecretError::Command(m) => write!(f, "secret command: {m}"),
            SecretError::BadValue(m) => write!(f, "secret value: {m}"),
        }
    }
}

impl std::error::Error for SecretError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SecretError::File(e) => Some(e),
            _ => None,
        }
    }
}

fn trim_newline(s: &mut String) {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
}

/// Turns bytes read from a file or command into a secret without leaving copies.
fn secret_from_bytes(mut bytes: Zeroizing<Vec<u8>>, what: &str) -> Result<Password, SecretError> {
    // Moves the buffer into the String (no copy); invalid UTF-8 gives it back to wipe.
    let mut s = match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(s) => Password(s),
        Err(e) => {
            e.into_bytes().zeroize();
            return Err(SecretError::BadValue(format!(
                "the secret from {what} is not UTF-8"
            )));
        }
    };
    trim_newline(&mut s.0);
    if s.0.is_empty() {
        return Err(SecretError::BadValue(format!(
            "the secret from {what} is empty"
        )));
    }
    Ok(s)
}

impl SecretSource {
    /// Read the secret now.
    pub fn resolve(&self) -> Result<Password, SecretError> {
        match self {
            SecretSource::Plain(s) => Ok(s.clone()),
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Password(v)),
                _ => Err(SecretError::EnvMissing(name.clone())),
            },
            SecretSource::File(path) => {
                let bytes = read_private_file(path, MAX_SECRET_LEN).map_err(SecretError::File)?;
                secret_from_bytes(bytes, &format!("file {}", path.display()))
            }
            SecretSource::Command(argv) => run_command(argv, COMMAND_TIMEOUT),
        }
    }
}

/// Run `argv` without a shell, with a timeout and bounded output.
fn run_command(argv: &[String], timeout: Duration) -> Result<Password, SecretError> {
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
    let reader = std::thread::spawn(move || read_wiped(&mut out, MAX_SECRET_LEN, MAX_SECRET_LEN));
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
    let Some(buf) = buf else {
        return Err(SecretError::Command(format!(
            "{prog} printed more than {MAX_SECRET_LEN} bytes"
        )));
    };
    if !status.success() {
        return Err(SecretError::Command(format!("{prog} failed: {status}")));
    }
    secret_from_bytes(buf, &format!("command {prog}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn masked_everywhere() {
        let s = Password::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "**** ****");
        let src = SecretSource::Plain(s);
        assert!(!format!("{src:?} {src}").contains("hunter2"));
    }

    use crate::testing::TempDir;

    #[test]
    fn file_source_refuses_open_modes() {
        let dir = TempDir::new("modes");
        let p = dir.join("pw");
        fs::write(&p, "s3cret\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let err = SecretSource::File(p.clone()).resolve().unwrap_err();
        assert!(
            matches!(err, SecretError::File(PrivateFileError::TooOpen { mode, .. }) if mode & 0o777 == 0o640),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            SecretSource::File(p.clone()).resolve().unwrap().expose(),
            "s3cret"
        );
        fs::write(&p, "").unwrap();
        assert!(SecretSource::File(p).resolve().is_err());
    }

    #[test]
    fn private_file_checks_the_opened_file() {
        let dir = TempDir::new("opened");
        // A FIFO is refused at once: the open does not wait for a writer.
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_private_file(&fifo, 100).unwrap_err();
        assert!(matches!(e, PrivateFileError::NotRegular { .. }), "{e}");
        assert!(matches!(
            read_private_file(&dir, 100),
            Err(PrivateFileError::NotRegular { .. })
        ));
        // A symlink is followed and its target is what gets checked.
        let open = dir.join("open");
        fs::write(&open, "pw").unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        assert!(matches!(
            read_private_file(&link, 100),
            Err(PrivateFileError::TooOpen { .. })
        ));
        fs::set_permissions(&open, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(&**read_private_file(&link, 100).unwrap(), b"pw");
        // Bounded.
        fs::write(&open, [b'x'; 101]).unwrap();
        let e = read_private_file(&open, 100).unwrap_err();
        assert!(
            matches!(e, PrivateFileError::TooLarge { max: 100, .. }),
            "{e}"
        );
        fs::write(&open, [b'x'; 100]).unwrap();
        assert_eq!(read_private_file(&open, 100).unwrap().len(), 100);
        let e = read_private_file(&dir.join("absent"), 100).unwrap_err();
        assert!(matches!(e, PrivateFileError::Io { .. }), "{e}");
        assert!(e.to_string().contains("absent"), "{e}");
    }

    #[test]
    fn private_file_of_another_user_is_refused() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to give a file to another user");
            return;
        }
        let dir = TempDir::new("owner");
        let p = dir.join("pw");
        fs::write(&p, "pw").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&p, Some(54321), None).unwrap();
        let e = SecretSource::File(p).resolve().unwrap_err();
        assert!(
            matches!(
                &e,
                SecretError::File(PrivateFileError::WrongOwner { uid: 54321, .. })
            ),
            "{e}"
        );
        assert!(e.to_string().contains("uid 54321"), "{e}");
    }

    #[test]
    fn keys_go_through_the_same_checks() {
        use crate::identity::{load_private_key, IdentityError};
        use crate::mediator::email::{EmailMediator, EmailSettings};
        let dir = TempDir::new("keys");
        let fifo = dir.join("key.fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // A FIFO swapped in for the S/MIME key: refused at once, not a blocked open.
        let e = load_private_key(&fifo).unwrap_err();
        assert!(
            matches!(
                e,
                IdentityError::KeyUnsafe(PrivateFileError::NotRegular { .. })
            ),
            "{e}"
        );
        // The mail TLS client key: same checks, named as the setting.
        let open = dir.join("client.key");
        fs::write(&open, "not even a key").unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
        let mail = |key: &Path| {
            let mut s = EmailSettings::new(
                "mail.example.org",
                "a",
                Password::new("pw"),
                "a@example.org",
                "b@example.org",
            );
            s.client_cert = Some(dir.join("client.pem"));
            s.client_key = Some(key.to_owned());
            fs::write(dir.join("client.pem"), "x").unwrap();
            EmailMediator::new(s).map(|_| ()).unwrap_err().to_string()
        };
        let e = mail(&open);
        assert!(e.contains("client_key") && e.contains("chmod 600"), "{e}");
        let e = mail(&fifo);
        assert!(
            e.contains("client_key") && e.contains("not a regular file"),
            "{e}"
        );
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            fs::set_permissions(&open, fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&open, Some(54321), None).unwrap();
            let e = mail(&open);
            assert!(e.contains("uid 54321"), "{e}");
            let e = load_private_key(&open).unwrap_err();
            assert!(
                matches!(
                    e,
                    IdentityError::KeyUnsafe(PrivateFileError::WrongOwner { .. })
                ),
                "{e}"
            );
        }
    }

    #[test]
    fn reading_grows_without_losing_bytes() {
        // The size hint is wrong (a growing file): all bytes still arrive, bounded.
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let got = read_wiped(&data[..], 10, 10_000).unwrap().unwrap();
        assert_eq!(&got[..], &data[..]);
        assert!(read_wiped(&data[..], 10, 4999).unwrap().is_none());
        assert_eq!(
            &read_wiped(&data[..], 10, 5000).unwrap().unwrap()[..],
            &data[..]
        );
    }

    #[test]
    fn secrets_are_wiped_in_place() {
        // What `Password`'s Drop does to its String: the whole allocation is zeroed
        // before it is freed.
        let mut s = String::with_capacity(64);
        s.push_str("hunter2-hunter2");
        let (ptr, cap) = (s.as_ptr(), s.capacity());
        s.zeroize();
        assert!(s.is_empty());
        assert_eq!((s.as_ptr(), s.capacity()), (ptr, cap), "not reallocated");
        // SAFETY: the allocation is still owned by `s`, and zeroize wrote all of it.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, cap) };
        assert!(bytes.iter().all(|&b| b == 0));

        let mut buf = [0xa5u8; 40];
        wipe(&mut buf);
        assert_eq!(buf, [0; 40]);
    }

    #[test]
    fn debug_of_every_secret_bearing_type_is_a_placeholder() {
        use crate::executor::{Corridor, SessionKey};
        use crate::punch::{Handshake, Role, Secrets};
        let tell = |s: String| {
            for leak in ["hunter2", "abab", "ABAB", "cdcd", "171, 171", "205, 205"] {
                assert!(!s.contains(leak), "{s}");
            }
        };
        tell(format!("{:?}", Password::new("hunter2")));
        tell(format!(
            "{:?}",
            SecretSource::Plain(Password::new("hunter2"))
        ));
        tell(format!("{:?}", SessionKey([0xab; 32])));
        let corridor = Corridor {
            inner: "127.0.0.1:1".parse().unwrap(),
            outer: "127.0.0.1:2".parse().unwrap(),
            peer: "127.0.0.1:3".parse().unwrap(),
            host_id: "a@b/c".into(),
            peer_id: "d@e/f".into(),
            key: SessionKey([0xab; 32]),
            accepted: true,
        };
        tell(format!("{corridor:?}"));
        let secrets = Secrets {
            inviter: [0xab; 32],
            acceptor: [0xcd; 32],
        };
        tell(format!("{secrets:?}"));
        tell(format!(
            "{:?}",
            crate::punch::wire::Keys::derive(&secrets, &[1; 16])
        ));
        let hs = Handshake::new(
            Role::Inviter,
            &secrets,
            [1; 16],
            vec![],
            Instant::now(),
            crate::punch::Config::default(),
        );
        tell(format!("{hs:?}"));
        tell(format!(
            "{:?}",
            crate::rendezvous::Secret::from_bytes([0xab; 32])
        ));
        let c = plexus_plugin_abi::PxCorridor {
            struct_size: 0,
            accepted: 0,
            inner: plexus_plugin_abi::PxBytes::new(b""),
            outer: plexus_plugin_abi::PxBytes::new(b""),
            peer: plexus_plugin_abi::PxBytes::new(b""),
            host_id: plexus_plugin_abi::PxBytes::new(b""),
            peer_id: plexus_plugin_abi::PxBytes::new(b""),
            key: [0xab; 32],
        };
        tell(format!("{c:?}"));
    }

    #[test]
    fn handshake_secrets_and_keys_are_wiped_on_drop() {
        use crate::punch::Secrets;
        use std::mem::ManuallyDrop;
        let mut s = ManuallyDrop::new(Secrets {
            inviter: [1; 32],
            acceptor: [2; 32],
        });
        let mut k = ManuallyDrop::new(crate::punch::wire::Keys::derive(&s, &[1; 16]));
        // SAFETY: each dropped once; their storage is inline and stays ours, only read
        // afterwards (never dropped again).
        unsafe {
            ManuallyDrop::drop(&mut k);
            ManuallyDrop::drop(&mut s);
        }
        assert_eq!((s.inviter, s.acceptor), ([0; 32], [0; 32]));
        // Keys' fields are private: its whole storage must be zero.
        // SAFETY: reads the bytes of a plain-array struct we own.
        let raw = unsafe {
            std::slice::from_raw_parts(
                (&*k as *const crate::punch::wire::Keys).cast::<u8>(),
                std::mem::size_of::<crate::punch::wire::Keys>(),
            )
        };
        assert!(raw.iter().all(|&b| b == 0));
    }

    #[test]
    fn non_dumpable_in_a_child_process() {
        // In a forked child so the test process itself stays dumpable.
        // SAFETY: the child only makes prctl calls and _exit (async-signal-safe).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok = make_non_dumpable().is_ok()
                // SAFETY: PR_GET_DUMPABLE reads a flag.
                && unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) } == 0;
            // SAFETY: leaves the child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status}"
        );
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
