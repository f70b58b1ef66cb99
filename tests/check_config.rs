//! The gateway config: the shipped example, every validation message, environment
//! overrides, and that a device with a bad profile does not stop the others.

use edgegw::config::{check_all, load, CheckReport};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temp dir with `hardware-profiles/` copied from the repo and `edgegw.toml`.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(config: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let profiles = dir.path().join("hardware-profiles");
        std::fs::create_dir(&profiles).unwrap();
        for f in edgegw::profiles::profile_files(&repo().join("hardware-profiles")).unwrap() {
            std::fs::copy(&f, profiles.join(f.file_name().unwrap())).unwrap();
        }
        std::fs::write(dir.path().join("edgegw.toml"), config).unwrap();
        Setup { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("edgegw.toml")
    }

    fn check(&self) -> CheckReport {
        check_all(&self.path())
    }
}

const BASE: &str = r#"[gateway]
id = "gw-test"
profile_dir = "hardware-profiles"

[serial_ports.bus1]
path = "/dev/ttyUSB0"
baud = 19200
parity = "even"

[mqtt_brokers.plant]
host = "127.0.0.1"

[[devices]]
id = "pump1"
profile = "acme-vt420"
[devices.modbus_tcp]
host = "127.0.0.1"

[[devices]]
id = "motor1"
profile = "tempco-rtt20"
[devices.modbus_rtu]
port = "bus1"
unit_id = 3
"#;

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in text"))
}

#[track_caller]
fn one_error(config: &str, line: usize, field: &str, words: &[&str]) {
    let s = Setup::new(config);
    let r = s.check();
    let errors: Vec<_> = r.diags.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "expected one error: {:#?}", r.diags);
    let d = errors[0];
    assert_eq!(d.file, s.path(), "{d}");
    assert_eq!(d.field, field, "{d}");
    assert_eq!(d.line, line, "{d}");
    for w in words {
        assert!(d.message.contains(w), "{:?} lacks {w:?}", d.message);
    }
}

#[test]
fn the_shipped_config_is_valid() {
    let r = check_all(&repo().join("config/edgegw.toml"));
    assert_eq!(r.errors(), 0, "{:#?}", r.diags);
    // The config, and every profile in the directory.
    assert!(r.files.len() > 3, "{:#?}", r.files);
}

