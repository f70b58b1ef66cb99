//! Validation of the MQTT/serial profile fields added for the sources
//! (`device_level`, `channel_level`, `topic_value`, `max_payload_bytes`, JSON
//! `sample_rate_hz`, `poll_command` escapes): each mistake is reported with its
//! field, and a correct profile passes.

use edgegw::profiles::load_profile;

fn check(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, text).unwrap();
    let mut diags = Vec::new();
    load_profile(&path, &mut diags);
    diags
        .iter()
        .map(|d| format!("{}: {}", d.field, d.message))
        .collect()
}

const HEAD: &str = r#"
vendor = "T"
model = "M"
[channels.temperature]
sensor_type = "temperature"
unit = "°C"
[channels.humidity]
sensor_type = "humidity"
unit = "%RH"
"#;

#[test]
fn a_good_level_mapping_passes() {
    let p = format!(
        "{HEAD}[mqtt]\ntopic = \"plant/+/+\"\npayload = \"number\"\ndevice_level = 1\nchannel_level = 2\n\
         [[mqtt.fields]]\nchannel = \"temperature\"\ntopic_value = \"temp\"\n\
         [[mqtt.fields]]\nchannel = \"humidity\"\n"
    );
    assert_eq!(check(&p), Vec::<String>::new());
}

#[test]
fn level_mistakes_are_reported_by_field() {
    let p = format!(
        "{HEAD}[mqtt]\ntopic = \"plant/+/data\"\npayload = \"number\"\ndevice_level = 2\nchannel_level = 5\nmax_payload_bytes = 0\n\
         [[mqtt.fields]]\nchannel = \"temperature\"\n\
         [[mqtt.fields]]\nchannel = \"humidity\"\ntopic_value = \"temperature\"\n"
    );
    let d = check(&p);
    let has = |field: &str, text: &str| {
        assert!(
            d.iter().any(|l| l.starts_with(field) && l.contains(text)),
            "no {field:?} with {text:?} in {d:#?}"
        )
    };
    has("mqtt.device_level", "\"data\", not a `+` wildcard");
    has("mqtt.channel_level", "has only 3 levels");
    has("mqtt.max_payload_bytes", "between 1 and");
    has("mqtt.fields[1]", "already decoded by mqtt.fields[0]");
}

#[test]
fn same_level_for_device_and_channel_and_bad_rate() {
    let p = format!(
        "{HEAD}[mqtt]\ntopic = \"plant/#\"\npayload = \"json\"\nsample_rate_hz = -1.0\ndevice_level = 3\nchannel_level = 3\n\
         [[mqtt.fields]]\nchannel = \"temperature\"\npath = \"t\"\n"
    );
    let d = check(&p);
    assert!(
        d.iter()
            .any(|l| l.starts_with("mqtt.channel_level") && l.contains("both")),
        "{d:#?}"
    );
    assert!(
        d.iter().any(|l| l.starts_with("mqtt.sample_rate_hz")),
        "{d:#?}"
    );
}

#[test]
fn bad_poll_command_escape() {
    let p = format!(
        "{HEAD}[serial]\nframe = {{ terminator = \"\\n\" }}\nparser = \"delimited\"\npoll_command = 'SEND\\q'\n\
         [[serial.fields]]\nchannel = \"temperature\"\nindex = 0\n"
    );
    let d = check(&p);
    assert!(
        d.iter()
            .any(|l| l.starts_with("serial.poll_command") && l.contains("unknown escape")),
        "{d:#?}"
    );
}

#[test]
fn timestamp_bounds_and_max_devices_are_checked() {
    let p = format!(
        "{HEAD}[mqtt]\ntopic = \"plant/+/data\"\npayload = \"json\"\ndevice_level = 1\nmax_devices = 0\n\
         timestamp = {{ path = \"ts\", format = \"unix_s\", max_future_secs = 0, max_age_hours = 0 }}\n\
         [[mqtt.fields]]\nchannel = \"temperature\"\npath = \"t\"\n"
    );
    let d = check(&p);
    let has = |field: &str, text: &str| {
        assert!(
            d.iter().any(|l| l.starts_with(field) && l.contains(text)),
            "no {field:?} with {text:?} in {d:#?}"
        )
    };
    has("mqtt.max_devices", "between 1 and");
    has("mqtt.timestamp.max_future_secs", "greater than 0");
    has("mqtt.timestamp.max_age_hours", "greater than 0");

    // Negative values are reported at their field too.
    let p = format!(
        "{HEAD}[mqtt]\ntopic = \"plant/+/data\"\npayload = \"json\"\ndevice_level = 1\nmax_devices = -3\n\
         timestamp = {{ path = \"ts\", format = \"unix_s\", max_age_hours = -1 }}\n\
         [[mqtt.fields]]\nchannel = \"temperature\"\npath = \"t\"\n"
    );
    let d = check(&p);
    assert!(
        d.iter().any(|l| l.starts_with("mqtt.max_devices")),
        "{d:#?}"
    );
    assert!(
        d.iter()
            .any(|l| l.starts_with("mqtt.timestamp.max_age_hours")),
        "{d:#?}"
    );
}

#[test]
fn good_timestamp_bounds_and_max_devices_pass() {
    let p = format!(
        "{HEAD}[mqtt]\ntopic = \"plant/+/data\"\npayload = \"json\"\ndevice_level = 1\nmax_devices = 50\n\
         timestamp = {{ path = \"ts\", format = \"rfc3339\", max_future_secs = 60, max_age_hours = 200000 }}\n\
         [[mqtt.fields]]\nchannel = \"temperature\"\npath = \"t\"\n"
    );
    assert_eq!(check(&p), Vec::<String>::new());
}

#[test]
fn max_devices_without_device_level_is_a_warning() {
    let p = format!(
        "{HEAD}[mqtt]\ntopic = \"plant/m7/data\"\npayload = \"number\"\nmax_devices = 50\n\
         [[mqtt.fields]]\nchannel = \"temperature\"\n"
    );
    let d = check(&p);
    assert!(
        d.iter()
            .any(|l| l.starts_with("mqtt.max_devices") && l.contains("device_level")),
        "{d:#?}"
    );
}
