//! Cutting a serial byte stream into frames, NMEA checksums and poll-command escapes.
//! Pure functions and state machines over bytes: no I/O, no clocks, so every fault
//! case (noise, partial lines, over-long frames) is unit-tested here.

use crate::profiles::SerialFrame;

/// What the framer found in the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEvent {
    /// One complete frame: the bytes between the markers (without terminator,
    /// start or end marker).
    Frame(Vec<u8>),
    /// Bytes that were thrown away. `kind` is the error counter it goes to:
    /// `overlong` (no terminator within `max_length`; `bytes` is the start of it),
    /// `garbage` (bytes outside start/end markers) or `partial` (a frame cut short
    /// by a new start marker).
    Dropped {
        kind: &'static str,
        bytes: Vec<u8>,
        /// Length of the dropped data; `bytes` may be only its start.
        len: usize,
    },
}

/// Keep at most this much of a dropped run for the log line.
const KEEP_FOR_LOG: usize = 96;

#[derive(Debug, Clone)]
enum Mode {
    Terminator(Vec<u8>),
    Markers {
        start: Vec<u8>,
        end: Vec<u8>,
        /// Inside a frame (after a start marker).
        inside: bool,
    },
}

/// Incremental framer: feed it whatever the port returned, collect frames.
/// Memory is bounded by `max_length` plus the marker lengths.
#[derive(Debug, Clone)]
pub struct Framer {
    mode: Mode,
    /// Longest accepted frame content, in bytes.
    max_length: usize,
    /// Bytes not yet consumed.
    buf: Vec<u8>,
    /// While skipping an over-long frame: its first bytes (for the log) and length.
    skipping: Option<(Vec<u8>, usize)>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Framer {
    /// A framer for a validated frame spec (terminator, or start and end markers).
    pub fn new(spec: &SerialFrame) -> Framer {
        let mode = match (&spec.terminator, &spec.start, &spec.end) {
            (_, Some(s), Some(e)) if !s.is_empty() && !e.is_empty() => Mode::Markers {
                start: s.as_bytes().to_vec(),
                end: e.as_bytes().to_vec(),
                inside: false,
            },
            (Some(t), _, _) if !t.is_empty() => Mode::Terminator(t.as_bytes().to_vec()),
            // Validation refuses this; fall back to lines rather than panic.
            _ => Mode::Terminator(b"\n".to_vec()),
        };
        Framer {
            mode,
            max_length: spec.max_length.max(1),
            buf: Vec::new(),
            skipping: None,
        }
    }

    /// Forgets a partly received frame (after the port was reopened). Returns what
    /// was dropped, if anything.
    pub fn reset(&mut self) -> Option<FrameEvent> {
        let dropped = std::mem::take(&mut self.buf);
        let skipping = self.skipping.take();
        if let Mode::Markers { inside, .. } = &mut self.mode {
            *inside = false;
        }
        if let Some((head, len)) = skipping {
            return Some(FrameEvent::Dropped {
                kind: "overlong",
                bytes: head,
                len: len + dropped.len(),
            });
        }
        if dropped.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        Some(FrameEvent::Dropped {
            kind: "partial",
            len: dropped.len(),
            bytes: dropped.into_iter().take(KEEP_FOR_LOG).collect(),
        })
    }

    /// Feeds bytes; complete frames and dropped runs go to `out`, in order.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<FrameEvent>) {
        self.buf.extend_from_slice(bytes);
        match &self.mode {
            Mode::Terminator(_) => self.lines(out),
            Mode::Markers { .. } => self.marked(out),
        }
    }

