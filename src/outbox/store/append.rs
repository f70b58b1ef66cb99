//! Appending to the outbox: [`Outbox::append`] and the size, age and full-disk
//! bounds it applies first (eviction, then dropping what still does not fit).

use super::Outbox;
use crate::outbox::encode;
use crate::outbox::error::OutboxError;
use crate::outbox::evict::{self, Evicted};
use crate::outbox::schema::{is_disk_full, sql_err};
use crate::outbox::settings::FullPolicy;
use crate::record::{now_us, Record};
use rusqlite::{params, Connection, TransactionBehavior};
use std::path::Path;

/// How often (at most) the age bound is enforced on append.
const AGE_CHECK_INTERVAL_US: i64 = 60 * 1_000_000;
/// How long a size bound learned from a full disk holds before the configured one is
/// tried again.
const DISK_LIMIT_RETRY_US: i64 = 10 * 60 * 1_000_000;

impl Outbox {
    /// Stores `records` in one transaction and returns their ids, in order.
    ///
    /// Applies the bounds first: records past `max_age_hours` go, then, if the batch
    /// does not fit under `max_size_mb`, `drop_oldest` evicts (readings and windows,
    /// then dead letters, then summaries, alerts last) and `block` returns
    /// [`OutboxError::Full`]. SQLITE_FULL (disk or `max_page_count`) tightens the size
    /// bound to what the disk holds and is handled the same way. On any error nothing
    /// of the batch is stored.
    pub fn append(&mut self, records: &[Record]) -> Result<Vec<i64>, OutboxError> {
        self.append_with_state(records, &[])
    }

    /// [`Outbox::append`], and in the same transaction the state table entries
    /// `state` (key, value; later entries win): pipeline state that must match the
    /// records committed, e.g. the open summary buckets, so that after a crash the
    /// state resumes exactly from what was stored — no more, no less.
    pub fn append_with_state(
        &mut self,
        records: &[Record],
        state: &[(String, Vec<u8>)],
    ) -> Result<Vec<i64>, OutboxError> {
        let res = self.append_inner(records, state);
        match &res {
            Ok(_) => self.refused_full = false,
            Err(e) if e.is_full() => self.refused_full = true,
            Err(_) => {}
        }
        res
    }

