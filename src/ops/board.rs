//! What the local status page shows that the counters do not: each channel's live
//! value with its quality and flags and a sparkline of the last minutes, and the alert
//! episodes, open and recently closed, with their severity history.
//!
//! The processor thread feeds it (`pipeline/stage.rs`) from the records of each batch.
//! The alert episodes (with their plots and acknowledgements) are written to the
//! outbox's state table ([`ALERTS_KEY`]) within a few seconds of a change, so the page
//! shows them again after a restart.
//!
//! Alerts are always kept (they are rare, and a technician opening the page must see
//! the ones already open). Live values and sparklines cost a lookup per reading, so
//! they are kept only while somebody watches: a request for the page, its data or its
//! event stream marks the board watched for [`WATCH_GRACE`]; when nobody has asked for
//! that long, the processor skips the board (an atomic load and a look for alerts among
//! the batch's records) and the values are dropped. The first page view therefore shows each channel from its next
//! reading on, and the sparklines fill from then.

use super::plot::{self, Plot};
use crate::record::{AlertRecord, AlertState, Record, TimestampUs};
use crate::sources::{Reading, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the board keeps live values after the last request for them.
pub const WATCH_GRACE: Duration = Duration::from_secs(600);
/// Sparkline: one point per channel per [`SPARK_STEP_US`], the last [`SPARK_POINTS`].
pub const SPARK_POINTS: usize = 60;
pub const SPARK_STEP_US: TimestampUs = 5_000_000;
/// Closed episodes kept for the page, newest first.
const CLOSED_KEPT: usize = 20;
/// Severity changes kept per episode.
const HISTORY_KEPT: usize = 50;
/// State-table key of the persisted episodes.
pub const ALERTS_KEY: &str = "page/alerts";

/// The live state of one channel.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveChannel {
    pub sensor_id: String,
    pub device: String,
    pub channel: String,
    pub sensor_type: &'static str,
    pub unit: String,
    /// `scalar` or `window` (a waveform: `value` is the window's first feature, RMS).
    pub kind: &'static str,
    pub ts_us: TimestampUs,
    pub value: f64,
    pub quality: f32,
    pub flags: Vec<String>,
    /// `(reading time, value)`, oldest first.
    pub spark: VecDeque<(TimestampUs, f32)>,
}

/// One alert episode as the page shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AlertView {
    pub latest: AlertRecord,
    /// `(time, severity, state)` of each record of the episode, oldest first.
    pub history: Vec<(TimestampUs, u8, String)>,
    /// When a technician acknowledged the episode on the page (gateway clock).
    #[serde(default)]
    pub acknowledged_us: Option<TimestampUs>,
    /// The window that opened the episode, or raised its severity last (waveform
    /// channels; see `plot.rs`).
    #[serde(default)]
    pub plot: Option<Box<Plot>>,
}

/// What [`ALERTS_KEY`] holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Persisted {
    open: Vec<AlertView>,
    closed: Vec<AlertView>,
}

type EpisodeKey = (String, String, TimestampUs);

#[derive(Default)]
struct Inner {
    channels: HashMap<String, LiveChannel>,
    open: BTreeMap<EpisodeKey, AlertView>,
    closed: VecDeque<AlertView>,
}

/// See the module docs.
pub struct Board {
    start: Instant,
    /// Milliseconds since `start` until which the board is watched (0: never).
    watched_until_ms: AtomicU64,
    /// Live values are held (cleared once nobody watches).
    holding: AtomicBool,
    /// Episodes changed since they were last written.
    dirty: AtomicBool,
    inner: Mutex<Inner>,
    /// Where the episodes are kept (the running gateway's outbox).
    store: std::sync::OnceLock<crate::outbox::OutboxHandle>,
}

impl Default for Board {
    fn default() -> Self {
        Board::new()
    }
}

impl Board {
    pub fn new() -> Board {
        Board {
            start: Instant::now(),
            watched_until_ms: AtomicU64::new(0),
            holding: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            inner: Mutex::new(Inner::default()),
            store: std::sync::OnceLock::new(),
        }
    }

    /// Keeps the episodes in `outbox` from now on, and takes back those kept there by
    /// the previous run.
    pub fn attach(&self, outbox: crate::outbox::OutboxHandle) {
        let kept = outbox.blocking(|o| o.get_state(ALERTS_KEY));
        match kept {
            Ok(Some(bytes)) => match serde_json::from_slice::<Persisted>(&bytes) {
                Ok(p) => {
                    if let Ok(mut inner) = self.inner.lock() {
                        for v in p.open {
                            let key = (
                                v.latest.sensor_id.to_string(),
                                v.latest.anomaly_type.clone(),
                                v.latest.episode_us,
                            );
                            inner.open.insert(key, v);
                        }
                        inner.closed = p.closed.into();
                    }
                }
                Err(e) => tracing::warn!(key = ALERTS_KEY, error = %e,
                    "Cannot read the status page's alert episodes; the page starts without them."),
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(key = ALERTS_KEY, error = %e, "Cannot load the status page's alert episodes.")
            }
        }
        let _ = self.store.set(outbox);
    }