    fn lines(&mut self, out: &mut Vec<FrameEvent>) {
        let Mode::Terminator(term) = &self.mode else {
            return;
        };
        let tl = term.len();
        let mut pos = 0;
        loop {
            let rest = &self.buf[pos..];
            match find(rest, term) {
                Some(i) => {
                    let frame = &rest[..i];
                    if let Some((head, len)) = self.skipping.take() {
                        out.push(FrameEvent::Dropped {
                            kind: "overlong",
                            bytes: head,
                            len: len + i,
                        });
                    } else if frame.len() > self.max_length {
                        out.push(FrameEvent::Dropped {
                            kind: "overlong",
                            bytes: frame[..KEEP_FOR_LOG.min(frame.len())].to_vec(),
                            len: frame.len(),
                        });
                    } else {
                        out.push(FrameEvent::Frame(frame.to_vec()));
                    }
                    pos += i + tl;
                }
                None => {
                    // No terminator yet. Keep what could still be a frame; beyond
                    // max_length, remember only the start and keep the last tl-1
                    // bytes (the start of a terminator).
                    if rest.len() > self.max_length + tl - 1 {
                        let keep_from = rest.len() - (tl - 1);
                        match &mut self.skipping {
                            Some((_, len)) => *len += keep_from,
                            None => {
                                self.skipping =
                                    Some((rest[..KEEP_FOR_LOG.min(keep_from)].to_vec(), keep_from))
                            }
                        }
                        pos += keep_from;
                    }
                    break;
                }
            }
        }
        self.buf.drain(..pos);
    }

    fn marked(&mut self, out: &mut Vec<FrameEvent>) {
        let Mode::Markers { start, end, inside } = &mut self.mode else {
            return;
        };
        let mut pos = 0;
        loop {
            let rest = &self.buf[pos..];
            if !*inside {
                match find(rest, start) {
                    Some(i) => {
                        garbage(&rest[..i], out);
                        pos += i + start.len();
                        *inside = true;
                    }
                    None => {
                        // Keep what could be the start of a start marker.
                        let keep = (start.len() - 1).min(rest.len());
                        let drop = rest.len() - keep;
                        garbage(&rest[..drop], out);
                        pos += drop;
                        break;
                    }
                }
            } else {
                let e = find(rest, end);
                let s = find(rest, start);
                match (e, s) {
                    // A new start before the end: the frame was cut short.
                    (e, Some(si)) if e.is_none_or(|ei| si < ei) => {
                        if let Some((head, len)) = self.skipping.take() {
                            out.push(FrameEvent::Dropped {
                                kind: "overlong",
                                bytes: head,
                                len: len + si,
                            });
                        } else {
                            out.push(FrameEvent::Dropped {
                                kind: "partial",
                                bytes: rest[..KEEP_FOR_LOG.min(si)].to_vec(),
                                len: si,
                            });
                        }
                        pos += si + start.len();
                    }
                    (Some(ei), _) => {
                        let frame = &rest[..ei];
                        if let Some((head, len)) = self.skipping.take() {
                            out.push(FrameEvent::Dropped {
                                kind: "overlong",
                                bytes: head,
                                len: len + ei,
                            });
                        } else if frame.len() > self.max_length {
                            out.push(FrameEvent::Dropped {
                                kind: "overlong",
                                bytes: frame[..KEEP_FOR_LOG.min(frame.len())].to_vec(),
                                len: frame.len(),
                            });
                        } else {
                            out.push(FrameEvent::Frame(frame.to_vec()));
                        }
                        pos += ei + end.len();
                        *inside = false;
                    }
                    (None, _) => {
                        let keep = end.len().max(start.len()) - 1;
                        if rest.len() > self.max_length + keep {
                            let keep_from = rest.len() - keep;
                            match &mut self.skipping {
                                Some((_, len)) => *len += keep_from,
                                None => {
                                    self.skipping = Some((
                                        rest[..KEEP_FOR_LOG.min(keep_from)].to_vec(),
                                        keep_from,
                                    ))
                                }
                            }
                            pos += keep_from;
                        }
                        break;
                    }
                }
            }
        }
        self.buf.drain(..pos);
    }
}

