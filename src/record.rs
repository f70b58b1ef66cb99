//! What flows from the pipeline into the outbox, and from the outbox upstream.
//!
//! These types are the seam between the stages: the pipeline builds [`Record`]s,
//! the outbox stores them (assigning the monotonic id and the stable record key),
//! and the forwarders in `upstream/` turn [`StoredRecord`]s into wire formats.
//! Nothing here knows a wire format or SQLite.

use serde::{Deserialize, Serialize};
use std::fmt;

pub use crate::id::{Id, NameMap, NameSet};

/// Microseconds since the Unix epoch, UTC. Every timestamp in the pipeline uses it
/// (defined with the number crunching, which uses it too).
pub use edgegw_dsp::TimestampUs;

/// Now, in microseconds since the Unix epoch.
pub fn now_us() -> TimestampUs {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(_) => 0,
    }
}

/// Formats a timestamp as RFC 3339 UTC with a `Z` suffix and millisecond precision,
/// as the cloud's HTTP ingest API expects (`2026-11-25T14:03:07.250Z`).
pub fn format_rfc3339(ts_us: TimestampUs) -> String {
    let nanos = i128::from(ts_us) * 1_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// The cloud's sensor types (the `type` / `sensor_type` columns upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum SensorType {
    Temperature,
    Vibration,
    Pressure,
    Humidity,
    Bearing,
    Pump,
    Manufacturing,
    Audio,
    Forecasting,
    Voltage,
    General,
}

impl SensorType {
    pub const ALL: [SensorType; 11] = [
        SensorType::Temperature,
        SensorType::Vibration,
        SensorType::Pressure,
        SensorType::Humidity,
        SensorType::Bearing,
        SensorType::Pump,
        SensorType::Manufacturing,
        SensorType::Audio,
        SensorType::Forecasting,
        SensorType::Voltage,
        SensorType::General,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SensorType::Temperature => "temperature",
            SensorType::Vibration => "vibration",
            SensorType::Pressure => "pressure",
            SensorType::Humidity => "humidity",
            SensorType::Bearing => "bearing",
            SensorType::Pump => "pump",
            SensorType::Manufacturing => "manufacturing",
            SensorType::Audio => "audio",
            SensorType::Forecasting => "forecasting",
            SensorType::Voltage => "voltage",
            SensorType::General => "general",
        }
    }
}

impl fmt::Display for SensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kind of an outbox record. The numeric value is stored in SQLite: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum RecordKind {
    /// A scalar reading (temperature, RMS register, ...).
    Reading = 1,
    /// The feature vector of one waveform window (raw waveforms never go upstream).
    Window = 2,
    /// An anomaly alert, or an update/resolution of one.
    Alert = 3,
    /// A per-channel summary over an interval (min/max/avg/count/last).
    Summary = 4,
}

impl RecordKind {
    pub const ALL: [RecordKind; 4] = [
        RecordKind::Reading,
        RecordKind::Window,
        RecordKind::Alert,
        RecordKind::Summary,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Reading => "reading",
            RecordKind::Window => "window",
            RecordKind::Alert => "alert",
            RecordKind::Summary => "summary",
        }
    }

    pub fn from_u8(v: u8) -> Option<RecordKind> {
        match v {
            1 => Some(RecordKind::Reading),
            2 => Some(RecordKind::Window),
            3 => Some(RecordKind::Alert),
            4 => Some(RecordKind::Summary),
            _ => None,
        }
    }

    /// Eviction priority: higher survives longer when the outbox is full.
    /// Alerts are the last thing ever evicted.
    pub fn priority(self) -> u8 {
        match self {
            RecordKind::Reading | RecordKind::Window => 0,
            RecordKind::Summary => 1,
            RecordKind::Alert => 9,
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record on its way into the outbox. The outbox assigns id and key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    Reading(ReadingRecord),
    Window(WindowRecord),
    Alert(AlertRecord),
    Summary(SummaryRecord),
}

impl Record {
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Reading(_) => RecordKind::Reading,
            Record::Window(_) => RecordKind::Window,
            Record::Alert(_) => RecordKind::Alert,
            Record::Summary(_) => RecordKind::Summary,
        }
    }

    /// The sensor this record is about (upstream `sensor_id`).
    pub fn sensor_id(&self) -> &str {
        match self {
            Record::Reading(r) => &r.sensor_id,
            Record::Window(r) => &r.sensor_id,
            Record::Alert(r) => &r.sensor_id,
            Record::Summary(r) => &r.sensor_id,
        }
    }

    /// The time the record is about (reading time, window end, alert time, bucket start).
    pub fn ts_us(&self) -> TimestampUs {
        match self {
            Record::Reading(r) => r.ts_us,
            Record::Window(r) => r.ts_us,
            Record::Alert(r) => r.ts_us,
            Record::Summary(r) => r.bucket_start_us,
        }
    }
}

/// A record as stored in (and read back from) the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// Monotonic id (SQLite rowid); cursors and `ack(up_to_id)` use it.
    pub id: i64,
    /// Stable key for idempotent upstream writes: `<gateway id>:<outbox epoch>:<sequence>`.
    /// The epoch is random per outbox database, so a fresh database after a corrupt one
    /// was moved aside never reuses a key that was already delivered.
    pub key: String,
    /// When the record entered the outbox.
    pub created_us: TimestampUs,
    pub record: Record,
}

