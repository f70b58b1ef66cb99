//! Tests of the `[upstreams.*]` sections: defaults, problems named by field, TLS options.

use super::*;

#[test]
fn defaults_and_problems_name_their_field() {
    let u: UpstreamsConfig = toml::from_str(
        r#"
        [timescale]
        url = "postgres://edgegw@db/smartmaint"
        [http]
        url = "ftp://x"
        api_key = { env = "K" }
        rate_per_s = 0.0
        [mqtt]
        broker = "cloud"
        topic_alert = "a/#"
        batch_max_records = 0
        "#,
    )
    .unwrap();
    let t = u.timescale.as_ref().unwrap();
    assert!(t.enabled);
    assert_eq!(t.batch_max_records, 5000);
    assert_eq!(u.http.as_ref().unwrap().max_in_flight, 4);
    let problems = u.validate();
    for field in [
        "upstreams.http.url:",
        "upstreams.http.rate_per_s:",
        "upstreams.mqtt.topic_alert:",
        "upstreams.mqtt.batch_max_records:",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(field)),
            "{field} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), 4, "{problems:#?}");
    let unknown = toml::from_str::<UpstreamsConfig>("[redis]\nurl = \"redis://x\"\nbatch = 1\n");
    assert!(unknown.is_err());
}

fn problems(toml_text: &str) -> Vec<String> {
    toml::from_str::<UpstreamsConfig>(toml_text)
        .unwrap()
        .validate()
}

#[test]
fn tls_options_that_would_not_be_used_or_not_verify_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    // Any certificate will do for the file check.
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUS7oTt1yqHb4Vq4ZF1lD8w2hG0o8wCgYIKoZIzj0EAwIw\n-----END CERTIFICATE-----\n";
    std::fs::write(&ca, pem).unwrap();
    let ca = format!("{:?}", ca.display().to_string());

    // Verified TLS: nothing to say.
    assert_eq!(
        problems(&format!(
            "[timescale]\nurl = \"postgres://u@db/x?sslmode=verify-full\"\nca_file = {ca}\n\
             [redis]\nurl = \"rediss://r:6380/0\"\nca_file = {ca}\n\
             [http]\nurl = \"https://i\"\napi_key = {{ env = \"K\" }}\nca_file = {ca}\n"
        )),
        Vec::<String>::new()
    );
    let p = problems(&format!(
        "[timescale]\nurl = \"postgres://u@db/x?sslmode=prefer\"\nca_file = {ca}\n\
         [redis]\nurl = \"redis://r:6379/0\"\nca_file = {ca}\n\
         [http]\nurl = \"http://i\"\napi_key = {{ env = \"K\" }}\nca_file = {ca}\n"
    ));
    for field in [
        "upstreams.timescale.ca_file: set, but the URL does not ask for TLS",
        "upstreams.redis.ca_file: set, but the URL is not rediss://",
        "upstreams.http.ca_file: set, but the URL is not https://",
    ] {
        assert!(p.iter().any(|x| x.starts_with(field)), "{field} in {p:#?}");
    }
    let p = problems(
        "[timescale]\nurl = \"postgres://u@db/x?sslmode=verify-ca\"\n\
         [redis]\nurl = \"rediss://r:6380/0#insecure\"\nkey_file = { env = \"K\" }\n",
    );
    for field in [
        "upstreams.timescale.url: sslmode=verify-ca is not offered",
        "upstreams.redis.url: a URL fragment (such as #insecure) is not accepted",
        "upstreams.redis.cert_file: mutual TLS needs both",
    ] {
        assert!(p.iter().any(|x| x.starts_with(field)), "{field} in {p:#?}");
    }
}
