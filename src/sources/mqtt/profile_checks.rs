//! Checks of a profile's `[mqtt]` format: topic filters, payload and device
//! limits, and the channels the payload fields feed. Called by
//! [`crate::profiles::validate_profile`].

use super::profile::{MqttFormat, PayloadFormat};
use crate::diag::{Diagnostic, FieldPath, SourceFile};
use crate::profiles::{channel_ref, Profile};
use std::collections::BTreeMap;

/// Largest `mqtt.max_payload_bytes`; the MQTT connection itself accepts packets up
/// to this size (see `sources::mqtt`).
pub(crate) const MAX_MQTT_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// Largest `mqtt.max_devices`: every dynamic device keeps its channels' pipeline
/// state for as long as the daemon runs, and a gateway has a memory limit.
pub(crate) const MAX_MQTT_DEVICES: usize = 10_000;

/// Checks an MQTT topic filter; returns why it is invalid.
pub(crate) fn topic_filter_problem(t: &str) -> Option<String> {
    if t.is_empty() {
        return Some("a topic filter must not be empty".into());
    }
    let levels: Vec<&str> = t.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i != levels.len() - 1) {
            return Some("`#` must be a whole level and the last one (e.g. plant/#)".into());
        }
        if l.contains('+') && *l != "+" {
            return Some("`+` must be a whole level (e.g. plant/+/temp)".into());
        }
    }
    None
}

pub(crate) fn mqtt(file: &SourceFile, p: &Profile, m: &MqttFormat, diags: &mut Vec<Diagnostic>) {
    let base = FieldPath::root().join("mqtt");
    if let Some(problem) = topic_filter_problem(&m.topic) {
        diags.push(file.diag(&base.join("topic"), problem));
    }
    if m.fields.is_empty() {
        diags.push(file.diag(
            &base,
            "needs at least one [[mqtt.fields]] entry".to_string(),
        ));
    }
    let raw = matches!(m.payload, PayloadFormat::F32le | PayloadFormat::I16le);
    if raw && !m.sample_rate_hz.is_some_and(|r| r.is_finite() && r > 0.0) {
        diags.push(file.diag(
            &base.join("payload"),
            "raw waveform payloads need `sample_rate_hz` (> 0)".to_string(),
        ));
    }
    if m.sample_rate_hz.is_some_and(|r| !r.is_finite() || r <= 0.0) {
        diags.push(file.diag(
            &base.join("sample_rate_hz"),
            "must be a finite number greater than 0".to_string(),
        ));
    }
    if m.max_payload_bytes == 0 || m.max_payload_bytes > MAX_MQTT_PAYLOAD_BYTES {
        diags.push(file.diag(
            &base.join("max_payload_bytes"),
            format!("must be between 1 and {MAX_MQTT_PAYLOAD_BYTES} bytes"),
        ));
    }
    let levels: Vec<&str> = m.topic.split('/').collect();
    for (name, level) in [
        ("device_level", m.device_level),
        ("channel_level", m.channel_level),
    ] {
        let Some(level) = level else { continue };
        match levels.get(level) {
            Some(&"+") | Some(&"#") => {}
            Some(l) => diags.push(file.diag(
                &base.join(name),
                format!(
                    "topic level {level} of {:?} is the fixed text {l:?}, not a `+` wildcard, so it \
                     names every message the same; count levels from 0",
                    m.topic
                ),
            )),
            None if levels.last() == Some(&"#") => {}
            None => diags.push(file.diag(
                &base.join(name),
                format!(
                    "the topic {:?} has only {} levels (counted from 0)",
                    m.topic,
                    levels.len()
                ),
            )),
        }
    }
    if m.device_level.is_some() {
        if m.max_devices == 0 || m.max_devices > MAX_MQTT_DEVICES {
            diags.push(file.diag(
                &base.join("max_devices"),
                format!(
                    "must be between 1 and {MAX_MQTT_DEVICES}: the most `device_level` values \
                     this subscription turns into devices (each keeps memory while the daemon runs)"
                ),
            ));
        }
    } else if file.value_at(&base.join("max_devices")).is_some() {
        diags.push(
            file.diag(
                &base.join("max_devices"),
                "is only used with mqtt.device_level; remove it or set device_level".to_string(),
            )
            .warning(),
        );
    }
    if let Some(t) = &m.timestamp {
        let path = base.join("timestamp");
        for (name, zero, what) in [
            (
                "max_future_secs",
                t.max_future_secs == 0,
                "how many seconds a device's clock may run ahead of the gateway's (default 300)",
            ),
            (
                "max_age_hours",
                t.max_age_hours == 0,
                "how many hours old a reading may be on arrival, e.g. a backlog after an outage (default 720 = 30 days)",
            ),
        ] {
            if zero {
                diags.push(file.diag(
                    &path.join(name),
                    format!("must be greater than 0: {what}"),
                ));
            }
        }
    }
    if m.device_level.is_some() && m.device_level == m.channel_level {
        diags.push(file.diag(
            &base.join("channel_level"),
            "one topic level cannot name both the device and the channel".to_string(),
        ));
    }
    if m.channel_level.is_none() {
        if let Some(i) = m.fields.iter().position(|f| f.topic_value.is_some()) {
            diags.push(
                file.diag(
                    &base.join("fields").join(i).join("topic_value"),
                    "is only used with mqtt.channel_level; remove it or set channel_level"
                        .to_string(),
                )
                .warning(),
            );
        }
    } else {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, f) in m.fields.iter().enumerate() {
            let v = f.topic_value.as_deref().unwrap_or(&f.channel);
            if let Some(prev) = seen.insert(v, i) {
                diags.push(file.diag(
                    &base.join("fields").join(i),
                    format!("topic value {v:?} is already decoded by mqtt.fields[{prev}]"),
                ));
            }
        }
    }
    if (raw || m.payload == PayloadFormat::Number)
        && m.fields.len() > 1
        && m.channel_level.is_none()
    {
        diags.push(file.diag(&base.join("fields"), "a number or raw waveform payload carries one channel: keep one [[mqtt.fields]] entry (or set channel_level to pick the channel from the topic)".to_string()));
    }
    if m.payload != PayloadFormat::Json && (m.timestamp.is_some() || m.batch.is_some()) {
        diags.push(file.diag(
            &base.join("payload"),
            "`timestamp` and `batch` need payload = \"json\"".to_string(),
        ));
    }
    for (i, f) in m.fields.iter().enumerate() {
        let path = base.join("fields").join(i);
        channel_ref(file, p, &path, &f.channel, diags);
        match m.payload {
            PayloadFormat::Json if f.path.as_deref().is_none_or(str::is_empty) => {
                diags.push(file.diag(&path, "payload = \"json\" needs `path`, the dotted path of the value (e.g. \"data.temp\")".to_string()));
            }
            PayloadFormat::Csv if f.column.is_none() => {
                diags.push(file.diag(
                    &path,
                    "payload = \"csv\" needs `column`, the 0-based column".to_string(),
                ));
            }
            _ => {}
        }
        if !f.scale.is_finite() || f.scale == 0.0 {
            diags.push(file.diag(
                &path.join("scale"),
                "must be a finite, non-zero number".to_string(),
            ));
        }
    }
}
