//! A waveform message acknowledged to its source is durable even while its samples
//! wait in the windower (docs/ARCHITECTURE.md, "A reading is received when it is
//! committed"): the processor hands the windower's pending samples to the outbox
//! with the batch (`take_state(true)`), and a processor started on that state after
//! a crash continues the window exactly where the acknowledged messages left it.

use super::*;
use crate::inference::{shared, ModelRegistry};
use crate::record::{Record, SensorType};
use crate::sources::{ChannelId, Reading, Value};
use std::sync::Arc;

const T0: i64 = 1_764_028_800_000_000;

/// A 12 kHz block of `n` samples starting at sample `first` of a test signal.
fn block(ch: &ChannelId, first: usize, n: usize) -> Reading {
    let x: Vec<f32> = (first..first + n)
        .map(|i| (i as f32 * 0.37).sin() + 0.1 * ((i * 7919 % 101) as f32 / 101.0))
        .collect();
    let ts = T0 + ((first + n - 1) as f64 * 1e6 / 12_000.0).round() as i64;
    ch.reading(
        ts,
        Value::Block {
            sample_rate_hz: 12_000.0,
            samples: Arc::from(x),
        },
    )
}

fn window_features(records: &[Record]) -> Vec<(i64, Vec<(String, f64)>)> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Window(w) => Some((w.ts_us, w.features.clone())),
            _ => None,
        })
        .collect()
}

/// What the outbox writer does with `OutboxBatch::state`.
fn commit(store: &mut MemoryStateStore, state: Vec<(String, Vec<u8>)>) {
    for (k, v) in state {
        store.put(&k, &v).unwrap();
    }
}

#[test]
fn pending_waveform_samples_survive_a_crash_between_windows() {
    let ch = ChannelId::new("pump1", "accel", SensorType::Vibration, "g");
    let settings = PipelineSettings::default();
    let registry = || shared(ModelRegistry::with_defaults().unwrap());
    // 600-sample messages against 2048-sample windows (hop 1024): most messages
    // complete no window, so their samples are only in the windower when acked.
    let messages: Vec<Reading> = (0..12).map(|i| block(&ch, i * 600, 600)).collect();

    // Uninterrupted.
    let mut p = Processor::new(&settings, registry(), Box::new(MemoryStateStore::new()));
    let mut whole = Vec::new();
    for m in &messages {
        whole.extend(p.process(std::slice::from_ref(m)));
    }
    let whole = window_features(&whole);
    assert!(whole.len() >= 5, "{} windows", whole.len());

    // Acknowledged messages commit their state; the process dies after message 5
    // (acked, no window pending from it) and a new one starts on the same database.
    let mut store = MemoryStateStore::new();
    let mut p = Processor::new(&settings, registry(), Box::new(store.clone()));
    let mut got = Vec::new();
    for m in &messages[..6] {
        got.extend(p.process(std::slice::from_ref(m)));
        let state = p.take_state(true);
        assert!(
            state.iter().any(|(k, _)| k == "window/pump1.accel"),
            "an acked block saves the window it is waiting in"
        );
        commit(&mut store, state);
    }
    drop(p);
    let mut p = Processor::new(&settings, registry(), Box::new(store.clone()));
    for m in &messages[6..] {
        got.extend(p.process(std::slice::from_ref(m)));
        commit(&mut store, p.take_state(true));
    }
    let got = window_features(&got);
    assert_eq!(got.len(), whole.len(), "no window lost at the restart");
    for ((ta, fa), (tb, fb)) in whole.iter().zip(&got) {
        assert_eq!(ta, tb);
        for ((na, va), (nb, vb)) in fa.iter().zip(fb) {
            assert_eq!(na, nb);
            assert!(
                (va - vb).abs() <= 1e-9 * va.abs().max(1.0),
                "{na}: {va} vs {vb}"
            );
        }
    }

    // Without an ack (polled Modbus blocks) nothing extra is written.
    let mut p = Processor::new(&settings, registry(), Box::new(MemoryStateStore::new()));
    p.process(std::slice::from_ref(&messages[0]));
    assert!(!p
        .take_state(false)
        .iter()
        .any(|(k, _)| k.starts_with("window/")));
}
