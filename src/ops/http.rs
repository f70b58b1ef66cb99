//! The status and metrics listener: `/healthz`, `/readyz` and `/metrics`, and the
//! local status page (`/`, its JSON `/api/status` and its event stream `/events`, see
//! `page.rs`) over plain HTTP/1.1, hand-rolled on a tokio `TcpListener`.
//!
//! Why not hyper/axum: a handful of GET routes, scraped every few seconds by one
//! Prometheus and a health checker and opened now and then by a technician, do not
//! need them; this costs no dependency and ~30 kB of
//! binary instead of several hundred. Each connection serves one request and closes
//! (`Connection: close`); the request head is capped at 8 KiB and 2 s, connections at
//! 16 at a time, so a misbehaving client cannot hold the gateway's memory; when the
//! slots are full, the slowest head reader makes room for a new connection, so slow
//! clients cannot lock out the health checker.
//!
//! Owns: parsing the request line and the `Authorization` and `Cookie` headers, the
//! bearer token check (constant-time), the page's login (a form that posts the token
//! and gets a session cookie derived from it: a browser cannot send a bearer header
//! when it opens a page), rendering. Event streams are the one kind of connection
//! that stays open: at most [`page::MAX_EVENT_STREAMS`] at once, ended at shutdown.
//! Sign-in attempts are not rate-limited: the token must be long and random (it is
//! compared in constant time; a guess costs a connection).
//!
//! It must not block the data path: the outbox stats it shows come through
//! `OutboxHandle` (blocking pool), the board is read under a short lock, everything
//! else is an atomic read.

use super::metrics::{Exposition, Metrics};
use super::{collect, page, Live};
use crate::outbox::OutboxHandle;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const MAX_HEAD_BYTES: usize = 8 * 1024;
/// The login form's body (`token=...`).
const MAX_BODY_BYTES: usize = 1024;
/// Name of the page's session cookie.
const SESSION_COOKIE: &str = "edgegw_session";
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
    /// Event streams open now.
    pub event_streams: Arc<AtomicUsize>,
    /// Ends open event streams (shutdown).
    pub cancel: CancellationToken,
    /// Failed token checks per client address.
    pub sign_in: Arc<SignInGuard>,
}

/// Wrong tokens a client address may present per minute; then it gets 429 without
/// its token being looked at until the minute is over. Enough for a person who
/// mistypes; a guesser gets 14,400 tries a day instead of thousands a second.
/// Per address, so a guesser does not lock out Prometheus or the health checker.
const SIGN_IN_FAILURES_PER_MINUTE: u32 = 10;
/// Addresses remembered at most (the oldest window is forgotten first).
const SIGN_IN_ADDRESSES: usize = 4096;

/// Counts failed token checks (a wrong bearer token, session cookie or sign-in
/// form) per client address, in one-minute windows.
#[derive(Debug, Default)]
pub struct SignInGuard {
    by_addr: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (Instant, u32)>>,
}

impl SignInGuard {
    /// Whether `addr` used up its failures for this minute.
    fn blocked(&self, addr: std::net::IpAddr) -> bool {
        let Ok(mut m) = self.by_addr.lock() else {
            return false;
        };
        match m.get(&addr) {
            Some((start, _)) if start.elapsed() >= Duration::from_secs(60) => {
                m.remove(&addr);
                false
            }
            Some((_, n)) => *n >= SIGN_IN_FAILURES_PER_MINUTE,
            None => false,
        }
    }

