//! DispatchService's releases and messages: reading them back (get, list, watch), steering a
//! release (pause, resume, cancel), and the input and lookup errors of every such RPC.

use std::collections::HashSet;
use std::time::Duration;

use crate::helpers::*;
use restock::config::Settings;
use restock::proto::v1 as pb;
use restock_domain::tenant::ReleaseStrategy;
use restock_sms::fake::FakeTwilio;
use tonic::Code;
use tonic_types::StatusExt;

const WAIT: Duration = Duration::from_secs(20);

/// Two waves of half the recipients each, an hour apart on the test's clock.
fn two_waves(s: &mut Settings) {
    let t = s.tenants.get_mut("demo").unwrap();
    t.release_strategy = ReleaseStrategy::Staged;
    t.stage_shares_bps = vec![5000, 5000];
    t.wave_interval_seconds = 3600;
}

/// Makes `variant` restock at `location` (sold out, then 12 available).
async fn restock(app: &TestApp, variant: &str, location: &str) {
    set_stock(app, variant, location, 0, 1).await;
    set_stock(app, variant, location, 12, 2).await;
}

/// The release once `check` holds (stepping a stepped app's workers, else polling).
async fn release_until(
    app: &TestApp,
    release_id: &str,
    what: &str,
    check: impl Fn(&pb::Release) -> bool,
) -> pb::Release {
    app.until(what, || async {
        check(&app.release("demo", release_id).await)
    })
    .await;
    app.release("demo", release_id).await
}

fn counts(r: &pb::Release) -> &pb::MessageCounts {
    r.counts.as_ref().unwrap()
}

fn by_reason(list: &[pb::ReasonCount]) -> Vec<(pb::ReasonCode, u64)> {
    list.iter().map(|r| (r.reason(), r.count)).collect()
}

fn messages_of(release_id: &str) -> pb::ListMessagesRequest {
    pb::ListMessagesRequest {
        tenant_id: "demo".into(),
        release_id: release_id.into(),
        ..Default::default()
    }
}

/// The PreconditionFailure subject and description of a FAILED_PRECONDITION.
fn precondition(status: &tonic::Status) -> (String, String) {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let details = status.get_error_details();
    let failure = details.precondition_failure().expect("PreconditionFailure");
    let v = &failure.violations[0];
    (v.subject.clone(), v.description.clone())
}

fn sorted(mut fields: Vec<String>) -> Vec<String> {
    fields.sort();
    fields
}

