//! Tests of bundle loading, the checks that reject bad bundles, and model selection.

use super::*;
use crate::record::SensorType;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn committed_bundles() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for parent in [root().join("models"), root().join("tests/data/bundles")] {
        for entry in std::fs::read_dir(&parent).expect("bundle folder") {
            let path = entry.expect("dir entry").path();
            if path.join("manifest.json").exists() {
                dirs.push(path);
            }
        }
    }
    dirs.sort();
    dirs
}

fn test_bundle() -> (serde_json::Value, Vec<u8>) {
    let dir = root().join("tests/data/bundles/vibration-test");
    let manifest = std::fs::read(dir.join("manifest.json")).expect("manifest");
    let onnx = std::fs::read(dir.join("model.onnx")).expect("model");
    (serde_json::from_slice(&manifest).expect("json"), onnx)
}

fn load(manifest: &serde_json::Value, onnx: &[u8]) -> Result<ModelBundle> {
    ModelBundle::load_bytes(&serde_json::to_vec(manifest).expect("json"), onnx)
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn every_committed_bundle_loads_and_reproduces_its_example() {
    let dirs = committed_bundles();
    assert!(
        dirs.len() >= 3,
        "expected the two defaults and the test bundle, found {dirs:?}"
    );
    for dir in dirs {
        let bundle = ModelBundle::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        let m = bundle.manifest();
        let got = f64::from(bundle.score(&m.example.input[0]).expect("score"));
        let want = m.example.output;
        assert!(
            (got - want).abs() <= 1e-4 * want.abs(),
            "{}: tract gives {got}, manifest says {want}",
            dir.display()
        );
        assert_eq!(m.input.shape, vec![1, m.features.len()]);
    }
}

#[test]
fn tract_matches_onnxruntime_on_the_reference_windows() {
    // testdata/expected/ holds onnxruntime's float32 scores for every window of the
    // committed CWRU slices, with the float64 features that produced them.
    let path = root().join("testdata/expected/vibration-default.json");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("expected scores")).expect("json");
    let bundle = ModelBundle::load_dir(root().join("models/vibration-default")).expect("load");
    let mut compared = 0;
    for file in expected["files"].as_array().expect("files") {
        let feats = file["features"].as_array().expect("features");
        let scores = file["scores"].as_array().expect("scores");
        for (f, s) in feats.iter().zip(scores) {
            let x: Vec<f32> = bundle
                .features()
                .iter()
                .map(|n| f[n.as_str()].as_f64().expect("feature") as f32)
                .collect();
            let got = f64::from(bundle.score(&x).expect("score"));
            let want = s.as_f64().expect("score");
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1e-3),
                "{}: tract {got} vs onnxruntime {want}",
                file["file"]
            );
            compared += 1;
        }
    }
    assert!(compared > 50, "only {compared} windows compared");
}

