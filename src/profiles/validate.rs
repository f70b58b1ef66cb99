//! Semantic checks of a profile that serde cannot express: overlapping registers,
//! widths that disagree with types, channels that do not exist, regexes that do not
//! compile. Pure: collects every problem with its location, never stops at the first.

use super::*;
use crate::diag::{Diagnostic, FieldPath, SourceFile};

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

fn channel_ref(
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

fn modbus(file: &SourceFile, p: &Profile, m: &ModbusMap, diags: &mut Vec<Diagnostic>) {
    let base = FieldPath::root().join("modbus");
    let one_based = m.addressing == Addressing::OneBased;
    if m.max_registers_per_read == 0 || m.max_registers_per_read > 125 {
        diags.push(file.diag(
            &base.join("max_registers_per_read"),
            format!(
                "{} is not possible: a Modbus read carries 1 to 125 registers",
                m.max_registers_per_read
            ),
        ));
    }
    if m.registers.is_empty() && m.waveforms.is_empty() {
        diags.push(
            file.diag(
                &base,
                "the register map is empty: add [[modbus.registers]] or [[modbus.waveforms]]"
                    .to_string(),
            ),
        );
    }
    // (table, first wire address, last wire address, path) of everything read.
    let mut spans: Vec<(Table, u32, u32, FieldPath)> = Vec::new();
    let mut fed: BTreeMap<&str, FieldPath> = BTreeMap::new();

    for (i, fr) in m.forbidden.iter().enumerate() {
        let path = base.join("forbidden").join(i);
        if fr.end < fr.start {
            diags.push(file.diag(
                &path.join("end"),
                format!("end ({}) is before start ({})", fr.end, fr.start),
            ));
        }
        if one_based && fr.start == 0 {
            diags.push(file.diag(&path.join("start"), "0 is not an address when modbus.addressing = \"one_based\" (the first register is 1)".to_string()));
        }
    }

    for (i, r) in m.registers.iter().enumerate() {
        let path = base.join("registers").join(i);
        channel_ref(file, p, &path, &r.channel, diags);
        if let Some(prev) = fed.insert(&r.channel, path.clone()) {
            diags.push(file.diag(
                &path.join("channel"),
                format!(
                    "channel {:?} is already read by {}; each channel has one source",
                    r.channel,
                    file.original(&prev)
                ),
            ));
        }
        let ty = r.data_type;
        if r.table.is_bits() && ty != DataType::Bool {
            diags.push(file.diag(&path.join("type"), format!("a {} table holds single bits: use type = \"bool\" (or read a holding/input register for {})", r.table.as_str(), ty.as_str())));
        }
        match (ty, r.count) {
            (DataType::String, None) => diags.push(file.diag(&path, "a string needs `count`: the number of registers it occupies (2 characters each)".to_string())),
            (DataType::String, Some(0)) => diags.push(file.diag(&path.join("count"), "a string occupies at least 1 register".to_string())),
            (DataType::String, Some(_)) => {}
            (_, Some(c)) => {
                let want = ty.registers().unwrap_or(1);
                if c != want {
                    diags.push(file.diag(&path.join("count"), format!("{} takes {want} register{} but count = {c}; set count = {want} or leave it out", ty.as_str(), if want == 1 { "" } else { "s" })));
                }
            }
            (_, None) => {}
        }
        if r.bit.is_some() && (ty != DataType::Bool || r.table.is_bits()) {
            diags.push(
                file.diag(
                    &path.join("bit"),
                    "`bit` selects one bit of a holding/input register and needs type = \"bool\""
                        .to_string(),
                ),
            );
        }
        if r.bit.is_some_and(|b| b > 15) {
            diags.push(file.diag(&path.join("bit"), "a register has bits 0 to 15".to_string()));
        }
        if r.order.is_some() && ty.registers().is_some_and(|w| w < 2) {
            diags.push(
                file.diag(
                    &path.join("order").clone(),
                    format!(
                        "`order` has no effect on a one-register {}; remove it",
                        ty.as_str()
                    ),
                )
                .warning(),
            );
        }
        if !r.scale.is_finite() || r.scale == 0.0 {
            diags.push(file.diag(
                &path.join("scale"),
                "must be a finite, non-zero number".to_string(),
            ));
        }
        if !r.offset.is_finite() {
            diags.push(file.diag(&path.join("offset"), "must be a finite number".to_string()));
        }
        if r.poll_interval_ms.is_some_and(|ms| ms < 10) {
            diags.push(file.diag(
                &path.join("poll_interval_ms"),
                "must be at least 10 ms".to_string(),
            ));
        }
        address_span(
            file,
            &path,
            r.table,
            r.address,
            u32::from(r.width()),
            one_based,
            &mut spans,
            diags,
        );
    }

    for (i, w) in m.waveforms.iter().enumerate() {
        let path = base.join("waveforms").join(i);
        channel_ref(file, p, &path, &w.channel, diags);
        if let Some(prev) = fed.insert(&w.channel, path.clone()) {
            diags.push(file.diag(
                &path.join("channel"),
                format!(
                    "channel {:?} is already read by {}; each channel has one source",
                    w.channel,
                    file.original(&prev)
                ),
            ));
        }
        if w.table.is_bits() {
            diags.push(file.diag(
                &path.join("table"),
                "waveform samples live in holding or input registers".to_string(),
            ));
        }
        if !matches!(
            w.data_type,
            DataType::U16 | DataType::I16 | DataType::U32 | DataType::I32 | DataType::F32
        ) {
            diags.push(file.diag(
                &path.join("type"),
                format!(
                    "{} is not a sample type; use u16, i16, u32, i32 or f32",
                    w.data_type.as_str()
                ),
            ));
        }
        if w.samples < 2 {
            diags.push(file.diag(
                &path.join("samples"),
                "a waveform block needs at least 2 samples".to_string(),
            ));
        }
        if !w.sample_rate_hz.is_finite() || w.sample_rate_hz <= 0.0 {
            diags.push(file.diag(
                &path.join("sample_rate_hz"),
                "must be greater than 0".to_string(),
            ));
        }
        if !w.scale.is_finite() || w.scale == 0.0 {
            diags.push(file.diag(
                &path.join("scale"),
                "must be a finite, non-zero number".to_string(),
            ));
        }
        address_span(
            file,
            &path,
            w.table,
            w.address,
            w.width(),
            one_based,
            &mut spans,
            diags,
        );
    }

    // Overlaps: two values reading the same register is almost always a typo.
    spans.sort_by_key(|s| (s.0, s.1));
    for pair in spans.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.0 == b.0 && b.1 <= a.2 {
            diags.push(file.diag(
                &b.3.join("address"),
                format!(
                    "{} registers {}..{} overlap {} ({}..{}); check the address and type",
                    b.0.as_str(),
                    shown(b.1, one_based),
                    shown(b.2, one_based),
                    file.original(&a.3),
                    shown(a.1, one_based),
                    shown(a.2, one_based)
                ),
            ));
        }
    }
    // Reads that touch forbidden addresses.
    for fr in &m.forbidden {
        let off = u32::from(one_based);
        let (fs, fe) = (
            u32::from(fr.start).saturating_sub(off),
            u32::from(fr.end).saturating_sub(off),
        );
        for s in spans.iter().filter(|s| s.0 == fr.table) {
            if s.1 <= fe && fs <= s.2 {
                diags.push(file.diag(
                    &s.3.join("address"),
                    format!(
                        "reads {} registers marked forbidden ({}..{} in modbus.forbidden)",
                        fr.table.as_str(),
                        fr.start,
                        fr.end
                    ),
                ));
            }
        }
    }
}

