//! The writer stage: the end of the pipeline, the only task that appends.
//!
//! It groups incoming [`OutboxBatch`]es into one transaction (up to about
//! `batch_max_records`), commits through [`OutboxHandle`] (blocking pool, never on a
//! runtime thread), then — and only then — fires every source [`Ack`] of the group and
//! wakes the forwarders. What is already queued always joins the group. When the queue
//! is empty, a group that carries an ack is committed at once: its source (MQTT QoS 1)
//! is waiting, and its broker sends no more than an in-flight window (Mosquitto: 20)
//! of messages before it sees their acks, so lingering would cap the ingest at a
//! window per linger. A group without acks (polled Modbus, which nobody is told about)
//! lingers up to `batch_linger_ms` for more, so a steady poll load still makes few,
//! large transactions. When the outbox is
//! full (`block`, or the disk) it keeps the group and retries with backoff; meanwhile it
//! reads nothing, so the bounded channel fills and the sources slow down.
//!
//! Forwarders wait on the shared `Notify` without losing wake-ups like this:
//! ```ignore
//! let notified = notify.notified();
//! tokio::pin!(notified);
//! notified.as_mut().enable();          // register before looking
//! let batch = outbox.peek(name, 500).await?;
//! if batch.is_empty() { notified.await }  // (with a timeout, as a safety net)
//! ```

use super::error::OutboxError;
use super::handle::OutboxHandle;
use super::settings::OutboxSettings;
use crate::record::Record;
use crate::retry::Backoff;
use crate::sources::Ack;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// What the pipeline sends to the writer: records plus the acks of the source batches
/// they were made from.
#[derive(Debug, Default)]
pub struct OutboxBatch {
    pub records: Vec<Record>,
    pub acks: Vec<Ack>,
    /// State table entries committed with the records (later batches win per key):
    /// pipeline state that must match what was stored, such as open summary buckets.
    pub state: Vec<(String, Vec<u8>)>,
}

/// What the writer did, returned when its input closes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriterReport {
    pub records_committed: u64,
    pub transactions: u64,
    /// Records given up at shutdown because the outbox stayed full; their acks were
    /// not fired, so sources that acknowledge their input will see them again.
    pub records_abandoned: u64,
}

const BACKOFF_START: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// After the input closed, a full outbox gets this long before the writer gives up, so
/// a shutdown with a full disk ends well within systemd's stop timeout (20 s in the
/// shipped unit, the other stages need some of it).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the writer until `rx` closes; commits what it has, then returns.
pub async fn run_writer(
    outbox: OutboxHandle,
    mut rx: mpsc::Receiver<OutboxBatch>,
    settings: OutboxSettings,
    notify: Arc<Notify>,
) -> WriterReport {
    let linger = Duration::from_millis(settings.batch_linger_ms);
    let linger_with_acks = settings.linger_with_acks;
    let max_records = settings.batch_max_records.max(1);
    let mut report = WriterReport::default();
    loop {
        let Some(first) = rx.recv().await else { break };
        let mut records = first.records;
        let mut acks = first.acks;
        let mut state = first.state;
        let deadline = Instant::now() + linger;
        let mut closed = false;
        while records.len() < max_records {
            // Take what is already queued without waiting; then commit at once if a
            // source waits on this commit, else linger for more.
            let next = match rx.try_recv() {
                Ok(b) => Some(b),
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    None
                }
                Err(mpsc::error::TryRecvError::Empty) if !acks.is_empty() && !linger_with_acks => {
                    None
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(b)) => Some(b),
                        Ok(None) => {
                            closed = true;
                            None
                        }
                        Err(_) => None,
                    }
                }
            };
            match next {
                Some(b) => {
                    records.extend(b.records);
                    acks.extend(b.acks);
                    state.extend(b.state);
                }
                None => break,
            }
        }
        commit(
            &outbox,
            &rx,
            records,
            latest(state),
            acks,
            &notify,
            &mut report,
        )
        .await;
        if closed {
            break;
        }
    }
    tracing::info!(
        path = %outbox.path().display(),
        records = report.records_committed,
        transactions = report.transactions,
        abandoned = report.records_abandoned,
        "Outbox writer finished: its input closed."
    );
    report
}

