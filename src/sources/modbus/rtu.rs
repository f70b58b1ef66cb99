//! Modbus RTU: one task per RS-485 bus, several unit ids on it, one request at a time.
//!
//! Between frames the task keeps the silence the spec asks for: before each request
//! it waits `max(inter_frame_delay_ms, min_request_pause_ms)` after the last frame,
//! by default 3.5 character times at 11 bits per character (at least 1.75 ms above
//! 19200 baud). A unit that fails [`FAILURES_BEFORE_BACKOFF`] polls in a row is
//! skipped for a back-off period that grows from [`UNIT_BACKOFF_MIN`] to
//! [`UNIT_BACKOFF_MAX`], so one dead slave cannot stall the bus for the others. A
//! port that cannot be opened or fails is reopened with back-off.

use super::poll::{send, Backoff, DeviceRunner, Pacer, RequestError};
use super::ModbusError;
use crate::config::{FlowControl, Parity, SerialPortConfig};
use crate::retry::sleep_or_cancel;
use crate::sources::{DeviceSpec, SourceBatch};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_modbus::client::Context;
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;
use tokio_serial::SerialPortBuilderExt;
use tokio_util::sync::CancellationToken;

/// Polls in a row without an answer before a unit is backed off.
pub const FAILURES_BEFORE_BACKOFF: u32 = 3;
/// First back-off of a silent unit.
pub const UNIT_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest back-off of a silent unit.
pub const UNIT_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The silence before a request: the larger of the inter-frame delay and the minimum
/// request pause, each defaulting from the baud rate.
pub fn request_pause(port: &SerialPortConfig) -> Duration {
    let default = default_inter_frame_delay(port.baud);
    let ifd = port
        .inter_frame_delay_ms
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .unwrap_or(default);
    let pause = port
        .min_request_pause_ms
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .unwrap_or(ifd);
    ifd.max(pause)
}

/// 3.5 character times at 11 bits per character; 1.75 ms above 19200 baud (the
/// spec's fixed value for fast lines).
pub fn default_inter_frame_delay(baud: u32) -> Duration {
    if baud > 19_200 || baud == 0 {
        Duration::from_micros(1750)
    } else {
        Duration::from_secs_f64(3.5 * 11.0 / f64::from(baud))
    }
}

/// A unit on the bus and its failure state.
struct Unit {
    runner: DeviceRunner,
    unit_id: u8,
    failures: u32,
    backoff: Backoff,
    backed_off: bool,
}

