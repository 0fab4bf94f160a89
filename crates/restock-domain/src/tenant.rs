//! Tenant (brand) policy: every knob a brand can set, each with a sane default.

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
}

fn default_subscription_ttl_days() -> u32 {
    90
}

impl Default for TenantPolicy {
    fn default() -> Self {
        Self {
            display_name: String::new(),
            double_opt_in: false,
            subscription_ttl_days: default_subscription_ttl_days(),
        }
    }
}
