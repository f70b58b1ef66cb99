//! Payload timestamps: reading one in the profile's format, and checking it lies
//! within the profile's bounds around the arrival time.

use super::{kind_of, truncate};
use crate::profiles::TimestampFormat;
use crate::record::TimestampUs;

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
