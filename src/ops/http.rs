//! The status and metrics listener: `/healthz`, `/readyz` and `/metrics` over plain
//! HTTP/1.1, hand-rolled on a tokio `TcpListener`.
//!
//! Why not hyper/axum: three GET routes, scraped every few seconds by one Prometheus
//! and a health checker, do not need them; this costs no dependency and ~30 kB of
//! binary instead of several hundred. Each connection serves one request and closes
//! (`Connection: close`); the request head is capped at 8 KiB and 2 s, connections at
//! 16 at a time, so a misbehaving client cannot hold the gateway's memory; when the
//! slots are full, the slowest head reader makes room for a new connection, so slow
//! clients cannot lock out the health checker.
//!
//! Owns: parsing the request line and the `Authorization` header, the bearer token
//! check (constant-time), rendering. It must not block the data path: the outbox
//! stats it shows come through `OutboxHandle` (blocking pool), everything else is an
//! atomic read.

use super::metrics::{Exposition, Metrics};
use super::{collect, Live};
use crate::outbox::OutboxHandle;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const MAX_HEAD_BYTES: usize = 8 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_CONNECTIONS: usize = 16;
/// `/healthz` fails when the pipeline has not passed a liveness probe for this long
/// (probes run every few seconds; see `app.rs`).
pub const HEALTH_STALE_AFTER: Duration = Duration::from_secs(60);
/// How long `/metrics` and `/readyz` wait for the outbox.
const OUTBOX_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {listen} (http.listen)")]
    Bind {
        listen: String,
        source: std::io::Error,
    },
    #[error("cannot read the status listener's token (http.token) from {from}")]
    Token {
        from: String,
        source: crate::config::SecretError,
    },
}

/// What the handlers read.
#[derive(Clone)]
pub struct Status {
    pub live: Arc<Live>,
    pub metrics: Metrics,
    pub outbox: OutboxHandle,
    /// Bearer token required on every route when set.
    pub token: Option<Arc<str>>,
}

/// Binds the listener (so a bad address fails the start, not a background task).
pub async fn bind(config: &crate::config::HttpConfig) -> Result<TcpListener, HttpError> {
    TcpListener::bind(config.listen.as_str())
        .await
        .map_err(|source| HttpError::Bind {
            listen: config.listen.clone(),
            source,
        })
}

/// Resolves the token secret, warning when the listener is reachable beyond
/// loopback without one.
pub fn token(
    config: &crate::config::HttpConfig,
    listener: &TcpListener,
) -> Result<Option<Arc<str>>, HttpError> {
    let token = match &config.token {
        Some(secret) => Some(Arc::from(secret.resolve().map_err(|source| {
            HttpError::Token {
                from: secret.describe(),
                source,
            }
        })?)),
        None => None,
    };
    if let Ok(addr) = listener.local_addr() {
        if !addr.ip().is_loopback() && token.is_none() {
            tracing::warn!(listen = %addr,
                "The status listener is reachable beyond this host without a token; set http.token");
        }
    }
    Ok(token)
}

/// Serves until `cancel`.
///
/// Slow clients cannot lock out the health checker: when every slot is taken, the
/// connection that has been reading its request head the longest is dropped to make
/// room for the new one (a real client sends its head at once; one that trickles it
/// a byte a second is the one to go), and a head must arrive within
/// [`HEAD_TIMEOUT`].
pub async fn serve(listener: TcpListener, status: Status, cancel: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    // Connections still reading their head, oldest first.
    let reading: Arc<std::sync::Mutex<std::collections::VecDeque<(u64, CancellationToken)>>> =
        Arc::default();
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("Status listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Full: drop the slowest head reader, then wait briefly for its slot.
                let oldest = reading.lock().ok().and_then(|mut r| r.pop_front());
                let Some((_, victim)) = oldest else {
                    // Every slot is serving a complete request: close this one.
                    continue;
                };
                victim.cancel();
                match tokio::time::timeout(
                    Duration::from_millis(500),
                    slots.clone().acquire_owned(),
                )
                .await
                {
                    Ok(Ok(p)) => p,
                    _ => continue,
                }
            }
        };
        let id = next_id;
        next_id += 1;
        let head_cancel = CancellationToken::new();
        if let Ok(mut r) = reading.lock() {
            r.push_back((id, head_cancel.clone()));
        }
        let status = status.clone();
        let reading = reading.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let res = handle(stream, &status, &head_cancel, || {
                if let Ok(mut r) = reading.lock() {
                    r.retain(|(i, _)| *i != id);
                }
            })
            .await;
            if let Ok(mut r) = reading.lock() {
                r.retain(|(i, _)| *i != id);
            }
            if let Err(e) = res {
                tracing::debug!("Status listener: {e}");
            }
        });
    }
}

