//! A Modbus device simulator that serves a hardware profile's register map, over TCP
//! (tokio-modbus's server) or RTU on a serial port: `edgegw simulate modbus`, the
//! in-process `edgegw demo` and the tests.
//!
//! Scalar registers come from a generator (slow sines inside each channel's
//! `min..max`), encoded with the register's type, order, scale and offset. A waveform
//! block comes from recordings (played one after the other, the last one looping) or
//! a generated sine plus noise; each read that starts at the block's first register
//! advances to the next block, so consecutive polls tile the signal. Each waveform
//! channel can have its own recordings ([`Simulator::set_recordings_for`]), and a
//! channel can play them once: whole blocks from the first sample, then exception
//! 0x04 (server device failure) for every read of the block, so that a test knows
//! when the recording is over ([`Simulator::finished`]). Reads of a
//! forbidden range, of addresses outside the map (gaps up to the profile's `max_gap`
//! read as 0, like real devices) and writes answer with an exception. A request to
//! another unit id, or any request while [`Simulator::set_silent`] is on, gets no
//! answer at all, like a dead slave.
//!
//! It must not be used to talk to real devices: it only answers.

use super::codec;
use crate::profiles::{Addressing, DataType, ModbusMap, Profile, Table, WordOrder};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

mod serve;

/// Why a profile cannot be simulated, or a recording cannot be played.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("profile {vendor} {model} has no [modbus] register map to simulate")]
    NoModbusMap { vendor: String, model: String },
    #[error(
        "{channel:?} is not a waveform channel of profile {profile}; {}",
        if waveform_channels.is_empty() {
            "it has no waveform channels".to_string()
        } else {
            format!("its waveform channels: {}", waveform_channels.join(", "))
        }
    )]
    NotAWaveformChannel {
        channel: String,
        /// Vendor and model.
        profile: String,
        /// The profile's waveform channels, in profile order.
        waveform_channels: Vec<String>,
    },
}

/// A simulated Modbus device. Cheap to clone: clones share the device.
#[derive(Clone)]
pub struct Simulator {
    state: Arc<State>,
}

struct State {
    unit: Option<u8>,
    silent: AtomicBool,
    /// Scalars hold a steady value with a little noise instead of a slow sine.
    steady: AtomicBool,
    requests: AtomicU64,
    /// Requests per unit id (RTU tests: is a dead unit backed off?).
    requests_by_unit: [AtomicU64; 256],
    connections_total: AtomicU64,
    connections_open: AtomicU64,
    started: std::time::Instant,
    scalars: Vec<SimScalar>,
    blocks: Vec<SimBlock>,
    /// Readable wire ranges per table, inclusive.
    regions: Vec<(Table, u32, u32)>,
    forbidden: Vec<(Table, u32, u32)>,
    model: String,
    /// Vendor and model, for errors.
    profile: String,
    /// True once every block that plays its recordings once has finished (and none
    /// loops a recording): [`Simulator::wait_finished`] waits on it.
    finished: watch::Sender<bool>,
}

struct SimScalar {
    table: Table,
    start: u32,
    width: u32,
    data_type: DataType,
    order: WordOrder,
    bit: Option<u8>,
    scale: f64,
    offset: f64,
    lo: f64,
    hi: f64,
    period_s: f64,
}

struct SimBlock {
    /// The channel the block feeds, to pick its recordings and name it in logs.
    channel: String,
    table: Table,
    start: u32,
    samples: usize,
    data_type: DataType,
    order: WordOrder,
    scale: f64,
    offset: f64,
    sample_rate_hz: f64,
    play: Mutex<Playback>,
}

struct Playback {
    /// Recordings played in order; the last one loops (unless `once`). Empty and not
    /// `once`: generated signal.
    recordings: Vec<Arc<[f32]>>,
    /// Play the recordings once, in whole blocks, without looping.
    once: bool,
    /// Playing once and no whole block was left: reads of the block answer 0x04.
    finished: bool,
    which: usize,
    pos: usize,
    /// Samples generated so far (phase of the generated signal).
    generated: u64,
    /// The block currently served, encoded.
    current: Vec<u16>,
    served: u64,
}

