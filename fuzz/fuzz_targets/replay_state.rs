//! See `plexus_fuzz_targets::replay_state`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz_targets::replay_state(data));
