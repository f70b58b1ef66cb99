//! Opening the SQLite file: pragmas, the start-up integrity check, moving a corrupt
//! file aside, and schema migrations (`PRAGMA user_version`).
//!
//! Owns the decision "corrupt or merely failing": only SQLITE_CORRUPT, SQLITE_NOTADB
//! and a failed `quick_check` move a file aside; a permission or I/O error is returned
//! as it is, so a transient problem never costs the operator their backlog.
//!
//! Owns the clean-shutdown marker too: `PRAGMA quick_check` reads the whole file
//! (seconds for a large backlog on an SD card), so it runs only when the previous run
//! did not end with [`mark_clean_close`] — after a crash, a kill, a power cut, a
//! SQLITE_CORRUPT seen at run time, or on the first open of a file without the marker.

use super::error::OutboxError;
use super::settings::SyncMode;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Schema migrations, in order; `PRAGMA user_version` is the number applied.
/// Never edit an entry that has shipped: append a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE records (
        id         INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused, even after deletes
        kind       INTEGER NOT NULL,                  -- RecordKind as u8
        priority   INTEGER NOT NULL,                  -- RecordKind::priority(): eviction order
        created_us INTEGER NOT NULL,                  -- when it entered the outbox
        ts_us      INTEGER NOT NULL,                  -- the time the record is about
        payload    BLOB    NOT NULL,                  -- compact MessagePack of the inner record
        key        TEXT                               -- NULL: <gateway_id>:<epoch>:<id>; set on requeued copies
    );
    CREATE INDEX records_by_priority ON records(priority, id) WHERE priority > 0;
    CREATE TABLE cursors (
        upstream   TEXT PRIMARY KEY,
        acked_id   INTEGER NOT NULL,                  -- everything <= acked_id is done for this upstream
        updated_us INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE dead_letters (
        upstream   TEXT    NOT NULL,
        id         INTEGER NOT NULL,                  -- the record's id when it was dead-lettered
        key        TEXT    NOT NULL,
        kind       INTEGER NOT NULL,
        created_us INTEGER NOT NULL,
        ts_us      INTEGER NOT NULL,
        payload    BLOB    NOT NULL,                  -- a copy: the record may leave `records`
        reason     TEXT    NOT NULL,
        dead_us    INTEGER NOT NULL,
        PRIMARY KEY (upstream, id)
    );
    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE state (
        key        TEXT PRIMARY KEY,
        value      BLOB NOT NULL,
        updated_us INTEGER NOT NULL
    );",
    // 2: readings are unique per (sensor, timestamp) while in the outbox, so that an
    // input redelivered after a crash (MQTT QoS 1 message committed but not yet
    // acknowledged to the broker) is not stored twice. `dedup` is a 64-bit hash of
    // sensor id and timestamp; NULL for other kinds.
    "ALTER TABLE records ADD COLUMN dedup INTEGER;
    CREATE UNIQUE INDEX records_dedup ON records(dedup) WHERE dedup IS NOT NULL;",
    // 3: the same uniqueness, with an index that stays cheap as a backlog grows. The
    // hash index of 2 put every reading at a random page of one large B-tree, so with
    // a few hundred thousand records each commit dirtied about one index page per
    // reading (appends fell from ~300k to ~40k readings/s in the bench). Keyed by
    // (sensor, timestamp), a batch's inserts land at the right edge of each sensor's
    // range: a few pages per commit. `sensor_key` is a 64-bit hash of the sensor id,
    // NULL for other kinds. Rows stored under 2 keep their (now unindexed) `dedup`.
    "DROP INDEX records_dedup;
    ALTER TABLE records ADD COLUMN sensor_key INTEGER;
    CREATE UNIQUE INDEX records_reading_key ON records(sensor_key, ts_us)
        WHERE sensor_key IS NOT NULL;",
    // 4: records appended, counted explicitly. The id sequence overcounts: SQLite
    // spends an AUTOINCREMENT id on every insert that `ON CONFLICT DO NOTHING` skips
    // (a redelivered reading). Files from before start from the sequence less the
    // duplicates counted so far.
    "INSERT OR IGNORE INTO counters(name, value) SELECT 'appended',
        coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'records'), 0)
        - coalesce((SELECT value FROM counters WHERE name = 'duplicate_readings_skipped'), 0);",
];

