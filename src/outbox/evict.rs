//! The bounds: size (`max_size_mb`) and age (`max_age_hours`).
//!
//! Owns the eviction order and the persisted eviction counters. Runs inside the
//! append transaction, so an eviction and the batch that caused it commit together.
//! The size is measured as `(page_count - freelist_count) * page_size`: two header
//! reads, cheap enough for every batch.

use crate::record::RecordKind;
use rusqlite::{params, Connection};
use std::path::Path;

/// Estimated B-tree bytes per row on top of the payload (id, kind, priority,
/// created_us, ts_us, cell header, page slack). Measured ~35-45 B; see docs/outbox.md.
pub(crate) const ROW_OVERHEAD_BYTES: u64 = 40;

/// Slot for dead letters in [`Evicted`] (after the four record kinds).
const DEAD_LETTER_SLOT: usize = 5;

/// Counts of one eviction round, indexed by `RecordKind as usize`, dead letters at 5.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evicted(pub [u64; 6]);

impl Evicted {
    pub(crate) fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds another round's counts.
    pub(crate) fn merge(&mut self, other: &Evicted) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// Counts one record of `kind`.
    pub(crate) fn add(&mut self, kind: RecordKind) {
        self.0[kind as usize] += 1;
    }

    /// One log line for incoming records that found no room (the outbox holds only
    /// more important records, or the disk is that full).
    pub(crate) fn log_dropped(&self, path: &Path) {
        if self.total() == 0 {
            return;
        }
        let c = &self.0;
        tracing::warn!(
            path = %path.display(),
            readings = c[RecordKind::Reading as usize],
            windows = c[RecordKind::Window as usize],
            summaries = c[RecordKind::Summary as usize],
            alerts = c[RecordKind::Alert as usize],
            "Outbox full of more important records (or the disk is): incoming records that did not fit were dropped, the most important kept."
        );
    }

    fn name(slot: usize) -> &'static str {
        if slot == DEAD_LETTER_SLOT {
            return "dead_letter";
        }
        u8::try_from(slot)
            .ok()
            .and_then(RecordKind::from_u8)
            .map(RecordKind::as_str)
            .unwrap_or("unknown")
    }

    /// One log line per round, with the count per kind.
    pub(crate) fn log(&self, path: &Path, bound: &'static str) {
        if self.total() == 0 {
            return;
        }
        let c = &self.0;
        tracing::warn!(
            path = %path.display(),
            bound,
            readings = c[RecordKind::Reading as usize],
            windows = c[RecordKind::Window as usize],
            summaries = c[RecordKind::Summary as usize],
            alerts = c[RecordKind::Alert as usize],
            dead_letters = c[DEAD_LETTER_SLOT],
            "Outbox bound reached: evicted the oldest records."
        );
    }
}

/// Disk space kept free next to the outbox: the WAL grows until it is checkpointed,
/// and a checkpoint needs the main file to grow too; on a disk tighter than that,
/// SQLite can end up unable to checkpoint or delete. A sixteenth of the file system,
/// between 512 KiB and 6 MiB (the WAL of a roomy disk is checkpointed at about 4 MiB;
/// on a tight one at 256 KiB, see [`TIGHT_DISK_BYTES`]).
pub(crate) fn disk_reserve_bytes(total: u64) -> u64 {
    (total / 16).clamp(512 * 1024, 6 * 1024 * 1024)
}

/// Below this much free space the WAL is checkpointed every 64 pages (256 KiB)
/// instead of every 1000, so the reserve above is enough.
pub(crate) const TIGHT_DISK_BYTES: u64 = 16 * 1024 * 1024;

/// Free bytes for an unprivileged writer and the size of the file system holding
/// `path`.
pub(crate) fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    let st = rustix::fs::statvfs(dir).ok()?;
    Some((
        st.f_bavail.saturating_mul(st.f_frsize),
        st.f_blocks.saturating_mul(st.f_frsize),
    ))
}

/// The most the database may use given the free disk space. Pages the file already
/// holds (in use or on its free list, which new records reuse) cost no disk; growth
/// beyond the file costs about twice its size (WAL, then the main file at
/// checkpoint), and the reserve stays free.
pub(crate) fn disk_room_limit(file_bytes: u64, free: u64, total: u64) -> u64 {
    file_bytes + free.saturating_sub(disk_reserve_bytes(total)) / 2
}

/// Bytes of the database file (pages in use and free pages).
pub(crate) fn file_bytes(conn: &Connection, page_size: u64) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    Ok(pages.max(0) as u64 * page_size)
}

pub(crate) fn used_bytes(conn: &Connection, page_size: u64) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    Ok((pages - free).max(0) as u64 * page_size)
}

