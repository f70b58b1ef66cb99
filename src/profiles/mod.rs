//! Hardware profiles: one TOML file per sensor model, written by field technicians.
//!
//! A profile says what a sensor measures (its channels: sensor type, unit, valid range)
//! and, per transport, how to read it: a Modbus register map, a serial line format, an
//! MQTT topic and payload mapping. The format is documented for people in
//! `docs/hardware-profiles.md`; keep the two in step.
//!
//! This module owns the format, loading and validation. It does not talk to devices:
//! `sources/` reads a validated [`Profile`].

mod validate;

#[allow(unused_imports)]
pub(crate) use validate::MAX_MQTT_PAYLOAD_BYTES;
pub(crate) use validate::{name_problem, topic_filter_problem};

use crate::diag::{deserialize_all, Diagnostic, FieldPath, SourceFile};
use crate::record::SensorType;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use validate::validate_profile;

/// A hardware profile, as written in `hardware-profiles/<name>.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Manufacturer, as printed on the device.
    pub vendor: String,
    /// Model designation, as printed on the device.
    pub model: String,
    /// What the sensor is and where its manual is; shown to technicians.
    #[serde(default)]
    pub description: String,
    /// What the sensor measures, by channel name (`velocity_rms`, `temperature`, ...).
    /// Channel names become part of the upstream sensor id `<device>.<channel>`.
    pub channels: BTreeMap<String, Channel>,
    /// How to read the sensor over Modbus (TCP or RTU).
    pub modbus: Option<ModbusMap>,
    /// How to read the sensor over a serial line (ASCII frames).
    pub serial: Option<SerialFormat>,
    /// How to read the sensor's MQTT messages.
    pub mqtt: Option<MqttFormat>,
}

impl Profile {
    /// The sample rate of a waveform channel (a Modbus waveform block, or an MQTT
    /// payload with a sample rate), or None for a scalar channel.
    pub fn waveform_rate(&self, channel: &str) -> Option<f64> {
        if let Some(w) = self
            .modbus
            .as_ref()
            .and_then(|m| m.waveforms.iter().find(|w| w.channel == channel))
        {
            return Some(w.sample_rate_hz);
        }
        let m = self.mqtt.as_ref()?;
        let rate = m.sample_rate_hz?;
        let raw = matches!(m.payload, PayloadFormat::F32le | PayloadFormat::I16le);
        let json = m.payload == PayloadFormat::Json;
        (m.fields.iter().any(|f| f.channel == channel) && (raw || json)).then_some(rate)
    }
}

/// One measured quantity.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// The cloud's sensor type; selects the detection model.
    pub sensor_type: SensorType,
    /// Unit of the value after scaling (`mm/s`, `g`, `°C`). Required: a number without
    /// a unit is a support call waiting to happen. Use `"1"` for dimensionless values.
    pub unit: String,
    /// Shown in tools and sent upstream as metadata.
    #[serde(default)]
    pub description: String,
    /// Lowest physically valid value; below it the reading gets quality 0.
    pub min: Option<f64>,
    /// Highest physically valid value; above it the reading gets quality 0.
    pub max: Option<f64>,
    /// Largest plausible change per second; faster changes are flagged as spikes.
    pub max_rate_per_s: Option<f64>,
    /// This many identical consecutive readings mean the sensor is stuck.
    pub stuck_after: Option<u32>,
    /// More than this many seconds since the channel's previous reading (reading
    /// time) flags the next one `stale`: for a sensor with a known cadence.
    pub stale_after_s: Option<f64>,
}

impl Channel {
    /// The validation limits the pipeline applies to this channel (the daemon and
    /// `edgegw replay` alike).
    pub fn limits(&self) -> crate::pipeline::ChannelLimits {
        crate::pipeline::ChannelLimits {
            min: self.min,
            max: self.max,
            max_rate_per_s: self.max_rate_per_s,
            stuck_after: self.stuck_after,
            stale_after_ms: self
                .stale_after_s
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(|s| (s * 1000.0).round() as u64),
        }
    }
}

