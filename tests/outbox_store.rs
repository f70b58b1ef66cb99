//! The outbox's public API against real SQLite files: delivery to two upstreams,
//! reopen, bounds, dead letters, state, stats, dump and the CLI helpers.

mod outbox_common;

use edgegw::outbox::*;
use edgegw::record::{Record, RecordKind};
use outbox_common::*;
use std::collections::HashSet;

fn open(path: &std::path::Path, upstreams: &[&str]) -> Outbox {
    Outbox::open(path, &OutboxSettings::default(), "gw-7", upstreams).expect("open outbox")
}

fn ids(records: &[edgegw::record::StoredRecord]) -> Vec<i64> {
    records.iter().map(|r| r.id).collect()
}

#[test]
fn two_upstreams_delete_only_when_both_acked_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state/outbox.db");
    let mut o = open(&path, &["timescale", "mqtt"]);
    let first = o
        .append(&(0..10).map(reading).collect::<Vec<_>>())
        .expect("append");
    assert_eq!(first.len(), 10);
    assert!(
        first.windows(2).all(|w| w[1] > w[0]),
        "ids increase: {first:?}"
    );

    let t = o.peek("timescale", 4).expect("peek");
    assert_eq!(ids(&t), first[..4].to_vec());
    assert_eq!(t[0].record, reading(0));
    assert_eq!(t[0].key, format!("gw-7:{}:{}", o.epoch(), first[0]));
    assert_eq!(o.epoch().len(), 16);

    o.ack("timescale", first[5]).expect("ack");
    // mqtt has not acked: nothing deleted, mqtt still sees everything.
    assert_eq!(o.stats().expect("stats").total_records, 10);
    assert_eq!(ids(&o.peek("mqtt", 100).expect("peek")), first);
    assert_eq!(
        ids(&o.peek("timescale", 100).expect("peek")),
        first[6..].to_vec()
    );

    o.ack("mqtt", first[2]).expect("ack");
    // Both passed ids[0..=2]: those are gone.
    let s = o.stats().expect("stats");
    assert_eq!(s.total_records, 7);
    // The cursor never moves back.
    o.ack("timescale", first[1]).expect("stale ack");
    assert_eq!(o.cursor("timescale").expect("cursor"), Some(first[5]));
    // An ack past the newest id stops at the newest id.
    o.ack("timescale", first[9] + 1_000).expect("ack ahead");
    assert_eq!(o.cursor("timescale").expect("cursor"), Some(first[9]));
    let err = o.peek("redis", 1).expect_err("unknown upstream");
    assert!(matches!(err, OutboxError::UnknownUpstream { .. }), "{err}");
    let epoch = o.epoch().to_string();
    drop(o);

    // Reopen: cursors, epoch and records survive; acked records never come back.
    let mut o = open(&path, &["timescale", "mqtt"]);
    assert_eq!(o.epoch(), epoch);
    assert_eq!(
        ids(&o.peek("mqtt", 100).expect("peek")),
        first[3..].to_vec()
    );
    assert!(o.peek("timescale", 100).expect("peek").is_empty());
    let second = o
        .append(&(10..15).map(reading).collect::<Vec<_>>())
        .expect("append");
    assert!(second[0] > first[9], "ids keep increasing across reopen");

    // Ack everything, reopen, append: ids are never reused even though the table was
    // emptied (AUTOINCREMENT), and keys stay unique.
    o.ack("timescale", second[4]).expect("ack");
    o.ack("mqtt", second[4]).expect("ack");
    assert_eq!(o.stats().expect("stats").total_records, 0);
    drop(o);
    let mut o = open(&path, &["timescale", "mqtt"]);
    assert!(
        o.peek("mqtt", 100).expect("peek").is_empty(),
        "acked records never come back"
    );
    let third = o.append(&[reading(99)]).expect("append");
    assert!(third[0] > second[4], "{third:?} after {second:?}");
    let mut keys = HashSet::new();
    for id in first.iter().chain(&second).chain(&third) {
        assert!(keys.insert(o.key_for(*id)), "duplicate key for id {id}");
    }
    let peeked = o.peek("mqtt", 10).expect("peek");
    assert_eq!(peeked[0].key, o.key_for(third[0]));
}

