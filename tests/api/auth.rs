//! Caller identity and tenant isolation: every RPC against no token, a caller of another
//! tenant, a caller without the RPC's scope, and the right caller; ids of one tenant are
//! NOT_FOUND to a caller of another; health and reflection stay open.

use std::time::Duration;

use crate::helpers::*;
use restock::proto::v1 as pb;
use restock::proto::v1::dispatch_service_client::DispatchServiceClient;
use restock::proto::v1::eligibility_service_client::EligibilityServiceClient;
use restock::proto::v1::waitlist_service_client::WaitlistServiceClient;
use restock_sms::fake::FakeTwilio;
use tonic::{Code, Status};

/// Every RPC of the proto and the scope the issue's table gives it.
const RPCS: &[(&str, &str)] = &[
    ("Subscribe", "waitlist.write"),
    ("ConfirmSubscription", "waitlist.write"),
    ("Unsubscribe", "waitlist.write"),
    ("GetSubscription", "read"),
    ("ListSubscriptions", "read"),
    ("GetWaitlistPosition", "read"),
    ("OptOut", "waitlist.write"),
    ("OptIn", "waitlist.write"),
    ("GetConsentHistory", "read"),
    ("ErasePhone", "privacy.erase"),
    ("StreamInventory", "inventory.write"),
    ("ReportInventory", "inventory.write"),
    ("GetStock", "read"),
    ("SyncInventory", "inventory.write"),
    ("Explain", "read"),
    ("DryRun", "read"),
    ("CreateExclusion", "dispatch.admin"),
    ("DeleteExclusion", "dispatch.admin"),
    ("ListExclusions", "read"),
    ("SetSubstituteGroup", "dispatch.admin"),
    ("ListSubstituteGroups", "read"),
    ("DeleteSubstituteGroup", "dispatch.admin"),
    ("TransferWaitlist", "dispatch.admin"),
    ("SetPropensityScores", "waitlist.write"),
    ("GetRelease", "read"),
    ("ListReleases", "read"),
    ("WatchRelease", "read"),
    ("PauseRelease", "dispatch.admin"),
    ("ResumeRelease", "dispatch.admin"),
    ("CancelRelease", "dispatch.admin"),
    ("GetMessage", "read"),
    ("ListMessages", "read"),
    ("RecordPurchase", "waitlist.write"),
    ("GetReleaseReport", "reports.read"),
    ("GetVariantReport", "reports.read"),
    ("GetPeriodReport", "reports.read"),
    ("ExportMessages", "reports.read"),
    ("RecordProductViews", "inventory.write"),
];

const SCOPES: &[&str] = &[
    "waitlist.write",
    "inventory.write",
    "dispatch.admin",
    "reports.read",
    "privacy.erase",
    "read",
];

/// The ids a call names (of the tenant it names).
#[derive(Clone, Default)]
struct Ids {
    subscription: String,
    release: String,
    message: String,
    exclusion: String,
}

impl Ids {
    fn random() -> Self {
        let id = || uuid::Uuid::new_v4().to_string();
        Self {
            subscription: id(),
            release: id(),
            message: id(),
            exclusion: id(),
        }
    }
}

fn seconds_ago(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() - seconds,
        nanos: 0,
    }
}

