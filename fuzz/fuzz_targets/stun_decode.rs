//! The STUN decoder must never panic; whatever decodes must re-encode and decode the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus::stun::codec;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = codec::decode(data) {
        let again = codec::decode(&m.encode()).expect("re-encoded message decodes");
        assert_eq!(again, m);
    }
    let _ = codec::verify_integrity(data, b"key");
});
