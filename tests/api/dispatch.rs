//! Dispatch: restocks become texts, each phone texted once, at the pace and hours allowed,
//! through a loopback provider that speaks Twilio's API.

use std::time::Duration;

use restock::proto::v1 as pb;
use restock_sms::fake::FakeTwilio;

use crate::helpers::*;

#[tokio::test]
async fn a_restock_texts_every_waiting_phone_once() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |_| {}).await;
    let phones = phones(40, 0);
    subscribe_all(&app, "sku-1", &phones).await;
    set_stock(&app, "sku-1", "loc-1", 0, 1).await;
    set_stock(&app, "sku-1", "loc-1", 12, 2).await;
    let done = app.settle(10).await;
    assert_eq!((done.planned, done.claimed), (1, 40), "{done:?}");
    let release = app.release_of("sku-1").await;
    assert_eq!(release.state(), pb::ReleaseState::Completed);
    assert_eq!(release.counts.as_ref().unwrap().sent_count, 40);
    let sent = per_phone(&fake);
    assert_eq!(sent.len(), 40);
    assert!(sent.values().all(|&n| n == 1), "{sent:?}");
    // Each text carries its own link, and the brand's opt-out language.
    let body = &fake.messages()[0].body;
    assert!(body.contains("/r/"), "{body}");
    assert!(body.ends_with("Reply STOP to opt out"), "{body}");
    let tokens: std::collections::HashSet<String> = fake
        .messages()
        .iter()
        .map(|m| {
            m.body
                .split("/r/")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(tokens.len(), 40);
    // Each status callback names its own message, so a report that beats the send's outcome
    // still finds it.
    let named: std::collections::HashSet<String> = fake
        .messages()
        .iter()
        .map(|m| {
            let url = m.status_callback.as_deref().expect("a status callback");
            let (path, query) = url.split_once('?').expect("a query");
            assert!(path.ends_with("/webhooks/twilio/status"), "{url}");
            assert!(query.starts_with("t=demo&m="), "{url}");
            query["t=demo&m=".len()..].to_string()
        })
        .collect();
    let ours: std::collections::HashSet<String> = app
        .all_messages(pb::ListMessagesRequest {
            tenant_id: "demo".into(),
            release_id: release.release_id.clone(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(named.len(), 40);
    assert_eq!(named, ours);
}

#[tokio::test]
async fn a_restock_at_11pm_defers_texts_to_8am_local_then_paces_them() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |s| {
        s.tenants.get_mut("demo").unwrap().sender_mps = 2;
    })
    .await;
    // 23:00 in New York (EST, UTC-5).
    let night = texting_hours() - chrono::Duration::hours(15);
    app.clock.set(night);
    let phones = phones(6, 100);
    for p in &phones {
        let mut req = subscribe_request("sku-1", p);
        req.time_zone = "America/New_York".into();
        app.subscribe(req).await.unwrap();
    }
    set_stock(&app, "sku-1", "loc-1", 0, 1).await;
    set_stock(&app, "sku-1", "loc-1", 9, 2).await;
    let step = app.step().await;
    assert_eq!((step.planned, step.claimed), (1, 0), "{step:?}");
    let rows = app
        .all_messages(pb::ListMessagesRequest {
            tenant_id: "demo".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(rows.len(), 6);
    let morning = night + chrono::Duration::hours(9);
    for m in &rows {
        assert_eq!(m.status(), pb::MessageStatus::Deferred);
        assert_eq!(m.reason(), pb::ReasonCode::QuietHours);
        assert_eq!(
            m.defer_until_time.map(|t| t.seconds),
            Some(morning.timestamp()),
            "08:00 New York time"
        );
    }
    // A minute before eight: a pass of every worker sends nothing.
    app.clock.set(morning - chrono::Duration::minutes(1));
    assert_eq!(app.step().await.claimed, 0);
    assert_eq!(fake.message_count(), 0);
    // At eight they go, at the sender's pace (2 a second), in waitlist order.
    app.clock.set(morning);
    assert_eq!(app.settle(10).await.claimed, 6);
    assert_eq!(fake.message_count(), 6);
    let got = fake.messages();
    // Waitlist order, one pacing slot (2 texts a second) after the other. Texts of one slot are
    // handed over side by side, and a slow hand-over may land after the next slot's, so an
    // arrival may be at most one slot away from its place in line.
    for (arrival, m) in got.iter().enumerate() {
        let place = phones.iter().position(|p| *p == m.to).unwrap();
        assert!(
            (place / 2).abs_diff(arrival / 2) <= 1,
            "{} arrived {arrival}th, {place}th in line",
            m.to
        );
    }
    assert_eq!(got.len(), 6);
    assert_at_most_per_second(&got, 2);
}

/// No window of one second holds more than `mps` arrivals at the provider.
fn assert_at_most_per_second(got: &[restock_sms::fake::ReceivedMessage], mps: usize) {
    let mut times: Vec<_> = got.iter().map(|m| m.received_at).collect();
    times.sort();
    for (i, t) in times.iter().enumerate() {
        let within = times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        assert!(
            within <= mps,
            "{within} texts within one second (limit {mps})"
        );
    }
}

#[tokio::test]
async fn the_senders_rate_is_never_exceeded_at_the_provider() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, |s| {
        s.tenants.get_mut("demo").unwrap().sender_mps = 5;
    })
    .await;
    subscribe_all(&app, "sku-1", &phones(20, 200)).await;
    set_stock(&app, "sku-1", "loc-1", 0, 1).await;
    set_stock(&app, "sku-1", "loc-1", 30, 2).await;
    assert!(fake.wait_for_messages(20, Duration::from_secs(20)).await);
    assert_at_most_per_second(&fake.messages(), 5);
    assert_eq!(fake.message_count(), 20);
}

#[tokio::test]
async fn a_phone_at_its_cap_is_deferred_not_dropped() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |s| {
        let t = s.tenants.get_mut("demo").unwrap();
        t.phone_cap_texts = 1;
        t.phone_cap_hours = 24;
    })
    .await;
    let phone = "+14155550300";
    app.subscribe(subscribe_request("sku-1", phone))
        .await
        .unwrap();
    app.subscribe(subscribe_request("sku-2", phone))
        .await
        .unwrap();
    set_stock(&app, "sku-1", "loc-1", 5, 1).await;
    assert_eq!(app.settle(10).await.claimed, 1);
    assert_eq!(fake.message_count(), 1);
    set_stock(&app, "sku-2", "loc-1", 5, 1).await;
    app.settle(10).await;
    let second = app.release_of("sku-2").await.release_id;
    let deferred = app
        .all_messages(pb::ListMessagesRequest {
            tenant_id: "demo".into(),
            release_id: second,
            ..Default::default()
        })
        .await;
    assert_eq!(deferred.len(), 1);
    assert_eq!(deferred[0].status(), pb::MessageStatus::Deferred);
    assert_eq!(deferred[0].reason(), pb::ReasonCode::FrequencyCapPhone);
    let due =
        chrono::DateTime::from_timestamp(deferred[0].defer_until_time.unwrap().seconds, 0).unwrap();
    // Deferred about a day (until the cap's window frees, then to texting hours).
    assert!(
        due > app.clock.now_dt() + chrono::Duration::hours(23),
        "{due}"
    );
    assert_eq!(fake.message_count(), 1);
}

