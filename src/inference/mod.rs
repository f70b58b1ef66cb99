//! Edge model bundles: loading and checking them, running them with tract, and
//! choosing one per sensor type.
//!
//! A bundle is a directory with `model.onnx` and `manifest.json` (see
//! [`manifest::Manifest`]). [`ModelBundle`] verifies everything the manifest claims
//! (checksum, known features, input shape, that tract loads it, that it reproduces its
//! own example) before anything can score with it, and builds the tract plan once.
//! [`ModelRegistry`] picks a bundle per sensor type with the cloud's fallbacks; the
//! shipped defaults are compiled into the binary, so a gateway is never without a model.
//!
//! The core (bundle, manifest, registry) owns no pipeline state and does no I/O
//! besides reading a bundle directory on request. S3 sync ([`sync`], over [`s3`] and
//! the on-disk [`cache`]) fetches bundles, loads them here and swaps them into a
//! [`SharedRegistry`]; the pipeline only reads from it.

pub mod bundle;
pub mod cache;
pub mod cli;
pub mod isolate;
pub mod manifest;
pub mod operators;
pub mod registry;
pub mod s3;
pub mod sync;

pub use bundle::ModelBundle;
pub use manifest::{BundleKind, Manifest, Reference};
pub use registry::{shared, Choice, ModelRegistry, Selection, SharedRegistry};

use std::path::PathBuf;

/// Why a bundle was rejected or could not score. `bundle` names the directory, or
/// `name@version` for a bundle loaded from memory.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("model bundle {bundle}: cannot read {path}: {source}", path = path.display())]
    Io {
        bundle: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model bundle {bundle}: manifest.json is not valid: {source}")]
    ManifestSyntax {
        bundle: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("model bundle {bundle}: manifest field `{field}`: {reason}")]
    ManifestField {
        bundle: String,
        field: &'static str,
        reason: String,
    },
    #[error("model bundle {bundle}: sha256 check failed: manifest says {expected}, model.onnx is {actual}")]
    Checksum {
        bundle: String,
        expected: String,
        actual: String,
    },
    #[error("model bundle {bundle}: tract cannot load model.onnx ({stage}): {message}")]
    Load {
        bundle: String,
        stage: &'static str,
        message: String,
    },
    #[error(
        "model bundle {bundle}: model.onnx uses ONNX operators the gateway does not run: {missing} \
         (it runs {}; docs/models.md, \"Exporting a compatible model\")",
        operators::SUPPORTED.join(" ")
    )]
    Operators { bundle: String, missing: String },
    /// Refused by the check in a process of its own ([`isolate`]).
    #[error("model bundle {bundle}: {message}")]
    Isolated { bundle: String, message: String },
    #[error("model bundle {bundle}: example check failed: manifest expects {expected}, model gives {actual}")]
    Example {
        bundle: String,
        expected: f64,
        actual: f64,
    },
    #[error("model bundle {bundle}: expected {expected} features, got {got}")]
    FeatureCount {
        bundle: String,
        expected: usize,
        got: usize,
    },
    #[error("model bundle {bundle}: inference failed: {message}")]
    Run { bundle: String, message: String },
    #[error("embedded default bundle {name}: {source}")]
    Default {
        name: &'static str,
        #[source]
        source: Box<InferenceError>,
    },
}

pub type Result<T, E = InferenceError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
