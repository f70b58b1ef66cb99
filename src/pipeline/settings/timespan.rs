//! [`TimeSpan`]: a length of time as people write it in the config (`"24h"`,
//! `"45 min"`, a plain number of seconds), parsed, printed and (de)serialized.

use serde::{Deserialize, Serialize};

/// A length of time written for people: `"24h"`, `"45 min"`, `"7d"`, `"0.17s"`,
/// `"500ms"`, or a plain number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct TimeSpan(f64);

impl TimeSpan {
    pub fn from_secs(secs: f64) -> TimeSpan {
        TimeSpan(secs)
    }

    pub fn secs(self) -> f64 {
        self.0
    }

    /// Parses `"24h"`, `"1.5 h"`, `"45min"`, `"7 days"`, `"100 ms"`, `"30"` (seconds).
    pub fn parse(text: &str) -> Result<TimeSpan, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a duration: write e.g. \"24h\", \"45min\", \"7d\", \"0.5s\" or a number of seconds"))?;
        let factor = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "ms" | "millisecond" | "milliseconds" => 1e-3,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?}; use ms, s, min, h or d"
                ))
            }
        };
        if !value.is_finite() || value < 0.0 {
            return Err(format!("{text:?} must be a positive duration"));
        }
        Ok(TimeSpan(value * factor))
    }
}

impl std::fmt::Display for TimeSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        if s >= 86_400.0 && (s / 86_400.0).fract() == 0.0 {
            write!(f, "{}d", s / 86_400.0)
        } else if s >= 3600.0 && (s / 3600.0).fract() == 0.0 {
            write!(f, "{}h", s / 3600.0)
        } else if s >= 60.0 && (s / 60.0).fract() == 0.0 {
            write!(f, "{}min", s / 60.0)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl Serialize for TimeSpan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for TimeSpan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TimeSpan, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) if n.is_finite() && n >= 0.0 => Ok(TimeSpan(n)),
            Raw::Num(n) => Err(serde::de::Error::custom(format!(
                "{n} must be a positive number of seconds"
            ))),
            Raw::Text(t) => TimeSpan::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}
