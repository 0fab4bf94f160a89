//! Subscribe in batches: concurrent Subscribe calls share one transaction and a handful of
//! multi-row statements, so the cost of a round trip is paid once per batch, not per call.
//!
//! Semantics are those of [`Store::subscribe`], request by request, in arrival order: a request
//! refused for its own reason (an opted-out phone) is answered alone and changes nothing, and two
//! requests for the same phone and target in one batch give one subscription. Anything the batch
//! path does not handle (idempotency keys, a lapsed subscription to replace) and any database
//! error falls back to [`Store::subscribe`] per request, so a batch never answers differently.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use restock_domain::consent::derive_state;
use restock_domain::{ConsentEventKind, ConsentSource, ConsentState, SubscriptionStatus, Target};
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

use crate::cached::query;
use crate::waitlist::{
    sub_from_row, NewSubscription, Position, SubscribeOutcome, LIVE, SUB_COLUMNS, SUB_FROM,
};
use crate::{Store, StoreError};

/// Most requests in one batch.
const MAX_BATCH: usize = 64;

type Reply = oneshot::Sender<Result<SubscribeOutcome, StoreError>>;

struct Job {
    req: NewSubscription,
    now: DateTime<Utc>,
    reply: Reply,
}

/// Takes Subscribe requests and answers them, batching those that arrive together.
#[derive(Clone)]
pub struct Subscriber {
    store: Store,
    jobs: mpsc::Sender<Job>,
    stats: Arc<Counters>,
}

/// How the batching went, for metrics and tests.
#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    batched: AtomicU64,
    alone: AtomicU64,
    failed_batches: AtomicU64,
}

/// A snapshot of [`Subscriber::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Batches committed.
    pub batches: u64,
    /// Requests answered by a committed batch.
    pub batched: u64,
    /// Requests answered one by one (idempotency keys, lapsed subscriptions, failed batches).
    pub alone: u64,
    /// Batches that failed and were answered one by one.
    pub failed_batches: u64,
}

impl Subscriber {
    /// Starts `workers` batch workers (each holds one connection while it works).
    pub fn start(store: Store, workers: usize) -> Self {
        let (jobs, rx) = mpsc::channel::<Job>(MAX_BATCH * workers.max(1) * 4);
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(Counters::default());
        for _ in 0..workers.max(1) {
            let (store, rx, stats) = (store.clone(), rx.clone(), stats.clone());
            tokio::spawn(async move {
                loop {
                    // Take what is waiting, never wait for more: batching adds no latency.
                    let batch = {
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else { return };
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(job) => batch.push(job),
                                Err(_) => break,
                            }
                        }
                        batch
                    };
                    run(&store, batch, &stats).await;
                }
            });
        }
        Self { store, jobs, stats }
    }

    /// How the batching went so far.
    pub fn stats(&self) -> BatchStats {
        BatchStats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            batched: self.stats.batched.load(Ordering::Relaxed),
            alone: self.stats.alone.load(Ordering::Relaxed),
            failed_batches: self.stats.failed_batches.load(Ordering::Relaxed),
        }
    }

    /// Registers interest, exactly as [`Store::subscribe`] does.
    pub async fn subscribe(
        &self,
        req: NewSubscription,
        now: DateTime<Utc>,
    ) -> Result<SubscribeOutcome, StoreError> {
        if req.idempotency.is_some() {
            self.stats.alone.fetch_add(1, Ordering::Relaxed);
            return self.store.subscribe(&req, now).await;
        }
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(Job { req, now, reply }).await {
            return self.store.subscribe(&job.req, job.now).await;
        }
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the subscribe worker stopped".into()))?
    }
}

