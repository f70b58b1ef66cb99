//! The real binary with TLS options: `edgegw upstream init-schema` and `edgegw
//! upstream check` over TLS to a PostgreSQL, a Redis and a Mosquitto of their own
//! (certificates made in the test), the same failing with the reason when the
//! servers present a certificate for another host name, and `edgegw check` naming
//! every unusable TLS file at its line.

#[path = "support/pg.rs"]
mod pg;
#[path = "support/tls.rs"]
mod tls_support;

use pg::PgServer;
use std::path::Path;
use std::process::Command;
use tls_support::*;

fn edgegw(args: &[&str], config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgegw"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run edgegw");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn q(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A config with the TLS upstreams at these ports, all trusting `ca`.
fn config(dir: &Path, ca: &Path, pg: u16, redis: u16, mqtt: u16) -> std::path::PathBuf {
    let path = dir.join("edgegw.toml");
    std::fs::write(
        &path,
        format!(
            r#"[gateway]
id = "gw-tls"
state_dir = {state}

[mqtt_brokers.cloud]
host = "127.0.0.1"
port = {mqtt}
[mqtt_brokers.cloud.tls]
ca_file = {ca}

[upstreams.timescale]
url = "postgres://edgegw@127.0.0.1:{pg}/postgres?sslmode=verify-full"
ca_file = {ca}
[upstreams.timescale.delivery]
timeout_ms = 5000

[upstreams.redis]
url = "rediss://127.0.0.1:{redis}/0"
ca_file = {ca}
[upstreams.redis.delivery]
timeout_ms = 5000

[upstreams.mqtt]
broker = "cloud"
[upstreams.mqtt.delivery]
timeout_ms = 5000
"#,
            state = q(&dir.join("state")),
            ca = q(ca),
        ),
    )
    .unwrap();
    path
}

#[test]
fn upstream_init_schema_and_check_over_tls() {
    let pki = Pki::new();
    let pg = PgServer::tls_only(&pki.server.cert, &pki.server.key);
    let redis = RedisServer::start(&pki, &pki.server, "no");
    let mosquitto = MosquittoTls::start(&pki);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &pki.ca, pg.port, redis.port, mosquitto.tls);

    let (code, text) = edgegw(&["upstream", "init-schema"], &cfg);
    assert_eq!(code, 0, "{text}\n{}", pg.log());
    assert!(text.contains("created  sensor_readings"), "{text}");

    let (code, text) = edgegw(&["upstream", "check"], &cfg);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("schema OK"), "{text}");
    assert!(
        text.contains(&format!(
            "redis: rediss://127.0.0.1:{}/0: PING OK",
            redis.port
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("mqtt: 127.0.0.1:{}: CONNACK OK", mosquitto.tls)),
        "{text}"
    );
}

#[test]
fn upstream_check_names_a_certificate_for_another_host() {
    let pki = Pki::new();
    let pg = PgServer::tls_only(&pki.wrong_host.cert, &pki.wrong_host.key);
    let redis = RedisServer::start(&pki, &pki.wrong_host, "no");
    let mosquitto = MosquittoTls::start(&pki);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &pki.ca,
        pg.port,
        redis.port,
        mosquitto.wrong_host,
    );
    let (code, text) = edgegw(&["upstream", "check"], &cfg);
    eprintln!("{text}");
    assert_eq!(code, 2, "{text}");
    for line in ["timescale: FAILED", "redis: rediss://", "mqtt: FAILED"] {
        let l = text
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("no line {line}: {text}"));
        assert!(l.contains("not valid for name"), "{l}");
    }
}

#[test]
fn check_names_unusable_tls_files_at_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-a-cert.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let path = dir.path().join("edgegw.toml");
    std::fs::write(
        &path,
        format!(
            r#"[gateway]
id = "gw-tls"
state_dir = {state}

[models.s3]
endpoint = "https://s3.plant.example:9000"
bucket = "models"
path_style = true
ca_file = {missing}

[upstreams.timescale]
url = "postgres://edgegw@db.example/smartmaint?sslmode=verify-full"
ca_file = {missing}

[upstreams.redis]
url = "rediss://redis.example:6380/0"
ca_file = {not_pem}
cert_file = {missing}

[upstreams.http]
url = "http://ingest.example"
api_key = {{ env = "EDGEGW_TLS_TEST_KEY" }}
ca_file = {not_pem}
"#,
            state = q(&dir.path().join("state")),
            missing = q(&missing),
            not_pem = q(&not_pem),
        ),
    )
    .unwrap();
    let (code, text) = edgegw(&["check"], &path);
    eprintln!("{text}");
    assert_eq!(code, 2, "{text}");
    let config_text = std::fs::read_to_string(&path).unwrap();
    let line_of = |needle: &str, nth: usize| -> usize {
        config_text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with(needle))
            .nth(nth)
            .map(|(i, _)| i + 1)
            .unwrap()
    };
    for (field, needle, nth, why) in [
        ("models.s3.ca_file", "ca_file", 0, "missing-ca.pem"),
        (
            "upstreams.timescale.ca_file",
            "ca_file",
            1,
            "missing-ca.pem",
        ),
        (
            "upstreams.redis.ca_file",
            "ca_file",
            2,
            "no PEM certificate",
        ),
        (
            "upstreams.redis.cert_file",
            "cert_file",
            0,
            "missing-ca.pem",
        ),
        ("upstreams.redis.cert_file", "cert_file", 0, "key_file"),
        ("upstreams.http.ca_file", "ca_file", 3, "not https://"),
        ("upstreams.http.ca_file", "ca_file", 3, "no PEM certificate"),
    ] {
        let line = line_of(needle, nth);
        let found = text.lines().any(|l| {
            l.contains(&format!("edgegw.toml:{line}:")) && l.contains(field) && l.contains(why)
        });
        assert!(
            found,
            "{field} ({why}) at line {line} not reported:\n{text}"
        );
    }
}
