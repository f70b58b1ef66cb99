//! `[upstreams.timescale]`: TimescaleDB / PostgreSQL, with the URL as tokio-postgres takes it.

use crate::config::upstreams::{yes, Delivery, DeliveryConfig};
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
    /// `[upstreams.timescale.delivery]`: batch size, drain rate, backoff, circuit
    /// breaker and timeout, the same table for every upstream.
    #[serde(default)]
    pub delivery: DeliveryConfig,
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

    /// The delivery knobs as the forwarder uses them: `[upstreams.timescale.delivery]`
    /// over this upstream's defaults.
    pub fn delivery(&self) -> Delivery {
        self.delivery
            .resolve(timescale_batch_max_records(), timescale_drain_rate_per_s())
    }
}