/// Modbus register map.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusMap {
    /// How `address` fields are counted: `zero_based` (the wire address, default) or
    /// `one_based` (the manual counts from 1, so address 1 is wire address 0).
    #[serde(default)]
    pub addressing: Addressing,
    /// Default byte/word order for multi-register values: ABCD (big-endian, the
    /// Modbus default), BADC, CDAB (word-swapped) or DCBA.
    #[serde(default)]
    pub order: WordOrder,
    /// Largest gap (in registers or bits) the request planner may read across to
    /// merge two reads into one. Devices with holes in their map want 0.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Most registers per read request (the protocol allows 125; some devices less).
    #[serde(default = "default_max_registers_per_read")]
    pub max_registers_per_read: u16,
    /// Address ranges that must never be read (the device answers with an exception
    /// or, worse, has side effects). The planner never bridges across them.
    #[serde(default)]
    pub forbidden: Vec<ForbiddenRange>,
    /// Scalar values.
    #[serde(default)]
    pub registers: Vec<Register>,
    /// Waveform blocks: N consecutive samples captured at a fixed rate.
    #[serde(default)]
    pub waveforms: Vec<Waveform>,
}

fn default_max_gap() -> u16 {
    8
}

fn default_max_registers_per_read() -> u16 {
    125
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Addressing {
    #[default]
    ZeroBased,
    OneBased,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// Read/write 16-bit registers (function 3).
    Holding,
    /// Read-only 16-bit registers (function 4).
    Input,
    /// Read/write bits (function 1).
    Coil,
    /// Read-only bits (function 2).
    Discrete,
}

impl Table {
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Table::Holding => "holding",
            Table::Input => "input",
            Table::Coil => "coil",
            Table::Discrete => "discrete",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    Bool,
    String,
}

impl DataType {
    /// Registers taken by one value; `None` for strings (their count is explicit).
    /// Bits count as one.
    pub fn registers(self) -> Option<u16> {
        match self {
            DataType::U16 | DataType::I16 | DataType::Bool => Some(1),
            DataType::U32 | DataType::I32 | DataType::F32 => Some(2),
            DataType::U64 | DataType::I64 | DataType::F64 => Some(4),
            DataType::String => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::Bool => "bool",
            DataType::String => "string",
        }
    }
}

/// Byte and word order of a multi-register value, named by where the bytes of the
/// big-endian value `A B C D` end up on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum WordOrder {
    /// Big-endian bytes, big-endian words (the Modbus default).
    #[default]
    ABCD,
    /// Bytes swapped within each word.
    BADC,
    /// Words swapped ("word-swapped float", common on PLCs).
    CDAB,
    /// Fully little-endian.
    DCBA,
}

impl WordOrder {
    pub const ALL: [WordOrder; 4] = [
        WordOrder::ABCD,
        WordOrder::BADC,
        WordOrder::CDAB,
        WordOrder::DCBA,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WordOrder::ABCD => "ABCD",
            WordOrder::BADC => "BADC",
            WordOrder::CDAB => "CDAB",
            WordOrder::DCBA => "DCBA",
        }
    }
}

/// An inclusive range of addresses (counted as the map's `addressing` says).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForbiddenRange {
    pub table: Table,
    pub start: u16,
    pub end: u16,
}

/// One scalar value in the register map.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// The channel this register feeds (a key of `[channels]`).
    pub channel: String,
    pub table: Table,
    /// First register (or bit) of the value, counted as `modbus.addressing` says.
    pub address: u16,
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// Registers the value occupies. Optional for numbers (it follows from the type,
    /// and must agree with it when given); required for strings.
    pub count: Option<u16>,
    /// Overrides `modbus.order` for this value.
    pub order: Option<WordOrder>,
    /// For `type = "bool"` on a register table: the bit (0 = least significant).
    pub bit: Option<u8>,
    /// value = raw * scale + offset
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    /// Poll this value at its own interval instead of the device's (e.g. a slow
    /// temperature next to a fast waveform).
    pub poll_interval_ms: Option<u64>,
}

fn one() -> f64 {
    1.0
}

