//! Fuzz target bodies: one function per plexus decoder that takes bytes from outside.
//!
//! Each body must return normally for every input; a panic (or an abort) is a defect.
//! Where it is cheap a body also asserts an invariant of the decoder (a round trip, or
//! that what was accepted satisfies the decoder's own rules), so a wrong answer is
//! caught as well as a crash.
//!
//! The cargo-fuzz binaries in `fuzz/fuzz_targets/` call these functions, and the
//! regression test (`tests/corpus/`) replays every committed corpus and crash file
//! through them on stable Rust, so the fuzzed code and the regression code are the same.

use std::io::{Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plexus::identity::{Identity, PeerCert};
use plexus::mediator::email;
use plexus::net::{parse_errqueue_control, IcmpVersion};
use plexus::profile::Profile;
use plexus::punch::{hops, wire};
use plexus::rendezvous::message::{Message, Rendezvous};
use plexus::rendezvous::replay::ReplayGuard;
use plexus::rendezvous::seal::{Envelope, Freshness};
use plexus::stun::codec;
use plexus_plugin_abi::PxOwnedBytes;
use plexus_plugin_sdk::MediatorPlugin;

/// A fuzz target body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its cargo-fuzz binary and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("stun_decode", stun_decode),
    ("envelope_open", envelope_open),
    ("email_unwrap", email_unwrap),
    ("rendezvous_decode", rendezvous_decode),
    ("handshake_decode", handshake_decode),
    ("icmp_errqueue", icmp_errqueue),
    ("file_name", file_name),
    ("telegram_updates", telegram_updates),
    ("plugin_return", plugin_return),
    ("replay_state", replay_state),
    ("profile_yaml", profile_yaml),
    ("smime_entity", smime_entity),
    ("email_refused_state", email_refused_state),
    ("portmap_reply", portmap_reply),
    ("dht_chunk", dht_chunk),
    ("turn_server", turn_server),
    ("tunnel_header", tunnel_header),
];

/// The fixed "now" (unix seconds) at which sealed messages are opened; the committed
/// seeds are dated just before it, so genuine ones pass the freshness check.
pub const NOW: u64 = 1_800_000_000;

/// The demo identities used by the sealed-message target.
pub mod demo {
    use super::*;

    /// Alice: RSA 2048, issued by the demo CA.
    pub const ALICE: &str = "alice@lab.example/home";
    /// Bob: EC P-256, issued by the demo CA.
    pub const BOB: &str = "bob@lab.example/office";

    /// The committed demo certificates (`certs/demo` in the repository).
    pub fn source_dir() -> PathBuf {
        PathBuf::from(plexus::testing::DEMO_DIR)
    }

    /// Demo identities with their certificates, loaded through the same checks as real
    /// ones (from a private copy that is removed again right away).
    pub fn load(names: &[&str]) -> Vec<(Identity, PeerCert)> {
        let certs = plexus::testing::DemoCerts::new("fuzz");
        names
            .iter()
            .map(|name| (certs.identity(name), certs.peer(name)))
            .collect()
    }

    /// The demo CA certificate.
    pub fn ca() -> Vec<openssl::x509::X509> {
        let pem = std::fs::read(source_dir().join("ca.pem")).expect("read certs/demo/ca.pem");
        vec![openssl::x509::X509::from_pem(&pem).expect("demo CA")]
    }
}

/// STUN (RFC 5389/5780) messages from the network: decode; re-decode what it encodes
/// (not asserted equal: re-padding can change what FINGERPRINT covers); check
/// MESSAGE-INTEGRITY against a key.
pub fn stun_decode(data: &[u8]) {
    if let Ok(m) = codec::decode(data) {
        let _ = codec::decode(&m.encode());
    }
    let _ = codec::verify_integrity(data, b"key");
}

/// A router's reply on port 5351, read as the answer to a PCP MAP request and to both
/// NAT-PMP requests. What is accepted must echo the request (nonce, protocol, port).
pub fn portmap_reply(data: &[u8]) {
    use plexus::portmap::wire;
    let req = wire::PcpMapRequest {
        client: Ipv4Addr::new(10, 14, 0, 2),
        nonce: *b"0123456789ab",
        internal_port: 40000,
        suggested_port: 40000,
        lifetime: 60,
    };
    if let Ok(r) = wire::decode_pcp_map(data, &req) {
        assert!(data.len() >= wire::PCP_MAP_LEN && data.len() <= wire::PCP_MAX_LEN);
        assert_eq!(&data[24..36], &req.nonce);
        assert_ne!(r.external_port, 0);
    }
    if let Ok(r) = wire::decode_natpmp_map(data, 40000) {
        assert!(data.len() >= 16);
        assert!(r.external_port != 0 || r.lifetime == 0);
    }
    let _ = wire::decode_natpmp_address(data);
}

