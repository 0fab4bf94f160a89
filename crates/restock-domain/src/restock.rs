//! Restock detection: when a stock level crossing counts as a restock. Hysteresis keeps a level
//! that flaps around the threshold from starting a second restock: once a restock starts, the
//! level must fall to the re-arm level before another can.

/// The two levels of a tenant's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    /// A restock starts when available-to-sell reaches this (at least 1).
    pub threshold: i64,
    /// The level at or below which a (variant, location) is sold out again and re-armed.
    pub rearm_level: i64,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Self {
            threshold: 1,
            rearm_level: 0,
        }
    }
}

/// The detector's state for one stock level, stored with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detector {
    /// Whether the next crossing of the threshold starts a restock. A level restock has never
    /// seen is armed: shoppers wait for it because it was unavailable to them.
    pub armed: bool,
}

impl Default for Detector {
    fn default() -> Self {
        Self { armed: true }
    }
}

impl Detector {
    /// Feeds a new available-to-sell level; answers the next state and whether a restock
    /// starts now. Only available-to-sell counts: callers never pass on-order units.
    pub fn observe(self, available: i64, h: Hysteresis) -> (Detector, bool) {
        if self.armed && available >= h.threshold {
            (Detector { armed: false }, true)
        } else if !self.armed && available <= h.rearm_level {
            (Detector { armed: true }, false)
        } else {
            (self, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sold_out_to_in_stock_is_a_restock() {
        let h = Hysteresis::default();
        let (d, started) = Detector::default().observe(5, h);
        assert!(started);
        assert!(!d.armed);
        let (d, started) = d.observe(3, h);
        assert!(!started, "still in stock: the same restock");
        let (d, _) = d.observe(0, h);
        assert!(d.armed, "sold out again re-arms");
        assert!(d.observe(1, h).1);
    }

    #[test]
    fn flapping_between_rearm_and_threshold_starts_nothing() {
        let h = Hysteresis {
            threshold: 5,
            rearm_level: 1,
        };
        let (d, started) = Detector::default().observe(5, h);
        assert!(started);
        let mut d = d;
        for level in [4, 2, 5, 3, 6, 2, 9] {
            let (next, started) = d.observe(level, h);
            assert!(
                !started,
                "level {level} above the re-arm level must not restart"
            );
            d = next;
        }
        let (d, _) = d.observe(1, h);
        assert!(d.observe(5, h).1);
    }

    proptest! {
        /// Between two restocks the level always went down to the re-arm level.
        #[test]
        fn every_restock_follows_a_sell_out(levels in prop::collection::vec(-5i64..20, 1..200), threshold in 1i64..10, gap in 1i64..5) {
            let h = Hysteresis { threshold, rearm_level: threshold - gap };
            let mut d = Detector::default();
            let mut sold_out_since_last = true;
            for level in levels {
                let (next, started) = d.observe(level, h);
                if started {
                    prop_assert!(sold_out_since_last);
                    prop_assert!(level >= threshold);
                    sold_out_since_last = false;
                }
                if level <= h.rearm_level {
                    sold_out_since_last = true;
                }
                d = next;
            }
        }
    }
}
