//! Eligibility: whether one waiting subscription may be texted about one restock now, later or
//! not at all. One pure function serves sending, `Explain` and the dry-run, so what support reads
//! out to a shopper is exactly what the sender did.
//!
//! Every rule is evaluated, even after one has already decided the outcome, so `Explain` can show
//! the whole picture ("opted out, and also bought it last week").

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveTime, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use crate::consent::str_enum;
use crate::quiet_hours::{self, in_window};
use crate::{holdout, ConsentState, SubscriptionStatus, TenantPolicy};

/// The rules, in the order they are evaluated and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    Consent,
    Subscription,
    Stock,
    PurchaseSuppression,
    SubstitutePurchase,
    RenotifyWindow,
    QuietHours,
    FrequencyCap,
    Holdout,
    MerchandisingExclusion,
    Sender,
}

str_enum!(Rule {
    Consent => "consent",
    Subscription => "subscription",
    Stock => "stock",
    PurchaseSuppression => "purchase_suppression",
    SubstitutePurchase => "substitute_purchase",
    RenotifyWindow => "renotify_window",
    QuietHours => "quiet_hours",
    FrequencyCap => "frequency_cap",
    Holdout => "holdout",
    MerchandisingExclusion => "merchandising_exclusion",
    Sender => "sender",
});

impl Rule {
    /// Every rule, in evaluation order: the order of [`Decision::rules`].
    pub const ALL: [Rule; 11] = [
        Rule::Consent,
        Rule::Subscription,
        Rule::Stock,
        Rule::PurchaseSuppression,
        Rule::SubstitutePurchase,
        Rule::RenotifyWindow,
        Rule::QuietHours,
        Rule::FrequencyCap,
        Rule::Holdout,
        Rule::MerchandisingExclusion,
        Rule::Sender,
    ];
}

/// Why a rule did not pass. The stable names (`as_str`) are what the outbox stores for a skipped
/// or deferred message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    ConsentMissing,
    ConsentPendingConfirmation,
    ConsentOptedOut,
    SubscriptionCancelled,
    SubscriptionExpired,
    SubscriptionLapsed,
    SubscriptionConverted,
    OptionsNotMatched,
    NotInStock,
    BelowDesiredQuantity,
    RecentlyPurchased,
    SubstitutePurchased,
    RecentlyNotified,
    QuietHours,
    FrequencyCapPhone,
    FrequencyCapTenant,
    Holdout,
    ProductExcluded,
    VariantExcluded,
    NoSenderForCountry,
}

str_enum!(Reason {
    ConsentMissing => "consent_missing",
    ConsentPendingConfirmation => "consent_pending_confirmation",
    ConsentOptedOut => "consent_opted_out",
    SubscriptionCancelled => "subscription_cancelled",
    SubscriptionExpired => "subscription_expired",
    SubscriptionLapsed => "subscription_lapsed",
    SubscriptionConverted => "subscription_converted",
    OptionsNotMatched => "options_not_matched",
    NotInStock => "not_in_stock",
    BelowDesiredQuantity => "below_desired_quantity",
    RecentlyPurchased => "recently_purchased",
    SubstitutePurchased => "substitute_purchased",
    RecentlyNotified => "recently_notified",
    QuietHours => "quiet_hours",
    FrequencyCapPhone => "frequency_cap_phone",
    FrequencyCapTenant => "frequency_cap_tenant",
    Holdout => "holdout",
    ProductExcluded => "product_excluded",
    VariantExcluded => "variant_excluded",
    NoSenderForCountry => "no_sender_for_country",
});

impl Reason {
    /// The rule that gives this reason.
    pub fn rule(self) -> Rule {
        match self {
            Self::ConsentMissing | Self::ConsentPendingConfirmation | Self::ConsentOptedOut => {
                Rule::Consent
            }
            Self::SubscriptionCancelled
            | Self::SubscriptionExpired
            | Self::SubscriptionLapsed
            | Self::SubscriptionConverted
            | Self::OptionsNotMatched => Rule::Subscription,
            Self::NotInStock | Self::BelowDesiredQuantity => Rule::Stock,
            Self::RecentlyPurchased => Rule::PurchaseSuppression,
            Self::SubstitutePurchased => Rule::SubstitutePurchase,
            Self::RecentlyNotified => Rule::RenotifyWindow,
            Self::QuietHours => Rule::QuietHours,
            Self::FrequencyCapPhone | Self::FrequencyCapTenant => Rule::FrequencyCap,
            Self::Holdout => Rule::Holdout,
            Self::ProductExcluded | Self::VariantExcluded => Rule::MerchandisingExclusion,
            Self::NoSenderForCountry => Rule::Sender,
        }
    }
}

/// One rule's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Not now, but from this moment on.
    Defer(DateTime<Utc>),
    Skip,
    /// The tenant has switched the rule off (e.g. a holdout share of 0).
    NotApplicable,
}

/// One rule's verdict, with the reason when it did not pass and the facts it was decided on. The
/// sentence for support is rendered from the facts only when asked ([`Decision::explain`]), so
/// the sender and the planner build no prose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleResult {
    pub rule: Rule,
    pub verdict: Verdict,
    pub reason: Option<Reason>,
    pub fact: Fact,
}

/// What a rule found, as data (states, times, counts). The names a sentence quotes (locations,
/// options, ids, senders, zones of a country) are read from the inputs when it is rendered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fact {
    /// The phone's consent.
    Consent(ConsentState),
    /// The subscription's status ended it (cancelled, expired, lapsed, converted).
    SubscriptionEnded(SubscriptionStatus),
    /// The subscription ran out at this moment.
    SubscriptionExpiredAt(DateTime<Utc>),
    /// The `index`-th wanted option (in name order) is not the restocked variant's.
    OptionNotOffered {
        index: usize,
    },
    /// The subscription is live until it expires.
    SubscriptionLive {
        status: SubscriptionStatus,
        expires_at: DateTime<Utc>,
    },
    /// Units available at the serving locations, against the brand's threshold and the
    /// quantity the shopper wants.
    Stock {
        available: i64,
        threshold: i64,
        desired: i64,
    },
    /// The brand sets no purchase-suppression window (for the item and its substitutes).
    NoPurchaseWindow,
    NoPurchase,
    /// The last purchase of the item, `ago`, against a window of `hours`.
    Purchased {
        ago: Duration,
        hours: u32,
    },
    NoSubstitutePurchase,
    /// The candidate's purchase of a substitute, `ago`, against a window of `hours`.
    SubstitutePurchased {
        ago: Duration,
        hours: u32,
    },
    NoRenotifyWindow,
    NotNotified,
    /// The last text about the item, `ago`, against a window of `hours`.
    Notified {
        ago: Duration,
        hours: u32,
    },
    /// Every zone that counts is within texting hours.
    TextingHours,
    /// It is quiet hours in `closed`; texting opens at `opens` (`None`: not in the next 8 days).
    QuietHours {
        closed: Tz,
        opens: Option<DateTime<Utc>>,
    },
    CapsFree,
    /// The cap named by the rule's reason is used up until `until`; the other one too, until
    /// `other`.
    CapUsed {
        until: DateTime<Utc>,
        other: Option<DateTime<Utc>>,
    },
    NoHoldout,
    /// The control group's share, and whether this subscription is in it.
    Holdout {
        share: f64,
        held: bool,
    },
    NoExclusions,
    NotExcluded,
    /// The rule's reason says whether the product or the variant.
    Excluded,
    /// Whether the brand has a sender the phone's country allows.
    Sender {
        found: bool,
    },
}

/// What happens to the subscription for this restock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    SendNow,
    Defer(DateTime<Utc>),
    Skip,
}

/// How the rules' results were combined into the outcome: what the summary sentence says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Every rule passes or does not apply.
    AllPass,
    /// This rule skips.
    SkippedBy(Rule),
    /// This rule defers, and no time in the 8 days after is within texting hours.
    NoTextingTime(Rule),
    /// This rule defers, and the earliest time to text is not before the subscription expires.
    PastExpiry(Rule, DateTime<Utc>),
    /// This rule defers until the moment it names.
    Deferred(Rule, DateTime<Utc>),
    /// This rule defers to a moment in quiet hours; the text waits for their end.
    DeferredToOpening(Rule, DateTime<Utc>),
}

/// The decision for one subscription and one restock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    /// The reason of the rule that decided a skip or a defer; `None` when sent now.
    pub reason: Option<Reason>,
    /// One result per rule, in the order of [`Rule::ALL`].
    pub rules: [RuleResult; Rule::ALL.len()],
    /// How the results were combined.
    pub settled: Settled,
}

impl Decision {
    /// The result of one rule.
    pub fn rule(&self, rule: Rule) -> &RuleResult {
        self.rules
            .iter()
            .find(|r| r.rule == rule)
            .expect("a decision has a result for every rule")
    }

