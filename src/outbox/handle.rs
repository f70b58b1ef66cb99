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
    pub async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let mut stats = self.with(|o| o.stats_without_depth()).await?;
        let (reader, path) = (self.reader.clone(), self.path.clone());
        let scanned = tokio::task::spawn_blocking(move || {
            let mut slot = reader.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(Outbox::open_read_only(&path)?);
            }
            let r = slot.as_ref().map(|o| o.fill_depth(&mut stats));
            if let Some(Err(_)) = &r {
                // Reopen next time (a file moved aside after corruption, say).
                *slot = None;
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
