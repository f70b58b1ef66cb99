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
mod tests {
    use super::*;
    use crate::profiles::{ForbiddenRange, Register, Waveform};

    fn reg(channel: &str, table: Table, address: u16, ty: DataType) -> Register {
        Register {
            channel: channel.into(),
            table,
            address,
            data_type: ty,
            count: None,
            order: None,
            bit: None,
            scale: 1.0,
            offset: 0.0,
            poll_interval_ms: None,
        }
    }

    fn map(registers: Vec<Register>) -> ModbusMap {
        ModbusMap {
            addressing: Addressing::ZeroBased,
            order: WordOrder::ABCD,
            max_gap: 8,
            max_registers_per_read: 125,
            forbidden: Vec::new(),
            registers,
            waveforms: Vec::new(),
        }
    }

    fn ranges(p: &Plan) -> Vec<(u64, Table, u16, u16)> {
        p.groups
            .iter()
            .flat_map(|g| {
                g.requests
                    .iter()
                    .map(move |r| (g.interval_ms, r.table, r.start, r.count))
            })
            .collect()
    }

    #[test]
    fn adjacent_values_merge_into_one_request() {
        let m = map(vec![
            reg("a", Table::Input, 0, DataType::F32),
            reg("b", Table::Input, 2, DataType::F32),
            reg("c", Table::Input, 4, DataType::U16),
        ]);
        let p = plan(&m, 1000, None).unwrap();
        assert_eq!(ranges(&p), vec![(1000, Table::Input, 0, 5)]);
        let items = &p.groups[0].requests[0].items;
        assert_eq!(
            items.iter().map(|i| i.offset).collect::<Vec<_>>(),
            vec![0, 2, 4]
        );
    }

    #[test]
    fn gaps_bridged_up_to_max_gap_only() {
        // gap of 8 (5..12) is bridged; gap of 9 is not.
        let m = map(vec![
            reg("a", Table::Holding, 0, DataType::F32),
            reg("b", Table::Holding, 10, DataType::U16),
            reg("c", Table::Holding, 20, DataType::U16),
        ]);
        let p = plan(&m, 1000, None).unwrap();
        assert_eq!(
            ranges(&p),
            vec![(1000, Table::Holding, 0, 11), (1000, Table::Holding, 20, 1)]
        );
        // The device override wins over the profile.
        let p = plan(&m, 1000, Some(0)).unwrap();
        assert_eq!(p.request_count(), 3);
        let p = plan(&m, 1000, Some(9)).unwrap();
        assert_eq!(ranges(&p), vec![(1000, Table::Holding, 0, 21)]);
    }

    #[test]
    fn tables_never_merge() {
        let m = map(vec![
            reg("a", Table::Holding, 0, DataType::U16),
            reg("b", Table::Input, 1, DataType::U16),
            reg("c", Table::Coil, 0, DataType::Bool),
            reg("d", Table::Discrete, 3, DataType::Bool),
            reg("e", Table::Coil, 5, DataType::Bool),
        ]);
        let p = plan(&m, 500, None).unwrap();
        assert_eq!(
            ranges(&p),
            vec![
                (500, Table::Holding, 0, 1),
                (500, Table::Input, 1, 1),
                (500, Table::Coil, 0, 6),
                (500, Table::Discrete, 3, 1),
            ]
        );
    }

    #[test]
    fn never_reads_across_a_forbidden_range() {
        let mut m = map(vec![
            reg("a", Table::Input, 0, DataType::F32),
            reg("b", Table::Input, 6, DataType::F32),
            reg("c", Table::Holding, 4, DataType::U16),
        ]);
        m.forbidden = vec![ForbiddenRange {
            table: Table::Input,
            start: 3,
            end: 4,
        }];
        // Input 3..4 forbidden: 0..1 and 6..7 stay apart although the gap is 4.
        // Holding is another table: unaffected.
        let p = plan(&m, 1000, None).unwrap();
        assert_eq!(
            ranges(&p),
            vec![
                (1000, Table::Holding, 4, 1),
                (1000, Table::Input, 0, 2),
                (1000, Table::Input, 6, 2),
            ]
        );
    }

