//! The Redis upstream against a Redis Cluster of its own: three masters started by
//! the test (`redis-server --cluster-enabled yes` on free ports, joined with
//! `redis-cli --cluster create`), the gateway given one node only. Alerts reach the
//! stream under the name the cloud reads, in order; the latest-value hashes of
//! sensors whose keys hash to every master arrive; a re-sent batch adds nothing (the
//! alert script's two keys share a slot, or Redis would refuse it with CROSSSLOT).
//! The servers are killed and their directories removed at the end.

mod upstream_common;

use edgegw::config::RedisUpstream;
use edgegw::record::{now_us, AlertState, Record};
use edgegw::upstream::redis::RedisSink;
use edgegw::upstream::{run_forwarder, Sink, UpstreamMetrics};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use upstream_common::*;

/// Three cluster-enabled masters, killed on drop.
struct Cluster {
    nodes: Vec<(u16, Child)>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let node_dir = dir.path().join(format!("n{i}"));
            std::fs::create_dir(&node_dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (apt-get install redis-server; scripts/test does)");
            nodes.push((port, child));
        }
        let cluster = Cluster { nodes, _dir: dir };
        for (port, _) in &cluster.nodes {
            cluster.wait(*port, "PING", "PONG");
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for (port, _) in &cluster.nodes {
            cluster.wait(*port, "CLUSTER INFO", "cluster_state:ok");
        }
        cluster
    }

    /// Waits until `redis-cli -p port <cmd>` prints `expect`.
    fn wait(&self, port: u16, cmd: &str, expect: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.cli(port, cmd).contains(expect) {
                return;
            }
            assert!(Instant::now() < deadline, "{cmd} on {port}: never {expect}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis-cli -c` (follows MOVED) on `port`.
    fn cli(&self, port: u16, cmd: &str) -> String {
        let out = Command::new("redis-cli")
            .args(["-c", "-p", &port.to_string()])
            .args(cmd.split(' '))
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn cfg(port: u16, prefix: &str) -> RedisUpstream {
    toml::from_str(&format!(
        "url = \"redis://127.0.0.1:{port}\"\nkey_prefix = \"{prefix}\"\ncluster = true\n\
         [delivery]\ntimeout_ms = 3000\n"
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_gets_every_alert_once_and_every_latest_value() {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let seed = cluster.nodes[1].0;
    let prefix = "edgegw-cluster:";
    let sink = RedisSink::new(cfg(seed, prefix), GATEWAY);
    let stream = sink.stream_key();
    assert_eq!(stream, "edgegw-cluster:alerts", "the cloud's stream name");
    assert_eq!(sink.seen_key(), "{edgegw-cluster:alerts}:sent-keys");
    // 30 sensors: their latest-value keys spread over the masters (checked below).
    let sensors: Vec<String> = (0..30).map(|i| format!("m{i}.temp")).collect();

    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(dir.path(), &["redis", "again"]);
    let base = now_us() - 600_000_000;
    let mut records: Vec<Record> = Vec::new();
    for (i, s) in sensors.iter().enumerate() {
        records.push(reading(s, i as i64, i as f64 + 0.5));
    }
    for i in 0..40i64 {
        records.push(alert("m0.vib", base, base + i, AlertState::Open, 0.6));
    }
    let ids = append(&outbox, records).await;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_forwarder(
        sink,
        outbox.clone(),
        fast_delivery(25),
        Arc::new(Notify::new()),
        Arc::new(UpstreamMetrics::default()),
        cancel.clone(),
    ));
    wait_drained(&outbox, "redis", Duration::from_secs(60)).await;
    cancel.cancel();
    let report = task.await.unwrap();
    assert_eq!(report.acked as usize, ids.len());
    assert_eq!(report.dead_lettered, 0);

    let entries = cluster.cli(seed, &format!("XRANGE {stream} - +"));
    let keys: Vec<&str> = entries
        .lines()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "record_key")
        .map(|w| w[1])
        .collect();
    assert_eq!(keys.len(), 40, "{entries}");
    let mut sorted = keys.clone();
    sorted.sort_by_key(|k| k.rsplit(':').next().unwrap().parse::<i64>().unwrap());
    assert_eq!(keys, sorted, "alerts in the stream in outbox order");
    for (i, s) in sensors.iter().enumerate() {
        let key = format!("{prefix}latest:{s}");
        let v = cluster.cli(seed, &format!("HGET {key} value"));
        assert_eq!(v.trim(), format!("{}", i as f64 + 0.5), "{key}");
    }

    // Every master holds some of the keys: the writes followed the slots.
    for (port, _) in &cluster.nodes {
        let n: u64 = cluster.cli(*port, "DBSIZE").trim().parse().unwrap();
        assert!(n > 0, "master {port} got no key");
    }

    // Re-send everything through a fresh sink: nothing new in the stream.
    let again = outbox.with(|o| o.peek("again", 1000)).await.unwrap();
    assert_eq!(again.len(), ids.len());
    let mut sink = RedisSink::new(cfg(cluster.nodes[2].0, prefix), GATEWAY);
    let out = sink.deliver(&again).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(
        cluster.cli(seed, &format!("XLEN {stream}")).trim(),
        "40",
        "re-sent alerts were skipped"
    );
}
