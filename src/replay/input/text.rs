//! Text files: CSV and JSON lines into timestamped readings (and JSON blocks).

use super::*;

// ---------------------------------------------------------------------------------
// Timestamped text: CSV and JSONL.

#[derive(Debug)]
pub(super) struct TextReader {
    pub(super) reader: BufReader<File>,
    pub(super) json: bool,
    /// 1-based number of the line last read.
    pub(super) line_no: u64,
    /// A non-blank line has been read (the CSV header can only be the first).
    pub(super) seen_data: bool,
    pub(super) buf: Vec<u8>,
    /// Set at the end of the file or after an I/O error.
    pub(super) done: bool,
}

impl TextReader {
    pub(super) fn next_item(
        &mut self,
        path: &Path,
    ) -> Option<Result<ReplayItem, ReplayInputError>> {
        while !self.done {
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => self.done = true,
                Ok(_) => {
                    self.line_no += 1;
                    let line = match std::str::from_utf8(&self.buf) {
                        Ok(s) => s,
                        Err(e) => {
                            return Some(Err(ReplayInputError::BadLine {
                                path: path.to_path_buf(),
                                line: self.line_no,
                                message: format!(
                                    "not valid UTF-8 after byte {} of the line",
                                    e.valid_up_to()
                                ),
                            }))
                        }
                    };
                    let line = line.trim_start_matches('\u{feff}').trim();
                    if line.is_empty() {
                        continue;
                    }
                    let first = !self.seen_data;
                    self.seen_data = true;
                    let parsed = if self.json {
                        parse_json_line(line)
                    } else {
                        match parse_csv_line(line, first) {
                            Ok(None) => continue, // the header
                            Ok(Some(item)) => Ok(item),
                            Err(e) => Err(e),
                        }
                    };
                    return Some(parsed.map_err(|e| e.at(path, self.line_no)));
                }
                Err(source) => {
                    self.done = true;
                    return Some(Err(ReplayInputError::Io {
                        path: path.to_path_buf(),
                        source,
                    }));
                }
            }
        }
        None
    }
}

/// A line's problem before the path and line number are attached.
pub(super) enum LineError {
    Field(&'static str, String),
    Line(String),
}

impl LineError {
    pub(super) fn at(self, path: &Path, line: u64) -> ReplayInputError {
        match self {
            LineError::Field(field, message) => ReplayInputError::BadField {
                path: path.to_path_buf(),
                line,
                field,
                message,
            },
            LineError::Line(message) => ReplayInputError::BadLine {
                path: path.to_path_buf(),
                line,
                message,
            },
        }
    }
}

/// `Ok(None)` for a header line (only possible when `first`).
pub(super) fn parse_csv_line(line: &str, first: bool) -> Result<Option<ReplayItem>, LineError> {
    let fields: Vec<&str> = line.split(',').map(csv_field).collect();
    let ts_field = fields[0];
    let ts_us = match parse_timestamp(ts_field) {
        Some(ts) => ts,
        // A header names its columns; a first field starting like a number or a date
        // is a broken first row, not a header, and is reported.
        None if first && !ts_field.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
            return Ok(None)
        }
        None => {
            return Err(LineError::Field(
                "timestamp",
                format!("{ts_field:?} is not a time; expected {TIME_FORMS}"),
            ))
        }
    };
    if !(2..=3).contains(&fields.len()) {
        return Err(LineError::Line(format!(
            "{} fields; expected `timestamp,value` or `timestamp,value,channel`",
            fields.len()
        )));
    }
    let value = fields[1].parse::<f64>().map_err(|_| {
        LineError::Field(
            "value",
            format!("{:?} is not a number; expected e.g. 96.85", fields[1]),
        )
    })?;
    let channel = fields
        .get(2)
        .filter(|c| !c.is_empty())
        .map(|c| c.to_string());
    Ok(Some(ReplayItem::Scalar {
        ts_us,
        value,
        channel,
    }))
}

/// Trims a CSV field and removes one pair of surrounding double quotes.
pub(super) fn csv_field(f: &str) -> &str {
    let f = f.trim();
    f.strip_prefix('"')
        .and_then(|g| g.strip_suffix('"'))
        .unwrap_or(f)
}

/// One JSONL line: a scalar (`ts`, `value`, `channel`) or a block (`ts`,
/// `sample_rate_hz`, `samples`). Unknown fields are rejected so a typo is not silently
/// a missing value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JsonLine {
    pub(super) ts: serde_json::Value,
    pub(super) value: Option<f64>,
    pub(super) channel: Option<String>,
    pub(super) sample_rate_hz: Option<f64>,
    pub(super) samples: Option<Vec<f32>>,
}

