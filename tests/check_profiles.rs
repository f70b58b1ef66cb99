//! Every validation message of the hardware profile format: each case is a small
//! profile with one mistake, and the diagnostic it must produce (field, line, words).

use edgegw::diag::Diagnostic;
use edgegw::profiles::load_profile;
use std::path::Path;

/// A valid Modbus profile; cases append or replace parts of it.
const BASE: &str = r#"vendor = "Acme"
model = "VT-1"

[channels.rms]
sensor_type = "vibration"
unit = "mm/s"

[channels.temp]
sensor_type = "temperature"
unit = "°C"

[modbus]
[[modbus.registers]]
channel = "rms"
table = "input"
address = 0
type = "f32"

[[modbus.registers]]
channel = "temp"
table = "input"
address = 10
type = "i16"
scale = 0.1
"#;

fn check(text: &str) -> Vec<Diagnostic> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, text).unwrap();
    let mut diags = Vec::new();
    let loaded = load_profile(&path, &mut diags);
    let errors = diags.iter().filter(|d| d.is_error()).count();
    assert_eq!(loaded.is_some(), errors == 0, "{diags:#?}");
    for d in &diags {
        assert_eq!(d.file, path, "every message names the file");
    }
    diags
}

/// Asserts exactly one error, at `line`, about `field`, containing every word.
#[track_caller]
fn one_error(text: &str, line: usize, field: &str, words: &[&str]) {
    let diags = check(text);
    let errors: Vec<&Diagnostic> = diags.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    let d = errors[0];
    assert_eq!(d.field, field, "{d}");
    assert_eq!(d.line, line, "{d}");
    for w in words {
        assert!(d.message.contains(w), "message {:?} lacks {w:?}", d.message);
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in text"))
}

#[test]
fn the_base_profile_is_valid() {
    let diags = check(BASE);
    assert!(diags.is_empty(), "{diags:#?}");
}

#[test]
fn every_shipped_profile_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware-profiles");
    let files = edgegw::profiles::profile_files(&dir).unwrap();
    assert!(files.len() >= 3, "at least three example profiles ship");
    for f in files {
        let mut diags = Vec::new();
        let p = load_profile(&f, &mut diags);
        assert!(
            p.is_some() && diags.is_empty(),
            "{}: {diags:#?}",
            f.display()
        );
    }
}

#[test]
fn several_mistakes_give_one_line_each_with_the_right_line() {
    // The four mistakes from the issue: an unknown key, type = "f33", a register
    // overlap and a missing unit.
    let text = r#"vendor = "Acme"
model = "VT-1"

[channels.rms]
sensor_type = "vibration"
unit = "mm/s"
colour = "red"

[channels.peak]
sensor_type = "vibration"

[channels.temp]
sensor_type = "temperature"
unit = "°C"

[modbus]
[[modbus.registers]]
channel = "rms"
table = "input"
address = 0
type = "f33"

[[modbus.registers]]
channel = "peak"
table = "input"
address = 4
type = "f32"

[[modbus.registers]]
channel = "temp"
table = "input"
address = 5
type = "i16"
"#;
    let diags = check(text);
    let lines: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert_eq!(diags.len(), 4, "{lines:#?}");
    let find = |field: &str| {
        diags
            .iter()
            .find(|d| d.field == field)
            .unwrap_or_else(|| panic!("no message for {field}: {lines:#?}"))
    };
    let d = find("channels.rms.colour");
    assert_eq!(d.line, line_of(text, "colour"));
    assert!(d.message.contains("unknown field") && d.message.contains("sensor_type"));
    let d = find("modbus.registers[0].type");
    assert_eq!(d.line, line_of(text, "f33"));
    assert!(d.message.contains("f33") && d.message.contains("f32"));
    let d = find("channels.peak.unit");
    assert_eq!(d.line, line_of(text, "[channels.peak]"));
    let d = find("modbus.registers[2].address");
    assert_eq!(d.line, line_of(text, "address = 5"));
    assert!(d.message.contains("overlap") && d.message.contains("modbus.registers[1]"));
    // The printed form is file:line:column: field: message.
    assert!(lines[0].contains("p.toml:7:1: channels.rms.colour: unknown field"));
}

