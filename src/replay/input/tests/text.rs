//! Tests of reading text recordings: timestamps, CSV, JSONL, and resampling scalar series.

use super::*;
use time::macros::datetime;

fn scalars(items: &[ReplayItem]) -> Vec<(TimestampUs, f64, Option<String>)> {
    items
        .iter()
        .map(|it| match it {
            ReplayItem::Scalar {
                ts_us,
                value,
                channel,
            } => (*ts_us, *value, channel.clone()),
            other => panic!("expected a scalar, got {other:?}"),
        })
        .collect()
}

fn us(t: time::OffsetDateTime) -> TimestampUs {
    (t.unix_timestamp_nanos() / 1000) as TimestampUs
}

#[test]
fn timestamps_in_every_accepted_form() {
    let nab = us(datetime!(2013-12-02 21:15:00 UTC));
    assert_eq!(parse_timestamp("2013-12-02 21:15:00"), Some(nab));
    assert_eq!(parse_timestamp("2013-12-02T21:15:00"), Some(nab));
    assert_eq!(parse_timestamp("2013-12-02T21:15:00Z"), Some(nab));
    assert_eq!(parse_timestamp("2013-12-02 21:15:00Z"), Some(nab));
    assert_eq!(parse_timestamp("2013-12-02T22:15:00+01:00"), Some(nab));
    assert_eq!(
        parse_timestamp("2013-12-02 21:15:00.25"),
        Some(nab + 250_000)
    );
    assert_eq!(
        parse_timestamp("2013-12-02 21:15:00.123456"),
        Some(nab + 123_456)
    );
    assert_eq!(
        parse_timestamp("2013-12-02T21:15:00.0000015Z"),
        Some(nab + 2)
    );
    assert_eq!(parse_timestamp("1386018900"), Some(nab));
    assert_eq!(parse_timestamp("1386018900.123456"), Some(nab + 123_456));
    assert_eq!(parse_timestamp("1386018900.5"), Some(nab + 500_000));
    assert_eq!(parse_timestamp("1386018900.0000005"), Some(nab + 1));
    assert_eq!(parse_timestamp("1.3860189e9"), Some(nab));
    assert_eq!(parse_timestamp("-1.5"), Some(-1_500_000));
    assert_eq!(parse_timestamp(" 0 "), Some(0));
    for bad in [
        "",
        "timestamp",
        "2013-13-02 21:15:00",
        "12:00",
        "1e400",
        "NaN",
        "1.2.3",
        ".",
    ] {
        assert_eq!(parse_timestamp(bad), None, "{bad:?}");
    }
}

#[test]
fn csv_header_detection_channels_blank_lines_and_backwards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "\u{feff}timestamp,value,channel\r\n\
            2013-12-02 21:15:00,1.5,temp\r\n\
            \r\n\
            2013-12-02T21:20:00Z,\"2\",\r\n\
            1386018900,-3e1,rpm\n";
    let p = write(&dir, "a.csv", text.as_bytes());
    let mut rec = Recording::open(&p, &InputOptions::default()).expect("open");
    assert_eq!(rec.next_start_us(), None);
    let items: Vec<_> = rec.by_ref().collect::<Result<_, _>>().expect("read");
    let t = us(datetime!(2013-12-02 21:15:00 UTC));
    assert_eq!(
        scalars(&items),
        vec![
            (t, 1.5, Some("temp".to_string())),
            (t + 300_000_000, 2.0, None),
            (t, -30.0, Some("rpm".to_string())),
        ]
    );
    assert_eq!(rec.backwards(), 1);

    // Without a header the first line is data.
    let p = write(&dir, "b.csv", b"0,1\n1.5,2\n");
    assert_eq!(
        scalars(&all(&p, &InputOptions::default())),
        vec![(0, 1.0, None), (1_500_000, 2.0, None)]
    );
}

