//! A `restock serve` child process for the dispatch figures: a process of its own, so its peak
//! memory (VmHWM) is the server's alone; killed when dropped, whatever the bench ran into.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// How long a server may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The release `restock` binary: `RESTOCK_BIN` if set, else built now by cargo (a no-op when it
/// is up to date), so the bench works with or without the justfile.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("RESTOCK_BIN") {
        return Ok(bin.into());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    eprintln!("cargo build --release --bin restock (the server the dispatch figures run)");
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "restock",
            "--bin",
            "restock",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo to build the restock binary (or set RESTOCK_BIN)")?;
    if !out.status.success() {
        bail!("building the restock binary failed (see cargo's output above)");
    }
    // The artifact message names the executable wherever the target directory is.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "restock")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo built no restock executable")
}

/// A running `restock serve`.
pub struct ServerProcess {
    child: Child,
    /// `host:port` of its gRPC listener, as it printed it.
    pub grpc: String,
    /// `host:port` of its HTTP listener (`/metrics`), as it printed it.
    pub http: String,
    /// Where its stderr (the logs) goes, for a look after a bad figure.
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts `bin serve` with `env` added to this process's environment; answers once it
    /// printed its listening addresses.
    pub async fn start(bin: &Path, env: &[(String, String)], log: &Path) -> anyhow::Result<Self> {
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                File::create(log).with_context(|| format!("creating {}", log.display()))?,
            ));
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        // Dropped from here on (killed), should the first line not come.
        let mut server = Self {
            child,
            grpc: String::new(),
            http: String::new(),
            log: log.to_path_buf(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A thread, not a task: it keeps draining stdout for the life of the process so the
        // server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(read);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(Ok(line))) => line,
            Ok(Ok(Err(e))) => return Err(e).context("reading the server's stdout"),
            Ok(Err(_)) | Err(_) => bail!(
                "restock serve did not print its address within {START_TIMEOUT:?}; see {}",
                log.display()
            ),
        };
        let Some((grpc, http)) = line
            .trim()
            .strip_prefix("restock listening: grpc=")
            .and_then(|rest| rest.split_once(" http="))
            .map(|(grpc, http)| (grpc.to_string(), http.to_string()))
        else {
            let status = server.child.try_wait().ok().flatten();
            bail!(
                "restock serve did not start (first line {line:?}, exit {status:?}); see {}",
                log.display()
            );
        };
        server.grpc = grpc;
        server.http = http;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `/proc/<pid>/status` figure in KiB: `VmHWM` (peak resident set) or `VmRSS` (now).
    pub fn memory_kib(&self, field: &str) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
            .with_context(|| format!("no {field} in {path}"))
    }
}

impl ServerProcess {
    /// The sum of every series of the metric `name` (a counter's `_total`, a histogram's
    /// `_count`...) on the server's `/metrics`; `None` if it has no such series yet.
    pub async fn metric(&self, name: &str) -> anyhow::Result<Option<f64>> {
        let text = scrape(&self.http).await?;
        Ok(metric_sum(&text, name))
    }
}

/// `GET /metrics` of `addr` (host:port) over plain HTTP/1.1: the body.
async fn scrape(addr: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr} for /metrics"))?;
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .context("/metrics did not answer within 10 s")??;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("/metrics answered no HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "/metrics answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_string())
}

/// The sum of the samples of `name` in Prometheus text: lines `name value` and
/// `name{labels} value`; `None` if there is none.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if let Some(labelled) = rest.strip_prefix('{') {
                labelled.rsplit_once('}')?.1
            } else if rest.starts_with(' ') {
                rest
            } else {
                return None;
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .reduce(|a, b| a + b)
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bench's bearer token: its own server processes accept it (every tenant, every scope).
const TOKEN: &str = "bench-token-full-access";

/// A channel that presents the bench's token on every call.
pub type Channel = tonic::service::interceptor::InterceptedService<
    tonic::transport::Channel,
    restock::auth::Bearer,
>;

/// Connects to `addr` (host:port) as the bench caller.
pub async fn connect(addr: impl std::fmt::Display) -> anyhow::Result<Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(Channel::new(channel, restock::auth::Bearer::new(TOKEN)))
}

/// `n` channels to `addr`, each its own connection.
pub async fn connect_many(addr: impl std::fmt::Display, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(connect(&addr).await?);
    }
    Ok(channels)
}

/// The bench caller's credential, for a server built in process.
pub fn credential() -> restock::auth::CredentialSettings {
    restock::auth::CredentialSettings {
        token_sha256: Some(restock::auth::token_hash(TOKEN)),
        cert_sha256: None,
        tenants: restock::auth::Names(vec!["*".into()]),
        scopes: restock::auth::Names(vec!["*".into()]),
    }
}

/// The same credential for a `restock serve` process, as environment variables.
pub fn credential_env() -> Vec<(String, String)> {
    [
        ("TOKEN_SHA256", restock::auth::token_hash(TOKEN)),
        ("TENANTS", "*".to_string()),
        ("SCOPES", "*".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("RESTOCK__AUTH__CREDENTIALS__BENCH__{k}"), v))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn metric_sums_add_every_series_of_the_name_only() {
        let text = "# HELP restock_redis_round_trip_seconds x\n\
            restock_redis_round_trip_seconds_count 12\n\
            restock_redis_round_trip_seconds_count_other 99\n\
            restock_messages_total{tenant=\"demo\",outcome=\"sent\"} 5\n\
            restock_messages_total{tenant=\"b\",outcome=\"sent\"} 2\n";
        assert_eq!(
            metric_sum(text, "restock_redis_round_trip_seconds_count"),
            Some(12.0)
        );
        assert_eq!(metric_sum(text, "restock_messages_total"), Some(7.0));
        assert_eq!(metric_sum(text, "restock_nope"), None);
    }
}
