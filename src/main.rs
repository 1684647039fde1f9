//! The `sting-proxy` binary: command-line parsing and logging set-up, then hands over to the
//! library. `anyhow` lives here only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sting_proxy::config::Config;
use sting_proxy::ops::commands::{Ops, PeriodArg, RevokeCommand, SessionsCommand, TopWhat};

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
    /// Print JSON (the analytics API's shapes) instead of tables, for scripts.
    #[arg(long, global = true)]
    json: bool,
}

/// A day (or hour), or an inclusive range of them.
#[derive(clap::Args)]
struct When {
    /// YYYY-MM-DD, or YYYY-MM-DDTHH with --period hour (UTC; default now).
    #[arg(long)]
    date: Option<String>,
    /// A range instead of --date (inclusive, same forms, at most analytics.max_range_days days).
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    to: Option<String>,
}

/// A ranking of one period (day or hour) or range: the arguments `top` and `acquisition` share.
#[derive(clap::Args)]
struct Ranking {
    #[arg(long, value_enum, default_value = "day")]
    period: PeriodArg,
    #[command(flatten)]
    when: When,
    #[arg(long, default_value_t = 10)]
    limit: usize,
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
    /// Inspect sessions: `active`, `list [--user U]`, `show SID`.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// A day's numbers, as the `sessions/stats` endpoint gives them.
    Stats {
        #[command(flatten)]
        when: When,
    },
    /// Where sessions came from (referrer domains, UTM source/medium/campaign), as `GET
    /// /api/analytics/acquisition` gives it.
    Acquisition {
        #[command(flatten)]
        ranking: Ranking,
    },
    /// The funnels (without NAME), or one funnel's steps with sessions, users and conversion.
    Funnels {
        name: Option<String>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
    /// Retention cohorts by first-seen week (or day), as `GET /api/analytics/retention` gives them.
    Retention {
        #[arg(long, default_value = "week")]
        granularity: String,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
    /// Page views ranked by page (route template), device or country.
    Top {
        #[arg(value_enum)]
        what: TopWhat,
        #[command(flatten)]
        ranking: Ranking,
    },
    /// End the active sessions whose app session is gone or that went idle; print how many.
    /// Exits 1 when it held sessions back because their app keys all looked missing (a wrong
    /// session.key_prefix would otherwise end every session).
    Cleanup {
        /// Only report what would be ended.
        #[arg(long)]
        dry_run: bool,
    },
    /// The day's session anomalies, as `GET /api/analytics/sessions/anomalies` gives them.
    Anomalies {
        /// The UTC day, YYYY-MM-DD (default today).
        #[arg(long)]
        date: Option<String>,
        /// The lowest severity to list: low, medium or high.
        #[arg(long)]
        severity: Option<String>,
        /// Only this user's anomalies.
        #[arg(long, allow_hyphen_values = true)]
        user: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Revoke a session or all of a user's sessions on every proxy instance at once.
    #[command(subcommand)]
    Revoke(RevokeCommand),
    /// A user's behaviour patterns (usual hours, devices, countries, routes, session lengths,
    /// sessions across devices), as `GET /api/analytics/users/{id}/behavior-patterns`.
    Behavior {
        /// The user id (one that starts with '-' is taken as the id).
        #[arg(allow_hyphen_values = true)]
        user_id: String,
        /// How many of the newest sessions to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Who is online: signed-in active sessions, newest activity first, with their last route.
    Online {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Re-encrypt every stored personal field under the first key of analytics.encryption_keys
    /// (after adding a new key in front); seals plaintext stored before encryption was on.
    /// Exit 1 if some field no configured key opens.
    RotateKeys {
        /// Keys per SCAN round trip.
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
    /// With --user: print every record about one user as one JSON document (as the API's
    /// users/{id}/export). Without: the daily aggregates from --from to --to (inclusive UTC
    /// days, at most analytics.max_range_days) as --format csv or json.
    Export {
        /// The user id. One that starts with '-' is given as `--user=-id`.
        #[arg(long, value_name = "USER_ID", conflicts_with_all = ["from", "to"])]
        user: Option<String>,
        /// The first day, YYYY-MM-DD (default: `to`).
        #[arg(long)]
        from: Option<String>,
        /// The last day, YYYY-MM-DD (default: today).
        #[arg(long)]
        to: Option<String>,
        /// The aggregates' format (a user's export is always JSON).
        #[arg(long, value_enum, default_value_t = sting_proxy::ops::commands::ExportFormat::Json)]
        format: sting_proxy::ops::commands::ExportFormat,
    },
    /// Erase everything about one user: records, timelines, anomalies, the Kratos answers kept,
    /// their app sessions (logging them out). Idempotent; audited under a pseudonym.
    Erase {
        #[arg(long, value_name = "USER_ID")]
        user: String,
        /// Only count what would be erased.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the analytics keys' integrity (dangling entries, keys without TTL); exit 1 if
    /// problems are found and not repaired.
    Validate {
        /// Repair what is found: remove dangling entries, add missing TTLs.
        #[arg(long)]
        fix: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The ops commands print reports; their logs would only be noise unless asked for.
    let quiet = !matches!(cli.command, None | Some(Command::Serve { .. }) | Some(Command::Check));
    init_logging(if quiet { "warn" } else { "info" });
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sting-proxy: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if cfg.redis_target.mode() == sting_proxy::config::redis_target::RedisMode::Cluster {
        // Before any key is named: on a cluster every owned key carries the `{sting}` hash tag.
        sting_proxy::store::keys::use_cluster_layout().expect("the key layout is chosen once, first");
    }
    let result = match cli.command.unwrap_or(Command::Serve { upgrade: false }) {
        Command::Serve { upgrade } => sting_proxy::gateway::server::run(cfg, upgrade),
        Command::Check => exit_on_problems(sting_proxy::ops::check::run(&cfg)),
        Command::Sessions(c) => ops(&cfg, Ops::Sessions(c), cli.json),
        Command::Stats { when: When { date, from, to } } => ops(&cfg, Ops::Stats { date, from, to }, cli.json),
        Command::Acquisition { ranking: Ranking { period, when: When { date, from, to }, limit } } => {
            ops(&cfg, Ops::Acquisition { period, date, from, to, limit }, cli.json)
        }
        Command::Funnels { name, from, to } => ops(&cfg, Ops::Funnels { name, from, to }, cli.json),
        Command::Retention { granularity, from, to } => ops(&cfg, Ops::Retention { granularity, from, to }, cli.json),
        Command::Top { what, ranking: Ranking { period, when: When { date, from, to }, limit } } => {
            ops(&cfg, Ops::Top { what, period, date, from, to, limit }, cli.json)
        }
        Command::Cleanup { dry_run } => ops(&cfg, Ops::Cleanup { dry_run }, cli.json),
        Command::Validate { fix } => ops(&cfg, Ops::Validate { fix }, cli.json),
        Command::Anomalies { date, severity, user, limit } => ops(&cfg, Ops::Anomalies { date, severity, user, limit }, cli.json),
        Command::Revoke(c) => ops(&cfg, Ops::Revoke(c), cli.json),
        Command::Behavior { user_id, limit } => ops(&cfg, Ops::Behavior { user_id, limit }, cli.json),
        Command::Online { limit } => ops(&cfg, Ops::Online { limit }, cli.json),
        Command::RotateKeys { batch } => ops(&cfg, Ops::RotateKeys { batch }, cli.json),
        Command::Export { user: Some(user), .. } => ops(&cfg, Ops::Export { user }, cli.json),
        Command::Export { user: None, from, to, format } => ops(&cfg, Ops::ExportAggregates { from, to, format }, cli.json),
        Command::Erase { user, dry_run } => ops(&cfg, Ops::Erase { user, dry_run }, cli.json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sting-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn ops(cfg: &Config, op: Ops, json: bool) -> anyhow::Result<()> {
    exit_on_problems(sting_proxy::ops::commands::run(cfg, op, json))
}

/// A report that found problems exits 1 (an error exits 1 too, after printing it).
fn exit_on_problems(report: anyhow::Result<bool>) -> anyhow::Result<()> {
    if !report? {
        std::process::exit(1);
    }
    Ok(())
}

/// Logs go to stderr; `RUST_LOG` picks the level (default `info`, `warn` for the ops
/// commands), `STING_LOG_FORMAT=json` switches to one JSON object per line.
fn init_logging(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("STING_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
