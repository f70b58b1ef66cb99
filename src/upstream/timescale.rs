//! TimescaleDB / PostgreSQL: every record kind, idempotently, one transaction per
//! batch.
//!
//! Per batch: register sensors not seen on this connection (`INSERT ... ON CONFLICT
//! (sensor_id) DO NOTHING`, before their readings because of the foreign key), COPY
//! the readings (and the derived feature readings of windows) into a temporary table
//! and `INSERT ... SELECT ... ON CONFLICT (timestamp, sensor_id) DO NOTHING`, insert
//! or update alert episodes by their deterministic uuid, upsert summaries into
//! `sensor_readings_hourly`; commit. A retried or re-sent batch changes nothing.
//!
//! A batch the database refuses for a data reason (SQLSTATE class 22 or 23) is
//! retried record by record so that only the offending records are dead-lettered.
//! Must not: drop or alter tables (that is `schema`, and it only creates).

/// Its `[upstreams.timescale]` config section (re-exported by `crate::config`).
pub mod config;

use super::map::{self, Row};
use super::{Outcome, Sink, UpstreamError};
use crate::config::TimescaleUpstream;
use crate::record::{Record, SensorType, StoredRecord, SummaryRecord, TimestampUs};
use futures_util::SinkExt;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;
use tokio_postgres::Client;

mod connect;

pub use connect::{connect, redact};

/// How readings reach `sensor_readings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertMode {
    /// COPY into a temporary table, then one INSERT ... SELECT (the default).
    Copy,
    /// One prepared INSERT per row (kept for the benchmark's comparison).
    Rows,
}

const TEMP_TABLE: &str = "CREATE TEMP TABLE IF NOT EXISTS edgegw_readings_in (
    sensor_id text, sensor_type text, value double precision, unit text,
    ts timestamptz, quality double precision, meta jsonb) ON COMMIT DELETE ROWS";

const COPY_IN: &str =
    "COPY edgegw_readings_in (sensor_id, sensor_type, value, unit, ts, quality, meta) FROM STDIN";

const MOVE_IN: &str = "INSERT INTO sensor_readings
    (sensor_id, sensor_type, value, unit, timestamp, quality, sensor_metadata)
    SELECT sensor_id, sensor_type, value, unit, ts, quality, meta FROM edgegw_readings_in
    ON CONFLICT (timestamp, sensor_id) DO NOTHING";

const INSERT_ROW: &str = "INSERT INTO sensor_readings
    (sensor_id, sensor_type, value, unit, timestamp, quality, sensor_metadata)
    VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb)
    ON CONFLICT (timestamp, sensor_id) DO NOTHING";

const UPSERT_SENSORS: &str = "INSERT INTO sensors (id, sensor_id, type, location, status)
    SELECT u.id, u.sensor_id, u.type, NULLIF(u.location, ''), 'active'
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS u(id, sensor_id, type, location)
    ON CONFLICT (sensor_id) DO NOTHING";

/// Open: the first record of an episode creates the row; re-sent, it changes nothing.
const ALERT_OPEN: &str = "INSERT INTO anomaly_alerts
    (id, sensor_id, anomaly_type, severity, confidence, description, evidence,
     recommended_actions, status, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, 'open', $9, $10)
    ON CONFLICT (id) DO NOTHING";

/// Update: fresher evidence for an open episode; an older or re-sent update never
/// overwrites newer data, and a resolved (or acknowledged/ignored) status stays.
const ALERT_UPDATE: &str = "INSERT INTO anomaly_alerts
    (id, sensor_id, anomaly_type, severity, confidence, description, evidence,
     recommended_actions, status, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, 'open', $9, $10)
    ON CONFLICT (id) DO UPDATE SET severity = EXCLUDED.severity,
        confidence = EXCLUDED.confidence, description = EXCLUDED.description,
        evidence = EXCLUDED.evidence, recommended_actions = EXCLUDED.recommended_actions,
        updated_at = EXCLUDED.updated_at
    WHERE anomaly_alerts.updated_at < EXCLUDED.updated_at AND anomaly_alerts.status <> 'resolved'";

