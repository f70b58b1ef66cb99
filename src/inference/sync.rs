//! S3 model sync: which bundle is active per sensor type, keeping it current from the
//! bucket, and never leaving the gateway without a model.
//!
//! Bucket layout (docs/models.md): `<prefix>/index.json` names, per sensor type, the
//! current bundle; bundles live at `<prefix>/<name>/<version>/{manifest.json,model.onnx}`.
//!
//! One sync: a conditional GET of the index (`If-None-Match` with the ETag of the
//! last fully applied index, so "nothing new" costs one small request); for each
//! bundle the index names that is not cached: download into a staging directory in
//! the cache, size limit, sha256 against the manifest, tract load and the manifest's
//! example run, then an atomic rename into `<cache>/<name>/<version>/`; then one
//! [`SharedRegistry`] store. The pipeline reads the registry per block/reading, so
//! each window is scored by exactly one registry: the one current when it is scored.
//!
//! A rejected bundle (bad checksum, unloadable, wrong shape, bad manifest) is logged,
//! counted, remembered (not downloaded again by this process) and the type's previous
//! bundle stays. Network trouble leaves everything as it is and the next sync
//! retries. At start the cache state (`state.json`) is applied before any network
//! I/O; without a cache the built-in defaults are used.
//!
//! It does not score, and it never loads a bundle from outside the cache directory.

use super::cache::{compare_versions, BundleRef, CacheError, CacheLock, CacheState, ModelCache};
use super::registry::fallback_chain;
use super::s3::{Fetched, S3Client, S3Error};
use super::{ModelBundle, ModelRegistry, SharedRegistry};
use crate::config::{GatewayConfig, ModelPin};
use crate::record::SensorType;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod download;
mod task;

pub use task::{start, ModelSyncHandle};

/// The index is small; anything bigger is not an index.
const MAX_INDEX_BYTES: u64 = 1 << 20;
/// Same for a manifest.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Why a sync did not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("model sync is not configured: add [models.s3] to the config")]
    NotConfigured,
    #[error("model sync cannot start: {0}")]
    Client(String),
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("s3://{bucket}/{key}: not a valid model index: {reason}")]
    Index {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("the model sync task has stopped")]
    Stopped,
}

/// Counters for the metrics endpoint (monotonic).
#[derive(Debug, Default)]
pub struct SyncCounters {
    /// Syncs attempted.
    pub syncs: AtomicU64,
    /// Syncs answered `304 Not Modified` for the index.
    pub not_modified: AtomicU64,
    /// Bundles downloaded, checked and installed into the cache.
    pub installed: AtomicU64,
    /// Bundles (or indexes) refused by a check; the previous bundle stayed.
    pub rejected: AtomicU64,
    /// Syncs or downloads that failed on the network, the server or the disk.
    pub errors: AtomicU64,
    /// Registry swaps.
    pub swaps: AtomicU64,
}

/// A copy of [`SyncCounters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SyncCounterValues {
    pub syncs: u64,
    pub not_modified: u64,
    pub installed: u64,
    pub rejected: u64,
    pub errors: u64,
    pub swaps: u64,
}

impl SyncCounters {
    pub fn values(&self) -> SyncCounterValues {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SyncCounterValues {
            syncs: g(&self.syncs),
            not_modified: g(&self.not_modified),
            installed: g(&self.installed),
            rejected: g(&self.rejected),
            errors: g(&self.errors),
            swaps: g(&self.swaps),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What one sync did.
#[derive(Debug, Default, Clone)]
pub struct SyncReport {
    /// The index was unchanged (`304`).
    pub not_modified: bool,
    /// Bundles newly downloaded and installed.
    pub installed: Vec<BundleRef>,
    /// Bundles refused, with the reason.
    pub rejected: Vec<String>,
    /// Downloads that failed for now (retried at the next sync), with the reason.
    pub failed: Vec<String>,
    /// The registry was swapped.
    pub swapped: bool,
    /// Active assignment per sensor type after the sync (`name@version`).
    pub active: BTreeMap<SensorType, String>,
}

/// The parsed `index.json`: per sensor type, the bundle to use.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Index {
    pub models: BTreeMap<SensorType, BundleRef>,
}

/// Parses `index.json`: `{"models": {"vibration": {"name": .., "version": ..}, ..}}`.
/// Unknown sensor types are skipped (a newer cloud may know more); other fields are
/// ignored so the format can grow.
pub fn parse_index(bytes: &[u8]) -> Result<Index, String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        models: BTreeMap<String, BundleRef>,
    }
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut models = BTreeMap::new();
    for (ty, r) in raw.models {
        let Ok(t) = serde_json::from_value::<SensorType>(serde_json::Value::String(ty.clone()))
        else {
            tracing::warn!(sensor_type = %ty, "Model index names an unknown sensor type; skipped.");
            continue;
        };
        r.check().map_err(|e| format!("models.{ty}: {e}"))?;
        models.insert(t, r);
    }
    Ok(Index { models })
}

