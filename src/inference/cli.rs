//! `edgegw models list` and `edgegw models sync`: the text the commands print. The
//! logic is [`super::sync`] and [`super::cache`]; this only reads and formats.
//! `list` never writes to the cache and never touches the network.

use super::cache::{compare_versions, BundleRef, ModelCache};
use super::sync::{pin_text, type_name, ModelSync, SyncError};
use super::{ModelBundle, ModelRegistry, Selection};
use crate::config::GatewayConfig;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Text for `edgegw models list`: the cache, what is active, and per device channel
/// which bundle it uses and why. Reads the cache only (no network, no writes).
pub fn list_text(loaded: &crate::config::Loaded) -> String {
    use std::fmt::Write;
    let config = &loaded.config;
    let dir = config.models.cache_dir(&config.gateway.state_dir);
    let mut out = String::new();
    let base = match ModelRegistry::with_defaults() {
        Ok(r) => r,
        Err(e) => return format!("built-in bundles do not load: {e}\n"),
    };
    let _ = writeln!(out, "cache: {}", dir.display());
    let cache = ModelCache::at(&dir);
    let state = cache.read_state();
    let mut loaded_bundles: HashMap<BundleRef, Arc<ModelBundle>> = HashMap::new();
    let cached = cache.list();
    if cached.is_empty() {
        let _ = writeln!(out, "cached bundles: none");
    } else {
        let _ = writeln!(out, "cached bundles:");
    }
    for r in &cached {
        match cache.load(r) {
            Ok(b) => {
                let m = b.manifest();
                let _ = writeln!(
                    out,
                    "  {:<40} ok        {} for {:?}",
                    r.to_string(),
                    m.kind.as_str(),
                    m.sensor_types
                        .iter()
                        .map(|t| type_name(*t))
                        .collect::<Vec<_>>()
                );
                loaded_bundles.insert(r.clone(), Arc::new(b));
            }
            Err(e) => {
                let _ = writeln!(out, "  {:<40} REJECTED  {e}", r.to_string());
            }
        }
    }
    let _ = writeln!(
        out,
        "built-in: {}",
        base.bundles()
            .iter()
            .map(|b| b.detector().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut assigned = BTreeMap::new();
    match (&config.models.s3, state.active.is_empty()) {
        (None, true) => {
            let _ = writeln!(out, "S3 sync: not configured ([models.s3])");
        }
        (s3, _) => {
            if let Some(s3) = s3 {
                let _ = writeln!(
                    out,
                    "S3 sync: s3://{}/{} every {} s (+-10 %)",
                    s3.bucket, s3.prefix, s3.interval_secs
                );
            }
            let _ = writeln!(
                out,
                "active from the last sync{}:",
                state
                    .index_etag
                    .as_ref()
                    .map(|e| format!(" (index ETag {e})"))
                    .unwrap_or_default()
            );
            for (t, r) in &state.active {
                match loaded_bundles.get(r) {
                    Some(b) => {
                        assigned.insert(*t, b.clone());
                        let _ = writeln!(out, "  {:<14} {r}", type_name(*t));
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "  {:<14} {r} (not loadable: the built-in default is used)",
                            type_name(*t)
                        );
                    }
                }
            }
        }
    }
    let mut pins = HashMap::new();
    for d in &config.devices {
        let Some(pin) = &d.model else { continue };
        let found = loaded_bundles
            .values()
            .chain(base.bundles().iter())
            .filter(|b| {
                b.manifest().name == pin.name
                    && pin
                        .version
                        .as_ref()
                        .is_none_or(|v| *v == b.manifest().version)
            })
            .max_by(|a, b| compare_versions(&a.manifest().version, &b.manifest().version))
            .cloned();
        match found {
            Some(b) => {
                pins.insert(d.id.clone(), b);
            }
            None => {
                let _ = writeln!(out, "device {}: pinned {} is not cached (sync downloads an exact version); selection by sensor type applies", d.id, pin_text(pin));
            }
        }
    }
    let registry = base.with_assignments(assigned, pins);
    // Baseline state per channel, from the outbox database when there is one.
    let outbox = crate::app::outbox_path(config);
    let outbox_exists = outbox.exists();
    let mut baselines: HashMap<String, String> = HashMap::new();
    if outbox_exists {
        if let Ok(text) = crate::ops::baseline::status_text(&outbox, crate::record::now_us()) {
            for line in text.lines().filter(|l| !l.starts_with(' ')) {
                if let Some((sensor, rest)) = line.split_once(" (") {
                    if let Some((_, state)) = rest.split_once("): ") {
                        baselines.insert(sensor.to_string(), format!("baseline: {state}"));
                    }
                }
            }
        }
    }
    let _ = writeln!(out, "devices:");
    for d in &loaded.runnable {
        let profile_key = std::path::Path::new(&d.profile)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| d.profile.clone());
        let Some(p) = loaded.profiles.get(&profile_key) else {
            continue;
        };
        for (name, ch) in &p.profile.channels {
            let t = ch.sensor_type;
            let rate = p.profile.waveform_rate(name);
            let kind = if rate.is_some() {
                super::BundleKind::Window
            } else {
                super::BundleKind::Rolling
            };
            let what = match rate {
                Some(r) => format!("waveform windows at {r} Hz"),
                None => "scalar readings".to_string(),
            };
            let choice = registry.choose_at(Some(&d.id), t, kind, rate);
            let mut lines = Vec::new();
            let scorer = match &choice.chosen {
                None => format!(
                    "{what}: scored by the built-in relative rule ({}) against the channel's own baseline (no bundle fits)",
                    crate::pipeline::detect::BUILTIN_RULE
                ),
                Some((b, why)) => {
                    let why = match why {
                        Selection::Pinned => "pinned in the config".to_string(),
                        Selection::Index(x) if *x == t => "S3 index for this type".to_string(),
                        Selection::Index(x) => format!(
                            "S3 index for {}, a fallback of {}",
                            type_name(*x),
                            type_name(t)
                        ),
                        Selection::Listed(x) if *x == t => "its manifest lists this type".to_string(),
                        Selection::Listed(x) => format!(
                            "its manifest lists {}, a fallback of {}",
                            type_name(*x),
                            type_name(t)
                        ),
                    };
                    let how = match b.manifest().reference {
                        super::Reference::Baseline => "relative to the channel's own baseline",
                        super::Reference::Absolute => "absolute features of one known machine",
                    };
                    format!("{what}: scored by {} ({why}; {how})", b.detector())
                }
            };
            lines.push(scorer);
            for (b, reason) in &choice.skipped {
                lines.push(format!(
                    "WARNING: {} is not used for it: {reason}",
                    b.detector()
                ));
            }
            if let Some((b, _)) = &choice.chosen {
                let expected = b.manifest().rolling.as_ref().and_then(|r| r.cadence_secs);
                let polled = !matches!(
                    d.transport(),
                    Some(crate::config::Transport::Mqtt(_)) | None
                );
                if let (None, Some(e), true) = (rate, expected, polled) {
                    let got = d.poll_interval_ms as f64 / 1000.0;
                    if (got / e - 1.0).abs() > 0.5 {
                        lines.push(format!(
                            "WARNING: polled every {got} s, but {} counts readings made every {e} s",
                            b.detector()
                        ));
                    }
                }
            }
            let sensor = format!("{}.{name}", d.id);
            if let Some(b) = baselines.get(&sensor) {
                lines.push(b.clone());
            } else if outbox_exists {
                lines.push("baseline: not started (no clean data yet)".to_string());
            }
            let _ = writeln!(
                out,
                "  {sensor} [{}]\n      {}",
                type_name(t),
                lines.join("\n      ")
            );
        }
    }
    out
}

