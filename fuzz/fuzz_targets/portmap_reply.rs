//! See `plexus_fuzz_targets::portmap_reply`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz_targets::portmap_reply(data));