/// Keeps the registry's S3 layers (index assignments, pins) and the cache in step.
pub struct ModelSync {
    /// This process is the cache's one writer while this lives.
    _lock: CacheLock,
    client: Result<S3Client, String>,
    prefix: String,
    max_bundle_bytes: u64,
    cache: ModelCache,
    registry: SharedRegistry,
    /// The built-in defaults (the registry without S3 layers).
    base: ModelRegistry,
    pins: Vec<(String, ModelPin)>,
    assigned: BTreeMap<SensorType, Arc<ModelBundle>>,
    pinned: HashMap<String, Arc<ModelBundle>>,
    /// ETag of the last index that was fully applied.
    etag: Option<String>,
    /// Refused by this process; not downloaded again until the index names another.
    rejected: BTreeSet<BundleRef>,
    counters: Arc<SyncCounters>,
}

impl std::fmt::Debug for ModelSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSync")
            .field("client", &self.client)
            .field("cache", &self.cache.dir())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Why a download did not produce a bundle.
enum Failure {
    /// The bundle is bad: remember and keep the previous one.
    Rejected(String),
    /// Try again at the next sync.
    Transient(String),
}

impl ModelSync {
    /// Opens the cache. `registry` is the one the pipeline reads; its current content
    /// (the built-in defaults) becomes the base under the S3 layers. S3 client
    /// problems (missing credentials) do not fail here: every sync reports them.
    ///
    /// Takes the cache's one-writer lock ([`CacheLock`]) for the life of the value;
    /// fails with [`CacheError::Busy`] while another process holds it.
    pub fn new(config: &GatewayConfig, registry: SharedRegistry) -> Result<ModelSync, SyncError> {
        Self::with_lock(config, registry, false)
    }

    /// [`ModelSync::new`], waiting for the cache lock instead of failing (the daemon:
    /// an `edgegw models sync` in progress delays its start, never its data).
    pub fn new_waiting(
        config: &GatewayConfig,
        registry: SharedRegistry,
    ) -> Result<ModelSync, SyncError> {
        Self::with_lock(config, registry, true)
    }

    fn with_lock(
        config: &GatewayConfig,
        registry: SharedRegistry,
        wait: bool,
    ) -> Result<ModelSync, SyncError> {
        let models = &config.models;
        let dir = models.cache_dir(&config.gateway.state_dir);
        // Before `open`, which clears staging leftovers: only the writer may.
        let lock = CacheLock::acquire(&dir, wait)?;
        let cache = ModelCache::open(dir)?;
        let client = match &models.s3 {
            None => Err(SyncError::NotConfigured.to_string()),
            Some(s3) => S3Client::new(s3).map_err(|e| e.to_string()),
        };
        let (prefix, max_bundle_bytes) = models.s3.as_ref().map_or((String::new(), 0), |s| {
            (s.prefix.clone(), s.max_bundle_mb.saturating_mul(1 << 20))
        });
        let current = registry.load_full();
        let base = current.with_assignments(BTreeMap::new(), HashMap::new());
        let pins = config
            .devices
            .iter()
            .filter_map(|d| d.model.clone().map(|p| (d.id.clone(), p)))
            .collect();
        Ok(ModelSync {
            _lock: lock,
            client,
            prefix,
            max_bundle_bytes,
            cache,
            registry,
            base,
            pins,
            assigned: BTreeMap::new(),
            pinned: HashMap::new(),
            etag: None,
            rejected: BTreeSet::new(),
            counters: Arc::new(SyncCounters::default()),
        })
    }

    pub fn counters(&self) -> Arc<SyncCounters> {
        self.counters.clone()
    }

    pub fn cache(&self) -> &ModelCache {
        &self.cache
    }

    /// Applies what the cache holds (no network): the saved active bundle per type,
    /// and the pins. Bundles that no longer pass their checks are skipped with a log
    /// line (their type falls back to the built-in default). CPU work: tract loads.
    pub fn load_cached(&mut self) {
        let state = self.cache.read_state();
        let mut all_ok = true;
        for (t, r) in &state.active {
            match self.cache.load(r) {
                Ok(b) => {
                    self.assigned.insert(*t, Arc::new(b));
                }
                Err(e) => {
                    all_ok = false;
                    tracing::error!(sensor_type = ?t, bundle = %r, error = %e, "Cached model bundle does not load; using the built-in default for this type.");
                }
            }
        }
        // Re-check the whole index at the next sync unless everything came back.
        self.etag = state.index_etag.filter(|_| all_ok);
        self.resolve_pins_offline();
        self.publish();
        if !self.assigned.is_empty() {
            tracing::info!(active = %self.active_text(), cache = %self.cache.dir().display(), "Using cached model bundles.");
        }
    }