impl Simulator {
    /// A simulator for `profile`, answering unit `unit` only (`None`: every unit).
    pub fn new(profile: &Profile, unit: Option<u8>) -> Result<Simulator, SimError> {
        let map = profile
            .modbus
            .as_ref()
            .ok_or_else(|| SimError::NoModbusMap {
                vendor: profile.vendor.clone(),
                model: profile.model.clone(),
            })?;
        let base = u32::from(map.addressing == Addressing::OneBased);
        let wire = |a: u16| u32::from(a).saturating_sub(base);
        let scalars: Vec<SimScalar> = map
            .registers
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let ch = profile.channels.get(&r.channel);
                let lo = ch.and_then(|c| c.min).unwrap_or(0.0);
                let hi = ch.and_then(|c| c.max).unwrap_or(lo + 100.0);
                SimScalar {
                    table: r.table,
                    start: wire(r.address),
                    width: u32::from(r.width()),
                    data_type: r.data_type,
                    order: r.order.unwrap_or(map.order),
                    bit: r.bit,
                    scale: r.scale,
                    offset: r.offset,
                    lo,
                    hi,
                    period_s: 60.0 + 7.0 * i as f64,
                }
            })
            .collect();
        let blocks: Vec<SimBlock> = map
            .waveforms
            .iter()
            .map(|w| SimBlock {
                channel: w.channel.clone(),
                table: w.table,
                start: wire(w.address),
                samples: usize::from(w.samples),
                data_type: w.data_type,
                order: w.order.unwrap_or(map.order),
                scale: w.scale,
                offset: w.offset,
                sample_rate_hz: w.sample_rate_hz,
                play: Mutex::new(Playback {
                    recordings: Vec::new(),
                    once: false,
                    finished: false,
                    which: 0,
                    pos: 0,
                    generated: 0,
                    current: Vec::new(),
                    served: 0,
                }),
            })
            .collect();
        let regions = regions(map, &scalars, &blocks);
        let forbidden = map
            .forbidden
            .iter()
            .map(|f| (f.table, wire(f.start), wire(f.end)))
            .collect();
        Ok(Simulator {
            state: Arc::new(State {
                unit,
                silent: AtomicBool::new(false),
                steady: AtomicBool::new(false),
                requests: AtomicU64::new(0),
                requests_by_unit: std::array::from_fn(|_| AtomicU64::new(0)),
                connections_total: AtomicU64::new(0),
                connections_open: AtomicU64::new(0),
                started: std::time::Instant::now(),
                scalars,
                blocks,
                regions,
                forbidden,
                model: format!("SIM {}", profile.model),
                profile: format!("{} {}", profile.vendor, profile.model),
                finished: watch::Sender::new(false),
            }),
        })
    }

    /// Plays `recordings` (samples in the channel's unit, e.g. g) one after the other
    /// through every waveform block, looping the last one; restarts at the first.
    /// An empty list switches back to the generated signal.
    pub fn set_recordings(&self, recordings: Vec<Vec<f32>>) {
        let recs = shared(recordings);
        for b in &self.state.blocks {
            if let Ok(mut p) = b.play.lock() {
                p.recordings = recs.clone();
                p.once = false;
                p.finished = false;
                p.which = 0;
                p.pos = 0;
            }
        }
        self.state.update_finished();
    }

    /// Replays one recording from now on, looping.
    pub fn set_waveform(&self, samples: Vec<f32>) {
        self.set_recordings(vec![samples]);
    }

    /// Plays `recordings` one after the other in the waveform block of `channel`
    /// only, from its first sample on the next read. Looping the last one, or with
    /// `play_once`, each exactly once in whole blocks (a trailing partial block is
    /// never served): the read that would go past the last whole block, and every
    /// read of the block after it, answers exception 0x04 (server device failure).
    /// Without `play_once`, an empty list switches back to the generated signal.
    pub fn set_recordings_for(
        &self,
        channel: &str,
        recordings: Vec<Vec<f32>>,
        play_once: bool,
    ) -> Result<(), SimError> {
        let mut blocks = self.blocks_of(channel).peekable();
        if blocks.peek().is_none() {
            return Err(SimError::NotAWaveformChannel {
                channel: channel.to_string(),
                profile: self.state.profile.clone(),
                waveform_channels: self.waveform_channels(),
            });
        }
        let recs = shared(recordings);
        for b in blocks {
            if let Ok(mut p) = b.play.lock() {
                p.recordings = recs.clone();
                p.once = play_once;
                p.finished = false;
                p.which = 0;
                p.pos = 0;
                // The next read starts a block, wherever it starts.
                p.current.clear();
            }
        }
        self.state.update_finished();
        Ok(())
    }

    /// One recording for the waveform block of `channel`: looped, or with
    /// `play_once` played once (see [`Simulator::set_recordings_for`]).
    pub fn set_waveform_for(
        &self,
        channel: &str,
        samples: Vec<f32>,
        play_once: bool,
    ) -> Result<(), SimError> {
        self.set_recordings_for(channel, vec![samples], play_once)
    }

    /// The profile's waveform channels, in profile order.
    pub fn waveform_channels(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for b in &self.state.blocks {
            if !out.contains(&b.channel) {
                out.push(b.channel.clone());
            }
        }
        out
    }

    /// True when at least one waveform channel plays its recordings once, every such
    /// channel has played its last whole block (and been read past it), and no
    /// channel loops a recording. Channels on the generated signal do not count.
    pub fn finished(&self) -> bool {
        self.state.all_played()
    }

    /// Waits until [`Simulator::finished`] is true.
    pub async fn wait_finished(&self) {
        let mut rx = self.state.finished.subscribe();
        // The sender lives in `state`, which `self` keeps alive: no error possible.
        let _ = rx.wait_for(|done| *done).await;
    }

    fn blocks_of<'a>(&'a self, channel: &'a str) -> impl Iterator<Item = &'a SimBlock> + 'a {
        self.state
            .blocks
            .iter()
            .filter(move |b| b.channel == channel)
    }

    /// While on, no request gets an answer (a hung device).
    pub fn set_silent(&self, silent: bool) {
        self.state.silent.store(silent, Ordering::Relaxed);
    }

    /// While on, scalar registers hold mid-range with noise of +-0.2 % of their range
    /// (bools read 0) instead of sweeping +-30 % of the range once a minute: a
    /// healthy machine in steady state, for detection tests that learn for seconds.
    pub fn set_steady(&self, steady: bool) {
        self.state.steady.store(steady, Ordering::Relaxed);
    }

    /// Requests received (answered or not).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Requests received for one unit id (answered or not).
    pub fn requests_for_unit(&self, unit: u8) -> u64 {
        self.state.requests_by_unit[usize::from(unit)].load(Ordering::Relaxed)
    }

    /// Waveform blocks served so far (reads of a block's first register).
    pub fn blocks_served(&self) -> u64 {
        self.state
            .blocks
            .iter()
            .filter_map(|b| b.play.lock().ok().map(|p| p.served))
            .sum()
    }

    /// Waveform blocks of `channel` served so far; `None` if it is not a waveform
    /// channel of the profile.
    pub fn blocks_served_for(&self, channel: &str) -> Option<u64> {
        let mut blocks = self.blocks_of(channel).peekable();
        blocks.peek()?;
        Some(
            blocks
                .filter_map(|b| b.play.lock().ok().map(|p| p.served))
                .sum(),
        )
    }

    /// TCP connections accepted since start.
    pub fn connections_total(&self) -> u64 {
        self.state.connections_total.load(Ordering::Relaxed)
    }

    /// TCP connections open now.
    pub fn connections_open(&self) -> u64 {
        self.state.connections_open.load(Ordering::Relaxed)
    }
}

