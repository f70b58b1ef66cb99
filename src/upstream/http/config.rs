//! `[upstreams.http]`: the cloud's HTTP ingest API.

use crate::config::upstreams::{yes, Delivery, DeliveryConfig};
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
    /// `[upstreams.http.delivery]`: batch size, drain rate, backoff, circuit
    /// breaker and timeout, the same table for every upstream.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl HttpUpstream {
    /// The delivery knobs as the forwarder uses them: `[upstreams.http.delivery]`
    /// over this upstream's defaults.
    pub fn delivery(&self) -> Delivery {
        self.delivery
            .resolve(http_batch_max_records(), http_drain_rate_per_s())
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
