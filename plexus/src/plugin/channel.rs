//! [`Channel`]: what the host tells a mediator plugin about the one peer it serves,
//! including a secret only the two peers can compute.
//!
//! The secret is static ECDH between this host's private key and the public key of the
//! peer's pinned certificate, when both are EC keys on the same curve (what `plexus
//! cert new` makes by default): `HKDF-SHA256(ikm = ECDH, salt = "plexus channel secret
//! v1", info = the two ids sorted, NUL-separated)`. Both sides get the same 32 bytes;
//! someone with only the certificates and ids cannot. It never changes while the keys
//! stay, so a plugin derives whatever rotates from it; each plugin gets it bound to its
//! name ([`Channel::for_plugin`]). With an RSA key on either side
//! there is no secret (RSA has no key agreement); a plugin that needs one then asks its
//! own settings for a shared secret file.

use crate::identity::{load_cert, load_private_key};
use crate::secret::Zeroizing;
use openssl::derive::Deriver;
use openssl::pkey::Id;
use std::fmt;
use std::path::Path;

/// Label of the HKDF that turns the ECDH output into the channel secret.
const SALT: &[u8] = b"plexus channel secret v1";

/// The host's and the peer's id and their shared channel secret, for a plugin.
#[derive(Clone, Default)]
pub struct Channel {
    /// This host's id.
    pub host_id: String,
    /// The peer's id.
    pub peer_id: String,
    /// 32 bytes only the two peers can compute, when their keys allow it.
    pub secret: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("host_id", &self.host_id)
            .field("peer_id", &self.peer_id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Channel {
    /// The channel as plugin `name` gets it: the secret bound to the plugin's name
    /// (HKDF-SHA256), so a plugin that leaks its secret exposes only its own channel,
    /// never another plugin's between the same peers.
    pub fn for_plugin(&self, name: &str) -> Channel {
        let secret = self.secret.as_ref().map(|s| {
            let mut out = Zeroizing::new(vec![0u8; 32]);
            hkdf::Hkdf::<sha2::Sha256>::new(Some(b"plexus plugin channel v1"), s)
                .expand(name.as_bytes(), &mut out)
                .expect("32 bytes is a valid HKDF-SHA256 length");
            out
        });
        Channel {
            host_id: self.host_id.clone(),
            peer_id: self.peer_id.clone(),
            secret,
        }
    }

    /// The channel between `host_id` (private key in `host_key`) and `peer_id`
    /// (certificate in `peer_cert`). No secret, with the reason, when the keys are not
    /// both EC on one curve or cannot be read; the ids are given either way.
    pub fn derive(
        host_id: &str,
        host_key: &Path,
        peer_id: &str,
        peer_cert: &Path,
    ) -> (Channel, Option<String>) {
        let mut channel = Channel {
            host_id: host_id.to_string(),
            peer_id: peer_id.to_string(),
            secret: None,
        };
        match ecdh_secret(host_id, host_key, peer_id, peer_cert) {
            Ok(s) => channel.secret = Some(s),
            Err(why) => return (channel, Some(why)),
        }
        (channel, None)
    }
}

fn ecdh_secret(
    host_id: &str,
    host_key: &Path,
    peer_id: &str,
    peer_cert: &Path,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let key = load_private_key(host_key).map_err(|e| e.to_string())?;
    let cert = load_cert(peer_cert).map_err(|e| e.to_string())?;
    let peer = cert.public_key().map_err(|e| e.to_string())?;
    if key.id() != Id::EC || peer.id() != Id::EC {
        return Err(
            "no channel secret: key agreement needs EC keys on both sides \
                    (`plexus cert new` makes them; RSA has none)"
                .into(),
        );
    }
    let curve = |k: &openssl::pkey::PKeyRef<_>| -> Option<openssl::nid::Nid> {
        k.ec_key().ok()?.group().curve_name()
    };
    let (ours, theirs) = (
        curve(&key),
        peer.ec_key().ok().and_then(|k| k.group().curve_name()),
    );
    if ours.is_none() || ours != theirs {
        return Err("no channel secret: the two EC keys are on different curves".into());
    }
    let mut deriver = Deriver::new(&key).map_err(|e| e.to_string())?;
    deriver.set_peer(&peer).map_err(|e| e.to_string())?;
    let shared = Zeroizing::new(deriver.derive_to_vec().map_err(|e| e.to_string())?);
    let (a, b) = if host_id <= peer_id {
        (host_id, peer_id)
    } else {
        (peer_id, host_id)
    };
    let info = [a.as_bytes(), b"\0", b.as_bytes()].concat();
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(SALT), &shared);
    let mut out = Zeroizing::new(vec![0u8; 32]);
    hk.expand(&info, &mut out)
        .map_err(|_| "HKDF output length".to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::DemoCerts;

    #[test]
    fn rsa_on_either_side_gives_no_secret_and_says_why() {
        let certs = DemoCerts::new("channel-rsa");
        let demo = |f: &str| certs.path(f);
        // alice is RSA, bob EC.
        let (c, why) = Channel::derive("a", &demo("bob.key"), "b", &demo("alice.pem"));
        assert!(c.secret.is_none());
        assert!(why.unwrap().contains("EC keys"));
        assert_eq!((c.host_id.as_str(), c.peer_id.as_str()), ("a", "b"));
    }

    #[test]
    fn both_sides_of_an_ec_pair_compute_the_same_secret_and_others_do_not() {
        let certs = DemoCerts::new("channel-ec");
        let demo = |f: &str| certs.path(f);
        // bob's key with the CA's certificate (both P-256) stands for an EC pair.
        let (x, _) = Channel::derive("bob", &demo("bob.key"), "ca", &demo("ca.pem"));
        let (y, _) = Channel::derive("ca", &demo("ca.key"), "bob", &demo("bob.pem"));
        let (sx, sy) = (x.secret.clone().unwrap(), y.secret.clone().unwrap());
        assert_eq!(sx.len(), 32);
        assert_eq!(*sx, *sy);
        // Other ids: another secret (the ids are bound in).
        let (z, _) = Channel::derive("bob", &demo("bob.key"), "eve", &demo("ca.pem"));
        assert_ne!(*z.secret.unwrap(), *sx);
        assert!(!format!("{x:?}").contains(&format!("{:?}", &sx[..4])));
        // Each plugin its own secret, the same on both sides.
        let (dx, dy) = (x.for_plugin("dht"), y.for_plugin("dht"));
        assert_eq!(dx.secret, dy.secret);
        assert_ne!(dx.secret, x.for_plugin("file").secret);
        assert_ne!(dx.secret.as_deref(), Some(&*sx));
        assert_eq!(dx.host_id, "bob");
    }
}
