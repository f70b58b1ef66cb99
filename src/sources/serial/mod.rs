//! The serial-line source: ASCII sensors on an RS-232/RS-485 port (tokio-serial).
//!
//! Owns one port per device: opens it with the configured line settings, cuts the
//! byte stream into frames ([`frame`]), checks and parses them ([`parse`]) and sends
//! one [`SourceBatch`] per good frame. Query/response sensors get their
//! `poll_command` every `poll_interval_ms`. Faults in the data (noise, partial or
//! over-long frames, bad checksums, unparsable fields) are counted per device, logged
//! rate-limited with the offending bytes, and the frame is dropped; a port that goes
//! away (USB unplugged) is reopened with jittered exponential backoff.
//!
//! It must not touch SQLite or know upstream formats, and it never acknowledges
//! anything: a serial line has no redelivery, so its batches carry no [`crate::sources::Ack`].

pub mod config;
pub mod frame;
pub mod parse;
pub mod profile;
pub(crate) mod profile_checks;
pub(crate) mod support;

pub use frame::{nmea_xor, unescape_command, FrameEvent, Framer};
pub use parse::{FrameError, LineParser};

use crate::config::{FlowControl, Parity, SerialPortConfig};
use crate::record::now_us;
use crate::sources::{DeviceSpec, SourceBatch, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use support::{escape_bytes, Backoff, LogLimiter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// First reopen delay after a port is lost; doubles up to [`REOPEN_MAX`].
const REOPEN_INITIAL: Duration = Duration::from_millis(250);
/// Longest wait between two attempts to reopen a port.
const REOPEN_MAX: Duration = Duration::from_secs(30);
/// A port that stayed open this long was healthy: the next loss starts the backoff
/// from the beginning.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// At most one log line per fault kind and device in this interval.
const LOG_EVERY: Duration = Duration::from_secs(30);
/// Offending bytes shown in a log line.
const LOG_BYTES: usize = 80;
/// Time allowed to write a poll command (a port with hardware flow control can
/// block forever when the device is off).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors at the boundary of the serial source. They are logged and counted, never
/// returned to the daemon: the source keeps trying until cancelled.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("device {device}: its profile {profile} cannot be read over a serial line: {reason}")]
    Profile {
        device: String,
        profile: String,
        reason: String,
    },
    #[error("serial port {port} ({path}): cannot open: {source}")]
    Open {
        port: String,
        path: String,
        source: tokio_serial::Error,
    },
    #[error("serial port {port} ({path}): {what}")]
    Lost {
        port: String,
        path: String,
        what: String,
    },
}

/// Why the read loop of one open port ended.
enum Ended {
    Cancelled,
    /// The pipeline is gone (daemon shutting down).
    PipelineClosed,
    Lost(SerialError),
}

/// Reads one ASCII device on its serial port until `cancel` fires. Never returns
/// early on faults: a bad profile is logged and the task ends; a lost port is
/// reopened.
pub async fn run_serial(
    device: DeviceSpec,
    port_name: String,
    port: SerialPortConfig,
    tx: mpsc::Sender<SourceBatch>,
    cancel: CancellationToken,
) {
    let dev_id = device.config.id.clone();
    let setup = match Setup::new(&device) {
        Ok(s) => s,
        Err(e) => {
            device.stats.error("config");
            error!(device = %dev_id, error = %e, "Serial device cannot start");
            return;
        }
    };
    let path = port.path.display().to_string();
    let mut backoff = Backoff::new(REOPEN_INITIAL, REOPEN_MAX);
    let mut logs: LogLimiter<&'static str> = LogLimiter::new(LOG_EVERY, 64);
    let mut framer = Framer::new(&setup.frame);
    let mut first = true;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        match open(&port) {
            Ok(stream) => {
                let opened = Instant::now();
                device.stats.connected.store(true, Relaxed);
                if first {
                    info!(device = %dev_id, port = %port_name, path = %path, "Serial port opened");
                } else {
                    info!(device = %dev_id, port = %port_name, path = %path, "Serial port reopened");
                }
                first = false;
                let ended = read_port(
                    stream,
                    &device,
                    &setup,
                    &mut framer,
                    &mut logs,
                    &tx,
                    &cancel,
                    (&port_name, &path),
                )
                .await;
                device.stats.connected.store(false, Relaxed);
                if let Some(ev) = framer.reset() {
                    dropped(&device, &mut logs, &ev);
                }
                match ended {
                    Ended::Cancelled | Ended::PipelineClosed => return,
                    Ended::Lost(e) => {
                        device.stats.error("disconnected");
                        warn!(device = %dev_id, error = %e, "Serial port lost; reopening with backoff");
                    }
                }
                if opened.elapsed() >= HEALTHY_AFTER {
                    backoff.reset();
                }
            }
            Err(source) => {
                device.stats.error("open");
                let e = SerialError::Open {
                    port: port_name.clone(),
                    path: path.clone(),
                    source,
                };
                if let Some(n) = logs.allow("open", Instant::now()) {
                    warn!(device = %dev_id, error = %e, suppressed = n, "Serial port not available; retrying");
                }
            }
        }
        let delay = backoff.next_delay();
        debug!(device = %dev_id, delay_ms = delay.as_millis() as u64, "Waiting before reopening the serial port");
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// What a device needs that does not change while it runs.
struct Setup {
    frame: crate::profiles::SerialFrame,
    parser: LineParser,
    /// Bytes of the poll command and how often to send them (query/response).
    poll: Option<(Vec<u8>, Duration)>,
}

impl Setup {
    fn new(device: &DeviceSpec) -> Result<Setup, SerialError> {
        let problem = |reason: String| SerialError::Profile {
            device: device.config.id.clone(),
            profile: device.profile.path.display().to_string(),
            reason,
        };
        let fmt = device
            .profile
            .profile
            .serial
            .as_ref()
            .ok_or_else(|| problem("it has no [serial] section".into()))?;
        let parser = LineParser::new(fmt, |c| device.channel(c)).map_err(problem)?;
        let poll = match &fmt.poll_command {
            Some(cmd) => Some((
                unescape_command(cmd).map_err(|e| problem(format!("serial.poll_command: {e}")))?,
                Duration::from_millis(device.config.poll_interval_ms.max(10)),
            )),
            None => None,
        };
        Ok(Setup {
            frame: fmt.frame.clone(),
            parser,
            poll,
        })
    }
}

fn open(port: &SerialPortConfig) -> Result<tokio_serial::SerialStream, tokio_serial::Error> {
    let data_bits = match port.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let parity = match port.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let stop_bits = match port.stop_bits {
        2 => tokio_serial::StopBits::Two,
        _ => tokio_serial::StopBits::One,
    };
    let flow = match port.flow_control {
        FlowControl::None => tokio_serial::FlowControl::None,
        FlowControl::Software => tokio_serial::FlowControl::Software,
        FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
    };
    let builder = tokio_serial::new(port.path.to_string_lossy(), port.baud)
        .data_bits(data_bits)
        .parity(parity)
        .stop_bits(stop_bits)
        .flow_control(flow);
    tokio_serial::SerialStream::open(&builder)
}

#[allow(clippy::too_many_arguments)]
async fn read_port(
    stream: tokio_serial::SerialStream,
    device: &DeviceSpec,
    setup: &Setup,
    framer: &mut Framer,
    logs: &mut LogLimiter<&'static str>,
    tx: &mpsc::Sender<SourceBatch>,
    cancel: &CancellationToken,
    (port_name, path): (&str, &str),
) -> Ended {
    let lost = |what: String| {
        Ended::Lost(SerialError::Lost {
            port: port_name.to_string(),
            path: path.to_string(),
            what,
        })
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = vec![0u8; 1024];
    let mut events = Vec::new();
    // Query/response: the poll timer, and when the last unanswered command went out.
    let mut ticker = setup.poll.as_ref().map(|(_, every)| {
        let mut t = tokio::time::interval(*every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut asked: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ended::Cancelled,
            _ = poll_due(&mut ticker), if ticker.is_some() => {
                let Some((cmd, _)) = &setup.poll else { continue };
                if asked.is_some() {
                    device.stats.error("timeout");
                    if let Some(n) = logs.allow("timeout", Instant::now()) {
                        warn!(device = %device.config.id, suppressed = n, "No answer to the poll command before the next poll");
                    }
                }
                match tokio::time::timeout(WRITE_TIMEOUT, async {
                    wr.write_all(cmd).await?;
                    wr.flush().await
                }).await {
                    Ok(Ok(())) => asked = Some(Instant::now()),
                    Ok(Err(e)) => return lost(format!("write failed: {e}")),
                    Err(_) => return lost(format!("writing the poll command took longer than {WRITE_TIMEOUT:?}")),
                }
            }
            r = rd.read(&mut buf) => {
                let n = match r {
                    Ok(0) => return lost("end of file (device gone)".into()),
                    Ok(n) => n,
                    Err(e) => return lost(format!("read failed: {e}")),
                };
                framer.push(&buf[..n], &mut events);
                for ev in events.drain(..) {
                    match ev {
                        FrameEvent::Frame(f) => {
                            match frame_batch(device, setup, &f, &mut asked, logs) {
                                Some(batch) => {
                                    tokio::select! {
                                        _ = cancel.cancelled() => return Ended::Cancelled,
                                        r = tx.send(batch) => if r.is_err() { return Ended::PipelineClosed },
                                    }
                                }
                                None => continue,
                            }
                        }
                        ev @ FrameEvent::Dropped { .. } => dropped(device, logs, &ev),
                    }
                }
            }
        }
    }
}

/// The next poll tick; never, for a free-running device.
async fn poll_due(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Parses one frame into a batch; counts and logs a bad one.
fn frame_batch(
    device: &DeviceSpec,
    setup: &Setup,
    frame: &[u8],
    asked: &mut Option<Instant>,
    logs: &mut LogLimiter<&'static str>,
) -> Option<SourceBatch> {
    match setup.parser.parse(frame) {
        Ok(values) => {
            let ts = now_us();
            let latency = asked.take().map(|t| t.elapsed()).unwrap_or_default();
            device.stats.success(ts, latency, values.len());
            Some(SourceBatch {
                readings: values
                    .into_iter()
                    .map(|(ch, v)| crate::sources::Reading {
                        arrival: true,
                        ..ch.reading(ts, Value::Scalar(v))
                    })
                    .collect(),
                ack: None,
            })
        }
        Err(e) => {
            // The device did answer, if badly: not a timeout.
            asked.take();
            device.stats.error(e.kind());
            if let Some(n) = logs.allow(e.kind(), Instant::now()) {
                warn!(
                    device = %device.config.id,
                    kind = e.kind(),
                    error = %e,
                    bytes = %escape_bytes(frame, LOG_BYTES),
                    suppressed = n,
                    "Dropped a serial frame"
                );
            }
            None
        }
    }
}

fn dropped(device: &DeviceSpec, logs: &mut LogLimiter<&'static str>, ev: &FrameEvent) {
    let FrameEvent::Dropped { kind, bytes, len } = ev else {
        return;
    };
    device.stats.error(kind);
    if let Some(n) = logs.allow(kind, Instant::now()) {
        warn!(
            device = %device.config.id,
            kind = *kind,
            len = *len,
            bytes = %escape_bytes(bytes, LOG_BYTES),
            suppressed = n,
            "Dropped serial bytes"
        );
    }
}
