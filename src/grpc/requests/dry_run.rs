//! DryRun as a typed command: what to judge, under which assumption, which page of examples.

use super::eligibility::MAX_UNITS;
use restock_domain::fingerprint::Canonical;

use crate::error::ApiError;
use crate::grpc::paging::{PageTokens, Scope};
use crate::grpc::validate::Violations;
use crate::proto::v1 as pb;

/// A DryRun's page of examples when the request names no size, and its largest.
pub const DEFAULT_EXAMPLES: usize = 20;
pub const MAX_EXAMPLES: usize = 200;

/// A valid DryRun: what to judge, under which assumption, and which page of which examples.
#[derive(Debug)]
pub struct DryRun {
    pub tenant_id: String,
    pub variant_id: String,
    pub location_id: Option<String>,
    /// 0 to [`MAX_UNITS`].
    pub assume_available: i64,
    /// Examples only of this decision, and of this reason (none: any).
    pub example_decision: Option<pb::EligibilityDecision>,
    pub example_reason: Option<pb::ReasonCode>,
    /// Examples per page: [`DEFAULT_EXAMPLES`] when unset, at most [`MAX_EXAMPLES`].
    pub page_size: usize,
    /// Matching examples on the pages before this one.
    pub skip_examples: u64,
}

impl DryRun {
    pub fn parse(req: pb::DryRunRequest, tokens: &PageTokens) -> Result<Self, ApiError> {
        let mut v = Violations::default();
        let tenant_id = v.id("tenant_id", &req.tenant_id, true);
        let variant_id = v.id("variant_id", &req.variant_id, true);
        let location_id = v.id("location_id", &req.location_id, false);
        if req.assume_available < 0 {
            v.add("assume_available", "must not be negative");
        } else if req.assume_available > MAX_UNITS {
            v.add("assume_available", format!("must be at most {MAX_UNITS}"));
        }
        let example_decision = v.enumeration::<pb::EligibilityDecision>(
            "example_decision",
            req.example_decision,
            false,
        );
        let example_reason =
            v.enumeration::<pb::ReasonCode>("example_reason", req.example_reason, false);
        if req.page_size < 0 {
            v.add("page_size", "must not be negative");
        }
        let scope = Self::scope_of(
            &req.tenant_id,
            &variant_id,
            &location_id,
            req.assume_available,
            req.example_decision,
            req.example_reason,
        );
        let skip_examples: u64 = tokens
            .open(&mut v, &req.page_token, &scope, |c| c.parse().ok())
            .unwrap_or(0);
        let page_size = match req.page_size {
            n if n <= 0 => DEFAULT_EXAMPLES,
            n => (n as usize).min(MAX_EXAMPLES),
        };
        let parts = tenant_id
            .zip(variant_id)
            .map(|(tenant_id, variant_id)| DryRun {
                tenant_id,
                variant_id,
                location_id,
                assume_available: req.assume_available,
                example_decision,
                example_reason,
                page_size,
                skip_examples,
            });
        v.into_result(parts)
    }

    /// What a page of examples is bound to: the whole request but its page size and token.
    pub fn scope(&self) -> Scope<'_> {
        Self::scope_of(
            &self.tenant_id,
            &Some(self.variant_id.clone()),
            &self.location_id,
            self.assume_available,
            self.example_decision.map_or(0, |e| e as i32),
            self.example_reason.map_or(0, |r| r as i32),
        )
    }

    fn scope_of<'a>(
        tenant_id: &'a str,
        variant_id: &Option<String>,
        location_id: &Option<String>,
        assume_available: i64,
        example_decision: i32,
        example_reason: i32,
    ) -> Scope<'a> {
        Scope::new("DryRun", tenant_id, &|c: Canonical| {
            c.field("variant_id", variant_id)
                .field("location_id", location_id)
                .field("assume_available", assume_available)
                .field("example_decision", example_decision)
                .field("example_reason", example_reason)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::requests::test_support::{fields, tokens};

    fn dry_run() -> pb::DryRunRequest {
        pb::DryRunRequest {
            tenant_id: "demo".into(),
            variant_id: "sku-1".into(),
            location_id: "web".into(),
            assume_available: 5,
            example_decision: pb::EligibilityDecision::Skip as i32,
            ..Default::default()
        }
    }

    #[test]
    fn dry_run_names_every_bad_field() {
        let req = pb::DryRunRequest {
            assume_available: MAX_UNITS + 1,
            example_reason: 9_999,
            page_size: -1,
            page_token: "garbage".into(),
            ..Default::default()
        };
        let mut got = fields(DryRun::parse(req, &tokens()).unwrap_err());
        got.sort();
        assert_eq!(
            got,
            [
                "assume_available",
                "example_reason",
                "page_size",
                "page_token",
                "tenant_id",
                "variant_id"
            ]
        );
    }

    #[test]
    fn a_dry_run_page_token_opens_only_for_the_same_request() {
        let tokens = tokens();
        let first = DryRun::parse(dry_run(), &tokens).unwrap();
        assert_eq!(
            (first.page_size, first.skip_examples),
            (DEFAULT_EXAMPLES, 0)
        );
        let token = tokens.issue(&first.scope(), "40");
        let next = DryRun::parse(
            pb::DryRunRequest {
                page_token: token.clone(),
                page_size: 10_000,
                ..dry_run()
            },
            &tokens,
        )
        .unwrap();
        assert_eq!((next.page_size, next.skip_examples), (MAX_EXAMPLES, 40));
        let other = pb::DryRunRequest {
            page_token: token,
            example_decision: 0,
            ..dry_run()
        };
        assert_eq!(
            fields(DryRun::parse(other, &tokens).unwrap_err()),
            ["page_token"]
        );
    }
}
