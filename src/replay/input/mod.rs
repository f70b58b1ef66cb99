//! Recording files for `edgegw replay`: turns a file into a stream of timestamped
//! [`ReplayItem`]s, in file order.
//!
//! Owns: the file formats (raw little-endian `f32`/`i16`, WAV, CSV, JSONL), the
//! timestamp formats accepted in them ([`parse_timestamp`]), the placement of waveform
//! samples in time (continuous or snapshot recordings, [`Recording::next_start_us`] to
//! continue seamlessly into the next file) and [`resample_mean`] for scalar series.
//!
//! Must not: know anything about the pipeline (no windows, sensors, profiles or
//! outbox), sleep or pace the output (replay runs at full speed), reorder or drop items
//! (a timestamp going backwards is passed on and only counted,
//! [`Recording::backwards`]), or hold more than one copy of a file: waveforms are read
//! one block at a time, text files one line at a time.
//!
//! Waveform values: a raw `i16` file keeps its integer counts, a WAV file's integer PCM
//! is normalised to -1..1 as audio tools do (16-bit ÷ 32768, 24-bit ÷ 2²³, 32-bit ÷ 2³¹,
//! 8-bit unsigned (x − 128) ÷ 128); float samples are taken as they are. Then every
//! waveform sample becomes `value × scale + offset`. CSV and JSONL values are not
//! scaled, and are taken as written (`NaN` included): judging readings is the
//! pipeline's job, and a replay must show it what the recording holds.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::record::TimestampUs;

/// The timestamp forms accepted in CSV and JSONL, for error messages.
const TIME_FORMS: &str = "an RFC 3339 time (2013-12-02T21:15:00Z), \
    `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC (2013-12-02 21:15:00) \
    or seconds since the Unix epoch (1386018900.5)";

#[derive(Debug, thiserror::Error)]
pub enum ReplayInputError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path}: cannot tell the recording format from the file name; use a .f32, .i16, \
         .wav, .csv, .jsonl or .ndjson file or give the format (f32, i16, wav, csv, jsonl)"
    )]
    UnknownFormat { path: PathBuf },
    #[error("{path}: invalid replay option: {message}")]
    InvalidOption { path: PathBuf, message: String },
    #[error("{path}: a raw {format} recording has no header, so it needs a sample rate in Hz")]
    MissingSampleRate { path: PathBuf, format: InputFormat },
    #[error(
        "{path}: the WAV header says {wav_hz} Hz but {given_hz} Hz was given; \
         leave the sample rate out or give {wav_hz}"
    )]
    SampleRateMismatch {
        path: PathBuf,
        wav_hz: u32,
        given_hz: f64,
    },
    #[error(
        "{path}: size {size_bytes} bytes is not a multiple of the {width_bytes}-byte \
         {format} sample; the file is truncated or not raw {format}"
    )]
    RawSize {
        path: PathBuf,
        size_bytes: u64,
        width_bytes: usize,
        format: InputFormat,
    },
    #[error(
        "{path}: trailing partial snapshot of {trailing_bytes} bytes ({trailing_samples} \
         samples) after {whole} whole snapshots of {snapshot_samples} samples; a snapshot \
         recording must hold whole snapshots"
    )]
    PartialSnapshot {
        path: PathBuf,
        trailing_bytes: u64,
        trailing_samples: u64,
        whole: u64,
        snapshot_samples: usize,
    },
    #[error("{path}: byte {offset}: {message}")]
    Wav {
        path: PathBuf,
        offset: u64,
        message: String,
    },
    /// A CSV or JSONL line with a bad field; the other lines are still readable.
    #[error("{path}:{line}: field `{field}`: {message}")]
    BadField {
        path: PathBuf,
        line: u64,
        field: &'static str,
        message: String,
    },
    /// A CSV or JSONL line that is malformed as a whole (field count, JSON syntax).
    #[error("{path}:{line}: {message}")]
    BadLine {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error(
        "resample_mean takes scalar items only, got a waveform block stamped {ts_us} µs; \
         resample CSV or JSONL scalar recordings"
    )]
    ResampleBlock { ts_us: TimestampUs },
    #[error("resample period {period_secs} s is invalid: it must be 1 s or more (and fit in µs)")]
    ResamplePeriod { period_secs: u64 },
}

/// The file formats a recording can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Raw little-endian IEEE `f32` samples, one channel, no header.
    F32,
    /// Raw little-endian `i16` samples (integer counts), one channel, no header.
    I16,
    /// RIFF/WAVE: integer PCM or IEEE float, any channel count.
    Wav,
    /// `timestamp,value[,channel]` lines.
    Csv,
    /// One JSON object per line: a scalar or a waveform block.
    Jsonl,
}

impl InputFormat {
    /// From the file extension (case-insensitive): `.f32 .i16 .wav .csv .jsonl .ndjson`.
    pub fn from_path(path: &Path) -> Option<InputFormat> {
        InputFormat::parse(path.extension()?.to_str()?)
    }

    /// From a name as given on the command line: `f32 i16 wav csv jsonl ndjson`.
    pub fn parse(s: &str) -> Option<InputFormat> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Some(InputFormat::F32),
            "i16" => Some(InputFormat::I16),
            "wav" => Some(InputFormat::Wav),
            "csv" => Some(InputFormat::Csv),
            "jsonl" | "ndjson" => Some(InputFormat::Jsonl),
            _ => None,
        }
    }

    /// Whether the file holds waveform samples placed by the options (not timestamped).
    pub fn is_waveform(self) -> bool {
        matches!(self, InputFormat::F32 | InputFormat::I16 | InputFormat::Wav)
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputFormat::F32 => "f32",
            InputFormat::I16 => "i16",
            InputFormat::Wav => "wav",
            InputFormat::Csv => "csv",
            InputFormat::Jsonl => "jsonl",
        })
    }
}

