//! A damaged outbox file is moved aside (never deleted) and a fresh outbox starts.

mod outbox_common;

use edgegw::outbox::*;
use outbox_common::*;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// An outbox of ~2 MB, closed cleanly (WAL folded into the main file).
fn make_outbox(path: &Path) -> String {
    let mut o = Outbox::open(path, &OutboxSettings::default(), "gw", &["a"]).expect("open");
    for b in 0..20 {
        o.append(&(b * 1000..(b + 1) * 1000).map(reading).collect::<Vec<_>>())
            .expect("append");
    }
    let epoch = o.epoch().to_string();
    drop(o);
    assert!(!PathBuf::from(format!("{}-wal", path.display())).exists());
    epoch
}

/// Main files moved aside (not their `-wal`/`-shm`).
fn corrupt_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let p = p.to_string_lossy();
            p.contains(".corrupt-") && !p.ends_with("-wal") && !p.ends_with("-shm")
        })
        .collect();
    v.sort();
    v
}

/// Opens the damaged file and checks: moved aside with its bytes intact, a fresh
/// outbox with a new epoch that works.
fn assert_recovers(path: &Path, old_epoch: &str) {
    let damaged = std::fs::read(path).expect("read damaged");
    let mut o = Outbox::open(path, &OutboxSettings::default(), "gw", &["a"])
        .expect("open recovers from corruption");
    let dir = path.parent().expect("dir");
    let moved = corrupt_files(dir);
    assert_eq!(moved.len(), 1, "{moved:?}");
    let name = moved[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("outbox.db.corrupt-") && name.ends_with('Z'),
        "{name}"
    );
    assert!(
        std::fs::read(&moved[0]).expect("read moved") == damaged,
        "kept as it was"
    );

    assert_ne!(o.epoch(), old_epoch, "a fresh outbox has a new epoch");
    assert_eq!(o.stats().expect("stats").total_records, 0);
    let id = o
        .append(&[reading(1), alert(2)])
        .expect("append to the fresh outbox");
    let got = o.peek("a", 10).expect("peek");
    assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), id);
    drop(o);
    // And it opens again without being moved aside a second time.
    Outbox::open(path, &OutboxSettings::default(), "gw", &["a"]).expect("reopen");
    assert_eq!(corrupt_files(dir).len(), 1);
}

fn scribble(path: &Path, offset: u64, len: usize) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open file");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    let garbage: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(151).wrapping_add(7))
        .collect();
    f.write_all(&garbage).expect("write garbage");
    f.sync_all().expect("sync");
}

#[test]
fn truncated_file_is_moved_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let epoch = make_outbox(&path);
    let len = std::fs::metadata(&path).expect("meta").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_len(len / 2).expect("truncate");
    drop(f);
    assert_recovers(&path, &epoch);
}

#[test]
fn garbage_header_is_moved_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let epoch = make_outbox(&path);
    scribble(&path, 0, 100);
    assert_recovers(&path, &epoch);
}

#[test]
fn garbage_in_middle_pages_is_moved_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let epoch = make_outbox(&path);
    let len = std::fs::metadata(&path).expect("meta").len();
    let page = 4096;
    scribble(&path, (len / 2 / page) * page, 3 * page as usize);
    assert_recovers(&path, &epoch);
}

#[test]
fn a_file_that_is_not_a_database_and_its_wal_are_moved_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    std::fs::write(&path, b"this is a text file, not SQLite\n".repeat(300)).expect("write");
    std::fs::write(dir.path().join("outbox.db-wal"), b"junk wal").expect("write wal");
    assert_recovers(&path, "");
    let moved = corrupt_files(dir.path());
    let wal_moved = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.contains(".corrupt-") && n.ends_with("-wal")
        });
    assert!(wal_moved, "the -wal went with it");
    assert_eq!(moved.len(), 1);
}

#[test]
fn a_foreign_sqlite_database_is_not_taken_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    {
        let c = rusqlite::Connection::open(&path).expect("sqlite");
        c.execute_batch("CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers(name) VALUES ('acme');")
            .expect("foreign schema");
    }
    assert_recovers(&path, "");
}

#[test]
fn the_cli_never_moves_or_repairs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    make_outbox(&path);
    scribble(&path, 0, 100);
    let err = cli_stats(&path).expect_err("corrupt file");
    assert!(err.to_string().contains("outbox.db"), "{err}");
    assert!(
        corrupt_files(dir.path()).is_empty(),
        "the CLI moved nothing"
    );
}

