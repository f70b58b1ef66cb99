//! One root of cancellation for a running gateway, and its completion signal:
//! mini-redis's shutdown pattern (a broadcast to stop, and a signal that fires when
//! the last task has ended), built on tokio-util's `CancellationToken` and
//! `TaskTracker`.
//!
//! Stopping is ordered by the data flow, so the one root has two moments:
//!
//! - **stop** ([`Shutdown::token`], the root): SIGTERM or SIGINT. What *produces*
//!   data watches it: the source groups (each under a child token, so a reload can
//!   stop one), the model sync, the watchdog probes (they hold a source sender).
//! - **drained** ([`Shutdown::drained`], cancelled by [`Shutdown::pipeline_drained`],
//!   never before the root): the outbox writer has committed the last batch.
//!   What must outlive the drain watches it: the upstream forwarders (in a full
//!   outbox, room comes from their acks; they stop between batches, never between a
//!   write and its ack) and the status listener (so `/healthz` and `/metrics` watch
//!   the drain).
//!
//! The processor and the writer watch neither: each ends when its input channel
//! closes, which is what makes "nothing in flight is lost" hold without a timer.
//! Every task of the gateway is spawned through [`Shutdown::spawn`] (or
//! [`Shutdown::spawn_blocking`]); [`Shutdown::complete`] returns once all of them
//! have ended, so no task of the daemon outlives `Gateway::shutdown`.

use std::future::Future;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The gateway's root token, its drained signal and the tracker of all its tasks.
/// Cheap to clone; every clone is the same root.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    stop: CancellationToken,
    drained: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// The root: cancelled when the gateway is asked to stop. Give a stage a
    /// `child_token()` of it when the stage must also be stoppable on its own.
    pub fn token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Cancelled once the pipeline has drained into the outbox (always after the
    /// root).
    pub fn drained(&self) -> &CancellationToken {
        &self.drained
    }

    /// Asks every producing task to stop (the root token).
    pub fn begin(&self) {
        self.stop.cancel();
    }

    /// The writer has committed its last batch: the tasks that outlive the drain
    /// may stop. Implies [`Shutdown::begin`].
    pub fn pipeline_drained(&self) {
        self.stop.cancel();
        self.drained.cancel();
    }

    /// Spawns a task of the gateway on the current runtime, tracked.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Runs a blocking stage (the processor) on tokio's blocking pool, tracked.
    pub fn spawn_blocking<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.tasks.spawn_blocking(f)
    }

    /// How many tracked tasks have not ended yet.
    pub fn running(&self) -> usize {
        self.tasks.len()
    }

    /// The completion signal: no new task may be spawned, and this returns when
    /// every tracked task has ended.
    pub async fn complete(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// The two moments in order: a producer stops at the root, a drain-watcher only
    /// at `drained`, and `complete` returns only after both have ended.
    #[tokio::test]
    async fn producers_stop_at_the_root_and_drain_watchers_after_the_drain() {
        let s = Shutdown::new();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let o = order.clone();
        let stop = s.token().child_token();
        s.spawn(async move {
            stop.cancelled().await;
            o.lock().unwrap().push("producer");
        });
        let o = order.clone();
        let drained = s.drained().clone();
        s.spawn(async move {
            drained.cancelled().await;
            o.lock().unwrap().push("forwarder");
        });
        s.begin();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(*order.lock().unwrap(), vec!["producer"]);
        assert_eq!(s.running(), 1, "the drain watcher still runs");
        s.pipeline_drained();
        tokio::time::timeout(Duration::from_secs(5), s.complete())
            .await
            .expect("complete after every task ended");
        assert_eq!(*order.lock().unwrap(), vec!["producer", "forwarder"]);
        assert_eq!(s.running(), 0);
    }

    /// `complete` waits for blocking work too (the processor thread).
    #[tokio::test]
    async fn complete_waits_for_blocking_stages() {
        let s = Shutdown::new();
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        s.spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(50));
            d.fetch_add(1, Ordering::SeqCst);
        });
        s.pipeline_drained();
        s.complete().await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
        assert!(s.token().is_cancelled() && s.drained().is_cancelled());
    }
}
