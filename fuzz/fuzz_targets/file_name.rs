//! See `plexus_fuzz_targets::file_name`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz_targets::file_name(data));