    /// The pins that can be served from the cache or the defaults.
    fn resolve_pins_offline(&mut self) {
        for (device, pin) in self.pins.clone() {
            match self.pin_target(&pin) {
                PinTarget::Ready(b) => {
                    self.pinned.insert(device, b);
                }
                PinTarget::Cached(r) => match self.cache.load(&r) {
                    Ok(b) => {
                        self.pinned.insert(device, Arc::new(b));
                    }
                    Err(e) => {
                        tracing::error!(device = %device, bundle = %r, error = %e, "Pinned model bundle does not load; the device uses selection by sensor type.");
                    }
                },
                PinTarget::Download(_) | PinTarget::Unavailable => {
                    tracing::warn!(device = %device, pin = %pin_text(&pin), "Pinned model bundle is not available (yet); the device uses selection by sensor type.");
                }
            }
        }
    }

    fn pin_target(&self, pin: &ModelPin) -> PinTarget {
        let loaded = self
            .assigned
            .values()
            .chain(self.pinned.values())
            .chain(self.base.bundles().iter());
        let version = match &pin.version {
            Some(v) => v.clone(),
            None => {
                // The newest of: what is loaded (index, defaults) and what is cached.
                let best_loaded = loaded
                    .clone()
                    .filter(|b| b.manifest().name == pin.name)
                    .max_by(|a, b| compare_versions(&a.manifest().version, &b.manifest().version));
                let cached = self.cache.newest(&pin.name);
                match (best_loaded, cached) {
                    (Some(b), Some(c))
                        if compare_versions(&c.version, &b.manifest().version).is_gt() =>
                    {
                        return PinTarget::Cached(c)
                    }
                    (Some(b), _) => return PinTarget::Ready(b.clone()),
                    (None, Some(c)) => return PinTarget::Cached(c),
                    (None, None) => return PinTarget::Unavailable,
                }
            }
        };
        let r = BundleRef {
            name: pin.name.clone(),
            version,
        };
        if let Some(b) = loaded
            .clone()
            .find(|b| b.manifest().name == r.name && b.manifest().version == r.version)
        {
            return PinTarget::Ready(b.clone());
        }
        if self.cache.contains(&r) {
            PinTarget::Cached(r)
        } else {
            PinTarget::Download(r)
        }
    }

    /// Swaps in a registry with the current assignments and pins.
    fn publish(&self) {
        let next = self
            .base
            .with_assignments(self.assigned.clone(), self.pinned.clone());
        self.registry.store(Arc::new(next));
        bump(&self.counters.swaps);
    }

