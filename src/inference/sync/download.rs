//! One bundle into the cache: [`ModelSync::obtain`] loads it from the cache or
//! downloads the manifest and the model, checks them and installs them.

use super::{bump, Failure, ModelSync, SyncError, MAX_MANIFEST_BYTES};
use crate::inference::cache::BundleRef;
use crate::inference::s3::{Fetched, S3Error};
use crate::inference::{Manifest, ModelBundle};
use std::sync::Arc;

impl ModelSync {
    fn key(&self, r: &BundleRef, file: &str) -> String {
        let rel = format!("{}/{}/{file}", r.name, r.version);
        if self.prefix.is_empty() {
            rel
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    /// The bundle from the cache, else downloaded, checked and installed.
    pub(super) async fn obtain(&mut self, r: &BundleRef) -> Result<Arc<ModelBundle>, Failure> {
        if self.cache.contains(r) {
            let cache = self.cache.clone();
            let rc = r.clone();
            match blocking(move || cache.load(&rc)).await {
                Ok(b) => return Ok(Arc::new(b)),
                Err(e) => {
                    tracing::warn!(bundle = %r, error = %e, "Cached model bundle fails its checks; downloading it again.");
                    self.cache.remove(r);
                }
            }
        }
        let Ok(client) = self.client.as_ref() else {
            return Err(Failure::Transient(SyncError::NotConfigured.to_string()));
        };
        let staging = self
            .cache
            .staging()
            .map_err(|e| Failure::Transient(e.to_string()))?;
        let s3 = |e: S3Error| {
            if e.is_transient() {
                Failure::Transient(e.to_string())
            } else {
                Failure::Rejected(e.to_string())
            }
        };
        let manifest_key = self.key(r, "manifest.json");
        let manifest = match client.get(&manifest_key, None, MAX_MANIFEST_BYTES).await {
            Ok(Fetched::Object { bytes, .. }) => bytes,
            Ok(Fetched::NotModified) => {
                return Err(Failure::Transient("unexpected 304 for the manifest".into()))
            }
            Err(e) => return Err(s3(e)),
        };
        // Fail early (before the model download) on a bad manifest.
        let m = Manifest::parse(
            &format!("s3://{}/{manifest_key}", client.bucket()),
            &manifest,
        )
        .map_err(|e| Failure::Rejected(e.to_string()))?;
        if m.name != r.name || m.version != r.version {
            return Err(Failure::Rejected(format!(
                "its manifest says {}@{}",
                m.name, m.version
            )));
        }
        let manifest_path = staging.path().join("manifest.json");
        std::fs::write(&manifest_path, &manifest).map_err(|e| {
            Failure::Transient(format!("cannot write {}: {e}", manifest_path.display()))
        })?;
        let onnx_key = self.key(r, "model.onnx");
        let size = client
            .get_to_file(
                &onnx_key,
                &staging.path().join("model.onnx"),
                self.max_bundle_bytes,
            )
            .await
            .map_err(s3)?;
        // Every check (sha256, tract load, shapes, the example) before it enters the cache.
        let dir = staging.path().to_path_buf();
        blocking(move || {
            crate::inference::isolate::check(&dir)?;
            ModelBundle::load_dir(&dir)
        })
        .await
        .map_err(|e| Failure::Rejected(e.to_string()))?;
        self.cache
            .install(staging, r)
            .map_err(|e| Failure::Transient(e.to_string()))?;
        bump(&self.counters.installed);
        tracing::info!(bundle = %r, bytes = size, "Model bundle downloaded, checked and cached.");
        let cache = self.cache.clone();
        let rc = r.clone();
        blocking(move || cache.load(&rc))
            .await
            .map(Arc::new)
            .map_err(|e| Failure::Rejected(e.to_string()))
    }
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::inference::InferenceError> + Send + 'static,
) -> Result<T, crate::inference::InferenceError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(crate::inference::InferenceError::Run {
            bundle: "(loader)".into(),
            message: e.to_string(),
        }),
    }
}
