//! See `plexus_fuzz_targets::icmp_errqueue`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plexus_fuzz_targets::icmp_errqueue(data));
