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

/// Whether a payload timestamp `ts` is plausible against the gateway's clock at
/// `arrival`: at most `max_future_secs` ahead and `max_age_hours` behind. The error
/// says the timestamp, the bound and the setting that widens it.
pub fn check_bounds(
    ts: TimestampUs,
    arrival: TimestampUs,
    max_future_secs: u64,
    max_age_hours: u64,
) -> Result<(), String> {
    // i128: the settings are u64 and may be huge; nothing overflows.
    let ahead = i128::from(ts) - i128::from(arrival);
    if ahead > i128::from(max_future_secs) * 1_000_000 {
        return Err(format!(
            "timestamp {} is {} ahead of the gateway's clock ({}); mqtt.timestamp.max_future_secs = {max_future_secs} \
             accepts readings at most {max_future_secs} s ahead. Fix the device's clock, or raise max_future_secs in the profile",
            show_time(ts),
            show_span(ahead),
            show_time(arrival)
        ));
    }
    if -ahead > i128::from(max_age_hours) * 3_600_000_000 {
        return Err(format!(
            "timestamp {} is {} behind the gateway's clock ({}); mqtt.timestamp.max_age_hours = {max_age_hours} \
             accepts readings at most {max_age_hours} h old. Fix the device's clock, or raise max_age_hours in the profile \
             if it delivers backlogs that old",
            show_time(ts),
            show_span(-ahead),
            show_time(arrival)
        ));
    }
    Ok(())
}

/// µs since the epoch as RFC 3339 (or the number, outside the years 0..9999).
fn show_time(us: TimestampUs) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{us} µs since 1970"))
}