    fn failed(&self, addr: std::net::IpAddr) {
        let Ok(mut m) = self.by_addr.lock() else {
            return;
        };
        if m.len() >= SIGN_IN_ADDRESSES && !m.contains_key(&addr) {
            if let Some(oldest) = m.iter().min_by_key(|(_, (t, _))| *t).map(|(a, _)| *a) {
                m.remove(&oldest);
            }
        }
        let e = m.entry(addr).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= Duration::from_secs(60) {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
        if e.1 == SIGN_IN_FAILURES_PER_MINUTE {
            tracing::warn!(client = %addr,
                "Status listener: {SIGN_IN_FAILURES_PER_MINUTE} wrong tokens from one address in a minute; refusing its sign-ins until the minute is over");
        }
    }
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
        let (stream, peer) = match accepted {
            Ok((s, a)) => (s, a.ip()),
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
            let res = handle(stream, peer, &status, &head_cancel, || {
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
    extra: String,
}

impl Response {
    fn text(code: u16, body: impl Into<String>) -> Response {
        Response {
            code,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            extra: String::new(),
        }
    }

    fn html(code: u16, body: impl Into<String>) -> Response {
        Response {
            content_type: "text/html; charset=utf-8",
            ..Response::text(code, body)
        }
    }
}

/// A parsed request head.
#[derive(Debug, Default, PartialEq)]
struct Head {
    method: String,
    path: String,
    authorization: Option<String>,
    cookie: Option<String>,
    content_length: usize,
}

async fn handle(
    mut stream: TcpStream,
    peer: std::net::IpAddr,
    status: &Status,
    head_cancel: &CancellationToken,
    head_done: impl FnOnce(),
) -> std::io::Result<()> {
    let head = tokio::select! {
        _ = head_cancel.cancelled() => return Ok(()),
        h = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)) => h,
    };
    let (raw, mut body) = match head {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => {
            head_done();
            return write(
                &mut stream,
                Response::text(431, "request head too large\n"),
                false,
            )
            .await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    let head = parse_head(&raw);
    let path = head.path.split('?').next().unwrap_or("").to_string();
    // The login form's body, small and quick, under a deadline like the head's (a
    // body that does not come is an empty one: the sign-in fails).
    let login_post = head.method == "POST" && path == "/login";
    let action_post =
        head.method == "POST" && (path == "/api/ack" || path == "/api/baseline-reset");
    if (login_post || action_post) && head.content_length > body.len() {
        if head.content_length > MAX_BODY_BYTES {
            head_done();
            return write(&mut stream, Response::text(413, "body too large\n"), false).await;
        }
        let more = tokio::select! {
            _ = head_cancel.cancelled() => return Ok(()),
            m = tokio::time::timeout(HEAD_TIMEOUT, read_body(&mut stream, head.content_length - body.len())) => m,
        };
        match more {
            Ok(Ok(b)) => body.extend_from_slice(&b),
            _ => body.clear(),
        }
    }
    head_done();
    let path = path.as_str();
    let head_only = head.method == "HEAD";
    // A credential presented: counted when wrong, not even looked at from an
    // address that used up its failures for the minute.
    let presents = status.token.is_some()
        && (login_post
            || head.authorization.is_some()
            || head
                .cookie
                .as_deref()
                .is_some_and(|c| c.contains(SESSION_COOKIE)));
    if presents && status.sign_in.blocked(peer) {
        let resp = Response {
            extra: "Retry-After: 60\r\n".into(),
            ..Response::text(
                429,
                "too many wrong tokens from this address; try again in a minute\n",
            )
        };
        let head_only = head.method == "HEAD";
        return match tokio::time::timeout(HEAD_TIMEOUT * 2, write(&mut stream, resp, head_only))
            .await
        {
            Ok(r) => r,
            Err(_) => Ok(()),
        };
    }
    let signed_in = authorized(status.token.as_deref(), head.authorization.as_deref())
        || session_ok(status.token.as_deref(), head.cookie.as_deref());
    if presents && !login_post && !signed_in {
        status.sign_in.failed(peer);
    }
    let resp = if login_post {
        let r = login(status.token.as_deref(), &body);
        if presents && r.code == 401 {
            status.sign_in.failed(peer);
        }
        r
    } else if action_post {
        action(path, status, signed_in, &body).await
    } else if head.method != "GET" && head.method != "HEAD" {
        Response::text(405, "only GET and HEAD (and POST /login)\n")
    } else if !signed_in {
        if path == "/" {
            Response {
                extra: "WWW-Authenticate: Bearer realm=\"edgegw\"\r\n".into(),
                ..Response::html(401, LOGIN_PAGE)
            }
        } else {
            Response {
                extra: "WWW-Authenticate: Bearer realm=\"edgegw\"\r\n".into(),
                ..Response::text(401, "bearer token required\n")
            }
        }
    } else if path == "/events" {
        return events(stream, status).await;
    } else if path == "/metrics" {
        return metrics(&mut stream, status, head_only).await;
    } else {
        route(path, status).await
    };
    // A client that never reads its answer does not hold the slot either.
    match tokio::time::timeout(HEAD_TIMEOUT * 2, write(&mut stream, resp, head_only)).await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}

/// Reads up to the blank line: the head, and what came after it (the start of a
/// body); `None` when the head exceeds the cap.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Some((buf, Vec::new())));
        }
        buf.extend_from_slice(&chunk[..n]);
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + 4)
            .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2));
        if let Some(end) = end {
            let rest = buf.split_off(end);
            return Ok(Some((buf, rest)));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Ok(None);
        }
    }
}

