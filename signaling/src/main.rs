//! `noom`: the server binary.

use clap::Parser;
use noom_config::{Config, LogFormat};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "noom",
    version,
    about = "Noom: a selective forwarding unit for browser video calls"
)]
struct Cli {
    /// Configuration file (TOML). Keys it omits take the embedded defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration (defaults, file and environment) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Subcommand>,
}

#[derive(clap::Subcommand)]
enum Subcommand {
    /// Print a join token for ROOM and NAME, signed with auth.secret.
    Token {
        #[arg(long)]
        room: String,
        #[arg(long)]
        name: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
    },
}

fn load(cli: &Cli) -> Result<Config, String> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
        None => Config::embedded(),
    };
    config
        .apply_env(std::env::vars())
        .map_err(|e| e.to_string())?;
    Ok(config)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

/// How long a clustered node may take to hand its rooms over on SIGTERM
/// before it shuts down regardless (orchestrators usually allow 30 s).
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match load(&cli) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("noom: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(Subcommand::Token { room, name, ttl }) = &cli.command {
        if !config.auth.required() {
            eprintln!("noom: auth.secret is empty; set it (or NOOM_AUTH_SECRET) to issue tokens");
            return std::process::ExitCode::from(2);
        }
        println!(
            "{}",
            noom_signaling::auth::issue(&config.auth.secret, room, name, *ttl)
        );
        return std::process::ExitCode::SUCCESS;
    }
    if cli.print_config {
        print!("{}", config.to_toml());
        return std::process::ExitCode::SUCCESS;
    }
    init_logging(&config);
    let server = match noom_signaling::Server::start(config).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("noom: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    wait_for_signal().await;
    let started = std::time::Instant::now();
    if let Some(drained) = server.drain(DRAIN_LIMIT).await {
        tracing::info!(
            rooms_moved = drained.rooms_moved,
            left_behind = drained.left_behind,
            ms = started.elapsed().as_millis() as u64,
            "drained: rooms handed over to other nodes"
        );
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    std::process::ExitCode::SUCCESS
}
