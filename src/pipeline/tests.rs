//! End-to-end tests of the processor on the committed real-data slices (CWRU, NAB),
//! against the Python reference numbers in `testdata/expected/`, plus the fallback,
//! validation alerts, summaries and hot swapping with synthetic readings.

use super::*;
use crate::inference::{shared, ModelRegistry, SharedRegistry};
use crate::record::{AlertRecord, AlertState, Record, SensorType};
use crate::sources::{ChannelId, Reading, Value};
use std::path::PathBuf;
use std::sync::Arc;

const S: i64 = 1_000_000;
/// 2025-11-25T00:00:00Z, a multiple of an hour.
const T0: i64 = 1_764_028_800 * S;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn defaults() -> SharedRegistry {
    shared(ModelRegistry::with_defaults().expect("default bundles load"))
}

/// Only the shipped absolute bundles (`vibration-default`, `temperature-default`): the
/// models of the CWRU rig and the NAB machine, as if pinned.
fn absolute() -> SharedRegistry {
    let all = ModelRegistry::with_defaults().expect("default bundles load");
    shared(ModelRegistry::new(
        all.bundles()
            .iter()
            .filter(|b| b.manifest().reference == crate::inference::Reference::Absolute)
            .cloned()
            .collect(),
    ))
}

/// A 10-minute rolling window and a baseline learned from a channel's first 20
/// readings, so that short synthetic series get past commissioning.
fn learns_from_first_20() -> PipelineSettings {
    let mut settings = PipelineSettings {
        rolling_window: super::settings::TimeSpan::from_secs(600.0),
        ..PipelineSettings::default()
    };
    settings.baseline.learn = super::settings::TimeSpan::from_secs(0.0);
    settings.baseline.samples = 20;
    settings.baseline.min_samples = 20;
    settings
}

fn read_f32(rel: &str) -> Vec<f32> {
    let bytes = std::fs::read(root().join(rel)).expect("test data");
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn expected(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root().join(rel)).expect("expected")).expect("json")
}

/// Blocks of `block` samples at 12 kHz, continuous from `t0`; ts is the last sample's.
fn blocks(ch: &ChannelId, x: &[f32], block: usize, t0: i64) -> Vec<Reading> {
    let period = 1e6 / 12_000.0;
    let mut out = Vec::new();
    let mut start = 0;
    while start < x.len() {
        let end = (start + block).min(x.len());
        let ts = t0 + ((end - 1) as f64 * period).round() as i64;
        out.push(ch.reading(
            ts,
            Value::Block {
                sample_rate_hz: 12_000.0,
                samples: Arc::from(&x[start..end]),
            },
        ));
        start = end;
    }
    out
}

fn windows(records: &[Record]) -> Vec<&crate::record::WindowRecord> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Window(w) => Some(w),
            _ => None,
        })
        .collect()
}

fn alerts(records: &[Record]) -> Vec<&AlertRecord> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Alert(a) => Some(a),
            _ => None,
        })
        .collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()) || (a - b).abs() <= 1e-6
}

