//! Waiting, one way for the whole gateway: the jittered exponential backoff of every
//! reconnect and retry (Modbus, serial, MQTT, upstreams, the outbox writer), the
//! cancellable sleep they wait in, and the token bucket that paces upstreams.
//!
//! One jitter policy, "equal jitter": a delay is drawn from `[d/2, d]`. Half of it
//! is certain, so retries never hammer; the other half is random, so a fleet of
//! gateways that lost the same broker or database at the same moment does not come
//! back in lockstep.

use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A random 50..100 % of `d` (the one jitter policy, see the module docs).
pub fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.5 + 0.5 * fastrand::f64())
}

/// Jittered exponential backoff: the n-th delay is [`jittered`] of
/// `initial × 2ⁿ`, capped at `max`; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First (and after `reset`) upper bound of the delay.
    initial: Duration,
    /// Largest upper bound: how long a gateway waits at most between attempts.
    max: Duration,
    /// Upper bound of the next delay.
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            current: initial,
        }
    }

    /// The delay before the next attempt; the one after it doubles (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        jittered(d)
    }

    /// After a success: start again from the initial delay.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// How a [`sleep_or_cancel`] ended. `#[must_use]`: a caller that ignores it would
/// go on working after shutdown was asked for.
#[must_use = "a cancelled sleep means: stop now"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slept {
    /// The whole duration passed.
    Elapsed,
    /// The token fired first (or had already fired).
    Cancelled,
}

impl Slept {
    pub fn cancelled(self) -> bool {
        self == Slept::Cancelled
    }
}

/// Sleeps `d` unless `cancel` fires first.
pub async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> Slept {
    if cancel.is_cancelled() {
        return Slept::Cancelled;
    }
    if d.is_zero() {
        return Slept::Elapsed;
    }
    tokio::select! {
        _ = cancel.cancelled() => Slept::Cancelled,
        _ = tokio::time::sleep(d) => Slept::Elapsed,
    }
}

/// Token bucket: `rate` tokens per second, holding up to one second's worth (or
/// the request, if larger). Debt is allowed, so a request bigger than the bucket
/// waits exactly as long as its size needs. A rate of 0 or less is unlimited.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket holding `initial` tokens now.
    pub fn new(rate: f64, initial: f64) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: initial,
            last: Instant::now(),
        }
    }

    /// Takes `n` tokens; how long to wait before using them (zero when unlimited or
    /// when the bucket held enough).
    pub fn take(&mut self, n: usize) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let cap = self.rate.max(n as f64);
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(cap);
        self.last = now;
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        for hi in [100, 200, 400, 800, 800, 800] {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(hi / 2) && d <= Duration::from_millis(hi),
                "{d:?} not in [{}, {hi}] ms",
                hi / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        for _ in 0..100 {
            let j = jittered(Duration::from_millis(1000));
            assert!(j >= Duration::from_millis(500) && j <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn token_bucket_paces() {
        let mut b = TokenBucket::new(100.0, 100.0);
        // A full bucket lets one second's worth through at once.
        assert_eq!(b.take(100), Duration::ZERO);
        // The next 50 need half a second.
        let w = b.take(50);
        assert!((w.as_secs_f64() - 0.5).abs() < 0.05, "{w:?}");
        assert_eq!(TokenBucket::new(0.0, 0.0).take(1_000_000), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_cancelled_sleep_says_so_at_once() {
        let cancel = CancellationToken::new();
        assert_eq!(
            sleep_or_cancel(Duration::ZERO, &cancel).await,
            Slept::Elapsed
        );
        cancel.cancel();
        let t = Instant::now();
        assert!(sleep_or_cancel(Duration::from_secs(60), &cancel)
            .await
            .cancelled());
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
