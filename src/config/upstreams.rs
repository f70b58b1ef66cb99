//! The `[upstreams.*]` sections: where records go and how hard the gateway may push.
//!
//! Every upstream has the same delivery knobs (batch size by count and bytes, drain
//! rate, backoff, circuit breaker, timeout) in one nested table,
//! `[upstreams.<name>.delivery]` ([`DeliveryConfig`], declared once), plus what its
//! protocol needs. Unset knobs take the upstream's defaults (they differ in batch
//! size and drain rate); [`Delivery`] is the resolved view the forwarder uses.
//! [`UpstreamsConfig::validate`] is pure and returns `field.path: message` problems,
//! like the other sections.

use serde::Deserialize;
use std::path::Path;

// Each upstream's own section lives in its folder, `upstream/<name>/config.rs`.
pub use crate::upstream::http::config::HttpUpstream;
pub use crate::upstream::mqtt::config::MqttUpstream;
pub use crate::upstream::redis::config::RedisUpstream;
pub use crate::upstream::timescale::config::TimescaleUpstream;

pub(crate) fn yes() -> bool {
    true
}

/// Upstreams. Each one keeps its own cursor in the outbox; a record leaves the
/// outbox when every enabled upstream has acknowledged it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamsConfig {
    /// TimescaleDB / PostgreSQL: the database path, for everything that must arrive.
    pub timescale: Option<TimescaleUpstream>,
    /// Redis: alerts (stream + pub/sub) and the latest value per sensor.
    pub redis: Option<RedisUpstream>,
    /// The cloud's HTTP ingest API: live readings, lossy by design.
    pub http: Option<HttpUpstream>,
    /// A cloud MQTT broker (QoS 1).
    pub mqtt: Option<MqttUpstream>,
}

/// `[upstreams.<name>.delivery]`: the delivery knobs every upstream shares. Each is
/// optional; an unset one takes the upstream's default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Most records per batch (one transaction, one pipeline, one burst).
    pub batch_max_records: Option<usize>,
    /// Most bytes per batch (estimated wire size); a single bigger record still goes
    /// alone.
    pub batch_max_bytes: Option<usize>,
    /// Records per second at most, so a backlog after an outage drains at a pace the
    /// cloud can take while many gateways reconnect at once. 0 = no limit. Live
    /// traffic is normally far below it.
    pub drain_rate_per_s: Option<f64>,
    /// When the circuit breaker opens, its wait is extended by a random 0..this, so
    /// gateways that lost the cloud together do not all return at the same moment.
    pub recovery_jitter_ms: Option<u64>,
    /// First retry delay after a failed batch; doubles per failure, with jitter (a
    /// random 50..100 % of the delay).
    pub backoff_initial_ms: Option<u64>,
    /// Longest retry delay.
    pub backoff_max_ms: Option<u64>,
    /// Consecutive failed batches that open the circuit breaker (no attempts while
    /// open; shown in metrics).
    pub breaker_failures: Option<u32>,
    /// How long an open breaker waits before one trial batch (half-open).
    pub breaker_open_secs: Option<u64>,
    /// Time allowed for one batch (connect, write, confirmation); past it the batch
    /// counts as failed and is retried.
    pub timeout_ms: Option<u64>,
    /// With nothing to send, look at the outbox at least this often (the outbox
    /// writer also wakes the forwarder on every commit).
    pub idle_poll_ms: Option<u64>,
}

impl DeliveryConfig {
    /// The knobs over an upstream's defaults (the two that differ per upstream are
    /// given; the rest are shared).
    pub fn resolve(&self, batch_max_records: usize, drain_rate_per_s: f64) -> Delivery {
        Delivery {
            batch_max_records: self.batch_max_records.unwrap_or(batch_max_records),
            batch_max_bytes: self.batch_max_bytes.unwrap_or(default_batch_max_bytes()),
            drain_rate_per_s: self.drain_rate_per_s.unwrap_or(drain_rate_per_s),
            recovery_jitter_ms: self
                .recovery_jitter_ms
                .unwrap_or(default_recovery_jitter_ms()),
            backoff_initial_ms: self
                .backoff_initial_ms
                .unwrap_or(default_backoff_initial_ms()),
            backoff_max_ms: self.backoff_max_ms.unwrap_or(default_backoff_max_ms()),
            breaker_failures: self.breaker_failures.unwrap_or(default_breaker_failures()),
            breaker_open_secs: self
                .breaker_open_secs
                .unwrap_or(default_breaker_open_secs()),
            timeout_ms: self.timeout_ms.unwrap_or(default_timeout_ms()),
            idle_poll_ms: self.idle_poll_ms.unwrap_or(default_idle_poll_ms()),
        }
    }
}

