//! The TimescaleDB upstream against the real PostgreSQL on 127.0.0.1:5432: schema
//! creation and checks, every record kind, alert episodes, re-sending everything,
//! and a database outage in the middle of the flow (through a cutting TCP proxy).

mod upstream_common;

use edgegw::record::{AlertState, Record};
use edgegw::upstream::timescale::TimescaleSink;
use edgegw::upstream::{run_forwarder, schema, UpstreamMetrics};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use upstream_common::*;

async fn init(db: &TestDb) {
    let client = db.client().await;
    schema::init_schema(&client).await.expect("init schema");
}

fn sink(url: &str) -> TimescaleSink {
    TimescaleSink::new(
        timescale_cfg(url),
        GATEWAY,
        HashMap::from([
            ("press".to_string(), "Hall 2".to_string()),
            ("line.2".to_string(), "Hall 3".to_string()),
        ]),
    )
}

struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<edgegw::upstream::ForwarderReport>,
    metrics: Arc<UpstreamMetrics>,
    notify: Arc<Notify>,
}

fn start(
    sink: TimescaleSink,
    outbox: &edgegw::outbox::OutboxHandle,
    delivery: edgegw::config::Delivery,
) -> Running {
    let cancel = CancellationToken::new();
    let metrics = Arc::new(UpstreamMetrics::default());
    let notify = Arc::new(Notify::new());
    let task = tokio::spawn(run_forwarder(
        sink,
        outbox.clone(),
        delivery,
        notify.clone(),
        metrics.clone(),
        cancel.clone(),
    ));
    Running {
        cancel,
        task,
        metrics,
        notify,
    }
}

impl Running {
    async fn stop(self) -> edgegw::upstream::ForwarderReport {
        self.cancel.cancel();
        self.task.await.expect("forwarder task")
    }
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.expect(sql).get(0)
}

#[tokio::test]
async fn init_schema_on_an_empty_database_then_again_on_the_existing_one() {
    let db = TestDb::create().await;
    let client = db.client().await;
    let first = schema::init_schema(&client).await.expect("first init");
    assert_eq!(
        first.created,
        [
            "sensors",
            "sensor_readings",
            "anomaly_alerts",
            "sensor_readings_hourly"
        ]
    );
    // Plain PostgreSQL here: no hypertable, and no table with the cloud's aggregate name.
    assert_eq!(first.hypertable, None);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM pg_class WHERE relname = 'sensor_readings_summary_hourly'"
        )
        .await,
        0
    );
    assert!(schema::check_schema(&client).await.unwrap().is_empty());

    // Data in place, then init again: nothing created, nothing lost.
    client
        .batch_execute(
            "INSERT INTO sensors (id, sensor_id, type) VALUES (gen_random_uuid(), 'keep.me', 'general');
             INSERT INTO sensor_readings (sensor_id, sensor_type, value, timestamp)
             VALUES ('keep.me', 'general', 42, now())",
        )
        .await
        .unwrap();
    let second = schema::init_schema(&client).await.expect("second init");
    assert!(second.created.is_empty(), "{second:?}");
    assert_eq!(second.existing.len(), 4);
    assert_eq!(
        count(&client, "SELECT count(*) FROM sensor_readings").await,
        1
    );
    drop(client);
    db.drop_db().await;
}

#[tokio::test]
async fn check_names_the_missing_table_and_column() {
    let db = TestDb::create().await;
    init(&db).await;
    let client = db.client().await;
    client
        .batch_execute(
            "ALTER TABLE sensor_readings DROP COLUMN quality;
             DROP TABLE sensor_readings_hourly;",
        )
        .await
        .unwrap();
    let problems = schema::check_schema(&client).await.unwrap();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.starts_with("table sensor_readings, column quality: column is missing")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("table sensor_readings_hourly: table is missing")),
        "{text:#?}"
    );
    assert_eq!(problems.len(), 2, "{text:#?}");
    drop(client);
    db.drop_db().await;
}