/// The schema version this build writes.
pub(crate) fn known_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Why an open failed.
pub(crate) enum OpenFailure {
    /// The file is damaged or not a database: move it aside.
    Corrupt(String),
    /// Anything else: report it, touch nothing.
    Other(OutboxError),
}

/// What [`open_checked`] did about the file's integrity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenCheck {
    /// `PRAGMA quick_check` read the whole file: the previous run did not mark a
    /// clean shutdown (crash, kill, power cut, corruption seen at run time, a write
    /// after the mark), or the file never had the marker (new, or from an older
    /// build).
    Full,
    /// The previous run shut down cleanly and nothing wrote to the file since: the
    /// whole-file check was skipped. Corruption is then found when a damaged page
    /// is read (SQLITE_CORRUPT), and the open after that run checks in full.
    SkippedAfterCleanClose,
    /// Opened by the CLI (read-only or for maintenance): never checked, never moved.
    NotChecked,
}

/// The `meta` key of the clean-shutdown marker. Its value is
/// `<fingerprint> closed_us=<time>`; the marker counts only while the fingerprint
/// still matches the file (see [`fingerprint`]).
const CLEAN_CLOSE_KEY: &str = "clean_close";

/// Outbox files on which this process saw SQLITE_CORRUPT / SQLITE_NOTADB after they
/// were opened (any connection, the writer's or the stats reader's): such a run never
/// marks a clean shutdown, so the next start checks the whole file and moves it aside.
static CORRUPTION_SEEN: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn corruption_list() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    CORRUPTION_SEEN.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn note_corruption(path: &Path) {
    let mut seen = corruption_list();
    if !seen.iter().any(|p| p == path) {
        seen.push(path.to_path_buf());
    }
}

pub(crate) fn corruption_seen(path: &Path) -> bool {
    corruption_list().iter().any(|p| p == path)
}

/// A new open of `path` starts with a clean slate.
pub(crate) fn forget_corruption(path: &Path) {
    corruption_list().retain(|p| p != path);
}

pub(crate) fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase)
    )
}

pub(crate) fn is_disk_full(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DiskFull))
}

/// Maps a SQLite error to the outbox error, keeping corruption apart.
pub(crate) fn sql_err(path: &Path, context: &'static str, e: rusqlite::Error) -> OutboxError {
    if is_corruption(&e) {
        note_corruption(path);
        OutboxError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("{context}: {e}"),
        }
    } else {
        OutboxError::Sqlite {
            path: path.to_path_buf(),
            context,
            source: e,
        }
    }
}

fn classify(path: &Path, context: &'static str, e: rusqlite::Error) -> OpenFailure {
    if is_corruption(&e) {
        OpenFailure::Corrupt(format!("{context}: {e}"))
    } else {
        OpenFailure::Other(sql_err(path, context, e))
    }
}

/// Opens read-write (creating the file), checks integrity and ownership, sets the
/// pragmas and migrates. Corruption anywhere on the way is reported as
/// [`OpenFailure::Corrupt`], before anything was written to the file.
///
/// The whole-file `quick_check` runs unless the previous run marked a clean shutdown
/// ([`mark_clean_close`]); the marker is then removed, durably, before any other
/// write, so whatever happens to this run from here on (a crash, a kill, a power cut)
/// makes the next open check in full.
pub(crate) fn open_checked(
    path: &Path,
    sync: SyncMode,
) -> Result<(Connection, OpenCheck), OpenFailure> {
    // A file that does not even start like SQLite is moved aside before SQLite opens
    // it: SQLite may otherwise delete a `-wal` next to it that the operator wants.
    precheck_header(path)?;
    let conn = Connection::open(path).map_err(|e| classify(path, "opening", e))?;
    match check_and_migrate(&conn, path, sync) {
        Ok(check) => Ok((conn, check)),
        Err(OpenFailure::Corrupt(detail)) => {
            // Leave the WAL as it is for whoever inspects the moved file.
            let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
            Err(OpenFailure::Corrupt(detail))
        }
        Err(other) => Err(other),
    }
}

