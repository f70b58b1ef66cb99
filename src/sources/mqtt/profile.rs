//! The `[mqtt]` section of a hardware profile: topic filter, payload decoder,
//! timestamps, batches, topic levels and which part of a payload feeds which
//! channel. Re-exported at `crate::profiles`; its checks are in `profile_checks.rs`.

use crate::profiles::{default_delimiter, one};
use serde::Deserialize;

/// MQTT topic and payload mapping.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttFormat {
    /// Topic filter to subscribe to (`+` and `#` wildcards allowed), unless the device
    /// config names its own.
    pub topic: String,
    /// Payload decoder: `number`, `json`, `csv`, `f32le` or `i16le` (raw waveform).
    pub payload: PayloadFormat,
    /// JSON: where the reading's timestamp is; absent = time of arrival.
    pub timestamp: Option<TimestampField>,
    /// JSON: dotted path of an array of readings in one message (a batch). Each
    /// element is an object; field paths and the timestamp path are looked up in the
    /// element (the timestamp falls back to the message root).
    pub batch: Option<String>,
    /// CSV: field separator.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Raw waveforms: the capture rate of the samples. JSON: when set, a field whose
    /// value is an array of numbers becomes a waveform block at this rate.
    pub sample_rate_hz: Option<f64>,
    /// Raw waveforms and `number`: scale applied to every value.
    #[serde(default = "one")]
    pub scale: f64,
    /// Which part of the payload becomes which channel. For `number` and raw
    /// waveforms, exactly one field without `path`/`column` (or, with
    /// `channel_level`, one per topic value).
    pub fields: Vec<MqttField>,
    /// 0-based topic level (usually a `+` wildcard) whose value names the physical
    /// sensor behind one configured device, e.g. the node id in
    /// `wisense/+/+/data` is level 2. Readings then belong to device
    /// `<device id>-<level value>` (sensor id `<device id>-<level value>.<channel>`),
    /// so one device entry can cover a base station with many nodes. The level
    /// value must be a valid name (letters, digits, `_`, `-`, `.`), or the message
    /// is counted as `topic_level` and dropped.
    pub device_level: Option<usize>,
    /// With `device_level`: most distinct level values (dynamic devices) this
    /// subscription accepts. Each dynamic device costs memory for as long as the
    /// daemon runs (its channels' pipeline state), so anyone able to publish under
    /// the topic filter could otherwise grow the daemon without bound. Messages from
    /// further values are counted as `too_many_devices` (under the topic filter) and
    /// dropped.
    #[serde(default = "default_max_devices")]
    pub max_devices: usize,
    /// 0-based topic level whose value selects the channel, for sensors that publish
    /// one topic per quantity (`plant/m7/temperature`, `plant/m7/humidity`). The
    /// `[[mqtt.fields]]` entry whose `topic_value` (default: its channel name)
    /// equals the level value decodes the message; other values are counted as
    /// `unknown_channel`.
    pub channel_level: Option<usize>,
    /// Larger payloads are counted as `payload_too_large` and dropped unread, so that
    /// a misconfigured publisher cannot exhaust memory on a small gateway.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
}

fn default_max_payload_bytes() -> usize {
    256 * 1024
}

fn default_max_devices() -> usize {
    1000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    Number,
    Json,
    Csv,
    F32le,
    I16le,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampField {
    /// Dotted path in the JSON payload, e.g. `ts` or `meta.time`.
    pub path: String,
    /// `rfc3339`, `unix_s`, `unix_ms` or `unix_us`.
    pub format: TimestampFormat,
    /// Readings stamped further ahead of the gateway's clock at arrival are counted
    /// as `timestamp_out_of_bounds` and dropped: one reading from a broken clock
    /// (year 9999) would otherwise stay the sensor's latest value for good. A device
    /// clock a few minutes fast is normal.
    #[serde(default = "default_max_future_secs")]
    pub max_future_secs: u64,
    /// Readings stamped longer before the gateway's clock at arrival are counted as
    /// `timestamp_out_of_bounds` and dropped (a clock reset to 1970). Long enough
    /// for a base station to deliver the backlog it buffered during an outage.
    #[serde(default = "default_max_age_hours")]
    pub max_age_hours: u64,
}

fn default_max_future_secs() -> u64 {
    300
}

fn default_max_age_hours() -> u64 {
    30 * 24
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    Rfc3339,
    UnixS,
    UnixMs,
    UnixUs,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttField {
    pub channel: String,
    /// JSON: dotted path of the value (inside a batch element when `batch` is set).
    pub path: Option<String>,
    /// CSV: 0-based column.
    pub column: Option<usize>,
    /// With `mqtt.channel_level`: the value of that topic level this entry decodes;
    /// default: the channel name.
    pub topic_value: Option<String>,
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
}
