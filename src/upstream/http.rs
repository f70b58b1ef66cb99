//! The cloud's HTTP ingest API: `POST <url>/api/v1/data/ingest`, one reading per
//! request, `X-API-Key`, `Idempotency-Key` = record key.
//!
//! Readings only: windows, alerts and summaries are acknowledged without being sent
//! (they reach the cloud through the database path). A token bucket holds requests
//! to `rate_per_s`; up to `max_in_flight` are open at once. 200 -> delivered;
//! 400/422 -> dead letter with the body; 401/403 -> dead letter and an auth error;
//! 404/405, 408, 429, 5xx, timeouts and transport errors -> retry. Readings the cloud
//! rejects by rule (negative values, older than `max_age_hours`) are dead-lettered
//! here without a request. Must not: send more than one reading per request.

/// Its `[upstreams.http]` config section (re-exported by `crate::config`).
pub mod config;

use super::map;
use super::{Outcome, Sink, UpstreamError};
use crate::config::HttpUpstream;
use crate::record::{now_us, Record, StoredRecord};
use crate::retry::TokenBucket;
use futures_util::stream::{self, StreamExt};
use std::time::Duration;
use tokio::time::Instant;

/// Path of the ingest endpoint below the configured base URL.
pub const INGEST_PATH: &str = "/api/v1/data/ingest";

/// What one request came to.
enum Answer {
    Delivered,
    /// Refused for good: dead letter with this reason.
    Rejected(String, bool),
    /// Try again later.
    Retry(String),
}

/// The HTTP ingest sink.
pub struct HttpSink {
    cfg: HttpUpstream,
    gateway: String,
    endpoint: String,
    client: Option<reqwest::Client>,
    api_key: Option<String>,
    /// Requests per second (starts with one token; one second's worth at most).
    pace: TokenBucket,
}

