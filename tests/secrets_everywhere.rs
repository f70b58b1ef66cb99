//! No secret ever shows. The daemon runs with every kind of secret the config can name
//! (environment variable, file, systemd credential) for every place that takes one —
//! the MQTT source broker, the TimescaleDB, Redis, HTTP and MQTT upstreams, S3 model
//! sync, the status listener's token — at `RUST_LOG=trace`, through failures (a wrong
//! Redis password, a 403 from the ingest API, a database and an S3 endpoint that do not
//! answer); then every log line, `/metrics`, `/healthz`, `/readyz`, the outbox (its raw
//! file and `outbox dump`), and the output of `check`, `upstream check`, `models list`,
//! `baseline status` and `outbox stats` are searched for every secret.
//!
//! Peers: the real Mosquitto (127.0.0.1:1883, own topic) and Redis (127.0.0.1:6379,
//! which has no password, so AUTH fails); an HTTP server started here that answers 403.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRETS: [(&str, &str); 8] = [
    (
        "mqtt source password (credential)",
        "s3cr3t-mqtt-source-7f3a",
    ),
    ("timescale password (env)", "s3cr3t-pg-91bd"),
    ("redis password (file)", "s3cr3t-redis-c044"),
    ("http api key (env)", "s3cr3t-ingest-5e21"),
    ("s3 access key id (env)", "AKIAS3CR3TEDGEGW0001"),
    ("s3 secret key (file)", "s3cr3t-s3-secret-key-d00d"),
    ("status token (credential)", "s3cr3t-status-token-aa11"),
    ("mqtt upstream password (credential)", "s3cr3t-mqtt-up-0b0b"),
];

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_edgegw")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP server that answers every request with 403 (a bad API key).
fn forbidding_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 65536];
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = s.read(&mut buf);
            let body = "{\"detail\":\"invalid API key\"}";
            let _ = write!(
                s,
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn get(port: u16, path: &str, token: Option<&str>) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn command(args: &[&str], cfg: &Path, creds: &Path) -> String {
    let out = Command::new(exe())
        .args(args)
        .arg("--config")
        .arg(cfg)
        .env("CREDENTIALS_DIRECTORY", creds)
        .env("PG_TEST_SECRET", SECRETS[1].1)
        .env("INGEST_TEST_KEY", SECRETS[3].1)
        .env("S3_TEST_ACCESS", SECRETS[4].1)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn no_secret_appears_in_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("mqtt-pass"), SECRETS[0].1).unwrap();
    std::fs::write(creds.join("status-token"), SECRETS[6].1).unwrap();
    std::fs::write(creds.join("mqtt-up-pass"), SECRETS[7].1).unwrap();
    std::fs::write(dir.path().join("redis-pass"), SECRETS[2].1).unwrap();
    std::fs::write(dir.path().join("s3-secret"), SECRETS[5].1).unwrap();
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    std::fs::write(
        dir.path().join("profiles/number.toml"),
        "vendor = \"Test\"\nmodel = \"Number\"\n[channels.p]\nsensor_type = \"pressure\"\nunit = \"bar\"\n\
         [mqtt]\ntopic = \"x\"\npayload = \"number\"\n[[mqtt.fields]]\nchannel = \"p\"\n",
    )
    .unwrap();
    let topic = format!("edgegw-secrets-{}", std::process::id());
    let http_port = free_port();
    let forbid = forbidding_server();
    let closed = free_port();
    let cfg = dir.path().join("edgegw.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[gateway]
id = "gw-secrets-{pid}"
state_dir = "{state}"
profile_dir = "profiles"

[mqtt_brokers.plant]
host = "127.0.0.1"
username = "edgegw"
password = {{ credential = "mqtt-pass" }}

[mqtt_brokers.cloud]
host = "127.0.0.1"
client_id = "gw-secrets-up-{pid}"
username = "edgegw-up"
password = {{ credential = "mqtt-up-pass" }}

[[devices]]
id = "line"
profile = "number"
[devices.mqtt]
broker = "plant"
topic = "{topic}/p"

[models.s3]
endpoint = "http://127.0.0.1:{closed}"
bucket = "models"
path_style = true
timeout_secs = 2
[models.s3.credentials]
access_key_id = {{ env = "S3_TEST_ACCESS" }}
secret_access_key = {{ file = "{s3secret}" }}

[upstreams.timescale]
enabled = true
url = "postgres://edgegw@127.0.0.1:{closed}/nothing"
password = {{ env = "PG_TEST_SECRET" }}
[upstreams.timescale.delivery]
timeout_ms = 2000
backoff_max_ms = 1000

[upstreams.redis]
enabled = true
url = "redis://127.0.0.1:6379/0"
password = {{ file = "{redispass}" }}
key_prefix = "edgegw-secrets-{pid}:"
[upstreams.redis.delivery]
backoff_max_ms = 1000

[upstreams.http]
enabled = true
url = "http://127.0.0.1:{forbid}"
api_key = {{ env = "INGEST_TEST_KEY" }}
[upstreams.http.delivery]
backoff_max_ms = 1000

[upstreams.mqtt]
enabled = true
broker = "cloud"
topic = "{topic}/up/{{kind}}/{{sensor_id}}"

[http]
listen = "127.0.0.1:{http_port}"
token = {{ credential = "status-token" }}
"#,
            pid = std::process::id(),
            state = dir.path().display(),
            s3secret = dir.path().join("s3-secret").display(),
            redispass = dir.path().join("redis-pass").display(),
        ),
    )
    .unwrap();

    let mut everything = String::new();
    everything.push_str(&command(&["check"], &cfg, &creds));

    let mut child = Command::new(exe())
        .args(["--log-format", "json", "run", "--config"])
        .arg(&cfg)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("PG_TEST_SECRET", SECRETS[1].1)
        .env("INGEST_TEST_KEY", SECRETS[3].1)
        .env("S3_TEST_ACCESS", SECRETS[4].1)
        .env("RUST_LOG", "trace")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    for pipe in [
        Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stdout.take().unwrap()),
    ] {
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut pipe = pipe;
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let gw = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log.lock().unwrap().contains("Subscribed") {
        assert!(
            Instant::now() < deadline,
            "no subscription:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Readings through the pipeline, so every upstream tries (and fails) to deliver.
    for i in 0..20 {
        let _ = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-q",
                "1",
                "-t",
                &format!("{topic}/p"),
                "-m",
            ])
            .arg(format!("{i}"))
            .status();
    }
    std::thread::sleep(Duration::from_secs(6));
    let token = SECRETS[6].1;
    for path in ["/metrics", "/healthz", "/readyz", "/"] {
        let with = get(http_port, path, Some(token));
        // The token itself is sent by the test, never answered back.
        everything.push_str(&with);
        everything.push_str(&get(http_port, path, None));
    }
    let metrics = get(http_port, "/metrics", Some(token));
    assert!(
        metrics.contains("edgegw_upstream"),
        "metrics answered:\n{metrics}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &gw.0.id().to_string()])
        .status();
    std::thread::sleep(Duration::from_secs(3));
    drop(gw);
    everything.push_str(&log.lock().unwrap());
    for args in [
        &["upstream", "check"][..],
        &["models", "list"],
        &["baseline", "status"],
        &["outbox", "stats"],
        &["outbox", "dump", "--limit", "100000"],
    ] {
        everything.push_str(&command(args, &cfg, &creds));
    }
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let p = f.unwrap().path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("outbox.db"))
        {
            everything.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
        }
    }
    // The run really went through failures (or the test proves little).
    let log = log.lock().unwrap().clone();
    assert!(log.to_lowercase().contains("redis"), "{log}");
    assert!(
        log.contains("403") || log.contains("Forbidden"),
        "no 403 seen:\n{log}"
    );
    assert!(everything.len() > 10_000, "too little output to search");
    for (what, secret) in SECRETS {
        assert!(
            !everything.contains(secret),
            "{what} ({secret}) appears in the output:\n{}",
            everything
                .lines()
                .filter(|l| l.contains(secret))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