/// A positive span of µs, in a unit a person reads at a glance.
fn show_span(us: i128) -> String {
    let s = us as f64 / 1e6;
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else if s < 2.0 * 86_400.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s < 2.0 * 365.25 * 86_400.0 {
        format!("{:.1} days", s / 86_400.0)
    } else {
        format!("{:.0} years", s / (365.25 * 86_400.0))
    }
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

/// A JSON timestamp in the profile's format, as µs since the epoch.
pub fn timestamp_us(v: &serde_json::Value, format: TimestampFormat) -> Result<TimestampUs, String> {
    let number = |v: &serde_json::Value| {
        v.as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("timestamp is {}, not a number", kind_of(v)))
    };
    let us = match format {
        TimestampFormat::Rfc3339 => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("timestamp is {}, not an RFC 3339 string", kind_of(v)))?;
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|e| format!("timestamp {:?} is not RFC 3339: {e}", truncate(s)))?;
            return i64::try_from(t.unix_timestamp_nanos() / 1000)
                .map_err(|_| format!("timestamp {s:?} is out of range"));
        }
        TimestampFormat::UnixS => number(v)? * 1e6,
        TimestampFormat::UnixMs => number(v)? * 1e3,
        TimestampFormat::UnixUs => number(v)?,
    };
    // Year 1970..=9999: anything else is a unit mistake, not a time.
    if !(0.0..=253_402_300_799e6).contains(&us) {
        return Err(format!("timestamp {us} µs is outside the years 1970..9999"));
    }
    Ok(us.round() as TimestampUs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::{MqttField, TimestampField};

    fn field(channel: &str, path: Option<&str>, column: Option<usize>) -> MqttField {
        MqttField {
            channel: channel.into(),
            path: path.map(String::from),
            column,
            topic_value: None,
            scale: 1.0,
            offset: 0.0,
        }
    }

    fn fmt(payload: PayloadFormat, fields: Vec<MqttField>) -> MqttFormat {
        MqttFormat {
            topic: "t/+/+/data".into(),
            payload,
            timestamp: None,
            batch: None,
            delimiter: ",".into(),
            sample_rate_hz: None,
            scale: 1.0,
            fields,
            device_level: None,
            max_devices: 1000,
            channel_level: None,
            max_payload_bytes: 1000,
        }
    }

    fn ts_field(path: &str, format: TimestampFormat) -> TimestampField {
        TimestampField {
            path: path.into(),
            format,
            max_future_secs: 300,
            max_age_hours: 720,
        }
    }

    fn dec(f: &MqttFormat) -> Decoder {
        Decoder::new("dev", f, |c| {
            Some((SensorType::Vibration, format!("{c}-unit")))
        })
        .unwrap()
    }

    fn scalars(d: &Decoded) -> Vec<(String, i64, f64)> {
        d.readings
            .iter()
            .map(|r| match r.value {
                Value::Scalar(v) => (r.sensor_id.to_string(), r.ts_us, v),
                ref o => panic!("{o:?}"),
            })
            .collect()
    }

    fn kinds(d: &Decoded) -> Vec<&'static str> {
        d.problems.iter().map(|p| p.kind).collect()
    }

    #[test]
    fn json_fields_timestamp_and_problems() {
        let mut f = fmt(
            PayloadFormat::Json,
            vec![
                field("vrms", Some("vrms"), None),
                field("temp", Some("env.temp"), None),
            ],
        );
        f.fields[1].scale = 0.1;
        f.fields[1].offset = 1.0;
        f.timestamp = Some(ts_field("ts", TimestampFormat::Rfc3339));
        let mut d = dec(&f);
        // Arrival: 13 s after the stamps.
        let now = 1_795_615_400_000_000;
        let ok = d.decode(
            "t",
            br#"{"ts":"2026-11-25T14:03:07.5Z","vrms":2.31,"env":{"temp":417}}"#,
            now,
        );
        let ts = 1_795_615_387_500_000;
        assert_eq!(
            scalars(&ok),
            [("dev.vrms".into(), ts, 2.31), ("dev.temp".into(), ts, 42.7)]
        );
        assert!(ok.problems.is_empty());
        assert_eq!(ok.readings[0].unit.as_ref(), "vrms-unit");

        let partial = d.decode("t", br#"{"ts":"2026-11-25T14:03:07Z","vrms":"2.3"}"#, now);
        assert!(partial.readings.is_empty());
        assert_eq!(kinds(&partial), ["type", "missing_field"]);
        assert_eq!(kinds(&d.decode("t", b"{\"vrms\":", now)), ["json"]);
        assert_eq!(kinds(&d.decode("t", b"{\"vrms\":NaN}", now)), ["json"]);
        assert_eq!(kinds(&d.decode("t", b"{\"vrms\":1e999}", now)), ["json"]);
        assert_eq!(kinds(&d.decode("t", b"", now)), ["empty"]);
        assert_eq!(
            kinds(&d.decode("t", &[b' '; 1001], now)),
            ["payload_too_large"]
        );
        let bad_ts = d.decode("t", br#"{"ts":"yesterday","vrms":1,"env":{"temp":1}}"#, now);
        assert_eq!(kinds(&bad_ts), ["timestamp"]);
        assert!(bad_ts.readings.is_empty());
    }

    #[test]
    fn json_batch_with_unix_ms_and_root_fallback() {
        let mut f = fmt(PayloadFormat::Json, vec![field("v", Some("v"), None)]);
        f.batch = Some("data.readings".into());
        f.timestamp = Some(ts_field("t", TimestampFormat::UnixMs));
        let mut d = dec(&f);
        let out = d.decode(
            "t",
            br#"{"t":1700000000000,"data":{"readings":[{"t":1700000000001,"v":1},{"v":2.5},{"t":1700000000002,"v":null}]}}"#,
            1_700_000_060_000_000,
        );
        assert_eq!(
            scalars(&out),
            [
                ("dev.v".into(), 1_700_000_000_001_000, 1.0),
                ("dev.v".into(), 1_700_000_000_000_000, 2.5)
            ]
        );
        assert_eq!(kinds(&out), ["missing_field"]);
        assert_eq!(
            kinds(&d.decode("t", br#"{"data":{"readings":5}}"#, 1)),
            ["batch"]
        );
    }

    #[test]
    fn timestamps() {
        use serde_json::json;
        assert_eq!(
            timestamp_us(&json!(1.5), TimestampFormat::UnixS),
            Ok(1_500_000)
        );
        assert_eq!(timestamp_us(&json!(7), TimestampFormat::UnixUs), Ok(7));
        assert!(timestamp_us(&json!(-7), TimestampFormat::UnixUs).is_err());
        assert!(timestamp_us(&json!("7"), TimestampFormat::UnixMs).is_err());
        assert_eq!(
            timestamp_us(
                &json!("1970-01-01T01:00:00+01:00"),
                TimestampFormat::Rfc3339
            ),
            Ok(0)
        );
        assert!(timestamp_us(&json!(1e300), TimestampFormat::UnixS).is_err());
    }

    #[test]
    fn json_array_becomes_a_block_when_a_rate_is_set() {
        let mut f = fmt(
            PayloadFormat::Json,
            vec![field("acc", Some("samples"), None)],
        );
        f.sample_rate_hz = Some(100.0);
        f.fields[0].scale = 2.0;
        let mut d = dec(&f);
        let out = d.decode("t", br#"{"samples":[1,-2.5,0]}"#, 5);
        assert_eq!(
            out.readings[0].value,
            Value::Block {
                sample_rate_hz: 100.0,
                samples: vec![2.0f32, -5.0, 0.0].into()
            }
        );
        assert_eq!(
            kinds(&d.decode("t", br#"{"samples":[1,"x"]}"#, 5)),
            ["type"]
        );
    }

    #[test]
    fn csv_number_and_raw() {
        let mut d = dec(&fmt(
            PayloadFormat::Csv,
            vec![field("a", None, Some(0)), field("b", None, Some(2))],
        ));
        let out = d.decode("t", b"1.5,x,-2\n3,,4\n", 7);
        assert_eq!(
            scalars(&out),
            [
                ("dev.a".into(), 7, 1.5),
                ("dev.b".into(), 7, -2.0),
                ("dev.a".into(), 7, 3.0),
                ("dev.b".into(), 7, 4.0)
            ]
        );
        assert_eq!(
            kinds(&d.decode("t", b"1;2;3", 7)),
            ["type", "missing_field"]
        );

        let mut f = fmt(PayloadFormat::Number, vec![field("t", None, None)]);
        f.scale = 0.1;
        f.fields[0].offset = -1.0;
        let mut d = dec(&f);
        assert_eq!(
            scalars(&d.decode("t", b" 235\r\n", 3)),
            [("dev.t".into(), 3, 22.5)]
        );
        assert_eq!(kinds(&d.decode("t", b"NaN", 3)), ["non_finite"]);
        assert_eq!(kinds(&d.decode("t", b"inf", 3)), ["non_finite"]);
        assert_eq!(kinds(&d.decode("t", b"12 C", 3)), ["number"]);

        let mut f = fmt(PayloadFormat::I16le, vec![field("acc", None, None)]);
        f.sample_rate_hz = Some(1000.0);
        f.scale = 0.5;
        let mut d = dec(&f);
        let out = d.decode("t", &[1, 0, 0xff, 0xff, 0, 0x80], 3);
        assert_eq!(
            out.readings[0].value,
            Value::Block {
                sample_rate_hz: 1000.0,
                samples: vec![0.5f32, -0.5, -16384.0].into()
            }
        );
        assert_eq!(kinds(&d.decode("t", &[1, 0, 0], 3)), ["raw_length"]);

        let mut f = fmt(PayloadFormat::F32le, vec![field("acc", None, None)]);
        f.sample_rate_hz = Some(10.0);
        let mut d = dec(&f);
        let mut p = 1.25f32.to_le_bytes().to_vec();
        p.extend(f32::NAN.to_le_bytes());
        assert_eq!(kinds(&d.decode("t", &p, 3)), ["non_finite"]);
        let out = d.decode("t", &p[..4], 3);
        assert_eq!(
            out.readings[0].value,
            Value::Block {
                sample_rate_hz: 10.0,
                samples: vec![1.25f32].into()
            }
        );
    }

    #[test]
    fn topic_levels_name_device_and_channel() {
        let mut f = fmt(
            PayloadFormat::Number,
            vec![
                field("temperature", None, None),
                field("humidity", None, None),
            ],
        );
        f.topic = "plant/+/+".into();
        f.device_level = Some(1);
        f.channel_level = Some(2);
        f.fields[0].topic_value = Some("temp".into());
        let mut d = dec(&f);
        assert_eq!(
            scalars(&d.decode("plant/m7/temp", b"21", 1)),
            [("dev-m7.temperature".into(), 1, 21.0)]
        );
        let out = d.decode("plant/m8/humidity", b"40", 1);
        assert_eq!(scalars(&out), [("dev-m8.humidity".into(), 1, 40.0)]);
        assert_eq!(out.readings[0].device.as_ref(), "dev-m8");
        assert_eq!(
            kinds(&d.decode("plant/m7/pressure", b"1", 1)),
            ["unknown_channel"]
        );
        assert_eq!(kinds(&d.decode("plant/m 7/temp", b"1", 1)), ["topic_level"]);
        assert_eq!(kinds(&d.decode("plant", b"1", 1)), ["topic_level"]);
    }

    /// 2026-12-06T05:00:00Z, the gateway's clock at arrival in the bounds tests.
    const NOW: TimestampUs = 1_796_533_200_000_000;

    fn stamped(ts: &str) -> Vec<u8> {
        format!(r#"{{"ts":{ts},"v":1}}"#).into_bytes()
    }

    #[test]
    fn timestamps_outside_the_bounds_are_refused() {
        let mut f = fmt(PayloadFormat::Json, vec![field("v", Some("v"), None)]);
        f.timestamp = Some(ts_field("ts", TimestampFormat::Rfc3339));
        let mut d = dec(&f);
        // Inside the default bounds: 299 s ahead, 719 h old, exactly on the bounds.
        for (ts, us) in [
            ("\"2026-12-06T05:04:59Z\"", NOW + 299_000_000),
            ("\"2026-12-06T05:05:00Z\"", NOW + 300_000_000),
            ("\"2026-11-06T06:00:00Z\"", NOW - 719 * 3_600_000_000),
            ("\"2026-11-06T05:00:00Z\"", NOW - 720 * 3_600_000_000),
        ] {
            let out = d.decode("t", &stamped(ts), NOW);
            assert_eq!(scalars(&out), [("dev.v".into(), us, 1.0)], "{ts}");
        }
        // Outside: a broken clock (years 9999, 0 and 1970), a few seconds too far.
        for (ts, bound) in [
            ("\"9999-12-31T23:59:59Z\"", "max_future_secs = 300"),
            ("\"2026-12-06T05:05:01Z\"", "max_future_secs = 300"),
            ("\"0000-01-01T00:00:00Z\"", "max_age_hours = 720"),
            ("\"1970-01-01T00:00:00Z\"", "max_age_hours = 720"),
            ("\"2026-11-06T04:59:59Z\"", "max_age_hours = 720"),
        ] {
            let out = d.decode("t", &stamped(ts), NOW);
            assert!(out.readings.is_empty(), "{ts} accepted");
            assert_eq!(kinds(&out), ["timestamp_out_of_bounds"], "{ts}");
            let detail = &out.problems[0].detail;
            // The log line says the timestamp, the bound and the setting.
            assert!(detail.contains(ts.trim_matches('"')), "{detail}");
            assert!(
                detail.contains(&format!("mqtt.timestamp.{bound}")),
                "{detail}"
            );
        }
        // Unix formats, and bounds from the profile.
        let mut f = fmt(PayloadFormat::Json, vec![field("v", Some("v"), None)]);
        let mut t = ts_field("ts", TimestampFormat::UnixS);
        t.max_future_secs = 10;
        t.max_age_hours = 1;
        f.timestamp = Some(t);
        let mut d = dec(&f);
        let now_s = NOW / 1_000_000;
        for (ts, ok) in [
            (now_s + 10, true),
            (now_s + 11, false),
            (now_s - 3600, true),
            (now_s - 3601, false),
            (0, false),
            (253_402_300_799, false),
        ] {
            let out = d.decode("t", &stamped(&ts.to_string()), NOW);
            assert_eq!(out.readings.len(), usize::from(ok), "{ts}");
            assert_eq!(out.problems.is_empty(), ok, "{ts}: {:?}", out.problems);
        }
    }

    #[test]
    fn a_batch_keeps_its_good_elements_and_huge_bounds_do_not_overflow() {
        let mut f = fmt(PayloadFormat::Json, vec![field("v", Some("v"), None)]);
        f.batch = Some("r".into());
        f.timestamp = Some(ts_field("t", TimestampFormat::UnixUs));
        let mut d = dec(&f);
        let payload = format!(
            r#"{{"r":[{{"t":{},"v":1}},{{"t":1,"v":2}},{{"t":{},"v":3}}]}}"#,
            NOW - 1,
            NOW + 3_600_000_000
        );
        let out = d.decode("t", payload.as_bytes(), NOW);
        assert_eq!(scalars(&out), [("dev.v".into(), NOW - 1, 1.0)]);
        assert_eq!(
            kinds(&out),
            ["timestamp_out_of_bounds", "timestamp_out_of_bounds"]
        );

        let mut t = ts_field("t", TimestampFormat::UnixUs);
        t.max_future_secs = u64::MAX;
        t.max_age_hours = u64::MAX;
        f.timestamp = Some(t);
        let mut d = dec(&f);
        let out = d.decode("t", payload.as_bytes(), NOW);
        assert_eq!(out.readings.len(), 3);
    }

    #[test]
    fn readings_stamped_on_arrival_are_not_bounded() {
        let mut f = fmt(PayloadFormat::Json, vec![field("v", Some("v"), None)]);
        f.batch = None;
        let mut d = dec(&f);
        // Whatever the arrival clock says is the reading's time.
        assert_eq!(
            scalars(&d.decode("t", br#"{"v":1}"#, 1)),
            [("dev.v".into(), 1, 1.0)]
        );
        let mut d = dec(&fmt(PayloadFormat::Number, vec![field("v", None, None)]));
        assert_eq!(
            scalars(&d.decode("t", b"2", NOW)),
            [("dev.v".into(), NOW, 2.0)]
        );
    }

    #[test]
    fn dynamic_devices_are_capped_and_a_refused_id_leaves_no_state() {
        let mut f = fmt(PayloadFormat::Number, vec![field("t", None, None)]);
        f.topic = "plant/+/t".into();
        f.device_level = Some(1);
        f.max_devices = 5;
        let mut d = dec(&f);
        // Malformed messages from a new id do not take a place.
        assert_eq!(kinds(&d.decode("plant/bad/t", b"x", 1)), ["number"]);
        assert_eq!(d.dynamic_devices(), 0);
        for i in 0..10_000 {
            let out = d.decode(&format!("plant/n{i}/t"), b"1", 1);
            if i < 5 {
                assert_eq!(scalars(&out), [(format!("dev-n{i}.t"), 1, 1.0)]);
            } else {
                assert!(out.readings.is_empty(), "n{i} accepted");
                assert_eq!(kinds(&out), ["too_many_devices"], "n{i}");
            }
        }
        assert_eq!(d.dynamic_devices(), 5);
        let detail = &d.decode("plant/n9/t", b"1", 1).problems[0].detail;
        assert!(detail.contains("mqtt.max_devices = 5"), "{detail}");
        // Known devices carry on; the bad id still does not count.
        assert_eq!(
            scalars(&d.decode("plant/n4/t", b"2", 2)),
            [("dev-n4.t".into(), 2, 2.0)]
        );
        assert_eq!(d.dynamic_devices(), 5);
    }
}
