//! See `plexus_fuzz_targets::profile_yaml`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz_targets::profile_yaml(data));