/// A block of waveform samples.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waveform {
    /// The channel the block feeds (a key of `[channels]`).
    pub channel: String,
    pub table: Table,
    /// First register of the block.
    pub address: u16,
    /// Number of samples in the block.
    pub samples: u16,
    /// Sample type: u16, i16, u32, i32, f32.
    #[serde(rename = "type")]
    pub data_type: DataType,
    pub order: Option<WordOrder>,
    /// Rate at which the device captured the samples.
    pub sample_rate_hz: f64,
    /// sample = raw * scale + offset
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    /// Poll the block at its own interval; default: the time the block covers
    /// (`samples / sample_rate_hz`), so consecutive blocks tile the signal.
    pub poll_interval_ms: Option<u64>,
}

impl Register {
    /// Registers (or bits) this value occupies: the type's width, or `count` for
    /// strings.
    pub fn width(&self) -> u16 {
        self.data_type
            .registers()
            .or(self.count)
            .unwrap_or(1)
            .max(1)
    }
}

impl Waveform {
    /// Registers the whole block occupies.
    pub fn width(&self) -> u32 {
        u32::from(self.samples) * u32::from(self.data_type.registers().unwrap_or(1))
    }
}

/// Serial line format of an ASCII sensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialFormat {
    /// How frames are delimited on the line.
    pub frame: SerialFrame,
    /// Frame checksum: `none` or `nmea_xor` (`$...*HH`, XOR of the bytes between `$`
    /// and `*`).
    #[serde(default)]
    pub checksum: Checksum,
    /// How fields are cut out of a frame: `delimited` or `regex`.
    pub parser: SerialParser,
    /// Field separator for `parser = "delimited"`.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Regular expression with named captures for `parser = "regex"`.
    pub regex: Option<String>,
    /// For query/response sensors: bytes written to the port every poll interval.
    /// Escapes `\r`, `\n` and `\xHH` are understood.
    pub poll_command: Option<String>,
    /// Which field becomes which channel.
    pub fields: Vec<SerialField>,
}

fn default_delimiter() -> String {
    ",".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialFrame {
    /// End of a frame, e.g. `"\r\n"` (line-oriented sensors).
    pub terminator: Option<String>,
    /// Start marker, e.g. `"\u0002"` (STX); used with `end`.
    pub start: Option<String>,
    /// End marker, e.g. `"\u0003"` (ETX).
    pub end: Option<String>,
    /// Longer frames are garbage: counted, logged and dropped.
    #[serde(default = "default_max_frame")]
    pub max_length: usize,
}

fn default_max_frame() -> usize {
    256
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checksum {
    #[default]
    None,
    NmeaXor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SerialParser {
    Delimited,
    Regex,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialField {
    pub channel: String,
    /// 0-based field position (`parser = "delimited"`).
    pub index: Option<usize>,
    /// Named capture group (`parser = "regex"`).
    pub capture: Option<String>,
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
}

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

/// A profile that passed validation, with the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedProfile {
    /// Profile name: the file stem (`acme-vt420` for `acme-vt420.toml`).
    pub name: String,
    pub path: PathBuf,
    pub profile: Profile,
}

/// Loads and validates one profile file; all problems go to `diags`.
pub fn load_profile(path: &Path, diags: &mut Vec<Diagnostic>) -> Option<LoadedProfile> {
    let before = error_count(diags);
    let text = SourceFile::read_text(path, diags)?;
    let file = SourceFile::parse(path, &text, diags);
    // A repaired profile (offending entries dropped) still gets the semantic checks,
    // so that one run reports every problem.
    let profile: Option<Profile> =
        deserialize_all(&file, &FieldPath::root(), file.root_value(), diags);
    let profile = profile?;
    validate_profile(&file, &profile, diags);
    if error_count(diags) > before {
        return None;
    }
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(LoadedProfile {
        name,
        path: path.to_path_buf(),
        profile,
    })
}

fn error_count(diags: &[Diagnostic]) -> usize {
    diags.iter().filter(|d| d.is_error()).count()
}

/// Every `*.toml` file in a directory, sorted by name.
pub fn profile_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}
