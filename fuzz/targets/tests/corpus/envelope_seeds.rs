//! The envelope_open seeds mean what their names say: each genuine message opens in
//! exactly one of the two envelopes, and each `refuse-*` message is refused by both
//! (so the seeds lead the fuzzer past decryption into the later checks, and a seed that
//! went stale or broke would be noticed).

use plexus_fuzz_targets::{new_envelopes, NOW};

use super::fuzz_dir;

#[test]
fn genuine_seeds_open_and_hostile_seeds_are_refused() {
    let dir = fuzz_dir().join("corpus/envelope_open");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (mut genuine, mut hostile) = (0, 0);
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&file).unwrap();
        // Fresh envelopes per file: the replay guard must not see a message twice.
        let results: Vec<String> = new_envelopes()
            .iter_mut()
            .map(|env| match env.open(&data, NOW) {
                Ok(m) => format!("opened {} {}", m.kind().as_str(), m.body().session.to_hex()),
                Err(e) => format!("refused: {e}"),
            })
            .collect();
        let opened = results.iter().filter(|r| r.starts_with("opened")).count();
        if name.starts_with("refuse-") {
            hostile += 1;
            assert_eq!(opened, 0, "{name} was opened: {results:?}");
        } else {
            genuine += 1;
            assert_eq!(
                opened, 1,
                "{name} should open in exactly one envelope: {results:?}"
            );
        }
        eprintln!("{name}: {results:?}");
    }
    assert!(
        genuine >= 4 && hostile >= 1,
        "{genuine} genuine, {hostile} hostile seeds"
    );
}
