"""Tests of the training tools: python -m unittest discover -s tools/train

Need only the committed testdata/ and models/ (no ../shared/data).
"""

from __future__ import annotations

import hashlib
import json
import sys
import unittest
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import model as mdl  # noqa: E402
from features import (  # noqa: E402
    WINDOW_FEATURES,
    debounce_episodes,
    load_f32,
    rolling_features,
    window_features,
)


class FeatureDefinitions(unittest.TestCase):
    def test_moments_match_scipy(self):
        from scipy import stats

        x = load_f32(ROOT / "testdata" / "cwru" / "B007_12k.f32")[:2048].astype(np.float64)
        f = window_features(x, 12000.0)
        self.assertAlmostEqual(f["kurtosis"], stats.kurtosis(x, fisher=False, bias=True), places=10)
        self.assertAlmostEqual(f["skewness"], stats.skew(x, bias=True), places=10)
        self.assertAlmostEqual(f["std"], float(np.std(x)), places=12)
        self.assertAlmostEqual(f["crest_factor"], float(np.max(np.abs(x)) / np.sqrt(np.mean(x * x))), places=10)

    def test_pure_tone_spectrum(self):
        # 1500 Hz lies exactly on bin 256 of a 2048-sample window at 12 kHz.
        fs, n = 12000.0, 2048
        t = np.arange(n) / fs
        x = 0.5 * np.sin(2 * np.pi * 1500.0 * t) + 2.0
        f = window_features(x, fs)
        self.assertEqual(f["dominant_freq"], 1500.0)
        self.assertAlmostEqual(f["dominant_freq_amplitude"], 0.5, places=9)
        self.assertAlmostEqual(f["spectral_centroid"], 1500.0, places=6)
        self.assertAlmostEqual(f["high_freq_energy"], 1.0, places=9)
        self.assertAlmostEqual(f["mean"], 2.0, places=12)
        self.assertAlmostEqual(f["kurtosis"], 1.5, places=9)  # sine: Pearson kurtosis 3/2

    def test_degenerate_window(self):
        f = window_features(np.full(2048, 0.25), 12000.0)
        self.assertEqual((f["kurtosis"], f["skewness"]), (0.0, 0.0))
        self.assertEqual(f["crest_factor"], 1.0)
        self.assertEqual((f["spectral_centroid"], f["high_freq_energy"]), (0.0, 0.0))
        self.assertEqual((f["dominant_freq"], f["dominant_freq_amplitude"]), (12000.0 / 2048, 0.0))
        self.assertEqual(window_features(np.zeros(2048), 12000.0)["crest_factor"], 0.0)

    def test_rolling(self):
        r = np.array([1.0, 2.0, 4.0, 7.0])
        f = rolling_features(r)
        self.assertEqual(f["value"], 7.0)
        self.assertEqual(f["delta_1"], 3.0)
        self.assertEqual(f["delta_n"], 6.0)
        self.assertAlmostEqual(f["slope"], float(np.polyfit(np.arange(4), r, 1)[0]), places=12)
        self.assertAlmostEqual(f["zscore"], (7.0 - 3.5) / float(np.std(r)), places=12)
        flat = rolling_features(np.full(5, 3.0))
        self.assertEqual(flat["zscore"], 0.0)

    def test_debounce(self):
        f, t = False, True
        self.assertEqual(debounce_episodes([t, t, f, f, f]), [])
        self.assertEqual(debounce_episodes([t, f, t, f, t, f, f, f]), [(4, 5)])
        self.assertEqual(debounce_episodes([t, t, t, t]), [(2, 4)])


class Bundles(unittest.TestCase):
    def test_bundles_verify(self):
        import onnx
        import onnxruntime as ort

        for name in ("vibration-default", "temperature-default"):
            d = ROOT / "models" / name
            man = json.loads((d / "manifest.json").read_text())
            self.assertEqual(man["sha256"], hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest())
            model = onnx.load(str(d / "model.onnx"))
            self.assertLessEqual(mdl.ops_used(model), mdl.ALLOWED_OPS)
            self.assertEqual(model.opset_import[0].version, mdl.OPSET)
            self.assertEqual(man["input"]["shape"], [1, len(man["features"])])
            sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
            out = sess.run(["score"], {"features": np.asarray(man["example"]["input"], dtype=np.float32)})[0]
            self.assertEqual(float(out.reshape(-1)[0]), man["example"]["output"])
            if man["kind"] == "window":
                self.assertTrue(set(man["features"]) <= set(WINDOW_FEATURES))

    def test_expected_files_match_bundles(self):
        """testdata/expected was made with the committed bundles and agrees with the committed slices."""
        vib = json.loads((ROOT / "testdata" / "expected" / "vibration-default.json").read_text())
        man = json.loads((ROOT / "models" / "vibration-default" / "manifest.json").read_text())
        self.assertEqual(vib["sha256"], man["sha256"])
        holdout = next(f for f in vib["files"] if f["file"].endswith("normal_12k_holdout.f32"))
        self.assertEqual(holdout["flagged"], 0)
        x = load_f32(ROOT / holdout["file"])[:2048]
        f = window_features(x, 12000.0)
        for k in WINDOW_FEATURES:
            self.assertAlmostEqual(f[k], holdout["features"][0][k], places=9)


if __name__ == "__main__":
    unittest.main()
