//! The `[upstreams.*]` sections: where records go and how hard the gateway may push.
//!
//! Every upstream has the same delivery knobs (batch size by count and bytes, drain
//! rate, backoff, circuit breaker, timeout) plus what its protocol needs. The knobs
//! are flat fields of each section (`[upstreams.timescale] batch_max_records = ...`)
//! so an operator never has to guess a sub-table; [`Delivery`] is the typed view the
//! forwarder uses. [`UpstreamsConfig::validate`] is pure and returns
//! `field.path: message` problems, like the other sections.

use super::SecretRef;
use serde::Deserialize;
use std::path::{Path, PathBuf};

fn yes() -> bool {
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
                "upstreams.{section}.batch_max_records: must be 1..=100000, not {}",
                self.batch_max_records
            ));
        }
        if self.batch_max_bytes < 1024 {
            out.push(format!(
                "upstreams.{section}.batch_max_bytes: must be at least 1024, not {}",
                self.batch_max_bytes
            ));
        }
        if !(self.drain_rate_per_s >= 0.0 && self.drain_rate_per_s.is_finite()) {
            out.push(format!(
                "upstreams.{section}.drain_rate_per_s: must be 0 (no limit) or a positive number, not {}",
                self.drain_rate_per_s
            ));
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > self.backoff_max_ms {
            out.push(format!(
                "upstreams.{section}.backoff_initial_ms: must be 1..=backoff_max_ms ({}), not {}",
                self.backoff_max_ms, self.backoff_initial_ms
            ));
        }
        if self.breaker_failures == 0 {
            out.push(format!(
                "upstreams.{section}.breaker_failures: must be at least 1"
            ));
        }
        if self.timeout_ms < 100 {
            out.push(format!(
                "upstreams.{section}.timeout_ms: must be at least 100, not {}",
                self.timeout_ms
            ));
        }
        if self.idle_poll_ms == 0 {
            out.push(format!(
                "upstreams.{section}.idle_poll_ms: must be at least 1"
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

// Per-upstream defaults.
fn timescale_batch_max_records() -> usize {
    5_000
}
fn timescale_drain_rate_per_s() -> f64 {
    0.0
}
fn redis_batch_max_records() -> usize {
    1_000
}
fn redis_drain_rate_per_s() -> f64 {
    5_000.0
}
fn http_batch_max_records() -> usize {
    100
}
fn http_drain_rate_per_s() -> f64 {
    0.0
}
fn mqtt_batch_max_records() -> usize {
    100
}
fn mqtt_drain_rate_per_s() -> f64 {
    1_000.0
}

/// TimescaleDB / PostgreSQL, the cloud's database: every record kind, idempotent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimescaleUpstream {
    /// A disabled upstream gets no cursor and holds nothing back.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `postgres://user@host:5432/db` without the password. `?sslmode=verify-full`
    /// turns TLS on (rustls; the certificate and the host name are always verified,
    /// so `require` means the same); other modes are plain TCP.
    pub url: String,
    /// Password from the environment, a file or a systemd credential.
    pub password: Option<SecretRef>,
    /// CA certificate (PEM) that signed the server's certificate; default: the
    /// system's trusted roots. Only with `sslmode=verify-full` (or `require`).
    pub ca_file: Option<PathBuf>,
    /// Most records per batch (one transaction, one pipeline, one burst).
    #[serde(default = "timescale_batch_max_records")]
    pub batch_max_records: usize,
    /// Most bytes per batch (estimated wire size); a single bigger record still goes
    /// alone.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Records per second at most, so a backlog after an outage drains at a pace the
    /// cloud can take while many gateways reconnect at once. 0 = no limit. Live
    /// traffic is normally far below it.
    #[serde(default = "timescale_drain_rate_per_s")]
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

impl TimescaleUpstream {
    /// The URL as tokio-postgres takes it (without `sslmode`, since it does not parse
    /// libpq's `allow`, `verify-ca` or `verify-full`) and whether `sslmode` asks for
    /// TLS: `verify-full`, or `require` (the same here: the certificate and the host
    /// name are always verified). `disable`, `allow`, `prefer` (libpq's default) or
    /// none: plain TCP, since a TLS connection that skips verification is not
    /// offered. `verify-ca` is refused: the host name is always checked as well.
    pub fn connection_url(&self) -> Result<(String, bool), String> {
        let (base, query) = match self.url.split_once('?') {
            Some((b, q)) => (b, q),
            None => return Ok((self.url.clone(), false)),
        };
        let mut tls = false;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", mode)) => {
                    tls = match mode {
                        "disable" | "allow" | "prefer" => false,
                        "require" | "verify-full" => true,
                        "verify-ca" => return Err("sslmode=verify-ca is not offered: the gateway always checks the host name as well; use sslmode=verify-full".into()),
                        other => return Err(format!("sslmode={other} is not a PostgreSQL SSL mode; use verify-full (TLS) or disable")),
                    }
                }
                _ => kept.push(pair),
            }
        }
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((url, tls))
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_problems_name_their_field() {
        let u: UpstreamsConfig = toml::from_str(
            r#"
            [timescale]
            url = "postgres://edgegw@db/smartmaint"
            [http]
            url = "ftp://x"
            api_key = { env = "K" }
            rate_per_s = 0.0
            [mqtt]
            broker = "cloud"
            topic_alert = "a/#"
            batch_max_records = 0
            "#,
        )
        .unwrap();
        let t = u.timescale.as_ref().unwrap();
        assert!(t.enabled);
        assert_eq!(t.batch_max_records, 5000);
        assert_eq!(u.http.as_ref().unwrap().max_in_flight, 4);
        let problems = u.validate();
        for field in [
            "upstreams.http.url:",
            "upstreams.http.rate_per_s:",
            "upstreams.mqtt.topic_alert:",
            "upstreams.mqtt.batch_max_records:",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(field)),
                "{field} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 4, "{problems:#?}");
        let unknown =
            toml::from_str::<UpstreamsConfig>("[redis]\nurl = \"redis://x\"\nbatch = 1\n");
        assert!(unknown.is_err());
    }

    fn problems(toml_text: &str) -> Vec<String> {
        toml::from_str::<UpstreamsConfig>(toml_text)
            .unwrap()
            .validate()
    }

    #[test]
    fn tls_options_that_would_not_be_used_or_not_verify_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        // Any certificate will do for the file check.
        let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUS7oTt1yqHb4Vq4ZF1lD8w2hG0o8wCgYIKoZIzj0EAwIw\n-----END CERTIFICATE-----\n";
        std::fs::write(&ca, pem).unwrap();
        let ca = format!("{:?}", ca.display().to_string());

        // Verified TLS: nothing to say.
        assert_eq!(
            problems(&format!(
                "[timescale]\nurl = \"postgres://u@db/x?sslmode=verify-full\"\nca_file = {ca}\n\
                 [redis]\nurl = \"rediss://r:6380/0\"\nca_file = {ca}\n\
                 [http]\nurl = \"https://i\"\napi_key = {{ env = \"K\" }}\nca_file = {ca}\n"
            )),
            Vec::<String>::new()
        );
        let p = problems(&format!(
            "[timescale]\nurl = \"postgres://u@db/x?sslmode=prefer\"\nca_file = {ca}\n\
             [redis]\nurl = \"redis://r:6379/0\"\nca_file = {ca}\n\
             [http]\nurl = \"http://i\"\napi_key = {{ env = \"K\" }}\nca_file = {ca}\n"
        ));
        for field in [
            "upstreams.timescale.ca_file: set, but the URL does not ask for TLS",
            "upstreams.redis.ca_file: set, but the URL is not rediss://",
            "upstreams.http.ca_file: set, but the URL is not https://",
        ] {
            assert!(p.iter().any(|x| x.starts_with(field)), "{field} in {p:#?}");
        }
        let p = problems(
            "[timescale]\nurl = \"postgres://u@db/x?sslmode=verify-ca\"\n\
             [redis]\nurl = \"rediss://r:6380/0#insecure\"\nkey_file = { env = \"K\" }\n",
        );
        for field in [
            "upstreams.timescale.url: sslmode=verify-ca is not offered",
            "upstreams.redis.url: a URL fragment (such as #insecure) is not accepted",
            "upstreams.redis.cert_file: mutual TLS needs both",
        ] {
            assert!(p.iter().any(|x| x.starts_with(field)), "{field} in {p:#?}");
        }
    }
}
