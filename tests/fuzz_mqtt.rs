//! Hostile input for every MQTT payload decoder (issue #13, item 2).
//!
//! Decoders are built the way the source builds them: from a profile file that
//! passed `load_profile`, through `Decoder::new`. Covered: `number` (plain, and with
//! device and channel topic levels), `json` (plain fields and nested paths, each
//! timestamp format, a batch, waveform arrays), `csv` (three delimiters), `f32le`,
//! `i16le`, and the shipped MQTT profiles (WiSense VB-3, the replay profiles).
//!
//! Each decoder gets arbitrary bytes, structure-aware JSON (the profile's own keys
//! with hostile values: huge and out-of-range numbers, `"NaN"` strings, wrong types,
//! timestamps from year 0 to 9999, deep nesting, long arrays and batches), CSV and
//! number text, raw sample buffers and arbitrary topics, several messages per
//! decoder. Properties, for every message:
//! - no panic;
//! - bounded output: never more readings (or waveform samples) than the payload can
//!   hold, every value finite, and at most a fixed multiple of the payload's size
//!   allocated while decoding;
//! - a message that gives no reading is counted: it reports at least one problem,
//!   and every problem has a kind (the error counter) and a detail (the log line);
//! - readings belong to the configured device (or `<device>-<topic level>`) and a
//!   channel of the profile, stamped inside the years 1970..9999.

#[macro_use]
#[path = "fuzz/support.rs"]
mod support;

use edgegw::profiles::{load_profile, LoadedProfile, PayloadFormat};
use edgegw::sources::mqtt::{Decoded, Decoder};
use edgegw::sources::Value;
use proptest::prelude::*;
use std::sync::OnceLock;

#[global_allocator]
static ALLOC: support::Counting = support::Counting;

const CHANNELS: &str = r#"
vendor = "Fuzz"
model = "F-1"
[channels.a]
sensor_type = "vibration"
unit = "mm/s"
[channels.b]
sensor_type = "temperature"
unit = "°C"
[channels.c]
sensor_type = "humidity"
unit = "%RH"
"#;

/// Profiles written for the fuzzer: (name, `[mqtt]` section). Each must load.
const SYNTHETIC: &[(&str, &str)] = &[
    (
        "number",
        "[mqtt]\ntopic = \"f/+/n\"\npayload = \"number\"\nscale = 0.1\n\
         [[mqtt.fields]]\nchannel = \"a\"\noffset = -1.0\n",
    ),
    (
        "number-levels",
        "[mqtt]\ntopic = \"plant/+/+\"\npayload = \"number\"\ndevice_level = 1\nchannel_level = 2\n\
         [[mqtt.fields]]\nchannel = \"a\"\ntopic_value = \"temp\"\n\
         [[mqtt.fields]]\nchannel = \"b\"\n",
    ),
    (
        "json",
        "[mqtt]\ntopic = \"f/json\"\npayload = \"json\"\n\
         [[mqtt.fields]]\nchannel = \"a\"\npath = \"v\"\n\
         [[mqtt.fields]]\nchannel = \"b\"\npath = \"env.temp\"\nscale = 1e300\n\
         [[mqtt.fields]]\nchannel = \"c\"\npath = \"arr.1\"\n",
    ),
    (
        "json-rfc3339",
        "[mqtt]\ntopic = \"f/+/+/data\"\npayload = \"json\"\ndevice_level = 2\n\
         timestamp = { path = \"ts\", format = \"rfc3339\" }\n\
         [[mqtt.fields]]\nchannel = \"a\"\npath = \"v\"\n\
         [[mqtt.fields]]\nchannel = \"b\"\npath = \"env.temp\"\n",
    ),
    (
        "json-unix-s",
        "[mqtt]\ntopic = \"f/s\"\npayload = \"json\"\n\
         timestamp = { path = \"t\", format = \"unix_s\" }\n\
         [[mqtt.fields]]\nchannel = \"a\"\npath = \"v\"\n",
    ),
    (
        "json-batch-ms",
        "[mqtt]\ntopic = \"f/batch\"\npayload = \"json\"\nbatch = \"data.readings\"\n\
         timestamp = { path = \"t\", format = \"unix_ms\" }\n\
         [[mqtt.fields]]\nchannel = \"a\"\npath = \"v\"\n\
         [[mqtt.fields]]\nchannel = \"b\"\npath = \"env.temp\"\n",
    ),
    (
        "json-wave-us",
        "[mqtt]\ntopic = \"f/wave\"\npayload = \"json\"\nsample_rate_hz = 25600.0\n\
         timestamp = { path = \"ts\", format = \"unix_us\" }\n\
         [[mqtt.fields]]\nchannel = \"a\"\npath = \"samples\"\nscale = 2.0\n",
    ),
    (
        "csv",
        "[mqtt]\ntopic = \"f/csv\"\npayload = \"csv\"\n\
         [[mqtt.fields]]\nchannel = \"a\"\ncolumn = 0\n\
         [[mqtt.fields]]\nchannel = \"b\"\ncolumn = 2\noffset = 1e308\n",
    ),
    (
        "csv-semicolon",
        "[mqtt]\ntopic = \"f/csv2\"\npayload = \"csv\"\ndelimiter = \";\"\n\
         [[mqtt.fields]]\nchannel = \"c\"\ncolumn = 1\n",
    ),
    (
        "csv-multi",
        "[mqtt]\ntopic = \"f/csv3\"\npayload = \"csv\"\ndelimiter = \"::\"\n\
         [[mqtt.fields]]\nchannel = \"a\"\ncolumn = 0\n\
         [[mqtt.fields]]\nchannel = \"b\"\ncolumn = 1\n",
    ),
    (
        "f32le",
        "[mqtt]\ntopic = \"f/raw\"\npayload = \"f32le\"\nsample_rate_hz = 1000.0\nscale = 1e30\n\
         [[mqtt.fields]]\nchannel = \"a\"\n",
    ),
    (
        "i16le",
        "[mqtt]\ntopic = \"f/+/i16\"\npayload = \"i16le\"\nsample_rate_hz = 12000.0\nscale = 0.00030518509\n\
         device_level = 1\n\
         [[mqtt.fields]]\nchannel = \"a\"\n",
    ),
];

