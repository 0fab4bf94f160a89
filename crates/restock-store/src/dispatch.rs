//! The dispatch outbox: planning a release into messages, opening its waves, claiming due
//! messages under a lease, recording outcomes, and taking back the leases of crashed senders.
//!
//! Exactly once rests on three things here: a release is planned by one planner holding its
//! row lock (a second replica skips it), in committed chunks each with a checkpoint (a crash
//! resumes after the last chunk); at most one message per
//! (release, phone, kind) by a unique index; and a message is only ever sent by whoever holds
//! its lease, with the outcome written only if the lease is still theirs.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use restock_domain::eligibility::LiveExclusions;
use restock_domain::waves::{self, Step, Strategy};
use restock_domain::{MessageStatus, ReleaseState};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::cached::{execute, query, query_indexed, query_one, query_opt};
use crate::eligibility::{
    candidate, substitute_join, substitute_purchase, CandidateRow, CANDIDATE_COLUMNS,
    SUBSTITUTE_COLUMNS,
};
use crate::{Store, StoreError};

/// A release being planned, with what the planner needs to know about its restock.
#[derive(Debug, Clone)]
pub struct PlanContext {
    pub tenant_id: String,
    pub release_id: Uuid,
    pub restock_id: Uuid,
    pub variant_id: String,
    pub product_id: Option<String>,
    pub location_id: Option<String>,
    pub available_at_restock: i64,
    pub created_at: DateTime<Utc>,
    pub title: Option<String>,
    pub options: BTreeMap<String, String>,
    /// Available-to-sell per location, read in the planning transaction.
    pub stock: Vec<(String, i64)>,
    /// API exclusions in force when planning began.
    pub exclusions: LiveExclusions,
}

/// One waiting subscription, as the planner sees it.
#[derive(Debug, Clone)]
pub struct PlanRow {
    pub candidate: CandidateRow,
    pub contact_id: Uuid,
    /// The latest text about this variant to this phone, in any release.
    pub last_notified_at: Option<DateTime<Utc>>,
    /// The latest purchase of this variant by this phone or customer.
    pub last_purchase_at: Option<DateTime<Utc>>,
}

/// A rendered text.
#[derive(Debug, Clone)]
pub struct Text {
    pub body: String,
    pub segments: i32,
    pub encoding: &'static str,
    pub sender_id: String,
    pub link_token: String,
}

/// The planner's decision on one subscription.
#[derive(Debug, Clone)]
pub enum PlanChoice {
    /// In the plan: sent when its wave opens, or not before `deferred` (until, reason).
    Text {
        text: Text,
        deferred: Option<(DateTime<Utc>, &'static str)>,
    },
    /// In the control group: recorded, never texted.
    HeldOut { link_token: String },
    /// Not texted, for this reason.
    Skip {
        reason: &'static str,
        link_token: String,
    },
}

/// How a release is to be run, fixed when it is planned.
#[derive(Debug, Clone)]
pub struct ReleaseSettings {
    pub strategy: Strategy,
    /// Within a priority tier, propensity score first (highest first, unscored last), then
    /// arrival; otherwise arrival alone.
    pub by_score: bool,
    pub holdout_bps: i32,
    pub threshold: i64,
}

/// What the planner is asked. `settings` is asked once per release, before any `decide`;
/// `None` cancels the release (its tenant is no longer configured).
pub trait Planner: Send {
    fn settings(&mut self, release: &PlanContext) -> Option<ReleaseSettings>;
    fn decide(&mut self, release: &PlanContext, row: &PlanRow) -> PlanChoice;
    /// A chunk of the plan is committed; `claimable` when its texts can be sent already (an
    /// IMMEDIATE release), so senders may be woken.
    fn written(&mut self, _release: &PlanContext, _claimable: bool) {}
}

/// What planning one release did.
#[derive(Debug, Clone)]
pub struct Planned {
    pub tenant_id: String,
    pub release_id: Uuid,
    pub texts: u32,
    pub held_out: u32,
    pub skipped: u32,
    /// Whether a wave opened (false when sold out or cancelled at once).
    pub opened: bool,
    /// The trace context of the inventory event that started the release (tracing on).
    pub traceparent: Option<String>,
}

/// The latest purchase of the variant (`$4`) by the subscription's phone or customer.
/// A click on text `m` that found the variant sold out again: such a text does not count
/// toward the re-notify window (the shopper saw nothing to buy, and waits for the next restock).
pub(crate) const SOLD_OUT_CLICK: &str = "SELECT 1 FROM clicks ck WHERE ck.tenant_id = m.tenant_id \
    AND ck.message_id = m.message_id AND ck.outcome = 'sold_out'";

const LAST_PURCHASE: &str =
    "(SELECT max(p.purchased_at) FROM purchase_lines p WHERE p.tenant_id = s.tenant_id \
     AND p.variant_id = $4 AND (p.contact_id = s.contact_id \
     OR (s.customer_id IS NOT NULL AND p.customer_id = s.customer_id)))";

/// `release_plans.after_score` in the unscored part of a tier.
const UNSCORED: f32 = -1.0;
/// A score cursor at the start of a tier: above every score.
const TIER_START: f32 = 2.0;

/// Where planning by score is: in tier `tier`, after the subscription of score `score` (or in
/// the unscored part when [`UNSCORED`]) and insertion order `seq`.
#[derive(Debug, Clone, Copy)]
struct ScoreCursor {
    tier: i32,
    score: f32,
    seq: i64,
}

/// What one step of planning by score read.
enum ScoreChunk {
    Rows(Vec<Row>),
    /// Nothing where the cursor is; go on from here.
    Next(ScoreCursor),
    /// Every tier is planned.
    Done,
}

/// The statements of planning by score (`release_order = tier_score_arrival`). A tier is read
/// in two parts, each by keyset along its own index so a waitlist of any length plans in
/// linear time: the scored subscriptions by score then arrival (`subscriptions_scored_order`,
/// V13, which holds only scored rows, so Subscribe pays nothing for it), then the unscored
/// ones by arrival (`subscriptions_waitlist_order`); then the next lower tier of the variant's
/// and the product's waitlists together.
struct ScoreStatements {
    scored: tokio_postgres::Statement,
    unscored: tokio_postgres::Statement,
    next_tier: tokio_postgres::Statement,
}

impl ScoreStatements {
    async fn prepare(client: &deadpool_postgres::Client) -> Result<Self, StoreError> {
        let live = "s.status IN ('pending_confirmation', 'active', 'notified')";
        let variant_line = "s.target_key = $2";
        let product_line = "$3::text IS NOT NULL AND s.variant_id IS NULL AND s.product_id = $3";
        let rows = |part: &str, order: &str| {
            let branch = |line: &str| {
                format!(
                    "(SELECT s.tenant_id, s.subscription_id, s.propensity_score AS score, s.seq \
                      FROM subscriptions s WHERE s.tenant_id = $1 AND {live} AND {line} \
                      AND s.priority_tier = $5 AND {part} ORDER BY {order} LIMIT $8)"
                )
            };
            format!(
                "SELECT {CANDIDATE_COLUMNS}, s.contact_id, \
                   (SELECT max(m.sent_at) FROM messages m WHERE m.tenant_id = s.tenant_id \
                      AND m.contact_id = s.contact_id AND m.variant_id = $4 AND m.sent_at IS NOT NULL), \
                   {LAST_PURCHASE}, s.seq, {SUBSTITUTE_COLUMNS}, s.propensity_score \
                 FROM ({} UNION ALL {}) k \
                 JOIN subscriptions s ON s.tenant_id = k.tenant_id AND s.subscription_id = k.subscription_id \
                 JOIN contacts c ON c.tenant_id = s.tenant_id AND c.contact_id = s.contact_id \
                 {} \
                 ORDER BY k.score DESC NULLS LAST, k.seq LIMIT $8",
                branch(variant_line),
                branch(product_line),
                substitute_join("s.tenant_id", "(SELECT substitute_variants($1, $4))"),
            )
        };
        // $6 (the score) is used by the unscored part too, so both take the same parameters.
        let scored = rows(
            // `<= $6` bounds the index range (the keyset alone would be a filter, and every
            // chunk would scan the tier from its top).
            "s.propensity_score IS NOT NULL AND s.propensity_score <= $6 \
             AND (s.propensity_score < $6 OR (s.propensity_score = $6 AND s.seq > $7))",
            "s.propensity_score DESC, s.seq",
        );
        let unscored = rows(
            "s.propensity_score IS NULL AND s.seq > $7 AND $6::real IS NOT NULL",
            "s.seq",
        );
        let next_tier = format!(
            "SELECT GREATEST( \
               (SELECT max(s.priority_tier) FROM subscriptions s WHERE s.tenant_id = $1 AND {live} \
                  AND {variant_line} AND s.priority_tier < $4), \
               (SELECT max(s.priority_tier) FROM subscriptions s WHERE s.tenant_id = $1 AND {live} \
                  AND {product_line} AND s.priority_tier < $4))"
        );
        Ok(Self {
            scored: client.prepare_cached(&scored).await?,
            unscored: client.prepare_cached(&unscored).await?,
            next_tier: client.prepare_cached(&next_tier).await?,
        })
    }

