//! The `[devices.serial]` and `[serial_ports]` config sections: which port an ASCII
//! sensor is on, and the line settings of a port (an RS-485 bus for Modbus RTU, or
//! the line of an ASCII sensor). Re-exported at `crate::config`.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialTransport {
    /// Name of the port in `[serial_ports]`.
    pub port: String,
}

/// A serial port: an RS-485 bus for Modbus RTU, or the line of an ASCII sensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPortConfig {
    /// Device path, e.g. `/dev/ttyUSB0` or `/dev/serial/by-id/...` (stable across
    /// replugging; prefer it).
    pub path: PathBuf,
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// 5, 6, 7 or 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default)]
    pub parity: Parity,
    /// 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    #[serde(default)]
    pub flow_control: FlowControl,
    /// Modbus RTU: silence before each request; default 3.5 character times at this
    /// baud rate (at least 1.75 ms above 19200 baud, as the spec says).
    pub inter_frame_delay_ms: Option<f64>,
    /// Modbus RTU: minimum pause between the end of one answer and the next request;
    /// slow slaves need more.
    pub min_request_pause_ms: Option<f64>,
}

fn default_baud() -> u32 {
    9600
}

fn default_data_bits() -> u8 {
    8
}

fn default_stop_bits() -> u8 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowControl {
    #[default]
    None,
    Software,
    Hardware,
}
