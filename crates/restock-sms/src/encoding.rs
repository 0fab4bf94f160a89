//! How a text travels as SMS: GSM-7 or UCS-2, how many units it takes and how many segments
//! (billed messages) it becomes, and shortening a product title to keep a text within budget.
//!
//! Pure code: the rules are those of GSM 03.38 / 03.40 as `SMS.md` states them. One character
//! outside the GSM-7 alphabet makes the whole text UCS-2, which cuts a segment from 160 to 70
//! characters, so the choice of every character (an ellipsis, a dash, a quote) is a cost decision.

use std::fmt;

/// The alphabet a text is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// 7-bit GSM 03.38 default alphabet (with its extension table through the escape).
    Gsm7,
    /// UCS-2 as carriers count it: UTF-16 code units, a character outside the BMP taking two.
    Ucs2,
}

impl Encoding {
    /// The name stored with a message and shown in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        }
    }

    /// Units that fit in a text sent as one segment.
    pub fn single_capacity(self) -> u32 {
        match self {
            Encoding::Gsm7 => 160,
            Encoding::Ucs2 => 70,
        }
    }

    /// Units per segment of a multipart text: the concatenation header takes the rest.
    pub fn multipart_capacity(self) -> u32 {
        match self {
            Encoding::Gsm7 => 153,
            Encoding::Ucs2 => 67,
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a text costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Analysis {
    pub encoding: Encoding,
    /// Septets for GSM-7 (an extension character counts two), UTF-16 code units for UCS-2.
    pub units: u32,
    /// Segments the provider bills; 0 only for the empty text, which cannot be sent.
    pub segments: u32,
}

/// The ellipsis that keeps a GSM-7 text GSM-7 ("…" is not in the alphabet).
pub const GSM7_ELLIPSIS: &str = "...";
/// The ellipsis for a text that is UCS-2 anyway: one unit instead of three.
pub const UCS2_ELLIPSIS: &str = "…";

/// Septets `c` takes in GSM-7: 1 for the basic set, 2 for the extension table (escape plus
/// the character), `None` when GSM-7 cannot carry it.
pub fn gsm7_septets(c: char) -> Option<u32> {
    match c {
        'A'..='Z' | 'a'..='z' | '0'..='9' => Some(1),
        ' ' | '\n' | '\r' => Some(1),
        '@' | '£' | '$' | '¥' | '_' | '!' | '"' | '#' | '¤' | '%' | '&' | '\'' | '(' | ')'
        | '*' | '+' | ',' | '-' | '.' | '/' | ':' | ';' | '<' | '=' | '>' | '?' | '¡' | '§'
        | '¿' => Some(1),
        'è' | 'é' | 'ù' | 'ì' | 'ò' | 'Ç' | 'Ø' | 'ø' | 'Å' | 'å' | 'Æ' | 'æ' | 'ß' | 'É' | 'Ä'
        | 'Ö' | 'Ñ' | 'Ü' | 'ä' | 'ö' | 'ñ' | 'ü' | 'à' => Some(1),
        // Greek capitals of the basic set (the letters, not the look-alike math symbols).
        'Δ' | 'Φ' | 'Γ' | 'Λ' | 'Ω' | 'Π' | 'Ψ' | 'Σ' | 'Θ' | 'Ξ' => Some(1),
        '\u{0C}' | '^' | '{' | '}' | '\\' | '[' | '~' | ']' | '|' | '€' => Some(2),
        _ => None,
    }
}

/// Whether every character of `text` has a GSM-7 encoding.
pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| gsm7_septets(c).is_some())
}

