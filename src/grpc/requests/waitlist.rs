//! WaitlistService's requests as typed commands.

use std::net::IpAddr;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use restock_domain::{ConsentSource, Phone, Target};
use restock_store::waitlist::{ListFilter, NewConsent, VariantDetails};
use uuid::Uuid;

use crate::error::ApiError;
use crate::grpc::convert;
use crate::grpc::paging::{PageTokens, Scope};
use crate::grpc::validate::{page_size, Violations};
use crate::proto::v1 as pb;

/// Most locations one subscription may name.
pub const MAX_LOCATIONS: usize = 50;
/// Most units one subscription may want.
pub const MAX_QUANTITY: u32 = 1_000;
/// Highest priority tier.
pub const MAX_TIER: u32 = 100;
/// Most scores in one SetPropensityScores call.
pub const MAX_SCORES: usize = 1_000;

/// One subscription of a tenant: Unsubscribe, GetSubscription, GetWaitlistPosition.
#[derive(Debug)]
pub struct SubscriptionRef {
    pub tenant_id: String,
    pub subscription_id: Uuid,
}

impl SubscriptionRef {
    fn parse(tenant_id: &str, subscription_id: &str) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", tenant_id, true);
        let subscription_id = v.uuid("subscription_id", subscription_id, true);
        let parts = tenant_id
            .zip(subscription_id)
            .map(|(tenant_id, subscription_id)| SubscriptionRef {
                tenant_id,
                subscription_id,
            });
        v.into_result(parts)
    }
}

macro_rules! subscription_ref_from {
    ($($request:ty),*) => {$(
        impl TryFrom<$request> for SubscriptionRef {
            type Error = ApiError;
            fn try_from(req: $request) -> Result<Self, ApiError> {
                Self::parse(&req.tenant_id, &req.subscription_id)
            }
        }
    )*};
}
subscription_ref_from!(
    pb::UnsubscribeRequest,
    pb::GetSubscriptionRequest,
    pb::GetWaitlistPositionRequest
);

/// One phone of a tenant: GetConsentHistory, ErasePhone.
pub struct PhoneRef {
    pub tenant_id: String,
    pub phone: Phone,
}

impl PhoneRef {
    fn parse(tenant_id: &str, phone_number: &str, default_region: &str) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", tenant_id, true);
        let phone = v.phone(
            "phone_number",
            "default_region",
            phone_number,
            default_region,
        );
        let parts = tenant_id
            .zip(phone)
            .map(|(tenant_id, phone)| PhoneRef { tenant_id, phone });
        v.into_result(parts)
    }
}

macro_rules! phone_ref_from {
    ($($request:ty),*) => {$(
        impl TryFrom<$request> for PhoneRef {
            type Error = ApiError;
            fn try_from(req: $request) -> Result<Self, ApiError> {
                Self::parse(&req.tenant_id, &req.phone_number, &req.default_region)
            }
        }
    )*};
}
phone_ref_from!(pb::GetConsentHistoryRequest, pb::ErasePhoneRequest);

/// A valid OptOut.
pub struct OptOut {
    pub tenant_id: String,
    pub phone: Phone,
    pub source: ConsentSource,
    pub reason: Option<String>,
}

impl TryFrom<pb::OptOutRequest> for OptOut {
    type Error = ApiError;
    fn try_from(req: pb::OptOutRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let phone = v.phone(
            "phone_number",
            "default_region",
            &req.phone_number,
            &req.default_region,
        );
        let source = v
            .enumeration::<pb::ConsentSource>("source", req.source, true)
            .and_then(convert::consent_source);
        let reason = v.text("reason", &req.reason, 500, false);
        let parts = match (tenant_id, phone, source) {
            (Some(tenant_id), Some(phone), Some(source)) => Some(OptOut {
                tenant_id,
                phone,
                source,
                reason,
            }),
            _ => None,
        };
        v.into_result(parts)
    }
}

/// A valid ConfirmSubscription: the subscription and where the confirmation came from.
pub struct ConfirmSubscription {
    pub subscription: SubscriptionRef,
    pub source: ConsentSource,
}

impl TryFrom<pb::ConfirmSubscriptionRequest> for ConfirmSubscription {
    type Error = ApiError;
    fn try_from(req: pb::ConfirmSubscriptionRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let subscription_id = v.uuid("subscription_id", &req.subscription_id, true);
        let source = v
            .enumeration::<pb::ConsentSource>("source", req.source, true)
            .and_then(convert::consent_source);
        let parts = match (tenant_id, subscription_id, source) {
            (Some(tenant_id), Some(subscription_id), Some(source)) => Some(ConfirmSubscription {
                subscription: SubscriptionRef {
                    tenant_id,
                    subscription_id,
                },
                source,
            }),
            _ => None,
        };
        v.into_result(parts)
    }
}

/// A valid TransferWaitlist: two different variants.
#[derive(Debug)]
pub struct TransferWaitlist {
    pub tenant_id: String,
    pub from_variant_id: String,
    pub to_variant_id: String,
}

