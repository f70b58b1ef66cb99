//! Which bundle serves which sensor type, swappable at runtime.
//!
//! Selection follows the cloud's rules: temperature, pressure, humidity, voltage and
//! pump fall back to `general` models; vibration and bearing share models; `general`
//! comes last for every type. A bundle is only chosen for a channel whose data it can
//! consume: a `window` bundle for waveform channels, a `rolling` one for scalars, and
//! an absolute window bundle only at the sample rate it was trained at (a relative
//! bundle works at any rate). Every candidate passed over is reported with the reason
//! ([`Choice::skipped`]), so `models list`, `check` and the log can say which detector
//! really scores a channel and why. When nothing fits, the pipeline scores with its
//! built-in relative rule.
//!
//! The shipped defaults, in priority order: `vibration-relative` and `scalar-relative`
//! (relative to each channel's baseline: they serve machines never seen before), then
//! `vibration-default` and `temperature-default` (absolute models of the CWRU rig and
//! the NAB machine, used only when pinned or named by the S3 index).
//!
//! S3 sync adds two layers on top: the index's assignment per sensor type (it wins
//! for that type) and per-device pins from the config (they win for that device).
//!
//! The registry itself is immutable; [`SharedRegistry`] holds the current one and S3
//! sync replaces it whole with [`arc_swap::ArcSwap::store`]. The pipeline loads the
//! current registry per window, so a swap takes effect at the next window.

use super::bundle::ModelBundle;
use super::manifest::BundleKind;
use super::{InferenceError, Result};
use crate::record::SensorType;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The registry the pipeline reads and S3 sync replaces.
pub type SharedRegistry = Arc<ArcSwap<ModelRegistry>>;

/// Wraps a registry for sharing.
pub fn shared(registry: ModelRegistry) -> SharedRegistry {
    Arc::new(ArcSwap::from_pointee(registry))
}

/// The shipped default bundles, compiled in: (name, manifest.json, model.onnx).
pub const DEFAULT_BUNDLES: &[(&str, &[u8], &[u8])] = &[
    (
        "vibration-relative",
        include_bytes!("../../models/vibration-relative/manifest.json"),
        include_bytes!("../../models/vibration-relative/model.onnx"),
    ),
    (
        "scalar-relative",
        include_bytes!("../../models/scalar-relative/manifest.json"),
        include_bytes!("../../models/scalar-relative/model.onnx"),
    ),
    (
        "vibration-default",
        include_bytes!("../../models/vibration-default/manifest.json"),
        include_bytes!("../../models/vibration-default/model.onnx"),
    ),
    (
        "temperature-default",
        include_bytes!("../../models/temperature-default/manifest.json"),
        include_bytes!("../../models/temperature-default/model.onnx"),
    ),
];

/// A set of checked bundles, indexed by the sensor types their manifests name.
#[derive(Debug, Default, Clone)]
pub struct ModelRegistry {
    /// In priority order: for the same sensor type and kind, the earlier bundle wins.
    bundles: Vec<Arc<ModelBundle>>,
    /// Bundles the S3 index names per sensor type: for that type they win over
    /// `bundles` (the index is the cloud's explicit choice).
    assigned: BTreeMap<SensorType, Arc<ModelBundle>>,
    /// Per-device pins from the config (`devices.model`): they win over everything for
    /// the device's channels whose data the bundle consumes.
    pins: HashMap<String, Arc<ModelBundle>>,
}

/// Why a channel uses the bundle it uses (for `edgegw models list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// The device pins this bundle in the config.
    Pinned,
    /// The S3 index names this bundle for this sensor type (the channel's own type,
    /// or one of its fallbacks).
    Index(SensorType),
    /// A bundle (built-in or cached) whose manifest lists this sensor type.
    Listed(SensorType),
}

/// The outcome of selecting a bundle for one channel.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    /// The bundle that scores the channel, and why.
    pub chosen: Option<(Arc<ModelBundle>, Selection)>,
    /// Candidates passed over (pinned, assigned or listed for the channel's type and
    /// kind), each with the reason in words.
    pub skipped: Vec<(Arc<ModelBundle>, String)>,
}

/// Why `bundle` cannot score a channel sampled at `rate` (None: it can).
fn unfit(bundle: &ModelBundle, rate: Option<f64>) -> Option<String> {
    let trained = bundle.manifest().rate_bound()?;
    let rate = rate?;
    if (trained - rate).abs() <= 1e-6 * trained.abs() {
        return None;
    }
    Some(format!(
        "trained at {} Hz, and this channel samples at {} Hz: its spectral features would not mean the same",
        trained, rate
    ))
}

impl ModelRegistry {
    /// An empty registry: every channel uses the statistical fallback.
    pub fn empty() -> ModelRegistry {
        ModelRegistry::default()
    }

    /// A registry of the given bundles; earlier ones win ties.
    pub fn new(bundles: Vec<Arc<ModelBundle>>) -> ModelRegistry {
        ModelRegistry {
            bundles,
            ..ModelRegistry::default()
        }
    }

    /// The shipped defaults, checked like any other bundle.
    pub fn with_defaults() -> Result<ModelRegistry> {
        let mut bundles = Vec::with_capacity(DEFAULT_BUNDLES.len());
        for (name, manifest, onnx) in DEFAULT_BUNDLES {
            let bundle = ModelBundle::load_bytes(manifest, onnx).map_err(|source| {
                InferenceError::Default {
                    name,
                    source: Box::new(source),
                }
            })?;
            bundles.push(Arc::new(bundle));
        }
        Ok(ModelRegistry {
            bundles,
            ..ModelRegistry::default()
        })
    }

