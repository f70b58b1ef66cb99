//! `[upstreams.redis]`: alerts to a stream and a pub/sub channel, latest values in a hash.

use crate::config::upstreams::{yes, Delivery, DeliveryConfig};
use crate::config::SecretRef;
use serde::Deserialize;
use std::path::PathBuf;

fn redis_batch_max_records() -> usize {
    1_000
}
fn redis_drain_rate_per_s() -> f64 {
    5_000.0
}

/// Redis: alerts to a stream and a pub/sub channel, latest value per sensor in a hash.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisUpstream {
    /// A disabled upstream gets no cursor and holds nothing back.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `redis://host:6379/0` (plain TCP) or `rediss://host:6380/0` (TLS; the
    /// certificate and the host name are always verified), without the password.
    pub url: String,
    /// Password (Redis AUTH) from the environment, a file or a systemd credential.
    pub password: Option<SecretRef>,
    /// CA certificate (PEM) that signed the server's certificate, for `rediss://`;
    /// default: the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (Redis' `tls-auth-clients`), with
    /// `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS, from a file, the environment or a systemd
    /// credential (it is a secret).
    pub key_file: Option<SecretRef>,
    /// Key prefix for everything the gateway writes (streams, hashes, channels), so
    /// several systems can share one Redis.
    #[serde(default = "default_redis_prefix")]
    pub key_prefix: String,
    /// Stream that alerts are XADDed to (after the prefix).
    #[serde(default = "default_redis_stream")]
    pub stream: String,
    /// Approximate MAXLEN of the stream (`XADD ... MAXLEN ~ n`): Redis memory stays
    /// bounded, old entries go first.
    #[serde(default = "default_redis_stream_maxlen")]
    pub stream_maxlen: u64,
    /// Pub/sub channel alerts are PUBLISHed on for live dashboards (after the prefix).
    #[serde(default = "default_redis_channel")]
    pub channel: String,
    /// How long the record keys of sent alerts are remembered, so that a re-sent
    /// alert is recognised and skipped.
    #[serde(default = "default_redis_dedupe_hours")]
    pub dedupe_window_hours: u64,
    /// `url` names one node of a Redis Cluster: the gateway discovers the others,
    /// follows the slots (MOVED/ASK) and keeps the alert script's two keys in one
    /// slot (a hash tag on the gateway's own set of sent keys; the stream's name is
    /// unchanged). Plain TCP only for now (`redis://`).
    #[serde(default)]
    pub cluster: bool,
    /// `[upstreams.redis.delivery]`: batch size, drain rate, backoff, circuit
    /// breaker and timeout, the same table for every upstream.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl RedisUpstream {
    /// The delivery knobs as the forwarder uses them: `[upstreams.redis.delivery]`
    /// over this upstream's defaults.
    pub fn delivery(&self) -> Delivery {
        self.delivery
            .resolve(redis_batch_max_records(), redis_drain_rate_per_s())
    }
}

fn default_redis_prefix() -> String {
    "smartmaint:".into()
}
fn default_redis_stream() -> String {
    "alerts".into()
}
fn default_redis_stream_maxlen() -> u64 {
    100_000
}
fn default_redis_channel() -> String {
    "alerts:live".into()
}
fn default_redis_dedupe_hours() -> u64 {
    168
}
