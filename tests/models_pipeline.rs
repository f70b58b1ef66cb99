//! The whole gateway (`Gateway::start`: outbox, processor, model sync task) against a
//! real S3 server (`s3s-fs`): the pipeline scores with the synced bundle; a new
//! version hot-swaps while waveform blocks stream in, with every window scored
//! exactly once, by v1 until the swap and by v2 after it; a restart with the server
//! gone scores with the cached v2 from the first window.

#[path = "support/s3.rs"]
mod support;

use edgegw::app::Gateway;
use edgegw::record::{RecordKind, SensorType};
use edgegw::sources::{Reading, SourceBatch, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use support::*;

const FS: f64 = 12_000.0;
const BLOCK: usize = 1024;

fn write_config(dir: &Path, endpoint: &str, keys: &Keys) -> std::path::PathBuf {
    let text = format!(
        r#"[gateway]
id = "gw-models-test"
state_dir = {state:?}
profile_dir = {profiles:?}

[models.s3]
endpoint = {endpoint:?}
bucket = {BUCKET:?}
prefix = {PREFIX:?}
path_style = true
interval_secs = 3600
timeout_secs = 5

[models.s3.credentials]
access_key_id = {{ file = {ak:?} }}
secret_access_key = {{ file = {sk:?} }}
"#,
        state = dir.join("state").display().to_string(),
        profiles = dir.join("profiles").display().to_string(),
        ak = keys.dir.path().join("ak").display().to_string(),
        sk = keys.dir.path().join("sk").display().to_string(),
    );
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    let path = dir.join("edgegw.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Block `i` of a healthy-looking 150 Hz vibration signal.
fn block(i: usize) -> Reading {
    let samples: Vec<f32> = (0..BLOCK)
        .map(|k| {
            let t = (i * BLOCK + k) as f64 / FS;
            let noise = (((i * BLOCK + k) as f64 * 12.9898).sin() * 43758.5453).fract() * 0.05;
            (0.5 * (2.0 * std::f64::consts::PI * 150.0 * t).sin() + noise) as f32
        })
        .collect();
    Reading {
        device: "pump1".into(),
        channel: "accel".into(),
        sensor_id: "pump1.accel".into(),
        sensor_type: SensorType::Vibration,
        unit: "g".into(),
        ts_us: 1_700_000_000_000_000 + (i as i64) * (BLOCK as i64) * 1_000_000 / FS as i64,
        value: Value::Block {
            sample_rate_hz: FS,
            samples: Arc::from(samples),
        },
        quality: 1.0,
        flags: Vec::new(),
        arrival: false,
    }
}

async fn feed(gw: &Gateway, range: std::ops::Range<usize>) {
    let tx = gw.source_sender().expect("sender");
    for i in range {
        tx.send(SourceBatch {
            readings: vec![block(i)],
            ack: None,
        })
        .await
        .expect("send");
    }
}

/// (ts_us, detector, threshold) of every window in the outbox, by ts.
fn windows(outbox: &Path) -> Vec<(i64, String, f64)> {
    let mut out = Vec::new();
    edgegw::outbox::cli_dump(outbox, Some(RecordKind::Window), 1_000_000, &mut out).unwrap();
    let mut v: Vec<(i64, String, f64)> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let j: serde_json::Value = serde_json::from_str(l).unwrap();
            let p = &j["payload"];
            (
                p["ts_us"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("ts_us in {p}")),
                p["detector"].as_str().unwrap_or("").to_string(),
                p["threshold"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect();
    v.sort_by_key(|w| w.0);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_scores_every_window_exactly_once() {
    let mut server = S3Server::start();
    let keys = Keys::good();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server.endpoint(), &keys);
    let c = client(&server.endpoint(), &keys);
    let v1 = Bundle::vibration("vibration-edge", "1.0.0", 7.0);
    let v2 = Bundle::vibration("vibration-edge", "2.0.0", 9.5);
    publish(&c, &v1).await;
    publish_index(&c, &[("vibration", &v1)]).await;

    let loaded = edgegw::config::load(&config).unwrap_or_else(|d| panic!("{d:?}"));
    let outbox = edgegw::app::outbox_path(&loaded.config);
    let gw = Gateway::start(&loaded).await.expect("start");
    let models = gw.models.as_ref().expect("sync task runs");
    models.sync_now().await.expect("first sync");
    let active = |gw: &Gateway| {
        gw.registry
            .load()
            .select_for(
                "pump1",
                SensorType::Vibration,
                edgegw::inference::BundleKind::Window,
            )
            .unwrap()
            .detector()
            .to_string()
    };
    assert_eq!(active(&gw), v1.detector());

    // Load: blocks stream in without pause while v2 is published and synced; the
    // producer stops AFTER more blocks once the swap is done.
    const AFTER: usize = 100;
    let sent = Arc::new(AtomicUsize::new(0));
    let swapped = Arc::new(AtomicBool::new(false));
    let producer = {
        let tx = gw.source_sender().unwrap();
        let (sent, swapped) = (sent.clone(), swapped.clone());
        tokio::spawn(async move {
            let mut i = 0;
            let mut stop_at = usize::MAX;
            while i < stop_at {
                tx.send(SourceBatch {
                    readings: vec![block(i)],
                    ack: None,
                })
                .await
                .unwrap();
                i += 1;
                sent.store(i, Ordering::SeqCst);
                if stop_at == usize::MAX && swapped.load(Ordering::SeqCst) {
                    stop_at = i + AFTER;
                }
                tokio::task::yield_now().await;
            }
            i
        })
    };
    while sent.load(Ordering::SeqCst) < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let sent_before = sent.load(Ordering::SeqCst);
    publish(&c, &v2).await;
    publish_index(&c, &[("vibration", &v2)]).await;
    let report = models.sync_now().await.expect("sync v2");
    let sent_during = sent.load(Ordering::SeqCst) - sent_before;
    swapped.store(true, Ordering::SeqCst);
    assert!(
        sent_during > 0,
        "the producer must keep sending during the sync"
    );
    assert!(report.swapped, "{report:?}");
    assert_eq!(active(&gw), v2.detector());
    // The sync task's counters are what /metrics shows.
    let text = {
        use edgegw::ops::metrics::{Collector, Exposition};
        let mut out = Exposition::new();
        edgegw::ops::collect::LiveCollector(gw.live()).collect(&mut out);
        out.finish()
    };
    let sample = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    let counters = models.counters();
    assert!(counters.installed >= 2, "{counters:?}");
    assert_eq!(
        sample("edgegw_model_bundles_installed_total"),
        counters.installed as f64
    );
    assert_eq!(sample("edgegw_model_swaps_total"), counters.swaps as f64);
    assert_eq!(sample("edgegw_model_bundles_rejected_total"), 0.0);
    let total = producer.await.unwrap();
    gw.shutdown().await.expect("shutdown");

    let w = windows(&outbox);
    // 2048-sample windows with a hop of 1024 over `total` blocks of 1024: total-1.
    assert_eq!(w.len(), total - 1, "windows lost or duplicated");
    let ts: BTreeSet<i64> = w.iter().map(|x| x.0).collect();
    assert_eq!(ts.len(), w.len(), "a window was emitted twice");
    let first_v2 = w
        .iter()
        .position(|x| x.1 == v2.detector())
        .expect("v2 scored windows");
    assert!(first_v2 > 0, "v1 scored nothing before the swap");
    for (i, (_, det, thr)) in w.iter().enumerate() {
        let (want, want_thr) = if i < first_v2 {
            (v1.detector(), 7.0)
        } else {
            (v2.detector(), 9.5)
        };
        assert_eq!(
            det, &want,
            "window {i}: scored by the wrong bundle (swap must be one-way)"
        );
        assert_eq!(*thr, want_thr, "window {i}");
    }
    eprintln!(
        "hot swap: {} windows by v1, {} by v2; {sent_during} blocks sent while the sync ran",
        first_v2,
        w.len() - first_v2
    );

    // Restart with the server gone: the cached v2 scores from the first window.
    server.stop();
    let gw = Gateway::start(&loaded).await.expect("restart offline");
    assert_eq!(active(&gw), v2.detector());
    feed(&gw, total..total + 10).await;
    gw.shutdown().await.expect("shutdown");
    let w = windows(&outbox);
    let after: Vec<_> = w.iter().filter(|x| x.0 >= block(total).ts_us).collect();
    assert!(!after.is_empty());
    assert!(after.iter().all(|x| x.1 == v2.detector()), "{after:?}");
}