#[test]
fn syntax_errors_are_located() {
    let text = "vendor = \"Acme\"\nmodel = \n";
    let diags = check(text);
    assert!(!diags.is_empty());
    assert_eq!(diags[0].line, 2);
    assert!(diags[0].message.contains("not valid TOML"));
}

#[test]
fn unknown_sensor_type_lists_the_valid_ones() {
    let text = BASE.replace(
        "sensor_type = \"temperature\"",
        "sensor_type = \"temprature\"",
    );
    one_error(
        &text,
        line_of(&text, "temprature"),
        "channels.temp.sensor_type",
        &["temprature", "temperature", "vibration", "general"],
    );
}

#[test]
fn wrong_type_of_value() {
    let text = BASE.replace("address = 10", "address = \"ten\"");
    one_error(
        &text,
        line_of(&text, "\"ten\""),
        "modbus.registers[1].address",
        &["wrong type"],
    );
}

#[test]
fn f32_at_a_count_of_one() {
    let text = BASE.replace("type = \"f32\"", "type = \"f32\"\ncount = 1");
    one_error(
        &text,
        line_of(&text, "count = 1"),
        "modbus.registers[0].count",
        &["f32 takes 2 registers", "count = 2"],
    );
}

#[test]
fn string_without_count() {
    let text = format!("{BASE}\n[channels.name]\nsensor_type = \"general\"\nunit = \"1\"\n[[modbus.registers]]\nchannel = \"name\"\ntable = \"holding\"\naddress = 100\ntype = \"string\"\n");
    one_error(
        &text,
        line_of(&text, "channel = \"name\"") - 1,
        "modbus.registers[2]",
        &["string needs `count`"],
    );
}

#[test]
fn register_of_an_unknown_channel() {
    let text = BASE.replace("channel = \"temp\"", "channel = \"tmp\"");
    let d = check(&text);
    let errors: Vec<_> = d.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "{d:#?}");
    assert_eq!(errors[0].field, "modbus.registers[1].channel");
    assert!(errors[0].message.contains("known channels: rms, temp"));
    // The unused channel is not an error.
}

#[test]
fn channel_read_twice() {
    let text = BASE.replace("channel = \"temp\"", "channel = \"rms\"");
    let d = check(&text);
    assert!(
        d.iter().any(|d| d.field == "modbus.registers[1].channel"
            && d.message.contains("already read by modbus.registers[0]")),
        "{d:#?}"
    );
}

#[test]
fn bits_table_needs_bool() {
    let text = BASE.replace(
        "table = \"input\"\naddress = 10",
        "table = \"coil\"\naddress = 10",
    );
    one_error(
        &text,
        line_of(&text, "type = \"i16\""),
        "modbus.registers[1].type",
        &["coil table holds single bits", "bool"],
    );
}

#[test]
fn bit_needs_bool_and_range() {
    let text = BASE.replace("scale = 0.1", "scale = 0.1\nbit = 3");
    one_error(
        &text,
        line_of(&text, "bit = 3"),
        "modbus.registers[1].bit",
        &["needs type = \"bool\""],
    );
    let text = BASE.replace("type = \"i16\"\nscale = 0.1", "type = \"bool\"\nbit = 16");
    one_error(
        &text,
        line_of(&text, "bit = 16"),
        "modbus.registers[1].bit",
        &["bits 0 to 15"],
    );
}

#[test]
fn zero_scale() {
    let text = BASE.replace("scale = 0.1", "scale = 0.0");
    one_error(
        &text,
        line_of(&text, "scale = 0.0"),
        "modbus.registers[1].scale",
        &["non-zero"],
    );
}

#[test]
fn one_based_address_zero() {
    let text = BASE.replace("[modbus]", "[modbus]\naddressing = \"one_based\"");
    one_error(
        &text,
        line_of(&text, "address = 0"),
        "modbus.registers[0].address",
        &["one_based", "first register is 1"],
    );
}

#[test]
fn forbidden_range_is_respected() {
    let text = BASE.replace(
        "[modbus]",
        "[modbus]\nforbidden = [{ table = \"input\", start = 9, end = 12 }]",
    );
    one_error(
        &text,
        line_of(&text, "address = 10"),
        "modbus.registers[1].address",
        &["forbidden"],
    );
    let text = BASE.replace(
        "[modbus]",
        "[modbus]\nforbidden = [{ table = \"input\", start = 9, end = 2 }]",
    );
    one_error(
        &text,
        line_of(&text, "forbidden"),
        "modbus.forbidden[0].end",
        &["before start"],
    );
}

