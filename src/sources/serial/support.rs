//! Small helpers the serial and MQTT sources share (with [`crate::retry::Backoff`]):
//! a log rate limiter and byte escaping for log lines. Pure, no I/O.
//!
//! They live here because the serial source needed them first; nothing in them is
//! serial-specific.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

pub(crate) use crate::retry::Backoff;

/// Decides whether a log line for `key` may be written now: the first occurrence
/// always, then at most once per `every`, reporting how many were suppressed in
/// between. Keeps at most `max_keys` keys (keys can come from outside, e.g. MQTT
/// topics); when full, it forgets everything and starts over.
#[derive(Debug)]
pub(crate) struct LogLimiter<K> {
    /// Minimum time between two lines for one key.
    every: Duration,
    /// Bound on remembered keys, so a flood of distinct topics cannot grow memory.
    max_keys: usize,
    /// Per key: when it was last logged and how many occurrences were not.
    entries: HashMap<K, (Instant, u64)>,
}

impl<K: Hash + Eq> LogLimiter<K> {
    pub(crate) fn new(every: Duration, max_keys: usize) -> LogLimiter<K> {
        LogLimiter {
            every,
            max_keys: max_keys.max(1),
            entries: HashMap::new(),
        }
    }

    /// `Some(suppressed)` when a line may be logged now (`suppressed` occurrences
    /// were dropped since the last line), `None` when this one must be dropped.
    pub(crate) fn allow(&mut self, key: K, now: Instant) -> Option<u64> {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.max_keys {
            self.entries.clear();
        }
        match self.entries.get_mut(&key) {
            None => {
                self.entries.insert(key, (now, 0));
                Some(0)
            }
            Some((last, suppressed)) => {
                if now.duration_since(*last) >= self.every {
                    let n = *suppressed;
                    *last = now;
                    *suppressed = 0;
                    Some(n)
                } else {
                    *suppressed += 1;
                    None
                }
            }
        }
    }
}

/// Bytes as printable ASCII for a log line (`\r`, `\x02`, ...), cut after `max`
/// input bytes with a note of how many more there were.
pub(crate) fn escape_bytes(bytes: &[u8], max: usize) -> String {
    let shown = &bytes[..bytes.len().min(max)];
    let mut out: String = shown
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if bytes.len() > max {
        out.push_str(&format!("... (+{} bytes)", bytes.len() - max));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_logs_first_then_once_per_interval_with_the_suppressed_count() {
        let mut l = LogLimiter::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        assert_eq!(l.allow("a", t0), Some(0));
        assert_eq!(l.allow("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(l.allow("b", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(l.allow("a", t0 + Duration::from_secs(11)), Some(2));
        assert_eq!(l.allow("a", t0 + Duration::from_secs(12)), None);
    }

    #[test]
    fn limiter_memory_is_bounded() {
        let mut l = LogLimiter::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        for i in 0..100 {
            assert_eq!(l.allow(i, t0), Some(0));
        }
        assert!(l.entries.len() <= 3);
    }

    #[test]
    fn escapes_and_truncates() {
        assert_eq!(escape_bytes(b"$P\r\n\x02", 80), "$P\\r\\n\\x02");
        assert_eq!(escape_bytes(b"abcdef", 3), "abc... (+3 bytes)");
    }
}