/// Like `make_outbox`, but the run ends with a clean shutdown.
fn make_outbox_closed_cleanly(path: &Path) -> String {
    let epoch = make_outbox(path);
    let mut o = Outbox::open(path, &OutboxSettings::default(), "gw", &["a"]).expect("open");
    assert_eq!(o.open_check(), OpenCheck::Full, "dropped without a mark");
    assert!(o.mark_clean_shutdown().expect("mark"), "marked");
    drop(o);
    epoch
}

#[test]
fn a_clean_shutdown_skips_the_check_until_a_run_ends_without_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    make_outbox_closed_cleanly(&path);

    let o = Outbox::open(&path, &OutboxSettings::default(), "gw", &["a"]).expect("open");
    assert_eq!(o.open_check(), OpenCheck::SkippedAfterCleanClose);
    assert_eq!(o.stats().expect("stats").total_records, 20_000);
    // This run ends without a mark (a crash, a kill): the open removed the marker.
    drop(o);
    let mut o = Outbox::open(&path, &OutboxSettings::default(), "gw", &["a"]).expect("open");
    assert_eq!(o.open_check(), OpenCheck::Full);

    // A write after the mark withdraws it.
    assert!(o.mark_clean_shutdown().expect("mark"));
    o.append(&[reading(99_999)]).expect("append after the mark");
    drop(o);
    let mut o = Outbox::open(&path, &OutboxSettings::default(), "gw", &["a"]).expect("open");
    assert_eq!(o.open_check(), OpenCheck::Full, "written after the mark");

    // A marker the file no longer matches (an older build, which knows nothing of
    // it, appended after the clean shutdown) does not count.
    assert!(o.mark_clean_shutdown().expect("mark"));
    drop(o);
    {
        let c = rusqlite::Connection::open(&path).expect("sqlite");
        c.execute(
            "INSERT INTO records(kind, priority, created_us, ts_us, payload)
             SELECT kind, priority, created_us, ts_us + 1, payload FROM records WHERE id = 1",
            [],
        )
        .expect("insert as another build would");
    }
    let o = Outbox::open(&path, &OutboxSettings::default(), "gw", &["a"]).expect("open");
    assert_eq!(o.open_check(), OpenCheck::Full, "stale marker");
}

/// A run that started after a clean shutdown and then ended without one (a crash):
/// the next open checks the whole file, and finds a damaged page.
#[test]
fn after_an_unclean_end_a_corrupted_page_is_still_found_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let epoch = make_outbox_closed_cleanly(&path);
    let o = Outbox::open(&path, &OutboxSettings::default(), "gw", &["a"]).expect("open");
    assert_eq!(o.open_check(), OpenCheck::SkippedAfterCleanClose);
    drop(o);
    let len = std::fs::metadata(&path).expect("meta").len();
    scribble(&path, (len / 2 / 4096) * 4096, 3 * 4096);
    assert_recovers(&path, &epoch);
}

/// The trade: after a clean shutdown the open does not read every page, so damage
/// done while the gateway was stopped is found when the page is read. Then the run
/// marks no clean shutdown, and the next open checks and moves the file aside.
#[test]
fn corruption_after_a_clean_shutdown_is_found_at_run_time_then_checked_at_the_next_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let epoch = make_outbox_closed_cleanly(&path);
    let len = std::fs::metadata(&path).expect("meta").len();
    scribble(&path, (len / 2 / 4096) * 4096, 3 * 4096);

    let mut o = Outbox::open(&path, &OutboxSettings::default(), "gw", &["a"]).expect("open");
    assert_eq!(o.open_check(), OpenCheck::SkippedAfterCleanClose);
    assert!(
        corrupt_files(dir.path()).is_empty(),
        "not checked, not moved"
    );
    let err = o
        .peek("a", 100_000)
        .expect_err("the damaged pages are read");
    assert!(matches!(err, OutboxError::Corrupt { .. }), "{err}");
    assert!(
        !o.mark_clean_shutdown().expect("mark"),
        "no clean mark after corruption was seen"
    );
    drop(o);
    assert_recovers(&path, &epoch);
}

#[test]
fn a_foreign_database_with_a_clean_close_row_is_still_moved_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    {
        let c = rusqlite::Connection::open(&path).expect("sqlite");
        c.execute_batch(
            "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('clean_close', 'seq=0 cursors=0 closed_us=1');",
        )
        .expect("foreign schema");
    }
    assert_recovers(&path, "");
}