    /// The next rows after `at`, or where to go on from. `base` is (tenant, target key,
    /// product, variant).
    async fn chunk(
        &self,
        client: &deadpool_postgres::Client,
        base: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        at: ScoreCursor,
        limit: i64,
    ) -> Result<ScoreChunk, StoreError> {
        let scored = at.score >= 0.0;
        let statement = if scored { &self.scored } else { &self.unscored };
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            base[0], base[1], base[2], base[3], &at.tier, &at.score, &at.seq, &limit,
        ];
        // As in arrival order: the per-subscriber look-ups through their indexes.
        let (_, rows, _) = tokio::try_join!(
            client.batch_execute("BEGIN; SET LOCAL enable_seqscan = off"),
            client.query(statement, &params),
            client.batch_execute("COMMIT"),
        )?;
        if !rows.is_empty() {
            return Ok(ScoreChunk::Rows(rows));
        }
        if scored {
            return Ok(ScoreChunk::Next(ScoreCursor {
                tier: at.tier,
                score: UNSCORED,
                seq: 0,
            }));
        }
        let next: Option<i32> = client
            .query_one(&self.next_tier, &[base[0], base[1], base[2], &at.tier])
            .await?
            .get(0);
        Ok(match next {
            Some(tier) => ScoreChunk::Next(ScoreCursor {
                tier,
                score: TIER_START,
                seq: 0,
            }),
            None => ScoreChunk::Done,
        })
    }
}

/// Rows are fetched from the candidates' cursor and written in chunks of this many, so a
/// waitlist of any length plans in flat memory.
const PLAN_CHUNK: i32 = 2_000;
/// The first chunk is smaller: its texts go out while the rest is planned.
const FIRST_PLAN_CHUNK: i32 = 250;

#[derive(Default)]
struct Chunk {
    message_id: Vec<Uuid>,
    subscription_id: Vec<Uuid>,
    contact_id: Vec<Uuid>,
    position: Vec<Option<i32>>,
    status: Vec<MessageStatus>,
    reason: Vec<Option<&'static str>>,
    due_at: Vec<Option<DateTime<Utc>>>,
    body: Vec<Option<String>>,
    segments: Vec<i32>,
    encoding: Vec<Option<&'static str>>,
    sender_id: Vec<Option<String>>,
    link_token: Vec<String>,
}

impl Chunk {
    fn push(&mut self, row: &PlanRow, choice: PlanChoice, position: &mut i32) {
        self.message_id.push(Uuid::now_v7());
        self.subscription_id.push(row.candidate.subscription_id);
        self.contact_id.push(row.contact_id);
        match choice {
            PlanChoice::Text { text, deferred } => {
                *position += 1;
                self.position.push(Some(*position));
                match deferred {
                    Some((until, reason)) => {
                        self.status.push(MessageStatus::Deferred);
                        self.reason.push(Some(reason));
                        self.due_at.push(Some(until));
                    }
                    None => {
                        self.status.push(MessageStatus::Planned);
                        self.reason.push(None);
                        self.due_at.push(None);
                    }
                }
                self.body.push(Some(text.body));
                self.segments.push(text.segments);
                self.encoding.push(Some(text.encoding));
                self.sender_id.push(Some(text.sender_id));
                self.link_token.push(text.link_token);
            }
            PlanChoice::HeldOut { link_token } => {
                self.position.push(None);
                self.status.push(MessageStatus::HeldOut);
                self.reason.push(Some("holdout"));
                self.due_at.push(None);
                self.body.push(None);
                self.segments.push(0);
                self.encoding.push(None);
                self.sender_id.push(None);
                self.link_token.push(link_token);
            }
            PlanChoice::Skip { reason, link_token } => {
                self.position.push(None);
                self.status.push(MessageStatus::Skipped);
                self.reason.push(Some(reason));
                self.due_at.push(None);
                self.body.push(None);
                self.segments.push(0);
                self.encoding.push(None);
                self.sender_id.push(None);
                self.link_token.push(link_token);
            }
        }
    }

    /// Inserts the chunk. With `open` (an IMMEDIATE release: everyone is in wave 1), the texts
    /// are written already in their open wave, which spares a second pass over every row.
    async fn write(
        &mut self,
        tx: &impl GenericClient,
        release: &PlanContext,
        open: bool,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if self.message_id.is_empty() {
            return Ok(());
        }
        // A phone waiting twice (a variant alert and a product alert) gets one text: the first
        // in plan order wins, the later one conflicts on messages_one_per_phone and is dropped.
        execute(
            tx,
            "INSERT INTO messages (tenant_id, message_id, release_id, subscription_id, contact_id, \
               variant_id, kind, position, wave, status, reason, due_at, body, segments, encoding, sender_id, \
               link_token, created_at, updated_at) \
             SELECT $1, u.message_id, $2, u.subscription_id, u.contact_id, $3, 'first', u.position, \
               CASE WHEN $17 AND u.position IS NOT NULL THEN 1 END, u.status, u.reason, \
               CASE WHEN $17 AND u.status = 'planned' THEN $4 \
                    WHEN $17 AND u.status = 'deferred' THEN GREATEST(u.due_at, $4) ELSE u.due_at END, \
               u.body, u.segments, u.encoding, u.sender_id, u.link_token, $4, $4 \
             FROM UNNEST($5::uuid[], $6::uuid[], $7::uuid[], $8::int[], $9::text[], $10::text[], \
               $11::timestamptz[], $12::text[], $13::int[], $14::text[], $15::text[], $16::text[]) \
               AS u(message_id, subscription_id, contact_id, position, status, reason, due_at, body, \
                    segments, encoding, sender_id, link_token) \
             ORDER BY u.position NULLS LAST \
             ON CONFLICT (tenant_id, release_id, contact_id, kind) DO NOTHING",
            &[
                &release.tenant_id,
                &release.release_id,
                &release.variant_id,
                &now,
                &self.message_id,
                &self.subscription_id,
                &self.contact_id,
                &self.position,
                &self.status,
                &self.reason,
                &self.due_at,
                &self.body,
                &self.segments,
                &self.encoding,
                &self.sender_id,
                &self.link_token,
                &open,
            ],
        )
        .await?;
        *self = Chunk::default();
        Ok(())
    }
}

/// Which texts a claim takes. Small releases (a plan of at most `small_max` texts) have an
/// express lane of their own, so a restock of twenty phones is texted within moments even while
/// another tenant's 100,000 fill every bulk batch: a bulk batch takes a while from its claim to
/// its last hand-over, and a text claimed into one waits for all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Every due text (callers that step the workers, and tests).
    Any,
    /// Every due text, except a small release's during its first `first_call` after it fell
    /// due: the express lane has first call on it, and the bulk lane helps when it is behind.
    Bulk {
        small_max: i32,
        first_call: Duration,
    },
    /// Only the texts of small releases.
    Express { small_max: i32 },
}

/// A release whose next wave is due.
#[derive(Debug, Clone)]
pub struct DueWave {
    pub tenant_id: String,
    pub release_id: Uuid,
}

/// A message claimed for sending, with everything send-time eligibility needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub tenant_id: String,
    pub message_id: Uuid,
    pub release_id: Uuid,
    pub restock_id: Uuid,
    pub variant_id: String,
    pub product_id: Option<String>,
    pub location_id: Option<String>,
    pub contact_id: Uuid,
    /// What it was before the claim (`planned` or `deferred`), to give it back unchanged.
    pub previous_status: MessageStatus,
    pub previous_reason: Option<String>,
    pub kind: String,
    pub attempts: i32,
    pub body: String,
    pub sender_id: String,
    pub attempted_at: DateTime<Utc>,
    pub candidate: CandidateRow,
    /// The latest text about the variant to the phone in another release (a reminder is
    /// not held back by its own release's first text).
    pub last_notified_at: Option<DateTime<Utc>>,
    pub last_purchase_at: Option<DateTime<Utc>>,
    pub title: Option<String>,
    pub variant_options: BTreeMap<String, String>,
    /// The trace context of the inventory event that started the release (tracing on).
    pub traceparent: Option<String>,
}

/// The outcome of one claimed message, written if the lease is still the writer's.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub tenant_id: String,
    pub message_id: Uuid,
    pub status: MessageStatus,
    pub reason: Option<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub provider_message_id: Option<String>,
    pub provider_status: Option<String>,
    pub segments: Option<i32>,
    pub sent_at: Option<DateTime<Utc>>,
    /// 1 when this outcome ends a hand-over to the provider, 0 when none was made.
    pub attempted: i32,
    pub error: Option<OutcomeError>,
    /// Keep the message `sending` under no owner until then (an unknown outcome, to be
    /// reconciled once the provider has had time to list it).
    pub lease_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct OutcomeError {
    pub code: String,
    pub description: String,
    pub permanent: bool,
}

impl Outcome {
    /// A claimed message given back as it was before the claim, due now: its hand-over did
    /// not begin.
    pub fn given_back(c: &Claimed, now: DateTime<Utc>) -> Self {
        let status = match c.previous_status {
            MessageStatus::Deferred => MessageStatus::Deferred,
            _ => MessageStatus::Planned,
        };
        Self::status(c, status, c.previous_reason.clone(), Some(now))
    }

