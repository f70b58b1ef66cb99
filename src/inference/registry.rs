//! Which bundle serves which sensor type, swappable at runtime.
//!
//! Selection follows the cloud's rules: temperature, pressure, humidity, voltage and
//! pump fall back to `general` models; vibration and bearing share models; `general`
//! comes last for every type. A bundle is only chosen for a channel whose data it can
//! consume (a `window` bundle for waveform channels, a `rolling` one for scalars); when
//! nothing fits, [`ModelRegistry::select`] returns `None` and the pipeline runs its
//! statistical fallback.
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
    /// chain the index's assignment, then any listed bundle.
    pub fn choose(
        &self,
        device: Option<&str>,
        sensor_type: SensorType,
        kind: BundleKind,
    ) -> Option<(Arc<ModelBundle>, Selection)> {
        if let Some(pinned) = device
            .filter(|_| !self.pins.is_empty())
            .and_then(|d| self.pins.get(d))
            .filter(|b| b.kind() == kind)
        {
            return Some((pinned.clone(), Selection::Pinned));
        }
        fallback_chain(sensor_type).iter().find_map(|t| {
            if let Some(b) = self.assigned.get(t).filter(|b| b.kind() == kind) {
                return Some((b.clone(), Selection::Index(*t)));
            }
            self.bundles
                .iter()
                .find(|b| b.kind() == kind && b.manifest().sensor_types.contains(t))
                .map(|b| (b.clone(), Selection::Listed(*t)))
        })
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
