//! How much memory the pipeline keeps per channel, over days of reading time.
//!
//! A plant gateway at W500 has 15,000 scalar channels (500 devices x 30 registers).
//! The `Processor` keeps per channel its validator, rolling window (24 hourly buckets),
//! commissioning samples (200 over the first 24 h by default), summary bucket and
//! episode state; much of it fills only over hours of reading time, so a one-minute
//! run of the daemon does not show it. This example feeds N channels with readings at
//! a fixed cadence of *reading* time (default one per minute) through a real
//! `Processor` with the default pipeline settings and the shipped models, and prints
//! the live heap (exact, from a counting allocator) and the process RSS every few
//! hours of reading time: learning, then learned, then steady; and the bytes the
//! baseline states would write to the state store (the learning samples).
//!
//! Usage: channel_state [CHANNELS] [HOURS] [CADENCE_S]   (defaults 15000 48 60)

use edgegw::inference::{shared, ModelRegistry};
use edgegw::pipeline::{PipelineSettings, Processor, StateStore};
use edgegw::record::SensorType;
use edgegw::sources::{ChannelId, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Keeps nothing: the daemon's state store is the outbox's SQLite table, not memory.
/// Counts what would be written to it (baseline states: the learning samples).
struct Discard;
static PUT_BYTES: AtomicUsize = AtomicUsize::new(0);
static PUTS: AtomicUsize = AtomicUsize::new(0);

impl StateStore for Discard {
    fn get(&mut self, _key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(None)
    }
    fn put(&mut self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        PUT_BYTES.fetch_add(key.len() + value.len(), Ordering::Relaxed);
        PUTS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn delete(&mut self, _key: &str) -> anyhow::Result<()> {
        Ok(())
    }
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let channels: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(15_000);
    let hours: i64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(48);
    let cadence_s: i64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(60);
    let per_device = 30;
    let ids: Vec<ChannelId> = (0..channels)
        .map(|i| {
            ChannelId::new(
                &format!("dev{}", i / per_device + 1),
                &format!("r{}_{}", (i % per_device) / 10, i % 10),
                SensorType::General,
                "1",
            )
        })
        .collect();
    let settings = PipelineSettings::default();
    let mut p = Processor::new(
        &settings,
        shared(ModelRegistry::with_defaults()?),
        Box::new(Discard),
    );
    let heap0 = LIVE.load(Ordering::Relaxed);
    let start_us: i64 = 1_764_000_000_000_000;
    let steps = hours * 3600 / cadence_s;
    let report_every = (4 * 3600 / cadence_s).max(1);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut out = Vec::new();
    let mut records = 0u64;
    println!(
        "{channels} channels, one reading each every {cadence_s} s of reading time, {hours} h"
    );
    println!(
        "{:>6} {:>12} {:>14} {:>10} {:>16} {:>12}",
        "hour", "heap (kB)", "heap/channel", "RSS (kB)", "state put (kB)", "state puts"
    );
    let t0 = std::time::Instant::now();
    // As the daemon's processor thread does (`EDGEGW_NO_TRIM=1`: without, to compare).
    let mut trimmer = (std::env::var_os("EDGEGW_NO_TRIM").is_none())
        .then(edgegw::pipeline::trim::Trimmer::default);
    for step in 1..=steps {
        let ts = start_us + step * cadence_s * 1_000_000;
        for chunk in ids.chunks(per_device) {
            let batch: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(k, id)| id.reading(ts, Value::Scalar(20.0 + k as f64 + rng.f64())))
                .collect();
            p.process_into(&batch, &mut out);
            records += out.len() as u64;
            out.clear();
        }
        if let Some(t) = trimmer.as_mut() {
            t.after(p.counters());
        }
        if step % report_every == 0 || step == steps {
            let _ = p.take_state(false);
            let heap = LIVE.load(Ordering::Relaxed).saturating_sub(heap0);
            println!(
                "{:>6} {:>12} {:>14} {:>10} {:>16} {:>12}",
                step * cadence_s / 3600,
                heap / 1024,
                heap / channels,
                rss_kb(),
                PUT_BYTES.load(Ordering::Relaxed) / 1024,
                PUTS.load(Ordering::Relaxed)
            );
        }
    }
    let n = steps as f64 * channels as f64;
    println!(
        "{records} records from {n} readings, {:.2} µs per reading, {} malloc trims",
        t0.elapsed().as_secs_f64() * 1e6 / n,
        trimmer.map_or(0, |t| t.trims)
    );
    Ok(())
}
