//! Local notifications: alerts that reach someone at the plant while the uplink is
//! down: a webhook, a local MQTT topic, an email, a Modbus write to a stack light.
//!
//! Each sink in `[notify.sinks]` is an upstream of the outbox like the cloud ones
//! (its own cursor, named `notify:<sink>`, its own forwarder with retries, backoff
//! and circuit breaker), that takes alerts only ([`crate::upstream::Sink::alerts_only`]).
//! So a notification is queued durably by construction: the alert is committed in
//! the outbox before anything else sees it, the sink's cursor moves only after the
//! receiver confirmed, and a gateway killed in between sends it after the restart.
//!
//! Per sink, a [`Memory`] of the episodes it has notified (severity sent, per
//! episode) turns the stream of alert records (open, updates, resolved) into at
//! most one **open**, one **escalate** per higher severity, and one **close** per
//! episode; it is saved in the ack's own transaction, so it never disagrees with
//! the cursor. Openings and escalations are rate-limited per sink (a close of a
//! notified episode always goes out). A Modbus sink writes a level: `on` while any
//! of its episodes is open, `off` when none is.
//!
//! Delivery is at least once: a crash after the receiver confirmed and before the
//! ack commits sends that one notification again. Each carries the alert record's
//! key (`Idempotency-Key` header, `key` field, `Message-ID`) for receivers that
//! dedupe. Must not: write a Modbus address outside the sink's `allow` list.

pub mod config;
mod modbus;
mod smtp;
pub mod template;
mod webhook;

pub use config::{NotifyConfig, Route, SinkConfig};

use crate::config::GatewayConfig;
use crate::record::{format_rfc3339, AlertRecord, AlertState, Record, StoredRecord};
use crate::upstream::{Outcome, Sink, UpstreamError, UpstreamMetrics};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What happened to an episode, as a notification says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Open,
    Escalate,
    Close,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Open => "open",
            Event::Escalate => "escalate",
            Event::Close => "close",
        }
    }
}

/// Where a device is, for routes and templates.
#[derive(Debug, Clone, Default)]
pub struct DeviceInfo {
    pub group: Option<String>,
    pub location: String,
}

/// One notification: an alert record and what it means for this sink.
pub struct Notification<'a> {
    pub event: Event,
    pub alert: &'a AlertRecord,
    /// The alert record's key (`<gateway>:<epoch>:<id>`): the same on a resend.
    pub key: &'a str,
    pub gateway: &'a str,
    pub site: &'a str,
    pub device: &'a DeviceInfo,
}

impl Notification<'_> {
    /// The value of a template field ([`template::FIELDS`]).
    pub fn field(&self, name: &str) -> String {
        let a = self.alert;
        match name {
            "gateway" => self.gateway.to_string(),
            "site" => self.site.to_string(),
            "device" => a.device.to_string(),
            "group" => self.device.group.clone().unwrap_or_default(),
            "location" => self.device.location.clone(),
            "channel" => a.channel.to_string(),
            "sensor_id" => a.sensor_id.to_string(),
            "event" => self.event.as_str().to_string(),
            "severity" => a.severity.to_string(),
            "anomaly_type" => a.anomaly_type.clone(),
            "description" => a.description.clone(),
            "confidence" => format!("{:.2}", a.confidence),
            "ts" => format_rfc3339(a.ts_us),
            "episode" => format_rfc3339(a.episode_us),
            "key" => self.key.to_string(),
            "actions" => a.recommended_actions.join("; "),
            _ => String::new(),
        }
    }

    /// The default body: every field, the actions as a list and the evidence.
    pub fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for f in template::FIELDS {
            let v = match *f {
                "severity" => serde_json::json!(self.alert.severity),
                "confidence" => serde_json::json!(self.alert.confidence),
                "actions" => serde_json::json!(self.alert.recommended_actions),
                _ => serde_json::Value::String(self.field(f)),
            };
            m.insert((*f).to_string(), v);
        }
        m.insert("evidence".into(), self.alert.evidence.clone());
        serde_json::Value::Object(m)
    }

    /// A one-line summary for logs and the default email subject.
    pub fn headline(&self) -> String {
        format!(
            "{} {}: {} on {} (severity {})",
            self.gateway,
            self.event.as_str(),
            self.alert.anomaly_type,
            self.alert.sensor_id,
            self.alert.severity
        )
    }
}

