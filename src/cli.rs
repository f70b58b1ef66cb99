//! The `edgegw` command: CLI parsing, tracing set-up, exit codes. Nothing else; the
//! logic lives in the rest of the library. It is in the library, not in `main.rs`,
//! so that its code is compiled once, in the library's parallel codegen units. As a
//! binary crate of its own it was a serial step of 30–50 s at the end of every
//! release build (most likely the async state machines it drives, compiled again);
//! moved here, that step takes ~2 s and the library's own took no longer
//! (docs/PERFORMANCE.md, "Build time on an idle machine").

use crate::config::{self, LogFormat};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// `check`: the gateway starts, but bad profiles or device entries leave devices out.
const EXIT_DEVICES_LEFT_OUT: u8 = 1;
/// Exit code for an invalid config or profile (`check`, and `run` refusing to start).
const EXIT_INVALID: u8 = 2;

#[derive(Parser)]
#[command(
    name = "edgegw",
    version,
    about = "Edge gateway for industrial vibration and temperature sensors"
)]
struct Cli {
    /// Log format: auto (human; colours only on a terminal), human or json.
    #[arg(long, global = true, value_enum, env = "EDGEGW_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway daemon.
    Run {
        /// Gateway config file.
        #[arg(long, env = "EDGEGW_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validate the config, the profiles it uses and every profile in the profile
    /// directory; print every problem. Exit 0 when all is valid; 1 when the gateway
    /// would start but a bad profile or device entry leaves devices out (listed) or a
    /// profile no device uses has errors; 2 when `run` would refuse the config.
    Check {
        #[arg(long, env = "EDGEGW_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Exit non-zero only when `run` would refuse to start (what the systemd unit's
        /// ExecStartPre uses): a technician's typo in one profile must not keep the
        /// other devices from running.
        #[arg(long)]
        startup: bool,
        /// Also show, per Modbus device, the read requests the planner will send.
        #[arg(long)]
        explain: bool,
    },
    /// Hardware profile tools.
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
    /// Inspect or repair the outbox of a (running or stopped) gateway.
    Outbox {
        /// Gateway config (to find the outbox file).
        #[arg(long, env = "EDGEGW_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The outbox file itself, instead of the one the config names.
        #[arg(long)]
        path: Option<PathBuf>,
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Model bundles: what is cached and active, and syncing from S3.
    Models {
        #[arg(long, global = true, env = "EDGEGW_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Upstream tools: create the cloud-compatible schema, check every upstream.
    Upstream {
        #[arg(long, global = true, env = "EDGEGW_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        #[command(subcommand)]
        command: UpstreamCommand,
    },
    /// Modbus technician tools.
    Modbus {
        #[command(subcommand)]
        command: ModbusCommand,
    },
    /// Simulated devices for tests, demos and benchmarks.
    Simulate {
        #[command(subcommand)]
        command: SimulateCommand,
    },
    /// Feed a recording through the real pipeline offline, at full speed: print the
    /// alert timeline, optionally a CSV of every window's features and score.
    Replay(Box<crate::replay::ReplayArgs>),
    /// Commissioning baselines: what each channel learned, and starting over after
    /// maintenance.
    Baseline {
        #[arg(long, global = true, env = "EDGEGW_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The outbox file itself, instead of the one the config names.
        #[arg(long, global = true)]
        path: Option<PathBuf>,
        #[command(subcommand)]
        command: BaselineCommand,
    },
    /// Run the whole pipeline on embedded defaults: a simulated Modbus vibration
    /// sensor replaying a real bearing recording that turns faulty.
    Demo {
        /// How long to run.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Depth per kind and per upstream, bytes, oldest record, evictions, dead letters.
    Stats,
    /// Records as JSON lines (id, key, kind, created, payload), oldest first.
    Dump {
        /// Only this kind: reading, window, alert or summary.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// List dead-lettered records; `--requeue ID...` puts them back in the queue.
    DeadLetters {
        #[arg(long, num_args = 1..)]
        requeue: Vec<i64>,
    },
}

#[derive(Subcommand)]
enum BaselineCommand {
    /// Each channel's learning progress, or the baseline it learned.
    Status,
    /// Start a new learning period for DEVICE or DEVICE.CHANNEL (after maintenance,
    /// a bearing change or a new operating point). Works while the gateway runs.
    Reset { selector: String },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Sync once from the configured bucket into the cache; print what changed.
    /// A running daemon picks the new bundles up at its next sync.
    Sync,
    /// What is cached, what is active, and why each device channel uses its bundle.
    List,
    /// Check a bundle folder (manifest.json and model.onnx) as a sync would before
    /// caching it: checksum, operators, tract load, input shape, the example. Exit 1
    /// with the reason if a gateway would refuse it. Needs no config.
    Check {
        /// The bundle's folder.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum UpstreamCommand {
    /// Create the missing tables (sensors, sensor_readings, anomaly_alerts,
    /// sensor_readings_hourly) in the TimescaleDB upstream; never drops or alters.
    InitSchema,
    /// Check every configured upstream: database schema (tables, columns, keys),
    /// Redis, MQTT broker. Exit 0 when usable, 2 when not.
    Check,
}

#[derive(Subcommand)]
enum ModbusCommand {
    /// Read registers or bits once; print them raw (hex) and decoded.
    Read(crate::sources::modbus::ReadArgs),
}

#[derive(Subcommand)]
enum SimulateCommand {
    /// Serve a hardware profile's registers over Modbus TCP.
    Modbus(crate::sources::modbus::SimulateArgs),
}

#[derive(Subcommand)]
enum ProfileCommand {
    /// Validate hardware profile files. Exit 0 when all are valid, 2 when not.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `edgegw generate man|completions DIR`: for packaging (scripts/package-deb), not
/// part of the documented CLI. A parser of its own, so that the man pages and
/// completions made from `Cli` do not list it.
#[derive(Parser)]
#[command(name = "edgegw")]
enum Hidden {
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
}

#[derive(Subcommand)]
enum Generate {
    /// Man pages: edgegw.1 and one per subcommand (edgegw-run.1, edgegw-outbox-stats.1, ...).
    Man { dir: PathBuf },
    /// Shell completions: edgegw.bash, _edgegw (zsh) and edgegw.fish.
    Completions { dir: PathBuf },
}

fn generate(what: Generate) -> anyhow::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let (Generate::Man { dir } | Generate::Completions { dir }) = &what;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    match what {
        Generate::Man { dir } => clap_mangen::generate_to(Cli::command(), &dir)
            .with_context(|| format!("cannot write man pages to {}", dir.display()))?,
        Generate::Completions { dir } => {
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                clap_complete::generate_to(shell, &mut Cli::command(), "edgegw", &dir)
                    .with_context(|| {
                        format!("cannot write {shell} completions to {}", dir.display())
                    })?;
            }
        }
    }
    Ok(())
}

pub fn main() -> ExitCode {
    log_panics();
    if std::env::args_os().nth(1).is_some_and(|a| a == "generate") {
        let Hidden::Generate { what } = Hidden::parse();
        return exit_with(generate(what));
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            config,
            explain,
            startup,
        } => {
            let report = config::check_all(&config);
            print_diags(&report.diags);
            if explain {
                if let Ok(loaded) = config::load(&config) {
                    print!("{}", crate::sources::modbus::explain::plans(&loaded));
                }
            }
            let errors = report.errors();
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            if errors == 0 {
                println!(
                    "{}: OK ({} file{} checked)",
                    config.display(),
                    report.files.len(),
                    plural(report.files.len())
                );
                return ExitCode::SUCCESS;
            }
            eprintln!("{errors} problem{} found", plural(errors));
            if !report.startable {
                eprintln!(
                    "the gateway would not start: {} itself has errors",
                    config.display()
                );
                return ExitCode::from(EXIT_INVALID);
            }
            if report.left_out.is_empty() {
                eprintln!("the gateway would start with every device (the errors are in profiles no device uses)");
            } else {
                eprintln!(
                    "the gateway would start without {} device{}: {}",
                    report.left_out.len(),
                    plural(report.left_out.len()),
                    report.left_out.join(", ")
                );
            }
            if startup {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_DEVICES_LEFT_OUT)
            }
        }
        Command::Profile {
            command: ProfileCommand::Check { files },
        } => {
            let mut diags = Vec::new();
            for f in &files {
                crate::profiles::load_profile(f, &mut diags);
            }
            print_diags(&diags);
            let errors = diags.iter().filter(|d| d.is_error()).count();
            if errors == 0 {
                println!(
                    "{} profile{} OK",
                    files.len(),
                    if files.len() == 1 { "" } else { "s" }
                );
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "{errors} problem{} found",
                    if errors == 1 { "" } else { "s" }
                );
                ExitCode::from(EXIT_INVALID)
            }
        }
        Command::Run { config } => {
            let loaded = match config::load(&config) {
                Ok(l) => l,
                Err(diags) => {
                    init_tracing(cli.log_format.unwrap_or_default(), "info");
                    print_diags(&diags);
                    eprintln!("edgegw: not starting: {} has errors", config.display());
                    return ExitCode::from(EXIT_INVALID);
                }
            };
            let format = cli.log_format.unwrap_or(loaded.config.logging.format);
            init_tracing(format, &loaded.config.logging.level);
            isolate_bundle_checks();
            for d in &loaded.diags {
                if d.is_error() {
                    tracing::error!("{d}");
                } else {
                    tracing::warn!("{d}");
                }
            }
            exit_with(run_async(crate::app::run(loaded)))
        }
        Command::Outbox {
            config,
            path,
            command,
        } => {
            init_tracing(cli.log_format.unwrap_or_default(), "warn");
            exit_with(outbox_command(&config, path, command))
        }
        Command::Models { config, command } => {
            init_tracing(cli.log_format.unwrap_or_default(), "warn");
            exit_with(models_command(&config, command))
        }
        Command::Upstream { config, command } => {
            init_tracing(cli.log_format.unwrap_or_default(), "warn");
            upstream_command(&config, command)
        }
        Command::Modbus {
            command: ModbusCommand::Read(args),
        } => {
            init_tracing(cli.log_format.unwrap_or_default(), "warn");
            exit_with(run_async(async move {
                crate::sources::modbus::read_command(args, &mut std::io::stdout()).await
            }))
        }
        Command::Simulate {
            command: SimulateCommand::Modbus(args),
        } => {
            init_tracing(cli.log_format.unwrap_or_default(), "info");
            exit_with(run_async(async move {
                let cancel = tokio_util::sync::CancellationToken::new();
                let stop = cancel.clone();
                tokio::spawn(async move {
                    crate::app::wait_for_stop_signal().await;
                    stop.cancel();
                });
                crate::sources::modbus::simulate_command(args, cancel).await
            }))
        }
        Command::Replay(args) => {
            init_tracing(cli.log_format.unwrap_or_default(), "warn");
            let loaded = match config::load(&args.config) {
                Ok(l) => l,
                Err(diags) => {
                    print_diags(&diags);
                    eprintln!("edgegw: {} has errors", args.config.display());
                    return ExitCode::from(EXIT_INVALID);
                }
            };
            print_diags(&loaded.diags);
            exit_with(crate::replay::run(&args, &loaded, &mut std::io::stdout()).map(|_| ()))
        }
        Command::Baseline {
            config,
            path,
            command,
        } => {
            init_tracing(cli.log_format.unwrap_or_default(), "warn");
            exit_with(baseline_command(&config, path, command))
        }
        Command::Demo { seconds } => {
            init_tracing(cli.log_format.unwrap_or(LogFormat::Human), "warn");
            exit_with(run_async(crate::demo::run(seconds)))
        }
    }
}

fn outbox_file(config_path: &std::path::Path, path: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match path {
        Some(p) => Ok(p),
        None => {
            let loaded = config::load(config_path).map_err(|diags| {
                print_diags(&diags);
                anyhow::anyhow!(
                    "{} has errors; name the outbox file with --path",
                    config_path.display()
                )
            })?;
            Ok(crate::app::outbox_path(&loaded.config))
        }
    }
}

fn baseline_command(
    config_path: &std::path::Path,
    path: Option<PathBuf>,
    command: BaselineCommand,
) -> anyhow::Result<()> {
    let path = outbox_file(config_path, path)?;
    match command {
        BaselineCommand::Status => print!(
            "{}",
            crate::ops::baseline::status_text(&path, crate::record::now_us())?
        ),
        BaselineCommand::Reset { selector } => {
            print!("{}", crate::ops::baseline::reset(&path, &selector)?)
        }
    }
    Ok(())
}

fn outbox_command(
    config_path: &std::path::Path,
    path: Option<PathBuf>,
    command: OutboxCommand,
) -> anyhow::Result<()> {
    use crate::outbox::{cli_dead_letters, cli_dump, cli_stats};
    let path = outbox_file(config_path, path)?;
    let mut out = std::io::stdout();
    match command {
        OutboxCommand::Stats => print!("{}", cli_stats(&path)?),
        OutboxCommand::Dump { kind, limit } => {
            let kind = match kind.as_deref() {
                None => None,
                Some(k) => Some(
                    crate::record::RecordKind::ALL
                        .into_iter()
                        .find(|x| x.as_str() == k)
                        .with_context(|| {
                            format!("unknown kind {k:?}: use reading, window, alert or summary")
                        })?,
                ),
            };
            cli_dump(&path, kind, limit, &mut out)?;
        }
        OutboxCommand::DeadLetters { requeue } => cli_dead_letters(&path, &requeue, &mut out)?,
    }
    Ok(())
}

fn models_command(config_path: &std::path::Path, command: ModelsCommand) -> anyhow::Result<()> {
    let load = || {
        config::load(config_path).map_err(|diags| {
            print_diags(&diags);
            anyhow::anyhow!("{} has errors", config_path.display())
        })
    };
    match command {
        ModelsCommand::List => {
            isolate_bundle_checks();
            print!("{}", crate::inference::cli::list_text(&load()?))
        }
        ModelsCommand::Sync => {
            isolate_bundle_checks();
            let loaded = load()?;
            let report = run_async_value(crate::inference::cli::sync_command(&loaded.config))?;
            print!("{report}");
        }
        ModelsCommand::Check { dir } => {
            let bundle = crate::inference::bundle::ModelBundle::load_dir(&dir)?;
            let m = bundle.manifest();
            println!(
                "{}: {}@{} loads and reproduces its example ({} features)",
                dir.display(),
                m.name,
                m.version,
                m.features.len()
            );
        }
    }
    Ok(())
}

/// A panic is a bug, and the built binaries abort on one (Cargo.toml: `panic =
/// "abort"`; systemd starts the daemon again). It is logged as an error first, in the
/// log's format (JSON in the journal), with where it happened; then the default
/// message goes to stderr.
fn log_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(
            panic = %info,
            "The gateway panicked (a bug; please report it with this log). The built binary stops here and systemd starts it again; the outbox keeps what was committed"
        );
        default(info);
    }));
}

