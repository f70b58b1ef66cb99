//! `[models.s3]` and device pins are checked by `edgegw check` with located messages,
//! every problem at once; the documented example config stays valid.

fn check(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgegw.toml");
    std::fs::write(&path, text).unwrap();
    edgegw::config::check_all(&path)
        .diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn bad_s3_settings_and_pins_are_all_reported() {
    let errors = check(
        r#"[gateway]
id = "gw"
[[devices]]
id = "d1"
profile = "nope"
model = { name = "../evil", version = "1/2" }
[devices.modbus_tcp]
host = "127.0.0.1"
[models.s3]
endpoint = "ftp://user:pw@s3.example.com"
bucket = "my.bucket"
prefix = "/edge/"
interval_secs = 5
timeout_secs = 0
max_bundle_mb = 0
[models.s3.credentials]
access_key_id = { env = "AK" }
"#,
    );
    let all = errors.join("\n");
    for want in [
        "models.s3.endpoint",
        "must not contain credentials",
        "models.s3.prefix",
        "models.s3.interval_secs",
        "models.s3.timeout_secs",
        "models.s3.max_bundle_mb",
        "set both access_key_id and secret_access_key",
        "devices[0].model.name",
        "devices[0].model.version",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
    // The credential values are never in the config: a plain string is refused.
    let errors = check(
        r#"[gateway]
id = "gw"
[models.s3]
endpoint = "https://s3.example.com"
bucket = "b"
[models.s3.credentials]
secret_access_key = "hunter2"
access_key_id = { env = "AK" }
"#,
    );
    assert!(
        errors
            .join("\n")
            .contains("never read from the config file"),
        "{errors:?}"
    );
}

#[test]
fn a_good_s3_section_passes_and_defaults_apply() {
    let text = r#"[gateway]
id = "gw"
[models.s3]
endpoint = "http://minio.local:9000"
bucket = "models"
path_style = true
"#;
    assert!(check(text).is_empty(), "{:?}", check(text));
    let c: edgegw::config::GatewayConfig = toml::from_str(text).unwrap();
    let s3 = c.models.s3.unwrap();
    assert_eq!(
        (
            s3.prefix.as_str(),
            s3.region.as_str(),
            s3.interval_secs,
            s3.timeout_secs,
            s3.max_bundle_mb
        ),
        ("edge-models", "us-east-1", 3600, 30, 64)
    );
}
