//! The daemon: builds every stage from a loaded config, joins them with bounded
//! channels, and shuts them down in order.
//!
//! ```text
//! sources ──SourceBatch──▶ processor ──OutboxBatch──▶ writer ──▶ SQLite
//!  (tasks, one root        (blocking thread:           (commits, then fires
//!   cancellation)           validate, features,         source acks, wakes
//!                           detect, summarise)          forwarders)
//! ```
//!
//! Shutdown (SIGTERM, SIGINT): cancel the sources; when they have returned, their
//! senders are gone, so the processor drains its channel, flushes partial summaries
//! and ends; then the writer commits what it holds and ends. Nothing in flight is
//! lost, and nothing is cancelled in the middle of commit -> ack.

use crate::config::{DeviceConfig, GatewayConfig, Loaded, SerialPortConfig, Transport};
use crate::inference::{self, ModelRegistry, SharedRegistry};
use crate::outbox::{run_writer, Outbox, OutboxBatch, OutboxHandle, WriterReport};
use crate::pipeline::{ChannelLimits, Processor, ProcessorCounters, StateStore};
use crate::record::{AlertRecord, Record};
use crate::sources::{DeviceSpec, DeviceStats, SourceBatch};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Capacity of the channel from sources to the processor, in batches (a batch is one
/// poll of one device). Bounded: a slow pipeline pushes back on the sources.
const SOURCE_CHANNEL: usize = 1024;
/// Capacity of the channel from the processor to the outbox writer, in batches.
const OUTBOX_CHANNEL: usize = 256;
/// How long sources get to stop after they were cancelled.
const SOURCE_STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// A running gateway.
pub struct Gateway {
    sources_cancel: CancellationToken,
    sources: TaskTracker,
    source_tx: Option<mpsc::Sender<SourceBatch>>,
    processor: JoinHandle<(Processor, u64)>,
    writer: JoinHandle<WriterReport>,
    /// Upstream forwarders; stopped after the writer has drained.
    forwarders: Option<crate::upstream::Forwarders>,
    outbox: OutboxHandle,
    alerts: broadcast::Sender<AlertRecord>,
    /// Per-device counters, by device id.
    pub devices: BTreeMap<String, Arc<DeviceStats>>,
    pub registry: SharedRegistry,
    /// The S3 model sync task, when `[models.s3]` is configured.
    pub models: Option<inference::sync::ModelSyncHandle>,
}

/// What happened, for the log line at exit and the demo's report.
#[derive(Debug, Clone, Default)]
pub struct ShutdownReport {
    pub processor: ProcessorCounters,
    pub batches: u64,
    pub writer: WriterReport,
    /// Sources that did not stop within the timeout (aborted).
    pub sources_aborted: bool,
}

/// Where the outbox file goes: `outbox.path`, else `<state_dir>/outbox.db`.
pub fn outbox_path(config: &GatewayConfig) -> PathBuf {
    config
        .outbox
        .path
        .clone()
        .unwrap_or_else(|| config.gateway.state_dir.join("outbox.db"))
}

/// Names of the enabled upstreams, each of which gets a cursor in the outbox.
pub fn upstream_names(config: &GatewayConfig) -> Vec<&'static str> {
    let u = &config.upstreams;
    let mut names = Vec::new();
    if u.timescale.as_ref().is_some_and(|x| x.enabled) {
        names.push("timescale");
    }
    if u.redis.as_ref().is_some_and(|x| x.enabled) {
        names.push("redis");
    }
    if u.http.as_ref().is_some_and(|x| x.enabled) {
        names.push("http");
    }
    if u.mqtt.as_ref().is_some_and(|x| x.enabled) {
        names.push("mqtt");
    }
    names
}

/// The pipeline's persistent state (fallback baselines, open summary buckets) lives
/// in the outbox database, so it survives restarts with the data it belongs to.
struct OutboxState(OutboxHandle);

impl StateStore for OutboxState {
    fn get(&mut self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.0.blocking(|o| o.get_state(key))?)
    }

    fn put(&mut self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        Ok(self.0.blocking(|o| o.put_state(key, value))?)
    }
}