#[test]
fn every_file_under_config_parses() {
    // config/*.toml and the documented replay configs in config/replay/ (their
    // profiles/ directories hold profiles, checked with each config).
    let mut checked = 0;
    for dir in ["config", "config/replay"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "toml") {
                let r = check_all(&p);
                assert_eq!(r.errors(), 0, "{}: {:#?}", p.display(), r.diags);
                assert!(
                    r.diags.is_empty(),
                    "{}: warnings {:#?}",
                    p.display(),
                    r.diags
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "{checked} configs");
}

#[test]
fn base_is_valid_and_loads() {
    let s = Setup::new(BASE);
    assert_eq!(s.check().errors(), 0, "{:#?}", s.check().diags);
    let l = load(&s.path()).unwrap();
    assert_eq!(l.runnable.len(), 2);
    assert!(l.profiles.contains_key("acme-vt420"));
}

#[test]
fn unknown_key_and_wrong_type() {
    let c = BASE.replace("baud = 19200", "baud = \"fast\"\nspeed = 3");
    let s = Setup::new(&c);
    let r = s.check();
    assert_eq!(r.errors(), 2, "{:#?}", r.diags);
    assert!(r.diags.iter().any(|d| d.field == "serial_ports.bus1.baud"
        && d.line == line_of(&c, "\"fast\"")
        && d.message.contains("wrong type")));
    assert!(r.diags.iter().any(|d| d.field == "serial_ports.bus1.speed"
        && d.line == line_of(&c, "speed")
        && d.message.contains("unknown field")));
    assert!(
        load(&s.path()).is_err(),
        "a config with errors does not run"
    );
}

#[test]
fn duplicate_device_ids() {
    let c = BASE.replace("id = \"motor1\"", "id = \"pump1\"");
    one_error(
        &c,
        line_of(&c, "profile = \"tempco-rtt20\"") - 1,
        "devices[1].id",
        &["already used by devices[0]"],
    );
}

#[test]
fn missing_profile_lists_the_available_ones() {
    let c = BASE.replace("profile = \"acme-vt420\"", "profile = \"acme-vt999\"");
    one_error(
        &c,
        line_of(&c, "acme-vt999"),
        "devices[0].profile",
        &[
            "no hardware profile \"acme-vt999\"",
            "acme-vt420",
            "tempco-rtt20",
        ],
    );
}

#[test]
fn transports() {
    let c = BASE.replace("[devices.modbus_tcp]\nhost = \"127.0.0.1\"\n", "");
    one_error(
        &c,
        line_of(&c, "id = \"pump1\"") - 1,
        "devices[0]",
        &["no transport"],
    );
    let c = BASE.replace(
        "[devices.modbus_tcp]",
        "[devices.serial]\nport = \"bus1\"\n[devices.modbus_tcp]",
    );
    let r = Setup::new(&c).check();
    assert!(
        r.diags
            .iter()
            .any(|d| d.field == "devices[0]" && d.message.contains("more than one transport")),
        "{:#?}",
        r.diags
    );
    let c = BASE.replace("port = \"bus1\"", "port = \"bus9\"");
    one_error(
        &c,
        line_of(&c, "bus9"),
        "devices[1].modbus_rtu.port",
        &["no port named \"bus9\"", "bus1"],
    );
    let c = BASE.replace("unit_id = 3", "unit_id = 0");
    one_error(
        &c,
        line_of(&c, "unit_id = 0"),
        "devices[1].modbus_rtu.unit_id",
        &["1 to 247"],
    );
    let c = format!("{BASE}\n[[devices]]\nid = \"fan\"\nprofile = \"sensotec-vm10\"\n[devices.serial]\nport = \"bus1\"\n");
    one_error(
        &c,
        line_of(&c, "id = \"fan\"") + 3,
        "devices[2].serial.port",
        &["already used"],
    );
    let c = format!("{BASE}\n[[devices]]\nid = \"w\"\nprofile = \"wisense-vb3\"\n[devices.mqtt]\nbroker = \"cloud\"\n");
    one_error(
        &c,
        line_of(&c, "\"cloud\""),
        "devices[2].mqtt.broker",
        &["no broker named \"cloud\"", "plant"],
    );
    let c = format!("{BASE}\n[[devices]]\nid = \"w\"\nprofile = \"wisense-vb3\"\n[devices.mqtt]\nbroker = \"plant\"\ntopic = \"a/#/b\"\n");
    one_error(
        &c,
        line_of(&c, "a/#/b"),
        "devices[2].mqtt.topic",
        &["last one"],
    );
}

#[test]
fn profile_without_the_transport_section() {
    let c = BASE.replace("profile = \"acme-vt420\"", "profile = \"sensotec-vm10\"");
    one_error(
        &c,
        line_of(&c, "sensotec-vm10"),
        "devices[0].profile",
        &["no [modbus] section"],
    );
}

#[test]
fn serial_port_values() {
    let c = BASE.replace(
        "parity = \"even\"",
        "parity = \"even\"\ndata_bits = 9\nstop_bits = 3",
    );
    let r = Setup::new(&c).check();
    assert_eq!(r.errors(), 2, "{:#?}", r.diags);
    assert!(r
        .diags
        .iter()
        .any(|d| d.field == "serial_ports.bus1.data_bits" && d.message.contains("5, 6, 7 or 8")));
    assert!(r
        .diags
        .iter()
        .any(|d| d.field == "serial_ports.bus1.stop_bits" && d.message.contains("1 or 2")));
    let c = BASE.replace("parity = \"even\"", "parity = \"mark\"");
    one_error(
        &c,
        line_of(&c, "mark"),
        "serial_ports.bus1.parity",
        &["none", "even", "odd"],
    );
}

#[test]
fn gateway_id_and_poll_interval() {
    let c = BASE.replace("id = \"gw-test\"", "id = \"gw test\"");
    one_error(
        &c,
        line_of(&c, "gw test"),
        "gateway.id",
        &["may only contain"],
    );
    let c = BASE.replace("id = \"pump1\"", "id = \"pump1\"\npoll_interval_ms = 1");
    one_error(
        &c,
        line_of(&c, "poll_interval_ms"),
        "devices[0].poll_interval_ms",
        &["at least 10 ms"],
    );
    let c = BASE.replace("[gateway]\nid = \"gw-test\"\n", "[gateway]\n");
    one_error(&c, 1, "gateway.id", &["missing field `id`"]);
}

#[test]
fn secrets_are_never_inline() {
    let c = BASE.replacen(
        "host = \"127.0.0.1\"\n\n[[devices]]",
        "host = \"127.0.0.1\"\npassword = \"hunter2\"\n\n[[devices]]",
        1,
    );
    one_error(
        &c,
        line_of(&c, "hunter2"),
        "mqtt_brokers.plant.password",
        &[
            "never read from the config file",
            "env",
            "file",
            "credential",
        ],
    );
    let c = BASE.replacen(
        "host = \"127.0.0.1\"\n\n[[devices]]",
        "host = \"127.0.0.1\"\npassword = { env = \"MQTT_PW\" }\n\n[[devices]]",
        1,
    );
    assert_eq!(Setup::new(&c).check().errors(), 0);
}

#[test]
fn upstream_settings_are_checked() {
    let c = format!(
        "{BASE}\n[upstreams.redis]\nurl = \"http://cache.example.com\"\n\n\
         [upstreams.http]\nurl = \"https://ingest.example.com\"\napi_key = {{ env = \"K\" }}\n\
         rate_per_s = 0.0\n"
    );
    let r = Setup::new(&c).check();
    assert_eq!(r.errors(), 2, "{:#?}", r.diags);
    for (field, needle, words) in [
        (
            "upstreams.redis.url",
            "http://cache",
            &["redis://", "rediss://"][..],
        ),
        (
            "upstreams.http.rate_per_s",
            "rate_per_s",
            &["above 0", "10000"][..],
        ),
    ] {
        let d = r
            .diags
            .iter()
            .find(|d| d.field == field)
            .unwrap_or_else(|| panic!("no {field}: {:#?}", r.diags));
        assert_eq!(d.line, line_of(&c, needle), "{d}");
        for w in words {
            assert!(d.message.contains(w), "{d}");
        }
    }
    // Every upstream of this build is accepted when its settings are valid.
    let c = format!(
        "{BASE}\n[upstreams.redis]\nurl = \"redis://127.0.0.1\"\n\n\
         [upstreams.timescale]\nurl = \"postgres://edgegw@db.example.com/smartmaint\"\n"
    );
    assert_eq!(Setup::new(&c).check().errors(), 0);
}

/// The delivery knobs are checked in their table, and one written flat in the
/// section (as configs did before the table existed) is told where it goes.
#[test]
fn upstream_delivery_knobs_live_in_their_table() {
    let c = format!(
        "{BASE}\n[upstreams.redis]\nurl = \"redis://127.0.0.1\"\n\
         [upstreams.redis.delivery]\nbatch_max_records = 0\n"
    );
    one_error(
        &c,
        line_of(&c, "batch_max_records"),
        "upstreams.redis.delivery.batch_max_records",
        &["1..=100000"],
    );
    let c = format!(
        "{BASE}\n[upstreams.redis]\nurl = \"redis://127.0.0.1\"\ndrain_rate_per_s = 10.0\n"
    );
    one_error(
        &c,
        line_of(&c, "drain_rate_per_s"),
        "upstreams.redis.drain_rate_per_s",
        &["unknown field", "[upstreams.<name>.delivery]"],
    );
}

#[test]
fn status_listener_address_is_checked() {
    let c = format!("{BASE}\n[http]\nlisten = \"9187\"\n");
    one_error(
        &c,
        line_of(&c, "9187"),
        "http.listen",
        &["IP:port", "127.0.0.1:9187"],
    );
    for ok in ["0.0.0.0:9187", "[::1]:9187", "localhost:9187"] {
        let c = format!("{BASE}\n[http]\nlisten = \"{ok}\"\n");
        assert_eq!(Setup::new(&c).check().errors(), 0, "{ok}");
    }
    let c = format!("{BASE}\n[http]\nenabled = false\nlisten = \"nonsense\"\n");
    assert_eq!(
        Setup::new(&c).check().errors(),
        0,
        "a listener switched off"
    );
}

#[test]
fn a_bad_profile_stops_only_its_device() {
    let s = Setup::new(BASE);
    let bad = s.dir.path().join("hardware-profiles/tempco-rtt20.toml");
    let text = std::fs::read_to_string(&bad)
        .unwrap()
        .replace("type = \"i16\"", "type = \"i15\"");
    std::fs::write(&bad, text).unwrap();
    // check: the profile's errors, located in the profile file, plus a note on the device.
    let r = s.check();
    assert!(
        r.diags
            .iter()
            .any(|d| d.file == bad && d.message.contains("i15")),
        "{:#?}",
        r.diags
    );
    assert!(r
        .diags
        .iter()
        .any(|d| d.file == s.path() && d.field == "devices[1].profile"));
    // run: the config itself is fine, so the gateway starts with the other device.
    let l = load(&s.path()).unwrap();
    let ids: Vec<&str> = l.runnable.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["pump1"]);
}

