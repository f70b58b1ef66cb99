//! What TCP and RTU share: one read with a timeout, polling one group of a plan into
//! readings, poll schedules, exception bookkeeping and reconnect back-off.
//!
//! Owns the rule "an exception is data, a timeout or transport error is not": an
//! exception answer turns the request's readings into quality-0 readings and polling
//! goes on; a timeout or transport error ends the group (the caller reconnects, or on
//! RTU counts a failure for the unit). Never spawns tasks: a device's whole life runs
//! in its caller's task, so a reconnect cannot leak one.

use super::codec::{self, Decoded};
use super::plan::{ItemKind, Plan, ReadRequest};
use crate::profiles::Table;
use crate::record::{now_us, NameMap};
use crate::sources::{ChannelId, DeviceSpec, Reading, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::{ExceptionCode, Request, Response};
use tokio_util::sync::CancellationToken;

/// The answer to one read: registers or bits, exactly `count` of them.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// A read that got no usable answer. Unlike an exception, the connection (TCP) or
/// the unit (RTU) is suspect afterwards.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("transport error: {0}")]
    Transport(#[source] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl RequestError {
    /// Key for [`crate::sources::DeviceStats::error`].
    pub fn kind(&self) -> &'static str {
        match self {
            RequestError::Timeout(_) => "timeout",
            RequestError::Transport(_) => "transport",
            RequestError::Protocol(_) => "protocol",
        }
    }

    /// Flag on the quality-0 readings of values this error left unread.
    fn flag(&self) -> &'static str {
        match self {
            RequestError::Timeout(_) => "timeout",
            RequestError::Transport(_) => "transport_error",
            RequestError::Protocol(_) => "protocol_error",
        }
    }
}

/// One read of `count` registers/bits from `table` at wire address `start`, with a
/// timeout (the client has none). `Ok(Err(code))` is a Modbus exception answer.
///
/// This is the one code path every read of the gateway takes: the sources, the
/// `modbus read` tool and the `modbus_rps` benchmark.
pub async fn timed_read(
    ctx: &mut Context,
    table: Table,
    start: u16,
    count: u16,
    timeout: Duration,
) -> Result<Result<Answer, ExceptionCode>, RequestError> {
    let req = match table {
        Table::Holding => Request::ReadHoldingRegisters(start, count),
        Table::Input => Request::ReadInputRegisters(start, count),
        Table::Coil => Request::ReadCoils(start, count),
        Table::Discrete => Request::ReadDiscreteInputs(start, count),
    };
    let answer = match tokio::time::timeout(timeout, ctx.call(req)).await {
        Err(_) => return Err(RequestError::Timeout(timeout.as_millis() as u64)),
        Ok(Err(tokio_modbus::Error::Transport(e))) => return Err(RequestError::Transport(e)),
        Ok(Err(tokio_modbus::Error::Protocol(e))) => {
            return Err(RequestError::Protocol(e.to_string()))
        }
        Ok(Ok(Err(code))) => return Ok(Err(code)),
        Ok(Ok(Ok(answer))) => answer,
    };
    let n = usize::from(count);
    // The client only debug-asserts lengths; a device that answers short must not
    // shift every value after the hole, so check here.
    match answer {
        Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w) if w.len() == n => {
            Ok(Ok(Answer::Words(w)))
        }
        Response::ReadCoils(mut b) | Response::ReadDiscreteInputs(mut b) if b.len() >= n => {
            b.truncate(n);
            Ok(Ok(Answer::Bits(b)))
        }
        other => Err(RequestError::Protocol(format!(
            "asked for {count} {} at {start}, got {other:?}",
            table.as_str()
        ))),
    }
}

pub use crate::retry::Backoff;

/// Keeps the silence the RTU spec asks for between frames on a bus.
#[derive(Debug)]
pub struct Pacer {
    /// Silence before each request, after the last frame on the bus.
    pub pause: Duration,
    last_io: Option<Instant>,
}

impl Pacer {
    pub fn new(pause: Duration) -> Self {
        Pacer {
            pause,
            last_io: None,
        }
    }

