//! The local status page: one HTML file embedded in the binary (no build step, no
//! Node toolchain; inline CSS, vanilla JS, SVG sparklines), the JSON it renders
//! (`/api/status`) and the event stream that keeps it live (`/events`, server-sent
//! events: the same JSON every [`EVENT_INTERVAL`]).
//!
//! Nothing is computed unless somebody asks: the snapshot is built per request, and
//! only an open event stream asks every few seconds. The page itself holds no state;
//! everything it shows is in the snapshot, so a test (or a technician with `curl`)
//! sees exactly what the page renders.

use super::Live;
use crate::outbox::OutboxStats;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// The page, embedded (see `page.html`; budget 200 KB, it is far below).
pub const PAGE_HTML: &str = include_str!("page.html");
/// How often an open event stream gets a fresh snapshot.
pub const EVENT_INTERVAL: Duration = Duration::from_secs(2);
/// Event streams served at once; the listener has 16 slots in all and the health
/// checker must keep some.
pub const MAX_EVENT_STREAMS: usize = 4;

/// What an error kind means, for a technician.
pub fn error_words(kind: &str) -> &'static str {
    match kind {
        "timeout" => "the device did not answer within the poll timeout",
        "connect" => "cannot connect to the device (address, cable, power?)",
        "disconnected" => "the connection to the device dropped",
        "exception" => "the device refused a request (Modbus exception: register map or unit id?)",
        "open" => "cannot open the serial port",
        "subscribe" => "the broker refused the subscription",
        "config" => "the device's configuration or profile is not usable",
        "parse" => "a payload or line could not be read as the profile describes",
        "checksum" => "a frame arrived with a bad checksum (wiring, baud rate, noise?)",
        _ => "see the daemon's log for details",
    }
}

/// Everything the page shows, as of now. `outbox` is `None` when the outbox did not
/// answer in time (the page says so).
pub fn snapshot(live: &Live, outbox: Option<&OutboxStats>, now_us: i64) -> Value {
    let (channels, open, closed) = live.board.snapshot();
    let detection = live.pipeline.channels();
    let devices: Vec<Value> = live
        .devices
        .read()
        .map(|d| {
            d.iter()
                .map(|(id, s)| {
                    let errors = s.errors.lock().map(|e| e.clone()).unwrap_or_default();
                    let last_error = s.last_error.lock().ok().and_then(|l| *l).map(
                        |(ts, kind)| json!({"ts_us": ts, "kind": kind, "text": error_words(kind)}),
                    );
                    json!({
                        "id": id,
                        "connected": s.connected.load(Relaxed),
                        "polls": s.polls.load(Relaxed),
                        "readings": s.readings.load(Relaxed),
                        "last_success_us": s.last_success_us.load(Relaxed),
                        "errors": errors,
                        "last_error": last_error,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let registry = live.registry.load();
    let models: Vec<Value> = registry
        .active()
        .into_iter()
        .map(|(t, kind, b)| {
            let m = b.manifest();
            json!({
                "sensor_type": t.as_str(),
                "kind": kind.as_str(),
                "name": m.name,
                "version": m.version,
                "reference": m.reference.as_str(),
            })
        })
        .collect();
    let outbox = outbox.map(|o| {
        json!({
            "used_bytes": o.used_bytes,
            "limit_bytes": o.limit_bytes,
            "records": o.total_records,
            "oldest_age_secs": o.oldest_age_secs,
            "refusing": o.refusing,
            "upstreams": o.upstreams.iter().filter(|u| u.configured).map(|u| json!({
                "name": u.name,
                "pending": u.pending,
                "lag_secs": u.lag_secs,
                "dead_letters": u.dead_letters,
                "delivered": u.delivered,
            })).collect::<Vec<_>>(),
        })
    });
    let sources_stopped = live.stopped_sources();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now_us": now_us,
        "ready": live.ready.load(Relaxed),
        "pipeline_age_secs": live.progress.since_last_ok().as_secs_f64(),
        "sources_stopped": sources_stopped,
        "devices": devices,
        "channels": channels,
        "detection": detection.as_slice(),
        "alerts": {"open": open, "closed": closed},
        "outbox": outbox,
        "models": models,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_small_and_self_contained() {
        assert!(PAGE_HTML.len() < 200 * 1024, "{} bytes", PAGE_HTML.len());
        // Nothing fetched from elsewhere: no external scripts, styles or fonts.
        for needle in ["http://", "https://", "src=\"//"] {
            assert!(!PAGE_HTML.contains(needle), "page refers to {needle}");
        }
        assert!(PAGE_HTML.contains("/events") && PAGE_HTML.contains("/api/status"));
    }

    #[test]
    fn a_snapshot_shows_devices_channels_and_alerts() {
        let live = Live::new(crate::inference::shared(
            crate::inference::ModelRegistry::with_defaults().expect("defaults"),
        ));
        let stats = std::sync::Arc::new(crate::sources::DeviceStats::default());
        stats.error("timeout");
        live.devices.write().unwrap().insert("press".into(), stats);
        live.board.watch();
        live.board.observe(
            &[],
            &[crate::record::Record::Reading(
                crate::record::ReadingRecord {
                    sensor_id: "press.t".into(),
                    device: "press".into(),
                    channel: "t".into(),
                    sensor_type: crate::record::SensorType::Temperature,
                    unit: "°C".into(),
                    ts_us: 5,
                    value: 41.5,
                    quality: 1.0,
                    flags: vec![],
                    detection: None,
                },
            )],
            |_| None,
        );
        let s = snapshot(&live, None, 10);
        assert_eq!(s["channels"][0]["value"], 41.5);
        assert_eq!(s["channels"][0]["unit"], "°C");
        assert_eq!(s["devices"][0]["last_error"]["kind"], "timeout");
        assert!(s["devices"][0]["last_error"]["text"]
            .as_str()
            .unwrap()
            .contains("did not answer"));
        assert!(s["outbox"].is_null());
        assert!(!s["models"].as_array().unwrap().is_empty());
    }
}
