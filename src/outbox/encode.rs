//! Payload encoding of outbox records.
//!
//! The kind is a column, so only the inner record (`ReadingRecord`, ...) is encoded,
//! as compact MessagePack (`rmp-serde`, structs as arrays, no field names). It is
//! self-describing enough for `serde_json::Value` (alert evidence) and
//! `skip_serializing_if` fields, which non-self-describing formats (postcard, bincode)
//! cannot round-trip. Measured sizes are in docs/outbox.md.
//!
//! Compatibility rule this implies: the field order of the record structs in
//! `src/record.rs` is part of the on-disk format. New fields go at the end with
//! `#[serde(default)]`; anything else needs a schema migration.

use crate::record::{Record, RecordKind};

/// Encodes the inner record of `record` (its kind is stored separately).
pub fn encode(record: &Record) -> Result<Vec<u8>, String> {
    let res = match record {
        Record::Reading(r) => rmp_serde::to_vec(r),
        Record::Window(r) => rmp_serde::to_vec(r),
        Record::Alert(r) => rmp_serde::to_vec(r),
        Record::Summary(r) => rmp_serde::to_vec(r),
    };
    res.map_err(|e| e.to_string())
}

/// Decodes a payload stored with kind `kind` (the numeric value in SQLite).
pub fn decode(kind: i64, payload: &[u8]) -> Result<Record, String> {
    let kind = u8::try_from(kind)
        .ok()
        .and_then(RecordKind::from_u8)
        .ok_or_else(|| format!("unknown record kind {kind}"))?;
    let res = match kind {
        RecordKind::Reading => rmp_serde::from_slice(payload).map(Record::Reading),
        RecordKind::Window => rmp_serde::from_slice(payload).map(Record::Window),
        RecordKind::Alert => rmp_serde::from_slice(payload).map(Record::Alert),
        RecordKind::Summary => rmp_serde::from_slice(payload).map(Record::Summary),
    };
    res.map_err(|e| format!("{kind} payload: {e}"))
}

/// The inner record as JSON, for `edgegw outbox dump` and dead-letter listings.
pub fn to_json(record: &Record) -> serde_json::Value {
    let res = match record {
        Record::Reading(r) => serde_json::to_value(r),
        Record::Window(r) => serde_json::to_value(r),
        Record::Alert(r) => serde_json::to_value(r),
        Record::Summary(r) => serde_json::to_value(r),
    };
    res.unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::*;

    pub(crate) fn reading(i: i64) -> Record {
        Record::Reading(ReadingRecord {
            sensor_id: "press-01.vib_rms".into(),
            device: "press-01".into(),
            channel: "vib_rms".into(),
            sensor_type: SensorType::Vibration,
            unit: "mm/s".into(),
            ts_us: 1_764_079_387_250_000 + i * 1_000_000,
            value: 2.5 + (i as f64) * 0.001,
            quality: 1.0,
            flags: Vec::new(),
            detection: None,
        })
    }

    pub(crate) fn alert(i: i64) -> Record {
        Record::Alert(AlertRecord {
            sensor_id: "press-01.vib".into(),
            device: "press-01".into(),
            channel: "vib".into(),
            sensor_type: SensorType::Vibration,
            anomaly_type: "vibration_anomaly".into(),
            severity: 4,
            confidence: 0.7,
            description: format!("alert {i}"),
            evidence: serde_json::json!({"rms": 4.2, "score": 0.93, "model": "bearing@3", "n": [1, -2, 3]}),
            recommended_actions: vec!["inspect bearing".into()],
            state: AlertState::Open,
            episode_us: 1_764_079_387_250_000,
            ts_us: 1_764_079_387_250_000 + i,
        })
    }

    pub(crate) fn window(i: i64) -> Record {
        Record::Window(WindowRecord {
            sensor_id: "press-01.vib".into(),
            device: "press-01".into(),
            channel: "vib".into(),
            sensor_type: SensorType::Vibration,
            unit: "g".into(),
            ts_us: 1_764_079_387_250_000 + i,
            sample_rate_hz: 25_600.0,
            samples: 2048,
            features: vec![("rms".into(), 0.5), ("kurtosis".into(), 3.1)],
            score: Some(0.2),
            threshold: Some(0.8),
            detector: Some("bearing@3".into()),
            quality: 1.0,
        })
    }

    pub(crate) fn summary(i: i64) -> Record {
        Record::Summary(SummaryRecord {
            sensor_id: "press-01.temp".into(),
            sensor_type: SensorType::Temperature,
            unit: "degC".into(),
            bucket_start_us: 1_764_079_200_000_000 + i,
            interval_secs: 3600,
            min: 20.0,
            max: 31.5,
            avg: 25.25,
            count: 3600,
            last: 30.0,
            device: "press-01".into(),
        })
    }

    #[test]
    fn every_kind_roundtrips() {
        let mut flagged = reading(7);
        if let Record::Reading(r) = &mut flagged {
            r.flags = vec!["spike".into(), "modbus_exception:2".into()];
            r.quality = 0.25;
        }
        for rec in [reading(1), flagged, window(2), alert(3), summary(4)] {
            let bytes = encode(&rec).expect("encodes");
            let back = decode(rec.kind() as i64, &bytes).expect("decodes");
            assert_eq!(back, rec);
        }
    }

    #[test]
    fn garbage_and_wrong_kind_are_errors_not_panics() {
        assert!(decode(1, &[0xc1, 0xff, 0x00]).is_err());
        assert!(decode(99, &[]).is_err());
        let bytes = encode(&reading(1)).expect("encodes");
        assert!(decode(RecordKind::Alert as i64, &bytes).is_err());
        assert!(decode(1, &bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn reading_is_much_smaller_than_json() {
        let rec = reading(1);
        let packed = encode(&rec).expect("encodes").len();
        let json = serde_json::to_vec(&rec).expect("json").len();
        assert!(packed * 2 < json, "msgpack {packed} B vs json {json} B");
    }
}
