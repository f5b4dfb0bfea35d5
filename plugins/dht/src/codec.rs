//! Pure parts of the `dht` plugin: where items live (keys and salts derived from the
//! channel secret), the chunk format, and sealing messages for the DHT.
//!
//! A message is encrypted with ChaCha20-Poly1305 under a key derived from the channel
//! secret, its direction and the UTC day, then split into chunks. One chunk is one BEP 44
//! value (at most 1000 bytes):
//!
//! ```text
//! "PXD" 0x01 | message id (12, also the AEAD nonce) | index u8 | count u8 | total u32 BE | data
//! ```
//!
//! `total` is the ciphertext's length; `count` is at most [`MAX_CHUNKS`].

use hkdf::Hkdf;
use sha2::Sha256;
use std::fmt;

/// Magic and version at the start of every chunk.
pub const MAGIC: [u8; 4] = *b"PXD\x01";
/// Largest BEP 44 value.
pub const MAX_VALUE: usize = 1000;
/// Bytes before a chunk's data.
pub const HEADER: usize = 4 + 12 + 1 + 1 + 4;
/// Data bytes per chunk.
pub const CHUNK_DATA: usize = MAX_VALUE - HEADER;
/// Most chunks in one message: bounds a message at 62,592 bytes of ciphertext.
pub const MAX_CHUNKS: usize = 64;
/// Largest ciphertext of one message.
pub const MAX_TOTAL: usize = MAX_CHUNKS * CHUNK_DATA;
/// Poly1305 tag length.
pub const TAG: usize = 16;
/// Seconds in a UTC day (the rotation period).
pub const DAY: u64 = 86_400;

/// One decoded chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Message id (and AEAD nonce).
    pub msg_id: [u8; 12],
    /// Position in the message.
    pub index: u8,
    /// Number of chunks of the message.
    pub count: u8,
    /// Ciphertext length of the whole message.
    pub total: u32,
    /// This chunk's part of the ciphertext.
    pub data: Vec<u8>,
}

/// Why a value is not a chunk of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// Shorter than the header or longer than a BEP 44 value.
    Length(usize),
    /// Another magic or version.
    Magic,
    /// Count 0, above the limit, index out of range, total impossible for the count,
    /// or the data length not what index, count and total imply.
    Bounds(String),
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::Length(n) => write!(f, "value of {n} bytes is no chunk"),
            ChunkError::Magic => write!(f, "value does not start with the plexus chunk magic"),
            ChunkError::Bounds(m) => write!(f, "chunk out of bounds: {m}"),
        }
    }
}

impl Chunk {
    /// Decodes one BEP 44 value, strictly.
    pub fn decode(v: &[u8]) -> Result<Chunk, ChunkError> {
        if v.len() < HEADER || v.len() > MAX_VALUE {
            return Err(ChunkError::Length(v.len()));
        }
        if v[..4] != MAGIC {
            return Err(ChunkError::Magic);
        }
        let mut msg_id = [0u8; 12];
        msg_id.copy_from_slice(&v[4..16]);
        let (index, count) = (v[16], v[17]);
        let total = u32::from_be_bytes([v[18], v[19], v[20], v[21]]);
        let data = &v[HEADER..];
        let bad = |m: String| Err(ChunkError::Bounds(m));
        if count == 0 || count as usize > MAX_CHUNKS || index >= count {
            return bad(format!("index {index} of {count} (at most {MAX_CHUNKS})"));
        }
        let total_us = total as usize;
        let needed = total_us.div_ceil(CHUNK_DATA);
        if !(TAG..=MAX_TOTAL).contains(&total_us) || needed != count as usize {
            return bad(format!("{total} bytes cannot be {count} chunks"));
        }
        let start = index as usize * CHUNK_DATA;
        let expect = (total_us - start).min(CHUNK_DATA);
        if data.len() != expect {
            return bad(format!(
                "chunk {index} holds {} bytes, expected {expect}",
                data.len()
            ));
        }
        Ok(Chunk {
            msg_id,
            index,
            count,
            total,
            data: data.to_vec(),
        })
    }

    /// The BEP 44 value.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER + self.data.len());
        v.extend_from_slice(&MAGIC);
        v.extend_from_slice(&self.msg_id);
        v.push(self.index);
        v.push(self.count);
        v.extend_from_slice(&self.total.to_be_bytes());
        v.extend_from_slice(&self.data);
        v
    }
}

/// Splits a ciphertext into chunks (`None` when it is too long or too short).
pub fn split(msg_id: [u8; 12], ciphertext: &[u8]) -> Option<Vec<Chunk>> {
    if ciphertext.len() < TAG || ciphertext.len() > MAX_TOTAL {
        return None;
    }
    let count = ciphertext.len().div_ceil(CHUNK_DATA);
    Some(
        ciphertext
            .chunks(CHUNK_DATA)
            .enumerate()
            .map(|(i, d)| Chunk {
                msg_id,
                index: i as u8,
                count: count as u8,
                total: ciphertext.len() as u32,
                data: d.to_vec(),
            })
            .collect(),
    )
}

