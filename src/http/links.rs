//! Tracked links, `GET /r/{token}`: records a click on the text the token belongs to and
//! redirects to the variant's page with the variant preselected and UTM parameters.
//!
//! A token is 128 random bits, so it cannot be guessed; a malformed token and an unknown one
//! get the same answer, so probing learns nothing either.

use std::fmt::Write as _;
use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use restock_domain::link;
use restock_store::outcomes::ClickOutcome;

use super::{plain, HttpError};
use crate::state::AppState;

/// 16 random bytes in unpadded base64url.
const TOKEN_LEN: usize = 22;
/// User agents are kept for spotting link scanners, not for fingerprinting: a prefix is
/// enough.
const USER_AGENT_MAX_CHARS: usize = 300;
const NOT_FOUND_BODY: &str = "not found\n";
/// Client addresses remembered by the limiter before idle ones are forgotten.
const LIMITER_KEYS: usize = 100_000;

pub use crate::state::{limiter, LinkLimiter};

pub(super) async fn follow(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if state.link_limiter.len() > LIMITER_KEYS {
        state.link_limiter.retain_recent();
    }
    if let Err(not_until) = state.link_limiter.check_key(&peer.ip()) {
        state.metrics.link_request("rate_limited");
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, seconds.max(1).to_string())],
            "too many requests\n",
        )
            .into_response();
    }
    match redirect(&state, &token, &method, &headers).await {
        Ok(Some(location)) => {
            state.metrics.link_request("redirected");
            (
                StatusCode::FOUND,
                [
                    (header::LOCATION, location),
                    // Each request is a click to record, and the token must not leak to the
                    // shop's analytics through the Referer.
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                    (
                        header::REFERRER_POLICY,
                        HeaderValue::from_static("no-referrer"),
                    ),
                ],
            )
                .into_response()
        }
        Ok(None) => plain(StatusCode::NOT_FOUND, NOT_FOUND_BODY),
        Err(e) => {
            state.metrics.link_request("error");
            e.into_response()
        }
    }
}

/// Where the token leads, with the click recorded; `None` answers 404 (and is counted here).
async fn redirect(
    state: &AppState,
    token: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, HttpError> {
    if !well_formed(token) {
        state.metrics.link_request("not_found");
        return Ok(None);
    }
    let Some(target) = state
        .store
        .link_target(token)
        .await
        .map_err(|e| HttpError::store("looking up a link token", e))?
    else {
        state.metrics.link_request("not_found");
        return Ok(None);
    };
    let policy = state.tenants.get(&target.tenant_id);
    let storefront = policy.and_then(|t| t.storefront_url.as_deref());
    let hosts = policy.map(|t| t.link_hosts()).unwrap_or_default();
    let campaign = format!("restock-{}", target.release_id);
    let mut params = vec![
        ("variant", target.variant_id.as_str()),
        ("utm_source", "restock"),
        ("utm_medium", "sms"),
        ("utm_campaign", campaign.as_str()),
        ("utm_content", target.kind.as_str()),
    ];
    // Sold out again since the text: the page can say so instead of a bare "sold out".
    let outcome = if target.sold_out {
        params.push(("restock", "sold_out"));
        ClickOutcome::SoldOut
    } else {
        ClickOutcome::Redirected
    };
    // A deep link that is not a web address (a typo, or something worse than a typo), or that
    // leads off the brand's hosts (stored before hosts were checked, or written around the
    // API), falls back to the storefront rather than being sent to a phone. The address is
    // checked as it will be sent, so nothing added to it can move its host.
    let deep_link = target
        .deep_link
        .as_deref()
        .and_then(|base| with_params(base, &params))
        .filter(|l| match link::check(l, &hosts) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(
                    tenant_id = %target.tenant_id,
                    variant_id = %target.variant_id,
                    reason = %e,
                    "deep link refused; the storefront is used instead"
                );
                false
            }
        });
    let location = deep_link
        .or_else(|| storefront.and_then(|base| with_params(base, &params)))
        .and_then(|l| HeaderValue::from_str(&l).ok());
    let Some(location) = location else {
        tracing::warn!(
            tenant_id = %target.tenant_id,
            message_id = %target.message_id,
            variant_id = %target.variant_id,
            "tracked link has nowhere to go: no usable deep link and no storefront_url"
        );
        state.metrics.link_request("no_destination");
        return Ok(None);
    };
    // Link previews and scanners often probe with HEAD: they get the redirect, not a click.
    if method != Method::HEAD {
        let user_agent = headers
            .get(header::USER_AGENT)
            .map(|v| truncate_chars(&String::from_utf8_lossy(v.as_bytes()), USER_AGENT_MAX_CHARS));
        match state
            .store
            .record_click(
                &target.tenant_id,
                target.message_id,
                user_agent.as_deref(),
                outcome,
                policy.is_some_and(|p| p.sold_out_click_rewaits),
                state.clock.now(),
            )
            .await
        {
            Ok(()) => {
                state.metrics.link_click(&target.tenant_id);
                if outcome == ClickOutcome::SoldOut {
                    state.metrics.link_request("sold_out");
                }
            }
            // The shopper still gets the page: a lost click costs a report a count, a
            // broken link costs a sale.
            Err(e) => tracing::error!(
                error = %e,
                tenant_id = %target.tenant_id,
                message_id = %target.message_id,
                "recording a click"
            ),
        }
    }
    Ok(Some(location))
}

