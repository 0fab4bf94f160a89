//! Unit tests of the WaitlistService commands.

use super::*;
use crate::grpc::requests::test_support::fields;

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
