//! Technician tools: `edgegw modbus read` (one read, raw registers in hex and the
//! decoded values, optionally under all four word orders side by side) and
//! `edgegw simulate modbus` (serve a profile over TCP from this laptop, replaying
//! recordings per waveform channel, looped or once).
//!
//! The argument structs derive `clap::Args` so the binary flattens them into its
//! CLI; the functions print to the writer they are given and return errors with the
//! target in the message. They never read the gateway config.

use super::codec::{self, Decoded};
use super::poll::{timed_read, Answer};
use super::sim::{read_f32_file, Simulator};
use crate::config::{FlowControl, Parity, SerialPortConfig};
use crate::profiles::{DataType, Table, WordOrder};
use anyhow::{anyhow, bail, Context as _};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `edgegw modbus read`: read registers or bits once and show them decoded.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["tcp", "rtu"])))]
pub struct ReadArgs {
    /// Modbus TCP device or gateway.
    #[arg(long, value_name = "HOST:PORT")]
    pub tcp: Option<String>,
    /// Serial port of a Modbus RTU bus, e.g. /dev/ttyUSB0.
    #[arg(long, value_name = "DEVICE")]
    pub rtu: Option<PathBuf>,
    /// RTU: baud rate.
    #[arg(long, default_value_t = 9600)]
    pub baud: u32,
    /// RTU: parity, N (none), E (even) or O (odd).
    #[arg(long, value_enum, default_value = "N", ignore_case = true)]
    pub parity: ParityArg,
    /// RTU: stop bits, 1 or 2.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub stop_bits: u8,
    /// Unit id (slave address).
    #[arg(long, default_value_t = 1)]
    pub unit: u8,
    /// Register table.
    #[arg(long, value_enum)]
    pub table: TableArg,
    /// First address, as sent on the wire (0-based).
    #[arg(long)]
    pub address: u16,
    /// Registers (or bits) to read: 1..125 registers, 1..2000 bits.
    #[arg(long, default_value_t = 1)]
    pub count: u16,
    /// Decode the registers as this type.
    #[arg(long = "type", value_enum, default_value = "u16")]
    pub data_type: TypeArg,
    /// Byte/word order of multi-register values, or `all` to show the four side by
    /// side.
    #[arg(long, value_enum, default_value = "ABCD", ignore_case = true)]
    pub order: OrderArg,
    /// Time allowed for the answer.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ParityArg {
    N,
    E,
    O,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TableArg {
    Holding,
    Input,
    Coil,
    Discrete,
}

impl From<TableArg> for Table {
    fn from(t: TableArg) -> Table {
        match t {
            TableArg::Holding => Table::Holding,
            TableArg::Input => Table::Input,
            TableArg::Coil => Table::Coil,
            TableArg::Discrete => Table::Discrete,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TypeArg {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    Bool,
    String,
}

impl From<TypeArg> for DataType {
    fn from(t: TypeArg) -> DataType {
        match t {
            TypeArg::U16 => DataType::U16,
            TypeArg::I16 => DataType::I16,
            TypeArg::U32 => DataType::U32,
            TypeArg::I32 => DataType::I32,
            TypeArg::U64 => DataType::U64,
            TypeArg::I64 => DataType::I64,
            TypeArg::F32 => DataType::F32,
            TypeArg::F64 => DataType::F64,
            TypeArg::Bool => DataType::Bool,
            TypeArg::String => DataType::String,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OrderArg {
    #[value(name = "ABCD")]
    Abcd,
    #[value(name = "BADC")]
    Badc,
    #[value(name = "CDAB")]
    Cdab,
    #[value(name = "DCBA")]
    Dcba,
    #[value(name = "all")]
    All,
}

impl OrderArg {
    fn orders(self) -> Vec<WordOrder> {
        match self {
            OrderArg::Abcd => vec![WordOrder::ABCD],
            OrderArg::Badc => vec![WordOrder::BADC],
            OrderArg::Cdab => vec![WordOrder::CDAB],
            OrderArg::Dcba => vec![WordOrder::DCBA],
            OrderArg::All => WordOrder::ALL.to_vec(),
        }
    }
}

/// Runs `edgegw modbus read`, printing to `out`. A Modbus exception is an error
/// (exit code non-zero) whose message names the code.
pub async fn read_command(args: ReadArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let table = Table::from(args.table);
    let limit = if table.is_bits() { 2000 } else { 125 };
    if args.count == 0 || args.count > limit {
        bail!(
            "--count {} is not possible: a {} read carries 1 to {limit}",
            args.count,
            table.as_str()
        );
    }
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let (target, mut ctx) = match (&args.tcp, &args.rtu) {
        (Some(hostport), _) => {
            let ctx = super::tcp::connect(hostport, args.unit, timeout)
                .await
                .with_context(|| format!("cannot connect to Modbus TCP {hostport}"))?;
            (format!("tcp {hostport}"), ctx)
        }
        (None, Some(path)) => {
            let port = SerialPortConfig {
                path: path.clone(),
                baud: args.baud,
                data_bits: 8,
                parity: match args.parity {
                    ParityArg::N => Parity::None,
                    ParityArg::E => Parity::Even,
                    ParityArg::O => Parity::Odd,
                },
                stop_bits: args.stop_bits,
                flow_control: FlowControl::None,
                inter_frame_delay_ms: None,
                min_request_pause_ms: None,
            };
            let mut ctx = super::rtu::open(&port)
                .with_context(|| format!("cannot open serial port {}", path.display()))?;
            tokio_modbus::prelude::SlaveContext::set_slave(
                &mut ctx,
                tokio_modbus::Slave(args.unit),
            );
            (format!("rtu {} {} baud", path.display(), args.baud), ctx)
        }
        (None, None) => bail!("give --tcp HOST:PORT or --rtu DEVICE"),
    };
    let started = std::time::Instant::now();
    let answer = timed_read(&mut ctx, table, args.address, args.count, timeout)
        .await
        .with_context(|| {
            format!(
                "{target} unit {}: {} {}..{}",
                args.unit,
                table.as_str(),
                args.address,
                u32::from(args.address) + u32::from(args.count) - 1
            )
        })?
        .map_err(|code| {
            anyhow!(
                "{target} unit {} answered {} {}..{} with Modbus exception {} ({code:?})",
                args.unit,
                table.as_str(),
                args.address,
                u32::from(args.address) + u32::from(args.count) - 1,
                u8::from(code)
            )
        })?;
    let elapsed = started.elapsed();
    writeln!(
        out,
        "{target} unit {}: {} {}..{} ({} {}) answered in {:.1} ms",
        args.unit,
        table.as_str(),
        args.address,
        u32::from(args.address) + u32::from(args.count) - 1,
        args.count,
        if table.is_bits() { "bits" } else { "registers" },
        elapsed.as_secs_f64() * 1000.0
    )?;
    write_answer(&args, &answer, out)
}

/// Prints the raw answer and its decoding (separate from the I/O for tests).
pub fn write_answer(args: &ReadArgs, answer: &Answer, out: &mut impl Write) -> anyhow::Result<()> {
    let words = match answer {
        Answer::Bits(bits) => {
            writeln!(out, "{:>8}  bit", "address")?;
            for (i, b) in bits.iter().enumerate() {
                writeln!(
                    out,
                    "{:>8}  {}",
                    u32::from(args.address) + i as u32,
                    u8::from(*b)
                )?;
            }
            return Ok(());
        }
        Answer::Words(w) => w,
    };
    writeln!(
        out,
        "{:>8}  {:>6}  {:>8}  {:>8}",
        "address", "hex", "unsigned", "signed"
    )?;
    for (i, w) in words.iter().enumerate() {
        writeln!(
            out,
            "{:>8}  0x{:04X}  {:>8}  {:>8}",
            u32::from(args.address) + i as u32,
            w,
            w,
            *w as i16
        )?;
    }
    let ty = DataType::from(args.data_type);
    let orders = args.order.orders();
    if ty == DataType::String {
        writeln!(out, "string: {:?}", codec::decode_string(words))?;
        return Ok(());
    }
    let width = usize::from(ty.registers().unwrap_or(1));
    write!(
        out,
        "{} ({}):\n{:>8}",
        ty.as_str(),
        if width == 1 {
            "order has no effect".to_string()
        } else {
            format!("{width} registers each")
        },
        "address"
    )?;
    for o in &orders {
        write!(out, "  {:>24}", o.as_str())?;
    }
    writeln!(out)?;
    for (i, chunk) in words.chunks_exact(width).enumerate() {
        write!(out, "{:>8}", u32::from(args.address) + (i * width) as u32)?;
        for o in &orders {
            let v = codec::decode(chunk, ty, *o, None)
                .map(|d| format_value(&d, ty))
                .unwrap_or_else(|e| e.to_string());
            write!(out, "  {v:>24}")?;
        }
        writeln!(out)?;
    }
    let rest = words.len() % width;
    if rest != 0 {
        writeln!(
            out,
            "(the last {rest} register{} do not make a whole {})",
            if rest == 1 { "" } else { "s" },
            ty.as_str()
        )?;
    }
    Ok(())
}

fn format_value(d: &Decoded, ty: DataType) -> String {
    match d {
        Decoded::Bool(b) => u8::from(*b).to_string(),
        Decoded::Text(t) => format!("{t:?}"),
        // f32 printed as f32 (shortest form that round-trips: 123.456, not
        // 123.45600128173828).
        Decoded::Number(v) if ty == DataType::F32 => format!("{}", *v as f32),
        Decoded::Number(v) => format!("{v}"),
    }
}

/// `edgegw simulate modbus`: serve a hardware profile over Modbus TCP.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on (port 0 picks a free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:5020")]
    pub listen: SocketAddr,
    /// Serve Modbus RTU on this serial port instead of TCP (one end of a socat pty
    /// pair in tests, a USB RS-485 adapter on a bench).
    #[arg(long, value_name = "DEVICE")]
    pub rtu: Option<PathBuf>,
    /// RTU: baud rate (8 data bits, no parity, 1 stop bit).
    #[arg(long, default_value_t = 19200)]
    pub rtu_baud: u32,
    /// Hardware profile to serve.
    #[arg(long, value_name = "FILE")]
    pub profile: PathBuf,
    /// Waveform recording to replay: raw little-endian f32 samples (in the
    /// channel's unit). `CHANNEL=FILE` feeds one waveform channel of the profile;
    /// a bare `FILE` feeds every waveform channel not given its own. Repeatable:
    /// several files for one channel play one after the other, the last one looping
    /// (see --play-once). A path with `=` in its file name: write it with a
    /// directory, e.g. `./a=b.f32`. Default: a generated sine plus noise.
    #[arg(long, value_name = "[CHANNEL=]FILE.f32", value_parser = parse_data)]
    pub data: Vec<DataArg>,
    /// Play each channel's recordings exactly once, from the first sample, in
    /// blocks of the waveform block's size, without looping; a trailing partial
    /// block is not served. Once a channel is past its last whole block, reads of
    /// its block answer Modbus exception 0x04 (server device failure). When every
    /// channel with data is over, `finished` is printed on a line of its own; the
    /// simulator keeps serving the other registers until stopped.
    #[arg(long, requires = "data")]
    pub play_once: bool,
    /// Scalar registers hold a steady mid-range value with noise of +-0.2 % of the
    /// channel's range (flags read 0), instead of the default slow sine over +-30 %
    /// of the range: a healthy machine in steady state, for detection that learns
    /// for seconds.
    #[arg(long)]
    pub steady: bool,
    /// Answer this unit id only (others get no answer, like an absent slave).
    /// Default: answer every unit id.
    #[arg(long)]
    pub unit: Option<u8>,
}

/// One `--data` value: a recording for one waveform channel, or (no channel) for
/// every waveform channel without its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataArg {
    pub channel: Option<String>,
    pub path: PathBuf,
}

/// `CHANNEL=PATH` when the text before the first `=` can be a channel name (letters,
/// digits, `_`, `-`, `.`, as profiles allow), else a bare path.
fn parse_data(text: &str) -> Result<DataArg, String> {
    let named = text.split_once('=').filter(|(ch, _)| {
        !ch.is_empty()
            && ch
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    });
    let (channel, path) = match named {
        Some((ch, path)) => (Some(ch.to_string()), path),
        None => (None, text),
    };
    if path.is_empty() {
        return Err(format!("{text:?} names no file: give CHANNEL=FILE or FILE"));
    }
    Ok(DataArg {
        channel,
        path: PathBuf::from(path),
    })
}

/// The recordings of each waveform channel given on the command line, in profile
/// order, files in command-line order. Errors name the file or the valid channels.
fn recordings_by_channel(
    data: &[DataArg],
    sim: &Simulator,
    profile: &std::path::Path,
) -> anyhow::Result<Vec<(String, Vec<PathBuf>)>> {
    let channels = sim.waveform_channels();
    for d in data {
        if let Some(ch) = &d.channel {
            if !channels.contains(ch) {
                bail!(
                    "--data {ch}={}: {ch:?} is not a waveform channel of {}; {}",
                    d.path.display(),
                    profile.display(),
                    if channels.is_empty() {
                        "the profile has no waveform channels".to_string()
                    } else {
                        format!("its waveform channels: {}", channels.join(", "))
                    }
                );
            }
        }
    }
    let bare: Vec<PathBuf> = data
        .iter()
        .filter(|d| d.channel.is_none())
        .map(|d| d.path.clone())
        .collect();
    if !bare.is_empty() && channels.is_empty() {
        tracing::warn!(
            profile = %profile.display(),
            "The profile has no waveform channels; --data is not played."
        );
    }
    Ok(channels
        .into_iter()
        .filter_map(|ch| {
            let own: Vec<PathBuf> = data
                .iter()
                .filter(|d| d.channel.as_deref() == Some(ch.as_str()))
                .map(|d| d.path.clone())
                .collect();
            let files = if own.is_empty() { bare.clone() } else { own };
            (!files.is_empty()).then_some((ch, files))
        })
        .collect())
}

/// Runs the simulator until `cancel` fires; prints the address it listens on and,
/// with `--play-once`, `finished` when every recording has been played.
pub async fn simulate_command(args: SimulateArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut diags = Vec::new();
    let loaded = crate::profiles::load_profile(&args.profile, &mut diags);
    let Some(loaded) = loaded else {
        let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        bail!(
            "{}: invalid profile:\n{}",
            args.profile.display(),
            text.join("\n")
        );
    };
    let sim = Simulator::new(&loaded.profile, args.unit)
        .with_context(|| format!("{}", args.profile.display()))?;
    sim.set_steady(args.steady);
    for (channel, files) in recordings_by_channel(&args.data, &sim, &args.profile)? {
        let mut recordings = Vec::with_capacity(files.len());
        for path in &files {
            recordings.push(
                read_f32_file(path)
                    .with_context(|| format!("cannot read recording {}", path.display()))?,
            );
        }
        let samples: usize = recordings.iter().map(Vec::len).sum();
        tracing::info!(
            channel = %channel,
            files = files.len(),
            samples,
            play_once = args.play_once,
            "Replaying recordings."
        );
        sim.set_recordings_for(&channel, recordings, args.play_once)?;
    }
    let (addr, handle) = match &args.rtu {
        None => {
            let (addr, handle) = sim
                .bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            (addr.to_string(), handle)
        }
        Some(path) => {
            let port = tokio_serial::SerialStream::open(&tokio_serial::new(
                path.to_string_lossy(),
                args.rtu_baud,
            ))
            .with_context(|| format!("cannot open serial port {}", path.display()))?;
            let rtu = sim.clone();
            let handle = tokio::spawn(async move {
                if let Err(e) = rtu.serve_rtu(port).await {
                    tracing::error!("RTU simulator stopped: {e}");
                }
            });
            (
                format!("{} (RTU, {} baud)", path.display(), args.rtu_baud),
                handle,
            )
        }
    };
    println!(
        "Simulating {} {} ({}) on {addr}",
        loaded.profile.vendor,
        loaded.profile.model,
        args.profile.display()
    );
    std::io::stdout().flush()?;
    if args.play_once {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = sim.wait_finished() => {
                tracing::info!("Every recording has been played once.");
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "finished")?;
                stdout.flush()?;
            }
        }
    }
    cancel.cancelled().await;
    handle.abort();
    Ok(())
}