    /// The decision in sentences, for support (`Explain`): one per rule and a summary. `policy`,
    /// `ctx` and `c` must be those the decision was taken on; only they name what the facts
    /// refer to.
    pub fn explain(
        &self,
        policy: &TenantPolicy,
        ctx: &RestockContext,
        c: &Candidate,
    ) -> Explanation {
        let p = Prose {
            policy,
            ctx,
            c,
            recipient: Recipient::of(c),
            window: Window::of(policy),
        };
        let rules: Vec<ExplainedRule> = self
            .rules
            .iter()
            .map(|r| ExplainedRule {
                rule: r.rule,
                verdict: r.verdict,
                reason: r.reason,
                explanation: p.rule(r),
            })
            .collect();
        let because = |rule: Rule| {
            let said = &rules
                .iter()
                .find(|r| r.rule == rule)
                .expect("a decision has a result for every rule")
                .explanation;
            lower_first(said.trim_end_matches('.'))
        };
        let summary = match self.settled {
            Settled::AllPass => "Text now: every rule passes.".into(),
            Settled::SkippedBy(rule) => {
                let said = &rules
                    .iter()
                    .find(|r| r.rule == rule)
                    .expect("a decision has a result for every rule")
                    .explanation;
                format!("Not texted: {}", lower_first(said))
            }
            Settled::NoTextingTime(rule) => format!(
                "Not texted: {}, and no time in the 8 days after that is within texting hours \
                 ({}){}.",
                because(rule),
                p.window.text(),
                p.recipient.scope()
            ),
            Settled::PastExpiry(rule, at) => format!(
                "Not texted: {}; the earliest time to text, {}, is not before the subscription \
                 expires ({}).",
                because(rule),
                fmt_utc(at),
                fmt_utc(c.expires_at)
            ),
            Settled::Deferred(rule, at) => {
                format!("Deferred until {}: {}.", fmt_utc(at), because(rule))
            }
            Settled::DeferredToOpening(rule, at) => format!(
                "Deferred until {}: {}; that falls in quiet hours, so the text waits for texting \
                 hours ({}).",
                fmt_utc(at),
                because(rule),
                p.recipient.local_opening(at, &p.window)
            ),
        };
        Explanation {
            outcome: self.outcome,
            reason: self.reason,
            rules,
            summary,
        }
    }
}

/// A decision in sentences, for support: what `Explain` answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub outcome: Outcome,
    pub reason: Option<Reason>,
    /// One result per rule, in the order of [`Rule::ALL`].
    pub rules: Vec<ExplainedRule>,
    /// One sentence on the decision.
    pub summary: String,
}

impl Explanation {
    /// The result of one rule.
    pub fn rule(&self, rule: Rule) -> &ExplainedRule {
        self.rules
            .iter()
            .find(|r| r.rule == rule)
            .expect("an explanation has a result for every rule")
    }
}

/// One rule's verdict and its sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainedRule {
    pub rule: Rule,
    pub verdict: Verdict,
    pub reason: Option<Reason>,
    pub explanation: String,
}

/// What is being restocked, and when the decision is taken.
#[derive(Debug, Clone, Copy)]
pub struct RestockContext<'a> {
    pub restock_id: Uuid,
    pub variant_id: &'a str,
    pub product_id: Option<&'a str>,
    pub variant_options: &'a BTreeMap<String, String>,
    /// Available-to-sell per location (never on-order).
    pub stock: &'a [(String, i64)],
    /// Exclusions made through the API that are in force at `now` (the tenant policy's own
    /// lists are in [`TenantPolicy`]); read fresh by each caller of the engine, so that one
    /// made during a release stops its unsent texts.
    pub exclusions: LiveExclusions,
    pub now: DateTime<Utc>,
}

/// Which API-made exclusions are in force for the restocked variant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveExclusions {
    /// One names the variant's product.
    pub product: bool,
    /// One names the variant itself.
    pub variant: bool,
}

/// One waiting subscription and what is known about its phone.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub subscription_id: Uuid,
    pub status: SubscriptionStatus,
    pub expires_at: DateTime<Utc>,
    pub consent: ConsentState,
    pub desired_quantity: i64,
    /// Locations the subscription can be served from; empty = any location serves.
    pub location_ids: &'a [String],
    /// For product-level subscriptions; empty = any variant of the product.
    pub wanted_options: &'a BTreeMap<String, String>,
    /// The shopper's own zone, when they or their store told us.
    pub time_zone: Option<Tz>,
    /// ISO 3166-1 alpha-2 of the phone number.
    pub phone_region: Option<&'a str>,
    /// Of this variant by this customer or phone.
    pub last_purchase_at: Option<DateTime<Utc>>,
    /// The latest purchase by this customer or phone of a close substitute of the variant (a
    /// member of one of its substitute groups), if any.
    pub substitute_purchase: Option<&'a SubstitutePurchase>,
    /// Last text about this variant to this phone.
    pub last_notified_at: Option<DateTime<Utc>>,
    /// `Some(t)`: the phone's frequency cap is used up until `t`.
    pub phone_cap_free_at: Option<DateTime<Utc>>,
    /// `Some(t)`: the tenant's frequency cap is used up until `t`.
    pub tenant_cap_free_at: Option<DateTime<Utc>>,
}

/// A purchase of a close substitute of the restocked variant: which order, which variant, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubstitutePurchase {
    pub order_id: String,
    pub variant_id: String,
    pub purchased_at: DateTime<Utc>,
}

/// Decides whether `c` may be texted about the restock in `ctx`: now, from a later moment, or not
/// at all. Builds no prose: [`Decision::explain`] renders it for support.
///
/// Any rule's skip wins over every defer, in rule order, except the holdout's: the control group
/// must be drawn only from shoppers who would otherwise be texted, or the lift it measures is
/// biased, so it counts only once every other rule is satisfied. A defer waits for the latest
/// moment any rule names, moved on to texting hours (a cap that frees at 22:00 waits for the
/// morning), and becomes a skip if that moment is not before the subscription expires.
pub fn evaluate(policy: &TenantPolicy, ctx: &RestockContext, c: &Candidate) -> Decision {
    let recipient = Recipient::of(c);
    let window = Window::of(policy);
    let rules = [
        consent(c),
        subscription(ctx, c),
        stock(policy, ctx, c),
        purchase_suppression(policy, ctx, c),
        substitute_purchase(policy, ctx, c),
        renotify_window(policy, ctx, c),
        quiet_hours_rule(&recipient, &window, ctx.now),
        frequency_cap(ctx, c),
        holdout_rule(policy, ctx, c),
        merchandising_exclusion(policy, ctx),
        sender_rule(policy, c),
    ];
    let (outcome, reason, settled) = decide(&rules, &recipient, &window, c);
    Decision {
        outcome,
        reason,
        rules,
        settled,
    }
}

/// [`evaluate`], in sentences: what `Explain` shows.
pub fn explain(policy: &TenantPolicy, ctx: &RestockContext, c: &Candidate) -> Explanation {
    evaluate(policy, ctx, c).explain(policy, ctx, c)
}

fn decide(
    rules: &[RuleResult],
    recipient: &Recipient,
    window: &Window,
    c: &Candidate,
) -> (Outcome, Option<Reason>, Settled) {
    let first_skip = |holdout: bool| {
        rules
            .iter()
            .find(|r| r.verdict == Verdict::Skip && (r.rule == Rule::Holdout) == holdout)
    };
    if let Some(r) = first_skip(false).or_else(|| first_skip(true)) {
        return (Outcome::Skip, r.reason, Settled::SkippedBy(r.rule));
    }

    // The latest defer decides; on a tie the earlier rule names the reason.
    let mut latest: Option<(&RuleResult, DateTime<Utc>)> = None;
    for r in rules {
        if let Verdict::Defer(t) = r.verdict {
            if latest.is_none_or(|(_, best)| t > best) {
                latest = Some((r, t));
            }
        }
    }
    let Some((decider, wanted)) = latest else {
        return (Outcome::SendNow, None, Settled::AllPass);
    };

    let (rule, reason) = (decider.rule, decider.reason);
    match quiet_hours::next_allowed(recipient.zones(), window.start, window.end, wanted) {
        None => (Outcome::Skip, reason, Settled::NoTextingTime(rule)),
        Some(at) if at >= c.expires_at => (Outcome::Skip, reason, Settled::PastExpiry(rule, at)),
        Some(at) if at == wanted => (Outcome::Defer(at), reason, Settled::Deferred(rule, at)),
        Some(at) => (
            Outcome::Defer(at),
            reason,
            Settled::DeferredToOpening(rule, at),
        ),
    }
}

fn result(rule: Rule, verdict: Verdict, reason: Option<Reason>, fact: Fact) -> RuleResult {
    RuleResult {
        rule,
        verdict,
        reason,
        fact,
    }
}

fn pass(rule: Rule, fact: Fact) -> RuleResult {
    result(rule, Verdict::Pass, None, fact)
}

fn skip(rule: Rule, reason: Reason, fact: Fact) -> RuleResult {
    result(rule, Verdict::Skip, Some(reason), fact)
}

fn not_applicable(rule: Rule, fact: Fact) -> RuleResult {
    result(rule, Verdict::NotApplicable, None, fact)
}

fn consent(c: &Candidate) -> RuleResult {
    let (r, fact) = (Rule::Consent, Fact::Consent(c.consent));
    match c.consent {
        ConsentState::OptedIn => pass(r, fact),
        ConsentState::None => skip(r, Reason::ConsentMissing, fact),
        ConsentState::PendingConfirmation => skip(r, Reason::ConsentPendingConfirmation, fact),
        ConsentState::OptedOut => skip(r, Reason::ConsentOptedOut, fact),
    }
}

