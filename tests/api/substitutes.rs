//! Close substitutes: a purchase of one member of a group stops restock texts about the others,
//! in planning and again at send time; Explain names the purchase; DryRun counts it.

use crate::helpers::*;
use restock::proto::v1 as pb;
use restock_sms::fake::FakeTwilio;
use tonic::Code;

fn variant_member(v: &str) -> pb::SubstituteMember {
    pb::SubstituteMember {
        member: Some(pb::substitute_member::Member::VariantId(v.into())),
    }
}

fn product(p: &str) -> pb::SubstituteMember {
    pb::SubstituteMember {
        member: Some(pb::substitute_member::Member::ProductId(p.into())),
    }
}

async fn set_group(
    app: &TestApp,
    group: &str,
    members: Vec<pb::SubstituteMember>,
) -> Result<pb::SetSubstituteGroupResponse, tonic::Status> {
    app.set_substitute_group(pb::SetSubstituteGroupRequest {
        tenant_id: "demo".into(),
        group_id: group.into(),
        members,
    })
    .await
}

async fn subscribe_ny(app: &TestApp, variant: &str, phone: &str) -> String {
    let mut req = subscribe_request(variant, phone);
    req.time_zone = "America/New_York".into();
    app.subscribe(req)
        .await
        .unwrap()
        .subscription
        .unwrap()
        .subscription_id
}

/// The status and reason of the one message to `subscription`, as ListMessages answers.
async fn message_of(app: &TestApp, subscription: &str) -> (pb::MessageStatus, pb::ReasonCode) {
    let found = app
        .all_messages(pb::ListMessagesRequest {
            tenant_id: "demo".into(),
            subscription_id: subscription.into(),
            ..Default::default()
        })
        .await;
    assert_eq!(found.len(), 1, "{found:?}");
    (found[0].status(), found[0].reason())
}

