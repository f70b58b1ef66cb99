//! Tests that need the store's internals (clock, `max_page_count`, raw rows).
//! Tests of the public API live in `tests/outbox_*.rs`.

use super::encode::tests::{alert, reading, summary, window};
use super::*;
use crate::record::{Record, RecordKind};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

fn settings(max_size_mb: u64, policy: FullPolicy) -> OutboxSettings {
    OutboxSettings {
        max_size_mb,
        full_policy: policy,
        ..OutboxSettings::default()
    }
}

fn readings(from: i64, n: i64) -> Vec<Record> {
    (from..from + n).map(reading).collect()
}

fn counter(o: &Outbox, name: &str) -> u64 {
    o.stats()
        .expect("stats")
        .evicted
        .get(name)
        .copied()
        .unwrap_or(0)
}

#[test]
fn disk_full_from_max_page_count_evicts_and_keeps_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut o =
        Outbox::open(&path, &settings(512, FullPolicy::DropOldest), "gw", &["a"]).expect("open");
    o.append(&readings(0, 100)).expect("first batch");
    let pages: i64 = o
        .conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .expect("page_count");
    // About 400 KiB of room: far below max_size_mb, so only the "disk" limits us.
    let max: i64 = o
        .conn
        .query_row(
            &format!("PRAGMA max_page_count = {}", pages + 100),
            [],
            |r| r.get(0),
        )
        .expect("max_page_count");
    assert_eq!(max, pages + 100);

    let mut ok = 0;
    let mut full = 0;
    let mut last_ids = Vec::new();
    for round in 0..60 {
        match o.append(&readings(1000 + round * 500, 500)) {
            Ok(ids) => {
                ok += 1;
                last_ids = ids;
            }
            Err(OutboxError::Full { .. }) => full += 1,
            Err(other) => panic!("disk full must look like a full outbox, got {other}"),
        }
    }
    // 60 * 500 readings (~3.5 MB) went through 400 KiB: eviction made room every time
    // after the first disk-full taught the outbox its real limit.
    assert!(ok >= 59, "ok {ok}, full {full}");
    assert!(o.disk_limit_bytes.is_some(), "the disk limit was learned");
    let evicted = counter(&o, "evicted_size.reading");
    assert!(evicted > 20_000, "evicted {evicted}");
    // The newest batch is intact and readable.
    let stats = o.stats().expect("stats");
    assert_eq!(stats.total_records + evicted, 100 + 60 * 500 - full * 500);
    let peeked = o.peek("a", usize::MAX).expect("peek");
    assert_eq!(peeked.last().map(|r| r.id), last_ids.last().copied());

    // Block policy on a full disk pushes back instead, and recovers once acked.
    o.policy = FullPolicy::Block;
    let mut saw_full = false;
    for round in 0..20 {
        match o.append(&readings(100_000 + round * 500, 500)) {
            Ok(_) => {}
            Err(OutboxError::Full { .. }) => {
                saw_full = true;
                break;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert!(saw_full, "block policy must report Full on a full disk");
    let newest = o
        .peek("a", usize::MAX)
        .expect("peek")
        .last()
        .map(|r| r.id)
        .unwrap_or(0);
    o.ack("a", newest).expect("ack frees everything");
    o.append(&readings(200_000, 500))
        .expect("room again after ack");
}

#[test]
fn disk_full_on_a_small_tmpfs_pushes_back_without_panicking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let status = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=16m",
            "edgegw-test",
            &mnt.to_string_lossy(),
        ])
        .stderr(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => {
            println!("SKIPPED tmpfs variant: cannot mount a tmpfs here ({other:?}); the max_page_count test covers SQLITE_FULL");
            return;
        }
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&mnt);
    let path = mnt.join("outbox.db");
    let mut o = Outbox::open(&path, &settings(512, FullPolicy::DropOldest), "gw", &["a"])
        .expect("open on tmpfs");
    // ~18 MB of readings through a 16 MiB disk with max_size_mb = 512: the free-space
    // check evicts before SQLite ever sees a full disk.
    for round in 0..600 {
        if let Err(e) = o.append(&readings(round * 300, 300)) {
            panic!("round {round}: the disk bound must evict, not fail: {e}");
        }
    }
    let evicted = counter(&o, "evicted_size.reading");
    assert!(evicted > 0, "the disk, not max_size_mb, forced eviction");

    // Now someone else fills the disk completely: the outbox reports Full (or still
    // manages by reusing its free pages), never another error, and recovers once the
    // space is back.
    let ballast = mnt.join("ballast");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&ballast).expect("ballast");
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let (mut ok, mut full) = (0, 0);
    for round in 0..50 {
        match o.append(&readings(1_000_000 + round * 300, 300)) {
            Ok(_) => ok += 1,
            Err(e) if e.is_full() => full += 1,
            Err(other) => panic!("unexpected error on a full disk: {other}"),
        }
    }
    println!("tmpfs full: {ok} batches stored, {full} refused as full; evicted before {evicted}");
    assert!(o.stats().expect("stats on a full disk").total_records > 0);
    std::fs::remove_file(&ballast).expect("remove ballast");
    o.disk_limit_bytes = None;
    o.append(&readings(2_000_000, 300)).expect("space is back");
    drop(o);
    let o = Outbox::open(&path, &settings(512, FullPolicy::DropOldest), "gw", &["a"])
        .expect("reopen on tmpfs");
    assert!(!o.peek("a", 10).expect("peek").is_empty());
}