fn shown(wire: u32, one_based: bool) -> u32 {
    wire + u32::from(one_based)
}

#[allow(clippy::too_many_arguments)]
fn address_span(
    file: &SourceFile,
    path: &FieldPath,
    table: Table,
    address: u16,
    width: u32,
    one_based: bool,
    spans: &mut Vec<(Table, u32, u32, FieldPath)>,
    diags: &mut Vec<Diagnostic>,
) {
    if one_based && address == 0 {
        diags.push(file.diag(&path.join("address"), "0 is not an address when modbus.addressing = \"one_based\" (the first register is 1)".to_string()));
        return;
    }
    let first = u32::from(address) - u32::from(one_based);
    let last = first + width.max(1) - 1;
    if last > 65535 {
        diags.push(file.diag(&path.join("address"), format!("the value runs past the last Modbus address (65535): it needs {width} registers from {address}")));
        return;
    }
    spans.push((table, first, last, path.clone()));
}

fn serial(file: &SourceFile, p: &Profile, s: &SerialFormat, diags: &mut Vec<Diagnostic>) {
    let base = FieldPath::root().join("serial");
    let f = &s.frame;
    match (&f.terminator, &f.start, &f.end) {
        (Some(t), None, None) if !t.is_empty() => {}
        (Some(_), None, None) => diags.push(file.diag(
            &base.join("frame").join("terminator"),
            "must not be empty, e.g. \"\\r\\n\"".to_string(),
        )),
        // An end marker that begins with the start marker (`\0` … `\0\0`) makes
        // frames depend on where the port's reads split the stream.
        (None, Some(a), Some(b)) if b.len() > a.len() && b.starts_with(a.as_str()) => diags.push(
            file.diag(
                &base.join("frame").join("end"),
                format!("{b:?} begins with the start marker {a:?}: a frame's end could read as a new start; choose markers where neither begins the other"),
            ),
        ),
        (None, Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => {}
        (None, Some(_), None) | (None, None, Some(_)) => diags.push(file.diag(
            &base.join("frame"),
            "`start` and `end` markers go together; set both".to_string(),
        )),
        _ => diags.push(file.diag(
            &base.join("frame"),
            "set either `terminator` (line-oriented) or both `start` and `end` markers".to_string(),
        )),
    }
    if f.max_length < 4 || f.max_length > 65536 {
        diags.push(file.diag(
            &base.join("frame").join("max_length"),
            "must be between 4 and 65536 bytes".to_string(),
        ));
    }
    let regex = match (s.parser, &s.regex) {
        (SerialParser::Regex, None) => {
            diags.push(file.diag(&base, "parser = \"regex\" needs `regex`, a regular expression with named captures such as (?P<temp>-?\\d+\\.\\d+)".to_string()));
            None
        }
        (SerialParser::Regex, Some(r)) => match regex::Regex::new(r) {
            Ok(re) => Some(re),
            Err(e) => {
                diags.push(file.diag(
                    &base.join("regex"),
                    format!(
                        "does not compile: {}",
                        e.to_string().lines().last().unwrap_or("invalid")
                    ),
                ));
                None
            }
        },
        (SerialParser::Delimited, Some(_)) => {
            diags.push(
                file.diag(
                    &base.join("regex"),
                    "is only used with parser = \"regex\"; remove it or change the parser"
                        .to_string(),
                )
                .warning(),
            );
            None
        }
        (SerialParser::Delimited, None) => None,
    };
    if let Some(cmd) = &s.poll_command {
        match crate::sources::serial::unescape_command(cmd) {
            Ok(bytes) if bytes.is_empty() => diags.push(file.diag(
                &base.join("poll_command"),
                "must not be empty; remove it for a free-running sensor".to_string(),
            )),
            Ok(_) => {}
            Err(e) => diags.push(file.diag(&base.join("poll_command"), e)),
        }
    }
    if s.parser == SerialParser::Delimited && s.delimiter.is_empty() {
        diags.push(file.diag(&base.join("delimiter"), "must not be empty".to_string()));
    }
    if s.fields.is_empty() {
        diags.push(file.diag(
            &base,
            "needs at least one [[serial.fields]] entry".to_string(),
        ));
    }
    for (i, fld) in s.fields.iter().enumerate() {
        let path = base.join("fields").join(i);
        channel_ref(file, p, &path, &fld.channel, diags);
        match s.parser {
            SerialParser::Delimited => {
                if fld.index.is_none() {
                    diags.push(
                        file.diag(
                            &path,
                            "parser = \"delimited\" needs `index`, the 0-based field position"
                                .to_string(),
                        ),
                    );
                }
                if fld.capture.is_some() {
                    diags.push(file.diag(
                        &path.join("capture"),
                        "is for parser = \"regex\"; use `index` here".to_string(),
                    ));
                }
            }
            SerialParser::Regex => match (&fld.capture, &regex) {
                (None, _) => diags.push(file.diag(
                    &path,
                    "parser = \"regex\" needs `capture`, the name of a capture group".to_string(),
                )),
                (Some(c), Some(re)) if !re.capture_names().flatten().any(|n| n == c) => {
                    let names: Vec<&str> = re.capture_names().flatten().collect();
                    diags.push(file.diag(
                        &path.join("capture"),
                        format!(
                            "the regex has no capture named {c:?}; it has: {}",
                            if names.is_empty() {
                                "none".to_string()
                            } else {
                                names.join(", ")
                            }
                        ),
                    ));
                }
                _ => {}
            },
        }
        if !fld.scale.is_finite() || fld.scale == 0.0 {
            diags.push(file.diag(
                &path.join("scale"),
                "must be a finite, non-zero number".to_string(),
            ));
        }
    }
}

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

fn mqtt(file: &SourceFile, p: &Profile, m: &MqttFormat, diags: &mut Vec<Diagnostic>) {
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