    async fn before_request(&mut self) {
        if let Some(t) = self.last_io {
            tokio::time::sleep_until(t + self.pause).await;
        }
    }

    fn after_answer(&mut self) {
        self.last_io = Some(Instant::now());
    }
}

/// How a group poll ended.
#[derive(Debug)]
pub struct GroupOutcome {
    /// Everything read (and quality-0 readings for what failed), ready to send.
    pub readings: Vec<Reading>,
    /// Requests the device answered (with data or an exception).
    pub answered: usize,
    /// Set when a request got no usable answer; the rest of the group was skipped.
    pub error: Option<RequestError>,
}

/// What an exception answer is news of, for the log: a read that starts failing is a
/// warning; a device that keeps failing with another code every poll is not a new
/// warning every poll (one WARN line a poll flooded the journal), just debug detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExceptionNews {
    Started,
    Changed,
    Same,
}

fn exception_news(previous: Option<u8>, code: u8) -> ExceptionNews {
    match previous {
        None => ExceptionNews::Started,
        Some(p) if p != code => ExceptionNews::Changed,
        Some(_) => ExceptionNews::Same,
    }
}

/// A device's plan with its poll schedule and exception state.
pub struct DeviceRunner {
    pub spec: DeviceSpec,
    pub plan: Plan,
    pub timeout: Duration,
    channels: NameMap<String, ChannelId>,
    /// Next due time per group.
    due: Vec<Instant>,
    /// Last exception code per request (per group), for logging state changes only.
    exceptions: Vec<Vec<Option<u8>>>,
}

impl DeviceRunner {
    pub fn new(spec: DeviceSpec, plan: Plan, timeout: Duration) -> Self {
        let mut channels = NameMap::default();
        for g in &plan.groups {
            for r in &g.requests {
                for it in &r.items {
                    if let Some(id) = spec.channel(&it.channel) {
                        channels.insert(it.channel.clone(), id);
                    }
                }
            }
        }
        let now = Instant::now();
        DeviceRunner {
            due: vec![now; plan.groups.len()],
            exceptions: plan
                .groups
                .iter()
                .map(|g| vec![None; g.requests.len()])
                .collect(),
            spec,
            plan,
            timeout,
            channels,
        }
    }

    pub fn id(&self) -> &str {
        &self.spec.config.id
    }

    /// The group due first and when.
    pub fn next_due(&self) -> Option<(usize, Instant)> {
        self.due.iter().copied().enumerate().min_by_key(|(_, t)| *t)
    }

    /// Moves group `g` to its next slot; when polling fell behind, missed slots are
    /// skipped rather than caught up in a burst.
    pub fn reschedule(&mut self, g: usize) {
        let interval = Duration::from_millis(self.plan.groups[g].interval_ms);
        let now = Instant::now();
        let next = self.due[g] + interval;
        self.due[g] = if next < now { now + interval } else { next };
    }

    /// Delays every group to at least `t` (a unit in back-off, a reconnect).
    pub fn defer_until(&mut self, t: Instant) {
        for d in &mut self.due {
            *d = (*d).max(t);
        }
    }

