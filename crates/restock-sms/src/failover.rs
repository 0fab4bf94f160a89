//! A fallback sender: a second provider account, or a second sender (messaging service or
//! number) of the same account, that takes a text over when the first cannot send it.
//!
//! The fallback takes over only when the primary says it cannot take texts at all: it rejects
//! our account or sender ([`SendError::Config`]) or cannot be reached
//! ([`SendError::Transient`] with `outage`). Never when the outcome is unknown (the text may
//! exist: it is reconciled, not sent twice), nor for a throttle, a refused number or an
//! opt-out, which a second sender would meet just the same. After a failure the primary rests
//! for a cool-down, so every text in the meantime does not pay for a failing request first.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;

use crate::provider::{MessageReport, OutboundSms, Provider, SendError, SendReceipt};

/// The primary provider with an optional second account.
pub struct Failover {
    primary: Arc<dyn Provider>,
    secondary: Option<Arc<dyn Provider>>,
    cool_down: Duration,
    /// While in the future, texts with a fallback skip the primary.
    resting_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover")
            .field("primary", &self.primary.name())
            .field("secondary", &self.secondary.as_ref().map(|s| s.name()))
            .field("cool_down", &self.cool_down)
            .finish()
    }
}

impl Failover {
    /// `secondary` is a second account (texts go to it with their `fallback_from`, else their
    /// own sender); without one, a text's `fallback_from` is tried on the primary account.
    pub fn new(
        primary: Arc<dyn Provider>,
        secondary: Option<Arc<dyn Provider>>,
        cool_down: Duration,
    ) -> Self {
        Self {
            primary,
            secondary,
            cool_down,
            resting_until: Mutex::new(None),
        }
    }

    /// Whether the primary is resting after a failure.
    pub fn primary_resting(&self) -> bool {
        self.resting_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| Instant::now() < t)
    }

    fn rest_primary(&self) {
        *self.resting_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + self.cool_down);
    }

    /// Where a text goes when the primary cannot take it, and as what; `None` when it has no
    /// fallback at all.
    fn fallback<'a>(&'a self, sms: &OutboundSms) -> Option<(&'a Arc<dyn Provider>, OutboundSms)> {
        let mut alt = sms.clone();
        if let Some(from) = &sms.fallback_from {
            alt.from = from.clone();
        }
        match (&self.secondary, &sms.fallback_from) {
            (Some(secondary), _) => Some((secondary, alt)),
            (None, Some(_)) => Some((&self.primary, alt)),
            (None, None) => None,
        }
    }
}

#[async_trait]
impl Provider for Failover {
    fn name(&self) -> &'static str {
        self.primary.name()
    }

    async fn send(&self, sms: &OutboundSms) -> Result<SendReceipt, SendError> {
        let Some((fallback, alt)) = self.fallback(sms) else {
            return self.primary.send(sms).await;
        };
        if !self.primary_resting() {
            match self.primary.send(sms).await {
                Err(e) if e.calls_for_fallback() => {
                    tracing::warn!(
                        error = %e,
                        cool_down = ?self.cool_down,
                        "the primary sender cannot take texts: the fallback takes over"
                    );
                    self.rest_primary();
                }
                answer => return answer,
            }
        }
        fallback.send(&alt).await
    }

    async fn fetch(&self, provider_message_id: &str) -> Result<Option<MessageReport>, SendError> {
        let primary = self.primary.fetch(provider_message_id).await;
        match (&self.secondary, primary) {
            (Some(secondary), Ok(None) | Err(_)) => secondary.fetch(provider_message_id).await,
            (_, answer) => answer,
        }
    }

    async fn lookup(
        &self,
        sms: &OutboundSms,
        since: DateTime<Utc>,
    ) -> Result<Option<MessageReport>, SendError> {
        // The text may have gone either way: both must say "not here" before the answer is
        // "never sent".
        let primary = self.primary.lookup(sms, since).await;
        if let Ok(Some(found)) = primary {
            return Ok(Some(found));
        }
        let Some((fallback, alt)) = self.fallback(sms) else {
            return primary;
        };
        match fallback.lookup(&alt, since).await? {
            Some(found) => Ok(Some(found)),
            None => primary,
        }
    }
}