/// Bytes outside frames are garbage, except line ends and spaces between frames.
fn garbage(bytes: &[u8], out: &mut Vec<FrameEvent>) {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    out.push(FrameEvent::Dropped {
        kind: "garbage",
        bytes: bytes[..KEEP_FOR_LOG.min(bytes.len())].to_vec(),
        len: bytes.len(),
    });
}

/// Checks an NMEA-style checksum (`$<data>*HH`, HH = XOR of the data bytes, hex)
/// and returns the data between `$` and `*`. Bytes before `$` (noise) and line-end
/// whitespace after the checksum are tolerated.
pub fn nmea_data(frame: &[u8]) -> Result<&[u8], String> {
    let start = frame
        .iter()
        .position(|b| *b == b'$')
        .ok_or("no '$' at the start of the sentence")?;
    let body = &frame[start + 1..];
    let star = body
        .iter()
        .rposition(|b| *b == b'*')
        .ok_or("no '*' before the checksum")?;
    let data = &body[..star];
    let hex = body[star + 1..].trim_ascii();
    let given = std::str::from_utf8(hex)
        .ok()
        .filter(|h| h.len() == 2)
        .and_then(|h| u8::from_str_radix(h, 16).ok())
        .ok_or("the checksum is not two hex digits")?;
    let computed = nmea_xor(data);
    if computed != given {
        return Err(format!(
            "checksum mismatch: sentence says {given:02X}, data gives {computed:02X}"
        ));
    }
    Ok(data)
}

/// XOR of all bytes (the NMEA 0183 checksum of the data between `$` and `*`).
pub fn nmea_xor(data: &[u8]) -> u8 {
    data.iter().fold(0, |a, b| a ^ b)
}