#[tokio::test]
async fn every_kind_lands_in_its_table_and_episodes_are_one_row() {
    let db = TestDb::create().await;
    init(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(dir.path(), &["timescale"]);
    let ep = edgegw::record::now_us() - 600_000_000;
    let bucket = ep - ep % 3_600_000_000;
    let mut records: Vec<Record> = (0..50).map(|i| reading("press.rms", i, i as f64)).collect();
    records.push(window("press.vib", 1));
    records.push(alert("press.vib", ep, ep, AlertState::Open, 0.7));
    records.push(alert(
        "press.vib",
        ep,
        ep + 1_000_000,
        AlertState::Update,
        0.9,
    ));
    records.push(summary("press.rms", bucket, 10.0, 100));
    records.push(summary("press.rms", bucket, 12.0, 200)); // same bucket, newer wins
                                                           // A device id with a dot: a summary-only sensor gets its device's location.
    records.push(summary("line.2.temp", bucket, 40.0, 10));
    records.push(alert(
        "press.vib",
        ep,
        ep + 2_000_000,
        AlertState::Resolved,
        0.1,
    ));
    // Refused for good: not a number.
    records.push(reading("press.rms", 1000, f64::NAN));
    append(&outbox, records).await;

    let run = start(sink(&db.url), &outbox, fast_delivery(20));
    wait_drained(&outbox, "timescale", Duration::from_secs(60)).await;
    let report = run.stop().await;
    assert_eq!(report.dead_lettered, 1);

    let c = db.client().await;
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM sensor_readings WHERE sensor_id = 'press.rms'"
        )
        .await,
        50
    );
    assert_eq!(
        c.query_one(
            "SELECT sum(value) FROM sensor_readings WHERE sensor_id = 'press.rms'",
            &[]
        )
        .await
        .unwrap()
        .get::<_, f64>(0),
        (0..50).sum::<i64>() as f64
    );
    // Window -> derived channels with the full feature vector in sensor_metadata.
    let row = c
        .query_one(
            "SELECT value, unit, sensor_metadata->'features'->>'kurtosis', sensor_type
             FROM sensor_readings WHERE sensor_id = 'press.vib.rms'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, f64>(0), 1.5);
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("g"));
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("3.0"));
    assert_eq!(row.get::<_, String>(3), "bearing");
    for derived in [
        "press.vib.kurtosis",
        "press.vib.dominant_freq",
        "press.vib.anomaly_score",
    ] {
        assert_eq!(
            count(
                &c,
                &format!("SELECT count(*) FROM sensor_readings WHERE sensor_id = '{derived}'")
            )
            .await,
            1,
            "{derived}"
        );
    }
    // Sensors registered, with the device's location.
    assert_eq!(
        c.query_one(
            "SELECT location, status, type FROM sensors WHERE sensor_id = 'press.rms'",
            &[]
        )
        .await
        .unwrap()
        .get::<_, Option<String>>(0)
        .as_deref(),
        Some("Hall 2")
    );
    assert_eq!(
        c.query_one(
            "SELECT location FROM sensors WHERE sensor_id = 'line.2.temp'",
            &[]
        )
        .await
        .unwrap()
        .get::<_, Option<String>>(0)
        .as_deref(),
        Some("Hall 3")
    );
    // One alert row for the episode: opened, updated, resolved.
    let a = c
        .query_one(
            "SELECT count(*) OVER (), status, confidence, severity FROM anomaly_alerts",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(a.get::<_, i64>(0), 1);
    assert_eq!(a.get::<_, String>(1), "resolved");
    assert_eq!(a.get::<_, f64>(2), 0.9);
    assert_eq!(a.get::<_, i32>(3), 5);
    // Summary upserted.
    let s = c
        .query_one(
            "SELECT avg, count, max, min FROM sensor_readings_hourly WHERE sensor_id = 'press.rms'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s.get::<_, f64>(0), 12.0);
    assert_eq!(s.get::<_, i64>(1), 200);
    // The NaN reading is in the dead-letter table with its reason.
    let dl = outbox
        .with(|o| o.dead_letters(Some("timescale"), 10))
        .await
        .unwrap();
    assert_eq!(dl.len(), 1);
    assert!(
        dl[0].reason.contains("not a finite number"),
        "{}",
        dl[0].reason
    );
    drop(c);
    db.drop_db().await;
}

/// Copies the outbox file set (closed) so that a later restore brings every cursor
/// back: "acknowledge nothing, restart".
fn snapshot(dir: &std::path::Path, to: &str) {
    for ext in ["", "-wal", "-shm"] {
        let from = dir.join(format!("outbox.db{ext}"));
        let dest = dir.join(format!("{to}{ext}"));
        if from.exists() {
            std::fs::copy(&from, &dest).unwrap();
        } else {
            let _ = std::fs::remove_file(&dest);
        }
    }
}

fn restore(dir: &std::path::Path, from: &str) {
    for ext in ["", "-wal", "-shm"] {
        let src = dir.join(format!("{from}{ext}"));
        let dest = dir.join(format!("outbox.db{ext}"));
        if src.exists() {
            std::fs::copy(&src, &dest).unwrap();
        } else {
            let _ = std::fs::remove_file(&dest);
        }
    }
}

#[tokio::test]
async fn resending_everything_duplicates_nothing() {
    let db = TestDb::create().await;
    init(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let ep = edgegw::record::now_us() - 900_000_000;
    {
        let outbox = outbox(dir.path(), &["timescale"]);
        let mut records: Vec<Record> = (0..3000)
            .map(|i| reading(&format!("press.ch{}", i % 5), i, (i % 97) as f64))
            .collect();
        for i in 0..10 {
            records.push(window("press.vib", 10_000 + i));
        }
        records.push(alert("press.vib", ep, ep, AlertState::Open, 0.5));
        records.push(alert("press.vib", ep, ep + 5, AlertState::Resolved, 0.1));
        records.push(summary("press.ch1", ep - ep % 3_600_000_000, 3.0, 9));
        append(&outbox, records).await;
    }
    snapshot(dir.path(), "before.db");

    let first = async {
        let outbox = outbox(dir.path(), &["timescale"]);
        let run = start(sink(&db.url), &outbox, fast_delivery(500));
        wait_drained(&outbox, "timescale", Duration::from_secs(120)).await;
        run.stop().await
    }
    .await;
    assert_eq!(first.acked, 3013);

    let c = db.client().await;
    let totals = "SELECT count(*), sum(value)::float8 FROM sensor_readings";
    let before = c.query_one(totals, &[]).await.unwrap();
    let (n, sum): (i64, f64) = (before.get(0), before.get(1));
    assert_eq!(n, 3000 + 10 * 4);

    // Restart from the copy: every cursor back at the start, everything sent again.
    restore(dir.path(), "before.db");
    let outbox = outbox(dir.path(), &["timescale"]);
    let run = start(sink(&db.url), &outbox, fast_delivery(700));
    wait_drained(&outbox, "timescale", Duration::from_secs(120)).await;
    let again = run.stop().await;
    assert_eq!(again.acked, 3013, "everything was sent a second time");
    let after = c.query_one(totals, &[]).await.unwrap();
    assert_eq!(after.get::<_, i64>(0), n);
    assert_eq!(after.get::<_, f64>(1), sum);
    assert_eq!(count(&c, "SELECT count(*) FROM anomaly_alerts").await, 1);
    assert_eq!(
        c.query_one("SELECT status FROM anomaly_alerts", &[])
            .await
            .unwrap()
            .get::<_, String>(0),
        "resolved",
        "a re-sent open must not reopen a resolved episode"
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM sensor_readings_hourly").await,
        1
    );
    drop(c);
    db.drop_db().await;
}

#[tokio::test]
async fn database_outage_mid_flow_loses_and_duplicates_nothing() {
    let db = TestDb::create().await;
    init(&db).await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let via_proxy = format!("postgres://root@127.0.0.1:{}/{}", proxy.port, db.name);
    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(dir.path(), &["timescale"]);
    let run = start(sink(&via_proxy), &outbox, fast_delivery(200));

    // The "source": 40 batches of 250 readings, one every 50 ms; the database goes
    // away after batch 10 and comes back after batch 30.
    let mut expected_n = 0i64;
    let mut expected_sum = 0f64;
    for b in 0..40i64 {
        if b == 10 {
            proxy.cut();
        }
        if b == 30 {
            proxy.restore();
        }
        let records: Vec<Record> = (0..250)
            .map(|j| {
                let i = b * 250 + j;
                let v = ((i * 7919) % 1000) as f64 / 4.0;
                expected_n += 1;
                expected_sum += v;
                reading(&format!("press.s{}", i % 3), i, v)
            })
            .collect();
        append(&outbox, records).await;
        run.notify.notify_waiters();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_drained(&outbox, "timescale", Duration::from_secs(120)).await;
    let metrics = run.metrics.snapshot();
    let report = run.stop().await;
    assert!(metrics.retried > 0, "the outage was not felt: {metrics:?}");
    assert_eq!(report.dead_lettered, 0);

    let c = db.client().await;
    let row = c
        .query_one("SELECT count(*), count(DISTINCT (timestamp, sensor_id)), sum(value)::float8 FROM sensor_readings", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), expected_n);
    assert_eq!(row.get::<_, i64>(1), expected_n);
    assert_eq!(row.get::<_, f64>(2), expected_sum);
    drop(c);
    db.drop_db().await;
}
