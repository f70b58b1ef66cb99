//! Tasks that come back after a panic: the source groups and the upstream
//! forwarders run under [`supervise`].
//!
//! A panic is a bug, in the gateway or in a dependency on input it did not expect.
//! tokio catches it and ends the one task, and everything else runs on; before this,
//! that was all that happened. A Modbus device or an MQTT broker connection whose task
//! panicked was not read again until the daemon restarted, while its
//! `edgegw_source_up` still said 1 (the line after `.await` that lowered it never
//! ran), and an upstream whose forwarder panicked got nothing more while the outbox
//! filled towards its size bound, where the oldest records are evicted. Neither is
//! seen by the watchdog, which watches the pipeline into the outbox.
//!
//! Now the panic is logged as an error naming the task, the task is down (its flag
//! 0) while it waits, and after `delay` it is built again from its configuration with
//! fresh connections and state. What a source had read is in the outbox or was lost
//! with the poll, as when a device drops its connection; a forwarder starts again from
//! its outbox cursor, so what it had sent but not acknowledged is sent again and the
//! upstream's idempotent keys drop the copy (docs/upstreams.md). A task that keeps
//! panicking is restarted every `delay`, each time logged; a stop (shutdown or
//! reload) ends the wait at once.
//!
//! This acts in builds that unwind: tests and debug builds. The built binaries abort
//! on a panic since 2026-12-07 (Cargo.toml, for size): there the panic is logged
//! (`cli::log_panics`) and ends the daemon, and systemd starts the whole of it again,
//! every task from its configuration and each forwarder from its outbox cursor, as
//! above. Kept so that going back to unwinding is the one line in Cargo.toml.

use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a task that panicked waits before it is started again.
pub const PANIC_RESTART_DELAY: Duration = Duration::from_secs(5);

/// A task not yet started.
pub type Task<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Who runs under [`supervise`], for the log and the flag.
pub struct Supervised {
    /// "source" or "upstream".
    pub kind: &'static str,
    /// The source group or upstream name.
    pub name: String,
    /// Raised while the task runs, lowered however it ends (also on an abort).
    pub up: Option<Arc<AtomicBool>>,
    /// Ends the wait before a restart.
    pub cancel: CancellationToken,
    pub delay: Duration,
}

/// Runs the task that `make` builds until it ends, and builds and starts it again
/// after `delay` each time it panicked. Returns its output (`None` when `make` built
/// nothing, or a stop came while it waited) and how many times it was restarted.
pub async fn supervise<T, F>(s: Supervised, mut make: F) -> (Option<T>, u32)
where
    F: FnMut() -> Option<Task<T>>,
{
    /// Lowers the flag however the task ends.
    struct Down(Option<Arc<AtomicBool>>);
    impl Drop for Down {
        fn drop(&mut self) {
            if let Some(up) = &self.0 {
                up.store(false, Relaxed);
            }
        }
    }
    let _down = Down(s.up.clone());
    let set_up = |v: bool| {
        if let Some(up) = &s.up {
            up.store(v, Relaxed);
        }
    };
    let mut restarts = 0;
    while let Some(task) = make() {
        set_up(true);
        let panic = match AssertUnwindSafe(task).catch_unwind().await {
            Ok(out) => return (Some(out), restarts),
            Err(panic) => panic,
        };
        set_up(false);
        let message = panic
            .downcast_ref::<&str>()
            .map(|m| m.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        drop(panic);
        tracing::error!(
            task = s.kind,
            name = %s.name,
            panic = %message,
            "The {} task panicked (a bug; please report it with this log): it restarts in {} s",
            s.kind,
            s.delay.as_secs_f64()
        );
        tokio::select! {
            _ = s.cancel.cancelled() => return (None, restarts),
            _ = tokio::time::sleep(s.delay) => {}
        }
        restarts += 1;
    }
    (None, restarts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn supervised(up: &Arc<AtomicBool>, cancel: &CancellationToken, delay: Duration) -> Supervised {
        Supervised {
            kind: "source",
            name: "modbus-tcp:press-1".into(),
            up: Some(up.clone()),
            cancel: cancel.clone(),
            delay,
        }
    }

    /// A task that panics on its first run is logged, built again and run again; the
    /// second run ends normally with its output. The flag was up in both runs and
    /// is down at the end.
    #[tokio::test]
    async fn a_panicked_task_is_built_again_and_its_flag_is_honest() {
        let up = Arc::new(AtomicBool::new(false));
        let starts = Arc::new(AtomicU32::new(0));
        let up_in_runs = Arc::new(AtomicU32::new(0));
        let (s, a, u) = (starts.clone(), up.clone(), up_in_runs.clone());
        let make = move || -> Option<Task<u32>> {
            let run = s.fetch_add(1, Relaxed);
            let (a, u) = (a.clone(), u.clone());
            Some(Box::pin(async move {
                if a.load(Relaxed) {
                    u.fetch_add(1, Relaxed);
                }
                tokio::task::yield_now().await;
                if run == 0 {
                    panic!("a bug on input the source did not expect");
                }
                run
            }))
        };
        let cancel = CancellationToken::new();
        let (out, restarts) =
            supervise(supervised(&up, &cancel, Duration::from_millis(10)), make).await;
        assert_eq!(out, Some(1), "the second run's output");
        assert_eq!(restarts, 1);
        assert_eq!(starts.load(Relaxed), 2, "built again after the panic");
        assert_eq!(up_in_runs.load(Relaxed), 2, "up while each run ran");
        assert!(!up.load(Relaxed), "down once the task ended");
    }

    /// While it waits to restart the task is down, and a stop (shutdown, reload)
    /// ends the wait at once instead of starting it again.
    #[tokio::test]
    async fn a_task_waiting_to_restart_is_down_and_stops_at_once() {
        let up = Arc::new(AtomicBool::new(false));
        let starts = Arc::new(AtomicU32::new(0));
        let s = starts.clone();
        let make = move || -> Option<Task<()>> {
            s.fetch_add(1, Relaxed);
            Some(Box::pin(async { panic!("always") }))
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise(
            supervised(&up, &cancel, Duration::from_secs(3600)),
            make,
        ));
        for _ in 0..2000 {
            if starts.load(Relaxed) == 1 && !up.load(Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(starts.load(Relaxed), 1);
        assert!(!up.load(Relaxed), "down while waiting to restart");
        cancel.cancel();
        let (out, restarts) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the stop ends the wait")
            .expect("the supervisor itself does not panic");
        assert_eq!((out, restarts), (None, 0));
        assert_eq!(starts.load(Relaxed), 1, "not started again after the stop");
    }

    /// Nothing to run (an incomplete source group): no output, and down.
    #[tokio::test]
    async fn nothing_to_run_is_down() {
        let up = Arc::new(AtomicBool::new(true));
        let cancel = CancellationToken::new();
        let (out, restarts) = supervise(
            supervised(&up, &cancel, Duration::from_millis(1)),
            || -> Option<Task<()>> { None },
        )
        .await;
        assert_eq!((out, restarts), (None, 0));
        assert!(!up.load(Relaxed));
    }
}
