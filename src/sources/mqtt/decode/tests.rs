//! Tests of the payload decoders: every format, malformed payloads, timestamp bounds and the device limit.

use super::*;
use crate::profiles::{MqttField, TimestampField};

fn field(channel: &str, path: Option<&str>, column: Option<usize>) -> MqttField {
    MqttField {
        channel: channel.into(),
        path: path.map(String::from),
        column,
        topic_value: None,
        scale: 1.0,
        offset: 0.0,
    }
}

fn fmt(payload: PayloadFormat, fields: Vec<MqttField>) -> MqttFormat {
    MqttFormat {
        topic: "t/+/+/data".into(),
        payload,
        timestamp: None,
        batch: None,
        delimiter: ",".into(),
        sample_rate_hz: None,
        scale: 1.0,
        fields,
        device_level: None,
        max_devices: 1000,
        channel_level: None,
        max_payload_bytes: 1000,
    }
}

fn ts_field(path: &str, format: TimestampFormat) -> TimestampField {
    TimestampField {
        path: path.into(),
        format,
        max_future_secs: 300,
        max_age_hours: 720,
    }
}

fn dec(f: &MqttFormat) -> Decoder {
    Decoder::new("dev", f, |c| {
        Some((SensorType::Vibration, format!("{c}-unit")))
    })
    .unwrap()
}

fn scalars(d: &Decoded) -> Vec<(String, i64, f64)> {
    d.readings
        .iter()
        .map(|r| match r.value {
            Value::Scalar(v) => (r.sensor_id.to_string(), r.ts_us, v),
            ref o => panic!("{o:?}"),
        })
        .collect()
}

fn kinds(d: &Decoded) -> Vec<&'static str> {
    d.problems.iter().map(|p| p.kind).collect()
}

