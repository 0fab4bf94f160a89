//! Page tokens, one scheme for every list RPC: `base64url(version | cursor | mac)`, the mac an
//! HMAC-SHA256 under the server's key over the RPC, the tenant, the canonical fingerprint of the
//! filters (`restock_domain::fingerprint`, every filter listed by name) and the cursor. A caller can neither edit a cursor nor carry a token to another RPC, tenant or
//! set of filters; replicas that share `server.page_token_key` accept each other's tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use restock_domain::fingerprint::{Canonical, Print};
use restock_store::releases::{MessageFilter, ReleaseFilter};
use sha2::Sha256;
use uuid::Uuid;

use super::validate::Violations;

/// The token layout's version, first byte of every token: a new layout gets a new number, and
/// tokens of an old one are refused (a caller restarts from the first page). 2: filters by their
/// canonical fingerprint (1 hashed their `Debug` text; its tokens are refused).
const VERSION: u8 = 2;
const MAC_LEN: usize = 32;
/// Longest token read; anything longer is not one of ours, and is refused before any work.
const MAX_TOKEN: usize = 1_024;
const REFUSED: &str =
    "is not a token this server issued for this request: pass it back unchanged, \
    with the tenant and filters of the first page";

pub use crate::state::PageTokens;

/// What a token is bound to, besides its cursor.
pub struct Scope<'a> {
    rpc: &'static str,
    tenant_id: &'a str,
    /// The canonical print of every filter of the request.
    filter: Print,
}

impl<'a> Scope<'a> {
    /// The scope of one list call: its RPC name, tenant, and filters (everything of the request
    /// but the tenant, page size and token, each field named).
    pub fn new(rpc: &'static str, tenant_id: &'a str, filter: &impl Filters) -> Self {
        Self {
            rpc,
            tenant_id,
            filter: filter.canonical(Canonical::new(rpc)).finish(),
        }
    }
}

/// The filters of a list request, listed field by field into its canonical encoding.
pub trait Filters {
    fn canonical(&self, c: Canonical) -> Canonical;
}

/// A request's filters given in place: `|c| c.field("variant_id", &variant_id)`.
impl<F: Fn(Canonical) -> Canonical> Filters for F {
    fn canonical(&self, c: Canonical) -> Canonical {
        self(c)
    }
}

/// No filters.
impl Filters for () {
    fn canonical(&self, c: Canonical) -> Canonical {
        c
    }
}

impl Filters for ReleaseFilter {
    fn canonical(&self, c: Canonical) -> Canonical {
        c.field("variant_id", &self.variant_id)
            .field("product_id", &self.product_id)
            .field("location_id", &self.location_id)
            .field("restock_id", self.restock_id)
            .field("states", &self.states)
            .field("created_from", self.created_from)
            .field("created_before", self.created_before)
    }
}

impl Filters for MessageFilter {
    fn canonical(&self, c: Canonical) -> Canonical {
        c.field("release_id", self.release_id)
            .field("phone", &self.phone_e164)
            .field("subscription_id", self.subscription_id)
            .field("statuses", &self.statuses)
    }
}

impl PageTokens {
    fn mac(&self, scope: &Scope<'_>, cursor: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        // Each part length-prefixed, so no two different scopes hash the same bytes.
        for part in [
            scope.rpc.as_bytes(),
            scope.tenant_id.as_bytes(),
            &scope.filter,
            &[VERSION],
            cursor,
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// The token of the page after `cursor`.
    pub fn issue(&self, scope: &Scope<'_>, cursor: &str) -> String {
        let mut raw = Vec::with_capacity(1 + cursor.len() + MAC_LEN);
        raw.push(VERSION);
        raw.extend_from_slice(cursor.as_bytes());
        raw.extend_from_slice(&self.mac(scope, cursor.as_bytes()).finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The cursor of `token`, read with `parse`, when this server issued it for `scope`; else a
    /// violation of `page_token`. An empty token is the first page: `None`, no violation.
    pub fn open<T>(
        &self,
        v: &mut Violations,
        token: &str,
        scope: &Scope<'_>,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        if token.is_empty() {
            return None;
        }
        let cursor = self.verify(token, scope).and_then(|c| parse(&c));
        if cursor.is_none() {
            v.add("page_token", REFUSED);
        }
        cursor
    }

    fn verify(&self, token: &str, scope: &Scope<'_>) -> Option<String> {
        if token.len() > MAX_TOKEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        if raw.len() < 1 + MAC_LEN || raw[0] != VERSION {
            return None;
        }
        let (body, tag) = raw.split_at(raw.len() - MAC_LEN);
        let cursor = &body[1..];
        // Constant-time comparison.
        self.mac(scope, cursor).verify_slice(tag).ok()?;
        String::from_utf8(cursor.to_vec()).ok()
    }
}

/// A cursor of a list ordered by (time, id): `micros:uuid`.
pub fn time_cursor(t: DateTime<Utc>, id: Uuid) -> String {
    format!("{}:{id}", t.timestamp_micros())
}

pub fn parse_time_cursor(s: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (t, id) = s.split_once(':')?;
    Some((
        DateTime::from_timestamp_micros(t.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(tokens: &PageTokens, token: &str, scope: &Scope<'_>) -> Option<String> {
        let mut v = Violations::default();
        let c = tokens.open(&mut v, token, scope, |c| Some(c.to_string()));
        assert_eq!(c.is_none() && !token.is_empty(), !v.is_empty());
        c
    }

    #[test]
    fn a_token_opens_only_in_its_own_scope_and_unchanged() {
        let tokens = PageTokens::new(b"0123456789abcdef");
        let filter = |sku: &'static str| move |c: Canonical| c.field("variant_id", sku);
        let scope = Scope::new("ListReleases", "demo", &filter("sku-1"));
        let token = tokens.issue(&scope, "42:abc");
        assert_eq!(open(&tokens, &token, &scope).as_deref(), Some("42:abc"));
        assert_eq!(open(&tokens, "", &scope), None);
        for other in [
            Scope::new("ListMessages", "demo", &filter("sku-1")),
            Scope::new("ListReleases", "other", &filter("sku-1")),
            Scope::new("ListReleases", "demo", &filter("sku-2")),
            Scope::new("ListReleases", "demo", &()),
        ] {
            assert_eq!(open(&tokens, &token, &other), None);
        }
        assert_eq!(
            open(&PageTokens::new(b"another key, 16+"), &token, &scope),
            None
        );
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        raw[1] = b'7';
        assert_eq!(open(&tokens, &URL_SAFE_NO_PAD.encode(&raw), &scope), None);
        raw[1] = b'4';
        assert_eq!(
            open(&tokens, &URL_SAFE_NO_PAD.encode(&raw), &scope).as_deref(),
            Some("42:abc")
        );
        raw[0] = 1;
        assert_eq!(open(&tokens, &URL_SAFE_NO_PAD.encode(&raw), &scope), None);
        assert_eq!(open(&tokens, "not base64!", &scope), None);
        assert_eq!(open(&tokens, &"A".repeat(2_000), &scope), None);
    }

    #[test]
    fn time_cursors_round_trip() {
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        assert_eq!(
            parse_time_cursor(&time_cursor(t, Uuid::nil())),
            Some((t, Uuid::nil()))
        );
    }
}
