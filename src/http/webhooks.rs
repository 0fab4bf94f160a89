//! The SMS provider's webhooks (Twilio's wire format): delivery-status callbacks move messages
//! to their outcome; inbound texts carry the keywords that opt a phone out, back in, or ask for
//! help. Both refuse a request without a valid provider signature before reading anything.
//!
//! Phone numbers are personal data: they are logged redacted only.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use restock_domain::{Phone, TenantPolicy};
use restock_store::outcomes::{DeliveryReport, ReportOutcome};
use restock_store::webhooks::InboundOutcome;
use restock_store::StoreError;

use super::{plain, signature, HttpError};
use crate::app::consent;
use crate::state::AppState;

/// A form as posted: every (name, value) pair in order, repeated names included (the signature
/// covers them all, including the ones restock does not know).
type Params = Vec<(String, String)>;

const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// `POST /webhooks/twilio/status`: a delivery report.
pub(super) async fn status(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    Form(params): Form<Params>,
) -> Response {
    const KIND: &str = "status";
    if !signed(&state, &uri, &headers, &params) {
        state.metrics.webhook_call(KIND, "bad_signature");
        return forbidden(&uri);
    }
    let sid = param(&params, "MessageSid").or_else(|| param(&params, "SmsSid"));
    let status = param(&params, "MessageStatus").or_else(|| param(&params, "SmsStatus"));
    let (Some(sid), Some(status)) = (sid, status) else {
        // Signed, so it is the provider's; a retry would bring the same form.
        tracing::warn!("status callback without MessageSid or MessageStatus: ignored");
        state.metrics.webhook_call(KIND, "malformed");
        return StatusCode::NO_CONTENT.into_response();
    };
    // restock's own message, named in the callback URL (signed with it).
    let own: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let own_param = |name: &str| own.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let message = match (own_param("t"), own_param("m").and_then(|m| m.parse().ok())) {
        (Some(tenant), Some(id)) => Some((tenant, id)),
        _ => None,
    };
    let report = DeliveryReport {
        provider_message_id: sid,
        status,
        error_code: param(&params, "ErrorCode"),
        error_message: param(&params, "ErrorMessage"),
        message,
    };
    match state
        .store
        .apply_delivery_report(&report, state.clock.now())
        .await
    {
        // Answered 2xx all the same: the provider would otherwise retry something that will
        // never be found (not ours, or a send whose record is lost).
        Ok(ReportOutcome::Replayed) => {
            tracing::debug!(sid, status, "status callback replayed: ignored");
            state.metrics.webhook_call(KIND, "replayed");
        }
        Ok(ReportOutcome::Held {
            tenant_id,
            message_id,
        }) => {
            tracing::info!(%tenant_id, %message_id, sid, status, "delivery report before the send's outcome: held");
            state.metrics.webhook_call(KIND, "held");
        }
        Ok(ReportOutcome::UnknownMessage) => {
            tracing::debug!(sid, status, "status callback for an unknown message");
            state.metrics.webhook_call(KIND, "unknown_message");
        }
        Ok(ReportOutcome::Unchanged {
            tenant_id,
            message_id,
            status: current,
        }) => {
            tracing::debug!(%tenant_id, %message_id, current = current.as_str(), reported = status, "status callback changed nothing");
            state.metrics.webhook_call(KIND, "unchanged");
        }
        Ok(ReportOutcome::Applied {
            tenant_id,
            message_id,
            from,
            status: to,
            opted_out,
        }) => {
            tracing::info!(
                %tenant_id,
                %message_id,
                from = from.as_str(),
                to = to.as_str(),
                reported = status,
                error_code = report.error_code,
                opted_out,
                "delivery report applied"
            );
            if to != from {
                state.metrics.message_outcome(&tenant_id, to.as_str());
            }
            state.metrics.webhook_call(KIND, "applied");
        }
        Err(e) => {
            state.metrics.webhook_call(KIND, "error");
            return HttpError::store("applying a delivery report", e).into_response();
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /webhooks/twilio/inbound`: a text from a phone to one of the tenants' senders.
pub(super) async fn inbound(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    Form(params): Form<Params>,
) -> Response {
    const KIND: &str = "inbound";
    if !signed(&state, &uri, &headers, &params) {
        state.metrics.webhook_call(KIND, "bad_signature");
        return forbidden(&uri);
    }
    let Some(phone) = param(&params, "From").and_then(|f| Phone::parse(f, "").ok()) else {
        // A short code or an alphanumeric sender (carrier notices): nobody to opt out.
        state.metrics.webhook_call(KIND, "not_a_phone");
        return twiml(None);
    };
    let Some(keyword) = Keyword::of(&params) else {
        state.metrics.webhook_call(KIND, "no_keyword");
        return twiml(None);
    };
    let to = param(&params, "To").unwrap_or_default();
    let service = param(&params, "MessagingServiceSid");
    let tenants: Vec<(&str, &TenantPolicy)> = state
        .tenants
        .iter()
        .filter(|(_, policy)| serves(policy, to, service))
        .map(|(id, policy)| (id.as_str(), policy))
        .collect();
    if tenants.is_empty() {
        // The sender is the tenant's, not personal data: safe to log.
        tracing::warn!(to, phone = %phone.redacted(), "inbound text to a sender no tenant uses");
        state.metrics.webhook_call(KIND, "no_tenant");
        return twiml(None);
    }
    let Some(sid) = param(&params, "MessageSid").or_else(|| param(&params, "SmsSid")) else {
        // Without its id a text cannot be told from a replay of it, so it is not acted on.
        tracing::warn!(phone = %phone.redacted(), "inbound text without MessageSid: ignored");
        state.metrics.webhook_call(KIND, "malformed");
        return twiml(None);
    };
    let now = state.clock.now();
    let said = match &keyword {
        Keyword::OptOut(word) => consent::Keyword::OptOut(word),
        Keyword::OptIn(word) => consent::Keyword::OptIn(word),
        Keyword::Help => consent::Keyword::Help,
    };
    let outcomes = match consent::keyword(&state, sid, &phone, to, &tenants, said, now).await {
        Ok(Some(outcomes)) => outcomes,
        // Acted on already (a retry, or a captured request sent again): acting again could
        // undo what the phone said since, such as a STOP after this START.
        Ok(None) => {
            tracing::info!(phone = %phone.redacted(), sid, "inbound text replayed: ignored");
            state.metrics.webhook_call(KIND, "replayed");
            return twiml(None);
        }
        Err(e) => return inbound_failed(&state, &phone, keyword.outcome(), e),
    };
    let all_confirmed = outcomes.iter().all(|o| match o {
        InboundOutcome::OptedIn { confirmed } => *confirmed,
        _ => true,
    });
    let reply = match &keyword {
        Keyword::OptOut(_) => format!(
            "You are unsubscribed from {} alerts. No more messages will be sent. \
             Reply START to resubscribe.",
            brands(&tenants)
        ),
        Keyword::OptIn(_) if all_confirmed => format!(
            "{}: your back-in-stock alerts are confirmed. Reply HELP for help, \
             STOP to opt out.",
            brands(&tenants)
        ),
        Keyword::OptIn(_) => format!(
            "You are subscribed to {} back-in-stock alerts. Msg&data rates may apply. \
             Reply HELP for help, STOP to opt out.",
            brands(&tenants)
        ),
        // Several brands on one sender share it; the first one's text answers.
        Keyword::Help => tenants[0].1.help_text.clone(),
    };
    state.metrics.webhook_call(KIND, keyword.outcome());
    twiml(Some(&reply))
}

/// A keyword that could not be recorded (nothing was: the tenants' changes and the receipt are
/// one transaction). The error answer makes the provider retry where it does; the log line
/// (phone redacted) is what lets someone act on it where it does not.
fn inbound_failed(
    state: &AppState,
    phone: &Phone,
    keyword: &'static str,
    e: StoreError,
) -> Response {
    tracing::error!(phone = %phone.redacted(), keyword, "an inbound keyword was not recorded");
    state.metrics.webhook_call("inbound", "error");
    HttpError::store("recording an inbound keyword", e).into_response()
}

/// Whether the request carries the provider's signature of this very request. The URL signed is
/// the one the provider called: the public base URL and the path and query as received.
fn signed(state: &AppState, uri: &Uri, headers: &HeaderMap, params: &Params) -> bool {
    if state.provider_auth_tokens.is_empty() {
        tracing::warn!(
            path = uri.path(),
            "webhook refused: no provider auth token is configured to check its signature"
        );
        return false;
    }
    let Some(given) = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path(), |pq| pq.as_str());
    let url = format!("{}{}", state.public_base_url, path_and_query);
    state
        .provider_auth_tokens
        .iter()
        .any(|token| signature::is_valid(token, &url, params, given))
}

fn forbidden(uri: &Uri) -> Response {
    tracing::warn!(
        path = uri.path(),
        "webhook refused: bad or missing signature"
    );
    plain(StatusCode::FORBIDDEN, "forbidden\n")
}

/// The first value of a parameter; an empty value counts as absent.
fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Whether a tenant sends from the number or messaging service a text was sent to.
fn serves(policy: &TenantPolicy, to: &str, service: Option<&str>) -> bool {
    std::iter::once(policy.sender_id.as_str())
        .chain(policy.fallback_sender_id.as_deref())
        .any(|sender| {
            let sender = sender.trim();
            if sender == to || service == Some(sender) {
                return true;
            }
            match (Phone::parse(sender, ""), Phone::parse(to, "")) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            }
        })
}

/// The brands' names for a reply: "A", "A and B", "A, B and C".
fn brands(tenants: &[(&str, &TenantPolicy)]) -> String {
    let names: Vec<&str> = tenants
        .iter()
        .map(|(id, p)| {
            if p.display_name.trim().is_empty() {
                *id
            } else {
                p.display_name.trim()
            }
        })
        .collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// A keyword reply, as carriers and the FCC's revocation rules know them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Keyword {
    /// The keyword as normalised ("STOP", "OPT OUT"), recorded as the opt-out's reason.
    OptOut(String),
    OptIn(String),
    Help,
}

impl Keyword {
    /// The keyword of an inbound text. Where the provider classified the text itself
    /// (Twilio's Advanced Opt-Out sends `OptOutType` for the keywords configured there, in any
    /// language), its word counts too: the provider already acts on it.
    fn of(params: &Params) -> Option<Self> {
        let body = param(params, "Body").unwrap_or_default();
        Self::parse(body).or_else(|| {
            let said = || {
                let text = normalize(body);
                if text.is_empty() {
                    None
                } else {
                    Some(text.chars().take(100).collect::<String>())
                }
            };
            match param(params, "OptOutType")?.to_ascii_uppercase().as_str() {
                "STOP" => Some(Keyword::OptOut(said().unwrap_or_else(|| "STOP".into()))),
                "START" => Some(Keyword::OptIn(said().unwrap_or_else(|| "START".into()))),
                "HELP" => Some(Keyword::Help),
                _ => None,
            }
        })
    }

    /// The whole text must be the keyword, in any case, with surrounding blanks and
    /// punctuation ("Stop." counts, "stop texting me about shoes" does not).
    fn parse(body: &str) -> Option<Self> {
        let text = normalize(body);
        match text.as_str() {
            "STOP" | "STOPALL" | "STOP ALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT"
            | "REVOKE" | "OPTOUT" | "OPT OUT" | "OPT-OUT" => Some(Keyword::OptOut(text)),
            "START" | "UNSTOP" | "YES" => Some(Keyword::OptIn(text)),
            "HELP" | "INFO" => Some(Keyword::Help),
            _ => None,
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            Keyword::OptOut(_) => "opt_out",
            Keyword::OptIn(_) => "opt_in",
            Keyword::Help => "help",
        }
    }
}

/// A text as compared with keywords: blanks collapsed, surrounding punctuation dropped,
/// upper case.
fn normalize(body: &str) -> String {
    body.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_matches(|c: char| c.is_ascii_punctuation())
        .to_ascii_uppercase()
}

/// A TwiML answer: one message back to the phone, or none.
fn twiml(message: Option<&str>) -> Response {
    let body = match message {
        Some(m) => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{}</Message></Response>",
            xml_escape(m)
        ),
        None => "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>".to_owned(),
    };
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_whole_texts_in_any_case() {
        for stop in [
            "STOP",
            "stop",
            " Stop. ",
            "StopAll",
            "stop all",
            "unsubscribe",
            "Cancel",
            "end",
            "QUIT!",
            "revoke",
            "optout",
            "opt out",
            "Opt  Out",
            "opt-out",
        ] {
            assert!(
                matches!(Keyword::parse(stop), Some(Keyword::OptOut(_))),
                "{stop:?}"
            );
        }
        assert_eq!(
            Keyword::parse("opt out"),
            Some(Keyword::OptOut("OPT OUT".into()))
        );
        for start in ["START", "unstop", "Yes"] {
            assert!(matches!(Keyword::parse(start), Some(Keyword::OptIn(_))));
        }
        assert_eq!(Keyword::parse("help"), Some(Keyword::Help));
        assert_eq!(Keyword::parse("Info?"), Some(Keyword::Help));
        for other in ["", "stop texting me", "yes please", "stopp", "hello", "?"] {
            assert_eq!(Keyword::parse(other), None, "{other:?}");
        }
    }

    #[test]
    fn the_providers_classification_counts_too() {
        let form = |body: &str, kind: Option<&str>| {
            let mut p = vec![("Body".to_string(), body.to_string())];
            if let Some(k) = kind {
                p.push(("OptOutType".to_string(), k.to_string()));
            }
            p
        };
        assert_eq!(
            Keyword::of(&form("arrêt", Some("STOP"))),
            Some(Keyword::OptOut("ARRêT".into()))
        );
        assert_eq!(
            Keyword::of(&form("", Some("START"))),
            Some(Keyword::OptIn("START".into()))
        );
        assert_eq!(
            Keyword::of(&form("Stop", None)),
            Some(Keyword::OptOut("STOP".into()))
        );
        assert_eq!(Keyword::of(&form("arrêt", None)), None);
        assert_eq!(Keyword::of(&form("hello", Some("OTHER"))), None);
    }

    #[test]
    fn replies_are_escaped() {
        let r = twiml(Some("Tom & Jerry's <shop>"));
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/xml; charset=utf-8");
        assert_eq!(
            xml_escape("Tom & Jerry's <shop> \"x\""),
            "Tom &amp; Jerry&apos;s &lt;shop&gt; &quot;x&quot;"
        );
    }

    #[test]
    fn tenants_serve_their_number_or_messaging_service() {
        let p = TenantPolicy {
            sender_id: "+15005550006".into(),
            ..TenantPolicy::default()
        };
        assert!(serves(&p, "+15005550006", None));
        assert!(serves(&p, "+1 (500) 555-0006", None));
        assert!(!serves(&p, "+15005550007", None));
        let service = TenantPolicy {
            sender_id: "MG0123456789abcdef0123456789abcdef".into(),
            ..TenantPolicy::default()
        };
        assert!(serves(
            &service,
            "+15005550006",
            Some("MG0123456789abcdef0123456789abcdef")
        ));
        assert!(!serves(&service, "+15005550006", None));
        // A STOP to the fallback sender is a STOP to the brand.
        let with_fallback = TenantPolicy {
            sender_id: "+15005550006".into(),
            fallback_sender_id: Some("MGfedcba9876543210fedcba9876543210".into()),
            ..TenantPolicy::default()
        };
        assert!(serves(
            &with_fallback,
            "+15005550042",
            Some("MGfedcba9876543210fedcba9876543210")
        ));
        assert!(serves(&with_fallback, "+15005550006", None));
        assert!(!serves(&with_fallback, "+15005550042", None));
    }

    #[test]
    fn brand_names_read_as_a_list() {
        let named = |n: &str| TenantPolicy {
            display_name: n.into(),
            ..TenantPolicy::default()
        };
        let (a, b, c) = (named("A"), named(""), named("C"));
        assert_eq!(brands(&[("a", &a)]), "A");
        assert_eq!(brands(&[("a", &a), ("b", &b)]), "A and b");
        assert_eq!(brands(&[("a", &a), ("b", &b), ("c", &c)]), "A, b and C");
    }
}
