//! Hostile Modbus input (issue #13, item 2).
//!
//! - `codec::decode` with every `DataType` and `WordOrder` on random register slices
//!   (empty, short, long) and any `bit`: no panic; an error exactly when the slice is
//!   too short, naming the type and both counts; integers always finite; strings no
//!   longer than the registers hold, printable. `encode` then `decode` gives the value
//!   back (rounded and saturated for integers) under every order.
//! - A lying Modbus TCP server, raw on a `TcpListener`: one listener per lie (a wrong
//!   transaction id, a wrong unit id, a byte count that disagrees with the length
//!   either way, a frame cut short then closed or left hanging, an endless frame, a
//!   zero or wrong MBAP length, a wrong protocol id, a wrong function code, too few
//!   registers, garbage), and one that answers correctly with extreme values (f32
//!   NaN, f64::MAX). The real `edgegw run` polls a device on each of them plus an
//!   honest one (`edgegw simulate modbus` with the VT-420 profile). Checked: the
//!   daemon stays up with every source task running (`/readyz`), logs no panic, the
//!   honest device's readings keep reaching the outbox while the liars lie, nothing
//!   from a lie is stored as a good reading, and every extreme value stored as good
//!   is finite.

#[macro_use]
#[path = "fuzz/support.rs"]
mod support;

use edgegw::profiles::{DataType, WordOrder};
use edgegw::sources::modbus::codec::{decode, decode_string, encode, Decoded};
use proptest::prelude::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TYPES: [DataType; 10] = [
    DataType::U16,
    DataType::I16,
    DataType::U32,
    DataType::I32,
    DataType::U64,
    DataType::I64,
    DataType::F32,
    DataType::F64,
    DataType::Bool,
    DataType::String,
];

fn data_type() -> impl Strategy<Value = DataType> {
    proptest::sample::select(&TYPES[..])
}

fn order() -> impl Strategy<Value = WordOrder> {
    proptest::sample::select(&WordOrder::ALL[..])
}

fn registers() -> impl Strategy<Value = Vec<u16>> {
    prop_oneof![
        prop::collection::vec(any::<u16>(), 0..6),
        prop::collection::vec(
            proptest::sample::select(
                &[0u16, 0xffff, 0x7fff, 0x8000, 0x7fc0, 0x7f80, 0xff80, 0x7ff0, 0x20, 0x41][..]
            ),
            0..6
        ),
        prop::collection::vec(any::<u16>(), 0..300),
    ]
}

fn need(ty: DataType) -> usize {
    match ty {
        DataType::String => 1,
        t => usize::from(t.registers().unwrap_or(1)),
    }
}

