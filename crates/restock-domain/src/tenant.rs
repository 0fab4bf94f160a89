//! Tenant (brand) policy: every knob a brand can set, each with a sane default.

use chrono::NaiveTime;
use serde::Deserialize;
use std::collections::BTreeMap;

/// One brand's policy, read from configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPolicy {
    /// Display name of the brand, used in texts.
    #[serde(default)]
    pub display_name: String,
    /// Whether an opt-in must be confirmed (double opt-in) before the phone is texted.
    #[serde(default)]
    pub double_opt_in: bool,
    /// Lifetime of a subscription that names no expiry.
    #[serde(default = "default_subscription_ttl_days")]
    pub subscription_ttl_days: u32,
    /// Available-to-sell at or above which a sold-out variant counts as restocked (at least 1).
    #[serde(default = "default_restock_threshold")]
    pub restock_threshold: i64,
    /// Level at or below which a restocked variant counts as sold out again and may restock
    /// anew; below the threshold so that stock flapping around it starts no second release.
    #[serde(default)]
    pub rearm_level: i64,
    /// Local time (`HH:MM`, 24-hour) from which shoppers may be texted.
    #[serde(default = "default_quiet_hours_start")]
    pub quiet_hours_start: ClockTime,
    /// Local time (`HH:MM`) from which shoppers may no longer be texted. At or before the start,
    /// the texting window spans midnight.
    #[serde(default = "default_quiet_hours_end")]
    pub quiet_hours_end: ClockTime,
    /// Hours after a purchase of a variant during which its buyer gets no restock text for it:
    /// telling someone that what they just bought is back reads as spam.
    #[serde(default = "default_purchase_suppression_hours")]
    pub purchase_suppression_hours: u32,
    /// Hours after a text about a variant during which the same phone gets no second one, so a
    /// flapping stock level cannot text a shopper twice in a row. A text whose link was clicked
    /// after the variant sold out again does not count: that shopper saw nothing to buy.
    #[serde(default = "default_renotify_hours")]
    pub renotify_hours: u32,
    /// Share of eligible subscriptions (0 to 0.5) held out of each restock as a control group,
    /// to measure what the texts add. Capped at a half: a larger control group costs sales.
    #[serde(default)]
    pub holdout_share: f64,
    /// Product ids merchandising never announces (e.g. limited drops sold by raffle).
    #[serde(default)]
    pub excluded_products: Vec<String>,
    /// Variant ids merchandising never announces.
    #[serde(default)]
    pub excluded_variants: Vec<String>,
    /// How a release spreads its texts: `immediate`, `staged`, `proportional` or
    /// `sell_through`.
    #[serde(default)]
    pub release_strategy: ReleaseStrategy,
    /// For `staged`: each wave's share of the recipients in basis points, summing to 10,000.
    #[serde(default = "default_stage_shares_bps")]
    pub stage_shares_bps: Vec<u32>,
    /// For `staged` and `proportional`: time between the start of one wave and the next.
    #[serde(default = "default_wave_interval_seconds")]
    pub wave_interval_seconds: u32,
    /// For `proportional` and `sell_through`: recipients per wave per unit of live stock (at
    /// least 1).
    #[serde(default = "default_oversubscription_factor")]
    pub oversubscription_factor: f64,
    /// For `sell_through`: the first wave's share of the recipients in basis points (3000: "30%
    /// of the list receives the first alert"), at most live stock times the factor.
    #[serde(default = "default_first_wave_share_bps")]
    pub first_wave_share_bps: u32,
    /// For `sell_through`: the next wave opens before its interval once the previous wave's
    /// recipients bought, or the stock fell by, this share of the wave's texts (basis points).
    #[serde(default = "default_sell_through_share_bps")]
    pub sell_through_share_bps: u32,
    /// Who texts come from: an E.164 number, a short code, or a Twilio messaging service
    /// (`MG...`).
    #[serde(default = "default_sender_id")]
    pub sender_id: String,
    /// The sender's throughput in texts per second (US long code 1, toll-free 3, short code
    /// 100+); never exceeded, across replicas.
    #[serde(default = "default_sender_mps")]
    pub sender_mps: u32,
    /// The sender that takes over when `sender_id` cannot send (the provider rejects it or our
    /// account, or cannot be reached): a second messaging service or number, of the fallback
    /// account when one is configured (`sms.fallback_twilio_account_sid`). Replies to it
    /// (STOP, START, HELP) count as replies to the brand.
    #[serde(default)]
    pub fallback_sender_id: Option<String>,
    /// Senders by the phone's country (ISO 3166-1 alpha-2, e.g. `GB = "+447700900123"`):
    /// a phone number may only text its own numbering plan, so a brand with shoppers abroad
    /// names a sender per country. A phone whose country has none here and that `sender_id`
    /// may not text is skipped (`no_sender_for_country`).
    #[serde(default)]
    pub country_senders: BTreeMap<String, String>,
    /// At most this many texts to one phone within `phone_cap_hours` (state laws: 3 per 24 h).
    #[serde(default = "default_phone_cap_texts")]
    pub phone_cap_texts: u32,
    #[serde(default = "default_phone_cap_hours")]
    pub phone_cap_hours: u32,
    /// At most this many texts per day for the whole brand; unset means no brand-wide cap.
    #[serde(default)]
    pub tenant_cap_texts_per_day: Option<u32>,
    /// The text: `{brand}`, `{title}`, `{options}`, `{link}` and `{promise}` are filled in;
    /// the title is shortened to keep within `max_segments`.
    #[serde(default = "default_message_template")]
    pub message_template: String,
    /// The reminder's text, same placeholders.
    #[serde(default = "default_reminder_template")]
    pub reminder_template: String,
    /// Appended to every text; empty to leave it out (only where the law allows).
    #[serde(default = "default_opt_out_text")]
    pub opt_out_text: String,
    /// The confirmation text of a double opt-in tenant (`{brand}` and `{title}` are filled in;
    /// the opt-out text is appended). One per phone per batch of pending subscriptions, at most
    /// one a day to a phone, within quiet hours and caps.
    #[serde(default = "default_confirmation_template")]
    pub confirmation_template: String,
    /// How long a subscription may await confirmation before it lapses.
    #[serde(default = "default_confirmation_window_hours")]
    pub confirmation_window_hours: u32,
    /// Most SMS segments a text may take; the title is shortened to fit.
    #[serde(default = "default_max_segments")]
    pub max_segments: u32,
    /// What a location promises about delivery ("Same-day delivery in Paris"), by location id;
    /// filled into `{promise}`: the restocked location's, or for a variant-level restock the
    /// first of the shopper's own locations that has the stock (none if they named none).
    #[serde(default)]
    pub delivery_promises: std::collections::BTreeMap<String, String>,
    /// Minutes after the first text at which a single reminder goes out (only if the shopper
    /// has not bought and the item is still in stock); unset means no reminder.
    #[serde(default)]
    pub reminder_after_minutes: Option<u32>,
    /// Where a link goes when the variant has no deep link of its own (the storefront's home
    /// or search page); unset, such a text links nowhere and is skipped.
    #[serde(default)]
    pub storefront_url: Option<String>,
    /// A click on a text whose variant is sold out again by then: the shopper lands on the
    /// page with `restock=sold_out`, and when this is on (the default) their subscription goes
    /// back to waiting, with its place in line, for the next restock.
    #[serde(default = "default_true")]
    pub sold_out_click_rewaits: bool,
    /// Hosts a text's link may lead to (`shop.example.com`, or `*.example.com` for the hosts
    /// under it). Empty: the host of `storefront_url` alone. A deep link elsewhere is refused at
    /// Subscribe, and the tracked-link redirect never leads elsewhere.
    #[serde(default)]
    pub allowed_link_hosts: Vec<String>,
    /// A purchase within this many hours after a text about its variant is credited to the text.
    #[serde(default = "default_text_attribution_hours")]
    pub text_attribution_hours: u32,
    /// A purchase within this many days after a click on a text's link is credited to the text.
    #[serde(default = "default_click_attribution_days")]
    pub click_attribution_days: u32,
    /// The answer to HELP or INFO.
    #[serde(default = "default_help_text")]
    pub help_text: String,
    /// The brand's IANA time zone (`Europe/Paris`): what a "day" means in reports and in the
    /// product views the storefront counts per day.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// What the provider charges for one SMS segment, in thousandths of the minor unit of
    /// `segment_price_currency` (0.79 US cents is 790), so reports can show what texts cost.
    /// Unset: reports leave the cost out.
    #[serde(default)]
    pub segment_price_milli_minor: Option<u64>,
    /// ISO 4217 code of `segment_price_milli_minor`.
    #[serde(default = "default_segment_price_currency")]
    pub segment_price_currency: String,
    /// Close substitutes, by group name: buying any member suppresses restock texts about the
    /// others for `purchase_suppression_hours`. Written to the database at start (as groups
    /// `config.<name>`, which the API cannot change); groups made with SetSubstituteGroup add
    /// to these.
    #[serde(default)]
    pub substitute_groups: BTreeMap<String, SubstituteGroupConfig>,
    /// The order a release texts its recipients in: `arrival` (priority tier, then first come
    /// first served) or `tier_score_arrival` (priority tier, then the propensity score a model
    /// service set, highest first, unscored last, then arrival).
    #[serde(default)]
    pub release_order: ReleaseOrder,
}

