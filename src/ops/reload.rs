//! What a reload (SIGHUP) changes: the source *groups* of the old and the new config,
//! compared by content, and the config sections that only a restart applies.
//!
//! A group is what one source task reads: a Modbus TCP device, an ASCII serial device,
//! a whole Modbus RTU bus (all its units share the port) or a whole MQTT broker
//! connection (all its subscriptions share the session). A group restarts when anything
//! it was built from changed: a member's `[[devices]]` entry, the *contents* of a
//! member's hardware profile, the serial port or broker settings. Everything else keeps
//! running untouched; the outbox, the pipeline and upstream cursors are never touched.
//!
//! Pure functions only: `app.rs` stops and starts the tasks.

use crate::config::{DeviceConfig, GatewayConfig, Loaded, MqttBrokerConfig, SerialPortConfig};
use crate::profiles::LoadedProfile;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub use crate::sources::group::GroupKey;

/// One device of a group: its config entry and its validated profile.
#[derive(Debug, Clone)]
pub struct Member {
    pub config: DeviceConfig,
    pub profile: Arc<LoadedProfile>,
}

impl PartialEq for Member {
    /// Same entry and same profile *contents* (a profile moved to another file but
    /// otherwise identical does not restart the device).
    fn eq(&self, other: &Member) -> bool {
        self.config == other.config && self.profile.profile == other.profile.profile
    }
}

/// Everything a source task is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    pub key: GroupKey,
    /// In config order.
    pub members: Vec<Member>,
    /// The port of a serial device or RTU bus.
    pub port: Option<SerialPortConfig>,
    /// The broker of an MQTT group.
    pub broker: Option<MqttBrokerConfig>,
    /// The gateway id (part of the default MQTT client id).
    pub gateway_id: String,
}

/// The profile name a device entry refers to (file stem).
pub fn profile_key(d: &DeviceConfig) -> String {
    crate::config::profile_name(&d.profile)
}

/// The groups of the runnable devices of a loaded config. Devices whose profile,
/// port or broker is missing are left out (validation has reported them).
pub fn groups(loaded: &Loaded) -> BTreeMap<GroupKey, GroupSpec> {
    let config = &loaded.config;
    let mut out: BTreeMap<GroupKey, GroupSpec> = BTreeMap::new();
    for d in &loaded.runnable {
        let Some(profile) = loaded.profiles.get(&profile_key(d)) else {
            continue;
        };
        let Some((key, port, broker)) = crate::sources::group::key_of(d, config) else {
            continue;
        };
        let member = Member {
            config: d.clone(),
            profile: Arc::new(profile.clone()),
        };
        out.entry(key.clone())
            .or_insert_with(|| GroupSpec {
                key,
                members: Vec::new(),
                port,
                broker,
                gateway_id: config.gateway.id.clone(),
            })
            .members
            .push(member);
    }
    out
}

/// What a reload does to the source tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Groups to stop: removed or changed.
    pub stop: Vec<GroupKey>,
    /// Groups to start: added or changed (a changed group is in both lists).
    pub start: Vec<GroupKey>,
    /// Groups that keep running untouched.
    pub unchanged: Vec<GroupKey>,
}

impl ReloadPlan {
    pub fn is_empty(&self) -> bool {
        self.stop.is_empty() && self.start.is_empty()
    }
}

/// Compares two sets of groups by content.
pub fn plan(
    old: &BTreeMap<GroupKey, GroupSpec>,
    new: &BTreeMap<GroupKey, GroupSpec>,
) -> ReloadPlan {
    let mut p = ReloadPlan::default();
    for (key, spec) in old {
        match new.get(key) {
            Some(n) if n == spec => p.unchanged.push(key.clone()),
            Some(_) => {
                p.stop.push(key.clone());
                p.start.push(key.clone());
            }
            None => p.stop.push(key.clone()),
        }
    }
    for key in new.keys() {
        if !old.contains_key(key) {
            p.start.push(key.clone());
        }
    }
    p
}

