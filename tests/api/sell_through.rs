//! Sell-through waves, end to end: a first share of the list, then waves sized from the live
//! stock that open as soon as the previous wave's demand is absorbed (purchases through
//! RecordPurchase, stock through the inventory stream), and that wait while the stock goes to
//! others faster than the texts explain.

use std::time::Duration;

use restock::config::Settings;
use restock::proto::v1 as pb;
use restock_domain::tenant::ReleaseStrategy;
use restock_sms::fake::FakeTwilio;

use crate::dispatch::{dispatch, eventually, phones, set_stock, spawn_sender};
use crate::helpers::*;
use crate::purchases::ts;

const WAIT: Duration = Duration::from_secs(20);

/// 30% of the list first; the next wave when its recipients bought half of its texts' worth,
/// or after an hour; one recipient per unit of stock.
fn sell_through(s: &mut Settings) {
    let t = s.tenants.get_mut("demo").unwrap();
    t.release_strategy = ReleaseStrategy::SellThrough;
    t.first_wave_share_bps = 3000;
    t.sell_through_share_bps = 5000;
    t.oversubscription_factor = 1.0;
    t.wave_interval_seconds = 3600;
}

async fn release(app: &TestApp) -> pb::Release {
    eventually(WAIT, "a release", || async { !list(app).await.is_empty() }).await;
    list(app).await.remove(0)
}

async fn list(app: &TestApp) -> Vec<pb::Release> {
    dispatch(app)
        .list_releases(pb::ListReleasesRequest {
            tenant_id: "demo".into(),
            variant_id: "sku-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .releases
}

async fn until(app: &TestApp, what: &str, check: impl Fn(&pb::Release) -> bool) -> pb::Release {
    eventually(WAIT, what, || async { check(&release(app).await) }).await;
    release(app).await
}

/// A purchase of `units` of sku-1 by `phone`, now on the test's clock.
async fn buy(app: &TestApp, order: &str, phone: &str, units: u32) {
    dispatch(app)
        .record_purchase(pb::RecordPurchaseRequest {
            tenant_id: "demo".into(),
            order_id: order.into(),
            phone_number: phone.into(),
            lines: vec![pb::PurchaseLine {
                variant_id: "sku-1".into(),
                quantity: units,
                total_price: Some(pb::Money {
                    amount_minor: 2_500 * i64::from(units),
                    currency_code: "USD".into(),
                }),
                location_id: String::new(),
            }],
            purchase_time: Some(ts(app.clock.now_dt())),
            ..Default::default()
        })
        .await
        .expect("record purchase");
}

fn sent(r: &pb::Release) -> u64 {
    r.counts.as_ref().map_or(0, |c| c.sent_count)
}

/// Subscribes each phone in turn, so the waitlist's order is the line's.
async fn subscribe_in_turn(app: &TestApp, line: &[String]) {
    for p in line {
        app.waitlist()
            .subscribe(subscribe_request("sku-1", p))
            .await
            .expect("subscribe");
    }
}

/// The phones texted so far, sorted (texts of one wave are handed over side by side).
fn texted(fake: &FakeTwilio) -> Vec<String> {
    let mut to: Vec<String> = fake.messages().iter().map(|m| m.to.clone()).collect();
    to.sort();
    to
}

/// Lets the scheduler (50 ms polls) run a few times, to show that something did not happen.
async fn a_few_polls() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn the_next_wave_opens_once_the_first_wave_s_recipients_have_bought_not_before() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, sell_through).await;
    let line = phones(10, 0);
    subscribe_in_turn(&app, &line).await;
    set_stock(&app, "sku-1", "web", 0, 1).await;
    set_stock(&app, "sku-1", "web", 4, 2).await;
    // Wave 1: 30% of 10 is 3 (4 units would allow 4).
    let r = until(&app, "wave 1 to be sent", |r| sent(r) == 3).await;
    assert_eq!(r.strategy(), pb::ReleaseStrategy::SellThrough);
    match &r.strategy_parameters {
        Some(pb::release::StrategyParameters::SellThrough(p)) => {
            assert_eq!((p.first_wave_share_bps, p.absorbed_share_bps), (3000, 5000));
            assert_eq!(p.oversubscription_factor, 1.0);
            assert_eq!(p.interval.unwrap().seconds, 3600);
        }
        other => panic!("sell-through parameters expected: {other:?}"),
    }
    assert_eq!(r.waves.len(), 1);
    assert!(!r.waves[0].opened_on_sell_through);
    assert_eq!(texted(&fake), line[..3], "wave 1 is the head of the line");

    // Three texts at 50% need two units bought by their recipients. A buyer who was not texted
    // does not count, nor does one recipient's single unit.
    app.clock.advance(chrono::Duration::minutes(5));
    buy(&app, "o-not-texted", &line[7], 1).await;
    buy(&app, "o-1", &line[0], 1).await;
    a_few_polls().await;
    let r = release(&app).await;
    assert_eq!(r.waves.len(), 1, "{r:?}");
    assert_eq!(fake.message_count(), 3);

    // A second recipient buys: the demand is absorbed (the stock has not moved), and wave 2
    // opens 55 minutes early, sized from the live stock (4 units: four texts).
    buy(&app, "o-2", &line[1], 1).await;
    let r = until(&app, "wave 2 to be sent", |r| sent(r) == 7).await;
    assert_eq!(r.waves.len(), 2);
    let w2 = &r.waves[1];
    assert!(w2.opened_on_sell_through);
    assert_eq!(w2.available_before, 4);
    assert_eq!(w2.counts.as_ref().unwrap().recipient_count, 4);
    assert_eq!(texted(&fake), line[..7], "wave 2 goes on down the line");
    // The interval had not passed.
    assert!(w2.start_time.unwrap().seconds - r.waves[0].start_time.unwrap().seconds < 3600);

    // Nobody in wave 2 buys: wave 3 waits for its interval, then opens on schedule.
    a_few_polls().await;
    assert_eq!(release(&app).await.waves.len(), 2);
    // The shopper who bought without a text is not texted about what they already have.
    app.clock.advance(chrono::Duration::minutes(61));
    let r = until(&app, "the release to complete", |r| {
        r.state() == pb::ReleaseState::Completed
    })
    .await;
    assert_eq!(r.waves.len(), 3);
    assert!(!r.waves[2].opened_on_sell_through);
    let c = r.counts.as_ref().unwrap();
    assert_eq!((c.sent_count, c.skipped_count), (9, 1));
    assert_eq!(
        c.skipped_by_reason
            .iter()
            .map(|x| (x.reason(), x.count))
            .collect::<Vec<_>>(),
        [(pb::ReasonCode::RecentlyPurchased, 1)]
    );
    assert_eq!(fake.message_count(), 9);
    assert!(!fake.messages().iter().any(|m| m.to == line[7]));
}

