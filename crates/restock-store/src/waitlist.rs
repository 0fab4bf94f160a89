//! Contacts, the consent ledger and subscriptions: everything WaitlistService writes.
//!
//! Every use case that changes a contact first locks its row, so requests about one phone are
//! serialised and the "one live subscription per target" rule and the derived consent state can
//! be read and acted on in the same transaction.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use restock_domain::consent::derive_state;
use restock_domain::fingerprint::Fingerprint;
use restock_domain::{
    CancelReason, ConsentEventKind, ConsentSource, ConsentState, Phone, SubscriptionStatus, Target,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::cached::{execute, query, query_one, query_opt};
use crate::{Store, StoreError};

pub(crate) const LIVE: &str = "('pending_confirmation', 'active', 'notified')";

/// A consent as captured by the caller.
#[derive(Debug, Clone)]
pub struct NewConsent {
    pub source: ConsentSource,
    pub text: String,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub captured_at: DateTime<Utc>,
}

/// What a storefront knows about a variant.
#[derive(Debug, Clone, Default)]
pub struct VariantDetails {
    pub title: Option<String>,
    pub options: BTreeMap<String, String>,
    pub deep_link: Option<String>,
}

/// A validated Subscribe request.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub tenant_id: String,
    pub phone: Phone,
    pub target: Target,
    pub product_id: Option<String>,
    pub variant: Option<VariantDetails>,
    pub consent: NewConsent,
    pub customer_id: Option<String>,
    pub session_id: Option<String>,
    pub location_ids: Vec<String>,
    pub desired_quantity: i32,
    pub priority_tier: i32,
    pub expires_at: DateTime<Utc>,
    pub time_zone: Option<String>,
    /// The caller's key and the fingerprint of the request it came with (a key stored with
    /// either of its forms is this request's).
    pub idempotency: Option<(String, Fingerprint)>,
    /// The tenant's policy at the time of the request.
    pub double_opt_in: bool,
}

/// A subscription as stored, with its contact's phone.
#[derive(Debug, Clone)]
pub struct SubscriptionRow {
    pub tenant_id: String,
    pub subscription_id: Uuid,
    pub seq: i64,
    pub target_key: String,
    pub phone_e164: Option<String>,
    pub variant_id: Option<String>,
    pub product_id: Option<String>,
    pub wanted_options: BTreeMap<String, String>,
    pub customer_id: Option<String>,
    pub session_id: Option<String>,
    pub location_ids: Vec<String>,
    pub desired_quantity: i32,
    pub priority_tier: i32,
    /// The stored status; see [`SubscriptionRow::status_at`] for the one to report.
    pub status: SubscriptionStatus,
    pub cancel_reason: Option<CancelReason>,
    pub time_zone: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl SubscriptionRow {
    /// The status at `now`: a live subscription past its expiry is expired, even before a
    /// sweep writes it.
    pub fn status_at(&self, now: DateTime<Utc>) -> SubscriptionStatus {
        if self.status.is_live() && self.expires_at <= now {
            SubscriptionStatus::Expired
        } else {
            self.status
        }
    }
}

/// Answer of [`Store::subscribe`].
#[derive(Debug, Clone)]
pub struct SubscribeOutcome {
    pub subscription: SubscriptionRow,
    pub created: bool,
    pub position: Position,
}

/// A subscription's place in its waitlist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// 1-based; 0 when the subscription no longer waits.
    pub position: u64,
    pub waiting: u64,
}

/// One entry of the consent ledger.
#[derive(Debug, Clone)]
pub struct ConsentEventRow {
    pub event_id: Uuid,
    pub kind: ConsentEventKind,
    pub source: Option<ConsentSource>,
    pub consent_text: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub reason: Option<String>,
    pub subscription_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
}

/// Filters of [`Store::list_subscriptions`]; they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub variant_id: Option<String>,
    pub product_id: Option<String>,
    pub phone: Option<Phone>,
    pub customer_id: Option<String>,
    pub status: Option<SubscriptionStatus>,
}

/// What erasure did.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErasureOutcome {
    pub erased: bool,
    pub subscriptions: u32,
    pub consent_events: u32,
}

pub(crate) const SUB_COLUMNS: &str =
    "s.tenant_id, s.subscription_id, s.seq, s.target_key, c.phone_e164, \
     s.variant_id, s.product_id, s.wanted_options, s.customer_id, s.session_id, s.location_ids, \
     s.desired_quantity, s.priority_tier, s.status, s.cancel_reason, s.time_zone, s.created_at, \
     s.updated_at, s.expires_at";
pub(crate) const SUB_FROM: &str =
    "subscriptions s JOIN contacts c ON c.tenant_id = s.tenant_id AND c.contact_id = s.contact_id";

