//! Input validation: every bad field of a request is collected as a `BadRequest` field
//! violation (paths like `consent.consent_text`), so a caller fixes them all at once.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use restock_domain::{link, Phone, PhoneError};
use restock_store::waitlist::VariantDetails;

use crate::error::ApiError;
use crate::proto::v1 as pb;

/// Longest id (tenant, variant, product, location, customer, session, idempotency key).
pub const MAX_ID: usize = 128;
/// How far ahead of ours a caller's clock may be: a capture or observation time up to this much
/// in the future is clock skew between hosts, not the future.
pub const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;
const MAX_OPTIONS: usize = 10;
const MAX_OPTION_LEN: usize = 64;

/// The violations found so far.
#[derive(Debug, Default)]
pub struct Violations(Vec<(String, String)>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push((field.into(), description.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The violations as the API's own `FieldViolation` messages (for acknowledgements that
    /// report a rejection inside a successful response).
    pub fn into_field_violations(self) -> Vec<pb::FieldViolation> {
        self.0
            .into_iter()
            .map(|(field, description)| pb::FieldViolation { field, description })
            .collect()
    }

    /// `Ok` when nothing was found.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(self.0))
        }
    }

    /// The command when nothing was found and every required part is present (`parts` is
    /// `None` only where a violation was recorded), else the violations as INVALID_ARGUMENT.
    pub fn into_result<T>(self, parts: Option<T>) -> Result<T, ApiError> {
        match parts {
            Some(command) if self.0.is_empty() => Ok(command),
            _ => Err(ApiError::InvalidArgument(self.0)),
        }
    }

    /// An identifier: at most [`MAX_ID`] characters, no control characters, not blank.
    /// Answers `None` when empty (after recording a violation if `required`) or bad.
    pub fn id(&mut self, field: &str, value: &str, required: bool) -> Option<String> {
        if value.is_empty() {
            if required {
                self.add(field, "is required");
            }
            return None;
        }
        self.text_rules(field, value, MAX_ID)
            .then(|| value.to_string())
    }

    /// A UUID (a server-assigned id); `None` when empty (a violation if `required`) or bad.
    pub fn uuid(&mut self, field: &str, raw: &str, required: bool) -> Option<uuid::Uuid> {
        if raw.is_empty() {
            if required {
                self.add(field, "is required");
            }
            return None;
        }
        let id = uuid::Uuid::parse_str(raw).ok();
        if id.is_none() {
            self.add(field, "must be a UUID");
        }
        id
    }

    /// Free text of at most `max` characters; `None` when empty or bad.
    pub fn text(&mut self, field: &str, value: &str, max: usize, required: bool) -> Option<String> {
        if value.trim().is_empty() {
            if required {
                self.add(field, "is required");
            } else if !value.is_empty() {
                self.add(field, "must not be blank");
            }
            return None;
        }
        self.text_rules(field, value, max)
            .then(|| value.to_string())
    }

    fn text_rules(&mut self, field: &str, value: &str, max: usize) -> bool {
        let len = value.chars().count();
        if len > max {
            self.add(
                field,
                format!("must be at most {max} characters (got {len})"),
            );
            false
        } else if value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            self.add(field, "must not contain control characters");
            false
        } else if value.trim().is_empty() {
            self.add(field, "must not be blank");
            false
        } else {
            true
        }
    }

    /// A phone in any common format; a bad region is reported on `region_field`.
    pub fn phone(
        &mut self,
        field: &str,
        region_field: &str,
        value: &str,
        region: &str,
    ) -> Option<Phone> {
        match Phone::parse(value, region) {
            Ok(p) => Some(p),
            Err(PhoneError::Empty) => {
                self.add(field, "is required");
                None
            }
            Err(PhoneError::BadRegion) => {
                self.add(region_field, PhoneError::BadRegion.to_string());
                None
            }
            Err(PhoneError::Unparseable(why))
                if region.is_empty() && !value.trim_start().starts_with('+') =>
            {
                self.add(field, format!("cannot be read ({why}); give an international number starting with + or set default_region"));
                None
            }
            Err(e) => {
                self.add(field, e.to_string());
                None
            }
        }
    }

    /// A proto enum value: unknown numbers, and `UNSPECIFIED` where `required`, are violations.
    pub fn enumeration<E: TryFrom<i32>>(
        &mut self,
        field: &str,
        raw: i32,
        required: bool,
    ) -> Option<E> {
        if raw == 0 {
            if required {
                self.add(field, "is required");
            }
            return None;
        }
        match E::try_from(raw) {
            Ok(e) => Some(e),
            Err(_) => {
                self.add(field, format!("unknown value {raw}"));
                None
            }
        }
    }

    /// Variant options: at most 10, names and values 1-64 characters.
    pub fn options(&mut self, field: &str, map: &BTreeMap<String, String>) {
        if map.len() > MAX_OPTIONS {
            self.add(field, format!("at most {MAX_OPTIONS} entries"));
        }
        for (k, val) in map {
            self.text(&format!("{field}[{k}]"), k, MAX_OPTION_LEN, true);
            self.text(&format!("{field}[{k}]"), val, MAX_OPTION_LEN, true);
        }
    }

    /// An http(s) URL of at most 2,048 characters; `None` when empty or bad. With `hosts`
    /// (the tenant's link hosts), it must also be on one of them, without a user name or
    /// password.
    pub fn deep_link(
        &mut self,
        field: &str,
        raw: &str,
        hosts: Option<&[String]>,
    ) -> Option<String> {
        if raw.is_empty() {
            return None;
        }
        let ok = (raw.starts_with("https://") || raw.starts_with("http://"))
            && raw.len() <= 2_048
            && !raw.chars().any(|c| c.is_whitespace() || c.is_control())
            && raw
                .split("://")
                .nth(1)
                .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
        if !ok {
            self.add(field, "must be an http(s) URL of at most 2,048 characters");
            return None;
        }
        if let Some(hosts) = hosts {
            if let Err(e) = link::check(raw, hosts) {
                self.add(field, e.to_string());
                return None;
            }
        }
        Some(raw.to_string())
    }

    /// What a storefront or an inventory system says about a variant; see
    /// [`Violations::deep_link`] for `hosts`.
    pub fn variant_details(
        &mut self,
        field: &str,
        d: &pb::VariantDetails,
        hosts: Option<&[String]>,
    ) -> VariantDetails {
        self.options(&format!("{field}.options"), &d.options);
        VariantDetails {
            title: self.text(&format!("{field}.title"), &d.title, 200, false),
            options: d.options.clone(),
            deep_link: self.deep_link(&format!("{field}.deep_link"), &d.deep_link, hosts),
        }
    }

    /// When something was captured or observed: a valid timestamp, not in the future (beyond
    /// [`CLOCK_SKEW`]). Missing is a violation when `required`.
    pub fn past_time(
        &mut self,
        field: &str,
        ts: Option<&prost_types::Timestamp>,
        now: DateTime<Utc>,
        required: bool,
    ) -> Option<DateTime<Utc>> {
        let Some(ts) = ts else {
            if required {
                self.add(field, "is required");
            }
            return None;
        };
        let t = self.timestamp(field, ts)?;
        if t > now + CLOCK_SKEW {
            self.add(
                field,
                "must not be in the future (5 minutes of clock skew are allowed)",
            );
            return None;
        }
        Some(t)
    }

    /// A timestamp within [`MIN_TIME`, `MAX_TIME`]. Every prost `Timestamp` a caller sends goes
    /// through here, so no time Postgres or the business cannot take reaches the store.
    pub fn timestamp(&mut self, field: &str, ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
        let t = u32::try_from(ts.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)
            .and_then(|n| DateTime::from_timestamp(ts.seconds, n));
        match t {
            None => {
                self.add(field, "is not a valid timestamp");
                None
            }
            Some(t) if !(min_time()..=max_time()).contains(&t) => {
                self.add(
                    field,
                    "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
                );
                None
            }
            Some(t) => Some(t),
        }
    }
}