/// The last entry per key, in first-seen order.
fn latest(state: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    if state.len() < 2 {
        return state;
    }
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out: Vec<(String, Vec<u8>)> = Vec::with_capacity(state.len());
    for (k, v) in state {
        match at.get(&k) {
            Some(&i) => out[i].1 = v,
            None => {
                at.insert(k.clone(), out.len());
                out.push((k, v));
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn commit(
    outbox: &OutboxHandle,
    rx: &mpsc::Receiver<OutboxBatch>,
    mut records: Vec<Record>,
    mut state: Vec<(String, Vec<u8>)>,
    acks: Vec<Ack>,
    notify: &Notify,
    report: &mut WriterReport,
) {
    let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
    let mut failures: u32 = 0;
    let mut give_up_at: Option<Instant> = None;
    loop {
        let n = records.len() as u64;
        let (back, back_state, res) = if records.is_empty() && state.is_empty() {
            (records, state, Ok(Vec::new()))
        } else {
            outbox.append_with_state(records, state).await
        };
        records = back;
        state = back_state;
        match res {
            Ok(_) => {
                if failures > 0 {
                    tracing::info!(records = n, "Outbox accepts records again.");
                }
                report.records_committed += n;
                report.transactions += u64::from(n > 0);
                for ack in acks {
                    ack.committed();
                }
                if n > 0 {
                    notify.notify_waiters();
                }
                return;
            }
            Err(OutboxError::Encode {
                index,
                detail,
                path,
            }) => {
                // Cannot happen with MessagePack for the shared record types; if it
                // does, drop that one record rather than the group.
                tracing::error!(path = %path.display(), index, problem = %detail,
                    "Record cannot be encoded: dropped it.");
                if index < records.len() {
                    records.remove(index);
                }
                continue;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures % 50 == 0 {
                    if e.is_full() {
                        tracing::warn!(error = %e, records = n, attempts = failures,
                            "Outbox full: holding the batch and retrying; the pipeline is pushed back.");
                    } else {
                        tracing::error!(error = %e, records = n, attempts = failures,
                            "Outbox write failed: retrying.");
                    }
                }
                if rx.is_closed() {
                    let deadline =
                        *give_up_at.get_or_insert_with(|| Instant::now() + SHUTDOWN_GRACE);
                    if Instant::now() >= deadline {
                        tracing::error!(error = %e, records = n,
                            "Shutting down with a full or failing outbox: these records were \
                             not stored and their sources were not acknowledged.");
                        report.records_abandoned += n;
                        return;
                    }
                }
                let delay = backoff.next_delay();
                match give_up_at {
                    Some(d) => {
                        tokio::time::sleep(delay.min(d.saturating_duration_since(Instant::now())))
                            .await
                    }
                    None => tokio::time::sleep(delay).await,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::encode::tests::reading;
    use crate::outbox::Outbox;
    use std::time::Instant as StdInstant;

    fn batch(from: i64, to: i64, ack: Option<Ack>) -> OutboxBatch {
        OutboxBatch {
            records: (from..to).map(reading).collect(),
            acks: ack.into_iter().collect(),
            state: Vec::new(),
        }
    }

    fn stored(outbox: &OutboxHandle) -> u64 {
        outbox.blocking(|o| o.stats().expect("stats").total_records)
    }

    fn start(
        linger_ms: u64,
        linger_with_acks: bool,
    ) -> (tempfile::TempDir, OutboxHandle, OutboxSettings) {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = OutboxSettings {
            batch_linger_ms: linger_ms,
            linger_with_acks,
            ..OutboxSettings::default()
        };
        let outbox =
            Outbox::open(&dir.path().join("outbox.db"), &settings, "gw", &["a"]).expect("open");
        (dir, OutboxHandle::new(outbox), settings)
    }

    /// A source waiting on its ack (MQTT QoS 1) is not held for the linger; batches
    /// nobody waits on (polled Modbus) still linger and share one transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_with_an_ack_is_committed_at_once_one_without_lingers() {
        let (_dir, outbox, settings) = start(3000, false);
        let (tx, rx) = mpsc::channel(8);
        let writer = tokio::spawn(run_writer(outbox.clone(), rx, settings, Arc::default()));

        let sent = StdInstant::now();
        let (ack, committed) = Ack::new();
        tx.send(batch(0, 10, Some(ack))).await.expect("send");
        tokio::time::timeout(Duration::from_millis(1500), committed)
            .await
            .expect("committed long before the 3 s linger")
            .expect("ack fired after the commit");
        let waited = sent.elapsed();
        assert_eq!(stored(&outbox), 10);

        // Without acks: two batches 100 ms apart wait for the linger, together.
        tx.send(batch(10, 20, None)).await.expect("send");
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(batch(20, 30, None)).await.expect("send");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(stored(&outbox), 10, "batches without acks linger");
        // An acked batch joining the lingering group ends the linger at once.
        let (ack, committed) = Ack::new();
        tx.send(batch(30, 40, Some(ack))).await.expect("send");
        tokio::time::timeout(Duration::from_millis(1500), committed)
            .await
            .expect("the ack ends the linger")
            .expect("ack fired");
        assert_eq!(stored(&outbox), 40);

        drop(tx);
        let report = writer.await.expect("writer");
        assert_eq!(report.records_committed, 40);
        assert_eq!(
            report.transactions, 2,
            "the acked batch alone, then the two lingering ones with the next acked one: {report:?} (first ack after {waited:?})"
        );
    }

    /// The benchmark switch restores the old behaviour: an acked batch lingers too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bench_switch_lingers_with_acks_as_before() {
        let (_dir, outbox, settings) = start(400, true);
        let (tx, rx) = mpsc::channel(8);
        let writer = tokio::spawn(run_writer(outbox.clone(), rx, settings, Arc::default()));
        let sent = StdInstant::now();
        let (ack, committed) = Ack::new();
        tx.send(batch(0, 10, Some(ack))).await.expect("send");
        committed.await.expect("ack fired");
        assert!(
            sent.elapsed() >= Duration::from_millis(400),
            "{:?}",
            sent.elapsed()
        );
        drop(tx);
        assert_eq!(writer.await.expect("writer").records_committed, 10);
    }
}