/// One group of close substitutes in configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubstituteGroupConfig {
    #[serde(default)]
    pub variants: Vec<String>,
    /// A product stands for every variant of it restock knows.
    #[serde(default)]
    pub products: Vec<String>,
}

/// Most members of one substitute group, in configuration and through the API.
pub const MAX_SUBSTITUTE_MEMBERS: usize = 100;

/// Who a release texts first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseOrder {
    #[default]
    Arrival,
    TierScoreArrival,
}

crate::consent::str_enum!(ReleaseOrder {
    Arrival => "arrival",
    TierScoreArrival => "tier_score_arrival",
});

/// How a release spreads its texts over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseStrategy {
    #[default]
    Immediate,
    Staged,
    Proportional,
    SellThrough,
}

crate::consent::str_enum!(ReleaseStrategy {
    Immediate => "immediate",
    Staged => "staged",
    Proportional => "proportional",
    SellThrough => "sell_through",
});

fn default_stage_shares_bps() -> Vec<u32> {
    vec![3000, 3000, 4000]
}

fn default_wave_interval_seconds() -> u32 {
    600
}

fn default_oversubscription_factor() -> f64 {
    1.5
}

fn default_first_wave_share_bps() -> u32 {
    3000
}

fn default_sell_through_share_bps() -> u32 {
    2000
}