    /// An outcome that changes only the status (and reason, and due time).
    pub fn status(
        c: &Claimed,
        status: MessageStatus,
        reason: Option<String>,
        due_at: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            tenant_id: c.tenant_id.clone(),
            message_id: c.message_id,
            status,
            reason,
            due_at,
            provider_message_id: None,
            provider_status: None,
            segments: None,
            sent_at: None,
            attempted: 0,
            error: None,
            lease_until: None,
        }
    }
}

/// A message whose lease ran out while `sending`: its sender died or lost track of it.
#[derive(Debug, Clone)]
pub struct Expired {
    pub tenant_id: String,
    pub message_id: Uuid,
    pub release_id: Uuid,
    pub phone_e164: Option<String>,
    pub body: Option<String>,
    pub sender_id: Option<String>,
    pub attempted_at: Option<DateTime<Utc>>,
    pub attempts: i32,
}

/// The reminder of a first text: (tenant, first message, rendered text, due at).
pub type Reminder = (String, Uuid, Text, DateTime<Utc>);

/// A first text handed over: when its release's restock happened, to measure the latency.
#[derive(Debug, Clone)]
pub struct FirstText {
    pub tenant_id: String,
    pub release_id: Uuid,
    pub restock_at: DateTime<Utc>,
}

impl Store {
    /// Plans the oldest release waiting to be planned, if any, and opens its first wave. The
    /// release stays locked by one transaction throughout; its messages are written in
    /// committed chunks, each with a checkpoint (`release_plans`), so a planning cut short
    /// resumes after its last chunk, with neither a duplicate nor a gap. `None`: nothing to
    /// plan (or every candidate is being planned elsewhere).
    pub async fn plan_next_release(
        &self,
        planner: &mut dyn Planner,
        now: DateTime<Utc>,
    ) -> Result<Option<Planned>, StoreError> {
        // The planner's own connection, out of the pool: the release is held by a session
        // advisory lock on it, so no transaction stays open while planning goes on (an open
        // transaction would keep every message version the senders replace meanwhile, and
        // their claims would wade through them). Planned, the lock is released and the
        // connection goes back to the pool; dropped on any other way out, the connection closes
        // and the lock goes with it, whatever happened, exactly as when the process dies.
        let mut guard = OwnConnection(Some(self.client().await?));
        let client = guard.0.as_mut().expect("set above");
        // The oldest release waiting that no other planner holds, locked, in one statement:
        // the candidates are materialized in age order and tried one by one until a lock is
        // had (a bigint advisory key shows in pg_locks as classid, high half, and objid).
        let locked: Option<Uuid> = query_opt(
            &*client,
            "WITH c AS MATERIALIZED ( \
               SELECT r.release_id FROM releases r WHERE r.state = 'planning' AND NOT EXISTS ( \
                 SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 1 \
                   AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND ((l.classid::bigint << 32) | l.objid::bigint) \
                     = hashtextextended('plan:' || r.release_id::text, 0)) \
               ORDER BY r.created_at LIMIT 8) \
             SELECT c.release_id FROM c \
             WHERE pg_try_advisory_lock(hashtextextended('plan:' || c.release_id::text, 0)) LIMIT 1",
            &[],
        )
        .await?
        .map(|r| r.get(0));
        let Some(release_id) = locked else {
            // Nothing to plan: the connection holds no lock and goes back to the pool.
            guard.keep();
            return Ok(None);
        };
        // Read after the lock, in a snapshot of its own: a release planned by another planner
        // that let go of it just now shows as planned.
        let row = query_opt(
            &*client,
            "SELECT r.tenant_id, r.release_id, r.restock_id, r.variant_id, r.product_id, r.location_id, \
               r.available_at_restock, r.created_at, v.title, COALESCE(v.options, '{}'::jsonb), \
               r.traceparent \
             FROM releases r LEFT JOIN variants v ON v.tenant_id = r.tenant_id AND v.variant_id = r.variant_id \
             WHERE r.release_id = $1 AND r.state = 'planning'",
            &[&release_id],
        )
        .await?;
        let Some(row) = row else {
            // Planned (or steered) by someone else meanwhile.
            guard.give_back(release_id).await;
            return Ok(None);
        };
        let options: serde_json::Value = row.get(9);
        let mut release = PlanContext {
            tenant_id: row.get(0),
            release_id: row.get(1),
            restock_id: row.get(2),
            variant_id: row.get(3),
            product_id: row.get(4),
            location_id: row.get(5),
            available_at_restock: row.get(6),
            created_at: row.get(7),
            title: row.get(8),
            options: serde_json::from_value(options).unwrap_or_default(),
            stock: Vec::new(),
            exclusions: LiveExclusions::default(),
        };
        // Where an earlier, interrupted planning of this release got to: its chunks are
        // committed, so planning goes on after the last subscription they hold. Read with the
        // stock and the exclusions, pipelined.
        let key: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
            [&release.tenant_id, &release.release_id];
        let (stock, exclusions, checkpoint) = tokio::try_join!(
            stock_levels(&*client, &release.tenant_id, &release.variant_id),
            crate::eligibility::live_exclusions(
                &*client,
                &release.tenant_id,
                &release.variant_id,
                release.product_id.as_deref(),
                now,
            ),
            query_opt(
                &*client,
                "SELECT after_tier, after_seq, position, texts, held_out, skipped, after_score FROM release_plans \
                 WHERE tenant_id = $1 AND release_id = $2",
                &key,
            ),
        )?;
        release.stock = stock;
        release.exclusions = exclusions;
        let mut planned = Planned {
            tenant_id: release.tenant_id.clone(),
            release_id: release.release_id,
            texts: 0,
            held_out: 0,
            skipped: 0,
            opened: false,
            traceparent: row.get(10),
        };
        let Some(settings) = planner.settings(&release) else {
            execute(
                &*client,
                "UPDATE releases SET state = 'cancelled', state_reason = 'the tenant is not configured', \
                   ended_at = $3, updated_at = $3 WHERE tenant_id = $1 AND release_id = $2 AND state = 'planning'",
                &[&release.tenant_id, &release.release_id, &now],
            )
            .await?;
            return Ok(Some(planned));
        };

        let mut position = 0i32;
        // Plan order is tier descending, then seq: start above every tier.
        let (mut after_tier, mut after_seq) = (i32::MAX, 0i64);
        // By score: where in the tier (see `ScoreCursor`); above every tier, nothing is left
        // of it, so the first query moves on to the top tier.
        let mut after_score = UNSCORED;
        if settings.by_score {
            after_seq = i64::MAX;
        }
        if let Some(c) = &checkpoint {
            (after_tier, after_seq, after_score) = (c.get(0), c.get(1), c.get(6));
            position = c.get(2);
            planned.texts = c.get::<_, i32>(3) as u32;
            planned.held_out = c.get::<_, i32>(4) as u32;
            planned.skipped = c.get::<_, i32>(5) as u32;
        }
        // The next chunk after (tier $5, seq $6), by keyset: within the tier, then the lower
        // tiers, from the variant's waitlist and from its product's, each branch one range of
        // its index; the look-ups per subscriber only for the chunk.
        let branch = |line: &str, rest: &str, order: &str| {
            format!(
                "(SELECT s.tenant_id, s.subscription_id, s.priority_tier, s.seq FROM subscriptions s \
                  WHERE s.tenant_id = $1 AND s.status IN ('pending_confirmation', 'active', 'notified') \
                  AND {line} AND {rest} ORDER BY {order} LIMIT $7)"
            )
        };
        let variant_line = "s.target_key = $2";
        let product_line = "$3::text IS NOT NULL AND s.variant_id IS NULL AND s.product_id = $3";
        let same_tier = "s.priority_tier = $5 AND s.seq > $6";
        let lower_tiers = "s.priority_tier < $5";
        let sql = format!(
            "SELECT {CANDIDATE_COLUMNS}, s.contact_id, \
               (SELECT max(m.sent_at) FROM messages m WHERE m.tenant_id = s.tenant_id \
                  AND m.contact_id = s.contact_id AND m.variant_id = $4 AND m.sent_at IS NOT NULL \
                  AND NOT EXISTS ({SOLD_OUT_CLICK})), \
               {LAST_PURCHASE}, s.seq, {SUBSTITUTE_COLUMNS} \
             FROM ({} UNION ALL {} UNION ALL {} UNION ALL {}) k \
             JOIN subscriptions s ON s.tenant_id = k.tenant_id AND s.subscription_id = k.subscription_id \
             JOIN contacts c ON c.tenant_id = s.tenant_id AND c.contact_id = s.contact_id \
             {} \
             ORDER BY k.priority_tier DESC, k.seq LIMIT $7",
            branch(variant_line, same_tier, "s.seq"),
            branch(variant_line, lower_tiers, "s.priority_tier DESC, s.seq"),
            branch(product_line, same_tier, "s.seq"),
            branch(product_line, lower_tiers, "s.priority_tier DESC, s.seq"),
            // The restocked variant's substitutes, read once per chunk (an init plan).
            substitute_join("s.tenant_id", "(SELECT substitute_variants($1, $4))"),
        );
        let statement = client.prepare_cached(&sql).await?;
        let target_key = format!("v:{}", release.variant_id);
        let by_score = if settings.by_score {
            Some(ScoreStatements::prepare(client).await?)
        } else {
            None
        };
        // Chunks are committed one by one, each with the checkpoint after it: the texts of an
        // IMMEDIATE release are claimable from the first chunk on, and a crash loses at most
        // the chunk in hand.
        let mut chunk = Chunk::default();
        let immediate = settings.strategy == Strategy::Immediate;
        let mut size = FIRST_PLAN_CHUNK;
        loop {
            let limit = i64::from(size);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                &release.tenant_id,
                &target_key,
                &release.product_id,
                &release.variant_id,
                &after_tier,
                &after_seq,
                &limit,
            ];
            // The per-subscriber look-ups (the phone's last text, its last purchase) must go
            // through their indexes whatever the statistics say: a table still small when
            // planned (a fresh outbox) would be scanned whole for every subscriber while
            // planning fills it, which is quadratic in the waitlist. One round trip.
            let (rows, done) = match &by_score {
                None => {
                    let (_, rows, _) = tokio::try_join!(
                        client.batch_execute("BEGIN; SET LOCAL enable_seqscan = off"),
                        client.query(&statement, &params),
                        client.batch_execute("COMMIT"),
                    )?;
                    let done = (rows.len() as i32) < size;
                    (rows, done)
                }
                Some(s) => {
                    let cursor = ScoreCursor {
                        tier: after_tier,
                        score: after_score,
                        seq: after_seq,
                    };
                    match s.chunk(client, &params[..4], cursor, limit).await? {
                        ScoreChunk::Rows(rows) => (rows, false),
                        // Nothing left where the cursor is: go on from the next place.
                        ScoreChunk::Next(n) => {
                            (after_tier, after_score, after_seq) = (n.tier, n.score, n.seq);
                            continue;
                        }
                        ScoreChunk::Done => break,
                    }
                }
            };
            size = PLAN_CHUNK;
            for r in &rows {
                let mut candidate = candidate(r)?;
                candidate.substitute_purchase = substitute_purchase(r, 17);
                let plan_row = PlanRow {
                    candidate,
                    contact_id: r.get(13),
                    last_notified_at: r.get(14),
                    last_purchase_at: r.get(15),
                };
                let choice = planner.decide(&release, &plan_row);
                match &choice {
                    PlanChoice::Text { .. } => planned.texts += 1,
                    PlanChoice::HeldOut { .. } => planned.held_out += 1,
                    PlanChoice::Skip { .. } => planned.skipped += 1,
                }
                chunk.push(&plan_row, choice, &mut position);
            }
            if let Some(last) = rows.last() {
                (after_tier, after_seq) = (last.get(11), last.get(16));
                if by_score.is_some() {
                    after_score = last.get::<_, Option<f32>>(20).unwrap_or(UNSCORED);
                }
                if done {
                    // The last chunk is written with the release's size and state, below: a
                    // plan of one chunk becomes claimable already known as small (see `Lane`).
                    break;
                }
                let tx = client.transaction().await?;
                // A release paused or cancelled meanwhile gets no more messages: the steering
                // call holds the row while it ends the messages already written.
                if !still_planning(&tx, &release).await? {
                    return Ok(None);
                }
                chunk.write(&tx, &release, immediate, now).await?;
                execute(
                    &tx,
                    "INSERT INTO release_plans (tenant_id, release_id, after_tier, after_seq, position, \
                       texts, held_out, skipped, updated_at, after_score) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (tenant_id, release_id) DO UPDATE SET after_tier = $3, after_seq = $4, \
                       position = $5, texts = $6, held_out = $7, skipped = $8, updated_at = $9, \
                       after_score = $10",
                    &[
                        &release.tenant_id,
                        &release.release_id,
                        &after_tier,
                        &after_seq,
                        &position,
                        &(planned.texts as i32),
                        &(planned.held_out as i32),
                        &(planned.skipped as i32),
                        &now,
                        &after_score,
                    ],
                )
                .await?;
                tx.commit().await?;
                planner.written(&release, immediate);
            }
            if done {
                break;
            }
        }

