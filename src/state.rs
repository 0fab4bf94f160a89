//! The state every request handler and background worker shares. It holds no transport type
//! (tonic, axum, proto): `startup` builds it, and the transports (`grpc`, `http`) and the
//! `workers` read it, so none of them imports another through it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use restock_domain::clock::Clock;
use restock_domain::TenantPolicy;
use restock_store::Store;
use tokio_util::sync::CancellationToken;

use crate::auth::Caller;
use crate::error::ApiError;

/// What every request handler shares.
pub struct AppState {
    pub store: Store,
    /// Subscribe calls go through here, to be batched with the calls arriving beside them.
    pub subscriber: restock_store::subscribe_batch::Subscriber,
    pub tenants: BTreeMap<String, TenantPolicy>,
    pub clock: Arc<dyn Clock>,
    /// Key of the keyed hash that replaces erased personal data.
    pub erasure_key: Vec<u8>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Woken when a restock starts, so the dispatcher plans it at once instead of at its next
    /// poll.
    pub dispatch_wake: Arc<tokio::sync::Notify>,
    /// Where the links in texts and the provider's callbacks point (no trailing slash).
    pub public_base_url: String,
    /// Tracked-link requests per client address (see `http::links`).
    pub link_limiter: Arc<LinkLimiter>,
    /// The SMS provider's secret, which also signs its webhooks; empty for the log provider.
    /// The provider accounts' auth tokens (the first account's, then the fallback's): a
    /// webhook signed with any of them is the provider's.
    pub provider_auth_tokens: Vec<String>,
    /// Cancelled when the server starts draining: long-lived streams end then, and new
    /// calls are turned away.
    pub draining: CancellationToken,
    /// Signs and opens the page tokens of every list RPC.
    pub page_tokens: PageTokens,
}

impl AppState {
    /// A tenant's policy, for a caller that may act for it: every request's tenant is
    /// resolved here. A tenant the caller may not act for is PERMISSION_DENIED (whether it
    /// exists or not, so nothing is learnt from the answer); an unknown one is NOT_FOUND.
    pub fn tenant(&self, caller: &Caller, tenant_id: &str) -> Result<&TenantPolicy, ApiError> {
        if !caller.may_act_for(tenant_id) {
            return Err(ApiError::tenant_denied(caller, tenant_id));
        }
        self.tenants
            .get(tenant_id)
            .ok_or_else(|| ApiError::NotFound(format!("tenant \"{tenant_id}\" not found")))
    }
}

/// Tracked-link requests per client address (GCRA, in memory, per replica).
pub type LinkLimiter = DefaultKeyedRateLimiter<IpAddr>;

/// A limiter of `per_second` requests per client address with bursts of `burst`.
pub fn limiter(per_second: u32, burst: u32) -> LinkLimiter {
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
}

/// The key that signs and opens the page tokens of every list RPC (the scheme is
/// `grpc::paging`'s).
#[derive(Clone)]
pub struct PageTokens {
    pub(crate) key: Vec<u8>,
}

impl PageTokens {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens([redacted])")
    }
}
