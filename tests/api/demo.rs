//! The demo's simulation (`restock::demo`, what `just demo` runs) against a test server, with a
//! fixed seed: every count of its reports equals what the simulation did, and the estimated
//! lift's interval contains the lift it drew.

use std::path::Path;

use restock::config::Settings;
use restock::demo::{self, Pace, Truth};
use restock::proto::v1 as pb;
use restock_domain::clock::ManualClock;

use crate::helpers::{ratio, spawn_app_with, TEST_TOKEN};

/// Moves the test server's clock on (waves a few seconds apart come due) instead of waiting.
struct TestClock(std::sync::Arc<ManualClock>);

impl Pace for TestClock {
    async fn pass(&self) {
        self.0.advance(chrono::Duration::seconds(1));
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

fn check_report(t: &Truth, r: &pb::AttributionReport, what: &str, currency: &str) {
    assert_eq!(r.recipient_count, t.recipients, "{what}: recipients");
    assert_eq!(r.held_out_count, t.held_out, "{what}: held out");
    assert_eq!(r.sent_count, t.sent, "{what}: sent");
    assert_eq!(r.delivered_count, t.delivered, "{what}: delivered");
    assert_eq!(r.undelivered_count, t.undelivered, "{what}: undelivered");
    assert_eq!(r.failed_count, t.failed, "{what}: failed");
    let failures: Vec<(String, u64)> = r
        .failures
        .iter()
        .map(|f| (f.error_code.clone(), f.count))
        .collect();
    assert_eq!(failures, t.failures, "{what}: failures by code");
    assert_eq!(
        ratio(&r.complaint_rate)
            .map(|(n, d, _)| (n, d))
            .expect("a ratio"),
        (t.complaints, t.sent),
        "{what}: complaints"
    );
    assert_eq!(r.click_count, t.clicks, "{what}: clicks");
    assert_eq!(
        r.unique_click_count, t.unique_clicks,
        "{what}: unique clicks"
    );
    assert_eq!(
        ratio(&r.click_through_rate)
            .map(|(n, d, _)| (n, d))
            .expect("a ratio"),
        (t.unique_clicks, t.sent)
    );
    assert_eq!(
        ratio(&r.opt_out_rate)
            .map(|(n, d, _)| (n, d))
            .expect("a ratio"),
        (t.opt_outs, t.sent),
        "{what}: opt-outs"
    );
    assert_eq!(
        ratio(&r.conversion_rate)
            .map(|(n, d, _)| (n, d))
            .expect("a ratio"),
        (t.conversions, t.sent),
        "{what}: conversions"
    );
    assert_eq!(r.revenue.len(), 1, "{what}: one currency");
    let c = &r.revenue[0];
    assert_eq!(c.currency_code, currency);
    assert_eq!(c.conversion_count, t.conversions, "{what}: orders");
    assert_eq!(c.units, t.units, "{what}: units");
    assert_eq!(
        c.revenue.as_ref().unwrap().amount_minor,
        t.revenue_minor,
        "{what}: revenue"
    );
    assert_eq!(c.last_click_conversion_count, t.last_click_conversions);
    assert_eq!(
        c.last_click_revenue.as_ref().unwrap().amount_minor,
        t.last_click_revenue_minor,
        "{what}: last-click revenue"
    );
    let lift = r.lift.as_ref().unwrap();
    assert_eq!(
        ratio(&lift.treatment_conversion)
            .map(|(n, d, _)| (n, d))
            .expect("a ratio"),
        (t.texted_buyers, t.recipients)
    );
    assert_eq!(
        ratio(&lift.holdout_conversion)
            .map(|(n, d, _)| (n, d))
            .expect("a ratio"),
        (t.holdout_buyers, t.held_out)
    );
    let s = r.signups.as_ref().unwrap();
    assert_eq!(s.signup_count, t.signups, "{what}: signups");
    assert_eq!(s.product_view_count, t.views, "{what}: views");
    assert_eq!(
        ratio(&s.signup_rate)
            .map(|(n, d, _)| (n, d))
            .expect("a ratio"),
        (t.signups, t.views)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_simulation_reports_every_count_it_drew_and_an_interval_holding_the_true_lift() {
    let dev = concat!(env!("CARGO_MANIFEST_DIR"), "/config/dev.toml");
    let dev = Settings::load_from(Some(Path::new(dev)), Vec::<(String, String)>::new()).unwrap();
    let app = spawn_app_with(|s| {
        for t in ["sim-immediate", "sim-staged", "sim-proportional"] {
            s.tenants.insert(t.into(), dev.tenants[t].clone());
        }
        s.sms.twilio_auth_token = "test-webhook-token".into();
        s.http.link_rate_per_second = 10_000;
        s.http.link_burst = 10_000;
    })
    .await;
    let opts = demo::Options {
        grpc_url: format!("http://{}", app.addr),
        http_url: format!("http://{}", app.http_addr),
        token: TEST_TOKEN.into(),
        webhook_token: "test-webhook-token".into(),
        seed: 20_261_130,
        shoppers: 150,
        run_id: 1,
    };
    let o = demo::run(&opts, &TestClock(app.clock.clone()), &|_| {})
        .await
        .unwrap();
    assert_eq!(o.restocks.len(), 4);
    for r in &o.restocks {
        let t = &r.truth;
        let what = r.restock.title;
        // Everyone waiting was either texted or held out, and the draws hit every branch.
        assert_eq!(t.recipients + t.held_out, 150, "{what}");
        assert!(
            t.held_out >= 15 && t.delivered > 0 && t.clicks > 0,
            "{what}: {t:?}"
        );
        check_report(t, &r.report, what, r.restock.currency);
        let lift = r.report.lift.as_ref().unwrap();
        assert!(lift.available, "{what}");
        let i = lift.difference_interval.unwrap();
        assert!(
            i.lower <= o.true_lift && o.true_lift <= i.upper,
            "{what}: true lift {} outside [{}, {}]",
            o.true_lift,
            i.lower,
            i.upper
        );
    }
    // Across the run the draws include failures, complaints and STOP replies.
    let sum = |f: fn(&Truth) -> u64| o.restocks.iter().map(|r| f(&r.truth)).sum::<u64>();
    assert!(sum(|t| t.failed) > 0 && sum(|t| t.complaints) > 0 && sum(|t| t.opt_outs) > 0);

    // A brand's period report adds its restocks up, each currency apart.
    for (tenant, p) in &o.periods {
        let r = p.report.as_ref().unwrap();
        let mine: Vec<_> = o
            .restocks
            .iter()
            .filter(|x| x.restock.tenant_id == tenant)
            .collect();
        assert_eq!(r.release_count, mine.len() as u64, "{tenant}");
        let total = |f: fn(&Truth) -> u64| mine.iter().map(|x| f(&x.truth)).sum::<u64>();
        assert_eq!(r.sent_count, total(|t| t.sent), "{tenant}");
        assert_eq!(r.delivered_count, total(|t| t.delivered), "{tenant}");
        assert_eq!(r.unique_click_count, total(|t| t.unique_clicks), "{tenant}");
        let mut want: Vec<(String, i64)> = Vec::new();
        for x in &mine {
            match want.iter_mut().find(|(c, _)| c == x.restock.currency) {
                Some((_, v)) => *v += x.truth.revenue_minor,
                None => want.push((x.restock.currency.into(), x.truth.revenue_minor)),
            }
        }
        want.sort();
        let got: Vec<(String, i64)> = r
            .revenue
            .iter()
            .map(|c| {
                (
                    c.currency_code.clone(),
                    c.revenue.as_ref().unwrap().amount_minor,
                )
            })
            .collect();
        assert_eq!(got, want, "{tenant}: revenue per currency");
    }
    // The tables render every restock.
    let text = demo::render(&o);
    for r in &o.restocks {
        assert!(text.contains(r.restock.title));
    }
}