fn default_sender_id() -> String {
    "+15005550006".into()
}

fn default_sender_mps() -> u32 {
    10
}

fn default_phone_cap_texts() -> u32 {
    3
}

fn default_phone_cap_hours() -> u32 {
    24
}

fn default_message_template() -> String {
    "{brand}: {title} {options} is back in stock. {promise}{link}".into()
}

fn default_reminder_template() -> String {
    "{brand}: {title} {options} is still in stock, but not for long. {link}".into()
}

fn default_confirmation_template() -> String {
    "{brand}: reply YES to get a text when {title} is back in stock.".into()
}

fn default_confirmation_window_hours() -> u32 {
    48
}

fn default_opt_out_text() -> String {
    "Reply STOP to opt out".into()
}

fn default_max_segments() -> u32 {
    2
}

fn default_text_attribution_hours() -> u32 {
    24
}

fn default_click_attribution_days() -> u32 {
    7
}

fn default_true() -> bool {
    true
}

fn default_help_text() -> String {
    "Back-in-stock alerts. Reply STOP to opt out. Msg&data rates may apply.".into()
}

fn default_segment_price_currency() -> String {
    "USD".into()
}

fn default_time_zone() -> String {
    "UTC".into()
}

fn default_subscription_ttl_days() -> u32 {
    90
}

fn default_restock_threshold() -> i64 {
    1
}

fn default_quiet_hours_start() -> ClockTime {
    ClockTime(NaiveTime::from_hms_opt(8, 0, 0).expect("a valid time"))
}

fn default_quiet_hours_end() -> ClockTime {
    ClockTime(NaiveTime::from_hms_opt(21, 0, 0).expect("a valid time"))
}