#[test]
fn csv_errors_name_path_line_and_field_and_reading_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "timestamp,value\n\
            2013-12-02 21:15:00,1\n\
            \n\
            yesterday,2\n\
            2013-12-02 21:25:00,abc\n\
            2013-12-02 21:30:00\n\
            2013-12-02 21:35:00,5\n";
    let p = write(&dir, "bad.csv", text.as_bytes());
    let out: Vec<_> = Recording::open(&p, &InputOptions::default())
        .expect("open")
        .collect();
    assert_eq!(out.len(), 5);
    let errs: Vec<String> = out
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    let path = p.display().to_string();
    assert!(
        errs[0].starts_with(&format!(
            "{path}:4: field `timestamp`: \"yesterday\" is not a time"
        )),
        "{}",
        errs[0]
    );
    assert!(errs[0].contains("RFC 3339"), "{}", errs[0]);
    assert!(
        errs[1].starts_with(&format!("{path}:5: field `value`: \"abc\" is not a number")),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].starts_with(&format!("{path}:6: 1 fields; expected `timestamp,value`")),
        "{}",
        errs[2]
    );
    assert!(matches!(out[4], Ok(ReplayItem::Scalar { value, .. }) if value == 5.0));

    // A broken date in the first row is an error, not a header.
    let p = write(&dir, "first.csv", b"2013-13-02 21:15:00,1\n");
    let e = Recording::open(&p, &InputOptions::default())
        .expect("open")
        .next()
        .expect("an item")
        .expect_err("an error");
    assert!(
        e.to_string().contains("first.csv:1: field `timestamp`"),
        "{e}"
    );
}

#[test]
fn jsonl_scalars_blocks_and_numeric_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = r#"{"ts": "2013-12-02T21:15:00Z", "value": 1.5, "channel": "temp"}

{"ts": 1386018900.25, "value": 2}
{"ts": 1386018901, "sample_rate_hz": 4, "samples": [0.5, -1]}
{"ts": "2013-12-02 21:14:00", "value": 3, "channel": null}
"#;
    let p = write(&dir, "a.ndjson", text.as_bytes());
    let mut rec = Recording::open(&p, &InputOptions::default()).expect("open");
    let items: Vec<_> = rec.by_ref().collect::<Result<_, _>>().expect("read");
    let t = us(datetime!(2013-12-02 21:15:00 UTC));
    assert_eq!(
        items,
        vec![
            ReplayItem::Scalar {
                ts_us: t,
                value: 1.5,
                channel: Some("temp".to_string())
            },
            ReplayItem::Scalar {
                ts_us: t + 250_000,
                value: 2.0,
                channel: None
            },
            ReplayItem::Block {
                ts_us: t + 1_000_000,
                sample_rate_hz: 4.0,
                samples: vec![0.5, -1.0]
            },
            ReplayItem::Scalar {
                ts_us: t - 60_000_000,
                value: 3.0,
                channel: None
            },
        ]
    );
    assert_eq!(rec.backwards(), 1);
    assert_eq!(rec.next_start_us(), None);
}

#[test]
fn jsonl_errors_name_path_line_and_what_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = r#"{"ts": 0, "value": 1}
{"ts": 0, "vale": 1}
{"ts": 0, "value": 1
{"ts": "soon", "value": 1}
{"ts": 0, "samples": [1]}
{"ts": 0, "value": 1, "samples": [1]}
{"ts": 0}
{"ts": 0, "sample_rate_hz": 10, "samples": []}
{"ts": 1, "value": 2}
"#;
    let p = write(&dir, "bad.jsonl", text.as_bytes());
    let out: Vec<_> = Recording::open(&p, &InputOptions::default())
        .expect("open")
        .collect();
    assert_eq!(out.len(), 9);
    assert!(out[0].is_ok() && out[8].is_ok());
    let path = p.display().to_string();
    let err = |i: usize| match &out[i] {
        Err(e) => e.to_string(),
        Ok(it) => panic!("line {}: {it:?}", i + 1),
    };
    let expect = [
        (2, "unknown field `vale`, expected one of `ts`, `value`"),
        (3, "EOF while parsing an object (column 20)"),
        (4, "field `ts`: \"soon\" is not a time"),
        (5, "field `sample_rate_hz`: missing for a block"),
        (6, "has both `value` and `samples`"),
        (7, "field `value`: missing"),
        (8, "field `samples`: empty"),
    ];
    for (line, text) in expect {
        let e = err(line - 1);
        assert!(e.starts_with(&format!("{path}:{line}: ")), "{e}");
        assert!(e.contains(text), "{e}");
    }
}

