//! Record builders shared by the `tests/outbox_*.rs` files.
#![allow(dead_code)]

use edgegw::record::*;

pub fn reading(i: i64) -> Record {
    Record::Reading(ReadingRecord {
        sensor_id: format!("press-{:02}.vib_rms", i % 7).into(),
        device: format!("press-{:02}", i % 7).into(),
        channel: "vib_rms".into(),
        sensor_type: SensorType::Vibration,
        unit: "mm/s".into(),
        ts_us: 1_764_079_387_250_000 + i * 1_000_000,
        value: i as f64,
        quality: 1.0,
        flags: Vec::new(),
        detection: None,
    })
}

pub fn window(i: i64) -> Record {
    Record::Window(WindowRecord {
        sensor_id: "press-01.vib".into(),
        device: "press-01".into(),
        channel: "vib".into(),
        sensor_type: SensorType::Vibration,
        unit: "g".into(),
        ts_us: 1_764_079_387_250_000 + i,
        sample_rate_hz: 25_600.0,
        samples: 2048,
        features: vec![("rms".into(), 0.5), ("kurtosis".into(), i as f64)],
        score: Some(0.2),
        threshold: Some(0.8),
        detector: Some("bearing@3".into()),
        quality: 1.0,
    })
}

pub fn alert(i: i64) -> Record {
    Record::Alert(AlertRecord {
        sensor_id: "press-01.vib".into(),
        device: "press-01".into(),
        channel: "vib".into(),
        sensor_type: SensorType::Vibration,
        anomaly_type: "vibration_anomaly".into(),
        severity: 4,
        confidence: 0.7,
        description: format!("alert {i}"),
        evidence: serde_json::json!({"rms": 4.2, "score": 0.93, "i": i}),
        recommended_actions: vec!["inspect bearing".into()],
        state: AlertState::Open,
        episode_us: 1_764_079_387_250_000,
        ts_us: 1_764_079_387_250_000 + i,
    })
}

pub fn summary(i: i64) -> Record {
    Record::Summary(SummaryRecord {
        device: Default::default(),
        sensor_id: "press-01.temp".into(),
        sensor_type: SensorType::Temperature,
        unit: "degC".into(),
        bucket_start_us: 1_764_079_200_000_000 + i,
        interval_secs: 3600,
        min: 20.0,
        max: 31.5,
        avg: 25.25,
        count: 3600,
        last: i as f64,
    })
}

/// The `value` of a reading made by [`reading`] (its index).
pub fn reading_index(r: &Record) -> Option<i64> {
    match r {
        Record::Reading(r) => Some(r.value as i64),
        _ => None,
    }
}
