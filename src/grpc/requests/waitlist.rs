//! WaitlistService's requests as typed commands.

use std::net::IpAddr;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use restock_domain::{ConsentSource, Phone};
use restock_store::waitlist::{ListFilter, NewConsent};
use uuid::Uuid;

use restock_domain::fingerprint::Canonical;

use crate::error::ApiError;
use crate::grpc::convert;
use crate::grpc::paging::{PageTokens, Scope};
use crate::grpc::validate::{page_size, Violations};
use crate::proto::v1 as pb;

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

    // The tenant and the filters, each by name (the phone as E.164).
    fn scope_of<'a>(tenant_id: &'a str, filter: &ListFilter) -> Scope<'a> {
        Scope::new("ListSubscriptions", tenant_id, &|c: Canonical| {
            c.field("variant_id", &filter.variant_id)
                .field("product_id", &filter.product_id)
                .field("phone", filter.phone.as_ref().map(Phone::e164))
                .field("customer_id", &filter.customer_id)
                .field("status", filter.status)
        })
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
mod tests;
