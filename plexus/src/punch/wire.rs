//! Handshake packet format and key derivation.
//!
//! ```text
//! 0      4   5     6                22         30              46
//! +------+---+-----+----------------+----------+---------------+
//! | PLXH | 1 | typ | session id(16) | seq (8)  | tag (16)      |
//! +------+---+-----+----------------+----------+---------------+
//! ```
//! `typ` = direction in the high nibble (1 inviter→acceptor, 2 acceptor→inviter) and
//! flags in the low one: bit 0 "I have seen a valid packet from you" (the article's
//! flag 0 / flag 1), bit 1 "I am done". `seq` is big-endian and never repeats within a
//! direction. `tag` is HMAC-SHA256 truncated to 16 bytes over bytes 0..30, under the MAC
//! key of the sender's direction, so a packet reflected back at its sender fails twice:
//! wrong direction nibble and wrong key.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::executor::SessionKey;
use crate::rendezvous::{Accept, Invite};
use crate::secret::wipe;

/// First bytes of every handshake packet.
pub const MAGIC: [u8; 4] = *b"PLXH";
/// Wire format version.
pub const VERSION: u8 = 1;
/// Length of every handshake packet.
pub const PACKET_LEN: usize = 46;
/// Length of the truncated HMAC tag.
pub const TAG_LEN: usize = 16;
const MACED_LEN: usize = PACKET_LEN - TAG_LEN;

/// HKDF info label of the inviter→acceptor MAC key.
pub const INFO_MAC_INVITER: &[u8] = b"plexus v1 handshake mac inviter->acceptor";
/// HKDF info label of the acceptor→inviter MAC key.
pub const INFO_MAC_ACCEPTOR: &[u8] = b"plexus v1 handshake mac acceptor->inviter";
/// HKDF info label of the session key exported to executors.
pub const INFO_SESSION_KEY: &[u8] = b"plexus v1 session key";

/// Flag bit: the sender has seen a valid packet from the receiver (the article's flag).
pub const FLAG_SEEN: u8 = 0x01;
/// Flag bit: the sender has finished its handshake (sent and received flag 1).
pub const FLAG_DONE: u8 = 0x02;

/// Which side of the handshake a packet comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that sent the invite; it speaks first.
    Inviter,
    /// The side that accepted; it answers.
    Acceptor,
}

impl Role {
    fn nibble(self) -> u8 {
        match self {
            Role::Inviter => 0x10,
            Role::Acceptor => 0x20,
        }
    }
    /// The other side.
    pub fn peer(self) -> Role {
        match self {
            Role::Inviter => Role::Acceptor,
            Role::Acceptor => Role::Inviter,
        }
    }
}

/// The two 32-byte secrets exchanged (sealed) in the invite and the accept.
/// Fixed length so that `inviter || acceptor` is unambiguous.
#[derive(Clone)]
pub struct Secrets {
    /// Fresh random secret from the invite.
    pub inviter: [u8; 32],
    /// Fresh random secret from the accept.
    pub acceptor: [u8; 32],
}

impl Secrets {
    /// From the invite's and the accept's secrets. The types keep the order right:
    ///
    /// ```compile_fail
    /// # use plexus::{punch::Secrets, rendezvous::{Accept, Invite}};
    /// fn swapped(invite: &Invite, accept: &Accept) -> Secrets {
    ///     Secrets::from_rendezvous(accept, invite)
    /// }
    /// ```
    pub fn from_rendezvous(invite: &Invite, accept: &Accept) -> Secrets {
        Secrets {
            inviter: *invite.secret.expose(),
            acceptor: *accept.secret.expose(),
        }
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        wipe(&mut self.inviter);
        wipe(&mut self.acceptor);
    }
}

/// Keys derived from both secrets and the session id.
#[derive(Clone)]
pub struct Keys {
    mac_inviter: [u8; 32],
    mac_acceptor: [u8; 32],
    session: [u8; 32],
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        wipe(&mut self.mac_inviter);
        wipe(&mut self.mac_acceptor);
        wipe(&mut self.session);
    }
}

impl Keys {
    /// HKDF-SHA256 with ikm = inviter secret || acceptor secret and salt = session id.
    pub fn derive(secrets: &Secrets, session_id: &[u8; 16]) -> Keys {
        let mut ikm = [0u8; 64];
        ikm[..32].copy_from_slice(&secrets.inviter);
        ikm[32..].copy_from_slice(&secrets.acceptor);
        let hk = Hkdf::<Sha256>::new(Some(session_id), &ikm);
        wipe(&mut ikm);
        let mut k = Keys {
            mac_inviter: [0; 32],
            mac_acceptor: [0; 32],
            session: [0; 32],
        };
        // 32 bytes is far below HKDF-SHA256's 255*32 limit: expand cannot fail.
        for (info, out) in [
            (INFO_MAC_INVITER, &mut k.mac_inviter),
            (INFO_MAC_ACCEPTOR, &mut k.mac_acceptor),
            (INFO_SESSION_KEY, &mut k.session),
        ] {
            hk.expand(info, out).expect("32-byte HKDF output");
        }
        k
    }