    /// This registry with the index's per-type assignments and the device pins
    /// replaced (S3 sync builds every registry it swaps in this way).
    pub fn with_assignments(
        &self,
        assigned: BTreeMap<SensorType, Arc<ModelBundle>>,
        pins: HashMap<String, Arc<ModelBundle>>,
    ) -> ModelRegistry {
        ModelRegistry {
            bundles: self.bundles.clone(),
            assigned,
            pins,
        }
    }

    /// The index's assignments (sensor type -> bundle).
    pub fn assigned(&self) -> &BTreeMap<SensorType, Arc<ModelBundle>> {
        &self.assigned
    }

    /// The device pins (device id -> bundle).
    pub fn pins(&self) -> &HashMap<String, Arc<ModelBundle>> {
        &self.pins
    }

    /// This registry with `bundle` first (it wins over the existing ones for the types
    /// it serves). S3 sync builds the next registry this way.
    pub fn with_preferred(&self, bundle: Arc<ModelBundle>) -> ModelRegistry {
        let mut bundles = Vec::with_capacity(self.bundles.len() + 1);
        bundles.push(bundle);
        bundles.extend(self.bundles.iter().cloned());
        ModelRegistry {
            bundles,
            assigned: self.assigned.clone(),
            pins: self.pins.clone(),
        }
    }

    pub fn bundles(&self) -> &[Arc<ModelBundle>] {
        &self.bundles
    }

    /// The bundle for a channel of `sensor_type` that consumes `kind`, if any
    /// (ignoring device pins).
    pub fn select(&self, sensor_type: SensorType, kind: BundleKind) -> Option<Arc<ModelBundle>> {
        self.choose(None, sensor_type, kind).map(|(b, _)| b)
    }

    /// The bundle that serves each sensor type and kind now (before device pins and
    /// sample-rate checks), for `/metrics` and the status page.
    pub fn active(&self) -> Vec<(SensorType, BundleKind, Arc<ModelBundle>)> {
        let mut out = Vec::new();
        for t in SensorType::ALL {
            for kind in [BundleKind::Window, BundleKind::Rolling] {
                if let Some(b) = self.select(t, kind) {
                    out.push((t, kind, b));
                }
            }
        }
        out
    }

    /// Like [`ModelRegistry::select`], honouring a pin of `device`. The pipeline calls
    /// this per block or reading.
    pub fn select_for(
        &self,
        device: &str,
        sensor_type: SensorType,
        kind: BundleKind,
    ) -> Option<Arc<ModelBundle>> {
        self.choose(Some(device), sensor_type, kind).map(|(b, _)| b)
    }

    /// The bundle and why: a pin of `device` first, then per type along the fallback
    /// chain the index's assignment, then any listed bundle (ignoring sample rates;
    /// see [`ModelRegistry::choose_at`]).
    pub fn choose(
        &self,
        device: Option<&str>,
        sensor_type: SensorType,
        kind: BundleKind,
    ) -> Option<(Arc<ModelBundle>, Selection)> {
        self.choose_at(device, sensor_type, kind, None).chosen
    }

    /// Like [`ModelRegistry::choose`] for a channel sampled at `rate` (waveforms):
    /// an absolute window bundle trained at another rate is passed over, and said so.
    pub fn choose_at(
        &self,
        device: Option<&str>,
        sensor_type: SensorType,
        kind: BundleKind,
        rate: Option<f64>,
    ) -> Choice {
        let mut choice = Choice::default();
        let consider = |b: &Arc<ModelBundle>, why: Selection, choice: &mut Choice| -> bool {
            if b.kind() != kind {
                return false;
            }
            match unfit(b, rate) {
                None => {
                    choice.chosen = Some((b.clone(), why));
                    true
                }
                Some(reason) => {
                    if !choice.skipped.iter().any(|(s, _)| Arc::ptr_eq(s, b)) {
                        choice.skipped.push((b.clone(), reason));
                    }
                    false
                }
            }
        };
        if let Some(pinned) = device
            .filter(|_| !self.pins.is_empty())
            .and_then(|d| self.pins.get(d))
        {
            if consider(pinned, Selection::Pinned, &mut choice) {
                return choice;
            }
        }
        for t in fallback_chain(sensor_type) {
            if let Some(b) = self.assigned.get(t) {
                if consider(b, Selection::Index(*t), &mut choice) {
                    return choice;
                }
            }
            for b in self
                .bundles
                .iter()
                .filter(|b| b.manifest().sensor_types.contains(t))
            {
                if consider(b, Selection::Listed(*t), &mut choice) {
                    return choice;
                }
            }
        }
        choice
    }
}

/// Sensor types to try, in order, for a channel of `sensor_type` (the cloud's rules).
pub fn fallback_chain(sensor_type: SensorType) -> &'static [SensorType] {
    use SensorType as S;
    match sensor_type {
        S::Vibration => &[S::Vibration, S::Bearing, S::General],
        S::Bearing => &[S::Bearing, S::Vibration, S::General],
        S::Temperature => &[S::Temperature, S::General],
        S::Pressure => &[S::Pressure, S::General],
        S::Humidity => &[S::Humidity, S::General],
        S::Voltage => &[S::Voltage, S::General],
        S::Pump => &[S::Pump, S::General],
        S::Manufacturing => &[S::Manufacturing, S::General],
        S::Audio => &[S::Audio, S::General],
        S::Forecasting => &[S::Forecasting, S::General],
        S::General => &[S::General],
    }
}