/// What one sink has notified, per episode: the severity it last sent (0: seen,
/// not notified: not routed, below `min_severity`, or rate-limited). Closed
/// episodes are forgotten. Saved with every ack (`notify/<sink>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    episodes: BTreeMap<EpisodeKey, u8>,
}

/// (sensor id, anomaly type, episode start): one episode.
type EpisodeKey = (String, String, i64);

/// Episodes remembered at most; beyond it the oldest are forgotten (a channel
/// removed while its episode was open never sends the close).
const MEMORY_CAP: usize = 10_000;

impl Memory {
    /// The highest severity among notified open episodes (0: none).
    pub fn max_open_severity(&self) -> u8 {
        self.episodes.values().copied().max().unwrap_or(0)
    }

    fn insert(&mut self, key: EpisodeKey, severity: u8) {
        self.episodes.insert(key, severity);
        while self.episodes.len() > MEMORY_CAP {
            let oldest = self
                .episodes
                .keys()
                .min_by_key(|k| k.2)
                .cloned()
                .expect("not empty");
            self.episodes.remove(&oldest);
        }
    }
}

/// What an alert record means for a sink, given what it already notified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send this event; then remember `severity` (0 on close: forget).
    Send(Event),
    /// Nothing to send: a repeat, an update without escalation, not routed.
    Skip,
}

/// The episode logic of one sink (pure: no I/O, no clock).
pub fn decide(memory: &Memory, alert: &AlertRecord, routed: bool) -> Decision {
    let key = episode_key(alert);
    let sent = memory.episodes.get(&key).copied().unwrap_or(0);
    match alert.state {
        AlertState::Open | AlertState::Update => {
            if routed && alert.severity > sent {
                Decision::Send(if sent == 0 {
                    Event::Open
                } else {
                    Event::Escalate
                })
            } else {
                Decision::Skip
            }
        }
        AlertState::Resolved if sent > 0 => Decision::Send(Event::Close),
        AlertState::Resolved => Decision::Skip,
    }
}

/// Updates `memory` for an alert record: after a sent event, or a skip.
fn remember(memory: &mut Memory, alert: &AlertRecord, sent: Option<Event>) {
    let key = episode_key(alert);
    match (alert.state, sent) {
        (AlertState::Resolved, _) => {
            memory.episodes.remove(&key);
        }
        (_, Some(_)) => memory.insert(key, alert.severity),
        (_, None) => {
            // Seen: a later escalation of a not-notified episode opens it here.
            if !memory.episodes.contains_key(&key) {
                memory.insert(key, 0);
            }
        }
    }
}

fn episode_key(a: &AlertRecord) -> EpisodeKey {
    (
        a.sensor_id.to_string(),
        a.anomaly_type.clone(),
        a.episode_us,
    )
}

/// At most `per_hour` openings and escalations in any hour (wall clock: it is
/// about people's inboxes).
struct RateLimit {
    per_hour: usize,
    sent: VecDeque<Instant>,
}

impl RateLimit {
    fn allow(&mut self, now: Instant) -> bool {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(3600))
        {
            self.sent.pop_front();
        }
        self.sent.len() < self.per_hour
    }

    fn record(&mut self, now: Instant) {
        self.sent.push_back(now);
    }
}

/// How a sink reaches its receiver.
enum Transport {
    Webhook(webhook::Webhook),
    Mqtt(Box<crate::upstream::mqtt::MqttSink>, config::MqttSink),
    Smtp(smtp::Smtp),
    Modbus(modbus::Writer),
}

/// A send that did not work.
pub(crate) enum SendError {
    /// Try again later.
    Retry(UpstreamError),
    /// The receiver refused this notification for good (dead-lettered); `auth`:
    /// it refused our credentials.
    Refused { reason: String, auth: bool },
}

/// One notification sink: the [`Sink`] its forwarder drives.
pub struct NotifySink {
    name: &'static str,
    sink: String,
    routes: Vec<Route>,
    devices: Arc<BTreeMap<String, DeviceInfo>>,
    gateway: String,
    site: String,
    memory: Memory,
    limit: Option<RateLimit>,
    transport: Transport,
    metrics: Arc<UpstreamMetrics>,
    last_suppressed_log: Option<Instant>,
}

impl NotifySink {
    /// Counts into the forwarder's metrics (`notify_*` on /metrics).
    pub fn set_metrics(&mut self, metrics: Arc<UpstreamMetrics>) {
        self.metrics = metrics;
    }