/// Encoding, units and segments of `text`.
///
/// In a multipart text an escape pair (GSM-7) or a surrogate pair (UCS-2) is never split
/// across segments, so a segment may hold 152 septets or 66 code units: segments are packed
/// greedily, which is what handsets and providers do.
pub fn analyze(text: &str) -> Analysis {
    let encoding = if is_gsm7(text) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    };
    let width = |c: char| match encoding {
        Encoding::Gsm7 => gsm7_septets(c).unwrap_or(1),
        Encoding::Ucs2 => c.len_utf16() as u32,
    };
    let units: u32 = text.chars().map(width).sum();
    let segments = if units == 0 {
        0
    } else if units <= encoding.single_capacity() {
        1
    } else {
        let capacity = encoding.multipart_capacity();
        let (mut segments, mut used) = (1, 0);
        for w in text.chars().map(width) {
            if used + w > capacity {
                segments += 1;
                used = 0;
            }
            used += w;
        }
        segments
    };
    Analysis {
        encoding,
        units,
        segments,
    }
}

/// A title that keeps the rendered text within budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    /// The title to render: the original, or a prefix of it with an ellipsis.
    pub title: String,
    /// The cost of the text rendered with `title`.
    pub analysis: Analysis,
    pub shortened: bool,
}

/// Even the shortest form of the title leaves the text over budget: the template itself is
/// too long, which is a tenant configuration problem, not something to fix per message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the text needs {} segments even with the title shortened to its first character, over the budget of {max_segments}", shortest.segments)]
pub struct TooLong {
    pub max_segments: u32,
    /// The cost of the text with the shortest title tried.
    pub shortest: Analysis,
}

/// Shortens `title` so that `render(title)` takes at most `max_segments` segments.
///
/// The title is returned unchanged when it fits. Otherwise the longest prefix that fits is cut
/// at a word boundary (trailing punctuation dropped) and ended with an ellipsis: `...` when the
/// text would be GSM-7 with it, so shortening never flips a text into UCS-2 and halves its room;
/// `…` (one unit) when the text is UCS-2 anyway. Only when not even the first word fits is a word
/// cut between characters (never inside a combining sequence). `render` is called once per
/// candidate, longest first.
pub fn fit_title(
    render: impl Fn(&str) -> String,
    title: &str,
    max_segments: u32,
) -> Result<Fitted, TooLong> {
    let fits = |a: &Analysis| a.segments <= max_segments;
    let whole = analyze(&render(title));
    if fits(&whole) {
        return Ok(Fitted {
            title: title.to_owned(),
            analysis: whole,
            shortened: false,
        });
    }

    let mut shortest = whole;
    for prefix in word_prefixes(title).chain(char_prefixes(title)) {
        let ellipsis = if is_gsm7(&render(prefix)) {
            GSM7_ELLIPSIS
        } else {
            UCS2_ELLIPSIS
        };
        let candidate = format!("{prefix}{ellipsis}");
        let analysis = analyze(&render(&candidate));
        if fits(&analysis) {
            return Ok(Fitted {
                title: candidate,
                analysis,
                shortened: true,
            });
        }
        shortest = analysis;
    }
    Err(TooLong {
        max_segments,
        shortest,
    })
}

/// Prefixes of `title` ending at a word boundary, longest first, without trailing separators.
fn word_prefixes(title: &str) -> impl Iterator<Item = &str> {
    let mut ends: Vec<usize> = title
        .char_indices()
        .filter(|&(i, c)| c.is_whitespace() && i > 0)
        .map(|(i, _)| i)
        .collect();
    ends.reverse();
    let mut last: Option<&str> = None;
    ends.into_iter().filter_map(move |end| {
        let prefix = trim_separators(&title[..end]);
        // A run of spaces or "A - B" gives the same prefix more than once.
        if prefix.is_empty() || last == Some(prefix) {
            return None;
        }
        last = Some(prefix);
        Some(prefix)
    })
}

/// The first word, then its prefixes cut between characters, longest first, down to one
/// character. (The whole word is usually a word prefix already; not when it is all punctuation.)
fn char_prefixes(title: &str) -> impl Iterator<Item = &str> {
    let title = title.trim_start();
    let first_word = title.split(char::is_whitespace).next().unwrap_or("");
    let mut ends: Vec<usize> = first_word
        .char_indices()
        .skip(1)
        .filter(|&(i, c)| !continues_previous(c) && !first_word[..i].ends_with('\u{200D}'))
        .map(|(i, _)| i)
        .chain((!first_word.is_empty()).then_some(first_word.len()))
        .collect();
    ends.reverse();
    ends.into_iter().map(move |end| &first_word[..end])
}

