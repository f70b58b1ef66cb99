//! Per-upstream counters: sent, acked, retried, dead-lettered, lag, breaker state.
//!
//! Plain atomics, written by one forwarder and read by whoever reports (the metrics
//! endpoint, the CLI, tests). Must not: hold locks or allocate per record.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters of one upstream since the gateway started.
#[derive(Debug, Default)]
pub struct UpstreamMetrics {
    /// Records handed to the upstream (retries count again).
    pub sent: AtomicU64,
    /// Records acknowledged in the outbox (delivered, or not meant for this upstream).
    pub acked: AtomicU64,
    /// Failed batch attempts that will be retried.
    pub retried: AtomicU64,
    /// Records refused for good and moved to the dead-letter table.
    pub dead_lettered: AtomicU64,
    /// Authentication / authorisation failures (every further request will fail too).
    pub auth_errors: AtomicU64,
    /// Age of the oldest record not yet acknowledged, milliseconds (0 when idle).
    pub lag_ms: AtomicU64,
    /// Whether the circuit breaker is open (no attempts until it half-opens).
    pub breaker_open: AtomicBool,
    /// Times the breaker opened.
    pub breaker_trips: AtomicU64,
    /// Notification sinks only: notifications the receiver confirmed.
    pub notify_delivered: AtomicU64,
    /// Notification sinks only: attempts that failed (retried or refused).
    pub notify_failed: AtomicU64,
    /// Notification sinks only: openings and escalations held back by the rate limit.
    pub notify_suppressed: AtomicU64,
    /// Notification sinks only: alert records that needed no notification (an
    /// update without escalation, a repeat, not routed to this sink).
    pub notify_skipped: AtomicU64,
}

/// A copy of [`UpstreamMetrics`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    pub sent: u64,
    pub acked: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub auth_errors: u64,
    pub lag_ms: u64,
    pub breaker_open: bool,
    pub breaker_trips: u64,
    pub notify_delivered: u64,
    pub notify_failed: u64,
    pub notify_suppressed: u64,
    pub notify_skipped: u64,
}

impl UpstreamMetrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = Ordering::Relaxed;
        MetricsSnapshot {
            sent: self.sent.load(r),
            acked: self.acked.load(r),
            retried: self.retried.load(r),
            dead_lettered: self.dead_lettered.load(r),
            auth_errors: self.auth_errors.load(r),
            lag_ms: self.lag_ms.load(r),
            breaker_open: self.breaker_open.load(r),
            breaker_trips: self.breaker_trips.load(r),
            notify_delivered: self.notify_delivered.load(r),
            notify_failed: self.notify_failed.load(r),
            notify_suppressed: self.notify_suppressed.load(r),
            notify_skipped: self.notify_skipped.load(r),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
