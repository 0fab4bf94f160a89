//! Eligibility: the one evaluation of a stored subscription (the sender, the planner, `Explain`
//! and `DryRun` all run it), the one matching of wanted options, and the use cases that answer
//! why a subscription would or would not be texted (`explain`).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use restock_domain::consent::derive_state;
use restock_domain::eligibility::{
    evaluate as engine, Candidate, Decision, Explanation, RestockContext, SubstitutePurchase,
};
use restock_domain::{Phone, TenantPolicy};
use restock_store::eligibility::CandidateRow;
use restock_store::StoreError;
use uuid::Uuid;

use crate::state::AppState;

/// What is known about a subscriber beyond their subscription: their purchases, texts and
/// caps.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known<'a> {
    pub last_purchase_at: Option<DateTime<Utc>>,
    /// The latest purchase of a close substitute of the variant by this phone or customer.
    pub substitute_purchase: Option<&'a SubstitutePurchase>,
    pub last_notified_at: Option<DateTime<Utc>>,
    pub phone_cap_free_at: Option<DateTime<Utc>>,
    pub tenant_cap_free_at: Option<DateTime<Utc>>,
}

/// Runs the engine for one stored subscription, with what is known about the phone.
pub fn evaluate(
    policy: &TenantPolicy,
    ctx: &RestockContext,
    row: &CandidateRow,
    known: Known<'_>,
) -> Decision {
    with_candidate(policy, row, known, |c| engine(policy, ctx, c))
}

/// The engine's candidate for one stored subscription, handed to `f`.
fn with_candidate<R>(
    policy: &TenantPolicy,
    row: &CandidateRow,
    known: Known<'_>,
    f: impl FnOnce(&Candidate) -> R,
) -> R {
    let consent = derive_state(policy.double_opt_in, row.ledger.iter().copied());
    let region = row.phone_e164.as_deref().and_then(region_of);
    let time_zone = row.time_zone.as_deref().and_then(|t| t.parse::<Tz>().ok());
    let candidate = Candidate {
        subscription_id: row.subscription_id,
        status: row.status,
        expires_at: row.expires_at,
        consent,
        desired_quantity: row.desired_quantity,
        location_ids: &row.location_ids,
        wanted_options: &row.wanted_options,
        time_zone,
        phone_region: region.as_deref(),
        last_purchase_at: known.last_purchase_at,
        substitute_purchase: known.substitute_purchase,
        last_notified_at: known.last_notified_at,
        phone_cap_free_at: known.phone_cap_free_at,
        tenant_cap_free_at: known.tenant_cap_free_at,
    };
    f(&candidate)
}

/// The country (ISO 3166-1) of an E.164 number, for quiet hours.
///
/// Parsing a number costs about 75 µs (phonenumber's metadata is regex-driven), more than the
/// rest of the eligibility engine together, and a release evaluates every subscriber twice. The
/// country is a function of the number's first digits (country code, then area code: a North
/// American area code names its country), so answers are cached by the first six digits.
pub fn region_of(e164: &str) -> Option<String> {
    static CACHE: LazyLock<Mutex<HashMap<String, Option<String>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    /// Distinct prefixes kept; far more than the countries and area codes in use.
    const MAX_PREFIXES: usize = 50_000;
    let key: String = e164.chars().take(7).collect();
    if let Some(hit) = CACHE.lock().expect("region cache").get(&key) {
        return hit.clone();
    }
    let region = Phone::parse(e164, "")
        .ok()
        .and_then(|p| p.region().map(str::to_string));
    let mut cache = CACHE.lock().expect("region cache");
    if cache.len() >= MAX_PREFIXES {
        cache.clear();
    }
    cache.insert(key, region.clone());
    region
}

#[cfg(test)]
mod tests {
    use super::region_of;

    #[test]
    fn regions_come_from_the_first_digits_and_are_cached_exactly() {
        for _ in 0..2 {
            assert_eq!(region_of("+14155550100").as_deref(), Some("US"));
            assert_eq!(region_of("+16135550100").as_deref(), Some("CA"));
            assert_eq!(region_of("+442071838750").as_deref(), Some("GB"));
            assert_eq!(region_of("+33142685300").as_deref(), Some("FR"));
        }
    }
}

/// What is known about a stored subscription from the texts and purchases its query read. Cap
/// state lives in Redis and is consulted when sending; `Explain` and `DryRun` take caps as free.
fn known_stored(row: &CandidateRow) -> Known<'_> {
    Known {
        last_purchase_at: row.last_purchase_at,
        substitute_purchase: row.substitute_purchase.as_ref(),
        last_notified_at: row.last_notified_at,
        ..Default::default()
    }
}

