//! WaitlistService: validates each request whole, then calls the store. See the proto for the
//! semantics of every RPC.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use prost::Message;
use restock_domain::{erasure, Phone, Target, TenantPolicy};
use restock_store::waitlist::{ListFilter, NewConsent, NewSubscription};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::convert;
use super::paging::Scope;
use super::validate::Violations;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::proto::v1 as pb;
use crate::proto::v1::waitlist_service_server::WaitlistService;
use crate::startup::AppState;

const MAX_LOCATIONS: usize = 50;
const MAX_QUANTITY: u32 = 1_000;
const MAX_TIER: u32 = 100;
/// Most scores in one SetPropensityScores call.
const MAX_SCORES: usize = 1_000;

/// The service.
pub struct WaitlistApi {
    state: Arc<AppState>,
}

impl WaitlistApi {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    fn tenant(&self, v: &mut Violations, tenant_id: &str) -> Option<String> {
        v.id("tenant_id", tenant_id, true)
    }

    fn policy(&self, caller: &Caller, tenant_id: &str) -> Result<&TenantPolicy, ApiError> {
        self.state.tenant(caller, tenant_id)
    }

    fn now(&self) -> DateTime<Utc> {
        self.state.clock.now()
    }
}

fn consent(
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

/// Fingerprint of a request, so a reused idempotency key with another request is caught.
fn fingerprint(req: &pb::SubscribeRequest) -> Vec<u8> {
    Sha256::digest(req.encode_to_vec()).to_vec()
}

#[tonic::async_trait]
impl WaitlistService for WaitlistApi {
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::SubscribeResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let now = self.now();
        let mut v = Violations::default();
        let tenant_id = self.tenant(&mut v, &req.tenant_id);
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
        // Links only to the brand's hosts (an unknown tenant is refused below anyway).
        let link_hosts = tenant_id
            .as_deref()
            .and_then(|t| self.state.tenants.get(t))
            .map(TenantPolicy::link_hosts);
        let variant = req
            .variant
            .as_ref()
            .map(|d| v.variant_details("variant", d, link_hosts.as_deref()));
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
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        let policy = self.policy(&caller, &tenant_id)?;
        let (phone, consent) = (phone.expect("validated"), consent.expect("validated"));
        let target = match &variant_id {
            Some(variant_id) => Target::Variant {
                variant_id: variant_id.clone(),
            },
            None => Target::Product {
                product_id: product_id.clone().expect("validated"),
                wanted_options: req.wanted_options.clone(),
            },
        };
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
            desired_quantity: req.desired_quantity.max(1) as i32,
            priority_tier: req.priority_tier as i32,
            expires_at: expires_at
                .unwrap_or_else(|| now + Duration::days(i64::from(policy.subscription_ttl_days))),
            time_zone,
            idempotency: idempotency_key.map(|k| (k, fingerprint(&req))),
            double_opt_in: policy.double_opt_in,
        };
        let phone = new.phone.clone();
        let outcome = self
            .state
            .subscriber
            .subscribe(new, now)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(
            phone = %phone.redacted(),
            subscription_id = %outcome.subscription.subscription_id,
            created = outcome.created,
            "subscribe"
        );
        Ok(Response::new(pb::SubscribeResponse {
            subscription: Some(convert::subscription(outcome.subscription, now)),
            created: outcome.created,
            waitlist_position: outcome.position.position,
        }))
    }

    async fn confirm_subscription(
        &self,
        request: Request<pb::ConfirmSubscriptionRequest>,
    ) -> Result<Response<pb::ConfirmSubscriptionResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = self.tenant(&mut v, &req.tenant_id);
        let id = v.uuid("subscription_id", &req.subscription_id, true);
        let source = v
            .enumeration::<pb::ConsentSource>("source", req.source, true)
            .and_then(convert::consent_source);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        let policy = self.policy(&caller, &tenant_id)?;
        let now = self.now();
        let row = self
            .state
            .store
            .confirm(
                &tenant_id,
                id.expect("validated"),
                source.expect("validated"),
                policy.double_opt_in,
                now,
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ConfirmSubscriptionResponse {
            subscription: Some(convert::subscription(row, now)),
        }))
    }

    async fn unsubscribe(
        &self,
        request: Request<pb::UnsubscribeRequest>,
    ) -> Result<Response<pb::UnsubscribeResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = self.tenant(&mut v, &req.tenant_id);
        let id = v.uuid("subscription_id", &req.subscription_id, true);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.policy(&caller, &tenant_id)?;
        let now = self.now();
        let row = self
            .state
            .store
            .unsubscribe(&tenant_id, id.expect("validated"), now)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::UnsubscribeResponse {
            subscription: Some(convert::subscription(row, now)),
        }))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::GetSubscriptionResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = self.tenant(&mut v, &req.tenant_id);
        let id = v.uuid("subscription_id", &req.subscription_id, true);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.policy(&caller, &tenant_id)?;
        let now = self.now();
        let (row, _) = self
            .state
            .store
            .get_subscription(&tenant_id, id.expect("validated"), now)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetSubscriptionResponse {
            subscription: Some(convert::subscription(row, now)),
        }))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = self.tenant(&mut v, &req.tenant_id);
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
        // The token is bound to the tenant and the filters it was issued for (the phone as
        // E.164: its `Debug` is redacted).
        let scope = Scope::new(
            "ListSubscriptions",
            &req.tenant_id,
            &(
                &filter.variant_id,
                &filter.product_id,
                filter.phone.as_ref().map(Phone::e164),
                &filter.customer_id,
                filter.status,
            ),
        );
        let tokens = &self.state.page_tokens;
        let after = tokens
            .open(&mut v, &req.page_token, &scope, |c| c.parse::<i64>().ok())
            .unwrap_or(0);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.policy(&caller, &tenant_id)?;
        let size = super::validate::page_size(req.page_size);
        let now = self.now();
        let mut rows = self
            .state
            .store
            .list_subscriptions(&tenant_id, &filter, after, size + 1, now)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            tokens.issue(&scope, &rows.last().expect("a full page").seq.to_string())
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: rows
                .into_iter()
                .map(|r| convert::subscription(r, now))
                .collect(),
            next_page_token,
        }))
    }

    async fn get_waitlist_position(
        &self,
        request: Request<pb::GetWaitlistPositionRequest>,
    ) -> Result<Response<pb::GetWaitlistPositionResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = self.tenant(&mut v, &req.tenant_id);
        let id = v.uuid("subscription_id", &req.subscription_id, true);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.policy(&caller, &tenant_id)?;
        let pos = self
            .state
            .store
            .waitlist_position(&tenant_id, id.expect("validated"), self.now())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetWaitlistPositionResponse {
            position: pos.position,
            waiting_count: pos.waiting,
        }))
    }

    async fn opt_out(
        &self,
        request: Request<pb::OptOutRequest>,
    ) -> Result<Response<pb::OptOutResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = self.tenant(&mut v, &req.tenant_id);
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
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.policy(&caller, &tenant_id)?;
        let phone = phone.expect("validated");
        let cancelled = self
            .state
            .store
            .opt_out(
                &tenant_id,
                &phone,
                source.expect("validated"),
                reason.as_deref(),
                self.now(),
            )
            .await
            .map_err(ApiError::from)?;
        tracing::info!(phone = %phone.redacted(), cancelled, "opt-out");
        Ok(Response::new(pb::OptOutResponse {
            consent_state: pb::ConsentState::OptedOut as i32,
            cancelled_subscriptions: cancelled,
        }))
    }

    async fn opt_in(
        &self,
        request: Request<pb::OptInRequest>,
    ) -> Result<Response<pb::OptInResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let now = self.now();
        let mut v = Violations::default();
        let tenant_id = self.tenant(&mut v, &req.tenant_id);
        let phone = v.phone(
            "phone_number",
            "default_region",
            &req.phone_number,
            &req.default_region,
        );
        let consent = consent(&mut v, "consent", req.consent.as_ref(), now);
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        let policy = self.policy(&caller, &tenant_id)?;
        let phone = phone.expect("validated");
        let state = self
            .state
            .store
            .opt_in(
                &tenant_id,
                &phone,
                &consent.expect("validated"),
                policy.double_opt_in,
                now,
            )
            .await
            .map_err(ApiError::from)?;
        tracing::info!(phone = %phone.redacted(), ?state, "opt-in");
        Ok(Response::new(pb::OptInResponse {
            consent_state: convert::consent_state(state) as i32,
        }))
    }

    async fn get_consent_history(
        &self,
        request: Request<pb::GetConsentHistoryRequest>,
    ) -> Result<Response<pb::GetConsentHistoryResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = self.tenant(&mut v, &req.tenant_id);
        let phone = v.phone(
            "phone_number",
            "default_region",
            &req.phone_number,
            &req.default_region,
        );
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        let policy = self.policy(&caller, &tenant_id)?;
        let history = self
            .state
            .store
            .consent_history(&tenant_id, &phone.expect("validated"), policy.double_opt_in)
            .await
            .map_err(ApiError::from)?;
        let (state, events) = history.unwrap_or((restock_domain::ConsentState::None, Vec::new()));
        Ok(Response::new(pb::GetConsentHistoryResponse {
            consent_state: convert::consent_state(state) as i32,
            events: events.into_iter().map(convert::consent_event).collect(),
        }))
    }

    async fn erase_phone(
        &self,
        request: Request<pb::ErasePhoneRequest>,
    ) -> Result<Response<pb::ErasePhoneResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = self.tenant(&mut v, &req.tenant_id);
        let phone = v.phone(
            "phone_number",
            "default_region",
            &req.phone_number,
            &req.default_region,
        );
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.policy(&caller, &tenant_id)?;
        let phone = phone.expect("validated");
        let key = self.state.erasure_key.clone();
        let outcome = self
            .state
            .store
            .erase_phone(
                &tenant_id,
                &phone,
                |value| erasure::erase(&key, value),
                self.now(),
            )
            .await
            .map_err(ApiError::from)?;
        tracing::info!(phone = %phone.redacted(), erased = outcome.erased, "erasure");
        Ok(Response::new(pb::ErasePhoneResponse {
            erased: outcome.erased,
            subscriptions_erased: outcome.subscriptions,
            consent_events_erased: outcome.consent_events,
        }))
    }

    async fn transfer_waitlist(
        &self,
        request: Request<pb::TransferWaitlistRequest>,
    ) -> Result<Response<pb::TransferWaitlistResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = self.tenant(&mut v, &req.tenant_id);
        let from = v.id("from_variant_id", &req.from_variant_id, true);
        let to = v.id("to_variant_id", &req.to_variant_id, true);
        if from.is_some() && from == to {
            v.add("to_variant_id", "must differ from from_variant_id");
        }
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.policy(&caller, &tenant_id)?;
        let (from, to) = (from.expect("validated"), to.expect("validated"));
        let done = self
            .state
            .store
            .transfer_waitlist(&tenant_id, &from, &to, self.now())
            .await
            .map_err(ApiError::from)?;
        tracing::info!(
            tenant_id,
            from,
            to,
            moved = done.moved,
            merged = done.merged,
            "waitlist transferred"
        );
        Ok(Response::new(pb::TransferWaitlistResponse {
            moved_count: done.moved,
            merged_count: done.merged,
        }))
    }

    async fn set_propensity_scores(
        &self,
        request: Request<pb::SetPropensityScoresRequest>,
    ) -> Result<Response<pb::SetPropensityScoresResponse>, Status> {
        let caller = super::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let tenant_id = self.tenant(&mut v, &req.tenant_id);
        if req.scores.is_empty() || req.scores.len() > MAX_SCORES {
            v.add("scores", format!("must hold 1 to {MAX_SCORES} scores"));
        }
        let mut scores = Vec::with_capacity(req.scores.len().min(MAX_SCORES));
        let mut seen = std::collections::HashSet::new();
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
        v.finish()?;
        let tenant_id = tenant_id.expect("validated");
        self.policy(&caller, &tenant_id)?;
        let updated = self
            .state
            .store
            .set_propensity_scores(&tenant_id, &scores, self.now())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::SetPropensityScoresResponse {
            updated_count: updated,
        }))
    }
}