#[test]
fn stray_profiles_in_the_directory_are_checked_too() {
    let s = Setup::new(BASE);
    std::fs::write(
        s.dir.path().join("hardware-profiles/draft.toml"),
        "vendor = \"X\"\n",
    )
    .unwrap();
    let r = s.check();
    let draft = s.dir.path().join("hardware-profiles/draft.toml");
    assert!(
        r.diags
            .iter()
            .any(|d| d.file == draft && d.message.contains("missing field `model`")),
        "{:#?}",
        r.diags
    );
}

#[test]
fn unreadable_config() {
    let r = check_all(Path::new("/nonexistent/edgegw.toml"));
    assert_eq!(r.errors(), 1);
    assert!(r.diags[0]
        .to_string()
        .contains("/nonexistent/edgegw.toml: -: cannot read the file"));
}

#[test]
fn outbox_and_pipeline_settings_are_checked() {
    let c = format!("{BASE}\n[outbox]\nmax_size_mb = 0\n\n[pipeline]\nwindow_samples = 3\n");
    let r = Setup::new(&c).check();
    assert_eq!(r.errors(), 2, "{:#?}", r.diags);
    assert!(
        r.diags
            .iter()
            .any(|d| d.field == "outbox.max_size_mb" && d.line == line_of(&c, "max_size_mb")),
        "{:#?}",
        r.diags
    );
    assert!(
        r.diags.iter().any(
            |d| d.field == "pipeline.window_samples" && d.line == line_of(&c, "window_samples")
        ),
        "{:#?}",
        r.diags
    );
}

