//! The Redis upstream against the real Redis on 127.0.0.1:6379: alerts to the stream
//! and the pub/sub channel, latest values, re-sent alerts skipped, and an outage
//! in the middle of the flow (through a cutting TCP proxy). Each test has its own
//! key prefix and deletes its keys.

mod upstream_common;

use edgegw::config::RedisUpstream;
use edgegw::record::{now_us, AlertState, Record};
use edgegw::upstream::redis::RedisSink;
use edgegw::upstream::{run_forwarder, UpstreamMetrics};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use upstream_common::*;

fn cfg(port: u16, prefix: &str) -> RedisUpstream {
    toml::from_str(&format!(
        "url = \"redis://127.0.0.1:{port}/0\"\nkey_prefix = \"{prefix}\"\n[delivery]\ntimeout_ms = 2000\n"
    ))
    .unwrap()
}

async fn conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open("redis://127.0.0.1:6379/0")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379 (scripts/test starts it)")
}

async fn cleanup(prefix: &str) {
    let mut c = conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

async fn run_until_drained(
    sink: RedisSink,
    outbox: &edgegw::outbox::OutboxHandle,
) -> edgegw::upstream::ForwarderReport {
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_forwarder(
        sink,
        outbox.clone(),
        fast_delivery(100),
        Arc::new(Notify::new()),
        Arc::new(UpstreamMetrics::default()),
        cancel.clone(),
    ));
    wait_drained(outbox, "redis", Duration::from_secs(60)).await;
    cancel.cancel();
    task.await.unwrap()
}

async fn stream_keys(c: &mut redis::aio::MultiplexedConnection, stream: &str) -> Vec<String> {
    let v: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(c)
        .await
        .unwrap();
    v.ids
        .iter()
        .map(|e| e.get::<String>("record_key").expect("record_key field"))
        .collect()
}

#[tokio::test]
async fn alerts_go_to_stream_and_channel_latest_values_to_hashes_resend_is_skipped() {
    let prefix = format!("{}:", unique("edgegw_test"));
    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(dir.path(), &["redis", "other"]);
    let sink = RedisSink::new(cfg(6379, &prefix), GATEWAY);
    let (stream, channel) = (sink.stream_key(), sink.channel());
    let latest = sink.latest_key("press.rms");

    // Listen on the live channel first.
    let client = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(&channel).await.unwrap();

    let ep = now_us() - 60_000_000;
    let mut records: Vec<Record> = (0..20).map(|i| reading("press.rms", i, i as f64)).collect();
    records.push(alert("press.vib", ep, ep, AlertState::Open, 0.7));
    records.push(window("press.vib", 3));
    records.push(alert("press.vib", ep, ep + 1, AlertState::Resolved, 0.1));
    records.push(summary("press.rms", 0, 1.0, 1));
    let Record::Reading(last) = &records[19] else {
        unreachable!("the 20th record is the last reading")
    };
    let last_ts = last.ts_us;
    append(&outbox, records).await;
    let report = run_until_drained(sink, &outbox).await;
    assert_eq!(report.acked, 24);

    let mut c = conn().await;
    let keys = stream_keys(&mut c, &stream).await;
    assert_eq!(keys.len(), 2);
    let h: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&latest)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(h.get("value").map(String::as_str), Some("19"), "{h:?}");
    // The whole latest-value hash of the last reading, field by field.
    assert_eq!(h.get("unit").map(String::as_str), Some("mm/s"), "{h:?}");
    assert_eq!(h.get("quality").map(String::as_str), Some("1"), "{h:?}");
    assert_eq!(
        h.get("sensor_type").map(String::as_str),
        Some("vibration"),
        "{h:?}"
    );
    assert_eq!(
        h.get("timestamp"),
        Some(&edgegw::record::format_rfc3339(last_ts)),
        "{h:?}"
    );
    assert!(h.get("record_key").is_some_and(|k| !k.is_empty()), "{h:?}");
    let rms: Option<String> = redis::cmd("HGET")
        .arg(format!("{prefix}latest:press.vib.rms"))
        .arg("value")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(rms.as_deref(), Some("3.5"));
    {
        use futures_util::StreamExt;
        let mut msgs = pubsub.on_message();
        for _ in 0..2 {
            let m = tokio::time::timeout(Duration::from_secs(5), msgs.next())
                .await
                .expect("a live alert")
                .unwrap();
            let v: serde_json::Value =
                serde_json::from_str(&m.get_payload::<String>().unwrap()).unwrap();
            assert_eq!(v["sensor_id"], "press.vib");
            assert_eq!(v["anomaly_type"], "vibration_anomaly");
        }
    }

    // Re-send: the second cursor ("other") has acknowledged nothing, so it sees the
    // same records with the same keys; a fresh sink (new connection) sends them again.
    let again = outbox.with(|o| o.peek("other", 100)).await.unwrap();
    assert_eq!(again.len(), 24);
    let mut sink = RedisSink::new(cfg(6379, &prefix), GATEWAY);
    let out = edgegw::upstream::Sink::deliver(&mut sink, &again).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(
        stream_keys(&mut c, &stream).await.len(),
        2,
        "re-sent alerts were skipped"
    );
    cleanup(&prefix).await;
}

#[tokio::test]
async fn redis_outage_mid_flow_every_alert_exactly_once() {
    let prefix = format!("{}:", unique("edgegw_test"));
    let proxy = Proxy::start("127.0.0.1:6379").await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(dir.path(), &["redis"]);
    let sink = RedisSink::new(cfg(proxy.port, &prefix), GATEWAY);
    let stream = sink.stream_key();
    let cancel = CancellationToken::new();
    let metrics = Arc::new(UpstreamMetrics::default());
    let notify = Arc::new(Notify::new());
    let task = tokio::spawn(run_forwarder(
        sink,
        outbox.clone(),
        fast_delivery(25),
        notify.clone(),
        metrics.clone(),
        cancel.clone(),
    ));
    let base = now_us() - 3_600_000_000;
    let mut sent_keys = Vec::new();
    for b in 0..30i64 {
        if b == 8 {
            proxy.cut();
        }
        if b == 22 {
            proxy.restore();
        }
        let records: Vec<Record> = (0..20)
            .map(|j| {
                let i = b * 20 + j;
                alert(
                    &format!("press.s{}", i % 4),
                    base + i,
                    base + i,
                    AlertState::Open,
                    0.5,
                )
            })
            .collect();
        let ids = append(&outbox, records).await;
        sent_keys.extend(ids);
        notify.notify_waiters();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    wait_drained(&outbox, "redis", Duration::from_secs(60)).await;
    cancel.cancel();
    let report = task.await.unwrap();
    assert!(metrics.snapshot().retried > 0, "the outage was not felt");
    assert_eq!(report.dead_lettered, 0);
    let mut c = conn().await;
    let mut keys = stream_keys(&mut c, &stream).await;
    assert_eq!(keys.len(), sent_keys.len(), "every alert exactly once");
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), sent_keys.len());
    cleanup(&prefix).await;
}