#[test]
fn invalid_utf8_line_is_reported_and_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(&dir, "u.csv", b"0,1\n\xff,2\n2,3\n");
    let out: Vec<_> = Recording::open(&p, &InputOptions::default())
        .expect("open")
        .collect();
    assert_eq!(out.len(), 3);
    let e = out[1].as_ref().expect_err("bad line");
    assert!(e.to_string().contains("u.csv:2: not valid UTF-8"), "{e}");
}

fn scalar(
    ts_us: TimestampUs,
    value: f64,
    channel: Option<&str>,
) -> Result<ReplayItem, ReplayInputError> {
    Ok(ReplayItem::Scalar {
        ts_us,
        value,
        channel: channel.map(str::to_string),
    })
}

#[test]
fn resample_mean_five_minute_data_to_hourly() {
    let h = 3_600_000_000;
    let five_min = 300_000_000;
    // 10:00 .. 11:55 every 5 minutes (values i), nothing at 12:xx, one at 13:30.
    let base = us(datetime!(2014-02-04 10:00:00 UTC));
    let mut input: Vec<_> = (0..24)
        .map(|i| scalar(base + i * five_min, i as f64, None))
        .collect();
    input.push(scalar(base + 3 * h + h / 2, 100.0, None));
    let out: Vec<_> = resample_mean(input, 3600)
        .collect::<Result<_, _>>()
        .expect("resample");
    assert_eq!(
        scalars(&out),
        vec![
            (base + h, 5.5, None),       // mean of 0..=11, stamped 11:00
            (base + 2 * h, 17.5, None),  // mean of 12..=23, stamped 12:00
            (base + 4 * h, 100.0, None), // 12:xx is empty: nothing for 13:00
        ]
    );
}

#[test]
fn resample_mean_keeps_channels_apart_and_rejects_blocks() {
    let input = vec![
        scalar(10_000_000, 1.0, Some("a")),
        scalar(20_000_000, 10.0, Some("b")),
        scalar(30_000_000, 3.0, Some("a")),
        scalar(-1, 7.0, None), // before the epoch: the period ending at 0
    ];
    let out: Vec<_> = resample_mean(input, 60)
        .collect::<Result<_, _>>()
        .expect("resample");
    assert_eq!(
        scalars(&out),
        vec![
            (60_000_000, 2.0, Some("a".to_string())),
            (60_000_000, 10.0, Some("b".to_string())),
            (0, 7.0, None),
        ]
    );

    let block = Ok(ReplayItem::Block {
        ts_us: 5,
        sample_rate_hz: 1.0,
        samples: vec![0.0],
    });
    let e = resample_mean(vec![block], 60)
        .next()
        .expect("an item")
        .expect_err("blocks are rejected");
    assert!(e.to_string().contains("scalar items only"), "{e}");

    let mut zero = resample_mean(vec![scalar(0, 1.0, None)], 0);
    let e = zero.next().expect("an item").expect_err("period 0");
    assert!(e.to_string().contains("period 0 s"), "{e}");
    assert!(zero.next().is_none());
}

#[test]
fn nab_machine_temperature_slice() {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/nab/machine_temperature_slice.csv");
    let mut rec = Recording::open(&p, &InputOptions::default()).expect("open");
    let items: Vec<_> = rec.by_ref().collect::<Result<_, _>>().expect("read");
    assert_eq!(items.len(), 1500);
    assert_eq!(rec.backwards(), 0);
    let s = scalars(&items);
    assert_eq!(
        s[0],
        (us(datetime!(2014-02-04 16:05:00 UTC)), 96.85485217, None)
    );
    assert_eq!(s[1499].0, us(datetime!(2014-02-09 21:00:00 UTC)));
    assert_eq!(s[1499].1, 91.80069012);
    // Hourly means of the 5-minute series: stamped on the hour, one per hour.
    let hourly: Vec<_> = resample_mean(items.into_iter().map(Ok), 3600)
        .collect::<Result<_, _>>()
        .expect("resample");
    assert_eq!(hourly.len(), 126);
    assert!(hourly.iter().all(|it| it.ts_us() % 3_600_000_000 == 0));
    assert_eq!(hourly[0].ts_us(), us(datetime!(2014-02-04 17:00:00 UTC)));
}
