//! Modbus TCP and RTU source: request planning, decoding, the device and bus tasks,
//! the technician's `modbus read` tool and a profile-driven simulator.
//!
//! Code map:
//! - [`config`]: the `[devices.modbus_tcp]` and `[devices.modbus_rtu]` config sections.
//! - [`profile`]: a profile's `[modbus]` register map; `profile_checks`: its checks.
//! - [`plan`]: register map -> read requests per poll group (pure); [`plan::explain`].
//! - [`codec`]: registers -> numbers, bools, strings under ABCD/BADC/CDAB/DCBA (pure).
//! - `poll`: one read with a timeout ([`timed_read`]), a poll group -> readings,
//!   exception bookkeeping, back-off. Shared by TCP and RTU.
//! - [`run_tcp`]: one task per TCP device. [`run_rtu_bus`]: one task per RS-485 bus.
//! - [`tool`]: `edgegw modbus read` and `edgegw simulate modbus`.
//! - [`sim`]: [`Simulator`], a Modbus TCP server that serves a profile (tests, demo).
//!
//! Invariants: a Modbus exception is data (quality-0 readings, counted, logged once per
//! change) and polling goes on; a timeout or transport error means reconnect (TCP) or
//! a failure of the unit (RTU). Every request has a timeout. Tasks never spawn tasks.
//! This module never touches SQLite and knows no upstream format.

pub mod codec;
pub mod config;
pub mod explain;
pub mod plan;
mod poll;
pub mod profile;
pub(crate) mod profile_checks;
mod rtu;
pub mod sim;
pub(crate) mod tcp;
pub mod tool;

pub use plan::{explain, plan, plan_device, Plan, PlanError};
pub use poll::{timed_read, Answer, Backoff, RequestError};
pub use rtu::{default_inter_frame_delay, request_pause, run_rtu_bus};
pub use sim::Simulator;
pub use tcp::{connect, run_tcp};
pub use tool::{read_command, simulate_command, ReadArgs, SimulateArgs};

/// Why a device cannot be polled at all. Transport trouble is not here: the tasks
/// retry that forever and report it in [`crate::sources::DeviceStats`].
#[derive(Debug, thiserror::Error)]
pub enum ModbusError {
    #[error("device {device:?} has no [devices.modbus_tcp] transport")]
    NotModbusTcp { device: String },
    #[error("device {device:?} has no [devices.modbus_rtu] transport")]
    NotModbusRtu { device: String },
    #[error("device {device:?}: cannot plan its register map: {source}")]
    Plan {
        device: String,
        #[source]
        source: PlanError,
    },
}
