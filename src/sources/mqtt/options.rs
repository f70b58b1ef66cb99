//! Connection options for one broker: client id, persistent session, manual acks,
//! credentials from secrets and TLS (the program's one TLS builder,
//! `upstream::tls`: rustls with the ring provider passed explicitly, so that no
//! process-wide default provider is needed; the broker's certificate and host name
//! are always verified).

use super::MqttError;
use crate::config::{MqttBrokerConfig, TlsConfig};
use crate::upstream::tls::TlsError;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
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

/// The program's one TLS builder (`upstream::tls`), with the errors of this module.
fn tls_config(broker_name: &str, tls: &TlsConfig) -> Result<rustls::ClientConfig, MqttError> {
    crate::upstream::tls::from_tls_section(tls).map_err(|e| match e {
        TlsError::Key(source) => MqttError::Secret {
            broker: broker_name.to_string(),
            what: "TLS client key",
            source,
        },
        other => MqttError::Tls {
            broker: broker_name.to_string(),
            what: other.to_string(),
        },
    })
}