/// Whether `token` could be a link token: 22 characters of the base64url alphabet.
fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// `base` with `params` added to its query string, before any fragment. Parameters of the same
/// names already in `base` are replaced (a second `utm_source` would split the shop's
/// analytics); the rest of its query is kept as it is. Characters that may not appear in a
/// URL are percent-encoded. `None` unless `base` is an absolute `http` or `https` URL.
fn with_params(base: &str, params: &[(&str, &str)]) -> Option<String> {
    let base = base.trim();
    let bytes = base.as_bytes();
    let scheme_len = if bytes.len() >= 8 && bytes[..8].eq_ignore_ascii_case(b"https://") {
        8
    } else if bytes.len() >= 7 && bytes[..7].eq_ignore_ascii_case(b"http://") {
        7
    } else {
        return None;
    };
    let host_len = base[scheme_len..]
        .find(['/', '?', '#'])
        .unwrap_or(base.len() - scheme_len);
    if host_len == 0 {
        return None;
    }
    let base = escape_unsafe(base);
    let (before_fragment, fragment) = match base.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (base.as_str(), None),
    };
    let (path, query) = before_fragment
        .split_once('?')
        .unwrap_or((before_fragment, ""));
    let mut out = String::with_capacity(base.len() + 128);
    out.push_str(path);
    let mut separator = '?';
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        if params.iter().any(|(p, _)| *p == name) {
            continue;
        }
        out.push(separator);
        out.push_str(pair);
        separator = '&';
    }
    for (name, value) in params {
        out.push(separator);
        percent_encode(&mut out, name);
        out.push('=');
        percent_encode(&mut out, value);
        separator = '&';
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    Some(out)
}

/// Percent-encodes every byte that may not appear in a URL as it is (controls, space,
/// non-ASCII, and `"<>\^`{|}`), leaving reserved characters and existing escapes alone.
fn escape_unsafe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if (0x21..=0x7e).contains(&b) && !b"\"<>\\^`{|}".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Appends `s` with everything but RFC 3986's unreserved characters percent-encoded.
fn percent_encode(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &[(&str, &str)] = &[("variant", "V 1/ä"), ("utm_source", "restock")];

    #[test]
    fn params_go_before_the_fragment_and_keep_the_query() {
        assert_eq!(
            with_params("https://shop.example/p/tee?color=red#reviews", P).unwrap(),
            "https://shop.example/p/tee?color=red&variant=V%201%2F%C3%A4&utm_source=restock#reviews"
        );
        assert_eq!(
            with_params("http://shop.example", P).unwrap(),
            "http://shop.example?variant=V%201%2F%C3%A4&utm_source=restock"
        );
        assert_eq!(
            with_params("https://shop.example/p?", P).unwrap(),
            "https://shop.example/p?variant=V%201%2F%C3%A4&utm_source=restock"
        );
    }

    #[test]
    fn params_of_the_same_name_are_replaced() {
        assert_eq!(
            with_params(
                "https://shop.example/p?utm_source=newsletter&a=1&&variant=9",
                P
            )
            .unwrap(),
            "https://shop.example/p?a=1&variant=V%201%2F%C3%A4&utm_source=restock"
        );
    }

    #[test]
    fn unsafe_characters_in_the_base_are_escaped() {
        assert_eq!(
            with_params("https://shop.example/p/blue tee\u{e9}?q=a\"b", &[]).unwrap(),
            "https://shop.example/p/blue%20tee%C3%A9?q=a%22b"
        );
    }

    #[test]
    fn only_absolute_web_urls_are_used() {
        for bad in [
            "javascript:alert(1)",
            "/p/tee",
            "shop.example/p",
            "https://",
            "https:///p",
            "ftp://shop.example/",
            "",
        ] {
            assert_eq!(with_params(bad, P), None, "{bad}");
        }
        assert!(with_params("HTTPS://Shop.Example/", P).is_some());
    }

    #[test]
    fn tokens_are_22_base64url_characters() {
        assert!(well_formed("AAAAAAAAAAAAAAAAAAAAAA"));
        assert!(well_formed("abc-_0123456789xyzXYZ_"));
        assert!(!well_formed("AAAAAAAAAAAAAAAAAAAAA"));
        assert!(!well_formed("AAAAAAAAAAAAAAAAAAAAAAA"));
        assert!(!well_formed("AAAAAAAAAAAAAAAAAAAAA="));
        assert!(!well_formed("AAAAAAAAAAAAAAAAAAAA+/"));
        assert!(!well_formed("AAAAAAAAAAAAAAAAAAAAä"));
    }
}
