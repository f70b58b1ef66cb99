//! `edgegw simulate modbus` as a process on 127.0.0.1 port 0 (the port it prints),
//! read through tokio-modbus's client: one recording per waveform channel, several
//! recordings for one channel, `--play-once` (whole blocks, then exception 0x04 and
//! `finished` on stdout) and the error for a channel the profile does not have.

#[path = "support/modbus.rs"]
mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::KillOnDrop;
use tokio_modbus::client::Context;
use tokio_modbus::prelude::*;

/// Three waveform channels in two tables, one block (`wb`) larger than a single
/// read (400 registers), and a scalar register.
const PROFILE: &str = r#"
vendor = "Test"
model = "Three-Waves"

[channels.temp]
sensor_type = "temperature"
unit = "°C"
min = -40.0
max = 125.0

[channels.wa]
sensor_type = "vibration"
unit = "g"

[channels.wb]
sensor_type = "vibration"
unit = "g"

[channels.wc]
sensor_type = "vibration"
unit = "g"

[modbus]
addressing = "zero_based"
order = "ABCD"

[[modbus.registers]]
channel = "temp"
table = "input"
address = 0
type = "i16"
scale = 0.1

[[modbus.waveforms]]
channel = "wa"
table = "input"
address = 100
samples = 50
type = "f32"
sample_rate_hz = 1000.0

[[modbus.waveforms]]
channel = "wb"
table = "input"
address = 300
samples = 200
type = "f32"
sample_rate_hz = 1000.0

[[modbus.waveforms]]
channel = "wc"
table = "holding"
address = 1000
samples = 20
type = "f32"
sample_rate_hz = 1000.0
"#;

/// Where each waveform block is: (table is input, first register, samples).
const WA: (bool, u16, usize) = (true, 100, 50);
const WB: (bool, u16, usize) = (true, 300, 200);
const WC: (bool, u16, usize) = (false, 1000, 20);

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_edgegw")
}

fn write_profile(dir: &Path) -> PathBuf {
    let path = dir.join("three-waves.toml");
    std::fs::write(&path, PROFILE).unwrap();
    path
}

/// Writes `samples` as raw little-endian f32.
fn write_f32(dir: &Path, name: &str, samples: &[f32]) -> PathBuf {
    let path = dir.join(name);
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `start, start + 1, ...`: exact in f32 for the sizes used here.
fn ramp(start: f32, n: usize) -> Vec<f32> {
    (0..n).map(|i| start + i as f32).collect()
}

/// The simulator process, its address and its stdout lines after the first.
struct Sim {
    _proc: KillOnDrop,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
}

impl Sim {
    fn start(profile: &Path, extra: &[String]) -> Sim {
        let mut child = Command::new(exe())
            .args(["simulate", "modbus", "--listen", "127.0.0.1:0", "--profile"])
            .arg(profile)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start edgegw simulate modbus");
        let stdout = child.stdout.take().unwrap();
        let proc = KillOnDrop(child);
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the simulator printed nothing");
        // "Simulating Test Three-Waves (FILE) on 127.0.0.1:PORT"
        let addr = first
            .rsplit_once(" on ")
            .and_then(|(_, a)| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        Sim {
            _proc: proc,
            addr,
            lines,
        }
    }

    async fn connect(&self) -> Context {
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio_modbus::client::tcp::connect_slave(self.addr, Slave(1)),
        )
        .await
        .expect("connect timed out")
        .expect("cannot connect to the simulator")
    }

    /// The next stdout line within `limit`, if any.
    fn line_within(&self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }
}

/// Reads registers with a timeout; a Modbus exception is the inner error.
async fn read_regs(
    ctx: &mut Context,
    input: bool,
    addr: u16,
    count: u16,
) -> Result<Vec<u16>, ExceptionCode> {
    let call = async {
        if input {
            ctx.read_input_registers(addr, count).await
        } else {
            ctx.read_holding_registers(addr, count).await
        }
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("read timed out")
        .expect("transport error")
}

/// One whole f32 block, in reads of at most 100 registers from its first one (the
/// first read advances the block, the others read the rest of it).
async fn read_block(
    ctx: &mut Context,
    (input, start, samples): (bool, u16, usize),
) -> Result<Vec<f32>, ExceptionCode> {
    let regs = samples * 2;
    let mut words = Vec::with_capacity(regs);
    while words.len() < regs {
        let n = (regs - words.len()).min(100);
        let addr = start + words.len() as u16;
        words.extend(read_regs(ctx, input, addr, n as u16).await?);
    }
    Ok(words
        .chunks_exact(2)
        .map(|w| f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1])))
        .collect())
}

