//! Request planning: turns a profile's register map into the read requests a device
//! is polled with, grouped by poll interval.
//!
//! Rules, in the order they apply:
//! - Values are grouped by poll interval: a register's own `poll_interval_ms`, a
//!   waveform block's own interval or the time the block covers
//!   (`samples / sample_rate_hz`, rounded to the millisecond, so consecutive blocks
//!   tile the signal), else the device's `poll_interval_ms`. Each group is polled on
//!   its own schedule.
//! - Within a group and table, values sorted by address are merged left to right into
//!   one request while the gap to the next value is at most `max_gap` registers (or
//!   bits), the request stays within `max_registers_per_read` (≤ 125) registers or
//!   2000 bits, and no forbidden address falls inside it.
//! - Waveform blocks may be split, at sample boundaries, over consecutive requests.
//!   Scalar values are never split.
//!
//! Pure: no I/O. The only way in is [`plan`] (or [`plan_device`]); the runtime reads
//! the resulting [`Plan`] and [`explain`] prints it for technicians.

use crate::profiles::{Addressing, DataType, ModbusMap, Table, WordOrder};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Most bits one coil/discrete read may carry (Modbus spec).
pub const MAX_BITS_PER_READ: u16 = 2000;
/// Most registers one holding/input read may carry (Modbus spec).
pub const MAX_REGISTERS_PER_READ: u16 = 125;

/// The read requests of one device, by poll group.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Whether the profile counts addresses from 1; only [`explain`] uses it, to show
    /// the addresses a technician finds in the manual next to the wire addresses.
    pub one_based: bool,
    /// Poll groups, shortest interval first.
    pub groups: Vec<PollGroup>,
}

/// Values polled together at one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct PollGroup {
    pub interval_ms: u64,
    /// Requests in the order they are sent each cycle.
    pub requests: Vec<ReadRequest>,
}

/// One Modbus read.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRequest {
    pub table: Table,
    /// First wire (protocol, 0-based) address.
    pub start: u16,
    /// Registers or bits read.
    pub count: u16,
    /// What the answer is decoded into, in address order.
    pub items: Vec<Item>,
}

impl ReadRequest {
    /// Last wire address read (inclusive).
    pub fn end(&self) -> u16 {
        self.start + self.count.max(1) - 1
    }
}

/// One value (or part of a waveform block) inside a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Channel name from the profile.
    pub channel: String,
    /// First register (or bit) of the item, relative to the request's start.
    pub offset: u16,
    pub kind: ItemKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ItemKind {
    /// A whole scalar value.
    Scalar {
        data_type: DataType,
        /// Registers (or bits) the value occupies.
        width: u16,
        order: WordOrder,
        bit: Option<u8>,
        scale: f64,
        offset: f64,
    },
    /// Samples `first_sample .. first_sample + samples` of a waveform block of
    /// `total_samples`; the block is complete when its last part has been read.
    BlockPart {
        data_type: DataType,
        order: WordOrder,
        scale: f64,
        offset: f64,
        sample_rate_hz: f64,
        first_sample: u16,
        samples: u16,
        total_samples: u16,
    },
}

impl Item {
    /// Registers (or bits) the item occupies in the answer.
    pub fn width(&self) -> u16 {
        match &self.kind {
            ItemKind::Scalar { width, .. } => *width,
            ItemKind::BlockPart {
                data_type, samples, ..
            } => samples * data_type.registers().unwrap_or(1),
        }
    }
}

/// Why a register map cannot be turned into requests.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("the profile has no [modbus] register map")]
    NoModbusMap,
    #[error(
        "{table} value of channel {channel:?} at wire address {start} needs {width} registers, \
         more than one read may carry ({limit}); lower its count or raise modbus.max_registers_per_read"
    )]
    TooWide {
        channel: String,
        table: &'static str,
        start: u32,
        width: u32,
        limit: u16,
    },
    #[error("value of channel {channel:?} at {start} (width {width}) runs past address 65535")]
    OutOfRange {
        channel: String,
        start: u32,
        width: u32,
    },
}

/// Plans a device: its profile's map, its own poll interval and `max_gap` override.
pub fn plan_device(
    config: &crate::config::DeviceConfig,
    profile: &crate::profiles::Profile,
) -> Result<Plan, PlanError> {
    let map = profile.modbus.as_ref().ok_or(PlanError::NoModbusMap)?;
    let max_gap = config
        .modbus_tcp
        .as_ref()
        .and_then(|t| t.max_gap)
        .or_else(|| config.modbus_rtu.as_ref().and_then(|t| t.max_gap));
    plan(map, config.poll_interval_ms, max_gap)
}

/// A value to place, in wire addresses.
struct Span {
    table: Table,
    interval_ms: u64,
    start: u32,
    /// Registers or bits.
    width: u32,
    channel: String,
    piece: Piece,
}

