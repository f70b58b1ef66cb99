//! Redis: alerts go to a stream (`XADD ... MAXLEN ~ n`) and a pub/sub channel; the
//! latest value of each sensor (and of each derived feature channel) is kept in a
//! hash `<prefix>latest:<sensor_id>`. Summaries are not sent here.
//!
//! Idempotent by construction: an alert is written by one Lua script that first adds
//! its record key to a sorted set of recently sent keys (`ZADD NX`) and does nothing
//! when the key was already there; a latest-value hash only moves forward in time.
//! `rediss://` is TLS from [`super::tls`] (verified, host name included); the redis
//! crate itself is built without TLS and runs on the stream we hand it.
//!
//! With `cluster = true`, `url` is one node of a Redis Cluster: the redis crate's
//! cluster connection discovers the rest and routes each command by its key's slot.
//! The alert script touches two keys (the set of sent keys and the stream), which
//! must share a slot: the set's name carries the stream key as its hash tag
//! (`{smartmaint:alerts}:sent-keys`), so the stream keeps the name the cloud reads.
//! A cluster cannot take a pipeline across slots, so commands go one by one, in
//! order, each to its slot's node (alerts keep their order in the stream).
//! Must not: rely on Redis persistence for anything the database path must keep.

/// Its `[upstreams.redis]` config section (re-exported by `crate::config`).
pub mod config;

use super::map;
use super::{Outcome, Sink, UpstreamError};
use crate::config::RedisUpstream;
use crate::record::{format_rfc3339, now_us, Record, StoredRecord};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// KEYS: seen-set, stream. ARGV: record key, now ms, window ms, maxlen, channel,
/// payload, then the stream entry's field/value pairs.
const ALERT_SCRIPT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
if redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1]) == 0 then return 0 end
local args = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*'}
for i = 7, #ARGV do args[#args + 1] = ARGV[i] end
redis.call(unpack(args))
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
";

/// KEYS: the sensor's hash. ARGV: ts_us, then field/value pairs. Only newer wins.
const LATEST_SCRIPT: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], 'ts_us') or '-1')
if cur >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'ts_us', ARGV[1], unpack(ARGV, 2))
return 1
";

/// A connection to one Redis, or to a Redis Cluster.
#[derive(Clone)]
pub enum RedisConnection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