    fn append_inner(
        &mut self,
        records: &[Record],
        state: &[(String, Vec<u8>)],
    ) -> Result<Vec<i64>, OutboxError> {
        self.writable()?;
        if records.is_empty() {
            if !state.is_empty() {
                let tx = self
                    .conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(|e| sql_err(&self.path, "beginning a transaction", e))?;
                put_states(&tx, state).map_err(|e| sql_err(&self.path, "writing state", e))?;
                tx.commit()
                    .map_err(|e| sql_err(&self.path, "committing state", e))?;
            }
            return Ok(Vec::new());
        }
        if let Some(tightened) = self.disk_limit_bytes {
            // Someone may have freed disk space: the configured bound again, at once
            // when the file system shows room again, at the latest after a while.
            let room_again = evict::disk_space(&self.path)
                .zip(evict::file_bytes(&self.conn, self.page_size).ok())
                .is_some_and(|((free, total), file)| {
                    evict::disk_room_limit(file, free, total) > tightened + (1 << 20)
                });
            if room_again || now_us() - self.disk_limit_since_us > DISK_LIMIT_RETRY_US {
                self.disk_limit_bytes = None;
                tracing::info!(path = %self.path.display(), "Disk space is back: the outbox's size bound is the configured one again.");
            }
        }
        let mut encoded = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            let payload = encode::encode(record).map_err(|detail| OutboxError::Encode {
                path: self.path.clone(),
                index,
                detail,
            })?;
            encoded.push(payload);
        }
        match self.try_append(records, &encoded, state) {
            Err(AppendError::Sqlite(context, e)) if is_disk_full(&e) => {
                // The WAL may be what filled the disk: fold it back into the main file
                // (whose freed pages are reused) and truncate it before retrying.
                if let Err(e) = self
                    .conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                {
                    tracing::warn!(path = %self.path.display(), error = %e, "WAL checkpoint on a full disk failed.");
                }
                let used = self.used_bytes().unwrap_or(self.limit_bytes);
                let tightened = used.min(self.effective_limit());
                tracing::error!(
                    path = %self.path.display(),
                    used_bytes = used,
                    limit_bytes = tightened,
                    "Disk full while writing the outbox ({context}): the size bound is \
                     lowered to what fits until the next restart."
                );
                self.disk_limit_bytes = Some(tightened);
                self.disk_limit_since_us = now_us();
                // Checkpoint often while the disk is tight, so the WAL stays small.
                let _ = self.conn.pragma_update(None, "wal_autocheckpoint", 64);
                match self.try_append(records, &encoded, state) {
                    Ok(ids) => Ok(ids),
                    Err(AppendError::Sqlite(_, e)) if is_disk_full(&e) => Err(OutboxError::Full {
                        path: self.path.clone(),
                        detail: format!("disk full: {e}"),
                    }),
                    Err(e) => Err(e.into_outbox(&self.path)),
                }
            }
            Err(e) => Err(e.into_outbox(&self.path)),
            Ok(ids) => Ok(ids),
        }
    }

    pub(crate) fn effective_limit(&self) -> u64 {
        match self.disk_limit_bytes {
            Some(d) => d.min(self.limit_bytes),
            None => self.limit_bytes,
        }
    }

    /// The bound in force: the configured one, lowered by a full disk, and by the
    /// free disk space as of the last append.
    pub(crate) fn current_limit(&self) -> u64 {
        let l = self.effective_limit();
        self.room_limit_bytes.map_or(l, |r| r.min(l))
    }

    /// Bytes of the database in use (pages in use times page size, WAL included).
    pub fn used_bytes(&self) -> Result<u64, OutboxError> {
        evict::used_bytes(&self.conn, self.page_size).map_err(|e| self.err("measuring size", e))
    }

    fn try_append(
        &mut self,
        records: &[Record],
        encoded: &[Vec<u8>],
        state: &[(String, Vec<u8>)],
    ) -> Result<Vec<i64>, AppendError> {
        let now = (self.clock)();
        let incoming: u64 = encoded
            .iter()
            .map(|p| p.len() as u64 + evict::ROW_OVERHEAD_BYTES)
            .sum();
        let limit = self.effective_limit();
        let page_size = self.page_size;
        let policy = self.policy;
        let age_cutoff = match self.max_age_us {
            Some(age) if now >= self.next_age_check_us => Some(now - age),
            _ => None,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| AppendError::Sqlite("beginning a transaction", e))?;
        let mut aged = Evicted::default();
        if let Some(cutoff) = age_cutoff {
            let before = pending_per_upstream(&tx, &self.upstreams)
                .map_err(|e| AppendError::Sqlite("counting pending records", e))?;
            aged = evict::evict_expired(&tx, cutoff)
                .map_err(|e| AppendError::Sqlite("evicting expired records", e))?;
            if aged.total() > 0 {
                count_unsent_evictions(&tx, &self.upstreams, &before)
                    .map_err(|e| AppendError::Sqlite("counting evictions", e))?;
            }
        }
        let used = evict::used_bytes(&tx, page_size)
            .map_err(|e| AppendError::Sqlite("measuring size", e))?;
        let file = evict::file_bytes(&tx, page_size)
            .map_err(|e| AppendError::Sqlite("measuring size", e))?;
        // Evict before the disk fills, not after: a full disk can leave SQLite unable
        // to checkpoint its WAL or even to delete. Free pages inside the file are room.
        // An eviction round deletes in this one transaction, and its pages go to the
        // WAL first: on a tight disk the round must fit in what is free, or it can
        // never commit and the outbox neither evicts nor accepts (the one-hour worst
        // day stopped so, twice: 2 % of a 730 MB file is 15 MB, the reserve 6 MB).
        let mut round_cap = u64::MAX;
        let limit = match evict::disk_space(&self.path) {
            Some((free, total)) => {
                if free < evict::TIGHT_DISK_BYTES {
                    round_cap = (free / 4).max(64 * 1024);
                }
                let tight = free < evict::TIGHT_DISK_BYTES;
                if tight != self.tight_wal {
                    // A small WAL on a tight disk, so the reserve suffices.
                    let pages = if tight { 64 } else { 1000 };
                    let _ = tx.pragma_update(None, "wal_autocheckpoint", pages);
                    self.tight_wal = tight;
                }
                limit.min(evict::disk_room_limit(file, free, total))
            }
            None => limit,
        };
        self.room_limit_bytes = Some(limit);
        let mut keep = vec![true; records.len()];
        let mut dropped = Evicted::default();
        let mut sized = Evicted::default();
        if used + incoming > limit {
            if policy == FullPolicy::Block {
                return Err(AppendError::Full(format!(
                    "{used} of {limit} bytes used, a batch of {} records needs about {incoming} more \
                     (full_policy = block)",
                    records.len()
                )));
            }
            // Hysteresis: free 2 % more than needed so eviction runs in rounds, not
            // on every batch. Records of a priority make room only for incoming
            // records at least as important: the readings of a batch never evict an
            // alert, even when the batch carries an alert too.
            let avg_row = (incoming / records.len() as u64).max(48);
            let mut levels: Vec<u8> = records.iter().map(|r| r.kind().priority()).collect();
            levels.sort_unstable();
            levels.dedup();
            let lowest = levels.first().copied().unwrap_or(0);
            let before = pending_per_upstream(&tx, &self.upstreams)
                .map_err(|e| AppendError::Sqlite("counting pending records", e))?;
            for p in levels {
                let need: u64 = records
                    .iter()
                    .zip(encoded)
                    .filter(|(r, _)| r.kind().priority() >= p)
                    .map(|(_, e)| e.len() as u64 + evict::ROW_OVERHEAD_BYTES)
                    .sum();
                // The slack only for the batch's least important records: room freed
                // by evicting alerts is not left over for the batch's readings.
                let slack = if p == lowest {
                    (limit / 50).min(round_cap)
                } else {
                    0
                };
                let target = limit.saturating_sub(need + slack);
                let round = evict::evict_for_space(&tx, page_size, target, avg_row, p)
                    .map_err(|e| AppendError::Sqlite("evicting for space", e))?;
                sized.merge(&round);
            }
            if sized.total() > 0 {
                count_unsent_evictions(&tx, &self.upstreams, &before)
                    .map_err(|e| AppendError::Sqlite("counting evictions", e))?;
            }
            let used = evict::used_bytes(&tx, page_size)
                .map_err(|e| AppendError::Sqlite("measuring size", e))?;
            if used + incoming > limit {
                // Still no room (what is left is more important than the batch, or
                // the disk is that full): keep the batch's most important records
                // that fit, newest first within a kind, and count the rest.
                let mut order: Vec<usize> = (0..records.len()).collect();
                order.sort_by_key(|&i| {
                    (
                        std::cmp::Reverse(records[i].kind().priority()),
                        std::cmp::Reverse(i),
                    )
                });
                let room = limit.saturating_sub(used);
                let mut need = 0u64;
                for i in order {
                    let size = encoded[i].len() as u64 + evict::ROW_OVERHEAD_BYTES;
                    if need + size <= room {
                        need += size;
                    } else {
                        keep[i] = false;
                        dropped.add(records[i].kind());
                    }
                }
                if keep.iter().all(|k| !k) {
                    return Err(AppendError::Full(format!(
                        "{used} of {limit} bytes used after evicting everything the batch may \
                         evict; not one of its {} records fits",
                        records.len()
                    )));
                }
            }
        }
        let mut ids = Vec::with_capacity(records.len());
        let mut duplicates = 0i64;
        {
            // A reading already in the outbox (same sensor and timestamp: a
            // redelivered input) is skipped, not stored twice.
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO records(kind, priority, created_us, ts_us, payload, sensor_key)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                )
                .map_err(|e| AppendError::Sqlite("preparing insert", e))?;
            for ((record, payload), keep) in records.iter().zip(encoded).zip(&keep) {
                if !keep {
                    continue;
                }
                let kind = record.kind();
                // Unique per (sensor_key, ts_us) for readings (migration 3).
                let sensor_key = match record {
                    Record::Reading(r) => Some(sensor_key(&r.sensor_id)),
                    _ => None,
                };
                let inserted = stmt
                    .execute(params![
                        kind as u8,
                        kind.priority(),
                        now,
                        record.ts_us(),
                        payload,
                        sensor_key
                    ])
                    .map_err(|e| AppendError::Sqlite("inserting records", e))?;
                if inserted == 0 {
                    duplicates += 1;
                } else {
                    ids.push(tx.last_insert_rowid());
                }
            }
        }
        evict::add_counter(&tx, "appended", ids.len() as i64)
            .map_err(|e| AppendError::Sqlite("counting appended records", e))?;
        if duplicates > 0 {
            evict::add_counter(&tx, "duplicate_readings_skipped", duplicates)
                .map_err(|e| AppendError::Sqlite("counting duplicates", e))?;
            tracing::info!(
                path = %self.path.display(),
                skipped = duplicates,
                "Readings already in the outbox were not stored again (redelivered input)."
            );
        }
        evict::count(&tx, "evicted_age", &aged)
            .map_err(|e| AppendError::Sqlite("counting evictions", e))?;
        evict::count(&tx, "evicted_size", &sized)
            .map_err(|e| AppendError::Sqlite("counting evictions", e))?;
        evict::count(&tx, "dropped_incoming", &dropped)
            .map_err(|e| AppendError::Sqlite("counting dropped records", e))?;
        put_states(&tx, state).map_err(|e| AppendError::Sqlite("writing state", e))?;
        tx.commit()
            .map_err(|e| AppendError::Sqlite("committing", e))?;
        if age_cutoff.is_some() {
            self.next_age_check_us = now + AGE_CHECK_INTERVAL_US;
        }
        aged.log(&self.path, "max_age_hours");
        sized.log(&self.path, "max_size_mb");
        dropped.log_dropped(&self.path);
        Ok(ids)
    }
}