/// Resolved: the episode's row moves to `resolved` (created if the open was lost).
const ALERT_RESOLVE: &str = "INSERT INTO anomaly_alerts
    (id, sensor_id, anomaly_type, severity, confidence, description, evidence,
     recommended_actions, status, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, 'resolved', $9, $10)
    ON CONFLICT (id) DO UPDATE SET status = 'resolved', updated_at = EXCLUDED.updated_at,
        evidence = anomaly_alerts.evidence || jsonb_build_object('resolution', EXCLUDED.evidence)
    WHERE anomaly_alerts.status IN ('open', 'acknowledged')";

const UPSERT_SUMMARIES: &str = "INSERT INTO sensor_readings_hourly
    (bucket, sensor_id, sensor_type, unit, interval_secs, avg, max, min, count, last, updated_at)
    SELECT u.bucket, u.sensor_id, u.sensor_type, NULLIF(u.unit, ''), u.interval_secs,
           u.avg, u.max, u.min, u.count, u.last, now()
    FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int[],
                $6::float8[], $7::float8[], $8::float8[], $9::int8[], $10::float8[])
        AS u(bucket, sensor_id, sensor_type, unit, interval_secs, avg, max, min, count, last)
    ON CONFLICT (bucket, sensor_id, interval_secs) DO UPDATE SET
        avg = EXCLUDED.avg, max = EXCLUDED.max, min = EXCLUDED.min,
        count = EXCLUDED.count, last = EXCLUDED.last, unit = EXCLUDED.unit,
        updated_at = now()";

/// Microseconds to `time::OffsetDateTime` (what tokio-postgres binds as timestamptz).
pub fn to_datetime(ts_us: TimestampUs) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_us) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// The TimescaleDB sink.
pub struct TimescaleSink {
    cfg: TimescaleUpstream,
    gateway: String,
    /// Device id -> location, for `sensors.location`.
    locations: HashMap<String, String>,
    client: Option<Client>,
    /// Sensors registered through the current connection (forgotten on reconnect).
    known_sensors: crate::id::NameSet<String>,
    mode: InsertMode,
    target: String,
}

/// What one batch writes, prepared before any I/O.
#[derive(Default)]
struct Prepared<'a> {
    rows: Vec<Row<'a>>,
    sensors: BTreeMap<String, (SensorType, String)>,
    alerts: Vec<&'a StoredRecord>,
    summaries: BTreeMap<(TimestampUs, &'a str, u32), &'a SummaryRecord>,
}

fn sql_error(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|db| {
        let mut s = format!("{}: {}", db.code().code(), db.message());
        if let Some(d) = db.detail() {
            let _ = write!(s, " ({d})");
        }
        s
    })
}

/// Errors the data itself causes (data exception, integrity constraint).
fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

/// Why a record can never be written, checked before sending.
fn invalid(rec: &StoredRecord) -> Option<String> {
    let too_long = |what: &str, s: &str, max: usize| {
        (s.chars().count() > max).then(|| format!("{what} is longer than {max} characters"))
    };
    if let Some(p) = too_long("sensor_id", rec.record.sensor_id(), 240) {
        return Some(p);
    }
    match &rec.record {
        Record::Reading(r) => {
            if !r.value.is_finite() {
                return Some(format!("value {} is not a finite number", r.value));
            }
            too_long("unit", &r.unit, 50)
        }
        Record::Window(w) => too_long("unit", &w.unit, 50),
        Record::Alert(a) => {
            if !(1..=5).contains(&a.severity) {
                return Some(format!("severity {} is outside 1..5", a.severity));
            }
            if !(0.0..=1.0).contains(&a.confidence) {
                return Some(format!("confidence {} is outside 0..1", a.confidence));
            }
            too_long("anomaly_type", &a.anomaly_type, 100)
        }
        Record::Summary(s) => {
            if ![s.avg, s.min, s.max, s.last].iter().all(|v| v.is_finite()) {
                return Some("summary holds a value that is not a finite number".into());
            }
            too_long("unit", &s.unit, 50)
        }
    }
}