pub(super) fn parse_json_line(line: &str) -> Result<ReplayItem, LineError> {
    let j: JsonLine = serde_json::from_str(line).map_err(|e| {
        // The line is parsed alone, so serde_json's "at line 1" would mislead.
        let mut m = e.to_string();
        if let Some(i) = m.rfind(" at line ") {
            m.truncate(i);
        }
        LineError::Line(format!("{m} (column {})", e.column()))
    })?;
    let ts_us = match &j.ts {
        serde_json::Value::String(s) => parse_timestamp(s),
        serde_json::Value::Number(n) => json_number_ts(n),
        _ => None,
    }
    .ok_or_else(|| {
        LineError::Field(
            "ts",
            format!("{} is not a time; expected {TIME_FORMS}", j.ts),
        )
    })?;
    const SHAPES: &str = "a line is a scalar {\"ts\", \"value\", optional \"channel\"} \
        or a block {\"ts\", \"sample_rate_hz\", \"samples\"}";
    match (j.value, j.samples) {
        (Some(value), None) => {
            if j.sample_rate_hz.is_some() {
                return Err(LineError::Field(
                    "sample_rate_hz",
                    format!("given with `value`; {SHAPES}"),
                ));
            }
            Ok(ReplayItem::Scalar {
                ts_us,
                value,
                channel: j.channel,
            })
        }
        (None, Some(samples)) => {
            if j.channel.is_some() {
                return Err(LineError::Field(
                    "channel",
                    format!("given with `samples`; {SHAPES}"),
                ));
            }
            let sample_rate_hz = match j.sample_rate_hz {
                Some(fs) if fs.is_finite() && fs > 0.0 => fs,
                Some(fs) => {
                    return Err(LineError::Field(
                        "sample_rate_hz",
                        format!("{fs} Hz; expected a positive number"),
                    ))
                }
                None => {
                    return Err(LineError::Field(
                        "sample_rate_hz",
                        format!("missing for a block of samples; {SHAPES}"),
                    ))
                }
            };
            if samples.is_empty() {
                return Err(LineError::Field(
                    "samples",
                    "empty; a block needs at least one sample".to_string(),
                ));
            }
            Ok(ReplayItem::Block {
                ts_us,
                sample_rate_hz,
                samples,
            })
        }
        (Some(_), Some(_)) => Err(LineError::Line(format!(
            "has both `value` and `samples`; {SHAPES}"
        ))),
        (None, None) => Err(LineError::Field(
            "value",
            format!("missing (and no `samples`); {SHAPES}"),
        )),
    }
}

pub(super) fn json_number_ts(n: &serde_json::Number) -> Option<TimestampUs> {
    if let Some(secs) = n.as_i64() {
        return secs.checked_mul(1_000_000);
    }
    n.as_f64().and_then(float_secs_to_us)
}

pub(super) fn float_secs_to_us(secs: f64) -> Option<TimestampUs> {
    let us = (secs * 1e6).round();
    // i64::MAX as f64 rounds up to 2^63, so `<` keeps the cast exact.
    (us.is_finite() && us.abs() < i64::MAX as f64).then_some(us as TimestampUs)
}

/// Parses a timestamp as accepted in CSV and JSONL, to µs since the epoch (UTC):
/// RFC 3339 with `Z` or an offset (`2013-12-02T21:15:00Z`, also with a space for the
/// `T`), a naive `YYYY-MM-DD HH:MM:SS[.ffffff]` (or with `T`) taken as UTC — NAB's
/// format — or a plain number of seconds since the epoch, decimals allowed. Fractions
/// below a microsecond are rounded. `None` if it is none of these.
pub fn parse_timestamp(s: &str) -> Option<TimestampUs> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    use time::{OffsetDateTime, PrimitiveDateTime};

    let s = s.trim();
    if let Some(us) = parse_epoch_secs(s) {
        return Some(us);
    }
    let to_us = |t: OffsetDateTime| {
        let us = (t.unix_timestamp_nanos() + 500).div_euclid(1_000);
        TimestampUs::try_from(us).ok()
    };
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return to_us(t);
    }
    // The same with a space for the `T` (as PostgreSQL and many exports write it).
    if s.len() > 10 && s.as_bytes()[10] == b' ' {
        let with_t = format!("{}T{}", &s[..10], &s[11..]);
        if let Ok(t) = OffsetDateTime::parse(&with_t, &Rfc3339) {
            return to_us(t);
        }
    }
    let naive_space = format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    let naive_t = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    PrimitiveDateTime::parse(s, &naive_space)
        .or_else(|_| PrimitiveDateTime::parse(s, &naive_t))
        .ok()
        .and_then(|t| to_us(t.assume_utc()))
}

/// Seconds since the epoch: exact decimal arithmetic for `[+-]digits[.digits]`, `f64`
/// for exponent forms (`1.3860189e9`).
pub(super) fn parse_epoch_secs(s: &str) -> Option<TimestampUs> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if body.contains(['e', 'E']) {
        return s.parse::<f64>().ok().and_then(float_secs_to_us);
    }
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let mut us: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    us = us.checked_mul(1_000_000)?;
    let f = frac.as_bytes();
    let mut frac_us: i64 = 0;
    for i in 0..6 {
        frac_us = frac_us * 10 + f.get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    if f.get(6).is_some_and(|d| *d >= b'5') {
        frac_us += 1;
    }
    us = us.checked_add(frac_us)?;
    Some(if neg { -us } else { us })
}