#[test]
fn machine_and_detection_settings_are_checked_where_they_are_written() {
    let c = BASE.replace(
        "[devices.modbus_tcp]\nhost = \"127.0.0.1\"",
        "[devices.modbus_tcp]\nhost = \"127.0.0.1\"\n[devices.machine]\nbearing = \"6999\"\nshaft_rpm = 1480\niso_group = 3\nfoundation = \"rigid\"\n[devices.detection]\nlearn = \"2 weeks\"\nwindow_overlap = 0.99",
    );
    let s = Setup::new(&c);
    let r = s.check();
    let errors: Vec<_> = r.diags.iter().filter(|d| d.is_error()).collect();
    let find = |field: &str| {
        errors
            .iter()
            .find(|d| d.field == field)
            .unwrap_or_else(|| panic!("no error on {field}: {:#?}", r.diags))
    };
    let bearing = find("devices[0].machine.bearing");
    assert_eq!(bearing.line, line_of(&c, "6999"));
    assert!(
        bearing.message.contains("6205"),
        "names the table: {bearing}"
    );
    assert!(
        bearing.message.contains("ball_diameter_mm"),
        "says how to give a geometry: {bearing}"
    );
    let group = find("devices[0].machine.iso_group");
    assert_eq!(group.line, line_of(&c, "iso_group = 3"));
    assert!(group.message.contains("use 1"), "{group}");
    let learn = find("devices[0].detection.learn");
    assert!(learn.message.contains("unknown unit"), "{learn}");
    let overlap = find("devices[0].detection.window_overlap");
    assert!(overlap.message.contains("0..=0.95"), "{overlap}");
    // The other device is untouched: only pump1 is left out.
    let l = load(&s.path());
    assert!(l.is_err() || l.unwrap().runnable.len() == 1);
}

#[test]
fn replaced_pipeline_settings_are_warnings_not_errors() {
    let c = format!("{BASE}\n[pipeline]\nwarmup_windows = 30\nfallback_sigma = 3.0\n");
    let s = Setup::new(&c);
    let r = s.check();
    assert_eq!(r.errors(), 0, "{:#?}", r.diags);
    let w: Vec<_> = r.diags.iter().filter(|d| !d.is_error()).collect();
    assert_eq!(w.len(), 2, "{:#?}", r.diags);
    assert!(w.iter().any(|d| d.field == "pipeline.warmup_windows"
        && d.line == line_of(&c, "warmup_windows")
        && d.message.contains("[pipeline.baseline]")));
    assert!(load(&s.path()).is_ok(), "an old config still runs");
}