/// Appends one COPY text-format field (escaped), or `\N` for NULL.
fn copy_field(buf: &mut String, v: Option<&str>) {
    match v {
        None => buf.push_str("\\N"),
        // Ids, units and JSON metadata seldom hold a character COPY escapes: copied
        // whole (byte scan), not pushed a char at a time.
        Some(s)
            if !s
                .bytes()
                .any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r')) =>
        {
            buf.push_str(s)
        }
        Some(s) => {
            for c in s.chars() {
                match c {
                    '\\' => buf.push_str("\\\\"),
                    '\t' => buf.push_str("\\t"),
                    '\n' => buf.push_str("\\n"),
                    '\r' => buf.push_str("\\r"),
                    c => buf.push(c),
                }
            }
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS.ffffff+00`, which COPY reads as timestamptz.
fn copy_ts(buf: &mut String, ts_us: TimestampUs) {
    let t = to_datetime(ts_us);
    let _ = write!(
        buf,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    );
}

impl TimescaleSink {
    /// `locations`: device id -> where it is mounted (from `[[devices]]`).
    pub fn new(
        cfg: TimescaleUpstream,
        gateway: &str,
        locations: HashMap<String, String>,
    ) -> TimescaleSink {
        let target = redact(&cfg.url);
        TimescaleSink {
            cfg,
            gateway: gateway.to_string(),
            locations,
            client: None,
            known_sensors: Default::default(),
            mode: InsertMode::Copy,
            target,
        }
    }

    /// Row-by-row INSERT instead of COPY (benchmark comparison).
    pub fn with_mode(mut self, mode: InsertMode) -> TimescaleSink {
        self.mode = mode;
        self
    }

    fn write_error(&self, e: &tokio_postgres::Error) -> UpstreamError {
        UpstreamError::Write {
            upstream: "timescale",
            target: self.target.clone(),
            detail: sql_error(e).unwrap_or_else(|| format!("{e:#}")),
        }
    }

    async fn client(&mut self) -> Result<&mut Client, UpstreamError> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.reset();
        }
        if self.client.is_none() {
            let timeout = Duration::from_millis(self.cfg.delivery().timeout_ms.max(100));
            let client = connect(&self.cfg, timeout).await?;
            client
                .batch_execute(TEMP_TABLE)
                .await
                .map_err(|e| self.write_error(&e))?;
            tracing::info!(target_db = %self.target, "Connected to PostgreSQL");
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| UpstreamError::Connect {
            upstream: "timescale",
            target: String::new(),
            detail: "no connection".into(),
        })
    }

    fn prepare<'a>(&self, batch: &'a [StoredRecord]) -> Prepared<'a> {
        let mut p = Prepared::default();
        let location = |device: &str| self.locations.get(device).cloned().unwrap_or_default();
        for rec in batch {
            match &rec.record {
                Record::Reading(_) | Record::Window(_) => {
                    let device = match &rec.record {
                        Record::Reading(r) => r.device.as_str(),
                        Record::Window(w) => w.device.as_str(),
                        _ => "",
                    };
                    let first = p.rows.len();
                    map::push_rows(rec, &mut p.rows);
                    for row in &p.rows[first..] {
                        if !self.known_sensors.contains(row.sensor_id.as_ref()) {
                            p.sensors
                                .entry(row.sensor_id.to_string())
                                .or_insert_with(|| (row.sensor_type, location(device)));
                        }
                    }
                }
                Record::Alert(a) => {
                    if !self.known_sensors.contains(a.sensor_id.as_str()) {
                        p.sensors
                            .entry(a.sensor_id.to_string())
                            .or_insert_with(|| (a.sensor_type, location(&a.device)));
                    }
                    p.alerts.push(rec);
                }
                Record::Summary(s) => {
                    if !self.known_sensors.contains(s.sensor_id.as_str()) {
                        // Summaries stored before the record had its device: the
                        // sensor id up to its last dot, a best guess (channel names
                        // may hold dots too).
                        let device = if s.device.is_empty() {
                            s.sensor_id.rsplit_once('.').map_or("", |(d, _)| d)
                        } else {
                            s.device.as_str()
                        };
                        p.sensors
                            .entry(s.sensor_id.to_string())
                            .or_insert_with(|| (s.sensor_type, location(device)));
                    }
                    // The newest summary of a bucket wins (one upsert per key).
                    p.summaries.insert(
                        (s.bucket_start_us, s.sensor_id.as_str(), s.interval_secs),
                        s,
                    );
                }
            }
        }
        p
    }

    /// Writes `batch` in one transaction.
    async fn write(&mut self, batch: &[StoredRecord]) -> Result<(), tokio_postgres::Error> {
        let prepared = self.prepare(batch);
        let mode = self.mode;
        let gateway = self.gateway.clone();
        let Some(client) = self.client.as_mut() else {
            return Ok(());
        };
        let tx = client.transaction().await?;
        if !prepared.sensors.is_empty() {
            let mut ids = Vec::new();
            let mut names = Vec::new();
            let mut types = Vec::new();
            let mut locs = Vec::new();
            for (name, (t, loc)) in &prepared.sensors {
                ids.push(map::sensor_uuid(name));
                names.push(name.as_str());
                types.push(t.as_str());
                locs.push(loc.as_str());
            }
            tx.execute(UPSERT_SENSORS, &[&ids, &names, &types, &locs])
                .await?;
        }
        if !prepared.rows.is_empty() {
            match mode {
                InsertMode::Copy => {
                    let mut buf = String::with_capacity(prepared.rows.len() * 160);
                    for r in &prepared.rows {
                        copy_field(&mut buf, Some(&r.sensor_id));
                        buf.push('\t');
                        buf.push_str(r.sensor_type.as_str());
                        buf.push('\t');
                        let _ = write!(buf, "{}", r.value);
                        buf.push('\t');
                        copy_field(&mut buf, r.unit);
                        buf.push('\t');
                        copy_ts(&mut buf, r.ts_us);
                        buf.push('\t');
                        let _ = write!(buf, "{}", r.quality);
                        buf.push('\t');
                        copy_field(&mut buf, Some(&r.metadata));
                        buf.push('\n');
                    }
                    let sink = tx.copy_in(COPY_IN).await?;
                    futures_util::pin_mut!(sink);
                    sink.send(bytes_of(buf)).await?;
                    sink.as_mut().finish().await?;
                    tx.execute(MOVE_IN, &[]).await?;
                }
                InsertMode::Rows => {
                    let stmt = tx.prepare(INSERT_ROW).await?;
                    for r in &prepared.rows {
                        let ts = to_datetime(r.ts_us);
                        tx.execute(
                            &stmt,
                            &[
                                &r.sensor_id.as_ref(),
                                &r.sensor_type.as_str(),
                                &r.value,
                                &r.unit,
                                &ts,
                                &r.quality,
                                &r.metadata,
                            ],
                        )
                        .await?;
                    }
                }
            }
        }
        for rec in &prepared.alerts {
            let Record::Alert(a) = &rec.record else {
                continue;
            };
            let sql = match a.state {
                crate::record::AlertState::Open => ALERT_OPEN,
                crate::record::AlertState::Update => ALERT_UPDATE,
                crate::record::AlertState::Resolved => ALERT_RESOLVE,
            };
            let id = map::alert_id(&gateway, a);
            let evidence = map::alert_evidence(rec, a).to_string();
            tx.execute(
                sql,
                &[
                    &id,
                    &a.sensor_id.as_str(),
                    &a.anomaly_type,
                    &i32::from(a.severity),
                    &a.confidence,
                    &a.description,
                    &evidence,
                    &a.recommended_actions,
                    &to_datetime(a.episode_us),
                    &to_datetime(a.ts_us),
                ],
            )
            .await?;
        }
        if !prepared.summaries.is_empty() {
            let s: Vec<&SummaryRecord> = prepared.summaries.values().copied().collect();
            let bucket: Vec<_> = s.iter().map(|x| to_datetime(x.bucket_start_us)).collect();
            let sid: Vec<&str> = s.iter().map(|x| x.sensor_id.as_str()).collect();
            let typ: Vec<&str> = s.iter().map(|x| x.sensor_type.as_str()).collect();
            let unit: Vec<&str> = s.iter().map(|x| x.unit.as_str()).collect();
            let interval: Vec<i32> = s
                .iter()
                .map(|x| i32::try_from(x.interval_secs).unwrap_or(i32::MAX))
                .collect();
            let avg: Vec<f64> = s.iter().map(|x| x.avg).collect();
            let max: Vec<f64> = s.iter().map(|x| x.max).collect();
            let min: Vec<f64> = s.iter().map(|x| x.min).collect();
            let count: Vec<i64> = s
                .iter()
                .map(|x| i64::try_from(x.count).unwrap_or(i64::MAX))
                .collect();
            let last: Vec<f64> = s.iter().map(|x| x.last).collect();
            tx.execute(
                UPSERT_SUMMARIES,
                &[
                    &bucket, &sid, &typ, &unit, &interval, &avg, &max, &min, &count, &last,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        self.known_sensors.extend(prepared.sensors.into_keys());
        Ok(())
    }
}

impl Sink for TimescaleSink {
    fn name(&self) -> &'static str {
        "timescale"
    }

    fn reset(&mut self) {
        self.client = None;
        self.known_sensors.clear();
    }

    async fn deliver(&mut self, batch: &[StoredRecord]) -> Outcome {
        // Records that can never be written are set aside before anything is sent.
        let mut rejected: Vec<(i64, String)> = batch
            .iter()
            .filter_map(|rec| invalid(rec).map(|reason| (rec.id, reason)))
            .collect();
        let good: Vec<StoredRecord>;
        let to_send: &[StoredRecord] = if rejected.is_empty() {
            batch
        } else {
            good = batch
                .iter()
                .filter(|r| !rejected.iter().any(|(id, _)| *id == r.id))
                .cloned()
                .collect();
            &good
        };
        if let Err(e) = self.client().await {
            return Outcome::failed(e);
        }
        match self.write(to_send).await {
            Ok(()) => Outcome {
                done: batch.len(),
                rejected,
                ..Outcome::default()
            },
            Err(e) if is_data_error(&e) => {
                // Find the offending records: one transaction per record.
                tracing::warn!(upstream = "timescale", error = %sql_error(&e).unwrap_or_default(),
                    records = to_send.len(), "Batch refused by the database: retrying record by record");
                for rec in to_send {
                    match self.write(std::slice::from_ref(rec)).await {
                        Ok(()) => {}
                        Err(e) if is_data_error(&e) => {
                            rejected.push((rec.id, sql_error(&e).unwrap_or_else(|| e.to_string())));
                        }
                        Err(e) => {
                            let err = self.write_error(&e);
                            self.reset();
                            // Only what came before this record is settled.
                            let done = batch.iter().position(|r| r.id == rec.id).unwrap_or(0);
                            rejected.retain(|(id, _)| batch[..done].iter().any(|r| r.id == *id));
                            return Outcome {
                                done,
                                rejected,
                                error: Some(err),
                                ..Outcome::default()
                            };
                        }
                    }
                }
                rejected.sort_by_key(|(id, _)| *id);
                Outcome {
                    done: batch.len(),
                    rejected,
                    ..Outcome::default()
                }
            }
            Err(e) => {
                let err = self.write_error(&e);
                self.reset();
                Outcome::failed(err)
            }
        }
    }
}

fn bytes_of(s: String) -> bytes::Bytes {
    bytes::Bytes::from(s.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::copy_field;

    #[test]
    fn copy_fields_escape_what_copy_text_format_reads_specially() {
        let mut buf = String::new();
        copy_field(&mut buf, Some("press-01.vib_rms"));
        buf.push('|');
        copy_field(&mut buf, Some("{\"k\":\"a\\\\b\"}\tx\ny\rü"));
        buf.push('|');
        copy_field(&mut buf, None);
        assert_eq!(
            buf,
            "press-01.vib_rms|{\"k\":\"a\\\\\\\\b\"}\\tx\\ny\\rü|\\N"
        );
    }
}