        let (mut first_share, mut absorbed_share) = (None::<i32>, None::<i32>);
        let (strategy, shares, interval_ms, factor) = match &settings.strategy {
            Strategy::Immediate => ("immediate", Vec::new(), 0i64, None),
            Strategy::SellThrough {
                first_share_bps,
                absorbed_share_bps,
                factor,
                interval,
            } => {
                first_share = Some(*first_share_bps as i32);
                absorbed_share = Some(*absorbed_share_bps as i32);
                (
                    "sell_through",
                    Vec::new(),
                    interval.as_millis() as i64,
                    Some(*factor),
                )
            }
            Strategy::Staged {
                shares_bps,
                interval,
            } => (
                "staged",
                shares_bps.iter().map(|&s| s as i32).collect(),
                interval.as_millis() as i64,
                None,
            ),
            Strategy::Proportional { factor, interval } => (
                "proportional",
                Vec::new(),
                interval.as_millis() as i64,
                Some(*factor),
            ),
        };
        let tx = client.transaction().await?;
        if !still_planning(&tx, &release).await? {
            return Ok(None);
        }
        // The last chunk, the checkpoint gone and the release's size and state: independent
        // writes, pipelined (a small restock's whole plan is this one round trip).
        let sized: [&(dyn tokio_postgres::types::ToSql + Sync); 11] = [
            &release.tenant_id,
            &release.release_id,
            &strategy,
            &shares,
            &interval_ms,
            &factor,
            &settings.holdout_bps,
            &position,
            &now,
            &first_share,
            &absorbed_share,
        ];
        tokio::try_join!(
            chunk.write(&tx, &release, immediate, now),
            execute(
                &tx,
                "DELETE FROM release_plans WHERE tenant_id = $1 AND release_id = $2",
                &sized[..2],
            ),
            execute(
                &tx,
                "UPDATE releases SET strategy = $3, stage_shares_bps = $4, wave_interval_ms = $5, \
                   oversubscription = $6, holdout_bps = $7, plan_size = $8, state = 'sending', \
                   next_wave_at = $9, updated_at = $9, first_wave_share_bps = $10, absorbed_share_bps = $11 \
                 WHERE tenant_id = $1 AND release_id = $2",
                &sized,
            ),
        )?;
        if let Strategy::Staged {
            shares_bps,
            interval,
        } = &settings.strategy
        {
            // Every wave of a staged release is known up front, so its schedule can be shown.
            for (i, share) in shares_bps.iter().enumerate() {
                let at = now + chrono::Duration::from_std(*interval * i as u32).unwrap_or_default();
                execute(
                    &tx,
                    "INSERT INTO release_waves (tenant_id, release_id, number, state, share_bps, scheduled_at) \
                     VALUES ($1, $2, $3, 'pending', $4, $5)",
                    &[&release.tenant_id, &release.release_id, &(i as i32 + 1), &(*share as i32), &at],
                )
                .await?;
            }
        }
        planned.opened = open_wave(
            &tx,
            &release.tenant_id,
            release.release_id,
            settings.threshold,
            Opening::Scheduled,
            now,
        )
        .await?;
        tx.commit().await?;
        planner.written(&release, immediate || planned.opened);
        guard.give_back(release.release_id).await;
        Ok(Some(planned))
    }

    /// Opens the next wave of releases whose wave is due (or ends them as sold out), one
    /// transaction per release. Answers how many it handled.
    pub async fn open_due_waves(
        &self,
        thresholds: &(dyn Fn(&str) -> i64 + Sync),
        now: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let mut handled = 0;
        loop {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let Some(row) = query_opt(
                &tx,
                "SELECT tenant_id, release_id FROM releases \
                 WHERE state = 'sending' AND next_wave_at <= $1 \
                 ORDER BY next_wave_at LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&now],
            )
            .await?
            else {
                return Ok(handled);
            };
            let tenant_id: String = row.get(0);
            open_wave(
                &tx,
                &tenant_id,
                row.get(1),
                thresholds(&tenant_id),
                Opening::Scheduled,
                now,
            )
            .await?;
            tx.commit().await?;
            handled += 1;
        }
    }

    /// Opens, before their time, the next wave of sell-through releases whose previous wave
    /// has absorbed its demand (`waves::absorbed`), unless stock falls faster than its texts
    /// explain (`waves::hold`). One transaction per release; answers how many opened.
    pub async fn open_absorbed_waves(
        &self,
        thresholds: &(dyn Fn(&str) -> i64 + Sync),
        now: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let client = self.client().await?;
        let rows = query(
            &client,
            &format!(
                "SELECT r.tenant_id, r.release_id, {PROGRESS} \
                 FROM releases r JOIN release_waves w ON w.tenant_id = r.tenant_id \
                   AND w.release_id = r.release_id AND w.number = r.next_wave - 1 \
                 WHERE r.state = 'sending' AND r.strategy = 'sell_through' AND r.next_wave_at > $1"
            ),
            &[&now],
        )
        .await?;
        drop(client);
        let mut opened = 0;
        for row in rows {
            let (tenant_id, release_id): (String, Uuid) = (row.get(0), row.get(1));
            let strategy = strategy_of(&row);
            let progress = progress_of(&row);
            if !waves::absorbed(&strategy, &progress) || waves::hold(&strategy, Some(progress)) {
                continue;
            }
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Still waiting for its next wave, and not being opened by anyone else.
            if query_opt(
                &tx,
                "SELECT 1 FROM releases WHERE tenant_id = $1 AND release_id = $2 \
                 AND state = 'sending' AND next_wave_at > $3 FOR UPDATE SKIP LOCKED",
                &[&tenant_id, &release_id, &now],
            )
            .await?
            .is_none()
            {
                continue;
            }
            if open_wave(
                &tx,
                &tenant_id,
                release_id,
                thresholds(&tenant_id),
                Opening::Absorbed,
                now,
            )
            .await?
            {
                opened += 1;
            }
            tx.commit().await?;
        }
        Ok(opened)
    }

    /// Marks waves whose messages all reached an outcome done, and releases with every wave
    /// open and nothing left to send completed. Judged from the release tallies (folded here
    /// first, so the deltas stay few), not by looking through the outbox.
    pub async fn complete_finished(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let client = self.client().await?;
        query_one(&client, "SELECT release_tallies_fold()", &[]).await?;
        execute(
            &client,
            &format!(
                "UPDATE release_waves w SET state = 'done', ended_at = $1 \
                 WHERE w.state = 'sending' AND {} = 0",
                open_messages("w.tenant_id", "w.release_id", "AND wave = w.number")
            ),
            &[&now],
        )
        .await?;
        // A release completes with its last waves, in one statement, so no one ever sees a
        // completed release with a wave still sending.
        execute(
            &client,
            &format!(
                "WITH done AS ( \
                   UPDATE releases r SET state = 'completed', state_reason = 'every message reached an outcome', \
                     ended_at = $1, updated_at = $1 \
                   WHERE r.state = 'sending' AND r.next_wave_at IS NULL AND {} = 0 \
                   RETURNING r.tenant_id, r.release_id) \
                 UPDATE release_waves w SET state = 'done', ended_at = $1 FROM done \
                 WHERE w.tenant_id = done.tenant_id AND w.release_id = done.release_id AND w.state = 'sending'",
                open_messages("r.tenant_id", "r.release_id", "")
            ),
            &[&now],
        )
        .await
    }

    /// Claims up to `limit` due messages of sending releases for `owner`, under a lease.
    ///
    /// Releases take turns: the batch holds the first due message of every release, then the
    /// second of each, and so on (each release in its own plan order, due first). A restock of
    /// twenty phones is claimed in the next batch even while another tenant's 100,000 are
    /// sending, rather than after them. Each release is one range of `messages_due`.
    pub async fn claim_due(
        &self,
        owner: &str,
        lease: Duration,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, StoreError> {
        self.claim_due_in(owner, lease, limit, now, Lane::Any).await
    }

    /// [`claim_due`](Self::claim_due) in one lane: the express lane claims only the texts of
    /// small releases; the bulk lane leaves those to it for their first moments (see [`Lane`]).
    pub async fn claim_due_in(
        &self,
        owner: &str,
        lease: Duration,
        limit: i64,
        now: DateTime<Utc>,
        lane: Lane,
    ) -> Result<Vec<Claimed>, StoreError> {
        let client = self.client().await?;
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        // $5: the largest plan that is "small"; $6: how long ago a small release's text must
        // have fallen due for this lane to take it. A plan is known small once planned (the
        // planning of a one-chunk plan commits its texts and its size together).
        let (small_max, small_due): (i32, DateTime<Utc>) = match lane {
            Lane::Any => (-1, now),
            Lane::Bulk {
                small_max,
                first_call,
            } => (
                small_max,
                now - chrono::Duration::from_std(first_call).unwrap_or_default(),
            ),
            Lane::Express { small_max } => (small_max, now),
        };
        let releases = match lane {
            Lane::Express { .. } => "r.state = 'sending' AND r.plan_size <= $5",
            Lane::Any | Lane::Bulk { .. } => "r.state IN ('sending', 'planning')",
        };
        let sql = format!(
            "WITH due AS ( \
               SELECT d.tenant_id, d.message_id, d.previous_status, d.previous_reason \
               FROM releases r CROSS JOIN LATERAL ( \
                 SELECT m.tenant_id, m.message_id, m.status AS previous_status, \
                   m.reason AS previous_reason, m.due_at, m.position, \
                   row_number() OVER (ORDER BY m.due_at, m.position) AS turn \
                 FROM (SELECT m.tenant_id, m.message_id, m.status, m.reason, m.due_at, m.position \
                   FROM messages m \
                   WHERE m.tenant_id = r.tenant_id AND m.release_id = r.release_id \
                     AND m.status IN ('planned', 'deferred') AND m.wave IS NOT NULL \
                     AND m.due_at <= CASE WHEN r.state = 'sending' AND r.plan_size <= $5::int THEN $6::timestamptz ELSE $1::timestamptz END \
                   ORDER BY m.due_at, m.position LIMIT $4 FOR UPDATE SKIP LOCKED) m) d \
               WHERE {releases} \
               ORDER BY d.turn, d.due_at, d.position LIMIT $4), \
             claimed AS ( \
               UPDATE messages m SET status = 'sending', lease_owner = $2, lease_until = $3, \
                 attempted_at = $1, updated_at = $1 \
               FROM due WHERE m.tenant_id = due.tenant_id AND m.message_id = due.message_id \
               RETURNING m.tenant_id, m.message_id, m.release_id, m.kind, m.attempts, m.body, m.sender_id, \
                 m.subscription_id, m.contact_id, m.variant_id, due.previous_status, due.previous_reason) \
             SELECT {CANDIDATE_COLUMNS}, k.tenant_id, k.message_id, k.release_id, k.kind, k.attempts, \
               COALESCE(k.body, ''), COALESCE(k.sender_id, ''), k.previous_status, k.previous_reason, \
               r.restock_id, r.variant_id, r.location_id, COALESCE(v.options, '{{}}'::jsonb), \
               (SELECT max(m2.sent_at) FROM messages m2 WHERE m2.tenant_id = k.tenant_id \
                  AND m2.contact_id = k.contact_id AND m2.variant_id = k.variant_id \
                  AND m2.sent_at IS NOT NULL AND m2.release_id <> k.release_id \
                  AND NOT EXISTS (SELECT 1 FROM clicks c2 WHERE c2.tenant_id = m2.tenant_id \
                    AND c2.message_id = m2.message_id AND c2.outcome = 'sold_out')), \
               k.contact_id, r.product_id, \
               (SELECT max(p.purchased_at) FROM purchase_lines p WHERE p.tenant_id = k.tenant_id \
                  AND p.variant_id = k.variant_id AND (p.contact_id = k.contact_id \
                  OR (s.customer_id IS NOT NULL AND p.customer_id = s.customer_id))), \
               v.title, r.traceparent, {SUBSTITUTE_COLUMNS} \
             FROM claimed k \
             JOIN subscriptions s ON s.tenant_id = k.tenant_id AND s.subscription_id = k.subscription_id \
             JOIN contacts c ON c.tenant_id = k.tenant_id AND c.contact_id = k.contact_id \
             JOIN releases r ON r.tenant_id = k.tenant_id AND r.release_id = k.release_id \
             LEFT JOIN variants v ON v.tenant_id = k.tenant_id AND v.variant_id = r.variant_id \
             {}",
            // Read at claim time: a substitute bought after planning still stops the text.
            substitute_join(
                "k.tenant_id",
                "substitute_variants(k.tenant_id, k.variant_id)"
            )
        );
        let statement = client.prepare_cached(&sql).await?;
        // One round trip: the transaction (index look-ups per claimed message whatever the
        // statistics say, see planning), the claim and the commit are pipelined. A failed
        // claim aborts the transaction, and its COMMIT then rolls back.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
            [&now, &owner, &lease_until, &limit, &small_max, &small_due];
        let (_, rows, _) = tokio::try_join!(
            client.batch_execute("BEGIN; SET LOCAL enable_seqscan = off"),
            client.query(&statement, &params),
            client.batch_execute("COMMIT"),
        )?;
        rows.iter()
            .map(|r| {
                let options: serde_json::Value = r.get(25);
                let mut candidate = candidate(r)?;
                candidate.substitute_purchase = substitute_purchase(r, 32);
                Ok(Claimed {
                    candidate,
                    tenant_id: r.get(13),
                    message_id: r.get(14),
                    release_id: r.get(15),
                    kind: r.get(16),
                    attempts: r.get(17),
                    body: r.get(18),
                    sender_id: r.get(19),
                    previous_status: r.get(20),
                    previous_reason: r.get(21),
                    restock_id: r.get(22),
                    variant_id: r.get(23),
                    location_id: r.get(24),
                    variant_options: serde_json::from_value(options).unwrap_or_default(),
                    last_notified_at: r.get(26),
                    contact_id: r.get(27),
                    product_id: r.get(28),
                    last_purchase_at: r.get(29),
                    title: r.get(30),
                    traceparent: r.get(31),
                    attempted_at: now,
                })
            })
            .collect()
    }

    /// Writes outcomes of messages `owner` holds; an outcome whose lease was lost is not
    /// written (whoever took the lease decides). Answers the first texts of releases among
    /// them (each release once, ever).
    pub async fn record_outcomes(
        &self,
        owner: &str,
        outcomes: &[Outcome],
        now: DateTime<Utc>,
    ) -> Result<(u64, Vec<FirstText>), StoreError> {
        self.record_outcomes_with(owner, outcomes, &[], now).await
    }

    /// [`Store::record_outcomes`], adding in the same transaction the reminders of first texts
    /// just sent (see [`Store::add_reminders`]), so a release cannot complete between the two.
    pub async fn record_outcomes_with(
        &self,
        owner: &str,
        outcomes: &[Outcome],
        reminders: &[Reminder],
        now: DateTime<Utc>,
    ) -> Result<(u64, Vec<FirstText>), StoreError> {
        if outcomes.is_empty() {
            return Ok((0, Vec::new()));
        }
        let mut client = self.client().await?;
        let col =
            |f: &dyn Fn(&Outcome) -> Option<String>| outcomes.iter().map(f).collect::<Vec<_>>();
        let tenant: Vec<&str> = outcomes.iter().map(|o| o.tenant_id.as_str()).collect();
        let id: Vec<Uuid> = outcomes.iter().map(|o| o.message_id).collect();
        let status: Vec<MessageStatus> = outcomes.iter().map(|o| o.status).collect();
        let reason = col(&|o| o.reason.clone());
        let due: Vec<Option<DateTime<Utc>>> = outcomes.iter().map(|o| o.due_at).collect();
        let pid = col(&|o| o.provider_message_id.clone());
        let pstatus = col(&|o| o.provider_status.clone());
        let segments: Vec<Option<i32>> = outcomes.iter().map(|o| o.segments).collect();
        let sent: Vec<Option<DateTime<Utc>>> = outcomes.iter().map(|o| o.sent_at).collect();
        let attempted: Vec<i32> = outcomes.iter().map(|o| o.attempted).collect();
        let ecode = col(&|o| o.error.as_ref().map(|e| e.code.clone()));
        let edesc = col(&|o| o.error.as_ref().map(|e| e.description.clone()));
        let eperm: Vec<Option<bool>> = outcomes
            .iter()
            .map(|o| o.error.as_ref().map(|e| e.permanent))
            .collect();
        let lease: Vec<Option<DateTime<Utc>>> = outcomes.iter().map(|o| o.lease_until).collect();
        // One statement, so one round trip and atomic without a transaction: the outcomes,
        // then, for texts just sent, their subscriptions (NOTIFIED) and the first text of
        // their releases.
        let sql = "WITH m AS ( \
               UPDATE messages m SET status = u.status, reason = u.reason, due_at = u.due_at, \
               provider_message_id = COALESCE(u.pid, m.provider_message_id), \
               provider_status = COALESCE(u.pstatus, m.provider_status), \
               segments = COALESCE(u.segments, m.segments), sent_at = COALESCE(u.sent_at, m.sent_at), \
               attempts = m.attempts + u.attempted, \
               last_error_code = COALESCE(u.ecode, m.last_error_code), \
               last_error_description = COALESCE(u.edesc, m.last_error_description), \
               last_error_permanent = COALESCE(u.eperm, m.last_error_permanent), \
               last_error_at = CASE WHEN u.ecode IS NULL THEN m.last_error_at ELSE $2 END, \
               lease_until = u.lease, lease_owner = NULL, updated_at = $2, \
               handed_at = CASE WHEN u.status = 'sending' THEN m.handed_at END \
             FROM UNNEST($3::text[], $4::uuid[], $5::text[], $6::text[], $7::timestamptz[], $8::text[], \
               $9::text[], $10::int[], $11::timestamptz[], $12::int[], $13::text[], $14::text[], \
               $15::bool[], $16::timestamptz[]) \
               AS u(tenant_id, message_id, status, reason, due_at, pid, pstatus, segments, sent_at, \
                    attempted, ecode, edesc, eperm, lease) \
             WHERE m.tenant_id = u.tenant_id AND m.message_id = u.message_id \
               AND m.status = 'sending' AND m.lease_owner = $1 \
               RETURNING m.tenant_id, m.message_id, m.release_id, m.subscription_id, u.sent_at AS texted), \
             t AS (SELECT * FROM m WHERE m.texted IS NOT NULL), \
             s AS (UPDATE subscriptions s SET status = 'notified', updated_at = $2 FROM t \
               WHERE s.tenant_id = t.tenant_id AND s.subscription_id = t.subscription_id \
                 AND s.status = 'active' RETURNING 1), \
             r AS (UPDATE releases r SET started_at = $2, updated_at = $2 \
               FROM (SELECT DISTINCT tenant_id, release_id FROM t) x \
               WHERE r.tenant_id = x.tenant_id AND r.release_id = x.release_id AND r.started_at IS NULL \
               RETURNING r.tenant_id, r.release_id, r.created_at) \
             SELECT (SELECT count(*) FROM m), r.tenant_id, r.release_id, r.created_at \
             FROM (SELECT 1) AS one LEFT JOIN r ON true";
        let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] = &[
            &owner, &now, &tenant, &id, &status, &reason, &due, &pid, &pstatus, &segments, &sent,
            &attempted, &ecode, &edesc, &eperm, &lease,
        ];
        // Each message is found by its key (see `query_indexed`; V17 keeps the lease index,
        // which holds every version that was ever sending, out of this plan). A reminder is
        // added in the same transaction as its first text's outcome.
        let rows = if reminders.is_empty() {
            query_indexed(&client, sql, params).await?
        } else {
            let tx = client.transaction().await?;
            tx.batch_execute("SET LOCAL enable_seqscan = off").await?;
            let rows = query(&tx, sql, params).await?;
            add_reminders(&tx, reminders, now).await?;
            tx.commit().await?;
            rows
        };
        let written = rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64);
        let first = rows
            .iter()
            .filter_map(|r| {
                Some(FirstText {
                    tenant_id: r.get::<_, Option<String>>(1)?,
                    release_id: r.get::<_, Option<Uuid>>(2)?,
                    restock_at: r.get::<_, Option<DateTime<Utc>>>(3)?,
                })
            })
            .collect();
        Ok((written, first))
    }

    /// Gives back up to `limit` messages whose lease ran out before any hand-over began
    /// (`handed_at` unset): nothing can have reached the provider, so they go back in line at
    /// once, due now, with no look-up. Answers how many.
    pub async fn requeue_unhanded(
        &self,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "WITH x AS (SELECT tenant_id, message_id FROM messages \
               WHERE status = 'sending' AND lease_until < $1 AND handed_at IS NULL \
               ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE messages m SET status = 'planned', due_at = $1, lease_owner = NULL, \
               lease_until = NULL, updated_at = $1 \
             FROM x WHERE m.tenant_id = x.tenant_id AND m.message_id = x.message_id",
            &[&now, &limit],
        )
        .await
    }

    /// Takes over up to `limit` messages whose lease ran out while `sending` after a hand-over
    /// began, for `owner` to reconcile with the provider.
    pub async fn take_expired(
        &self,
        owner: &str,
        lease: Duration,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Expired>, StoreError> {
        let client = self.client().await?;
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let rows = query(
            &client,
            "WITH x AS (SELECT tenant_id, message_id FROM messages \
               WHERE status = 'sending' AND lease_until < $1 AND handed_at IS NOT NULL \
               ORDER BY lease_until LIMIT $4 FOR UPDATE SKIP LOCKED) \
             UPDATE messages m SET lease_owner = $2, lease_until = $3, updated_at = $1 \
             FROM x WHERE m.tenant_id = x.tenant_id AND m.message_id = x.message_id \
             RETURNING m.tenant_id, m.message_id, m.release_id, \
               (SELECT c.phone_e164 FROM contacts c WHERE c.tenant_id = m.tenant_id AND c.contact_id = m.contact_id), \
               m.body, m.sender_id, m.attempted_at, m.attempts",
            &[&now, &owner, &lease_until, &limit],
        )
        .await?;
        Ok(rows
            .iter()
            .map(|r| Expired {
                tenant_id: r.get(0),
                message_id: r.get(1),
                release_id: r.get(2),
                phone_e164: r.get(3),
                body: r.get(4),
                sender_id: r.get(5),
                attempted_at: r.get(6),
                attempts: r.get(7),
            })
            .collect())
    }

    /// Gives claimed messages back as they were (the sender's pace ran out before their turn).
    pub async fn unclaim(
        &self,
        owner: &str,
        claimed: &[&Claimed],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let outcomes: Vec<Outcome> = claimed
            .iter()
            .map(|c| Outcome::given_back(c, now))
            .collect();
        self.record_outcomes(owner, &outcomes, now)
            .await
            .map(|_| ())
    }

    /// Live stock of a variant per location.
    pub async fn stock_levels(
        &self,
        tenant_id: &str,
        variant_id: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let client = self.client().await?;
        stock_levels(&client, tenant_id, variant_id).await
    }

    /// The live stock per location and the exclusions in force of each `(tenant, variant,
    /// product)`, in its order: all on one connection, pipelined (a batch of the express lane
    /// holds several restocks, and one round trip each would add up).
    pub async fn variants_now(
        &self,
        variants: &[(String, String, Option<String>)],
        now: DateTime<Utc>,
    ) -> Result<Vec<(Vec<(String, i64)>, LiveExclusions)>, StoreError> {
        let client = self.client().await?;
        let client = &client;
        let reads = variants
            .iter()
            .map(|(tenant, variant, product)| async move {
                tokio::try_join!(
                    stock_levels(client, tenant, variant),
                    crate::eligibility::live_exclusions(
                        client,
                        tenant,
                        variant,
                        product.as_deref(),
                        now
                    ),
                )
            });
        futures_util::future::try_join_all(reads).await
    }
}