/// Ann bought the other colour before the restock: planning skips her. Bob buys it after his
/// text was planned (deferred to the morning) but before it goes: the sender skips him. Cy,
/// who bought nothing, is texted. Explain names Bob's order; DryRun counts both.
#[tokio::test]
async fn a_purchase_of_a_substitute_stops_the_text_in_planning_and_at_send_time() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |_| {}).await;
    let night = texting_hours() - chrono::Duration::hours(15); // 23:00 in New York
    app.clock.set(night);
    let created = set_group(
        &app,
        "parka",
        vec![variant_member("parka-red"), variant_member("parka-blue")],
    )
    .await
    .unwrap();
    assert!(created.created);
    let (ann, bob, cy) = ("+14155550201", "+14155550202", "+14155550203");
    let ann_id = subscribe_ny(&app, "parka-red", ann).await;
    let bob_id = subscribe_ny(&app, "parka-red", bob).await;
    let cy_id = subscribe_ny(&app, "parka-red", cy).await;
    app.record_purchase(purchase(
        "order-ann",
        ann,
        "parka-blue",
        1,
        (8_900, "USD"),
        app.clock.now_dt() - chrono::Duration::minutes(1),
    ))
    .await
    .expect("record the purchase");
    // A purchase of something outside the group changes nothing.
    app.record_purchase(purchase(
        "order-cy",
        cy,
        "scarf-1",
        1,
        (8_900, "USD"),
        app.clock.now_dt() - chrono::Duration::minutes(1),
    ))
    .await
    .expect("record the purchase");

    set_stock(&app, "parka-red", "loc-1", 0, 1).await;
    set_stock(&app, "parka-red", "loc-1", 9, 2).await;
    assert_eq!(app.step().await.planned, 1);
    assert_eq!(
        message_of(&app, &ann_id).await,
        (
            pb::MessageStatus::Skipped,
            pb::ReasonCode::SubstitutePurchased
        )
    );
    assert_eq!(
        message_of(&app, &bob_id).await.0,
        pb::MessageStatus::Deferred
    );
    assert_eq!(
        message_of(&app, &cy_id).await.0,
        pb::MessageStatus::Deferred
    );

    // After planning, before the morning: Bob buys the blue one.
    app.clock.set(night + chrono::Duration::hours(2));
    app.record_purchase(purchase(
        "order-bob",
        bob,
        "parka-blue",
        1,
        (8_900, "USD"),
        app.clock.now_dt() - chrono::Duration::minutes(1),
    ))
    .await
    .expect("record the purchase");
    app.clock.set(night + chrono::Duration::hours(9)); // 08:00 in New York
    assert_eq!(app.settle(10).await.claimed, 2);
    assert_eq!(
        message_of(&app, &bob_id).await,
        (
            pb::MessageStatus::Skipped,
            pb::ReasonCode::SubstitutePurchased
        )
    );
    let to: Vec<String> = fake.messages().into_iter().map(|m| m.to).collect();
    assert_eq!(
        to,
        [cy],
        "only the shopper who bought no substitute is texted"
    );

    // Explain says which purchase stopped Bob's text.
    let why = app
        .explain(pb::ExplainRequest {
            tenant_id: "demo".into(),
            subscription_id: bob_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(why.decision, pb::EligibilityDecision::Skip as i32);
    assert_eq!(why.reason, pb::ReasonCode::SubstitutePurchased as i32);
    let rule = why
        .rules
        .iter()
        .find(|r| r.rule == pb::EligibilityRule::SubstitutePurchase as i32)
        .unwrap();
    assert_eq!(rule.verdict, pb::RuleVerdict::Skip as i32);
    assert!(
        rule.explanation.contains("order order-bob") && rule.explanation.contains("parka-blue"),
        "{}",
        rule.explanation
    );
    // ListMessages reports the reason too.
    let msgs = app
        .list_messages(pb::ListMessagesRequest {
            tenant_id: "demo".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .messages;
    let substitute = msgs
        .iter()
        .filter(|m| m.reason == pb::ReasonCode::SubstitutePurchased as i32)
        .count();
    assert_eq!(substitute, 2);

    // DryRun counts both buyers under the reason.
    let dry = app
        .dry_run(pb::DryRunRequest {
            tenant_id: "demo".into(),
            variant_id: "parka-red".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let counted = dry
        .skipped_by_reason
        .iter()
        .find(|c| c.reason == pb::ReasonCode::SubstitutePurchased as i32)
        .map(|c| c.count);
    assert_eq!(counted, Some(2), "{:?}", dry.skipped_by_reason);

    // The group deleted, the purchase no longer suppresses anything.
    app.delete_substitute_group(pb::DeleteSubstituteGroupRequest {
        tenant_id: "demo".into(),
        group_id: "parka".into(),
    })
    .await
    .unwrap();
    let why = app
        .explain(pb::ExplainRequest {
            tenant_id: "demo".into(),
            subscription_id: bob_id,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_ne!(why.reason, pb::ReasonCode::SubstitutePurchased as i32);
}

/// A product in a group stands for its variants; the variants of the restocked variant's own
/// product are not its substitutes; a configured group works as one set through the API.
#[tokio::test]
async fn product_members_and_configured_groups_suppress_the_other_members() {
    let app = spawn_app_with(|s| {
        s.dispatch.enabled = false;
        s.tenants.get_mut("demo").unwrap().substitute_groups.insert(
            "boots".into(),
            restock_domain::tenant::SubstituteGroupConfig {
                variants: vec!["boot-classic-42".into()],
                products: vec!["boot-new".into()],
            },
        );
    })
    .await;
    app.clock.set(texting_hours());
    // The catalogue: boot-new-42 and boot-new-43 are variants of product boot-new.
    for (i, v) in ["boot-new-42", "boot-new-43"].iter().enumerate() {
        let mut ev = event(&format!("cat-{i}"), v, "web", 0, 1);
        ev.product_id = "boot-new".into();
        app.report_inventory(pb::ReportInventoryRequest {
            tenant_id: "demo".into(),
            events: vec![ev],
        })
        .await
        .unwrap();
    }
    let phone = "+14155550211";
    let classic = subscribe_ny(&app, "boot-classic-42", phone).await;
    let new_43 = subscribe_ny(&app, "boot-new-43", phone).await;
    app.record_purchase(purchase(
        "order-1",
        phone,
        "boot-new-42",
        1,
        (8_900, "USD"),
        app.clock.now_dt() - chrono::Duration::minutes(1),
    ))
    .await
    .expect("record the purchase");
    let reason = |id: String, v: &'static str| {
        let app = &app;
        async move {
            app.explain(pb::ExplainRequest {
                tenant_id: "demo".into(),
                subscription_id: id,
                variant_id: v.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .rules
            .into_iter()
            .find(|r| r.rule == pb::EligibilityRule::SubstitutePurchase as i32)
            .unwrap()
        }
    };
    // Buying a variant of the product member suppresses the variant member.
    let r = reason(classic.clone(), "boot-classic-42").await;
    assert_eq!(r.verdict, pb::RuleVerdict::Skip as i32, "{}", r.explanation);
    assert!(r.explanation.contains("boot-new-42"), "{}", r.explanation);
    // Another size of the same product is not a substitute of it through the group.
    let r = reason(new_43, "boot-new-43").await;
    assert_eq!(r.verdict, pb::RuleVerdict::Pass as i32, "{}", r.explanation);

    // The configured group is listed, read only.
    let listed = app
        .list_substitute_groups(pb::ListSubstituteGroupsRequest {
            tenant_id: "demo".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.groups.len(), 1);
    let g = &listed.groups[0];
    assert_eq!(g.group_id, "config.boots");
    assert!(g.configured);
    assert_eq!(
        g.members,
        [variant_member("boot-classic-42"), product("boot-new")]
    );
    let refused = app
        .delete_substitute_group(pb::DeleteSubstituteGroupRequest {
            tenant_id: "demo".into(),
            group_id: "config.boots".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let r = reason(classic, "boot-classic-42").await;
    assert_eq!(
        r.verdict,
        pb::RuleVerdict::Skip as i32,
        "the refused delete kept the group"
    );
}

/// Setting the same members again changes nothing; new members replace the old; the list
/// pages by group id; bad input names its fields and writes nothing.
#[tokio::test]
async fn substitute_groups_are_replaced_whole_listed_in_pages_and_validated() {
    let app = spawn_app_with(|s| s.dispatch.enabled = false).await;
    let first = set_group(&app, "g1", vec![variant_member("a"), product("p")])
        .await
        .unwrap();
    assert!(first.created);
    let again = set_group(&app, "g1", vec![product("p"), variant_member("a")])
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(
        again.group, first.group,
        "the same members again changed the group"
    );
    let replaced = set_group(
        &app,
        "g1",
        vec![
            variant_member("a"),
            variant_member("b"),
            variant_member("c"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        replaced.group.unwrap().members,
        [
            variant_member("a"),
            variant_member("b"),
            variant_member("c")
        ]
    );
    for id in ["g2", "g3"] {
        set_group(&app, id, vec![variant_member("x"), variant_member("y")])
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .list_substitute_groups(pb::ListSubstituteGroupsRequest {
                tenant_id: "demo".into(),
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap();
        assert!(page.groups.len() <= 2);
        seen.extend(page.groups.into_iter().map(|g| g.group_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["g1", "g2", "g3"]);

    let before = (
        app.count("substitute_groups").await,
        app.count("substitute_members").await,
    );
    let cases: Vec<(pb::SetSubstituteGroupRequest, &[&str])> = vec![
        (
            pb::SetSubstituteGroupRequest {
                tenant_id: String::new(),
                group_id: "config.x".into(),
                members: vec![variant_member("a")],
            },
            &["tenant_id", "group_id", "members"],
        ),
        (
            pb::SetSubstituteGroupRequest {
                tenant_id: "demo".into(),
                group_id: "g1".into(),
                members: vec![
                    variant_member("a"),
                    variant_member("a"),
                    pb::SubstituteMember { member: None },
                    variant_member(""),
                    product(&"p".repeat(200)),
                ],
            },
            &[
                "members[1]",
                "members[2]",
                "members[3].variant_id",
                "members[4].product_id",
            ],
        ),
        (
            pb::SetSubstituteGroupRequest {
                tenant_id: "demo".into(),
                group_id: "big".into(),
                members: (0..101).map(|i| variant_member(&format!("v{i}"))).collect(),
            },
            &["members"],
        ),
    ];
    for (req, fields) in cases {
        let status = app.set_substitute_group(req).await.unwrap_err();
        assert_eq!(violated_fields(&status), *fields);
    }
    let status = app
        .delete_substitute_group(pb::DeleteSubstituteGroupRequest {
            tenant_id: "demo".into(),
            group_id: "no-such-group".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = app
        .list_substitute_groups(pb::ListSubstituteGroupsRequest {
            tenant_id: "demo".into(),
            page_size: -1,
            page_token: "forged".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["page_size", "page_token"]);
    assert_eq!(
        (
            app.count("substitute_groups").await,
            app.count("substitute_members").await,
        ),
        before,
        "a refused call wrote something"
    );
}