/// Shipped profiles with an `[mqtt]` section.
const SHIPPED: &[&str] = &[
    "hardware-profiles/wisense-vb3.toml",
    "config/replay/profiles/cwru-drive-end.toml",
    "config/replay/profiles/nab-machine-temperature.toml",
    "config/replay/profiles/pronostia-horizontal.toml",
];

/// Every profile, loaded once (the temp dir lives as long as the process).
fn profiles() -> &'static [LoadedProfile] {
    static P: OnceLock<Vec<LoadedProfile>> = OnceLock::new();
    P.get_or_init(|| {
        // The files are only read here: the decoders use the parsed profiles.
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let mut paths: Vec<_> = SHIPPED.iter().map(|p| support::repo().join(p)).collect();
        for (name, mqtt) in SYNTHETIC {
            let path = dir.join(format!("{name}.toml"));
            std::fs::write(&path, format!("{CHANNELS}{mqtt}")).expect("write profile");
            paths.push(path);
        }
        paths
            .iter()
            .map(|path| {
                let mut diags = Vec::new();
                let p = load_profile(path, &mut diags);
                let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).collect();
                assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
                p.unwrap_or_else(|| panic!("{} did not load", path.display()))
            })
            .collect()
    })
}

const DEVICE: &str = "dev1";

fn decoder(p: &LoadedProfile) -> Decoder {
    let fmt = p.profile.mqtt.as_ref().expect("an [mqtt] section");
    Decoder::new(DEVICE, fmt, |c| {
        p.profile
            .channels
            .get(c)
            .map(|ch| (ch.sensor_type, ch.unit.clone()))
    })
    .unwrap_or_else(|e| panic!("{}: {e}", p.name))
}

// ---------------------------------------------------------------------------
// Inputs.

/// Number tokens a JSON or text parser can trip on.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1.5",
    "2.31",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "5e-324",
    "1e309",
    "-1e400",
    "123456789012345678901234567890",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "9223372036854775807",
    "1E+2",
    "0.0000000000000000000000000000001",
    "00",
    "1.",
    ".5",
    "+1",
    "0x10",
    "NaN",
    "-Infinity",
    "inf",
];