/// Turns a profile's `poll_command` into bytes: `\r`, `\n`, `\t`, `\\` and `\xHH`
/// are understood (TOML basic strings already turn `"\r"` into a CR; this serves
/// literal strings and `\xHH`, which TOML lacks).
pub fn unescape_command(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            continue;
        }
        match chars.next() {
            Some('r') => out.push(b'\r'),
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('\\') => out.push(b'\\'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                let b = (hex.len() == 2)
                    .then(|| u8::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .ok_or_else(|| {
                        format!("\\x needs two hex digits (e.g. \\x02), found {hex:?}")
                    })?;
                out.push(b);
            }
            other => {
                return Err(format!(
                    "unknown escape \\{}; use \\r, \\n, \\t, \\\\ or \\xHH",
                    other.map(String::from).unwrap_or_default()
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(term: Option<&str>, start: Option<&str>, end: Option<&str>, max: usize) -> SerialFrame {
        SerialFrame {
            terminator: term.map(String::from),
            start: start.map(String::from),
            end: end.map(String::from),
            max_length: max,
        }
    }

    fn frames(ev: &[FrameEvent]) -> Vec<String> {
        ev.iter()
            .map(|e| match e {
                FrameEvent::Frame(f) => String::from_utf8_lossy(f).into_owned(),
                FrameEvent::Dropped { kind, len, .. } => format!("<{kind}:{len}>"),
            })
            .collect()
    }

    #[test]
    fn lines_split_across_reads_and_crlf_split_in_the_middle() {
        let mut f = Framer::new(&spec(Some("\r\n"), None, None, 16));
        let mut out = Vec::new();
        f.push(b"$A,1*", &mut out);
        assert!(out.is_empty());
        f.push(b"00\r", &mut out);
        assert!(out.is_empty());
        f.push(b"\n$B,2*00\r\n$C", &mut out);
        assert_eq!(frames(&out), ["$A,1*00", "$B,2*00"]);
        out.clear();
        f.push(b",3\r\n", &mut out);
        assert_eq!(frames(&out), ["$C,3"]);
    }

    #[test]
    fn an_overlong_line_is_dropped_once_and_the_next_line_survives() {
        let mut f = Framer::new(&spec(Some("\r\n"), None, None, 8));
        let mut out = Vec::new();
        f.push(b"0123456789", &mut out);
        f.push(b"abcdefghij", &mut out);
        f.push(b"klm\r", &mut out);
        assert!(out.is_empty(), "{out:?}");
        f.push(b"\nok\r\n", &mut out);
        assert_eq!(frames(&out), ["<overlong:23>", "ok"]);
        // Memory stays bounded while skipping.
        let mut f = Framer::new(&spec(Some("\n"), None, None, 8));
        for _ in 0..1000 {
            f.push(&[b'x'; 100], &mut out);
        }
        assert!(f.buf.len() <= 9, "{}", f.buf.len());
        out.clear();
        f.push(b"\nab\n", &mut out);
        assert_eq!(frames(&out), ["<overlong:100000>", "ab"]);
    }

    #[test]
    fn exactly_max_length_is_accepted() {
        let mut f = Framer::new(&spec(Some("\n"), None, None, 4));
        let mut out = Vec::new();
        f.push(b"abcd\nabcde\n", &mut out);
        assert_eq!(frames(&out), ["abcd", "<overlong:5>"]);
    }

    #[test]
    fn markers_drop_garbage_and_cut_frames() {
        let mut f = Framer::new(&spec(None, Some("\u{2}"), Some("\u{3}"), 10));
        let mut out = Vec::new();
        f.push(b"noise\x02T=1\x03\r\n\x02T=", &mut out);
        f.push(b"2\x02T=3\x03\x02", &mut out);
        f.push(b"0123456789AB\x03", &mut out);
        assert_eq!(
            frames(&out),
            ["<garbage:5>", "T=1", "<partial:3>", "T=3", "<overlong:12>"]
        );
    }

    #[test]
    fn reset_reports_a_partial_frame() {
        let mut f = Framer::new(&spec(Some("\n"), None, None, 10));
        let mut out = Vec::new();
        f.push(b"half", &mut out);
        assert_eq!(frames(&[f.reset().unwrap()]), ["<partial:4>"]);
        assert_eq!(f.reset(), None);
    }

    #[test]
    fn nmea_checksum() {
        // Checksum of "GPGGA,..." from the NMEA standard's example.
        let s = b"$GPGLL,4916.45,N,12311.12,W,225444,A*31\r";
        assert_eq!(
            nmea_data(s).unwrap(),
            b"GPGLL,4916.45,N,12311.12,W,225444,A"
        );
        let data = b"PVIB,000123,2.31,0.84,41.7";
        let line = format!("$PVIB,000123,2.31,0.84,41.7*{:02X}", nmea_xor(data));
        assert_eq!(nmea_data(line.as_bytes()).unwrap(), data);
        let lower = line.to_lowercase().replace("$pvib", "$PVIB");
        assert!(
            nmea_data(lower.as_bytes()).is_ok(),
            "hex digits in lower case"
        );
        assert!(nmea_data(b"$PVIB,000123,2.31,0.84,41.8*4C")
            .unwrap_err()
            .contains("mismatch"));
        assert!(nmea_data(b"PVIB,1*00").is_err());
        assert!(nmea_data(b"$PVIB,1").is_err());
        assert!(nmea_data(b"$PVIB,1*0").is_err());
        assert!(nmea_data(b"$PVIB,1*ZZ").is_err());
    }

    #[test]
    fn poll_command_escapes() {
        assert_eq!(unescape_command("SEND\r").unwrap(), b"SEND\r");
        assert_eq!(unescape_command(r"SEND\r\n").unwrap(), b"SEND\r\n");
        assert_eq!(unescape_command(r"\x02Q\x03\\").unwrap(), b"\x02Q\x03\\");
        assert!(unescape_command(r"\x2")
            .unwrap_err()
            .contains("two hex digits"));
        assert!(unescape_command(r"\q")
            .unwrap_err()
            .contains("unknown escape"));
        assert!(unescape_command("\\")
            .unwrap_err()
            .contains("unknown escape"));
    }
}
