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
/// the channels' detection status.
const HOUSEKEEPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

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
                live.pipeline
                    .publish_channels(processor.channel_status(crate::record::now_us()));
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
