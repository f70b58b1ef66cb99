//! [`OutboxHandle`]: the async face of the outbox for the writer and forwarders.
//!
//! The store is synchronous (rusqlite). The handle keeps it behind a `std::sync::Mutex`
//! and runs every call on tokio's blocking pool (`spawn_blocking`), so SQLite never
//! blocks a runtime thread. SQLite serialises writes anyway; the mutex only makes the
//! serialisation explicit and lets one connection (one page cache) serve everyone.

use super::error::OutboxError;
use super::stats::OutboxStats;
use super::store::Outbox;
use crate::record::{Record, StoredRecord};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// Cheap-to-clone async handle to one [`Outbox`].
#[derive(Clone)]
pub struct OutboxHandle {
    inner: Arc<Mutex<Outbox>>,
    path: Arc<PathBuf>,
    /// A read-only connection for the scans of [`OutboxHandle::stats`] (opened on
    /// first use): WAL lets it read while the writer writes, so a `/metrics` scrape
    /// with a million-record backlog never holds the shared lock for its scans.
    reader: Arc<Mutex<Option<Outbox>>>,
    /// The last scan of [`OutboxHandle::stats`], reused while fresh when scans are
    /// slow (see there).
    scan: Arc<Mutex<Option<DepthScan>>>,
}

/// What a stats scan counted, and when and how long it took.
struct DepthScan {
    at: std::time::Instant,
    took: std::time::Duration,
    depth: std::collections::BTreeMap<String, u64>,
    total: u64,
    pending: Vec<(String, u64)>,
}

/// A scan that took at least this long is reused by the stats calls that follow...
const SLOW_SCAN: std::time::Duration = std::time::Duration::from_millis(200);
/// ... for ten times its duration, at most this long.
const MAX_REUSE: std::time::Duration = std::time::Duration::from_secs(30);

impl DepthScan {
    fn fresh(&self) -> bool {
        self.took >= SLOW_SCAN && self.at.elapsed() < (self.took * 10).min(MAX_REUSE)
    }

    fn apply(&self, stats: &mut OutboxStats) {
        stats.depth.clone_from(&self.depth);
        stats.total_records = self.total;
        for u in &mut stats.upstreams {
            if let Some((_, n)) = self.pending.iter().find(|(name, _)| *name == u.name) {
                u.pending = *n;
            }
        }
    }
}

