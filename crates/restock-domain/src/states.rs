//! The stored life cycles of the dispatch side: a release, its waves, each text of the outbox
//! and each confirmation text. Each state has one stored name (its `as_str`, and the
//! `ToSql`/`FromSql` of the `postgres` feature), so a new state is a compile error until every
//! `match` on it handles it. The database's CHECK constraints admit exactly these names
//! (pinned by a test against the migrated schema).

use crate::consent::str_enum;

/// Where a text of the outbox is. `planned`/`deferred` -> `sending` (under a lease) -> an
/// outcome; `held_out` and `skipped` at planning never go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageStatus {
    Planned,
    /// In the holdout group: never sent, measured against.
    HeldOut,
    /// Waiting (quiet hours, a rate limit): due again later.
    Deferred,
    /// Claimed under a lease, or handed to the provider with the outcome not yet recorded.
    Sending,
    Sent,
    Delivered,
    Undelivered,
    Failed,
    /// Not sent because the phone opted out.
    Suppressed,
    /// Not sent: an eligibility rule said no, or the release ended first.
    Skipped,
    /// Handed over, outcome lost: reconciliation asks the provider.
    Unknown,
}

str_enum!(MessageStatus {
    Planned => "planned",
    HeldOut => "held_out",
    Deferred => "deferred",
    Sending => "sending",
    Sent => "sent",
    Delivered => "delivered",
    Undelivered => "undelivered",
    Failed => "failed",
    Suppressed => "suppressed",
    Skipped => "skipped",
    Unknown => "unknown",
});

impl MessageStatus {
    /// Still to go out: counts against a wave or a release being done.
    pub fn is_open(self) -> bool {
        match self {
            Self::Planned | Self::Deferred | Self::Sending => true,
            Self::HeldOut
            | Self::Sent
            | Self::Delivered
            | Self::Undelivered
            | Self::Failed
            | Self::Suppressed
            | Self::Skipped
            | Self::Unknown => false,
        }
    }

    /// The carrier took the text (whatever became of it after).
    pub fn was_handed_over(self) -> bool {
        match self {
            Self::Sent | Self::Delivered | Self::Undelivered => true,
            Self::Planned
            | Self::HeldOut
            | Self::Deferred
            | Self::Sending
            | Self::Failed
            | Self::Suppressed
            | Self::Skipped
            | Self::Unknown => false,
        }
    }
}

/// Where a release is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReleaseState {
    Planning,
    Sending,
    Paused,
    SoldOut,
    Completed,
    Cancelled,
}

str_enum!(ReleaseState {
    Planning => "planning",
    Sending => "sending",
    Paused => "paused",
    SoldOut => "sold_out",
    Completed => "completed",
    Cancelled => "cancelled",
});

impl ReleaseState {
    /// Sold out, completed or cancelled: nothing more happens to it.
    pub fn has_ended(self) -> bool {
        match self {
            Self::SoldOut | Self::Completed | Self::Cancelled => true,
            Self::Planning | Self::Sending | Self::Paused => false,
        }
    }
}

/// Where a wave of a release is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WaveState {
    Pending,
    Waiting,
    Sending,
    Done,
    Cancelled,
}

str_enum!(WaveState {
    Pending => "pending",
    Waiting => "waiting",
    Sending => "sending",
    Done => "done",
    Cancelled => "cancelled",
});

/// Where a double opt-in confirmation text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfirmationStatus {
    Planned,
    Sending,
    Sent,
    Failed,
    Unknown,
    Cancelled,
}

str_enum!(ConfirmationStatus {
    Planned => "planned",
    Sending => "sending",
    Sent => "sent",
    Failed => "failed",
    Unknown => "unknown",
    Cancelled => "cancelled",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SubscriptionStatus;

    fn round_trips<T: Copy + PartialEq + std::fmt::Debug>(
        all: &[T],
        as_str: fn(T) -> &'static str,
        parse: fn(&str) -> Option<T>,
    ) {
        let mut names = std::collections::HashSet::new();
        for &v in all {
            assert_eq!(parse(as_str(v)), Some(v), "{v:?}");
            assert!(names.insert(as_str(v)), "{v:?}: name used twice");
        }
        assert_eq!(parse("no_such_state"), None);
    }

    #[test]
    fn every_message_status_round_trips() {
        round_trips(
            MessageStatus::VARIANTS,
            MessageStatus::as_str,
            MessageStatus::parse,
        );
        assert_eq!(MessageStatus::VARIANTS.len(), 11);
    }

    #[test]
    fn every_release_state_round_trips() {
        round_trips(
            ReleaseState::VARIANTS,
            ReleaseState::as_str,
            ReleaseState::parse,
        );
        assert_eq!(ReleaseState::VARIANTS.len(), 6);
    }

    #[test]
    fn every_wave_state_round_trips() {
        round_trips(WaveState::VARIANTS, WaveState::as_str, WaveState::parse);
        assert_eq!(WaveState::VARIANTS.len(), 5);
    }

    #[test]
    fn every_confirmation_status_round_trips() {
        round_trips(
            ConfirmationStatus::VARIANTS,
            ConfirmationStatus::as_str,
            ConfirmationStatus::parse,
        );
        assert_eq!(ConfirmationStatus::VARIANTS.len(), 6);
    }

    #[test]
    fn every_subscription_status_round_trips() {
        round_trips(
            SubscriptionStatus::VARIANTS,
            SubscriptionStatus::as_str,
            SubscriptionStatus::parse,
        );
        assert_eq!(SubscriptionStatus::VARIANTS.len(), 7);
    }

    #[test]
    fn open_messages_are_the_claimable_and_the_claimed() {
        let open: Vec<_> = MessageStatus::VARIANTS
            .iter()
            .filter(|s| s.is_open())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(open, ["planned", "deferred", "sending"]);
    }
}