/// Characters that belong to the one before them: cutting before them would leave a broken
/// glyph (an accent without its letter, half of a joined emoji, a lone skin tone).
fn continues_previous(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'      // combining diacritics
        | '\u{200D}'                 // zero-width joiner
        | '\u{20E3}'                 // combining enclosing keycap
        | '\u{FE00}'..='\u{FE0F}'    // variation selectors
        | '\u{1F3FB}'..='\u{1F3FF}'  // skin tone modifiers
        | '\u{E0020}'..='\u{E007F}') // tag characters (flag sequences)
}

fn trim_separators(s: &str) -> &str {
    s.trim_end_matches(|c: char| c.is_whitespace() || ",;:-–—/|(&+".contains(c))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Characters of the GSM-7 basic set, the extension table, and beyond, for generators.
    const BASIC: &str =
        "ABCXYZabcxyz0189 \n\r@£$¥_!\"#¤%&'()*+,-./:;<=>?¡§¿èéùìòÇØøÅåÆæßÉÄÖÑÜäöñüàΔΦΓΛΩΠΨΣΘΞ";
    const EXTENSION: &str = "\u{0C}^{}\\[~]|€";
    const OTHER: &str = "…–—’“”™çÁíóúЖ中😀👍🏽\u{0301}";

    fn from_alphabet(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
        let chars: Vec<char> = alphabet.chars().collect();
        prop::collection::vec(prop::sample::select(chars), 0..max)
            .prop_map(|v| v.into_iter().collect())
    }

    fn any_text(max: usize) -> impl Strategy<Value = String> {
        let all: &'static str = Box::leak(format!("{BASIC}{EXTENSION}{OTHER}").into_boxed_str());
        prop_oneof![
            from_alphabet(BASIC, max),
            from_alphabet(
                Box::leak(format!("{BASIC}{EXTENSION}").into_boxed_str()),
                max
            ),
            from_alphabet(all, max),
        ]
    }

    fn words() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                4 => "[A-Za-z0-9]{1,12}",
                1 => "[A-Za-zé€…😀™-]{1,8}",
                1 => Just("-".to_owned()),
            ],
            1..12,
        )
        .prop_map(|w| w.join(" "))
    }

    #[test]
    fn basic_set_characters_are_one_septet() {
        for c in BASIC.chars() {
            assert_eq!(gsm7_septets(c), Some(1), "{c:?}");
        }
        for c in EXTENSION.chars() {
            assert_eq!(gsm7_septets(c), Some(2), "{c:?}");
        }
        for c in OTHER.chars() {
            assert_eq!(gsm7_septets(c), None, "{c:?}");
        }
    }

    #[test]
    fn single_segment_limits_are_160_septets_and_70_units() {
        let gsm = "a".repeat(160);
        assert_eq!(
            analyze(&gsm),
            Analysis {
                encoding: Encoding::Gsm7,
                units: 160,
                segments: 1
            }
        );
        assert_eq!(analyze(&format!("{gsm}a")).segments, 2);
        let ucs = format!("{}Ж", "a".repeat(69));
        assert_eq!(
            analyze(&ucs),
            Analysis {
                encoding: Encoding::Ucs2,
                units: 70,
                segments: 1
            }
        );
        assert_eq!(analyze(&format!("{ucs}a")).segments, 2);
    }

    #[test]
    fn extension_characters_count_two_septets() {
        let a = analyze("Only 5€ {today}");
        assert_eq!(a.encoding, Encoding::Gsm7);
        assert_eq!(a.units, 18);
        // 80 euro signs fill one segment exactly; one more makes it multipart.
        assert_eq!(analyze(&"€".repeat(80)).segments, 1);
        assert_eq!(analyze(&"€".repeat(81)).segments, 2);
    }

    #[test]
    fn one_character_outside_gsm7_makes_the_whole_text_ucs2() {
        let a = analyze("Back in stock… grab it");
        assert_eq!(a.encoding, Encoding::Ucs2);
        assert_eq!(a.units, 22);
        let emoji = analyze("Hi 😀");
        assert_eq!((emoji.encoding, emoji.units), (Encoding::Ucs2, 5));
    }

    #[test]
    fn an_escape_pair_is_never_split_across_segments() {
        // 152 septets, then "€" (2) would straddle the 153-septet boundary: it opens segment 2.
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(analyze(&text).units, 306);
        // Without the rule 306 septets would be exactly 2 segments.
        assert_eq!(analyze(&text).segments, 3);
        assert_eq!(analyze(&"a".repeat(306)).segments, 2);
    }

    #[test]
    fn a_surrogate_pair_is_never_split_across_segments() {
        let text = format!("{}😀{}", "Ж".repeat(66), "Ж".repeat(66));
        assert_eq!(analyze(&text).units, 134);
        assert_eq!(analyze(&text).segments, 3);
        assert_eq!(analyze(&"Ж".repeat(134)).segments, 2);
    }

    #[test]
    fn the_empty_text_has_no_segment() {
        assert_eq!(analyze("").segments, 0);
    }

    fn template(title: &str) -> String {
        format!("Good news! {title} is back in stock at Acme. Shop: https://ac.me/r/Xy12Ab34Cd56 Reply STOP to opt out")
    }

    #[test]
    fn a_title_that_fits_is_unchanged() {
        let fitted = fit_title(template, "Trail Runner 2 (Blue, 42)", 1).unwrap();
        assert_eq!(fitted.title, "Trail Runner 2 (Blue, 42)");
        assert!(!fitted.shortened);
        assert_eq!(fitted.analysis.segments, 1);
    }

    #[test]
    fn a_long_title_is_cut_at_a_word_with_a_gsm7_ellipsis() {
        let title = "Ultralight Waterproof Trail Running Shoe with Recycled Upper, Limited Edition";
        let fitted = fit_title(template, title, 1).unwrap();
        assert!(fitted.shortened);
        assert!(fitted.title.ends_with("..."), "{}", fitted.title);
        assert_eq!(fitted.analysis.encoding, Encoding::Gsm7);
        assert_eq!(fitted.analysis.segments, 1);
        let kept = fitted.title.trim_end_matches("...");
        assert!(title.starts_with(kept));
        // Cut where a word ends, with no trailing comma.
        assert!(title[kept.len()..].starts_with([' ', ',']));
        assert!(!kept.ends_with(','));
    }

    #[test]
    fn a_ucs2_text_gets_the_one_unit_ellipsis() {
        let title = "Café Crème Mug — Limited Édition Ceramic Set of Four, Hand-glazed in Portugal";
        let fitted = fit_title(
            |t| format!("{t} is back 😀 Reply STOP to opt out"),
            title,
            1,
        )
        .unwrap();
        assert!(fitted.title.ends_with('…'), "{}", fitted.title);
        assert_eq!(fitted.analysis.encoding, Encoding::Ucs2);
        assert!(fitted.analysis.segments <= 1);
    }

    #[test]
    fn shortening_drops_the_character_that_forced_ucs2() {
        // The trademark sign is not GSM-7; cutting before it brings the text back to GSM-7.
        let title = format!("{} Pro™", "Everyday Canvas Tote Bag".repeat(2));
        let fitted = fit_title(template, &title, 1).unwrap();
        assert_eq!(fitted.analysis.encoding, Encoding::Gsm7);
        assert!(fitted.title.ends_with("..."));
    }

    #[test]
    fn a_template_too_long_for_the_budget_is_an_error() {
        let err = fit_title(|t| format!("{t} {}", "x".repeat(200)), "Shoe", 1).unwrap_err();
        assert_eq!(err.max_segments, 1);
        assert_eq!(err.shortest.segments, 2);
    }

    #[test]
    fn a_first_word_too_long_is_cut_between_characters_not_inside_a_sequence() {
        let title = format!("{}e\u{0301}tude", "x".repeat(20));
        let fitted = fit_title(|t| format!("{t}{}", "Ж".repeat(48)), &title, 1).unwrap();
        // 70 - 48 - 1 for "…" leaves 21 units: 20 x and the "e" without its accent, so the cut
        // comes before the "e".
        assert_eq!(fitted.title, format!("{}…", "x".repeat(20)));
    }

    proptest! {
        #[test]
        fn segments_never_decrease_when_text_grows(a in any_text(400), b in any_text(400)) {
            let before = analyze(&a);
            let after = analyze(&format!("{a}{b}"));
            prop_assert!(after.segments >= before.segments, "{before:?} -> {after:?}");
            prop_assert!(after.units >= before.units || after.encoding != before.encoding);
        }

        #[test]
        fn a_basic_gsm7_text_of_n_septets_takes_the_documented_segments(text in from_alphabet(BASIC, 1200)) {
            let n = text.chars().count() as u32;
            let a = analyze(&text);
            prop_assert_eq!(a.encoding, Encoding::Gsm7);
            prop_assert_eq!(a.units, n);
            let expected = match n { 0 => 0, 1..=160 => 1, _ => n.div_ceil(153) };
            prop_assert_eq!(a.segments, expected);
        }

        #[test]
        fn pairs_cost_at_most_one_segment_per_segment(text in any_text(1200)) {
            let a = analyze(&text);
            let (single, multi) = (a.encoding.single_capacity(), a.encoding.multipart_capacity());
            let lower = match a.units { 0 => 0, u if u <= single => 1, u => u.div_ceil(multi) };
            // Each segment loses at most one unit to an unsplit pair.
            let upper = match a.units { 0 => 0, u if u <= single => 1, u => u.div_ceil(multi - 1) };
            prop_assert!((lower..=upper).contains(&a.segments), "{a:?}");
        }

        #[test]
        fn fit_title_stays_within_budget_and_keeps_a_prefix(
            title in words(),
            filler in 0usize..300,
            emoji in any::<bool>(),
            max in 1u32..4,
        ) {
            let render = |t: &str| {
                format!("{t} is back!{} {} Reply STOP", if emoji { " 😀" } else { "" }, "z".repeat(filler))
            };
            match fit_title(render, &title, max) {
                Ok(fitted) => {
                    prop_assert!(fitted.analysis.segments <= max);
                    prop_assert_eq!(fitted.analysis, analyze(&render(&fitted.title)));
                    if fitted.shortened {
                        let kept = fitted.title
                            .strip_suffix(GSM7_ELLIPSIS)
                            .or_else(|| fitted.title.strip_suffix(UCS2_ELLIPSIS));
                        prop_assert!(kept.is_some(), "{}", fitted.title);
                        let kept = kept.unwrap();
                        prop_assert!(!kept.is_empty());
                        prop_assert!(title.starts_with(kept), "{kept:?} of {title:?}");
                        // The "..." ellipsis never turns a GSM-7 text into UCS-2.
                        if is_gsm7(&render(kept)) {
                            prop_assert_eq!(fitted.analysis.encoding, Encoding::Gsm7);
                        }
                    } else {
                        prop_assert_eq!(&fitted.title, &title);
                    }
                }
                Err(err) => {
                    // Not even the first character with an ellipsis fits.
                    let first: String = title.trim_start().chars().take(1).collect();
                    let ellipsis = if is_gsm7(&render(&first)) { GSM7_ELLIPSIS } else { UCS2_ELLIPSIS };
                    let shortest = format!("{first}{ellipsis}");
                    prop_assert!(analyze(&render(&shortest)).segments > max);
                    prop_assert!(analyze(&render(&title)).segments > max);
                    prop_assert!(err.shortest.segments > max);
                }
            }
        }
    }
}
