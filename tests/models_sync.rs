//! Model sync against a real S3 server (`s3s-fs`, which checks SigV4 signatures):
//! publish, sync, conditional index GET, bad bundles rejected with the previous one
//! kept, wrong credentials, server down, slow server, offline restart, pins.

#[path = "support/s3.rs"]
mod support;

use edgegw::inference::s3::S3Error;
use edgegw::inference::sync::{ModelSync, SyncError};
use edgegw::inference::{shared, BundleKind, ModelRegistry, SharedRegistry};
use edgegw::record::SensorType;
use support::*;

fn registry() -> SharedRegistry {
    shared(ModelRegistry::with_defaults().expect("defaults"))
}

fn active(reg: &SharedRegistry) -> String {
    reg.load()
        .select(SensorType::Vibration, BundleKind::Window)
        .map(|b| b.detector().to_string())
        .unwrap_or_default()
}

fn new_sync(
    state: &std::path::Path,
    s3: Option<edgegw::config::ModelsS3Config>,
    reg: &SharedRegistry,
) -> ModelSync {
    // As the daemon does: every bundle from S3 or the cache is loaded first by the
    // real `edgegw models check` in a process of its own (src/inference/isolate.rs).
    edgegw::inference::isolate::check_bundles_with(env!("CARGO_BIN_EXE_edgegw").into());
    let mut s = ModelSync::new(&gateway_config(state, s3), reg.clone()).expect("sync");
    s.load_cached();
    s
}

/// Publishes v1 and syncs it: the common start of most tests.
async fn with_v1(
    server: &S3Server,
    state: &std::path::Path,
    reg: &SharedRegistry,
) -> (ModelSync, Bundle) {
    let keys = Keys::good();
    let c = client(&server.endpoint(), &keys);
    let v1 = Bundle::vibration("vibration-edge", "1.0.0", 7.0);
    publish(&c, &v1).await;
    publish_index(&c, &[("vibration", &v1)]).await;
    let mut sync = new_sync(state, Some(s3_config(&server.endpoint(), &keys)), reg);
    let report = sync.sync_once().await.expect("sync v1");
    assert_eq!(report.installed.len(), 1, "{report:?}");
    assert!(report.swapped);
    assert_eq!(active(reg), "vibration-edge@1.0.0");
    (sync, v1)
}

#[tokio::test]
async fn publish_sync_then_nothing_new_costs_one_request() {
    let server = S3Server::start();
    let state = tempfile::tempdir().unwrap();
    let reg = registry();
    assert_eq!(active(&reg), "vibration-relative@2.0.0");
    let (mut sync, _v1) = with_v1(&server, state.path(), &reg).await;

    // The bundle is in the cache under <name>/<version>, nothing left in staging.
    let cached = state.path().join("models/vibration-edge/1.0.0");
    assert!(cached.join("model.onnx").is_file() && cached.join("manifest.json").is_file());
    let staging: Vec<_> = std::fs::read_dir(state.path().join("models/.staging"))
        .unwrap()
        .collect();
    assert!(staging.is_empty(), "staging leftovers: {staging:?}");

    // Second sync: the index ETag matches, nothing is downloaded or swapped.
    let report = sync.sync_once().await.expect("sync again");
    assert!(report.not_modified, "{report:?}");
    assert!(report.installed.is_empty() && !report.swapped);
    let c = sync.counters().values();
    assert_eq!(
        (c.syncs, c.not_modified, c.installed, c.rejected),
        (2, 1, 1, 0)
    );
    // Temperature was not in the index: still the built-in default.
    let t = reg
        .load()
        .select(SensorType::Temperature, BundleKind::Rolling)
        .unwrap();
    assert_eq!(t.detector(), "scalar-relative@2.0.0");
}

#[tokio::test]
async fn v2_replaces_v1_and_removing_it_from_the_index_falls_back() {
    let server = S3Server::start();
    let state = tempfile::tempdir().unwrap();
    let reg = registry();
    let (mut sync, _v1) = with_v1(&server, state.path(), &reg).await;
    let c = client(&server.endpoint(), &Keys::good());
    let v2 = Bundle::vibration("vibration-edge", "2.0.0", 9.5);
    publish(&c, &v2).await;
    publish_index(&c, &[("vibration", &v2)]).await;
    let report = sync.sync_once().await.expect("sync v2");
    assert!(!report.not_modified && report.swapped, "{report:?}");
    assert_eq!(active(&reg), "vibration-edge@2.0.0");
    assert_eq!(
        reg.load()
            .select(SensorType::Vibration, BundleKind::Window)
            .unwrap()
            .threshold(),
        9.5
    );
    // Bearing channels follow vibration's bundle through the fallback chain only when
    // the index or a manifest says so: the manifest lists bearing.
    assert_eq!(
        reg.load()
            .select(SensorType::Bearing, BundleKind::Window)
            .unwrap()
            .detector(),
        "vibration-relative@2.0.0",
        "bearing is listed by the built-in relative default; the index only assigned vibration"
    );

    publish_index(&c, &[]).await;
    sync.sync_once().await.expect("sync empty index");
    assert_eq!(active(&reg), "vibration-relative@2.0.0");
}