pub(crate) fn sub_from_row(row: &Row) -> Result<SubscriptionRow, StoreError> {
    let status: String = row.get("status");
    let cancel: Option<String> = row.get("cancel_reason");
    let options: serde_json::Value = row.get("wanted_options");
    Ok(SubscriptionRow {
        tenant_id: row.get("tenant_id"),
        subscription_id: row.get("subscription_id"),
        seq: row.get("seq"),
        target_key: row.get("target_key"),
        phone_e164: row.get("phone_e164"),
        variant_id: row.get("variant_id"),
        product_id: row.get("product_id"),
        wanted_options: serde_json::from_value(options).unwrap_or_default(),
        customer_id: row.get("customer_id"),
        session_id: row.get("session_id"),
        location_ids: row.get("location_ids"),
        desired_quantity: row.get("desired_quantity"),
        priority_tier: row.get("priority_tier"),
        status: SubscriptionStatus::parse(&status)
            .ok_or(StoreError::Migration(format!("unknown status {status}")))?,
        cancel_reason: cancel.as_deref().and_then(CancelReason::parse),
        time_zone: row.get("time_zone"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        expires_at: row.get("expires_at"),
    })
}

/// Finds the contact of a phone and locks it for the rest of the transaction, creating it when
/// `create` is set. Concurrent requests for one phone queue here.
async fn lock_contact(
    tx: &impl GenericClient,
    tenant_id: &str,
    phone: &Phone,
    create: bool,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, StoreError> {
    if create {
        // DO UPDATE (not DO NOTHING) so the row is returned and locked in both cases.
        let row = query_one(
            tx,
            "INSERT INTO contacts (tenant_id, contact_id, phone_e164, created_at) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant_id, phone_e164) WHERE phone_e164 IS NOT NULL \
                 DO UPDATE SET phone_e164 = EXCLUDED.phone_e164 \
                 RETURNING contact_id",
            &[&tenant_id, &Uuid::now_v7(), &phone.e164(), &now],
        )
        .await?;
        Ok(Some(row.get(0)))
    } else {
        let row = query_opt(
            tx,
            "SELECT contact_id FROM contacts WHERE tenant_id = $1 AND phone_e164 = $2 FOR UPDATE",
            &[&tenant_id, &phone.e164()],
        )
        .await?;
        Ok(row.map(|r| r.get(0)))
    }
}

async fn consent_state(
    tx: &impl GenericClient,
    tenant_id: &str,
    contact_id: Uuid,
    double_opt_in: bool,
) -> Result<ConsentState, StoreError> {
    let rows = query(
        tx,
        "SELECT kind FROM consent_events WHERE tenant_id = $1 AND contact_id = $2 ORDER BY seq",
        &[&tenant_id, &contact_id],
    )
    .await?;
    Ok(derive_state(
        double_opt_in,
        rows.iter()
            .filter_map(|r| ConsentEventKind::parse(r.get(0))),
    ))
}

#[allow(clippy::too_many_arguments)]
async fn append_consent(
    tx: &impl GenericClient,
    tenant_id: &str,
    contact_id: Uuid,
    kind: ConsentEventKind,
    source: ConsentSource,
    consent: Option<&NewConsent>,
    reason: Option<&str>,
    subscription_id: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    execute(
        tx,
        "INSERT INTO consent_events (tenant_id, contact_id, event_id, kind, source, consent_text, \
         ip_address, user_agent, reason, subscription_id, occurred_at, recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &tenant_id,
            &contact_id,
            &Uuid::now_v7(),
            &kind.as_str(),
            &source.as_str(),
            &consent.map(|c| c.text.as_str()),
            &consent.and_then(|c| c.ip_address.as_deref()),
            &consent.and_then(|c| c.user_agent.as_deref()),
            &reason,
            &subscription_id,
            &consent.map(|c| c.captured_at).unwrap_or(now),
            &now,
        ],
    )
    .await?;
    Ok(())
}

async fn get_sub(
    tx: &impl GenericClient,
    tenant_id: &str,
    subscription_id: Uuid,
) -> Result<SubscriptionRow, StoreError> {
    let sql = format!(
        "SELECT {SUB_COLUMNS} FROM {SUB_FROM} WHERE s.tenant_id = $1 AND s.subscription_id = $2"
    );
    let row = query_opt(tx, &sql, &[&tenant_id, &subscription_id])
        .await?
        .ok_or(StoreError::NotFound("subscription"))?;
    sub_from_row(&row)
}

async fn position_of(
    tx: &impl GenericClient,
    sub: &SubscriptionRow,
    now: DateTime<Utc>,
) -> Result<Position, StoreError> {
    let sql = format!(
        "SELECT count(*) FILTER (WHERE priority_tier > $3 OR (priority_tier = $3 AND seq < $4)), count(*) \
         FROM subscriptions WHERE tenant_id = $1 AND target_key = $2 AND status IN {LIVE} AND expires_at > $5"
    );
    let row = query_one(
        tx,
        &sql,
        &[
            &sub.tenant_id,
            &sub.target_key,
            &sub.priority_tier,
            &sub.seq,
            &now,
        ],
    )
    .await?;
    let ahead: i64 = row.get(0);
    let waiting: i64 = row.get(1);
    Ok(if sub.status_at(now).is_live() {
        Position {
            position: ahead as u64 + 1,
            waiting: waiting as u64,
        }
    } else {
        Position {
            position: 0,
            waiting: waiting as u64,
        }
    })
}

impl Store {
    /// Registers interest; see `WaitlistService.Subscribe` for the semantics. All or nothing:
    /// a refused request leaves no row behind.
    pub async fn subscribe(
        &self,
        req: &NewSubscription,
        now: DateTime<Utc>,
    ) -> Result<SubscribeOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let tenant = req.tenant_id.as_str();
        let contact_id = lock_contact(&tx, tenant, &req.phone, true, now)
            .await?
            .expect("created when missing");

        if let Some((key, hash)) = &req.idempotency {
            let prior = query_opt(
                &tx,
                "SELECT request_hash, subscription_id, created FROM idempotency_keys \
                     WHERE tenant_id = $1 AND idempotency_key = $2",
                &[&tenant, key],
            )
            .await?;
            if let Some(prior) = prior {
                let prior_hash: Vec<u8> = prior.get(0);
                if !hash.matches(&prior_hash) {
                    return Err(StoreError::IdempotencyKeyReused);
                }
                let subscription = get_sub(&tx, tenant, prior.get(1)).await?;
                let position = position_of(&tx, &subscription, now).await?;
                tx.commit().await?;
                return Ok(SubscribeOutcome {
                    subscription,
                    created: prior.get(2),
                    position,
                });
            }
        }

        // The ledger and the live subscription of this target, in one round trip.
        let target_key = req.target.key();
        let found = query_one(
            &tx,
            &format!(
                "SELECT ARRAY(SELECT e.kind FROM consent_events e WHERE e.tenant_id = $1 AND e.contact_id = $2 ORDER BY e.seq), \
                   (SELECT s.subscription_id FROM subscriptions s WHERE s.tenant_id = $1 AND s.contact_id = $2 \
                    AND s.target_key = $3 AND s.status IN {LIVE})"
            ),
            &[&tenant, &contact_id, &target_key],
        )
        .await?;
        let ledger: Vec<String> = found.get(0);
        let state = derive_state(
            req.double_opt_in,
            ledger.iter().filter_map(|k| ConsentEventKind::parse(k)),
        );
        if state == ConsentState::OptedOut {
            return Err(StoreError::OptedOut);
        }
        let existing = match found.get::<_, Option<Uuid>>(1) {
            Some(id) => Some(get_sub(&tx, tenant, id).await?),
            None => None,
        };
        let (subscription, created, position) = match existing {
            Some(sub) if sub.expires_at > now => {
                let position = position_of(&tx, &sub, now).await?;
                (sub, false, position)
            }
            lapsed => {
                if let Some(old) = lapsed {
                    execute(
                        &tx,
                        "UPDATE subscriptions SET status = 'expired', updated_at = $3 \
                         WHERE tenant_id = $1 AND subscription_id = $2",
                        &[&tenant, &old.subscription_id, &now],
                    )
                    .await?;
                }
                let (sub, position) =
                    insert_subscription(&tx, req, contact_id, &target_key, state, now).await?;
                (sub, true, position)
            }
        };

        if let Some((key, hash)) = &req.idempotency {
            // Another phone's request with the same key may race this one: its insert makes
            // ours wait, then conflict, and the key's first answer wins.
            let n = execute(&tx,
                    "INSERT INTO idempotency_keys (tenant_id, idempotency_key, request_hash, subscription_id, created, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    &[&tenant, key, &hash.stored(), &subscription.subscription_id, &created, &now],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::IdempotencyKeyReused);
            }
        }
        tx.commit().await?;
        Ok(SubscribeOutcome {
            subscription,
            created,
            position,
        })
    }

    /// Records a double opt-in confirmation and activates every pending subscription of the
    /// phone.
    pub async fn confirm(
        &self,
        tenant_id: &str,
        subscription_id: Uuid,
        source: ConsentSource,
        double_opt_in: bool,
        now: DateTime<Utc>,
    ) -> Result<SubscriptionRow, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let sub = confirm_in(&tx, tenant_id, subscription_id, source, double_opt_in, now).await?;
        tx.commit().await?;
        Ok(sub)
    }

    /// Cancels one subscription; a no-op when it is no longer live.
    pub async fn unsubscribe(
        &self,
        tenant_id: &str,
        subscription_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<SubscriptionRow, StoreError> {
        let client = self.client().await?;
        execute(&client,
                &format!(
                    "UPDATE subscriptions SET status = 'cancelled', cancel_reason = 'unsubscribed', updated_at = $3 \
                     WHERE tenant_id = $1 AND subscription_id = $2 AND status IN {LIVE}"
                ),
                &[&tenant_id, &subscription_id, &now],
            )
            .await?;
        get_sub(&client, tenant_id, subscription_id).await
    }

    /// One subscription and its waitlist position.
    pub async fn get_subscription(
        &self,
        tenant_id: &str,
        subscription_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(SubscriptionRow, Position), StoreError> {
        let client = self.client().await?;
        let sub = get_sub(&client, tenant_id, subscription_id).await?;
        let pos = position_of(&client, &sub, now).await?;
        Ok((sub, pos))
    }

    /// A page of subscriptions in waitlist order, after the one with sequence `after`.
    pub async fn list_subscriptions(
        &self,
        tenant_id: &str,
        filter: &ListFilter,
        after: i64,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<SubscriptionRow>, StoreError> {
        let client = self.client().await?;
        let phone = filter.phone.as_ref().map(|p| p.e164().to_string());
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant_id, &after, &limit];
        let mut sql =
            format!("SELECT {SUB_COLUMNS} FROM {SUB_FROM} WHERE s.tenant_id = $1 AND s.seq > $2");
        // Placeholders are numbered in the order their values are pushed.
        for (col, v) in [
            ("s.variant_id", &filter.variant_id),
            ("s.product_id", &filter.product_id),
            ("c.phone_e164", &phone),
            ("s.customer_id", &filter.customer_id),
        ] {
            if let Some(v) = v {
                params.push(v);
                sql.push_str(&format!(" AND {col} = ${}", params.len()));
            }
        }
        if let Some(status) = filter.status {
            let n = params.len() + 1;
            sql.push_str(&match status {
                s if s.is_live() => format!(" AND s.status = '{}' AND s.expires_at > ${n}", s.as_str()),
                SubscriptionStatus::Expired => {
                    format!(" AND (s.status = 'expired' OR (s.status IN {LIVE} AND s.expires_at <= ${n}))")
                }
                s => format!(" AND s.status = '{}' AND ${n}::timestamptz IS NOT NULL", s.as_str()),
            });
            params.push(&now);
        }
        sql.push_str(" ORDER BY s.seq LIMIT $3");
        let rows = query(&client, &sql, &params).await?;
        rows.iter().map(sub_from_row).collect()
    }

    /// Where a subscription stands in its waitlist.
    pub async fn waitlist_position(
        &self,
        tenant_id: &str,
        subscription_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Position, StoreError> {
        Ok(self
            .get_subscription(tenant_id, subscription_id, now)
            .await?
            .1)
    }

    /// Records an opt-out (creating the contact if restock never saw the phone) and cancels its
    /// live subscriptions. Answers how many were cancelled.
    pub async fn opt_out(
        &self,
        tenant_id: &str,
        phone: &Phone,
        source: ConsentSource,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = opt_out_in(&tx, tenant_id, phone, source, reason, now).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Records a new opt-in (and its confirmation when it came from the phone itself). Answers
    /// the state it leads to.
    pub async fn opt_in(
        &self,
        tenant_id: &str,
        phone: &Phone,
        consent: &NewConsent,
        double_opt_in: bool,
        now: DateTime<Utc>,
    ) -> Result<ConsentState, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let state = opt_in_in(&tx, tenant_id, phone, consent, double_opt_in, now).await?;
        tx.commit().await?;
        Ok(state)
    }

    /// A phone's ledger and the state it leads to; `None` when restock never saw the phone.
    pub async fn consent_history(
        &self,
        tenant_id: &str,
        phone: &Phone,
        double_opt_in: bool,
    ) -> Result<Option<(ConsentState, Vec<ConsentEventRow>)>, StoreError> {
        let client = self.client().await?;
        let Some(contact) = query_opt(
            &client,
            "SELECT contact_id FROM contacts WHERE tenant_id = $1 AND phone_e164 = $2",
            &[&tenant_id, &phone.e164()],
        )
        .await?
        else {
            return Ok(None);
        };
        let contact_id: Uuid = contact.get(0);
        let rows = query(
            &client,
            "SELECT event_id, kind, source, consent_text, ip_address, user_agent, reason, \
                 subscription_id, occurred_at, recorded_at FROM consent_events \
                 WHERE tenant_id = $1 AND contact_id = $2 ORDER BY seq",
            &[&tenant_id, &contact_id],
        )
        .await?;
        let events: Vec<ConsentEventRow> = rows
            .iter()
            .filter_map(|r| {
                Some(ConsentEventRow {
                    event_id: r.get(0),
                    kind: ConsentEventKind::parse(r.get(1))?,
                    source: ConsentSource::parse(r.get(2)),
                    consent_text: r.get(3),
                    ip_address: r.get(4),
                    user_agent: r.get(5),
                    reason: r.get(6),
                    subscription_id: r.get(7),
                    occurred_at: r.get(8),
                    recorded_at: r.get(9),
                })
            })
            .collect();
        let state = derive_state(double_opt_in, events.iter().map(|e| e.kind));
        Ok(Some((state, events)))
    }

    /// Erases a phone's personal data: `hash` maps a value to its keyed hash.
    pub async fn erase_phone(
        &self,
        tenant_id: &str,
        phone: &Phone,
        hash: impl Fn(&str) -> String,
        now: DateTime<Utc>,
    ) -> Result<ErasureOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(contact_id) = lock_contact(&tx, tenant_id, phone, false, now).await? else {
            return Ok(ErasureOutcome::default());
        };
        execute(
            &tx,
            "UPDATE contacts SET phone_e164 = NULL, erased_hash = $3, erased_at = $4 \
             WHERE tenant_id = $1 AND contact_id = $2",
            &[&tenant_id, &contact_id, &hash(phone.e164()), &now],
        )
        .await?;
        // The texts' bodies are not personal data, but they are what was said to this person;
        // messages not yet sent are skipped, as there is no one left to send them to. The
        // provider's error descriptions can quote the number: they go too (the codes stay).
        execute(
            &tx,
            "UPDATE messages SET body = CASE WHEN status IN ('planned', 'deferred') THEN NULL ELSE '' END, \
               status = CASE WHEN status IN ('planned', 'deferred') THEN 'skipped' ELSE status END, \
               reason = CASE WHEN status IN ('planned', 'deferred') THEN 'phone_erased' ELSE reason END, \
               last_error_description = NULL, \
               updated_at = $3 \
             WHERE tenant_id = $1 AND contact_id = $2",
            &[&tenant_id, &contact_id, &now],
        )
        .await?;
        let mut subscriptions = 0;
        // The customer ids the person used, for their purchases.
        let mut customers: Vec<String> = Vec::new();
        for row in query(
            &tx,
            "SELECT subscription_id, customer_id, session_id, status FROM subscriptions \
                 WHERE tenant_id = $1 AND contact_id = $2",
            &[&tenant_id, &contact_id],
        )
        .await?
        {
            let id: Uuid = row.get(0);
            let customer: Option<String> = row.get(1);
            let session: Option<String> = row.get(2);
            customers.extend(
                customer
                    .iter()
                    .filter(|c| !c.starts_with("erased:"))
                    .cloned(),
            );
            let status: String = row.get(3);
            let live = SubscriptionStatus::parse(&status).is_some_and(|s| s.is_live());
            execute(
                &tx,
                "UPDATE subscriptions SET customer_id = $3, session_id = $4, updated_at = $5, \
                 status = CASE WHEN $6 THEN 'cancelled' ELSE status END, \
                 cancel_reason = CASE WHEN $6 THEN 'erased' ELSE cancel_reason END \
                 WHERE tenant_id = $1 AND subscription_id = $2",
                &[
                    &tenant_id,
                    &id,
                    &customer.as_deref().map(&hash),
                    &session.as_deref().map(&hash),
                    &now,
                    &live,
                ],
            )
            .await?;
            subscriptions += 1;
        }
        // The ledger refuses updates unless this transaction says it is an erasure. Every
        // text in it goes: consent text and free-text reasons can name the person too.
        execute(&tx, "SET LOCAL restock.erasure = 'on'", &[]).await?;
        let mut consent_events = 0;
        for row in query(&tx,
                "SELECT event_id, ip_address, user_agent, consent_text, reason FROM consent_events \
                 WHERE tenant_id = $1 AND contact_id = $2 AND (ip_address IS NOT NULL OR user_agent IS NOT NULL \
                   OR consent_text IS NOT NULL OR reason IS NOT NULL)",
                &[&tenant_id, &contact_id],
            )
            .await?
        {
            let id: Uuid = row.get(0);
            let [ip, ua, text, reason] =
                [1, 2, 3, 4].map(|i| row.get::<_, Option<String>>(i).map(|v| hash(&v)));
            execute(&tx,
                "UPDATE consent_events SET ip_address = $4, user_agent = $5, consent_text = $6, reason = $7 \
                 WHERE tenant_id = $1 AND contact_id = $2 AND event_id = $3",
                &[&tenant_id, &contact_id, &id, &ip, &ua, &text, &reason],
            )
            .await?;
            consent_events += 1;
        }
        erase_outcomes(&tx, tenant_id, contact_id, &customers, &hash).await?;
        tx.commit().await?;
        Ok(ErasureOutcome {
            erased: true,
            subscriptions,
            consent_events,
        })
    }
}

/// [`Store::confirm`] inside the caller's transaction. A refusal writes nothing.
pub(crate) async fn confirm_in(
    tx: &impl GenericClient,
    tenant_id: &str,
    subscription_id: Uuid,
    source: ConsentSource,
    double_opt_in: bool,
    now: DateTime<Utc>,
) -> Result<SubscriptionRow, StoreError> {
    let contact_id = lock_contact_of(tx, tenant_id, subscription_id).await?;
    let sub = get_sub(tx, tenant_id, subscription_id).await?;
    match sub.status_at(now) {
        SubscriptionStatus::Active => return Ok(sub),
        SubscriptionStatus::PendingConfirmation => {}
        SubscriptionStatus::Notified | SubscriptionStatus::Converted => return Ok(sub),
        SubscriptionStatus::Expired => return Err(StoreError::WrongState("expired")),
        SubscriptionStatus::Cancelled => return Err(StoreError::WrongState("cancelled")),
        SubscriptionStatus::Lapsed => return Err(StoreError::WrongState("lapsed")),
    }
    if consent_state(tx, tenant_id, contact_id, double_opt_in).await? == ConsentState::OptedOut {
        return Err(StoreError::OptedOut);
    }
    append_consent(
        tx,
        tenant_id,
        contact_id,
        ConsentEventKind::Confirm,
        source,
        None,
        None,
        Some(subscription_id),
        now,
    )
    .await?;
    execute(
        tx,
        "UPDATE subscriptions SET status = 'active', updated_at = $3 \
             WHERE tenant_id = $1 AND contact_id = $2 AND status = 'pending_confirmation'",
        &[&tenant_id, &contact_id, &now],
    )
    .await?;
    get_sub(tx, tenant_id, subscription_id).await
}

/// [`Store::opt_out`] inside the caller's transaction.
pub(crate) async fn opt_out_in(
    tx: &impl GenericClient,
    tenant_id: &str,
    phone: &Phone,
    source: ConsentSource,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<u32, StoreError> {
    let contact_id = lock_contact(tx, tenant_id, phone, true, now)
        .await?
        .expect("created");
    append_consent(
        tx,
        tenant_id,
        contact_id,
        ConsentEventKind::OptOut,
        source,
        None,
        reason,
        None,
        now,
    )
    .await?;
    let n = execute(tx,
                &format!(
                    "UPDATE subscriptions SET status = 'cancelled', cancel_reason = 'opted_out', updated_at = $3 \
                     WHERE tenant_id = $1 AND contact_id = $2 AND status IN {LIVE}"
                ),
                &[&tenant_id, &contact_id, &now],
            )
            .await?;
    Ok(n as u32)
}

/// [`Store::opt_in`] inside the caller's transaction.
pub(crate) async fn opt_in_in(
    tx: &impl GenericClient,
    tenant_id: &str,
    phone: &Phone,
    consent: &NewConsent,
    double_opt_in: bool,
    now: DateTime<Utc>,
) -> Result<ConsentState, StoreError> {
    let contact_id = lock_contact(tx, tenant_id, phone, true, now)
        .await?
        .expect("created");
    append_consent(
        tx,
        tenant_id,
        contact_id,
        ConsentEventKind::OptIn,
        consent.source,
        Some(consent),
        None,
        None,
        now,
    )
    .await?;
    if consent.source == ConsentSource::Sms {
        append_consent(
            tx,
            tenant_id,
            contact_id,
            ConsentEventKind::Confirm,
            consent.source,
            None,
            None,
            None,
            now,
        )
        .await?;
    }
    let state = consent_state(tx, tenant_id, contact_id, double_opt_in).await?;
    Ok(state)
}

/// Erases what the person's texts and orders left elsewhere: their Subscribe idempotency keys,
/// the user agents of clicks on their texts, and their purchases (found by contact or by any
/// customer id they used). Keys and ids become their keyed hash, so rows stay unique and
/// counts and revenue stay true; a replay of an erased order finds it by that hash (see
/// `Store::record_purchase`) and is not matched to the person again.
async fn erase_outcomes(
    tx: &impl GenericClient,
    tenant_id: &str,
    contact_id: Uuid,
    customers: &[String],
    hash: &impl Fn(&str) -> String,
) -> Result<(), StoreError> {
    let hash_bytes = |b: &[u8]| hash(&hex::encode(b)).into_bytes();
    for row in query(
        tx,
        "SELECT k.idempotency_key, k.request_hash FROM idempotency_keys k \
         JOIN subscriptions s ON s.tenant_id = k.tenant_id AND s.subscription_id = k.subscription_id \
         WHERE k.tenant_id = $1 AND s.contact_id = $2 AND k.idempotency_key NOT LIKE 'erased:%'",
        &[&tenant_id, &contact_id],
    )
    .await?
    {
        let key: String = row.get(0);
        let request_hash: Vec<u8> = row.get(1);
        execute(
            tx,
            "UPDATE idempotency_keys SET idempotency_key = $3, request_hash = $4 \
             WHERE tenant_id = $1 AND idempotency_key = $2",
            &[&tenant_id, &key, &hash(&key), &hash_bytes(&request_hash)],
        )
        .await?;
    }
    for row in query(
        tx,
        "SELECT DISTINCT k.user_agent FROM clicks k JOIN messages m \
           ON m.tenant_id = k.tenant_id AND m.message_id = k.message_id \
         WHERE k.tenant_id = $1 AND m.contact_id = $2 AND k.user_agent NOT LIKE 'erased:%'",
        &[&tenant_id, &contact_id],
    )
    .await?
    {
        let ua: String = row.get(0);
        execute(
            tx,
            "UPDATE clicks k SET user_agent = $4 FROM messages m \
             WHERE m.tenant_id = k.tenant_id AND m.message_id = k.message_id \
               AND k.tenant_id = $1 AND m.contact_id = $2 AND k.user_agent = $3",
            &[&tenant_id, &contact_id, &ua, &hash(&ua)],
        )
        .await?;
    }
    for row in query(
        tx,
        "SELECT order_id, customer_id, request_hash FROM purchases \
         WHERE tenant_id = $1 AND (contact_id = $2 OR customer_id = ANY($3)) \
           AND order_id NOT LIKE 'erased:%'",
        &[&tenant_id, &contact_id, &customers],
    )
    .await?
    {
        let order: String = row.get(0);
        let customer: Option<String> = row.get::<_, Option<String>>(1).map(|c| hash(&c));
        let request_hash: Vec<u8> = row.get(2);
        let erased_order = hash(&order);
        execute(
            tx,
            "UPDATE purchases SET order_id = $3, customer_id = $4, request_hash = $5 \
             WHERE tenant_id = $1 AND order_id = $2",
            &[
                &tenant_id,
                &order,
                &erased_order,
                &customer,
                &hash_bytes(&request_hash),
            ],
        )
        .await?;
        execute(
            tx,
            "UPDATE purchase_lines SET order_id = $3, customer_id = $4 \
             WHERE tenant_id = $1 AND order_id = $2",
            &[&tenant_id, &order, &erased_order, &customer],
        )
        .await?;
    }
    Ok(())
}

/// Who describes a variant, and so whose word counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DetailsSource {
    /// The inventory feed (the brand's catalog): its word replaces what was stored.
    Catalog,
    /// A Subscribe request, which any storefront caller can shape: it only fills in what
    /// nothing said yet, and never overwrites, so one bad request cannot change the title or
    /// the link of every later text about the variant.
    Subscribe,
}

/// Records what a storefront or an inventory system says about a variant; what it leaves out
/// keeps its last value, and what it says counts as [`DetailsSource`] tells.
pub(crate) async fn upsert_variant(
    tx: &impl GenericClient,
    tenant_id: &str,
    variant_id: &str,
    product_id: Option<&str>,
    details: &VariantDetails,
    source: DetailsSource,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let sql = match source {
        DetailsSource::Catalog => {
            "INSERT INTO variants (tenant_id, variant_id, product_id, title, options, deep_link, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id, variant_id) DO UPDATE SET \
               product_id = COALESCE(EXCLUDED.product_id, variants.product_id), \
               title = COALESCE(EXCLUDED.title, variants.title), \
               options = CASE WHEN EXCLUDED.options = '{}'::jsonb THEN variants.options ELSE EXCLUDED.options END, \
               deep_link = COALESCE(EXCLUDED.deep_link, variants.deep_link), \
               updated_at = EXCLUDED.updated_at"
        }
        // Writes only when it fills something in: Subscribe calls about a known variant leave
        // its row alone.
        DetailsSource::Subscribe => {
            "INSERT INTO variants (tenant_id, variant_id, product_id, title, options, deep_link, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id, variant_id) DO UPDATE SET \
               product_id = COALESCE(variants.product_id, EXCLUDED.product_id), \
               title = COALESCE(variants.title, EXCLUDED.title), \
               options = CASE WHEN variants.options = '{}'::jsonb THEN EXCLUDED.options ELSE variants.options END, \
               deep_link = COALESCE(variants.deep_link, EXCLUDED.deep_link), \
               updated_at = EXCLUDED.updated_at \
             WHERE (variants.product_id IS NULL AND EXCLUDED.product_id IS NOT NULL) \
               OR (variants.title IS NULL AND EXCLUDED.title IS NOT NULL) \
               OR (variants.options = '{}'::jsonb AND EXCLUDED.options <> '{}'::jsonb) \
               OR (variants.deep_link IS NULL AND EXCLUDED.deep_link IS NOT NULL)"
        }
    };
    execute(
        tx,
        sql,
        &[
            &tenant_id,
            &variant_id,
            &product_id,
            &details.title,
            &serde_json::to_value(&details.options).expect("a map of strings"),
            &details.deep_link,
            &now,
        ],
    )
    .await?;
    Ok(())
}

/// Locks the contact that owns a subscription.
async fn lock_contact_of(
    tx: &impl GenericClient,
    tenant_id: &str,
    subscription_id: Uuid,
) -> Result<Uuid, StoreError> {
    let row = query_opt(
        tx,
        "SELECT c.contact_id FROM contacts c JOIN subscriptions s \
             ON s.tenant_id = c.tenant_id AND s.contact_id = c.contact_id \
             WHERE s.tenant_id = $1 AND s.subscription_id = $2 FOR UPDATE OF c",
        &[&tenant_id, &subscription_id],
    )
    .await?
    .ok_or(StoreError::NotFound("subscription"))?;
    Ok(row.get(0))
}

async fn insert_subscription(
    tx: &impl GenericClient,
    req: &NewSubscription,
    contact_id: Uuid,
    target_key: &str,
    state: ConsentState,
    now: DateTime<Utc>,
) -> Result<(SubscriptionRow, Position), StoreError> {
    let tenant = req.tenant_id.as_str();
    let (variant_id, wanted) = match &req.target {
        Target::Variant { variant_id } => (Some(variant_id.as_str()), BTreeMap::new()),
        Target::Product { wanted_options, .. } => (None, wanted_options.clone()),
    };
    let product_id = match &req.target {
        Target::Product { product_id, .. } => Some(product_id.as_str()),
        Target::Variant { .. } => req.product_id.as_deref(),
    };
    if let (Some(variant_id), Some(details)) = (variant_id, &req.variant) {
        upsert_variant(
            tx,
            tenant,
            variant_id,
            product_id,
            details,
            DetailsSource::Subscribe,
            now,
        )
        .await?;
    }
    let subscription_id = Uuid::now_v7();
    // A consent given with this request counts from now on, so the status follows the state
    // the ledger will lead to once the opt-in below is appended.
    let status = match (state, req.double_opt_in) {
        (ConsentState::OptedIn, _) | (_, false) => SubscriptionStatus::Active,
        _ if req.consent.source == ConsentSource::Sms => SubscriptionStatus::Active,
        _ => SubscriptionStatus::PendingConfirmation,
    };
    // The consent shown with this subscription is appended even when the phone is already
    // opted in: it is evidence worth keeping, and it changes no state. A consent from the
    // phone itself also confirms it.
    let mut kinds = vec![ConsentEventKind::OptIn.as_str()];
    if req.consent.source == ConsentSource::Sms {
        kinds.push(ConsentEventKind::Confirm.as_str());
    }
    let event_ids: Vec<Uuid> = kinds.iter().map(|_| Uuid::now_v7()).collect();
    // One statement: the subscription and its consent events. Its place in line comes after,
    // from the counters its insert just moved (see `waitlist_place`).
    let row = query_one(
        tx,
        "WITH s AS ( \
           INSERT INTO subscriptions (tenant_id, subscription_id, contact_id, target_key, variant_id, \
             product_id, wanted_options, customer_id, session_id, location_ids, desired_quantity, \
             priority_tier, status, time_zone, created_at, updated_at, expires_at) \
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16) \
           RETURNING *), \
         e AS ( \
           INSERT INTO consent_events (tenant_id, contact_id, event_id, kind, source, consent_text, \
             ip_address, user_agent, subscription_id, occurred_at, recorded_at) \
           SELECT $1, $3, k.event_id, k.kind, $17, \
             CASE WHEN k.kind = 'opt_in' THEN $18 END, CASE WHEN k.kind = 'opt_in' THEN $19 END, \
             CASE WHEN k.kind = 'opt_in' THEN $20 END, $2, \
             CASE WHEN k.kind = 'opt_in' THEN $21 ELSE $15 END, $15 \
           FROM unnest($22::uuid[], $23::text[]) WITH ORDINALITY AS k(event_id, kind, ord) ORDER BY k.ord) \
         SELECT s.tenant_id, s.subscription_id, s.seq, s.target_key, $24::text AS phone_e164, s.variant_id, \
           s.product_id, s.wanted_options, s.customer_id, s.session_id, s.location_ids, s.desired_quantity, \
           s.priority_tier, s.status, s.cancel_reason, s.time_zone, s.created_at, s.updated_at, s.expires_at \
         FROM s",
        &[
            &tenant,
            &subscription_id,
            &contact_id,
            &target_key,
            &variant_id,
            &product_id,
            &serde_json::to_value(&wanted).expect("a map of strings"),
            &req.customer_id,
            &req.session_id,
            &req.location_ids,
            &req.desired_quantity,
            &req.priority_tier,
            &status.as_str(),
            &req.time_zone,
            &now,
            &req.expires_at,
            &req.consent.source.as_str(),
            &req.consent.text,
            &req.consent.ip_address,
            &req.consent.user_agent,
            &req.consent.captured_at,
            &event_ids,
            &kinds,
            &req.phone.e164(),
        ],
    )
    .await?;
    let sub = sub_from_row(&row)?;
    let place = query_one(
        tx,
        "SELECT place, waiting FROM waitlist_place($1, $2, $3, $4, 0, $5)",
        &[
            &sub.tenant_id,
            &sub.target_key,
            &sub.priority_tier,
            &sub.seq,
            &now,
        ],
    )
    .await?;
    let (position, waiting): (i64, i64) = (place.get(0), place.get(1));
    Ok((
        sub,
        Position {
            position: position as u64,
            waiting: waiting as u64,
        },
    ))
}