/// `edgegw models sync`: one sync into the cache; the report as text.
pub async fn sync_command(config: &GatewayConfig) -> anyhow::Result<String> {
    use std::fmt::Write;
    if config.models.s3.is_none() {
        anyhow::bail!(SyncError::NotConfigured);
    }
    let registry = super::shared(ModelRegistry::with_defaults()?);
    let c = config.clone();
    let reg = registry.clone();
    let mut sync = tokio::task::spawn_blocking(move || {
        let mut s = ModelSync::new(&c, reg)?;
        s.load_cached();
        Ok::<_, SyncError>(s)
    })
    .await??;
    let report = sync.sync_once().await?;
    let mut out = String::new();
    if report.not_modified {
        let _ = writeln!(out, "index unchanged (304 Not Modified)");
    }
    for r in &report.installed {
        let _ = writeln!(out, "installed  {r}");
    }
    for r in &report.rejected {
        let _ = writeln!(out, "REJECTED   {r}");
    }
    for r in &report.failed {
        let _ = writeln!(out, "failed     {r} (retried at the next sync)");
    }
    for (t, d) in &report.active {
        let _ = writeln!(out, "active     {:<14} {d}", type_name(*t));
    }
    if !report.rejected.is_empty() || !report.failed.is_empty() {
        anyhow::bail!("{out}sync finished with problems");
    }
    Ok(out)
}