async fn read_body(stream: &mut TcpStream, len: usize) -> std::io::Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    stream.read_exact(&mut b).await?;
    Ok(b)
}

fn parse_head(head: &[u8]) -> Head {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let mut h = Head {
        method: first.next().unwrap_or("").to_string(),
        path: first.next().unwrap_or("").to_string(),
        ..Head::default()
    };
    for (k, v) in lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
    {
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("authorization") {
            h.authorization = Some(v.to_string());
        } else if k.eq_ignore_ascii_case("cookie") {
            h.cookie = Some(v.to_string());
        } else if k.eq_ignore_ascii_case("content-length") {
            h.content_length = v.parse().unwrap_or(0);
        }
    }
    h
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
    same(given, token)
}

/// Constant time in the contents (the length is not secret).
fn same(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The session cookie's value for `token`: derived from it (SHA-256 with a fixed
/// label), so the browser never stores the token itself, and a new token ends every
/// session.
fn session_value(token: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("edgegw status page session\n{token}").as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn session_ok(token: Option<&str>, cookie: Option<&str>) -> bool {
    let (Some(token), Some(cookie)) = (token, cookie) else {
        return false;
    };
    let expected = session_value(token);
    cookie
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .any(|(k, v)| k == SESSION_COOKIE && same(v, &expected))
}

/// `POST /login` with `token=...` (form encoded): a session cookie and back to the
/// page, or the form again.
fn login(token: Option<&str>, body: &[u8]) -> Response {
    let given = String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| form_decode(v))
        .unwrap_or_default();
    match token {
        Some(t) if same(&given, t) => Response {
            code: 303,
            extra: format!(
                "Location: /\r\nSet-Cookie: {SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/\r\n",
                session_value(t)
            ),
            ..Response::text(303, "signed in\n")
        },
        // No token configured: nothing to sign in to.
        None => Response {
            code: 303,
            extra: "Location: /\r\n".into(),
            ..Response::text(303, "no token needed\n")
        },
        Some(_) => Response {
            extra: "WWW-Authenticate: Bearer realm=\"edgegw\"\r\n".into(),
            ..Response::html(401, LOGIN_PAGE.replace("<!--msg-->", "<p>Wrong token.</p>"))
        },
    }
}

/// The field `name` of a form-encoded body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| form_decode(v))
}

/// The page's two write actions: acknowledging an open alert episode
/// (`sensor`, `type`, `episode`) and starting a new baseline for a device or a
/// channel (`selector`, as `edgegw baseline reset`). Both need the token: a gateway
/// without `http.token` serves a read-only page.
async fn action(path: &str, s: &Status, signed_in: bool, body: &[u8]) -> Response {
    if s.token.is_none() {
        return Response::text(
            403,
            "read-only: set http.token to acknowledge alerts and reset baselines from the page\n",
        );
    }
    if !signed_in {
        return Response {
            extra: "WWW-Authenticate: Bearer realm=\"edgegw\"\r\n".into(),
            ..Response::text(401, "bearer token or sign-in required\n")
        };
    }
    if path == "/api/ack" {
        let (Some(sensor), Some(kind), Some(episode)) = (
            form_field(body, "sensor"),
            form_field(body, "type"),
            form_field(body, "episode").and_then(|e| e.parse::<i64>().ok()),
        ) else {
            return Response::text(400, "need sensor, type and episode (form fields)\n");
        };
        if s.live.board.acknowledge(&sensor, &kind, episode).await {
            tracing::info!(sensor = %sensor, anomaly_type = %kind, episode_us = episode,
                "Alert acknowledged on the status page.");
            Response::text(200, "acknowledged\n")
        } else {
            Response::text(404, "no such open alert episode\n")
        }
    } else {
        let Some(selector) = form_field(body, "selector").filter(|v| !v.trim().is_empty()) else {
            return Response::text(400, "need selector (DEVICE or DEVICE.CHANNEL)\n");
        };
        let sel = selector.clone();
        match s
            .outbox
            .with(move |o| super::baseline::reset_in(o, &sel))
            .await
        {
            Ok(text) => {
                tracing::info!(selector = %selector, "Baseline reset requested on the status page.");
                Response::text(200, text)
            }
            Err(e) => Response::text(503, format!("cannot request the reset: {e}\n")),
        }
    }
}