    /// The episodes, serialised for [`ALERTS_KEY`].
    fn persisted(&self) -> Option<Vec<u8>> {
        let inner = self.inner.lock().ok()?;
        serde_json::to_vec(&Persisted {
            open: inner.open.values().cloned().collect(),
            closed: inner.closed.iter().cloned().collect(),
        })
        .ok()
    }

    /// Writes the episodes to the outbox (blocking: the processor thread, rarely).
    fn persist_blocking(&self) {
        if let (Some(store), Some(bytes)) = (self.store.get(), self.persisted()) {
            if let Err(e) = store.blocking(|o| o.put_state(ALERTS_KEY, &bytes)) {
                tracing::warn!(error = %e, "Cannot keep the status page's alert episodes.");
            }
        }
    }

    /// Marks an open episode acknowledged and keeps it; false when there is no such
    /// open episode.
    pub async fn acknowledge(
        &self,
        sensor_id: &str,
        anomaly_type: &str,
        episode_us: TimestampUs,
    ) -> bool {
        let found = match self.inner.lock() {
            Ok(mut inner) => {
                let key = (sensor_id.to_string(), anomaly_type.to_string(), episode_us);
                match inner.open.get_mut(&key) {
                    Some(v) => {
                        v.acknowledged_us.get_or_insert(crate::record::now_us());
                        true
                    }
                    None => false,
                }
            }
            Err(_) => false,
        };
        if found {
            if let (Some(store), Some(bytes)) = (self.store.get(), self.persisted()) {
                if let Err(e) = store.with(move |o| o.put_state(ALERTS_KEY, &bytes)).await {
                    tracing::warn!(error = %e, "Cannot keep the status page's alert episodes.");
                }
            }
        }
        found
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Somebody asked for the page or its data.
    pub fn watch(&self) {
        self.watched_until_ms
            .store(self.now_ms() + WATCH_GRACE.as_millis() as u64, Relaxed);
    }

    /// Whether live values are being kept.
    pub fn is_watched(&self) -> bool {
        self.now_ms() < self.watched_until_ms.load(Relaxed)
    }

    /// Takes what the page shows from one batch's records: alerts always (with the
    /// plot of the window behind them, from the batch's `readings`), live values
    /// while watched.
    pub fn observe(
        &self,
        readings: &[Reading],
        records: &[Record],
        trend: impl Fn(&str) -> Option<plot::ScalarTrend>,
    ) {
        let watched = self.is_watched();
        let any_alert = records.iter().any(|r| matches!(r, Record::Alert(_)));
        if !watched && !any_alert && !self.holding.load(Relaxed) {
            return;
        }
        self.observe_locked(readings, records, watched, &trend);
        if any_alert {
            self.dirty.store(true, Relaxed);
        }
    }

    /// Writes the episodes to the outbox when they changed since the last call: the
    /// processor thread calls it every few seconds, so a burst of alerts is one write.
    /// (The alerts themselves are in the outbox at once; this is the page's copy.)
    pub fn persist_if_changed(&self) {
        if self.dirty.swap(false, Relaxed) {
            self.persist_blocking();
        }
    }

    fn observe_locked(
        &self,
        readings: &[Reading],
        records: &[Record],
        watched: bool,
        trend: &dyn Fn(&str) -> Option<plot::ScalarTrend>,
    ) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if !watched && !inner.channels.is_empty() {
            // Nobody has looked for a while: give the memory back.
            inner.channels = HashMap::new();
        }
        self.holding.store(watched, Relaxed);
        for r in records {
            match r {
                Record::Alert(a) => inner.alert(a, || {
                    window_plot(a, readings, records).or_else(|| {
                        let unit = records.iter().find_map(|r| match r {
                            Record::Reading(x) if x.sensor_id == a.sensor_id => {
                                Some(x.unit.as_str())
                            }
                            _ => None,
                        })?;
                        plot::capture_trend(a, unit, trend(&a.sensor_id)?)
                    })
                }),
                Record::Reading(x) if watched => inner.live(LiveUpdate {
                    sensor_id: &x.sensor_id,
                    device: &x.device,
                    channel: &x.channel,
                    sensor_type: x.sensor_type.as_str(),
                    unit: &x.unit,
                    kind: "scalar",
                    ts_us: x.ts_us,
                    value: x.value,
                    quality: x.quality,
                    flags: &x.flags,
                }),
                Record::Window(w) if watched => {
                    let Some((_, rms)) = w.features.first() else {
                        continue;
                    };
                    inner.live(LiveUpdate {
                        sensor_id: &w.sensor_id,
                        device: &w.device,
                        channel: &w.channel,
                        sensor_type: w.sensor_type.as_str(),
                        unit: &w.unit,
                        kind: "window",
                        ts_us: w.ts_us,
                        value: *rms,
                        quality: w.quality,
                        flags: &[],
                    })
                }
                _ => {}
            }
        }
    }