/// One bad v2 variant: published, synced, rejected; v1 stays, nothing cached.
async fn rejected_case(bad: Bundle, expect_in_reason: &str) {
    let server = S3Server::start();
    let state = tempfile::tempdir().unwrap();
    let reg = registry();
    let (mut sync, _v1) = with_v1(&server, state.path(), &reg).await;
    let c = client(&server.endpoint(), &Keys::good());
    publish(&c, &bad).await;
    publish_index(&c, &[("vibration", &bad)]).await;
    let report = sync.sync_once().await.expect("sync itself works");
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    // Refused by `edgegw models check` in its own process, before any load here;
    // a manifest that does not parse and a download cut short by the size limit are
    // refused before that.
    let before_the_check = ["missing field", "larger than the limit"];
    assert!(
        report.rejected[0].contains("refused by the check (exit 1)")
            || before_the_check
                .iter()
                .any(|s| expect_in_reason.contains(s)),
        "{:?}",
        report.rejected[0]
    );
    assert!(
        report.rejected[0].contains(expect_in_reason),
        "reason {:?} does not mention {expect_in_reason:?}",
        report.rejected[0]
    );
    assert_eq!(active(&reg), "vibration-edge@1.0.0", "v1 must stay active");
    assert_eq!(sync.counters().values().rejected, 1);
    let bad_dir = state
        .path()
        .join("models")
        .join(bad.name())
        .join(bad.version());
    assert!(
        !bad_dir.exists(),
        "a rejected bundle must not enter the cache"
    );
    // Not downloaded again: the next sync sees the same index and does nothing.
    let again = sync.sync_once().await.expect("sync again");
    assert!(again.not_modified && again.rejected.is_empty(), "{again:?}");
    assert_eq!(sync.counters().values().rejected, 1);
    // A restart keeps v1 too (the cache state names it).
    drop(sync);
    let reg2 = registry();
    let _s2 = new_sync(state.path(), None, &reg2);
    assert_eq!(active(&reg2), "vibration-edge@1.0.0");
}

#[tokio::test]
async fn corrupt_model_object_is_rejected() {
    let mut b = Bundle::vibration("vibration-edge", "3.0.0", 7.0);
    let n = b.onnx.len();
    b.onnx[n / 2] ^= 0x55; // manifest keeps the sha256 of the good file
    rejected_case(b, "sha256 check failed").await;
}

#[tokio::test]
async fn wrong_checksum_in_the_manifest_is_rejected() {
    let mut b = Bundle::vibration("vibration-edge", "3.0.0", 7.0);
    b.manifest["sha256"] = sha256_hex(b"something else").into();
    rejected_case(b, "sha256 check failed").await;
}

#[tokio::test]
async fn onnx_that_tract_cannot_load_is_rejected() {
    let mut b = Bundle::vibration("vibration-edge", "3.0.0", 7.0);
    b.onnx = b"this is not an ONNX protobuf at all".to_vec();
    rejected_case(b.reseal(), "tract cannot load").await;
}

