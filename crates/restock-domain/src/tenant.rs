//! Tenant (brand) policy: every knob a brand can set, each with a sane default.

use chrono::NaiveTime;
use serde::Deserialize;

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
    pub quiet_hours_start: String,
    /// Local time (`HH:MM`) from which shoppers may no longer be texted. At or before the start,
    /// the texting window spans midnight.
    #[serde(default = "default_quiet_hours_end")]
    pub quiet_hours_end: String,
    /// Hours after a purchase of a variant during which its buyer gets no restock text for it:
    /// telling someone that what they just bought is back reads as spam.
    #[serde(default = "default_purchase_suppression_hours")]
    pub purchase_suppression_hours: u32,
    /// Hours after a text about a variant during which the same phone gets no second one, so a
    /// flapping stock level cannot text a shopper twice in a row.
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
}

fn default_subscription_ttl_days() -> u32 {
    90
}

fn default_restock_threshold() -> i64 {
    1
}

fn default_quiet_hours_start() -> String {
    "08:00".into()
}

fn default_quiet_hours_end() -> String {
    "21:00".into()
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
        }
    }
}

impl TenantPolicy {
    /// The texting window `[start, end)` in the shopper's local time.
    pub fn quiet_window(&self) -> Result<(NaiveTime, NaiveTime), String> {
        Ok((
            parse_hh_mm("quiet_hours_start", &self.quiet_hours_start)?,
            parse_hh_mm("quiet_hours_end", &self.quiet_hours_end)?,
        ))
    }

    /// Checks every knob that can be set to nonsense; the error names the offending key, so the
    /// server can refuse a bad configuration at start rather than misbehave at the first restock.
    pub fn validate(&self) -> Result<(), String> {
        self.quiet_window()?;
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
        Ok(())
    }
}

fn parse_hh_mm(key: &str, value: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(value.trim(), "%H:%M").map_err(|_| {
        format!("{key}: expected a 24-hour time HH:MM such as \"08:00\", got {value:?}")
    })
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
            Ok((
                NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
                NaiveTime::from_hms_opt(21, 0, 0).unwrap()
            ))
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
        assert!(bad(|p| p.quiet_hours_start = "8am".into()).starts_with("quiet_hours_start:"));
        assert!(bad(|p| p.quiet_hours_end = "25:00".into()).starts_with("quiet_hours_end:"));
        assert!(bad(|p| p.holdout_share = 0.6).starts_with("holdout_share:"));
        assert!(bad(|p| p.holdout_share = -0.1).starts_with("holdout_share:"));
        assert!(bad(|p| p.holdout_share = f64::NAN).starts_with("holdout_share:"));
        assert!(bad(|p| p.restock_threshold = 0).starts_with("restock_threshold:"));
        assert!(bad(|p| p.rearm_level = 1).starts_with("rearm_level:"));
    }

    #[test]
    fn a_window_may_span_midnight() {
        let p = TenantPolicy {
            quiet_hours_start: "22:00".into(),
            quiet_hours_end: "02:00".into(),
            ..TenantPolicy::default()
        };
        assert_eq!(p.validate(), Ok(()));
    }
}
