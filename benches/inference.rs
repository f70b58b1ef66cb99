//! tract inference per call on the shipped bundles, with each manifest's example input
//! (the same input `tools/train/bench_onnxruntime.py` feeds onnxruntime).
//!
//! Run both side by side with `scripts/bench-inference` (the `tract` group). The
//! `tract_rows` group measures batching rows into one run (docs/PERFORMANCE.md, "The
//! processor's scalar path").

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use edgegw::inference::ModelBundle;
use tract_onnx::prelude::*;

fn inference(c: &mut Criterion) {
    let mut g = c.benchmark_group("tract");
    for name in ["vibration-default", "temperature-default"] {
        let dir = format!("{}/models/{name}", env!("CARGO_MANIFEST_DIR"));
        let bundle = ModelBundle::load_dir(&dir).expect("bundle loads");
        let x = bundle.manifest().example.input[0].clone();
        g.bench_function(name, |b| b.iter(|| black_box(bundle.score(black_box(&x)))));
    }
    g.finish();
}

/// What one poll of 30 scalar channels costs the relative bundle: 30 calls of
/// `ModelBundle::score` (what the processor did, one per reading) against one tract
/// run of the same ONNX graph loaded for a batch of 30 rows (what
/// `ModelBundle::score_rows` does with its own 32-row plan; tract's cost per call is
/// mostly per operator, not per value). Per row, so the two read side by side.
fn batch(c: &mut Criterion) {
    const ROWS: usize = 30;
    let mut g = c.benchmark_group("tract_rows");
    g.throughput(Throughput::Elements(ROWS as u64));
    for name in ["scalar-relative", "vibration-relative"] {
        let dir = format!("{}/models/{name}", env!("CARGO_MANIFEST_DIR"));
        let bundle = ModelBundle::load_dir(&dir).expect("bundle loads");
        let x = bundle.manifest().example.input[0].clone();
        let n = x.len();
        g.bench_function(format!("{name}/one_call_per_row"), |b| {
            b.iter(|| {
                for _ in 0..ROWS {
                    black_box(bundle.score(black_box(&x)).expect("scores"));
                }
            })
        });
        let plan = edgegw::inference::operators::onnx()
            .model_for_path(format!("{dir}/model.onnx"))
            .and_then(|m| m.with_input_fact(0, f32::fact([ROWS, n]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .expect("the graph loads for a batch");
        let rows: Vec<f32> = (0..ROWS).flat_map(|_| x.iter().copied()).collect();
        let input = Tensor::from_shape(&[ROWS, n], &rows).expect("input");
        let out = plan.run(tvec!(input.clone().into_tvalue())).expect("runs");
        let scores = out[0].to_plain_array_view::<f32>().expect("f32");
        let one = bundle.score(&x).expect("scores");
        assert_eq!(scores.len(), ROWS, "{name}: one score per row");
        assert!(
            scores.iter().all(|s| *s == one),
            "{name}: the batch scores as one call"
        );
        g.bench_function(format!("{name}/one_run_of_{ROWS}_rows"), |b| {
            b.iter(|| black_box(plan.run(tvec!(input.clone().into_tvalue())).expect("runs")))
        });
    }
    g.finish();
}

criterion_group!(benches, inference, batch);
criterion_main!(benches);
