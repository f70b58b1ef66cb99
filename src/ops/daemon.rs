//! The operations side of a running gateway ([`Ops`]): systemd notify, the watchdog
//! ticks, reload on SIGHUP (re-read and check the config, apply it with
//! [`Gateway::reload`], count and report the outcome), the reload and watchdog metric
//! series, and the status listener ([`bind_status_listener`], then served until
//! stopped). `app::run` drives it from its signal loop.
//!
//! The data path knows nothing of this: it only reads `Live` and calls
//! `Gateway::reload`.

use crate::app::Gateway;
use crate::config::GatewayConfig;
use crate::ops::metrics::Metrics;
use crate::ops::notify::Notifier;
use crate::ops::reload::GroupKey;
use crate::ops::watchdog::{self, Verdict, Watchdog};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The operations side of a running gateway.
pub(crate) struct Ops {
    pub(crate) notifier: Notifier,
    /// `WatchdogSec=` as systemd passed it, when it is meant for us.
    pub(crate) watchdog: Option<Duration>,
    metrics: Metrics,
    /// Reload and watchdog series (defined with every other family in `collect`).
    series: crate::ops::collect::DaemonSeries,
    /// The probe loop: stops with the sources (the gateway's root token), since it
    /// holds a source sender that would keep the pipeline open.
    probes: JoinHandle<()>,
    /// The status listener: stops when the pipeline has drained, so a supervisor
    /// sees the drain.
    listener: Option<JoinHandle<()>>,
}

impl Ops {
    pub(crate) async fn start(
        config: &GatewayConfig,
        gateway: &Gateway,
        listener: Option<(tokio::net::TcpListener, Option<Arc<str>>)>,
    ) -> anyhow::Result<Ops> {
        let notifier = Notifier::from_env().unwrap_or_else(|e| {
            tracing::warn!("{e}; not notifying systemd");
            Notifier::disabled()
        });
        let watchdog = crate::ops::notify::watchdog_interval();
        let metrics = Metrics::new();
        metrics.register(Arc::new(crate::ops::collect::LiveCollector(gateway.live())));
        let series = crate::ops::collect::DaemonSeries::register(&metrics);
        let tasks = gateway.tasks();
        let tx = gateway
            .source_sender()
            .context("the gateway has no source channel")?;
        let probes = tasks.spawn(watchdog::run_probes(
            tx,
            gateway.live(),
            watchdog::probe_period(watchdog),
            tasks.token().child_token(),
        ));
        let _ = config;
        let listener = if let Some((l, token)) = listener {
            tracing::info!(listen = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                auth = token.is_some(), "Status listener: / (status page) /healthz /readyz /metrics");
            let status = crate::ops::http::Status {
                live: gateway.live(),
                metrics: metrics.clone(),
                outbox: gateway.outbox().clone(),
                token,
                event_streams: Default::default(),
                sign_in: Default::default(),
                cancel: tasks.drained().clone(),
            };
            Some(tasks.spawn(crate::ops::http::serve(l, status, tasks.drained().clone())))
        } else {
            None
        };
        Ok(Ops {
            notifier,
            watchdog,
            series,
            metrics,
            probes,
            listener,
        })
    }

