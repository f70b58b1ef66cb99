//! The daemon: builds every stage from a loaded config, joins them with bounded
//! channels, and shuts them down in order.
//!
//! ```text
//! sources ──SourceBatch──▶ processor ──OutboxBatch──▶ writer ──▶ SQLite
//!  (tasks, one child       (blocking thread:           (commits, then fires
//!   token per group)        validate, features,         source acks, wakes
//!                           detect, summarise)          forwarders)
//! ```
//!
//! Every task runs under one [`Shutdown`]: one root token and one completion
//! signal. Shutdown (SIGTERM, SIGINT) cancels the root: the sources, the model sync
//! and the watchdog probes stop; with their senders gone the processor drains its
//! channel, flushes partial summaries and ends; then the writer commits what it holds
//! and ends. Only then is the drained signal given, on which the forwarders and the
//! status listener stop. Nothing in flight is lost, and nothing is cancelled in the
//! middle of commit -> ack.
//!
//! Reload (SIGHUP): sources run as *groups* (one task per TCP or serial device, per
//! RTU bus, per MQTT broker), each under its own child cancellation token; a reload
//! stops and restarts only the groups whose devices, profiles, port or broker changed
//! ([`crate::ops::reload`]). The processor, the writer, the outbox and the upstream
//! cursors keep running through it.
//!
//! [`run`] wires operations around [`Gateway`]: systemd notify, the watchdog, reload,
//! the status listener; their side lives in `crate::ops::daemon`. The processor stage
//! on its blocking thread is `crate::pipeline::stage`, the pipeline's state store in
//! the outbox is `crate::outbox::OutboxState`.

use crate::config::{GatewayConfig, Loaded};
use crate::inference::{self, ModelRegistry, SharedRegistry};
use crate::ops::reload::{self, GroupKey};
use crate::ops::Live;
use crate::outbox::{run_writer, Outbox, OutboxBatch, OutboxHandle, OutboxState, WriterReport};
use crate::pipeline::stage::{channel_limits, spawn_processor, Control};
use crate::pipeline::Processor;
use crate::record::AlertRecord;
use crate::shutdown::Shutdown;
use crate::sources::{DeviceStats, SourceBatch};
use anyhow::Context;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, Notify};
use tokio::task::JoinHandle;

// `edgegw run` and its signal loop live with the rest of the operations side;
// `outbox_path` with the outbox.
mod groups;
mod reloading;
mod stop;

pub use crate::ops::daemon::{run, wait_for_stop_signal};
pub use crate::outbox::outbox_path;
use groups::RunningGroup;
pub use reloading::ReloadReport;
pub use stop::ShutdownReport;

/// Capacity of the channel from sources to the processor, in batches (a batch is one
/// poll of one device). Bounded: a slow pipeline pushes back on the sources.
const SOURCE_CHANNEL: usize = 1024;
/// Capacity of the channel from the processor to the outbox writer, in batches.
const OUTBOX_CHANNEL: usize = 256;
/// How long sources get to stop after they were cancelled.
const SOURCE_STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// After the forwarders have finished (each stops between batches, so its batch
/// timeout bounds the wait), how long the remaining tasks (the status listener)
/// get before the gateway reports them.
const DRAINED_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Channel limits for the processor thread, sent when a reload starts a device.
type ChannelControl = std::sync::mpsc::Sender<Control>;

/// A running gateway.
pub struct Gateway {
    /// The root token and completion signal of every task below (and of the ops
    /// side's): each source group runs under a child token of it.
    shutdown: Shutdown,
    /// The running source tasks, by group.
    groups: BTreeMap<GroupKey, RunningGroup>,
    source_tx: Option<mpsc::Sender<SourceBatch>>,
    /// Registers the channels of devices a reload starts before their first batch.
    control: ChannelControl,
    processor: JoinHandle<(Processor, u64)>,
    writer: JoinHandle<WriterReport>,
    /// Upstream forwarders; stopped after the writer has drained.
    forwarders: Option<crate::upstream::Forwarders>,
    outbox: OutboxHandle,
    alerts: broadcast::Sender<AlertRecord>,
    /// The config the gateway started with: sections that only a restart applies are
    /// compared against it at every reload.
    config: GatewayConfig,
    live: Arc<Live>,
    /// Per-device counters, by device id (kept across reloads for unchanged ids).
    pub devices: BTreeMap<String, Arc<DeviceStats>>,
    pub registry: SharedRegistry,
    /// The S3 model sync task, when `[models.s3]` is configured.
    pub models: Option<inference::sync::ModelSyncHandle>,
}

