//! `[upstreams.mqtt]`: a cloud MQTT broker.

use crate::config::upstreams::{yes, Delivery, DeliveryConfig};
use serde::Deserialize;

fn mqtt_batch_max_records() -> usize {
    100
}
fn mqtt_drain_rate_per_s() -> f64 {
    1_000.0
}

/// A cloud MQTT broker: JSON per record, QoS 1, acknowledged after the PUBACK.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttUpstream {
    /// A disabled upstream gets no cursor and holds nothing back.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Name of a broker in `[mqtt_brokers]` (the cloud broker; its TLS and
    /// credentials apply).
    pub broker: String,
    /// Topic template; `{gateway}`, `{kind}` and `{sensor_id}` are filled in.
    #[serde(default = "default_mqtt_upstream_topic")]
    pub topic: String,
    /// Topic template for readings (default: `topic`).
    pub topic_reading: Option<String>,
    /// Topic template for window feature vectors (default: `topic`).
    pub topic_window: Option<String>,
    /// Topic template for alerts (default: `topic`).
    pub topic_alert: Option<String>,
    /// Topic template for summaries (default: `topic`).
    pub topic_summary: Option<String>,
    /// Client id on the cloud broker; default `edgegw-<gateway id>-up` (distinct from
    /// the source client id, in case both use the same broker).
    pub client_id: Option<String>,
    /// `[upstreams.mqtt.delivery]`: batch size, drain rate, backoff, circuit
    /// breaker and timeout, the same table for every upstream.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl MqttUpstream {
    /// The delivery knobs as the forwarder uses them: `[upstreams.mqtt.delivery]`
    /// over this upstream's defaults.
    pub fn delivery(&self) -> Delivery {
        self.delivery
            .resolve(mqtt_batch_max_records(), mqtt_drain_rate_per_s())
    }
}

fn default_mqtt_upstream_topic() -> String {
    "smartmaint/{gateway}/{kind}/{sensor_id}".into()
}