    #[test]
    fn one_based_addresses_become_wire_addresses() {
        let mut m = map(vec![
            reg("a", Table::Input, 1, DataType::I16),
            reg("b", Table::Input, 2, DataType::I16),
            reg("c", Table::Input, 4, DataType::Bool),
        ]);
        m.addressing = Addressing::OneBased;
        m.max_gap = 0;
        m.forbidden = vec![ForbiddenRange {
            table: Table::Input,
            start: 3,
            end: 3,
        }];
        let p = plan(&m, 1000, None).unwrap();
        assert_eq!(
            ranges(&p),
            vec![(1000, Table::Input, 0, 2), (1000, Table::Input, 3, 1)]
        );
        // Forbidden stays effective even with a large override.
        let p = plan(&m, 1000, Some(50)).unwrap();
        assert_eq!(p.request_count(), 2);
        let text = explain(&p);
        assert!(text.contains("0..1 [1..2]"), "{text}");
        assert!(text.contains("3..3 [4..4]"), "{text}");
    }

    #[test]
    fn max_registers_per_read_limits_merging() {
        let mut m = map((0..10)
            .map(|i| reg(&format!("r{i}"), Table::Holding, i * 2, DataType::F32))
            .collect());
        m.max_registers_per_read = 6;
        let p = plan(&m, 1000, None).unwrap();
        // 20 registers in requests of at most 6, never splitting an f32.
        assert_eq!(
            ranges(&p).iter().map(|r| (r.2, r.3)).collect::<Vec<_>>(),
            vec![(0, 6), (6, 6), (12, 6), (18, 2)]
        );
    }

    #[test]
    fn requests_never_exceed_125_registers_or_2000_bits() {
        let regs: Vec<Register> = (0..300)
            .map(|i| reg(&format!("h{i}"), Table::Holding, i, DataType::U16))
            .collect();
        let mut bits: Vec<Register> = (0..4500)
            .map(|i| reg(&format!("c{i}"), Table::Coil, i, DataType::Bool))
            .collect();
        let mut all = regs;
        all.append(&mut bits);
        let mut m = map(all);
        m.max_registers_per_read = 200; // invalid in a profile; clamped to 125
        let p = plan(&m, 1000, None).unwrap();
        assert_eq!(
            ranges(&p)
                .iter()
                .map(|r| (r.1, r.2, r.3))
                .collect::<Vec<_>>(),
            vec![
                (Table::Holding, 0, 125),
                (Table::Holding, 125, 125),
                (Table::Holding, 250, 50),
                (Table::Coil, 0, 2000),
                (Table::Coil, 2000, 2000),
                (Table::Coil, 4000, 500),
            ]
        );
    }

    #[test]
    fn poll_intervals_make_separate_groups() {
        let mut slow = reg("t", Table::Input, 2, DataType::I16);
        slow.poll_interval_ms = Some(10_000);
        let m = map(vec![reg("a", Table::Input, 0, DataType::F32), slow]);
        let p = plan(&m, 1000, None).unwrap();
        // Adjacent, but polled at different rates: two requests.
        assert_eq!(
            ranges(&p),
            vec![(1000, Table::Input, 0, 2), (10_000, Table::Input, 2, 1)]
        );
    }

    fn waveform(address: u16, samples: u16, ty: DataType, rate: f64) -> Waveform {
        Waveform {
            channel: "w".into(),
            table: Table::Input,
            address,
            samples,
            data_type: ty,
            order: None,
            sample_rate_hz: rate,
            scale: 1.0,
            offset: 0.0,
            poll_interval_ms: None,
        }
    }

    #[test]
    fn waveform_blocks_split_into_consecutive_requests() {
        let mut m = map(vec![]);
        m.waveforms = vec![waveform(1000, 1024, DataType::I16, 12_000.0)];
        let p = plan(&m, 1000, None).unwrap();
        assert_eq!(p.groups.len(), 1);
        // 1024 / 12 kHz = 85.33 ms
        assert_eq!(p.groups[0].interval_ms, 85);
        let r = &p.groups[0].requests;
        assert_eq!(r.len(), 9); // 8 x 125 + 24
        assert!(r.iter().all(|r| r.count <= 125));
        assert_eq!(r.iter().map(|r| u32::from(r.count)).sum::<u32>(), 1024);
        for (i, req) in r.iter().enumerate() {
            assert_eq!(req.start, 1000 + 125 * i as u16);
            match &req.items[0].kind {
                ItemKind::BlockPart {
                    first_sample,
                    samples,
                    total_samples,
                    ..
                } => {
                    assert_eq!(*first_sample, 125 * i as u16);
                    assert_eq!(*samples, req.count);
                    assert_eq!(*total_samples, 1024);
                }
                k => panic!("{k:?}"),
            }
        }
    }