#[test]
fn json_fields_timestamp_and_problems() {
    let mut f = fmt(
        PayloadFormat::Json,
        vec![
            field("vrms", Some("vrms"), None),
            field("temp", Some("env.temp"), None),
        ],
    );
    f.fields[1].scale = 0.1;
    f.fields[1].offset = 1.0;
    f.timestamp = Some(ts_field("ts", TimestampFormat::Rfc3339));
    let mut d = dec(&f);
    // Arrival: 13 s after the stamps.
    let now = 1_795_615_400_000_000;
    let ok = d.decode(
        "t",
        br#"{"ts":"2026-11-25T14:03:07.5Z","vrms":2.31,"env":{"temp":417}}"#,
        now,
    );
    let ts = 1_795_615_387_500_000;
    assert_eq!(
        scalars(&ok),
        [("dev.vrms".into(), ts, 2.31), ("dev.temp".into(), ts, 42.7)]
    );
    assert!(ok.problems.is_empty());
    assert_eq!(ok.readings[0].unit.as_ref(), "vrms-unit");

    let partial = d.decode("t", br#"{"ts":"2026-11-25T14:03:07Z","vrms":"2.3"}"#, now);
    assert!(partial.readings.is_empty());
    assert_eq!(kinds(&partial), ["type", "missing_field"]);
    assert_eq!(kinds(&d.decode("t", b"{\"vrms\":", now)), ["json"]);
    assert_eq!(kinds(&d.decode("t", b"{\"vrms\":NaN}", now)), ["json"]);
    assert_eq!(kinds(&d.decode("t", b"{\"vrms\":1e999}", now)), ["json"]);
    assert_eq!(kinds(&d.decode("t", b"", now)), ["empty"]);
    assert_eq!(
        kinds(&d.decode("t", &[b' '; 1001], now)),
        ["payload_too_large"]
    );
    let bad_ts = d.decode("t", br#"{"ts":"yesterday","vrms":1,"env":{"temp":1}}"#, now);
    assert_eq!(kinds(&bad_ts), ["timestamp"]);
    assert!(bad_ts.readings.is_empty());
}

#[test]
fn json_batch_with_unix_ms_and_root_fallback() {
    let mut f = fmt(PayloadFormat::Json, vec![field("v", Some("v"), None)]);
    f.batch = Some("data.readings".into());
    f.timestamp = Some(ts_field("t", TimestampFormat::UnixMs));
    let mut d = dec(&f);
    let out = d.decode(
            "t",
            br#"{"t":1700000000000,"data":{"readings":[{"t":1700000000001,"v":1},{"v":2.5},{"t":1700000000002,"v":null}]}}"#,
            1_700_000_060_000_000,
        );
    assert_eq!(
        scalars(&out),
        [
            ("dev.v".into(), 1_700_000_000_001_000, 1.0),
            ("dev.v".into(), 1_700_000_000_000_000, 2.5)
        ]
    );
    assert_eq!(kinds(&out), ["missing_field"]);
    assert_eq!(
        kinds(&d.decode("t", br#"{"data":{"readings":5}}"#, 1)),
        ["batch"]
    );
}

#[test]
fn timestamps() {
    use serde_json::json;
    assert_eq!(
        timestamp_us(&json!(1.5), TimestampFormat::UnixS),
        Ok(1_500_000)
    );
    assert_eq!(timestamp_us(&json!(7), TimestampFormat::UnixUs), Ok(7));
    assert!(timestamp_us(&json!(-7), TimestampFormat::UnixUs).is_err());
    assert!(timestamp_us(&json!("7"), TimestampFormat::UnixMs).is_err());
    assert_eq!(
        timestamp_us(
            &json!("1970-01-01T01:00:00+01:00"),
            TimestampFormat::Rfc3339
        ),
        Ok(0)
    );
    assert!(timestamp_us(&json!(1e300), TimestampFormat::UnixS).is_err());
}

#[test]
fn json_array_becomes_a_block_when_a_rate_is_set() {
    let mut f = fmt(
        PayloadFormat::Json,
        vec![field("acc", Some("samples"), None)],
    );
    f.sample_rate_hz = Some(100.0);
    f.fields[0].scale = 2.0;
    let mut d = dec(&f);
    let out = d.decode("t", br#"{"samples":[1,-2.5,0]}"#, 5);
    assert_eq!(
        out.readings[0].value,
        Value::Block {
            sample_rate_hz: 100.0,
            samples: vec![2.0f32, -5.0, 0.0].into()
        }
    );
    assert_eq!(
        kinds(&d.decode("t", br#"{"samples":[1,"x"]}"#, 5)),
        ["type"]
    );
}

#[test]
fn csv_number_and_raw() {
    let mut d = dec(&fmt(
        PayloadFormat::Csv,
        vec![field("a", None, Some(0)), field("b", None, Some(2))],
    ));
    let out = d.decode("t", b"1.5,x,-2\n3,,4\n", 7);
    assert_eq!(
        scalars(&out),
        [
            ("dev.a".into(), 7, 1.5),
            ("dev.b".into(), 7, -2.0),
            ("dev.a".into(), 7, 3.0),
            ("dev.b".into(), 7, 4.0)
        ]
    );
    assert_eq!(
        kinds(&d.decode("t", b"1;2;3", 7)),
        ["type", "missing_field"]
    );

    let mut f = fmt(PayloadFormat::Number, vec![field("t", None, None)]);
    f.scale = 0.1;
    f.fields[0].offset = -1.0;
    let mut d = dec(&f);
    assert_eq!(
        scalars(&d.decode("t", b" 235\r\n", 3)),
        [("dev.t".into(), 3, 22.5)]
    );
    assert_eq!(kinds(&d.decode("t", b"NaN", 3)), ["non_finite"]);
    assert_eq!(kinds(&d.decode("t", b"inf", 3)), ["non_finite"]);
    assert_eq!(kinds(&d.decode("t", b"12 C", 3)), ["number"]);

    let mut f = fmt(PayloadFormat::I16le, vec![field("acc", None, None)]);
    f.sample_rate_hz = Some(1000.0);
    f.scale = 0.5;
    let mut d = dec(&f);
    let out = d.decode("t", &[1, 0, 0xff, 0xff, 0, 0x80], 3);
    assert_eq!(
        out.readings[0].value,
        Value::Block {
            sample_rate_hz: 1000.0,
            samples: vec![0.5f32, -0.5, -16384.0].into()
        }
    );
    assert_eq!(kinds(&d.decode("t", &[1, 0, 0], 3)), ["raw_length"]);

    let mut f = fmt(PayloadFormat::F32le, vec![field("acc", None, None)]);
    f.sample_rate_hz = Some(10.0);
    let mut d = dec(&f);
    let mut p = 1.25f32.to_le_bytes().to_vec();
    p.extend(f32::NAN.to_le_bytes());
    assert_eq!(kinds(&d.decode("t", &p, 3)), ["non_finite"]);
    let out = d.decode("t", &p[..4], 3);
    assert_eq!(
        out.readings[0].value,
        Value::Block {
            sample_rate_hz: 10.0,
            samples: vec![1.25f32].into()
        }
    );
}

#[test]
fn topic_levels_name_device_and_channel() {
    let mut f = fmt(
        PayloadFormat::Number,
        vec![
            field("temperature", None, None),
            field("humidity", None, None),
        ],
    );
    f.topic = "plant/+/+".into();
    f.device_level = Some(1);
    f.channel_level = Some(2);
    f.fields[0].topic_value = Some("temp".into());
    let mut d = dec(&f);
    assert_eq!(
        scalars(&d.decode("plant/m7/temp", b"21", 1)),
        [("dev-m7.temperature".into(), 1, 21.0)]
    );
    let out = d.decode("plant/m8/humidity", b"40", 1);
    assert_eq!(scalars(&out), [("dev-m8.humidity".into(), 1, 40.0)]);
    assert_eq!(out.readings[0].device.as_ref(), "dev-m8");
    assert_eq!(
        kinds(&d.decode("plant/m7/pressure", b"1", 1)),
        ["unknown_channel"]
    );
    assert_eq!(kinds(&d.decode("plant/m 7/temp", b"1", 1)), ["topic_level"]);
    assert_eq!(kinds(&d.decode("plant", b"1", 1)), ["topic_level"]);
}

/// 2026-12-06T05:00:00Z, the gateway's clock at arrival in the bounds tests.
const NOW: TimestampUs = 1_796_533_200_000_000;

fn stamped(ts: &str) -> Vec<u8> {
    format!(r#"{{"ts":{ts},"v":1}}"#).into_bytes()
}

#[test]
fn timestamps_outside_the_bounds_are_refused() {
    let mut f = fmt(PayloadFormat::Json, vec![field("v", Some("v"), None)]);
    f.timestamp = Some(ts_field("ts", TimestampFormat::Rfc3339));
    let mut d = dec(&f);
    // Inside the default bounds: 299 s ahead, 719 h old, exactly on the bounds.
    for (ts, us) in [
        ("\"2026-12-06T05:04:59Z\"", NOW + 299_000_000),
        ("\"2026-12-06T05:05:00Z\"", NOW + 300_000_000),
        ("\"2026-11-06T06:00:00Z\"", NOW - 719 * 3_600_000_000),
        ("\"2026-11-06T05:00:00Z\"", NOW - 720 * 3_600_000_000),
    ] {
        let out = d.decode("t", &stamped(ts), NOW);
        assert_eq!(scalars(&out), [("dev.v".into(), us, 1.0)], "{ts}");
    }
    // Outside: a broken clock (years 9999, 0 and 1970), a few seconds too far.
    for (ts, bound) in [
        ("\"9999-12-31T23:59:59Z\"", "max_future_secs = 300"),
        ("\"2026-12-06T05:05:01Z\"", "max_future_secs = 300"),
        ("\"0000-01-01T00:00:00Z\"", "max_age_hours = 720"),
        ("\"1970-01-01T00:00:00Z\"", "max_age_hours = 720"),
        ("\"2026-11-06T04:59:59Z\"", "max_age_hours = 720"),
    ] {
        let out = d.decode("t", &stamped(ts), NOW);
        assert!(out.readings.is_empty(), "{ts} accepted");
        assert_eq!(kinds(&out), ["timestamp_out_of_bounds"], "{ts}");
        let detail = &out.problems[0].detail;
        // The log line says the timestamp, the bound and the setting.
        assert!(detail.contains(ts.trim_matches('"')), "{detail}");
        assert!(
            detail.contains(&format!("mqtt.timestamp.{bound}")),
            "{detail}"
        );
    }
    // Unix formats, and bounds from the profile.
    let mut f = fmt(PayloadFormat::Json, vec![field("v", Some("v"), None)]);
    let mut t = ts_field("ts", TimestampFormat::UnixS);
    t.max_future_secs = 10;
    t.max_age_hours = 1;
    f.timestamp = Some(t);
    let mut d = dec(&f);
    let now_s = NOW / 1_000_000;
    for (ts, ok) in [
        (now_s + 10, true),
        (now_s + 11, false),
        (now_s - 3600, true),
        (now_s - 3601, false),
        (0, false),
        (253_402_300_799, false),
    ] {
        let out = d.decode("t", &stamped(&ts.to_string()), NOW);
        assert_eq!(out.readings.len(), usize::from(ok), "{ts}");
        assert_eq!(out.problems.is_empty(), ok, "{ts}: {:?}", out.problems);
    }
}

#[test]
fn a_batch_keeps_its_good_elements_and_huge_bounds_do_not_overflow() {
    let mut f = fmt(PayloadFormat::Json, vec![field("v", Some("v"), None)]);
    f.batch = Some("r".into());
    f.timestamp = Some(ts_field("t", TimestampFormat::UnixUs));
    let mut d = dec(&f);
    let payload = format!(
        r#"{{"r":[{{"t":{},"v":1}},{{"t":1,"v":2}},{{"t":{},"v":3}}]}}"#,
        NOW - 1,
        NOW + 3_600_000_000
    );
    let out = d.decode("t", payload.as_bytes(), NOW);
    assert_eq!(scalars(&out), [("dev.v".into(), NOW - 1, 1.0)]);
    assert_eq!(
        kinds(&out),
        ["timestamp_out_of_bounds", "timestamp_out_of_bounds"]
    );

    let mut t = ts_field("t", TimestampFormat::UnixUs);
    t.max_future_secs = u64::MAX;
    t.max_age_hours = u64::MAX;
    f.timestamp = Some(t);
    let mut d = dec(&f);
    let out = d.decode("t", payload.as_bytes(), NOW);
    assert_eq!(out.readings.len(), 3);
}

#[test]
fn readings_stamped_on_arrival_are_not_bounded() {
    let mut f = fmt(PayloadFormat::Json, vec![field("v", Some("v"), None)]);
    f.batch = None;
    let mut d = dec(&f);
    // Whatever the arrival clock says is the reading's time.
    assert_eq!(
        scalars(&d.decode("t", br#"{"v":1}"#, 1)),
        [("dev.v".into(), 1, 1.0)]
    );
    let mut d = dec(&fmt(PayloadFormat::Number, vec![field("v", None, None)]));
    assert_eq!(
        scalars(&d.decode("t", b"2", NOW)),
        [("dev.v".into(), NOW, 2.0)]
    );
}

#[test]
fn dynamic_devices_are_capped_and_a_refused_id_leaves_no_state() {
    let mut f = fmt(PayloadFormat::Number, vec![field("t", None, None)]);
    f.topic = "plant/+/t".into();
    f.device_level = Some(1);
    f.max_devices = 5;
    let mut d = dec(&f);
    // Malformed messages from a new id do not take a place.
    assert_eq!(kinds(&d.decode("plant/bad/t", b"x", 1)), ["number"]);
    assert_eq!(d.dynamic_devices(), 0);
    for i in 0..10_000 {
        let out = d.decode(&format!("plant/n{i}/t"), b"1", 1);
        if i < 5 {
            assert_eq!(scalars(&out), [(format!("dev-n{i}.t"), 1, 1.0)]);
        } else {
            assert!(out.readings.is_empty(), "n{i} accepted");
            assert_eq!(kinds(&out), ["too_many_devices"], "n{i}");
        }
    }
    assert_eq!(d.dynamic_devices(), 5);
    let detail = &d.decode("plant/n9/t", b"1", 1).problems[0].detail;
    assert!(detail.contains("mqtt.max_devices = 5"), "{detail}");
    // Known devices carry on; the bad id still does not count.
    assert_eq!(
        scalars(&d.decode("plant/n4/t", b"2", 2)),
        [("dev-n4.t".into(), 2, 2.0)]
    );
    assert_eq!(d.dynamic_devices(), 5);
}
