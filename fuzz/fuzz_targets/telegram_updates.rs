//! See `plexus_fuzz_targets::telegram_updates`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz_targets::telegram_updates(data));