/// Timestamp values: plausible ones in each unit, the edges of 1970..9999, overflow.
const TIMESTAMPS: &[&str] = &[
    "1796533200",
    "1796533200000",
    "1796533200000000",
    "1796533200.5",
    "0",
    "-1",
    "253402300799",
    "253402300800",
    "253402300799999999",
    "1e300",
    "-1e300",
    "9223372036854775807",
    "18446744073709551615",
    "\"2026-12-06T05:00:00Z\"",
    "\"2026-12-06T05:00:00.123456789+01:00\"",
    "\"9999-12-31T23:59:59Z\"",
    "\"0000-01-01T00:00:00Z\"",
    "\"1970-01-01T00:00:00Z\"",
    "\"1969-12-31T23:59:59Z\"",
    "\"2016-12-31T23:59:60Z\"",
    "\"2026-02-30T00:00:00Z\"",
    "\"2026-12-06T05:00:00\"",
    "\"2026-12-06 05:00:00Z\"",
    "\"\"",
    "\"yesterday\"",
    "null",
    "[]",
    "{}",
];

const KEYS: &[&str] = &[
    "v", "ts", "t", "env", "temp", "arr", "data", "readings", "samples", "value", "vrms", "apeak",
    "battery", "0", "1", "",
];

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(list).prop_map(str::to_string)
}

fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        pick(&[
            "\"NaN\"",
            "\"inf\"",
            "\"1.5\"",
            "\"\"",
            "\"\\u0000\"",
            "\"\\ud800\""
        ]),
        "\\PC{0,12}".prop_map(|s| serde_json::to_string(&s).expect("string")),
        (1usize..5000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
    ]
}

/// A JSON value as text (not always valid JSON: number tokens come from
/// [`NUMBERS`]).
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        3 => pick(NUMBERS),
        2 => any::<f64>().prop_map(|x| if x.is_finite() { format!("{x:e}") } else { "0".into() }),
        1 => any::<i64>().prop_map(|x| x.to_string()),
        1 => pick(&["null", "true", "false"]),
        1 => json_string(),
    ];
    leaf.prop_recursive(5, 128, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((pick(KEYS), inner), 0..6).prop_map(|kv| {
                let body: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

/// An array of samples: short hostile ones, or a long uniform one.
fn samples() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(
            prop_oneof![
                3 => any::<i16>().prop_map(|x| x.to_string()),
                1 => pick(NUMBERS),
                1 => pick(&["null", "\"1\"", "[]", "{}"])
            ],
            0..64
        )
        .prop_map(|v| format!("[{}]", v.join(","))),
        (
            0usize..30_000,
            pick(&["0", "1", "-1.5", "1e300", "1e38", "3.5e38"])
        )
            .prop_map(|(n, x)| format!("[{}]", vec![x; n].join(","))),
    ]
}

/// A document shaped like what the profiles expect, each key present or not, with
/// hostile values.
fn shaped_json() -> impl Strategy<Value = String> {
    let opt = |s: BoxedStrategy<String>| prop::option::weighted(0.7, s);
    let value = || prop_oneof![3 => pick(NUMBERS), 1 => json_value()].boxed();
    let element =
        (opt(pick(TIMESTAMPS).boxed()), opt(value()), opt(value())).prop_map(|(t, v, temp)| {
            let mut kv = Vec::new();
            if let Some(t) = t {
                kv.push(format!("\"t\":{t}"));
            }
            if let Some(v) = v {
                kv.push(format!("\"v\":{v}"));
            }
            if let Some(temp) = temp {
                kv.push(format!("\"env\":{{\"temp\":{temp}}}"));
            }
            format!("{{{}}}", kv.join(","))
        });
    let batch = prop_oneof![
        4 => prop::collection::vec(element, 0..24).prop_map(|v| format!("[{}]", v.join(","))),
        1 => (0usize..5_000).prop_map(|n| format!("[{}]", vec!["{\"v\":1}"; n].join(","))),
        1 => json_value(),
    ];
    (
        (opt(pick(TIMESTAMPS).boxed()), opt(pick(TIMESTAMPS).boxed())),
        (opt(value()), opt(value()), opt(value())),
        (opt(value()), opt(value()), opt(value())),
        (opt(samples().boxed()), opt(batch.boxed())),
    )
        .prop_map(
            |((ts, t), (v, temp, arr), (vrms, apeak, value), (samples, batch))| {
                let mut kv = Vec::new();
                let mut put = |k: &str, v: Option<String>| {
                    if let Some(v) = v {
                        kv.push(format!("\"{k}\":{v}"));
                    }
                };
                put("ts", ts);
                put("t", t);
                put("v", v);
                put("env", temp.map(|x| format!("{{\"temp\":{x}}}")));
                put("arr", arr.map(|x| format!("[0,{x}]")));
                put("vrms", vrms);
                put("apeak", apeak);
                put("temp", value.clone());
                put("battery", value.clone());
                put("value", value);
                put("samples", samples);
                put("data", batch.map(|b| format!("{{\"readings\":{b}}}")));
                format!("{{{}}}", kv.join(","))
            },
        )
}

/// Deeply nested arrays or objects around a number.
fn nested() -> impl Strategy<Value = String> {
    (1usize..20_000, any::<bool>()).prop_map(|(depth, arrays)| {
        if arrays {
            format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
        } else {
            format!("{}1{}", "{\"v\":".repeat(depth), "}".repeat(depth))
        }
    })
}

fn csv_text() -> impl Strategy<Value = String> {
    let cell = prop_oneof![
        3 => pick(NUMBERS),
        1 => pick(&["", " ", " 7 ", "x", "\"1\"", "1,5", "\u{0}", "\u{feff}1"]),
        1 => "\\PC{0,6}",
    ];
    let line = (
        prop::collection::vec(cell, 0..6),
        pick(&[",", ";", "::", "\t"]),
    )
        .prop_map(|(cells, d)| cells.join(&d));
    (
        prop::collection::vec(line, 0..12),
        pick(&["\n", "\r\n", "\r", "\n\n"]),
    )
        .prop_map(|(lines, nl)| lines.join(&nl))
}

fn raw_samples() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        prop::collection::vec(
            prop_oneof![
                any::<f32>(),
                Just(f32::NAN),
                Just(f32::INFINITY),
                Just(f32::MAX),
                Just(f32::MIN_POSITIVE)
            ],
            0..150
        )
        .prop_map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        (0usize..40_000).prop_map(|n| vec![0x7f; n]),
    ]
}

