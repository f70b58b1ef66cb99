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
mod tests {
    use super::wave::KSDATAFORMAT_SUFFIX;
    use super::*;
    use std::io::Write;
    use time::macros::datetime;

    /// 2014-01-01T00:00:00Z, a round start for waveform files.
    const T0: TimestampUs = 1_388_534_400_000_000;

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        let mut f = File::create(&path).expect("create test file");
        f.write_all(bytes).expect("write test file");
        path
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn all(path: &Path, opts: &InputOptions) -> Vec<ReplayItem> {
        Recording::open(path, opts)
            .expect("open")
            .collect::<Result<Vec<_>, _>>()
            .expect("read")
    }

    fn blocks(items: &[ReplayItem]) -> Vec<(TimestampUs, Vec<f32>)> {
        items
            .iter()
            .map(|it| match it {
                ReplayItem::Block { ts_us, samples, .. } => (*ts_us, samples.clone()),
                other => panic!("expected a block, got {other:?}"),
            })
            .collect()
    }

    fn scalars(items: &[ReplayItem]) -> Vec<(TimestampUs, f64, Option<String>)> {
        items
            .iter()
            .map(|it| match it {
                ReplayItem::Scalar {
                    ts_us,
                    value,
                    channel,
                } => (*ts_us, *value, channel.clone()),
                other => panic!("expected a scalar, got {other:?}"),
            })
            .collect()
    }

    fn open_err(path: &Path, opts: &InputOptions) -> String {
        match Recording::open(path, opts) {
            Ok(r) => panic!("{} opened: {r:?}", path.display()),
            Err(e) => e.to_string(),
        }
    }

    fn raw_opts(fs: f64) -> InputOptions {
        InputOptions {
            sample_rate_hz: Some(fs),
            start_us: T0,
            ..InputOptions::default()
        }
    }

    fn us(t: time::OffsetDateTime) -> TimestampUs {
        (t.unix_timestamp_nanos() / 1000) as TimestampUs
    }

    #[test]
    fn format_from_extension_and_name() {
        let f = |p: &str| InputFormat::from_path(Path::new(p));
        assert_eq!(f("a/b.f32"), Some(InputFormat::F32));
        assert_eq!(f("x.I16"), Some(InputFormat::I16));
        assert_eq!(f("x.wav"), Some(InputFormat::Wav));
        assert_eq!(f("x.csv"), Some(InputFormat::Csv));
        assert_eq!(f("x.jsonl"), Some(InputFormat::Jsonl));
        assert_eq!(f("x.ndjson"), Some(InputFormat::Jsonl));
        assert_eq!(f("x.txt"), None);
        assert_eq!(f("noext"), None);
        assert_eq!(InputFormat::parse("WAV"), Some(InputFormat::Wav));
        assert_eq!(InputFormat::parse("ndjson"), Some(InputFormat::Jsonl));
        assert_eq!(InputFormat::parse("mp3"), None);
        for fmt in [
            InputFormat::F32,
            InputFormat::I16,
            InputFormat::Wav,
            InputFormat::Csv,
            InputFormat::Jsonl,
        ] {
            assert_eq!(InputFormat::parse(&fmt.to_string()), Some(fmt));
        }
    }

