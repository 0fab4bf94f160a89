//! The `Provider` trait every SMS sender implements, the message it sends, and the error
//! classification the dispatch engine acts on: retry, give up, record an opt-out, stop sending,
//! or reconcile an outcome that is not known.

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// Who a text is sent from.
#[derive(Clone, PartialEq, Eq)]
pub enum Sender {
    /// A phone number (E.164), short code or alphanumeric sender id.
    Number(String),
    /// A Twilio Messaging Service (`MG...`): the provider picks a number from its pool.
    MessagingService(String),
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A sender number is the tenant's, not personal data: it is safe to show.
        match self {
            Sender::Number(n) => write!(f, "Number({n})"),
            Sender::MessagingService(s) => write!(f, "MessagingService({s})"),
        }
    }
}

/// One text to send.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboundSms {
    /// restock's own id of the message (its outbox row): the log provider records it; Twilio
    /// has nowhere to take it (no idempotency key), so callers put it in `status_callback`.
    pub reference: String,
    /// Recipient in E.164.
    pub to: String,
    pub from: Sender,
    pub body: String,
    /// Where the provider reports delivery; restock's webhook, usually with the reference.
    pub status_callback: Option<String>,
    /// How long the provider may queue the text before dropping it. A back-in-stock alert
    /// that leaves hours late points at stock that is gone, so it is better not sent.
    pub validity: Option<Duration>,
    /// The moment past which the request must not begin, on the sender's monotonic clock: the
    /// end of the sender's lease, after which another replica may reconcile and resend the text.
    /// Checked as late as the transport allows (Twilio: when the request body is first read
    /// for writing, right before the bytes go out), so a process frozen between its own check
    /// and the write wakes up to [`SendError::Late`] instead of a second text.
    pub not_after: Option<Instant>,
    /// The sender to use when the primary cannot take texts (a second messaging service or
    /// number, of the fallback account if there is one); see [`crate::failover`].
    pub fallback_from: Option<Sender>,
    /// The W3C trace context of the hand-over, sent as the `traceparent` header where the
    /// provider speaks HTTP, so the provider's side of the call joins the trace.
    pub traceparent: Option<String>,
}

impl fmt::Debug for OutboundSms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The phone is personal data and the body carries an unguessable link token.
        f.debug_struct("OutboundSms")
            .field("reference", &self.reference)
            .field("to", &redact_phone(&self.to))
            .field("from", &self.from)
            .field("body_chars", &self.body.chars().count())
            .field("status_callback", &self.status_callback.is_some())
            .field("validity", &self.validity)
            .field("not_after", &self.not_after)
            .field("fallback_from", &self.fallback_from)
            .finish()
    }
}

/// A phone number reduced to what a log may show: its last two digits.
pub fn redact_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    let tail: String = digits[digits.len().saturating_sub(2)..].iter().collect();
    format!("***{tail}")
}

/// A message's status at the provider (Twilio's names; other providers map onto them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    Accepted,
    Scheduled,
    Queued,
    Sending,
    Sent,
    Delivered,
    Undelivered,
    Failed,
    Canceled,
    /// A status this code does not know (inbound or WhatsApp ones, or a new one): kept raw.
    Other(String),
}

impl MessageStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "accepted" => Self::Accepted,
            "scheduled" => Self::Scheduled,
            "queued" => Self::Queued,
            "sending" => Self::Sending,
            "sent" => Self::Sent,
            "delivered" => Self::Delivered,
            "undelivered" => Self::Undelivered,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Accepted => "accepted",
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Undelivered => "undelivered",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Other(s) => s,
        }
    }

    /// Whether the provider will report nothing further about the message.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Delivered | Self::Undelivered | Self::Failed | Self::Canceled
        )
    }

    /// Whether the text never left (or will never leave) the provider.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failed | Self::Canceled)
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the provider said when it took a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    /// The provider's id (Twilio `SM...`), the key of its status callbacks.
    pub provider_message_id: String,
    /// Usually `queued` or `accepted`: delivery comes later, by callback or `fetch`.
    pub status: MessageStatus,
    /// Segments the provider counts (billing); `None` when it did not say.
    pub segments: Option<u32>,
}

