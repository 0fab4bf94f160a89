//! Reading releases and their messages back: one release with its waves and message tallies,
//! pages of releases and of messages. Steering a release is the engine's (`dispatch.rs`).
//!
//! A release is read in one read-only repeatable-read transaction, so its state, waves and
//! counters always agree (a COMPLETED release never shows a message still SENDING).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use restock_domain::waves::Strategy;
use restock_domain::{MessageStatus, ReleaseState, WaveState};
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row};
use uuid::Uuid;

use crate::cached::{query, query_opt};
use crate::{Store, StoreError};

/// A release as stored, with its waves and the tallies of its messages.
#[derive(Debug, Clone)]
pub struct ReleaseView {
    pub tenant_id: String,
    pub release_id: Uuid,
    pub restock_id: Uuid,
    pub variant_id: String,
    pub product_id: Option<String>,
    pub location_id: Option<String>,
    /// `None` until the release is planned.
    pub strategy: Option<Strategy>,
    pub holdout_bps: i32,
    pub state: ReleaseState,
    pub state_reason: String,
    pub available_at_restock: i64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// The release row's own last change; see [`ReleaseView::last_change`] for the release's.
    pub updated_at: DateTime<Utc>,
    pub next_wave_at: Option<DateTime<Utc>>,
    pub waves: Vec<WaveView>,
    pub tallies: Vec<Tally>,
}

impl ReleaseView {
    /// When anything about the release last changed: its row, a wave, or a message (the engine
    /// does not touch the release row for every message it sends).
    pub fn last_change(&self) -> DateTime<Utc> {
        let waves = self
            .waves
            .iter()
            .flat_map(|w| [w.started_at, w.ended_at])
            .flatten();
        let messages = self.tallies.iter().map(|t| t.updated_at);
        waves
            .chain(messages)
            .fold(self.updated_at, |latest, t| latest.max(t))
    }
}

/// One wave of a release.
#[derive(Debug, Clone)]
pub struct WaveView {
    pub number: i32,
    pub state: WaveState,
    pub share_bps: i32,
    pub scheduled_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub available_before: Option<i64>,
    /// `schedule` or `sell_through` (opened early on absorbed demand); none before it opened.
    pub opened_by: Option<String>,
}

/// Messages of a release sharing a wave, a status and a reason.
#[derive(Debug, Clone)]
pub struct Tally {
    /// `None` for messages in no open wave (held out, skipped at planning, not yet opened).
    pub wave: Option<i32>,
    pub status: MessageStatus,
    pub reason: Option<String>,
    pub messages: i64,
    pub segments: i64,
    /// The latest change among them.
    pub updated_at: DateTime<Utc>,
}

/// Filters of a page of releases; they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct ReleaseFilter {
    pub variant_id: Option<String>,
    pub product_id: Option<String>,
    pub location_id: Option<String>,
    pub restock_id: Option<Uuid>,
    /// Empty means any.
    pub states: Vec<ReleaseState>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

/// A message as stored, with its recipient's phone (`None` once erased).
#[derive(Debug, Clone)]
pub struct MessageView {
    pub tenant_id: String,
    pub message_id: Uuid,
    pub release_id: Uuid,
    pub subscription_id: Uuid,
    pub variant_id: String,
    pub phone_e164: Option<String>,
    pub position: Option<i32>,
    pub wave: Option<i32>,
    pub status: MessageStatus,
    pub reason: Option<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub kind: String,
    pub body: Option<String>,
    pub segments: i32,
    pub encoding: Option<String>,
    pub sender_id: Option<String>,
    pub provider_message_id: Option<String>,
    pub attempts: i32,
    pub last_error_code: Option<String>,
    pub last_error_description: Option<String>,
    pub last_error_permanent: Option<bool>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub lease_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub report_at: Option<DateTime<Utc>>,
    pub first_click_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// Filters of a page of messages; they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub release_id: Option<Uuid>,
    pub phone_e164: Option<String>,
    pub subscription_id: Option<Uuid>,
    /// Empty means any.
    pub statuses: Vec<MessageStatus>,
}

/// Where a page of messages starts: after this message in the page's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageCursor {
    /// Newest first (no release filter): after (created_at, message_id), descending.
    Newest(DateTime<Utc>, Uuid),
    /// Plan order (a release filter): after (position, message_id), ascending, the messages
    /// without a position (never to be sent) last.
    Plan(Option<i32>, Uuid),
}

