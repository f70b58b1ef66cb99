//! The `[serial]` section of a hardware profile: framing, checksum, the line parser
//! and which field feeds which channel. Re-exported at `crate::profiles`; its checks
//! are in `profile_checks.rs`.

use crate::profiles::{default_delimiter, one};
use serde::Deserialize;

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