/// Collects the chunks of one message; bounded by the first chunk's count and total.
#[derive(Debug)]
pub struct Assembly {
    first: Chunk,
    parts: Vec<Option<Vec<u8>>>,
}

impl Assembly {
    /// Starts from any chunk (usually index 0, which is written last).
    pub fn new(first: Chunk) -> Assembly {
        let mut parts = vec![None; first.count as usize];
        parts[first.index as usize] = Some(first.data.clone());
        Assembly { first, parts }
    }

    /// Adds a chunk; false when it belongs to another message (another id, count or
    /// total), which the caller treats as "the sender moved on".
    pub fn add(&mut self, c: Chunk) -> bool {
        if c.msg_id != self.first.msg_id
            || c.count != self.first.count
            || c.total != self.first.total
        {
            return false;
        }
        self.parts[c.index as usize] = Some(c.data);
        true
    }

    /// Indices still missing.
    pub fn missing(&self) -> Vec<u8> {
        (0..self.parts.len())
            .filter(|&i| self.parts[i].is_none())
            .map(|i| i as u8)
            .collect()
    }

    /// The message id.
    pub fn msg_id(&self) -> [u8; 12] {
        self.first.msg_id
    }

    /// The ciphertext, once every chunk is there.
    pub fn finish(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(self.first.total as usize);
        for p in &self.parts {
            out.extend_from_slice(p.as_ref()?);
        }
        Some(out)
    }
}

/// Where one chunk lives: the seed of its BEP 44 signing key and its salt.
#[derive(Clone, PartialEq, Eq)]
pub struct Slot {
    /// ed25519 secret key seed.
    pub seed: [u8; 32],
    /// BEP 44 salt.
    pub salt: [u8; 16],
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Slot(<redacted>)")
    }
}

/// The key schedule of one channel: everything comes from the shared secret, the
/// direction (sender id, recipient id) and the UTC day number, so observers without
/// the secret can neither find nor link the items, and nothing carries over days.
#[derive(Clone)]
pub struct Schedule {
    secret: Vec<u8>,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Schedule(<redacted>)")
    }
}

impl Drop for Schedule {
    fn drop(&mut self) {
        self.secret.iter_mut().for_each(|b| *b = 0);
    }
}

fn info(label: &str, from: &str, to: &str, day: u64, extra: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for part in [label.as_bytes(), from.as_bytes(), to.as_bytes()] {
        v.extend_from_slice(&(part.len() as u32).to_be_bytes());
        v.extend_from_slice(part);
    }
    v.extend_from_slice(&day.to_be_bytes());
    v.extend_from_slice(extra);
    v
}

impl Schedule {
    /// A schedule over `secret` (at least 16 bytes; the caller checks).
    pub fn new(secret: &[u8]) -> Schedule {
        Schedule {
            secret: secret.to_vec(),
        }
    }

    fn expand(&self, info: &[u8], out: &mut [u8]) {
        Hkdf::<Sha256>::new(Some(b"plexus dht v1"), &self.secret)
            .expand(info, out)
            .expect("HKDF-SHA256 gives up to 8160 bytes");
    }

    /// Where chunk `index` of messages from `from` to `to` on `day` is stored.
    pub fn slot(&self, from: &str, to: &str, day: u64, index: u8) -> Slot {
        let mut okm = [0u8; 48];
        self.expand(&info("slot", from, to, day, &[index]), &mut okm);
        let mut s = Slot {
            seed: [0; 32],
            salt: [0; 16],
        };
        s.seed.copy_from_slice(&okm[..32]);
        s.salt.copy_from_slice(&okm[32..]);
        s
    }

    /// The AEAD key of messages from `from` to `to` on `day`.
    pub fn message_key(&self, from: &str, to: &str, day: u64) -> [u8; 32] {
        let mut k = [0u8; 32];
        self.expand(&info("message", from, to, day, &[]), &mut k);
        k
    }
}

/// Associated data binding a ciphertext to its direction and day.
pub fn aad(from: &str, to: &str, day: u64) -> Vec<u8> {
    info("aad", from, to, day, &[])
}

/// Encrypts `plain` with ChaCha20-Poly1305: ciphertext followed by the tag.
pub fn seal(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut tag = [0u8; TAG];
    let mut ct = openssl::symm::encrypt_aead(
        openssl::symm::Cipher::chacha20_poly1305(),
        key,
        Some(nonce),
        aad,
        plain,
        &mut tag,
    )
    .expect("ChaCha20-Poly1305 with a 32-byte key and 12-byte nonce");
    ct.extend_from_slice(&tag);
    ct
}

