//! Connection options for one broker: client id, persistent session, manual acks,
//! credentials from secrets and TLS (rustls with the ring provider, installed
//! explicitly so that no process-wide default provider is needed).

use super::MqttError;
use crate::config::{MqttBrokerConfig, TlsConfig};
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;

/// Largest MQTT packet the connection accepts. A bigger one breaks the connection
/// (rumqttc cannot skip it) and the broker redelivers it forever, so this is far
/// above `mqtt.max_payload_bytes` (whose violations are counted and acknowledged);
/// set the broker's `message_size_limit` below it.
pub const MAX_PACKET_BYTES: usize = crate::profiles::MAX_MQTT_PAYLOAD_BYTES + 64 * 1024;

/// The client id used on a broker: the configured one or `edgegw-<gateway id>`.
pub fn client_id(broker: &MqttBrokerConfig, gateway_id: &str) -> String {
    broker
        .client_id
        .clone()
        .unwrap_or_else(|| format!("edgegw-{gateway_id}"))
}

/// Builds the options; secrets are resolved now and never logged.
pub fn build(
    broker_name: &str,
    broker: &MqttBrokerConfig,
    gateway_id: &str,
    request_capacity: usize,
) -> Result<MqttOptions, MqttError> {
    let mut o = MqttOptions::new(client_id(broker, gateway_id), &broker.host, broker.port);
    o.set_keep_alive(Duration::from_secs(broker.keep_alive_secs.max(5)));
    // Persistent session: the broker keeps our subscriptions and queues QoS 1
    // messages while we are away.
    o.set_clean_session(false);
    // A message is acknowledged only once it is in the outbox.
    o.set_manual_acks(true);
    o.set_max_packet_size(MAX_PACKET_BYTES, 64 * 1024);
    o.set_request_channel_capacity(request_capacity);
    if let Some(user) = &broker.username {
        let password = match &broker.password {
            Some(secret) => secret.resolve().map_err(|e| MqttError::Secret {
                broker: broker_name.to_string(),
                what: "password",
                source: e,
            })?,
            None => String::new(),
        };
        o.set_credentials(user, password);
    }
    if let Some(tls) = &broker.tls {
        let cfg = tls_config(broker_name, tls)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(cfg),
        )));
    }
    Ok(o)
}

fn tls_config(broker_name: &str, tls: &TlsConfig) -> Result<rustls::ClientConfig, MqttError> {
    let bad = |what: String| MqttError::Tls {
        broker: broker_name.to_string(),
        what,
    };
    let mut roots = rustls::RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(&tls.ca_file).map_err(|e| {
        bad(format!(
            "cannot read CA file {}: {e}",
            tls.ca_file.display()
        ))
    })?;
    for ca in cas {
        let ca = ca.map_err(|e| bad(format!("CA file {}: {e}", tls.ca_file.display())))?;
        roots
            .add(ca)
            .map_err(|e| bad(format!("CA file {}: {e}", tls.ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(bad(format!(
            "CA file {} holds no PEM certificate",
            tls.ca_file.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots);
    match (&tls.cert_file, &tls.key_file) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(format!("client certificate {}: {e}", cert.display())))?;
            if certs.is_empty() {
                return Err(bad(format!(
                    "client certificate {} holds no PEM certificate",
                    cert.display()
                )));
            }
            let pem = key.resolve().map_err(|e| MqttError::Secret {
                broker: broker_name.to_string(),
                what: "TLS client key",
                source: e,
            })?;
            // The error must not quote the key.
            let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
                bad(format!(
                    "the client key from {} is not a PEM private key",
                    key.describe()
                ))
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| bad(format!("client certificate and key: {e}")))
        }
        _ => Err(bad(
            "mutual TLS needs both cert_file and key_file".to_string()
        )),
    }
}
