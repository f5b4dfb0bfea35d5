//! RFC 5769 test vectors, malformed input, and a bounded randomized no-panic test.

use super::codec::*;
use std::net::SocketAddr;

const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

#[rustfmt::skip]
const RFC5769_REQUEST: &[u8] = &[
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74,
    0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
    0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20,
    0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2,
    0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];

#[rustfmt::skip]
const RFC5769_RESPONSE_V4: &[u8] = &[
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63, 0x74, 0x6f, 0x72, 0x20,
    0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7,
    0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
];

#[rustfmt::skip]
const RFC5769_RESPONSE_V6: &[u8] = &[
    0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63, 0x74, 0x6f, 0x72, 0x20,
    0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
    0x00, 0x08, 0x00, 0x14, 0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75, 0xbf, 0xe3, 0xed, 0x41,
    0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
];

#[rustfmt::skip]
const RFC5769_LONG_TERM_REQUEST: &[u8] = &[
    0x00, 0x01, 0x00, 0x60, 0x21, 0x12, 0xa4, 0x42, 0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e,
    0x00, 0x06, 0x00, 0x12, 0xe3, 0x83, 0x9e, 0xe3, 0x83, 0x88, 0xe3, 0x83, 0xaa, 0xe3, 0x83, 0x83, 0xe3, 0x82, 0xaf, 0xe3, 0x82, 0xb9, 0x00, 0x00,
    0x00, 0x15, 0x00, 0x1c, 0x66, 0x2f, 0x2f, 0x34, 0x39, 0x39, 0x6b, 0x39, 0x35, 0x34, 0x64, 0x36, 0x4f, 0x4c, 0x33, 0x34, 0x6f, 0x4c, 0x39, 0x46, 0x53, 0x54, 0x76, 0x79, 0x36, 0x34, 0x73, 0x41,
    0x00, 0x14, 0x00, 0x0b, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x6f, 0x72, 0x67, 0x00,
    0x00, 0x08, 0x00, 0x14, 0xf6, 0x70, 0x24, 0x65, 0x6d, 0xd6, 0x4a, 0x3e, 0x02, 0xb8, 0xe0, 0x71, 0x2e, 0x85, 0xc9, 0xa2, 0x8c, 0xa8, 0x96, 0x66,
];

/// Decode, re-encode byte for byte, regenerate MI/FINGERPRINT and compare.
fn round_trip(bytes: &[u8], key: &[u8], fingerprint: bool) -> Message {
    let m = decode(bytes).expect("vector decodes");
    assert_eq!(m.encode(), bytes, "re-encoding is byte-exact");
    assert_eq!(
        verify_integrity(bytes, key),
        Some(true),
        "MESSAGE-INTEGRITY verifies"
    );
    assert_eq!(
        m.encode_signed(Some(key), fingerprint).unwrap(),
        bytes,
        "regenerated MI/FINGERPRINT match"
    );
    let mut wrong = key.to_vec();
    wrong[0] ^= 1;
    assert_eq!(
        verify_integrity(bytes, &wrong),
        Some(false),
        "a wrong key fails"
    );
    m
}

#[test]
fn rfc5769_2_1_sample_request() {
    let m = round_trip(RFC5769_REQUEST, SHORT_TERM_PASSWORD, true);
    assert_eq!(m.class, Class::Request);
    assert_eq!(m.method, METHOD_BINDING);
    assert!(m
        .attributes
        .contains(&Attribute::Software("STUN test client".into())));
    assert!(m.attributes.contains(&Attribute::Fingerprint(0xe57a_3bcf)));
}

#[test]
fn rfc5769_2_2_sample_ipv4_response() {
    let m = round_trip(RFC5769_RESPONSE_V4, SHORT_TERM_PASSWORD, true);
    assert_eq!(m.class, Class::Success);
    assert_eq!(
        m.mapped(),
        Some("192.0.2.1:32853".parse::<SocketAddr>().unwrap())
    );
    assert!(m
        .attributes
        .contains(&Attribute::Software("test vector".into())));
}

#[test]
fn rfc5769_2_3_sample_ipv6_response() {
    let m = round_trip(RFC5769_RESPONSE_V6, SHORT_TERM_PASSWORD, true);
    assert_eq!(
        m.mapped(),
        Some(
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse::<SocketAddr>()
                .unwrap()
        )
    );
}

#[test]
fn rfc5769_2_4_sample_request_long_term_auth() {
    let username = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
    let key = long_term_key(username, "example.org", "TheMatrIX").unwrap();
    let m = round_trip(RFC5769_LONG_TERM_REQUEST, &key, false);
    assert!(m.attributes.contains(&Attribute::Other {
        kind: attr::USERNAME,
        value: username.as_bytes().to_vec()
    }));
}

