//! Library side of `edgegw outbox stats | dump | dead-letters`: open the file
//! (read-only unless requeueing), format, write. The binary only wires arguments.
//! Never creates, repairs or moves a database: the running gateway owns that.

use super::error::OutboxError;
use super::stats::OutboxStats;
use super::store::Outbox;
use crate::record::{format_rfc3339, RecordKind};
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

fn fmt_age(secs: Option<f64>) -> String {
    match secs {
        None => "-".to_string(),
        Some(s) if s < 120.0 => format!("{s:.1}s"),
        Some(s) if s < 7200.0 => format!("{:.1}min", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
    }
}

/// Human-readable stats of the outbox at `path` (opened read-only).
pub fn cli_stats(path: &Path) -> Result<String, OutboxError> {
    let stats = Outbox::open_read_only(path)?.stats()?;
    Ok(format_stats(&stats))
}

/// Formats [`OutboxStats`] for a terminal.
pub fn format_stats(s: &OutboxStats) -> String {
    let mut out = String::new();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let _ = writeln!(out, "outbox      {}", s.path);
    let _ = writeln!(out, "gateway     {} (epoch {})", s.gateway_id, s.epoch);
    let _ = writeln!(
        out,
        "size        {:.1} MiB used of {:.1} MiB ({:.1} MiB file)",
        mib(s.used_bytes),
        mib(s.limit_bytes),
        mib(s.file_bytes)
    );
    let _ = writeln!(
        out,
        "records     {} (oldest {})",
        s.total_records,
        fmt_age(s.oldest_age_secs)
    );
    for (kind, n) in &s.depth {
        let _ = writeln!(out, "  {kind:<10}{n}");
    }
    let _ = writeln!(out, "upstreams");
    if s.upstreams.is_empty() {
        let _ = writeln!(out, "  (none: records stay until evicted)");
    }
    for u in &s.upstreams {
        let _ = writeln!(
            out,
            "  {:<16} pending {:<10} lag {:<10} acked_id {:<12} dead letters {}{}",
            u.name,
            u.pending,
            fmt_age(u.lag_secs),
            u.acked_id,
            u.dead_letters,
            if u.configured {
                ""
            } else {
                " (not configured)"
            }
        );
    }
    let _ = writeln!(out, "dead letters {}", s.dead_letters);
    let _ = writeln!(out, "evicted");
    if s.evicted.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for (name, n) in &s.evicted {
        let _ = writeln!(out, "  {name:<26}{n}");
    }
    for (name, n) in &s.counters {
        let _ = writeln!(out, "{name:<28}{n}");
    }
    out
}

/// Writes up to `limit` records (oldest first, optionally one kind) as JSON lines.
/// Returns the number of lines written.
pub fn cli_dump(
    path: &Path,
    kind: Option<RecordKind>,
    limit: usize,
    out: &mut dyn Write,
) -> Result<usize, OutboxError> {
    let outbox = Outbox::open_read_only(path)?;
    let lines = outbox.dump(kind, limit)?;
    for line in &lines {
        let json = serde_json::to_string(line).map_err(|e| OutboxError::Output {
            what: "dump",
            source: std::io::Error::other(e),
        })?;
        writeln!(out, "{json}").map_err(|source| OutboxError::Output {
            what: "dump",
            source,
        })?;
    }
    Ok(lines.len())
}

/// Lists dead letters as JSON lines; with `requeue` non-empty, first requeues those
/// ids (opening the file read-write next to a running gateway is safe: SQLite locks).
pub fn cli_dead_letters(
    path: &Path,
    requeue: &[i64],
    out: &mut dyn Write,
) -> Result<(), OutboxError> {
    let io = |source| OutboxError::Output {
        what: "dead-letters",
        source,
    };
    if !requeue.is_empty() {
        let mut outbox = Outbox::open_existing(path)?;
        let n = outbox.requeue(requeue)?;
        writeln!(out, "# requeued {n} of {} ids", requeue.len()).map_err(io)?;
    }
    let outbox = Outbox::open_read_only(path)?;
    for dl in outbox.dead_letters(None, usize::MAX)? {
        let line = serde_json::json!({
            "id": dl.id,
            "upstream": dl.upstream,
            "key": dl.key,
            "kind": dl.kind.map(|k| k.as_str()),
            "created": format_rfc3339(dl.created_us),
            "dead_lettered": format_rfc3339(dl.dead_us),
            "reason": dl.reason,
            "payload": dl.record.as_ref().map(super::encode::to_json),
        });
        writeln!(out, "{line}").map_err(io)?;
    }
    Ok(())
}
