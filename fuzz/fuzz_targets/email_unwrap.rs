//! See `plexus_fuzz_targets::email_unwrap`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz_targets::email_unwrap(data));