async fn stock_levels(
    c: &impl GenericClient,
    tenant_id: &str,
    variant_id: &str,
) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(query(
        c,
        "SELECT location_id, available FROM inventory WHERE tenant_id = $1 AND variant_id = $2 \
         ORDER BY location_id",
        &[&tenant_id, &variant_id],
    )
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect())
}

/// A stored release's strategy, from its `strategy`, `stage_shares_bps`, `wave_interval_ms`,
/// `oversubscription`, `first_wave_share_bps` and `absorbed_share_bps` columns.
pub(crate) fn strategy_of(r: &Row) -> Strategy {
    let name: Option<String> = r.get("strategy");
    let interval = Duration::from_millis(r.get::<_, i64>("wave_interval_ms").max(0) as u64);
    match name.as_deref() {
        Some("staged") => Strategy::Staged {
            shares_bps: r
                .get::<_, Vec<i32>>("stage_shares_bps")
                .into_iter()
                .map(|s| s.max(0) as u32)
                .collect(),
            interval,
        },
        Some("proportional") => Strategy::Proportional {
            factor: r.get::<_, Option<f64>>("oversubscription").unwrap_or(1.0),
            interval,
        },
        Some("sell_through") => Strategy::SellThrough {
            first_share_bps: r
                .get::<_, Option<i32>>("first_wave_share_bps")
                .unwrap_or(10_000)
                .max(1) as u32,
            absorbed_share_bps: r
                .get::<_, Option<i32>>("absorbed_share_bps")
                .unwrap_or(10_000)
                .max(1) as u32,
            factor: r.get::<_, Option<f64>>("oversubscription").unwrap_or(1.0),
            interval,
        },
        _ => Strategy::Immediate,
    }
}