#[test]
fn new_upstream_gets_the_backlog_and_removed_upstream_does_not_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut o = open(&path, &["a"]);
    let batch = o
        .append(&(0..6).map(reading).collect::<Vec<_>>())
        .expect("append");
    o.ack("a", batch[1]).expect("ack");
    drop(o);

    // "b" is new: it starts at the oldest record still present (the backlog).
    let mut o = open(&path, &["a", "b"]);
    assert_eq!(ids(&o.peek("b", 100).expect("peek")), batch[2..].to_vec());
    o.ack("a", batch[5]).expect("ack");
    assert_eq!(o.stats().expect("stats").total_records, 4, "b holds them");
    drop(o);

    // "b" is removed: its cursor row stays, but it no longer holds records back.
    let mut o = open(&path, &["a"]);
    let s = o.stats().expect("stats");
    assert_eq!(s.total_records, 0, "purged at open");
    let b = s
        .upstreams
        .iter()
        .find(|u| u.name == "b")
        .expect("b cursor kept");
    assert!(!b.configured);
    let more = o.append(&[reading(7)]).expect("append");
    o.ack("a", more[0]).expect("ack");
    assert_eq!(o.stats().expect("stats").total_records, 0);

    // No upstream configured at all: records stay until evicted.
    drop(o);
    let mut o = open(&path, &[]);
    o.append(&[reading(8), reading(9)]).expect("append");
    drop(o);
    let o = open(&path, &[]);
    assert_eq!(o.stats().expect("stats").total_records, 2);
}

#[test]
fn drop_oldest_keeps_alerts_and_evicts_oldest_readings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let settings = OutboxSettings {
        max_size_mb: 1,
        ..OutboxSettings::default()
    };
    let mut o = Outbox::open(&path, &settings, "gw", &["a"]).expect("open");
    // 30 batches of 1000 mixed records: ~3x the 1 MiB bound.
    let mut all: Vec<(i64, RecordKind)> = Vec::new();
    for b in 0..30i64 {
        let mut batch = Vec::new();
        for i in 0..1000i64 {
            let n = b * 1000 + i;
            batch.push(match i {
                0 | 500 => alert(n),
                1..=8 => summary(n),
                9..=18 => window(n),
                _ => reading(n),
            });
        }
        let got = o.append(&batch).expect("drop_oldest never refuses");
        all.extend(got.into_iter().zip(batch.iter().map(Record::kind)));
    }
    let s = o.stats().expect("stats");
    assert!(s.used_bytes <= 1024 * 1024, "used {} bytes", s.used_bytes);
    let present: HashSet<i64> = ids(&o.peek("a", usize::MAX).expect("peek"))
        .into_iter()
        .collect();

    // Every alert and every summary survived.
    for (id, kind) in &all {
        if matches!(kind, RecordKind::Alert | RecordKind::Summary) {
            assert!(present.contains(id), "{kind} {id} was evicted");
        }
    }
    // Readings and windows that remain are exactly the newest ones: no gaps.
    let low: Vec<(i64, bool)> = all
        .iter()
        .filter(|(_, k)| k.priority() == 0)
        .map(|(id, _)| (*id, present.contains(id)))
        .collect();
    let first_kept = low
        .iter()
        .position(|(_, p)| *p)
        .expect("some readings remain");
    assert!(first_kept > 0, "something was evicted");
    assert!(
        low[first_kept..].iter().all(|(_, p)| *p),
        "kept readings are contiguous"
    );
    // The counters account for exactly what is missing.
    let missing = |k: RecordKind| {
        all.iter()
            .filter(|(id, kind)| *kind == k && !present.contains(id))
            .count() as u64
    };
    let ev = |name: &str| s.evicted.get(name).copied().unwrap_or(0);
    assert_eq!(ev("evicted_size.reading"), missing(RecordKind::Reading));
    assert_eq!(ev("evicted_size.window"), missing(RecordKind::Window));
    assert_eq!(ev("evicted_size.alert"), 0);
    assert_eq!(ev("evicted_size.summary"), 0);
    assert_eq!(s.depth["alert"], 60);
    assert!(
        s.depth["reading"] > 3000,
        "the bound is used, not emptied: {:?}",
        s.depth
    );
    drop(o);

    // The counters are persisted.
    let o = Outbox::open_read_only(&path).expect("read-only");
    assert_eq!(o.stats().expect("stats").evicted, s.evicted);
}

