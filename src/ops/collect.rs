//! Metric families of the gateway's own parts: sources (per device), pipeline,
//! models and their S3 sync, upstream forwarders, liveness probes, the process, and
//! the outbox (from `OutboxStats`).
//!
//! Only reads counters the parts keep; names follow Prometheus conventions
//! (`_total` counters, base units: seconds and bytes). `docs/grafana-dashboard.json`
//! queries these names: rename one there too.

use super::metrics::{process_rss_bytes, Collector, Exposition, Kind, Metrics, Series};
use super::Live;
use crate::sources::LATENCY_BUCKETS_US;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

// Submodules in flat files next to this one, not in `collect/`: tests/ops_dashboard.rs
// looks for every metric name the dashboard queries in the files of `src/ops/`.
#[path = "collect_outbox.rs"]
mod outbox;
#[path = "collect_pipeline.rs"]
mod pipeline;
#[cfg(test)]
#[path = "collect_tests.rs"]
mod tests;

pub use outbox::outbox;
use pipeline::pipeline;

/// The families the daemon's ops side updates itself (reloads, watchdog ticks):
/// defined here with every other family, one place for the names and help texts.
pub(crate) struct DaemonSeries {
    pub(crate) reload_ok: Series,
    pub(crate) reload_invalid: Series,
    pub(crate) reload_last_success: Series,
    pub(crate) reload_last_time: Series,
    pub(crate) reload_restart_needed: Series,
    pub(crate) source_restarts: Series,
    pub(crate) pings_sent: Series,
    pub(crate) pings_withheld: Series,
}

impl DaemonSeries {
    pub(crate) fn register(metrics: &Metrics) -> DaemonSeries {
        let reloads = metrics.counter(
            "edgegw_reloads_total",
            "Configuration reloads (SIGHUP) by result: ok, or invalid (kept the running config).",
            &["result"],
        );
        let pings = metrics.counter(
            "edgegw_watchdog_pings_total",
            "systemd watchdog ticks by outcome: sent, or withheld because the pipeline is wedged.",
            &["result"],
        );
        let gauge = |name: &str, help: &str| metrics.gauge(name, help, &[]).with(&[]);
        let series = DaemonSeries {
            reload_ok: reloads.with(&["ok"]),
            reload_invalid: reloads.with(&["invalid"]),
            reload_last_success: gauge(
                "edgegw_reload_last_success",
                "1 when the last reload was applied (or none was tried), 0 when it was invalid.",
            ),
            reload_last_time: gauge(
                "edgegw_reload_last_timestamp_seconds",
                "Unix time of the last reload attempt; 0 = none.",
            ),
            reload_restart_needed: gauge(
                "edgegw_reload_restart_needed",
                "1 when the config on disk changed sections that only a restart applies.",
            ),
            source_restarts: metrics
                .counter(
                    "edgegw_source_reload_restarts_total",
                    "Source tasks stopped or started by reloads.",
                    &["action"],
                )
                .with(&["restart"]),
            pings_sent: pings.with(&["sent"]),
            pings_withheld: pings.with(&["withheld"]),
        };
        series.reload_last_success.set(1.0);
        series
    }
}

/// Sources, pipeline, models, model sync, forwarders, probes and process metrics,
/// read from [`Live`].
pub struct LiveCollector(pub Arc<Live>);

impl Collector for LiveCollector {
    fn collect(&self, out: &mut Exposition) {
        devices(&self.0, out);
        pipeline(&self.0, out);
        models(&self.0, out);
        upstreams(&self.0, out);
        model_sync(&self.0, out);
        process(&self.0, out);
    }
}

/// The S3 model sync task's counters; absent when no bucket is configured.
fn model_sync(live: &Live, out: &mut Exposition) {
    let Some(v) = live
        .model_sync
        .read()
        .ok()
        .and_then(|c| c.as_ref().map(|c| c.values()))
    else {
        return;
    };
    for (name, help, value) in [
        (
            "edgegw_model_syncs_total",
            "Model sync rounds attempted (S3 index fetches).",
            v.syncs,
        ),
        (
            "edgegw_model_sync_not_modified_total",
            "Sync rounds whose index had not changed.",
            v.not_modified,
        ),
        (
            "edgegw_model_bundles_installed_total",
            "Bundles downloaded, verified and installed into the cache.",
            v.installed,
        ),
        (
            "edgegw_model_bundles_rejected_total",
            "Bundles or indexes refused by a check (the previous bundle stayed active).",
            v.rejected,
        ),
        (
            "edgegw_model_sync_errors_total",
            "Syncs or downloads that failed on the network, the server or the disk.",
            v.errors,
        ),
        (
            "edgegw_model_swaps_total",
            "Times the active model set was swapped.",
            v.swaps,
        ),
    ] {
        out.single(name, help, Kind::Counter, value as f64);
    }
}

