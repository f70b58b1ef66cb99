//! The `[devices.mqtt]` and `[mqtt_brokers]` config sections: which broker and topic
//! a device's messages come from, and how the gateway connects to a broker (the MQTT
//! upstream uses the same entries). Re-exported at `crate::config`.

use crate::config::{SecretRef, TlsConfig};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTransport {
    /// Name of the broker in `[mqtt_brokers]`.
    pub broker: String,
    /// Topic filter; overrides the profile's `mqtt.topic` (e.g. to pick one sensor).
    pub topic: Option<String>,
}

/// An MQTT broker sensors publish to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttBrokerConfig {
    pub host: String,
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// Fixed client id: with a persistent session, messages published while the
    /// gateway was away are delivered when it returns. Default `edgegw-<gateway id>`.
    pub client_id: Option<String>,
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u64,
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    pub tls: Option<TlsConfig>,
}

fn default_mqtt_port() -> u16 {
    1883
}

fn default_keep_alive_secs() -> u64 {
    30
}
