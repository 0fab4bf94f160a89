//! The `restock` binary: `restock serve` and `restock migrate`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use restock::config::Settings;
use restock::startup::Application;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(version, about = "restock: back-in-stock SMS")]
struct Cli {
    /// A TOML file overriding the built-in defaults (environment variables override both).
    #[arg(long, global = true, env = "RESTOCK_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations, then serve until SIGTERM or Ctrl-C.
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("restock: {e}");
            std::process::exit(2);
        }
    };
    match cli.command {
        Command::Migrate => {
            restock::telemetry::init();
            let applied = restock_store::migrate::run(&settings.database.url).await?;
            println!(
                "migrations applied: {}",
                if applied.is_empty() {
                    "none pending".into()
                } else {
                    applied.join(", ")
                }
            );
            Ok(())
        }
        Command::Serve => {
            // Flushes the spans not yet exported when serving ends.
            let _traces =
                restock::telemetry::init_with_otlp(settings.telemetry.otlp_endpoint.as_deref())?;
            // Listening from here, so a SIGTERM during start-up (migrations can take a while)
            // stops the process cleanly instead of killing it.
            let shutdown = restock::shutdown::listen().context("installing signal handlers")?;
            tokio::pin!(shutdown);
            let start = async {
                let addr = settings.grpc.addr();
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding gRPC to {addr}"))?;
                Application::build(settings, listener).await
            };
            let app = tokio::select! {
                app = start => app?,
                () = &mut shutdown => {
                    tracing::info!("stopped before serving");
                    return Ok(());
                }
            };
            println!(
                "restock listening: grpc={} http={}",
                app.grpc_addr(),
                app.http_addr()
            );
            app.run_until_stopped(shutdown).await
        }
    }
}
