//! Tests of reading recordings: raw and WAV waveforms, option and header errors.

use super::wave::KSDATAFORMAT_SUFFIX;
use super::*;
use std::io::Write;

mod text;

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