/// A local time of day as configured (`HH:MM`, 24-hour), parsed once when the configuration is
/// read: a value that is not one fails loading, naming its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ClockTime(pub NaiveTime);

impl TryFrom<String> for ClockTime {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        value.parse()
    }
}

impl std::str::FromStr for ClockTime {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        NaiveTime::parse_from_str(value.trim(), "%H:%M")
            .map(ClockTime)
            .map_err(|_| format!("expected a 24-hour time HH:MM such as \"08:00\", got {value:?}"))
    }
}

impl std::fmt::Display for ClockTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%H:%M"))
    }
}

fn default_purchase_suppression_hours() -> u32 {
    720
}

fn default_renotify_hours() -> u32 {
    72
}

impl Default for TenantPolicy {
    fn default() -> Self {
        Self {
            display_name: String::new(),
            double_opt_in: false,
            subscription_ttl_days: default_subscription_ttl_days(),
            restock_threshold: default_restock_threshold(),
            rearm_level: 0,
            quiet_hours_start: default_quiet_hours_start(),
            quiet_hours_end: default_quiet_hours_end(),
            purchase_suppression_hours: default_purchase_suppression_hours(),
            renotify_hours: default_renotify_hours(),
            holdout_share: 0.0,
            excluded_products: Vec::new(),
            excluded_variants: Vec::new(),
            release_strategy: ReleaseStrategy::Immediate,
            stage_shares_bps: default_stage_shares_bps(),
            wave_interval_seconds: default_wave_interval_seconds(),
            oversubscription_factor: default_oversubscription_factor(),
            first_wave_share_bps: default_first_wave_share_bps(),
            sell_through_share_bps: default_sell_through_share_bps(),
            sender_id: default_sender_id(),
            sender_mps: default_sender_mps(),
            fallback_sender_id: None,
            country_senders: BTreeMap::new(),
            phone_cap_texts: default_phone_cap_texts(),
            phone_cap_hours: default_phone_cap_hours(),
            tenant_cap_texts_per_day: None,
            message_template: default_message_template(),
            reminder_template: default_reminder_template(),
            opt_out_text: default_opt_out_text(),
            confirmation_template: default_confirmation_template(),
            confirmation_window_hours: default_confirmation_window_hours(),
            max_segments: default_max_segments(),
            delivery_promises: Default::default(),
            reminder_after_minutes: None,
            storefront_url: None,
            sold_out_click_rewaits: true,
            allowed_link_hosts: Vec::new(),
            text_attribution_hours: default_text_attribution_hours(),
            click_attribution_days: default_click_attribution_days(),
            help_text: default_help_text(),
            time_zone: default_time_zone(),
            segment_price_milli_minor: None,
            segment_price_currency: default_segment_price_currency(),
            substitute_groups: BTreeMap::new(),
            release_order: ReleaseOrder::Arrival,
        }
    }
}

