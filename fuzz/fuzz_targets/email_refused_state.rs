//! See `plexus_fuzz_targets::email_refused_state`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz_targets::email_refused_state(data));