const RELEASE_COLUMNS: &str = "r.tenant_id, r.release_id, r.restock_id, r.variant_id, \
    r.product_id, r.location_id, r.strategy, r.stage_shares_bps, r.wave_interval_ms, \
    r.oversubscription, r.first_wave_share_bps, r.absorbed_share_bps, r.holdout_bps, r.state, r.state_reason, r.available_at_restock, \
    r.created_at, r.started_at, r.ended_at, r.updated_at, r.next_wave_at";

const MESSAGE_COLUMNS: &str = "m.tenant_id, m.message_id, m.release_id, m.subscription_id, \
    m.variant_id, c.phone_e164, m.position, m.wave, m.status, m.reason, m.due_at, m.kind, m.body, \
    m.segments, m.encoding, m.sender_id, m.provider_message_id, m.attempts, m.last_error_code, \
    m.last_error_description, m.last_error_permanent, m.last_error_at, m.lease_until, \
    m.created_at, m.sent_at, m.report_at, m.first_click_at, m.updated_at";

const MESSAGE_FROM: &str = "FROM messages m LEFT JOIN contacts c \
    ON c.tenant_id = m.tenant_id AND c.contact_id = m.contact_id";

/// The release's strategy; `None` before it was planned (no strategy stored yet).
fn strategy(r: &Row) -> Option<Strategy> {
    r.get::<_, Option<String>>("strategy")?;
    Some(crate::dispatch::strategy_of(r))
}

fn release_row(r: &Row) -> ReleaseView {
    ReleaseView {
        tenant_id: r.get("tenant_id"),
        release_id: r.get("release_id"),
        restock_id: r.get("restock_id"),
        variant_id: r.get("variant_id"),
        product_id: r.get("product_id"),
        location_id: r.get("location_id"),
        strategy: strategy(r),
        holdout_bps: r.get("holdout_bps"),
        state: r.get("state"),
        state_reason: r.get("state_reason"),
        available_at_restock: r.get("available_at_restock"),
        created_at: r.get("created_at"),
        started_at: r.get("started_at"),
        ended_at: r.get("ended_at"),
        updated_at: r.get("updated_at"),
        next_wave_at: r.get("next_wave_at"),
        waves: Vec::new(),
        tallies: Vec::new(),
    }
}

fn message_row(r: &Row) -> MessageView {
    MessageView {
        tenant_id: r.get(0),
        message_id: r.get(1),
        release_id: r.get(2),
        subscription_id: r.get(3),
        variant_id: r.get(4),
        phone_e164: r.get(5),
        position: r.get(6),
        wave: r.get(7),
        status: r.get(8),
        reason: r.get(9),
        due_at: r.get(10),
        kind: r.get(11),
        body: r.get(12),
        segments: r.get(13),
        encoding: r.get(14),
        sender_id: r.get(15),
        provider_message_id: r.get(16),
        attempts: r.get(17),
        last_error_code: r.get(18),
        last_error_description: r.get(19),
        last_error_permanent: r.get(20),
        last_error_at: r.get(21),
        lease_until: r.get(22),
        created_at: r.get(23),
        sent_at: r.get(24),
        report_at: r.get(25),
        first_click_at: r.get(26),
        updated_at: r.get(27),
    }
}