    /// The cursor name of sink `name`.
    pub fn cursor_name(name: &str) -> String {
        format!("{}{name}", crate::outbox::ALERTS_ONLY_PREFIX)
    }

    fn routed(&self, alert: &AlertRecord) -> bool {
        let group = self
            .devices
            .get(alert.device.as_str())
            .and_then(|d| d.group.as_deref());
        self.routes
            .iter()
            .any(|r| r.matches(&self.sink, &alert.device, group, alert.severity))
    }
}

/// Sends `n` through a message transport (a Modbus sink writes levels instead).
async fn send(transport: &mut Transport, n: &Notification<'_>) -> Result<(), SendError> {
    match transport {
        Transport::Webhook(w) => w.send(n).await,
        Transport::Mqtt(client, cfg) => {
            let topic = template::render(
                &cfg.topic,
                |f| crate::upstream::mqtt::topic_safe(&n.field(f)),
                template::Escape::None,
            );
            let payload = match &cfg.template {
                Some(t) => template::render(t, |f| n.field(f), template::Escape::JsonString),
                None => n.json().to_string(),
            };
            client
                .publish(vec![(topic, payload)], cfg.retain)
                .await
                .map_err(SendError::Retry)
        }
        Transport::Smtp(s) => s.send(n).await,
        Transport::Modbus(_) => Ok(()),
    }
}

impl Sink for NotifySink {
    fn name(&self) -> &'static str {
        self.name
    }

    fn alerts_only(&self) -> bool {
        true
    }

    fn state_key(&self) -> Option<String> {
        Some(format!("notify/{}", self.sink))
    }

    fn restore(&mut self, state: &[u8]) {
        match rmp_serde::from_slice::<Memory>(state) {
            Ok(m) => self.memory = m,
            Err(e) => tracing::error!(sink = %self.sink, error = %e,
                "Cannot read what this notification sink already sent; it starts afresh"),
        }
    }

    fn state(&self) -> Option<Vec<u8>> {
        rmp_serde::to_vec(&self.memory).ok()
    }

    fn reset(&mut self) {
        match &mut self.transport {
            Transport::Mqtt(c, _) => c.reset(),
            Transport::Modbus(w) => w.reset(),
            Transport::Smtp(s) => s.reset(),
            Transport::Webhook(_) => {}
        }
    }

    async fn deliver(&mut self, batch: &[StoredRecord]) -> Outcome {
        let mut out = Outcome::default();
        for rec in batch {
            let Record::Alert(alert) = &rec.record else {
                out.done += 1;
                continue;
            };
            let routed = self.routed(alert);
            let decision = decide(&self.memory, alert, routed);
            let Decision::Send(event) = decision else {
                UpstreamMetrics::add(&self.metrics.notify_skipped, 1);
                remember(&mut self.memory, alert, None);
                out.done += 1;
                continue;
            };
            let now = Instant::now();
            if event != Event::Close {
                if let Some(limit) = self.limit.as_mut() {
                    if !limit.allow(now) {
                        UpstreamMetrics::add(&self.metrics.notify_suppressed, 1);
                        if self
                            .last_suppressed_log
                            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
                        {
                            tracing::warn!(sink = %self.sink, limit_per_hour = limit.per_hour,
                                sensor = %alert.sensor_id, event = event.as_str(),
                                "Notification rate limit reached: not sent (counted on /metrics)");
                            self.last_suppressed_log = Some(now);
                        }
                        remember(&mut self.memory, alert, None);
                        out.done += 1;
                        continue;
                    }
                }
            }
            let info = self
                .devices
                .get(alert.device.as_str())
                .cloned()
                .unwrap_or_default();
            let n = Notification {
                event,
                alert,
                key: &rec.key,
                gateway: &self.gateway,
                site: &self.site,
                device: &info,
            };
            let result = if let Transport::Modbus(w) = &mut self.transport {
                // A level: what the outputs must show once this event is applied.
                let mut next = self.memory.clone();
                remember(&mut next, alert, Some(event));
                w.apply(next.max_open_severity()).await
            } else {
                send(&mut self.transport, &n).await
            };
            match result {
                Ok(()) => {
                    UpstreamMetrics::add(&self.metrics.notify_delivered, 1);
                    tracing::info!(sink = %self.sink, key = %rec.key, "Notified: {}", n.headline());
                    if let Some(limit) = self.limit.as_mut().filter(|_| event != Event::Close) {
                        limit.record(now);
                    }
                    remember(&mut self.memory, alert, Some(event));
                    out.done += 1;
                }
                Err(SendError::Refused { reason, auth }) => {
                    UpstreamMetrics::add(&self.metrics.notify_failed, 1);
                    if auth {
                        out.auth_failures += 1;
                    }
                    // Not notified: its close is not sent either.
                    remember(&mut self.memory, alert, None);
                    out.rejected.push((rec.id, reason));
                    out.done += 1;
                }
                Err(SendError::Retry(e)) => {
                    UpstreamMetrics::add(&self.metrics.notify_failed, 1);
                    out.error = Some(e);
                    break;
                }
            }
        }
        out
    }
}