#[tokio::test]
async fn a_completed_release_shows_its_wave_counts_and_holdout() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |s| {
        s.tenants.get_mut("demo").unwrap().holdout_share = 0.5;
    })
    .await;
    subscribe_all(&app, "sku-1", &phones(20, 0)).await;
    restock(&app, "sku-1", "loc-1").await;
    let id = app.release_of("sku-1").await.release_id;
    let r = release_until(&app, &id, "the release to complete", |r| {
        r.state() == pb::ReleaseState::Completed
    })
    .await;

    assert_eq!(r.tenant_id, "demo");
    assert_eq!(r.variant_id, "sku-1");
    // The variant as a whole crossed the threshold: the release serves every location.
    assert!(r.location_id.is_empty());
    assert!(!r.restock_id.is_empty());
    assert_eq!(r.available_at_restock, 12);
    assert_eq!(r.strategy(), pb::ReleaseStrategy::Immediate);
    assert!(r.strategy_parameters.is_none());
    assert_eq!(r.holdout_bps, 5000);
    assert!(!r.state_reason.is_empty());
    let (create, start, end, update) = (
        r.create_time.unwrap(),
        r.start_time.expect("a start time"),
        r.end_time.expect("an end time"),
        r.update_time.unwrap(),
    );
    assert!(create.seconds <= start.seconds && start.seconds <= end.seconds);
    assert!(update.seconds >= end.seconds);
    assert!(r.next_wave_time.is_none());

    let c = counts(&r);
    assert_eq!(c.recipient_count, 20);
    assert!(
        c.held_out_count > 0 && c.held_out_count < 20,
        "a half held out: {c:?}"
    );
    assert_eq!(c.sent_count + c.held_out_count, 20, "{c:?}");
    assert_eq!(c.texted_count, c.sent_count);
    assert!(c.segment_count >= c.texted_count);
    assert_eq!(
        by_reason(&c.skipped_by_reason),
        [(pb::ReasonCode::Holdout, c.held_out_count)]
    );
    assert!(c.deferred_by_reason.is_empty());
    assert_eq!(fake.message_count() as u64, c.sent_count);

    // One wave, with the texts; the holdout is in no wave.
    assert_eq!(r.waves.len(), 1);
    let w = &r.waves[0];
    assert_eq!((w.number, w.state()), (1, pb::WaveState::Done));
    assert_eq!(w.available_before, 12);
    assert!(w.scheduled_time.is_some() && w.start_time.is_some() && w.end_time.is_some());
    let wc = w.counts.as_ref().unwrap();
    assert_eq!(wc.recipient_count, c.sent_count);
    assert_eq!(wc.sent_count, c.sent_count);
    assert_eq!(wc.segment_count, c.segment_count);

    // In plan order the texts come first, the holdout (never to be sent) last, across pages.
    let listed = app
        .all_messages(pb::ListMessagesRequest {
            page_size: 3,
            ..messages_of(&id)
        })
        .await;
    assert_eq!(listed.len(), 20);
    let ids: HashSet<&str> = listed.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), 20);
    let texted = c.sent_count as usize;
    assert!(listed[..texted]
        .iter()
        .all(|m| m.status() == pb::MessageStatus::Sent && m.wave == 1));
    assert!(listed[texted..].iter().all(|m| {
        m.status() == pb::MessageStatus::HeldOut
            && m.reason() == pb::ReasonCode::Holdout
            && m.wave == 0
            && m.body.is_empty()
    }));
}

#[tokio::test]
async fn list_releases_filters_newest_first_and_binds_page_tokens_to_filters() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |_| {}).await;
    let mut ids = Vec::new();
    for (i, variant) in ["sku-1", "sku-2", "sku-3"].into_iter().enumerate() {
        subscribe_all(&app, variant, &phones(2, 10 * i)).await;
        restock(&app, variant, "loc-1").await;
        ids.push(app.release_of(variant).await.release_id);
        app.clock.advance(chrono::Duration::seconds(10));
    }
    // sku-1, in stock at loc-1, now restocks at loc-2 too: a release of that location alone.
    restock(&app, "sku-1", "loc-2").await;
    app.until("a second release of sku-1", || async {
        app.list_releases(releases_of("sku-1"))
            .await
            .expect("list releases")
            .releases
            .len()
            == 2
    })
    .await;
    ids.push(
        app.list_releases(releases_of("sku-1"))
            .await
            .expect("list releases")
            .releases[0]
            .release_id
            .clone(),
    );
    let demo = || pb::ListReleasesRequest {
        tenant_id: "demo".into(),
        ..Default::default()
    };
    let id_list = |r: &pb::ListReleasesResponse| -> Vec<String> {
        r.releases.iter().map(|r| r.release_id.clone()).collect()
    };

    // Newest first, two pages.
    let first = app
        .list_releases(pb::ListReleasesRequest {
            page_size: 2,
            ..demo()
        })
        .await
        .expect("list releases");
    assert_eq!(id_list(&first), [ids[3].clone(), ids[2].clone()]);
    assert!(!first.next_page_token.is_empty());
    let second = app
        .list_releases(pb::ListReleasesRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..demo()
        })
        .await
        .expect("list releases");
    assert_eq!(id_list(&second), [ids[1].clone(), ids[0].clone()]);
    assert!(second.next_page_token.is_empty());
    // Every release carries its waves and counters.
    assert!(second.releases.iter().all(|r| r.counts.is_some()));

    // The filters.
    let only = |req: pb::ListReleasesRequest| {
        let app = &app;
        async move { id_list(&app.list_releases(req).await.expect("list releases")) }
    };
    assert_eq!(only(releases_of("sku-2")).await, [ids[1].clone()]);
    assert_eq!(
        only(pb::ListReleasesRequest {
            location_id: "loc-2".into(),
            ..demo()
        })
        .await,
        [ids[3].clone()]
    );
    let restock_id = app.release("demo", &ids[0]).await.restock_id;
    assert_eq!(
        only(pb::ListReleasesRequest {
            restock_id,
            ..demo()
        })
        .await,
        [ids[0].clone()]
    );
    assert!(only(pb::ListReleasesRequest {
        product_id: "no-such-product".into(),
        ..demo()
    })
    .await
    .is_empty());
    let created = |i: usize| {
        let app = &app;
        let id = ids[i].clone();
        async move { app.release("demo", &id).await.create_time.unwrap() }
    };
    assert_eq!(
        only(pb::ListReleasesRequest {
            create_time_start: Some(created(1).await),
            create_time_end: Some(created(2).await),
            ..demo()
        })
        .await,
        [ids[1].clone()]
    );
    for id in &ids {
        release_until(&app, id, "the release to complete", |r| {
            r.state() == pb::ReleaseState::Completed
        })
        .await;
    }
    assert_eq!(
        only(pb::ListReleasesRequest {
            states: vec![
                pb::ReleaseState::Completed as i32,
                pb::ReleaseState::Cancelled as i32
            ],
            ..demo()
        })
        .await
        .len(),
        4
    );
    assert!(only(pb::ListReleasesRequest {
        states: vec![pb::ReleaseState::Paused as i32],
        ..demo()
    })
    .await
    .is_empty());

    // A token belongs to the filters of its first page.
    let err = app
        .list_releases(pb::ListReleasesRequest {
            page_size: 2,
            page_token: first.next_page_token,
            ..releases_of("sku-1")
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);
}

