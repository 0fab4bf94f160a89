//! The eligibility engine's answers: why one subscription would or would not be texted
//! (`Explain`), and whom a restock would text (`DryRun`): requests parsed here, answered by
//! `app::eligibility`, and viewed here.

use super::*;
use crate::app::eligibility::{self, DryRunQuery, ExplainError, ExplainQuery};
use crate::grpc::requests::dry_run::DryRun;
use crate::grpc::requests::eligibility::Explain;

impl EligibilityApi {
    pub(super) async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let Explain {
            tenant_id,
            subscription_id,
            restock_id,
            variant_id: asked_variant,
        } = request.into_inner().try_into()?;
        let policy = self.state.tenant(&caller, &tenant_id)?;
        let query = ExplainQuery {
            tenant_id,
            subscription_id,
            restock_id,
            variant_id: asked_variant,
        };
        let e = eligibility::explain(&self.state, policy, query)
            .await
            .map_err(|e| match e {
                ExplainError::Store(e) => ApiError::from(e),
                e @ ExplainError::NoMatchingVariant => ApiError::FailedPrecondition {
                    kind: "STOCK",
                    subject: "variant_id".into(),
                    description: e.to_string(),
                },
                e @ ExplainError::RestockOfAnotherVariant => {
                    ApiError::field("restock_id", e.to_string())
                }
            })?;
        let d = &e.decision;
        let (kind, until) = decision::outcome(d.outcome);
        Ok(Response::new(pb::ExplainResponse {
            subscription_id: e.subscription_id.to_string(),
            variant_id: e.variant_id,
            restock_id: e.restock_id.map(|r| r.to_string()).unwrap_or_default(),
            evaluate_time: Some(timestamp(e.evaluated_at)),
            decision: kind as i32,
            defer_until_time: until,
            reason: decision::reason(d.reason) as i32,
            summary: d.summary.clone(),
            rules: decision::rules(d),
            message_id: e.message.map(|(m, _)| m.to_string()).unwrap_or_default(),
            propensity_score: e.propensity_score,
            release_order: e.release_order.to_string(),
            release_place: e
                .message
                .and_then(|(_, place)| place)
                .map_or(0, |p| p.max(0) as u32),
        }))
    }

    pub(super) async fn dry_run(
        &self,
        request: Request<pb::DryRunRequest>,
    ) -> Result<Response<pb::DryRunResponse>, Status> {
        let caller = crate::grpc::caller(&request)?;
        let tokens = &self.state.page_tokens;
        let run = DryRun::parse(request.into_inner(), tokens)?;
        let policy = self.state.tenant(&caller, &run.tenant_id)?;
        let query = DryRunQuery {
            tenant_id: run.tenant_id.clone(),
            variant_id: run.variant_id.clone(),
            location_id: run.location_id.clone(),
            assume_available: run.assume_available,
        };
        let (example_decision, example_reason) = (run.example_decision, run.example_reason);
        let (page, skip_examples) = (run.page_size, run.skip_examples);
        let mut counts: [u64; 3] = [0; 3];
        let mut deferred: BTreeMap<i32, u64> = BTreeMap::new();
        let mut skipped: BTreeMap<i32, u64> = BTreeMap::new();
        let (mut examples, mut matching, mut more) = (Vec::new(), 0u64, false);
        let summary = eligibility::dry_run(&self.state, policy, &query, |row, d| {
            let (kind, until) = decision::outcome(d.outcome);
            let reason = decision::reason(d.reason);
            match d.outcome {
                Outcome::SendNow => counts[0] += 1,
                Outcome::Defer(_) => {
                    counts[1] += 1;
                    *deferred.entry(reason as i32).or_default() += 1;
                }
                Outcome::Skip => {
                    counts[2] += 1;
                    *skipped.entry(reason as i32).or_default() += 1;
                }
            }
            let wanted = example_decision.is_none_or(|e| e == kind)
                && example_reason.is_none_or(|r| r == reason);
            if wanted {
                matching += 1;
                if matching > skip_examples {
                    if examples.len() < page {
                        examples.push(pb::DryRunExample {
                            subscription_id: row.subscription_id.to_string(),
                            priority_tier: row.priority_tier as u32,
                            create_time: Some(timestamp(row.created_at)),
                            decision: kind as i32,
                            reason: reason as i32,
                            defer_until_time: until,
                        });
                    } else {
                        more = true;
                    }
                }
            }
        })
        .await
        .map_err(ApiError::from)?;
        let by_reason = |m: BTreeMap<i32, u64>| {
            m.into_iter()
                .map(|(reason, count)| pb::ReasonCount { reason, count })
                .collect::<Vec<_>>()
        };
        Ok(Response::new(pb::DryRunResponse {
            evaluate_time: Some(timestamp(summary.evaluated_at)),
            assumed_available: summary.assumed_available,
            evaluated_count: summary.evaluated,
            send_now_count: counts[0],
            defer_count: counts[1],
            skip_count: counts[2],
            deferred_by_reason: by_reason(deferred),
            skipped_by_reason: by_reason(skipped),
            next_page_token: if more {
                tokens.issue(
                    &run.scope(),
                    &(skip_examples + examples.len() as u64).to_string(),
                )
            } else {
                String::new()
            },
            examples,
        }))
    }
}
