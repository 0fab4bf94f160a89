//! The restock text: a tenant's template filled in with the brand, the item, its link and the
//! delivery promise, the opt-out text appended, and the title shortened to keep the whole text
//! within the tenant's segment budget.
//!
//! Pure code. Only the title is ever shortened ([`fit_title`]): the link must work, the brand and
//! the opt-out text are the sender's identity and legal duty, and options and promise are short.
//! Inserted values keep their characters (an emoji title rightly makes the text UCS-2), but their
//! whitespace becomes plain spaces and invisible formatting characters go, because a pasted
//! no-break space or zero-width space would otherwise turn a GSM-7 text into UCS-2 unseen and
//! cut its room per segment from 160 to 70.

use std::collections::BTreeMap;
use std::fmt;

use crate::encoding::{fit_title, Analysis, TooLong};

/// The title used when the product has none, so the text still reads as a sentence.
pub const FALLBACK_TITLE: &str = "Your item";

/// What a text is about: the values its placeholders are filled with.
#[derive(Debug, Clone, Copy)]
pub struct TemplateInput<'a> {
    /// The tenant's display name, for `{brand}`.
    pub brand: &'a str,
    /// The product or variant title, for `{title}`; empty means [`FALLBACK_TITLE`].
    pub title: &'a str,
    /// The variant's options ("size" -> "M"), for `{options}` as "(Blue, M)" in the map's order;
    /// empty values are left out.
    pub options: &'a BTreeMap<String, String>,
    /// The per-message short link, for `{link}`: inserted verbatim, never shortened.
    pub link: &'a str,
    /// The serving location's delivery promise, for `{promise}` (followed by a space).
    pub promise: Option<&'a str>,
}

/// A text ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub body: String,
    /// The cost of `body`, which is within the budget it was rendered for.
    pub analysis: Analysis,
    /// Whether the title had to be shortened to fit (worth counting: a template that shortens
    /// most titles is too wordy).
    pub title_shortened: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template cannot be used; the message names the problem, for the tenant to fix.
    #[error("invalid template: {0}")]
    Invalid(String),
    /// The caller's link is not one: a text without a working link is worthless.
    #[error("invalid link {0:?}: a link must be non-empty and contain no whitespace")]
    InvalidLink(String),
    /// Even with the title shortened to one character the text is over budget.
    #[error(transparent)]
    TooLong(#[from] TooLong),
}

/// A placeholder of the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Brand,
    Title,
    Options,
    Link,
    Promise,
}

impl Field {
    const ALL: [Field; 5] = [
        Field::Brand,
        Field::Title,
        Field::Options,
        Field::Link,
        Field::Promise,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::Brand => "brand",
            Field::Title => "title",
            Field::Options => "options",
            Field::Link => "link",
            Field::Promise => "promise",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

/// A parsed template: parse it once when the tenant's configuration loads, render it per text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `template`, which must contain `{link}` and no placeholder other than `{brand}`,
    /// `{title}`, `{options}`, `{link}` and `{promise}`. Literal braces are not allowed: they are
    /// almost always a mistyped placeholder, and each costs two septets anyway.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = template.char_indices();
        while let Some((start, c)) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, '{')) | None => {
                                return Err(invalid(format!(
                                    "unclosed '{{' at byte {start}; placeholders are {}",
                                    known_placeholders()
                                )))
                            }
                            Some((_, c)) => name.push(c),
                        }
                    }
                    let field = Field::ALL
                        .into_iter()
                        .find(|f| f.name() == name)
                        .ok_or_else(|| {
                            invalid(format!(
                                "unknown placeholder {{{name}}} at byte {start}; placeholders are {}",
                                known_placeholders()
                            ))
                        })?;
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Field(field));
                }
                '}' => {
                    return Err(invalid(format!(
                        "unmatched '}}' at byte {start}; literal braces are not allowed"
                    )))
                }
                // Line breaks are GSM-7 and may be meant; any other whitespace becomes a space.
                '\n' | '\r' => text.push(c),
                c if c.is_whitespace() => text.push(' '),
                c if is_invisible(c) => {}
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if !parts.contains(&Part::Field(Field::Link)) {
            return Err(invalid(
                "missing {link}: every text must carry its link".to_owned(),
            ));
        }
        Ok(Template { parts })
    }

    /// Renders the text for `input`, with `opt_out_text` (when not empty) appended after a space,
    /// within `max_segments` segments, shortening the title if it must.
    pub fn render(
        &self,
        opt_out_text: &str,
        max_segments: u32,
        input: &TemplateInput<'_>,
    ) -> Result<Rendered, TemplateError> {
        if input.link.is_empty() || input.link.chars().any(char::is_whitespace) {
            return Err(TemplateError::InvalidLink(input.link.to_owned()));
        }
        let brand = clean(input.brand);
        let options = format_options(input.options);
        let promise = input
            .promise
            .map(clean)
            .filter(|p| !p.is_empty())
            .map(|p| p + " ")
            .unwrap_or_default();
        let opt_out = clean(opt_out_text);
        let title = match clean(input.title) {
            t if t.is_empty() => FALLBACK_TITLE.to_owned(),
            t => t,
        };

        let compose = |title: &str| {
            let mut raw = String::new();
            for part in &self.parts {
                raw.push_str(match part {
                    Part::Text(text) => text,
                    Part::Field(Field::Brand) => &brand,
                    Part::Field(Field::Title) => title,
                    Part::Field(Field::Options) => &options,
                    Part::Field(Field::Link) => input.link,
                    Part::Field(Field::Promise) => &promise,
                });
            }
            let mut body = tidy(&raw);
            if !opt_out.is_empty() {
                body.push(' ');
                body.push_str(&opt_out);
            }
            body
        };

        let fitted = fit_title(compose, &title, max_segments)?;
        Ok(Rendered {
            body: compose(&fitted.title),
            analysis: fitted.analysis,
            title_shortened: fitted.shortened,
        })
    }
}