#[test]
fn alerts_go_last_and_then_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let settings = OutboxSettings {
        max_size_mb: 1,
        ..OutboxSettings::default()
    };
    let mut o = Outbox::open(&path, &settings, "gw", &["a"]).expect("open");
    o.append(&(0..200).map(reading).collect::<Vec<_>>())
        .expect("readings");
    o.append(&(0..50).map(summary).collect::<Vec<_>>())
        .expect("summaries");
    let mut alert_ids = Vec::new();
    for b in 0..30i64 {
        let batch: Vec<Record> = (0..200).map(|i| alert(b * 200 + i)).collect();
        alert_ids.extend(o.append(&batch).expect("alerts"));
    }
    let s = o.stats().expect("stats");
    assert_eq!(s.depth["reading"], 0);
    assert_eq!(s.depth["summary"], 0);
    assert_eq!(s.evicted["evicted_size.reading"], 200);
    assert_eq!(s.evicted["evicted_size.summary"], 50);
    let kept = s.depth["alert"] as usize;
    assert!(kept > 0 && kept < alert_ids.len());
    assert_eq!(
        s.evicted["evicted_size.alert"] as usize,
        alert_ids.len() - kept
    );
    // The newest alerts are the ones kept.
    let present = ids(&o.peek("a", usize::MAX).expect("peek"));
    assert_eq!(present, alert_ids[alert_ids.len() - kept..].to_vec());
}

#[test]
fn block_policy_returns_full_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let settings = OutboxSettings {
        max_size_mb: 1,
        full_policy: FullPolicy::Block,
        ..OutboxSettings::default()
    };
    let mut o = Outbox::open(&path, &settings, "gw", &["a"]).expect("open");
    let mut stored = 0u64;
    let mut next = 0i64;
    let err = loop {
        // Fresh readings each round: the outbox stores a reading only once.
        match o.append(&(next..next + 500).map(reading).collect::<Vec<_>>()) {
            Ok(ids) => stored += ids.len() as u64,
            Err(e) => break e,
        }
        next += 500;
        assert!(stored < 100_000, "never got full");
    };
    assert!(err.is_full(), "{err}");
    assert!(
        err.to_string().contains("outbox.db"),
        "names the file: {err}"
    );
    let s = o.stats().expect("stats");
    assert_eq!(s.total_records, stored, "the refused batch stored nothing");
    assert!(s.evicted.is_empty(), "block never evicts: {:?}", s.evicted);
    // Acks make room again.
    let newest = o
        .peek("a", usize::MAX)
        .expect("peek")
        .last()
        .map(|r| r.id)
        .expect("records");
    o.ack("a", newest).expect("ack");
    o.append(&(0..500).map(reading).collect::<Vec<_>>())
        .expect("room after ack");
}

#[test]
fn dead_letters_do_not_block_and_requeue_brings_them_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut o = open(&path, &["a", "b"]);
    let id = o
        .append(&[reading(0), alert(1), reading(2)])
        .expect("append");
    o.dead_letter("a", id[1], "422: negative value")
        .expect("dead letter");
    assert_eq!(ids(&o.peek("a", 10).expect("peek")), vec![id[0], id[2]]);
    assert_eq!(
        ids(&o.peek("b", 10).expect("peek")),
        id,
        "b is not affected"
    );
    let dl = o.dead_letters(None, 10).expect("list");
    assert_eq!(dl.len(), 1);
    assert_eq!((dl[0].id, dl[0].upstream.as_str()), (id[1], "a"));
    assert_eq!(dl[0].reason, "422: negative value");
    assert_eq!(dl[0].record.as_ref(), Some(&alert(1)));
    let original_key = dl[0].key.clone();
    assert_eq!(original_key, o.key_for(id[1]));

    // Still ahead of a's cursor: requeue just lifts the dead letter.
    assert_eq!(o.requeue(&[id[1]]).expect("requeue"), 1);
    assert_eq!(ids(&o.peek("a", 10).expect("peek")), id);

    // Dead-letter again, let both pass it: the record leaves `records`, the copy stays.
    o.dead_letter("a", id[1], "422 again").expect("dead letter");
    o.ack("a", id[2]).expect("ack");
    o.ack("b", id[2]).expect("ack");
    let s = o.stats().expect("stats");
    assert_eq!((s.total_records, s.dead_letters), (0, 1));
    // Dead-lettered twice, but the first was requeued while still ahead of a's
    // cursor (a then delivers it): one record stays dead-lettered for a.
    assert_eq!(s.counters["dead_lettered:a"], 1);
    for u in &s.upstreams {
        assert_eq!(
            s.appended,
            u.delivered + u.pending + u.dead_lettered + u.unsent_evicted,
            "{u:?}"
        );
    }
    // Requeue re-appends a copy with a new id and the original key.
    assert_eq!(o.requeue(&[id[1], 12345]).expect("requeue"), 1);
    let back = o.peek("a", 10).expect("peek");
    assert_eq!(back.len(), 1);
    assert!(back[0].id > id[2]);
    assert_eq!(back[0].key, original_key);
    assert_eq!(back[0].record, alert(1));
    assert!(o.dead_letters(None, 10).expect("list").is_empty());
    let err = o
        .dead_letter("a", 999_999, "x")
        .expect_err("no such record");
    assert!(matches!(err, OutboxError::NoSuchRecord { .. }), "{err}");
}