impl TryFrom<pb::TransferWaitlistRequest> for TransferWaitlist {
    type Error = ApiError;
    fn try_from(req: pb::TransferWaitlistRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let from = v.id("from_variant_id", &req.from_variant_id, true);
        let to = v.id("to_variant_id", &req.to_variant_id, true);
        if from.is_some() && from == to {
            v.add("to_variant_id", "must differ from from_variant_id");
        }
        let parts = match (tenant_id, from, to) {
            (Some(tenant_id), Some(from_variant_id), Some(to_variant_id)) => {
                Some(TransferWaitlist {
                    tenant_id,
                    from_variant_id,
                    to_variant_id,
                })
            }
            _ => None,
        };
        v.into_result(parts)
    }
}

/// The consent a request records: its text (at most 2,000 characters), source, capture time (not
/// in the future), and optional IP address and user agent (at most 512 characters).
pub fn consent(
    v: &mut Violations,
    field: &str,
    c: Option<&pb::Consent>,
    now: DateTime<Utc>,
) -> Option<NewConsent> {
    let Some(c) = c else {
        v.add(field, "is required");
        return None;
    };
    let text = v.text(
        &format!("{field}.consent_text"),
        &c.consent_text,
        2_000,
        true,
    );
    let source = v
        .enumeration::<pb::ConsentSource>(&format!("{field}.source"), c.source, true)
        .and_then(convert::consent_source);
    let captured_at = v.past_time(
        &format!("{field}.capture_time"),
        c.capture_time.as_ref(),
        now,
        true,
    );
    let ip_address = (!c.ip_address.is_empty())
        .then(|| match c.ip_address.parse::<IpAddr>() {
            Ok(ip) => Some(ip.to_string()),
            Err(_) => {
                v.add(
                    format!("{field}.ip_address"),
                    "must be an IPv4 or IPv6 address",
                );
                None
            }
        })
        .flatten();
    let user_agent = v.text(&format!("{field}.user_agent"), &c.user_agent, 512, false);
    Some(NewConsent {
        source: source?,
        text: text?,
        ip_address,
        user_agent,
        captured_at: captured_at?,
    })
}

/// A valid OptIn: a phone and the consent it gives.
#[derive(Debug)]
pub struct OptIn {
    pub tenant_id: String,
    pub phone: Phone,
    pub consent: NewConsent,
}

impl OptIn {
    /// `now` bounds the consent's capture time (not in the future, beyond clock skew).
    pub fn parse(req: pb::OptInRequest, now: DateTime<Utc>) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let phone = v.phone(
            "phone_number",
            "default_region",
            &req.phone_number,
            &req.default_region,
        );
        let consent = consent(&mut v, "consent", req.consent.as_ref(), now);
        let parts = tenant_id
            .zip(phone.zip(consent))
            .map(|(tenant_id, (phone, consent))| OptIn {
                tenant_id,
                phone,
                consent,
            });
        v.into_result(parts)
    }
}

/// A valid Subscribe: who, to what, with which consent. What the tenant's policy decides (the
/// default expiry, double opt-in) is left to the handler.
#[derive(Debug)]
pub struct Subscribe {
    pub tenant_id: String,
    pub phone: Phone,
    pub target: Target,
    pub product_id: Option<String>,
    pub variant: Option<VariantDetails>,
    pub consent: NewConsent,
    pub customer_id: Option<String>,
    pub session_id: Option<String>,
    /// Deduplicated, in the order given; at most [`MAX_LOCATIONS`].
    pub location_ids: Vec<String>,
    /// 1 to [`MAX_QUANTITY`] (0 in the request means 1).
    pub desired_quantity: i32,
    /// 0 to [`MAX_TIER`].
    pub priority_tier: i32,
    /// In the future; `None`: the tenant's default.
    pub expires_at: Option<DateTime<Utc>>,
    /// An IANA zone name.
    pub time_zone: Option<String>,
    pub idempotency_key: Option<String>,
}

impl Subscribe {
    /// `now` bounds the consent's capture time and the expiry; `link_hosts` answers a tenant's
    /// link hosts (none for an unknown tenant, which is refused later anyway).
    pub fn parse(
        req: pb::SubscribeRequest,
        now: DateTime<Utc>,
        link_hosts: impl FnOnce(&str) -> Option<Vec<String>>,
    ) -> Result<Self, ApiError> {
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
            },
        );
        v.into_result(parts)
    }
}

/// A page of a tenant's subscriptions: ListSubscriptions.
#[derive(Debug)]
pub struct ListSubscriptions {
    pub tenant_id: String,
    pub filter: ListFilter,
    /// At most `validate::MAX_PAGE`.
    pub page_size: i64,
    /// The sequence number the page starts after (0: the first page), from a token opened
    /// against this very filter.
    pub after: i64,
}

