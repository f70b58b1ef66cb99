//! The MQTT source: one connection per broker for all MQTT devices on it (rumqttc).
//!
//! Owns the subscriber side of a broker: persistent session (clean session off, fixed
//! client id), QoS 1 subscriptions to every device's topic filter, decoding payloads
//! into readings ([`decode`]), and acknowledging each message only after the outbox
//! has committed what was made from it (manual acks, in order). It must not touch
//! SQLite or know upstream formats; it never acknowledges a message that is not
//! stored, except malformed ones (see below).
//!
//! Delivery, precisely:
//! - Each QoS 1 message that yields readings goes down the pipeline as one
//!   [`SourceBatch`] with an [`Ack`](crate::sources::Ack). Its PUBACK is sent when
//!   the Ack fires, and PUBACKs leave in the order the messages came in (MQTT 3.1.1
//!   §4.6): a message whose Ack fired waits for older ones.
//! - A dropped Ack (not stored) is never acknowledged: the source drops the
//!   connection (after a backoff) so that the broker redelivers every unacknowledged
//!   message of the session. Stored messages behind it are redelivered too
//!   (at-least-once: duplicates, never loss).
//! - A message that yields no readings (malformed, unknown topic) is counted per
//!   device and per topic, logged once per kind and topic, and acknowledged in turn:
//!   otherwise the broker would redeliver it forever. So is a reading whose payload
//!   timestamp is implausible (`timestamp_out_of_bounds`, see [`decode`]).
//! - With `device_level`, each new level value becomes a device until the route has
//!   `mqtt.max_devices` of them; messages for further values are counted as
//!   `too_many_devices` under the route's topic filter (not their own topic, so that
//!   a flood of invented ids grows no counter) and acknowledged unused.
//! - Retained messages are used only when the profile gives a timestamp field;
//!   without one, a retained message is an old value that would get the arrival time,
//!   so it is counted as `retained` and acknowledged unused.
//! - On a connection loss, unacknowledged messages are forgotten (rumqttc drops
//!   queued PUBACKs too) and arrive again on the resumed session.
//!
//! Flow control: the broker sends at most its in-flight window (Mosquitto:
//! `max_inflight_messages`, default 20) of unacknowledged QoS 1 messages, so a slow
//! outbox slows the broker down instead of growing memory here; the broker queues
//! the rest (Mosquitto: `max_queued_messages`). The source also stops reading from
//! the connection when [`MAX_PENDING`] messages wait for their acks or [`MAX_OUTQ`]
//! batches wait for room in the pipeline.

pub mod config;
mod conn;
pub mod decode;
pub mod options;
pub mod profile;
pub(crate) mod profile_checks;
pub mod route;
mod routing;
#[cfg(test)]
mod tests;
mod topic_errors;

pub use decode::{Decoded, Decoder, Problem};
pub use route::topic_matches;
pub use topic_errors::TopicErrors;

use crate::config::MqttBrokerConfig;
use crate::sources::{DeviceSpec, SourceBatch};
use conn::Conn;
use routing::route_for;
use rumqttc::AsyncClient;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Most received QoS 1 messages waiting for their ack before the source stops
/// reading from the broker.
pub const MAX_PENDING: usize = 1024;
/// Most batches waiting for room in the pipeline channel before the source stops
/// reading from the broker.
pub const MAX_OUTQ: usize = 64;
/// First reconnect delay; doubles up to [`RECONNECT_MAX`], with jitter.
const RECONNECT_INITIAL: Duration = Duration::from_millis(250);
/// Longest wait between reconnect attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// A connection that lasted this long was healthy: the backoff starts over. (Not
/// at once on ConnAck: two gateways sharing a client id would otherwise kick each
/// other off in a tight loop.)
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// On shutdown: how long to wait for the outbox to commit what is in flight, so
/// that it can be acknowledged instead of redelivered.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// One log line per (topic, fault kind) at most this often.
const PROBLEM_LOG_EVERY: Duration = Duration::from_secs(300);
/// Payload bytes shown in a log line.
const LOG_BYTES: usize = 80;
/// Most topics with their own error counters; the rest count under `(other topics)`.
const MAX_TOPICS: usize = 1024;
/// Longest topic kept as a key of the error counters and the log limiter (MQTT
/// allows 64 KiB): longer ones count under the route's filter or `(other topics)`,
/// so that a bounded number of keys is a bounded number of bytes too.
const MAX_TOPIC_KEY_BYTES: usize = 256;

/// Errors at the boundary of the MQTT source (set-up problems; connection faults
/// are retried, not returned).
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("MQTT broker {broker}: cannot read the {what}: {source}")]
    Secret {
        broker: String,
        what: &'static str,
        source: crate::config::SecretError,
    },
    #[error("MQTT broker {broker}: TLS: {what}")]
    Tls { broker: String, what: String },
    #[error("device {device}: its profile {profile} has no [mqtt] section")]
    NoMqttSection { device: String, profile: String },
    #[error("device {device}: profile {profile}: {reason}")]
    Profile {
        device: String,
        profile: String,
        reason: String,
    },
}

/// Reads all MQTT devices of one broker until `cancel` fires.
pub async fn run_mqtt(
    broker_name: String,
    broker: MqttBrokerConfig,
    gateway_id: String,
    devices: Vec<DeviceSpec>,
    tx: mpsc::Sender<SourceBatch>,
    cancel: CancellationToken,
) {
    run_mqtt_with_topic_errors(
        broker_name,
        broker,
        gateway_id,
        devices,
        tx,
        cancel,
        Arc::new(TopicErrors::default()),
    )
    .await
}

/// [`run_mqtt`], counting errors per topic into `topic_errors` (for metrics).
pub async fn run_mqtt_with_topic_errors(
    broker_name: String,
    broker: MqttBrokerConfig,
    gateway_id: String,
    devices: Vec<DeviceSpec>,
    tx: mpsc::Sender<SourceBatch>,
    cancel: CancellationToken,
    topic_errors: Arc<TopicErrors>,
) {
    let mut routes = Vec::new();
    for d in devices {
        match route_for(d.clone()) {
            Ok(r) => routes.push(r),
            Err(e) => {
                d.stats.error("config");
                error!(broker = %broker_name, error = %e, "MQTT device cannot start");
            }
        }
    }
    if routes.is_empty() {
        warn!(broker = %broker_name, "No MQTT device to read on this broker; not connecting");
        return;
    }
    let options = match options::build(&broker_name, &broker, &gateway_id, MAX_PENDING + 64) {
        Ok(o) => o,
        Err(e) => {
            for r in &routes {
                r.device.stats.error("config");
            }
            error!(error = %e, "MQTT broker cannot be used");
            return;
        }
    };
    info!(
        broker = %broker_name,
        host = %broker.host,
        port = broker.port,
        client_id = %options.client_id(),
        tls = broker.tls.is_some(),
        devices = routes.len(),
        "Starting MQTT source"
    );
    let (client, eventloop) = AsyncClient::new(options, MAX_PENDING + 64);
    let mut conn = Conn::new(broker_name, client, routes, topic_errors);
    conn.run(eventloop, tx, cancel).await;
}
