//! `[upstreams.mqtt]`: a cloud MQTT broker.

use super::{
    default_backoff_initial_ms, default_backoff_max_ms, default_batch_max_bytes,
    default_breaker_failures, default_breaker_open_secs, default_idle_poll_ms,
    default_recovery_jitter_ms, default_timeout_ms, yes, Delivery,
};
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
    /// Most records per batch (one transaction, one pipeline, one burst).
    #[serde(default = "mqtt_batch_max_records")]
    pub batch_max_records: usize,
    /// Most bytes per batch (estimated wire size); a single bigger record still goes
    /// alone.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Records per second at most, so a backlog after an outage drains at a pace the
    /// cloud can take while many gateways reconnect at once. 0 = no limit. Live
    /// traffic is normally far below it.
    #[serde(default = "mqtt_drain_rate_per_s")]
    pub drain_rate_per_s: f64,
    /// When the circuit breaker opens, its wait is extended by a random 0..this, so
    /// gateways that lost the cloud together do not all return at the same moment.
    #[serde(default = "default_recovery_jitter_ms")]
    pub recovery_jitter_ms: u64,
    /// First retry delay after a failed batch; doubles per failure, with jitter (a
    /// random 50..100 % of the delay).
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Longest retry delay.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Consecutive failed batches that open the circuit breaker (no attempts while
    /// open; shown in metrics).
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker waits before one trial batch (half-open).
    #[serde(default = "default_breaker_open_secs")]
    pub breaker_open_secs: u64,
    /// Time allowed for one batch (connect, write, confirmation); past it the batch
    /// counts as failed and is retried.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// With nothing to send, look at the outbox at least this often (the outbox
    /// writer also wakes the forwarder on every commit).
    #[serde(default = "default_idle_poll_ms")]
    pub idle_poll_ms: u64,
}

impl MqttUpstream {
    /// The delivery knobs as the forwarder uses them.
    pub fn delivery(&self) -> Delivery {
        Delivery {
            batch_max_records: self.batch_max_records,
            batch_max_bytes: self.batch_max_bytes,
            drain_rate_per_s: self.drain_rate_per_s,
            recovery_jitter_ms: self.recovery_jitter_ms,
            backoff_initial_ms: self.backoff_initial_ms,
            backoff_max_ms: self.backoff_max_ms,
            breaker_failures: self.breaker_failures,
            breaker_open_secs: self.breaker_open_secs,
            timeout_ms: self.timeout_ms,
            idle_poll_ms: self.idle_poll_ms,
        }
    }
}

fn default_mqtt_upstream_topic() -> String {
    "smartmaint/{gateway}/{kind}/{sensor_id}".into()
}
