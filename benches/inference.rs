//! tract inference per call on the shipped bundles, with each manifest's example input
//! (the same input `tools/train/bench_onnxruntime.py` feeds onnxruntime).
//!
//! Run both side by side with `scripts/bench-inference`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use edgegw::inference::ModelBundle;

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

criterion_group!(benches, inference);
criterion_main!(benches);
