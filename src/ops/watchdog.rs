//! When to ping the systemd watchdog: only while the pipeline makes progress.
//!
//! Progress is measured end to end by **liveness probes**: every `probe_period` an
//! empty [`SourceBatch`] carrying an [`Ack`] is queued into the sources channel like
//! any poll. The processor passes its ack on to the outbox writer, which fires it once
//! everything queued before it is committed. A probe that comes back proves the
//! sources channel, the processor thread, the outbox channel and the writer all move.
//!
//! The decision, at every ping tick (half the watchdog interval):
//! 1. the last probe came back within `stale_after` (half the interval): **ping**.
//!    An idle gateway (no devices answering, no input at all) passes here: its probes
//!    go straight through, so idle is never mistaken for wedged;
//! 2. else, the processor took batches since the last tick (a probe may wait behind
//!    a long queue when the pipeline is busy): **ping** — busy is not wedged;
//! 3. else, the outbox is at its size bound (`full_policy = "block"`, or a full disk):
//!    the writer is holding its batch and retrying by design; a restart would not
//!    help, so **ping** and say so in `STATUS=`;
//! 4. otherwise the pipeline is wedged (a stuck thread, a deadlock): **withhold** the
//!    ping; systemd kills and restarts the service after `WatchdogSec=`. Nothing is
//!    lost by that: what was committed is in the outbox, and sources that acknowledge
//!    their input (MQTT QoS 1) were not acknowledged for what was not.
//!
//! Probes also run without a systemd watchdog (every 5 s): `/healthz` uses them.

use super::Live;
use crate::outbox::OutboxStats;
use crate::sources::{Ack, SourceBatch};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often probes run without a systemd watchdog.
pub const DEFAULT_PROBE_PERIOD: Duration = Duration::from_secs(5);

/// Probe period for a watchdog interval: a quarter of it, so that a healthy pipeline
/// has answered about twice within every `stale_after`.
pub fn probe_period(watchdog: Option<Duration>) -> Duration {
    match watchdog {
        Some(w) => (w / 4).max(Duration::from_millis(50)),
        None => DEFAULT_PROBE_PERIOD,
    }
}

/// Sends probes until `cancel`, recording round trips in `live.progress`. Holds a
/// sender of the sources channel: it must be cancelled and awaited before the
/// gateway shuts down (the processor ends when the last sender is gone).
pub async fn run_probes(
    tx: mpsc::Sender<SourceBatch>,
    live: Arc<Live>,
    period: Duration,
    cancel: CancellationToken,
) {
    loop {
        let (ack, committed) = Ack::new();
        let sent_at = Instant::now();
        let batch = SourceBatch {
            readings: Vec::new(),
            ack: Some(ack),
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = tx.send(batch) => if r.is_err() { return },
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = committed => match r {
                Ok(()) => live.progress.probe_ok(sent_at.elapsed()),
                Err(_) => {
                    // The ack was dropped unfired: the writer gave up on its batch.
                    live.progress.probes_failed.fetch_add(1, Relaxed);
                    tracing::warn!("A liveness probe was dropped by the pipeline");
                }
            },
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// The verdict of one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A probe came back recently.
    Progress,
    /// No recent probe, but the processor is taking batches.
    Busy,
    /// Neither: ask the outbox whether it is full ([`outbox_full`]) before deciding.
    Stalled { since: Duration },
}

/// Remembers the processor's batch count between ticks.
#[derive(Debug)]
pub struct Watchdog {
    stale_after: Duration,
    last_batches: u64,
}

impl Watchdog {
    pub fn new(interval: Duration) -> Watchdog {
        Watchdog {
            stale_after: interval / 2,
            last_batches: 0,
        }
    }

    pub fn check(&mut self, live: &Live) -> Verdict {
        let batches = live.pipeline.batches.load(Relaxed);
        let moved = batches != self.last_batches;
        self.last_batches = batches;
        let age = live.progress.since_last_ok();
        if age < self.stale_after {
            Verdict::Progress
        } else if moved {
            Verdict::Busy
        } else {
            Verdict::Stalled { since: age }
        }
    }
}

/// Whether the outbox is at its size bound (within 5 %): the writer then holds its
/// batch and retries by design.
pub fn outbox_full(s: &OutboxStats) -> bool {
    s.refusing || (s.limit_bytes > 0 && s.used_bytes >= s.limit_bytes - s.limit_bytes / 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Live {
        Live::new(crate::inference::shared(
            crate::inference::ModelRegistry::empty(),
        ))
    }

    #[test]
    fn recent_probe_or_moving_batches_count_as_progress() {
        let l = live();
        let mut w = Watchdog::new(Duration::from_millis(40));
        l.progress.probe_ok(Duration::from_millis(1));
        assert_eq!(w.check(&l), Verdict::Progress);
        std::thread::sleep(Duration::from_millis(30));
        // No probe for longer than half the interval, no batches: stalled.
        assert!(matches!(w.check(&l), Verdict::Stalled { .. }));
        // The processor moves (a probe stuck behind a busy queue): busy, not wedged.
        l.pipeline.batches.fetch_add(5, Relaxed);
        assert_eq!(w.check(&l), Verdict::Busy);
        assert!(matches!(w.check(&l), Verdict::Stalled { .. }));
    }
}
