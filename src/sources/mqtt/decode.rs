//! Payload decoders: one MQTT message (topic + payload) of one device -> readings.
//! Pure: no I/O and no clock (the arrival time is passed in), so that every
//! malformed-payload case is unit-tested here.
//!
//! Problems never stop decoding of the rest of a message: a JSON message with one
//! missing field still yields the other channels, and reports the missing one.
//!
//! Two things here bound what a publisher can do to the rest of the gateway:
//! - Payload timestamps must lie within the profile's bounds around the arrival time
//!   (`mqtt.timestamp.max_future_secs`, `max_age_hours`): one reading from a broken
//!   clock (year 9999) would stay a sensor's latest value for good.
//! - With `device_level`, at most `mqtt.max_devices` distinct level values become
//!   devices; each one costs memory down the pipeline for as long as the daemon
//!   runs. A refused value allocates nothing that outlives the message.

use crate::profiles::{MqttFormat, PayloadFormat, TimestampFormat};
use crate::record::{SensorType, TimestampUs};
use crate::sources::{ChannelId, Reading, Value};
use std::collections::HashMap;
use std::sync::Arc;

mod stamp;

pub use stamp::{check_bounds, timestamp_us};

/// One thing wrong with a message; `kind` is the error counter it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// `payload_too_large`, `empty`, `json`, `csv`, `number`, `type`, `non_finite`,
    /// `missing_field`, `timestamp`, [`TIMESTAMP_OUT_OF_BOUNDS`], `batch`,
    /// `raw_length`, `topic_level`, [`TOO_MANY_DEVICES`], `unknown_channel`.
    pub kind: &'static str,
    /// What exactly, for the log line.
    pub detail: String,
}

/// A payload timestamp outside the profile's bounds around the arrival time.
pub const TIMESTAMP_OUT_OF_BOUNDS: &str = "timestamp_out_of_bounds";
/// A `device_level` value beyond `mqtt.max_devices` distinct ones.
pub const TOO_MANY_DEVICES: &str = "too_many_devices";

fn problem(kind: &'static str, detail: impl Into<String>) -> Problem {
    Problem {
        kind,
        detail: detail.into(),
    }
}

/// What one message gave.
#[derive(Debug, Default)]
pub struct Decoded {
    pub readings: Vec<Reading>,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone)]
struct Field {
    channel: String,
    sensor_type: SensorType,
    unit: String,
    /// JSON path, split at dots.
    path: Vec<String>,
    column: Option<usize>,
    scale: f64,
    offset: f64,
}

/// Where a payload's timestamp is and how far from the arrival time it may be.
#[derive(Debug, Clone)]
struct Stamp {
    /// JSON path, split at dots.
    path: Vec<String>,
    format: TimestampFormat,
    max_future_secs: u64,
    max_age_hours: u64,
}

/// A device's payload mapping, compiled from its profile.
#[derive(Debug)]
pub struct Decoder {
    /// The configured device id.
    device: String,
    payload: PayloadFormat,
    fields: Vec<Field>,
    timestamp: Option<Stamp>,
    batch: Option<Vec<String>>,
    delimiter: String,
    sample_rate_hz: Option<f64>,
    /// `mqtt.scale` (number and raw payloads).
    format_scale: f64,
    device_level: Option<usize>,
    /// With `device_level`: most entries in `dynamic`.
    max_devices: usize,
    channel_level: Option<usize>,
    /// With `channel_level`: topic value -> field index.
    by_topic_value: HashMap<String, usize>,
    max_payload_bytes: usize,
    /// Channel identities of the configured device, per field (cheap clones).
    fixed: Arc<[ChannelId]>,
    /// With `device_level`: the level values admitted as devices (those that gave
    /// a reading), with their channel identities. Never more than `max_devices`:
    /// this is the admission list, not a cache, so nothing is evicted.
    dynamic: HashMap<String, Arc<[ChannelId]>>,
}

fn split_path(p: &str) -> Vec<String> {
    p.split('.').map(String::from).collect()
}

