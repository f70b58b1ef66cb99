//! Metric families of the gateway's own parts: sources (per device), pipeline,
//! models and their S3 sync, upstream forwarders, liveness probes, the process, and
//! the outbox (from `OutboxStats`).
//!
//! Only reads counters the parts keep; names follow Prometheus conventions
//! (`_total` counters, base units: seconds and bytes). `docs/grafana-dashboard.json`
//! queries these names: rename one there too.

use super::metrics::{process_rss_bytes, Collector, Exposition, Kind};
use super::Live;
use crate::outbox::OutboxStats;
use crate::sources::LATENCY_BUCKETS_US;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

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

/// Per-channel detection: baseline learning and what was learned, the detector in
/// use, the trend and open episodes, data/bundle mismatches.
fn detection(live: &Live, out: &mut Exposition) {
    let channels = live
        .pipeline
        .channels
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    if let Some(mut f) = out.family(
        "edgegw_baseline_progress",
        "Share of the channel's learning period done, 0..1 (1: baseline learned and held fixed).",
        Kind::Gauge,
    ) {
        for c in &channels {
            f.sample(&[("sensor_id", &c.sensor_id)], c.baseline_progress);
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_baseline_learned_timestamp_seconds",
        "When the channel's baseline was learned (Unix time).",
        Kind::Gauge,
    ) {
        for c in &channels {
            if let Some(t) = c.baseline_learned_us {
                f.sample(&[("sensor_id", &c.sensor_id)], t as f64 / 1e6);
            }
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_baseline_typical",
        "The learned typical (median) value of each health feature of a channel.",
        Kind::Gauge,
    ) {
        for c in &channels {
            for (feature, v) in &c.baseline {
                f.sample(&[("sensor_id", &c.sensor_id), ("feature", feature)], *v);
            }
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_detection_detector",
        "The detector that scored the channel's last window or reading (value 1).",
        Kind::Gauge,
    ) {
        for c in &channels {
            f.sample(
                &[("sensor_id", &c.sensor_id), ("detector", &c.detector)],
                1.0,
            );
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_detection_trend",
        "Trend (CUSUM) level of the channel's score; it alarms above edgegw_detection_trend_alarm.",
        Kind::Gauge,
    ) {
        for c in &channels {
            f.sample(&[("sensor_id", &c.sensor_id)], c.trend);
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_detection_trend_alarm",
        "Alarm level of the trend (CUSUM).",
        Kind::Gauge,
    ) {
        for c in &channels {
            f.sample(&[("sensor_id", &c.sensor_id)], c.trend_alarm);
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_detection_open_severity",
        "Severity 1..5 of the channel's open fault episode (0: none).",
        Kind::Gauge,
    ) {
        for c in &channels {
            f.sample(&[("sensor_id", &c.sensor_id)], f64::from(c.open_severity));
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_detection_warnings",
        "Warnings about the channel's data against its detector (sample rate, cadence).",
        Kind::Gauge,
    ) {
        for c in &channels {
            f.sample(&[("sensor_id", &c.sensor_id)], c.warnings.len() as f64);
        }
    }
}

fn pipeline(live: &Live, out: &mut Exposition) {
    let c = live
        .pipeline
        .counters
        .lock()
        .map(|c| *c)
        .unwrap_or_default();
    let counters: [(&str, &str, u64); 10] = [
        (
            "edgegw_pipeline_readings_total",
            "Scalar readings turned into reading records.",
            c.readings,
        ),
        (
            "edgegw_pipeline_blocks_total",
            "Waveform blocks received.",
            c.blocks,
        ),
        (
            "edgegw_pipeline_windows_total",
            "Waveform windows turned into window records.",
            c.windows,
        ),
        (
            "edgegw_pipeline_alerts_total",
            "Alert records emitted (open, update, resolved).",
            c.alerts,
        ),
        (
            "edgegw_pipeline_summaries_total",
            "Summary records emitted.",
            c.summaries,
        ),
        (
            "edgegw_pipeline_flagged_total",
            "Readings that failed validation (range, stuck, spike, stale).",
            c.flagged,
        ),
        (
            "edgegw_pipeline_missing_total",
            "Readings a device reported as failed (quality 0).",
            c.missing,
        ),
        (
            "edgegw_pipeline_model_errors_total",
            "Model scoring failures (the statistical fallback scored instead).",
            c.model_errors,
        ),
        (
            "edgegw_pipeline_state_errors_total",
            "Failures to load or save pipeline state in the outbox.",
            c.state_errors,
        ),
        (
            "edgegw_pipeline_late_for_summary_total",
            "Readings older than their channel's open summary bucket.",
            c.late_for_summary,
        ),
    ];
    for (name, help, v) in counters {
        out.single(name, help, Kind::Counter, v as f64);
    }
    if let Some(mut f) = out.family(
        "edgegw_pipeline_scored_total",
        "Windows and readings scored, by detector (model or fallback).",
        Kind::Counter,
    ) {
        f.sample(&[("by", "model")], c.scored_by_model as f64);
        f.sample(&[("by", "fallback")], c.scored_by_fallback as f64);
        f.sample(&[("by", "commissioning")], c.commissioning as f64);
    }
    out.single(
        "edgegw_pipeline_baselines_learned_total",
        "Learning periods that ended: a channel's baseline is now held fixed.",
        Kind::Counter,
        c.baselines_learned as f64,
    );
    out.single(
        "edgegw_pipeline_mismatch_warnings_total",
        "Channels whose data does not fit a model bundle chosen for them (sample rate, cadence).",
        Kind::Counter,
        c.mismatch_warnings as f64,
    );
    detection(live, out);
    out.single(
        "edgegw_pipeline_batches_total",
        "Batches the processor took from the sources channel (liveness probes included).",
        Kind::Counter,
        live.pipeline.batches.load(Relaxed) as f64,
    );
    if let Some(mut f) = out.family(
        "edgegw_pipeline_batch_duration_seconds",
        "Processing time per batch (validate, features, detect, summarise).",
        Kind::Histogram,
    ) {
        live.pipeline.batch_seconds.write(&mut f, &[]);
    }
    if let Some(mut f) = out.family(
        "edgegw_inference_batch_duration_seconds",
        "Processing time of batches in which a model scored: an upper bound of inference latency.",
        Kind::Histogram,
    ) {
        live.pipeline.inference_batch_seconds.write(&mut f, &[]);
    }
    let p = &live.progress;
    out.single(
        "edgegw_pipeline_probe_round_trip_seconds",
        "Round trip of the last liveness probe through sources channel, processor and outbox writer.",
        Kind::Gauge,
        p.last_round_trip_us.load(Relaxed) as f64 / 1e6,
    );
    out.single(
        "edgegw_pipeline_probe_age_seconds",
        "Time since a liveness probe last came back.",
        Kind::Gauge,
        p.since_last_ok().as_secs_f64(),
    );
    if let Some(mut f) = out.family(
        "edgegw_pipeline_probes_total",
        "Liveness probes by result.",
        Kind::Counter,
    ) {
        f.sample(&[("result", "ok")], p.probes_ok.load(Relaxed) as f64);
        f.sample(
            &[("result", "failed")],
            p.probes_failed.load(Relaxed) as f64,
        );
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
        for t in crate::record::SensorType::ALL {
            for kind in [
                crate::inference::BundleKind::Window,
                crate::inference::BundleKind::Rolling,
            ] {
                if let Some(b) = registry.select(t, kind) {
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

/// Outbox families from one `stats()` snapshot.
/// Reads one persisted per-upstream counter.
type UpstreamCounter = fn(&crate::outbox::UpstreamStats) -> u64;

pub fn outbox(s: &OutboxStats, out: &mut Exposition) {
    if let Some(mut f) = out.family(
        "edgegw_outbox_records",
        "Records waiting in the outbox, by kind.",
        Kind::Gauge,
    ) {
        for (kind, n) in &s.depth {
            f.sample(&[("kind", kind.as_str())], *n as f64);
        }
    }
    out.single(
        "edgegw_outbox_used_bytes",
        "Bytes of live data in the outbox database (WAL included).",
        Kind::Gauge,
        s.used_bytes as f64,
    );
    out.single(
        "edgegw_outbox_file_bytes",
        "Size of the outbox database file.",
        Kind::Gauge,
        s.file_bytes as f64,
    );
    out.single(
        "edgegw_outbox_limit_bytes",
        "Size bound in force: max_size_mb, lowered by the free disk space or a full disk.",
        Kind::Gauge,
        s.limit_bytes as f64,
    );
    out.single(
        "edgegw_outbox_refusing",
        "1 while the outbox refuses batches as full (the writer holds them and retries).",
        Kind::Gauge,
        f64::from(u8::from(s.refusing)),
    );
    out.single(
        "edgegw_outbox_oldest_age_seconds",
        "Age of the oldest record in the outbox; 0 when empty.",
        Kind::Gauge,
        s.oldest_age_secs.unwrap_or(0.0),
    );
    if let Some(mut f) = out.family(
        "edgegw_outbox_evicted_total",
        "Records evicted unsent, by reason (size, age; dropped_incoming: no room even after evicting what the batch may evict) and kind.",
        Kind::Counter,
    ) {
        for (key, n) in &s.evicted {
            let (reason, kind) = key.split_once('.').unwrap_or((key.as_str(), "unknown"));
            let reason = reason.strip_prefix("evicted_").unwrap_or(reason);
            f.sample(&[("reason", reason), ("kind", kind)], *n as f64);
        }
    }
    out.single(
        "edgegw_outbox_dead_letters",
        "Rows in the dead-letter table now.",
        Kind::Gauge,
        s.dead_letters as f64,
    );
    out.single(
        "edgegw_outbox_appended_total",
        "Records ever appended to this outbox database. For each upstream: appended = delivered + pending + dead-lettered + evicted unsent.",
        Kind::Counter,
        s.appended as f64,
    );
    let per_upstream: [(&str, &str, UpstreamCounter); 3] = [
        (
            "edgegw_outbox_delivered_total",
            "Records each upstream acknowledged (its dead letters not included), persisted across restarts.",
            |u| u.delivered,
        ),
        (
            "edgegw_outbox_evicted_unsent_total",
            "Records evicted by the size or age bound before each upstream had them, persisted across restarts.",
            |u| u.unsent_evicted,
        ),
        (
            "edgegw_outbox_dead_lettered_total",
            "Records dead-lettered for each upstream (less those requeued before the upstream's cursor passed them), persisted across restarts.",
            |u| u.dead_lettered,
        ),
    ];
    for (name, help, get) in per_upstream {
        if let Some(mut f) = out.family(name, help, Kind::Counter) {
            for u in &s.upstreams {
                f.sample(&[("upstream", u.name.as_str())], get(u) as f64);
            }
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_upstream_pending_records",
        "Records after each upstream's cursor (not yet acknowledged by it).",
        Kind::Gauge,
    ) {
        for u in &s.upstreams {
            f.sample(&[("upstream", u.name.as_str())], u.pending as f64);
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_upstream_lag_seconds",
        "Age of the oldest record an upstream has not acknowledged; 0 when caught up.",
        Kind::Gauge,
    ) {
        for u in &s.upstreams {
            f.sample(&[("upstream", u.name.as_str())], u.lag_secs.unwrap_or(0.0));
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_upstream_acked_id",
        "Outbox id up to which each upstream has acknowledged.",
        Kind::Gauge,
    ) {
        for u in &s.upstreams {
            f.sample(&[("upstream", u.name.as_str())], u.acked_id as f64);
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_upstream_dead_letters",
        "Dead-lettered records per upstream now.",
        Kind::Gauge,
    ) {
        for u in &s.upstreams {
            f.sample(&[("upstream", u.name.as_str())], u.dead_letters as f64);
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_upstream_configured",
        "1 for a configured upstream, 0 for a cursor kept from a removed one.",
        Kind::Gauge,
    ) {
        for u in &s.upstreams {
            f.sample(
                &[("upstream", u.name.as_str())],
                f64::from(u8::from(u.configured)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_metrics_follow_a_swap_by_the_s3_index() {
        let base = crate::inference::ModelRegistry::with_defaults().expect("defaults");
        let absolute = base
            .bundles()
            .iter()
            .find(|b| b.manifest().name == "vibration-default")
            .expect("shipped")
            .clone();
        let live = Live::new(crate::inference::shared(base.clone()));
        let render = |live: &Live| {
            let mut e = Exposition::new();
            models(live, &mut e);
            e.finish()
        };
        let before = render(&live);
        assert!(before.contains("edgegw_model_active{sensor_type=\"vibration\",kind=\"window\",name=\"vibration-relative\""), "{before}");
        // S3 sync swaps in a registry whose index names another bundle for vibration.
        let mut assigned = std::collections::BTreeMap::new();
        assigned.insert(crate::record::SensorType::Vibration, absolute);
        live.registry.store(std::sync::Arc::new(
            base.with_assignments(assigned, Default::default()),
        ));
        let after = render(&live);
        assert!(after.contains("role=\"index:vibration\""), "{after}");
        assert!(after.contains("edgegw_model_active{sensor_type=\"vibration\",kind=\"window\",name=\"vibration-default\""), "{after}");
    }
}
