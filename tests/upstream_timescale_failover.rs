//! The TimescaleDB upstream against a clustered database: a primary and its
//! streaming replica (two PostgreSQL servers started by the test), named in one
//! multi-host URL with `target_session_attrs=read-write`. The forwarder writes to
//! whichever host accepts writes (the replica, listed first, is passed over), and
//! after a failover (primary stopped, replica promoted) it reconnects to the new
//! primary by itself and delivers the rest: every reading exactly once.

#[path = "support/pg.rs"]
mod pg;
mod upstream_common;

use edgegw::upstream::timescale::TimescaleSink;
use edgegw::upstream::{run_forwarder, schema, UpstreamMetrics};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use upstream_common::*;

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.expect(sql).get(0)
}

fn readings(range: std::ops::Range<i64>) -> Vec<edgegw::record::Record> {
    range.map(|i| reading("press", i, i as f64)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_host_url_follows_the_primary_through_a_failover() {
    let primary = pg::PgServer::primary();
    let replica = pg::PgServer::replica_of(&primary);
    schema::init_schema(&connect(&primary.conninfo()).await)
        .await
        .expect("init schema on the primary");

    // The replica first: a read-write session must pass it over.
    let url = format!(
        "postgres://edgegw@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        replica.port, primary.port
    );
    let config = timescale_cfg(&url);
    assert!(
        edgegw::config::UpstreamsConfig {
            timescale: Some(config.clone()),
            ..Default::default()
        }
        .validate()
        .is_empty(),
        "a multi-host URL is a valid upstream URL"
    );
    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(dir.path(), &["timescale"]);
    let cancel = CancellationToken::new();
    let notify = Arc::new(Notify::new());
    let metrics = Arc::new(UpstreamMetrics::default());
    let task = tokio::spawn(run_forwarder(
        TimescaleSink::new(config, GATEWAY, HashMap::new()),
        outbox.clone(),
        fast_delivery(100),
        notify.clone(),
        metrics.clone(),
        cancel.clone(),
    ));

    append(&outbox, readings(0..500)).await;
    notify.notify_one();
    wait_drained(&outbox, "timescale", Duration::from_secs(30)).await;
    let on_primary = connect(&primary.conninfo()).await;
    assert_eq!(
        count(&on_primary, "SELECT count(*) FROM sensor_readings").await,
        500
    );
    drop(on_primary);
    // The replica has them too (streamed), and refuses writes.
    let on_replica = connect(&replica.conninfo()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while count(&on_replica, "SELECT count(*) FROM sensor_readings").await < 500 {
        assert!(tokio::time::Instant::now() < deadline, "replication lags");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(on_replica
        .batch_execute("DELETE FROM sensor_readings")
        .await
        .is_err());
    drop(on_replica);

    // Failover: the primary goes away, the replica is promoted.
    drop(primary);
    append(&outbox, readings(500..1000)).await;
    notify.notify_one();
    replica.promote();
    wait_drained(&outbox, "timescale", Duration::from_secs(60)).await;
    let on_new_primary = connect(&replica.conninfo()).await;
    assert_eq!(
        count(&on_new_primary, "SELECT count(*) FROM sensor_readings").await,
        1000,
        "every reading arrived, none twice; log of the new primary:\n{}",
        replica.log()
    );
    assert_eq!(
        count(
            &on_new_primary,
            "SELECT count(DISTINCT (sensor_id, timestamp)) FROM sensor_readings"
        )
        .await,
        1000
    );
    cancel.cancel();
    task.await.expect("forwarder");
}