/// A message as the provider knows it, for reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageReport {
    pub provider_message_id: String,
    pub status: MessageStatus,
    pub segments: Option<u32>,
    /// The provider's error code for failed / undelivered texts (e.g. Twilio 30007).
    pub error_code: Option<i64>,
    /// Its description, with phone numbers redacted.
    pub error_message: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

/// Why a provider call failed, in the terms the caller acts on.
///
/// `fetch` and `lookup` only read, so they return `Transient`, `Config` or `Permanent`; a
/// read that times out is simply retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The provider did not process the request (throttled, unreachable, queue full): sending
    /// again later is safe. `retry_after` is the provider's own hint, when it gave one.
    #[error("transient provider failure: {reason}")]
    Transient {
        retry_after: Option<Duration>,
        reason: String,
        /// Not merely this request turned away (a 429): the provider cannot be reached or the
        /// sender cannot take texts for now (no connection, a queue of over 10 hours). A
        /// fallback sender may take over.
        outage: bool,
    },
    /// The provider refused this text for good (invalid number, landline, region not allowed).
    #[error("provider refused the message (code {code:?}): {reason}")]
    Permanent { code: Option<i64>, reason: String },
    /// The recipient unsubscribed at the provider (replied STOP; Twilio 21610): no text to that
    /// phone gets through until it replies START, so the caller records an opt-out.
    #[error("the recipient opted out at the provider (code {code})")]
    OptedOut { code: i64 },
    /// The provider rejects the account, not the text: wrong credentials or account sid, a
    /// sender the account does not own. Every other text would fail the same way, so the caller
    /// stops sending and alerts instead of failing the message (whose attempt is not its fault).
    #[error("provider configuration rejected (code {code:?}): {reason}")]
    Config { code: Option<i64>, reason: String },
    /// The request may have reached the provider and created the text: a timeout after the
    /// request was sent, a connection lost before the answer, a 5xx, an unreadable answer.
    /// Never resend blindly: reconcile with [`Provider::lookup`] first.
    #[error("outcome unknown, the message may have been sent: {reason}")]
    Unknown { reason: String },
    /// Nothing was sent: the text's [`OutboundSms::not_after`] had passed before its request
    /// began. The sender's lease may be another's by now, so the caller records nothing.
    #[error("not sent: the request would have begun after its deadline")]
    Late,
}

impl SendError {
    /// Whether a fallback sender should take over this text: the provider rejects our
    /// account or sender, or is unreachable. Never for an unknown outcome (the text may exist)
    /// nor for a throttle (the caps and backoff handle it).
    pub fn calls_for_fallback(&self) -> bool {
        matches!(
            self,
            SendError::Config { .. } | SendError::Transient { outage: true, .. }
        )
    }

    /// The provider's error code, when it gave one.
    pub fn code(&self) -> Option<i64> {
        match self {
            SendError::Permanent { code, .. } | SendError::Config { code, .. } => *code,
            SendError::OptedOut { code } => Some(*code),
            SendError::Transient { .. } | SendError::Unknown { .. } | SendError::Late => None,
        }
    }
}

/// Something that sends texts. Object safe: the dispatch engine holds an `Arc<dyn Provider>`
/// chosen by configuration.
///
/// Implementations only send and read; they do not retry, throttle or bound concurrency,
/// which are the caller's (it knows the sender's rate and the message's history).
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Short name for logs and metrics (`twilio`, `log`).
    fn name(&self) -> &'static str;

    /// Hands one text to the provider.
    async fn send(&self, sms: &OutboundSms) -> Result<SendReceipt, SendError>;

    /// The provider's current view of a message it gave an id for; `None` if it does not know
    /// the id.
    async fn fetch(&self, provider_message_id: &str) -> Result<Option<MessageReport>, SendError>;

    /// Finds the text `sms` if the provider created it at or after `since` (the time the send
    /// was attempted): how an [`SendError::Unknown`] outcome, which has no provider id, is
    /// reconciled. Matches on recipient, sender number and exact body; restock's bodies carry a
    /// per-message link token, so a match is that message. `None` means the provider has no
    /// such text now; providers list new messages with some delay, so call it a little after
    /// the attempt, not at once.
    async fn lookup(
        &self,
        sms: &OutboundSms,
        since: DateTime<Utc>,
    ) -> Result<Option<MessageReport>, SendError>;
}
