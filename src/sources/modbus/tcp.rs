//! Modbus TCP: one task per device, one connection, one request at a time.
//!
//! The task connects, polls its groups on their schedules, and on a timeout or a
//! transport error drops the connection and reconnects after a jittered exponential
//! back-off (250 ms doubling to 30 s, ±20 %). The back-off resets only after a poll
//! that got answers, so a device that accepts and then hangs up does not make the
//! task spin. Everything runs inside this one task: a reconnect replaces the
//! connection, never spawns.

use super::poll::{send, Backoff, DeviceRunner};
use super::ModbusError;
use crate::retry::sleep_or_cancel;
use crate::sources::{DeviceSpec, SourceBatch};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_modbus::client::Context;
use tokio_modbus::Slave;
use tokio_util::sync::CancellationToken;

/// First reconnect delay.
pub const RECONNECT_MIN: Duration = Duration::from_millis(250);
/// Longest reconnect delay.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Reads one Modbus TCP device until `cancel` fires or the pipeline closes.
///
/// Returns an error only for a device that cannot be polled at all (no `modbus_tcp`
/// transport, a register map that cannot be planned); `edgegw check` reports those
/// before start. Unreachable devices are retried forever.
pub async fn run_tcp(
    device: DeviceSpec,
    tx: mpsc::Sender<SourceBatch>,
    cancel: CancellationToken,
) -> Result<(), ModbusError> {
    let id = device.config.id.clone();
    let transport = device
        .config
        .modbus_tcp
        .clone()
        .ok_or_else(|| ModbusError::NotModbusTcp { device: id.clone() })?;
    let plan =
        super::plan::plan_device(&device.config, &device.profile.profile).map_err(|source| {
            ModbusError::Plan {
                device: id.clone(),
                source,
            }
        })?;
    let stats = device.stats.clone();
    let timeout = Duration::from_millis(transport.timeout_ms.max(1));
    let mut runner = DeviceRunner::new(device, plan, timeout);
    let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
    let target = format!("{}:{}", transport.host, transport.port);
    // Log a lost connection once, not every retry.
    let mut reported_down = false;

    while !cancel.is_cancelled() {
        let ctx = tokio::select! {
            _ = cancel.cancelled() => break,
            c = connect(&target, transport.unit_id, timeout) => c,
        };
        let mut ctx = match ctx {
            Ok(ctx) => ctx,
            Err(e) => {
                stats.error("connect");
                stats.connected.store(false, Ordering::Relaxed);
                let delay = backoff.next_delay();
                if !reported_down {
                    tracing::warn!(device = %id, target = %target, error = %e, retry_in_ms = delay.as_millis() as u64, "Cannot connect to Modbus TCP device; retrying with back-off.");
                    reported_down = true;
                } else {
                    tracing::debug!(device = %id, target = %target, error = %e, retry_in_ms = delay.as_millis() as u64, "Modbus TCP connect failed again.");
                }
                if sleep_or_cancel(delay, &cancel).await.cancelled() {
                    break;
                }
                continue;
            }
        };
        stats.connected.store(true, Ordering::Relaxed);
        tracing::debug!(device = %id, target = %target, "Connected to Modbus TCP device.");
        // Poll until the connection fails.
        let failure = loop {
            let Some((g, due)) = runner.next_due() else {
                // An empty plan: nothing to poll, wait for shutdown.
                cancel.cancelled().await;
                break None;
            };
            tokio::select! {
                _ = cancel.cancelled() => break None,
                _ = tokio::time::sleep_until(due) => {}
            }
            let outcome = runner.poll_group(&mut ctx, g, &cancel, None).await;
            runner.reschedule(g);
            if outcome.answered > 0 {
                backoff.reset();
                if reported_down {
                    tracing::info!(device = %id, target = %target, "Modbus TCP device answers again.");
                    reported_down = false;
                }
            }
            if send(&tx, outcome.readings).await.is_err() {
                return Ok(());
            }
            if let Some(e) = outcome.error {
                break Some(e);
            }
        };
        let Some(e) = failure else { break };
        stats.connected.store(false, Ordering::Relaxed);
        let delay = backoff.next_delay();
        if !reported_down {
            tracing::warn!(device = %id, target = %target, error = %e, retry_in_ms = delay.as_millis() as u64, "Modbus TCP request failed; reconnecting.");
            reported_down = true;
        }
        // Drop the connection before waiting, so the device sees it closed.
        drop(ctx);
        runner.defer_until(Instant::now() + delay);
        if sleep_or_cancel(delay, &cancel).await.cancelled() {
            break;
        }
    }
    stats.connected.store(false, Ordering::Relaxed);
    Ok(())
}

/// Resolves `target` and connects within `timeout`, with Nagle off (one small
/// request per round trip).
pub async fn connect(target: &str, unit_id: u8, timeout: Duration) -> std::io::Result<Context> {
    let stream = tokio::time::timeout(timeout, async {
        let mut last = None;
        for addr in tokio::net::lookup_host(target).await? {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "host name resolves to no address",
            )
        }))
    })
    .await
    .map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no connection within {} ms", timeout.as_millis()),
        )
    })??;
    stream.set_nodelay(true)?;
    Ok(tokio_modbus::client::tcp::attach_slave(
        stream,
        Slave(unit_id),
    ))
}