proptest! {
    #![proptest_config(support::config(3000, regressions!("fuzz_modbus")))]

    #[test]
    fn decode_any_registers(
        regs in registers(),
        ty in data_type(),
        order in order(),
        bit in prop::option::of(any::<u8>()),
    ) {
        match decode(&regs, ty, order, bit) {
            Err(e) => {
                prop_assert!(regs.len() < need(ty), "{e} with {} registers", regs.len());
                let text = e.to_string();
                prop_assert!(text.contains(ty.as_str()), "{}", text);
                prop_assert!(text.contains(&format!("got {}", regs.len())), "{}", text);
            }
            Ok(d) => {
                prop_assert!(regs.len() >= need(ty));
                match (ty, d) {
                    (DataType::F32 | DataType::F64, Decoded::Number(_)) => {}
                    (DataType::String, Decoded::Text(t)) => {
                        prop_assert!(t.len() <= 2 * regs.len());
                        prop_assert!(t.chars().all(|c| c == '\0' || c == '?' || (' '..='~').contains(&c)), "{:?}", t);
                        prop_assert!(!t.ends_with(['\0', ' ']));
                    }
                    (DataType::Bool, Decoded::Bool(b)) => {
                        let want = match bit {
                            Some(b) if b < 16 => (regs[0] >> b) & 1 == 1,
                            Some(_) => false,
                            None => regs[0] != 0,
                        };
                        prop_assert_eq!(b, want);
                    }
                    (_, Decoded::Number(v)) => prop_assert!(v.is_finite(), "{:?} gave {}", ty, v),
                    (ty, other) => prop_assert!(false, "{:?} decoded as {:?}", ty, other),
                }
            }
        }
    }

    /// `encode` then `decode` under the same order gives the value back (integers
    /// rounded and saturated to the type, f32 rounded to f32).
    #[test]
    fn encode_decode_round_trip(
        value in prop_oneof![any::<f64>(), -1e20f64..1e20, proptest::sample::select(&[0.0, -0.0, 0.5, -0.5, 65535.5, 4294967295.0, 9.3e18, -9.3e18, 1.8e19][..])],
        // The numeric types (not bool, not string): the first eight.
        ty in proptest::sample::select(&TYPES[..8]),
        order in order(),
    ) {
        let regs = encode(value, ty, order);
        prop_assert_eq!(regs.len(), need(ty));
        let got = decode(&regs, ty, order, None).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Decoded::Number(got) = got else {
            return Err(TestCaseError::fail(format!("{got:?}")));
        };
        let sat = |lo: f64, hi: f64| if value.is_nan() { 0.0 } else { value.round().clamp(lo, hi) };
        let want = match ty {
            DataType::U16 => sat(0.0, 65535.0),
            DataType::I16 => sat(-32768.0, 32767.0),
            DataType::U32 => sat(0.0, 4294967295.0),
            DataType::I32 => sat(-2147483648.0, 2147483647.0),
            DataType::U64 => value.round().max(0.0) as u64 as f64,
            DataType::I64 => value.round() as i64 as f64,
            DataType::F32 => f64::from(value as f32),
            DataType::F64 => value,
            _ => unreachable!(),
        };
        prop_assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()) || got == want,
            "{:?} {:?}: {} -> {:?} -> {} (want {})", ty, order, value, regs, got, want
        );
    }

    #[test]
    fn strings_from_any_registers(regs in prop::collection::vec(any::<u16>(), 0..200)) {
        let s = decode_string(&regs);
        prop_assert!(s.len() <= 2 * regs.len());
    }
}

// ---------------------------------------------------------------------------
// The lying server.

/// How a liar answers a read request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lie {
    WrongTransactionId,
    WrongUnitId,
    /// The byte count says fewer bytes than the frame (and its MBAP length) carries.
    ByteCountShort,
    /// The byte count says more bytes than the frame carries.
    ByteCountLong,
    /// The MBAP length promises the whole answer; half of it comes, then FIN.
    TruncatedThenClosed,
    /// Half the answer, then nothing (the connection stays open).
    TruncatedThenSilent,
    /// A header promising 65535 bytes, then bytes without end.
    Endless,
    /// MBAP length 0.
    ZeroLength,
    /// MBAP protocol id 1 instead of 0.
    WrongProtocol,
    /// Function 0x04 in answer to 0x03.
    WrongFunction,
    /// A well-formed answer with one register too few.
    TooFewRegisters,
    /// Random bytes instead of an answer.
    Garbage,
}

const LIES: [Lie; 12] = [
    Lie::WrongTransactionId,
    Lie::WrongUnitId,
    Lie::ByteCountShort,
    Lie::ByteCountLong,
    Lie::TruncatedThenClosed,
    Lie::TruncatedThenSilent,
    Lie::Endless,
    Lie::ZeroLength,
    Lie::WrongProtocol,
    Lie::WrongFunction,
    Lie::TooFewRegisters,
    Lie::Garbage,
];

/// What a server does: lie, or answer correctly with these register values.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Lie(Lie),
    /// f32 NaN at 0..2, f64::MAX at 2..6 (times the profile's scale 10: infinity).
    Extreme,
}

/// The liar's registers: recognisable if anything made from them were stored.
const LIE_WORD: u16 = 0x4141;