#[test]
fn rfc5780_attributes_round_trip() {
    let tid = TransactionId([7; 12]);
    let a: SocketAddr = "203.0.113.4:3479".parse().unwrap();
    let b: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
    let m = Message {
        class: Class::Success,
        method: METHOD_BINDING,
        transaction_id: tid,
        attributes: vec![
            Attribute::ChangeRequest {
                ip: true,
                port: false,
            },
            Attribute::ResponseOrigin(a),
            Attribute::OtherAddress(b),
            Attribute::ResponsePort(4000),
            Attribute::Padding(vec![1, 2, 3, 4, 5]),
            Attribute::ChangedAddress(a),
            Attribute::SourceAddress(b),
            Attribute::MappedAddress(b),
            Attribute::ErrorCode {
                code: 420,
                reason: "Unknown".into(),
            },
            Attribute::UnknownAttributes(vec![0x1234, 0x5678]),
        ],
        padding: 0,
    };
    let bytes = m.encode_signed(None, true).unwrap();
    let mut back = decode(&bytes).unwrap();
    assert!(matches!(
        back.attributes.pop(),
        Some(Attribute::Fingerprint(_))
    ));
    assert_eq!(back, m);
}

fn err(b: &[u8]) -> StunDecodeError {
    decode(b).expect_err("malformed input is rejected")
}

#[test]
fn malformed_messages_give_typed_errors() {
    let good = RFC5769_RESPONSE_V4;
    assert_eq!(err(&good[..19]), StunDecodeError::ShortHeader(19));
    let mut b = good.to_vec();
    b[0] |= 0x80;
    assert_eq!(err(&b), StunDecodeError::NotStun);
    let mut b = good.to_vec();
    b[4] = 0;
    assert!(matches!(err(&b), StunDecodeError::BadCookie(_)));
    let mut b = good.to_vec();
    b[3] = 0x3d;
    assert_eq!(err(&b), StunDecodeError::UnalignedLength(0x3d));
    assert!(matches!(
        err(&good[..good.len() - 4]),
        StunDecodeError::LengthMismatch { .. }
    ));
    // Attribute length running past the end.
    let mut b = good.to_vec();
    b[22..24].copy_from_slice(&0x0100u16.to_be_bytes());
    assert_eq!(err(&b), StunDecodeError::AttributePastEnd(attr::SOFTWARE));
    // Address family 3 in XOR-MAPPED-ADDRESS (offset 36 = attr header, 41 = family).
    let mut b = good.to_vec();
    b[41] = 3;
    assert_eq!(
        err(&b),
        StunDecodeError::BadAddressFamily(attr::XOR_MAPPED_ADDRESS, 3)
    );
    // IPv4 family with IPv6 length.
    let mut b = RFC5769_RESPONSE_V6.to_vec();
    b[41] = 1;
    assert!(matches!(
        err(&b),
        StunDecodeError::BadAttributeLength(attr::XOR_MAPPED_ADDRESS, 20)
    ));
    // One flipped bit anywhere covered by the fingerprint.
    let mut b = good.to_vec();
    b[30] ^= 1;
    assert_eq!(err(&b), StunDecodeError::BadFingerprint);
}

/// xorshift64: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_mutations_never_panic() {
    let seeds = [
        RFC5769_REQUEST,
        RFC5769_RESPONSE_V4,
        RFC5769_RESPONSE_V6,
        RFC5769_LONG_TERM_REQUEST,
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut decoded = 0;
    for i in 0..50_000 {
        let mut b = seeds[i % seeds.len()].to_vec();
        for _ in 0..=rng.below(4) {
            match rng.below(4) {
                0 => {
                    let j = rng.below(b.len());
                    b[j] = rng.next() as u8;
                }
                1 => b.truncate(rng.below(b.len() + 1)),
                2 => {
                    let j = rng.below(b.len() + 1);
                    b.insert(j, rng.next() as u8);
                }
                _ => {
                    // Keep the header length consistent so the attribute parser is reached.
                    if b.len() >= 20 {
                        let l = (b.len() - 20) as u16;
                        b[2..4].copy_from_slice(&l.to_be_bytes());
                    }
                }
            }
            if b.is_empty() {
                break;
            }
        }
        if let Ok(m) = decode(&b) {
            decoded += 1;
            let _ = m.encode();
        }
        let _ = verify_integrity(&b, SHORT_TERM_PASSWORD);
    }
    assert!(
        decoded > 0,
        "some mutations stay valid (the test reaches deep paths)"
    );
}