enum Piece {
    Scalar(ItemKind),
    Block {
        data_type: DataType,
        order: WordOrder,
        scale: f64,
        offset: f64,
        sample_rate_hz: f64,
        samples: u16,
    },
}

/// Plans the requests for `map`, polled every `device_interval_ms` unless a value says
/// otherwise, bridging gaps of at most `max_gap` (default: the map's).
pub fn plan(
    map: &ModbusMap,
    device_interval_ms: u64,
    max_gap: Option<u16>,
) -> Result<Plan, PlanError> {
    let base = u32::from(map.addressing == Addressing::OneBased);
    let wire = |a: u16| u32::from(a).saturating_sub(base);
    let max_gap = u32::from(max_gap.unwrap_or(map.max_gap));
    let max_regs = map.max_registers_per_read.clamp(1, MAX_REGISTERS_PER_READ);
    let device_interval_ms = device_interval_ms.max(1);

    let mut spans = Vec::new();
    for r in &map.registers {
        let width = u32::from(r.width());
        let start = wire(r.address);
        let span = Span {
            table: r.table,
            interval_ms: r.poll_interval_ms.unwrap_or(device_interval_ms).max(1),
            start,
            width,
            channel: r.channel.clone(),
            piece: Piece::Scalar(ItemKind::Scalar {
                data_type: r.data_type,
                width: r.width(),
                order: r.order.unwrap_or(map.order),
                bit: r.bit,
                scale: r.scale,
                offset: r.offset,
            }),
        };
        let limit = limit_of(r.table, max_regs);
        if width > u32::from(limit) {
            return Err(PlanError::TooWide {
                channel: r.channel.clone(),
                table: r.table.as_str(),
                start,
                width,
                limit,
            });
        }
        spans.push(span);
    }
    for w in &map.waveforms {
        let interval = w.poll_interval_ms.unwrap_or_else(|| {
            if w.sample_rate_hz > 0.0 && w.sample_rate_hz.is_finite() {
                (f64::from(w.samples) / w.sample_rate_hz * 1000.0).round() as u64
            } else {
                device_interval_ms
            }
        });
        spans.push(Span {
            table: w.table,
            interval_ms: interval.max(1),
            start: wire(w.address),
            width: w.width(),
            channel: w.channel.clone(),
            piece: Piece::Block {
                data_type: w.data_type,
                order: w.order.unwrap_or(map.order),
                scale: w.scale,
                offset: w.offset,
                sample_rate_hz: w.sample_rate_hz,
                samples: w.samples,
            },
        });
    }
    for s in &spans {
        if s.start + s.width > 65536 {
            return Err(PlanError::OutOfRange {
                channel: s.channel.clone(),
                start: s.start,
                width: s.width,
            });
        }
    }
    let forbidden: Vec<(Table, u32, u32)> = map
        .forbidden
        .iter()
        .map(|f| (f.table, wire(f.start), wire(f.end)))
        .collect();

    let mut by_interval: BTreeMap<u64, Vec<Span>> = BTreeMap::new();
    for s in spans {
        by_interval.entry(s.interval_ms).or_default().push(s);
    }
    let groups = by_interval
        .into_iter()
        .map(|(interval_ms, mut spans)| {
            spans.sort_by_key(|s| (s.table, s.start));
            PollGroup {
                interval_ms,
                requests: merge(&spans, max_regs, max_gap, &forbidden),
            }
        })
        .collect();
    Ok(Plan {
        one_based: base == 1,
        groups,
    })
}

fn limit_of(table: Table, max_regs: u16) -> u16 {
    if table.is_bits() {
        MAX_BITS_PER_READ
    } else {
        max_regs
    }
}

/// Request under construction: wire range `[start, end)`.
struct Open {
    table: Table,
    start: u32,
    end: u32,
    items: Vec<Item>,
}

impl Open {
    fn close(self) -> ReadRequest {
        ReadRequest {
            table: self.table,
            start: self.start as u16,
            count: (self.end - self.start) as u16,
            items: self.items,
        }
    }
}