/// Runs the engine for one stored subscription, with the texts and purchases its query read.
pub fn evaluate_stored(
    policy: &TenantPolicy,
    ctx: &RestockContext,
    row: &CandidateRow,
) -> Decision {
    evaluate(policy, ctx, row, known_stored(row))
}

/// [`evaluate_stored`], in sentences for support: the only caller that renders prose.
fn explain_stored(policy: &TenantPolicy, ctx: &RestockContext, row: &CandidateRow) -> Explanation {
    with_candidate(policy, row, known_stored(row), |c| {
        engine(policy, ctx, c).explain(policy, ctx, c)
    })
}

/// What `explain` is asked.
#[derive(Debug)]
pub struct ExplainQuery {
    pub tenant_id: String,
    pub subscription_id: Uuid,
    /// The restock to judge against; else the variant's latest.
    pub restock_id: Option<Uuid>,
    /// The variant, for a subscription to a product without a restock named.
    pub variant_id: Option<String>,
}

/// Why `explain` cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A subscription to a product, no restock nor variant named, and no known variant of the
    /// product matches its wanted options.
    #[error("no known variant of the product matches the subscription's wanted options; name one in variant_id")]
    NoMatchingVariant,
    /// The restock named is one of another variant than the subscription's.
    #[error("is a restock of another variant")]
    RestockOfAnotherVariant,
}

/// The engine's answer for one subscription, with what it was judged against.
#[derive(Debug)]
pub struct Explained {
    pub subscription_id: Uuid,
    pub variant_id: String,
    pub restock_id: Option<Uuid>,
    pub evaluated_at: DateTime<Utc>,
    pub decision: Explanation,
    /// The text planned for the subscription in that restock's release, and its place.
    pub message: Option<(Uuid, Option<i32>)>,
    pub propensity_score: Option<f32>,
    /// The tenant's release order (`policy.release_order`), as named in its settings.
    pub release_order: &'static str,
}

/// Why one subscription would or would not be texted for a restock: the subscription's
/// variant (else the restock's, else the one asked for, else the product's matching variant),
/// that variant's stock, live exclusions, and the phone's history, judged by the engine as the
/// sender would judge it.
#[tracing::instrument(skip_all, fields(tenant_id = %q.tenant_id, subscription_id = %q.subscription_id))]
pub async fn explain(
    state: &AppState,
    policy: &TenantPolicy,
    q: ExplainQuery,
) -> Result<Explained, ExplainError> {
    let ExplainQuery {
        tenant_id,
        subscription_id,
        restock_id,
        variant_id: asked_variant,
    } = q;
    let now = state.clock.now();
    let store = &state.store;
    let mut row = store.candidate(&tenant_id, subscription_id).await?;
    let restock = match restock_id {
        Some(id) => Some(store.restock(&tenant_id, id).await?),
        None => None,
    };
    let variant_id = match (&row.variant_id, &restock, asked_variant) {
        (Some(v), _, _) => v.clone(),
        (None, Some(r), _) => r.variant_id.clone(),
        (None, None, Some(v)) => v,
        (None, None, None) => {
            let product = row.product_id.clone().unwrap_or_default();
            store
                .product_variants(&tenant_id, &product)
                .await?
                .into_iter()
                .find(|(_, options, _)| {
                    restock_domain::eligibility::options_match(&row.wanted_options, options)
                })
                .map(|(v, _, _)| v)
                .ok_or(ExplainError::NoMatchingVariant)?
        }
    };
    if restock.as_ref().is_some_and(|r| r.variant_id != variant_id) {
        return Err(ExplainError::RestockOfAnotherVariant);
    }
    let restock = match restock {
        Some(r) => Some(r),
        None => store.latest_restock(&tenant_id, &variant_id).await?,
    };
    let stock = store.stock(&tenant_id, &variant_id, &[]).await?;
    let product_id = stock.product_id.clone().or(row.product_id.clone());
    let exclusions = store
        .live_exclusions(&tenant_id, &variant_id, product_id.as_deref(), now)
        .await?;
    let mut policy = policy.clone();
    if restock.is_none() {
        // The holdout is drawn per restock: with none yet, there is nothing to draw.
        policy.holdout_share = 0.0;
    }
    let levels: Vec<(String, i64)> = stock
        .locations
        .iter()
        .map(|l| (l.location_id.clone(), l.available))
        .collect();
    let ctx = RestockContext {
        restock_id: restock.as_ref().map_or(Uuid::nil(), |r| r.restock_id),
        variant_id: &variant_id,
        product_id: product_id.as_deref(),
        variant_options: &stock.details.options,
        stock: &levels,
        exclusions,
        now,
    };
    (row.last_notified_at, row.last_purchase_at) = store
        .history(&tenant_id, row.subscription_id, &variant_id)
        .await?;
    row.substitute_purchase = store
        .substitute_purchase(&tenant_id, row.subscription_id, &variant_id)
        .await?;
    let decision = explain_stored(&policy, &ctx, &row);
    let message = match &restock {
        Some(r) => {
            store
                .message_for(&tenant_id, row.subscription_id, r.restock_id)
                .await?
        }
        None => None,
    };
    let propensity_score = store
        .propensity_score(&tenant_id, row.subscription_id)
        .await?;
    Ok(Explained {
        subscription_id: row.subscription_id,
        variant_id,
        restock_id: restock.map(|r| r.restock_id),
        evaluated_at: now,
        decision,
        message,
        propensity_score,
        release_order: policy.release_order.as_str(),
    })
}

