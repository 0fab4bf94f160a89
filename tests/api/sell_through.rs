//! Sell-through waves, end to end: a first share of the list, then waves sized from the live
//! stock that open as soon as the previous wave's demand is absorbed (purchases through
//! RecordPurchase, stock through the inventory stream), and that wait while the stock goes to
//! others faster than the texts explain.

use crate::helpers::*;
use restock::config::Settings;
use restock::proto::v1 as pb;
use restock_domain::tenant::ReleaseStrategy;
use restock_sms::fake::FakeTwilio;

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

/// The release once `check` holds, the workers stepped until it does.
async fn until(app: &TestApp, what: &str, check: impl Fn(&pb::Release) -> bool) -> pb::Release {
    app.until(what, || async { check(&app.release_of("sku-1").await) })
        .await;
    app.release_of("sku-1").await
}

fn sent_count(r: &pb::Release) -> u64 {
    r.counts.as_ref().map_or(0, |c| c.sent_count)
}

/// Subscribes each phone in turn, so the waitlist's order is the line's.
async fn subscribe_in_turn(app: &TestApp, line: &[String]) {
    for p in line {
        app.subscribe(subscribe_request("sku-1", p))
            .await
            .expect("subscribe");
    }
}

/// The phones texted so far, sorted (texts of one wave are handed over side by side).
fn texted_phones(fake: &FakeTwilio) -> Vec<String> {
    let mut to: Vec<String> = fake.messages().iter().map(|m| m.to.clone()).collect();
    to.sort();
    to
}

#[tokio::test]
async fn the_next_wave_opens_once_the_first_wave_s_recipients_have_bought_not_before() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, sell_through).await;
    let line = phones(10, 0);
    subscribe_in_turn(&app, &line).await;
    set_stock(&app, "sku-1", "web", 0, 1).await;
    set_stock(&app, "sku-1", "web", 4, 2).await;
    // Wave 1: 30% of 10 is 3 (4 units would allow 4).
    let r = until(&app, "wave 1 to be sent", |r| sent_count(r) == 3).await;
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
    assert_eq!(
        texted_phones(&fake),
        line[..3],
        "wave 1 is the head of the line"
    );

    // Three texts at 50% need two units bought by their recipients. A buyer who was not texted
    // does not count, nor does one recipient's single unit.
    app.clock.advance(chrono::Duration::minutes(5));
    app.record_purchase(purchase(
        "o-not-texted",
        &line[7],
        "sku-1",
        1,
        (2_500, "USD"),
        app.clock.now_dt(),
    ))
    .await
    .expect("record purchase");
    app.record_purchase(purchase(
        "o-1",
        &line[0],
        "sku-1",
        1,
        (2_500, "USD"),
        app.clock.now_dt(),
    ))
    .await
    .expect("record purchase");
    // A pass of every worker.
    app.step().await;
    let r = app.release_of("sku-1").await;
    assert_eq!(r.waves.len(), 1, "{r:?}");
    assert_eq!(fake.message_count(), 3);

    // A second recipient buys: the demand is absorbed (the stock has not moved), and wave 2
    // opens 55 minutes early, sized from the live stock (4 units: four texts).
    app.record_purchase(purchase(
        "o-2",
        &line[1],
        "sku-1",
        1,
        (2_500, "USD"),
        app.clock.now_dt(),
    ))
    .await
    .expect("record purchase");
    let r = until(&app, "wave 2 to be sent", |r| sent_count(r) == 7).await;
    assert_eq!(r.waves.len(), 2);
    let w2 = &r.waves[1];
    assert!(w2.opened_on_sell_through);
    assert_eq!(w2.available_before, 4);
    assert_eq!(w2.counts.as_ref().unwrap().recipient_count, 4);
    assert_eq!(
        texted_phones(&fake),
        line[..7],
        "wave 2 goes on down the line"
    );
    // The interval had not passed.
    assert!(w2.start_time.unwrap().seconds - r.waves[0].start_time.unwrap().seconds < 3600);

    // Nobody in wave 2 buys: wave 3 waits for its interval, then opens on schedule.
    // A pass of every worker.
    app.step().await;
    assert_eq!(app.release_of("sku-1").await.waves.len(), 2);
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
    let app = spawn_stepped_sender(&fake, sell_through).await;
    let line = phones(10, 20);
    subscribe_in_turn(&app, &line).await;
    set_stock(&app, "sku-1", "web", 0, 1).await;
    set_stock(&app, "sku-1", "web", 10, 2).await;
    until(&app, "wave 1 to be sent", |r| sent_count(r) == 3).await;

    // Six of ten units go, none to the texted: enough units sold to count as absorbed, but the
    // stock is going to others faster than the texts explain, so nothing opens early...
    app.clock.advance(chrono::Duration::minutes(5));
    set_stock(&app, "sku-1", "web", 4, 3).await;
    // A pass of every worker.
    app.step().await;
    assert_eq!(app.release_of("sku-1").await.waves.len(), 1);
    // ...nor when the interval passes: wave 2 waits an interval more.
    app.clock.advance(chrono::Duration::minutes(60));
    let r = until(&app, "wave 2 to wait", |r| {
        r.waves.get(1).map(|w| w.state()) == Some(pb::WaveState::Waiting)
    })
    .await;
    assert_eq!(sent_count(&r), 3);
    assert_eq!(fake.message_count(), 3);

    // The texted buy three units: most of what went, went to them; the demand is absorbed and
    // wave 2 opens at once, for the 4 units left.
    app.record_purchase(purchase(
        "o-1",
        &line[0],
        "sku-1",
        1,
        (2_500, "USD"),
        app.clock.now_dt(),
    ))
    .await
    .expect("record purchase");
    app.record_purchase(purchase(
        "o-2",
        &line[1],
        "sku-1",
        2,
        (2_500 * i64::from(2), "USD"),
        app.clock.now_dt(),
    ))
    .await
    .expect("record purchase");
    let r = until(&app, "wave 2 to be sent", |r| sent_count(r) == 7).await;
    let w2 = &r.waves[1];
    assert!(w2.opened_on_sell_through);
    assert_eq!(w2.counts.as_ref().unwrap().recipient_count, 4);
}

#[tokio::test]
async fn a_sell_through_release_ends_sold_out_when_the_stock_is_gone() {
    let fake = FakeTwilio::start().await.unwrap();
    let app = spawn_stepped_sender(&fake, sell_through).await;
    let line = phones(10, 40);
    subscribe_in_turn(&app, &line).await;
    set_stock(&app, "sku-1", "web", 0, 1).await;
    set_stock(&app, "sku-1", "web", 2, 2).await;
    // 30% of 10 is 3, but 2 units allow 2.
    until(&app, "wave 1 to be sent", |r| sent_count(r) == 2).await;
    app.clock.advance(chrono::Duration::minutes(5));
    set_stock(&app, "sku-1", "web", 0, 3).await;
    app.record_purchase(purchase(
        "o-1",
        &line[0],
        "sku-1",
        1,
        (2_500, "USD"),
        app.clock.now_dt(),
    ))
    .await
    .expect("record purchase");
    app.record_purchase(purchase(
        "o-2",
        &line[1],
        "sku-1",
        1,
        (2_500, "USD"),
        app.clock.now_dt(),
    ))
    .await
    .expect("record purchase");
    let r = until(&app, "the release to sell out", |r| {
        r.state() == pb::ReleaseState::SoldOut
    })
    .await;
    assert_eq!(sent_count(&r), 2);
    assert_eq!(fake.message_count(), 2);
}
