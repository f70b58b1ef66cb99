//! Hostile requests to the status listener (issue #13, item 2).
//!
//! Its request parser is private, so it is tested through the real binary: `edgegw
//! run` with no devices and a bearer token, and over TCP random and hostile request
//! heads: arbitrary bytes, request lines with odd methods, paths (8 KiB, NUL,
//! traversal) and versions, bare `\n` and `\r` line ends, repeated and malformed
//! `Authorization` headers (wrong scheme, wrong token, the token with spaces, not
//! UTF-8), heads over the 8 KiB cap, heads cut short, bytes after the head, sent in
//! random pieces. Properties: the daemon never exits or logs a panic; every
//! connection gets one well-formed answer (`HTTP/1.1`, a known status, a
//! `Content-Length` that matches the body, or for a scrape of `/metrics`, which is
//! streamed, none and a body of whole lines, `Connection: close`) or, for a head over
//! the cap, at most a reset; no answer without the token but 401 (or 405 for a
//! method other than GET/HEAD), or 429 once the hostile address (127.0.0.2) presented
//! ten wrong tokens in a minute; and `/healthz` (from 127.0.0.1) keeps answering
//! between the cases and while 20 slow clients hold connections open.

#[macro_use]
#[path = "fuzz/support.rs"]
mod support;

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "fuzz-Token_0123456789";
const MAX_HEAD: usize = 8 * 1024;
/// Where the hostile requests come from: after ten wrong tokens in a minute the
/// listener answers this address 429 (its sign-in guard), never the others.
const HOSTILE: [u8; 4] = [127, 0, 0, 2];
const HEALTH_CHECKER: [u8; 4] = [127, 0, 0, 1];

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Gateway {
    proc: Proc,
    port: u16,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn start() -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let cfg = dir.path().join("edgegw.toml");
        std::fs::write(
            &cfg,
            format!(
                "[gateway]\nid = \"gw-fuzz-http\"\nstate_dir = {:?}\nprofile_dir = {:?}\n\n\
                 [http]\nlisten = \"127.0.0.1:{port}\"\ntoken = {{ env = \"FUZZ_HTTP_TOKEN\" }}\n",
                dir.path().display().to_string(),
                support::repo()
                    .join("hardware-profiles")
                    .display()
                    .to_string()
            ),
        )
        .expect("config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgegw"))
            .args(["--log-format", "human", "run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .env("FUZZ_HTTP_TOKEN", TOKEN)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("edgegw run");
        let mut stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let mut gw = Gateway {
            proc: Proc(child),
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            gw.assert_running();
            assert!(Instant::now() < deadline, "no listener; log:\n{}", gw.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        gw
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        assert!(
            self.proc.0.try_wait().expect("try_wait").is_none(),
            "edgegw exited; log:\n{}",
            self.log()
        );
    }

    /// `/healthz` with the token answers 200 within `within`.
    fn healthy(&mut self, within: Duration) -> Result<(), String> {
        let head = format!("GET /healthz HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
        let deadline = Instant::now() + within;
        loop {
            match exchange(HEALTH_CHECKER, self.port, &[head.as_bytes()], within) {
                Ok(r) if r.starts_with(b"HTTP/1.1 200 ") => return Ok(()),
                other if Instant::now() >= deadline => {
                    self.assert_running();
                    return Err(format!("/healthz: {other:?}"));
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// Sends `pieces` (then FIN) and reads the whole answer.
fn exchange(
    from: [u8; 4],
    port: u16,
    pieces: &[&[u8]],
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&std::net::SocketAddr::from((from, 0)).into())?;
    sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    for p in pieces {
        // The server may answer (431) and close before the rest is written.
        if s.write_all(p).is_err() {
            break;
        }
    }
    let _ = s.shutdown(Shutdown::Write);
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    Ok(resp)
}

/// A parsed answer: status, headers (lowercased names), body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

fn parse(resp: &[u8]) -> Result<Answer, String> {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of head")?;
    let head = std::str::from_utf8(&resp[..end]).map_err(|e| e.to_string())?;
    let body = resp[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next().ok_or("no status line")?;
    let rest = status.strip_prefix("HTTP/1.1 ").ok_or("not HTTP/1.1")?;
    let code: u16 = rest
        .get(..3)
        .and_then(|c| c.parse().ok())
        .ok_or("no code")?;
    let mut headers = Vec::new();
    for l in lines {
        let (k, v) = l
            .split_once(": ")
            .ok_or_else(|| format!("bad header line {l:?}"))?;
        headers.push((k.to_ascii_lowercase(), v.to_string()));
    }
    Ok((code, headers, body))
}

// ---------------------------------------------------------------------------
// Requests.

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(list).prop_map(str::to_string)
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => pick(&["GET", "HEAD"]),
        2 => pick(&["POST", "get", "OPTIONS", "CONNECT", "", "GET\0", "G\tET", "ĞET", "\u{feff}GET"]),
        1 => (1usize..6000).prop_map(|n| "A".repeat(n)),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => pick(&["/healthz", "/readyz", "/metrics", "/"]),
        3 => pick(&["", "*", "/healthz?x=1&y", "/metrics?", "/%00", "//healthz", "/../../etc/passwd",
                    "/healthz#x", "http://127.0.0.1/healthz", "/healthz\0", "/ü", "/healthz/", "?"]),
        1 => (1usize..9000).prop_map(|n| format!("/{}", "a".repeat(n))),
        1 => "/[ -~]{0,40}",
    ]
}

fn auth_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(format!("Bearer {TOKEN}")),
        1 => Just(format!("bearer   {TOKEN}  ")),
        1 => Just(format!("Bearer {}", &TOKEN[1..])),
        1 => Just(format!("Bearer {TOKEN}x")),
        1 => Just(format!("Basic {TOKEN}")),
        1 => pick(&["Bearer", "Bearer ", "", " ", "Bearer\t", "\0", "Bearer \u{ff}"]),
        1 => (1usize..9000).prop_map(|n| format!("Bearer {}", "t".repeat(n))),
    ]
}

fn header() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (pick(&["Authorization", "authorization", "AUTHORIZATION", " Authorization", "Authorization "]), auth_value())
            .prop_map(|(k, v)| format!("{k}:{v}")),
        1 => (pick(&["Authorization", "authorization"]), auth_value()).prop_map(|(k, v)| format!("{k}: {v}")),
        2 => pick(&["Host: 127.0.0.1", "Content-Length: 5", "Content-Length: -1",
                    "Transfer-Encoding: chunked", "Connection: keep-alive", "Expect: 100-continue",
                    "X:", ":", "no colon", "Host:\u{0}", "X-A: \u{7f}\u{80}"]),
        1 => "[ -~]{0,60}",
        1 => (1usize..3000).prop_map(|n| format!("X-Long: {}", "v".repeat(n))),
    ]
}

/// A request head as bytes, and whether it carries a head terminator.
fn head() -> impl Strategy<Value = Vec<u8>> {
    let structured = (
        method(),
        pick(&[" ", "  ", "\t"]),
        path(),
        pick(&[" HTTP/1.1", " HTTP/1.0", " HTTP/9", "", " HTTP/1.1 extra"]),
        prop::collection::vec(header(), 0..5),
        pick(&["\r\n", "\n", "\r"]),
        pick(&["\r\n\r\n", "\n\n", "\r\n", "", "\r\n\r", "\n\r\n"]),
        prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(any::<u8>(), 0..200)],
    )
        .prop_map(|(m, sp, p, v, hs, nl, end, tail)| {
            let mut h = format!("{m}{sp}{p}{v}");
            for x in hs {
                h.push_str(&nl);
                h.push_str(&x);
            }
            h.push_str(&end);
            let mut b = h.into_bytes();
            b.extend(tail);
            b
        });
    prop_oneof![
        6 => structured,
        2 => prop::collection::vec(any::<u8>(), 0..600),
        1 => (MAX_HEAD - 8..MAX_HEAD * 2).prop_map(|n| vec![b'G'; n]),
        1 => Just(format!("GET /healthz HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").into_bytes()),
    ]
}

/// A head cut into 1..5 pieces at random places.
fn pieces() -> impl Strategy<Value = (Vec<u8>, Vec<prop::sample::Index>)> {
    (
        head(),
        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    )
}

/// What the listener sees (its own parse of the head, best effort): the method and
/// whether an `Authorization` header appears at all.
fn method_of(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    text.lines()
        .next()
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("")
        .to_string()
}

/// The request path as the listener reads it (the first line's second word).
fn path_of(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    text.lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_string()
}

fn check_answer(head: &[u8], resp: &[u8]) -> Result<(), TestCaseError> {
    let shown = || {
        format!(
            "head {:?}\nanswer {:?}",
            String::from_utf8_lossy(&head[..head.len().min(300)]),
            String::from_utf8_lossy(&resp[..resp.len().min(300)])
        )
    };
    let has_end =
        head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n");
    if resp.is_empty() {
        // Only a head past the cap may be cut off without an answer (the listener
        // closes with unread bytes, so the kernel may reset before the 431 is read).
        prop_assert!(head.len() > MAX_HEAD, "no answer: {}", shown());
        return Ok(());
    }
    let (code, headers, body) =
        parse(resp).map_err(|e| TestCaseError::fail(format!("{e}: {}", shown())))?;
    prop_assert!(
        [200, 401, 404, 405, 431, 503].contains(&code)
            // Ten wrong tokens from one address in a minute: refused for the minute.
            || code == 429
            // The status page's sign-in: a form post, too large or with the token.
            || ([400, 403, 413].contains(&code) && method_of(head) == "POST")
            || (code == 303 && String::from_utf8_lossy(head).contains(TOKEN)),
        "status {}: {}",
        code,
        shown()
    );
    let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let connection = get("connection");
    prop_assert_eq!(connection.as_deref(), Some("close"), "{}", shown());
    let method = method_of(head);
    // A scrape is streamed: its body ends where the connection closes (no length up
    // front); every other answer says its length.
    let streamed = code == 200 && path_of(head).split('?').next() == Some("/metrics");
    if streamed {
        prop_assert!(get("content-length").is_none(), "{}", shown());
        if method == "HEAD" {
            prop_assert!(body.is_empty(), "a body for HEAD: {}", shown());
        } else {
            prop_assert!(
                body.starts_with(b"# HELP ") && body.ends_with(b"\n"),
                "a scrape cut short: {}",
                shown()
            );
        }
    } else {
        let len: usize = get("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| TestCaseError::fail(format!("no Content-Length: {}", shown())))?;
        if method == "HEAD" && code != 431 {
            prop_assert!(body.is_empty(), "a body for HEAD: {}", shown());
        } else {
            prop_assert_eq!(body.len(), len, "Content-Length: {}", shown());
        }
    }
    if code == 431 {
        prop_assert!(
            head.len() > MAX_HEAD,
            "431 for {} bytes: {}",
            head.len(),
            shown()
        );
    } else {
        // The listener stops reading at the first blank line or at the cap.
        prop_assert!(has_end || head.len() <= MAX_HEAD + 1024, "{}", shown());
    }
    let lower = String::from_utf8_lossy(head).to_ascii_lowercase();
    if code == 200 {
        prop_assert!(
            lower.contains("authorization"),
            "200 without a token: {}",
            shown()
        );
        prop_assert!(
            lower.contains(&TOKEN.to_ascii_lowercase()),
            "200 without the token: {}",
            shown()
        );
    }
    if (method == "GET" || method == "HEAD")
        && !lower.contains("authorization")
        && head.len() <= MAX_HEAD
    {
        prop_assert_eq!(code, 401, "{}", shown());
    }
    if code == 401 {
        prop_assert!(
            get("www-authenticate").is_some(),
            "401 without WWW-Authenticate: {}",
            shown()
        );
    }
    Ok(())
}

#[test]
fn the_status_listener_survives_hostile_requests() {
    let mut gw = Gateway::start();
    gw.healthy(Duration::from_secs(20))
        .expect("healthy at start");
    let config = support::config(2000, regressions!("fuzz_http"));
    let mut runner = TestRunner::new(config);
    let port = gw.port;
    let result = runner.run(&pieces(), |(head, cuts)| {
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(head.len() + 1)).collect();
        at.sort_unstable();
        at.dedup();
        let mut parts = Vec::new();
        let mut from = 0;
        for c in at.into_iter().chain([head.len()]) {
            parts.push(&head[from..c]);
            from = c;
        }
        let resp = exchange(HOSTILE, port, &parts, Duration::from_secs(5));
        match resp {
            Ok(r) => check_answer(&head, &r)?,
            Err(e) => prop_assert!(
                head.len() > MAX_HEAD
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ),
                "{e} for {} bytes {:?}",
                head.len(),
                String::from_utf8_lossy(&head[..head.len().min(200)])
            ),
        }
        Ok(())
    });
    gw.assert_running();
    if let Err(e) = result {
        panic!("{e}\nlog:\n{}", gw.log());
    }
    gw.healthy(Duration::from_secs(5))
        .expect("healthy after the fuzzing");

    // Slow clients: 20 connections trickling a head (more than the 16 slots), and
    // 20 that send nothing; the health checker still gets through.
    let mut slow = Vec::new();
    for i in 0..40 {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            if i % 2 == 0 {
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nAuthor");
            }
            slow.push(s);
        }
    }
    gw.healthy(Duration::from_secs(3))
        .expect("healthy while slow clients hold connections");
    drop(slow);
    gw.healthy(Duration::from_secs(5))
        .expect("healthy at the end");
    gw.assert_running();
    let log = gw.log();
    assert!(!log.contains("panicked"), "a task panicked:\n{log}");
}
