//! Hardware profiles: one TOML file per sensor model, written by field technicians.
//!
//! A profile says what a sensor measures (its channels: sensor type, unit, valid range)
//! and, per transport, how to read it: a Modbus register map, a serial line format, an
//! MQTT topic and payload mapping. The format is documented for people in
//! `docs/hardware-profiles.md`; keep the two in step.
//!
//! This module owns the format, loading and validation. It does not talk to devices:
//! `sources/` reads a validated [`Profile`]. The transport sections (`[modbus]`,
//! `[serial]`, `[mqtt]`) are owned by their source folders
//! (`sources/<kind>/profile.rs`, their checks in `profile_checks.rs` next to it) and
//! re-exported here.

mod validate;

#[allow(unused_imports)]
pub(crate) use validate::MAX_MQTT_PAYLOAD_BYTES;
pub(crate) use validate::{channel_ref, name_problem, topic_filter_problem};

use crate::diag::{deserialize_all, Diagnostic, FieldPath, SourceFile};
use crate::record::SensorType;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use validate::validate_profile;

pub use crate::sources::modbus::profile::{
    Addressing, DataType, ForbiddenRange, ModbusMap, Register, Table, Waveform, WordOrder,
};
pub use crate::sources::mqtt::profile::{
    MqttField, MqttFormat, PayloadFormat, TimestampField, TimestampFormat,
};
pub use crate::sources::serial::profile::{
    Checksum, SerialField, SerialFormat, SerialFrame, SerialParser,
};

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

/// Serde default of every `scale` in the transport sections (`sources/<kind>/profile.rs`).
pub(crate) fn one() -> f64 {
    1.0
}

/// Serde default of `serial.delimiter` and `mqtt.delimiter`.
pub(crate) fn default_delimiter() -> String {
    ",".into()
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