#[tokio::test]
async fn watch_release_streams_progress_and_ends_ok_after_the_release_ends() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, two_waves).await;
    subscribe_all(&app, "sku-1", &phones(4, 0)).await;
    restock(&app, "sku-1", "loc-1").await;
    let id = app.release_of("sku-1").await.release_id;
    release_until(&app, &id, "wave 1 to be sent", |r| {
        counts(r).sent_count == 2
    })
    .await;

    let mut stream = app
        .watch_release(pb::WatchReleaseRequest {
            tenant_id: "demo".into(),
            release_id: id.clone(),
            min_interval: Some(prost_types::Duration {
                seconds: 0,
                nanos: 100_000_000,
            }),
        })
        .await
        .expect("watch");
    // A snapshot at once: wave 1 sent, wave 2 waiting for its time.
    let first = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a snapshot at once")
        .unwrap()
        .unwrap()
        .release
        .unwrap();
    assert_eq!(first.state(), pb::ReleaseState::Sending);
    assert_eq!(counts(&first).sent_count, 2);
    assert_eq!(first.waves[1].state(), pb::WaveState::Pending);
    assert!(first.next_wave_time.is_some());

    app.clock.advance(chrono::Duration::hours(1));
    let mut snapshots = vec![first];
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(s)) => snapshots.push(s.release.unwrap()),
                other => return other,
            }
        }
    })
    .await
    .expect("the stream to end");
    assert!(matches!(end, Ok(None)), "ended with OK: {end:?}");
    assert!(snapshots.len() >= 2, "{snapshots:?}");
    // Only changes are streamed.
    assert!(snapshots.windows(2).all(|w| w[0] != w[1]));
    let last = snapshots.last().unwrap();
    assert_eq!(last.state(), pb::ReleaseState::Completed);
    assert_eq!(counts(last).sent_count, 4);
    assert!(last.waves.iter().all(|w| w.state() == pb::WaveState::Done));
    assert!(snapshots[..snapshots.len() - 1]
        .iter()
        .all(|s| s.state() == pb::ReleaseState::Sending));

    // Watching an ended release answers it once and ends.
    let mut again = app
        .watch_release(pb::WatchReleaseRequest {
            tenant_id: "demo".into(),
            release_id: id,
            min_interval: None,
        })
        .await
        .unwrap();
    assert!(again.message().await.unwrap().is_some());
    assert!(again.message().await.unwrap().is_none());
}