#[test]
fn cwru_slices_match_the_python_reference_end_to_end() {
    let exp = expected("testdata/expected/vibration-default.json");
    let ch = ChannelId::new("pump1", "accel_de", SensorType::Vibration, "g");
    for file in exp["files"].as_array().expect("files") {
        let name = file["file"].as_str().expect("file");
        let x = read_f32(name);
        let mut p = Processor::new(
            &PipelineSettings::default(),
            absolute(),
            Box::new(MemoryStateStore::new()),
        );
        // 1000-sample blocks: windows (hop 1024) straddle block boundaries.
        let records = p.process(&blocks(&ch, &x, 1000, T0));
        let ws = windows(&records);
        assert_eq!(
            ws.len() as u64,
            file["windows"].as_u64().expect("n"),
            "{name}"
        );
        let scores = file["scores"].as_array().expect("scores");
        let feats = file["features"].as_array().expect("features");
        let mut flagged = 0;
        for (i, w) in ws.iter().enumerate() {
            for (fname, v) in w
                .features
                .iter()
                .filter(|(n, _)| crate::pipeline::features::WINDOW_FEATURES.contains(&n.as_str()))
            {
                let want = feats[i][fname.as_str()].as_f64().expect("feature");
                assert!(
                    close(*v, want, 1e-4),
                    "{name} window {i}: {fname} {v} vs {want}"
                );
            }
            let want = scores[i].as_f64().expect("score");
            let got = w.score.expect("scored");
            assert!(
                close(got, want, 1e-4),
                "{name} window {i}: score {got} vs {want}"
            );
            assert_eq!(w.detector.as_deref(), Some("vibration-default@1.0.0"));
            // Window ts: time of its last sample (block times are whole µs: +-1).
            let last = i * 1024 + 2047;
            let want_ts = T0 + (last as f64 * 1e6 / 12_000.0).round() as i64;
            assert!(
                (w.ts_us - want_ts).abs() <= 1,
                "{name} window {i}: ts {}",
                w.ts_us
            );
            flagged += usize::from(got > w.threshold.expect("threshold"));
        }
        assert_eq!(
            flagged as u64,
            file["flagged"].as_u64().expect("flagged"),
            "{name}"
        );
        let al = alerts(&records);
        let episodes = file["alert_episodes"].as_array().expect("episodes");
        match episodes.first() {
            None => assert!(al.is_empty(), "{name}: false alarm {al:?}"),
            Some(ep) => {
                let open_idx = ep[0].as_u64().expect("open") as usize;
                let open = al.first().expect("an alert");
                assert_eq!(open.state, AlertState::Open, "{name}");
                assert_eq!(
                    open.ts_us, ws[open_idx].ts_us,
                    "{name}: opened at another window"
                );
                assert_eq!(open.anomaly_type, "vibration_anomaly");
                assert_eq!(open.episode_us, open.ts_us);
                assert_eq!(
                    open.severity,
                    crate::record::severity_from_confidence(open.confidence)
                );
                assert_eq!(open.evidence["detector"], "vibration-default@1.0.0");
                assert!(
                    open.description.contains("pump1.accel_de"),
                    "{}",
                    open.description
                );
                assert!(!open.recommended_actions.is_empty());
                // Updates at most every 300 s of reading time: 2 s of data has none.
                assert_eq!(al.len(), 1, "{name}: {al:?}");
            }
        }
        assert_eq!(p.counters().windows, ws.len() as u64);
        assert_eq!(p.counters().scored_by_model, ws.len() as u64);
    }
}

fn nab_readings(ch: &ChannelId) -> Vec<Reading> {
    let text = std::fs::read_to_string(root().join("testdata/nab/machine_temperature_slice.csv"))
        .expect("nab slice");
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    text.lines()
        .skip(1)
        .map(|line| {
            let (ts, v) = line.split_once(',').expect("two columns");
            let t = time::PrimitiveDateTime::parse(ts, &fmt)
                .expect("timestamp")
                .assume_utc();
            let ts_us = (t.unix_timestamp_nanos() / 1000) as i64;
            ch.reading(ts_us, Value::Scalar(v.parse().expect("value")))
        })
        .collect()
}

#[test]
fn nab_temperature_opens_where_the_reference_does() {
    let exp = expected("testdata/expected/temperature-default.json");
    let ch = ChannelId::new("kiln", "temp", SensorType::Temperature, "degF");
    let readings = nab_readings(&ch);
    assert_eq!(readings.len() as u64, exp["readings"].as_u64().expect("n"));
    let mut p = Processor::new(
        &PipelineSettings::default(),
        absolute(),
        Box::new(MemoryStateStore::new()),
    );
    let mut first_open = None;
    for (i, r) in readings.iter().enumerate() {
        let out = p.process(std::slice::from_ref(r));
        assert!(
            matches!(out[0], Record::Reading(_)),
            "a reading record first"
        );
        if let Some(a) = alerts(&out).first() {
            if first_open.is_none() {
                assert_eq!(a.state, AlertState::Open);
                assert_eq!(a.anomaly_type, "temperature_anomaly");
                first_open = Some(i);
            }
        }
    }
    let want = exp["alert_episodes"][0]["open"].as_u64().expect("open") as usize;
    assert_eq!(first_open, Some(want));
    assert_eq!(p.counters().readings, 1500);
    assert_eq!(p.counters().scored_by_model, 1500 - 287);
    // Five days of readings: hourly summaries were emitted along the way.
    assert!(p.counters().summaries >= 100, "{:?}", p.counters());
}

