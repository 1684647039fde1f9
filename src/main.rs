//! The `sting-proxy` binary: command-line parsing and logging set-up, then hands over to the
//! library. `anyhow` lives here only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sting_proxy::config::Config;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Reverse-proxy sidecar for Flask apps: Flask-Session and Kratos identity, session analytics.
///
/// Configuration comes from a TOML file (--config) overridden by environment variables; see the
/// README for every key. Secrets are read from the file or the environment, never from flags.
#[derive(Parser)]
#[command(name = "sting-proxy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file (also for `serve` when no subcommand is given).
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default command).
    Serve {
        /// Take over the listening sockets of a running instance (zero-downtime upgrade).
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate the configuration, then check Redis and Kratos and advise on their settings.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sting-proxy: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve { upgrade: false }) {
        Command::Serve { upgrade } => sting_proxy::server::run(cfg, upgrade),
        Command::Check => sting_proxy::check::run(&cfg).map(|ok| {
            if !ok {
                std::process::exit(1);
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sting-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; `RUST_LOG` picks the level (default `info`), `STING_LOG_FORMAT=json`
/// switches to one JSON object per line.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("STING_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