/// The HTTP client of an upstream or a webhook: our rustls (with `ca_file` besides
/// the system's roots), `timeout_ms` per request (100 ms at least), 10 s to connect.
pub(crate) fn client(
    ca_file: Option<&std::path::Path>,
    timeout_ms: u64,
) -> Result<reqwest::Client, String> {
    let tls = super::tls::client_config(ca_file).map_err(|e| e.to_string())?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_millis(timeout_ms.max(100)))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("edgegw/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

impl HttpSink {
    pub fn new(cfg: HttpUpstream, gateway: &str) -> HttpSink {
        let endpoint = format!("{}{}", cfg.url.trim_end_matches('/'), INGEST_PATH);
        let pace = TokenBucket::new(cfg.rate_per_s, 1.0);
        HttpSink {
            cfg,
            gateway: gateway.to_string(),
            endpoint,
            client: None,
            api_key: None,
            pace,
        }
    }

    fn config_error(&self, detail: String) -> UpstreamError {
        UpstreamError::Config {
            upstream: "http",
            detail,
        }
    }

    fn ready(&mut self) -> Result<(reqwest::Client, String), UpstreamError> {
        if self.api_key.is_none() {
            let key = self
                .cfg
                .api_key
                .resolve()
                .map_err(|e| self.config_error(format!("api_key: {e}")))?;
            self.api_key = Some(key);
        }
        if self.client.is_none() {
            let client = client(self.cfg.ca_file.as_deref(), self.cfg.delivery().timeout_ms)
                .map_err(|e| self.config_error(e))?;
            self.client = Some(client);
        }
        match (&self.client, &self.api_key) {
            (Some(c), Some(k)) => Ok((c.clone(), k.clone())),
            _ => Err(self.config_error("HTTP client not ready".into())),
        }
    }

    /// Why the cloud would refuse this reading by rule, if it would.
    fn refused_by_rule(&self, rec: &StoredRecord) -> Option<String> {
        let Record::Reading(r) = &rec.record else {
            return None;
        };
        if !r.value.is_finite() {
            return Some(format!("value {} is not a number the API accepts", r.value));
        }
        if r.value < 0.0 {
            return Some(format!(
                "negative value {} (the ingest API rejects negative values; the database upstream has it)",
                r.value
            ));
        }
        let max_age_us = i64::try_from(self.cfg.max_age_hours)
            .unwrap_or(24)
            .saturating_mul(3_600_000_000);
        if now_us() - r.ts_us > max_age_us {
            return Some(format!(
                "reading older than {} h (the ingest API rejects readings older than 24 h; the database upstream has it)",
                self.cfg.max_age_hours
            ));
        }
        None
    }
}

async fn post(
    client: reqwest::Client,
    endpoint: String,
    api_key: String,
    key: String,
    body: String,
    start: Instant,
) -> Answer {
    tokio::time::sleep_until(start).await;
    let res = client
        .post(&endpoint)
        .header("X-API-Key", api_key)
        .header("Idempotency-Key", key)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await;
    let resp = match res {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Answer::Retry(format!("{endpoint}: timed out")),
        // With its causes: a refused certificate says why (unknown issuer, not valid
        // for this name).
        Err(e) => return Answer::Retry(format!("{endpoint}: {}", error_chain(&e.without_url()))),
    };
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let body: String = text.chars().take(500).collect();
    match status {
        200..=299 => Answer::Delivered,
        401 | 403 => Answer::Rejected(format!("HTTP {status} (API key refused): {body}"), true),
        404 | 405 | 408 | 429 => Answer::Retry(format!("{endpoint}: HTTP {status}: {body}")),
        400..=499 => Answer::Rejected(format!("HTTP {status}: {body}"), false),
        _ => Answer::Retry(format!("{endpoint}: HTTP {status}: {body}")),
    }
}

/// An error with its causes, each once.
fn error_chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

impl Sink for HttpSink {
    fn name(&self) -> &'static str {
        "http"
    }

    fn record_bytes(&self, record: &StoredRecord) -> usize {
        match record.record {
            Record::Reading(_) => map::approx_bytes(&record.record) + 200,
            _ => 16,
        }
    }

    fn reset(&mut self) {
        self.client = None;
    }

    async fn deliver(&mut self, batch: &[StoredRecord]) -> Outcome {
        let (client, api_key) = match self.ready() {
            Ok(x) => x,
            Err(e) => return Outcome::failed(e),
        };
        // Decide per record first: skip, refuse by rule, or a request at a paced slot.
        enum Plan {
            Skip,
            Refuse(String),
            Send(String, Instant),
        }
        let plans: Vec<Plan> = batch
            .iter()
            .map(|rec| match &rec.record {
                Record::Reading(_) => match self.refused_by_rule(rec) {
                    Some(reason) => Plan::Refuse(reason),
                    None => Plan::Send(
                        map::record_json(rec, &self.gateway).to_string(),
                        Instant::now() + self.pace.take(1),
                    ),
                },
                _ => Plan::Skip,
            })
            .collect();
        let endpoint = self.endpoint.clone();
        // Owned inputs: the future must be Send and must not borrow the batch across
        // the stream's closures.
        let items: Vec<(String, Plan)> = batch.iter().map(|r| r.key.clone()).zip(plans).collect();
        let answers: Vec<Answer> = stream::iter(items)
            .map(|(key, plan)| {
                let (client, endpoint, api_key) =
                    (client.clone(), endpoint.clone(), api_key.clone());
                async move {
                    match plan {
                        Plan::Skip => Answer::Delivered,
                        Plan::Refuse(r) => Answer::Rejected(r, false),
                        Plan::Send(body, at) => {
                            post(client, endpoint, api_key, key, body, at).await
                        }
                    }
                }
            })
            .buffered(self.cfg.max_in_flight.max(1))
            .collect()
            .await;
        let mut out = Outcome::default();
        for (rec, answer) in batch.iter().zip(answers) {
            match answer {
                Answer::Delivered => out.done += 1,
                Answer::Rejected(reason, auth) => {
                    out.done += 1;
                    out.auth_failures += u64::from(auth);
                    out.rejected.push((rec.id, reason));
                }
                Answer::Retry(detail) => {
                    out.error = Some(UpstreamError::Write {
                        upstream: "http",
                        target: self.endpoint.clone(),
                        detail,
                    });
                    break;
                }
            }
        }
        out
    }
}
