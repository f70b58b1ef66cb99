//! Tests of the model index parsing and the sync jitter.

use super::task::jittered;
use super::*;
use std::time::Duration;

#[test]
fn index_parses_known_types_and_refuses_unsafe_names() {
    let ok = br#"{"format":1,"models":{"vibration":{"name":"v","version":"2.0.0"},"telepathy":{"name":"x","version":"1"}},"updated":"now"}"#;
    let idx = parse_index(ok).unwrap();
    assert_eq!(idx.models.len(), 1, "unknown sensor types are skipped");
    assert_eq!(idx.models[&SensorType::Vibration].to_string(), "v@2.0.0");
    let bad = br#"{"models":{"vibration":{"name":"../etc","version":"1"}}}"#;
    assert!(parse_index(bad).unwrap_err().contains("models.vibration"));
    assert!(parse_index(br#"{"models":{"vibration":{"name":"a"}}}"#).is_err());
    assert!(parse_index(b"not json").is_err());
}

#[test]
fn jitter_stays_within_ten_percent() {
    for _ in 0..1000 {
        let d = jittered(Duration::from_secs(3600)).as_secs_f64();
        assert!((3240.0..=3960.0).contains(&d), "{d}");
    }
}