fn check_and_migrate(
    conn: &Connection,
    path: &Path,
    sync: SyncMode,
) -> Result<OpenCheck, OpenFailure> {
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| classify(path, "setting busy_timeout", e))?;
    let clean =
        closed_cleanly(conn).map_err(|e| classify(path, "reading the clean-close marker", e))?;
    if !clean {
        if let Some(problem) = quick_check(conn).map_err(|e| classify(path, "quick_check", e))? {
            return Err(OpenFailure::Corrupt(format!("quick_check: {problem}")));
        }
    }
    // Ownership before any write: a foreign database must be moved aside untouched.
    check_version(conn, path).map_err(|e| match e {
        OutboxError::Corrupt { detail, .. } => OpenFailure::Corrupt(detail),
        other => OpenFailure::Other(other),
    })?;
    if clean {
        clear_clean_close(conn)
            .map_err(|e| classify(path, "clearing the clean-close marker", e))?;
    }
    configure(conn, sync).map_err(|e| classify(path, "setting pragmas", e))?;
    migrate(conn, path).map_err(|e| match e {
        OutboxError::Corrupt { detail, .. } => OpenFailure::Corrupt(detail),
        other => OpenFailure::Other(other),
    })?;
    Ok(if clean {
        OpenCheck::SkippedAfterCleanClose
    } else {
        OpenCheck::Full
    })
}

/// What a run that wrote to the outbox changes for sure: the id sequence (every
/// append) and the cursors (every ack). A marker whose fingerprint no longer matches
/// was left by a run that did not clear it (an older build opened the file after a
/// clean shutdown) and does not count.
fn fingerprint(conn: &Connection) -> rusqlite::Result<String> {
    conn.query_row(
        "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'records'), 0),
                coalesce((SELECT sum(acked_id) FROM cursors), 0)",
        [],
        |r| {
            Ok(format!(
                "seq={} cursors={}",
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?
            ))
        },
    )
}

/// Whether the previous run marked a clean shutdown that still matches the file.
/// Only corruption is an error; anything else odd (no `meta` table, a version this
/// build does not know, a foreign file) means "not clean", so the full check runs and
/// the usual rules decide what happens to the file.
fn closed_cleanly(conn: &Connection) -> rusqlite::Result<bool> {
    let attempt = || -> rusqlite::Result<bool> {
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version < 1 || version > known_version() {
            return Ok(false);
        }
        let marker: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [CLEAN_CLOSE_KEY],
                |r| r.get(0),
            )
            .optional()?;
        match marker {
            None => Ok(false),
            Some(m) => Ok(m.starts_with(&format!("{} ", fingerprint(conn)?))),
        }
    };
    match attempt() {
        Err(e) if is_corruption(&e) => Err(e),
        Err(_) => Ok(false),
        ok => ok,
    }
}

/// Removes the marker in a transaction of its own, fsynced whatever
/// `outbox.synchronous` says: were the removal lost in a power cut, the next open
/// would trust a marker that this run invalidated. The caller sets `synchronous`
/// again afterwards.
pub(crate) fn clear_clean_close(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute("DELETE FROM meta WHERE key = ?1", [CLEAN_CLOSE_KEY])?;
    Ok(())
}

/// Marks a clean shutdown: the marker with the file's fingerprint, then a WAL
/// checkpoint (TRUNCATE) so the next open has no WAL to read. A checkpoint that
/// cannot finish (a reader in a transaction) is harmless: the marker is committed.
pub(crate) fn mark_clean_close(conn: &Connection) -> rusqlite::Result<()> {
    let value = format!(
        "{} closed_us={}",
        fingerprint(conn)?,
        crate::record::now_us()
    );
    conn.execute(
        "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
        rusqlite::params![CLEAN_CLOSE_KEY, value],
    )?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}