impl TenantPolicy {
    /// The sender a text to a phone of `region` (ISO 3166-1 alpha-2) goes from: the country's
    /// own in `country_senders`, else `sender_id` if it may text that country. A messaging
    /// service may (it picks a number of the phone's country from its pool); a phone number
    /// may text its own numbering plan (a US long code texts +1 phones, not UK ones); a short
    /// code or alphanumeric id only the countries `country_senders` names it for. `None` when
    /// no sender may.
    pub fn sender_for(&self, region: Option<&str>) -> Option<&str> {
        // Borrowed when already in capitals (as stored): the eligibility engine asks per text.
        let region = region.map(|r| match r.trim() {
            r if r.bytes().any(|b| b.is_ascii_lowercase()) => {
                std::borrow::Cow::Owned(r.to_ascii_uppercase())
            }
            r => std::borrow::Cow::Borrowed(r),
        });
        if let Some(sender) = region
            .as_deref()
            .and_then(|r| self.country_senders.get(r))
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            return Some(sender);
        }
        let sender = self.sender_id.trim();
        if sender.starts_with("MG") {
            return Some(sender);
        }
        let Some(region) = region else {
            // A phone of no known country: the brand's sender, as before.
            return Some(sender);
        };
        match crate::phone::calling_code_of_e164(sender) {
            Some(code) => (crate::phone::calling_code(&region) == Some(code)).then_some(sender),
            // A short code or an alphanumeric id: only where country_senders names it.
            None => None,
        }
    }

    /// The hosts links may lead to: `allowed_link_hosts`, or else the storefront's host (none
    /// when neither is set: then no deep link is allowed).
    pub fn link_hosts(&self) -> Vec<String> {
        if !self.allowed_link_hosts.is_empty() {
            return self.allowed_link_hosts.clone();
        }
        self.storefront_url
            .as_deref()
            .and_then(crate::link::host_of)
            .into_iter()
            .collect()
    }

    /// The brand's time zone.
    pub fn zone(&self) -> Result<chrono_tz::Tz, String> {
        self.time_zone.parse().map_err(|_| {
            format!(
                "time_zone: must be an IANA time zone such as Europe/Paris, got {:?}",
                self.time_zone
            )
        })
    }

    /// The texting window `[start, end)` in the shopper's local time (parsed when the
    /// configuration was read).
    pub fn quiet_window(&self) -> (NaiveTime, NaiveTime) {
        (self.quiet_hours_start.0, self.quiet_hours_end.0)
    }

    /// Checks every knob that can be set to nonsense; the error names the offending key, so the
    /// server can refuse a bad configuration at start rather than misbehave at the first restock.
    pub fn validate(&self) -> Result<(), String> {
        self.zone()?;
        for (name, group) in &self.substitute_groups {
            let members = group.variants.len() + group.products.len();
            if !(2..=MAX_SUBSTITUTE_MEMBERS).contains(&members) {
                return Err(format!(
                    "substitute_groups.{name}: must have 2 to {MAX_SUBSTITUTE_MEMBERS} members, got {members}"
                ));
            }
            if name.is_empty()
                || name.len() > 60
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "substitute_groups: a group name is 1 to 60 letters, digits, '-' or '_', got {name:?}"
                ));
            }
            if group
                .variants
                .iter()
                .chain(&group.products)
                .any(|m| m.trim().is_empty() || m.len() > 128)
            {
                return Err(format!(
                    "substitute_groups.{name}: every member is 1 to 128 characters"
                ));
            }
        }
        let c = &self.segment_price_currency;
        if c.len() != 3 || !c.chars().all(|ch| ch.is_ascii_uppercase()) {
            return Err(format!(
                "segment_price_currency: must be an ISO 4217 code such as USD, got {c:?}"
            ));
        }
        if !(0.0..=0.5).contains(&self.holdout_share) {
            return Err(format!(
                "holdout_share: must be within 0 and 0.5, got {}",
                self.holdout_share
            ));
        }
        if self.restock_threshold < 1 {
            return Err(format!(
                "restock_threshold: must be at least 1, got {}",
                self.restock_threshold
            ));
        }
        if self.rearm_level >= self.restock_threshold {
            return Err(format!(
                "rearm_level: must be below restock_threshold ({}), got {}",
                self.restock_threshold, self.rearm_level
            ));
        }
        if self.stage_shares_bps.is_empty()
            || self.stage_shares_bps.contains(&0)
            || self.stage_shares_bps.iter().sum::<u32>() != 10_000
        {
            return Err(format!(
                "stage_shares_bps: must be positive shares summing to 10000, got {:?}",
                self.stage_shares_bps
            ));
        }
        if !(self.oversubscription_factor >= 1.0 && self.oversubscription_factor <= 1000.0) {
            return Err(format!(
                "oversubscription_factor: must be within 1 and 1000, got {}",
                self.oversubscription_factor
            ));
        }
        for (key, bps) in [
            ("first_wave_share_bps", self.first_wave_share_bps),
            ("sell_through_share_bps", self.sell_through_share_bps),
        ] {
            if !(1..=10_000).contains(&bps) {
                return Err(format!("{key}: must be within 1 and 10000, got {bps}"));
            }
        }
        if self.sender_id.trim().is_empty() {
            return Err("sender_id: must not be empty".into());
        }
        if self.sender_mps == 0 {
            return Err("sender_mps: must be at least 1".into());
        }
        if self.phone_cap_texts == 0 || self.phone_cap_hours == 0 {
            return Err("phone_cap_texts: a phone cap needs at least 1 text per hour".into());
        }
        if self.tenant_cap_texts_per_day == Some(0) {
            return Err("tenant_cap_texts_per_day: must be at least 1 when set".into());
        }
        if !(1..=10).contains(&self.max_segments) {
            return Err(format!(
                "max_segments: must be within 1 and 10, got {}",
                self.max_segments
            ));
        }
        for (key, template) in [
            ("message_template", &self.message_template),
            ("reminder_template", &self.reminder_template),
        ] {
            if !template.contains("{link}") {
                return Err(format!("{key}: must contain {{link}}"));
            }
        }
        if let Some(bad) = self
            .allowed_link_hosts
            .iter()
            .find(|h| !crate::link::valid_host_entry(h))
        {
            return Err(format!(
                "allowed_link_hosts: {bad:?} is not a host name (like \"shop.example.com\" or \"*.example.com\")"
            ));
        }
        if self
            .storefront_url
            .as_deref()
            .is_some_and(|u| crate::link::host_of(u).is_none())
        {
            return Err("storefront_url: must be an absolute http(s) URL".into());
        }
        if self.reminder_after_minutes == Some(0) {
            return Err("reminder_after_minutes: must be at least 1 when set".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let p = TenantPolicy::default();
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(
            p.quiet_window(),
            (
                NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
                NaiveTime::from_hms_opt(21, 0, 0).unwrap()
            )
        );
        assert_eq!(p.restock_threshold, 1);
        assert_eq!(p.rearm_level, 0);
        assert_eq!(p.purchase_suppression_hours, 720);
        assert_eq!(p.renotify_hours, 72);
    }

    #[test]
    fn validation_names_the_bad_key() {
        let bad = |f: fn(&mut TenantPolicy)| {
            let mut p = TenantPolicy::default();
            f(&mut p);
            p.validate().unwrap_err()
        };
        assert!(bad(|p| p.holdout_share = 0.6).starts_with("holdout_share:"));
        assert!(bad(|p| p.time_zone = "Mars/Olympus".into()).starts_with("time_zone:"));
        assert!(
            bad(|p| p.segment_price_currency = "usd".into()).starts_with("segment_price_currency:")
        );
        assert!(bad(|p| p.holdout_share = -0.1).starts_with("holdout_share:"));
        assert!(bad(|p| p.holdout_share = f64::NAN).starts_with("holdout_share:"));
        assert!(bad(|p| p.restock_threshold = 0).starts_with("restock_threshold:"));
        assert!(bad(|p| p.rearm_level = 1).starts_with("rearm_level:"));
        assert!(
            bad(|p| p.allowed_link_hosts = vec!["https://shop.example".into()])
                .starts_with("allowed_link_hosts:")
        );
        assert!(
            bad(|p| p.storefront_url = Some("shop.example".into())).starts_with("storefront_url:")
        );
    }

    #[test]
    fn links_default_to_the_storefronts_host() {
        let mut p = TenantPolicy::default();
        assert!(p.link_hosts().is_empty());
        p.storefront_url = Some("https://Shop.Example/search".into());
        assert_eq!(p.link_hosts(), ["shop.example"]);
        p.allowed_link_hosts = vec!["shop.example".into(), "*.cdn.example".into()];
        assert_eq!(p.link_hosts(), ["shop.example", "*.cdn.example"]);
    }

    #[test]
    fn clock_times_are_24_hour_hh_mm() {
        assert_eq!("08:30".parse::<ClockTime>().unwrap().to_string(), "08:30");
        assert_eq!(" 21:00 ".parse::<ClockTime>().unwrap().to_string(), "21:00");
        for bad in ["8am", "25:00", "", "12:60", "noon"] {
            let e = bad.parse::<ClockTime>().unwrap_err();
            assert!(e.contains("HH:MM"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_window_may_span_midnight() {
        let p = TenantPolicy {
            quiet_hours_start: "22:00".parse().unwrap(),
            quiet_hours_end: "02:00".parse().unwrap(),
            ..TenantPolicy::default()
        };
        assert_eq!(p.validate(), Ok(()));
    }
}