/// A statement's WHERE clause and its bound parameters, built one filter at a time.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Where {
    /// Binds `value`; answers its placeholder.
    fn bind<T: ToSql + Sync + Send + 'static>(&mut self, value: T) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// Binds `value` and adds `clause`, whose `$` stands for it.
    fn add<T: ToSql + Sync + Send + 'static>(&mut self, clause: &str, value: T) {
        let placeholder = self.bind(value);
        self.clauses.push(clause.replace('$', &placeholder));
    }

    fn add_plain(&mut self, clause: &str) {
        self.clauses.push(clause.to_string());
    }

    fn sql(&self) -> String {
        self.clauses.join(" AND ")
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// Fills in the waves and tallies of `releases` (all of one tenant).
async fn attach_details(
    c: &impl GenericClient,
    tenant_id: &str,
    releases: &mut [ReleaseView],
) -> Result<(), StoreError> {
    if releases.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = releases.iter().map(|r| r.release_id).collect();
    let index = |id: Uuid| releases.iter().position(|r| r.release_id == id);
    let waves = query(
        c,
        "SELECT release_id, number, state, share_bps, scheduled_at, started_at, ended_at, available_before, opened_by \
         FROM release_waves WHERE tenant_id = $1 AND release_id = ANY($2) ORDER BY release_id, number",
        &[&tenant_id, &ids],
    )
    .await?;
    // The kept tallies with the deltas not folded in yet: O(waves x statuses), not O(messages).
    let tallies = query(
        c,
        "SELECT release_id, NULLIF(wave, 0), status, NULLIF(reason, ''), sum(messages)::bigint, \
           sum(segments)::bigint, max(updated_at) \
         FROM (SELECT release_id, wave, status, reason, messages, segments, updated_at FROM release_tallies \
               WHERE tenant_id = $1 AND release_id = ANY($2) \
               UNION ALL \
               SELECT release_id, wave, status, reason, messages, segments, updated_at FROM release_tally_deltas \
               WHERE tenant_id = $1 AND release_id = ANY($2)) t \
         GROUP BY 1, 2, 3, 4 HAVING sum(messages) <> 0",
        &[&tenant_id, &ids],
    )
    .await?;
    let mut by_release: Vec<(Vec<WaveView>, Vec<Tally>)> = vec![Default::default(); ids.len()];
    for w in &waves {
        if let Some(i) = index(w.get(0)) {
            by_release[i].0.push(WaveView {
                number: w.get(1),
                state: w.get(2),
                share_bps: w.get(3),
                scheduled_at: w.get(4),
                started_at: w.get(5),
                ended_at: w.get(6),
                available_before: w.get(7),
                opened_by: w.get(8),
            });
        }
    }
    for t in &tallies {
        if let Some(i) = index(t.get(0)) {
            by_release[i].1.push(Tally {
                wave: t.get(1),
                status: t.get(2),
                reason: t.get(3),
                messages: t.get(4),
                segments: t.get(5),
                updated_at: t.get(6),
            });
        }
    }
    for (release, (waves, tallies)) in releases.iter_mut().zip(by_release) {
        release.waves = waves;
        release.tallies = tallies;
    }
    Ok(())
}

impl Store {
    /// The text planned for a subscription in the release of a restock: its own, else the one
    /// its phone got for another subscription to the same restock (one text per phone).
    pub async fn message_for(
        &self,
        tenant_id: &str,
        subscription_id: Uuid,
        restock_id: Uuid,
    ) -> Result<Option<(Uuid, Option<i32>)>, StoreError> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "SELECT m.message_id, m.position FROM releases r \
             JOIN messages m ON m.tenant_id = r.tenant_id AND m.release_id = r.release_id \
             WHERE r.tenant_id = $1 AND r.restock_id = $3 AND m.kind = 'first' \
               AND m.contact_id = (SELECT contact_id FROM subscriptions \
                                   WHERE tenant_id = $1 AND subscription_id = $2) \
             ORDER BY (m.subscription_id = $2) DESC LIMIT 1",
            &[&tenant_id, &subscription_id, &restock_id],
        )
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// One release with its waves and tallies; `NotFound("release")` when the tenant has none
    /// by that id.
    pub async fn get_release(
        &self,
        tenant_id: &str,
        release_id: Uuid,
    ) -> Result<ReleaseView, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let row = query_opt(
            &tx,
            &format!(
                "SELECT {RELEASE_COLUMNS} FROM releases r WHERE r.tenant_id = $1 AND r.release_id = $2"
            ),
            &[&tenant_id, &release_id],
        )
        .await?
        .ok_or(StoreError::NotFound("release"))?;
        let mut releases = [release_row(&row)];
        attach_details(&tx, tenant_id, &mut releases).await?;
        tx.commit().await?;
        let [release] = releases;
        Ok(release)
    }

    /// A page of the tenant's releases, newest first (created_at, then release_id, both
    /// descending), starting after `after`.
    pub async fn list_releases(
        &self,
        tenant_id: &str,
        filter: &ReleaseFilter,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<ReleaseView>, StoreError> {
        let mut w = Where::default();
        w.add("r.tenant_id = $", tenant_id.to_string());
        if let Some(v) = &filter.variant_id {
            w.add("r.variant_id = $", v.clone());
        }
        if let Some(p) = &filter.product_id {
            w.add("r.product_id = $", p.clone());
        }
        if let Some(l) = &filter.location_id {
            w.add("r.location_id = $", l.clone());
        }
        if let Some(r) = filter.restock_id {
            w.add("r.restock_id = $", r);
        }
        if !filter.states.is_empty() {
            w.add("r.state = ANY($)", filter.states.clone());
        }
        if let Some(t) = filter.created_from {
            w.add("r.created_at >= $", t);
        }
        if let Some(t) = filter.created_before {
            w.add("r.created_at < $", t);
        }
        if let Some((t, id)) = after {
            let (t, id) = (w.bind(t), w.bind(id));
            w.add_plain(&format!("(r.created_at, r.release_id) < ({t}, {id})"));
        }
        let limit = w.bind(limit);
        let sql = format!(
            "SELECT {RELEASE_COLUMNS} FROM releases r WHERE {} \
             ORDER BY r.created_at DESC, r.release_id DESC LIMIT {limit}",
            w.sql()
        );
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let rows = query(&tx, &sql, &w.params()).await?;
        let mut releases: Vec<ReleaseView> = rows.iter().map(release_row).collect();
        attach_details(&tx, tenant_id, &mut releases).await?;
        tx.commit().await?;
        Ok(releases)
    }

    /// One message; `NotFound("message")` when the tenant has none by that id.
    pub async fn get_message(
        &self,
        tenant_id: &str,
        message_id: Uuid,
    ) -> Result<MessageView, StoreError> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            &format!(
                "SELECT {MESSAGE_COLUMNS} {MESSAGE_FROM} WHERE m.tenant_id = $1 AND m.message_id = $2"
            ),
            &[&tenant_id, &message_id],
        )
        .await?
        .ok_or(StoreError::NotFound("message"))?;
        Ok(message_row(&row))
    }

    /// A page of the tenant's messages: in plan order when filtered by release (position order
    /// is wave order, since waves open consecutive ranges of positions; messages never to be
    /// sent come last), else newest first. Starts after `after`, which must be of the order the
    /// filter implies.
    pub async fn list_messages(
        &self,
        tenant_id: &str,
        filter: &MessageFilter,
        after: Option<MessageCursor>,
        limit: i64,
    ) -> Result<Vec<MessageView>, StoreError> {
        let client = self.client().await?;
        let contact: Option<Uuid> = match &filter.phone_e164 {
            None => None,
            Some(phone) => match query_opt(
                &client,
                "SELECT contact_id FROM contacts WHERE tenant_id = $1 AND phone_e164 = $2",
                &[&tenant_id, phone],
            )
            .await?
            {
                Some(row) => Some(row.get(0)),
                None => return Ok(Vec::new()),
            },
        };
        let base = |after: Option<MessageCursor>, positioned: Option<bool>| {
            let mut w = Where::default();
            let tenant = w.bind(tenant_id.to_string());
            w.add_plain(&format!("m.tenant_id = {tenant}"));
            if let Some(r) = filter.release_id {
                w.add("m.release_id = $", r);
            }
            if let Some(contact) = contact {
                // A phone's messages are found through its subscriptions (indexed by contact,
                // and messages by subscription); messages have no index by contact alone.
                let contact = w.bind(contact);
                w.add_plain(&format!(
                    "m.contact_id = {contact} AND m.subscription_id IN (SELECT s.subscription_id \
                     FROM subscriptions s WHERE s.tenant_id = {tenant} AND s.contact_id = {contact})"
                ));
            }
            if let Some(s) = filter.subscription_id {
                // Through its phone's texts (messages_by_contact): a subscription's texts are
                // among them, and the outbox has no index by subscription.
                let s = w.bind(s);
                w.add_plain(&format!(
                    "m.subscription_id = {s} AND m.contact_id = (SELECT s.contact_id \
                     FROM subscriptions s WHERE s.tenant_id = {tenant} AND s.subscription_id = {s})"
                ));
            }
            if !filter.statuses.is_empty() {
                w.add("m.status = ANY($)", filter.statuses.clone());
            }
            match positioned {
                Some(true) => w.add_plain("m.position IS NOT NULL"),
                Some(false) => w.add_plain("m.position IS NULL"),
                None => {}
            }
            match after {
                Some(MessageCursor::Newest(t, id)) => {
                    let (t, id) = (w.bind(t), w.bind(id));
                    w.add_plain(&format!("(m.created_at, m.message_id) < ({t}, {id})"));
                }
                Some(MessageCursor::Plan(Some(p), id)) => {
                    let (p, id) = (w.bind(p), w.bind(id));
                    w.add_plain(&format!("(m.position, m.message_id) > ({p}, {id})"));
                }
                Some(MessageCursor::Plan(None, id)) => w.add("m.message_id > $", id),
                None => {}
            }
            w
        };
        let fetch = |mut w: Where, order: &'static str, limit: i64| {
            let client = &client;
            async move {
                let limit = w.bind(limit);
                let sql = format!(
                    "SELECT {MESSAGE_COLUMNS} {MESSAGE_FROM} WHERE {} ORDER BY {order} LIMIT {limit}",
                    w.sql()
                );
                let rows = query(client, &sql, &w.params()).await?;
                Ok::<_, StoreError>(rows.iter().map(message_row).collect::<Vec<_>>())
            }
        };
        if filter.release_id.is_none() {
            return fetch(
                base(after, None),
                "m.created_at DESC, m.message_id DESC",
                limit,
            )
            .await;
        }
        // Plan order in two index range scans: the positioned messages, then the others.
        let mut page = Vec::new();
        if !matches!(after, Some(MessageCursor::Plan(None, _))) {
            page = fetch(base(after, Some(true)), "m.position, m.message_id", limit).await?;
        }
        let rest = limit - page.len() as i64;
        if rest > 0 {
            let after = match after {
                Some(MessageCursor::Plan(None, id)) => Some(MessageCursor::Plan(None, id)),
                _ => None,
            };
            page.extend(fetch(base(after, Some(false)), "m.message_id", rest).await?);
        }
        Ok(page)
    }
}