/// Opens a connection as the section says: a Redis Cluster through the node in
/// `url` when `cluster = true` (plain TCP, the password given to every node);
/// otherwise plain TCP for `redis://`, and for `rediss://` TLS from the program's one
/// TLS builder (ring, `ca_file` or the system roots, host name verified, optional
/// client certificate), on which the redis crate's multiplexed connection then runs,
/// then AUTH with the password secret. Used by the sink and by `edgegw upstream
/// check`.
pub async fn connect(cfg: &RedisUpstream) -> Result<RedisConnection, UpstreamError> {
    let fail = |detail: String| UpstreamError::Connect {
        upstream: "redis",
        target: cfg.url.clone(),
        detail,
    };
    let config_err = |detail: String| UpstreamError::Config {
        upstream: "redis",
        detail,
    };
    if cfg.cluster {
        let mut builder = redis::cluster::ClusterClient::builder([cfg.url.as_str()]);
        if let Some(secret) = &cfg.password {
            let pw = secret
                .resolve()
                .map_err(|e| config_err(format!("password: {e}")))?;
            builder = builder.password(pw);
        }
        let limit = Duration::from_millis(cfg.delivery().timeout_ms.max(100));
        let client = builder
            .connection_timeout(limit)
            .response_timeout(limit)
            .build()
            .map_err(|e| config_err(format!("url {}: {e}", cfg.url)))?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| fail(format!("cluster: {e}")))?;
        return Ok(RedisConnection::Cluster(conn));
    }
    let mut conn = match cfg.url.strip_prefix("rediss://") {
        None => {
            let client = redis::Client::open(cfg.url.as_str())
                .map_err(|e| config_err(format!("url {}: {e}", cfg.url)))?;
            client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| fail(e.to_string()))?
        }
        Some(rest) => {
            // The redis crate is built without TLS: it parses the address as plain
            // and gets the stream already wrapped.
            let info = redis::IntoConnectionInfo::into_connection_info(format!("redis://{rest}"))
                .map_err(|e| config_err(format!("url {}: {e}", cfg.url)))?;
            let (host, port) = match info.addr() {
                redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
                _ => return Err(config_err(format!("url {}: not a TCP address", cfg.url))),
            };
            let tls = super::tls::client_config_with(
                cfg.ca_file.as_deref(),
                cfg.cert_file.as_deref(),
                cfg.key_file.as_ref(),
            )
            .map_err(|e| config_err(e.to_string()))?;
            let limit = Duration::from_millis(cfg.delivery().timeout_ms.max(100));
            let stream = tokio::time::timeout(limit, async {
                let tcp = TcpStream::connect((host.as_str(), port))
                    .await
                    .map_err(|e| format!("{host}:{port}: {e}"))?;
                let _ = tcp.set_nodelay(true);
                super::tls::connect(Arc::new(tls), &host, tcp).await
            })
            .await
            .map_err(|_| fail(format!("no TLS connection within {} ms", limit.as_millis())))?
            .map_err(fail)?;
            let (conn, driver) = MultiplexedConnection::new_with_config(
                info.redis_settings(),
                stream,
                redis::AsyncConnectionConfig::new(),
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
            tokio::spawn(driver);
            conn
        }
    };
    if let Some(secret) = &cfg.password {
        let pw = secret
            .resolve()
            .map_err(|e| config_err(format!("password: {e}")))?;
        redis::cmd("AUTH")
            .arg(pw)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| fail(format!("AUTH refused: {e}")))?;
    }
    Ok(RedisConnection::Single(conn))
}

/// The Redis sink.
pub struct RedisSink {
    cfg: RedisUpstream,
    gateway: String,
    conn: Option<RedisConnection>,
}

impl RedisSink {
    pub fn new(cfg: RedisUpstream, gateway: &str) -> RedisSink {
        RedisSink {
            cfg,
            gateway: gateway.to_string(),
            conn: None,
        }
    }

    /// Key of the alert stream.
    pub fn stream_key(&self) -> String {
        format!("{}{}", self.cfg.key_prefix, self.cfg.stream)
    }

    /// Key of the sorted set of recently sent alert record keys. In a cluster it
    /// must live in the stream's slot: it carries the stream key as its hash tag (or
    /// the stream key's own tag, when that has one).
    pub fn seen_key(&self) -> String {
        let stream = self.stream_key();
        if !self.cfg.cluster {
            return format!("{stream}:sent-keys");
        }
        match stream.find('{').map(|open| stream[open + 1..].find('}')) {
            // A non-empty tag already: the suffix shares it.
            Some(Some(len)) if len > 0 => format!("{stream}:sent-keys"),
            _ => format!("{{{stream}}}:sent-keys"),
        }
    }

    /// Pub/sub channel of live alerts.
    pub fn channel(&self) -> String {
        format!("{}{}", self.cfg.key_prefix, self.cfg.channel)
    }

    /// Hash holding the latest value of `sensor_id`.
    pub fn latest_key(&self, sensor_id: &str) -> String {
        format!("{}latest:{}", self.cfg.key_prefix, sensor_id)
    }

    fn error(&self, e: &redis::RedisError) -> UpstreamError {
        UpstreamError::Write {
            upstream: "redis",
            target: self.cfg.url.clone(),
            detail: e.to_string(),
        }
    }

