//! Operations: what systemd and the people running a gateway see of it.
//!
//! - [`http`]: the status and metrics listener (`/healthz`, `/readyz`, `/metrics`).
//! - [`metrics`]: the registry and the Prometheus text writer; [`collect`] turns the
//!   live counters of sources, pipeline, models and outbox into metric families.
//! - `daemon`: the ops side of the running gateway (reload handling, watchdog ticks,
//!   reload and watchdog metrics, the status listener's binding), driven by `app::run`.
//! - [`board`] and [`page`]: the local status page (live values, alert episodes,
//!   commissioning, outbox, models, device errors) with its JSON and event stream.
//! - [`notify`]: `sd_notify` (READY, RELOADING, STOPPING, WATCHDOG, STATUS).
//! - [`reload`]: which source tasks a new config restarts.
//! - [`watchdog`]: liveness probes and when to ping the systemd watchdog.
//!
//! [`Live`] is the seam: the gateway (`app.rs`) updates it, the listener reads it.
//! Nothing here touches the data path: ops code reads counters, it never holds up a
//! batch and never writes to the outbox.

pub mod baseline;
pub mod board;
pub mod collect;
pub(crate) mod daemon;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod page;
pub mod plot;
pub mod reload;
pub mod watchdog;

use crate::inference::SharedRegistry;
use crate::pipeline::ProcessorCounters;
use crate::sources::DeviceStats;
use metrics::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Live state the gateway shares with the status listener and the watchdog.
pub struct Live {
    /// Per-device counters by device id; entries come and go with reloads, a device
    /// restarted by a reload keeps its counters.
    pub devices: RwLock<BTreeMap<String, Arc<DeviceStats>>>,
    /// Whether each source task (by group name, `modbus_tcp:pump1`) is running.
    pub sources: RwLock<BTreeMap<String, Arc<AtomicBool>>>,
    pub pipeline: PipelineStats,
    pub registry: SharedRegistry,
    pub progress: Progress,
    /// Set once config, outbox and sources are up; cleared when stopping.
    pub ready: AtomicBool,
    /// Delivery counters of each running upstream forwarder, by upstream name.
    pub upstreams: RwLock<BTreeMap<&'static str, Arc<crate::upstream::UpstreamMetrics>>>,
    /// Counters of the S3 model sync task, when `[models.s3]` is configured.
    pub model_sync: RwLock<Option<Arc<crate::inference::sync::SyncCounters>>>,
    /// MQTT payload errors per topic, by broker name (kept across reloads, like the
    /// device counters).
    pub mqtt_topic_errors: RwLock<BTreeMap<String, Arc<crate::sources::mqtt::TopicErrors>>>,
    /// Live values and alert episodes for the status page.
    pub board: board::Board,
}

impl Live {
    pub fn new(registry: SharedRegistry) -> Live {
        Live {
            devices: RwLock::new(BTreeMap::new()),
            sources: RwLock::new(BTreeMap::new()),
            pipeline: PipelineStats::default(),
            registry,
            progress: Progress::new(),
            ready: AtomicBool::new(false),
            mqtt_topic_errors: RwLock::new(BTreeMap::new()),
            upstreams: RwLock::new(BTreeMap::new()),
            model_sync: RwLock::new(None),
            board: board::Board::new(),
        }
    }