static FAKE_NOW: AtomicI64 = AtomicI64::new(0);
fn fake_now() -> i64 {
    FAKE_NOW.load(Ordering::SeqCst)
}

#[test]
fn max_age_evicts_old_records_but_not_alerts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let s = OutboxSettings {
        max_age_hours: Some(1),
        ..OutboxSettings::default()
    };
    let mut o = Outbox::open(&path, &s, "gw", &["a"]).expect("open");
    o.clock = fake_now;
    let hour = 3600 * 1_000_000;
    FAKE_NOW.store(10 * hour, Ordering::SeqCst);
    let old = o
        .append(&[reading(1), alert(1), summary(1), window(1)])
        .expect("old");
    FAKE_NOW.store(10 * hour + hour / 2, Ordering::SeqCst);
    let mid = o.append(&[reading(2)]).expect("mid");
    FAKE_NOW.store(11 * hour + hour / 4, Ordering::SeqCst);
    let new = o.append(&[reading(3)]).expect("new");
    let left: Vec<i64> = o
        .peek("a", 100)
        .expect("peek")
        .iter()
        .map(|r| r.id)
        .collect();
    // The first batch is 1.25 h old: all but the alert are gone; the 0.75 h old one stays.
    assert_eq!(left, vec![old[1], mid[0], new[0]]);
    assert_eq!(counter(&o, "evicted_age.reading"), 1);
    assert_eq!(counter(&o, "evicted_age.summary"), 1);
    assert_eq!(counter(&o, "evicted_age.window"), 1);
    assert_eq!(counter(&o, "evicted_age.alert"), 0);
}

#[test]
fn undecodable_payload_is_dead_lettered_not_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut o = Outbox::open(&path, &OutboxSettings::default(), "gw", &["a", "b"]).expect("open");
    let ids = o.append(&readings(0, 3)).expect("append");
    o.conn
        .execute(
            "UPDATE records SET payload = x'c1c1c1' WHERE id = ?1",
            [ids[1]],
        )
        .expect("damage one payload");
    let got: Vec<i64> = o
        .peek("a", 10)
        .expect("peek")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(got, vec![ids[0], ids[2]]);
    let dl = o.dead_letters(Some("a"), 10).expect("dead letters");
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].id, ids[1]);
    assert!(
        dl[0].reason.starts_with("undecodable payload"),
        "{}",
        dl[0].reason
    );
    assert_eq!(dl[0].record, None);
    assert_eq!(dl[0].kind, Some(RecordKind::Reading));
    assert!(o.dead_letters(Some("b"), 10).expect("b").is_empty());
}

#[test]
fn append_is_atomic_when_the_batch_fails_midway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut o = Outbox::open(&path, &OutboxSettings::default(), "gw", &["a"]).expect("open");
    o.append(&readings(0, 10)).expect("append");
    // A trigger that fails on the 5th insert of the next batch.
    o.conn
        .execute_batch(
            "CREATE TEMP TRIGGER fail_fifth BEFORE INSERT ON records
             WHEN (SELECT count(*) FROM records) >= 14
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .expect("trigger");
    let err = o.append(&readings(100, 10)).expect_err("batch fails");
    assert!(matches!(err, OutboxError::Sqlite { .. }), "{err}");
    assert_eq!(
        o.stats().expect("stats").total_records,
        10,
        "nothing of the batch stored"
    );
}

