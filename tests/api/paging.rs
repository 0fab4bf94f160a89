//! Page tokens: opaque, signed by the server, and bound to the RPC, tenant and filters they were
//! issued for, in every list RPC. A token edited, carried to another tenant or to other filters
//! is INVALID_ARGUMENT naming `page_token`.

use std::time::Duration;

use crate::helpers::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use restock::proto::v1 as pb;

/// `demo` and a second tenant, `other`, with the same policy.
async fn two_tenants() -> TestApp {
    spawn_app_with(|s| {
        let demo = s.tenants["demo"].clone();
        s.tenants.insert("other".into(), demo);
    })
    .await
}

/// The token with one character of its cursor changed to another valid one: a caller skipping
/// ahead or back by editing the token. The token is `version | cursor | 32-byte mac`, so the
/// byte before the mac is the cursor's last.
fn tamper(token: &str) -> String {
    fn other(b: u8) -> u8 {
        match b {
            b'0' => b'1',
            b'0'..=b'9' | b'a'..=b'f' => b'0',
            b => b ^ 1,
        }
    }
    match URL_SAFE_NO_PAD.decode(token) {
        Ok(mut raw) if raw.len() > 33 => {
            let i = raw.len() - 33;
            raw[i] = other(raw[i]);
            URL_SAFE_NO_PAD.encode(raw)
        }
        _ => {
            let mut raw = token.as_bytes().to_vec();
            let last = raw.len() - 1;
            raw[last] = other(raw[last]);
            String::from_utf8(raw).unwrap()
        }
    }
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) {
    let status = result.expect_err(&format!("{what}: the token must be refused"));
    assert_eq!(
        violated_fields(&status),
        ["page_token"],
        "{what}: {status:?}"
    );
}

/// One list RPC, called as a test needs it: (tenant, filter variant, token) -> next token.
type Lister<'a> = Box<
    dyn Fn(
            &'a TestApp,
            &'static str,
            bool,
            String,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<String, tonic::Status>> + 'a>,
        > + 'a,
>;

/// Asserts, for one RPC: its token works as issued; edited, for another tenant or for other
/// filters it is refused.
async fn check_paging<'a>(app: &'a TestApp, rpc: &str, list: Lister<'a>) {
    let token = list(app, "demo", false, String::new())
        .await
        .unwrap_or_else(|e| panic!("{rpc}: first page: {e:?}"));
    assert!(
        !token.is_empty(),
        "{rpc}: a first page of 1 has a next page"
    );
    list(app, "demo", false, token.clone())
        .await
        .unwrap_or_else(|e| panic!("{rpc}: the token as issued must work: {e:?}"));
    assert_refused(
        list(app, "demo", false, tamper(&token)).await,
        &format!("{rpc} edited"),
    );
    assert_refused(
        list(app, "other", false, token.clone()).await,
        &format!("{rpc} other tenant"),
    );
    assert_refused(
        list(app, "demo", true, token.clone()).await,
        &format!("{rpc} other filter"),
    );
}

#[tokio::test]
async fn page_tokens_are_signed_and_bound_to_tenant_and_filters_in_every_list_rpc() {
    let app = two_tenants().await;
    subscribe_all(&app, "sku-1", &phones(3, 0)).await;
    // Three restocks make three releases; the first has a message per subscriber.
    for (i, variant) in ["sku-1", "sku-2", "sku-3"].iter().enumerate() {
        set_stock(&app, variant, "web", 5, 1 + i as u64).await;
    }
    eventually(
        Duration::from_secs(10),
        "three messages planned",
        || async { app.count("messages").await >= 3 },
    )
    .await;
    for variant in ["sku-1", "sku-2", "sku-3"] {
        app.create_exclusion(pb::CreateExclusionRequest {
            tenant_id: "demo".into(),
            target: Some(pb::create_exclusion_request::Target::VariantId(
                variant.into(),
            )),
            reason: "recall".into(),
            creator: "merch".into(),
            expire_time: None,
        })
        .await
        .unwrap();
    }

    check_paging(
        &app,
        "ListSubscriptions",
        Box::new(|app, tenant, other_filter, page_token| {
            Box::pin(async move {
                app.waitlist()
                    .list_subscriptions(pb::ListSubscriptionsRequest {
                        tenant_id: tenant.into(),
                        page_size: 1,
                        page_token,
                        status: if other_filter {
                            pb::SubscriptionStatus::Active as i32
                        } else {
                            0
                        },
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().next_page_token)
            })
        }),
    )
    .await;
    check_paging(
        &app,
        "ListReleases",
        Box::new(|app, tenant, other_filter, page_token| {
            Box::pin(async move {
                app.dispatch()
                    .list_releases(pb::ListReleasesRequest {
                        tenant_id: tenant.into(),
                        page_size: 1,
                        page_token,
                        location_id: if other_filter {
                            "web".into()
                        } else {
                            String::new()
                        },
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().next_page_token)
            })
        }),
    )
    .await;
    check_paging(
        &app,
        "ListMessages",
        Box::new(|app, tenant, other_filter, page_token| {
            Box::pin(async move {
                app.dispatch()
                    .list_messages(pb::ListMessagesRequest {
                        tenant_id: tenant.into(),
                        page_size: 1,
                        page_token,
                        phone_number: if other_filter {
                            "+14155550000".into()
                        } else {
                            String::new()
                        },
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().next_page_token)
            })
        }),
    )
    .await;
    check_paging(
        &app,
        "ListExclusions",
        Box::new(|app, tenant, other_filter, page_token| {
            Box::pin(async move {
                app.eligibility()
                    .list_exclusions(pb::ListExclusionsRequest {
                        tenant_id: tenant.into(),
                        page_size: 1,
                        page_token,
                        show_inactive: other_filter,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().next_page_token)
            })
        }),
    )
    .await;
    check_paging(
        &app,
        "DryRun",
        Box::new(|app, tenant, other_filter, page_token| {
            Box::pin(async move {
                app.eligibility()
                    .dry_run(pb::DryRunRequest {
                        tenant_id: tenant.into(),
                        variant_id: "sku-1".into(),
                        location_id: if other_filter {
                            "web".into()
                        } else {
                            String::new()
                        },
                        page_size: 1,
                        page_token,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().next_page_token)
            })
        }),
    )
    .await;
}

#[tokio::test]
async fn a_token_of_one_list_rpc_is_refused_by_another() {
    let app = spawn_app().await;
    subscribe_all(&app, "sku-1", &phones(3, 0)).await;
    let token = app
        .dry_run(pb::DryRunRequest {
            tenant_id: "demo".into(),
            variant_id: "sku-1".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .next_page_token;
    assert!(!token.is_empty());
    assert_refused(
        app.list_subscriptions(pb::ListSubscriptionsRequest {
            tenant_id: "demo".into(),
            page_token: token,
            ..Default::default()
        })
        .await,
        "a DryRun token in ListSubscriptions",
    );
}
