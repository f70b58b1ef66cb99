//! Sources: one task per device (Modbus TCP, serial port, MQTT subscription) or per
//! bus (Modbus RTU), each turning what a device says into [`Reading`]s.
//!
//! Sources never touch SQLite and know nothing about upstream wire formats. They send
//! [`SourceBatch`]es into a bounded channel, so a slow pipeline pushes back on them.
//! A source whose input must be acknowledged (MQTT QoS 1, a serial line with a
//! query/response protocol) attaches an [`Ack`]; the outbox writer fires it only after
//! the records made from that batch are committed.
//!
//! Each source folder owns its config section (`config.rs`), its hardware-profile
//! section (`profile.rs`) and that section's checks (`profile_checks.rs`);
//! `crate::config` and `crate::profiles` re-export them and tie them together.
//! [`group`] is where the kinds of source are listed.

pub mod group;
pub mod modbus;
pub mod mqtt;
pub mod serial;

use crate::record::{SensorType, TimestampUs};
use std::sync::Arc;
use tokio::sync::oneshot;

/// The value of one reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// One number, already scaled (`raw * scale + offset`).
    Scalar(f64),
    /// A block of waveform samples, already scaled, oldest first. `ts_us` of the
    /// reading is the time of the last sample.
    Block {
        sample_rate_hz: f64,
        samples: Arc<[f32]>,
    },
    /// A text register (Modbus string), kept for device identification; not forwarded
    /// as a reading.
    Text(String),
    /// The device answered with an error for this channel (e.g. a Modbus exception);
    /// the reading is kept with quality 0 and the reason in `flags`.
    Missing,
}

/// One reading of one channel of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Device id from the gateway config.
    pub device: Arc<str>,
    /// Channel name from the hardware profile.
    pub channel: Arc<str>,
    /// Upstream sensor id: `<device>.<channel>`.
    pub sensor_id: Arc<str>,
    pub sensor_type: SensorType,
    pub unit: Arc<str>,
    pub ts_us: TimestampUs,
    pub value: Value,
    /// 0..1. Sources set 1.0, or 0.0 when the device reported an error.
    pub quality: f32,
    /// Why quality is below 1 (`modbus_exception:2`, `timeout`, ...).
    pub flags: Vec<String>,
    /// `ts_us` is when the gateway received the value (the device sent no time of its
    /// own: Modbus polls, serial frames, MQTT payloads without a timestamp field).
    /// The pipeline keeps such stamps strictly increasing per sensor, so readings
    /// received in the same microsecond stay distinct readings (the outbox and the
    /// cloud identify a reading by sensor and time).
    pub arrival: bool,
}

/// Identity of a channel, shared by every reading of it (cheap to clone).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelId {
    pub device: Arc<str>,
    pub channel: Arc<str>,
    pub sensor_id: Arc<str>,
    pub sensor_type: SensorType,
    pub unit: Arc<str>,
}

impl ChannelId {
    pub fn new(device: &str, channel: &str, sensor_type: SensorType, unit: &str) -> Self {
        ChannelId {
            device: Arc::from(device),
            channel: Arc::from(channel),
            sensor_id: Arc::from(format!("{device}.{channel}")),
            sensor_type,
            unit: Arc::from(unit),
        }
    }

    /// A clean reading (quality 1) of this channel.
    pub fn reading(&self, ts_us: TimestampUs, value: Value) -> Reading {
        Reading {
            device: self.device.clone(),
            channel: self.channel.clone(),
            sensor_id: self.sensor_id.clone(),
            sensor_type: self.sensor_type,
            unit: self.unit.clone(),
            ts_us,
            value,
            quality: 1.0,
            flags: Vec::new(),
            arrival: false,
        }
    }

    /// A reading that failed at the device: quality 0, with the reason.
    pub fn failed(&self, ts_us: TimestampUs, flag: impl Into<String>) -> Reading {
        Reading {
            quality: 0.0,
            flags: vec![flag.into()],
            ..self.reading(ts_us, Value::Missing)
        }
    }
}

/// Fired by the outbox writer once everything made from a batch is committed.
/// Dropping it without firing means "not stored": the source must not acknowledge
/// its input (MQTT will redeliver).
#[derive(Debug)]
pub struct Ack(oneshot::Sender<()>);

impl Ack {
    /// A new ack and the receiver the source waits on.
    pub fn new() -> (Ack, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Ack(tx), rx)
    }

    /// Signals the source that its input is durable.
    pub fn committed(self) {
        let _ = self.0.send(());
    }
}

/// What a source sends down the pipeline: the readings of one poll, line or message.
#[derive(Debug, Default)]
pub struct SourceBatch {
    pub readings: Vec<Reading>,
    pub ack: Option<Ack>,
}

/// A device as a source task gets it: its config entry and its validated profile.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub config: crate::config::DeviceConfig,
    pub profile: Arc<crate::profiles::LoadedProfile>,
    /// Counters the metrics endpoint and the CLI read.
    pub stats: Arc<DeviceStats>,
}

impl DeviceSpec {
    /// The identity of one of the device's channels; `None` when the profile has no
    /// such channel.
    pub fn channel(&self, name: &str) -> Option<ChannelId> {
        let ch = self.profile.profile.channels.get(name)?;
        Some(ChannelId::new(
            &self.config.id,
            name,
            ch.sensor_type,
            &ch.unit,
        ))
    }
}

/// Upper bounds (µs) of the poll latency histogram buckets.
pub const LATENCY_BUCKETS_US: [u64; 10] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 5_000_000,
];

/// Per-device counters, updated by the source task, read by metrics and reports.
#[derive(Debug, Default)]
pub struct DeviceStats {
    /// Poll cycles (or lines, or messages) handled.
    pub polls: std::sync::atomic::AtomicU64,
    /// Readings sent down the pipeline.
    pub readings: std::sync::atomic::AtomicU64,
    /// Errors by kind: `timeout`, `connect`, `exception`, `checksum`, `parse`, ...
    pub errors: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Time of the last successful poll/line/message (µs since the epoch), 0 = never.
    pub last_success_us: std::sync::atomic::AtomicI64,
    /// Poll latency histogram: counts per bucket of [`LATENCY_BUCKETS_US`] plus +Inf.
    pub latency_buckets: [std::sync::atomic::AtomicU64; 11],
    pub latency_sum_us: std::sync::atomic::AtomicU64,
    /// Whether the transport is currently connected/open.
    pub connected: std::sync::atomic::AtomicBool,
    /// The kind and time (µs since the epoch) of the last error (status page).
    pub last_error: std::sync::Mutex<Option<(TimestampUs, &'static str)>>,
}

impl DeviceStats {
    pub fn error(&self, kind: &'static str) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(kind).or_insert(0) += 1;
        }
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some((crate::record::now_us(), kind));
        }
    }

    pub fn success(&self, ts_us: TimestampUs, latency: std::time::Duration, readings: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.polls.fetch_add(1, Relaxed);
        self.readings.fetch_add(readings as u64, Relaxed);
        self.last_success_us.store(ts_us, Relaxed);
        let us = latency.as_micros() as u64;
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[i].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
    }

    pub fn error_count(&self, kind: &str) -> u64 {
        self.errors
            .lock()
            .map(|m| m.get(kind).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}
