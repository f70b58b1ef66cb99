//! Upstream forwarders: the only code that knows a wire format of the cloud.
//!
//! Each enabled upstream runs one [`forwarder::run_forwarder`] task: it reads the
//! outbox through its own cursor (`peek`), hands a batch to its [`Sink`]
//! (`timescale`, `redis`, `http`, `mqtt`), dead-letters what the sink rejected for
//! good, and acknowledges (`ack(up_to_id)`) only what the upstream confirmed. The
//! loop owns batching, backoff, the circuit breaker, the drain rate and the
//! per-upstream [`UpstreamMetrics`]; a sink only speaks its protocol.
//!
//! Must not: touch SQLite other than through [`crate::outbox::OutboxHandle`], ack a
//! record before the upstream confirmed it, or let one upstream wait for another.
//! Wire formats and table mappings are documented in docs/upstreams.md.

pub mod cli;
pub mod forwarder;
pub mod http;
pub mod map;
pub mod metrics;
pub mod mqtt;
pub mod redis;
pub mod registry;
pub mod schema;
pub mod timescale;
pub mod tls;

pub use forwarder::{run_forwarder, ForwarderReport};
pub use metrics::{MetricsSnapshot, UpstreamMetrics};

use crate::record::StoredRecord;
use std::future::Future;

/// Why a batch could not be delivered now. Every variant means "retry later": a
/// record that can never be delivered is reported in [`Outcome::rejected`] instead.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection (refused, reset, DNS, TLS handshake).
    #[error("{upstream}: cannot connect to {target}: {detail}")]
    Connect {
        upstream: &'static str,
        target: String,
        detail: String,
    },
    /// The connection broke or the server failed while writing.
    #[error("{upstream}: write to {target} failed: {detail}")]
    Write {
        upstream: &'static str,
        target: String,
        detail: String,
    },
    /// The batch took longer than `timeout_ms`.
    #[error("{upstream}: no confirmation from {target} within {timeout_ms} ms")]
    Timeout {
        upstream: &'static str,
        target: String,
        timeout_ms: u64,
    },
    /// A local setting is unusable (a secret that cannot be read, a bad CA file); it
    /// is retried because an operator can fix it without restarting.
    #[error("{upstream}: {detail}")]
    Config {
        upstream: &'static str,
        detail: String,
    },
}

/// What a sink did with a batch.
#[derive(Debug, Default)]
pub struct Outcome {
    /// How many records from the start of the batch are finished (delivered, skipped
    /// as irrelevant for this upstream, or rejected). The forwarder acks up to the
    /// last of them.
    pub done: usize,
    /// Records (by outbox id) the upstream refused for good, with the reason; they
    /// are among the first `done` and are dead-lettered for this upstream.
    pub rejected: Vec<(i64, String)>,
    /// Why the sink stopped before the end of the batch (`done < batch.len()`).
    pub error: Option<UpstreamError>,
    /// An error that every further record will hit too (HTTP 403: a bad API key); it
    /// is counted and logged loudly even though the records are dead-lettered.
    pub auth_failures: u64,
}

impl Outcome {
    /// Everything delivered.
    pub fn all(n: usize) -> Outcome {
        Outcome {
            done: n,
            ..Outcome::default()
        }
    }

    /// Nothing delivered.
    pub fn failed(error: UpstreamError) -> Outcome {
        Outcome {
            error: Some(error),
            ..Outcome::default()
        }
    }
}

/// One upstream protocol. Implementations must make `deliver` idempotent: the same
/// records may come again after a crash, a timeout or a reset cursor.
pub trait Sink: Send {
    /// The upstream's name (the outbox cursor name): `timescale`, `redis`, ...
    fn name(&self) -> &'static str;

    /// Delivers `batch` in order; see [`Outcome`].
    fn deliver(&mut self, batch: &[StoredRecord]) -> impl Future<Output = Outcome> + Send;

    /// Estimated wire size of a record, for `batch_max_bytes`.
    fn record_bytes(&self, record: &StoredRecord) -> usize {
        map::approx_bytes(&record.record)
    }

    /// Forgets the connection (after a timeout the state of the session is unknown).
    fn reset(&mut self) {}

    /// Whether this upstream takes alerts and nothing else (a local notification
    /// sink): the forwarder then looks up alerts alone and moves the cursor over
    /// the rest without reading it.
    fn alerts_only(&self) -> bool {
        false
    }

    /// The outbox state entry this sink keeps in step with its cursor: read at
    /// start ([`Sink::restore`]) and written with every ack ([`Sink::state`]), in
    /// the ack's transaction.
    fn state_key(&self) -> Option<String> {
        None
    }

    /// Takes back the state saved with the last ack before a restart.
    fn restore(&mut self, _state: &[u8]) {}

    /// The state to save with the next ack.
    fn state(&self) -> Option<Vec<u8>> {
        None
    }
}

/// The running forwarders of a gateway, one task per enabled upstream.
pub struct Forwarders {
    tasks: Vec<(&'static str, tokio::task::JoinHandle<ForwarderReport>)>,
    /// Counters per upstream name.
    pub metrics: std::collections::BTreeMap<&'static str, std::sync::Arc<UpstreamMetrics>>,
}

impl Forwarders {
    /// Waits for every forwarder and returns what each did. They stop at the
    /// gateway's drained signal (`Shutdown::pipeline_drained`), between batches,
    /// never between a write and its ack.
    pub async fn finish(self) -> Vec<(&'static str, ForwarderReport)> {
        let mut out = Vec::new();
        for (name, task) in self.tasks {
            match task.await {
                Ok(r) => out.push((name, r)),
                Err(e) => tracing::error!(upstream = name, error = %e, "Forwarder task failed"),
            }
        }
        out
    }
}

/// Starts one forwarder per enabled upstream ([`registry::enabled`], the same list
/// the outbox took its cursors from) under `shutdown`: each runs until the pipeline
/// has drained into the outbox. `notify` is the outbox writer's wake-up.
pub fn spawn_forwarders(
    upstreams: Vec<registry::Planned>,
    outbox: &crate::outbox::OutboxHandle,
    notify: &std::sync::Arc<tokio::sync::Notify>,
    shutdown: &crate::shutdown::Shutdown,
) -> Forwarders {
    let mut tasks = Vec::new();
    let mut metrics = std::collections::BTreeMap::new();
    for mut up in upstreams {
        let m = std::sync::Arc::new(UpstreamMetrics::default());
        metrics.insert(up.name, m.clone());
        let (outbox, notify, cancel) = (outbox.clone(), notify.clone(), shutdown.drained().clone());
        let make = move || {
            (up.spawn)(
                outbox.clone(),
                notify.clone(),
                m.clone(),
                cancel.child_token(),
            )
        };
        // Started again from its outbox cursor after a panic (`crate::supervise`).
        let run = crate::supervise::supervise(
            crate::supervise::Supervised {
                kind: "upstream",
                name: up.name.to_string(),
                up: None,
                cancel: shutdown.drained().clone(),
                delay: crate::supervise::PANIC_RESTART_DELAY,
            },
            make,
        );
        tasks.push((
            up.name,
            shutdown.spawn(async move { run.await.0.unwrap_or_default() }),
        ));
    }
    Forwarders { tasks, metrics }
}