#[test]
fn a_scalar_channel_learns_its_baseline_and_keeps_it_across_a_restart() {
    // Pressure: the relative scalar bundle (via `general`) scores it once its baseline
    // is learned from the first 20 readings.
    let ch = ChannelId::new("line2", "pressure", SensorType::Pressure, "bar");
    let settings = learns_from_first_20();
    let store = MemoryStateStore::new();
    let normal = |i: i64| 5.0 + 0.05 * ((i * 7919) % 13) as f64 / 13.0;
    let mut p = Processor::new(&settings, defaults(), Box::new(store.clone()));
    let mut recs = Vec::new();
    for i in 0..40 {
        recs.extend(p.process(&[ch.reading(T0 + i * 10 * S, Value::Scalar(normal(i)))]));
    }
    assert!(alerts(&recs).is_empty(), "no alert on normal data");
    // 40 readings; the first has no rolling statistics yet: 39 feature vectors, 20
    // learn the baseline, 19 are scored.
    assert_eq!(p.counters().commissioning, 20);
    assert_eq!(p.counters().scored_by_model, 19);
    assert!(store
        .keys()
        .contains(&"baseline/v2/scalar/line2.pressure".to_string()));
    // Every reading says who looked at it.
    let detectors: Vec<String> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Reading(x) => x.detection.as_ref().map(|d| d.detector.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(detectors.len(), 40);
    assert!(
        detectors[5].starts_with("commissioning"),
        "{}",
        detectors[5]
    );
    assert_eq!(detectors[39], "scalar-relative@2.0.0");

    // Restart: the baseline comes back (no relearning); a pressure drop opens an
    // episode after 3 of 5.
    let mut p = Processor::new(&settings, defaults(), Box::new(store.clone()));
    let mut recs = Vec::new();
    for i in 0..10 {
        let v = if i < 4 { normal(i) } else { 2.0 };
        recs.extend(p.process(&[ch.reading(T0 + (1000 + i * 10) * S, Value::Scalar(v))]));
    }
    assert_eq!(p.counters().commissioning, 0);
    assert_eq!(p.counters().scored_by_model, 9);
    let al = alerts(&recs);
    assert_eq!(al.len(), 1, "{al:?}");
    assert_eq!(al[0].anomaly_type, "pressure_anomaly");
    assert_eq!(al[0].evidence["detector"], "scalar-relative@2.0.0");
    assert_eq!(
        al[0].ts_us,
        T0 + 1060 * S,
        "the 3rd reading at 2 bar is the 3rd anomalous"
    );
    assert!(
        al[0].description.contains("below its baseline"),
        "{}",
        al[0].description
    );
}

#[test]
fn validation_flags_readings_and_raises_sensor_alerts() {
    let ch = ChannelId::new("oven", "t1", SensorType::Temperature, "degC");
    let mut p = Processor::new(
        &PipelineSettings {
            clear_windows: 2,
            ..PipelineSettings::default()
        },
        shared(ModelRegistry::empty()),
        Box::new(MemoryStateStore::new()),
    );
    p.register_channel(
        "oven.t1",
        ChannelLimits {
            min: Some(-40.0),
            max: Some(300.0),
            stuck_after: Some(5),
            ..ChannelLimits::default()
        },
    );
    let values = [20.0, 21.0, 999.0, 999.0, 999.0, 22.0, 23.0, 24.0];
    let mut recs = Vec::new();
    for (i, v) in values.iter().enumerate() {
        recs.extend(p.process(&[ch.reading(T0 + i as i64 * 60 * S, Value::Scalar(*v))]));
    }
    let readings: Vec<_> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Reading(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(readings.len(), values.len(), "never dropped");
    assert_eq!(readings[2].quality, 0.0);
    assert_eq!(readings[2].flags, vec!["out_of_range"]);
    assert_eq!(readings[0].quality, 1.0);
    let al = alerts(&recs);
    let kinds: Vec<_> = al
        .iter()
        .map(|a| (a.anomaly_type.as_str(), a.state))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("sensor_out_of_range", AlertState::Open),
            ("sensor_out_of_range", AlertState::Resolved)
        ]
    );
    assert_eq!(
        al[0].ts_us,
        T0 + 4 * 60 * S,
        "third out-of-range reading opens"
    );
    assert_eq!(al[1].episode_us, al[0].episode_us);
    assert!(al[0].description.contains("999"), "{}", al[0].description);

    // A frozen value: stuck after 5 identical, alert after 3 of 5 stuck readings.
    let mut recs = Vec::new();
    for i in 0..10 {
        recs.extend(p.process(&[ch.reading(T0 + (1000 + i * 60) * S, Value::Scalar(50.0))]));
    }
    let al = alerts(&recs);
    assert_eq!(al.len(), 1, "{al:?}");
    assert_eq!(al[0].anomaly_type, "sensor_stuck");
    assert_eq!(al[0].ts_us, T0 + (1000 + 6 * 60) * S);

    // Device errors and text registers: nothing emitted, counted.
    let out = p.process(&[
        ch.failed(T0 + 5000 * S, "modbus_exception:2"),
        ch.reading(T0 + 5001 * S, Value::Text("SN-123".into())),
    ]);
    assert!(out.is_empty());
    let errors = p.channel_errors("oven.t1").expect("errors counted");
    assert_eq!(errors.count, 1);
    assert_eq!(errors.last_flags, vec!["modbus_exception:2"]);
    assert_eq!(p.counters().missing, 1);
    assert_eq!(p.counters().text_ignored, 1);
}