/// Calls `rpc` with a valid request for `tenant`; answers its status (streams: their first
/// answer).
async fn call(channel: &Channel, rpc: &str, tenant: &str, ids: &Ids) -> Result<(), Status> {
    let mut w = WaitlistServiceClient::new(channel.clone());
    let mut e = EligibilityServiceClient::new(channel.clone());
    let mut d = DispatchServiceClient::new(channel.clone());
    let t = || tenant.to_string();
    let phone = || "+14155550177".to_string();
    let consent = Some(web_consent());
    match rpc {
        "Subscribe" => {
            let mut r = subscribe_request("sku-auth", &phone());
            r.tenant_id = t();
            w.subscribe(r).await.map(drop)
        }
        "ConfirmSubscription" => w
            .confirm_subscription(pb::ConfirmSubscriptionRequest {
                tenant_id: t(),
                subscription_id: ids.subscription.clone(),
                source: pb::ConsentSource::Web as i32,
            })
            .await
            .map(drop),
        "Unsubscribe" => w
            .unsubscribe(pb::UnsubscribeRequest {
                tenant_id: t(),
                subscription_id: ids.subscription.clone(),
            })
            .await
            .map(drop),
        "GetSubscription" => w
            .get_subscription(pb::GetSubscriptionRequest {
                tenant_id: t(),
                subscription_id: ids.subscription.clone(),
            })
            .await
            .map(drop),
        "ListSubscriptions" => w
            .list_subscriptions(pb::ListSubscriptionsRequest {
                tenant_id: t(),
                ..Default::default()
            })
            .await
            .map(drop),
        "GetWaitlistPosition" => w
            .get_waitlist_position(pb::GetWaitlistPositionRequest {
                tenant_id: t(),
                subscription_id: ids.subscription.clone(),
            })
            .await
            .map(drop),
        "OptOut" => w
            .opt_out(pb::OptOutRequest {
                tenant_id: t(),
                phone_number: phone(),
                source: pb::ConsentSource::Web as i32,
                ..Default::default()
            })
            .await
            .map(drop),
        "OptIn" => w
            .opt_in(pb::OptInRequest {
                tenant_id: t(),
                phone_number: phone(),
                consent,
                ..Default::default()
            })
            .await
            .map(drop),
        "GetConsentHistory" => w
            .get_consent_history(pb::GetConsentHistoryRequest {
                tenant_id: t(),
                phone_number: phone(),
                ..Default::default()
            })
            .await
            .map(drop),
        "ErasePhone" => w
            .erase_phone(pb::ErasePhoneRequest {
                tenant_id: t(),
                phone_number: phone(),
                ..Default::default()
            })
            .await
            .map(drop),
        "StreamInventory" => {
            let msg = pb::StreamInventoryRequest {
                tenant_id: t(),
                event: Some(event("auth-ev-s", "sku-auth", "web", 3, 1)),
            };
            let mut acks = e
                .stream_inventory(tokio_stream::iter(vec![msg]))
                .await?
                .into_inner();
            acks.message().await.map(drop)
        }
        "ReportInventory" => e
            .report_inventory(pb::ReportInventoryRequest {
                tenant_id: t(),
                events: vec![event("auth-ev-r", "sku-auth", "web", 3, 1)],
            })
            .await
            .map(drop),
        "GetStock" => e
            .get_stock(pb::GetStockRequest {
                tenant_id: t(),
                variant_id: "sku-auth".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "SyncInventory" => {
            let msg = pb::SyncInventoryRequest {
                tenant_id: t(),
                snapshot_time: Some(seconds_ago(60)),
                location_ids: vec!["web".into()],
                levels: vec![pb::StockLevel {
                    variant_id: "sku-auth".into(),
                    location_id: "web".into(),
                    available_to_sell: 2,
                    ..Default::default()
                }],
                ..Default::default()
            };
            e.sync_inventory(tokio_stream::iter(vec![msg]))
                .await
                .map(drop)
        }
        "Explain" => e
            .explain(pb::ExplainRequest {
                tenant_id: t(),
                subscription_id: ids.subscription.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        "DryRun" => e
            .dry_run(pb::DryRunRequest {
                tenant_id: t(),
                variant_id: "sku-auth".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "CreateExclusion" => e
            .create_exclusion(pb::CreateExclusionRequest {
                tenant_id: t(),
                target: Some(pb::create_exclusion_request::Target::VariantId(
                    "sku-auth".into(),
                )),
                reason: "recall".into(),
                creator: "merch@example.com".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "DeleteExclusion" => e
            .delete_exclusion(pb::DeleteExclusionRequest {
                tenant_id: t(),
                exclusion_id: ids.exclusion.clone(),
            })
            .await
            .map(drop),
        "ListExclusions" => e
            .list_exclusions(pb::ListExclusionsRequest {
                tenant_id: t(),
                ..Default::default()
            })
            .await
            .map(drop),
        "SetSubstituteGroup" => e
            .set_substitute_group(pb::SetSubstituteGroupRequest {
                tenant_id: t(),
                group_id: "auth-group".into(),
                members: ["sku-auth", "sku-auth-2"]
                    .iter()
                    .map(|v| pb::SubstituteMember {
                        member: Some(pb::substitute_member::Member::VariantId(v.to_string())),
                    })
                    .collect(),
            })
            .await
            .map(drop),
        "ListSubstituteGroups" => e
            .list_substitute_groups(pb::ListSubstituteGroupsRequest {
                tenant_id: t(),
                ..Default::default()
            })
            .await
            .map(drop),
        "DeleteSubstituteGroup" => e
            .delete_substitute_group(pb::DeleteSubstituteGroupRequest {
                tenant_id: t(),
                group_id: "no-such-group".into(),
            })
            .await
            .map(drop),
        "TransferWaitlist" => w
            .transfer_waitlist(pb::TransferWaitlistRequest {
                tenant_id: t(),
                from_variant_id: "sku-auth-old".into(),
                to_variant_id: "sku-auth-new".into(),
            })
            .await
            .map(drop),
        "SetPropensityScores" => w
            .set_propensity_scores(pb::SetPropensityScoresRequest {
                tenant_id: t(),
                scores: vec![pb::PropensityScore {
                    subscription_id: ids.subscription.clone(),
                    score: 0.5,
                }],
            })
            .await
            .map(drop),
        "GetRelease" => d
            .get_release(pb::GetReleaseRequest {
                tenant_id: t(),
                release_id: ids.release.clone(),
            })
            .await
            .map(drop),
        "ListReleases" => d
            .list_releases(pb::ListReleasesRequest {
                tenant_id: t(),
                ..Default::default()
            })
            .await
            .map(drop),
        "WatchRelease" => {
            let mut s = d
                .watch_release(pb::WatchReleaseRequest {
                    tenant_id: t(),
                    release_id: ids.release.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            s.message().await.map(drop)
        }
        "PauseRelease" => d
            .pause_release(pb::PauseReleaseRequest {
                tenant_id: t(),
                release_id: ids.release.clone(),
                reason: "auth test".into(),
            })
            .await
            .map(drop),
        "ResumeRelease" => d
            .resume_release(pb::ResumeReleaseRequest {
                tenant_id: t(),
                release_id: ids.release.clone(),
            })
            .await
            .map(drop),
        "CancelRelease" => d
            .cancel_release(pb::CancelReleaseRequest {
                tenant_id: t(),
                release_id: ids.release.clone(),
                reason: "auth test".into(),
            })
            .await
            .map(drop),
        "GetMessage" => d
            .get_message(pb::GetMessageRequest {
                tenant_id: t(),
                message_id: ids.message.clone(),
            })
            .await
            .map(drop),
        "ListMessages" => d
            .list_messages(pb::ListMessagesRequest {
                tenant_id: t(),
                release_id: ids.release.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        "RecordPurchase" => d
            .record_purchase(pb::RecordPurchaseRequest {
                tenant_id: t(),
                order_id: "order-auth-1".into(),
                phone_number: phone(),
                lines: vec![pb::PurchaseLine {
                    variant_id: "sku-auth".into(),
                    quantity: 1,
                    total_price: Some(pb::Money {
                        amount_minor: 4_500,
                        currency_code: "USD".into(),
                    }),
                    ..Default::default()
                }],
                purchase_time: Some(seconds_ago(30)),
                ..Default::default()
            })
            .await
            .map(drop),
        "GetReleaseReport" => d
            .get_release_report(pb::GetReleaseReportRequest {
                tenant_id: t(),
                release_id: ids.release.clone(),
            })
            .await
            .map(drop),
        "GetVariantReport" => d
            .get_variant_report(pb::GetVariantReportRequest {
                tenant_id: t(),
                variant_id: "sku-auth".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "GetPeriodReport" => d
            .get_period_report(pb::GetPeriodReportRequest {
                tenant_id: t(),
                start_time: Some(seconds_ago(86_400)),
                end_time: Some(seconds_ago(0)),
            })
            .await
            .map(drop),
        "ExportMessages" => d
            .export_messages(pb::ExportMessagesRequest {
                tenant_id: t(),
                start_time: Some(seconds_ago(86_400)),
                end_time: Some(seconds_ago(0)),
            })
            .await
            .map(drop),
        "RecordProductViews" => d
            .record_product_views(pb::RecordProductViewsRequest {
                tenant_id: t(),
                counts: vec![pb::ProductViewCount {
                    variant_id: "sku-auth".into(),
                    day: (chrono::Utc::now() - chrono::Duration::days(1))
                        .format("%Y-%m-%d")
                        .to_string(),
                    source: "web".into(),
                    view_count: 10,
                    ..Default::default()
                }],
            })
            .await
            .map(drop),
        other => panic!("no call for {other}"),
    }
}

/// The rows of every table a call could write.
async fn row_counts(app: &TestApp) -> Vec<(&'static str, i64)> {
    let mut counts = Vec::new();
    for table in [
        "contacts",
        "consent_events",
        "subscriptions",
        "idempotency_keys",
        "inventory",
        "inventory_events",
        "restocks",
        "exclusions",
        "substitute_groups",
        "substitute_members",
        "purchases",
        "purchase_lines",
        "releases",
        "messages",
        "product_views",
    ] {
        counts.push((table, app.count(table).await));
    }
    counts
}

fn token_without(scope: &str) -> String {
    format!("token-without-{scope}")
}

const OTHER_TENANT_TOKEN: &str = "token-of-the-other-tenant";
const DEMO_ONLY_TOKEN: &str = "token-of-demo-alone";

async fn spawn_with_callers() -> TestApp {
    spawn_app_with(|s| {
        for scope in SCOPES {
            let others: Vec<&str> = SCOPES.iter().copied().filter(|s| s != scope).collect();
            s.auth.credentials.insert(
                format!("without-{scope}"),
                credential(&token_without(scope), &["*"], &others),
            );
        }
        s.auth.credentials.insert(
            "other-tenant".into(),
            credential(OTHER_TENANT_TOKEN, &["demo-double-opt-in"], &["*"]),
        );
        s.auth.credentials.insert(
            "demo-only".into(),
            credential(DEMO_ONLY_TOKEN, &["demo"], &["*"]),
        );
    })
    .await
}

#[tokio::test]
async fn every_rpc_checks_the_token_the_tenant_and_the_scope() {
    let app = spawn_with_callers().await;
    let raw = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let nobody = with_token(raw.clone(), "");
    let stranger = with_token(raw.clone(), "a-token-nobody-has");
    let other_tenant = with_token(raw.clone(), OTHER_TENANT_TOKEN);
    let ids = Ids::random();
    let before = row_counts(&app).await;
    for (rpc, scope) in RPCS {
        for (who, channel) in [("no token", &nobody), ("unknown token", &stranger)] {
            let status = call(channel, rpc, "demo", &ids).await.unwrap_err();
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{rpc}, {who}: {status:?}"
            );
        }
        let status = call(&other_tenant, rpc, "demo", &ids).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{rpc}, a caller of another tenant: {status:?}"
        );
        let lacking = with_token(raw.clone(), &token_without(scope));
        let status = call(&lacking, rpc, "demo", &ids).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{rpc} without {scope}: {status:?}"
        );
        assert!(status.message().contains(scope), "{rpc}: {status:?}");
    }
    assert_eq!(
        row_counts(&app).await,
        before,
        "a refused call wrote something"
    );
    // The right scope gets through (to an answer about the call itself).
    for (rpc, scope) in RPCS {
        // Each caller holds every scope but one: any other than `scope` will do.
        let other = SCOPES.iter().find(|s| *s != scope).unwrap();
        let allowed = with_token(raw.clone(), &token_without(other));
        let answer = call(&allowed, rpc, "demo", &ids).await;
        if let Err(status) = &answer {
            assert!(
                matches!(status.code(), Code::NotFound | Code::FailedPrecondition),
                "{rpc} with {scope}: {status:?}"
            );
        }
    }
    assert!(app.count("subscriptions").await > 0);
    // A caller of one tenant is refused another's, named or not.
    let demo_only = with_token(raw.clone(), DEMO_ONLY_TOKEN);
    for tenant in ["demo-double-opt-in", "no-such-tenant"] {
        let status = call(&demo_only, "ListSubscriptions", tenant, &ids)
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{tenant}: {status:?}"
        );
    }
}

#[tokio::test]
async fn an_inventory_stream_stops_at_the_first_event_of_a_tenant_the_caller_may_not_act_for() {
    let app = spawn_with_callers().await;
    let raw = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let msg = |tenant: &str, id: &str, seq| pb::StreamInventoryRequest {
        tenant_id: tenant.into(),
        event: Some(event(id, "sku-s", "web", 5, seq)),
    };
    let mut acks = EligibilityServiceClient::new(with_token(raw, DEMO_ONLY_TOKEN))
        .stream_inventory(tokio_stream::iter(vec![
            msg("demo", "ev-1", 1),
            msg("demo-double-opt-in", "ev-2", 1),
            msg("demo", "ev-3", 2),
        ]))
        .await
        .unwrap()
        .into_inner();
    let first = acks.message().await.unwrap().unwrap();
    assert_eq!(first.ack.unwrap().event_id, "ev-1");
    let status = acks.message().await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let events: Vec<String> = app
        .db()
        .await
        .query(
            "SELECT event_id FROM inventory_events ORDER BY event_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(events, ["ev-1"]);
}

#[tokio::test]
async fn another_tenants_ids_are_not_found() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, |s| {
        s.auth.credentials.insert(
            "other-tenant".into(),
            credential(OTHER_TENANT_TOKEN, &["demo-double-opt-in"], &["*"]),
        );
    })
    .await;
    // A subscription, a release and its message, all of `demo`.
    subscribe_all(&app, "sku-x", &["+14155550188".to_string()]).await;
    set_stock(&app, "sku-x", "web", 0, 1).await;
    set_stock(&app, "sku-x", "web", 5, 2).await;
    assert!(fake.wait_for_messages(1, Duration::from_secs(20)).await);
    let db = app.db().await;
    let mut ids = Ids::default();
    eventually(Duration::from_secs(10), "the message to be sent", || async {
        let row = db
            .query_opt(
                "SELECT subscription_id::text, release_id::text, message_id::text FROM messages WHERE status = 'sent'",
                &[],
            )
            .await
            .unwrap();
        row.is_some()
    })
    .await;
    let row = db
        .query_one(
            "SELECT subscription_id::text, release_id::text, message_id::text FROM messages",
            &[],
        )
        .await
        .unwrap();
    ids.subscription = row.get(0);
    ids.release = row.get(1);
    ids.message = row.get(2);
    ids.exclusion = uuid::Uuid::new_v4().to_string();
    // The owner sees them.
    for rpc in ["GetSubscription", "GetRelease", "GetMessage"] {
        call(&app.channel, rpc, "demo", &ids)
            .await
            .unwrap_or_else(|s| panic!("{rpc}: {s:?}"));
    }
    // A caller of the other tenant, naming its own tenant, finds none of them.
    let raw = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let other = with_token(raw, OTHER_TENANT_TOKEN);
    for rpc in [
        "GetSubscription",
        "GetWaitlistPosition",
        "ConfirmSubscription",
        "Unsubscribe",
        "Explain",
        "GetRelease",
        "WatchRelease",
        "PauseRelease",
        "ResumeRelease",
        "CancelRelease",
        "GetMessage",
        "GetReleaseReport",
    ] {
        let answer = call(&other, rpc, "demo-double-opt-in", &ids).await;
        assert_eq!(answer.map_err(|s| s.code()), Err(Code::NotFound), "{rpc}");
    }
    // A list filtered by another tenant's release lists nothing.
    let listed = DispatchServiceClient::new(other.clone())
        .list_messages(pb::ListMessagesRequest {
            tenant_id: "demo-double-opt-in".into(),
            release_id: ids.release.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.messages.is_empty(), "{listed:?}");
    // And naming the owner's tenant is refused outright.
    let status = call(&other, "GetSubscription", "demo", &ids)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // Still the owner's, untouched.
    let sub = WaitlistServiceClient::new(app.channel.clone())
        .get_subscription(pb::GetSubscriptionRequest {
            tenant_id: "demo".into(),
            subscription_id: ids.subscription.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(sub.tenant_id, "demo");
}

#[tokio::test]
async fn health_and_reflection_need_no_token() {
    use tonic_health::pb::health_client::HealthClient;
    let app = spawn_app().await;
    let raw = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(raw.clone());
    eventually(Duration::from_secs(10), "health to answer SERVING", || {
        let mut health = health.clone();
        async move {
            health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok_and(|r| r.into_inner().status == 1)
        }
    })
    .await;
    let _ = &mut health;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::{server_reflection_request, ServerReflectionRequest};
    let mut reflection = ServerReflectionClient::new(raw);
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        }]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    assert!(format!("{answer:?}").contains("restock.v1.WaitlistService"));
}