/// Reads every device on one RS-485 bus until `cancel` fires or the pipeline closes.
///
/// Returns an error only for devices that cannot be polled at all (not on Modbus RTU,
/// a register map that cannot be planned).
pub async fn run_rtu_bus(
    port_name: String,
    port: SerialPortConfig,
    devices: Vec<DeviceSpec>,
    tx: mpsc::Sender<SourceBatch>,
    cancel: CancellationToken,
) -> Result<(), ModbusError> {
    let mut units = Vec::with_capacity(devices.len());
    for d in devices {
        let id = d.config.id.clone();
        let rtu = d
            .config
            .modbus_rtu
            .clone()
            .ok_or_else(|| ModbusError::NotModbusRtu { device: id.clone() })?;
        let plan = super::plan::plan_device(&d.config, &d.profile.profile)
            .map_err(|source| ModbusError::Plan { device: id, source })?;
        units.push(Unit {
            runner: DeviceRunner::new(d, plan, Duration::from_millis(rtu.timeout_ms.max(1))),
            unit_id: rtu.unit_id,
            failures: 0,
            backoff: Backoff::new(UNIT_BACKOFF_MIN, UNIT_BACKOFF_MAX),
            backed_off: false,
        });
    }
    let pause = request_pause(&port);
    let mut port_backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut reported_down = false;

    while !cancel.is_cancelled() {
        let mut ctx = match open(&port) {
            Ok(ctx) => ctx,
            Err(e) => {
                for u in &units {
                    u.runner.spec.stats.error("connect");
                    u.runner
                        .spec
                        .stats
                        .connected
                        .store(false, Ordering::Relaxed);
                }
                let delay = port_backoff.next_delay();
                if !reported_down {
                    tracing::warn!(port = %port_name, path = %port.path.display(), error = %e, retry_in_ms = delay.as_millis() as u64, "Cannot open Modbus RTU serial port; retrying with back-off.");
                    reported_down = true;
                }
                if sleep_or_cancel(delay, &cancel).await.cancelled() {
                    break;
                }
                continue;
            }
        };
        if reported_down {
            tracing::info!(port = %port_name, "Modbus RTU serial port open again.");
            reported_down = false;
        }
        let mut pacer = Pacer::new(pause);
        let port_failed = loop {
            // The unit and group due first.
            let Some((ui, g, due)) = units
                .iter()
                .enumerate()
                .filter_map(|(i, u)| u.runner.next_due().map(|(g, t)| (i, g, t)))
                .min_by_key(|x| x.2)
            else {
                cancel.cancelled().await;
                break false;
            };
            tokio::select! {
                _ = cancel.cancelled() => break false,
                _ = tokio::time::sleep_until(due) => {}
            }
            let u = &mut units[ui];
            ctx.set_slave(Slave(u.unit_id));
            let outcome = u
                .runner
                .poll_group(&mut ctx, g, &cancel, Some(&mut pacer))
                .await;
            u.runner.reschedule(g);
            let stats = u.runner.spec.stats.clone();
            let mut port_failed = false;
            match &outcome.error {
                None if outcome.answered > 0 => {
                    if u.backed_off {
                        tracing::info!(device = %u.runner.id(), unit = u.unit_id, port = %port_name, "Modbus RTU unit answers again.");
                    }
                    u.failures = 0;
                    u.backed_off = false;
                    u.backoff.reset();
                }
                None => {}
                Some(RequestError::Transport(e)) => {
                    tracing::warn!(port = %port_name, error = %e, "Modbus RTU serial port failed; reopening.");
                    port_failed = true;
                }
                Some(e) => {
                    // Timeout or garbled answer: the unit's fault, not the bus's.
                    u.failures += 1;
                    if u.failures >= FAILURES_BEFORE_BACKOFF {
                        let delay = u.backoff.next_delay();
                        stats.connected.store(false, Ordering::Relaxed);
                        if !u.backed_off {
                            tracing::warn!(device = %u.runner.id(), unit = u.unit_id, port = %port_name, failures = u.failures, error = %e, retry_in_ms = delay.as_millis() as u64, "Modbus RTU unit does not answer; skipping it for a while so the rest of the bus keeps its rate.");
                        }
                        u.backed_off = true;
                        u.runner.defer_until(Instant::now() + delay);
                    }
                }
            }
            if send(&tx, outcome.readings).await.is_err() {
                return Ok(());
            }
            if port_failed {
                break true;
            }
        };
        if !port_failed {
            break;
        }
        for u in &units {
            u.runner
                .spec
                .stats
                .connected
                .store(false, Ordering::Relaxed);
        }
        drop(ctx);
        if sleep_or_cancel(port_backoff.next_delay(), &cancel)
            .await
            .cancelled()
        {
            break;
        }
    }
    for u in &units {
        u.runner
            .spec
            .stats
            .connected
            .store(false, Ordering::Relaxed);
    }
    Ok(())
}

/// Opens the serial port as configured and attaches an RTU client to it.
pub fn open(port: &SerialPortConfig) -> std::io::Result<Context> {
    let stream = tokio_serial::new(port.path.to_string_lossy(), port.baud)
        .data_bits(match port.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        })
        .parity(match port.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .stop_bits(if port.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        })
        .flow_control(match port.flow_control {
            FlowControl::None => tokio_serial::FlowControl::None,
            FlowControl::Software => tokio_serial::FlowControl::Software,
            FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
        })
        .open_native_async()
        .map_err(|e| std::io::Error::other(format!("{}: {e}", port.path.display())))?;
    Ok(tokio_modbus::client::rtu::attach_slave(stream, Slave(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(baud: u32) -> SerialPortConfig {
        SerialPortConfig {
            path: "/dev/null".into(),
            baud,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
            flow_control: FlowControl::None,
            inter_frame_delay_ms: None,
            min_request_pause_ms: None,
        }
    }

    #[test]
    fn inter_frame_delay_from_baud_rate() {
        // 3.5 chars * 11 bits / 9600 baud = 4.0104 ms
        assert_eq!(default_inter_frame_delay(9600).as_micros(), 4010);
        // 19200: 2.005 ms (still computed); above: the fixed 1.75 ms
        assert_eq!(default_inter_frame_delay(19200).as_micros(), 2005);
        assert_eq!(default_inter_frame_delay(38400).as_micros(), 1750);
        assert_eq!(default_inter_frame_delay(115_200).as_micros(), 1750);
    }

    #[test]
    fn configured_pauses_win_and_the_larger_applies() {
        let mut p = port(9600);
        assert_eq!(request_pause(&p).as_micros(), 4010);
        p.inter_frame_delay_ms = Some(2.0);
        assert_eq!(request_pause(&p).as_micros(), 2000);
        p.min_request_pause_ms = Some(5.0);
        assert_eq!(request_pause(&p).as_micros(), 5000);
        p.min_request_pause_ms = Some(1.0);
        assert_eq!(request_pause(&p).as_micros(), 2000);
        p.inter_frame_delay_ms = Some(f64::NAN);
        assert_eq!(request_pause(&p).as_micros(), 4010);
    }
}