    fn active_text(&self) -> String {
        self.assigned
            .iter()
            .map(|(t, b)| format!("{} -> {}", type_name(*t), b.detector()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn index_key(&self) -> String {
        if self.prefix.is_empty() {
            "index.json".into()
        } else {
            format!("{}/index.json", self.prefix)
        }
    }

    /// One sync. `Err` when the index could not be fetched or read; problems with
    /// single bundles are in the report (and the log), and never stop the others.
    pub async fn sync_once(&mut self) -> Result<SyncReport, SyncError> {
        bump(&self.counters.syncs);
        let result = self.sync_inner().await;
        if let Err(e) = &result {
            match e {
                SyncError::Index { .. } => bump(&self.counters.rejected),
                _ => bump(&self.counters.errors),
            }
            tracing::warn!(error = %e, "Model sync failed; the active bundles stay.");
        }
        result
    }

    async fn sync_inner(&mut self) -> Result<SyncReport, SyncError> {
        let client = self
            .client
            .as_ref()
            .map_err(|e| SyncError::Client(e.clone()))?;
        let bucket = client.bucket().to_string();
        let index_key = self.index_key();
        let fetched = client
            .get(&index_key, self.etag.as_deref(), MAX_INDEX_BYTES)
            .await?;
        let mut report = SyncReport::default();
        let mut wanted: Vec<(Option<SensorType>, BundleRef)> = Vec::new();
        let (index, etag) = match fetched {
            Fetched::NotModified => {
                bump(&self.counters.not_modified);
                report.not_modified = true;
                (None, None)
            }
            Fetched::Object { bytes, etag } => {
                let index = parse_index(&bytes).map_err(|reason| SyncError::Index {
                    bucket: bucket.clone(),
                    key: index_key.clone(),
                    reason,
                })?;
                wanted.extend(index.models.iter().map(|(t, r)| (Some(*t), r.clone())));
                (Some(index), etag)
            }
        };
        // Pins with an exact version that nothing provides yet.
        for (_, pin) in &self.pins {
            if let PinTarget::Download(r) = self.pin_target(pin) {
                wanted.push((None, r));
            }
        }

        let mut complete = true;
        let mut changed = false;
        let mut assigned = self.assigned.clone();
        if let Some(index) = &index {
            let before = assigned.len();
            assigned.retain(|t, _| index.models.contains_key(t));
            changed |= assigned.len() != before;
        }
        let mut fresh: HashMap<BundleRef, Arc<ModelBundle>> = HashMap::new();
        for (ty, r) in wanted {
            let current = ty.and_then(|t| assigned.get(&t));
            if current
                .is_some_and(|b| b.manifest().name == r.name && b.manifest().version == r.version)
            {
                continue;
            }
            let bundle = if let Some(b) = fresh.get(&r) {
                Ok(b.clone())
            } else if self.rejected.contains(&r) {
                continue;
            } else {
                self.obtain(&r).await
            };
            let bundle = bundle.and_then(|b| match ty {
                Some(t) if !serves(&b, t) => Err(Failure::Rejected(format!(
                    "the index names it for {} but it serves {:?}",
                    type_name(t),
                    b.manifest().sensor_types
                ))),
                _ => Ok(b),
            });
            match bundle {
                Ok(b) => {
                    fresh.insert(r.clone(), b.clone());
                    if let Some(t) = ty {
                        assigned.insert(t, b);
                        changed = true;
                    }
                }
                Err(Failure::Rejected(reason)) => {
                    bump(&self.counters.rejected);
                    tracing::error!(bundle = %r, sensor_type = ?ty, reason = %reason, "Model bundle rejected; the previous bundle stays active.");
                    report.rejected.push(format!("{r}: {reason}"));
                    self.rejected.insert(r);
                }
                Err(Failure::Transient(reason)) => {
                    complete = false;
                    bump(&self.counters.errors);
                    tracing::warn!(bundle = %r, reason = %reason, "Model bundle download failed; retrying at the next sync.");
                    report.failed.push(format!("{r}: {reason}"));
                }
            }
        }
        for (device, pin) in self.pins.clone() {
            if let PinTarget::Ready(b) = self.pin_target(&pin) {
                changed |= self.pinned.get(&device).is_none_or(|p| !Arc::ptr_eq(p, &b));
                self.pinned.insert(device, b);
            } else if let Some(b) = pin_version(&pin).and_then(|v| {
                fresh.get(&BundleRef {
                    name: pin.name.clone(),
                    version: v,
                })
            }) {
                self.pinned.insert(device, b.clone());
                changed = true;
            }
        }
        self.assigned = assigned;
        report.installed = self.installed_in(&fresh);
        if changed {
            self.publish();
            report.swapped = true;
            tracing::info!(active = %self.active_text(), "Model bundles updated; new windows use them.");
        }
        if index.is_some() {
            if complete {
                self.etag = etag;
            }
            let state = CacheState {
                index_etag: self.etag.clone().filter(|_| complete),
                active: self
                    .assigned
                    .iter()
                    .map(|(t, b)| (*t, bundle_ref(b)))
                    .collect(),
            };
            if let Err(e) = self.cache.write_state(&state) {
                bump(&self.counters.errors);
                tracing::warn!(error = %e, "Cannot save the model cache state; a restart re-reads the index.");
            }
        }
        report.active = self
            .assigned
            .iter()
            .map(|(t, b)| (*t, b.detector().to_string()))
            .collect();
        Ok(report)
    }

    fn installed_in(&self, fresh: &HashMap<BundleRef, Arc<ModelBundle>>) -> Vec<BundleRef> {
        let mut v: Vec<BundleRef> = fresh.keys().cloned().collect();
        v.sort();
        v
    }
}

enum PinTarget {
    /// Already loaded (built-in, index, or another pin).
    Ready(Arc<ModelBundle>),
    Cached(BundleRef),
    /// Exact version not cached: sync downloads it.
    Download(BundleRef),
    Unavailable,
}

fn pin_version(pin: &ModelPin) -> Option<String> {
    pin.version.clone()
}

pub(super) fn pin_text(pin: &ModelPin) -> String {
    match &pin.version {
        Some(v) => format!("{}@{v}", pin.name),
        None => format!("{} (newest)", pin.name),
    }
}

fn bundle_ref(b: &ModelBundle) -> BundleRef {
    BundleRef {
        name: b.manifest().name.clone(),
        version: b.manifest().version.clone(),
    }
}

/// Whether a bundle can serve channels of `t` (its own type or a fallback).
fn serves(b: &ModelBundle, t: SensorType) -> bool {
    fallback_chain(t)
        .iter()
        .any(|x| b.manifest().sensor_types.contains(x))
}

pub(super) fn type_name(t: SensorType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{t:?}"))
}

#[cfg(test)]
mod tests;
