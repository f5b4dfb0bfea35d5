//! See `plexus_fuzz_targets::plugin_return`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz_targets::plugin_return(data));
