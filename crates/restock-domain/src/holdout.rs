//! Holdout: the control group of a restock, drawn by a hash rather than a random draw so that
//! sending, `Explain` and the dry-run all agree, and a retried release keeps the same group.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Where a (subscription, restock) pair falls in `[0, 1)`: the first 8 bytes of
/// SHA-256(subscription id ‖ restock id) read as a fraction of 2^64. Hashing the restock too draws
/// a fresh control group each restock, so nobody is held out of every one.
pub fn position(subscription_id: Uuid, restock_id: Uuid) -> f64 {
    let digest = Sha256::new()
        .chain_update(subscription_id.as_bytes())
        .chain_update(restock_id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The top 53 bits fit an f64 exactly, so the result stays below 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether the subscription is in the restock's control group of the given share: recorded as
/// held out, not texted. A share of 0 (or NaN) holds out nobody.
pub fn in_holdout(subscription_id: Uuid, restock_id: Uuid, share: f64) -> bool {
    position(subscription_id, restock_id) < share
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `n` distinct-looking ids from a seed (splitmix64), so a case is cheap and repeatable.
    fn ids(seed: u64, n: usize) -> impl Iterator<Item = Uuid> {
        let mut state = seed;
        std::iter::repeat_with(move || {
            let mut next = || {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            };
            Uuid::from_u64_pair(next(), next())
        })
        .take(n)
    }

    fn held_share(seed: u64, restock: Uuid, share: f64) -> f64 {
        let n = 20_000;
        let held = ids(seed, n)
            .filter(|s| in_holdout(*s, restock, share))
            .count();
        held as f64 / n as f64
    }

    #[test]
    fn same_ids_same_answer() {
        let s = Uuid::from_u128(0x1234);
        let r = Uuid::from_u128(0x5678);
        let p = position(s, r);
        assert_eq!(p, position(s, r));
        assert!((0.0..1.0).contains(&p));
        assert_eq!(in_holdout(s, r, 0.3), p < 0.3);
        assert_ne!(p, position(r, s), "the two ids play different parts");
    }

    #[test]
    fn a_new_restock_draws_a_new_group() {
        let (r1, r2) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let both = ids(7, 20_000)
            .filter(|s| in_holdout(*s, r1, 0.5) && in_holdout(*s, r2, 0.5))
            .count();
        assert!((both as f64 / 20_000.0 - 0.25).abs() < 0.02);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn five_percent_holds_out_about_five_percent(seed in any::<u64>(), restock in any::<u128>()) {
            let got = held_share(seed, Uuid::from_u128(restock), 0.05);
            prop_assert!((got - 0.05).abs() <= 0.01, "held out {got}");
        }

        #[test]
        fn a_half_holds_out_about_half(seed in any::<u64>(), restock in any::<u128>()) {
            let got = held_share(seed, Uuid::from_u128(restock), 0.5);
            prop_assert!((got - 0.5).abs() <= 0.02, "held out {got}");
        }

        #[test]
        fn share_zero_holds_out_nobody(sub in any::<u128>(), restock in any::<u128>()) {
            prop_assert!(!in_holdout(Uuid::from_u128(sub), Uuid::from_u128(restock), 0.0));
        }

        #[test]
        fn assignment_is_stable_and_monotone_in_the_share(
            sub in any::<u128>(),
            restock in any::<u128>(),
            a in 0.0f64..=0.5,
            b in 0.0f64..=0.5,
        ) {
            let (s, r) = (Uuid::from_u128(sub), Uuid::from_u128(restock));
            prop_assert_eq!(in_holdout(s, r, a), in_holdout(s, r, a));
            // Raising the share only adds members: nobody leaves the group.
            if in_holdout(s, r, a.min(b)) {
                prop_assert!(in_holdout(s, r, a.max(b)));
            }
        }
    }
}
