//! Tests of request planning: grouping by interval, merging, forbidden ranges and splits.

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
    // 171 ms: the 2048-sample waveform (17 requests); 1000 ms: f32 at 0..3;
    // 10 s: temperature at 10 (its own interval).
    let mut want: Vec<(u64, u16, u16)> = (0..16).map(|i| (171, 1000 + 125 * i, 125)).collect();
    want.push((171, 3000, 48));
    want.extend([(1000, 0, 4), (10_000, 10, 1)]);
    assert_eq!(
        ranges(&vt)
            .iter()
            .map(|r| (r.0, r.2, r.3))
            .collect::<Vec<_>>(),
        want
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
