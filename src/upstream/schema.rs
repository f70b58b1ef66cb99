//! The cloud-compatible schema in PostgreSQL / TimescaleDB: `init_schema` creates
//! what is missing, `check_schema` says precisely what an existing schema lacks.
//!
//! Column names are the cloud's contract (docs/upstreams.md). Must not: drop, alter
//! or rewrite anything that exists; `init_schema` only runs `CREATE ... IF NOT
//! EXISTS` and, on a new empty `sensor_readings`, `create_hypertable`.

use tokio_postgres::Client;

/// The gateway's own hourly summary table (never the cloud's
/// `sensor_readings_summary_hourly` continuous aggregate name).
pub const SUMMARY_TABLE: &str = "sensor_readings_hourly";

const CREATE: &[(&str, &str)] = &[
    (
        "sensors",
        "CREATE TABLE IF NOT EXISTS sensors (
            id uuid PRIMARY KEY,
            sensor_id varchar(255) NOT NULL UNIQUE,
            type varchar(50) NOT NULL,
            location varchar(255),
            status varchar(20) NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'inactive', 'maintenance', 'decommissioned')),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now())",
    ),
    (
        "sensor_readings",
        "CREATE TABLE IF NOT EXISTS sensor_readings (
            sensor_id varchar(255) NOT NULL REFERENCES sensors (sensor_id),
            sensor_type varchar(50) NOT NULL,
            value double precision NOT NULL,
            unit varchar(50),
            timestamp timestamptz NOT NULL,
            quality double precision,
            sensor_metadata jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (timestamp, sensor_id))",
    ),
    (
        "anomaly_alerts",
        "CREATE TABLE IF NOT EXISTS anomaly_alerts (
            id uuid PRIMARY KEY,
            sensor_id varchar(255) NOT NULL REFERENCES sensors (sensor_id),
            anomaly_type varchar(100) NOT NULL,
            severity integer NOT NULL CHECK (severity BETWEEN 1 AND 5),
            confidence double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
            description text,
            evidence jsonb,
            recommended_actions text[],
            status varchar(20) NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'acknowledged', 'resolved', 'ignored')),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now())",
    ),
    (
        SUMMARY_TABLE,
        "CREATE TABLE IF NOT EXISTS sensor_readings_hourly (
            bucket timestamptz NOT NULL,
            sensor_id varchar(255) NOT NULL REFERENCES sensors (sensor_id),
            sensor_type varchar(50) NOT NULL,
            unit varchar(50),
            interval_secs integer NOT NULL,
            avg double precision NOT NULL,
            max double precision NOT NULL,
            min double precision NOT NULL,
            count bigint NOT NULL,
            last double precision,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (bucket, sensor_id, interval_secs))",
    ),
];

const INDEXES: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS sensor_readings_sensor_time ON sensor_readings (sensor_id, timestamp DESC)",
    "CREATE INDEX IF NOT EXISTS anomaly_alerts_sensor_created ON anomaly_alerts (sensor_id, created_at DESC)",
    "CREATE INDEX IF NOT EXISTS anomaly_alerts_status ON anomaly_alerts (status)",
];

/// A column name and the `data_type`s the gateway accepts for it.
pub type ColumnSpec = (&'static str, &'static [&'static str]);

/// Columns the gateway writes, per table, with the type families it accepts
/// (`information_schema.columns.data_type`).
pub const REQUIRED: &[(&str, &[ColumnSpec])] = &[
    (
        "sensors",
        &[
            ("id", &["uuid"]),
            ("sensor_id", &["character varying", "text"]),
            ("type", &["character varying", "text"]),
            ("location", &["character varying", "text"]),
            ("status", &["character varying", "text", "USER-DEFINED"]),
        ],
    ),
    (
        "sensor_readings",
        &[
            ("sensor_id", &["character varying", "text"]),
            ("sensor_type", &["character varying", "text"]),
            ("value", &["double precision"]),
            ("unit", &["character varying", "text"]),
            ("timestamp", &["timestamp with time zone"]),
            ("quality", &["double precision", "real"]),
            ("sensor_metadata", &["jsonb", "json"]),
        ],
    ),
    (
        "anomaly_alerts",
        &[
            ("id", &["uuid"]),
            ("sensor_id", &["character varying", "text"]),
            ("anomaly_type", &["character varying", "text"]),
            ("severity", &["integer", "smallint", "bigint"]),
            ("confidence", &["double precision", "real", "numeric"]),
            ("description", &["text", "character varying"]),
            ("evidence", &["jsonb", "json"]),
            ("recommended_actions", &["ARRAY"]),
            ("status", &["character varying", "text", "USER-DEFINED"]),
            ("created_at", &["timestamp with time zone"]),
            ("updated_at", &["timestamp with time zone"]),
        ],
    ),
    (
        SUMMARY_TABLE,
        &[
            ("bucket", &["timestamp with time zone"]),
            ("sensor_id", &["character varying", "text"]),
            ("sensor_type", &["character varying", "text"]),
            ("unit", &["character varying", "text"]),
            ("interval_secs", &["integer", "bigint"]),
            ("avg", &["double precision"]),
            ("max", &["double precision"]),
            ("min", &["double precision"]),
            ("count", &["bigint", "integer"]),
            ("last", &["double precision"]),
            ("updated_at", &["timestamp with time zone"]),
        ],
    ),
];

/// Unique keys the gateway's `ON CONFLICT` clauses need.
pub const UNIQUE_KEYS: &[(&str, &[&str])] = &[
    ("sensors", &["sensor_id"]),
    ("sensor_readings", &["timestamp", "sensor_id"]),
    ("anomaly_alerts", &["id"]),
    (SUMMARY_TABLE, &["bucket", "sensor_id", "interval_secs"]),
];

/// What `init_schema` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InitReport {
    pub created: Vec<String>,
    pub existing: Vec<String>,
    /// `Some(true)`: `sensor_readings` is a hypertable; `Some(false)`: TimescaleDB is
    /// installed but the table is not one (it held data already); `None`: plain
    /// PostgreSQL.
    pub hypertable: Option<bool>,
    /// Human-readable notes (extension available but not installed, ...).
    pub notes: Vec<String>,
}

async fn table_exists(client: &Client, table: &str) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await?;
    row.try_get(0)
}

