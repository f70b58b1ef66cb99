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

/// Builds the forwarder task of one upstream, with a sink of its own: called again
/// when the forwarder panicked ([`crate::supervise`]); `None` when the sink can no
/// longer be built (logged).
pub type Spawn = Box<
    dyn FnMut(
            OutboxHandle,
            Arc<Notify>,
            Arc<UpstreamMetrics>,
            CancellationToken,
        ) -> Option<Forwarder>
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
    let sinks = crate::notify::sinks(config);
    if sinks.is_empty() {
        return out;
    }
    // Shared by the sinks, and kept to build one again after a panic.
    let ctx = Arc::new(crate::notify::Context::new(config));
    for (sink_name, cfg) in sinks {
        let delivery = cfg.delivery();
        let first =
            crate::notify::build(&ctx, &sink_name, &cfg, Arc::new(UpstreamMetrics::default()));
        let sink = match first {
            Ok(s) => s,
            Err(e) => {
                // `check` refuses such a config; no cursor for a sink that cannot run.
                tracing::error!(sink = %sink_name, error = %e, "Notification sink not started");
                continue;
            }
        };
        let name = super::Sink::name(&sink);
        let ctx = ctx.clone();
        let mut first = Some(sink);
        out.push(Planned {
            name,
            spawn: Box::new(move |outbox, notify, metrics, cancel| {
                let mut sink = match first.take() {
                    Some(s) => s,
                    None => match crate::notify::build(&ctx, &sink_name, &cfg, metrics.clone()) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!(sink = %sink_name, error = %e,
                                "Notification sink could not be built again; not forwarding");
                            return None;
                        }
                    },
                };
                sink.set_metrics(metrics.clone());
                Some(Box::pin(run_forwarder(
                    sink,
                    outbox,
                    delivery.clone(),
                    notify,
                    metrics,
                    cancel,
                )))
            }),
        });
    }
    out
}

/// A forwarder around the sink that `build` makes, with its delivery knobs.
fn planned<S: super::Sink + 'static>(
    name: &'static str,
    mut build: impl FnMut() -> S + Send + 'static,
    delivery: crate::config::Delivery,
) -> Planned {
    Planned {
        name,
        spawn: Box::new(move |outbox, notify, metrics, cancel| {
            Some(Box::pin(run_forwarder(
                build(),
                outbox,
                delivery.clone(),
                notify,
                metrics,
                cancel,
            )))
        }),
    }
}

fn plan_timescale(config: &GatewayConfig) -> Option<Planned> {
    let cfg = config.upstreams.timescale.as_ref().filter(|c| c.enabled)?;
    // Device locations go into the `sensors` rows (read at start: a reload reports
    // a change of location as restart-only, see `ops::reload`).
    let locations: std::collections::HashMap<String, String> = config
        .devices
        .iter()
        .map(|d| (d.id.clone(), d.location.clone()))
        .collect();
    let (c, gateway) = (cfg.clone(), config.gateway.id.clone());
    let build = move || timescale::TimescaleSink::new(c.clone(), &gateway, locations.clone());
    Some(planned("timescale", build, cfg.delivery()))
}

fn plan_redis(config: &GatewayConfig) -> Option<Planned> {
    let cfg = config.upstreams.redis.as_ref().filter(|c| c.enabled)?;
    let (c, gateway) = (cfg.clone(), config.gateway.id.clone());
    let build = move || redis::RedisSink::new(c.clone(), &gateway);
    Some(planned("redis", build, cfg.delivery()))
}

fn plan_http(config: &GatewayConfig) -> Option<Planned> {
    let cfg = config.upstreams.http.as_ref().filter(|c| c.enabled)?;
    let (c, gateway) = (cfg.clone(), config.gateway.id.clone());
    let build = move || http::HttpSink::new(c.clone(), &gateway);
    Some(planned("http", build, cfg.delivery()))
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
    let (c, broker, gateway) = (cfg.clone(), broker.clone(), config.gateway.id.clone());
    let build = move || mqtt::MqttSink::new(c.clone(), &c.broker, broker.clone(), &gateway);
    Some(planned("mqtt", build, cfg.delivery()))
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