/// The two envelopes a sealed message is opened with: alice (RSA) expecting bob, with
/// the demo CA pinned, and bob (EC) expecting alice, without a CA. Messages sealed to
/// the other side are refused as not for us, which costs little.
pub fn new_envelopes() -> [Envelope; 2] {
    let mut ids = demo::load(&["alice", "bob"]).into_iter();
    let (alice, alice_cert) = ids.next().expect("alice");
    let (bob, bob_cert) = ids.next().expect("bob");
    let freshness = Freshness::default();
    let to_alice = Envelope::new(
        alice,
        bob_cert,
        Some(&demo::ca()),
        freshness,
        ReplayGuard::in_memory(),
    )
    .expect("alice's envelope");
    let to_bob = Envelope::new(bob, alice_cert, None, freshness, ReplayGuard::in_memory())
        .expect("bob's envelope");
    [to_alice, to_bob]
}

/// The envelopes of [`envelope_open`]. They live for the whole run (loading keys costs
/// more than opening), so a genuine message is accepted only the first time; the
/// replay guard is the last check, after everything a mutated message can reach.
fn envelopes() -> &'static std::sync::Mutex<[Envelope; 2]> {
    static E: OnceLock<std::sync::Mutex<[Envelope; 2]>> = OnceLock::new();
    E.get_or_init(|| std::sync::Mutex::new(new_envelopes()))
}

/// A sealed rendezvous message (CMS enveloped-data): decrypt, verify, check.
pub fn envelope_open(data: &[u8]) {
    // A panic in an earlier call (the regression test catches them) poisons the lock;
    // the envelopes themselves are still usable.
    let mut envs = envelopes().lock().unwrap_or_else(|p| p.into_inner());
    for env in envs.iter_mut() {
        if let Ok(m) = env.open(data, NOW) {
            assert_eq!(&m.body().from, env.peer_id());
            assert_eq!(&m.body().to, env.host_id());
        }
    }
}

/// The addresses of the demo identities, as e-mail peers.
const MAIL_PEERS: [&str; 2] = ["alice@lab.example", "bob@lab.example"];

/// A whole mail from the mailbox: header classification, then (for the peer it claims
/// to be from) unwrapping; what unwraps is wrapped again and must unwrap to the same
/// sealed bytes. (`unwrap` classifies first itself, so it runs only where that passed.)
pub fn email_unwrap(data: &[u8]) {
    for (i, peer) in MAIL_PEERS.iter().enumerate() {
        let Ok(from) = email::classify_headers(data, peer) else {
            continue;
        };
        assert!(from.eq_ignore_ascii_case(peer), "{from} is not {peer}");
        let Ok(u) = email::unwrap(data, peer, email::DEFAULT_MAX_MESSAGE_SIZE) else {
            return;
        };
        assert!(!u.sealed.is_empty());
        if email::valid_address(&u.from) {
            let to = MAIL_PEERS[1 - i];
            let again = email::wrap(&u.from, to, &u.sealed, std::time::UNIX_EPOCH)
                .expect("wrap what unwrap accepted");
            let back = email::unwrap(&again, peer, u32::MAX).expect("unwrap what wrap made");
            assert_eq!(back.sealed, u.sealed);
        }
        return;
    }
}

/// The decrypted rendezvous message. The encoding is canonical: whatever decodes must
/// encode to exactly the same bytes, and decode again to the same message. Version 1 is
/// read but no longer written: such a message re-encodes as version 2, which must be
/// the input plus version 2's lines at their version 1 meaning.
pub fn rendezvous_decode(data: &[u8]) {
    if let Ok(m) = Message::decode(data) {
        let bytes = m.encode().expect("encode a decoded message");
        let written = if data.starts_with(b"PLEXUS-RENDEZVOUS 1\n") {
            as_version_1(&bytes)
        } else {
            bytes.clone()
        };
        assert_eq!(written, data, "decode accepted a non-canonical encoding");
        assert_eq!(Message::decode(&bytes).expect("decode its encoding"), m);
    }
}

