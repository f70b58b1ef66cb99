//! edgegw — edge gateway daemon for industrial vibration and temperature sensors.
//!
//! Data flows one way:
//! sources (modbus | serial | mqtt) -> pipeline (validate, windows + features, detect,
//! summarise) -> outbox (SQLite, the only durable state) -> upstream forwarders.
//! `docs/ARCHITECTURE.md` has the code map and the invariants between the parts.

pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod diag;
pub mod id;
pub mod inference;
pub mod notify;
pub mod ops;
pub mod outbox;
pub mod pipeline;
pub mod profiles;
pub mod record;
pub mod replay;
pub mod retry;
pub mod shutdown;
pub mod sources;
pub mod supervise;
pub mod upstream;
