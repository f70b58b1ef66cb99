//! Turning one frame into numbers: checksum, then delimited positions or regex
//! named captures, then `raw * scale + offset`. Pure; compiled once per device from
//! its validated profile.

use super::frame::nmea_data;
use crate::profiles::{Checksum, SerialFormat, SerialParser};
use crate::sources::ChannelId;

/// Why a frame was dropped; `kind()` is the `DeviceStats` error counter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    #[error("bad checksum: {0}")]
    Checksum(String),
    #[error("cannot parse: {0}")]
    Parse(String),
}

impl FrameError {
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::Checksum(_) => "checksum",
            FrameError::Parse(_) => "parse",
        }
    }
}

#[derive(Debug, Clone)]
enum Cut {
    Delimited(Vec<u8>),
    Regex(regex::bytes::Regex),
}

#[derive(Debug, Clone)]
struct Field {
    channel: ChannelId,
    /// Field position (delimited) or capture group name (regex).
    index: usize,
    capture: String,
    scale: f64,
    offset: f64,
}

/// A device's line format, ready to parse frames.
#[derive(Debug, Clone)]
pub struct LineParser {
    checksum: Checksum,
    cut: Cut,
    fields: Vec<Field>,
}

impl LineParser {
    /// Compiles the format. `channel` maps a profile channel name to its identity
    /// (`DeviceSpec::channel`). Errors name what is wrong; validation normally
    /// catches all of them first.
    pub fn new(
        fmt: &SerialFormat,
        channel: impl Fn(&str) -> Option<ChannelId>,
    ) -> Result<LineParser, String> {
        let cut = match fmt.parser {
            SerialParser::Delimited => {
                if fmt.delimiter.is_empty() {
                    return Err("serial.delimiter is empty".into());
                }
                Cut::Delimited(fmt.delimiter.as_bytes().to_vec())
            }
            SerialParser::Regex => {
                let src = fmt.regex.as_deref().ok_or("serial.regex is missing")?;
                Cut::Regex(
                    regex::bytes::Regex::new(src)
                        .map_err(|e| format!("serial.regex does not compile: {e}"))?,
                )
            }
        };
        let mut fields = Vec::new();
        for (i, f) in fmt.fields.iter().enumerate() {
            let ch = channel(&f.channel)
                .ok_or_else(|| format!("serial.fields[{i}]: no channel {:?}", f.channel))?;
            let (index, capture) = match (&cut, f.index, &f.capture) {
                (Cut::Delimited(_), Some(ix), _) => (ix, String::new()),
                (Cut::Regex(_), _, Some(c)) => (0, c.clone()),
                _ => {
                    return Err(format!(
                        "serial.fields[{i}]: needs `index` (delimited) or `capture` (regex)"
                    ))
                }
            };
            fields.push(Field {
                channel: ch,
                index,
                capture,
                scale: f.scale,
                offset: f.offset,
            });
        }
        Ok(LineParser {
            checksum: fmt.checksum,
            cut,
            fields,
        })
    }

    /// The scaled value of every field of one frame, or why the frame is dropped.
    /// A frame with one bad field is dropped whole: its fields belong together.
    pub fn parse(&self, frame: &[u8]) -> Result<Vec<(ChannelId, f64)>, FrameError> {
        let data = match self.checksum {
            Checksum::None => frame.trim_ascii(),
            Checksum::NmeaXor => nmea_data(frame).map_err(FrameError::Checksum)?,
        };
        let mut out = Vec::with_capacity(self.fields.len());
        match &self.cut {
            Cut::Delimited(d) => {
                let parts = split(data, d);
                for f in &self.fields {
                    let raw = parts.get(f.index).ok_or_else(|| {
                        FrameError::Parse(format!(
                            "field {} of {} is missing ({} fields)",
                            f.index,
                            f.channel.channel,
                            parts.len()
                        ))
                    })?;
                    out.push((f.channel.clone(), number(raw, f)?));
                }
            }
            Cut::Regex(re) => {
                let caps = re.captures(data).ok_or_else(|| {
                    FrameError::Parse("the line does not match serial.regex".into())
                })?;
                for f in &self.fields {
                    let raw = caps.name(&f.capture).ok_or_else(|| {
                        FrameError::Parse(format!("capture {:?} did not match", f.capture))
                    })?;
                    out.push((f.channel.clone(), number(raw.as_bytes(), f)?));
                }
            }
        }
        Ok(out)
    }
}

fn split<'a>(data: &'a [u8], delim: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(delim.len()).position(|w| w == delim) {
        parts.push(&rest[..i]);
        rest = &rest[i + delim.len()..];
    }
    parts.push(rest);
    parts
}

