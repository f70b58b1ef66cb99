//! Per-channel summaries over fixed intervals of reading time.
//!
//! Buckets are aligned to multiples of the interval since the Unix epoch (an hourly
//! bucket starts on the hour, UTC) and hold min, max, avg, count and the last value —
//! the measures of the cloud's `sensor_readings_summary_hourly`, so the two can be
//! compared. A bucket is emitted when the first reading of a later bucket arrives.
//! A reading that is not newer than the last one summarised (late, out of order, or
//! a redelivered message) is not summarised, so a redelivery never counts twice; the
//! processor counts it (`late_for_summary`).
//!
//! Crashes: the daemon commits each channel's open bucket (`flush`, serialised) in the
//! same outbox transaction as the records made from the readings it counts
//! (`Processor::take_state`, `OutboxBatch::state`). After a crash the bucket resumes
//! from exactly the readings that were stored; readings redelivered after it (MQTT
//! QoS 1) are not newer than the bucket's last one and are not counted again
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

/// The open bucket of one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryAggregator {
    interval_us: i64,
    bucket: Option<Bucket>,
    /// Readings older than the open bucket, not summarised.
    pub late: u64,
}

impl SummaryAggregator {
    /// Buckets of `interval_secs` (at least 1).
    pub fn new(interval_secs: u32) -> SummaryAggregator {
        SummaryAggregator {
            interval_us: i64::from(interval_secs.max(1)) * 1_000_000,
            bucket: None,
            late: 0,
        }
    }

    /// Resumes a bucket persisted at the last shutdown.
    pub fn restore(&mut self, bucket: Bucket) {
        if bucket.start_us.rem_euclid(self.interval_us) == 0 {
            self.bucket = Some(bucket);
        }
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
        match &mut self.bucket {
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

    #[test]
    fn a_restored_bucket_resumes() {
        let base = 1_764_064_800 * S;
        let mut a = SummaryAggregator::new(3600);
        a.push(base + 10 * S, 4.0);
        let partial = a.flush().expect("partial");
        let mut b = SummaryAggregator::new(3600);
        b.restore(partial);
        b.push(base + 20 * S, 8.0);
        let done = b.push(base + 3600 * S, 1.0).expect("closed");
        assert_eq!(
            (done.count, done.min, done.max, done.last),
            (2, 4.0, 8.0, 8.0)
        );
    }
}
