//! Stopping a [`Gateway`] under its one root ([`crate::shutdown::Shutdown`]): stop
//! the producers, let the pipeline drain into the outbox, then give the drained
//! signal and wait for every task of the gateway to end; last, mark the outbox's
//! clean shutdown (the next open skips its whole-file check).

use super::{Gateway, DRAINED_STOP_TIMEOUT, SOURCE_STOP_TIMEOUT};
use crate::outbox::WriterReport;
use crate::pipeline::ProcessorCounters;
use anyhow::Context;
use std::sync::atomic::Ordering::Relaxed;

/// What happened, for the log line at exit and the demo's report.
#[derive(Debug, Clone, Default)]
pub struct ShutdownReport {
    pub processor: ProcessorCounters,
    pub batches: u64,
    pub writer: WriterReport,
    /// Sources that did not stop within the timeout (aborted).
    pub sources_aborted: bool,
}

impl Gateway {
    /// Orderly shutdown under the one root: stop, drain, then the rest.
    pub async fn shutdown(mut self) -> anyhow::Result<ShutdownReport> {
        self.live.ready.store(false, Relaxed);
        // Stop: the sources, the model sync and the probes watch the root.
        self.shutdown.begin();
        if let Some(models) = self.models.take() {
            models.stop().await;
        }
        let deadline = tokio::time::Instant::now() + SOURCE_STOP_TIMEOUT;
        let mut aborted = false;
        for (key, g) in self.groups.iter_mut() {
            if tokio::time::timeout_at(deadline, &mut g.handle)
                .await
                .is_err()
            {
                tracing::warn!(source = %key, "Source did not stop in time; its last poll is lost");
                g.handle.abort();
                aborted = true;
            }
        }
        // With the sources gone, this was the last sender: the processor drains and ends.
        self.source_tx.take();
        let processor = self.processor.await.context("the processor task failed");
        let writer = self.writer.await.context("the outbox writer task failed");
        if let Ok(w) = &writer {
            tracing::info!(
                committed = w.records_committed,
                abandoned = w.records_abandoned,
                "Pipeline drained into the outbox"
            );
        }
        // Drained (also when a stage failed, so nothing waits on it for good): the
        // forwarders stop between batches (never between a write and its ack), the
        // status listener stops serving.
        self.shutdown.pipeline_drained();
        if let Some(f) = self.forwarders.take() {
            f.finish().await;
        }
        if tokio::time::timeout(DRAINED_STOP_TIMEOUT, self.shutdown.complete())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.shutdown.running(),
                "Some tasks did not stop after the drain"
            );
        }
        // Everything that writes to the outbox has ended: mark the clean shutdown, so
        // the next start skips the whole-file integrity check. A task still running
        // (reported above) that writes after this withdraws the mark first.
        match self.outbox.mark_clean_shutdown().await {
            Ok(true) => tracing::info!(
                path = %self.outbox.path().display(),
                "Outbox closed cleanly: the next start skips its whole-file check."
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e,
                "Could not mark the outbox closed cleanly: the next start checks the whole file."),
        }
        let ((processor, batches), writer) = (processor?, writer?);
        Ok(ShutdownReport {
            processor: *processor.counters(),
            batches,
            writer,
            sources_aborted: aborted,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::app::Gateway;
    use crate::record::SensorType;
    use crate::sources::{Ack, ChannelId, SourceBatch, Value};
    use std::time::Duration;

    /// One root, ordered by the data flow, with the upstream down: a reading sent
    /// just before the stop is committed (its ack fires), the forwarder stuck in its
    /// backoff stops at the drained signal instead of holding the shutdown, the
    /// record stays pending in the outbox for the next start, and when `shutdown`
    /// returns no task of the gateway is left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_drains_stops_a_retrying_forwarder_and_leaves_no_task() {
        let dir = tempfile::tempdir().unwrap();
        // A port nobody listens on: the Redis forwarder fails and backs off.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let path = dir.path().join("edgegw.toml");
        std::fs::write(
            &path,
            format!(
                "[gateway]\nid = \"gw-stop\"\nstate_dir = {:?}\nprofile_dir = {:?}\n\
                 [upstreams.redis]\nurl = \"redis://127.0.0.1:{port}/0\"\n\
                 [upstreams.redis.delivery]\nbackoff_initial_ms = 5000\nbackoff_max_ms = 60000\ntimeout_ms = 500\n",
                dir.path().display().to_string(),
                dir.path().display().to_string(),
            ),
        )
        .unwrap();
        let loaded = crate::config::load(&path).expect("config");
        let gw = Gateway::start(&loaded).await.expect("start");
        let tasks = gw.tasks().clone();
        assert!(tasks.running() >= 2, "writer, processor and forwarder run");

        let ch = ChannelId::new("m1", "temp", SensorType::Temperature, "°C");
        let (ack, committed) = Ack::new();
        gw.source_sender()
            .unwrap()
            .send(SourceBatch {
                readings: vec![ch.reading(crate::record::now_us(), Value::Scalar(41.5))],
                ack: Some(ack),
            })
            .await
            .unwrap();
        // Let the forwarder fail once and enter its 5 s backoff.
        tokio::time::sleep(Duration::from_millis(800)).await;

        let outbox = gw.outbox().clone();
        let stopped = tokio::time::timeout(Duration::from_secs(4), gw.shutdown())
            .await
            .expect("the forwarder's backoff must not hold the shutdown")
            .expect("shutdown");
        // The reading and the partial hourly summary flushed at the stop.
        assert_eq!(stopped.writer.records_committed, 2, "{stopped:?}");
        assert!(
            committed.await.is_ok(),
            "the reading's ack fired after its commit"
        );
        assert_eq!(
            tasks.running(),
            0,
            "no task of the gateway outlives shutdown"
        );
        assert!(tasks.token().is_cancelled() && tasks.drained().is_cancelled());
        let stats = outbox.stats().await.unwrap();
        let redis = stats.upstreams.iter().find(|u| u.name == "redis").unwrap();
        assert_eq!(redis.pending, 2, "kept for the next start: {stats:?}");
        // The stop marked a clean shutdown: the next open skips the whole-file check.
        drop(outbox);
        let reopened = crate::outbox::Outbox::open(
            &dir.path().join("outbox.db"),
            &loaded.config.outbox,
            "gw-stop",
            &["redis"],
        )
        .expect("reopen");
        assert_eq!(
            reopened.open_check(),
            crate::outbox::OpenCheck::SkippedAfterCleanClose
        );
    }
}
