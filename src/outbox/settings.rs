//! The `[outbox]` section of the gateway config.
//!
//! Owns only the shape, defaults and pure validation of the settings; it opens nothing.
//! The path default (`<state_dir>/outbox.db`) is resolved by the caller, which knows
//! the state directory, and the upstream names (cursors) come from the configured
//! forwarders, not from this section.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Settings of the store-and-forward outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSettings {
    /// SQLite file of the outbox. `None` means `<state_dir>/outbox.db`, resolved by the
    /// caller; `-wal` and `-shm` files live next to it.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Upper bound for the live data in the database (MiB, pages in use, WAL not
    /// counted). Sized so that an SD card never fills up during a long uplink outage.
    #[serde(default = "default_max_size_mb")]
    pub max_size_mb: u64,
    /// Records (except alerts) older than this are evicted even when there is room:
    /// data that old is often useless upstream (the HTTP ingest rejects readings older
    /// than 24 h). `None` keeps records until the size bound applies.
    #[serde(default)]
    pub max_age_hours: Option<u64>,
    /// What a full outbox does with new records: evict the oldest low-priority ones,
    /// or push back on the pipeline.
    #[serde(default)]
    pub full_policy: FullPolicy,
    /// SQLite `synchronous` in WAL mode: `normal` survives a crash of the process,
    /// `full` also survives a power cut at the cost of an fsync per commit.
    #[serde(default)]
    pub synchronous: SyncMode,
    /// The writer commits at most about this many records per transaction; bigger
    /// transactions amortise the commit cost (see docs/PERFORMANCE.md).
    #[serde(default = "default_batch_max_records")]
    pub batch_max_records: usize,
    /// How long the writer waits for more records before it commits a partial batch,
    /// when nobody waits on the commit (polled sources); bounds the added latency of
    /// a record. A group carrying a source's ack (MQTT QoS 1) is committed as soon as
    /// the writer's queue is empty, without lingering: the source's broker sends only
    /// an in-flight window of messages before it sees their acks.
    #[serde(default = "default_batch_linger_ms")]
    pub batch_linger_ms: u64,
    /// Benchmarks only, not read from the config file: linger for `batch_linger_ms`
    /// even when the group carries acks (the writer's behaviour before it committed
    /// at once for them), so `benches/mqtt_ingest.rs` can compare both in one run.
    #[doc(hidden)]
    #[serde(skip)]
    pub linger_with_acks: bool,
}

/// What a full outbox does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Evict the oldest readings and windows first, then summaries, alerts last.
    #[default]
    DropOldest,
    /// Refuse new records (`OutboxError::Full`); the writer waits and retries, the
    /// bounded channels fill and the sources slow down.
    Block,
}

/// SQLite `PRAGMA synchronous` for the outbox connection (WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// fsync at checkpoints only: committed data survives a process crash; the last
    /// commits before a power cut may be rolled back (never corrupted).
    #[default]
    Normal,
    /// fsync the WAL at every commit: committed data also survives a power cut.
    Full,
}

impl SyncMode {
    pub(crate) fn pragma_value(self) -> &'static str {
        match self {
            SyncMode::Normal => "NORMAL",
            SyncMode::Full => "FULL",
        }
    }
}

fn default_max_size_mb() -> u64 {
    512
}

fn default_batch_max_records() -> usize {
    1000
}

fn default_batch_linger_ms() -> u64 {
    5
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            path: None,
            max_size_mb: default_max_size_mb(),
            max_age_hours: None,
            full_policy: FullPolicy::default(),
            synchronous: SyncMode::default(),
            batch_max_records: default_batch_max_records(),
            batch_linger_ms: default_batch_linger_ms(),
            linger_with_acks: false,
        }
    }
}

impl OutboxSettings {
    /// Every problem with the values, each naming its field (`outbox.<field>`).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_size_mb == 0 {
            problems.push("outbox.max_size_mb: must be at least 1 (MiB)".to_string());
        }
        if self.max_size_mb > 1024 * 1024 {
            problems.push("outbox.max_size_mb: must be at most 1048576 (1 TiB)".to_string());
        }
        if self.max_age_hours == Some(0) {
            problems.push(
                "outbox.max_age_hours: must be at least 1, or left out for no age limit"
                    .to_string(),
            );
        }
        if self.batch_max_records == 0 || self.batch_max_records > 100_000 {
            problems.push("outbox.batch_max_records: must be between 1 and 100000".to_string());
        }
        if self.batch_linger_ms > 10_000 {
            problems.push("outbox.batch_linger_ms: must be at most 10000".to_string());
        }
        problems
    }

    /// The size bound in bytes.
    pub fn max_size_bytes(&self) -> u64 {
        self.max_size_mb.max(1).saturating_mul(1024 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_unknown_fields_are_rejected() {
        let s: OutboxSettings = toml::from_str("").expect("empty section parses");
        assert_eq!(s, OutboxSettings::default());
        assert_eq!(s.max_size_mb, 512);
        assert_eq!(s.full_policy, FullPolicy::DropOldest);
        assert_eq!(s.synchronous, SyncMode::Normal);
        assert!(s.validate().is_empty());

        let s: OutboxSettings =
            toml::from_str("full_policy = \"block\"\nsynchronous = \"full\"\nmax_age_hours = 48\n")
                .expect("valid section parses");
        assert_eq!(s.full_policy, FullPolicy::Block);
        assert_eq!(s.synchronous, SyncMode::Full);
        assert_eq!(s.max_age_hours, Some(48));

        let err = toml::from_str::<OutboxSettings>("max_size = 3\n").unwrap_err();
        assert!(err.to_string().contains("max_size"), "{err}");
        let err = toml::from_str::<OutboxSettings>("full_policy = \"drop_newest\"\n").unwrap_err();
        assert!(err.to_string().contains("drop_newest"), "{err}");
    }

    #[test]
    fn validation_names_every_bad_field() {
        let s = OutboxSettings {
            max_size_mb: 0,
            max_age_hours: Some(0),
            batch_max_records: 0,
            ..OutboxSettings::default()
        };
        let problems = s.validate();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("outbox.max_size_mb"));
        assert!(problems[1].starts_with("outbox.max_age_hours"));
        assert!(problems[2].starts_with("outbox.batch_max_records"));
    }
}
