//! Quiet hours: whether it is a decent local time to text someone, and if not, the first minute
//! when it is. A shopper whose exact zone is unknown is only texted when the window holds in every
//! zone of their phone's country, so nobody in a country spanning zones is woken up.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{DateTime, Duration, NaiveTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// How far ahead [`next_allowed`] looks: a week covers every weekly rhythm, plus a day for DST.
const SEARCH_LIMIT: Duration = Duration::days(8);

/// IANA `zone.tab` of tzdata 2025b, the release chrono-tz 0.10.4 compiles in (public domain):
/// one row per (country, zone), so a country's rows are all the clocks it keeps.
const ZONE_TAB: &str = include_str!("../data/zone.tab");

static ZONES_BY_REGION: LazyLock<HashMap<&'static str, Vec<Tz>>> = LazyLock::new(|| {
    let mut map: HashMap<&'static str, Vec<Tz>> = HashMap::new();
    for line in ZONE_TAB.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut cols = line.split('\t');
        let (Some(country), Some(_coordinates), Some(zone)) =
            (cols.next(), cols.next(), cols.next())
        else {
            continue;
        };
        // A zone newer than chrono-tz's data would be dropped here; a test checks none is.
        if let Ok(tz) = zone.parse::<Tz>() {
            map.entry(country).or_default().push(tz);
        }
    }
    map
});

/// Every IANA zone of a country (ISO 3166-1 alpha-2, case-insensitive); empty when the code is
/// unknown.
pub fn zones_for_region(region: &str) -> Vec<Tz> {
    ZONES_BY_REGION
        .get(region.trim().to_ascii_uppercase().as_str())
        .cloned()
        .unwrap_or_default()
}

/// [`zones_for_region`] for a code already trimmed and in capitals, without allocating: the
/// eligibility engine asks on every evaluation.
pub fn region_zones(region: &str) -> &'static [Tz] {
    ZONES_BY_REGION.get(region).map_or(&[], Vec::as_slice)
}

/// Whether a local time of day lies in the texting window `[start, end)`. A window whose end is
/// at or before its start spans midnight; `start == end` therefore allows the whole day.
pub fn in_window(local: NaiveTime, start: NaiveTime, end: NaiveTime) -> bool {
    if start < end {
        start <= local && local < end
    } else {
        local >= start || local < end
    }
}

/// Whether `at` falls in the texting window in every one of `zones` (vacuously so for none).
pub fn is_allowed(zones: &[Tz], start: NaiveTime, end: NaiveTime, at: DateTime<Utc>) -> bool {
    zones
        .iter()
        .all(|tz| in_window(at.with_timezone(tz).time(), start, end))
}

/// The first moment at or after `from` that is in the texting window in every zone: `from`
/// itself if allowed, else the first whole minute after it that is. `None` when no such minute
/// comes within eight days, e.g. when the zones are too far apart for the window to overlap.
pub fn next_allowed(
    zones: &[Tz],
    start: NaiveTime,
    end: NaiveTime,
    from: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if is_allowed(zones, start, end, from) {
        return Some(from);
    }
    let limit = from + SEARCH_LIMIT;
    let mut t = ceil_minute(from);
    // Each zone stays closed until its own next opening, so no minute before the latest of them
    // can be open in all zones: jump there and check again. Each pass moves forward.
    while t <= limit {
        let mut latest = t;
        for tz in zones {
            latest = latest.max(next_allowed_in(*tz, start, end, t, limit)?);
        }
        if latest == t {
            return Some(t);
        }
        t = latest;
    }
    None
}

/// [`next_allowed`] for one zone, from a whole minute `t`. Within a stretch of constant UTC
/// offset the local clock runs evenly, so the window opens exactly when it reads `start`; a DST
/// change on the way is found by bisection and the search goes on from there (the local clock
/// may jump into the window, or back into it when clocks fall back).
fn next_allowed_in(
    tz: Tz,
    start: NaiveTime,
    end: NaiveTime,
    mut t: DateTime<Utc>,
    limit: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    while t <= limit {
        let local = t.with_timezone(&tz).time();
        if in_window(local, start, end) {
            return Some(t);
        }
        let offset = offset_at(tz, t);
        let mut wait = (start - local).num_seconds().rem_euclid(86_400);
        if wait == 0 {
            wait = 86_400;
        }
        let opening = ceil_minute(t + Duration::seconds(wait));
        t = if offset_at(tz, opening) == offset {
            opening
        } else {
            first_change(tz, offset, t, opening)
        };
    }
    None
}