async fn run(store: &Store, batch: Vec<Job>, stats: &Counters) {
    let reqs: Vec<&NewSubscription> = batch.iter().map(|j| &j.req).collect();
    let now = batch
        .iter()
        .map(|j| j.now)
        .max()
        .expect("a batch is never empty");
    match subscribe_batch(store, &reqs, now).await {
        Ok(answers) => {
            stats.batches.fetch_add(1, Ordering::Relaxed);
            for (job, answer) in batch.into_iter().zip(answers) {
                let answer = match answer {
                    Some(a) => {
                        stats.batched.fetch_add(1, Ordering::Relaxed);
                        a
                    }
                    None => {
                        stats.alone.fetch_add(1, Ordering::Relaxed);
                        store.subscribe(&job.req, job.now).await
                    }
                };
                let _ = job.reply.send(answer);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, size = batch.len(), "subscribe batch failed; answering one by one");
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            stats.alone.fetch_add(batch.len() as u64, Ordering::Relaxed);
            for job in batch {
                let answer = store.subscribe(&job.req, job.now).await;
                let _ = job.reply.send(answer);
            }
        }
    }
}

/// What the batch decided for one request.
enum Plan {
    Refused(StoreError),
    /// Insert a subscription (the index into the inserts).
    Insert(usize),
    /// The same subscription as an earlier request of the batch inserts (the index into the
    /// inserts).
    SameAs(usize),
    Existing(Uuid),
    /// Not for the batch path: answered by [`Store::subscribe`] after the batch.
    Alone,
}