    /// Polls group `g`: its requests one at a time, stopping between requests when
    /// `cancel` fires (what was read is returned) or at the first request without a
    /// usable answer.
    pub async fn poll_group(
        &mut self,
        ctx: &mut Context,
        g: usize,
        cancel: &CancellationToken,
        mut pacer: Option<&mut Pacer>,
    ) -> GroupOutcome {
        let group = &self.plan.groups[g];
        let mut out = GroupOutcome {
            readings: Vec::with_capacity(group.requests.iter().map(|r| r.items.len()).sum()),
            answered: 0,
            error: None,
        };
        let mut blocks: NameMap<&str, Vec<f32>> = NameMap::default();
        let started = std::time::Instant::now();
        let stats = &self.spec.stats;
        for (ri, req) in group.requests.iter().enumerate() {
            if cancel.is_cancelled() {
                break;
            }
            if let Some(p) = pacer.as_deref_mut() {
                p.before_request().await;
            }
            let res = timed_read(ctx, req.table, req.start, req.count, self.timeout).await;
            if let Some(p) = pacer.as_deref_mut() {
                p.after_answer();
            }
            let ts = now_us();
            match res {
                Ok(Ok(answer)) => {
                    out.answered += 1;
                    if let Some(code) = self.exceptions[g][ri].take() {
                        tracing::info!(device = %self.spec.config.id, table = req.table.as_str(), start = req.start, count = req.count, previous_exception = code, "Modbus read answers again.");
                    }
                    decode_request(
                        req,
                        &answer,
                        ts,
                        &self.channels,
                        &mut blocks,
                        &mut out.readings,
                    );
                }
                Ok(Err(code)) => {
                    out.answered += 1;
                    stats.error("exception");
                    let code = u8::from(code);
                    match exception_news(self.exceptions[g][ri], code) {
                        ExceptionNews::Started => {
                            tracing::warn!(device = %self.spec.config.id, table = req.table.as_str(), start = req.start, count = req.count, exception = code, "Modbus device answers with an exception; its values get quality 0 until it recovers.")
                        }
                        ExceptionNews::Changed => {
                            tracing::debug!(device = %self.spec.config.id, table = req.table.as_str(), start = req.start, count = req.count, exception = code, "Modbus exception code changed (still failing).")
                        }
                        ExceptionNews::Same => {}
                    }
                    self.exceptions[g][ri] = Some(code);
                    fail_items(
                        req,
                        ts,
                        &format!("modbus_exception:{code}"),
                        &self.channels,
                        &mut blocks,
                        &mut out.readings,
                    );
                }
                Err(e) => {
                    stats.error(e.kind());
                    for r in &group.requests[ri..] {
                        fail_items(
                            r,
                            ts,
                            e.flag(),
                            &self.channels,
                            &mut blocks,
                            &mut out.readings,
                        );
                    }
                    out.error = Some(e);
                    break;
                }
            }
        }
        if out.error.is_none() && out.answered > 0 {
            stats.connected.store(true, Ordering::Relaxed);
            stats.success(now_us(), started.elapsed(), out.readings.len());
        }
        // Modbus devices send values, not times: every reading is stamped on arrival.
        for r in &mut out.readings {
            r.arrival = true;
        }
        out
    }
}