/// How to read a recording. Only `format` matters for CSV and JSONL, which carry
/// their own timestamps; the rest places and scales waveform samples.
#[derive(Debug, Clone)]
pub struct InputOptions {
    /// `None`: from the file extension.
    pub format: Option<InputFormat>,
    /// Required for raw `f32`/`i16`, which have no header. A WAV file has its own; if
    /// one is given as well it must agree, so a wrong assumption is caught.
    pub sample_rate_hz: Option<f64>,
    /// Waveform sample = value × scale + offset (raw `i16` counts as they are, WAV
    /// integer PCM after normalising to -1..1), e.g. counts to g.
    pub scale: f64,
    pub offset: f64,
    /// Continuous waveforms: samples per emitted block (the last block may be shorter).
    pub block_samples: usize,
    /// The waveform was recorded as snapshots with gaps between them.
    pub snapshot: Option<Snapshot>,
    /// Which WAV channel to replay (0-based).
    pub wav_channel: usize,
    /// Time of the first sample (first snapshot) of a waveform file; raw files and WAV
    /// carry no usable time of their own.
    pub start_us: TimestampUs,
}

impl Default for InputOptions {
    fn default() -> InputOptions {
        InputOptions {
            format: None,
            sample_rate_hz: None,
            scale: 1.0,
            offset: 0.0,
            block_samples: 2048,
            snapshot: None,
            wav_channel: 0,
            start_us: 0,
        }
    }
}

/// A waveform recorded in bursts: `samples` consecutive samples every `period_secs`.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub samples: usize,
    pub period_secs: f64,
}

/// One thing read from a recording.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayItem {
    /// Consecutive waveform samples; `ts_us` is the time of the LAST sample.
    Block {
        ts_us: TimestampUs,
        sample_rate_hz: f64,
        samples: Vec<f32>,
    },
    /// One reading of a slow signal (temperature, a NAB series).
    Scalar {
        ts_us: TimestampUs,
        value: f64,
        channel: Option<String>,
    },
}

impl ReplayItem {
    pub fn ts_us(&self) -> TimestampUs {
        match self {
            ReplayItem::Block { ts_us, .. } | ReplayItem::Scalar { ts_us, .. } => *ts_us,
        }
    }
}

/// An open recording: an iterator over its items in file order.
///
/// After an I/O error the iterator ends. A bad CSV/JSONL line yields its error and
/// reading goes on with the next line, so the caller decides whether to stop.
#[derive(Debug)]
pub struct Recording {
    path: PathBuf,
    format: InputFormat,
    body: Body,
    /// Items whose timestamp is before the previous item's (CSV/JSONL only).
    backwards: u64,
    last_ts_us: Option<TimestampUs>,
    next_start_us: Option<TimestampUs>,
}

#[derive(Debug)]
enum Body {
    Wave(WaveReader),
    Text(TextReader),
}

impl Recording {
    pub fn open(path: &Path, opts: &InputOptions) -> Result<Recording, ReplayInputError> {
        let format = match opts.format.or_else(|| InputFormat::from_path(path)) {
            Some(f) => f,
            None => {
                return Err(ReplayInputError::UnknownFormat {
                    path: path.to_path_buf(),
                })
            }
        };
        let io_err = |source| ReplayInputError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let body = match format {
            InputFormat::F32 | InputFormat::I16 | InputFormat::Wav => {
                Body::Wave(WaveReader::open(path, format, file, opts)?)
            }
            InputFormat::Csv | InputFormat::Jsonl => Body::Text(TextReader {
                reader: BufReader::new(file),
                json: format == InputFormat::Jsonl,
                line_no: 0,
                seen_data: false,
                buf: Vec::new(),
                done: false,
            }),
        };
        let next_start_us = match &body {
            Body::Wave(w) => Some(w.end_us()),
            Body::Text(_) => None,
        };
        Ok(Recording {
            path: path.to_path_buf(),
            format,
            body,
            backwards: 0,
            last_ts_us: None,
            next_start_us,
        })
    }

    /// For waveforms: the time one sample period after the last sample (continuous) or
    /// of the snapshot that would follow the last one (snapshot mode), so the next file
    /// can continue seamlessly with it as its `start_us`. `None` for scalar files.
    /// Known from the file size at open, before any item is read.
    pub fn next_start_us(&self) -> Option<TimestampUs> {
        self.next_start_us
    }

    /// How many CSV/JSONL items so far were stamped before the item preceding them.
    pub fn backwards(&self) -> u64 {
        self.backwards
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> InputFormat {
        self.format
    }

    /// The sample rate of a waveform file (from the WAV header or the options).
    pub fn sample_rate_hz(&self) -> Option<f64> {
        match &self.body {
            Body::Wave(w) => Some(w.sample_rate_hz),
            Body::Text(_) => None,
        }
    }
}

impl Iterator for Recording {
    type Item = Result<ReplayItem, ReplayInputError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.body {
            Body::Wave(w) => w.next_block(&self.path),
            Body::Text(t) => {
                let item = t.next_item(&self.path)?;
                if let Ok(it) = &item {
                    let ts = it.ts_us();
                    if self.last_ts_us.is_some_and(|last| ts < last) {
                        self.backwards += 1;
                    }
                    self.last_ts_us = Some(ts);
                }
                Some(item)
            }
        }
    }
}

mod resample;
mod text;
mod wave;

pub use resample::{resample_mean, ResampleMean};
pub use text::parse_timestamp;
use text::TextReader;
use wave::WaveReader;

#[cfg(test)]
mod tests;