#[test]
fn a_version_2_database_upgrades_and_keeps_its_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    {
        let mut o = Outbox::open(&path, &OutboxSettings::default(), "gw", &["a"]).expect("open");
        o.append(&readings(0, 3)).expect("append");
    }
    // Back to how version 2 left it: the hash index, no sensor_key column.
    {
        let conn = rusqlite::Connection::open(&path).expect("raw open");
        conn.execute_batch(
            "DROP INDEX records_reading_key;
             ALTER TABLE records DROP COLUMN sensor_key;
             CREATE UNIQUE INDEX records_dedup ON records(dedup) WHERE dedup IS NOT NULL;
             PRAGMA user_version = 2;",
        )
        .expect("downgrade");
    }
    let mut o = Outbox::open(&path, &OutboxSettings::default(), "gw", &["a"]).expect("reopen");
    let version: i64 = o
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, schema::known_version());
    assert_eq!(o.peek("a", 10).expect("peek").len(), 3, "records kept");
    // New readings are unique per sensor and timestamp again.
    assert_eq!(o.append(&readings(3, 2)).expect("append").len(), 2);
    assert_eq!(o.append(&readings(3, 3)).expect("again").len(), 1);
    let indexes: Vec<String> = o
        .conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records'")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert!(
        indexes.contains(&"records_reading_key".to_string()),
        "{indexes:?}"
    );
    assert!(
        !indexes.contains(&"records_dedup".to_string()),
        "{indexes:?}"
    );
}

/// A small tmpfs mounted for a test (root only; the suite runs as root on CI), or
/// None with a loud note.
struct SmallDisk {
    _dir: tempfile::TempDir,
    mnt: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "edgegw-test"])
            .arg(&mnt)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("SKIPPED: cannot mount a tmpfs here (not root?)");
            return None;
        }
        Some(SmallDisk { _dir: dir, mnt })
    }

    /// Fills the file system until `leave` bytes are free.
    fn fill_leaving(&self, name: &str, leave: u64) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.mnt.join(name);
        let (free, _) = evict::disk_space(&self.mnt.join("x")).expect("statvfs");
        let mut f = std::fs::File::create(&path).expect("ballast");
        let mut left = free.saturating_sub(leave);
        let chunk = vec![0u8; 64 * 1024];
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mnt).status();
    }
}

#[test]
fn readings_never_push_out_alerts_and_a_tight_disk_recovers_at_once() {
    // The case: an 8 MiB file system, 32 alerts, then the disk fills up to
    // 3.6 MB free and 5,000 readings arrive, then the space comes back.
    let Some(disk) = SmallDisk::mount("8m") else {
        return;
    };
    let path = disk.mnt.join("outbox.db");
    let mut o = Outbox::open(&path, &settings(512, FullPolicy::DropOldest), "gw", &["a"])
        .expect("open on tmpfs");
    let alerts: Vec<Record> = (0..32).map(alert).collect();
    o.append(&alerts).expect("alerts");
    o.append(&readings(0, 2000)).expect("readings");
    let ballast = disk.fill_leaving("ballast", 3_600_000);
    let mut stored = 0;
    for round in 0..50 {
        let ids = o
            .append(&readings(10_000 + round * 100, 100))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        stored += ids.len();
    }
    let s = o.stats().expect("stats");
    assert_eq!(
        s.depth.get("alert"),
        Some(&32),
        "every alert kept: {:?}",
        s.evicted
    );
    assert_eq!(stored, 5000, "3.6 MB free is room for 5,000 readings");
    assert!(
        s.limit_bytes < 8 * 1024 * 1024,
        "the bound reported is the disk's, not max_size_mb: {}",
        s.limit_bytes
    );
    // The disk fills completely: the pipeline still stores what fits (alerts first),
    // never blocks on readings, and keeps every alert.
    let more = disk.fill_leaving("more", 0);
    let mut dropped_or_stored = 0;
    for round in 0..20 {
        let mut batch = readings(100_000 + round * 100, 100);
        batch.push(alert(1000 + round));
        match o.append(&batch) {
            Ok(ids) => dropped_or_stored += usize::from(!ids.is_empty()),
            Err(e) => assert!(e.is_full(), "only Full, never another error: {e}"),
        }
    }
    let _ = dropped_or_stored;
    assert!(
        o.stats()
            .expect("stats")
            .depth
            .get("alert")
            .copied()
            .unwrap_or(0)
            >= 32
    );
    // Space comes back: the next batches are stored, no 10-minute wait.
    std::fs::remove_file(&more).expect("remove");
    std::fs::remove_file(&ballast).expect("remove");
    for round in 0..50 {
        let ids = o
            .append(&readings(200_000 + round * 100, 100))
            .unwrap_or_else(|e| panic!("after the space came back, round {round}: {e}"));
        assert_eq!(ids.len(), 100, "round {round}");
    }
    assert!(o.stats().expect("stats").limit_bytes > 4 * 1024 * 1024);
}