    async fn connection(&mut self) -> Result<RedisConnection, UpstreamError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let conn = connect(&self.cfg).await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    fn build(&self, batch: &[StoredRecord]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        let now_ms = now_us() / 1000;
        let window_ms = self.cfg.dedupe_window_hours.saturating_mul(3_600_000);
        let (seen, stream, channel) = (self.seen_key(), self.stream_key(), self.channel());
        // Latest value per sensor within the batch; older ones would lose anyway. The
        // rows are kept as they are (they borrow the batch) and only the latest of each
        // sensor is turned into fields.
        let mut latest: BTreeMap<Cow<'_, str>, (map::Row<'_>, &str)> = BTreeMap::new();
        let mut rows = Vec::new();
        for rec in batch {
            match &rec.record {
                Record::Alert(a) => {
                    let payload = map::record_json(rec, &self.gateway).to_string();
                    let id = map::alert_id(&self.gateway, a).to_string();
                    let evidence = map::alert_evidence(rec, a).to_string();
                    let actions = serde_json::to_string(&a.recommended_actions)
                        .unwrap_or_else(|_| "[]".into());
                    let mut cmd = redis::cmd("EVAL");
                    cmd.arg(ALERT_SCRIPT)
                        .arg(2)
                        .arg(&seen)
                        .arg(&stream)
                        .arg(&rec.key)
                        .arg(now_ms)
                        .arg(window_ms)
                        .arg(self.cfg.stream_maxlen)
                        .arg(&channel)
                        .arg(payload);
                    for (k, v) in [
                        ("record_key", rec.key.clone()),
                        ("id", id),
                        ("gateway", self.gateway.clone()),
                        ("sensor_id", a.sensor_id.to_string()),
                        ("sensor_type", a.sensor_type.as_str().to_string()),
                        ("anomaly_type", a.anomaly_type.clone()),
                        ("severity", a.severity.to_string()),
                        ("confidence", a.confidence.to_string()),
                        ("description", a.description.clone()),
                        ("status", map::alert_status(a).to_string()),
                        ("state", format!("{:?}", a.state).to_lowercase()),
                        ("timestamp", format_rfc3339(a.ts_us)),
                        ("evidence", evidence),
                        ("recommended_actions", actions),
                    ] {
                        cmd.arg(k).arg(v);
                    }
                    pipe.add_command(cmd);
                }
                Record::Reading(_) | Record::Window(_) => {
                    map::push_rows_bare(rec, &mut rows);
                    for row in rows.drain(..) {
                        let newer = latest
                            .get(row.sensor_id.as_ref())
                            .is_none_or(|(r, _)| r.ts_us < row.ts_us);
                        if newer {
                            latest.insert(row.sensor_id.clone(), (row, rec.key.as_str()));
                        }
                    }
                }
                Record::Summary(_) => {}
            }
        }
        for (sensor, (row, record_key)) in latest {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(LATEST_SCRIPT)
                .arg(1)
                .arg(self.latest_key(&sensor))
                .arg(row.ts_us);
            cmd.arg("value")
                .arg(row.value.to_string())
                .arg("unit")
                .arg(row.unit.unwrap_or(""))
                .arg("quality")
                .arg(row.quality.to_string())
                .arg("sensor_type")
                .arg(row.sensor_type.to_string())
                .arg("timestamp")
                .arg(format_rfc3339(row.ts_us))
                .arg("record_key")
                .arg(record_key);
            pipe.add_command(cmd);
        }
        pipe
    }
}

impl Sink for RedisSink {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn reset(&mut self) {
        self.conn = None;
    }

    async fn deliver(&mut self, batch: &[StoredRecord]) -> Outcome {
        let pipe = self.build(batch);
        if pipe.is_empty() {
            return Outcome::all(batch.len());
        }
        let mut conn = match self.connection().await {
            Ok(c) => c,
            Err(e) => return Outcome::failed(e),
        };
        let sent = match &conn {
            RedisConnection::Single(_) => pipe
                .query_async::<Vec<redis::Value>>(&mut conn)
                .await
                .map(drop),
            // No pipeline across slots: one by one, in order.
            RedisConnection::Cluster(_) => {
                async {
                    for cmd in pipe.cmd_iter() {
                        cmd.query_async::<redis::Value>(&mut conn).await?;
                    }
                    Ok(())
                }
                .await
            }
        };
        match sent {
            Ok(()) => Outcome::all(batch.len()),
            Err(e) => {
                let err = self.error(&e);
                self.reset();
                Outcome::failed(err)
            }
        }
    }
}