impl Decoder {
    /// Compiles the mapping for device `device` of a profile with `channels`
    /// (name -> sensor type, unit). Errors name the field; validation normally
    /// catches them first.
    pub fn new(
        device: &str,
        fmt: &MqttFormat,
        channels: impl Fn(&str) -> Option<(SensorType, String)>,
    ) -> Result<Decoder, String> {
        let mut fields = Vec::new();
        let mut by_topic_value = HashMap::new();
        for (i, f) in fmt.fields.iter().enumerate() {
            let (sensor_type, unit) = channels(&f.channel)
                .ok_or_else(|| format!("mqtt.fields[{i}]: no channel {:?}", f.channel))?;
            by_topic_value.insert(
                f.topic_value.clone().unwrap_or_else(|| f.channel.clone()),
                i,
            );
            fields.push(Field {
                channel: f.channel.clone(),
                sensor_type,
                unit,
                path: f.path.as_deref().map(split_path).unwrap_or_default(),
                column: f.column,
                scale: f.scale,
                offset: f.offset,
            });
        }
        if fields.is_empty() {
            return Err("mqtt.fields is empty".into());
        }
        Ok(Decoder {
            device: device.to_string(),
            payload: fmt.payload,
            fixed: channel_ids(device, &fields),
            fields,
            timestamp: fmt.timestamp.as_ref().map(|t| Stamp {
                path: split_path(&t.path),
                format: t.format,
                max_future_secs: t.max_future_secs,
                max_age_hours: t.max_age_hours,
            }),
            batch: fmt.batch.as_deref().map(split_path),
            delimiter: fmt.delimiter.clone(),
            sample_rate_hz: fmt.sample_rate_hz,
            format_scale: fmt.scale,
            device_level: fmt.device_level,
            max_devices: fmt.max_devices,
            channel_level: fmt.channel_level,
            by_topic_value,
            max_payload_bytes: fmt.max_payload_bytes,
            dynamic: HashMap::new(),
        })
    }

    /// Whether readings carry the payload's own timestamp (not the arrival time).
    pub fn has_timestamp(&self) -> bool {
        self.payload == PayloadFormat::Json && self.timestamp.is_some()
    }

    /// How many dynamic devices (`device_level` values) the decoder keeps state for;
    /// at most `mqtt.max_devices`.
    pub fn dynamic_devices(&self) -> usize {
        self.dynamic.len()
    }

    /// Decodes one message that arrived at `arrival_us`.
    pub fn decode(&mut self, topic: &str, payload: &[u8], arrival_us: TimestampUs) -> Decoded {
        let mut out = Decoded::default();
        if payload.len() > self.max_payload_bytes {
            out.problems.push(problem(
                "payload_too_large",
                format!(
                    "{} bytes, more than mqtt.max_payload_bytes = {}",
                    payload.len(),
                    self.max_payload_bytes
                ),
            ));
            return out;
        }
        let level = |l: Option<usize>| l.map(|l| topic.split('/').nth(l));
        // Which device the message belongs to; `new` = a level value not yet
        // admitted, which becomes a device if the message gives a reading.
        let (ids, new) = match level(self.device_level) {
            None => (self.fixed.clone(), None),
            Some(Some(v)) if crate::profiles::name_problem(v).is_none() => {
                match self.dynamic.get(v) {
                    Some(ids) => (ids.clone(), None),
                    None if self.dynamic.len() >= self.max_devices => {
                        out.problems.push(problem(
                            TOO_MANY_DEVICES,
                            format!(
                                "topic level {} ({v:?}) would be a new device, but this \
                                 subscription has mqtt.max_devices = {} devices already; \
                                 raise max_devices in the profile if there really are more",
                                self.device_level.unwrap_or_default(),
                                self.max_devices
                            ),
                        ));
                        return out;
                    }
                    None => (
                        channel_ids(&format!("{}-{v}", self.device), &self.fields),
                        Some(v),
                    ),
                }
            }
            Some(v) => {
                out.problems.push(problem(
                    "topic_level",
                    format!(
                        "topic level {} ({v:?}) cannot name a device: it must be letters, digits, '_', '-' or '.'",
                        self.device_level.unwrap_or_default()
                    ),
                ));
                return out;
            }
        };
        // Which fields apply.
        let only: Option<usize> = match level(self.channel_level) {
            None => None,
            Some(v) => match v.and_then(|v| self.by_topic_value.get(v)) {
                Some(i) => Some(*i),
                None => {
                    out.problems.push(problem(
                        "unknown_channel",
                        format!(
                            "topic level {} is {v:?}, which no mqtt.fields entry decodes",
                            self.channel_level.unwrap_or_default()
                        ),
                    ));
                    return out;
                }
            },
        };
        if payload.is_empty() {
            out.problems.push(problem("empty", "the payload is empty"));
            return out;
        }
        let selected: Vec<usize> = match only {
            Some(i) => vec![i],
            None => (0..self.fields.len()).collect(),
        };
        match self.payload {
            PayloadFormat::Number => self.number(&ids, &selected, payload, arrival_us, &mut out),
            PayloadFormat::Csv => self.csv(&ids, &selected, payload, arrival_us, &mut out),
            PayloadFormat::Json => self.json(&ids, &selected, payload, arrival_us, &mut out),
            PayloadFormat::F32le | PayloadFormat::I16le => {
                self.raw(&ids, &selected, payload, arrival_us, &mut out)
            }
        }
        // A value that only ever sends garbage takes no place.
        if let Some(v) = new {
            if !out.readings.is_empty() {
                self.dynamic.insert(v.to_string(), ids);
            }
        }
        out
    }