#[test]
fn readings_in_an_outbox_full_of_alerts_evict_only_readings() {
    // max_size_mb = 1 filled with alerts: readings must not evict alerts.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut o =
        Outbox::open(&path, &settings(1, FullPolicy::DropOldest), "gw", &["a"]).expect("open");
    let mut n_alerts = 0;
    loop {
        let batch: Vec<Record> = (n_alerts..n_alerts + 100).map(alert).collect();
        let ids = o.append(&batch).expect("alerts");
        n_alerts += 100;
        if o.stats()
            .expect("stats")
            .evicted
            .keys()
            .any(|k| k.contains("alert"))
            || ids.len() < 100
            || n_alerts > 50_000
        {
            break;
        }
    }
    let alerts_before = o.stats().expect("stats").depth["alert"];
    let evicted_alerts = |o: &Outbox| counter(o, "evicted_size.alert");
    let alerts_evicted_before = evicted_alerts(&o);
    // 10,000 readings through an outbox full of alerts: they take the room that is
    // left and then evict each other, never an alert.
    for round in 0..200 {
        o.append(&readings(round * 50, 50)).expect("readings");
    }
    let s = o.stats().expect("stats");
    assert_eq!(
        s.depth["alert"], alerts_before,
        "no alert evicted by readings"
    );
    assert_eq!(evicted_alerts(&o), alerts_evicted_before);
    assert!(counter(&o, "evicted_size.reading") > 0, "{:?}", s.evicted);
    // A batch with an alert: the alert is stored.
    let mut batch = readings(1_000_000, 50);
    batch.push(alert(999_999));
    let ids = o.append(&batch).expect("stores what matters");
    assert!(!ids.is_empty());
    assert!(o.stats().expect("stats").depth["alert"] >= alerts_before);
}

#[test]
fn every_appended_record_is_accounted_for_per_upstream() {
    // Two upstreams; one acks as it goes, one lags; a dead letter; a size bound that
    // evicts: appended = delivered + pending + dead-lettered + evicted unsent, for each.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut o = Outbox::open(
        &path,
        &settings(1, FullPolicy::DropOldest),
        "gw",
        &["a", "b"],
    )
    .expect("open");
    let mut next = 0;
    let mut requeue_in_place = None;
    for round in 0..60 {
        o.append(&readings(next, 500)).expect("append");
        // Redelivered input: 50 readings already in the outbox are skipped, and
        // SQLite spends an id on each (the sequence is no count).
        o.append(&readings(next + 450, 50))
            .expect("append duplicates");
        next += 500;
        if round == 5 {
            // Dead-lettered for b while b's cursor is before it, then requeued: b
            // delivers the original and it is no longer dead-lettered for b.
            let b = o.peek("b", 1).expect("peek b");
            o.dead_letter("b", b[0].id, "test").expect("dead letter b");
            requeue_in_place = Some(b[0].id);
        }
        if round == 7 {
            o.requeue(&[requeue_in_place.expect("set")])
                .expect("requeue in place");
        }
        let peek = o.peek("a", 400).expect("peek");
        if round == 3 {
            o.dead_letter("a", peek[0].id, "test").expect("dead letter");
        }
        if round == 20 {
            // A dead letter the cursor passed long ago: requeued as a copy, which
            // every upstream gets again.
            let dl = o.dead_letters(Some("a"), 10).expect("dead letters");
            let id = dl.first().expect("a's dead letter").id;
            assert_eq!(o.requeue(&[id]).expect("requeue copy"), 1);
        }
        if let Some(last) = peek.last() {
            o.ack("a", last.id).expect("ack a");
        }
        if round % 10 == 9 {
            let b = o.peek("b", 100).expect("peek b");
            if let Some(last) = b.last() {
                o.ack("b", last.id).expect("ack b");
            }
        }
    }
    let s = o.stats().expect("stats");
    assert_eq!(s.appended, 30_001, "30,000 readings and one requeued copy");
    assert!(s.evicted.values().sum::<u64>() > 0, "the bound evicted");
    for u in &s.upstreams {
        assert_eq!(
            s.appended,
            u.delivered + u.pending + u.dead_lettered + u.unsent_evicted,
            "{u:?}"
        );
    }
    let dead: Vec<(&str, u64)> = s
        .upstreams
        .iter()
        .map(|u| (u.name.as_str(), u.dead_lettered))
        .collect();
    assert_eq!(
        dead,
        [("a", 1), ("b", 0)],
        "b's dead letter was requeued in place"
    );
}

