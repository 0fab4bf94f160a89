//! Phone numbers: parsing any common format into E.164, and redaction for logs and traces.

use std::fmt;

use phonenumber::country;

/// The calling code of a country (ISO 3166-1 alpha-2, upper case): 1 for `US` and `CA`, 44
/// for `GB`; `None` for a code the numbering plans do not know.
pub fn calling_code(region: &str) -> Option<u16> {
    phonenumber::metadata::DATABASE
        .by_id(region)
        .map(|m| m.country_code())
}

/// The calling code an E.164 number starts with (`+447700900123` → 44), without parsing the
/// whole number: calling codes are prefix-free, so the first of 1 to 3 digits that is one is it.
pub fn calling_code_of_e164(number: &str) -> Option<u16> {
    let digits = number.trim().strip_prefix('+')?;
    if digits.len() < 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    (1..=3).find_map(|len| {
        let code: u16 = digits[..len].parse().ok()?;
        phonenumber::metadata::DATABASE
            .by_code(&code)
            .is_some()
            .then_some(code)
    })
}

/// A valid phone number in E.164 form (`+14155550123`). Personal data: its `Debug` and the
/// value of [`Phone::redacted`] never show the whole number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone {
    e164: String,
    /// ISO 3166-1 alpha-2 of the number's country, when the numbering plan says it.
    region: Option<String>,
    /// The country calling code (1 for the North American plan, 44 for the UK).
    calling_code: u16,
}

/// Why a phone number was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PhoneError {
    #[error("a phone number is required")]
    Empty,
    #[error("default_region must be an ISO 3166-1 alpha-2 code such as \"US\"")]
    BadRegion,
    #[error("not a phone number: {0}")]
    Unparseable(String),
    #[error("not a valid phone number for its country")]
    Invalid,
}

impl Phone {
    /// Parses `input` in any common national or international format. A national number needs
    /// `default_region` (ISO 3166-1 alpha-2, case-insensitive).
    pub fn parse(input: &str, default_region: &str) -> Result<Self, PhoneError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(PhoneError::Empty);
        }
        if input.len() > 64 {
            return Err(PhoneError::Unparseable("longer than 64 characters".into()));
        }
        let region = match default_region.trim() {
            "" => None,
            r => Some(
                r.to_ascii_uppercase()
                    .parse::<country::Id>()
                    .map_err(|_| PhoneError::BadRegion)?,
            ),
        };
        let number = phonenumber::parse(region, input).map_err(|e| {
            // The parser's own words are precise ("invalid country code", "too short"); keep them
            // but never echo the input back (it is personal data).
            PhoneError::Unparseable(e.to_string())
        })?;
        if !phonenumber::is_valid(&number) {
            return Err(PhoneError::Invalid);
        }
        let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
        let region = number.country().id().map(|id| id.as_ref().to_string());
        let calling_code = number.code().value();
        Ok(Self {
            e164,
            region,
            calling_code,
        })
    }

    /// The number in E.164 form.
    pub fn e164(&self) -> &str {
        &self.e164
    }

    /// ISO 3166-1 alpha-2 of the number's country, if known.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The country calling code (1 for the North American plan, 44 for the UK).
    pub fn calling_code(&self) -> u16 {
        self.calling_code
    }

    /// A form safe for logs and traces: the country prefix and the last two digits.
    pub fn redacted(&self) -> Redacted<'_> {
        Redacted(&self.e164)
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.redacted())
    }
}

/// Display of a phone number with all but the first three and the last two characters masked.
pub struct Redacted<'a>(&'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(self.0))
    }
}

/// Masks a phone-like string for logs: `+14155550123` becomes `+14*******23`.
pub fn redact(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 5 {
        return "*".repeat(chars.len());
    }
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < 3 || i >= chars.len() - 2 {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_and_international_formats_agree() {
        let a = Phone::parse("(415) 555-0132", "US").unwrap();
        let b = Phone::parse("+1 415-555-0132", "").unwrap();
        let c = Phone::parse("1-415-555-0132", "us").unwrap();
        assert_eq!(a.e164(), "+14155550132");
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.region(), Some("US"));
    }

    #[test]
    fn uk_mobile_in_national_format() {
        let p = Phone::parse("07400 123456", "GB").unwrap();
        assert_eq!(p.e164(), "+447400123456");
    }

    #[test]
    fn national_number_without_region_is_refused() {
        assert!(matches!(
            Phone::parse("415 555 0132", ""),
            Err(PhoneError::Unparseable(_))
        ));
    }

    #[test]
    fn garbage_and_bad_regions_are_refused() {
        assert_eq!(Phone::parse("  ", "US"), Err(PhoneError::Empty));
        assert_eq!(
            Phone::parse("4155550132", "ZZZ"),
            Err(PhoneError::BadRegion)
        );
        assert!(Phone::parse("hello", "US").is_err());
        assert!(Phone::parse("+1 555 0", "").is_err());
    }

    #[test]
    fn redaction_hides_the_middle() {
        let p = Phone::parse("+14155550132", "").unwrap();
        assert_eq!(p.redacted().to_string(), "+14*******32");
        assert_eq!(format!("{p:?}"), "Phone(+14*******32)");
    }
}
