//! Semantic checks of a profile that serde cannot express: overlapping registers,
//! widths that disagree with types, channels that do not exist, regexes that do not
//! compile. Pure: collects every problem with its location, never stops at the first.
//!
//! Here: the checks of the profile as a whole (vendor, model, channels, at least one
//! transport section) and the helpers they share; each transport section's own
//! checks are in its source folder (`sources/<kind>/profile_checks.rs`), called
//! from [`validate_profile`].

use super::*;
use crate::diag::{Diagnostic, FieldPath, SourceFile};
use crate::sources::modbus::profile_checks::modbus;
use crate::sources::mqtt::profile_checks::mqtt;
pub(crate) use crate::sources::mqtt::profile_checks::{
    topic_filter_problem, MAX_MQTT_PAYLOAD_BYTES,
};
use crate::sources::serial::profile_checks::serial;

/// Checks a deserialized profile; problems go to `diags` located in `file`.
pub fn validate_profile(file: &SourceFile, p: &Profile, diags: &mut Vec<Diagnostic>) {
    let root = FieldPath::root();
    let mut err = |path: &FieldPath, msg: String| diags.push(file.diag(path, msg));

    if p.vendor.trim().is_empty() {
        err(
            &root.join("vendor"),
            "must not be empty: the manufacturer as printed on the device".into(),
        );
    }
    if p.model.trim().is_empty() {
        err(
            &root.join("model"),
            "must not be empty: the model designation as printed on the device".into(),
        );
    }
    if p.channels.is_empty() {
        err(&root.join("channels"), "a profile needs at least one channel, e.g. [channels.temperature] with sensor_type and unit".into());
    }
    for (name, ch) in &p.channels {
        let path = root.join("channels").join(name.as_str());
        if let Some(problem) = name_problem(name) {
            err(&path, format!("channel name {name:?} {problem}"));
        }
        if ch.unit.trim().is_empty() {
            err(&path.join("unit"), "must not be empty: write the unit after scaling (\"mm/s\", \"g\", \"°C\"), or \"1\" for a dimensionless value".into());
        }
        if let (Some(lo), Some(hi)) = (ch.min, ch.max) {
            if lo >= hi {
                err(
                    &path.join("max"),
                    format!("max ({hi}) must be greater than min ({lo})"),
                );
            }
        }
        for (field, v) in [
            ("min", ch.min),
            ("max", ch.max),
            ("max_rate_per_s", ch.max_rate_per_s),
        ] {
            if v.is_some_and(|v| !v.is_finite()) {
                err(&path.join(field), "must be a finite number".into());
            }
        }
        if ch.max_rate_per_s.is_some_and(|v| v <= 0.0) {
            err(
                &path.join("max_rate_per_s"),
                "must be greater than 0".into(),
            );
        }
        if ch
            .stale_after_s
            .is_some_and(|s| !(s.is_finite() && s > 0.0))
        {
            err(
                &path.join("stale_after_s"),
                "must be a number of seconds greater than 0".into(),
            );
        }
        if ch.stuck_after.is_some_and(|n| n < 2) {
            err(
                &path.join("stuck_after"),
                "must be at least 2 (identical readings in a row)".into(),
            );
        }
    }
    // Sections dropped for errors of their own still count as present.
    let in_file = |k: &str| file.value_at(&root.join(k)).is_some();
    if p.modbus.is_none()
        && p.serial.is_none()
        && p.mqtt.is_none()
        && !in_file("modbus")
        && !in_file("serial")
        && !in_file("mqtt")
    {
        err(&root, "the profile says how to read the sensor in none of [modbus], [serial] or [mqtt]; add one".into());
    }
    if let Some(m) = &p.modbus {
        modbus(file, p, m, diags);
    }
    if let Some(s) = &p.serial {
        serial(file, p, s, diags);
    }
    if let Some(m) = &p.mqtt {
        mqtt(file, p, m, diags);
    }
}

/// Why a channel or device name is unusable, if it is.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("must not be empty");
    }
    if name.len() > 100 {
        return Some("is longer than 100 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Some("may only contain letters, digits, '_', '-' and '.'");
    }
    None
}

/// Reports `channel` at `path` unless the profile (or, with errors of its own, the
/// file) has a channel of that name.
pub(crate) fn channel_ref(
    file: &SourceFile,
    p: &Profile,
    path: &FieldPath,
    channel: &str,
    diags: &mut Vec<Diagnostic>,
) {
    if p.channels.contains_key(channel) {
        return;
    }
    // A channel that is in the file but had errors of its own was dropped from
    // `p`; its errors are already reported, so do not add a confusing second one.
    let in_file: Vec<String> = match file.value_at(&FieldPath::root().join("channels")) {
        Some(v) => match v.get_ref() {
            toml::de::DeValue::Table(t) => t.keys().map(|k| k.get_ref().to_string()).collect(),
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    if in_file.iter().any(|c| c == channel) {
        return;
    }
    diags.push(file.diag(
        &path.join("channel"),
        format!(
            "no channel named {channel:?} in [channels]; known channels: {}",
            if in_file.is_empty() {
                "none".to_string()
            } else {
                in_file.join(", ")
            }
        ),
    ));
}