/// The columns `strategy_of` and `progress_of` read, for a query over `releases r` joined to
/// its previous wave `w`: the strategy, and how the wave is doing (texts it opened, units its
/// recipients bought since it opened, stock then and now).
const PROGRESS: &str = "r.strategy, r.stage_shares_bps, r.wave_interval_ms, r.oversubscription, \
    r.first_wave_share_bps, r.absorbed_share_bps, \
    COALESCE(w.last_position - w.first_position + 1, 0) AS wave_texts, \
    (SELECT COALESCE(sum(pl.quantity), 0)::bigint FROM purchase_lines pl \
       JOIN messages m ON m.tenant_id = pl.tenant_id AND m.message_id = pl.message_id \
      WHERE pl.tenant_id = r.tenant_id AND pl.release_id = r.release_id AND m.wave = w.number \
        AND pl.basis IN ('text', 'click') AND pl.purchased_at >= w.started_at) AS wave_bought, \
    COALESCE(w.available_before, 0) AS wave_available_before, \
    (SELECT COALESCE(sum(GREATEST(i.available, 0)), 0)::bigint FROM inventory i \
      WHERE i.tenant_id = r.tenant_id AND i.variant_id = r.variant_id \
        AND (r.location_id IS NULL OR i.location_id = r.location_id)) AS available_now";