    /// Live channels sorted by sensor id, open episodes (most severe first) and the
    /// last closed ones (newest first).
    pub fn snapshot(&self) -> (Vec<LiveChannel>, Vec<AlertView>, Vec<AlertView>) {
        let Ok(inner) = self.inner.lock() else {
            return Default::default();
        };
        let mut channels: Vec<LiveChannel> = inner.channels.values().cloned().collect();
        channels.sort_by(|a, b| a.sensor_id.cmp(&b.sensor_id));
        let mut open: Vec<AlertView> = inner.open.values().cloned().collect();
        open.sort_by(|a, b| {
            b.latest
                .severity
                .cmp(&a.latest.severity)
                .then(b.latest.ts_us.cmp(&a.latest.ts_us))
        });
        (channels, open, inner.closed.iter().cloned().collect())
    }

    /// The open episode of `sensor_id` and `anomaly_type`, if any (tests, page).
    pub fn open_episode(&self, sensor_id: &str, anomaly_type: &str) -> Option<AlertView> {
        let inner = self.inner.lock().ok()?;
        inner
            .open
            .iter()
            .find(|((s, t, _), _)| s == sensor_id && t == anomaly_type)
            .map(|(_, v)| v.clone())
    }
}

struct LiveUpdate<'a> {
    sensor_id: &'a str,
    device: &'a str,
    channel: &'a str,
    sensor_type: &'static str,
    unit: &'a str,
    kind: &'static str,
    ts_us: TimestampUs,
    value: f64,
    quality: f32,
    flags: &'a [String],
}

impl Inner {
    fn live(&mut self, u: LiveUpdate<'_>) {
        let ch = match self.channels.get_mut(u.sensor_id) {
            Some(c) => c,
            None => self
                .channels
                .entry(u.sensor_id.to_string())
                .or_insert_with(|| LiveChannel {
                    sensor_id: u.sensor_id.to_string(),
                    device: u.device.to_string(),
                    channel: u.channel.to_string(),
                    sensor_type: u.sensor_type,
                    unit: u.unit.to_string(),
                    kind: u.kind,
                    ts_us: u.ts_us,
                    value: u.value,
                    quality: u.quality,
                    flags: Vec::new(),
                    spark: VecDeque::with_capacity(SPARK_POINTS),
                }),
        };
        // Live value: the newest reading (a late one does not replace it).
        if u.ts_us >= ch.ts_us {
            ch.ts_us = u.ts_us;
            ch.value = u.value;
            ch.quality = u.quality;
            if ch.flags.as_slice() != u.flags {
                ch.flags = u.flags.to_vec();
            }
        }
        // Sparkline: one point per step, the first reading of the step.
        let due = ch
            .spark
            .back()
            .is_none_or(|(t, _)| u.ts_us >= t + SPARK_STEP_US);
        if due && u.value.is_finite() {
            if ch.spark.len() == SPARK_POINTS {
                ch.spark.pop_front();
            }
            ch.spark.push_back((u.ts_us, u.value as f32));
        }
    }

    fn alert(&mut self, a: &AlertRecord, plot: impl FnOnce() -> Option<Plot>) {
        let key = (
            a.sensor_id.to_string(),
            a.anomaly_type.clone(),
            a.episode_us,
        );
        let state = match a.state {
            AlertState::Open => "open",
            AlertState::Update => "update",
            AlertState::Resolved => "resolved",
        };
        let view = self.open.entry(key.clone()).or_insert_with(|| AlertView {
            latest: a.clone(),
            history: Vec::new(),
            acknowledged_us: None,
            plot: None,
        });
        // The plot of the window that opened the episode or raised its severity.
        let raised = view.plot.is_none() || a.severity > view.latest.severity;
        if a.state != AlertState::Resolved && raised {
            if let Some(p) = plot() {
                view.plot = Some(Box::new(p));
            }
        }
        view.latest = a.clone();
        if view.history.len() < HISTORY_KEPT {
            view.history.push((a.ts_us, a.severity, state.to_string()));
        }
        if a.state == AlertState::Resolved {
            if let Some(done) = self.open.remove(&key) {
                if self.closed.len() == CLOSED_KEPT {
                    self.closed.pop_back();
                }
                self.closed.push_front(done);
            }
        }
    }
}

