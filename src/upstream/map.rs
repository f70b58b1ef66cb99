//! How our records map onto the cloud's vocabulary, shared by every sink: derived
//! readings of window features, deterministic uuids, metadata, JSON payloads.
//!
//! Pure functions, no I/O. The table in docs/upstreams.md mirrors this file.

use crate::record::{
    format_rfc3339, AlertRecord, AlertState, ReadingRecord, Record, SensorType, StoredRecord,
    SummaryRecord, TimestampUs, WindowRecord,
};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Namespace of every uuid the gateway derives (v5). Never change it: alert ids
/// upstream would change with it and re-sent alerts would duplicate.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x6d3c_1a8e_4f0b_5c2d_9e71_0a4b_8c5d_e6f7);

/// Id of the `anomaly_alerts` row of one alert episode: v5 of
/// `<gateway>:<sensor_id>:<episode_us>`. Open, updates and the resolution of one
/// episode share it, so an episode is one row whose status moves to `resolved`.
pub fn alert_id(gateway: &str, alert: &AlertRecord) -> Uuid {
    Uuid::new_v5(
        &NAMESPACE,
        format!("{gateway}:{}:{}", alert.sensor_id, alert.episode_us).as_bytes(),
    )
}

/// `sensors.id` of a sensor: v5 of its `sensor_id`, the same on every gateway.
pub fn sensor_uuid(sensor_id: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("sensor:{sensor_id}").as_bytes())
}

/// `correlation_id` of a record for the HTTP API: v5 of the record key.
pub fn correlation_id(key: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, key.as_bytes())
}

/// The gateway id is the first part of every record key.
pub fn gateway_of(key: &str) -> &str {
    key.split(':').next().unwrap_or(key)
}

/// One row for `sensor_readings`: a reading, or one feature of a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    pub sensor_id: std::borrow::Cow<'a, str>,
    pub sensor_type: SensorType,
    pub value: f64,
    pub unit: Option<&'a str>,
    pub ts_us: TimestampUs,
    pub quality: f64,
    /// `sensor_metadata` (JSON text).
    pub metadata: String,
}

/// Unit of a derived feature channel; `None` for dimensionless features.
pub fn feature_unit<'a>(feature: &str, signal_unit: &'a str) -> Option<&'a str> {
    match feature {
        "rms"
        | "peak_to_peak"
        | "std"
        | "mean"
        | "dominant_freq_amplitude"
        | "accel_rms"
        | "accel_peak"
        | "band_0_1k"
        | "band_1_4k"
        | "band_4k_up"
        | "envelope_rms" => Some(signal_unit),
        "dominant_freq" | "spectral_centroid" => Some("Hz"),
        // In mm/s when the signal is an acceleration the gateway knows (g, m/s²).
        "velocity_rms" => crate::pipeline::physical::accel_unit_to_ms2(signal_unit).map(|_| "mm/s"),
        "high_freq_energy"
        | "envelope_modulation"
        | "env_ftf"
        | "env_ball"
        | "env_bpfo"
        | "env_bpfi" => Some("ratio"),
        _ => None,
    }
}

fn window_metadata(rec: &StoredRecord, w: &WindowRecord) -> String {
    let mut features = Map::new();
    for (name, v) in &w.features {
        features.insert(name.clone(), json_number(*v));
    }
    json!({
        "record_key": rec.key,
        "derived_from": w.sensor_id,
        "features": features,
        "score": w.score.map(json_number),
        "threshold": w.threshold.map(json_number),
        "detector": w.detector,
        "sample_rate_hz": json_number(w.sample_rate_hz),
        "samples": w.samples,
    })
    .to_string()
}

fn json_number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// The `sensor_metadata` of a reading's row: `record_key`, the validation `flags`
/// when there are any, and `detector`, `score` and `threshold` when detection looked
/// at it (a score that is not a finite number is `null`).
///
/// Written in one pass into one string, in the order and form `serde_json` gives an
/// object built with `json!` (keys sorted): this runs once per reading on the way
/// upstream, and the `Value` tree took about ten allocations a reading.
#[derive(serde::Serialize)]
struct ReadingMetadata<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    detector: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    flags: &'a [String],
    record_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threshold: Option<Option<f64>>,
}

