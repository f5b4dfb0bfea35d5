//! See `plexus_fuzz_targets::handshake_decode`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz_targets::handshake_decode(data));