/// Creates the missing tables and indexes; makes a new `sensor_readings` a hypertable
/// when the timescaledb extension is installed in the database.
pub async fn init_schema(client: &Client) -> Result<InitReport, tokio_postgres::Error> {
    let mut report = InitReport::default();
    let installed: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
            &[],
        )
        .await?
        .try_get(0)?;
    if !installed {
        let available: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
                &[],
            )
            .await?
            .try_get(0)?;
        if available {
            report.notes.push("the timescaledb extension is available but not installed in this database: run CREATE EXTENSION timescaledb (as a superuser) before init-schema to get a hypertable".into());
        }
    }
    let readings_existed = table_exists(client, "sensor_readings").await?;
    for (table, sql) in CREATE {
        if table_exists(client, table).await? {
            report.existing.push(table.to_string());
        } else {
            client.batch_execute(sql).await?;
            report.created.push(table.to_string());
        }
    }
    for sql in INDEXES {
        client.batch_execute(sql).await?;
    }
    if installed {
        let is_hyper: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                 WHERE hypertable_name = 'sensor_readings')",
                &[],
            )
            .await?
            .try_get(0)?;
        if is_hyper {
            report.hypertable = Some(true);
        } else {
            let empty: bool = client
                .query_one("SELECT NOT EXISTS (SELECT 1 FROM sensor_readings)", &[])
                .await?
                .try_get(0)?;
            if empty {
                client
                    .batch_execute(
                        "SELECT create_hypertable('sensor_readings', 'timestamp', if_not_exists => TRUE)",
                    )
                    .await?;
                report.hypertable = Some(true);
            } else {
                report.hypertable = Some(false);
                report.notes.push(format!(
                    "sensor_readings {}holds data and is not a hypertable; init-schema never migrates data (use create_hypertable(..., migrate_data => true) by hand)",
                    if readings_existed { "already " } else { "" }
                ));
            }
        }
    }
    Ok(report)
}

/// One thing an existing schema lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaProblem {
    pub table: String,
    pub column: Option<String>,
    pub message: String,
}

impl std::fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(c) => write!(f, "table {}, column {}: {}", self.table, c, self.message),
            None => write!(f, "table {}: {}", self.table, self.message),
        }
    }
}

/// Everything the gateway needs that the schema lacks (empty: the schema is fine).
pub async fn check_schema(client: &Client) -> Result<Vec<SchemaProblem>, tokio_postgres::Error> {
    let mut problems = Vec::new();
    for (table, columns) in REQUIRED {
        if !table_exists(client, table).await? {
            problems.push(SchemaProblem {
                table: table.to_string(),
                column: None,
                message: "table is missing (edgegw upstream init-schema creates it)".into(),
            });
            continue;
        }
        let rows = client
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1",
                &[table],
            )
            .await?;
        let present: Vec<(String, String)> = rows
            .iter()
            .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
            .collect();
        for (column, types) in columns.iter() {
            match present.iter().find(|(c, _)| c == column) {
                None => problems.push(SchemaProblem {
                    table: table.to_string(),
                    column: Some(column.to_string()),
                    message: format!(
                        "column is missing; the gateway writes it (expected type {})",
                        types[0]
                    ),
                }),
                Some((_, t)) if !types.contains(&t.as_str()) => problems.push(SchemaProblem {
                    table: table.to_string(),
                    column: Some(column.to_string()),
                    message: format!("has type {t}, the gateway needs {}", types.join(" or ")),
                }),
                Some(_) => {}
            }
        }
    }
    for (table, key) in UNIQUE_KEYS {
        if !table_exists(client, table).await? {
            continue;
        }
        let rows = client
            .query(
                "SELECT array_agg(a.attname::text ORDER BY a.attname)
                 FROM pg_index i JOIN pg_attribute a
                   ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                 WHERE i.indrelid = to_regclass($1) AND i.indisunique
                 GROUP BY i.indexrelid",
                &[table],
            )
            .await?;
        let mut want: Vec<&str> = key.to_vec();
        want.sort_unstable();
        let found = rows.iter().any(|r| {
            r.try_get::<_, Vec<String>>(0)
                .map(|cols| cols.iter().map(String::as_str).eq(want.iter().copied()))
                .unwrap_or(false)
        });
        if !found {
            problems.push(SchemaProblem {
                table: table.to_string(),
                column: None,
                message: format!(
                    "no primary key or unique index on ({}); the gateway's ON CONFLICT needs it",
                    key.join(", ")
                ),
            });
        }
    }
    Ok(problems)
}
