//! The `[devices.modbus_tcp]` and `[devices.modbus_rtu]` config sections: how the
//! gateway reaches a Modbus device (re-exported as `crate::config::ModbusTcpTransport`
//! and `crate::config::ModbusRtuTransport`).

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusTcpTransport {
    /// Host name or IP address of the device or Modbus gateway.
    pub host: String,
    #[serde(default = "default_modbus_port")]
    pub port: u16,
    /// Unit id (slave id); 1 for most TCP devices, the RTU address behind a gateway.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Time allowed for one request; the async client has no timeout of its own.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Overrides the profile's `modbus.max_gap` for this device.
    pub max_gap: Option<u16>,
}

fn default_modbus_port() -> u16 {
    502
}

fn default_unit_id() -> u8 {
    1
}

fn default_timeout_ms() -> u64 {
    1000
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusRtuTransport {
    /// Name of the bus in `[serial_ports]`.
    pub port: String,
    /// Unit id (slave address) 1..247.
    pub unit_id: u8,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Overrides the profile's `modbus.max_gap` for this device.
    pub max_gap: Option<u16>,
}
