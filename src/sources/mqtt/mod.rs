//! The MQTT source: one connection per broker for all MQTT devices on it (rumqttc).
//!
//! Owns the subscriber side of a broker: persistent session (clean session off, fixed
//! client id), QoS 1 subscriptions to every device's topic filter, decoding payloads
//! into readings ([`decode`]), and acknowledging each message only after the outbox
//! has committed what was made from it (manual acks, in order). It must not touch
//! SQLite or know upstream formats; it never acknowledges a message that is not
//! stored, except malformed ones (see below).
//!
//! Delivery, precisely:
//! - Each QoS 1 message that yields readings goes down the pipeline as one
//!   [`SourceBatch`] with an [`Ack`]. Its PUBACK is sent when the Ack fires, and
//!   PUBACKs leave in the order the messages came in (MQTT 3.1.1 §4.6): a message
//!   whose Ack fired waits for older ones.
//! - A dropped Ack (not stored) is never acknowledged: the source drops the
//!   connection (after a backoff) so that the broker redelivers every unacknowledged
//!   message of the session. Stored messages behind it are redelivered too
//!   (at-least-once: duplicates, never loss).
//! - A message that yields no readings (malformed, unknown topic) is counted per
//!   device and per topic, logged once per kind and topic, and acknowledged in turn:
//!   otherwise the broker would redeliver it forever. So is a reading whose payload
//!   timestamp is implausible (`timestamp_out_of_bounds`, see [`decode`]).
//! - With `device_level`, each new level value becomes a device until the route has
//!   `mqtt.max_devices` of them; messages for further values are counted as
//!   `too_many_devices` under the route's topic filter (not their own topic, so that
//!   a flood of invented ids grows no counter) and acknowledged unused.
//! - Retained messages are used only when the profile gives a timestamp field;
//!   without one, a retained message is an old value that would get the arrival time,
//!   so it is counted as `retained` and acknowledged unused.
//! - On a connection loss, unacknowledged messages are forgotten (rumqttc drops
//!   queued PUBACKs too) and arrive again on the resumed session.
//!
//! Flow control: the broker sends at most its in-flight window (Mosquitto:
//! `max_inflight_messages`, default 20) of unacknowledged QoS 1 messages, so a slow
//! outbox slows the broker down instead of growing memory here; the broker queues
//! the rest (Mosquitto: `max_queued_messages`). The source also stops reading from
//! the connection when [`MAX_PENDING`] messages wait for their acks or [`MAX_OUTQ`]
//! batches wait for room in the pipeline.

pub mod decode;
pub mod options;
pub mod route;

pub use decode::{Decoded, Decoder, Problem};
pub use route::topic_matches;

use crate::config::MqttBrokerConfig;
use crate::record::now_us;
use crate::sources::serial::support::{escape_bytes, Backoff, LogLimiter};
use crate::sources::{Ack, DeviceSpec, SourceBatch};
use route::Route;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Most received QoS 1 messages waiting for their ack before the source stops
/// reading from the broker.
pub const MAX_PENDING: usize = 1024;
/// Most batches waiting for room in the pipeline channel before the source stops
/// reading from the broker.
pub const MAX_OUTQ: usize = 64;
/// First reconnect delay; doubles up to [`RECONNECT_MAX`], with jitter.
const RECONNECT_INITIAL: Duration = Duration::from_millis(250);
/// Longest wait between reconnect attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// A connection that lasted this long was healthy: the backoff starts over. (Not
/// at once on ConnAck: two gateways sharing a client id would otherwise kick each
/// other off in a tight loop.)
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// On shutdown: how long to wait for the outbox to commit what is in flight, so
/// that it can be acknowledged instead of redelivered.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// One log line per (topic, fault kind) at most this often.
const PROBLEM_LOG_EVERY: Duration = Duration::from_secs(300);
/// Payload bytes shown in a log line.
const LOG_BYTES: usize = 80;
/// Most topics with their own error counters; the rest count under `(other topics)`.
const MAX_TOPICS: usize = 1024;
/// Longest topic kept as a key of the error counters and the log limiter (MQTT
/// allows 64 KiB): longer ones count under the route's filter or `(other topics)`,
/// so that a bounded number of keys is a bounded number of bytes too.
const MAX_TOPIC_KEY_BYTES: usize = 256;