/// The plot of the window behind `alert`: the last samples of its channel's blocks in
/// this batch, as many as the window that was scored (its `WindowRecord`).
fn window_plot(alert: &AlertRecord, readings: &[Reading], records: &[Record]) -> Option<Plot> {
    let window = records.iter().rev().find_map(|r| match r {
        Record::Window(w) if w.sensor_id == alert.sensor_id => Some(w),
        _ => None,
    })?;
    let mut samples: Vec<f32> = Vec::new();
    for r in readings.iter().filter(|r| *r.sensor_id == *alert.sensor_id) {
        if let Value::Block { samples: s, .. } = &r.value {
            samples.extend_from_slice(s);
        }
    }
    let n = (window.samples as usize).min(samples.len());
    plot::capture(
        alert,
        &window.unit,
        &samples[samples.len() - n..],
        window.sample_rate_hz,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ReadingRecord, SensorType};

    fn reading(ts_us: TimestampUs, value: f64) -> Record {
        Record::Reading(ReadingRecord {
            sensor_id: "press.t".into(),
            device: "press".into(),
            channel: "t".into(),
            sensor_type: SensorType::Temperature,
            unit: "°C".into(),
            ts_us,
            value,
            quality: 1.0,
            flags: vec![],
            detection: None,
        })
    }

    fn alert(state: AlertState, severity: u8, ts_us: TimestampUs) -> Record {
        Record::Alert(AlertRecord {
            sensor_id: "press.t".into(),
            device: "press".into(),
            channel: "t".into(),
            sensor_type: SensorType::Temperature,
            anomaly_type: "drift".into(),
            severity,
            confidence: 0.9,
            description: "drifting".into(),
            evidence: serde_json::json!({}),
            recommended_actions: vec![],
            state,
            episode_us: 1_000,
            ts_us,
        })
    }

    #[test]
    fn live_values_are_kept_only_while_watched() {
        let b = Board::new();
        b.observe(&[], &[reading(1_000_000, 20.0)], |_| None);
        assert!(b.snapshot().0.is_empty(), "nobody watches: nothing kept");
        b.watch();
        for i in 0..200 {
            b.observe(
                &[],
                &[reading(1_000_000 + i * 1_000_000, 20.0 + i as f64)],
                |_| None,
            );
        }
        // A late reading does not replace the live value.
        b.observe(&[], &[reading(5_000_000, -1.0)], |_| None);
        let (channels, _, _) = b.snapshot();
        assert_eq!(channels.len(), 1);
        let c = &channels[0];
        assert_eq!(
            (c.value, c.ts_us, c.unit.as_str()),
            (219.0, 200_000_000, "°C")
        );
        // One point per 5 s of reading time, the last 60.
        assert_eq!(c.spark.len(), 40);
        assert_eq!(c.spark.front().map(|p| p.0), Some(1_000_000));
        assert_eq!(c.spark.back().map(|p| p.0), Some(196_000_000));
    }

    #[test]
    fn episodes_keep_their_history_and_move_to_closed() {
        let b = Board::new();
        b.observe(&[], &[alert(AlertState::Open, 2, 10)], |_| None);
        b.observe(&[], &[alert(AlertState::Update, 4, 20)], |_| None);
        let open = b.open_episode("press.t", "drift").expect("open");
        assert_eq!(open.latest.severity, 4);
        assert_eq!(
            open.history,
            vec![(10, 2, "open".to_string()), (20, 4, "update".to_string())]
        );
        b.observe(&[], &[alert(AlertState::Resolved, 4, 30)], |_| None);
        let (_, open, closed) = b.snapshot();
        assert!(open.is_empty());
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].history.len(), 3);
    }

    #[tokio::test]
    async fn episodes_and_acknowledgements_survive_a_restart() {
        use crate::outbox::{Outbox, OutboxHandle, OutboxSettings};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        let open = |p: &std::path::Path| {
            OutboxHandle::new(Outbox::open(p, &OutboxSettings::default(), "gw", &["a"]).unwrap())
        };
        let b = Board::new();
        b.attach(open(&path));
        b.observe(&[], &[alert(AlertState::Open, 3, 10)], |_| None);
        b.persist_if_changed();
        assert!(b.acknowledge("press.t", "drift", 1_000).await);
        assert!(
            !b.acknowledge("press.t", "drift", 999).await,
            "no such episode"
        );
        drop(b);

        let again = Board::new();
        again.attach(open(&path));
        let v = again.open_episode("press.t", "drift").expect("kept");
        assert_eq!(v.latest.severity, 3);
        assert!(v.acknowledged_us.is_some());
    }
}