impl Gateway {
    /// Opens the outbox, builds the stages and starts a source for every runnable
    /// device.
    pub async fn start(loaded: &Loaded) -> anyhow::Result<Gateway> {
        let config = &loaded.config;
        let path = outbox_path(config);
        let names = upstream_names(config);
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
        let models = inference::sync::start(config, &registry).await;
        let mut processor = Processor::new(
            &config.pipeline,
            registry.clone(),
            Box::new(OutboxState(outbox.clone())),
        );

        // Specs for every runnable device, and validation limits from the profiles.
        let mut specs = Vec::new();
        let mut devices = BTreeMap::new();
        for d in &loaded.runnable {
            let Some(profile) = loaded.profiles.get(&profile_key(d)) else {
                continue;
            };
            let stats = Arc::new(DeviceStats::default());
            devices.insert(d.id.clone(), stats.clone());
            for (name, ch) in &profile.profile.channels {
                processor.register_channel(
                    &format!("{}.{}", d.id, name),
                    ChannelLimits {
                        min: ch.min,
                        max: ch.max,
                        max_rate_per_s: ch.max_rate_per_s,
                        stuck_after: ch.stuck_after,
                        stale_after_ms: None,
                    },
                );
            }
            specs.push(DeviceSpec {
                config: d.clone(),
                profile: Arc::new(profile.clone()),
                stats,
            });
        }

        let (source_tx, source_rx) = mpsc::channel::<SourceBatch>(SOURCE_CHANNEL);
        let (outbox_tx, outbox_rx) = mpsc::channel::<OutboxBatch>(OUTBOX_CHANNEL);
        let (alerts, _) = broadcast::channel(256);
        let notify = Arc::new(Notify::new());
        let writer = tokio::spawn(run_writer(
            outbox.clone(),
            outbox_rx,
            config.outbox.clone(),
            notify.clone(),
        ));
        // Upstream forwarders: one task per enabled upstream, stopped last.
        let forwarders = crate::upstream::spawn_forwarders(config, &outbox, &notify);
        let processor = spawn_processor(processor, source_rx, outbox_tx, alerts.clone());

        let sources_cancel = CancellationToken::new();
        let sources = TaskTracker::new();
        spawn_sources(config, specs, &source_tx, &sources_cancel, &sources);
        sources.close();

        tracing::info!(
            gateway = %config.gateway.id,
            devices = devices.len(),
            outbox = %outbox_path(config).display(),
            "Gateway started"
        );
        Ok(Gateway {
            sources_cancel,
            sources,
            source_tx: Some(source_tx),
            processor,
            writer,
            forwarders: Some(forwarders),
            outbox,
            alerts,
            devices,
            registry,
            models,
        })
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

    /// Orderly shutdown: sources first, then everything in flight into the outbox.
    pub async fn shutdown(mut self) -> anyhow::Result<ShutdownReport> {
        if let Some(models) = self.models.take() {
            models.stop().await;
        }
        self.sources_cancel.cancel();
        let aborted = tokio::time::timeout(SOURCE_STOP_TIMEOUT, self.sources.wait())
            .await
            .is_err();
        if aborted {
            tracing::warn!("Some sources did not stop in time; their last poll is lost");
        }
        // With the sources gone, this was the last sender: the processor drains and ends.
        self.source_tx.take();
        let (processor, batches) = self.processor.await.context("the processor task failed")?;
        let writer = self.writer.await.context("the outbox writer task failed")?;
        tracing::info!(
            committed = writer.records_committed,
            abandoned = writer.records_abandoned,
            "Pipeline drained into the outbox"
        );
        // Forwarders stop last, between batches (never between a write and its ack).
        if let Some(f) = self.forwarders.take() {
            f.stop().await;
        }
        Ok(ShutdownReport {
            processor: *processor.counters(),
            batches,
            writer,
            sources_aborted: aborted,
        })
    }
}

fn profile_key(d: &DeviceConfig) -> String {
    crate::config::profile_name(&d.profile)
}

/// The processing stage on a blocking thread (FFT and inference are CPU work):
/// batches in, records out, in order. Ends when every source sender is gone.
fn spawn_processor(
    mut processor: Processor,
    mut rx: mpsc::Receiver<SourceBatch>,
    tx: mpsc::Sender<OutboxBatch>,
    alerts: broadcast::Sender<AlertRecord>,
) -> JoinHandle<(Processor, u64)> {
    tokio::task::spawn_blocking(move || {
        let mut batches = 0u64;
        while let Some(batch) = rx.blocking_recv() {
            batches += 1;
            let records = processor.process(&batch.readings);
            for r in &records {
                if let Record::Alert(a) = r {
                    let _ = alerts.send(a.clone());
                }
            }
            // The ack travels with the records made from its batch (or alone, when
            // the batch only fed a window): the writer fires it after the commit.
            let acks: Vec<_> = batch.ack.into_iter().collect();
            if records.is_empty() && acks.is_empty() {
                continue;
            }
            if tx.blocking_send(OutboxBatch { records, acks }).is_err() {
                tracing::error!("The outbox writer stopped early; processing ends");
                break;
            }
        }
        let rest = processor.flush();
        if !rest.is_empty() {
            let _ = tx.blocking_send(OutboxBatch {
                records: rest,
                acks: Vec::new(),
            });
        }
        (processor, batches)
    })
}

/// One task per TCP device, per RTU bus, per serial device and per MQTT broker.
fn spawn_sources(
    config: &GatewayConfig,
    specs: Vec<DeviceSpec>,
    tx: &mpsc::Sender<SourceBatch>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) {
    let mut rtu: BTreeMap<String, Vec<DeviceSpec>> = BTreeMap::new();
    let mut mqtt: BTreeMap<String, Vec<DeviceSpec>> = BTreeMap::new();
    for spec in specs {
        match spec.config.transport() {
            Some(Transport::ModbusTcp(_)) => {
                let id = spec.config.id.clone();
                let run = crate::sources::modbus::run_tcp(spec, tx.clone(), cancel.child_token());
                tracker.spawn(async move {
                    if let Err(e) = run.await {
                        tracing::error!(device = %id, "Modbus TCP source stopped: {e}");
                    }
                });
            }
            Some(Transport::ModbusRtu(t)) => {
                rtu.entry(t.port.clone()).or_default().push(spec);
            }
            Some(Transport::Serial(t)) => {
                let Some(port) = config.serial_ports.get(&t.port) else {
                    continue;
                };
                tracker.spawn(crate::sources::serial::run_serial(
                    spec.clone(),
                    t.port.clone(),
                    port.clone(),
                    tx.clone(),
                    cancel.child_token(),
                ));
            }
            Some(Transport::Mqtt(t)) => {
                mqtt.entry(t.broker.clone()).or_default().push(spec);
            }
            None => {}
        }
    }
    for (name, devices) in rtu {
        let Some(port): Option<&SerialPortConfig> = config.serial_ports.get(&name) else {
            continue;
        };
        let run = crate::sources::modbus::run_rtu_bus(
            name.clone(),
            port.clone(),
            devices,
            tx.clone(),
            cancel.child_token(),
        );
        tracker.spawn(async move {
            if let Err(e) = run.await {
                tracing::error!(bus = %name, "Modbus RTU source stopped: {e}");
            }
        });
    }
    for (name, devices) in mqtt {
        let Some(broker) = config.mqtt_brokers.get(&name) else {
            continue;
        };
        tracker.spawn(crate::sources::mqtt::run_mqtt(
            name.clone(),
            broker.clone(),
            config.gateway.id.clone(),
            devices,
            tx.clone(),
            cancel.child_token(),
        ));
    }
}

/// Waits for SIGTERM or SIGINT (for tools that run until stopped).
pub async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `edgegw check --explain`: the Modbus read plan of every runnable device.
pub fn explain_plans(loaded: &Loaded) -> String {
    let mut out = String::new();
    for d in &loaded.runnable {
        if !matches!(
            d.transport(),
            Some(Transport::ModbusTcp(_) | Transport::ModbusRtu(_))
        ) {
            continue;
        }
        let Some(p) = loaded.profiles.get(&profile_key(d)) else {
            continue;
        };
        out.push_str(&format!("\ndevice {} (profile {}):\n", d.id, p.name));
        match crate::sources::modbus::plan_device(d, &p.profile) {
            Ok(plan) => out.push_str(&crate::sources::modbus::explain(&plan)),
            Err(e) => out.push_str(&format!("  cannot plan: {e}\n")),
        }
    }
    out
}

/// `edgegw run`: start, wait for a signal, shut down in order.
pub async fn run(loaded: Loaded) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let gateway = Gateway::start(&loaded).await?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => {
                tracing::warn!("SIGHUP: live reload is not implemented yet; restart the service to apply config changes");
            }
        }
    }
    let report = gateway.shutdown().await?;
    tracing::info!(
        batches = report.batches,
        readings = report.processor.readings,
        windows = report.processor.windows,
        alerts = report.processor.alerts,
        "Stopped"
    );
    Ok(())
}
