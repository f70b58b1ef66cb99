//! The metrics registry and the Prometheus text format (version 0.0.4) writer.
//!
//! Owns: [`Metrics`] (what `/metrics` shows), [`Exposition`] (a strict writer: one
//! `# HELP`/`# TYPE` per family, samples of a family together, escaped label values,
//! cumulative histogram buckets), and ready-made labelled counters and gauges that any
//! part can register. It holds no data of its own besides those: collectors read the
//! live counters of the parts (`DeviceStats`, the processor snapshot, outbox stats)
//! at scrape time.
//!
//! How a part adds its metrics (e.g. an upstream forwarder):
//! ```ignore
//! let sent = metrics.counter("edgegw_upstream_sent_total", "Records sent.", &["upstream"]);
//! let sent = sent.with(&["timescale"]);   // a cheap handle: an Arc'd atomic
//! sent.add(batch.len() as u64);
//! ```
//! or, for counters it already keeps, `metrics.register(Arc::new(MyCollector))`
//! with [`Collector`]. Registering the same family name twice returns the first one,
//! so a part that restarts (reload) keeps its counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Something that writes whole metric families at scrape time.
pub trait Collector: Send + Sync {
    fn collect(&self, out: &mut Exposition);
}

/// Prometheus metric types we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A scrape being written. Families are written whole, one after another.
///
/// Built whole ([`Exposition::new`], [`Exposition::finish`] returns the text) or
/// streamed ([`Exposition::streaming`]): then the text goes to the sink in chunks of
/// about [`CHUNK`] bytes, cut between samples, as it is written. A gateway with
/// 15,000 channels writes ~165,000 samples (~12 MB) a scrape; streamed, the scrape
/// holds one chunk at a time instead of the whole text.
#[derive(Default)]
pub struct Exposition {
    buf: String,
    /// Family names already written: a second `# TYPE` for a name is a format error.
    seen: std::collections::BTreeSet<String>,
    /// Where full chunks go when streaming.
    sink: Option<Box<dyn FnMut(String) + Send>>,
}

/// The size at which a streamed exposition hands a chunk to its sink.
pub const CHUNK: usize = 64 * 1024;

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposition")
            .field("buffered", &self.buf.len())
            .field("families", &self.seen.len())
            .field("streaming", &self.sink.is_some())
            .finish()
    }
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// An exposition that hands its text to `sink` in chunks of about [`CHUNK`]
    /// bytes, each ending with a whole line; [`Exposition::finish`] hands over the
    /// rest.
    pub fn streaming(sink: impl FnMut(String) + Send + 'static) -> Exposition {
        Exposition {
            buf: String::with_capacity(CHUNK + CHUNK / 4),
            sink: Some(Box::new(sink)),
            ..Exposition::default()
        }
    }

    /// After a whole line: a full chunk goes to the sink.
    fn line_written(&mut self) {
        if self.buf.len() < CHUNK {
            return;
        }
        if let Some(sink) = self.sink.as_mut() {
            let chunk = std::mem::replace(&mut self.buf, String::with_capacity(CHUNK + CHUNK / 4));
            sink(chunk);
        }
    }

    /// Starts a family. Returns `None` when a family of that name was already written
    /// (a programming error: logged once, the duplicate dropped so the scrape stays
    /// parseable).
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) -> Option<Family<'_>> {
        debug_assert!(valid_name(name), "bad metric name {name}");
        if !self.seen.insert(name.to_string()) {
            tracing::error!(metric = name, "Metric family written twice; dropped");
            return None;
        }
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.buf, "# HELP {name} {help}");
        let _ = writeln!(self.buf, "# TYPE {name} {}", kind.as_str());
        self.line_written();
        Some(Family {
            out: self,
            name: name.to_string(),
        })
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, help: &str, kind: Kind, value: f64) {
        if let Some(mut f) = self.family(name, help, kind) {
            f.sample(&[], value);
        }
    }

    /// The text written (empty when streaming: the rest went to the sink).
    pub fn finish(mut self) -> String {
        match self.sink.as_mut() {
            Some(sink) => {
                if !self.buf.is_empty() {
                    sink(std::mem::take(&mut self.buf));
                }
                String::new()
            }
            None => self.buf,
        }
    }
}

/// The samples of one family.
pub struct Family<'a> {
    out: &'a mut Exposition,
    name: String,
}