#[tokio::test]
async fn throttled_sends_are_retried_with_backoff_and_sent_once() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |_| {}).await;
    subscribe_all(&app, "sku-1", &phones(5, 300)).await;
    fake.throttle_next(3, Duration::from_secs(1));
    set_stock(&app, "sku-1", "loc-1", 5, 1).await;
    assert_eq!(app.step().await.claimed, 5);
    assert_eq!(fake.message_count(), 2);
    let all = || {
        app.all_messages(pb::ListMessagesRequest {
            tenant_id: "demo".into(),
            ..Default::default()
        })
    };
    let retrying: Vec<pb::Message> = all()
        .await
        .into_iter()
        .filter(|m| m.status() == pb::MessageStatus::Planned && m.last_error.is_some())
        .collect();
    assert_eq!(retrying.len(), 3, "{retrying:?}");
    // Retry-After is honoured: a pass of every worker sends nothing before a second has passed
    // on the clock.
    assert_eq!(app.step().await.claimed, 0);
    assert_eq!(fake.message_count(), 2);
    app.clock.advance(chrono::Duration::seconds(2));
    assert_eq!(app.settle(10).await.claimed, 3);
    assert_eq!(statuses(&app).await.get("sent"), Some(&5));
    assert_eq!(fake.message_count(), 5);
    let retried = all().await.iter().filter(|m| m.attempt_count == 2).count();
    assert_eq!(retried, 3);
}