/// Decodes every item of an answered request into readings (a waveform block only
/// when its last part arrives).
fn decode_request<'a>(
    req: &'a ReadRequest,
    answer: &Answer,
    ts: i64,
    channels: &NameMap<String, ChannelId>,
    blocks: &mut NameMap<&'a str, Vec<f32>>,
    out: &mut Vec<Reading>,
) {
    for it in &req.items {
        let Some(id) = channels.get(&it.channel) else {
            continue;
        };
        let from = usize::from(it.offset);
        let to = from + usize::from(it.width());
        match (&it.kind, answer) {
            (
                ItemKind::Scalar {
                    data_type,
                    order,
                    bit,
                    scale,
                    offset,
                    ..
                },
                Answer::Words(w),
            ) => {
                let Some(regs) = w.get(from..to) else {
                    out.push(id.failed(ts, "short_answer"));
                    continue;
                };
                out.push(match codec::decode(regs, *data_type, *order, *bit) {
                    // Checked after scaling: f64::MAX × 10 is as useless as a NaN.
                    Ok(Decoded::Number(v)) => match codec::scaled(v, *scale, *offset) {
                        v if v.is_finite() => id.reading(ts, Value::Scalar(v)),
                        _ => id.failed(ts, "not_a_number"),
                    },
                    Ok(Decoded::Bool(b)) => id.reading(ts, Value::Scalar(f64::from(u8::from(b)))),
                    Ok(Decoded::Text(t)) => id.reading(ts, Value::Text(t)),
                    Err(_) => id.failed(ts, "short_answer"),
                });
            }
            (ItemKind::Scalar { scale, offset, .. }, Answer::Bits(b)) => match b.get(from) {
                // A bit is 0 or 1; scale/offset still apply for symmetry with registers.
                Some(bit) => out.push(id.reading(
                    ts,
                    Value::Scalar(codec::scaled(f64::from(u8::from(*bit)), *scale, *offset)),
                )),
                None => out.push(id.failed(ts, "short_answer")),
            },
            (
                ItemKind::BlockPart {
                    data_type,
                    order,
                    scale,
                    offset,
                    sample_rate_hz,
                    first_sample,
                    samples,
                    total_samples,
                },
                Answer::Words(w),
            ) => {
                if *first_sample == 0 {
                    blocks.insert(&it.channel, Vec::with_capacity(usize::from(*total_samples)));
                }
                // A block whose earlier part failed (or was not read) is not assembled.
                let Some(buf) = blocks.get_mut(it.channel.as_str()) else {
                    continue;
                };
                let sw = usize::from(data_type.registers().unwrap_or(1));
                let Some(regs) = w.get(from..to) else {
                    blocks.remove(it.channel.as_str());
                    out.push(id.failed(ts, "short_answer"));
                    continue;
                };
                // A sample that does not decode to a finite f32 (a NaN register, a
                // value past f32::MAX after scaling) spoils the whole block: a block
                // is all or nothing downstream.
                let before = buf.len();
                buf.extend(regs.chunks_exact(sw).map_while(|s| {
                    let v = codec::decode(s, *data_type, *order, None)
                        .ok()
                        .and_then(|d| d.as_f64())?;
                    Some(codec::scaled(v, *scale, *offset) as f32).filter(|v| v.is_finite())
                }));
                if buf.len() - before != regs.len() / sw {
                    blocks.remove(it.channel.as_str());
                    out.push(id.failed(ts, "not_a_number"));
                    continue;
                }
                if first_sample + samples >= *total_samples {
                    if let Some(buf) = blocks.remove(it.channel.as_str()) {
                        out.push(id.reading(
                            ts,
                            Value::Block {
                                sample_rate_hz: *sample_rate_hz,
                                samples: Arc::from(buf),
                            },
                        ));
                    }
                }
            }
            (ItemKind::BlockPart { .. }, Answer::Bits(_)) => {
                out.push(id.failed(ts, "short_answer"))
            }
        }
    }
}

/// Quality-0 readings for the items of a request that failed; a waveform block gets
/// one failed reading, not one per part.
fn fail_items<'a>(
    req: &'a ReadRequest,
    ts: i64,
    flag: &str,
    channels: &NameMap<String, ChannelId>,
    blocks: &mut NameMap<&'a str, Vec<f32>>,
    out: &mut Vec<Reading>,
) {
    for it in &req.items {
        let Some(id) = channels.get(&it.channel) else {
            continue;
        };
        if let ItemKind::BlockPart { first_sample, .. } = it.kind {
            // Parts after the first: the block's reading was already failed (or its
            // buffer is dropped here and the failure reported once).
            let had_buffer = blocks.remove(it.channel.as_str()).is_some();
            if first_sample != 0 && !had_buffer {
                continue;
            }
        }
        out.push(id.failed(ts, flag));
    }
}

/// The channel the batch is sent on is gone: the pipeline has shut down.
#[derive(Debug)]
pub struct PipelineClosed;

/// Sends the readings of one poll as one batch.
pub async fn send(
    tx: &tokio::sync::mpsc::Sender<crate::sources::SourceBatch>,
    readings: Vec<Reading>,
) -> Result<(), PipelineClosed> {
    if readings.is_empty() {
        return Ok(());
    }
    tx.send(crate::sources::SourceBatch {
        readings,
        ack: None,
    })
    .await
    .map_err(|_| PipelineClosed)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_changing_exception_code_warns_once() {
        use super::{exception_news, ExceptionNews::*};
        let mut prev = None;
        let mut warnings = 0;
        for code in [2u8, 3, 4, 2, 3, 4, 2] {
            if exception_news(prev, code) == Started {
                warnings += 1;
            }
            prev = Some(code);
        }
        assert_eq!(warnings, 1);
        assert_eq!(exception_news(Some(2), 3), Changed);
        assert_eq!(exception_news(Some(2), 2), Same);
    }
}
