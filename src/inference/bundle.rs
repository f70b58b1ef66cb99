//! One checked, ready-to-run model bundle.
//!
//! Loading runs every check the manifest allows, in this order, and stops at the first
//! failure with an error naming it: manifest syntax and fields, sha256 of `model.onnx`,
//! tract parsing, input/output names, optimisation into a plan, and the manifest's
//! example (within 1e-4 relative). The tract plan is built once; [`ModelBundle::score`]
//! reuses it (and its per-run state) for every window.

use super::manifest::{BundleKind, Manifest, Reference};
use super::{InferenceError, Result};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tract_onnx::prelude::*;

/// Relative tolerance of the example check (and the Python/Rust feature contract).
pub const EXAMPLE_TOLERANCE: f64 = 1e-4;

/// Rows of one batched run of a relative rolling bundle ([`ModelBundle::score_rows`]).
pub const BATCH_ROWS: usize = 32;
/// Fewer rows than this are scored one call each: one batched run of [`BATCH_ROWS`]
/// rows costs about as much as 6–7 single calls (`cargo bench --bench inference --
/// tract_rows`: 15.9 µs for a run of 30 rows, 2.5 µs for one call).
pub const MIN_BATCH_ROWS: usize = 8;

/// The same graph planned for [`BATCH_ROWS`] rows, with its own run state.
struct Batch {
    plan: Arc<TypedSimplePlan>,
    state: Mutex<TypedSimpleState>,
}

/// A bundle that passed every check and can score feature vectors.
pub struct ModelBundle {
    manifest: Manifest,
    /// `name@version`, precomputed because every window record carries it.
    detector: crate::id::Id,
    /// Where it came from (directory or `memory`), for messages.
    origin: String,
    plan: Arc<TypedSimplePlan>,
    /// Run state reused across calls so a window costs one plan execution, not a
    /// state setup too. The pipeline scores from one thread; the lock is uncontended.
    state: Mutex<TypedSimpleState>,
    /// For a relative rolling bundle (one score per reading), the graph planned for a
    /// batch of rows, kept only when it gives every row of a batch the very score
    /// of a single call (checked at load); `None` otherwise, and rows are scored one
    /// call each.
    batch: Option<Batch>,
}

