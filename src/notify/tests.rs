use super::*;
use crate::record::SensorType;

fn alert(state: AlertState, severity: u8, episode_us: i64, ts_us: i64) -> AlertRecord {
    AlertRecord {
        sensor_id: "press-1.vib".into(),
        device: "press-1".into(),
        channel: "vib".into(),
        sensor_type: SensorType::Vibration,
        anomaly_type: "vibration_anomaly".into(),
        severity,
        confidence: 0.5,
        description: "d".into(),
        evidence: serde_json::json!({}),
        recommended_actions: vec![],
        state,
        episode_us,
        ts_us,
    }
}

/// Runs the sink's episode logic over a stream; returns what was sent.
fn run(
    memory: &mut Memory,
    stream: &[AlertRecord],
    routed: impl Fn(&AlertRecord) -> bool,
) -> Vec<(Event, u8)> {
    let mut sent = Vec::new();
    for a in stream {
        match decide(memory, a, routed(a)) {
            Decision::Send(e) => {
                sent.push((e, a.severity));
                remember(memory, a, Some(e));
            }
            Decision::Skip => remember(memory, a, None),
        }
    }
    sent
}

#[test]
fn one_open_one_escalation_per_step_and_one_close_per_episode() {
    use AlertState::*;
    let stream = [
        alert(Open, 2, 100, 100),
        alert(Update, 2, 100, 200),
        alert(Update, 4, 100, 300), // escalation
        alert(Update, 3, 100, 400), // lower: nothing
        alert(Update, 4, 100, 500), // same: nothing
        alert(Resolved, 4, 100, 600),
        alert(Resolved, 4, 100, 601), // a repeat of the close
        alert(Open, 3, 700, 700),     // the next episode
    ];
    let mut m = Memory::default();
    let sent = run(&mut m, &stream, |_| true);
    assert_eq!(
        sent,
        [
            (Event::Open, 2),
            (Event::Escalate, 4),
            (Event::Close, 4),
            (Event::Open, 3)
        ]
    );
    // The closed episode is forgotten, the open one remembered.
    assert_eq!(m.episodes.len(), 1);
    assert_eq!(m.max_open_severity(), 3);
}

#[test]
fn a_redelivered_stream_after_a_restart_sends_nothing_twice() {
    use AlertState::*;
    let stream = [alert(Open, 3, 100, 100), alert(Update, 5, 100, 200)];
    let mut m = Memory::default();
    assert_eq!(run(&mut m, &stream, |_| true).len(), 2);
    // The memory as saved with the ack, read back after a restart.
    let saved = rmp_serde::to_vec(&m).expect("encode");
    let mut back: Memory = rmp_serde::from_slice(&saved).expect("decode");
    assert_eq!(back, m);
    assert!(run(&mut back, &stream, |_| true).is_empty());
}

#[test]
fn an_episode_below_the_route_opens_here_when_it_escalates_into_it() {
    use AlertState::*;
    let route = Route {
        sinks: vec!["s".into()],
        min_severity: 4,
        devices: vec!["press-*".into()],
        groups: vec![],
    };
    let routed = |a: &AlertRecord| route.matches("s", &a.device, None, a.severity);
    let stream = [
        alert(Open, 2, 100, 100),
        alert(Update, 4, 100, 200),
        alert(Resolved, 4, 100, 300),
        alert(Open, 3, 400, 400),
        alert(Resolved, 3, 400, 500), // never notified: no close either
    ];
    let mut m = Memory::default();
    assert_eq!(
        run(&mut m, &stream, routed),
        [(Event::Open, 4), (Event::Close, 4)]
    );
    assert!(m.episodes.is_empty());
}

#[test]
fn routes_match_by_device_prefix_or_group_and_severity() {
    let r = Route {
        sinks: vec!["light".into()],
        min_severity: 3,
        devices: vec!["press-*".into(), "fan-7".into()],
        groups: vec!["line-2".into()],
    };
    assert!(r.matches("light", "press-9", None, 3));
    assert!(r.matches("light", "fan-7", None, 5));
    assert!(!r.matches("light", "fan-70", None, 5));
    assert!(r.matches("light", "pump-1", Some("line-2"), 3));
    assert!(!r.matches("light", "pump-1", Some("line-3"), 3));
    assert!(!r.matches("light", "press-9", None, 2));
    assert!(!r.matches("mail", "press-9", None, 5));
    let all = Route {
        sinks: vec!["mail".into()],
        min_severity: 1,
        devices: vec![],
        groups: vec![],
    };
    assert!(all.matches("mail", "anything", None, 1));
}

#[test]
fn the_rate_limit_counts_an_hour_of_sends() {
    let mut l = RateLimit {
        per_hour: 2,
        sent: VecDeque::new(),
    };
    let t0 = Instant::now();
    assert!(l.allow(t0));
    l.record(t0);
    l.record(t0 + Duration::from_secs(10));
    assert!(!l.allow(t0 + Duration::from_secs(20)));
    assert!(l.allow(t0 + Duration::from_secs(3600)));
}

#[test]
fn config_errors_name_the_field_and_what_is_valid() {
    let c: NotifyConfig = toml::from_str(
        r#"
        [sinks.light]
        kind = "modbus"
        address = "10.0.0.9:502"
        allow = ["coil:3", "input:4"]
        writes = [{ target = "coil:4" }, { target = "coil:3", value = "max_severity" }]
        [sinks.mail]
        kind = "smtp"
        host = "relay"
        tls = "none"
        username = "u"
        from = "gw@plant"
        to = ["not an address"]
        subject = "{{devise}}"
        [sinks.hook]
        kind = "mqtt"
        broker = "nowhere"
        topic = "a/+/b"
        [[routes]]
        sinks = ["light", "mail", "pager"]
        min_severity = 7
        "#,
    )
    .expect("parses");
    let p = c.validate(&["plant"]).join("\n");
    for want in [
        "notify.sinks.light.allow.1: \"input:4\": \"input\" is not writable here; use `coil:N` or `holding:N`",
        "notify.sinks.light.writes.0.target: coil:4 is not in this sink's allow list",
        "notify.sinks.light.writes.1.value: a coil holds 0 or 1",
        "notify.sinks.mail.to.0: \"not an address\" is not an email address",
        "notify.sinks.mail.tls: credentials are never sent without TLS",
        "notify.sinks.mail.subject: unknown field {{devise}}",
        "notify.sinks.hook.broker: \"nowhere\" is not in [mqtt_brokers] (there: plant)",
        "notify.sinks.hook.topic: \"a/+/b\" holds a wildcard",
        "notify.routes.0.sinks.2: \"pager\" is not in [notify.sinks] (there: hook, light, mail)",
        "notify.routes.0.min_severity: 7 is not a severity; use 1..5",
    ] {
        assert!(p.contains(want), "missing {want:?} in:\n{p}");
    }
    let w = c.warnings(&["press-1"], &[]).join("\n");
    assert!(
        w.contains("notify.sinks.hook: no [[notify.routes]] entry names this sink"),
        "{w}"
    );
}