/// Bundles from S3 or the cache are checked by this executable in a child process
/// before they are loaded here (src/inference/isolate.rs). On Linux through
/// `/proc/self/exe`: the running binary even after a package upgrade replaced the
/// file, and so the same tract as the daemon's.
fn isolate_bundle_checks() {
    let own = std::path::Path::new("/proc/self/exe");
    if own.exists() {
        return crate::inference::isolate::check_bundles_with(own.to_path_buf());
    }
    match std::env::current_exe() {
        Ok(exe) => crate::inference::isolate::check_bundles_with(exe),
        Err(e) => tracing::warn!(
            "cannot find the gateway's own executable ({e}): model bundles are checked in this process"
        ),
    }
}

fn run_async_value<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    f: F,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

fn upstream_command(config_path: &std::path::Path, command: UpstreamCommand) -> ExitCode {
    let loaded = match config::load(config_path) {
        Ok(l) => l,
        Err(diags) => {
            print_diags(&diags);
            eprintln!("edgegw: {} has errors", config_path.display());
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let mut out = std::io::stdout();
    let mut usable = true;
    let r = run_async(async {
        match command {
            UpstreamCommand::InitSchema => {
                crate::upstream::cli::init_schema(&loaded.config, &mut out).await?
            }
            UpstreamCommand::Check => {
                usable = crate::upstream::cli::check(&loaded.config, &mut out).await?
            }
        }
        Ok(())
    });
    match r {
        Ok(()) if !usable => ExitCode::from(EXIT_INVALID),
        other => exit_with(other),
    }
}

fn run_async<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("edgegw")
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

fn exit_with(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = error_text(&e);
            tracing::error!("{text}");
            eprintln!("edgegw: {text}");
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-joined, leaving out a cause whose text the message
/// already holds (many errors quote their source in their own message).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn print_diags(diags: &[crate::diag::Diagnostic]) {
    for d in diags {
        eprintln!("{d}");
    }
}

fn init_tracing(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human | LogFormat::Auto => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}
