//! `carbon`: runs a Carbon Grid member and talks to a cluster, in the manner
//! of `consul` and `etcdctl`.
//!
//! - `carbon agent --config node.toml` runs a member until SIGINT/SIGTERM;
//! - `carbon members|status --service ADDR` show the cluster;
//! - `carbon kv get|set|delete|list|watch|cas … --service ADDR` use the store;
//! - `carbon demo` starts a local cluster and shows a leader failover;
//! - `carbon tls init DIR` makes a CA and certificates for mutual TLS;
//! - `carbon keys generate` prints a fresh gossip encryption key;
//! - `carbon force-leave MEMBER` removes a dead member at once;
//! - `carbon snapshot save|restore` back the store up and start a new
//!   cluster from a backup.
//!
//! Client commands take `--service` and `--cluster-id` from `CARBON_SERVICE`
//! and `CARBON_CLUSTER_ID` when not given.
//!
//! Exit codes: one table, `exit::TABLE`, which `carbon --help` prints and
//! the README repeats (a test checks they agree).

mod agent;
mod client;
mod demo;
mod exit;
mod keys;
mod snapshot;
mod table;
mod tls;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run a Carbon Grid member, or talk to a cluster.
#[derive(Debug, Parser)]
#[command(name = "carbon", version, about, propagate_version = true)]
struct Cli {
    /// How log lines on stderr look: `text` (colours only on a terminal) or
    /// `json` (one object per line, for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CARBON_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The form of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a member until SIGINT or SIGTERM, then leave gracefully.
    Agent(agent::AgentArgs),
    /// Show the members recorded by the cluster.
    Members(client::Target),
    /// Show what a member knows about consensus.
    Status(client::Target),
    /// Read and write the consistent key-value store.
    #[command(subcommand)]
    Kv(client::kv::KvCommand),
    /// Remove a member that will not come back from raft now, and free its short id.
    ForceLeave(client::force_leave::ForceLeaveArgs),
    /// Back the store up, or start a new cluster from a backup.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Start a local cluster and show what it does, a leader failover included.
    Demo(demo::DemoArgs),
    /// Make the certificates of mutual TLS.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// Gossip encryption keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

/// The program's allocator. Under load the members spend much of their CPU
/// in small allocations (frames, log entries, watch events); glibc malloc
/// took about a fifth of that CPU in a profile; with mimalloc: +30 % durable writes at 64
/// clients, +50 % in memory (bench/ab.sh, 3 interleaved pairs). Only the
/// program sets it; a library user of the facade keeps their own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let parsed = Cli::command()
        .after_long_help(exit::help())
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            if !e.use_stderr() {
                // --help and --version: for people, never JSON.
                let _ = e.print();
                return ExitCode::from(exit::OK);
            }
            if json_requested() {
                fatal(LogFormat::Json, e.to_string().trim_end());
            } else {
                let _ = e.print();
            }
            return ExitCode::from(exit::USAGE);
        }
    };
    // The program's own lines (leaving, reloads) are worth seeing by
    // default; the libraries' only from warnings up.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=off,carbon=info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => {
            logs.json().init();
            JSON_STDERR.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    if matches!(cli.command, Command::Agent(_) | Command::Snapshot(_)) {
        // A member's data directory and a backup hold the store's values in
        // clear: every file these commands create is the user's alone
        // (0600, directories 0700), as etcd does.
        rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            fatal(cli.log_format, &format!("cannot start the runtime: {e}"));
            return ExitCode::from(exit::OTHER);
        }
    };
    let format = cli.log_format;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Agent(args) => agent::run(args).await,
            Command::Members(t) => client::members::run(t).await,
            Command::Status(t) => client::status::run(t).await,
            Command::Kv(cmd) => client::kv::run(cmd).await,
            Command::ForceLeave(args) => client::force_leave::run(args).await,
            Command::Snapshot(cmd) => snapshot::run(cmd).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Tls(cmd) => tls::run(cmd),
            Command::Keys(cmd) => keys::run(cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(f) => {
            fatal(format, &f.to_string());
            ExitCode::from(f.code)
        }
    }
}

/// Whether JSON logs were asked for, read from the raw arguments: for an
/// error in the arguments themselves, before clap has made sense of them.
fn json_requested() -> bool {
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--log-format" {
            return args.next().is_some_and(|v| v == "json");
        }
        if arg == "--log-format=json" {
            return true;
        }
    }
    std::env::var_os("CARBON_LOG_FORMAT").is_some_and(|v| v == "json")
}

/// Whether stderr carries JSON lines (`--log-format json`), for the lines
/// the program writes there itself.
static JSON_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One line for the user on stderr that is not a log line (it must show
/// whatever `RUST_LOG` says): `carbon: …`, or a JSON object with JSON logs.
pub(crate) fn tell(message: &str) {
    let format = if JSON_STDERR.load(std::sync::atomic::Ordering::Relaxed) {
        LogFormat::Json
    } else {
        LogFormat::Text
    };
    fatal(format, message);
}

/// Prints the error that ends the program, as `carbon: …` or, with JSON
/// logs, as one JSON object like every other line on stderr. Written
/// directly, not through the log filter: `RUST_LOG=off` must not hide why
/// the program stopped.
fn fatal(format: LogFormat, message: &str) {
    match format {
        LogFormat::Text => eprintln!("carbon: {message}"),
        LogFormat::Json => {
            let line = serde_json::json!({
                "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
                "level": "ERROR",
                "fields": { "message": message },
                "target": "carbon",
            });
            eprintln!("{line}");
        }
    }
}
