//! `edgegw upstream init-schema` and `edgegw upstream check`: library functions that
//! take the config and write a human report to any `Write`.
//!
//! Must not: change data. `init-schema` only creates what is missing; `check` only
//! reads (and, for Redis and MQTT, connects).

use super::schema;
use super::timescale::{connect, redact};
use super::UpstreamError;
use crate::config::GatewayConfig;
use std::io::Write;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamCliError {
    #[error("no [upstreams.timescale] section in the config: nothing to {0}")]
    NoTimescale(&'static str),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("{target}: {what}: {detail}")]
    Sql {
        target: String,
        what: &'static str,
        detail: String,
    },
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

fn sql(target: &str, what: &'static str, e: tokio_postgres::Error) -> UpstreamCliError {
    let detail = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => format!("{e:#}"),
    };
    UpstreamCliError::Sql {
        target: target.to_string(),
        what,
        detail,
    }
}

/// Creates the cloud-compatible tables that are missing in the Timescale upstream's
/// database and reports what it did.
pub async fn init_schema(
    config: &GatewayConfig,
    out: &mut dyn Write,
) -> Result<(), UpstreamCliError> {
    let cfg = config
        .upstreams
        .timescale
        .as_ref()
        .ok_or(UpstreamCliError::NoTimescale("initialise"))?;
    let target = redact(&cfg.url);
    let client = connect(
        cfg,
        Duration::from_millis(cfg.delivery().timeout_ms.max(1000)),
    )
    .await?;
    let report = schema::init_schema(&client)
        .await
        .map_err(|e| sql(&target, "creating the schema", e))?;
    writeln!(out, "{target}:")?;
    for t in &report.created {
        writeln!(out, "  created  {t}")?;
    }
    for t in &report.existing {
        writeln!(out, "  exists   {t} (left as it is)")?;
    }
    match report.hypertable {
        Some(true) => writeln!(
            out,
            "  sensor_readings is a TimescaleDB hypertable on timestamp"
        )?,
        Some(false) => writeln!(out, "  sensor_readings is NOT a hypertable")?,
        None => writeln!(
            out,
            "  plain PostgreSQL (no timescaledb extension): regular tables"
        )?,
    }
    for n in &report.notes {
        writeln!(out, "  note: {n}")?;
    }
    let problems = schema::check_schema(&client)
        .await
        .map_err(|e| sql(&target, "checking the schema", e))?;
    for p in &problems {
        writeln!(out, "  problem: {p}")?;
    }
    if problems.is_empty() {
        writeln!(out, "  schema OK for the gateway")?;
    }
    Ok(())
}

/// Checks every configured upstream: the database schema (every table and column the
/// gateway writes, and the unique keys its ON CONFLICT needs), Redis (PING), the MQTT
/// broker (CONNACK). Returns whether everything is usable.
pub async fn check(config: &GatewayConfig, out: &mut dyn Write) -> Result<bool, UpstreamCliError> {
    let mut ok = true;
    let u = &config.upstreams;
    if u.timescale.is_none() && u.redis.is_none() && u.http.is_none() && u.mqtt.is_none() {
        writeln!(out, "no upstreams configured")?;
        return Ok(true);
    }
    if let Some(cfg) = &u.timescale {
        let target = redact(&cfg.url);
        match connect(
            cfg,
            Duration::from_millis(cfg.delivery().timeout_ms.max(1000)),
        )
        .await
        {
            Err(e) => {
                ok = false;
                writeln!(out, "timescale: FAILED: {e}")?;
            }
            Ok(client) => {
                let problems = schema::check_schema(&client)
                    .await
                    .map_err(|e| sql(&target, "reading the schema", e))?;
                if problems.is_empty() {
                    writeln!(out, "timescale: {target}: schema OK")?;
                } else {
                    ok = false;
                    writeln!(out, "timescale: {target}: {} problem(s):", problems.len())?;
                    for p in &problems {
                        writeln!(out, "  {p}")?;
                    }
                }
            }
        }
    }
    if let Some(cfg) = &u.redis {
        // The sink's own connect: rediss:// (TLS, ca_file) and AUTH as it runs.
        let res = async {
            let mut conn = super::redis::connect(cfg).await?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map_err(|e| super::UpstreamError::Write {
                    upstream: "redis",
                    target: cfg.url.clone(),
                    detail: e.to_string(),
                })
        };
        match tokio::time::timeout(Duration::from_millis(cfg.delivery().timeout_ms), res).await {
            Ok(Ok(_)) => writeln!(out, "redis: {}: PING OK", cfg.url)?,
            Ok(Err(e)) => {
                ok = false;
                writeln!(out, "redis: {}: FAILED: {e}", cfg.url)?;
            }
            Err(_) => {
                ok = false;
                writeln!(
                    out,
                    "redis: {}: FAILED: no answer within {} ms",
                    cfg.url,
                    cfg.delivery().timeout_ms
                )?;
            }
        }
    }
    if let Some(cfg) = &u.http {
        match cfg.api_key.resolve() {
            Ok(_) => writeln!(
                out,
                "http: {}{}: API key readable from {} (not sent: the API has no dry-run)",
                cfg.url.trim_end_matches('/'),
                super::http::INGEST_PATH,
                cfg.api_key.describe()
            )?,
            Err(e) => {
                ok = false;
                writeln!(out, "http: FAILED: api_key: {e}")?;
            }
        }
    }
    if let Some(cfg) = &u.mqtt {
        match config.mqtt_brokers.get(&cfg.broker) {
            None => {
                ok = false;
                writeln!(
                    out,
                    "mqtt: FAILED: no broker named {:?} in [mqtt_brokers]",
                    cfg.broker
                )?;
            }
            Some(b) => {
                let mut sink = super::mqtt::MqttSink::new(
                    cfg.clone(),
                    &cfg.broker,
                    b.clone(),
                    &config.gateway.id,
                );
                match super::Sink::deliver(&mut sink, &[]).await.error {
                    None => writeln!(out, "mqtt: {}:{}: CONNACK OK", b.host, b.port)?,
                    Some(e) => {
                        ok = false;
                        writeln!(out, "mqtt: FAILED: {e}")?;
                    }
                }
            }
        }
    }
    Ok(ok)
}