impl Family<'_> {
    /// One sample of a counter or gauge.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        write_sample(&mut self.out.buf, &self.name, "", labels, None, value);
        self.out.line_written();
    }

    /// One histogram series: `counts[i]` observations fell in bucket `i` (not
    /// cumulative; the last count is the +Inf overflow), `bounds` are the upper bounds
    /// of all but the last bucket.
    pub fn histogram(&mut self, labels: &[(&str, &str)], bounds: &[f64], counts: &[u64], sum: f64) {
        let mut cumulative = 0u64;
        for (i, c) in counts.iter().enumerate() {
            cumulative += c;
            let le = match bounds.get(i) {
                Some(b) => format_value(*b),
                None => "+Inf".to_string(),
            };
            write_sample(
                &mut self.out.buf,
                &self.name,
                "_bucket",
                labels,
                Some(&le),
                cumulative as f64,
            );
        }
        if counts.len() == bounds.len() {
            // No overflow bucket given: +Inf equals the total.
            write_sample(
                &mut self.out.buf,
                &self.name,
                "_bucket",
                labels,
                Some("+Inf"),
                cumulative as f64,
            );
        }
        write_sample(&mut self.out.buf, &self.name, "_sum", labels, None, sum);
        write_sample(
            &mut self.out.buf,
            &self.name,
            "_count",
            labels,
            None,
            cumulative as f64,
        );
        self.out.line_written();
    }
}

fn write_sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        let all = labels.iter().copied().chain(le.map(|l| ("le", l)));
        for (k, v) in all {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(k);
            out.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    write_value(out, value);
    out.push('\n');
}

