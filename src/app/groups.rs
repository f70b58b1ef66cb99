//! The running source groups of a [`Gateway`]: one task per group (a Modbus TCP
//! or serial device, an RTU bus, an MQTT broker connection), each under a child
//! token of the gateway's root token ([`crate::shutdown::Shutdown`]), so a reload can
//! stop one and shutdown all.
//! Which task reads a group is `crate::sources::group`.

use super::{Gateway, SOURCE_STOP_TIMEOUT};
use crate::ops::reload::{GroupKey, GroupSpec};
use crate::sources::DeviceSpec;
use crate::supervise::{supervise, Supervised, PANIC_RESTART_DELAY};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One source task and what it was built from.
pub(super) struct RunningGroup {
    pub(super) spec: GroupSpec,
    pub(super) cancel: CancellationToken,
    pub(super) handle: JoinHandle<()>,
}

impl Gateway {
    /// Starts the source task of one group under a child token of the root.
    pub(super) fn spawn_group(&mut self, spec: GroupSpec) -> RunningGroup {
        let cancel = self.shutdown.token().child_token();
        let name = spec.key.to_string();
        let alive = Arc::new(AtomicBool::new(true));
        if let Ok(mut s) = self.live.sources.write() {
            s.insert(name.clone(), alive.clone());
        }
        let Some(tx) = self.source_tx.clone() else {
            // Shutting down: nothing to start.
            alive.store(false, Relaxed);
            return RunningGroup {
                spec,
                cancel,
                handle: tokio::spawn(async {}),
            };
        };
        let devices: Vec<DeviceSpec> = spec
            .members
            .iter()
            .map(|m| DeviceSpec {
                config: m.config.clone(),
                profile: m.profile.clone(),
                stats: self.devices.entry(m.config.id.clone()).or_default().clone(),
            })
            .collect();
        let topic_errors = self.topic_errors(&spec.key);
        let (task_spec, task_cancel) = (spec.clone(), cancel.clone());
        let make = move || {
            crate::sources::group::task(
                &task_spec,
                devices.clone(),
                tx.clone(),
                task_cancel.clone(),
                topic_errors.clone(),
            )
        };
        // Started again after a panic, with `alive` honest throughout
        // (`crate::supervise`).
        let supervised = supervise(
            Supervised {
                kind: "source",
                name,
                up: Some(alive),
                cancel: cancel.clone(),
                delay: PANIC_RESTART_DELAY,
            },
            make,
        );
        let handle = self.shutdown.spawn(async move {
            supervised.await;
        });
        RunningGroup {
            spec,
            cancel,
            handle,
        }
    }

    /// The per-topic error counters of an MQTT group (the same ones across reloads);
    /// a throwaway for other kinds, which do not count per topic.
    fn topic_errors(&self, key: &GroupKey) -> Arc<crate::sources::mqtt::TopicErrors> {
        let GroupKey::Mqtt(broker) = key else {
            return Arc::default();
        };
        match self.live.mqtt_topic_errors.write() {
            Ok(mut m) => m.entry(broker.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }
}

/// Cancels one group and waits (bounded) for its task; aborts it after the timeout.
pub(super) async fn stop_group(key: &GroupKey, mut g: RunningGroup) {
    g.cancel.cancel();
    if tokio::time::timeout(SOURCE_STOP_TIMEOUT, &mut g.handle)
        .await
        .is_err()
    {
        tracing::warn!(source = %key, "Source did not stop in time; aborted it");
        g.handle.abort();
    }
}