/// What `dry_run` is asked: a restock of `variant_id` (at `location_id`, else everywhere),
/// with `assume_available` units (0: the current stock, at least the restock threshold).
#[derive(Debug)]
pub struct DryRunQuery {
    pub tenant_id: String,
    pub variant_id: String,
    pub location_id: Option<String>,
    pub assume_available: i64,
}

/// What a dry run judged against.
#[derive(Debug, Clone, Copy)]
pub struct DryRunSummary {
    pub evaluated_at: DateTime<Utc>,
    pub assumed_available: i64,
    pub evaluated: u64,
}

/// Whom a restock would text: every subscription the restock concerns, judged by the engine
/// as the planner would judge it (live exclusions included), each decision handed to `each`
/// in the planner's order.
#[tracing::instrument(skip_all, fields(tenant_id = %q.tenant_id, variant_id = %q.variant_id))]
pub async fn dry_run(
    state: &AppState,
    policy: &TenantPolicy,
    q: &DryRunQuery,
    mut each: impl FnMut(&CandidateRow, &Decision),
) -> Result<DryRunSummary, StoreError> {
    use futures_util::StreamExt;
    let now = state.clock.now();
    let store = &state.store;
    let (tenant_id, variant_id) = (&q.tenant_id, &q.variant_id);
    let stock = store.stock(tenant_id, variant_id, &[]).await?;
    let product_id = stock.product_id.clone();
    let exclusions = store
        .live_exclusions(tenant_id, variant_id, product_id.as_deref(), now)
        .await?;
    let current = |loc: &str| {
        stock
            .locations
            .iter()
            .find(|l| l.location_id == loc)
            .map_or(0, |l| l.available)
    };
    let assume = |level: i64| {
        if q.assume_available > 0 {
            q.assume_available
        } else {
            level.max(policy.restock_threshold)
        }
    };
    let assumed_available = match &q.location_id {
        Some(l) => assume(current(l)),
        None => assume(total_available(&stock.locations)),
    };
    let restock_id = dry_run_restock_id(
        tenant_id,
        variant_id,
        q.location_id.as_deref().unwrap_or(""),
    );
    let mut candidates = Box::pin(
        store
            .candidates(tenant_id, variant_id, product_id.as_deref())
            .await?,
    );
    let mut evaluated = 0u64;
    while let Some(row) = candidates.next().await {
        let row = row?;
        evaluated += 1;
        // The stock the restock would show this subscriber: the restocked location, or, for
        // a restock everywhere, each of the subscriber's serving locations.
        let levels: Vec<(String, i64)> = match &q.location_id {
            Some(l) => vec![(l.clone(), assumed_available)],
            None if row.location_ids.is_empty() => vec![("*".to_string(), assumed_available)],
            None => row
                .location_ids
                .iter()
                .map(|l| (l.clone(), assume(current(l))))
                .collect(),
        };
        let ctx = RestockContext {
            restock_id,
            variant_id,
            product_id: product_id.as_deref(),
            variant_options: &stock.details.options,
            stock: &levels,
            exclusions,
            now,
        };
        each(&row, &evaluate_stored(policy, &ctx, &row));
    }
    Ok(DryRunSummary {
        evaluated_at: now,
        assumed_available,
        evaluated,
    })
}

/// A stable stand-in restock id for a dry run, so its holdout draw is the same on every page.
fn dry_run_restock_id(tenant_id: &str, variant_id: &str, location_id: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(
        format!("dry-run\u{1f}{tenant_id}\u{1f}{variant_id}\u{1f}{location_id}").as_bytes(),
    );
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

/// A variant's available-to-sell over its locations. Saturating: levels stored before the
/// unit limit was enforced may be larger.
pub fn total_available(locations: &[restock_store::inventory::StockRow]) -> i64 {
    locations
        .iter()
        .fold(0i64, |sum, l| sum.saturating_add(l.available.max(0)))
}
