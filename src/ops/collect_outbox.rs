//! Outbox families from one `OutboxStats` snapshot: depth, size and bounds,
//! evictions, dead letters, and the per-upstream cursors and persisted counters.

use crate::ops::metrics::{Exposition, Kind};
use crate::outbox::OutboxStats;

/// Reads one persisted per-upstream counter.
type UpstreamCounter = fn(&crate::outbox::UpstreamStats) -> u64;

/// Outbox families from one `stats()` snapshot.
pub fn outbox(s: &OutboxStats, out: &mut Exposition) {
    if let Some(mut f) = out.family(
        "edgegw_outbox_records",
        "Records waiting in the outbox, by kind.",
        Kind::Gauge,
    ) {
        for (kind, n) in &s.depth {
            f.sample(&[("kind", kind.as_str())], *n as f64);
        }
    }
    out.single(
        "edgegw_outbox_used_bytes",
        "Bytes of live data in the outbox database (WAL included).",
        Kind::Gauge,
        s.used_bytes as f64,
    );
    out.single(
        "edgegw_outbox_file_bytes",
        "Size of the outbox database file.",
        Kind::Gauge,
        s.file_bytes as f64,
    );
    out.single(
        "edgegw_outbox_limit_bytes",
        "Size bound in force: max_size_mb, lowered by the free disk space or a full disk.",
        Kind::Gauge,
        s.limit_bytes as f64,
    );
    out.single(
        "edgegw_outbox_refusing",
        "1 while the outbox refuses batches as full (the writer holds them and retries).",
        Kind::Gauge,
        f64::from(u8::from(s.refusing)),
    );
    out.single(
        "edgegw_outbox_oldest_age_seconds",
        "Age of the oldest record in the outbox; 0 when empty.",
        Kind::Gauge,
        s.oldest_age_secs.unwrap_or(0.0),
    );
    if let Some(mut f) = out.family(
        "edgegw_outbox_evicted_total",
        "Records evicted unsent, by reason (size, age; dropped_incoming: no room even after evicting what the batch may evict) and kind.",
        Kind::Counter,
    ) {
        for (key, n) in &s.evicted {
            let (reason, kind) = key.split_once('.').unwrap_or((key.as_str(), "unknown"));
            let reason = reason.strip_prefix("evicted_").unwrap_or(reason);
            f.sample(&[("reason", reason), ("kind", kind)], *n as f64);
        }
    }
    out.single(
        "edgegw_outbox_dead_letters",
        "Rows in the dead-letter table now.",
        Kind::Gauge,
        s.dead_letters as f64,
    );
    out.single(
        "edgegw_outbox_appended_total",
        "Records ever appended to this outbox database. For each upstream: appended = delivered + pending + dead-lettered + evicted unsent.",
        Kind::Counter,
        s.appended as f64,
    );
    let per_upstream: [(&str, &str, UpstreamCounter); 3] = [
        (
            "edgegw_outbox_delivered_total",
            "Records each upstream acknowledged (its dead letters not included), persisted across restarts.",
            |u| u.delivered,
        ),
        (
            "edgegw_outbox_evicted_unsent_total",
            "Records evicted by the size or age bound before each upstream had them, persisted across restarts.",
            |u| u.unsent_evicted,
        ),
        (
            "edgegw_outbox_dead_lettered_total",
            "Records dead-lettered for each upstream (less those requeued before the upstream's cursor passed them), persisted across restarts.",
            |u| u.dead_lettered,
        ),
    ];
    for (name, help, get) in per_upstream {
        if let Some(mut f) = out.family(name, help, Kind::Counter) {
            for u in &s.upstreams {
                f.sample(&[("upstream", u.name.as_str())], get(u) as f64);
            }
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_upstream_pending_records",
        "Records after each upstream's cursor (not yet acknowledged by it).",
        Kind::Gauge,
    ) {
        for u in &s.upstreams {
            f.sample(&[("upstream", u.name.as_str())], u.pending as f64);
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_upstream_lag_seconds",
        "Age of the oldest record an upstream has not acknowledged; 0 when caught up.",
        Kind::Gauge,
    ) {
        for u in &s.upstreams {
            f.sample(&[("upstream", u.name.as_str())], u.lag_secs.unwrap_or(0.0));
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_upstream_acked_id",
        "Outbox id up to which each upstream has acknowledged.",
        Kind::Gauge,
    ) {
        for u in &s.upstreams {
            f.sample(&[("upstream", u.name.as_str())], u.acked_id as f64);
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_upstream_dead_letters",
        "Dead-lettered records per upstream now.",
        Kind::Gauge,
    ) {
        for u in &s.upstreams {
            f.sample(&[("upstream", u.name.as_str())], u.dead_letters as f64);
        }
    }
    if let Some(mut f) = out.family(
        "edgegw_upstream_configured",
        "1 for a configured upstream, 0 for a cursor kept from a removed one.",
        Kind::Gauge,
    ) {
        for u in &s.upstreams {
            f.sample(
                &[("upstream", u.name.as_str())],
                f64::from(u8::from(u.configured)),
            );
        }
    }
}