#[tokio::test]
async fn a_bundle_with_an_operator_the_gateway_does_not_run_is_rejected() {
    use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
    let node = |op: &str, input: &str, output: &str| NodeProto {
        op_type: op.into(),
        name: format!("op_{output}"),
        input: vec![input.into()],
        output: vec![output.into()],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(GraphProto {
            node: vec![node("Conv", "features", "c"), node("Sqrt", "c", "score")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut b = Bundle::vibration("vibration-edge", "3.0.0", 7.0);
    b.onnx = prost::Message::encode_to_vec(&model);
    rejected_case(b.reseal(), "does not run: Conv (it runs Add").await;
}

#[test]
fn models_check_passes_a_good_bundle_and_names_what_is_wrong_with_a_bad_one() {
    let exe = env!("CARGO_BIN_EXE_edgegw");
    let good = root().join("models/vibration-default");
    let out = std::process::Command::new(exe)
        .args(["models", "check"])
        .arg(&good)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("loads and reproduces its example (7 features)"),
        "{stdout}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let mut b = Bundle::vibration("vibration-edge", "3.0.0", 7.0);
    b.manifest["sha256"] = sha256_hex(b"something else").into();
    std::fs::write(tmp.path().join("manifest.json"), b.manifest.to_string()).unwrap();
    std::fs::write(tmp.path().join("model.onnx"), &b.onnx).unwrap();
    let out = std::process::Command::new(exe)
        .args(["models", "check"])
        .arg(tmp.path())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("sha256 check failed"), "{stderr}");
}

#[tokio::test]
async fn wrong_input_shape_is_rejected() {
    // The manifest (consistently) claims 6 features; the model takes 7.
    let mut b = Bundle::vibration("vibration-edge", "3.0.0", 7.0);
    let feats = b.manifest["features"].as_array().unwrap()[..6].to_vec();
    b.manifest["features"] = feats.into();
    b.manifest["input"]["shape"] = serde_json::json!([1, 6]);
    let ex = b.manifest["example"]["input"][0].as_array().unwrap()[..6].to_vec();
    b.manifest["example"]["input"] = serde_json::json!([ex]);
    rejected_case(b, "tract cannot load").await;
}

#[tokio::test]
async fn manifest_missing_a_field_is_rejected() {
    let mut b = Bundle::vibration("vibration-edge", "3.0.0", 7.0);
    b.manifest.as_object_mut().unwrap().remove("threshold");
    rejected_case(b, "missing field `threshold`").await;
}

#[tokio::test]
async fn manifest_for_another_bundle_is_rejected() {
    let mut b = Bundle::vibration("vibration-edge", "3.0.0", 7.0);
    // Uploaded under 3.0.0 but says 1.0.0 (a publishing mistake).
    let server = S3Server::start();
    let state = tempfile::tempdir().unwrap();
    let reg = registry();
    let (mut sync, _) = with_v1(&server, state.path(), &reg).await;
    let c = client(&server.endpoint(), &Keys::good());
    publish(&c, &b).await;
    b.manifest["version"] = "1.0.0".into();
    c.put(
        &format!("{PREFIX}/vibration-edge/3.0.0/manifest.json"),
        serde_json::to_vec(&b.manifest).unwrap(),
    )
    .await
    .unwrap();
    let three = Bundle::vibration("vibration-edge", "3.0.0", 7.0);
    publish_index(&c, &[("vibration", &three)]).await;
    let report = sync.sync_once().await.unwrap();
    assert!(
        report.rejected[0].contains("manifest says vibration-edge@1.0.0"),
        "{report:?}"
    );
    assert_eq!(active(&reg), "vibration-edge@1.0.0");
}

#[tokio::test]
async fn too_large_a_model_is_rejected_while_downloading() {
    let mut b = Bundle::vibration("vibration-edge", "3.0.0", 7.0);
    b.onnx = vec![0u8; 5 << 20]; // limit in the test config: 4 MB
    rejected_case(b.reseal(), "larger than the limit").await;
}

#[tokio::test]
async fn wrong_credentials_get_403_and_change_nothing() {
    let server = S3Server::start();
    let state = tempfile::tempdir().unwrap();
    let reg = registry();
    let (sync, _v1) = with_v1(&server, state.path(), &reg).await;
    // Another process on this cache (after this one stopped: one writer at a time).
    drop(sync);
    let c = client(&server.endpoint(), &Keys::good());
    let v2 = Bundle::vibration("vibration-edge", "2.0.0", 9.5);
    publish(&c, &v2).await;
    publish_index(&c, &[("vibration", &v2)]).await;

    let bad_keys = Keys::new(ACCESS_KEY, "not-the-secret-7c1d");
    let reg2 = registry();
    let mut bad = new_sync(
        state.path(),
        Some(s3_config(&server.endpoint(), &bad_keys)),
        &reg2,
    );
    assert_eq!(active(&reg2), "vibration-edge@1.0.0", "cached v1 at start");
    let err = bad.sync_once().await.unwrap_err();
    assert!(
        matches!(err, SyncError::S3(S3Error::Denied { status: 403, .. })),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("access denied"), "{text}");
    assert!(
        !text.contains("not-the-secret") && !text.contains(ACCESS_KEY),
        "{text}"
    );
    assert_eq!(active(&reg2), "vibration-edge@1.0.0");
    assert_eq!(bad.counters().values().errors, 1);
}

#[tokio::test]
async fn server_down_changes_nothing_and_recovers() {
    let mut server = S3Server::start();
    let state = tempfile::tempdir().unwrap();
    let reg = registry();
    let (mut sync, _v1) = with_v1(&server, state.path(), &reg).await;
    server.stop();
    // The pooled connection dies first (a transfer error), then connecting fails.
    let err = sync.sync_once().await.unwrap_err();
    assert!(
        matches!(
            err,
            SyncError::S3(S3Error::Connect { .. } | S3Error::Transfer { .. })
        ),
        "{err:?}"
    );
    let err = sync.sync_once().await.unwrap_err();
    assert!(
        matches!(err, SyncError::S3(S3Error::Connect { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("cannot reach http://127.0.0.1:"),
        "{err}"
    );
    assert_eq!(active(&reg), "vibration-edge@1.0.0");
    assert_eq!(sync.counters().values().errors, 2);
    // Back up: the next sync works again (and finds the index unchanged).
    server.restart();
    let report = sync.sync_once().await.expect("sync after the outage");
    assert!(report.not_modified, "{report:?}");
    assert_eq!(active(&reg), "vibration-edge@1.0.0");
}

#[tokio::test]
async fn slow_server_times_out_and_changes_nothing() {
    // A peer that accepts connections and never answers (a hung proxy or server).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            conns.push(s);
        }
    });
    let state = tempfile::tempdir().unwrap();
    let reg = registry();
    let keys = Keys::good();
    let mut cfg = s3_config(&format!("http://127.0.0.1:{port}"), &keys);
    cfg.timeout_secs = 1;
    let mut sync = new_sync(state.path(), Some(cfg), &reg);
    let err = sync.sync_once().await.unwrap_err();
    assert!(
        matches!(err, SyncError::S3(S3Error::Timeout { secs: 1, .. })),
        "{err:?}"
    );
    assert_eq!(active(&reg), "vibration-relative@2.0.0");
    hold.abort();
}

#[tokio::test]
async fn restart_offline_uses_the_cached_bundle_at_once() {
    let mut server = S3Server::start();
    let state = tempfile::tempdir().unwrap();
    let reg = registry();
    let (sync, _v1) = with_v1(&server, state.path(), &reg).await;
    drop(sync);
    server.stop();
    // A new process: the cached state applies before any network I/O.
    let reg2 = registry();
    let keys = Keys::good();
    let mut offline = new_sync(
        state.path(),
        Some(s3_config(&server.endpoint(), &keys)),
        &reg2,
    );
    assert_eq!(active(&reg2), "vibration-edge@1.0.0");
    assert!(offline.sync_once().await.is_err());
    assert_eq!(active(&reg2), "vibration-edge@1.0.0");
    // No cache at all: the built-in defaults.
    let empty = tempfile::tempdir().unwrap();
    let reg3 = registry();
    let _s3 = new_sync(
        empty.path(),
        Some(s3_config(&server.endpoint(), &keys)),
        &reg3,
    );
    assert_eq!(active(&reg3), "vibration-relative@2.0.0");
}

#[tokio::test]
async fn a_pinned_version_is_downloaded_and_wins_for_its_device() {
    let server = S3Server::start();
    let state = tempfile::tempdir().unwrap();
    let reg = registry();
    let keys = Keys::good();
    let c = client(&server.endpoint(), &keys);
    let v1 = Bundle::vibration("vibration-edge", "1.0.0", 7.0);
    let v2 = Bundle::vibration("vibration-edge", "2.0.0", 9.5);
    publish(&c, &v1).await;
    publish(&c, &v2).await;
    publish_index(&c, &[("vibration", &v2)]).await;
    let mut cfg = gateway_config(state.path(), Some(s3_config(&server.endpoint(), &keys)));
    let devices: toml::Table = toml::from_str(
        r#"[[devices]]
id = "old-pump"
profile = "x"
model = { name = "vibration-edge", version = "1.0.0" }
[devices.modbus_tcp]
host = "127.0.0.1"
"#,
    )
    .unwrap();
    cfg.devices = devices["devices"].clone().try_into().unwrap();
    let mut sync = ModelSync::new(&cfg, reg.clone()).unwrap();
    sync.load_cached();
    sync.sync_once().await.unwrap();
    let r = reg.load();
    let pick = |d: &str| {
        r.select_for(d, SensorType::Vibration, BundleKind::Window)
            .unwrap()
            .detector()
            .to_string()
    };
    assert_eq!(pick("old-pump"), "vibration-edge@1.0.0");
    assert_eq!(pick("new-pump"), "vibration-edge@2.0.0");
    // A rolling channel of the pinned device is not served by a window bundle.
    assert_eq!(
        r.select_for("old-pump", SensorType::Temperature, BundleKind::Rolling)
            .unwrap()
            .detector(),
        "scalar-relative@2.0.0"
    );
}

#[tokio::test]
async fn the_publish_tool_publishes_the_shipped_default_and_gateways_sync_it() {
    let server = S3Server::start();
    let run = |secret: &str| {
        std::process::Command::new("python3")
            .arg(root().join("tools/publish-model"))
            .args(["--endpoint", &server.endpoint(), "--path-style"])
            .args(["--bucket", BUCKET, "--prefix", PREFIX])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .output()
            .expect("python3 runs tools/publish-model")
    };
    let denied = run("wrong-secret");
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        err.contains("403") && !err.contains("wrong-secret"),
        "{err}"
    );
    let ok = run(SECRET_KEY);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let state = tempfile::tempdir().unwrap();
    let reg = registry();
    let mut sync = new_sync(
        state.path(),
        Some(s3_config(&server.endpoint(), &Keys::good())),
        &reg,
    );
    let report = sync.sync_once().await.expect("sync");
    assert_eq!(report.installed.len(), 1, "{report:?}");
    let r = reg.load();
    for t in [SensorType::Vibration, SensorType::Bearing] {
        let (b, why) = r.choose(None, t, BundleKind::Window).unwrap();
        assert_eq!(b.detector(), "vibration-default@1.0.0");
        assert_eq!(
            why,
            edgegw::inference::Selection::Index(t),
            "the index names it for {t:?}"
        );
    }
    assert!(state
        .path()
        .join("models/vibration-default/1.0.0/model.onnx")
        .is_file());
}

#[tokio::test]
async fn models_list_shows_cache_active_bundles_and_rejected_cache_entries() {
    let server = S3Server::start();
    let state = tempfile::tempdir().unwrap();
    let reg = registry();
    let (_sync, _v1) = with_v1(&server, state.path(), &reg).await;
    // A cache entry that no longer passes its checks (bit rot, tampering).
    let broken = state.path().join("models/vibration-edge/0.9.0");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("manifest.json"), b"{}").unwrap();
    std::fs::write(broken.join("model.onnx"), b"x").unwrap();
    let path = state.path().join("edgegw.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nid = \"gw\"\nstate_dir = {:?}\n",
            state.path().display().to_string()
        ),
    )
    .unwrap();
    let loaded = edgegw::config::load(&path).unwrap_or_else(|d| panic!("{d:?}"));
    let text = edgegw::inference::cli::list_text(&loaded);
    assert!(text.contains("vibration-edge@1.0.0"), "{text}");
    assert!(
        text.contains("REJECTED") && text.contains("vibration-edge@0.9.0"),
        "{text}"
    );
    assert!(text.contains("active from the last sync"), "{text}");
    assert!(
        text.contains("vibration       vibration-edge@1.0.0")
            || text.contains("vibration      vibration-edge@1.0.0"),
        "{text}"
    );
}