#[test]
fn wrong_sha256_is_rejected() {
    let (mut m, onnx) = test_bundle();
    m["sha256"] = serde_json::json!("0".repeat(64));
    let err = load(&m, &onnx).expect_err("must reject");
    assert!(matches!(err, InferenceError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("sha256 check failed"), "{err}");
}

#[test]
fn garbage_onnx_is_rejected_by_tract() {
    let (mut m, _) = test_bundle();
    let garbage = b"this is not a protobuf model at all \x00\x01\x02".to_vec();
    m["sha256"] = serde_json::json!(sha(&garbage));
    let err = load(&m, &garbage).expect_err("must reject");
    assert!(
        matches!(err, InferenceError::Load { stage: "parse", .. }),
        "{err}"
    );
}

#[test]
fn a_bundle_with_operators_the_gateway_does_not_run_is_refused_by_name() {
    use operators::tests::{model, node};
    let (mut m, _) = test_bundle();
    // x -> Conv (not run) -> ai.onnx.ml.Normalizer (another domain) -> Sqrt -> y
    let mut nodes = vec![
        node("Conv", &["x", "w"], "c", vec![]),
        node("Normalizer", &["c"], "n", vec![]),
        node("Sqrt", &["n"], "y", vec![]),
    ];
    nodes[1].domain = "ai.onnx.ml".into();
    let onnx = prost::Message::encode_to_vec(&model(13, nodes, vec![]));
    m["sha256"] = serde_json::json!(sha(&onnx));
    let err = load(&m, &onnx).expect_err("must refuse");
    assert!(matches!(err, InferenceError::Operators { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("does not run: Conv, ai.onnx.ml.Normalizer (it runs Add Sub"),
        "{text}"
    );
    assert!(text.contains("docs/models.md"), "{text}");
}

#[test]
fn wrong_input_shape_is_rejected() {
    let (mut m, onnx) = test_bundle();
    m["input"]["shape"] = serde_json::json!([1, 5]);
    let err = load(&m, &onnx).expect_err("must reject");
    assert!(
        matches!(
            err,
            InferenceError::ManifestField {
                field: "input.shape",
                ..
            }
        ),
        "{err}"
    );

    // Consistent manifest, but the model really takes 11 inputs, not 10.
    let (mut m, onnx) = test_bundle();
    let feats = m["features"].as_array().expect("features").clone();
    m["features"] = serde_json::json!(feats[..10]);
    m["input"]["shape"] = serde_json::json!([1, 10]);
    let row = m["example"]["input"][0].as_array().expect("row").clone();
    m["example"]["input"] = serde_json::json!([row[..10]]);
    let err = load(&m, &onnx).expect_err("must reject");
    assert!(matches!(err, InferenceError::Load { .. }), "{err}");
}

#[test]
fn unknown_feature_name_is_rejected() {
    let (mut m, onnx) = test_bundle();
    m["features"][2] = serde_json::json!("kurtosis_excess");
    let err = load(&m, &onnx).expect_err("must reject");
    assert!(
        matches!(
            err,
            InferenceError::ManifestField {
                field: "features",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("kurtosis_excess"), "{err}");
}

#[test]
fn example_mismatch_and_missing_fields_are_rejected() {
    let (mut m, onnx) = test_bundle();
    m["example"]["output"] =
        serde_json::json!(m["example"]["output"].as_f64().unwrap_or(0.0) * 1.01);
    let err = load(&m, &onnx).expect_err("must reject");
    assert!(matches!(err, InferenceError::Example { .. }), "{err}");

    let (mut m, onnx) = test_bundle();
    m.as_object_mut().expect("object").remove("threshold");
    let err = load(&m, &onnx).expect_err("must reject");
    assert!(err.to_string().contains("threshold"), "{err}");

    let (mut m, onnx) = test_bundle();
    m["sensor_types"] = serde_json::json!(["vibration", "gearbox"]);
    let err = load(&m, &onnx).expect_err("must reject");
    assert!(err.to_string().contains("gearbox"), "{err}");

    let (mut m, onnx) = test_bundle();
    m["input"]["name"] = serde_json::json!("x");
    let err = load(&m, &onnx).expect_err("must reject");
    assert!(
        matches!(
            err,
            InferenceError::ManifestField {
                field: "input.name",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn missing_file_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("manifest.json"), b"{}").expect("write");
    let err = ModelBundle::load_dir(dir.path()).expect_err("no model.onnx");
    let msg = err.to_string();
    assert!(msg.contains("model.onnx"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
}

#[test]
fn score_checks_the_feature_count_and_reuses_the_plan() {
    let bundle =
        ModelBundle::load_dir(root().join("tests/data/bundles/vibration-test")).expect("load");
    assert!(matches!(
        bundle.score(&[1.0, 2.0]),
        Err(InferenceError::FeatureCount {
            expected: 11,
            got: 2,
            ..
        })
    ));
    let x = bundle.manifest().example.input[0].clone();
    let a = bundle.score(&x).expect("score");
    let b = bundle.score(&x).expect("score again");
    assert_eq!(a, b);
    assert_eq!(bundle.confidence(bundle.threshold() / 2.0), 0.0);
    assert!((bundle.confidence(bundle.threshold() * 4.0) - 0.75).abs() < 1e-12);
}

#[test]
fn an_absolute_bundle_at_another_rate_is_passed_over_and_said_so() {
    let reg = ModelRegistry::with_defaults().expect("defaults load");
    let absolute = reg
        .bundles()
        .iter()
        .find(|b| b.manifest().name == "vibration-default")
        .expect("shipped")
        .clone();
    let mut pins = std::collections::HashMap::new();
    pins.insert("fan".to_string(), absolute);
    let reg = reg.with_assignments(Default::default(), pins);
    // 12 kHz: the pinned CWRU model fits.
    let c = reg.choose_at(
        Some("fan"),
        SensorType::Vibration,
        BundleKind::Window,
        Some(12_000.0),
    );
    let (b, why) = c.chosen.expect("chosen");
    assert_eq!(b.manifest().name, "vibration-default");
    assert_eq!(why, Selection::Pinned);
    assert!(c.skipped.is_empty());
    // 20 kHz: passed over with the reason, and the relative bundle scores instead.
    let c = reg.choose_at(
        Some("fan"),
        SensorType::Vibration,
        BundleKind::Window,
        Some(20_000.0),
    );
    assert_eq!(
        c.chosen.expect("chosen").0.manifest().name,
        "vibration-relative"
    );
    assert_eq!(c.skipped.len(), 1);
    assert!(c.skipped[0].1.contains("12000 Hz"), "{}", c.skipped[0].1);
    assert!(c.skipped[0].1.contains("20000 Hz"), "{}", c.skipped[0].1);
}

#[test]
fn registry_follows_the_cloud_fallbacks() {
    let reg = ModelRegistry::with_defaults().expect("defaults load");
    let name = |t, k| reg.select(t, k).map(|b| b.manifest().name.clone());
    // The relative bundles come first: they serve machines never seen before.
    assert_eq!(
        name(SensorType::Vibration, BundleKind::Window).as_deref(),
        Some("vibration-relative")
    );
    assert_eq!(
        name(SensorType::Bearing, BundleKind::Window).as_deref(),
        Some("vibration-relative")
    );
    assert_eq!(
        name(SensorType::Temperature, BundleKind::Rolling).as_deref(),
        Some("scalar-relative")
    );
    // Pressure falls back to `general`, which the scalar relative bundle lists.
    assert_eq!(
        name(SensorType::Pressure, BundleKind::Rolling).as_deref(),
        Some("scalar-relative")
    );
    // A waveform model never scores a scalar channel, and vice versa: a scalar
    // vibration channel (a velocity RMS register) is a slow scalar.
    assert_eq!(
        name(SensorType::Vibration, BundleKind::Rolling).as_deref(),
        Some("scalar-relative")
    );
    assert_eq!(name(SensorType::Temperature, BundleKind::Window), None);

    // A general rolling model serves pressure; a bearing-only model serves vibration.
    let dir = root().join("tests/data/bundles/vibration-test");
    let (mut m, onnx) = test_bundle();
    m["sensor_types"] = serde_json::json!(["bearing"]);
    m["name"] = serde_json::json!("bearing-only");
    let bearing = Arc::new(load(&m, &onnx).expect("load"));
    let reg2 = reg.with_preferred(bearing);
    assert_eq!(
        reg2.select(SensorType::Vibration, BundleKind::Window)
            .map(|b| b.manifest().name.clone()),
        Some("vibration-relative".to_string()),
        "vibration's own model comes before the bearing one"
    );
    assert_eq!(
        reg2.select(SensorType::Bearing, BundleKind::Window)
            .map(|b| b.manifest().name.clone()),
        Some("bearing-only".to_string())
    );
    let _ = Path::new(&dir);

    let shared = shared(ModelRegistry::empty());
    assert!(shared
        .load()
        .select(SensorType::Vibration, BundleKind::Window)
        .is_none());
    shared.store(Arc::new(reg));
    assert!(shared
        .load()
        .select(SensorType::Vibration, BundleKind::Window)
        .is_some());
}

/// A relative rolling bundle scores a poll's rows in one batched run, and each row's
/// score is bit for bit the score of a single call, below and above the batch size
/// and across a chunk boundary; other kinds of bundle score one call per row.
#[test]
fn score_rows_gives_each_row_its_single_call_score() {
    let all = ModelRegistry::with_defaults().expect("default bundles");
    let scalar = all
        .bundles()
        .iter()
        .find(|b| b.manifest().name == "scalar-relative")
        .expect("scalar-relative ships");
    assert!(scalar.batches(), "scalar-relative passes the batch check");
    let window = all
        .bundles()
        .iter()
        .find(|b| b.manifest().name == "vibration-relative")
        .expect("vibration-relative ships");
    assert!(
        !window.batches(),
        "a window bundle scores one call per window"
    );
    let mut rng = fastrand::Rng::with_seed(7);
    let mut scores = Vec::new();
    for b in [scalar, window] {
        let n = b.features().len();
        for rows in [1, 3, bundle::MIN_BATCH_ROWS, 30, bundle::BATCH_ROWS + 5] {
            // z values: mostly near 0, some far out, some exactly 0 (a missing feature).
            let x: Vec<f32> = (0..rows * n)
                .map(|i| match i % 7 {
                    0 => 0.0,
                    1 => rng.f32() * 40.0 - 20.0,
                    _ => rng.f32() * 4.0 - 2.0,
                })
                .collect();
            b.score_rows(&x, &mut scores);
            assert_eq!(scores.len(), rows, "{}: {rows} rows", b.detector());
            for (row, got) in x.chunks_exact(n).zip(&scores) {
                let one = b.score(row).expect("scores").to_bits();
                let got = got.as_ref().expect("scores").to_bits();
                assert_eq!(got, one, "{}: {rows} rows, row {row:?}", b.detector());
            }
        }
        // A length that is not whole rows is an error, not a guess.
        b.score_rows(&vec![0.0; n + 1], &mut scores);
        assert!(matches!(
            scores[..],
            [Err(InferenceError::FeatureCount { .. })]
        ));
    }
}