/// Anything a publisher could send.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..300),
        4 => shaped_json().prop_map(String::into_bytes),
        2 => json_value().prop_map(String::into_bytes),
        1 => nested().prop_map(String::into_bytes),
        2 => csv_text().prop_map(String::into_bytes),
        1 => pick(NUMBERS).prop_map(|n| format!(" {n}\r\n").into_bytes()),
        2 => raw_samples(),
    ]
}

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => pick(&["plant", "f", "m7", "temp", "n", "data", "i16", "+", "#", "", ".", "..", "-", "a b", "ü", "\u{0}", "b", "csv"]),
        1 => "\\PC{0,10}",
        1 => (1usize..3000).prop_map(|n| "m".repeat(n)),
    ]
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 0..7).prop_map(|l| l.join("/"))
}

/// The arrival clock: anywhere in the years 1970..9999 (a gateway whose clock was
/// reset, or far off).
fn arrival() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => Just(1_796_533_200_000_000i64),
        1 => 0i64..=253_402_300_799_000_000,
    ]
}

// ---------------------------------------------------------------------------
// Properties.

/// Checks one decoded message against the payload it came from.
fn check(p: &LoadedProfile, topic: &str, payload: &[u8], arrival: i64, out: &Decoded, peak: usize) {
    let fmt = p.profile.mqtt.as_ref().expect("mqtt");
    let fields = fmt.fields.len();
    let ctx = || {
        format!(
            "profile {}, topic {topic:?}, {} payload bytes {:?}",
            p.name,
            payload.len(),
            String::from_utf8_lossy(&payload[..payload.len().min(200)])
        )
    };
    // Bounded output.
    let elements = payload.len() / 2 + 1;
    let max_readings = match fmt.payload {
        PayloadFormat::Number | PayloadFormat::F32le | PayloadFormat::I16le => 1,
        PayloadFormat::Csv => {
            fields
                * (payload
                    .iter()
                    .filter(|b| **b == b'\n' || **b == b'\r')
                    .count()
                    + 1)
        }
        PayloadFormat::Json => fields * elements,
    };
    assert!(
        out.readings.len() <= max_readings,
        "{} readings, at most {max_readings} possible: {}",
        out.readings.len(),
        ctx()
    );
    let samples: usize = out
        .readings
        .iter()
        .map(|r| match &r.value {
            Value::Block { samples, .. } => samples.len(),
            _ => 0,
        })
        .sum();
    match fmt.payload {
        PayloadFormat::F32le => {
            assert!(samples <= payload.len() / 4, "{samples} samples: {}", ctx())
        }
        PayloadFormat::I16le => {
            assert!(samples <= payload.len() / 2, "{samples} samples: {}", ctx())
        }
        _ => assert!(samples <= elements, "{samples} samples: {}", ctx()),
    }
    assert!(
        out.problems.len() <= fields * (elements + 1) + 1,
        "{} problems: {}",
        out.problems.len(),
        ctx()
    );
    // A small input makes no big allocation: the parsed JSON tree is the biggest
    // thing, up to ~110 bytes per payload byte for a batch of one-key objects, ~140
    // with a reading and a problem per element (see
    // `json_amplification_at_the_default_size_limit`). The bound catches what grows
    // faster than the input (a capacity taken from the payload, a quadratic copy).
    let budget = 256 * payload.len() + 64 * 1024;
    assert!(
        peak <= budget,
        "{peak} bytes allocated, budget {budget}: {}",
        ctx()
    );
    // Every dropped message is counted, and says why.
    if out.readings.is_empty() {
        assert!(
            !out.problems.is_empty(),
            "no reading and no problem: {}",
            ctx()
        );
    }
    for pr in &out.problems {
        assert!(
            !pr.kind.is_empty() && pr.kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "problem kind {:?}: {}",
            pr.kind,
            ctx()
        );
        assert!(
            !pr.detail.trim().is_empty(),
            "{:?} without detail: {}",
            pr.kind,
            ctx()
        );
        assert!(
            pr.detail.len() <= 4096,
            "{} byte detail: {}",
            pr.detail.len(),
            ctx()
        );
    }
    // Values and identities.
    for r in &out.readings {
        match &r.value {
            Value::Scalar(v) => assert!(v.is_finite(), "{}: {v}: {}", r.sensor_id, ctx()),
            Value::Block {
                sample_rate_hz,
                samples,
            } => {
                assert!(
                    sample_rate_hz.is_finite() && *sample_rate_hz > 0.0,
                    "{}",
                    ctx()
                );
                assert!(!samples.is_empty(), "empty block: {}", ctx());
                // Finding 1 (docs/fuzzing.md, fixed): a JSON sample beyond the f32 range.
                if let Some((i, x)) = samples.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                    panic!("{}: sample {i} is {x}: {}", r.sensor_id, ctx());
                }
            }
            other => panic!("{}: {other:?}: {}", r.sensor_id, ctx()),
        }
        assert!(
            p.profile.channels.contains_key(r.channel.as_ref()),
            "{}: {}",
            r.channel,
            ctx()
        );
        assert_eq!(
            r.sensor_id.as_ref(),
            format!("{}.{}", r.device, r.channel),
            "{}",
            ctx()
        );
        let dev = r.device.as_ref();
        match fmt.device_level {
            None => assert_eq!(dev, DEVICE, "{}", ctx()),
            Some(l) => {
                let level = topic.split('/').nth(l).unwrap_or_default();
                assert_eq!(dev, format!("{DEVICE}-{level}"), "{}", ctx());
                assert!(
                    !level.is_empty()
                        && level
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)),
                    "device named after topic level {level:?}: {}",
                    ctx()
                );
            }
        }
        if fmt.timestamp.is_some() && fmt.payload == PayloadFormat::Json {
            assert!(
                (0..=253_402_300_799_999_999).contains(&r.ts_us),
                "{}: timestamp {} outside 1970..9999: {}",
                r.sensor_id,
                r.ts_us,
                ctx()
            );
        } else {
            assert_eq!(r.ts_us, arrival, "{}", ctx());
        }
        assert_eq!(r.quality, 1.0, "{}", ctx());
    }
}

