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
//! Shutdown (SIGTERM, SIGINT): cancel the sources; when they have returned, their
//! senders are gone, so the processor drains its channel, flushes partial summaries
//! and ends; then the writer commits what it holds and ends. Nothing in flight is
//! lost, and nothing is cancelled in the middle of commit -> ack.
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
use crate::ops::daemon::{bind_status_listener, Ops};
use crate::ops::reload::{self, GroupKey, GroupSpec, ReloadPlan};
use crate::ops::watchdog::Watchdog;
use crate::ops::Live;
use crate::outbox::{run_writer, Outbox, OutboxBatch, OutboxHandle, OutboxState, WriterReport};
use crate::pipeline::stage::{spawn_processor, Control};
use crate::pipeline::{ChannelLimits, Processor, ProcessorCounters};
use crate::record::AlertRecord;
use crate::sources::{DeviceSpec, DeviceStats, SourceBatch};
use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
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

/// Channel limits for the processor thread, sent when a reload starts a device.
type ChannelControl = std::sync::mpsc::Sender<Control>;

/// A running gateway.
pub struct Gateway {
    /// Parent of every source group's token: cancelling it stops all sources.
    sources_cancel: CancellationToken,
    /// Every source task ever started (closed at shutdown, so `wait` can end).
    sources: TaskTracker,
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

/// One source task and what it was built from.
struct RunningGroup {
    spec: GroupSpec,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
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

/// What a reload did.
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    pub plan: ReloadPlan,
    /// Changed sections that apply only at the next restart.
    pub restart_needed: Vec<&'static str>,
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

/// Validation limits of every channel of a group's devices, from their profiles.
fn channel_limits(spec: &GroupSpec) -> Vec<(String, ChannelLimits)> {
    let mut out = Vec::new();
    for m in &spec.members {
        for (name, ch) in &m.profile.profile.channels {
            out.push((
                format!("{}.{}", m.config.id, name),
                ChannelLimits {
                    min: ch.min,
                    max: ch.max,
                    max_rate_per_s: ch.max_rate_per_s,
                    stuck_after: ch.stuck_after,
                    stale_after_ms: None,
                },
            ));
        }
    }
    out
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
        let live = Arc::new(Live::new(registry.clone()));
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
        let writer = tokio::spawn(run_writer(
            outbox.clone(),
            outbox_rx,
            config.outbox.clone(),
            notify.clone(),
        ));
        // Upstream forwarders: one task per enabled upstream, stopped last.
        let forwarders = crate::upstream::spawn_forwarders(config, &outbox, &notify);
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
        );