#[test]
fn past_the_last_address() {
    let text = BASE
        .replace("address = 10", "address = 65535\ntype = \"u32\"")
        .replace("type = \"i16\"\n", "");
    one_error(
        &text,
        line_of(&text, "65535"),
        "modbus.registers[1].address",
        &["past the last Modbus address"],
    );
}

#[test]
fn too_many_registers_per_read() {
    let text = BASE.replace("[modbus]", "[modbus]\nmax_registers_per_read = 200");
    one_error(
        &text,
        line_of(&text, "200"),
        "modbus.max_registers_per_read",
        &["1 to 125"],
    );
}

#[test]
fn waveform_checks() {
    let wf = "\n[channels.accel]\nsensor_type = \"vibration\"\nunit = \"g\"\n[[modbus.waveforms]]\nchannel = \"accel\"\ntable = \"input\"\naddress = 1000\nsamples = 1024\ntype = \"i16\"\nsample_rate_hz = 12000.0\n";
    assert!(check(&format!("{BASE}{wf}")).is_empty());
    let text = format!(
        "{BASE}{}",
        wf.replace("sample_rate_hz = 12000.0", "sample_rate_hz = 0.0")
    );
    one_error(
        &text,
        line_of(&text, "sample_rate_hz"),
        "modbus.waveforms[0].sample_rate_hz",
        &["greater than 0"],
    );
    let text = format!(
        "{BASE}{}",
        wf.replace("type = \"i16\"\nsample", "type = \"f64\"\nsample")
    );
    one_error(
        &text,
        line_of(&text, "f64"),
        "modbus.waveforms[0].type",
        &["not a sample type"],
    );
    let text = format!("{BASE}{}", wf.replace("address = 1000", "address = 5"));
    let d = check(&text);
    assert!(d.iter().any(|d| d.message.contains("overlap")), "{d:#?}");
}

#[test]
fn channel_checks() {
    let text = BASE.replace("unit = \"mm/s\"", "unit = \"mm/s\"\nmin = 10.0\nmax = 1.0");
    one_error(
        &text,
        line_of(&text, "max = 1.0"),
        "channels.rms.max",
        &["greater than min"],
    );
    let text = BASE.replace("unit = \"mm/s\"", "unit = \"\"");
    one_error(
        &text,
        line_of(&text, "unit = \"\""),
        "channels.rms.unit",
        &["must not be empty"],
    );
    let text = BASE
        .replace("[channels.rms]", "[channels.\"r m s\"]")
        .replace("channel = \"rms\"", "channel = \"r m s\"");
    one_error(
        &text,
        line_of(&text, "r m s\"]"),
        "channels.\"r m s\"",
        &["may only contain"],
    );
    let text = BASE.replace("unit = \"mm/s\"", "unit = \"mm/s\"\nstuck_after = 1");
    one_error(
        &text,
        line_of(&text, "stuck_after"),
        "channels.rms.stuck_after",
        &["at least 2"],
    );
}

#[test]
fn a_profile_needs_a_transport_and_identity() {
    let text =
        "vendor = \"\"\nmodel = \"X\"\n[channels.a]\nsensor_type = \"general\"\nunit = \"1\"\n";
    let d = check(text);
    let errors: Vec<_> = d.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 2, "{d:#?}");
    assert!(errors.iter().any(|d| d.field == "vendor" && d.line == 1));
    assert!(errors
        .iter()
        .any(|d| d.message.contains("none of [modbus], [serial] or [mqtt]")));
}

const SERIAL: &str = r#"vendor = "S"
model = "M"
[channels.t]
sensor_type = "temperature"
unit = "°C"
[serial]
frame = { terminator = "\r\n" }
parser = "delimited"
[[serial.fields]]
channel = "t"
index = 1
"#;