/// Profile of every liar: an f32 and an f64 (scale 10) in holding registers 0..6.
const LIAR_PROFILE: &str = r#"
vendor = "Fuzz"
model = "Liar"
[channels.level]
sensor_type = "pressure"
unit = "bar"
[channels.big]
sensor_type = "general"
unit = "1"
[modbus]
[[modbus.registers]]
channel = "level"
table = "holding"
address = 0
type = "f32"
[[modbus.registers]]
channel = "big"
table = "holding"
address = 2
type = "f64"
scale = 10.0
"#;

struct Server {
    port: u16,
    /// Requests received (all connections).
    requests: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
}

fn serve(behaviour: Behaviour, stop: Arc<AtomicBool>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let requests = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let (req, conns) = (requests.clone(), connections.clone());
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    conns.fetch_add(1, Ordering::Relaxed);
                    let (stop, req) = (stop.clone(), req.clone());
                    std::thread::spawn(move || connection(s, behaviour, &stop, &req));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    Server {
        port,
        requests,
        connections,
    }
}

/// Reads exactly `buf.len()` bytes, giving up when told to stop or the peer closes.
fn read_exact(s: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool) -> bool {
    let mut got = 0;
    while got < buf.len() {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        match s.read(&mut buf[got..]) {
            Ok(0) => return false,
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return false,
        }
    }
    true
}

