//! The outbox's backlog for `/metrics`: messages not yet handed over, by state, and how long the
//! oldest due one has waited. Both read the partial indexes the claim uses (`messages_open`,
//! `messages_due`), so a scrape costs the backlog's size in index entries, not the outbox's.

use chrono::{DateTime, Utc};
use restock_domain::MessageStatus;

use crate::cached::{query, query_one};
use crate::{Store, StoreError};

/// The backlog at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backlog {
    /// Messages per state among planned, deferred and sending (absent states: none).
    pub by_state: Vec<(MessageStatus, i64)>,
    /// The earliest `due_at` of a message that is planned or deferred in an open wave.
    pub oldest_due: Option<DateTime<Utc>>,
}

impl Store {
    pub async fn outbox_backlog(&self) -> Result<Backlog, StoreError> {
        let client = self.client().await?;
        let by_state = query(
            &client,
            "SELECT status, count(*) FROM messages \
             WHERE status IN ('planned', 'deferred', 'sending') GROUP BY status",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        let oldest_due = query_one(
            &client,
            "SELECT min(due_at) FROM messages \
             WHERE status IN ('planned', 'deferred') AND wave IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
        Ok(Backlog {
            by_state,
            oldest_due,
        })
    }
}
