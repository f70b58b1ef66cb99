//! The `edgegw` command: CLI parsing, tracing set-up, exit codes. Nothing else; the
//! logic lives in the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use edgegw::config::{self, LogFormat};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// directory; print every problem. Exit 0 when valid, 2 when not.
    Check {
        #[arg(long, env = "EDGEGW_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Hardware profile tools.
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
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
enum ProfileCommand {
    /// Validate hardware profile files. Exit 0 when all are valid, 2 when not.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            let report = config::check_all(&config);
            print_diags(&report.diags);
            let errors = report.errors();
            if errors == 0 {
                println!(
                    "{}: OK ({} file{} checked)",
                    config.display(),
                    report.files.len(),
                    if report.files.len() == 1 { "" } else { "s" }
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
        Command::Profile {
            command: ProfileCommand::Check { files },
        } => {
            let mut diags = Vec::new();
            for f in &files {
                edgegw::profiles::load_profile(f, &mut diags);
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
            for d in &loaded.diags {
                if d.is_error() {
                    tracing::error!("{d}");
                } else {
                    tracing::warn!("{d}");
                }
            }
            exit_with(run_async(edgegw::app::run(loaded)))
        }
        Command::Demo { seconds } => {
            init_tracing(cli.log_format.unwrap_or(LogFormat::Human), "warn");
            exit_with(run_async(edgegw::demo::run(seconds)))
        }
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
            tracing::error!("{e:#}");
            eprintln!("edgegw: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_diags(diags: &[edgegw::diag::Diagnostic]) {
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