/// Config sections that changed but only apply at the next restart (the outbox file
/// and its bounds, upstreams and their cursors, the pipeline, the listener, logging).
/// A reload reports them rather than half-applying them.
pub fn restart_only_changes(old: &GatewayConfig, new: &GatewayConfig) -> Vec<&'static str> {
    // Debug output compares every field without requiring PartialEq of every section
    // (secrets show where they come from, never their value).
    let same = |a: &dyn fmt::Debug, b: &dyn fmt::Debug| format!("{a:?}") == format!("{b:?}");
    let mut changed = Vec::new();
    if !same(&old.gateway, &new.gateway) {
        changed.push("gateway");
    }
    if old.outbox != new.outbox {
        changed.push("outbox");
    }
    if old.upstreams != new.upstreams {
        changed.push("upstreams");
    }
    if old.notify != new.notify {
        changed.push("notify");
    }
    if !new.notify.sinks.is_empty() {
        let regrouped = new.devices.iter().any(|d| {
            old.devices
                .iter()
                .any(|o| o.id == d.id && (o.group != d.group || o.location != d.location))
        });
        if regrouped {
            changed.push("devices.group (read by notify)");
        }
    }
    if old.pipeline != new.pipeline {
        changed.push("pipeline");
    }
    if old.models != new.models {
        changed.push("models");
    }
    if old.http != new.http {
        changed.push("http");
    }
    if !same(&old.logging, &new.logging) {
        changed.push("logging");
    }
    // Parts of source sections that the upstreams also read, at start only: the
    // cloud MQTT upstream's broker entry, and device locations (the `sensors` rows
    // of the TimescaleDB upstream). The sources apply their part; the upstreams
    // keep what they started with until a restart.
    if let Some(up) = &new.upstreams.mqtt {
        let entry = |c: &GatewayConfig| c.mqtt_brokers.get(&up.broker).map(|b| format!("{b:?}"));
        if old.upstreams.mqtt.as_ref().map(|o| &o.broker) == Some(&up.broker)
            && entry(old) != entry(new)
        {
            changed.push("mqtt_brokers (the broker of upstreams.mqtt)");
        }
    }
    if new.upstreams.timescale.is_some() {
        let moved = new.devices.iter().any(|d| {
            old.devices
                .iter()
                .any(|o| o.id == d.id && o.location != d.location)
        });
        if moved {
            changed.push("devices.location (sent by upstreams.timescale)");
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(dir: &std::path::Path, devices: &str) -> Loaded {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = format!(
            "[gateway]\nid = \"gw\"\nstate_dir = \"{}\"\nprofile_dir = \"{}\"\n\
             [serial_ports.bus]\npath = \"/dev/null\"\n{devices}",
            dir.display(),
            dir.join("profiles").display()
        );
        if !dir.join("profiles").exists() {
            std::fs::create_dir(dir.join("profiles")).unwrap();
            std::fs::copy(
                repo.join("hardware-profiles/acme-vt420.toml"),
                dir.join("profiles/acme-vt420.toml"),
            )
            .unwrap();
        }
        let path = dir.join("edgegw.toml");
        std::fs::write(&path, text).unwrap();
        match crate::config::load(&path) {
            Ok(l) => l,
            Err(d) => panic!("{d:?}"),
        }
    }

    const TCP: &str = "[[devices]]\nid = \"a\"\nprofile = \"acme-vt420\"\n[devices.modbus_tcp]\nhost = \"127.0.0.1\"\n\
                       [[devices]]\nid = \"b\"\nprofile = \"acme-vt420\"\n[devices.modbus_tcp]\nhost = \"127.0.0.2\"\n";
    const RTU: &str = "[[devices]]\nid = \"r1\"\nprofile = \"acme-vt420\"\n[devices.modbus_rtu]\nport = \"bus\"\nunit_id = 1\n\
                       [[devices]]\nid = \"r2\"\nprofile = \"acme-vt420\"\n[devices.modbus_rtu]\nport = \"bus\"\nunit_id = 2\n";

    #[test]
    fn only_changed_and_added_groups_restart() {
        let dir = tempfile::tempdir().unwrap();
        let old = groups(&load(dir.path(), &format!("{TCP}{RTU}")));
        assert_eq!(old.len(), 3, "{old:?}");
        // b moves to another host, c is added, the RTU bus is untouched.
        let changed = TCP.replace("127.0.0.2", "127.0.0.3")
            + RTU
            + "[[devices]]\nid = \"c\"\nprofile = \"acme-vt420\"\n[devices.modbus_tcp]\nhost = \"h\"\n";
        let new = groups(&load(dir.path(), &changed));
        let p = plan(&old, &new);
        assert_eq!(p.stop, vec![GroupKey::ModbusTcp("b".into())]);
        assert_eq!(
            p.start,
            vec![
                GroupKey::ModbusTcp("b".into()),
                GroupKey::ModbusTcp("c".into())
            ]
        );
        assert_eq!(
            p.unchanged,
            vec![
                GroupKey::ModbusTcp("a".into()),
                GroupKey::ModbusRtu("bus".into())
            ]
        );
    }

    #[test]
    fn a_bus_restarts_when_one_unit_changes_and_a_profile_edit_restarts_its_users() {
        let dir = tempfile::tempdir().unwrap();
        let old = groups(&load(dir.path(), &format!("{TCP}{RTU}")));
        let new = groups(&load(
            dir.path(),
            &format!("{TCP}{}", RTU.replace("unit_id = 2", "unit_id = 3")),
        ));
        assert_eq!(
            plan(&old, &new).stop,
            vec![GroupKey::ModbusRtu("bus".into())]
        );

        // Same config text, edited profile: every device using it restarts.
        let path = dir.path().join("profiles/acme-vt420.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("Overall velocity RMS", "Overall velocity RMS (edited)"),
        )
        .unwrap();
        let edited = groups(&load(dir.path(), &format!("{TCP}{RTU}")));
        let p = plan(&old, &edited);
        assert_eq!(p.unchanged, Vec::<GroupKey>::new(), "{p:?}");
        assert_eq!(p.stop.len(), 3);
        assert!(plan(&edited, &edited).is_empty());
    }

    #[test]
    fn sections_that_need_a_restart_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = load(dir.path(), TCP).config;
        let mut b = a.clone();
        assert!(restart_only_changes(&a, &b).is_empty());
        b.http.listen = "127.0.0.1:1".into();
        b.outbox.max_size_mb += 1;
        assert_eq!(restart_only_changes(&a, &b), vec!["outbox", "http"]);
    }

    /// Source sections the upstreams also read at start: a reload applies them to
    /// the sources and reports them as restart-only for the upstreams.
    #[test]
    fn broker_and_location_changes_the_upstreams_read_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = load(dir.path(), TCP).config;
        a.upstreams = toml::from_str(
            "[timescale]\nurl = \"postgres://edgegw@db/x\"\n[mqtt]\nbroker = \"cloud\"\n",
        )
        .unwrap();
        a.mqtt_brokers =
            toml::from_str("[cloud]\nhost = \"10.0.0.1\"\n[plant]\nhost = \"10.0.0.2\"\n").unwrap();
        let mut b = a.clone();
        // The plant broker is the sources' alone: the source group restarts, and
        // nothing else needs to.
        b.mqtt_brokers.get_mut("plant").unwrap().port = 1884;
        assert!(restart_only_changes(&a, &b).is_empty());
        b.mqtt_brokers.get_mut("cloud").unwrap().port = 8883;
        b.devices[0].location = "Hall 2".into();
        assert_eq!(
            restart_only_changes(&a, &b),
            vec![
                "mqtt_brokers (the broker of upstreams.mqtt)",
                "devices.location (sent by upstreams.timescale)"
            ]
        );
    }
}
