//! The processor stage of the running gateway: [`spawn_processor`] runs the
//! [`Processor`] on a blocking thread (FFT and inference are CPU work), takes
//! `SourceBatch`es from the sources channel, sends `OutboxBatch`es (records, acks,
//! state) to the outbox writer in order, publishes its counters to [`Live`], and
//! applies the [`Control`] messages a reload sends before a started device's first
//! batch. `app.rs` builds the channels and owns the join handle.

use crate::ops::Live;
use crate::outbox::OutboxBatch;
use crate::pipeline::{ChannelLimits, Processor};
use crate::record::{AlertRecord, Record};
use crate::sources::SourceBatch;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

/// Messages to the processor thread from reloads.
pub(crate) enum Control {
    /// Validation limits of a channel.
    Limits(String, ChannelLimits),
    /// Detection settings of a device.
    Device(String, crate::pipeline::settings::DeviceDetection),
}

/// How often the processor thread applies baseline reset requests and publishes
/// the channels' detection status (when someone read the last one: [`StatusPacer`]).
const HOUSEKEEPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// The channels' detection status is published at least this often even when nobody
/// reads it, so that a first request after a quiet spell sees status this old at most.
const STATUS_REFRESH_UNREAD: std::time::Duration = std::time::Duration::from_secs(60);

/// When the processor thread builds the channels' detection status again. Building
/// it allocates a few strings and vectors per channel: at W500 (15,000 channels),
/// every 2 s, that was ~5 % of the whole daemon's CPU (docs/PERFORMANCE.md). So it is
/// built again only once someone (/metrics, the status page) has read the last one,
/// or after [`STATUS_REFRESH_UNREAD`]: a reader every 15 s gets one build per
/// scrape, as fresh as [`HOUSEKEEPING_INTERVAL`] after the previous scrape; a page
/// that polls every second, one per housekeeping round, as before.
#[derive(Debug, Default)]
struct StatusPacer {
    /// The read count and the time of the last publication (`None`: never).
    last: Option<(u64, Instant)>,
}

impl StatusPacer {
    /// Whether to publish now, given the read count so far; if so, the publication
    /// is noted.
    fn due(&mut self, reads: u64, now: Instant) -> bool {
        let due = match self.last {
            None => true,
            Some((seen, at)) => reads != seen || now.duration_since(at) >= STATUS_REFRESH_UNREAD,
        };
        if due {
            self.last = Some((reads, now));
        }
        due
    }
}

/// The processing stage on a blocking thread (FFT and inference are CPU work):
/// batches in, records out, in order. Ends when every source sender is gone.
pub(crate) fn spawn_processor(
    mut processor: Processor,
    mut rx: mpsc::Receiver<SourceBatch>,
    control: std::sync::mpsc::Receiver<Control>,
    tx: mpsc::Sender<OutboxBatch>,
    alerts: broadcast::Sender<AlertRecord>,
    live: Arc<Live>,
    shutdown: &crate::shutdown::Shutdown,
) -> JoinHandle<(Processor, u64)> {
    shutdown.spawn_blocking(move || {
        let mut batches = 0u64;
        let mut last_housekeeping = Instant::now() - HOUSEKEEPING_INTERVAL;
        let mut trimmer = super::trim::Trimmer::default();
        let mut status = StatusPacer::default();
        while let Some(batch) = rx.blocking_recv() {
            // Channels of devices a reload started, before their first batch.
            while let Ok(c) = control.try_recv() {
                match c {
                    Control::Limits(sensor_id, limits) => {
                        processor.register_channel(&sensor_id, limits)
                    }
                    Control::Device(id, d) => processor.configure_device(&id, d),
                }
            }
            // `edgegw baseline reset` run next to the daemon, and the channel status
            // for /metrics: a few seconds of delay are fine for both.
            if last_housekeeping.elapsed() >= HOUSEKEEPING_INTERVAL {
                last_housekeeping = Instant::now();
                processor.apply_reset_requests();
                // Commissioning samples freed by newly learned baselines go back to
                // the kernel (`trim.rs`).
                trimmer.after(processor.counters());
                live.board.persist_if_changed();
                if status.due(live.pipeline.channel_reads(), Instant::now()) {
                    live.pipeline
                        .publish_channels(processor.channel_status(crate::record::now_us()));
                }
            }
            batches += 1;
            let started = Instant::now();
            // A source that redelivers: its summaries tell late from redelivered.
            processor.set_redelivering(batch.ack.is_some());
            let records = processor.process(&batch.readings);
            live.pipeline
                .record(processor.counters(), started.elapsed());
            for r in &records {
                if let Record::Alert(a) = r {
                    let _ = alerts.send(a.clone());
                }
            }
            live.board
                .observe(&batch.readings, &records, |s| processor.scalar_trend(s));
            // The ack travels with the records made from its batch (or alone, when
            // the batch only fed a window): the writer fires it after the commit.
            let acks: Vec<_> = batch.ack.into_iter().collect();
            // The open summary buckets go with the records, in one transaction; with
            // an ack, also the waveform samples still short of a window, so that
            // what the source is told is stored is stored (ARCHITECTURE.md).
            let state = processor.take_state(!acks.is_empty());
            if records.is_empty() && acks.is_empty() && state.is_empty() {
                continue;
            }
            if tx
                .blocking_send(OutboxBatch {
                    records,
                    acks,
                    state,
                })
                .is_err()
            {
                tracing::error!("The outbox writer stopped early; processing ends");
                break;
            }
        }
        live.board.persist_if_changed();
        let rest = processor.flush();
        if !rest.is_empty() {
            let _ = tx.blocking_send(OutboxBatch {
                records: rest,
                acks: Vec::new(),
                state: Vec::new(),
            });
        }
        (processor, batches)
    })
}

/// Validation limits of every channel of a group's devices, from their profiles.
pub(crate) fn channel_limits(spec: &crate::ops::reload::GroupSpec) -> Vec<(String, ChannelLimits)> {
    let mut out = Vec::new();
    for m in &spec.members {
        for (name, ch) in &m.profile.profile.channels {
            out.push((format!("{}.{}", m.config.id, name), ch.limits()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn channel_status_is_built_again_only_once_read_or_a_minute_on() {
        let mut p = StatusPacer::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // The first round publishes, whatever the count.
        assert!(p.due(0, at(0)));
        // Nobody read it: not again for a minute.
        assert!(!p.due(0, at(2)));
        assert!(!p.due(0, at(58)));
        assert!(p.due(0, at(60)));
        // Read once (a scrape): the next round publishes, then waits for the next read.
        assert!(p.due(1, at(62)));
        assert!(!p.due(1, at(64)));
        assert!(!p.due(1, at(76)));
        assert!(p.due(2, at(78)));
        // Read between every round (a page polling each second): every round.
        for (i, s) in (80..90).step_by(2).enumerate() {
            assert!(p.due(3 + i as u64, at(s)), "round at {s} s");
        }
    }
}
