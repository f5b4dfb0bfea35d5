//! See `plexus_fuzz_targets::dht_chunk`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz_targets::dht_chunk(data));
