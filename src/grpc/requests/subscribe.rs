//! Subscribe as a typed command: who, to what, with which consent.

use chrono::{DateTime, Utc};
use prost::Message;
use restock_domain::Target;
use sha2::{Digest, Sha256};

use super::waitlist::consent;
use crate::error::ApiError;
use crate::grpc::validate::Violations;
use crate::proto::v1 as pb;

/// Most locations one subscription may name.
pub const MAX_LOCATIONS: usize = 50;
/// Most units one subscription may want.
pub const MAX_QUANTITY: u32 = 1_000;
/// Highest priority tier.
pub const MAX_TIER: u32 = 100;

/// A valid Subscribe: who, to what, with which consent; the use case's command, built from the
/// request here. What the tenant's policy decides (the default expiry, double opt-in) is left to
/// the use case.
pub use crate::app::waitlist::Subscribe;

impl Subscribe {
    /// `now` bounds the consent's capture time and the expiry; `link_hosts` answers a tenant's
    /// link hosts (none for an unknown tenant, which is refused later anyway).
    pub fn parse(
        req: pb::SubscribeRequest,
        now: DateTime<Utc>,
        link_hosts: impl FnOnce(&str) -> Option<Vec<String>>,
    ) -> Result<Self, ApiError> {
        // Keys stored before the canonical print hold this one (only the transport has the
        // request's bytes); printed only when there is a key to keep it under.
        let legacy_fingerprint =
            (!req.idempotency_key.is_empty()).then(|| Sha256::digest(req.encode_to_vec()).to_vec());
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let variant_id = v.id("variant_id", &req.variant_id, false);
        let product_id = v.id("product_id", &req.product_id, false);
        if req.variant_id.is_empty() && req.product_id.is_empty() {
            v.add(
                "variant_id",
                "a variant_id, or a product_id for a product-level alert, is required",
            );
        }
        v.options("wanted_options", &req.wanted_options);
        if !req.variant_id.is_empty() && !req.wanted_options.is_empty() {
            v.add(
                "wanted_options",
                "only for a product-level subscription (without variant_id)",
            );
        }
        // Links only to the brand's hosts.
        let hosts = tenant_id.as_deref().and_then(link_hosts);
        let variant = req
            .variant
            .as_ref()
            .map(|d| v.variant_details("variant", d, hosts.as_deref()));
        let phone = v.phone(
            "phone_number",
            "default_region",
            &req.phone_number,
            &req.default_region,
        );
        let consent = consent(&mut v, "consent", req.consent.as_ref(), now);
        let customer_id = v.id("customer_id", &req.customer_id, false);
        let session_id = v.id("session_id", &req.session_id, false);
        if req.location_ids.len() > MAX_LOCATIONS {
            v.add("location_ids", format!("at most {MAX_LOCATIONS} locations"));
        }
        let mut location_ids = Vec::with_capacity(req.location_ids.len());
        for (i, l) in req.location_ids.iter().enumerate() {
            if let Some(l) = v.id(&format!("location_ids[{i}]"), l, true) {
                if !location_ids.contains(&l) {
                    location_ids.push(l);
                }
            }
        }
        if req.desired_quantity > MAX_QUANTITY {
            v.add(
                "desired_quantity",
                format!("must be at most {MAX_QUANTITY}"),
            );
        }
        if req.priority_tier > MAX_TIER {
            v.add("priority_tier", format!("must be at most {MAX_TIER}"));
        }
        let expires_at = req.expire_time.as_ref().and_then(|ts| {
            let t = v.timestamp("expire_time", ts)?;
            if t <= now {
                v.add("expire_time", "must be in the future");
                return None;
            }
            Some(t)
        });
        let idempotency_key = v.id("idempotency_key", &req.idempotency_key, false);
        let time_zone = (!req.time_zone.is_empty())
            .then(|| match req.time_zone.parse::<chrono_tz::Tz>() {
                Ok(tz) => Some(tz.name().to_string()),
                Err(_) => {
                    v.add(
                        "time_zone",
                        "must be an IANA time zone such as \"America/Chicago\"",
                    );
                    None
                }
            })
            .flatten();
        let target = match (variant_id, &product_id) {
            (Some(variant_id), _) => Some(Target::Variant { variant_id }),
            (None, Some(product_id)) => Some(Target::Product {
                product_id: product_id.clone(),
                wanted_options: req.wanted_options,
            }),
            (None, None) => None,
        };
        let parts = tenant_id.zip(phone.zip(consent.zip(target))).map(
            |(tenant_id, (phone, (consent, target)))| Subscribe {
                tenant_id,
                phone,
                target,
                product_id,
                variant,
                consent,
                customer_id,
                session_id,
                location_ids,
                desired_quantity: req.desired_quantity.clamp(1, MAX_QUANTITY) as i32,
                priority_tier: req.priority_tier.min(MAX_TIER) as i32,
                expires_at,
                time_zone,
                idempotency_key,
                legacy_fingerprint,
            },
        );
        v.into_result(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::requests::test_support::fields;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn subscribe() -> pb::SubscribeRequest {
        pb::SubscribeRequest {
            tenant_id: "demo".into(),
            variant_id: "sku-1".into(),
            phone_number: "+14155550100".into(),
            consent: Some(pb::Consent {
                consent_text: "Text me".into(),
                source: pb::ConsentSource::Web as i32,
                capture_time: Some(prost_types::Timestamp {
                    seconds: 1_799_999_000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            location_ids: vec!["web".into(), "store-1".into(), "web".into()],
            ..Default::default()
        }
    }

    #[test]
    fn subscribe_takes_defaults_and_dedups_locations() {
        let cmd = Subscribe::parse(subscribe(), now(), |_| None).unwrap();
        assert_eq!(cmd.desired_quantity, 1);
        assert_eq!(cmd.location_ids, ["web", "store-1"]);
        assert!(matches!(cmd.target, Target::Variant { ref variant_id } if variant_id == "sku-1"));
        assert_eq!(cmd.expires_at, None);
    }

    #[test]
    fn subscribe_names_every_bad_field() {
        let req = pb::SubscribeRequest {
            wanted_options: [("size".to_string(), "M".to_string())].into(),
            location_ids: (0..=MAX_LOCATIONS).map(|i| format!("l-{i}")).collect(),
            desired_quantity: MAX_QUANTITY + 1,
            priority_tier: MAX_TIER + 1,
            expire_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            time_zone: "Mars/Olympus".into(),
            variant: Some(pb::VariantDetails {
                deep_link: "https://elsewhere.example/p".into(),
                ..Default::default()
            }),
            ..subscribe()
        };
        let hosts = |t: &str| (t == "demo").then(|| vec!["shop.example".to_string()]);
        let mut got = fields(Subscribe::parse(req, now(), hosts).unwrap_err());
        got.sort();
        assert_eq!(
            got,
            [
                "desired_quantity",
                "expire_time",
                "location_ids",
                "priority_tier",
                "time_zone",
                "variant.deep_link",
                "wanted_options"
            ]
        );
    }
}
