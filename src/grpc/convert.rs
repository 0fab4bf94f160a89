//! Conversions between the generated API types and the domain and store types.

use chrono::{DateTime, Utc};
use restock_domain::{
    CancelReason, ConsentEventKind, ConsentSource, ConsentState, SubscriptionStatus,
};
use restock_store::waitlist::{ConsentEventRow, SubscriptionRow};

use crate::proto::v1 as pb;

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn consent_source(s: pb::ConsentSource) -> Option<ConsentSource> {
    Some(match s {
        pb::ConsentSource::Unspecified => return None,
        pb::ConsentSource::Web => ConsentSource::Web,
        pb::ConsentSource::App => ConsentSource::App,
        pb::ConsentSource::PointOfSale => ConsentSource::PointOfSale,
        pb::ConsentSource::Sms => ConsentSource::Sms,
        pb::ConsentSource::Support => ConsentSource::Support,
        pb::ConsentSource::Import => ConsentSource::Import,
    })
}

fn consent_source_pb(s: ConsentSource) -> pb::ConsentSource {
    match s {
        ConsentSource::Web => pb::ConsentSource::Web,
        ConsentSource::App => pb::ConsentSource::App,
        ConsentSource::PointOfSale => pb::ConsentSource::PointOfSale,
        ConsentSource::Sms => pb::ConsentSource::Sms,
        ConsentSource::Support => pb::ConsentSource::Support,
        ConsentSource::Import => pb::ConsentSource::Import,
    }
}

pub fn status(s: pb::SubscriptionStatus) -> Option<SubscriptionStatus> {
    Some(match s {
        pb::SubscriptionStatus::Unspecified => return None,
        pb::SubscriptionStatus::PendingConfirmation => SubscriptionStatus::PendingConfirmation,
        pb::SubscriptionStatus::Active => SubscriptionStatus::Active,
        pb::SubscriptionStatus::Notified => SubscriptionStatus::Notified,
        pb::SubscriptionStatus::Converted => SubscriptionStatus::Converted,
        pb::SubscriptionStatus::Expired => SubscriptionStatus::Expired,
        pb::SubscriptionStatus::Cancelled => SubscriptionStatus::Cancelled,
        pb::SubscriptionStatus::Lapsed => SubscriptionStatus::Lapsed,
    })
}

pub fn status_pb(s: SubscriptionStatus) -> pb::SubscriptionStatus {
    match s {
        SubscriptionStatus::PendingConfirmation => pb::SubscriptionStatus::PendingConfirmation,
        SubscriptionStatus::Active => pb::SubscriptionStatus::Active,
        SubscriptionStatus::Notified => pb::SubscriptionStatus::Notified,
        SubscriptionStatus::Converted => pb::SubscriptionStatus::Converted,
        SubscriptionStatus::Expired => pb::SubscriptionStatus::Expired,
        SubscriptionStatus::Cancelled => pb::SubscriptionStatus::Cancelled,
        SubscriptionStatus::Lapsed => pb::SubscriptionStatus::Lapsed,
    }
}

pub fn consent_state(s: ConsentState) -> pb::ConsentState {
    match s {
        ConsentState::None => pb::ConsentState::None,
        ConsentState::PendingConfirmation => pb::ConsentState::PendingConfirmation,
        ConsentState::OptedIn => pb::ConsentState::OptedIn,
        ConsentState::OptedOut => pb::ConsentState::OptedOut,
    }
}

pub fn subscription(row: SubscriptionRow, now: DateTime<Utc>) -> pb::Subscription {
    pb::Subscription {
        subscription_id: row.subscription_id.to_string(),
        status: status_pb(row.status_at(now)) as i32,
        tenant_id: row.tenant_id,
        variant_id: row.variant_id.unwrap_or_default(),
        product_id: row.product_id.unwrap_or_default(),
        wanted_options: row.wanted_options,
        phone_number: row.phone_e164.unwrap_or_default(),
        customer_id: row
            .customer_id
            .filter(|c| !c.starts_with("erased:"))
            .unwrap_or_default(),
        session_id: row
            .session_id
            .filter(|c| !c.starts_with("erased:"))
            .unwrap_or_default(),
        location_ids: row.location_ids,
        desired_quantity: row.desired_quantity as u32,
        priority_tier: row.priority_tier as u32,
        create_time: Some(timestamp(row.created_at)),
        expire_time: Some(timestamp(row.expires_at)),
        update_time: Some(timestamp(row.updated_at)),
        time_zone: row.time_zone.unwrap_or_default(),
        cancel_reason: match row.cancel_reason {
            None => pb::CancelReason::Unspecified,
            Some(CancelReason::Unsubscribed) => pb::CancelReason::Unsubscribed,
            Some(CancelReason::OptedOut) => pb::CancelReason::OptedOut,
            Some(CancelReason::Erased) => pb::CancelReason::Erased,
            Some(CancelReason::MergedByTransfer) => pb::CancelReason::MergedByTransfer,
        } as i32,
    }
}