/// Adds `by` to counter `name`.
pub(crate) fn add_counter(conn: &Connection, name: &str, by: i64) -> rusqlite::Result<()> {
    if by == 0 {
        return Ok(());
    }
    conn.execute(
        "INSERT INTO counters(name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
        params![name, by],
    )?;
    Ok(())
}

/// Persists the counts of a round as `<prefix>.<kind>` counters.
pub(crate) fn count(conn: &Connection, prefix: &str, evicted: &Evicted) -> rusqlite::Result<()> {
    for (slot, n) in evicted.0.iter().enumerate() {
        if *n > 0 {
            add_counter(
                conn,
                &format!("{prefix}.{}", Evicted::name(slot)),
                *n as i64,
            )?;
        }
    }
    Ok(())
}

fn delete_returning_kinds(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    into: &mut Evicted,
) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(p)?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        let kind: i64 = row.get(0)?;
        let slot = usize::try_from(kind)
            .ok()
            .filter(|k| *k < DEAD_LETTER_SLOT)
            .unwrap_or(0);
        into.0[slot] += 1;
        n += 1;
    }
    Ok(n)
}

/// Deletes records (not alerts) that entered the outbox before `cutoff_us`.
pub(crate) fn evict_expired(conn: &Connection, cutoff_us: i64) -> rusqlite::Result<Evicted> {
    const CHUNK: i64 = 5000;
    let mut evicted = Evicted::default();
    loop {
        // created_us grows with id (one clock, one writer), so looking at the oldest
        // CHUNK non-alert rows per round finds every expired one without an index.
        let n = delete_returning_kinds(
            conn,
            "DELETE FROM records WHERE id IN
                (SELECT id FROM records WHERE priority < ?2 ORDER BY id LIMIT ?3)
             AND created_us < ?1 RETURNING kind",
            params![cutoff_us, RecordKind::Alert.priority(), CHUNK],
            &mut evicted,
        )?;
        if n < CHUNK as u64 {
            return Ok(evicted);
        }
    }
}

/// Evicts until at most `target_bytes` are in use: readings and windows oldest first,
/// then dead letters, then summaries, then alerts (lowest priority first, oldest
/// first) — but never records of a higher priority than `up_to_priority` (the most
/// important record that needs the room): readings never push out an alert.
pub(crate) fn evict_for_space(
    conn: &Connection,
    page_size: u64,
    target_bytes: u64,
    avg_row_bytes: u64,
    up_to_priority: u8,
) -> rusqlite::Result<Evicted> {
    let mut evicted = Evicted::default();
    let mut priorities: Vec<u8> = RecordKind::ALL
        .iter()
        .map(|k| k.priority())
        .filter(|p| *p <= up_to_priority)
        .collect();
    priorities.sort_unstable();
    priorities.dedup();
    let lowest = priorities.first().copied().unwrap_or(0);
    // Dead letters go right after the lowest-priority records.
    let mut steps: Vec<Option<u8>> = vec![Some(lowest), None];
    steps.extend(priorities.iter().skip(1).map(|p| Some(*p)));
    for step in steps {
        loop {
            let used = used_bytes(conn, page_size)?;
            if used <= target_bytes {
                return Ok(evicted);
            }
            // Readings go in chunks (eviction runs in rounds); summaries and alerts
            // one at a time, so no more of them go than the room needs.
            let chunk = if step == Some(lowest) {
                ((used - target_bytes) / avg_row_bytes.max(1) + 16).clamp(16, 20_000) as i64
            } else {
                ((used - target_bytes) / avg_row_bytes.max(1) + 1).clamp(1, 20_000) as i64
            };
            let n = match step {
                Some(0) => delete_returning_kinds(
                    conn,
                    "DELETE FROM records WHERE id IN
                        (SELECT id FROM records WHERE priority = 0 ORDER BY id LIMIT ?1)
                     RETURNING kind",
                    params![chunk],
                    &mut evicted,
                )?,
                Some(p) => delete_returning_kinds(
                    conn,
                    // `priority > 0` lets SQLite use the partial index.
                    "DELETE FROM records WHERE id IN
                        (SELECT id FROM records WHERE priority = ?1 AND priority > 0
                         ORDER BY id LIMIT ?2)
                     RETURNING kind",
                    params![p, chunk],
                    &mut evicted,
                )?,
                None => {
                    let n = conn.execute(
                        "DELETE FROM dead_letters WHERE rowid IN
                            (SELECT rowid FROM dead_letters ORDER BY dead_us LIMIT ?1)",
                        [chunk],
                    )? as u64;
                    evicted.0[DEAD_LETTER_SLOT] += n;
                    n
                }
            };
            if n == 0 {
                break;
            }
        }
    }
    Ok(evicted)
}