fn precheck_header(path: &Path) -> Result<(), OpenFailure> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(OpenFailure::Other(OutboxError::Io {
                path: path.to_path_buf(),
                context: "opening the outbox file",
                source,
            }))
        }
    };
    let mut header = Vec::with_capacity(16);
    if let Err(source) = file.by_ref().take(16).read_to_end(&mut header) {
        return Err(OpenFailure::Other(OutboxError::Io {
            path: path.to_path_buf(),
            context: "reading the outbox header",
            source,
        }));
    }
    if header.is_empty() || header == b"SQLite format 3\0" {
        Ok(())
    } else {
        Err(OpenFailure::Corrupt(
            "not an SQLite database (bad file header)".to_string(),
        ))
    }
}

/// Opens an existing outbox without creating, checking or repairing anything (CLI).
pub(crate) fn open_existing(path: &Path, read_only: bool) -> Result<Connection, OutboxError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    // SQLite says only "unable to open database file"; say which case it is.
    if let Err(source) = std::fs::metadata(path) {
        return Err(OutboxError::Io {
            path: path.to_path_buf(),
            context: if source.kind() == std::io::ErrorKind::NotFound {
                "no outbox file here (the gateway has not run with this config yet, or \
                 outbox.path names another file; --path names one directly)"
            } else {
                "cannot look at the outbox file"
            },
            source,
        });
    }
    let conn = Connection::open_with_flags(path, flags).map_err(|e| sql_err(path, "opening", e))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| sql_err(path, "setting busy_timeout", e))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| sql_err(path, "reading the schema version", e))?;
    if version == 0 {
        return Err(OutboxError::Corrupt {
            path: path.to_path_buf(),
            detail: "not an edgegw outbox (schema version 0)".to_string(),
        });
    }
    if version > known_version() {
        return Err(OutboxError::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            known: known_version(),
        });
    }
    Ok(conn)
}

fn configure(conn: &Connection, sync: SyncMode) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", sync.pragma_value())?;
    // Keep a reset WAL at most this big, so it neither grows the SD card's usage
    // forever nor has to be re-grown from zero when the disk is tight.
    conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)?;
    Ok(())
}

/// `None` when the database is fine, else the first problems SQLite reports.
fn quick_check(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(None)
    } else {
        Ok(Some(rows.join("; ")))
    }
}

fn check_version(conn: &Connection, path: &Path) -> Result<i64, OutboxError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| sql_err(path, "reading the schema version", e))?;
    if version > known_version() {
        return Err(OutboxError::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            known: known_version(),
        });
    }
    if version == 0 {
        // A database that has tables but no version is not ours: treat it as corrupt
        // (it is moved aside, never deleted).
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(|e| sql_err(path, "reading the schema", e))?;
        if tables > 0 {
            return Err(OutboxError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("not an edgegw outbox ({tables} foreign schema objects)"),
            });
        }
    }
    Ok(version)
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), OutboxError> {
    let version = check_version(conn, path)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let to = i as i64 + 1;
        let batch = format!("BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {to}; COMMIT;");
        if let Err(e) = conn.execute_batch(&batch) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(sql_err(path, "migrating the schema", e));
        }
        tracing::info!(path = %path.display(), version = to, "Outbox schema migrated.");
    }
    Ok(())
}

/// Moves `path` and its `-wal`/`-shm` files to `<name>.corrupt-<UTC timestamp>`.
/// Returns the new path of the main file. Never deletes anything.
pub(crate) fn move_aside(path: &Path) -> Result<PathBuf, OutboxError> {
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "outbox.db".to_string());
    let mut target = path.with_file_name(format!("{name}.corrupt-{stamp}"));
    let mut n = 1;
    while target.exists() {
        target = path.with_file_name(format!("{name}.corrupt-{stamp}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &target).map_err(|source| OutboxError::Io {
        path: path.to_path_buf(),
        context: "moving the corrupt outbox aside",
        source,
    })?;
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", path.display()));
        if side.exists() {
            let side_target = PathBuf::from(format!("{}{suffix}", target.display()));
            std::fs::rename(&side, &side_target).map_err(|source| OutboxError::Io {
                path: side.clone(),
                context: "moving the corrupt outbox's side file aside",
                source,
            })?;
        }
    }
    Ok(target)
}
