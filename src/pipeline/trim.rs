//! Giving memory back after commissioning.
//!
//! During its learning period each channel keeps its commissioning samples (up to 200
//! rows of features, ~3 kB for a scalar channel); when the baseline is learned they are
//! freed. glibc's malloc keeps freed memory in its arenas, so without a trim a W500
//! gateway's RSS stays at its commissioning peak for good (`examples/channel_state.rs`:
//! 173 MB RSS for 52 MB of live heap after learning). [`Trimmer`] asks malloc to return free
//! memory to the kernel (`malloc_trim`) when baselines were learned since the last
//! trim, at most once per [`MIN_INTERVAL`]: a few milliseconds of one thread, a few
//! times a day in practice. Other C libraries (musl) and systems: nothing to do.

use super::ProcessorCounters;
use std::time::{Duration, Instant};

/// The least time between two trims.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Trimmer {
    learned: u64,
    last: Option<Instant>,
    /// Trims done (for tests and the example).
    pub trims: u64,
}

impl Trimmer {
    /// Trims when baselines were learned since the last trim and [`MIN_INTERVAL`]
    /// has passed; returns whether it did.
    pub fn after(&mut self, counters: &ProcessorCounters) -> bool {
        if counters.baselines_learned <= self.learned
            || self.last.is_some_and(|t| t.elapsed() < MIN_INTERVAL)
        {
            return false;
        }
        self.learned = counters.baselines_learned;
        self.last = Some(Instant::now());
        self.trims += 1;
        trim();
        true
    }
}

/// Returns free heap memory to the kernel, where the C library can.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory held by malloc; it has no
    // preconditions and is thread-safe (it takes each arena's lock).
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_baselines_are_learned_and_not_more_than_once_a_minute() {
        let mut t = Trimmer::default();
        let mut c = ProcessorCounters::default();
        assert!(!t.after(&c), "nothing learned yet");
        c.baselines_learned = 3;
        assert!(t.after(&c));
        c.baselines_learned = 5;
        assert!(!t.after(&c), "within a minute of the last trim");
        t.last = Some(Instant::now() - MIN_INTERVAL);
        assert!(t.after(&c));
        assert!(!t.after(&c), "nothing new learned");
        assert_eq!(t.trims, 2);
    }
}