#[test]
fn summaries_close_on_the_next_bucket_and_resume_after_flush() {
    let ch = ChannelId::new("hall", "hum", SensorType::Humidity, "%");
    let store = MemoryStateStore::new();
    let settings = PipelineSettings {
        summary_interval_secs: 60,
        ..PipelineSettings::default()
    };
    let summaries = |recs: &[Record]| -> Vec<crate::record::SummaryRecord> {
        recs.iter()
            .filter_map(|r| match r {
                Record::Summary(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    };
    let mut p = Processor::new(
        &settings,
        shared(ModelRegistry::empty()),
        Box::new(store.clone()),
    );
    let mut recs = Vec::new();
    for (t, v) in [(5, 40.0), (30, 44.0), (59, 42.0), (61, 50.0), (90, 52.0)] {
        recs.extend(p.process(&[ch.reading(T0 + t * S, Value::Scalar(v))]));
    }
    let s = summaries(&recs);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].bucket_start_us, T0);
    assert_eq!(
        (s[0].min, s[0].max, s[0].count, s[0].last),
        (40.0, 44.0, 3, 42.0)
    );
    assert!((s[0].avg - 42.0).abs() < 1e-12);
    assert_eq!(s[0].interval_secs, 60);

    let partial = summaries(&p.flush());
    assert_eq!(partial.len(), 1);
    assert_eq!(
        (partial[0].bucket_start_us, partial[0].count),
        (T0 + 60 * S, 2)
    );

    // Restart within the same minute: the bucket resumes, and its final emission
    // covers the readings from before the restart too.
    let mut p = Processor::new(&settings, shared(ModelRegistry::empty()), Box::new(store));
    let mut recs = Vec::new();
    for (t, v) in [(100, 48.0), (125, 10.0)] {
        recs.extend(p.process(&[ch.reading(T0 + t * S, Value::Scalar(v))]));
    }
    let s = summaries(&recs);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].bucket_start_us, T0 + 60 * S);
    assert_eq!(
        (s[0].count, s[0].min, s[0].max, s[0].last),
        (3, 48.0, 52.0, 48.0)
    );
}

#[test]
fn summary_state_is_one_entry_per_device_and_an_older_per_channel_entry_still_resumes() {
    let settings = PipelineSettings {
        summary_interval_secs: 60,
        ..PipelineSettings::default()
    };
    let a = ChannelId::new("press", "a", SensorType::Temperature, "°C");
    let b = ChannelId::new("press", "b", SensorType::Temperature, "°C");
    let c = ChannelId::new("pump", "c", SensorType::Temperature, "°C");
    let store = MemoryStateStore::new();
    let mut p = Processor::new(
        &settings,
        shared(ModelRegistry::empty()),
        Box::new(store.clone()),
    );
    p.process(&[
        a.reading(T0 + S, Value::Scalar(1.0)),
        b.reading(T0 + S, Value::Scalar(2.0)),
        c.reading(T0 + S, Value::Scalar(3.0)),
    ]);
    // One entry per device that got readings, holding each of its channels' buckets.
    let state = p.take_state(false);
    let keys: Vec<&str> = state.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["summaries/60/press", "summaries/60/pump"]);
    // `[(sensor_id, bucket, counted timestamps)]`; a polled channel remembers none.
    let press: Vec<(String, crate::pipeline::summary::Bucket, Vec<i64>)> =
        rmp_serde::from_slice(&state[0].1).unwrap();
    assert_eq!(
        press
            .iter()
            .map(|(id, b, recent)| (id.as_str(), b.count, recent.len()))
            .collect::<Vec<_>>(),
        [("press.a", 1, 0), ("press.b", 1, 0)]
    );
    // Only `pump` gets a reading: only its entry is written.
    p.process(&[c.reading(T0 + 2 * S, Value::Scalar(3.5))]);
    let state = p.take_state(false);
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].0, "summaries/60/pump");

    // A store written by an older version: one JSON entry per channel. A device
    // without a per-device entry resumes from it.
    let old = MemoryStateStore::new();
    let bucket = crate::pipeline::summary::Bucket {
        start_us: T0,
        min: 5.0,
        max: 7.0,
        sum: 12.0,
        count: 2,
        last: 7.0,
        last_ts_us: T0 + 10 * S,
    };
    let mut w = old.clone();
    crate::pipeline::StateStore::put(
        &mut w,
        "summary/60/press.a",
        &serde_json::to_vec(&bucket).unwrap(),
    )
    .unwrap();
    let mut p = Processor::new(
        &settings,
        shared(ModelRegistry::empty()),
        Box::new(old.clone()),
    );
    p.process(&[a.reading(T0 + 20 * S, Value::Scalar(9.0))]);
    let s: Vec<_> = p
        .flush()
        .into_iter()
        .filter_map(|r| match r {
            Record::Summary(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].count, s[0].min, s[0].max, s[0].last),
        (3, 5.0, 9.0, 9.0)
    );

    // A per-device entry of the version before the counted timestamps were kept
    // (`[(sensor_id, bucket)]`) still resumes.
    let mut w = old.clone();
    crate::pipeline::StateStore::put(
        &mut w,
        "summaries/60/pump",
        &rmp_serde::to_vec(&[("pump.c", bucket)]).unwrap(),
    )
    .unwrap();
    let mut p = Processor::new(&settings, shared(ModelRegistry::empty()), Box::new(old));
    p.process(&[c.reading(T0 + 20 * S, Value::Scalar(9.0))]);
    let s = summary_records(&p.flush());
    assert_eq!((s[0].sensor_id.as_str(), s[0].count), ("pump.c", 3));
}

