//! The semantic checks of a parsed config: sections that validate themselves, serial
//! ports and brokers, every device (its id, transport, port and broker references,
//! profile and pinned model), and the upstreams' references to brokers.

use super::{profile_dir, profile_name, resolve_profile};
use crate::config::{DeviceConfig, GatewayConfig, Transport};
use crate::diag::{Diagnostic, FieldPath, SourceFile};
use crate::profiles::LoadedProfile;
use std::collections::{BTreeMap, BTreeSet};

/// Semantic checks of the config and the profiles its devices use. Returns the
/// devices that can run.
pub(super) fn check_config(
    file: &SourceFile,
    c: &GatewayConfig,
    profiles_out: &mut BTreeMap<String, LoadedProfile>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<DeviceConfig> {
    let root = FieldPath::root();
    let g = root.join("gateway");
    if let Some(p) = crate::profiles::name_problem(&c.gateway.id) {
        diags.push(file.diag(&g.join("id"), format!("gateway id {:?} {p}", c.gateway.id)));
    }

    // Sections whose owners validate their own settings ("field.path: message").
    let mut settings_problems = c.outbox.validate();
    settings_problems.extend(c.models.validate());
    settings_problems.extend(c.upstreams.validate());
    settings_problems.extend(c.http.validate());
    let brokers: Vec<&str> = c.mqtt_brokers.keys().map(String::as_str).collect();
    settings_problems.extend(c.notify.validate(&brokers));
    {
        let ids: Vec<&str> = c.devices.iter().map(|d| d.id.as_str()).collect();
        let mut groups: Vec<&str> = c
            .devices
            .iter()
            .filter_map(|d| d.group.as_deref())
            .collect();
        groups.sort_unstable();
        groups.dedup();
        for w in c.notify.warnings(&ids, &groups) {
            let (field, msg) = w.split_once(": ").unwrap_or(("-", w.as_str()));
            diags.push(file.diag(&dotted(field), msg.to_string()).warning());
        }
    }
    if let Err(p) = c.pipeline.validate() {
        settings_problems.extend(p);
    }
    // A token the daemon cannot read stops it at start: say so here (a warning, as
    // `check` may run where the service's environment or credentials are not).
    if let Some(t) = c.http.token.as_ref().filter(|_| c.http.enabled) {
        if let Err(e) = t.resolve() {
            diags.push(
                file.diag(
                    &root.join("http").join("token"),
                    format!("{e}: `edgegw run` will refuse to start unless it can read it"),
                )
                .warning(),
            );
        }
    }
    // The same for the notification sinks' secrets: such a sink retries (and its
    // notifications wait) until the secret can be read.
    for (name, sink) in &c.notify.sinks {
        let secret = match sink {
            crate::notify::SinkConfig::Webhook(w) => w.token.as_ref().map(|t| ("token", t)),
            crate::notify::SinkConfig::Smtp(m) => m.password.as_ref().map(|p| ("password", p)),
            _ => None,
        };
        if let Some((field, secret)) = secret {
            if let Err(e) = secret.resolve() {
                diags.push(
                    file.diag(
                        &root
                            .join("notify")
                            .join("sinks")
                            .join(name.as_str())
                            .join(field),
                        format!("{e}: this sink's notifications will wait until it can be read"),
                    )
                    .warning(),
                );
            }
        }
    }
    for d in c.pipeline.deprecations() {
        let (field, msg) = d.split_once(": ").unwrap_or(("-", d.as_str()));
        let mut path = FieldPath::root();
        for seg in field.split('.') {
            path = path.join(seg);
        }
        diags.push(file.diag(&path, msg.to_string()).warning());
    }
    for problem in settings_problems {
        let (field, msg) = problem.split_once(": ").unwrap_or(("-", problem.as_str()));
        diags.push(file.diag(&dotted(field), msg.to_string()));
    }

    // Serial ports.
    for (name, port) in &c.serial_ports {
        let path = root.join("serial_ports").join(name.as_str());
        if ![5, 6, 7, 8].contains(&port.data_bits) {
            diags.push(file.diag(
                &path.join("data_bits"),
                format!("{} is not possible; use 5, 6, 7 or 8", port.data_bits),
            ));
        }
        if ![1, 2].contains(&port.stop_bits) {
            diags.push(file.diag(
                &path.join("stop_bits"),
                format!("{} is not possible; use 1 or 2", port.stop_bits),
            ));
        }
        if port.baud < 50 || port.baud > 4_000_000 {
            diags.push(file.diag(
                &path.join("baud"),
                format!(
                    "{} baud is not a serial speed; common ones are 9600, 19200, 38400, 115200",
                    port.baud
                ),
            ));
        }
    }
    for (name, b) in &c.mqtt_brokers {
        let path = root.join("mqtt_brokers").join(name.as_str());
        if b.host.trim().is_empty() {
            diags.push(file.diag(&path.join("host"), "must not be empty".to_string()));
        }
        if b.keep_alive_secs < 5 {
            diags.push(file.diag(
                &path.join("keep_alive_secs"),
                "must be at least 5 seconds".to_string(),
            ));
        }
    }

    let dir = profile_dir(&file.path, c);
    let available: Vec<String> = crate::profiles::profile_files(&dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let mut seen_ids: BTreeMap<&str, usize> = BTreeMap::new();
    let mut port_users: BTreeMap<&str, (bool, usize)> = BTreeMap::new();
    let mut runnable = Vec::new();
    // Profiles that did not load: their errors are reported once, not per device.
    let mut failed_profiles: BTreeSet<String> = BTreeSet::new();

    for (i, d) in c.devices.iter().enumerate() {
        let path = root.join("devices").join(i);
        let first_diag = diags.len();
        if let Some(p) = crate::profiles::name_problem(&d.id) {
            diags.push(file.diag(&path.join("id"), format!("device id {:?} {p}", d.id)));
        }
        if let Some(first) = seen_ids.insert(&d.id, i) {
            diags.push(file.diag(
                &path.join("id"),
                format!(
                    "device id {:?} is already used by devices[{first}]; ids must be unique",
                    d.id
                ),
            ));
        }
        if d.poll_interval_ms < 10 {
            diags.push(file.diag(
                &path.join("poll_interval_ms"),
                "must be at least 10 ms".to_string(),
            ));
        }
        for problem in crate::pipeline::settings::DeviceDetection::problems(
            d.detection.as_ref(),
            d.machine.as_ref(),
        ) {
            let (field, msg) = problem.split_once(": ").unwrap_or(("-", problem.as_str()));
            let mut p = path.clone();
            for seg in field.split('.') {
                p = p.join(seg);
            }
            diags.push(file.diag(&p, msg.to_string()));
        }
        if let Some(pin) = &d.model {
            let parts = [("name", Some(&pin.name)), ("version", pin.version.as_ref())];
            for (field, value) in parts {
                if let Some(v) = value.filter(|v| !crate::inference::cache::valid_segment(v)) {
                    diags.push(file.diag(
                        &path.join("model").join(field),
                        format!("{v:?} is not a bundle {field}: use letters, digits, `.`, `_`, `-` (not starting with `.`)"),
                    ));
                }
            }
        }
        let transport = d.transport();
        if transport.is_none() {
            let n = [
                d.modbus_tcp.is_some(),
                d.modbus_rtu.is_some(),
                d.serial.is_some(),
                d.mqtt.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            let msg = if n == 0 {
                "no transport: add one of [devices.modbus_tcp], [devices.modbus_rtu], [devices.serial] or [devices.mqtt]"
            } else {
                "more than one transport: a device is read one way; keep one of modbus_tcp, modbus_rtu, serial, mqtt"
            };
            diags.push(file.diag(&path, msg.to_string()));
        }
        match transport {
            Some(Transport::ModbusTcp(t)) => {
                if t.host.trim().is_empty() {
                    diags.push(file.diag(
                        &path.join("modbus_tcp").join("host"),
                        "must not be empty".to_string(),
                    ));
                }
                if t.timeout_ms < 10 {
                    diags.push(file.diag(
                        &path.join("modbus_tcp").join("timeout_ms"),
                        "must be at least 10 ms".to_string(),
                    ));
                }
            }
            Some(Transport::ModbusRtu(t)) => {
                let tp = path.join("modbus_rtu");
                if !(1..=247).contains(&t.unit_id) {
                    diags.push(file.diag(
                        &tp.join("unit_id"),
                        format!("{} is not a Modbus RTU address; use 1 to 247", t.unit_id),
                    ));
                }
                port_ref(file, c, &tp, &t.port, diags);
                let e = port_users.entry(t.port.as_str()).or_insert((true, i));
                if !e.0 {
                    diags.push(file.diag(&tp.join("port"), format!("serial port {:?} is already used by the ASCII device devices[{}]; a port carries either Modbus RTU or one ASCII sensor", t.port, e.1)));
                }
            }
            Some(Transport::Serial(t)) => {
                let tp = path.join("serial");
                port_ref(file, c, &tp, &t.port, diags);
                if let Some(prev) = port_users.insert(t.port.as_str(), (false, i)) {
                    diags.push(file.diag(&tp.join("port"), format!("serial port {:?} is already used by devices[{}]; an ASCII sensor needs the port to itself", t.port, prev.1)));
                }
            }
            Some(Transport::Mqtt(t)) => {
                let tp = path.join("mqtt");
                if !c.mqtt_brokers.contains_key(&t.broker) {
                    let known: Vec<&str> = c.mqtt_brokers.keys().map(String::as_str).collect();
                    diags.push(file.diag(
                        &tp.join("broker"),
                        format!(
                            "no broker named {:?} in [mqtt_brokers]; known: {}",
                            t.broker,
                            list(&known)
                        ),
                    ));
                }
                if let Some(topic) = &t.topic {
                    if let Some(p) = crate::profiles::topic_filter_problem(topic) {
                        diags.push(file.diag(&tp.join("topic"), p));
                    }
                }
            }
            None => {}
        }

        // The profile.
        let profile_path = resolve_profile(&dir, &d.profile);
        let name = profile_name(&d.profile);
        if profiles_out.contains_key(&name) || failed_profiles.contains(&name) {
            // Loaded (or found wanting) for an earlier device.
        } else if !profile_path.is_file() {
            diags.push(file.diag(
                &path.join("profile"),
                format!(
                    "no hardware profile {:?} ({} does not exist); profiles in {}: {}",
                    d.profile,
                    profile_path.display(),
                    dir.display(),
                    list(&available.iter().map(String::as_str).collect::<Vec<_>>())
                ),
            ));
        } else if let Some(p) = crate::profiles::load_profile(&profile_path, diags) {
            profiles_out.insert(name.clone(), p);
        } else {
            failed_profiles.insert(name.clone());
        }
        if failed_profiles.contains(&name) {
            // The errors themselves are in the profile file; here only a note, so
            // that the rest of the gateway still runs.
            diags.push(
                file.diag(
                    &path.join("profile"),
                    format!(
                        "profile {:?} has errors (listed above); device {:?} will not run",
                        d.profile, d.id
                    ),
                )
                .warning(),
            );
        }
        let profile = profiles_out.get(&name);
        if let (Some(p), Some(t)) = (profile, transport) {
            let (has, section) = match t {
                Transport::ModbusTcp(_) | Transport::ModbusRtu(_) => {
                    (p.profile.modbus.is_some(), "[modbus]")
                }
                Transport::Serial(_) => (p.profile.serial.is_some(), "[serial]"),
                Transport::Mqtt(_) => (p.profile.mqtt.is_some(), "[mqtt]"),
            };
            if !has {
                diags.push(file.diag(&path.join("profile"), format!("profile {:?} has no {section} section, so it cannot be read over this device's transport", d.profile)));
            }
            for ch in p.profile.channels.keys() {
                let sid = format!("{}.{}", d.id, ch);
                if sid.len() > 255 {
                    diags.push(file.diag(
                        &path.join("id"),
                        format!("sensor id {sid:?} is longer than the cloud's 255 characters"),
                    ));
                }
            }
            if let Some(sc) = d.machine.as_ref().and_then(|m| m.speed_channel.as_ref()) {
                if !p.profile.channels.contains_key(sc) {
                    diags.push(file.diag(
                        &path.join("machine").join("speed_channel"),
                        format!(
                            "profile {:?} has no channel {sc:?}; its channels: {}",
                            d.profile,
                            p.profile.channels.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
            for w in detection_mismatches(c, d, &p.profile) {
                diags.push(file.diag(&path.join("model"), w).warning());
            }
        }
        let ok = profile.is_some() && !diags[first_diag..].iter().any(Diagnostic::is_error);
        if ok && d.enabled {
            runnable.push(d.clone());
        }
    }

    // The cloud MQTT upstream publishes through one of the configured brokers.
    let u = root.join("upstreams");
    if let Some(m) = &c.upstreams.mqtt {
        if !c.mqtt_brokers.contains_key(&m.broker) {
            diags.push(file.diag(
                &u.join("mqtt").join("broker"),
                format!("no broker named {:?} in [mqtt_brokers]", m.broker),
            ));
        }
    }
    runnable
}

/// Warnings for a device whose pinned model bundle does not fit its channels: an
/// absolute window bundle trained at another sample rate, or a bundle that counts
/// readings made at another cadence than the device's poll interval. The pipeline
/// does not use the bundle for such a channel (rate) or warns at run time (cadence);
/// `check` says so before it runs.
fn detection_mismatches(
    c: &GatewayConfig,
    d: &DeviceConfig,
    p: &crate::profiles::Profile,
) -> Vec<String> {
    use crate::inference::{BundleKind, Reference};
    let Some(pin) = &d.model else {
        return Vec::new();
    };
    let cache = crate::inference::cache::ModelCache::at(c.models.cache_dir(&c.gateway.state_dir));
    let mut candidates: Vec<std::sync::Arc<crate::inference::ModelBundle>> =
        crate::inference::ModelRegistry::with_defaults()
            .map(|r| r.bundles().to_vec())
            .unwrap_or_default();
    for r in cache.list() {
        if r.name == pin.name {
            if let Ok(b) = cache.load(&r) {
                candidates.push(std::sync::Arc::new(b));
            }
        }
    }
    let Some(b) = candidates.into_iter().find(|b| {
        b.manifest().name == pin.name
            && pin
                .version
                .as_ref()
                .is_none_or(|v| *v == b.manifest().version)
    }) else {
        return Vec::new();
    };
    let m = b.manifest();
    let mut out = Vec::new();
    for (name, ch) in &p.channels {
        let rate = p.waveform_rate(name);
        match (rate, m.kind) {
            (Some(rate), BundleKind::Window) => {
                if let Some(trained) = m.rate_bound().filter(|t| (t - rate).abs() > 1e-6 * t) {
                    out.push(format!(
                        "{}.{name} samples at {rate} Hz but the pinned {} was trained at {trained} Hz: its windows are scored relative to the channel's own baseline instead (vibration-relative, after the learning period)",
                        d.id,
                        b.detector()
                    ));
                }
            }
            (None, BundleKind::Rolling) if m.reference == Reference::Absolute => {
                let expected = m.rolling.as_ref().and_then(|r| r.cadence_secs);
                let polled = !matches!(d.transport(), Some(Transport::Mqtt(_)) | None);
                if let (Some(e), true) = (expected, polled) {
                    let got = d.poll_interval_ms as f64 / 1000.0;
                    if (got / e - 1.0).abs() > 0.5 {
                        out.push(format!(
                            "{}.{name} ({}) is polled every {got} s but the pinned {} counts readings made every {e} s: its window spans another time than it was trained on",
                            d.id,
                            ch.sensor_type,
                            b.detector()
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn port_ref(
    file: &SourceFile,
    c: &GatewayConfig,
    path: &FieldPath,
    port: &str,
    diags: &mut Vec<Diagnostic>,
) {
    if !c.serial_ports.contains_key(port) {
        let known: Vec<&str> = c.serial_ports.keys().map(String::as_str).collect();
        diags.push(file.diag(
            &path.join("port"),
            format!(
                "no port named {port:?} in [serial_ports]; known: {}",
                list(&known)
            ),
        ));
    }
}

/// `a.b.3.c` as a field path (numbers are array indexes).
fn dotted(field: &str) -> FieldPath {
    let mut path = FieldPath::root();
    for seg in field.split('.') {
        path = match seg.parse::<usize>() {
            Ok(i) => path.join(i),
            Err(_) => path.join(seg),
        };
    }
    path
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