fn subscription(ctx: &RestockContext, c: &Candidate) -> RuleResult {
    let r = Rule::Subscription;
    let ended = Fact::SubscriptionEnded(c.status);
    match c.status {
        SubscriptionStatus::Cancelled => return skip(r, Reason::SubscriptionCancelled, ended),
        SubscriptionStatus::Expired => return skip(r, Reason::SubscriptionExpired, ended),
        SubscriptionStatus::Lapsed => return skip(r, Reason::SubscriptionLapsed, ended),
        SubscriptionStatus::Converted => return skip(r, Reason::SubscriptionConverted, ended),
        SubscriptionStatus::PendingConfirmation
        | SubscriptionStatus::Active
        | SubscriptionStatus::Notified => {}
    }
    if c.expires_at <= ctx.now {
        return skip(
            r,
            Reason::SubscriptionExpired,
            Fact::SubscriptionExpiredAt(c.expires_at),
        );
    }
    if let Some(index) = c
        .wanted_options
        .iter()
        .position(|(k, v)| !has_option(ctx.variant_options, k, v))
    {
        return skip(
            r,
            Reason::OptionsNotMatched,
            Fact::OptionNotOffered { index },
        );
    }
    pass(
        r,
        Fact::SubscriptionLive {
            status: c.status,
            expires_at: c.expires_at,
        },
    )
}

/// Option names and values compare case-insensitively: storefronts disagree on "Size" vs "size"
/// and "Blue" vs "blue", and a shopper should not miss a restock over it.
/// Whether a variant with `options` is one the shopper who wants `wanted` asked for: every
/// wanted option is among the variant's, names and values compared without surrounding blanks
/// and whatever the case. The one matching of options (the engine's rule, and the choice of a
/// variant for a subscription to a product).
pub fn options_match(
    wanted: &BTreeMap<String, String>,
    options: &BTreeMap<String, String>,
) -> bool {
    wanted.iter().all(|(k, v)| has_option(options, k, v))
}

fn has_option(options: &BTreeMap<String, String>, key: &str, value: &str) -> bool {
    let (key, value) = (key.trim().to_lowercase(), value.trim().to_lowercase());
    options
        .iter()
        .any(|(k, v)| k.trim().to_lowercase() == key && v.trim().to_lowercase() == value)
}

fn describe_options(options: &BTreeMap<String, String>) -> String {
    if options.is_empty() {
        return "without options".into();
    }
    options
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn stock(policy: &TenantPolicy, ctx: &RestockContext, c: &Candidate) -> RuleResult {
    let r = Rule::Stock;
    let available: i64 = ctx
        .stock
        .iter()
        .filter(|(location, _)| c.location_ids.is_empty() || c.location_ids.contains(location))
        .fold(0i64, |sum, (_, units)| sum.saturating_add((*units).max(0)));
    let threshold = policy.restock_threshold.max(1);
    let desired = c.desired_quantity.max(1);
    let fact = Fact::Stock {
        available,
        threshold,
        desired,
    };
    if available < threshold {
        skip(r, Reason::NotInStock, fact)
    } else if available < desired {
        skip(r, Reason::BelowDesiredQuantity, fact)
    } else {
        pass(r, fact)
    }
}

fn purchase_suppression(policy: &TenantPolicy, ctx: &RestockContext, c: &Candidate) -> RuleResult {
    let r = Rule::PurchaseSuppression;
    let hours = policy.purchase_suppression_hours;
    if hours == 0 {
        return not_applicable(r, Fact::NoPurchaseWindow);
    }
    let Some(at) = c.last_purchase_at else {
        return pass(r, Fact::NoPurchase);
    };
    let ago = ctx.now - at;
    let fact = Fact::Purchased { ago, hours };
    if ago < Duration::hours(hours.into()) {
        skip(r, Reason::RecentlyPurchased, fact)
    } else {
        pass(r, fact)
    }
}

/// A shopper who bought a close substitute (the same jacket in the other colour the brand
/// groups with it) does not want to hear the first is back: the same window as a purchase of
/// the item itself.
fn substitute_purchase(policy: &TenantPolicy, ctx: &RestockContext, c: &Candidate) -> RuleResult {
    let r = Rule::SubstitutePurchase;
    let hours = policy.purchase_suppression_hours;
    if hours == 0 {
        return not_applicable(r, Fact::NoPurchaseWindow);
    }
    let Some(p) = c.substitute_purchase else {
        return pass(r, Fact::NoSubstitutePurchase);
    };
    let ago = ctx.now - p.purchased_at;
    let fact = Fact::SubstitutePurchased { ago, hours };
    if ago < Duration::hours(hours.into()) {
        skip(r, Reason::SubstitutePurchased, fact)
    } else {
        pass(r, fact)
    }
}

fn renotify_window(policy: &TenantPolicy, ctx: &RestockContext, c: &Candidate) -> RuleResult {
    let r = Rule::RenotifyWindow;
    let hours = policy.renotify_hours;
    if hours == 0 {
        return not_applicable(r, Fact::NoRenotifyWindow);
    }
    let Some(at) = c.last_notified_at else {
        return pass(r, Fact::NotNotified);
    };
    let ago = ctx.now - at;
    let fact = Fact::Notified { ago, hours };
    if ago < Duration::hours(hours.into()) {
        skip(r, Reason::RecentlyNotified, fact)
    } else {
        pass(r, fact)
    }
}

fn quiet_hours_rule(recipient: &Recipient, window: &Window, now: DateTime<Utc>) -> RuleResult {
    let r = Rule::QuietHours;
    let zones = recipient.zones();
    let closed = zones
        .iter()
        .find(|tz| !in_window(now.with_timezone(*tz).time(), window.start, window.end));
    let Some(&closed) = closed else {
        return pass(r, Fact::TextingHours);
    };
    let opens = quiet_hours::next_allowed(zones, window.start, window.end, now);
    let fact = Fact::QuietHours { closed, opens };
    match opens {
        None => skip(r, Reason::QuietHours, fact),
        Some(at) => result(r, Verdict::Defer(at), Some(Reason::QuietHours), fact),
    }
}

fn frequency_cap(ctx: &RestockContext, c: &Candidate) -> RuleResult {
    let r = Rule::FrequencyCap;
    let phone = c.phone_cap_free_at.filter(|t| *t > ctx.now);
    let tenant = c.tenant_cap_free_at.filter(|t| *t > ctx.now);
    let (reason, until, other) = match (phone, tenant) {
        (None, None) => return pass(r, Fact::CapsFree),
        (Some(p), Some(t)) if t > p => (Reason::FrequencyCapTenant, t, Some(p)),
        (Some(p), t) => (Reason::FrequencyCapPhone, p, t),
        (None, Some(t)) => (Reason::FrequencyCapTenant, t, None),
    };
    let fact = Fact::CapUsed { until, other };
    if until >= c.expires_at {
        skip(r, reason, fact)
    } else {
        result(r, Verdict::Defer(until), Some(reason), fact)
    }
}

fn holdout_rule(policy: &TenantPolicy, ctx: &RestockContext, c: &Candidate) -> RuleResult {
    let r = Rule::Holdout;
    let share = policy.holdout_share;
    if share.is_nan() || share <= 0.0 {
        return not_applicable(r, Fact::NoHoldout);
    }
    let held = holdout::in_holdout(c.subscription_id, ctx.restock_id, share);
    let fact = Fact::Holdout { share, held };
    if held {
        skip(r, Reason::Holdout, fact)
    } else {
        pass(r, fact)
    }
}

/// Whether the brand has a sender the phone's country allows (a US long code cannot text a
/// UK phone): `country_senders` for the country, else `sender_id` where it may text.
fn sender_rule(policy: &TenantPolicy, c: &Candidate) -> RuleResult {
    let r = Rule::Sender;
    let region = region_of(c);
    match policy.sender_for(region.as_deref()) {
        Some(_) => pass(r, Fact::Sender { found: true }),
        None => skip(r, Reason::NoSenderForCountry, Fact::Sender { found: false }),
    }
}

fn merchandising_exclusion(policy: &TenantPolicy, ctx: &RestockContext) -> RuleResult {
    let r = Rule::MerchandisingExclusion;
    if policy.excluded_products.is_empty()
        && policy.excluded_variants.is_empty()
        && ctx.exclusions == LiveExclusions::default()
    {
        return not_applicable(r, Fact::NoExclusions);
    }
    if ctx
        .product_id
        .is_some_and(|p| ctx.exclusions.product || policy.excluded_products.iter().any(|e| e == p))
    {
        return skip(r, Reason::ProductExcluded, Fact::Excluded);
    }
    if ctx.exclusions.variant || policy.excluded_variants.iter().any(|e| e == ctx.variant_id) {
        return skip(r, Reason::VariantExcluded, Fact::Excluded);
    }
    pass(r, Fact::NotExcluded)
}

/// The phone's country, trimmed and in capitals; borrowed when it already is (as stored).
fn region_of<'a>(c: &Candidate<'a>) -> Option<Cow<'a, str>> {
    let region = c.phone_region?.trim();
    Some(if region.bytes().any(|b| b.is_ascii_lowercase()) {
        Cow::Owned(region.to_ascii_uppercase())
    } else {
        Cow::Borrowed(region)
    })
}