fn summary_records(recs: &[Record]) -> Vec<crate::record::SummaryRecord> {
    recs.iter()
        .filter_map(|r| match r {
            Record::Summary(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// A SIGKILL between out-of-order readings of an MQTT channel: the state entry
/// committed with the records holds the timestamps the bucket counted, so after the
/// restart a late reading that was never stored is counted and the redelivered ones
/// are not (the fourth one-hour worst-day run found an hourly summary 3 readings
/// short while the entry held only the measures).
#[test]
fn a_late_reading_after_a_restart_is_summarised_and_a_redelivered_one_is_not() {
    let settings = PipelineSettings {
        summary_interval_secs: 3600,
        ..PipelineSettings::default()
    };
    let t = ChannelId::new("kiln", "t", SensorType::Temperature, "°C");
    let store = MemoryStateStore::new();
    let mut p = Processor::new(
        &settings,
        shared(ModelRegistry::empty()),
        Box::new(store.clone()),
    );
    p.set_redelivering(true);
    p.process(&[
        t.reading(T0 + 10 * S, Value::Scalar(1.0)),
        t.reading(T0 + 20 * S, Value::Scalar(2.0)),
        t.reading(T0 + 30 * S, Value::Scalar(3.0)),
    ]);
    // Committed with the records of these readings; then the gateway is killed.
    let mut w = store.clone();
    for (k, v) in p.take_state(true) {
        crate::pipeline::StateStore::put(&mut w, &k, &v).unwrap();
    }
    drop(p);

    let mut p = Processor::new(&settings, shared(ModelRegistry::empty()), Box::new(store));
    p.set_redelivering(true);
    // The broker redelivers 20 and 30; 25 was in flight, never stored.
    p.process(&[
        t.reading(T0 + 20 * S, Value::Scalar(2.0)),
        t.reading(T0 + 25 * S, Value::Scalar(9.0)),
        t.reading(T0 + 30 * S, Value::Scalar(3.0)),
        t.reading(T0 + 40 * S, Value::Scalar(4.0)),
    ]);
    let s = summary_records(&p.flush());
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].count, s[0].max, s[0].last), (5, 9.0, 4.0));
    assert!((s[0].avg - 19.0 / 5.0).abs() < 1e-12, "{:?}", s[0]);
}

#[test]
fn a_swapped_registry_takes_effect_at_the_next_window() {
    let registry = shared(ModelRegistry::empty());
    let ch = ChannelId::new("fan", "accel", SensorType::Bearing, "g");
    let x = read_f32("testdata/cwru/normal_12k_holdout.f32");
    let mut p = Processor::new(
        &PipelineSettings::default(),
        registry.clone(),
        Box::new(MemoryStateStore::new()),
    );
    let all = blocks(&ch, &x, 2048, T0);
    let (first, rest) = all.split_at(4);
    let before = p.process(first);
    let ws = windows(&before);
    assert!(!ws.is_empty());
    // No model: the channel is learning its baseline, so nothing is scored yet, and
    // every window says so.
    assert!(ws.iter().all(|w| w.score.is_none()
        && w.detector
            .as_deref()
            .is_some_and(|d| d.starts_with("commissioning"))));

    registry.store(absolute().load_full());
    let after = p.process(rest);
    let ws = windows(&after);
    assert!(!ws.is_empty());
    assert!(ws
        .iter()
        .all(|w| w.detector.as_deref() == Some("vibration-default@1.0.0")));
    // Bearing channels share the vibration model; healthy data raises nothing.
    assert!(alerts(&after).is_empty());
}

#[test]
fn settings_parse_with_defaults_and_report_every_problem() {
    let s: PipelineSettings = toml::from_str("").expect("empty section is valid");
    assert_eq!(s, PipelineSettings::default());
    assert!(s.validate().is_ok());
    let err = toml::from_str::<PipelineSettings>("window_sample = 1024").expect_err("typo");
    assert!(err.to_string().contains("window_sample"), "{err}");
    let bad = PipelineSettings {
        debounce_k: 6,
        summary_interval_secs: 10,
        hysteresis: 1.5,
        ..PipelineSettings::default()
    };
    let problems = bad.validate().expect_err("invalid");
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems
        .iter()
        .any(|p| p.starts_with("pipeline.summary_interval_secs")));
}

