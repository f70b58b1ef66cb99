//! The sources there are, in one place: what a source group is ([`GroupKey`]: one
//! Modbus TCP device, one serial device, one RTU bus, one MQTT broker connection),
//! which group a device belongs to ([`key_of`], the rule a reload restarts by), and
//! which task reads it ([`task`]). `app.rs` only spawns what [`task`] returns, under
//! the group's own cancellation token.
//!
//! Adding a source: its folder under `sources/` with the task, its config section
//! (`config.rs`, re-exported in `config/mod.rs`; a `DeviceConfig` field and a
//! `Transport` variant name it), its profile section (`profile.rs`, re-exported in
//! `profiles/mod.rs`; a `Profile` field names it) and that section's checks
//! (`profile_checks.rs`, called from `profiles::validate_profile`); a `GroupKey`
//! variant, its arm in [`key_of`] and one in [`task`], here
//! (docs/ARCHITECTURE.md, "Adding a source or an upstream").

use super::{DeviceSpec, SourceBatch};
use crate::config::{DeviceConfig, GatewayConfig, MqttBrokerConfig, SerialPortConfig, Transport};
use crate::ops::reload::GroupSpec;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Identity of a source task.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupKey {
    /// One Modbus TCP device, by device id.
    ModbusTcp(String),
    /// One ASCII serial device, by device id.
    Serial(String),
    /// A Modbus RTU bus, by serial port name.
    ModbusRtu(String),
    /// An MQTT broker connection, by broker name.
    Mqtt(String),
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupKey::ModbusTcp(d) => write!(f, "modbus_tcp:{d}"),
            GroupKey::Serial(d) => write!(f, "serial:{d}"),
            GroupKey::ModbusRtu(p) => write!(f, "modbus_rtu:{p}"),
            GroupKey::Mqtt(b) => write!(f, "mqtt:{b}"),
        }
    }
}

/// The group a device belongs to, with the port or broker its task needs; `None`
/// when the device has no transport, or names a port or broker that does not exist
/// (validation has reported it). The grouping rule is what a reload restarts
/// together: a Modbus TCP or serial device alone, an RTU bus with all its units, an
/// MQTT broker connection with all its subscriptions.
pub fn key_of(
    d: &DeviceConfig,
    config: &GatewayConfig,
) -> Option<(GroupKey, Option<SerialPortConfig>, Option<MqttBrokerConfig>)> {
    Some(match d.transport()? {
        Transport::ModbusTcp(_) => (GroupKey::ModbusTcp(d.id.clone()), None, None),
        Transport::Serial(t) => {
            let p = config.serial_ports.get(&t.port)?;
            (GroupKey::Serial(d.id.clone()), Some(p.clone()), None)
        }
        Transport::ModbusRtu(t) => {
            let p = config.serial_ports.get(&t.port)?;
            (GroupKey::ModbusRtu(t.port.clone()), Some(p.clone()), None)
        }
        Transport::Mqtt(t) => {
            let b = config.mqtt_brokers.get(&t.broker)?;
            (GroupKey::Mqtt(t.broker.clone()), None, Some(b.clone()))
        }
    })
}

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
