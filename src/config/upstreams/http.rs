//! `[upstreams.http]`: the cloud's HTTP ingest API.

use super::{
    default_backoff_initial_ms, default_backoff_max_ms, default_batch_max_bytes,
    default_breaker_failures, default_breaker_open_secs, default_idle_poll_ms,
    default_recovery_jitter_ms, default_timeout_ms, yes, Delivery,
};
use crate::config::SecretRef;
use serde::Deserialize;
use std::path::PathBuf;

fn http_batch_max_records() -> usize {
    100
}
fn http_drain_rate_per_s() -> f64 {
    0.0
}

/// The cloud's HTTP ingest API: one reading per request, live values only.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpUpstream {
    /// A disabled upstream gets no cursor and holds nothing back.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Base URL of the ingest API, e.g. `https://ingest.example.com`; readings go to
    /// `<url>/api/v1/data/ingest`.
    pub url: String,
    /// Sent as `X-API-Key`.
    pub api_key: SecretRef,
    /// Requests per second (token bucket); the cloud drops above about 100/s across
    /// all gateways.
    #[serde(default = "default_http_rate")]
    pub rate_per_s: f64,
    /// Requests in flight at once.
    #[serde(default = "default_http_in_flight")]
    pub max_in_flight: usize,
    /// Readings older than this are not sent (the cloud rejects readings older than
    /// 24 h); they are dead-lettered for this upstream with the reason.
    #[serde(default = "default_http_max_age_hours")]
    pub max_age_hours: u64,
    /// CA certificate (PEM) for https; default: the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// Most records per batch (one transaction, one pipeline, one burst).
    #[serde(default = "http_batch_max_records")]
    pub batch_max_records: usize,
    /// Most bytes per batch (estimated wire size); a single bigger record still goes
    /// alone.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Records per second at most, so a backlog after an outage drains at a pace the
    /// cloud can take while many gateways reconnect at once. 0 = no limit. Live
    /// traffic is normally far below it.
    #[serde(default = "http_drain_rate_per_s")]
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

impl HttpUpstream {
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

fn default_http_rate() -> f64 {
    50.0
}
fn default_http_in_flight() -> usize {
    4
}
fn default_http_max_age_hours() -> u64 {
    23
}