fn detection_for(settings: &PipelineSettings, machine: &str) -> super::settings::DeviceDetection {
    let m: super::settings::MachineSettings = toml::from_str(machine).expect("machine settings");
    super::settings::DeviceDetection::resolve(settings, None, Some(&m))
}

#[test]
fn iso_zones_alert_on_a_velocity_register_without_any_learning() {
    // A velocity RMS register (mm/s) of a group 2 machine on a rigid foundation:
    // zone limits 1.4 / 2.8 / 4.5 mm/s. Zone D is severity 5, from the first readings.
    let ch = ChannelId::new("pump", "velocity_rms", SensorType::Vibration, "mm/s");
    let settings = PipelineSettings::default();
    let mut p = Processor::new(&settings, defaults(), Box::new(MemoryStateStore::new()));
    p.configure_device(
        "pump",
        detection_for(&settings, "iso_group = 2\nfoundation = \"rigid\""),
    );
    let mut recs = Vec::new();
    for i in 0..10 {
        let v = if i < 5 { 2.0 } else { 6.0 };
        recs.extend(p.process(&[ch.reading(T0 + i * 60 * S, Value::Scalar(v))]));
    }
    let al = alerts(&recs);
    assert_eq!(al.len(), 1, "{al:?}");
    assert_eq!(al[0].anomaly_type, "vibration_severity");
    assert_eq!(al[0].severity, 5);
    assert_eq!(al[0].evidence["zone"], "D");
    assert_eq!(al[0].ts_us, T0 + 7 * 60 * S, "3 of 5 readings in zone D");
    assert!(
        al[0].description.contains("ISO 20816-3 zone D"),
        "{}",
        al[0].description
    );
}

#[test]
fn a_drop_in_vibration_is_a_change_of_state_not_a_fault() {
    let ch = ChannelId::new("fan", "accel", SensorType::Vibration, "g");
    let x = read_f32("testdata/cwru/normal_12k.f32");
    let mut settings = PipelineSettings::default();
    settings.baseline.learn = super::settings::TimeSpan::from_secs(2.0);
    let mut p = Processor::new(&settings, defaults(), Box::new(MemoryStateStore::new()));
    let mut recs = p.process(&blocks(&ch, &x, 2048, T0));
    assert!(alerts(&recs).is_empty(), "healthy: {:?}", alerts(&recs));
    assert_eq!(p.counters().baselines_learned, 1);
    // The machine slows down: the same vibration at a fifth of its level.
    let quiet: Vec<f32> = x.iter().map(|v| v * 0.2).collect();
    let t1 = T0 + 6 * S;
    recs = p.process(&blocks(&ch, &quiet, 2048, t1));
    let al = alerts(&recs);
    assert!(!al.is_empty(), "a state change is reported");
    assert!(
        al.iter().all(|a| a.anomaly_type == "machine_state_changed"),
        "{al:?}"
    );
    assert_eq!(al[0].severity, 1);
    assert!(
        al[0].description.contains("not a bearing fault"),
        "{}",
        al[0].description
    );
}