    /// The 256-bit key handed to executors (e.g. as a pre-shared key).
    pub fn session_key(&self) -> SessionKey {
        SessionKey(self.session)
    }

    fn mac_key(&self, sender: Role) -> &[u8; 32] {
        match sender {
            Role::Inviter => &self.mac_inviter,
            Role::Acceptor => &self.mac_acceptor,
        }
    }

    fn mac(&self, sender: Role) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(self.mac_key(sender))
            .expect("HMAC takes any key length")
    }
}

/// A decoded, authenticated handshake packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Who sent it.
    pub sender: Role,
    /// Flag bits ([`FLAG_SEEN`], [`FLAG_DONE`]).
    pub flags: u8,
    /// Session id it belongs to.
    pub session_id: [u8; 16],
    /// Per-direction sequence number.
    pub seq: u64,
}

/// Why a datagram is not a packet for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Wrong length, magic or version, or unknown type bits: not a plexus handshake packet.
    Malformed,
    /// A handshake packet of another session.
    WrongSession,
    /// Claims to come from the wrong side (e.g. our own packet reflected back).
    WrongDirection,
    /// The tag does not verify under the sender's key.
    BadMac,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Malformed => "not a plexus handshake packet",
            WireError::WrongSession => "handshake packet of another session",
            WireError::WrongDirection => "handshake packet from the wrong side",
            WireError::BadMac => "handshake packet with an invalid MAC",
        })
    }
}

impl std::error::Error for WireError {}