#[tokio::test]
async fn a_sell_through_wave_waits_while_the_stock_goes_to_others() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, sell_through).await;
    let line = phones(10, 20);
    subscribe_in_turn(&app, &line).await;
    set_stock(&app, "sku-1", "web", 0, 1).await;
    set_stock(&app, "sku-1", "web", 10, 2).await;
    until(&app, "wave 1 to be sent", |r| sent(r) == 3).await;

    // Six of ten units go, none to the texted: enough units sold to count as absorbed, but the
    // stock is going to others faster than the texts explain, so nothing opens early...
    app.clock.advance(chrono::Duration::minutes(5));
    set_stock(&app, "sku-1", "web", 4, 3).await;
    a_few_polls().await;
    assert_eq!(release(&app).await.waves.len(), 1);
    // ...nor when the interval passes: wave 2 waits an interval more.
    app.clock.advance(chrono::Duration::minutes(60));
    let r = until(&app, "wave 2 to wait", |r| {
        r.waves.get(1).map(|w| w.state()) == Some(pb::WaveState::Waiting)
    })
    .await;
    assert_eq!(sent(&r), 3);
    assert_eq!(fake.message_count(), 3);

    // The texted buy three units: most of what went, went to them; the demand is absorbed and
    // wave 2 opens at once, for the 4 units left.
    buy(&app, "o-1", &line[0], 1).await;
    buy(&app, "o-2", &line[1], 2).await;
    let r = until(&app, "wave 2 to be sent", |r| sent(r) == 7).await;
    let w2 = &r.waves[1];
    assert!(w2.opened_on_sell_through);
    assert_eq!(w2.counts.as_ref().unwrap().recipient_count, 4);
}

#[tokio::test]
async fn a_sell_through_release_ends_sold_out_when_the_stock_is_gone() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_sender(&fake, sell_through).await;
    let line = phones(10, 40);
    subscribe_in_turn(&app, &line).await;
    set_stock(&app, "sku-1", "web", 0, 1).await;
    set_stock(&app, "sku-1", "web", 2, 2).await;
    // 30% of 10 is 3, but 2 units allow 2.
    until(&app, "wave 1 to be sent", |r| sent(r) == 2).await;
    app.clock.advance(chrono::Duration::minutes(5));
    set_stock(&app, "sku-1", "web", 0, 3).await;
    buy(&app, "o-1", &line[0], 1).await;
    buy(&app, "o-2", &line[1], 1).await;
    let r = until(&app, "the release to sell out", |r| {
        r.state() == pb::ReleaseState::SoldOut
    })
    .await;
    assert_eq!(sent(&r), 2);
    assert_eq!(fake.message_count(), 2);
}
