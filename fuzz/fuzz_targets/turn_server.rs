//! See `plexus_fuzz_targets::turn_server`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz_targets::turn_server(data));