pub fn consent_event(e: ConsentEventRow) -> pb::ConsentEvent {
    pb::ConsentEvent {
        event_id: e.event_id.to_string(),
        kind: match e.kind {
            ConsentEventKind::OptIn => pb::ConsentEventKind::OptIn,
            ConsentEventKind::Confirm => pb::ConsentEventKind::Confirm,
            ConsentEventKind::OptOut => pb::ConsentEventKind::OptOut,
        } as i32,
        source: e
            .source
            .map(consent_source_pb)
            .unwrap_or(pb::ConsentSource::Unspecified) as i32,
        consent_text: e.consent_text.unwrap_or_default(),
        ip_address: e.ip_address.unwrap_or_default(),
        user_agent: e.user_agent.unwrap_or_default(),
        reason: e.reason.unwrap_or_default(),
        subscription_id: e.subscription_id.map(|s| s.to_string()).unwrap_or_default(),
        occur_time: Some(timestamp(e.occurred_at)),
        record_time: Some(timestamp(e.recorded_at)),
    }
}

pub mod decision {
    //! The eligibility engine's answers in API terms.

    use restock_domain::eligibility::{ExplainedRule, Explanation, Outcome, Reason, Rule, Verdict};

    use super::timestamp;
    use crate::proto::v1 as pb;

    pub fn reason(r: Option<Reason>) -> pb::ReasonCode {
        use pb::ReasonCode as P;
        match r {
            None => P::Unspecified,
            Some(Reason::ConsentMissing) => P::ConsentMissing,
            Some(Reason::ConsentPendingConfirmation) => P::ConsentPendingConfirmation,
            Some(Reason::ConsentOptedOut) => P::ConsentOptedOut,
            Some(Reason::SubscriptionCancelled) => P::SubscriptionCancelled,
            Some(Reason::SubscriptionExpired) => P::SubscriptionExpired,
            Some(Reason::SubscriptionLapsed) => P::SubscriptionLapsed,
            Some(Reason::SubscriptionConverted) => P::SubscriptionConverted,
            Some(Reason::OptionsNotMatched) => P::OptionsNotMatched,
            Some(Reason::NotInStock) => P::NotInStock,
            Some(Reason::BelowDesiredQuantity) => P::BelowDesiredQuantity,
            Some(Reason::RecentlyPurchased) => P::RecentlyPurchased,
            Some(Reason::SubstitutePurchased) => P::SubstitutePurchased,
            Some(Reason::RecentlyNotified) => P::RecentlyNotified,
            Some(Reason::QuietHours) => P::QuietHours,
            Some(Reason::FrequencyCapPhone) => P::FrequencyCapPhone,
            Some(Reason::FrequencyCapTenant) => P::FrequencyCapTenant,
            Some(Reason::Holdout) => P::Holdout,
            Some(Reason::ProductExcluded) => P::ProductExcluded,
            Some(Reason::VariantExcluded) => P::VariantExcluded,
            Some(Reason::NoSenderForCountry) => P::NoSenderForCountry,
        }
    }

    fn rule(r: Rule) -> pb::EligibilityRule {
        use pb::EligibilityRule as P;
        match r {
            Rule::Consent => P::Consent,
            Rule::Subscription => P::Subscription,
            Rule::Stock => P::Stock,
            Rule::PurchaseSuppression => P::PurchaseSuppression,
            Rule::SubstitutePurchase => P::SubstitutePurchase,
            Rule::RenotifyWindow => P::RenotifyWindow,
            Rule::QuietHours => P::QuietHours,
            Rule::FrequencyCap => P::FrequencyCap,
            Rule::Holdout => P::Holdout,
            Rule::MerchandisingExclusion => P::MerchandisingExclusion,
            Rule::Sender => P::Sender,
        }
    }

    pub fn outcome(o: Outcome) -> (pb::EligibilityDecision, Option<prost_types::Timestamp>) {
        match o {
            Outcome::SendNow => (pb::EligibilityDecision::SendNow, None),
            Outcome::Defer(t) => (pb::EligibilityDecision::Defer, Some(timestamp(t))),
            Outcome::Skip => (pb::EligibilityDecision::Skip, None),
        }
    }

    pub fn rule_result(r: &ExplainedRule) -> pb::RuleResult {
        let (verdict, until) = match r.verdict {
            Verdict::Pass => (pb::RuleVerdict::Pass, None),
            Verdict::Defer(t) => (pb::RuleVerdict::Defer, Some(timestamp(t))),
            Verdict::Skip => (pb::RuleVerdict::Skip, None),
            Verdict::NotApplicable => (pb::RuleVerdict::NotApplicable, None),
        };
        pb::RuleResult {
            rule: rule(r.rule) as i32,
            verdict: verdict as i32,
            reason: reason(r.reason) as i32,
            explanation: r.explanation.clone(),
            defer_until_time: until,
        }
    }

    pub fn rules(d: &Explanation) -> Vec<pb::RuleResult> {
        d.rules.iter().map(rule_result).collect()
    }
}
