//! Feature extraction per window, and the whole detection path (Processor fed waveform
//! blocks: windowing, features, tract scoring, episodes, summaries) on one core.
//!
//! Run: `cargo bench --bench features`. Numbers go into docs/PERFORMANCE.md.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use edgegw::inference::{shared, ModelRegistry};
use edgegw::pipeline::features::FeatureExtractor;
use edgegw::pipeline::physical::{accel_unit_to_ms2, EnvelopeResolution, PhysicalParams};
use edgegw::pipeline::settings::TimeSpan;
use edgegw::pipeline::{MemoryStateStore, PipelineSettings, Processor};
use edgegw::record::SensorType;
use edgegw::sources::{ChannelId, Value};
use std::sync::Arc;

fn cwru_holdout() -> Vec<f32> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/cwru/normal_12k_holdout.f32"
    );
    let bytes = std::fs::read(path).expect("testdata/cwru/normal_12k_holdout.f32");
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn features(c: &mut Criterion) {
    let x = cwru_holdout();
    let mut ex = FeatureExtractor::new(2048);
    let mut g = c.benchmark_group("features");
    g.throughput(Throughput::Elements(1));
    g.bench_function("window_2048", |b| {
        let mut offset = 0;
        b.iter(|| {
            offset = (offset + 1024) % (x.len() - 2048);
            black_box(ex.compute(black_box(&x[offset..offset + 2048]), 12_000.0))
        })
    });
    // The same windows through `compute_all`: the canonical features plus the physical
    // ones (bands, velocity, envelope and its spectrum) from the same forward FFT.
    let params = PhysicalParams {
        sample_rate_hz: 12_000.0,
        accel_to_ms2: accel_unit_to_ms2("g"),
        envelope_band_hz: None,
    };
    let mut all = FeatureExtractor::new(2048);
    g.bench_function("window_2048_all", |b| {
        let mut offset = 0;
        b.iter(|| {
            offset = (offset + 1024) % (x.len() - 2048);
            black_box(all.compute_all(black_box(&x[offset..offset + 2048]), &params))
        })
    });
    // The envelope sampled at fewer instants (see `EnvelopeResolution::Decimated`).
    let mut decimated = FeatureExtractor::new(2048);
    decimated.set_envelope_resolution(EnvelopeResolution::Decimated);
    g.bench_function("window_2048_all_decimated", |b| {
        let mut offset = 0;
        b.iter(|| {
            offset = (offset + 1024) % (x.len() - 2048);
            black_box(decimated.compute_all(black_box(&x[offset..offset + 2048]), &params))
        })
    });
    g.finish();
}

/// The whole path for one window: `Processor::process_into` fed 1024-sample blocks of
/// the CWRU holdout at 12 kHz (one window per block with 50 % overlap), scored by
/// `bundle` — the relative default (after a 20-window learning period, as on a
/// commissioned channel) or the absolute `vibration-default`.
fn detection_path(c: &mut Criterion) {
    let x = cwru_holdout();
    let all = ModelRegistry::with_defaults().expect("default bundles");
    let mut g = c.benchmark_group("detection_path");
    g.throughput(Throughput::Elements(1));
    for (name, bundle) in [
        ("block_1024_one_window", "vibration-relative"),
        ("block_1024_one_window_absolute", "vibration-default"),
    ] {
        let b = all
            .bundles()
            .iter()
            .find(|b| b.manifest().name == bundle)
            .expect("shipped bundle")
            .clone();
        let ch = ChannelId::new("pump1", "accel_de", SensorType::Vibration, "g");
        let mut settings = PipelineSettings::default();
        settings.baseline.learn = TimeSpan::from_secs(0.0);
        settings.baseline.samples = 20;
        settings.baseline.min_samples = 20;
        let mut p = Processor::new(
            &settings,
            shared(ModelRegistry::new(vec![b])),
            Box::new(MemoryStateStore::new()),
        );
        let blocks: Vec<Arc<[f32]>> = x.chunks_exact(1024).map(Arc::from).collect();
        let period_us = 1e6 / 12_000.0;
        let mut n: u64 = 0;
        let mut out = Vec::with_capacity(8);
        let mut feed = |p: &mut Processor, out: &mut Vec<_>| {
            let block = blocks[(n as usize) % blocks.len()].clone();
            n += 1;
            let ts = 1_764_028_800_000_000 + ((n * 1024 - 1) as f64 * period_us) as i64;
            let r = ch.reading(
                ts,
                Value::Block {
                    sample_rate_hz: 12_000.0,
                    samples: block,
                },
            );
            out.clear();
            p.process_into(std::slice::from_ref(&r), out);
        };
        // Past the learning period before measuring.
        for _ in 0..25 {
            feed(&mut p, &mut out);
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                feed(&mut p, &mut out);
                black_box(out.len())
            })
        });
        assert!(p.counters().scored_by_model > 0, "{name}: nothing scored");
    }
    g.finish();
}