/// A scalar reading after validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingRecord {
    /// Upstream sensor id: `<device id>.<channel>`.
    pub sensor_id: Id,
    pub device: Id,
    pub channel: Id,
    pub sensor_type: SensorType,
    pub unit: Id,
    pub ts_us: TimestampUs,
    pub value: f64,
    /// 0..1; 1 is a clean reading. Lowered by validation, 0 for a Modbus exception.
    pub quality: f32,
    /// Why quality was lowered (e.g. `out_of_range`, `stuck`, `spike`, `stale`,
    /// `modbus_exception:2`); empty for a clean reading. Always written (not skipped
    /// when empty): `detection` follows it in the positional outbox encoding.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Which detector looked at this reading and what it scored, so "the model ran
    /// and was calm" can be told from "it never ran" (`None` in records written
    /// before this field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<ScoreInfo>,
}

/// What detection made of one reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreInfo {
    /// `name@version` of the model bundle, `baseline-rule` (the built-in relative
    /// rule), `commissioning` (the channel is still learning its baseline), or
    /// `not-scored` (out of range or zero quality).
    pub detector: Id,
    pub score: Option<f64>,
    pub threshold: Option<f64>,
}

/// Feature vector of one waveform window, plus the anomaly score when a model ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowRecord {
    pub sensor_id: Id,
    pub device: Id,
    pub channel: Id,
    pub sensor_type: SensorType,
    pub unit: Id,
    /// Time of the last sample in the window.
    pub ts_us: TimestampUs,
    pub sample_rate_hz: f64,
    pub samples: u32,
    /// Ordered (name, value) pairs: rms, peak_to_peak, kurtosis, ...
    pub features: Vec<(String, f64)>,
    /// Anomaly score from the model or the statistical fallback, if one ran.
    pub score: Option<f64>,
    pub threshold: Option<f64>,
    /// `name@version` of the model, or `fallback`.
    pub detector: Option<Id>,
    /// Lowest quality of the samples that made the window.
    pub quality: f32,
}

/// Lifecycle of an alert episode, as the cloud's `anomaly_alerts.status` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// A new episode opened.
    Open,
    /// The same episode, still active, with fresher evidence.
    Update,
    /// The channel returned to normal; the episode is closed.
    Resolved,
}

/// An anomaly alert in the cloud's terms (`anomaly_alerts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub sensor_id: Id,
    pub device: Id,
    pub channel: Id,
    pub sensor_type: SensorType,
    /// `vibration_anomaly`, `temperature_anomaly`, `sensor_stuck`, `sensor_out_of_range`, ...
    pub anomaly_type: String,
    /// 1..5, from confidence by the cloud's mapping (see [`severity_from_confidence`]).
    pub severity: u8,
    /// 0..1
    pub confidence: f64,
    pub description: String,
    /// Feature values, score, threshold, model name and version.
    pub evidence: serde_json::Value,
    pub recommended_actions: Vec<String>,
    pub state: AlertState,
    /// Identifies the episode: the `ts_us` of the alert that opened it. Updates and the
    /// resolution of one episode share it, so upstream can group them.
    pub episode_us: TimestampUs,
    pub ts_us: TimestampUs,
}

/// Severity 1..5 from confidence 0..1, exactly as the cloud computes it.
pub fn severity_from_confidence(confidence: f64) -> u8 {
    if confidence > 0.8 {
        5
    } else if confidence > 0.6 {
        4
    } else if confidence > 0.4 {
        3
    } else if confidence > 0.2 {
        2
    } else {
        1
    }
}

/// Per-channel summary over one interval, same measures as the cloud's hourly aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRecord {
    pub sensor_id: Id,
    pub sensor_type: SensorType,
    pub unit: Id,
    pub bucket_start_us: TimestampUs,
    pub interval_secs: u32,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    pub count: u64,
    pub last: f64,
    /// The device of `sensor_id` (device ids may hold dots, so it cannot be split
    /// back out of the sensor id). Last, with a default: summaries stored before it
    /// existed decode with "" (see `outbox/encode.rs`).
    #[serde(default)]
    pub device: Id,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_matches_the_cloud_mapping() {
        assert_eq!(severity_from_confidence(0.95), 5);
        assert_eq!(severity_from_confidence(0.8), 4);
        assert_eq!(severity_from_confidence(0.61), 4);
        assert_eq!(severity_from_confidence(0.6), 3);
        assert_eq!(severity_from_confidence(0.41), 3);
        assert_eq!(severity_from_confidence(0.4), 2);
        assert_eq!(severity_from_confidence(0.21), 2);
        assert_eq!(severity_from_confidence(0.2), 1);
        assert_eq!(severity_from_confidence(0.0), 1);
    }

    #[test]
    fn rfc3339_is_utc_with_z() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339(1_764_079_387_250_000),
            "2025-11-25T14:03:07.250Z"
        );
    }

    #[test]
    fn kind_roundtrips_through_u8() {
        for k in RecordKind::ALL {
            assert_eq!(RecordKind::from_u8(k as u8), Some(k));
        }
        assert_eq!(RecordKind::from_u8(0), None);
    }
}