struct Response {
    code: u16,
    content_type: &'static str,
    body: String,
    extra: &'static str,
}

impl Response {
    fn text(code: u16, body: impl Into<String>) -> Response {
        Response {
            code,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            extra: "",
        }
    }
}

async fn handle(
    mut stream: TcpStream,
    status: &Status,
    head_cancel: &CancellationToken,
    head_done: impl FnOnce(),
) -> std::io::Result<()> {
    let head = tokio::select! {
        _ = head_cancel.cancelled() => return Ok(()),
        h = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)) => h,
    };
    head_done();
    let head = match head {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => {
            return write(
                &mut stream,
                Response::text(431, "request head too large\n"),
                false,
            )
            .await
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    let (method, path, auth) = parse_head(&head);
    let head_only = method == "HEAD";
    let resp = if method != "GET" && method != "HEAD" {
        Response::text(405, "only GET and HEAD\n")
    } else if !authorized(status.token.as_deref(), auth.as_deref()) {
        Response {
            extra: "WWW-Authenticate: Bearer realm=\"edgegw\"\r\n",
            ..Response::text(401, "bearer token required\n")
        }
    } else {
        route(path.split('?').next().unwrap_or(""), status).await
    };
    // A client that never reads its answer does not hold the slot either.
    match tokio::time::timeout(HEAD_TIMEOUT * 2, write(&mut stream, resp, head_only)).await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}

/// Reads up to the blank line; `None` when the head exceeds the cap.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Some(buf));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(buf));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Ok(None);
        }
    }
}

/// Method, path and the `Authorization` header value.
fn parse_head(head: &[u8]) -> (String, String, Option<String>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let auth = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string());
    (method, path, auth)
}

fn authorized(token: Option<&str>, header: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some(given) = header.and_then(|h| {
        let (scheme, value) = h.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| value.trim())
    }) else {
        return false;
    };
    // Constant time in the token's contents (the length is not secret).
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn route(path: &str, s: &Status) -> Response {
    match path {
        "/healthz" => {
            let age = s.live.progress.since_last_ok();
            if age < HEALTH_STALE_AFTER {
                Response::text(200, "ok\n")
            } else if outbox_full(s).await {
                // Held up by a full outbox, not wedged: a restart would not help (the
                // watchdog judges the same way). /readyz says "not ready".
                Response::text(
                    200,
                    format!(
                        "ok: the outbox is full and holds the data; the pipeline waits for room ({} s)\n",
                        age.as_secs()
                    ),
                )
            } else {
                Response::text(
                    503,
                    format!(
                        "the pipeline has made no progress for {} s\n",
                        age.as_secs()
                    ),
                )
            }
        }
        "/readyz" => readyz(s).await,
        "/metrics" => {
            let mut e = Exposition::new();
            s.metrics.collect_into(&mut e);
            match tokio::time::timeout(OUTBOX_TIMEOUT, s.outbox.stats()).await {
                Ok(Ok(stats)) => collect::outbox(&stats, &mut e),
                Ok(Err(err)) => tracing::warn!("Metrics: cannot read outbox stats: {err}"),
                Err(_) => tracing::warn!("Metrics: outbox stats timed out"),
            }
            Response {
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                ..Response::text(200, e.finish())
            }
        }
        "/" => Response::text(200, "edgegw: /healthz /readyz /metrics\n"),
        _ => Response::text(404, "not found; try /healthz, /readyz or /metrics\n"),
    }
}

