//! Waitlist: Subscribe, idempotent on the caller's key, with the consent it records.

use chrono::{DateTime, Duration, Utc};
use restock_domain::fingerprint::{Canonical, Fingerprint};
use restock_domain::{Phone, Target, TenantPolicy};
use restock_store::waitlist::{NewConsent, NewSubscription, SubscribeOutcome, VariantDetails};
use restock_store::StoreError;

use crate::state::AppState;

/// A valid Subscribe: who, to what, with which consent. What the tenant's policy decides (the
/// default expiry, double opt-in) is decided here, by [`subscribe`].
#[derive(Debug, Clone)]
pub struct Subscribe {
    pub tenant_id: String,
    pub phone: Phone,
    pub target: Target,
    /// The product of a variant-level subscription, when the caller names it.
    pub product_id: Option<String>,
    pub variant: Option<VariantDetails>,
    pub consent: NewConsent,
    pub customer_id: Option<String>,
    pub session_id: Option<String>,
    /// Deduplicated, in the order given.
    pub location_ids: Vec<String>,
    /// At least 1.
    pub desired_quantity: i32,
    /// 0 or more.
    pub priority_tier: i32,
    /// In the future; `None`: after the tenant's `subscription_ttl_days`.
    pub expires_at: Option<DateTime<Utc>>,
    /// An IANA zone name.
    pub time_zone: Option<String>,
    pub idempotency_key: Option<String>,
    /// The print keys stored before the canonical form hold (SHA-256 of the request's proto
    /// bytes, which only the transport has): a replay of such a key is still recognised.
    pub legacy_fingerprint: Option<Vec<u8>>,
}

/// The fingerprint a Subscribe is kept with under its idempotency key: the canonical print of
/// every field of the request but the key itself, and the legacy print if the transport gave
/// one.
pub fn fingerprint(cmd: &Subscribe) -> Fingerprint {
    Fingerprint::new(canonical(cmd).finish(), cmd.legacy_fingerprint.clone())
}

/// The canonical encoding of a Subscribe, every field listed.
fn canonical(cmd: &Subscribe) -> Canonical {
    let (variant_id, target_product, wanted_options) = match &cmd.target {
        Target::Variant { variant_id } => (Some(variant_id), None, None),
        Target::Product {
            product_id,
            wanted_options,
        } => (None, Some(product_id), Some(wanted_options)),
    };
    let variant = cmd.variant.as_ref();
    let consent = &cmd.consent;
    Canonical::new("Subscribe")
        .field("tenant_id", &cmd.tenant_id)
        .field("phone", cmd.phone.e164())
        .field("target.variant_id", variant_id)
        .field("target.product_id", target_product)
        .field("target.wanted_options", wanted_options)
        .field("product_id", &cmd.product_id)
        .field("variant", variant.is_some())
        .field("variant.title", variant.and_then(|d| d.title.as_ref()))
        .field("variant.options", variant.map(|d| &d.options))
        .field(
            "variant.deep_link",
            variant.and_then(|d| d.deep_link.as_ref()),
        )
        .field("consent.source", consent.source)
        .field("consent.text", &consent.text)
        .field("consent.ip_address", &consent.ip_address)
        .field("consent.user_agent", &consent.user_agent)
        .field("consent.captured_at", consent.captured_at)
        .field("customer_id", &cmd.customer_id)
        .field("session_id", &cmd.session_id)
        .field("location_ids", &cmd.location_ids)
        .field("desired_quantity", cmd.desired_quantity)
        .field("priority_tier", cmd.priority_tier)
        .field("expires_at", cmd.expires_at)
        .field("time_zone", &cmd.time_zone)
}

