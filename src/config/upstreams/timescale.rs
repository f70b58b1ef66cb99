//! `[upstreams.timescale]`: TimescaleDB / PostgreSQL, with the URL as tokio-postgres takes it.

use super::{
    default_backoff_initial_ms, default_backoff_max_ms, default_batch_max_bytes,
    default_breaker_failures, default_breaker_open_secs, default_idle_poll_ms,
    default_recovery_jitter_ms, default_timeout_ms, yes, Delivery,
};
use crate::config::SecretRef;
use serde::Deserialize;
use std::path::PathBuf;

fn timescale_batch_max_records() -> usize {
    5_000
}
fn timescale_drain_rate_per_s() -> f64 {
    0.0
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
