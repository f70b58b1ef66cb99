//! The sources there are, in one place: which task reads a source group
//! ([`crate::ops::reload::GroupKey`]: one Modbus TCP device, one serial device, one
//! RTU bus, one MQTT broker connection) and how it is started. `app.rs` only spawns
//! what [`task`] returns, under the group's own cancellation token.
//!
//! Adding a source: its folder under `sources/` with the task, its config section
//! (`config.rs`, re-exported in `config/mod.rs`; a `DeviceConfig` field and a
//! `Transport` variant name it), its profile section (`profile.rs`, re-exported in
//! `profiles/mod.rs`; a `Profile` field names it) and that section's checks
//! (`profile_checks.rs`, called from `profiles::validate_profile`); a `GroupKey`
//! variant with its grouping rule in `ops/reload.rs`; and one arm here
//! (docs/ARCHITECTURE.md, "Adding a source or an upstream").

use super::{DeviceSpec, SourceBatch};
use crate::ops::reload::{GroupKey, GroupSpec};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A source task: runs until `token` is cancelled (or the source gives up, logged).
pub type SourceTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The task that reads `spec`'s devices into `tx`; `None` when the group is
/// incomplete (no device, or no port or broker: validation has reported it).
/// `topic_errors`: where an MQTT group counts payload errors per topic.
pub fn task(
    spec: &GroupSpec,
    mut devices: Vec<DeviceSpec>,
    tx: mpsc::Sender<SourceBatch>,
    token: CancellationToken,
    topic_errors: Arc<super::mqtt::TopicErrors>,
) -> Option<SourceTask> {
    Some(match &spec.key {
        GroupKey::ModbusTcp(id) => {
            let id = id.clone();
            let device = devices.pop()?;
            Box::pin(async move {
                if let Err(e) = super::modbus::run_tcp(device, tx, token).await {
                    tracing::error!(device = %id, "Modbus TCP source stopped: {e}");
                }
            })
        }
        GroupKey::Serial(_) => {
            let (device, port) = (devices.pop()?, spec.port.clone()?);
            let port_name = device
                .config
                .serial
                .as_ref()
                .map(|s| s.port.clone())
                .unwrap_or_default();
            Box::pin(super::serial::run_serial(
                device, port_name, port, tx, token,
            ))
        }
        GroupKey::ModbusRtu(bus) => {
            let port = spec.port.clone()?;
            let bus = bus.clone();
            Box::pin(async move {
                let run = super::modbus::run_rtu_bus(bus.clone(), port, devices, tx, token);
                if let Err(e) = run.await {
                    tracing::error!(bus = %bus, "Modbus RTU source stopped: {e}");
                }
            })
        }
        GroupKey::Mqtt(broker_name) => {
            let broker = spec.broker.clone()?;
            Box::pin(super::mqtt::run_mqtt_with_topic_errors(
                broker_name.clone(),
                broker,
                spec.gateway_id.clone(),
                devices,
                tx,
                token,
                topic_errors,
            ))
        }
    })
}
