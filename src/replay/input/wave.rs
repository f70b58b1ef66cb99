//! Waveform files: raw little-endian f32/i16 and WAV (RIFF) into blocks.

use super::*;

// ---------------------------------------------------------------------------------
// Waveforms: raw f32/i16 and WAV.

/// How one sample is stored, and how it becomes a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Encoding {
    /// Raw file: IEEE f32 LE.
    RawF32,
    /// Raw file: i16 LE, kept as integer counts.
    RawI16,
    /// WAV integer PCM, normalised to -1..1.
    Pcm8,
    Pcm16,
    Pcm24,
    Pcm32,
    /// WAV IEEE float, as stored.
    Float32,
    Float64,
}

impl Encoding {
    pub(super) fn width(self) -> usize {
        match self {
            Encoding::Pcm8 => 1,
            Encoding::RawI16 | Encoding::Pcm16 => 2,
            Encoding::Pcm24 => 3,
            Encoding::RawF32 | Encoding::Pcm32 | Encoding::Float32 => 4,
            Encoding::Float64 => 8,
        }
    }

    /// `b` is exactly `width()` bytes.
    pub(super) fn decode(self, b: &[u8]) -> f64 {
        match self {
            Encoding::RawF32 | Encoding::Float32 => {
                f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            Encoding::RawI16 => f64::from(i16::from_le_bytes([b[0], b[1]])),
            Encoding::Pcm8 => (f64::from(b[0]) - 128.0) / 128.0,
            Encoding::Pcm16 => f64::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0,
            // Shift into the top of an i32 so the sign extends, then back down.
            Encoding::Pcm24 => {
                f64::from(i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) / 8_388_608.0
            }
            Encoding::Pcm32 => {
                f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])) / 2_147_483_648.0
            }
            Encoding::Float64 => {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Layout {
    Continuous { block_samples: usize },
    Snapshot { samples: usize, period_us: f64 },
}

#[derive(Debug)]
pub(super) struct WaveReader {
    /// Positioned at the next unread frame.
    pub(super) reader: BufReader<File>,
    pub(super) encoding: Encoding,
    /// Bytes per frame (all channels) and the chosen channel's byte offset in it.
    pub(super) frame_bytes: usize,
    pub(super) channel_offset: usize,
    pub(super) frames_total: u64,
    pub(super) frames_done: u64,
    pub(super) sample_rate_hz: f64,
    pub(super) scale: f64,
    pub(super) offset: f64,
    pub(super) start_us: TimestampUs,
    pub(super) layout: Layout,
    /// Reused for each block's bytes.
    pub(super) buf: Vec<u8>,
    /// Set after an I/O error: the iterator ends.
    pub(super) failed: bool,
}

impl WaveReader {
    pub(super) fn open(
        path: &Path,
        format: InputFormat,
        file: File,
        opts: &InputOptions,
    ) -> Result<WaveReader, ReplayInputError> {
        let invalid = |message: String| ReplayInputError::InvalidOption {
            path: path.to_path_buf(),
            message,
        };
        let io_err = |source| ReplayInputError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(fs) = opts.sample_rate_hz {
            if !(fs.is_finite() && fs > 0.0) {
                return Err(invalid(format!(
                    "sample rate {fs} Hz must be a positive number"
                )));
            }
        }
        if !(opts.scale.is_finite() && opts.offset.is_finite()) {
            return Err(invalid(format!(
                "scale {} and offset {} must be finite numbers",
                opts.scale, opts.offset
            )));
        }
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut reader = BufReader::new(file);
        let (encoding, channels, sample_rate_hz, data_len) = match format {
            InputFormat::Wav => {
                let wav = read_wav_header(path, &mut reader, file_len)?;
                if let Some(given) = opts.sample_rate_hz {
                    if given != f64::from(wav.sample_rate_hz) {
                        return Err(ReplayInputError::SampleRateMismatch {
                            path: path.to_path_buf(),
                            wav_hz: wav.sample_rate_hz,
                            given_hz: given,
                        });
                    }
                }
                if opts.wav_channel >= usize::from(wav.channels) {
                    return Err(invalid(format!(
                        "WAV channel {} does not exist: the file has {} channel(s), 0..={}",
                        opts.wav_channel,
                        wav.channels,
                        wav.channels - 1
                    )));
                }
                let fs = f64::from(wav.sample_rate_hz);
                (wav.encoding, usize::from(wav.channels), fs, wav.data_len)
            }
            _ => {
                let encoding = if format == InputFormat::F32 {
                    Encoding::RawF32
                } else {
                    Encoding::RawI16
                };
                let Some(fs) = opts.sample_rate_hz else {
                    return Err(ReplayInputError::MissingSampleRate {
                        path: path.to_path_buf(),
                        format,
                    });
                };
                if file_len % encoding.width() as u64 != 0 {
                    return Err(ReplayInputError::RawSize {
                        path: path.to_path_buf(),
                        size_bytes: file_len,
                        width_bytes: encoding.width(),
                        format,
                    });
                }
                (encoding, 1, fs, file_len)
            }
        };
        let width = encoding.width();
        let frame_bytes = width * channels;
        let frames_total = data_len / frame_bytes as u64;
        let layout = match opts.snapshot {
            None => {
                if opts.block_samples == 0 {
                    return Err(invalid("block_samples must be at least 1".to_string()));
                }
                Layout::Continuous {
                    block_samples: opts.block_samples,
                }
            }
            Some(snap) => {
                if snap.samples == 0 {
                    return Err(invalid("snapshot samples must be at least 1".to_string()));
                }
                let duration_secs = snap.samples as f64 / sample_rate_hz;
                if !(snap.period_secs.is_finite() && snap.period_secs >= duration_secs) {
                    return Err(invalid(format!(
                        "snapshot period {} s must be at least the snapshot's duration, \
                         {} samples at {} Hz = {} s, or the snapshots would overlap",
                        snap.period_secs, snap.samples, sample_rate_hz, duration_secs
                    )));
                }
                let trailing = frames_total % snap.samples as u64;
                if trailing != 0 {
                    return Err(ReplayInputError::PartialSnapshot {
                        path: path.to_path_buf(),
                        trailing_bytes: trailing * frame_bytes as u64,
                        trailing_samples: trailing,
                        whole: frames_total / snap.samples as u64,
                        snapshot_samples: snap.samples,
                    });
                }
                Layout::Snapshot {
                    samples: snap.samples,
                    period_us: snap.period_secs * 1e6,
                }
            }
        };
        Ok(WaveReader {
            reader,
            encoding,
            frame_bytes,
            channel_offset: opts.wav_channel.min(channels - 1) * width,
            frames_total,
            frames_done: 0,
            sample_rate_hz,
            scale: opts.scale,
            offset: opts.offset,
            start_us: opts.start_us,
            layout,
            buf: Vec::new(),
            failed: false,
        })
    }

    /// µs from the start of a run of samples to its sample `i`.
    pub(super) fn sample_offset_us(&self, i: u64) -> TimestampUs {
        (i as f64 * 1e6 / self.sample_rate_hz).round() as TimestampUs
    }

    pub(super) fn snapshot_start_us(&self, s: u64, period_us: f64) -> TimestampUs {
        self.start_us
            .saturating_add((s as f64 * period_us).round() as TimestampUs)
    }

    /// The `start_us` for a file that continues this one.
    pub(super) fn end_us(&self) -> TimestampUs {
        match self.layout {
            Layout::Continuous { .. } => self
                .start_us
                .saturating_add(self.sample_offset_us(self.frames_total)),
            Layout::Snapshot { samples, period_us } => {
                self.snapshot_start_us(self.frames_total / samples as u64, period_us)
            }
        }
    }

    pub(super) fn next_block(
        &mut self,
        path: &Path,
    ) -> Option<Result<ReplayItem, ReplayInputError>> {
        if self.failed || self.frames_done >= self.frames_total {
            return None;
        }
        let remaining = self.frames_total - self.frames_done;
        let (n, ts_us) = match self.layout {
            Layout::Continuous { block_samples } => {
                let n = remaining.min(block_samples as u64);
                let last = self.frames_done + n - 1;
                (n, self.start_us.saturating_add(self.sample_offset_us(last)))
            }
            Layout::Snapshot { samples, period_us } => {
                let n = samples as u64;
                let s = self.frames_done / n;
                let start = self.snapshot_start_us(s, period_us);
                (n, start.saturating_add(self.sample_offset_us(n - 1)))
            }
        };
        // `n` fits in usize: it is at most block_samples or snapshot samples.
        let n = n as usize;
        self.buf.resize(n * self.frame_bytes, 0);
        if let Err(source) = self.reader.read_exact(&mut self.buf) {
            self.failed = true;
            return Some(Err(ReplayInputError::Io {
                path: path.to_path_buf(),
                source,
            }));
        }
        let width = self.encoding.width();
        let samples = self
            .buf
            .chunks_exact(self.frame_bytes)
            .map(|frame| {
                let b = &frame[self.channel_offset..self.channel_offset + width];
                (self.encoding.decode(b) * self.scale + self.offset) as f32
            })
            .collect();
        self.frames_done += n as u64;
        Some(Ok(ReplayItem::Block {
            ts_us,
            sample_rate_hz: self.sample_rate_hz,
            samples,
        }))
    }
}

/// What the WAV header says about the samples.
#[derive(Debug)]
pub(super) struct WavInfo {
    pub(super) encoding: Encoding,
    pub(super) channels: u16,
    pub(super) sample_rate_hz: u32,
    /// Bytes of whole frames in the `data` chunk.
    pub(super) data_len: u64,
}

/// `{0000xxxx-0000-0010-8000-00aa00389b71}` after the format code: the KSDATAFORMAT
/// GUIDs of WAVE_FORMAT_EXTENSIBLE's subformats.
pub(super) const KSDATAFORMAT_SUFFIX: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];

pub(super) const WAV_SUPPORTED: &str = "supported: PCM (format 1) 8/16/24/32-bit, IEEE float \
    (format 3) 32/64-bit, and WAVE_FORMAT_EXTENSIBLE (0xFFFE) with those subformats";

/// Reads the RIFF header and chunks up to `data`, leaving `reader` at the first sample.
pub(super) fn read_wav_header(
    path: &Path,
    reader: &mut BufReader<File>,
    file_len: u64,
) -> Result<WavInfo, ReplayInputError> {
    let bad = |offset: u64, message: String| ReplayInputError::Wav {
        path: path.to_path_buf(),
        offset,
        message,
    };
    let io_err = |source| ReplayInputError::Io {
        path: path.to_path_buf(),
        source,
    };
    if file_len < 12 {
        return Err(bad(
            0,
            format!("file is {file_len} bytes, too short for the 12-byte RIFF/WAVE header"),
        ));
    }
    let mut head = [0u8; 12];
    reader.read_exact(&mut head).map_err(io_err)?;
    if &head[0..4] != b"RIFF" {
        return Err(bad(
            0,
            format!(
                "expected `RIFF`, found {:?}; only little-endian RIFF WAV files are read \
                 (not RIFX or RF64)",
                String::from_utf8_lossy(&head[0..4])
            ),
        ));
    }
    if &head[8..12] != b"WAVE" {
        return Err(bad(
            8,
            format!(
                "expected `WAVE`, found {:?}: a RIFF file but not a WAV file",
                String::from_utf8_lossy(&head[8..12])
            ),
        ));
    }
    let mut pos: u64 = 12;
    let mut fmt: Option<(Encoding, u16, u32)> = None;
    loop {
        if pos + 8 > file_len {
            let what = if fmt.is_none() {
                "no `fmt ` chunk"
            } else {
                "no `data` chunk"
            };
            return Err(bad(
                pos,
                format!("{what} before the end of the file; a WAV file needs `fmt ` then `data`"),
            ));
        }
        let mut ch = [0u8; 8];
        reader.read_exact(&mut ch).map_err(io_err)?;
        let id = [ch[0], ch[1], ch[2], ch[3]];
        let size = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
        let body = pos + 8;
        match &id {
            b"fmt " => {
                if !(16..=1024).contains(&size) {
                    return Err(bad(
                        pos + 4,
                        format!("`fmt ` chunk of {size} bytes; expected 16 to 1024"),
                    ));
                }
                if body + u64::from(size) > file_len {
                    return Err(bad(
                        pos + 4,
                        format!("`fmt ` chunk of {size} bytes runs past the end of the file"),
                    ));
                }
                let mut b = vec![0u8; size as usize];
                reader.read_exact(&mut b).map_err(io_err)?;
                fmt = Some(parse_fmt(&b, body).map_err(|(at, m)| bad(at, m))?);
            }
            b"data" => {
                let Some((encoding, channels, sample_rate_hz)) = fmt else {
                    return Err(bad(
                        pos,
                        "`data` chunk before the `fmt ` chunk; a WAV file must describe \
                         its samples first"
                            .to_string(),
                    ));
                };
                let left = file_len - body;
                let size = u64::from(size);
                // Streaming writers leave 0xFFFFFFFF: the data runs to the end of the file.
                let data_len = if size == u64::from(u32::MAX) && size > left {
                    left
                } else if size > left {
                    return Err(bad(
                        pos + 4,
                        format!(
                            "`data` chunk declares {size} bytes but only {left} follow; \
                             the file is truncated"
                        ),
                    ));
                } else {
                    size
                };
                let frame = (encoding.width() * usize::from(channels)) as u64;
                if data_len % frame != 0 {
                    return Err(bad(
                        pos + 4,
                        format!(
                            "`data` chunk of {data_len} bytes is not a whole number of \
                             {frame}-byte frames ({channels} channel(s) × {} bytes)",
                            encoding.width()
                        ),
                    ));
                }
                return Ok(WavInfo {
                    encoding,
                    channels,
                    sample_rate_hz,
                    data_len,
                });
            }
            _ => {
                // Unknown chunk (LIST, fact, cue …): skip it and its pad byte.
                let skip = u64::from(size) + u64::from(size & 1);
                reader.seek(SeekFrom::Start(body + skip)).map_err(io_err)?;
                pos = body + skip;
                continue;
            }
        }
        pos = body + u64::from(size) + u64::from(size & 1);
        if size & 1 == 1 {
            reader.seek(SeekFrom::Start(pos)).map_err(io_err)?;
        }
    }
}

/// Parses a `fmt ` chunk body that starts at byte `at` of the file. Errors carry the
/// offset of the offending field.
pub(super) fn parse_fmt(b: &[u8], at: u64) -> Result<(Encoding, u16, u32), (u64, String)> {
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut tag = u16_at(0);
    let channels = u16_at(2);
    let sample_rate_hz = u32_at(4);
    let block_align = u16_at(12);
    let bits = u16_at(14);
    if tag == 0xFFFE {
        if b.len() < 40 {
            return Err((
                at,
                format!(
                    "WAVE_FORMAT_EXTENSIBLE `fmt ` chunk of {} bytes; expected at least 40",
                    b.len()
                ),
            ));
        }
        if b[26..40] != KSDATAFORMAT_SUFFIX {
            return Err((
                at + 24,
                format!("unknown WAVE_FORMAT_EXTENSIBLE subformat GUID; {WAV_SUPPORTED}"),
            ));
        }
        tag = u16_at(24);
    }
    if channels == 0 {
        return Err((at + 2, "0 channels; expected 1 or more".to_string()));
    }
    if sample_rate_hz == 0 {
        return Err((
            at + 4,
            "sample rate 0 Hz; expected 1 Hz or more".to_string(),
        ));
    }
    let encoding = match (tag, bits) {
        (1, 8) => Encoding::Pcm8,
        (1, 16) => Encoding::Pcm16,
        (1, 24) => Encoding::Pcm24,
        (1, 32) => Encoding::Pcm32,
        (3, 32) => Encoding::Float32,
        (3, 64) => Encoding::Float64,
        _ => {
            return Err((
                at,
                format!(
                    "unsupported sample format: format {tag:#06x}, {bits} bits; {WAV_SUPPORTED}"
                ),
            ))
        }
    };
    let expected = encoding.width() * usize::from(channels);
    if usize::from(block_align) != expected {
        return Err((
            at + 12,
            format!(
                "block align {block_align} bytes; expected {expected} \
                 ({channels} channel(s) × {bits} bits)"
            ),
        ));
    }
    Ok((encoding, channels, sample_rate_hz))
}