#[test]
fn an_unreadable_status_token_is_a_warning_from_check() {
    let c = format!("{BASE}\n[http]\ntoken = {{ file = \"/nonexistent/edgegw-token\" }}\n");
    let s = Setup::new(&c);
    let r = s.check();
    assert_eq!(r.errors(), 0, "{:#?}", r.diags);
    let w = r
        .diags
        .iter()
        .find(|d| d.field == "http.token")
        .unwrap_or_else(|| panic!("{:#?}", r.diags));
    assert!(!w.is_error());
    assert_eq!(w.line, line_of(&c, "edgegw-token"));
    assert!(w.message.contains("refuse to start"), "{w}");
}

#[test]
fn relative_state_paths_are_relative_to_the_config_file() {
    let c = BASE.replace(
        "profile_dir = \"hardware-profiles\"",
        "profile_dir = \"hardware-profiles\"\nstate_dir = \"state\"",
    )
        + "\n[outbox]\npath = \"buffer/outbox.db\"\n\n[models]\ncache_dir = \"cache/models\"\n";
    let s = Setup::new(&c);
    let dir = s.dir.path();
    // The test runs in the package directory, not next to the config.
    assert_ne!(std::env::current_dir().unwrap(), dir);
    let l = load(&s.path()).unwrap_or_else(|d| panic!("{d:#?}"));
    assert_eq!(l.config.gateway.state_dir, dir.join("state"));
    assert_eq!(
        l.config.outbox.path.as_deref(),
        Some(dir.join("buffer/outbox.db").as_path())
    );
    assert_eq!(
        l.config.models.cache_dir(&l.config.gateway.state_dir),
        dir.join("cache/models")
    );
    assert_eq!(
        edgegw::app::outbox_path(&l.config),
        dir.join("buffer/outbox.db")
    );
    // Defaults follow the state directory.
    let s = Setup::new(&BASE.replace(
        "profile_dir = \"hardware-profiles\"",
        "profile_dir = \"hardware-profiles\"\nstate_dir = \"state\"",
    ));
    let l = load(&s.path()).unwrap_or_else(|d| panic!("{d:#?}"));
    let state = s.dir.path().join("state");
    assert_eq!(l.config.gateway.state_dir, state);
    assert_eq!(edgegw::app::outbox_path(&l.config), state.join("outbox.db"));
    assert_eq!(
        l.config.models.cache_dir(&l.config.gateway.state_dir),
        state.join("models")
    );
    // A config named by a relative path still gives absolute directories.
    let cwd = std::env::current_dir().unwrap();
    let mut relative = PathBuf::new();
    for _ in cwd.components().skip(1) {
        relative.push("..");
    }
    relative.push(s.path().strip_prefix("/").unwrap());
    let l = load(&relative).unwrap_or_else(|d| panic!("{d:#?}"));
    assert!(l.config.gateway.state_dir.is_absolute(), "{l:?}");
    assert_eq!(
        l.config.gateway.state_dir.canonicalize().ok(),
        None,
        "not created by loading"
    );
    assert_eq!(
        l.config
            .gateway
            .state_dir
            .parent()
            .unwrap()
            .canonicalize()
            .unwrap(),
        s.dir.path().canonicalize().unwrap()
    );
    // Absolute paths stay as they are.
    let s = Setup::new(BASE);
    let l = load(&s.path()).unwrap();
    assert_eq!(l.config.gateway.state_dir, Path::new("/var/lib/edgegw"));
}