#[tokio::test]
async fn a_paused_release_opens_no_wave_until_resumed() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, two_waves).await;
    subscribe_all(&app, "sku-1", &phones(4, 0)).await;
    restock(&app, "sku-1", "loc-1").await;
    let id = app.release_of("sku-1").await.release_id;
    let r = release_until(&app, &id, "wave 1 to be sent", |r| {
        counts(r).sent_count == 2
    })
    .await;
    assert_eq!(r.strategy(), pb::ReleaseStrategy::Staged);
    match &r.strategy_parameters {
        Some(pb::release::StrategyParameters::Staged(p)) => {
            assert_eq!(p.stage_shares_bps, [5000, 5000]);
            assert_eq!(p.interval.unwrap().seconds, 3600);
        }
        other => panic!("staged parameters expected: {other:?}"),
    }
    assert_eq!(r.waves.len(), 2);
    let (w1, w2) = (&r.waves[0], &r.waves[1]);
    assert_eq!((w1.share_bps, w2.share_bps), (5000, 5000));
    assert_eq!(w2.state(), pb::WaveState::Pending);
    assert_eq!(
        w2.scheduled_time.unwrap().seconds - w1.start_time.unwrap().seconds,
        3600
    );
    assert_eq!(r.next_wave_time, w2.scheduled_time);
    assert_eq!(w2.counts.as_ref().unwrap().recipient_count, 0);
    assert_eq!(counts(&r).planned_count, 2);

    let pause = |reason: &str| pb::PauseReleaseRequest {
        tenant_id: "demo".into(),
        release_id: id.clone(),
        reason: reason.into(),
    };
    let paused = app
        .pause_release(pause("stock count in progress"))
        .await
        .expect("pause")
        .release
        .unwrap();
    assert_eq!(paused.state(), pb::ReleaseState::Paused);
    assert_eq!(paused.state_reason, "stock count in progress");
    // Pausing again changes nothing.
    let again = app
        .pause_release(pause("again"))
        .await
        .expect("pause again")
        .release
        .unwrap();
    assert_eq!(again.state(), pb::ReleaseState::Paused);
    assert_eq!(again.state_reason, "stock count in progress");

    // Wave 2's time passes: a pass of every worker opens nothing while paused.
    app.clock.advance(chrono::Duration::hours(2));
    let step = app.step().await;
    assert_eq!((step.opened, step.claimed), (0, 0), "{step:?}");
    let held = app.release("demo", &id).await;
    assert_eq!(held.state(), pb::ReleaseState::Paused);
    assert_eq!(held.waves[1].state(), pb::WaveState::Pending);
    assert_eq!(fake.message_count(), 2);

    let resumed = app
        .resume_release(pb::ResumeReleaseRequest {
            tenant_id: "demo".into(),
            release_id: id.clone(),
        })
        .await
        .expect("resume")
        .release
        .unwrap();
    assert_eq!(resumed.state(), pb::ReleaseState::Sending);
    assert!(resumed.state_reason.is_empty());
    let done = release_until(&app, &id, "the release to complete", |r| {
        r.state() == pb::ReleaseState::Completed
    })
    .await;
    assert_eq!(counts(&done).sent_count, 4);
    assert_eq!(fake.message_count(), 4);
    assert_eq!(done.waves[1].counts.as_ref().unwrap().sent_count, 2);

    // An ended release can be neither paused nor resumed.
    let err = app
        .resume_release(pb::ResumeReleaseRequest {
            tenant_id: "demo".into(),
            release_id: id.clone(),
        })
        .await
        .unwrap_err();
    let (subject, description) = precondition(&err);
    assert_eq!(subject, "release_id");
    assert!(description.contains("completed"), "{description}");
    let err = app.pause_release(pause("too late")).await.unwrap_err();
    precondition(&err);
}