/// [`format_value`], appended to `out` (a sample's value, without a `String` of
/// its own).
fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Prometheus float syntax: integers without a fraction, `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    let mut s = String::new();
    write_value(&mut s, v);
    s
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Everything `/metrics` shows besides the outbox (which is read asynchronously by
/// the HTTP handler). Cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    /// Registration order is scrape order.
    collectors: Vec<Arc<dyn Collector>>,
    /// Labelled families by name, so a second registration returns the first.
    vecs: BTreeMap<String, Arc<dyn std::any::Any + Send + Sync>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Adds a collector; it is asked for its families at every scrape.
    pub fn register(&self, c: Arc<dyn Collector>) {
        if let Ok(mut r) = self.inner.lock() {
            r.collectors.push(c);
        }
    }

    /// A labelled counter family (registered on first use).
    pub fn counter(&self, name: &str, help: &str, labels: &[&str]) -> Arc<LabeledFamily> {
        self.labeled(name, help, labels, Kind::Counter)
    }

    /// A labelled gauge family (registered on first use).
    pub fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> Arc<LabeledFamily> {
        self.labeled(name, help, labels, Kind::Gauge)
    }

    fn labeled(&self, name: &str, help: &str, labels: &[&str], kind: Kind) -> Arc<LabeledFamily> {
        let fresh = || {
            Arc::new(LabeledFamily {
                name: name.to_string(),
                help: help.to_string(),
                kind,
                labels: labels.iter().map(|s| s.to_string()).collect(),
                series: Mutex::new(BTreeMap::new()),
            })
        };
        let Ok(mut r) = self.inner.lock() else {
            return fresh();
        };
        if let Some(existing) = r.vecs.get(name) {
            if let Ok(f) = existing.clone().downcast::<LabeledFamily>() {
                return f;
            }
        }
        let f = fresh();
        r.vecs.insert(name.to_string(), f.clone());
        r.collectors.push(f.clone());
        f
    }

    /// Writes every registered family.
    pub fn collect_into(&self, out: &mut Exposition) {
        let collectors = match self.inner.lock() {
            Ok(r) => r.collectors.clone(),
            Err(_) => return,
        };
        for c in collectors {
            c.collect(out);
        }
    }
}

/// A counter or gauge family with labels; `with` hands out per-series handles.
pub struct LabeledFamily {
    name: String,
    help: String,
    kind: Kind,
    labels: Vec<String>,
    /// Label values -> value (an f64 stored as bits, so gauges can go down).
    series: Mutex<BTreeMap<Vec<String>, Arc<AtomicU64>>>,
}

impl LabeledFamily {
    /// The series for these label values (one per label name, in order).
    pub fn with(&self, values: &[&str]) -> Series {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        let key: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        let cell = match self.series.lock() {
            Ok(mut m) => m
                .entry(key)
                .or_insert_with(|| Arc::new(AtomicU64::new(0f64.to_bits())))
                .clone(),
            Err(_) => Arc::new(AtomicU64::new(0f64.to_bits())),
        };
        Series(cell)
    }
}

impl Collector for LabeledFamily {
    fn collect(&self, out: &mut Exposition) {
        let Ok(series) = self.series.lock() else {
            return;
        };
        let Some(mut f) = out.family(&self.name, &self.help, self.kind) else {
            return;
        };
        for (values, cell) in series.iter() {
            let labels: Vec<(&str, &str)> = self
                .labels
                .iter()
                .map(String::as_str)
                .zip(values.iter().map(String::as_str))
                .collect();
            f.sample(&labels, f64::from_bits(cell.load(Relaxed)));
        }
    }
}

/// One series of a [`LabeledFamily`]: cheap to clone, lock-free to update.
#[derive(Clone, Debug)]
pub struct Series(Arc<AtomicU64>);

impl Series {
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds to a counter (or a gauge).
    pub fn add(&self, n: u64) {
        let _ = self.0.fetch_update(Relaxed, Relaxed, |b| {
            Some((f64::from_bits(b) + n as f64).to_bits())
        });
    }

    /// Sets a gauge.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }
}

/// A histogram with fixed bounds (seconds), updated lock-free.
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound plus the +Inf overflow.
    counts: Vec<AtomicU64>,
    /// Sum of observations in nanoseconds (integer, so it can be an atomic add).
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new(&crate::ops::PROCESSING_BUCKETS_S)
    }
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, secs: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add((secs * 1e9) as u64, Relaxed);
    }

    /// Writes this histogram as one series of `family`.
    pub fn write(&self, family: &mut Family<'_>, labels: &[(&str, &str)]) {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        family.histogram(labels, self.bounds, &counts, sum);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// Resident set size of this process in bytes, from `/proc/self/status` (`VmRSS`).
pub fn process_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Families of every kind, large enough for several chunks.
    fn write_some(e: &mut Exposition) {
        e.single("up", "Up.", Kind::Gauge, 1.0);
        if let Some(mut f) = e.family("edgegw_x", "Per channel.", Kind::Gauge) {
            for i in 0..20_000 {
                let id = format!("dev{i}/ch\"{i}");
                f.sample(&[("sensor_id", &id)], i as f64 * 0.5);
            }
        }
        if let Some(mut f) = e.family("x_seconds", "Latency.", Kind::Histogram) {
            for i in 0..500 {
                f.histogram(
                    &[("device", &format!("d{i}"))],
                    &[0.1, 1.0],
                    &[2, 3, 1],
                    4.5,
                );
            }
        }
        e.single("edgegw_nan", "Not a number.", Kind::Gauge, f64::NAN);
    }

    #[test]
    fn a_streamed_scrape_is_the_whole_text_in_chunks_of_whole_lines() {
        let mut whole = Exposition::new();
        write_some(&mut whole);
        let whole = whole.finish();
        assert!(whole.len() > 10 * CHUNK, "{} bytes", whole.len());

        let chunks = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = chunks.clone();
        let mut streamed = Exposition::streaming(move |c| sink.lock().unwrap().push(c));
        write_some(&mut streamed);
        assert!(
            chunks.lock().unwrap().len() >= 10,
            "chunks are handed over while the scrape is written"
        );
        assert_eq!(streamed.finish(), "");
        let chunks = chunks.lock().unwrap();
        assert_eq!(chunks.concat(), whole);
        let last = chunks.len() - 1;
        for (i, c) in chunks.iter().enumerate() {
            assert!(c.ends_with('\n'), "chunk {i} ends inside a line");
            // A chunk is cut after the line (or histogram series) that filled it.
            assert!(c.len() < CHUNK + 1024, "chunk {i}: {} bytes", c.len());
            if i < last {
                assert!(c.len() >= CHUNK, "chunk {i}: {} bytes", c.len());
            }
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_inf_equals_count() {
        let mut e = Exposition::new();
        e.family("x_seconds", "Latency.", Kind::Histogram)
            .unwrap()
            .histogram(&[("device", "p\"1")], &[0.1, 1.0], &[2, 3, 1], 4.5);
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP x_seconds Latency.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{device=\"p\\\"1\",le=\"0.1\"} 2\n\
             x_seconds_bucket{device=\"p\\\"1\",le=\"1\"} 5\n\
             x_seconds_bucket{device=\"p\\\"1\",le=\"+Inf\"} 6\n\
             x_seconds_sum{device=\"p\\\"1\"} 4.5\n\
             x_seconds_count{device=\"p\\\"1\"} 6\n"
        );
    }

    #[test]
    fn a_family_registered_twice_is_the_same_and_written_once() {
        let m = Metrics::new();
        let a = m.counter("edgegw_upstream_sent_total", "Sent.", &["upstream"]);
        a.with(&["redis"]).add(3);
        let b = m.counter("edgegw_upstream_sent_total", "Sent.", &["upstream"]);
        b.with(&["redis"]).inc();
        let mut e = Exposition::new();
        m.collect_into(&mut e);
        let text = e.finish();
        assert_eq!(text.matches("# TYPE").count(), 1, "{text}");
        assert!(text.contains("edgegw_upstream_sent_total{upstream=\"redis\"} 4\n"));
    }

    #[test]
    fn values_use_prometheus_float_syntax() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert!(valid_name("edgegw_device_polls_total"));
        assert!(!valid_name("1x"));
        assert!(!valid_name("a-b"));
    }

    #[test]
    fn rss_is_read() {
        assert!(process_rss_bytes().unwrap() > 1024 * 1024);
    }
}
