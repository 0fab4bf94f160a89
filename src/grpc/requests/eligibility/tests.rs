//! Unit tests of the EligibilityService commands.

use super::*;
use crate::grpc::requests::test_support::{fields, tokens};

#[test]
fn list_exclusions_tokens_are_bound_to_their_filters() {
    let tokens = tokens();
    let req = || pb::ListExclusionsRequest {
        tenant_id: "demo".into(),
        product_id: "p-1".into(),
        page_size: 100_000,
        ..Default::default()
    };
    let first = ListExclusions::parse(req(), &tokens).unwrap();
    assert_eq!(first.page_size, page_size(100_000));
    let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let token = tokens.issue(
        &first.scope(),
        &crate::grpc::paging::time_cursor(at, Uuid::nil()),
    );
    let next = pb::ListExclusionsRequest {
        page_token: token.clone(),
        ..req()
    };
    assert_eq!(
        ListExclusions::parse(next, &tokens).unwrap().after,
        Some((at, Uuid::nil()))
    );
    let inactive = pb::ListExclusionsRequest {
        page_token: token,
        show_inactive: true,
        ..req()
    };
    assert_eq!(
        fields(ListExclusions::parse(inactive, &tokens).unwrap_err()),
        ["page_token"]
    );
}

#[test]
fn list_substitute_groups_tokens_are_bound_to_their_tenant() {
    let tokens = tokens();
    let req = |tenant: &str| pb::ListSubstituteGroupsRequest {
        tenant_id: tenant.into(),
        ..Default::default()
    };
    let first = ListSubstituteGroups::parse(req("demo"), &tokens).unwrap();
    let token = tokens.issue(&first.scope(), "g-1");
    let next = pb::ListSubstituteGroupsRequest {
        page_token: token.clone(),
        ..req("demo")
    };
    assert_eq!(
        ListSubstituteGroups::parse(next, &tokens)
            .unwrap()
            .after
            .as_deref(),
        Some("g-1")
    );
    let other = pb::ListSubstituteGroupsRequest {
        page_token: token,
        page_size: -1,
        ..req("other")
    };
    let mut got = fields(ListSubstituteGroups::parse(other, &tokens).unwrap_err());
    got.sort();
    assert_eq!(got, ["page_size", "page_token"]);
}