/// The earliest time the API accepts: the Unix epoch (nothing restock records happened before).
pub fn min_time() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

/// The latest time the API accepts: the end of year 9999 (RFC 3339, and the proto's own bound
/// for `google.protobuf.Timestamp`).
pub fn max_time() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 999_999_999).expect("9999-12-31T23:59:59Z")
}

/// A list's page size: 0 means the default (50), more than 500 means 500. Callers reject
/// negative sizes first.
pub fn page_size(raw: i32) -> i64 {
    match i64::from(raw) {
        n if n <= 0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded_and_clean() {
        let mut v = Violations::default();
        assert_eq!(v.id("a", "sku-1", true), Some("sku-1".into()));
        assert_eq!(v.id("b", "", true), None);
        assert_eq!(v.id("c", &"x".repeat(129), true), None);
        assert_eq!(v.id("d", "a\u{0}b", true), None);
        assert_eq!(v.id("e", "   ", true), None);
        assert_eq!(v.id("f", "", false), None);
        let fields: Vec<String> = v.0.iter().map(|(f, _)| f.clone()).collect();
        assert_eq!(fields, ["b", "c", "d", "e"]);
    }

    #[test]
    fn timestamps_are_bounded_to_1970_through_9999() {
        let ts = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
        let mut v = Violations::default();
        assert!(v.timestamp("ok", &ts(0, 0)).is_some());
        assert!(v
            .timestamp("ok", &ts(253_402_300_799, 999_999_999))
            .is_some());
        assert!(v.timestamp("a", &ts(-1, 0)).is_none());
        assert!(v.timestamp("b", &ts(253_402_300_800, 0)).is_none());
        assert!(v.timestamp("c", &ts(i64::MAX, 0)).is_none());
        assert!(v.timestamp("d", &ts(0, -1)).is_none());
        assert!(v.timestamp("e", &ts(0, 1_000_000_000)).is_none());
        let fields: Vec<String> = v.0.iter().map(|(f, _)| f.clone()).collect();
        assert_eq!(fields, ["a", "b", "c", "d", "e"]);
    }
}