/// Errors at the boundary of the MQTT source (set-up problems; connection faults
/// are retried, not returned).
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("MQTT broker {broker}: cannot read the {what}: {source}")]
    Secret {
        broker: String,
        what: &'static str,
        source: crate::config::SecretError,
    },
    #[error("MQTT broker {broker}: TLS: {what}")]
    Tls { broker: String, what: String },
    #[error("device {device}: its profile {profile} has no [mqtt] section")]
    NoMqttSection { device: String, profile: String },
    #[error("device {device}: profile {profile}: {reason}")]
    Profile {
        device: String,
        profile: String,
        reason: String,
    },
}

/// Error counters per topic and kind (the per-device ones are in `DeviceStats`):
/// where exactly a malformed payload came from. Bounded to [`MAX_TOPICS`] topics of
/// at most [`MAX_TOPIC_KEY_BYTES`].
#[derive(Debug, Default)]
pub struct TopicErrors {
    counts: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
}

impl TopicErrors {
    /// The key that topics beyond [`MAX_TOPICS`] are counted under.
    pub const OTHER: &'static str = "(other topics)";

    pub fn count(&self, topic: &str, kind: &'static str) {
        if let Ok(mut m) = self.counts.lock() {
            let key = if topic.len() <= MAX_TOPIC_KEY_BYTES
                && (m.contains_key(topic) || m.len() < MAX_TOPICS)
            {
                topic
            } else {
                Self::OTHER
            };
            *m.entry(key.to_string())
                .or_default()
                .entry(kind)
                .or_insert(0) += 1;
        }
    }

    pub fn get(&self, topic: &str, kind: &str) -> u64 {
        self.counts
            .lock()
            .ok()
            .and_then(|m| m.get(topic).and_then(|k| k.get(kind)).copied())
            .unwrap_or(0)
    }