/// The sentences: each rule's facts, with the names they refer to read from the inputs.
struct Prose<'p, 'a> {
    policy: &'p TenantPolicy,
    ctx: &'p RestockContext<'a>,
    c: &'p Candidate<'a>,
    recipient: Recipient<'a>,
    window: Window,
}

impl Prose<'_, '_> {
    fn rule(&self, r: &RuleResult) -> String {
        let (policy, ctx, c) = (self.policy, self.ctx, self.c);
        let skipped = r.verdict == Verdict::Skip;
        match r.fact {
            Fact::Consent(ConsentState::OptedIn) => "The phone has opted in to texts.".into(),
            Fact::Consent(ConsentState::None) => {
                "There is no opt-in on record for this phone.".into()
            }
            Fact::Consent(ConsentState::PendingConfirmation) => {
                "The phone's opt-in awaits confirmation (double opt-in); it is not texted until \
                 the shopper confirms."
                    .into()
            }
            Fact::Consent(ConsentState::OptedOut) => "The phone has opted out of texts.".into(),
            Fact::SubscriptionEnded(status) => match status {
                SubscriptionStatus::Cancelled => "The subscription was cancelled.",
                SubscriptionStatus::Lapsed => {
                    "The subscription lapsed: the shopper never confirmed it."
                }
                SubscriptionStatus::Converted => {
                    "The subscription already led to a purchase (converted)."
                }
                _ => "The subscription has expired.",
            }
            .into(),
            Fact::SubscriptionExpiredAt(at) => {
                format!("The subscription expired at {}.", fmt_utc(at))
            }
            Fact::OptionNotOffered { index } => {
                let (k, v) = c
                    .wanted_options
                    .iter()
                    .nth(index)
                    .map_or(("", ""), |(k, v)| (k.as_str(), v.as_str()));
                format!(
                    "The shopper wants {k} {v}, and the restocked variant is {}.",
                    describe_options(ctx.variant_options)
                )
            }
            Fact::SubscriptionLive { status, expires_at } => {
                let live = match status {
                    SubscriptionStatus::Notified => {
                        "The subscription was texted before and stays live (the re-notify \
                         window decides about another text)"
                    }
                    SubscriptionStatus::PendingConfirmation => {
                        "The subscription awaits confirmation (the consent rule decides)"
                    }
                    _ => "The subscription is active",
                };
                format!("{live}; it expires at {}.", fmt_utc(expires_at))
            }
            Fact::Stock {
                available,
                threshold,
                desired,
            } => {
                let place = match c.location_ids {
                    [] => "across all locations".to_string(),
                    [one] => format!("at location {one}, which serves this subscription"),
                    many => format!(
                        "at the {} locations that serve this subscription",
                        many.len()
                    ),
                };
                let have = format!("{} {place}", units_available(available));
                match r.reason {
                    Some(Reason::NotInStock) if available != 0 => {
                        format!("{have}; the brand's restock threshold is {threshold}.")
                    }
                    Some(Reason::BelowDesiredQuantity) => {
                        format!("{have}; the shopper wants {desired}.")
                    }
                    _ => format!("{have}."),
                }
            }
            Fact::NoPurchaseWindow => "The brand sets no purchase-suppression window.".into(),
            Fact::NoPurchase => "No purchase of this item by this shopper is on record.".into(),
            Fact::Purchased { ago, hours } if skipped => format!(
                "The shopper bought this item {}; no restock text for {} after a purchase.",
                fmt_ago(ago),
                fmt_hours(hours)
            ),
            Fact::Purchased { ago, hours } => format!(
                "The shopper last bought this item {}, longer ago than the {} after a purchase \
                 without restock texts.",
                fmt_ago(ago),
                fmt_hours(hours)
            ),
            Fact::NoSubstitutePurchase => {
                "No purchase of a substitute of this item by this shopper is on record.".into()
            }
            Fact::SubstitutePurchased { ago, hours } => {
                let what = match c.substitute_purchase {
                    Some(p) => format!(
                        "variant {} (order {}, {})",
                        p.variant_id,
                        p.order_id,
                        fmt_utc(p.purchased_at)
                    ),
                    None => "a substitute".into(),
                };
                if skipped {
                    format!(
                        "The shopper bought a substitute of this item {}: {what}; no restock \
                         text for {} after a purchase of a substitute.",
                        fmt_ago(ago),
                        fmt_hours(hours)
                    )
                } else {
                    format!(
                        "The shopper last bought a substitute of this item {}, {what}, longer \
                         ago than the {} after a purchase without restock texts.",
                        fmt_ago(ago),
                        fmt_hours(hours)
                    )
                }
            }
            Fact::NoRenotifyWindow => "The brand sets no re-notify window.".into(),
            Fact::NotNotified => {
                "No earlier text about this item to this phone is on record.".into()
            }
            Fact::Notified { ago, hours } if skipped => format!(
                "This phone was texted about this item {}; no second text about it within {}.",
                fmt_ago(ago),
                fmt_hours(hours)
            ),
            Fact::Notified { ago, hours } => format!(
                "This phone was last texted about this item {}, outside the {} re-notify window.",
                fmt_ago(ago),
                fmt_hours(hours)
            ),
            Fact::TextingHours => self.texting_hours(),
            Fact::QuietHours { closed, opens } => self.quiet_hours(closed, opens),
            Fact::CapsFree => {
                "Neither this phone's nor the brand's frequency cap is used up.".into()
            }
            Fact::CapUsed { until, other } => {
                let whose = |reason| match reason {
                    Some(Reason::FrequencyCapPhone) => "this phone's",
                    _ => "the brand's",
                };
                let mut text = format!(
                    "{} frequency cap is used up until {}",
                    upper_first(whose(r.reason)),
                    fmt_utc(until)
                );
                if let Some(other) = other {
                    let other_reason = match r.reason {
                        Some(Reason::FrequencyCapPhone) => Reason::FrequencyCapTenant,
                        _ => Reason::FrequencyCapPhone,
                    };
                    text.push_str(&format!(
                        " ({} until {})",
                        whose(Some(other_reason)),
                        fmt_utc(other)
                    ));
                }
                if skipped {
                    format!(
                        "{text}, which is not before the subscription expires ({}).",
                        fmt_utc(c.expires_at)
                    )
                } else {
                    format!("{text}; the text waits until then.")
                }
            }
            Fact::NoHoldout => "The brand holds out no control group.".into(),
            Fact::Holdout { share, held } => {
                let percent = (share * 1000.0).round() / 10.0;
                if held {
                    format!(
                        "This subscription is in the {percent}% control group for this restock: \
                         it is recorded but not texted, so the brand can measure what restock \
                         texts add."
                    )
                } else {
                    format!(
                        "This subscription is not in the {percent}% control group for this \
                         restock."
                    )
                }
            }
            Fact::NoExclusions => "Merchandising excludes no products or variants.".into(),
            Fact::NotExcluded => {
                "Merchandising excludes neither this product nor this variant.".into()
            }
            Fact::Excluded => match r.reason {
                Some(Reason::ProductExcluded) => format!(
                    "Merchandising excludes product {} from restock texts.",
                    ctx.product_id.unwrap_or_default()
                ),
                _ => format!(
                    "Merchandising excludes variant {} from restock texts.",
                    ctx.variant_id
                ),
            },
            Fact::Sender { found } => {
                let region = region_of(c);
                match policy.sender_for(region.as_deref()).filter(|_| found) {
                    Some(sender) => format!(
                        "The text goes from {}, which may text {}.",
                        sender,
                        region.as_deref().unwrap_or("the phone")
                    ),
                    None => format!(
                        "The brand has no sender that may text {}: its sender {} cannot, and \
                         country_senders names none for it.",
                        region.as_deref().unwrap_or("this phone's country"),
                        policy.sender_id.trim()
                    ),
                }
            }
        }
    }

    fn texting_hours(&self) -> String {
        let (recipient, window, now) = (&self.recipient, &self.window, self.ctx.now);
        let zones = recipient.zones();
        let body = if zones.len() > 1 {
            format!(
                "it is within texting hours ({}){}",
                window.text(),
                recipient.scope()
            )
        } else {
            format!(
                "it is {} in {}, within texting hours ({})",
                now.with_timezone(&zones[0]).format("%H:%M"),
                zones[0].name(),
                window.text()
            )
        };
        recipient.sentence(&body)
    }

    fn quiet_hours(&self, closed: Tz, opens: Option<DateTime<Utc>>) -> String {
        let (recipient, window, now) = (&self.recipient, &self.window, self.ctx.now);
        let zones = recipient.zones();
        let clock = format!(
            "it is {} in {}",
            now.with_timezone(&closed).format("%H:%M"),
            closed.name()
        );
        let body = match opens {
            None => format!(
                "{clock}, and no time in the next 8 days is within texting hours ({}){}",
                window.text(),
                recipient.scope()
            ),
            Some(at) if zones.len() == 1 => {
                let local = at.with_timezone(&zones[0]);
                format!(
                    "{clock}; texts wait until {} local ({})",
                    local.format("%H:%M"),
                    local.format("%Y-%m-%d %H:%M %Z")
                )
            }
            Some(at) => format!(
                "{clock}, and texts go out only within texting hours ({}){}; they wait until {} \
                 ({})",
                window.text(),
                recipient.scope(),
                fmt_utc(at),
                recipient.local_opening(at, window)
            ),
        };
        recipient.sentence(&body)
    }
}