impl SimScalar {
    fn current(&self, t: f64, model: &str, steady: bool) -> Vec<u16> {
        let phase = if steady {
            // Uniform noise of +-0.2 % of the range around the middle (0.3 * 0.0067).
            0.0067 * (2.0 * fastrand::f64() - 1.0)
        } else {
            (2.0 * std::f64::consts::PI * t / self.period_s).sin()
        };
        match self.data_type {
            DataType::String => codec::encode_string(model, self.width as usize),
            DataType::Bool => {
                let on = !steady && phase > 0.0;
                match self.bit {
                    Some(b) if b < 16 => vec![u16::from(on) << b],
                    _ => vec![u16::from(on)],
                }
            }
            ty => {
                // Inside the range, with a margin, so range checks downstream pass.
                let mid = (self.lo + self.hi) / 2.0;
                let v = mid + 0.3 * (self.hi - self.lo) * phase;
                codec::encode((v - self.offset) / self.scale, ty, self.order)
            }
        }
    }
}

impl Playback {
    /// Recorded samples not yet served (all recordings, played once).
    fn remaining(&self) -> usize {
        self.recordings
            .iter()
            .skip(self.which)
            .map(|r| r.len())
            .sum::<usize>()
            .saturating_sub(self.pos)
    }
}

impl SimBlock {
    /// Moves to the next block of samples and encodes it. False, and nothing
    /// changed, when playing once and no whole block is left.
    fn advance(&self, p: &mut Playback) -> bool {
        if p.once && p.remaining() < self.samples {
            return false;
        }
        let mut samples = Vec::with_capacity(self.samples);
        while samples.len() < self.samples {
            if p.recordings.is_empty() {
                // 3 sines (shaft, a bearing tone, a harmonic) plus noise, in g.
                let t = p.generated as f64 / self.sample_rate_hz;
                let tau = 2.0 * std::f64::consts::PI;
                let v = 0.5 * (tau * 25.0 * t).sin()
                    + 0.2 * (tau * 157.0 * t).sin()
                    + 0.05 * (tau * 1200.0 * t).sin()
                    + 0.05 * (fastrand::f64() - 0.5);
                samples.push(v);
                p.generated += 1;
                continue;
            }
            let rec = p.recordings[p.which.min(p.recordings.len() - 1)].clone();
            if p.pos >= rec.len() {
                p.pos = 0;
                if p.which + 1 < p.recordings.len() {
                    p.which += 1;
                }
                // Played once: `remaining()` said a whole block is left, so the
                // last recording is never rewound here.
                continue;
            }
            let take = (self.samples - samples.len()).min(rec.len() - p.pos);
            samples.extend(rec[p.pos..p.pos + take].iter().map(|x| f64::from(*x)));
            p.pos += take;
        }
        p.current.clear();
        for s in samples {
            p.current.extend(codec::encode(
                (s - self.offset) / self.scale,
                self.data_type,
                self.order,
            ));
        }
        p.served += 1;
        true
    }
}

