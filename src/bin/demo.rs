//! `just demo`: drives a running server (`just run`) through a simulated back-in-stock program
//! and prints its reports as tables; see `restock::demo`.

use clap::Parser;

/// Simulate shoppers, restocks, deliveries, clicks, STOP replies and purchases against a
/// running restock server, then print the reports.
#[derive(Debug, Parser)]
struct Args {
    /// Seeds every draw: the same seed draws the same program.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Shoppers waiting per restock (four restocks).
    #[arg(long, default_value_t = 1_000)]
    shoppers: usize,
    /// The server's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    grpc: String,
    /// The server's HTTP address as it names it (`http.public_base_url`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http: String,
    /// Bearer token (config/dev.toml's development token by default).
    #[arg(long, env = "RESTOCK_TOKEN", default_value = restock::auth::DEV_TOKEN)]
    token: String,
    /// Key of the webhook signatures (config/dev.toml's `sms.twilio_auth_token` by default).
    #[arg(long, env = "RESTOCK_WEBHOOK_TOKEN", default_value = restock::auth::DEV_WEBHOOK_TOKEN)]
    webhook_token: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.shoppers == 0 || args.shoppers > 10_000 {
        anyhow::bail!("--shoppers must be 1 to 10,000");
    }
    let opts = restock::demo::Options {
        grpc_url: args.grpc,
        http_url: args.http.trim_end_matches('/').to_string(),
        token: args.token,
        webhook_token: args.webhook_token,
        seed: args.seed,
        shoppers: args.shoppers,
        run_id: chrono::Utc::now().timestamp() as u64,
    };
    let started = std::time::Instant::now();
    let outcome =
        restock::demo::run(&opts, &restock::demo::RealTime, &|line| eprintln!("{line}")).await?;
    print!("{}", restock::demo::render(&outcome));
    eprintln!("\ndone in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
