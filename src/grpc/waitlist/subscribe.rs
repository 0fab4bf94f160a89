//! Subscribe (idempotent, with the consent it records) and its double opt-in confirmation.

use super::*;
use crate::app;
use crate::grpc::requests::waitlist::{consent, ConfirmSubscription, SubscriptionRef};

/// The print idempotency keys were stored with before the canonical one
/// ([`app::waitlist::fingerprint`]): SHA-256 of the request's proto bytes. Kept so that a
/// replay under a key stored then is still recognised (keys do not expire).
fn legacy_fingerprint(req: &pb::SubscribeRequest) -> Vec<u8> {
    Sha256::digest(req.encode_to_vec()).to_vec()
}

impl WaitlistApi {
    pub(super) async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::SubscribeResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
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
        let target = match (&variant_id, &product_id) {
            (Some(variant_id), _) => Some(Target::Variant {
                variant_id: variant_id.clone(),
            }),
            (None, Some(product_id)) => Some(Target::Product {
                product_id: product_id.clone(),
                wanted_options: req.wanted_options.clone(),
            }),
            (None, None) => None,
        };
        let (tenant_id, (phone, (consent, target))) =
            v.into_result(tenant_id.zip(phone.zip(consent.zip(target))))?;
        let policy = self.policy(&caller, &tenant_id)?;
        let legacy_fingerprint = idempotency_key.is_some().then(|| legacy_fingerprint(&req));
        let cmd = app::waitlist::Subscribe {
            tenant_id,
            phone,
            target,
            product_id,
            variant,
            consent,
            customer_id,
            session_id,
            location_ids,
            desired_quantity: req.desired_quantity.max(1),
            priority_tier: req.priority_tier,
            expires_at,
            time_zone,
            idempotency_key,
            legacy_fingerprint,
        };
        let outcome = app::waitlist::subscribe(&self.state, policy, cmd)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::SubscribeResponse {
            subscription: Some(convert::subscription(outcome.subscription, now)),
            created: outcome.created,
            waitlist_position: outcome.position.position,
        }))
    }

    pub(super) async fn confirm_subscription(
        &self,
        request: Request<pb::ConfirmSubscriptionRequest>,
    ) -> Result<Response<pb::ConfirmSubscriptionResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let ConfirmSubscription {
            subscription:
                SubscriptionRef {
                    tenant_id,
                    subscription_id: id,
                },
            source,
        } = request.into_inner().try_into()?;
        let policy = self.policy(&caller, &tenant_id)?;
        let now = self.now();
        let row = self
            .state
            .store
            .confirm(&tenant_id, id, source, policy.double_opt_in, now)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ConfirmSubscriptionResponse {
            subscription: Some(convert::subscription(row, now)),
        }))
    }
}
