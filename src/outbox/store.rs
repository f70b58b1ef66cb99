//! The outbox store: a synchronous API over one rusqlite connection.
//!
//! Owns the `records`, `cursors`, `dead_letters`, `counters`, `meta` and `state`
//! tables. Every call is short and blocking; async callers go through
//! [`super::OutboxHandle`] (spawn_blocking), never call it on a runtime thread.
//! Must not know any upstream wire format.

use super::encode;
use super::error::OutboxError;
use super::evict;
use super::schema::{self, is_disk_full, sql_err, OpenCheck, OpenFailure};
use super::settings::{FullPolicy, OutboxSettings, SyncMode};
use crate::record::{now_us, RecordKind, StoredRecord, TimestampUs};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};

mod append;
mod dead;

pub use dead::DeadLetter;

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
    /// `outbox.synchronous`, set again after the clean-shutdown marker is removed.
    pub(crate) sync: SyncMode,
    /// What the open did about integrity (whole-file check or skipped).
    pub(crate) open_check: OpenCheck,
    /// A clean shutdown is marked in the file: the next write removes the mark first.
    pub(crate) clean_marked: std::sync::atomic::AtomicBool,
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
        schema::forget_corruption(path);
        let (conn, check) = match schema::open_checked(path, settings.synchronous) {
            Ok(opened) => opened,
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
                    Ok(opened) => opened,
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
        outbox.open_check = check;
        outbox.sync = settings.synchronous;
        tracing::debug!(path = %path.display(), check = ?check, "Outbox opened.");
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
            sync: SyncMode::default(),
            open_check: OpenCheck::NotChecked,
            clean_marked: std::sync::atomic::AtomicBool::new(false),
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

    /// Every write starts here: refuses on a read-only connection, and withdraws a
    /// clean-shutdown mark first (durably), so the mark never outlives a write.
    pub(crate) fn writable(&self) -> Result<(), OutboxError> {
        if self.read_only {
            return Err(OutboxError::ReadOnly {
                path: self.path.clone(),
            });
        }
        if self.clean_marked.load(std::sync::atomic::Ordering::Relaxed) {
            schema::clear_clean_close(&self.conn)
                .and_then(|()| {
                    self.conn
                        .pragma_update(None, "synchronous", self.sync.pragma_value())
                })
                .map_err(|e| self.err("clearing the clean-close marker", e))?;
            self.clean_marked
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// What the open did about the file's integrity: [`OpenCheck::Full`] (the whole
    /// file was checked), [`OpenCheck::SkippedAfterCleanClose`], or
    /// [`OpenCheck::NotChecked`] for the CLI's opens.
    pub fn open_check(&self) -> OpenCheck {
        self.open_check
    }

    /// Marks a clean shutdown, so the next [`Outbox::open`] skips the whole-file
    /// integrity check. Call it when everything that writes to the outbox has stopped
    /// (the daemon does, at the end of its stop). The outbox stays usable: a later
    /// write withdraws the mark first. Returns `false`, marking nothing, when
    /// SQLITE_CORRUPT was seen on this file since it was opened: the next open then
    /// checks the whole file (and moves it aside).
    pub fn mark_clean_shutdown(&mut self) -> Result<bool, OutboxError> {
        self.writable()?;
        if schema::corruption_seen(&self.path) {
            tracing::warn!(
                path = %self.path.display(),
                "Outbox corruption was seen during this run: not marking a clean \
                 shutdown, so the next start checks the whole file."
            );
            return Ok(false);
        }
        schema::mark_clean_close(&self.conn)
            .map_err(|e| self.err("marking a clean shutdown", e))?;
        self.clean_marked
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
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
                .query_map(params![cursor, limit, upstream], raw_row)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| self.err("peeking", e))?;
            rows
        };
        self.decode_rows(upstream, rows)
    }

    /// Up to `n` alerts after `upstream`'s cursor, oldest first (skipping its dead
    /// letters), for an upstream that takes nothing else (a local notification sink),
    /// and how far the look went: every record up to that id that is not among the
    /// alerts returned is of no interest to `upstream`, and its cursor may pass it.
    /// That is the newest id when fewer than `n` alerts came back, else the last
    /// alert's. The alerts are found through the eviction index (`priority`), so
    /// the cost does not grow with the readings between them.
    pub fn peek_alerts(
        &self,
        upstream: &str,
        n: usize,
    ) -> Result<(Vec<StoredRecord>, i64), OutboxError> {
        self.check_upstream(upstream)?;
        let cursor = self.cursor(upstream)?.unwrap_or(0);
        // The newest id first: whatever is appended after this read is looked at
        // next time, never passed over.
        let newest: i64 = self
            .conn
            .query_row(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'records'), 0)",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err("reading the newest id", e))?;
        let limit = n.clamp(1, i64::MAX as usize) as i64;
        let prio = RecordKind::Alert.priority();
        let rows = {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT id, kind, created_us, payload, key FROM records r
                     WHERE priority = ?4 AND priority > 0 AND id > ?1 AND id <= ?5 AND kind = ?6
                     AND NOT EXISTS
                        (SELECT 1 FROM dead_letters d WHERE d.upstream = ?3 AND d.id = r.id)
                     ORDER BY id LIMIT ?2",
                )
                .map_err(|e| self.err("preparing peek", e))?;
            let rows = stmt
                .query_map(
                    params![
                        cursor,
                        limit,
                        upstream,
                        prio,
                        newest,
                        RecordKind::Alert as u8
                    ],
                    raw_row,
                )
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| self.err("peeking", e))?;
            rows
        };
        let scanned_to = if rows.len() as i64 >= limit {
            rows.last().map_or(cursor, |r| r.0)
        } else {
            newest.max(cursor)
        };
        Ok((self.decode_rows(upstream, rows)?, scanned_to))
    }

    /// Decodes peeked rows; a payload that cannot be decoded is dead-lettered for
    /// `upstream` (logged) instead of blocking its queue.
    fn decode_rows(
        &self,
        upstream: &str,
        rows: Vec<RawRow>,
    ) -> Result<Vec<StoredRecord>, OutboxError> {
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
        self.ack_with_state(upstream, up_to_id, None)
    }

    /// [`Outbox::ack`], and a state entry written in the same transaction: a sink
    /// whose decisions depend on what it already sent (a notification sink's
    /// episodes) keeps that memory exactly in step with its cursor.
    pub fn ack_with_state(
        &mut self,
        upstream: &str,
        up_to_id: i64,
        state: Option<(&str, &[u8])>,
    ) -> Result<(), OutboxError> {
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
        if let Some((key, value)) = state {
            tx.execute(
                "INSERT OR REPLACE INTO state(key, value, updated_us) VALUES (?1, ?2, ?3)",
                params![key, value, now],
            )
            .map_err(|e| sql_err(&self.path, "writing state with an ack", e))?;
        }
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

    /// Removes a key of the key-value state table (nothing when it is not there).
    pub fn delete_state(&mut self, key: &str) -> Result<(), OutboxError> {
        self.writable()?;
        self.conn
            .execute("DELETE FROM state WHERE key = ?1", params![key])
            .map(|_| ())
            .map_err(|e| self.err("deleting state", e))
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

/// A record row as selected for peeking and dumping: id, kind, created_us,
/// payload, key.
pub(super) type RawRow = (i64, i64, i64, Vec<u8>, Option<String>);

/// Reads a [`RawRow`] (`SELECT id, kind, created_us, payload, key`).
pub(super) fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

/// Cursors named so take alerts only (local notification sinks, `crate::notify`):
/// no other record waits for them.
pub const ALERTS_ONLY_PREFIX: &str = "notify:";

/// Deletes what every upstream that needs it has acknowledged: an alert once every
/// cursor passed it, any other record once every cursor but the alerts-only ones
/// did. So a notification receiver that is down for days holds back its alerts,
/// never the readings the cloud already has. The records an alerts-only cursor
/// had not reached yet count as delivered for it (of no interest), which keeps its
/// balance (appended = delivered + pending + dead-lettered + evicted unsent).
/// With no upstream but alerts-only ones, nothing is deleted here (as with none).
fn purge(conn: &Connection, upstreams: &[String]) -> rusqlite::Result<usize> {
    let mut cursors = Vec::with_capacity(upstreams.len());
    for u in upstreams {
        let c: Option<i64> = conn
            .query_row(
                "SELECT acked_id FROM cursors WHERE upstream = ?1",
                [u],
                |r| r.get(0),
            )
            .optional()?;
        cursors.push((u.as_str(), c.unwrap_or(0)));
    }
    let is_alerts_only = |u: &str| u.starts_with(ALERTS_ONLY_PREFIX);
    let Some(others) = cursors
        .iter()
        .filter(|(u, _)| !is_alerts_only(u))
        .map(|(_, c)| *c)
        .min()
    else {
        return Ok(0);
    };
    let all = cursors.iter().map(|(_, c)| *c).min().unwrap_or(0);
    if others <= 0 {
        return Ok(0);
    }
    let alert = RecordKind::Alert as u8;
    for (u, c) in cursors
        .iter()
        .filter(|(u, c)| is_alerts_only(u) && *c < others)
    {
        let passed: i64 = conn.query_row(
            "SELECT count(*) FROM records WHERE id > ?1 AND id <= ?2 AND kind != ?3",
            params![c, others, alert],
            |r| r.get(0),
        )?;
        evict::add_counter(conn, &format!("delivered:{u}"), passed)?;
    }
    conn.execute(
        "DELETE FROM records WHERE id <= ?1 AND (kind != ?2 OR id <= ?3)",
        params![others, alert, all],
    )
}