fn decode_all(p: &LoadedProfile, messages: &[(String, Vec<u8>, i64)]) {
    let mut d = decoder(p);
    let fmt = p.profile.mqtt.as_ref().expect("mqtt");
    for (topic, payload, arrival) in messages {
        // Each message twice: on its fuzzed topic, and on the profile's own topic
        // shape, so that level captures see plausible topics as well as hostile ones.
        let (out, peak, _) = support::measure(|| d.decode(topic, payload, *arrival));
        check(p, topic, payload, *arrival, &out, peak);
        let own = fmt.topic.replace('+', "n1").replace('#', "x/y");
        let (out, peak, _) = support::measure(|| d.decode(&own, payload, *arrival));
        check(p, &own, payload, *arrival, &out, peak);
    }
}

fn message() -> impl Strategy<Value = (String, Vec<u8>, i64)> {
    (topic(), payload(), arrival())
}

proptest! {
    #![proptest_config(support::config(1000, regressions!("fuzz_mqtt")))]

    /// Every decoder, a few messages each: arbitrary bytes, shaped JSON, CSV, numbers
    /// and raw buffers on arbitrary topics.
    #[test]
    fn every_decoder_survives_hostile_messages(
        which in 0usize..64,
        messages in prop::collection::vec(message(), 1..4),
    ) {
        let ps = profiles();
        decode_all(&ps[which % ps.len()], &messages);
    }

    /// The JSON decoders on documents shaped like their profiles, with hostile values.
    #[test]
    fn json_decoders_survive_hostile_values(
        which in 0usize..64,
        doc in shaped_json(),
        arrival in arrival(),
    ) {
        let json: Vec<&LoadedProfile> = profiles()
            .iter()
            .filter(|p| p.profile.mqtt.as_ref().is_some_and(|m| m.payload == PayloadFormat::Json))
            .collect();
        decode_all(json[which % json.len()], &[(String::new(), doc.into_bytes(), arrival)]);
    }
}