/// The delivery knobs every forwarder shares, as the forwarder sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub batch_max_records: usize,
    pub batch_max_bytes: usize,
    pub drain_rate_per_s: f64,
    pub recovery_jitter_ms: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub breaker_failures: u32,
    pub breaker_open_secs: u64,
    pub timeout_ms: u64,
    pub idle_poll_ms: u64,
}

impl Delivery {
    fn validate(&self, section: &str, out: &mut Vec<String>) {
        if self.batch_max_records == 0 || self.batch_max_records > 100_000 {
            out.push(format!(
                "upstreams.{section}.delivery.batch_max_records: must be 1..=100000, not {}",
                self.batch_max_records
            ));
        }
        if self.batch_max_bytes < 1024 {
            out.push(format!(
                "upstreams.{section}.delivery.batch_max_bytes: must be at least 1024, not {}",
                self.batch_max_bytes
            ));
        }
        if !(self.drain_rate_per_s >= 0.0 && self.drain_rate_per_s.is_finite()) {
            out.push(format!(
                "upstreams.{section}.delivery.drain_rate_per_s: must be 0 (no limit) or a positive number, not {}",
                self.drain_rate_per_s
            ));
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > self.backoff_max_ms {
            out.push(format!(
                "upstreams.{section}.delivery.backoff_initial_ms: must be 1..=backoff_max_ms ({}), not {}",
                self.backoff_max_ms, self.backoff_initial_ms
            ));
        }
        if self.breaker_failures == 0 {
            out.push(format!(
                "upstreams.{section}.delivery.breaker_failures: must be at least 1"
            ));
        }
        if self.timeout_ms < 100 {
            out.push(format!(
                "upstreams.{section}.delivery.timeout_ms: must be at least 100, not {}",
                self.timeout_ms
            ));
        }
        if self.idle_poll_ms == 0 {
            out.push(format!(
                "upstreams.{section}.delivery.idle_poll_ms: must be at least 1"
            ));
        }
    }
}

impl UpstreamsConfig {
    /// Every problem as `field.path: message`.
    pub fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(t) = &self.timescale {
            t.delivery().validate("timescale", &mut out);
            if !(t.url.starts_with("postgres://") || t.url.starts_with("postgresql://")) {
                out.push(format!(
                    "upstreams.timescale.url: must start with postgres:// or postgresql://, not {:?}",
                    t.url
                ));
            }
            match t.connection_url() {
                Err(e) => out.push(format!("upstreams.timescale.url: {e}")),
                Ok((_, false)) if t.ca_file.is_some() => out.push(
                    "upstreams.timescale.ca_file: set, but the URL does not ask for TLS; add ?sslmode=verify-full (without it the connection is plain TCP)".into(),
                ),
                Ok(_) => {}
            }
            pem_file_problem(
                "upstreams.timescale.ca_file",
                t.ca_file.as_deref(),
                &mut out,
            );
        }
        if let Some(r) = &self.redis {
            r.delivery().validate("redis", &mut out);
            let tls = r.url.starts_with("rediss://");
            if !(tls || r.url.starts_with("redis://")) {
                out.push(format!(
                    "upstreams.redis.url: must start with redis:// (plain TCP) or rediss:// (TLS), not {:?}",
                    r.url
                ));
            }
            if r.url.contains('#') {
                out.push("upstreams.redis.url: a URL fragment (such as #insecure) is not accepted: the server certificate is always verified; give its CA in ca_file".into());
            }
            if !tls {
                for (field, set) in [
                    ("ca_file", r.ca_file.is_some()),
                    ("cert_file", r.cert_file.is_some()),
                    ("key_file", r.key_file.is_some()),
                ] {
                    if set {
                        out.push(format!(
                            "upstreams.redis.{field}: set, but the URL is not rediss://, so no TLS is used"
                        ));
                    }
                }
            }
            if r.cert_file.is_some() != r.key_file.is_some() {
                out.push(
                    "upstreams.redis.cert_file: mutual TLS needs both cert_file and key_file"
                        .into(),
                );
            }
            pem_file_problem("upstreams.redis.ca_file", r.ca_file.as_deref(), &mut out);
            pem_file_problem(
                "upstreams.redis.cert_file",
                r.cert_file.as_deref(),
                &mut out,
            );
            if r.cluster && tls {
                out.push("upstreams.redis.cluster: TLS to a Redis Cluster is not offered yet; use redis:// to the cluster (inside the plant's network), or rediss:// to a single node".into());
            }
            if r.stream_maxlen == 0 {
                out.push("upstreams.redis.stream_maxlen: must be at least 1".into());
            }
            if r.dedupe_window_hours == 0 {
                out.push("upstreams.redis.dedupe_window_hours: must be at least 1".into());
            }
        }
        if let Some(h) = &self.http {
            h.delivery().validate("http", &mut out);
            if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
                out.push(format!(
                    "upstreams.http.url: must start with http:// or https://, not {:?}",
                    h.url
                ));
            }
            if h.ca_file.is_some() && !h.url.starts_with("https://") {
                out.push(
                    "upstreams.http.ca_file: set, but the URL is not https://, so no TLS is used"
                        .into(),
                );
            }
            pem_file_problem("upstreams.http.ca_file", h.ca_file.as_deref(), &mut out);
            if !(h.rate_per_s > 0.0 && h.rate_per_s <= 10_000.0) {
                out.push(format!(
                    "upstreams.http.rate_per_s: must be above 0 and at most 10000 (the cloud takes about 100/s in total), not {}",
                    h.rate_per_s
                ));
            }
            if h.max_in_flight == 0 || h.max_in_flight > 64 {
                out.push(format!(
                    "upstreams.http.max_in_flight: must be 1..=64, not {}",
                    h.max_in_flight
                ));
            }
            if h.max_age_hours == 0 || h.max_age_hours > 24 {
                out.push(format!(
                    "upstreams.http.max_age_hours: must be 1..=24 (the cloud rejects readings older than 24 h), not {}",
                    h.max_age_hours
                ));
            }
        }
        if let Some(m) = &self.mqtt {
            m.delivery().validate("mqtt", &mut out);
            for (field, t) in [
                ("topic", Some(&m.topic)),
                ("topic_reading", m.topic_reading.as_ref()),
                ("topic_window", m.topic_window.as_ref()),
                ("topic_alert", m.topic_alert.as_ref()),
                ("topic_summary", m.topic_summary.as_ref()),
            ] {
                if let Some(t) = t {
                    if t.is_empty() || t.contains('#') || t.contains('+') {
                        out.push(format!(
                            "upstreams.mqtt.{field}: a publish topic must be non-empty and without wildcards (+, #), not {t:?}"
                        ));
                    }
                }
            }
        }
        out
    }
}

/// A problem with a PEM certificate file (CA or client certificate) named by `field`:
/// unreadable, not PEM, or without a certificate. `edgegw check` reports it at the
/// field's line, so a wrong path is found before the first connection fails.
pub(crate) fn pem_file_problem(field: &str, path: Option<&Path>, out: &mut Vec<String>) {
    if let Some(path) = path {
        if let Err(e) = crate::upstream::tls::read_pem_certificates(path) {
            out.push(format!("{field}: {}: {e}", path.display()));
        }
    }
}

// Shared defaults.
fn default_batch_max_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_recovery_jitter_ms() -> u64 {
    5_000
}
fn default_backoff_initial_ms() -> u64 {
    500
}
fn default_backoff_max_ms() -> u64 {
    60_000
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open_secs() -> u64 {
    30
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_idle_poll_ms() -> u64 {
    1_000
}

#[cfg(test)]
mod tests;
