//! Real temp directories, two instances at a time.

use super::*;
use std::sync::{Arc, Mutex};

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
    FileMediator::create(&format!(
        "dir: {}\naddress: {address}\npoll_interval_ms: 10\nmax_message_bytes: 1000\n",
        dir.0.display()
    ))
    .unwrap()
}

const NO_WAIT: Duration = Duration::ZERO;

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
        bob.warned.contains("bob~alice~10.plexus"),
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
    // Two instances claim one message each and "crash" (never acknowledge).
    let mut first = instance(&dir, "bob");
    let stale = first.receive(NO_WAIT).unwrap().unwrap();
    let mut second = instance(&dir, "bob");
    let fresh = second.receive(NO_WAIT).unwrap().unwrap();
    drop((first, second));
    let old = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(dir.0.join(&stale.id))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let settings = format!(
        "dir: {}\naddress: bob\nreclaim_after_secs: 60",
        dir.0.display()
    );
    let mut bob = FileMediator::create(&settings).unwrap();
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
    assert!(carol.receive(NO_WAIT).unwrap().is_none());
    bob.acknowledge(&m.id, Outcome::Handled).unwrap();
    assert_eq!(dir.names(), vec![fresh.id.clone()]);
}