/// `application/x-www-form-urlencoded` value: `+` is a space, `%XX` a byte.
fn form_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(x) => {
                        out.push(x);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const LOGIN_PAGE: &str = "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content='width=device-width, initial-scale=1'><title>edgegw: sign in</title></head><body style='font:15px system-ui,sans-serif;margin:3em auto;max-width:26em'><h1>edgegw</h1><p>This gateway's status page needs its token (<code>http.token</code> in the gateway's configuration).</p><!--msg--><form method=post action=/login><input type=password name=token autofocus style='width:100%;padding:.4em'><p><button type=submit>Sign in</button></p></form></body></html>";

/// Server-sent events: the page's snapshot now and every [`page::EVENT_INTERVAL`],
/// until the client goes away or the gateway stops.
async fn events(mut stream: TcpStream, s: &Status) -> std::io::Result<()> {
    if s.event_streams.fetch_add(1, Relaxed) >= page::MAX_EVENT_STREAMS {
        s.event_streams.fetch_sub(1, Relaxed);
        let r = Response::text(503, "too many open status pages; close one\n");
        return write(&mut stream, r, false).await;
    }
    struct Open<'a>(&'a AtomicUsize);
    impl Drop for Open<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Relaxed);
        }
    }
    let _open = Open(&s.event_streams);
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\nretry: 3000\n\n")
        .await?;
    let mut tick = tokio::time::interval(page::EVENT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probe = [0u8; 64];
    loop {
        tokio::select! {
            _ = s.cancel.cancelled() => break,
            _ = tick.tick() => {}
            // The client closed (or sent something it should not): done.
            r = stream.read(&mut probe) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
        }
        let json = snapshot_json(s).await;
        let msg = format!("data: {json}\n\n");
        match tokio::time::timeout(HEAD_TIMEOUT * 2, stream.write_all(msg.as_bytes())).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    let _ = stream.shutdown().await;
    Ok(())
}

async fn snapshot_json(s: &Status) -> String {
    s.live.board.watch();
    let stats = match tokio::time::timeout(OUTBOX_TIMEOUT, s.outbox.stats()).await {
        Ok(Ok(stats)) => Some(stats),
        _ => None,
    };
    page::snapshot(&s.live, stats.as_ref(), crate::record::now_us()).to_string()
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
        "/" => {
            s.live.board.watch();
            Response::html(200, page::PAGE_HTML)
        }
        "/api/status" => Response {
            content_type: "application/json",
            ..Response::text(200, snapshot_json(s).await)
        },
        _ => Response::text(
            404,
            "not found; try / (the status page), /api/status, /healthz, /readyz or /metrics\n",
        ),
    }
}

/// `/metrics`, streamed: the collectors write on a blocking thread in chunks of
/// ~64 kB (`metrics::CHUNK`), written out as they come, so a scrape of a gateway with
/// tens of thousands of channels (~12 MB of text at 15,000) holds a few chunks, not
/// the whole text. The length is not known up front: the body ends where the
/// connection closes (`Connection: close`, as every answer here; RFC 9112, 6.3).
/// As for any answer, a client that stops reading does not hold the slot: each write
/// has the deadline a whole answer has elsewhere.
async fn metrics(stream: &mut TcpStream, s: &Status, head_only: bool) -> std::io::Result<()> {
    let stats = match tokio::time::timeout(OUTBOX_TIMEOUT, s.outbox.stats()).await {
        Ok(Ok(stats)) => Some(stats),
        Ok(Err(err)) => {
            tracing::warn!("Metrics: cannot read outbox stats: {err}");
            None
        }
        Err(_) => {
            tracing::warn!("Metrics: outbox stats timed out");
            None
        }
    };
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n";
    if !write_within(stream, HEAD).await? {
        return Ok(());
    }
    if !head_only {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(2);
        let registry = s.metrics.clone();
        let writer = tokio::task::spawn_blocking(move || {
            // A client gone: the rest is written and dropped (the collectors only read).
            let mut e = Exposition::streaming(move |chunk| {
                let _ = tx.blocking_send(chunk);
            });
            registry.collect_into(&mut e);
            if let Some(stats) = stats {
                collect::outbox(&stats, &mut e);
            }
            e.finish();
        });
        while let Some(chunk) = rx.recv().await {
            if !write_within(stream, chunk.as_bytes()).await? {
                return Ok(());
            }
        }
        if let Err(e) = writer.await {
            // A collector panicked (in a build that unwinds; the built binaries
            // abort): the body is cut short; the client sees the connection end
            // mid-scrape.
            tracing::error!("Metrics: the scrape failed: {e}");
            return Ok(());
        }
    }
    match tokio::time::timeout(HEAD_TIMEOUT * 2, stream.shutdown()).await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}

