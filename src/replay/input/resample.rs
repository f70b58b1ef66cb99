//! Mean per aligned period of a scalar stream (`--resample`).

use super::*;

// ---------------------------------------------------------------------------------
// Resampling.

/// Means of scalar items per aligned period: periods are UTC multiples of
/// `period_secs` since the epoch, each mean is stamped at the END of its period, and
/// empty periods emit nothing. Channels are averaged separately (in the order they
/// first appear in the period). Waveform blocks are an error
/// ([`ReplayInputError::ResampleBlock`]); errors from the input pass through at once.
///
/// Streaming: a period is emitted when an item of another period arrives. Input is
/// expected in time order; an item stamped in an earlier period (time going
/// backwards) closes the current period and starts a new mean for the earlier one, so
/// that period may be emitted twice, out of order, as the input was.
pub fn resample_mean<I>(items: I, period_secs: u64) -> ResampleMean<I::IntoIter>
where
    I: IntoIterator<Item = Result<ReplayItem, ReplayInputError>>,
{
    let period_us = i64::try_from(period_secs)
        .ok()
        .and_then(|p| p.checked_mul(1_000_000))
        .filter(|p| *p > 0);
    ResampleMean {
        inner: items.into_iter(),
        period_secs,
        period_us,
        current: None,
        buckets: Vec::new(),
        out: std::collections::VecDeque::new(),
        done: false,
    }
}

/// The iterator of [`resample_mean`].
#[derive(Debug)]
pub struct ResampleMean<I> {
    pub(super) inner: I,
    pub(super) period_secs: u64,
    /// `None` when `period_secs` is unusable: one error, then the end.
    pub(super) period_us: Option<i64>,
    /// Index of the period being averaged (`ts_us.div_euclid(period_us)`).
    pub(super) current: Option<i64>,
    /// Per channel: (channel, sum, count), in order of first appearance.
    pub(super) buckets: Vec<(Option<String>, f64, u64)>,
    pub(super) out: std::collections::VecDeque<Result<ReplayItem, ReplayInputError>>,
    pub(super) done: bool,
}

impl<I> ResampleMean<I> {
    pub(super) fn flush(&mut self, period_us: i64) {
        let Some(idx) = self.current.take() else {
            return;
        };
        let end_us = idx.saturating_add(1).saturating_mul(period_us);
        for (channel, sum, count) in self.buckets.drain(..) {
            self.out.push_back(Ok(ReplayItem::Scalar {
                ts_us: end_us,
                value: sum / count as f64,
                channel,
            }));
        }
    }
}

impl<I> Iterator for ResampleMean<I>
where
    I: Iterator<Item = Result<ReplayItem, ReplayInputError>>,
{
    type Item = Result<ReplayItem, ReplayInputError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(x) = self.out.pop_front() {
                return Some(x);
            }
            if self.done {
                return None;
            }
            let Some(period_us) = self.period_us else {
                self.done = true;
                return Some(Err(ReplayInputError::ResamplePeriod {
                    period_secs: self.period_secs,
                }));
            };
            match self.inner.next() {
                None => {
                    self.flush(period_us);
                    self.done = true;
                }
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(ReplayItem::Block { ts_us, .. })) => {
                    return Some(Err(ReplayInputError::ResampleBlock { ts_us }))
                }
                Some(Ok(ReplayItem::Scalar {
                    ts_us,
                    value,
                    channel,
                })) => {
                    let idx = ts_us.div_euclid(period_us);
                    if self.current != Some(idx) {
                        self.flush(period_us);
                        self.current = Some(idx);
                    }
                    match self.buckets.iter_mut().find(|b| b.0 == channel) {
                        Some(b) => {
                            b.1 += value;
                            b.2 += 1;
                        }
                        None => self.buckets.push((channel, value, 1)),
                    }
                }
            }
        }
    }
}