/// Answers `None` for requests the caller must run alone.
async fn subscribe_batch(
    store: &Store,
    reqs: &[&NewSubscription],
    now: DateTime<Utc>,
) -> Result<Vec<Option<Result<SubscribeOutcome, StoreError>>>, StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    // The batch's statements take arrays: a custom plan per call costs more than running them
    // (planning ~1.6 ms for the ledger read, ~4 ms for the places), and the generic one is as
    // good, since the arrays' sizes are all the planner would learn.
    tx.batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")
        .await?;

    // 1. Contacts, created where missing and locked, in a fixed order so concurrent batches
    //    cannot deadlock.
    let mut phones: Vec<(String, String)> = reqs
        .iter()
        .map(|r| (r.tenant_id.clone(), r.phone.e164().to_string()))
        .collect();
    phones.sort();
    phones.dedup();
    let (tenants, numbers): (Vec<String>, Vec<String>) = phones.iter().cloned().unzip();
    let new_ids: Vec<Uuid> = phones.iter().map(|_| Uuid::now_v7()).collect();
    let mut contacts: HashMap<(String, String), Uuid> = HashMap::new();
    for row in query(
        &tx,
        "INSERT INTO contacts (tenant_id, contact_id, phone_e164, created_at) \
         SELECT u.t, u.id, u.p, $4 FROM unnest($1::text[], $2::uuid[], $3::text[]) AS u(t, id, p) ORDER BY u.t, u.p \
         ON CONFLICT (tenant_id, phone_e164) WHERE phone_e164 IS NOT NULL \
         DO UPDATE SET phone_e164 = EXCLUDED.phone_e164 \
         RETURNING tenant_id, phone_e164, contact_id",
        &[&tenants, &new_ids, &numbers, &now],
    )
    .await?
    {
        contacts.insert((row.get(0), row.get(1)), row.get(2));
    }
    let contact_of =
        |r: &NewSubscription| contacts[&(r.tenant_id.clone(), r.phone.e164().to_string())];

    // 2. Each request's ledger and live subscription of its target.
    let targets: Vec<String> = reqs.iter().map(|r| r.target.key()).collect();
    let req_tenants: Vec<&str> = reqs.iter().map(|r| r.tenant_id.as_str()).collect();
    let req_contacts: Vec<Uuid> = reqs.iter().map(|r| contact_of(r)).collect();
    let found = query(
        &tx,
        &format!(
            "SELECT ARRAY(SELECT e.kind FROM consent_events e WHERE e.tenant_id = u.t AND e.contact_id = u.c ORDER BY e.seq), \
               (SELECT s.subscription_id FROM subscriptions s WHERE s.tenant_id = u.t AND s.contact_id = u.c \
                AND s.target_key = u.k AND s.status IN {LIVE}), \
               (SELECT s.expires_at FROM subscriptions s WHERE s.tenant_id = u.t AND s.contact_id = u.c \
                AND s.target_key = u.k AND s.status IN {LIVE}) \
             FROM unnest($1::text[], $2::uuid[], $3::text[]) WITH ORDINALITY AS u(t, c, k, i) ORDER BY u.i"
        ),
        &[&req_tenants, &req_contacts, &targets],
    )
    .await?;

    // 3. Decide, request by request, as the single path would in arrival order.
    let mut ledgers: HashMap<Uuid, Vec<ConsentEventKind>> = HashMap::new();
    let mut planned: HashMap<(Uuid, String), usize> = HashMap::new();
    let mut plans = Vec::with_capacity(reqs.len());
    let mut inserts: Vec<(usize, SubscriptionStatus, Vec<ConsentEventKind>)> = Vec::new();
    for (i, (req, row)) in reqs.iter().zip(&found).enumerate() {
        let contact = req_contacts[i];
        let ledger = ledgers.entry(contact).or_insert_with(|| {
            row.get::<_, Vec<String>>(0)
                .iter()
                .filter_map(|k| ConsentEventKind::parse(k))
                .collect()
        });
        let state = derive_state(req.double_opt_in, ledger.iter().copied());
        let existing: Option<Uuid> = row.get(1);
        let expires: Option<DateTime<Utc>> = row.get(2);
        let plan = if state == ConsentState::OptedOut {
            Plan::Refused(StoreError::OptedOut)
        } else if let Some(&first) = planned.get(&(contact, targets[i].clone())) {
            Plan::SameAs(first)
        } else if let Some(id) = existing {
            if expires.is_some_and(|e| e > now) {
                Plan::Existing(id)
            } else {
                Plan::Alone
            }
        } else {
            let status = match (state, req.double_opt_in) {
                (ConsentState::OptedIn, _) | (_, false) => SubscriptionStatus::Active,
                _ if req.consent.source == ConsentSource::Sms => SubscriptionStatus::Active,
                _ => SubscriptionStatus::PendingConfirmation,
            };
            let mut kinds = vec![ConsentEventKind::OptIn];
            if req.consent.source == ConsentSource::Sms {
                kinds.push(ConsentEventKind::Confirm);
            }
            ledger.extend(kinds.iter().copied());
            planned.insert((contact, targets[i].clone()), inserts.len());
            inserts.push((i, status, kinds));
            Plan::Insert(inserts.len() - 1)
        };
        plans.push(plan);
    }

    // 4. What storefronts said about variants: it only fills in what is unknown, so the first
    //    word of the batch counts, as it would one request at a time.
    let mut variants: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, _, _) in &inserts {
        if let (Target::Variant { variant_id }, Some(_)) = (&reqs[*i].target, &reqs[*i].variant) {
            variants
                .entry((reqs[*i].tenant_id.clone(), variant_id.clone()))
                .or_insert(*i);
        }
    }
    for ((tenant, variant_id), i) in &variants {
        let r = reqs[*i];
        crate::waitlist::upsert_variant(
            &tx,
            tenant,
            variant_id,
            r.product_id.as_deref(),
            r.variant.as_ref().expect("has details"),
            crate::waitlist::DetailsSource::Subscribe,
            now,
        )
        .await?;
    }

    // 5. The new subscriptions and their consent events, in one statement.
    let mut ids = Vec::new();
    // Per new subscription: how many of the batch joined its line and tier after it (the
    // counters already include them; see `waitlist_place`).
    let mut later: HashMap<Uuid, i64> = HashMap::new();
    if !inserts.is_empty() {
        let n = inserts.len();
        let (
            mut t,
            mut sid,
            mut cid,
            mut key,
            mut vid,
            mut pid,
            mut wanted,
            mut cust,
            mut sess,
            mut locs,
            mut qty,
            mut tier,
            mut status,
            mut tz,
            mut exp,
        ) = (
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
        );
        let (
            mut e_t,
            mut e_c,
            mut e_id,
            mut e_kind,
            mut e_src,
            mut e_text,
            mut e_ip,
            mut e_ua,
            mut e_sub,
            mut e_at,
        ) = (
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
        );
        for (i, st, kinds) in &inserts {
            let r = reqs[*i];
            let id = Uuid::now_v7();
            ids.push(id);
            let (variant_id, wanted_options, product_id) = match &r.target {
                Target::Variant { variant_id } => (
                    Some(variant_id.clone()),
                    BTreeMap::new(),
                    r.product_id.clone(),
                ),
                Target::Product {
                    product_id,
                    wanted_options,
                } => (None, wanted_options.clone(), Some(product_id.clone())),
            };
            t.push(r.tenant_id.clone());
            sid.push(id);
            cid.push(req_contacts[*i]);
            key.push(targets[*i].clone());
            vid.push(variant_id);
            pid.push(product_id);
            wanted.push(serde_json::to_value(&wanted_options).expect("a map of strings"));
            cust.push(r.customer_id.clone());
            sess.push(r.session_id.clone());
            locs.push(serde_json::to_value(&r.location_ids).expect("a list of strings"));
            qty.push(r.desired_quantity);
            tier.push(r.priority_tier);
            status.push(st.as_str());
            tz.push(r.time_zone.clone());
            exp.push(r.expires_at);
            for kind in kinds {
                let opt_in = *kind == ConsentEventKind::OptIn;
                e_t.push(r.tenant_id.clone());
                e_c.push(req_contacts[*i]);
                e_id.push(Uuid::now_v7());
                e_kind.push(kind.as_str());
                e_src.push(r.consent.source.as_str());
                e_text.push(opt_in.then(|| r.consent.text.clone()));
                e_ip.push(if opt_in {
                    r.consent.ip_address.clone()
                } else {
                    None
                });
                e_ua.push(if opt_in {
                    r.consent.user_agent.clone()
                } else {
                    None
                });
                e_sub.push(id);
                e_at.push(if opt_in { r.consent.captured_at } else { now });
            }
        }
        debug_assert_eq!(ids.len(), n);
        let seqs = query(
            &tx,
            "WITH s AS ( \
               INSERT INTO subscriptions (tenant_id, subscription_id, contact_id, target_key, variant_id, product_id, \
                 wanted_options, customer_id, session_id, location_ids, desired_quantity, priority_tier, status, \
                 time_zone, created_at, updated_at, expires_at) \
               SELECT u.t, u.sid, u.cid, u.k, u.v, u.p, u.w, u.cu, u.se, \
                 ARRAY(SELECT jsonb_array_elements_text(u.l)), u.q, u.tier, u.st, u.tz, $16, $16, u.ex \
               FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::jsonb[], \
                 $8::text[], $9::text[], $10::jsonb[], $11::int[], $12::int[], $13::text[], $14::text[], $15::timestamptz[]) \
                 WITH ORDINALITY AS u(t, sid, cid, k, v, p, w, cu, se, l, q, tier, st, tz, ex, ord) ORDER BY u.ord \
               RETURNING subscription_id, seq), \
             e AS (INSERT INTO consent_events (tenant_id, contact_id, event_id, kind, source, consent_text, ip_address, \
               user_agent, subscription_id, occurred_at, recorded_at) \
             SELECT e.t, e.c, e.id, e.k, e.s, e.tx, e.ip, e.ua, e.sub, e.at, $16 \
             FROM unnest($17::text[], $18::uuid[], $19::uuid[], $20::text[], $21::text[], $22::text[], $23::text[], \
               $24::text[], $25::uuid[], $26::timestamptz[]) WITH ORDINALITY AS e(t, c, id, k, s, tx, ip, ua, sub, at, ord) \
             ORDER BY e.ord RETURNING 1) \
             SELECT subscription_id, seq FROM s",
            &[
                &t, &sid, &cid, &key, &vid, &pid, &wanted, &cust, &sess, &locs, &qty, &tier, &status, &tz, &exp, &now,
                &e_t, &e_c, &e_id, &e_kind, &e_src, &e_text, &e_ip, &e_ua, &e_sub, &e_at,
            ],
        )
        .await?;
        let seq_of: HashMap<Uuid, i64> = seqs.iter().map(|r| (r.get(0), r.get(1))).collect();
        let line = |k: usize| {
            let r = reqs[inserts[k].0];
            (
                r.tenant_id.as_str(),
                targets[inserts[k].0].as_str(),
                r.priority_tier,
            )
        };
        let mut lines: HashMap<(&str, &str, i32), Vec<i64>> = HashMap::new();
        for (k, id) in ids.iter().enumerate() {
            lines.entry(line(k)).or_default().push(seq_of[id]);
        }
        for (k, id) in ids.iter().enumerate() {
            let after = lines[&line(k)].iter().filter(|&&s| s > seq_of[id]).count();
            later.insert(*id, after as i64);
        }
    }

    // 6. Every answered subscription with its place in line, in one statement: a new one's
    //    from the counters, an existing one's by counting who is ahead.
    let mut wanted_ids: Vec<Uuid> = Vec::new();
    let mut wanted_tenants: Vec<&str> = Vec::new();
    let mut wanted_later: Vec<Option<i64>> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let id = match plan {
            Plan::Insert(k) => Some(ids[*k]),
            Plan::Existing(id) => Some(*id),
            _ => None,
        };
        if let Some(id) = id {
            wanted_ids.push(id);
            wanted_tenants.push(reqs[i].tenant_id.as_str());
            wanted_later.push(later.get(&id).copied());
        }
    }
    let mut rows: HashMap<Uuid, (crate::waitlist::SubscriptionRow, Position)> = HashMap::new();
    for row in query(
        &tx,
        &format!(
            "SELECT {SUB_COLUMNS}, p.place, p.waiting \
             FROM unnest($1::text[], $2::uuid[], $4::bigint[]) AS u(t, id, later) \
             JOIN {SUB_FROM} ON s.tenant_id = u.t AND s.subscription_id = u.id \
             CROSS JOIN LATERAL ( \
               SELECT f.place, f.waiting \
               FROM waitlist_place(s.tenant_id, s.target_key, s.priority_tier, s.seq, u.later, $3) f \
               WHERE u.later IS NOT NULL \
               UNION ALL \
               SELECT count(*) FILTER (WHERE o.priority_tier > s.priority_tier OR o.priority_tier = s.priority_tier AND o.seq < s.seq) + 1, \
                 count(*) \
               FROM subscriptions o WHERE u.later IS NULL AND o.tenant_id = s.tenant_id AND o.target_key = s.target_key \
               AND o.status IN {LIVE} AND o.expires_at > $3 HAVING u.later IS NULL) p"
        ),
        &[&wanted_tenants, &wanted_ids, &now, &wanted_later],
    )
    .await?
    {
        let sub = sub_from_row(&row)?;
        let (position, waiting): (i64, i64) = (row.get("place"), row.get("waiting"));
        let position = Position {
            position: if sub.status_at(now).is_live() { position as u64 } else { 0 },
            waiting: waiting as u64,
        };
        rows.insert(sub.subscription_id, (sub, position));
    }
    tx.commit().await?;

    let answer = |id: &Uuid, created: bool| -> Result<SubscribeOutcome, StoreError> {
        let (subscription, position) = rows
            .get(id)
            .cloned()
            .ok_or(StoreError::NotFound("subscription"))?;
        Ok(SubscribeOutcome {
            subscription,
            created,
            position,
        })
    };
    Ok(plans
        .into_iter()
        .map(|plan| match plan {
            Plan::Refused(e) => Some(Err(e)),
            Plan::Insert(k) => Some(answer(&ids[k], true)),
            Plan::SameAs(first) => Some(answer(&ids[first], false)),
            Plan::Existing(id) => Some(answer(&id, false)),
            Plan::Alone => None,
        })
        .collect())
}