fn lock(m: &Mutex<Outbox>) -> MutexGuard<'_, Outbox> {
    // A panic while holding the lock cannot leave SQLite inconsistent (transactions
    // roll back on drop), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl OutboxHandle {
    pub fn new(outbox: Outbox) -> OutboxHandle {
        let path = Arc::new(outbox.path().to_path_buf());
        OutboxHandle {
            inner: Arc::new(Mutex::new(outbox)),
            path,
            reader: Arc::new(Mutex::new(None)),
            scan: Arc::new(Mutex::new(None)),
        }
    }

    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Runs `f` with the store on the blocking pool.
    pub async fn with<T, F>(&self, f: F) -> Result<T, OutboxError>
    where
        F: FnOnce(&mut Outbox) -> Result<T, OutboxError> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || f(&mut lock(&inner))).await {
            Ok(res) => res,
            Err(join) => Err(OutboxError::Io {
                path: self.path.as_ref().clone(),
                context: "outbox task failed",
                source: std::io::Error::other(join.to_string()),
            }),
        }
    }

    /// Runs `f` with the store on the current thread (for sync callers and tests).
    pub fn blocking<T>(&self, f: impl FnOnce(&mut Outbox) -> T) -> T {
        f(&mut lock(&self.inner))
    }

    /// [`Outbox::append`] on the blocking pool; hands the records back so the caller
    /// can retry without cloning.
    pub async fn append(
        &self,
        records: Vec<Record>,
    ) -> (Vec<Record>, Result<Vec<i64>, OutboxError>) {
        let (records, _, res) = self.append_with_state(records, Vec::new()).await;
        (records, res)
    }

    /// [`Outbox::append_with_state`] on the blocking pool; hands the records and the
    /// state back (the writer retries with them when the outbox is full).
    #[allow(clippy::type_complexity)]
    pub async fn append_with_state(
        &self,
        records: Vec<Record>,
        state: Vec<(String, Vec<u8>)>,
    ) -> (
        Vec<Record>,
        Vec<(String, Vec<u8>)>,
        Result<Vec<i64>, OutboxError>,
    ) {
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || {
            let res = lock(&inner).append_with_state(&records, &state);
            (records, state, res)
        })
        .await
        {
            Ok(out) => out,
            Err(join) => (
                Vec::new(),
                Vec::new(),
                Err(OutboxError::Io {
                    path: self.path.as_ref().clone(),
                    context: "outbox append task failed",
                    source: std::io::Error::other(join.to_string()),
                }),
            ),
        }
    }

    /// [`Outbox::mark_clean_shutdown`] on the blocking pool: the daemon's last call,
    /// after every task that writes to the outbox has ended.
    pub async fn mark_clean_shutdown(&self) -> Result<bool, OutboxError> {
        self.with(|o| o.mark_clean_shutdown()).await
    }

    /// [`Outbox::peek`] on the blocking pool.
    pub async fn peek(&self, upstream: &str, n: usize) -> Result<Vec<StoredRecord>, OutboxError> {
        let upstream = upstream.to_string();
        self.with(move |o| o.peek(&upstream, n)).await
    }

    /// [`Outbox::ack`] on the blocking pool.
    pub async fn ack(&self, upstream: &str, up_to_id: i64) -> Result<(), OutboxError> {
        let upstream = upstream.to_string();
        self.with(move |o| o.ack(&upstream, up_to_id)).await
    }

    /// [`Outbox::peek_alerts`] on the blocking pool.
    pub async fn peek_alerts(
        &self,
        upstream: &str,
        n: usize,
    ) -> Result<(Vec<StoredRecord>, i64), OutboxError> {
        let upstream = upstream.to_string();
        self.with(move |o| o.peek_alerts(&upstream, n)).await
    }

    /// [`Outbox::ack_with_state`] on the blocking pool.
    pub async fn ack_with_state(
        &self,
        upstream: &str,
        up_to_id: i64,
        state: Option<(String, Vec<u8>)>,
    ) -> Result<(), OutboxError> {
        let upstream = upstream.to_string();
        self.with(move |o| {
            let state = state.as_ref().map(|(k, v)| (k.as_str(), v.as_slice()));
            o.ack_with_state(&upstream, up_to_id, state)
        })
        .await
    }

    /// A state entry, on the blocking pool.
    pub async fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, OutboxError> {
        let key = key.to_string();
        self.with(move |o| o.get_state(&key)).await
    }

    /// [`Outbox::dead_letter`] on the blocking pool.
    pub async fn dead_letter(
        &self,
        upstream: &str,
        id: i64,
        reason: &str,
    ) -> Result<(), OutboxError> {
        let (upstream, reason) = (upstream.to_string(), reason.to_string());
        self.with(move |o| o.dead_letter(&upstream, id, &reason))
            .await
    }

    /// [`Outbox::stats`] on the blocking pool: the cheap part (counters, cursors,
    /// limits: index seeks) under the shared lock, the scans (records per kind,
    /// pending per upstream) on the read-only connection, outside it.
    ///
    /// On a large backlog the scans take seconds (four passes over 4.6 million rows
    /// took longer than `/metrics`' 5 s budget in the one-hour worst-day run, with a
    /// build beside it), and every caller (a scrape, `/readyz`, each open status
    /// page every 2 s) queued one more. So a scan that took at least [`SLOW_SCAN`] is
    /// reused for ten times its duration (at most [`MAX_REUSE`]) by the calls that
    /// follow, including those that were waiting for it: at most one scan runs at a
    /// time, and a scan that outlives its caller's timeout still serves the next
    /// one. The counts may then be that much older than the counters beside them;
    /// small outboxes scan in milliseconds and are always counted afresh.
    pub async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let mut stats = self.with(|o| o.stats_without_depth()).await?;
        let (reader, path, cache) = (self.reader.clone(), self.path.clone(), self.scan.clone());
        let scanned = tokio::task::spawn_blocking(move || {
            let mut slot = reader.lock().unwrap_or_else(|p| p.into_inner());
            let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.as_ref().filter(|c| c.fresh()) {
                c.apply(&mut stats);
                return Ok(stats);
            }
            if slot.is_none() {
                *slot = Some(Outbox::open_read_only(&path)?);
            }
            let started = std::time::Instant::now();
            let r = slot.as_ref().map(|o| o.fill_depth(&mut stats));
            match &r {
                Some(Err(_)) => {
                    // Reopen next time (a file moved aside after corruption, say).
                    *slot = None;
                    *cache = None;
                }
                Some(Ok(())) => {
                    *cache = Some(DepthScan {
                        at: std::time::Instant::now(),
                        took: started.elapsed(),
                        depth: stats.depth.clone(),
                        total: stats.total_records,
                        pending: stats
                            .upstreams
                            .iter()
                            .map(|u| (u.name.clone(), u.pending))
                            .collect(),
                    })
                }
                None => {}
            }
            r.unwrap_or(Ok(())).map(|()| stats)
        })
        .await;
        match scanned {
            Ok(r) => r,
            Err(join) => Err(OutboxError::Io {
                path: self.path.as_ref().clone(),
                context: "outbox stats task failed",
                source: std::io::Error::other(join.to_string()),
            }),
        }
    }
}

#[cfg(test)]
mod scan_tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn scan(took_ms: u64, ago_ms: u64) -> DepthScan {
        DepthScan {
            at: Instant::now() - Duration::from_millis(ago_ms),
            took: Duration::from_millis(took_ms),
            depth: [("reading".to_string(), 7)].into(),
            total: 7,
            pending: vec![("timescale".into(), 5)],
        }
    }

    #[test]
    fn only_slow_scans_are_reused_and_only_for_a_while() {
        assert!(!scan(20, 0).fresh(), "a fast scan is always redone");
        assert!(scan(1_000, 5_000).fresh(), "1 s scan: reused for 10 s");
        assert!(!scan(1_000, 11_000).fresh());
        assert!(scan(8_000, 25_000).fresh(), "capped at 30 s");
        assert!(!scan(8_000, 31_000).fresh());
    }

    #[tokio::test]
    async fn a_reused_scan_fills_depth_and_pending_by_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(
            &dir.path().join("o.db"),
            &crate::outbox::OutboxSettings::default(),
            "gw",
            &["timescale"],
        )
        .unwrap();
        let h = OutboxHandle::new(o);
        let exact = h.stats().await.unwrap();
        assert_eq!(exact.total_records, 0);
        *h.scan.lock().unwrap() = Some(scan(1_000, 0));
        let reused = h.stats().await.unwrap();
        assert_eq!(reused.total_records, 7);
        assert_eq!(reused.depth["reading"], 7);
        assert_eq!(reused.upstreams[0].pending, 5);
    }
}