#[tokio::test]
async fn an_unknown_outcome_is_reconciled_with_the_provider_never_blindly_resent() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, |s| s.dispatch.concurrency = 1).await;
    subscribe_all(&app, "sku-1", &phones(4, 400)).await;
    // Two creates fail with a 500 after creating the message (it went out), two before (it
    // did not). Both look the same to the sender: outcome unknown.
    fake.fail_after_create_next(2);
    set_stock(&app, "sku-1", "loc-1", 5, 1).await;
    let db = app.db().await;
    eventually(Duration::from_secs(10), "two unknown sends", || async {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM messages WHERE status = 'sending' AND lease_owner IS NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n == 2
    })
    .await;
    fake.fail_next(2);
    // Reconciliation happens once the provider has had time to list the texts.
    app.clock.advance(chrono::Duration::seconds(11));
    eventually(Duration::from_secs(15), "all sent", || async {
        app.clock.advance(chrono::Duration::seconds(11));
        statuses(&app).await.get("sent") == Some(&4)
    })
    .await;
    let sent = per_phone(&fake);
    assert_eq!(sent.len(), 4);
    assert!(sent.values().all(|&n| n == 1), "{sent:?}");
}

#[tokio::test]
async fn a_provider_opt_out_is_recorded_and_an_invalid_number_is_not_retried() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |_| {}).await;
    let phones = phones(3, 500);
    subscribe_all(&app, "sku-1", &phones).await;
    fake.reject_number(&phones[1], 21610);
    // An invalid number is a permanent failure: no retry.
    fake.reject_number(&phones[2], 21211);
    set_stock(&app, "sku-1", "loc-1", 5, 1).await;
    app.settle(10).await;
    let s = statuses(&app).await;
    assert_eq!(
        (s.get("sent"), s.get("suppressed"), s.get("failed")),
        (Some(&1), Some(&1), Some(&1)),
        "{s:?}"
    );
    // Ten minutes on, a pass of every worker retries nothing.
    app.clock.advance(chrono::Duration::minutes(10));
    assert_eq!(app.step().await.claimed, 0);
    let failed: Vec<pb::Message> = app
        .all_messages(pb::ListMessagesRequest {
            tenant_id: "demo".into(),
            statuses: vec![pb::MessageStatus::Failed as i32],
            ..Default::default()
        })
        .await;
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].last_error.as_ref().unwrap().permanent,
        "{failed:?}"
    );
    assert_eq!(failed[0].attempt_count, 1);
    assert_eq!(fake.create_requests(), 3);
    let history = app
        .get_consent_history(pb::GetConsentHistoryRequest {
            tenant_id: "demo".into(),
            phone_number: phones[1].clone(),
            default_region: "US".into(),
        })
        .await
        .unwrap();
    assert_eq!(history.consent_state(), pb::ConsentState::OptedOut);
    let opt_outs = history
        .events
        .iter()
        .filter(|e| e.kind() == pb::ConsentEventKind::OptOut)
        .count();
    assert_eq!(opt_outs, 1, "{history:?}");
}

#[tokio::test]
async fn the_holdout_group_is_recorded_and_never_texted() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |s| {
        s.tenants.get_mut("demo").unwrap().holdout_share = 0.5;
    })
    .await;
    subscribe_all(&app, "sku-1", &phones(40, 600)).await;
    set_stock(&app, "sku-1", "loc-1", 50, 1).await;
    app.settle(10).await;
    assert_eq!(
        app.release_of("sku-1").await.state(),
        pb::ReleaseState::Completed
    );
    let s = statuses(&app).await;
    let (held, sent) = (s["held_out"], s["sent"]);
    assert_eq!(held + sent, 40, "{s:?}");
    assert!((8..=32).contains(&held), "{s:?}");
    assert_eq!(fake.message_count() as i64, sent);
}