/// True when the outbox is at its bound (as the watchdog judges it).
async fn outbox_full(s: &Status) -> bool {
    matches!(
        tokio::time::timeout(OUTBOX_TIMEOUT, s.outbox.stats()).await,
        Ok(Ok(stats)) if super::watchdog::outbox_full(&stats)
    )
}

/// Ready: started (and not stopping), every source task running, the outbox answering
/// and not full.
async fn readyz(s: &Status) -> Response {
    let mut problems = Vec::new();
    if !s.live.ready.load(Relaxed) {
        problems.push("starting or stopping".to_string());
    }
    for src in s.live.stopped_sources() {
        problems.push(format!("source {src} has stopped"));
    }
    match tokio::time::timeout(OUTBOX_TIMEOUT, s.outbox.stats()).await {
        Ok(Ok(stats)) => {
            if super::watchdog::outbox_full(&stats) {
                problems.push(format!(
                    "outbox full: {} of {} bytes in use (max_size_mb or the free disk space)",
                    stats.used_bytes, stats.limit_bytes
                ));
            }
        }
        Ok(Err(e)) => problems.push(format!("outbox: {e}")),
        Err(_) => problems.push("outbox: no answer within 5 s".into()),
    }
    if problems.is_empty() {
        Response::text(200, "ready\n")
    } else {
        Response::text(503, problems.join("\n") + "\n")
    }
}

async fn write(stream: &mut TcpStream, r: Response, head_only: bool) -> std::io::Result<()> {
    let reason = match r.code {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n{}\r\n",
        r.code,
        r.content_type,
        r.body.len(),
        r.extra
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(r.body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_checked() {
        assert!(authorized(None, None));
        assert!(authorized(Some("s3cret"), Some("Bearer s3cret")));
        assert!(authorized(Some("s3cret"), Some("bearer  s3cret")));
        assert!(!authorized(Some("s3cret"), Some("Bearer s3creT")));
        assert!(!authorized(Some("s3cret"), Some("Basic s3cret")));
        assert!(!authorized(Some("s3cret"), None));
    }

    #[tokio::test]
    async fn a_full_outbox_is_alive_but_not_ready() {
        use crate::outbox::{FullPolicy, Outbox, OutboxHandle, OutboxSettings};
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = OutboxSettings {
            max_size_mb: 1,
            full_policy: FullPolicy::Block,
            ..OutboxSettings::default()
        };
        let mut o = Outbox::open(&dir.path().join("o.db"), &settings, "gw", &["a"]).expect("open");
        let mut i = 0;
        while o
            .append(
                &(i..i + 500)
                    .map(crate::outbox::encode::tests::reading)
                    .collect::<Vec<_>>(),
            )
            .is_ok()
        {
            i += 500;
        }
        let live = Arc::new(Live::new(crate::inference::shared(
            crate::inference::ModelRegistry::empty(),
        )));
        live.ready.store(true, Relaxed);
        let s = Status {
            live: live.clone(),
            metrics: Metrics::new(),
            outbox: OutboxHandle::new(o),
            token: None,
        };
        // The pipeline waits for room: no probe for more than a minute.
        live.progress
            .age_by(HEALTH_STALE_AFTER + Duration::from_secs(1));
        let h = route("/healthz", &s).await;
        assert_eq!(h.code, 200, "{}", h.body);
        assert!(h.body.contains("outbox is full"), "{}", h.body);
        let r = route("/readyz", &s).await;
        assert_eq!(r.code, 503, "{}", r.body);
        assert!(r.body.contains("outbox full"), "{}", r.body);
    }

    #[test]
    fn heads_are_parsed() {
        let (m, p, a) =
            parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nauthorization: Bearer t\r\n\r\n");
        assert_eq!(
            (m.as_str(), p.as_str(), a.as_deref()),
            ("GET", "/metrics?x=1", Some("Bearer t"))
        );
    }
}
