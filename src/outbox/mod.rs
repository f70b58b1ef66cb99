//! The outbox: SQLite store-and-forward, the gateway's only durable state.
//!
//! The pipeline's last stage ([`writer::run_writer`]) appends records in batched
//! transactions; each forwarder reads with [`Outbox::peek`] after its own cursor and
//! moves it with [`Outbox::ack`]; a record is deleted once every configured upstream
//! that takes it has acknowledged it (`notify:*` cursors take alerts only). Records an upstream rejects for good go to a dead-letter table
//! and stop blocking it. The database is bounded in size and age; alerts are evicted
//! last. A corrupt file is moved aside, never deleted, and a fresh outbox is started.
//!
//! Layout: `settings` (the `[outbox]` config section), `schema` (open, integrity
//! check, migrations), `store` (append/peek/ack/dead letters/state), `evict` (bounds),
//! `encode` (payload format), `stats` (stats and dump), `handle` (async access via
//! spawn_blocking), `writer` (the pipeline stage), `cli` (CLI subcommands).
//!
//! Must not: know any upstream wire format, be called from sources, or run SQLite on
//! a tokio runtime thread (use [`OutboxHandle`]). See docs/outbox.md.

mod cli;
pub(crate) mod encode;
mod error;
mod evict;
mod handle;
mod schema;
mod settings;
mod state_store;
mod stats;
mod store;
pub mod writer;

pub use cli::{cli_dead_letters, cli_dump, cli_stats, format_stats};
pub use error::OutboxError;
pub use handle::OutboxHandle;
pub use schema::OpenCheck;
pub use settings::{FullPolicy, OutboxSettings, SyncMode};
pub(crate) use state_store::OutboxState;
pub use stats::{DumpLine, OutboxStats, UpstreamStats};
pub use store::{DeadLetter, Outbox, ALERTS_ONLY_PREFIX};
pub use writer::{run_writer, OutboxBatch, WriterReport};

/// Encodes a record's payload as the outbox stores it (for size measurements in
/// benches and examples).
pub fn encoded_payload(record: &crate::record::Record) -> Result<Vec<u8>, String> {
    encode::encode(record)
}

/// Where the outbox file goes: `outbox.path`, else `<state_dir>/outbox.db`.
pub fn outbox_path(config: &crate::config::GatewayConfig) -> std::path::PathBuf {
    config
        .outbox
        .path
        .clone()
        .unwrap_or_else(|| config.gateway.state_dir.join("outbox.db"))
}

#[cfg(test)]
mod tests;