fn reading_metadata(rec: &StoredRecord, r: &ReadingRecord) -> String {
    let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
    let d = r.detection.as_ref();
    let meta = ReadingMetadata {
        detector: d.map(|d| d.detector.as_str()),
        flags: &r.flags,
        record_key: &rec.key,
        score: d.map(|d| finite(d.score)),
        threshold: d.map(|d| finite(d.threshold)),
    };
    let mut out = Vec::with_capacity(64 + rec.key.len());
    // Writing plain strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &meta);
    String::from_utf8(out).unwrap_or_default()
}

/// The `sensor_readings` rows of a record: one for a reading, one per feature (and
/// one for the anomaly score, when a detector ran) for a window, none otherwise.
pub fn rows(rec: &StoredRecord) -> Vec<Row<'_>> {
    let mut out = Vec::new();
    push_rows(rec, &mut out);
    out
}

/// [`rows`], appended to `out` (no Vec per record).
pub fn push_rows<'a>(rec: &'a StoredRecord, out: &mut Vec<Row<'a>>) {
    push_rows_inner(rec, out, true);
}

/// [`push_rows`] with an empty `metadata`: for an upstream that does not send it
/// (Redis keeps the latest value of each sensor), which would otherwise write a JSON
/// object per reading for nothing.
pub fn push_rows_bare<'a>(rec: &'a StoredRecord, out: &mut Vec<Row<'a>>) {
    push_rows_inner(rec, out, false);
}

fn push_rows_inner<'a>(rec: &'a StoredRecord, out: &mut Vec<Row<'a>>, with_metadata: bool) {
    match &rec.record {
        Record::Reading(r) => out.push(Row {
            sensor_id: r.sensor_id.as_str().into(),
            sensor_type: r.sensor_type,
            value: r.value,
            unit: (!r.unit.is_empty()).then_some(r.unit.as_str()),
            ts_us: r.ts_us,
            quality: f64::from(r.quality),
            metadata: if with_metadata {
                reading_metadata(rec, r)
            } else {
                String::new()
            },
        }),
        Record::Window(w) => {
            let metadata = if with_metadata {
                window_metadata(rec, w)
            } else {
                String::new()
            };
            out.extend(w.features.iter().map(|(name, v)| Row {
                sensor_id: format!("{}.{}", w.sensor_id, name).into(),
                sensor_type: w.sensor_type,
                value: *v,
                unit: feature_unit(name, &w.unit),
                ts_us: w.ts_us,
                quality: f64::from(w.quality),
                metadata: metadata.clone(),
            }));
            if let Some(score) = w.score {
                out.push(Row {
                    sensor_id: format!("{}.anomaly_score", w.sensor_id).into(),
                    sensor_type: w.sensor_type,
                    value: score,
                    unit: None,
                    ts_us: w.ts_us,
                    quality: f64::from(w.quality),
                    metadata,
                });
            }
        }
        Record::Alert(_) | Record::Summary(_) => {}
    }
}

/// Estimated bytes a record takes on the wire (for `batch_max_bytes`).
pub fn approx_bytes(record: &Record) -> usize {
    match record {
        Record::Reading(r) => 120 + r.sensor_id.len() + r.unit.len(),
        Record::Window(w) => 200 + w.features.len() * (w.sensor_id.len() + 220),
        Record::Alert(a) => {
            300 + a.description.len()
                + a.evidence.to_string().len()
                + a.recommended_actions.iter().map(String::len).sum::<usize>()
        }
        Record::Summary(s) => 200 + s.sensor_id.len(),
    }
}

/// `anomaly_alerts.status` an alert record asks for.
pub fn alert_status(a: &AlertRecord) -> &'static str {
    match a.state {
        AlertState::Open | AlertState::Update => "open",
        AlertState::Resolved => "resolved",
    }
}

/// Evidence as sent upstream: the record's evidence plus where it came from.
pub fn alert_evidence(rec: &StoredRecord, a: &AlertRecord) -> Value {
    let mut ev = match &a.evidence {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other.clone());
            m
        }
    };
    ev.insert("record_key".into(), Value::String(rec.key.clone()));
    ev.insert(
        "episode_start".into(),
        Value::String(format_rfc3339(a.episode_us)),
    );
    ev.insert("state".into(), json!(a.state));
    Value::Object(ev)
}

fn summary_json(s: &SummaryRecord) -> Value {
    json!({
        "sensor_id": s.sensor_id,
        "sensor_type": s.sensor_type,
        "unit": s.unit,
        "bucket": format_rfc3339(s.bucket_start_us),
        "interval_secs": s.interval_secs,
        "avg": json_number(s.avg),
        "max": json_number(s.max),
        "min": json_number(s.min),
        "count": s.count,
        "last": json_number(s.last),
    })
}