fn progress_of(r: &Row) -> waves::WaveProgress {
    waves::WaveProgress {
        texts: r.get::<_, i32>("wave_texts").max(0) as u32,
        bought: r.get("wave_bought"),
        available_before: r.get("wave_available_before"),
        available_now: r.get("available_now"),
    }
}

/// Why a wave is being opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// Its time came (or the release was just planned).
    Scheduled,
    /// Its predecessor absorbed its demand (sell-through).
    Absorbed,
}

/// A pooled connection that goes back to the pool only by [`OwnConnection::give_back`]:
/// dropped, it closes, and the session advisory locks it holds are released with it.
struct OwnConnection(Option<deadpool_postgres::Object>);

impl OwnConnection {
    /// Back to the pool as it is: only for a connection that holds no lock.
    fn keep(mut self) {
        drop(self.0.take());
    }

    /// Releases the planning lock on `release_id` and gives the connection back to the pool
    /// (a new connection per planned release cost a Postgres backend's start, and every
    /// statement prepared again, for each small restock). Should the unlock fail, or the call
    /// be cut short, the connection closes instead, and the lock goes with it.
    async fn give_back(mut self, release_id: Uuid) {
        let Some(object) = self.0.as_ref() else {
            return;
        };
        let unlocked = object
            .query_one(
                "SELECT pg_advisory_unlock(hashtextextended('plan:' || $1::uuid::text, 0))",
                &[&release_id],
            )
            .await
            .map(|r| r.get::<_, bool>(0));
        if matches!(unlocked, Ok(true)) {
            // Back to the pool, holding no lock.
            drop(self.0.take());
        }
    }
}

impl Drop for OwnConnection {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            drop(deadpool_postgres::Object::take(object));
        }
    }
}

/// Locks the release row (shared: senders' first texts may update it meanwhile, steering waits)
/// and answers whether it is still being planned.
async fn still_planning(
    tx: &impl GenericClient,
    release: &PlanContext,
) -> Result<bool, StoreError> {
    Ok(query_opt(
        tx,
        "SELECT 1 FROM releases WHERE tenant_id = $1 AND release_id = $2 AND state = 'planning' FOR UPDATE",
        &[&release.tenant_id, &release.release_id],
    )
    .await?
    .is_some())
}

/// How many messages of a release (and `wave_filter`, e.g. `AND wave = w.number`) are still
/// to reach an outcome, from its tallies and their unfolded deltas.
fn open_messages(tenant: &str, release: &str, wave_filter: &str) -> String {
    let part = |table: &str| {
        format!(
            "SELECT messages FROM {table} WHERE tenant_id = {tenant} AND release_id = {release} {wave_filter} \
             AND status IN ('planned', 'deferred', 'sending')"
        )
    };
    format!(
        "(SELECT COALESCE(sum(x.messages), 0) FROM ({} UNION ALL {}) x)",
        part("release_tallies"),
        part("release_tally_deltas")
    )
}

