//! See `plexus_fuzz_targets::stun_decode`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz_targets::stun_decode(data));
