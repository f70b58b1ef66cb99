//! Checks of a profile's `[modbus]` map: register widths and types, overlapping
//! address spans, and the channels the registers feed. Called by
//! [`crate::profiles::validate_profile`].

use super::profile::{Addressing, DataType, ModbusMap, Table};
use crate::diag::{Diagnostic, FieldPath, SourceFile};
use crate::profiles::{channel_ref, Profile};
use std::collections::BTreeMap;

pub(crate) fn modbus(file: &SourceFile, p: &Profile, m: &ModbusMap, diags: &mut Vec<Diagnostic>) {
    let base = FieldPath::root().join("modbus");
    let one_based = m.addressing == Addressing::OneBased;
    if m.max_registers_per_read == 0 || m.max_registers_per_read > 125 {
        diags.push(file.diag(
            &base.join("max_registers_per_read"),
            format!(
                "{} is not possible: a Modbus read carries 1 to 125 registers",
                m.max_registers_per_read
            ),
        ));
    }
    if m.registers.is_empty() && m.waveforms.is_empty() {
        diags.push(
            file.diag(
                &base,
                "the register map is empty: add [[modbus.registers]] or [[modbus.waveforms]]"
                    .to_string(),
            ),
        );
    }
    // (table, first wire address, last wire address, path) of everything read.
    let mut spans: Vec<(Table, u32, u32, FieldPath)> = Vec::new();
    let mut fed: BTreeMap<&str, FieldPath> = BTreeMap::new();

    for (i, fr) in m.forbidden.iter().enumerate() {
        let path = base.join("forbidden").join(i);
        if fr.end < fr.start {
            diags.push(file.diag(
                &path.join("end"),
                format!("end ({}) is before start ({})", fr.end, fr.start),
            ));
        }
        if one_based && fr.start == 0 {
            diags.push(file.diag(&path.join("start"), "0 is not an address when modbus.addressing = \"one_based\" (the first register is 1)".to_string()));
        }
    }

    for (i, r) in m.registers.iter().enumerate() {
        let path = base.join("registers").join(i);
        channel_ref(file, p, &path, &r.channel, diags);
        if let Some(prev) = fed.insert(&r.channel, path.clone()) {
            diags.push(file.diag(
                &path.join("channel"),
                format!(
                    "channel {:?} is already read by {}; each channel has one source",
                    r.channel,
                    file.original(&prev)
                ),
            ));
        }
        let ty = r.data_type;
        if r.table.is_bits() && ty != DataType::Bool {
            diags.push(file.diag(&path.join("type"), format!("a {} table holds single bits: use type = \"bool\" (or read a holding/input register for {})", r.table.as_str(), ty.as_str())));
        }
        match (ty, r.count) {
            (DataType::String, None) => diags.push(file.diag(&path, "a string needs `count`: the number of registers it occupies (2 characters each)".to_string())),
            (DataType::String, Some(0)) => diags.push(file.diag(&path.join("count"), "a string occupies at least 1 register".to_string())),
            (DataType::String, Some(_)) => {}
            (_, Some(c)) => {
                let want = ty.registers().unwrap_or(1);
                if c != want {
                    diags.push(file.diag(&path.join("count"), format!("{} takes {want} register{} but count = {c}; set count = {want} or leave it out", ty.as_str(), if want == 1 { "" } else { "s" })));
                }
            }
            (_, None) => {}
        }
        if r.bit.is_some() && (ty != DataType::Bool || r.table.is_bits()) {
            diags.push(
                file.diag(
                    &path.join("bit"),
                    "`bit` selects one bit of a holding/input register and needs type = \"bool\""
                        .to_string(),
                ),
            );
        }
        if r.bit.is_some_and(|b| b > 15) {
            diags.push(file.diag(&path.join("bit"), "a register has bits 0 to 15".to_string()));
        }
        if r.order.is_some() && ty.registers().is_some_and(|w| w < 2) {
            diags.push(
                file.diag(
                    &path.join("order").clone(),
                    format!(
                        "`order` has no effect on a one-register {}; remove it",
                        ty.as_str()
                    ),
                )
                .warning(),
            );
        }
        if !r.scale.is_finite() || r.scale == 0.0 {
            diags.push(file.diag(
                &path.join("scale"),
                "must be a finite, non-zero number".to_string(),
            ));
        }
        if !r.offset.is_finite() {
            diags.push(file.diag(&path.join("offset"), "must be a finite number".to_string()));
        }
        if r.poll_interval_ms.is_some_and(|ms| ms < 10) {
            diags.push(file.diag(
                &path.join("poll_interval_ms"),
                "must be at least 10 ms".to_string(),
            ));
        }
        address_span(
            file,
            &path,
            r.table,
            r.address,
            u32::from(r.width()),
            one_based,
            &mut spans,
            diags,
        );
    }

    for (i, w) in m.waveforms.iter().enumerate() {
        let path = base.join("waveforms").join(i);
        channel_ref(file, p, &path, &w.channel, diags);
        if let Some(prev) = fed.insert(&w.channel, path.clone()) {
            diags.push(file.diag(
                &path.join("channel"),
                format!(
                    "channel {:?} is already read by {}; each channel has one source",
                    w.channel,
                    file.original(&prev)
                ),
            ));
        }
        if w.table.is_bits() {
            diags.push(file.diag(
                &path.join("table"),
                "waveform samples live in holding or input registers".to_string(),
            ));
        }
        if !matches!(
            w.data_type,
            DataType::U16 | DataType::I16 | DataType::U32 | DataType::I32 | DataType::F32
        ) {
            diags.push(file.diag(
                &path.join("type"),
                format!(
                    "{} is not a sample type; use u16, i16, u32, i32 or f32",
                    w.data_type.as_str()
                ),
            ));
        }
        if w.samples < 2 {
            diags.push(file.diag(
                &path.join("samples"),
                "a waveform block needs at least 2 samples".to_string(),
            ));
        }
        if !w.sample_rate_hz.is_finite() || w.sample_rate_hz <= 0.0 {
            diags.push(file.diag(
                &path.join("sample_rate_hz"),
                "must be greater than 0".to_string(),
            ));
        }
        if !w.scale.is_finite() || w.scale == 0.0 {
            diags.push(file.diag(
                &path.join("scale"),
                "must be a finite, non-zero number".to_string(),
            ));
        }
        address_span(
            file,
            &path,
            w.table,
            w.address,
            w.width(),
            one_based,
            &mut spans,
            diags,
        );
    }

    // Overlaps: two values reading the same register is almost always a typo.
    spans.sort_by_key(|s| (s.0, s.1));
    for pair in spans.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.0 == b.0 && b.1 <= a.2 {
            diags.push(file.diag(
                &b.3.join("address"),
                format!(
                    "{} registers {}..{} overlap {} ({}..{}); check the address and type",
                    b.0.as_str(),
                    shown(b.1, one_based),
                    shown(b.2, one_based),
                    file.original(&a.3),
                    shown(a.1, one_based),
                    shown(a.2, one_based)
                ),
            ));
        }
    }
    // Reads that touch forbidden addresses.
    for fr in &m.forbidden {
        let off = u32::from(one_based);
        let (fs, fe) = (
            u32::from(fr.start).saturating_sub(off),
            u32::from(fr.end).saturating_sub(off),
        );
        for s in spans.iter().filter(|s| s.0 == fr.table) {
            if s.1 <= fe && fs <= s.2 {
                diags.push(file.diag(
                    &s.3.join("address"),
                    format!(
                        "reads {} registers marked forbidden ({}..{} in modbus.forbidden)",
                        fr.table.as_str(),
                        fr.start,
                        fr.end
                    ),
                ));
            }
        }
    }
}

fn shown(wire: u32, one_based: bool) -> u32 {
    wire + u32::from(one_based)
}

#[allow(clippy::too_many_arguments)]
fn address_span(
    file: &SourceFile,
    path: &FieldPath,
    table: Table,
    address: u16,
    width: u32,
    one_based: bool,
    spans: &mut Vec<(Table, u32, u32, FieldPath)>,
    diags: &mut Vec<Diagnostic>,
) {
    if one_based && address == 0 {
        diags.push(file.diag(&path.join("address"), "0 is not an address when modbus.addressing = \"one_based\" (the first register is 1)".to_string()));
        return;
    }
    let first = u32::from(address) - u32::from(one_based);
    let last = first + width.max(1) - 1;
    if last > 65535 {
        diags.push(file.diag(&path.join("address"), format!("the value runs past the last Modbus address (65535): it needs {width} registers from {address}")));
        return;
    }
    spans.push((table, first, last, path.clone()));
}
