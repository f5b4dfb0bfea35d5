//! Real temp directories, two instances at a time.

use super::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::sync::{mpsc, Arc, Mutex};

/// Log records of the whole test process; tests tell theirs apart by the (unique)
/// file names they look for.
mod capture {
    use std::sync::Mutex;

    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, r: &log::Record) {
            let line = format!("{} {}", r.level(), r.args());
            LINES.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture;

    /// Installs the capturing logger (once per process).
    pub fn start() {
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Debug);
    }

    /// Records above debug level that mention `needle`.
    pub fn reports_about(needle: &str) -> Vec<String> {
        let lines = LINES.lock().unwrap_or_else(|p| p.into_inner());
        lines
            .iter()
            .filter(|s| !s.starts_with("DEBUG") && !s.starts_with("TRACE") && s.contains(needle))
            .cloned()
            .collect()
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("plexus-plugins-file-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn instance(dir: &TempDir, address: &str) -> FileMediator {
    instance_at(&dir.0, address)
}

fn instance_at(dir: &Path, address: &str) -> FileMediator {
    FileMediator::create(&format!(
        "dir: {}\naddress: {address}\npoll_interval_ms: 10\nmax_message_bytes: 1000\n",
        dir.display()
    ))
    .unwrap()
}

const NO_WAIT: Duration = Duration::ZERO;

fn with_reclaim(dir: &Path, address: &str, secs: u64) -> FileMediator {
    FileMediator::create(&format!(
        "dir: {}\naddress: {address}\npoll_interval_ms: 10\nmax_message_bytes: 1000\nreclaim_after_secs: {secs}\n",
        dir.display()
    ))
    .unwrap()
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "mkfifo {}",
        path.display()
    );
}

/// A genuine message sent now still arrives: nothing before it wedged the receiver.
fn genuine_arrives(dir: &TempDir, bob: &mut FileMediator) {
    let mut alice = instance(dir, "alice");
    alice.send("bob", b"genuine").unwrap();
    let m = bob
        .receive(Duration::from_secs(5))
        .unwrap()
        .expect("the genuine message arrives");
    assert_eq!(m.sealed, b"genuine");
    bob.acknowledge(&m.id, Outcome::Handled).unwrap();
}

/// Runs `receive` on another thread so a blocking `open()` fails the test instead of
/// hanging it; a blocked reader is released by opening the FIFOs for writing.
fn receive_unblocked(dir: &TempDir, mut bob: FileMediator) -> (FileMediator, Option<Message>) {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let got = bob.receive(Duration::from_millis(50));
        let _ = tx.send(got);
        bob
    });
    // A generous guard against a hang, not a timing assertion.
    let got = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(got) => got,
        Err(_) => {
            for e in fs::read_dir(&dir.0).unwrap().flatten() {
                if e.file_type().unwrap().is_fifo() {
                    let _ = fs::OpenOptions::new().write(true).open(e.path());
                }
            }
            let _ = worker.join();
            panic!("receive blocked on a FIFO");
        }
    };
    let bob = worker.join().unwrap();
    (
        bob,
        got.expect("one bad file is not an error of the channel"),
    )
}

/// Sends one message to bob, lets `swap` replace it right before the claim, and checks
/// that the replacement is skipped untouched, reported once, and does not stop a
/// genuine message that comes later.
fn swapped_in(tag: &str, swap: impl FnOnce(&Path) + Send + 'static) -> (TempDir, String) {
    capture::start();
    let dir = TempDir::new(tag);
    let mut alice = instance(&dir, "alice");
    alice.send("bob", b"will be swapped").unwrap();
    let name = dir.names().pop().unwrap();
    let mut bob = instance(&dir, "bob");
    let mut swap = Some(swap);
    bob.hook = Some(Box::new(move |p: &Path, stage: &str| {
        if stage == "open" {
            if let Some(f) = swap.take() {
                f(p)
            }
        }
    }));
    let (mut bob, got) = receive_unblocked(&dir, bob);
    assert!(got.is_none(), "{tag}: nothing usable was there: {got:?}");
    assert_eq!(
        dir.names(),
        vec![name.clone()],
        "{tag}: left under its name"
    );
    for _ in 0..3 {
        assert!(bob.receive(NO_WAIT).unwrap().is_none());
    }
    let warned = capture::reports_about(&name);
    assert_eq!(warned.len(), 1, "{tag}: reported once: {warned:?}");
    genuine_arrives(&dir, &mut bob);
    assert_eq!(dir.names(), vec![name.clone()], "{tag}: still untouched");
    (dir, name)
}

