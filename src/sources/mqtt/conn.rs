//! The connection to one broker: the event loop (connecting, subscribing, backoff),
//! taking messages in and down the pipeline, and acknowledging them in order once
//! the outbox stored them (the delivery rules are in the [`super`] module docs).

use super::route::{self, topic_matches, Route};
use super::topic_errors::{count, TopicErrors};
use super::{
    Problem, HEALTHY_AFTER, MAX_OUTQ, MAX_PENDING, MAX_TOPIC_KEY_BYTES, PROBLEM_LOG_EVERY,
    RECONNECT_INITIAL, RECONNECT_MAX, SHUTDOWN_GRACE,
};
use crate::record::now_us;
use crate::sources::serial::support::{Backoff, LogLimiter};
use crate::sources::{Ack, SourceBatch};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// A received message waiting for its turn to be acknowledged.
pub(super) struct Pending {
    pkid: u16,
    qos: QoS,
    /// Fires when the outbox committed the batch; `None` = acknowledge as soon as
    /// the older messages are (malformed, nothing to store).
    stored: Option<oneshot::Receiver<()>>,
    /// For the log when it is not stored.
    topic: String,
}

/// A batch waiting for room in the pipeline channel.
pub(super) struct Queued {
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

pub(super) struct Conn {
    broker: String,
    client: AsyncClient,
    pub(super) routes: Vec<Route>,
    /// Distinct topic filters, subscribed in this order.
    filters: Vec<String>,
    pub(super) topic_errors: Arc<TopicErrors>,
    /// Received QoS 1 (and 2) messages in arrival order, not yet acknowledged.
    pub(super) pending: VecDeque<Pending>,
    pub(super) outq: VecDeque<Queued>,
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
    pub(super) fn new(
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

    pub(super) async fn run(
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

    pub(super) fn on_publish(&mut self, p: Publish) {
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