/// What a message led to, for an export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageOutcome {
    pub click_count: u64,
    /// Orders with a line credited to the message (TEXT or CLICK basis).
    pub orders: u64,
    /// Revenue of those lines per currency, in code order.
    pub revenue: Vec<(String, i64)>,
}

impl Store {
    /// One batch of the tenant's messages created in `[from, before)`, in (created_at,
    /// message_id) order after `after`, with their outcomes: three statements per batch (the
    /// messages by their keyset, then clicks and credited lines of just those), so an export of
    /// any size reads a batch at a time.
    pub async fn export_messages(
        &self,
        tenant_id: &str,
        from: DateTime<Utc>,
        before: DateTime<Utc>,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<(MessageView, MessageOutcome)>, StoreError> {
        let client = self.client().await?;
        let (after_t, after_id) = match after {
            Some((t, id)) => (Some(t), Some(id)),
            None => (None, None),
        };
        let rows = query(
            &client,
            &format!(
                "SELECT {MESSAGE_COLUMNS} {MESSAGE_FROM} \
                 WHERE m.tenant_id = $1 AND m.created_at >= $2 AND m.created_at < $3 \
                   AND ($4::timestamptz IS NULL OR (m.created_at, m.message_id) > ($4, $5::uuid)) \
                 ORDER BY m.created_at, m.message_id LIMIT $6"
            ),
            &[&tenant_id, &from, &before, &after_t, &after_id, &limit],
        )
        .await?;
        let messages: Vec<MessageView> = rows.iter().map(message_row).collect();
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = messages.iter().map(|m| m.message_id).collect();
        let mut releases: Vec<Uuid> = messages.iter().map(|m| m.release_id).collect();
        releases.sort_unstable();
        releases.dedup();
        let mut outcomes: std::collections::HashMap<Uuid, MessageOutcome> =
            std::collections::HashMap::with_capacity(ids.len());
        for r in query(
            &client,
            "SELECT message_id, count(*) FROM clicks WHERE tenant_id = $1 AND message_id = ANY($2) \
             GROUP BY message_id",
            &[&tenant_id, &ids],
        )
        .await?
        {
            outcomes.entry(r.get(0)).or_default().click_count = r.get::<_, i64>(1).max(0) as u64;
        }
        // Credited lines through the release index, the batch's releases being few.
        for r in query(
            &client,
            "SELECT message_id, currency, count(DISTINCT order_id), sum(total_minor)::bigint \
             FROM purchase_lines WHERE tenant_id = $1 AND release_id = ANY($2) AND message_id = ANY($3) \
               AND basis IN ('text', 'click') \
             GROUP BY GROUPING SETS ((message_id), (message_id, currency)) ORDER BY 1, 2 NULLS FIRST",
            &[&tenant_id, &releases, &ids],
        )
        .await?
        {
            let o = outcomes.entry(r.get(0)).or_default();
            match r.get::<_, Option<String>>(1) {
                None => o.orders = r.get::<_, i64>(2).max(0) as u64,
                Some(currency) => o.revenue.push((currency, r.get(3))),
            }
        }
        // Refunds of those lines, taken off their revenue.
        for r in query(
            &client,
            "SELECT message_id, currency, sum(amount_minor)::bigint FROM refund_lines \
             WHERE tenant_id = $1 AND release_id = ANY($2) AND message_id = ANY($3) \
               AND basis IN ('text', 'click') GROUP BY 1, 2",
            &[&tenant_id, &releases, &ids],
        )
        .await?
        {
            let o = outcomes.entry(r.get(0)).or_default();
            let (currency, refunded): (String, i64) = (r.get(1), r.get(2));
            match o.revenue.iter_mut().find(|(c, _)| *c == currency) {
                Some((_, minor)) => *minor -= refunded,
                None => {
                    o.revenue.push((currency, -refunded));
                    o.revenue.sort();
                }
            }
        }
        Ok(messages
            .into_iter()
            .map(|m| {
                let o = outcomes.remove(&m.message_id).unwrap_or_default();
                (m, o)
            })
            .collect())
    }
}
