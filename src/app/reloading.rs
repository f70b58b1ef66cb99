//! Applying a reload to a running [`Gateway`]: stop the source groups that were
//! removed or changed, start the changed and added ones, register their channels
//! with the processor first. What to restart is decided by the pure functions of
//! [`crate::ops::reload`]; the SIGHUP handling around it is `ops::daemon`.

use super::groups::stop_group;
use super::Gateway;
use crate::config::Loaded;
use crate::ops::reload::{self, GroupKey, GroupSpec, ReloadPlan};
use crate::pipeline::stage::{channel_limits, Control};
use std::collections::{BTreeMap, BTreeSet};

/// What a reload did.
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    pub plan: ReloadPlan,
    /// Changed sections that apply only at the next restart.
    pub restart_needed: Vec<&'static str>,
}

impl Gateway {
    /// Applies a new, valid config: stops the source groups that were removed or
    /// changed, starts the changed and added ones. Everything else keeps running.
    pub async fn reload(&mut self, new: &Loaded) -> ReloadReport {
        let mut new_groups = reload::groups(new);
        // The gateway id is restart-only; keep the running one in every group.
        for g in new_groups.values_mut() {
            g.gateway_id.clone_from(&self.config.gateway.id);
        }
        let old_groups: BTreeMap<GroupKey, GroupSpec> = self
            .groups
            .iter()
            .map(|(k, g)| (k.clone(), g.spec.clone()))
            .collect();
        let plan = reload::plan(&old_groups, &new_groups);
        let restart_needed = reload::restart_only_changes(&self.config, &new.config);

        for key in &plan.stop {
            if let Some(g) = self.groups.remove(key) {
                stop_group(key, g).await;
            }
            if let Ok(mut s) = self.live.sources.write() {
                s.remove(&key.to_string());
            }
        }
        // Counters survive a restart of their device; removed devices disappear.
        let wanted: BTreeSet<&String> = new_groups
            .values()
            .flat_map(|g| g.members.iter().map(|m| &m.config.id))
            .collect();
        self.devices.retain(|id, _| wanted.contains(id));
        for id in wanted {
            self.devices.entry(id.clone()).or_default();
        }
        if let Ok(mut d) = self.live.devices.write() {
            d.clone_from(&self.devices);
        }
        for key in &plan.start {
            let Some(spec) = new_groups.remove(key) else {
                continue;
            };
            for (sensor_id, limits) in channel_limits(&spec) {
                // Sent before the source starts, so the processor applies the limits
                // before the device's first batch (it drains controls per batch).
                let _ = self.control.send(Control::Limits(sensor_id, limits));
            }
            for m in &spec.members {
                let _ = self.control.send(Control::Device(
                    m.config.id.clone(),
                    m.config.detection_settings(&new.config.pipeline),
                ));
            }
            let running = self.spawn_group(spec);
            self.groups.insert(key.clone(), running);
        }
        ReloadReport {
            plan,
            restart_needed,
        }
    }
}
