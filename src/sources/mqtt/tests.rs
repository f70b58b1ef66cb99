use super::*;
use crate::profiles::{LoadedProfile, Profile};
use crate::sources::DeviceStats;
use rumqttc::{Publish, QoS};
use std::sync::atomic::Ordering::Relaxed;

const PROFILE: &str = r#"
vendor = "T"
model = "M"
[channels.t]
sensor_type = "temperature"
unit = "°C"
[mqtt]
topic = "site/+/+/t"
payload = "number"
device_level = 2
max_devices = 5
[[mqtt.fields]]
channel = "t"
"#;

fn conn(filter: &str) -> Conn {
    let profile: Profile = toml::from_str(PROFILE).unwrap();
    let config = toml::from_str(&format!(
        "id = \"base\"\nprofile = \"p\"\n[mqtt]\nbroker = \"b\"\ntopic = \"{filter}\"\n"
    ))
    .unwrap();
    let device = DeviceSpec {
        config,
        profile: Arc::new(LoadedProfile {
            name: "p".into(),
            path: "p.toml".into(),
            profile,
        }),
        stats: Arc::new(DeviceStats::default()),
    };
    let route = route_for(device).unwrap();
    // Never connected: on_publish does not need the broker.
    let (client, _eventloop) = AsyncClient::new(rumqttc::MqttOptions::new("t", "x", 1), 8);
    Conn::new("b".into(), client, vec![route], Arc::default())
}

#[test]
fn state_stays_bounded_under_a_flood_of_node_ids() {
    let filter = "site/+/+/t";
    let mut c = conn(filter);
    let n = 20_000;
    for i in 0..n {
        let topic = format!("site/b{}/n{i}/t", i % 3);
        c.on_publish(Publish::new(topic, QoS::AtMostOnce, "1.5"));
        // The pipeline takes every batch.
        c.outq.clear();
    }
    let r = &c.routes[0];
    assert_eq!(r.decoder.dynamic_devices(), 5);
    assert_eq!(r.device.stats.error_count("too_many_devices"), n - 5);
    assert_eq!(r.device.stats.readings.load(Relaxed), 5);
    // Refused messages are counted under the subscription's filter, once.
    assert_eq!(
        c.topic_errors.snapshot(),
        [(filter.to_string(), "too_many_devices", n - 5)]
    );
    assert!(c.pending.is_empty());

    // Level values that are no device name, and malformed payloads on huge
    // topics of known devices: counted under the filter as well.
    let long = "x".repeat(60_000);
    for i in 0..1000 {
        c.on_publish(Publish::new(
            format!("site/b/{long}{i}/t"),
            QoS::AtMostOnce,
            "1",
        ));
        c.on_publish(Publish::new(
            format!("site/{long}{i}/n0/t"),
            QoS::AtMostOnce,
            "bad",
        ));
    }
    assert_eq!(
        c.topic_errors.snapshot(),
        [
            (filter.to_string(), "number", 1000),
            (filter.to_string(), "too_many_devices", n - 5),
            (filter.to_string(), "topic_level", 1000),
        ]
    );
    assert!(c.outq.is_empty());
}

#[test]
fn topic_error_keys_are_bounded_in_number_and_length() {
    let t = TopicErrors::default();
    for i in 0..2 * MAX_TOPICS {
        t.count(&format!("a/{i}"), "json");
    }
    t.count(&"y".repeat(MAX_TOPIC_KEY_BYTES + 1), "json");
    t.count("a/0", "json");
    let snap = t.snapshot();
    assert_eq!(snap.len(), MAX_TOPICS + 1);
    assert_eq!(t.get("a/0", "json"), 2);
    assert_eq!(t.get(TopicErrors::OTHER, "json"), MAX_TOPICS as u64 + 1);
}