/// A version 2 invite or accept as version 1 wrote it: without the lines version 2
/// added (which must hold what version 1 meant: no port mapping, no relay, a direct
/// punch), so a line that says anything else stays and the comparison fails.
fn as_version_1(v2: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(v2).expect("an encoding is ASCII");
    let Some(rest) = text.strip_prefix("PLEXUS-RENDEZVOUS 2\n") else {
        return v2.to_vec();
    };
    let implied = [
        "port-mapping: -",
        "relay: never",
        "method: -",
        "method: direct",
        "relayed: -",
    ];
    let mut out = String::from("PLEXUS-RENDEZVOUS 1\n");
    for line in rest.lines().filter(|l| !implied.contains(l)) {
        out.push_str(line);
        out.push('\n');
    }
    out.into_bytes()
}

/// The handshake fixture: secrets 0x11*32 / 0x22*32, session id 00..0f (the same as
/// the golden vectors of `punch::wire`).
pub fn handshake_fixture() -> &'static (wire::Keys, [u8; 16]) {
    static K: OnceLock<(wire::Keys, [u8; 16])> = OnceLock::new();
    K.get_or_init(|| {
        let sid: [u8; 16] = core::array::from_fn(|i| i as u8);
        let secrets = wire::Secrets {
            inviter: [0x11; 32],
            acceptor: [0x22; 32],
        };
        (wire::Keys::derive(&secrets, &sid), sid)
    })
}

/// A handshake datagram, expected from either side; an accepted packet re-encodes to
/// the same bytes.
pub fn handshake_decode(data: &[u8]) {
    let (keys, sid) = handshake_fixture();
    for role in [wire::Role::Inviter, wire::Role::Acceptor] {
        if let Ok(p) = wire::decode(keys, role, sid, data) {
            assert_eq!(p.sender, role);
            assert_eq!(wire::encode(keys, &p), data);
        }
    }
}

/// The payload of an `IP_RECVERR`/`IPV6_RECVERR` control message: `sock_extended_err`
/// and the offender's `sockaddr_in` or `sockaddr_in6`. The same bytes also go through
/// the walk over a whole `recvmsg` control buffer (`cmsghdr`s).
pub fn icmp_errqueue(data: &[u8]) {
    if let Some(r) = hops::parse_extended_err(data) {
        let ee = std::mem::size_of::<libc::sock_extended_err>();
        assert!(data.len() >= ee);
        let origin = match r.version {
            IcmpVersion::V4 => libc::SO_EE_ORIGIN_ICMP,
            IcmpVersion::V6 => libc::SO_EE_ORIGIN_ICMP6,
        };
        assert_eq!(data[4], origin);
        assert_eq!((r.icmp_type, r.icmp_code), (data[5], data[6]));
        if let Some(ip) = r.offender {
            let family = u16::from_ne_bytes([data[ee], data[ee + 1]]);
            let v6 = |at: usize| {
                let a: [u8; 16] = data[at..at + 16].try_into().unwrap();
                Ipv6Addr::from(a)
            };
            match ip {
                IpAddr::V4(v4) if family == libc::AF_INET as u16 => {
                    let at = ee + 4;
                    assert_eq!(v4.octets(), data[at..at + 4]);
                }
                IpAddr::V4(v4) => assert_eq!(v6(ee + 8), v4.to_ipv6_mapped()),
                IpAddr::V6(a) => {
                    assert_eq!(family, libc::AF_INET6 as u16);
                    assert_eq!(a, v6(ee + 8));
                    assert!(a.to_ipv4_mapped().is_none());
                }
            }
        }
        // Every ICMPv6 report the cores act on reads as a known ICMPv4 kind.
        if let Some((t, _)) = r.v4_numbering() {
            assert!(r.version == IcmpVersion::V4 || matches!(t, 3 | 11 | 12));
        }
    }
    // The control-buffer walk must return, whatever the lengths in the headers say.
    let _ = parse_errqueue_control(data);
}

/// A file name in the shared folder of the file mediator: `to~from~unique.plexus`.
pub fn file_name(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((to, from, unique)) = plexus_file::parse_name(name) {
        assert!(plexus_file::valid_address(to) && plexus_file::valid_address(from));
        let stem = format!("{to}~{from}~{unique}");
        assert!(
            name.starts_with(&stem),
            "{name:?} does not start with {stem:?}"
        );
        assert!(!name[stem.len()..].contains('~'));
    }
}

/// This side's bot username in the Telegram target.
const TELEGRAM_ME: &str = "PlexusAliceBot";

