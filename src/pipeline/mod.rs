//! The pipeline: validation, windows and features, detection, alert episodes and
//! summaries, between the sources and the outbox.
//!
//! Data flows one way through [`processor::Processor`]:
//! readings -> [`validate`] (quality and flags, never dropped) -> [`features`] (waveform
//! windows) or [`rolling`] (scalar rolling features) -> [`detect`] (model bundle from
//! `inference`, or the statistical fallback) -> [`alerts`] (debounced episodes) and
//! [`summary`] (per-interval min/max/avg/count/last) -> records for the outbox.
//!
//! Time is reading time throughout (`ts_us` of the readings), never the wall clock, so
//! the pipeline is deterministic and testable with synthetic timestamps. The pipeline
//! touches no SQLite and no network: the only state it persists (baselines, open
//! summary buckets) goes through the [`detect::StateStore`] trait the outbox implements.

pub mod alerts;
pub mod detect;
pub mod processor;
pub mod settings;
pub(crate) mod stage;
pub mod summary;
pub mod trim;

// The per-sample and per-window number crunching lives in its own crate, built at
// opt-level 3 while this one is built for size (crates/edgegw-dsp); its modules are
// named here, where they always were.
pub use edgegw_dsp::{baseline, bearing, features, iso, physical, relative, rolling, validate};

pub use detect::{MemoryStateStore, StateStore};
pub use processor::{ChannelErrors, Processor, ProcessorCounters};
pub use settings::PipelineSettings;
pub use validate::ChannelLimits;

#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod tests;