/// The forwarders' own counters (the cursor-based gauges come from the outbox).
fn upstreams(live: &Live, out: &mut Exposition) {
    let snapshots: Vec<(&'static str, crate::upstream::MetricsSnapshot)> =
        match live.upstreams.read() {
            Ok(m) => m.iter().map(|(n, m)| (*n, m.snapshot())).collect(),
            Err(_) => return,
        };
    type Get = fn(&crate::upstream::MetricsSnapshot) -> f64;
    let families: [(&str, &str, Kind, Get); 8] = [
        (
            "edgegw_upstream_sent_total",
            "Records handed to each upstream (a retry counts again).",
            Kind::Counter,
            |s| s.sent as f64,
        ),
        (
            "edgegw_upstream_acked_total",
            "Records acknowledged in the outbox by each upstream.",
            Kind::Counter,
            |s| s.acked as f64,
        ),
        (
            "edgegw_upstream_retries_total",
            "Failed batch attempts that will be retried.",
            Kind::Counter,
            |s| s.retried as f64,
        ),
        (
            "edgegw_upstream_dead_lettered_total",
            "Records an upstream refused for good (moved to dead letters).",
            Kind::Counter,
            |s| s.dead_lettered as f64,
        ),
        (
            "edgegw_upstream_auth_errors_total",
            "Authentication or authorisation failures (every request will fail).",
            Kind::Counter,
            |s| s.auth_errors as f64,
        ),
        (
            "edgegw_upstream_forwarder_lag_seconds",
            "Age of the oldest record the forwarder has not delivered; 0 when idle.",
            Kind::Gauge,
            |s| s.lag_ms as f64 / 1000.0,
        ),
        (
            "edgegw_upstream_breaker_open",
            "1 while the upstream's circuit breaker is open.",
            Kind::Gauge,
            |s| f64::from(u8::from(s.breaker_open)),
        ),
        (
            "edgegw_upstream_breaker_trips_total",
            "Times the circuit breaker opened.",
            Kind::Counter,
            |s| s.breaker_trips as f64,
        ),
    ];
    for (name, help, kind, get) in families {
        if let Some(mut f) = out.family(name, help, kind) {
            for (upstream, snap) in &snapshots {
                f.sample(&[("upstream", upstream)], get(snap));
            }
        }
    }
    // Local notification sinks (upstreams named `notify:<sink>`).
    let sinks: Vec<(&str, &crate::upstream::MetricsSnapshot)> = snapshots
        .iter()
        .filter_map(|(n, s)| {
            n.strip_prefix(crate::outbox::ALERTS_ONLY_PREFIX)
                .map(|sink| (sink, s))
        })
        .collect();
    if sinks.is_empty() {
        return;
    }
    if let Some(mut f) = out.family(
        "edgegw_notify_attempts_total",
        "Notification attempts per sink: delivered (the receiver confirmed) or failed (retried, or refused for good).",
        Kind::Counter,
    ) {
        for (sink, s) in &sinks {
            f.sample(&[("sink", sink), ("outcome", "delivered")], s.notify_delivered as f64);
            f.sample(&[("sink", sink), ("outcome", "failed")], s.notify_failed as f64);
        }
    }
    type Count = fn(&crate::upstream::MetricsSnapshot) -> f64;
    let more: [(&str, &str, Count); 2] = [
        (
            "edgegw_notify_suppressed_total",
            "Openings and escalations a sink's rate limit held back (not sent).",
            |s| s.notify_suppressed as f64,
        ),
        (
            "edgegw_notify_skipped_total",
            "Alert records that needed no notification from a sink (an update without escalation, a repeat, not routed there).",
            |s| s.notify_skipped as f64,
        ),
    ];
    for (name, help, get) in more {
        if let Some(mut f) = out.family(name, help, Kind::Counter) {
            for (sink, s) in &sinks {
                f.sample(&[("sink", sink)], get(s));
            }
        }
    }
}

fn devices(live: &Live, out: &mut Exposition) {
    let devices = match live.devices.read() {
        Ok(d) => d.clone(),
        Err(_) => return,
    };
    let per_device = |out: &mut Exposition,
                      name: &str,
                      help: &str,
                      kind,
                      f: &dyn Fn(&crate::sources::DeviceStats) -> f64| {
        if let Some(mut fam) = out.family(name, help, kind) {
            for (id, s) in &devices {
                fam.sample(&[("device", id.as_str())], f(s));
            }
        }
    };
    per_device(
        out,
        "edgegw_device_polls_total",
        "Successful poll cycles (or lines, or messages) per device.",
        Kind::Counter,
        &|s| s.polls.load(Relaxed) as f64,
    );
    per_device(
        out,
        "edgegw_device_readings_total",
        "Readings sent down the pipeline per device.",
        Kind::Counter,
        &|s| s.readings.load(Relaxed) as f64,
    );
    if let Some(mut fam) = out.family(
        "edgegw_device_errors_total",
        "Device errors by kind (timeout, connect, exception, checksum, parse, ...).",
        Kind::Counter,
    ) {
        for (id, s) in &devices {
            let errors = s.errors.lock().map(|m| m.clone()).unwrap_or_default();
            for (kind, n) in errors {
                fam.sample(&[("device", id.as_str()), ("kind", kind)], n as f64);
            }
        }
    }
    per_device(
        out,
        "edgegw_device_last_success_timestamp_seconds",
        "Unix time of the last successful poll; 0 = never.",
        Kind::Gauge,
        &|s| s.last_success_us.load(Relaxed) as f64 / 1e6,
    );
    per_device(
        out,
        "edgegw_device_connected",
        "1 while the device's transport is connected or open.",
        Kind::Gauge,
        &|s| f64::from(u8::from(s.connected.load(Relaxed))),
    );
    if let Some(mut fam) = out.family(
        "edgegw_device_poll_duration_seconds",
        "Time of one successful poll cycle per device.",
        Kind::Histogram,
    ) {
        let bounds: Vec<f64> = LATENCY_BUCKETS_US
            .iter()
            .map(|us| *us as f64 / 1e6)
            .collect();
        for (id, s) in &devices {
            let counts: Vec<u64> = s.latency_buckets.iter().map(|b| b.load(Relaxed)).collect();
            let sum = s.latency_sum_us.load(Relaxed) as f64 / 1e6;
            fam.histogram(&[("device", id.as_str())], &bounds, &counts, sum);
        }
    }
    if let Some(mut fam) = out.family(
        "edgegw_mqtt_topic_errors_total",
        "MQTT payload errors per broker, topic and kind (at most 1000 topics per broker; the rest under \"(other topics)\").",
        Kind::Counter,
    ) {
        let brokers = live
            .mqtt_topic_errors
            .read()
            .map(|m| m.clone())
            .unwrap_or_default();
        for (broker, errors) in &brokers {
            for (topic, kind, n) in errors.snapshot() {
                fam.sample(
                    &[("broker", broker), ("topic", &topic), ("kind", kind)],
                    n as f64,
                );
            }
        }
    }
    if let Some(mut fam) = out.family(
        "edgegw_source_up",
        "1 while the source task (one per TCP/serial device, RTU bus or MQTT broker) runs.",
        Kind::Gauge,
    ) {
        if let Ok(sources) = live.sources.read() {
            for (name, alive) in sources.iter() {
                fam.sample(
                    &[("source", name)],
                    f64::from(u8::from(alive.load(Relaxed))),
                );
            }
        }
    }
}

fn models(live: &Live, out: &mut Exposition) {
    let registry = live.registry.load();
    if let Some(mut f) = out.family(
        "edgegw_model_info",
        "Model bundles loaded (1 per bundle and role): built-in or cached (listed), named by the S3 index for a sensor type (index), or pinned by a device (pin).",
        Kind::Gauge,
    ) {
        let mut sample = |b: &crate::inference::ModelBundle, role: &str| {
            let m = b.manifest();
            let types: Vec<&str> = m.sensor_types.iter().map(|t| t.as_str()).collect();
            f.sample(
                &[
                    ("name", m.name.as_str()),
                    ("version", m.version.as_str()),
                    ("kind", m.kind.as_str()),
                    ("reference", m.reference.as_str()),
                    ("sensor_types", types.join(",").as_str()),
                    ("role", role),
                ],
                1.0,
            );
        };
        for b in registry.bundles() {
            sample(b, "listed");
        }
        for (t, b) in registry.assigned() {
            sample(b, &format!("index:{t}"));
        }
        let mut pins: Vec<_> = registry.pins().iter().collect();
        pins.sort_by(|a, b| a.0.cmp(b.0));
        for (device, b) in pins {
            sample(b, &format!("pin:{device}"));
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_model_active",
        "The bundle that serves each sensor type and kind now (value 1), after S3 index assignments; device pins and sample rates can still override it per channel (edgegw_detection_detector).",
        Kind::Gauge,
    ) {
        for (t, kind, b) in registry.active() {
            let m = b.manifest();
            f.sample(
                &[
                    ("sensor_type", t.as_str()),
                    ("kind", kind.as_str()),
                    ("name", m.name.as_str()),
                    ("version", m.version.as_str()),
                ],
                1.0,
            );
        }
    }
}

fn process(live: &Live, out: &mut Exposition) {
    if let Some(rss) = process_rss_bytes() {
        out.single(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            Kind::Gauge,
            rss as f64,
        );
    }
    out.single(
        "edgegw_ready",
        "1 once config, outbox and sources are up; 0 while starting or stopping.",
        Kind::Gauge,
        f64::from(u8::from(live.ready.load(Relaxed))),
    );
    if let Some(mut f) = out.family(
        "edgegw_build_info",
        "Version of the running binary.",
        Kind::Gauge,
    ) {
        f.sample(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    }
}
