//! The one TLS client builder of the program: rustls client configs for PostgreSQL,
//! Redis (`rediss://`), HTTPS ingest, MQTT (source and upstream) and S3 model sync,
//! always with the ring provider passed explicitly, so no process-wide provider is
//! needed and neither aws-lc nor OpenSSL is linked.
//!
//! Roots: the configured CA file, or the system's trusted roots. The server's
//! certificate is always verified, host name included (rustls' WebPKI verifier; an IP
//! address in the URL must be an IP SAN of the certificate). A client certificate and
//! key (mutual TLS) are optional; the key comes from a secret and is never quoted.
//! Must not: disable certificate or host-name verification, or read a key into a
//! message.

use crate::config::{SecretError, SecretRef, TlsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpStream;

/// Why a TLS client configuration could not be built (before any connection).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA file {path}: {reason}", path = path.display())]
    CaFile { path: PathBuf, reason: String },
    #[error("no trusted root certificates found on this system; set ca_file")]
    NoSystemRoots,
    #[error("client certificate {path}: {reason}", path = path.display())]
    ClientCert { path: PathBuf, reason: String },
    #[error("cannot read the TLS client key: {0}")]
    Key(#[source] SecretError),
    /// The key's text is never part of the message, only where it came from.
    #[error("the TLS client key from {0} is not a PEM private key")]
    BadKey(String),
    #[error("mutual TLS needs both cert_file and key_file")]
    HalfIdentity,
    #[error("{0:?} is not a host name or IP address a certificate can be checked against")]
    ServerName(String),
    #[error("TLS setup: {0}")]
    Rustls(String),
}

/// The ring provider, shared.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file, for the checks of `edgegw check` and the trusted roots.
pub fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| match e {
            rustls::pki_types::pem::Error::Io(io) => io.to_string(),
            other => format!("not a PEM file: {other}"),
        })?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}

fn roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad = |reason: String| TlsError::CaFile {
                path: path.to_path_buf(),
                reason,
            };
            for c in read_pem_certificates(path).map_err(bad)? {
                roots.add(c).map_err(|e| bad(e.to_string()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                // A system store may hold certificates rustls cannot parse: skip them.
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(TlsError::NoSystemRoots);
            }
        }
    }
    Ok(roots)
}

/// A client config trusting `ca_file` (or the system roots), without client auth.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    client_config_with(ca_file, None, None)
}

/// A client config trusting `ca_file` (or the system roots), with a client
/// certificate when `cert_file` and `key_file` are both given (mutual TLS).
pub fn client_config_with(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&SecretRef>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots(ca_file)?);
    match (cert_file, key_file) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let certs = read_pem_certificates(cert).map_err(|reason| TlsError::ClientCert {
                path: cert.to_path_buf(),
                reason,
            })?;
            let pem = key.resolve().map_err(TlsError::Key)?;
            // The message must not quote the key.
            let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
                .map_err(|_| TlsError::BadKey(key.describe()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::Rustls(format!("client certificate and key: {e}")))
        }
        _ => Err(TlsError::HalfIdentity),
    }
}

/// A client config from an MQTT broker's `tls` section (CA, optional client cert).
pub fn from_tls_section(tls: &TlsConfig) -> Result<rustls::ClientConfig, TlsError> {
    client_config_with(
        Some(&tls.ca_file),
        tls.cert_file.as_deref(),
        tls.key_file.as_ref(),
    )
}

/// The name the server's certificate must carry: a DNS name, or an IP address (then
/// an IP SAN). Brackets around an IPv6 address are accepted.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))
}

/// TLS over an open TCP connection to `host` (for protocols whose client takes any
/// stream, like Redis). The error says why the handshake failed (an unknown CA, a
/// certificate for another name, an expired one).
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let name = server_name(host).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {host}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_file_and_never_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = client_config(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("missing.pem"), "{e}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let e = client_config(Some(&empty)).unwrap_err().to_string();
        assert!(
            e.contains("CA file") && e.contains("empty.pem") && e.contains("no PEM"),
            "{e}"
        );
        assert!(read_pem_certificates(&empty).is_err());

        // A real certificate (rcgen, dev-dependency) with a key file that is not a key.
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        assert_eq!(read_pem_certificates(&ca).unwrap().len(), 1);
        let key = dir.path().join("key");
        std::fs::write(&key, "s3cr3t-not-a-key\n").unwrap();
        let e = client_config_with(Some(&ca), Some(&ca), Some(&SecretRef::File(key.clone())))
            .unwrap_err();
        assert!(matches!(e, TlsError::BadKey(_)), "{e}");
        let e = e.to_string();
        assert!(!e.contains("s3cr3t") && e.contains("key"), "{e}");
        assert!(matches!(
            client_config_with(Some(&ca), Some(&ca), None),
            Err(TlsError::HalfIdentity)
        ));
        // The matching key works.
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        client_config_with(Some(&ca), Some(&ca), Some(&SecretRef::File(key))).unwrap();
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("db.example.com"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("not a host").is_err());
    }
}
