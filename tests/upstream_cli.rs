//! `edgegw upstream init-schema` and `edgegw upstream check` as library functions,
//! against the real PostgreSQL: an empty database, an existing schema, and a schema
//! with a missing column (the report names table and column).

mod upstream_common;

use edgegw::config::GatewayConfig;
use edgegw::upstream::cli;
use upstream_common::*;

fn config(db_url: &str) -> GatewayConfig {
    toml::from_str(&format!(
        "[gateway]\nid = \"gw-cli\"\n[upstreams.timescale]\nurl = {db_url:?}\n[upstreams.redis]\nurl = \"redis://127.0.0.1:6379/0\"\n"
    ))
    .expect("config")
}

async fn run_init(c: &GatewayConfig) -> String {
    let mut out = Vec::new();
    cli::init_schema(c, &mut out).await.expect("init-schema");
    String::from_utf8(out).unwrap()
}

async fn run_check(c: &GatewayConfig) -> (bool, String) {
    let mut out = Vec::new();
    let ok = cli::check(c, &mut out).await.expect("check");
    (ok, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn init_schema_then_check_then_a_missing_column() {
    let db = TestDb::create().await;
    let c = config(&db.url);

    let (ok, text) = run_check(&c).await;
    assert!(!ok);
    assert!(
        text.contains("table sensor_readings: table is missing"),
        "{text}"
    );

    let text = run_init(&c).await;
    for t in [
        "sensors",
        "sensor_readings",
        "anomaly_alerts",
        "sensor_readings_hourly",
    ] {
        assert!(text.contains(&format!("created  {t}\n")), "{text}");
    }
    assert!(text.contains("plain PostgreSQL"), "{text}");
    assert!(text.contains("schema OK for the gateway"), "{text}");

    let text = run_init(&c).await;
    assert!(!text.contains("created"), "{text}");
    assert!(
        text.contains("exists   sensor_readings (left as it is)"),
        "{text}"
    );

    let (ok, text) = run_check(&c).await;
    assert!(ok, "{text}");
    assert!(text.contains("schema OK"), "{text}");
    assert!(
        text.contains("redis: redis://127.0.0.1:6379/0: PING OK"),
        "{text}"
    );

    db.client()
        .await
        .batch_execute("ALTER TABLE anomaly_alerts DROP COLUMN recommended_actions")
        .await
        .unwrap();
    let (ok, text) = run_check(&c).await;
    assert!(!ok);
    assert!(
        text.contains("table anomaly_alerts, column recommended_actions: column is missing"),
        "{text}"
    );
    db.drop_db().await;
}