/// Recordings as shared slices, empty ones dropped (nothing to play, and an empty
/// looped recording would never fill a block).
fn shared(recordings: Vec<Vec<f32>>) -> Vec<Arc<[f32]>> {
    recordings
        .into_iter()
        .filter(|r| !r.is_empty())
        .map(Arc::from)
        .collect()
}

/// Readable ranges: every mapped value, with the gaps between values of one table
/// bridged when at most `max_gap` wide (a real device answers those with zeros).
fn regions(map: &ModbusMap, scalars: &[SimScalar], blocks: &[SimBlock]) -> Vec<(Table, u32, u32)> {
    let mut spans: Vec<(Table, u32, u32)> = scalars
        .iter()
        .map(|s| (s.table, s.start, s.start + s.width - 1))
        .chain(blocks.iter().map(|b| {
            let sw = b.data_type.registers().unwrap_or(1) as u32;
            (b.table, b.start, b.start + b.samples as u32 * sw - 1)
        }))
        .collect();
    spans.sort();
    let gap = u32::from(map.max_gap);
    let mut out: Vec<(Table, u32, u32)> = Vec::new();
    for s in spans {
        match out.last_mut() {
            Some(last) if last.0 == s.0 && s.1 <= last.2 + 1 + gap => last.2 = last.2.max(s.2),
            _ => out.push(s),
        }
    }
    out
}

/// Reads a raw little-endian f32 recording (`--data FILE.f32`).
pub fn read_f32_file(path: &std::path::Path) -> std::io::Result<Vec<f32>> {
    let bytes = std::fs::read(path)?;
    if bytes.len() % 4 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{}: {} bytes is not a whole number of little-endian f32 samples",
                path.display(),
                bytes.len()
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests;
