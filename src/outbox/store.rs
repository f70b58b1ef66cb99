//! The outbox store: a synchronous API over one rusqlite connection.
//!
//! Owns the `records`, `cursors`, `dead_letters`, `counters`, `meta` and `state`
//! tables. Every call is short and blocking; async callers go through
//! [`super::OutboxHandle`] (spawn_blocking), never call it on a runtime thread.
//! Must not know any upstream wire format.

use super::encode;
use super::error::OutboxError;
use super::evict::{self, Evicted};
use super::schema::{self, is_disk_full, sql_err, OpenFailure};
use super::settings::{FullPolicy, OutboxSettings};
use crate::record::{now_us, Record, RecordKind, StoredRecord, TimestampUs};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};

/// How often (at most) the age bound is enforced on append.
const AGE_CHECK_INTERVAL_US: i64 = 60 * 1_000_000;
/// How long a size bound learned from a full disk holds before the configured one is
/// tried again.
const DISK_LIMIT_RETRY_US: i64 = 10 * 60 * 1_000_000;

/// The store-and-forward outbox. See docs/outbox.md for the schema and semantics.
pub struct Outbox {
    pub(crate) conn: Connection,
    /// The database file, for every error message.
    pub(crate) path: PathBuf,
    /// `<gateway_id>:<epoch>:`, the derived part of every record key.
    pub(crate) key_prefix: String,
    /// Random per database; part of every key so a fresh database never reuses one.
    pub(crate) epoch: String,
    pub(crate) gateway_id: String,
    /// Upstreams whose cursors hold records back. Empty: records stay until evicted.
    pub(crate) upstreams: Vec<String>,
    pub(crate) policy: FullPolicy,
    /// `max_size_mb` in bytes.
    pub(crate) limit_bytes: u64,
    /// Set after SQLITE_FULL: the disk holds no more than this, so the size bound is
    /// tightened to it for `DISK_LIMIT_RETRY_US`, then the configured bound is retried.
    pub(crate) disk_limit_bytes: Option<u64>,
    pub(crate) disk_limit_since_us: TimestampUs,
    /// The bound the last append worked with (configured, free disk, full disk):
    /// what `stats` reports as the limit.
    pub(crate) room_limit_bytes: Option<u64>,
    /// The WAL is checkpointed every 64 pages while the disk is tight.
    pub(crate) tight_wal: bool,
    /// The last append was refused as full (the writer is holding a batch).
    pub(crate) refused_full: bool,
    pub(crate) max_age_us: Option<i64>,
    pub(crate) next_age_check_us: i64,
    pub(crate) page_size: u64,
    pub(crate) read_only: bool,
    /// Time source; replaced in tests of the age bound.
    pub(crate) clock: fn() -> TimestampUs,
}

/// One entry of the dead-letter table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeadLetter {
    /// Id the record had in the outbox.
    pub id: i64,
    pub upstream: String,
    pub key: String,
    pub kind: Option<RecordKind>,
    pub created_us: TimestampUs,
    /// When it was dead-lettered.
    pub dead_us: TimestampUs,
    pub reason: String,
    /// The record, or `None` when its payload cannot be decoded.
    pub record: Option<Record>,
}

