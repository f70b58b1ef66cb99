//! Per-channel summaries over fixed intervals of reading time.
//!
//! Buckets are aligned to multiples of the interval since the Unix epoch (an hourly
//! bucket starts on the hour, UTC) and hold min, max, avg, count and the last value —
//! the measures of the cloud's `sensor_readings_summary_hourly`, so the two can be
//! compared. A bucket is emitted when the first reading of a later bucket arrives.
//! A reading that is not newer than the last one summarised is either a redelivered
//! message (MQTT after a broker restart, a base station resending) or a genuine
//! reading that arrived out of order. For channels fed by a redelivering source the
//! aggregator remembers the last [`RECENT`] timestamps it counted in the open bucket:
//! a late reading whose timestamp is among them is a redelivery and is skipped; one
//! that is not, but is no older than the oldest remembered, is counted (the long
//! worst-day run lost 20 such readings from a summary before). Older than that it
//! cannot be told apart and is not summarised; the processor counts it
//! (`late_for_summary`). Other channels (polled sources, which neither redeliver nor
//! reorder) keep no memory: every late reading is skipped there.
//!
//! Crashes: the daemon commits each channel's open bucket (`flush`, serialised; one
//! state entry per device, holding its channels' buckets) in the same outbox
//! transaction as the records made from the readings it counts
//! (`Processor::take_state`, `OutboxBatch::state`), with the timestamps a
//! remembering channel counted in it. After a crash the bucket resumes from exactly
//! the readings that were stored; readings redelivered after it (MQTT QoS 1) are
//! among its remembered timestamps or older and are not counted again, late ones
//! that were never stored still are
//! (`tests/crash_kill9.rs`: 20 SIGKILLs, every hourly summary equals its readings).
//!
//! Shutdown: [`SummaryAggregator::flush`] hands out the partial bucket *and keeps it*.
//! The processor emits it; after a restart the bucket resumes, so when it completes
//! it is emitted again with a superset of the readings. A bucket may therefore reach
//! upstream twice with the same `(sensor_id, bucket_start_us, interval_secs)`, and the
//! later one is the more complete: upstream must upsert on that key, last write wins.

use crate::record::TimestampUs;
use serde::{Deserialize, Serialize};

/// The running measures of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub start_us: TimestampUs,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
    pub last: f64,
    /// Time of `last`, so a restored bucket keeps the right "last" on out-of-order input.
    pub last_ts_us: TimestampUs,
}

impl Bucket {
    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// How many counted timestamps a redelivering channel remembers, 2 KiB (well beyond a
/// broker's in-flight window: Mosquitto's default is 20).
pub const RECENT: usize = 256;

/// The open bucket of one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryAggregator {
    interval_us: i64,
    bucket: Option<Bucket>,
    /// Readings older than the open bucket, not summarised.
    pub late: u64,
    /// Timestamps counted in the open bucket, ascending, at most [`RECENT`]; `None`
    /// until [`SummaryAggregator::remember_recent`] (redelivering sources only).
    recent: Option<std::collections::VecDeque<TimestampUs>>,
}

impl SummaryAggregator {
    /// Buckets of `interval_secs` (at least 1).
    pub fn new(interval_secs: u32) -> SummaryAggregator {
        SummaryAggregator {
            interval_us: i64::from(interval_secs.max(1)) * 1_000_000,
            bucket: None,
            late: 0,
            recent: None,
        }
    }

    /// Remember counted timestamps from now on, to tell late readings from
    /// redeliveries (a channel of a source that redelivers: MQTT).
    pub fn remember_recent(&mut self) {
        if self.recent.is_none() {
            self.recent = Some(std::collections::VecDeque::new());
        }
    }

    /// Notes that `ts_us` was counted (keeps `recent` ascending and bounded).
    fn counted(&mut self, ts_us: TimestampUs) {
        if let Some(r) = self.recent.as_mut() {
            let at = r.partition_point(|t| *t < ts_us);
            r.insert(at, ts_us);
            if r.len() > RECENT {
                r.pop_front();
            }
        }
    }

    /// A reading not newer than the last counted one: a genuine late one (counted)
    /// or a redelivery (skipped)? Only a remembering channel can tell.
    fn late_but_new(&self, ts_us: TimestampUs) -> bool {
        self.recent.as_ref().is_some_and(|r| {
            r.front().is_some_and(|oldest| ts_us > *oldest) && r.binary_search(&ts_us).is_err()
        })
    }