/// Subscribes (or answers the subscription a replay of the same key made); whether it was new,
/// and its place in the waitlist.
#[tracing::instrument(skip_all, fields(tenant_id = %cmd.tenant_id, idempotent = cmd.idempotency_key.is_some()))]
pub async fn subscribe(
    state: &AppState,
    policy: &TenantPolicy,
    cmd: Subscribe,
) -> Result<SubscribeOutcome, StoreError> {
    let now = state.clock.now();
    // Printed only when there is a key to keep it under.
    let print = cmd.idempotency_key.is_some().then(|| fingerprint(&cmd));
    let Subscribe {
        tenant_id,
        phone,
        target,
        product_id,
        variant,
        consent,
        customer_id,
        session_id,
        location_ids,
        desired_quantity,
        priority_tier,
        expires_at,
        time_zone,
        idempotency_key,
        legacy_fingerprint: _,
    } = cmd;
    let new = NewSubscription {
        tenant_id,
        phone,
        target,
        product_id,
        variant,
        consent,
        customer_id,
        session_id,
        location_ids,
        desired_quantity,
        priority_tier,
        expires_at: expires_at
            .unwrap_or_else(|| now + Duration::days(i64::from(policy.subscription_ttl_days))),
        time_zone,
        idempotency: idempotency_key.zip(print),
        double_opt_in: policy.double_opt_in,
    };
    let phone = new.phone.clone();
    let outcome = state.subscriber.subscribe(new, now).await?;
    tracing::info!(
        phone = %phone.redacted(),
        subscription_id = %outcome.subscription.subscription_id,
        created = outcome.created,
        "subscribe"
    );
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use restock_domain::ConsentSource;
    use std::collections::BTreeMap;

    fn subscribe() -> Subscribe {
        Subscribe {
            tenant_id: "demo".into(),
            phone: Phone::parse("+14155550100", "").unwrap(),
            target: Target::Variant {
                variant_id: "sku-1".into(),
            },
            product_id: None,
            variant: None,
            consent: NewConsent {
                source: ConsentSource::Web,
                text: "Text me".into(),
                ip_address: None,
                user_agent: None,
                captured_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            },
            customer_id: None,
            session_id: None,
            location_ids: vec!["store-9".into()],
            desired_quantity: 1,
            priority_tier: 0,
            expires_at: None,
            time_zone: None,
            idempotency_key: Some("key-1".into()),
            legacy_fingerprint: None,
        }
    }

    /// Keys are kept with their print for as long as the key: the form must not drift. The
    /// expected digest was computed independently of this code (Python's hashlib over the
    /// bytes the grammar of `restock_domain::fingerprint` gives for these fields).
    #[test]
    fn the_canonical_form_is_frozen() {
        assert_eq!(
            hex::encode(canonical(&subscribe()).finish()),
            "a3249dbf1ae0cf8ff1dfa9729fbac22c904ac4f057453dc9731e8dc9bb17ac35"
        );
    }

    #[test]
    fn a_field_changes_the_print_and_the_key_does_not() {
        let print = |s: &Subscribe| fingerprint(s).stored().to_vec();
        let base = print(&subscribe());
        let other_key = Subscribe {
            idempotency_key: Some("key-2".into()),
            ..subscribe()
        };
        assert_eq!(print(&other_key), base);
        let changes = [
            Subscribe {
                desired_quantity: 2,
                ..subscribe()
            },
            Subscribe {
                location_ids: vec![],
                ..subscribe()
            },
            Subscribe {
                target: Target::Product {
                    product_id: "sku-1".into(),
                    wanted_options: BTreeMap::new(),
                },
                ..subscribe()
            },
            Subscribe {
                variant: Some(VariantDetails::default()),
                ..subscribe()
            },
            Subscribe {
                expires_at: Some(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()),
                ..subscribe()
            },
        ];
        for changed in &changes {
            assert_ne!(print(changed), base, "{changed:?}");
        }
    }

    #[test]
    fn a_key_stored_in_the_legacy_form_still_matches() {
        let legacy = vec![7u8; 32];
        let f = fingerprint(&Subscribe {
            legacy_fingerprint: Some(legacy.clone()),
            ..subscribe()
        });
        assert!(f.matches(&legacy));
        assert!(f.matches(f.stored()));
        assert!(!fingerprint(&subscribe()).matches(&legacy));
    }
}