/// Greedy left-to-right merge of sorted spans of one group.
fn merge(
    spans: &[Span],
    max_regs: u16,
    max_gap: u32,
    forbidden: &[(Table, u32, u32)],
) -> Vec<ReadRequest> {
    let mut out = Vec::new();
    let mut open: Option<Open> = None;
    // Can the open request be extended to cover `[.., new_end)` starting a value at
    // `at`?
    let can_extend = |o: &Open, table: Table, at: u32, new_end: u32| -> bool {
        let limit = u32::from(limit_of(table, max_regs));
        o.table == table
            && at.saturating_sub(o.end) <= max_gap
            && new_end.max(o.end) - o.start <= limit
            && !forbidden
                .iter()
                .any(|&(t, fs, fe)| t == table && fs < new_end.max(o.end) && o.start <= fe)
    };
    for s in spans {
        match &s.piece {
            Piece::Scalar(kind) => {
                let end = s.start + s.width;
                let fits = open
                    .as_ref()
                    .is_some_and(|o| can_extend(o, s.table, s.start, end));
                if !fits {
                    if let Some(o) = open.take() {
                        out.push(o.close());
                    }
                    open = Some(Open {
                        table: s.table,
                        start: s.start,
                        end,
                        items: Vec::new(),
                    });
                }
                if let Some(o) = open.as_mut() {
                    o.items.push(Item {
                        channel: s.channel.clone(),
                        offset: (s.start - o.start) as u16,
                        kind: kind.clone(),
                    });
                    o.end = o.end.max(end);
                }
            }
            Piece::Block {
                data_type,
                order,
                scale,
                offset,
                sample_rate_hz,
                samples,
            } => {
                let sw = u32::from(data_type.registers().unwrap_or(1));
                let limit = u32::from(limit_of(s.table, max_regs));
                let mut first: u32 = 0;
                while first < u32::from(*samples) {
                    let at = s.start + first * sw;
                    let left = u32::from(*samples) - first;
                    // Samples that still fit into the open request, if it may be
                    // extended at all.
                    let room = open
                        .as_ref()
                        .filter(|o| can_extend(o, s.table, at, at + sw))
                        .map(|o| (o.start + limit).saturating_sub(at.max(o.end)) / sw)
                        .unwrap_or(0);
                    let room = if room == 0 {
                        if let Some(o) = open.take() {
                            out.push(o.close());
                        }
                        open = Some(Open {
                            table: s.table,
                            start: at,
                            end: at,
                            items: Vec::new(),
                        });
                        (limit / sw).max(1)
                    } else {
                        room
                    };
                    let n = room.min(left);
                    // A later sample could only hit a forbidden address if the block
                    // itself overlaps one, which validation refuses.
                    if let Some(o) = open.as_mut() {
                        o.items.push(Item {
                            channel: s.channel.clone(),
                            offset: (at - o.start) as u16,
                            kind: ItemKind::BlockPart {
                                data_type: *data_type,
                                order: *order,
                                scale: *scale,
                                offset: *offset,
                                sample_rate_hz: *sample_rate_hz,
                                first_sample: first as u16,
                                samples: n as u16,
                                total_samples: *samples,
                            },
                        });
                        o.end = o.end.max(at + n * sw);
                    }
                    first += n;
                }
            }
        }
    }
    if let Some(o) = open.take() {
        out.push(o.close());
    }
    out
}

impl Plan {
    /// Requests per full cycle of every group.
    pub fn request_count(&self) -> usize {
        self.groups.iter().map(|g| g.requests.len()).sum()
    }

    /// Requests per second this plan sends when every group keeps its schedule.
    pub fn requests_per_second(&self) -> f64 {
        self.groups
            .iter()
            .map(|g| g.requests.len() as f64 * 1000.0 / g.interval_ms as f64)
            .sum()
    }
}

/// The plan as technicians read it: one line per request with table, wire address
/// range (and the manual's 1-based range when the profile uses one), count, the
/// channels it feeds and its interval.
pub fn explain(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} request{} in {} poll group{}, {:.1} requests/s; addresses are wire (0-based){}",
        plan.request_count(),
        if plan.request_count() == 1 { "" } else { "s" },
        plan.groups.len(),
        if plan.groups.len() == 1 { "" } else { "s" },
        plan.requests_per_second(),
        if plan.one_based {
            ", manual (1-based) in brackets"
        } else {
            ""
        }
    );
    for g in &plan.groups {
        for r in &g.requests {
            let unit = if r.table.is_bits() { "bits" } else { "regs" };
            let mut range = format!("{}..{}", r.start, r.end());
            if plan.one_based {
                let _ = write!(
                    range,
                    " [{}..{}]",
                    u32::from(r.start) + 1,
                    u32::from(r.end()) + 1
                );
            }
            let mut channels: Vec<String> = Vec::new();
            for it in &r.items {
                let desc = match &it.kind {
                    ItemKind::Scalar { data_type, .. } => {
                        format!(
                            "{} ({} @{})",
                            it.channel,
                            data_type.as_str(),
                            u32::from(r.start) + u32::from(it.offset)
                        )
                    }
                    ItemKind::BlockPart {
                        data_type,
                        first_sample,
                        samples,
                        total_samples,
                        ..
                    } => format!(
                        "{} (samples {}..{} of {} {})",
                        it.channel,
                        first_sample,
                        first_sample + samples - 1,
                        total_samples,
                        data_type.as_str()
                    ),
                };
                channels.push(desc);
            }
            let _ = writeln!(
                s,
                "  {:<8} {:<22} {:>4} {}  every {} ms  {}",
                r.table.as_str(),
                range,
                r.count,
                unit,
                g.interval_ms,
                channels.join(", ")
            );
        }
    }
    s
}

#[cfg(test)]
mod tests;