#[tokio::test]
async fn a_cancelled_release_skips_the_rest_and_stays_cancelled() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, two_waves).await;
    subscribe_all(&app, "sku-1", &phones(4, 0)).await;
    restock(&app, "sku-1", "loc-1").await;
    let id = app.release_of("sku-1").await.release_id;
    release_until(&app, &id, "wave 1 to be sent", |r| {
        counts(r).sent_count == 2
    })
    .await;

    let cancel = || pb::CancelReleaseRequest {
        tenant_id: "demo".into(),
        release_id: id.clone(),
        reason: "wrong price on the product page".into(),
    };
    let r = app
        .cancel_release(cancel())
        .await
        .expect("cancel")
        .release
        .unwrap();
    assert_eq!(r.state(), pb::ReleaseState::Cancelled);
    assert_eq!(r.state_reason, "wrong price on the product page");
    assert!(r.end_time.is_some());
    assert!(r.next_wave_time.is_none());
    let c = counts(&r);
    assert_eq!((c.sent_count, c.skipped_count, c.planned_count), (2, 2, 0));
    assert_eq!(
        by_reason(&c.skipped_by_reason),
        [(pb::ReasonCode::ReleaseCancelled, 2)]
    );
    assert_eq!(r.waves[1].state(), pb::WaveState::Cancelled);

    // Cancelling again changes nothing; resuming or pausing is refused.
    let again = app
        .cancel_release(cancel())
        .await
        .expect("cancel again")
        .release
        .unwrap();
    assert_eq!(again.state(), pb::ReleaseState::Cancelled);
    let err = app
        .resume_release(pb::ResumeReleaseRequest {
            tenant_id: "demo".into(),
            release_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert!(precondition(&err).1.contains("cancelled"));

    // Wave 2's time passes: a pass of every worker sends nothing more.
    app.clock.advance(chrono::Duration::hours(2));
    let step = app.step().await;
    assert_eq!((step.opened, step.claimed), (0, 0), "{step:?}");
    assert_eq!(fake.message_count(), 2);
    let skipped = app
        .list_messages(pb::ListMessagesRequest {
            statuses: vec![pb::MessageStatus::Skipped as i32],
            ..messages_of(&id)
        })
        .await
        .expect("list messages")
        .messages;
    assert_eq!(skipped.len(), 2);
    assert!(skipped
        .iter()
        .all(|m| m.reason() == pb::ReasonCode::ReleaseCancelled && m.wave == 0));
}

#[tokio::test]
async fn messages_list_in_plan_order_and_filter_by_phone_subscription_and_status() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, two_waves).await;
    // One at a time, so the waitlist order (and so the plan order) is the phones' order.
    let phones = phones(4, 0);
    let mut subscriptions = Vec::new();
    for p in &phones {
        let s = app.subscribe(subscribe_request("sku-1", p)).await.unwrap();
        subscriptions.push(s.subscription.unwrap().subscription_id);
    }
    restock(&app, "sku-1", "loc-1").await;
    let id = app.release_of("sku-1").await.release_id;
    release_until(&app, &id, "wave 1 to be sent", |r| {
        counts(r).sent_count == 2
    })
    .await;

    let plan = |all: &[pb::Message]| -> Vec<(String, u32, pb::MessageStatus)> {
        all.iter()
            .map(|m| (m.phone_number.clone(), m.wave, m.status()))
            .collect()
    };
    let expect = |waves: [(u32, pb::MessageStatus); 4]| -> Vec<(String, u32, pb::MessageStatus)> {
        phones
            .iter()
            .zip(waves)
            .map(|(p, (w, s))| (p.clone(), w, s))
            .collect()
    };
    use pb::MessageStatus::{Planned, Sent};
    let paged = pb::ListMessagesRequest {
        page_size: 1,
        ..messages_of(&id)
    };
    assert_eq!(
        plan(&app.all_messages(paged.clone()).await),
        expect([(1, Sent), (1, Sent), (0, Planned), (0, Planned)])
    );

    // Status filter.
    let planned = app
        .list_messages(pb::ListMessagesRequest {
            statuses: vec![Planned as i32],
            ..messages_of(&id)
        })
        .await
        .expect("list messages");
    assert_eq!(
        plan(&planned.messages),
        expect([(1, Sent), (1, Sent), (0, Planned), (0, Planned)])[2..]
    );

    // Wave 2 opens an hour later.
    app.clock.advance(chrono::Duration::hours(1));
    release_until(&app, &id, "the release to complete", |r| {
        r.state() == pb::ReleaseState::Completed
    })
    .await;
    let all = app.all_messages(paged.clone()).await;
    assert_eq!(
        plan(&all),
        expect([(1, Sent), (1, Sent), (2, Sent), (2, Sent)])
    );

    // One message, whole.
    let m = app
        .get_message(pb::GetMessageRequest {
            tenant_id: "demo".into(),
            message_id: all[2].message_id.clone(),
        })
        .await
        .expect("get message")
        .message
        .unwrap();
    assert_eq!(m, all[2]);
    assert_eq!(m.release_id, id);
    assert_eq!(m.subscription_id, subscriptions[2]);
    assert_eq!(m.variant_id, "sku-1");
    assert_eq!(m.phone_number, phones[2]);
    assert_eq!(m.kind(), pb::MessageKind::First);
    assert_eq!(m.reason(), pb::ReasonCode::Unspecified);
    assert!(m.body.contains("/r/"), "{}", m.body);
    assert!(m.segment_count >= 1);
    assert_eq!(m.encoding(), pb::MessageEncoding::Gsm7);
    assert!(!m.sender_id.is_empty());
    assert!(m.provider_message_id.starts_with("SM"), "{m:?}");
    assert_eq!(m.attempt_count, 1);
    assert!(m.last_error.is_none());
    assert!(m.send_time.is_some() && m.create_time.is_some() && m.update_time.is_some());
    let sent = fake
        .messages()
        .into_iter()
        .find(|f| f.to == phones[2])
        .unwrap();
    assert_eq!(sent.body, m.body);

    // Phone filter, in national format with a region.
    let national = format!(
        "({}) {}-{}",
        &phones[1][2..5],
        &phones[1][5..8],
        &phones[1][8..]
    );
    let by_phone = app
        .list_messages(pb::ListMessagesRequest {
            tenant_id: "demo".into(),
            phone_number: national.clone(),
            default_region: "US".into(),
            ..Default::default()
        })
        .await
        .expect("list messages");
    assert_eq!(by_phone.messages.len(), 1);
    assert_eq!(by_phone.messages[0].phone_number, phones[1]);
    let err = app
        .list_messages(pb::ListMessagesRequest {
            tenant_id: "demo".into(),
            phone_number: national,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["phone_number"]);

    // Subscription filter.
    let by_subscription = app
        .list_messages(pb::ListMessagesRequest {
            tenant_id: "demo".into(),
            subscription_id: subscriptions[3].clone(),
            ..Default::default()
        })
        .await
        .expect("list messages");
    assert_eq!(plan(&by_subscription.messages), expect([(2, Sent); 4])[3..]);

    // Without a release: every message of the tenant, newest first, paged.
    let newest = app
        .all_messages(pb::ListMessagesRequest {
            tenant_id: "demo".into(),
            page_size: 3,
            ..Default::default()
        })
        .await;
    assert_eq!(newest.len(), 4);
    let newest_ids: HashSet<String> = newest.into_iter().map(|m| m.message_id).collect();
    let all_ids: HashSet<String> = all.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(newest_ids, all_ids);

    // A token belongs to the filters of its first page.
    let token = app
        .list_messages(paged)
        .await
        .expect("list messages")
        .next_page_token;
    let err = app
        .list_messages(pb::ListMessagesRequest {
            page_size: 1,
            page_token: token,
            statuses: vec![Sent as i32],
            ..messages_of(&id)
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_every_bad_field() {
    let app = spawn_app().await;
    let mut client = app.dispatch();
    let long = "x".repeat(501);

    let err = client
        .get_release(pb::GetReleaseRequest {
            tenant_id: String::new(),
            release_id: "not-a-uuid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(sorted(violated_fields(&err)), ["release_id", "tenant_id"]);

    let err = client
        .list_releases(pb::ListReleasesRequest {
            tenant_id: "demo".into(),
            page_size: -1,
            page_token: "garbage".into(),
            variant_id: "v".repeat(200),
            restock_id: "nope".into(),
            states: vec![pb::ReleaseState::Completed as i32, 0, 99],
            create_time_start: Some(prost_types::Timestamp {
                seconds: 2_000_000_000,
                nanos: 0,
            }),
            create_time_end: Some(prost_types::Timestamp {
                seconds: 1_000_000_000,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        sorted(violated_fields(&err)),
        [
            "create_time_end",
            "page_size",
            "page_token",
            "restock_id",
            "states[1]",
            "states[2]",
            "variant_id"
        ]
    );

    for nanos in [50_000_000, -1] {
        let err = client
            .watch_release(pb::WatchReleaseRequest {
                tenant_id: "demo".into(),
                release_id: String::new(),
                min_interval: Some(prost_types::Duration { seconds: 0, nanos }),
            })
            .await
            .unwrap_err();
        assert_eq!(
            sorted(violated_fields(&err)),
            ["min_interval", "release_id"]
        );
    }
    let err = client
        .watch_release(pb::WatchReleaseRequest {
            tenant_id: "demo".into(),
            release_id: uuid::Uuid::new_v4().to_string(),
            min_interval: Some(prost_types::Duration {
                seconds: 61,
                nanos: 0,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["min_interval"]);

    let err = client
        .pause_release(pb::PauseReleaseRequest {
            tenant_id: String::new(),
            release_id: "1".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        sorted(violated_fields(&err)),
        ["reason", "release_id", "tenant_id"]
    );
    let err = client
        .pause_release(pb::PauseReleaseRequest {
            tenant_id: "demo".into(),
            release_id: uuid::Uuid::new_v4().to_string(),
            reason: long.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["reason"]);

    let err = client
        .resume_release(pb::ResumeReleaseRequest::default())
        .await
        .unwrap_err();
    assert_eq!(sorted(violated_fields(&err)), ["release_id", "tenant_id"]);

    let err = client
        .cancel_release(pb::CancelReleaseRequest {
            tenant_id: "demo".into(),
            release_id: "zzz".into(),
            reason: "   ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(sorted(violated_fields(&err)), ["reason", "release_id"]);

    let err = client
        .get_message(pb::GetMessageRequest {
            tenant_id: "demo".into(),
            message_id: "42".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["message_id"]);

    let err = client
        .list_messages(pb::ListMessagesRequest {
            tenant_id: String::new(),
            page_size: -5,
            page_token: "garbage".into(),
            release_id: "r".into(),
            phone_number: "12".into(),
            default_region: "US".into(),
            subscription_id: "s".into(),
            statuses: vec![0],
        })
        .await
        .unwrap_err();
    assert_eq!(
        sorted(violated_fields(&err)),
        [
            "page_size",
            "page_token",
            "phone_number",
            "release_id",
            "statuses[0]",
            "subscription_id",
            "tenant_id"
        ]
    );
    // Nothing was written.
    assert_eq!(app.count("releases").await, 0);
}

#[tokio::test]
async fn unknown_tenants_releases_and_messages_are_not_found() {
    let app = spawn_app().await;
    let mut client = app.dispatch();
    let missing = uuid::Uuid::new_v4().to_string();
    let demo = |tenant: &str| pb::GetReleaseRequest {
        tenant_id: tenant.into(),
        release_id: missing.clone(),
    };

    let not_found = |r: Result<(), tonic::Status>| {
        let err = r.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        err.message().to_string()
    };
    let msg = not_found(client.get_release(demo("demo")).await.map(|_| ()));
    assert!(msg.contains("release"), "{msg}");
    let msg = not_found(client.get_release(demo("nobody")).await.map(|_| ()));
    assert!(msg.contains("tenant"), "{msg}");
    not_found(
        client
            .list_releases(pb::ListReleasesRequest {
                tenant_id: "nobody".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    not_found(
        client
            .watch_release(pb::WatchReleaseRequest {
                tenant_id: "demo".into(),
                release_id: missing.clone(),
                min_interval: None,
            })
            .await
            .map(|_| ()),
    );
    not_found(
        client
            .pause_release(pb::PauseReleaseRequest {
                tenant_id: "demo".into(),
                release_id: missing.clone(),
                reason: "why".into(),
            })
            .await
            .map(|_| ()),
    );
    not_found(
        client
            .resume_release(pb::ResumeReleaseRequest {
                tenant_id: "demo".into(),
                release_id: missing.clone(),
            })
            .await
            .map(|_| ()),
    );
    not_found(
        client
            .cancel_release(pb::CancelReleaseRequest {
                tenant_id: "demo".into(),
                release_id: missing.clone(),
                reason: "why".into(),
            })
            .await
            .map(|_| ()),
    );
    let msg = not_found(
        client
            .get_message(pb::GetMessageRequest {
                tenant_id: "demo".into(),
                message_id: missing.clone(),
            })
            .await
            .map(|_| ()),
    );
    assert!(msg.contains("message"), "{msg}");
    not_found(
        client
            .list_messages(pb::ListMessagesRequest {
                tenant_id: "nobody".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );

    // An empty tenant lists nothing, without a next page.
    let empty = client
        .list_releases(pb::ListReleasesRequest {
            tenant_id: "demo".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(empty.releases.is_empty() && empty.next_page_token.is_empty());
}

async fn exclude_variant(app: &TestApp, variant: &str) {
    app.create_exclusion(pb::CreateExclusionRequest {
        tenant_id: "demo".into(),
        target: Some(pb::create_exclusion_request::Target::VariantId(
            variant.into(),
        )),
        reason: "recalled".into(),
        creator: "merchandising".into(),
        ..Default::default()
    })
    .await
    .expect("create exclusion");
}

#[tokio::test]
async fn an_exclusion_made_during_a_release_stops_the_waves_not_yet_planned() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, two_waves).await;
    subscribe_all(&app, "sku-1", &phones(4, 0)).await;
    restock(&app, "sku-1", "loc-1").await;
    let id = app.release_of("sku-1").await.release_id;
    release_until(&app, &id, "wave 1 to be sent", |r| {
        counts(r).sent_count == 2
    })
    .await;
    exclude_variant(&app, "sku-1").await;
    // Wave 2 opens an hour later, and its planning sees the exclusion.
    app.clock.advance(chrono::Duration::hours(2));
    let done = release_until(&app, &id, "the release to end", |r| {
        r.state() == pb::ReleaseState::Completed
    })
    .await;
    let c = counts(&done);
    assert_eq!((c.sent_count, c.skipped_count), (2, 2));
    assert_eq!(
        by_reason(&c.skipped_by_reason),
        [(pb::ReasonCode::VariantExcluded, 2)]
    );
    assert_eq!(fake.message_count(), 2);
}

#[tokio::test]
async fn an_exclusion_made_after_planning_stops_the_texts_not_yet_sent() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |_| {}).await;
    // 23:00 in New York: the texts are planned, deferred to 08:00.
    let night = texting_hours() - chrono::Duration::hours(15);
    app.clock.set(night);
    for p in phones(3, 0) {
        let mut req = subscribe_request("sku-1", &p);
        req.time_zone = "America/New_York".into();
        app.subscribe(req).await.unwrap();
    }
    restock(&app, "sku-1", "loc-1").await;
    let id = app.release_of("sku-1").await.release_id;
    release_until(&app, &id, "the texts to be deferred", |r| {
        counts(r).deferred_count == 3
    })
    .await;
    exclude_variant(&app, "sku-1").await;
    // Morning: the sender takes the deferred texts up again, and the exclusion stops them.
    app.clock.set(night + chrono::Duration::hours(9));
    let done = release_until(&app, &id, "the deferred texts to be skipped", |r| {
        counts(r).skipped_count == 3
    })
    .await;
    assert_eq!(
        by_reason(&counts(&done).skipped_by_reason),
        [(pb::ReasonCode::VariantExcluded, 3)]
    );
    assert_eq!(counts(&done).sent_count, 0);
    assert_eq!(fake.message_count(), 0);
}