/// The notification sinks of `config` that some route uses, ready to plan as
/// upstreams. `metrics` for each comes from the forwarder set-up.
pub fn sinks(config: &GatewayConfig) -> Vec<(String, SinkConfig)> {
    config
        .notify
        .sinks
        .iter()
        .filter(|(name, _)| config.notify.routes.iter().any(|r| r.sinks.contains(*name)))
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect()
}

/// What the notification sinks take from the gateway's config, made once and
/// shared by all of them: the device map is one `Arc`, and a sink can be built again
/// after a panic (`crate::supervise`) from this instead of a copy of the config.
#[derive(Debug, Clone)]
pub struct Context {
    gateway: String,
    site: String,
    brokers: BTreeMap<String, crate::config::MqttBrokerConfig>,
    routes: Vec<Route>,
    devices: Arc<BTreeMap<String, DeviceInfo>>,
}

impl Context {
    pub fn new(config: &GatewayConfig) -> Context {
        let devices = config
            .devices
            .iter()
            .map(|d| {
                (
                    d.id.clone(),
                    DeviceInfo {
                        group: d.group.clone(),
                        location: d.location.clone(),
                    },
                )
            })
            .collect();
        Context {
            gateway: config.gateway.id.clone(),
            site: config.gateway.site.clone(),
            brokers: config.mqtt_brokers.clone(),
            routes: config.notify.routes.clone(),
            devices: Arc::new(devices),
        }
    }
}

/// Builds the sink `name` (its transport connects lazily, at the first send).
pub fn build(
    ctx: &Context,
    name: &str,
    cfg: &SinkConfig,
    metrics: Arc<UpstreamMetrics>,
) -> Result<NotifySink, String> {
    let gateway = ctx.gateway.clone();
    let transport = match cfg {
        SinkConfig::Webhook(w) => {
            Transport::Webhook(webhook::Webhook::new(w.clone(), cfg.delivery()))
        }
        SinkConfig::Mqtt(m) => {
            let broker = ctx
                .brokers
                .get(&m.broker)
                .ok_or_else(|| format!("broker {:?} is not in [mqtt_brokers]", m.broker))?;
            let up = crate::config::MqttUpstream {
                enabled: true,
                broker: m.broker.clone(),
                topic: m.topic.clone(),
                topic_reading: None,
                topic_window: None,
                topic_alert: None,
                topic_summary: None,
                client_id: Some(format!("edgegw-{gateway}-notify-{name}")),
                delivery: m.delivery.clone(),
            };
            let client =
                crate::upstream::mqtt::MqttSink::new(up, &m.broker, broker.clone(), &gateway);
            Transport::Mqtt(Box::new(client), m.clone())
        }
        SinkConfig::Smtp(s) => Transport::Smtp(smtp::Smtp::new(s.clone(), &gateway)),
        SinkConfig::Modbus(m) => Transport::Modbus(modbus::Writer::new(m, cfg.delivery())?),
    };
    let per_hour = cfg.rate_limit_per_hour();
    Ok(NotifySink {
        name: Box::leak(NotifySink::cursor_name(name).into_boxed_str()),
        sink: name.to_string(),
        routes: ctx
            .routes
            .iter()
            .filter(|r| r.sinks.iter().any(|s| s == name))
            .cloned()
            .collect(),
        devices: ctx.devices.clone(),
        gateway,
        site: ctx.site.clone(),
        memory: Memory::default(),
        limit: (per_hour > 0).then(|| RateLimit {
            per_hour: per_hour as usize,
            sent: VecDeque::new(),
        }),
        transport,
        metrics,
        last_suppressed_log: None,
    })
}

#[cfg(test)]
mod tests;