/// Encode and authenticate a packet.
pub fn encode(keys: &Keys, p: &Packet) -> Vec<u8> {
    let mut out = Vec::with_capacity(PACKET_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(p.sender.nibble() | (p.flags & (FLAG_SEEN | FLAG_DONE)));
    out.extend_from_slice(&p.session_id);
    out.extend_from_slice(&p.seq.to_be_bytes());
    let mut mac = keys.mac(p.sender);
    mac.update(&out);
    let tag = mac.finalize().into_bytes();
    out.extend_from_slice(&tag[..TAG_LEN]);
    out
}

/// Decode a datagram that must come from `expected_sender` in session `session_id`.
pub fn decode(
    keys: &Keys,
    expected_sender: Role,
    session_id: &[u8; 16],
    bytes: &[u8],
) -> Result<Packet, WireError> {
    if bytes.len() != PACKET_LEN || bytes[..4] != MAGIC || bytes[4] != VERSION {
        return Err(WireError::Malformed);
    }
    let typ = bytes[5];
    if typ & 0x0c != 0 {
        return Err(WireError::Malformed);
    }
    let sender = match typ & 0xf0 {
        0x10 => Role::Inviter,
        0x20 => Role::Acceptor,
        _ => return Err(WireError::Malformed),
    };
    if bytes[6..22] != session_id[..] {
        return Err(WireError::WrongSession);
    }
    if sender != expected_sender {
        return Err(WireError::WrongDirection);
    }
    let mut mac = keys.mac(sender);
    mac.update(&bytes[..MACED_LEN]);
    mac.verify_truncated_left(&bytes[MACED_LEN..])
        .map_err(|_| WireError::BadMac)?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[22..30]);
    let mut sid = [0u8; 16];
    sid.copy_from_slice(&bytes[6..22]);
    Ok(Packet {
        sender,
        flags: typ & 0x03,
        session_id: sid,
        seq: u64::from_be_bytes(seq),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn fixture() -> (Keys, [u8; 16]) {
        let secrets = Secrets {
            inviter: [0x11; 32],
            acceptor: [0x22; 32],
        };
        let sid: [u8; 16] = core::array::from_fn(|i| i as u8);
        (Keys::derive(&secrets, &sid), sid)
    }

    #[test]
    fn golden_vectors() {
        let (keys, sid) = fixture();
        let a = encode(
            &keys,
            &Packet {
                sender: Role::Inviter,
                flags: 0,
                session_id: sid,
                seq: 1,
            },
        );
        let b = encode(
            &keys,
            &Packet {
                sender: Role::Acceptor,
                flags: FLAG_SEEN | FLAG_DONE,
                session_id: sid,
                seq: 0x0102030405060708,
            },
        );
        assert_eq!(hex(&a), GOLDEN_INVITER_SEQ1_FLAG0);
        assert_eq!(hex(&b), GOLDEN_ACCEPTOR_FLAGS3);
        assert_eq!(hex(&keys.session_key().0), GOLDEN_SESSION_KEY);
        assert_eq!(
            decode(&keys, Role::Acceptor, &sid, &b).unwrap().seq,
            0x0102030405060708
        );
    }

    // Computed independently (Python's hmac/hashlib with a hand-written RFC 5869 HKDF)
    // for secrets 0x11*32 / 0x22*32 and session id 00..0f.
    const GOLDEN_INVITER_SEQ1_FLAG0: &str = "504c58480110000102030405060708090a0b0c0d0e0f\
        0000000000000001f09b6e3edfe317b34187ba290792f11a";
    const GOLDEN_ACCEPTOR_FLAGS3: &str = "504c58480123000102030405060708090a0b0c0d0e0f\
        0102030405060708baababd638388d3c74b9e3d592222f1a";
    const GOLDEN_SESSION_KEY: &str =
        "0687f3954bfb6e03cb5b4a32b1170224ab7af751bda2cbdd03aa881e0b2e21c6";

    #[test]
    fn rejects_every_tampered_byte() {
        let (keys, sid) = fixture();
        let p = Packet {
            sender: Role::Inviter,
            flags: FLAG_SEEN,
            session_id: sid,
            seq: 7,
        };
        let good = encode(&keys, &p);
        assert_eq!(decode(&keys, Role::Inviter, &sid, &good), Ok(p));
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(
                decode(&keys, Role::Inviter, &sid, &bad).is_err(),
                "byte {i}"
            );
        }
        assert_eq!(
            decode(&keys, Role::Inviter, &sid, &good[..45]),
            Err(WireError::Malformed)
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            decode(&keys, Role::Inviter, &sid, &long),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn reflection_and_other_session_are_refused() {
        let (keys, sid) = fixture();
        let p = Packet {
            sender: Role::Inviter,
            flags: 0,
            session_id: sid,
            seq: 1,
        };
        let bytes = encode(&keys, &p);
        assert_eq!(
            decode(&keys, Role::Acceptor, &sid, &bytes),
            Err(WireError::WrongDirection)
        );
        // Relabel the direction nibble: the tag was made under the other key.
        let mut relabeled = bytes.clone();
        relabeled[5] = 0x20;
        assert_eq!(
            decode(&keys, Role::Acceptor, &sid, &relabeled),
            Err(WireError::BadMac)
        );
        let other = [9u8; 16];
        assert_eq!(
            decode(&keys, Role::Inviter, &other, &bytes),
            Err(WireError::WrongSession)
        );
        // Same session id, different secrets: MAC fails.
        let k2 = Keys::derive(
            &Secrets {
                inviter: [0x11; 32],
                acceptor: [0x23; 32],
            },
            &sid,
        );
        assert_eq!(
            decode(&k2, Role::Inviter, &sid, &bytes),
            Err(WireError::BadMac)
        );
    }

    /// A decoded message of `kind` whose secret is `secret` repeated.
    fn message(kind: &str, secret: u8) -> crate::rendezvous::Message {
        let text = format!(
            "PLEXUS-RENDEZVOUS 1\nkind: {kind}\nfrom: a@x.example/one\nto: b@x.example/two\n\
             session: 000102030405060708090a0b0c0d0e0f\ntime: 0\nmapped: -\nlocal: -\n\
             nat: no\nmapping: unknown\nfiltering: unknown\nhairpin: unknown\n\
             port-preserved: unknown\nsecret: {}\n",
            format!("{secret:02x}").repeat(32)
        );
        crate::rendezvous::Message::decode(text.as_bytes()).unwrap()
    }

    #[test]
    fn secrets_from_rendezvous() {
        use crate::rendezvous::Message;
        let (Message::Invite(invite), Message::Accept(accept)) =
            (message("invite", 0x11), message("accept", 0x22))
        else {
            panic!("the kinds decode as written");
        };
        let s = Secrets::from_rendezvous(&invite, &accept);
        let (keys, sid) = fixture();
        assert_eq!(Keys::derive(&s, &sid).session_key(), keys.session_key());
    }

    #[test]
    fn keys_are_distinct() {
        let (keys, _) = fixture();
        assert_ne!(keys.mac_inviter, keys.mac_acceptor);
        assert_ne!(keys.mac_inviter, keys.session);
        assert_ne!(keys.mac_acceptor, keys.session);
        assert_eq!(format!("{keys:?}"), "Keys(<redacted>)");
    }
}
