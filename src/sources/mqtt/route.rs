//! Which device(s) a message belongs to: MQTT topic filter matching and the list of
//! subscriptions of one broker connection. Pure.

use super::decode::Decoder;
use crate::sources::DeviceSpec;

/// Whether `topic` matches `filter` (MQTT 3.1.1 §4.7: `+` one level, `#` the rest
/// including the parent; wildcards at the first level do not match `$SYS`-style
/// topics).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// One device on the connection: its filter and its decoder.
pub struct Route {
    /// The device's topic filter (its config's `mqtt.topic`, else the profile's).
    pub filter: String,
    pub device: DeviceSpec,
    pub decoder: Decoder,
}

/// The topic filters to subscribe to, each once, in a stable order.
pub fn filters(routes: &[Route]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in routes {
        if !out.contains(&r.filter) {
            out.push(r.filter.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        assert!(topic_matches("wisense/+/+/data", "wisense/b1/n7/data"));
        assert!(!topic_matches("wisense/+/+/data", "wisense/b1/data"));
        assert!(!topic_matches("wisense/+/+/data", "wisense/b1/n7/data/x"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("#", "a/b"));
        assert!(!topic_matches("#", "$SYS/broker"));
        assert!(!topic_matches("+/broker", "$SYS/broker"));
        assert!(topic_matches("$SYS/#", "$SYS/broker"));
        assert!(topic_matches("a/+", "a/"));
        assert!(!topic_matches("a/b", "a/c"));
        assert!(topic_matches("a/b", "a/b"));
    }
}
