//! The writer stage: grouping, acks only after commit, orderly shutdown, pushback.

mod outbox_common;

use edgegw::outbox::*;
use edgegw::sources::Ack;
use outbox_common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

fn rows_seen_by_another_connection(path: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("second connection");
    c.query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_fire_only_after_commit_and_forwarders_are_woken() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let settings = OutboxSettings {
        batch_linger_ms: 50,
        ..OutboxSettings::default()
    };
    let outbox = OutboxHandle::new(Outbox::open(&path, &settings, "gw", &["a"]).expect("open"));
    let (tx, rx) = mpsc::channel(8);
    let notify = Arc::new(Notify::new());
    let writer = tokio::spawn(run_writer(outbox.clone(), rx, settings, notify.clone()));

    let woken = notify.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();

    for round in 0..5i64 {
        let (ack, committed) = Ack::new();
        tx.send(OutboxBatch {
            records: (round * 10..round * 10 + 10).map(reading).collect(),
            acks: vec![ack],
            state: Vec::new(),
        })
        .await
        .expect("send");
        committed.await.expect("ack fired, not dropped");
        // The moment the ack arrives the rows are visible to anyone else.
        assert_eq!(rows_seen_by_another_connection(&path), (round + 1) * 10);
    }
    tokio::time::timeout(Duration::from_secs(5), woken)
        .await
        .expect("forwarders were notified");
    drop(tx);
    let report = writer.await.expect("writer task");
    assert_eq!(report.records_committed, 50);
    assert_eq!(report.records_abandoned, 0);
    let got = outbox.peek("a", 100).await.expect("peek");
    assert_eq!(got.len(), 50);
    assert_eq!(got[49].record, reading(49));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_channel_commits_everything_in_flight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let settings = OutboxSettings {
        batch_max_records: 64,
        batch_linger_ms: 1000,
        ..OutboxSettings::default()
    };
    let outbox = OutboxHandle::new(Outbox::open(&path, &settings, "gw", &["a"]).expect("open"));
    let (tx, rx) = mpsc::channel(1000);
    let mut acks = Vec::new();
    // Everything is queued before the writer even starts, then the input closes.
    for i in 0..300i64 {
        let (ack, committed) = Ack::new();
        acks.push(committed);
        tx.send(OutboxBatch {
            records: vec![reading(i)],
            acks: vec![ack],
            state: Vec::new(),
        })
        .await
        .expect("send");
    }
    drop(tx);
    let report = run_writer(outbox.clone(), rx, settings, Arc::new(Notify::new())).await;
    assert_eq!(report.records_committed, 300);
    assert!(
        report.transactions >= 5,
        "grouped by batch_max_records: {report:?}"
    );
    assert!(report.transactions <= 300 / 64 + 1, "grouped: {report:?}");
    for committed in acks {
        committed.await.expect("every ack fired");
    }
    assert_eq!(rows_seen_by_another_connection(&path), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_pushes_back_until_forwarders_make_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let settings = OutboxSettings {
        max_size_mb: 1,
        full_policy: FullPolicy::Block,
        batch_linger_ms: 0,
        ..OutboxSettings::default()
    };
    let outbox = OutboxHandle::new(Outbox::open(&path, &settings, "gw", &["a"]).expect("open"));
    // Fill it to the brim.
    let mut i = 0i64;
    loop {
        let (_, res) = outbox.append((i..i + 200).map(reading).collect()).await;
        match res {
            Ok(_) => i += 200,
            Err(e) if e.is_full() => break,
            Err(e) => panic!("{e}"),
        }
    }
    let (tx, rx) = mpsc::channel(1);
    let writer = tokio::spawn(run_writer(
        outbox.clone(),
        rx,
        settings,
        Arc::new(Notify::new()),
    ));
    let (ack, mut committed) = Ack::new();
    tx.send(OutboxBatch {
        records: (i..i + 200).map(reading).collect(),
        acks: vec![ack],
        state: Vec::new(),
    })
    .await
    .expect("send");
    // The writer holds the batch (it may also take a following one into its group):
    // the channel (capacity 1) fills up and stays full — observed, not waited for —
    // and the held batch is neither acked nor stored.
    let mut full = false;
    for _ in 0..200 {
        match tx.try_send(OutboxBatch::default()) {
            Err(mpsc::error::TrySendError::Full(_)) => {
                full = true;
                break;
            }
            Err(e) => panic!("{e}"),
            // Taken by the writer (grouping): offer the next one.
            Ok(()) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(full, "the bounded channel pushes back on the pipeline");
    assert!(committed.try_recv().is_err(), "not acked while full");
    let stored = outbox.peek("a", usize::MAX).await.expect("peek");
    assert!(
        !stored.iter().any(|r| r.record == reading(i)),
        "not stored while full"
    );
    // A forwarder drains: the held batch goes in, nothing was dropped.
    let pending = outbox.peek("a", usize::MAX).await.expect("peek");
    let last = pending.last().map(|r| r.id).expect("records");
    outbox.ack("a", last).await.expect("ack");
    tokio::time::timeout(Duration::from_secs(10), committed)
        .await
        .expect("acked after room was made")
        .expect("ack fired");
    drop(tx);
    let report = writer.await.expect("writer");
    assert_eq!(report.records_committed, 200);
    let after = outbox.peek("a", usize::MAX).await.expect("peek");
    assert_eq!(after.first().map(|r| r.record.clone()), Some(reading(i)));
}
