//! See `plexus_fuzz_targets::smime_entity`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz_targets::smime_entity(data));
