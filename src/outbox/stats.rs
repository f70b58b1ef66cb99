//! What operators see: `stats()` (depth, lag, bytes, evictions) and `dump()`.
//!
//! Read-only queries. `stats()` counts rows per kind and pending rows per upstream
//! with scans of `records`, so it costs O(depth): fine for the CLI and a metrics
//! scrape every few seconds, not for every batch. The daemon splits it: the cheap
//! part (counters, cursors, limits) under the shared lock, the scans on a read-only
//! connection of their own ([`super::OutboxHandle::stats`]); the two snapshots are
//! milliseconds apart, so on a busy outbox the balance on /metrics can be off by
//! what moved in between (exact when the outbox is still).

use super::encode;
use super::error::OutboxError;
use super::store::Outbox;
use crate::record::{format_rfc3339, now_us, RecordKind, TimestampUs};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use std::collections::BTreeMap;

/// A snapshot of the outbox for metrics and `edgegw outbox stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxStats {
    pub path: String,
    pub gateway_id: String,
    pub epoch: String,
    /// Records waiting, per kind name (`reading`, `window`, `alert`, `summary`).
    pub depth: BTreeMap<String, u64>,
    pub total_records: u64,
    /// Records ever appended to this database (counted as they are, not the id
    /// sequence, which skipped duplicates also advance): for every upstream,
    /// appended = delivered + pending + dead-lettered + unsent evicted.
    pub appended: u64,
    pub upstreams: Vec<UpstreamStats>,
    /// Pages in use times page size (live data, WAL included).
    pub used_bytes: u64,
    /// Size of the database file on disk (grows to the bound, then pages are reused).
    pub file_bytes: u64,
    /// The size bound in force (`max_size_mb`, or lower after a disk-full).
    pub limit_bytes: u64,
    /// The last append was refused because the outbox is full (the writer holds a
    /// batch and retries).
    pub refusing: bool,
    /// Age of the oldest record in the outbox, seconds.
    pub oldest_age_secs: Option<f64>,
    /// Persisted eviction counters: `evicted_size.<kind>`, `evicted_age.<kind>`, and
    /// `dropped_incoming.<kind>` (records that found no room at all).
    pub evicted: BTreeMap<String, u64>,
    /// Rows in the dead-letter table now.
    pub dead_letters: u64,
    /// Every other persisted counter (`dead_lettered:<upstream>`, `requeued`).
    pub counters: BTreeMap<String, u64>,
}

/// Per-upstream delivery state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamStats {
    pub name: String,
    /// False for a cursor kept from an upstream that is no longer configured
    /// (it does not hold records back).
    pub configured: bool,
    pub acked_id: i64,
    /// Records after the cursor (dead letters of this upstream included).
    pub pending: u64,
    /// Age of the oldest record not yet acknowledged by this upstream, seconds.
    pub lag_secs: Option<f64>,
    pub dead_letters: u64,
    /// Records this upstream acknowledged, ever (persisted; its dead letters not
    /// included).
    pub delivered: u64,
    /// Records evicted (size or age bound) before this upstream had them, ever.
    pub unsent_evicted: u64,
    /// Records dead-lettered for this upstream, ever.
    pub dead_lettered: u64,
}

/// One line of `edgegw outbox dump`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DumpLine {
    pub id: i64,
    pub key: String,
    pub kind: String,
    /// When the record entered the outbox, RFC 3339 UTC.
    pub created: String,
    pub payload: serde_json::Value,
}

fn age_secs(now: TimestampUs, then: TimestampUs) -> f64 {
    (now - then).max(0) as f64 / 1e6
}

