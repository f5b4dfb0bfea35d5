//! See `plexus_fuzz_targets::envelope_open`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz_targets::envelope_open(data));