    #[test]
    fn unknown_format_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(&dir, "rec.bin", b"");
        let e = open_err(&p, &InputOptions::default());
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains(".wav"), "{e}");
    }

    #[test]
    fn raw_f32_continuous_blocks_scaled_and_stamped_at_last_sample() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(&dir, "a.f32", &f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0]));
        let opts = InputOptions {
            block_samples: 2,
            scale: 2.0,
            offset: 1.0,
            ..raw_opts(1000.0)
        };
        let rec = Recording::open(&p, &opts).expect("open");
        assert_eq!(rec.next_start_us(), Some(T0 + 5_000));
        assert_eq!(rec.sample_rate_hz(), Some(1000.0));
        let items: Vec<_> = rec.collect::<Result<_, _>>().expect("read");
        assert_eq!(
            blocks(&items),
            vec![
                (T0 + 1_000, vec![1.0, 3.0]),
                (T0 + 3_000, vec![5.0, 7.0]),
                (T0 + 4_000, vec![9.0]),
            ]
        );
        match &items[0] {
            ReplayItem::Block { sample_rate_hz, .. } => assert_eq!(*sample_rate_hz, 1000.0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn raw_i16_keeps_integer_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes: Vec<u8> = [-32768i16, -1, 0, 1000]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let p = write(&dir, "a.i16", &bytes);
        let items = all(&p, &raw_opts(4.0));
        assert_eq!(
            blocks(&items),
            vec![(T0 + 750_000, vec![-32768.0, -1.0, 0.0, 1000.0])]
        );
        let scaled = InputOptions {
            scale: 0.001,
            ..raw_opts(4.0)
        };
        assert_eq!(blocks(&all(&p, &scaled))[0].1[3], 1.0);
    }

    #[test]
    fn sample_times_round_to_the_microsecond() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(&dir, "a.f32", &f32_bytes(&[0.0; 3]));
        let opts = InputOptions {
            block_samples: 1,
            ..raw_opts(3.0)
        };
        let ts: Vec<_> = blocks(&all(&p, &opts)).into_iter().map(|b| b.0).collect();
        assert_eq!(ts, vec![T0, T0 + 333_333, T0 + 666_667]);
        let rec = Recording::open(&p, &opts).expect("open");
        assert_eq!(rec.next_start_us(), Some(T0 + 1_000_000));
    }

    #[test]
    fn continuation_across_files_is_seamless() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write(&dir, "a.f32", &f32_bytes(&[0.0; 5]));
        let b = write(&dir, "b.f32", &f32_bytes(&[0.0; 5]));
        let opts = InputOptions {
            block_samples: 1,
            ..raw_opts(3.0)
        };
        let first = Recording::open(&a, &opts).expect("open a");
        let next = first.next_start_us().expect("waveform has a next start");
        let mut ts: Vec<_> = first.map(|it| it.expect("read a").ts_us()).collect();
        let opts_b = InputOptions {
            start_us: next,
            ..opts.clone()
        };
        ts.extend(all(&b, &opts_b).iter().map(ReplayItem::ts_us));
        // Ten samples at 3 Hz in a row, as if it were one file (up to µs rounding).
        let expected: Vec<_> = (0..10)
            .map(|i| T0 + (i as f64 * 1e6 / 3.0).round() as TimestampUs)
            .collect();
        for (got, want) in ts.iter().zip(&expected) {
            assert!((got - want).abs() <= 1, "{ts:?} vs {expected:?}");
        }
        assert_eq!(ts.len(), 10);
    }

    #[test]
    fn snapshots_are_one_block_each_at_their_period() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let p = write(&dir, "s.f32", &f32_bytes(&v));
        let opts = InputOptions {
            block_samples: 3, // ignored in snapshot mode
            snapshot: Some(Snapshot {
                samples: 4,
                period_secs: 10.0,
            }),
            ..raw_opts(1000.0)
        };
        let rec = Recording::open(&p, &opts).expect("open");
        assert_eq!(rec.next_start_us(), Some(T0 + 30_000_000));
        let items: Vec<_> = rec.collect::<Result<_, _>>().expect("read");
        assert_eq!(
            blocks(&items),
            vec![
                (T0 + 3_000, vec![0.0, 1.0, 2.0, 3.0]),
                (T0 + 10_003_000, vec![4.0, 5.0, 6.0, 7.0]),
                (T0 + 20_003_000, vec![8.0, 9.0, 10.0, 11.0]),
            ]
        );
    }

    #[test]
    fn partial_snapshot_is_an_error_naming_the_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(&dir, "s.f32", &f32_bytes(&[0.0; 10]));
        let opts = InputOptions {
            snapshot: Some(Snapshot {
                samples: 4,
                period_secs: 10.0,
            }),
            ..raw_opts(1000.0)
        };
        let e = open_err(&p, &opts);
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains("8 bytes (2 samples)"), "{e}");
        assert!(e.contains("2 whole snapshots of 4 samples"), "{e}");
    }

    #[test]
    fn bad_options_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(&dir, "s.f32", &f32_bytes(&[0.0; 8]));
        let overlapping = InputOptions {
            snapshot: Some(Snapshot {
                samples: 4,
                period_secs: 0.001,
            }),
            ..raw_opts(1000.0)
        };
        let e = open_err(&p, &overlapping);
        assert!(e.contains("overlap") && e.contains("s.f32"), "{e}");
        let no_block = InputOptions {
            block_samples: 0,
            ..raw_opts(1000.0)
        };
        assert!(open_err(&p, &no_block).contains("block_samples"));
        let bad_rate = raw_opts(0.0);
        assert!(open_err(&p, &bad_rate).contains("positive"));
    }

    #[test]
    fn raw_size_and_missing_rate_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(&dir, "odd.f32", &[0u8; 10]);
        let e = open_err(&p, &raw_opts(1000.0));
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains("size 10 bytes"), "{e}");
        assert!(e.contains("4-byte f32"), "{e}");
        let q = write(&dir, "odd.i16", &[0u8; 3]);
        assert!(open_err(&q, &raw_opts(1000.0))
            .contains("size 3 bytes is not a multiple of the 2-byte i16"));
        let e = open_err(&p, &InputOptions::default());
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains("needs a sample rate"), "{e}");
    }

    /// A WAV file: `fmt ` (plain, or extensible when `extensible`), any extra chunks,
    /// then `data`.
    fn wav(
        tag: u16,
        channels: u16,
        rate: u32,
        bits: u16,
        extensible: bool,
        extra: &[(&[u8; 4], &[u8])],
        data: &[u8],
    ) -> Vec<u8> {
        let block_align = channels * bits / 8;
        let mut fmt = Vec::new();
        fmt.extend((if extensible { 0xFFFEu16 } else { tag }).to_le_bytes());
        fmt.extend(channels.to_le_bytes());
        fmt.extend(rate.to_le_bytes());
        fmt.extend((rate * u32::from(block_align)).to_le_bytes());
        fmt.extend(block_align.to_le_bytes());
        fmt.extend(bits.to_le_bytes());
        if extensible {
            fmt.extend(22u16.to_le_bytes());
            fmt.extend(bits.to_le_bytes());
            fmt.extend(0u32.to_le_bytes());
            fmt.extend(tag.to_le_bytes());
            fmt.extend(KSDATAFORMAT_SUFFIX);
        }
        let mut chunks: Vec<(&[u8; 4], &[u8])> = vec![(b"fmt ", &fmt)];
        chunks.extend_from_slice(extra);
        chunks.push((b"data", data));
        let mut body = b"WAVE".to_vec();
        for (id, c) in chunks {
            body.extend(id);
            body.extend((c.len() as u32).to_le_bytes());
            body.extend(c);
            if c.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut out = b"RIFF".to_vec();
        out.extend((body.len() as u32).to_le_bytes());
        out.extend(body);
        out
    }

    fn i16s(v: &[i16]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn wav_pcm16_stereo_picks_the_channel_skips_odd_chunks_and_normalises() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Frames (left, right): the right channel is the one replayed.
        let data = i16s(&[1, -32768, 2, 16384, 3, 0]);
        let bytes = wav(
            1,
            2,
            8000,
            16,
            false,
            &[(b"LIST", b"odd"), (b"junk", b"")],
            &data,
        );
        let p = write(&dir, "a.wav", &bytes);
        let opts = InputOptions {
            wav_channel: 1,
            start_us: T0,
            ..InputOptions::default()
        };
        let rec = Recording::open(&p, &opts).expect("open");
        assert_eq!(rec.sample_rate_hz(), Some(8000.0));
        assert_eq!(rec.next_start_us(), Some(T0 + 375));
        let items: Vec<_> = rec.collect::<Result<_, _>>().expect("read");
        assert_eq!(blocks(&items), vec![(T0 + 250, vec![-1.0, 0.5, 0.0])]);
        // The left channel, scaled.
        let left = InputOptions {
            scale: 32768.0,
            offset: 10.0,
            start_us: T0,
            ..InputOptions::default()
        };
        assert_eq!(blocks(&all(&p, &left))[0].1, vec![11.0, 12.0, 13.0]);
    }

    #[test]
    fn wav_24_and_32_bit_pcm_and_float() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 24-bit: -2^23 (min), -1, 2^22.
        let d24 = [0x00, 0x00, 0x80, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x40];
        for (name, ext) in [("p24.wav", false), ("p24x.wav", true)] {
            let p = write(&dir, name, &wav(1, 1, 100, 24, ext, &[], &d24));
            let v = &blocks(&all(&p, &InputOptions::default()))[0].1;
            assert_eq!(v[0], -1.0);
            assert_eq!(v[1], (-1.0 / 8_388_608.0) as f32);
            assert_eq!(v[2], 0.5);
        }
        let d32: Vec<u8> = [i32::MIN, 1 << 30]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let p = write(&dir, "p32.wav", &wav(1, 1, 100, 32, false, &[], &d32));
        assert_eq!(
            blocks(&all(&p, &InputOptions::default()))[0].1,
            vec![-1.0, 0.5]
        );
        let df = f32_bytes(&[0.25, -3.5]);
        for (name, ext) in [("f.wav", false), ("fx.wav", true)] {
            let p = write(&dir, name, &wav(3, 1, 100, 32, ext, &[], &df));
            assert_eq!(
                blocks(&all(&p, &InputOptions::default()))[0].1,
                vec![0.25, -3.5]
            );
        }
    }

    #[test]
    fn wav_rate_mismatch_and_channel_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            &dir,
            "a.wav",
            &wav(1, 2, 8000, 16, false, &[], &i16s(&[0, 0])),
        );
        let same = InputOptions {
            sample_rate_hz: Some(8000.0),
            ..InputOptions::default()
        };
        assert_eq!(all(&p, &same).len(), 1);
        let other = InputOptions {
            sample_rate_hz: Some(12000.0),
            ..InputOptions::default()
        };
        let e = open_err(&p, &other);
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains("8000 Hz but 12000 Hz"), "{e}");
        let ch = InputOptions {
            wav_channel: 2,
            ..InputOptions::default()
        };
        let e = open_err(&p, &ch);
        assert!(e.contains("channel 2") && e.contains("2 channel(s)"), "{e}");
    }

    #[test]
    fn wav_header_errors_name_the_byte_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = InputOptions::default();
        let p = write(&dir, "short.wav", b"RIFF");
        let e = open_err(&p, &opts);
        assert!(
            e.contains("short.wav: byte 0:") && e.contains("too short"),
            "{e}"
        );

        let p = write(&dir, "text.wav", b"timestamp,value\n1,2\n");
        let e = open_err(&p, &opts);
        assert!(e.contains("text.wav: byte 0: expected `RIFF`"), "{e}");

        // ADPCM (format 2): the format tag is the first field of the `fmt ` body, byte 20.
        let p = write(&dir, "adpcm.wav", &wav(2, 1, 8000, 16, false, &[], &[0, 0]));
        let e = open_err(&p, &opts);
        assert!(
            e.contains("adpcm.wav: byte 20: unsupported sample format: format 0x0002"),
            "{e}"
        );
        assert!(e.contains("supported: PCM"), "{e}");

        let mut bytes = wav(1, 1, 8000, 16, false, &[], &i16s(&[1, 2, 3]));
        bytes.truncate(bytes.len() - 2);
        let p = write(&dir, "cut.wav", &bytes);
        let e = open_err(&p, &opts);
        assert!(
            e.contains("cut.wav: byte 40: `data` chunk declares 6 bytes but only 4 follow"),
            "{e}"
        );

        let p = write(
            &dir,
            "odd.wav",
            &wav(1, 1, 8000, 16, false, &[], &[0, 0, 0]),
        );
        let e = open_err(&p, &opts);
        assert!(e.contains("not a whole number of 2-byte frames"), "{e}");

        let mut nodata = wav(1, 1, 8000, 16, false, &[], &[]);
        nodata.truncate(nodata.len() - 8);
        let p = write(&dir, "nodata.wav", &nodata);
        let e = open_err(&p, &opts);
        assert!(e.contains("byte 36: no `data` chunk"), "{e}");
    }

    #[test]
    fn wav_snapshot_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = i16s(&[0, 16384, 0, -16384]);
        let p = write(&dir, "s.wav", &wav(1, 1, 2, 16, false, &[], &data));
        let opts = InputOptions {
            snapshot: Some(Snapshot {
                samples: 2,
                period_secs: 60.0,
            }),
            start_us: T0,
            ..InputOptions::default()
        };
        let rec = Recording::open(&p, &opts).expect("open");
        assert_eq!(rec.next_start_us(), Some(T0 + 120_000_000));
        let items: Vec<_> = rec.collect::<Result<_, _>>().expect("read");
        assert_eq!(
            blocks(&items),
            vec![
                (T0 + 500_000, vec![0.0, 0.5]),
                (T0 + 60_500_000, vec![0.0, -0.5])
            ]
        );
    }

    #[test]
    fn timestamps_in_every_accepted_form() {
        let nab = us(datetime!(2013-12-02 21:15:00 UTC));
        assert_eq!(parse_timestamp("2013-12-02 21:15:00"), Some(nab));
        assert_eq!(parse_timestamp("2013-12-02T21:15:00"), Some(nab));
        assert_eq!(parse_timestamp("2013-12-02T21:15:00Z"), Some(nab));
        assert_eq!(parse_timestamp("2013-12-02 21:15:00Z"), Some(nab));
        assert_eq!(parse_timestamp("2013-12-02T22:15:00+01:00"), Some(nab));
        assert_eq!(
            parse_timestamp("2013-12-02 21:15:00.25"),
            Some(nab + 250_000)
        );
        assert_eq!(
            parse_timestamp("2013-12-02 21:15:00.123456"),
            Some(nab + 123_456)
        );
        assert_eq!(
            parse_timestamp("2013-12-02T21:15:00.0000015Z"),
            Some(nab + 2)
        );
        assert_eq!(parse_timestamp("1386018900"), Some(nab));
        assert_eq!(parse_timestamp("1386018900.123456"), Some(nab + 123_456));
        assert_eq!(parse_timestamp("1386018900.5"), Some(nab + 500_000));
        assert_eq!(parse_timestamp("1386018900.0000005"), Some(nab + 1));
        assert_eq!(parse_timestamp("1.3860189e9"), Some(nab));
        assert_eq!(parse_timestamp("-1.5"), Some(-1_500_000));
        assert_eq!(parse_timestamp(" 0 "), Some(0));
        for bad in [
            "",
            "timestamp",
            "2013-13-02 21:15:00",
            "12:00",
            "1e400",
            "NaN",
            "1.2.3",
            ".",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn csv_header_detection_channels_blank_lines_and_backwards() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "\u{feff}timestamp,value,channel\r\n\
            2013-12-02 21:15:00,1.5,temp\r\n\
            \r\n\
            2013-12-02T21:20:00Z,\"2\",\r\n\
            1386018900,-3e1,rpm\n";
        let p = write(&dir, "a.csv", text.as_bytes());
        let mut rec = Recording::open(&p, &InputOptions::default()).expect("open");
        assert_eq!(rec.next_start_us(), None);
        let items: Vec<_> = rec.by_ref().collect::<Result<_, _>>().expect("read");
        let t = us(datetime!(2013-12-02 21:15:00 UTC));
        assert_eq!(
            scalars(&items),
            vec![
                (t, 1.5, Some("temp".to_string())),
                (t + 300_000_000, 2.0, None),
                (t, -30.0, Some("rpm".to_string())),
            ]
        );
        assert_eq!(rec.backwards(), 1);

        // Without a header the first line is data.
        let p = write(&dir, "b.csv", b"0,1\n1.5,2\n");
        assert_eq!(
            scalars(&all(&p, &InputOptions::default())),
            vec![(0, 1.0, None), (1_500_000, 2.0, None)]
        );
    }

    #[test]
    fn csv_errors_name_path_line_and_field_and_reading_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "timestamp,value\n\
            2013-12-02 21:15:00,1\n\
            \n\
            yesterday,2\n\
            2013-12-02 21:25:00,abc\n\
            2013-12-02 21:30:00\n\
            2013-12-02 21:35:00,5\n";
        let p = write(&dir, "bad.csv", text.as_bytes());
        let out: Vec<_> = Recording::open(&p, &InputOptions::default())
            .expect("open")
            .collect();
        assert_eq!(out.len(), 5);
        let errs: Vec<String> = out
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
            .collect();
        let path = p.display().to_string();
        assert!(
            errs[0].starts_with(&format!(
                "{path}:4: field `timestamp`: \"yesterday\" is not a time"
            )),
            "{}",
            errs[0]
        );
        assert!(errs[0].contains("RFC 3339"), "{}", errs[0]);
        assert!(
            errs[1].starts_with(&format!("{path}:5: field `value`: \"abc\" is not a number")),
            "{}",
            errs[1]
        );
        assert!(
            errs[2].starts_with(&format!("{path}:6: 1 fields; expected `timestamp,value`")),
            "{}",
            errs[2]
        );
        assert!(matches!(out[4], Ok(ReplayItem::Scalar { value, .. }) if value == 5.0));

        // A broken date in the first row is an error, not a header.
        let p = write(&dir, "first.csv", b"2013-13-02 21:15:00,1\n");
        let e = Recording::open(&p, &InputOptions::default())
            .expect("open")
            .next()
            .expect("an item")
            .expect_err("an error");
        assert!(
            e.to_string().contains("first.csv:1: field `timestamp`"),
            "{e}"
        );
    }

    #[test]
    fn jsonl_scalars_blocks_and_numeric_times() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = r#"{"ts": "2013-12-02T21:15:00Z", "value": 1.5, "channel": "temp"}