impl std::fmt::Debug for ModelBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelBundle")
            .field("detector", &self.detector)
            .field("origin", &self.origin)
            .field("kind", &self.manifest.kind)
            .field("sensor_types", &self.manifest.sensor_types)
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ModelBundle {
    /// Loads and checks the bundle in `dir` (`model.onnx` + `manifest.json`).
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<ModelBundle> {
        let dir = dir.as_ref();
        let origin = dir.display().to_string();
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| InferenceError::Io {
                bundle: origin.clone(),
                path,
                source,
            })
        };
        let manifest = read("manifest.json")?;
        let onnx = read("model.onnx")?;
        Self::load(origin.clone(), &manifest, &onnx)
    }

    /// Loads and checks a bundle from memory (embedded defaults, a download).
    pub fn load_bytes(manifest_json: &[u8], onnx_bytes: &[u8]) -> Result<ModelBundle> {
        // Name the bundle in errors if the manifest at least parses as far as its name.
        let origin = serde_json::from_slice::<serde_json::Value>(manifest_json)
            .ok()
            .and_then(|v| {
                let name = v.get("name")?.as_str()?.to_string();
                let version = v.get("version").and_then(|x| x.as_str()).unwrap_or("?");
                Some(format!("{name}@{version} (in memory)"))
            })
            .unwrap_or_else(|| "(in memory)".to_string());
        Self::load(origin, manifest_json, onnx_bytes)
    }

    fn load(origin: String, manifest_json: &[u8], onnx: &[u8]) -> Result<ModelBundle> {
        let manifest = Manifest::parse(&origin, manifest_json)?;

        let actual = hex(&Sha256::digest(onnx));
        if !actual.eq_ignore_ascii_case(&manifest.sha256) {
            return Err(InferenceError::Checksum {
                bundle: origin,
                expected: manifest.sha256.clone(),
                actual,
            });
        }

        let load_err = |stage: &'static str| {
            let origin = origin.clone();
            move |e: TractError| InferenceError::Load {
                bundle: origin,
                stage,
                message: format!("{e:#}"),
            }
        };
        let n = manifest.features.len();
        let mut reader = onnx;
        let framework = super::operators::onnx();
        let proto = framework
            .proto_model_for_read(&mut reader)
            .map_err(load_err("parse"))?;
        let graph_ops = proto.graph.iter().flat_map(|g| &g.node);
        let missing = super::operators::unsupported(
            graph_ops.map(|n| (n.domain.as_str(), n.op_type.as_str())),
        );
        if !missing.is_empty() {
            return Err(InferenceError::Operators {
                bundle: origin,
                missing: missing.join(", "),
            });
        }
        let model = framework
            .model_for_proto_model(&proto)
            .map_err(load_err("parse"))?;
        check_io_names(&origin, &manifest, &model)?;
        let batch_model = (manifest.kind == BundleKind::Rolling
            && manifest.reference == Reference::Baseline)
            .then(|| model.clone());
        let plan = model
            .with_input_fact(0, f32::fact([1, n]).into())
            .map_err(load_err("input shape"))?
            .into_optimized()
            .map_err(load_err("optimise"))?
            .into_runnable()
            .map_err(load_err("plan"))?;
        let state = plan.spawn().map_err(load_err("state"))?;
        let bundle = ModelBundle {
            detector: manifest.detector_name().into(),
            manifest,
            origin,
            plan,
            state: Mutex::new(state),
            batch: None,
        };

        let expected = bundle.manifest.example.output;
        // A model whose real input does not fit the manifest can get through tract's
        // analysis (broadcasting) and only fail when run: that is a load failure.
        let actual = match bundle.score(&bundle.manifest.example.input[0]) {
            Ok(score) => f64::from(score),
            Err(InferenceError::Run { bundle, message }) => {
                return Err(InferenceError::Load {
                    bundle,
                    stage: "example run",
                    message,
                })
            }
            Err(e) => return Err(e),
        };
        if (actual - expected).abs() > EXAMPLE_TOLERANCE * expected.abs().max(1e-6) {
            return Err(InferenceError::Example {
                bundle: bundle.origin,
                expected,
                actual,
            });
        }
        let mut bundle = bundle;
        bundle.batch = batch_model.and_then(|m| bundle.checked_batch(m));
        Ok(bundle)
    }

    /// The graph planned for [`BATCH_ROWS`] rows, if it loads and scores each row of a
    /// batch of distinct rows exactly (bit for bit) as a single call does: a graph
    /// whose operators mix rows, or whose batched kernels round differently, is left
    /// to single calls, so batching never changes a score.
    fn checked_batch(&self, model: InferenceModel) -> Option<Batch> {
        let n = self.manifest.features.len();
        let plan = model
            .with_input_fact(0, f32::fact([BATCH_ROWS, n]).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .ok()?;
        let state = plan.spawn().ok()?;
        let batch = Batch {
            plan,
            state: Mutex::new(state),
        };
        // Distinct rows around the example (scaled, and each feature moved on its
        // own), so that a graph mixing rows would show.
        let example = &self.manifest.example.input[0];
        let rows: Vec<f32> = (0..BATCH_ROWS)
            .flat_map(|i| {
                example.iter().enumerate().map(move |(j, &x)| {
                    let scale = 1.0 + 0.25 * i as f32;
                    let shift = if j == i % n { 1.5 } else { 0.0 };
                    x * scale + shift
                })
            })
            .collect();
        let batched = self.run_batch(&batch, &rows).ok()?;
        let same = rows
            .chunks_exact(n)
            .zip(&batched)
            .all(|(row, b)| matches!(self.score(row), Ok(s) if s.to_bits() == b.to_bits()));
        same.then_some(batch)
    }

    /// One run of the batch plan on `rows` (at most [`BATCH_ROWS`] rows of the
    /// manifest's features; the rest of the batch is padded with the first row):
    /// one raw score per row given.
    fn run_batch(&self, batch: &Batch, rows: &[f32]) -> Result<Vec<f32>> {
        let n = self.manifest.features.len();
        let k = rows.len() / n;
        let mut padded = Vec::with_capacity(BATCH_ROWS * n);
        padded.extend_from_slice(rows);
        while padded.len() < BATCH_ROWS * n {
            padded.extend_from_slice(&rows[..n]);
        }
        self.run_plan(&batch.plan, &batch.state, BATCH_ROWS, &padded, |scores| {
            scores.take(k).collect()
        })
    }

    /// One run of `plan` (with its reused `state`) on `rows` rows of the manifest's
    /// features; `read` gets the raw (unchecked) scores, one per row, in row order.
    fn run_plan<R>(
        &self,
        plan: &Arc<TypedSimplePlan>,
        state: &Mutex<TypedSimpleState>,
        rows: usize,
        data: &[f32],
        read: impl FnOnce(&mut dyn Iterator<Item = f32>) -> R,
    ) -> Result<R> {
        let run_err = |e: TractError| InferenceError::Run {
            bundle: self.origin.clone(),
            message: format!("{e:#}"),
        };
        let n = self.manifest.features.len();
        let input = Tensor::from_shape(&[rows, n], data).map_err(run_err)?;
        let outputs = {
            let mut state = match state.lock() {
                Ok(s) => s,
                // A panic inside tract while holding the lock: the state may be
                // half-run, so start a fresh one rather than trusting it.
                Err(poisoned) => {
                    let mut s = poisoned.into_inner();
                    *s = plan.spawn().map_err(run_err)?;
                    s
                }
            };
            state.run(tvec!(input.into_tvalue())).map_err(run_err)?
        };
        let out = outputs.first().ok_or_else(|| InferenceError::Run {
            bundle: self.origin.clone(),
            message: "model has no output".into(),
        })?;
        let view = out.to_plain_array_view::<f32>().map_err(run_err)?;
        if view.len() != rows {
            return Err(InferenceError::Run {
                bundle: self.origin.clone(),
                message: format!("output has {} values, expected {rows}", view.len()),
            });
        }
        Ok(read(&mut view.iter().copied()))
    }

    /// Whether [`ModelBundle::score_rows`] runs batches (a relative rolling bundle
    /// whose graph passed the check at load).
    pub fn batches(&self) -> bool {
        self.batch.is_some()
    }

    /// Scores several feature vectors (`rows`: one after the other, each in the
    /// manifest's feature order) into `scores`, one result per row, each exactly
    /// what [`ModelBundle::score`] gives that row. From [`MIN_BATCH_ROWS`] rows on, a
    /// bundle that [`batches`](ModelBundle::batches) runs them [`BATCH_ROWS`] at a
    /// time; a batched run that fails is retried one call per row.
    pub fn score_rows(&self, rows: &[f32], scores: &mut Vec<Result<f32>>) {
        let n = self.manifest.features.len();
        scores.clear();
        if n == 0 || rows.len() % n != 0 {
            scores.push(Err(InferenceError::FeatureCount {
                bundle: self.origin.clone(),
                expected: n,
                got: rows.len(),
            }));
            return;
        }
        for chunk in rows.chunks(BATCH_ROWS * n) {
            let batched = match &self.batch {
                Some(b) if chunk.len() / n >= MIN_BATCH_ROWS => self.run_batch(b, chunk).ok(),
                _ => None,
            };
            match batched {
                Some(raw) => scores.extend(raw.into_iter().map(|s| self.finite(s))),
                None => scores.extend(chunk.chunks_exact(n).map(|row| self.score(row))),
            }
        }
    }

    fn finite(&self, score: f32) -> Result<f32> {
        if score.is_finite() {
            Ok(score)
        } else {
            Err(InferenceError::Run {
                bundle: self.origin.clone(),
                message: format!("score is not finite ({score})"),
            })
        }
    }

    /// Anomaly score for one feature vector, in the manifest's feature order.
    pub fn score(&self, features: &[f32]) -> Result<f32> {
        let n = self.manifest.features.len();
        if features.len() != n {
            return Err(InferenceError::FeatureCount {
                bundle: self.origin.clone(),
                expected: n,
                got: features.len(),
            });
        }
        let raw = self.run_plan(&self.plan, &self.state, 1, features, |scores| {
            scores.next().unwrap_or(f32::NAN)
        })?;
        self.finite(raw)
    }

    /// Confidence 0..1 for a score: `clamp(1 - threshold/score, 0, 1)` above the
    /// threshold, 0 at or below it.
    pub fn confidence(&self, score: f64) -> f64 {
        confidence(score, self.manifest.threshold)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn kind(&self) -> BundleKind {
        self.manifest.kind
    }

    pub fn threshold(&self) -> f64 {
        self.manifest.threshold
    }

    pub fn features(&self) -> &[String] {
        &self.manifest.features
    }

    /// `name@version`.
    pub fn detector(&self) -> &crate::id::Id {
        &self.detector
    }
}

/// `clamp(1 - threshold/score, 0, 1)` when score > threshold, else 0.
pub fn confidence(score: f64, threshold: f64) -> f64 {
    if score > threshold && score > 0.0 {
        (1.0 - threshold / score).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

fn check_io_names(origin: &str, manifest: &Manifest, model: &InferenceModel) -> Result<()> {
    let field = |field: &'static str, reason: String| InferenceError::ManifestField {
        bundle: origin.to_string(),
        field,
        reason,
    };
    let inputs = model
        .input_outlets()
        .map_err(|e| field("input.name", format!("{e:#}")))?;
    if inputs.len() != 1 {
        return Err(field(
            "input.name",
            format!("the model has {} inputs, expected exactly 1", inputs.len()),
        ));
    }
    let input_name = &model.node(inputs[0].node).name;
    if *input_name != manifest.input.name {
        return Err(field(
            "input.name",
            format!(
                "`{}` but the model's input is `{input_name}`",
                manifest.input.name
            ),
        ));
    }
    let outputs = model
        .output_outlets()
        .map_err(|e| field("output.name", format!("{e:#}")))?;
    let names: Vec<&str> = outputs
        .iter()
        .map(|o| {
            model
                .outlet_label(*o)
                .unwrap_or(model.node(o.node).name.as_str())
        })
        .collect();
    if names.first() != Some(&manifest.output.name.as_str()) {
        return Err(field(
            "output.name",
            format!(
                "`{}` but the model's first output is {:?}",
                manifest.output.name,
                names.first()
            ),
        ));
    }
    Ok(())
}