impl Gateway {
    /// Opens the outbox, builds the stages and starts a source for every runnable
    /// device.
    pub async fn start(loaded: &Loaded) -> anyhow::Result<Gateway> {
        let config = &loaded.config;
        let shutdown = Shutdown::new();
        let path = outbox_path(config);
        // The same list the forwarders come from: one cursor per forwarder.
        let upstreams = crate::upstream::registry::enabled(config);
        let names: Vec<&'static str> = upstreams.iter().map(|u| u.name).collect();
        let settings = config.outbox.clone();
        let gateway_id = config.gateway.id.clone();
        let outbox = tokio::task::spawn_blocking(move || {
            Outbox::open(&path, &settings, &gateway_id, &names)
                .with_context(|| format!("cannot open the outbox {}", path.display()))
        })
        .await??;
        let outbox = OutboxHandle::new(outbox);

        let registry = inference::shared(
            ModelRegistry::with_defaults().context("cannot load the built-in model bundles")?,
        );
        // Models: cached bundles replace the defaults before the first reading (no
        // network needed); S3 sync then runs in its own task when configured.
        let models = inference::sync::start(config, &registry, &shutdown).await;
        let mut processor = Processor::new(
            &config.pipeline,
            registry.clone(),
            Box::new(OutboxState(outbox.clone())),
        );
        let live = Arc::new(Live::new(registry.clone()));
        live.board.attach(outbox.clone());
        if let (Some(m), Ok(mut slot)) = (&models, live.model_sync.write()) {
            *slot = Some(m.shared_counters());
        }

        let groups = reload::groups(loaded);
        let mut devices = BTreeMap::new();
        for spec in groups.values() {
            for m in &spec.members {
                devices.insert(m.config.id.clone(), Arc::new(DeviceStats::default()));
            }
            for (sensor_id, limits) in channel_limits(spec) {
                processor.register_channel(&sensor_id, limits);
            }
            for m in &spec.members {
                processor
                    .configure_device(&m.config.id, m.config.detection_settings(&config.pipeline));
            }
        }
        if let Ok(mut d) = live.devices.write() {
            d.clone_from(&devices);
        }

        let (source_tx, source_rx) = mpsc::channel::<SourceBatch>(SOURCE_CHANNEL);
        let (outbox_tx, outbox_rx) = mpsc::channel::<OutboxBatch>(OUTBOX_CHANNEL);
        let (control, control_rx) = std::sync::mpsc::channel();
        let (alerts, _) = broadcast::channel(256);
        let notify = Arc::new(Notify::new());
        let writer = shutdown.spawn(run_writer(
            outbox.clone(),
            outbox_rx,
            config.outbox.clone(),
            notify.clone(),
        ));
        // Upstream forwarders: one task per enabled upstream, stopped when drained.
        let forwarders = crate::upstream::spawn_forwarders(upstreams, &outbox, &notify, &shutdown);
        if let Ok(mut u) = live.upstreams.write() {
            u.clone_from(&forwarders.metrics);
        }
        let processor = spawn_processor(
            processor,
            source_rx,
            control_rx,
            outbox_tx,
            alerts.clone(),
            live.clone(),
            &shutdown,
        );

        let mut gateway = Gateway {
            shutdown,
            groups: BTreeMap::new(),
            source_tx: Some(source_tx),
            control,
            processor,
            writer,
            forwarders: Some(forwarders),
            outbox,
            alerts,
            config: config.clone(),
            live,
            devices,
            registry,
            models,
        };
        for (key, spec) in groups {
            let running = gateway.spawn_group(spec);
            gateway.groups.insert(key, running);
        }
        gateway.live.ready.store(true, Relaxed);
        tracing::info!(
            gateway = %config.gateway.id,
            devices = gateway.devices.len(),
            sources = gateway.groups.len(),
            outbox = %outbox_path(config).display(),
            "Gateway started"
        );
        Ok(gateway)
    }

    /// A sender into the pipeline, as the sources have (the demo and tests use it).
    pub fn source_sender(&self) -> Option<mpsc::Sender<SourceBatch>> {
        self.source_tx.clone()
    }

    /// Alerts as the processor emits them (before they are committed).
    pub fn subscribe_alerts(&self) -> broadcast::Receiver<AlertRecord> {
        self.alerts.subscribe()
    }

    pub fn outbox(&self) -> &OutboxHandle {
        &self.outbox
    }

    /// Per-upstream delivery counters (sent, acked, retried, dead-lettered, lag).
    pub fn upstream_metrics(
        &self,
    ) -> BTreeMap<&'static str, Arc<crate::upstream::UpstreamMetrics>> {
        self.forwarders
            .as_ref()
            .map(|f| f.metrics.clone())
            .unwrap_or_default()
    }

    /// How many source tasks (groups) run.
    pub fn source_groups(&self) -> usize {
        self.groups.len()
    }

    /// The root token and completion signal: the ops side runs its tasks under it
    /// (the probes stop with the sources, the status listener when drained).
    pub fn tasks(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Live counters and state for the status listener and the watchdog.
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }
}
