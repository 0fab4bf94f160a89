//! `cargo run --release -p restock-caps --example bench -- [batches] [batch size]`: checks per
//! second on `REDIS_URL`, to set against
//! `redis-benchmark -p <port> -n 100000 -P 16 EVALSHA $(redis-cli -p <port> SCRIPT LOAD 'return 1') 0`.

use restock_caps::{bench_checks, Caps};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").map_err(|_| "REDIS_URL is unset")?;
    let mut args = std::env::args().skip(1);
    let batches: usize = args.next().map_or(Ok(50), |a| a.parse())?;
    let batch_size: usize = args.next().map_or(Ok(1_000), |a| a.parse())?;
    let prefix = format!("caps-bench-{}", uuid::Uuid::new_v4().simple());
    let caps = Caps::connect(&url, &prefix)?;
    let rate = bench_checks(&caps, batches, batch_size).await?;
    println!("{rate:.0} checks/s ({batches} batches of {batch_size})");
    Ok(())
}