#[test]
fn serial_checks() {
    assert!(check(SERIAL).is_empty());
    let text = SERIAL.replace("index = 1", "capture = \"t\"");
    let d = check(&text);
    assert!(
        d.iter().any(|d| d.message.contains("needs `index`")),
        "{d:#?}"
    );
    let text = SERIAL
        .replace(
            "parser = \"delimited\"",
            "parser = \"regex\"\nregex = '(?P<x>\\d+'",
        )
        .replace("index = 1", "capture = \"t\"");
    let d = check(&text);
    assert!(
        d.iter()
            .any(|d| d.field == "serial.regex" && d.message.contains("does not compile")),
        "{d:#?}"
    );
    let text = SERIAL
        .replace(
            "parser = \"delimited\"",
            "parser = \"regex\"\nregex = '(?P<x>\\d+)'",
        )
        .replace("index = 1", "capture = \"t\"");
    one_error(
        &text,
        line_of(&text, "capture"),
        "serial.fields[0].capture",
        &["no capture named \"t\"", "x"],
    );
    let text = SERIAL.replace(
        "frame = { terminator = \"\\r\\n\" }",
        "frame = { start = \"$\" }",
    );
    one_error(
        &text,
        line_of(&text, "frame ="),
        "serial.frame",
        &["go together"],
    );
    let text = SERIAL.replace("parser = \"delimited\"", "parser = \"json\"");
    one_error(
        &text,
        line_of(&text, "parser"),
        "serial.parser",
        &["unknown variant", "delimited", "regex"],
    );
}

const MQTT: &str = r#"vendor = "W"
model = "M"
[channels.t]
sensor_type = "temperature"
unit = "°C"
[mqtt]
topic = "plant/+/t"
payload = "json"
[[mqtt.fields]]
channel = "t"
path = "temp"
"#;

#[test]
fn mqtt_checks() {
    assert!(check(MQTT).is_empty());
    let text = MQTT.replace("plant/+/t", "plant/x+/t");
    one_error(
        &text,
        line_of(&text, "topic"),
        "mqtt.topic",
        &["whole level"],
    );
    let text = MQTT.replace("plant/+/t", "plant/#/t");
    one_error(&text, line_of(&text, "topic"), "mqtt.topic", &["last one"]);
    // Table-level messages point at the table's header line.
    let text = MQTT.replace("path = \"temp\"", "");
    one_error(
        &text,
        line_of(&text, "[[mqtt.fields]]"),
        "mqtt.fields[0]",
        &["needs `path`"],
    );
    let text = MQTT
        .replace("payload = \"json\"", "payload = \"csv\"")
        .replace("path = \"temp\"", "");
    one_error(
        &text,
        line_of(&text, "[[mqtt.fields]]"),
        "mqtt.fields[0]",
        &["needs `column`"],
    );
    let text = MQTT
        .replace("payload = \"json\"", "payload = \"f32le\"")
        .replace("path = \"temp\"", "");
    one_error(
        &text,
        line_of(&text, "payload"),
        "mqtt.payload",
        &["sample_rate_hz"],
    );
}

#[test]
fn bad_input_never_panics() {
    // Arbitrary bytes, truncated files, deep nesting: diagnostics, never a panic.
    for text in [
        "",
        "\u{0}\u{1}\u{2}",
        "[[[",
        "vendor = 1\nmodel = []\nchannels = 5",
        "[channels]\nx = 1",
        "[modbus]\nregisters = 7",
        &"[a]\n".repeat(1000),
        &BASE[..BASE.len() / 2],
    ] {
        let d = check(text);
        assert!(
            d.iter().any(|d| d.is_error()),
            "{text:?} should not be valid"
        );
    }
}

/// `stale_after_s` reaches the validation limits the daemon and replay apply (the
/// stale check was unreachable in production before), and a bad value is located.
#[test]
fn stale_after_s_becomes_the_channel_limit_and_is_checked() {
    let text = BASE.replace("unit = \"°C\"", "unit = \"°C\"\nstale_after_s = 30");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, &text).unwrap();
    let mut diags = Vec::new();
    let p = load_profile(&path, &mut diags).expect("valid");
    assert_eq!(
        p.profile.channels["temp"].limits().stale_after_ms,
        Some(30_000)
    );
    assert_eq!(p.profile.channels["rms"].limits().stale_after_ms, None);
    let bad = BASE.replace("unit = \"°C\"", "unit = \"°C\"\nstale_after_s = 0");
    one_error(
        &bad,
        line_of(&bad, "stale_after_s"),
        "channels.temp.stale_after_s",
        &["greater than 0"],
    );
}