#[test]
fn an_alerts_only_cursor_finds_alerts_among_readings_and_passes_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut o = Outbox::open(
        &path,
        &OutboxSettings::default(),
        "gw",
        &["cloud", "notify:x"],
    )
    .expect("open");
    let mut batch = readings(0, 50);
    batch.push(alert(50));
    batch.extend(readings(51, 50));
    batch.push(alert(101));
    let ids = o.append(&batch).expect("append");

    // Two alerts, and a look that went to the newest record.
    let (found, to) = o.peek_alerts("notify:x", 10).expect("peek");
    assert_eq!(
        found.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[50], ids[101]]
    );
    assert!(found.iter().all(|r| r.record.kind() == RecordKind::Alert));
    assert_eq!(to, *ids.last().unwrap());
    // A full page stops the look at its last alert: nothing after it is passed.
    let (found, to) = o.peek_alerts("notify:x", 1).expect("peek");
    assert_eq!((found.len(), to), (1, ids[50]));

    // The ack and the sink's memory commit together.
    o.ack_with_state("notify:x", ids[50], Some(("notify/x", b"one")))
        .expect("ack");
    assert_eq!(
        o.get_state("notify/x").expect("state").as_deref(),
        Some(&b"one"[..])
    );
    let (found, _) = o.peek_alerts("notify:x", 10).expect("peek");
    assert_eq!(found.len(), 1);
    o.ack("notify:x", to.max(ids[101])).expect("ack");
    assert!(o.peek_alerts("notify:x", 10).expect("peek").0.is_empty());

    // Records leave once the cloud has them too; the notify cursor held nothing.
    o.ack("cloud", *ids.last().unwrap()).expect("ack");
    let left: i64 = o
        .conn
        .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .expect("count");
    assert_eq!(left, 0);
}

#[test]
fn a_stuck_alerts_only_cursor_holds_back_its_alerts_not_the_readings() {
    // A notification receiver down for days: the cloud has everything, the sink's
    // cursor stands before its first alert. Readings go, alerts stay; every
    // upstream's balance holds.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut o = Outbox::open(
        &path,
        &OutboxSettings::default(),
        "gw",
        &["cloud", "notify:x"],
    )
    .expect("open");
    let mut batch = readings(0, 100);
    batch.push(alert(100));
    batch.extend(readings(101, 100));
    let ids = o.append(&batch).expect("append");
    // The sink passed the first 50 readings, then failed on its alert.
    o.ack("notify:x", ids[49]).expect("ack notify");
    o.ack("cloud", *ids.last().unwrap()).expect("ack cloud");
    let left: Vec<(i64, i64)> = {
        let mut st = o
            .conn
            .prepare("SELECT id, kind FROM records ORDER BY id")
            .expect("prepare");
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert_eq!(left, [(ids[100], RecordKind::Alert as i64)]);
    let balance = |o: &Outbox| {
        let s = o.stats().expect("stats");
        for u in &s.upstreams {
            assert_eq!(
                s.appended,
                u.delivered + u.pending + u.dead_lettered + u.unsent_evicted,
                "{u:?}"
            );
        }
        s
    };
    let s = balance(&o);
    let sink = s
        .upstreams
        .iter()
        .find(|u| u.name == "notify:x")
        .expect("sink");
    assert_eq!(sink.pending, 1, "{sink:?}");
    // The receiver is back: the alert is delivered and leaves.
    let (alerts, to) = o.peek_alerts("notify:x", 10).expect("peek");
    assert_eq!(alerts.len(), 1);
    o.ack("notify:x", to).expect("ack");
    let s = balance(&o);
    assert_eq!(s.upstreams.iter().map(|u| u.pending).sum::<u64>(), 0);
    let n: i64 = o
        .conn
        .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 0);
}
