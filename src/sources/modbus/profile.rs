//! The `[modbus]` section of a hardware profile: the register map (scalar registers,
//! waveform blocks, forbidden ranges, addressing, byte/word order). Re-exported at
//! `crate::profiles`; its checks are in `profile_checks.rs`.

use crate::profiles::one;
use serde::Deserialize;

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