#[test]
fn a_fifo_swapped_in_for_a_message_does_not_block_receive() {
    let (dir, name) = swapped_in("fifo", |p| {
        fs::remove_file(p).unwrap();
        mkfifo(p);
    });
    assert!(fs::symlink_metadata(dir.0.join(name))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn a_fifo_swapped_in_after_the_open_is_set_aside_unread() {
    capture::start();
    let dir = TempDir::new("replaced");
    let mut alice = instance(&dir, "alice");
    alice.send("bob", b"will be swapped").unwrap();
    let name = dir.names().pop().unwrap();
    let mut bob = instance(&dir, "bob");
    bob.hook = Some(Box::new(|p: &Path, stage: &str| {
        if stage == "claim" && fs::symlink_metadata(p).unwrap().is_file() {
            fs::remove_file(p).unwrap();
            mkfifo(p);
        }
    }));
    let (mut bob, got) = receive_unblocked(&dir, bob);
    assert!(got.is_none(), "{got:?}");
    let kept = format!("{name}.rejected");
    assert_eq!(dir.names(), vec![kept.clone()]);
    assert!(fs::symlink_metadata(dir.0.join(&kept))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(capture::reports_about(&kept).len(), 1);
    bob.hook = None;
    genuine_arrives(&dir, &mut bob);
}

#[test]
fn a_symlink_swapped_in_for_a_message_is_not_followed() {
    let target = TempDir::new("symlink-target");
    let secret = target.0.join("secret");
    fs::write(&secret, "not for the channel").unwrap();
    let (dir, name) = swapped_in("symlink", move |p| {
        fs::remove_file(p).unwrap();
        std::os::unix::fs::symlink(&secret, p).unwrap();
    });
    assert!(fs::symlink_metadata(dir.0.join(name))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read(target.0.join("secret")).unwrap(),
        b"not for the channel"
    );
}

#[test]
fn a_directory_swapped_in_for_a_message_is_skipped() {
    let (dir, name) = swapped_in("directory", |p| {
        fs::remove_file(p).unwrap();
        fs::create_dir(p).unwrap();
        fs::write(p.join("inside"), "x").unwrap();
    });
    assert_eq!(fs::read(dir.0.join(name).join("inside")).unwrap(), b"x");
}

#[test]
fn an_oversized_or_empty_file_swapped_in_is_skipped_until_it_changes() {
    for (tag, body) in [("oversized", vec![7u8; 1001]), ("empty", Vec::new())] {
        let (dir, name) = swapped_in(tag, move |p| {
            fs::remove_file(p).unwrap();
            fs::write(p, &body).unwrap();
        });
        // The same name with a usable body is looked at again.
        fs::write(dir.0.join(&name), b"fixed").unwrap();
        let mut bob = instance(&dir, "bob");
        let m = bob
            .receive(NO_WAIT)
            .unwrap()
            .expect("changed file is taken");
        assert_eq!(m.sealed, b"fixed", "{tag}");
    }
}

#[test]
fn a_claimed_file_deleted_before_acknowledge_is_not_an_error() {
    let dir = TempDir::new("vanished");
    let (mut alice, mut bob) = (instance(&dir, "alice"), instance(&dir, "bob"));
    alice.send("bob", b"one").unwrap();
    alice.send("bob", b"two").unwrap();
    for outcome in [Outcome::Handled, Outcome::Rejected] {
        let m = bob.receive(NO_WAIT).unwrap().unwrap();
        fs::remove_file(dir.0.join(&m.id)).unwrap();
        bob.acknowledge(&m.id, outcome)
            .unwrap_or_else(|e| panic!("{outcome:?}: {e}"));
    }
    assert!(dir.names().is_empty());
    genuine_arrives(&dir, &mut bob);
}

#[test]
fn a_restarted_acceptor_waits_the_full_period_from_the_claim() {
    let dir = TempDir::new("restart");
    let mut alice = instance(&dir, "alice");
    alice.send("bob", b"one").unwrap();
    let mut crashed = with_reclaim(&dir.0, "bob", 60);
    let m = crashed.receive(NO_WAIT).unwrap().unwrap();
    drop(crashed);
    // The file's own mtime says nothing about the claim (a sync tool keeps the
    // sender's; only the owner may set it).
    let claimed = dir.names().pop().unwrap();
    fs::File::options()
        .write(true)
        .open(dir.0.join(&claimed))
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let mut restarted = with_reclaim(&dir.0, "bob", 60);
    assert!(
        restarted.receive(NO_WAIT).unwrap().is_none(),
        "not put back at once after a restart"
    );
    restarted.advance = Duration::from_secs(50);
    assert!(restarted.receive(NO_WAIT).unwrap().is_none(), "50 s < 60 s");
    restarted.advance = Duration::from_secs(61);
    let again = restarted
        .receive(NO_WAIT)
        .unwrap()
        .expect("put back after 60 s");
    assert_eq!(again.sealed, m.sealed);
    restarted.acknowledge(&again.id, Outcome::Handled).unwrap();
    assert!(dir.names().is_empty());
}

#[test]
fn a_message_that_is_never_acknowledged_is_set_aside_after_three_deliveries() {
    // An acceptor that dies on a message (a crash before acknowledging) must not get
    // it back every reclaim period forever.
    capture::start();
    let dir = TempDir::new("crashloop");
    let mut alice = instance(&dir, "alice");
    alice.send("bob", b"crasher").unwrap();
    let original = dir.names().pop().unwrap();
    for round in 0..3u64 {
        let mut bob = with_reclaim(&dir.0, "bob", 60);
        bob.advance = Duration::from_secs(61 * round);
        let m = bob.receive(NO_WAIT).unwrap();
        assert_eq!(
            m.map(|m| m.sealed),
            Some(b"crasher".to_vec()),
            "delivery {}",
            round + 1
        );
    }
    let mut bob = with_reclaim(&dir.0, "bob", 60);
    bob.advance = Duration::from_secs(61 * 3);
    assert!(bob.receive(NO_WAIT).unwrap().is_none(), "not a fourth time");
    assert_eq!(dir.names(), vec![format!("{original}.rejected")]);
    let set_aside: Vec<String> = capture::reports_about(&original)
        .into_iter()
        .filter(|l| l.contains("set aside"))
        .collect();
    assert_eq!(set_aside.len(), 1, "{set_aside:?}");
    genuine_arrives(&dir, &mut bob);
}

#[test]
fn a_folder_that_vanishes_is_unreachable_and_retried() {
    let dir = TempDir::new("vanish");
    let mut bob = instance(&dir, "bob");
    let away = dir.0.with_extension("away");
    // A sync tool replacing the folder by a rename.
    fs::rename(&dir.0, &away).unwrap();
    let e = bob.receive(NO_WAIT).map(|_| ()).unwrap_err();
    let _ = fs::rename(&away, &dir.0);
    assert!(matches!(e, PluginError::Unreachable(_)), "{e:?}");
    assert_eq!(e.code(), plexus_plugin_sdk::abi::PX_ERR_UNREACHABLE);
    assert!(e.message().contains(&dir.0.display().to_string()), "{e}");
    genuine_arrives(&dir, &mut bob);
}

#[test]
fn foreign_files_are_never_touched() {
    let dir = TempDir::new("foreign");
    let p = |n: &str| dir.0.join(n);
    fs::write(p("notes.txt"), "mine").unwrap();
    fs::write(p("locked.txt"), "locked").unwrap();
    fs::set_permissions(p("locked.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::write(p("carol~alice~0-1.plexus"), "for carol").unwrap();
    fs::write(p("bob~alice~0-2.plexus.rejected"), "set aside earlier").unwrap();
    fs::write(
        p(".claimed~0123456789abcdef~0~1~carol~alice~0-3.plexus"),
        "carol's claim",
    )
    .unwrap();
    fs::write(
        p(".claimed~0123456789abcdef~carol~alice~0-4.plexus"),
        "old carol claim",
    )
    .unwrap();
    mkfifo(&p("pipe"));
    fs::create_dir(p("sub")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", p("link")).unwrap();
    let snapshot = || {
        dir.names()
            .into_iter()
            .map(|n| {
                let m = fs::symlink_metadata(p(&n)).unwrap();
                let body = m.file_type().is_file().then(|| {
                    let mode = m.mode();
                    fs::set_permissions(p(&n), fs::Permissions::from_mode(0o600)).unwrap();
                    let b = fs::read(p(&n)).unwrap();
                    fs::set_permissions(p(&n), fs::Permissions::from_mode(mode)).unwrap();
                    b
                });
                (n, m.ino(), m.mode(), m.mtime(), m.mtime_nsec(), body)
            })
            .collect::<Vec<_>>()
    };
    let before = snapshot();
    let mut bob = with_reclaim(&dir.0, "bob", 1);
    bob.advance = Duration::from_secs(3600);
    let mut alice = instance(&dir, "alice");
    for outcome in [Outcome::Handled, Outcome::Rejected] {
        alice.send("bob", b"genuine").unwrap();
        let m = bob.receive(Duration::from_secs(5)).unwrap().unwrap();
        bob.acknowledge(&m.id, outcome).unwrap();
        // The one file plexus made is removed, so the rest can be compared.
        for n in dir.names() {
            if !before.iter().any(|b| b.0 == n) {
                assert!(
                    n.starts_with("bob~alice~") && n.ends_with(".plexus.rejected"),
                    "{n}"
                );
                fs::remove_file(p(&n)).unwrap();
            }
        }
        assert!(bob.receive(NO_WAIT).unwrap().is_none());
    }
    assert_eq!(snapshot(), before);
}

/// Runs the checks that need a user root is not: an unreadable file (root reads
/// anything) and a claim refused by a sticky folder (root may rename anyone's file).
#[test]
fn unreadable_files_and_refused_claims_are_skipped() {
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tag = format!("unprivileged-{}", std::process::id());
    let dir = std::env::temp_dir().join(format!("plexus-plugins-file-{tag}"));
    let nolist = std::env::temp_dir().join(format!("plexus-plugins-file-{tag}-nolist"));
    for d in [&dir, &nolist] {
        let _ = fs::remove_dir_all(d);
        fs::create_dir(d).unwrap();
    }
    let _cleanup = (TempDir(dir.clone()), TempDir(nolist.clone()));
    let unreadable = dir.join(UNREADABLE);
    fs::write(&unreadable, "unreadable").unwrap();
    fs::set_permissions(&unreadable, fs::Permissions::from_mode(0o000)).unwrap();
    if !root {
        eprintln!(
            "NOTE: not root: the sticky-folder claim refusal is NOT tested (it needs a file \
             owned by another user); the unreadable file and the unlistable folder are"
        );
        fs::set_permissions(&nolist, fs::Permissions::from_mode(0o300)).unwrap();
        unprivileged_checks(&dir, &nolist, false);
        fs::set_permissions(&nolist, fs::Permissions::from_mode(0o700)).unwrap();
        return;
    }
    const NOBODY: u32 = 65534;
    // A folder anyone may write to, with the sticky bit: only a file's owner may rename it.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(&nolist, fs::Permissions::from_mode(0o1733)).unwrap();
    fs::write(dir.join(STICKY), "root's").unwrap();
    std::os::unix::fs::chown(&unreadable, Some(NOBODY), Some(NOBODY)).unwrap();
    // A copy of this test binary nobody can run (the build may sit under a 0700 home).
    let bin = TempDir::new(&format!("{tag}-bin"));
    fs::set_permissions(&bin.0, fs::Permissions::from_mode(0o755)).unwrap();
    let exe = bin.0.join("tests");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&exe)
        .args([
            "--exact",
            "tests::unprivileged_child",
            "--ignored",
            "--nocapture",
        ])
        .env(
            "PLEXUS_FILE_TEST_DIRS",
            format!("{}\n{}", dir.display(), nolist.display()),
        )
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run the test binary as nobody");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "unprivileged checks failed: {text}");
    assert!(
        text.contains("1 passed"),
        "the child ran the checks: {text}"
    );
    assert_eq!(fs::read(dir.join(STICKY)).unwrap(), b"root's");
    assert_eq!(fs::read(&unreadable).unwrap(), b"unreadable");
    assert_eq!(
        fs::metadata(&unreadable).unwrap().permissions().mode() & 0o7777,
        0
    );
}

const STICKY: &str = "bob~alice~0-sticky.plexus";
const UNREADABLE: &str = "bob~alice~0-unreadable.plexus";

/// The unprivileged half of [`unreadable_files_and_refused_claims_are_skipped`], run in
/// a child process as nobody; does nothing when run by hand.
#[test]
#[ignore = "run by unreadable_files_and_refused_claims_are_skipped as another user"]
fn unprivileged_child() {
    let Ok(dirs) = std::env::var("PLEXUS_FILE_TEST_DIRS") else {
        eprintln!("nothing to do: run by unreadable_files_and_refused_claims_are_skipped");
        return;
    };
    let (dir, nolist) = dirs.split_once('\n').unwrap();
    unprivileged_checks(Path::new(dir), Path::new(nolist), true);
}

fn unprivileged_checks(dir: &Path, nolist: &Path, sticky: bool) {
    capture::start();
    let mut bob = instance_at(dir, "bob");
    for _ in 0..3 {
        let got = bob.receive(NO_WAIT).unwrap();
        assert!(got.is_none(), "{got:?}");
    }
    let mut expected = vec![UNREADABLE];
    if sticky {
        expected.insert(0, STICKY);
    }
    for name in &expected {
        assert!(dir.join(name).exists(), "{name} left in place");
        let warned = capture::reports_about(name);
        assert_eq!(warned.len(), 1, "{name} reported once: {warned:?}");
    }
    let mut alice = instance_at(dir, "alice");
    alice.send("bob", b"genuine").unwrap();
    let m = bob
        .receive(Duration::from_secs(5))
        .unwrap()
        .expect("genuine message");
    assert_eq!(m.sealed, b"genuine");
    bob.acknowledge(&m.id, Outcome::Handled).unwrap();
    // A folder that cannot be listed may be fixed: retried, not the end.
    let mut carol = instance_at(nolist, "carol");
    let e = carol.receive(NO_WAIT).map(|_| ()).unwrap_err();
    assert!(matches!(e, PluginError::Unreachable(_)), "{e:?}");
}

#[test]
fn round_trip_removes_only_the_consumed_file() {
    let dir = TempDir::new("roundtrip");
    fs::write(dir.0.join("notes.txt"), "the user's own file").unwrap();
    let (mut alice, mut bob) = (instance(&dir, "alice"), instance(&dir, "bob"));
    alice.send("bob", b"sealed-1").unwrap();
    alice.send("carol", b"not for bob").unwrap();
    let names = dir.names();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "no temporary file left: {names:?}"
    );
    assert!(
        alice.receive(NO_WAIT).unwrap().is_none(),
        "alice gets nothing"
    );
    let m = bob.receive(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(
        (m.from.as_str(), m.sealed.as_slice()),
        ("alice", &b"sealed-1"[..])
    );
    assert!(
        bob.receive(NO_WAIT).unwrap().is_none(),
        "a claimed message is not returned again"
    );
    bob.acknowledge(&m.id, Outcome::Handled).unwrap();
    let left = dir.names();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&"notes.txt".to_string()));
    assert!(left.iter().any(|n| n.starts_with("carol~alice~")));
    assert_eq!(
        fs::read(dir.0.join("notes.txt")).unwrap(),
        b"the user's own file"
    );
}

#[test]
fn messages_come_oldest_first() {
    let dir = TempDir::new("order");
    let (mut alice, mut bob) = (instance(&dir, "alice"), instance(&dir, "bob"));
    for i in 0..5u8 {
        alice.send("bob", &[i]).unwrap();
    }
    let got: Vec<u8> = (0..5)
        .map(|_| bob.receive(NO_WAIT).unwrap().unwrap().sealed[0])
        .collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
}

#[test]
fn partial_temporary_empty_oversized_and_foreign_files_are_ignored_and_kept() {
    let dir = TempDir::new("partial");
    let mut bob = instance(&dir, "bob");
    let junk = [
        (".syncthing.bob~alice~1.plexus.tmp", &b"partial"[..]),
        ("bob~alice~2.plexus.tmp", b"partial"),
        (".plexus-3.tmp", b"partial"),
        (".bob~alice~4.plexus", b"hidden"),
        ("bob~alice~5.plexus", b""),
        ("bob~alice~6.plexus~", b"editor backup"),
        ("bob~al/ice~7.plexus", b"x"),
        ("bob~alice.plexus", b"two fields"),
        ("bob~alice~8~9.plexus", b"four fields"),
        ("bob~alice~bad_unique.plexus", b"x"),
    ];
    for (name, body) in junk {
        if name.contains('/') {
            continue;
        }
        fs::write(dir.0.join(name), body).unwrap();
    }
    fs::write(dir.0.join("bob~alice~10.plexus"), vec![7u8; 1001]).unwrap();
    fs::create_dir(dir.0.join("bob~alice~11.plexus")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.0.join("bob~alice~12.plexus")).unwrap();
    let before = dir.names();
    assert!(bob.receive(Duration::from_millis(30)).unwrap().is_none());
    assert_eq!(dir.names(), before, "nothing touched");
    assert!(
        bob.skipped.contains_key("bob~alice~10.plexus"),
        "oversized file reported"
    );
    // A partial file that becomes complete (the sync tool's rename) is then picked up.
    fs::rename(
        dir.0.join("bob~alice~2.plexus.tmp"),
        dir.0.join("bob~alice~2.plexus"),
    )
    .unwrap();
    let m = bob.receive(NO_WAIT).unwrap().unwrap();
    assert_eq!(m.sealed, b"partial");
}

#[test]
fn rejected_is_set_aside_and_not_returned_again() {
    let dir = TempDir::new("rejected");
    let (mut alice, mut bob) = (instance(&dir, "alice"), instance(&dir, "bob"));
    alice.send("bob", b"forged").unwrap();
    let m = bob.receive(NO_WAIT).unwrap().unwrap();
    bob.acknowledge(&m.id, Outcome::Rejected).unwrap();
    let names = dir.names();
    assert_eq!(names.len(), 1);
    assert!(
        names[0].starts_with("bob~alice~") && names[0].ends_with(".plexus.rejected"),
        "{names:?}"
    );
    assert!(bob.receive(NO_WAIT).unwrap().is_none());
}

#[test]
fn acknowledge_touches_only_own_claims() {
    let dir = TempDir::new("ack");
    let (mut alice, mut bob, mut bob2) = (
        instance(&dir, "alice"),
        instance(&dir, "bob"),
        instance(&dir, "bob"),
    );
    alice.send("bob", b"m").unwrap();
    let m = bob.receive(NO_WAIT).unwrap().unwrap();
    for bad in ["notes.txt", "../x", "bob~alice~1.plexus", m.id.as_str()] {
        let e = bob2.acknowledge(bad, Outcome::Handled).unwrap_err();
        assert!(matches!(e, PluginError::InvalidArgument(_)), "{bad}: {e}");
    }
    assert_eq!(dir.names(), vec![m.id.clone()]);
    bob.acknowledge(&m.id, Outcome::Handled).unwrap();
    assert!(dir.names().is_empty());
}

#[test]
fn two_receivers_on_one_directory_never_take_the_same_message() {
    let dir = TempDir::new("race");
    let mut alice = instance(&dir, "alice");
    const N: u32 = 200;
    for i in 0..N {
        alice.send("bob", &i.to_be_bytes()).unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (seen, mut bob) = (seen.clone(), instance(&dir, "bob"));
            std::thread::spawn(move || {
                while let Some(m) = bob.receive(NO_WAIT).unwrap() {
                    seen.lock()
                        .unwrap()
                        .push(u32::from_be_bytes(m.sealed[..].try_into().unwrap()));
                    bob.acknowledge(&m.id, Outcome::Handled).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        (0..N).collect::<Vec<_>>(),
        "every message exactly once"
    );
    assert!(dir.names().is_empty());
}

#[test]
fn receive_waits_for_a_message_written_later() {
    let dir = TempDir::new("wait");
    let mut bob = instance(&dir, "bob");
    let path = dir.0.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let mut alice = FileMediator::create(&format!(
            "{{\"dir\": \"{}\", \"address\": \"alice\"}}",
            path.display()
        ))
        .unwrap();
        alice.send("bob", b"late").unwrap();
    });
    let m = bob
        .receive(Duration::from_secs(10))
        .unwrap()
        .expect("message within the timeout");
    assert_eq!(m.sealed, b"late");
    writer.join().unwrap();
}

#[test]
fn bad_settings_and_arguments_are_named() {
    let dir = TempDir::new("settings");
    let d = dir.0.display();
    for (settings, needle) in [
        (format!("dir: {d}"), "missing field `address`"),
        (format!("dir: {d}\naddress: .hidden"), "address"),
        (format!("dir: {d}\naddress: a~b"), "address"),
        (
            format!("dir: {d}/missing\naddress: a"),
            "not an existing directory",
        ),
        (
            format!("dir: {d}\naddress: a\ncolour: red"),
            "unknown field `colour`",
        ),
        (
            format!("dir: {d}\naddress: a\npoll_interval_ms: 0"),
            "poll_interval_ms",
        ),
        (
            format!("dir: {d}\naddress: a\nmax_message_bytes: 99999999999"),
            "max_message_bytes",
        ),
        ("[1, 2]".to_string(), "settings"),
    ] {
        match FileMediator::create(&settings) {
            Err(PluginError::Config(m)) => assert!(m.contains(needle), "{settings:?}: {m}"),
            other => panic!("{settings:?}: {:?}", other.map(|_| ())),
        }
    }
    let mut a = instance(&dir, "alice");
    assert!(matches!(
        a.send("../etc", b"x"),
        Err(PluginError::InvalidArgument(_))
    ));
    assert!(matches!(
        a.send("bob", &[0; 1001]),
        Err(PluginError::InvalidArgument(_))
    ));
    assert!(matches!(
        a.send("bob", b""),
        Err(PluginError::InvalidArgument(_))
    ));
    assert!(dir.names().is_empty(), "nothing half-written");
}

#[test]
fn a_crashed_instances_claim_is_put_back_after_reclaim_after_secs() {
    let dir = TempDir::new("reclaim");
    let mut alice = instance(&dir, "alice");
    alice.send("bob", b"one").unwrap();
    alice.send("bob", b"two").unwrap();
    // Two instances claim one message each, an hour apart, and "crash" (never
    // acknowledge).
    let mut first = instance(&dir, "bob");
    let stale = first.receive(NO_WAIT).unwrap().unwrap();
    let mut second = with_reclaim(&dir.0, "bob", 0);
    second.advance = Duration::from_secs(3600);
    let fresh = second.receive(NO_WAIT).unwrap().unwrap();
    drop((first, second));
    let settings = format!(
        "dir: {}\naddress: bob\nreclaim_after_secs: 60",
        dir.0.display()
    );
    let mut bob = FileMediator::create(&settings).unwrap();
    bob.advance = Duration::from_secs(3600);
    let m = bob
        .receive(NO_WAIT)
        .unwrap()
        .expect("the stale claim is put back");
    assert_eq!(m.sealed, stale.sealed);
    assert!(
        bob.receive(NO_WAIT).unwrap().is_none(),
        "the fresh claim is left alone"
    );
    assert!(dir.0.join(&fresh.id).exists());
    // Claims for another address are never touched, however old.
    let mut carol = FileMediator::create(&settings.replace("bob", "carol")).unwrap();
    carol.advance = Duration::from_secs(1 << 30);
    assert!(carol.receive(NO_WAIT).unwrap().is_none());
    bob.acknowledge(&m.id, Outcome::Handled).unwrap();
    assert_eq!(dir.names(), vec![fresh.id.clone()]);
}

#[test]
fn unusable_files_are_remembered_within_a_bound_and_forgotten_when_gone() {
    capture::start();
    let dir = TempDir::new("many");
    let mut bob = instance(&dir, "bob");
    bob.max_skipped = 16;
    let names: Vec<String> = (0..26)
        .map(|i| format!("bob~mallory~0-{i:02}.plexus"))
        .collect();
    for n in &names {
        fs::write(dir.0.join(n), vec![1u8; 1001]).unwrap();
    }
    for _ in 0..3 {
        assert!(bob.receive(NO_WAIT).unwrap().is_none());
    }
    assert_eq!(bob.skipped.len(), 16);
    let full = capture::reports_about(&format!(
        "unusable files addressed to bob in {}",
        dir.0.display()
    ));
    assert_eq!(full.len(), 1, "{full:?}");
    let one = capture::reports_about(&names[0]);
    assert_eq!(one.len(), 1, "{one:?}");
    genuine_arrives(&dir, &mut bob);
    for n in &names {
        fs::remove_file(dir.0.join(n)).unwrap();
    }
    assert!(bob.receive(NO_WAIT).unwrap().is_none());
    assert!(bob.skipped.is_empty(), "memory follows the folder");
    assert_eq!(dir.names(), Vec::<String>::new());
}
