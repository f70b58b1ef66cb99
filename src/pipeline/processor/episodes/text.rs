//! The words of a fault alert: the features furthest from the baseline, why the
//! window or reading is anomalous, the anomaly type as a label, and the key features
//! a maintenance engineer reads first.

use super::*;

/// One feature's deviation from the baseline, for alert texts.
pub(super) struct Deviation {
    pub(super) name: String,
    pub(super) value: f64,
    pub(super) typical: f64,
    pub(super) ratio: f64,
    pub(super) z: f64,
}

/// The scored features furthest from the baseline (largest |z| first, at most 3).
pub(super) fn deviations(r: &RelativeDetector, named: &[(String, f64)]) -> Vec<Deviation> {
    let Some(b) = r.baseline() else {
        return Vec::new();
    };
    let mut out: Vec<Deviation> = r
        .specs()
        .iter()
        .enumerate()
        .filter(|(j, _)| *j < r.z().len())
        .filter(|(_, s)| !s.name.starts_with("env_"))
        .filter_map(|(j, s)| {
            let value = named.iter().find(|(n, _)| n == s.name)?.1;
            let typical = b.typical(j)?;
            let z = r.z()[j];
            let counts = match s.sides {
                crate::pipeline::baseline::Sides::Upper => z > 0.0,
                crate::pipeline::baseline::Sides::Both => true,
            };
            (counts && value.is_finite()).then(|| Deviation {
                name: s.name.to_string(),
                value,
                typical,
                ratio: if typical != 0.0 {
                    value / typical
                } else {
                    f64::NAN
                },
                z,
            })
        })
        .collect();
    out.sort_by(|a, b| b.z.abs().total_cmp(&a.z.abs()));
    out.truncate(3);
    out
}

/// Why a window or reading is anomalous, in words.
pub(super) fn why_text(
    det: &Detection,
    trend_alarmed: bool,
    cusum: f64,
    alarm: f64,
    devs: &[Deviation],
    unit: &str,
) -> String {
    let mut parts = Vec::new();
    if det.is_anomalous() {
        parts.push(format!(
            "score {} above the threshold {} ({})",
            fmt_num(det.score),
            fmt_num(det.threshold),
            det.detector
        ));
    }
    if trend_alarmed {
        parts.push(format!(
            "a sustained rise: the trend (CUSUM of the score above half the threshold) reached {} against its alarm level {}",
            fmt_num(cusum),
            fmt_num(alarm)
        ));
    }
    let mut text = parts.join(" and ");
    if !devs.is_empty() {
        let d: Vec<String> = devs
            .iter()
            .map(|d| {
                let dir = if d.z >= 0.0 { "above" } else { "below" };
                if d.name.starts_with("band_")
                    || d.name.ends_with("_rms")
                    || d.name == "kurtosis"
                    || d.name == "crest_factor"
                    || d.name == "envelope_modulation"
                {
                    format!(
                        "{} {} x its baseline ({} against {})",
                        d.name,
                        fmt_num(d.ratio),
                        fmt_num(d.value),
                        fmt_num(d.typical)
                    )
                } else {
                    format!(
                        "{} {} {unit}, {} its baseline {} {unit} ({} robust sd)",
                        d.name,
                        fmt_num(d.value),
                        dir,
                        fmt_num(d.typical),
                        fmt_num(d.z.abs())
                    )
                }
            })
            .collect();
        text.push_str("; furthest from this machine's learned baseline: ");
        text.push_str(&d.join(", "));
    }
    text
}

pub(super) fn type_label(anomaly_type: &str) -> String {
    let mut s = anomaly_type.replace('_', " ");
    if let Some(first) = s.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    s
}

/// The features a maintenance engineer reads first, in words.
pub(super) fn key_feature_text(features: &[(String, f64)], unit: &str) -> String {
    let get = |n: &str| {
        features
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite())
    };
    let mut parts = Vec::new();
    if let Some(v) = get("accel_rms").or_else(|| get("rms")) {
        parts.push(format!("RMS {} {unit}", fmt_num(v)));
    }
    if let Some(v) = get("kurtosis") {
        parts.push(format!("kurtosis {}", fmt_num(v)));
    }
    if let Some(v) = get("crest_factor") {
        parts.push(format!("crest factor {}", fmt_num(v)));
    }
    if let Some(v) = get("velocity_rms") {
        parts.push(format!("velocity {} mm/s", fmt_num(v)));
    }
    if let Some(v) = get("value").or_else(|| get("level")) {
        parts.push(format!("level {} {unit}", fmt_num(v)));
    }
    if let Some(v) = get("mean") {
        if get("value").or_else(|| get("level")).is_some() {
            parts.push(format!("rolling mean {} {unit}", fmt_num(v)));
        }
    }
    if let Some(v) = get("slope") {
        parts.push(format!("trend {} {unit} per hour", fmt_num(v)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("Now: {}.", parts.join(", "))
    }
}
