//! Dead letters: records an upstream rejected for good, moved aside so they stop
//! blocking it, listed, and requeued on request.

use super::Outbox;
use crate::outbox::encode;
use crate::outbox::error::OutboxError;
use crate::outbox::evict;
use crate::outbox::schema::sql_err;
use crate::record::{now_us, Record, RecordKind, TimestampUs};
use rusqlite::{params, TransactionBehavior};

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

    pub(super) fn insert_dead_letter(
        &self,
        upstream: &str,
        id: i64,
        reason: &str,
    ) -> Result<(), OutboxError> {
        self.writable()?;
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
}
