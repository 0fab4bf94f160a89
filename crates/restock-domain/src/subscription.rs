//! Subscriptions: their life cycle and what they wait for.

use std::collections::BTreeMap;

use crate::consent::str_enum;

/// Where a subscription is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStatus {
    PendingConfirmation,
    Active,
    Notified,
    Converted,
    Expired,
    Cancelled,
    /// Never confirmed (double opt-in) within the tenant's confirmation window.
    Lapsed,
}

str_enum!(SubscriptionStatus {
    PendingConfirmation => "pending_confirmation",
    Active => "active",
    Notified => "notified",
    Converted => "converted",
    Expired => "expired",
    Cancelled => "cancelled",
    Lapsed => "lapsed",
});

impl SubscriptionStatus {
    /// Live subscriptions wait for stock; at most one per (tenant, target, phone). A texted
    /// (notified) one stays in line for the next restock; the re-notify window spaces texts.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Self::PendingConfirmation | Self::Active | Self::Notified
        )
    }
}

/// Why a subscription was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    Unsubscribed,
    OptedOut,
    Erased,
    /// TransferWaitlist moved a waitlist where the shopper was already waiting: the earlier
    /// place was kept and this one ended.
    MergedByTransfer,
}

str_enum!(CancelReason { Unsubscribed => "unsubscribed", OptedOut => "opted_out", Erased => "erased", MergedByTransfer => "merged_by_transfer" });

/// What a subscription waits for: one variant, or any variant of a product that has the wanted
/// options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Variant {
        variant_id: String,
    },
    Product {
        product_id: String,
        wanted_options: BTreeMap<String, String>,
    },
}

impl Target {
    /// A canonical key: equal targets give equal keys, so "the same subscription" can be an
    /// index. Option names are case-insensitive, values are compared as given.
    pub fn key(&self) -> String {
        match self {
            Target::Variant { variant_id } => format!("v:{variant_id}"),
            Target::Product {
                product_id,
                wanted_options,
            } => {
                let mut opts: Vec<(String, &str)> = wanted_options
                    .iter()
                    .map(|(k, v)| (k.to_lowercase(), v.as_str()))
                    .collect();
                opts.sort();
                let mut key = format!("p:{product_id}");
                for (k, v) in opts {
                    // Lengths prefix each part so no id or option can forge another key.
                    key.push_str(&format!("|{}:{}={}:{}", k.len(), k, v.len(), v));
                }
                key
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_keys_ignore_option_order_and_name_case() {
        let a = Target::Product {
            product_id: "p1".into(),
            wanted_options: [
                ("Size".into(), "M".into()),
                ("colour".into(), "Blue".into()),
            ]
            .into(),
        };
        let b = Target::Product {
            product_id: "p1".into(),
            wanted_options: [
                ("colour".into(), "Blue".into()),
                ("size".into(), "M".into()),
            ]
            .into(),
        };
        assert_eq!(a.key(), b.key());
        assert_ne!(
            a.key(),
            Target::Variant {
                variant_id: "p1".into()
            }
            .key()
        );
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            SubscriptionStatus::PendingConfirmation,
            SubscriptionStatus::Active,
            SubscriptionStatus::Notified,
            SubscriptionStatus::Converted,
            SubscriptionStatus::Expired,
            SubscriptionStatus::Cancelled,
        ] {
            assert_eq!(SubscriptionStatus::parse(s.as_str()), Some(s));
        }
    }
}
