//! The outbox's backlog for `/metrics`: messages not yet handed over, by state, and how long the
//! oldest due one has waited. The counts come from the release tallies the engine keeps as it
//! moves messages (see `V8__counters.sql`), the oldest from the first entry of each live
//! release in `messages_due`: a scrape never reads the outbox itself.

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
            "SELECT status, sum(messages)::bigint FROM ( \
               SELECT status, messages FROM release_tallies \
               WHERE status IN ('planned', 'deferred', 'sending') \
               UNION ALL SELECT status, messages FROM release_tally_deltas \
               WHERE status IN ('planned', 'deferred', 'sending')) t \
             GROUP BY status HAVING sum(messages) <> 0",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        let oldest_due = query_one(
            &client,
            "SELECT min(d.due_at) FROM releases r CROSS JOIN LATERAL ( \
               SELECT m.due_at FROM messages m \
               WHERE m.tenant_id = r.tenant_id AND m.release_id = r.release_id \
                 AND m.status IN ('planned', 'deferred') AND m.wave IS NOT NULL \
               ORDER BY m.due_at LIMIT 1) d \
             WHERE r.state IN ('planning', 'sending')",
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
