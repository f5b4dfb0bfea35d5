use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::client::{TurnClient, TurnEvent};
use super::proto::{self, attr, method, ServerDatagram, TurnDecodeError};
use super::*;
use crate::stun::codec::{self, Attribute, Class, Message, TransactionId};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn rest_credentials_match_the_turn_rest_api() {
    // Pinned against an independent HMAC-SHA1 + base64 (Python's hmac module).
    let creds = TurnCredentials::Rest {
        user: "alice".into(),
        secret: Password::new("labsecret"),
        ttl: Duration::from_secs(3600),
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000 - 3600);
    let (user, pw) = creds.username_password(now).unwrap();
    assert_eq!(user, "1700000000:alice");
    assert_eq!(pw.expose(), "8vlALbx8VFaRmLXFlUR5dV5LXl0=");
}

#[test]
fn xor_address_matches_rfc5769_and_round_trips() {
    // RFC 5769 §2.2: 192.0.2.1:32853 with this transaction id.
    let tid = TransactionId(hex("b7e7a701bc34d686fa87dfae").try_into().unwrap());
    let a: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    assert_eq!(proto::xor_addr_value(a, &tid), hex("0001a147e112a643"));
    assert_eq!(
        proto::xor_addr_decode(&hex("0001a147e112a643"), &tid),
        Some(a)
    );
    let v6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    assert_eq!(
        proto::xor_addr_decode(&proto::xor_addr_value(v6, &tid), &tid),
        Some(v6)
    );
    assert_eq!(proto::xor_addr_decode(&hex("0003a147e112a643"), &tid), None);
    assert_eq!(proto::xor_addr_decode(&hex("0001a1"), &tid), None);
}

#[test]
fn channel_data_round_trips_and_rejects_bad_frames() {
    let f = proto::channel_data(0x4001, b"hello");
    assert_eq!(f, hex("4001000568656c6c6f"));
    assert_eq!(
        proto::decode_server(&f),
        Ok(ServerDatagram::ChannelData {
            channel: 0x4001,
            data: b"hello"
        })
    );
    // Padded to 4 bytes (allowed over UDP): the padding is not data.
    let mut padded = f.clone();
    padded.extend_from_slice(&[0, 0, 0]);
    assert!(matches!(
        proto::decode_server(&padded),
        Ok(ServerDatagram::ChannelData { data: b"hello", .. })
    ));
    assert_eq!(
        proto::decode_server(&f[..6]),
        Err(TurnDecodeError::ShortChannelData {
            header: 5,
            actual: 2
        })
    );
    assert_eq!(
        proto::decode_server(&hex("50000000")),
        Err(TurnDecodeError::BadChannel(0x5000))
    );
    assert!(matches!(
        proto::decode_server(&hex("40")),
        Err(TurnDecodeError::ShortChannelData { .. })
    ));
    assert!(matches!(
        proto::decode_server(b"\x80junk"),
        Err(TurnDecodeError::Stun(_))
    ));
}

#[test]
fn policy_parses_and_defaults_to_never() {
    assert_eq!("fallback".parse(), Ok(RelayPolicy::Fallback));
    assert_eq!("always".parse(), Ok(RelayPolicy::Always));
    assert_eq!("never".parse(), Ok(RelayPolicy::Never));
    let e = "sometimes".parse::<RelayPolicy>().unwrap_err();
    assert!(e.contains("never, fallback or always"), "{e}");
    assert_eq!(RelaySettings::default().policy, RelayPolicy::Never);
}

const SERVER: &str = "203.0.113.5:3478";

fn client(now: Instant) -> TurnClient {
    TurnClient::new(
        SERVER.parse().unwrap(),
        "plexus".into(),
        Password::new("pw"),
        None,
        now,
    )
}

fn error_response(req: &[u8], code: u16, realm: &str, nonce: &str) -> Vec<u8> {
    let m = codec::decode(req).unwrap();
    Message {
        class: Class::Error,
        method: m.method,
        transaction_id: m.transaction_id,
        attributes: vec![
            Attribute::ErrorCode {
                code,
                reason: "x".into(),
            },
            proto::raw(attr::REALM, realm.as_bytes().to_vec()),
            proto::raw(attr::NONCE, nonce.as_bytes().to_vec()),
        ],
        padding: 0,
    }
    .encode()
}