impl Outbox {
    /// Opens (or creates) the gateway's outbox.
    ///
    /// A corrupt file, or one that is not a database, is moved aside to
    /// `<name>.corrupt-<UTC timestamp>` together with its `-wal`/`-shm`, logged with
    /// `tracing::error!`, and a fresh outbox (new epoch) is created. Cursors of
    /// `upstreams` not seen before start at the oldest record present, so a newly
    /// added upstream receives the backlog. Cursors of upstreams not in `upstreams`
    /// are kept but ignored.
    pub fn open(
        path: &Path,
        settings: &OutboxSettings,
        gateway_id: &str,
        upstreams: &[&str],
    ) -> Result<Outbox, OutboxError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OutboxError::Io {
                path: dir.to_path_buf(),
                context: "creating the outbox directory",
                source,
            })?;
        }
        let conn = match schema::open_checked(path, settings.synchronous) {
            Ok(conn) => conn,
            Err(OpenFailure::Other(e)) => return Err(e),
            Err(OpenFailure::Corrupt(detail)) => {
                let moved = schema::move_aside(path)?;
                tracing::error!(
                    path = %path.display(),
                    moved_to = %moved.display(),
                    problem = %detail,
                    "OUTBOX DATABASE IS CORRUPT: moved it aside and started a fresh, empty \
                     outbox. Records in the old file were not forwarded; inspect or \
                     recover them from the moved file."
                );
                match schema::open_checked(path, settings.synchronous) {
                    Ok(conn) => conn,
                    Err(OpenFailure::Other(e)) => return Err(e),
                    Err(OpenFailure::Corrupt(detail)) => {
                        return Err(OutboxError::Corrupt {
                            path: path.to_path_buf(),
                            detail: format!("fresh database is corrupt too: {detail}"),
                        })
                    }
                }
            }
        };
        let mut outbox = Outbox::from_conn(conn, path, false)?;
        outbox.policy = settings.full_policy;
        outbox.limit_bytes = settings.max_size_bytes();
        outbox.max_age_us = settings
            .max_age_hours
            .map(|h| (h as i64).saturating_mul(3600 * 1_000_000));
        outbox.init_meta(gateway_id)?;
        outbox.upstreams = upstreams.iter().map(|u| u.to_string()).collect();
        outbox.init_cursors()?;
        outbox.purge_acked()?;
        Ok(outbox)
    }

    /// Opens an existing outbox read-only, e.g. the CLI on a running gateway's file
    /// (WAL lets it read while the gateway writes). Never creates or repairs.
    pub fn open_read_only(path: &Path) -> Result<Outbox, OutboxError> {
        let conn = schema::open_existing(path, true)?;
        Outbox::from_conn(conn, path, true)
    }

    /// Opens an existing outbox read-write without creating, checking or repairing it
    /// and without configuring upstreams: for CLI maintenance (requeue) next to a
    /// running gateway. Appends and acks are serialised by SQLite's lock.
    pub fn open_existing(path: &Path) -> Result<Outbox, OutboxError> {
        let conn = schema::open_existing(path, false)?;
        Outbox::from_conn(conn, path, false)
    }

    fn from_conn(conn: Connection, path: &Path, read_only: bool) -> Result<Outbox, OutboxError> {
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| sql_err(path, "reading page_size", e))?;
        let mut outbox = Outbox {
            conn,
            path: path.to_path_buf(),
            key_prefix: String::new(),
            epoch: String::new(),
            gateway_id: String::new(),
            upstreams: Vec::new(),
            policy: FullPolicy::DropOldest,
            limit_bytes: OutboxSettings::default().max_size_bytes(),
            disk_limit_bytes: None,
            disk_limit_since_us: 0,
            room_limit_bytes: None,
            tight_wal: false,
            refused_full: false,
            max_age_us: None,
            next_age_check_us: 0,
            page_size: page_size.max(512) as u64,
            read_only,
            clock: now_us,
        };
        if read_only || outbox.get_meta("epoch")?.is_some() {
            outbox.load_identity()?;
        }
        Ok(outbox)
    }

    fn get_meta(&self, key: &str) -> Result<Option<String>, OutboxError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err("reading meta", e))
    }

    fn load_identity(&mut self) -> Result<(), OutboxError> {
        self.epoch = self.get_meta("epoch")?.unwrap_or_default();
        self.gateway_id = self.get_meta("gateway_id")?.unwrap_or_default();
        self.key_prefix = format!("{}:{}:", self.gateway_id, self.epoch);
        {
            // Until `open` sets the configured list, every cursor row counts (CLI).
            let mut stmt = self
                .conn
                .prepare("SELECT upstream FROM cursors ORDER BY upstream")
                .map_err(|e| self.err("reading cursors", e))?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| sql_err(&self.path, "reading cursors", e))?;
            drop(stmt);
            self.upstreams = names;
        }
        Ok(())
    }

    fn init_meta(&mut self, gateway_id: &str) -> Result<(), OutboxError> {
        let epoch = format!(
            "{:016x}",
            fastrand::u64(..) ^ (now_us() as u64).rotate_left(17)
        );
        let now = now_us().to_string();
        let previous = self.get_meta("gateway_id")?;
        if let Some(prev) = previous.as_deref().filter(|p| *p != gateway_id) {
            tracing::warn!(
                path = %self.path.display(),
                previous = prev,
                gateway_id,
                "Gateway id changed: keys of records still in the outbox change with it, \
                 so upstreams may store those records a second time."
            );
        }
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.err("writing meta", e))?;
        let res = (|| {
            self.conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('epoch', ?1)",
                [&epoch],
            )?;
            self.conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('created_us', ?1)",
                [&now],
            )?;
            self.conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('gateway_id', ?1)",
                [gateway_id],
            )?;
            self.conn.execute_batch("COMMIT")
        })();
        if let Err(e) = res {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(self.err("writing meta", e));
        }
        self.load_identity()
    }

    fn init_cursors(&mut self) -> Result<(), OutboxError> {
        let now = now_us();
        for upstream in &self.upstreams {
            let added = self
                .conn
                .execute(
                    "INSERT OR IGNORE INTO cursors(upstream, acked_id, updated_us)
                     VALUES (?1, coalesce((SELECT min(id) - 1 FROM records),
                                          (SELECT seq FROM sqlite_sequence WHERE name = 'records'),
                                          0), ?2)",
                    params![upstream, now],
                )
                .map_err(|e| sql_err(&self.path, "creating a cursor", e))?;
            if added > 0 {
                tracing::info!(
                    path = %self.path.display(),
                    upstream = upstream.as_str(),
                    "New upstream: its cursor starts at the oldest record in the outbox."
                );
            }
        }
        Ok(())
    }

    pub(crate) fn err(&self, context: &'static str, e: rusqlite::Error) -> OutboxError {
        sql_err(&self.path, context, e)
    }

    fn writable(&self) -> Result<(), OutboxError> {
        if self.read_only {
            Err(OutboxError::ReadOnly {
                path: self.path.clone(),
            })
        } else {
            Ok(())
        }
    }

    fn check_upstream(&self, upstream: &str) -> Result<(), OutboxError> {
        if self.upstreams.iter().any(|u| u == upstream) {
            Ok(())
        } else {
            Err(OutboxError::UnknownUpstream {
                path: self.path.clone(),
                upstream: upstream.to_string(),
                configured: self.upstreams.join(", "),
            })
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The random id of this database, part of every record key.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The key of the record with `id`: `<gateway_id>:<epoch>:<id>`.
    pub fn key_for(&self, id: i64) -> String {
        format!("{}{}", self.key_prefix, id)
    }

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
        let limit = match evict::disk_space(&self.path) {
            Some((free, total)) => {
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
                let slack = if p == lowest { limit / 50 } else { 0 };
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

    /// Up to `n` records after `upstream`'s cursor, oldest first, skipping records
    /// dead-lettered for that upstream. A record whose payload cannot be decoded is
    /// dead-lettered for `upstream` (logged) instead of blocking the queue.
    pub fn peek(&self, upstream: &str, n: usize) -> Result<Vec<StoredRecord>, OutboxError> {
        self.check_upstream(upstream)?;
        let cursor = self.cursor(upstream)?.unwrap_or(0);
        let limit = n.min(i64::MAX as usize) as i64;
        let has_dead: bool = self
            .conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM dead_letters WHERE upstream = ?1 AND id > ?2)",
                params![upstream, cursor],
                |r| r.get(0),
            )
            .map_err(|e| self.err("reading dead letters", e))?;
        let sql = if has_dead {
            "SELECT id, kind, created_us, payload, key FROM records r
             WHERE id > ?1 AND NOT EXISTS
                (SELECT 1 FROM dead_letters d WHERE d.upstream = ?3 AND d.id = r.id)
             ORDER BY id LIMIT ?2"
        } else {
            "SELECT id, kind, created_us, payload, key FROM records
             WHERE id > ?1 AND ?3 IS NOT NULL ORDER BY id LIMIT ?2"
        };
        let rows = {
            let mut stmt = self
                .conn
                .prepare_cached(sql)
                .map_err(|e| self.err("preparing peek", e))?;
            let rows = stmt
                .query_map(params![cursor, limit, upstream], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| self.err("peeking", e))?;
            rows
        };
        let mut out = Vec::with_capacity(rows.len());
        for (id, kind, created_us, payload, key) in rows {
            match encode::decode(kind, &payload) {
                Ok(record) => out.push(StoredRecord {
                    id,
                    key: key.unwrap_or_else(|| self.key_for(id)),
                    created_us,
                    record,
                }),
                Err(detail) => {
                    tracing::error!(
                        path = %self.path.display(),
                        id,
                        upstream,
                        problem = %detail,
                        "Outbox record cannot be decoded: dead-lettered for this upstream."
                    );
                    if self.read_only {
                        return Err(OutboxError::Decode {
                            path: self.path.clone(),
                            id,
                            detail,
                        });
                    }
                    self.insert_dead_letter(
                        upstream,
                        id,
                        &format!("undecodable payload: {detail}"),
                    )?;
                }
            }
        }
        Ok(out)
    }

    /// The cursor of `upstream`: every id <= it is done for that upstream.
    pub fn cursor(&self, upstream: &str) -> Result<Option<i64>, OutboxError> {
        self.conn
            .query_row(
                "SELECT acked_id FROM cursors WHERE upstream = ?1",
                [upstream],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err("reading a cursor", e))
    }

    /// Marks everything up to `up_to_id` as delivered to `upstream` (never moves the
    /// cursor back, never past the newest id), then deletes records that every
    /// configured upstream has acknowledged. With no upstreams configured nothing is
    /// deleted here; records stay until the bounds evict them.
    pub fn ack(&mut self, upstream: &str, up_to_id: i64) -> Result<(), OutboxError> {
        self.writable()?;
        self.check_upstream(upstream)?;
        let now = now_us();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_err(&self.path, "beginning a transaction", e))?;
        let old: i64 = tx
            .query_row(
                "SELECT acked_id FROM cursors WHERE upstream = ?1",
                [upstream],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| sql_err(&self.path, "reading a cursor", e))?
            .unwrap_or(0);
        tx.execute(
            "UPDATE cursors SET
                acked_id = max(acked_id, min(?2, coalesce((SELECT seq FROM sqlite_sequence
                                                           WHERE name = 'records'), 0))),
                updated_us = ?3
             WHERE upstream = ?1",
            params![upstream, up_to_id, now],
        )
        .map_err(|e| sql_err(&self.path, "moving a cursor", e))?;
        // Delivered: the records the cursor passed, but for this upstream's dead
        // letters (counted apart); persisted so the balance survives restarts.
        let delivered: i64 = tx
            .query_row(
                "SELECT count(*) FROM records r
                 WHERE r.id > ?2 AND r.id <= (SELECT acked_id FROM cursors WHERE upstream = ?1)
                 AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.upstream = ?1 AND d.id = r.id)",
                params![upstream, old],
                |r| r.get(0),
            )
            .map_err(|e| sql_err(&self.path, "counting delivered records", e))?;
        evict::add_counter(&tx, &format!("delivered:{upstream}"), delivered)
            .map_err(|e| sql_err(&self.path, "counting delivered records", e))?;
        purge(&tx, &self.upstreams)
            .map_err(|e| sql_err(&self.path, "deleting acknowledged records", e))?;
        tx.commit()
            .map_err(|e| sql_err(&self.path, "committing an ack", e))
    }

    fn purge_acked(&mut self) -> Result<(), OutboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_err(&self.path, "beginning a transaction", e))?;
        purge(&tx, &self.upstreams)
            .map_err(|e| sql_err(&self.path, "deleting acknowledged records", e))?;
        tx.commit()
            .map_err(|e| sql_err(&self.path, "committing", e))
    }

    /// Moves record `id` to the dead-letter table for `upstream` with `reason` (a copy
    /// of the payload is kept). It is no longer returned by `peek` for that upstream,
    /// so the upstream's cursor can pass it; other upstreams still get it.
    pub fn dead_letter(
        &mut self,
        upstream: &str,
        id: i64,
        reason: &str,
    ) -> Result<(), OutboxError> {
        self.writable()?;
        self.check_upstream(upstream)?;
        self.insert_dead_letter(upstream, id, reason)
    }

    fn insert_dead_letter(&self, upstream: &str, id: i64, reason: &str) -> Result<(), OutboxError> {
        let changed = self
            .conn
            .execute(
                "INSERT OR REPLACE INTO dead_letters
                    (upstream, id, key, kind, created_us, ts_us, payload, reason, dead_us)
                 SELECT ?1, id, coalesce(key, ?4 || id), kind, created_us, ts_us, payload, ?3, ?5
                 FROM records WHERE id = ?2",
                params![upstream, id, reason, self.key_prefix, now_us()],
            )
            .map_err(|e| self.err("dead-lettering a record", e))?;
        if changed == 0 {
            return Err(OutboxError::NoSuchRecord {
                path: self.path.clone(),
                id,
            });
        }
        evict::add_counter(&self.conn, &format!("dead_lettered:{upstream}"), 1)
            .map_err(|e| self.err("counting dead letters", e))?;
        tracing::warn!(
            path = %self.path.display(),
            upstream,
            id,
            reason,
            "Record dead-lettered."
        );
        Ok(())
    }

    /// Dead letters, oldest first, of one upstream or all.
    pub fn dead_letters(
        &self,
        upstream: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, OutboxError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, upstream, key, kind, created_us, dead_us, reason, payload
                 FROM dead_letters WHERE ?1 IS NULL OR upstream = ?1
                 ORDER BY dead_us, id LIMIT ?2",
            )
            .map_err(|e| self.err("listing dead letters", e))?;
        let rows = stmt
            .query_map(params![upstream, limit], |r| {
                let kind: i64 = r.get(3)?;
                let payload: Vec<u8> = r.get(7)?;
                Ok(DeadLetter {
                    id: r.get(0)?,
                    upstream: r.get(1)?,
                    key: r.get(2)?,
                    kind: u8::try_from(kind).ok().and_then(RecordKind::from_u8),
                    created_us: r.get(4)?,
                    dead_us: r.get(5)?,
                    reason: r.get(6)?,
                    record: encode::decode(kind, &payload).ok(),
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err("listing dead letters", e))?;
        Ok(rows)
    }

    /// Brings dead-lettered records back; returns how many ids were found.
    ///
    /// If the original record is still ahead of the upstream's cursor, removing the
    /// dead letter is enough. Otherwise a copy is appended with a new id but its
    /// original key, and every configured upstream receives it again (their writes
    /// are idempotent on the key / `(timestamp, sensor_id)`).
    pub fn requeue(&mut self, ids: &[i64]) -> Result<usize, OutboxError> {
        self.writable()?;
        let now = now_us();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_err(&self.path, "beginning a transaction", e))?;
        let mut found = 0;
        for &id in ids {
            let rows = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT d.upstream, d.key, d.kind, d.ts_us, d.payload,
                                EXISTS(SELECT 1 FROM records r WHERE r.id = d.id)
                                  AND d.id > coalesce((SELECT acked_id FROM cursors c
                                                       WHERE c.upstream = d.upstream), 0)
                         FROM dead_letters d WHERE d.id = ?1",
                    )
                    .map_err(|e| sql_err(&self.path, "reading dead letters", e))?;
                stmt.query_map([id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        r.get::<_, bool>(5)?,
                    ))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| sql_err(&self.path, "reading dead letters", e))?
            };
            if rows.is_empty() {
                continue;
            }
            found += 1;
            if let Some((_, key, kind, ts_us, payload, _)) = rows.iter().find(|r| !r.5) {
                let priority = u8::try_from(*kind)
                    .ok()
                    .and_then(RecordKind::from_u8)
                    .map(|k| k.priority())
                    .unwrap_or(0);
                tx.execute(
                    "INSERT INTO records(kind, priority, created_us, ts_us, payload, key)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![kind, priority, now, ts_us, payload, key],
                )
                .map_err(|e| sql_err(&self.path, "requeueing a record", e))?;
                evict::add_counter(&tx, "appended", 1)
                    .map_err(|e| sql_err(&self.path, "counting a requeue", e))?;
            }
            // An upstream whose cursor has not passed the original will deliver it
            // and count it delivered: it is no longer dead-lettered for it.
            for (upstream, ..) in rows.iter().filter(|r| r.5) {
                evict::add_counter(&tx, &format!("dead_lettered:{upstream}"), -1)
                    .map_err(|e| sql_err(&self.path, "counting a requeue", e))?;
            }
            tx.execute("DELETE FROM dead_letters WHERE id = ?1", [id])
                .map_err(|e| sql_err(&self.path, "removing dead letters", e))?;
        }
        evict::add_counter(&tx, "requeued", found as i64)
            .map_err(|e| sql_err(&self.path, "counting requeues", e))?;
        tx.commit()
            .map_err(|e| sql_err(&self.path, "committing a requeue", e))?;
        if found > 0 {
            tracing::info!(path = %self.path.display(), records = found, "Dead letters requeued.");
        }
        Ok(found)
    }

    /// A value of the small key-value state table (detection baselines, ...).
    pub fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, OutboxError> {
        self.conn
            .query_row("SELECT value FROM state WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err("reading state", e))
    }

    /// Keys of the state table that start with `prefix`, sorted.
    pub fn state_keys(&self, prefix: &str) -> Result<Vec<String>, OutboxError> {
        let mut stmt = self
            .conn
            .prepare("SELECT key FROM state WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key")
            .map_err(|e| self.err("listing state", e))?;
        let rows = stmt
            .query_map([prefix], |r| r.get::<_, String>(0))
            .map_err(|e| self.err("listing state", e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err("listing state", e))
    }

    /// Stores a value in the key-value state table (replacing any previous one).
    pub fn put_state(&mut self, key: &str, value: &[u8]) -> Result<(), OutboxError> {
        self.writable()?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO state(key, value, updated_us) VALUES (?1, ?2, ?3)",
                params![key, value, now_us()],
            )
            .map(|_| ())
            .map_err(|e| {
                if is_disk_full(&e) {
                    OutboxError::Full {
                        path: self.path.clone(),
                        detail: format!("disk full writing state {key:?}: {e}"),
                    }
                } else {
                    self.err("writing state", e)
                }
            })
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

fn purge(conn: &Connection, upstreams: &[String]) -> rusqlite::Result<usize> {
    if upstreams.is_empty() {
        return Ok(0);
    }
    let mut min: Option<i64> = None;
    for u in upstreams {
        let c: Option<i64> = conn
            .query_row(
                "SELECT acked_id FROM cursors WHERE upstream = ?1",
                [u],
                |r| r.get(0),
            )
            .optional()?;
        let c = c.unwrap_or(0);
        min = Some(min.map_or(c, |m| m.min(c)));
    }
    match min {
        Some(m) if m > 0 => conn.execute("DELETE FROM records WHERE id <= ?1", [m]),
        _ => Ok(0),
    }
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