#[test]
fn arrival_stamps_stay_distinct_and_payload_stamps_are_kept() {
    let ch = ChannelId::new("line", "p", SensorType::Pressure, "bar");
    let mut p = Processor::new(
        &PipelineSettings::default(),
        defaults(),
        Box::new(MemoryStateStore::new()),
    );
    let arrival = |ts: i64, v: f64| Reading {
        arrival: true,
        ..ch.reading(ts, Value::Scalar(v))
    };
    // Five readings received in the same microsecond, then one "earlier" (a clock
    // step): six distinct, strictly increasing stamps.
    let batch: Vec<Reading> = (0..5)
        .map(|i| arrival(T0, f64::from(i)))
        .chain([arrival(T0 - 10, 9.0)])
        .collect();
    let stamps: Vec<i64> = p
        .process(&batch)
        .iter()
        .filter_map(|r| match r {
            Record::Reading(x) => Some(x.ts_us),
            _ => None,
        })
        .collect();
    assert_eq!(stamps, vec![T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 5]);
    // A device's own timestamps are its identity: a redelivered one keeps its stamp
    // (the outbox recognises it), whatever came before.
    let own = ch.reading(T0, Value::Scalar(1.0));
    let out = p.process(&[own.clone(), own]);
    let stamps: Vec<i64> = out
        .iter()
        .filter_map(|r| match r {
            Record::Reading(x) => Some(x.ts_us),
            _ => None,
        })
        .collect();
    assert_eq!(stamps, vec![T0, T0]);
}

/// The status page's plot behind a scalar alert: the channel's rolling trend and the
/// band its learned level allows at the alert's threshold (NAB machine temperature,
/// relative detection, default settings).
#[test]
fn a_scalar_alert_comes_with_its_trend_and_baseline_band() {
    let ch = ChannelId::new("kiln", "temp", SensorType::Temperature, "degF");
    let mut p = Processor::new(
        &PipelineSettings::default(),
        defaults(),
        Box::new(MemoryStateStore::new()),
    );
    let mut plot = None;
    for r in nab_readings(&ch) {
        let out = p.process(std::slice::from_ref(&r));
        if let Some(a) = alerts(&out).first() {
            let trend = p
                .scalar_trend("kiln.temp")
                .expect("a scalar channel's trend");
            plot = crate::ops::plot::capture_trend(a, "degF", trend);
            break;
        }
    }
    let plot = plot.expect("an alert with a plot");
    assert!(plot.trend.len() >= 20, "{} buckets", plot.trend.len());
    assert!(plot
        .trend
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].2 <= w[0].1 && w[0].1 <= w[0].3));
    let (lo, typical, hi) = plot.band.expect("the learned level's band");
    assert!(lo < typical && typical < hi, "{:?}", plot.band);
    // NAB's machine runs at 60..100 °F: the band is in the channel's own unit.
    assert!((40.0..120.0).contains(&typical), "{typical}");
    assert!(plot.waveform.is_empty() && plot.marks.is_empty());
}

#[test]
fn an_episode_open_at_a_restart_closes_after_it() {
    // Before: an episode that was open when the gateway stopped never closed (the
    // trackers lived in memory only), so the cloud kept it open and a stack light
    // stayed on.
    let settings = PipelineSettings {
        clear_windows: 2,
        ..PipelineSettings::default()
    };
    let ch = ChannelId::new("oven", "t1", SensorType::Temperature, "degC");
    let limits = ChannelLimits {
        min: Some(-40.0),
        max: Some(300.0),
        ..ChannelLimits::default()
    };
    let store = MemoryStateStore::new();
    let start = |store: &MemoryStateStore| {
        let mut p = Processor::new(
            &settings,
            shared(ModelRegistry::empty()),
            Box::new(store.clone()),
        );
        p.register_channel("oven.t1", limits.clone());
        p
    };
    let mut p = start(&store);
    let mut recs = Vec::new();
    for (i, v) in [20.0, 999.0, 999.0, 999.0].iter().enumerate() {
        recs.extend(p.process(&[ch.reading(T0 + i as i64 * 60 * S, Value::Scalar(*v))]));
        // What the writer commits with each batch.
        let mut w = store.clone();
        for (k, v) in p.take_state(true) {
            crate::pipeline::StateStore::put(&mut w, &k, &v).unwrap();
        }
    }
    let opened = alerts(&recs);
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].state, AlertState::Open);
    let episode = opened[0].episode_us;
    drop(p); // killed

    let mut p = start(&store);
    let mut recs = Vec::new();
    for (i, v) in [22.0, 23.0, 24.0].iter().enumerate() {
        recs.extend(p.process(&[ch.reading(T0 + (10 + i as i64) * 60 * S, Value::Scalar(*v))]));
    }
    let after = alerts(&recs);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        (
            after[0].state,
            after[0].episode_us,
            after[0].anomaly_type.as_str()
        ),
        (AlertState::Resolved, episode, "sensor_out_of_range")
    );
}

