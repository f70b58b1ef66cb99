//! The gateway's number crunching, the part of the pipeline that runs per sample and
//! per window: validation ([`validate`]), window features and spectra ([`features`],
//! [`physical`]), scalar rolling features ([`rolling`]), bearing fault families
//! ([`bearing`]), ISO 10816 zones ([`iso`]), the learned healthy state ([`baseline`])
//! and the relative detector that scores against it ([`relative`]).
//!
//! It is a crate of its own for the build, not for reuse: the release profile builds
//! the gateway's own crate for size and this one at opt-level 3, so the hot path keeps
//! its speed while a clean build stays short (docs/PERFORMANCE.md, "Build time on an
//! idle machine"). Generic code (the FFTs of rustfft and realfft) is compiled where it
//! is instantiated, so it has to be instantiated here. The gateway re-exports every
//! module under `edgegw::pipeline`, where the rest of the code and the docs name them.
//!
//! Nothing here does I/O, reads the clock or logs: time is the readings' `ts_us`.

pub mod baseline;
pub mod bearing;
pub mod features;
pub mod iso;
pub mod physical;
pub mod relative;
pub mod rolling;
pub mod validate;

/// Microseconds since the Unix epoch, UTC: a reading's time (re-exported as
/// `edgegw::record::TimestampUs`).
pub type TimestampUs = i64;
