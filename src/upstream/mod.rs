//! Upstream forwarders: the only code that knows a wire format of the cloud.
//!
//! Each forwarder reads the outbox through its own cursor (`peek`), delivers, and
//! acknowledges (`ack(up_to_id)`) only what the upstream has confirmed.

/// Whether this build implements the named upstream (`timescale`, `redis`, `http`,
/// `mqtt`). `edgegw check` refuses an enabled upstream that is not implemented
/// rather than letting records pile up for a forwarder that never runs.
pub fn implemented(name: &str) -> bool {
    let _ = name;
    false
}