/// docs/ARCHITECTURE.md, "one writer of the model cache": while a sync task (a
/// running gateway) holds the cache, `edgegw models sync` on it is refused with a
/// message saying why, and writes nothing; once the gateway is gone it works.
#[tokio::test]
async fn the_cache_has_one_writer_at_a_time() {
    let server = S3Server::start();
    let state = tempfile::tempdir().unwrap();
    let reg = registry();
    let (sync, _v1) = with_v1(&server, state.path(), &reg).await;
    let keys = Keys::good();
    let cfg = gateway_config(state.path(), Some(s3_config(&server.endpoint(), &keys)));
    let dir = state.path().join("models");
    let listing = |d: &std::path::Path| {
        let mut v: Vec<_> = walk(d);
        v.sort();
        v
    };
    let before = listing(&dir);
    let err = edgegw::inference::cli::sync_command(&cfg)
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("another process writes it"), "{text}");
    assert!(text.contains(&dir.display().to_string()), "{text}");
    assert_eq!(listing(&dir), before, "a refused sync wrote nothing");
    // The holder gone (a stopped gateway): the lock is free again.
    drop(sync);
    let report = edgegw::inference::cli::sync_command(&cfg)
        .await
        .expect("sync");
    assert!(report.contains("vibration-edge@1.0.0"), "{report}");
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