/// The JSON document of a record for the HTTP API and MQTT: readings in the ingest
/// API's shape, alerts in `anomaly_alerts`' shape, summaries with the hourly
/// measures. Every document carries the record key (`record_key`) so consumers can
/// drop the duplicates that at-least-once delivery may produce.
pub fn record_json(rec: &StoredRecord, gateway: &str) -> Value {
    match &rec.record {
        Record::Reading(r) => json!({
            "sensor_id": r.sensor_id,
            "value": json_number(r.value),
            "timestamp": format_rfc3339(r.ts_us),
            "sensor_type": r.sensor_type,
            "unit": r.unit,
            "quality": json_number(f64::from(r.quality).clamp(0.0, 1.0)),
            "correlation_id": correlation_id(&rec.key).to_string(),
            "metadata": {
                "gateway": gateway,
                "record_key": rec.key,
                "device": r.device,
                "channel": r.channel,
                "flags": r.flags,
                "detection": r.detection,
            },
        }),
        Record::Window(w) => {
            let mut features = Map::new();
            for (name, v) in &w.features {
                features.insert(name.clone(), json_number(*v));
            }
            json!({
                "sensor_id": w.sensor_id,
                "sensor_type": w.sensor_type,
                "unit": w.unit,
                "timestamp": format_rfc3339(w.ts_us),
                "quality": json_number(f64::from(w.quality)),
                "features": features,
                "score": w.score.map(json_number),
                "threshold": w.threshold.map(json_number),
                "detector": w.detector,
                "sample_rate_hz": json_number(w.sample_rate_hz),
                "samples": w.samples,
                "record_key": rec.key,
                "gateway": gateway,
            })
        }
        Record::Alert(a) => json!({
            "id": alert_id(gateway, a).to_string(),
            "sensor_id": a.sensor_id,
            "sensor_type": a.sensor_type,
            "anomaly_type": a.anomaly_type,
            "severity": a.severity,
            "confidence": json_number(a.confidence),
            "description": a.description,
            "evidence": alert_evidence(rec, a),
            "recommended_actions": a.recommended_actions,
            "status": alert_status(a),
            "state": a.state,
            "timestamp": format_rfc3339(a.ts_us),
            "record_key": rec.key,
            "gateway": gateway,
        }),
        Record::Summary(s) => {
            let mut v = summary_json(s);
            if let Value::Object(m) = &mut v {
                m.insert("record_key".into(), Value::String(rec.key.clone()));
                m.insert("gateway".into(), Value::String(gateway.to_string()));
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ReadingRecord, WindowRecord};

    fn stored(record: Record) -> StoredRecord {
        StoredRecord {
            id: 7,
            key: "gw1:abc:7".into(),
            created_us: 0,
            record,
        }
    }

    #[test]
    fn window_becomes_one_row_per_feature_plus_score() {
        let rec = stored(Record::Window(WindowRecord {
            sensor_id: "pump7.vib".into(),
            device: "pump7".into(),
            channel: "vib".into(),
            sensor_type: SensorType::Vibration,
            unit: "g".into(),
            ts_us: 1_000_000,
            sample_rate_hz: 10_000.0,
            samples: 2048,
            features: vec![("rms".into(), 0.5), ("kurtosis".into(), 3.1)],
            score: Some(0.2),
            threshold: Some(0.5),
            detector: Some("fallback".into()),
            quality: 1.0,
        }));
        let rows = rows(&rec);
        let ids: Vec<&str> = rows.iter().map(|r| r.sensor_id.as_ref()).collect();
        assert_eq!(
            ids,
            [
                "pump7.vib.rms",
                "pump7.vib.kurtosis",
                "pump7.vib.anomaly_score"
            ]
        );
        assert_eq!(rows[0].unit, Some("g"));
        assert_eq!(rows[1].unit, None);
        let meta: Value = serde_json::from_str(&rows[1].metadata).unwrap();
        assert_eq!(meta["features"]["rms"], json!(0.5));
        assert_eq!(meta["record_key"], json!("gw1:abc:7"));
    }

    /// The one-pass metadata of a reading is the text the `json!` form gave (keys
    /// sorted, non-finite scores `null`, strings escaped), in every shape it takes.
    #[test]
    fn reading_metadata_is_the_text_of_the_json_object() {
        let as_before = |rec: &StoredRecord, r: &ReadingRecord| {
            let mut m = if r.flags.is_empty() {
                json!({ "record_key": rec.key })
            } else {
                json!({ "record_key": rec.key, "flags": r.flags })
            };
            if let Some(d) = &r.detection {
                m["detector"] = json!(d.detector);
                m["score"] = json!(d.score.map(json_number));
                m["threshold"] = json!(d.threshold.map(json_number));
            }
            m.to_string()
        };
        let detections = [
            None,
            Some((Some(1.25), Some(4.0))),
            Some((None, None)),
            Some((Some(f64::NAN), Some(f64::INFINITY))),
            Some((Some(1e-300), Some(-0.0))),
        ];
        let mut n = 0;
        for flags in [vec![], vec!["stuck".to_string(), "a\"q\\\n".to_string()]] {
            for d in &detections {
                let mut rec = stored(Record::Reading(ReadingRecord {
                    sensor_id: "d.t".into(),
                    device: "d".into(),
                    channel: "t".into(),
                    sensor_type: SensorType::Temperature,
                    unit: "°C".into(),
                    ts_us: 1,
                    value: 21.5,
                    quality: 1.0,
                    flags: flags.clone(),
                    detection: d.map(|(score, threshold)| crate::record::ScoreInfo {
                        detector: "relative@1 \"ü\"".into(),
                        score,
                        threshold,
                    }),
                }));
                rec.key = "gw\"1:abc:7".into();
                let Record::Reading(r) = &rec.record else {
                    unreachable!()
                };
                assert_eq!(reading_metadata(&rec, r), as_before(&rec, r));
                assert_eq!(rows(&rec)[0].metadata, as_before(&rec, r));
                n += 1;
            }
        }
        assert_eq!(n, 10);
    }

    /// The ids upstream are part of the contract: a change of the namespace or of
    /// the names hashed would make every re-sent record a new row. Pinned to values
    /// computed independently (Python's `uuid.uuid5` with the same namespace).
    #[test]
    fn ids_are_pinned() {
        assert_eq!(
            NAMESPACE.to_string(),
            "6d3c1a8e-4f0b-5c2d-9e71-0a4b8c5de6f7"
        );
        assert_eq!(
            correlation_id("a:b:1").to_string(),
            "a207db9b-774f-5bba-b624-2b47598131da"
        );
        assert_ne!(correlation_id("a:b:1"), correlation_id("a:b:2"));
        assert_eq!(
            sensor_uuid("x.y").to_string(),
            "6c72c1e7-7f94-5b71-baa0-ed340b44eb9c"
        );
        let alert = AlertRecord {
            sensor_id: "pump7.vib".into(),
            device: "pump7".into(),
            channel: "vib".into(),
            sensor_type: SensorType::Vibration,
            anomaly_type: "bearing_wear".into(),
            severity: 3,
            confidence: 0.5,
            description: String::new(),
            evidence: json!({}),
            recommended_actions: Vec::new(),
            state: crate::record::AlertState::Open,
            episode_us: 1_000_000,
            ts_us: 2_000_000,
        };
        assert_eq!(
            alert_id("gw1", &alert).to_string(),
            "a56772c4-a43f-570f-82bc-018e2a7d1824"
        );
        assert_eq!(gateway_of("gw-1:ep:5"), "gw-1");
    }

    #[test]
    fn reading_json_has_the_ingest_fields() {
        let rec = stored(Record::Reading(ReadingRecord {
            sensor_id: "d.t".into(),
            device: "d".into(),
            channel: "t".into(),
            sensor_type: SensorType::Temperature,
            unit: "°C".into(),
            ts_us: 1_764_079_387_250_000,
            value: 21.5,
            quality: 1.0,
            flags: vec![],
            detection: None,
        }));
        let v = record_json(&rec, "gw1");
        for f in [
            "sensor_id",
            "value",
            "timestamp",
            "sensor_type",
            "unit",
            "quality",
            "correlation_id",
            "metadata",
        ] {
            assert!(v.get(f).is_some(), "{f} missing in {v}");
        }
        assert_eq!(v["timestamp"], json!("2025-11-25T14:03:07.250Z"));
        assert_eq!(v["sensor_type"], json!("temperature"));
    }
}