fn connection(mut s: TcpStream, behaviour: Behaviour, stop: &AtomicBool, requests: &AtomicU64) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = s.set_nodelay(true);
    let mut rng = fastrand::Rng::new();
    loop {
        let mut head = [0u8; 7];
        if !read_exact(&mut s, &mut head, stop) {
            return;
        }
        let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
        let mut pdu = vec![0u8; len.saturating_sub(1).min(300)];
        if !read_exact(&mut s, &mut pdu, stop) {
            return;
        }
        requests.fetch_add(1, Ordering::Relaxed);
        let (tid, unit) = (u16::from_be_bytes([head[0], head[1]]), head[6]);
        let fc = pdu.first().copied().unwrap_or(0);
        let qty = pdu
            .get(3..5)
            .map(|q| usize::from(u16::from_be_bytes([q[0], q[1]])))
            .unwrap_or(1)
            .min(125);
        let words: Vec<u16> = match behaviour {
            Behaviour::Lie(_) => vec![LIE_WORD; qty],
            Behaviour::Extreme => {
                let mut w = vec![0x7fc0, 0x0000, 0x7fef, 0xffff, 0xffff, 0xffff];
                w.resize(qty, 0x7fff);
                w
            }
        };
        let data: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        // A correct answer, then bent per lie.
        let frame = |tid: u16, proto: u16, unit: u8, fc: u8, count: u8, data: &[u8]| {
            let mut f = Vec::new();
            f.extend(tid.to_be_bytes());
            f.extend(proto.to_be_bytes());
            f.extend(((data.len() + 3) as u16).to_be_bytes());
            f.extend([unit, fc, count]);
            f.extend(data);
            f
        };
        let count = data.len() as u8;
        let lie = match behaviour {
            Behaviour::Extreme => {
                if s.write_all(&frame(tid, 0, unit, fc, count, &data)).is_err() {
                    return;
                }
                continue;
            }
            Behaviour::Lie(l) => l,
        };
        let out = match lie {
            Lie::WrongTransactionId => frame(tid.wrapping_add(1), 0, unit, fc, count, &data),
            Lie::WrongUnitId => frame(tid, 0, unit.wrapping_add(1), fc, count, &data),
            Lie::ByteCountShort => frame(tid, 0, unit, fc, count.saturating_sub(2), &data),
            Lie::ByteCountLong => frame(tid, 0, unit, fc, count.saturating_add(2), &data),
            Lie::TruncatedThenClosed | Lie::TruncatedThenSilent => {
                let f = frame(tid, 0, unit, fc, count, &data);
                f[..f.len() / 2].to_vec()
            }
            Lie::Endless => {
                let mut f = Vec::new();
                f.extend(tid.to_be_bytes());
                f.extend([0, 0, 0xff, 0xff, unit, fc, 0xff]);
                f
            }
            Lie::ZeroLength => {
                let mut f = frame(tid, 0, unit, fc, count, &data);
                f[4] = 0;
                f[5] = 0;
                f
            }
            Lie::WrongProtocol => frame(tid, 1, unit, fc, count, &data),
            Lie::WrongFunction => frame(tid, 0, unit, fc ^ 0x07, count, &data),
            Lie::TooFewRegisters => {
                let short = &data[..data.len().saturating_sub(2)];
                frame(tid, 0, unit, fc, short.len() as u8, short)
            }
            Lie::Garbage => (0..rng.usize(1..600)).map(|_| rng.u8(..)).collect(),
        };
        if s.write_all(&out).is_err() {
            return;
        }
        match lie {
            Lie::TruncatedThenClosed => return,
            Lie::TruncatedThenSilent => {
                // Hold the connection open until the gateway gives up on it.
                let mut sink = [0u8; 256];
                while !stop.load(Ordering::Relaxed) {
                    match s.read(&mut sink) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return,
                    }
                }
                return;
            }
            Lie::Endless => {
                // ~2 MB/s of noise until the gateway hangs up (or the test ends).
                let noise: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
                while !stop.load(Ordering::Relaxed) {
                    if s.write_all(&noise).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                return;
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// The daemon.

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_edgegw")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn wait_until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn simulator() -> (Proc, u16) {
    let port = free_port();
    let p = Proc(
        Command::new(exe())
            .args([
                "simulate",
                "modbus",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--profile")
            .arg(support::repo().join("hardware-profiles/acme-vt420.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("simulator"),
    );
    wait_until("the simulator", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    (p, port)
}

/// One GET; (status, body), or None when the daemon did not answer.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// The reading records in the outbox: (device, quality, value as JSON, flags).
fn stored_readings(db: &Path) -> Vec<(String, f64, serde_json::Value, String)> {
    let Ok(o) = edgegw::outbox::Outbox::open_read_only(db) else {
        return Vec::new();
    };
    let lines = o
        .dump(Some(edgegw::record::RecordKind::Reading), usize::MAX)
        .expect("dump");
    lines
        .into_iter()
        .map(|l| {
            let p = &l.payload;
            (
                p["device"].as_str().unwrap_or_default().to_string(),
                p["quality"].as_f64().unwrap_or(-1.0),
                p["value"].clone(),
                p["flags"].to_string(),
            )
        })
        .collect()
}

fn total_records(db: &Path) -> u64 {
    edgegw::outbox::Outbox::open_read_only(db)
        .and_then(|o| o.stats())
        .map(|s| s.total_records)
        .unwrap_or(0)
}

#[test]
fn lying_modbus_servers_do_not_hurt_the_daemon_or_the_honest_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = Arc::new(AtomicBool::new(false));
    let (_sim, honest_port) = simulator();
    let liars: Vec<(Lie, Server)> = LIES
        .iter()
        .map(|l| (*l, serve(Behaviour::Lie(*l), stop.clone())))
        .collect();
    let extreme = serve(Behaviour::Extreme, stop.clone());
    let profile = dir.path().join("liar.toml");
    std::fs::write(&profile, LIAR_PROFILE).expect("profile");
    let http = free_port();
    let device = |id: &str, profile: &str, port: u16| {
        format!(
            "[[devices]]\nid = \"{id}\"\nprofile = {profile:?}\npoll_interval_ms = 100\n\
             [devices.modbus_tcp]\nhost = \"127.0.0.1\"\nport = {port}\ntimeout_ms = 300\n\n"
        )
    };
    let liar_profile = profile.display().to_string();
    let mut devices = device("honest", "acme-vt420", honest_port);
    for (lie, server) in &liars {
        devices += &device(
            &format!("liar-{}", lie_id(*lie)),
            &liar_profile,
            server.port,
        );
    }
    devices += &device("extreme", &liar_profile, extreme.port);
    let cfg = dir.path().join("edgegw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw-fuzz\"\nstate_dir = {:?}\nprofile_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n{devices}",
            dir.path().display().to_string(),
            support::repo().join("hardware-profiles").display().to_string(),
        ),
    )
    .expect("config");
    let log = Arc::new(Mutex::new(String::new()));
    let mut child = Command::new(exe())
        .args(["--log-format", "human", "run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("edgegw run");
    let mut stderr = child.stderr.take().expect("stderr");
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
    let mut gw = Proc(child);
    let db = dir.path().join("outbox.db");
    let log_text = || log.lock().map(|l| l.clone()).unwrap_or_default();
    let mut running = |what: &str| {
        assert!(
            gw.0.try_wait().expect("try_wait").is_none(),
            "edgegw exited {what}; log:\n{}",
            log_text()
        );
    };

    // Every liar has been asked at least twice (so it lied twice, reconnects
    // included) and the honest device keeps being read all along.
    let started = Instant::now();
    let mut honest_seen = Vec::new();
    loop {
        running("while the liars lie");
        let honest = stored_readings(&db)
            .iter()
            .filter(|r| r.0 == "honest" && r.1 > 0.0)
            .count();
        honest_seen.push((started.elapsed(), honest));
        let asked = liars
            .iter()
            .all(|(_, s)| s.requests.load(Ordering::Relaxed) >= 2);
        if asked
            && extreme.requests.load(Ordering::Relaxed) >= 2
            && started.elapsed() > Duration::from_secs(4)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "not every liar was asked twice: {:?}",
            liars
                .iter()
                .map(|(l, s)| (
                    *l,
                    s.requests.load(Ordering::Relaxed),
                    s.connections.load(Ordering::Relaxed)
                ))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The honest device's good readings grew while the liars were lying.
    let before = honest_seen.first().map(|h| h.1).unwrap_or(0);
    let last = honest_seen.last().map(|h| h.1).unwrap_or(0);
    assert!(
        last > before + 5,
        "the honest device's readings did not keep coming: {honest_seen:?}; log:\n{}",
        log_text()
    );
    let n = total_records(&db);
    wait_until(
        "the outbox to grow further",
        Duration::from_secs(15),
        || (total_records(&db) > n).then_some(()),
    );
    running("at the end");
    let (code, body) = get(http, "/readyz").expect("/readyz answers");
    assert_eq!(code, 200, "not ready (a source task stopped?): {body}");
    let (code, _) = get(http, "/healthz").expect("/healthz answers");
    assert_eq!(code, 200);
    let (code, metrics) = get(http, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);

    // Nothing a liar said is stored as a good reading.
    let readings = stored_readings(&db);
    for (device, quality, value, flags) in &readings {
        if device.starts_with("liar-") {
            assert!(
                *quality == 0.0,
                "{device}: a reading from a lie was stored: value {value}, quality {quality}, flags {flags}"
            );
        }
        if device == "extreme" && *quality > 0.0 {
            let finite = value.as_f64().is_some_and(f64::is_finite);
            // Finding 5 (docs/fuzzing.md, fixed): f64::MAX scaled by 10 is refused.
            assert!(
                finite,
                "{device}: a non-finite value stored as good: {value} (flags {flags})"
            );
        }
    }
    // The lies were noticed and counted (as protocol, transport or timeout errors),
    // and none counted as a successful poll or a reading.
    let series = |name: &str, id: &str| -> f64 {
        let prefix = format!("{name}{{device=\"{id}\"");
        metrics
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    };
    for (lie, _) in &liars {
        let id = format!("liar-{}", lie_id(*lie));
        assert!(
            series("edgegw_device_errors_total", &id) > 0.0,
            "{id}: no error counted in /metrics"
        );
        assert_eq!(series("edgegw_device_polls_total", &id), 0.0, "{id}");
        assert_eq!(series("edgegw_device_readings_total", &id), 0.0, "{id}");
    }
    let text = log_text();
    assert!(!text.contains("panicked"), "a task panicked:\n{text}");
    stop.store(true, Ordering::Relaxed);
    drop(gw);
}

fn lie_id(l: Lie) -> String {
    let s = format!("{l:?}");
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}
