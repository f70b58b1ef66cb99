//! rustls client configs for the upstreams (PostgreSQL, HTTPS, MQTT over TLS), always
//! with the ring provider passed explicitly, so no process-wide provider is needed
//! and neither aws-lc nor OpenSSL is linked.
//!
//! Roots: the configured CA file, or the system's trusted roots. Must not: disable
//! certificate verification.

use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// The ring provider, shared.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("CA file {}: {e}", path.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "CA file {} holds no PEM certificate",
                    path.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                // A system store may hold certificates rustls cannot parse: skip them.
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(
                    "no trusted root certificates found on this system; set ca_file".into(),
                );
            }
        }
    }
    Ok(roots)
}

/// A client config trusting `ca_file` (or the system roots), without client auth.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth())
}

/// A client config from an MQTT broker's `tls` section (CA, optional client cert).
pub fn from_tls_section(tls: &TlsConfig) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(Some(&tls.ca_file))?);
    match (&tls.cert_file, &tls.key_file) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))?;
            let pem = key.resolve().map_err(|e| format!("TLS client key: {e}"))?;
            // The message must not quote the key.
            let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
                format!(
                    "the client key from {} is not a PEM private key",
                    key.describe()
                )
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate and key: {e}"))
        }
        _ => Err("tls.cert_file and tls.key_file go together".into()),
    }
}