fn telegram() -> &'static plexus_telegram::Telegram {
    static T: OnceLock<plexus_telegram::Telegram> = OnceLock::new();
    T.get_or_init(|| {
        // The API URL is never contacted: only the update parsing runs.
        let settings = "chat_id: -1001234567890\npeer_bot_id: 7000000001\n\
                        token: \"123456:fuzz-only\"\nallow_token_in_settings: true\n\
                        api_url: http://127.0.0.1:9\n";
        plexus_telegram::Telegram::create(settings).expect("telegram settings")
    })
}

/// A Bot API `getUpdates` answer: the id of the first update read from an answer too
/// long to parse, and each update's message checked for being a plexus document from
/// the peer (the same steps `poll` takes on the parsed JSON).
pub fn telegram_updates(data: &[u8]) {
    let _ = plexus_telegram::first_update_id(data);
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let tg = telegram();
    let Some(updates) = json["result"].as_array() else {
        return;
    };
    for update in updates {
        if update["update_id"].as_i64().is_none() {
            continue;
        }
        if let Some(p) = tg.accept(&update["message"], TELEGRAM_ME) {
            let _ = format!("{p:?}");
        }
    }
}

/// The host copying a buffer a plugin returned: a pointer into the input, a length
/// (clamped to what really is there, so the memory is readable), and a cap, both
/// taken from the input. Layout: flags (bit 0: null pointer), len u64 LE, max u64 LE,
/// then the buffer.
pub fn plugin_return(data: &[u8]) {
    let Some((head, buf)) = data.split_at_checked(17) else {
        return;
    };
    let null = head[0] & 1 != 0;
    let len = u64::from_le_bytes(head[1..9].try_into().expect("8 bytes"));
    let max = u64::from_le_bytes(head[9..17].try_into().expect("8 bytes"));
    let len = usize::try_from(len).unwrap_or(usize::MAX).min(buf.len());
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    // A pointer into `buf` (never written through); null only when the flag says so.
    let ptr = if null {
        std::ptr::null_mut()
    } else {
        buf.as_ptr() as *mut u8
    };
    let b = PxOwnedBytes { ptr, len };
    // SAFETY: a non-null `ptr` points at `buf`, which holds at least `len` bytes.
    let got = unsafe { plexus::plugin::copy_owned(&b, max) };
    match got {
        Some(v) => {
            assert!(len == 0 || (!null && len <= max));
            assert_eq!(v, &buf[..if null { 0 } else { len }]);
        }
        None => assert!(len != 0 && (null || len > max)),
    }
}

/// The replay-protection state file. It is read through a memory file's
/// `/proc/self/fd` path, so fuzzing touches no disk.
pub fn replay_state(data: &[u8]) {
    thread_local! {
        static FILE: (std::fs::File, PathBuf) = {
            // SAFETY: a NUL-terminated name; the returned descriptor is owned by the File.
            let fd = unsafe { libc::memfd_create(c"plexus-fuzz-replay".as_ptr(), libc::MFD_CLOEXEC) };
            assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
            let path = PathBuf::from(format!("/proc/self/fd/{fd}"));
            // SAFETY: `fd` was just created and nothing else owns it.
            (unsafe { std::fs::File::from_raw_fd(fd) }, path)
        };
    }
    FILE.with(|(f, path)| {
        let mut f = f;
        f.set_len(0).expect("truncate the memory file");
        f.seek(SeekFrom::Start(0)).expect("rewind the memory file");
        f.write_all(data).expect("write the memory file");
        if let Ok(g) = ReplayGuard::open(path) {
            // Bounded: a state file with more entries than the guard keeps is refused.
            assert!(g.len() <= data.len() / 2);
        }
    });
}

/// A profile (YAML), as read from `--profile`: parsed and validated.
pub fn profile_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Profile::from_yaml(text, Path::new("/nonexistent/plexus-fuzz/p.yaml"), false);
}

/// The reader of the S/MIME entity inside a decrypted message (reached by
/// `envelope_open` only through a valid encryption, so fuzzed on its own): what it
/// hands OpenSSL is DER it decoded from the entity, never more than the entity.
pub fn smime_entity(data: &[u8]) {
    use plexus::rendezvous::mime::{parse, Signed};
    match parse(data) {
        Ok(Signed::Opaque { der }) => assert!(der.len() <= data.len()),
        Ok(Signed::Detached { content, signature }) => {
            assert!(content.len() + signature.len() <= data.len());
            // The signed content is a slice of the input, exactly as it stands there.
            let start = content.as_ptr() as usize - data.as_ptr() as usize;
            assert!(start + content.len() <= data.len());
        }
        Err(_) => {}
    }
}

