//! Pipeline and detection families: the processor's counters and batch timings,
//! the liveness probes, and per-channel detection (baselines, detector, trend,
//! open episodes, warnings).

use crate::ops::metrics::{Exposition, Kind};
use crate::ops::Live;
use std::sync::atomic::Ordering::Relaxed;

/// Per-channel detection: baseline learning and what was learned, the detector in
/// use, the trend and open episodes, data/bundle mismatches.
fn detection(live: &Live, out: &mut Exposition) {
    let channels = live.pipeline.channels();
    let channels = channels.as_slice();
    if let Some(mut f) = out.family(
        "edgegw_baseline_progress",
        "Share of the channel's learning period done, 0..1 (1: baseline learned and held fixed).",
        Kind::Gauge,
    ) {
        for c in channels {
            f.sample(&[("sensor_id", &c.sensor_id)], c.baseline_progress);
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_baseline_learned_timestamp_seconds",
        "When the channel's baseline was learned (Unix time).",
        Kind::Gauge,
    ) {
        for c in channels {
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
        for c in channels {
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
        for c in channels {
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
        for c in channels {
            f.sample(&[("sensor_id", &c.sensor_id)], c.trend);
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_detection_trend_alarm",
        "Alarm level of the trend (CUSUM).",
        Kind::Gauge,
    ) {
        for c in channels {
            f.sample(&[("sensor_id", &c.sensor_id)], c.trend_alarm);
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_detection_open_severity",
        "Severity 1..5 of the channel's open fault episode (0: none).",
        Kind::Gauge,
    ) {
        for c in channels {
            f.sample(&[("sensor_id", &c.sensor_id)], f64::from(c.open_severity));
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_detection_warnings",
        "Warnings about the channel's data against its detector (sample rate, cadence).",
        Kind::Gauge,
    ) {
        for c in channels {
            f.sample(&[("sensor_id", &c.sensor_id)], c.warnings.len() as f64);
        }
    }
}

pub(super) fn pipeline(live: &Live, out: &mut Exposition) {
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