#[tokio::test]
async fn a_staged_release_sells_out_before_its_second_wave_and_the_rest_keep_their_place() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |s| {
        let t = s.tenants.get_mut("demo").unwrap();
        t.release_strategy = restock_domain::tenant::ReleaseStrategy::Staged;
        t.stage_shares_bps = vec![3000, 7000];
        t.wave_interval_seconds = 600;
    })
    .await;
    let phones = phones(10, 700);
    subscribe_all(&app, "sku-1", &phones).await;
    set_stock(&app, "sku-1", "loc-1", 4, 1).await;
    assert_eq!(app.settle(10).await.claimed, 3);
    // The first 30% of the line (handed over side by side, so in any order).
    let mut first: Vec<String> = fake.messages().iter().map(|m| m.to.clone()).collect();
    first.sort();
    assert_eq!(first, phones[..3].to_vec(), "the first 30% of the waitlist");
    // Sold out before the next wave.
    set_stock(&app, "sku-1", "loc-1", 0, 2).await;
    app.clock.advance(chrono::Duration::seconds(601));
    app.settle(10).await;
    let release = app.release_of("sku-1").await;
    assert_eq!(release.state(), pb::ReleaseState::SoldOut);
    let counts = release.counts.unwrap();
    assert_eq!(
        counts
            .skipped_by_reason
            .iter()
            .map(|r| (r.reason(), r.count))
            .collect::<Vec<_>>(),
        [(pb::ReasonCode::ReleaseSoldOut, 7)],
        "{counts:?}"
    );
    assert_eq!(fake.message_count(), 3);
    // Everyone stays on the waitlist, in their place, for the next restock; the three texted
    // read NOTIFIED.
    let app = &app;
    let with_status = |status: pb::SubscriptionStatus| async move {
        app.list_subscriptions(pb::ListSubscriptionsRequest {
            tenant_id: "demo".into(),
            variant_id: "sku-1".into(),
            status: status as i32,
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .subscriptions
        .len()
    };
    assert_eq!(with_status(pb::SubscriptionStatus::Active).await, 7);
    assert_eq!(with_status(pb::SubscriptionStatus::Notified).await, 3);
}

#[tokio::test]
async fn a_proportional_release_opens_waves_by_the_stock() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |s| {
        let t = s.tenants.get_mut("demo").unwrap();
        t.release_strategy = restock_domain::tenant::ReleaseStrategy::Proportional;
        t.oversubscription_factor = 1.0;
        t.wave_interval_seconds = 300;
    })
    .await;
    subscribe_all(&app, "sku-1", &phones(10, 800)).await;
    set_stock(&app, "sku-1", "loc-1", 3, 1).await;
    assert_eq!(app.settle(10).await.claimed, 3);
    assert_eq!(fake.message_count(), 3, "one wave of stock × 1.0");
    set_stock(&app, "sku-1", "loc-1", 2, 2).await;
    app.clock.advance(chrono::Duration::seconds(301));
    assert_eq!(app.settle(10).await.claimed, 2);
    assert_eq!(fake.message_count(), 5);
}

#[tokio::test]
async fn a_phone_waiting_for_the_variant_and_its_product_gets_one_text() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |_| {}).await;
    let phone = "+14155550900";
    app.subscribe(subscribe_request("sku-1", phone))
        .await
        .unwrap();
    let mut product = subscribe_request("", phone);
    product.variant_id.clear();
    product.product_id = "prod-1".into();
    app.subscribe(product).await.unwrap();
    let mut ev = event("ev-1", "sku-1", "loc-1", 5, 1);
    ev.product_id = "prod-1".into();
    app.report_inventory(pb::ReportInventoryRequest {
        tenant_id: "demo".into(),
        events: vec![ev],
    })
    .await
    .unwrap();
    app.settle(10).await;
    assert_eq!(
        app.release_of("sku-1").await.state(),
        pb::ReleaseState::Completed
    );
    assert_eq!(fake.message_count(), 1);
}

