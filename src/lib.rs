//! edgegw — edge gateway daemon for industrial vibration and temperature sensors.
//!
//! Data flows one way:
//! sources (modbus | serial | mqtt) -> pipeline (validate, windows + features, detect,
//! summarise) -> outbox (SQLite, the only durable state) -> upstream forwarders.

pub mod inference;
pub mod pipeline;
pub mod record;
pub mod sources;