/// Upserts state table entries (in order: a later entry for a key wins).
fn put_states(conn: &Connection, state: &[(String, Vec<u8>)]) -> rusqlite::Result<()> {
    if state.is_empty() {
        return Ok(());
    }
    let now = now_us();
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO state(key, value, updated_us) VALUES (?1, ?2, ?3)",
    )?;
    for (key, value) in state {
        stmt.execute(params![key, value, now])?;
    }
    Ok(())
}

/// Records each upstream has not acknowledged yet (by its cursor).
fn pending_per_upstream(conn: &Connection, upstreams: &[String]) -> rusqlite::Result<Vec<i64>> {
    upstreams
        .iter()
        .map(|u| {
            conn.query_row(
                "SELECT count(*) FROM records WHERE id > coalesce(
                    (SELECT acked_id FROM cursors WHERE upstream = ?1), 0)",
                [u],
                |r| r.get(0),
            )
        })
        .collect()
}

/// After an eviction round: how many of the evicted records each upstream had not
/// received, persisted as `unsent_evicted:<upstream>` (what the delivery balance on
/// `/metrics` needs: appended = delivered + pending + dead-lettered + evicted unsent).
fn count_unsent_evictions(
    conn: &Connection,
    upstreams: &[String],
    before: &[i64],
) -> rusqlite::Result<()> {
    let after = pending_per_upstream(conn, upstreams)?;
    for ((u, b), a) in upstreams.iter().zip(before).zip(after) {
        evict::add_counter(conn, &format!("unsent_evicted:{u}"), (b - a).max(0))?;
    }
    Ok(())
}

enum AppendError {
    Full(String),
    Sqlite(&'static str, rusqlite::Error),
}

impl AppendError {
    fn into_outbox(self, path: &Path) -> OutboxError {
        match self {
            AppendError::Full(detail) => OutboxError::Full {
                path: path.to_path_buf(),
                detail,
            },
            AppendError::Sqlite(context, e) => sql_err(path, context, e),
        }
    }
}

/// The key of a reading's sensor in the uniqueness index: FNV-1a 64 of the sensor
/// id, as a signed SQLite integer. Stable across versions and platforms (it is
/// stored): never change.
pub(crate) fn sensor_key(sensor_id: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sensor_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}
