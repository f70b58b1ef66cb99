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
        [mqtt.delivery]
        batch_max_records = 0
        "#,
    )
    .unwrap();
    let t = u.timescale.as_ref().unwrap();
    assert!(t.enabled);
    assert_eq!(t.delivery().batch_max_records, 5000);
    assert_eq!(t.delivery().timeout_ms, 30_000);
    assert_eq!(u.http.as_ref().unwrap().max_in_flight, 4);
    let problems = u.validate();
    for field in [
        "upstreams.http.url:",
        "upstreams.http.rate_per_s:",
        "upstreams.mqtt.topic_alert:",
        "upstreams.mqtt.delivery.batch_max_records:",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(field)),
            "{field} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), 4, "{problems:#?}");
    let unknown = toml::from_str::<UpstreamsConfig>("[redis]\nurl = \"redis://x\"\nbatch = 1\n");
    assert!(unknown.is_err());
    // The delivery knobs live in their table, not flat in the section.
    let flat =
        toml::from_str::<UpstreamsConfig>("[redis]\nurl = \"redis://x\"\nbatch_max_records = 10\n");
    assert!(flat.is_err());
    let unknown = toml::from_str::<UpstreamsConfig>(
        "[redis]\nurl = \"redis://x\"\n[redis.delivery]\nbatch = 1\n",
    );
    assert!(unknown.is_err());
    // Unset knobs take the upstream's own defaults; set ones win.
    let u: UpstreamsConfig = toml::from_str(
        "[redis]\nurl = \"redis://x\"\n[redis.delivery]\ndrain_rate_per_s = 50.0\n[http]\nurl = \"http://i\"\napi_key = { env = \"K\" }\n",
    )
    .unwrap();
    let r = u.redis.unwrap().delivery();
    assert_eq!((r.batch_max_records, r.drain_rate_per_s), (1_000, 50.0));
    let h = u.http.unwrap().delivery();
    assert_ne!(h.batch_max_records, 1_000, "http has its own batch default");
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

#[test]
fn a_redis_cluster_is_plain_tcp_for_now() {
    assert_eq!(
        problems("[redis]\nurl = \"redis://r:7000\"\ncluster = true\n"),
        Vec::<String>::new()
    );
    let p = problems("[redis]\nurl = \"rediss://r:7000\"\ncluster = true\n");
    assert!(
        p.iter()
            .any(|x| x.starts_with("upstreams.redis.cluster: TLS to a Redis Cluster")),
        "{p:#?}"
    );
}
