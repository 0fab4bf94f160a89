//! Planning: each waiting subscription of a restocked variant through the eligibility engine,
//! and every text rendered once, at planning, so the body a provider may already hold is known
//! before the hand-over (that is how a lost outcome is found again).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use restock_domain::eligibility::{Outcome, Reason, RestockContext};
use restock_domain::tenant::ReleaseOrder;
use restock_domain::waves::Strategy;
use restock_domain::TenantPolicy;
use restock_sms::template::{render, TemplateInput};
use restock_store::dispatch::{PlanChoice, PlanContext, PlanRow, Planner, ReleaseSettings, Text};

use super::{evaluate, Known};

/// A fresh unguessable link token: 128 random bits, base64url (22 characters).
pub fn link_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The text of one message about one release.
pub struct Renderer<'a> {
    pub policy: &'a TenantPolicy,
    pub public_base_url: &'a str,
}

impl Renderer<'_> {
    /// Renders the first text (or the reminder) with its own link. The delivery promise is
    /// the restocked location's, when the restock is regional.
    pub fn render(
        &self,
        title: Option<&str>,
        options: &BTreeMap<String, String>,
        location_id: Option<&str>,
        reminder: bool,
        token: &str,
    ) -> Result<Text, String> {
        let link = format!("{}/r/{token}", self.public_base_url);
        let promise = location_id.and_then(|l| self.policy.delivery_promises.get(l));
        let template = if reminder {
            &self.policy.reminder_template
        } else {
            &self.policy.message_template
        };
        let brand = if self.policy.display_name.is_empty() {
            "restock"
        } else {
            &self.policy.display_name
        };
        let rendered = render(
            template,
            &self.policy.opt_out_text,
            self.policy.max_segments,
            &TemplateInput {
                brand,
                title: title.unwrap_or(""),
                options,
                link: &link,
                promise: promise.map(String::as_str),
            },
        )
        .map_err(|e| e.to_string())?;
        Ok(Text {
            body: rendered.body,
            segments: rendered.analysis.segments as i32,
            encoding: rendered.analysis.encoding.as_str(),
            sender_id: self.policy.sender_id.clone(),
            link_token: token.to_string(),
        })
    }
}

/// Plans releases with the tenants' policies.
pub struct PolicyPlanner {
    pub tenants: Arc<BTreeMap<String, TenantPolicy>>,
    pub public_base_url: String,
    pub now: DateTime<Utc>,
    /// Rendering failures per release (a template the title cannot be fitted into): logged
    /// once per release, not per message.
    pub render_failures: HashMap<uuid::Uuid, u32>,
    /// Called when a committed chunk of the plan holds texts senders may claim (wakes them).
    pub on_claimable: Option<Box<dyn Fn() + Send>>,
}

impl Planner for PolicyPlanner {
    fn written(&mut self, _release: &PlanContext, claimable: bool) {
        if let (true, Some(wake)) = (claimable, &self.on_claimable) {
            wake();
        }
    }

    fn settings(&mut self, release: &PlanContext) -> Option<ReleaseSettings> {
        let policy = self.tenants.get(&release.tenant_id)?;
        Some(ReleaseSettings {
            strategy: Strategy::of(policy),
            by_score: policy.release_order == ReleaseOrder::TierScoreArrival,
            holdout_bps: (policy.holdout_share * 10_000.0).round() as i32,
            threshold: policy.restock_threshold,
        })
    }

    fn decide(&mut self, release: &PlanContext, row: &PlanRow) -> PlanChoice {
        let policy = &self.tenants[&release.tenant_id];
        let stock = stock_for(release.location_id.as_deref(), &release.stock);
        let ctx = RestockContext {
            restock_id: release.restock_id,
            variant_id: &release.variant_id,
            product_id: release.product_id.as_deref(),
            variant_options: &release.options,
            stock: &stock,
            exclusions: release.exclusions,
            now: self.now,
        };
        let decision = evaluate(
            policy,
            &ctx,
            &row.candidate,
            Known {
                last_purchase_at: row.last_purchase_at,
                substitute_purchase: row.candidate.substitute_purchase.as_ref(),
                last_notified_at: row.last_notified_at,
                ..Known::default()
            },
        );
        let token = link_token();
        let deferred = match decision.outcome {
            Outcome::Skip if decision.reason == Some(Reason::Holdout) => {
                return PlanChoice::HeldOut { link_token: token }
            }
            Outcome::Skip => {
                return PlanChoice::Skip {
                    reason: decision.reason.map_or("unknown", Reason::as_str),
                    link_token: token,
                }
            }
            Outcome::Defer(until) => {
                Some((until, decision.reason.map_or("unknown", Reason::as_str)))
            }
            Outcome::SendNow => None,
        };
        let renderer = Renderer {
            policy,
            public_base_url: &self.public_base_url,
        };
        // The promise of the restocked location; for a variant-level restock, of the first of
        // the shopper's own locations that has the stock (their nearest, in the order they
        // gave). A shopper who named none gets no promise: a wrong one is worse.
        let promise_location = release.location_id.as_deref().or_else(|| {
            row.candidate
                .location_ids
                .iter()
                .map(String::as_str)
                .find(|l| {
                    release
                        .stock
                        .iter()
                        .any(|(at, available)| at == l && *available > 0)
                })
        });
        match renderer.render(
            release.title.as_deref(),
            &release.options,
            promise_location,
            false,
            &token,
        ) {
            Ok(mut text) => {
                // From a sender the phone's country allows (the engine skipped it otherwise).
                let region = row
                    .candidate
                    .phone_e164
                    .as_deref()
                    .and_then(super::region_of);
                if let Some(sender) = policy.sender_for(region.as_deref()) {
                    text.sender_id = sender.to_string();
                }
                PlanChoice::Text { text, deferred }
            }
            Err(why) => {
                let n = self.render_failures.entry(release.release_id).or_default();
                if *n == 0 {
                    tracing::error!(tenant_id = %release.tenant_id, release_id = %release.release_id, %why, "the tenant's template cannot be rendered; messages skipped");
                }
                *n += 1;
                PlanChoice::Skip {
                    reason: "template_too_long",
                    link_token: token,
                }
            }
        }
    }
}

/// The stock a restock shows: the restocked location's level, or every location's for a
/// variant-level restock (each subscriber is then served by their own locations).
pub fn stock_for(location_id: Option<&str>, levels: &[(String, i64)]) -> Vec<(String, i64)> {
    match location_id {
        Some(l) => vec![(
            l.to_string(),
            levels.iter().find(|(x, _)| x == l).map_or(0, |(_, a)| *a),
        )],
        None => levels.to_vec(),
    }
}