{"ts": 1386018900.25, "value": 2}
{"ts": 1386018901, "sample_rate_hz": 4, "samples": [0.5, -1]}
{"ts": "2013-12-02 21:14:00", "value": 3, "channel": null}
"#;
        let p = write(&dir, "a.ndjson", text.as_bytes());
        let mut rec = Recording::open(&p, &InputOptions::default()).expect("open");
        let items: Vec<_> = rec.by_ref().collect::<Result<_, _>>().expect("read");
        let t = us(datetime!(2013-12-02 21:15:00 UTC));
        assert_eq!(
            items,
            vec![
                ReplayItem::Scalar {
                    ts_us: t,
                    value: 1.5,
                    channel: Some("temp".to_string())
                },
                ReplayItem::Scalar {
                    ts_us: t + 250_000,
                    value: 2.0,
                    channel: None
                },
                ReplayItem::Block {
                    ts_us: t + 1_000_000,
                    sample_rate_hz: 4.0,
                    samples: vec![0.5, -1.0]
                },
                ReplayItem::Scalar {
                    ts_us: t - 60_000_000,
                    value: 3.0,
                    channel: None
                },
            ]
        );
        assert_eq!(rec.backwards(), 1);
        assert_eq!(rec.next_start_us(), None);
    }

    #[test]
    fn jsonl_errors_name_path_line_and_what_is_valid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = r#"{"ts": 0, "value": 1}
{"ts": 0, "vale": 1}
{"ts": 0, "value": 1
{"ts": "soon", "value": 1}
{"ts": 0, "samples": [1]}
{"ts": 0, "value": 1, "samples": [1]}
{"ts": 0}
{"ts": 0, "sample_rate_hz": 10, "samples": []}
{"ts": 1, "value": 2}
"#;
        let p = write(&dir, "bad.jsonl", text.as_bytes());
        let out: Vec<_> = Recording::open(&p, &InputOptions::default())
            .expect("open")
            .collect();
        assert_eq!(out.len(), 9);
        assert!(out[0].is_ok() && out[8].is_ok());
        let path = p.display().to_string();
        let err = |i: usize| match &out[i] {
            Err(e) => e.to_string(),
            Ok(it) => panic!("line {}: {it:?}", i + 1),
        };
        let expect = [
            (2, "unknown field `vale`, expected one of `ts`, `value`"),
            (3, "EOF while parsing an object (column 20)"),
            (4, "field `ts`: \"soon\" is not a time"),
            (5, "field `sample_rate_hz`: missing for a block"),
            (6, "has both `value` and `samples`"),
            (7, "field `value`: missing"),
            (8, "field `samples`: empty"),
        ];
        for (line, text) in expect {
            let e = err(line - 1);
            assert!(e.starts_with(&format!("{path}:{line}: ")), "{e}");
            assert!(e.contains(text), "{e}");
        }
    }

    #[test]
    fn invalid_utf8_line_is_reported_and_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(&dir, "u.csv", b"0,1\n\xff,2\n2,3\n");
        let out: Vec<_> = Recording::open(&p, &InputOptions::default())
            .expect("open")
            .collect();
        assert_eq!(out.len(), 3);
        let e = out[1].as_ref().expect_err("bad line");
        assert!(e.to_string().contains("u.csv:2: not valid UTF-8"), "{e}");
    }

    fn scalar(
        ts_us: TimestampUs,
        value: f64,
        channel: Option<&str>,
    ) -> Result<ReplayItem, ReplayInputError> {
        Ok(ReplayItem::Scalar {
            ts_us,
            value,
            channel: channel.map(str::to_string),
        })
    }

    #[test]
    fn resample_mean_five_minute_data_to_hourly() {
        let h = 3_600_000_000;
        let five_min = 300_000_000;
        // 10:00 .. 11:55 every 5 minutes (values i), nothing at 12:xx, one at 13:30.
        let base = us(datetime!(2014-02-04 10:00:00 UTC));
        let mut input: Vec<_> = (0..24)
            .map(|i| scalar(base + i * five_min, i as f64, None))
            .collect();
        input.push(scalar(base + 3 * h + h / 2, 100.0, None));
        let out: Vec<_> = resample_mean(input, 3600)
            .collect::<Result<_, _>>()
            .expect("resample");
        assert_eq!(
            scalars(&out),
            vec![
                (base + h, 5.5, None),       // mean of 0..=11, stamped 11:00
                (base + 2 * h, 17.5, None),  // mean of 12..=23, stamped 12:00
                (base + 4 * h, 100.0, None), // 12:xx is empty: nothing for 13:00
            ]
        );
    }

    #[test]
    fn resample_mean_keeps_channels_apart_and_rejects_blocks() {
        let input = vec![
            scalar(10_000_000, 1.0, Some("a")),
            scalar(20_000_000, 10.0, Some("b")),
            scalar(30_000_000, 3.0, Some("a")),
            scalar(-1, 7.0, None), // before the epoch: the period ending at 0
        ];
        let out: Vec<_> = resample_mean(input, 60)
            .collect::<Result<_, _>>()
            .expect("resample");
        assert_eq!(
            scalars(&out),
            vec![
                (60_000_000, 2.0, Some("a".to_string())),
                (60_000_000, 10.0, Some("b".to_string())),
                (0, 7.0, None),
            ]
        );

        let block = Ok(ReplayItem::Block {
            ts_us: 5,
            sample_rate_hz: 1.0,
            samples: vec![0.0],
        });
        let e = resample_mean(vec![block], 60)
            .next()
            .expect("an item")
            .expect_err("blocks are rejected");
        assert!(e.to_string().contains("scalar items only"), "{e}");

        let mut zero = resample_mean(vec![scalar(0, 1.0, None)], 0);
        let e = zero.next().expect("an item").expect_err("period 0");
        assert!(e.to_string().contains("period 0 s"), "{e}");
        assert!(zero.next().is_none());
    }

    #[test]
    fn nab_machine_temperature_slice() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/nab/machine_temperature_slice.csv");
        let mut rec = Recording::open(&p, &InputOptions::default()).expect("open");
        let items: Vec<_> = rec.by_ref().collect::<Result<_, _>>().expect("read");
        assert_eq!(items.len(), 1500);
        assert_eq!(rec.backwards(), 0);
        let s = scalars(&items);
        assert_eq!(
            s[0],
            (us(datetime!(2014-02-04 16:05:00 UTC)), 96.85485217, None)
        );
        assert_eq!(s[1499].0, us(datetime!(2014-02-09 21:00:00 UTC)));
        assert_eq!(s[1499].1, 91.80069012);
        // Hourly means of the 5-minute series: stamped on the hour, one per hour.
        let hourly: Vec<_> = resample_mean(items.into_iter().map(Ok), 3600)
            .collect::<Result<_, _>>()
            .expect("resample");
        assert_eq!(hourly.len(), 126);
        assert!(hourly.iter().all(|it| it.ts_us() % 3_600_000_000 == 0));
        assert_eq!(hourly[0].ts_us(), us(datetime!(2014-02-04 17:00:00 UTC)));
    }
}
