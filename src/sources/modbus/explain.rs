//! `edgegw check --explain`: the Modbus read plan of every runnable Modbus TCP and RTU
//! device of a loaded config, as text (`plan_device`, then `explain`, of `plan.rs`).
//! Pure: it plans from the config and profiles, it opens no connection.

use crate::config::Loaded;
use crate::ops::reload;

/// `edgegw check --explain`: the Modbus read plan of every runnable device.
pub fn plans(loaded: &Loaded) -> String {
    use crate::config::Transport;
    let mut out = String::new();
    for d in &loaded.runnable {
        if !matches!(
            d.transport(),
            Some(Transport::ModbusTcp(_) | Transport::ModbusRtu(_))
        ) {
            continue;
        }
        let Some(p) = loaded.profiles.get(&reload::profile_key(d)) else {
            continue;
        };
        out.push_str(&format!("\ndevice {} (profile {}):\n", d.id, p.name));
        match crate::sources::modbus::plan_device(d, &p.profile) {
            Ok(plan) => out.push_str(&crate::sources::modbus::explain(&plan)),
            Err(e) => out.push_str(&format!("  cannot plan: {e}\n")),
        }
    }
    out
}