#[tokio::test]
async fn each_waveform_channel_replays_its_own_file_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let profile = write_profile(dir.path());
    // Lengths that are not multiples of the block sizes, so the loop point falls
    // inside a block.
    let a = ramp(0.0, 130);
    let b = ramp(10_000.0, 450);
    let c = ramp(-500.0, 30);
    let args = vec![
        "--data".to_string(),
        format!("wa={}", write_f32(dir.path(), "a.f32", &a).display()),
        "--data".to_string(),
        format!("wb={}", write_f32(dir.path(), "b.f32", &b).display()),
        // A bare file feeds the waveform channels without one of their own.
        "--data".to_string(),
        write_f32(dir.path(), "c.f32", &c).display().to_string(),
    ];
    let sim = Sim::start(&profile, &args);
    let mut ctx = sim.connect().await;

    // Interleaved reads: each channel advances on its own.
    for n in 0..5 {
        for (name, block, rec) in [("wa", WA, &a), ("wb", WB, &b), ("wc", WC, &c)] {
            let got = read_block(&mut ctx, block)
                .await
                .unwrap_or_else(|e| panic!("{name} block {n}: exception {e:?}"));
            let want: Vec<f32> = (0..block.2)
                .map(|i| rec[(n * block.2 + i) % rec.len()])
                .collect();
            assert_eq!(got, want, "{name} block {n}");
        }
    }
    // A read inside a block does not advance it.
    let again = read_regs(&mut ctx, true, WA.1 + 2, 2).await.unwrap();
    assert_eq!(
        f32::from_bits((u32::from(again[0]) << 16) | u32::from(again[1])),
        a[(4 * 50 + 1) % a.len()]
    );
    // Looping never finishes.
    assert_eq!(sim.line_within(Duration::from_millis(200)), None);
}

#[tokio::test]
async fn play_once_serves_whole_blocks_then_exception_4_and_prints_finished() {
    let dir = tempfile::tempdir().unwrap();
    let profile = write_profile(dir.path());
    // wa: 4 whole blocks of 50 and 30 samples that are never served.
    let a = ramp(0.0, 230);
    // wb: two files played one after the other, 550 samples: 2 whole blocks of 200
    // (the second spans both files) and 150 that are never served.
    let b1 = ramp(10_000.0, 300);
    let b2 = ramp(20_000.0, 250);
    // wc: exactly 2 blocks of 20.
    let c = ramp(-500.0, 40);
    let args = vec![
        "--play-once".to_string(),
        "--data".to_string(),
        format!("wa={}", write_f32(dir.path(), "a.f32", &a).display()),
        "--data".to_string(),
        format!("wb={}", write_f32(dir.path(), "b1.f32", &b1).display()),
        "--data".to_string(),
        format!("wb={}", write_f32(dir.path(), "b2.f32", &b2).display()),
        "--data".to_string(),
        format!("wc={}", write_f32(dir.path(), "c.f32", &c).display()),
    ];
    let sim = Sim::start(&profile, &args);
    let mut ctx = sim.connect().await;
    let b: Vec<f32> = b1.iter().chain(&b2).copied().collect();

    for (name, block, rec) in [("wa", WA, &a), ("wc", WC, &c)] {
        let whole = rec.len() / block.2;
        for n in 0..whole {
            let got = read_block(&mut ctx, block)
                .await
                .unwrap_or_else(|e| panic!("{name} block {n}: exception {e:?}"));
            assert_eq!(got, rec[n * block.2..(n + 1) * block.2], "{name} block {n}");
        }
        // No partial block, no loop: the next read is a server device failure, and
        // so is every read of the block after it, wherever it starts.
        assert_eq!(
            read_block(&mut ctx, block).await,
            Err(ExceptionCode::ServerDeviceFailure),
            "{name}: read past the last whole block"
        );
        assert_eq!(
            read_regs(&mut ctx, block.0, block.1 + 4, 2).await,
            Err(ExceptionCode::ServerDeviceFailure),
            "{name}: read inside the finished block"
        );
    }
    // wb still plays: nothing is finished yet.
    assert_eq!(sim.line_within(Duration::from_millis(300)), None);

    for n in 0..2 {
        let got = read_block(&mut ctx, WB)
            .await
            .unwrap_or_else(|e| panic!("wb block {n}: exception {e:?}"));
        assert_eq!(got, b[n * 200..(n + 1) * 200], "wb block {n}");
    }
    // Every chunk of the last block was served; reading past it ends the channel.
    assert_eq!(
        read_block(&mut ctx, WB).await,
        Err(ExceptionCode::ServerDeviceFailure)
    );
    assert_eq!(
        sim.line_within(Duration::from_secs(10)).as_deref(),
        Some("finished")
    );
    // The simulator goes on: scalars answer, finished blocks still fail.
    let temp = read_regs(&mut ctx, true, 0, 1).await.unwrap();
    let celsius = f64::from(temp[0] as i16) * 0.1;
    assert!((-40.0..=125.0).contains(&celsius), "temp {celsius}");
    assert_eq!(
        read_block(&mut ctx, WA).await,
        Err(ExceptionCode::ServerDeviceFailure)
    );
    assert_eq!(sim.line_within(Duration::from_millis(200)), None);
}

#[test]
fn an_unknown_channel_in_data_names_the_waveform_channels() {
    let dir = tempfile::tempdir().unwrap();
    let profile = write_profile(dir.path());
    let file = write_f32(dir.path(), "x.f32", &ramp(0.0, 100));
    let mut child = Command::new(exe())
        .args(["simulate", "modbus", "--listen", "127.0.0.1:0", "--profile"])
        .arg(&profile)
        // `temp` is a channel of the profile, but not a waveform channel.
        .arg("--data")
        .arg(format!("temp={}", file.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the simulator started despite an unknown channel");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(!status.success(), "exit {status:?}");
    assert!(
        stderr.contains("\"temp\" is not a waveform channel")
            && stderr.contains("its waveform channels: wa, wb, wc"),
        "stderr:\n{stderr}"
    );
    assert!(!stdout.contains("Simulating"), "stdout:\n{stdout}");
}