/// What the status page costs the processor thread when nobody watches it: the
/// same batches through `Processor::process_into` with and without
/// `Board::observe` after it (the daemon's stage calls both), for a waveform block
/// and for one 30-register Modbus poll of scalars. The pairs run side by side; the
/// ratio is the cost (issue #16: "no measurable CPU when nobody watches").
fn status_page_unwatched(c: &mut Criterion) {
    let x = cwru_holdout();
    let mut g = c.benchmark_group("status_page_unwatched");
    g.throughput(Throughput::Elements(1));
    let board = edgegw::ops::board::Board::new();
    assert!(!board.is_watched());
    let mut settings = PipelineSettings::default();
    settings.baseline.learn = TimeSpan::from_secs(0.0);
    settings.baseline.samples = 20;
    settings.baseline.min_samples = 20;
    let processor = || {
        Processor::new(
            &settings,
            shared(ModelRegistry::with_defaults().expect("default bundles")),
            Box::new(MemoryStateStore::new()),
        )
    };

    // A waveform block of 1024 samples at 12 kHz.
    let ch = ChannelId::new("pump1", "accel_de", SensorType::Vibration, "g");
    let blocks: Vec<Arc<[f32]>> = x.chunks_exact(1024).map(Arc::from).collect();
    let block = |n: u64| {
        let ts = 1_764_028_800_000_000 + ((n * 1024 - 1) as f64 * 1e6 / 12_000.0) as i64;
        ch.reading(
            ts,
            Value::Block {
                sample_rate_hz: 12_000.0,
                samples: blocks[(n as usize) % blocks.len()].clone(),
            },
        )
    };
    // One poll of 30 temperature registers, once a second.
    let scalars: Vec<ChannelId> = (0..30)
        .map(|i| ChannelId::new("press1", &format!("t{i}"), SensorType::Temperature, "°C"))
        .collect();
    let poll = |n: u64| {
        let ts = 1_764_028_800_000_000 + n as i64 * 1_000_000;
        scalars
            .iter()
            .enumerate()
            .map(|(i, c)| c.reading(ts, Value::Scalar(40.0 + i as f64 + (n % 7) as f64 * 0.01)))
            .collect::<Vec<_>>()
    };
    for (name, with_board) in [("block_1024", false), ("block_1024_and_board", true)] {
        let mut p = processor();
        let mut out = Vec::with_capacity(8);
        let mut n = 0u64;
        for _ in 0..25 {
            n += 1;
            out.clear();
            p.process_into(&[block(n)], &mut out);
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                let r = [block(n)];
                out.clear();
                p.process_into(&r, &mut out);
                if with_board {
                    board.observe(&r, &out, |s| p.scalar_trend(s));
                }
                black_box(out.len())
            })
        });
    }
    for (name, with_board) in [
        ("poll_30_scalars", false),
        ("poll_30_scalars_and_board", true),
    ] {
        let mut p = processor();
        let mut out = Vec::with_capacity(64);
        let mut n = 0u64;
        for _ in 0..30 {
            n += 1;
            out.clear();
            p.process_into(&poll(n), &mut out);
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                let r = poll(n);
                out.clear();
                p.process_into(&r, &mut out);
                if with_board {
                    board.observe(&r, &out, |s| p.scalar_trend(s));
                }
                black_box(out.len())
            })
        });
    }
    assert!(!board.is_watched());
    g.finish();
}

criterion_group!(benches, features, detection_path, status_page_unwatched);
criterion_main!(benches);