        let mut gateway = Gateway {
            sources_cancel: CancellationToken::new(),
            sources: TaskTracker::new(),
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

    /// Live counters and state for the status listener and the watchdog.
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// Applies a new, valid config: stops the source groups that were removed or
    /// changed, starts the changed and added ones. Everything else keeps running.
    pub async fn reload(&mut self, new: &Loaded) -> ReloadReport {
        let mut new_groups = reload::groups(new);
        // The gateway id is restart-only; keep the running one in every group.
        for g in new_groups.values_mut() {
            g.gateway_id.clone_from(&self.config.gateway.id);
        }
        let old_groups: BTreeMap<GroupKey, GroupSpec> = self
            .groups
            .iter()
            .map(|(k, g)| (k.clone(), g.spec.clone()))
            .collect();
        let plan = reload::plan(&old_groups, &new_groups);
        let restart_needed = reload::restart_only_changes(&self.config, &new.config);

        for key in &plan.stop {
            if let Some(g) = self.groups.remove(key) {
                stop_group(key, g).await;
            }
            if let Ok(mut s) = self.live.sources.write() {
                s.remove(&key.to_string());
            }
        }
        // Counters survive a restart of their device; removed devices disappear.
        let wanted: BTreeSet<&String> = new_groups
            .values()
            .flat_map(|g| g.members.iter().map(|m| &m.config.id))
            .collect();
        self.devices.retain(|id, _| wanted.contains(id));
        for id in wanted {
            self.devices.entry(id.clone()).or_default();
        }
        if let Ok(mut d) = self.live.devices.write() {
            d.clone_from(&self.devices);
        }
        for key in &plan.start {
            let Some(spec) = new_groups.remove(key) else {
                continue;
            };
            for (sensor_id, limits) in channel_limits(&spec) {
                // Sent before the source starts, so the processor applies the limits
                // before the device's first batch (it drains controls per batch).
                let _ = self.control.send(Control::Limits(sensor_id, limits));
            }
            for m in &spec.members {
                let _ = self.control.send(Control::Device(
                    m.config.id.clone(),
                    m.config.detection_settings(&new.config.pipeline),
                ));
            }
            let running = self.spawn_group(spec);
            self.groups.insert(key.clone(), running);
        }
        ReloadReport {
            plan,
            restart_needed,
        }
    }

    /// Starts the source task of one group under a child token of the root.
    fn spawn_group(&mut self, spec: GroupSpec) -> RunningGroup {
        let cancel = self.sources_cancel.child_token();
        let name = spec.key.to_string();
        let alive = Arc::new(AtomicBool::new(true));
        if let Ok(mut s) = self.live.sources.write() {
            s.insert(name.clone(), alive.clone());
        }
        let Some(tx) = self.source_tx.clone() else {
            // Shutting down: nothing to start.
            alive.store(false, Relaxed);
            return RunningGroup {
                spec,
                cancel,
                handle: tokio::spawn(async {}),
            };
        };
        let devices: Vec<DeviceSpec> = spec
            .members
            .iter()
            .map(|m| DeviceSpec {
                config: m.config.clone(),
                profile: m.profile.clone(),
                stats: self.devices.entry(m.config.id.clone()).or_default().clone(),
            })
            .collect();
        let token = cancel.clone();
        let run: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match &spec.key {
            GroupKey::ModbusTcp(id) => {
                let id = id.clone();
                let mut devices = devices;
                let Some(device) = devices.pop() else {
                    return self.empty_group(spec, cancel, alive);
                };
                Box::pin(async move {
                    if let Err(e) = crate::sources::modbus::run_tcp(device, tx, token).await {
                        tracing::error!(device = %id, "Modbus TCP source stopped: {e}");
                    }
                })
            }
            GroupKey::Serial(_) => {
                let mut devices = devices;
                let (Some(device), Some(port)) = (devices.pop(), spec.port.clone()) else {
                    return self.empty_group(spec, cancel, alive);
                };
                let port_name = device
                    .config
                    .serial
                    .as_ref()
                    .map(|s| s.port.clone())
                    .unwrap_or_default();
                Box::pin(crate::sources::serial::run_serial(
                    device, port_name, port, tx, token,
                ))
            }
            GroupKey::ModbusRtu(bus) => {
                let Some(port) = spec.port.clone() else {
                    return self.empty_group(spec, cancel, alive);
                };
                let bus = bus.clone();
                Box::pin(async move {
                    let run =
                        crate::sources::modbus::run_rtu_bus(bus.clone(), port, devices, tx, token);
                    if let Err(e) = run.await {
                        tracing::error!(bus = %bus, "Modbus RTU source stopped: {e}");
                    }
                })
            }
            GroupKey::Mqtt(broker_name) => {
                let Some(broker) = spec.broker.clone() else {
                    return self.empty_group(spec, cancel, alive);
                };
                Box::pin(crate::sources::mqtt::run_mqtt(
                    broker_name.clone(),
                    broker,
                    spec.gateway_id.clone(),
                    devices,
                    tx,
                    token,
                ))
            }
        };
        let handle = self.sources.spawn(async move {
            run.await;
            alive.store(false, Relaxed);
        });
        RunningGroup {
            spec,
            cancel,
            handle,
        }
    }

    fn empty_group(
        &self,
        spec: GroupSpec,
        cancel: CancellationToken,
        alive: Arc<AtomicBool>,
    ) -> RunningGroup {
        alive.store(false, Relaxed);
        RunningGroup {
            spec,
            cancel,
            handle: tokio::spawn(async {}),
        }
    }

    /// Orderly shutdown: sources first, then everything in flight into the outbox.
    pub async fn shutdown(mut self) -> anyhow::Result<ShutdownReport> {
        self.live.ready.store(false, Relaxed);
        if let Some(models) = self.models.take() {
            models.stop().await;
        }
        self.sources_cancel.cancel();
        self.sources.close();
        let aborted = tokio::time::timeout(SOURCE_STOP_TIMEOUT, self.sources.wait())
            .await
            .is_err();
        if aborted {
            tracing::warn!("Some sources did not stop in time; their last poll is lost");
            for g in self.groups.values() {
                g.handle.abort();
            }
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

/// Cancels one group and waits (bounded) for its task; aborts it after the timeout.
async fn stop_group(key: &GroupKey, mut g: RunningGroup) {
    g.cancel.cancel();
    if tokio::time::timeout(SOURCE_STOP_TIMEOUT, &mut g.handle)
        .await
        .is_err()
    {
        tracing::warn!(source = %key, "Source did not stop in time; aborted it");
        g.handle.abort();
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

// ---------------------------------------------------------------------------------
// Operations wiring: systemd notify, watchdog, reload, status listener, in
// `crate::ops::daemon`. The data path above knows nothing of these; they only read
// `Live` and call `Gateway::reload`.
// ---------------------------------------------------------------------------------

/// `edgegw run`: start, notify systemd, serve status, reload on SIGHUP, ping the
/// watchdog while the pipeline makes progress; on SIGTERM/SIGINT shut down in order.
pub async fn run(loaded: Loaded) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    // The status listener and its token first: a port that is taken or a token that
    // cannot be read stops the start-up here, with an error, before any source,
    // task or thread exists that would have to be stopped again.
    let listener = bind_status_listener(&loaded.config.http).await?;
    let mut gateway = Gateway::start(&loaded).await?;
    let ops = match Ops::start(&loaded.config, &gateway, listener).await {
        Ok(o) => o,
        Err(e) => {
            let _ = gateway.shutdown().await;
            return Err(e);
        }
    };
    ops.notifier.ready(&format!(
        "Reading {} devices through {} sources",
        gateway.devices.len(),
        gateway.groups.len()
    ));
    let mut dog = ops.watchdog.map(Watchdog::new);
    // Ping at half the interval, as systemd recommends.
    let mut tick = tokio::time::interval(
        ops.watchdog
            .map(|w| (w / 2).max(Duration::from_millis(50)))
            .unwrap_or(Duration::from_secs(3600)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading {}", loaded.config_path.display());
                ops.reload(&loaded.config_path, &mut gateway).await;
            }
            _ = tick.tick() => {
                if let Some(dog) = dog.as_mut() {
                    ops.watchdog_tick(dog, &gateway).await;
                }
            }
        }
    }
    ops.notifier.stopping();
    ops.stop().await;
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
