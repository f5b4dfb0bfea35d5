//! Connections to the mail servers: TCP with keepalive, TLS material (CA, client
//! certificate and its private key), and error text that says what failed.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use log::debug;
use native_tls::{Certificate, Identity, TlsConnector};

use super::{EmailSettings, MediatorError};

/// The error chain of `e` on one line (TLS libraries hide the useful part in sources).
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

pub(super) fn is_cert_failure(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("certificate verify failed")
        || m.contains("unable to get local issuer")
        || m.contains("self-signed certificate")
        || m.contains("self signed certificate")
        || m.contains("hostname mismatch")
}

pub(super) fn tls_error(server: &str, host_port: &str, msg: String) -> MediatorError {
    if is_cert_failure(&msg) {
        MediatorError::Config(format!(
            "the TLS certificate of the {server} server {host_port} could not be verified ({msg}); \
             if it is issued by a private CA, pass that CA's certificate as ca_file, and check \
             that the host name matches the certificate"
        ))
    } else {
        MediatorError::Unreachable(format!(
            "TLS with the {server} server {host_port} failed: {msg}"
        ))
    }
}

pub(super) fn read_file(what: &str, p: &PathBuf) -> Result<Vec<u8>, MediatorError> {
    std::fs::read(p)
        .map_err(|e| MediatorError::Config(format!("cannot read {what} {}: {e}", p.display())))
}

/// Certificates and identity loaded once from the settings.
pub(super) struct TlsMaterial {
    pub(super) ca_pem: Option<Vec<u8>>,
    pub(super) cert_pem: Option<Vec<u8>>,
    pub(super) key_pem: Option<crate::secret::Zeroizing<Vec<u8>>>,
}

impl TlsMaterial {
    pub(super) fn load(s: &EmailSettings) -> Result<TlsMaterial, MediatorError> {
        let ca_pem = s
            .ca_file
            .as_ref()
            .map(|p| read_file("ca_file", p))
            .transpose()?;
        let cert_pem = s
            .client_cert
            .as_ref()
            .map(|p| read_file("client_cert", p))
            .transpose()?;
        // Checked on the opened file (regular, ours or root's, mode 0600 or stricter).
        let key_pem = match &s.client_key {
            Some(p) => Some(
                crate::secret::read_private_file(p, 1 << 20)
                    .map_err(|e| MediatorError::Config(format!("client_key: {e}")))?,
            ),
            None => None,
        };
        let m = TlsMaterial {
            ca_pem,
            cert_pem,
            key_pem,
        };
        // Parse now so a bad file is reported at connect, not at the first message.
        m.native()?;
        Ok(m)
    }

    pub(super) fn native(&self) -> Result<TlsConnector, MediatorError> {
        let mut b = TlsConnector::builder();
        b.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
        if let Some(ca) = &self.ca_pem {
            let c = Certificate::from_pem(ca).map_err(|e| {
                MediatorError::Config(format!("ca_file is not a PEM certificate: {e}"))
            })?;
            b.add_root_certificate(c);
        }
        if let (Some(c), Some(k)) = (&self.cert_pem, &self.key_pem) {
            let id = Identity::from_pkcs8(c, k).map_err(|e| {
                MediatorError::Config(format!(
                    "client_cert/client_key are not a PEM certificate and PKCS#8 PEM key: {e}"
                ))
            })?;
            b.identity(id);
        }
        b.build()
            .map_err(|e| MediatorError::Config(format!("TLS setup failed: {e}")))
    }
}

pub(super) fn tcp_connect(
    host: &str,
    port: u16,
    timeout: Duration,
    what: &str,
) -> Result<TcpStream, MediatorError> {
    let hp = format!("{host}:{port}");
    let addrs = (host, port).to_socket_addrs().map_err(|e| {
        MediatorError::Unreachable(format!("cannot resolve the {what} server {hp}: {e}"))
    })?;
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(t) => {
                t.set_read_timeout(Some(timeout))?;
                t.set_write_timeout(Some(timeout))?;
                keepalive(&t);
                return Ok(t);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(MediatorError::Unreachable(match last {
        Some(e) => format!("cannot connect to the {what} server {hp}: {e}"),
        None => format!("the {what} server name {hp} resolves to no address"),
    }))
}

/// TCP keepalive on a long-lived IMAP connection: home NATs and firewalls drop idle TCP
/// flows after a few minutes, and a dropped flow is otherwise only noticed when the IDLE
/// period ends (25 min). Probes after 60 s of silence, every 15 s, 4 lost = dead: the
/// blocked read then fails and the mediator reconnects. Best effort: a system that
/// refuses the options still works, only slower to notice.
pub(super) fn keepalive(t: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(15))
        .with_retries(4);
    if let Err(e) = socket2::SockRef::from(t).set_tcp_keepalive(&ka) {
        debug!("email: TCP keepalive not set: {e}");
    }
}