impl ListSubscriptions {
    pub fn parse(req: pb::ListSubscriptionsRequest, tokens: &PageTokens) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        if req.page_size < 0 {
            v.add("page_size", "must not be negative");
        }
        let filter = ListFilter {
            variant_id: v.id("variant_id", &req.variant_id, false),
            product_id: v.id("product_id", &req.product_id, false),
            phone: (!req.phone_number.is_empty())
                .then(|| {
                    v.phone(
                        "phone_number",
                        "default_region",
                        &req.phone_number,
                        &req.default_region,
                    )
                })
                .flatten(),
            customer_id: v.id("customer_id", &req.customer_id, false),
            status: v
                .enumeration::<pb::SubscriptionStatus>("status", req.status, false)
                .and_then(convert::status),
        };
        let after = tokens
            .open(
                &mut v,
                &req.page_token,
                &Self::scope_of(&req.tenant_id, &filter),
                |c| c.parse::<i64>().ok(),
            )
            .unwrap_or(0);
        let parts = tenant_id.map(|tenant_id| ListSubscriptions {
            tenant_id,
            filter,
            page_size: page_size(req.page_size),
            after,
        });
        v.into_result(parts)
    }

    /// What this list's page tokens are bound to.
    pub fn scope(&self) -> Scope<'_> {
        Self::scope_of(&self.tenant_id, &self.filter)
    }

    // The tenant and the filters (the phone as E.164: its `Debug` is redacted).
    fn scope_of<'a>(tenant_id: &'a str, filter: &ListFilter) -> Scope<'a> {
        Scope::new(
            "ListSubscriptions",
            tenant_id,
            &(
                &filter.variant_id,
                &filter.product_id,
                filter.phone.as_ref().map(Phone::e164),
                &filter.customer_id,
                filter.status,
            ),
        )
    }
}

/// A valid SetPropensityScores: 1 to [`MAX_SCORES`] distinct subscriptions, each scored from 0
/// to 1.
#[derive(Debug)]
pub struct SetPropensityScores {
    pub tenant_id: String,
    pub scores: Vec<(Uuid, f32)>,
}

impl TryFrom<pb::SetPropensityScoresRequest> for SetPropensityScores {
    type Error = ApiError;
    fn try_from(req: pb::SetPropensityScoresRequest) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        if req.scores.is_empty() || req.scores.len() > MAX_SCORES {
            v.add("scores", format!("must hold 1 to {MAX_SCORES} scores"));
        }
        let mut scores = Vec::with_capacity(req.scores.len().min(MAX_SCORES));
        let mut seen = HashSet::new();
        for (i, s) in req.scores.iter().enumerate().take(MAX_SCORES) {
            let id = v.uuid(
                &format!("scores[{i}].subscription_id"),
                &s.subscription_id,
                true,
            );
            if let Some(id) = id {
                if !seen.insert(id) {
                    v.add(
                        format!("scores[{i}].subscription_id"),
                        "names a subscription already scored in this request",
                    );
                }
                scores.push((id, s.score));
            }
            if !(s.score.is_finite() && (0.0..=1.0).contains(&s.score)) {
                v.add(
                    format!("scores[{i}].score"),
                    "must be a finite number from 0 to 1",
                );
            }
        }
        let parts = tenant_id.map(|tenant_id| SetPropensityScores { tenant_id, scores });
        v.into_result(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(e: ApiError) -> Vec<String> {
        match e {
            ApiError::InvalidArgument(v) => v.into_iter().map(|(field, _)| field).collect(),
            other => panic!("not INVALID_ARGUMENT: {other:?}"),
        }
    }

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

    #[test]
    fn list_subscriptions_tokens_are_bound_to_the_phone() {
        let tokens = PageTokens::new(b"test key");
        let req = |phone: &str| pb::ListSubscriptionsRequest {
            tenant_id: "demo".into(),
            phone_number: phone.into(),
            ..Default::default()
        };
        let first = ListSubscriptions::parse(req("+14155550100"), &tokens).unwrap();
        assert_eq!(first.after, 0);
        let token = tokens.issue(&first.scope(), "42");
        let next = pb::ListSubscriptionsRequest {
            page_token: token.clone(),
            ..req("+1 415 555 0100")
        };
        assert_eq!(ListSubscriptions::parse(next, &tokens).unwrap().after, 42);
        let other = pb::ListSubscriptionsRequest {
            page_token: token,
            ..req("+14155550199")
        };
        assert_eq!(
            fields(ListSubscriptions::parse(other, &tokens).unwrap_err()),
            ["page_token"]
        );
    }

    #[test]
    fn set_propensity_scores_names_every_bad_score() {
        let id = Uuid::now_v7().to_string();
        let score = |subscription_id: &str, score| pb::PropensityScore {
            subscription_id: subscription_id.into(),
            score,
        };
        let req = pb::SetPropensityScoresRequest {
            tenant_id: "demo".into(),
            scores: vec![score(&id, 0.5), score(&id, 1.5), score("nope", f32::NAN)],
        };
        let got = fields(SetPropensityScores::try_from(req).unwrap_err());
        assert_eq!(
            got,
            [
                "scores[1].subscription_id",
                "scores[1].score",
                "scores[2].subscription_id",
                "scores[2].score"
            ]
        );
        let ok = pb::SetPropensityScoresRequest {
            tenant_id: "demo".into(),
            scores: vec![score(&id, 1.0)],
        };
        assert_eq!(SetPropensityScores::try_from(ok).unwrap().scores.len(), 1);
    }
}