fn units_available(n: i64) -> String {
    match n {
        0 => "No units are available".into(),
        1 => "1 unit is available".into(),
        n => format!("{n} units are available"),
    }
}

/// The zones whose local time counts for the shopper, and how sure we are of them. Built on
/// every evaluation, so it borrows rather than allocates.
struct Recipient<'a> {
    zones: Zones,
    /// The country whose zones all count, when the phone's country is all we know.
    region: Option<Cow<'a, str>>,
    /// Said first when the zone is a fallback, so support knows the local time is a guess.
    caveat: Option<Caveat>,
}

enum Zones {
    One(Tz),
    Country(&'static [Tz]),
}

/// Why UTC stands in for the shopper's zone.
enum Caveat {
    UnknownZone,
    /// The phone's country is one of no known zone.
    UnknownRegion,
}

impl<'a> Recipient<'a> {
    fn of(c: &Candidate<'a>) -> Self {
        if let Some(tz) = c.time_zone {
            return Self {
                zones: Zones::One(tz),
                region: None,
                caveat: None,
            };
        }
        let Some(region) = region_of(c) else {
            return Self::utc(None, Caveat::UnknownZone);
        };
        match quiet_hours::region_zones(&region) {
            [] => Self::utc(Some(region), Caveat::UnknownRegion),
            zones => Self {
                zones: Zones::Country(zones),
                region: Some(region),
                caveat: None,
            },
        }
    }

    fn utc(region: Option<Cow<'a, str>>, caveat: Caveat) -> Self {
        Self {
            zones: Zones::One(Tz::UTC),
            region,
            caveat: Some(caveat),
        }
    }

    fn zones(&self) -> &[Tz] {
        match &self.zones {
            Zones::One(tz) => std::slice::from_ref(tz),
            Zones::Country(zones) => zones,
        }
    }

    /// ` in all 29 time zones of US` for a country spanning zones, else nothing.
    fn scope(&self) -> String {
        match &self.region {
            Some(region) if self.zones().len() > 1 => {
                format!(" in all {} time zones of {region}", self.zones().len())
            }
            _ => String::new(),
        }
    }

    /// Where the window has just opened at `at`, e.g. `08:00 HST in Pacific/Honolulu`: the zone
    /// that held the text back last.
    fn local_opening(&self, at: DateTime<Utc>, window: &Window) -> String {
        let since_opening = |tz: &Tz| {
            (at.with_timezone(tz).time() - window.start)
                .num_minutes()
                .rem_euclid(24 * 60)
        };
        let tz = self
            .zones()
            .iter()
            .min_by_key(|tz| since_opening(tz))
            .unwrap_or(&Tz::UTC);
        format!(
            "{} in {}",
            at.with_timezone(tz).format("%Y-%m-%d %H:%M %Z"),
            tz.name()
        )
    }

    /// Capitalised, with the caveat first, ending in a full stop.
    fn sentence(&self, body: &str) -> String {
        let caveat = match (&self.caveat, &self.region) {
            (None, _) => return format!("{}.", upper_first(body)),
            (Some(Caveat::UnknownRegion), Some(region)) => {
                format!("no time zone is known for region {region}, so UTC is used")
            }
            _ => "the shopper's time zone is unknown, so UTC is used".to_string(),
        };
        format!("{}: {body}.", upper_first(&caveat))
    }
}

/// The texting window of the brand (parsed once, when the configuration was read).
#[derive(Clone, Copy)]
struct Window {
    start: NaiveTime,
    end: NaiveTime,
}

impl Window {
    fn of(policy: &TenantPolicy) -> Self {
        let (start, end) = policy.quiet_window();
        Self { start, end }
    }

    fn text(&self) -> String {
        format!(
            "{} to {}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

fn fmt_utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `2 days ago`, `5 hours ago`, `just now`.
fn fmt_ago(ago: Duration) -> String {
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit} ago")
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match ago {
        d if d < Duration::minutes(1) => "just now".into(),
        d if d < Duration::hours(1) => plural(d.num_minutes(), "minute"),
        d if d < Duration::hours(48) => plural(d.num_hours(), "hour"),
        d => plural(d.num_days(), "day"),
    }
}

/// `30 days`, `1 day`, `36 hours`.
fn fmt_hours(hours: u32) -> String {
    match hours {
        1 => "1 hour".into(),
        24 => "1 day".into(),
        h if h % 24 == 0 => format!("{} days", h / 24),
        h => format!("{h} hours"),
    }
}

fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Europe};
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// The engine's decision in sentences, checked to be the very decision [`evaluate`] takes
    /// (the sender's and planner's call, which renders nothing).
    fn judge(policy: &TenantPolicy, ctx: &RestockContext, c: &Candidate) -> Explanation {
        let d = evaluate(policy, ctx, c);
        let e = d.explain(policy, ctx, c);
        assert_eq!((e.outcome, e.reason), (d.outcome, d.reason));
        let shown: Vec<_> = e
            .rules
            .iter()
            .map(|r| (r.rule, r.verdict, r.reason))
            .collect();
        let taken: Vec<_> = d
            .rules
            .iter()
            .map(|r| (r.rule, r.verdict, r.reason))
            .collect();
        assert_eq!(shown, taken);
        e
    }

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Everything one decision reads, owned, with a shopper who passes every rule by default.
    struct World {
        policy: TenantPolicy,
        variant_options: BTreeMap<String, String>,
        stock: Vec<(String, i64)>,
        location_ids: Vec<String>,
        wanted_options: BTreeMap<String, String>,
        exclusions: LiveExclusions,
        now: DateTime<Utc>,
    }

    impl World {
        fn new() -> Self {
            Self {
                policy: TenantPolicy::default(),
                variant_options: options(&[("Size", "M"), ("Colour", "Blue")]),
                stock: vec![("store-1".into(), 5), ("store-2".into(), 0)],
                location_ids: Vec::new(),
                wanted_options: BTreeMap::new(),
                exclusions: LiveExclusions::default(),
                // Noon in New York.
                now: utc("2026-07-01T16:00:00Z"),
            }
        }

        fn ctx(&self) -> RestockContext<'_> {
            RestockContext {
                restock_id: Uuid::from_u128(42),
                variant_id: "v-1",
                product_id: Some("p-1"),
                variant_options: &self.variant_options,
                stock: &self.stock,
                exclusions: self.exclusions,
                now: self.now,
            }
        }

        fn candidate(&self) -> Candidate<'_> {
            Candidate {
                subscription_id: Uuid::from_u128(7),
                status: SubscriptionStatus::Active,
                expires_at: self.now + Duration::days(30),
                consent: ConsentState::OptedIn,
                desired_quantity: 1,
                location_ids: &self.location_ids,
                wanted_options: &self.wanted_options,
                time_zone: Some(America::New_York),
                phone_region: Some("US"),
                last_purchase_at: None,
                substitute_purchase: None,
                last_notified_at: None,
                phone_cap_free_at: None,
                tenant_cap_free_at: None,
            }
        }

