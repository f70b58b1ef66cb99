//! Stopping a [`Gateway`] under its one root ([`crate::shutdown::Shutdown`]): stop
//! the producers, let the pipeline drain into the outbox, then give the drained
//! signal and wait for every task of the gateway to end.

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
        let (processor, batches) = self.processor.await.context("the processor task failed")?;
        let writer = self.writer.await.context("the outbox writer task failed")?;
        tracing::info!(
            committed = writer.records_committed,
            abandoned = writer.records_abandoned,
            "Pipeline drained into the outbox"
        );
        // Drained: the forwarders stop between batches (never between a write and
        // its ack), the status listener stops serving.
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
        Ok(ShutdownReport {
            processor: *processor.counters(),
            batches,
            writer,
            sources_aborted: aborted,
        })
    }
}