    /// SIGHUP: re-read config and profiles; apply a valid one, keep the running one
    /// otherwise.
    pub(crate) async fn reload(&self, path: &std::path::Path, gateway: &mut Gateway) {
        self.notifier.reloading();
        self.series
            .reload_last_time
            .set(crate::record::now_us() as f64 / 1e6);
        // The same rule as at start (`config::load`, `check --startup`): an error in
        // the config file refuses the reload; a bad profile leaves out its devices.
        let loaded = match crate::config::load(path) {
            Ok(l) => l,
            Err(diags) => {
                self.invalid(path, &diags);
                return;
            }
        };
        for d in &loaded.diags {
            if d.is_error() {
                tracing::error!("{d}");
            } else {
                tracing::warn!("{d}");
            }
        }
        let report = gateway.reload(&loaded).await;
        let p = &report.plan;
        let names = |keys: &[GroupKey]| {
            keys.iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        tracing::info!(
            stopped = %names(&p.stop),
            started = %names(&p.start),
            unchanged = p.unchanged.len(),
            "Reloaded {}",
            path.display()
        );
        if !report.restart_needed.is_empty() {
            tracing::warn!(
                sections = %report.restart_needed.join(", "),
                "These sections changed and apply only after a restart (systemctl restart edgegw)"
            );
        }
        self.series.reload_ok.inc();
        self.series.reload_last_success.set(1.0);
        self.series
            .reload_restart_needed
            .set(f64::from(u8::from(!report.restart_needed.is_empty())));
        self.series
            .source_restarts
            .add((p.stop.len() + p.start.len()) as u64);
        self.notifier.ready(&format!(
            "Reloaded: {} sources restarted or started, {} unchanged",
            p.start.len(),
            p.unchanged.len()
        ));
    }

    fn invalid(&self, path: &std::path::Path, diags: &[crate::diag::Diagnostic]) {
        let errors = diags.iter().filter(|d| d.is_error()).count();
        for d in diags {
            if d.is_error() {
                tracing::error!("{d}");
            } else {
                tracing::warn!("{d}");
            }
        }
        tracing::error!(
            problems = errors,
            "Reload refused: {} has errors; still running on the previous config",
            path.display()
        );
        self.series.reload_invalid.inc();
        self.series.reload_last_success.set(0.0);
        self.notifier.ready(&format!(
            "Reload refused ({errors} problems in {}); running on the previous config",
            path.display()
        ));
    }

    /// One watchdog tick (see `ops::watchdog` for the rules).
    pub(crate) async fn watchdog_tick(&self, dog: &mut Watchdog, gateway: &Gateway) {
        match dog.check(&gateway.live()) {
            Verdict::Progress | Verdict::Busy => {
                self.notifier.watchdog();
                self.series.pings_sent.inc();
            }
            Verdict::Stalled { since } => {
                let wait = self
                    .watchdog
                    .map(|w| w / 4)
                    .unwrap_or(Duration::from_secs(5));
                let full = match tokio::time::timeout(wait, gateway.outbox().stats()).await {
                    Ok(Ok(s)) => watchdog::outbox_full(&s),
                    _ => false,
                };
                if full {
                    self.notifier.watchdog();
                    self.series.pings_sent.inc();
                    self.notifier
                        .status("Outbox full: holding data and retrying; sources are pushed back");
                } else {
                    self.series.pings_withheld.inc();
                    tracing::error!(
                        stalled_secs = since.as_secs_f64(),
                        "The pipeline made no progress; withholding the watchdog ping so systemd restarts the gateway"
                    );
                    self.notifier.status(&format!(
                        "Pipeline wedged for {} s: watchdog ping withheld",
                        since.as_secs()
                    ));
                }
            }
        }
    }

    /// Waits for the probe loop and the listener, which stop under the gateway's
    /// root (call after `Gateway::shutdown`).
    pub(crate) async fn stopped(self) {
        let _ = self.probes.await;
        if let Some(l) = self.listener {
            let _ = l.await;
        }
        drop(self.metrics);
    }
}

/// Binds the status listener and resolves its token (None when `[http]` is off).
pub(crate) async fn bind_status_listener(
    http: &crate::config::HttpConfig,
) -> anyhow::Result<Option<(tokio::net::TcpListener, Option<Arc<str>>)>> {
    if !http.enabled {
        return Ok(None);
    }
    let l = crate::ops::http::bind(http).await.context(
        "not starting: free the port, choose another http.listen, or set http.enabled = false",
    )?;
    let token = crate::ops::http::token(http, &l).context("not starting")?;
    Ok(Some((l, token)))
}

/// Waits for SIGTERM or SIGINT (for tools that run until stopped).
pub async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `edgegw run`: start, notify systemd, serve status, reload on SIGHUP, ping the
/// watchdog while the pipeline makes progress; on SIGTERM/SIGINT shut down in order.
pub async fn run(loaded: crate::config::Loaded) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    // The status listener and its token first: a port that is taken or a token that
    // cannot be read stops the start-up here, with an error, before any source,
    // task or thread exists that would have to be stopped again.
    let listener = bind_status_listener(&loaded.config.http).await?;
    let mut gateway = Gateway::start(&loaded).await?;
    let ops = match Ops::start(&loaded.config, &gateway, listener).await {
        Ok(o) => o,
        Err(e) => {
            let _ = gateway.shutdown().await;
            return Err(e);
        }
    };
    ops.notifier.ready(&format!(
        "Reading {} devices through {} sources",
        gateway.devices.len(),
        gateway.source_groups()
    ));
    let mut dog = ops.watchdog.map(Watchdog::new);
    // Ping at half the interval, as systemd recommends.
    let mut tick = tokio::time::interval(
        ops.watchdog
            .map(|w| (w / 2).max(Duration::from_millis(50)))
            .unwrap_or(Duration::from_secs(3600)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading {}", loaded.config_path.display());
                ops.reload(&loaded.config_path, &mut gateway).await;
            }
            _ = tick.tick() => {
                if let Some(dog) = dog.as_mut() {
                    ops.watchdog_tick(dog, &gateway).await;
                }
            }
        }
    }
    ops.notifier.stopping();
    // One root: the probes stop with the sources; the status listener (/healthz,
    // /readyz false from here, /metrics) keeps serving until the pipeline has
    // drained, so a supervisor sees the drain happen.
    let report = gateway.shutdown().await;
    ops.stopped().await;
    let report = report?;
    tracing::info!(
        batches = report.batches,
        readings = report.processor.readings,
        windows = report.processor.windows,
        alerts = report.processor.alerts,
        "Stopped"
    );
    Ok(())
}