        fn decide(&self, change: impl FnOnce(&mut Candidate)) -> Explanation {
            let mut c = self.candidate();
            change(&mut c);
            judge(&self.policy, &self.ctx(), &c)
        }
    }

    fn assert_skip(d: &Explanation, reason: Reason) {
        assert_eq!(d.outcome, Outcome::Skip, "{d:#?}");
        assert_eq!(d.reason, Some(reason), "{d:#?}");
        let r = d.rule(reason.rule());
        assert_eq!(r.reason, Some(reason));
        assert!(matches!(r.verdict, Verdict::Skip), "{r:?}");
    }

    #[test]
    fn a_shopper_who_passes_every_rule_is_texted_now() {
        let d = World::new().decide(|_| {});
        assert_eq!(d.outcome, Outcome::SendNow, "{d:#?}");
        assert_eq!(d.reason, None);
        assert_eq!(d.summary, "Text now: every rule passes.");
        let rules: Vec<Rule> = d.rules.iter().map(|r| r.rule).collect();
        assert_eq!(rules, Rule::ALL);
        assert_eq!(
            d.rule(Rule::QuietHours).explanation,
            "It is 12:00 in America/New_York, within texting hours (08:00 to 21:00)."
        );
        assert_eq!(d.rule(Rule::Holdout).verdict, Verdict::NotApplicable);
    }

    #[test]
    fn evaluating_builds_no_prose_explaining_renders_it_from_the_decision() {
        /// Only a type that owns no heap data (no `String`, no `Vec`) can be `Copy`: the
        /// decision the sender and the planner take carries facts, never sentences.
        fn holds_no_prose<T: Copy>(_: &T) {}
        let mut w = World::new();
        w.policy.holdout_share = 0.5;
        let c = w.candidate();
        let d = evaluate(&w.policy, &w.ctx(), &c);
        holds_no_prose(&d);
        holds_no_prose(&d.rules[0].fact);
        assert_eq!(d.rule(Rule::QuietHours).fact, Fact::TextingHours, "{d:#?}");
        assert!(matches!(d.rule(Rule::Holdout).fact, Fact::Holdout { share, .. } if share == 0.5));
        // The sentences come from the decision alone (and the inputs naming what it refers to).
        let e = d.explain(&w.policy, &w.ctx(), &c);
        assert_eq!(e, explain(&w.policy, &w.ctx(), &c));
        assert_eq!(
            e.rule(Rule::QuietHours).explanation,
            "It is 12:00 in America/New_York, within texting hours (08:00 to 21:00)."
        );
        assert_eq!(
            e.summary,
            "Not texted: this subscription is in the 50% control group for this restock: it is \
             recorded but not texted, so the brand can measure what restock texts add."
        );
    }

    #[test]
    fn consent_must_be_given_and_confirmed() {
        let w = World::new();
        for (state, reason) in [
            (ConsentState::None, Reason::ConsentMissing),
            (
                ConsentState::PendingConfirmation,
                Reason::ConsentPendingConfirmation,
            ),
            (ConsentState::OptedOut, Reason::ConsentOptedOut),
        ] {
            assert_skip(&w.decide(|c| c.consent = state), reason);
        }
        let d = w.decide(|c| c.consent = ConsentState::OptedOut);
        assert_eq!(d.summary, "Not texted: the phone has opted out of texts.");
    }

    #[test]
    fn only_live_unexpired_subscriptions_are_texted() {
        let w = World::new();
        for (status, reason) in [
            (SubscriptionStatus::Cancelled, Reason::SubscriptionCancelled),
            (SubscriptionStatus::Expired, Reason::SubscriptionExpired),
            (SubscriptionStatus::Converted, Reason::SubscriptionConverted),
        ] {
            assert_skip(&w.decide(|c| c.status = status), reason);
        }
        assert_skip(
            &w.decide(|c| c.expires_at = w.now),
            Reason::SubscriptionExpired,
        );
        for status in [
            SubscriptionStatus::Notified,
            SubscriptionStatus::PendingConfirmation,
        ] {
            let d = w.decide(|c| c.status = status);
            assert_eq!(d.rule(Rule::Subscription).verdict, Verdict::Pass);
        }
    }

    #[test]
    fn options_match_trims_and_ignores_case_in_names_and_values() {
        let variant = options(&[("Size", " M "), ("colour", "Blue")]);
        assert!(options_match(&options(&[("size", "m")]), &variant));
        assert!(options_match(
            &options(&[(" SIZE ", "m"), ("Colour", "blue ")]),
            &variant
        ));
        assert!(options_match(&BTreeMap::new(), &variant));
        assert!(!options_match(&options(&[("size", "l")]), &variant));
        assert!(!options_match(&options(&[("fit", "slim")]), &variant));
    }

    #[test]
    fn wanted_options_match_whatever_the_case() {
        let mut w = World::new();
        w.wanted_options = options(&[("size", "m"), ("COLOUR", "blue")]);
        assert_eq!(w.decide(|_| {}).outcome, Outcome::SendNow);
        w.wanted_options = options(&[("size", "L")]);
        let d = w.decide(|_| {});
        assert_skip(&d, Reason::OptionsNotMatched);
        assert_eq!(
            d.rule(Rule::Subscription).explanation,
            "The shopper wants size L, and the restocked variant is Colour Blue, Size M."
        );
    }

    #[test]
    fn stock_counts_only_serving_locations_and_never_below_zero() {
        let mut w = World::new();
        w.stock = vec![("a".into(), 3), ("b".into(), -4), ("c".into(), 2)];
        w.location_ids = vec!["b".into()];
        let d = w.decide(|_| {});
        assert_skip(&d, Reason::NotInStock);
        assert_eq!(
            d.rule(Rule::Stock).explanation,
            "No units are available at location b, which serves this subscription."
        );
        w.location_ids = vec!["a".into(), "b".into()];
        assert_eq!(w.decide(|_| {}).outcome, Outcome::SendNow);
        w.location_ids.clear();
        let d = w.decide(|c| c.desired_quantity = 6);
        assert_skip(&d, Reason::BelowDesiredQuantity);
        assert_eq!(
            d.rule(Rule::Stock).explanation,
            "5 units are available across all locations; the shopper wants 6."
        );
        assert_eq!(
            w.decide(|c| c.desired_quantity = 5).outcome,
            Outcome::SendNow
        );
    }

    #[test]
    fn stock_below_the_brand_threshold_is_not_a_restock() {
        let mut w = World::new();
        w.policy.restock_threshold = 10;
        w.policy.rearm_level = 2;
        let d = w.decide(|_| {});
        assert_skip(&d, Reason::NotInStock);
        assert_eq!(
            d.rule(Rule::Stock).explanation,
            "5 units are available across all locations; the brand's restock threshold is 10."
        );
    }

    #[test]
    fn a_buyer_of_a_substitute_is_not_told_the_other_is_back_and_explain_names_the_order() {
        let w = World::new();
        // The candidate borrows the purchase, so it is built here rather than in `decide`.
        let with = |w: &World, p: &SubstitutePurchase| {
            let mut c = w.candidate();
            c.substitute_purchase = Some(p);
            judge(&w.policy, &w.ctx(), &c)
        };
        let bought = SubstitutePurchase {
            order_id: "o-77".into(),
            variant_id: "v-2".into(),
            purchased_at: w.now - Duration::days(2),
        };
        let d = with(&w, &bought);
        assert_skip(&d, Reason::SubstitutePurchased);
        assert_eq!(
            d.rule(Rule::SubstitutePurchase).explanation,
            "The shopper bought a substitute of this item 2 days ago: variant v-2 (order o-77, \
             2026-06-29 16:00 UTC); no restock text for 30 days after a purchase of a substitute."
        );
        // The item's own purchase rule is untouched by it, and vice versa.
        assert_eq!(d.rule(Rule::PurchaseSuppression).verdict, Verdict::Pass);
        let d = w.decide(|c| c.last_purchase_at = Some(w.now - Duration::days(1)));
        assert_eq!(d.rule(Rule::SubstitutePurchase).verdict, Verdict::Pass);

        // Outside the window it passes, saying which purchase it weighed.
        let old = SubstitutePurchase {
            purchased_at: w.now - Duration::days(31),
            ..bought.clone()
        };
        let d = with(&w, &old);
        assert_eq!(d.outcome, Outcome::SendNow);
        assert!(d
            .rule(Rule::SubstitutePurchase)
            .explanation
            .contains("order o-77"));

        // No window, no rule.
        let mut w = World::new();
        w.policy.purchase_suppression_hours = 0;
        let d = with(&w, &bought);
        assert_eq!(
            d.rule(Rule::SubstitutePurchase).verdict,
            Verdict::NotApplicable
        );
        assert_eq!(d.outcome, Outcome::SendNow);
    }

    #[test]
    fn a_recent_buyer_is_not_told_it_is_back() {
        let w = World::new();
        let d = w.decide(|c| c.last_purchase_at = Some(w.now - Duration::days(2)));
        assert_skip(&d, Reason::RecentlyPurchased);
        assert_eq!(
            d.rule(Rule::PurchaseSuppression).explanation,
            "The shopper bought this item 2 days ago; no restock text for 30 days after a purchase."
        );
        let d = w.decide(|c| c.last_purchase_at = Some(w.now - Duration::days(30)));
        assert_eq!(d.outcome, Outcome::SendNow);
        let mut w = World::new();
        w.policy.purchase_suppression_hours = 0;
        let d = w.decide(|c| c.last_purchase_at = Some(w.now));
        assert_eq!(
            d.rule(Rule::PurchaseSuppression).verdict,
            Verdict::NotApplicable
        );
        assert_eq!(d.outcome, Outcome::SendNow);
    }

    #[test]
    fn a_phone_texted_recently_is_not_texted_again() {
        let w = World::new();
        let d = w.decide(|c| c.last_notified_at = Some(w.now - Duration::hours(5)));
        assert_skip(&d, Reason::RecentlyNotified);
        assert_eq!(
            d.rule(Rule::RenotifyWindow).explanation,
            "This phone was texted about this item 5 hours ago; no second text about it within 3 days."
        );
        let d = w.decide(|c| c.last_notified_at = Some(w.now - Duration::hours(72)));
        assert_eq!(d.outcome, Outcome::SendNow);
    }

    #[test]
    fn a_late_evening_restock_waits_for_the_morning() {
        let mut w = World::new();
        w.now = utc("2026-11-28T05:10:00Z");
        let d = w.decide(|c| c.time_zone = Some(America::Chicago));
        let morning = utc("2026-11-28T14:00:00Z");
        assert_eq!(d.outcome, Outcome::Defer(morning));
        assert_eq!(d.reason, Some(Reason::QuietHours));
        let q = d.rule(Rule::QuietHours);
        assert_eq!(q.verdict, Verdict::Defer(morning));
        assert_eq!(
            q.explanation,
            "It is 23:10 in America/Chicago; texts wait until 08:00 local (2026-11-28 08:00 CST)."
        );
        assert_eq!(
            d.summary,
            "Deferred until 2026-11-28 14:00 UTC: it is 23:10 in America/Chicago; texts wait \
             until 08:00 local (2026-11-28 08:00 CST)."
        );
    }

    #[test]
    fn without_a_zone_every_zone_of_the_phones_country_must_be_awake() {
        let mut w = World::new();
        // 09:00 in New York, 03:00 in Honolulu.
        w.now = utc("2026-07-01T13:00:00Z");
        let d = w.decide(|c| c.time_zone = None);
        // 08:00 HST.
        assert_eq!(d.outcome, Outcome::Defer(utc("2026-07-01T18:00:00Z")));
        let q = &d.rule(Rule::QuietHours).explanation;
        assert!(q.contains("time zones of US"), "{q}");
        assert!(
            q.ends_with("(2026-07-01 08:00 HST in Pacific/Honolulu)."),
            "{q}"
        );
        w.policy
            .country_senders
            .insert("GB".into(), "+447700900123".into());
        let d = w.decide(|c| {
            c.time_zone = None;
            c.phone_region = Some("gb");
        });
        assert_eq!(d.outcome, Outcome::SendNow, "14:00 in London");
    }

    #[test]
    fn a_phone_is_texted_only_from_a_sender_its_country_allows() {
        let mut w = World::new();
        // The default sender is a US long code: it texts the North American plan only.
        let d = w.decide(|c| c.phone_region = Some("CA"));
        assert_eq!(d.rule(Rule::Sender).verdict, Verdict::Pass);
        let d = w.decide(|c| c.phone_region = Some("GB"));
        assert_eq!(d.outcome, Outcome::Skip);
        assert_eq!(d.reason, Some(Reason::NoSenderForCountry));
        let why = &d.rule(Rule::Sender).explanation;
        assert!(why.contains("GB") && why.contains("+15005550006"), "{why}");
        // A sender for the country, or a messaging service, may.
        w.policy
            .country_senders
            .insert("GB".into(), "+447700900123".into());
        assert_eq!(w.policy.sender_for(Some("gb")), Some("+447700900123"));
        assert_eq!(w.decide(|c| c.phone_region = Some("GB")).reason, None);
        w.policy.country_senders.clear();
        w.policy.sender_id = "MG0123456789abcdef0123456789abcdef".into();
        assert_eq!(w.decide(|c| c.phone_region = Some("GB")).reason, None);
        // A short code texts only where the brand names it.
        w.policy.sender_id = "52345".into();
        assert_eq!(
            w.decide(|c| c.phone_region = Some("US")).reason,
            Some(Reason::NoSenderForCountry)
        );
        w.policy.country_senders.insert("US".into(), "52345".into());
        assert_eq!(w.decide(|c| c.phone_region = Some("US")).reason, None);
        // The holdout is drawn only from phones that could be texted.
        w.policy.holdout_share = 1.0;
        assert_eq!(
            w.decide(|c| c.phone_region = Some("GB")).reason,
            Some(Reason::NoSenderForCountry)
        );
    }

    #[test]
    fn an_unknown_zone_falls_back_to_utc_and_says_so() {
        let mut w = World::new();
        w.now = utc("2026-07-01T23:10:00Z");
        let d = w.decide(|c| {
            c.time_zone = None;
            c.phone_region = None;
        });
        assert_eq!(d.outcome, Outcome::Defer(utc("2026-07-02T08:00:00Z")));
        assert_eq!(
            d.rule(Rule::QuietHours).explanation,
            "The shopper's time zone is unknown, so UTC is used: it is 23:10 in UTC; texts wait \
             until 08:00 local (2026-07-02 08:00 UTC)."
        );
        let d = w.decide(|c| {
            c.time_zone = None;
            c.phone_region = Some("ZZ");
        });
        assert!(d
            .rule(Rule::QuietHours)
            .explanation
            .starts_with("No time zone is known for region ZZ, so UTC is used"));
    }

    #[test]
    fn quiet_hours_that_outlast_the_subscription_skip_it() {
        let mut w = World::new();
        w.now = utc("2026-11-28T05:10:00Z");
        let d = w.decide(|c| {
            c.time_zone = Some(America::Chicago);
            c.expires_at = utc("2026-11-28T10:00:00Z");
        });
        assert_skip_outcome(&d, Reason::QuietHours);
    }

    fn assert_skip_outcome(d: &Explanation, reason: Reason) {
        assert_eq!(d.outcome, Outcome::Skip, "{d:#?}");
        assert_eq!(d.reason, Some(reason), "{d:#?}");
    }

    #[test]
    fn a_used_up_cap_defers_until_it_refills() {
        let w = World::new();
        let phone_free = w.now + Duration::hours(1);
        let d = w.decide(|c| c.phone_cap_free_at = Some(phone_free));
        assert_eq!(d.outcome, Outcome::Defer(phone_free));
        assert_eq!(d.reason, Some(Reason::FrequencyCapPhone));
        assert_eq!(
            d.rule(Rule::FrequencyCap).explanation,
            "This phone's frequency cap is used up until 2026-07-01 17:00 UTC; the text waits \
             until then."
        );

        let tenant_free = w.now + Duration::hours(2);
        let d = w.decide(|c| {
            c.phone_cap_free_at = Some(phone_free);
            c.tenant_cap_free_at = Some(tenant_free);
        });
        assert_eq!(d.outcome, Outcome::Defer(tenant_free));
        assert_eq!(d.reason, Some(Reason::FrequencyCapTenant));

        let d = w.decide(|c| c.phone_cap_free_at = Some(w.now - Duration::minutes(1)));
        assert_eq!(
            d.outcome,
            Outcome::SendNow,
            "a cap that has refilled is no cap"
        );
    }

    #[test]
    fn a_cap_that_refills_after_expiry_skips() {
        let w = World::new();
        let d = w.decide(|c| {
            c.expires_at = w.now + Duration::hours(3);
            c.tenant_cap_free_at = Some(w.now + Duration::hours(3));
        });
        assert_skip(&d, Reason::FrequencyCapTenant);
    }

    #[test]
    fn a_cap_that_refills_at_night_waits_for_the_morning() {
        let w = World::new();
        // 22:00 in New York.
        let free = utc("2026-07-02T02:00:00Z");
        let d = w.decide(|c| c.phone_cap_free_at = Some(free));
        let morning = utc("2026-07-02T12:00:00Z");
        assert_eq!(d.outcome, Outcome::Defer(morning));
        assert_eq!(d.reason, Some(Reason::FrequencyCapPhone));
        assert_eq!(d.rule(Rule::QuietHours).verdict, Verdict::Pass);
        assert!(
            d.summary
                .ends_with("(2026-07-02 08:00 EDT in America/New_York)."),
            "{}",
            d.summary
        );
        // ...unless the subscription is over by then.
        let d = w.decide(|c| {
            c.phone_cap_free_at = Some(free);
            c.expires_at = utc("2026-07-02T06:00:00Z");
        });
        assert_skip_outcome(&d, Reason::FrequencyCapPhone);
    }

    /// A subscription id that falls in the restock's control group at the given share, or not.
    fn subscription_id(w: &World, share: f64, held: bool) -> Uuid {
        (0u128..)
            .map(Uuid::from_u128)
            .find(|s| holdout::in_holdout(*s, w.ctx().restock_id, share) == held)
            .unwrap()
    }

    #[test]
    fn the_control_group_is_recorded_but_not_texted() {
        let mut w = World::new();
        w.policy.holdout_share = 0.05;
        let held = subscription_id(&w, 0.05, true);
        let d = w.decide(|c| c.subscription_id = held);
        assert_skip(&d, Reason::Holdout);
        assert_eq!(
            d.rule(Rule::Holdout).explanation,
            "This subscription is in the 5% control group for this restock: it is recorded but \
             not texted, so the brand can measure what restock texts add."
        );
        let free = subscription_id(&w, 0.05, false);
        assert_eq!(
            w.decide(|c| c.subscription_id = free).outcome,
            Outcome::SendNow
        );
    }

    #[test]
    fn the_control_group_is_drawn_only_from_shoppers_who_would_be_texted() {
        let mut w = World::new();
        w.policy.holdout_share = 0.5;
        let held = subscription_id(&w, 0.5, true);
        let d = w.decide(|c| {
            c.subscription_id = held;
            c.consent = ConsentState::OptedOut;
        });
        assert_skip_outcome(&d, Reason::ConsentOptedOut);
        assert_eq!(
            d.rule(Rule::Holdout).verdict,
            Verdict::Skip,
            "still reported"
        );
        // A held-out shopper who would only have waited is held out, not deferred.
        let d = w.decide(|c| {
            c.subscription_id = held;
            c.phone_cap_free_at = Some(w.now + Duration::hours(1));
        });
        assert_skip_outcome(&d, Reason::Holdout);
    }

    #[test]
    fn merchandising_can_exclude_a_product_or_a_variant() {
        let mut w = World::new();
        assert_eq!(
            w.decide(|_| {}).rule(Rule::MerchandisingExclusion).verdict,
            Verdict::NotApplicable
        );
        w.policy.excluded_variants = vec!["v-2".into()];
        assert_eq!(
            w.decide(|_| {}).rule(Rule::MerchandisingExclusion).verdict,
            Verdict::Pass
        );
        w.policy.excluded_variants.push("v-1".into());
        assert_skip(&w.decide(|_| {}), Reason::VariantExcluded);
        w.policy.excluded_products = vec!["p-1".into()];
        let d = w.decide(|_| {});
        assert_skip(&d, Reason::ProductExcluded);
        assert_eq!(
            d.summary,
            "Not texted: merchandising excludes product p-1 from restock texts."
        );
    }

    #[test]
    fn an_exclusion_made_through_the_api_excludes_like_the_policy_s_own() {
        let mut w = World::new();
        w.exclusions.variant = true;
        assert_skip(&w.decide(|_| {}), Reason::VariantExcluded);
        w.exclusions = LiveExclusions {
            product: true,
            variant: false,
        };
        assert_skip(&w.decide(|_| {}), Reason::ProductExcluded);
        w.exclusions = LiveExclusions::default();
        assert_eq!(
            w.decide(|_| {}).rule(Rule::MerchandisingExclusion).verdict,
            Verdict::NotApplicable
        );
    }

    #[test]
    fn the_first_skipping_rule_names_the_reason_and_every_rule_is_still_reported() {
        let w = World::new();
        let d = w.decide(|c| {
            c.status = SubscriptionStatus::Cancelled;
            c.last_notified_at = Some(w.now);
            c.consent = ConsentState::OptedOut;
        });
        assert_skip_outcome(&d, Reason::ConsentOptedOut);
        assert_eq!(d.rule(Rule::Subscription).verdict, Verdict::Skip);
        assert_eq!(d.rule(Rule::RenotifyWindow).verdict, Verdict::Skip);
        assert_eq!(d.rules.len(), Rule::ALL.len());
    }

    #[test]
    fn reason_and_rule_names_round_trip() {
        for rule in Rule::ALL {
            assert_eq!(Rule::parse(rule.as_str()), Some(rule));
        }
        let reasons = [
            Reason::ConsentMissing,
            Reason::ConsentPendingConfirmation,
            Reason::ConsentOptedOut,
            Reason::SubscriptionCancelled,
            Reason::SubscriptionExpired,
            Reason::SubscriptionConverted,
            Reason::OptionsNotMatched,
            Reason::NotInStock,
            Reason::BelowDesiredQuantity,
            Reason::RecentlyPurchased,
            Reason::RecentlyNotified,
            Reason::QuietHours,
            Reason::FrequencyCapPhone,
            Reason::FrequencyCapTenant,
            Reason::Holdout,
            Reason::ProductExcluded,
            Reason::VariantExcluded,
        ];
        for reason in reasons {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
    }

    /// Owned inputs for one random decision.
    #[derive(Debug, Clone)]
    struct Case {
        consent: ConsentState,
        status: SubscriptionStatus,
        expires_in_hours: i64,
        stock: Vec<i64>,
        serving: Vec<bool>,
        desired: i64,
        wanted_size: Option<&'static str>,
        purchased_hours_ago: Option<i64>,
        notified_hours_ago: Option<i64>,
        phone_cap_in_minutes: Option<i64>,
        tenant_cap_in_minutes: Option<i64>,
        zone: Option<Tz>,
        region: Option<&'static str>,
        holdout_share: f64,
        exclude_product: bool,
        now: DateTime<Utc>,
        subscription: u128,
    }

    /// Random inputs, weighted so that every outcome comes up often: most shoppers pass most
    /// rules, as in real life.
    fn case() -> impl Strategy<Value = Case> {
        let who = (
            prop_oneof![
                8 => Just(ConsentState::OptedIn),
                1 => prop::sample::select(vec![
                    ConsentState::None,
                    ConsentState::PendingConfirmation,
                    ConsentState::OptedOut,
                ]),
            ],
            prop_oneof![
                8 => prop::sample::select(vec![
                    SubscriptionStatus::PendingConfirmation,
                    SubscriptionStatus::Active,
                    SubscriptionStatus::Notified,
                ]),
                1 => prop::sample::select(vec![
                    SubscriptionStatus::Converted,
                    SubscriptionStatus::Expired,
                    SubscriptionStatus::Cancelled,
                ]),
            ],
            prop_oneof![9 => 1i64..2_000, 1 => -10i64..1],
            prop::option::weighted(0.3, prop::sample::select(vec!["M", "m", "L"])),
            any::<u128>(),
        );
        let stock = (
            prop::collection::vec(-1i64..8, 1..4),
            prop::collection::vec(any::<bool>(), 0..4),
            0i64..4,
        );
        let history = (
            prop::option::weighted(0.2, 0i64..2_000),
            prop::option::weighted(0.2, 0i64..200),
            prop::option::weighted(0.4, -60i64..3_000),
            prop::option::weighted(0.3, -60i64..3_000),
        );
        let place = (
            prop::option::of(prop::sample::select(vec![
                America::New_York,
                America::Los_Angeles,
                Europe::London,
                chrono_tz::Australia::Sydney,
            ])),
            prop::option::of(prop::sample::select(vec!["US", "GB", "AU", "RU", "ZZ"])),
            prop::sample::select(vec![0.0, 0.05, 0.5]),
            prop::bool::weighted(0.05),
            // Any minute of 2026.
            (0i64..365 * 24 * 60).prop_map(|m| utc("2026-01-01T00:00:00Z") + Duration::minutes(m)),
        );
        (who, stock, history, place).prop_map(
            |(
                (consent, status, expires_in_hours, wanted_size, subscription),
                (stock, serving, desired),
                (purchased, notified, phone_cap, tenant_cap),
                (zone, region, holdout_share, exclude_product, now),
            )| Case {
                consent,
                status,
                expires_in_hours,
                stock,
                serving,
                desired,
                wanted_size,
                purchased_hours_ago: purchased,
                notified_hours_ago: notified,
                phone_cap_in_minutes: phone_cap,
                tenant_cap_in_minutes: tenant_cap,
                zone,
                region,
                holdout_share,
                exclude_product,
                now,
                subscription,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn decisions_combine_the_rules_consistently(k in case()) {
            let mut w = World::new();
            w.now = k.now;
            w.policy.holdout_share = k.holdout_share;
            if k.exclude_product {
                w.policy.excluded_products = vec!["p-1".into()];
            }
            w.stock = k.stock.iter().enumerate().map(|(i, n)| (format!("s{i}"), *n)).collect();
            w.location_ids = k
                .serving
                .iter()
                .enumerate()
                .filter(|(_, on)| **on)
                .map(|(i, _)| format!("s{i}"))
                .collect();
            if let Some(size) = k.wanted_size {
                w.wanted_options = options(&[("size", size)]);
            }
            let minutes = |m: i64| k.now + Duration::minutes(m);
            let c = Candidate {
                subscription_id: Uuid::from_u128(k.subscription),
                status: k.status,
                expires_at: k.now + Duration::hours(k.expires_in_hours),
                consent: k.consent,
                desired_quantity: k.desired,
                location_ids: &w.location_ids,
                wanted_options: &w.wanted_options,
                time_zone: k.zone,
                phone_region: k.region,
                last_purchase_at: k.purchased_hours_ago.map(|h| k.now - Duration::hours(h)),
                substitute_purchase: None,
                last_notified_at: k.notified_hours_ago.map(|h| k.now - Duration::hours(h)),
                phone_cap_free_at: k.phone_cap_in_minutes.map(minutes),
                tenant_cap_free_at: k.tenant_cap_in_minutes.map(minutes),
            };
            let d = judge(&w.policy, &w.ctx(), &c);

            // One result per rule, in order, each explained.
            let order: Vec<Rule> = d.rules.iter().map(|r| r.rule).collect();
            prop_assert_eq!(order, Rule::ALL.to_vec());
            for r in &d.rules {
                prop_assert!(!r.explanation.is_empty());
                prop_assert_eq!(r.reason.is_some(), matches!(r.verdict, Verdict::Skip | Verdict::Defer(_)));
                if let Some(reason) = r.reason {
                    prop_assert_eq!(reason.rule(), r.rule);
                }
            }
            prop_assert!(!d.summary.is_empty());

            let skips: Vec<&ExplainedRule> = d.rules.iter().filter(|r| r.verdict == Verdict::Skip).collect();
            let all_clear = d.rules.iter().all(|r| matches!(r.verdict, Verdict::Pass | Verdict::NotApplicable));

            // A skip always beats a defer; the first non-holdout skip names the reason.
            if !skips.is_empty() {
                prop_assert_eq!(d.outcome, Outcome::Skip);
                let first = skips.iter().find(|r| r.rule != Rule::Holdout).unwrap_or(&skips[0]);
                prop_assert_eq!(d.reason, first.reason);
            }
            // Texted now only when every rule passes or does not apply.
            prop_assert_eq!(d.outcome == Outcome::SendNow, all_clear);
            match d.outcome {
                Outcome::SendNow => prop_assert_eq!(d.reason, None),
                Outcome::Skip => prop_assert!(d.reason.is_some()),
                Outcome::Defer(at) => {
                    prop_assert!(skips.is_empty());
                    prop_assert!(at > k.now);
                    prop_assert!(at < c.expires_at);
                    for r in &d.rules {
                        if let Verdict::Defer(t) = r.verdict {
                            prop_assert!(at >= t);
                        }
                    }
                    let recipient = Recipient::of(&c);
                    let zones = recipient.zones();
                    let (start, end) = w.policy.quiet_window();
                    prop_assert!(quiet_hours::is_allowed(zones, start, end, at));
                    let reason = d.reason.expect("a defer has a reason");
                    prop_assert!(matches!(d.rule(reason.rule()).verdict, Verdict::Defer(_)));
                }
            }
        }
    }
}