/// Writes `bytes` within the deadline of an answer; false when the client did not
/// take them in time (the connection is then dropped).
async fn write_within(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<bool> {
    match tokio::time::timeout(HEAD_TIMEOUT * 2, stream.write_all(bytes)).await {
        Ok(r) => r.map(|()| true),
        Err(_) => Ok(false),
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
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
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
            event_streams: Arc::default(),
            sign_in: Arc::default(),
            cancel: CancellationToken::new(),
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

    /// One request from `from` (a loopback address) to `port`; the status code.
    async fn ask(from: &str, port: u16, req: &str) -> u16 {
        use tokio::io::AsyncReadExt;
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind(format!("{from}:0").parse().expect("address"))
            .expect("bind");
        let mut c = sock
            .connect(([127, 0, 0, 1], port).into())
            .await
            .expect("connect");
        c.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        c.read_to_string(&mut out).await.expect("read");
        out.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_token_guesser_is_slowed_down_without_locking_out_others() {
        use crate::outbox::{Outbox, OutboxHandle, OutboxSettings};
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Outbox::open(
            &dir.path().join("o.db"),
            &OutboxSettings::default(),
            "gw",
            &["a"],
        )
        .expect("open");
        let live = Arc::new(Live::new(crate::inference::shared(
            crate::inference::ModelRegistry::empty(),
        )));
        let cancel = CancellationToken::new();
        let s = Status {
            live,
            metrics: Metrics::new(),
            outbox: OutboxHandle::new(o),
            token: Some(Arc::from("right-token")),
            event_streams: Arc::default(),
            sign_in: Arc::default(),
            cancel: cancel.clone(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(serve(listener, s, cancel.clone()));
        let login = |t: &str| {
            let body = format!("token={t}");
            format!(
                "POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let bearer = |t: &str| {
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n\r\n")
        };
        for i in 0..SIGN_IN_FAILURES_PER_MINUTE {
            let wrong = if i % 2 == 0 {
                login(&format!("guess{i}"))
            } else {
                bearer("guess")
            };
            let code = ask("127.0.0.2", port, &wrong).await;
            assert_eq!(code, 401, "attempt {i}");
        }
        // The guesser's address is refused, even with the right token ...
        assert_eq!(ask("127.0.0.2", port, &login("right-token")).await, 429);
        assert_eq!(ask("127.0.0.2", port, &bearer("right-token")).await, 429);
        // ... and nobody else is: Prometheus, the health checker, a technician.
        assert_eq!(ask("127.0.0.1", port, &bearer("right-token")).await, 200);
        assert_eq!(ask("127.0.0.3", port, &login("right-token")).await, 303);
        cancel.cancel();
        server.await.expect("server");
    }

    #[test]
    fn heads_are_parsed() {
        let h = parse_head(
            b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nauthorization: Bearer t\r\nCookie: a=b; edgegw_session=x\r\nContent-Length: 12\r\n\r\n",
        );
        assert_eq!(
            h,
            Head {
                method: "GET".into(),
                path: "/metrics?x=1".into(),
                authorization: Some("Bearer t".into()),
                cookie: Some("a=b; edgegw_session=x".into()),
                content_length: 12,
            }
        );
    }

    #[test]
    fn the_page_signs_in_with_a_cookie_derived_from_the_token() {
        let r = login(Some("s3 cret"), b"token=s3+cret");
        assert_eq!(r.code, 303);
        let value = session_value("s3 cret");
        assert!(
            r.extra
                .contains(&format!("edgegw_session={value}; HttpOnly")),
            "{}",
            r.extra
        );
        assert!(!r.extra.contains("s3 cret") && !value.contains("s3"));
        let cookie = format!("theme=dark; edgegw_session={value}");
        assert!(session_ok(Some("s3 cret"), Some(&cookie)));
        // Another token ends the session; a forged or missing cookie does not pass.
        assert!(!session_ok(Some("other"), Some(&cookie)));
        assert!(!session_ok(Some("s3 cret"), Some("edgegw_session=00")));
        assert!(!session_ok(Some("s3 cret"), None));
        let wrong = login(Some("s3 cret"), b"token=guess");
        assert_eq!(wrong.code, 401);
        assert!(wrong.body.contains("Wrong token"));
        assert_eq!(form_decode("a%2Fb+c%zz"), "a/b c%zz");
    }
}
