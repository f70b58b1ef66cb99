//! Per-topic error counters of one broker connection ([`TopicErrors`], read by the
//! metrics) and the counting and rate-limited logging of a message's problems.

use super::route::Route;
use super::{decode, Problem, LOG_BYTES, MAX_TOPICS, MAX_TOPIC_KEY_BYTES};
use crate::sources::serial::support::{escape_bytes, LogLimiter};
use rumqttc::Publish;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;
use tracing::warn;

/// Error counters per topic and kind (the per-device ones are in `DeviceStats`):
/// where exactly a malformed payload came from. Bounded to [`MAX_TOPICS`] topics of
/// at most [`MAX_TOPIC_KEY_BYTES`].
#[derive(Debug, Default)]
pub struct TopicErrors {
    counts: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
}

impl TopicErrors {
    /// The key that topics beyond [`MAX_TOPICS`] are counted under.
    pub const OTHER: &'static str = "(other topics)";

    pub fn count(&self, topic: &str, kind: &'static str) {
        if let Ok(mut m) = self.counts.lock() {
            let key = if topic.len() <= MAX_TOPIC_KEY_BYTES
                && (m.contains_key(topic) || m.len() < MAX_TOPICS)
            {
                topic
            } else {
                Self::OTHER
            };
            *m.entry(key.to_string())
                .or_default()
                .entry(kind)
                .or_insert(0) += 1;
        }
    }

    pub fn get(&self, topic: &str, kind: &str) -> u64 {
        self.counts
            .lock()
            .ok()
            .and_then(|m| m.get(topic).and_then(|k| k.get(kind)).copied())
            .unwrap_or(0)
    }

    /// (topic, kind, count), sorted.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        self.counts
            .lock()
            .map(|m| {
                m.iter()
                    .flat_map(|(t, k)| k.iter().map(move |(k, n)| (t.clone(), *k, *n)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Counts a problem for the device and the topic; logs it once per kind and topic
/// (then at most every [`PROBLEM_LOG_EVERY`](super::PROBLEM_LOG_EVERY)).
///
/// A message refused for its device level (a value that is no valid name, or one
/// device too many) is counted and rate-limited under the route's topic filter
/// instead: its topic names a device that does not exist, and publishers inventing
/// new ones must not grow the counters either. So is one on a topic longer than
/// [`MAX_TOPIC_KEY_BYTES`].
pub(super) fn count(
    topic_errors: &TopicErrors,
    logs: &mut LogLimiter<(String, &'static str)>,
    broker: &str,
    route: &Route,
    p: &Publish,
    problem: &Problem,
) {
    route.device.stats.error(problem.kind);
    let refused_device = matches!(problem.kind, decode::TOO_MANY_DEVICES | "topic_level");
    let key = if refused_device || p.topic.len() > MAX_TOPIC_KEY_BYTES {
        &route.filter
    } else {
        &p.topic
    };
    topic_errors.count(key, problem.kind);
    if let Some(n) = logs.allow((key.clone(), problem.kind), Instant::now()) {
        let what = match problem.kind {
            decode::TIMESTAMP_OUT_OF_BOUNDS => "MQTT reading refused: its timestamp is implausible",
            decode::TOO_MANY_DEVICES => {
                "MQTT message refused: its topic names one device too many for this subscription"
            }
            _ => "Malformed MQTT message",
        };
        warn!(
            broker = %broker,
            device = %route.device.config.id,
            topic = %p.topic,
            filter = %route.filter,
            kind = problem.kind,
            problem = %problem.detail,
            payload = %escape_bytes(&p.payload, LOG_BYTES),
            suppressed = n,
            "{what}"
        );
    }
}