#[test]
fn a_baseline_reset_closes_the_open_episode_with_a_resolved_alert() {
    // A technician resets a channel's baseline after maintenance while its alarm is
    // open: the episode ends with a `resolved` alert (a stack light goes off), not
    // silently.
    let ch = ChannelId::new("line2", "pressure", SensorType::Pressure, "bar");
    let settings = learns_from_first_20();
    let normal = |i: i64| 5.0 + 0.05 * ((i * 7919) % 13) as f64 / 13.0;
    let mut p = Processor::new(&settings, defaults(), Box::new(MemoryStateStore::new()));
    let mut recs = Vec::new();
    for i in 0..50 {
        let v = if i < 40 { normal(i) } else { 2.0 };
        recs.extend(p.process(&[ch.reading(T0 + i * 10 * S, Value::Scalar(v))]));
    }
    let opened = alerts(&recs);
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0].state, AlertState::Open);
    assert_eq!(p.reset_baselines("line2"), ["line2.pressure"]);
    let recs = p.process(&[ch.reading(T0 + 500 * S, Value::Scalar(normal(50)))]);
    let closed = alerts(&recs);
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(
        (
            closed[0].state,
            closed[0].episode_us,
            closed[0].anomaly_type.as_str()
        ),
        (
            AlertState::Resolved,
            opened[0].episode_us,
            "pressure_anomaly"
        )
    );
    assert_eq!(closed[0].evidence["reason"], "baseline_reset");
    assert!(
        closed[0].description.contains("baseline reset"),
        "{}",
        closed[0].description
    );
}

/// A poll of 30 scalar channels is scored by one batched tract run
/// (`ModelBundle::score_rows`). Its records must be the records of the same readings
/// processed one call each, in the same order: through learning, scoring, a fault
/// that opens episodes, a channel read twice in one batch, and a missing value and a
/// waveform block in the middle of a batch.
#[test]
fn a_batch_of_scalars_gives_the_records_of_one_reading_at_a_time() {
    let registry = defaults();
    assert!(
        registry
            .load()
            .bundles()
            .iter()
            .any(|b| b.manifest().name == "scalar-relative" && b.batches()),
        "the relative scalar bundle batches"
    );
    let settings = learns_from_first_20();
    let chans: Vec<ChannelId> = (0..30)
        .map(|i| {
            let t = if i % 2 == 0 {
                SensorType::Pressure
            } else {
                SensorType::Temperature
            };
            ChannelId::new("press7", &format!("r{i}"), t, "bar")
        })
        .collect();
    let vib = ChannelId::new("press7", "accel", SensorType::Vibration, "g");
    let x = read_f32("testdata/cwru/normal_12k_holdout.f32");
    let normal =
        |c: usize, n: i64| 5.0 + c as f64 + 0.05 * ((n * 7919 + c as i64) % 13) as f64 / 13.0;
    let mut polls: Vec<Vec<Reading>> = Vec::new();
    for n in 0..80i64 {
        let ts = T0 + n * 10 * S;
        let mut poll: Vec<Reading> = chans
            .iter()
            .enumerate()
            .map(|(c, ch)| {
                // Channels 0..6 fall to 2 bar from poll 60 on: their episodes open.
                let v = if c < 6 && n >= 60 { 2.0 } else { normal(c, n) };
                ch.reading(ts, Value::Scalar(v))
            })
            .collect();
        if n == 70 {
            poll.push(chans[3].reading(ts + S, Value::Scalar(2.0)));
        }
        if n == 71 {
            poll.insert(10, chans[10].reading(ts, Value::Missing));
            poll.insert(
                20,
                vib.reading(
                    ts,
                    Value::Block {
                        sample_rate_hz: 12_000.0,
                        samples: Arc::from(&x[..2048]),
                    },
                ),
            );
        }
        polls.push(poll);
    }
    let run = |batched: bool| {
        let mut p = Processor::new(
            &settings,
            registry.clone(),
            Box::new(MemoryStateStore::new()),
        );
        let mut recs = Vec::new();
        for poll in &polls {
            if batched {
                recs.extend(p.process(poll));
            } else {
                for r in poll {
                    recs.extend(p.process(std::slice::from_ref(r)));
                }
            }
        }
        (recs, *p.counters())
    };
    let (batched, cb) = run(true);
    let (single, cs) = run(false);
    assert!(cb.scored_by_model > 1000, "{cb:?}");
    assert!(!alerts(&batched).is_empty(), "the fault opens episodes");
    assert_eq!(batched.len(), single.len());
    for (i, (a, b)) in batched.iter().zip(&single).enumerate() {
        assert_eq!(a, b, "record {i}");
    }
    assert_eq!(format!("{cb:?}"), format!("{cs:?}"));
}
