//! Outbox recovery and size measurements (run by `scripts/bench-outbox-recovery`).
//!
//! - `fill <db> <n> [gateway-id] [--unclean]`: an outbox with an `n`-reading backlog
//!   (one upstream, `timescale`, never acked); with a gateway id, the outbox belongs
//!   to that gateway and its sensor ids start with it, so several gateways' backlogs
//!   never collide upstream (`scripts/bench-fleet`). Ends with a clean shutdown
//!   (`mark_clean_shutdown`, as the daemon's stop does); `--unclean` ends the process
//!   instead without closing anything, like a SIGKILL.
//! - `open <db> clean|kill`: time `Outbox::open` alone and say whether it checked the
//!   whole file; then end with a clean shutdown, or like a SIGKILL (no close).
//! - `open-drain <db>`: time `Outbox::open` (integrity check, if any, included) on
//!   that backlog, then drain it with peek(1000) + ack, reporting peak RSS (VmHWM).
//! - `sizes <dir>`: bytes per reading by encoding, and the cost of storing keys.

use edgegw::outbox::{encoded_payload, Outbox, OutboxSettings};
use edgegw::record::{ReadingRecord, Record, SensorType};
use std::path::Path;
use std::time::Instant;

fn reading(i: usize) -> Record {
    reading_of("", i)
}

fn reading_of(prefix: &str, i: usize) -> Record {
    let device = format!("{prefix}press-{:02}", i % 4);
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

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn settings() -> OutboxSettings {
    OutboxSettings {
        max_size_mb: 4096,
        ..OutboxSettings::default()
    }
}

fn fill(
    path: &Path,
    n: usize,
    gateway: Option<&str>,
    unclean: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let id = gateway.unwrap_or("bench-gw");
    let prefix = gateway.map(|g| format!("{g}-")).unwrap_or_default();
    let mut outbox = Outbox::open(path, &settings(), id, &["timescale"])?;
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<Record> = (i..(i + 1000).min(n))
            .map(|i| reading_of(&prefix, i))
            .collect();
        outbox.append(&batch)?;
        i += batch.len();
    }
    let secs = start.elapsed().as_secs_f64();
    let used = outbox.used_bytes()?;
    if !unclean {
        outbox.mark_clean_shutdown()?;
    }
    let file = std::fs::metadata(path)?.len();
    println!(
        "fill: {n} readings in {secs:.2} s ({:.0} readings/s); file {:.1} MiB, {:.1} bytes/reading on disk ({:.1} used); {}",
        n as f64 / secs,
        file as f64 / 1048576.0,
        file as f64 / n as f64,
        used as f64 / n as f64,
        if unclean { "ended like a SIGKILL (no clean shutdown)" } else { "clean shutdown" }
    );
    if unclean {
        // No destructor runs: the connection is never closed, the WAL stays.
        std::process::exit(0);
    }
    drop(outbox);
    Ok(())
}

fn open_only(path: &Path, end: &str) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut outbox = Outbox::open(path, &settings(), "bench-gw", &["timescale"])?;
    let open_ms = start.elapsed().as_secs_f64() * 1e3;
    println!(
        "open: {open_ms:.0} ms ({:?}); then {}",
        outbox.open_check(),
        if end == "kill" {
            "ended like a SIGKILL"
        } else {
            "clean shutdown"
        }
    );
    if end == "kill" {
        std::process::exit(0);
    }
    outbox.mark_clean_shutdown()?;
    Ok(())
}

fn open_drain(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let hwm_start = status_kb("VmHWM:");
    let start = Instant::now();
    let mut outbox = Outbox::open(path, &settings(), "bench-gw", &["timescale"])?;
    let open_ms = start.elapsed().as_secs_f64() * 1e3;
    let backlog = outbox.stats()?.total_records;
    let hwm_open = status_kb("VmHWM:");
    println!(
        "open: {open_ms:.0} ms with a backlog of {backlog} records ({:?}); VmHWM {hwm_start} kB before, {hwm_open} kB after",
        outbox.open_check()
    );
    let start = Instant::now();
    let mut drained = 0u64;
    let mut rss_max = 0;
    loop {
        let got = outbox.peek("timescale", 1000)?;
        let Some(last) = got.last().map(|r| r.id) else {
            break;
        };
        drained += got.len() as u64;
        outbox.ack("timescale", last)?;
        if drained % 100_000 == 0 {
            let rss = status_kb("VmRSS:");
            rss_max = rss_max.max(rss);
            println!("  drained {drained:>8}: VmRSS {rss} kB");
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "drain: {drained} records in {secs:.2} s ({:.0} records/s); peak VmRSS sampled {rss_max} kB; VmHWM {} kB",
        drained as f64 / secs,
        status_kb("VmHWM:")
    );
    Ok(())
}

fn sizes(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let r = reading(5);
    let json = serde_json::to_vec(&r)?.len();
    let named = match &r {
        Record::Reading(inner) => rmp_serde::to_vec_named(inner)?.len(),
        _ => 0,
    };
    let compact = encoded_payload(&r)?.len();
    println!("payload of one reading: JSON {json} B, MessagePack with field names {named} B, compact MessagePack (stored) {compact} B");
    let n = 100_000;
    let path = dir.join("sizes.db");
    let mut outbox = Outbox::open(&path, &settings(), "bench-gw", &["timescale"])?;
    for i in (0..n).step_by(1000) {
        outbox.append(&(i..i + 1000).map(reading).collect::<Vec<_>>())?;
    }
    let epoch = outbox.epoch().to_string();
    drop(outbox);
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute_batch("VACUUM")?;
    let derived = std::fs::metadata(&path)?.len();
    conn.execute(
        "UPDATE records SET key = ?1 || id",
        [format!("bench-gw:{epoch}:")],
    )?;
    conn.execute_batch("VACUUM")?;
    let stored = std::fs::metadata(&path)?.len();
    println!(
        "{n} readings, vacuumed: {:.1} B/reading with derived keys, {:.1} B/reading with stored keys (+{:.0} %)",
        derived as f64 / n as f64,
        stored as f64 / n as f64,
        (stored as f64 / derived as f64 - 1.0) * 100.0
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let all: Vec<String> = std::env::args().collect();
    let unclean = all.iter().any(|a| a == "--unclean");
    let args: Vec<String> = all.into_iter().filter(|a| a != "--unclean").collect();
    match args.get(1).map(String::as_str) {
        Some("fill") if args.len() == 4 || args.len() == 5 => fill(
            Path::new(&args[2]),
            args[3].parse()?,
            args.get(4).map(String::as_str),
            unclean,
        ),
        Some("open") if args.len() == 4 && (args[3] == "clean" || args[3] == "kill") => {
            open_only(Path::new(&args[2]), &args[3])
        }
        Some("open-drain") if args.len() == 3 => open_drain(Path::new(&args[2])),
        Some("sizes") if args.len() == 3 => sizes(Path::new(&args[2])),
        _ => {
            eprintln!(
                "usage: outbox_recovery fill <db> <n> [gateway-id] [--unclean] | open <db> clean|kill | open-drain <db> | sizes <dir>"
            );
            std::process::exit(2);
        }
    }
}