#[tokio::test]
async fn explain_and_dry_run_know_who_was_just_texted() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, |_| {}).await;
    let sub = app
        .subscribe(subscribe_request("sku-1", "+14155551500"))
        .await
        .unwrap()
        .subscription
        .unwrap();
    set_stock(&app, "sku-1", "loc-1", 5, 1).await;
    assert_eq!(app.settle(10).await.claimed, 1);
    let explained = app
        .explain(pb::ExplainRequest {
            tenant_id: "demo".into(),
            subscription_id: sub.subscription_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(explained.reason(), pb::ReasonCode::RecentlyNotified);
    // The text it explains, by id, and the subscription reads as texted.
    let sent = app
        .all_messages(pb::ListMessagesRequest {
            tenant_id: "demo".into(),
            statuses: vec![pb::MessageStatus::Sent as i32],
            ..Default::default()
        })
        .await;
    assert_eq!(sent.len(), 1);
    assert_eq!(explained.message_id, sent[0].message_id);
    assert_eq!(
        app.subscription_status("demo", &sub.subscription_id)
            .await
            .0,
        pb::SubscriptionStatus::Notified
    );
    let dry = app
        .dry_run(pb::DryRunRequest {
            tenant_id: "demo".into(),
            variant_id: "sku-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dry.skip_count, 1);
    assert_eq!(
        dry.skipped_by_reason[0].reason(),
        pb::ReasonCode::RecentlyNotified
    );
}

/// A TCP proxy to Redis that can be cut and restored on the same port.
struct RedisProxy {
    addr: std::net::SocketAddr,
    target: std::net::SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RedisProxy {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut proxy = Self {
            addr: listener.local_addr().unwrap(),
            target,
            task: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            // Aborting this task drops the set, which closes every proxied connection.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

#[tokio::test]
async fn a_redis_outage_holds_texts_back_and_sending_resumes_by_itself() {
    let (_, redis) = base_env();
    let (host, db_index) = redis
        .trim_start_matches("redis://")
        .split_once('/')
        .expect("REDIS_URL is redis://host:port/db");
    let target = tokio::net::lookup_host(host).await.unwrap().next().unwrap();
    let mut proxy = RedisProxy::start(target).await;
    let fake = FakeTwilio::start().await.unwrap();
    let url = format!("redis://{}/{db_index}", proxy.addr);
    let app = spawn_sender(&fake, |s| s.redis.url = url).await;
    subscribe_all(&app, "sku-1", &phones(5, 1600)).await;
    proxy.cut().await;
    set_stock(&app, "sku-1", "loc-1", 5, 1).await;
    app.until("the release to be planned", || async {
        app.release_of("sku-1").await.state() != pb::ReleaseState::Planning
    })
    .await;
    // Without its caps nothing goes out (fail closed), and nothing is lost either.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.message_count(), 0);
    let s = statuses(&app).await;
    assert_eq!(s.values().sum::<i64>(), 5, "{s:?}");
    assert!(!s.contains_key("sent"), "{s:?}");
    proxy.restore().await;
    assert!(fake.wait_for_messages(5, Duration::from_secs(30)).await);
    eventually(Duration::from_secs(10), "all sent", || async {
        statuses(&app).await.get("sent") == Some(&5)
    })
    .await;
    assert_eq!(fake.message_count(), 5);
}

#[tokio::test]
async fn an_outcome_the_provider_cannot_be_asked_about_is_unknown_and_never_resent() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, |_| {}).await;
    subscribe_all(&app, "sku-1", &phones(1, 1700)).await;
    fake.fail_after_create_next(1);
    set_stock(&app, "sku-1", "loc-1", 5, 1).await;
    let db = app.db().await;
    eventually(Duration::from_secs(10), "an unknown send", || async {
        db.query_opt(
            "SELECT 1 FROM messages WHERE status = 'sending' AND lease_owner IS NULL",
            &[],
        )
        .await
        .unwrap()
        .is_some()
    })
    .await;
    // The provider goes away: it cannot say whether it has the text.
    drop(fake);
    eventually(Duration::from_secs(15), "marked unknown", || async {
        app.clock.advance(chrono::Duration::seconds(11));
        statuses(&app).await.get("unknown") == Some(&1)
    })
    .await;
    let (attempts, code): (i32, Option<String>) = db
        .query_one("SELECT attempts, last_error_code FROM messages", &[])
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((attempts, code.as_deref()), (1, Some("unknown")));
}