/// The e-mail mediator's refused-UID state file: what decodes encodes back to a file
/// that decodes to the same state.
pub fn email_refused_state(data: &[u8]) {
    use plexus::mediator::email::{decode_refused_state, encode_refused_state};
    if let Ok(state) = decode_refused_state(data) {
        let again =
            decode_refused_state(&encode_refused_state(&state)).expect("an encoded state decodes");
        assert_eq!(again, state);
    }
}

/// BEP 44 values as the `dht` plugin reads them from DHT nodes: the input is a list of
/// values, each prefixed by its length (u16 BE). Each is decoded strictly (an accepted
/// chunk must re-encode to the same bytes); the chunks are assembled as the plugin
/// does (the first one fixes id, count and total), and a complete ciphertext is
/// opened with a fixed key, which must refuse anything not sealed with it.
pub fn dht_chunk(data: &[u8]) {
    use plexus_dht::codec::{self, Assembly, Chunk};
    let mut rest = data;
    let mut asm: Option<Assembly> = None;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = (u16::from_be_bytes(*len) as usize).min(tail.len());
        let (value, tail) = tail.split_at(len);
        rest = tail;
        let Ok(chunk) = Chunk::decode(value) else {
            continue;
        };
        assert_eq!(
            chunk.encode(),
            value,
            "an accepted chunk re-encodes to its bytes"
        );
        match asm.as_mut() {
            None => asm = Some(Assembly::new(chunk)),
            Some(a) => {
                let _ = a.add(chunk);
            }
        }
    }
    if let Some(ct) = asm.as_ref().and_then(Assembly::finish) {
        assert!(ct.len() <= codec::MAX_TOTAL);
        let id = asm.as_ref().map(Assembly::msg_id).unwrap_or_default();
        let key = codec::Schedule::new(&[7; 32]).message_key("a", "b", 1);
        if let Some(plain) = codec::open(&key, &id, &codec::aad("a", "b", 1), &ct) {
            // Only the seeds sealed with this key get here.
            assert_eq!(codec::seal(&key, &id, &codec::aad("a", "b", 1), &plain), ct);
        }
    }
}

/// Datagrams from a TURN server (RFC 8656): the decoder (ChannelData or STUN), then a
/// fresh TURN client's handling of it as coming from its server, with the transaction id
/// of the client's pending Allocate spliced in so responses reach the auth logic. Asserts
/// that ChannelData data lies inside the datagram and that a client never reports a
/// peer datagram before it has an allocation.
pub fn turn_server(data: &[u8]) {
    use plexus::relay::proto::{decode_server, ServerDatagram};
    use plexus::relay::{Input, TurnClient};
    use std::time::Instant;
    if let Ok(ServerDatagram::ChannelData { data: d, .. }) = decode_server(data) {
        assert!(d.len() + 4 <= data.len());
    }
    let server = std::net::SocketAddr::from((Ipv4Addr::new(203, 0, 113, 5), 3478));
    let now = Instant::now();
    let mut c = TurnClient::new(
        server,
        "user".into(),
        plexus::secret::Password::new("pw"),
        None,
        now,
    );
    let req = c.poll_transmit().expect("the first Allocate");
    let mut bytes = data.to_vec();
    if bytes.len() >= 20 {
        bytes[8..20].copy_from_slice(&req[8..20]);
    }
    for b in [data, &bytes[..]] {
        let r = c.receive(now, server, b);
        assert!(
            !matches!(r, Input::Peer { .. }),
            "peer data without allocation"
        );
        while c.poll_transmit().is_some() {}
        while c.poll_event().is_some() {}
        c.handle_timeout(now);
    }
}

/// The tunnel plugin's two headers from the peer: the first byte picks the stream
/// opening header (even) or a datagram (odd), the rest is decoded; whatever is accepted
/// re-encodes to the same bytes.
pub fn tunnel_header(data: &[u8]) {
    use plexus_tunnel::proto;
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Some(first2) = rest.get(..2) {
            if let Ok(n) = proto::open_rest_len([first2[0], first2[1]]) {
                assert!((1..=proto::MAX_NAME).contains(&n));
            }
        }
        if let Ok(name) = proto::decode_open(rest) {
            assert!(proto::valid_name(name));
            assert_eq!(proto::encode_open(name), rest);
        }
    } else if let Ok((name, flow, payload)) = proto::decode_datagram(rest) {
        assert!(proto::valid_name(name));
        assert_eq!(proto::encode_datagram(name, flow, payload), rest);
        assert_eq!(payload.len() + proto::datagram_overhead(name), rest.len());
    }
}