/// Inputs that found bugs or edge cases once, kept as plain regression checks.
#[test]
fn seeds_from_tests_fuzz_mqtt() {
    let dir = support::fuzz_dir().join("seeds/mqtt");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/fuzz/seeds/mqtt") {
        let path = entry.expect("entry").path();
        let payload = std::fs::read(&path).expect("seed");
        for p in profiles() {
            decode_all(
                p,
                &[(
                    String::from("plant/m7/temp"),
                    payload.clone(),
                    1_796_533_200_000_000,
                )],
            );
        }
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}

/// The worst JSON shapes at the default `max_payload_bytes` (256 KiB): the decoder
/// parses into a `serde_json::Value` tree, so small objects cost far more than
/// their bytes (finding 7 in docs/fuzzing.md). Measured: 20x for a waveform array,
/// 50x for `[{},...]`, ~110x for a batch of `{"v":1}` or `{"":0}` (a B-tree node
/// per one-key object, plus a reading or a problem per element): ~29 MiB for one
/// message. This keeps it from getting worse.
#[test]
fn json_amplification_at_the_default_size_limit() {
    let ps = profiles();
    let find = |n: &str| ps.iter().find(|p| p.name == n).expect(n);
    let n = 250 * 1024;
    let elems = |e: &str, k: usize| vec![e; n / k].join(",");
    let shapes: Vec<(&LoadedProfile, String)> = vec![
        (
            find("json-batch-ms"),
            format!(
                "{{\"t\":1796533200000,\"data\":{{\"readings\":[{}]}}}}",
                elems("{\"v\":1}", 8)
            ),
        ),
        (
            find("json-batch-ms"),
            format!("{{\"data\":{{\"readings\":[{}]}}}}", elems("{}", 3)),
        ),
        (
            find("json-batch-ms"),
            format!("{{\"data\":{{\"readings\":[{}]}}}}", elems("{\"\":0}", 7)),
        ),
        (
            find("json-wave-us"),
            format!(
                "{{\"ts\":1796533200000000,\"samples\":[{}]}}",
                elems("0", 2)
            ),
        ),
        (find("json"), format!("[{}]", elems("{\"a\":[]}", 9))),
    ];
    for (p, payload) in shapes {
        assert!(payload.len() <= 256 * 1024);
        let mut d = decoder(p);
        let (out, peak, _) =
            support::measure(|| d.decode("", payload.as_bytes(), 1_796_533_200_000_000));
        assert!(
            !out.problems.iter().any(|p| p.kind == "payload_too_large"),
            "{}",
            p.name
        );
        let budget = 160 * payload.len();
        assert!(
            peak <= budget,
            "{}: {} payload bytes allocated {peak} bytes at once ({}x)",
            p.name,
            payload.len(),
            peak / payload.len()
        );
    }
}