    /// Resumes a bucket persisted at the last commit, with the timestamps it had
    /// counted when it was persisted ([`SummaryAggregator::recent`]; empty for a
    /// channel that does not remember, or a state entry of an older version).
    pub fn restore(&mut self, bucket: Bucket, recent: Vec<TimestampUs>) {
        if bucket.start_us.rem_euclid(self.interval_us) != 0 {
            return;
        }
        self.bucket = Some(bucket);
        if !recent.is_empty() {
            let mut r: Vec<TimestampUs> = recent
                .into_iter()
                .filter(|t| self.start_of(*t) == bucket.start_us)
                .collect();
            r.sort_unstable();
            r.dedup();
            let skip = r.len().saturating_sub(RECENT);
            self.recent = Some(r.into_iter().skip(skip).collect());
        }
    }

    /// The timestamps counted in the open bucket that a remembering channel holds,
    /// ascending; persisted with the bucket, so that after a crash a late reading is
    /// still told from a redelivered one (without them, the first late reading
    /// after a SIGKILL was taken for a redelivery and left out of its summary: the
    /// fourth one-hour run found an hourly summary 3 short of its 7,500 readings).
    pub fn recent(&self) -> Vec<TimestampUs> {
        self.recent
            .as_ref()
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn start_of(&self, ts_us: TimestampUs) -> TimestampUs {
        ts_us - ts_us.rem_euclid(self.interval_us)
    }

    /// Adds a value; returns the previous bucket when this value starts a later one.
    pub fn push(&mut self, ts_us: TimestampUs, value: f64) -> Option<Bucket> {
        if !value.is_finite() {
            return None;
        }
        let start = self.start_of(ts_us);
        let mut done = None;
        let late_but_new = self.late_but_new(ts_us);
        match &mut self.bucket {
            // Out of order but never counted, in the open bucket: count it.
            Some(b)
                if ts_us <= b.last_ts_us && b.count > 0 && late_but_new && b.start_us == start =>
            {
                b.min = b.min.min(value);
                b.max = b.max.max(value);
                b.sum += value;
                b.count += 1;
                self.counted(ts_us);
                return None;
            }
            // Not newer than the last reading summarised: a redelivered message (MQTT
            // after a broker restart, a base station resending) or an out-of-order
            // one. Summaries cover readings in time order, each once.
            Some(b) if ts_us <= b.last_ts_us && b.count > 0 => {
                self.late += 1;
                return None;
            }
            Some(b) if b.start_us == start => {
                b.min = b.min.min(value);
                b.max = b.max.max(value);
                b.sum += value;
                b.count += 1;
                if ts_us >= b.last_ts_us {
                    b.last = value;
                    b.last_ts_us = ts_us;
                }
                self.counted(ts_us);
                return None;
            }
            Some(b) if start < b.start_us => {
                self.late += 1;
                return None;
            }
            Some(b) => done = Some(*b),
            None => {}
        }
        self.bucket = Some(Bucket {
            start_us: start,
            min: value,
            max: value,
            sum: value,
            count: 1,
            last: value,
            last_ts_us: ts_us,
        });
        // A new bucket: what the old one counted cannot come again into this one.
        if let Some(r) = self.recent.as_mut() {
            r.clear();
        }
        self.counted(ts_us);
        done
    }

    /// The open bucket (partial), kept open. See the module docs.
    pub fn flush(&self) -> Option<Bucket> {
        self.bucket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    #[test]
    fn buckets_align_to_the_interval_and_close_on_the_next_bucket() {
        let mut a = SummaryAggregator::new(60);
        // 10:00:30 .. 10:00:50, then 10:01:05.
        let base = 1_764_064_800 * S; // a multiple of 60 s
        assert_eq!(a.push(base + 30 * S, 2.0), None);
        assert_eq!(a.push(base + 40 * S, 6.0), None);
        assert_eq!(a.push(base + 50 * S, 1.0), None);
        let done = a.push(base + 65 * S, 9.0).expect("bucket closed");
        assert_eq!(done.start_us, base);
        assert_eq!(
            (done.min, done.max, done.count, done.last),
            (1.0, 6.0, 3, 1.0)
        );
        assert!((done.avg() - 3.0).abs() < 1e-12);
        // A late reading for the closed bucket is counted, not summarised.
        assert_eq!(a.push(base + 55 * S, 100.0), None);
        assert_eq!(a.late, 1);
        let open = a.flush().expect("partial bucket");
        assert_eq!(
            (open.start_us, open.count, open.max),
            (base + 60 * S, 1, 9.0)
        );
        // flush keeps the bucket open.
        assert_eq!(a.flush(), Some(open));
    }

    #[test]
    fn a_redelivered_reading_is_summarised_once() {
        let base = 1_764_064_800 * S;
        let mut a = SummaryAggregator::new(3600);
        for (ts, v) in [(10, 1.0), (20, 2.0), (20, 2.0), (15, 9.0), (30, 3.0)] {
            a.push(base + ts * S, v);
        }
        let b = a.flush().expect("open");
        assert_eq!((b.count, b.sum, b.max), (3, 6.0, 3.0));
        assert_eq!(a.late, 2);
    }

    /// A channel of a redelivering source: a reading that arrives after newer ones
    /// but was never counted is counted (the long worst-day run left 20 such out of
    /// an hour's summary); a redelivered one is still counted once.
    #[test]
    fn a_late_reading_counts_and_a_redelivered_one_does_not() {
        let base = 1_764_064_800 * S;
        let mut a = SummaryAggregator::new(3600);
        a.remember_recent();
        for (ts, v) in [
            (10, 1.0),
            (20, 2.0),
            (30, 3.0),
            (15, 9.0),
            (20, 2.0),
            (15, 9.0),
            (40, 4.0),
        ] {
            a.push(base + ts * S, v);
        }
        let b = a.flush().expect("open");
        // 10, 20, 30, 15 (late, new), 40; the second 20 and 15 are redeliveries.
        assert_eq!((b.count, b.sum, b.max, b.last), (5, 19.0, 9.0, 4.0));
        assert_eq!(a.late, 2);
        // Older than anything remembered: cannot be told apart, not counted.
        a.push(base + 5 * S, 7.0);
        assert_eq!(a.flush().expect("open").count, 5);
        // A new bucket starts its own memory; the old bucket's readings stay out.
        a.push(base + 3600 * S, 1.0);
        a.push(base + 40 * S, 4.0);
        assert_eq!(a.flush().expect("open").count, 1);
    }

    #[test]
    fn a_restored_bucket_resumes() {
        let base = 1_764_064_800 * S;
        let mut a = SummaryAggregator::new(3600);
        a.push(base + 10 * S, 4.0);
        let partial = a.flush().expect("partial");
        let mut b = SummaryAggregator::new(3600);
        b.restore(partial, a.recent());
        b.push(base + 20 * S, 8.0);
        let done = b.push(base + 3600 * S, 1.0).expect("closed");
        assert_eq!(
            (done.count, done.min, done.max, done.last),
            (2, 4.0, 8.0, 8.0)
        );
    }

    /// A crash between out-of-order readings of a remembering channel: the restored
    /// bucket still counts the late reading that was never stored and skips the
    /// redelivered ones (the fourth one-hour worst-day run lost 3 readings from an
    /// hourly summary this way while the bucket forgot its timestamps).
    #[test]
    fn a_restored_bucket_still_tells_late_from_redelivered() {
        let base = 1_764_064_800 * S;
        let mut a = SummaryAggregator::new(3600);
        a.remember_recent();
        for (ts, v) in [(10, 1.0), (20, 2.0), (30, 3.0)] {
            a.push(base + ts * S, v);
        }
        // Committed: the bucket and what it counted. Then SIGKILL.
        let (stored, recent) = (a.flush().expect("open"), a.recent());
        assert_eq!(recent, vec![base + 10 * S, base + 20 * S, base + 30 * S]);
        let mut b = SummaryAggregator::new(3600);
        b.restore(stored, recent);
        b.remember_recent();
        // The broker redelivers 20 and 30; 25 was in flight and never stored.
        for (ts, v) in [(20, 2.0), (25, 9.0), (30, 3.0), (40, 4.0)] {
            b.push(base + ts * S, v);
        }
        let open = b.flush().expect("open");
        assert_eq!(
            (open.count, open.sum, open.max, open.last),
            (5, 19.0, 9.0, 4.0)
        );
        assert_eq!(b.late, 2);

        // Without the timestamps (an entry of an older version) the late reading
        // cannot be told from a redelivery and is skipped, as before.
        let mut c = SummaryAggregator::new(3600);
        c.restore(stored, Vec::new());
        c.remember_recent();
        c.push(base + 25 * S, 9.0);
        assert_eq!(c.flush().expect("open").count, 3);
        assert_eq!(c.late, 1);
    }
}