impl Outbox {
    /// Depth per kind and per upstream, bytes, ages, eviction and dead-letter counts.
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let mut s = self.stats_without_depth()?;
        self.fill_depth(&mut s)?;
        Ok(s)
    }

    /// Records per kind and in all: the one full-table scan of the stats. The daemon
    /// runs it on a separate read-only connection ([`super::OutboxHandle::stats`]),
    /// so a `/metrics` scrape never scans under the lock the writer and the
    /// forwarders share.
    pub(crate) fn fill_depth(&self, out: &mut OutboxStats) -> Result<(), OutboxError> {
        let q = |e| self.err("reading stats", e);
        let mut depth = BTreeMap::new();
        for k in RecordKind::ALL {
            depth.insert(k.as_str().to_string(), 0);
        }
        let mut total = 0;
        {
            let mut stmt = self
                .conn
                .prepare("SELECT kind, count(*) FROM records GROUP BY kind")
                .map_err(q)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(q)?;
            for (kind, n) in rows {
                let name = u8::try_from(kind)
                    .ok()
                    .and_then(RecordKind::from_u8)
                    .map(|k| k.as_str().to_string())
                    .unwrap_or_else(|| format!("unknown_{kind}"));
                depth.insert(name, n as u64);
                total += n as u64;
            }
        }
        out.depth = depth;
        out.total_records = total;
        // Pending counted, not derived: what the balance on /metrics is checked
        // against (tests/worst_day.rs), as of this connection's snapshot.
        for u in &mut out.upstreams {
            let pending: i64 = self
                .conn
                .query_row(
                    "SELECT count(*) FROM records WHERE id > ?1",
                    [u.acked_id],
                    |r| r.get(0),
                )
                .map_err(q)?;
            u.pending = pending as u64;
        }
        Ok(())
    }

    /// Everything but [`Outbox::fill_depth`] (which also counts pending per
    /// upstream): index seeks and the counters table, no scan of the records.
    pub(crate) fn stats_without_depth(&self) -> Result<OutboxStats, OutboxError> {
        let now = now_us();
        let q = |e| self.err("reading stats", e);
        let oldest: Option<i64> = self
            .conn
            .query_row(
                "SELECT created_us FROM records ORDER BY id LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(q)?;

        let cursors: Vec<(String, i64)> = {
            let mut stmt = self
                .conn
                .prepare("SELECT upstream, acked_id FROM cursors ORDER BY upstream")
                .map_err(q)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(q)?;
            rows
        };
        let mut upstreams = Vec::new();
        for (name, acked_id) in cursors {
            let first: Option<i64> = self
                .conn
                .query_row(
                    "SELECT created_us FROM records WHERE id > ?1 ORDER BY id LIMIT 1",
                    [acked_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(q)?;
            let dead: i64 = self
                .conn
                .query_row(
                    "SELECT count(*) FROM dead_letters WHERE upstream = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .map_err(q)?;
            upstreams.push(UpstreamStats {
                configured: self.upstreams.contains(&name),
                name,
                acked_id,
                pending: 0, // counted by `fill_depth`
                lag_secs: first.map(|t| age_secs(now, t)),
                dead_letters: dead as u64,
                delivered: 0,
                unsent_evicted: 0,
                dead_lettered: 0,
            });
        }

        let mut evicted = BTreeMap::new();
        let mut counters = BTreeMap::new();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT name, value FROM counters ORDER BY name")
                .map_err(q)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(q)?;
            for (name, value) in rows {
                if name.starts_with("evicted_") || name.starts_with("dropped_incoming") {
                    evicted.insert(name, value.max(0) as u64);
                } else {
                    counters.insert(name, value.max(0) as u64);
                }
            }
        }
        let dead_letters: i64 = self
            .conn
            .query_row("SELECT count(*) FROM dead_letters", [], |r| r.get(0))
            .map_err(q)?;
        for u in &mut upstreams {
            let get = |k: String| counters.get(&k).copied().unwrap_or(0);
            u.delivered = get(format!("delivered:{}", u.name));
            u.unsent_evicted = get(format!("unsent_evicted:{}", u.name));
            u.dead_lettered = get(format!("dead_lettered:{}", u.name));
        }
        let appended = counters.get("appended").copied().unwrap_or(0);
        let file_bytes = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        Ok(OutboxStats {
            path: self.path.display().to_string(),
            gateway_id: self.gateway_id.clone(),
            epoch: self.epoch.clone(),
            depth: BTreeMap::new(),
            total_records: 0,
            appended,
            upstreams,
            used_bytes: self.used_bytes()?,
            file_bytes,
            limit_bytes: {
                // The bound in force now, with the disk as it is now.
                let pages = super::evict::file_bytes(&self.conn, self.page_size).ok();
                match super::evict::disk_space(&self.path).zip(pages) {
                    Some(((free, total), file)) => self
                        .current_limit()
                        .min(super::evict::disk_room_limit(file, free, total)),
                    None => self.current_limit(),
                }
            },
            refusing: self.refused_full,
            oldest_age_secs: oldest.map(|t| age_secs(now, t)),
            evicted,
            dead_letters: dead_letters as u64,
            counters,
        })
    }

    /// Records oldest first (optionally of one kind), for JSON-lines output.
    pub fn dump(
        &self,
        kind: Option<RecordKind>,
        limit: usize,
    ) -> Result<Vec<DumpLine>, OutboxError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        let kind_filter: Option<i64> = kind.map(|k| k as i64);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, kind, created_us, payload, key FROM records
                 WHERE ?1 IS NULL OR kind = ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| self.err("dumping records", e))?;
        let rows = stmt
            .query_map(params![kind_filter, limit], super::store::raw_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err("dumping records", e))?;
        Ok(rows
            .into_iter()
            .map(|(id, kind, created_us, payload, key)| {
                let kind_name = u8::try_from(kind)
                    .ok()
                    .and_then(RecordKind::from_u8)
                    .map(|k| k.as_str().to_string())
                    .unwrap_or_else(|| format!("unknown_{kind}"));
                let payload = match encode::decode(kind, &payload) {
                    Ok(record) => encode::to_json(&record),
                    Err(detail) => serde_json::json!({ "undecodable": detail }),
                };
                DumpLine {
                    id,
                    key: key.unwrap_or_else(|| self.key_for(id)),
                    kind: kind_name,
                    created: format_rfc3339(created_us),
                    payload,
                }
            })
            .collect())
    }
}