    /// (topic, kind, count), sorted.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        self.counts
            .lock()
            .map(|m| {
                m.iter()
                    .flat_map(|(t, k)| k.iter().map(move |(k, n)| (t.clone(), *k, *n)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Reads all MQTT devices of one broker until `cancel` fires.
pub async fn run_mqtt(
    broker_name: String,
    broker: MqttBrokerConfig,
    gateway_id: String,
    devices: Vec<DeviceSpec>,
    tx: mpsc::Sender<SourceBatch>,
    cancel: CancellationToken,
) {
    run_mqtt_with_topic_errors(
        broker_name,
        broker,
        gateway_id,
        devices,
        tx,
        cancel,
        Arc::new(TopicErrors::default()),
    )
    .await
}

/// [`run_mqtt`], counting errors per topic into `topic_errors` (for metrics).
pub async fn run_mqtt_with_topic_errors(
    broker_name: String,
    broker: MqttBrokerConfig,
    gateway_id: String,
    devices: Vec<DeviceSpec>,
    tx: mpsc::Sender<SourceBatch>,
    cancel: CancellationToken,
    topic_errors: Arc<TopicErrors>,
) {
    let mut routes = Vec::new();
    for d in devices {
        match route_for(d.clone()) {
            Ok(r) => routes.push(r),
            Err(e) => {
                d.stats.error("config");
                error!(broker = %broker_name, error = %e, "MQTT device cannot start");
            }
        }
    }
    if routes.is_empty() {
        warn!(broker = %broker_name, "No MQTT device to read on this broker; not connecting");
        return;
    }
    let options = match options::build(&broker_name, &broker, &gateway_id, MAX_PENDING + 64) {
        Ok(o) => o,
        Err(e) => {
            for r in &routes {
                r.device.stats.error("config");
            }
            error!(error = %e, "MQTT broker cannot be used");
            return;
        }
    };
    info!(
        broker = %broker_name,
        host = %broker.host,
        port = broker.port,
        client_id = %options.client_id(),
        tls = broker.tls.is_some(),
        devices = routes.len(),
        "Starting MQTT source"
    );
    let (client, eventloop) = AsyncClient::new(options, MAX_PENDING + 64);
    let mut conn = Conn::new(broker_name, client, routes, topic_errors);
    conn.run(eventloop, tx, cancel).await;
}

fn route_for(device: DeviceSpec) -> Result<Route, MqttError> {
    let profile = &device.profile;
    let fmt = profile
        .profile
        .mqtt
        .as_ref()
        .ok_or_else(|| MqttError::NoMqttSection {
            device: device.config.id.clone(),
            profile: profile.path.display().to_string(),
        })?;
    let filter = device
        .config
        .mqtt
        .as_ref()
        .and_then(|m| m.topic.clone())
        .unwrap_or_else(|| fmt.topic.clone());
    let decoder = Decoder::new(&device.config.id, fmt, |c| {
        profile
            .profile
            .channels
            .get(c)
            .map(|ch| (ch.sensor_type, ch.unit.clone()))
    })
    .map_err(|reason| MqttError::Profile {
        device: device.config.id.clone(),
        profile: profile.path.display().to_string(),
        reason,
    })?;
    // Level captures count levels of the topic itself; a device's own topic filter
    // must keep them where the profile's is.
    let levels: Vec<&str> = filter.split('/').collect();
    for (name, level) in [
        ("device_level", fmt.device_level),
        ("channel_level", fmt.channel_level),
    ] {
        let Some(level) = level else { continue };
        let wild = match levels.get(level) {
            Some(l) => *l == "+" || *l == "#",
            None => levels.last() == Some(&"#"),
        };
        if !wild {
            warn!(
                device = %device.config.id,
                topic = %filter,
                "mqtt.{name} = {level} of profile {} is not a wildcard level of this device's topic filter; a device topic must keep the profile's levels in place",
                profile.path.display()
            );
        }
    }
    Ok(Route {
        filter,
        device,
        decoder,
    })
}

/// A received message waiting for its turn to be acknowledged.
struct Pending {
    pkid: u16,
    qos: QoS,
    /// Fires when the outbox committed the batch; `None` = acknowledge as soon as
    /// the older messages are (malformed, nothing to store).
    stored: Option<oneshot::Receiver<()>>,
    /// For the log when it is not stored.
    topic: String,
}

/// A batch waiting for room in the pipeline channel.
struct Queued {
    batch: SourceBatch,
    /// A QoS 1 message the broker will redeliver if the connection drops before it
    /// is acknowledged: such batches are discarded on a disconnect.
    redeliverable: bool,
}

enum Step {
    Cancelled,
    Stored(Result<(), oneshot::error::RecvError>),
    Sent,
    PipelineClosed,
    Polled(Box<EventLoop>, Result<Event, ConnectionError>),
}

/// One `EventLoop::poll` (after an optional backoff delay) that owns the event
/// loop and hands it back with the event. The source keeps this future across
/// iterations and never drops it unfinished: `poll` is not documented as
/// cancellation-safe (a PUBACK lost in a cancelled write would occupy one slot of
/// the broker's in-flight window for good).
type PollFuture =
    Pin<Box<dyn Future<Output = (Box<EventLoop>, Result<Event, ConnectionError>)> + Send>>;

fn poll_after(mut eventloop: Box<EventLoop>, delay: Option<Duration>) -> PollFuture {
    Box::pin(async move {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let ev = eventloop.poll().await;
        (eventloop, ev)
    })
}

struct Conn {
    broker: String,
    client: AsyncClient,
    routes: Vec<Route>,
    /// Distinct topic filters, subscribed in this order.
    filters: Vec<String>,
    topic_errors: Arc<TopicErrors>,
    /// Received QoS 1 (and 2) messages in arrival order, not yet acknowledged.
    pending: VecDeque<Pending>,
    outq: VecDeque<Queued>,
    /// The first ConnAck of the process always subscribes (the config may have
    /// changed since the broker stored the session); later ones only when the
    /// broker lost the session. Resubscribing on a present session would make the
    /// broker resend retained messages.
    subscribed_once: bool,
    backoff: Backoff,
    /// Wait this long before the next poll (backoff before reconnecting).
    next_delay: Option<Duration>,
    /// A batch was not stored: the connection is being dropped so that the broker
    /// redelivers; messages arriving meanwhile are ignored (redelivered too).
    draining: bool,
    connected_at: Option<Instant>,
    problem_logs: LogLimiter<(String, &'static str)>,
    conn_logs: LogLimiter<&'static str>,
}

async fn front_stored(pending: &mut VecDeque<Pending>) -> Result<(), oneshot::error::RecvError> {
    match pending.front_mut().and_then(|p| p.stored.as_mut()) {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

impl Conn {
    fn new(
        broker: String,
        client: AsyncClient,
        routes: Vec<Route>,
        topic_errors: Arc<TopicErrors>,
    ) -> Conn {
        let filters = route::filters(&routes);
        Conn {
            broker,
            client,
            routes,
            filters,
            topic_errors,
            pending: VecDeque::new(),
            outq: VecDeque::new(),
            subscribed_once: false,
            backoff: Backoff::new(RECONNECT_INITIAL, RECONNECT_MAX),
            next_delay: None,
            draining: false,
            connected_at: None,
            problem_logs: LogLimiter::new(PROBLEM_LOG_EVERY, 4096),
            conn_logs: LogLimiter::new(Duration::from_secs(60), 16),
        }
    }

    async fn run(
        &mut self,
        eventloop: EventLoop,
        tx: mpsc::Sender<SourceBatch>,
        cancel: CancellationToken,
    ) {
        let mut polling = poll_after(Box::new(eventloop), None);
        loop {
            self.ack_ready();
            let front_waiting = self.pending.front().is_some_and(|p| p.stored.is_some());
            let can_poll = self.pending.len() < MAX_PENDING && self.outq.len() < MAX_OUTQ;
            let step = tokio::select! {
                biased;
                _ = cancel.cancelled() => Step::Cancelled,
                r = front_stored(&mut self.pending), if front_waiting => Step::Stored(r),
                permit = tx.reserve(), if !self.outq.is_empty() => match permit {
                    Ok(p) => {
                        if let Some(q) = self.outq.pop_front() {
                            p.send(q.batch);
                        }
                        Step::Sent
                    }
                    Err(_) => Step::PipelineClosed,
                },
                (el, ev) = &mut polling, if can_poll => Step::Polled(el, ev),
            };
            match step {
                Step::Cancelled => break,
                Step::Stored(Ok(())) => {
                    if let Some(p) = self.pending.front_mut() {
                        p.stored = None;
                    }
                }
                Step::Stored(Err(_)) => self.not_stored(),
                Step::Sent => {}
                Step::PipelineClosed => {
                    info!(broker = %self.broker, "Pipeline closed; MQTT source stops");
                    break;
                }
                Step::Polled(mut el, ev) => {
                    if self.draining && ev.is_ok() {
                        // Ignore what arrives (it is redelivered); once our
                        // DISCONNECT is out, drop the connection.
                        if matches!(ev, Ok(Event::Outgoing(Outgoing::Disconnect))) {
                            el.clean();
                            self.disconnected();
                        }
                    } else {
                        self.on_event(ev);
                    }
                    polling = poll_after(el, self.next_delay.take());
                }
            }
        }
        self.shutdown(polling, tx).await;
    }

    /// Acknowledges, in order, every message at the front whose batch is stored.
    fn ack_ready(&mut self) {
        while let Some(front) = self.pending.front_mut() {
            if let Some(rx) = &mut front.stored {
                match rx.try_recv() {
                    Ok(()) => {}
                    Err(oneshot::error::TryRecvError::Empty) => return,
                    Err(oneshot::error::TryRecvError::Closed) => {
                        self.not_stored();
                        return;
                    }
                }
            }
            let Some(p) = self.pending.pop_front() else {
                return;
            };
            let mut ack = Publish::new("", p.qos, Vec::new());
            ack.pkid = p.pkid;
            // The request channel holds MAX_PENDING + 64; it cannot be full here. If
            // it were, the message is simply redelivered later.
            if let Err(e) = self.client.try_ack(&ack) {
                warn!(broker = %self.broker, topic = %p.topic, error = %e, "Could not queue an MQTT acknowledgement; the broker will redeliver");
            }
        }
    }

    /// A batch was dropped before the outbox stored it: do not acknowledge it (nor,
    /// to keep the order, anything after it); reconnect so the broker redelivers.
    fn not_stored(&mut self) {
        if self.draining {
            return;
        }
        let topic = self
            .pending
            .front()
            .map(|p| p.topic.clone())
            .unwrap_or_default();
        warn!(broker = %self.broker, topic = %topic, unacknowledged = self.pending.len(), "An MQTT message was not stored; reconnecting so that the broker redelivers it");
        self.pending.clear();
        self.outq.retain(|q| !q.redeliverable);
        self.draining = true;
        // The DISCONNECT goes out after the PUBACKs already queued (stored
        // messages); the connection is then dropped (see `run`).
        if let Err(e) = self.client.try_disconnect() {
            warn!(broker = %self.broker, error = %e, "Could not queue the MQTT disconnect");
        }
    }

    /// Forget the connection's unacknowledged messages and schedule a reconnect.
    fn disconnected(&mut self) {
        self.draining = false;
        self.pending.clear();
        self.outq.retain(|q| !q.redeliverable);
        if self
            .connected_at
            .take()
            .is_some_and(|t| t.elapsed() >= HEALTHY_AFTER)
        {
            self.backoff.reset();
        }
        for r in &self.routes {
            r.device.stats.connected.store(false, Relaxed);
        }
        let delay = self.backoff.next_delay();
        debug!(broker = %self.broker, delay_ms = delay.as_millis() as u64, "Reconnecting to the MQTT broker after a delay");
        self.next_delay = Some(delay);
    }

    fn on_event(&mut self, ev: Result<Event, ConnectionError>) {
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                self.connected_at = Some(Instant::now());
                for r in &self.routes {
                    r.device.stats.connected.store(true, Relaxed);
                }
                info!(broker = %self.broker, session_present = ack.session_present, "Connected to the MQTT broker");
                if !self.subscribed_once || !ack.session_present {
                    let subs = self
                        .filters
                        .iter()
                        .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    match self.client.try_subscribe_many(subs) {
                        Ok(()) => self.subscribed_once = true,
                        Err(e) => {
                            error!(broker = %self.broker, error = %e, "Could not queue the MQTT subscriptions; reconnecting");
                            self.draining = true;
                            let _ = self.client.try_disconnect();
                        }
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(s))) => {
                for (code, filter) in s.return_codes.iter().zip(&self.filters) {
                    match code {
                        SubscribeReasonCode::Success(qos) => {
                            debug!(broker = %self.broker, topic = %filter, qos = ?qos, "Subscribed")
                        }
                        SubscribeReasonCode::Failure => {
                            error!(broker = %self.broker, topic = %filter, "The broker refused the subscription (check its ACL for this client)");
                            for r in self.routes.iter().filter(|r| &r.filter == filter) {
                                r.device.stats.error("subscribe");
                            }
                        }
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => self.on_publish(p),
            Ok(_) => {}
            Err(e) => {
                let was_connected = self.connected_at.is_some();
                for r in &self.routes {
                    r.device.stats.error(if was_connected {
                        "disconnected"
                    } else {
                        "connect"
                    });
                }
                if let Some(n) = self.conn_logs.allow("connection", Instant::now()) {
                    warn!(broker = %self.broker, error = %e, suppressed = n, "MQTT connection failed; reconnecting with backoff");
                }
                self.disconnected();
            }
        }
    }

    fn on_publish(&mut self, p: Publish) {
        let arrival = now_us();
        let mut readings = Vec::new();
        let mut matched = false;
        for r in self.routes.iter_mut() {
            if !topic_matches(&r.filter, &p.topic) {
                continue;
            }
            matched = true;
            if p.retain && !r.decoder.has_timestamp() {
                count(
                    &self.topic_errors,
                    &mut self.problem_logs,
                    &self.broker,
                    r,
                    &p,
                    &Problem {
                        kind: "retained",
                        detail: "a retained (old) value, and the profile has no timestamp field to tell its age".into(),
                    },
                );
                continue;
            }
            let mut out = r.decoder.decode(&p.topic, &p.payload, arrival);
            if !r.decoder.has_timestamp() {
                for reading in &mut out.readings {
                    reading.arrival = true;
                }
            }
            for problem in &out.problems {
                count(
                    &self.topic_errors,
                    &mut self.problem_logs,
                    &self.broker,
                    r,
                    &p,
                    problem,
                );
            }
            if !out.readings.is_empty() {
                r.device
                    .stats
                    .success(arrival, Duration::ZERO, out.readings.len());
                readings.extend(out.readings);
            }
        }
        if !matched {
            self.topic_errors.count(&p.topic, "unrouted");
            let key = if p.topic.len() <= MAX_TOPIC_KEY_BYTES {
                p.topic.clone()
            } else {
                TopicErrors::OTHER.to_string()
            };
            if let Some(n) = self.problem_logs.allow((key, "unrouted"), Instant::now()) {
                warn!(broker = %self.broker, topic = %p.topic, suppressed = n, "MQTT message on a topic no device reads (a subscription left in the persistent session by an older config?); acknowledged and dropped");
            }
        }
        let needs_ack = p.qos != QoS::AtMostOnce;
        if readings.is_empty() {
            if needs_ack {
                self.pending.push_back(Pending {
                    pkid: p.pkid,
                    qos: p.qos,
                    stored: None,
                    topic: p.topic,
                });
            }
            return;
        }
        let (ack, stored) = if needs_ack {
            let (ack, rx) = Ack::new();
            (Some(ack), Some(rx))
        } else {
            (None, None)
        };
        self.outq.push_back(Queued {
            batch: SourceBatch { readings, ack },
            redeliverable: needs_ack,
        });
        if let Some(rx) = stored {
            self.pending.push_back(Pending {
                pkid: p.pkid,
                qos: p.qos,
                stored: Some(rx),
                topic: p.topic,
            });
        }
    }

    /// Gives the outbox a moment to commit what is in flight and acknowledges it,
    /// then disconnects cleanly (the session stays on the broker).
    async fn shutdown(&mut self, mut polling: PollFuture, tx: mpsc::Sender<SourceBatch>) {
        // Batches not yet in the pipeline are redelivered next time; dropping the
        // sender lets the pipeline finish.
        self.outq.clear();
        drop(tx);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        let connected = self.connected_at.is_some() && !self.draining;
        if connected {
            loop {
                self.ack_ready();
                if self.pending.is_empty() {
                    break;
                }
                let front_waiting = self.pending.front().is_some_and(|p| p.stored.is_some());
                let step = tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    r = front_stored(&mut self.pending), if front_waiting => Step::Stored(r),
                    (el, ev) = &mut polling => Step::Polled(el, ev),
                };
                match step {
                    Step::Stored(Ok(())) => {
                        if let Some(p) = self.pending.front_mut() {
                            p.stored = None;
                        }
                    }
                    // New messages are not taken any more; they are redelivered.
                    Step::Polled(el, Ok(_)) => polling = poll_after(el, None),
                    _ => {
                        self.connected_at = None;
                        break;
                    }
                }
            }
        }
        if self.connected_at.is_some() && !self.draining {
            let _ = self.client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    let (el, ev) = (&mut polling).await;
                    match ev {
                        Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                        Ok(_) => polling = poll_after(el, None),
                    }
                }
            })
            .await;
        }
        for r in &self.routes {
            r.device.stats.connected.store(false, Relaxed);
        }
        info!(broker = %self.broker, unacknowledged = self.pending.len(), "MQTT source stopped");
    }
}

/// Counts a problem for the device and the topic; logs it once per kind and topic
/// (then at most every [`PROBLEM_LOG_EVERY`]).
///
/// A message refused for its device level (a value that is no valid name, or one
/// device too many) is counted and rate-limited under the route's topic filter
/// instead: its topic names a device that does not exist, and publishers inventing
/// new ones must not grow the counters either. So is one on a topic longer than
/// [`MAX_TOPIC_KEY_BYTES`].
fn count(
    topic_errors: &TopicErrors,
    logs: &mut LogLimiter<(String, &'static str)>,
    broker: &str,
    route: &Route,
    p: &Publish,
    problem: &Problem,
) {
    route.device.stats.error(problem.kind);
    let refused_device = matches!(problem.kind, decode::TOO_MANY_DEVICES | "topic_level");
    let key = if refused_device || p.topic.len() > MAX_TOPIC_KEY_BYTES {
        &route.filter
    } else {
        &p.topic
    };
    topic_errors.count(key, problem.kind);
    if let Some(n) = logs.allow((key.clone(), problem.kind), Instant::now()) {
        let what = match problem.kind {
            decode::TIMESTAMP_OUT_OF_BOUNDS => "MQTT reading refused: its timestamp is implausible",
            decode::TOO_MANY_DEVICES => {
                "MQTT message refused: its topic names one device too many for this subscription"
            }
            _ => "Malformed MQTT message",
        };
        warn!(
            broker = %broker,
            device = %route.device.config.id,
            topic = %p.topic,
            filter = %route.filter,
            kind = problem.kind,
            problem = %problem.detail,
            payload = %escape_bytes(&p.payload, LOG_BYTES),
            suppressed = n,
            "{what}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::{LoadedProfile, Profile};
    use crate::sources::DeviceStats;

    const PROFILE: &str = r#"
vendor = "T"
model = "M"
[channels.t]
sensor_type = "temperature"
unit = "°C"
[mqtt]
topic = "site/+/+/t"
payload = "number"
device_level = 2
max_devices = 5
[[mqtt.fields]]
channel = "t"
"#;

    fn conn(filter: &str) -> Conn {
        let profile: Profile = toml::from_str(PROFILE).unwrap();
        let config = toml::from_str(&format!(
            "id = \"base\"\nprofile = \"p\"\n[mqtt]\nbroker = \"b\"\ntopic = \"{filter}\"\n"
        ))
        .unwrap();
        let device = DeviceSpec {
            config,
            profile: Arc::new(LoadedProfile {
                name: "p".into(),
                path: "p.toml".into(),
                profile,
            }),
            stats: Arc::new(DeviceStats::default()),
        };
        let route = route_for(device).unwrap();
        // Never connected: on_publish does not need the broker.
        let (client, _eventloop) = AsyncClient::new(rumqttc::MqttOptions::new("t", "x", 1), 8);
        Conn::new("b".into(), client, vec![route], Arc::default())
    }

    #[test]
    fn state_stays_bounded_under_a_flood_of_node_ids() {
        let filter = "site/+/+/t";
        let mut c = conn(filter);
        let n = 20_000;
        for i in 0..n {
            let topic = format!("site/b{}/n{i}/t", i % 3);
            c.on_publish(Publish::new(topic, QoS::AtMostOnce, "1.5"));
            // The pipeline takes every batch.
            c.outq.clear();
        }
        let r = &c.routes[0];
        assert_eq!(r.decoder.dynamic_devices(), 5);
        assert_eq!(r.device.stats.error_count("too_many_devices"), n - 5);
        assert_eq!(r.device.stats.readings.load(Relaxed), 5);
        // Refused messages are counted under the subscription's filter, once.
        assert_eq!(
            c.topic_errors.snapshot(),
            [(filter.to_string(), "too_many_devices", n - 5)]
        );
        assert!(c.pending.is_empty());

        // Level values that are no device name, and malformed payloads on huge
        // topics of known devices: counted under the filter as well.
        let long = "x".repeat(60_000);
        for i in 0..1000 {
            c.on_publish(Publish::new(
                format!("site/b/{long}{i}/t"),
                QoS::AtMostOnce,
                "1",
            ));
            c.on_publish(Publish::new(
                format!("site/{long}{i}/n0/t"),
                QoS::AtMostOnce,
                "bad",
            ));
        }
        assert_eq!(
            c.topic_errors.snapshot(),
            [
                (filter.to_string(), "number", 1000),
                (filter.to_string(), "too_many_devices", n - 5),
                (filter.to_string(), "topic_level", 1000),
            ]
        );
        assert!(c.outq.is_empty());
    }

    #[test]
    fn topic_error_keys_are_bounded_in_number_and_length() {
        let t = TopicErrors::default();
        for i in 0..2 * MAX_TOPICS {
            t.count(&format!("a/{i}"), "json");
        }
        t.count(&"y".repeat(MAX_TOPIC_KEY_BYTES + 1), "json");
        t.count("a/0", "json");
        let snap = t.snapshot();
        assert_eq!(snap.len(), MAX_TOPICS + 1);
        assert_eq!(t.get("a/0", "json"), 2);
        assert_eq!(t.get(TopicErrors::OTHER, "json"), MAX_TOPICS as u64 + 1);
    }
}
