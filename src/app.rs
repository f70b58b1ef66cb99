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
//! The second half of this file wires operations around [`Gateway`]: systemd notify,
//! the watchdog, reload, the status listener ([`run`]).

use crate::config::{GatewayConfig, Loaded};
use crate::inference::{self, ModelRegistry, SharedRegistry};
use crate::ops::reload::{self, GroupKey, GroupSpec, ReloadPlan};
use crate::ops::Live;
use crate::outbox::{run_writer, Outbox, OutboxBatch, OutboxHandle, WriterReport};
use crate::pipeline::{ChannelLimits, Processor, ProcessorCounters, StateStore};
use crate::record::{AlertRecord, Record};
use crate::sources::{DeviceSpec, DeviceStats, SourceBatch};
use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
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

/// Messages to the processor thread from reloads.
enum Control {
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
fn spawn_processor(
    mut processor: Processor,
    mut rx: mpsc::Receiver<SourceBatch>,
    control: std::sync::mpsc::Receiver<Control>,
    tx: mpsc::Sender<OutboxBatch>,
    alerts: broadcast::Sender<AlertRecord>,
    live: Arc<Live>,
) -> JoinHandle<(Processor, u64)> {
    tokio::task::spawn_blocking(move || {
        let mut batches = 0u64;
        let mut last_housekeeping = Instant::now() - HOUSEKEEPING_INTERVAL;
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
                live.pipeline
                    .publish_channels(processor.channel_status(crate::record::now_us()));
            }
            batches += 1;
            let started = Instant::now();
            let records = processor.process(&batch.readings);
            live.pipeline
                .record(processor.counters(), started.elapsed());
            for r in &records {
                if let Record::Alert(a) = r {
                    let _ = alerts.send(a.clone());
                }
            }
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
    use crate::config::Transport;
    let mut out = String::new();
    for d in &loaded.runnable {
        if !matches!(
            d.transport(),
            Some(Transport::ModbusTcp(_) | Transport::ModbusRtu(_))
        ) {
            continue;
        }
        let Some(p) = loaded.profiles.get(&reload::profile_key(d)) else {
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

// ---------------------------------------------------------------------------------
// Operations wiring: systemd notify, watchdog, reload, status listener.
// The data path above knows nothing of these; they only read `Live` and call
// `Gateway::reload`.
// ---------------------------------------------------------------------------------

use crate::ops::metrics::{Metrics, Series};
use crate::ops::notify::Notifier;
use crate::ops::watchdog::{self, Verdict, Watchdog};

/// The operations side of a running gateway.
struct Ops {
    notifier: Notifier,
    /// `WatchdogSec=` as systemd passed it, when it is meant for us.
    watchdog: Option<Duration>,
    metrics: Metrics,
    reload_ok: Series,
    reload_invalid: Series,
    reload_last_success: Series,
    reload_last_time: Series,
    reload_restart_needed: Series,
    source_restarts: Series,
    pings_sent: Series,
    pings_withheld: Series,
    /// Stops the probe loop and the listener.
    cancel: CancellationToken,
    probes: JoinHandle<()>,
    listener: Option<JoinHandle<()>>,
}

impl Ops {
    async fn start(
        config: &GatewayConfig,
        gateway: &Gateway,
        listener: Option<(tokio::net::TcpListener, Option<Arc<str>>)>,
    ) -> anyhow::Result<Ops> {
        let notifier = Notifier::from_env().unwrap_or_else(|e| {
            tracing::warn!("{e}; not notifying systemd");
            Notifier::disabled()
        });
        let watchdog = crate::ops::notify::watchdog_interval();
        let metrics = Metrics::new();
        metrics.register(Arc::new(crate::ops::collect::LiveCollector(gateway.live())));
        let reloads = metrics.counter(
            "edgegw_reloads_total",
            "Configuration reloads (SIGHUP) by result: ok, or invalid (kept the running config).",
            &["result"],
        );
        let reload_last_success = metrics
            .gauge(
                "edgegw_reload_last_success",
                "1 when the last reload was applied (or none was tried), 0 when it was invalid.",
                &[],
            )
            .with(&[]);
        reload_last_success.set(1.0);
        let pings = metrics.counter(
            "edgegw_watchdog_pings_total",
            "systemd watchdog ticks by outcome: sent, or withheld because the pipeline is wedged.",
            &["result"],
        );
        let cancel = CancellationToken::new();
        let tx = gateway
            .source_sender()
            .context("the gateway has no source channel")?;
        let probes = tokio::spawn(watchdog::run_probes(
            tx,
            gateway.live(),
            watchdog::probe_period(watchdog),
            cancel.clone(),
        ));
        let _ = config;
        let listener = if let Some((l, token)) = listener {
            tracing::info!(listen = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                auth = token.is_some(), "Status listener: /healthz /readyz /metrics");
            let status = crate::ops::http::Status {
                live: gateway.live(),
                metrics: metrics.clone(),
                outbox: gateway.outbox().clone(),
                token,
            };
            Some(tokio::spawn(crate::ops::http::serve(
                l,
                status,
                cancel.clone(),
            )))
        } else {
            None
        };
        Ok(Ops {
            notifier,
            watchdog,
            reload_ok: reloads.with(&["ok"]),
            reload_invalid: reloads.with(&["invalid"]),
            reload_last_success,
            reload_last_time: metrics
                .gauge(
                    "edgegw_reload_last_timestamp_seconds",
                    "Unix time of the last reload attempt; 0 = none.",
                    &[],
                )
                .with(&[]),
            reload_restart_needed: metrics
                .gauge(
                    "edgegw_reload_restart_needed",
                    "1 when the config on disk changed sections that only a restart applies.",
                    &[],
                )
                .with(&[]),
            source_restarts: metrics
                .counter(
                    "edgegw_source_reload_restarts_total",
                    "Source tasks stopped or started by reloads.",
                    &["action"],
                )
                .with(&["restart"]),
            pings_sent: pings.with(&["sent"]),
            pings_withheld: pings.with(&["withheld"]),
            metrics,
            cancel,
            probes,
            listener,
        })
    }

    /// SIGHUP: re-read config and profiles; apply a valid one, keep the running one
    /// otherwise.
    async fn reload(&self, path: &std::path::Path, gateway: &mut Gateway) {
        self.notifier.reloading();
        self.reload_last_time
            .set(crate::record::now_us() as f64 / 1e6);
        // The same rule as at start (`config::load`, `check --startup`): an error in
        // the config file refuses the reload; a bad profile leaves out its devices.
        let loaded = match crate::config::load(path) {
            Ok(l) => l,
            Err(diags) => {
                self.invalid(path, &diags);
                return;
            }
        };
        for d in &loaded.diags {
            if d.is_error() {
                tracing::error!("{d}");
            } else {
                tracing::warn!("{d}");
            }
        }
        let report = gateway.reload(&loaded).await;
        let p = &report.plan;
        let names = |keys: &[GroupKey]| {
            keys.iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        tracing::info!(
            stopped = %names(&p.stop),
            started = %names(&p.start),
            unchanged = p.unchanged.len(),
            "Reloaded {}",
            path.display()
        );
        if !report.restart_needed.is_empty() {
            tracing::warn!(
                sections = %report.restart_needed.join(", "),
                "These sections changed and apply only after a restart (systemctl restart edgegw)"
            );
        }
        self.reload_ok.inc();
        self.reload_last_success.set(1.0);
        self.reload_restart_needed
            .set(f64::from(u8::from(!report.restart_needed.is_empty())));
        self.source_restarts
            .add((p.stop.len() + p.start.len()) as u64);
        self.notifier.ready(&format!(
            "Reloaded: {} sources restarted or started, {} unchanged",
            p.start.len(),
            p.unchanged.len()
        ));
    }

    fn invalid(&self, path: &std::path::Path, diags: &[crate::diag::Diagnostic]) {
        let errors = diags.iter().filter(|d| d.is_error()).count();
        for d in diags {
            if d.is_error() {
                tracing::error!("{d}");
            } else {
                tracing::warn!("{d}");
            }
        }
        tracing::error!(
            problems = errors,
            "Reload refused: {} has errors; still running on the previous config",
            path.display()
        );
        self.reload_invalid.inc();
        self.reload_last_success.set(0.0);
        self.notifier.ready(&format!(
            "Reload refused ({errors} problems in {}); running on the previous config",
            path.display()
        ));
    }

    /// One watchdog tick (see `ops::watchdog` for the rules).
    async fn watchdog_tick(&self, dog: &mut Watchdog, gateway: &Gateway) {
        match dog.check(&gateway.live()) {
            Verdict::Progress | Verdict::Busy => {
                self.notifier.watchdog();
                self.pings_sent.inc();
            }
            Verdict::Stalled { since } => {
                let wait = self
                    .watchdog
                    .map(|w| w / 4)
                    .unwrap_or(Duration::from_secs(5));
                let full = match tokio::time::timeout(wait, gateway.outbox().stats()).await {
                    Ok(Ok(s)) => watchdog::outbox_full(&s),
                    _ => false,
                };
                if full {
                    self.notifier.watchdog();
                    self.pings_sent.inc();
                    self.notifier
                        .status("Outbox full: holding data and retrying; sources are pushed back");
                } else {
                    self.pings_withheld.inc();
                    tracing::error!(
                        stalled_secs = since.as_secs_f64(),
                        "The pipeline made no progress; withholding the watchdog ping so systemd restarts the gateway"
                    );
                    self.notifier.status(&format!(
                        "Pipeline wedged for {} s: watchdog ping withheld",
                        since.as_secs()
                    ));
                }
            }
        }
    }

    /// Stops probes (they hold a source sender) and the listener.
    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.probes.await;
        if let Some(l) = self.listener {
            let _ = l.await;
        }
        drop(self.metrics);
    }
}

/// `edgegw run`: start, notify systemd, serve status, reload on SIGHUP, ping the
/// watchdog while the pipeline makes progress; on SIGTERM/SIGINT shut down in order.
/// Binds the status listener and resolves its token (None when `[http]` is off).
async fn bind_status_listener(
    http: &crate::config::HttpConfig,
) -> anyhow::Result<Option<(tokio::net::TcpListener, Option<Arc<str>>)>> {
    if !http.enabled {
        return Ok(None);
    }
    let l = crate::ops::http::bind(http).await.context(
        "not starting: free the port, choose another http.listen, or set http.enabled = false",
    )?;
    let token = crate::ops::http::token(http, &l).context("not starting")?;
    Ok(Some((l, token)))
}

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