fn number(raw: &[u8], f: &Field) -> Result<f64, FrameError> {
    let text = std::str::from_utf8(raw.trim_ascii()).unwrap_or("");
    let v: f64 = text.parse().map_err(|_| {
        FrameError::Parse(format!(
            "{}: {:?} is not a number",
            f.channel.channel,
            String::from_utf8_lossy(raw)
        ))
    })?;
    let v = v * f.scale + f.offset;
    if !v.is_finite() {
        return Err(FrameError::Parse(format!(
            "{}: {text:?} is not a finite number",
            f.channel.channel
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::{SerialField, SerialFrame};
    use crate::record::SensorType;

    fn ch(name: &str) -> Option<ChannelId> {
        Some(ChannelId::new("dev", name, SensorType::Vibration, "mm/s"))
    }

    fn field(channel: &str, index: Option<usize>, capture: Option<&str>) -> SerialField {
        SerialField {
            channel: channel.into(),
            index,
            capture: capture.map(String::from),
            scale: 1.0,
            offset: 0.0,
        }
    }

    fn vm10() -> LineParser {
        let mut temp = field("temp", Some(4), None);
        temp.scale = 10.0;
        temp.offset = -1.0;
        let fmt = SerialFormat {
            frame: SerialFrame {
                terminator: Some("\r\n".into()),
                start: None,
                end: None,
                max_length: 96,
            },
            checksum: Checksum::NmeaXor,
            parser: SerialParser::Delimited,
            delimiter: ",".into(),
            regex: None,
            poll_command: None,
            fields: vec![field("vrms", Some(2), None), temp],
        };
        LineParser::new(&fmt, ch).unwrap()
    }

    fn vals(r: Result<Vec<(ChannelId, f64)>, FrameError>) -> Vec<(String, f64)> {
        r.unwrap()
            .into_iter()
            .map(|(c, v)| (c.channel.to_string(), v))
            .collect()
    }

    #[test]
    fn delimited_with_checksum_scale_and_offset() {
        let p = vm10();
        let line = b"$PVIB,000123,2.31,0.84,41.7*4C";
        let data = &line[1..line.len() - 3];
        let line = format!(
            "$PVIB,000123,2.31,0.84,41.7*{:02X}",
            super::super::frame::nmea_xor(data)
        );
        assert_eq!(
            vals(p.parse(line.as_bytes())),
            [("vrms".to_string(), 2.31), ("temp".to_string(), 416.0)]
        );
    }

    #[test]
    fn delimited_faults_have_kinds() {
        let p = vm10();
        let bad_sum = p.parse(b"$PVIB,000123,2.31,0.84,41.7*00").unwrap_err();
        assert_eq!(bad_sum.kind(), "checksum");
        let line = |d: &str| format!("${d}*{:02X}", super::super::frame::nmea_xor(d.as_bytes()));
        let short = p.parse(line("PVIB,1,2.0").as_bytes()).unwrap_err();
        assert_eq!(short.kind(), "parse");
        assert!(short.to_string().contains("field 4"), "{short}");
        let word = p.parse(line("PVIB,1,abc,0.8,40").as_bytes()).unwrap_err();
        assert!(word.to_string().contains("\"abc\""), "{word}");
        let inf = p.parse(line("PVIB,1,inf,0.8,40").as_bytes()).unwrap_err();
        assert_eq!(inf.kind(), "parse");
    }

    #[test]
    fn regex_named_captures() {
        let fmt = SerialFormat {
            frame: SerialFrame {
                terminator: Some("\n".into()),
                start: None,
                end: None,
                max_length: 64,
            },
            checksum: Checksum::None,
            parser: SerialParser::Regex,
            delimiter: ",".into(),
            regex: Some(r"T=\s*(?P<t>-?\d+(?:\.\d+)?)\s*'C\s+RH=\s*(?P<rh>\d+(?:\.\d+)?)".into()),
            poll_command: Some("SEND\r".into()),
            fields: vec![field("t", None, Some("t")), field("rh", None, Some("rh"))],
        };
        let p = LineParser::new(&fmt, ch).unwrap();
        assert_eq!(
            vals(p.parse(b"T= -3.5 'C RH= 45.2 %RH\r")),
            [("t".to_string(), -3.5), ("rh".to_string(), 45.2)]
        );
        assert_eq!(p.parse(b"ERR 7\r").unwrap_err().kind(), "parse");
        assert_eq!(p.parse(b"\xff\xfeT=\xff").unwrap_err().kind(), "parse");
    }
}