    #[test]
    fn two_register_samples_split_at_sample_boundaries() {
        let mut m = map(vec![]);
        m.waveforms = vec![waveform(0, 100, DataType::F32, 1000.0)];
        let p = plan(&m, 1000, None).unwrap();
        assert_eq!(p.groups[0].interval_ms, 100);
        let counts: Vec<u16> = p.groups[0].requests.iter().map(|r| r.count).collect();
        assert_eq!(counts, vec![124, 76]);
    }

    #[test]
    fn a_block_shares_a_request_with_a_neighbour_of_its_group() {
        let mut a = reg("a", Table::Input, 0, DataType::U16);
        a.poll_interval_ms = Some(50);
        let mut m = map(vec![a]);
        let mut w = waveform(2, 200, DataType::U16, 4000.0);
        w.poll_interval_ms = Some(50);
        m.waveforms = vec![w];
        let p = plan(&m, 1000, None).unwrap();
        // a at 0, gap 1, block 2..201: 0..124 (a + 123 samples), 125..201 (77 samples)
        assert_eq!(
            ranges(&p),
            vec![(50, Table::Input, 0, 125), (50, Table::Input, 125, 77)]
        );
        let parts: Vec<(u16, u16)> = p.groups[0]
            .requests
            .iter()
            .flat_map(|r| r.items.iter())
            .filter_map(|i| match i.kind {
                ItemKind::BlockPart {
                    first_sample,
                    samples,
                    ..
                } => Some((first_sample, samples)),
                _ => None,
            })
            .collect();
        assert_eq!(parts, vec![(0, 123), (123, 77)]);
    }

    #[test]
    fn strings_wider_than_a_read_are_refused() {
        let mut s = reg("id", Table::Holding, 0, DataType::String);
        s.count = Some(10);
        let mut m = map(vec![s.clone()]);
        m.max_registers_per_read = 8;
        assert!(matches!(
            plan(&m, 1000, None),
            Err(PlanError::TooWide { .. })
        ));
        m.max_registers_per_read = 10;
        let p = plan(&m, 1000, None).unwrap();
        assert_eq!(ranges(&p), vec![(1000, Table::Holding, 0, 10)]);
    }

    #[test]
    fn example_profiles_plan_as_documented() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware-profiles");
        let load = |name: &str| {
            let mut diags = Vec::new();
            let p = crate::profiles::load_profile(&dir.join(name), &mut diags);
            p.unwrap_or_else(|| panic!("{name}: {diags:?}"))
                .profile
                .modbus
                .unwrap()
        };
        let vt = plan(&load("acme-vt420.toml"), 1000, None).unwrap();
        // 85 ms: the waveform (9 requests); 1000 ms: f32 at 0..3;
        // 10 s: temperature at 10 (its own interval).
        assert_eq!(
            ranges(&vt)
                .iter()
                .map(|r| (r.0, r.2, r.3))
                .collect::<Vec<_>>(),
            vec![
                (85, 1000, 125),
                (85, 1125, 125),
                (85, 1250, 125),
                (85, 1375, 125),
                (85, 1500, 125),
                (85, 1625, 125),
                (85, 1750, 125),
                (85, 1875, 125),
                (85, 2000, 24),
                (1000, 0, 4),
                (10_000, 10, 1),
            ]
        );
        let rtt = plan(&load("tempco-rtt20.toml"), 5000, None).unwrap();
        assert_eq!(
            ranges(&rtt),
            vec![(5000, Table::Input, 0, 2), (5000, Table::Input, 3, 1)]
        );
    }

    #[test]
    fn explain_names_every_channel_and_interval() {
        let mut m = map(vec![
            reg("velocity", Table::Input, 0, DataType::F32),
            reg("temp", Table::Input, 4, DataType::I16),
        ]);
        m.waveforms = vec![waveform(100, 200, DataType::I16, 10_000.0)];
        let p = plan(&m, 1000, None).unwrap();
        let text = explain(&p);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 3, "{text}");
        assert!(
            lines[0].starts_with("3 requests in 2 poll groups"),
            "{text}"
        );
        assert!(
            lines[1].contains("input")
                && lines[1].contains("100..224")
                && lines[1].contains("every 20 ms"),
            "{text}"
        );
        assert!(lines[1].contains("w (samples 0..124 of 200 i16)"), "{text}");
        assert!(
            lines[3].contains("0..4") && lines[3].contains("velocity (f32 @0), temp (i16 @4)"),
            "{text}"
        );
    }
}
