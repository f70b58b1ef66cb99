//! Which bundle serves which sensor type, swappable at runtime.
//!
//! Selection follows the cloud's rules: temperature, pressure, humidity, voltage and
//! pump fall back to `general` models; vibration and bearing share models; `general`
//! comes last for every type. A bundle is only chosen for a channel whose data it can
//! consume (a `window` bundle for waveform channels, a `rolling` one for scalars); when
//! nothing fits, [`ModelRegistry::select`] returns `None` and the pipeline runs its
//! statistical fallback.
//!
//! The registry itself is immutable; [`SharedRegistry`] holds the current one and S3
//! sync replaces it whole with [`arc_swap::ArcSwap::store`]. The pipeline loads the
//! current registry per window, so a swap takes effect at the next window.

use super::bundle::ModelBundle;
use super::manifest::BundleKind;
use super::{InferenceError, Result};
use crate::record::SensorType;
use arc_swap::ArcSwap;
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
}

impl ModelRegistry {
    /// An empty registry: every channel uses the statistical fallback.
    pub fn empty() -> ModelRegistry {
        ModelRegistry::default()
    }

    /// A registry of the given bundles; earlier ones win ties.
    pub fn new(bundles: Vec<Arc<ModelBundle>>) -> ModelRegistry {
        ModelRegistry { bundles }
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
        Ok(ModelRegistry { bundles })
    }

    /// This registry with `bundle` first (it wins over the existing ones for the types
    /// it serves). S3 sync builds the next registry this way.
    pub fn with_preferred(&self, bundle: Arc<ModelBundle>) -> ModelRegistry {
        let mut bundles = Vec::with_capacity(self.bundles.len() + 1);
        bundles.push(bundle);
        bundles.extend(self.bundles.iter().cloned());
        ModelRegistry { bundles }
    }

    pub fn bundles(&self) -> &[Arc<ModelBundle>] {
        &self.bundles
    }

    /// The bundle for a channel of `sensor_type` that consumes `kind`, if any.
    pub fn select(&self, sensor_type: SensorType, kind: BundleKind) -> Option<Arc<ModelBundle>> {
        fallback_chain(sensor_type).iter().find_map(|t| {
            self.bundles
                .iter()
                .find(|b| b.kind() == kind && b.manifest().sensor_types.contains(t))
                .cloned()
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