impl fmt::Display for Template {
    /// The template in its normalised source form (placeholders in braces).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(text) => f.write_str(text)?,
                Part::Field(field) => write!(f, "{{{}}}", field.name())?,
            }
        }
        Ok(())
    }
}

/// Checks a tenant's template, so a bad one is refused when the configuration loads rather than
/// on the first restock.
pub fn validate(template: &str) -> Result<(), TemplateError> {
    Template::parse(template).map(drop)
}

/// Parses `template` and renders it once; see [`Template::render`]. Prefer parsing once with
/// [`Template::parse`] when rendering many texts.
pub fn render(
    template: &str,
    opt_out_text: &str,
    max_segments: u32,
    input: &TemplateInput<'_>,
) -> Result<Rendered, TemplateError> {
    Template::parse(template)?.render(opt_out_text, max_segments, input)
}

fn invalid(problem: String) -> TemplateError {
    TemplateError::Invalid(problem)
}

fn known_placeholders() -> String {
    Field::ALL
        .iter()
        .map(|f| format!("{{{}}}", f.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Characters that show nothing but would make a text UCS-2: zero-width space, word joiner,
/// byte-order mark, soft hyphen. (The zero-width joiner stays: it holds emoji sequences
/// together, and a text with emoji is UCS-2 anyway.)
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}')
}

/// An inserted value with every whitespace character (tab, line break, no-break space...) made a
/// single plain space, invisible characters removed, and the ends trimmed.
fn clean(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars().filter(|&c| !is_invisible(c)) {
        if c.is_whitespace() {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// "(Blue, M)" for the non-empty option values, or the empty string.
fn format_options(options: &BTreeMap<String, String>) -> String {
    let values: Vec<String> = options
        .values()
        .map(|v| clean(v))
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        String::new()
    } else {
        format!("({})", values.join(", "))
    }
}

/// The rendered text with the gaps left by empty placeholders closed: runs of spaces become one,
/// spaces next to a line break go, and the ends are trimmed.
fn tidy(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut space = false;
    for c in raw.chars() {
        if c == ' ' {
            space = true;
            continue;
        }
        let line_break = matches!(c, '\n' | '\r');
        if space && !line_break && !out.is_empty() && !out.ends_with(['\n', '\r']) {
            out.push(' ');
        }
        space = false;
        out.push(c);
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::encoding::{analyze, Encoding};

    const DEFAULT: &str = "{brand}: {title} {options} is back in stock. {promise}{link}";
    const STOP: &str = "Reply STOP to opt out";
    const LINK: &str = "https://ac.me/r/Xy12Ab34Cd56";

    fn shoe_options() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("size".to_owned(), "M".to_owned()),
            ("colour".to_owned(), "Blue".to_owned()),
        ])
    }

    fn input<'a>(title: &'a str, options: &'a BTreeMap<String, String>) -> TemplateInput<'a> {
        TemplateInput {
            brand: "Acme",
            title,
            options,
            link: LINK,
            promise: None,
        }
    }

    #[test]
    fn default_template_renders_options_and_promise() {
        let options = shoe_options();
        let input = TemplateInput {
            promise: Some("Same-day delivery in Paris."),
            ..input("Trail Runner 2", &options)
        };
        let r = render(DEFAULT, STOP, 2, &input).unwrap();
        assert_eq!(
            r.body,
            "Acme: Trail Runner 2 (Blue, M) is back in stock. Same-day delivery in Paris. \
             https://ac.me/r/Xy12Ab34Cd56 Reply STOP to opt out"
        );
        assert!(!r.title_shortened);
        assert_eq!(r.analysis, analyze(&r.body));
        assert_eq!(r.analysis.encoding, Encoding::Gsm7);
        assert_eq!(r.analysis.segments, 1);
    }

    #[test]
    fn default_template_closes_the_gaps_of_missing_options_and_promise() {
        let none = BTreeMap::new();
        let r = render(DEFAULT, STOP, 2, &input("Trail Runner 2", &none)).unwrap();
        assert_eq!(
            r.body,
            "Acme: Trail Runner 2 is back in stock. https://ac.me/r/Xy12Ab34Cd56 Reply STOP to opt out"
        );
        // Options with only empty values are no options; a blank promise is no promise.
        let blank = BTreeMap::from([("size".to_owned(), " ".to_owned())]);
        let input = TemplateInput {
            promise: Some("  "),
            ..input("Trail Runner 2", &blank)
        };
        assert_eq!(render(DEFAULT, STOP, 2, &input).unwrap().body, r.body);
    }

    #[test]
    fn an_empty_opt_out_text_adds_nothing() {
        let none = BTreeMap::new();
        let r = render(DEFAULT, "", 2, &input("Trail Runner 2", &none)).unwrap();
        assert_eq!(
            r.body,
            "Acme: Trail Runner 2 is back in stock. https://ac.me/r/Xy12Ab34Cd56"
        );
    }

    #[test]
    fn an_empty_title_reads_your_item() {
        let none = BTreeMap::new();
        let r = render(DEFAULT, STOP, 2, &input(" \t", &none)).unwrap();
        assert!(
            r.body.starts_with("Acme: Your item is back in stock."),
            "{}",
            r.body
        );
    }

    #[test]
    fn whitespace_in_values_becomes_plain_spaces_and_keeps_gsm7() {
        let options = BTreeMap::from([("size".to_owned(), "EU\u{00A0}42".to_owned())]);
        let input = TemplateInput {
            brand: "Acme\u{00A0}Outdoor",
            promise: Some("Same-day\tdelivery\nin Paris.\u{200B}"),
            ..input("Trail\u{00A0}Runner\r\n2\u{00AD} ", &options)
        };
        let r = render(DEFAULT, STOP, 2, &input).unwrap();
        assert_eq!(
            r.body,
            "Acme Outdoor: Trail Runner 2 (EU 42) is back in stock. Same-day delivery in Paris. \
             https://ac.me/r/Xy12Ab34Cd56 Reply STOP to opt out"
        );
        assert_eq!(r.analysis.encoding, Encoding::Gsm7);
    }

    #[test]
    fn line_breaks_in_the_template_are_kept_without_dangling_spaces() {
        let none = BTreeMap::new();
        let r = render(
            "{brand}: {title} {options}\n{promise}{link}",
            "",
            1,
            &input("Mug", &none),
        )
        .unwrap();
        assert_eq!(r.body, "Acme: Mug\nhttps://ac.me/r/Xy12Ab34Cd56");
    }

    fn long_title() -> String {
        "Ultralight Waterproof Trail Running Shoe with Recycled Mesh Upper, Vibram Outsole, \
         Reflective Heel Tab and Gusseted Tongue, Limited Edition Autumn Colourway"
            .repeat(2)
    }

    /// The shortened title is a prefix of the original ending in an ellipsis, and nothing else
    /// of the text was touched.
    fn assert_only_title_shortened(r: &Rendered, title: &str, ellipsis: &str, after: &str) {
        assert!(r.title_shortened);
        let rest = r.body.strip_prefix("Acme: ").expect("brand intact");
        let (kept, tail) = rest.split_once(ellipsis).expect("an ellipsis");
        assert!(title.starts_with(kept), "{kept:?}");
        assert_eq!(tail, after);
    }

    #[test]
    fn a_long_title_is_shortened_to_one_segment_with_link_and_opt_out_intact() {
        let (title, options) = (long_title(), shoe_options());
        let r = render(DEFAULT, STOP, 1, &input(&title, &options)).unwrap();
        assert_eq!(r.analysis.segments, 1);
        assert!(r.analysis.units <= 160);
        assert_eq!(r.analysis, analyze(&r.body));
        assert_only_title_shortened(
            &r,
            &title,
            "...",
            " (Blue, M) is back in stock. https://ac.me/r/Xy12Ab34Cd56 Reply STOP to opt out",
        );
    }

    #[test]
    fn a_long_title_uses_the_whole_budget_of_two_segments() {
        let (title, options) = (long_title(), shoe_options());
        let r = render(DEFAULT, STOP, 2, &input(&title, &options)).unwrap();
        assert_eq!(r.analysis.segments, 2);
        // Cut at a word: one more word would not fit, so the text is well past one segment.
        assert!(r.analysis.units > 2 * 153 - 20, "{:?}", r.analysis);
        assert_only_title_shortened(
            &r,
            &title,
            "...",
            " (Blue, M) is back in stock. https://ac.me/r/Xy12Ab34Cd56 Reply STOP to opt out",
        );
    }

    #[test]
    fn an_emoji_title_makes_the_text_ucs2_within_70_units() {
        let none = BTreeMap::new();
        let short = input("Runner 👟", &none);
        let r = render("{title} {link}", "", 1, &short).unwrap();
        assert_eq!(r.body, "Runner 👟 https://ac.me/r/Xy12Ab34Cd56");
        assert_eq!(r.analysis.encoding, Encoding::Ucs2);
        assert_eq!(r.analysis.units, 9 + 1 + 28);

        // 70 units exactly fit one segment: "Runner 👟" (9), a space, 31 x, a space, the link (28).
        let exact = format!("Runner 👟 {}", "x".repeat(31));
        let r = render("{title} {link}", "", 1, &input(&exact, &none)).unwrap();
        assert_eq!((r.analysis.units, r.analysis.segments), (70, 1));
        assert!(!r.title_shortened);

        // One unit more and the title is cut, with the one-unit ellipsis.
        let over = format!("{exact}x");
        let r = render("{title} {link}", "", 1, &input(&over, &none)).unwrap();
        assert!(r.title_shortened);
        assert_eq!(r.body, "Runner 👟… https://ac.me/r/Xy12Ab34Cd56");
    }

    #[test]
    fn an_emoji_title_respects_67_units_per_segment_when_multipart() {
        let none = BTreeMap::new();
        let title = format!("👟 {}", long_title());
        let r = render(DEFAULT, STOP, 2, &input(&title, &none)).unwrap();
        assert_eq!(r.analysis.encoding, Encoding::Ucs2);
        assert_eq!(r.analysis.segments, 2);
        assert!(r.analysis.units > 70 && r.analysis.units <= 2 * 67);
        assert_eq!(r.analysis, analyze(&r.body));
        assert_only_title_shortened(
            &r,
            &title,
            "…",
            " is back in stock. https://ac.me/r/Xy12Ab34Cd56 Reply STOP to opt out",
        );
    }

    #[test]
    fn extension_characters_count_two_septets_at_the_160_boundary() {
        let none = BTreeMap::new();
        // Title, space, 28-character link: a title of 131 septets makes 160.
        let fits = format!("€{}", "a".repeat(129)); // 130 characters, 131 septets
        let r = render("{title} {link}", "", 1, &input(&fits, &none)).unwrap();
        assert_eq!((r.analysis.units, r.analysis.segments), (160, 1));
        assert!(!r.title_shortened);

        // As many characters, one septet more: the title has to give up characters.
        let over = format!("€[{}", "a".repeat(128));
        assert_eq!(analyze(&format!("{over} {LINK}")).segments, 2);
        let r = render("{title} {link}", "", 1, &input(&over, &none)).unwrap();
        assert!(r.title_shortened);
        assert_eq!(r.analysis.encoding, Encoding::Gsm7);
        assert_eq!(r.analysis.segments, 1);
        // 160 - 29 for the link - 3 for "..." - 4 for "€[" leaves 124 a.
        assert_eq!(r.body, format!("€[{}... {LINK}", "a".repeat(124)));
        assert_eq!(r.analysis.units, 160);
    }

    #[test]
    fn a_template_too_long_for_the_budget_is_refused() {
        let none = BTreeMap::new();
        let wordy = format!("{{title}} {} {{link}}", "blah".repeat(40));
        let err = render(&wordy, STOP, 1, &input("Mug", &none)).unwrap_err();
        assert!(
            matches!(
                err,
                TemplateError::TooLong(TooLong {
                    max_segments: 1,
                    ..
                })
            ),
            "{err:?}"
        );
        assert!(render(&wordy, STOP, 2, &input("Mug", &none)).is_ok());
    }

    #[test]
    fn a_bad_link_is_refused() {
        let none = BTreeMap::new();
        for link in ["", "https://ac.me/r/ a"] {
            let input = TemplateInput {
                link,
                ..input("Mug", &none)
            };
            assert_eq!(
                render(DEFAULT, STOP, 1, &input),
                Err(TemplateError::InvalidLink(link.to_owned()))
            );
        }
    }

    #[test]
    fn invalid_templates_are_rejected_naming_the_problem() {
        for (template, problem) in [
            ("{brand}: {title} is back", "missing {link}"),
            ("{brand}: {price} {link}", "unknown placeholder {price}"),
            ("{brand}: {Title} {link}", "unknown placeholder {Title}"),
            ("{} {link}", "unknown placeholder {}"),
            ("{brand: {link}", "unclosed '{' at byte 0"),
            ("{link} {title", "unclosed '{' at byte 7"),
            ("{{link}}", "unclosed '{' at byte 0"),
            ("{link} 50% off}", "unmatched '}' at byte 14"),
        ] {
            match validate(template) {
                Err(TemplateError::Invalid(message)) => {
                    assert!(message.contains(problem), "{template:?}: {message}")
                }
                other => panic!("{template:?}: {other:?}"),
            }
        }
        validate(DEFAULT).unwrap();
        validate("{link}").unwrap();
    }

    #[test]
    fn a_parsed_template_displays_as_its_source() {
        let template = Template::parse(DEFAULT).unwrap();
        assert_eq!(template.to_string(), DEFAULT);
        // A no-break space in the template itself would make every text UCS-2.
        let nbsp = Template::parse("{title}\u{00A0}{link}").unwrap();
        assert_eq!(nbsp.to_string(), "{title} {link}");
    }

    /// Titles from every corner: GSM-7, extension characters, emoji and joined sequences,
    /// combining accents, all kinds of whitespace and invisible characters, and anything else.
    fn any_title() -> impl Strategy<Value = String> {
        let pieces = prop_oneof![
            4 => "[A-Za-z0-9]{1,12}",
            2 => "[ \t\n\u{00A0}\u{2003}\u{200B}\u{00AD}]{1,3}",
            1 => "[€\\[\\]{}|~^\\\\]{1,4}",
            1 => "[éÇ…–’™Ж中😀👍🏽\u{0301}\u{200D}]{1,4}",
            1 => any::<String>(),
        ];
        prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn any_title_renders_within_budget_with_the_link_verbatim(
            title in any_title(),
            with_options in any::<bool>(),
            promise in prop::option::of(Just("Same-day delivery in Paris.")),
            max_segments in 1u32..=4,
        ) {
            let options = if with_options { shoe_options() } else { BTreeMap::new() };
            let input = TemplateInput { promise, ..input(&title, &options) };
            match render(DEFAULT, STOP, max_segments, &input) {
                Ok(r) => {
                    prop_assert!(r.analysis.segments >= 1);
                    prop_assert!(r.analysis.segments <= max_segments, "{r:?}");
                    prop_assert_eq!(r.analysis, analyze(&r.body));
                    prop_assert!(r.body.contains(&format!(" {LINK} ")), "{}", r.body);
                    prop_assert!(r.body.starts_with("Acme: "));
                    let stop_suffix = format!(" {STOP}");
                    prop_assert!(r.body.ends_with(&stop_suffix));
                    prop_assert!(!r.body.contains("  "), "{:?}", r.body);
                    // No whitespace but plain spaces sneaks in from a title.
                    prop_assert!(r.body.chars().all(|c| c == ' ' || !c.is_whitespace()));
                }
                Err(err) => {
                    // Only one UCS-2 segment (70 units) is too small for the rest of the text.
                    let TemplateError::TooLong(too_long) = err else {
                        return Err(TestCaseError::fail(format!("{err:?}")));
                    };
                    prop_assert_eq!(max_segments, 1);
                    prop_assert_eq!(too_long.shortest.encoding, Encoding::Ucs2);
                }
            }
        }
    }
}
