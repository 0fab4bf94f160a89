//! The development provider: every text becomes one JSON line appended to a file (`just run`
//! sends nothing to phones). The file is the "handset", so it holds recipients and bodies in
//! clear: it is for development data only.
//!
//! Writes go through one writer thread that group-commits: it writes every line waiting, then
//! makes one `fdatasync` for all of them, and only then answers their senders. A send is
//! acknowledged once its line is durable, at the cost of one sync per batch, not per text.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::encoding::analyze;
use crate::provider::{
    MessageReport, MessageStatus, OutboundSms, Provider, SendError, SendReceipt, Sender,
};

/// Most lines one sync covers: bounds the latency the first sender of a batch waits.
const MAX_BATCH: usize = 1024;

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When the text was handed over, RFC 3339 in UTC.
    pub at: DateTime<Utc>,
    /// The fake provider id: `LG` and 32 hex digits (as long as a Twilio sid).
    pub sid: String,
    pub reference: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_service_sid: Option<String>,
    pub body: String,
    pub encoding: String,
    pub segments: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_callback: Option<String>,
}

/// A line to write and who waits for it.
struct Job {
    line: Vec<u8>,
    done: oneshot::Sender<Result<(), Failed>>,
}

/// How a batch failed: a failed write left nothing acknowledged (a retry is safe, a reader
/// skips a torn line); a failed sync leaves lines that may or may not have survived.
#[derive(Debug, Clone)]
enum Failed {
    Write(String),
    Sync(String),
}

/// Appends texts to a JSONL file.
pub struct LogProvider {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for LogProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogProvider")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LogProvider {
    /// Opens (creating it and its directory if needed) the file to append to, and starts the
    /// writer thread, which ends when the provider is dropped.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("restock-sms-log".into())
            .spawn(move || write_loop(file, queue))?;
        Ok(Self { path, jobs })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every readable line of the file, oldest first (a torn last line is skipped).
    pub fn read_lines(path: &Path) -> io::Result<Vec<LogLine>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut lines = Vec::new();
        for line in BufReader::new(file).lines() {
            if let Ok(parsed) = serde_json::from_str::<LogLine>(&line?) {
                lines.push(parsed);
            }
        }
        Ok(lines)
    }

    /// Scans the file on a blocking thread: only reconciliation reads it, rarely.
    async fn scan(
        &self,
        matches: impl Fn(&LogLine) -> bool + Send + 'static,
    ) -> Result<Option<LogLine>, SendError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            Self::read_lines(&path).map(|lines| lines.into_iter().rev().find(|l| matches(l)))
        })
        .await
        .map_err(|e| transient(format!("log scan: {e}")))?
        .map_err(|e| transient(format!("reading {}: {e}", self.path.display())))
    }
}

fn transient(reason: String) -> SendError {
    SendError::Transient {
        retry_after: None,
        reason,
        outage: true,
    }
}

fn write_loop(mut file: File, queue: mpsc::Receiver<Job>) {
    let mut buf = Vec::new();
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        buf.clear();
        for job in &batch {
            buf.extend_from_slice(&job.line);
        }
        let outcome = match file.write_all(&buf) {
            Err(e) => Err(Failed::Write(e.to_string())),
            Ok(()) => file.sync_data().map_err(|e| Failed::Sync(e.to_string())),
        };
        for job in batch {
            // A sender that gave up waiting is no one's concern.
            let _ = job.done.send(outcome.clone());
        }
    }
}

impl LogLine {
    fn report(&self) -> MessageReport {
        MessageReport {
            provider_message_id: self.sid.clone(),
            status: MessageStatus::Sent,
            segments: Some(self.segments),
            error_code: None,
            error_message: None,
            created_at: Some(self.at),
        }
    }
}

#[async_trait]
impl Provider for LogProvider {
    fn name(&self) -> &'static str {
        "log"
    }

    /// Answers `sent`: no delivery callback will ever follow.
    async fn send(&self, sms: &OutboundSms) -> Result<SendReceipt, SendError> {
        if sms
            .not_after
            .is_some_and(|t| std::time::Instant::now() >= t)
        {
            return Err(SendError::Late);
        }
        let analysis = analyze(&sms.body);
        let (from, messaging_service_sid) = match &sms.from {
            Sender::Number(n) => (Some(n.clone()), None),
            Sender::MessagingService(s) => (None, Some(s.clone())),
        };
        let line = LogLine {
            at: Utc::now(),
            sid: format!("LG{}", uuid::Uuid::new_v4().simple()),
            reference: sms.reference.clone(),
            to: sms.to.clone(),
            from,
            messaging_service_sid,
            body: sms.body.clone(),
            encoding: analysis.encoding.as_str().to_owned(),
            segments: analysis.segments,
            status_callback: sms.status_callback.clone(),
        };
        let mut bytes = serde_json::to_vec(&line).expect("a LogLine always serializes");
        bytes.push(b'\n');
        let (done, wait) = oneshot::channel();
        self.jobs
            .send(Job { line: bytes, done })
            .map_err(|_| transient("the log writer stopped".into()))?;
        match wait.await {
            Ok(Ok(())) => Ok(SendReceipt {
                provider_message_id: line.sid,
                status: MessageStatus::Sent,
                segments: Some(analysis.segments),
            }),
            Ok(Err(Failed::Write(e))) => Err(transient(format!("writing the log: {e}"))),
            Ok(Err(Failed::Sync(e))) => Err(SendError::Unknown {
                reason: format!("syncing the log: {e}"),
            }),
            Err(_) => Err(SendError::Unknown {
                reason: "the log writer stopped mid-write".into(),
            }),
        }
    }

    async fn fetch(&self, provider_message_id: &str) -> Result<Option<MessageReport>, SendError> {
        let sid = provider_message_id.to_owned();
        Ok(self.scan(move |l| l.sid == sid).await?.map(|l| l.report()))
    }

    async fn lookup(
        &self,
        sms: &OutboundSms,
        since: DateTime<Utc>,
    ) -> Result<Option<MessageReport>, SendError> {
        let (to, body) = (sms.to.clone(), sms.body.clone());
        let found = self
            .scan(move |l| l.to == to && l.body == body && l.at >= since)
            .await?;
        Ok(found.map(|l| l.report()))
    }
}