    fn scalar(&self, i: usize, raw: f64, extra_scale: f64) -> Result<f64, Problem> {
        let f = &self.fields[i];
        let v = raw * extra_scale * f.scale + f.offset;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(problem(
                "non_finite",
                format!("{}: {raw} is not a finite value", f.channel),
            ))
        }
    }

    fn number(
        &self,
        ids: &[ChannelId],
        selected: &[usize],
        payload: &[u8],
        ts: TimestampUs,
        out: &mut Decoded,
    ) {
        let text = String::from_utf8_lossy(payload);
        let Ok(raw) = text.trim().parse::<f64>() else {
            out.problems.push(problem(
                "number",
                format!("{:?} is not a number", truncate(&text)),
            ));
            return;
        };
        for &i in selected.iter().take(1) {
            match self.scalar(i, raw, self.format_scale) {
                Ok(v) => out.readings.push(ids[i].reading(ts, Value::Scalar(v))),
                Err(p) => out.problems.push(p),
            }
        }
    }

    fn csv(
        &self,
        ids: &[ChannelId],
        selected: &[usize],
        payload: &[u8],
        ts: TimestampUs,
        out: &mut Decoded,
    ) {
        let Ok(text) = std::str::from_utf8(payload) else {
            out.problems
                .push(problem("csv", "the payload is not UTF-8 text"));
            return;
        };
        let mut rows = text.lines().filter(|l| !l.trim().is_empty()).peekable();
        if rows.peek().is_none() {
            // Counted, not silently acknowledged: a message must give a reading or a problem.
            out.problems
                .push(problem("empty", "the payload has only blank lines"));
            return;
        }
        for line in rows {
            let cols: Vec<&str> = line.split(self.delimiter.as_str()).collect();
            for &i in selected {
                let f = &self.fields[i];
                let Some(c) = f.column else { continue };
                let Some(cell) = cols.get(c) else {
                    out.problems.push(problem(
                        "missing_field",
                        format!("{}: no column {c} ({} columns)", f.channel, cols.len()),
                    ));
                    continue;
                };
                match cell.trim().parse::<f64>() {
                    Ok(raw) => match self.scalar(i, raw, 1.0) {
                        Ok(v) => out.readings.push(ids[i].reading(ts, Value::Scalar(v))),
                        Err(p) => out.problems.push(p),
                    },
                    Err(_) => out.problems.push(problem(
                        "type",
                        format!(
                            "{}: column {c} is {:?}, not a number",
                            f.channel,
                            truncate(cell)
                        ),
                    )),
                }
            }
        }
    }

    fn raw(
        &self,
        ids: &[ChannelId],
        selected: &[usize],
        payload: &[u8],
        ts: TimestampUs,
        out: &mut Decoded,
    ) {
        let width = if self.payload == PayloadFormat::F32le {
            4
        } else {
            2
        };
        if payload.len() % width != 0 {
            out.problems.push(problem(
                "raw_length",
                format!(
                    "{} bytes is not a whole number of {width}-byte samples",
                    payload.len()
                ),
            ));
            return;
        }
        let Some(&i) = selected.first() else { return };
        let f = &self.fields[i];
        let k = self.format_scale * f.scale;
        let mut samples = Vec::with_capacity(payload.len() / width);
        for chunk in payload.chunks_exact(width) {
            let raw = match chunk {
                [a, b, c, d] => f64::from(f32::from_le_bytes([*a, *b, *c, *d])),
                [a, b] => f64::from(i16::from_le_bytes([*a, *b])),
                _ => continue,
            };
            let v = (raw * k + f.offset) as f32;
            if !v.is_finite() {
                out.problems.push(problem(
                    "non_finite",
                    format!("{}: sample {} is {raw}", f.channel, samples.len()),
                ));
                return;
            }
            samples.push(v);
        }
        out.readings.push(ids[i].reading(
            ts,
            Value::Block {
                sample_rate_hz: self.sample_rate_hz.unwrap_or(1.0),
                samples: samples.into(),
            },
        ));
    }

    fn json(
        &self,
        ids: &[ChannelId],
        selected: &[usize],
        payload: &[u8],
        arrival: TimestampUs,
        out: &mut Decoded,
    ) {
        let root: serde_json::Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                out.problems.push(problem("json", format!("not JSON: {e}")));
                return;
            }
        };
        let elements: Vec<&serde_json::Value> = match &self.batch {
            None => vec![&root],
            Some(path) => match lookup(&root, path) {
                Some(serde_json::Value::Array(a)) if a.is_empty() => {
                    out.problems.push(problem(
                        "empty",
                        format!("the batch at {} is empty", path.join(".")),
                    ));
                    return;
                }
                Some(serde_json::Value::Array(a)) => a.iter().collect(),
                Some(_) => {
                    out.problems.push(problem(
                        "batch",
                        format!("{} is not an array", path.join(".")),
                    ));
                    return;
                }
                None => {
                    out.problems
                        .push(problem("batch", format!("no array at {}", path.join("."))));
                    return;
                }
            },
        };
        for el in elements {
            let ts = match &self.timestamp {
                None => arrival,
                Some(stamp) => {
                    match lookup(el, &stamp.path)
                        .or_else(|| lookup(&root, &stamp.path))
                        .ok_or_else(|| format!("no timestamp at {}", stamp.path.join(".")))
                        .and_then(|v| timestamp_us(v, stamp.format))
                    {
                        Ok(ts) => match check_bounds(
                            ts,
                            arrival,
                            stamp.max_future_secs,
                            stamp.max_age_hours,
                        ) {
                            Ok(()) => ts,
                            Err(e) => {
                                out.problems.push(problem(TIMESTAMP_OUT_OF_BOUNDS, e));
                                continue;
                            }
                        },
                        Err(e) => {
                            out.problems.push(problem("timestamp", e));
                            continue;
                        }
                    }
                }
            };
            for &i in selected {
                let f = &self.fields[i];
                match lookup(el, &f.path) {
                    None | Some(serde_json::Value::Null) => out.problems.push(problem(
                        "missing_field",
                        format!("{}: nothing at {}", f.channel, f.path.join(".")),
                    )),
                    Some(serde_json::Value::Number(n)) => {
                        match n
                            .as_f64()
                            .ok_or_else(|| {
                                problem("non_finite", format!("{}: {n} is out of range", f.channel))
                            })
                            .and_then(|raw| self.scalar(i, raw, 1.0))
                        {
                            Ok(v) => out.readings.push(ids[i].reading(ts, Value::Scalar(v))),
                            Err(p) => out.problems.push(p),
                        }
                    }
                    Some(serde_json::Value::Array(a)) if self.sample_rate_hz.is_some() => {
                        match self.block(i, a) {
                            Ok(v) => out.readings.push(ids[i].reading(ts, v)),
                            Err(p) => out.problems.push(p),
                        }
                    }
                    Some(other) => out.problems.push(problem(
                        "type",
                        format!(
                            "{}: {} at {} is not a number",
                            f.channel,
                            kind_of(other),
                            f.path.join(".")
                        ),
                    )),
                }
            }
        }
    }

    fn block(&self, i: usize, a: &[serde_json::Value]) -> Result<Value, Problem> {
        let f = &self.fields[i];
        let mut samples = Vec::with_capacity(a.len());
        for (k, v) in a.iter().enumerate() {
            let raw = v.as_f64().ok_or_else(|| {
                problem(
                    "type",
                    format!("{}: sample {k} is {}, not a number", f.channel, kind_of(v)),
                )
            })?;
            // Finite as an f64 is not enough: a sample past f32::MAX would become inf.
            let v = self.scalar(i, raw, 1.0)? as f32;
            if !v.is_finite() {
                return Err(problem(
                    "non_finite",
                    format!("{}: sample {k} ({raw}) is beyond the f32 range", f.channel),
                ));
            }
            samples.push(v);
        }
        if samples.is_empty() {
            return Err(problem(
                "empty",
                format!("{}: the sample array is empty", f.channel),
            ));
        }
        Ok(Value::Block {
            sample_rate_hz: self.sample_rate_hz.unwrap_or(1.0),
            samples: samples.into(),
        })
    }
}

/// The channel identities of `device`, one per field.
fn channel_ids(device: &str, fields: &[Field]) -> Arc<[ChannelId]> {
    fields
        .iter()
        .map(|f| ChannelId::new(device, &f.channel, f.sensor_type, &f.unit))
        .collect()
}

fn lookup<'a>(v: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(v, |v, key| match v {
        serde_json::Value::Object(m) => m.get(key),
        serde_json::Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests;
