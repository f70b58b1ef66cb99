//! Tests of the Modbus simulator: answers, exceptions, waveform playback and recordings.

use super::*;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

/// Two f32 waveform channels of 4 samples (8 registers) and a scalar.
fn sim() -> Simulator {
    let profile: Profile = toml::from_str(
        r#"
vendor = "Test"
model = "Two-Waves"
[channels.temp]
sensor_type = "temperature"
unit = "°C"
[channels.wa]
sensor_type = "vibration"
unit = "g"
[channels.wb]
sensor_type = "vibration"
unit = "g"
[modbus]
[[modbus.registers]]
channel = "temp"
table = "input"
address = 0
type = "i16"
[[modbus.waveforms]]
channel = "wa"
table = "input"
address = 100
samples = 4
type = "f32"
sample_rate_hz = 100.0
[[modbus.waveforms]]
channel = "wb"
table = "holding"
address = 200
samples = 4
type = "f32"
sample_rate_hz = 100.0
"#,
    )
    .unwrap();
    Simulator::new(&profile, None).unwrap()
}

fn read(sim: &Simulator, req: Request<'static>) -> Result<Vec<f32>, ExceptionCode> {
    let answer = sim.state.answer(SlaveRequest {
        slave: 1,
        request: req,
    })?;
    let words = match answer {
        Some(Response::ReadInputRegisters(w) | Response::ReadHoldingRegisters(w)) => w,
        other => panic!("unexpected {other:?}"),
    };
    Ok(words
        .chunks_exact(2)
        .map(|w| f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1])))
        .collect())
}

fn wa(sim: &Simulator) -> Result<Vec<f32>, ExceptionCode> {
    read(sim, Request::ReadInputRegisters(100, 8))
}

fn wb(sim: &Simulator) -> Result<Vec<f32>, ExceptionCode> {
    read(sim, Request::ReadHoldingRegisters(200, 8))
}

#[test]
fn each_channel_plays_its_own_recordings() {
    let sim = sim();
    sim.set_waveform_for("wa", vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], false)
        .unwrap();
    sim.set_recordings_for("wb", vec![vec![10.0, 11.0], vec![20.0, 21.0, 22.0]], false)
        .unwrap();
    assert_eq!(wa(&sim).unwrap(), [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(wb(&sim).unwrap(), [10.0, 11.0, 20.0, 21.0]);
    assert_eq!(wa(&sim).unwrap(), [5.0, 6.0, 1.0, 2.0]);
    // The last recording loops.
    assert_eq!(wb(&sim).unwrap(), [22.0, 20.0, 21.0, 22.0]);
    assert_eq!(sim.blocks_served_for("wa"), Some(2));
    assert_eq!(sim.blocks_served_for("wb"), Some(2));
    assert_eq!(sim.blocks_served_for("temp"), None);
    assert_eq!(sim.blocks_served(), 4);
    assert!(!sim.finished(), "a looping recording never finishes");
}

#[test]
fn play_once_serves_whole_blocks_then_exception_4() {
    let sim = sim();
    // 9 samples: 2 whole blocks, 1 sample never served.
    sim.set_recordings_for(
        "wa",
        vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0, 7.0, 8.0, 9.0]],
        true,
    )
    .unwrap();
    sim.set_waveform_for("wb", vec![10.0, 11.0, 12.0, 13.0], true)
        .unwrap();
    assert_eq!(wa(&sim).unwrap(), [1.0, 2.0, 3.0, 4.0]);
    // A read inside the block reads the current block, it does not advance.
    assert_eq!(
        read(&sim, Request::ReadInputRegisters(104, 4)).unwrap(),
        [3.0, 4.0]
    );
    assert_eq!(wa(&sim).unwrap(), [5.0, 6.0, 7.0, 8.0]);
    // The rest of the last block is still served until a read goes past it.
    assert_eq!(
        read(&sim, Request::ReadInputRegisters(106, 2)).unwrap(),
        [8.0]
    );
    assert_eq!(wa(&sim), Err(ExceptionCode::ServerDeviceFailure));
    assert_eq!(
        read(&sim, Request::ReadInputRegisters(106, 2)),
        Err(ExceptionCode::ServerDeviceFailure)
    );
    assert!(!sim.finished(), "wb has not been played");
    assert_eq!(wb(&sim).unwrap(), [10.0, 11.0, 12.0, 13.0]);
    assert!(!sim.finished(), "wb's last block was served, not read past");
    assert_eq!(wb(&sim), Err(ExceptionCode::ServerDeviceFailure));
    assert!(sim.finished());
    assert_eq!(sim.blocks_served_for("wa"), Some(2));
    assert_eq!(sim.blocks_served_for("wb"), Some(1));
    // Scalars still answer.
    assert!(sim
        .state
        .answer(SlaveRequest {
            slave: 1,
            request: Request::ReadInputRegisters(0, 1),
        })
        .is_ok());
    // New recordings start over.
    sim.set_waveform_for("wb", vec![1.0; 8], false).unwrap();
    assert!(!sim.finished(), "wb loops now");
    assert_eq!(wb(&sim).unwrap(), [1.0; 4]);
}

#[test]
fn a_recording_shorter_than_a_block_finishes_at_once() {
    let sim = sim();
    sim.set_waveform_for("wa", vec![1.0, 2.0, 3.0], true)
        .unwrap();
    // wb: generated signal, not counted.
    assert!(!sim.finished());
    assert_eq!(wa(&sim), Err(ExceptionCode::ServerDeviceFailure));
    assert!(sim.finished());
    assert_eq!(sim.blocks_served_for("wa"), Some(0));
    assert_eq!(wb(&sim).map(|b| b.len()), Ok(4));
}

#[tokio::test]
async fn wait_finished_returns_when_every_channel_is_played() {
    let sim = sim();
    sim.set_waveform_for("wa", vec![1.0; 4], true).unwrap();
    let waiter = tokio::spawn({
        let sim = sim.clone();
        async move { sim.wait_finished().await }
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    wa(&sim).unwrap();
    assert_eq!(wa(&sim), Err(ExceptionCode::ServerDeviceFailure));
    tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("wait_finished did not return")
        .unwrap();
}

#[test]
fn an_unknown_channel_names_the_waveform_channels() {
    let sim = sim();
    assert_eq!(sim.waveform_channels(), ["wa", "wb"]);
    let err = sim.set_waveform_for("temp", vec![1.0], false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"temp\" is not a waveform channel of profile Test Two-Waves; \
             its waveform channels: wa, wb"
    );
}