#[test]
fn the_client_signs_after_the_challenge_and_ends_on_a_second_401() {
    let t0 = Instant::now();
    let server: SocketAddr = SERVER.parse().unwrap();
    let mut c = client(t0);
    let first = c.poll_transmit().unwrap();
    let m = codec::decode(&first).unwrap();
    assert_eq!((m.class, m.method), (Class::Request, method::ALLOCATE));
    assert_eq!(
        proto::find_raw(&m, attr::REQUESTED_TRANSPORT),
        Some(&[17, 0, 0, 0][..])
    );
    assert_eq!(
        codec::verify_integrity(&first, b"k"),
        None,
        "unsigned first"
    );

    // The challenge: the next Allocate carries the credentials and a valid MAC.
    let challenge = error_response(&first, 401, "lab", "n1");
    assert_eq!(c.receive(t0, server, &challenge), Input::Handled);
    let second = c.poll_transmit().unwrap();
    let key = codec::long_term_key("plexus", "lab", "pw").unwrap();
    assert_eq!(codec::verify_integrity(&second, &key), Some(true));
    let m2 = codec::decode(&second).unwrap();
    assert_eq!(proto::find_raw(&m2, attr::USERNAME), Some(&b"plexus"[..]));
    assert_eq!(proto::find_raw(&m2, attr::NONCE), Some(&b"n1"[..]));

    // A stale nonce: signed again with the new nonce.
    c.receive(t0, server, &error_response(&second, 438, "lab", "n2"));
    let third = c.poll_transmit().unwrap();
    let m3 = codec::decode(&third).unwrap();
    assert_eq!(proto::find_raw(&m3, attr::NONCE), Some(&b"n2"[..]));
    assert_eq!(c.stats().stale_nonces, 1);

    // 401 to a signed request: the credentials are wrong.
    c.receive(t0, server, &error_response(&third, 401, "lab", "n2"));
    match c.poll_event() {
        Some(TurnEvent::Failed(RelayError::Auth { .. })) => {}
        other => panic!("expected an Auth failure, got {other:?}"),
    }
    assert!(c.is_finished());
}

#[test]
fn the_client_ignores_what_is_not_from_its_server_or_not_signed() {
    let t0 = Instant::now();
    let mut c = client(t0);
    let first = c.poll_transmit().unwrap();
    let other: SocketAddr = "198.51.100.9:3478".parse().unwrap();
    assert_eq!(
        c.receive(t0, other, &error_response(&first, 401, "lab", "n")),
        Input::Ignored
    );
    // A success without MESSAGE-INTEGRITY (anyone can send one) is dropped.
    let m = codec::decode(&first).unwrap();
    let fake = Message {
        class: Class::Success,
        attributes: vec![Attribute::XorMappedAddress(other)],
        ..m
    }
    .encode();
    assert_eq!(
        c.receive(t0, SERVER.parse().unwrap(), &fake),
        Input::Ignored
    );
    assert_eq!(
        c.receive(t0, SERVER.parse().unwrap(), b"\x40\x00\x00\x01x"),
        Input::Ignored
    );
    assert_eq!(c.stats().dropped, 3);
    assert!(!c.is_allocated());
}

#[test]
fn the_client_gives_up_on_a_silent_server_in_bounded_time() {
    let t0 = Instant::now();
    let mut c = client(t0);
    let mut sends = 0;
    let mut now = t0;
    while let Some(t) = c.poll_timeout() {
        while c.poll_transmit().is_some() {
            sends += 1;
        }
        assert!(
            now - t0 < Duration::from_secs(30),
            "still trying after 30 s"
        );
        now = t.max(now);
        c.handle_timeout(now);
    }
    assert_eq!(sends, 6);
    assert!(matches!(
        c.poll_event(),
        Some(TurnEvent::Failed(RelayError::Timeout { .. }))
    ));
}

/// An inner core that records its input and sends one datagram from each of two sockets.
#[derive(Default)]
struct Probe {
    inputs: Vec<(usize, SocketAddr, Vec<u8>)>,
    sent: bool,
}

impl crate::sansio::Core for Probe {
    type Event = ();
    fn handle_input(&mut self, _: Instant, socket: usize, from: SocketAddr, bytes: &[u8]) {
        self.inputs.push((socket, from, bytes.to_vec()));
    }
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_transmit(&mut self, _: Instant) -> Option<crate::sansio::Transmit> {
        if self.sent {
            return None;
        }
        self.sent = true;
        Some(crate::sansio::Transmit {
            socket: 1,
            dest: "198.51.100.9:4000".parse().unwrap(),
            payload: b"direct".to_vec(),
            ttl: Some(3),
        })
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn poll_event(&mut self) -> Option<()> {
        None
    }
}

#[test]
fn relayed_passes_other_sockets_through_untouched() {
    use crate::sansio::Core;
    let t0 = Instant::now();
    let mut c = client(t0);
    let allocate = c.poll_transmit().unwrap();
    let mut inner = Probe::default();
    let mut r = Relayed::on_socket(&mut c, &mut inner, 0);
    let direct = r.poll_transmit(t0).unwrap();
    assert_eq!(
        (direct.socket, direct.payload.as_slice(), direct.ttl),
        (1, &b"direct"[..], Some(3))
    );
    assert!(r.poll_transmit(t0).is_none());
    let from: SocketAddr = "198.51.100.9:4000".parse().unwrap();
    r.handle_input(t0, 1, from, b"hi");
    // On the allocation's socket, only the server is heard, and only relayed data
    // reaches the inner core.
    r.handle_input(t0, 0, from, b"hi");
    r.handle_input(
        t0,
        0,
        SERVER.parse().unwrap(),
        &error_response(&allocate, 500, "x", "y"),
    );
    assert_eq!(inner.inputs, vec![(1, from, b"hi".to_vec())]);
}