/// `text` with every `°` written as Latin-1 (the single byte 0xB0), and the 1-based
/// line and column of the first one.
fn latin1(text: &str) -> (Vec<u8>, usize, usize) {
    let line = line_of(text, "°");
    let column = text
        .lines()
        .nth(line - 1)
        .unwrap()
        .split('°')
        .next()
        .unwrap()
        .chars()
        .count()
        + 1;
    let mut bytes = Vec::new();
    for c in text.chars() {
        match c {
            '°' => bytes.push(0xB0),
            c => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    (bytes, line, column)
}

#[track_caller]
fn assert_not_utf8(r: &CheckReport, file: &Path, line: usize, column: usize) {
    let d = r
        .diags
        .iter()
        .find(|d| d.file == file && d.is_error())
        .unwrap_or_else(|| panic!("no error in {}: {:#?}", file.display(), r.diags));
    assert_eq!((d.line, d.column), (line, column), "{d}");
    assert!(
        d.message
            .contains("not UTF-8: save the file as UTF-8 (e.g. the `°` sign written in Latin-1)"),
        "{d}"
    );
    assert!(d.message.contains("0xB0"), "names the byte: {d}");
}

#[test]
fn a_config_or_profile_in_latin1_is_located() {
    // The config: `°` in a free-text field.
    let c = BASE.replace(
        "id = \"gw-test\"",
        "id = \"gw-test\"\nsite = \"hall 2, 40 °C\"",
    );
    let s = Setup::new(&c);
    let (bytes, line, column) = latin1(&c);
    std::fs::write(s.path(), bytes).unwrap();
    let r = s.check();
    assert_not_utf8(&r, &s.path(), line, column);
    assert!(
        load(&s.path()).is_err(),
        "a config that is not UTF-8 does not run"
    );

    // A profile: `unit = "°C"` saved by an editor set to Latin-1.
    let s = Setup::new(BASE);
    let profile = s.dir.path().join("hardware-profiles/tempco-rtt20.toml");
    let text = std::fs::read_to_string(&profile).unwrap();
    let (bytes, line, column) = latin1(&text);
    std::fs::write(&profile, bytes).unwrap();
    let r = s.check();
    assert_not_utf8(&r, &profile, line, column);
    assert_eq!(r.errors(), 1, "one problem, said once: {:#?}", r.diags);
    // The device that uses it is left out; the rest runs.
    let l = load(&s.path()).unwrap_or_else(|d| panic!("{d:#?}"));
    let ids: Vec<&str> = l.runnable.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["pump1"]);
}

/// `check` reports every problem, however many: 5,000 in a config (unknown keys, and
/// devices with an unknown key, a value of the wrong type or a value out of range)
/// and 5,000 in a profile. Each is counted, and each is at its own line.
#[test]
fn thousands_of_problems_are_all_reported() {
    const N: usize = 1250;
    let mut c = String::from("[gateway]\nid = \"gw-test\"\nprofile_dir = \"hardware-profiles\"\n");
    for i in 0..N {
        c += &format!("bogus_{i} = {i}\n");
    }
    for i in 0..3 * N {
        let problem = match i % 3 {
            0 => "bogus = 1",
            1 => "poll_interval_ms = \"often\"",
            _ => "poll_interval_ms = 1",
        };
        c += &format!(
            "\n[[devices]]\nid = \"d{i}\"\nprofile = \"acme-vt420\"\n{problem}\n\
             [devices.modbus_tcp]\nhost = \"127.0.0.1\"\n"
        );
    }
    let mut p = String::from(
        "vendor = \"X\"\nmodel = \"Y\"\n\n[channels.a]\nsensor_type = \"temperature\"\nunit = \"1\"\n\n[modbus]\n",
    );
    for i in 0..2 * N {
        p += &format!(
            "\n[[modbus.registers]]\nchannel = \"nochan{i}\"\ntable = \"input\"\naddress = {i}\n\
             type = \"u16\"\nbogus = 1\n"
        );
    }
    let s = Setup::new(&c);
    let profile = s.dir.path().join("hardware-profiles/big.toml");
    std::fs::write(&profile, &p).unwrap();
    let r = s.check();
    for (file, text, n) in [(s.path(), &c, 4 * N), (profile, &p, 4 * N)] {
        let errors: Vec<_> = r
            .diags
            .iter()
            .filter(|d| d.file == file && d.is_error())
            .collect();
        assert_eq!(errors.len(), n, "{}", file.display());
        let lines: std::collections::BTreeSet<usize> = errors.iter().map(|d| d.line).collect();
        assert_eq!(lines.len(), n, "each problem at its own line");
        let source: Vec<&str> = text.lines().collect();
        for d in &errors {
            let key = d.field.rsplit('.').next().unwrap();
            let key = key.split('[').next().unwrap();
            assert!(
                source[d.line - 1].starts_with(key),
                "{d} points at {:?}",
                source[d.line - 1]
            );
        }
    }
}
