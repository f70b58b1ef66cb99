//! The upstreams there are, in one list: what each needs from the config and how
//! its forwarder is built. The gateway calls [`enabled`] once; the outbox's cursors
//! and the forwarders ([`super::spawn_forwarders`]) both come from it, so the two can never
//! disagree (a cursor without a forwarder would fill the outbox; a forwarder
//! without a cursor would fail at its first peek).
//!
//! Adding an upstream: a folder with its `Sink` and its config section (`config.rs`, with
//! the shared `[upstreams.<name>.delivery]` knobs through `.delivery()`), then one
//! `plan_*` function and one line in [`UPSTREAMS`] (docs/ARCHITECTURE.md, "Adding a
//! source or an upstream").

use super::{http, mqtt, redis, run_forwarder, timescale, ForwarderReport, UpstreamMetrics};
use crate::config::GatewayConfig;
use crate::outbox::OutboxHandle;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A forwarder's task, not yet spawned (the gateway spawns it under its
/// [`crate::shutdown::Shutdown`]).
pub type Forwarder = Pin<Box<dyn Future<Output = ForwarderReport> + Send>>;

/// Builds the forwarder task of one upstream.
pub type Spawn = Box<
    dyn FnOnce(OutboxHandle, Arc<Notify>, Arc<UpstreamMetrics>, CancellationToken) -> Forwarder
        + Send,
>;

/// One enabled upstream, ready to start.
pub struct Planned {
    /// The outbox cursor name and the `upstream` label on /metrics.
    pub name: &'static str,
    pub spawn: Spawn,
}

/// Every upstream kind, in the order their forwarders start. One line per kind.
const UPSTREAMS: &[fn(&GatewayConfig) -> Option<Planned>] =
    &[plan_timescale, plan_redis, plan_http, plan_mqtt];

/// The enabled upstreams of `config`.
pub fn enabled(config: &GatewayConfig) -> Vec<Planned> {
    let mut out: Vec<Planned> = UPSTREAMS.iter().filter_map(|plan| plan(config)).collect();
    out.extend(plan_notify(config));
    out
}

/// The local notification sinks that a route uses: upstreams of their own that take
/// alerts only (`crate::notify`), cursor `notify:<sink>`.
fn plan_notify(config: &GatewayConfig) -> Vec<Planned> {
    let mut out = Vec::new();
    for (name, cfg) in crate::notify::sinks(config) {
        let delivery = cfg.delivery();
        let mut sink =
            match crate::notify::build(config, &name, &cfg, Arc::new(UpstreamMetrics::default())) {
                Ok(s) => s,
                Err(e) => {
                    // `check` refuses such a config; no cursor for a sink that cannot run.
                    tracing::error!(sink = %name, error = %e, "Notification sink not started");
                    continue;
                }
            };
        let name = super::Sink::name(&sink);
        out.push(Planned {
            name,
            spawn: Box::new(move |outbox, notify, metrics, cancel| {
                sink.set_metrics(metrics.clone());
                Box::pin(run_forwarder(
                    sink, outbox, delivery, notify, metrics, cancel,
                ))
            }),
        });
    }
    out
}

/// A forwarder around `sink` with its delivery knobs.
fn planned<S: super::Sink + 'static>(
    name: &'static str,
    sink: S,
    delivery: crate::config::Delivery,
) -> Planned {
    Planned {
        name,
        spawn: Box::new(move |outbox, notify, metrics, cancel| {
            Box::pin(run_forwarder(
                sink, outbox, delivery, notify, metrics, cancel,
            ))
        }),
    }
}

fn plan_timescale(config: &GatewayConfig) -> Option<Planned> {
    let cfg = config.upstreams.timescale.as_ref().filter(|c| c.enabled)?;
    // Device locations go into the `sensors` rows (read at start: a reload reports
    // a change of location as restart-only, see `ops::reload`).
    let locations = config
        .devices
        .iter()
        .map(|d| (d.id.clone(), d.location.clone()))
        .collect();
    let sink = timescale::TimescaleSink::new(cfg.clone(), &config.gateway.id, locations);
    Some(planned("timescale", sink, cfg.delivery()))
}

fn plan_redis(config: &GatewayConfig) -> Option<Planned> {
    let cfg = config.upstreams.redis.as_ref().filter(|c| c.enabled)?;
    let sink = redis::RedisSink::new(cfg.clone(), &config.gateway.id);
    Some(planned("redis", sink, cfg.delivery()))
}

fn plan_http(config: &GatewayConfig) -> Option<Planned> {
    let cfg = config.upstreams.http.as_ref().filter(|c| c.enabled)?;
    let sink = http::HttpSink::new(cfg.clone(), &config.gateway.id);
    Some(planned("http", sink, cfg.delivery()))
}

fn plan_mqtt(config: &GatewayConfig) -> Option<Planned> {
    let cfg = config.upstreams.mqtt.as_ref().filter(|c| c.enabled)?;
    let Some(broker) = config.mqtt_brokers.get(&cfg.broker) else {
        // `check` refuses such a config; if one gets here anyway, neither a cursor
        // nor a forwarder: nothing piles up for an upstream that cannot run.
        tracing::error!(broker = %cfg.broker,
            "The MQTT upstream names a broker missing from [mqtt_brokers]; not forwarding");
        return None;
    };
    let sink = mqtt::MqttSink::new(cfg.clone(), &cfg.broker, broker.clone(), &config.gateway.id);
    Some(planned("mqtt", sink, cfg.delivery()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(config: &GatewayConfig) -> Vec<&'static str> {
        enabled(config).iter().map(|p| p.name).collect()
    }

    #[test]
    fn cursors_and_forwarders_come_from_one_list() {
        let mut config: GatewayConfig =
            toml::from_str("[gateway]\nid = \"gw\"\n").expect("a minimal config");
        assert!(names(&config).is_empty());
        config.upstreams = toml::from_str(
            "[timescale]\nurl = \"postgres://x@db/y\"\n[redis]\nurl = \"redis://r\"\nenabled = false\n\
             [mqtt]\nbroker = \"nowhere\"\n",
        )
        .expect("upstreams");
        // redis disabled, mqtt without its broker: neither gets a cursor.
        assert_eq!(names(&config), ["timescale"]);
        config.mqtt_brokers = toml::from_str("[nowhere]\nhost = \"10.0.0.1\"\n").expect("brokers");
        assert_eq!(names(&config), ["timescale", "mqtt"]);
    }
}
