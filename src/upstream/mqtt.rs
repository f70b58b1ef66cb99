//! MQTT to a cloud broker: one JSON message per record, QoS 1, topic from a template
//! per kind. A batch is acknowledged in the outbox only after the broker's PUBACK of
//! every message in it (rumqttc's `publish` only queues).
//!
//! The event loop runs in its own task and reports what it sees (connected, packet
//! id written, PUBACK, connection lost). When the connection drops, the task ends and
//! the whole connection is thrown away, so rumqttc never replays its own in-flight
//! state: whatever was not acknowledged is simply sent again from the outbox
//! (at-least-once; every payload carries its `record_key` for consumers to dedupe).
//! Must not: ack a batch on `publish` returning Ok.

/// Its `[upstreams.mqtt]` config section (re-exported by `crate::config`).
pub mod config;

use super::map;
use super::{Outcome, Sink, UpstreamError};
use crate::config::{MqttBrokerConfig, MqttUpstream};
use crate::record::{Record, RecordKind, StoredRecord};
use rumqttc::{
    AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the event loop task reports.
#[derive(Debug)]
enum Ev {
    Connected,
    Written(u16),
    PubAck(u16),
    Down(String),
}

struct Connection {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Ev>,
    task: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The MQTT upstream sink.
pub struct MqttSink {
    cfg: MqttUpstream,
    broker_name: String,
    broker: MqttBrokerConfig,
    gateway: String,
    conn: Option<Connection>,
    target: String,
}

/// Fills a topic template. `+`, `#` and `/` in a sensor id would change the topic's
/// meaning, so they become `_`.
pub fn topic_for(template: &str, gateway: &str, kind: RecordKind, sensor_id: &str) -> String {
    let safe = topic_safe(sensor_id);
    template
        .replace("{gateway}", gateway)
        .replace("{kind}", kind.as_str())
        .replace("{sensor_id}", &safe)
}

/// `v` with `+`, `#` and `/` (which would change a topic's meaning) made `_`.
pub fn topic_safe(v: &str) -> String {
    v.chars()
        .map(|c| if matches!(c, '+' | '#' | '/') { '_' } else { c })
        .collect()
}

impl MqttSink {
    pub fn new(
        cfg: MqttUpstream,
        broker_name: &str,
        broker: MqttBrokerConfig,
        gateway: &str,
    ) -> MqttSink {
        let target = format!("{}:{} ({broker_name})", broker.host, broker.port);
        MqttSink {
            cfg,
            broker_name: broker_name.to_string(),
            broker,
            gateway: gateway.to_string(),
            conn: None,
            target,
        }
    }

    fn template(&self, kind: RecordKind) -> &str {
        let t = match kind {
            RecordKind::Reading => &self.cfg.topic_reading,
            RecordKind::Window => &self.cfg.topic_window,
            RecordKind::Alert => &self.cfg.topic_alert,
            RecordKind::Summary => &self.cfg.topic_summary,
        };
        t.as_deref().unwrap_or(&self.cfg.topic)
    }

    fn options(&self) -> Result<MqttOptions, UpstreamError> {
        let cfg_err = |detail: String| UpstreamError::Config {
            upstream: "mqtt",
            detail: format!("broker {}: {detail}", self.broker_name),
        };
        let id = self
            .cfg
            .client_id
            .clone()
            .unwrap_or_else(|| format!("edgegw-{}-up", self.gateway));
        let mut o = MqttOptions::new(id, &self.broker.host, self.broker.port);
        o.set_keep_alive(Duration::from_secs(self.broker.keep_alive_secs.max(5)));
        // Nothing is kept in a broker session: the outbox is the session.
        o.set_clean_session(true);
        o.set_max_packet_size(1024 * 1024, 1024 * 1024);
        o.set_request_channel_capacity(self.cfg.delivery().batch_max_records.max(1) + 16);
        o.set_inflight(
            u16::try_from(self.cfg.delivery().batch_max_records.clamp(1, 1000)).unwrap_or(100),
        );
        if let Some(user) = &self.broker.username {
            let pw = match &self.broker.password {
                Some(s) => s.resolve().map_err(|e| cfg_err(format!("password: {e}")))?,
                None => String::new(),
            };
            o.set_credentials(user, pw);
        }
        if let Some(tls) = &self.broker.tls {
            let c = super::tls::from_tls_section(tls).map_err(|e| cfg_err(e.to_string()))?;
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(c),
            )));
        }
        Ok(o)
    }

    async fn connect(&mut self) -> Result<(), UpstreamError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let opts = self.options()?;
        let cap = self.cfg.delivery().batch_max_records.max(1) + 16;
        let (client, mut eventloop) = AsyncClient::new(opts, cap);
        let (tx, mut events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Ev::Connected,
                    Ok(Event::Incoming(Packet::PubAck(p))) => Ev::PubAck(p.pkid),
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Ev::Written(pkid),
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Ev::Down(e.to_string()));
                        return;
                    }
                };
                if tx.send(ev).is_err() {
                    return;
                }
            }
        });
        let wait = Duration::from_millis(self.cfg.delivery().timeout_ms.max(100));
        let first = tokio::time::timeout(wait, events.recv()).await;
        let fail = |detail: String| UpstreamError::Connect {
            upstream: "mqtt",
            target: self.target.clone(),
            detail,
        };
        match first {
            Ok(Some(Ev::Connected)) => {
                tracing::info!(broker = %self.target, "Connected to the cloud MQTT broker");
                self.conn = Some(Connection {
                    client,
                    events,
                    task,
                });
                Ok(())
            }
            Ok(Some(Ev::Down(e))) => {
                task.abort();
                Err(fail(e))
            }
            Ok(_) => {
                task.abort();
                Err(fail("unexpected event before CONNACK".into()))
            }
            Err(_) => {
                task.abort();
                Err(fail("no CONNACK in time".into()))
            }
        }
    }

    async fn publish_batch(&mut self, batch: &[StoredRecord]) -> Result<(), UpstreamError> {
        let messages: Vec<(String, String)> = batch
            .iter()
            .map(|rec| {
                let topic = topic_for(
                    self.template(rec.record.kind()),
                    &self.gateway,
                    rec.record.kind(),
                    rec.record.sensor_id(),
                );
                (topic, map::record_json(rec, &self.gateway).to_string())
            })
            .collect();
        self.publish_messages(messages, false).await
    }

    /// Connects if needed and publishes `messages` (topic, payload) at QoS 1;
    /// returns when the broker has acknowledged every one. On an error the
    /// connection is dropped (the next call connects afresh). The local
    /// notification sink publishes through this too.
    pub async fn publish(
        &mut self,
        messages: Vec<(String, String)>,
        retain: bool,
    ) -> Result<(), UpstreamError> {
        self.connect().await?;
        let r = self.publish_messages(messages, retain).await;
        if r.is_err() {
            self.reset();
        }
        r
    }

    async fn publish_messages(
        &mut self,
        messages: Vec<(String, String)>,
        retain: bool,
    ) -> Result<(), UpstreamError> {
        let target = self.target.clone();
        let down = |detail: String| UpstreamError::Write {
            upstream: "mqtt",
            target: target.clone(),
            detail,
        };
        let Some(conn) = self.conn.as_mut() else {
            return Err(down("not connected".into()));
        };
        // Drop events left over from an earlier batch (there should be none).
        while let Ok(ev) = conn.events.try_recv() {
            if let Ev::Down(e) = ev {
                return Err(down(e));
            }
        }
        let n = messages.len();
        for (topic, payload) in messages {
            conn.client
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .await
                .map_err(|e| down(e.to_string()))?;
        }
        let mut written = 0usize;
        let mut outstanding: HashSet<u16> = HashSet::new();
        while written < n || !outstanding.is_empty() {
            match conn.events.recv().await {
                Some(Ev::Written(pkid)) => {
                    written += 1;
                    outstanding.insert(pkid);
                }
                Some(Ev::PubAck(pkid)) => {
                    outstanding.remove(&pkid);
                }
                Some(Ev::Connected) => {}
                Some(Ev::Down(e)) => return Err(down(e)),
                None => return Err(down("event loop ended".into())),
            }
        }
        Ok(())
    }
}

impl Sink for MqttSink {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn reset(&mut self) {
        self.conn = None;
    }

    fn record_bytes(&self, record: &StoredRecord) -> usize {
        map::approx_bytes(&record.record)
            + match record.record {
                Record::Window(_) => 300,
                _ => 100,
            }
    }

    async fn deliver(&mut self, batch: &[StoredRecord]) -> Outcome {
        if let Err(e) = self.connect().await {
            return Outcome::failed(e);
        }
        match self.publish_batch(batch).await {
            Ok(()) => Outcome::all(batch.len()),
            Err(e) => {
                self.reset();
                Outcome::failed(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_fill_the_template_and_neutralise_wildcards() {
        assert_eq!(
            topic_for(
                "sm/{gateway}/{kind}/{sensor_id}",
                "gw1",
                RecordKind::Alert,
                "a+b/c.d"
            ),
            "sm/gw1/alert/a_b_c.d"
        );
    }
}