    /// Source groups whose task has ended (a crashed or given-up source).
    pub fn stopped_sources(&self) -> Vec<String> {
        self.sources
            .read()
            .map(|m| {
                m.iter()
                    .filter(|(_, alive)| !alive.load(Relaxed))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Upper bounds (seconds) of the processing-time histograms.
pub const PROCESSING_BUCKETS_S: [f64; 10] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

/// The processor's counters as of its last batch (it runs on a blocking thread and
/// owns the originals), plus its own timings.
#[derive(Default)]
pub struct PipelineStats {
    pub counters: Mutex<ProcessorCounters>,
    /// Batches taken from the sources channel, liveness probes included. The watchdog
    /// treats a moving count as progress.
    pub batches: AtomicU64,
    /// Time to process one batch (validate, features, detect, summarise).
    pub batch_seconds: Histogram,
    /// Time to process the batches in which a model scored at least one window or
    /// reading: an upper bound of inference latency (tract is the bulk of it).
    pub inference_batch_seconds: Histogram,
    /// What detection does on each channel (detector, baseline learning, trend),
    /// published by the processor thread every few seconds while it is read, at
    /// least once a minute otherwise (`pipeline::stage`).
    /// Shared with the readers: a scrape or the page reads it without copying 15,000
    /// entries and their strings.
    channels: Mutex<Arc<Vec<crate::pipeline::processor::ChannelStatus>>>,
    /// Reads of `channels` so far: the processor publishes again once it moved.
    channel_reads: AtomicU64,
}

impl PipelineStats {
    /// The published channel status (shared, not copied), counted as read.
    pub fn channels(&self) -> Arc<Vec<crate::pipeline::processor::ChannelStatus>> {
        self.channel_reads.fetch_add(1, Relaxed);
        self.channels.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// How often the channel status was read so far.
    pub fn channel_reads(&self) -> u64 {
        self.channel_reads.load(Relaxed)
    }

    /// Replaces the published channel status.
    pub fn publish_channels(&self, status: Vec<crate::pipeline::processor::ChannelStatus>) {
        if let Ok(mut c) = self.channels.lock() {
            *c = Arc::new(status);
        }
    }

    /// Called by the processor thread after each batch.
    pub fn record(&self, counters: &ProcessorCounters, elapsed: Duration) {
        let model_ran = match self.counters.lock() {
            Ok(mut c) => {
                let ran = counters.scored_by_model > c.scored_by_model;
                *c = *counters;
                ran
            }
            Err(_) => false,
        };
        self.batches.fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        self.batch_seconds.observe(secs);
        if model_ran {
            self.inference_batch_seconds.observe(secs);
        }
    }
}

/// End-to-end progress of the pipeline, measured by liveness probes: an empty batch
/// with an ack goes through the sources channel, the processor, the outbox channel
/// and the writer, which fires the ack after everything queued before it committed.
pub struct Progress {
    start: Instant,
    /// Milliseconds since `start` at which the last probe came back; -1 = never.
    last_ok_ms: AtomicI64,
    /// Round trip of the last probe.
    pub last_round_trip_us: AtomicU64,
    pub probes_ok: AtomicU64,
    pub probes_failed: AtomicU64,
    /// Added to the elapsed time (tests only move it: a stale pipeline without waiting).
    test_offset_ms: AtomicU64,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            start: Instant::now(),
            last_ok_ms: AtomicI64::new(-1),
            last_round_trip_us: AtomicU64::new(0),
            probes_ok: AtomicU64::new(0),
            probes_failed: AtomicU64::new(0),
            test_offset_ms: AtomicU64::new(0),
        }
    }

    pub fn probe_ok(&self, round_trip: Duration) {
        let ms = self.start.elapsed().as_millis() as i64;
        self.last_ok_ms.store(ms, Relaxed);
        self.last_round_trip_us
            .store(round_trip.as_micros() as u64, Relaxed);
        self.probes_ok.fetch_add(1, Relaxed);
    }

    /// Time since the last probe came back (since start when none has yet).
    pub fn since_last_ok(&self) -> Duration {
        let last = self.last_ok_ms.load(Relaxed).max(0) as u64;
        let now = self.start.elapsed().as_millis() as u64 + self.test_offset_ms.load(Relaxed);
        Duration::from_millis(now.saturating_sub(last))
    }

    /// Tests: pretend the last probe came back `ago` earlier than it did.
    #[cfg(test)]
    pub(crate) fn age_by(&self, ago: Duration) {
        self.test_offset_ms
            .fetch_add(ago.as_millis() as u64, Relaxed);
    }
}
