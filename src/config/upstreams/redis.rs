//! `[upstreams.redis]`: alerts to a stream and a pub/sub channel, latest values in a hash.

use super::{
    default_backoff_initial_ms, default_backoff_max_ms, default_batch_max_bytes,
    default_breaker_failures, default_breaker_open_secs, default_idle_poll_ms,
    default_recovery_jitter_ms, default_timeout_ms, yes, Delivery,
};
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
    /// Most records per batch (one transaction, one pipeline, one burst).
    #[serde(default = "redis_batch_max_records")]
    pub batch_max_records: usize,
    /// Most bytes per batch (estimated wire size); a single bigger record still goes
    /// alone.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Records per second at most, so a backlog after an outage drains at a pace the
    /// cloud can take while many gateways reconnect at once. 0 = no limit. Live
    /// traffic is normally far below it.
    #[serde(default = "redis_drain_rate_per_s")]
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

impl RedisUpstream {
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
