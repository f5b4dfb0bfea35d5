//! Mutual authentication from the session key alone.
//!
//! Both sides hold the same 32-byte session key, which only the two identities that did
//! the rendezvous know. From it each side derives two Ed25519 keys with HKDF-SHA256
//! (one for the acceptor, one for the inviter) and a self-signed certificate for each.
//! Certificate generation is deterministic (fixed validity, serial from the public key,
//! Ed25519 signatures), so each side knows the exact certificate the peer must present.
//! The verifiers accept that certificate and nothing else, and rustls checks the
//! handshake signature with its key: a peer without the session key cannot finish the
//! handshake, so it never gets to open a stream. There is no CA, no TOFU and no
//! unauthenticated mode.

use std::sync::Arc;

use hkdf::Hkdf;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::Sha256;
use zeroize::Zeroizing;

/// ALPN of this protocol; a QUIC peer speaking anything else is refused.
pub(crate) const ALPN: &[u8] = b"plexus-tunnel/1";
/// The name the client asks for (the verifiers ignore names: the key is the identity).
pub(crate) const SERVER_NAME: &str = "plexus-tunnel";

/// PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410): this prefix, then the 32 bytes.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Which end of the tunnel a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Acceptor,
    Inviter,
}

/// One side's derived certificate and private key.
pub(crate) struct Identity {
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) key: PrivateKeyDer<'static>,
}

/// The certificate and key of `role` for this session key.
pub(crate) fn derive(session_key: &[u8; 32], role: Role) -> Result<Identity, String> {
    let hk = Hkdf::<Sha256>::new(Some(b"plexus-tunnel v1"), session_key);
    let info: &[u8] = match role {
        Role::Acceptor => b"acceptor ed25519",
        Role::Inviter => b"inviter ed25519",
    };
    let mut pkcs8 = Zeroizing::new(Vec::with_capacity(48));
    pkcs8.extend_from_slice(&PKCS8_ED25519_PREFIX);
    pkcs8.resize(48, 0);
    hk.expand(info, &mut pkcs8[16..])
        .map_err(|e| format!("key derivation: {e}"))?;
    let der = PrivatePkcs8KeyDer::from(pkcs8.to_vec());
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
        .map_err(|e| format!("derived key: {e}"))?;
    let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
        .map_err(|e| format!("certificate parameters: {e}"))?;
    let cert = params
        .self_signed(&pair)
        .map_err(|e| format!("derived certificate: {e}"))?;
    Ok(Identity {
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(der),
    })
}

/// The crypto provider (ring) both configurations use.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts exactly one certificate, as the server's or the client's.
#[derive(Debug)]
pub(crate) struct Pinned {
    expected: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl Pinned {
    pub(crate) fn new(expected: CertificateDer<'static>, provider: Arc<CryptoProvider>) -> Self {
        Pinned { expected, provider }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if intermediates.is_empty() && end_entity.as_ref() == self.expected.as_ref() {
            Ok(())
        } else {
            Err(rustls::Error::General(
                "the peer's certificate is not the one derived from this session's key \
                 (not the peer that did the rendezvous)"
                    .into(),
            ))
        }
    }

    fn verify13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
}

fn no_tls12() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not used by QUIC".into())
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)
            .map(|()| ClientCertVerified::assertion())
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// rustls server configuration of the acceptor: presents its derived certificate and
/// requires the inviter's.
pub(crate) fn server_config(session_key: &[u8; 32]) -> Result<rustls::ServerConfig, String> {
    let me = derive(session_key, Role::Acceptor)?;
    let peer = derive(session_key, Role::Inviter)?;
    let provider = provider();
    let mut c = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_client_cert_verifier(Arc::new(Pinned::new(peer.cert, provider)))
        .with_single_cert(vec![me.cert], me.key)
        .map_err(|e| format!("TLS configuration: {e}"))?;
    c.alpn_protocols = vec![ALPN.to_vec()];
    Ok(c)
}

/// rustls client configuration of the inviter: presents its derived certificate and
/// requires the acceptor's.
pub(crate) fn client_config(session_key: &[u8; 32]) -> Result<rustls::ClientConfig, String> {
    let me = derive(session_key, Role::Inviter)?;
    let peer = derive(session_key, Role::Acceptor)?;
    let provider = provider();
    let mut c = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned::new(peer.cert, provider)))
        .with_client_auth_cert(vec![me.cert], me.key)
        .map_err(|e| format!("TLS configuration: {e}"))?;
    c.alpn_protocols = vec![ALPN.to_vec()];
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_deterministic_and_separates_roles_and_keys() {
        let k = [7u8; 32];
        let a1 = derive(&k, Role::Acceptor).unwrap();
        let a2 = derive(&k, Role::Acceptor).unwrap();
        let i1 = derive(&k, Role::Inviter).unwrap();
        let other = derive(&[8u8; 32], Role::Acceptor).unwrap();
        assert_eq!(
            a1.cert, a2.cert,
            "both sides must derive the same certificate"
        );
        assert_ne!(a1.cert, i1.cert);
        assert_ne!(a1.cert, other.cert);
    }

    #[test]
    fn pinned_refuses_any_other_certificate() {
        let k = [1u8; 32];
        let good = derive(&k, Role::Inviter).unwrap().cert;
        let bad = derive(&[2u8; 32], Role::Inviter).unwrap().cert;
        let p = Pinned::new(good.clone(), provider());
        assert!(p.check(&good, &[]).is_ok());
        assert!(p.check(&bad, &[]).is_err());
        assert!(
            p.check(&good, std::slice::from_ref(&bad)).is_err(),
            "no chains"
        );
    }
}
