//! The loop every upstream shares: peek a batch after the cursor, deliver it through
//! the [`Sink`], dead-letter what was refused for good, ack what was confirmed.
//!
//! Batches are bounded by `batch_max_records` and `batch_max_bytes`. A failed batch
//! is retried after a jittered exponential backoff; `breaker_failures` failures in a
//! row open the circuit breaker for `breaker_open_secs` plus a random part of
//! `recovery_jitter_ms` (so gateways that lost the cloud together come back at
//! different moments), then one trial batch decides. A token bucket holds the pace
//! to `drain_rate_per_s`, which is what limits a backlog after an outage.
//!
//! Cancellation is looked at only between batches and while waiting: never between
//! an upstream write and the outbox ack. Must not: know a wire format.

use super::metrics::UpstreamMetrics;
use super::{Outcome, Sink, UpstreamError};
use crate::config::Delivery;
use crate::outbox::OutboxHandle;
use crate::record::now_us;
use crate::retry::{sleep_or_cancel, Backoff, TokenBucket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a forwarder did, returned when it is cancelled.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ForwarderReport {
    pub acked: u64,
    pub dead_lettered: u64,
    pub failed_batches: u64,
}

/// Runs one upstream until `cancel` fires. `notify` is the outbox writer's wake-up.
pub async fn run_forwarder<S: Sink>(
    mut sink: S,
    outbox: OutboxHandle,
    delivery: Delivery,
    notify: Arc<Notify>,
    metrics: Arc<UpstreamMetrics>,
    cancel: CancellationToken,
) -> ForwarderReport {
    let name = sink.name();
    let mut report = ForwarderReport::default();
    // Starts full: one second's worth at once.
    let mut bucket = TokenBucket::new(delivery.drain_rate_per_s, delivery.drain_rate_per_s);
    let idle = Duration::from_millis(delivery.idle_poll_ms.max(1));
    let mut backoff = Backoff::new(
        Duration::from_millis(delivery.backoff_initial_ms.max(1)),
        Duration::from_millis(delivery.backoff_max_ms),
    );
    let timeout = Duration::from_millis(delivery.timeout_ms);
    let mut failures: u32 = 0;
    let mut breaker_until: Option<Instant> = None;
    tracing::info!(upstream = name, "Forwarder started");
    let state_key = sink.state_key();
    if let Some(key) = &state_key {
        match outbox.get_state(key).await {
            Ok(Some(bytes)) => sink.restore(&bytes),
            Ok(None) => {}
            Err(e) => tracing::error!(upstream = name, error = %e,
                "Cannot read what this sink already sent; it starts afresh"),
        }
    }
    // Alerts-only sinks: how far the cursor was moved over records of no interest,
    // and when (at most once a second, so a busy outbox is not one extra
    // transaction per commit per sink).
    let alerts_only = sink.alerts_only();
    let mut passed_to: i64 = 0;
    let mut passed_at: Option<Instant> = None;

    while !cancel.is_cancelled() {
        // Register for the writer's wake-up before looking, so none is lost.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let peek = if alerts_only {
            outbox
                .peek_alerts(name, delivery.batch_max_records.max(1))
                .await
                .map(|(b, to)| (b, Some(to)))
        } else {
            outbox
                .peek(name, delivery.batch_max_records.max(1))
                .await
                .map(|b| (b, None))
        };
        let (peeked, scanned_to) = match peek {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(upstream = name, error = %e, "Cannot read the outbox");
                if sleep_or_cancel(idle, &cancel).await.cancelled() {
                    break;
                }
                continue;
            }
        };
        if peeked.is_empty() {
            metrics.lag_ms.store(0, Ordering::Relaxed);
            if let Some(to) = scanned_to.filter(|to| *to > passed_to) {
                if passed_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    match outbox.ack(name, to).await {
                        Ok(()) => passed_to = to,
                        Err(e) => tracing::error!(upstream = name, error = %e,
                            "Cannot move the cursor over records of no interest"),
                    }
                    passed_at = Some(Instant::now());
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(idle) => {}
                _ = cancel.cancelled() => break,
            }
            continue;
        }
        let mut n = 0;
        let mut bytes = 0;
        for r in &peeked {
            let b = sink.record_bytes(r);
            if n > 0 && bytes + b > delivery.batch_max_bytes {
                break;
            }
            bytes += b;
            n += 1;
        }
        let batch = &peeked[..n];
        let lag_ms = (now_us() - batch[0].created_us).max(0) / 1000;
        metrics.lag_ms.store(lag_ms as u64, Ordering::Relaxed);

        if let Some(until) = breaker_until {
            if Instant::now() < until {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = cancel.cancelled() => break,
                }
            }
            tracing::info!(upstream = name, "Circuit half-open: trying one batch");
        }
        if sleep_or_cancel(bucket.take(n), &cancel).await.cancelled() {
            break;
        }

        UpstreamMetrics::add(&metrics.sent, n as u64);
        let outcome = match tokio::time::timeout(timeout, sink.deliver(batch)).await {
            Ok(o) => o,
            Err(_) => {
                // The session state is unknown after a timeout: start afresh.
                sink.reset();
                Outcome::failed(UpstreamError::Timeout {
                    upstream: name,
                    target: String::new(),
                    timeout_ms: delivery.timeout_ms,
                })
            }
        };
        let Outcome {
            done,
            rejected,
            error,
            auth_failures,
        } = outcome;
        let done = done.min(n);

        if auth_failures > 0 {
            UpstreamMetrics::add(&metrics.auth_errors, auth_failures);
            tracing::error!(upstream = name, count = auth_failures,
                "The upstream refuses our credentials: every record will fail until the key is fixed");
        }
        // Dead letters first, then the ack that moves the cursor past them.
        let mut ack_ok = true;
        for (id, reason) in &rejected {
            match outbox.dead_letter(name, *id, reason).await {
                Ok(()) => {
                    report.dead_lettered += 1;
                    UpstreamMetrics::add(&metrics.dead_lettered, 1);
                    tracing::warn!(upstream = name, id, reason = %reason, "Record dead-lettered");
                }
                Err(e) => {
                    tracing::error!(upstream = name, id, error = %e,
                        "Cannot dead-letter a record; it will be sent again");
                    ack_ok = false;
                }
            }
        }
        if done > 0 && ack_ok {
            // Everything looked at, nothing cut off by size: an alerts-only sink's
            // cursor passes the other records up to where its look went.
            let up_to = match scanned_to {
                Some(to) if done == peeked.len() => to.max(batch[done - 1].id),
                _ => batch[done - 1].id,
            };
            let state = state_key.clone().zip(sink.state());
            match outbox.ack_with_state(name, up_to, state).await {
                Ok(()) => {
                    passed_to = passed_to.max(up_to);
                    let acked = (done - rejected.len().min(done)) as u64;
                    report.acked += acked;
                    UpstreamMetrics::add(&metrics.acked, acked);
                }
                Err(e) => {
                    tracing::error!(upstream = name, error = %e,
                        "Cannot record the acknowledgement; the batch will be sent again");
                }
            }
        }

        match error {
            None => {
                if failures > 0 {
                    tracing::info!(
                        upstream = name,
                        failures,
                        "Upstream reachable again: draining"
                    );
                }
                failures = 0;
                backoff.reset();
                breaker_until = None;
                metrics.breaker_open.store(false, Ordering::Relaxed);
            }
            Some(err) => {
                failures += 1;
                report.failed_batches += 1;
                UpstreamMetrics::add(&metrics.retried, 1);
                if failures == 1 || failures % 20 == 0 {
                    tracing::warn!(upstream = name, attempts = failures, error = %err,
                        "Delivery failed: will retry");
                }
                if failures >= delivery.breaker_failures.max(1) {
                    let extra = Duration::from_millis(
                        (fastrand::f64() * delivery.recovery_jitter_ms as f64) as u64,
                    );
                    let open = Duration::from_secs(delivery.breaker_open_secs) + extra;
                    if breaker_until.is_none() {
                        UpstreamMetrics::add(&metrics.breaker_trips, 1);
                        tracing::error!(upstream = name, open_ms = open.as_millis() as u64, error = %err,
                            "Circuit open: pausing deliveries to this upstream");
                    }
                    metrics.breaker_open.store(true, Ordering::Relaxed);
                    breaker_until = Some(Instant::now() + open);
                } else if sleep_or_cancel(backoff.next_delay(), &cancel)
                    .await
                    .cancelled()
                {
                    break;
                }
            }
        }
    }
    tracing::info!(
        upstream = name,
        acked = report.acked,
        dead_lettered = report.dead_lettered,
        "Forwarder stopped"
    );
    report
}
