//! The sync task: [`ModelSync::spawn`] runs syncs on a jittered interval and on
//! request, [`ModelSyncHandle`] asks for one and stops it, and [`start`] is the
//! daemon's model set-up.

use super::{ModelSync, SyncCounterValues, SyncCounters, SyncError, SyncReport};
use crate::config::GatewayConfig;
use crate::inference::SharedRegistry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

impl ModelSync {
    /// Runs syncs at the configured interval (jittered) and on request, as a task
    /// of `shutdown`, until the gateway stops or [`ModelSyncHandle::stop`]. The first
    /// sync starts at once.
    pub fn spawn(
        self,
        interval: Duration,
        shutdown: &crate::shutdown::Shutdown,
    ) -> ModelSyncHandle {
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<Result<SyncReport, SyncError>>>(4);
        let counters = self.counters.clone();
        let cancel = shutdown.token().child_token();
        let token = cancel.clone();
        let mut sync = self;
        let join = shutdown.spawn(async move {
            // The first sync at once, before any request is served, so that a
            // request always sees a state at least as new as the start-up sync.
            tokio::select! {
                _ = token.cancelled() => return,
                _ = sync.sync_once() => {}
            }
            let mut next = tokio::time::Instant::now() + jittered(interval);
            let mut requests_open = true;
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    req = rx.recv(), if requests_open => {
                        let Some(reply) = req else {
                            requests_open = false;
                            continue;
                        };
                        tokio::select! {
                            _ = token.cancelled() => break,
                            r = sync.sync_once() => { let _ = reply.send(r); }
                        }
                    }
                    _ = tokio::time::sleep_until(next) => {
                        tokio::select! {
                            _ = token.cancelled() => break,
                            _ = sync.sync_once() => {}
                        }
                        next = tokio::time::Instant::now() + jittered(interval);
                    }
                }
            }
        });
        ModelSyncHandle {
            tx,
            counters,
            cancel,
            join: Some(join),
        }
    }
}

/// The running sync task. Dropping it stops the task.
#[derive(Debug)]
pub struct ModelSyncHandle {
    tx: mpsc::Sender<oneshot::Sender<Result<SyncReport, SyncError>>>,
    counters: Arc<SyncCounters>,
    cancel: CancellationToken,
    join: Option<tokio::task::JoinHandle<()>>,
}

impl ModelSyncHandle {
    /// Runs a sync now (after the one in progress, if any) and returns its report.
    pub async fn sync_now(&self) -> Result<SyncReport, SyncError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).await.map_err(|_| SyncError::Stopped)?;
        rx.await.map_err(|_| SyncError::Stopped)?
    }

    pub fn counters(&self) -> SyncCounterValues {
        self.counters.values()
    }

    /// The live counters themselves, for the metrics endpoint.
    pub fn shared_counters(&self) -> Arc<SyncCounters> {
        self.counters.clone()
    }

    /// Stops the task and waits for it (an interrupted download leaves nothing).
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(j) = self.join.take() {
            let _ = j.await;
        }
    }
}

impl Drop for ModelSyncHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The daemon's model set-up: cached bundles into `registry` at once (no network),
/// then the sync task when `[models.s3]` is configured. A cache that cannot be
/// opened is logged and the gateway runs on the built-in defaults.
pub async fn start(
    config: &GatewayConfig,
    registry: &SharedRegistry,
    shutdown: &crate::shutdown::Shutdown,
) -> Option<ModelSyncHandle> {
    let dir = config.models.cache_dir(&config.gateway.state_dir);
    if config.models.s3.is_none() && !dir.exists() {
        // Nothing cached and nothing to sync: the built-in defaults, no directory.
        return None;
    }
    let config = config.clone();
    let reg = registry.clone();
    let sync = tokio::task::spawn_blocking(move || {
        let mut sync = ModelSync::new_waiting(&config, reg)?;
        sync.load_cached();
        Ok::<_, SyncError>((sync, config))
    })
    .await;
    let (sync, config) = match sync {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "Model cache unavailable; using the built-in model bundles.");
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "Model cache set-up failed; using the built-in model bundles.");
            return None;
        }
    };
    let s3 = config.models.s3.as_ref()?;
    if let Err(e) = &sync.client {
        tracing::error!(error = %e, "Model sync cannot start; using cached and built-in bundles.");
    }
    let interval = Duration::from_secs(s3.interval_secs.max(1));
    Some(sync.spawn(interval, shutdown))
}

/// `interval` +- 10 %.
pub(super) fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * fastrand::f64())
}
