//! Consent: the kinds of ledger entries and the state a ledger leads to. A contact's state is
//! never stored on its own; it is always derived from the append-only ledger by [`derive_state`].

/// Where consent was given or withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentSource {
    Web,
    App,
    PointOfSale,
    /// A text from the phone itself: proves the owner, so it also confirms a double opt-in.
    Sms,
    Support,
    Import,
}

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentEventKind {
    OptIn,
    Confirm,
    OptOut,
}

/// The state a contact's ledger leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentState {
    None,
    PendingConfirmation,
    OptedIn,
    OptedOut,
}

macro_rules! str_enum {
    ($ty:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const VARIANTS: &'static [Self] = &[$(Self::$variant),+];
            /// The stable name stored in the database: the one mapping of this type to it.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $s),+ }
            }
            /// Reads a stored name back.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$variant),)+ _ => None }
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        #[cfg(feature = "postgres")]
        impl<'a> ::postgres_types::FromSql<'a> for $ty {
            fn from_sql(
                ty: &::postgres_types::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn ::std::error::Error + Sync + Send>> {
                let s = <&str as ::postgres_types::FromSql>::from_sql(ty, raw)?;
                Self::parse(s).ok_or_else(|| {
                    format!(concat!("unknown ", stringify!($ty), " {:?}"), s).into()
                })
            }
            fn accepts(ty: &::postgres_types::Type) -> bool {
                <&str as ::postgres_types::FromSql>::accepts(ty)
            }
        }

        #[cfg(feature = "postgres")]
        impl ::postgres_types::ToSql for $ty {
            fn to_sql(
                &self,
                ty: &::postgres_types::Type,
                out: &mut ::bytes::BytesMut,
            ) -> Result<::postgres_types::IsNull, Box<dyn ::std::error::Error + Sync + Send>> {
                <&str as ::postgres_types::ToSql>::to_sql(&self.as_str(), ty, out)
            }
            fn accepts(ty: &::postgres_types::Type) -> bool {
                <&str as ::postgres_types::ToSql>::accepts(ty)
            }
            ::postgres_types::to_sql_checked!();
        }
    };
}
pub(crate) use str_enum;

str_enum!(ConsentSource { Web => "web", App => "app", PointOfSale => "point_of_sale", Sms => "sms", Support => "support", Import => "import" });
str_enum!(ConsentEventKind { OptIn => "opt_in", Confirm => "confirm", OptOut => "opt_out" });

/// Folds a ledger (oldest first) into a state. `double_opt_in` is the tenant's policy: when set,
/// an opt-in waits for a confirmation before the phone may be texted. An opt-in after an opt-out
/// is a new consent and, under double opt-in, needs a new confirmation.
pub fn derive_state<I>(double_opt_in: bool, ledger: I) -> ConsentState
where
    I: IntoIterator<Item = ConsentEventKind>,
{
    ledger
        .into_iter()
        .fold(ConsentState::None, |state, kind| match (kind, state) {
            (ConsentEventKind::OptIn, ConsentState::OptedIn) => ConsentState::OptedIn,
            (ConsentEventKind::OptIn, _) if double_opt_in => ConsentState::PendingConfirmation,
            (ConsentEventKind::OptIn, _) => ConsentState::OptedIn,
            (ConsentEventKind::Confirm, ConsentState::PendingConfirmation) => ConsentState::OptedIn,
            (ConsentEventKind::Confirm, s) => s,
            (ConsentEventKind::OptOut, _) => ConsentState::OptedOut,
        })
}

#[cfg(test)]
mod tests {
    use super::ConsentEventKind::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_ledger_is_none() {
        assert_eq!(derive_state(true, []), ConsentState::None);
    }

    #[test]
    fn double_opt_in_waits_for_confirmation() {
        assert_eq!(
            derive_state(true, [OptIn]),
            ConsentState::PendingConfirmation
        );
        assert_eq!(derive_state(true, [OptIn, Confirm]), ConsentState::OptedIn);
        assert_eq!(derive_state(false, [OptIn]), ConsentState::OptedIn);
    }

    #[test]
    fn opt_out_wins_until_a_new_opt_in() {
        assert_eq!(derive_state(false, [OptIn, OptOut]), ConsentState::OptedOut);
        assert_eq!(
            derive_state(false, [OptIn, OptOut, Confirm]),
            ConsentState::OptedOut
        );
        assert_eq!(
            derive_state(false, [OptIn, OptOut, OptIn]),
            ConsentState::OptedIn
        );
        assert_eq!(
            derive_state(true, [OptIn, Confirm, OptOut, OptIn]),
            ConsentState::PendingConfirmation
        );
    }

    #[test]
    fn a_confirmation_without_an_opt_in_grants_nothing() {
        assert_eq!(derive_state(true, [Confirm]), ConsentState::None);
    }

    fn kind() -> impl Strategy<Value = ConsentEventKind> {
        prop_oneof![Just(OptIn), Just(Confirm), Just(OptOut)]
    }

    proptest! {
        #[test]
        fn last_opt_out_always_blocks(ledger in prop::collection::vec(kind(), 0..20), dbl in any::<bool>()) {
            let mut l = ledger.clone();
            l.push(OptOut);
            l.extend(ledger.into_iter().filter(|k| *k != OptIn));
            prop_assert_eq!(derive_state(dbl, l), ConsentState::OptedOut);
        }

        #[test]
        fn texting_allowed_only_after_an_opt_in(ledger in prop::collection::vec(kind(), 0..20), dbl in any::<bool>()) {
            if derive_state(dbl, ledger.clone()) == ConsentState::OptedIn {
                prop_assert!(ledger.contains(&OptIn));
                if dbl { prop_assert!(ledger.contains(&Confirm)); }
            }
        }
    }
}