#[test]
fn state_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut o = open(&path, &["a"]);
    assert_eq!(o.get_state("baseline/press-01.vib").expect("get"), None);
    o.put_state("baseline/press-01.vib", b"{\"mean\":1.5}")
        .expect("put");
    o.put_state("baseline/press-01.vib", b"{\"mean\":2.5}")
        .expect("replace");
    drop(o);
    let o = open(&path, &["a"]);
    assert_eq!(
        o.get_state("baseline/press-01.vib")
            .expect("get")
            .as_deref(),
        Some(&b"{\"mean\":2.5}"[..])
    );
}

#[test]
fn read_only_open_sees_a_live_writer_and_cli_helpers_print() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut o = open(&path, &["timescale"]);
    let id = o
        .append(&[reading(1), alert(2), summary(3)])
        .expect("append");
    o.dead_letter("timescale", id[2], "constraint violation")
        .expect("dead letter");

    // The writer stays open; a read-only reader works next to it.
    let ro = Outbox::open_read_only(&path).expect("read-only");
    let s = ro.stats().expect("stats");
    assert_eq!(s.total_records, 3);
    assert_eq!(s.gateway_id, "gw-7");
    assert_eq!(s.upstreams.len(), 1);
    assert_eq!(s.upstreams[0].pending, 3);
    assert!(s.upstreams[0].lag_secs.is_some());
    let mut ro = ro;
    assert!(matches!(
        ro.append(&[reading(4)]),
        Err(OutboxError::ReadOnly { .. })
    ));

    let text = cli_stats(&path).expect("cli stats");
    assert!(text.contains("timescale"), "{text}");
    assert!(text.contains("alert"), "{text}");

    let mut out = Vec::new();
    let n = cli_dump(&path, Some(RecordKind::Alert), 10, &mut out).expect("dump");
    assert_eq!(n, 1);
    let line: serde_json::Value =
        serde_json::from_slice(out.split(|b| *b == b'\n').next().expect("line")).expect("json");
    assert_eq!(line["id"], id[1]);
    assert_eq!(line["kind"], "alert");
    assert_eq!(line["key"], format!("gw-7:{}:{}", o.epoch(), id[1]));
    assert_eq!(line["payload"]["anomaly_type"], "vibration_anomaly");
    assert!(line["created"].as_str().expect("created").ends_with('Z'));

    let mut out = Vec::new();
    cli_dead_letters(&path, &[], &mut out).expect("list");
    let text = String::from_utf8(out).expect("utf8");
    assert!(text.contains("constraint violation"), "{text}");
    let mut out = Vec::new();
    cli_dead_letters(&path, &[id[2]], &mut out).expect("requeue");
    let text = String::from_utf8(out).expect("utf8");
    assert!(text.starts_with("# requeued 1 of 1"), "{text}");
    assert_eq!(o.peek("timescale", 10).expect("peek").len(), 3);

    // The CLI never creates a database.
    let missing = dir.path().join("nope.db");
    assert!(cli_stats(&missing).is_err());
    assert!(!missing.exists());
}

#[test]
fn a_redelivered_reading_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut o = open(&path, &["timescale"]);
    let batch: Vec<Record> = (0..5).map(reading).collect();
    assert_eq!(o.append(&batch).expect("append").len(), 5);
    // The same readings again (an MQTT message redelivered after a crash), plus one new.
    let mut again = batch.clone();
    again.push(reading(5));
    let ids = o.append(&again).expect("append again");
    assert_eq!(ids.len(), 1, "only the new reading is stored");
    let all = o.peek("timescale", 100).expect("peek");
    let seen: Vec<i64> = all
        .iter()
        .filter_map(|r| reading_index(&r.record))
        .collect();
    assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(
        o.stats()
            .expect("stats")
            .counters
            .get("duplicate_readings_skipped"),
        Some(&5)
    );
    // Alerts, windows and summaries are never deduplicated here.
    assert_eq!(o.append(&[alert(1), alert(1)]).expect("alerts").len(), 2);
}