/// The first whole minute in `(lo, hi]` whose offset differs from `offset`, given that `lo` has
/// it and `hi` does not. Real zones change offset at most once within a day.
fn first_change(
    tz: Tz,
    offset: i32,
    mut lo: DateTime<Utc>,
    mut hi: DateTime<Utc>,
) -> DateTime<Utc> {
    while (hi - lo).num_minutes() > 1 {
        let mid = ceil_minute(lo + Duration::minutes((hi - lo).num_minutes() / 2));
        if offset_at(tz, mid) == offset {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

fn offset_at(tz: Tz, at: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&at.naive_utc())
        .fix()
        .local_minus_utc()
}

fn ceil_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = t
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .expect("second 0 and nanosecond 0 always exist");
    if floor == t {
        t
    } else {
        floor + Duration::minutes(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Australia, Europe};
    use proptest::prelude::*;

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn every_zone_of_the_table_is_known_to_chrono_tz() {
        let rows = ZONE_TAB
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .count();
        let parsed: usize = ZONES_BY_REGION.values().map(Vec::len).sum();
        assert_eq!(rows, parsed);
        assert!(rows > 400);
    }

    #[test]
    fn countries_map_to_their_zones() {
        assert_eq!(zones_for_region("gb"), vec![Europe::London]);
        let us = zones_for_region("US");
        assert!(us.contains(&America::New_York));
        assert!(us.contains(&chrono_tz::Pacific::Honolulu));
        assert!(us.len() > 20);
        assert!(zones_for_region("AU").contains(&Australia::Perth));
        assert!(zones_for_region("ZZ").is_empty());
        assert!(zones_for_region("").is_empty());
    }

    #[test]
    fn an_allowed_moment_is_returned_as_is() {
        let at = utc("2026-07-01T15:00:30Z"); // 11:00:30 in New York
        assert_eq!(
            next_allowed(&[America::New_York], hm(8, 0), hm(21, 0), at),
            Some(at)
        );
    }

    #[test]
    fn late_evening_waits_for_the_morning() {
        // 23:10 CST on 27 November is 05:10 UTC on the 28th; 08:00 CST is 14:00 UTC.
        let from = utc("2026-11-28T05:10:00Z");
        assert_eq!(
            next_allowed(&[America::Chicago], hm(8, 0), hm(21, 0), from),
            Some(utc("2026-11-28T14:00:00Z"))
        );
    }

    #[test]
    fn seconds_round_up_to_the_next_whole_minute() {
        let from = utc("2026-07-01T11:59:30Z"); // 07:59:30 in New York
        assert_eq!(
            next_allowed(&[America::New_York], hm(8, 0), hm(21, 0), from),
            Some(utc("2026-07-01T12:00:00Z"))
        );
    }

    #[test]
    fn a_window_that_opens_in_the_spring_forward_gap_opens_when_the_clock_jumps() {
        // New York, 8 March 2026: 02:00 EST jumps to 03:00 EDT at 07:00 UTC; 02:30 never exists.
        let from = utc("2026-03-08T05:00:00Z");
        assert_eq!(
            next_allowed(&[America::New_York], hm(2, 30), hm(21, 0), from),
            Some(utc("2026-03-08T07:00:00Z"))
        );
    }

    #[test]
    fn the_repeated_hour_in_autumn_counts_twice() {
        // New York, 1 November 2026: 02:00 EDT falls back to 01:00 EST at 06:00 UTC.
        let ny = [America::New_York];
        assert_eq!(
            next_allowed(&ny, hm(1, 30), hm(21, 0), utc("2026-11-01T04:00:00Z")),
            Some(utc("2026-11-01T05:30:00Z")),
            "01:30 EDT"
        );
        // A window 01:00-01:30 is left at 05:30 UTC and entered again when clocks fall back.
        assert_eq!(
            next_allowed(&ny, hm(1, 0), hm(1, 30), utc("2026-11-01T05:45:00Z")),
            Some(utc("2026-11-01T06:00:00Z")),
            "01:00 EST"
        );
    }

    #[test]
    fn a_window_spanning_midnight() {
        let from = utc("2026-07-01T12:00:00Z"); // 13:00 in London
        assert_eq!(
            next_allowed(&[Europe::London], hm(22, 0), hm(2, 0), from),
            Some(utc("2026-07-01T21:00:00Z"))
        );
        assert!(is_allowed(
            &[Europe::London],
            hm(22, 0),
            hm(2, 0),
            utc("2026-07-02T00:30:00Z")
        ));
    }

    #[test]
    fn zones_too_far_apart_never_overlap() {
        let zones = [Australia::Sydney, Europe::London];
        assert_eq!(
            next_allowed(&zones, hm(9, 0), hm(10, 0), utc("2026-07-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn the_united_states_as_a_whole_has_a_window_every_day_of_2026() {
        let us = zones_for_region("US");
        let mut day = utc("2026-01-01T00:00:00Z");
        while day < utc("2027-01-01T00:00:00Z") {
            let t = next_allowed(&us, hm(8, 0), hm(21, 0), day).expect("a window");
            assert!(t < day + Duration::days(1), "no window on {day}");
            assert!(is_allowed(&us, hm(8, 0), hm(21, 0), t));
            day += Duration::days(1);
        }
    }

    /// Moments near the 2026 DST changes of New York, London and Sydney.
    fn near_dst_change() -> impl Strategy<Value = DateTime<Utc>> {
        let anchors = [
            "2026-03-08T07:00:00Z",
            "2026-11-01T06:00:00Z",
            "2026-03-29T01:00:00Z",
            "2026-10-25T01:00:00Z",
            "2026-04-04T16:00:00Z",
            "2026-10-03T16:00:00Z",
        ];
        (0..anchors.len(), -4 * 86_400i64..4 * 86_400)
            .prop_map(move |(i, s)| utc(anchors[i]) + Duration::seconds(s))
    }

    fn zone_set() -> impl Strategy<Value = Vec<Tz>> {
        prop::sample::subsequence(
            vec![
                America::New_York,
                America::Chicago,
                America::Los_Angeles,
                Europe::London,
                Europe::Berlin,
                Australia::Sydney,
                Australia::Lord_Howe,
                chrono_tz::Asia::Kolkata,
                chrono_tz::Pacific::Chatham,
                America::St_Johns,
            ],
            1..=3,
        )
    }

    fn time_of_day() -> impl Strategy<Value = NaiveTime> {
        (0u32..24, prop::sample::select(vec![0u32, 15, 30, 45])).prop_map(|(h, m)| hm(h, m))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The answer is open in every zone, and no earlier whole minute since `from` is.
        #[test]
        fn next_allowed_is_the_first_allowed_minute(
            zones in zone_set(),
            start in time_of_day(),
            end in time_of_day(),
            from in near_dst_change(),
        ) {
            let found = next_allowed(&zones, start, end, from);
            let mut t = if is_allowed(&zones, start, end, from) { from } else { ceil_minute(from) };
            let stop = found.unwrap_or(from + SEARCH_LIMIT);
            while t < stop {
                prop_assert!(!is_allowed(&zones, start, end, t), "{t} was allowed before {found:?}");
                t += Duration::minutes(1);
            }
            if let Some(found) = found {
                prop_assert!(found >= from);
                prop_assert!(is_allowed(&zones, start, end, found));
                prop_assert!(found == from || found.second() == 0);
            }
        }

        #[test]
        fn the_default_window_opens_within_twelve_hours_in_one_zone(
            zones in zone_set().prop_map(|z| vec![z[0]]),
            from in near_dst_change(),
        ) {
            let t = next_allowed(&zones, hm(8, 0), hm(21, 0), from).unwrap();
            prop_assert!(t - from <= Duration::hours(12));
        }
    }
}