/// Opens the release's next wave (its row locked by the caller's transaction): reads the live
/// stock, then opens a range of the plan, holds the wave while stock sells fast, or ends the
/// release as sold out. Answers whether a wave opened.
async fn open_wave(
    tx: &impl GenericClient,
    tenant_id: &str,
    release_id: Uuid,
    threshold: i64,
    opening: Opening,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let r = query_one(
        tx,
        &format!(
            "SELECT r.variant_id, r.location_id, r.plan_size, r.next_position, r.next_wave, \
               w.number IS NOT NULL AS has_previous, {PROGRESS} \
             FROM releases r LEFT JOIN release_waves w ON w.tenant_id = r.tenant_id \
               AND w.release_id = r.release_id AND w.number = r.next_wave - 1 \
             WHERE r.tenant_id = $1 AND r.release_id = $2"
        ),
        &[&tenant_id, &release_id],
    )
    .await?;
    let strategy = strategy_of(&r);
    let plan_size: i32 = r.get("plan_size");
    let next: i32 = r.get("next_position");
    let number: i32 = r.get("next_wave");
    let previous = r.get::<_, bool>("has_previous").then(|| progress_of(&r));
    let available: i64 = r.get("available_now");
    let interval = chrono::Duration::from_std(strategy.interval()).unwrap_or_default();
    let step = waves::next_step(
        &strategy,
        number as u32,
        next as u32,
        plan_size.max(0) as u32,
        available,
        threshold,
    );
    match step {
        Step::Done => {
            execute(
                tx,
                "UPDATE releases SET next_wave_at = NULL, available_now = $3, updated_at = $4 \
                 WHERE tenant_id = $1 AND release_id = $2",
                &[&tenant_id, &release_id, &available, &now],
            )
            .await?;
            Ok(false)
        }
        Step::SoldOut => {
            execute(
                tx,
                "UPDATE releases SET state = 'sold_out', next_wave_at = NULL, available_now = $3, \
                   state_reason = $5, ended_at = $4, updated_at = $4 \
                 WHERE tenant_id = $1 AND release_id = $2",
                &[
                    &tenant_id,
                    &release_id,
                    &available,
                    &now,
                    &format!(
                        "sold out: {available} available before wave {number}, below the threshold of {threshold}"
                    ),
                ],
            )
            .await?;
            end_messages(tx, tenant_id, release_id, "release_sold_out", now).await?;
            Ok(false)
        }
        // Absorbed, but the stock went elsewhere meanwhile: the wave keeps its schedule.
        Step::Open(_) if opening == Opening::Absorbed && waves::hold(&strategy, previous) => {
            Ok(false)
        }
        Step::Open(_) if number > 1 && waves::hold(&strategy, previous) => {
            execute(
                tx,
                "INSERT INTO release_waves (tenant_id, release_id, number, state, scheduled_at) \
                 VALUES ($1, $2, $3, 'waiting', $4) \
                 ON CONFLICT (tenant_id, release_id, number) DO UPDATE SET state = 'waiting'",
                &[&tenant_id, &release_id, &number, &now],
            )
            .await?;
            execute(
                tx,
                "UPDATE releases SET next_wave_at = $3, available_now = $4, updated_at = $5 \
                 WHERE tenant_id = $1 AND release_id = $2",
                &[&tenant_id, &release_id, &(now + interval), &available, &now],
            )
            .await?;
            Ok(false)
        }
        Step::Open(span) => {
            let (first, last) = (span.first as i32, span.last as i32);
            // An IMMEDIATE release's texts were written in wave 1 at planning.
            let written = number == 1 && strategy == Strategy::Immediate;
            if !written {
                execute(
                tx,
                "UPDATE messages SET wave = $3, \
                   due_at = CASE WHEN status = 'deferred' THEN GREATEST(due_at, $6) ELSE $6 END, updated_at = $6 \
                 WHERE tenant_id = $1 AND release_id = $2 AND position BETWEEN $4 AND $5 \
                   AND status IN ('planned', 'deferred')",
                &[&tenant_id, &release_id, &number, &first, &last, &now],
            )
            .await?;
            }
            execute(
                tx,
                "INSERT INTO release_waves (tenant_id, release_id, number, state, scheduled_at, started_at, \
                   first_position, last_position, available_before, opened_by) \
                 VALUES ($1, $2, $3, 'sending', $4, $4, $5, $6, $7, $8) \
                 ON CONFLICT (tenant_id, release_id, number) DO UPDATE SET state = 'sending', started_at = $4, \
                   first_position = $5, last_position = $6, available_before = $7, opened_by = $8",
                &[
                    &tenant_id,
                    &release_id,
                    &number,
                    &now,
                    &first,
                    &last,
                    &available,
                    &match opening {
                        Opening::Scheduled => "schedule",
                        Opening::Absorbed => "sell_through",
                    },
                ],
            )
            .await?;
            let more = last < plan_size;
            let next_at = more.then(|| now + interval);
            execute(
                tx,
                "UPDATE releases SET next_position = $3, next_wave = $4, next_wave_at = $5, \
                   available_now = $6, updated_at = $7 \
                 WHERE tenant_id = $1 AND release_id = $2",
                &[
                    &tenant_id,
                    &release_id,
                    &(last + 1),
                    &(number + 1),
                    &next_at,
                    &available,
                    &now,
                ],
            )
            .await?;
            if more {
                // Shift the staged schedule of later waves to the real opening times.
                execute(
                    tx,
                    "UPDATE release_waves SET scheduled_at = $4 \
                     WHERE tenant_id = $1 AND release_id = $2 AND number = $3 AND state = 'pending'",
                    &[&tenant_id, &release_id, &(number + 1), &(now + interval)],
                )
                .await?;
            }
            Ok(true)
        }
    }
}

/// Ends the release's messages not yet handed over (sold out, cancelled): skipped with the
/// reason; their subscriptions stay on the waitlist. Later waves are cancelled.
async fn end_messages(
    tx: &impl GenericClient,
    tenant_id: &str,
    release_id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    execute(
        tx,
        "UPDATE messages SET status = 'skipped', reason = $3, due_at = NULL, updated_at = $4 \
         WHERE tenant_id = $1 AND release_id = $2 AND status IN ('planned', 'deferred')",
        &[&tenant_id, &release_id, &reason, &now],
    )
    .await?;
    execute(
        tx,
        "UPDATE release_waves SET state = CASE WHEN state IN ('pending', 'waiting') THEN 'cancelled' ELSE state END, \
           ended_at = COALESCE(ended_at, $3) \
         WHERE tenant_id = $1 AND release_id = $2 AND state IN ('pending', 'waiting', 'sending')",
        &[&tenant_id, &release_id, &now],
    )
    .await?;
    Ok(())
}

/// What a steering call may do to a release in its current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steer {
    Pause,
    Resume,
    Cancel,
}

/// The answer of a steering call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SteerResult {
    /// Done (or nothing to do, the release being already there).
    Done,
    /// The release's state forbids it; the state is given.
    Refused(ReleaseState),
}

impl Store {
    /// Pauses, resumes or cancels a release, under its row lock.
    pub async fn steer_release(
        &self,
        tenant_id: &str,
        release_id: Uuid,
        steer: Steer,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<SteerResult, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let state: ReleaseState = query_opt(
            &tx,
            "SELECT state FROM releases WHERE tenant_id = $1 AND release_id = $2 FOR UPDATE",
            &[&tenant_id, &release_id],
        )
        .await?
        .ok_or(StoreError::NotFound("release"))?
        .get(0);
        let set = |state: ReleaseState| {
            let tx = &tx;
            async move {
                execute(
                    tx,
                    "UPDATE releases SET state = $3, state_reason = $4, updated_at = $5, \
                       ended_at = CASE WHEN $3 = 'cancelled' THEN $5 ELSE ended_at END, \
                       next_wave_at = CASE WHEN $3 = 'cancelled' THEN NULL ELSE next_wave_at END \
                     WHERE tenant_id = $1 AND release_id = $2",
                    &[&tenant_id, &release_id, &state, &reason, &now],
                )
                .await
            }
        };
        use ReleaseState as R;
        let result = match (steer, state) {
            (Steer::Pause, R::Paused)
            | (Steer::Resume, R::Sending | R::Planning)
            | (Steer::Cancel, R::Cancelled) => SteerResult::Done,
            (Steer::Pause, R::Planning | R::Sending) => {
                set(R::Paused).await?;
                SteerResult::Done
            }
            (Steer::Resume, R::Paused) => {
                // A release paused before it was planned goes back to be planned. The stock is
                // read again before its next wave, as always.
                execute(
                    &tx,
                    "UPDATE releases SET state = CASE WHEN strategy IS NULL THEN 'planning' ELSE 'sending' END, \
                       state_reason = '', updated_at = $3 WHERE tenant_id = $1 AND release_id = $2",
                    &[&tenant_id, &release_id, &now],
                )
                .await?;
                SteerResult::Done
            }
            (Steer::Cancel, R::Planning | R::Sending | R::Paused) => {
                set(R::Cancelled).await?;
                end_messages(&tx, tenant_id, release_id, "release_cancelled", now).await?;
                SteerResult::Done
            }
            (Steer::Pause | Steer::Resume, R::SoldOut | R::Completed | R::Cancelled)
            | (Steer::Cancel, R::SoldOut | R::Completed) => SteerResult::Refused(state),
        };
        tx.commit().await?;
        Ok(result)
    }
}

/// Adds the reminder of each first text given (same release, place and wave; due at the
/// time given). At most one per first text, whoever asks.
async fn add_reminders(
    client: &impl GenericClient,
    reminders: &[Reminder],
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    if reminders.is_empty() {
        return Ok(0);
    }
    let tenant: Vec<&str> = reminders.iter().map(|r| r.0.as_str()).collect();
    let first: Vec<Uuid> = reminders.iter().map(|r| r.1).collect();
    let id: Vec<Uuid> = reminders.iter().map(|_| Uuid::now_v7()).collect();
    let body: Vec<&str> = reminders.iter().map(|r| r.2.body.as_str()).collect();
    let segments: Vec<i32> = reminders.iter().map(|r| r.2.segments).collect();
    let encoding: Vec<&str> = reminders.iter().map(|r| r.2.encoding).collect();
    let token: Vec<&str> = reminders.iter().map(|r| r.2.link_token.as_str()).collect();
    let due: Vec<DateTime<Utc>> = reminders.iter().map(|r| r.3).collect();
    execute(
        client,
        "INSERT INTO messages (tenant_id, message_id, release_id, subscription_id, contact_id, variant_id, \
           kind, position, wave, status, due_at, body, segments, encoding, sender_id, link_token, created_at, updated_at) \
         SELECT m.tenant_id, u.id, m.release_id, m.subscription_id, m.contact_id, m.variant_id, 'reminder', \
           m.position, m.wave, 'planned', u.due, u.body, u.segments, u.encoding, m.sender_id, u.token, $1, $1 \
         FROM UNNEST($2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::int[], $7::text[], $8::text[], $9::timestamptz[]) \
           AS u(tenant_id, first, id, body, segments, encoding, token, due) \
         JOIN messages m ON m.tenant_id = u.tenant_id AND m.message_id = u.first \
         ON CONFLICT (tenant_id, release_id, contact_id, kind) DO NOTHING",
        &[&now, &tenant, &first, &id, &body, &segments, &encoding, &token, &due],
    )
    .await
}
