//! See `plexus_fuzz_targets::tunnel_header`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz_targets::tunnel_header(data));
