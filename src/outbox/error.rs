//! The outbox's error type: one variant per thing a caller handles differently.

use std::path::PathBuf;

/// Errors at the outbox boundary. Every variant names the database file.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The outbox cannot take the batch: `full_policy = "block"` and the size bound is
    /// reached, or the disk (or `max_page_count`) is full and eviction did not help.
    /// Nothing of the batch was stored; the writer waits and retries.
    #[error("outbox {path} is full: {detail}")]
    Full { path: PathBuf, detail: String },

    /// SQLite failed (I/O, locking, ...). Retrying later may help.
    #[error("outbox {path}: {context}: {source}")]
    Sqlite {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// The file system refused something around the database (directory, rename).
    #[error("outbox {path}: {context}: {source}")]
    Io {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The database was written by a newer edgegw; this one must not touch it.
    #[error(
        "outbox {path} has schema version {found}, newer than the {known} this edgegw knows; \
         upgrade edgegw or move the file away"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },

    /// The file is corrupt and was opened in a mode that must not repair it (the CLI).
    #[error("outbox {path} is corrupt ({detail}); the gateway moves it aside at its next start")]
    Corrupt { path: PathBuf, detail: String },

    /// A record of the batch cannot be encoded; nothing of the batch was stored.
    #[error("outbox {path}: record {index} of the batch cannot be encoded: {detail}")]
    Encode {
        path: PathBuf,
        index: usize,
        detail: String,
    },

    /// A stored payload cannot be decoded (written by an incompatible version, or
    /// damaged). `peek` dead-letters such records instead of returning this.
    #[error("outbox {path}: record {id} cannot be decoded: {detail}")]
    Decode {
        path: PathBuf,
        id: i64,
        detail: String,
    },

    /// A forwarder used an upstream name that was not configured when the outbox was
    /// opened: a wiring bug, reported instead of creating a stray cursor.
    #[error("outbox {path}: upstream {upstream:?} is not configured (configured: {configured})")]
    UnknownUpstream {
        path: PathBuf,
        upstream: String,
        configured: String,
    },

    /// `dead_letter` named a record that is not in the outbox (any more).
    #[error("outbox {path}: no record with id {id}")]
    NoSuchRecord { path: PathBuf, id: i64 },

    /// A write was attempted on an outbox opened read-only.
    #[error("outbox {path} is opened read-only")]
    ReadOnly { path: PathBuf },

    /// Writing CLI output failed (closed pipe, ...).
    #[error("writing outbox {what} output: {source}")]
    Output {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl OutboxError {
    /// True when the error means "no room": the writer backs off and retries.
    pub fn is_full(&self) -> bool {
        matches!(self, OutboxError::Full { .. })
    }
}