/// Decrypts what [`seal`] made; `None` when it was not sealed under this key, nonce
/// and associated data (forged, corrupted, or another channel's).
pub fn open(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
    if ct.len() < TAG {
        return None;
    }
    let (body, tag) = ct.split_at(ct.len() - TAG);
    openssl::symm::decrypt_aead(
        openssl::symm::Cipher::chacha20_poly1305(),
        key,
        Some(nonce),
        aad,
        body,
        tag,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_decode_assemble_round_trip() {
        for len in [
            TAG,
            CHUNK_DATA,
            CHUNK_DATA + 1,
            3 * CHUNK_DATA + 17,
            MAX_TOTAL,
        ] {
            let ct: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let chunks = split([7; 12], &ct).unwrap();
            assert_eq!(chunks.len(), len.div_ceil(CHUNK_DATA));
            let mut decoded: Vec<Chunk> = chunks
                .iter()
                .map(|c| {
                    let v = c.encode();
                    assert!(v.len() <= MAX_VALUE);
                    Chunk::decode(&v).unwrap()
                })
                .collect();
            decoded.reverse();
            let mut a = Assembly::new(decoded.remove(0));
            for c in decoded {
                assert!(a.add(c));
            }
            assert!(a.missing().is_empty());
            assert_eq!(a.finish().unwrap(), ct);
        }
        assert!(split([0; 12], &vec![0; MAX_TOTAL + 1]).is_none());
    }

    #[test]
    fn decode_refuses_inconsistent_headers() {
        let c = split([1; 12], &[0u8; 2000]).unwrap();
        let good = c[1].encode();
        assert!(Chunk::decode(&good).is_ok());
        let mut v = good.clone();
        v[0] = b'X';
        assert_eq!(Chunk::decode(&v), Err(ChunkError::Magic));
        let mut v = good.clone();
        v[16] = 9; // index beyond count
        assert!(matches!(Chunk::decode(&v), Err(ChunkError::Bounds(_))));
        let mut v = good.clone();
        v[20] ^= 0x10; // total no longer matches the count
        assert!(matches!(Chunk::decode(&v), Err(ChunkError::Bounds(_))));
        assert!(matches!(
            Chunk::decode(&good[..10]),
            Err(ChunkError::Length(10))
        ));
        // A chunk of another message does not join an assembly.
        let other = split([2; 12], &[0u8; 2000]).unwrap();
        let mut a = Assembly::new(c[0].clone());
        assert!(!a.add(other[1].clone()));
        assert_eq!(a.missing(), vec![1, 2]);
    }

    #[test]
    fn slots_differ_per_direction_day_index_and_secret() {
        let s = Schedule::new(&[1; 32]);
        let base = s.slot("a", "b", 100, 0);
        assert_ne!(base, s.slot("b", "a", 100, 0));
        assert_ne!(base, s.slot("a", "b", 101, 0));
        assert_ne!(base, s.slot("a", "b", 100, 1));
        assert_ne!(base, Schedule::new(&[2; 32]).slot("a", "b", 100, 0));
        // Length-prefixed fields: moving a character between the ids is another slot.
        assert_ne!(s.slot("ab", "c", 1, 0), s.slot("a", "bc", 1, 0));
        assert_eq!(format!("{base:?}"), "Slot(<redacted>)");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Golden vectors (computed independently with Python's `cryptography` HKDF) pin
    /// the key schedule: a change moves every item and breaks interoperation.
    #[test]
    fn key_schedule_golden_vectors() {
        let s = Schedule::new(&[7; 32]);
        assert_eq!(
            hex(&s.message_key("a", "b", 1)),
            "b9f8d576a6882b9fa40297d692b0faa862e035948912fb87b1eab65920f75863"
        );
        let slot = s.slot("a", "b", 1, 2);
        assert_eq!(
            hex(&slot.seed),
            "e8b466265f1e914d8a0c4f0ebc0b23567b54fc0d3c32d663ba38085c286fad6e"
        );
        assert_eq!(hex(&slot.salt), "0122efe9544ff49ea672205723578df2");
    }

    #[test]
    fn sealing_binds_key_nonce_and_direction() {
        let s = Schedule::new(&[3; 32]);
        let k = s.message_key("a", "b", 5);
        let ct = seal(&k, &[9; 12], &aad("a", "b", 5), b"sealed bytes");
        assert_eq!(
            open(&k, &[9; 12], &aad("a", "b", 5), &ct).unwrap(),
            b"sealed bytes"
        );
        assert!(open(&k, &[9; 12], &aad("b", "a", 5), &ct).is_none());
        assert!(open(&k, &[8; 12], &aad("a", "b", 5), &ct).is_none());
        let other = Schedule::new(&[4; 32]).message_key("a", "b", 5);
        assert!(open(&other, &[9; 12], &aad("a", "b", 5), &ct).is_none());
    }
}
