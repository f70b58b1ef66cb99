//! Outbox throughput: batched append (synchronous NORMAL vs FULL) and peek+ack drain.
//!
//! `CARGO_TARGET_DIR=/work/target cargo bench --bench outbox`
//! Results and their interpretation: docs/PERFORMANCE.md ("Outbox").

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use edgegw::outbox::{Outbox, OutboxSettings, SyncMode};
use edgegw::record::{ReadingRecord, Record, SensorType};
use std::time::{Duration, Instant};

const BATCH: usize = 1000;

/// A realistic reading: 16 channels on 4 devices, varying values.
fn reading(i: usize) -> Record {
    let device = format!("press-{:02}", i % 4);
    let channel = ["vib_rms", "temp_bearing", "temp_motor", "current"][(i / 4) % 4];
    Record::Reading(ReadingRecord {
        sensor_id: format!("{device}.{channel}").into(),
        device: device.into(),
        channel: channel.into(),
        sensor_type: SensorType::Vibration,
        unit: "mm/s".into(),
        ts_us: 1_764_079_387_250_000 + i as i64 * 1000,
        value: 2.5 + (i % 1000) as f64 * 0.013,
        quality: 1.0,
        flags: Vec::new(),
        detection: None,
    })
}

fn batch(offset: usize) -> Vec<Record> {
    (offset..offset + BATCH).map(reading).collect()
}

fn open(dir: &std::path::Path, sync: SyncMode, upstreams: &[&str]) -> Outbox {
    let settings = OutboxSettings {
        synchronous: sync,
        max_size_mb: 4096,
        ..OutboxSettings::default()
    };
    Outbox::open(&dir.join("outbox.db"), &settings, "bench-gw", upstreams).expect("open outbox")
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox_append_1000");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    for (name, sync) in [("normal", SyncMode::Normal), ("full", SyncMode::Full)] {
        let dir = tempfile::tempdir().expect("tempdir");
        // No upstream: records stay, the database grows as during an outage.
        let mut outbox = open(dir.path(), sync, &[]);
        // Fresh readings every batch: the outbox stores a (sensor, timestamp) once.
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    next += BATCH;
                    batch(next)
                },
                |records| outbox.append(&records).expect("append"),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

fn drain(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox_drain_1000");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut outbox = open(dir.path(), SyncMode::Normal, &["timescale"]);
    let mut next = 0usize;
    group.bench_function("peek_ack", |b| {
        b.iter_custom(|iters| {
            // Backlog first (not timed), then drain it exactly.
            for _ in 0..iters {
                next += BATCH;
                outbox.append(&batch(next)).expect("append");
            }
            let start = Instant::now();
            for _ in 0..iters {
                let got = outbox.peek("timescale", BATCH).expect("peek");
                let last = got.last().map(|r| r.id).expect("backlog");
                outbox.ack("timescale", last).expect("ack");
            }
            start.elapsed()
        });
    });
    // Two upstreams: the record is deleted when the second one acks.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let mut two = open(dir2.path(), SyncMode::Normal, &["timescale", "mqtt"]);
    group.bench_function("peek_ack_two_upstreams", |b| {
        b.iter_custom(|iters| {
            for _ in 0..iters {
                next += BATCH;
                two.append(&batch(next)).expect("append");
            }
            let start = Instant::now();
            for _ in 0..iters {
                for up in ["timescale", "mqtt"] {
                    let got = two.peek(up, BATCH).expect("peek");
                    let last = got.last().map(|r| r.id).expect("backlog");
                    two.ack(up, last).expect("ack");
                }
            }
            start.elapsed()
        });
    });
    group.finish();
}

criterion_group!(benches, append, drain);
criterion_main!(benches);
